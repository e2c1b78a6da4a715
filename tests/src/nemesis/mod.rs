//! The real-process nemesis: a bank workload against a 3-node cluster of
//! `coffer node` processes on loopback while faults are injected, then
//! the recorded history checked (DESIGN.md §7, issue 7 item 6).
//!
//! A run ([`run`]):
//!
//! 1. starts a proxy per directed link ([`proxy`]) and the cluster with
//!    every node's address book pointing at them (small memtables, so the
//!    stores hold table files for the corruption faults to damage);
//! 2. creates the bank (`coffer-chaos`'s [`Bank`], two ledgers, half the
//!    accounts limited) and starts the clients ([`history`]);
//! 3. injects [`NemesisOptions::faults`] faults one after another
//!    ([`faults`]): the first five cover every kind, then random ones;
//! 4. heals everything and measures liveness: a leader, and a new
//!    transfer committed, within [`LIVENESS_BOUND`];
//! 5. stops the clients, waits past every pending timeout until every
//!    node has applied the same index, reads every node, stops the nodes
//!    and checks their stores ([`checks`]).
//!
//! A run is driven by one seed (fault kinds, targets and durations; the
//! clients' choices), printed first; real processes and real time mean a
//! seed does not replay a run exactly, but it replays its schedule.

pub mod checks;
pub mod faults;
pub mod history;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_api::client::Client;
use coffer_chaos::checker::History;
use coffer_chaos::random::Random;
use coffer_chaos::workload::Bank;
use coffer_chaos::Violation;
use coffer_ledger::{
    CreateAccountResult, CreateLedgerResult, CreateTransferResult, Operation, Transfer, TransferId, TransferKind,
};

use self::checks::StoreSummary;
use self::faults::{leader_of, CorruptionTally, FaultKind, FaultRecord, Nemesis};
use self::history::{BankClient, Recorder, WriteOutcome};
use self::proxy::ProxyNet;
use crate::{client_of, Cluster, ClusterOptions};

/// Faults of a run unless `COFFER_NEMESIS_FAULTS` says otherwise (the CI run).
pub const FAULTS_DEFAULT: u32 = 24;
/// Concurrent bank clients.
pub const CLIENTS_DEFAULT: u32 = 3;
/// Accounts per ledger of the bank.
pub const ACCOUNTS_PER_LEDGER_DEFAULT: u128 = 40;
/// After healing, the cluster must elect a leader and commit a new
/// transfer within this.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// Nodes of the cluster.
const NODES: u64 = 3;
/// Settings with no flag: memtables of 128 KiB, so that table files are
/// written (and compacted) while the run lasts.
const NODE_CONFIG_TOML: &str = "[storage]\nwrite_buffer_bytes = 131072\n";
/// A client's deadline for one call (all its tries).
const CLIENT_DEADLINE_MS: u64 = 4_000;
/// Tries of one call within the deadline.
const CLIENT_ATTEMPTS_MAX: u32 = 100;
/// A client's longest backoff between tries.
const CLIENT_BACKOFF_MAX_MS: u64 = 200;
/// The clients run alone before the first fault, and on after healing.
const CALM: Duration = Duration::from_secs(1);
/// Wait after the clients stop, past the longest pending timeout (3 s)
/// and the leader's expiry interval (1 s), so every timed-out pending
/// transfer has expired before the final reads.
const QUIET_WAIT: Duration = Duration::from_secs(5);
/// How long the nodes may take to reach the same applied index at the end.
const CONVERGE_WAIT: Duration = Duration::from_secs(60);
/// The liveness probe's client number (its transfer ids carry it).
const PROBE_CLIENT: u32 = 1_000;

/// What a run does.
#[derive(Clone, Debug)]
pub struct NemesisOptions {
    /// The seed of every random choice.
    pub seed: u64,
    /// Faults to inject.
    pub faults: u32,
    /// Concurrent bank clients.
    pub clients: u32,
    /// Accounts per ledger.
    pub accounts_per_ledger: u128,
}

impl NemesisOptions {
    /// The defaults, with `COFFER_NEMESIS_SEED` (default: from the clock)
    /// and `COFFER_NEMESIS_FAULTS` (default [`FAULTS_DEFAULT`]) from the
    /// environment.
    pub fn from_env() -> Self {
        let number = |name: &str| std::env::var(name).ok().filter(|text| !text.trim().is_empty());
        let seed = match number("COFFER_NEMESIS_SEED") {
            Some(text) => text.trim().parse().unwrap_or_else(|_| panic!("COFFER_NEMESIS_SEED={text} is not a u64")),
            None => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                now.as_nanos() as u64
            }
        };
        let faults = match number("COFFER_NEMESIS_FAULTS") {
            Some(text) => text.trim().parse().unwrap_or_else(|_| panic!("COFFER_NEMESIS_FAULTS={text} is not a u32")),
            None => FAULTS_DEFAULT,
        };
        Self { seed, faults, clients: CLIENTS_DEFAULT, accounts_per_ledger: ACCOUNTS_PER_LEDGER_DEFAULT }
    }

    /// The command that runs this schedule again.
    pub fn replay_command(&self) -> String {
        format!("make nemesis SEED={} FAULTS={}", self.seed, self.faults)
    }
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    /// What it was asked to do.
    pub options: NemesisOptions,
    /// Every fault injected.
    pub faults: Vec<FaultRecord>,
    /// What the corruption faults found.
    pub corruption: CorruptionTally,
    /// Write tries sent.
    pub writes: u64,
    /// Write tries acknowledged.
    pub writes_acked: u64,
    /// Transfers acknowledged `created` or `exists` (distinct ids).
    pub transfers_acked: u64,
    /// Write tries whose outcome is unknown.
    pub writes_indeterminate: u64,
    /// Write tries refused with an error code, by code.
    pub writes_failed: BTreeMap<String, u64>,
    /// Account reads answered.
    pub reads: u64,
    /// Reads not answered.
    pub reads_failed: u64,
    /// How long after healing a new transfer committed (`None`: it did not).
    pub liveness: Option<Duration>,
    /// Connections the proxies dropped, refused and blackholed.
    pub proxy: (u64, u64, u64),
    /// Every stopped node's applied index and digest.
    pub stores: Vec<StoreSummary>,
    /// Everything found wrong.
    pub violations: Vec<Violation>,
    /// How long the run took.
    pub wall: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options = &self.options;
        writeln!(f, "nemesis: seed {} (replay: {})", options.seed, options.replay_command())?;
        let mut kinds: BTreeMap<&str, u64> = FaultKind::ALL.iter().map(|kind| (kind.name(), 0)).collect();
        for fault in &self.faults {
            *kinds.entry(fault.kind.name()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        writeln!(f, "  faults        {} ({})", self.faults.len(), kinds.join(", "))?;
        let c = &self.corruption;
        writeln!(
            f,
            "  corruption    verify detected {}, verify passed {}; node refused {} (after verify passed: {}), node \
             served (checked) {}; file compacted away {}, skipped {}",
            c.verify_detected, c.verify_passed, c.node_refused, c.verify_missed, c.node_served, c.file_gone, c.skipped
        )?;
        let (dropped, refused, blackholed) = self.proxy;
        writeln!(f, "  proxies       {dropped} connections dropped, {refused} refused, {blackholed} blackholed")?;
        writeln!(
            f,
            "  operations    {} ({} write tries, {} reads); acked {} tries, {} transfers; indeterminate {}; \
             failed {:?}; reads unanswered {}",
            self.writes + self.reads,
            self.writes,
            self.reads,
            self.writes_acked,
            self.transfers_acked,
            self.writes_indeterminate,
            self.writes_failed,
            self.reads_failed
        )?;
        match self.liveness {
            Some(took) => writeln!(f, "  liveness      a new transfer committed {took:?} after healing")?,
            None => writeln!(f, "  liveness      NO transfer committed within {LIVENESS_BOUND:?} of healing")?,
        }
        for store in &self.stores {
            writeln!(f, "  node {}        applied {}, digest {}", store.node, store.applied_index, store.state_digest)?;
        }
        writeln!(f, "  violations    {}", self.violations.len())?;
        for violation in &self.violations {
            writeln!(f, "    {violation}")?;
        }
        writeln!(f, "  wall time     {:.1?}", self.wall)
    }
}

/// A client of every node with the nemesis's bounds.
fn bank_client(cluster: &Cluster) -> Client {
    let mut config = crate::client_config(cluster.api_addresses());
    config.deadline_ms = CLIENT_DEADLINE_MS;
    config.attempts_max = CLIENT_ATTEMPTS_MAX;
    config.backoff_max_ms = CLIENT_BACKOFF_MAX_MS;
    Client::new(config).expect("a valid client configuration")
}

/// Runs the nemesis as `options` says and checks what happened. Needs a
/// multi-threaded tokio runtime (stopping a node blocks in place).
pub async fn run(options: NemesisOptions) -> Report {
    let started = Instant::now();
    eprintln!("nemesis: seed {}, {} faults (replay: {})", options.seed, options.faults, options.replay_command());
    let founders = Cluster::founders(NODES);
    let raft: BTreeMap<u64, String> = founders.iter().map(|node| (node.id, node.raft.clone())).collect();
    let reserved: BTreeSet<String> =
        founders.iter().flat_map(|node| [node.api.clone(), node.raft.clone(), node.metrics.clone()]).collect();
    let net = ProxyNet::start(&raft, &reserved).expect("the link proxies start");
    let cluster_options = ClusterOptions { raft_routes: net.routes(), config_toml: Some(NODE_CONFIG_TOML.to_owned()) };
    let mut cluster = Cluster::start_with(founders, cluster_options).await;
    let bank = Bank::sized(options.accounts_per_ledger);
    create_bank(&cluster, &bank).await;

    let mut random = Random::new(options.seed);
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let shared_bank = Arc::new(bank.clone());
    let clients: Vec<_> = (0..options.clients)
        .map(|id| {
            let client = BankClient {
                id,
                client: bank_client(&cluster),
                bank: shared_bank.clone(),
                random: random.fork(),
                recorder: recorder.clone(),
            };
            tokio::spawn(client.run(stop.clone()))
        })
        .collect();
    tokio::time::sleep(CALM).await;

    let mut nemesis = Nemesis::new(random.fork(), bank.clone());
    for number in 0..options.faults {
        let kind = FaultKind::nth(number, &mut random);
        nemesis.inject(number, kind, &mut cluster, &net).await;
        eprintln!("nemesis: fault {number}: {}: {}", kind.name(), nemesis.faults.last().map_or("", |f| &f.detail));
        tokio::time::sleep(Duration::from_millis(random.between(200, 1_000))).await;
    }
    net.heal_all();
    let liveness = probe(&cluster, &recorder, &bank).await;
    tokio::time::sleep(CALM).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a bank client does not panic");
    }

    let mut violations = nemesis.violations.clone();
    if liveness.is_none() {
        let detail = format!("no new transfer committed within {LIVENESS_BOUND:?} of healing");
        violations.push(Violation { step: 0, checker: "liveness", detail });
    }
    let log = recorder.snapshot();
    let sent = checks::sent_transfers(&log);
    let mut history = History::default();
    violations.extend(checks::check_outcomes(&log, &mut history));
    tokio::time::sleep(QUIET_WAIT).await;
    if let Err(detail) = converge(&cluster).await {
        violations.push(Violation { step: 0, checker: "liveness", detail });
    }
    let ids: Vec<TransferId> = sent.keys().copied().collect();
    let mut states = BTreeMap::new();
    for &node in cluster.nodes.keys() {
        match checks::read_node(&cluster, node, &ids, &bank).await {
            Ok(state) => {
                states.insert(node, state);
            }
            Err(detail) => violations.push(Violation { step: 0, checker: "final read", detail }),
        }
    }
    violations.extend(checks::check_final(&log, &sent, &states, &bank));
    let stored = states.values().next().map(|state| state.transfers.clone()).unwrap_or_default();
    violations.extend(checks::check_reads(&log, &stored));

    for (&id, node) in &mut cluster.nodes {
        let status = tokio::task::block_in_place(|| node.terminate());
        if !status.success() {
            let detail = format!("node {id} did not stop cleanly on SIGTERM: {status}");
            violations.push(Violation { step: 0, checker: "shutdown", detail });
        }
    }
    let (store_violations, stores) = checks::check_stores(&cluster, &mut history, &sent).await;
    violations.extend(store_violations);

    let counters = net.counters();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    Report {
        writes: log.writes.len() as u64,
        writes_acked: log.acked().count() as u64,
        transfers_acked: history.transfers_acked() as u64,
        writes_indeterminate: log.indeterminate().count() as u64,
        writes_failed: log.failed_by_code(),
        reads: log.reads.len() as u64,
        reads_failed: log.reads_failed,
        liveness,
        proxy: (load(&counters.dropped), load(&counters.refused), load(&counters.blackholed)),
        stores,
        violations,
        faults: nemesis.faults,
        corruption: nemesis.corruption,
        options,
        wall: started.elapsed(),
    }
}

/// Creates the bank's ledgers and accounts (before any fault).
async fn create_bank(cluster: &Cluster, bank: &Bank) {
    let client = cluster.client();
    for operation in bank.setup() {
        match operation {
            Operation::CreateLedgers(ledgers) => {
                let reply = client.create_ledgers(&ledgers).await.expect("the bank's ledgers are created");
                // The client may have retried a try that did apply: `exists`.
                let created = |result: &CreateLedgerResult| {
                    matches!(result, CreateLedgerResult::Created | CreateLedgerResult::Exists)
                };
                assert!(reply.value.iter().all(created), "{:?}", reply.value);
            }
            Operation::CreateAccounts(accounts) => {
                let reply = client.create_accounts(&accounts).await.expect("the bank's accounts are created");
                let created = |result: &CreateAccountResult| {
                    matches!(result, CreateAccountResult::Created | CreateAccountResult::Exists)
                };
                assert!(reply.value.iter().all(created), "{:?}", reply.value);
            }
            other => panic!("the bank's setup holds only ledgers and accounts, not {other:?}"),
        }
    }
}

/// After healing: waits for a leader, then commits a new transfer; how
/// long that took, if within [`LIVENESS_BOUND`].
async fn probe(cluster: &Cluster, recorder: &Recorder, bank: &Bank) -> Option<Duration> {
    let started = Instant::now();
    while leader_of(cluster).await.is_none() {
        if started.elapsed() > LIVENESS_BOUND {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fund = bank.accounts.first().expect("the bank has accounts");
    let payee = bank.accounts.iter().find(|a| a.ledger == fund.ledger && a.id != fund.id && !a.limited)?;
    let transfer = Transfer {
        id: TransferId((u128::from(PROBE_CLIENT) + 1) << 64 | 1),
        debit_account_id: fund.id,
        credit_account_id: payee.id,
        amount: 1,
        ledger: fund.ledger,
        code: 1,
        kind: TransferKind::Journal,
        ..Default::default()
    };
    let client = client_of(cluster.api_addresses());
    while started.elapsed() < LIVENESS_BOUND {
        if let WriteOutcome::Acked { results, .. } = recorder.send(PROBE_CLIENT, &client, &[transfer]).await {
            let took = started.elapsed();
            let committed = matches!(results[..], [CreateTransferResult::Created | CreateTransferResult::Exists]);
            return (committed && took <= LIVENESS_BOUND).then_some(took);
        }
    }
    None
}

/// Waits until every node reports the same applied index twice in a row.
async fn converge(cluster: &Cluster) -> Result<(), String> {
    let started = Instant::now();
    let mut last = Vec::new();
    while started.elapsed() < CONVERGE_WAIT {
        let reports = cluster.own_reports().await;
        let applied: Vec<Option<u64>> = reports.values().map(|own| own.as_ref().map(|own| own.applied_index)).collect();
        let same = applied.iter().all(|index| index.is_some() && *index == applied[0]);
        if same && applied == last {
            return Ok(());
        }
        last = applied;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    Err(format!("the nodes did not reach one applied index within {CONVERGE_WAIT:?}: {last:?}"))
}
