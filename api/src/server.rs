//! The gRPC services of one node: `coffer.v1.LedgerService` and
//! `coffer.v1.AdminService` over a consensus [`Node`], plus gRPC health
//! checking and server reflection ([`ApiServer::serve`]).
//!
//! Thin on purpose: decode and check the request's shape ([`convert`]),
//! hand it to the node, encode the answer; every failure becomes a status in
//! [`status`](crate::status).
//!
//! - **Writes** (`Create*`) are proposed to the node. On a follower the node
//!   answers "not the leader"; the follower then forwards the original
//!   request to the leader's client address (once: a forwarded request is
//!   marked and never forwarded again), or, with forwarding off or the
//!   leader's address unknown, answers `UNAVAILABLE` with the leader hint.
//! - **Amounts** are parsed at their ledger's scale. Ledgers are immutable,
//!   so scales are cached once seen; a ledger this node does not know is
//!   looked up again with a linearizable read (it may have been created at
//!   the leader a moment ago) before an amount of it is parsed as a whole
//!   number (the ledger then answers per event, e.g. `debit_account_not_found`).
//! - **Reads** are linearizable (ReadIndex) unless the request sets `stale`;
//!   every response says which node served it at which applied index.
//!   Every read runs on the node's read pool against a snapshot, never on
//!   its Raft thread; `QueryTransfers` and `QueryAccounts` are answered
//!   from secondary indexes in at most `QUERY_SEEKS_MAX` index reads.
//! - **Change feeds** (`SubscribeChanges`) read pages of
//!   [`FEED_PAGE_CHANGES`] changes from this node's state and send them
//!   through a channel of [`FEED_CHANNEL_CHANGES`], so a slow client slows
//!   its feed's reads and nothing buffers without bound; a feed that caught
//!   up waits for the node's last timestamp, which one task polls every
//!   [`FEED_POLL_MS`] while any feed is open. At most
//!   [`ServerConfig::feed_streams_max`] feeds run at once.
//! - **Deadlines**: the request's `grpc-timeout`, bounded by
//!   [`ServerConfig::request_timeout_ms`], answers `DEADLINE_EXCEEDED`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use coffer_consensus::audit::principal_at;
use coffer_consensus::raft::StateRole;
use coffer_consensus::{
    Applied, MemberAddresses, MembershipChange, NodeStatus, Outcome, ProposalError, RequestError, StorageError,
};
use coffer_ledger::{
    budget_warning, get_account_balances, get_account_transfers, lookup_accounts, lookup_transfers, query_accounts,
    query_transfers, read_changes, trial_balance, trial_balance_as_of, AccountFlags, AccountId, ChangePage,
    ChangedRecord, LedgerId, Operation, OperationResults, QueryError, ResolvedChange, Store, StoreError, Transfer,
    TransferId, BATCH_EVENTS_MAX,
};
use coffer_security::{Expect, Listener, Security};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::access::{Access, AccessLayer, Caller, Role, PRINCIPAL_METADATA_KEY};
use crate::convert::{self, Amounts, FieldError};
use crate::node::{BatchPrincipals, Node};
use crate::packed;
use crate::proto;
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::admin_service_server::{AdminService, AdminServiceServer};
use crate::proto::ledger_service_client::LedgerServiceClient;
use crate::proto::ledger_service_server::{LedgerService, LedgerServiceServer};
use crate::status;

mod close_year;
mod reconcile;

/// Bytes one event (a transfer, the largest) takes on the wire at most:
/// five 128-bit decimal ids of up to 39 digits, an amount of up to 41
/// characters, eight small integers and up to eight flags, with tags and
/// lengths, come to about 310 bytes.
pub const EVENT_WIRE_BYTES_MAX: usize = 512;
/// The largest message a server or client decodes or encodes: a full batch
/// of [`BATCH_EVENTS_MAX`] events (or of looked-up accounts or transfers)
/// plus room for the envelope.
pub const MESSAGE_BYTES_MAX: usize = BATCH_EVENTS_MAX * EVENT_WIRE_BYTES_MAX + (64 << 10);
/// The default bound on how long any request may wait for the node.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The default bound on how long `Status` waits for each other node.
pub const STATUS_PEER_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// How long a follower waits to connect to the leader it forwards to.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Concurrent requests (HTTP/2 streams) on one client connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// Connections to other nodes kept open (for forwarding and `Status`).
pub const PEER_CHANNELS_MAX: usize = 64;
/// Ledger scales cached (ledgers are immutable, and few).
pub const SCALES_CACHED_MAX: usize = 4_096;
/// How often the health service checks whether the node stopped.
pub const HEALTH_POLL_MS: u64 = 500;
/// Changes a change feed reads from the node at once: one `read_stale` of
/// about a millisecond on the driver, and at most 1,024 resolved changes
/// (about 200 bytes each) held by the feed while it sends them.
pub const FEED_PAGE_CHANGES: u32 = 1_024;
/// Encoded changes waiting to be sent on one feed (at most about 600 bytes
/// each). With a page in hand, a feed holds under 250 KiB, and
/// [`FEED_STREAMS_MAX`] feeds under 64 MiB.
pub const FEED_CHANNEL_CHANGES: usize = 64;
/// How often the node's last timestamp is polled while a feed waits for new
/// changes (one read for all the server's feeds).
pub const FEED_POLL_MS: u64 = 25;
/// The default bound on change feeds one server runs at once
/// ([`ServerConfig::feed_streams_max`]).
pub const FEED_STREAMS_MAX: usize = 256;
/// The most a server answers before a client's deadline, so that it, not
/// the transport, reports `DEADLINE_EXCEEDED` (a tenth of short deadlines).
const DEADLINE_MARGIN_MAX: Duration = Duration::from_millis(50);

/// How one node's API server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The address book: every node's client address (`host:port`) by node
    /// id, this node's included. It names the leader in `UNAVAILABLE`
    /// answers and is where writes are forwarded and `Status` asks.
    pub addresses: BTreeMap<u64, String>,
    /// Whether a follower forwards writes to the leader (otherwise it
    /// answers `UNAVAILABLE` with the leader's address). Default: `true`.
    pub forward_writes: bool,
    /// The longest any request waits for the node, whatever its deadline.
    /// Default: [`REQUEST_TIMEOUT_MS_DEFAULT`].
    pub request_timeout_ms: u64,
    /// How long `Status` waits for each other node.
    /// Default: [`STATUS_PEER_TIMEOUT_MS_DEFAULT`].
    pub status_peer_timeout_ms: u64,
    /// Change feeds served at once; one more is refused with
    /// `RESOURCE_EXHAUSTED`. Default: [`FEED_STREAMS_MAX`].
    pub feed_streams_max: usize,
    /// The other region's client addresses (disaster recovery): a standby
    /// names them when it refuses a write. Default: none.
    pub other_region: Vec<String>,
}

impl ServerConfig {
    /// The defaults, with this address book.
    pub fn new(addresses: BTreeMap<u64, String>) -> Self {
        Self {
            addresses,
            forward_writes: true,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            status_peer_timeout_ms: STATUS_PEER_TIMEOUT_MS_DEFAULT,
            feed_streams_max: FEED_STREAMS_MAX,
            other_region: Vec::new(),
        }
    }

    fn check(&self) -> Result<(), ServerError> {
        let invalid = |field: String, reason: String| Err(ServerError::Config { field, reason });
        for (node, address) in &self.addresses {
            if *node == 0 {
                return invalid("addresses".into(), "0 is not a node id".into());
            }
            if let Err(reason) = endpoint(address) {
                return invalid(format!("addresses[{node}]"), reason);
            }
        }
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms".into(), "must be at least 1".into());
        }
        if self.status_peer_timeout_ms == 0 {
            return invalid("status_peer_timeout_ms".into(), "must be at least 1".into());
        }
        if self.feed_streams_max == 0 || self.feed_streams_max > Semaphore::MAX_PERMITS {
            return invalid("feed_streams_max".into(), format!("must be between 1 and {}", Semaphore::MAX_PERMITS));
        }
        Ok(())
    }
}

/// Why the API server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The reflection service could not load the protocol's descriptors.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// An endpoint for another node's `address` (`host:port`), or why it is
/// not one.
fn endpoint(address: &str) -> Result<tonic::transport::Endpoint, String> {
    coffer_security::tls::endpoint(address, Duration::from_millis(CONNECT_TIMEOUT_MS))
}

/// When a request must be answered by.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    fn remaining(self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Runs `future` until the deadline; `what` names it in the error.
    async fn run<T>(self, what: &str, write: bool, future: impl Future<Output = T>) -> Result<T, Status> {
        tokio::time::timeout_at(self.at, future).await.map_err(|_| status::deadline_exceeded(what, self.budget, write))
    }
}

/// What proposing a write came to.
enum Proposed<R> {
    /// Applied at the leader (this node): the response to send.
    Applied(R),
    /// This node is a follower: forward the request to the leader at this address.
    Forward(String),
}

/// State shared by both services of one node.
struct Shared<N: Node> {
    node: N,
    config: ServerConfig,
    channels: Mutex<HashMap<String, Channel>>,
    scales: RwLock<HashMap<LedgerId, u8>>,
    feeds: Feeds,
    /// Disaster recovery, when the node is one of two regions: it admits
    /// writes (lease, lag) and says when one may be acknowledged (sync).
    dr: Option<Arc<coffer_dr::Dr>>,
    /// How its connections (served, and to other nodes) are secured.
    security: Security,
    /// Who may call what.
    access: Arc<Access>,
    /// Where refused and administrative calls are recorded.
    audit_log: Option<Arc<crate::audit_log::AuditLog>>,
}

/// What the change feeds of one server share.
struct Feeds {
    /// One permit per running feed: at most [`ServerConfig::feed_streams_max`].
    streams: Arc<Semaphore>,
    /// The node's last event timestamp as last polled. `u64::MAX` once the
    /// node stopped, which wakes every waiting feed to find that out.
    tail: watch::Sender<u64>,
    /// Whether a task polls `tail` (it does while any feed holds a receiver).
    polling: Mutex<bool>,
    /// Set when the server shuts down: every feed ends, so that the
    /// shutdown, which waits for open streams, finishes.
    closing: watch::Sender<bool>,
}

impl Feeds {
    fn new(streams_max: usize) -> Self {
        Self {
            streams: Arc::new(Semaphore::new(streams_max)),
            tail: watch::Sender::new(0),
            polling: Mutex::new(false),
            closing: watch::Sender::new(false),
        }
    }
}

impl<N: Node> Shared<N> {
    fn id(&self) -> u64 {
        self.node.id()
    }

    /// Where node `node`'s client API is: the static address book, then the
    /// addresses membership changes recorded.
    fn address_of(&self, node: u64) -> Option<String> {
        self.config.addresses.get(&node).cloned().or_else(|| self.node.member_api_address(node))
    }

    fn fail(&self, error: &RequestError) -> Status {
        status::request_error(self.id(), error, |node| self.address_of(node), &self.config.other_region)
    }

    fn deadline(&self, metadata: &MetadataMap) -> Deadline {
        let bound = Duration::from_millis(self.config.request_timeout_ms);
        let budget = match status::grpc_timeout(metadata) {
            Some(timeout) => timeout.saturating_sub((timeout / 10).min(DEADLINE_MARGIN_MAX)).min(bound),
            None => bound,
        };
        Deadline { at: Instant::now() + budget, budget }
    }

    /// A connection to another node (kept, bounded).
    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = endpoint(address).map_err(|reason| status::internal(format!("address book: {reason}")))?;
        let channel = self.security.connect_lazy(endpoint, Expect::Node(None));
        if channels.len() >= PEER_CHANNELS_MAX {
            channels.clear();
        }
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Runs `f` on the node's state: linearizable, or local when `stale`.
    async fn read<F, R>(&self, stale: bool, deadline: Deadline, f: F) -> Result<(proto::Served, R), Status>
    where
        F: for<'v> FnOnce(&N::State<'v>) -> R + Send + 'static,
        R: Send + 'static,
    {
        let read = async {
            if stale {
                self.node.read_stale(f).await
            } else {
                self.node.read(f).await
            }
        };
        let (index, value) = deadline.run("the read", false, read).await?.map_err(|error| self.fail(&error))?;
        Ok((proto::Served { node_id: self.id(), applied_index: index, stale }, value))
    }

    /// The scales of `ledgers` that exist. Cached ones first; the rest from
    /// a stale read, and whatever that misses from a linearizable one.
    async fn scales(&self, ledgers: BTreeSet<LedgerId>, deadline: Deadline) -> Result<BTreeMap<LedgerId, u8>, Status> {
        let mut scales = BTreeMap::new();
        let mut missing = BTreeSet::new();
        {
            let cache = self.scales.read().unwrap_or_else(PoisonError::into_inner);
            for ledger in ledgers {
                match cache.get(&ledger) {
                    Some(scale) => {
                        scales.insert(ledger, *scale);
                    }
                    None => {
                        missing.insert(ledger);
                    }
                }
            }
        }
        for stale in [true, false] {
            if missing.is_empty() {
                break;
            }
            let wanted = missing.clone();
            let (_, found) = self.read(stale, deadline, move |state| scales_of(state, wanted)).await?;
            let found = found.map_err(|error| status::store_error(&error))?;
            let mut cache = self.scales.write().unwrap_or_else(PoisonError::into_inner);
            if cache.len() + found.len() > SCALES_CACHED_MAX {
                cache.clear();
            }
            for (ledger, scale) in found {
                cache.insert(ledger, scale);
                scales.insert(ledger, scale);
                missing.remove(&ledger);
            }
        }
        Ok(scales)
    }

    /// The scales an amount `unit` needs: the ledgers' own for decimal
    /// amounts, none for integer minor units.
    async fn scales_for(
        &self,
        unit: proto::AmountUnit,
        ledgers: BTreeSet<LedgerId>,
        deadline: Deadline,
    ) -> Result<BTreeMap<LedgerId, u8>, Status> {
        match unit {
            proto::AmountUnit::Decimal => self.scales(ledgers, deadline).await,
            proto::AmountUnit::Minor => Ok(BTreeMap::new()),
        }
    }

    /// Proposes `operation` and turns its results into the `rpc`'s response
    /// with `answer` (which returns `None` for results of another kind). On
    /// a follower, says where to forward the request instead, if it may be
    /// forwarded.
    async fn propose<R>(
        &self,
        (operation, caller): (Operation, &Caller),
        deadline: Deadline,
        forwarded: bool,
        rpc: &'static str,
        answer: impl FnOnce(proto::Served, OperationResults) -> Option<R>,
    ) -> Result<Proposed<R>, Status> {
        if let Some(dr) = &self.dr {
            dr.admit().map_err(|refusal| refusal.status())?;
        }
        let proposed = deadline.run("the write", true, self.node.propose(operation, caller.principal())).await?;
        if let (Some(dr), Ok(Applied { index, .. })) = (&self.dr, &proposed) {
            dr.acknowledge(*index, deadline.remaining()).await.map_err(|refusal| refusal.status())?;
        }
        match proposed {
            Ok(Applied { index, outcome: Outcome::Operation(results) }) => {
                let served = proto::Served { node_id: self.id(), applied_index: index, stale: false };
                answer(served, results)
                    .map(Proposed::Applied)
                    .ok_or_else(|| status::internal(format!("the node answered {rpc} with other results")))
            }
            Ok(Applied { outcome: Outcome::Membership(_) | Outcome::Region(_), .. }) => {
                Err(status::internal("the node answered a write with a membership or region change"))
            }
            Err(RequestError::Proposal(ProposalError::NotLeader { leader: Some(leader) }))
                if self.config.forward_writes && !forwarded && leader != self.id() =>
            {
                match self.address_of(leader) {
                    Some(address) => Ok(Proposed::Forward(address)),
                    None => Err(status::not_leader(self.id(), Some(leader), None)),
                }
            }
            Err(error) => Err(self.fail(&error)),
        }
    }

    /// A client to the leader at `address`, for forwarding.
    fn leader_client(&self, address: &str) -> Result<LedgerServiceClient<Channel>, Status> {
        Ok(LedgerServiceClient::new(self.channel(address)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    /// The request to forward to the leader: the same message, marked, with
    /// the time left.
    /// The request forwarded to the leader for `caller`, whom it names
    /// (the leader checks that principal's grants again).
    fn forward_request<T>(&self, message: T, deadline: Deadline, caller: &Caller) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(deadline.remaining());
        request.metadata_mut().insert(status::FORWARDED_METADATA_KEY, MetadataValue::from(self.id()));
        if let Some(principal) = caller.forwarded_for().and_then(|name| MetadataValue::try_from(name).ok()) {
            request.metadata_mut().insert(PRINCIPAL_METADATA_KEY, principal);
        }
        request
    }

    /// The leader's answer to a forwarded request. A leader this node cannot
    /// reach is reported as `UNAVAILABLE` naming it, so the client can try it.
    fn forwarded<T>(&self, address: &str, answer: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
        answer.map(|response| Response::new(response.into_inner())).map_err(|error| {
            if error.code() != tonic::Code::Unavailable || status::leader_hint(&error).is_some() {
                return error;
            }
            // A status made here by the transport (the leader did not
            // answer) carries its cause; one the leader sent does not.
            let unreachable = std::error::Error::source(&error).is_some();
            let mut error = match unreachable {
                true => Status::with_metadata(
                    tonic::Code::Unavailable,
                    format!(
                        "node {} forwarded the request to the leader at {address}, which did not answer ({}); \
                         retry: the cluster elects a new leader if it is down",
                        self.id(),
                        error.message()
                    ),
                    error.metadata().clone(),
                ),
                false => error,
            };
            if let Ok(value) = MetadataValue::try_from(address) {
                error.metadata_mut().insert(status::LEADER_METADATA_KEY, value);
            }
            error
        })
    }
}

impl<N: Node> Shared<N> {
    /// A receiver of the node's last event timestamp, polled by one task
    /// while any feed holds a receiver.
    fn watch_tail(self: &Arc<Self>) -> watch::Receiver<u64> {
        let mut polling = self.feeds.polling.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.feeds.tail.subscribe();
        if !*polling {
            *polling = true;
            tokio::spawn(poll_tail(self.clone()));
        }
        receiver
    }

    /// `shutdown`, then every feed is told to end.
    async fn close_feeds_after(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.feeds.closing.send_replace(true);
    }
}

/// Polls the node's last event timestamp every [`FEED_POLL_MS`] into the
/// feeds' `tail`, until no feed listens (decided under the same lock that
/// starts a poller, so a feed that subscribes is always served) or the node
/// stops (then `tail` becomes `u64::MAX`, waking every feed to find out).
async fn poll_tail<N: Node>(shared: Arc<Shared<N>>) {
    let mut poll = tokio::time::interval(Duration::from_millis(FEED_POLL_MS));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        {
            let mut polling = shared.feeds.polling.lock().unwrap_or_else(PoisonError::into_inner);
            if shared.node.is_stopped() {
                shared.feeds.tail.send_replace(u64::MAX);
            }
            if shared.feeds.tail.receiver_count() == 0 || shared.node.is_stopped() {
                *polling = false;
                return;
            }
        }
        // A failed poll (an overloaded driver) is tried again next tick.
        if let Ok((_, Ok(last_timestamp))) = shared.node.read_stale(|state| state.last_timestamp()).await {
            shared.feeds.tail.send_if_modified(|tail| {
                let newer = last_timestamp > *tail;
                if newer {
                    *tail = last_timestamp;
                }
                newer
            });
        }
    }
}

/// A page of changes read for a feed, with what encoding it needs.
struct FeedPage {
    page: ChangePage,
    /// The principal of each change of the page (empty for none).
    principals: Vec<String>,
    /// The budget warning each change of the page raised, if any.
    warnings: Vec<Option<proto::BudgetWarning>>,
    /// The node's last event timestamp when the page was read.
    last_timestamp: u64,
    scales: BTreeMap<LedgerId, u8>,
    served: proto::Served,
}

/// One client's change feed: reads pages after its cursor from this node's
/// state and sends them, until the client goes away, the node stops or the
/// server shuts down.
struct Feed<N: Node> {
    shared: Arc<Shared<N>>,
    /// The last change examined: the next page starts after it.
    cursor: u64,
    ledger: LedgerId,
    unit: proto::AmountUnit,
    sender: mpsc::Sender<Result<proto::Change, Status>>,
    tail: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
}

impl<N: Node> Feed<N> {
    /// Runs the feed, holding one of the server's feed permits.
    async fn run(mut self, _permit: OwnedSemaphorePermit) {
        let Err(status) = self.serve().await else {
            return;
        };
        // The client may have stopped reading: the last word waits no longer
        // than a request may.
        let timeout = Duration::from_millis(self.shared.config.request_timeout_ms);
        let _ = tokio::time::timeout(timeout, self.sender.send(Err(status))).await;
    }

    /// Sends every change after the cursor and then each new one. `Ok` once
    /// the client went away; the status that ends the feed otherwise.
    async fn serve(&mut self) -> Result<(), Status> {
        loop {
            let FeedPage { page, principals, warnings, last_timestamp, scales, served } = self.read_page().await?;
            let amounts = amounts_of(self.unit, &scales);
            for ((change, principal), warning) in page.changes.iter().zip(principals).zip(warnings) {
                let mut wire = convert::change_to_wire(change, amounts, served);
                wire.principal = principal;
                wire.budget_warning = warning;
                tokio::select! {
                    sent = self.sender.send(Ok(wire)) => {
                        if sent.is_err() {
                            return Ok(());
                        }
                    }
                    _ = self.closing.wait_for(|closing| *closing) => return Err(status::feed_closed(self.shared.id())),
                }
            }
            self.cursor = page.cursor;
            if page.caught_up {
                tokio::select! {
                    waited = self.tail.wait_for(|tail| *tail > last_timestamp) => {
                        if waited.is_err() {
                            return Err(status::feed_closed(self.shared.id()));
                        }
                    }
                    () = self.sender.closed() => return Ok(()),
                    _ = self.closing.wait_for(|closing| *closing) => return Err(status::feed_closed(self.shared.id())),
                }
            }
        }
    }

    /// The next page after the cursor, from this node's state as it is now
    /// (one consistent state per page), with the scales of its ledgers.
    async fn read_page(&self) -> Result<FeedPage, Status> {
        let (cursor, ledger) = (self.cursor, self.ledger);
        let decimal = self.unit == proto::AmountUnit::Decimal;
        let read = self.shared.node.read_stale(move |state| {
            let page = read_changes(state, cursor, ledger, FEED_PAGE_CHANGES)?;
            let principals = principals_of(state, &page.changes).map_err(StoreError::from)?;
            let warnings = budget_warnings_of(state, &page.changes)?;
            let scales = match decimal {
                true => scales_of(state, page.changes.iter().map(|change| change.record.ledger()).collect())?,
                false => BTreeMap::new(),
            };
            Ok::<_, QueryError>((page, principals, warnings, state.last_timestamp()?, scales))
        });
        let deadline = self.shared.deadline(&MetadataMap::new());
        let (index, found) =
            deadline.run("the feed's read", false, read).await?.map_err(|error| self.shared.fail(&error))?;
        let (page, principals, warnings, last_timestamp, scales) =
            found.map_err(|error| status::query_error(&error))?;
        let served = proto::Served { node_id: self.shared.id(), applied_index: index, stale: true };
        Ok(FeedPage { page, principals, warnings, last_timestamp, scales, served })
    }
}

fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(status::FORWARDED_METADATA_KEY)
}

/// The principal of the batch each of `changes` (time-ordered) came from,
/// from the audit trail; empty for a change of no client batch (a pending
/// transfer's expiry) or of a batch applied before principals were recorded.
fn principals_of<S: BatchPrincipals + ?Sized>(
    state: &S,
    changes: &[ResolvedChange],
) -> Result<Vec<String>, StorageError> {
    let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
        return Ok(Vec::new());
    };
    let spans = state.batch_spans(first.timestamp, last.timestamp)?;
    Ok(changes.iter().map(|change| principal_at(&spans, change.timestamp).unwrap_or_default().to_owned()).collect())
}

/// The budget warning each of `changes` raised: a new transfer that took
/// its debit account across its ledger's warning share (the rule the state
/// machine counts by, [`coffer_ledger::budget_warning`], applied to the
/// balances the change carries).
fn budget_warnings_of<S: Store + ?Sized>(
    state: &S,
    changes: &[ResolvedChange],
) -> Result<Vec<Option<proto::BudgetWarning>>, StoreError> {
    let mut warn_percents = BTreeMap::new();
    let mut warnings = Vec::with_capacity(changes.len());
    for change in changes {
        let warning = match (&change.record, &change.balances) {
            (ChangedRecord::TransferCreated(transfer), Some(balances)) if !transfer.flags.is_post_or_void() => {
                let warn_percent = match warn_percents.get(&transfer.ledger) {
                    Some(warn_percent) => *warn_percent,
                    None => {
                        let warn_percent = state.ledger(transfer.ledger)?.map_or(0, |ledger| ledger.warn_percent);
                        warn_percents.insert(transfer.ledger, warn_percent);
                        warn_percent
                    }
                };
                let debit = &balances.debit;
                let after = debit.debits_pending.saturating_add(debit.debits_posted);
                let flags = match warn_percent {
                    0 => AccountFlags::NONE,
                    _ => state.account(transfer.debit_account_id)?.map_or(AccountFlags::NONE, |account| account.flags),
                };
                let before = after.saturating_sub(transfer.amount);
                budget_warning(warn_percent, flags, before, after, debit.credits_posted).map(|share| {
                    proto::BudgetWarning {
                        account_id: transfer.debit_account_id.0.to_string(),
                        share_percent: u32::from(share),
                        warn_percent: u32::from(warn_percent),
                    }
                })
            }
            _ => None,
        };
        warnings.push(warning);
    }
    Ok(warnings)
}

/// The scales of those of `ledgers` that exist.
fn scales_of<S: Store + ?Sized>(state: &S, ledgers: BTreeSet<LedgerId>) -> Result<BTreeMap<LedgerId, u8>, StoreError> {
    let mut scales = BTreeMap::new();
    for ledger in ledgers {
        if let Some(found) = state.ledger(ledger)? {
            scales.insert(ledger, found.scale);
        }
    }
    Ok(scales)
}

/// The field that carries packed transfers.
const PACKED_TRANSFERS: &str = "packed_transfers";

/// The transfers of a request that packed them: only those (`transfers`
/// empty), amounts only in minor units (said by `amount_unit`).
fn packed_transfers(message: &proto::CreateTransfersRequest) -> Result<Vec<Transfer>, FieldError> {
    if !message.transfers.is_empty() {
        let reason = format!("set together with {} transfers: send one of the two", message.transfers.len());
        return Err(FieldError::new(PACKED_TRANSFERS, reason));
    }
    if convert::amount_unit("amount_unit", message.amount_unit)? != proto::AmountUnit::Minor {
        let reason = "must be AMOUNT_UNIT_MINOR with packed_transfers (their amounts are counts of minor units)";
        return Err(FieldError::new("amount_unit", reason));
    }
    packed::transfers_from_packed(PACKED_TRANSFERS, &message.packed_transfers)
}

/// Whether an amount's text reads the same at every scale (so parsing it
/// needs no ledger).
fn scale_free(text: &str) -> bool {
    text.is_empty() || text == "0" || text == convert::AMOUNT_MAX_TEXT
}

fn amounts_of(unit: proto::AmountUnit, scales: &BTreeMap<LedgerId, u8>) -> Amounts<'_> {
    match unit {
        proto::AmountUnit::Minor => Amounts::Minor,
        proto::AmountUnit::Decimal => Amounts::Decimal(scales),
    }
}

/// `LedgerService` over a node.
#[derive(Clone)]
pub struct LedgerApi<N: Node> {
    shared: Arc<Shared<N>>,
}

/// `AdminService` over a node.
#[derive(Clone)]
pub struct AdminApi<N: Node> {
    shared: Arc<Shared<N>>,
}

/// One node's API: both services, health checking and reflection.
pub struct ApiServer<N: Node> {
    shared: Arc<Shared<N>>,
}

impl<N: Node> ApiServer<N> {
    /// The API of `node`, configured by `config`.
    pub fn new(node: N, config: ServerConfig) -> Result<Self, ServerError> {
        config.check()?;
        let shared = Shared {
            feeds: Feeds::new(config.feed_streams_max),
            node,
            config,
            channels: Mutex::new(HashMap::new()),
            scales: RwLock::new(HashMap::new()),
            dr: None,
            security: Security::Insecure,
            access: Access::open(),
            audit_log: None,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Adds disaster recovery: writes go through `dr`'s gate, and the server
    /// serves `coffer.dr.v1.DrService` too. Call before serving.
    pub fn with_dr(mut self, dr: Arc<coffer_dr::Dr>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.dr = Some(dr);
        }
        self
    }

    /// Secures its connections with `security` (served, and to other nodes)
    /// and decides who may call what with `access`. Without this call the
    /// server is plaintext and open to everyone. Call before serving.
    pub fn with_security(mut self, security: Security, access: Arc<Access>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.security = security;
            shared.access = access;
        }
        self
    }

    /// Records refused and administrative calls in `log`. Call before
    /// serving.
    pub fn with_audit_log(mut self, log: Arc<crate::audit_log::AuditLog>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.audit_log = Some(log);
        }
        self
    }

    /// The ledger service, with the message-size limits set.
    pub fn ledger_service(&self) -> LedgerServiceServer<LedgerApi<N>> {
        LedgerServiceServer::new(LedgerApi { shared: self.shared.clone() })
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// The admin service, with the message-size limits set.
    pub fn admin_service(&self) -> AdminServiceServer<AdminApi<N>> {
        AdminServiceServer::new(AdminApi { shared: self.shared.clone() })
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// Serves both services, gRPC health checking (`grpc.health.v1`: serving
    /// until the node stops) and server reflection (v1 and v1alpha) on
    /// `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<LedgerServiceServer<LedgerApi<N>>>().await;
        health.set_serving::<AdminServiceServer<AdminApi<N>>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(coffer_dr::proto::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let watcher = tokio::spawn(watch_node(self.shared.node.clone(), health));
        let node = self.shared.id();
        let incoming = self.shared.security.incoming(listener, Listener::Api, format!("node {node} api"));
        let served = tonic::transport::Server::builder()
            .layer(crate::metrics::RpcMetricsLayer::new())
            .layer(AccessLayer::new(self.shared.access.clone(), node, self.shared.audit_log.clone()))
            .layer(crate::region_headers::RegionHeadersLayer::new(self.shared.dr.clone()))
            .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(self.ledger_service())
            .add_service(self.admin_service())
            .add_optional_service(self.shared.dr.clone().map(|dr| coffer_dr::DrApi::new(dr).into_server()))
            .serve_with_incoming_shutdown(incoming, self.shared.clone().close_feeds_after(shutdown))
            .await;
        watcher.abort();
        Ok(served?)
    }
}

/// Reports the services `NOT_SERVING` once the node stops.
async fn watch_node<N: Node>(node: N, health: tonic_health::server::HealthReporter) {
    let mut poll = tokio::time::interval(Duration::from_millis(HEALTH_POLL_MS));
    while !node.is_stopped() {
        poll.tick().await;
    }
    tracing::warn!(node = node.id(), "the node stopped; its API reports not serving");
    health.set_not_serving::<LedgerServiceServer<LedgerApi<N>>>().await;
    health.set_not_serving::<AdminServiceServer<AdminApi<N>>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
}

#[tonic::async_trait]
impl<N: Node> LedgerService for LedgerApi<N> {
    async fn create_ledgers(
        &self,
        request: Request<proto::CreateLedgersRequest>,
    ) -> Result<Response<proto::CreateLedgersResponse>, Status> {
        let shared = &self.shared;
        let (deadline, forwarded) = (shared.deadline(request.metadata()), is_forwarded(request.metadata()));
        let caller = Caller::of(&request);
        let message = request.into_inner();
        convert::check_events("ledgers", message.ledgers.len())?;
        caller.check_ledgers(Role::Poster, "ledgers", message.ledgers.iter().map(|ledger| ledger.id))?;
        let _events = caller.admit_events(message.ledgers.len())?;
        let ledgers = message
            .ledgers
            .iter()
            .enumerate()
            .map(|(i, ledger)| convert::ledger_from_wire(i, ledger))
            .collect::<Result<Vec<_>, _>>()?;
        let answer = |served, results| match results {
            OperationResults::Ledgers(results) => {
                Some(proto::CreateLedgersResponse { served: Some(served), results: convert::results_to_wire(&results) })
            }
            _ => None,
        };
        let address = match shared
            .propose((Operation::CreateLedgers(ledgers), &caller), deadline, forwarded, "CreateLedgers", answer)
            .await?
        {
            Proposed::Applied(response) => return Ok(Response::new(response)),
            Proposed::Forward(address) => address,
        };
        let answer =
            shared.leader_client(&address)?.create_ledgers(shared.forward_request(message, deadline, &caller)).await;
        shared.forwarded(&address, answer)
    }

    async fn set_periods(
        &self,
        request: Request<proto::SetPeriodsRequest>,
    ) -> Result<Response<proto::SetPeriodsResponse>, Status> {
        let shared = &self.shared;
        let (deadline, forwarded) = (shared.deadline(request.metadata()), is_forwarded(request.metadata()));
        let caller = Caller::of(&request);
        let message = request.into_inner();
        convert::check_events("changes", message.changes.len())?;
        caller.check_ledgers(Role::Poster, "changes", message.changes.iter().map(|change| change.ledger))?;
        let _events = caller.admit_events(message.changes.len())?;
        let changes = message
            .changes
            .iter()
            .enumerate()
            .map(|(i, change)| convert::period_change_from_wire(i, change))
            .collect::<Result<Vec<_>, _>>()?;
        let answer = |served, results| match results {
            OperationResults::Periods(results) => {
                Some(proto::SetPeriodsResponse { served: Some(served), results: convert::results_to_wire(&results) })
            }
            _ => None,
        };
        let address = match shared
            .propose((Operation::SetPeriods(changes), &caller), deadline, forwarded, "SetPeriods", answer)
            .await?
        {
            Proposed::Applied(response) => return Ok(Response::new(response)),
            Proposed::Forward(address) => address,
        };
        let answer =
            shared.leader_client(&address)?.set_periods(shared.forward_request(message, deadline, &caller)).await;
        shared.forwarded(&address, answer)
    }

    async fn close_fiscal_year(
        &self,
        request: Request<proto::CloseFiscalYearRequest>,
    ) -> Result<Response<proto::CloseFiscalYearResponse>, Status> {
        let shared = &self.shared;
        let (deadline, forwarded) = (shared.deadline(request.metadata()), is_forwarded(request.metadata()));
        let caller = Caller::of(&request);
        let message = request.into_inner();
        caller.check_ledgers(Role::Operator, "ledger", [message.ledger])?;
        if !message.abort {
            caller.check_ledgers(Role::Operator, "next_ledger", [message.next_ledger])?;
        }
        close_year::serve(shared, &caller, message, deadline, forwarded).await
    }

    async fn import_statement(
        &self,
        request: Request<proto::ImportStatementRequest>,
    ) -> Result<Response<proto::ReconciliationResponse>, Status> {
        let shared = &self.shared;
        let (deadline, forwarded) = (shared.deadline(request.metadata()), is_forwarded(request.metadata()));
        let caller = Caller::of(&request);
        reconcile::import(shared, &caller, request.into_inner(), deadline, forwarded).await
    }

    async fn match_statement(
        &self,
        request: Request<proto::MatchStatementRequest>,
    ) -> Result<Response<proto::ReconciliationResponse>, Status> {
        let shared = &self.shared;
        let (deadline, forwarded) = (shared.deadline(request.metadata()), is_forwarded(request.metadata()));
        let caller = Caller::of(&request);
        reconcile::match_by_hand(shared, &caller, request.into_inner(), deadline, forwarded).await
    }

    async fn get_reconciliation(
        &self,
        request: Request<proto::GetReconciliationRequest>,
    ) -> Result<Response<proto::ReconciliationResponse>, Status> {
        let deadline = self.shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        let which = reconcile::Which::One(message.statement.clone());
        let (served, mut found) = reconcile::read(
            &self.shared,
            &caller,
            &message.account,
            which,
            message.stale,
            message.amount_unit,
            deadline,
        )
        .await?;
        let Some(reconciliation) = found.pop() else {
            return Err(Status::not_found(format!(
                "account {} has no reconciliation of statement {:?}",
                message.account, message.statement
            )));
        };
        Ok(Response::new(proto::ReconciliationResponse {
            served: Some(served),
            result: String::new(),
            reconciliation: Some(reconciliation),
        }))
    }

    async fn list_reconciliations(
        &self,
        request: Request<proto::ListReconciliationsRequest>,
    ) -> Result<Response<proto::ListReconciliationsResponse>, Status> {
        let deadline = self.shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        let limit = match message.limit {
            0 => 100,
            limit => (limit as usize).min(100),
        };
        let which = reconcile::Which::After(message.after.clone(), limit);
        let (served, reconciliations) = reconcile::read(
            &self.shared,
            &caller,
            &message.account,
            which,
            message.stale,
            message.amount_unit,
            deadline,
        )
        .await?;
        Ok(Response::new(proto::ListReconciliationsResponse { served: Some(served), reconciliations }))
    }

    async fn create_accounts(
        &self,
        request: Request<proto::CreateAccountsRequest>,
    ) -> Result<Response<proto::CreateAccountsResponse>, Status> {
        let shared = &self.shared;
        let (deadline, forwarded) = (shared.deadline(request.metadata()), is_forwarded(request.metadata()));
        let caller = Caller::of(&request);
        let message = request.into_inner();
        convert::check_events("accounts", message.accounts.len())?;
        caller.check_ledgers(Role::Poster, "accounts", message.accounts.iter().map(|account| account.ledger))?;
        let _events = caller.admit_events(message.accounts.len())?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let ledgers = message
            .accounts
            .iter()
            .filter(|a| {
                [&a.debits_pending, &a.debits_posted, &a.credits_pending, &a.credits_posted]
                    .iter()
                    .any(|text| !scale_free(text))
            })
            .map(|account| LedgerId(account.ledger))
            .collect::<BTreeSet<_>>();
        let scales = shared.scales_for(unit, ledgers, deadline).await?;
        let amounts = amounts_of(unit, &scales);
        let accounts = message
            .accounts
            .iter()
            .enumerate()
            .map(|(i, account)| convert::account_from_wire("accounts", i, account, amounts))
            .collect::<Result<Vec<_>, _>>()?;
        let answer = |served, results| match results {
            OperationResults::Accounts(results) => Some(proto::CreateAccountsResponse {
                served: Some(served),
                results: convert::results_to_wire(&results),
            }),
            _ => None,
        };
        let address = match shared
            .propose((Operation::CreateAccounts(accounts), &caller), deadline, forwarded, "CreateAccounts", answer)
            .await?
        {
            Proposed::Applied(response) => return Ok(Response::new(response)),
            Proposed::Forward(address) => address,
        };
        let answer =
            shared.leader_client(&address)?.create_accounts(shared.forward_request(message, deadline, &caller)).await;
        shared.forwarded(&address, answer)
    }

    async fn create_transfers(
        &self,
        request: Request<proto::CreateTransfersRequest>,
    ) -> Result<Response<proto::CreateTransfersResponse>, Status> {
        let shared = &self.shared;
        let (deadline, forwarded) = (shared.deadline(request.metadata()), is_forwarded(request.metadata()));
        let caller = Caller::of(&request);
        let message = request.into_inner();
        // Held until the batch is answered.
        let (transfers, _events) = if message.packed_transfers.is_empty() {
            convert::check_events("transfers", message.transfers.len())?;
            caller.check_ledgers(
                Role::Poster,
                "transfers",
                message.transfers.iter().map(|transfer| transfer.ledger),
            )?;
            let events = caller.admit_events(message.transfers.len())?;
            let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
            let ledgers = message
                .transfers
                .iter()
                .filter(|transfer| !scale_free(&transfer.amount))
                .map(|transfer| LedgerId(transfer.ledger))
                .collect::<BTreeSet<_>>();
            let scales = shared.scales_for(unit, ledgers, deadline).await?;
            let amounts = amounts_of(unit, &scales);
            let transfers = message
                .transfers
                .iter()
                .enumerate()
                .map(|(i, transfer)| convert::transfer_from_wire("transfers", i, transfer, amounts))
                .collect::<Result<Vec<_>, _>>()?;
            (transfers, events)
        } else {
            let transfers = packed_transfers(&message)?;
            caller.check_ledgers(Role::Poster, PACKED_TRANSFERS, transfers.iter().map(|transfer| transfer.ledger.0))?;
            let events = caller.admit_events(transfers.len())?;
            (transfers, events)
        };
        let answer = |served, results| match results {
            OperationResults::Transfers(results) => Some(proto::CreateTransfersResponse {
                served: Some(served),
                results: convert::results_to_wire(&results),
            }),
            _ => None,
        };
        let address = match shared
            .propose((Operation::CreateTransfers(transfers), &caller), deadline, forwarded, "CreateTransfers", answer)
            .await?
        {
            Proposed::Applied(response) => return Ok(Response::new(response)),
            Proposed::Forward(address) => address,
        };
        let answer =
            shared.leader_client(&address)?.create_transfers(shared.forward_request(message, deadline, &caller)).await;
        shared.forwarded(&address, answer)
    }

    async fn lookup_accounts(
        &self,
        request: Request<proto::LookupAccountsRequest>,
    ) -> Result<Response<proto::LookupAccountsResponse>, Status> {
        let deadline = self.shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        convert::check_batch("ids", message.ids.len())?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let ids = parse_ids(&message.ids, AccountId)?;
        let (served, found) = self
            .shared
            .read(message.stale, deadline, move |state| {
                let accounts = lookup_accounts(state, &ids)?
                    .into_iter()
                    .flatten()
                    .filter(|account| caller.may(Role::Reader, account.ledger.0))
                    .collect::<Vec<_>>();
                let scales = scales_of(state, accounts.iter().map(|account| account.ledger).collect())?;
                Ok::<_, QueryError>((accounts, scales))
            })
            .await?;
        let (accounts, scales) = found.map_err(|error| status::query_error(&error))?;
        let amounts = amounts_of(unit, &scales);
        let accounts = accounts.iter().map(|account| convert::account_to_wire(account, amounts)).collect();
        Ok(Response::new(proto::LookupAccountsResponse { served: Some(served), accounts }))
    }

    async fn lookup_transfers(
        &self,
        request: Request<proto::LookupTransfersRequest>,
    ) -> Result<Response<proto::LookupTransfersResponse>, Status> {
        let deadline = self.shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        convert::check_batch("ids", message.ids.len())?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let ids = parse_ids(&message.ids, TransferId)?;
        let (served, found) = self
            .shared
            .read(message.stale, deadline, move |state| {
                let transfers = lookup_transfers(state, &ids)?
                    .into_iter()
                    .flatten()
                    .filter(|transfer| caller.may(Role::Reader, transfer.ledger.0))
                    .collect::<Vec<_>>();
                let scales = scales_of(state, transfers.iter().map(|transfer| transfer.ledger).collect())?;
                Ok::<_, QueryError>((transfers, scales))
            })
            .await?;
        let (transfers, scales) = found.map_err(|error| status::query_error(&error))?;
        let amounts = amounts_of(unit, &scales);
        let transfers = transfers.iter().map(|transfer| convert::transfer_to_wire(transfer, amounts)).collect();
        Ok(Response::new(proto::LookupTransfersResponse { served: Some(served), transfers }))
    }

    async fn get_account_transfers(
        &self,
        request: Request<proto::GetAccountTransfersRequest>,
    ) -> Result<Response<proto::GetAccountTransfersResponse>, Status> {
        let deadline = self.shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        let filter = convert::filter_from_wire("filter", message.filter.as_ref())?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let (served, found) = self
            .shared
            .read(message.stale, deadline, move |state| {
                let mut transfers = get_account_transfers(state, &filter)?;
                transfers.retain(|transfer| caller.may(Role::Reader, transfer.ledger.0));
                let scales = scales_of(state, transfers.iter().map(|transfer| transfer.ledger).collect())?;
                Ok::<_, QueryError>((transfers, scales))
            })
            .await?;
        let (transfers, scales) = found.map_err(|error| status::query_error(&error))?;
        let amounts = amounts_of(unit, &scales);
        let transfers = transfers.iter().map(|transfer| convert::transfer_to_wire(transfer, amounts)).collect();
        Ok(Response::new(proto::GetAccountTransfersResponse { served: Some(served), transfers }))
    }

    async fn get_account_balances(
        &self,
        request: Request<proto::GetAccountBalancesRequest>,
    ) -> Result<Response<proto::GetAccountBalancesResponse>, Status> {
        let deadline = self.shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        let filter = convert::filter_from_wire("filter", message.filter.as_ref())?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let (served, found) = self
            .shared
            .read(message.stale, deadline, move |state| {
                let mut balances = get_account_balances(state, &filter)?;
                // The query found the account, so it exists.
                let ledger = state.account(filter.account_id)?.map(|account| account.ledger).unwrap_or_default();
                // An account on a ledger the reader may not read is, to it,
                // an account without history.
                if !caller.may(Role::Reader, ledger.0) {
                    balances.clear();
                }
                let scales = scales_of(state, BTreeSet::from([ledger]))?;
                Ok::<_, QueryError>((balances, ledger, scales))
            })
            .await?;
        let (balances, ledger, scales) = found.map_err(|error| status::query_error(&error))?;
        let amounts = amounts_of(unit, &scales);
        let balances = balances.iter().map(|balance| convert::balance_to_wire(balance, ledger, amounts)).collect();
        Ok(Response::new(proto::GetAccountBalancesResponse { served: Some(served), balances }))
    }

    async fn query_transfers(
        &self,
        request: Request<proto::QueryTransfersRequest>,
    ) -> Result<Response<proto::QueryTransfersResponse>, Status> {
        let shared = &self.shared;
        let deadline = shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        let query = convert::transfer_query_from_wire(&message)?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let (served, found) = shared.read(message.stale, deadline, move |state| query_transfers(state, &query)).await?;
        let mut page = found.map_err(|error| status::query_error(&error))?;
        page.records.retain(|transfer| caller.may(Role::Reader, transfer.ledger.0));
        let ledgers = page.records.iter().map(|transfer| transfer.ledger).collect();
        let scales = shared.scales_for(unit, ledgers, deadline).await?;
        let amounts = amounts_of(unit, &scales);
        let transfers = page.records.iter().map(|transfer| convert::transfer_to_wire(transfer, amounts)).collect();
        Ok(Response::new(proto::QueryTransfersResponse {
            served: Some(served),
            transfers,
            next_timestamp: page.next_timestamp,
        }))
    }

    async fn query_accounts(
        &self,
        request: Request<proto::QueryAccountsRequest>,
    ) -> Result<Response<proto::QueryAccountsResponse>, Status> {
        let shared = &self.shared;
        let deadline = shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        let query = convert::account_query_from_wire(&message)?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let (served, found) = shared.read(message.stale, deadline, move |state| query_accounts(state, &query)).await?;
        let mut page = found.map_err(|error| status::query_error(&error))?;
        page.records.retain(|account| caller.may(Role::Reader, account.ledger.0));
        let ledgers = page.records.iter().map(|account| account.ledger).collect();
        let scales = shared.scales_for(unit, ledgers, deadline).await?;
        let amounts = amounts_of(unit, &scales);
        let accounts = page.records.iter().map(|account| convert::account_to_wire(account, amounts)).collect();
        Ok(Response::new(proto::QueryAccountsResponse {
            served: Some(served),
            accounts,
            next_timestamp: page.next_timestamp,
        }))
    }

    type SubscribeChangesStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::Change, Status>> + Send + 'static>>;

    async fn subscribe_changes(
        &self,
        request: Request<proto::SubscribeChangesRequest>,
    ) -> Result<Response<Self::SubscribeChangesStream>, Status> {
        let shared = &self.shared;
        let caller = Caller::of(&request);
        let message = request.into_inner();
        caller.check_ledgers(Role::Reader, "ledger", [message.ledger])?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let permit = shared
            .feeds
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| status::feeds_exhausted(shared.id(), shared.config.feed_streams_max))?;
        let (sender, receiver) = mpsc::channel(FEED_CHANNEL_CHANGES);
        let feed = Feed {
            shared: shared.clone(),
            cursor: message.after,
            ledger: LedgerId(message.ledger),
            unit,
            sender,
            tail: shared.watch_tail(),
            closing: shared.feeds.closing.subscribe(),
        };
        tokio::spawn(feed.run(permit));
        let stream: Self::SubscribeChangesStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver));
        Ok(Response::new(stream))
    }

    async fn trial_balance(
        &self,
        request: Request<proto::TrialBalanceRequest>,
    ) -> Result<Response<proto::TrialBalanceResponse>, Status> {
        let deadline = self.shared.deadline(request.metadata());
        let caller = Caller::of(&request);
        let message = request.into_inner();
        caller.check_ledgers(Role::Reader, "ledger", [message.ledger])?;
        let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
        let ledger = LedgerId(message.ledger);
        let as_of = message.as_of;
        let (served, found) = self
            .shared
            .read(message.stale, deadline, move |state| {
                let trial = match as_of {
                    0 => trial_balance(state, ledger)?,
                    _ => trial_balance_as_of(state, ledger, as_of)?,
                };
                Ok::<_, QueryError>((trial, scales_of(state, BTreeSet::from([ledger]))?))
            })
            .await?;
        let (trial, scales) = found.map_err(|error| status::query_error(&error))?;
        let mut response = convert::trial_balance_to_wire(&trial, amounts_of(unit, &scales));
        response.served = Some(served);
        response.as_of = as_of;
        Ok(Response::new(response))
    }
}

/// Parses lookup ids (`ids[i]`): each must be usable.
fn parse_ids<T>(ids: &[String], make: fn(u128) -> T) -> Result<Vec<T>, FieldError> {
    ids.iter().enumerate().map(|(i, id)| convert::parse_valid_id(&format!("ids[{i}]"), id).map(make)).collect()
}

impl<N: Node> AdminApi<N> {
    fn node_status_to_wire(&self, status: &NodeStatus) -> proto::NodeStatus {
        let role = match status.role {
            StateRole::Follower => proto::Role::Follower,
            StateRole::Candidate => proto::Role::Candidate,
            StateRole::Leader => proto::Role::Leader,
            StateRole::PreCandidate => proto::Role::PreCandidate,
        };
        proto::NodeStatus {
            node_id: status.id,
            address: self.shared.address_of(status.id).unwrap_or_default(),
            role: role as i32,
            term: status.term,
            leader_id: status.leader,
            commit_index: status.commit,
            applied_index: status.applied,
            first_index: status.first_index,
            last_index: status.last_index,
            voters: status.conf_state.voters.clone(),
            learners: status.conf_state.learners.clone(),
            lag: 0,
            progress: status
                .progress
                .iter()
                .map(|peer| proto::PeerProgress {
                    node_id: peer.id,
                    matched: peer.matched,
                    next_index: peer.next_index,
                    voter: peer.voter,
                })
                .collect(),
            error: String::new(),
            plaintext: self.shared.security.is_insecure(),
        }
    }

    /// Asks every other node of the address book for its own status.
    async fn peer_statuses(&self) -> Vec<proto::NodeStatus> {
        let timeout = Duration::from_millis(self.shared.config.status_peer_timeout_ms);
        let mut asks = tokio::task::JoinSet::new();
        let mut book: BTreeMap<u64, String> = self.shared.node.member_api_addresses().into_iter().collect();
        book.extend(self.shared.config.addresses.iter().map(|(node, address)| (*node, address.clone())));
        for (node_id, address) in book {
            if node_id == self.shared.id() {
                continue;
            }
            let (address, channel) = (address.clone(), self.shared.channel(&address));
            asks.spawn(async move {
                let unanswered = |error: String| proto::NodeStatus {
                    node_id,
                    address: address.clone(),
                    error,
                    ..Default::default()
                };
                let channel = match channel {
                    Ok(channel) => channel,
                    Err(error) => return unanswered(error.message().to_owned()),
                };
                let mut request = Request::new(proto::StatusRequest { local: true });
                request.set_timeout(timeout);
                let asked = tokio::time::timeout(timeout, AdminServiceClient::new(channel).status(request)).await;
                match asked {
                    Err(_) => unanswered(format!("no answer within {} ms", timeout.as_millis())),
                    Ok(Err(status)) => unanswered(format!("{:?}: {}", status.code(), status.message())),
                    Ok(Ok(response)) => match response.into_inner().nodes.into_iter().next() {
                        Some(status) => proto::NodeStatus { address: address.clone(), ..status },
                        None => unanswered("answered with no status".into()),
                    },
                }
            });
        }
        let mut statuses = Vec::new();
        while let Some(asked) = asks.join_next().await {
            if let Ok(status) = asked {
                statuses.push(status);
            }
        }
        statuses.sort_by_key(|status| status.node_id);
        statuses
    }

    async fn membership(
        &self,
        change: MembershipChange,
        address: String,
        force: bool,
        metadata: &MetadataMap,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        let shared = &self.shared;
        let deadline = shared.deadline(metadata);
        if force {
            tracing::warn!(node = shared.id(), ?change, "membership change forced past its safety checks");
        }
        let changed = shared.node.change_membership(change, address, force);
        let applied = deadline.run("the membership change", true, changed).await?;
        match applied.map_err(|error| shared.fail(&error))? {
            Applied { index, outcome: Outcome::Membership(conf_state) } => {
                Ok(Response::new(proto::MembershipResponse {
                    served: Some(proto::Served { node_id: shared.id(), applied_index: index, stale: false }),
                    voters: conf_state.voters,
                    learners: conf_state.learners,
                }))
            }
            Applied { .. } => Err(status::internal("the node answered a membership change with ledger results")),
        }
    }
}

fn node_id(field: &str, id: u64) -> Result<u64, FieldError> {
    if id == 0 {
        return Err(FieldError::new(field, "0 is not a node id"));
    }
    Ok(id)
}

/// Audit records listed when a request names no limit.
const AUDIT_LIMIT_DEFAULT: usize = 100;

#[tonic::async_trait]
impl<N: Node> AdminService for AdminApi<N> {
    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        let shared = &self.shared;
        let deadline = shared.deadline(request.metadata());
        let message = request.into_inner();
        let limit = match message.limit as usize {
            0 => AUDIT_LIMIT_DEFAULT,
            limit if limit > BATCH_EVENTS_MAX => {
                let reason = format!("{limit} records, at most {BATCH_EVENTS_MAX}");
                return Err(FieldError::new("limit", reason).into());
            }
            limit => limit,
        };
        let principal = (!message.principal.is_empty()).then_some(message.principal);
        let read = shared.node.audit(message.after_index, limit, principal, message.stale);
        let (index, records) =
            deadline.run("the audit trail", false, read).await?.map_err(|error| shared.fail(&error))?;
        let records = records.map_err(|error| status::internal(format!("reading the audit trail: {error}")))?;
        let records = records
            .into_iter()
            .map(|record| proto::AuditRecord {
                index: record.index,
                part: record.part,
                first_timestamp: record.first_timestamp,
                events: record.events,
                kind: record.kind.name().to_owned(),
                proposer: record.proposer,
                applied: record.applied,
                principal: record.principal,
                note: record.note,
            })
            .collect();
        let served = proto::Served { node_id: shared.id(), applied_index: index, stale: message.stale };
        Ok(Response::new(proto::ListAuditResponse { served: Some(served), records }))
    }

    async fn status(&self, request: Request<proto::StatusRequest>) -> Result<Response<proto::StatusResponse>, Status> {
        let shared = &self.shared;
        let deadline = shared.deadline(request.metadata());
        let own =
            deadline.run("the status", false, shared.node.status()).await?.map_err(|error| shared.fail(&error))?;
        let mut nodes = vec![self.node_status_to_wire(&own)];
        if !request.into_inner().local {
            nodes.extend(self.peer_statuses().await);
        }
        let answered = nodes.iter().filter(|node| node.error.is_empty());
        let commit_max = answered.map(|node| node.commit_index).max().unwrap_or_default();
        for node in nodes.iter_mut().filter(|node| node.error.is_empty()) {
            node.lag = commit_max.saturating_sub(node.applied_index);
        }
        Ok(Response::new(proto::StatusResponse { node_id: shared.id(), nodes }))
    }

    async fn add_node(
        &self,
        request: Request<proto::AddNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        let (metadata, message) = (request.metadata().clone(), request.into_inner());
        let node = node_id("node_id", message.node_id)?;
        endpoint(&message.raft_address).map_err(|reason| FieldError::new("raft_address", reason))?;
        let api = match message.api_address.is_empty() {
            true => None,
            false => {
                endpoint(&message.api_address).map_err(|reason| FieldError::new("api_address", reason))?;
                Some(message.api_address)
            }
        };
        let context = MemberAddresses { raft: message.raft_address, api }.to_context();
        self.membership(MembershipChange::AddLearner(node), context, false, &metadata).await
    }

    async fn promote_node(
        &self,
        request: Request<proto::PromoteNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        let (metadata, message) = (request.metadata().clone(), request.into_inner());
        let node = node_id("node_id", message.node_id)?;
        self.membership(MembershipChange::PromoteVoter(node), String::new(), message.force, &metadata).await
    }

    async fn remove_node(
        &self,
        request: Request<proto::RemoveNodeRequest>,
    ) -> Result<Response<proto::MembershipResponse>, Status> {
        let (metadata, message) = (request.metadata().clone(), request.into_inner());
        let node = node_id("node_id", message.node_id)?;
        self.membership(MembershipChange::Remove(node), String::new(), message.force, &metadata).await
    }

    async fn transfer_leader(
        &self,
        request: Request<proto::TransferLeaderRequest>,
    ) -> Result<Response<proto::TransferLeaderResponse>, Status> {
        let shared = &self.shared;
        let deadline = shared.deadline(request.metadata());
        let target = node_id("node_id", request.into_inner().node_id)?;
        let transferred = deadline.run("the leader transfer", false, shared.node.transfer_leader(target)).await?;
        transferred.map_err(|error| shared.fail(&error))?;
        Ok(Response::new(proto::TransferLeaderResponse { node_id: shared.id() }))
    }

    async fn snapshot(
        &self,
        request: Request<proto::SnapshotRequest>,
    ) -> Result<Response<proto::SnapshotResponse>, Status> {
        let shared = &self.shared;
        let deadline = shared.deadline(request.metadata());
        let dir = PathBuf::from(request.into_inner().dir);
        if !dir.is_absolute() {
            return Err(FieldError::new("dir", format!("{:?} is not an absolute path", dir.display())).into());
        }
        let made = deadline.run("the snapshot", false, shared.node.snapshot(dir)).await?;
        let manifest = made.map_err(|error| shared.fail(&error))?;
        Ok(Response::new(proto::SnapshotResponse {
            node_id: shared.id(),
            applied_index: manifest.applied.index,
            applied_term: manifest.applied.term,
            files: u64::try_from(manifest.files.len()).unwrap_or(u64::MAX),
            bytes: manifest.files.iter().map(|file| file.size).sum(),
        }))
    }
}
