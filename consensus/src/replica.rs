//! The sans-IO node core: one Raft replica of the ledger.
//!
//! [`Replica`] wraps raft-rs's `RawNode`. It is driven from outside:
//! [`Replica::tick`] when a tick of time has passed, [`Replica::step`] with
//! each message from a peer, [`Replica::propose`] / [`Replica::read`] for
//! clients, and [`Replica::advance`] to run a round: pack queued proposals
//! into entries (group commit), then process every `Ready`. Messages go out
//! through an [`Outbox`]; the disk is reached only through
//! [`ReplicaStorage`]; time enters only as the `now_ns` argument of
//! `advance` and as ticks; the one random choice (the election timeout) is
//! drawn from a source seeded by the configuration. So the same code runs
//! under the tokio driver and under the deterministic simulator.

use std::collections::{HashMap, VecDeque};

use coffer_ledger::{
    prepare, ApplyError, CloseStep, Operation, OperationResults, Run, Store, SuspendedRun, RUN_BATCHES_MAX,
};
use coffer_storage::audit::{AuditKind, AuditRecord};
use coffer_storage::{AppliedState, RegionRole, RegionState};
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, MessageType,
};
use raft::{RawNode, StateRole};

use crate::command::{is_transfer_batch, Command, Part, PRINCIPAL_BYTES_MAX};
use crate::config::ConsensusConfig;
use crate::error::{ConsensusError, ProposalError, ReadError, StepError};
use crate::metrics::ReplicaMetrics;
use crate::region::{is_region_entry, next_region, RegionCommand, RegionNote, RegionOp, REASON_BYTES_MAX};
use crate::storage::ReplicaStorage;

/// A proposal's handle, unique on this node while it runs.
pub type ProposalId = u64;
/// A read's handle, unique on this node while it runs.
pub type ReadId = u64;

/// Most Ready rounds one `advance` processes (a single-node cluster can
/// commit in the same round it persists, producing another Ready).
const READY_ROUNDS_MAX: usize = 8;
/// How far behind the leader's log a learner may be and still be promoted
/// without force (entries in flight under load).
const PROMOTE_LAG_ENTRIES_MAX: u64 = 64;

/// Where the core's outgoing Raft messages go. The production driver queues
/// them per peer; the simulator delivers them through its network model.
pub trait Outbox {
    /// Sends `messages` (each names its destination in `to`).
    fn send(&mut self, messages: Vec<Message>);
}

impl Outbox for Vec<Message> {
    fn send(&mut self, messages: Vec<Message>) {
        self.extend(messages);
    }
}

/// A membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Add a node as a learner: it receives the log but does not vote.
    AddLearner(u64),
    /// Make a learner (or a new node) a voter.
    PromoteVoter(u64),
    /// Remove a node.
    Remove(u64),
}

impl MembershipChange {
    fn node(self) -> u64 {
        match self {
            Self::AddLearner(node) | Self::PromoteVoter(node) | Self::Remove(node) => node,
        }
    }

    fn to_conf_change(self) -> ConfChangeV2 {
        let (change_type, node_id) = match self {
            Self::AddLearner(node) => (ConfChangeType::AddLearnerNode, node),
            Self::PromoteVoter(node) => (ConfChangeType::AddNode, node),
            Self::Remove(node) => (ConfChangeType::RemoveNode, node),
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = node_id;
        let mut change = ConfChangeV2::default();
        change.set_transition(ConfChangeTransition::Auto);
        change.set_changes(vec![single].into());
        change
    }
}

/// What an applied proposal produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A ledger operation's results: exactly this proposal's events.
    Operation(OperationResults),
    /// A membership change: the membership after it.
    Membership(ConfState),
    /// A region entry: the region's state after it.
    Region(RegionState),
}

/// A proposal that was applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The log index of its entry.
    pub index: u64,
    /// What it produced.
    pub outcome: Outcome,
}

/// A request that finished, one way or the other.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// A proposal: applied, or why not.
    Proposal {
        /// Its handle.
        id: ProposalId,
        /// Its outcome.
        result: Result<Applied, ProposalError>,
    },
    /// A linearizable read: the state is now at or past the read index, so
    /// reading the local store answers it.
    Read {
        /// Its handle.
        id: ReadId,
        /// The confirmed read index, or why none.
        result: Result<u64, ReadError>,
    },
}

/// A membership change that was applied on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipApplied {
    /// The entry's index.
    pub index: u64,
    /// The change.
    pub change: ConfChangeV2,
    /// The proposer's context (the production driver puts the new node's
    /// address there).
    pub context: Vec<u8>,
    /// The membership after it.
    pub conf_state: ConfState,
}

/// What one [`Replica::advance`] produced besides messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Requests that finished.
    pub completions: Vec<Completion>,
    /// Membership changes applied, in order.
    pub membership: Vec<MembershipApplied>,
    /// A snapshot installed from the leader, by index.
    pub snapshot_installed: Option<u64>,
}

/// A peer's replication progress, as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The peer.
    pub id: u64,
    /// The highest index known to match the leader's log.
    pub matched: u64,
    /// The next index the leader will send.
    pub next_index: u64,
    /// Whether the peer is a voter (else a learner).
    pub voter: bool,
}

/// The node's state, for status pages and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    /// This node.
    pub id: u64,
    /// Leader, follower, candidate or pre-candidate.
    pub role: StateRole,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of (`0`: none).
    pub leader: u64,
    /// The commit index.
    pub commit: u64,
    /// The applied index.
    pub applied: u64,
    /// The first index in the log.
    pub first_index: u64,
    /// The last index in the log.
    pub last_index: u64,
    /// Voters and learners.
    pub conf_state: ConfState,
    /// Every peer's progress (leader only; empty elsewhere).
    pub progress: Vec<PeerProgress>,
}

/// Why [`Replica::applied_entries`] could not read the entries asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntriesError {
    /// The log was compacted past the first entry asked for.
    #[error("the log was compacted: it starts at index {first}")]
    Compacted {
        /// The log's first index now.
        first: u64,
    },
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Storage(String),
}

/// A proposal waiting in the group-commit queue.
#[derive(Debug)]
struct Queued {
    id: ProposalId,
    operation: Operation,
    /// Who proposed it (the audit trail records it with the batch).
    principal: String,
}

/// A proposal appended to the log, waiting to be applied.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    /// The term it was proposed in: its entry carries it, which makes
    /// (term, id) unique across restarts.
    term: u64,
}

#[derive(Debug)]
struct PendingRead {
    id: ReadId,
    attempts: u32,
    issued_tick: u64,
    index: Option<u64>,
}

/// SplitMix64: the node's seeded random source.
#[derive(Clone, Debug)]
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The events of `operation`.
pub(crate) fn events(operation: &Operation) -> usize {
    match operation {
        Operation::CreateLedgers(events) => events.len(),
        Operation::CreateAccounts(events) => events.len(),
        Operation::CreateTransfers(events) => events.len(),
        Operation::ExpirePending => 0,
        Operation::SetPeriods(events) => events.len(),
        Operation::Close(CloseStep::Post { transfers, .. }) => transfers.len(),
        Operation::Close(_) | Operation::Reconcile(_) => 1,
    }
}

/// Whether the operation's last event is `linked`: its chain is open at the
/// end, so nothing may be packed after it (that would close the chain).
fn ends_linked(operation: &Operation) -> bool {
    use coffer_ledger::{AccountFlags, TransferFlags};
    match operation {
        Operation::CreateAccounts(events) => events.last().is_some_and(|e| e.flags.contains(AccountFlags::LINKED)),
        Operation::CreateTransfers(events) => events.last().is_some_and(|e| e.flags.contains(TransferFlags::LINKED)),
        Operation::CreateLedgers(_)
        | Operation::ExpirePending
        | Operation::SetPeriods(_)
        | Operation::Close(_)
        | Operation::Reconcile(_) => false,
    }
}

/// Appends `next`'s events to `into` if both are the same kind.
/// The audit records of ledger command `command` applied as entry `index`:
/// one per batch (part), naming its principal; `write_set` is the state
/// machine's output, `None` when the entry was refused as a whole.
/// Runs the state machine on the ledger command of entry `index` against
/// `store`, at the timestamp the state decides: its results and write set,
/// or why the whole batch was refused. An error is a store failure: the
/// node must stop.
#[allow(clippy::type_complexity)]
fn prepare_at<S: Store + ?Sized>(
    store: &S,
    index: u64,
    command: &Command,
) -> Result<Result<(OperationResults, coffer_ledger::WriteSet), ProposalError>, ConsensusError> {
    let last_timestamp = store.last_timestamp().map_err(store_error)?;
    // Timestamps strictly increase whatever a leader's clock said: the
    // state decides, so every replica computes the same value.
    let timestamp = command.timestamp.max(last_timestamp + 1);
    match prepare(store, timestamp, &command.operation) {
        Ok(prepared) => Ok(Ok((prepared.results, prepared.write_set))),
        Err(ApplyError::Store(source)) => Err(ConsensusError::Apply { index, source: ApplyError::Store(source) }),
        // Refused as a whole, identically on every replica.
        Err(refused) => Ok(Err(ProposalError::Rejected(refused))),
    }
}

fn audit_records(index: u64, command: &Command, write_set: Option<&coffer_ledger::WriteSet>) -> Vec<AuditRecord> {
    let kind = match &command.operation {
        Operation::CreateLedgers(_) => AuditKind::Ledgers,
        Operation::CreateAccounts(_) => AuditKind::Accounts,
        Operation::CreateTransfers(_) => AuditKind::Transfers,
        Operation::SetPeriods(_) => AuditKind::Periods,
        Operation::Close(_) => AuditKind::Close,
        Operation::Reconcile(_) => AuditKind::Reconcile,
        Operation::ExpirePending => return Vec::new(),
    };
    let mut start = 0u64;
    (0u32..)
        .zip(&command.parts)
        .map(|(part, batch)| {
            let first_timestamp = write_set.map_or(0, |write_set| write_set.first_timestamp + start);
            start += u64::from(batch.events);
            AuditRecord {
                index,
                part,
                first_timestamp,
                events: batch.events,
                kind,
                proposer: command.proposer,
                applied: write_set.is_some(),
                principal: batch.principal.clone(),
                note: String::new(),
            }
        })
        .collect()
}

/// The audit record of region entry `command` applied as entry `index`
/// (`applied`: the region took it); none for shipping, which is the
/// standby's own work (the shipped batches are recorded instead).
fn region_audit(index: u64, command: &RegionCommand, applied: bool) -> Option<AuditRecord> {
    let kind = match command.op {
        RegionOp::Ship { .. } => return None,
        RegionOp::Freeze => AuditKind::Freeze,
        RegionOp::Unfreeze => AuditKind::Unfreeze,
        RegionOp::Promote { .. } => AuditKind::Promote,
        RegionOp::Demote { .. } => AuditKind::Demote,
        RegionOp::Lease { .. } => AuditKind::Lease,
    };
    Some(AuditRecord {
        index,
        part: 0,
        first_timestamp: 0,
        events: 0,
        kind,
        proposer: command.proposer,
        applied,
        principal: command.note.principal.clone(),
        note: command.note.reason.clone(),
    })
}

fn merge(into: &mut Operation, next: Operation) -> Result<(), Operation> {
    match (into, next) {
        (Operation::CreateLedgers(into), Operation::CreateLedgers(next)) => into.extend(next),
        (Operation::CreateAccounts(into), Operation::CreateAccounts(next)) => into.extend(next),
        (Operation::CreateTransfers(into), Operation::CreateTransfers(next)) => into.extend(next),
        (Operation::SetPeriods(into), Operation::SetPeriods(next)) => into.extend(next),
        (_, next) => return Err(next),
    }
    Ok(())
}

/// The results of events `start .. start + len` of `results`.
fn slice_results(results: &OperationResults, start: usize, len: usize) -> OperationResults {
    fn part<T: Clone>(all: &[T], start: usize, len: usize) -> Vec<T> {
        all.get(start..start + len).map(<[T]>::to_vec).unwrap_or_default()
    }
    match results {
        OperationResults::Ledgers(all) => OperationResults::Ledgers(part(all, start, len)),
        OperationResults::Accounts(all) => OperationResults::Accounts(part(all, start, len)),
        OperationResults::Transfers(all) => OperationResults::Transfers(part(all, start, len)),
        OperationResults::Expired(expired) => OperationResults::Expired(*expired),
        OperationResults::Periods(all) => OperationResults::Periods(part(all, start, len)),
        OperationResults::Close(result) => OperationResults::Close(*result),
        OperationResults::Reconcile(result) => OperationResults::Reconcile(*result),
    }
}

/// A follower applies its committed transfer batches once they reach the
/// next multiple of this many log entries (see `Replica::may_defer_apply`).
/// Runs of eight rather than of what arrived at once (one to four batches
/// under four clients) cut a follower's CPU by about a sixth in 2 M-transfer
/// runs of the load generator (README, "Performance").
const FOLLOWER_APPLY_SPAN: u64 = 8;

/// Consecutive committed transfer batches this node has prepared, one
/// after another, and answered, whose one write waits (see
/// `Replica::may_hold`).
struct Held {
    /// Their write sets, merged.
    run: SuspendedRun,
    /// The last one's applied state.
    applied: AppliedState,
    /// Their audit records.
    audit: Vec<AuditRecord>,
    /// How many entries it holds (refused batches too).
    entries: usize,
    /// The tick count when its first entry was prepared.
    since: u64,
}

/// One Raft replica of the ledger. See the module docs.
pub struct Replica<S: ReplicaStorage> {
    raw: RawNode<S>,
    config: ConsensusConfig,
    random: Random,
    queue: VecDeque<Queued>,
    queued_events: usize,
    waiters: HashMap<ProposalId, Waiter>,
    conf_waiter: Option<(ProposalId, Waiter)>,
    next_id: u64,
    reads: HashMap<u64, PendingRead>,
    /// A follower's committed transfer batches not applied yet (see
    /// [`Self::may_defer_apply`]), in log order.
    deferred: Vec<Entry>,
    /// The tick count when `deferred` last became non-empty.
    deferred_since: u64,
    /// Transfer batches prepared (and answered) whose write waits (see
    /// [`Self::may_hold`]).
    held: Option<Held>,
    ticks: u64,
    last_stamp_ns: u64,
    next_expiry_ns: u64,
    /// The first log index a standby region still needs from this node
    /// (`0`: none); compaction keeps it, within a bound.
    log_retain_from: u64,
    output: Output,
    metrics: ReplicaMetrics,
}

impl<S: ReplicaStorage> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("id", &self.config.node_id).finish_non_exhaustive()
    }
}

impl<S: ReplicaStorage> Replica<S> {
    /// A replica over `storage`, which already holds its Raft state (a
    /// bootstrapped store, a store of a running cluster, or an empty one for
    /// a node about to be added). Raft resumes at the persisted applied
    /// index, so nothing is applied twice.
    pub fn new(config: ConsensusConfig, mut storage: S) -> Result<Self, ConsensusError> {
        let applied = storage.applied().index;
        // Committed entries are applied before the Ready's hard state (with
        // the new commit index) is written, so a crash between the two can
        // leave the applied index past the stored commit index. Everything
        // applied was committed: raise the commit index to match.
        if storage.initial_state()?.hard_state.commit < applied {
            storage.set_commit(applied)?;
        }
        let raft_config = config.raft_config(applied)?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage, &logger)?;
        let last_stamp_ns = raw.store().ledger().last_timestamp().map_err(store_error)?;
        let metrics = ReplicaMetrics::new(config.node_id);
        let mut replica = Self {
            raw,
            random: Random(config.seed),
            config,
            queue: VecDeque::new(),
            queued_events: 0,
            waiters: HashMap::new(),
            conf_waiter: None,
            next_id: 1,
            reads: HashMap::new(),
            deferred: Vec::new(),
            deferred_since: 0,
            held: None,
            ticks: 0,
            last_stamp_ns,
            next_expiry_ns: 0,
            log_retain_from: 0,
            output: Output::default(),
            metrics,
        };
        replica.draw_election_timeout();
        Ok(replica)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.config.node_id
    }

    /// The configuration.
    pub fn config(&self) -> &ConsensusConfig {
        &self.config
    }

    /// The storage, for reads (ledger lookups, snapshots to send).
    pub fn storage(&self) -> &S {
        self.raw.store()
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&id| id != 0)
    }

    /// Proposals and events waiting in the group-commit queue.
    pub fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queued_events)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The group's members (voters and learners), ascending.
    pub fn members(&self) -> Vec<u64> {
        let mut members: Vec<u64> = self.raw.raft.prs().iter().map(|(&id, _)| id).collect();
        members.sort_unstable();
        members
    }

    /// The node's state, for status pages and tests.
    pub fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        let mut progress: Vec<PeerProgress> = if self.is_leader() {
            let conf = raft.prs().conf();
            raft.prs()
                .iter()
                .map(|(&id, pr)| PeerProgress {
                    id,
                    matched: pr.matched,
                    next_index: pr.next_idx,
                    voter: !conf.learners().contains(&id),
                })
                .collect()
        } else {
            Vec::new()
        };
        progress.sort_by_key(|peer| peer.id);
        NodeStatus {
            id: self.id(),
            role: raft.state,
            term: raft.term,
            leader: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: self.storage().applied().index,
            first_index: self.storage().log_first_index(),
            last_index: raft.raft_log.last_index(),
            conf_state: raft.prs().conf().to_conf_state(),
            progress,
        }
    }

    /// One tick of time passed.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        self.draw_election_timeout();
    }

    /// Starts an election now (tests, and a node asked to take over).
    pub fn campaign(&mut self) -> Result<(), ConsensusError> {
        self.raw.campaign()?;
        self.draw_election_timeout();
        Ok(())
    }

    /// Steps a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        let refuse =
            |message: &Message, reason: String| StepError { from: message.from, kind: message.get_msg_type(), reason };
        if message.to != self.id() {
            return Err(refuse(&message, format!("addressed to node {}, this is node {}", message.to, self.id())));
        }
        let kind = message.get_msg_type();
        let from = message.from;
        let result = self.raw.step(message);
        self.draw_election_timeout();
        result.map_err(|error| StepError { from, kind, reason: error.to_string() })
    }

    /// raft-rs draws the randomized election timeout from the thread's RNG
    /// whenever it resets its election clock. Every time the clock is at
    /// zero the core replaces that draw with one from its seeded source, so
    /// a simulated run is reproducible (the value stays in raft's range).
    fn draw_election_timeout(&mut self) {
        if self.raw.raft.election_elapsed == 0 {
            let min = self.config.election_ticks as u64;
            let timeout = min + self.random.next() % min.max(1);
            self.raw.raft.set_randomized_election_timeout(timeout as usize);
        }
    }

    fn new_id(&mut self) -> ProposalId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The region's disaster-recovery state as of the applied index, its
    /// role resolved (the configuration's until a region entry set one).
    pub fn region(&self) -> RegionState {
        let mut region = self.storage().applied().region;
        if region.role == RegionRole::Configured {
            region.role = if self.config.standby { RegionRole::Standby } else { RegionRole::Primary };
        }
        region
    }

    /// Whether the region accepts ledger writes: it is the primary and not
    /// frozen. Checked when a write is proposed and again when it is
    /// applied, so a write that was queued before a freeze or a demotion
    /// changes nothing (the same on every replica).
    fn writable(&self) -> Result<(), ProposalError> {
        let region = self.region();
        if region.role == RegionRole::Primary && !region.frozen {
            return Ok(());
        }
        Err(ProposalError::NotWritable { standby: region.role == RegionRole::Standby, epoch: region.epoch })
    }

    /// Committed (and applied) entries of this node's log from `from`, up
    /// to `max_bytes` (at least one entry when there is one), for shipping
    /// to a standby region. `Err(first)`: the log starts at `first` now,
    /// past `from` (compacted).
    pub fn applied_entries(&self, from: u64, max_bytes: u64) -> Result<Vec<Entry>, EntriesError> {
        let applied = self.storage().applied().index;
        let first = self.storage().log_first_index();
        if from < first {
            return Err(EntriesError::Compacted { first });
        }
        if from > applied {
            return Ok(Vec::new());
        }
        let context = raft::GetEntriesContext::empty(false);
        match raft::Storage::entries(self.storage(), from, applied + 1, max_bytes, context) {
            Ok(entries) => Ok(entries),
            Err(raft::Error::Store(raft::StorageError::Compacted)) => Err(EntriesError::Compacted { first }),
            Err(error) => Err(EntriesError::Storage(error.to_string())),
        }
    }

    /// Keeps log entries from `index` on (a standby region still needs
    /// them), unless the log grows more than `dr_log_retain_entries_max`
    /// past it; `0` keeps nothing extra.
    pub fn retain_log_from(&mut self, index: u64) {
        self.log_retain_from = index;
    }

    /// Proposes a region entry (shipping, freeze, promotion, demotion) at the
    /// leader; it completes once applied here, with the region's state after
    /// it, or with why the region refused it.
    pub fn propose_region(&mut self, op: RegionOp) -> Result<ProposalId, ProposalError> {
        self.propose_region_as(op, RegionNote::default())
    }

    /// [`Self::propose_region`], naming who asked and why (the audit trail
    /// records it on every replica).
    pub fn propose_region_as(&mut self, op: RegionOp, note: RegionNote) -> Result<ProposalId, ProposalError> {
        if note.principal.len() > PRINCIPAL_BYTES_MAX || note.reason.len() > REASON_BYTES_MAX {
            return Err(ProposalError::Invalid {
                field: "reason",
                reason: format!("a principal up to {PRINCIPAL_BYTES_MAX} bytes, a reason up to {REASON_BYTES_MAX}"),
            });
        }
        if !self.is_leader() {
            return Err(ProposalError::NotLeader { leader: self.leader() });
        }
        // Checked here too, so a wrong operation fails at once; the entry is
        // checked again when applied, against the state it then meets.
        if !matches!(op, RegionOp::Ship { .. }) {
            next_region(self.region(), &op, self.raw.raft.raft_log.last_index() + 1)
                .map_err(|reason| ProposalError::RegionRefused { op: op.name(), reason })?;
        }
        let id = self.new_id();
        let term = self.raw.raft.term;
        let data = RegionCommand { proposer: self.id(), term, sequence: id, op, note }.encode();
        self.raw.propose(Vec::new(), data).map_err(dropped)?;
        self.waiters.insert(id, Waiter { term });
        Ok(id)
    }

    /// Queues a ledger operation for the next round of group commit. Only
    /// the leader of a writable region accepts proposals; a follower
    /// answers with the leader it knows of, for the caller to forward to.
    pub fn propose(&mut self, operation: Operation) -> Result<ProposalId, ProposalError> {
        self.propose_as(operation, String::new())
    }

    /// [`Self::propose`] for `principal`, whom the entry names with the
    /// batch (at most [`PRINCIPAL_BYTES_MAX`] bytes).
    pub fn propose_as(&mut self, operation: Operation, principal: String) -> Result<ProposalId, ProposalError> {
        if principal.len() > PRINCIPAL_BYTES_MAX {
            return Err(ProposalError::Invalid {
                field: "principal",
                reason: format!("{} bytes, at most {PRINCIPAL_BYTES_MAX}", principal.len()),
            });
        }
        if !self.is_leader() {
            return Err(ProposalError::NotLeader { leader: self.leader() });
        }
        self.writable()?;
        let count = events(&operation);
        if matches!(operation, Operation::ExpirePending) {
            return Err(ProposalError::Invalid {
                field: "operation",
                reason: "expiry is proposed by the leader itself".into(),
            });
        }
        if count > self.config.entry_events_max {
            return Err(ProposalError::TooLarge { events: count, max: self.config.entry_events_max });
        }
        if let Operation::CreateLedgers(ledgers) = &operation {
            if let Some(ledger) = ledgers.iter().find(|l| l.currency.len() > 255 || l.name.len() > 255) {
                return Err(ProposalError::Invalid {
                    field: "ledger",
                    reason: format!("ledger {} has a currency or name longer than 255 bytes", ledger.id.0),
                });
            }
        }
        if self.queue.len() >= self.config.queue_proposals_max {
            return Err(ProposalError::Overloaded {
                queued: self.queue.len(),
                max: self.config.queue_proposals_max,
                unit: "proposals",
            });
        }
        if self.queued_events + count > self.config.queue_events_max {
            return Err(ProposalError::Overloaded {
                queued: self.queued_events,
                max: self.config.queue_events_max,
                unit: "events",
            });
        }
        let id = self.new_id();
        self.queued_events += count;
        self.queue.push_back(Queued { id, operation, principal });
        Ok(id)
    }

    /// Proposes a membership change (joint consensus through
    /// `ConfChangeV2`). Refused while another change is pending, and when
    /// it could not be applied (removing the last voter, promoting or
    /// removing a node that is not a member).
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
        context: Vec<u8>,
        force: bool,
    ) -> Result<ProposalId, ProposalError> {
        if !self.is_leader() {
            return Err(ProposalError::NotLeader { leader: self.leader() });
        }
        if self.raw.raft.has_pending_conf() || self.conf_waiter.is_some() {
            return Err(ProposalError::ConfChangePending);
        }
        let node = change.node();
        if node == 0 {
            return Err(ProposalError::Invalid { field: "node_id", reason: "0 is not a node id".into() });
        }
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let member = conf.voters.contains(&node) || conf.learners.contains(&node);
        match change {
            MembershipChange::AddLearner(_) if member => {
                return Err(ProposalError::Invalid {
                    field: "node_id",
                    reason: format!("node {node} is already a member"),
                });
            }
            MembershipChange::Remove(_) if conf.voters == [node] => {
                return Err(ProposalError::Invalid {
                    field: "node_id",
                    reason: format!("node {node} is the last voter"),
                });
            }
            MembershipChange::Remove(_) | MembershipChange::PromoteVoter(_) if !member => {
                return Err(ProposalError::Invalid {
                    field: "node_id",
                    reason: format!("node {node} is not a member"),
                });
            }
            _ => {}
        }
        if !force {
            self.check_membership_safety(change, &conf)?;
        }
        let last_before = self.raw.raft.raft_log.last_index();
        self.raw.propose_conf_change(context, change.to_conf_change()).map_err(dropped)?;
        if self.raw.raft.raft_log.last_index() == last_before {
            return Err(ProposalError::Dropped { reason: "raft did not append the membership change" });
        }
        let id = self.new_id();
        self.conf_waiter = Some((id, Waiter { term: self.raw.raft.term }));
        Ok(id)
    }

    /// What an operator may only do on purpose (`force`): promote a learner
    /// that has not caught up (it would count towards quorums while it
    /// cannot vote for an up-to-date log), or remove a voter when the voters
    /// left, counting only those heard from recently, are fewer than a
    /// quorum of them plus one (one more failure would stop writes).
    fn check_membership_safety(&self, change: MembershipChange, conf: &ConfState) -> Result<(), ProposalError> {
        let raft = &self.raw.raft;
        match change {
            MembershipChange::PromoteVoter(node) if conf.learners.contains(&node) => {
                let progress = raft.prs().get(node);
                let matched = progress.map_or(0, |progress| progress.matched);
                let heard = progress.is_some_and(|progress| progress.recent_active);
                let last_index = raft.raft_log.last_index();
                // Nothing matched yet: it never answered, however short the log.
                if matched == 0 || !heard || matched.saturating_add(PROMOTE_LAG_ENTRIES_MAX) < last_index {
                    return Err(ProposalError::NotCaughtUp { target: node, matched, last_index });
                }
            }
            MembershipChange::Remove(node) if conf.voters.contains(&node) => {
                let left: Vec<u64> = conf.voters.iter().copied().filter(|voter| *voter != node).collect();
                let live = left
                    .iter()
                    .filter(|voter| {
                        **voter == self.id() || raft.prs().get(**voter).is_some_and(|progress| progress.recent_active)
                    })
                    .count();
                let quorum = left.len() / 2 + 1;
                if live < quorum + 1 {
                    return Err(ProposalError::WouldLoseFaultTolerance { node, voters: left.len(), live, quorum });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Hands leadership to `target` if it is a voter whose log matches the
    /// leader's last index (so the transfer does not stall writes).
    pub fn transfer_leader(&mut self, target: u64) -> Result<(), ProposalError> {
        if !self.is_leader() {
            return Err(ProposalError::NotLeader { leader: self.leader() });
        }
        if target == self.id() {
            return Ok(());
        }
        let raft = &self.raw.raft;
        let last_index = raft.raft_log.last_index();
        if !raft.prs().conf().voters().contains(target) {
            return Err(ProposalError::Invalid { field: "node_id", reason: format!("node {target} is not a voter") });
        }
        let matched = raft.prs().get(target).map_or(0, |pr| pr.matched);
        if matched < last_index {
            return Err(ProposalError::NotCaughtUp { target, matched, last_index });
        }
        self.raw.transfer_leader(target);
        Ok(())
    }

    /// Starts a linearizable read: once it completes with index `i`, the
    /// local state is at or past `i` and reading it reflects every write
    /// acknowledged before the read began.
    pub fn read(&mut self) -> Result<ReadId, ReadError> {
        if self.reads.len() >= self.config.reads_max {
            return Err(ReadError::Overloaded { queued: self.reads.len(), max: self.config.reads_max });
        }
        if self.leader().is_none() {
            return Err(ReadError::NotLeader { leader: None });
        }
        let id = self.new_id();
        self.issue_read(PendingRead { id, attempts: 0, issued_tick: 0, index: None });
        Ok(id)
    }

    /// Sends a ReadIndex request with a context unique on this node (node
    /// id ++ a fresh number), so answers to earlier tries are ignored.
    fn issue_read(&mut self, mut read: PendingRead) {
        let key = self.new_id();
        read.attempts += 1;
        read.issued_tick = self.ticks;
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.id().to_be_bytes());
        context.extend_from_slice(&key.to_be_bytes());
        self.raw.read_index(context);
        self.reads.insert(key, read);
    }

    /// The transport could not reach `peer`.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// The transport finished (or failed) sending a snapshot to `peer`.
    /// Always called after a snapshot message, or Raft never sends `peer`
    /// anything again.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(peer, status);
    }

    /// Runs one round at time `now_ns`: group commit of queued proposals,
    /// a leader's expiry proposal when due, every Ready, read timeouts and
    /// log compaction. Returns what finished. An error means the node must
    /// stop: its storage failed or a committed entry is corrupt.
    pub fn advance(&mut self, now_ns: u64, outbox: &mut impl Outbox) -> Result<Output, ConsensusError> {
        // A node that lost the lead writes what it held before a Ready can
        // bring anything else (a snapshot, entries of the new leader).
        self.settle_held()?;
        if self.is_leader() {
            self.propose_queued(now_ns);
            self.propose_expiry(now_ns)?;
        } else {
            self.refuse_queued();
        }
        for _ in 0..READY_ROUNDS_MAX {
            if !self.raw.has_ready() {
                break;
            }
            self.handle_ready(outbox)?;
        }
        self.settle_held()?;
        self.fail_stale_waiters();
        self.complete_reads();
        self.compact_log()?;
        Ok(std::mem::take(&mut self.output))
    }

    fn stamp(&mut self, now_ns: u64, events: usize) -> u64 {
        let timestamp = now_ns.max(self.last_stamp_ns + 1);
        self.last_stamp_ns = timestamp + events.saturating_sub(1) as u64;
        timestamp
    }

    /// Group commit: packs queued proposals of the same kind, in order, into
    /// entries of at most `entry_events_max` events, and proposes up to
    /// `entries_per_round_max` of them. One Ready then persists them all
    /// with one synced write.
    fn propose_queued(&mut self, now_ns: u64) {
        let term = self.raw.raft.term;
        for _ in 0..self.config.entries_per_round_max {
            let Some(first) = self.queue.pop_front() else { break };
            let mut count = events(&first.operation);
            self.queued_events -= count;
            let mut parts = vec![Part { sequence: first.id, events: count as u32, principal: first.principal }];
            let mut operation = first.operation;
            while let Some(next) = self.queue.front() {
                let next_count = events(&next.operation);
                if ends_linked(&operation) || count + next_count > self.config.entry_events_max {
                    break;
                }
                let Some(next) = self.queue.pop_front() else { break };
                match merge(&mut operation, next.operation) {
                    Ok(()) => {
                        count += next_count;
                        self.queued_events -= next_count;
                        parts.push(Part { sequence: next.id, events: next_count as u32, principal: next.principal });
                    }
                    Err(operation) => {
                        self.queue.push_front(Queued { id: next.id, operation, principal: next.principal });
                        break;
                    }
                }
            }
            let timestamp = self.stamp(now_ns, count);
            let command = Command { timestamp, proposer: self.id(), term, parts, operation };
            let result =
                command.encode().map_err(|error| ProposalError::Invalid { field: error.field, reason: error.reason });
            let result = result.and_then(|data| self.raw.propose(Vec::new(), data).map_err(dropped));
            for part in &command.parts {
                match &result {
                    Ok(()) => {
                        self.waiters.insert(part.sequence, Waiter { term });
                    }
                    Err(error) => self.complete_proposal(part.sequence, Err(error.clone())),
                }
            }
        }
    }

    /// Proposes expiry of pending transfers when the interval has passed and
    /// something is due: every replica then expires the same transfers at
    /// the same index, whatever its own clock says.
    fn propose_expiry(&mut self, now_ns: u64) -> Result<(), ConsensusError> {
        // A standby expires what its primary expired, by shipping.
        if now_ns < self.next_expiry_ns || self.writable().is_err() {
            return Ok(());
        }
        self.next_expiry_ns = now_ns.saturating_add(self.config.expiry_interval_ns);
        let due = self.storage().ledger().expiring(now_ns, 1).map_err(store_error)?;
        if due.is_empty() {
            return Ok(());
        }
        let timestamp = self.stamp(now_ns, 1);
        let command = Command {
            timestamp,
            proposer: 0,
            term: self.raw.raft.term,
            parts: Vec::new(),
            operation: Operation::ExpirePending,
        };
        let data = command.encode().map_err(|source| ConsensusError::CorruptEntry { index: 0, source })?;
        // A dropped expiry is proposed again next interval.
        let _ = self.raw.propose(Vec::new(), data);
        Ok(())
    }

    /// A node that is not the leader (any more) hands queued proposals back.
    fn refuse_queued(&mut self) {
        let leader = self.leader();
        while let Some(queued) = self.queue.pop_front() {
            self.complete_proposal(queued.id, Err(ProposalError::NotLeader { leader }));
        }
        self.queued_events = 0;
    }

    /// Proposals appended in a term this node no longer leads may still
    /// commit, or may be overwritten: their proposers learn the outcome by
    /// retrying with the same ids.
    fn fail_stale_waiters(&mut self) {
        let term = self.raw.raft.term;
        let leading = self.is_leader();
        let stale: Vec<ProposalId> =
            self.waiters.iter().filter(|(_, waiter)| !leading || waiter.term != term).map(|(&id, _)| id).collect();
        for id in stale {
            self.waiters.remove(&id);
            self.complete_proposal(id, Err(ProposalError::LeadershipLost));
        }
        if let Some((id, waiter)) = self.conf_waiter {
            if !leading || waiter.term != term {
                self.conf_waiter = None;
                self.complete_proposal(id, Err(ProposalError::LeadershipLost));
            }
        }
        if !leading {
            self.refuse_queued();
        }
    }

    fn complete_proposal(&mut self, id: ProposalId, result: Result<Applied, ProposalError>) {
        self.output.completions.push(Completion::Proposal { id, result });
    }

    /// The Ready loop, in the order raft-rs documents.
    fn handle_ready(&mut self, outbox: &mut impl Outbox) -> Result<(), ConsensusError> {
        let mut ready = self.raw.ready();

        // 1. A leader's messages go out before its own write: the leader
        //    counts itself toward a commit only once its write is done, so
        //    this is safe, and the followers' fsyncs overlap the leader's
        //    (Raft thesis §10.2.1). raft-rs puts a follower's messages in
        //    `persisted_messages` instead.
        if !ready.messages().is_empty() {
            outbox.send(ready.take_messages());
        }

        // 2. A snapshot from the leader replaces the state before anything
        //    after it is applied or appended.
        if !ready.snapshot().is_empty() {
            let meta = ready.snapshot().get_metadata().clone();
            self.raw.mut_store().install_snapshot(&meta)?;
            self.output.snapshot_installed = Some(meta.index);
        }

        // 3. Committed entries: raft-rs only hands out entries this node has
        //    already persisted and a quorum holds, so they may be applied
        //    before or after this Ready's write. They are applied last (step
        //    8): a follower's append responses then go out before an apply
        //    that may take tens of milliseconds, and the leader commits the
        //    next entries meanwhile.
        let mut committed = ready.take_committed_entries();

        // 4. Reads whose index the leader confirmed.
        for state in ready.take_read_states() {
            let key = state.request_ctx.get(8..16).and_then(|bytes| bytes.try_into().ok()).map(u64::from_be_bytes);
            if let Some(read) = key.and_then(|key| self.reads.get_mut(&key)) {
                read.index = Some(state.index);
            }
        }

        // 5. New entries and the hard state in ONE write, synced when raft
        //    says it must be (new entries, a vote or a term change) and not
        //    for a commit index alone, which raft can learn again.
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        if !entries.is_empty() || hard_state.is_some() {
            self.raw.mut_store().append(&entries, hard_state.as_ref(), ready.must_sync())?;
        }

        // 6. Only now the messages that promise what was just persisted (a
        //    follower's append responses and votes).
        if !ready.persisted_messages().is_empty() {
            outbox.send(ready.take_persisted_messages());
        }

        // 7. The LightReady: what became true once the write was done — a
        //    new commit index, messages, more committed entries.
        let mut light = self.raw.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        if !light.messages().is_empty() {
            outbox.send(light.take_messages());
        }

        // 8. Apply what was committed, this Ready's entries and then the
        //    LightReady's (one run may span both), after any a follower
        //    held back, unless a follower may hold these back too; write
        //    the batches a leader prepared unless it may hold them; then
        //    tell raft how far the state machine got, so it can hand out
        //    the next committed entries and release a pending conf change.
        committed.extend(light.take_committed_entries());
        if self.deferred.is_empty() {
            self.deferred_since = self.ticks;
        }
        self.deferred.extend(committed);
        if !self.may_defer_apply() {
            let entries = std::mem::take(&mut self.deferred);
            self.apply_entries(entries)?;
        }
        self.settle_held()?;
        let applied = self.storage().applied().index;
        self.raw.advance_apply_to(applied);
        Ok(())
    }

    /// Whether a follower may leave its committed entries unapplied for
    /// now.
    ///
    /// Every batch applied in a run of its own writes the accounts it
    /// touched and a history group per account; in one run of several
    /// batches each account is written (and hashed) once. The leader
    /// prepares and answers each batch at once and holds the writes (see
    /// [`Self::may_hold`]). Nobody waits for a follower's apply: a
    /// follower holds transfer batches back until its pending
    /// entries reach the next multiple of [`FOLLOWER_APPLY_SPAN`] (shifted
    /// by its rank among the followers), then applies them as runs of up
    /// to [`RUN_BATCHES_MAX`]. An apply takes the driver thread for a while,
    /// during which the follower acknowledges no appends; the shift makes
    /// the followers take turns, so a quorum keeps acknowledging while one
    /// of them applies.
    ///
    /// Everything is applied at once when the node is not a follower, when
    /// a read waits, when anything but a transfer batch is pending (a
    /// membership or region change, a leader's empty entry, another ledger
    /// command), or when the first of them has waited
    /// [`ConsensusConfig::apply_hold_ticks`] (the load paused: a heartbeat
    /// then brings the follower up to date). Held entries stay in the Raft
    /// log, which is never compacted past the applied index, so a crash
    /// loses nothing.
    fn may_defer_apply(&self) -> bool {
        let raft = &self.raw.raft;
        let overdue = self.ticks >= self.deferred_since + self.config.apply_hold_ticks;
        if overdue || raft.state != StateRole::Follower || !self.reads.is_empty() {
            return false;
        }
        let transfer_batches =
            |entry: &Entry| entry.get_entry_type() == EntryType::EntryNormal && is_transfer_batch(&entry.data);
        let (Some(first), Some(last)) = (self.deferred.first(), self.deferred.last()) else { return false };
        if !self.deferred.iter().all(transfer_batches) {
            return false;
        }
        let mut followers: Vec<u64> =
            raft.prs().conf().voters().ids().iter().filter(|id| *id != raft.leader_id).collect();
        followers.sort_unstable();
        let rank = followers.iter().position(|id| *id == self.id()).unwrap_or(0) as u64;
        let shift = rank * FOLLOWER_APPLY_SPAN / followers.len().max(1) as u64;
        let span = |index: u64| (index + shift) / FOLLOWER_APPLY_SPAN;
        span(last.index) == span(first.index.saturating_sub(1))
    }

    /// Whether the leader may leave the transfer batches it prepared and
    /// answered unwritten for now, to write more of them in one run.
    ///
    /// A batch's results are final once computed: its entry is committed,
    /// and every replica computes the same results from the same log. So
    /// the leader answers each batch as soon as it is prepared (against the
    /// state plus the batches it holds) and writes them together, each
    /// account once, when [`RUN_BATCHES_MAX`] entries are held, before any
    /// other entry, or as soon as it may no longer hold:
    /// - it is not the leader any more;
    /// - a read waits (reads wait for the applied index, which moves only
    ///   with the write);
    /// - a standby region ships from this node (it ships applied entries,
    ///   and its lag bound counts from the apply);
    /// - the first of them has waited [`ConsensusConfig::apply_hold_ticks`]
    ///   (the load paused).
    ///
    /// A crash before the write loses nothing: the entries are in the Raft
    /// log, which is never compacted past the applied index, and are
    /// applied again, to the same results, on restart. Other nodes do not
    /// hold prepared batches: a follower holds its entries unprepared (see
    /// [`Self::may_defer_apply`]). With nothing held there is nothing to
    /// write, so the answer is yes.
    fn may_hold(&self) -> bool {
        let Some(held) = &self.held else { return true };
        let raft = &self.raw.raft;
        raft.state == StateRole::Leader
            && self.reads.is_empty()
            && self.log_retain_from == 0
            && self.ticks < held.since + self.config.apply_hold_ticks
    }

    /// Applies committed entries in order. Consecutive transfer batches are
    /// prepared one after another into one run (see [`Self::prepare_held`]),
    /// which is written before any other entry, and every other entry
    /// alone.
    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), ConsensusError> {
        for entry in &entries {
            if entry.index <= self.storage().applied().index {
                // Already in the state (it came with a snapshot).
                continue;
            }
            let region = self.storage().applied().region;
            let applied = AppliedState { index: entry.index, term: entry.term, region };
            match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.data.is_empty() && !is_region_entry(&entry.data) => {
                    let command = Command::decode(&entry.data)
                        .map_err(|source| ConsensusError::CorruptEntry { index: entry.index, source })?;
                    if matches!(command.operation, Operation::CreateTransfers(_)) && self.writable().is_ok() {
                        self.prepare_held(entry, applied, command)?;
                        continue;
                    }
                    self.write_held()?;
                    self.apply_command(entry, applied, command)?;
                }
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.write_held()?;
                    // A new leader's empty entry.
                    self.raw.mut_store().apply(None, applied, None)?;
                }
                EntryType::EntryNormal => {
                    self.write_held()?;
                    self.apply_region(entry, applied)?;
                }
                EntryType::EntryConfChange => {
                    self.write_held()?;
                    let change = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|error| corrupt(entry.index, "conf_change", error))?;
                    self.apply_conf_change(entry, applied, conf_change_v2(&change))?;
                }
                EntryType::EntryConfChangeV2 => {
                    self.write_held()?;
                    let change = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|error| corrupt(entry.index, "conf_change_v2", error))?;
                    self.apply_conf_change(entry, applied, change)?;
                }
            }
        }
        Ok(())
    }

    /// Prepares the transfer batch of `entry` (a writable region's) against
    /// the state plus the batches held before it, exactly as if those were
    /// written already, answers its proposers, and holds its write set with
    /// theirs; writes them all once [`RUN_BATCHES_MAX`] entries are held.
    fn prepare_held(&mut self, entry: &Entry, applied: AppliedState, command: Command) -> Result<(), ConsensusError> {
        self.metrics.entry_events.record(events(&command.operation) as f64);
        let base = self.raw.store().ledger();
        let (mut run, mut audit, entries, since) = match self.held.take() {
            Some(held) => (Run::resume(base, held.run), held.audit, held.entries, held.since),
            None => (Run::expecting(base, RUN_BATCHES_MAX), Vec::new(), 0, self.ticks),
        };
        let results = match prepare_at(&run, entry.index, &command)? {
            Ok((results, write_set)) => {
                audit.extend(audit_records(entry.index, &command, Some(&write_set)));
                run.push(write_set).map_err(|source| ConsensusError::Apply {
                    index: entry.index,
                    source: ApplyError::Store(source),
                })?;
                Ok(results)
            }
            Err(refused) => {
                audit.extend(audit_records(entry.index, &command, None));
                Err(refused)
            }
        };
        let entries = entries + 1;
        self.held = Some(Held { run: run.suspend(), applied, audit, entries, since });
        self.answer(entry.index, &command, results);
        if entries == RUN_BATCHES_MAX {
            self.write_held()?;
        }
        Ok(())
    }

    /// Writes the held batches (see [`Self::may_hold`]), if any: their
    /// merged write set, their audit records and the last one's applied
    /// index in one write. Reads then see the state after all of them.
    fn write_held(&mut self) -> Result<(), ConsensusError> {
        let Some(held) = self.held.take() else { return Ok(()) };
        let write_set = Run::resume(self.raw.store().ledger(), held.run)
            .into_write_set()
            .map_err(|source| ConsensusError::Apply { index: held.applied.index, source: ApplyError::Store(source) })?;
        self.raw.mut_store().apply_audited(write_set.as_ref(), held.applied, &held.audit)?;
        // The merged write set counts every held batch's warnings.
        self.count_budget_warnings(write_set.as_ref());
        Ok(())
    }

    /// Counts the budget warnings of a write set just written.
    fn count_budget_warnings(&self, write_set: Option<&coffer_ledger::WriteSet>) {
        if let Some(warnings) = write_set.map(|write_set| write_set.budget_warnings).filter(|n| *n > 0) {
            self.metrics.budget_warnings.increment(u64::from(warnings));
        }
    }

    /// Writes the held batches unless the node may keep holding them (see
    /// [`Self::may_hold`]).
    fn settle_held(&mut self) -> Result<(), ConsensusError> {
        if self.may_hold() {
            return Ok(());
        }
        self.write_held()
    }

    /// Applies one ledger command: the state machine decides the results;
    /// its changes and the applied index go in one write.
    fn apply_command(&mut self, entry: &Entry, applied: AppliedState, command: Command) -> Result<(), ConsensusError> {
        self.metrics.entry_events.record(events(&command.operation) as f64);
        let (results, write_set) = match self.writable() {
            Ok(()) => match self.prepare_command(entry.index, &command)? {
                Ok((results, write_set)) => (Ok(results), Some(write_set)),
                Err(refused) => (Err(refused), None),
            },
            // Queued before the region froze or was demoted: refused by every
            // replica alike; the entry changes nothing but the applied index.
            Err(not_writable) => (Err(not_writable), None),
        };
        let audit = audit_records(entry.index, &command, write_set.as_ref());
        self.raw.mut_store().apply_audited(write_set.as_ref(), applied, &audit)?;
        self.count_budget_warnings(write_set.as_ref());
        self.answer(entry.index, &command, results);
        Ok(())
    }

    /// Answers the proposals of this node that the applied entry `index`
    /// (`command`) carried, each with its slice of `results`.
    fn answer(&mut self, index: u64, command: &Command, results: Result<OperationResults, ProposalError>) {
        if command.proposer != self.id() {
            return;
        }
        let mut start = 0;
        for part in &command.parts {
            let len = part.events as usize;
            let mine = self.waiters.get(&part.sequence).is_some_and(|waiter| waiter.term == command.term);
            if mine {
                self.waiters.remove(&part.sequence);
                let result = match &results {
                    Ok(all) => Ok(Applied { index, outcome: Outcome::Operation(slice_results(all, start, len)) }),
                    Err(error) => Err(error.clone()),
                };
                self.complete_proposal(part.sequence, result);
            }
            start += len;
        }
    }

    /// Runs the state machine on a ledger command against the state (see
    /// [`prepare_at`]).
    #[allow(clippy::type_complexity)]
    fn prepare_command(
        &self,
        index: u64,
        command: &Command,
    ) -> Result<Result<(OperationResults, coffer_ledger::WriteSet), ProposalError>, ConsensusError> {
        prepare_at(self.raw.store().ledger(), index, command)
    }

    /// Applies a region entry: the region's next state (or the refusal,
    /// which changes nothing but the applied index) and, for a shipped
    /// entry, its ledger effects, all in one write.
    fn apply_region(&mut self, entry: &Entry, mut applied: AppliedState) -> Result<(), ConsensusError> {
        let command = RegionCommand::decode(&entry.data)
            .map_err(|source| ConsensusError::CorruptEntry { index: entry.index, source })?;
        let region = self.region();
        let mut shipped = None;
        let result = match next_region(region, &command.op, entry.index) {
            Ok(mut next) => {
                match &command.op {
                    RegionOp::Ship { data, index, .. } => {
                        shipped = self.shipped_effects(entry.index, *index, data, &mut next)?;
                    }
                    RegionOp::Promote { .. } => {
                        next.base_timestamp = self.storage().ledger().last_timestamp().map_err(store_error)?;
                    }
                    _ => {}
                }
                applied.region = next;
                Ok(next)
            }
            Err(reason) => Err(ProposalError::RegionRefused { op: command.op.name(), reason }),
        };
        if let Err(error) = &result {
            tracing::debug!(node = self.id(), index = entry.index, %error, "region entry refused");
        }
        let (write_set, mut audit) = shipped.map_or((None, Vec::new()), |(write_set, audit)| (Some(write_set), audit));
        audit.extend(region_audit(entry.index, &command, result.is_ok()));
        self.raw.mut_store().apply_audited(write_set.as_ref(), applied, &audit)?;
        if command.proposer == self.id()
            && self.waiters.get(&command.sequence).is_some_and(|waiter| waiter.term == command.term)
        {
            self.waiters.remove(&command.sequence);
            let result = result.map(|next| Applied { index: entry.index, outcome: Outcome::Region(next) });
            self.complete_proposal(command.sequence, result);
        }
        Ok(())
    }

    /// The ledger effects of the primary's entry `source_index` (payload
    /// `data`), shipped in this region's entry `index`: exactly what the
    /// primary applied. A ledger command is applied unless the primary had
    /// frozen its writes by then (it refused it too); the primary's own
    /// freeze, unfreeze and demotion are noted in `next.source_frozen`; the
    /// rest (empty entries, membership changes, entries a primary refused
    /// such as a late shipped entry) change nothing.
    fn shipped_effects(
        &self,
        index: u64,
        source_index: u64,
        data: &[u8],
        next: &mut RegionState,
    ) -> Result<Option<(coffer_ledger::WriteSet, Vec<AuditRecord>)>, ConsensusError> {
        if data.is_empty() {
            return Ok(None);
        }
        let corrupt_shipped = |source: crate::command::CommandError| ConsensusError::CorruptEntry {
            index,
            source: crate::command::CommandError {
                field: source.field,
                reason: format!("shipped entry {source_index}: {}", source.reason),
            },
        };
        if is_region_entry(data) {
            match RegionCommand::decode(data).map_err(corrupt_shipped)?.op {
                RegionOp::Freeze | RegionOp::Demote { .. } => next.source_frozen = true,
                RegionOp::Unfreeze => next.source_frozen = false,
                RegionOp::Ship { .. } | RegionOp::Promote { .. } | RegionOp::Lease { .. } => {}
            }
            return Ok(None);
        }
        if next.source_frozen {
            return Ok(None);
        }
        let command = Command::decode(data).map_err(corrupt_shipped)?;
        Ok(self.prepare_command(index, &command)?.ok().map(|(_, write_set)| {
            let audit = audit_records(index, &command, Some(&write_set));
            (write_set, audit)
        }))
    }

    fn apply_conf_change(
        &mut self,
        entry: &Entry,
        applied: AppliedState,
        change: ConfChangeV2,
    ) -> Result<(), ConsensusError> {
        let conf_state = self.raw.apply_conf_change(&change)?;
        // The addresses an addition carries (its context) are kept with the
        // configuration, and a removal forgets them.
        let members: Vec<(u64, Option<Vec<u8>>)> = change
            .get_changes()
            .iter()
            .filter_map(|single| match single.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    (!entry.context.is_empty()).then(|| (single.node_id, Some(entry.context.to_vec())))
                }
                ConfChangeType::RemoveNode => Some((single.node_id, None)),
            })
            .collect();
        self.raw.mut_store().apply_membership(applied, &conf_state, &members)?;
        if let Some((id, waiter)) = self.conf_waiter {
            if waiter.term == entry.term {
                self.conf_waiter = None;
                self.complete_proposal(
                    id,
                    Ok(Applied { index: entry.index, outcome: Outcome::Membership(conf_state.clone()) }),
                );
            }
        }
        // A change that entered a joint configuration with auto-leave: the
        // leader proposes the empty change that leaves it.
        if conf_state.auto_leave && self.is_leader() {
            let _ = self.raw.propose_conf_change(Vec::new(), ConfChangeV2::default());
        }
        // raft-rs 0.7 keeps a leader that applied its own removal leading,
        // without a progress of its own, and panics (an unwrap in
        // `maybe_commit`) at its next commit. It steps down instead; the
        // remaining voters elect a leader. Found by the simulator.
        let voter = conf_state.voters.iter().chain(&conf_state.voters_outgoing).any(|&id| id == self.id());
        if self.is_leader() && !voter {
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
            self.draw_election_timeout();
        }
        self.output.membership.push(MembershipApplied {
            index: entry.index,
            change,
            context: entry.context.to_vec(),
            conf_state,
        });
        Ok(())
    }

    /// Completes reads whose index is applied; retries or fails reads that
    /// waited too long (a leader change drops ReadIndex requests silently).
    fn complete_reads(&mut self) {
        let applied = self.storage().applied().index;
        let ticks = self.ticks;
        let timeout = self.config.read_timeout_ticks as u64;
        let done: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.index.is_some_and(|index| index <= applied) || ticks >= read.issued_tick + timeout)
            .map(|(&key, _)| key)
            .collect();
        let mut keys = done;
        keys.sort_unstable();
        for key in keys {
            let Some(read) = self.reads.remove(&key) else { continue };
            match read.index {
                Some(index) if index <= applied => {
                    self.output.completions.push(Completion::Read { id: read.id, result: Ok(index) });
                }
                _ if read.attempts < self.config.read_attempts_max && self.leader().is_some() => {
                    self.issue_read(read);
                }
                _ => {
                    let error = if self.leader().is_none() {
                        ReadError::NotLeader { leader: None }
                    } else {
                        ReadError::Timeout { attempts: read.attempts }
                    };
                    self.output.completions.push(Completion::Read { id: read.id, result: Err(error) });
                }
            }
        }
    }

    /// Compacts the log once `log_gc_threshold_entries` applied entries
    /// accumulate. The leader keeps what every peer that is not far behind
    /// still needs; a peer further behind gets a snapshot. The log is never
    /// compacted past the newest snapshot, so Raft can always send a peer
    /// what the log no longer holds; a newer snapshot is started when one
    /// is needed (off the Raft thread on disk) and compaction goes on once
    /// it is made.
    fn compact_log(&mut self) -> Result<(), ConsensusError> {
        self.raw.mut_store().snapshot_finished()?;
        let applied = self.storage().applied().index;
        if self.storage().snapshot_requested() && applied > self.storage().snapshot_index() {
            self.raw.mut_store().start_snapshot()?;
        }
        let first = self.storage().log_first_index();
        let threshold = self.config.log_gc_threshold_entries;
        if applied < first + threshold {
            return Ok(());
        }
        let mut target = (applied + 1).saturating_sub(self.config.log_gc_keep_entries);
        let retain = self.log_retain_from;
        if retain != 0 && applied.saturating_sub(retain) <= self.config.dr_log_retain_entries_max {
            target = target.min(retain);
        }
        if self.is_leader() {
            let me = self.id();
            for (&id, pr) in self.raw.raft.prs().iter() {
                let close_enough = pr.matched + threshold >= applied;
                if id != me && close_enough {
                    target = target.min(pr.matched + 1);
                }
            }
        }
        if self.storage().snapshot_index() + 1 < target {
            // Made off this thread where the storage can: until it is, the
            // log keeps what the newest snapshot does not cover.
            self.raw.mut_store().start_snapshot()?;
            target = target.min(self.storage().snapshot_index() + 1);
        }
        if target <= first {
            return Ok(());
        }
        self.raw.mut_store().compact(target)?;
        Ok(())
    }
}

/// A v1 conf change as the one-change `ConfChangeV2` it stands for (Coffer
/// proposes only v2; raft-rs may still hand a v1 entry to apply).
fn conf_change_v2(change: &ConfChange) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(change.get_change_type());
    single.node_id = change.node_id;
    let mut v2 = ConfChangeV2::default();
    v2.set_changes(vec![single].into());
    v2
}

fn dropped(error: raft::Error) -> ProposalError {
    match error {
        raft::Error::ProposalDropped => ProposalError::Dropped {
            reason: "a leader transfer is under way or the uncommitted-bytes bound was reached",
        },
        _ => ProposalError::Dropped { reason: "raft refused the proposal" },
    }
}

fn corrupt(index: u64, field: &'static str, error: impl std::fmt::Display) -> ConsensusError {
    ConsensusError::CorruptEntry { index, source: crate::command::CommandError { field, reason: error.to_string() } }
}

fn store_error(error: coffer_ledger::StoreError) -> ConsensusError {
    ConsensusError::Apply { index: 0, source: ApplyError::Store(error) }
}

/// Whether a message carries a snapshot (the transport streams its data
/// beside it).
pub fn is_snapshot(message: &Message) -> bool {
    message.get_msg_type() == MessageType::MsgSnapshot
}
