//! The ledger's invariants, in one place for every checker: `coffer verify`
//! (on a stopped node's RocksDB state), the deterministic simulator, the
//! real-process nemesis and the load generator's validation.
//!
//! The pieces: [`Balances`] (an account's four balances, or their sums),
//! [`contribution`] (what one transfer adds to each side), [`limit_breach`]
//! (both limit flags, pending amounts counted), and [`check_invariants`],
//! which recomputes everything over any [`Store`]:
//!
//! - per ledger, Σ debits = Σ credits, posted and pending (the trial
//!   balance);
//! - every account's ledger exists; no account breaks its limit flag; its
//!   sums fit in `u128`;
//! - every account's posted balances are the sums of the posted transfers
//!   (and posts of pending ones) on its side, and its pending balances the
//!   sums of the pending transfers still open;
//! - every transfer's accounts exist, in the transfer's ledger; a pending
//!   transfer has a pending status and every pending status its pending
//!   transfer; the expiry index holds exactly the open pending transfers
//!   that expire.
//!
//! Problems are reported as lines naming the ledger, account or transfer;
//! at most [`PROBLEMS_MAX`] of them are kept.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    Account, AccountFlags, AccountId, BalanceTotals, CodeTotals, Ledger, LedgerId, PendingState, Store, StoreError,
    Transfer, TransferFlags, TransferId,
};

/// What a transfer is meant to do, by its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferRole {
    /// Moves money now.
    Single,
    /// Reserves money (with a timeout, or none).
    Pending,
    /// Posts a pending transfer.
    Post,
    /// Voids a pending transfer.
    Void,
}

impl TransferRole {
    /// The role the flags of `transfer` give it.
    pub fn of(transfer: &Transfer) -> Self {
        if transfer.flags.contains(TransferFlags::POST_PENDING) {
            Self::Post
        } else if transfer.flags.contains(TransferFlags::VOID_PENDING) {
            Self::Void
        } else if transfer.flags.contains(TransferFlags::PENDING) {
            Self::Pending
        } else {
            Self::Single
        }
    }
}

/// An account's four balances, as held or as recomputed from its
/// transfers; or their sums over a ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Balances {
    /// Debits reserved by pending transfers.
    pub debits_pending: u128,
    /// Debits posted.
    pub debits_posted: u128,
    /// Credits reserved by pending transfers.
    pub credits_pending: u128,
    /// Credits posted.
    pub credits_posted: u128,
}

impl Balances {
    /// The balances `account` holds.
    pub fn of(account: &Account) -> Self {
        Self {
            debits_pending: account.debits_pending,
            debits_posted: account.debits_posted,
            credits_pending: account.credits_pending,
            credits_posted: account.credits_posted,
        }
    }

    /// Adds `other` to a ledger's sums (wrapping: sums that overflow show as
    /// unbalanced instead of stopping the check).
    pub fn add(&mut self, other: &Self) {
        self.debits_pending = self.debits_pending.wrapping_add(other.debits_pending);
        self.debits_posted = self.debits_posted.wrapping_add(other.debits_posted);
        self.credits_pending = self.credits_pending.wrapping_add(other.credits_pending);
        self.credits_posted = self.credits_posted.wrapping_add(other.credits_posted);
    }

    /// Whether sums over a ledger balance: debits equal credits, pending
    /// and posted.
    pub fn is_balanced(&self) -> bool {
        self.debits_pending == self.credits_pending && self.debits_posted == self.credits_posted
    }
}

/// What `transfer` adds to each of its two accounts: (pending, posted).
/// `reserving` says whether a pending transfer still reserves its amount
/// (neither posted, voided nor expired).
pub fn contribution(transfer: &Transfer, reserving: bool) -> (u128, u128) {
    match TransferRole::of(transfer) {
        TransferRole::Single | TransferRole::Post => (0, transfer.amount),
        TransferRole::Pending if reserving => (transfer.amount, 0),
        TransferRole::Pending | TransferRole::Void => (0, 0),
    }
}

/// How `account` breaks a limit flag it carries, if it does: its debits
/// (pending and posted) above its posted credits under
/// `debits_must_not_exceed_credits`, or its credits above its posted debits
/// under `credits_must_not_exceed_debits`. A sum that overflows `u128`
/// breaks the limit too.
pub fn limit_breach(account: &Account) -> Option<String> {
    let limits = [
        (
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            "debits_must_not_exceed_credits, but debits",
            account.debits_pending.checked_add(account.debits_posted),
            "credits_posted",
            account.credits_posted,
        ),
        (
            AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            "credits_must_not_exceed_debits, but credits",
            account.credits_pending.checked_add(account.credits_posted),
            "debits_posted",
            account.debits_posted,
        ),
    ];
    limits.into_iter().find_map(|(flag, rule, sum, limit_name, limit)| match sum {
        _ if !account.flags.contains(flag) => None,
        Some(sum) if sum <= limit => None,
        sum => {
            let sum = sum.map_or_else(|| "beyond u128".to_owned(), |sum| sum.to_string());
            Some(format!("account {}: {rule} {sum} exceed {limit_name} {limit}", account.id.0))
        }
    })
}

/// How a stored `account` breaks what every account the state machine
/// writes holds, if it does: usable id, ledger and code, no reserved or
/// contradictory flag, a creation timestamp, debits and credits that fit
/// in `u128`, and its limit flags ([`limit_breach`]). Checked before an
/// account is written and again when it is read back (a pair: a fault on
/// either side is found where it happens, not downstream).
pub fn account_fault(account: &Account) -> Option<String> {
    let both = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    let fault = if account.id.0 == 0 || account.id.0 == u128::MAX {
        "an unusable id"
    } else if account.ledger.0 == 0 || account.code == 0 {
        "ledger or code 0"
    } else if account.flags.has_reserved_bits() || account.flags.contains(both) {
        "reserved or contradictory flags"
    } else if account.timestamp == 0 {
        "no timestamp"
    } else if account.debits_pending.checked_add(account.debits_posted).is_none()
        || account.credits_pending.checked_add(account.credits_posted).is_none()
    {
        "debits or credits beyond u128"
    } else {
        return limit_breach(account);
    };
    Some(format!("account {}: {fault}", account.id.0))
}

/// How a stored `transfer` breaks what every transfer the state machine
/// writes holds, if it does: usable and distinct account ids, ledger and
/// code, no reserved flag, a timestamp, and a pending id exactly when it
/// posts or voids one. Checked before writing and after reading, like
/// [`account_fault`].
pub fn transfer_fault(transfer: &Transfer) -> Option<String> {
    let usable = |id: u128| id != 0 && id != u128::MAX;
    let finishes = transfer.flags.is_post_or_void();
    let fault = if !usable(transfer.id.0) {
        "an unusable id"
    } else if !usable(transfer.debit_account_id.0)
        || !usable(transfer.credit_account_id.0)
        || transfer.debit_account_id == transfer.credit_account_id
    {
        "unusable or equal account ids"
    } else if transfer.ledger.0 == 0 || transfer.code == 0 {
        "ledger or code 0"
    } else if transfer.flags.has_reserved_bits() {
        "reserved flags"
    } else if transfer.timestamp == 0 {
        "no timestamp"
    } else if finishes != (transfer.pending_id.0 != 0) {
        "a pending id without a post or void, or the reverse"
    } else {
        return None;
    };
    Some(format!("transfer {}: {fault}", transfer.id.0))
}

/// Whether `account` breaks a limit flag it carries ([`limit_breach`]).
pub fn breaches_limit(account: &Account) -> bool {
    limit_breach(account).is_some()
}

/// Problems reported at most; the rest are counted.
pub const PROBLEMS_MAX: usize = 64;

/// One ledger's totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSummary {
    /// The ledger.
    pub ledger: Ledger,
    /// Its trial balance's totals.
    pub totals: BalanceTotals,
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvariantReport {
    /// Every ledger, by id.
    pub ledgers: Vec<LedgerSummary>,
    /// Accounts.
    pub accounts: u64,
    /// Transfers.
    pub transfers: u64,
    /// Pending statuses.
    pub pending: u64,
    /// Of which still open (`pending`).
    pub pending_open: u64,
    /// The problems found (at most [`PROBLEMS_MAX`]).
    pub problems: Vec<String>,
    /// Problems found beyond those.
    pub problems_more: u64,
}

impl InvariantReport {
    fn problem(&mut self, problem: String) {
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(problem);
        } else {
            self.problems_more += 1;
        }
    }
}

/// Balances recomputed from transfers: (debits, credits) per account.
type Sums = BTreeMap<AccountId, (u128, u128)>;

/// Adds `amount` to the debit side of `debit` and the credit side of
/// `credit`; `false` on overflow.
fn add(sums: &mut Sums, debit: AccountId, credit: AccountId, amount: u128) -> bool {
    let debit_side = sums.entry(debit).or_default();
    let Some(debits) = debit_side.0.checked_add(amount) else { return false };
    debit_side.0 = debits;
    let credit_side = sums.entry(credit).or_default();
    let Some(credits) = credit_side.1.checked_add(amount) else { return false };
    credit_side.1 = credits;
    true
}

/// Checks every invariant of `store`. An error means the store itself
/// failed (a corrupt record, a backend error), not that an invariant broke.
pub fn check_invariants<S: Store + ?Sized>(store: &S) -> Result<InvariantReport, StoreError> {
    let mut report = InvariantReport::default();
    let mut ledgers = Vec::new();
    store.for_each_ledger(&mut |ledger| ledgers.push(ledger.clone()))?;
    // Summed from the accounts themselves, not from the running totals the
    // ledger keeps (`coffer verify` checks those against these sums).
    let mut sums = BTreeMap::<LedgerId, CodeTotals>::new();
    store.for_each_account(&mut |account| {
        let totals = sums.entry(account.ledger).or_insert_with(|| CodeTotals::empty(account.ledger, 0));
        totals.accounts += 1;
        totals.add(&account.balances());
    })?;
    for ledger in ledgers {
        let summed = sums.get(&ledger.id).copied().unwrap_or_default();
        let totals = match narrow(&summed) {
            Some(totals) => totals,
            None => {
                report
                    .problem(format!("ledger {} ({}): a sum of balances overflows u128", ledger.id.0, ledger.currency));
                BalanceTotals::default()
            }
        };
        check_totals(&mut report, &ledger, &totals);
        report.ledgers.push(LedgerSummary { ledger, totals });
    }
    let (posted, pending) = transfer_sums(store, &mut report)?;
    check_accounts(store, &mut report, &posted, &pending)?;
    check_expiry_index(store, &mut report)?;
    Ok(report)
}

/// Wide sums as the trial balance reports them, if each fits in `u128`.
fn narrow(totals: &CodeTotals) -> Option<BalanceTotals> {
    Some(BalanceTotals {
        accounts: totals.accounts,
        debits_pending: totals.debits_pending.value()?,
        debits_posted: totals.debits_posted.value()?,
        credits_pending: totals.credits_pending.value()?,
        credits_posted: totals.credits_posted.value()?,
    })
}

fn check_totals(report: &mut InvariantReport, ledger: &Ledger, totals: &BalanceTotals) {
    let name = format!("ledger {} ({})", ledger.id.0, ledger.currency);
    if totals.debits_posted != totals.credits_posted {
        let (debits, credits) = (totals.debits_posted, totals.credits_posted);
        report.problem(format!("{name}: Σ debits_posted {debits} ≠ Σ credits_posted {credits}"));
    }
    if totals.debits_pending != totals.credits_pending {
        let (debits, credits) = (totals.debits_pending, totals.credits_pending);
        report.problem(format!("{name}: Σ debits_pending {debits} ≠ Σ credits_pending {credits}"));
    }
}

/// Walks every transfer (checking its accounts and its pending status) and
/// every pending status (checking its transfer); returns the posted and
/// the open pending sums per account.
fn transfer_sums<S: Store + ?Sized>(store: &S, report: &mut InvariantReport) -> Result<(Sums, Sums), StoreError> {
    let mut posted = Sums::new();
    let mut failure = None;
    store.for_each_transfer(&mut |transfer| {
        report.transfers += 1;
        if failure.is_none() {
            failure = check_transfer(store, transfer, &mut posted, report).err();
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    let mut pending = Sums::new();
    store.for_each_pending(&mut |id, status| {
        report.pending += 1;
        if failure.is_some() {
            return;
        }
        match store.transfer(id) {
            Err(error) => failure = Some(error),
            Ok(None) => report.problem(format!("pending status of transfer {}: no such transfer", id.0)),
            Ok(Some(transfer)) if !transfer.flags.contains(TransferFlags::PENDING) => {
                report.problem(format!("pending status of transfer {}: the transfer is not pending", id.0));
            }
            Ok(Some(transfer)) if status.state == PendingState::Pending => {
                report.pending_open += 1;
                if !add(&mut pending, transfer.debit_account_id, transfer.credit_account_id, transfer.amount) {
                    report.problem(format!("open pending transfers up to {}: sums overflow u128", id.0));
                }
            }
            Ok(Some(_)) => {}
        }
    })?;
    match failure {
        Some(error) => Err(error),
        None => Ok((posted, pending)),
    }
}

/// Checks one transfer and adds what it posted.
fn check_transfer<S: Store + ?Sized>(
    store: &S,
    transfer: &Transfer,
    posted: &mut Sums,
    report: &mut InvariantReport,
) -> Result<(), StoreError> {
    let name = format!("transfer {}", transfer.id.0);
    for (side, id) in [("debit", transfer.debit_account_id), ("credit", transfer.credit_account_id)] {
        match store.account(id)? {
            None => report.problem(format!("{name}: {side} account {} does not exist", id.0)),
            Some(account) if account.ledger != transfer.ledger => report.problem(format!(
                "{name}: {side} account {} is in ledger {}, the transfer in ledger {}",
                id.0, account.ledger.0, transfer.ledger.0
            )),
            Some(_) => {}
        }
    }
    let flags = transfer.flags;
    if flags.contains(TransferFlags::PENDING) {
        if store.pending_status(transfer.id)?.is_none() {
            report.problem(format!("{name}: pending, but it has no pending status"));
        }
    } else if !flags.contains(TransferFlags::VOID_PENDING)
        && !add(posted, transfer.debit_account_id, transfer.credit_account_id, transfer.amount)
    {
        report.problem(format!("{name}: posted sums overflow u128"));
    }
    Ok(())
}

/// Checks every account: its ledger, its limit flag, and its balances
/// against the sums recomputed from the transfers.
fn check_accounts<S: Store + ?Sized>(
    store: &S,
    report: &mut InvariantReport,
    posted: &Sums,
    pending: &Sums,
) -> Result<(), StoreError> {
    let ledgers: BTreeSet<LedgerId> = report.ledgers.iter().map(|summary| summary.ledger.id).collect();
    store.for_each_account(&mut |account| {
        report.accounts += 1;
        check_account(account, &ledgers, posted, pending, report);
    })?;
    Ok(())
}

fn check_account(
    account: &Account,
    ledgers: &BTreeSet<LedgerId>,
    posted: &Sums,
    pending: &Sums,
    report: &mut InvariantReport,
) {
    let name = format!("account {}", account.id.0);
    if !ledgers.contains(&account.ledger) {
        report.problem(format!("{name}: ledger {} does not exist", account.ledger.0));
    }
    let debits = account.debits_pending.checked_add(account.debits_posted);
    let credits = account.credits_pending.checked_add(account.credits_posted);
    if debits.is_none() || credits.is_none() {
        report.problem(format!("{name}: pending + posted overflows u128"));
        return;
    }
    if let Some(breach) = limit_breach(account) {
        report.problem(breach);
    }
    let (debits_posted, credits_posted) = posted.get(&account.id).copied().unwrap_or_default();
    if (account.debits_posted, account.credits_posted) != (debits_posted, credits_posted) {
        report.problem(format!(
            "{name}: posted balances {}/{} (debits/credits), but its posted transfers sum to {debits_posted}/{credits_posted}",
            account.debits_posted, account.credits_posted
        ));
    }
    let (debits_pending, credits_pending) = pending.get(&account.id).copied().unwrap_or_default();
    if (account.debits_pending, account.credits_pending) != (debits_pending, credits_pending) {
        report.problem(format!(
            "{name}: pending balances {}/{} (debits/credits), but its open pending transfers sum to {debits_pending}/{credits_pending}",
            account.debits_pending, account.credits_pending
        ));
    }
}

/// The expiry index holds exactly the open pending transfers that expire,
/// at their expiry time.
fn check_expiry_index<S: Store + ?Sized>(store: &S, report: &mut InvariantReport) -> Result<(), StoreError> {
    let mut expiring = BTreeSet::new();
    store.for_each_pending(&mut |id, status| {
        if status.state == PendingState::Pending && status.expires_at != 0 {
            expiring.insert((status.expires_at, id));
        }
    })?;
    let indexed: BTreeSet<(u64, TransferId)> = store.expiring(u64::MAX, expiring.len() + 1)?.into_iter().collect();
    if let Some((at, id)) = indexed.difference(&expiring).next() {
        report
            .problem(format!("expiry index: transfer {} at {at} is not an open pending transfer expiring then", id.0));
    }
    if let Some((at, id)) = expiring.difference(&indexed).next() {
        report.problem(format!("expiry index: open pending transfer {} expiring at {at} is missing", id.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountKind, MemoryStore, StateMachine, StoreMut, TransferKind, WriteSet, NS_PER_S};

    const KRW: LedgerId = LedgerId(1);
    const CASH: AccountId = AccountId(1);
    const REVENUE: AccountId = AccountId(2);
    const EXPENSE: AccountId = AccountId(3);

    #[test]
    fn a_record_no_batch_could_write_is_named_as_a_fault() {
        let good = Account {
            id: CASH,
            ledger: KRW,
            code: 101,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            debits_posted: 5,
            credits_posted: 5,
            timestamp: 7,
            ..Default::default()
        };
        assert_eq!(account_fault(&good), None);
        let faults = [
            Account { id: AccountId(0), ..good },
            Account { code: 0, ..good },
            Account { timestamp: 0, ..good },
            Account { flags: AccountFlags::from_bits(1 << 15), ..good },
            Account { debits_pending: 1, ..good },
            Account { credits_pending: u128::MAX, ..good },
        ];
        for account in faults {
            assert!(account_fault(&account).is_some(), "{account:?}");
        }
        let transfer = Transfer {
            id: TransferId(9),
            debit_account_id: CASH,
            credit_account_id: REVENUE,
            amount: 0,
            ledger: KRW,
            code: 1,
            timestamp: 8,
            ..Default::default()
        };
        assert_eq!(transfer_fault(&transfer), None, "a balancing transfer clamped to zero is fine");
        let faults = [
            Transfer { credit_account_id: CASH, ..transfer },
            Transfer { ledger: LedgerId(0), ..transfer },
            Transfer { timestamp: 0, ..transfer },
            Transfer { pending_id: TransferId(3), ..transfer },
            Transfer { flags: TransferFlags::POST_PENDING, ..transfer },
        ];
        for transfer in faults {
            assert!(transfer_fault(&transfer).is_some(), "{transfer:?}");
        }
    }

    fn transfer(id: u128, debit: AccountId, credit: AccountId, amount: u128, kind: TransferKind) -> Transfer {
        Transfer {
            id: TransferId(id),
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            ledger: KRW,
            code: 1,
            kind,
            ..Default::default()
        }
    }

    fn pending(id: u128, amount: u128, timeout: u32) -> Transfer {
        Transfer {
            flags: TransferFlags::PENDING,
            timeout,
            ..transfer(id, EXPENSE, CASH, amount, TransferKind::Expenditure)
        }
    }

    fn settle(id: u128, pending_id: u128, amount: u128, flag: TransferFlags) -> Transfer {
        Transfer {
            id: TransferId(id),
            pending_id: TransferId(pending_id),
            amount,
            kind: TransferKind::Expenditure,
            flags: flag,
            ..Default::default()
        }
    }

    /// Receipts, a payment, pending payments posted in part, voided,
    /// expired and left open.
    fn treasury() -> StateMachine<MemoryStore> {
        use TransferKind::{Expenditure, Receipt};
        let mut ledger = StateMachine::new(MemoryStore::new());
        let krw = Ledger::new(KRW, "KRW", 0, "Won");
        ledger.create_ledgers(NS_PER_S, &[krw]).unwrap();
        let account = |id, kind, code, flags| Account { id, ledger: KRW, code, kind, flags, ..Default::default() };
        let accounts = [
            account(CASH, AccountKind::Cash, 101, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS | AccountFlags::HISTORY),
            account(REVENUE, AccountKind::Other, 401, AccountFlags::NONE),
            account(EXPENSE, AccountKind::Other, 501, AccountFlags::NONE),
        ];
        ledger.create_accounts(2 * NS_PER_S, &accounts).unwrap();
        let first = [
            transfer(1, CASH, REVENUE, 1_000_000, Receipt),
            transfer(2, EXPENSE, CASH, 200_000, Expenditure),
            pending(3, 50_000, 0),
            pending(4, 30_000, 0),
            pending(5, 20_000, 1),
            pending(6, 10_000, 0),
        ];
        ledger.create_transfers(3 * NS_PER_S, &first).unwrap();
        let second = [settle(7, 3, 25_000, TransferFlags::POST_PENDING), settle(8, 4, 0, TransferFlags::VOID_PENDING)];
        ledger.create_transfers(4 * NS_PER_S, &second).unwrap();
        ledger.expire_pending(10 * NS_PER_S).unwrap();
        ledger
    }

    #[test]
    fn a_treasury_with_posts_voids_and_expiries_keeps_every_invariant() {
        let ledger = treasury();
        let report = check_invariants(ledger.store()).unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!((report.accounts, report.transfers, report.pending, report.pending_open), (3, 8, 4, 1));
        let totals = report.ledgers[0].totals;
        assert!(totals.is_balanced());
        assert_eq!((totals.debits_posted, totals.debits_pending), (1_225_000, 10_000));
    }

    #[test]
    fn a_balance_no_transfer_explains_is_named_with_the_imbalance_it_makes() {
        let mut store = treasury().into_store();
        let mut cash = store.account(CASH).unwrap().unwrap();
        cash.credits_posted += 7;
        let last_timestamp = store.last_timestamp().unwrap();
        store.commit(&WriteSet { last_timestamp, accounts: vec![cash], ..Default::default() }).unwrap();
        let problems = check_invariants(&store).unwrap().problems;
        assert_eq!(
            problems,
            [
                "ledger 1 (KRW): Σ debits_posted 1225000 ≠ Σ credits_posted 1225007",
                "account 1: posted balances 1000000/225007 (debits/credits), but its posted transfers sum to 1000000/225000",
            ]
        );
    }

    #[test]
    fn a_limit_breached_and_a_pending_transfer_without_status_are_named() {
        let mut store = treasury().into_store();
        let mut cash = store.account(CASH).unwrap().unwrap();
        let mut revenue = store.account(REVENUE).unwrap().unwrap();
        // A payment of more than the cash holds, as if no check had run.
        cash.credits_posted += 2_000_000;
        revenue.debits_posted += 2_000_000;
        let mut orphan = pending(99, 5, 0);
        orphan.timestamp = store.last_timestamp().unwrap() + 1;
        let write_set = WriteSet {
            last_timestamp: orphan.timestamp,
            accounts: vec![cash, revenue],
            transfers: vec![orphan],
            ..Default::default()
        };
        store.commit(&write_set).unwrap();
        let problems = check_invariants(&store).unwrap().problems;
        assert!(problems.contains(&"transfer 99: pending, but it has no pending status".to_owned()), "{problems:?}");
        let breach = "account 1: credits_must_not_exceed_debits, but credits 2235000 exceed debits_posted 1000000";
        assert!(problems.contains(&breach.to_owned()), "{problems:?}");
    }

    /// An account breaking its credit limit, and one its debit limit, with
    /// pending amounts counted.
    fn overdrawn_accounts() -> [Account; 2] {
        let credit_limited = Account {
            id: AccountId(7),
            flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            debits_posted: 100,
            credits_posted: 90,
            credits_pending: 11,
            ..Default::default()
        };
        let debit_limited = Account {
            id: AccountId(8),
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            credits_posted: 100,
            debits_pending: 101,
            ..Default::default()
        };
        [credit_limited, debit_limited]
    }

    #[test]
    fn both_limit_flags_are_checked_with_pending_amounts_counted() {
        let [credit_limited, debit_limited] = overdrawn_accounts();
        assert_eq!(
            limit_breach(&credit_limited).as_deref(),
            Some("account 7: credits_must_not_exceed_debits, but credits 101 exceed debits_posted 100")
        );
        assert_eq!(
            limit_breach(&debit_limited).as_deref(),
            Some("account 8: debits_must_not_exceed_credits, but debits 101 exceed credits_posted 100")
        );
        let within = Account { credits_pending: 10, ..credit_limited };
        assert_eq!(limit_breach(&within), None);
        let unflagged = Account { flags: AccountFlags::NONE, ..credit_limited };
        assert!(!breaches_limit(&unflagged));
        let overflowing = Account { debits_pending: u128::MAX, debits_posted: 1, ..debit_limited };
        assert!(limit_breach(&overflowing).unwrap().contains("beyond u128"));
    }

    #[test]
    fn a_transfer_contributes_by_its_role() {
        let single = transfer(1, EXPENSE, CASH, 5, TransferKind::Expenditure);
        assert_eq!(contribution(&single, false), (0, 5));
        assert_eq!(contribution(&pending(2, 7, 0), true), (7, 0));
        assert_eq!(contribution(&pending(2, 7, 0), false), (0, 0));
        assert_eq!(contribution(&settle(3, 2, 4, TransferFlags::POST_PENDING), false), (0, 4));
        assert_eq!(contribution(&settle(4, 2, 0, TransferFlags::VOID_PENDING), false), (0, 0));
        let mut sums = Balances::default();
        sums.add(&Balances { debits_posted: 3, credits_posted: 3, ..Default::default() });
        assert!(sums.is_balanced());
    }

    #[test]
    fn problems_beyond_the_bound_are_counted() {
        let mut report = InvariantReport::default();
        for i in 0..PROBLEMS_MAX + 3 {
            report.problem(format!("problem {i}"));
        }
        assert_eq!((report.problems.len(), report.problems_more), (PROBLEMS_MAX, 3));
    }
}
