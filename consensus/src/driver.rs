//! The production driver: runs a [`Replica`] on a real clock, a real disk
//! ([`DiskStorage`]) and the gRPC [`transport`](crate::transport).
//!
//! One task owns the replica; nothing else touches it. It runs on a thread
//! of its own (with a current-thread tokio runtime), because every round
//! may block on an fsync and must not stall the async workers that serve
//! gRPC and carry messages. The task waits for a tick (`tick_ms`), a
//! request from a [`NodeHandle`] or a message from a peer; then it takes
//! everything else already waiting (up to [`ROUND_INPUTS_MAX`] of each)
//! and runs ONE [`Replica::advance`]: every proposal that arrived meanwhile
//! is packed into the same entries and persisted with the same synced
//! write (group commit). Outgoing messages go straight to the peers'
//! queues during the round, so the followers' writes overlap the leader's.
//! Finished requests are answered after the round.
//!
//! A [`ConsensusError`] from a round stops the node: it is logged, every
//! waiting request fails with [`RequestError::Stopped`], the store is
//! closed, and the handle reports the node stopped. The driver never panics
//! on what the network, the disk or a caller hands it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coffer_ledger::Operation;
use coffer_security::{Listener, Security};
use coffer_storage::snapshot::{self, SnapshotManifest};
use coffer_storage::{AppliedState, ReadView, StorageConfig, StorageError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::MissedTickBehavior;

use crate::config::ConsensusConfig;
use crate::error::{ConsensusError, ProposalError, ReadError};
use crate::metrics::DriverMetrics;
use crate::reads::{ReadJob, ReadLimits, ReadPool};
use crate::region::{RegionNote, RegionOp};
use crate::replica::{
    events, Applied, Completion, EntriesError, MembershipChange, NodeStatus, ProposalId, ReadId, Replica,
};
use crate::storage::{DiskStorage, ReplicaStorage, SnapshotDirs};
use crate::transport::{
    check_address, Inbound, MemberAddresses, Peers, RaftService, RaftTransportService, Report, INBOUND_MESSAGES_MAX,
    KEEPALIVE_INTERVAL_MS, STREAMS_PER_CONNECTION_MAX,
};
use coffer_storage::RegionState;
use raft::prelude::Entry;

/// Inputs of each kind (requests, peer messages) taken into one round at
/// most, so one busy source cannot delay a round without bound.
pub const ROUND_INPUTS_MAX: usize = 1_024;
/// The default bound of the queue from the handles to the driver.
pub const REQUESTS_MAX_DEFAULT: usize = 4_096;
/// How often the driver samples RocksDB's size properties into metrics.
pub const STORAGE_METRICS_INTERVAL_MS: u64 = 10_000;
/// How long a stopping node waits for the reads still running on its store
/// before it reports the store closed anyway.
pub const STOP_READS_WAIT_MS: u64 = 10_000;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The Raft node's settings (its id among them).
    pub consensus: ConsensusConfig,
    /// The RocksDB store's settings.
    pub storage: StorageConfig,
    /// The node's data directory (`db/` and `snapshots/` inside).
    pub data_dir: PathBuf,
    /// Where [`start_node`] serves the peer transport (port 0: any free
    /// port, see [`NodeHandle::listen_addr`]). `None`: the caller mounts
    /// [`NodeHandle::transport_service`] on a server of its own.
    pub listen_addr: Option<SocketAddr>,
    /// The other nodes' transport addresses (`"host:port"`) by node id.
    /// Membership changes applied later add to them.
    pub peers: BTreeMap<u64, String>,
    /// On a fresh store, the voters of the cluster this node founds (every
    /// founding node is given the same list). Ignored on a store that holds
    /// Raft state; `None` for a node that will be added to a running cluster.
    pub bootstrap_voters: Option<Vec<u64>>,
    /// Requests waiting for the driver before new ones are refused as
    /// overloaded (default [`REQUESTS_MAX_DEFAULT`]).
    pub requests_max: usize,
    /// The bounds of the read pool (see [`crate::reads`]).
    pub reads: ReadLimits,
    /// How the transport's connections are secured: under TLS, only nodes
    /// of this cluster's region connect, and a message is accepted only
    /// from a member whose certificate names its sender. Default:
    /// plaintext ([`Security::Insecure`]), for nodes embedded in tests.
    pub security: Security,
}

impl NodeConfig {
    /// The defaults for node `node_id` keeping its data in `data_dir`, with
    /// no transport server, no peers and no bootstrap.
    pub fn new(node_id: u64, data_dir: PathBuf) -> Self {
        Self {
            consensus: ConsensusConfig::new(node_id),
            storage: StorageConfig::default(),
            data_dir,
            listen_addr: None,
            peers: BTreeMap::new(),
            bootstrap_voters: None,
            requests_max: REQUESTS_MAX_DEFAULT,
            reads: ReadLimits::default(),
            security: Security::Insecure,
        }
    }

    fn check(&self) -> Result<(), StartError> {
        let invalid = |field: &'static str, reason: String| Err(StartError::Invalid { field, reason });
        if self.consensus.node_id == 0 {
            return invalid("consensus.node_id", "0 is not a node id".into());
        }
        if self.consensus.tick_ms == 0 {
            return invalid("consensus.tick_ms", "a tick must last at least 1 ms".into());
        }
        if self.requests_max == 0 {
            return invalid("requests_max", "must be at least 1".into());
        }
        if self.reads.running_max == 0 {
            return invalid("reads.running_max", "must be at least 1".into());
        }
        if self.reads.admitted_max == 0 {
            return invalid("reads.admitted_max", "must be at least 1".into());
        }
        for (peer, address) in &self.peers {
            if *peer == 0 {
                return invalid("peers", "0 is not a node id".into());
            }
            check_address(address).map_err(|reason| StartError::Invalid { field: "peers", reason })?;
        }
        Ok(())
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The transport's address could not be bound.
    #[error("binding the transport to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not be opened or bootstrapped.
    #[error("opening the store: {0}")]
    Storage(#[from] StorageError),
    /// The Raft node could not be created on the store.
    #[error("starting the Raft node: {0}")]
    Consensus(#[from] ConsensusError),
    /// The driver's thread or runtime could not be created.
    #[error("starting the driver thread: {0}")]
    Thread(std::io::Error),
    /// The driver thread ended before the node was ready.
    #[error("the driver thread ended while starting")]
    DriverExited,
}

/// Why a request to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The node stopped (shut down, or a fatal error); see `reason`.
    #[error("node {node} is stopped: {reason}")]
    Stopped {
        /// The node.
        node: u64,
        /// Why it stopped.
        reason: String,
    },
    /// The queue to the node's driver is full: retry later.
    #[error("node {node} is overloaded: {capacity} requests already waiting")]
    Overloaded {
        /// The node.
        node: u64,
        /// The queue's bound.
        capacity: usize,
    },
    /// The proposal (or membership change, or leader transfer) failed.
    #[error(transparent)]
    Proposal(#[from] ProposalError),
    /// The linearizable read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The request is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No consistent view of the state could be opened for the read (see
    /// [`StorageError::is_transient`] for which failures are worth a retry).
    #[error("node {node} cannot read its state: {source}")]
    View {
        /// The node.
        node: u64,
        /// Why.
        source: Box<StorageError>,
    },
    /// The node dropped the request without an answer: the read function
    /// panicked (the node goes on).
    #[error("node {node} abandoned the request: the read function panicked")]
    Abandoned {
        /// The node.
        node: u64,
    },
    /// The backup could not be made.
    #[error("backup to {dir}: {source}")]
    Backup {
        /// The backup directory.
        dir: PathBuf,
        /// The failure.
        source: StorageError,
    },
}

impl RequestError {
    /// Whether sending the same request again (with the same ids, to this
    /// node or to the leader it names) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Overloaded { .. } => true,
            Self::Proposal(error) => error.is_retryable(),
            // Every read failure is transient: no leader, a slow
            // confirmation, too many reads.
            Self::Read(_) => true,
            Self::View { source, .. } => source.is_transient(),
            Self::Backup { source, .. } => source.is_transient(),
            Self::Stopped { .. } | Self::Invalid { .. } | Self::Abandoned { .. } => false,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, RequestError>>;
type Answer<T> = oneshot::Receiver<Result<T, RequestError>>;

/// `f` as a job for the read pool, holding its admission `permit` until it
/// ends, and where its answer arrives.
fn read_job<F, R>(f: F, permit: OwnedSemaphorePermit) -> (ReadJob, Answer<(u64, R)>)
where
    F: FnOnce(&ReadView<'_>) -> R + Send + 'static,
    R: Send + 'static,
{
    let (reply, receiver) = oneshot::channel();
    let job: ReadJob = Box::new(move |view: Result<&ReadView<'_>, RequestError>| {
        let _permit = permit;
        // The caller gave up waiting (a client that went away): skip the work.
        if reply.is_closed() {
            return;
        }
        let _ = reply.send(view.map(|view| (view.applied().index, f(view))));
    });
    (job, receiver)
}

/// What a handle asks of the driver.
enum Request {
    Propose { operation: Operation, principal: String, reply: Reply<Applied> },
    ChangeMembership { change: MembershipChange, address: String, force: bool, reply: Reply<Applied> },
    Read { job: ReadJob },
    Status { reply: oneshot::Sender<NodeStatus> },
    TransferLeader { target: u64, reply: Reply<()> },
    SetPeerAddress { peer: u64, address: String },
    ProposeRegion { op: RegionOp, note: RegionNote, reply: Reply<Applied> },
    Entries { from: u64, max_bytes: u64, reply: oneshot::Sender<Result<Vec<Entry>, EntriesError>> },
    RetainLog { from: u64 },
    Shutdown { reply: oneshot::Sender<()> },
}

/// What a node is, as of its last round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// The applied index.
    pub applied: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Whether this node leads.
    pub is_leader: bool,
    /// The current term.
    pub term: u64,
    /// The region's state, its role resolved.
    pub region: RegionState,
}

/// A cloneable handle to a running node: every call is a request to the
/// node's driver and fails with [`RequestError::Overloaded`] when the
/// driver's queue is full, and with [`RequestError::Stopped`] once the node
/// stopped.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    id: u64,
    capacity: usize,
    requests: mpsc::Sender<Request>,
    /// `None` while running; why the node stopped afterwards.
    stopped: watch::Receiver<Option<String>>,
    service: RaftService,
    listen_addr: Option<SocketAddr>,
    view: watch::Receiver<NodeView>,
    reads: ReadPool,
    addresses: watch::Receiver<BTreeMap<u64, MemberAddresses>>,
}

impl NodeHandle {
    /// The addresses of the members that membership changes added, by node
    /// id, as this node's store keeps them (see [`MemberAddresses`]).
    pub fn member_addresses(&self) -> BTreeMap<u64, MemberAddresses> {
        self.addresses.borrow().clone()
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where [`start_node`] serves the transport, if it does.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// Why the node stopped, or `None` while it runs.
    pub fn stop_reason(&self) -> Option<String> {
        self.stopped.borrow().clone()
    }

    /// Whether the node stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.borrow().is_some() || self.requests.is_closed()
    }

    /// The peer transport's gRPC service, to add to a
    /// `tonic::transport::Server` (when the node does not serve it itself).
    pub fn transport_service(&self) -> RaftTransportService {
        self.service.clone().into_server()
    }

    fn stopped_error(&self) -> RequestError {
        let reason = self.stop_reason().unwrap_or_else(|| "its driver exited".into());
        RequestError::Stopped { node: self.id, reason }
    }

    fn request(&self, request: Request) -> Result<(), RequestError> {
        self.requests.try_send(request).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => RequestError::Overloaded { node: self.id, capacity: self.capacity },
            mpsc::error::TrySendError::Closed(_) => self.stopped_error(),
        })
    }

    async fn answer<T>(&self, receiver: oneshot::Receiver<T>) -> Result<T, RequestError> {
        receiver.await.map_err(|_| {
            if self.is_stopped() {
                self.stopped_error()
            } else {
                RequestError::Abandoned { node: self.id }
            }
        })
    }

    /// Proposes a ledger operation and waits until it is applied here (this
    /// node must be the leader: otherwise `NotLeader` names the leader).
    pub async fn propose(&self, operation: Operation) -> Result<Applied, RequestError> {
        self.propose_as(operation, String::new()).await
    }

    /// [`Self::propose`] for `principal`, whom the audit trail records with
    /// the batch on every replica.
    pub async fn propose_as(&self, operation: Operation, principal: String) -> Result<Applied, RequestError> {
        let (reply, receiver) = oneshot::channel();
        self.request(Request::Propose { operation, principal, reply })?;
        self.answer(receiver).await?
    }

    /// Runs `f` on a view of the state once a linearizable read completes
    /// (ReadIndex: the view reflects every write acknowledged before this
    /// call), and returns the applied index of the view with `f`'s result.
    /// Works on followers too. `f` runs on the read pool, never on the
    /// driver (see [`crate::reads`]); dropping the returned future before
    /// `f` starts skips it.
    pub async fn read<F, R>(&self, f: F) -> Result<(u64, R), RequestError>
    where
        F: FnOnce(&ReadView<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (job, receiver) = read_job(f, self.reads.admit()?);
        self.request(Request::Read { job })?;
        self.answer(receiver).await?
    }

    /// Runs `f` on a view of this node's state as it is now (possibly
    /// stale: a follower may lag), and returns the view's applied index
    /// with `f`'s result. Goes straight to the read pool: the driver is not
    /// asked at all.
    pub async fn read_stale<F, R>(&self, f: F) -> Result<(u64, R), RequestError>
    where
        F: FnOnce(&ReadView<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (job, receiver) = read_job(f, self.reads.admit()?);
        if self.is_stopped() {
            return Err(self.stopped_error());
        }
        self.reads.read(job, Ok(()));
        self.answer(receiver).await?
    }

    /// The node's Raft status.
    pub async fn status(&self) -> Result<NodeStatus, RequestError> {
        let (reply, receiver) = oneshot::channel();
        self.request(Request::Status { reply })?;
        self.answer(receiver).await
    }

    /// Asks the leader (this node) to hand leadership to `target`.
    pub async fn transfer_leader(&self, target: u64) -> Result<(), RequestError> {
        let (reply, receiver) = oneshot::channel();
        self.request(Request::TransferLeader { target, reply })?;
        self.answer(receiver).await?
    }

    /// Proposes a membership change at the leader (this node) and waits
    /// until it is applied here. `address` (a [`MemberAddresses`] context,
    /// a bare Raft `"host:port"`, or empty for none) travels in the change
    /// and is kept with the membership, so every node learns, and remembers
    /// across restarts, where the added node is. Without `force`, promoting a learner that has not caught up
    /// and a removal that leaves no room for one more failure are refused.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
        address: String,
        force: bool,
    ) -> Result<Applied, RequestError> {
        let (reply, receiver) = oneshot::channel();
        self.request(Request::ChangeMembership { change, address, force, reply })?;
        self.answer(receiver).await?
    }

    /// Sets where `peer` is reached (an operator's correction, or a test
    /// whose nodes learn their ports only once started).
    pub fn set_peer_address(&self, peer: u64, address: String) -> Result<(), RequestError> {
        check_address(&address).map_err(|reason| RequestError::Invalid { field: "address", reason })?;
        self.request(Request::SetPeerAddress { peer, address })
    }

    /// Makes a backup (a snapshot: RocksDB checkpoint plus checksummed
    /// manifest) of the node's state in `dir`, which must not exist. It is
    /// made on the read pool while the node goes on: the checkpoint is of
    /// one applied index, and one caught during a snapshot install is
    /// refused (retryable) rather than kept.
    pub async fn backup(&self, dir: PathBuf) -> Result<SnapshotManifest, RequestError> {
        let permit = self.reads.admit()?;
        let (reply, receiver) = oneshot::channel();
        let node = self.id;
        self.reads.run(Box::new(move |db| {
            let _permit = permit;
            let result = db.and_then(|db| {
                snapshot::create(db, &dir).map_err(|source| RequestError::Backup { dir: dir.clone(), source })
            });
            if let Ok(manifest) = &result {
                tracing::info!(node, dir = %dir.display(), index = manifest.applied.index, "backup made");
            }
            let _ = reply.send(result);
        }));
        self.answer(receiver).await?
    }

    /// Proposes a region entry (see [`crate::region`]) at the leader (this
    /// node) and waits until it is applied here: the region's state after
    /// it, or why the region refused it. `note` says who asked and why.
    pub async fn propose_region(&self, op: RegionOp, note: RegionNote) -> Result<Applied, RequestError> {
        self.queue_region(op, note)?.await
    }

    /// Like [`Self::propose_region`], but the request is queued to the
    /// driver before this returns, so proposals queued one after another
    /// keep their order; the future answers it.
    pub fn queue_region(
        &self,
        op: RegionOp,
        note: RegionNote,
    ) -> Result<impl std::future::Future<Output = Result<Applied, RequestError>> + Send + 'static, RequestError> {
        let (reply, receiver) = oneshot::channel();
        self.request(Request::ProposeRegion { op, note, reply })?;
        let handle = self.clone();
        Ok(async move { handle.answer(receiver).await? })
    }

    /// Applied entries of this node's log from `from`, up to about
    /// `max_bytes`, for shipping to a standby region (read on the driver,
    /// between rounds).
    pub async fn applied_entries(
        &self,
        from: u64,
        max_bytes: u64,
    ) -> Result<Result<Vec<Entry>, EntriesError>, RequestError> {
        let (reply, receiver) = oneshot::channel();
        self.request(Request::Entries { from, max_bytes, reply })?;
        self.answer(receiver).await
    }

    /// Keeps this node's log from `from` on for a standby region (`0`: stop
    /// keeping), within `dr_log_retain_entries_max`.
    pub fn retain_log_from(&self, from: u64) -> Result<(), RequestError> {
        self.request(Request::RetainLog { from })
    }

    /// What the node is now, updated after every round: applied index,
    /// leader, region. Cheap: no request to the driver.
    pub fn view(&self) -> NodeView {
        *self.view.borrow()
    }

    /// A receiver that sees every new [`NodeView`] (to wait for an index to
    /// be applied, or for a change of leader or role).
    pub fn watch_view(&self) -> watch::Receiver<NodeView> {
        self.view.clone()
    }

    /// Stops the node: waiting requests fail, the store is closed, and the
    /// transport server (if the node serves one) stops. Returns once the
    /// store is closed (at once if the node had already stopped).
    pub async fn shutdown(&self) {
        let (reply, receiver) = oneshot::channel();
        if self.requests.send(Request::Shutdown { reply }).await.is_ok() {
            let _ = receiver.await;
        }
    }
}

/// Nanoseconds since the UNIX epoch: the only clock the node reads.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether the driver goes on after an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The task that owns the replica.
struct Driver {
    replica: Replica<DiskStorage>,
    peers: Peers,
    requests: mpsc::Receiver<Request>,
    inbound: mpsc::Receiver<Inbound>,
    /// Waiting proposals, with when each was proposed (commit latency).
    proposals: HashMap<ProposalId, (Reply<Applied>, Instant)>,
    reads: HashMap<ReadId, ReadJob>,
    /// Where reads run once their read index is applied.
    pool: ReadPool,
    stopped: watch::Sender<Option<String>>,
    shutdown_replies: Vec<oneshot::Sender<()>>,
    metrics: DriverMetrics,
    /// The leader this node last knew, to notice changes.
    leader: Option<u64>,
    /// When RocksDB's properties were last sampled.
    storage_sampled_at: Option<Instant>,
    /// Where the node's [`NodeView`] is published.
    view: watch::Sender<NodeView>,
    /// Where the group's members are published, for the transport.
    members: watch::Sender<Vec<u64>>,
    /// Where the members' addresses (as membership changes added them) are
    /// published, for the API's address book.
    addresses: watch::Sender<BTreeMap<u64, MemberAddresses>>,
}

impl Driver {
    fn id(&self) -> u64 {
        self.replica.id()
    }

    async fn run(mut self) -> Result<(), ConsensusError> {
        let tick = Duration::from_millis(self.replica.config().tick_ms.max(1));
        let mut ticker = tokio::time::interval(tick);
        // A driver that fell behind (a slow fsync) does not replay the ticks
        // it missed in a burst, which could start an election at once.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let result = loop {
            let flow = tokio::select! {
                _ = ticker.tick() => {
                    self.replica.tick();
                    self.observe_tick();
                    Flow::Continue
                }
                Some(inbound) = self.inbound.recv() => {
                    self.on_inbound(inbound);
                    Flow::Continue
                }
                request = self.requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    // Every handle is gone: nobody can use the node.
                    None => Flow::Stop,
                },
            };
            if flow == Flow::Stop || self.take_waiting() == Flow::Stop {
                break Ok(());
            }
            if let Err(error) = self.round() {
                break Err(error);
            }
        };
        self.stop(result)
    }

    /// Takes what else is waiting, up to the bound of each kind.
    fn take_waiting(&mut self) -> Flow {
        for _ in 0..ROUND_INPUTS_MAX {
            let Ok(inbound) = self.inbound.try_recv() else { break };
            self.on_inbound(inbound);
        }
        for _ in 0..ROUND_INPUTS_MAX {
            let Ok(request) = self.requests.try_recv() else { break };
            if self.on_request(request) == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// One round: advance the replica once (group commit), tell Raft what
    /// the transport reported, learn peer addresses, answer requests.
    fn round(&mut self) -> Result<(), ConsensusError> {
        let started = Instant::now();
        let snapshot_before = self.replica.storage().snapshot_index();
        let output = self.replica.advance(now_ns(), &mut self.peers)?;
        for report in self.peers.take_reports() {
            match report {
                Report::Unreachable(peer) => self.replica.report_unreachable(peer),
                Report::SnapshotFailed(peer) => {
                    self.metrics.snapshots_failed.increment(1);
                    self.replica.report_snapshot(peer, false);
                }
            }
        }
        for applied in &output.membership {
            tracing::info!(node = self.id(), index = applied.index, voters = ?applied.conf_state.voters, learners = ?applied.conf_state.learners, "membership changed");
            self.metrics.membership_changes.increment(1);
            self.peers.apply_membership(applied);
        }
        if let Some(index) = output.snapshot_installed {
            tracing::info!(node = self.id(), index, "snapshot installed");
            self.metrics.snapshots_installed.increment(1);
        }
        if !output.membership.is_empty() || output.snapshot_installed.is_some() {
            self.load_member_addresses()?;
        }
        for completion in output.completions {
            self.complete(completion);
        }
        if !output.membership.is_empty() || output.snapshot_installed.is_some() {
            self.publish_members();
        }
        self.publish_view();
        self.observe_round(started, snapshot_before, output.snapshot_installed.is_some());
        Ok(())
    }

    /// Reads the members' addresses the store keeps, points the transport
    /// at them and publishes them. They come from the applied membership
    /// changes (or a snapshot), agreed by the group, so they take precedence
    /// over the node's static configuration.
    fn load_member_addresses(&mut self) -> Result<(), ConsensusError> {
        let stored = self.replica.storage().ledger().member_addresses()?;
        let mut addresses = BTreeMap::new();
        for (node, context) in stored {
            let Some(member) = MemberAddresses::from_context(&context) else { continue };
            if node != self.id() {
                self.peers.set_address(node, member.raft.clone());
            }
            addresses.insert(node, member);
        }
        self.addresses.send_if_modified(|current| {
            let changed = *current != addresses;
            *current = addresses;
            changed
        });
        Ok(())
    }

    /// Publishes the group's members (voters and learners, ascending) to the
    /// transport, which accepts Raft traffic from them only.
    fn publish_members(&self) {
        self.members.send_replace(self.replica.members());
    }

    /// Publishes what the node is now, if it changed.
    fn publish_view(&self) {
        let replica = &self.replica;
        let view = NodeView {
            applied: replica.storage().applied().index,
            leader: replica.leader(),
            is_leader: replica.is_leader(),
            term: replica.term(),
            region: replica.region(),
        };
        self.view.send_if_modified(|current| {
            let changed = *current != view;
            *current = view;
            changed
        });
    }

    /// Records what one round did: its duration, the applied index, the
    /// queues, a snapshot made, a change of leader.
    fn observe_round(&mut self, started: Instant, snapshot_before: u64, installed: bool) {
        self.metrics.round_duration.record(started.elapsed());
        self.metrics.applied_index.set(self.replica.storage().applied().index as f64);
        let (proposals, events) = self.replica.queued();
        self.metrics.queue_proposals.set(proposals as f64);
        self.metrics.queue_events.set(events as f64);
        self.metrics.requests_waiting.set(self.requests.len() as f64);
        let snapshot_index = self.replica.storage().snapshot_index();
        // Installing a snapshot makes one too (what the node can send on).
        if snapshot_index != snapshot_before && !installed {
            tracing::info!(node = self.id(), index = snapshot_index, "snapshot made");
            self.metrics.snapshots_made.increment(1);
        }
        let leader = self.replica.leader();
        if leader != self.leader {
            self.leader = leader;
            let term = self.replica.status().term;
            self.metrics.term.set(term as f64);
            self.metrics.leader_id.set(leader.unwrap_or(0) as f64);
            self.metrics.is_leader.set(if self.replica.is_leader() { 1.0 } else { 0.0 });
            match leader {
                Some(leader) => {
                    tracing::info!(node = self.id(), leader, term, "leader changed");
                    self.metrics.leader_changes.increment(1);
                }
                None => tracing::info!(node = self.id(), term, "no leader"),
            }
        }
    }

    /// On each tick: the term and commit index, and RocksDB's properties
    /// when they are due.
    fn observe_tick(&mut self) {
        let status = self.replica.status();
        self.metrics.term.set(status.term as f64);
        self.metrics.commit_index.set(status.commit as f64);
        let interval = Duration::from_millis(STORAGE_METRICS_INTERVAL_MS);
        if self.storage_sampled_at.is_none_or(|sampled| sampled.elapsed() >= interval) {
            self.storage_sampled_at = Some(Instant::now());
            coffer_storage::metrics::record_rocksdb_metrics(self.replica.storage().ledger().db(), self.id());
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Message(message) => {
                if let Err(error) = self.replica.step(message) {
                    tracing::warn!(node = self.id(), %error, "message refused");
                }
            }
            Inbound::Unreachable(peer) => self.replica.report_unreachable(peer),
            Inbound::SnapshotSent { peer, delivered } => {
                let sent = if delivered { &self.metrics.snapshots_delivered } else { &self.metrics.snapshots_failed };
                sent.increment(1);
                self.replica.report_snapshot(peer, delivered);
            }
        }
    }

    fn on_request(&mut self, request: Request) -> Flow {
        match request {
            Request::Propose { operation, principal, reply } => {
                self.metrics.proposal_events.record(events(&operation) as f64);
                match self.replica.propose_as(operation, principal) {
                    Ok(id) => {
                        self.proposals.insert(id, (reply, Instant::now()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                    }
                }
            }
            Request::ChangeMembership { change, address, force, reply } => {
                let checked = match MemberAddresses::from_context(address.as_bytes()) {
                    _ if address.is_empty() => Ok(()),
                    None => Err(format!("{address:?} names no Raft address")),
                    Some(member) => check_address(&member.raft).and_then(|()| match &member.api {
                        Some(api) => check_address(api),
                        None => Ok(()),
                    }),
                };
                let result =
                    checked.map_err(|reason| RequestError::Invalid { field: "address", reason }).and_then(|()| {
                        self.replica.propose_membership(change, address.into_bytes(), force).map_err(Into::into)
                    });
                match result {
                    Ok(id) => {
                        self.proposals.insert(id, (reply, Instant::now()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Request::Read { job } => match self.replica.read() {
                Ok(id) => {
                    self.reads.insert(id, job);
                }
                Err(error) => self.pool.read(job, Err(error.into())),
            },
            Request::Status { reply } => {
                let _ = reply.send(self.replica.status());
            }
            Request::TransferLeader { target, reply } => {
                let _ = reply.send(self.replica.transfer_leader(target).map_err(Into::into));
            }
            Request::SetPeerAddress { peer, address } => self.peers.set_address(peer, address),
            Request::ProposeRegion { op, note, reply } => match self.replica.propose_region_as(op, note) {
                Ok(id) => {
                    self.proposals.insert(id, (reply, Instant::now()));
                }
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            },
            Request::Entries { from, max_bytes, reply } => {
                let _ = reply.send(self.replica.applied_entries(from, max_bytes));
            }
            Request::RetainLog { from } => self.replica.retain_log_from(from),
            Request::Shutdown { reply } => {
                self.shutdown_replies.push(reply);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn complete(&mut self, completion: Completion) {
        match completion {
            Completion::Proposal { id, result } => {
                if let Some((reply, proposed_at)) = self.proposals.remove(&id) {
                    if result.is_ok() {
                        self.metrics.commit_latency.record(proposed_at.elapsed());
                    }
                    // The caller may have given up waiting: nothing to do.
                    let _ = reply.send(result.map_err(Into::into));
                }
            }
            Completion::Read { id, result } => {
                // The read index is applied (written to the store): a view
                // opened from now on holds it.
                if let Some(job) = self.reads.remove(&id) {
                    self.pool.read(job, result.map(|_| ()).map_err(Into::into));
                }
            }
        }
    }

    /// Stops: records why, fails every waiting request, closes the store,
    /// then answers the shutdown requests.
    fn stop(self, result: Result<(), ConsensusError>) -> Result<(), ConsensusError> {
        let id = self.id();
        let reason = match &result {
            Ok(()) => "shut down".to_owned(),
            Err(error) => {
                tracing::error!(node = id, %error, "node stopped by a fatal error");
                format!("fatal error: {error}")
            }
        };
        // First the reason, so every failed request below reports it.
        self.stopped.send_replace(Some(reason.clone()));
        let Self { replica, peers, mut requests, inbound, proposals, reads, stopped, mut shutdown_replies, .. } = self;
        let store = Arc::downgrade(replica.storage().ledger().db());
        requests.close();
        let mut late = Vec::new();
        while let Ok(request) = requests.try_recv() {
            late.push(request);
        }
        let failed = || RequestError::Stopped { node: id, reason: reason.clone() };
        for (_, (reply, _)) in proposals {
            let _ = reply.send(Err(failed()));
        }
        for (_, job) in reads {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || job(Err(failed()))));
        }
        for request in late {
            if let Request::Shutdown { reply } = request {
                shutdown_replies.push(reply);
            }
            // Any other request is dropped: its caller sees the reason.
        }
        drop((peers, inbound, requests, replica));
        // Reads running on the pool hold the store open: wait for them, so
        // that once this node reports itself stopped its store is closed
        // (and can be opened again).
        let waiting = Instant::now();
        while store.strong_count() > 0 && waiting.elapsed() < Duration::from_millis(STOP_READS_WAIT_MS) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if store.strong_count() > 0 {
            tracing::warn!(node = id, "reads still hold the store open after {STOP_READS_WAIT_MS} ms");
        }
        tracing::info!(node = id, %reason, "node stopped");
        for reply in shutdown_replies {
            let _ = reply.send(());
        }
        drop(stopped);
        result
    }
}

/// Opens (and on a fresh store, bootstraps) the store and the replica.
fn open_replica(config: &NodeConfig) -> Result<Replica<DiskStorage>, StartError> {
    let mut storage = DiskStorage::open(&config.data_dir, &config.storage)?;
    storage.label_metrics(config.consensus.node_id);
    let fresh = storage.applied() == AppliedState::default() && storage.store().log.last_index() == 0;
    if let (true, Some(voters)) = (fresh, &config.bootstrap_voters) {
        storage.bootstrap(voters)?;
        tracing::info!(node = config.consensus.node_id, ?voters, "cluster bootstrapped");
    }
    // A snapshot received before a restart was either installed (and its
    // directory removed) or is useless now: Raft sends a new one.
    let any_incoming = storage.snapshot_dirs().incoming(0, 0);
    if let Some(incoming) = any_incoming.parent() {
        snapshot::remove_dir(incoming)?;
    }
    Ok(Replica::new(config.consensus.clone(), storage)?)
}

/// The driver thread: opens the node, says whether it could, then runs it.
fn driver_thread(
    config: NodeConfig,
    runtime: tokio::runtime::Handle,
    requests: mpsc::Receiver<Request>,
    inbound: (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>),
    stopped: watch::Sender<Option<String>>,
    (view, members, addresses): Publishers,
    ready: oneshot::Sender<Result<(SnapshotDirs, ReadPool), StartError>>,
) -> Result<(), ConsensusError> {
    let local = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(local) => local,
        Err(error) => {
            let _ = ready.send(Err(StartError::Thread(error)));
            return Ok(());
        }
    };
    let replica = match open_replica(&config) {
        Ok(replica) => replica,
        Err(error) => {
            let _ = ready.send(Err(error));
            return Ok(());
        }
    };
    let dirs = replica.storage().snapshot_dirs().clone();
    let pool = ReadPool::new(config.consensus.node_id, replica.storage().ledger().db(), runtime.clone(), config.reads);
    let (inbound_sender, inbound) = inbound;
    let peer_addresses = config.peers.into_iter().collect();
    let peers =
        Peers::new(replica.id(), runtime, peer_addresses, dirs.clone(), inbound_sender, config.security.clone());
    let driver = Driver {
        replica,
        peers,
        requests,
        inbound,
        proposals: HashMap::new(),
        reads: HashMap::new(),
        pool: pool.clone(),
        stopped,
        shutdown_replies: Vec::new(),
        metrics: DriverMetrics::new(config.consensus.node_id),
        leader: None,
        storage_sampled_at: None,
        view,
        members,
        addresses,
    };
    let mut driver = driver;
    if let Err(error) = driver.load_member_addresses() {
        let _ = ready.send(Err(StartError::Consensus(error)));
        return Ok(());
    }
    driver.publish_members();
    driver.publish_view();
    if ready.send(Ok((dirs, pool))).is_err() {
        // The caller of start_node went away: nobody will use the node.
        return Ok(());
    }
    local.block_on(driver.run())
}

/// Where the driver publishes what the node's handle and transport read:
/// its view, its members, its members' addresses.
type Publishers = (watch::Sender<NodeView>, watch::Sender<Vec<u64>>, watch::Sender<BTreeMap<u64, MemberAddresses>>);

/// A running node's driver thread: it ends when the node stops, with the
/// fatal error that stopped it, if one did.
pub type DriverThread = std::thread::JoinHandle<Result<(), ConsensusError>>;

/// Starts a node: opens its store in `config.data_dir` (bootstrapping a
/// fresh one when `bootstrap_voters` says so), starts its driver thread and,
/// when `config.listen_addr` is set, serves the peer transport there.
/// Must be called inside a multi-threaded tokio runtime, which runs the
/// transport. The driver thread ends with the node; its result is the
/// fatal error that stopped the node, if one did.
pub async fn start_node(config: NodeConfig) -> Result<(NodeHandle, DriverThread), StartError> {
    config.check()?;
    let node_id = config.consensus.node_id;
    let security = config.security.clone();
    let (listener, listen_addr) = match config.listen_addr {
        Some(addr) => {
            let bind_error = |source| StartError::Bind { addr, source };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            (Some(listener), Some(local))
        }
        None => (None, None),
    };
    let runtime = tokio::runtime::Handle::current();
    let capacity = config.requests_max;
    let (request_sender, requests) = mpsc::channel(capacity);
    let (inbound_sender, inbound) = mpsc::channel(INBOUND_MESSAGES_MAX);
    let (stopped_sender, stopped) = watch::channel(None);
    let (view_sender, view) = watch::channel(NodeView::default());
    let (members_sender, members) = watch::channel(Vec::new());
    let (addresses_sender, addresses) = watch::channel(BTreeMap::new());
    let (ready_sender, ready) = oneshot::channel();
    let thread_inbound = (inbound_sender.clone(), inbound);
    let thread_runtime = runtime.clone();
    let thread = std::thread::Builder::new()
        .name(format!("coffer-node-{node_id}"))
        .spawn(move || {
            driver_thread(
                config,
                thread_runtime,
                requests,
                thread_inbound,
                stopped_sender,
                (view_sender, members_sender, addresses_sender),
                ready_sender,
            )
        })
        .map_err(StartError::Thread)?;
    let (dirs, reads) = ready.await.map_err(|_| StartError::DriverExited)??;
    let service = RaftService::new(node_id, inbound_sender, dirs, members);
    if let Some(listener) = listener {
        runtime.spawn(serve(node_id, listener, service.clone(), stopped.clone(), security));
    }
    let handle = NodeHandle {
        id: node_id,
        capacity,
        requests: request_sender,
        stopped,
        service,
        listen_addr,
        view,
        reads,
        addresses,
    };
    Ok((handle, thread))
}

/// Serves the transport on `listener` until the node stops.
async fn serve(
    node_id: u64,
    listener: TcpListener,
    service: RaftService,
    mut stopped: watch::Receiver<Option<String>>,
    security: Security,
) {
    let incoming = security.incoming(listener, Listener::Raft, format!("node {node_id} raft"));
    let shutdown = async move {
        // Err: the driver is gone, which is a stop too.
        let _ = stopped.wait_for(Option::is_some).await;
    };
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_millis(KEEPALIVE_INTERVAL_MS)))
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(error) = served {
        tracing::error!(node = node_id, %error, "the transport server failed");
    }
}
