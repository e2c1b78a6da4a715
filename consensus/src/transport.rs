//! The peer transport: Raft messages between the nodes of one group, over
//! gRPC (`proto/coffer/raft/v1/transport.proto`).
//!
//! Sending ([`Peers`], owned by the driver): every peer has a bounded queue
//! and one task that keeps one long-lived `Send` stream open to it, packing
//! what waits in the queue into [`proto::MessageBatch`]es. A full queue, or
//! a peer that cannot be reached, drops the message and the driver reports
//! the peer unreachable to Raft, which sends again later (Raft tolerates
//! lost messages; an unbounded queue would not tolerate a dead peer). A lost
//! connection is retried with capped exponential backoff.
//!
//! A snapshot message goes through `SendSnapshot` instead: a header carrying
//! the Raft message, then the sender's snapshot directory
//! ([`SnapshotDirs::outgoing`]) in checksummed chunks. The driver reports
//! the outcome to Raft in every case, or Raft would never send that peer
//! anything again.
//!
//! Receiving ([`RaftService`]): each message is decoded and checked (sender,
//! addressee, type) and handed to the driver; a message that does not decode
//! ends the stream with an error naming the peer. A snapshot is written into
//! [`SnapshotDirs::incoming`] with [`IncomingSnapshot`], which verifies every
//! chunk and then the whole snapshot, and only then is its Raft message
//! handed to the driver, whose Raft installs it from that directory.
//!
//! Peers are addressed by node id → `"host:port"`: the node's configuration
//! gives the first addresses; an applied membership change carries the
//! addresses of the node it adds in its context ([`MemberAddresses`]), and
//! the store keeps them with the configuration, so a restarted node knows
//! every member added since its configuration was written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coffer_security::{Expect, Identity, PeerInfo, Security};
use coffer_storage::snapshot::{SnapshotChunk as FileChunkData, SnapshotReader};
use coffer_storage::StorageError;
use protobuf::Message as _;
use raft::prelude::{ConfChangeType, Message};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::replica::{is_snapshot, MembershipApplied, Outbox};
use crate::storage::{IncomingSnapshot, SnapshotDirs};

/// Where a member is reached: its Raft transport and, when known, its
/// client API. The context of a membership change that adds a node carries
/// it as `raft=HOST:PORT api=HOST:PORT`; a context of one bare address (as
/// earlier versions wrote) is the Raft address alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberAddresses {
    /// The Raft transport's `host:port`.
    pub raft: String,
    /// The client API's `host:port`, if the change named it.
    pub api: Option<String>,
}

impl MemberAddresses {
    /// The context a membership change carries for these addresses.
    pub fn to_context(&self) -> String {
        match &self.api {
            Some(api) => format!("raft={} api={api}", self.raft),
            None => format!("raft={}", self.raft),
        }
    }

    /// The addresses in a change's context; `None` for an empty or
    /// unreadable one (a promotion carries none).
    pub fn from_context(context: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(context).ok()?.trim();
        if text.is_empty() {
            return None;
        }
        if !text.contains('=') {
            return Some(Self { raft: text.to_owned(), api: None });
        }
        let (mut raft, mut api) = (None, None);
        for field in text.split_whitespace() {
            match field.split_once('=') {
                Some(("raft", value)) => raft = Some(value.to_owned()),
                Some(("api", value)) => api = Some(value.to_owned()),
                _ => {}
            }
        }
        Some(Self { raft: raft?, api })
    }
}

/// The gRPC code generated from `proto/coffer/raft/v1/transport.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    tonic::include_proto!("coffer.raft.v1");
}

use proto::raft_transport_client::RaftTransportClient;
use proto::raft_transport_server::{RaftTransport, RaftTransportServer};
use proto::snapshot_chunk::Part;

/// Messages waiting for one peer before new ones are dropped. Raft's own
/// bound (`max_inflight_msgs` appends of `max_size_per_msg_bytes`) bounds
/// the bytes behind it.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 1_024;
/// Messages packed into one batch at most.
pub const BATCH_MESSAGES_MAX: usize = 256;
/// A batch is closed once its messages reach this many bytes.
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// The largest encoded Raft message sent; a larger one is dropped. Raft
/// packs entries up to `max_size_per_msg_bytes`, and one entry (a full
/// batch of 8,189 transfers) is about 1 MiB.
pub const MESSAGE_BYTES_MAX: usize = 32 << 20;
/// The largest gRPC message sent or accepted: a full batch plus its last
/// (largest possible) message.
pub const GRPC_MESSAGE_BYTES_MAX: usize = BATCH_BYTES_MAX + MESSAGE_BYTES_MAX + (1 << 20);
/// Batches handed to one stream and not yet written to the connection.
const STREAM_BATCHES_IN_FLIGHT: usize = 4;
/// Raft messages from all peers waiting for the driver.
pub const INBOUND_MESSAGES_MAX: usize = 4_096;
/// The first wait before reconnecting to a peer.
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 20;
/// The longest wait between reconnections (the backoff doubles up to it).
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Interval of HTTP/2 pings on a connection, which find a dead peer whose
/// TCP connection did not close.
pub const KEEPALIVE_INTERVAL_MS: u64 = 1_000;
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT_MS: u64 = 3_000;
/// Bytes of a snapshot file per chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the connection while sending a snapshot.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;
/// Snapshots this node sends at once; another is refused (reported failed,
/// so Raft tries again later).
pub const SNAPSHOTS_SENDING_MAX: usize = 4;
/// Snapshots this node receives at once.
pub const SNAPSHOTS_RECEIVING_MAX: usize = 2;
/// How long sending (or receiving) one snapshot may take before it is
/// given up.
pub const SNAPSHOT_TIMEOUT_MS: u64 = 10 * 60 * 1_000;
/// HTTP/2 streams one peer may open on one connection.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 64;
/// The longest peer address (`"host:port"`) accepted.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// What the transport hands the driver.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A Raft message from a peer, checked and (for a snapshot) with its
    /// data received and verified.
    Message(Message),
    /// A peer's connection failed: Raft should slow down sending to it.
    Unreachable(u64),
    /// A snapshot send to `peer` finished, delivered or not.
    SnapshotSent {
        /// The peer.
        peer: u64,
        /// Whether the peer verified it and handed it to its node.
        delivered: bool,
    },
}

/// Why sending to a peer failed (logged; Raft sends again).
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("address {address:?} is invalid: {reason}")]
    Address { address: String, reason: String },
    #[error("connecting to {address}: {source}")]
    Connect { address: String, source: tonic::transport::Error },
    #[error("the peer ended the stream: {0}")]
    Rpc(Status),
    #[error("the peer closed the stream")]
    Closed,
    #[error("encoding the snapshot message: {0}")]
    Encode(protobuf::ProtobufError),
    #[error("reading the snapshot: {0}")]
    Snapshot(StorageError),
    #[error("the snapshot reader task failed: {0}")]
    Reader(tokio::task::JoinError),
    #[error("timed out after {0} ms")]
    Timeout(u64),
}

/// Checks a peer address: `"host:port"`, bounded, one line.
pub(crate) fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
        return Err(format!("must be 1 to {ADDRESS_BYTES_MAX} bytes, is {}", address.len()));
    }
    let port = address.rsplit_once(':').map(|(_, port)| port);
    if port.and_then(|port| port.parse::<u16>().ok()).is_none() {
        return Err(format!("{address:?} is not host:port"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!("{address:?} holds a space, a control character or a slash"));
    }
    Ok(())
}

/// Dials node `peer` at `address`; under TLS the server must be that node.
async fn connect(security: &Security, peer: u64, address: &str) -> Result<Channel, LinkError> {
    let invalid = |reason: String| LinkError::Address { address: address.to_owned(), reason };
    check_address(address).map_err(invalid)?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| invalid(error.to_string()))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(KEEPALIVE_TIMEOUT_MS))
        .keep_alive_while_idle(true);
    security
        .connect(endpoint, Expect::Node(Some(peer)))
        .await
        .map_err(|source| LinkError::Connect { address: address.to_owned(), source })
}

fn client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

/// What the driver must tell Raft about sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// A message to the peer was dropped.
    Unreachable(u64),
    /// A snapshot to the peer could not even be started.
    SnapshotFailed(u64),
}

/// The sending half of the transport, owned by the driver: peer addresses,
/// one queue and one connection task per peer, snapshot sends.
#[derive(Debug)]
pub(crate) struct Peers {
    node_id: u64,
    /// The runtime the connection tasks run on (not the driver's own).
    runtime: Handle,
    addresses: HashMap<u64, String>,
    queues: HashMap<u64, mpsc::Sender<Message>>,
    dirs: SnapshotDirs,
    inbound: mpsc::Sender<Inbound>,
    snapshot_permits: Arc<Semaphore>,
    reports: Vec<Report>,
    security: Security,
}

impl Peers {
    /// Peers of node `node_id` at `addresses`; tasks run on `runtime`, and
    /// report to the driver through `inbound`.
    pub(crate) fn new(
        node_id: u64,
        runtime: Handle,
        addresses: HashMap<u64, String>,
        dirs: SnapshotDirs,
        inbound: mpsc::Sender<Inbound>,
        security: Security,
    ) -> Self {
        let mut peers = Self {
            security,
            node_id,
            runtime,
            addresses: HashMap::new(),
            queues: HashMap::new(),
            dirs,
            inbound,
            snapshot_permits: Arc::new(Semaphore::new(SNAPSHOTS_SENDING_MAX)),
            reports: Vec::new(),
        };
        for (peer, address) in addresses {
            peers.set_address(peer, address);
        }
        peers
    }

    /// Sets (or changes) the address of `peer`. A changed address closes the
    /// old connection; the next message opens one to the new address.
    pub(crate) fn set_address(&mut self, peer: u64, address: String) {
        if peer == self.node_id || peer == 0 {
            return;
        }
        if let Err(reason) = check_address(&address) {
            tracing::warn!(node = self.node_id, peer, reason, "peer address refused");
            return;
        }
        if self.addresses.get(&peer) != Some(&address) {
            tracing::info!(node = self.node_id, peer, address, "peer address set");
            self.queues.remove(&peer);
            self.addresses.insert(peer, address);
        }
    }

    /// Forgets `peer` and closes its connection.
    pub(crate) fn remove(&mut self, peer: u64) {
        self.queues.remove(&peer);
        if self.addresses.remove(&peer).is_some() {
            tracing::info!(node = self.node_id, peer, "peer removed");
        }
    }

    /// Learns from an applied membership change: the address of a node it
    /// adds (its context), or that a node is gone.
    pub(crate) fn apply_membership(&mut self, applied: &MembershipApplied) {
        let addresses = MemberAddresses::from_context(&applied.context);
        for change in applied.change.get_changes() {
            match change.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Some(addresses) = &addresses {
                        self.set_address(change.node_id, addresses.raft.clone());
                    }
                }
                ConfChangeType::RemoveNode => self.remove(change.node_id),
            }
        }
    }

    /// What Raft must be told since the last call.
    pub(crate) fn take_reports(&mut self) -> Vec<Report> {
        let mut reports = std::mem::take(&mut self.reports);
        reports.sort_unstable_by_key(|report| match *report {
            Report::Unreachable(peer) => (peer, 0),
            Report::SnapshotFailed(peer) => (peer, 1),
        });
        reports.dedup();
        reports
    }

    /// The queue of `peer`, with its connection task started if needed.
    fn queue(&mut self, peer: u64) -> Option<&mpsc::Sender<Message>> {
        if self.queues.get(&peer).is_none_or(mpsc::Sender::is_closed) {
            let address = self.addresses.get(&peer)?.clone();
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
            let link = Link {
                from: self.node_id,
                peer,
                address,
                inbound: self.inbound.clone(),
                security: self.security.clone(),
            };
            self.runtime.spawn(link.run(receiver));
            self.queues.insert(peer, sender);
        }
        self.queues.get(&peer)
    }

    fn send_one(&mut self, message: Message) {
        let peer = message.to;
        let Some(queue) = self.queue(peer) else {
            self.reports.push(Report::Unreachable(peer));
            return;
        };
        if queue.try_send(message).is_err() {
            // Full (the peer is slow or down) or its task ended: Raft sends
            // again once it hears from the peer.
            self.reports.push(Report::Unreachable(peer));
        }
    }

    /// Starts streaming the snapshot a `MsgSnapshot` names to its peer.
    fn send_snapshot(&mut self, message: Message) {
        let peer = message.to;
        let Some(address) = self.addresses.get(&peer).cloned() else {
            tracing::warn!(node = self.node_id, peer, "snapshot not sent: no address for the peer");
            self.reports.push(Report::SnapshotFailed(peer));
            return;
        };
        let Ok(permit) = self.snapshot_permits.clone().try_acquire_owned() else {
            tracing::warn!(node = self.node_id, peer, "snapshot not sent: {SNAPSHOTS_SENDING_MAX} already sending");
            self.reports.push(Report::SnapshotFailed(peer));
            return;
        };
        let dir = self.dirs.outgoing(message.get_snapshot().get_metadata().index);
        let (inbound, security) = (self.inbound.clone(), self.security.clone());
        let send = SnapshotSend { from: self.node_id, peer, address, dir, inbound, security };
        self.runtime.spawn(send.run(message, permit));
    }
}

impl Outbox for Peers {
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            if is_snapshot(&message) {
                self.send_snapshot(message);
            } else {
                self.send_one(message);
            }
        }
    }
}

/// How a connection to a peer ended.
enum LinkEnd {
    /// The driver dropped the queue (the peer was removed or readdressed,
    /// or the node stopped): the task ends.
    QueueClosed,
    /// The connection failed; reconnect.
    Failed(LinkError),
}

/// The connection task of one peer.
struct Link {
    from: u64,
    peer: u64,
    address: String,
    inbound: mpsc::Sender<Inbound>,
    security: Security,
}

impl Link {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut backoff_ms = RECONNECT_BACKOFF_MIN_MS;
        loop {
            let (end, carried) = match connect(&self.security, self.peer, &self.address).await {
                Ok(channel) => self.stream(channel, &mut queue).await,
                Err(error) => (LinkEnd::Failed(error), false),
            };
            let error = match end {
                LinkEnd::QueueClosed => return,
                LinkEnd::Failed(error) => error,
            };
            if carried {
                tracing::warn!(node = self.from, peer = self.peer, %error, "connection to peer lost");
                backoff_ms = RECONNECT_BACKOFF_MIN_MS;
            } else {
                tracing::debug!(node = self.from, peer = self.peer, %error, backoff_ms, "peer not reachable");
            }
            self.report_unreachable();
            if !self.back_off(backoff_ms, &mut queue).await {
                return;
            }
            backoff_ms = backoff_ms.saturating_mul(2).min(RECONNECT_BACKOFF_MAX_MS);
        }
    }

    fn report_unreachable(&self) {
        // Advisory: when the driver's queue is full, it hears of it next time.
        let _ = self.inbound.try_send(Inbound::Unreachable(self.peer));
    }

    /// Waits `delay_ms`, dropping what is queued meanwhile (it would be stale
    /// by the time the peer is back). False once the queue is closed.
    async fn back_off(&self, delay_ms: u64, queue: &mut mpsc::Receiver<Message>) -> bool {
        let sleep = tokio::time::sleep(Duration::from_millis(delay_ms));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                message = queue.recv() => {
                    if message.is_none() {
                        return false;
                    }
                }
            }
        }
    }

    /// Carries the queue's messages over one `Send` stream until it fails or
    /// the queue closes. Also says whether any batch was handed to the stream.
    async fn stream(&self, channel: Channel, queue: &mut mpsc::Receiver<Message>) -> (LinkEnd, bool) {
        let mut client = client(channel);
        let (batches, stream) = mpsc::channel(STREAM_BATCHES_IN_FLIGHT);
        let call = client.send(ReceiverStream::new(stream));
        tokio::pin!(call);
        let mut carried = false;
        loop {
            let first = tokio::select! {
                response = &mut call => return (LinkEnd::Failed(ended(response)), carried),
                message = queue.recv() => match message {
                    Some(message) => message,
                    None => return (LinkEnd::QueueClosed, carried),
                },
            };
            let batch = self.batch(first, queue);
            if batch.messages.is_empty() {
                continue;
            }
            tokio::select! {
                response = &mut call => return (LinkEnd::Failed(ended(response)), carried),
                sent = batches.send(batch) => {
                    if sent.is_err() {
                        return (LinkEnd::Failed(LinkError::Closed), carried);
                    }
                }
            }
            carried = true;
        }
    }

    /// Encodes `first` and whatever else waits, up to the batch bounds.
    fn batch(&self, first: Message, queue: &mut mpsc::Receiver<Message>) -> proto::MessageBatch {
        let mut messages = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message.write_to_bytes() {
                Ok(encoded) if encoded.len() <= MESSAGE_BYTES_MAX => {
                    bytes += encoded.len();
                    messages.push(encoded);
                }
                Ok(encoded) => {
                    tracing::error!(
                        node = self.from,
                        peer = self.peer,
                        bytes = encoded.len(),
                        "message dropped: larger than {MESSAGE_BYTES_MAX} bytes"
                    );
                    self.report_unreachable();
                }
                Err(error) => {
                    tracing::error!(node = self.from, peer = self.peer, %error, "message dropped: does not encode");
                }
            }
            if messages.len() < BATCH_MESSAGES_MAX && bytes < BATCH_BYTES_MAX {
                next = queue.try_recv().ok();
            }
        }
        proto::MessageBatch { from: self.from, messages }
    }
}

fn ended<T>(response: Result<Response<T>, Status>) -> LinkError {
    match response {
        Ok(_) => LinkError::Closed,
        Err(status) => LinkError::Rpc(status),
    }
}

/// One snapshot on its way to a peer.
struct SnapshotSend {
    from: u64,
    peer: u64,
    address: String,
    dir: PathBuf,
    inbound: mpsc::Sender<Inbound>,
    security: Security,
}

impl SnapshotSend {
    async fn run(self, message: Message, permit: OwnedSemaphorePermit) {
        let index = message.get_snapshot().get_metadata().index;
        let timeout = Duration::from_millis(SNAPSHOT_TIMEOUT_MS);
        let result = match tokio::time::timeout(timeout, self.stream(message)).await {
            Ok(result) => result,
            Err(_) => Err(LinkError::Timeout(SNAPSHOT_TIMEOUT_MS)),
        };
        drop(permit);
        let delivered = match result {
            Ok(()) => {
                tracing::info!(node = self.from, peer = self.peer, index, "snapshot delivered");
                true
            }
            Err(error) => {
                tracing::warn!(node = self.from, peer = self.peer, index, %error, "snapshot not delivered");
                false
            }
        };
        // Always reported, or Raft never sends this peer anything again.
        // This waits for room: the report must not be dropped. It fails only
        // when the node stopped, and then nobody needs it.
        let _ = self.inbound.send(Inbound::SnapshotSent { peer: self.peer, delivered }).await;
    }

    async fn stream(&self, message: Message) -> Result<(), LinkError> {
        let header =
            proto::SnapshotHeader { from: self.from, message: message.write_to_bytes().map_err(LinkError::Encode)? };
        let channel = connect(&self.security, self.peer, &self.address).await?;
        let (chunks, stream) = mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let first = proto::SnapshotChunk { part: Some(Part::Header(header)) };
        chunks.try_send(first).map_err(|_| LinkError::Closed)?;
        let dir = self.dir.clone();
        // File reads block: a blocking thread reads ahead of the connection,
        // at most SNAPSHOT_CHUNKS_IN_FLIGHT chunks.
        let reader = tokio::task::spawn_blocking(move || read_chunks(&dir, &chunks));
        let response = client(channel).send_snapshot(ReceiverStream::new(stream)).await;
        // If the reader failed, the stream ended early and the peer refused
        // the incomplete snapshot; both are checked all the same.
        let read = reader.await.map_err(LinkError::Reader)?;
        response.map_err(LinkError::Rpc)?;
        read.map_err(LinkError::Snapshot)
    }
}

/// Reads the snapshot in `dir` into `chunks`, the manifest first.
fn read_chunks(dir: &Path, chunks: &mpsc::Sender<proto::SnapshotChunk>) -> Result<(), StorageError> {
    let mut reader = SnapshotReader::open(dir, SNAPSHOT_CHUNK_BYTES)?;
    while let Some(chunk) = reader.next_chunk()? {
        let chunk = proto::FileChunk { file: chunk.file, offset: chunk.offset, data: chunk.data, crc32: chunk.crc32 };
        if chunks.blocking_send(proto::SnapshotChunk { part: Some(Part::Chunk(chunk)) }).is_err() {
            // The call ended (the peer refused, or the connection failed).
            return Ok(());
        }
    }
    Ok(())
}

/// The gRPC service a node serves to its peers. Mount it on a server with
/// [`RaftService::into_server`] (or `NodeHandle::transport_service`).
#[derive(Clone, Debug)]
pub struct RaftService {
    node_id: u64,
    inbound: mpsc::Sender<Inbound>,
    dirs: SnapshotDirs,
    snapshot_permits: Arc<Semaphore>,
    /// The group's members: who may send to it.
    members: watch::Receiver<Vec<u64>>,
}

/// The tonic service to add to a `tonic::transport::Server`.
pub type RaftTransportService = RaftTransportServer<RaftService>;

impl RaftService {
    pub(crate) fn new(
        node_id: u64,
        inbound: mpsc::Sender<Inbound>,
        dirs: SnapshotDirs,
        members: watch::Receiver<Vec<u64>>,
    ) -> Self {
        Self { node_id, inbound, dirs, snapshot_permits: Arc::new(Semaphore::new(SNAPSHOTS_RECEIVING_MAX)), members }
    }

    /// Checks that the connection's certificate names node `from`, a member
    /// of this group (a node with no members yet, one being added, accepts
    /// any node of its region: the listener admitted only those). A
    /// connection without an identity is plaintext, where every peer is
    /// trusted by configuration.
    fn admit(&self, peer: Option<&PeerInfo>, from: u64) -> Result<(), Status> {
        let Some(identity) = peer.and_then(|peer| peer.identity.as_deref()) else {
            return Ok(());
        };
        let me = self.node_id;
        let refuse = |reason: String| {
            tracing::warn!(node = me, from, %identity, reason, "Raft traffic refused");
            Err(Status::permission_denied(format!("node {me}: {reason}")))
        };
        let Identity::Node { id, .. } = identity else {
            return refuse(format!("{identity} is not a node"));
        };
        if *id != from {
            return refuse(format!("a connection authenticated as node {id} sends as node {from}"));
        }
        let members = self.members.borrow();
        if !members.is_empty() && !members.contains(id) {
            return refuse(format!("node {id} is not a member of this group ({members:?})"));
        }
        Ok(())
    }

    /// The service with this transport's message size bounds.
    pub fn into_server(self) -> RaftTransportService {
        RaftTransportServer::new(self)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
    }

    fn stopped(&self) -> Status {
        Status::unavailable(format!("node {} is stopped", self.node_id))
    }

    /// Decodes and checks one message from `from`.
    fn decode(&self, from: u64, bytes: &[u8]) -> Result<Message, String> {
        let message = Message::parse_from_bytes(bytes).map_err(|error| format!("does not decode: {error}"))?;
        if message.from != from {
            return Err(format!("claims to be from node {}", message.from));
        }
        if message.to != self.node_id {
            return Err(format!("is addressed to node {}, this is node {}", message.to, self.node_id));
        }
        Ok(message)
    }

    async fn receive_snapshot(
        &self,
        stream: &mut Streaming<proto::SnapshotChunk>,
        peer: Option<&PeerInfo>,
    ) -> Result<(), Status> {
        let me = self.node_id;
        let header = match stream.message().await? {
            Some(proto::SnapshotChunk { part: Some(Part::Header(header)) }) => header,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "node {me}: a snapshot stream must start with its header"
                )))
            }
        };
        let from = header.from;
        self.admit(peer, from)?;
        let refuse =
            |reason: String| Status::invalid_argument(format!("node {me}: snapshot from node {from} {reason}"));
        let message = self.decode(from, &header.message).map_err(|reason| refuse(format!("message {reason}")))?;
        if !is_snapshot(&message) {
            return Err(refuse(format!("carries a {:?}, not a snapshot", message.get_msg_type())));
        }
        let meta = message.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        let failed = |error: StorageError| {
            Status::internal(format!("node {me}: snapshot at index {index} from node {from}: {error}"))
        };
        let dirs = self.dirs.clone();
        let mut incoming = blocking(move || IncomingSnapshot::start(&dirs, index, term)).await?.map_err(failed)?;
        while let Some(part) = stream.message().await? {
            let Some(Part::Chunk(chunk)) = part.part else {
                return Err(refuse("sent a second header".into()));
            };
            let chunk = FileChunkData { file: chunk.file, offset: chunk.offset, data: chunk.data, crc32: chunk.crc32 };
            incoming = blocking(move || incoming.write(&chunk).map(|()| incoming)).await?.map_err(failed)?;
        }
        let manifest = blocking(move || incoming.finish()).await?.map_err(failed)?;
        if manifest.applied.index != index || manifest.applied.term != term {
            return Err(refuse(format!(
                "holds index {} term {}, its message says index {index} term {term}",
                manifest.applied.index, manifest.applied.term
            )));
        }
        // Only now, with every byte verified, may Raft see the message.
        self.inbound.send(Inbound::Message(message)).await.map_err(|_| self.stopped())
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(work).await.map_err(|error| Status::internal(format!("snapshot task failed: {error}")))
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(&self, request: Request<Streaming<proto::MessageBatch>>) -> Result<Response<proto::SendAck>, Status> {
        let me = self.node_id;
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            let from = batch.from;
            self.admit(peer.as_ref(), from)?;
            if batch.messages.len() > BATCH_MESSAGES_MAX {
                return Err(Status::invalid_argument(format!(
                    "node {me}: a batch from node {from} has {} messages, at most {BATCH_MESSAGES_MAX}",
                    batch.messages.len()
                )));
            }
            for (at, bytes) in batch.messages.iter().enumerate() {
                let refuse = |reason: String| {
                    Status::invalid_argument(format!("node {me}: message {at} of a batch from node {from} {reason}"))
                };
                let message = self.decode(from, bytes).map_err(refuse)?;
                if is_snapshot(&message) {
                    // Its data must arrive first: SendSnapshot carries both.
                    return Err(refuse("is a snapshot, which only SendSnapshot carries".into()));
                }
                self.inbound.send(Inbound::Message(message)).await.map_err(|_| self.stopped())?;
            }
        }
        Ok(Response::new(proto::SendAck {}))
    }

    async fn send_snapshot(
        &self,
        request: Request<Streaming<proto::SnapshotChunk>>,
    ) -> Result<Response<proto::SnapshotAck>, Status> {
        let Ok(_permit) = self.snapshot_permits.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "node {}: already receiving {SNAPSHOTS_RECEIVING_MAX} snapshots",
                self.node_id
            )));
        };
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let mut stream = request.into_inner();
        let timeout = Duration::from_millis(SNAPSHOT_TIMEOUT_MS);
        let received = match tokio::time::timeout(timeout, self.receive_snapshot(&mut stream, peer.as_ref())).await {
            Ok(received) => received,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "node {}: snapshot not received within {SNAPSHOT_TIMEOUT_MS} ms",
                self.node_id
            ))),
        };
        if let Err(status) = received {
            tracing::warn!(node = self.node_id, %status, "snapshot refused");
            return Err(status);
        }
        Ok(Response::new(proto::SnapshotAck {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_host_and_port() {
        assert!(check_address("127.0.0.1:7000").is_ok());
        assert!(check_address("node-1.coffer.internal:7000").is_ok());
        assert!(check_address("[::1]:7000").is_ok());
        for bad in ["", "127.0.0.1", "host:port", "host:70000", "http://host:1", "a b:1", &"a".repeat(300)] {
            assert!(check_address(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_member_s_addresses_round_trip_through_a_change_context() {
        let both = MemberAddresses { raft: "10.0.0.4:7201".into(), api: Some("10.0.0.4:7101".into()) };
        assert_eq!(MemberAddresses::from_context(both.to_context().as_bytes()), Some(both));
        let raft_only = MemberAddresses { raft: "10.0.0.4:7201".into(), api: None };
        assert_eq!(MemberAddresses::from_context(raft_only.to_context().as_bytes()), Some(raft_only.clone()));
        // An earlier version's context: the Raft address alone.
        assert_eq!(MemberAddresses::from_context(b"10.0.0.4:7201"), Some(raft_only));
        // A promotion carries none; a context without a Raft address is none.
        assert_eq!(MemberAddresses::from_context(b""), None);
        assert_eq!(MemberAddresses::from_context(b"api=10.0.0.4:7101"), None);
    }
}
