//! `coffer-consensus`: the Raft node that replicates Coffer's ledger, on
//! raft-rs.
//!
//! - [`Replica`]: the sans-IO node core. It is stepped with messages, ticks
//!   and proposals and returns messages to send and requests that finished;
//!   it reaches the disk only through [`ReplicaStorage`], time only through
//!   its arguments, randomness only through its seed. The tokio driver runs
//!   it in production, the simulator in tests.
//! - Group commit: proposals wait in a bounded queue and are packed into
//!   entries ([`command`]); a full queue answers `Overloaded`.
//! - Linearizable reads through ReadIndex; membership changes through
//!   `ConfChangeV2`; leader transfer; log compaction with snapshots sent in
//!   checksummed chunks beside the Raft message ([`storage`]).
//! - [`reads`]: reads run on a bounded pool, each against a consistent
//!   snapshot of the store ([`coffer_storage::ReadView`]), never on the
//!   driver thread.
//! - [`start_node`]: the production node — the driver that owns a
//!   [`Replica`] on [`DiskStorage`] and a real clock, answering a cloneable
//!   [`NodeHandle`] — and the gRPC peer transport ([`transport`]).
//! - [`metrics`]: what the node reports (applied index, term, leader
//!   changes, commit and apply latency, queue depths, snapshots).

pub mod command;
mod config;
pub mod driver;
mod error;
pub mod metrics;
pub mod reads;
pub mod region;
mod replica;
pub mod storage;
pub mod transport;

pub use coffer_storage::audit;
pub use coffer_storage::snapshot::SnapshotManifest;
/// The view reads run on, and the store's errors they may report.
pub use coffer_storage::{ReadView, RegionRole, RegionState, StorageError};
pub use config::{ConsensusConfig, DR_LOG_RETAIN_ENTRIES_MAX_DEFAULT};
pub use driver::{
    start_node, DriverThread, NodeConfig, NodeHandle, NodeView, RequestError, StartError, REQUESTS_MAX_DEFAULT,
    ROUND_INPUTS_MAX,
};
pub use error::{ConsensusError, ProposalError, ReadError, StepError};
/// raft-rs, whose message and state types this crate's API uses.
pub use raft;
pub use reads::{ReadLimits, READS_ADMITTED_MAX_DEFAULT, READS_RUNNING_MAX_DEFAULT};
pub use replica::{
    is_snapshot, Applied, Completion, EntriesError, MembershipApplied, MembershipChange, NodeStatus, Outbox, Outcome,
    Output, PeerProgress, ProposalId, ReadId, Replica,
};
pub use storage::{DiskStorage, IncomingSnapshot, ReplicaStorage, SnapshotDirs};
pub use transport::{MemberAddresses, RaftService, RaftTransportService};
