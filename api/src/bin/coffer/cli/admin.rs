//! The `AdminService` commands, through the Rust client (which follows the
//! leader): status, membership, leader transfer, snapshots, the audit
//! trail.

use coffer_api::client::{Client, ClientConfig, ClientError, Membership, NodeReport, Role};
use serde::Serialize;

use super::conn::endpoint;
use super::parse::format_timestamp;
use super::table::Table;
use super::view::{nodes_table, NodeView};
use super::{CliError, ClientOptions, LeaderTransferArgs, MemberCommand, Out, SnapshotArgs};

fn client(options: &ClientOptions) -> Result<Client, CliError> {
    let config = ClientConfig { deadline_ms: options.timeout_ms, ..super::client_config(options.addresses.clone()) };
    Client::new(config).map_err(|error| CliError::usage("--addresses", error.to_string()))
}

fn failed(rpc: &'static str) -> impl FnOnce(ClientError) -> CliError {
    move |error| CliError::Client { rpc, error }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::PreCandidate => "pre_candidate",
    }
}

/// Node ids in ascending order, as an operator scans them.
fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted
}

/// The newest leader that answered.
fn leader(nodes: &[NodeReport]) -> Option<&NodeReport> {
    nodes.iter().filter(|node| node.role == Some(Role::Leader)).max_by_key(|node| node.term)
}

/// The nodes in the configuration of the newest leader that answered.
fn members(nodes: &[NodeReport]) -> Option<Vec<u64>> {
    let leader = leader(nodes)?;
    Some(leader.voters.iter().chain(&leader.learners).copied().collect())
}

/// A row for each member of the leader's configuration the address book
/// does not list (a node added later): it was not asked, but it is there.
fn unlisted_members(nodes: &[NodeReport]) -> Vec<NodeView> {
    let Some(leader) = leader(nodes) else { return Vec::new() };
    let listed = |id: &u64| nodes.iter().any(|node| node.node_id == *id);
    let voters = leader.voters.iter().filter(|id| !listed(id)).map(|id| (*id, "voter"));
    let learners = leader.learners.iter().filter(|id| !listed(id)).map(|id| (*id, "learner"));
    let mut rows: Vec<NodeView> = voters
        .chain(learners)
        .map(|(node_id, role)| NodeView {
            node_id,
            address: String::new(),
            role: Some(role.to_owned()),
            term: 0,
            leader_id: leader.node_id,
            commit_index: 0,
            applied_index: 0,
            lag: 0,
            voters: Vec::new(),
            learners: Vec::new(),
            error: Some("not in the address book: not asked".to_owned()),
            plaintext: false,
        })
        .collect();
    rows.sort_by_key(|row| row.node_id);
    rows
}

/// A node's row; one that answers but is not in `members` (the leader's
/// configuration) was removed, whatever it still believes itself to be.
fn node_view(node: &NodeReport, members: Option<&[u64]>) -> NodeView {
    let removed = node.role.is_some() && members.is_some_and(|members| !members.contains(&node.node_id));
    NodeView {
        node_id: node.node_id,
        address: node.address.clone(),
        role: node.role.map(|role| if removed { "removed" } else { role_name(role) }.to_owned()),
        term: node.term,
        leader_id: node.leader_id,
        commit_index: node.commit_index,
        applied_index: node.applied_index,
        lag: node.lag,
        voters: sorted(&node.voters),
        learners: sorted(&node.learners),
        error: node.error.clone(),
        plaintext: node.plaintext,
    }
}

/// One record of `coffer audit`.
#[derive(Debug, Serialize)]
struct AuditView {
    index: u64,
    part: u32,
    time: String,
    first_timestamp: u64,
    principal: String,
    kind: String,
    events: u32,
    proposer: u64,
    applied: bool,
    note: String,
}

/// `coffer audit`
pub async fn audit(options: &ClientOptions, out: Out, args: super::AuditArgs) -> Result<(), CliError> {
    let client = client(options)?.with_stale_reads(options.stale);
    let reply = client.list_audit(args.after, args.limit, args.of.as_deref()).await.map_err(failed("ListAudit"))?;
    let records: Vec<AuditView> = reply
        .value
        .into_iter()
        .map(|record| AuditView {
            index: record.index,
            part: record.part,
            time: if record.first_timestamp == 0 { "-".into() } else { format_timestamp(record.first_timestamp) },
            first_timestamp: record.first_timestamp,
            principal: if record.principal.is_empty() { "(unrecorded)".into() } else { record.principal },
            kind: record.kind,
            events: record.events,
            proposer: record.proposer,
            applied: record.applied,
            note: record.note,
        })
        .collect();
    out.emit(&records, |records| {
        let mut table =
            Table::new(&["INDEX", "PART", "TIME", "PRINCIPAL", "KIND", "EVENTS", "PROPOSER", "APPLIED", "NOTE"]);
        for record in records {
            table.row(vec![
                record.index.to_string(),
                record.part.to_string(),
                record.time.clone(),
                record.principal.clone(),
                record.kind.clone(),
                record.events.to_string(),
                format!("node {}", record.proposer),
                if record.applied { "yes".into() } else { "refused whole".into() },
                record.note.clone(),
            ]);
        }
        let mut text = table.render();
        if let Some(last) = records.last() {
            text.push_str(&format!(
                "(node {}, applied index {}; next page: --after {})\n",
                reply.node_id, reply.applied_index, last.index
            ));
        } else {
            text.push_str(&format!(
                "no records after index {} (node {}, applied index {})\n",
                args.after, reply.node_id, reply.applied_index
            ));
        }
        text
    })
}

/// `coffer status`
pub async fn status(options: &ClientOptions, out: Out) -> Result<(), CliError> {
    let nodes = client(options)?.status().await.map_err(failed("Status"))?;
    let members = members(&nodes);
    let mut views = nodes.iter().map(|node| node_view(node, members.as_deref())).collect::<Vec<_>>();
    views.extend(unlisted_members(&nodes));
    let nodes = views;
    out.emit(&nodes, |nodes| nodes_table(nodes).render())
}

/// The membership after a change.
#[derive(Debug, Clone, Serialize)]
struct MembershipView {
    index: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
}

impl MembershipView {
    fn text(&self) -> String {
        let list = |ids: &[u64]| match ids {
            [] => "none".to_owned(),
            ids => ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        };
        format!("voters: {}; learners: {} (log index {})\n", list(&self.voters), list(&self.learners), self.index)
    }
}

/// `coffer member add|promote|remove`
pub async fn member(options: &ClientOptions, out: Out, command: MemberCommand) -> Result<(), CliError> {
    let client = client(options)?;
    let (rpc, membership) = match command {
        MemberCommand::Add(args) => {
            ("AddNode", client.add_node(args.id, &args.raft_address, args.api_address.as_deref()).await)
        }
        MemberCommand::Promote(args) => ("PromoteNode", client.promote_node(args.id, args.force).await),
        MemberCommand::Remove(args) => ("RemoveNode", client.remove_node(args.id, args.force).await),
    };
    let Membership { index, mut voters, mut learners } = membership.map_err(failed(rpc))?;
    voters.sort_unstable();
    learners.sort_unstable();
    out.emit(&MembershipView { index, voters, learners }, MembershipView::text)
}

/// A leader transfer asked for.
#[derive(Debug, Clone, Serialize)]
struct LeaderTransferView {
    to: u64,
}

/// `coffer leader transfer`
pub async fn transfer_leader(options: &ClientOptions, out: Out, args: LeaderTransferArgs) -> Result<(), CliError> {
    client(options)?.transfer_leader(args.to).await.map_err(failed("TransferLeader"))?;
    out.emit(&LeaderTransferView { to: args.to }, |view| {
        format!("the leader is handing leadership to node {}; `coffer status` shows the outcome\n", view.to)
    })
}

/// A snapshot made.
#[derive(Debug, Clone, Serialize)]
struct SnapshotView {
    node_id: u64,
    address: String,
    dir: String,
    applied_index: u64,
    applied_term: u64,
    files: u64,
    bytes: u64,
}

/// `coffer snapshot`
pub async fn snapshot(options: &ClientOptions, out: Out, args: SnapshotArgs) -> Result<(), CliError> {
    if !args.dir.is_absolute() {
        return Err(CliError::usage(
            "--dir",
            format!("{} is not an absolute path (on the node's machine)", args.dir.display()),
        ));
    }
    let address = match args.node.or_else(|| options.addresses.first().cloned()) {
        Some(address) => address,
        None => return Err(CliError::usage("--node", "no node address given")),
    };
    endpoint(&address).map_err(|reason| CliError::usage("--node", reason))?;
    let info = client(options)?.snapshot(&address, &args.dir).await.map_err(failed("Snapshot"))?;
    let view = SnapshotView {
        node_id: info.node_id,
        address,
        dir: args.dir.display().to_string(),
        applied_index: info.applied_index,
        applied_term: info.applied_term,
        files: info.files,
        bytes: info.bytes,
    };
    out.emit(&view, |view| {
        format!(
            "node {} ({}) made a snapshot of applied index {} (term {}) in {}: {} files, {} bytes\n",
            view.node_id, view.address, view.applied_index, view.applied_term, view.dir, view.files, view.bytes
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_lists_voters_and_learners_in_ascending_order() {
        let report = NodeReport { node_id: 1, voters: vec![2, 4, 1, 3], learners: vec![9, 7], ..Default::default() };
        let view = node_view(&report, None);
        assert_eq!((view.voters, view.learners), (vec![1, 2, 3, 4], vec![7, 9]));
    }

    #[test]
    fn a_node_the_leaders_configuration_does_not_hold_is_shown_removed() {
        let node = |node_id, role, term, voters: &[u64]| NodeReport {
            node_id,
            role: Some(role),
            term,
            voters: voters.to_vec(),
            ..Default::default()
        };
        let nodes = [
            node(1, Role::Leader, 3, &[1, 2]),
            // Node 3 was removed and still believes it follows.
            node(3, Role::Follower, 2, &[1, 2, 3]),
            node(2, Role::Follower, 3, &[1, 2]),
            // An old leader of an earlier term holds no sway.
            node(4, Role::Leader, 1, &[1, 2, 3, 4]),
            NodeReport { node_id: 5, error: Some("connection refused".into()), ..Default::default() },
        ];
        let members = members(&nodes);
        let roles: Vec<Option<String>> = nodes.iter().map(|node| node_view(node, members.as_deref()).role).collect();
        let expected = [Some("leader"), Some("removed"), Some("follower"), Some("removed"), None];
        assert_eq!(roles, expected.map(|role| role.map(str::to_owned)));
        // Nodes 1 and 2 are listed; a learner added later is not.
        let grown = [NodeReport { learners: vec![9], ..nodes[0].clone() }, nodes[2].clone()];
        let unlisted = unlisted_members(&grown);
        let rows: Vec<(u64, Option<String>)> = unlisted.into_iter().map(|row| (row.node_id, row.role)).collect();
        assert_eq!(rows, [(9, Some("learner".to_owned()))]);
    }
}
