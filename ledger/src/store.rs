//! The `Store` trait: the only way the state machine reaches its state.
//!
//! A store is read while a batch is prepared and changed only by
//! [`Store::commit`], which applies one [`WriteSet`] atomically. The state
//! machine never holds state of its own between batches, so a store that
//! commits atomically and survives crashes (RocksDB, in `coffer-storage`)
//! makes the ledger crash-safe.

use crate::digest::DigestSum;
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::index::IndexKey;
use crate::model::{
    Account, AccountBalance, AccountTransfer, Change, CodeTotals, Ledger, PendingStatus, Side, TotalsEntry, Transfer,
};
use crate::reconcile::Reconciliation;
use crate::results::CreateTransferResult;

/// A failure of the store itself. Never a per-event outcome: the batch that
/// met it changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A record failed verification (checksum, length, unknown code).
    #[error("corrupt record in {table} at key {key}: {reason}")]
    Corruption {
        /// The table (column family) holding the record.
        table: String,
        /// The record's key, printed.
        key: String,
        /// What failed.
        reason: String,
    },
    /// Records disagree with each other (e.g. a pending status without its
    /// transfer): the state breaks an invariant and must not be used.
    #[error("inconsistent state: {detail}")]
    Inconsistent {
        /// What disagrees.
        detail: String,
    },
    /// The storage backend failed (IO, RocksDB).
    #[error("storage backend failed: {detail}")]
    Backend {
        /// The backend's error.
        detail: String,
    },
}

/// Which sides of an account's transfers a query wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Sides {
    /// Transfers that debit the account.
    Debits,
    /// Transfers that credit the account.
    Credits,
    /// Both.
    #[default]
    Both,
}

impl Sides {
    /// Whether `side` is wanted.
    pub const fn includes(self, side: Side) -> bool {
        matches!((self, side), (Self::Both, _) | (Self::Debits, Side::Debit) | (Self::Credits, Side::Credit))
    }
}

/// A page of an account's history: transfers or balances in a time range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountFilter {
    /// The account.
    pub account_id: AccountId,
    /// Earliest timestamp, inclusive (`0`: from the start).
    pub timestamp_min: u64,
    /// Latest timestamp, inclusive (`0`: to the end).
    pub timestamp_max: u64,
    /// Most rows to return: 1 to [`BATCH_EVENTS_MAX`](crate::BATCH_EVENTS_MAX).
    pub limit: u32,
    /// Which sides (transfers only; balance history ignores it).
    pub sides: Sides,
    /// Newest first instead of oldest first.
    pub reversed: bool,
}

impl AccountFilter {
    /// Everything of `account_id`, oldest first, at most `limit` rows.
    pub const fn all(account_id: AccountId, limit: u32) -> Self {
        Self { account_id, timestamp_min: 0, timestamp_max: 0, limit, sides: Sides::Both, reversed: false }
    }

    /// Whether `timestamp` lies in the filter's range.
    pub const fn covers(&self, timestamp: u64) -> bool {
        timestamp >= self.timestamp_min && (self.timestamp_max == 0 || timestamp <= self.timestamp_max)
    }
}

/// A range of the change log: the changes with `timestamp_min <= timestamp
/// <= timestamp_max` (both inclusive; unlike in [`AccountFilter`], a
/// `timestamp_max` of `0` is not "to the end"), at most `limit` of them,
/// oldest or newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChangeFilter {
    /// Earliest timestamp, inclusive.
    pub timestamp_min: u64,
    /// Latest timestamp, inclusive.
    pub timestamp_max: u64,
    /// Most changes to return.
    pub limit: u32,
    /// Newest first instead of oldest first.
    pub reversed: bool,
}

impl ChangeFilter {
    /// The whole log, oldest first, at most `limit` changes.
    pub const fn all(limit: u32) -> Self {
        Self { timestamp_min: 0, timestamp_max: u64::MAX, limit, reversed: false }
    }

    /// The changes after `cursor`, oldest first, at most `limit` of them.
    pub const fn after(cursor: u64, limit: u32) -> Self {
        match cursor.checked_add(1) {
            Some(timestamp_min) => Self { timestamp_min, ..Self::all(limit) },
            // Nothing comes after the last timestamp there is.
            None => Self { timestamp_min: u64::MAX, timestamp_max: 0, ..Self::all(limit) },
        }
    }
}

/// Everything one batch changes, to be committed atomically by a store.
///
/// Records are final values (upserts); a store need not read anything to
/// commit a write set. Within each list, keys are unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSet {
    /// The batch's first event timestamp.
    pub first_timestamp: u64,
    /// The last event timestamp the batch used; the next batch must start after it.
    pub last_timestamp: u64,
    /// What the batch adds to the stored digest sum (record hashes added
    /// minus those removed, modulo 2^256; see [`crate::digest`]).
    pub digest_delta: DigestSum,
    /// The running totals of every (ledger, code) whose accounts the batch
    /// created or changed, with their new values. A store keeps them and
    /// appends each to the code's totals history under `last_timestamp`.
    pub totals: Vec<CodeTotals>,
    /// Ledgers created or changed (a period moved), with their new values.
    pub ledgers: Vec<Ledger>,
    /// Accounts created or changed, with their new values.
    pub accounts: Vec<Account>,
    /// The digest hash of each of `accounts`, in the same order (see
    /// [`crate::digest`]), for a store that keeps it with the account: the
    /// next batch that changes the account takes the old value out of the
    /// digest sum without hashing it again ([`Store::account_hashed`]).
    /// Empty when not computed.
    pub account_hashes: Vec<DigestSum>,
    /// Whether `digest_delta` leaves the accounts out: a batch prepared
    /// against a [`Run`](crate::Run) leaves them to the run, which adds
    /// each account's change once, from its value before the run to its
    /// last ([`Run::into_write_set`](crate::Run::into_write_set)). Stores
    /// refuse to commit such a write set.
    pub account_digest_deferred: bool,
    /// Transfers created.
    pub transfers: Vec<Transfer>,
    /// Pending statuses created or changed. A store keeps `(expires_at, id)`
    /// in its expiry index exactly while the state is `Pending` and
    /// `expires_at != 0`.
    pub pending: Vec<(TransferId, PendingStatus)>,
    /// Transfer ids that failed transiently, with the failure (for `id_already_failed`).
    pub failures: Vec<(TransferId, CreateTransferResult)>,
    /// New entries of accounts' history indexes.
    pub account_transfers: Vec<AccountTransfer>,
    /// New balance-history entries (accounts with the `history` flag).
    pub balances: Vec<AccountBalance>,
    /// New entries of the change log, in timestamp order: one per ledger,
    /// account and transfer created and per pending transfer expired.
    pub changes: Vec<Change>,
    /// Transfers that crossed a budget ledger's warning share (see
    /// [`crate::budget_warning`]): for metrics; the change feed shows each.
    pub budget_warnings: u32,
    /// Bank-statement reconciliations recorded or changed, with their new
    /// values (see [`crate::reconcile`]).
    pub reconciliations: Vec<Reconciliation>,
    /// Accounts whose latest statement changed, with its id.
    pub latest_statements: Vec<(AccountId, String)>,
}

/// Why a store refuses a write set whose digest delta leaves its accounts
/// out ([`WriteSet::account_digest_deferred`]).
pub const DEFERRED_ACCOUNT_DIGEST: &str =
    "a write set prepared against a run leaves its accounts out of its digest delta: commit the run's merged write set";

/// The ledger's state, as the state machine sees it.
///
/// Reads see only committed state. The `for_each_*` visitors go in ascending
/// key order; `state_digest` and the trial balance depend on it.
pub trait Store {
    /// The timestamp of the last event applied (`0` before the first batch).
    fn last_timestamp(&self) -> Result<u64, StoreError>;

    /// The ledger with this id.
    fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError>;

    /// The account with this id.
    fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError>;

    /// The account with this id and, if the store has it at hand, the
    /// digest hash of exactly that value (from [`WriteSet::account_hashes`]
    /// when it was written). A batch that changes the account then need
    /// not hash the old value to take it out of the digest sum. The default
    /// knows no hash.
    fn account_hashed(&self, id: AccountId) -> Result<Option<(Account, Option<DigestSum>)>, StoreError> {
        Ok(self.account(id)?.map(|account| (account, None)))
    }

    /// Whether a batch prepared against this store leaves its accounts out
    /// of its digest delta ([`WriteSet::account_digest_deferred`]): only a
    /// [`Run`](crate::Run) does, since it would hash an account that
    /// several of its batches change once per batch.
    fn defers_account_digest(&self) -> bool {
        false
    }

    /// The transfer with this id.
    fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError>;

    /// For each of `ids`, whether no transfer and no recorded failure has
    /// it: one question for a whole batch's new ids, for a store that
    /// answers it in one batched lookup, much cheaper than a lookup per id
    /// (RocksDB's). `None` (the default, right for a store whose lookups
    /// are hash probes already): the batch asks per id as it goes.
    fn unused_transfer_ids(&self, ids: &[TransferId]) -> Result<Option<Vec<bool>>, StoreError> {
        let _ = ids;
        Ok(None)
    }

    /// The status of the pending transfer with this id.
    fn pending_status(&self, id: TransferId) -> Result<Option<PendingStatus>, StoreError>;

    /// The recorded transient failure of this transfer id, if it failed.
    fn transfer_failure(&self, id: TransferId) -> Result<Option<CreateTransferResult>, StoreError>;

    /// Up to `limit` pending transfers with `expires_at <= up_to`, soonest
    /// first (ties by id), as `(expires_at, id)`.
    fn expiring(&self, up_to: u64, limit: usize) -> Result<Vec<(u64, TransferId)>, StoreError>;

    /// The entries of an account's history index that match `filter`
    /// (range, sides, order, limit).
    fn account_transfers(&self, filter: &AccountFilter) -> Result<Vec<AccountTransfer>, StoreError>;

    /// The balance-history entries of an account that match `filter`
    /// (range, order, limit; sides ignored).
    fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>, StoreError>;

    /// The entries of the change log that `filter` selects (range, order,
    /// limit). The log holds one entry per change, keyed by its unique
    /// timestamp; it only grows.
    fn changes(&self, filter: &ChangeFilter) -> Result<Vec<Change>, StoreError>;

    /// Visits every ledger in ascending id order.
    fn for_each_ledger(&self, visit: &mut dyn FnMut(&Ledger)) -> Result<(), StoreError>;

    /// Visits every account in ascending id order.
    fn for_each_account(&self, visit: &mut dyn FnMut(&Account)) -> Result<(), StoreError>;

    /// Visits every transfer in ascending id order.
    fn for_each_transfer(&self, visit: &mut dyn FnMut(&Transfer)) -> Result<(), StoreError>;

    /// Visits every pending status in ascending transfer-id order.
    fn for_each_pending(&self, visit: &mut dyn FnMut(TransferId, &PendingStatus)) -> Result<(), StoreError>;

    /// Visits every recorded transient failure in ascending transfer-id order.
    fn for_each_failure(&self, visit: &mut dyn FnMut(TransferId, CreateTransferResult)) -> Result<(), StoreError>;

    /// The digest sum the store maintains as it commits (the sum of every
    /// committed write set's [`WriteSet::digest_delta`]).
    fn digest_sum(&self) -> Result<DigestSum, StoreError>;

    /// The running totals of `code` in `ledger`, if it has accounts.
    fn code_totals(&self, ledger: LedgerId, code: u16) -> Result<Option<CodeTotals>, StoreError>;

    /// The running totals of every code of `ledger` that has accounts, in
    /// ascending code order.
    fn ledger_totals(&self, ledger: LedgerId) -> Result<Vec<CodeTotals>, StoreError>;

    /// Around `timestamp` in the totals history of `code` in `ledger`: the
    /// last entry whose batch ended at or before it, and the first whose
    /// batch ended after it.
    fn totals_around(
        &self,
        ledger: LedgerId,
        code: u16,
        timestamp: u64,
    ) -> Result<(Option<TotalsEntry>, Option<TotalsEntry>), StoreError>;

    /// The reconciliation of `account`'s statement `statement`.
    fn reconciliation(&self, account: AccountId, statement: &str) -> Result<Option<Reconciliation>, StoreError>;

    /// The reconciliation of `account`'s latest statement (the one that ends
    /// last), if any.
    fn latest_reconciliation(&self, account: AccountId) -> Result<Option<Reconciliation>, StoreError>;

    /// Up to `limit` reconciliations of `account`, by statement id, after
    /// statement `after` (empty: from the first).
    fn reconciliations(&self, account: AccountId, after: &str, limit: usize)
        -> Result<Vec<Reconciliation>, StoreError>;

    /// The timestamp of the first entry of index `key` with `timestamp_min
    /// <= timestamp <= timestamp_max` (the last one if `reversed`).
    fn index_seek(
        &self,
        key: &IndexKey,
        timestamp_min: u64,
        timestamp_max: u64,
        reversed: bool,
    ) -> Result<Option<u64>, StoreError>;
}

/// A [`Store`] that the state machine can also write: a node's live state,
/// not a read-only view of it.
pub trait StoreMut: Store {
    /// Applies `write_set` atomically: all of it becomes visible, or none.
    fn commit(&mut self, write_set: &WriteSet) -> Result<(), StoreError>;
}
