//! The simulator: a cluster of real [`Replica`]s on [`SimStorage`], a
//! simulated network and clock, simulated clients, a fault schedule drawn
//! from the seed, an operator that replaces broken nodes, and the checkers.
//!
//! A run has three phases:
//!
//! 1. **Setup**: no faults; client 0 creates the bank's ledgers and accounts.
//! 2. **Faults**: for `steps` steps clients send requests while the swarm
//!    profile crashes and restarts nodes (process crashes and power
//!    losses), damages crashed nodes' disks, partitions the network (both
//!    ways or one way) and heals it, drops, duplicates and delays messages,
//!    makes clocks miss ticks, transfers leadership and replaces voters.
//! 3. **Recovery**: faults stop; every crashed node restarts, the network
//!    heals and clients finish what they started. A probe write must commit
//!    within [`PROBE_STEPS_MAX`] steps; every broken node must be replaced,
//!    every replica must apply the same index with the same digest and
//!    overdue pending transfers must expire within [`LIVENESS_STEPS_MAX`].
//!
//! Every step is one tick (10 ms of simulated time): faults, the operator,
//! clients, message delivery, then every running node ticks and runs one
//! `advance` (one Ready round), whose messages go into the network.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};

use coffer_consensus::raft::prelude::Message;
use coffer_consensus::raft::StateRole;
use coffer_consensus::{
    is_snapshot, Applied, Completion, ConsensusConfig, MembershipChange, Outbox, Outcome, ProposalError, Replica,
    ReplicaStorage,
};
use coffer_ledger::{
    AccountId, CreateAccountResult, CreateLedgerResult, Operation, OperationResults, PendingState, Store, Transfer,
    TransferFlags, TransferId, TransferKind,
};

use crate::checker::{History, ReadFloor, ServedRead, Violation};
use crate::network::{Envelope, LinkFaults, Network, Sent};
use crate::random::Random;
use crate::storage::{Damage, Disk, SharedDisk, SimStorage};
use crate::swarm::FaultProfile;
use crate::workload::{transfer_name, Bank, OpenPending, TransferRole, Workload};

/// Simulated nanoseconds per step (one tick).
pub const TICK_NS: u64 = 10_000_000;
/// The simulated clock at step 0.
const START_NS: u64 = 1_000_000_000;
/// Steps the setup may take.
const SETUP_STEPS_MAX: u64 = 1_000;
/// Steps the cluster has, once faults stop, to elect a leader, commit a
/// probe write, finish every request, replace broken nodes and converge.
pub const LIVENESS_STEPS_MAX: u64 = 2_000;
/// Steps the cluster has, once faults stop, to commit a new write (elect a
/// leader if it has none, and apply the write on it).
pub const PROBE_STEPS_MAX: u64 = 500;
/// Steps between checks of every replica against the history.
const CHECK_INTERVAL_STEPS: u64 = 50;
/// Steps between digest comparisons (a digest hashes the whole state).
const DIGEST_INTERVAL_STEPS: u64 = 150;
/// Steps a client waits for an answer before it tries again.
const CLIENT_TIMEOUT_STEPS: u64 = 60;
/// Steps the operator waits before proposing a membership change again.
const OPERATOR_RETRY_STEPS: u64 = 20;
/// Entries a learner may lag the leader by when the operator promotes it.
const PROMOTE_LAG_MAX_ENTRIES: u64 = 8;
/// How long after its deadline a pending transfer must have expired once
/// faults have stopped (the leader proposes expiry every second).
const EXPIRY_SLACK_NS: u64 = 3_000_000_000;
/// Fault counts that are not events of the schedule but per-message or
/// per-tick faults, or their consequences; summaries list them apart.
pub const TICK_SKIPPED: &str = "tick skipped";
/// See [`TICK_SKIPPED`].
pub const MESSAGE_DROPPED: &str = "message dropped";
/// See [`TICK_SKIPPED`].
pub const MESSAGE_DUPLICATED: &str = "message duplicated";
/// See [`TICK_SKIPPED`].
pub const WRITE_LOST: &str = "write lost in a crash";
/// See [`TICK_SKIPPED`]: an applied entry's state write that a crash took
/// before a flush persisted it (applied again from the Raft log).
pub const UNFLUSHED_LOST: &str = "apply lost before a flush";
/// See [`TICK_SKIPPED`].
pub const DAMAGE_REFUSED: &str = "damaged store refused";
/// Violations one run records before it stops early.
const VIOLATIONS_MAX: usize = 20;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The seed: it decides everything.
    pub seed: u64,
    /// Founding voters (3 or 5); drawn from the seed when `None`.
    pub nodes: Option<usize>,
    /// Steps of the fault phase.
    pub steps: u64,
}

/// What one run did and found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The profile the seed drew.
    pub profile: FaultProfile,
    /// Steps run (all phases).
    pub steps: u64,
    /// Simulated time, in nanoseconds.
    pub simulated_ns: u64,
    /// Write requests acknowledged.
    pub requests_acked: u64,
    /// Transfer results acknowledged (events).
    pub events_acked: u64,
    /// Distinct transfer ids acknowledged.
    pub transfers_acked: u64,
    /// Linearizable reads checked.
    pub reads_checked: u64,
    /// Replica checks run.
    pub replica_checks: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Steps from the end of faults to a committed probe write.
    pub recovery_steps: Option<u64>,
    /// What the checkers found.
    pub violations: Vec<Violation>,
    /// A hash of the event log and of every node's state at every step: the
    /// same seed gives the same hash.
    pub hash: u64,
}

/// Runs one seed. `log`, if given, receives the readable event log line by
/// line.
pub fn run(options: &Options, log: Option<&mut dyn FnMut(&str)>) -> Report {
    let mut simulation = Simulation::new(options, log);
    // A panic in the code under test (raft-rs asserts its invariants with
    // panics) is a finding of this seed, not the end of a many-seed run.
    let ran = panic::catch_unwind(AssertUnwindSafe(|| simulation.run()));
    if let Err(panic) = ran {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_default();
        simulation.violation("panic", format!("the code under test panicked: {message}"));
    }
    simulation.report()
}

/// Whether a node runs, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Running,
    Crashed,
    /// Its store refused to open (damage detected), or it stopped on an
    /// error: it must be replaced.
    Broken,
    /// Removed from the cluster and stopped for good.
    Removed,
}

struct Node {
    disk: SharedDisk,
    replica: Option<Replica<SimStorage>>,
    /// Bumped at every start, so request handles of an earlier life are
    /// never confused with this one's.
    incarnation: u64,
    life: Life,
    /// What was damaged on its disk since it crashed.
    damaged: Option<String>,
    /// The applied index up to which this life's state was checked against
    /// the acknowledgements.
    checked: u64,
}

/// A request a node is working on for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Handle {
    node: u64,
    incarnation: u64,
    id: u64,
}

#[derive(Clone, Debug)]
struct Waiter {
    client: usize,
    request: u64,
    /// The operation of a write (an answer to an attempt the client gave
    /// up on is still recorded in the history).
    operation: Option<Operation>,
}

#[derive(Clone, Debug)]
enum Body {
    Write(Operation),
    Read { account: AccountId, floor: ReadFloor },
}

#[derive(Clone, Debug)]
struct Request {
    seq: u64,
    body: Body,
    attempt: u32,
    in_flight: Option<(Handle, u64)>,
}

struct Client {
    workload: Workload,
    request: Option<Request>,
    next_seq: u64,
    /// The leader this client was last told of.
    hint: Option<u64>,
    ready_at: u64,
    /// Operations to send before anything else (the setup; the probe).
    queued: VecDeque<Operation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Remove,
    AddLearner,
    Promote,
}

/// The operator replacing node `old` by a new, empty node `new`.
#[derive(Clone, Copy, Debug)]
struct Replacement {
    old: u64,
    new: u64,
    stage: Stage,
    next_try: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    Faults { until: u64 },
    Recovery { since: u64 },
    Done,
}

struct Simulation<'l> {
    options: Options,
    profile: FaultProfile,
    random: Random,
    step: u64,
    phase: Phase,
    nodes: BTreeMap<u64, Node>,
    next_node_id: u64,
    network: Network,
    links: LinkFaults,
    bank: Bank,
    clients: Vec<Client>,
    waiting: BTreeMap<Handle, Waiter>,
    history: History,
    replacement: Option<Replacement>,
    leaders_by_term: BTreeMap<u64, u64>,
    faults: BTreeMap<&'static str, u64>,
    violations: Vec<Violation>,
    requests_acked: u64,
    probe_acked_at: Option<u64>,
    recovery_since: Option<u64>,
    /// A node to crash in the middle of its round this step.
    crash_in_round: Option<u64>,
    hash: u64,
    log: Option<&'l mut dyn FnMut(&str)>,
}

/// An outbox that notes, with every message, how many writes the node had
/// made in its round when it sent it: a node that dies partway through a
/// round sent only the messages before its last write.
struct RecordingOutbox {
    disk: SharedDisk,
    messages: Vec<(usize, Message)>,
}

impl Outbox for RecordingOutbox {
    fn send(&mut self, messages: Vec<Message>) {
        let writes = self.disk.borrow().round_writes();
        self.messages.extend(messages.into_iter().map(|message| (writes, message)));
    }
}

/// FNV-1a, folding `bytes` into `hash`.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3))
}

impl<'l> Simulation<'l> {
    fn new(options: &Options, log: Option<&'l mut dyn FnMut(&str)>) -> Self {
        let mut random = Random::new(options.seed);
        let profile = FaultProfile::draw(&mut random, options.nodes);
        let bank = Bank::new();
        let clients = (0..=profile.clients)
            .map(|id| Client {
                workload: Workload::new(id),
                request: None,
                next_seq: 1,
                hint: None,
                ready_at: 0,
                queued: VecDeque::new(),
            })
            .collect();
        let mut simulation = Self {
            options: options.clone(),
            profile,
            random,
            step: 0,
            phase: Phase::Setup,
            nodes: BTreeMap::new(),
            next_node_id: 1,
            network: Network::default(),
            links: LinkFaults::HEALTHY,
            bank,
            clients,
            waiting: BTreeMap::new(),
            history: History::default(),
            replacement: None,
            leaders_by_term: BTreeMap::new(),
            faults: BTreeMap::new(),
            violations: Vec::new(),
            requests_acked: 0,
            probe_acked_at: None,
            recovery_since: None,
            crash_in_round: None,
            hash: 0xCBF2_9CE4_8422_2325,
            log,
        };
        simulation.found_cluster();
        simulation
    }

    fn now_ns(&self) -> u64 {
        START_NS + self.step * TICK_NS
    }

    fn event(&mut self, text: String) {
        self.hash = fnv(self.hash, text.as_bytes());
        if let Some(log) = self.log.as_mut() {
            let now = START_NS + self.step * TICK_NS;
            log(&format!("{:>6} {:>4}.{:03}s  {text}", self.step, now / 1_000_000_000, now / 1_000_000 % 1_000));
        }
    }

    fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    fn violation(&mut self, checker: &'static str, detail: String) {
        self.record(vec![Violation { step: self.step, checker, detail }]);
    }

    fn record(&mut self, violations: Vec<Violation>) {
        for violation in violations {
            self.event(format!("VIOLATION {violation}"));
            self.violations.push(violation);
        }
    }

    fn config(&mut self, id: u64) -> ConsensusConfig {
        let threshold = self.profile.log_gc_threshold_entries;
        ConsensusConfig {
            election_ticks: 10,
            heartbeat_ticks: 2,
            read_timeout_ticks: 30,
            log_gc_threshold_entries: threshold,
            log_gc_keep_entries: (threshold / 4).max(1),
            seed: self.random.next_u64(),
            ..ConsensusConfig::new(id)
        }
    }

    /// Bootstraps the founding voters.
    fn found_cluster(&mut self) {
        let voters: Vec<u64> = (1..=self.profile.nodes as u64).collect();
        self.next_node_id = voters.len() as u64 + 1;
        for &id in &voters {
            let disk = Disk::shared();
            let started = SimStorage::open(disk.clone()).and_then(|mut storage| {
                storage.bootstrap(&voters)?;
                Ok(storage)
            });
            let node = Node { disk, replica: None, incarnation: 0, life: Life::Crashed, damaged: None, checked: 0 };
            self.nodes.insert(id, node);
            match started {
                Ok(storage) => self.start(id, storage),
                Err(error) => self.violation("store", format!("node {id} failed to bootstrap: {error}")),
            }
        }
        let profile = self.profile.to_string();
        self.event(format!("seed {}: {profile}", self.options.seed));
        let setup = self.bank.setup();
        self.clients[0].queued.extend(setup);
    }

    /// Starts node `id`'s replica on `storage`.
    fn start(&mut self, id: u64, storage: SimStorage) {
        let config = self.config(id);
        let replica = Replica::new(config, storage);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        node.incarnation += 1;
        node.checked = 0;
        match replica {
            Ok(replica) => {
                node.replica = Some(replica);
                node.life = Life::Running;
            }
            Err(error) => {
                node.life = Life::Broken;
                self.violation("store", format!("node {id} failed to start: {error}"));
            }
        }
    }

    fn replica(&self, id: u64) -> Option<&Replica<SimStorage>> {
        self.nodes.get(&id).and_then(|node| node.replica.as_ref())
    }

    fn replica_mut(&mut self, id: u64) -> Option<&mut Replica<SimStorage>> {
        self.nodes.get_mut(&id).and_then(|node| node.replica.as_mut())
    }

    fn ids(&self, keep: impl Fn(&Node) -> bool) -> Vec<u64> {
        self.nodes.iter().filter(|(_, node)| keep(node)).map(|(&id, _)| id).collect()
    }

    fn running(&self) -> Vec<u64> {
        self.ids(|node| node.life == Life::Running)
    }

    /// Nodes that are (or will again be) part of the cluster.
    fn members(&self) -> Vec<u64> {
        self.ids(|node| node.life != Life::Removed)
    }

    /// The leader of the highest term among running nodes.
    fn leader(&self) -> Option<u64> {
        self.running()
            .into_iter()
            .filter_map(|id| self.replica(id).map(|replica| (id, replica)))
            .filter(|(_, replica)| replica.is_leader())
            .max_by_key(|(_, replica)| replica.status().term)
            .map(|(id, _)| id)
    }

    fn run(&mut self) {
        while self.phase != Phase::Done && self.violations.len() < VIOLATIONS_MAX {
            self.step();
        }
        if self.violations.len() >= VIOLATIONS_MAX {
            self.event(format!("stopped after {VIOLATIONS_MAX} violations"));
        }
    }

    fn step(&mut self) {
        self.step += 1;
        self.advance_phase();
        if matches!(self.phase, Phase::Faults { .. }) {
            self.inject_faults();
        }
        self.operator();
        for client in 0..self.clients.len() {
            self.client_step(client);
        }
        for envelope in self.network.due(self.step) {
            self.deliver(envelope);
        }
        for id in self.running() {
            self.run_node(id);
        }
        self.crash_in_round = None;
        self.check_leaders();
        self.check_applied();
        if self.step.is_multiple_of(CHECK_INTERVAL_STEPS) {
            let digest = self.step.is_multiple_of(DIGEST_INTERVAL_STEPS);
            for id in self.running() {
                self.check_node(id, digest);
            }
        }
    }

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Setup => {
                let done = self.clients[0].queued.is_empty() && self.clients[0].request.is_none();
                if done {
                    self.phase = Phase::Faults { until: self.step + self.options.steps };
                    self.links = self.profile.links;
                    self.event(format!("setup done; faults for {} steps", self.options.steps));
                } else if self.step > SETUP_STEPS_MAX {
                    self.violation("liveness", format!("setup did not finish in {SETUP_STEPS_MAX} steps"));
                    self.phase = Phase::Done;
                }
            }
            Phase::Faults { until } if self.step >= until => self.begin_recovery(),
            Phase::Faults { .. } => {}
            Phase::Recovery { since } => {
                if self.probe_acked_at.is_none() && self.step - since == PROBE_STEPS_MAX + 1 {
                    let leader = self.leader().map_or("no leader".to_owned(), |id| format!("leader n{id}"));
                    self.violation(
                        "liveness",
                        format!("no write committed {PROBE_STEPS_MAX} steps after faults stopped ({leader})"),
                    );
                }
                if self.recovered() {
                    self.event(format!("recovered in {} steps", self.step - since));
                    self.final_checks();
                    self.phase = Phase::Done;
                } else if self.step - since > LIVENESS_STEPS_MAX {
                    let missing = self.recovery_missing();
                    self.violation(
                        "liveness",
                        format!("not recovered {LIVENESS_STEPS_MAX} steps after faults stopped: {missing}"),
                    );
                    self.final_checks();
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    fn begin_recovery(&mut self) {
        self.phase = Phase::Recovery { since: self.step };
        self.recovery_since = Some(self.step);
        self.links = LinkFaults::HEALTHY;
        self.network.heal();
        self.event("faults stop: network healed; crashed nodes restart; a probe write is sent".into());
        for id in self.ids(|node| node.life == Life::Crashed) {
            self.restart(id);
        }
        let probe = self.probe_write();
        let probe_client = self.clients.len() - 1;
        self.clients[probe_client].queued.push_back(probe);
    }

    /// A write only the recovered cluster can acknowledge: a fund transfer.
    fn probe_write(&self) -> Operation {
        let from = self.bank.accounts[0];
        let to = self.bank.accounts[self.bank.accounts.len() / 2 - 1];
        Operation::CreateTransfers(vec![Transfer {
            id: TransferId(u128::MAX - 1),
            debit_account_id: from.id,
            credit_account_id: to.id,
            amount: 1,
            ledger: from.ledger,
            code: 1,
            kind: TransferKind::Journal,
            ..Default::default()
        }])
    }

    /// What recovery still lacks, or an empty string.
    fn recovery_missing(&self) -> String {
        let mut missing = Vec::new();
        let Some(leader) = self.leader() else {
            return "no leader".into();
        };
        if self.probe_acked_at.is_none() {
            missing.push("the probe write is not acknowledged".to_owned());
        }
        let busy = self.clients.iter().filter(|client| client.request.is_some() || !client.queued.is_empty()).count();
        if busy > 0 {
            missing.push(format!("{busy} clients still wait"));
        }
        if let Some(replacement) = self.replacement {
            missing.push(format!("node {} is still being replaced ({:?})", replacement.old, replacement.stage));
        }
        let broken = self.ids(|node| matches!(node.life, Life::Crashed | Life::Broken));
        if !broken.is_empty() {
            missing.push(format!("nodes {broken:?} are down"));
        }
        let commit = self.replica(leader).map_or(0, |replica| replica.status().commit);
        let behind: Vec<u64> = self
            .running()
            .into_iter()
            .filter(|&id| self.replica(id).is_some_and(|replica| replica.storage().applied().index != commit))
            .collect();
        if !behind.is_empty() {
            missing.push(format!("nodes {behind:?} have not applied the leader's commit index {commit}"));
        }
        if let Some(replica) = self.replica(leader) {
            let overdue = self.now_ns().saturating_sub(EXPIRY_SLACK_NS);
            match replica.storage().ledger().expiring(overdue, 1) {
                Ok(due) if !due.is_empty() => {
                    missing.push(format!("pending transfer {} is overdue", transfer_name(due[0].1)));
                }
                Ok(_) => {}
                Err(error) => missing.push(format!("the leader's store failed: {error}")),
            }
        }
        missing.join("; ")
    }

    fn recovered(&self) -> bool {
        self.recovery_missing().is_empty()
    }

    // --- faults -----------------------------------------------------------

    fn inject_faults(&mut self) {
        let profile = self.profile.clone();
        if self.random.chance(profile.crash_per_step) {
            if let Some(id) = self.random.pick(&self.running()) {
                if self.random.chance(0.5) {
                    self.crash_in_round = Some(id);
                } else {
                    self.crash(id, false);
                }
            }
        }
        for id in self.ids(|node| node.life == Life::Crashed) {
            if self.random.chance(profile.restart_per_step) {
                self.restart(id);
            }
        }
        if self.random.chance(profile.partition_per_step) {
            self.partition();
        }
        if self.network.is_partitioned() && self.random.chance(profile.heal_per_step) {
            self.network.heal();
            self.fault("heal");
            self.event("network healed".into());
        }
        if self.random.chance(profile.leader_transfer_per_step) {
            self.transfer_leader();
        }
        if self.random.chance(profile.replace_per_step) && self.replacement.is_none() && !self.any_broken() {
            let voters = self.leader().and_then(|id| self.replica(id)).map(|r| r.status().conf_state.voters);
            if let Some(old) = voters.and_then(|voters| self.random.pick(&voters)) {
                self.fault("replace node");
                self.begin_replacement(old, "planned");
            }
        }
    }

    /// Crashes node `id` (`in_round`: partway through the round it just
    /// ran, whose unwritten part is already cut).
    fn crash(&mut self, id: u64, in_round: bool) {
        let power_loss = self.random.chance(self.profile.power_loss_share);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        node.replica = None;
        node.life = Life::Crashed;
        let unsynced = node.disk.borrow().unsynced_writes();
        let unflushed = node.disk.borrow().unflushed_writes();
        let kept = if !power_loss {
            unsynced
        } else if self.random.chance(0.5) {
            0
        } else {
            self.random.below(unsynced as u64 + 1) as usize
        };
        let lost = node.disk.borrow_mut().crash(kept);
        self.waiting.retain(|handle, _| handle.node != id);
        self.fault(match (in_round, power_loss) {
            (false, false) => "crash: kill",
            (false, true) => "crash: power loss",
            (true, false) => "crash: kill mid-round",
            (true, true) => "crash: power loss mid-round",
        });
        if power_loss {
            self.event(format!(
                "crash n{id}: power loss, {lost} of {unsynced} unsynced writes and {unflushed} unflushed applies lost"
            ));
        } else {
            self.event(format!(
                "crash n{id}: process killed, {unsynced} unsynced writes kept, {unflushed} unflushed applies lost"
            ));
        }
        if self.random.chance(self.profile.damage_per_crash) && self.may_damage() {
            self.damage(id);
        }
    }

    /// Whether a node is broken, or will be when it restarts.
    fn any_broken(&self) -> bool {
        self.nodes.values().any(|node| node.life == Life::Broken || node.damaged.is_some())
    }

    /// A disk is damaged only while the cluster can replace the node, one
    /// at a time: nothing else is broken or being replaced (two broken
    /// voters of three would be a lost quorum, which only a restore from
    /// backup repairs).
    fn may_damage(&self) -> bool {
        !self.any_broken() && self.replacement.is_none()
    }

    fn damage(&mut self, id: u64) {
        let kind = if self.random.chance(0.5) { Damage::BitFlip } else { Damage::Torn };
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(what) = node.disk.borrow_mut().damage(&mut self.random, kind) else { return };
        node.damaged = Some(what.clone());
        self.fault(if kind == Damage::BitFlip { "disk bit flip" } else { "disk torn write" });
        self.event(format!("damage n{id}: {what}"));
    }

    fn restart(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let damaged = node.damaged.take();
        let opened = SimStorage::open(node.disk.clone());
        self.fault("restart");
        match (opened, damaged) {
            (Ok(storage), None) => {
                self.event(format!("restart n{id}: applied index {}", storage.applied().index));
                self.start(id, storage);
                self.check_node(id, true);
            }
            (Ok(_), Some(what)) => {
                self.set_life(id, Life::Broken);
                self.violation("corruption", format!("node {id} opened a damaged store ({what})"));
            }
            (Err(error), Some(what)) => {
                self.set_life(id, Life::Broken);
                self.fault(DAMAGE_REFUSED);
                self.event(format!("restart n{id} refused: {error} ({what}); the operator replaces it"));
            }
            (Err(error), None) => {
                self.set_life(id, Life::Broken);
                self.violation("store", format!("node {id}'s undamaged store refused to open: {error}"));
            }
        }
    }

    fn set_life(&mut self, id: u64, life: Life) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.life = life;
        }
    }

    fn partition(&mut self) {
        let members = self.members();
        let Some(&first) = members.first() else { return };
        match self.random.below(3) {
            0 => {
                let node = self.random.pick(&members).unwrap_or(first);
                self.network.partition(&[node], &members);
                self.fault("partition (isolate)");
                self.event(format!("partition: n{node} isolated"));
            }
            1 => {
                let size = self.random.between(1, (members.len() as u64 / 2).max(1));
                let mut group = members.clone();
                while group.len() as u64 > size {
                    group.remove(self.random.below(group.len() as u64) as usize);
                }
                self.network.partition(&group, &members);
                self.fault("partition (split)");
                self.event(format!("partition: {group:?} split from the rest"));
            }
            _ => {
                let from = self.random.pick(&members).unwrap_or(first);
                let others: Vec<u64> = members.iter().copied().filter(|&id| id != from).collect();
                let Some(to) = self.random.pick(&others) else { return };
                self.network.cut(from, to);
                self.fault("partition (one way)");
                self.event(format!("partition: n{from} → n{to} cut one way"));
            }
        }
    }

    fn transfer_leader(&mut self) {
        let Some(leader) = self.leader() else { return };
        let voters = self.replica(leader).map(|r| r.status().conf_state.voters).unwrap_or_default();
        let targets: Vec<u64> = voters.into_iter().filter(|&id| id != leader).collect();
        let Some(target) = self.random.pick(&targets) else { return };
        let result = self.replica_mut(leader).map(|replica| replica.transfer_leader(target));
        self.fault("leader transfer");
        match result {
            Some(Ok(())) => self.event(format!("leader transfer n{leader} → n{target}")),
            Some(Err(error)) => self.event(format!("leader transfer n{leader} → n{target} refused: {error}")),
            None => {}
        }
    }

    // --- the operator -----------------------------------------------------

    fn begin_replacement(&mut self, old: u64, why: &str) {
        let new = self.next_node_id;
        self.next_node_id += 1;
        self.replacement = Some(Replacement { old, new, stage: Stage::Remove, next_try: self.step });
        self.event(format!("operator: replace n{old} by n{new} ({why})"));
    }

    /// Replaces broken nodes (and planned replacements) one at a time:
    /// remove the old node, add the new one as a learner, promote it once it
    /// has caught up.
    fn operator(&mut self) {
        if self.replacement.is_none() {
            if let Some(&broken) = self.ids(|node| node.life == Life::Broken).first() {
                self.begin_replacement(broken, "its store is broken");
            }
        }
        let Some(mut replacement) = self.replacement else { return };
        if self.step < replacement.next_try {
            return;
        }
        let Some(leader) = self.leader() else { return };
        let Some(status) = self.replica(leader).map(Replica::status) else { return };
        let conf = status.conf_state;
        let member = |id: u64| conf.voters.contains(&id) || conf.learners.contains(&id);
        let (old, new) = (replacement.old, replacement.new);
        let change = match replacement.stage {
            Stage::Remove if member(old) => Some(MembershipChange::Remove(old)),
            Stage::Remove => {
                if let Some(node) = self.nodes.get_mut(&old) {
                    node.replica = None;
                    node.life = Life::Removed;
                }
                self.waiting.retain(|handle, _| handle.node != old);
                self.event(format!("operator: n{old} removed and stopped; n{new} starts empty"));
                let disk = Disk::shared();
                let node = Node {
                    disk: disk.clone(),
                    replica: None,
                    incarnation: 0,
                    life: Life::Crashed,
                    damaged: None,
                    checked: 0,
                };
                self.nodes.insert(new, node);
                match SimStorage::open(disk) {
                    Ok(storage) => self.start(new, storage),
                    Err(error) => self.violation("store", format!("node {new} failed to open an empty store: {error}")),
                }
                replacement.stage = Stage::AddLearner;
                None
            }
            Stage::AddLearner if !member(new) => Some(MembershipChange::AddLearner(new)),
            Stage::AddLearner => {
                replacement.stage = Stage::Promote;
                None
            }
            Stage::Promote if conf.voters.contains(&new) => {
                self.event(format!("operator: n{new} is a voter; n{old} replaced"));
                self.replacement = None;
                return;
            }
            Stage::Promote => {
                let caught_up = self
                    .replica(new)
                    .is_some_and(|r| r.storage().applied().index + PROMOTE_LAG_MAX_ENTRIES >= status.applied);
                caught_up.then_some(MembershipChange::PromoteVoter(new))
            }
        };
        if let Some(change) = change {
            let result = self.replica_mut(leader).map(|replica| replica.propose_membership(change, Vec::new(), true));
            if let Some(Ok(_)) = result {
                self.event(format!("operator: n{leader} proposes {change:?}"));
            }
            replacement.next_try = self.step + OPERATOR_RETRY_STEPS;
        }
        self.replacement = Some(replacement);
    }

    // --- clients ----------------------------------------------------------

    fn may_send_new_requests(&self) -> bool {
        matches!(self.phase, Phase::Faults { .. })
    }

    fn client_step(&mut self, index: usize) {
        if self.step < self.clients[index].ready_at {
            return;
        }
        if self.clients[index].request.is_none() && !self.new_request(index) {
            return;
        }
        let Some(request) = self.clients[index].request.as_mut() else { return };
        if let Some((handle, deadline)) = request.in_flight {
            if self.step < deadline {
                return;
            }
            // The attempt may still be answered: its waiter stays.
            request.in_flight = None;
            let seq = request.seq;
            self.event(format!("c{index} #{seq}: no answer from n{}; outcome unknown, retrying", handle.node));
        }
        self.submit(index);
    }

    /// Gives the client its next request, if it has one now.
    fn new_request(&mut self, index: usize) -> bool {
        let probe_client = index == self.clients.len() - 1;
        let body = if let Some(operation) = self.clients[index].queued.pop_front() {
            Body::Write(operation)
        } else if self.may_send_new_requests() && !probe_client && self.random.chance(self.profile.request_per_step) {
            if self.random.chance(self.profile.read_share) {
                let account = Workload::read_target(&self.bank, &mut self.random);
                Body::Read { account, floor: self.history.read_floor(account) }
            } else {
                let bank = &self.bank;
                Body::Write(self.clients[index].workload.next_write(bank, &mut self.random))
            }
        } else {
            return false;
        };
        let client = &mut self.clients[index];
        let seq = client.next_seq;
        client.next_seq += 1;
        client.request = Some(Request { seq, body, attempt: 0, in_flight: None });
        true
    }

    /// Sends the client's request to a node: the leader it was told of, or
    /// any member (reads often go to followers).
    fn submit(&mut self, index: usize) {
        let members = self.members();
        let Some(request) = self.clients[index].request.clone() else { return };
        let is_read = matches!(request.body, Body::Read { .. });
        let hint = self.clients[index].hint.filter(|id| members.contains(id));
        let target = match hint {
            Some(hint) if !(is_read && self.random.chance(0.5)) => Some(hint),
            _ => self.random.pick(&members),
        };
        let Some(target) = target else { return };
        let seq = request.seq;
        let attempt = request.attempt + 1;
        let incarnation = self.nodes.get(&target).map_or(0, |node| node.incarnation);
        let step = self.step;
        let Some(replica) = self.replica_mut(target) else {
            let client = &mut self.clients[index];
            client.hint = None;
            client.ready_at = step + 2;
            return;
        };
        let submitted = match &request.body {
            Body::Write(operation) => replica
                .propose(operation.clone())
                .map_err(|error| (error.is_retryable(), error.to_string(), leader_of(&error))),
            Body::Read { .. } => replica.read().map_err(|error| {
                let leader = match &error {
                    coffer_consensus::ReadError::NotLeader { leader } => *leader,
                    _ => None,
                };
                (true, error.to_string(), leader)
            }),
        };
        let client = &mut self.clients[index];
        let Some(current) = client.request.as_mut() else { return };
        current.attempt = attempt;
        match submitted {
            Ok(id) => {
                let handle = Handle { node: target, incarnation, id };
                current.in_flight = Some((handle, step + CLIENT_TIMEOUT_STEPS));
                let operation = match &request.body {
                    Body::Write(operation) => Some(operation.clone()),
                    Body::Read { .. } => None,
                };
                self.waiting.insert(handle, Waiter { client: index, request: seq, operation });
                let what = match &request.body {
                    Body::Write(operation) => describe(operation),
                    Body::Read { account, .. } => format!("read account {}", account.0),
                };
                self.event(format!("c{index} #{seq} → n{target} (try {attempt}): {what}"));
            }
            Err((retryable, error, leader)) => {
                client.hint = leader;
                client.ready_at = step + 1 + u64::from(attempt.min(4));
                if !retryable {
                    self.violation("request", format!("node {target} refused c{index} #{seq}: {error}"));
                    self.clients[index].request = None;
                }
            }
        }
    }

    fn completed(&mut self, node: u64, incarnation: u64, completion: Completion) {
        let id = match &completion {
            Completion::Proposal { id, .. } | Completion::Read { id, .. } => *id,
        };
        let handle = Handle { node, incarnation, id };
        let Some(waiter) = self.waiting.remove(&handle) else { return };
        let index = waiter.client;
        let current = self.clients[index].request.clone().filter(|request| request.seq == waiter.request);
        let Some(request) = current else {
            // An answer to a request the client already has an answer to:
            // still something the cluster acknowledged.
            if let (Completion::Proposal { result: Ok(applied), .. }, Some(operation)) =
                (&completion, &waiter.operation)
            {
                self.late_acknowledgement(index, waiter.request, node, operation, applied);
            }
            return;
        };
        let current_attempt = request.in_flight.is_some_and(|(in_flight, _)| in_flight == handle);
        match completion {
            Completion::Proposal { result: Ok(applied), .. } => {
                self.write_acknowledged(index, &request, node, &applied)
            }
            Completion::Read { result: Ok(read_index), .. } => self.read_answered(index, &request, node, read_index),
            Completion::Proposal { result: Err(error), .. } if current_attempt => {
                let leader = leader_of(&error);
                self.retry(index, &request, node, error.is_retryable(), error.to_string(), leader);
            }
            Completion::Read { result: Err(error), .. } if current_attempt => {
                self.retry(index, &request, node, true, error.to_string(), None);
            }
            // A failed attempt the client gave up on already.
            Completion::Proposal { .. } | Completion::Read { .. } => {}
        }
    }

    fn late_acknowledgement(&mut self, index: usize, seq: u64, node: u64, operation: &Operation, applied: &Applied) {
        let (Operation::CreateTransfers(transfers), Outcome::Operation(OperationResults::Transfers(results))) =
            (operation, &applied.outcome)
        else {
            return;
        };
        let violations = self.history.acknowledge(self.step, applied.index, transfers, results);
        self.record(violations);
        let names: Vec<&str> = results.iter().map(|result| result.as_str()).collect();
        self.event(format!("c{index} #{seq} ← n{node} (late): index {}: {}", applied.index, names.join(", ")));
    }

    fn retry(
        &mut self,
        index: usize,
        request: &Request,
        node: u64,
        retryable: bool,
        error: String,
        leader: Option<u64>,
    ) {
        let seq = request.seq;
        if !retryable {
            self.violation("request", format!("node {node} failed c{index} #{seq}: {error}"));
            self.clients[index].request = None;
            return;
        }
        self.event(format!("c{index} #{seq} ← n{node}: {error}; retrying"));
        let step = self.step;
        let client = &mut self.clients[index];
        client.hint = leader;
        client.ready_at = step + 1;
        if let Some(current) = client.request.as_mut() {
            current.in_flight = None;
        }
    }

    fn write_acknowledged(&mut self, index: usize, request: &Request, node: u64, applied: &Applied) {
        let Body::Write(operation) = &request.body else { return };
        let seq = request.seq;
        let results = match &applied.outcome {
            Outcome::Operation(results) => results,
            Outcome::Membership(_) | Outcome::Region(_) => return,
        };
        match (operation, results) {
            (Operation::CreateTransfers(transfers), OperationResults::Transfers(results)) => {
                let violations = self.history.acknowledge(self.step, applied.index, transfers, results);
                self.record(violations);
                let workload = &mut self.clients[index].workload;
                for (transfer, result) in transfers.iter().zip(results) {
                    if TransferRole::of(transfer) == TransferRole::Pending && result.is_success() {
                        workload.pending_acknowledged(OpenPending { id: transfer.id, amount: transfer.amount });
                    }
                }
                workload.finished(operation);
                if transfers.iter().any(|transfer| transfer.id == TransferId(u128::MAX - 1)) {
                    self.probe_acked_at = Some(self.step);
                }
                let names: Vec<&str> = results.iter().map(|result| result.as_str()).collect();
                self.event(format!("c{index} #{seq} ← n{node}: index {}: {}", applied.index, names.join(", ")));
            }
            (Operation::CreateLedgers(_), OperationResults::Ledgers(results)) => {
                let ok = results.iter().all(|r| matches!(r, CreateLedgerResult::Created | CreateLedgerResult::Exists));
                self.setup_acknowledged(ok, index, seq, node, applied.index);
            }
            (Operation::CreateAccounts(_), OperationResults::Accounts(results)) => {
                let ok =
                    results.iter().all(|r| matches!(r, CreateAccountResult::Created | CreateAccountResult::Exists));
                self.setup_acknowledged(ok, index, seq, node, applied.index);
            }
            _ => self.violation("request", format!("c{index} #{seq}: results of another kind: {results:?}")),
        }
        self.requests_acked += 1;
        let step = self.step;
        let think = self.random.between(1, 10);
        let client = &mut self.clients[index];
        client.request = None;
        client.hint = Some(node);
        client.ready_at = step + think;
    }

    fn setup_acknowledged(&mut self, ok: bool, index: usize, seq: u64, node: u64, log_index: u64) {
        if ok {
            self.event(format!("c{index} #{seq} ← n{node}: index {log_index}: setup created"));
        } else {
            self.violation("request", format!("setup request c{index} #{seq} failed at index {log_index}"));
        }
    }

    fn read_answered(&mut self, index: usize, request: &Request, node: u64, read_index: u64) {
        let Body::Read { account, floor } = &request.body else { return };
        let Some(replica) = self.nodes.get(&node).and_then(|node| node.replica.as_ref()) else { return };
        let served = replica.storage().applied().index;
        let store = replica.storage().ledger();
        let balances = store.account(*account).ok().flatten().map(|a| (a.debits_posted, a.credits_posted));
        let read = ServedRead { node, account: *account, read_index, served_index: served, store };
        let violations = self.history.check_read(self.step, floor, &read);
        self.record(violations);
        let seq = request.seq;
        self.event(format!(
            "c{index} #{seq} ← n{node}: read index {read_index}, served at {served}: account {} {balances:?}",
            account.0
        ));
        let step = self.step;
        let client = &mut self.clients[index];
        client.request = None;
        client.ready_at = step + 1;
    }

    // --- nodes and the network --------------------------------------------

    fn run_node(&mut self, id: u64) {
        let skip_tick =
            matches!(self.phase, Phase::Faults { .. }) && self.random.chance(self.profile.tick_skip_per_step);
        if skip_tick {
            self.fault(TICK_SKIPPED);
        }
        let now_ns = self.now_ns();
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let incarnation = node.incarnation;
        let Some(replica) = node.replica.as_mut() else { return };
        node.disk.borrow_mut().begin_round();
        if !skip_tick {
            replica.tick();
        }
        let mut outbox = RecordingOutbox { disk: node.disk.clone(), messages: Vec::new() };
        let output = match replica.advance(now_ns, &mut outbox) {
            Ok(output) => output,
            Err(error) => {
                node.replica = None;
                node.life = Life::Broken;
                self.waiting.retain(|handle, _| handle.node != id);
                self.violation("node", format!("node {id} stopped: {error}"));
                return;
            }
        };
        if self.crash_in_round.take() == Some(id) {
            // The node dies partway through the round: its later writes and
            // messages never happen, and it answers no client.
            let disk = node.disk.clone();
            let written = disk.borrow().round_writes();
            let kept = self.random.below(written as u64 + 1) as usize;
            disk.borrow_mut().cut_round(kept);
            let sent: Vec<Message> =
                outbox.messages.into_iter().filter(|(writes, _)| *writes <= kept).map(|(_, m)| m).collect();
            self.event(format!("n{id} dies in its round after {kept} of {written} writes"));
            self.send(id, sent);
            self.crash(id, true);
            return;
        }
        if let Some(index) = output.snapshot_installed {
            self.event(format!("n{id} installed a snapshot at index {index}"));
            self.check_node(id, true);
        }
        for applied in &output.membership {
            let conf = &applied.conf_state;
            self.event(format!(
                "n{id} applied membership at index {}: voters {:?} learners {:?}",
                applied.index, conf.voters, conf.learners
            ));
        }
        let mut completions = output.completions;
        // A replica reports completions in an order that may follow a hash
        // map's; the simulator takes them in handle order.
        completions.sort_by_key(|completion| match completion {
            Completion::Proposal { id, .. } | Completion::Read { id, .. } => *id,
        });
        for completion in completions {
            self.completed(id, incarnation, completion);
        }
        self.send(id, outbox.messages.into_iter().map(|(_, message)| message).collect());
        if let Some(replica) = self.replica(id) {
            let (applied, leader) = (replica.storage().applied().index, replica.leader().unwrap_or(0));
            self.hash = fnv(self.hash, &[id.to_be_bytes(), applied.to_be_bytes(), leader.to_be_bytes()].concat());
        }
    }

    fn send(&mut self, from: u64, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let snapshot = if is_snapshot(&message) {
                let index = message.get_snapshot().get_metadata().index;
                let data = self.replica(from).and_then(|replica| replica.storage().snapshot_data(index));
                if data.is_none() {
                    self.report_snapshot(from, to, false);
                    continue;
                }
                data
            } else {
                None
            };
            let carries_snapshot = snapshot.is_some();
            let envelope = Envelope { message, snapshot };
            let links = self.links;
            match self.network.send(envelope, self.step, &links, &mut self.random) {
                Sent::Dropped if carries_snapshot => self.report_snapshot(from, to, false),
                Sent::Dropped | Sent::Queued { .. } => {}
            }
        }
    }

    fn report_snapshot(&mut self, from: u64, to: u64, delivered: bool) {
        if let Some(sender) = self.replica_mut(from) {
            sender.report_snapshot(to, delivered);
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        let (from, to) = (envelope.message.from, envelope.message.to);
        let snapshot = is_snapshot(&envelope.message);
        let running = self.nodes.get(&to).is_some_and(|node| node.life == Life::Running);
        if self.network.is_cut(from, to) || !running {
            self.network.stats.undeliverable += 1;
            if snapshot {
                self.report_snapshot(from, to, false);
            }
            return;
        }
        if let (Some(data), Some(node)) = (envelope.snapshot, self.nodes.get(&to)) {
            node.disk.borrow_mut().receive_snapshot(data);
        }
        self.network.stats.delivered += 1;
        // A message the node refuses (from a removed node, say) is dropped,
        // as the transport drops it.
        let stepped = self.replica_mut(to).map(|replica| replica.step(envelope.message).is_ok());
        if snapshot {
            self.report_snapshot(from, to, stepped == Some(true));
        }
    }

    // --- checks -----------------------------------------------------------

    /// Election safety: at most one leader per term, ever.
    fn check_leaders(&mut self) {
        let mut violations = Vec::new();
        for id in self.running() {
            let Some(replica) = self.replica(id) else { continue };
            if !replica.is_leader() {
                continue;
            }
            let status = replica.status();
            debug_assert_eq!(status.role, StateRole::Leader);
            let first = *self.leaders_by_term.entry(status.term).or_insert(id);
            if first != id {
                violations.push(Violation {
                    step: self.step,
                    checker: "election",
                    detail: format!("nodes {first} and {id} both led term {}", status.term),
                });
            }
        }
        self.record(violations);
    }

    /// Every step: what each node applied since the last step holds every
    /// acknowledgement of those entries.
    fn check_applied(&mut self) {
        let mut violations = Vec::new();
        for (&id, node) in &mut self.nodes {
            let Some(replica) = node.replica.as_ref() else { continue };
            let applied = replica.storage().applied().index;
            if applied > node.checked {
                let store = replica.storage().ledger();
                violations.extend(self.history.check_applied(self.step, id, node.checked, applied, store));
                node.checked = applied;
            }
        }
        self.record(violations);
    }

    fn check_node(&mut self, id: u64, digest: bool) {
        let Some(replica) = self.nodes.get(&id).and_then(|node| node.replica.as_ref()) else { return };
        let applied = replica.storage().applied().index;
        let store = replica.storage().ledger();
        let mut violations = self.history.check_replica(self.step, id, applied, store);
        if digest {
            violations.extend(self.history.check_digest(self.step, id, applied, store));
        }
        self.record(violations);
    }

    fn final_checks(&mut self) {
        for id in self.running() {
            self.check_node(id, true);
        }
        let now = self.now_ns();
        for id in self.running() {
            let Some(replica) = self.replica(id) else { continue };
            let mut overdue = Vec::new();
            let scan = replica.storage().ledger().for_each_pending(&mut |transfer, status| {
                if status.state == PendingState::Pending
                    && status.expires_at != 0
                    && status.expires_at + EXPIRY_SLACK_NS < now
                {
                    overdue.push(transfer_name(transfer));
                }
            });
            if let Err(error) = scan {
                self.violation("store", format!("node {id}: {error}"));
            } else if !overdue.is_empty() {
                self.violation("expiry", format!("node {id}: pending transfers {overdue:?} are past their timeout"));
            }
        }
    }

    fn report(mut self) -> Report {
        let stats = self.network.stats;
        for (kind, count) in [(MESSAGE_DROPPED, stats.dropped), (MESSAGE_DUPLICATED, stats.duplicated)] {
            if count > 0 {
                self.faults.insert(kind, count);
            }
        }
        let lost: u64 = self.nodes.values().map(|node| node.disk.borrow().stats().lost).sum();
        if lost > 0 {
            self.faults.insert(WRITE_LOST, lost);
        }
        let unflushed: u64 = self.nodes.values().map(|node| node.disk.borrow().stats().unflushed_lost).sum();
        if unflushed > 0 {
            self.faults.insert(UNFLUSHED_LOST, unflushed);
        }
        let recovery_steps = self.probe_acked_at.zip(self.recovery_since).map(|(acked, since)| acked - since);
        Report {
            seed: self.options.seed,
            profile: self.profile.clone(),
            steps: self.step,
            simulated_ns: self.step * TICK_NS,
            requests_acked: self.requests_acked,
            events_acked: self.history.events_acked,
            transfers_acked: self.history.transfers_acked() as u64,
            reads_checked: self.history.reads_checked,
            replica_checks: self.history.replica_checks,
            faults: self.faults.clone(),
            recovery_steps,
            violations: self.violations.clone(),
            hash: self.hash,
        }
    }
}

/// The leader a proposal error names, if any.
fn leader_of(error: &ProposalError) -> Option<u64> {
    match error {
        ProposalError::NotLeader { leader } => *leader,
        _ => None,
    }
}

/// One line describing a write request.
fn describe(operation: &Operation) -> String {
    match operation {
        Operation::CreateLedgers(ledgers) => format!("create {} ledgers", ledgers.len()),
        Operation::CreateAccounts(accounts) => format!("create {} accounts", accounts.len()),
        Operation::CreateTransfers(transfers) => {
            let parts: Vec<String> = transfers.iter().map(describe_transfer).collect();
            parts.join("; ")
        }
        Operation::ExpirePending => "expire pending".into(),
        Operation::SetPeriods(changes) => {
            let parts: Vec<String> = changes
                .iter()
                .map(|change| format!("ledger {} to {}", change.ledger, change.period.as_str()))
                .collect();
            format!("set periods: {}", parts.join(", "))
        }
        Operation::Close(step) => format!("close step {step:?}"),
        Operation::Reconcile(op) => format!("reconcile {op:?}"),
    }
}

fn describe_transfer(transfer: &Transfer) -> String {
    let linked = if transfer.flags.contains(TransferFlags::LINKED) { " linked" } else { "" };
    let (id, pending) = (transfer_name(transfer.id), transfer_name(transfer.pending_id));
    let (debit, credit, amount) = (transfer.debit_account_id.0, transfer.credit_account_id.0, transfer.amount);
    match TransferRole::of(transfer) {
        TransferRole::Single => format!("{id} {debit}→{credit} {amount}{linked}"),
        TransferRole::Pending => {
            format!("{id} pending {debit}→{credit} {amount} timeout {}s{linked}", transfer.timeout)
        }
        TransferRole::Post if amount == Transfer::AMOUNT_MAX => format!("{id} post all of {pending}{linked}"),
        TransferRole::Post => format!("{id} post {amount} of {pending}{linked}"),
        TransferRole::Void => format!("{id} void {pending}{linked}"),
    }
}
