//! `coffer-ledger`: Coffer's deterministic double-entry state machine.
//!
//! It owns the data model ([`Ledger`], [`Account`], [`Transfer`]), the rules
//! (validation and result codes, balances, two-phase transfers, linked
//! chains, limits, closing, history) and the reads (lookups, history pages,
//! balances as of a timestamp, trial balance, [`state_digest`]) and the
//! change log: every change (ledger, account or transfer created, pending
//! transfer expired) keyed by its event timestamp, which change feeds and
//! [`query_transfers`] read.
//!
//! It does no IO, reads no clock and draws no random number. State is reached
//! only through the [`Store`] trait; [`MemoryStore`] is the in-memory one.
//! Applying a batch is two steps, so a replicated store can commit the
//! ledger's changes together with its own bookkeeping (the Raft applied
//! index) in one atomic write:
//!
//! 1. [`prepare`] (or `prepare_create_transfers`, ...) reads the store and
//!    returns one result per event plus a [`WriteSet`];
//! 2. [`Store::commit`] applies the write set atomically.
//!
//! [`StateMachine`] does both for callers that own the store.
//!
//! ```
//! use coffer_ledger::*;
//!
//! let mut ledger = StateMachine::new(MemoryStore::new());
//! let krw = Ledger::new(LedgerId(1), "KRW", 0, "Won");
//! assert_eq!(ledger.create_ledgers(1, &[krw]).unwrap(), [CreateLedgerResult::Created]);
//! let cash = Account { id: AccountId(1), ledger: LedgerId(1), code: 101, kind: AccountKind::Cash, ..Default::default() };
//! let revenue = Account { id: AccountId(2), ledger: LedgerId(1), code: 401, ..Default::default() };
//! ledger.create_accounts(2, &[cash, revenue]).unwrap();
//! let receipt = Transfer {
//!     id: TransferId(1),
//!     debit_account_id: AccountId(1),
//!     credit_account_id: AccountId(2),
//!     amount: 50_000,
//!     ledger: LedgerId(1),
//!     code: 1,
//!     kind: TransferKind::Receipt,
//!     ..Default::default()
//! };
//! assert_eq!(ledger.create_transfers(10, &[receipt]).unwrap(), [CreateTransferResult::Created]);
//! assert_eq!(ledger.store().account(AccountId(1)).unwrap().unwrap().debits_posted, 50_000);
//! ```

pub mod amount;
mod apply;
mod batch;
pub mod close;
pub mod codec;
mod digest;
mod flags;
mod ids;
pub mod index;
pub mod invariants;
mod memory;
mod model;
mod query;
pub mod reconcile;
mod results;
mod run;
mod store;

pub use apply::{
    prepare, prepare_close, prepare_create_accounts, prepare_create_ledgers, prepare_create_transfers,
    prepare_expire_pending, prepare_set_periods, ApplyError, ExpireResult, Operation, OperationResults, Prepared,
};
pub use close::{plan_close, CloseStep, CodeRange, YearClose};
pub use digest::{recompute_digest_sum, state_digest, stored_state_digest, DigestSum, Record, StateDigest};
pub use flags::{AccountFlags, TransferFlags};
pub use ids::{AccountId, LedgerId, TransferId};
pub use memory::MemoryStore;
pub use model::{
    budget_warning, Account, AccountBalance, AccountKind, AccountTransfer, Balances, BudgetPolicy, Change, ChangeKind,
    ChangedRecord, CodeTotals, Ledger, PendingState, PendingStatus, Period, PeriodChange, ResolvedChange, Side, Total,
    TotalsEntry, Transfer, TransferBalances, TransferKind, BATCH_EVENTS_MAX, EXPIRE_EVENTS_MAX,
    LEDGER_CURRENCY_LEN_MAX, LEDGER_NAME_LEN_MAX, LEDGER_SCALE_MAX, NS_PER_S, WARN_PERCENT_MAX,
};
pub use query::{
    balance_as_of, get_account_balances, get_account_transfers, lookup_accounts, lookup_transfers, query_accounts,
    query_transfers, read_changes, resolve_change, trial_balance, trial_balance_as_of, BalanceTotals, ChangePage,
    QueryError, QueryFilter, QueryPage, TransferPage, TransferQuery, TrialBalance, QUERY_SEEKS_MAX,
};
pub use reconcile::{ReconcileOp, Reconciliation};
pub use results::{
    CloseResult, CreateAccountResult, CreateLedgerResult, CreateTransferResult, ReconcileResult, SetPeriodResult,
};
pub use run::{Run, SuspendedRun, RUN_BATCHES_MAX};
pub use store::{AccountFilter, ChangeFilter, Sides, Store, StoreError, StoreMut, WriteSet, DEFERRED_ACCOUNT_DIGEST};

/// A state machine that owns its store: prepares each batch and commits it.
///
/// Replicated nodes call [`prepare`] and commit the write set themselves,
/// together with the Raft applied index; this type is for tests, the
/// simulator, benchmarks and examples.
#[derive(Debug, Default)]
pub struct StateMachine<S: StoreMut> {
    store: S,
}

impl<S: StoreMut> StateMachine<S> {
    /// A state machine over `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The store, for reads.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    fn commit<R>(&mut self, prepared: Prepared<R>) -> Result<R, ApplyError> {
        self.store.commit(&prepared.write_set)?;
        Ok(prepared.results)
    }

    /// Applies any operation at `timestamp`.
    pub fn apply(&mut self, timestamp: u64, operation: &Operation) -> Result<OperationResults, ApplyError> {
        let prepared = prepare(&self.store, timestamp, operation)?;
        self.commit(prepared)
    }

    /// Creates ledgers; event `i` is stamped `timestamp + i`.
    pub fn create_ledgers(&mut self, timestamp: u64, events: &[Ledger]) -> Result<Vec<CreateLedgerResult>, ApplyError> {
        let prepared = prepare_create_ledgers(&self.store, timestamp, events)?;
        self.commit(prepared)
    }

    /// Creates accounts; event `i` is stamped `timestamp + i`.
    pub fn create_accounts(
        &mut self,
        timestamp: u64,
        events: &[Account],
    ) -> Result<Vec<CreateAccountResult>, ApplyError> {
        let prepared = prepare_create_accounts(&self.store, timestamp, events)?;
        self.commit(prepared)
    }

    /// Creates transfers (and posts and voids); event `i` is stamped `timestamp + i`.
    pub fn create_transfers(
        &mut self,
        timestamp: u64,
        events: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, ApplyError> {
        let prepared = prepare_create_transfers(&self.store, timestamp, events)?;
        self.commit(prepared)
    }

    /// Moves ledgers' fiscal periods; event `i` is stamped `timestamp + i`.
    pub fn set_periods(&mut self, timestamp: u64, events: &[PeriodChange]) -> Result<Vec<SetPeriodResult>, ApplyError> {
        let prepared = prepare_set_periods(&self.store, timestamp, events)?;
        self.commit(prepared)
    }

    /// Applies one step of a year-end close (see [`close`]).
    pub fn close_step(&mut self, timestamp: u64, step: &CloseStep) -> Result<OperationResults, ApplyError> {
        let prepared = prepare_close(&self.store, timestamp, step)?;
        self.commit(prepared)
    }

    /// Expires the pending transfers due by `timestamp`.
    pub fn expire_pending(&mut self, timestamp: u64) -> Result<ExpireResult, ApplyError> {
        let prepared = prepare_expire_pending(&self.store, timestamp)?;
        self.commit(prepared)
    }

    /// The digest of the whole state, recomputed from every record.
    pub fn state_digest(&self) -> Result<StateDigest, StoreError> {
        state_digest(&self.store)
    }

    /// The digest from the sum the store maintains (one read).
    pub fn stored_state_digest(&self) -> Result<StateDigest, StoreError> {
        stored_state_digest(&self.store)
    }
}
