//! End-to-end: real `coffer node` processes on loopback, driven through the
//! Rust client, raw gRPC and the `coffer` command line.
//!
//! Each test starts its own 3-node cluster (one cluster at a time, see
//! `coffer_tests::Cluster`) and ends by killing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_api::client::{ChangeFeed, Client, ClientError, FeedChange};
use coffer_api::proto;
use coffer_api::proto::ledger_service_client::LedgerServiceClient;
use coffer_ledger::{
    Account, AccountFilter, AccountFlags, AccountId, AccountKind, ChangedRecord, CreateAccountResult,
    CreateLedgerResult, CreateTransferResult, Ledger, LedgerId, Transfer, TransferFlags, TransferId, TransferKind,
};
use coffer_tests::{client_of, coffer, Cluster};
use tonic::Code;

const KRW: LedgerId = LedgerId(1);
/// The treasury's cash account (may not be overdrawn).
const CASH: u128 = 1;
/// A revenue account (receipts credit it).
const REVENUE: u128 = 2;
/// An expense account (expenditures debit it).
const EXPENSE: u128 = 3;

fn krw() -> Ledger {
    Ledger::new(KRW, "KRW", 0, "Korean won")
}

fn account(id: u128, kind: AccountKind, flags: AccountFlags) -> Account {
    Account { id: AccountId(id), ledger: KRW, code: 100, kind, flags, ..Default::default() }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128, kind: TransferKind) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        ledger: KRW,
        code: 1,
        kind,
        ..Default::default()
    }
}

fn receipt(id: u128, amount: u128) -> Transfer {
    transfer(id, CASH, REVENUE, amount, TransferKind::Receipt)
}

fn expenditure(id: u128, amount: u128) -> Transfer {
    transfer(id, EXPENSE, CASH, amount, TransferKind::Expenditure)
}

/// A KRW ledger with a cash account that may not be overdrawn, a revenue
/// and an expense account.
async fn set_up_treasury(client: &Client) {
    assert_eq!(client.create_ledgers(&[krw()]).await.unwrap().value, [CreateLedgerResult::Created]);
    let accounts = [
        account(CASH, AccountKind::Cash, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS.with(AccountFlags::HISTORY)),
        account(REVENUE, AccountKind::Other, AccountFlags::NONE),
        account(EXPENSE, AccountKind::Other, AccountFlags::NONE),
    ];
    assert_eq!(client.create_accounts(&accounts).await.unwrap().value, [CreateAccountResult::Created; 3]);
}

async fn account_of(client: &Client, id: u128) -> Account {
    client.lookup_accounts(&[AccountId(id)]).await.unwrap().value[0].expect("the account exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_posts_and_reads_single_and_two_phase_transfers() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up_treasury(&client).await;

    let posted = client.create_transfers(&[receipt(10, 1_000_000), expenditure(11, 300_000)]).await.unwrap();
    assert_eq!(posted.value, [CreateTransferResult::Created; 2]);

    // A commitment of 200,000 that is then posted in part, and one that is voided.
    let pending = |id, amount| Transfer { flags: TransferFlags::PENDING, ..expenditure(id, amount) };
    let settle = |id, pending_id, amount, flag| Transfer {
        pending_id: TransferId(pending_id),
        amount,
        flags: flag,
        ..expenditure(id, 0)
    };
    let reserved = client.create_transfers(&[pending(12, 200_000), pending(14, 100_000)]).await.unwrap();
    assert_eq!(reserved.value, [CreateTransferResult::Created; 2]);
    let cash = account_of(&client, CASH).await;
    assert_eq!((cash.credits_pending, cash.credits_posted), (300_000, 300_000));
    let settled = client
        .create_transfers(&[
            settle(13, 12, 150_000, TransferFlags::POST_PENDING),
            settle(15, 14, 0, TransferFlags::VOID_PENDING),
        ])
        .await
        .unwrap();
    assert_eq!(settled.value, [CreateTransferResult::Created; 2]);

    let cash = account_of(&client, CASH).await;
    assert_eq!(
        (cash.debits_posted, cash.credits_posted, cash.debits_pending, cash.credits_pending),
        (1_000_000, 450_000, 0, 0),
        "a receipt of 1,000,000, an expenditure of 300,000 and 150,000 posted of a 200,000 commitment"
    );
    let ids: Vec<TransferId> = (10..=15).map(TransferId).collect();
    let found = client.lookup_transfers(&ids).await.unwrap().value;
    assert!(found.iter().all(Option::is_some), "every transfer reads back: {found:?}");
    assert_eq!(found[3].as_ref().unwrap().amount, 150_000);

    let history = client.get_account_transfers(&AccountFilter::all(AccountId(CASH), 100)).await.unwrap().value;
    let history_ids: Vec<u128> = history.iter().map(|transfer| transfer.id.0).collect();
    assert_eq!(history_ids, [10, 11, 12, 14, 13, 15], "the cash account's transfers in commit order");

    let trial = client.trial_balance(KRW).await.unwrap().value;
    assert!(trial.total.is_balanced(), "debits equal credits: {trial:?}");

    // Every node serves the same state from its own replica.
    for node in cluster.nodes.values() {
        let local = node.client().with_stale_reads(true);
        let applied = posted.applied_index.max(settled.applied_index);
        cluster.wait_applied(node.addresses.id, applied, Duration::from_secs(10)).await;
        assert_eq!(account_of(&local, CASH).await, cash, "node {} agrees", node.addresses.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_follower_is_forwarded_to_the_leader_and_succeeds() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    // A client that knows only the follower: it cannot follow a leader hint
    // to an address it does not have, so the write must be forwarded.
    let only_follower = cluster.node(follower).client();
    set_up_treasury(&only_follower).await;
    let reply = only_follower.create_transfers(&[receipt(20, 5_000)]).await.unwrap();
    assert_eq!(reply.value, [CreateTransferResult::Created]);
    assert_eq!(reply.node_id, leader, "the leader applied the forwarded write");
    let leader_client = cluster.node(leader).client();
    assert_eq!(account_of(&leader_client, CASH).await.debits_posted, 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_client_timeout_returns_exists_and_never_posts_twice() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up_treasury(&client).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let followers: Vec<u64> = cluster.nodes.keys().copied().filter(|id| *id != leader).collect();

    // With both followers frozen the leader appends the batch but cannot
    // commit it: the client's deadline passes and the outcome is unknown.
    for id in &followers {
        cluster.node(*id).pause();
    }
    let mut config = coffer_tests::client_config(vec![cluster.node(leader).addresses.api.clone()]);
    config.deadline_ms = 1_500;
    let impatient = Client::new(config).unwrap();
    let batch = [receipt(30, 70_000), receipt(31, 30_000)];
    let timed_out = impatient.create_transfers(&batch).await.unwrap_err();
    assert_eq!(timed_out.code(), Some(Code::DeadlineExceeded), "{timed_out}");
    for id in &followers {
        cluster.node(*id).resume();
    }

    // The retry, with the same ids, finds the batch applied (or applies it
    // if the leader lost it); either way the money moves once.
    let retried = client.create_transfers(&batch).await.unwrap();
    assert!(
        retried
            .value
            .iter()
            .all(|result| matches!(result, CreateTransferResult::Exists | CreateTransferResult::Created)),
        "{:?}",
        retried.value
    );
    let again = client.create_transfers(&batch).await.unwrap();
    assert_eq!(again.value, [CreateTransferResult::Exists; 2], "a second retry is a no-op");
    assert_eq!(account_of(&client, CASH).await.debits_posted, 100_000, "posted exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_transfer_and_the_restarted_node_catches_up() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up_treasury(&client).await;

    // A payment module posting batches of receipts as fast as it can,
    // recording what the cluster acknowledged.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<u128>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (client, acknowledged, stop) = (client.clone(), acknowledged.clone(), stop.clone());
        async move {
            let mut next = 1_000u128;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Transfer> = (next..next + 50).map(|id| receipt(id, 10)).collect();
                // Retried by the client with the same ids until acknowledged.
                match client.create_transfers(&batch).await {
                    Ok(reply) => {
                        assert!(reply.value.iter().all(|r| r.is_success()), "{:?}", reply.value);
                        acknowledged.lock().unwrap().extend(next..next + 50);
                        next += 50;
                    }
                    Err(error) => eprintln!("write of {next}.. not acknowledged yet: {error}"),
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let old_leader = cluster.wait_for_leader(&[]).await;
    let before = acknowledged.lock().unwrap().len();
    cluster.node(old_leader).kill();
    let new_leader = cluster.wait_for_leader(&[old_leader]).await;
    assert_ne!(new_leader, old_leader);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acknowledged: Vec<TransferId> = acknowledged.lock().unwrap().iter().copied().map(TransferId).collect();
    assert!(acknowledged.len() > before, "writes went on after the leader died ({before} before)");

    // Every acknowledged transfer is there, exactly once.
    let survivor = cluster.node(new_leader).client();
    for chunk in acknowledged.chunks(8_000) {
        let found = survivor.lookup_transfers(chunk).await.unwrap().value;
        let missing: Vec<_> = chunk.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(id, _)| id.0).collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    }
    let cash = account_of(&survivor, CASH).await;
    let total = acknowledged.len() as u128 * 10;
    assert!(cash.debits_posted >= total, "{} posted, {total} acknowledged", cash.debits_posted);
    assert_eq!(cash.debits_posted % 10, 0);

    // The killed node restarts from its disk and catches up.
    cluster.node(old_leader).start();
    let commit = survivor.trial_balance(KRW).await.unwrap().applied_index;
    cluster.wait_applied(old_leader, commit, Duration::from_secs(30)).await;
    let restarted = cluster.node(old_leader).client().with_stale_reads(true);
    assert_eq!(account_of(&restarted, CASH).await, cash, "the restarted node holds the same balances");
}

/// Sends `request` to `address` with a raw gRPC client and returns the status.
async fn raw_status<F, Fut, T>(address: &str, call: F) -> tonic::Status
where
    F: FnOnce(LedgerServiceClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    T: std::fmt::Debug,
{
    let client = coffer_tests::channel(address).await.map(LedgerServiceClient::new).unwrap();
    call(client).await.expect_err("the request is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_status_naming_the_field_and_change_nothing() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up_treasury(&client).await;
    client.create_transfers(&[receipt(40, 1_000)]).await.unwrap();
    let leader = cluster.wait_for_leader(&[]).await;
    let address = cluster.node(leader).addresses.api.clone();
    let before = client.trial_balance(KRW).await.unwrap();

    let wire = |id: &str, amount: &str, kind: i32| proto::Transfer {
        id: id.into(),
        debit_account_id: CASH.to_string(),
        credit_account_id: REVENUE.to_string(),
        amount: amount.into(),
        ledger: 1,
        code: 1,
        kind,
        ..Default::default()
    };
    let receipt_kind = proto::TransferKind::Receipt as i32;
    let create = |transfers: Vec<proto::Transfer>| proto::CreateTransfersRequest {
        transfers,
        amount_unit: 0,
        ..Default::default()
    };

    let cases: Vec<(&str, tonic::Status)> = vec![
        (
            "amount",
            raw_status(&address, |mut c| async move {
                c.create_transfers(create(vec![wire("41", "12.5", receipt_kind)])).await
            })
            .await,
        ),
        (
            "amount",
            raw_status(&address, |mut c| async move {
                c.create_transfers(create(vec![wire("41", "1,000", receipt_kind)])).await
            })
            .await,
        ),
        (
            "kind",
            raw_status(&address, |mut c| async move { c.create_transfers(create(vec![wire("41", "5", 99)])).await })
                .await,
        ),
        (
            "id",
            raw_status(&address, |mut c| async move {
                c.create_transfers(create(vec![wire("-41", "5", receipt_kind)])).await
            })
            .await,
        ),
        (
            "transfers",
            raw_status(&address, |mut c| async move {
                c.create_transfers(create(vec![wire("41", "5", receipt_kind); 8_190])).await
            })
            .await,
        ),
        (
            "ids[0]",
            raw_status(&address, |mut c| async move {
                c.lookup_accounts(proto::LookupAccountsRequest { ids: vec!["0".into()], ..Default::default() }).await
            })
            .await,
        ),
    ];
    for (field, status) in &cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "the message names {field}: {}", status.message());
    }

    // A follower that is not allowed to serve a write tells where the
    // leader is: a forwarded request is never forwarded again.
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let follower_address = cluster.node(follower).addresses.api.clone();
    let mut forwarded = tonic::Request::new(create(vec![wire("42", "5", receipt_kind)]));
    forwarded.metadata_mut().insert("coffer-forwarded", "9".parse().unwrap());
    let mut raw = coffer_tests::channel(&follower_address).await.map(LedgerServiceClient::new).unwrap();
    let refused = raw.create_transfers(forwarded).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused.metadata().get("coffer-leader").and_then(|value| value.to_str().ok()),
        Some(address.as_str()),
        "the leader's address is in the answer"
    );

    let after = client.trial_balance(KRW).await.unwrap();
    assert_eq!(after.value, before.value, "nothing changed");
    let absent = client.lookup_transfers(&[TransferId(41), TransferId(42)]).await.unwrap().value;
    assert_eq!(absent, [None, None]);
    assert!(matches!(
        client.lookup_transfers(&[TransferId(0)]).await,
        Err(ClientError::Invalid(_) | ClientError::Status { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_is_added_and_promoted_and_an_old_one_removed_while_writing() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up_treasury(&client).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<TransferId>::new()));
    let writer_client = client_of(cluster.api_addresses());
    let writer = tokio::spawn({
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        async move {
            let mut next = 5_000u128;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Transfer> = (next..next + 20).map(|id| receipt(id, 1)).collect();
                if let Ok(reply) = writer_client.create_transfers(&batch).await {
                    assert!(reply.value.iter().all(|r| r.is_success()), "{:?}", reply.value);
                    acknowledged.lock().unwrap().extend((next..next + 20).map(TransferId));
                    next += 20;
                }
            }
        }
    });

    // A learner that never connected is not made a voter, and a voter is
    // not removed where one more failure would stop writes.
    let absent = client.add_node(5, "127.0.0.1:9", None).await.unwrap();
    assert!(absent.learners.contains(&5), "{absent:?}");
    let refused = client.promote_node(5, false).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::FailedPrecondition), "{refused}");
    assert!(refused.to_string().contains("node 5 is not caught up"), "{refused}");
    let refused = client.remove_node(1, false).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::FailedPrecondition), "{refused}");
    assert!(refused.to_string().contains("one more failure would stop writes"), "{refused}");
    let gone = client.remove_node(5, false).await.unwrap();
    assert!(!gone.learners.contains(&5), "{gone:?}");

    let joining = cluster.spawn_joining(4);
    let added = client.add_node(4, &joining.raft, Some(&joining.api)).await.unwrap();
    assert!(added.learners.contains(&4), "{added:?}");
    let leader = cluster.wait_for_leader(&[4]).await;
    let commit = client.trial_balance(KRW).await.unwrap().applied_index;
    cluster.wait_applied(4, commit, Duration::from_secs(30)).await;
    // The writer goes on meanwhile, so the leader may still count node 4
    // behind (more than 64 entries short of its last index): an operator
    // retries such a refusal, and so does this test, for a bounded time.
    let promoting = std::time::Instant::now();
    let promoted = loop {
        match client.promote_node(4, false).await {
            Ok(membership) => break membership,
            Err(error)
                if error.code() == Some(Code::FailedPrecondition)
                    && error.to_string().contains("node 4 is not caught up")
                    && promoting.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("promoting node 4: {error}"),
        }
    };
    assert!(promoted.voters.contains(&4), "{promoted:?}");
    let removed_id = *cluster.nodes.keys().find(|id| **id != leader && **id != 4).unwrap();
    let removed = client.remove_node(removed_id, false).await.unwrap();
    assert!(!removed.voters.contains(&removed_id) && !removed.learners.contains(&removed_id), "{removed:?}");
    cluster.node(removed_id).terminate();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty());
    let commit = client.trial_balance(KRW).await.unwrap().applied_index;
    cluster.wait_applied(4, commit, Duration::from_secs(30)).await;
    let newcomer = cluster.node(4).client().with_stale_reads(true);
    for chunk in acknowledged.chunks(8_000) {
        let found = newcomer.lookup_transfers(chunk).await.unwrap().value;
        assert!(found.iter().all(Option::is_some), "the new node holds every acknowledged transfer");
    }
    let reports = client.status().await.unwrap();
    let leader_report = reports.iter().find(|report| report.leader_id == report.node_id && report.error.is_none());
    let voters = &leader_report.expect("a leader reports").voters;
    assert!(voters.contains(&4) && !voters.contains(&removed_id), "{voters:?}");

    // A node whose configuration predates node 4 knows it after a restart:
    // the membership keeps node 4's addresses. It lists node 4 at its API
    // address, and once it leads it replicates to node 4.
    let old = *cluster.nodes.keys().find(|id| **id != 4 && **id != removed_id && **id != leader).unwrap();
    assert!(cluster.node(old).terminate().success());
    cluster.node(old).start();
    let commit = client.trial_balance(KRW).await.unwrap().applied_index;
    cluster.wait_applied(old, commit, Duration::from_secs(30)).await;
    let here = cluster.node(old).client();
    let reports = here.status().await.unwrap();
    let fourth = reports.iter().find(|report| report.node_id == 4).expect("the restarted node lists node 4");
    assert_eq!((fourth.address.as_str(), fourth.error.as_deref()), (joining.api.as_str(), None), "{reports:#?}");
    client.transfer_leader(old).await.unwrap();
    let leads = || async {
        here.status()
            .await
            .is_ok_and(|own| own.first().is_some_and(|own| own.role == Some(coffer_api::client::Role::Leader)))
    };
    let started = std::time::Instant::now();
    while !leads().await {
        assert!(started.elapsed() < Duration::from_secs(20), "node {old} did not take the leadership");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = client.create_transfers(&[receipt(9_999_999, 1)]).await.unwrap().applied_index;
    cluster.wait_applied(4, written, Duration::from_secs(30)).await;
}

/// The digest `coffer verify --json` prints for a stopped node's data.
fn verified_digest(data_dir: &std::path::Path) -> (u64, String) {
    let output = coffer(&["verify", "--data-dir", &data_dir.display().to_string(), "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "verify failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("verify --json prints JSON");
    assert_eq!(report["ok"], true, "verify finds no problem: {report}");
    let applied = report["raft"]["applied_index"].as_u64().expect("the report has raft.applied_index");
    let digest = report["state_digest"].as_str().expect("the report has state_digest").to_owned();
    (applied, digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coffer_verify_shows_equal_digests_on_every_stopped_node() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up_treasury(&client).await;
    for start in (100u128..400).step_by(100) {
        let batch: Vec<Transfer> = (start..start + 100).map(|id| receipt(id, 7)).collect();
        client.create_transfers(&batch).await.unwrap();
    }
    let last = client.create_transfers(&[expenditure(999, 100)]).await.unwrap().applied_index;
    for id in [1, 2, 3] {
        cluster.wait_applied(id, last, Duration::from_secs(10)).await;
    }
    // Followers first, then the leader: no entry is committed after `last`,
    // so every node stops at the same applied index.
    let leader = cluster.wait_for_leader(&[]).await;
    let mut order: Vec<u64> = cluster.nodes.keys().copied().filter(|id| *id != leader).collect();
    order.push(leader);
    let mut digests = Vec::new();
    for id in order {
        let status = cluster.node(id).terminate();
        assert!(status.success(), "node {id} stops cleanly on SIGTERM: {status:?}");
        let data_dir = cluster.node(id).data_dir.clone();
        digests.push((id, verified_digest(&data_dir)));
    }
    let (_, (applied, digest)) = &digests[0];
    assert!(*applied >= last, "verified at {applied}, before the last write at {last}");
    for (id, verified) in &digests {
        assert_eq!(verified, &(*applied, digest.clone()), "node {id} agrees with node {}", digests[0].0);
    }
}

/// State writes skip RocksDB's WAL (the Raft log is their redo log): a node
/// killed before a flush loses what it had applied since, reopens at the
/// applied index of the last flush, and applies the rest again from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_its_unflushed_state_and_applies_it_again_from_its_log() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up_treasury(&client).await;
    let mut last = 0;
    for start in (100u128..600).step_by(100) {
        let batch: Vec<Transfer> = (start..start + 100).map(|id| receipt(id, 7)).collect();
        last = client.create_transfers(&batch).await.unwrap().applied_index;
    }
    let leader = cluster.wait_for_leader(&[]).await;
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    cluster.wait_applied(victim, last, Duration::from_secs(10)).await;
    cluster.node(victim).kill();

    // On disk: the state of the last flush (the snapshot made at start-up),
    // consistent with its own applied index, and the log after it.
    let data_dir = cluster.node(victim).data_dir.clone();
    let (recovered, _) = verified_digest(&data_dir);
    assert!(recovered < last, "the kill lost the unflushed applies: the disk holds applied {recovered} of {last}");

    cluster.node(victim).start();
    cluster.wait_applied(victim, last, Duration::from_secs(30)).await;
    let restarted = cluster.node(victim).client().with_stale_reads(true);
    let leader_client = cluster.node(leader).client();
    assert_eq!(account_of(&restarted, CASH).await, account_of(&leader_client, CASH).await);
    assert_eq!(account_of(&restarted, REVENUE).await, account_of(&leader_client, REVENUE).await);
    let ids: Vec<TransferId> = (100u128..600).map(TransferId).collect();
    let found = restarted.lookup_transfers(&ids).await.unwrap().value;
    assert!(found.iter().all(Option::is_some), "every transfer applied again");
}

/// Reads `count` changes from `feed`, each within 20 s.
async fn take_changes(feed: &mut ChangeFeed, count: usize) -> Vec<FeedChange> {
    let mut changes = Vec::with_capacity(count);
    while changes.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(20), feed.next()).await;
        let change = next.unwrap_or_else(|_| panic!("no change within 20 s after {} of {count}", changes.len()));
        changes.push(change.expect("the feed goes on").expect("a change, not an error"));
    }
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_delivers_every_change_once_in_order_across_a_reconnect() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader(&[]).await;
    let serving = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    // The feed is served by the first address that answers: a follower,
    // which is then killed while changes keep coming.
    let first = cluster.node(serving).addresses.api.clone();
    let mut addresses = vec![first.clone()];
    addresses.extend(cluster.api_addresses().into_iter().filter(|address| *address != first));
    let reader = client_of(addresses);
    let mut feed = reader.subscribe_changes(0, LedgerId(0)).unwrap();

    let client = cluster.client();
    set_up_treasury(&client).await;
    let first: Vec<Transfer> = (100..150).map(|id| receipt(id, 10)).collect();
    client.create_transfers(&first).await.unwrap();
    // A failed event changes nothing and is not a change.
    let failed = client.create_transfers(&[expenditure(150, 1_000_000)]).await.unwrap().value;
    assert_eq!(failed, [CreateTransferResult::ExceedsDebits]);
    let before_kill = take_changes(&mut feed, 1 + 3 + 50).await;
    assert!(before_kill.iter().all(|change| change.node_id == serving), "served by node {serving}");

    cluster.node(serving).kill();
    let second: Vec<Transfer> = (200..260).map(|id| receipt(id, 10)).collect();
    client.create_transfers(&second).await.unwrap();
    let after_kill = take_changes(&mut feed, 60).await;
    assert!(after_kill.iter().all(|change| change.node_id != serving), "another node took over");

    let all: Vec<FeedChange> = before_kill.iter().chain(&after_kill).cloned().collect();
    assert!(all.windows(2).all(|pair| pair[0].cursor < pair[1].cursor), "cursors strictly increase");
    assert!(matches!(all[0].record, ChangedRecord::LedgerCreated(_)), "{:?}", all[0]);
    assert!(all[1..4].iter().all(|change| matches!(change.record, ChangedRecord::AccountCreated(_))));
    let transfers: Vec<u128> = all
        .iter()
        .filter_map(|change| match &change.record {
            ChangedRecord::TransferCreated(transfer) => Some(transfer.id.0),
            _ => None,
        })
        .collect();
    let expected: Vec<u128> = (100..150).chain(200..260).collect();
    assert_eq!(transfers, expected, "every transfer once, in commit order, and not the failed one");

    // Resuming from a cursor in the middle gives exactly what followed it.
    let middle = &all[20];
    let mut resumed = cluster.client().subscribe_changes(middle.cursor, LedgerId(0)).unwrap();
    let rest = take_changes(&mut resumed, all.len() - 21).await;
    let cursors = |changes: &[FeedChange]| changes.iter().map(|change| change.cursor).collect::<Vec<_>>();
    assert_eq!(cursors(&rest), cursors(&all[21..]));
    let quiet = tokio::time::timeout(Duration::from_millis(500), resumed.next()).await;
    assert!(quiet.is_err(), "nothing more than what was committed: {quiet:?}");
}
