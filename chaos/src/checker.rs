//! The checkers: what the cluster acknowledged (the [`History`]) held
//! against what every replica holds.
//!
//! - **Acknowledged outcomes never change**: a transfer id is `created` at
//!   most once; after `created` or `exists` every later answer for it is
//!   `exists`; an id that failed never exists.
//! - **No acknowledged transfer lost**: every replica whose applied index is
//!   at or past an acknowledgement's index holds every transfer acknowledged
//!   there (and the post or void it made), and none acknowledged as failed.
//!   Checked every step on the entries each replica applied since the step
//!   before ([`History::check_applied`]), and in full with the state checks.
//! - **No transfer applied twice**: each account's four balances equal the
//!   sums over the distinct transfers the replica holds (single-phase and
//!   posts move posted amounts; pending transfers still pending reserve).
//! - **Conservation**: per ledger, Σ debits = Σ credits, pending and posted.
//! - **Limits**: no `debits_must_not_exceed_credits` account has more
//!   debits (pending and posted) than posted credits.
//! - **Digests**: replicas at the same applied index have equal
//!   `state_digest`s (at any time: the first digest seen at an index is
//!   kept and later ones are compared with it).
//! - **Reads**: a read's index is at or past every acknowledgement made
//!   before the read began, its node holds the transfers acknowledged on the
//!   account it read, and the state it was served from is never older than
//!   what a read that finished before it began saw.
//!
//! The state checks (balances, conservation, limits, full durability) run
//! on every replica every 50 steps, after every restart and snapshot
//! install, and at the end; digests every 150 steps, at restarts and
//! installs, and at the end. The simulator itself checks that no two nodes
//! lead one term and that the cluster recovers (liveness).

use std::collections::BTreeMap;

use coffer_ledger::{
    state_digest, stored_state_digest, AccountId, CreateTransferResult, LedgerId, MemoryStore, PendingState,
    StateDigest, Store, StoreError, Transfer, TransferFlags, TransferId,
};

pub use coffer_ledger::invariants::{breaches_limit, contribution, limit_breach, Balances};

use crate::workload::{transfer_name, TransferRole};

/// Digests remembered per applied index before the oldest are dropped.
const DIGESTS_KEPT: usize = 4_096;
/// Transfers acknowledged on one account that a read must find.
const READ_MUST_SEE_MAX: usize = 4;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The step it was found at.
    pub step: u64,
    /// The checker that found it.
    pub checker: &'static str,
    /// What is wrong, naming nodes, ids and indexes.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: [{}] {}", self.step, self.checker, self.detail)
    }
}

/// What the cluster answered about one transfer id.
#[derive(Clone, Copy, Debug)]
struct Acked {
    transfer: Transfer,
    /// `created` or `exists`.
    present: bool,
    /// The lowest log index of its acknowledgements: from there on every
    /// replica holds it (or, if it failed, never does).
    index: u64,
    /// The first answer.
    result: CreateTransferResult,
    /// The index of the one acknowledgement that said `created`, if seen.
    created_at: Option<u64>,
}

/// Everything the cluster acknowledged, and what reads must see.
#[derive(Debug, Default)]
pub struct History {
    acked: BTreeMap<TransferId, Acked>,
    /// Acknowledged transfer ids by the lowest index they were acknowledged at.
    by_index: BTreeMap<u64, Vec<TransferId>>,
    /// Per account, the transfers acknowledged present on it, newest last.
    by_account: BTreeMap<AccountId, Vec<TransferId>>,
    /// The highest index of any acknowledgement.
    acked_index_max: u64,
    /// The newest state any finished read was served from.
    served_index_max: u64,
    /// The first digest seen at each applied index, and whose it was.
    digests: BTreeMap<u64, (u64, StateDigest)>,
    /// Transfer results acknowledged.
    pub events_acked: u64,
    /// Reads checked.
    pub reads_checked: u64,
    /// Replica checks run.
    pub replica_checks: u64,
}

/// A read as a node answered it.
#[derive(Clone, Copy, Debug)]
pub struct ServedRead<'s> {
    /// The node that served it.
    pub node: u64,
    /// The account it read.
    pub account: AccountId,
    /// The read index the leader confirmed.
    pub read_index: u64,
    /// The node's applied index when it served the read.
    pub served_index: u64,
    /// The node's state.
    pub store: &'s MemoryStore,
}

/// What a read must see, fixed when it begins.
#[derive(Clone, Debug, Default)]
pub struct ReadFloor {
    /// Every acknowledgement made before the read began is at or below this.
    pub acked_index: u64,
    /// A read finished before this one began was served at this index.
    pub served_index: u64,
    /// Transfers acknowledged on the account before the read began.
    pub must_see: Vec<TransferId>,
}

impl History {
    /// Records the answer to one request (`transfers` and their `results`,
    /// applied at log index `index`). Returns the violations it shows.
    pub fn acknowledge(
        &mut self,
        step: u64,
        index: u64,
        transfers: &[Transfer],
        results: &[CreateTransferResult],
    ) -> Vec<Violation> {
        let mut violations = Vec::new();
        let mut violation = |detail: String| violations.push(Violation { step, checker: "outcome", detail });
        if transfers.len() != results.len() {
            violation(format!("{} transfers got {} results at index {index}", transfers.len(), results.len()));
            return violations;
        }
        self.acked_index_max = self.acked_index_max.max(index);
        self.events_acked += results.len() as u64;
        for (transfer, &result) in transfers.iter().zip(results) {
            let present = result.is_success();
            let created_at = (result == CreateTransferResult::Created).then_some(index);
            let Some(acked) = self.acked.get_mut(&transfer.id) else {
                self.acked.insert(transfer.id, Acked { transfer: *transfer, present, index, result, created_at });
                self.by_index.entry(index).or_default().push(transfer.id);
                if present {
                    for account in [transfer.debit_account_id, transfer.credit_account_id] {
                        self.by_account.entry(account).or_default().push(transfer.id);
                    }
                }
                continue;
            };
            let id = transfer_name(transfer.id);
            // Answers may arrive out of index order (a deposed leader applies
            // and answers late), so each is compared with what is known.
            if acked.present != present {
                violation(format!(
                    "transfer {id} was {} at index {}, then {result} at index {index}",
                    acked.result, acked.index
                ));
                continue;
            }
            if !present {
                continue;
            }
            if let (Some(created), Some(again)) = (acked.created_at, created_at) {
                violation(format!("transfer {id} created twice: at index {created} and at index {again}"));
            }
            let created = acked.created_at.or(created_at);
            if let Some(created) = created.filter(|&created| created > acked.index.min(index)) {
                violation(format!(
                    "transfer {id} created at index {created} but acknowledged as existing at index {}",
                    acked.index.min(index)
                ));
            }
            acked.created_at = created;
            if index < acked.index {
                acked.index = index;
                self.by_index.entry(index).or_default().push(transfer.id);
            }
        }
        violations
    }

    /// What a read of `account` beginning now must see.
    pub fn read_floor(&self, account: AccountId) -> ReadFloor {
        let must_see = self
            .by_account
            .get(&account)
            .map(|ids| ids.iter().rev().take(READ_MUST_SEE_MAX).copied().collect())
            .unwrap_or_default();
        ReadFloor { acked_index: self.acked_index_max, served_index: self.served_index_max, must_see }
    }

    /// Checks a read as a node served it.
    pub fn check_read(&mut self, step: u64, floor: &ReadFloor, read: &ServedRead<'_>) -> Vec<Violation> {
        let ServedRead { node, account, read_index, served_index, store } = *read;
        self.reads_checked += 1;
        let mut violations = Vec::new();
        let mut violation = |detail: String| violations.push(Violation { step, checker: "read", detail });
        if read_index < floor.acked_index {
            violation(format!(
                "node {node} answered a read with index {read_index}, below index {} acknowledged before it began",
                floor.acked_index
            ));
        }
        if read_index < floor.served_index {
            violation(format!(
                "node {node} answered a read with index {read_index}, below index {} a read that finished before it \
                 began was served at (the read went backwards)",
                floor.served_index
            ));
        }
        if served_index < read_index {
            violation(format!(
                "node {node} served a read at applied index {served_index}, below its read index {read_index}"
            ));
        }
        match store.account(account) {
            Ok(Some(_)) => {}
            Ok(None) => violation(format!("node {node} read account {} that does not exist", account.0)),
            Err(error) => violation(format!("node {node} failed a read: {error}")),
        }
        for id in &floor.must_see {
            if !matches!(store.transfer(*id), Ok(Some(_))) {
                violation(format!(
                    "node {node} read account {} at index {served_index} without transfer {} acknowledged before \
                     the read began",
                    account.0,
                    transfer_name(*id)
                ));
            }
        }
        self.served_index_max = self.served_index_max.max(served_index);
        violations
    }

    /// Checks one replica's state (`store` at `applied`) against the
    /// history and the ledger's invariants.
    pub fn check_replica<S: Store + ?Sized>(
        &mut self,
        step: u64,
        node: u64,
        applied: u64,
        store: &S,
    ) -> Vec<Violation> {
        self.replica_checks += 1;
        let mut violations = Vec::new();
        if let Err(error) = self.check_acknowledged(step, node, applied, store, &mut violations) {
            violations.push(Violation { step, checker: "store", detail: format!("node {node}: {error}") });
        }
        if let Err(error) = check_balances(step, node, store, &mut violations) {
            violations.push(Violation { step, checker: "store", detail: format!("node {node}: {error}") });
        }
        violations
    }

    fn check_acknowledged<S: Store + ?Sized>(
        &self,
        step: u64,
        node: u64,
        applied: u64,
        store: &S,
        violations: &mut Vec<Violation>,
    ) -> Result<(), StoreError> {
        for (id, acked) in self.acked.iter().filter(|(_, acked)| acked.index <= applied) {
            check_one(step, node, applied, store, *id, acked, violations)?;
        }
        Ok(())
    }

    /// Checks, on `node` whose applied index moved from `from` to `to`, the
    /// acknowledgements of the entries in between: run every step, it sees
    /// a lost transfer as soon as a replica applies past it.
    pub fn check_applied<S: Store + ?Sized>(
        &self,
        step: u64,
        node: u64,
        from: u64,
        to: u64,
        store: &S,
    ) -> Vec<Violation> {
        let mut violations = Vec::new();
        for ids in self.by_index.range(from + 1..=to).map(|(_, ids)| ids) {
            for id in ids {
                let Some(acked) = self.acked.get(id) else { continue };
                if let Err(error) = check_one(step, node, to, store, *id, acked, &mut violations) {
                    violations.push(Violation { step, checker: "store", detail: format!("node {node}: {error}") });
                }
            }
        }
        violations
    }

    /// Compares `node`'s digest at `applied` with the first one seen at that
    /// index, and the digest the node keeps as it applies with the one
    /// recomputed from every record.
    pub fn check_digest<S: Store + ?Sized>(&mut self, step: u64, node: u64, applied: u64, store: &S) -> Vec<Violation> {
        let (digest, stored) = match (state_digest(store), stored_state_digest(store)) {
            (Ok(digest), Ok(stored)) => (digest, stored),
            (Err(error), _) | (_, Err(error)) => {
                return vec![Violation { step, checker: "store", detail: format!("node {node}: {error}") }];
            }
        };
        if stored != digest {
            let detail = format!("node {node} at applied index {applied} keeps digest {stored}, recomputed {digest}");
            return vec![Violation { step, checker: "digest", detail }];
        }
        match self.digests.get(&applied) {
            Some(&(first, seen)) if seen != digest => vec![Violation {
                step,
                checker: "digest",
                detail: format!("node {node} at applied index {applied} has digest {digest}, node {first} had {seen}"),
            }],
            Some(_) => Vec::new(),
            None => {
                if self.digests.len() == DIGESTS_KEPT {
                    self.digests.pop_first();
                }
                self.digests.insert(applied, (node, digest));
                Vec::new()
            }
        }
    }

    /// Distinct transfer ids acknowledged.
    pub fn transfers_acked(&self) -> usize {
        self.acked.len()
    }
}

/// Checks one acknowledged transfer on `node`'s state at `applied`.
fn check_one<S: Store + ?Sized>(
    step: u64,
    node: u64,
    applied: u64,
    store: &S,
    id: TransferId,
    acked: &Acked,
    violations: &mut Vec<Violation>,
) -> Result<(), StoreError> {
    let mut lost = |detail: String| violations.push(Violation { step, checker: "durability", detail });
    let name = transfer_name(id);
    match (acked.present, store.transfer(id)?) {
        (true, None) => lost(format!(
            "node {node} at applied index {applied} lacks transfer {name} acknowledged {} at index {}",
            acked.result, acked.index
        )),
        (false, Some(_)) => lost(format!(
            "node {node} at applied index {applied} holds transfer {name} acknowledged as {} at index {}",
            acked.result, acked.index
        )),
        (true, Some(stored)) => {
            if let Some(field) = stored_field_differing(&acked.transfer, &stored) {
                lost(format!(
                    "node {node} at applied index {applied} holds transfer {name} with another {field} than the one \
                     acknowledged at index {}: sent {:?}, stored {stored:?}",
                    acked.index, acked.transfer
                ));
            }
            let expected = match TransferRole::of(&acked.transfer) {
                TransferRole::Post => Some(PendingState::Posted),
                TransferRole::Void => Some(PendingState::Voided),
                TransferRole::Single | TransferRole::Pending => None,
            };
            if let Some(expected) = expected {
                let status = store.pending_status(acked.transfer.pending_id)?;
                if status.map(|status| status.state) != Some(expected) {
                    lost(format!(
                        "node {node}: pending transfer {} is {status:?} though {name} resolving it was acknowledged \
                         at index {}",
                        transfer_name(acked.transfer.pending_id),
                        acked.index
                    ));
                }
            }
        }
        (false, None) => {}
    }
    Ok(())
}

/// The first field in which `stored`, the transfer a replica holds under
/// `sent`'s id, is not what the client sent (`None`: it is). A post or void
/// inherits the fields it left zero from its pending transfer, a post of
/// `AMOUNT_MAX` (and a void) stores the amount it resolved, and a balancing
/// transfer may store less than it asked for; the timestamp is the
/// cluster's.
pub fn stored_field_differing(sent: &Transfer, stored: &Transfer) -> Option<&'static str> {
    let inherits = sent.flags.is_post_or_void();
    let same_u128 = |asked: u128, held: u128| asked == held || (inherits && asked == 0);
    let amount_matches = match TransferRole::of(sent) {
        TransferRole::Post => sent.amount == Transfer::AMOUNT_MAX || sent.amount == stored.amount,
        TransferRole::Void => matches!(sent.amount, 0 | Transfer::AMOUNT_MAX) || sent.amount == stored.amount,
        TransferRole::Single | TransferRole::Pending
            if sent.flags.intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT) =>
        {
            stored.amount <= sent.amount
        }
        TransferRole::Single | TransferRole::Pending => sent.amount == stored.amount,
    };
    let checks = [
        ("id", sent.id == stored.id),
        ("flags", sent.flags == stored.flags),
        ("pending_id", sent.pending_id == stored.pending_id),
        ("timeout", sent.timeout == stored.timeout),
        ("debit_account_id", same_u128(sent.debit_account_id.0, stored.debit_account_id.0)),
        ("credit_account_id", same_u128(sent.credit_account_id.0, stored.credit_account_id.0)),
        ("amount", amount_matches),
        ("ledger", same_u128(u128::from(sent.ledger.0), u128::from(stored.ledger.0))),
        ("code", same_u128(u128::from(sent.code), u128::from(stored.code))),
        ("kind", sent.kind == stored.kind),
        ("user_data_128", same_u128(sent.user_data_128, stored.user_data_128)),
        ("user_data_64", same_u128(u128::from(sent.user_data_64), u128::from(stored.user_data_64))),
        ("user_data_32", same_u128(u128::from(sent.user_data_32), u128::from(stored.user_data_32))),
    ];
    checks.into_iter().find(|(_, same)| !same).map(|(field, _)| field)
}

/// Recomputes every account's balances from the transfers `store` holds and
/// checks them, conservation per ledger and the limits.
fn check_balances<S: Store + ?Sized>(
    step: u64,
    node: u64,
    store: &S,
    violations: &mut Vec<Violation>,
) -> Result<(), StoreError> {
    let mut pending_states = BTreeMap::new();
    store.for_each_pending(&mut |id, status| {
        pending_states.insert(id, status.state);
    })?;
    let mut sums: BTreeMap<AccountId, Balances> = BTreeMap::new();
    let mut overflow = false;
    store.for_each_transfer(&mut |transfer| {
        let reserving = pending_states.get(&transfer.id) == Some(&PendingState::Pending);
        let (pending, posted) = contribution(transfer, reserving);
        let mut add = |account: AccountId, debit: bool| {
            let sum = sums.entry(account).or_default();
            let (pending_side, posted_side) = if debit {
                (&mut sum.debits_pending, &mut sum.debits_posted)
            } else {
                (&mut sum.credits_pending, &mut sum.credits_posted)
            };
            match (pending_side.checked_add(pending), posted_side.checked_add(posted)) {
                (Some(p), Some(q)) => (*pending_side, *posted_side) = (p, q),
                _ => overflow = true,
            }
        };
        add(transfer.debit_account_id, true);
        add(transfer.credit_account_id, false);
    })?;
    let mut violation = |checker, detail| violations.push(Violation { step, checker, detail });
    if overflow {
        violation("balances", format!("node {node}: the sum of its transfers overflows u128"));
    }
    let mut ledgers: BTreeMap<LedgerId, Balances> = BTreeMap::new();
    store.for_each_account(&mut |account| {
        let held = Balances::of(account);
        let expected = sums.get(&account.id).copied().unwrap_or_default();
        if held != expected {
            violation(
                "balances",
                format!("node {node}: account {} holds {held:?}, its transfers sum to {expected:?}", account.id.0),
            );
        }
        if let Some(breach) = limit_breach(account) {
            violation("limit", format!("node {node}: {breach}"));
        }
        ledgers.entry(account.ledger).or_default().add(&held);
    })?;
    for (ledger, total) in ledgers {
        if !total.is_balanced() {
            violation("conservation", format!("node {node}: ledger {} does not balance: {total:?}", ledger.0));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use coffer_ledger::{Account, AccountFlags, Ledger, StoreMut, WriteSet};

    use super::*;

    #[test]
    fn a_replica_holding_an_account_over_its_credit_limit_is_a_limit_violation() {
        let ledger = LedgerId(1);
        let limited = Account {
            id: AccountId(7),
            ledger,
            flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            credits_posted: 5,
            ..Default::default()
        };
        let other = Account { id: AccountId(8), ledger, debits_posted: 5, ..Default::default() };
        let payment = Transfer {
            id: TransferId(1),
            debit_account_id: other.id,
            credit_account_id: limited.id,
            amount: 5,
            ledger,
            timestamp: 3,
            ..Default::default()
        };
        let mut store = MemoryStore::new();
        let write_set = WriteSet {
            last_timestamp: 3,
            ledgers: vec![Ledger { id: ledger, timestamp: 1, ..Default::default() }],
            accounts: vec![limited, other],
            transfers: vec![payment],
            ..Default::default()
        };
        store.commit(&write_set).unwrap();
        let violations = History::default().check_replica(1, 2, 0, &store);
        let details: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            details,
            ["step 1: [limit] node 2: account 7: credits_must_not_exceed_debits, but credits 5 exceed debits_posted 0"]
        );
    }
}
