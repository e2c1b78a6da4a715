//! Errors of the consensus node, split by who must act on them: a proposer
//! or reader ([`ProposalError`], [`ReadError`]: per request, most of them
//! retryable), the peer that sent a bad message ([`StepError`]), or the
//! operator ([`ConsensusError`]: the node cannot go on safely and stops).

use coffer_ledger::ApplyError;
use coffer_storage::StorageError;

use crate::command::CommandError;

/// Why a proposal was not (or may not have been) applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// This node is not the leader; `leader` is the one it knows of.
    /// Nothing was proposed: retry at the leader.
    #[error("node is not the leader (leader: {})", leader.map_or("unknown".to_owned(), |id| format!("node {id}")))]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
    },
    /// The proposal queue is full (backpressure). Nothing was proposed:
    /// retry later.
    #[error("overloaded: {queued} {unit} already waiting (at most {max})")]
    Overloaded {
        /// What is waiting.
        queued: usize,
        /// The bound.
        max: usize,
        /// What `queued` counts (`events`, `proposals`, `reads`).
        unit: &'static str,
    },
    /// Raft refused the entry (a leader transfer is under way, or the
    /// uncommitted-bytes bound was reached). Nothing was appended: retry.
    #[error("raft dropped the proposal: {reason}")]
    Dropped {
        /// Why.
        reason: &'static str,
    },
    /// The node lost leadership after appending the entry: it may or may not
    /// commit. Retry with the same ids; the retry's results say which.
    #[error("leadership lost before the entry was applied; outcome unknown, retry with the same ids")]
    LeadershipLost,
    /// The proposal has more events than one entry may carry.
    #[error("batch has {events} events, more than the {max} allowed")]
    TooLarge {
        /// Events in the proposal.
        events: usize,
        /// The most allowed.
        max: usize,
    },
    /// A membership change is already pending; propose this one after it
    /// is applied.
    #[error("a membership change is already pending")]
    ConfChangePending,
    /// A leader transfer target, or a learner to promote, is not caught up
    /// with the leader's log.
    #[error("node {target} is not caught up (matched {matched}, last index {last_index})")]
    NotCaughtUp {
        /// The target.
        target: u64,
        /// Its last index known to match the leader's log.
        matched: u64,
        /// The leader's last index.
        last_index: u64,
    },
    /// Removing the node would leave a group that one more failure stops.
    #[error(
        "removing node {node} leaves {voters} voters, {live} of them live, and a quorum of {quorum}: one more \
         failure would stop writes; add and promote a node first, or force the removal"
    )]
    WouldLoseFaultTolerance {
        /// The node to remove.
        node: u64,
        /// Voters after the removal.
        voters: usize,
        /// Of which heard from recently (the leader included).
        live: usize,
        /// Their quorum.
        quorum: usize,
    },
    /// The request names something invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The state machine refused the whole batch (the same on every replica).
    #[error("batch rejected: {0}")]
    Rejected(ApplyError),
    /// The region does not accept writes: it is a standby, or a primary
    /// that froze its writes for a switchover. Nothing was written.
    #[error("{}", if *standby {
        format!("this region is a standby (epoch {epoch}): writes go to the primary region")
    } else {
        format!("this region's writes are frozen for a switchover (epoch {epoch}): retry shortly, possibly at the other region")
    })]
    NotWritable {
        /// A standby (otherwise a frozen primary).
        standby: bool,
        /// The region's epoch.
        epoch: u64,
    },
    /// The region refused a region operation (the same on every replica).
    #[error("region operation {op} refused: {reason}")]
    RegionRefused {
        /// The operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
}

impl ProposalError {
    /// Whether sending the same request again (with the same ids) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NotLeader { .. } | Self::Overloaded { .. } | Self::Dropped { .. } | Self::LeadershipLost)
            || matches!(self, Self::NotWritable { standby: false, .. })
    }
}

/// Why a linearizable read could not be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known to confirm the read index: retry (at the leader).
    #[error("no leader to confirm a read (leader: {})", leader.map_or("unknown".to_owned(), |id| format!("node {id}")))]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
    },
    /// The read index was not confirmed in time, after every try.
    #[error("read index not confirmed after {attempts} tries")]
    Timeout {
        /// Tries made.
        attempts: u32,
    },
    /// Too many reads wait already.
    #[error("overloaded: {queued} reads already waiting (at most {max})")]
    Overloaded {
        /// Reads waiting.
        queued: usize,
        /// The bound.
        max: usize,
    },
}

/// A message a peer sent that this node refuses (the node goes on).
#[derive(Debug, thiserror::Error)]
#[error("message {kind:?} from node {from} refused: {reason}")]
pub struct StepError {
    /// The sender.
    pub from: u64,
    /// The message type.
    pub kind: raft::prelude::MessageType,
    /// Why.
    pub reason: String,
}

/// A failure after which the node must stop: continuing could apply
/// something wrong or lose an acknowledged write.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The store failed or holds something it cannot verify.
    #[error("node storage: {0}")]
    Storage(#[from] StorageError),
    /// raft-rs refused a configuration or an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A committed entry does not decode.
    #[error("committed entry {index} is corrupt: {source}")]
    CorruptEntry {
        /// The entry's index.
        index: u64,
        /// The decoding failure.
        source: CommandError,
    },
    /// The ledger's store failed while applying a committed entry.
    #[error("applying entry {index}: {source}")]
    Apply {
        /// The entry's index.
        index: u64,
        /// The failure.
        source: ApplyError,
    },
}
