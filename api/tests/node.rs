//! The API over a real node: a one-node cluster (RocksDB store, tokio
//! driver) served on loopback, driven by the Rust client and a raw gRPC
//! client.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use coffer_api::client::{Client, ClientConfig, Role};
use coffer_api::proto;
use coffer_api::proto::ledger_service_client::LedgerServiceClient;
use coffer_api::server::{ApiServer, ServerConfig};
use coffer_consensus::raft::StateRole;
use coffer_consensus::{start_node, NodeConfig, NodeHandle};
use coffer_ledger::{
    Account, AccountId, AccountKind, CreateAccountResult, CreateLedgerResult, CreateTransferResult, Ledger, LedgerId,
    Transfer, TransferId, TransferKind,
};
use coffer_storage::StorageConfig;
use tokio::net::TcpListener;

/// Polls (bounded) until the node leads.
async fn wait_until_leader(node: &NodeHandle) {
    for _ in 0..200 {
        if node.status().await.map(|status| status.role == StateRole::Leader).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node did not become leader within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_node_cluster_serves_writes_reads_status_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(1, dir.path().join("node-1"));
    config.storage = StorageConfig { block_cache_bytes: 8 << 20, write_buffer_bytes: 4 << 20, ..config.storage };
    config.consensus.tick_ms = 10;
    config.bootstrap_voters = Some(vec![1]);
    let (node, thread) = start_node(config).await.unwrap();
    wait_until_leader(&node).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = ApiServer::new(node.clone(), ServerConfig::new(BTreeMap::from([(1, address.clone())]))).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    let client = Client::new(ClientConfig::new(vec![address.clone()])).unwrap();
    let usd = Ledger::new(LedgerId(1), "USD", 2, "Dollar");
    assert_eq!(client.create_ledgers(&[usd]).await.unwrap().value, [CreateLedgerResult::Created]);
    let cash =
        Account { id: AccountId(1), ledger: LedgerId(1), code: 101, kind: AccountKind::Cash, ..Default::default() };
    let revenue = Account { id: AccountId(2), ledger: LedgerId(1), code: 401, ..Default::default() };
    assert_eq!(client.create_accounts(&[cash, revenue]).await.unwrap().value, [CreateAccountResult::Created; 2]);

    // Decimal on the wire: "12.34" at scale 2 is 1234 cents.
    let mut raw = LedgerServiceClient::connect(format!("http://{address}")).await.unwrap();
    let wire = proto::Transfer {
        id: "7".into(),
        debit_account_id: "1".into(),
        credit_account_id: "2".into(),
        amount: "12.34".into(),
        ledger: 1,
        code: 1,
        kind: proto::TransferKind::Receipt as i32,
        ..Default::default()
    };
    let request = proto::CreateTransfersRequest { transfers: vec![wire], amount_unit: 0, ..Default::default() };
    let response = raw.create_transfers(request).await.unwrap().into_inner();
    assert_eq!(response.results, ["created"]);
    let served = response.served.unwrap();
    assert_eq!(served.node_id, 1);

    let receipt = Transfer {
        id: TransferId(8),
        debit_account_id: AccountId(1),
        credit_account_id: AccountId(2),
        amount: 66,
        ledger: LedgerId(1),
        code: 1,
        kind: TransferKind::Receipt,
        ..Default::default()
    };
    let created = client.create_transfers(&[receipt]).await.unwrap();
    assert_eq!(created.value, [CreateTransferResult::Created]);
    assert!(created.applied_index > served.applied_index);

    let read = client.lookup_accounts(&[AccountId(1)]).await.unwrap();
    assert_eq!(read.value[0].map(|account| account.debits_posted), Some(1_300));
    assert!(read.applied_index >= created.applied_index, "a linearizable read sees every acknowledged write");
    let stale = client.with_stale_reads(true).lookup_transfers(&[TransferId(7)]).await.unwrap();
    assert!(stale.stale);
    assert_eq!(stale.value[0].map(|transfer| transfer.amount), Some(1_234));
    let trial = client.trial_balance(LedgerId(1)).await.unwrap().value;
    assert!(trial.total.is_balanced());
    assert_eq!(trial.total.credits_posted, 1_300);

    let nodes = client.status().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!((nodes[0].node_id, nodes[0].role, nodes[0].lag), (1, Some(Role::Leader), 0));

    let snapshot_dir = dir.path().join("snapshot");
    let snapshot = client.snapshot(&address, &snapshot_dir).await.unwrap();
    assert!(snapshot.applied_index >= created.applied_index);
    assert!(snapshot.files > 0 && snapshot.bytes > 0);
    let again = client.snapshot(&address, &snapshot_dir).await.unwrap_err();
    assert_eq!(again.code(), Some(tonic::Code::FailedPrecondition), "{again}");

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    node.shutdown().await;
    thread.join().unwrap().unwrap();
}
