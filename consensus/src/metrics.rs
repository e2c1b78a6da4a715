//! The node's metrics: their names, units and labels in one place. They are
//! recorded through the `metrics` facade (exported by whatever recorder the
//! process installs, Prometheus in `coffer node`), every one labelled with
//! the node's id (`node`), so nodes sharing a process stay apart.
//!
//! Recording them changes nothing the node does; with no recorder installed
//! they cost a few loads and branches.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `coffer_raft_applied_index` | gauge | last entry applied to the state |
//! | `coffer_raft_commit_index` | gauge | last entry known committed |
//! | `coffer_raft_term` | gauge | current term |
//! | `coffer_raft_leader_id` | gauge | the leader this node knows (0: none) |
//! | `coffer_raft_is_leader` | gauge | 1 while this node leads |
//! | `coffer_raft_leader_changes_total` | counter | a new leader became known |
//! | `coffer_raft_membership_changes_total` | counter | membership changes applied |
//! | `coffer_raft_snapshots_made_total` | counter | snapshots this node made to send |
//! | `coffer_raft_snapshots_sent_total{result}` | counter | snapshots sent, `delivered` or `failed` |
//! | `coffer_raft_snapshots_installed_total` | counter | snapshots installed from a leader |
//! | `coffer_consensus_proposal_events` | histogram | events per proposal (a client's batch) |
//! | `coffer_consensus_entry_events` | histogram | events per applied entry (a group-commit batch) |
//! | `coffer_budget_warnings_total` | counter | transfers that took an appropriation across its ledger's warning share (the same on every replica) |
//! | `coffer_consensus_queue_proposals` | gauge | proposals waiting in the group-commit queue |
//! | `coffer_consensus_queue_events` | gauge | events waiting in the group-commit queue |
//! | `coffer_consensus_requests_waiting` | gauge | requests waiting for the driver |
//! | `coffer_consensus_commit_latency_seconds` | histogram | proposal to applied at the leader |
//! | `coffer_consensus_apply_latency_seconds` | histogram | writing one applied entry to the store (timed in `DiskStorage`, the IO edge: the replica reads no clock) |
//! | `coffer_consensus_round_duration_seconds` | histogram | one driver round (persist, send, apply) |
//!
//! RocksDB's size gauges (`coffer_rocksdb_*`) are in
//! [`coffer_storage::metrics`].

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter, Gauge, Histogram, Unit,
};

/// The metrics the replica records while applying.
#[derive(Clone, Debug)]
pub(crate) struct ReplicaMetrics {
    pub(crate) entry_events: Histogram,
    pub(crate) budget_warnings: Counter,
}

impl ReplicaMetrics {
    pub(crate) fn new(node: u64) -> Self {
        let node = node.to_string();
        Self {
            entry_events: histogram!("coffer_consensus_entry_events", "node" => node.clone()),
            budget_warnings: counter!("coffer_budget_warnings_total", "node" => node),
        }
    }
}

/// The metrics the driver records around each round.
#[derive(Clone, Debug)]
pub(crate) struct DriverMetrics {
    pub(crate) applied_index: Gauge,
    pub(crate) commit_index: Gauge,
    pub(crate) term: Gauge,
    pub(crate) leader_id: Gauge,
    pub(crate) is_leader: Gauge,
    pub(crate) leader_changes: Counter,
    pub(crate) membership_changes: Counter,
    pub(crate) snapshots_made: Counter,
    pub(crate) snapshots_delivered: Counter,
    pub(crate) snapshots_failed: Counter,
    pub(crate) snapshots_installed: Counter,
    pub(crate) proposal_events: Histogram,
    pub(crate) queue_proposals: Gauge,
    pub(crate) queue_events: Gauge,
    pub(crate) requests_waiting: Gauge,
    pub(crate) commit_latency: Histogram,
    pub(crate) round_duration: Histogram,
}

/// Says what each metric means (Prometheus `# HELP` lines).
fn describe() {
    describe_gauge!("coffer_raft_applied_index", "Last log entry applied to the state");
    describe_gauge!("coffer_raft_commit_index", "Last log entry known committed");
    describe_gauge!("coffer_raft_term", "Current Raft term");
    describe_gauge!("coffer_raft_leader_id", "The leader this node knows (0: none)");
    describe_gauge!("coffer_raft_is_leader", "1 while this node leads");
    describe_counter!("coffer_raft_leader_changes_total", "A new leader became known");
    describe_counter!("coffer_raft_membership_changes_total", "Membership changes applied");
    describe_counter!("coffer_raft_snapshots_made_total", "Snapshots made to send to peers");
    describe_counter!("coffer_raft_snapshots_sent_total", "Snapshots sent to peers, by result");
    describe_counter!("coffer_raft_snapshots_installed_total", "Snapshots installed from a leader");
    describe_histogram!("coffer_consensus_proposal_events", "Events per proposal (a client's batch)");
    describe_histogram!("coffer_consensus_entry_events", "Events per applied entry (a group-commit batch)");
    describe_counter!(
        "coffer_budget_warnings_total",
        "Transfers that took an appropriation across its ledger's warning share"
    );
    describe_gauge!("coffer_consensus_queue_proposals", "Proposals waiting in the group-commit queue");
    describe_gauge!("coffer_consensus_queue_events", "Events waiting in the group-commit queue");
    describe_gauge!("coffer_consensus_requests_waiting", "Requests waiting for the node's driver");
    describe_histogram!("coffer_consensus_commit_latency_seconds", Unit::Seconds, "Proposal to applied, at the leader");
    describe_histogram!(
        "coffer_consensus_apply_latency_seconds",
        Unit::Seconds,
        "Writing one applied entry to the store"
    );
    describe_histogram!("coffer_consensus_round_duration_seconds", Unit::Seconds, "One driver round");
}

impl DriverMetrics {
    pub(crate) fn new(node: u64) -> Self {
        describe();
        let node = node.to_string();
        let sent = |result: &'static str| counter!("coffer_raft_snapshots_sent_total", "node" => node.clone(), "result" => result);
        Self {
            applied_index: gauge!("coffer_raft_applied_index", "node" => node.clone()),
            commit_index: gauge!("coffer_raft_commit_index", "node" => node.clone()),
            term: gauge!("coffer_raft_term", "node" => node.clone()),
            leader_id: gauge!("coffer_raft_leader_id", "node" => node.clone()),
            is_leader: gauge!("coffer_raft_is_leader", "node" => node.clone()),
            leader_changes: counter!("coffer_raft_leader_changes_total", "node" => node.clone()),
            membership_changes: counter!("coffer_raft_membership_changes_total", "node" => node.clone()),
            snapshots_made: counter!("coffer_raft_snapshots_made_total", "node" => node.clone()),
            snapshots_delivered: sent("delivered"),
            snapshots_failed: sent("failed"),
            snapshots_installed: counter!("coffer_raft_snapshots_installed_total", "node" => node.clone()),
            proposal_events: histogram!("coffer_consensus_proposal_events", "node" => node.clone()),
            queue_proposals: gauge!("coffer_consensus_queue_proposals", "node" => node.clone()),
            queue_events: gauge!("coffer_consensus_queue_events", "node" => node.clone()),
            requests_waiting: gauge!("coffer_consensus_requests_waiting", "node" => node.clone()),
            commit_latency: histogram!("coffer_consensus_commit_latency_seconds", "node" => node.clone()),
            round_duration: histogram!("coffer_consensus_round_duration_seconds", "node" => node),
        }
    }
}
