//! Metrics over a real node: a one-node cluster (RocksDB store, tokio
//! driver) and its API on loopback, with the Prometheus exporter installed
//! as `coffer node` installs it; `/metrics` is scraped over HTTP after a
//! write. (One test: the exporter is the process's global recorder.)

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use coffer_api::client::{Client, ClientConfig};
use coffer_api::server::{ApiServer, ServerConfig};
use coffer_consensus::raft::StateRole;
use coffer_consensus::{start_node, NodeConfig};
use coffer_ledger::{AccountId, CreateLedgerResult, Ledger, LedgerId};
use coffer_storage::StorageConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A port free on loopback now (the exporter binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The body of `GET /metrics`.
async fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap()
}

/// The value of the sample whose line starts with `name{` and holds every
/// one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_write_shows_the_rpc_counters_and_the_applied_index() {
    let metrics_address = SocketAddr::from(([127, 0, 0, 1], free_port()));
    coffer_api::metrics::install_exporter(metrics_address).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(1, dir.path().join("node-1"));
    config.storage = StorageConfig { block_cache_bytes: 8 << 20, write_buffer_bytes: 4 << 20, ..config.storage };
    config.consensus.tick_ms = 10;
    config.bootstrap_voters = Some(vec![1]);
    let (node, thread) = start_node(config).await.unwrap();
    for _ in 0..500 {
        if node.status().await.is_ok_and(|status| status.role == StateRole::Leader) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = ApiServer::new(node.clone(), ServerConfig::new(BTreeMap::from([(1, address.clone())]))).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    let client = Client::new(ClientConfig::new(vec![address])).unwrap();
    let krw = Ledger::new(LedgerId(1), "KRW", 0, "Korean won");
    let created = client.create_ledgers(&[krw]).await.unwrap();
    assert_eq!(created.value, [CreateLedgerResult::Created]);
    let refused = client.lookup_accounts(&[AccountId(0)]).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument), "{refused}");

    // The applied index gauge is set at the end of the driver's round,
    // just after the write is answered: scrape until it shows.
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(metrics_address).await;
        let applied = sample(&text, "coffer_raft_applied_index", &[r#"node="1""#]).unwrap_or(0.0);
        if applied >= created.applied_index as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = [r#"service="coffer.v1.LedgerService""#, r#"method="CreateLedgers""#, r#"code="OK""#];
    assert_eq!(sample(&text, "coffer_rpc_requests_total", &ok), Some(1.0), "{text}");
    let invalid = [r#"method="LookupAccounts""#, r#"code="INVALID_ARGUMENT""#];
    assert_eq!(sample(&text, "coffer_rpc_requests_total", &invalid), Some(1.0), "{text}");
    let timed = [r#"method="CreateLedgers""#];
    assert_eq!(sample(&text, "coffer_rpc_request_duration_seconds_count", &timed), Some(1.0), "{text}");
    let bucket = [r#"method="CreateLedgers""#, r#"le="+Inf""#];
    assert_eq!(sample(&text, "coffer_rpc_request_duration_seconds_bucket", &bucket), Some(1.0), "{text}");
    let applied = sample(&text, "coffer_raft_applied_index", &[r#"node="1""#]).unwrap();
    assert!(applied >= created.applied_index as f64, "applied index {applied} < {}: {text}", created.applied_index);
    assert_eq!(sample(&text, "coffer_raft_is_leader", &[r#"node="1""#]), Some(1.0), "{text}");
    assert!(sample(&text, "coffer_raft_term", &[r#"node="1""#]).is_some_and(|term| term >= 1.0), "{text}");
    assert!(sample(&text, "coffer_consensus_commit_latency_seconds_count", &[r#"node="1""#]).is_some(), "{text}");
    assert!(sample(&text, "coffer_consensus_apply_latency_seconds_count", &[r#"node="1""#]).is_some(), "{text}");
    assert!(sample(&text, "coffer_consensus_entry_events_count", &[r#"node="1""#]).is_some(), "{text}");
    assert!(sample(&text, "coffer_rocksdb_estimate_num_keys", &[r#"node="1""#, r#"cf="meta""#]).is_some(), "{text}");

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    node.shutdown().await;
    thread.join().unwrap().unwrap();
}
