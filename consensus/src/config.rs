//! The consensus node's configuration: one typed struct, every bound named,
//! with the defaults a production node uses.

use coffer_ledger::BATCH_EVENTS_MAX;

/// Settings of one Raft node. Times are in ticks: the driver decides how
/// long a tick is (`tick_ms`), the simulator advances them itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// This node's id (non-zero, unique in the cluster).
    pub node_id: u64,
    /// Wall-clock length of one tick, used by the production driver only.
    pub tick_ms: u64,
    /// Ticks without a leader's heartbeat before a follower campaigns (the
    /// randomized timeout lies in `[election_ticks, 2 × election_ticks)`).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Bytes of entries per append message (at least one entry is always sent).
    pub max_size_per_msg_bytes: u64,
    /// Append messages in flight to one follower before the leader waits.
    pub max_inflight_msgs: usize,
    /// Bytes of proposed but uncommitted entries the leader accepts before
    /// dropping proposals (raft's own backpressure).
    pub max_uncommitted_bytes: u64,
    /// Bytes of committed entries handed to the state machine per Ready.
    pub max_committed_bytes_per_ready: u64,
    /// Events waiting in the proposal queue before new proposals are
    /// refused as overloaded.
    pub queue_events_max: usize,
    /// Proposals waiting in the queue before new ones are refused.
    pub queue_proposals_max: usize,
    /// Events packed into one entry (at most the ledger's batch limit).
    pub entry_events_max: usize,
    /// Entries proposed per round of group commit; the rest wait a round.
    pub entries_per_round_max: usize,
    /// Interval between the leader's expiry proposals, in nanoseconds of the
    /// time the driver passes in.
    pub expiry_interval_ns: u64,
    /// Ticks a node may keep committed transfer batches unwritten, to write
    /// up to eight of them as one run: a follower holds them unapplied, the
    /// leader prepared and answered (see README, "Consensus"). A read, any
    /// other entry, or a change of role writes them at once.
    pub apply_hold_ticks: u64,
    /// Ticks a ReadIndex request may wait before it is tried again.
    pub read_timeout_ticks: usize,
    /// Tries of a ReadIndex request before it fails.
    pub read_attempts_max: u32,
    /// Reads waiting at once before new ones are refused.
    pub reads_max: usize,
    /// Applied entries kept in the log before it is compacted.
    pub log_gc_threshold_entries: u64,
    /// Entries kept below the compaction point for followers that lag a
    /// little (a follower further behind gets a snapshot).
    pub log_gc_keep_entries: u64,
    /// Entries past a standby region's shipping cursor this node keeps in
    /// its log for it; a standby further behind must be re-seeded.
    pub dr_log_retain_entries_max: u64,
    /// Whether this node's region starts as the disaster-recovery standby
    /// (until a region entry sets the role): it then refuses client writes
    /// and applies only what it ships from the primary region.
    pub standby: bool,
    /// Seed of the node's random source (the randomized election timeout).
    pub seed: u64,
}

/// The default of [`ConsensusConfig::dr_log_retain_entries_max`]: with
/// entries of up to 8,189 transfers, about 0.5 billion transfers.
pub const DR_LOG_RETAIN_ENTRIES_MAX_DEFAULT: u64 = 65_536;

impl ConsensusConfig {
    /// The defaults for node `node_id`.
    pub fn new(node_id: u64) -> Self {
        Self {
            node_id,
            tick_ms: 50,
            election_ticks: 20,
            heartbeat_ticks: 2,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_bytes: 256 << 20,
            max_committed_bytes_per_ready: 16 << 20,
            queue_events_max: 16 * BATCH_EVENTS_MAX,
            queue_proposals_max: 4_096,
            entry_events_max: BATCH_EVENTS_MAX,
            entries_per_round_max: 16,
            expiry_interval_ns: 1_000_000_000,
            apply_hold_ticks: 16,
            read_timeout_ticks: 40,
            read_attempts_max: 3,
            reads_max: 65_536,
            log_gc_threshold_entries: 4_096,
            log_gc_keep_entries: 1_024,
            dr_log_retain_entries_max: DR_LOG_RETAIN_ENTRIES_MAX_DEFAULT,
            standby: false,
            seed: node_id,
        }
    }

    /// The raft-rs configuration these settings make, checked.
    pub fn raft_config(&self, applied: u64) -> Result<raft::Config, raft::Error> {
        let config = raft::Config {
            id: self.node_id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            applied,
            max_size_per_msg: self.max_size_per_msg_bytes,
            max_inflight_msgs: self.max_inflight_msgs,
            // A leader cut off from a quorum steps down, so it stops
            // accepting proposals it could never commit.
            check_quorum: true,
            // A node rejoining after a partition does not disrupt the
            // leader by bumping the term.
            pre_vote: true,
            // Off: raft-rs 0.7 merges new entries into a MsgAppend already
            // queued for the same peer, checking that they follow that
            // message's last entry but not, when it has none, its `index`.
            // A leader that queued an empty append at index i and then, in
            // the same round, learns the peer needs entry i again (a reject)
            // sends {index: i, entries: [i, ..]}: the peer acknowledges one
            // entry more than it holds, and the leader can commit an entry
            // only it has. Found by the simulator (`coffer-chaos sim --seed
            // 7` with this on). The transport still batches messages per peer.
            batch_append: false,
            max_uncommitted_size: self.max_uncommitted_bytes,
            max_committed_size_per_ready: self.max_committed_bytes_per_ready,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        };
        config.validate()?;
        Ok(config)
    }
}
