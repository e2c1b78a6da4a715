//! In-process cluster tests of the node core: 3- and 5-node clusters of real
//! `Replica`s on real RocksDB stores, connected by an in-memory network this
//! test controls (delivery, partitions, crashes). Snapshots travel through
//! the same chunked, checksummed reader and writer the gRPC transport uses.

// The harness's helpers are not `#[test]` functions, so clippy's test
// allowance does not cover them; a failed unwrap there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use coffer_consensus::raft::prelude::Message;
use coffer_consensus::raft::StateRole;
use coffer_consensus::{
    is_snapshot, Applied, Completion, ConsensusConfig, DiskStorage, IncomingSnapshot, MembershipChange, Outcome,
    ProposalError, ProposalId, Replica, ReplicaStorage, SnapshotDirs,
};
use coffer_ledger::{
    state_digest, Account, AccountId, CreateTransferResult, Ledger, LedgerId, Operation, OperationResults,
    PendingState, StateDigest, Store, Transfer, TransferFlags, TransferId, TransferKind,
};
use coffer_storage::snapshot::SnapshotReader;
use coffer_storage::StorageConfig;

const MS: u64 = 1_000_000;
/// Rounds any wait may take before the test fails (bounded: no test hangs).
const ROUNDS_MAX: usize = 3_000;

fn storage_config() -> StorageConfig {
    StorageConfig { block_cache_bytes: 8 << 20, write_buffer_bytes: 4 << 20, ..StorageConfig::default() }
}

struct Node {
    dir: PathBuf,
    replica: Option<Replica<DiskStorage>>,
    config: ConsensusConfig,
}

/// A cluster on an in-memory network.
struct Cluster {
    _root: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    /// Links that drop everything, both ways.
    cut: BTreeSet<(u64, u64)>,
    now_ns: u64,
    completions: HashMap<(u64, ProposalId), Result<Applied, ProposalError>>,
    read_completions: HashMap<(u64, u64), u64>,
    /// Every leader seen, by term: two in one term would break Raft.
    leaders_by_term: BTreeMap<u64, u64>,
    snapshots_installed: BTreeMap<u64, u64>,
}

fn config(id: u64) -> ConsensusConfig {
    ConsensusConfig { election_ticks: 10, heartbeat_ticks: 2, read_timeout_ticks: 30, ..ConsensusConfig::new(id) }
}

impl Cluster {
    fn new(size: u64) -> Self {
        Self::with_config(size, config)
    }

    fn with_config(size: u64, make: impl Fn(u64) -> ConsensusConfig) -> Self {
        let root = tempfile::tempdir().unwrap();
        let voters: Vec<u64> = (1..=size).collect();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let dir = root.path().join(format!("node-{id}"));
            let mut storage = DiskStorage::open(&dir, &storage_config()).unwrap();
            storage.bootstrap(&voters).unwrap();
            let config = make(id);
            let replica = Replica::new(config.clone(), storage).unwrap();
            nodes.insert(id, Node { dir, replica: Some(replica), config });
        }
        Self {
            _root: root,
            nodes,
            cut: BTreeSet::new(),
            now_ns: 1_000 * MS,
            completions: HashMap::new(),
            read_completions: HashMap::new(),
            leaders_by_term: BTreeMap::new(),
            snapshots_installed: BTreeMap::new(),
        }
    }

    fn replica(&self, id: u64) -> &Replica<DiskStorage> {
        self.nodes[&id].replica.as_ref().expect("the node is running")
    }

    fn replica_mut(&mut self, id: u64) -> &mut Replica<DiskStorage> {
        self.nodes.get_mut(&id).and_then(|node| node.replica.as_mut()).expect("the node is running")
    }

    fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, node)| node.replica.is_some()).map(|(&id, _)| id).collect()
    }

    fn linked(&self, a: u64, b: u64) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// One round: every running node ticks, advances, and its messages are
    /// delivered (or dropped by a cut link or a stopped node).
    fn round(&mut self) {
        self.now_ns += 10 * MS;
        let mut messages: Vec<Message> = Vec::new();
        for id in self.running() {
            let now = self.now_ns;
            let replica = self.replica_mut(id);
            replica.tick();
            let mut outbox = Vec::new();
            let output = replica.advance(now, &mut outbox).expect("the node keeps running");
            messages.extend(outbox);
            if let Some(index) = output.snapshot_installed {
                self.snapshots_installed.insert(id, index);
            }
            for completion in output.completions {
                match completion {
                    Completion::Proposal { id: proposal, result } => {
                        self.completions.insert((id, proposal), result);
                    }
                    Completion::Read { id: read, result: Ok(index) } => {
                        self.read_completions.insert((id, read), index);
                    }
                    Completion::Read { .. } => {}
                }
            }
            let status = self.replica(id).status();
            if status.role == StateRole::Leader {
                let previous = *self.leaders_by_term.entry(status.term).or_insert(id);
                assert_eq!(previous, id, "two leaders in term {}", status.term);
            }
        }
        for message in messages {
            self.deliver(message);
        }
    }

    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let reachable = self.linked(from, to) && self.nodes.get(&to).is_some_and(|node| node.replica.is_some());
        if !reachable {
            if is_snapshot(&message) {
                if let Some(sender) = self.nodes.get_mut(&from).and_then(|node| node.replica.as_mut()) {
                    sender.report_snapshot(to, false);
                }
            }
            return;
        }
        if is_snapshot(&message) {
            self.copy_snapshot(&message);
            let _ = self.replica_mut(to).step(message);
            self.replica_mut(from).report_snapshot(to, true);
        } else {
            // A message refused (e.g. from a removed node) is dropped, as the transport does.
            let _ = self.replica_mut(to).step(message);
        }
    }

    /// Streams the sender's snapshot into the receiver's incoming directory
    /// in small chunks, as the gRPC transport does.
    fn copy_snapshot(&self, message: &Message) {
        let meta = message.get_snapshot().get_metadata();
        let source = SnapshotDirs::new(&self.nodes[&message.from].dir.join("snapshots")).outgoing(meta.index);
        let target = SnapshotDirs::new(&self.nodes[&message.to].dir.join("snapshots"));
        let mut reader = SnapshotReader::open(&source, 64 << 10).unwrap();
        let mut incoming = IncomingSnapshot::start(&target, meta.index, meta.term).unwrap();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            incoming.write(&chunk).unwrap();
        }
        incoming.finish().unwrap();
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        for _ in 0..ROUNDS_MAX {
            if done(self) {
                return;
            }
            self.round();
            // Snapshots are made on a thread of their own: give it time.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        panic!("gave up waiting for {what} after {ROUNDS_MAX} rounds");
    }

    fn rounds(&mut self, count: usize) {
        (0..count).for_each(|_| self.round());
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self.running().into_iter().filter(|&id| self.replica(id).is_leader()).collect();
        // Several nodes may believe they lead (an old leader behind a cut);
        // the one of the highest term is the leader.
        leaders.into_iter().max_by_key(|&id| self.replica(id).status().term)
    }

    fn elect(&mut self) -> u64 {
        self.run_until("a leader", |cluster| {
            cluster.leader().is_some_and(|id| {
                // A leader that has committed in its term: it can serve reads.
                let status = cluster.replica(id).status();
                status.applied >= status.commit && status.commit > 1
            })
        });
        self.leader().unwrap()
    }

    fn propose(&mut self, node: u64, operation: Operation) -> Result<ProposalId, ProposalError> {
        self.replica_mut(node).propose(operation)
    }

    fn wait(&mut self, node: u64, id: ProposalId) -> Result<Applied, ProposalError> {
        self.run_until("a proposal to finish", |cluster| cluster.completions.contains_key(&(node, id)));
        self.completions.remove(&(node, id)).unwrap()
    }

    /// Proposes at the current leader and waits for the results, retrying
    /// retryable failures with the same operation (the same ids).
    fn commit(&mut self, operation: Operation) -> Applied {
        for _ in 0..20 {
            let leader = self.elect();
            match self.propose(leader, operation.clone()).and_then(|id| self.wait(leader, id)) {
                Ok(applied) => return applied,
                Err(error) if error.is_retryable() => self.round(),
                Err(error) => panic!("proposal failed: {error}"),
            }
        }
        panic!("proposal kept failing")
    }

    fn crash(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().replica = None;
    }

    fn restart(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let storage = DiskStorage::open(&node.dir, &storage_config()).unwrap();
        node.replica = Some(Replica::new(node.config.clone(), storage).unwrap());
    }

    /// Adds a node with an empty store (it is not a founding voter).
    fn add_empty_node(&mut self, id: u64) {
        let dir = self._root.path().join(format!("node-{id}"));
        let storage = DiskStorage::open(&dir, &storage_config()).unwrap();
        let config = self.nodes[&1].config.clone();
        let config = ConsensusConfig { node_id: id, seed: id, ..config };
        let replica = Replica::new(config.clone(), storage).unwrap();
        self.nodes.insert(id, Node { dir, replica: Some(replica), config });
    }

    fn isolate(&mut self, id: u64) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id.min(other), id.max(other)));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn digest(&self, id: u64) -> StateDigest {
        state_digest(self.replica(id).storage().ledger()).unwrap()
    }

    fn applied(&self, id: u64) -> u64 {
        self.replica(id).storage().applied().index
    }

    /// Waits until every running node has applied the same index, then
    /// checks their digests are equal.
    fn converge(&mut self) -> StateDigest {
        self.run_until("every node to apply the same index", |cluster| {
            let running = cluster.running();
            let leader_commit = cluster.leader().map(|id| cluster.replica(id).status().commit);
            running.iter().all(|&id| Some(cluster.applied(id)) == leader_commit)
        });
        let running = self.running();
        let digest = self.digest(running[0]);
        for &id in &running[1..] {
            assert_eq!(self.digest(id), digest, "node {id} differs from node {} at the same index", running[0]);
        }
        digest
    }

    fn transfer_exists(&self, node: u64, id: u128) -> bool {
        self.replica(node).storage().ledger().transfer(TransferId(id)).unwrap().is_some()
    }
}

fn ledger_setup() -> Vec<Operation> {
    let ledger = Ledger::new(LedgerId(1), "KRW", 0, "Won");
    let accounts = (1..=10)
        .map(|id| Account { id: AccountId(id), ledger: LedgerId(1), code: 100, ..Default::default() })
        .collect();
    vec![Operation::CreateLedgers(vec![ledger]), Operation::CreateAccounts(accounts)]
}

fn transfer(id: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(1 + (id % 10)),
        credit_account_id: AccountId(1 + ((id + 1) % 10)),
        amount,
        ledger: LedgerId(1),
        code: 1,
        kind: TransferKind::Journal,
        ..Default::default()
    }
}

fn transfers(ids: std::ops::Range<u128>) -> Operation {
    Operation::CreateTransfers(ids.map(|id| transfer(id, 10)).collect())
}

fn setup(cluster: &mut Cluster) {
    for operation in ledger_setup() {
        cluster.commit(operation);
    }
}

fn transfer_results(applied: &Applied) -> &[CreateTransferResult] {
    match &applied.outcome {
        Outcome::Operation(OperationResults::Transfers(results)) => results,
        other => panic!("expected transfer results, got {other:?}"),
    }
}

#[test]
fn three_and_five_node_clusters_elect_one_leader_and_replicate() {
    for size in [3, 5] {
        let mut cluster = Cluster::new(size);
        cluster.elect();
        setup(&mut cluster);
        let applied = cluster.commit(transfers(1..101));
        assert!(transfer_results(&applied).iter().all(|result| *result == CreateTransferResult::Created));
        cluster.converge();
        for id in 1..=size {
            assert!(cluster.transfer_exists(id, 100), "node {id} lacks transfer 100");
        }
    }
}

#[test]
fn replication_under_load_keeps_every_acknowledged_transfer() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    setup(&mut cluster);
    let mut pending = Vec::new();
    for batch in 0..40u128 {
        let id = cluster.propose(leader, transfers(batch * 50 + 1..batch * 50 + 51)).unwrap();
        pending.push(id);
        cluster.round();
    }
    for id in pending {
        let applied = cluster.wait(leader, id).unwrap();
        assert_eq!(transfer_results(&applied).len(), 50);
        assert!(transfer_results(&applied).iter().all(|result| *result == CreateTransferResult::Created));
    }
    cluster.converge();
    for node in 1..=3 {
        assert!((1..=2000).all(|id| cluster.transfer_exists(node, id)), "node {node} lost a transfer");
    }
}

#[test]
fn group_commit_packs_queued_proposals_into_one_entry_and_splits_the_results() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    setup(&mut cluster);
    let last_before = cluster.replica(leader).status().last_index;
    // Ten proposals queued before the next round, one of them a retry of
    // another's ids: each proposer gets exactly its own results.
    let ids: Vec<ProposalId> =
        (0..10u128).map(|batch| cluster.propose(leader, transfers(batch * 10 + 1..batch * 10 + 11)).unwrap()).collect();
    let retry = cluster.propose(leader, transfers(1..11)).unwrap();
    cluster.round();
    assert_eq!(cluster.replica(leader).status().last_index, last_before + 1, "one entry for all eleven");
    for id in ids {
        let applied = cluster.wait(leader, id).unwrap();
        assert_eq!(transfer_results(&applied), [CreateTransferResult::Created; 10]);
    }
    let applied = cluster.wait(leader, retry).unwrap();
    assert_eq!(transfer_results(&applied), [CreateTransferResult::Exists; 10]);
}

/// Transfer entries committed together are applied as one run on every
/// node: each batch sees the ones before it (a retry answers `exists`, a
/// post finds the pending transfer of an earlier entry), each proposer gets
/// its own results, the replicas agree, and the running totals were
/// written once for the run (the totals-history entry that covers the
/// second batch begins with the first).
#[test]
fn transfer_entries_committed_together_are_applied_as_one_run() {
    // Ten events an entry, so four proposals make four entries in one round.
    let mut cluster = Cluster::with_config(3, |id| ConsensusConfig { entry_events_max: 10, ..config(id) });
    let leader = cluster.elect();
    setup(&mut cluster);
    let last_before = cluster.replica(leader).status().last_index;
    let mut pending = transfer(1, 10);
    pending.flags = TransferFlags::PENDING;
    let mut first: Vec<Transfer> = vec![pending];
    first.extend((2..11).map(|id| transfer(id, 10)));
    let mut post = transfer(11, 10);
    post.flags = TransferFlags::POST_PENDING;
    post.pending_id = TransferId(1);
    let mut second = vec![post];
    second.extend((12..21).map(|id| transfer(id, 10)));
    let batches = [
        first.clone(),
        second,
        first, // a retry of the first batch's ids
        (21..31).map(|id| transfer(id, 10)).collect(),
    ];
    let proposals: Vec<ProposalId> = batches
        .iter()
        .map(|batch| cluster.propose(leader, Operation::CreateTransfers(batch.clone())).unwrap())
        .collect();
    cluster.round();
    assert_eq!(cluster.replica(leader).status().last_index, last_before + 4, "four entries in one round");
    let results: Vec<Vec<CreateTransferResult>> =
        proposals.into_iter().map(|id| transfer_results(&cluster.wait(leader, id).unwrap()).to_vec()).collect();
    assert_eq!(results[0], [CreateTransferResult::Created; 10]);
    assert_eq!(results[1], [CreateTransferResult::Created; 10], "the post found the pending transfer of entry 1");
    assert_eq!(results[2], [CreateTransferResult::Exists; 10]);
    assert_eq!(results[3], [CreateTransferResult::Created; 10]);
    let digest = cluster.converge();
    for id in 1..=3 {
        let ledger = cluster.replica(id).storage().ledger();
        assert_eq!(coffer_ledger::stored_state_digest(ledger).unwrap(), digest, "node {id}'s digest sum");
        let first_timestamp = ledger.transfer(TransferId(1)).unwrap().unwrap().timestamp;
        let second_timestamp = ledger.transfer(TransferId(11)).unwrap().unwrap().timestamp;
        let (_, covering) = ledger.totals_around(LedgerId(1), 100, second_timestamp).unwrap();
        assert_eq!(covering.map(|entry| entry.first_timestamp), Some(first_timestamp), "node {id} wrote one run");
    }
}

#[test]
fn the_leader_answers_before_it_writes_and_a_read_or_a_pause_writes_what_it_holds() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    setup(&mut cluster);
    cluster.converge();
    let hold_ticks = config(leader).apply_hold_ticks;
    // A read writes what the leader holds before it completes.
    let written = cluster.commit(transfers(1..11));
    assert_eq!(cluster.leader(), Some(leader));
    assert!(cluster.applied(leader) < written.index, "the leader wrote the batch before answering");
    assert!(!cluster.transfer_exists(leader, 10));
    let read = cluster.replica_mut(leader).read().unwrap();
    cluster.run_until("the read", |cluster| cluster.read_completions.contains_key(&(leader, read)));
    assert!(cluster.applied(leader) >= written.index);
    assert!(cluster.transfer_exists(leader, 10));
    // Without a read, once the load pauses for the hold.
    let written = cluster.commit(transfers(11..21));
    assert!(cluster.applied(leader) < written.index, "the leader wrote the batch before answering");
    let mut rounds = 0;
    while cluster.applied(leader) < written.index {
        assert!(rounds <= hold_ticks, "the leader held its batch for more than {hold_ticks} ticks");
        cluster.round();
        rounds += 1;
    }
    assert!(cluster.transfer_exists(leader, 20));
    // With a standby region shipping from it, the leader holds nothing.
    cluster.replica_mut(leader).retain_log_from(written.index);
    let written = cluster.commit(transfers(21..31));
    assert!(cluster.applied(leader) >= written.index, "the leader held a batch a standby region waits for");
    cluster.converge();
}

#[test]
fn replicas_hold_transfer_batches_back_and_write_them_in_runs_the_followers_taking_turns() {
    let mut cluster = Cluster::with_config(3, |id| ConsensusConfig { entry_events_max: 10, ..config(id) });
    let leader = cluster.elect();
    setup(&mut cluster);
    cluster.converge();
    let followers: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    // One batch a round: a replica that applied what arrived would apply
    // each batch alone.
    let batches: u128 = 24;
    let mut proposals = Vec::new();
    let mut lag_max: BTreeMap<u64, u64> = BTreeMap::new();
    let mut apart = false;
    let mut answered_ahead = false;
    for batch in 0..batches {
        proposals.push(cluster.propose(leader, transfers(batch * 10 + 1..batch * 10 + 11)).unwrap());
        cluster.round();
        let commit = cluster.replica(leader).status().commit;
        for &id in &followers {
            let lag = lag_max.entry(id).or_default();
            *lag = (*lag).max(commit.saturating_sub(cluster.applied(id)));
        }
        apart |= cluster.applied(followers[0]) != cluster.applied(followers[1]);
        let applied = cluster.applied(leader);
        answered_ahead |= cluster
            .completions
            .iter()
            .any(|((node, _), result)| *node == leader && result.as_ref().is_ok_and(|answer| answer.index > applied));
    }
    for proposal in proposals {
        let applied = cluster.wait(leader, proposal).unwrap();
        assert_eq!(transfer_results(&applied), [CreateTransferResult::Created; 10]);
    }
    let digest = cluster.converge();
    // The run each batch was written in, by the timestamp its totals entry
    // starts at (a run records one entry per code).
    let runs = |cluster: &Cluster, id: u64| -> BTreeSet<u64> {
        let ledger = cluster.replica(id).storage().ledger();
        (0..batches)
            .map(|batch| {
                let timestamp = ledger.transfer(TransferId(batch * 10 + 1)).unwrap().unwrap().timestamp;
                let (_, covering) = ledger.totals_around(LedgerId(1), 100, timestamp).unwrap();
                covering.unwrap().first_timestamp
            })
            .collect()
    };
    let leader_runs = runs(&cluster, leader);
    assert!(
        leader_runs.len() as u128 <= batches / 4,
        "the leader wrote {} runs of {batches} batches",
        leader_runs.len()
    );
    assert!(answered_ahead, "the leader never answered a batch before writing it");
    let ledger = cluster.replica(leader).storage().ledger();
    assert_eq!(coffer_ledger::stored_state_digest(ledger).unwrap(), digest, "the leader's digest sum");
    let follower_runs: Vec<BTreeSet<u64>> = followers.iter().map(|&id| runs(&cluster, id)).collect();
    for (id, runs) in followers.iter().zip(&follower_runs) {
        assert!(runs.len() as u128 <= batches / 4, "node {id} applied {} runs of {batches} batches", runs.len());
        assert!(lag_max[id] >= 4, "node {id} held entries back (lag at most {})", lag_max[id]);
        let ledger = cluster.replica(*id).storage().ledger();
        assert_eq!(coffer_ledger::stored_state_digest(ledger).unwrap(), digest, "node {id}'s digest sum");
    }
    // The followers take turns: their runs end at different entries, so
    // one of them keeps acknowledging appends while the other applies.
    assert_ne!(follower_runs[0], follower_runs[1], "the followers' runs start at the same batches");
    assert!(apart, "the followers never stood at different applied indexes");
}

#[test]
fn an_open_linked_chain_is_not_packed_with_the_next_proposal() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    setup(&mut cluster);
    let mut open = transfer(1, 10);
    open.flags = TransferFlags::LINKED;
    let first = cluster.propose(leader, Operation::CreateTransfers(vec![open])).unwrap();
    let second = cluster.propose(leader, transfers(2..3)).unwrap();
    let first = cluster.wait(leader, first).unwrap();
    assert_eq!(transfer_results(&first), [CreateTransferResult::LinkedEventChainOpen]);
    let second = cluster.wait(leader, second).unwrap();
    assert_eq!(transfer_results(&second), [CreateTransferResult::Created]);
}

#[test]
fn a_full_queue_answers_overloaded() {
    let mut cluster = Cluster::with_config(3, |id| ConsensusConfig { queue_proposals_max: 4, ..config(id) });
    let leader = cluster.elect();
    for batch in 0..4u128 {
        cluster.propose(leader, transfers(batch + 1..batch + 2)).unwrap();
    }
    let refused = cluster.propose(leader, transfers(9..10)).unwrap_err();
    assert!(matches!(refused, ProposalError::Overloaded { queued: 4, max: 4, .. }), "{refused:?}");
    assert!(refused.is_retryable());
    let too_large = cluster.propose(leader, transfers(1..9_000)).unwrap_err();
    assert!(matches!(too_large, ProposalError::TooLarge { events: 8_999, max: 8_189 }), "{too_large:?}");
}

#[test]
fn followers_refuse_proposals_naming_the_leader() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let refused = cluster.propose(follower, transfers(1..2)).unwrap_err();
    assert_eq!(refused, ProposalError::NotLeader { leader: Some(leader) });
}

#[test]
fn leader_crash_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::new(3);
    cluster.elect();
    setup(&mut cluster);
    let written = cluster.commit(transfers(1..201));
    let old_leader = cluster.leader().unwrap();
    // The leader answered before writing the batch: the crash loses its
    // write, which only the Raft log holds.
    assert!(cluster.applied(old_leader) < written.index, "the leader wrote the batch before answering");
    cluster.crash(old_leader);
    let new_leader = cluster.elect();
    assert_ne!(new_leader, old_leader);
    assert!((1..=200).all(|id| cluster.transfer_exists(new_leader, id)), "the new leader lost an acknowledged write");
    cluster.commit(transfers(201..301));
    cluster.restart(old_leader);
    cluster.converge();
    assert!((1..=300).all(|id| cluster.transfer_exists(old_leader, id)));
}

#[test]
fn follower_restart_catches_up_from_the_log() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    setup(&mut cluster);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.crash(follower);
    for batch in 0..10u128 {
        cluster.commit(transfers(batch * 10 + 1..batch * 10 + 11));
    }
    cluster.restart(follower);
    cluster.converge();
    assert!(cluster.transfer_exists(follower, 100));
    assert!(!cluster.snapshots_installed.contains_key(&follower), "caught up from the log, not a snapshot");
}

#[test]
fn follower_far_behind_a_compacted_log_is_caught_up_by_snapshot() {
    let mut cluster = Cluster::with_config(3, |id| ConsensusConfig {
        log_gc_threshold_entries: 8,
        log_gc_keep_entries: 2,
        ..config(id)
    });
    let leader = cluster.elect();
    setup(&mut cluster);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.crash(follower);
    for batch in 0..30u128 {
        cluster.commit(transfers(batch * 10 + 1..batch * 10 + 11));
    }
    let leader = cluster.leader().unwrap();
    // The leader compacts once the snapshot it started (off its Raft
    // thread) is made.
    cluster.run_until("the leader compacts its log", |cluster| cluster.replica(leader).status().first_index > 10);
    cluster.restart(follower);
    cluster.converge();
    assert!(cluster.snapshots_installed.contains_key(&follower), "the follower needed a snapshot");
    assert!((1..=300).all(|id| cluster.transfer_exists(follower, id)));
    // And it goes on from the log after the snapshot.
    cluster.commit(transfers(301..311));
    cluster.converge();
}

#[test]
fn a_partitioned_leader_never_acknowledges_its_unreplicated_entries() {
    let mut cluster = Cluster::new(5);
    let old_leader = cluster.elect();
    setup(&mut cluster);
    cluster.isolate(old_leader);
    // The old leader still believes it leads for a while and accepts these.
    let stranded: Vec<ProposalId> = (0..5u128)
        .filter_map(|batch| cluster.propose(old_leader, transfers(10_000 + batch * 10..10_010 + batch * 10)).ok())
        .collect();
    assert!(!stranded.is_empty(), "the old leader accepted proposals before it noticed");
    cluster
        .run_until("a new leader on the majority side", |cluster| cluster.leader().is_some_and(|id| id != old_leader));
    cluster.commit(transfers(1..51));
    cluster.rounds(50);
    cluster.heal();
    cluster.converge();
    for id in stranded {
        match cluster.completions.remove(&(old_leader, id)) {
            Some(Err(error)) => assert!(error.is_retryable(), "{error:?}"),
            Some(Ok(applied)) => panic!("a stranded proposal was acknowledged: {applied:?}"),
            None => panic!("a stranded proposal never heard back"),
        }
    }
    for node in 1..=5 {
        assert!(!cluster.transfer_exists(node, 10_000), "node {node} applied an entry no quorum accepted");
        assert!(cluster.transfer_exists(node, 50));
    }
}

#[test]
fn membership_add_promote_and_remove_while_writes_continue() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    setup(&mut cluster);
    cluster.commit(transfers(1..51));
    cluster.add_empty_node(4);

    let add =
        cluster.replica_mut(leader).propose_membership(MembershipChange::AddLearner(4), b"n4".to_vec(), false).unwrap();
    // A second change while the first is pending is refused, not dropped.
    let refused = cluster.replica_mut(leader).propose_membership(MembershipChange::Remove(3), Vec::new(), false);
    assert_eq!(refused, Err(ProposalError::ConfChangePending));
    let writes = cluster.propose(leader, transfers(51..101)).unwrap();
    let added = cluster.wait(leader, add).unwrap();
    assert!(matches!(&added.outcome, Outcome::Membership(conf) if conf.learners == [4]));
    cluster.wait(leader, writes).unwrap();

    cluster.run_until("the learner to catch up", |cluster| cluster.applied(4) == cluster.applied(leader));
    let promote =
        cluster.replica_mut(leader).propose_membership(MembershipChange::PromoteVoter(4), Vec::new(), false).unwrap();
    let promoted = cluster.wait(leader, promote).unwrap();
    assert!(
        matches!(&promoted.outcome, Outcome::Membership(conf) if conf.voters.contains(&4) && conf.learners.is_empty())
    );
    cluster.commit(transfers(101..151));

    let removed_node = (1..=3).find(|&id| id != leader).unwrap();
    let leader = cluster.leader().unwrap();
    let remove = cluster
        .replica_mut(leader)
        .propose_membership(MembershipChange::Remove(removed_node), Vec::new(), false)
        .unwrap();
    let removed = cluster.wait(leader, remove).unwrap();
    assert!(matches!(&removed.outcome, Outcome::Membership(conf) if !conf.voters.contains(&removed_node)));
    cluster.crash(removed_node);
    cluster.commit(transfers(151..201));
    cluster.converge();
    assert!((1..=200).all(|id| cluster.transfer_exists(4, id)));
    let voters = cluster.replica(4).status().conf_state.voters;
    assert_eq!(voters.len(), 3, "{voters:?}");
}

#[test]
fn a_read_after_an_acknowledged_write_sees_it_on_every_node() {
    let mut cluster = Cluster::new(3);
    cluster.elect();
    setup(&mut cluster);
    let write = cluster.commit(transfers(1..11));
    for node in 1..=3 {
        let read = cluster.replica_mut(node).read().unwrap();
        cluster.run_until("the read", |cluster| cluster.read_completions.contains_key(&(node, read)));
        let index = cluster.read_completions[&(node, read)];
        assert!(index >= write.index, "read index {index} is before the acknowledged write at {}", write.index);
        assert!(cluster.applied(node) >= index);
        assert!(cluster.transfer_exists(node, 10), "node {node} read before the acknowledged write");
    }
}

#[test]
fn restart_applies_nothing_twice() {
    let mut cluster = Cluster::new(3);
    cluster.elect();
    setup(&mut cluster);
    cluster.commit(transfers(1..101));
    let digest = cluster.converge();
    let applied: Vec<u64> = (1..=3).map(|id| cluster.applied(id)).collect();
    for id in 1..=3 {
        cluster.crash(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
        // Raft resumes at the persisted applied index: applying an entry
        // again would be refused by the store and stop the node.
        assert_eq!(cluster.applied(id), applied[(id - 1) as usize]);
        assert_eq!(cluster.digest(id), digest);
    }
    cluster.elect();
    let retry = cluster.commit(transfers(1..101));
    assert!(transfer_results(&retry).iter().all(|result| *result == CreateTransferResult::Exists));
    cluster.converge();
}

#[test]
fn leader_transfer_goes_only_to_a_caught_up_voter() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    setup(&mut cluster);
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    let target = (1..=3).find(|&id| id != leader && id != lagging).unwrap();
    cluster.crash(lagging);
    cluster.commit(transfers(1..11));
    let refused = cluster.replica_mut(leader).transfer_leader(lagging).unwrap_err();
    assert!(matches!(refused, ProposalError::NotCaughtUp { target, .. } if target == lagging), "{refused:?}");
    cluster.rounds(5);
    cluster.replica_mut(leader).transfer_leader(target).unwrap();
    cluster.run_until("the new leader", |cluster| cluster.leader() == Some(target));
    cluster.commit(transfers(11..21));
    // The new leader answered; its state holds the batch once written.
    cluster.converge();
    assert!(cluster.transfer_exists(target, 20));
}

#[test]
fn pending_transfers_expire_at_the_same_index_on_every_replica() {
    let mut cluster = Cluster::new(3);
    cluster.elect();
    setup(&mut cluster);
    let mut pending = transfer(1, 500);
    pending.flags = TransferFlags::PENDING;
    pending.timeout = 1;
    cluster.commit(Operation::CreateTransfers(vec![pending]));
    // A few simulated seconds pass; the leader proposes the expiry.
    cluster.run_until("the expiry", |cluster| {
        (1..=3).all(|id| {
            let ledger = cluster.replica(id).storage().ledger();
            let status = ledger.pending_status(TransferId(1)).unwrap();
            let account = ledger.account(AccountId(2)).unwrap().unwrap();
            status.map(|status| status.state) == Some(PendingState::Expired) && account.debits_pending == 0
        })
    });
    cluster.converge();
    let post = Transfer {
        id: TransferId(2),
        pending_id: TransferId(1),
        amount: Transfer::AMOUNT_MAX,
        flags: TransferFlags::POST_PENDING,
        ..Default::default()
    };
    let applied = cluster.commit(Operation::CreateTransfers(vec![post]));
    assert_eq!(transfer_results(&applied), [CreateTransferResult::PendingTransferExpired]);
}
