//! Disaster recovery end to end: two regions of three real `coffer node`
//! processes each on loopback (the primary "seoul", nodes 1-3, and the
//! standby "busan", nodes 11-13), driven by the `coffer dr` commands, the
//! operations' library (`coffer_api::disaster`), the Rust client and raw
//! gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_api::client::{Client, ClientConfig};
use coffer_api::convert::{transfer_to_wire, Amounts};
use coffer_api::disaster::{Operator, SwitchoverArgs, Timeline};
use coffer_api::proto;
use coffer_api::proto::ledger_service_client::LedgerServiceClient;
use coffer_dr::proto::dr_service_client::DrServiceClient;
use coffer_dr::proto::{FreezeRequest, IsolateRequest, PromoteRequest};
use coffer_ledger::{
    Account, AccountId, AccountKind, CreateTransferResult, Ledger, LedgerId, Transfer, TransferId, TransferKind,
};
use coffer_tests::{coffer, Cluster};
use serde_json::Value;
use tonic::Code;

const LEDGER: LedgerId = LedgerId(7);
const DEBIT: u128 = 70_001;
const CREDIT: u128 = 70_002;
/// The lease the tests' regions grant (short, to keep the tests short).
const LEASE_MS: u64 = 2_000;

fn settings(mode: &str) -> String {
    format!("mode = {mode:?}\nlease_ms = {LEASE_MS}\nclock_skew_ms = 200\nheartbeat_ms = 100")
}

fn addresses(cluster: &Cluster) -> String {
    cluster.api_addresses().join(",")
}

/// Runs `coffer --json --addresses <at> dr <args>`; the JSON it printed, or
/// its error output.
fn dr(at: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["--json", "--addresses", at, "dr"];
    all.extend_from_slice(args);
    let output = coffer(&all);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match (output.status.success(), serde_json::from_str::<Value>(&stdout)) {
        (true, Ok(value)) => Ok(value),
        (false, _) => Err(format!("{stderr}{stdout}")),
        (true, Err(error)) => Err(format!("not JSON ({error}): {stdout}")),
    }
}

fn client(cluster: &Cluster) -> Client {
    let config = ClientConfig { deadline_ms: 5_000, ..coffer_tests::client_config(cluster.api_addresses()) };
    Client::new(config).unwrap()
}

async fn setup(client: &Client) {
    let ledger = Ledger::new(LEDGER, "KRW", 0, "DR test");
    client.create_ledgers(&[ledger]).await.unwrap();
    let account =
        |id, code| Account { id: AccountId(id), ledger: LEDGER, code, kind: AccountKind::Other, ..Default::default() };
    client.create_accounts(&[account(DEBIT, 1), account(CREDIT, 2)]).await.unwrap();
}

fn batch(first: u128, len: u128) -> Vec<Transfer> {
    (first..first + len)
        .map(|id| Transfer {
            id: TransferId(id),
            debit_account_id: AccountId(DEBIT),
            credit_account_id: AccountId(CREDIT),
            amount: 1,
            ledger: LEDGER,
            code: 1,
            kind: TransferKind::Journal,
            ..Default::default()
        })
        .collect()
}

/// Acknowledged transfer ids, each with when its answer arrived.
type Acked = Arc<Mutex<Vec<(u128, Instant)>>>;

/// Writes batches of 10 to `client` until `stop`, recording every
/// acknowledged id. Ids start at `first`.
fn writer(client: Client, first: u128, stop: Arc<AtomicBool>, acked: Acked) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = first;
        while !stop.load(Ordering::Relaxed) {
            let transfers = batch(next, 10);
            next += 10;
            if let Ok(reply) = client.create_transfers(&transfers).await {
                let (mut acked, at) = (acked.lock().unwrap(), Instant::now());
                for (transfer, result) in transfers.iter().zip(&reply.value) {
                    if matches!(result, CreateTransferResult::Created | CreateTransferResult::Exists) {
                        acked.push((transfer.id.0, at));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// The ids of `ids` the region of `client` does not hold.
async fn missing(client: &Client, ids: &[u128]) -> Vec<u128> {
    let mut missing = Vec::new();
    for chunk in ids.chunks(4_000) {
        let wanted: Vec<TransferId> = chunk.iter().map(|id| TransferId(*id)).collect();
        let found = client.lookup_transfers(&wanted).await.unwrap();
        missing.extend(chunk.iter().zip(&found.value).filter(|(_, found)| found.is_none()).map(|(id, _)| *id));
    }
    missing
}

/// Cuts (or restores) the link on every node of `cluster` that answers (a
/// node that could not start answers nothing, and ships nothing either).
async fn isolate(cluster: &Cluster, isolated: bool) {
    let mut told = 0;
    for address in cluster.api_addresses() {
        if let Ok(mut client) = coffer_tests::channel(&address).await.map(DrServiceClient::new) {
            client.isolate(IsolateRequest { isolated }).await.unwrap();
            told += 1;
        }
    }
    assert!(told >= 2, "only {told} nodes answered");
}

/// Waits until `coffer dr status` shows the standby connected to the
/// primary and caught up.
async fn wait_shipping(at: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Value::Array(rows)) = dr(at, &["status"]) {
            let primary = rows.iter().find(|row| row["leader"] == true && row["role"] == "primary");
            if primary
                .is_some_and(|row| row["standby_connected"] == true && row["lease_remaining_ms"].as_i64() > Some(0))
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the standby never connected: {:?}", dr(at, &["status"]));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The standby's leader dies between the freeze and the promotion (the
/// operation's observer kills it as the freeze is recorded): the switchover
/// follows the new leader and completes, or gives the primary its writes
/// back; either way writes are refused for at most the operation's
/// catch-up deadline and one region takes them afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_follows_a_standby_leader_change_between_the_freeze_and_the_promotion() {
    let (seoul, mut busan) = Cluster::start_regions(3, &settings("async")).await;
    let at = addresses(&seoul);
    wait_shipping(&at).await;
    setup(&client(&seoul)).await;
    let leader = busan.wait_for_leader(&[]).await;
    let pid = busan.node(leader).pid().expect("busan's leader runs");
    let killed = Arc::new(Mutex::new(None::<Instant>));
    let kill = killed.clone();
    let mut timeline = Timeline::observed(move |event| {
        let mut killed = kill.lock().unwrap();
        if event.event.starts_with("writes frozen") && killed.is_none() {
            let sent = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            assert!(sent.is_ok_and(|status| status.success()), "SIGKILL to busan's leader {pid}");
            *killed = Some(Instant::now());
        }
    });
    let operator = Operator::new(coffer_tests::pki::admin());
    let deadline_ms = 30_000;
    let args = SwitchoverArgs { max_lag: 10_000, catch_up_timeout_ms: deadline_ms };
    let outcome =
        operator.switchover(&at.split(',').map(str::to_owned).collect::<Vec<_>>(), &args, &mut timeline).await;
    let killed_at = killed.lock().unwrap().expect("the observer saw the freeze and killed busan's leader");
    let events: Vec<&str> = timeline.events().iter().map(|event| event.event.as_str()).collect();
    println!("{events:#?}\n{:?}", outcome.as_ref().map(|report| report.write_pause_ms));
    let writer_region = match &outcome {
        Ok(report) => {
            assert_eq!((report.from_region.as_str(), report.to_region.as_str()), ("seoul", "busan"), "{events:#?}");
            assert!(report.write_pause_ms <= deadline_ms, "{report:?}");
            let promoted = events.iter().find(|event| event.starts_with("busan promoted")).expect("promoted");
            assert!(!promoted.is_empty());
            &busan
        }
        Err(error) => {
            // It could not promote in time: seoul must have its writes back.
            assert!(error.to_string().contains("writes unfrozen in seoul"), "{error}\n{events:#?}");
            assert!(killed_at.elapsed() <= Duration::from_millis(deadline_ms + 10_000));
            &seoul
        }
    };
    // Exactly one region takes a write now.
    let written = client(writer_region).create_transfers(&batch(900_000, 10)).await.unwrap();
    assert!(written.value.iter().all(|result| *result == CreateTransferResult::Created), "{written:?}");
    let other = if std::ptr::eq(writer_region, &busan) { &seoul } else { &busan };
    assert!(client(other).create_transfers(&batch(900_100, 10)).await.is_err(), "the other region refuses writes");
    // The killed node comes back and catches up.
    busan.node(leader).kill();
    busan.node(leader).start();
    let _ = busan.wait_for_leader(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_drills_under_load_lose_nothing_and_a_failover_fails_back() {
    let (seoul, busan) = Cluster::start_regions(3, &settings("async")).await;
    let at = addresses(&seoul);
    wait_shipping(&at).await;

    // A planned switchover under load, and back: a round trip.
    for (from, to) in [("seoul", "busan"), ("busan", "seoul")] {
        let report = dr(&at, &["drill", "--scenario", "switchover", "--load", "200", "--warmup-ms", "1500"])
            .unwrap_or_else(|error| panic!("switchover {from} -> {to}: {error}"));
        assert_eq!(report["verdict"], "PASS", "{report:#}");
        assert_eq!(report["rpo_lost_acknowledged"], 0);
        assert!(report["acknowledged"].as_u64().unwrap() > 100, "{report:#}");
        assert_eq!(report["digests_equal"], true);
        let switched = &report["switchover"];
        assert_eq!((switched["from_region"].as_str(), switched["to_region"].as_str()), (Some(from), Some(to)));
        assert!(switched["write_pause_ms"].as_u64().unwrap() <= 5_000, "{report:#}");
    }

    // A failover (the link cut, the old primary's lease lapsing) and the
    // failback: no load, so the old primary did not diverge.
    let report = dr(&at, &["drill", "--scenario", "failover", "--failback"]).unwrap();
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    assert!(report["rto_ms"].as_u64().unwrap() < 30_000);
    assert_eq!(report["failback_report"]["primary_region"], "seoul");
    let status = dr(&at, &["status"]).unwrap();
    let epochs: BTreeSet<u64> = status.as_array().unwrap().iter().map(|row| row["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, BTreeSet::from([4]), "two switchovers, a failover and a failback: {status:#}");
    drop(busan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_primary_region_killed_then_failover_serves_writes_and_loses_no_acknowledged_transfer() {
    let (mut seoul, busan) = Cluster::start_regions(3, &settings("sync")).await;
    wait_shipping(&addresses(&seoul)).await;
    let primary = client(&seoul);
    setup(&primary).await;
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writing = writer(primary, 1_000_000, stop.clone(), acked.clone());
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    for id in [1, 2, 3] {
        seoul.node(id).kill();
    }
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    let acked: Vec<u128> = acked.lock().unwrap().iter().map(|&(id, _)| id).collect();
    assert!(acked.len() > 100, "only {} transfers acknowledged", acked.len());

    let started = Instant::now();
    let report = dr(&addresses(&busan), &["failover"]).unwrap();
    assert_eq!(report["promoted_region"], "busan");
    assert_eq!(report["old_primary_reachable"], false);
    let standby = client(&busan);
    let accepted = loop {
        match standby.create_transfers(&batch(9_000_000, 1)).await {
            Ok(reply) => break reply,
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(30), "busan takes no write: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(accepted.value, [CreateTransferResult::Created]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(missing(&standby, &acked).await, Vec::<u128>::new(), "sync mode lost acknowledged transfers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_failover_lists_every_acknowledged_transfer_it_lost_and_the_old_primary_stops_writing() {
    let (seoul, busan) = Cluster::start_regions(3, &settings("async")).await;
    wait_shipping(&addresses(&seoul)).await;
    let primary = client(&seoul);
    setup(&primary).await;
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writing = writer(primary.clone(), 2_000_000, stop.clone(), acked.clone());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // The link between the regions fails: seoul keeps writing on its lease,
    // but only until an entry has waited max_lag_ms (1 s by default) for
    // busan's confirmation: then it refuses, naming the bound, while its
    // lease still holds.
    isolate(&seoul, true).await;
    let cut = Instant::now();
    let once =
        ClientConfig { attempts_max: 1, deadline_ms: 1_000, ..coffer_tests::client_config(seoul.api_addresses()) };
    let once = Client::new(once).unwrap();
    let mut probe = 2_900_000;
    let behind = loop {
        probe += 1;
        if let Err(error) = once.create_transfers(&batch(probe, 1)).await {
            let error = error.to_string();
            assert!(!error.contains("no write lease"), "the lease lapsed before the RPO bound stopped writes: {error}");
            if error.contains("max_lag_ms") {
                break cut.elapsed();
            }
        }
        assert!(cut.elapsed() < Duration::from_millis(LEASE_MS), "writes never stopped at max_lag_ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(behind >= Duration::from_millis(900), "stopped {behind:?} after the cut, before the bound");
    let report = dr(&addresses(&busan), &["failover", "--wait-lease"]).unwrap();
    assert!(cut.elapsed() >= Duration::from_millis(LEASE_MS), "promoted before the lease could lapse");
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();

    // Nothing written to seoul after its lease lapsed.
    let refused = primary.create_transfers(&batch(3_000_000, 1)).await.unwrap_err().to_string();
    assert!(refused.contains("no write lease"), "{refused}");

    let acked_at: BTreeMap<u128, Instant> = acked.lock().unwrap().iter().copied().collect();
    let acked: Vec<u128> = acked_at.keys().copied().collect();
    let lost = missing(&client(&busan), &acked).await;
    assert!(!lost.is_empty(), "the test meant seoul to acknowledge writes busan never received");
    // The RPO in time: the lost writes were all acknowledged within the
    // bound (plus the answers' way back to this test).
    let (first, last) = (lost.iter().map(|id| acked_at[id]).min(), lost.iter().map(|id| acked_at[id]).max());
    let span = last.unwrap() - first.unwrap();
    assert!(span <= Duration::from_millis(1_100), "lost writes were acknowledged over {span:?}");
    let listed: BTreeSet<u128> = report["divergent_transfers"]
        .as_array()
        .expect("seoul answered, so the report lists what it committed")
        .iter()
        .map(|lost| lost["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let unlisted: Vec<&u128> = lost.iter().filter(|id| !listed.contains(id)).collect();
    assert!(unlisted.is_empty(), "lost and not listed: {unlisted:?}");
    // `reconcile` lists the same, later.
    let again = dr(&addresses(&busan), &["reconcile"]).unwrap();
    assert_eq!(again["transfers"].as_array().unwrap().len(), listed.len());
    // A diverged old primary cannot rejoin as is: failback refuses, naming it.
    let refused = dr(&addresses(&busan), &["failback"]).unwrap_err();
    assert!(refused.contains("seoul diverged from busan"), "{refused}");
    isolate(&seoul, false).await;

    // Re-seeded from a checkpoint of busan, seoul rejoins, catches up and
    // takes the primary role back; what it alone held is gone, what busan
    // took is there.
    let busan_client = client(&busan);
    busan_client.create_transfers(&batch(6_000_000, 10)).await.unwrap();
    let back = dr(&addresses(&busan), &["failback", "--reseed"]).unwrap();
    assert_eq!(back["primary_region"], "seoul", "{back:#}");
    assert_eq!(back["epoch"], 2);
    let seoul_client = client(&seoul);
    let survived: Vec<u128> =
        acked.iter().copied().filter(|id| !lost.contains(id)).chain(6_000_000..6_000_010).collect();
    assert_eq!(missing(&seoul_client, &survived).await, Vec::<u128>::new());
    assert_eq!(missing(&seoul_client, &lost).await.len(), lost.len(), "seoul kept transfers it alone had");
    // And it is a full member again: a switchover drill round trip passes.
    let report =
        dr(&addresses(&seoul), &["drill", "--scenario", "switchover", "--load", "100", "--warmup-ms", "500"]).unwrap();
    assert_eq!(report["verdict"], "PASS", "{report:#}");
}

/// One write through raw gRPC: whether it was acknowledged, and the epoch
/// and role the answer carried.
async fn write_raw(address: &str, id: u128) -> (bool, Option<String>, Option<String>) {
    let Ok(mut client) = coffer_tests::channel(address).await.map(LedgerServiceClient::new) else {
        return (false, None, None);
    };
    let transfers = batch(id, 1).iter().map(|transfer| transfer_to_wire(transfer, Amounts::Minor)).collect();
    let request =
        proto::CreateTransfersRequest { transfers, amount_unit: proto::AmountUnit::Minor as i32, ..Default::default() };
    let header = |metadata: &tonic::metadata::MetadataMap, name| {
        metadata.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    match client.create_transfers(request).await {
        Ok(response) => {
            let ok = response.get_ref().results == ["created"];
            (ok, header(response.metadata(), "coffer-epoch"), header(response.metadata(), "coffer-role"))
        }
        Err(status) => (false, header(status.metadata(), "coffer-epoch"), header(status.metadata(), "coffer-role")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_a_forced_failover_leaves_each_epoch_one_writer_and_the_old_primary_stops_at_its_lease() {
    let (seoul, busan) = Cluster::start_regions(3, &settings("async")).await;
    wait_shipping(&addresses(&seoul)).await;
    setup(&client(&seoul)).await;
    isolate(&seoul, true).await;
    let cut = Instant::now();
    let reason = "seoul cut off in a split-brain test";
    let report = dr(&addresses(&busan), &["failover", "--force", "--reason", reason]).unwrap();
    assert_eq!(report["epoch"], 1);
    // Every busan node's audit trail names who forced the promotion, and why.
    let index = report["index"].as_u64().unwrap_or_default();
    let mut promotions = Vec::new();
    for node in busan.nodes.values() {
        let node_client = client(&busan);
        let deadline = Instant::now() + Duration::from_secs(10);
        let promotion = loop {
            let trail = node_client.list_audit_at(&node.addresses.api, 0, 1_000).await.unwrap().value;
            if let Some(found) = trail.into_iter().find(|record| record.kind == "promote") {
                break found;
            }
            assert!(Instant::now() < deadline, "node {} has no promotion in its trail", node.addresses.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        promotions.push(promotion);
    }
    assert!(promotions.windows(2).all(|pair| pair[0] == pair[1]), "{promotions:#?}");
    let promotion = &promotions[0];
    assert_eq!(
        (promotion.principal.as_str(), promotion.note.as_str()),
        ("admin", format!("forced: {reason}").as_str())
    );
    assert!(index == 0 || promotion.index <= index, "{promotion:?} {report:#}");
    let bare = dr(&addresses(&busan), &["lease", "waive"]).unwrap_err();
    assert!(bare.contains("reason"), "waiving a lease without a reason: {bare}");
    // Clients keep writing to both sides.
    let mut acknowledged = Vec::new();
    let mut id = 4_000_000;
    while cut.elapsed() < Duration::from_millis(LEASE_MS + 1_500) {
        for (region, cluster) in [("seoul", &seoul), ("busan", &busan)] {
            for address in cluster.api_addresses() {
                id += 1;
                let (ok, epoch, role) = write_raw(&address, id).await;
                if ok {
                    acknowledged.push((region, cut.elapsed(), epoch, role));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seoul_acks: Vec<_> = acknowledged.iter().filter(|(region, ..)| *region == "seoul").collect();
    let busan_acks: Vec<_> = acknowledged.iter().filter(|(region, ..)| *region == "busan").collect();
    assert!(!busan_acks.is_empty(), "the promoted region took no write");
    let lease = Duration::from_millis(LEASE_MS + 100);
    for (_, at, epoch, role) in &seoul_acks {
        assert!(*at <= lease, "seoul acknowledged a write {at:?} after the cut, past its lease");
        assert_eq!((epoch.as_deref(), role.as_deref()), (Some("0"), Some("primary")));
    }
    for (_, _, epoch, role) in &busan_acks {
        assert_eq!((epoch.as_deref(), role.as_deref()), (Some("1"), Some("primary")));
    }
    isolate(&seoul, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_operations_are_refused_with_errors_that_say_why_and_change_nothing() {
    let settings = format!("{}\nmax_lag_entries = 8\nmax_lag_ms = 0", settings("async"));
    let (seoul, mut busan) = Cluster::start_regions(3, &settings).await;
    let at = addresses(&seoul);
    wait_shipping(&at).await;
    setup(&client(&seoul)).await;

    // Writes to the standby region.
    let refused = client(&busan).create_transfers(&batch(5_000_000, 1)).await.unwrap_err().to_string();
    assert!(refused.contains("standby"), "{refused}");
    let primary_nodes = seoul.api_addresses().join(", ");
    assert!(refused.contains(&format!("(its nodes: {primary_nodes})")), "{refused}");

    // A failover while the primary answers and holds its lease.
    let refused = dr(&addresses(&busan), &["failover"]).unwrap_err();
    assert!(refused.contains("holds a valid write lease"), "{refused}");

    // A promotion sent to the primary region.
    let leader = seoul.api_addresses();
    let mut refusals = Vec::new();
    for address in &leader {
        if let Ok(mut client) = coffer_tests::channel(address).await.map(DrServiceClient::new) {
            refusals.push(
                client
                    .promote(PromoteRequest { force: true, reason: "test".into(), keep_lease: false })
                    .await
                    .unwrap_err(),
            );
        }
    }
    assert!(
        refusals
            .iter()
            .any(|status| status.code() == Code::FailedPrecondition && status.message().contains("only a standby")),
        "{refusals:?}"
    );

    // A switchover while the standby lags beyond the bound: cut the link,
    // write while the lease holds, ask with a bound of 0.
    isolate(&seoul, true).await;
    let primary = client(&seoul);
    for first in (5_100_000..5_100_050).step_by(10) {
        primary.create_transfers(&batch(first, 10)).await.unwrap();
    }
    let refused = dr(&at, &["switchover", "--max-lag", "0"]).unwrap_err();
    assert!(refused.contains("more than --max-lag 0"), "{refused}");
    // Writes stop once the standby lags more than max_lag_entries (8); one
    // try each, so the refusal is not retried until the lease lapses too.
    let once =
        ClientConfig { attempts_max: 1, deadline_ms: 1_000, ..coffer_tests::client_config(seoul.api_addresses()) };
    let once = Client::new(once).unwrap();
    let mut refused = None;
    for first in (5_200_000..5_200_200).step_by(10) {
        if let Err(error) = once.create_transfers(&batch(first, 10)).await {
            refused = Some(error.to_string());
            break;
        }
    }
    let refused = refused.expect("the primary kept writing past the lag bound");
    assert!(refused.contains("more than the bound of 8"), "{refused}");
    isolate(&seoul, false).await;

    // Nothing changed: seoul is still the primary of epoch 0, and catches
    // busan up once the link is back.
    wait_shipping(&at).await;
    let status = dr(&at, &["status"]).unwrap();
    for row in status.as_array().unwrap() {
        let expected = if row["region"] == "seoul" { "primary" } else { "standby" };
        assert_eq!((row["role"].as_str(), row["epoch"].as_u64()), (Some(expected), Some(0)), "{row:#}");
    }

    // A primary left frozen (a switchover that could neither finish nor
    // undo its freeze) takes writes again once an operator unfreezes it,
    // with a reason the audit trail keeps.
    let mut frozen = false;
    for address in seoul.api_addresses() {
        if let Ok(mut client) = coffer_tests::channel(&address).await.map(DrServiceClient::new) {
            frozen |= client.freeze(FreezeRequest {}).await.is_ok();
        }
    }
    assert!(frozen, "no seoul node froze its region");
    let refused = once.create_transfers(&batch(5_250_000, 1)).await.unwrap_err().to_string();
    assert!(refused.contains("frozen"), "{refused}");
    let bare = dr(&at, &["unfreeze", "--reason", " "]).unwrap_err();
    assert!(bare.contains("--reason"), "{bare}");
    let unfrozen = dr(&at, &["unfreeze", "--reason", "left frozen in a test"]).unwrap();
    assert_eq!((unfrozen["region"].as_str(), unfrozen["was_frozen"].as_bool()), (Some("seoul"), Some(true)));
    assert_eq!(primary.create_transfers(&batch(5_250_001, 1)).await.unwrap().value, [CreateTransferResult::Created]);
    let trail = primary.list_audit(0, 1_000, None).await.unwrap().value;
    assert!(
        trail.iter().any(|record| record.kind == "unfreeze" && record.note == "left frozen in a test"),
        "{trail:#?}"
    );
    let again = dr(&at, &["unfreeze", "--reason", "twice"]).unwrap();
    assert_eq!(again["was_frozen"], false);

    // The standby region is lost: seoul stops writing once its lease
    // lapses, writes alone once the operator waives the lease, and stops
    // again when the lease is required again.
    for id in [11, 12, 13] {
        busan.node(id).kill();
    }
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 200)).await;
    // `dr status` names the lost region and says its nodes' ids are not
    // known; a primary shows no cursor (it follows nobody).
    let status = dr(&at, &["status"]).unwrap();
    for row in status.as_array().unwrap() {
        if row["role"] == "unreachable" {
            assert_eq!((row["region"].as_str(), row["node_id"].is_null()), (Some("busan"), true), "{row:#}");
        } else {
            assert_eq!((row["region"].as_str(), row["role"].as_str()), (Some("seoul"), Some("primary")), "{row:#}");
            assert!(row["cursor"].is_null(), "{row:#}");
        }
    }
    let text = coffer(&["--addresses", &at, "dr", "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let busan_rows = text.lines().filter(|line| line.starts_with("busan ") && line.contains(" ? ")).count();
    assert_eq!(busan_rows, 3, "{text}");
    let refused = once.create_transfers(&batch(5_300_000, 1)).await.unwrap_err().to_string();
    assert!(refused.contains("no write lease"), "{refused}");
    let waived = dr(&at, &["lease", "waive", "--reason", "busan region lost in a test"]).unwrap();
    assert_eq!(waived["lease_required"], false);
    assert_eq!(primary.create_transfers(&batch(5_300_001, 1)).await.unwrap().value, [CreateTransferResult::Created]);
    dr(&at, &["lease", "require"]).unwrap();
    let refused = once.create_transfers(&batch(5_300_002, 1)).await.unwrap_err().to_string();
    assert!(refused.contains("no write lease"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_the_primary_compacted_past_is_reseeded_from_a_checkpoint_and_follows_again() {
    // A primary that compacts its log early and keeps little for the standby.
    let settings = format!(
        "{}\nlog_retain_entries_max = 4\nmax_lag_ms = 0\n\n[raft]\nlog_gc_threshold_entries = 8\nlog_gc_keep_entries = 2\n",
        settings("async")
    );
    let (seoul, busan) = Cluster::start_regions(3, &settings).await;
    let at = addresses(&seoul);
    wait_shipping(&at).await;
    let primary = client(&seoul);
    setup(&primary).await;
    // The link fails; seoul writes (on its lease) and compacts past busan.
    isolate(&seoul, true).await;
    let cut = Instant::now();
    let mut first = 7_000_000;
    while cut.elapsed() < Duration::from_millis(LEASE_MS / 2) {
        primary.create_transfers(&batch(first, 10)).await.unwrap();
        first += 10;
    }
    isolate(&seoul, false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = dr(&at, &["status"]).unwrap();
        let said = status
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["error"].as_str().is_some_and(|error| error.contains("re-seeded")));
        if said {
            break;
        }
        assert!(Instant::now() < deadline, "the standby never said it needs a re-seed: {status:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // In text, the timeline is printed once, as it happens (stderr), and
    // every index in it names whose log it is in.
    let reseeded = coffer(&["--addresses", &at, "dr", "reseed"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&reseeded.stdout), String::from_utf8_lossy(&reseeded.stderr));
    assert!(reseeded.status.success(), "{stderr}{stdout}");
    assert!(stdout.starts_with("re-seed done: busan follows seoul from seoul's index "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stderr.contains("ships from the new primary"), "{stderr}");
    for line in stderr.lines().filter(|line| line.contains("index")) {
        assert!(line.contains("'s index"), "an index without its log: {line}");
    }
    // It holds everything seoul acknowledged, and a drill round trip passes.
    let written: Vec<u128> = (7_000_000..first).collect();
    assert_eq!(missing(&client(&busan), &written).await, Vec::<u128>::new());
    let report = dr(&at, &["drill", "--scenario", "switchover", "--load", "100", "--warmup-ms", "500"]).unwrap();
    assert_eq!(report["verdict"], "PASS", "{report:#}");
}
