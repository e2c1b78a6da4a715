//! Preparing batches: the rules of the ledger.
//!
//! `prepare_*` reads a [`Store`], decides one result per event, and returns
//! the results with the [`WriteSet`] that makes them true. It reads no clock
//! and draws no random number: the batch `timestamp` is an argument (the Raft
//! entry's timestamp), and event `i` of a batch is stamped `timestamp + i`.
//! The same store and the same batch always give the same results and the
//! same write set.
//!
//! # Linked chains
//!
//! An event with the `linked` flag is chained to the next one; a chain ends
//! at the first event without it. A chain succeeds or fails as a whole. An
//! event succeeds when its result is `created` or `exists` (a safe retry
//! inside a chain does not break it). When one event of a chain fails:
//! every change of the chain's earlier events is undone and their `created`
//! becomes `linked_event_failed` (an `exists` stays if its record existed
//! before the chain, and becomes `linked_event_failed` if the record was
//! created earlier in the same chain), the failing event keeps its own
//! result, and every later event of the chain gets `linked_event_failed`. A batch whose last event
//! has `linked` leaves its chain open: that event gets
//! `linked_event_chain_open` and the chain fails.
//!
//! # Transfer checks, in precedence order
//!
//! The first rule an event breaks decides its result; the order is the order
//! of [`CreateTransferResult`]'s variants:
//!
//! 1. request shape: `timestamp` zero, no reserved flag bits, a usable `id`;
//! 2. idempotency: a transfer with this id exists (field by field, in
//!    variant order, then `exists`), or this id failed transiently before
//!    (`id_already_failed`);
//! 3. flag combinations;
//! 4. for a new transfer: usable and distinct account ids, `pending_id`
//!    zero, `timeout` only if pending, closing only if pending, non-zero
//!    amount, ledger and code; both accounts exist, share the transfer's
//!    ledger (a ledger that does not exist is named: `ledger_not_found`),
//!    have the kinds its `kind` requires, and are open; no balance
//!    overflows; no limit is exceeded (after `balancing_*` clamps the amount);
//! 5. for a post or void: a usable `pending_id`, no `timeout`; the pending
//!    transfer exists, is pending, matches every field the event sets, its
//!    amount covers the event's, it is still pending and not past its
//!    timeout; for a post, the accounts are open (unless this transfer closed
//!    them) and the posted balances do not overflow.
//!
//! A transfer's ledger's fiscal period is checked after the accounts (for
//! a post or void: after the pending transfer is found): a `closed` or
//! `closing` period refuses it (`ledger_period_closed`; a year-end close's
//! own transfers pass a `closing` one, see [`crate::close`]), an
//! `adjustment` period refuses it unless it is flagged `adjustment`.
//!
//! # Budget control
//!
//! A ledger with a [`BudgetPolicy`](crate::BudgetPolicy) refuses a new
//! transfer the policy controls (an expenditure, or a code in its range)
//! with `budget_leg_missing` unless its linked chain holds its budget leg: a
//! new transfer (not a post or void) of the same amount in the policy's
//! budget ledger. Legs are matched to the transfers that need them in
//! chain order, one each. The check comes last: an event that breaks
//! another rule gets that rule's result. The leg is an ordinary transfer,
//! so the limit flags of the budget ledger's accounts (appropriation,
//! allotment, commitment) bound it, and a leg refused fails the chain.
//!
//! Failures that depend on state which may change (not found, closed,
//! overflow, limit; see [`CreateTransferResult::is_transient`]) are recorded,
//! so a retry of that id gets `id_already_failed`: an id's outcome never
//! changes.

use crate::batch::{Batch, Savepoint};
use crate::close::{in_ranges, CloseRecord, CloseStep, YearClose, CLOSE_CODE_RANGES_MAX};
use crate::flags::{AccountFlags, TransferFlags};
use crate::ids::LedgerId;
use crate::model::{
    budget_warning, Account, Ledger, PendingState, PendingStatus, Period, PeriodChange, Transfer, BATCH_EVENTS_MAX,
    EXPIRE_EVENTS_MAX, LEDGER_CURRENCY_LEN_MAX, LEDGER_NAME_LEN_MAX, LEDGER_SCALE_MAX, NS_PER_S, WARN_PERCENT_MAX,
};
use crate::reconcile::{
    GroupKind, MatchGroup, ReconcileOp, Reconciliation, REASON_LEN_MAX, RECONCILED_TRANSFERS_MAX, STATEMENT_LINES_MAX,
    STATEMENT_TEXT_LEN_MAX,
};
use crate::results::{
    CloseResult, CreateAccountResult, CreateLedgerResult, CreateTransferResult, ReconcileResult, SetPeriodResult,
};
use crate::store::{Store, StoreError, WriteSet};

/// A failure of a whole batch: nothing was applied and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The batch has more events than [`BATCH_EVENTS_MAX`].
    #[error("batch has {events} events, more than the {max} allowed")]
    BatchTooLarge {
        /// Events in the batch.
        events: usize,
        /// The most allowed.
        max: usize,
    },
    /// The batch timestamp is not after the last event already applied.
    #[error("batch timestamp {timestamp} is not after the last applied event's timestamp {last_timestamp}")]
    TimestampNotIncreasing {
        /// The batch timestamp given.
        timestamp: u64,
        /// The last event timestamp in the store.
        last_timestamp: u64,
    },
    /// The batch's event timestamps would overflow `u64`.
    #[error("batch timestamp {timestamp} with {events} events overflows u64")]
    TimestampOverflow {
        /// The batch timestamp given.
        timestamp: u64,
        /// Events in the batch.
        events: usize,
    },
    /// The store failed or holds inconsistent state.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One operation of the state machine: the payload of a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create ledgers.
    CreateLedgers(Vec<Ledger>),
    /// Create accounts.
    CreateAccounts(Vec<Account>),
    /// Create transfers (including posts and voids of pending transfers).
    CreateTransfers(Vec<Transfer>),
    /// Expire the pending transfers whose timeout has passed by the entry's timestamp.
    ExpirePending,
    /// Move ledgers' fiscal periods forward.
    SetPeriods(Vec<PeriodChange>),
    /// One step of a year-end close.
    Close(CloseStep),
    /// Record a bank-statement reconciliation, or match by hand.
    Reconcile(Box<ReconcileOp>),
}

/// What `expire_pending` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExpireResult {
    /// Pending transfers expired.
    pub expired: u32,
    /// Whether more were due than one operation may expire.
    pub more: bool,
}

/// The results of one [`Operation`], one per event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationResults {
    /// Results of `CreateLedgers`.
    Ledgers(Vec<CreateLedgerResult>),
    /// Results of `CreateAccounts`.
    Accounts(Vec<CreateAccountResult>),
    /// Results of `CreateTransfers`.
    Transfers(Vec<CreateTransferResult>),
    /// Result of `ExpirePending`.
    Expired(ExpireResult),
    /// Results of `SetPeriods`.
    Periods(Vec<SetPeriodResult>),
    /// Result of a close's `Begin`, `Finish` or `Abort` (its `Post` has
    /// `Transfers` results).
    Close(CloseResult),
    /// Result of `Reconcile`.
    Reconcile(ReconcileResult),
}

/// A prepared batch: its results and the write set that makes them true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared<R> {
    /// One result per event.
    pub results: R,
    /// The changes to commit, atomically, to the store that was read.
    pub write_set: WriteSet,
}

/// Prepares any operation. See the module docs for the rules.
pub fn prepare<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
    operation: &Operation,
) -> Result<Prepared<OperationResults>, ApplyError> {
    fn wrap<R>(prepared: Prepared<R>, into: impl FnOnce(R) -> OperationResults) -> Prepared<OperationResults> {
        Prepared { results: into(prepared.results), write_set: prepared.write_set }
    }
    Ok(match operation {
        Operation::CreateLedgers(events) => {
            wrap(prepare_create_ledgers(store, timestamp, events)?, OperationResults::Ledgers)
        }
        Operation::CreateAccounts(events) => {
            wrap(prepare_create_accounts(store, timestamp, events)?, OperationResults::Accounts)
        }
        Operation::CreateTransfers(events) => {
            wrap(prepare_create_transfers(store, timestamp, events)?, OperationResults::Transfers)
        }
        Operation::ExpirePending => wrap(prepare_expire_pending(store, timestamp)?, OperationResults::Expired),
        Operation::SetPeriods(events) => {
            wrap(prepare_set_periods(store, timestamp, events)?, OperationResults::Periods)
        }
        Operation::Close(step) => prepare_close(store, timestamp, step)?,
        Operation::Reconcile(op) => {
            let last_timestamp = check_batch(store, timestamp, 1)?;
            let mut write_set = Batch::new(store, 1).into_write_set(timestamp, last_timestamp)?;
            let result = prepare_reconcile(store, timestamp, op, &mut write_set)?;
            Prepared { results: OperationResults::Reconcile(result), write_set }
        }
    })
}

/// Checks the batch size and timestamp; returns the last event timestamp the
/// batch will use (a batch of `n` events uses `timestamp .. timestamp + n`;
/// an empty one still uses `timestamp`).
fn check_batch<S: Store + ?Sized>(store: &S, timestamp: u64, events: usize) -> Result<u64, ApplyError> {
    if events > BATCH_EVENTS_MAX {
        return Err(ApplyError::BatchTooLarge { events, max: BATCH_EVENTS_MAX });
    }
    let last_timestamp = store.last_timestamp()?;
    if timestamp <= last_timestamp {
        return Err(ApplyError::TimestampNotIncreasing { timestamp, last_timestamp });
    }
    event_timestamp(timestamp, events.max(1) - 1).ok_or(ApplyError::TimestampOverflow { timestamp, events })
}

fn event_timestamp(timestamp: u64, index: usize) -> Option<u64> {
    timestamp.checked_add(u64::try_from(index).ok()?)
}

/// An event that may be linked into a chain: accounts and transfers.
trait ChainEvent: Sized {
    type Result: Copy + Eq;
    const CREATED: Self::Result;
    const LINKED_EVENT_FAILED: Self::Result;
    const LINKED_EVENT_CHAIN_OPEN: Self::Result;

    fn is_linked(&self) -> bool;
    fn is_success(result: Self::Result) -> bool;
    /// Applies the event at `timestamp` to the batch.
    fn apply<S: Store + ?Sized>(&self, batch: &mut Batch<'_, S>, timestamp: u64) -> Result<Self::Result, StoreError>;
    /// Whether a record with the event's id exists in the batch's state.
    fn exists<S: Store + ?Sized>(&self, batch: &mut Batch<'_, S>) -> Result<bool, StoreError>;
    /// Called once for each event that fails on its own account, after any rollback.
    fn failed<S: Store + ?Sized>(&self, _batch: &mut Batch<'_, S>, _result: Self::Result) {}
}

impl ChainEvent for Account {
    type Result = CreateAccountResult;
    const CREATED: Self::Result = CreateAccountResult::Created;
    const LINKED_EVENT_FAILED: Self::Result = CreateAccountResult::LinkedEventFailed;
    const LINKED_EVENT_CHAIN_OPEN: Self::Result = CreateAccountResult::LinkedEventChainOpen;

    fn is_linked(&self) -> bool {
        self.flags.contains(AccountFlags::LINKED)
    }
    fn is_success(result: Self::Result) -> bool {
        result.is_success()
    }
    fn apply<S: Store + ?Sized>(&self, batch: &mut Batch<'_, S>, timestamp: u64) -> Result<Self::Result, StoreError> {
        create_account(batch, timestamp, self)
    }
    fn exists<S: Store + ?Sized>(&self, batch: &mut Batch<'_, S>) -> Result<bool, StoreError> {
        Ok(batch.account(self.id)?.is_some())
    }
}

impl ChainEvent for Transfer {
    type Result = CreateTransferResult;
    const CREATED: Self::Result = CreateTransferResult::Created;
    const LINKED_EVENT_FAILED: Self::Result = CreateTransferResult::LinkedEventFailed;
    const LINKED_EVENT_CHAIN_OPEN: Self::Result = CreateTransferResult::LinkedEventChainOpen;

    fn is_linked(&self) -> bool {
        self.flags.contains(TransferFlags::LINKED)
    }
    fn is_success(result: Self::Result) -> bool {
        result.is_success()
    }
    fn apply<S: Store + ?Sized>(&self, batch: &mut Batch<'_, S>, timestamp: u64) -> Result<Self::Result, StoreError> {
        create_transfer(batch, timestamp, self)
    }
    fn exists<S: Store + ?Sized>(&self, batch: &mut Batch<'_, S>) -> Result<bool, StoreError> {
        Ok(batch.transfer(self.id)?.is_some())
    }
    fn failed<S: Store + ?Sized>(&self, batch: &mut Batch<'_, S>, result: Self::Result) {
        if result.is_transient() {
            batch.record_failure(self.id, result);
        }
    }
}

/// Applies every event, enforcing linked-chain atomicity (see the module
/// docs). After a rollback, an earlier `exists` whose record was created
/// earlier in the failed chain no longer holds and becomes
/// `linked_event_failed` too.
///
/// `late[i]`, if set, is a refusal of event `i` that comes after every
/// other rule: it replaces the event's `created` (whose changes are undone).
fn run_chains<S: Store + ?Sized, E: ChainEvent>(
    batch: &mut Batch<'_, S>,
    events: &[E],
    timestamp: u64,
    late: &[Option<E::Result>],
) -> Result<Vec<E::Result>, ApplyError> {
    let mut results = Vec::with_capacity(events.len());
    let mut chain: Option<(usize, Savepoint)> = None;
    let mut chain_failed = false;
    for (index, event) in events.iter().enumerate() {
        let linked = event.is_linked();
        if chain.is_none() && linked {
            chain = Some((index, batch.begin_chain()));
        }
        let result = if chain_failed {
            E::LINKED_EVENT_FAILED
        } else if linked && index + 1 == events.len() {
            E::LINKED_EVENT_CHAIN_OPEN
        } else {
            // check_batch proved every event timestamp fits in u64.
            let event_timestamp = timestamp + index as u64;
            match late.get(index).copied().flatten() {
                None => event.apply(batch, event_timestamp)?,
                Some(refusal) => {
                    // Inside a chain, the chain's rollback below undoes the
                    // event; alone, it needs a savepoint of its own.
                    let alone = chain.is_none().then(|| batch.begin_chain());
                    let result = event.apply(batch, event_timestamp)?;
                    let result = if result == E::CREATED { refusal } else { result };
                    if let Some(savepoint) = alone {
                        if result == refusal {
                            batch.rollback(&savepoint);
                        }
                        batch.end_chain();
                    }
                    result
                }
            }
        };
        if !chain_failed && !E::is_success(result) {
            if let Some((start, savepoint)) = &chain {
                chain_failed = true;
                batch.rollback(savepoint);
                for (earlier, event) in results.iter_mut().zip(events).skip(*start) {
                    if *earlier == E::CREATED || !event.exists(batch)? {
                        *earlier = E::LINKED_EVENT_FAILED;
                    }
                }
            }
            event.failed(batch, result);
        }
        results.push(result);
        if !linked && chain.is_some() {
            chain = None;
            chain_failed = false;
            batch.end_chain();
        }
    }
    batch.end_chain();
    Ok(results)
}

/// Prepares a `create_ledgers` batch. Ledgers are not linked: each event
/// stands alone.
pub fn prepare_create_ledgers<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
    events: &[Ledger],
) -> Result<Prepared<Vec<CreateLedgerResult>>, ApplyError> {
    let last_timestamp = check_batch(store, timestamp, events.len())?;
    let mut batch = Batch::new(store, events.len());
    let mut results = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let result = create_ledger(&mut batch, timestamp + index as u64, event)?;
        results.push(result);
    }
    Ok(Prepared { results, write_set: batch.into_write_set(timestamp, last_timestamp)? })
}

fn create_ledger<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    timestamp: u64,
    l: &Ledger,
) -> Result<CreateLedgerResult, StoreError> {
    use CreateLedgerResult as R;
    if l.timestamp != 0 {
        return Ok(R::TimestampMustBeZero);
    }
    if l.id.0 == 0 {
        return Ok(R::IdMustNotBeZero);
    }
    if l.id.0 == u32::MAX {
        return Ok(R::IdMustNotBeIntMax);
    }
    if let Some(existing) = batch.ledger(l.id)? {
        return Ok(if l.currency != existing.currency {
            R::ExistsWithDifferentCurrency
        } else if l.scale != existing.scale {
            R::ExistsWithDifferentScale
        } else if l.name != existing.name {
            R::ExistsWithDifferentName
        } else if l.budget != existing.budget || l.warn_percent != existing.warn_percent {
            R::ExistsWithDifferentBudget
        } else {
            R::Exists
        });
    }
    let currency_valid = !l.currency.is_empty()
        && l.currency.len() <= LEDGER_CURRENCY_LEN_MAX
        && l.currency.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !currency_valid {
        return Ok(R::CurrencyMustBeValid);
    }
    if l.scale > LEDGER_SCALE_MAX {
        return Ok(R::ScaleMustNotExceedMax);
    }
    if l.name.is_empty() {
        return Ok(R::NameMustNotBeEmpty);
    }
    if l.name.len() > LEDGER_NAME_LEN_MAX {
        return Ok(R::NameTooLong);
    }
    if l.period != Period::Open || l.close.is_some() {
        return Ok(R::PeriodMustBeOpen);
    }
    let budget = &l.budget;
    if budget.is_set() && budget.ledger == l.id {
        return Ok(R::BudgetLedgerMustBeDifferent);
    }
    let codes_valid = match (budget.code_min, budget.code_max) {
        (0, 0) => true,
        (0, _) => false,
        (min, max) => budget.is_set() && min <= max,
    };
    if !codes_valid {
        return Ok(R::BudgetCodesMustBeValid);
    }
    if budget.is_set() && batch.ledger(budget.ledger)?.is_none() {
        return Ok(R::BudgetLedgerNotFound);
    }
    if l.warn_percent > WARN_PERCENT_MAX {
        return Ok(R::WarnPercentMustNotExceedMax);
    }
    batch.insert_ledger(Ledger { timestamp, ..l.clone() });
    Ok(R::Created)
}

/// Prepares a `create_accounts` batch.
pub fn prepare_create_accounts<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
    events: &[Account],
) -> Result<Prepared<Vec<CreateAccountResult>>, ApplyError> {
    let last_timestamp = check_batch(store, timestamp, events.len())?;
    let mut batch = Batch::new(store, events.len());
    let results = run_chains(&mut batch, events, timestamp, &[])?;
    Ok(Prepared { results, write_set: batch.into_write_set(timestamp, last_timestamp)? })
}

fn create_account<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    timestamp: u64,
    a: &Account,
) -> Result<CreateAccountResult, StoreError> {
    use CreateAccountResult as R;
    if a.timestamp != 0 {
        return Ok(R::TimestampMustBeZero);
    }
    if a.flags.has_reserved_bits() {
        return Ok(R::ReservedFlag);
    }
    if a.id.0 == 0 {
        return Ok(R::IdMustNotBeZero);
    }
    if a.id.0 == u128::MAX {
        return Ok(R::IdMustNotBeIntMax);
    }
    if let Some(e) = batch.account(a.id)? {
        // `closed` changes over an account's life, so it is not compared.
        let flags_differ = a.flags.without(AccountFlags::CLOSED) != e.flags.without(AccountFlags::CLOSED);
        return Ok(if flags_differ {
            R::ExistsWithDifferentFlags
        } else if a.user_data_128 != e.user_data_128 {
            R::ExistsWithDifferentUserData128
        } else if a.user_data_64 != e.user_data_64 {
            R::ExistsWithDifferentUserData64
        } else if a.user_data_32 != e.user_data_32 {
            R::ExistsWithDifferentUserData32
        } else if a.ledger != e.ledger {
            R::ExistsWithDifferentLedger
        } else if a.code != e.code {
            R::ExistsWithDifferentCode
        } else if a.kind != e.kind {
            R::ExistsWithDifferentKind
        } else {
            R::Exists
        });
    }
    let both_limits = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    if a.flags.contains(both_limits) {
        return Ok(R::FlagsAreMutuallyExclusive);
    }
    if a.debits_pending != 0 {
        return Ok(R::DebitsPendingMustBeZero);
    }
    if a.debits_posted != 0 {
        return Ok(R::DebitsPostedMustBeZero);
    }
    if a.credits_pending != 0 {
        return Ok(R::CreditsPendingMustBeZero);
    }
    if a.credits_posted != 0 {
        return Ok(R::CreditsPostedMustBeZero);
    }
    if a.ledger.0 == 0 {
        return Ok(R::LedgerMustNotBeZero);
    }
    if a.code == 0 {
        return Ok(R::CodeMustNotBeZero);
    }
    match batch.ledger_rules(a.ledger)? {
        None => return Ok(R::LedgerNotFound),
        Some(rules) if rules.period == Period::Closing => return Ok(R::LedgerPeriodClosing),
        Some(_) => {}
    }
    let slot = batch.account_slot(a.id)?;
    batch.insert_account_at(slot, Account { timestamp, ..*a });
    Ok(R::Created)
}

/// Prepares a `create_transfers` batch. See the module docs for the rules.
pub fn prepare_create_transfers<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
    events: &[Transfer],
) -> Result<Prepared<Vec<CreateTransferResult>>, ApplyError> {
    let last_timestamp = check_batch(store, timestamp, events.len())?;
    let mut batch = Batch::new(store, events.len());
    let ids: Vec<crate::TransferId> = events.iter().map(|t| t.id).filter(|id| id.0 != 0 && id.0 != u128::MAX).collect();
    batch.learn_unused_ids(&ids)?;
    let late = missing_budget_legs(&mut batch, events)?;
    let results = run_chains(&mut batch, events, timestamp, &late)?;
    Ok(Prepared { results, write_set: batch.into_write_set(timestamp, last_timestamp)? })
}

/// `budget_leg_missing` for each new transfer whose ledger's budget policy
/// controls it and whose linked chain holds no leg for it (see the module
/// docs); empty when no event is controlled.
fn missing_budget_legs<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    events: &[Transfer],
) -> Result<Vec<Option<CreateTransferResult>>, StoreError> {
    let mut late = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let end = events[start..]
            .iter()
            .position(|t| !t.flags.contains(TransferFlags::LINKED))
            .map_or(events.len(), |at| start + at + 1);
        let chain = &events[start..end];
        let mut needs: Vec<(usize, LedgerId)> = Vec::new();
        for (offset, t) in chain.iter().enumerate() {
            if t.flags.is_post_or_void() || t.ledger.0 == 0 {
                continue;
            }
            if let Some(rules) = batch.ledger_rules(t.ledger)? {
                if rules.budget.needs_leg(t.kind, t.code) {
                    needs.push((offset, rules.budget.ledger));
                }
            }
        }
        if !needs.is_empty() {
            let mut used = vec![false; chain.len()];
            for (offset, budget_ledger) in needs {
                let amount = chain[offset].amount;
                let leg = (0..chain.len()).find(|&other| {
                    let leg = &chain[other];
                    other != offset
                        && !used[other]
                        && leg.ledger == budget_ledger
                        && leg.amount == amount
                        && !leg.flags.is_post_or_void()
                });
                match leg {
                    Some(other) => used[other] = true,
                    None => {
                        late.resize(events.len(), None);
                        late[start + offset] = Some(CreateTransferResult::BudgetLegMissing);
                    }
                }
            }
        }
        start = end;
    }
    Ok(late)
}

/// The refusal of a transfer on `ledger` by the ledger's fiscal period, if
/// any (`flags`: the transfer event's).
fn period_refusal<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    ledger: LedgerId,
    flags: TransferFlags,
) -> Result<Option<CreateTransferResult>, StoreError> {
    Ok(match batch.ledger_rules(ledger)?.map(|rules| rules.period) {
        Some(Period::Closing) if batch.admits_closing(ledger) => None,
        Some(Period::Closed | Period::Closing) => Some(CreateTransferResult::LedgerPeriodClosed),
        Some(Period::Adjustment) if !flags.contains(TransferFlags::ADJUSTMENT) => {
            Some(CreateTransferResult::LedgerPeriodInAdjustment)
        }
        _ => None,
    })
}

/// Prepares a `set_periods` batch: each event moves one ledger's period
/// forward and stands alone.
pub fn prepare_set_periods<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
    events: &[PeriodChange],
) -> Result<Prepared<Vec<SetPeriodResult>>, ApplyError> {
    use SetPeriodResult as R;
    let last_timestamp = check_batch(store, timestamp, events.len())?;
    let mut batch = Batch::new(store, events.len());
    let mut results = Vec::with_capacity(events.len());
    for event in events {
        let result = if event.ledger.0 == 0 {
            R::LedgerMustNotBeZero
        } else {
            match batch.ledger(event.ledger)? {
                None => R::LedgerNotFound,
                Some(ledger) if (ledger.period == Period::Closing) != (event.period == Period::Closing) => {
                    match ledger.period == Period::Closing {
                        true => R::CloseInProgress,
                        false if ledger.period == Period::Closed => R::PeriodCannotReopen,
                        false => R::CloseInProgress,
                    }
                }
                Some(ledger) if ledger.period == event.period => R::Unchanged,
                Some(ledger) if event.period < ledger.period => R::PeriodCannotReopen,
                Some(_) if event.period == Period::Closed && has_pending(store, event.ledger)? => {
                    R::PendingTransfersOpen
                }
                Some(ledger) => {
                    batch.put_ledger(Ledger { period: event.period, ..ledger });
                    R::Changed
                }
            }
        };
        results.push(result);
    }
    Ok(Prepared { results, write_set: batch.into_write_set(timestamp, last_timestamp)? })
}

/// Whether any pending transfer of `ledger` still reserves an amount (read
/// from the ledger's running totals: one row per account code).
fn has_pending<S: Store + ?Sized>(store: &S, ledger: LedgerId) -> Result<bool, StoreError> {
    Ok(store.ledger_totals(ledger)?.iter().any(|totals| totals.debits_pending != Default::default()))
}

/// Prepares one step of a year-end close (see [`crate::close`]): `Post`
/// is a `create_transfers` batch that the closing year accepts; `Begin`,
/// `Finish` and `Abort` are one event each, reading a bounded number of
/// records (two ledgers, two accounts, the year's totals per code).
pub fn prepare_close<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
    step: &CloseStep,
) -> Result<Prepared<OperationResults>, ApplyError> {
    if let CloseStep::Post { ledger, transfers } = step {
        let last_timestamp = check_batch(store, timestamp, transfers.len())?;
        let mut batch = Batch::new(store, transfers.len());
        batch.admit_closing(*ledger);
        let late = missing_budget_legs(&mut batch, transfers)?;
        let results = run_chains(&mut batch, transfers, timestamp, &late)?;
        count_posted(&mut batch, *ledger, transfers, &results)?;
        let write_set = batch.into_write_set(timestamp, last_timestamp)?;
        return Ok(Prepared { results: OperationResults::Transfers(results), write_set });
    }
    let last_timestamp = check_batch(store, timestamp, 1)?;
    let mut batch = Batch::new(store, 1);
    let result = match step {
        CloseStep::Begin(close) => begin_close(&mut batch, timestamp, close)?,
        CloseStep::Finish { ledger, transfers } => finish_close(&mut batch, timestamp, *ledger, *transfers)?,
        CloseStep::Abort { ledger } => abort_close(&mut batch, *ledger)?,
        CloseStep::Post { .. } => unreachable!("a post returned above"),
    };
    Ok(Prepared {
        results: OperationResults::Close(result),
        write_set: batch.into_write_set(timestamp, last_timestamp)?,
    })
}

/// Adds the transfers a close's `Post` created (in the year or the next) to
/// the close's record.
fn count_posted<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    ledger: LedgerId,
    transfers: &[Transfer],
    results: &[CreateTransferResult],
) -> Result<(), StoreError> {
    let Some(mut year) = batch.ledger(ledger)? else { return Ok(()) };
    let Some(record) = year.close.as_mut() else { return Ok(()) };
    let ours = |t: &Transfer| t.ledger == ledger || t.ledger == record.close.next_ledger;
    let created = transfers
        .iter()
        .zip(results)
        .filter(|(t, result)| **result == CreateTransferResult::Created && ours(t))
        .count() as u64;
    if created > 0 && year.period == Period::Closing {
        record.posted = record.posted.saturating_add(created);
        batch.put_ledger(year);
    }
    Ok(())
}

/// Whether a close's code ranges are well formed: at most
/// [`CLOSE_CODE_RANGES_MAX`], non-zero codes, `min <= max`.
fn ranges_valid(ranges: &[crate::close::CodeRange]) -> bool {
    ranges.len() <= CLOSE_CODE_RANGES_MAX && ranges.iter().all(|range| range.min != 0 && range.min <= range.max)
}

/// The refusal of close `c` by its request fields alone, if any.
fn close_shape_refusal(c: &YearClose) -> Option<CloseResult> {
    use CloseResult as R;
    if c.next_ledger.0 == 0 || c.next_ledger == c.ledger {
        return Some(R::NextLedgerMustBeDifferent);
    }
    if c.code == 0 {
        return Some(R::CodeMustNotBeZero);
    }
    if c.nominal.is_empty() || !ranges_valid(&c.nominal) {
        return Some(R::NominalCodesMustBeValid);
    }
    let shared = c.carry.iter().any(|carry| c.nominal.iter().any(|nominal| nominal.overlaps(*carry)));
    if !ranges_valid(&c.carry) || shared {
        return Some(R::CarryCodesMustBeValid);
    }
    if c.account_offset == 0 {
        return Some(R::AccountOffsetMustNotBeZero);
    }
    None
}

fn begin_close<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    timestamp: u64,
    c: &YearClose,
) -> Result<CloseResult, StoreError> {
    use CloseResult as R;
    if c.ledger.0 == 0 {
        return Ok(R::LedgerMustNotBeZero);
    }
    let Some(year) = batch.ledger(c.ledger)? else { return Ok(R::LedgerNotFound) };
    match (&year.close, year.period) {
        (Some(record), Period::Closed) if record.close == *c => return Ok(R::Exists),
        (Some(record), Period::Closing) if record.close == *c => return Ok(R::Resumed),
        (Some(_), _) => return Ok(R::CloseDiffers),
        (None, Period::Closed) => return Ok(R::LedgerPeriodClosed),
        (None, _) => {}
    }
    if has_pending(batch.store(), c.ledger)? {
        return Ok(R::PendingTransfersOpen);
    }
    if let Some(refusal) = close_shape_refusal(c) {
        return Ok(refusal);
    }
    let Some(next) = batch.ledger(c.next_ledger)? else { return Ok(R::NextLedgerNotFound) };
    if next.period != Period::Open {
        return Ok(R::NextLedgerMustBeOpen);
    }
    if next.currency != year.currency || next.scale != year.scale {
        return Ok(R::NextLedgerCurrencyDiffers);
    }
    let journal = crate::model::TransferKind::Journal;
    if year.budget.needs_leg(journal, c.code) || next.budget.needs_leg(journal, c.code) {
        return Ok(R::CodeUnderBudgetControl);
    }
    let totals = batch.store().ledger_totals(c.ledger)?;
    let accounts = totals.iter().map(|code| code.accounts).sum::<u64>();
    // Closing ids: first .. first + accounts; opening ids: the next `accounts`.
    let last_id = accounts.checked_mul(2).and_then(|ids| c.first_transfer_id.checked_add(u128::from(ids)));
    if c.first_transfer_id == 0 || last_id.is_none_or(|last| last == u128::MAX) {
        return Ok(R::FirstTransferIdMustBeValid);
    }
    let unlimited = |account: &Account| {
        !account.flags.intersects(
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS
                | AccountFlags::CLOSED,
        )
    };
    let Some(position) = batch.account(c.net_position)? else { return Ok(R::NetPositionNotFound) };
    if position.ledger != c.ledger {
        return Ok(R::NetPositionMustBeInLedger);
    }
    if in_ranges(&c.nominal, position.code) {
        return Ok(R::NetPositionMustNotBeNominal);
    }
    if !unlimited(&position) {
        return Ok(R::NetPositionMustBeUnlimited);
    }
    let Some(opening) = batch.account(c.opening_account)? else { return Ok(R::OpeningAccountNotFound) };
    if opening.ledger != c.next_ledger {
        return Ok(R::OpeningAccountMustBeInNextLedger);
    }
    if !unlimited(&opening) {
        return Ok(R::OpeningAccountMustBeUnlimited);
    }
    let record = CloseRecord {
        close: c.clone(),
        accounts,
        reopen_to: year.period,
        begun_at: timestamp,
        posted: 0,
        finished_at: 0,
    };
    batch.put_ledger(Ledger { period: Period::Closing, close: Some(record), ..year });
    Ok(R::Begun)
}

fn finish_close<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    timestamp: u64,
    ledger: LedgerId,
    transfers: u64,
) -> Result<CloseResult, StoreError> {
    use CloseResult as R;
    if ledger.0 == 0 {
        return Ok(R::LedgerMustNotBeZero);
    }
    let Some(mut year) = batch.ledger(ledger)? else { return Ok(R::LedgerNotFound) };
    let Some(record) = year.close.as_mut() else { return Ok(R::NotClosing) };
    match year.period {
        Period::Closed => return Ok(R::Exists),
        Period::Closing => {}
        _ => return Ok(R::NotClosing),
    }
    let totals = batch.store().ledger_totals(ledger)?;
    let remains = totals
        .iter()
        .any(|code| in_ranges(&record.close.nominal, code.code) && code.debits_posted != code.credits_posted);
    if remains {
        return Ok(R::NominalBalanceRemains);
    }
    if record.posted < transfers {
        return Ok(R::TransfersMissing);
    }
    record.finished_at = timestamp;
    year.period = Period::Closed;
    batch.put_ledger(year);
    Ok(R::Finished)
}

fn abort_close<S: Store + ?Sized>(batch: &mut Batch<'_, S>, ledger: LedgerId) -> Result<CloseResult, StoreError> {
    use CloseResult as R;
    if ledger.0 == 0 {
        return Ok(R::LedgerMustNotBeZero);
    }
    let Some(year) = batch.ledger(ledger)? else { return Ok(R::LedgerNotFound) };
    let (Some(record), Period::Closing) = (&year.close, year.period) else { return Ok(R::NotClosing) };
    if record.posted > 0 {
        return Ok(R::AlreadyPosted);
    }
    let period = record.reopen_to;
    batch.put_ledger(Ledger { period, close: None, ..year });
    Ok(R::Aborted)
}

/// Prepares a reconciliation operation (see [`crate::reconcile`]): checks
/// it against the account and the account's statements, and adds the record
/// to `write_set`. Reads one account and at most two reconciliations.
fn prepare_reconcile<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
    op: &ReconcileOp,
    write_set: &mut WriteSet,
) -> Result<ReconcileResult, StoreError> {
    use ReconcileResult as R;
    match op {
        ReconcileOp::Record(record) => {
            let mut record = record.clone();
            record.sort_groups();
            let result = check_record(store, &record)?;
            if result == R::Recorded || result == R::Rerun {
                let runs = store.reconciliation(record.account, &record.statement)?.map_or(0, |old| old.runs);
                let latest = store.latest_reconciliation(record.account)?;
                if latest.is_none_or(|latest| latest.to_date <= record.to_date) {
                    write_set.latest_statements.push((record.account, record.statement.clone()));
                }
                write_set.reconciliations.push(Reconciliation { runs: runs + 1, timestamp, ..*record });
            }
            Ok(result)
        }
        ReconcileOp::Match { account, statement, lines, transfers, reason, by } => {
            let Some(mut record) = store.reconciliation(*account, statement)? else {
                return Ok(R::ReconciliationNotFound);
            };
            if reason.is_empty() || reason.len() > REASON_LEN_MAX || by.len() > REASON_LEN_MAX {
                return Ok(R::ReasonMustNotBeEmpty);
            }
            if lines.is_empty() && transfers.is_empty() {
                return Ok(R::NothingToMatch);
            }
            let result = match_by_hand(store, &mut record, lines, transfers)?;
            if result == R::Matched {
                let group = MatchGroup {
                    kind: GroupKind::Manual,
                    lines: lines.clone(),
                    transfers: transfers.clone(),
                    reason: reason.clone(),
                    by: by.clone(),
                };
                record.groups.push(group);
                record.sort_groups();
                record.timestamp = timestamp;
                write_set.reconciliations.push(record);
            }
            Ok(result)
        }
    }
}

/// Whether `record` may be kept: `recorded`, `rerun` or `unchanged`, or
/// why not.
fn check_record<S: Store + ?Sized>(store: &S, record: &Reconciliation) -> Result<ReconcileResult, StoreError> {
    use ReconcileResult as R;
    let Some(account) = store.account(record.account)? else { return Ok(R::AccountNotFound) };
    if account.kind != crate::model::AccountKind::Cash {
        return Ok(R::AccountNotCash);
    }
    let text_ok = |text: &str| text.len() <= STATEMENT_TEXT_LEN_MAX;
    if record.statement.is_empty() || !text_ok(&record.statement) || !record.lines.iter().all(|l| text_ok(&l.reference))
    {
        return Ok(R::StatementIdInvalid);
    }
    let transfers = record.unmatched_transfers.len() + record.groups.iter().map(|g| g.transfers.len()).sum::<usize>();
    if record.lines.len() > STATEMENT_LINES_MAX || transfers > RECONCILED_TRANSFERS_MAX {
        return Ok(R::TooManyLines);
    }
    if let Some(existing) = store.reconciliation(record.account, &record.statement)? {
        return Ok(if existing.same_outcome(record) { R::Unchanged } else { R::Rerun });
    }
    if let Some(latest) = store.latest_reconciliation(record.account)? {
        if record.to_date < latest.to_date {
            return Ok(R::StatementBeforePrevious);
        }
        if record.opening != latest.closing {
            return Ok(R::OpeningBalanceDiscontinuous);
        }
    }
    Ok(R::Recorded)
}

/// Takes `lines` and `transfers` out of `record`'s mismatches and
/// unmatched transfers, for a manual match; `matched` or why not. A
/// transfer the reconciliation does not list (posted after the import) may
/// be named if it is one of the account's.
fn match_by_hand<S: Store + ?Sized>(
    store: &S,
    record: &mut Reconciliation,
    lines: &[u32],
    transfers: &[crate::ids::TransferId],
) -> Result<ReconcileResult, StoreError> {
    use ReconcileResult as R;
    for line in lines {
        if !record.lines.iter().any(|l| l.index == *line) {
            return Ok(R::LineNotFound);
        }
        let taken = record.groups.iter().any(|g| g.kind != GroupKind::Mismatch && g.lines.contains(line));
        if taken {
            return Ok(R::LineAlreadyMatched);
        }
    }
    let mismatched = |id: &crate::ids::TransferId| {
        record.groups.iter().any(|g| g.kind == GroupKind::Mismatch && g.transfers.contains(id))
    };
    for id in transfers {
        let matched = record.groups.iter().any(|g| g.kind != GroupKind::Mismatch && g.transfers.contains(id));
        if matched {
            return Ok(R::TransferNotUnmatched);
        }
        if record.unmatched_transfers.contains(id) || mismatched(id) {
            continue;
        }
        let ours = store.transfer(*id)?.is_some_and(|t| {
            !t.flags.intersects(TransferFlags::PENDING | TransferFlags::VOID_PENDING)
                && (t.debit_account_id == record.account || t.credit_account_id == record.account)
        });
        if !ours {
            return Ok(R::TransferNotUnmatched);
        }
    }
    // A mismatch one of them was in is dissolved: what it held and this
    // match does not take becomes unmatched again.
    let dissolved: Vec<MatchGroup> = record
        .groups
        .iter()
        .filter(|g| {
            g.kind == GroupKind::Mismatch
                && (g.lines.iter().any(|l| lines.contains(l)) || g.transfers.iter().any(|t| transfers.contains(t)))
        })
        .cloned()
        .collect();
    record.groups.retain(|g| !dissolved.contains(g));
    for group in dissolved {
        let freed = group.transfers.into_iter().filter(|t| !transfers.contains(t));
        record.unmatched_transfers.extend(freed);
    }
    record.unmatched_transfers.retain(|id| !transfers.contains(id));
    record.unmatched_transfers.sort_unstable();
    Ok(R::Matched)
}

fn create_transfer<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    timestamp: u64,
    t: &Transfer,
) -> Result<CreateTransferResult, StoreError> {
    use CreateTransferResult as R;
    if t.timestamp != 0 {
        return Ok(R::TimestampMustBeZero);
    }
    if t.flags.has_reserved_bits() {
        return Ok(R::ReservedFlag);
    }
    if t.id.0 == 0 {
        return Ok(R::IdMustNotBeZero);
    }
    if t.id.0 == u128::MAX {
        return Ok(R::IdMustNotBeIntMax);
    }
    if let Some(existing) = batch.transfer(t.id)? {
        let posts_all = t.flags.contains(TransferFlags::POST_PENDING) && t.amount == Transfer::AMOUNT_MAX;
        let pending_amount = match posts_all {
            true => batch.transfer(existing.pending_id)?.map(|pending| pending.amount),
            false => None,
        };
        return Ok(compare_existing_transfer(t, &existing, pending_amount));
    }
    if batch.transfer_failed(t.id)? {
        return Ok(R::IdAlreadyFailed);
    }
    if flags_are_mutually_exclusive(t.flags) {
        return Ok(R::FlagsAreMutuallyExclusive);
    }
    if t.flags.is_post_or_void() {
        post_or_void_pending(batch, timestamp, t)
    } else {
        create_new_transfer(batch, timestamp, t)
    }
}

fn flags_are_mutually_exclusive(flags: TransferFlags) -> bool {
    use TransferFlags as F;
    let post = flags.contains(F::POST_PENDING);
    let void = flags.contains(F::VOID_PENDING);
    let not_with_post_or_void =
        F::PENDING | F::BALANCING_DEBIT | F::BALANCING_CREDIT | F::CLOSING_DEBIT | F::CLOSING_CREDIT;
    (post && void) || ((post || void) && flags.intersects(not_with_post_or_void))
}

/// The result for a retry of an existing transfer `e` by event `t`. For a
/// post or void, fields the event leaves zero were inherited from the pending
/// transfer and match anything. A post of `AMOUNT_MAX` asks for the whole
/// `pending_amount` (the amount of `e`'s pending transfer), so it matches only
/// a post of all of it; a void's amount was checked when it was created and
/// `0` or `AMOUNT_MAX` stand for the pending amount. For a balancing transfer,
/// the stored amount may be smaller than the one asked for.
fn compare_existing_transfer(t: &Transfer, e: &Transfer, pending_amount: Option<u128>) -> CreateTransferResult {
    use CreateTransferResult as R;
    let inherits = t.flags.is_post_or_void();
    let differs_u128 = |asked: u128, stored: u128| asked != stored && !(inherits && asked == 0);
    let differs_u64 = |asked: u64, stored: u64| asked != stored && !(inherits && asked == 0);
    let differs_u32 = |asked: u32, stored: u32| asked != stored && !(inherits && asked == 0);
    let amount_differs = if t.flags.contains(TransferFlags::POST_PENDING) {
        let asked = if t.amount == Transfer::AMOUNT_MAX { pending_amount } else { Some(t.amount) };
        asked != Some(e.amount)
    } else if t.flags.contains(TransferFlags::VOID_PENDING) {
        t.amount != Transfer::AMOUNT_MAX && t.amount != 0 && t.amount != e.amount
    } else if t.flags.intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT) {
        t.amount < e.amount
    } else {
        t.amount != e.amount
    };
    if t.flags != e.flags {
        R::ExistsWithDifferentFlags
    } else if t.pending_id != e.pending_id {
        R::ExistsWithDifferentPendingId
    } else if t.timeout != e.timeout {
        R::ExistsWithDifferentTimeout
    } else if differs_u128(t.debit_account_id.0, e.debit_account_id.0) {
        R::ExistsWithDifferentDebitAccountId
    } else if differs_u128(t.credit_account_id.0, e.credit_account_id.0) {
        R::ExistsWithDifferentCreditAccountId
    } else if amount_differs {
        R::ExistsWithDifferentAmount
    } else if differs_u128(t.user_data_128, e.user_data_128) {
        R::ExistsWithDifferentUserData128
    } else if differs_u64(t.user_data_64, e.user_data_64) {
        R::ExistsWithDifferentUserData64
    } else if differs_u32(t.user_data_32, e.user_data_32) {
        R::ExistsWithDifferentUserData32
    } else if differs_u32(t.ledger.0, e.ledger.0) {
        R::ExistsWithDifferentLedger
    } else if differs_u32(u32::from(t.code), u32::from(e.code)) {
        R::ExistsWithDifferentCode
    } else if t.kind != e.kind {
        R::ExistsWithDifferentKind
    } else {
        R::Exists
    }
}

fn create_new_transfer<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    timestamp: u64,
    t: &Transfer,
) -> Result<CreateTransferResult, StoreError> {
    use CreateTransferResult as R;
    use TransferFlags as F;
    if t.debit_account_id.0 == 0 {
        return Ok(R::DebitAccountIdMustNotBeZero);
    }
    if t.debit_account_id.0 == u128::MAX {
        return Ok(R::DebitAccountIdMustNotBeIntMax);
    }
    if t.credit_account_id.0 == 0 {
        return Ok(R::CreditAccountIdMustNotBeZero);
    }
    if t.credit_account_id.0 == u128::MAX {
        return Ok(R::CreditAccountIdMustNotBeIntMax);
    }
    if t.debit_account_id == t.credit_account_id {
        return Ok(R::AccountsMustBeDifferent);
    }
    if t.pending_id.0 != 0 {
        return Ok(R::PendingIdMustBeZero);
    }
    let pending = t.flags.contains(F::PENDING);
    if !pending && t.timeout != 0 {
        return Ok(R::TimeoutReservedForPendingTransfer);
    }
    if !pending && t.flags.intersects(F::CLOSING_DEBIT | F::CLOSING_CREDIT) {
        return Ok(R::ClosingTransferMustBePending);
    }
    if t.amount == 0 {
        return Ok(R::AmountMustNotBeZero);
    }
    if t.ledger.0 == 0 {
        return Ok(R::LedgerMustNotBeZero);
    }
    if t.code == 0 {
        return Ok(R::CodeMustNotBeZero);
    }
    let dr_slot = batch.account_slot(t.debit_account_id)?;
    let Some(mut dr) = batch.account_at(dr_slot) else {
        return Ok(R::DebitAccountNotFound);
    };
    let cr_slot = batch.account_slot(t.credit_account_id)?;
    let Some(mut cr) = batch.account_at(cr_slot) else {
        return Ok(R::CreditAccountNotFound);
    };
    if dr.ledger != cr.ledger {
        return Ok(R::AccountsMustHaveTheSameLedger);
    }
    if t.ledger != dr.ledger {
        if batch.ledger_rules(t.ledger)?.is_none() {
            return Ok(R::LedgerNotFound);
        }
        return Ok(R::TransferMustHaveTheSameLedgerAsAccounts);
    }
    let (debit_kind, credit_kind) = t.kind.required_kinds();
    if debit_kind.is_some_and(|kind| kind != dr.kind) {
        return Ok(R::DebitAccountHasWrongKind);
    }
    if credit_kind.is_some_and(|kind| kind != cr.kind) {
        return Ok(R::CreditAccountHasWrongKind);
    }
    if let Some(refusal) = period_refusal(batch, t.ledger, t.flags)? {
        return Ok(refusal);
    }
    // A year-end close zeroes closed accounts too.
    let closing = batch.admits_closing(t.ledger);
    if dr.flags.contains(AccountFlags::CLOSED) && !closing {
        return Ok(R::DebitAccountAlreadyClosed);
    }
    if cr.flags.contains(AccountFlags::CLOSED) && !closing {
        return Ok(R::CreditAccountAlreadyClosed);
    }

    let mut amount = t.amount;
    if t.flags.contains(F::BALANCING_DEBIT) {
        let used = dr.debits_pending.saturating_add(dr.debits_posted);
        amount = amount.min(dr.credits_posted.saturating_sub(used));
    }
    if t.flags.contains(F::BALANCING_CREDIT) {
        let used = cr.credits_pending.saturating_add(cr.credits_posted);
        amount = amount.min(cr.debits_posted.saturating_sub(used));
    }

    if pending {
        if dr.debits_pending.checked_add(amount).is_none() {
            return Ok(R::OverflowsDebitsPending);
        }
        if cr.credits_pending.checked_add(amount).is_none() {
            return Ok(R::OverflowsCreditsPending);
        }
    } else {
        if dr.debits_posted.checked_add(amount).is_none() {
            return Ok(R::OverflowsDebitsPosted);
        }
        if cr.credits_posted.checked_add(amount).is_none() {
            return Ok(R::OverflowsCreditsPosted);
        }
    }
    let Some(debits_after) = dr.debits_pending.checked_add(dr.debits_posted).and_then(|d| d.checked_add(amount)) else {
        return Ok(R::OverflowsDebits);
    };
    let Some(credits_after) = cr.credits_pending.checked_add(cr.credits_posted).and_then(|c| c.checked_add(amount))
    else {
        return Ok(R::OverflowsCredits);
    };
    let expires_at = if pending && t.timeout != 0 {
        match u64::from(t.timeout).checked_mul(NS_PER_S).and_then(|ns| timestamp.checked_add(ns)) {
            Some(expires_at) => expires_at,
            None => return Ok(R::OverflowsTimeout),
        }
    } else {
        0
    };
    if dr.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) && debits_after > dr.credits_posted {
        return Ok(R::ExceedsCredits);
    }
    if cr.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) && credits_after > cr.debits_posted {
        return Ok(R::ExceedsDebits);
    }

    // Every check passed: the arithmetic below cannot overflow.
    let warn_percent = batch.ledger_rules(t.ledger)?.map_or(0, |rules| rules.warn_percent);
    let debits_before = dr.debits_pending + dr.debits_posted;
    if budget_warning(warn_percent, dr.flags, debits_before, debits_before + amount, dr.credits_posted).is_some() {
        batch.count_budget_warning();
    }
    if pending {
        dr.debits_pending += amount;
        cr.credits_pending += amount;
        batch.put_pending_status(t.id, PendingStatus { state: PendingState::Pending, expires_at });
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
    batch.insert_transfer(Transfer { amount, timestamp, ..*t }, &dr, &cr);
    batch.record_balance(&dr, timestamp);
    batch.record_balance(&cr, timestamp);
    batch.put_account_at(dr_slot, dr);
    batch.put_account_at(cr_slot, cr);
    Ok(R::Created)
}

fn post_or_void_pending<S: Store + ?Sized>(
    batch: &mut Batch<'_, S>,
    timestamp: u64,
    t: &Transfer,
) -> Result<CreateTransferResult, StoreError> {
    use CreateTransferResult as R;
    use TransferFlags as F;
    let post = t.flags.contains(F::POST_PENDING);
    if t.pending_id.0 == 0 {
        return Ok(R::PendingIdMustNotBeZero);
    }
    if t.pending_id.0 == u128::MAX {
        return Ok(R::PendingIdMustNotBeIntMax);
    }
    if t.pending_id == t.id {
        return Ok(R::PendingIdMustBeDifferent);
    }
    if t.timeout != 0 {
        return Ok(R::TimeoutReservedForPendingTransfer);
    }
    let Some(p) = batch.transfer(t.pending_id)? else {
        return Ok(R::PendingTransferNotFound);
    };
    if !p.flags.contains(F::PENDING) {
        return Ok(R::PendingTransferNotPending);
    }
    if let Some(refusal) = period_refusal(batch, p.ledger, t.flags)? {
        return Ok(refusal);
    }
    if t.debit_account_id.0 != 0 && t.debit_account_id != p.debit_account_id {
        return Ok(R::PendingTransferHasDifferentDebitAccountId);
    }
    if t.credit_account_id.0 != 0 && t.credit_account_id != p.credit_account_id {
        return Ok(R::PendingTransferHasDifferentCreditAccountId);
    }
    if t.ledger.0 != 0 && t.ledger != p.ledger {
        return Ok(R::PendingTransferHasDifferentLedger);
    }
    if t.code != 0 && t.code != p.code {
        return Ok(R::PendingTransferHasDifferentCode);
    }
    if t.kind != p.kind {
        return Ok(R::PendingTransferHasDifferentKind);
    }
    let amount = if post {
        let amount = if t.amount == Transfer::AMOUNT_MAX { p.amount } else { t.amount };
        if amount > p.amount {
            return Ok(R::ExceedsPendingTransferAmount);
        }
        amount
    } else {
        if t.amount != 0 && t.amount != Transfer::AMOUNT_MAX && t.amount != p.amount {
            return Ok(R::PendingTransferHasDifferentAmount);
        }
        p.amount
    };
    let status = batch.pending_status(p.id)?.ok_or_else(|| StoreError::Inconsistent {
        detail: format!("pending transfer {} has no pending status", p.id),
    })?;
    match status.state {
        PendingState::Posted => return Ok(R::PendingTransferAlreadyPosted),
        PendingState::Voided => return Ok(R::PendingTransferAlreadyVoided),
        PendingState::Expired => return Ok(R::PendingTransferExpired),
        PendingState::Pending if status.expires_at != 0 && status.expires_at <= timestamp => {
            return Ok(R::PendingTransferExpired)
        }
        PendingState::Pending => {}
    }
    let (dr_slot, mut dr) = batch.referenced_account(p.debit_account_id, p.id)?;
    let (cr_slot, mut cr) = batch.referenced_account(p.credit_account_id, p.id)?;
    if post {
        // A closed account takes no more money, except from the closing
        // transfer itself being posted.
        if dr.flags.contains(AccountFlags::CLOSED) && !p.flags.contains(F::CLOSING_DEBIT) {
            return Ok(R::DebitAccountAlreadyClosed);
        }
        if cr.flags.contains(AccountFlags::CLOSED) && !p.flags.contains(F::CLOSING_CREDIT) {
            return Ok(R::CreditAccountAlreadyClosed);
        }
        if dr.debits_posted.checked_add(amount).is_none() {
            return Ok(R::OverflowsDebitsPosted);
        }
        if cr.credits_posted.checked_add(amount).is_none() {
            return Ok(R::OverflowsCreditsPosted);
        }
    }
    release_pending(&mut dr, &mut cr, &p)?;
    if post {
        dr.debits_posted += amount;
        cr.credits_posted += amount;
    } else {
        reopen_closed_by(&mut dr, &mut cr, &p);
    }
    let state = if post { PendingState::Posted } else { PendingState::Voided };
    batch.put_pending_status(p.id, PendingStatus { state, ..status });
    batch.insert_transfer(
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
            user_data_128: if t.user_data_128 == 0 { p.user_data_128 } else { t.user_data_128 },
            user_data_64: if t.user_data_64 == 0 { p.user_data_64 } else { t.user_data_64 },
            user_data_32: if t.user_data_32 == 0 { p.user_data_32 } else { t.user_data_32 },
            timestamp,
        },
        &dr,
        &cr,
    );
    batch.record_balance(&dr, timestamp);
    batch.record_balance(&cr, timestamp);
    batch.put_account_at(dr_slot, dr);
    batch.put_account_at(cr_slot, cr);
    Ok(R::Created)
}

/// Takes a pending transfer's reservation off both accounts.
fn release_pending(dr: &mut Account, cr: &mut Account, p: &Transfer) -> Result<(), StoreError> {
    let inconsistent = |side: &str, account: &Account| StoreError::Inconsistent {
        detail: format!(
            "account {} has less {side} pending than pending transfer {} reserves ({})",
            account.id, p.id, p.amount
        ),
    };
    dr.debits_pending = dr.debits_pending.checked_sub(p.amount).ok_or_else(|| inconsistent("debits", dr))?;
    cr.credits_pending = cr.credits_pending.checked_sub(p.amount).ok_or_else(|| inconsistent("credits", cr))?;
    Ok(())
}

/// Reopens the accounts a voided or expired closing transfer had closed.
fn reopen_closed_by(dr: &mut Account, cr: &mut Account, p: &Transfer) {
    if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
        dr.flags = dr.flags.without(AccountFlags::CLOSED);
    }
    if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
        cr.flags = cr.flags.without(AccountFlags::CLOSED);
    }
}

/// Prepares an `expire_pending` operation: releases every pending transfer
/// whose `expires_at <= timestamp`, soonest first, at most
/// [`EXPIRE_EVENTS_MAX`] of them (the `k`-th is stamped `timestamp + k`).
/// An expired closing transfer reopens the account it closed.
pub fn prepare_expire_pending<S: Store + ?Sized>(
    store: &S,
    timestamp: u64,
) -> Result<Prepared<ExpireResult>, ApplyError> {
    let due = store.expiring(timestamp, EXPIRE_EVENTS_MAX + 1)?;
    let more = due.len() > EXPIRE_EVENTS_MAX;
    let count = due.len().min(EXPIRE_EVENTS_MAX);
    let last_timestamp = check_batch(store, timestamp, count)?;
    let mut batch = Batch::new(store, count);
    for (index, (expires_at, id)) in due.into_iter().take(count).enumerate() {
        let event_timestamp = timestamp + index as u64;
        let status = batch.pending_status(id)?;
        if status != Some(PendingStatus { state: PendingState::Pending, expires_at }) {
            return Err(StoreError::Inconsistent {
                detail: format!("expiry index lists transfer {id} at {expires_at} but its status is {status:?}"),
            }
            .into());
        }
        let p = batch.transfer(id)?.ok_or_else(|| StoreError::Inconsistent {
            detail: format!("expiry index lists transfer {id}, which does not exist"),
        })?;
        let (dr_slot, mut dr) = batch.referenced_account(p.debit_account_id, p.id)?;
        let (cr_slot, mut cr) = batch.referenced_account(p.credit_account_id, p.id)?;
        release_pending(&mut dr, &mut cr, &p)?;
        reopen_closed_by(&mut dr, &mut cr, &p);
        batch.put_pending_status(id, PendingStatus { state: PendingState::Expired, expires_at });
        batch.record_expiry(id, event_timestamp, &dr, &cr);
        batch.record_balance(&dr, event_timestamp);
        batch.record_balance(&cr, event_timestamp);
        batch.put_account_at(dr_slot, dr);
        batch.put_account_at(cr_slot, cr);
    }
    let expired = u32::try_from(count).unwrap_or(u32::MAX);
    Ok(Prepared {
        results: ExpireResult { expired, more },
        write_set: batch.into_write_set(timestamp, last_timestamp)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreMut;
    use crate::MemoryStore;

    #[test]
    fn batch_over_the_limit_is_rejected_whole() {
        let store = MemoryStore::new();
        let events = vec![Transfer::default(); BATCH_EVENTS_MAX + 1];
        let error = prepare_create_transfers(&store, 1, &events).unwrap_err();
        assert_eq!(error, ApplyError::BatchTooLarge { events: BATCH_EVENTS_MAX + 1, max: BATCH_EVENTS_MAX });
    }

    #[test]
    fn batch_timestamp_must_increase() {
        let mut store = MemoryStore::new();
        let prepared = prepare_create_transfers(&store, 10, &[Transfer::default(); 3]).unwrap();
        assert_eq!(prepared.write_set.last_timestamp, 12);
        store.commit(&prepared.write_set).unwrap();
        let error = prepare_create_transfers(&store, 12, &[]).unwrap_err();
        assert_eq!(error, ApplyError::TimestampNotIncreasing { timestamp: 12, last_timestamp: 12 });
        assert!(prepare_create_transfers(&store, 13, &[]).is_ok());
    }

    #[test]
    fn batch_timestamps_that_overflow_are_rejected() {
        let store = MemoryStore::new();
        let error = prepare_create_transfers(&store, u64::MAX, &[Transfer::default(); 2]).unwrap_err();
        assert_eq!(error, ApplyError::TimestampOverflow { timestamp: u64::MAX, events: 2 });
    }
}
