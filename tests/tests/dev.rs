//! `coffer dev` as a newcomer tries it: the first thing anyone does with a
//! replicated ledger is kill its leader. The cluster must elect another,
//! keep taking writes, start the killed node again, and catch it up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use coffer_api::client::{Client, Role};
use coffer_ledger::{
    Account, AccountId, AccountKind, CreateAccountResult, CreateLedgerResult, Ledger, LedgerId, Transfer, TransferId,
    TransferKind,
};
use coffer_security::Security;
use coffer_tests::dev::DevCluster;
use coffer_tests::{client_with, quick_client_with};

/// How long each step may take before the test fails.
const STEP_WAIT: Duration = Duration::from_secs(60);
const KRW: LedgerId = LedgerId(9);

/// The process id of the `coffer node` started with `config`.
fn node_pid(config: &Path) -> Option<u32> {
    let wanted = config.to_str()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        let is_node = args.contains(&b"node".as_slice()) && args.contains(&wanted.as_bytes());
        is_node.then_some(pid)
    })
}

/// Polls `check` until it returns `Some`, failing after [`STEP_WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < STEP_WAIT {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {STEP_WAIT:?} waiting for {what}");
}

/// The term node `id` leads in, if it answers and says it leads.
async fn leads(security: &Security, address: &str, id: u64) -> Option<u64> {
    let reports = quick_client_with(address, security.clone()).status().await.ok()?;
    reports.first().filter(|own| own.node_id == id && own.role == Some(Role::Leader)).map(|own| own.term)
}

fn receipt(id: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(1),
        credit_account_id: AccountId(2),
        amount: 1_000,
        ledger: KRW,
        code: 1,
        kind: TransferKind::Receipt,
        ..Default::default()
    }
}

/// Posts `transfer`, retrying while the cluster has no leader.
async fn post(client: &Client, transfer: Transfer) {
    let results = wait_for("a transfer to commit", || async {
        client.create_transfers(std::slice::from_ref(&transfer)).await.ok().map(|results| results.value)
    })
    .await;
    assert!(results.iter().all(|result| result.is_success()), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_cluster_restarts_a_killed_leader_and_keeps_taking_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = DevCluster::start(dir.path(), &["--no-sample"]);
    let addresses = dev.api_addresses();
    let security = dev.security();
    let client = client_with(addresses.clone(), security.clone());

    let (leader, term) = wait_for("a leader", || async {
        for (id, address) in (1..=3u64).zip(&addresses) {
            if let Some(term) = leads(&security, address, id).await {
                return Some((id, term));
            }
        }
        None
    })
    .await;
    let krw = Ledger::new(KRW, "KRW", 0, "Won");
    assert_eq!(client.create_ledgers(&[krw]).await.unwrap().value, [CreateLedgerResult::Created]);
    let accounts = [
        Account { id: AccountId(1), ledger: KRW, code: 101, kind: AccountKind::Cash, ..Default::default() },
        Account { id: AccountId(2), ledger: KRW, code: 401, ..Default::default() },
    ];
    assert_eq!(client.create_accounts(&accounts).await.unwrap().value, [CreateAccountResult::Created; 2]);
    post(&client, receipt(1)).await;

    // SIGKILL the leader's process.
    let config = dev.node_config(dir.path(), leader);
    let pid = node_pid(&config).expect("the leader's process");
    assert!(Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status().unwrap().success());

    // A leader of a later term is elected (possibly the killed node itself,
    // once started again: it may win the new election), and writes go on.
    wait_for("a leader of a later term", || async {
        for (id, address) in (1..=3u64).zip(&addresses) {
            if leads(&security, address, id).await.is_some_and(|new_term| new_term > term) {
                return Some(());
            }
        }
        None
    })
    .await;
    for id in 2..=5 {
        post(&client, receipt(id)).await;
    }

    // The killed node runs again (a new process) and catches up.
    let restarted =
        wait_for("the killed node to run again", || async { node_pid(&config).filter(|new_pid| *new_pid != pid) })
            .await;
    assert_ne!(restarted, pid);
    let committed = wait_for("the cluster's commit index", || async {
        let reports = client.status().await.ok()?;
        reports.iter().filter(|report| report.role == Some(Role::Leader)).map(|report| report.commit_index).max()
    })
    .await;
    let killed_address = &addresses[usize::try_from(leader - 1).unwrap()];
    wait_for("the restarted node to catch up", || async {
        let reports = quick_client_with(killed_address, security.clone()).status().await.ok()?;
        reports.first().filter(|own| own.node_id == leader && own.applied_index >= committed).map(|_| ())
    })
    .await;

    let printed = dev.printed();
    assert!(printed.contains(&format!("node {leader} exited")), "coffer dev printed:\n{printed}");
    assert!(printed.contains(&format!("node {leader} started again")), "coffer dev printed:\n{printed}");
    let status = dev.terminate();
    assert!(status.success(), "coffer dev exited with {status}; it printed:\n{}", dev.printed());
}
