//! The checks of a nemesis run: the recorded history against what every
//! node serves once the cluster has healed, against every node's store
//! once it has stopped, and the reads made during the run against the
//! writes acknowledged before them.
//!
//! What each check holds, and its limits:
//!
//! - **Outcomes** ([`check_outcomes`], `coffer-chaos`'s `History`): an
//!   acknowledged id's outcome never changes (`created` at most once, then
//!   only `exists`; a failure never turns into a success).
//! - **No acknowledged transfer lost** ([`check_final`]): every transfer
//!   acknowledged `created` or `exists` is found on every node, with the
//!   fields the client sent (a post or void inherits what it left zero), and
//!   every node holds the very same record (timestamps included) for every
//!   id any node holds; a transfer acknowledged as failed exists nowhere.
//! - **Nothing applied twice, balances right** ([`check_final`]): each
//!   node's four balances of every account equal the sums recomputed from
//!   the transfers it holds of those sent (acknowledged, or indeterminate and
//!   found): single-phase transfers and posts move posted amounts, pending
//!   transfers that were not posted, voided or timed out reserve. The run
//!   waits past every timeout before it reads, so a pending transfer with a
//!   timeout and no post or void counts as expired.
//! - **Conservation** and **limits** on every node's final balances; limits
//!   also on every balance read during the run ([`check_reads`]).
//! - **Stores** ([`check_stores`], on stopped nodes): `coffer verify`
//!   passes; `coffer-chaos`'s replica check (durability, balances recomputed
//!   from the store's own transfers and pending states, conservation,
//!   limits) on each store; every transfer a store holds was sent by a
//!   client (nothing invented); replicas at the same applied index have the
//!   same state digest.
//! - **Reads** ([`check_reads`], linearizability of monotone quantities):
//!   a read that began after a write was acknowledged is served at or past
//!   that write's log index, and its `debits_posted` and `credits_posted`
//!   include every posting acknowledged on the account before it began
//!   (amounts from the records the cluster holds at the end); reads never go
//!   backwards: neither the applied index nor an account's posted balances
//!   fall below what a read that ended before it began saw. Pending
//!   balances go down as well as up (posts, voids, expiry), so reads are
//!   held to the limits for them, not to an order; a read of a few
//!   accounts cannot show a ledger's conservation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use coffer_chaos::checker::{stored_field_differing, History};
use coffer_chaos::workload::{transfer_name, Bank};
use coffer_chaos::Violation;
use coffer_ledger::invariants::{contribution, limit_breach, Balances, TransferRole};
use coffer_ledger::{Account, AccountId, LedgerId, Store, Transfer, TransferId};

use super::faults::verify;
use super::history::{HistoryLog, WriteOutcome};
use crate::Cluster;

/// Ids per lookup (below the 8,189-event batch bound).
const LOOKUP_CHUNK: usize = 8_000;
/// Accounts cached while a stopped store is read.
const ACCOUNT_CACHE_ENTRIES: usize = 4_096;
/// Violations of one check listed before the rest are only counted.
const DETAILS_MAX: usize = 20;

/// What one node serves once the cluster has healed and gone quiet.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    /// The applied index it was read at.
    pub applied_index: u64,
    /// Every sent transfer it holds.
    pub transfers: BTreeMap<TransferId, Transfer>,
    /// Every account of the bank.
    pub accounts: BTreeMap<AccountId, Account>,
}

/// Collects violations of one check, listing the first [`DETAILS_MAX`].
struct Found<'v> {
    checker: &'static str,
    violations: &'v mut Vec<Violation>,
    count: usize,
}

impl<'v> Found<'v> {
    fn new(checker: &'static str, violations: &'v mut Vec<Violation>) -> Self {
        Self { checker, violations, count: 0 }
    }

    fn add(&mut self, detail: String) {
        self.count += 1;
        if self.count <= DETAILS_MAX {
            self.violations.push(Violation { step: 0, checker: self.checker, detail });
        }
    }
}

impl Drop for Found<'_> {
    fn drop(&mut self) {
        if self.count > DETAILS_MAX {
            let more = self.count - DETAILS_MAX;
            self.violations.push(Violation { step: 0, checker: self.checker, detail: format!("... and {more} more") });
        }
    }
}

/// Every transfer any client sent, by id (as first sent; a retry sends the
/// same one).
pub fn sent_transfers(log: &HistoryLog) -> BTreeMap<TransferId, Transfer> {
    let mut sent = BTreeMap::new();
    for write in &log.writes {
        for transfer in &write.transfers {
            sent.entry(transfer.id).or_insert(*transfer);
        }
    }
    sent
}

/// Feeds every acknowledgement, in the order they arrived, to `history`,
/// which checks that outcomes never change.
pub fn check_outcomes(log: &HistoryLog, history: &mut History) -> Vec<Violation> {
    let mut acked: Vec<_> = log.acked().collect();
    acked.sort_by_key(|write| write.finished);
    let mut violations = Vec::new();
    for (step, write) in acked.into_iter().enumerate() {
        if let WriteOutcome::Acked { index, results, .. } = &write.outcome {
            violations.extend(history.acknowledge(step as u64, *index, &write.transfers, results));
        }
    }
    violations
}

/// The ids acknowledged present (`created`/`exists`) and acknowledged as
/// failed (and never present).
fn acked_ids(log: &HistoryLog) -> (BTreeSet<TransferId>, BTreeSet<TransferId>) {
    let (mut present, mut failed) = (BTreeSet::new(), BTreeSet::new());
    for write in log.acked() {
        if let WriteOutcome::Acked { results, .. } = &write.outcome {
            for (transfer, result) in write.transfers.iter().zip(results) {
                if result.is_success() {
                    present.insert(transfer.id);
                } else {
                    failed.insert(transfer.id);
                }
            }
        }
    }
    let failed = failed.difference(&present).copied().collect();
    (present, failed)
}

/// Reads `ids` and every account of `bank` from node `node` of `cluster`
/// with stale (local) reads.
pub async fn read_node(cluster: &Cluster, node: u64, ids: &[TransferId], bank: &Bank) -> Result<NodeState, String> {
    let process = cluster.nodes.get(&node).ok_or_else(|| format!("no node {node}"))?;
    let client = process.client().with_stale_reads(true);
    let mut state = NodeState::default();
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let reply = client.lookup_transfers(chunk).await.map_err(|error| format!("node {node}: {error}"))?;
        state.transfers.extend(reply.value.into_iter().flatten().map(|transfer| (transfer.id, transfer)));
    }
    let account_ids: Vec<AccountId> = bank.accounts.iter().map(|account| account.id).collect();
    let reply = client.lookup_accounts(&account_ids).await.map_err(|error| format!("node {node}: {error}"))?;
    state.applied_index = reply.applied_index;
    state.accounts = reply.value.into_iter().flatten().map(|account| (account.id, account)).collect();
    Ok(state)
}

/// Checks what every node serves at the end against the history.
pub fn check_final(
    log: &HistoryLog,
    sent: &BTreeMap<TransferId, Transfer>,
    states: &BTreeMap<u64, NodeState>,
    bank: &Bank,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let (present, failed) = acked_ids(log);
    {
        let mut lost = Found::new("lost", &mut violations);
        for (node, state) in states {
            for id in &present {
                match state.transfers.get(id) {
                    None => lost.add(format!("node {node} lacks acknowledged transfer {}", transfer_name(*id))),
                    Some(stored) => {
                        if let Some(field) = stored_field_differing(&sent[id], stored) {
                            let name = transfer_name(*id);
                            lost.add(format!("node {node} holds transfer {name} with another {field}: {stored:?}"));
                        }
                    }
                }
            }
            for id in failed.iter().filter(|id| state.transfers.contains_key(id)) {
                lost.add(format!("node {node} holds transfer {}, acknowledged as failed", transfer_name(*id)));
            }
        }
    }
    {
        let mut differ = Found::new("replicas", &mut violations);
        let ids: BTreeSet<TransferId> = states.values().flat_map(|state| state.transfers.keys().copied()).collect();
        for id in ids {
            let held: BTreeSet<String> =
                states.values().map(|state| format!("{:?}", state.transfers.get(&id))).collect();
            if held.len() > 1 {
                differ.add(format!("nodes hold transfer {} differently: {held:?}", transfer_name(id)));
            }
        }
    }
    for (node, state) in states {
        check_node_balances(*node, state, bank, &mut violations);
    }
    violations
}

/// Recomputes `state`'s balances from its transfers, and checks them,
/// conservation and limits.
fn check_node_balances(node: u64, state: &NodeState, bank: &Bank, violations: &mut Vec<Violation>) {
    let resolved: BTreeSet<TransferId> = state
        .transfers
        .values()
        .filter(|transfer| matches!(TransferRole::of(transfer), TransferRole::Post | TransferRole::Void))
        .map(|transfer| transfer.pending_id)
        .collect();
    let mut expected: BTreeMap<AccountId, Balances> = BTreeMap::new();
    for transfer in state.transfers.values() {
        // Still reserving: neither resolved nor timed out (the run waits
        // past every timeout before it reads).
        let reserving = !resolved.contains(&transfer.id) && transfer.timeout == 0;
        let (pending, posted) = contribution(transfer, reserving);
        let debit = expected.entry(transfer.debit_account_id).or_default();
        debit.debits_pending += pending;
        debit.debits_posted += posted;
        let credit = expected.entry(transfer.credit_account_id).or_default();
        credit.credits_pending += pending;
        credit.credits_posted += posted;
    }
    let mut balances = Found::new("balances", violations);
    let mut ledgers: BTreeMap<LedgerId, Balances> = BTreeMap::new();
    for bank_account in &bank.accounts {
        let Some(account) = state.accounts.get(&bank_account.id) else {
            balances.add(format!("node {node} lacks account {}", bank_account.id.0));
            continue;
        };
        let held = Balances::of(account);
        let sums = expected.get(&account.id).copied().unwrap_or_default();
        if held != sums {
            balances
                .add(format!("node {node}: account {} holds {held:?}, its transfers sum to {sums:?}", account.id.0));
        }
        ledgers.entry(account.ledger).or_default().add(&held);
    }
    drop(balances);
    let mut conservation = Found::new("conservation", violations);
    for (ledger, total) in ledgers {
        if !total.is_balanced() {
            conservation.add(format!("node {node}: ledger {} does not balance: {total:?}", ledger.0));
        }
    }
    drop(conservation);
    let mut limits = Found::new("limit", violations);
    for breach in state.accounts.values().filter_map(limit_breach) {
        limits.add(format!("node {node}: {breach}"));
    }
}

/// A posting acknowledged on one account: when, and how much on each side.
#[derive(Clone, Copy, Debug)]
struct Posting {
    acked: Duration,
    debits: u128,
    credits: u128,
}

/// Checks the reads made during the run (limits, index floor, posted
/// balances include every earlier acknowledgement, nothing goes backwards).
/// `stored` holds the final records (for the amounts posts resolved).
pub fn check_reads(log: &HistoryLog, stored: &BTreeMap<TransferId, Transfer>) -> Vec<Violation> {
    let mut violations = Vec::new();
    {
        let mut missing = Found::new("read", &mut violations);
        for read in &log.reads_missing {
            missing.add(format!("a linearizable read did not find {read}"));
        }
    }
    {
        let mut limits = Found::new("limit", &mut violations);
        for read in &log.reads {
            if let Some(breach) = limit_breach(&read.account) {
                limits.add(format!("node {} served at index {}: {breach}", read.node, read.applied_index));
            }
        }
    }
    check_read_index_floor(log, &mut violations);
    check_read_postings(log, stored, &mut violations);
    check_reads_monotone(log, &mut violations);
    violations
}

/// A read that began after an acknowledgement is served at or past its index.
fn check_read_index_floor(log: &HistoryLog, violations: &mut Vec<Violation>) {
    let mut acks: Vec<(Duration, u64)> = log
        .acked()
        .filter_map(|write| match write.outcome {
            WriteOutcome::Acked { index, .. } => Some((write.finished, index)),
            _ => None,
        })
        .collect();
    acks.sort();
    let mut floor = 0;
    let floors: Vec<(Duration, u64)> = acks
        .into_iter()
        .map(|(at, index)| {
            floor = floor.max(index);
            (at, floor)
        })
        .collect();
    let mut stale = Found::new("read", violations);
    for read in &log.reads {
        let before = floors.partition_point(|(at, _)| *at < read.began);
        if let Some(&(_, floor)) = before.checked_sub(1).and_then(|last| floors.get(last)) {
            if read.applied_index < floor {
                stale.add(format!(
                    "node {} served account {} at index {}, below index {floor} acknowledged before the read began",
                    read.node, read.account.id.0, read.applied_index
                ));
            }
        }
    }
}

/// A read's posted balances include every posting on the account
/// acknowledged before it began.
fn check_read_postings(log: &HistoryLog, stored: &BTreeMap<TransferId, Transfer>, violations: &mut Vec<Violation>) {
    // Each transfer counts once, at its first acknowledgement.
    let mut first_ack: BTreeMap<TransferId, Duration> = BTreeMap::new();
    for write in log.acked() {
        if let WriteOutcome::Acked { results, .. } = &write.outcome {
            for (transfer, _) in write.transfers.iter().zip(results).filter(|(_, result)| result.is_success()) {
                let at = first_ack.entry(transfer.id).or_insert(write.finished);
                *at = (*at).min(write.finished);
            }
        }
    }
    let mut postings: BTreeMap<AccountId, Vec<Posting>> = BTreeMap::new();
    for (id, acked) in first_ack {
        let Some(transfer) = stored.get(&id) else { continue };
        if !matches!(TransferRole::of(transfer), TransferRole::Single | TransferRole::Post) {
            continue;
        }
        let amount = transfer.amount;
        postings.entry(transfer.debit_account_id).or_default().push(Posting { acked, debits: amount, credits: 0 });
        postings.entry(transfer.credit_account_id).or_default().push(Posting { acked, debits: 0, credits: amount });
    }
    // Running sums by acknowledgement time.
    let sums: BTreeMap<AccountId, Vec<Posting>> = postings
        .into_iter()
        .map(|(account, mut list)| {
            list.sort_by_key(|posting| posting.acked);
            let (mut debits, mut credits) = (0, 0);
            let running = list
                .into_iter()
                .map(|posting| {
                    debits += posting.debits;
                    credits += posting.credits;
                    Posting { acked: posting.acked, debits, credits }
                })
                .collect();
            (account, running)
        })
        .collect();
    let mut missed = Found::new("read", violations);
    for read in &log.reads {
        let Some(running) = sums.get(&read.account.id) else { continue };
        let before = running.partition_point(|posting| posting.acked < read.began);
        let Some(floor) = before.checked_sub(1).and_then(|last| running.get(last)) else { continue };
        if read.account.debits_posted < floor.debits || read.account.credits_posted < floor.credits {
            missed.add(format!(
                "node {} served account {} at index {} with posted debits {} and credits {}, below the {} and {} \
                 acknowledged before the read began",
                read.node,
                read.account.id.0,
                read.applied_index,
                read.account.debits_posted,
                read.account.credits_posted,
                floor.debits,
                floor.credits
            ));
        }
    }
}

/// No read sees less than a read that ended before it began: neither a
/// lower applied index nor, on the same account, lower posted balances.
fn check_reads_monotone(log: &HistoryLog, violations: &mut Vec<Violation>) {
    let mut by_end: Vec<_> = log.reads.iter().collect();
    by_end.sort_by_key(|read| read.ended);
    let mut index_max = 0;
    let index_floors: Vec<(Duration, u64)> = by_end
        .iter()
        .map(|read| {
            index_max = index_max.max(read.applied_index);
            (read.ended, index_max)
        })
        .collect();
    let mut posted_floors: BTreeMap<AccountId, Vec<(Duration, u128, u128)>> = BTreeMap::new();
    for read in &by_end {
        let floors = posted_floors.entry(read.account.id).or_default();
        let (debits, credits) = floors.last().map_or((0, 0), |&(_, debits, credits)| (debits, credits));
        floors.push((read.ended, debits.max(read.account.debits_posted), credits.max(read.account.credits_posted)));
    }
    let mut backwards = Found::new("read", violations);
    for read in &log.reads {
        let before = index_floors.partition_point(|(ended, _)| *ended < read.began);
        if let Some(&(_, floor)) = before.checked_sub(1).and_then(|last| index_floors.get(last)) {
            if read.applied_index < floor {
                backwards.add(format!(
                    "node {} served a read at index {}, below index {floor} a read that ended before it began saw",
                    read.node, read.applied_index
                ));
            }
        }
        let floors = &posted_floors[&read.account.id];
        let before = floors.partition_point(|(ended, _, _)| *ended < read.began);
        if let Some(&(_, debits, credits)) = before.checked_sub(1).and_then(|last| floors.get(last)) {
            if read.account.debits_posted < debits || read.account.credits_posted < credits {
                backwards.add(format!(
                    "node {} served account {} with posted debits {} and credits {}, below the {debits} and \
                     {credits} a read that ended before it began saw",
                    read.node, read.account.id.0, read.account.debits_posted, read.account.credits_posted
                ));
            }
        }
    }
}

/// What one stopped node's store holds.
#[derive(Clone, Debug)]
pub struct StoreSummary {
    /// The node.
    pub node: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Its state digest, as `coffer verify` printed it.
    pub state_digest: String,
}

/// Checks every stopped node's store: `coffer verify`, the simulator's
/// replica and digest checks over the real store, and that it holds no
/// transfer nobody sent.
pub async fn check_stores(
    cluster: &Cluster,
    history: &mut History,
    sent: &BTreeMap<TransferId, Transfer>,
) -> (Vec<Violation>, Vec<StoreSummary>) {
    let mut violations = Vec::new();
    let mut summaries = Vec::new();
    for (&node, process) in &cluster.nodes {
        let verdict = verify(&process.data_dir).await;
        if !verdict.ok {
            let detail = format!("node {node}: coffer verify failed: {}", verdict.problems.join("; "));
            violations.push(Violation { step: 0, checker: "verify", detail });
        }
        let store_violations = match check_store(node, &process.data_dir.join("db"), history, sent) {
            Ok(found) => found,
            Err(error) => vec![Violation { step: 0, checker: "store", detail: format!("node {node}: {error}") }],
        };
        violations.extend(store_violations);
        summaries.push(StoreSummary {
            node,
            applied_index: verdict.applied_index.unwrap_or_default(),
            state_digest: verdict.state_digest.unwrap_or_default(),
        });
    }
    (violations, summaries)
}

/// Runs the simulator's checks over one stopped store.
fn check_store(
    node: u64,
    db: &std::path::Path,
    history: &mut History,
    sent: &BTreeMap<TransferId, Transfer>,
) -> Result<Vec<Violation>, String> {
    let opened = coffer_storage::verify::open_stopped(db).map_err(|error| error.to_string())?;
    let state = coffer_storage::LedgerState::open(Arc::new(opened), ACCOUNT_CACHE_ENTRIES)
        .map_err(|error| error.to_string())?;
    let applied = state.applied().index;
    let mut violations = history.check_replica(0, node, applied, &state);
    violations.extend(history.check_digest(0, node, applied, &state));
    let mut invented = Vec::new();
    state
        .for_each_transfer(&mut |transfer| {
            if !sent.contains_key(&transfer.id) {
                invented.push(transfer.id.0);
            }
        })
        .map_err(|error| error.to_string())?;
    if !invented.is_empty() {
        let detail = format!("node {node} holds {} transfers nobody sent: {:?}", invented.len(), &invented[..1]);
        violations.push(Violation { step: 0, checker: "store", detail });
    }
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use coffer_chaos::workload::BankAccount;
    use coffer_ledger::{AccountFlags, Ledger};

    use super::*;

    #[test]
    fn an_account_over_its_credit_limit_is_a_limit_violation() {
        let ledger = LedgerId(1);
        let account = Account {
            id: AccountId(7),
            ledger,
            flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            credits_pending: 5,
            ..Default::default()
        };
        // Its transfers explain its balances: only the limit is broken.
        let reserve = Transfer {
            id: TransferId(1),
            debit_account_id: AccountId(8),
            credit_account_id: account.id,
            amount: 5,
            ledger,
            flags: coffer_ledger::TransferFlags::PENDING,
            ..Default::default()
        };
        let other = Account { id: AccountId(8), ledger, debits_pending: 5, ..Default::default() };
        let state = NodeState {
            applied_index: 9,
            transfers: BTreeMap::from([(reserve.id, reserve)]),
            accounts: BTreeMap::from([(account.id, account), (other.id, other)]),
        };
        let bank = Bank {
            ledgers: vec![Ledger { id: ledger, ..Default::default() }],
            accounts: vec![
                BankAccount { id: account.id, ledger, limited: false },
                BankAccount { id: AccountId(8), ledger, limited: false },
            ],
        };
        let sent = BTreeMap::from([(reserve.id, reserve)]);
        let violations = check_final(&HistoryLog::default(), &sent, &BTreeMap::from([(1, state)]), &bank);
        let details: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            details,
            ["step 0: [limit] node 1: account 7: credits_must_not_exceed_debits, but credits 5 exceed debits_posted 0"]
        );
    }
}
