//! Disaster recovery in the deterministic simulator: two regions, each a
//! Raft group of three real [`Replica`]s on [`SimStorage`], joined by
//! shipping, with the real ledger, the real region entries and the real DR
//! core (`coffer_dr::core`: the write lease, the RPO bound, the promotion
//! wait, the divergence check) stepped with simulated time.
//!
//! The shipping protocol is the production one in messages: the standby's
//! leader says hello with its cursor, the primary's leader sends what it
//! applied after it (or a heartbeat), the standby proposes each entry as a
//! `Ship` region entry and acknowledges what committed, granting a lease.
//! Its tokio shell (`coffer_dr::Dr`) adds sockets and tasks, nothing that
//! decides.
//!
//! The seed draws the mode (sync, async with `max_lag_ms`, async bounded
//! by the lease alone), each region's clock rate (within the configured
//! margin), and a schedule of faults and operations: cross-region
//! partitions both ways and one way, a whole region crashing and coming
//! back, a node crashing and leadership moving inside a region, and the
//! operations a treasury's operators run — switchover, failover (forced now
//! and then), failback, re-seed. The checkers:
//!
//! - **one writer**: once a region was promoted without force, the region
//!   it replaced acknowledges no write of an older epoch;
//! - **no acknowledged write lost** in sync mode; in async mode the lost
//!   ones are those the old primary holds and the new one does not (what
//!   `coffer dr reconcile` lists), and they were acknowledged within
//!   `max_lag_ms` of each other (the RPO);
//! - **equal state at equal index**: whenever the standby has applied the
//!   primary's log through the index the primary has applied, both hold the
//!   same state digest;
//! - **liveness**: once faults stop, the primary takes a write.
//!
//! A failback that finds the old primary diverged leaves it frozen and lists
//! what to reconcile; the operator then re-seeds it from a checkpoint of the
//! new primary (the state becomes entry K of a new Raft group in a higher
//! term, a standby following from K), as `coffer dr failback --reseed` does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use coffer_consensus::raft::prelude::{EntryType, Message};
use coffer_consensus::region::{shipped_through, RegionOp};
use coffer_consensus::{is_snapshot, Completion, ConsensusConfig, Outcome, ProposalError, Replica, ReplicaStorage};
use coffer_dr::core::{self, Epoch, LogIndex, Millis, Planted, Rules};
use coffer_dr::{Fencing, Mode};
use coffer_ledger::{
    state_digest, Account, AccountId, CreateTransferResult, Ledger, LedgerId, Operation, OperationResults, Store,
    Transfer, TransferId, TransferKind,
};
use coffer_storage::{RegionRole, RegionState};

use crate::checker::Violation;
use crate::network::{Envelope, LinkFaults, Network};
use crate::random::Random;
use crate::storage::{Disk, SharedDisk, SimStorage};

/// Simulated milliseconds per step.
const TICK_MS: u64 = 10;
/// Nodes per region.
const NODES: u64 = 3;
/// The write lease, the clock margin, the heartbeat and the RPO bound of
/// every run (scaled down from production's seconds, in the same
/// proportions; `max_lag_ms` is drawn).
const LEASE_MS: Millis = 400;
const CLOCK_SKEW_MS: Millis = 100;
const HEARTBEAT_MS: Millis = 50;
const MAX_LAG_MS: Millis = 200;
/// Raft's election timeout here: `election_ticks` × the tick, at most
/// twice that when randomized.
const ELECTION_TIMEOUT_MS: Millis = 200;
/// The largest clock-rate difference from true time, per mille: two clocks
/// this far apart in opposite directions stay within `CLOCK_SKEW_MS` over
/// a lease (400 × 2 × 0.1 / 0.9 < 100).
const DRIFT_PER_MILLE_MAX: u64 = 100;
/// Accounts of the one ledger the workload posts to.
const ACCOUNTS: u128 = 4;
/// Simulated clients, each with at most one write in flight.
const CLIENTS: usize = 3;
/// Steps a sync-mode write waits for the standby before its answer is
/// "unknown".
const SYNC_WAIT_MS: Millis = 1_000;
/// Steps an operation's step may take before the operation gives up (and
/// undoes what it did, where it can).
const OPERATION_STEPS_MAX: u64 = 300;
/// Steps the recovery phase has for the primary to take a write and the
/// standby to catch up.
const RECOVERY_STEPS_MAX: u64 = 1_500;
/// Bytes of log one shipped message carries at most.
const SHIP_BYTES: u64 = 256 << 10;
/// Steps between state-digest comparisons of the two regions.
const DIGEST_EVERY_STEPS: u64 = 5;

/// Steps of the fault phase by default (10 ms each: 20 s of faults).
pub const STEPS_DEFAULT: u64 = 2_000;

/// One DR run's settings.
#[derive(Clone, Debug)]
pub struct DrOptions {
    /// The seed: it decides everything.
    pub seed: u64,
    /// Steps (10 ms each) of the fault phase.
    pub steps: u64,
    /// A bug planted on purpose (the checkers must catch it).
    pub planted: Planted,
}

/// What one run found.
#[derive(Clone, Debug, Default)]
pub struct DrReport {
    /// The seed.
    pub seed: u64,
    /// The drawn mode, in words.
    pub profile: String,
    /// Every violation, in order.
    pub violations: Vec<Violation>,
    /// How many times each fault and operation happened.
    pub events: BTreeMap<&'static str, u64>,
    /// Writes acknowledged to clients.
    pub acknowledged: u64,
    /// Acknowledged writes a failover lost (async mode).
    pub lost: u64,
    /// Steps run.
    pub steps: u64,
    /// A hash of the event log: two runs of a seed must agree.
    pub hash: u64,
}

impl fmt::Display for DrReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: Vec<String> = self.events.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        write!(
            f,
            "seed {}: {}; {} acknowledged, {} lost in failovers; {}; {} violation(s)",
            self.seed,
            self.profile,
            self.acknowledged,
            self.lost,
            events.join(", "),
            self.violations.len()
        )
    }
}

/// The totals of many DR runs.
#[derive(Clone, Debug, Default)]
pub struct DrSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Each failing seed's first violation and the command replaying it.
    pub failing: Vec<(u64, String)>,
    /// Faults and operations, over all seeds.
    pub events: BTreeMap<&'static str, u64>,
    /// Writes acknowledged, and lost in failovers (async mode).
    pub acknowledged: u64,
    /// See [`Self::acknowledged`].
    pub lost: u64,
}

impl DrSummary {
    /// Adds one run of `options`.
    pub fn add(&mut self, report: &DrReport, options: &DrOptions) {
        self.seeds += 1;
        self.acknowledged += report.acknowledged;
        self.lost += report.lost;
        for (kind, count) in &report.events {
            *self.events.entry(kind).or_default() += count;
        }
        if let Some(first) = report.violations.first() {
            let plant = Planted::ALL
                .iter()
                .find(|(bug, _)| *bug == options.planted)
                .map(|(_, name)| format!(" --plant {name}"))
                .unwrap_or_default();
            let replay = format!("coffer-chaos dr --seed {} --steps {}{plant} --log", report.seed, options.steps);
            self.failing.push((report.seed, format!("{first}\n  replay: {replay}")));
        }
    }
}

impl fmt::Display for DrSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "DR seeds:     {} ({} failing)", self.seeds, self.failing.len())?;
        writeln!(f, "writes:       {} acknowledged, {} lost in failovers", self.acknowledged, self.lost)?;
        let events: Vec<String> = self.events.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        write!(f, "events:       {}", events.join(", "))?;
        for (seed, failure) in &self.failing {
            write!(f, "\nseed {seed} FAILED: {failure}")?;
        }
        Ok(())
    }
}

/// Runs one seed; `log` receives the readable event log.
pub fn run_dr(options: &DrOptions, log: Option<&mut dyn FnMut(&str)>) -> DrReport {
    let mut world = World::new(options, log);
    world.run();
    world.report()
}

/// A message between the regions.
#[derive(Clone, Debug)]
enum Wire {
    /// The standby's leader opens session `session` (a stream, in
    /// production) asking to be shipped what follows `cursor`.
    Hello { from: u64, session: u64, epoch: Epoch, cursor: LogIndex },
    /// The primary's leader ships entries in a session (none: a heartbeat).
    Down { from: u64, session: u64, seq: u64, epoch: Epoch, entries: Vec<(u64, Vec<u8>)> },
    /// The standby acknowledges message `seq`: committed through `durable`.
    Up { from: u64, seq: u64, durable: LogIndex, lease_ms: Millis },
}

/// The primary side of a shipping session, on the primary's leader.
#[derive(Debug)]
struct Outgoing {
    standby: u64,
    session: u64,
    next: u64,
    stream: core::Stream,
    last_sent: Millis,
    heard: Millis,
}

/// The standby side of a shipping session, on the standby's leader.
#[derive(Debug)]
struct Incoming {
    session: u64,
    /// The last message's sequence number: a gap means the stream broke
    /// (a message was lost), and the session is given up.
    last_seq: u64,
    /// The primary's node that answered the hello (none yet: waiting).
    primary: Option<u64>,
    /// The last primary index proposed here.
    proposed: u64,
    epoch: Epoch,
    /// Messages to acknowledge once their last entry is applied.
    pending: VecDeque<(u64, u64)>,
    heard: Millis,
}

struct Node {
    region: usize,
    disk: SharedDisk,
    replica: Option<Replica<SimStorage>>,
    incarnation: u64,
    leading: bool,
    gate: core::Primary,
    clock: core::Standby,
    outgoing: Option<Outgoing>,
    incoming: Option<Incoming>,
    last_hello: Millis,
}

struct Region {
    name: &'static str,
    ids: Vec<u64>,
    /// Clock rate against true time, per mille (1000: exact).
    rate: u64,
    down: bool,
    /// Shipping is paused here (a promotion in progress).
    paused: bool,
}

/// A write a client is waiting on.
#[derive(Clone, Debug)]
struct Write {
    client: usize,
    ids: Vec<TransferId>,
    /// When it was applied (true time), once it was.
    applied_ms: u64,
}

/// An acknowledged write.
#[derive(Clone, Debug)]
struct Ack {
    ids: Vec<TransferId>,
    region: usize,
    epoch: u64,
    at_ms: u64,
    /// The primary wrote without a standby's lease (after a failover, until
    /// a standby follows it again): sync mode's promise does not cover it.
    alone: bool,
}

/// A promotion, as applied.
#[derive(Clone, Copy, Debug)]
struct Promotion {
    region: usize,
    epoch: u64,
    at_ms: u64,
    forced: bool,
    /// A switchover's (the old primary follows): never writing alone.
    switchover: bool,
    /// The promote entry's index in the new primary's log.
    index: u64,
    base_timestamp: u64,
}

/// The operator's current operation and where it is (`since`: the step
/// its current stage began).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Procedure {
    Idle,
    /// A planned switchover away from region `from`.
    Switchover {
        from: usize,
        stage: Stage,
        since: u64,
    },
    /// Promoting region `to` after its primary was lost (or cut off).
    Failover {
        to: usize,
        forced: bool,
        since: u64,
    },
    /// Making the old primary a standby of region `new`.
    Failback {
        new: usize,
        stage: Stage,
        since: u64,
    },
    /// The new primary `new` asks for leases again once its standby ships.
    Attach {
        new: usize,
        since: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Freeze,
    CatchUp,
    Promote,
    Demote,
}

struct World<'l> {
    options: DrOptions,
    rules: Rules,
    random: Random,
    step: u64,
    regions: [Region; 2],
    nodes: BTreeMap<u64, Node>,
    network: Network,
    links: LinkFaults,
    /// Cross-region messages in flight: (due step, to node, message).
    wire: VecDeque<(u64, u64, Wire)>,
    /// `cut[a][b]`: region `a`'s messages to region `b` are lost.
    cut: [[bool; 2]; 2],
    /// Ends of faults in progress: (step, what).
    heal_at: Vec<(u64, Heal)>,
    operation: Procedure,
    /// A region a switchover froze and then gave up on: unfreeze it.
    undo_freeze: Option<usize>,
    /// Proposals of the operator and the shippers, by (node, incarnation, id).
    region_proposals: BTreeMap<(u64, u64, u64), RegionOp>,
    /// Client writes in flight, by (node, incarnation, proposal id).
    writes: BTreeMap<(u64, u64, u64), Write>,
    /// Sync-mode writes applied and waiting for the standby: (node, index, deadline ms, write).
    sync_waits: Vec<(u64, u64, Millis, Write)>,
    busy: [bool; CLIENTS],
    /// The region each client writes to, until it is refused there.
    targets: [Option<usize>; CLIENTS],
    next_transfer: u128,
    proposed: Vec<TransferId>,
    acks: Vec<Ack>,
    promotions: Vec<Promotion>,
    /// A failover happened and its old primary has not been failed back.
    failed_over: Option<Promotion>,
    /// A failback found the old primary diverged: it stays frozen until the
    /// operator re-seeds it.
    diverged: bool,
    /// Shipping sessions opened so far (each hello opens one).
    sessions: u64,
    /// When the last message from a region to a node is due (streams keep
    /// their order).
    last_due: BTreeMap<(usize, u64), u64>,
    /// The highest Raft term each region's nodes used (a re-seed starts above).
    terms: [u64; 2],
    setup_done: bool,
    faults_until: u64,
    recovery_since: Option<u64>,
    probe_acked: bool,
    violations: Vec<Violation>,
    events: BTreeMap<&'static str, u64>,
    lost: u64,
    hash: u64,
    log: Option<&'l mut dyn FnMut(&str)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heal {
    Link,
    Region(usize),
    Node(u64),
}

fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01B3))
}

impl<'l> World<'l> {
    fn new(options: &DrOptions, log: Option<&'l mut dyn FnMut(&str)>) -> Self {
        let mut random = Random::new(options.seed ^ 0xD15A_57E2);
        let (mode, max_lag_ms) = match random.below(3) {
            0 => (Mode::Sync, MAX_LAG_MS),
            1 => (Mode::Async, MAX_LAG_MS),
            _ => (Mode::Async, 0),
        };
        let rules = Rules {
            mode,
            fencing: Fencing::Lease,
            lease_ms: LEASE_MS,
            clock_skew_ms: CLOCK_SKEW_MS,
            election_timeout_ms: 2 * ELECTION_TIMEOUT_MS,
            max_lag_entries: 0,
            max_lag_ms,
            planted: options.planted,
        };
        let mut rate = || 1_000 - DRIFT_PER_MILLE_MAX + random.below(2 * DRIFT_PER_MILLE_MAX + 1);
        let regions = [
            Region { name: "seoul", ids: (1..=NODES).collect(), rate: rate(), down: false, paused: false },
            Region { name: "busan", ids: (11..=10 + NODES).collect(), rate: rate(), down: false, paused: false },
        ];
        let mut world = Self {
            options: options.clone(),
            rules,
            random,
            step: 0,
            regions,
            nodes: BTreeMap::new(),
            network: Network::default(),
            links: LinkFaults::HEALTHY,
            wire: VecDeque::new(),
            cut: [[false; 2]; 2],
            heal_at: Vec::new(),
            operation: Procedure::Idle,
            undo_freeze: None,
            region_proposals: BTreeMap::new(),
            writes: BTreeMap::new(),
            sync_waits: Vec::new(),
            busy: [false; CLIENTS],
            targets: [None; CLIENTS],
            next_transfer: 1,
            proposed: Vec::new(),
            acks: Vec::new(),
            promotions: Vec::new(),
            failed_over: None,
            diverged: false,
            terms: [0; 2],
            sessions: 0,
            last_due: BTreeMap::new(),
            setup_done: false,
            faults_until: 0,
            recovery_since: None,
            probe_acked: false,
            violations: Vec::new(),
            events: BTreeMap::new(),
            lost: 0,
            hash: 0xCBF2_9CE4_8422_2325,
            log,
        };
        for region in 0..2 {
            for id in world.regions[region].ids.clone() {
                let disk = Disk::shared();
                let voters = world.regions[region].ids.clone();
                let storage = SimStorage::open(disk.clone()).and_then(|mut storage| {
                    storage.bootstrap(&voters)?;
                    Ok(storage)
                });
                let node = Node {
                    region,
                    disk,
                    replica: None,
                    incarnation: 0,
                    leading: false,
                    gate: core::Primary::default(),
                    clock: core::Standby::new(0),
                    outgoing: None,
                    incoming: None,
                    last_hello: 0,
                };
                world.nodes.insert(id, node);
                match storage {
                    Ok(storage) => world.start(id, storage),
                    Err(error) => world.violation("store", format!("node {id} failed to bootstrap: {error}")),
                }
            }
        }
        let profile = world.profile();
        world.event(format!("seed {}: {profile}", options.seed));
        world
    }

    /// Whether the standby region's leader holds the setup's accounts (a
    /// failover before that would leave a primary with nothing to post to).
    fn standby_has_setup(&self) -> bool {
        self.leader(1)
            .and_then(|id| self.replica(id))
            .is_some_and(|replica| matches!(replica.storage().ledger().account(AccountId(ACCOUNTS)), Ok(Some(_))))
    }

    fn profile(&self) -> String {
        let mode = match (self.rules.mode, self.rules.max_lag_ms) {
            (Mode::Sync, _) => "sync".to_owned(),
            (Mode::Async, 0) => "async, bounded by the lease".to_owned(),
            (Mode::Async, ms) => format!("async, max_lag_ms {ms}"),
        };
        let planted = match self.options.planted {
            Planted::None => String::new(),
            bug => format!(", planted {bug:?}"),
        };
        format!(
            "{mode}; clock rates {} {}‰, {} {}‰{planted}",
            self.regions[0].name, self.regions[0].rate, self.regions[1].name, self.regions[1].rate
        )
    }

    // --- time, log, accounting ----------------------------------------------

    fn now_ms(&self) -> u64 {
        1_000 + self.step * TICK_MS
    }

    /// Region `region`'s clock: monotonic, at its own rate.
    fn local_ms(&self, region: usize) -> Millis {
        self.now_ms() * self.regions[region].rate / 1_000
    }

    fn event(&mut self, text: String) {
        self.hash = fnv(self.hash, text.as_bytes());
        if let Some(log) = self.log.as_mut() {
            let now = 1_000 + self.step * TICK_MS;
            log(&format!("{:>6} {:>4}.{:03}s  {text}", self.step, now / 1_000, now % 1_000));
        }
    }

    fn count(&mut self, kind: &'static str) {
        *self.events.entry(kind).or_default() += 1;
    }

    fn violation(&mut self, checker: &'static str, detail: String) {
        let violation = Violation { step: self.step, checker, detail };
        self.event(format!("VIOLATION {violation}"));
        self.violations.push(violation);
    }

    // --- nodes ----------------------------------------------------------------

    fn start(&mut self, id: u64, storage: SimStorage) {
        let Some(node) = self.nodes.get(&id) else { return };
        let region = node.region;
        let config = ConsensusConfig {
            election_ticks: 10,
            heartbeat_ticks: 2,
            read_timeout_ticks: 30,
            // The log is kept whole: a run is short, and a region that fell
            // behind is shipped to from the log, never re-seeded here.
            log_gc_threshold_entries: u64::MAX / 2,
            log_gc_keep_entries: 64,
            standby: region == 1,
            seed: self.random.next_u64(),
            ..ConsensusConfig::new(id)
        };
        let now = self.local_ms(region);
        let replica = Replica::new(config, storage);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        node.incarnation += 1;
        node.leading = false;
        node.gate = core::Primary::default();
        node.clock = core::Standby::new(now);
        node.outgoing = None;
        node.incoming = None;
        match replica {
            Ok(replica) => node.replica = Some(replica),
            Err(error) => self.violation("store", format!("node {id} failed to start: {error}")),
        }
    }

    fn crash(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.replica.take().is_none() {
            return;
        }
        let unsynced = node.disk.borrow().unsynced_writes();
        let kept = self.random.below(unsynced as u64 + 1) as usize;
        node.disk.borrow_mut().crash(kept);
        // Its clients hear nothing more: they try again elsewhere.
        let mut freed = Vec::new();
        self.writes.retain(|(node, _, _), write| {
            if *node == id {
                freed.push(write.client);
            }
            *node != id
        });
        self.sync_waits.retain(|(node, _, _, write)| {
            if *node == id {
                freed.push(write.client);
            }
            *node != id
        });
        for client in freed {
            self.busy[client] = false;
            self.targets[client] = None;
        }
        self.region_proposals.retain(|(node, _, _), _| *node != id);
        self.event(format!("crash n{id}: {kept} of {unsynced} unsynced writes kept"));
    }

    fn restart(&mut self, id: u64) {
        let Some(node) = self.nodes.get(&id) else { return };
        if node.replica.is_some() {
            return;
        }
        match SimStorage::open(node.disk.clone()) {
            Ok(storage) => {
                self.event(format!("restart n{id}: applied index {}", storage.applied().index));
                self.start(id, storage);
            }
            Err(error) => self.violation("store", format!("node {id}'s store refused to open: {error}")),
        }
    }

    fn replica(&self, id: u64) -> Option<&Replica<SimStorage>> {
        self.nodes.get(&id).and_then(|node| node.replica.as_ref())
    }

    /// The leader of `region` (of the highest term), if any runs.
    fn leader(&self, region: usize) -> Option<u64> {
        self.regions[region]
            .ids
            .iter()
            .filter_map(|&id| self.replica(id).map(|replica| (id, replica)))
            .filter(|(_, replica)| replica.is_leader())
            .max_by_key(|(_, replica)| replica.term())
            .map(|(id, _)| id)
    }

    /// `region`'s state as its leader has applied it.
    fn region_state(&self, region: usize) -> Option<RegionState> {
        self.leader(region).and_then(|id| self.replica(id)).map(Replica::region)
    }

    /// The region that is primary at the highest epoch (the one clients
    /// write to), as its leader sees it.
    fn primary(&self) -> Option<usize> {
        (0..2)
            .filter_map(|region| self.region_state(region).map(|state| (region, state)))
            .filter(|(_, state)| state.role == RegionRole::Primary)
            .max_by_key(|(_, state)| state.epoch)
            .map(|(region, _)| region)
    }

    // --- the run --------------------------------------------------------------

    fn run(&mut self) {
        self.faults_until = u64::MAX;
        loop {
            self.step += 1;
            self.tick();
            if self.violations.len() >= 10 {
                self.event("stopped after 10 violations".into());
                return;
            }
            if self.faults_until == u64::MAX {
                if !self.setup_done || !self.standby_has_setup() {
                    if self.step > 1_000 {
                        self.violation("liveness", "the setup did not reach both regions in 1000 steps".into());
                        return;
                    }
                    continue;
                }
                self.faults_until = self.step + self.options.steps;
            }
            if self.step < self.faults_until {
                self.faults();
                continue;
            }
            let since = *self.recovery_since.get_or_insert(self.step);
            if self.step == since {
                self.begin_recovery();
            }
            self.recovery_operator();
            if self.recovered() {
                self.event("recovered".into());
                return;
            }
            if self.step - since > RECOVERY_STEPS_MAX {
                let why = self.recovery_missing();
                self.violation("liveness", format!("not recovered {RECOVERY_STEPS_MAX} steps after faults: {why}"));
                return;
            }
        }
    }

    /// One step: due messages, the operator, clients, then every node's
    /// Raft round and its shipping, then the checks.
    fn tick(&mut self) {
        for envelope in self.network.due(self.step) {
            let to = envelope.message.to;
            if self.replica(to).is_some() && !self.network.is_cut(envelope.message.from, to) {
                if let Some(replica) = self.nodes.get_mut(&to).and_then(|node| node.replica.as_mut()) {
                    let _ = replica.step(envelope.message);
                }
            }
        }
        while self.wire.front().is_some_and(|(due, _, _)| *due <= self.step) {
            let Some((_, to, message)) = self.wire.pop_front() else { break };
            self.receive(to, message);
        }
        self.operate();
        self.clients();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.round(id);
            self.ship(id);
        }
        self.sync_answers();
        if self.step.is_multiple_of(DIGEST_EVERY_STEPS) {
            self.check_digests();
        }
    }

    fn round(&mut self, id: u64) {
        let now_ns = self.now_ms() * 1_000_000;
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let region = node.region;
        let incarnation = node.incarnation;
        let Some(replica) = node.replica.as_mut() else { return };
        node.disk.borrow_mut().begin_round();
        replica.tick();
        let mut messages: Vec<Message> = Vec::new();
        let output = match replica.advance(now_ns, &mut messages) {
            Ok(output) => output,
            Err(error) => {
                node.replica = None;
                self.violation("node", format!("node {id} stopped: {error}"));
                return;
            }
        };
        for message in messages {
            // The log is never compacted here (see `start`): no snapshots.
            if is_snapshot(&message) {
                continue;
            }
            let envelope = Envelope { message, snapshot: None };
            let _ = self.network.send(envelope, self.step, &self.links, &mut self.random);
        }
        let leading = replica.is_leader();
        self.terms[region] = self.terms[region].max(replica.term());
        let now = self.local_ms(region);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if leading != node.leading {
            node.leading = leading;
            node.clock.leadership(leading, now);
            node.outgoing = None;
            node.incoming = None;
        }
        let mut completions = output.completions;
        completions.sort_by_key(|completion| match completion {
            Completion::Proposal { id, .. } | Completion::Read { id, .. } => *id,
        });
        for completion in completions {
            let Completion::Proposal { id: proposal, result } = completion else { continue };
            self.completed(id, incarnation, proposal, result);
        }
        if let Some(replica) = self.replica(id) {
            let (applied, leader) = (replica.storage().applied().index, replica.leader().unwrap_or(0));
            self.hash = fnv(self.hash, &[id.to_be_bytes(), applied.to_be_bytes(), leader.to_be_bytes()].concat());
        }
    }

    fn completed(
        &mut self,
        id: u64,
        incarnation: u64,
        proposal: u64,
        result: Result<coffer_consensus::Applied, ProposalError>,
    ) {
        let key = (id, incarnation, proposal);
        if let Some(op) = self.region_proposals.remove(&key) {
            self.region_applied(id, op, result);
            return;
        }
        let Some(mut write) = self.writes.remove(&key) else { return };
        self.busy[write.client] = false;
        let Ok(applied) = result else {
            // Refused (not writable, leadership lost): the client looks for
            // the primary again.
            self.targets[write.client] = None;
            return;
        };
        write.applied_ms = self.now_ms();
        let Outcome::Operation(OperationResults::Transfers(results)) = &applied.outcome else {
            if !self.setup_done {
                // The setup's ledger and accounts.
                self.setup_done = matches!(applied.outcome, Outcome::Operation(OperationResults::Accounts(_)));
            }
            return;
        };
        if !results.iter().all(|result| *result == CreateTransferResult::Created) {
            return;
        }
        let Some(node) = self.nodes.get(&id) else { return };
        let region = node.region;
        let Some(state) = node.replica.as_ref().map(Replica::region) else { return };
        if state.role != RegionRole::Primary {
            return;
        }
        if self.rules.waits_for_standby(state) {
            let deadline = self.local_ms(region) + SYNC_WAIT_MS;
            self.sync_waits.push((id, applied.index, deadline, write));
            return;
        }
        let now = self.local_ms(region);
        let Some(node) = self.nodes.get_mut(&id) else { return };
        node.gate.enter_epoch(Epoch(state.epoch));
        if node.gate.acknowledge(&self.rules, state, LogIndex(applied.index), now) {
            self.acknowledged(write, region, state);
        } else {
            self.count("write not acknowledged");
        }
    }

    fn acknowledged(&mut self, write: Write, region: usize, state: RegionState) {
        // Writing alone is a failover's lot, never a switchover's.
        let switched = self.promotions.iter().any(|p| p.region == region && p.epoch == state.epoch && p.switchover);
        let (epoch, alone) = (state.epoch, state.lease_waived && !switched);
        let at_ms = self.now_ms();
        self.event(format!("{} acknowledges {:?} at epoch {epoch}", self.regions[region].name, write.ids));
        // One writer: a region a non-forced promotion replaced applies no
        // write it acknowledges from the moment of that promotion.
        let replaced = self
            .promotions
            .iter()
            .find(|promotion| {
                promotion.region != region
                    && !promotion.forced
                    && promotion.epoch > epoch
                    && promotion.at_ms <= write.applied_ms
            })
            .copied();
        if let Some(promotion) = replaced {
            self.violation(
                "split brain",
                format!(
                    "{} acknowledged {:?} of epoch {epoch}, applied {} ms after {} became the primary of epoch {}",
                    self.regions[region].name,
                    write.ids,
                    write.applied_ms - promotion.at_ms,
                    self.regions[promotion.region].name,
                    promotion.epoch
                ),
            );
        }
        self.acks.push(Ack { ids: write.ids, region, epoch, at_ms, alone });
    }

    /// Sync mode: writes whose entry the standby confirmed are answered;
    /// those past their wait are not (their outcome is unknown).
    fn sync_answers(&mut self) {
        let waits = std::mem::take(&mut self.sync_waits);
        for (id, index, deadline, write) in waits {
            let Some(node) = self.nodes.get(&id) else { continue };
            let region = node.region;
            let state = node.replica.as_ref().map(Replica::region).unwrap_or_default();
            if node.gate.durable() >= LogIndex(index) && state.role == RegionRole::Primary {
                self.acknowledged(write, region, state);
            } else if self.local_ms(region) >= deadline || state.role != RegionRole::Primary {
                self.count("write not acknowledged");
            } else {
                self.sync_waits.push((id, index, deadline, write));
            }
        }
    }

    // --- clients ----------------------------------------------------------------

    fn clients(&mut self) {
        if !self.setup_done {
            if self.writes.is_empty() && self.step.is_multiple_of(20) {
                if let Some(leader) = self.leader(0) {
                    let ledger = Ledger::new(LedgerId(1), "KRW", 0, "fund");
                    let accounts = (1..=ACCOUNTS)
                        .map(|n| Account { id: AccountId(n), ledger: LedgerId(1), code: 1, ..Default::default() })
                        .collect();
                    self.submit(leader, 0, Operation::CreateLedgers(vec![ledger]), Vec::new());
                    self.submit(leader, 0, Operation::CreateAccounts(accounts), Vec::new());
                }
            }
            return;
        }
        let in_recovery = self.recovery_since.is_some();
        for client in 0..CLIENTS {
            if self.busy[client] || (in_recovery && self.probe_acked) || !self.random.chance(0.5) {
                continue;
            }
            let Some(region) = self.targets[client].or_else(|| self.primary()) else { continue };
            self.targets[client] = Some(region);
            let Some(leader) = self.leader(region) else {
                self.targets[client] = None;
                continue;
            };
            let transfers: Vec<Transfer> = (0..self.random.between(1, 3))
                .map(|_| {
                    let debit = self.random.between(1, ACCOUNTS as u64) as u128;
                    let credit = debit % ACCOUNTS + 1;
                    let id = TransferId(self.next_transfer);
                    self.next_transfer += 1;
                    Transfer {
                        id,
                        debit_account_id: AccountId(debit),
                        credit_account_id: AccountId(credit),
                        amount: u128::from(self.random.between(1, 1_000)),
                        ledger: LedgerId(1),
                        code: 1,
                        kind: TransferKind::Journal,
                        ..Default::default()
                    }
                })
                .collect();
            let ids: Vec<TransferId> = transfers.iter().map(|transfer| transfer.id).collect();
            self.submit(leader, client, Operation::CreateTransfers(transfers), ids);
        }
    }

    /// A write at node `id`: admitted by the DR gate, then proposed.
    fn submit(&mut self, id: u64, client: usize, operation: Operation, ids: Vec<TransferId>) {
        let Some(node) = self.nodes.get(&id) else { return };
        let region = node.region;
        let now = self.local_ms(region);
        let rules = self.rules;
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let incarnation = node.incarnation;
        let Some(replica) = node.replica.as_mut() else { return };
        let state = replica.region();
        if state.role == RegionRole::Primary && !ids.is_empty() {
            node.gate.enter_epoch(Epoch(state.epoch));
            let applied = LogIndex(replica.storage().applied().index);
            if let Err(refusal) = node.gate.admit(&rules, state, applied, now) {
                self.count(match refusal {
                    core::GateRefusal::NoLease { .. } => "write refused by the gate: no lease",
                    core::GateRefusal::Lagging { .. } => "write refused by the gate: lagging",
                    core::GateRefusal::Behind { .. } => "write refused by the gate: max_lag_ms",
                });
                self.targets[client] = None;
                return;
            }
        }
        match replica.propose(operation) {
            Ok(proposal) => {
                self.proposed.extend(ids.iter().copied());
                self.busy[client] = true;
                self.writes.insert((id, incarnation, proposal), Write { client, ids, applied_ms: 0 });
            }
            Err(_) => {
                self.count("write refused by the region");
                self.targets[client] = None;
            }
        }
    }

    // --- shipping ---------------------------------------------------------------

    fn send(&mut self, from_region: usize, to: u64, message: Wire) {
        let to_region = self.nodes.get(&to).map_or(from_region, |node| node.region);
        if self.cut[from_region][to_region] {
            return;
        }
        // A stream delivers in order: never before what went this way earlier.
        let last = self.last_due.entry((from_region, to)).or_default();
        let due = (self.step + self.random.between(1, 3)).max(*last);
        *last = due;
        let position = self.wire.iter().position(|(at, _, _)| *at > due).unwrap_or(self.wire.len());
        self.wire.insert(position, (due, to, message));
    }

    /// Node `id`'s region, the region's state and the region's clock, if
    /// the node runs and leads its region (only leaders ship).
    fn leading(&self, id: u64) -> Option<(usize, RegionState, Millis)> {
        let node = self.nodes.get(&id)?;
        let replica = node.replica.as_ref().filter(|replica| replica.is_leader())?;
        Some((node.region, replica.region(), self.local_ms(node.region)))
    }

    /// Node `id`'s shipping duties this step.
    fn ship(&mut self, id: u64) {
        let Some((region, state, now)) = self.leading(id) else { return };
        let other = 1 - region;
        match state.role {
            RegionRole::Primary => self.ship_down(id, state, now),
            RegionRole::Standby if !self.regions[region].paused => {
                self.acknowledge_shipped(id, now);
                let node = &self.nodes[&id];
                // A session that hears nothing for a lease (or never got an
                // answer) is given up, and a new one asked for.
                let stale = node.incoming.as_ref().is_none_or(|incoming| now > incoming.heard + LEASE_MS);
                if stale && now >= node.last_hello + HEARTBEAT_MS {
                    let cursor = LogIndex(shipped_through(state));
                    self.sessions += 1;
                    let session = self.sessions;
                    if let Some(node) = self.nodes.get_mut(&id) {
                        node.incoming = Some(Incoming {
                            session,
                            last_seq: 0,
                            primary: None,
                            proposed: cursor.0,
                            epoch: Epoch(state.epoch),
                            pending: VecDeque::new(),
                            heard: now,
                        });
                        node.last_hello = now;
                    }
                    for to in self.regions[other].ids.clone() {
                        let hello = Wire::Hello { from: id, session, epoch: Epoch(state.epoch), cursor };
                        self.send(region, to, hello);
                    }
                }
            }
            _ => {}
        }
    }

    fn ship_down(&mut self, id: u64, state: RegionState, now: Millis) {
        let region = self.nodes[&id].region;
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(replica) = node.replica.as_mut() else { return };
        let Some(outgoing) = node.outgoing.as_mut() else { return };
        if now > outgoing.heard + 2 * LEASE_MS {
            node.outgoing = None;
            self.event(format!("n{id} stops shipping: nothing heard for {} ms", 2 * LEASE_MS));
            return;
        }
        let applied = replica.storage().applied().index;
        if applied < outgoing.next && now < outgoing.last_sent + HEARTBEAT_MS {
            return;
        }
        let mut entries = Vec::new();
        if applied >= outgoing.next {
            match replica.applied_entries(outgoing.next, SHIP_BYTES) {
                Ok(read) => {
                    entries = read
                        .into_iter()
                        .map(|entry| {
                            let data = match entry.get_entry_type() {
                                EntryType::EntryNormal => entry.data.to_vec(),
                                _ => Vec::new(),
                            };
                            (entry.index, data)
                        })
                        .collect::<Vec<_>>();
                }
                Err(_) => {
                    node.outgoing = None;
                    return;
                }
            }
        }
        if let Some((last, _)) = entries.last() {
            outgoing.next = last + 1;
        }
        outgoing.last_sent = now;
        let seq = outgoing.stream.send(now);
        let (standby, session) = (outgoing.standby, outgoing.session);
        replica.retain_log_from(node.gate.durable().0 + 1);
        self.send(region, standby, Wire::Down { from: id, session, seq, epoch: Epoch(state.epoch), entries });
    }

    /// On the standby's leader: acknowledges each message whose entries
    /// all committed, granting a lease (recorded before it is sent).
    fn acknowledge_shipped(&mut self, id: u64, now: Millis) {
        let region = self.nodes[&id].region;
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(replica) = node.replica.as_ref() else { return };
        let durable = shipped_through(replica.region());
        let Some(incoming) = node.incoming.as_mut() else { return };
        let mut acks = Vec::new();
        while incoming.pending.front().is_some_and(|(_, last)| *last <= durable) {
            let Some((seq, _)) = incoming.pending.pop_front() else { break };
            acks.push(seq);
        }
        let Some(primary) = incoming.primary else { return };
        if acks.is_empty() {
            return;
        }
        node.clock.granted(now);
        for seq in acks {
            self.send(region, primary, Wire::Up { from: id, seq, durable: LogIndex(durable), lease_ms: LEASE_MS });
        }
    }

    fn receive(&mut self, to: u64, message: Wire) {
        let Some((region, state, now)) = self.leading(to) else { return };
        let rules = self.rules;
        match message {
            Wire::Hello { from, session, epoch, cursor } => {
                if state.role != RegionRole::Primary || epoch.0 > state.epoch || cursor.0 < state.primary_since {
                    return;
                }
                self.event(format!("n{to} ships to n{from} from index {}", cursor.0 + 1));
                let Some(node) = self.nodes.get_mut(&to) else { return };
                node.gate.enter_epoch(Epoch(state.epoch));
                node.gate.confirmed(cursor);
                node.outgoing = Some(Outgoing {
                    standby: from,
                    session,
                    next: cursor.0 + 1,
                    stream: core::Stream::default(),
                    last_sent: 0,
                    heard: now,
                });
            }
            Wire::Up { from, seq, durable, lease_ms } => {
                let Some(node) = self.nodes.get_mut(&to) else { return };
                let Some(outgoing) = node.outgoing.as_mut().filter(|outgoing| outgoing.standby == from) else { return };
                outgoing.heard = now;
                if let Some(sent_at) = outgoing.stream.acknowledged(seq) {
                    node.gate.enter_epoch(Epoch(state.epoch));
                    node.gate.acknowledged(&rules, sent_at, lease_ms);
                }
                node.gate.confirmed(durable);
            }
            message @ Wire::Down { .. } => self.on_shipped(to, region, state, now, message),
        }
    }

    /// On the standby's leader: entries (or a heartbeat) of the session it
    /// opened, proposed in order as `Ship` region entries; a gap in the
    /// stream or in the entries ends the session (a new hello follows).
    fn on_shipped(&mut self, to: u64, region: usize, state: RegionState, now: Millis, message: Wire) {
        let Wire::Down { from, session, seq, epoch, entries } = message else { return };
        if state.role != RegionRole::Standby || self.regions[region].paused || epoch.0 < state.epoch {
            return;
        }
        let Some(node) = self.nodes.get_mut(&to) else { return };
        let incarnation = node.incarnation;
        // Only the session this node opened, with the node that
        // answered it first.
        let Some(incoming) = node
            .incoming
            .as_mut()
            .filter(|incoming| incoming.session == session && incoming.primary.is_none_or(|primary| primary == from))
        else {
            return;
        };
        if seq != incoming.last_seq + 1 {
            node.incoming = None;
            return;
        }
        incoming.last_seq = seq;
        incoming.primary = Some(from);
        incoming.heard = now;
        incoming.epoch = incoming.epoch.max(epoch);
        let source_epoch = incoming.epoch.0.max(state.epoch);
        let mut proposals = Vec::new();
        let mut broken = false;
        for (index, data) in entries {
            if index <= incoming.proposed {
                continue;
            }
            if index != incoming.proposed + 1 {
                broken = true;
                break;
            }
            proposals.push(RegionOp::Ship { source_epoch, index, data });
            incoming.proposed = index;
        }
        let last = incoming.proposed;
        if broken {
            node.incoming = None;
            return;
        }
        incoming.pending.push_back((seq, last));
        let Some(replica) = node.replica.as_mut() else { return };
        let mut accepted = Vec::new();
        for op in proposals {
            match replica.propose_region(op.clone()) {
                Ok(proposal) => accepted.push(((to, incarnation, proposal), op)),
                Err(_) => {
                    node.incoming = None;
                    break;
                }
            }
        }
        self.region_proposals.extend(accepted);
    }

    /// A region entry the operator or a shipper proposed was applied (or
    /// refused).
    fn region_applied(&mut self, id: u64, op: RegionOp, result: Result<coffer_consensus::Applied, ProposalError>) {
        let region = self.nodes[&id].region;
        match (&op, result) {
            (RegionOp::Ship { .. }, Ok(_)) => {}
            (RegionOp::Ship { index, .. }, Err(error)) => {
                self.event(format!("n{id}: shipping entry {index} failed: {error}"));
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.incoming = None;
                }
            }
            (_, Ok(applied)) => {
                self.event(format!("{} applied {} at index {}", self.regions[region].name, op.name(), applied.index));
                if let RegionOp::Promote { epoch, .. } = op {
                    self.promoted(id, epoch, applied.index);
                }
                self.operation_progress(&op);
            }
            (_, Err(error)) => self.event(format!("{} refused {}: {error}", self.regions[region].name, op.name())),
        }
    }

    fn promoted(&mut self, id: u64, epoch: u64, index: u64) {
        let region = self.nodes[&id].region;
        let base_timestamp =
            self.replica(id).and_then(|replica| replica.storage().ledger().last_timestamp().ok()).unwrap_or(0);
        let forced = matches!(self.operation, Procedure::Failover { forced: true, .. });
        let switchover = matches!(self.operation, Procedure::Switchover { .. });
        let promotion = Promotion { region, epoch, at_ms: self.now_ms(), forced, switchover, index, base_timestamp };
        self.promotions.push(promotion);
        self.regions[region].paused = false;
        if matches!(self.operation, Procedure::Failover { .. }) {
            self.failed_over = Some(promotion);
        }
        // Acknowledgements a replaced region made after this instant are
        // caught as they happen; none before it can be (same step: the
        // promotion is applied after that step's answers).
    }

    // --- the operator -------------------------------------------------------------

    fn propose_region(&mut self, region: usize, op: RegionOp) -> bool {
        let Some(leader) = self.leader(region) else { return false };
        let Some(node) = self.nodes.get_mut(&leader) else { return false };
        let incarnation = node.incarnation;
        let Some(replica) = node.replica.as_mut() else { return false };
        let pending = self.region_proposals.iter().any(|((node, _, _), known)| *node == leader && *known == op);
        if pending {
            return true;
        }
        match replica.propose_region(op.clone()) {
            Ok(proposal) => {
                self.region_proposals.insert((leader, incarnation, proposal), op);
                true
            }
            Err(_) => false,
        }
    }

    /// Moves the current operation on, one stage per applied entry.
    fn operation_progress(&mut self, op: &RegionOp) {
        let since = self.step;
        let next = match (self.operation.clone(), op) {
            (Procedure::Switchover { from, stage: Stage::Freeze, .. }, RegionOp::Freeze) => {
                Procedure::Switchover { from, stage: Stage::CatchUp, since }
            }
            (Procedure::Switchover { from, stage: Stage::Promote, .. }, RegionOp::Promote { .. }) => {
                Procedure::Switchover { from, stage: Stage::Demote, since }
            }
            (Procedure::Switchover { from, stage: Stage::Demote, .. }, RegionOp::Demote { .. }) => {
                Procedure::Attach { new: 1 - from, since }
            }
            (Procedure::Failback { new, stage: Stage::Demote, .. }, RegionOp::Demote { .. }) => {
                self.failed_over = None;
                Procedure::Attach { new, since }
            }
            (Procedure::Failback { new, stage: Stage::Freeze, .. }, RegionOp::Freeze) => {
                Procedure::Failback { new, stage: Stage::Demote, since }
            }
            (Procedure::Attach { .. }, RegionOp::Lease { required: true })
            | (Procedure::Failover { .. }, RegionOp::Promote { .. }) => {
                self.count("operation completed");
                Procedure::Idle
            }
            _ => return,
        };
        self.operation = next;
    }

    fn operate(&mut self) {
        let step = self.step;
        let timed_out = |since: u64| step - since > OPERATION_STEPS_MAX;
        match self.operation.clone() {
            Procedure::Idle => {}
            Procedure::Switchover { from, stage, since } => {
                let to = 1 - from;
                match stage {
                    Stage::Freeze | Stage::CatchUp | Stage::Promote if timed_out(since) => {
                        // Never leave the ledger without a writer: undo.
                        self.event("switchover timed out before the promotion: unfreezing".into());
                        self.count("operation undone");
                        self.regions[to].paused = false;
                        self.operation = Procedure::Idle;
                        self.undo_freeze = Some(from);
                    }
                    Stage::Freeze => {
                        self.propose_region(from, RegionOp::Freeze);
                    }
                    Stage::CatchUp => {
                        let applied = self.applied_at_leader(from);
                        if let (Some(applied), Some(standby)) = (applied, self.region_state(to)) {
                            if standby.source_frozen && shipped_through(standby) >= applied {
                                self.regions[to].paused = true;
                                self.operation = Procedure::Switchover { from, stage: Stage::Promote, since: step };
                            }
                        }
                    }
                    Stage::Promote => self.promote(to, false),
                    Stage::Demote if timed_out(since) => {
                        self.event("switchover: the demotion did not finish; the old primary stays frozen".into());
                        self.operation = Procedure::Idle;
                    }
                    Stage::Demote => self.demote(to),
                }
            }
            Procedure::Failover { to, forced, since } => {
                if timed_out(since) {
                    self.event("failover gave up: the standby has no leader".into());
                    self.regions[to].paused = false;
                    self.operation = Procedure::Idle;
                    return;
                }
                self.regions[to].paused = true;
                self.promote(to, forced);
            }
            Procedure::Failback { new, stage, since } => {
                let old = 1 - new;
                if timed_out(since) {
                    self.event("failback gave up for now".into());
                    self.operation = Procedure::Idle;
                } else if stage == Stage::Freeze {
                    if self.region_state(old).is_some_and(|state| state.frozen) {
                        self.operation = Procedure::Failback { new, stage: Stage::Demote, since: step };
                    } else {
                        self.propose_region(old, RegionOp::Freeze);
                    }
                } else {
                    self.demote(new);
                }
            }
            Procedure::Attach { new, since } => {
                if timed_out(since) {
                    self.event("attach timed out: the new primary writes without a lease".into());
                    self.operation = Procedure::Idle;
                    return;
                }
                let Some(promotion) = self.promotions.iter().rev().find(|p| p.region == new).copied() else { return };
                let following = self.leader(new).is_some_and(|id| {
                    let node = &self.nodes[&id];
                    node.outgoing.is_some() && node.gate.durable().0 >= promotion.index
                });
                if following {
                    self.propose_region(new, RegionOp::Lease { required: true });
                }
            }
        }
        if let Some(region) = self.undo_freeze {
            match self.region_state(region) {
                Some(state) if state.frozen && state.role == RegionRole::Primary => {
                    self.propose_region(region, RegionOp::Unfreeze);
                }
                Some(_) => self.undo_freeze = None,
                None => {}
            }
        }
    }

    fn applied_at_leader(&self, region: usize) -> Option<u64> {
        self.leader(region).and_then(|id| self.replica(id)).map(|replica| replica.storage().applied().index)
    }

    /// Promotes `region` once its leader's promotion wait is over (or at
    /// once, forced).
    fn promote(&mut self, region: usize, forced: bool) {
        let Some(leader) = self.leader(region) else { return };
        let Some(state) = self.region_state(region) else { return };
        if state.role != RegionRole::Standby {
            return;
        }
        let now = self.local_ms(region);
        let wait = self.nodes[&leader].clock.promote_wait(&self.rules, state.source_frozen, now);
        if wait > 0 && !forced {
            return;
        }
        // A switchover's new primary keeps needing the lease (its old
        // primary will follow); a failover's writes alone.
        let keep_lease = matches!(self.operation, Procedure::Switchover { .. });
        self.propose_region(region, RegionOp::Promote { epoch: state.epoch + 1, keep_lease });
    }

    /// Demotes the old primary to follow region `new`, after the
    /// divergence check.
    fn demote(&mut self, new: usize) {
        let old = 1 - new;
        let Some(promotion) = self.promotions.iter().rev().find(|p| p.region == new).copied() else { return };
        let Some(state) = self.region_state(old) else { return };
        if state.role != RegionRole::Primary {
            return;
        }
        let Some(leader) = self.leader(old) else { return };
        let last = self.replica(leader).and_then(|r| r.storage().ledger().last_timestamp().ok()).unwrap_or(0);
        if !core::may_demote(&self.rules, last, promotion.base_timestamp) {
            self.event(format!(
                "{} diverged (last timestamp {last}, the new primary's base {}): it stays frozen; reconcile, then \
                 re-seed",
                self.regions[old].name, promotion.base_timestamp
            ));
            self.count("failback: diverged");
            self.reconcile(old, new);
            self.diverged = true;
            self.operation = Procedure::Idle;
            return;
        }
        self.propose_region(old, RegionOp::Demote { epoch: promotion.epoch, cursor: promotion.index });
    }

    /// What `coffer dr reconcile` lists: the writes the old primary holds
    /// that the new one does not. Every acknowledged write lost must be
    /// among them.
    fn reconcile(&mut self, old: usize, new: usize) {
        let (Some(old_id), Some(new_id)) = (self.leader(old), self.leader(new)) else { return };
        let (Some(old_store), Some(new_store)) =
            (self.replica(old_id).map(|r| r.storage().ledger()), self.replica(new_id).map(|r| r.storage().ledger()))
        else {
            return;
        };
        let listed: BTreeSet<TransferId> = self
            .proposed
            .iter()
            .copied()
            .filter(|&id| matches!(old_store.transfer(id), Ok(Some(_))) && matches!(new_store.transfer(id), Ok(None)))
            .collect();
        // The writes of the epoch the failover replaced (earlier epochs' were
        // reconciled when they were replaced).
        let Some(epoch) = self.region_state(old).map(|state| state.epoch) else { return };
        let lost: Vec<TransferId> = self
            .acks
            .iter()
            .filter(|ack| ack.region == old && ack.epoch == epoch)
            .flat_map(|ack| ack.ids.iter().copied())
            .filter(|id| matches!(new_store.transfer(*id), Ok(None)))
            .collect();
        let unlisted: Vec<&TransferId> = lost.iter().filter(|id| !listed.contains(id)).collect();
        self.event(format!("reconcile lists {} transfers; {} acknowledged ones lost", listed.len(), lost.len()));
        if !unlisted.is_empty() {
            self.violation("reconcile", format!("acknowledged transfers {unlisted:?} are lost but not listed"));
        }
    }

    // --- faults -----------------------------------------------------------------

    fn faults(&mut self) {
        let step = self.step;
        let due: Vec<Heal> = self.heal_at.iter().filter(|(at, _)| *at <= step).map(|(_, heal)| *heal).collect();
        self.heal_at.retain(|(at, _)| *at > step);
        for heal in due {
            self.heal(heal);
        }
        if self.operation != Procedure::Idle || !self.random.chance(0.02) {
            return;
        }
        let Some(primary) = self.primary() else { return };
        let standby = 1 - primary;
        let healthy = self.heal_at.is_empty() && !self.diverged;
        let following = self.region_state(standby).is_some_and(|state| state.role == RegionRole::Standby);
        match self.random.below(8) {
            0 | 1 if healthy && following && self.failed_over.is_none() => {
                self.event(format!(
                    "operator: switchover {} -> {}",
                    self.regions[primary].name, self.regions[standby].name
                ));
                self.count("switchover");
                self.operation = Procedure::Switchover { from: primary, stage: Stage::Freeze, since: step };
            }
            2 | 3 if self.heal_at.iter().all(|(_, heal)| *heal != Heal::Link) => {
                let (one_way, from) = (self.random.chance(0.4), self.random.below(2) as usize);
                self.cut[from][1 - from] = true;
                if !one_way {
                    self.cut[1 - from][from] = true;
                }
                let steps = self.random.between(20, 150);
                self.heal_at.push((step + steps, Heal::Link));
                self.count(if one_way { "partition one way" } else { "partition" });
                self.event(format!(
                    "cut {} {} for {} ms",
                    self.regions[from].name,
                    if one_way { "->" } else { "<->" },
                    steps * TICK_MS
                ));
                self.maybe_failover(standby, following);
            }
            4 if self.heal_at.iter().all(|(_, heal)| !matches!(heal, Heal::Region(_))) => {
                let region = if self.random.chance(0.7) { primary } else { standby };
                self.regions[region].down = true;
                for id in self.regions[region].ids.clone() {
                    self.crash(id);
                }
                let steps = self.random.between(30, 200);
                self.heal_at.push((step + steps, Heal::Region(region)));
                self.count("region crash");
                self.event(format!("region {} crashes for {} ms", self.regions[region].name, steps * TICK_MS));
                if region == primary {
                    self.maybe_failover(standby, following);
                }
            }
            5 => {
                let region = self.random.below(2) as usize;
                if let Some(leader) = self.leader(region) {
                    self.crash(leader);
                    self.heal_at.push((step + self.random.between(5, 50), Heal::Node(leader)));
                    self.count("leader crash");
                }
            }
            7 if self.diverged => self.reseed(),
            6 if self.failed_over.is_some() => {
                let promotion = self.failed_over.expect("checked");
                let old = 1 - promotion.region;
                if !self.regions[old].down && !self.cut[0][1] && !self.cut[1][0] && !self.diverged {
                    self.event(format!("operator: failback of {}", self.regions[old].name));
                    self.count("failback");
                    self.operation = Procedure::Failback { new: promotion.region, stage: Stage::Freeze, since: step };
                }
            }
            _ => {}
        }
    }

    /// Re-seeds the diverged old primary from a checkpoint of the new one
    /// (every node of it, at once, as `coffer dr failback --reseed` does),
    /// then waits for it to ship and asks the primary for leases again.
    fn reseed(&mut self) {
        let Some(promotion) = self.failed_over else { return };
        let (new, old) = (promotion.region, 1 - promotion.region);
        if self.regions[old].down {
            return;
        }
        let Some(checkpoint) = self.leader(new).and_then(|id| self.replica(id)).map(|r| r.storage().checkpoint())
        else {
            return;
        };
        let Some(epoch) = self.region_state(new).map(|state| state.epoch) else { return };
        let term = self.terms[old] + 1;
        let voters = self.regions[old].ids.clone();
        self.event(format!(
            "re-seed {} from {}'s checkpoint at {}'s index {} (term {term}, epoch {epoch})",
            self.regions[old].name,
            self.regions[new].name,
            self.regions[new].name,
            checkpoint.index()
        ));
        self.count("re-seed");
        for &id in &voters {
            self.crash(id);
            let disk = Disk::shared();
            match SimStorage::reseed(disk.clone(), &voters, &checkpoint, term, epoch) {
                Ok(storage) => {
                    if let Some(node) = self.nodes.get_mut(&id) {
                        node.disk = disk;
                    }
                    self.start(id, storage);
                }
                Err(error) => self.violation("store", format!("re-seeding node {id} failed: {error}")),
            }
        }
        self.diverged = false;
        self.failed_over = None;
        self.operation = Procedure::Attach { new, since: self.step };
    }

    fn maybe_failover(&mut self, standby: usize, following: bool) {
        if !following || self.failed_over.is_some() || !self.random.chance(0.6) {
            return;
        }
        let forced = self.random.chance(0.15);
        self.count(if forced { "failover (forced)" } else { "failover" });
        self.event(format!("operator: failover{}", if forced { " --force" } else { "" }));
        self.operation = Procedure::Failover { to: standby, forced, since: self.step };
    }

    fn heal(&mut self, heal: Heal) {
        match heal {
            Heal::Link => {
                self.cut = [[false; 2]; 2];
                self.event("the regions' link heals".into());
            }
            Heal::Region(region) => {
                self.regions[region].down = false;
                for id in self.regions[region].ids.clone() {
                    self.restart(id);
                }
            }
            Heal::Node(id) => self.restart(id),
        }
    }

    fn begin_recovery(&mut self) {
        self.event("faults stop".into());
        let pending: Vec<Heal> = self.heal_at.drain(..).map(|(_, heal)| heal).collect();
        for heal in pending {
            self.heal(heal);
        }
    }

    /// After faults, the operator fails back a region a failover left
    /// behind (again, if an attempt gave up), re-seeding it if it diverged.
    fn recovery_operator(&mut self) {
        if self.operation != Procedure::Idle {
            return;
        }
        if self.diverged {
            self.reseed();
            return;
        }
        if let Some(promotion) = self.failed_over {
            self.operation = Procedure::Failback { new: promotion.region, stage: Stage::Freeze, since: self.step };
            self.count("failback");
        }
    }

    fn recovered(&mut self) -> bool {
        if !self.probe_acked {
            let since = self.recovery_since.unwrap_or(0);
            self.probe_acked = self.acks.last().is_some_and(|ack| ack.at_ms > 1_000 + since * TICK_MS);
            return false;
        }
        if self.operation != Procedure::Idle || !self.writes.is_empty() || !self.sync_waits.is_empty() {
            return false;
        }
        let Some(primary) = self.primary() else { return false };
        let standby = 1 - primary;
        let following = self.region_state(standby).filter(|state| state.role == RegionRole::Standby);
        let done = match following {
            Some(state) => self.applied_at_leader(primary).is_some_and(|applied| shipped_through(state) >= applied),
            None => false,
        };
        if done {
            self.check_digests();
            self.final_checks();
        }
        done
    }

    fn recovery_missing(&self) -> String {
        let what = if !self.probe_acked {
            "no write was acknowledged"
        } else if self.operation != Procedure::Idle {
            "the operation did not finish"
        } else {
            "the standby did not catch up"
        };
        format!("{what}; {}", self.state_summary())
    }

    /// Each region's state as its leader sees it, and the shipping sessions.
    fn state_summary(&self) -> String {
        let mut parts = vec![format!("operation {:?}", self.operation)];
        for region in 0..2 {
            let name = self.regions[region].name;
            let Some(leader) = self.leader(region) else {
                parts.push(format!("{name}: no leader"));
                continue;
            };
            let node = &self.nodes[&leader];
            let Some(replica) = node.replica.as_ref() else { continue };
            let state = replica.region();
            parts.push(format!(
                "{name}: leader n{leader} {:?} epoch {} frozen {} cursor {} applied {} paused {} durable {} \
                 outgoing {:?} incoming {:?}",
                state.role,
                state.epoch,
                state.frozen,
                state.cursor,
                replica.storage().applied().index,
                self.regions[region].paused,
                node.gate.durable().0,
                node.outgoing.as_ref().map(|o| (o.standby, o.session, o.next)),
                node.incoming.as_ref().map(|i| (i.session, i.primary, i.proposed, i.pending.len()))
            ));
        }
        parts.join("; ")
    }

    // --- checks -----------------------------------------------------------------

    /// Equal state at equal index: the standby's leader, having applied the
    /// primary's log through index `c`, holds the digest the primary's
    /// leader holds at applied index `c`.
    fn check_digests(&mut self) {
        let Some(primary) = self.primary() else { return };
        let standby = 1 - primary;
        let (Some(p), Some(s)) = (self.leader(primary), self.leader(standby)) else { return };
        let (Some(p), Some(s)) = (self.replica(p), self.replica(s)) else { return };
        let (p_state, s_state) = (p.region(), s.region());
        if s_state.role != RegionRole::Standby || s_state.epoch != p_state.epoch {
            return;
        }
        let index = p.storage().applied().index;
        if shipped_through(s_state) != index {
            return;
        }
        let digests = (state_digest(p.storage().ledger()), state_digest(s.storage().ledger()));
        let (Ok(primary_digest), Ok(standby_digest)) = digests else {
            self.violation("store", "a digest could not be computed".into());
            return;
        };
        if primary_digest != standby_digest {
            self.violation(
                "digest",
                format!(
                    "at the primary's index {index} (epoch {}), {} holds digest {primary_digest} and {} holds \
                     {standby_digest}",
                    p_state.epoch, self.regions[primary].name, self.regions[standby].name
                ),
            );
        }
    }

    /// No acknowledged write lost (sync mode); in async mode, lost writes
    /// were acknowledged within `max_lag_ms` of each other, per epoch.
    fn final_checks(&mut self) {
        let Some(primary) = self.primary() else { return };
        let Some(store) = self.leader(primary).and_then(|id| self.replica(id)).map(|r| r.storage().ledger()) else {
            return;
        };
        let forced = self.promotions.iter().any(|promotion| promotion.forced);
        let mut lost_by_epoch: BTreeMap<(usize, u64), Vec<&Ack>> = BTreeMap::new();
        for ack in &self.acks {
            if ack.ids.iter().any(|id| matches!(store.transfer(*id), Ok(None))) {
                lost_by_epoch.entry((ack.region, ack.epoch)).or_default().push(ack);
            }
        }
        let mut violations = Vec::new();
        let mut lost = 0;
        for ((region, epoch), acks) in &lost_by_epoch {
            lost += acks.len() as u64;
            if forced {
                continue;
            }
            let name = self.regions[*region].name;
            let ids: Vec<TransferId> = acks.iter().flat_map(|ack| ack.ids.iter().copied()).collect();
            if self.rules.mode == Mode::Sync {
                // A primary writing alone (after a failover, before a standby
                // follows) has nobody to wait for: sync mode promises nothing
                // for those writes.
                let confirmed: Vec<TransferId> =
                    acks.iter().filter(|ack| !ack.alone).flat_map(|ack| ack.ids.iter().copied()).collect();
                if !confirmed.is_empty() {
                    violations
                        .push(format!("sync mode: {name} acknowledged {confirmed:?} at epoch {epoch}; they are lost"));
                }
                continue;
            }
            if self.rules.max_lag_ms == 0 {
                // No bound in time: the lease fences a cut-off primary, but a
                // standby that follows slowly may lag by any amount.
                continue;
            }
            let first = acks.iter().map(|ack| ack.at_ms).min().unwrap_or(0);
            let last = acks.iter().map(|ack| ack.at_ms).max().unwrap_or(0);
            // The bound on the primary's clock, seen on true time, plus a step.
            let bound = self.rules.max_lag_ms * 1_000 / (1_000 - DRIFT_PER_MILLE_MAX) + TICK_MS;
            if last - first > bound {
                violations.push(format!(
                    "{name} acknowledged lost writes {ids:?} over {} ms at epoch {epoch}, more than the bound of {bound} ms",
                    last - first
                ));
            }
        }
        self.lost = lost;
        for detail in violations {
            self.violation("lost writes", detail);
        }
    }

    fn report(self) -> DrReport {
        DrReport {
            seed: self.options.seed,
            profile: self.profile(),
            violations: self.violations,
            events: self.events,
            acknowledged: self.acks.len() as u64,
            lost: self.lost,
            steps: self.step,
            hash: self.hash,
        }
    }
}
