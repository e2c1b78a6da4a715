//! Model test: random batches go both to `StateMachine<MemoryStore>` and to a
//! small reference model of the ledger written here from the documented rules
//! (the `apply.rs` module docs, the precedence order of `results.rs`, the
//! field docs of `model.rs` and `flags.rs`).
//!
//! After every batch the per-event results, every record of the state
//! (ledgers, accounts, transfers, pending statuses, recorded failures, the
//! change log) and the double-entry invariants must agree. At the end of a case the history
//! indexes and balance histories are compared, and the batches are replayed
//! into a fresh store to check that the state digest is deterministic.
//!
//! The model is deliberately plain and shaped differently from the library: a
//! linked chain runs on a clone of the whole model, which is put back when the
//! chain fails (the library keeps an undo log instead).

// A test harness: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use coffer_ledger::{
    balance_as_of, get_account_balances, get_account_transfers, prepare, prepare_create_transfers, state_digest,
    stored_state_digest, trial_balance, trial_balance_as_of, Account, AccountBalance, AccountFilter, AccountFlags,
    AccountId, AccountKind, BalanceTotals, Balances, BudgetPolicy, Change, ChangeFilter, ChangeKind,
    CreateAccountResult, CreateLedgerResult, CreateTransferResult, ExpireResult, Ledger, LedgerId, MemoryStore,
    Operation, OperationResults, PendingState, PendingStatus, Period, PeriodChange, QueryError, Run, SetPeriodResult,
    Sides, StateDigest, StateMachine, Store, StoreMut, Transfer, TransferBalances, TransferFlags, TransferId,
    TransferKind, BATCH_EVENTS_MAX, LEDGER_CURRENCY_LEN_MAX, LEDGER_NAME_LEN_MAX, LEDGER_SCALE_MAX, NS_PER_S,
    RUN_BATCHES_MAX,
};
use proptest::bool::weighted;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Cases run when `PROPTEST_CASES` is not set.
const CASES_DEFAULT: u32 = 1_000;
/// Cases `generator_reaches_every_result_code` draws, from a fixed seed.
const COVERAGE_CASES: u32 = 500;
/// Shrinking steps after a failure: enough to get a short counterexample
/// without shrinking for minutes.
const SHRINK_ITERS_MAX: u32 = 4_096;
/// The setup batch creates accounts `1..=ACCOUNT_ID_MAX`; later account
/// events draw from `1..=ACCOUNT_ID_MAX + ACCOUNT_IDS_LATE`: few, so they collide.
const ACCOUNT_ID_MAX: u128 = 12;
/// Account ids only later `create_accounts` batches use.
const ACCOUNT_IDS_LATE: u128 = 4;
/// A valid account id no event ever creates.
const ACCOUNT_ID_MISSING: u128 = u128::MAX - 1;
/// Transfer ids drawn at random (besides fresh ones) come from `1..=TRANSFER_ID_SMALL_MAX`.
const TRANSFER_ID_SMALL_MAX: u128 = 48;
/// Batches per case, the two setup batches included.
const BATCHES_MAX: usize = 12;
/// Events per `create_transfers` batch.
const TRANSFER_EVENTS_MAX: usize = 30;
/// Events per `create_accounts` batch.
const ACCOUNT_EVENTS_MAX: usize = 8;
/// Events per `create_ledgers` batch.
const LEDGER_EVENTS_MAX: usize = 3;
/// A start timestamp close enough to `u64::MAX` that long timeouts overflow.
const START_TIMESTAMP_LATE: u64 = 15_000_000_000_000_000_000;
/// The rows a history query may return (every row the tests make fits).
const HISTORY_LIMIT: u32 = BATCH_EVENTS_MAX as u32;

// ---------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------

/// The first rule of `rules` that is broken. Rules are listed in the order of
/// the result enum's variants, which is the documented precedence.
fn first_broken<R: Copy>(rules: &[(bool, R)]) -> Option<R> {
    rules.iter().find(|(broken, _)| *broken).map(|(_, result)| *result)
}

/// The transient failures, as the docs list them ("not found, closed,
/// overflow, limit"; see `CreateTransferResult::is_transient`).
fn is_transient(result: CreateTransferResult) -> bool {
    use CreateTransferResult as R;
    matches!(
        result,
        R::DebitAccountNotFound
            | R::CreditAccountNotFound
            | R::LedgerNotFound
            | R::PendingTransferNotFound
            | R::DebitAccountAlreadyClosed
            | R::CreditAccountAlreadyClosed
            | R::OverflowsDebitsPending
            | R::OverflowsCreditsPending
            | R::OverflowsDebitsPosted
            | R::OverflowsCreditsPosted
            | R::OverflowsDebits
            | R::OverflowsCredits
            | R::ExceedsCredits
            | R::ExceedsDebits
    )
}

/// The account kinds a transfer kind requires on its (debit, credit) side,
/// from the `TransferKind` docs.
fn required_kinds(kind: TransferKind) -> (Option<AccountKind>, Option<AccountKind>) {
    match kind {
        TransferKind::Expenditure => (Some(AccountKind::Other), Some(AccountKind::Cash)),
        TransferKind::Receipt => (Some(AccountKind::Cash), Some(AccountKind::Other)),
        TransferKind::CashTransfer => (Some(AccountKind::Cash), Some(AccountKind::Cash)),
        TransferKind::Journal => (None, None),
    }
}

/// The defined account flag bits: linked, two limits, history, closed.
const ACCOUNT_FLAG_BITS: u16 = 0b1_1111;
/// The defined transfer flag bits: linked, pending, post, void, two
/// balancing, two closing, adjustment.
const TRANSFER_FLAG_BITS: u16 = 0b1_1111_1111;

/// The result codes the chain runner needs by name.
struct ChainCodes<R> {
    created: R,
    exists: R,
    linked_event_failed: R,
    linked_event_chain_open: R,
}

const ACCOUNT_CHAIN: ChainCodes<CreateAccountResult> = ChainCodes {
    created: CreateAccountResult::Created,
    exists: CreateAccountResult::Exists,
    linked_event_failed: CreateAccountResult::LinkedEventFailed,
    linked_event_chain_open: CreateAccountResult::LinkedEventChainOpen,
};

const TRANSFER_CHAIN: ChainCodes<CreateTransferResult> = ChainCodes {
    created: CreateTransferResult::Created,
    exists: CreateTransferResult::Exists,
    linked_event_failed: CreateTransferResult::LinkedEventFailed,
    linked_event_chain_open: CreateTransferResult::LinkedEventChainOpen,
};

/// The whole ledger state as plain ordered maps.
#[derive(Clone, Debug, Default)]
struct Model {
    last_timestamp: u64,
    ledgers: BTreeMap<LedgerId, Ledger>,
    accounts: BTreeMap<AccountId, Account>,
    transfers: BTreeMap<TransferId, Transfer>,
    pending: BTreeMap<TransferId, PendingStatus>,
    failures: BTreeMap<TransferId, CreateTransferResult>,
    /// Balances after every change, for accounts with the `history` flag.
    history: BTreeMap<AccountId, Vec<AccountBalance>>,
    /// One entry per event that changed the ledger, in order.
    changes: Vec<Change>,
}

impl Model {
    /// Applies one batch; event `i` is stamped `timestamp + i`.
    fn apply(&mut self, timestamp: u64, operation: &Operation) -> OperationResults {
        assert!(timestamp > self.last_timestamp, "the harness keeps batch timestamps increasing");
        let (results, events) = match operation {
            Operation::CreateLedgers(ledgers) => {
                let results = ledgers.iter().zip(timestamp..).map(|(l, at)| self.create_ledger(at, l)).collect();
                (OperationResults::Ledgers(results), ledgers.len())
            }
            Operation::CreateAccounts(accounts) => {
                let results = self.run_chains(
                    timestamp,
                    accounts,
                    &ACCOUNT_CHAIN,
                    |a| a.flags.contains(AccountFlags::LINKED),
                    Self::create_account,
                    |_, _, _| {},
                    |model, a| model.accounts.contains_key(&a.id),
                );
                (OperationResults::Accounts(results), accounts.len())
            }
            Operation::CreateTransfers(transfers) => {
                let legless = self.legless(transfers);
                let results = self.run_chains(
                    timestamp,
                    transfers,
                    &TRANSFER_CHAIN,
                    |t| t.flags.contains(TransferFlags::LINKED),
                    |model, at, t| {
                        // The budget check comes after every other rule: a
                        // transfer it refuses leaves no trace.
                        let index = usize::try_from(at - timestamp).unwrap();
                        if !legless.contains(&index) {
                            return model.create_transfer(at, t);
                        }
                        let before = model.clone();
                        match model.create_transfer(at, t) {
                            CreateTransferResult::Created => {
                                *model = before;
                                CreateTransferResult::BudgetLegMissing
                            }
                            other => other,
                        }
                    },
                    |model, t, result| {
                        if is_transient(result) {
                            model.failures.entry(t.id).or_insert(result);
                        }
                    },
                    |model, t| model.transfers.contains_key(&t.id),
                );
                (OperationResults::Transfers(results), transfers.len())
            }
            Operation::ExpirePending => {
                let expired = self.expire(timestamp);
                let result = ExpireResult { expired: u32::try_from(expired).unwrap(), more: false };
                (OperationResults::Expired(result), expired)
            }
            Operation::SetPeriods(changes) => {
                let results = changes.iter().map(|change| self.set_period(change)).collect();
                (OperationResults::Periods(results), changes.len())
            }
            // Year-end closes have their own property test (tests/close.rs).
            Operation::Close(_) | Operation::Reconcile(_) => {
                unreachable!("the model's batches never close or reconcile")
            }
        };
        self.last_timestamp = timestamp + events.max(1) as u64 - 1;
        results
    }

    /// Runs `events` chain by chain. A chain is a run of `linked` events and
    /// the first event after them; it runs on the live model, and if one of
    /// its events fails the model before the chain is put back.
    // Each hook of a chain is its own argument here, unlike the library's
    // trait, so the model's structure stays independent of the library's.
    #[allow(clippy::too_many_arguments)]
    fn run_chains<E, R: Copy + PartialEq>(
        &mut self,
        timestamp: u64,
        events: &[E],
        codes: &ChainCodes<R>,
        is_linked: impl Fn(&E) -> bool,
        apply: impl Fn(&mut Self, u64, &E) -> R,
        failed: impl Fn(&mut Self, &E, R),
        exists: impl Fn(&Self, &E) -> bool,
    ) -> Vec<R> {
        let mut results = Vec::with_capacity(events.len());
        let mut start = 0;
        while start < events.len() {
            let end = (start..events.len()).find(|&i| !is_linked(&events[i])).unwrap_or(events.len() - 1);
            let chain = &events[start..=end];
            // A lone unlinked event that fails changes nothing, so only a real
            // chain needs the copy.
            let before = (chain.len() > 1 || is_linked(&chain[0])).then(|| self.clone());
            let mut failure = None;
            for (offset, event) in chain.iter().enumerate() {
                let index = start + offset;
                let result = if is_linked(event) && index + 1 == events.len() {
                    codes.linked_event_chain_open
                } else {
                    apply(self, timestamp + index as u64, event)
                };
                results.push(result);
                if result != codes.created && result != codes.exists {
                    failure = Some((offset, result));
                    break;
                }
            }
            if let Some((offset, result)) = failure {
                if let Some(before) = before {
                    *self = before;
                }
                // An `exists` stays only if its record outlived the rollback.
                for (earlier, event) in results[start..start + offset].iter_mut().zip(chain) {
                    if *earlier == codes.created || (*earlier == codes.exists && !exists(self, event)) {
                        *earlier = codes.linked_event_failed;
                    }
                }
                failed(self, &chain[offset], result);
                results.resize(end + 1, codes.linked_event_failed);
            }
            start = end + 1;
        }
        results
    }

    /// Moves a ledger's period forward (never back; closing only without
    /// pending reservations).
    fn set_period(&mut self, change: &PeriodChange) -> SetPeriodResult {
        use SetPeriodResult as R;
        if change.ledger.0 == 0 {
            return R::LedgerMustNotBeZero;
        }
        let Some(ledger) = self.ledgers.get(&change.ledger) else {
            return R::LedgerNotFound;
        };
        let order = |period: Period| Period::ALL.iter().position(|p| *p == period).unwrap();
        let reserving = self.accounts.values().any(|a| a.ledger == change.ledger && a.debits_pending != 0);
        let rules = [
            (ledger.period == change.period, R::Unchanged),
            (order(change.period) < order(ledger.period), R::PeriodCannotReopen),
            (change.period == Period::Closed && reserving, R::PendingTransfersOpen),
        ];
        if let Some(result) = first_broken(&rules) {
            return result;
        }
        self.ledgers.get_mut(&change.ledger).unwrap().period = change.period;
        R::Changed
    }

    /// The positions of the transfers of a batch that a budget policy
    /// controls and whose chain holds no leg for them. A chain runs to the
    /// first unlinked event (or the batch's end); each controlled new
    /// transfer, in order, takes the first unused new transfer of the same
    /// chain in its policy's budget ledger with the same amount.
    fn legless(&self, transfers: &[Transfer]) -> BTreeSet<usize> {
        let is_new = |t: &Transfer| {
            !t.flags.contains(TransferFlags::POST_PENDING) && !t.flags.contains(TransferFlags::VOID_PENDING)
        };
        let mut legless = BTreeSet::new();
        let mut chain: Vec<usize> = Vec::new();
        for (index, t) in transfers.iter().enumerate() {
            chain.push(index);
            if t.flags.contains(TransferFlags::LINKED) && index + 1 < transfers.len() {
                continue;
            }
            let mut taken = BTreeSet::new();
            for &payment in &chain {
                let p = &transfers[payment];
                let Some(policy) = self.ledgers.get(&p.ledger).map(|l| l.budget) else { continue };
                let controlled = policy.ledger.0 != 0
                    && (p.kind == TransferKind::Expenditure
                        || (policy.code_min != 0 && (policy.code_min..=policy.code_max).contains(&p.code)));
                if p.ledger.0 == 0 || !is_new(p) || !controlled {
                    continue;
                }
                let leg = chain.iter().copied().find(|&other| {
                    let l = &transfers[other];
                    other != payment
                        && !taken.contains(&other)
                        && l.ledger == policy.ledger
                        && l.amount == p.amount
                        && is_new(l)
                });
                match leg {
                    Some(other) => {
                        taken.insert(other);
                    }
                    None => {
                        legless.insert(payment);
                    }
                }
            }
            chain.clear();
        }
        legless
    }

    fn create_ledger(&mut self, timestamp: u64, l: &Ledger) -> CreateLedgerResult {
        use CreateLedgerResult as R;
        let shape = [
            (l.timestamp != 0, R::TimestampMustBeZero),
            (l.id.0 == 0, R::IdMustNotBeZero),
            (l.id.0 == u32::MAX, R::IdMustNotBeIntMax),
        ];
        if let Some(result) = first_broken(&shape) {
            return result;
        }
        if let Some(e) = self.ledgers.get(&l.id) {
            let differences = [
                (l.currency != e.currency, R::ExistsWithDifferentCurrency),
                (l.scale != e.scale, R::ExistsWithDifferentScale),
                (l.name != e.name, R::ExistsWithDifferentName),
                (l.budget != e.budget || l.warn_percent != e.warn_percent, R::ExistsWithDifferentBudget),
            ];
            return first_broken(&differences).unwrap_or(R::Exists);
        }
        let currency_valid = (1..=LEDGER_CURRENCY_LEN_MAX).contains(&l.currency.len())
            && l.currency.chars().all(|c| matches!(c, 'A'..='Z' | '0'..='9' | '_'));
        let fields = [
            (!currency_valid, R::CurrencyMustBeValid),
            (l.scale > LEDGER_SCALE_MAX, R::ScaleMustNotExceedMax),
            (l.name.is_empty(), R::NameMustNotBeEmpty),
            (l.name.len() > LEDGER_NAME_LEN_MAX, R::NameTooLong),
            (l.period != Period::Open, R::PeriodMustBeOpen),
            (l.budget.ledger.0 != 0 && l.budget.ledger == l.id, R::BudgetLedgerMustBeDifferent),
            (
                !matches!((l.budget.code_min, l.budget.code_max), (0, 0))
                    && (l.budget.code_min == 0 || l.budget.code_min > l.budget.code_max || l.budget.ledger.0 == 0),
                R::BudgetCodesMustBeValid,
            ),
            (l.budget.ledger.0 != 0 && !self.ledgers.contains_key(&l.budget.ledger), R::BudgetLedgerNotFound),
            (l.warn_percent > 100, R::WarnPercentMustNotExceedMax),
        ];
        if let Some(result) = first_broken(&fields) {
            return result;
        }
        self.ledgers.insert(l.id, Ledger { timestamp, ..l.clone() });
        self.changes.push(Change { timestamp, kind: ChangeKind::LedgerCreated(l.id), balances: None });
        R::Created
    }

    fn create_account(&mut self, timestamp: u64, a: &Account) -> CreateAccountResult {
        use CreateAccountResult as R;
        let shape = [
            (a.timestamp != 0, R::TimestampMustBeZero),
            (a.flags.bits() & !ACCOUNT_FLAG_BITS != 0, R::ReservedFlag),
            (a.id.0 == 0, R::IdMustNotBeZero),
            (a.id.0 == u128::MAX, R::IdMustNotBeIntMax),
        ];
        if let Some(result) = first_broken(&shape) {
            return result;
        }
        if let Some(e) = self.accounts.get(&a.id) {
            let closed = AccountFlags::CLOSED.bits();
            let differences = [
                (a.flags.bits() & !closed != e.flags.bits() & !closed, R::ExistsWithDifferentFlags),
                (a.user_data_128 != e.user_data_128, R::ExistsWithDifferentUserData128),
                (a.user_data_64 != e.user_data_64, R::ExistsWithDifferentUserData64),
                (a.user_data_32 != e.user_data_32, R::ExistsWithDifferentUserData32),
                (a.ledger != e.ledger, R::ExistsWithDifferentLedger),
                (a.code != e.code, R::ExistsWithDifferentCode),
                (a.kind != e.kind, R::ExistsWithDifferentKind),
            ];
            return first_broken(&differences).unwrap_or(R::Exists);
        }
        let both_limits = a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && a.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS);
        let fields = [
            (both_limits, R::FlagsAreMutuallyExclusive),
            (a.debits_pending != 0, R::DebitsPendingMustBeZero),
            (a.debits_posted != 0, R::DebitsPostedMustBeZero),
            (a.credits_pending != 0, R::CreditsPendingMustBeZero),
            (a.credits_posted != 0, R::CreditsPostedMustBeZero),
            (a.ledger.0 == 0, R::LedgerMustNotBeZero),
            (a.code == 0, R::CodeMustNotBeZero),
            (!self.ledgers.contains_key(&a.ledger), R::LedgerNotFound),
        ];
        if let Some(result) = first_broken(&fields) {
            return result;
        }
        self.accounts.insert(a.id, Account { timestamp, ..*a });
        let closed = a.flags.contains(AccountFlags::CLOSED);
        self.changes.push(Change { timestamp, kind: ChangeKind::AccountCreated { id: a.id, closed }, balances: None });
        R::Created
    }

    fn create_transfer(&mut self, timestamp: u64, t: &Transfer) -> CreateTransferResult {
        use CreateTransferResult as R;
        use TransferFlags as F;
        let shape = [
            (t.timestamp != 0, R::TimestampMustBeZero),
            (t.flags.bits() & !TRANSFER_FLAG_BITS != 0, R::ReservedFlag),
            (t.id.0 == 0, R::IdMustNotBeZero),
            (t.id.0 == u128::MAX, R::IdMustNotBeIntMax),
        ];
        if let Some(result) = first_broken(&shape) {
            return result;
        }
        if let Some(e) = self.transfers.get(&t.id) {
            // A post names its pending transfer: `AMOUNT_MAX` stands for its amount.
            let pending_amount = self.transfers.get(&e.pending_id).map(|p| p.amount);
            return retry_result(t, e, pending_amount);
        }
        if self.failures.contains_key(&t.id) {
            return R::IdAlreadyFailed;
        }
        let post = t.flags.contains(F::POST_PENDING);
        let void = t.flags.contains(F::VOID_PENDING);
        let not_with_post_or_void =
            [F::PENDING, F::BALANCING_DEBIT, F::BALANCING_CREDIT, F::CLOSING_DEBIT, F::CLOSING_CREDIT]
                .iter()
                .any(|flag| t.flags.contains(*flag));
        if (post && void) || ((post || void) && not_with_post_or_void) {
            return R::FlagsAreMutuallyExclusive;
        }
        if post || void {
            self.post_or_void(timestamp, t, post)
        } else {
            self.create_new(timestamp, t)
        }
    }

    /// The period of `ledger` (open if there is none).
    fn period_of(&self, ledger: LedgerId) -> Period {
        self.ledgers.get(&ledger).map_or(Period::Open, |l| l.period)
    }

    /// Whether `ledger` is in adjustment and `flags` lack `adjustment`.
    fn in_adjustment_without_flag(&self, ledger: LedgerId, flags: TransferFlags) -> bool {
        self.period_of(ledger) == Period::Adjustment && !flags.contains(TransferFlags::ADJUSTMENT)
    }

    /// A transfer that is neither a post nor a void.
    fn create_new(&mut self, timestamp: u64, t: &Transfer) -> CreateTransferResult {
        use CreateTransferResult as R;
        use TransferFlags as F;
        let pending = t.flags.contains(F::PENDING);
        let closing = t.flags.contains(F::CLOSING_DEBIT) || t.flags.contains(F::CLOSING_CREDIT);
        let request = [
            (t.debit_account_id.0 == 0, R::DebitAccountIdMustNotBeZero),
            (t.debit_account_id.0 == u128::MAX, R::DebitAccountIdMustNotBeIntMax),
            (t.credit_account_id.0 == 0, R::CreditAccountIdMustNotBeZero),
            (t.credit_account_id.0 == u128::MAX, R::CreditAccountIdMustNotBeIntMax),
            (t.debit_account_id == t.credit_account_id, R::AccountsMustBeDifferent),
            (t.pending_id.0 != 0, R::PendingIdMustBeZero),
            (!pending && t.timeout != 0, R::TimeoutReservedForPendingTransfer),
            (!pending && closing, R::ClosingTransferMustBePending),
            (t.amount == 0, R::AmountMustNotBeZero),
            (t.ledger.0 == 0, R::LedgerMustNotBeZero),
            (t.code == 0, R::CodeMustNotBeZero),
        ];
        if let Some(result) = first_broken(&request) {
            return result;
        }
        let Some(mut dr) = self.accounts.get(&t.debit_account_id).copied() else {
            return R::DebitAccountNotFound;
        };
        let Some(mut cr) = self.accounts.get(&t.credit_account_id).copied() else {
            return R::CreditAccountNotFound;
        };
        let (debit_kind, credit_kind) = required_kinds(t.kind);
        let accounts = [
            (dr.ledger != cr.ledger, R::AccountsMustHaveTheSameLedger),
            (t.ledger != dr.ledger && !self.ledgers.contains_key(&t.ledger), R::LedgerNotFound),
            (t.ledger != dr.ledger, R::TransferMustHaveTheSameLedgerAsAccounts),
            (debit_kind.is_some_and(|kind| kind != dr.kind), R::DebitAccountHasWrongKind),
            (credit_kind.is_some_and(|kind| kind != cr.kind), R::CreditAccountHasWrongKind),
            (self.period_of(t.ledger) == Period::Closed, R::LedgerPeriodClosed),
            (self.in_adjustment_without_flag(t.ledger, t.flags), R::LedgerPeriodInAdjustment),
            (dr.flags.contains(AccountFlags::CLOSED), R::DebitAccountAlreadyClosed),
            (cr.flags.contains(AccountFlags::CLOSED), R::CreditAccountAlreadyClosed),
        ];
        if let Some(result) = first_broken(&accounts) {
            return result;
        }

        // Balancing: move as much of `amount` as keeps the account's debits
        // (pending + posted) within its posted credits, or the reverse.
        let mut amount = t.amount;
        if t.flags.contains(F::BALANCING_DEBIT) {
            let room = dr.credits_posted.saturating_sub(dr.debits_pending.saturating_add(dr.debits_posted));
            amount = amount.min(room);
        }
        if t.flags.contains(F::BALANCING_CREDIT) {
            let room = cr.debits_posted.saturating_sub(cr.credits_pending.saturating_add(cr.credits_posted));
            amount = amount.min(room);
        }
        let debits_after = dr.debits_pending.checked_add(dr.debits_posted).and_then(|d| d.checked_add(amount));
        let credits_after = cr.credits_pending.checked_add(cr.credits_posted).and_then(|c| c.checked_add(amount));
        let expires_at = match (pending, t.timeout) {
            (true, timeout) if timeout != 0 => timestamp.checked_add(u64::from(timeout) * NS_PER_S),
            _ => Some(0),
        };
        let balances = [
            (pending && dr.debits_pending.checked_add(amount).is_none(), R::OverflowsDebitsPending),
            (pending && cr.credits_pending.checked_add(amount).is_none(), R::OverflowsCreditsPending),
            (!pending && dr.debits_posted.checked_add(amount).is_none(), R::OverflowsDebitsPosted),
            (!pending && cr.credits_posted.checked_add(amount).is_none(), R::OverflowsCreditsPosted),
            (debits_after.is_none(), R::OverflowsDebits),
            (credits_after.is_none(), R::OverflowsCredits),
            (expires_at.is_none(), R::OverflowsTimeout),
            (
                dr.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                    && debits_after.is_some_and(|debits| debits > dr.credits_posted),
                R::ExceedsCredits,
            ),
            (
                cr.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                    && credits_after.is_some_and(|credits| credits > cr.debits_posted),
                R::ExceedsDebits,
            ),
        ];
        if let Some(result) = first_broken(&balances) {
            return result;
        }

        if pending {
            dr.debits_pending += amount;
            cr.credits_pending += amount;
            let expires_at = expires_at.unwrap();
            self.pending.insert(t.id, PendingStatus { state: PendingState::Pending, expires_at });
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        }
        if t.flags.contains(F::CLOSING_DEBIT) {
            dr.flags = dr.flags.with(AccountFlags::CLOSED);
        }
        if t.flags.contains(F::CLOSING_CREDIT) {
            cr.flags = cr.flags.with(AccountFlags::CLOSED);
        }
        self.transfers.insert(t.id, Transfer { amount, timestamp, ..*t });
        let balances = Some(TransferBalances { debit: dr.balances(), credit: cr.balances() });
        self.changes.push(Change { timestamp, kind: ChangeKind::TransferCreated(t.id), balances });
        self.put_account(dr, timestamp);
        self.put_account(cr, timestamp);
        R::Created
    }

    /// A `post_pending` (`post`) or `void_pending` (`!post`) event.
    fn post_or_void(&mut self, timestamp: u64, t: &Transfer, post: bool) -> CreateTransferResult {
        use CreateTransferResult as R;
        use TransferFlags as F;
        let request = [
            (t.pending_id.0 == 0, R::PendingIdMustNotBeZero),
            (t.pending_id.0 == u128::MAX, R::PendingIdMustNotBeIntMax),
            (t.pending_id == t.id, R::PendingIdMustBeDifferent),
            (t.timeout != 0, R::TimeoutReservedForPendingTransfer),
        ];
        if let Some(result) = first_broken(&request) {
            return result;
        }
        let Some(p) = self.transfers.get(&t.pending_id).copied() else {
            return R::PendingTransferNotFound;
        };
        // A field the event leaves zero is taken from the pending transfer.
        let set_and_differs = |asked: u128, pending: u128| asked != 0 && asked != pending;
        let amount = if !post || t.amount == Transfer::AMOUNT_MAX { p.amount } else { t.amount };
        let void_amount_matches = [0, Transfer::AMOUNT_MAX, p.amount].contains(&t.amount);
        let matches = [
            (!p.flags.contains(F::PENDING), R::PendingTransferNotPending),
            (self.period_of(p.ledger) == Period::Closed, R::LedgerPeriodClosed),
            (self.in_adjustment_without_flag(p.ledger, t.flags), R::LedgerPeriodInAdjustment),
            (set_and_differs(t.debit_account_id.0, p.debit_account_id.0), R::PendingTransferHasDifferentDebitAccountId),
            (
                set_and_differs(t.credit_account_id.0, p.credit_account_id.0),
                R::PendingTransferHasDifferentCreditAccountId,
            ),
            (set_and_differs(t.ledger.0.into(), p.ledger.0.into()), R::PendingTransferHasDifferentLedger),
            (set_and_differs(t.code.into(), p.code.into()), R::PendingTransferHasDifferentCode),
            (t.kind != p.kind, R::PendingTransferHasDifferentKind),
            (post && amount > p.amount, R::ExceedsPendingTransferAmount),
            (!post && !void_amount_matches, R::PendingTransferHasDifferentAmount),
        ];
        if let Some(result) = first_broken(&matches) {
            return result;
        }
        let status = self.pending[&p.id];
        let past_timeout = status.expires_at != 0 && status.expires_at <= timestamp;
        let state = [
            (status.state == PendingState::Posted, R::PendingTransferAlreadyPosted),
            (status.state == PendingState::Voided, R::PendingTransferAlreadyVoided),
            (status.state == PendingState::Expired || past_timeout, R::PendingTransferExpired),
        ];
        if let Some(result) = first_broken(&state) {
            return result;
        }
        if post {
            let dr = self.accounts[&p.debit_account_id];
            let cr = self.accounts[&p.credit_account_id];
            // A closed account takes no more money, unless the transfer being
            // posted is the one that closed it.
            let accounts = [
                (
                    dr.flags.contains(AccountFlags::CLOSED) && !p.flags.contains(F::CLOSING_DEBIT),
                    R::DebitAccountAlreadyClosed,
                ),
                (
                    cr.flags.contains(AccountFlags::CLOSED) && !p.flags.contains(F::CLOSING_CREDIT),
                    R::CreditAccountAlreadyClosed,
                ),
                (dr.debits_posted.checked_add(amount).is_none(), R::OverflowsDebitsPosted),
                (cr.credits_posted.checked_add(amount).is_none(), R::OverflowsCreditsPosted),
            ];
            if let Some(result) = first_broken(&accounts) {
                return result;
            }
        }
        let inherit = |asked: u128, pending: u128| if asked == 0 { pending } else { asked };
        self.transfers.insert(
            t.id,
            Transfer {
                id: t.id,
                debit_account_id: p.debit_account_id,
                credit_account_id: p.credit_account_id,
                amount,
                pending_id: p.id,
                ledger: p.ledger,
                code: p.code,
                kind: p.kind,
                flags: t.flags,
                timeout: 0,
                user_data_128: inherit(t.user_data_128, p.user_data_128),
                user_data_64: inherit(t.user_data_64.into(), p.user_data_64.into()).try_into().unwrap(),
                user_data_32: inherit(t.user_data_32.into(), p.user_data_32.into()).try_into().unwrap(),
                timestamp,
            },
        );
        let (posted, state) = if post { (Some(amount), PendingState::Posted) } else { (None, PendingState::Voided) };
        self.settle(&p, posted, state, timestamp);
        let balances = self.balances_after(&p);
        self.changes.push(Change { timestamp, kind: ChangeKind::TransferCreated(t.id), balances });
        R::Created
    }

    /// Both accounts' balances of transfer `t` as they stand.
    fn balances_after(&self, t: &Transfer) -> Option<TransferBalances> {
        let balances = |id: &AccountId| self.accounts[id].balances();
        Some(TransferBalances { debit: balances(&t.debit_account_id), credit: balances(&t.credit_account_id) })
    }

    /// Releases every pending transfer past its timeout, soonest first (ties
    /// by id); the `k`-th is stamped `timestamp + k`. Returns how many.
    fn expire(&mut self, timestamp: u64) -> usize {
        let mut due: Vec<(u64, TransferId)> = self
            .pending
            .iter()
            .filter(|(_, s)| s.state == PendingState::Pending && s.expires_at != 0 && s.expires_at <= timestamp)
            .map(|(id, s)| (s.expires_at, *id))
            .collect();
        due.sort_unstable();
        for ((_, id), at) in due.iter().zip(timestamp..) {
            let p = self.transfers[id];
            self.settle(&p, None, PendingState::Expired, at);
            let balances = self.balances_after(&p);
            self.changes.push(Change { timestamp: at, kind: ChangeKind::PendingExpired(*id), balances });
        }
        due.len()
    }

    /// Takes pending transfer `p`'s reservation off both its accounts, then
    /// either posts `posted` or (void, expiry) reopens what `p` closed.
    fn settle(&mut self, p: &Transfer, posted: Option<u128>, state: PendingState, timestamp: u64) {
        let mut dr = self.accounts[&p.debit_account_id];
        let mut cr = self.accounts[&p.credit_account_id];
        dr.debits_pending -= p.amount;
        cr.credits_pending -= p.amount;
        match posted {
            Some(amount) => {
                dr.debits_posted += amount;
                cr.credits_posted += amount;
            }
            None => {
                if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
                    dr.flags = dr.flags.without(AccountFlags::CLOSED);
                }
                if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
                    cr.flags = cr.flags.without(AccountFlags::CLOSED);
                }
            }
        }
        let status = self.pending.get_mut(&p.id).unwrap();
        status.state = state;
        self.put_account(dr, timestamp);
        self.put_account(cr, timestamp);
    }

    /// Stores a changed account, noting its balances if it keeps history.
    fn put_account(&mut self, account: Account, timestamp: u64) {
        if account.flags.contains(AccountFlags::HISTORY) {
            self.history.entry(account.id).or_default().push(AccountBalance {
                account_id: account.id,
                timestamp,
                debits_pending: account.debits_pending,
                debits_posted: account.debits_posted,
                credits_pending: account.credits_pending,
                credits_posted: account.credits_posted,
            });
        }
        self.accounts.insert(account.id, account);
    }
}

/// The result of retrying `t` when `e` exists with its id. For a post or void
/// a zero field was inherited and matches anything; `AMOUNT_MAX` (and `0` for
/// a void) "means the pending amount" (`apply.rs`), that is the amount of the
/// pending transfer `e` posted or voided, `pending_amount`: a post of 30 out
/// of 100 retried with `AMOUNT_MAX` asks to post 100, which is not the same
/// transfer. A balancing transfer may have moved less than it asked for.
fn retry_result(t: &Transfer, e: &Transfer, pending_amount: Option<u128>) -> CreateTransferResult {
    use CreateTransferResult as R;
    use TransferFlags as F;
    let inherits = t.flags.contains(F::POST_PENDING) || t.flags.contains(F::VOID_PENDING);
    let same = |asked: u128, stored: u128| asked == stored || (inherits && asked == 0);
    let same_amount = if t.flags.contains(F::POST_PENDING) {
        let asked = if t.amount == Transfer::AMOUNT_MAX { pending_amount } else { Some(t.amount) };
        asked == Some(e.amount)
    } else if t.flags.contains(F::VOID_PENDING) {
        [0, Transfer::AMOUNT_MAX, e.amount].contains(&t.amount)
    } else if t.flags.contains(F::BALANCING_DEBIT) || t.flags.contains(F::BALANCING_CREDIT) {
        t.amount >= e.amount
    } else {
        t.amount == e.amount
    };
    let differences = [
        (t.flags != e.flags, R::ExistsWithDifferentFlags),
        (t.pending_id != e.pending_id, R::ExistsWithDifferentPendingId),
        (t.timeout != e.timeout, R::ExistsWithDifferentTimeout),
        (!same(t.debit_account_id.0, e.debit_account_id.0), R::ExistsWithDifferentDebitAccountId),
        (!same(t.credit_account_id.0, e.credit_account_id.0), R::ExistsWithDifferentCreditAccountId),
        (!same_amount, R::ExistsWithDifferentAmount),
        (!same(t.user_data_128, e.user_data_128), R::ExistsWithDifferentUserData128),
        (!same(t.user_data_64.into(), e.user_data_64.into()), R::ExistsWithDifferentUserData64),
        (!same(t.user_data_32.into(), e.user_data_32.into()), R::ExistsWithDifferentUserData32),
        (!same(t.ledger.0.into(), e.ledger.0.into()), R::ExistsWithDifferentLedger),
        (!same(t.code.into(), e.code.into()), R::ExistsWithDifferentCode),
        (t.kind != e.kind, R::ExistsWithDifferentKind),
    ];
    first_broken(&differences).unwrap_or(R::Exists)
}

// ---------------------------------------------------------------------------
// Generated inputs. Most choices are indexes resolved against the model when
// the batch is built (an existing account, a pending transfer, an earlier
// event to retry), so random cases still reach the deep paths. Events are
// mostly well formed; `faults` break a few rules on purpose, sometimes
// several at once so that precedence matters.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    start_timestamp: u64,
    steps: Vec<Step>,
}

#[derive(Clone, Debug)]
struct Step {
    /// How far after the previous batch's last event this batch starts.
    gap: u64,
    batch: BatchSpec,
}

#[derive(Clone, Debug)]
enum BatchSpec {
    Ledgers(Vec<Ledger>),
    Accounts(Vec<AccountSpec>),
    Transfers(Vec<TransferSpec>),
    Expire,
    Periods(Vec<PeriodChange>),
}

#[derive(Clone, Debug)]
enum AccountSpec {
    New(Account),
    /// An earlier account event again, maybe with one field changed.
    Retry {
        pick: RetryPick,
        change: Option<AccountChange>,
    },
}

#[derive(Clone, Copy, Debug)]
enum RetryPick {
    /// An event that created its record.
    Created(usize),
    /// Any event sent before.
    Sent(usize),
}

#[derive(Clone, Copy, Debug)]
enum AccountChange {
    FlagBit(u8),
    UserData128,
    UserData64,
    UserData32,
    Ledger,
    Code,
    Kind,
    Balance,
    Timestamp,
}

#[derive(Clone, Copy, Debug)]
enum IdPick {
    /// An id no event of the case used yet.
    Fresh,
    Small(u128),
}

#[derive(Clone, Copy, Debug)]
enum KindPick {
    /// The kind the two accounts' kinds call for, or `journal`.
    Fit {
        journal: bool,
    },
    Any(TransferKind),
}

/// A rule a new transfer breaks on purpose.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Timestamp,
    ReservedFlag,
    IdZero,
    IdMax,
    PostFlag,
    VoidFlag,
    DebitZero,
    DebitMax,
    CreditZero,
    CreditMax,
    SameAccounts,
    PendingId,
    Timeout,
    Closing,
    AmountZero,
    LedgerZero,
    LedgerOther,
    LedgerMissing,
    CodeZero,
    DebitMissing,
    CreditMissing,
    CreditAny,
}

#[derive(Clone, Debug)]
struct NewTransferSpec {
    id: IdPick,
    /// Index into the existing accounts.
    debit: usize,
    /// Index into the other existing accounts of the debit account's ledger.
    credit: usize,
    amount: u128,
    flags: TransferFlags,
    timeout: u32,
    code: u16,
    kind: KindPick,
    user_data: (u128, u64, u32),
    faults: Vec<Fault>,
}

#[derive(Clone, Copy, Debug)]
enum PendingPick {
    /// A pending transfer still in `Pending` state (or asked for earlier in the batch).
    Live(usize),
    /// Any transfer with the `pending` flag.
    Any(usize),
    Raw(u128),
    /// The event's own id.
    Own,
}

/// What a post or void puts in a field it may inherit.
#[derive(Clone, Copy, Debug)]
enum Inherit {
    Zero,
    Same,
    Other,
}

#[derive(Clone, Copy, Debug)]
enum PostAmount {
    Max,
    Zero,
    Full,
    Half,
    OverByOne,
    Raw(u128),
}

#[derive(Clone, Debug)]
struct PostVoidSpec {
    id: IdPick,
    void: bool,
    target: PendingPick,
    debit: Inherit,
    credit: Inherit,
    ledger: Inherit,
    code: Inherit,
    amount: PostAmount,
    kind: Option<TransferKind>,
    /// Added to `post_pending` / `void_pending`: linked, sometimes one that excludes them.
    extra_flags: TransferFlags,
    timeout: u32,
    user_data: (u128, u64, u32),
    timestamp: u64,
}

#[derive(Clone, Copy, Debug)]
enum TransferChange {
    FlagBit(u8),
    PendingId,
    Timeout,
    DebitAccount,
    CreditAccount,
    AmountUp,
    AmountDown,
    AmountMax,
    AmountZero,
    UserData128,
    UserData64,
    UserData32,
    Ledger,
    Code,
    Kind,
    /// Zero every field a post or void may inherit.
    Inherited,
}

#[derive(Clone, Debug)]
enum TransferSpec {
    New(NewTransferSpec),
    /// A payment and its budget leg (a new transfer in the budget ledger
    /// of ledger 1's policy), linked unless `unlinked`, of the payment's
    /// amount unless `other_amount`.
    Budgeted {
        payment: NewTransferSpec,
        leg: NewTransferSpec,
        unlinked: bool,
        other_amount: bool,
    },
    PostOrVoid(PostVoidSpec),
    /// An earlier transfer event again, maybe with one field changed.
    Retry {
        pick: RetryPick,
        change: Option<TransferChange>,
    },
}

/// Every event sent so far in the case, to pick retries from.
#[derive(Default)]
struct Sent {
    accounts: Vec<Account>,
    accounts_created: Vec<Account>,
    transfers: Vec<Transfer>,
    transfers_created: Vec<Transfer>,
    transfer_id_max: u128,
}

/// Pending transfers a post or void may name: those in the model before the
/// batch and those asked for earlier in the batch.
struct PendingPool {
    live: Vec<Transfer>,
    any: Vec<Transfer>,
}

/// The element `index` names, wrapping around; `None` if `list` is empty.
fn nth<T: Copy>(list: &[T], index: usize) -> Option<T> {
    list.get(index % list.len().max(1)).copied()
}

fn pick_retry<T: Copy>(sent: &[T], created: &[T], pick: RetryPick) -> Option<T> {
    match pick {
        RetryPick::Created(index) => nth(created, index).or_else(|| nth(sent, index)),
        RetryPick::Sent(index) => nth(sent, index),
    }
}

fn next_kind(kind: TransferKind) -> TransferKind {
    let index = TransferKind::ALL.iter().position(|k| *k == kind).unwrap();
    TransferKind::ALL[(index + 1) % TransferKind::ALL.len()]
}

fn other_account_id(id: AccountId) -> AccountId {
    AccountId(id.0 % ACCOUNT_ID_MAX + 1)
}

/// The kind a transfer between accounts of these kinds has (or `journal`).
fn fitting_kind(debit: Option<AccountKind>, credit: Option<AccountKind>) -> TransferKind {
    match (debit, credit) {
        (Some(AccountKind::Cash), Some(AccountKind::Cash)) => TransferKind::CashTransfer,
        (Some(AccountKind::Other), Some(AccountKind::Cash)) => TransferKind::Expenditure,
        (Some(AccountKind::Cash), Some(AccountKind::Other)) => TransferKind::Receipt,
        _ => TransferKind::Journal,
    }
}

impl Sent {
    fn resolve(&mut self, batch: &BatchSpec, model: &Model) -> Operation {
        match batch {
            BatchSpec::Ledgers(ledgers) => Operation::CreateLedgers(ledgers.clone()),
            BatchSpec::Accounts(specs) => {
                let accounts = specs.iter().map(|spec| self.account(spec)).collect();
                Operation::CreateAccounts(accounts)
            }
            BatchSpec::Transfers(specs) => {
                let pending = model.transfers.values().filter(|t| t.flags.contains(TransferFlags::PENDING));
                let live = pending.clone().filter(|t| model.pending[&t.id].state == PendingState::Pending);
                let mut pool = PendingPool { live: live.copied().collect(), any: pending.copied().collect() };
                let mut transfers = Vec::new();
                for spec in specs {
                    match spec {
                        TransferSpec::Budgeted { payment, leg, unlinked, other_amount } => {
                            let mut payment = self.new_transfer(payment, model, None);
                            if !unlinked {
                                payment.flags = payment.flags.with(TransferFlags::LINKED);
                            }
                            let budget = model.ledgers.get(&LedgerId(1)).map_or(LedgerId(2), |l| l.budget.ledger);
                            let mut leg = self.new_transfer(leg, model, Some(budget));
                            leg.amount = if *other_amount { payment.amount.wrapping_add(1) } else { payment.amount };
                            for transfer in [payment, leg] {
                                self.note_sent(transfer, &mut pool);
                                transfers.push(transfer);
                            }
                        }
                        spec => transfers.push(self.transfer(spec, model, &mut pool)),
                    }
                }
                Operation::CreateTransfers(transfers)
            }
            BatchSpec::Expire => Operation::ExpirePending,
            BatchSpec::Periods(changes) => Operation::SetPeriods(changes.clone()),
        }
    }

    /// Notes which events created their record, for later retries.
    fn note_results(&mut self, operation: &Operation, results: &OperationResults) {
        match (operation, results) {
            (Operation::CreateAccounts(events), OperationResults::Accounts(results)) => {
                let created = events.iter().zip(results).filter(|(_, r)| **r == CreateAccountResult::Created);
                self.accounts_created.extend(created.map(|(event, _)| *event));
            }
            (Operation::CreateTransfers(events), OperationResults::Transfers(results)) => {
                let created = events.iter().zip(results).filter(|(_, r)| **r == CreateTransferResult::Created);
                self.transfers_created.extend(created.map(|(event, _)| *event));
            }
            _ => {}
        }
    }

    fn account(&mut self, spec: &AccountSpec) -> Account {
        let account = match spec {
            AccountSpec::New(account) => *account,
            AccountSpec::Retry { pick, change } => {
                let Some(mut a) = pick_retry(&self.accounts, &self.accounts_created, *pick) else {
                    return Account::default();
                };
                match change {
                    None => {}
                    Some(AccountChange::FlagBit(bit)) => a.flags = AccountFlags::from_bits(a.flags.bits() ^ (1 << bit)),
                    Some(AccountChange::UserData128) => a.user_data_128 ^= 1,
                    Some(AccountChange::UserData64) => a.user_data_64 ^= 1,
                    Some(AccountChange::UserData32) => a.user_data_32 ^= 1,
                    Some(AccountChange::Ledger) => a.ledger = LedgerId(a.ledger.0 % 2 + 1),
                    Some(AccountChange::Code) => a.code ^= 1,
                    Some(AccountChange::Kind) => {
                        a.kind = if a.kind == AccountKind::Cash { AccountKind::Other } else { AccountKind::Cash };
                    }
                    Some(AccountChange::Balance) => a.credits_posted += 1,
                    Some(AccountChange::Timestamp) => a.timestamp += 1,
                }
                a
            }
        };
        self.accounts.push(account);
        account
    }

    fn transfer_id(&self, pick: IdPick) -> TransferId {
        TransferId(match pick {
            IdPick::Fresh => self.transfer_id_max + 1,
            IdPick::Small(id) => id,
        })
    }

    fn transfer(&mut self, spec: &TransferSpec, model: &Model, pool: &mut PendingPool) -> Transfer {
        let transfer = match spec {
            TransferSpec::New(spec) => self.new_transfer(spec, model, None),
            TransferSpec::PostOrVoid(spec) => self.post_or_void(spec, model, pool),
            TransferSpec::Retry { pick, change } => self.retry(*pick, *change),
            TransferSpec::Budgeted { payment, .. } => self.new_transfer(payment, model, None),
        };
        self.note_sent(transfer, pool);
        transfer
    }

    /// Adds a transfer about to be sent to the retry and pending pools.
    fn note_sent(&mut self, transfer: Transfer, pool: &mut PendingPool) {
        if transfer.flags.contains(TransferFlags::PENDING) {
            pool.live.push(transfer);
            pool.any.push(transfer);
        }
        if transfer.id.0 != u128::MAX {
            self.transfer_id_max = self.transfer_id_max.max(transfer.id.0);
        }
        self.transfers.push(transfer);
    }

    /// A new transfer from `spec`, between accounts of `ledger` if given.
    fn new_transfer(&self, spec: &NewTransferSpec, model: &Model, ledger: Option<LedgerId>) -> Transfer {
        let accounts: Vec<Account> =
            model.accounts.values().filter(|a| ledger.is_none_or(|ledger| a.ledger == ledger)).copied().collect();
        let debit = nth(&accounts, spec.debit);
        let debit_id = debit.map_or(AccountId(1), |a| a.id);
        let partners: Vec<Account> = accounts
            .iter()
            .filter(|a| a.id != debit_id && Some(a.ledger) == debit.map(|d| d.ledger))
            .copied()
            .collect();
        let credit = nth(&partners, spec.credit);
        let kind = match spec.kind {
            KindPick::Fit { journal: true } => TransferKind::Journal,
            KindPick::Fit { journal: false } => fitting_kind(debit.map(|a| a.kind), credit.map(|a| a.kind)),
            KindPick::Any(kind) => kind,
        };
        let mut t = Transfer {
            id: self.transfer_id(spec.id),
            debit_account_id: debit_id,
            credit_account_id: credit.map_or(other_account_id(debit_id), |a| a.id),
            amount: spec.amount,
            pending_id: TransferId(0),
            ledger: debit.map_or(LedgerId(1), |a| a.ledger),
            code: spec.code,
            kind,
            flags: spec.flags,
            timeout: spec.timeout,
            user_data_128: spec.user_data.0,
            user_data_64: spec.user_data.1,
            user_data_32: spec.user_data.2,
            timestamp: 0,
        };
        for fault in &spec.faults {
            let add_flag = |t: &mut Transfer, flag: TransferFlags| t.flags = t.flags.with(flag);
            match fault {
                Fault::Timestamp => t.timestamp = 1,
                Fault::ReservedFlag => add_flag(&mut t, TransferFlags::from_bits(1 << 9)),
                Fault::IdZero => t.id = TransferId(0),
                Fault::IdMax => t.id = TransferId(u128::MAX),
                Fault::PostFlag => add_flag(&mut t, TransferFlags::POST_PENDING),
                Fault::VoidFlag => add_flag(&mut t, TransferFlags::VOID_PENDING),
                Fault::DebitZero => t.debit_account_id = AccountId(0),
                Fault::DebitMax => t.debit_account_id = AccountId(u128::MAX),
                Fault::CreditZero => t.credit_account_id = AccountId(0),
                Fault::CreditMax => t.credit_account_id = AccountId(u128::MAX),
                Fault::SameAccounts => t.credit_account_id = t.debit_account_id,
                Fault::PendingId => t.pending_id = TransferId(spec.debit as u128 % TRANSFER_ID_SMALL_MAX + 1),
                Fault::Timeout => t.timeout = 1,
                Fault::Closing => add_flag(&mut t, TransferFlags::CLOSING_DEBIT),
                Fault::AmountZero => t.amount = 0,
                Fault::LedgerZero => t.ledger = LedgerId(0),
                Fault::LedgerOther => t.ledger = LedgerId(t.ledger.0 % 3 + 1),
                Fault::LedgerMissing => t.ledger = LedgerId(7),
                Fault::CodeZero => t.code = 0,
                Fault::DebitMissing => t.debit_account_id = AccountId(ACCOUNT_ID_MISSING),
                Fault::CreditMissing => t.credit_account_id = AccountId(ACCOUNT_ID_MISSING),
                Fault::CreditAny => t.credit_account_id = other_account_id(t.debit_account_id),
            }
        }
        t
    }

    fn post_or_void(&self, spec: &PostVoidSpec, model: &Model, pool: &PendingPool) -> Transfer {
        let id = self.transfer_id(spec.id);
        let raw = |id: u128| {
            model
                .transfers
                .get(&TransferId(id))
                .copied()
                .unwrap_or(Transfer { id: TransferId(id), ..Default::default() })
        };
        let p = match spec.target {
            PendingPick::Live(i) => nth(&pool.live, i).or_else(|| nth(&pool.any, i)),
            PendingPick::Any(i) => nth(&pool.any, i),
            PendingPick::Raw(id) => Some(raw(id)),
            PendingPick::Own => Some(raw(id.0)),
        }
        .unwrap_or_else(|| raw(TRANSFER_ID_SMALL_MAX));
        let field = |choice: Inherit, same: u128, other: u128| match choice {
            Inherit::Zero => 0,
            Inherit::Same => same,
            Inherit::Other => other,
        };
        let amount = match spec.amount {
            PostAmount::Max => Transfer::AMOUNT_MAX,
            PostAmount::Zero => 0,
            PostAmount::Full => p.amount,
            PostAmount::Half => p.amount / 2,
            PostAmount::OverByOne => p.amount.saturating_add(1),
            PostAmount::Raw(amount) => amount,
        };
        let flag = if spec.void { TransferFlags::VOID_PENDING } else { TransferFlags::POST_PENDING };
        let debit = field(spec.debit, p.debit_account_id.0, other_account_id(p.debit_account_id).0);
        let credit = field(spec.credit, p.credit_account_id.0, other_account_id(p.credit_account_id).0);
        let ledger = field(spec.ledger, p.ledger.0.into(), (p.ledger.0 % 3 + 1).into());
        let code = field(spec.code, p.code.into(), (p.code ^ 1).into());
        Transfer {
            id,
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount,
            pending_id: p.id,
            ledger: LedgerId(ledger.try_into().unwrap()),
            code: code.try_into().unwrap(),
            kind: spec.kind.unwrap_or(p.kind),
            flags: flag.with(spec.extra_flags),
            timeout: spec.timeout,
            user_data_128: spec.user_data.0,
            user_data_64: spec.user_data.1,
            user_data_32: spec.user_data.2,
            timestamp: spec.timestamp,
        }
    }

    fn retry(&self, pick: RetryPick, change: Option<TransferChange>) -> Transfer {
        let Some(mut t) = pick_retry(&self.transfers, &self.transfers_created, pick) else {
            return Transfer::default();
        };
        match change {
            None => {}
            Some(TransferChange::FlagBit(bit)) => t.flags = TransferFlags::from_bits(t.flags.bits() ^ (1 << bit)),
            Some(TransferChange::PendingId) => t.pending_id = TransferId(t.pending_id.0 % TRANSFER_ID_SMALL_MAX + 1),
            Some(TransferChange::Timeout) => t.timeout ^= 1,
            Some(TransferChange::DebitAccount) => t.debit_account_id = other_account_id(t.debit_account_id),
            Some(TransferChange::CreditAccount) => t.credit_account_id = other_account_id(t.credit_account_id),
            Some(TransferChange::AmountUp) => t.amount = t.amount.saturating_add(1),
            Some(TransferChange::AmountDown) => t.amount = t.amount.saturating_sub(1),
            Some(TransferChange::AmountMax) => t.amount = Transfer::AMOUNT_MAX,
            Some(TransferChange::AmountZero) => t.amount = 0,
            Some(TransferChange::UserData128) => t.user_data_128 ^= 1,
            Some(TransferChange::UserData64) => t.user_data_64 ^= 1,
            Some(TransferChange::UserData32) => t.user_data_32 ^= 1,
            Some(TransferChange::Ledger) => t.ledger = LedgerId(t.ledger.0 % 3 + 1),
            Some(TransferChange::Code) => t.code ^= 1,
            Some(TransferChange::Kind) => t.kind = next_kind(t.kind),
            Some(TransferChange::Inherited) => {
                t.debit_account_id = AccountId(0);
                t.credit_account_id = AccountId(0);
                t.ledger = LedgerId(0);
                t.code = 0;
                t.user_data_128 = 0;
                t.user_data_64 = 0;
                t.user_data_32 = 0;
            }
        }
        t
    }
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

fn gap_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1u64..=10,
        3 => (1u64..=6).prop_map(|seconds| seconds * NS_PER_S),
        2 => 1u64..=20 * NS_PER_S,
    ]
}

fn ledger_strategy() -> impl Strategy<Value = Ledger> {
    let id = prop_oneof![8 => 1u32..=3, 1 => Just(0), 1 => Just(u32::MAX)];
    let currency = prop_oneof![
        4 => Just("KRW"),
        4 => Just("USD"),
        1 => Just(""),
        1 => Just("krw"),
        1 => Just("A_1"),
        1 => Just("ABCDEFGHIJKL"),
        1 => Just("ABCDEFGHIJKLM"),
    ];
    let scale = prop_oneof![6 => 0u8..=2, 1 => Just(LEDGER_SCALE_MAX), 1 => Just(LEDGER_SCALE_MAX + 1)];
    let name = prop_oneof![
        6 => Just("Won".to_string()),
        2 => Just("Dollar".to_string()),
        1 => Just(String::new()),
        1 => Just("n".repeat(LEDGER_NAME_LEN_MAX)),
        1 => Just("n".repeat(LEDGER_NAME_LEN_MAX + 1)),
    ];
    let timestamp = prop_oneof![12 => Just(0u64), 1 => 1u64..=5];
    let period = prop_oneof![20 => Just(Period::Open), 1 => Just(Period::Adjustment)];
    // `None` budget ledger: the ledger's own id.
    let budget = prop_oneof![
        12 => Just((Some(0u32), 0u16, 0u16)),
        2 => Just((Some(2), 0, 0)),
        1 => Just((Some(2), 2, 3)),
        3 => Just((None, 0, 0)),
        1 => Just((Some(2), 0, 5)),
        1 => Just((Some(2), 5, 3)),
        1 => Just((Some(0), 1, 1)),
        1 => Just((Some(9), 0, 0)),
    ];
    let warn_percent = prop_oneof![10 => Just(0u8), 2 => Just(90), 1 => Just(101)];
    let random = (id, currency, scale, name, timestamp, (period, budget, warn_percent)).prop_map(
        |(id, currency, scale, name, timestamp, (period, (budget_ledger, code_min, code_max), warn_percent))| Ledger {
            id: LedgerId(id),
            currency: currency.to_string(),
            scale,
            name,
            timestamp,
            period,
            budget: BudgetPolicy { ledger: LedgerId(budget_ledger.unwrap_or(id)), code_min, code_max },
            close: None,
            warn_percent,
        },
    );
    // A retry of the setup's ledger 2, as it was sent.
    let dollar = Ledger {
        id: LedgerId(2),
        currency: "USD".to_string(),
        scale: 2,
        name: "Dollar".to_string(),
        ..Default::default()
    };
    prop_oneof![12 => random, 1 => Just(dollar)]
}

/// `(linked, debits limit, credits limit, history, closed, reserved bit)`, with these odds.
fn account_flags_strategy(odds: [f64; 6]) -> impl Strategy<Value = AccountFlags> {
    let [linked, debits, credits, history, closed, reserved] = odds.map(weighted);
    (linked, debits, credits, history, closed, reserved).prop_map(
        |(linked, debits_limited, credits_limited, history, closed, reserved)| {
            let flags = [
                (linked, AccountFlags::LINKED),
                (debits_limited, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
                (credits_limited, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
                (history, AccountFlags::HISTORY),
                (closed, AccountFlags::CLOSED),
                (reserved, AccountFlags::from_bits(1 << 9)),
            ];
            flags.iter().filter(|(set, _)| *set).fold(AccountFlags::NONE, |all, (_, flag)| all.with(*flag))
        },
    )
}

/// Accounts `1..=ACCOUNT_ID_MAX`, most of them, well formed: the setup batch.
fn setup_accounts_strategy() -> impl Strategy<Value = Vec<Account>> {
    let account = (
        weighted(0.85),
        prop_oneof![3 => Just(1u32), 2 => Just(2)],
        1u16..=3,
        prop_oneof![2 => Just(AccountKind::Cash), 3 => Just(AccountKind::Other)],
        account_flags_strategy([0.1, 0.2, 0.2, 0.4, 0.03, 0.0]),
        (0u128..=1, 0u64..=1, 0u32..=1),
    );
    vec(account, ACCOUNT_ID_MAX as usize).prop_map(|accounts| {
        (1..=ACCOUNT_ID_MAX)
            .zip(accounts)
            .filter(|(_, (present, ..))| *present)
            .map(|(id, (_, ledger, code, kind, mut flags, user_data))| {
                if flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
                    flags = flags.without(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS);
                }
                Account {
                    id: AccountId(id),
                    ledger: LedgerId(ledger),
                    code,
                    kind,
                    flags,
                    user_data_128: user_data.0,
                    user_data_64: user_data.1,
                    user_data_32: user_data.2,
                    ..Default::default()
                }
            })
            .collect()
    })
}

/// Any account event: often malformed or a collision with an existing id.
fn new_account_strategy() -> impl Strategy<Value = Account> {
    let id = prop_oneof![14 => 1..=ACCOUNT_ID_MAX + ACCOUNT_IDS_LATE, 1 => Just(0), 1 => Just(u128::MAX)];
    let ledger = prop_oneof![10 => 1u32..=2, 1 => Just(0), 1 => Just(3)];
    let code = prop_oneof![10 => 1u16..=3, 1 => Just(0)];
    let kind = prop_oneof![Just(AccountKind::Cash), Just(AccountKind::Other)];
    let balances = prop_oneof![8 => Just(4usize), 1 => 0usize..4];
    let user_data = (0u128..=1, 0u64..=1, 0u32..=1);
    let timestamp = prop_oneof![16 => Just(0u64), 1 => Just(7)];
    let flags = account_flags_strategy([0.2, 0.25, 0.2, 0.3, 0.05, 0.03]);
    (id, ledger, code, kind, flags, balances, user_data, timestamp).prop_map(
        |(id, ledger, code, kind, flags, balance, user_data, timestamp)| {
            let mut account = Account {
                id: AccountId(id),
                ledger: LedgerId(ledger),
                code,
                kind,
                flags,
                user_data_128: user_data.0,
                user_data_64: user_data.1,
                user_data_32: user_data.2,
                timestamp,
                ..Default::default()
            };
            match balance {
                0 => account.debits_pending = 1,
                1 => account.debits_posted = 1,
                2 => account.credits_pending = 1,
                3 => account.credits_posted = 1,
                _ => {}
            }
            account
        },
    )
}

fn retry_pick_strategy() -> impl Strategy<Value = RetryPick> {
    prop_oneof![
        3 => (0usize..256).prop_map(RetryPick::Created),
        1 => (0usize..256).prop_map(RetryPick::Sent),
    ]
}

fn account_change_strategy() -> impl Strategy<Value = AccountChange> {
    prop_oneof![
        3 => (0u8..5).prop_map(AccountChange::FlagBit),
        1 => Just(AccountChange::UserData128),
        1 => Just(AccountChange::UserData64),
        1 => Just(AccountChange::UserData32),
        1 => Just(AccountChange::Ledger),
        1 => Just(AccountChange::Code),
        1 => Just(AccountChange::Kind),
        1 => Just(AccountChange::Balance),
        1 => Just(AccountChange::Timestamp),
    ]
}

fn account_spec_strategy() -> impl Strategy<Value = AccountSpec> {
    prop_oneof![
        3 => new_account_strategy().prop_map(AccountSpec::New),
        2 => (retry_pick_strategy(), proptest::option::weighted(0.6, account_change_strategy()))
            .prop_map(|(pick, change)| AccountSpec::Retry { pick, change }),
    ]
}

fn id_pick_strategy() -> impl Strategy<Value = IdPick> {
    prop_oneof![
        6 => Just(IdPick::Fresh),
        1 => (1..=TRANSFER_ID_SMALL_MAX).prop_map(IdPick::Small),
    ]
}

fn amount_strategy() -> impl Strategy<Value = u128> {
    prop_oneof![
        12 => 1u128..=100,
        2 => 101u128..=100_000,
        1 => (0u128..=2).prop_map(|below| u128::MAX - below),
        1 => (0u128..=2).prop_map(|above| u128::MAX / 2 + above),
    ]
}

fn transfer_kind_strategy() -> impl Strategy<Value = TransferKind> {
    prop_oneof![
        1 => Just(TransferKind::Expenditure),
        1 => Just(TransferKind::Receipt),
        1 => Just(TransferKind::CashTransfer),
        1 => Just(TransferKind::Journal),
    ]
}

fn kind_pick_strategy() -> impl Strategy<Value = KindPick> {
    prop_oneof![
        5 => Just(KindPick::Fit { journal: false }),
        3 => Just(KindPick::Fit { journal: true }),
        1 => transfer_kind_strategy().prop_map(KindPick::Any),
    ]
}

fn user_data_strategy() -> impl Strategy<Value = (u128, u64, u32)> {
    (0u128..=2, 0u64..=2, 0u32..=2)
}

fn new_transfer_flags_strategy() -> impl Strategy<Value = TransferFlags> {
    use TransferFlags as F;
    let odds = (weighted(0.2), weighted(0.4), weighted(0.08), weighted(0.08), weighted(0.04), weighted(0.04));
    (odds, weighted(0.2)).prop_map(
        |((linked, pending, balancing_debit, balancing_credit, closing_debit, closing_credit), adjustment)| {
            let flags = [
                (adjustment, F::ADJUSTMENT),
                (linked, F::LINKED),
                (pending, F::PENDING),
                (balancing_debit, F::BALANCING_DEBIT),
                (balancing_credit, F::BALANCING_CREDIT),
                (pending && closing_debit, F::CLOSING_DEBIT),
                (pending && closing_credit, F::CLOSING_CREDIT),
            ];
            flags.iter().filter(|(set, _)| *set).fold(F::NONE, |all, (_, flag)| all.with(*flag))
        },
    )
}

fn fault_strategy() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::Timestamp),
        Just(Fault::ReservedFlag),
        Just(Fault::IdZero),
        Just(Fault::IdMax),
        Just(Fault::PostFlag),
        Just(Fault::VoidFlag),
        Just(Fault::DebitZero),
        Just(Fault::DebitMax),
        Just(Fault::CreditZero),
        Just(Fault::CreditMax),
        Just(Fault::SameAccounts),
        Just(Fault::PendingId),
        Just(Fault::Timeout),
        Just(Fault::Closing),
        Just(Fault::AmountZero),
        Just(Fault::LedgerZero),
        Just(Fault::LedgerOther),
        Just(Fault::LedgerMissing),
        Just(Fault::CodeZero),
        Just(Fault::DebitMissing),
        Just(Fault::CreditMissing),
        Just(Fault::CreditAny),
    ]
}

fn new_transfer_strategy() -> impl Strategy<Value = NewTransferSpec> {
    let timeout = prop_oneof![4 => Just(0u32), 5 => 1u32..=5, 1 => 6u32..=100, 1 => Just(u32::MAX)];
    let faults = prop_oneof![7 => Just(Vec::new()), 3 => vec(fault_strategy(), 1..=3)];
    (
        (id_pick_strategy(), 0usize..64, 0usize..64, amount_strategy()),
        (new_transfer_flags_strategy(), timeout, 1u16..=2, kind_pick_strategy()),
        (user_data_strategy(), faults),
    )
        .prop_map(|((id, debit, credit, amount), (flags, timeout, code, kind), (user_data, faults))| {
            let timeout = if flags.contains(TransferFlags::PENDING) { timeout } else { 0 };
            NewTransferSpec { id, debit, credit, amount, flags, timeout, code, kind, user_data, faults }
        })
}

fn post_void_strategy() -> impl Strategy<Value = PostVoidSpec> {
    use TransferFlags as F;
    let target = prop_oneof![
        12 => (0usize..64).prop_map(PendingPick::Live),
        3 => (0usize..64).prop_map(PendingPick::Any),
        1 => prop_oneof![Just(0), Just(u128::MAX), 1..=TRANSFER_ID_SMALL_MAX].prop_map(PendingPick::Raw),
        1 => Just(PendingPick::Own),
    ];
    let inherit = || prop_oneof![12 => Just(Inherit::Zero), 6 => Just(Inherit::Same), 1 => Just(Inherit::Other)];
    let amount = prop_oneof![
        4 => Just(PostAmount::Max),
        2 => Just(PostAmount::Zero),
        3 => Just(PostAmount::Full),
        3 => Just(PostAmount::Half),
        1 => Just(PostAmount::OverByOne),
        1 => amount_strategy().prop_map(PostAmount::Raw),
    ];
    let kind = prop_oneof![20 => Just(None), 1 => transfer_kind_strategy().prop_map(Some)];
    let extra_flags = prop_oneof![
        20 => Just(F::NONE),
        6 => Just(F::LINKED),
        4 => Just(F::ADJUSTMENT),
        1 => prop_oneof![
            Just(F::PENDING),
            Just(F::POST_PENDING.with(F::VOID_PENDING)),
            Just(F::BALANCING_DEBIT),
            Just(F::BALANCING_CREDIT),
            Just(F::CLOSING_DEBIT),
            Just(F::CLOSING_CREDIT),
            Just(F::from_bits(1 << 15)),
        ],
    ];
    let timeout = prop_oneof![30 => Just(0u32), 1 => Just(1)];
    let user_data = prop_oneof![3 => Just((0, 0, 0)), 1 => user_data_strategy()];
    let timestamp = prop_oneof![40 => Just(0u64), 1 => Just(1)];
    (
        (id_pick_strategy(), weighted(0.4), target, inherit(), inherit(), inherit(), inherit()),
        (amount, kind, extra_flags, timeout, user_data, timestamp),
    )
        .prop_map(|((id, void, target, debit, credit, ledger, code), rest)| {
            let (amount, kind, extra_flags, timeout, user_data, timestamp) = rest;
            PostVoidSpec {
                id,
                void,
                target,
                debit,
                credit,
                ledger,
                code,
                amount,
                kind,
                extra_flags,
                timeout,
                user_data,
                timestamp,
            }
        })
}

fn transfer_change_strategy() -> impl Strategy<Value = TransferChange> {
    prop_oneof![
        3 => (0u8..9).prop_map(TransferChange::FlagBit),
        1 => Just(TransferChange::PendingId),
        1 => Just(TransferChange::Timeout),
        1 => Just(TransferChange::DebitAccount),
        1 => Just(TransferChange::CreditAccount),
        1 => Just(TransferChange::AmountUp),
        1 => Just(TransferChange::AmountDown),
        1 => Just(TransferChange::AmountMax),
        1 => Just(TransferChange::AmountZero),
        1 => Just(TransferChange::UserData128),
        1 => Just(TransferChange::UserData64),
        1 => Just(TransferChange::UserData32),
        1 => Just(TransferChange::Ledger),
        1 => Just(TransferChange::Code),
        1 => Just(TransferChange::Kind),
        2 => Just(TransferChange::Inherited),
    ]
}

fn transfer_spec_strategy() -> impl Strategy<Value = TransferSpec> {
    let budgeted = (new_transfer_strategy(), new_transfer_strategy(), weighted(0.1), weighted(0.1)).prop_map(
        |(payment, leg, unlinked, other_amount)| TransferSpec::Budgeted { payment, leg, unlinked, other_amount },
    );
    prop_oneof![
        10 => new_transfer_strategy().prop_map(TransferSpec::New),
        3 => budgeted,
        6 => post_void_strategy().prop_map(TransferSpec::PostOrVoid),
        3 => (retry_pick_strategy(), proptest::option::weighted(0.6, transfer_change_strategy()))
            .prop_map(|(pick, change)| TransferSpec::Retry { pick, change }),
    ]
}

fn batch_strategy() -> impl Strategy<Value = BatchSpec> {
    prop_oneof![
        1 => vec(ledger_strategy(), 0..=LEDGER_EVENTS_MAX).prop_map(BatchSpec::Ledgers),
        2 => vec(account_spec_strategy(), 0..=ACCOUNT_EVENTS_MAX).prop_map(BatchSpec::Accounts),
        10 => vec(transfer_spec_strategy(), 0..=TRANSFER_EVENTS_MAX).prop_map(BatchSpec::Transfers),
        3 => Just(BatchSpec::Expire),
        1 => vec(period_change_strategy(), 0..=3).prop_map(BatchSpec::Periods),
    ]
}

/// Mostly ledger 1 into adjustment; sometimes closed, back to open, or a
/// ledger that is not there.
fn period_change_strategy() -> impl Strategy<Value = PeriodChange> {
    let ledger = prop_oneof![8 => Just(1u32), 3 => 2u32..=3, 1 => Just(0), 1 => Just(7)];
    let period = prop_oneof![6 => Just(Period::Adjustment), 2 => Just(Period::Closed), 2 => Just(Period::Open)];
    (ledger, period).prop_map(|(ledger, period)| PeriodChange { ledger: LedgerId(ledger), period })
}

/// Two setup batches (ledgers 1 and 2 plus a few random ledger events, then
/// most of the accounts), then up to `BATCHES_MAX - 2` random batches.
fn case_strategy() -> impl Strategy<Value = Case> {
    let start = prop_oneof![10 => 1u64..=1_000, 1 => Just(START_TIMESTAMP_LATE)];
    (
        start,
        vec(ledger_strategy(), 0..=2),
        (setup_accounts_strategy(), weighted(0.6)),
        vec((gap_strategy(), batch_strategy()), 1..=BATCHES_MAX - 2),
    )
        .prop_map(|(start_timestamp, extra_ledgers, (accounts, budgeted), steps)| {
            let ledger = |id, currency: &str, scale, name: &str| Ledger {
                id: LedgerId(id),
                currency: currency.to_string(),
                scale,
                name: name.to_string(),
                timestamp: 0,
                ..Default::default()
            };
            // Ledger 2 first: with `budgeted`, it is ledger 1's budget ledger
            // (expenditures and code-2 transfers of ledger 1 need a leg there).
            let mut won = ledger(1, "KRW", 0, "Won");
            if budgeted {
                won.budget = BudgetPolicy { ledger: LedgerId(2), code_min: 2, code_max: 2 };
            }
            let mut ledgers = vec![ledger(2, "USD", 2, "Dollar"), won];
            ledgers.extend(extra_ledgers);
            let accounts = accounts.into_iter().map(AccountSpec::New).collect();
            let mut all = vec![
                Step { gap: 1, batch: BatchSpec::Ledgers(ledgers) },
                Step { gap: 1, batch: BatchSpec::Accounts(accounts) },
            ];
            all.extend(steps.into_iter().map(|(gap, batch)| Step { gap, batch }));
            Case { start_timestamp, steps: all }
        })
}

// ---------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------

fn event_text(operation: &Operation, index: usize) -> String {
    match operation {
        Operation::CreateLedgers(events) => format!("{:?}", events.get(index)),
        Operation::CreateAccounts(events) => format!("{:?}", events.get(index)),
        Operation::CreateTransfers(events) => format!("{:?}", events.get(index)),
        Operation::ExpirePending => "expire_pending".to_string(),
        Operation::SetPeriods(events) => format!("{:?}", events.get(index)),
        Operation::Close(step) => format!("{step:?}"),
        Operation::Reconcile(op) => format!("{op:?}"),
    }
}

/// The first position where two result lists differ.
fn first_difference<T: PartialEq>(actual: &[T], expected: &[T]) -> Option<usize> {
    (0..actual.len().max(expected.len())).find(|&i| actual.get(i) != expected.get(i))
}

fn check_results(
    operation: &Operation,
    actual: &OperationResults,
    expected: &OperationResults,
) -> Result<(), TestCaseError> {
    let difference = match (actual, expected) {
        (OperationResults::Ledgers(a), OperationResults::Ledgers(e)) => {
            first_difference(a, e).map(|i| (i, format!("{:?}", a.get(i)), format!("{:?}", e.get(i))))
        }
        (OperationResults::Accounts(a), OperationResults::Accounts(e)) => {
            first_difference(a, e).map(|i| (i, format!("{:?}", a.get(i)), format!("{:?}", e.get(i))))
        }
        (OperationResults::Transfers(a), OperationResults::Transfers(e)) => {
            first_difference(a, e).map(|i| (i, format!("{:?}", a.get(i)), format!("{:?}", e.get(i))))
        }
        _ => (actual != expected).then(|| (0, format!("{actual:?}"), format!("{expected:?}"))),
    };
    if let Some((index, library, model)) = difference {
        let event = event_text(operation, index);
        return Err(TestCaseError::fail(format!(
            "event {index} {event}: library says {library}, model says {model}\nlibrary: {actual:?}\nmodel:   {expected:?}"
        )));
    }
    Ok(())
}

/// Compares two lists of records, naming the first that differs.
fn check_records<T: PartialEq + Debug>(what: &str, library: &[T], model: &[T]) -> Result<(), TestCaseError> {
    if let Some(i) = first_difference(library, model) {
        return Err(TestCaseError::fail(format!(
            "{what} records differ at position {i} (library has {}, model {}):\nlibrary: {:?}\nmodel:   {:?}",
            library.len(),
            model.len(),
            library.get(i),
            model.get(i),
        )));
    }
    Ok(())
}

/// A sum that cannot overflow: `high` counts wraps of `low`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WideSum {
    high: u128,
    low: u128,
}

impl WideSum {
    fn add(&mut self, amount: u128) {
        let (low, wrapped) = self.low.overflowing_add(amount);
        self.low = low;
        self.high += u128::from(wrapped);
    }

    fn narrow(self) -> Option<u128> {
        (self.high == 0).then_some(self.low)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct WideTotals {
    accounts: u64,
    debits_pending: WideSum,
    debits_posted: WideSum,
    credits_pending: WideSum,
    credits_posted: WideSum,
}

impl WideTotals {
    fn add(&mut self, a: &Account) {
        self.accounts += 1;
        self.debits_pending.add(a.debits_pending);
        self.debits_posted.add(a.debits_posted);
        self.credits_pending.add(a.credits_pending);
        self.credits_posted.add(a.credits_posted);
    }

    /// The totals as the trial balance reports them, if every sum fits in `u128`.
    fn narrow(&self) -> Option<BalanceTotals> {
        Some(BalanceTotals {
            accounts: self.accounts,
            debits_pending: self.debits_pending.narrow()?,
            debits_posted: self.debits_posted.narrow()?,
            credits_pending: self.credits_pending.narrow()?,
            credits_posted: self.credits_posted.narrow()?,
        })
    }
}

/// Every record of a store, in ascending id order.
#[derive(Default)]
struct StoreRecords {
    ledgers: Vec<Ledger>,
    accounts: Vec<Account>,
    transfers: Vec<Transfer>,
    pending: Vec<(TransferId, PendingStatus)>,
    failures: Vec<(TransferId, CreateTransferResult)>,
}

fn store_records(store: &MemoryStore) -> StoreRecords {
    let mut records = StoreRecords::default();
    store.for_each_ledger(&mut |l| records.ledgers.push(l.clone())).unwrap();
    store.for_each_account(&mut |a| records.accounts.push(*a)).unwrap();
    store.for_each_transfer(&mut |t| records.transfers.push(*t)).unwrap();
    store.for_each_pending(&mut |id, status| records.pending.push((id, *status))).unwrap();
    store.for_each_failure(&mut |id, result| records.failures.push((id, result))).unwrap();
    records
}

/// The store holds exactly the model's records, and the ledger's invariants hold.
fn check_state(store: &MemoryStore, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.last_timestamp().unwrap(), model.last_timestamp, "last_timestamp");
    let records = store_records(store);
    check_records("ledger", &records.ledgers, &model.ledgers.values().cloned().collect::<Vec<_>>())?;
    check_records("account", &records.accounts, &model.accounts.values().copied().collect::<Vec<_>>())?;
    check_records("transfer", &records.transfers, &model.transfers.values().copied().collect::<Vec<_>>())?;
    let pending: Vec<_> = model.pending.iter().map(|(id, status)| (*id, *status)).collect();
    check_records("pending status", &records.pending, &pending)?;
    let failures: Vec<_> = model.failures.iter().map(|(id, result)| (*id, *result)).collect();
    check_records("failure", &records.failures, &failures)?;
    check_records("change", &store.changes(&ChangeFilter::all(u32::MAX)).unwrap(), &model.changes)?;
    prop_assert_eq!(store.transfer_count(), model.transfers.len());
    prop_assert_eq!(store.account_count(), model.accounts.len());
    prop_assert_eq!(stored_state_digest(store).unwrap(), state_digest(store).unwrap(), "incremental digest");
    check_invariants(store, &records.accounts, model)
}

/// Every ledger's trial balance as of each of `timestamps` (inside batches
/// too), against the model's accounts and the balances its changes noted.
fn check_trial_balances_as_of(store: &MemoryStore, model: &Model, timestamps: &[u64]) -> Result<(), TestCaseError> {
    let mut timeline = BTreeMap::<AccountId, Vec<(u64, Balances)>>::new();
    for change in &model.changes {
        let (ChangeKind::TransferCreated(id) | ChangeKind::PendingExpired(id)) = change.kind else { continue };
        let (transfer, balances) = (model.transfers[&id], change.balances.unwrap());
        timeline.entry(transfer.debit_account_id).or_default().push((change.timestamp, balances.debit));
        timeline.entry(transfer.credit_account_id).or_default().push((change.timestamp, balances.credit));
    }
    for &at in timestamps.iter().filter(|at| **at > 0 && **at <= model.last_timestamp) {
        for ledger in model.ledgers.keys() {
            let mut total = WideTotals::default();
            let mut codes = BTreeMap::<u16, WideTotals>::new();
            for account in model.accounts.values().filter(|a| a.ledger == *ledger && a.timestamp <= at) {
                let noted = timeline.get(&account.id).map(Vec::as_slice).unwrap_or_default();
                let b = noted.iter().rev().find(|(t, _)| *t <= at).map(|(_, b)| *b).unwrap_or_default();
                let then = Account {
                    debits_pending: b.debits_pending,
                    debits_posted: b.debits_posted,
                    credits_pending: b.credits_pending,
                    credits_posted: b.credits_posted,
                    ..*account
                };
                total.add(&then);
                codes.entry(account.code).or_default().add(&then);
            }
            let trial = trial_balance_as_of(store, *ledger, at);
            let expected = total.narrow().and_then(|total| {
                let codes: Option<Vec<_>> = codes.iter().map(|(code, t)| Some((*code, t.narrow()?))).collect();
                Some((total, codes?))
            });
            match expected {
                Some((total, codes)) => {
                    let trial =
                        trial.map_err(|e| TestCaseError::fail(format!("trial balance of {ledger} at {at}: {e}")))?;
                    prop_assert_eq!(trial.total, total, "ledger {} as of {}", ledger, at);
                    prop_assert_eq!(trial.codes, codes, "ledger {} as of {}", ledger, at);
                }
                None => prop_assert!(matches!(trial, Err(QueryError::Overflow { .. })), "{:?}", trial),
            }
        }
    }
    if let Some(ledger) = model.ledgers.keys().next() {
        let future = trial_balance_as_of(store, *ledger, model.last_timestamp + 1);
        prop_assert!(matches!(future, Err(QueryError::InvalidField { field: "timestamp", .. })), "{:?}", future);
    }
    Ok(())
}

/// Double entry per ledger (with the trial balance), and every limit flag.
fn check_invariants(store: &MemoryStore, accounts: &[Account], model: &Model) -> Result<(), TestCaseError> {
    for ledger in model.ledgers.keys() {
        let mut total = WideTotals::default();
        let mut codes = BTreeMap::<u16, WideTotals>::new();
        for account in accounts.iter().filter(|a| a.ledger == *ledger) {
            total.add(account);
            codes.entry(account.code).or_default().add(account);
        }
        prop_assert_eq!(total.debits_posted, total.credits_posted, "ledger {}: posted debits != credits", ledger);
        prop_assert_eq!(total.debits_pending, total.credits_pending, "ledger {}: pending debits != credits", ledger);
        let trial = trial_balance(store, *ledger);
        match total.narrow() {
            Some(expected_total) => {
                let trial = trial.map_err(|e| TestCaseError::fail(format!("trial balance of {ledger}: {e}")))?;
                prop_assert!(trial.total.is_balanced(), "ledger {} trial balance {:?}", ledger, trial.total);
                prop_assert_eq!(trial.total, expected_total);
                let expected_codes: Vec<(u16, BalanceTotals)> =
                    codes.iter().map(|(code, totals)| (*code, totals.narrow().unwrap())).collect();
                prop_assert_eq!(trial.codes, expected_codes);
            }
            None => prop_assert!(
                matches!(trial, Err(QueryError::Overflow { .. })),
                "ledger {}: sums overflow u128 but trial balance gave {:?}",
                ledger,
                trial
            ),
        }
    }
    for a in accounts {
        // Creation refuses what would overflow `pending + posted`, and posts
        // and voids only shrink it, so the sums always fit.
        prop_assert!(a.debits_pending.checked_add(a.debits_posted).is_some(), "debits overflow: {:?}", a);
        prop_assert!(a.credits_pending.checked_add(a.credits_posted).is_some(), "credits overflow: {:?}", a);
        if a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
            let debits = a.debits_pending.checked_add(a.debits_posted);
            prop_assert!(debits.is_some_and(|d| d <= a.credits_posted), "account over its credits: {:?}", a);
        }
        if a.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
            let credits = a.credits_pending.checked_add(a.credits_posted);
            prop_assert!(credits.is_some_and(|c| c <= a.debits_posted), "account over its debits: {:?}", a);
        }
    }
    Ok(())
}

/// No transfer id is ever `created` twice.
fn check_created_once(
    operation: &Operation,
    results: &OperationResults,
    created: &mut BTreeSet<TransferId>,
) -> Result<(), TestCaseError> {
    if let (Operation::CreateTransfers(events), OperationResults::Transfers(results)) = (operation, results) {
        for (event, result) in events.iter().zip(results) {
            if *result == CreateTransferResult::Created {
                prop_assert!(created.insert(event.id), "transfer {} created twice", event.id);
            }
        }
    }
    Ok(())
}

/// Every account's history index and balance history, against the model's
/// transfers and noted balances; `balance_as_of` at every batch boundary.
fn check_histories(store: &MemoryStore, model: &Model, timestamps: &[u64]) -> Result<(), TestCaseError> {
    for account in model.accounts.values() {
        let id = account.id;
        let mut touching: Vec<Transfer> = model
            .transfers
            .values()
            .filter(|t| t.debit_account_id == id || t.credit_account_id == id)
            .copied()
            .collect();
        touching.sort_by_key(|t| t.timestamp);
        let all = AccountFilter::all(id, HISTORY_LIMIT);
        check_records("account transfers", &get_account_transfers(store, &all).unwrap(), &touching)?;
        let debits_newest_first = AccountFilter { sides: Sides::Debits, reversed: true, ..all };
        let expected: Vec<Transfer> = touching.iter().rev().filter(|t| t.debit_account_id == id).copied().collect();
        check_records("account debits", &get_account_transfers(store, &debits_newest_first).unwrap(), &expected)?;

        if !account.flags.contains(AccountFlags::HISTORY) {
            prop_assert_eq!(get_account_balances(store, &all), Err(QueryError::AccountHasNoHistory(id)));
            continue;
        }
        let noted = model.history.get(&id).map(Vec::as_slice).unwrap_or_default();
        check_records("account balances", &get_account_balances(store, &all).unwrap(), noted)?;
        for &at in timestamps {
            let expected = if at < account.timestamp {
                None
            } else {
                let latest = noted.iter().rev().find(|b| b.timestamp <= at).copied();
                Some(latest.unwrap_or(AccountBalance {
                    account_id: id,
                    timestamp: account.timestamp,
                    ..Default::default()
                }))
            };
            prop_assert_eq!(balance_as_of(store, id, at).unwrap(), expected, "balance of {} as of {}", id, at);
        }
    }
    Ok(())
}

/// Batch `index` starts `gap` after the last event before it.
fn batch_timestamp(case: &Case, index: usize, model: &Model) -> u64 {
    if index == 0 {
        case.start_timestamp
    } else {
        model.last_timestamp + case.steps[index].gap
    }
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut machine = StateMachine::new(MemoryStore::new());
    let mut model = Model::default();
    let mut sent = Sent::default();
    let mut created = BTreeSet::new();
    let mut batches: Vec<(u64, Operation, OperationResults)> = Vec::new();
    let mut digest_before_last: Option<StateDigest> = None;
    // Every batch's first and last event timestamps, for `balance_as_of`.
    let mut boundaries = Vec::new();
    for (index, step) in case.steps.iter().enumerate() {
        let timestamp = batch_timestamp(case, index, &model);
        let operation = sent.resolve(&step.batch, &model);
        if index + 1 == case.steps.len() {
            digest_before_last = Some(machine.state_digest().unwrap());
        }
        let actual = machine.apply(timestamp, &operation).unwrap();
        let expected = model.apply(timestamp, &operation);
        let context = |error: TestCaseError| {
            TestCaseError::fail(format!("batch {index} at timestamp {timestamp}: {error}\noperation: {operation:?}"))
        };
        check_results(&operation, &actual, &expected).map_err(context)?;
        check_created_once(&operation, &actual, &mut created).map_err(context)?;
        check_state(machine.store(), &model).map_err(context)?;
        boundaries.extend([timestamp - 1, timestamp, model.last_timestamp]);
        sent.note_results(&operation, &actual);
        batches.push((timestamp, operation, actual));
    }
    check_histories(machine.store(), &model, &boundaries)?;
    let mut as_of: Vec<u64> =
        model.changes.iter().map(|change| change.timestamp).chain(boundaries.iter().copied()).collect();
    as_of.sort_unstable();
    as_of.dedup();
    check_trial_balances_as_of(machine.store(), &model, &as_of)?;

    // Determinism: the same batches into a fresh store give the same results
    // and the same digest. The batch before the last gives another digest:
    // the last batch always moves the last timestamp, which the digest covers.
    let digest = machine.state_digest().unwrap();
    let mut replay = StateMachine::new(MemoryStore::new());
    for (index, (timestamp, operation, results)) in batches.iter().enumerate() {
        if index + 1 == batches.len() {
            prop_assert_eq!(Some(replay.state_digest().unwrap()), digest_before_last);
        }
        prop_assert_eq!(&replay.apply(*timestamp, operation).unwrap(), results, "replay of batch {}", index);
    }
    prop_assert_eq!(replay.state_digest().unwrap(), digest);
    prop_assert_ne!(Some(digest), digest_before_last, "the last batch did not change the digest");

    // Runs: consecutive transfer batches prepared one after another against
    // a `Run` and committed as one write set decide and store what they do
    // one by one (a replica groups the entries it has at hand).
    let runs = replay_in_runs(&batches)?;
    prop_assert_eq!(state_digest(&runs).unwrap(), digest);
    prop_assert_eq!(stored_state_digest(&runs).unwrap(), digest);
    check_state(&runs, &model)?;
    check_histories(&runs, &model, &boundaries)?;
    check_trial_balances_as_of(&runs, &model, &as_of)?;
    Ok(())
}

/// Replays `batches` into a fresh store, each stretch of consecutive
/// `create_transfers` batches in runs of one to [`RUN_BATCHES_MAX`] (by position), every
/// batch's results checked against the recorded ones.
fn replay_in_runs(batches: &[(u64, Operation, OperationResults)]) -> Result<MemoryStore, TestCaseError> {
    let mut store = MemoryStore::new();
    let mut at = 0;
    while at < batches.len() {
        let (timestamp, operation, results) = &batches[at];
        let Operation::CreateTransfers(_) = operation else {
            let prepared = prepare(&store, *timestamp, operation).unwrap();
            prop_assert_eq!(&prepared.results, results, "batch {} alone", at);
            store.commit(&prepared.write_set).unwrap();
            at += 1;
            continue;
        };
        // A run's expected length only reserves room: some expect fewer
        // batches than they get, some more, some none.
        let mut run = if at % 2 == 0 { Run::new(&store) } else { Run::expecting(&store, at % (RUN_BATCHES_MAX + 3)) };
        // Empty, a run answers every read from its base; holding a batch,
        // it refuses the reads it cannot merge, naming the read.
        prop_assert!(run.for_each_account(&mut |_| {}).is_ok(), "an empty run reads its base");
        let length = 1 + at % RUN_BATCHES_MAX;
        while at < batches.len() && run.batches() < length {
            let (timestamp, operation, results) = &batches[at];
            let Operation::CreateTransfers(events) = operation else { break };
            let prepared = prepare_create_transfers(&run, *timestamp, events).unwrap();
            prop_assert_eq!(&OperationResults::Transfers(prepared.results), results, "batch {} in a run", at);
            // Its digest delta leaves the accounts to the run: no store
            // commits it alone, and a run takes no batch prepared elsewhere.
            let refused = MemoryStore::new().commit(&prepared.write_set).unwrap_err().to_string();
            prop_assert!(refused.contains("commit the run's merged write set"), "{}", refused);
            if run.batches() == 0 {
                let alone = prepare_create_transfers(&store, *timestamp, events).unwrap();
                let refused = run.push(alone.write_set).unwrap_err().to_string();
                prop_assert!(refused.contains("counts its accounts"), "{}", refused);
            }
            run.push(prepared.write_set).unwrap();
            let refused = run.for_each_account(&mut |_| {}).unwrap_err().to_string();
            prop_assert!(refused.contains("cannot answer every account"), "{}", refused);
            at += 1;
        }
        let merged = run.into_write_set().unwrap().unwrap();
        store.commit(&merged).unwrap();
    }
    Ok(store)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES_DEFAULT),
        max_shrink_iters: SHRINK_ITERS_MAX,
        // Only this file is ours to write: no regressions file beside it. A
        // failure prints the shrunk case instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_batch_agrees_with_the_reference_model(case in case_strategy()) {
        run_case(&case)?;
    }
}

/// The model test is only as good as the paths its cases reach: from a fixed
/// seed, the cases must draw every result code of every operation from the
/// library, and expire pending transfers.
#[test]
fn generator_reaches_every_result_code() {
    let mut runner = TestRunner::deterministic();
    let strategy = case_strategy();
    let mut ledger_results = BTreeSet::new();
    let mut account_results = BTreeSet::new();
    let mut transfer_results = BTreeSet::new();
    let mut period_results = BTreeSet::new();
    let mut expired = 0;
    for _ in 0..COVERAGE_CASES {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let mut machine = StateMachine::new(MemoryStore::new());
        let mut model = Model::default();
        let mut sent = Sent::default();
        for (index, step) in case.steps.iter().enumerate() {
            let timestamp = batch_timestamp(&case, index, &model);
            let operation = sent.resolve(&step.batch, &model);
            let results = machine.apply(timestamp, &operation).unwrap();
            model.apply(timestamp, &operation);
            sent.note_results(&operation, &results);
            match results {
                OperationResults::Ledgers(results) => ledger_results.extend(results),
                OperationResults::Accounts(results) => account_results.extend(results),
                OperationResults::Transfers(results) => transfer_results.extend(results),
                OperationResults::Expired(result) => expired += result.expired,
                OperationResults::Periods(results) => period_results.extend(results),
                OperationResults::Close(_) | OperationResults::Reconcile(_) => {
                    unreachable!("the model's batches never close or reconcile")
                }
            }
        }
    }
    // The results only a year-end close can cause are reached by tests/close.rs.
    assert_eq!(missing(SetPeriodResult::ALL, &period_results), [SetPeriodResult::CloseInProgress]);
    assert_eq!(missing(CreateLedgerResult::ALL, &ledger_results), []);
    assert_eq!(missing(CreateAccountResult::ALL, &account_results), [CreateAccountResult::LedgerPeriodClosing]);
    assert_eq!(missing(CreateTransferResult::ALL, &transfer_results), []);
    assert!(expired > 0, "no pending transfer ever expired");
}

/// The results in `all` that are not in `seen`.
fn missing<R: Copy + Ord>(all: &[R], seen: &BTreeSet<R>) -> Vec<R> {
    all.iter().filter(|result| !seen.contains(*result)).copied().collect()
}
