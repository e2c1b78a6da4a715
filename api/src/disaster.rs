//! Disaster-recovery operations across the two regions, as a library (the
//! `coffer dr` commands parse arguments, call these and print the reports).
//!
//! Each operation finds both regions from the addresses of either (every
//! node's DR status names the other region's addresses) and composes the
//! region operations of `coffer.dr.v1.DrService` at each region's leader,
//! following a leader change (a node that no longer leads answers
//! `UNAVAILABLE`, naming the leader) until the operation's deadline:
//!
//! - [`Operator::status`]: both regions' role, epoch, lag, lease and shipping.
//! - [`Operator::switchover`]: freeze the primary, wait until the standby
//!   applied its last index, compare state digests, promote the standby,
//!   demote the old primary to follow it, require the write lease again (RPO
//!   0). A failure before the promotion unfreezes the primary and says so.
//! - [`Operator::failover`]: promote the standby at its cursor once every
//!   lease it granted lapsed (or at once, forced); report the index gap and,
//!   if the old primary answers, the transfers it committed past that point.
//! - [`Operator::failback`]: the old primary rejoins as the new primary's
//!   standby (it must hold exactly the state the new primary was promoted
//!   with, or be re-seeded), catches up, and a switchover moves the primary
//!   role back.
//! - [`Operator::drill`]: a switchover, or a failover (with a link cut) and
//!   optionally a failback, under a light write load, with a timeline, the
//!   measured RPO and RTO, a digest comparison and a verdict.
//!
//! Every operation records what it did in a [`Timeline`]; an observer given
//! to [`Timeline::observed`] sees each step as it happens (the command line
//! prints them; a test may act between two steps).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use coffer_consensus::RegionRole;
use coffer_dr::core::{Epoch, LogIndex};
use coffer_dr::proto::dr_service_client::DrServiceClient;
use coffer_dr::proto::{
    CheckpointRequest, DemoteRequest, DigestRequest, DigestResponse, DrStatusRequest, DrStatusResponse, FreezeRequest,
    IsolateRequest, LeaseRequest, PromoteRequest, RegionResponse, ReseedRequest, UnfreezeRequest,
};
use coffer_dr::{role_from_name, RegionRefusal};
use coffer_ledger::{
    Account, AccountId, AccountKind, CreateTransferResult, Ledger, LedgerId, Transfer, TransferId, TransferKind,
    TransferQuery,
};
use coffer_security::Security;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::{Client, ClientConfig};

/// How long one DR call may take.
const CALL_TIMEOUT_MS: u64 = 10_000;

/// How long to wait for a connection.
const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// How often progress is polled.
const POLL_MS: u64 = 50;

/// Transfers an error message names at most.
const LISTED_MAX: usize = 10;

/// What the drill's clock may add to the RPO it measures: it stamps an
/// acknowledgement when the answer reaches it, a round trip after the
/// primary decided it.
const RPO_SLACK_MS: u64 = 100;

/// The goal for a switchover's write pause.
const SWITCHOVER_PAUSE_GOAL_MS: u64 = 5_000;

/// The drill's ledger and accounts (created idempotently).
const DRILL_LEDGER: LedgerId = LedgerId(4_000_000_001);

const DRILL_DEBIT: AccountId = AccountId(4_000_000_001_001);

const DRILL_CREDIT: AccountId = AccountId(4_000_000_001_002);

/// `coffer dr unfreeze`
#[derive(Debug, Clone, clap::Args)]
pub struct UnfreezeArgs {
    /// Why (the audit trail records it with who unfroze the region).
    #[arg(long)]
    pub reason: String,
}

/// What `coffer dr lease` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeaseAction {
    /// The primary writes without a lease. Only when the standby region is
    /// known lost: a standby promoted meanwhile would write too.
    Waive,
    /// The primary writes only under its standby's lease again.
    Require,
}

/// `coffer dr lease`
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    /// waive or require.
    #[arg(value_enum)]
    pub action: LeaseAction,
    /// Why (required to waive: the audit trail records it with who waived).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `coffer dr reseed`
#[derive(Debug, Clone, clap::Args)]
pub struct ReseedArgs {
    /// How long the re-seeded region may take to restart and catch up (ms).
    #[arg(long, default_value_t = 60_000)]
    pub catch_up_timeout_ms: u64,
}

/// `coffer dr switchover`
#[derive(Debug, Clone, clap::Args)]
pub struct SwitchoverArgs {
    /// Refuse when the standby lags more entries than this.
    #[arg(long, default_value_t = 10_000)]
    pub max_lag: u64,
    /// How long the standby may take to catch up once writes are frozen (ms).
    #[arg(long, default_value_t = 30_000)]
    pub catch_up_timeout_ms: u64,
}

/// `coffer dr failover`
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Promote at once, even while the primary may hold a write lease or is
    /// reachable: the operator vouches it is down or fenced.
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why (required with --force: the audit trail records it, with who
    /// forced the promotion, on every node).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// When the old primary answers and holds a lease, wait for it to lapse
    /// (its link to this region is cut) instead of refusing.
    #[arg(long)]
    pub wait_lease: bool,
}

/// `coffer dr failback`
#[derive(Debug, Clone, clap::Args)]
pub struct FailbackArgs {
    /// Only rejoin the old primary as standby; keep the primary role where it is.
    #[arg(long)]
    pub no_switchover: bool,
    /// How long the old primary may take to catch up (ms).
    #[arg(long, default_value_t = 60_000)]
    pub catch_up_timeout_ms: u64,
    /// If the old primary diverged (it committed writes the new primary does
    /// not hold: list them first with `coffer dr reconcile`), discard its
    /// state and re-seed it from a checkpoint of the new primary.
    #[arg(long)]
    pub reseed: bool,
}

/// Which drill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// A planned switchover.
    #[default]
    Switchover,
    /// The primary region cut off, then a failover.
    Failover,
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Switchover => "switchover",
            Self::Failover => "failover",
        })
    }
}

/// `coffer dr drill`
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// The scenario.
    #[arg(long, value_enum, default_value_t = Scenario::Switchover)]
    pub scenario: Scenario,
    /// After a failover, fail back to the original region.
    #[arg(long)]
    pub failback: bool,
    /// Write transfers during the drill (batches of 10), per second.
    #[arg(long, default_value_t = 0)]
    pub load: u32,
    /// Run the load this long before the operation (ms).
    #[arg(long, default_value_t = 2_000)]
    pub warmup_ms: u64,
}

/// Why a DR operation failed. Each says whether anything changed: the
/// refusals before a first step change nothing; [`DrError::Partial`] says
/// what a multi-step operation did or undid.
#[derive(Debug, thiserror::Error)]
pub enum DrError {
    /// A node or region could not be reached (nothing was asked of it).
    #[error("{0}")]
    Unreachable(String),
    /// A region has no reachable leader.
    #[error("region {region} ({addresses}) has no reachable leader: {detail}")]
    NoLeader {
        /// The region.
        region: String,
        /// Its nodes' addresses.
        addresses: String,
        /// What its nodes answered.
        detail: String,
    },
    /// A node refused a DR operation.
    #[error("{operation} at {address}: {code:?}: {message}")]
    Refused {
        /// The operation (`Freeze`, `Promote`, ...).
        operation: String,
        /// The node asked.
        address: String,
        /// The gRPC code.
        code: Code,
        /// The node's message.
        message: String,
        /// The reason a program acts on, when the node gave one.
        reason: Option<RegionRefusal>,
    },
    /// The regions are not in a state the operation starts from (or its
    /// input is wrong): nothing changed.
    #[error("{0}")]
    Precondition(String),
    /// A wait reached the operation's deadline.
    #[error("timed out after {after_ms} ms waiting for {what} ({last})")]
    TimedOut {
        /// What was awaited.
        what: String,
        /// The deadline.
        after_ms: u64,
        /// The last state seen.
        last: String,
    },
    /// The two regions' state digests differ where they must be equal.
    #[error("state digests differ: {0}")]
    DigestsDiffer(String),
    /// A ledger call (the drill's load, listing transfers) failed.
    #[error("{what}: {detail}")]
    Ledger {
        /// The call.
        what: String,
        /// Its error.
        detail: String,
    },
    /// A failback found the old primary diverged: it committed transfers
    /// the new primary does not hold, and stays frozen.
    #[error(
        "{region} diverged from {primary}: it committed {count} transfers the new primary does not hold ({listed}); it \
         stays frozen. Reconcile them, then re-seed it from the new primary with `coffer dr failback --reseed`"
    )]
    Diverged {
        /// The old primary.
        region: String,
        /// The new primary.
        primary: String,
        /// How many transfers.
        count: usize,
        /// The first of them, in words.
        listed: String,
    },
    /// A multi-step operation failed partway: the step's error and what the
    /// operation did about it (undone, or left for the operator).
    #[error("{error}; {outcome}")]
    Partial {
        /// The step's error.
        error: Box<DrError>,
        /// What was done or left.
        outcome: String,
    },
    /// The drill ran but failed its checks (the report says why).
    #[error("drill FAILED: {0}")]
    Verdict(String),
    /// The report could not be written out.
    #[error("writing the report: {0}")]
    Output(String),
}

fn ledger_error(what: &str, error: impl std::fmt::Display) -> DrError {
    DrError::Ledger { what: what.to_owned(), detail: error.to_string() }
}

/// A node's DR status, as answered.
#[derive(Debug, Clone)]
struct NodeStatus {
    address: String,
    status: DrStatusResponse,
}

impl NodeStatus {
    fn region(&self) -> coffer_dr::proto::RegionInfo {
        self.status.region.clone().unwrap_or_default()
    }

    /// The role this node reports for its region, parsed once here.
    fn role(&self) -> Option<RegionRole> {
        self.status.region.as_ref().and_then(|region| role_from_name(&region.role))
    }
}

/// One region as its nodes answered.
#[derive(Debug, Clone)]
struct Region {
    name: String,
    addresses: Vec<String>,
    leader: Option<NodeStatus>,
    errors: Vec<String>,
    peer_addresses: Vec<String>,
    /// The other region's name, as this region's nodes are configured.
    peer_name: String,
}

impl Region {
    fn leader(&self) -> Result<&NodeStatus, DrError> {
        self.leader.as_ref().ok_or_else(|| DrError::NoLeader {
            region: self.name.clone(),
            addresses: self.addresses.join(","),
            detail: self.errors.join("; "),
        })
    }

    /// The role its leader reports; `None` when it has no reachable leader
    /// (or one reports a role this build does not know).
    fn role(&self) -> Option<RegionRole> {
        self.leader.as_ref().and_then(|leader| leader.role())
    }

    /// The role as printed: its name, or `unreachable`.
    fn role_text(&self) -> String {
        self.leader.as_ref().map(|leader| leader.region().role).unwrap_or_else(|| "unreachable".into())
    }

    fn epoch(&self) -> u64 {
        self.leader.as_ref().map_or(0, |leader| leader.region().epoch)
    }
}

fn rpc_error(what: &str, address: &str, status: &Status) -> DrError {
    DrError::Refused {
        operation: what.to_owned(),
        address: address.to_owned(),
        code: status.code(),
        message: status.message().to_owned(),
        reason: RegionRefusal::of(status),
    }
}

/// (primary, other): the primary of the highest epoch.
fn primary_first(a: Region, b: Region) -> Result<(Region, Region), DrError> {
    let primary = |region: &Region| region.role() == Some(RegionRole::Primary);
    match (primary(&a), primary(&b)) {
        (true, true) if b.epoch() > a.epoch() => Ok((b, a)),
        (true, _) => Ok((a, b)),
        (false, true) => Ok((b, a)),
        (false, false) => {
            let (a_role, b_role) = (a.role_text(), b.role_text());
            Err(DrError::Precondition(format!(
                "no primary: region {} is {a_role}, region {} is {b_role}",
                a.name, b.name
            )))
        }
    }
}

/// What watches a [`Timeline`]'s steps as they happen.
type Observer = Box<dyn FnMut(&Event) + Send>;

/// A timeline of what an operation did, in ms from its start.
pub struct Timeline {
    started: Instant,
    events: Vec<Event>,
    observer: Option<Observer>,
}

/// One step of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When, in ms from the operation's start.
    pub at_ms: u64,
    /// What happened, in words naming the regions and whose log an index is.
    pub event: String,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline").field("events", &self.events).finish_non_exhaustive()
    }
}

impl Timeline {
    /// A timeline starting now.
    pub fn new() -> Self {
        Self { started: Instant::now(), events: Vec::new(), observer: None }
    }

    /// A timeline starting now whose every step `observer` sees as it
    /// happens (between that step and the next).
    pub fn observed(observer: impl FnMut(&Event) + Send + 'static) -> Self {
        Self { observer: Some(Box::new(observer)), ..Self::new() }
    }

    /// Records a step now; when it happened (ms from the start).
    pub fn at(&mut self, event: impl Into<String>) -> u64 {
        let event = Event { at_ms: self.started.elapsed().as_millis() as u64, event: event.into() };
        if let Some(observer) = self.observer.as_mut() {
            observer(&event);
        }
        let at_ms = event.at_ms;
        self.events.push(event);
        at_ms
    }

    /// The steps so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

/// What a switchover did.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchoverReport {
    /// The old primary region.
    pub from_region: String,
    /// The new primary region.
    pub to_region: String,
    /// The new primary's epoch.
    pub epoch: Epoch,
    /// The old primary's index at its freeze.
    pub frozen_index: LogIndex,
    /// The promotion's index in the new primary's log.
    pub promoted_index: LogIndex,
    /// The state digest both regions held at the promotion.
    pub digest: String,
    /// From the freeze to the promotion: writes were refused meanwhile.
    pub write_pause_ms: u64,
    /// The steps (filled by the caller for a report of its own).
    pub timeline: Vec<Event>,
}

/// A transfer the old primary committed that the new primary does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct LostTransfer {
    /// Its id.
    pub id: String,
    /// The account debited.
    pub debit_account_id: String,
    /// The account credited.
    pub credit_account_id: String,
    /// The amount.
    pub amount: String,
    /// The ledger.
    pub ledger: u32,
    /// When the old primary applied it.
    pub timestamp: u64,
}

/// What a failover did.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// The region promoted.
    pub promoted_region: String,
    /// The old primary region.
    pub lost_region: String,
    /// The new primary's epoch.
    pub epoch: Epoch,
    /// The promotion's index in the new primary's log.
    pub promoted_index: LogIndex,
    /// The last index of the old primary's log the new primary applied.
    pub cursor: LogIndex,
    /// The old primary's applied index as last heard by the standby.
    pub primary_last_heard_index: LogIndex,
    /// The old primary's entries the new primary does not hold.
    pub index_gap: u64,
    /// The new primary's last timestamp at its promotion.
    pub base_timestamp: u64,
    /// The new primary's state digest at its promotion.
    pub digest: String,
    /// Whether the old primary answered afterwards.
    pub old_primary_reachable: bool,
    /// The transfers the old primary committed past the cursor (only when it
    /// answered).
    pub divergent_transfers: Option<Vec<LostTransfer>>,
    /// The steps (filled by the caller for a report of its own).
    pub timeline: Vec<Event>,
}

fn lost_view(transfer: &Transfer) -> LostTransfer {
    LostTransfer {
        id: transfer.id.0.to_string(),
        debit_account_id: transfer.debit_account_id.0.to_string(),
        credit_account_id: transfer.credit_account_id.0.to_string(),
        amount: transfer.amount.to_string(),
        ledger: transfer.ledger.0,
        timestamp: transfer.timestamp,
    }
}

/// What `reconcile` found.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    /// The primary region.
    pub primary_region: String,
    /// The old primary region.
    pub old_region: String,
    /// The state the primary was promoted with, by its last timestamp.
    pub base_timestamp: u64,
    /// What the old primary committed past it.
    pub transfers: Vec<LostTransfer>,
}

/// What `lease` did.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseReport {
    /// The primary region.
    pub region: String,
    /// Its epoch.
    pub epoch: Epoch,
    /// Whether its writes need the standby's lease from now on.
    pub lease_required: bool,
    /// The region entry's index.
    pub index: LogIndex,
}

/// What `unfreeze_primary` did.
#[derive(Debug, Clone, Serialize)]
pub struct UnfreezeReport {
    /// The primary region.
    pub region: String,
    /// Its epoch.
    pub epoch: Epoch,
    /// Whether it was frozen (else nothing changed).
    pub was_frozen: bool,
}

/// What `reseed` did.
#[derive(Debug, Clone, Serialize)]
pub struct ReseedReport {
    /// The region re-seeded.
    pub standby_region: String,
    /// The primary it follows.
    pub primary_region: String,
    /// The checkpoint's index in the primary's log, where shipping resumed.
    pub index: LogIndex,
}

/// What a failback did.
#[derive(Debug, Clone, Serialize)]
pub struct FailbackReport {
    /// The region that rejoined as the standby (after the switchover back:
    /// the one that gave the primary role back).
    pub rejoined_region: String,
    /// The primary region at the end.
    pub primary_region: String,
    /// Its epoch.
    pub epoch: Epoch,
    /// The switchover back, unless skipped.
    pub switchover: Option<SwitchoverReport>,
    /// The steps (filled by the caller for a report of its own).
    pub timeline: Vec<Event>,
}

/// One row of `coffer dr status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusRow {
    /// The node's region.
    pub region: String,
    /// `None` for a node that did not answer.
    pub node_id: Option<u64>,
    /// Its client address.
    pub address: String,
    /// Whether it leads its region.
    pub leader: bool,
    /// The region's role as the node applied it (`unreachable`: no answer).
    pub role: String,
    /// The region's epoch.
    pub epoch: u64,
    /// Whether the region's writes are frozen.
    pub frozen: bool,
    /// The node's applied index.
    pub applied_index: u64,
    /// How far a standby applied the primary's log (in the primary's
    /// indexes); `None` for a primary, whose cursor is history.
    pub cursor: Option<u64>,
    /// `sync` or `async`.
    pub mode: String,
    /// `lease` or `none` (and whether waived).
    pub fencing: String,
    /// Entries the standby lags by.
    pub lag_entries: u64,
    /// For how long it has lagged.
    pub lag_ms: u64,
    /// The primary leader's lease left (negative: lapsed that long ago).
    pub lease_remaining_ms: i64,
    /// Whether a standby ships from this primary leader.
    pub standby_connected: bool,
    /// Whether this standby leader ships.
    pub shipping: bool,
    /// Bytes shipped from this primary leader.
    pub shipped_bytes: u64,
    /// How long until this standby leader may promote without force.
    pub promote_wait_ms: u64,
    /// The node's last shipping error, or why it did not answer.
    pub error: String,
}

/// The drill's write load: batches of 10 transfers to whichever region
/// takes them, every acknowledged id recorded.
#[derive(Debug, Default)]
struct Load {
    /// Every acknowledged transfer, with when (ms since the drill started).
    acknowledged: Mutex<Vec<(TransferId, u64)>>,
    /// Batches no region took.
    refusals: std::sync::atomic::AtomicU64,
}

/// A load running in a task until [`RunningLoad::stop`].
struct RunningLoad {
    load: Arc<Load>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningLoad {
    /// Stops the load; what it recorded.
    async fn stop(self) -> Arc<Load> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.load
    }
}

impl Load {
    /// Starts writing `rate` transfers a second to `regions`.
    fn start(operator: Operator, regions: [Vec<String>; 2], rate: u32, started: Instant) -> RunningLoad {
        let load = Arc::new(Self::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(operator.run_load(load.clone(), regions, rate, started, stopped));
        RunningLoad { load, stop, task }
    }

    fn acknowledged(&self) -> std::sync::MutexGuard<'_, Vec<(TransferId, u64)>> {
        self.acknowledged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The longest time between `from_ms` and `to_ms` in which no write that
    /// survived (is not in `lost`) was acknowledged: a write the old primary
    /// acknowledged and the new one lost does not count as available.
    fn longest_gap(&self, from_ms: u64, to_ms: u64, lost: &BTreeSet<u128>) -> u64 {
        let mut times: Vec<u64> =
            self.acknowledged().iter().filter(|(id, _)| !lost.contains(&id.0)).map(|(_, at)| *at).collect();
        times.sort_unstable();
        times.dedup();
        let mut last = from_ms;
        let mut gap = 0;
        for at in times.into_iter().filter(|at| *at >= from_ms && *at <= to_ms) {
            gap = gap.max(at - last);
            last = at;
        }
        gap.max(to_ms.saturating_sub(last))
    }
}

async fn drill_setup(client: &Client) -> Result<(), DrError> {
    let ledger = Ledger::new(DRILL_LEDGER, "DRILL", 0, "DR drill");
    client.create_ledgers(&[ledger]).await.map_err(|error| ledger_error("drill ledger", error))?;
    let account = |id, code| Account { id, ledger: DRILL_LEDGER, code, kind: AccountKind::Other, ..Account::default() };
    client
        .create_accounts(&[account(DRILL_DEBIT, 1), account(DRILL_CREDIT, 2)])
        .await
        .map_err(|error| ledger_error("drill accounts", error))?;
    Ok(())
}

/// What a drill measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillReport {
    /// The scenario run.
    pub scenario: Scenario,
    /// Whether a failback followed.
    pub failback: bool,
    /// `PASS` or `FAIL`.
    pub verdict: String,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// Acknowledged transfers the final primary does not hold.
    pub rpo_lost_acknowledged: usize,
    /// ... of which the failover report listed (old primary reachable).
    pub rpo_lost_listed: usize,
    /// From the first to the last acknowledgement of a lost transfer, as the
    /// drill's load saw them: the RPO in time.
    pub rpo_lost_ms: u64,
    /// The primary's bound on it (`[dr] max_lag_ms`, async mode; 0: none).
    pub rpo_bound_ms: u64,
    /// The regions ship in sync mode (nothing acknowledged may be lost).
    pub sync: bool,
    /// The failover's index gap.
    pub rpo_index_gap: u64,
    /// The longest time no write was acknowledged, from the operation's start
    /// to its end (write-unavailable time).
    pub rto_ms: u64,
    /// Transfers acknowledged during the drill.
    pub acknowledged: usize,
    /// Batches no region took.
    pub refused_batches: u64,
    /// Whether both regions held the same digest at equal index at the end.
    pub digests_equal: bool,
    /// The primary's digest then.
    pub primary_digest: String,
    /// The standby's digest then.
    pub standby_digest: String,
    /// The index (of the primary's log) the digests were taken at.
    pub at_index: u64,
    /// The switchover, if one ran.
    pub switchover: Option<SwitchoverReport>,
    /// The failover, if one ran.
    pub failover: Option<FailoverReport>,
    /// The failback, if one ran.
    pub failback_report: Option<FailbackReport>,
    /// The steps.
    pub timeline: Vec<Event>,
}

/// Runs the disaster-recovery operations against both regions, over
/// connections secured as `security` says (the operator's certificate).
#[derive(Clone, Debug)]
pub struct Operator {
    security: Security,
}

impl Operator {
    /// An operator connecting with `security`.
    pub fn new(security: Security) -> Self {
        Self { security }
    }

    /// A ledger client configuration for `addresses` with this operator's
    /// security.
    fn client_config(&self, addresses: Vec<String>) -> ClientConfig {
        ClientConfig { security: self.security.clone(), ..ClientConfig::new(addresses) }
    }

    async fn connect(&self, address: &str) -> Result<DrServiceClient<Channel>, String> {
        let endpoint = coffer_security::tls::endpoint(address, Duration::from_millis(CONNECT_TIMEOUT_MS))?
            .timeout(Duration::from_millis(CALL_TIMEOUT_MS));
        let channel = self
            .security
            .clone()
            .connect(endpoint, coffer_security::Expect::Any)
            .await
            .map_err(|error| format!("{address}: {error}"))?;
        Ok(DrServiceClient::new(channel))
    }

    async fn node_status(&self, address: String) -> Result<NodeStatus, String> {
        let mut client = self.connect(&address).await?;
        let status = client
            .status(DrStatusRequest {})
            .await
            .map_err(|status| format!("{address}: {:?}: {}", status.code(), status.message()))?
            .into_inner();
        Ok(NodeStatus { address, status })
    }

    /// Asks every address; the region's leader is the node that says it leads.
    async fn region(&self, addresses: &[String]) -> Region {
        let mut tasks = tokio::task::JoinSet::new();
        for address in addresses {
            let (operator, address) = (self.clone(), address.clone());
            tasks.spawn(async move { operator.node_status(address).await });
        }
        let mut region = Region {
            name: String::new(),
            addresses: addresses.to_vec(),
            leader: None,
            errors: Vec::new(),
            peer_addresses: Vec::new(),
            peer_name: String::new(),
        };
        while let Some(answer) = tasks.join_next().await {
            match answer {
                Ok(Ok(node)) => {
                    region.name = node.region().region;
                    if region.peer_addresses.is_empty() {
                        region.peer_addresses = node.status.peer_addresses.clone();
                        region.peer_name = node.status.peer_region.clone();
                    }
                    if node.status.is_leader {
                        region.leader = Some(node);
                    }
                }
                Ok(Err(error)) => region.errors.push(error),
                Err(error) => region.errors.push(error.to_string()),
            }
        }
        if region.name.is_empty() {
            region.name = "(unreachable)".into();
        }
        region
    }

    /// The region at `addresses` and the other one its nodes name.
    async fn both(&self, addresses: &[String]) -> Result<(Region, Region), DrError> {
        let first = self.region(addresses).await;
        if first.peer_addresses.is_empty() {
            return Err(DrError::Unreachable(format!(
                "no node at {} answered with a DR status ({}): is disaster recovery configured?",
                addresses.join(","),
                first.errors.join("; ")
            )));
        }
        let mut second = self.region(&first.peer_addresses).await;
        if second.errors.len() == second.addresses.len() && !first.peer_name.is_empty() {
            // No node of it answered: its name is in the first region's configuration.
            second.name.clone_from(&first.peer_name);
        }
        Ok((first, second))
    }

    /// The primary region at the highest epoch and the other one, found
    /// from the addresses of either.
    async fn primary_and_other(&self, addresses: &[String]) -> Result<(Region, Region), DrError> {
        let (a, b) = self.both(addresses).await?;
        primary_first(a, b)
    }

    /// A leader's client.
    async fn leader_client(&self, region: &Region) -> Result<(String, DrServiceClient<Channel>), DrError> {
        let address = region.leader()?.address.clone();
        let client = self.connect(&address).await.map_err(DrError::Unreachable)?;
        Ok((address, client))
    }

    /// Polls the leader of the region at `addresses` until `done` holds.
    async fn wait_for(
        &self,
        addresses: &[String],
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, DrError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        loop {
            let region = self.region(addresses).await;
            if let Some(leader) = region.leader {
                if done(&leader) {
                    return Ok(leader);
                }
                let info = leader.region();
                last = format!(
                    "leader {} at applied {}, cursor {}, lag {}",
                    leader.status.node_id, leader.status.applied_index, info.cursor, leader.status.lag_entries
                );
            }
            if Instant::now() >= deadline {
                return Err(DrError::TimedOut { what: what.to_owned(), after_ms: timeout.as_millis() as u64, last });
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    async fn digest_at(&self, region: &Region) -> Result<DigestResponse, DrError> {
        let (address, mut client) = self.leader_client(region).await?;
        Ok(client.digest(DigestRequest {}).await.map_err(|status| rpc_error("Digest", &address, &status))?.into_inner())
    }

    /// A planned switchover from the primary to the standby region (either
    /// region's `addresses` will do): refused while the standby lags more
    /// than `max_lag` entries; a failure before the promotion unfreezes the
    /// primary and says so (or says it stays frozen and how to clear it).
    pub async fn switchover(
        &self,
        addresses: &[String],
        args: &SwitchoverArgs,
        timeline: &mut Timeline,
    ) -> Result<SwitchoverReport, DrError> {
        let (primary, standby) = self.primary_and_other(addresses).await?;
        let standby_leader = standby.leader()?.clone();
        let standby_info = standby_leader.region();
        if standby_leader.role() != Some(RegionRole::Standby) {
            return Err(DrError::Precondition(format!(
                "region {} is {}, not a standby",
                standby.name, standby_info.role
            )));
        }
        let primary_leader = primary.leader()?.clone();
        if standby_info.epoch != primary_leader.region().epoch {
            return Err(DrError::Precondition(format!(
                "region {} follows epoch {}, the primary {} is at epoch {}: run `coffer dr failback` first",
                standby.name,
                standby_info.epoch,
                primary.name,
                primary_leader.region().epoch
            )));
        }
        let lag = primary_leader.status.applied_index.saturating_sub(standby_info.cursor);
        if lag > args.max_lag {
            return Err(DrError::Precondition(format!(
                "region {} lags {lag} entries behind {}, more than --max-lag {}: refused (nothing changed)",
                standby.name, primary.name, args.max_lag
            )));
        }
        timeline.at(format!("switchover {} -> {}: standby lag {lag} entries", primary.name, standby.name));
        let (primary_address, mut primary_client) = self.leader_client(&primary).await?;
        let frozen = primary_client
            .freeze(FreezeRequest {})
            .await
            .map_err(|status| rpc_error("Freeze", &primary_address, &status))?
            .into_inner();
        let frozen_at = timeline.at(format!("writes frozen in {0} at {0}'s index {1}", primary.name, frozen.index));
        let timeout = Duration::from_millis(args.catch_up_timeout_ms);
        // Until the standby is promoted, any failure gives the primary its
        // writes back: a switchover never leaves the ledger without a writer.
        let promoted = match self.catch_up_and_promote(&primary, &standby, frozen.index, timeout, timeline).await {
            Ok(promoted) => promoted,
            Err(error) => {
                // A promotion whose answer was lost may still have happened: then
                // the old primary must stay frozen (failback demotes it).
                let now = self.region(&standby.addresses).await;
                if now.role() == Some(RegionRole::Primary) && now.epoch() > primary_leader.region().epoch {
                    let done = format!(
                        "{} was promoted (epoch {}) although its answer was lost: {} stays frozen; run `coffer dr \
                         failback --no-switchover` to make it the standby",
                        standby.name,
                        now.epoch(),
                        primary.name
                    );
                    timeline.at(done.clone());
                    return Err(DrError::Partial { error: Box::new(error), outcome: done });
                }
                let undone = match self.unfreeze(&primary.addresses, "switchover failed", timeout).await {
                    Ok(()) => format!("writes unfrozen in {}, nothing else changed", primary.name),
                    Err(unfreezing) => format!(
                        "{} stays FROZEN ({unfreezing}): run `coffer dr unfreeze --reason ...` once it answers",
                        primary.name
                    ),
                };
                timeline.at(undone.clone());
                return Err(DrError::Partial { error: Box::new(error), outcome: undone });
            }
        };
        let (promoted, digest) = promoted;
        let epoch = promoted.region.clone().unwrap_or_default().epoch;
        let promoted_at = timeline
            .at(format!("{0} promoted: primary of epoch {epoch} at {0}'s index {1}", standby.name, promoted.index));
        // The old primary is frozen and of an older epoch: it takes no write
        // whatever happens next, so a failure from here on is reported, not
        // undone (`coffer dr failback` finishes it).
        let demote = DemoteRequest { epoch, cursor: promoted.index, base_timestamp: promoted.last_timestamp };
        self.at_leader(&primary.addresses, timeout, "Demote", |mut client| async move { client.demote(demote).await })
            .await?;
        timeline.at(format!(
            "{} demoted: standby of epoch {epoch}, following {1} from {1}'s index {2}",
            primary.name, standby.name, promoted.index
        ));
        self.attach(&standby.addresses, &primary.name, promoted.index, timeline, timeout).await?;
        Ok(SwitchoverReport {
            from_region: primary.name,
            to_region: standby.name,
            epoch: Epoch(epoch),
            frozen_index: LogIndex(frozen.index),
            promoted_index: LogIndex(promoted.index),
            digest,
            write_pause_ms: promoted_at.saturating_sub(frozen_at),
            timeline: Vec::new(),
        })
    }

    /// A switchover's steps between the freeze and the promotion: the standby
    /// catches up with everything the frozen primary applied, the digests are
    /// compared, the standby is promoted (at whichever node leads it by then).
    async fn catch_up_and_promote(
        &self,
        primary: &Region,
        standby: &Region,
        frozen_index: u64,
        timeout: Duration,
        timeline: &mut Timeline,
    ) -> Result<(RegionResponse, String), DrError> {
        let target = match self.region(&primary.addresses).await.leader {
            Some(leader) => leader.status.applied_index.max(frozen_index),
            None => frozen_index,
        };
        self.wait_for(&standby.addresses, timeout, "the standby to catch up", |leader| {
            leader.region().cursor >= target && leader.region().source_frozen
        })
        .await?;
        timeline.at(format!("{} applied {1}'s log to {1}'s index {target}", standby.name, primary.name));
        let primary_digest = self.digest_at(&self.region(&primary.addresses).await).await?;
        let standby_digest = self.digest_at(&self.region(&standby.addresses).await).await?;
        if primary_digest.digest != standby_digest.digest {
            return Err(DrError::DigestsDiffer(format!(
                "{} {} at index {}, {} {} at cursor {}",
                primary.name,
                primary_digest.digest,
                primary_digest.applied_index,
                standby.name,
                standby_digest.digest,
                standby_digest.region.clone().unwrap_or_default().cursor
            )));
        }
        timeline.at(format!("digests equal: {}", primary_digest.digest));
        let promote = PromoteRequest { force: false, reason: "switchover".into(), keep_lease: true };
        let promoted = self
            .at_leader(&standby.addresses, timeout, "Promote", |mut client| {
                let promote = promote.clone();
                async move { client.promote(promote).await }
            })
            .await?;
        Ok((promoted, primary_digest.digest))
    }

    /// Sends a region operation to the leader of the region at `addresses`,
    /// following a leader change (a node that no longer leads answers
    /// `UNAVAILABLE`) until `timeout`; any other refusal is final.
    async fn at_leader<F, Fut>(
        &self,
        addresses: &[String],
        timeout: Duration,
        what: &str,
        send: F,
    ) -> Result<RegionResponse, DrError>
    where
        F: Fn(DrServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RegionResponse>, Status>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let current = self.region(addresses).await;
            let error = match self.leader_client(&current).await {
                Ok((address, client)) => match send(client).await {
                    Ok(answer) => return Ok(answer.into_inner()),
                    Err(status) if status.code() == Code::Unavailable => rpc_error(what, &address, &status),
                    Err(status) => return Err(rpc_error(what, &address, &status)),
                },
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Gives the region at `addresses` its writes back (at its leader, which may
    /// change meanwhile), recording `reason` in its audit trail.
    async fn unfreeze(&self, addresses: &[String], reason: &str, timeout: Duration) -> Result<(), DrError> {
        let request = UnfreezeRequest { reason: reason.to_owned() };
        self.at_leader(addresses, timeout, "Unfreeze", |mut client| {
            let request = request.clone();
            async move { client.unfreeze(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Waits until the new standby ships from the primary at `addresses`, then
    /// has the primary require its write lease again.
    async fn attach(
        &self,
        primary_addresses: &[String],
        standby_name: &str,
        from: u64,
        timeline: &mut Timeline,
        timeout: Duration,
    ) -> Result<(), DrError> {
        self.wait_for(primary_addresses, timeout, "the new standby to ship", |leader| {
            leader.status.standby_connected && leader.status.standby_durable_index >= from
        })
        .await?;
        timeline.at(format!("{standby_name} ships from the new primary"));
        let primary = self.region(primary_addresses).await;
        let (address, mut client) = self.leader_client(&primary).await?;
        let leased = client.lease(LeaseRequest { required: true, reason: String::new() }).await;
        match leased {
            Ok(_) => {
                timeline.at("the primary writes under the standby's lease again");
                Ok(())
            }
            Err(status) => Err(rpc_error("Lease", &address, &status)),
        }
    }

    /// The transfers the region at `addresses` holds after `timestamp`.
    async fn transfers_after(&self, addresses: &[String], timestamp: u64) -> Result<Vec<Transfer>, DrError> {
        let config = ClientConfig { deadline_ms: CALL_TIMEOUT_MS, ..self.client_config(addresses.to_vec()) };
        let client = Client::new(config).map_err(|error| ledger_error("client", error))?.with_stale_reads(true);
        let mut found = Vec::new();
        let mut query = TransferQuery { timestamp_min: timestamp + 1, ..TransferQuery::all(8_189) };
        loop {
            let page = client.query_transfers(&query).await.map_err(|error| ledger_error("QueryTransfers", error))?;
            found.extend(page.value.transfers);
            if page.value.next_timestamp == 0 {
                return Ok(found);
            }
            query.timestamp_min = page.value.next_timestamp;
        }
    }

    /// Promotes the standby region after the primary region was lost, once
    /// every lease it granted lapsed (at once with `force`), and lists what
    /// the old primary committed past the new primary's cursor if it
    /// answers.
    pub async fn failover(
        &self,
        addresses: &[String],
        args: &FailoverArgs,
        timeline: &mut Timeline,
    ) -> Result<FailoverReport, DrError> {
        let (a, b) = self.both(addresses).await?;
        let (standby, old) = if a.role() == Some(RegionRole::Standby) {
            (a, b)
        } else if b.role() == Some(RegionRole::Standby) {
            (b, a)
        } else {
            return Err(DrError::Precondition(format!(
                "no standby region to promote: {} is {}, {} is {}",
                a.name,
                a.role_text(),
                b.name,
                b.role_text()
            )));
        };
        if let Some(leader) = &old.leader {
            let leased = leader.status.lease_remaining_ms > 0;
            if leader.role() == Some(RegionRole::Primary) && leased && !args.force && !args.wait_lease {
                return Err(DrError::Precondition(format!(
                    "region {} answers and holds a valid write lease ({} ms left): it is not lost. Use `coffer dr \
                     switchover` for a planned move, or --force if it must be fenced anyway",
                    old.name, leader.status.lease_remaining_ms
                )));
            }
        }
        timeline.at(format!(
            "failover to {}: {} is {}",
            standby.name,
            old.name,
            if old.leader.is_some() { "reachable" } else { "unreachable" }
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        let promoted: RegionResponse = loop {
            let current = self.region(&standby.addresses).await;
            let (address, mut client) = self.leader_client(&current).await?;
            let wait = current.leader()?.status.promote_wait_ms;
            match client
                .promote(PromoteRequest { force: args.force, reason: args.reason.clone(), keep_lease: false })
                .await
            {
                Ok(promoted) => break promoted.into_inner(),
                Err(status) if RegionRefusal::of(&status) == Some(RegionRefusal::LeaseHeld) => {
                    if Instant::now() >= deadline {
                        return Err(rpc_error("Promote", &address, &status));
                    }
                    timeline.at(format!("waiting {wait} ms for the old primary's write lease to lapse"));
                    tokio::time::sleep(Duration::from_millis(wait.clamp(POLL_MS, 5_000))).await;
                }
                Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
                }
                Err(status) => return Err(rpc_error("Promote", &address, &status)),
            }
        };
        let info = promoted.region.clone().unwrap_or_default();
        timeline.at(format!(
            "{0} promoted: primary of epoch {1} at {0}'s index {2}, having applied {3}'s log to {3}'s index {4}",
            standby.name, info.epoch, promoted.index, old.name, info.cursor
        ));
        let mut heard = standby.leader.as_ref().map_or(0, |leader| leader.status.source_applied_index);
        let cursor = info.cursor;
        let old_now = self.region(&old.addresses).await;
        let reachable = old_now.leader.is_some();
        if let Some(leader) = &old_now.leader {
            // The old primary answers: its own applied index is the real end.
            heard = heard.max(leader.status.applied_index);
        }
        let divergent = if reachable {
            let transfers = self.transfers_after(&old.addresses, promoted.last_timestamp).await?;
            timeline.at(format!("{} answers: it committed {} transfers past the cursor", old.name, transfers.len()));
            Some(transfers.iter().map(lost_view).collect())
        } else {
            None
        };
        Ok(FailoverReport {
            promoted_region: standby.name,
            lost_region: old.name,
            epoch: Epoch(info.epoch),
            promoted_index: LogIndex(promoted.index),
            cursor: LogIndex(cursor),
            primary_last_heard_index: LogIndex(heard),
            index_gap: heard.saturating_sub(cursor),
            base_timestamp: promoted.last_timestamp,
            digest: promoted.digest,
            old_primary_reachable: reachable,
            divergent_transfers: divergent,
            timeline: Vec::new(),
        })
    }

    /// The transfers the old primary committed that the new primary does not
    /// hold (after a failover).
    pub async fn reconcile(&self, addresses: &[String]) -> Result<ReconcileReport, DrError> {
        let (primary, old) = self.primary_and_other(addresses).await?;
        let info = primary.leader()?.region();
        if info.primary_since == 0 {
            return Err(DrError::Precondition(format!(
                "region {} was never promoted: nothing to reconcile",
                primary.name
            )));
        }
        old.leader()?;
        let transfers = self.transfers_after(&old.addresses, info.base_timestamp).await?;
        Ok(ReconcileReport {
            primary_region: primary.name,
            old_region: old.name,
            base_timestamp: info.base_timestamp,
            transfers: transfers.iter().map(lost_view).collect(),
        })
    }

    /// The old primary rejoins as the new primary's standby (re-seeded if it
    /// diverged and `reseed` says so), catches up, and unless
    /// `no_switchover` a switchover moves the primary role back.
    pub async fn failback(
        &self,
        addresses: &[String],
        args: &FailbackArgs,
        timeline: &mut Timeline,
    ) -> Result<FailbackReport, DrError> {
        let (primary, old) = self.primary_and_other(addresses).await?;
        let primary_leader = primary.leader()?.clone();
        let info = primary_leader.region();
        let old_leader = old.leader()?.clone();
        let old_info = old_leader.region();
        let mut from = info.primary_since;
        if old_leader.role() == Some(RegionRole::Standby) && old_info.epoch == info.epoch {
            timeline.at(format!("{} already follows {} at epoch {}", old.name, primary.name, info.epoch));
        } else {
            let (address, mut client) = self.leader_client(&old).await?;
            let demoted = client
                .demote(DemoteRequest {
                    epoch: info.epoch,
                    cursor: info.primary_since,
                    base_timestamp: info.base_timestamp,
                })
                .await;
            if let Err(status) = demoted {
                let diverged = RegionRefusal::of(&status) == Some(RegionRefusal::Diverged);
                if diverged && args.reseed {
                    timeline.at(format!("{} diverged from {}: re-seeding it", old.name, primary.name));
                    from = self
                        .reseed_region(
                            &primary,
                            &old,
                            info.epoch,
                            timeline,
                            Duration::from_millis(args.catch_up_timeout_ms),
                        )
                        .await?;
                } else if diverged {
                    let transfers = self.transfers_after(&old.addresses, info.base_timestamp).await.unwrap_or_default();
                    let mut list: Vec<String> = transfers
                        .iter()
                        .take(LISTED_MAX)
                        .map(|t| {
                            format!(
                                "{} (debit {} credit {} amount {})",
                                t.id.0, t.debit_account_id.0, t.credit_account_id.0, t.amount
                            )
                        })
                        .collect();
                    if transfers.len() > LISTED_MAX {
                        list.push(format!(
                            "and {} more: `coffer dr failover --json` lists them all",
                            transfers.len() - LISTED_MAX
                        ));
                    }
                    return Err(DrError::Diverged {
                        region: old.name,
                        primary: primary.name,
                        count: transfers.len(),
                        listed: list.join(", "),
                    });
                } else {
                    return Err(rpc_error("Demote", &address, &status));
                }
            } else {
                timeline.at(format!(
                    "{} demoted: standby of epoch {}, following {2} from {2}'s index {3}",
                    old.name, info.epoch, primary.name, info.primary_since
                ));
            }
        }
        let timeout = Duration::from_millis(args.catch_up_timeout_ms);
        self.attach(&primary.addresses, &old.name, from, timeline, timeout).await?;
        let caught = self
            .wait_for(&old.addresses, timeout, "the old primary to catch up", |leader| {
                leader.status.lag_entries == 0 && leader.status.source_heard_ms_ago < 2_000
            })
            .await?;
        timeline.at(format!(
            "{} caught up: it applied {1}'s log to {1}'s index {2}",
            old.name,
            primary.name,
            caught.region().cursor
        ));
        let switched = if args.no_switchover {
            None
        } else {
            let switch = SwitchoverArgs { max_lag: 10_000, catch_up_timeout_ms: args.catch_up_timeout_ms };
            Some(self.switchover(&primary.addresses, &switch, timeline).await?)
        };
        let (from, to) = match &switched {
            Some(report) => (report.from_region.clone(), report.to_region.clone()),
            None => (old.name.clone(), primary.name.clone()),
        };
        Ok(FailbackReport {
            rejoined_region: from,
            primary_region: to,
            epoch: switched.as_ref().map_or(Epoch(info.epoch), |report| report.epoch),
            switchover: switched,
            timeline: Vec::new(),
        })
    }

    /// Re-seeds every node of `old` from a checkpoint of `primary`'s leader
    /// (see `coffer_dr::reseed`): every node downloads and prepares it first
    /// (nothing changes if one fails), then all restart onto it, in a term above
    /// every term the region used. Returns the checkpoint's index, where the
    /// region's shipping resumes.
    async fn reseed_region(
        &self,
        primary: &Region,
        old: &Region,
        epoch: u64,
        timeline: &mut Timeline,
        timeout: Duration,
    ) -> Result<u64, DrError> {
        let (source, mut client) = self.leader_client(primary).await?;
        let checkpoint = client
            .checkpoint(CheckpointRequest {})
            .await
            .map_err(|status| rpc_error("Checkpoint", &source, &status))?
            .into_inner();
        timeline
            .at(format!("checkpoint {} of {1} at {1}'s index {2}", checkpoint.name, primary.name, checkpoint.index));
        let mut term = 0;
        for address in &old.addresses {
            let node = self
                .node_status(address.clone())
                .await
                .map_err(|error| DrError::Unreachable(format!("re-seed needs every node: {error}")))?;
            term = term.max(node.status.term);
        }
        let request = ReseedRequest {
            source_address: source.clone(),
            name: checkpoint.name.clone(),
            index: checkpoint.index,
            epoch,
            term: term + 1,
            restart: false,
        };
        for address in &old.addresses {
            let mut client = self.connect(address).await.map_err(DrError::Unreachable)?;
            client.reseed(request.clone()).await.map_err(|status| rpc_error("Reseed (prepare)", address, &status))?;
        }
        timeline.at(format!("every node of {} downloaded and prepared it", old.name));
        for address in &old.addresses {
            let mut client = self.connect(address).await.map_err(DrError::Unreachable)?;
            let restart = ReseedRequest { restart: true, ..request.clone() };
            client.reseed(restart).await.map_err(|status| rpc_error("Reseed (install)", address, &status))?;
        }
        timeline.at(format!("{} restarting onto it (term {})", old.name, term + 1));
        let index = checkpoint.index;
        self.wait_for(&old.addresses, timeout, "the re-seeded region to elect a leader", |leader| {
            let info = leader.region();
            leader.role() == Some(RegionRole::Standby) && info.epoch == epoch && info.cursor >= index
        })
        .await?;
        timeline.at(format!(
            "{} is a standby of epoch {epoch} following {1} from {1}'s index {index}",
            old.name, primary.name
        ));
        Ok(index)
    }

    /// Makes the primary region write without its standby's lease (the
    /// standby region is lost: `required` false, with a reason) or under it
    /// again.
    pub async fn lease(&self, addresses: &[String], args: &LeaseArgs) -> Result<LeaseReport, DrError> {
        let (primary, _) = self.primary_and_other(addresses).await?;
        let (address, mut client) = self.leader_client(&primary).await?;
        let required = args.action == LeaseAction::Require;
        let answer = client
            .lease(LeaseRequest { required, reason: args.reason.clone() })
            .await
            .map_err(|status| rpc_error("Lease", &address, &status))?
            .into_inner();
        let info = answer.region.unwrap_or_default();
        Ok(LeaseReport {
            region: info.region,
            epoch: Epoch(info.epoch),
            lease_required: required,
            index: LogIndex(answer.index),
        })
    }

    /// Gives a frozen primary its writes back (after a switchover that could
    /// neither finish nor undo its freeze); the reason goes to the audit
    /// trail. Nothing changes if it is not frozen.
    pub async fn unfreeze_primary(&self, addresses: &[String], args: &UnfreezeArgs) -> Result<UnfreezeReport, DrError> {
        if args.reason.trim().is_empty() {
            return Err(DrError::Precondition(
                "--reason: say why (the audit trail records it with who unfroze the region)".into(),
            ));
        }
        let (primary, _) = self.primary_and_other(addresses).await?;
        let info = primary.leader()?.region();
        if info.frozen {
            self.unfreeze(&primary.addresses, &args.reason, Duration::from_millis(CALL_TIMEOUT_MS)).await?;
        }
        Ok(UnfreezeReport { region: primary.name, epoch: Epoch(info.epoch), was_frozen: info.frozen })
    }

    /// Rebuilds the standby region from a checkpoint of the primary (when it
    /// fell behind what the primary's log still holds), then has the primary
    /// require its lease again.
    pub async fn reseed(
        &self,
        addresses: &[String],
        args: &ReseedArgs,
        timeline: &mut Timeline,
    ) -> Result<ReseedReport, DrError> {
        let (primary, standby) = self.primary_and_other(addresses).await?;
        let epoch = primary.epoch();
        if standby.role() == Some(RegionRole::Primary) {
            return Err(DrError::Precondition(format!(
                "region {} is a primary (epoch {}): use `coffer dr failback --reseed` for an old primary",
                standby.name,
                standby.epoch()
            )));
        }
        let timeout = Duration::from_millis(args.catch_up_timeout_ms);
        let index = self.reseed_region(&primary, &standby, epoch, timeline, timeout).await?;
        self.attach(&primary.addresses, &standby.name, index, timeline, timeout).await?;
        Ok(ReseedReport { standby_region: standby.name, primary_region: primary.name, index: LogIndex(index) })
    }

    /// Every node's DR status in both regions (a node that does not answer
    /// gets a row saying so).
    pub async fn status(&self, addresses: &[String]) -> Result<Vec<StatusRow>, DrError> {
        let (a, b) = self.both(addresses).await?;
        let mut rows = Vec::new();
        for region in [a, b] {
            for address in region.addresses {
                match self.node_status(address.clone()).await {
                    Ok(node) => {
                        let info = node.region();
                        let s = &node.status;
                        let standby = node.role() == Some(RegionRole::Standby);
                        rows.push(StatusRow {
                            region: info.region,
                            node_id: Some(s.node_id),
                            address,
                            leader: s.is_leader,
                            role: info.role,
                            epoch: info.epoch,
                            frozen: info.frozen,
                            applied_index: s.applied_index,
                            cursor: standby.then_some(info.cursor),
                            mode: s.mode.clone(),
                            fencing: s.fencing.clone(),
                            lag_entries: s.lag_entries,
                            lag_ms: s.lag_ms,
                            lease_remaining_ms: s.lease_remaining_ms,
                            standby_connected: s.standby_connected,
                            shipping: s.shipping,
                            shipped_bytes: s.shipped_bytes,
                            promote_wait_ms: s.promote_wait_ms,
                            error: s.last_error.clone(),
                        });
                    }
                    Err(error) => rows.push(StatusRow {
                        region: region.name.clone(),
                        address,
                        role: "unreachable".into(),
                        error,
                        ..StatusRow::default()
                    }),
                }
            }
        }
        Ok(rows)
    }

    async fn isolate(&self, addresses: &[String], isolated: bool) -> Result<(), DrError> {
        for address in addresses {
            let mut client = self.connect(address).await.map_err(DrError::Unreachable)?;
            client
                .isolate(IsolateRequest { isolated })
                .await
                .map_err(|status| rpc_error("Isolate", address, &status))?;
        }
        Ok(())
    }

    /// Runs a drill against the live regions and judges it (the report's
    /// verdict; its reasons say why it failed).
    pub async fn drill(
        &self,
        addresses: &[String],
        args: &DrillArgs,
        timeline: &mut Timeline,
    ) -> Result<DrillReport, DrError> {
        let (primary, standby) = self.primary_and_other(addresses).await?;
        primary.leader()?;
        standby.leader()?;
        let regions = [primary.addresses.clone(), standby.addresses.clone()];
        timeline.at(format!(
            "drill {}{}: primary {} (epoch {}), standby {}",
            args.scenario,
            if args.failback { " + failback" } else { "" },
            primary.name,
            primary.epoch(),
            standby.name
        ));
        let mut running = None;
        let setup = Client::new(self.client_config(primary.addresses.clone()))
            .map_err(|error| ledger_error("client", error))?;
        drill_setup(&setup).await?;
        if args.load > 0 {
            running = Some(Load::start(self.clone(), regions.clone(), args.load, timeline.started));
            timeline.at(format!("load: {} transfers/s in batches of 10", args.load));
            tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
        }
        let operation_from = timeline.at("operation starts");
        let mut report = DrillReport { scenario: args.scenario, failback: args.failback, ..DrillReport::default() };
        let mut listed: BTreeSet<u128> = BTreeSet::new();
        match args.scenario {
            Scenario::Switchover => {
                let switch = SwitchoverArgs { max_lag: 10_000, catch_up_timeout_ms: 30_000 };
                let switched = self.switchover(&primary.addresses, &switch, timeline).await?;
                if switched.write_pause_ms > SWITCHOVER_PAUSE_GOAL_MS {
                    report.reasons.push(format!(
                        "write pause {} ms over the {SWITCHOVER_PAUSE_GOAL_MS} ms goal",
                        switched.write_pause_ms
                    ));
                }
                report.switchover = Some(switched);
            }
            Scenario::Failover => {
                self.isolate(&primary.addresses, true).await?;
                timeline.at(format!("link cut: {} no longer ships to {}", primary.name, standby.name));
                let args = FailoverArgs { force: false, reason: "failover drill".into(), wait_lease: true };
                let failed_over = self.failover(&standby.addresses, &args, timeline).await?;
                report.rpo_index_gap = failed_over.index_gap;
                if let Some(divergent) = &failed_over.divergent_transfers {
                    listed.extend(divergent.iter().filter_map(|lost| lost.id.parse::<u128>().ok()));
                }
                report.failover = Some(failed_over);
                self.isolate(&primary.addresses, false).await?;
                timeline.at("link restored");
            }
        }
        let mut operation_to = timeline.at("operation done");
        let mut probed = Vec::new();
        if args.load == 0 {
            // No load to measure the write-unavailable time: probe until the
            // new primary takes a write.
            let probe = Load::start(self.clone(), regions.clone(), 50, timeline.started);
            let deadline = Instant::now() + Duration::from_secs(30);
            while probe.load.acknowledged().is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            probed = probe.stop().await.acknowledged().clone();
            match probed.iter().map(|(_, at)| *at).min() {
                Some(at) => {
                    timeline.at("a probe write was acknowledged");
                    report.rto_ms = at.saturating_sub(operation_from);
                    operation_to = operation_to.max(at);
                }
                None => report.reasons.push("no write was acknowledged within 30 s of the operation".into()),
            }
        }
        if args.load > 0 {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
        if args.failback {
            // The drill's own transfers are what the old primary may hold alone:
            // they are listed above; the region is re-seeded if it diverged.
            let back = FailbackArgs { no_switchover: false, catch_up_timeout_ms: 60_000, reseed: true };
            match self.failback(&standby.addresses, &back, timeline).await {
                Ok(done) => report.failback_report = Some(done),
                Err(error) => report.reasons.push(format!("failback: {error}")),
            }
            if args.load > 0 {
                tokio::time::sleep(Duration::from_millis(1_000)).await;
            }
        }
        let load = match running {
            Some(running) => {
                let load = running.stop().await;
                timeline.at("load stopped");
                load
            }
            None => Arc::default(),
        };
        // Judge: every acknowledged transfer in the final primary, and equal
        // digests once the standby caught up.
        let (final_primary, final_standby) = self.primary_and_other(addresses).await?;
        let mut acknowledged = load.acknowledged().clone();
        acknowledged.extend(probed);
        report.acknowledged = acknowledged.len();
        report.refused_batches = load.refusals.load(std::sync::atomic::Ordering::Relaxed);
        if !acknowledged.is_empty() {
            let client = Client::new(self.client_config(final_primary.addresses.clone()))
                .map_err(|error| ledger_error("client", error))?;
            let mut lost = Vec::new();
            for chunk in acknowledged.chunks(8_000) {
                let ids: Vec<TransferId> = chunk.iter().map(|(id, _)| *id).collect();
                let found =
                    client.lookup_transfers(&ids).await.map_err(|error| ledger_error("LookupTransfers", error))?;
                lost.extend(ids.iter().zip(&found.value).filter(|(_, found)| found.is_none()).map(|(id, _)| id.0));
            }
            report.rpo_lost_acknowledged = lost.len();
            report.rpo_lost_listed = lost.iter().filter(|id| listed.contains(id)).count();
            let lost_set: BTreeSet<u128> = lost.iter().copied().collect();
            let lost_at = acknowledged.iter().filter(|(id, _)| lost_set.contains(&id.0)).map(|&(_, at)| at);
            let (first, last) = lost_at.fold((u64::MAX, 0), |(first, last), at| (first.min(at), last.max(at)));
            report.rpo_lost_ms = last.saturating_sub(first);
            let status = final_primary.leader.as_ref().map(|leader| &leader.status);
            let sync = status.is_some_and(|status| status.mode == "sync");
            // Sync mode loses nothing acknowledged: no bound in time applies.
            report.rpo_bound_ms = status.filter(|_| !sync).map_or(0, |status| status.max_lag_ms);
            report.sync = sync;
            if !sync && report.rpo_bound_ms != 0 && report.rpo_lost_ms > report.rpo_bound_ms + RPO_SLACK_MS {
                report.reasons.push(format!(
                    "acknowledged writes of {} ms were lost, more than the bound of {} ms (max_lag_ms)",
                    report.rpo_lost_ms, report.rpo_bound_ms
                ));
            }
            if args.load > 0 {
                report.rto_ms = load.longest_gap(operation_from, operation_to, &lost_set);
            }
            if args.scenario == Scenario::Switchover && !lost.is_empty() {
                report.reasons.push(format!("{} acknowledged transfers lost in a switchover", lost.len()));
            }
            if args.scenario == Scenario::Failover && sync && !lost.is_empty() {
                report.reasons.push(format!("{} acknowledged transfers lost in sync mode", lost.len()));
            }
            if report.rpo_lost_listed != lost.len() {
                report.reasons.push(format!(
                    "{} acknowledged transfers lost and not listed by the failover report",
                    lost.len() - report.rpo_lost_listed
                ));
            }
        }
        if final_standby.role() == Some(RegionRole::Standby) && final_standby.epoch() == final_primary.epoch() {
            let target = final_primary.leader()?.status.applied_index;
            let caught = self
                .wait_for(&final_standby.addresses, Duration::from_secs(30), "the standby to catch up", |leader| {
                    leader.region().cursor >= target
                })
                .await;
            match caught {
                Ok(_) => {
                    let primary_digest = self.digest_at(&self.region(&final_primary.addresses).await).await?;
                    let standby_digest = self.digest_at(&self.region(&final_standby.addresses).await).await?;
                    report.at_index = standby_digest.region.clone().unwrap_or_default().cursor;
                    report.digests_equal = primary_digest.digest == standby_digest.digest
                        && primary_digest.applied_index == report.at_index;
                    report.primary_digest = primary_digest.digest;
                    report.standby_digest = standby_digest.digest;
                    if !report.digests_equal {
                        report.reasons.push("the regions' digests differ at equal index".into());
                    }
                }
                Err(error) => report.reasons.push(error.to_string()),
            }
        } else {
            report.reasons.push(format!(
                "no standby follows the primary {} at the end ({} is {} at epoch {})",
                final_primary.name,
                final_standby.name,
                final_standby.role_text(),
                final_standby.epoch()
            ));
        }
        report.verdict = if report.reasons.is_empty() { "PASS".into() } else { "FAIL".into() };
        timeline.at(format!("verdict {}", report.verdict));
        Ok(report)
    }

    async fn run_load(
        self,
        load: Arc<Load>,
        regions: [Vec<String>; 2],
        rate: u32,
        started: Instant,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let clients: Vec<Client> = regions
            .iter()
            .filter_map(|addresses| {
                let config =
                    ClientConfig { deadline_ms: 2_000, attempts_max: 2, ..self.client_config(addresses.clone()) };
                Client::new(config).ok()
            })
            .collect();
        let interval = Duration::from_micros(10_000_000 / u64::from(rate.max(1)));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Ids unique to this run: the wall clock (ns) above a sequence number.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u128::from(since.as_nanos() as u64));
        let mut sequence = 0u128;
        let mut preferred = 0usize;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            let batch: Vec<Transfer> = (0..10)
                .map(|_| {
                    sequence += 1;
                    Transfer {
                        id: TransferId((0xD1 << 120) | (run << 32) | sequence),
                        debit_account_id: DRILL_DEBIT,
                        credit_account_id: DRILL_CREDIT,
                        amount: 1,
                        ledger: DRILL_LEDGER,
                        code: 1,
                        kind: TransferKind::Journal,
                        ..Transfer::default()
                    }
                })
                .collect();
            let mut done = false;
            for attempt in 0..clients.len() {
                let which = (preferred + attempt) % clients.len();
                match clients[which].create_transfers(&batch).await {
                    Ok(reply) => {
                        let at = started.elapsed().as_millis() as u64;
                        let mut acknowledged = load.acknowledged();
                        for (transfer, result) in batch.iter().zip(&reply.value) {
                            if matches!(result, CreateTransferResult::Created | CreateTransferResult::Exists) {
                                acknowledged.push((transfer.id, at));
                            }
                        }
                        preferred = which;
                        done = true;
                        break;
                    }
                    // Refused (a standby, a frozen or unleased primary) or
                    // unreachable: the other region may take it.
                    Err(_) => continue,
                }
            }
            if !done {
                load.refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str, role: Option<&str>) -> Region {
        let leader = role.map(|role| NodeStatus {
            address: "127.0.0.1:1".into(),
            status: DrStatusResponse {
                is_leader: true,
                region: Some(coffer_dr::proto::RegionInfo {
                    region: name.into(),
                    role: role.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        });
        Region {
            name: name.into(),
            addresses: vec!["127.0.0.1:1".into()],
            leader,
            errors: vec!["connection refused".into()],
            peer_addresses: Vec::new(),
            peer_name: String::new(),
        }
    }

    #[test]
    fn errors_say_which_kind_of_failure_they_are() {
        let both_standby = primary_first(region("seoul", Some("standby")), region("busan", Some("standby")));
        assert!(matches!(both_standby, Err(DrError::Precondition(text)) if text.contains("no primary")));
        let (primary, _) = primary_first(region("seoul", None), region("busan", Some("primary"))).unwrap();
        assert_eq!(primary.name, "busan");
        let unreachable = region("seoul", None);
        assert!(matches!(unreachable.leader(), Err(DrError::NoLeader { region, .. }) if region == "seoul"));
        let refused = rpc_error("Promote", "127.0.0.1:1", &RegionRefusal::LeaseHeld.status("wait".into()));
        assert!(
            matches!(
                &refused,
                DrError::Refused { reason: Some(RegionRefusal::LeaseHeld), code: Code::FailedPrecondition, .. }
            ),
            "{refused:?}"
        );
        assert_eq!(refused.to_string(), "Promote at 127.0.0.1:1: FailedPrecondition: wait");
    }

    #[test]
    fn an_observer_sees_each_step_as_it_is_recorded() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut timeline = Timeline::observed(move |event| sink.lock().unwrap().push(event.event.clone()));
        timeline.at("frozen");
        assert_eq!(*seen.lock().unwrap(), ["frozen"], "seen before the next step");
        timeline.at("promoted");
        assert_eq!(
            timeline.events().iter().map(|event| event.event.as_str()).collect::<Vec<_>>(),
            ["frozen", "promoted"]
        );
    }
}
