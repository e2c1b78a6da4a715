//! A cluster of real nodes in one process, over real gRPC on loopback: each
//! node has its own RocksDB store in a temporary directory, its own driver
//! thread and its own transport server on an ephemeral port.
//!
//! Every wait is bounded by a timeout, so a broken cluster fails the test
//! instead of hanging it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use coffer_consensus::raft::prelude::{Message, MessageType};
use coffer_consensus::raft::StateRole;
use coffer_consensus::transport::proto::raft_transport_client::RaftTransportClient;
use coffer_consensus::transport::proto::snapshot_chunk::Part;
use coffer_consensus::transport::proto::{FileChunk, MessageBatch, SnapshotChunk, SnapshotHeader};
use coffer_consensus::{
    start_node, Applied, MembershipChange, NodeConfig, NodeHandle, Outcome, RequestError, StartError,
};
use coffer_ledger::{
    state_digest, Account, AccountId, AccountKind, CreateAccountResult, CreateLedgerResult, Ledger, LedgerId,
    Operation, OperationResults, StateDigest, Store, Transfer, TransferId, TransferKind,
};
use protobuf::Message as _;
use tempfile::TempDir;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// Tries of a request that failed with a retryable error.
const TRIES_MAX: usize = 200;

const KRW: LedgerId = LedgerId(1);
const CASH: AccountId = AccountId(1);
const REVENUE: AccountId = AccountId(2);
const TRANSFERS: u128 = 48;
const AMOUNT: u128 = 1_000;

/// Fails the test if `future` takes longer than [`WAIT`].
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

fn config(id: u64, dir: &TempDir) -> NodeConfig {
    let mut config = NodeConfig::new(id, dir.path().to_owned());
    config.consensus.tick_ms = 10;
    // Compact the log after a few entries, so a node added later can only
    // be caught up by a snapshot.
    config.consensus.log_gc_threshold_entries = 8;
    config.consensus.log_gc_keep_entries = 2;
    config.storage.block_cache_bytes = 8 << 20;
    config.storage.write_buffer_bytes = 4 << 20;
    config
}

/// Starts the three founding nodes, each serving the transport itself on
/// an ephemeral port, and tells each where the others are.
async fn start_founders(dirs: &[TempDir]) -> Vec<NodeHandle> {
    let mut nodes = Vec::new();
    for (id, dir) in (1..=3).zip(dirs) {
        let mut config = config(id, dir);
        config.listen_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.bootstrap_voters = Some(vec![1, 2, 3]);
        let (handle, _thread) = start_node(config).await.expect("node starts");
        nodes.push(handle);
    }
    for node in &nodes {
        for peer in &nodes {
            if peer.id() != node.id() {
                let address = peer.listen_addr().expect("serves the transport").to_string();
                node.set_peer_address(peer.id(), address).expect("address accepted");
            }
        }
    }
    nodes
}

/// Waits until every node in `nodes` knows the same leader, and returns it.
async fn leader(nodes: &[NodeHandle]) -> usize {
    bounded("a leader", async {
        loop {
            let mut leaders = Vec::new();
            for node in nodes {
                let status = node.status().await.expect("status");
                leaders.push((status.leader, status.role));
            }
            let first = leaders[0].0;
            if first != 0 && leaders.iter().all(|(leader, _)| *leader == first) {
                let at = nodes.iter().position(|node| node.id() == first).expect("the leader is a founder");
                if leaders[at].1 == StateRole::Leader {
                    return at;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Proposes at whichever node leads, retrying retryable failures (a retry
/// with the same ids is safe: its results say `exists`).
async fn propose(nodes: &[NodeHandle], operation: Operation) -> Applied {
    bounded("a proposal", async {
        let mut last = None;
        for _ in 0..TRIES_MAX {
            let at = leader(nodes).await;
            match nodes[at].propose(operation.clone()).await {
                Ok(applied) => return applied,
                Err(error) if error.is_retryable() => last = Some(error),
                Err(error) => panic!("proposal failed: {error}"),
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("proposal still failing after {TRIES_MAX} tries: {last:?}")
    })
    .await
}

/// A linearizable read of the state digest at `node`, retried while it fails
/// retryably.
async fn digest(node: &NodeHandle) -> (u64, StateDigest) {
    bounded("a linearizable read of the digest", async {
        for _ in 0..TRIES_MAX {
            match node.read(|state| state_digest(state).expect("digest")).await {
                Ok(read) => return read,
                Err(error) if error.is_retryable() => tokio::time::sleep(POLL).await,
                Err(error) => panic!("read at node {} failed: {error}", node.id()),
            }
        }
        panic!("read at node {} still failing after {TRIES_MAX} tries", node.id())
    })
    .await
}

fn transfer(id: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: CASH,
        credit_account_id: REVENUE,
        amount: AMOUNT,
        ledger: KRW,
        code: 1,
        kind: TransferKind::Receipt,
        ..Default::default()
    }
}

fn check_transfer(applied: &Applied) {
    match &applied.outcome {
        Outcome::Operation(OperationResults::Transfers(results)) => {
            assert_eq!(results.len(), 1);
            assert!(results[0].is_success(), "transfer result {:?}", results[0]);
        }
        other => panic!("a transfer produced {other:?}"),
    }
}

/// Proposes transfers `ids` one after another: one entry each. Returns the
/// highest index.
async fn transfers_one_by_one(nodes: &[NodeHandle], ids: std::ops::Range<u128>) -> u64 {
    let mut highest = 0;
    for id in ids {
        let applied = propose(nodes, Operation::CreateTransfers(vec![transfer(id)])).await;
        check_transfer(&applied);
        highest = highest.max(applied.index);
    }
    highest
}

/// Proposes transfers `ids` all at once, so the leader packs them into
/// shared entries (group commit). Returns the highest index.
async fn transfers_at_once(nodes: &[NodeHandle], ids: std::ops::Range<u128>) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let nodes = nodes.to_vec();
        tasks.spawn(async move { propose(&nodes, Operation::CreateTransfers(vec![transfer(id)])).await });
    }
    let mut highest = 0;
    while let Some(applied) = bounded("the transfers", tasks.join_next()).await {
        let applied = applied.expect("transfer task");
        check_transfer(&applied);
        highest = highest.max(applied.index);
    }
    highest
}

async fn shutdown(nodes: &[NodeHandle]) {
    for node in nodes {
        bounded("a shutdown", node.shutdown()).await;
        assert!(node.is_stopped());
        match node.status().await {
            Err(RequestError::Stopped { .. }) => {}
            other => panic!("a stopped node answered {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc_replicate_and_a_late_learner_catches_up_by_snapshot() {
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new().expect("temp dir")).collect();
    let mut nodes = start_founders(&dirs[..3]).await;

    // 50 proposals: a ledger, two accounts (one proposal), 48 transfers.
    // Half the transfers go one by one (an entry each, so the log grows
    // past the compaction threshold), half at once (group commit).
    let krw = Ledger::new(KRW, "KRW", 0, "Won");
    let applied = propose(&nodes, Operation::CreateLedgers(vec![krw])).await;
    assert_eq!(applied.outcome, Outcome::Operation(OperationResults::Ledgers(vec![CreateLedgerResult::Created])));
    let accounts = vec![
        Account { id: CASH, ledger: KRW, code: 101, kind: AccountKind::Cash, ..Default::default() },
        Account { id: REVENUE, ledger: KRW, code: 401, ..Default::default() },
    ];
    let applied = propose(&nodes, Operation::CreateAccounts(accounts)).await;
    assert_eq!(applied.outcome, Outcome::Operation(OperationResults::Accounts(vec![CreateAccountResult::Created; 2])));
    transfers_one_by_one(&nodes, 1..TRANSFERS / 2 + 1).await;
    let last_index = transfers_at_once(&nodes, TRANSFERS / 2 + 1..TRANSFERS + 1).await;

    // A linearizable read at a follower sees every acknowledged transfer.
    let at = leader(&nodes).await;
    let follower = &nodes[(at + 1) % nodes.len()];
    let (read_index, cash) = bounded(
        "a follower's read",
        follower.read(|state| state.account(CASH).expect("account read").expect("cash account exists")),
    )
    .await
    .expect("linearizable read at a follower");
    assert!(read_index >= last_index, "read at index {read_index}, the last transfer is at {last_index}");
    assert_eq!(cash.debits_posted, TRANSFERS * AMOUNT);
    let (_, exists) = follower
        .read_stale(|state| state.transfer(TransferId(TRANSFERS)).expect("transfer read").is_some())
        .await
        .expect("stale read");
    assert!(exists);

    // Every founder reaches the same state.
    let (_, expected) = digest(&nodes[at]).await;
    for node in &nodes {
        assert_eq!(digest(node).await.1, expected, "node {} differs", node.id());
    }

    // The log is compacted past its start, so a new node needs a snapshot.
    // It is compacted once the snapshot the leader started (on a thread of
    // its own, off the Raft thread) is made.
    let mut status = nodes[at].status().await.expect("status");
    for _ in 0..100 {
        if status.first_index > 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = nodes[at].status().await.expect("status");
    }
    assert!(status.first_index > 8, "the leader's log was not compacted: {status:?}");

    // Node 4 joins as a learner. It serves the transport on a server of its
    // own making, as the API server will.
    let mut late = config(4, &dirs[3]);
    for node in &nodes {
        late.peers.insert(node.id(), node.listen_addr().expect("address").to_string());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address").to_string();
    let (handle, _thread) = start_node(late).await.expect("node 4 starts");
    let server = tonic::transport::Server::builder()
        .add_service(handle.transport_service())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let server = tokio::spawn(server);
    let added = loop {
        let at = leader(&nodes).await;
        match nodes[at].change_membership(MembershipChange::AddLearner(4), address.clone(), false).await {
            Ok(applied) => break applied,
            Err(error) if error.is_retryable() => tokio::time::sleep(POLL).await,
            Err(error) => panic!("adding node 4 failed: {error}"),
        }
    };
    match &added.outcome {
        Outcome::Membership(conf_state) => assert_eq!(conf_state.learners, vec![4]),
        other => panic!("adding a learner produced {other:?}"),
    }
    nodes.push(handle);

    // More writes after the snapshot reach the learner through the log.
    let last_index = transfers_one_by_one(&nodes[..3], TRANSFERS + 1..TRANSFERS + 3).await;
    let learner = &nodes[3];
    bounded("the learner to catch up", async {
        loop {
            let status = learner.status().await.expect("status");
            if status.applied >= last_index {
                // Its log starts after a snapshot, not at the beginning.
                assert!(status.first_index > 8, "node 4 was not caught up by a snapshot: {status:?}");
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    let (_, expected) = digest(&nodes[0]).await;
    for node in &nodes {
        assert_eq!(digest(node).await.1, expected, "node {} differs", node.id());
    }

    // A backup is a verified snapshot of one applied index.
    let backups = TempDir::new().expect("temp dir");
    let manifest = learner.backup(backups.path().join("backup")).await.expect("backup");
    assert!(manifest.applied.index >= last_index);

    shutdown(&nodes).await;
    server.abort();
}

/// A client of `node`'s transport, as a peer (or an impostor) would be.
async fn transport_client(node: &NodeHandle) -> RaftTransportClient<tonic::transport::Channel> {
    let address = format!("http://{}", node.listen_addr().expect("serves the transport"));
    bounded("a transport connection", RaftTransportClient::connect(address)).await.expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_garbage_is_refused_by_name_and_the_node_goes_on() {
    let dir = TempDir::new().expect("temp dir");
    let mut config = config(1, &dir);
    config.listen_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.bootstrap_voters = Some(vec![1]);
    let (node, _thread) = start_node(config).await.expect("node starts");
    let nodes = [node.clone()];
    leader(&nodes).await;

    // Bytes that are no Raft message: the stream ends with an error naming
    // the sender.
    let batch = MessageBatch { from: 9, messages: vec![vec![0xFF; 7]] };
    let mut client = transport_client(&node).await;
    let refused = bounded("a refusal", client.send(tokio_stream::iter(vec![batch]))).await.expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("from node 9 does not decode"), "{}", refused.message());

    // A snapshot message without its data may only come through SendSnapshot.
    let mut snapshot = Message::default();
    snapshot.set_msg_type(MessageType::MsgSnapshot);
    snapshot.from = 9;
    snapshot.to = 1;
    snapshot.mut_snapshot().mut_metadata().index = 5;
    snapshot.mut_snapshot().mut_metadata().term = 1;
    let encoded = snapshot.write_to_bytes().expect("encodes");
    let batch = MessageBatch { from: 9, messages: vec![encoded.clone()] };
    let refused = bounded("a refusal", client.send(tokio_stream::iter(vec![batch]))).await.expect_err("refused");
    assert!(refused.message().contains("only SendSnapshot"), "{}", refused.message());

    // A snapshot chunk whose checksum does not match its bytes.
    let header = SnapshotChunk { part: Some(Part::Header(SnapshotHeader { from: 9, message: encoded })) };
    let chunk = FileChunk { file: "MANIFEST.coffer".into(), offset: 0, data: b"coffer".to_vec(), crc32: 1 };
    let corrupt = vec![header, SnapshotChunk { part: Some(Part::Chunk(chunk)) }];
    let refused = bounded("a refusal", client.send_snapshot(tokio_stream::iter(corrupt))).await.expect_err("refused");
    assert!(refused.message().contains("from node 9"), "{}", refused.message());
    assert!(refused.message().contains("crc32"), "{}", refused.message());

    // The node goes on.
    let krw = Ledger::new(KRW, "KRW", 0, "Won");
    let applied = propose(&nodes, Operation::CreateLedgers(vec![krw])).await;
    assert_eq!(applied.outcome, Outcome::Operation(OperationResults::Ledgers(vec![CreateLedgerResult::Created])));
    shutdown(&nodes).await;
}

#[tokio::test]
async fn a_node_with_an_invalid_configuration_does_not_start() {
    let dir = TempDir::new().expect("temp dir");
    let mut no_ticks = config(1, &dir);
    no_ticks.consensus.tick_ms = 0;
    let mut bad_peer = config(1, &dir);
    bad_peer.peers.insert(2, "node-2".into());
    for (config, field) in [(no_ticks, "consensus.tick_ms"), (bad_peer, "peers")] {
        match start_node(config).await {
            Err(StartError::Invalid { field: refused, .. }) => assert_eq!(refused, field),
            Err(error) => panic!("expected {field} to be refused, got {error}"),
            Ok(_) => panic!("a node with an invalid {field} started"),
        }
    }
}

/// Creates the ledger and the two accounts the transfers move money between.
async fn open_books(nodes: &[NodeHandle]) {
    let krw = Ledger::new(KRW, "KRW", 0, "Won");
    propose(nodes, Operation::CreateLedgers(vec![krw])).await;
    let accounts = vec![
        Account { id: CASH, ledger: KRW, code: 101, kind: AccountKind::Cash, ..Default::default() },
        Account { id: REVENUE, ledger: KRW, code: 401, ..Default::default() },
    ];
    propose(nodes, Operation::CreateAccounts(accounts)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_an_acknowledged_write_sees_it_on_every_node() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("temp dir")).collect();
    let nodes = start_founders(&dirs).await;
    open_books(&nodes).await;
    for id in 1..=6 {
        let applied = propose(&nodes, Operation::CreateTransfers(vec![transfer(id)])).await;
        check_transfer(&applied);
        // Straight after the acknowledgement, before any follower may have
        // applied the entry: a linearizable read waits for its read index.
        for node in &nodes {
            let read = node.read(move |view| view.transfer(TransferId(id)).expect("transfer read").is_some());
            let (index, found) = bounded("a read", read).await.expect("linearizable read");
            assert!(found, "node {} did not see transfer {id}, acknowledged at {}", node.id(), applied.index);
            assert!(index >= applied.index, "node {} read at {index}, the write is at {}", node.id(), applied.index);
        }
    }
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_panicking_read_does_not_delay_a_commit() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("temp dir")).collect();
    let nodes = start_founders(&dirs).await;
    open_books(&nodes).await;
    let at = leader(&nodes).await;

    // A read that holds its view until the test lets it go.
    let (started, has_started) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let slow_node = nodes[at].clone();
    let slow = tokio::spawn(async move {
        slow_node
            .read(move |view| {
                started.send(()).expect("the test waits for the read to start");
                released.recv().expect("the test releases the read");
                view.applied().index
            })
            .await
    });
    let has_started = tokio::task::spawn_blocking(move || has_started.recv_timeout(WAIT));
    bounded("the slow read to start", has_started).await.expect("join").expect("the slow read started");

    // A read that panics: its caller is told, the node goes on.
    let panicked = nodes[at].read(|_| -> u64 { panic!("a read that panics, on purpose") }).await;
    assert!(matches!(panicked, Err(RequestError::Abandoned { .. })), "{panicked:?}");

    // Commits go on while the slow read still holds its view.
    let last = transfers_one_by_one(&nodes, 1..4).await;
    assert!(!slow.is_finished(), "the slow read ended before it was released");
    let (read_index, _) = digest(&nodes[at]).await;
    assert!(read_index >= last);

    // Released, the slow read answers with the view it held: from before
    // the commits.
    release.send(()).expect("the slow read waits");
    let (index, seen) = bounded("the slow read", slow).await.expect("join").expect("slow read");
    assert_eq!(index, seen);
    assert!(seen < last, "the slow read's view is at {seen}, the commits at {last}");
    shutdown(&nodes).await;
}
