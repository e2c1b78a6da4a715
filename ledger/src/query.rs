//! Reads: lookups, account history, balances as of a timestamp, trial
//! balance, and the change log (pages of changes for feeds, transfers by
//! their fields).
//!
//! Reads see only committed state and change nothing.

use crate::flags::AccountFlags;
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::model::{
    Account, AccountBalance, Change, ChangeKind, ChangedRecord, ResolvedChange, Transfer, TransferKind,
    BATCH_EVENTS_MAX,
};
use crate::store::{AccountFilter, ChangeFilter, Store, StoreError};

/// The most changes one [`query_transfers`] examines; a query may ask for
/// fewer (`scan_limit`). At about a microsecond per change (a log entry and
/// a transfer lookup), a scan stays within a tenth of a second.
pub const QUERY_SCAN_CHANGES_MAX: u32 = 100_000;

/// Changes read from the store at once while a query scans the log: the
/// scan holds at most one such page (48 bytes a change) besides its matches.
const SCAN_PAGE_CHANGES: u32 = 1_024;

/// Why a read could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A request field is out of range; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The account does not exist.
    #[error("account {0} not found")]
    AccountNotFound(AccountId),
    /// The account does not keep balance history (no `history` flag).
    #[error("account {0} does not keep history (no history flag)")]
    AccountHasNoHistory(AccountId),
    /// The ledger does not exist.
    #[error("ledger {0} not found")]
    LedgerNotFound(LedgerId),
    /// A sum does not fit in `u128`.
    #[error("{what} overflows u128")]
    Overflow {
        /// What was being summed.
        what: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check_limit(limit: u32) -> Result<(), QueryError> {
    if limit == 0 || limit as usize > BATCH_EVENTS_MAX {
        return Err(QueryError::InvalidField {
            field: "limit",
            reason: format!("{limit} is not between 1 and {BATCH_EVENTS_MAX}"),
        });
    }
    Ok(())
}

fn check_range(timestamp_min: u64, timestamp_max: u64) -> Result<(), QueryError> {
    if timestamp_max != 0 && timestamp_min > timestamp_max {
        return Err(QueryError::InvalidField {
            field: "timestamp_min",
            reason: format!("{timestamp_min} is after timestamp_max {timestamp_max}"),
        });
    }
    Ok(())
}

fn check_ids(ids_len: usize) -> Result<(), QueryError> {
    if ids_len > BATCH_EVENTS_MAX {
        return Err(QueryError::InvalidField {
            field: "ids",
            reason: format!("{ids_len} ids, more than the {BATCH_EVENTS_MAX} allowed"),
        });
    }
    Ok(())
}

/// The accounts with these ids, one entry per id (`None` where none exists).
pub fn lookup_accounts<S: Store + ?Sized>(store: &S, ids: &[AccountId]) -> Result<Vec<Option<Account>>, QueryError> {
    check_ids(ids.len())?;
    Ok(ids.iter().map(|id| store.account(*id)).collect::<Result<_, _>>()?)
}

/// The transfers with these ids, one entry per id (`None` where none exists).
pub fn lookup_transfers<S: Store + ?Sized>(store: &S, ids: &[TransferId]) -> Result<Vec<Option<Transfer>>, QueryError> {
    check_ids(ids.len())?;
    Ok(ids.iter().map(|id| store.transfer(*id)).collect::<Result<_, _>>()?)
}

fn check_filter(filter: &AccountFilter) -> Result<(), QueryError> {
    if !filter.account_id.is_valid() {
        return Err(QueryError::InvalidField { field: "account_id", reason: "must not be 0 or u128::MAX".into() });
    }
    check_limit(filter.limit)?;
    check_range(filter.timestamp_min, filter.timestamp_max)
}

/// A page of the transfers that touched an account, by timestamp.
pub fn get_account_transfers<S: Store + ?Sized>(
    store: &S,
    filter: &AccountFilter,
) -> Result<Vec<Transfer>, QueryError> {
    check_filter(filter)?;
    let rows = store.account_transfers(filter)?;
    rows.iter()
        .map(|row| {
            store.transfer(row.transfer_id)?.ok_or_else(|| {
                QueryError::Store(StoreError::Inconsistent {
                    detail: format!(
                        "history of account {} lists transfer {}, which does not exist",
                        row.account_id, row.transfer_id
                    ),
                })
            })
        })
        .collect()
}

fn history_account<S: Store + ?Sized>(store: &S, id: AccountId) -> Result<Account, QueryError> {
    let account = store.account(id)?.ok_or(QueryError::AccountNotFound(id))?;
    if !account.flags.contains(AccountFlags::HISTORY) {
        return Err(QueryError::AccountHasNoHistory(id));
    }
    Ok(account)
}

/// A page of an account's balance history (accounts with the `history` flag):
/// its balances after each change in the filter's range.
pub fn get_account_balances<S: Store + ?Sized>(
    store: &S,
    filter: &AccountFilter,
) -> Result<Vec<AccountBalance>, QueryError> {
    check_filter(filter)?;
    history_account(store, filter.account_id)?;
    Ok(store.account_balances(filter)?)
}

/// An account's balances as they stood at `timestamp` (after every event
/// stamped at or before it), for accounts with the `history` flag. `None` if
/// the account did not exist yet.
pub fn balance_as_of<S: Store + ?Sized>(
    store: &S,
    id: AccountId,
    timestamp: u64,
) -> Result<Option<AccountBalance>, QueryError> {
    let account = history_account(store, id)?;
    if timestamp < account.timestamp {
        return Ok(None);
    }
    let filter = AccountFilter { timestamp_max: timestamp, reversed: true, ..AccountFilter::all(id, 1) };
    let latest = store.account_balances(&filter)?.into_iter().next();
    Ok(Some(latest.unwrap_or(AccountBalance { account_id: id, timestamp: account.timestamp, ..Default::default() })))
}

/// Sums of the four balances over a set of accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BalanceTotals {
    /// Accounts summed.
    pub accounts: u64,
    /// Σ debits_pending.
    pub debits_pending: u128,
    /// Σ debits_posted.
    pub debits_posted: u128,
    /// Σ credits_pending.
    pub credits_pending: u128,
    /// Σ credits_posted.
    pub credits_posted: u128,
}

impl BalanceTotals {
    fn add(&mut self, account: &Account) -> Result<(), QueryError> {
        let sum = |total: u128, amount: u128, what| total.checked_add(amount).ok_or(QueryError::Overflow { what });
        self.accounts += 1;
        self.debits_pending = sum(self.debits_pending, account.debits_pending, "debits_pending")?;
        self.debits_posted = sum(self.debits_posted, account.debits_posted, "debits_posted")?;
        self.credits_pending = sum(self.credits_pending, account.credits_pending, "credits_pending")?;
        self.credits_posted = sum(self.credits_posted, account.credits_posted, "credits_posted")?;
        Ok(())
    }

    /// Whether debits equal credits, posted and pending: double entry holds.
    pub const fn is_balanced(&self) -> bool {
        self.debits_pending == self.credits_pending && self.debits_posted == self.credits_posted
    }
}

/// A ledger's trial balance: totals per account code and for the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrialBalance {
    /// The ledger.
    pub ledger: LedgerId,
    /// One row per account code, ascending.
    pub codes: Vec<(u16, BalanceTotals)>,
    /// The whole ledger.
    pub total: BalanceTotals,
}

/// The trial balance of one ledger (a scan of every account).
pub fn trial_balance<S: Store + ?Sized>(store: &S, ledger: LedgerId) -> Result<TrialBalance, QueryError> {
    if store.ledger(ledger)?.is_none() {
        return Err(QueryError::LedgerNotFound(ledger));
    }
    let mut codes = std::collections::BTreeMap::<u16, BalanceTotals>::new();
    let mut total = BalanceTotals::default();
    let mut failure = None;
    store.for_each_account(&mut |account| {
        if account.ledger != ledger || failure.is_some() {
            return;
        }
        let added = codes.entry(account.code).or_default().add(account).and_then(|()| total.add(account));
        if let Err(error) = added {
            failure = Some(error);
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(TrialBalance { ledger, codes: codes.into_iter().collect(), total })
}

/// The transfers [`query_transfers`] looks for: every field that is set
/// (non-zero, `Some`) must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransferQuery {
    /// The ledger (`0`: any).
    pub ledger: LedgerId,
    /// The code (`0`: any).
    pub code: u16,
    /// The kind (`None`: any).
    pub kind: Option<TransferKind>,
    /// `user_data_128` (`0`: any).
    pub user_data_128: u128,
    /// `user_data_64` (`0`: any).
    pub user_data_64: u64,
    /// `user_data_32` (`0`: any).
    pub user_data_32: u32,
    /// Earliest timestamp, inclusive (`0`: from the start).
    pub timestamp_min: u64,
    /// Latest timestamp, inclusive (`0`: to the end).
    pub timestamp_max: u64,
    /// Most transfers to return: 1 to [`BATCH_EVENTS_MAX`].
    pub limit: u32,
    /// Newest first instead of oldest first.
    pub reversed: bool,
    /// Most changes to examine (`0`, or more than [`QUERY_SCAN_CHANGES_MAX`]:
    /// that bound).
    pub scan_limit: u32,
}

impl TransferQuery {
    /// Every transfer, oldest first, at most `limit` of them.
    pub const fn all(limit: u32) -> Self {
        Self {
            ledger: LedgerId(0),
            code: 0,
            kind: None,
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            timestamp_min: 0,
            timestamp_max: 0,
            limit,
            reversed: false,
            scan_limit: 0,
        }
    }

    /// Whether `transfer` has every field the query sets.
    pub fn matches(&self, transfer: &Transfer) -> bool {
        (self.ledger.0 == 0 || transfer.ledger == self.ledger)
            && (self.code == 0 || transfer.code == self.code)
            && self.kind.is_none_or(|kind| transfer.kind == kind)
            && (self.user_data_128 == 0 || transfer.user_data_128 == self.user_data_128)
            && (self.user_data_64 == 0 || transfer.user_data_64 == self.user_data_64)
            && (self.user_data_32 == 0 || transfer.user_data_32 == self.user_data_32)
    }

    /// The most changes the query examines: its `scan_limit`, within
    /// [`QUERY_SCAN_CHANGES_MAX`].
    pub const fn scan_bound(&self) -> u32 {
        if self.scan_limit == 0 || self.scan_limit > QUERY_SCAN_CHANGES_MAX {
            QUERY_SCAN_CHANGES_MAX
        } else {
            self.scan_limit
        }
    }
}

/// What [`query_transfers`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransferPage {
    /// The matching transfers, in the query's order.
    pub transfers: Vec<Transfer>,
    /// `0` when the whole range was examined. Otherwise the scan stopped (at
    /// `limit` matches or at the scan bound) with changes left in the range:
    /// the query continues with `timestamp_min` (oldest first) or
    /// `timestamp_max` (newest first) set to this value.
    pub next_timestamp: u64,
    /// Changes examined.
    pub changes_scanned: u32,
}

/// The part of the change log a scan has still to examine, both ends
/// inclusive; `None` once nothing is left.
#[derive(Clone, Copy, Debug)]
struct Remaining {
    low: u64,
    high: u64,
}

impl Remaining {
    /// The range a query names (`timestamp_max` `0`: to the end). Every
    /// event timestamp is at least 1, so a range that ends at 0 is empty.
    fn of(timestamp_min: u64, timestamp_max: u64) -> Option<Self> {
        let high = if timestamp_max == 0 { u64::MAX } else { timestamp_max };
        (timestamp_min <= high).then_some(Self { low: timestamp_min, high })
    }

    /// What is left once the change at `timestamp` (at the scan's front end)
    /// has been examined.
    fn after(self, timestamp: u64, reversed: bool) -> Option<Self> {
        let rest = if reversed {
            Self { high: timestamp.checked_sub(1)?, ..self }
        } else {
            Self { low: timestamp.checked_add(1)?, ..self }
        };
        (rest.low <= rest.high && rest.high > 0).then_some(rest)
    }

    fn filter(self, limit: u32, reversed: bool) -> ChangeFilter {
        ChangeFilter { timestamp_min: self.low, timestamp_max: self.high, limit, reversed }
    }

    /// Where a query continues: the remaining range's front end.
    fn front(self, reversed: bool) -> u64 {
        if reversed {
            self.high
        } else {
            self.low
        }
    }
}

/// The transfers that match `query`, found by scanning the change log from
/// one end of the query's time range: it stops at `limit` matches or after
/// the scan bound ([`TransferQuery::scan_bound`]) changes, whichever comes
/// first, and then says where to continue (`next_timestamp`, `0` when the
/// range is exhausted). Continuing from there finds every match exactly once.
pub fn query_transfers<S: Store + ?Sized>(store: &S, query: &TransferQuery) -> Result<TransferPage, QueryError> {
    check_limit(query.limit)?;
    check_range(query.timestamp_min, query.timestamp_max)?;
    let (limit, scan_bound, reversed) = (query.limit as usize, query.scan_bound(), query.reversed);
    let mut page = TransferPage::default();
    let mut remaining = Remaining::of(query.timestamp_min, query.timestamp_max);
    while let Some(range) = remaining {
        if page.transfers.len() == limit || page.changes_scanned == scan_bound {
            // Stopped early: the query continues only if a change is left.
            let left = store.changes(&range.filter(1, reversed))?;
            page.next_timestamp = if left.is_empty() { 0 } else { range.front(reversed) };
            return Ok(page);
        }
        let asked = (scan_bound - page.changes_scanned).min(SCAN_PAGE_CHANGES);
        let changes = store.changes(&range.filter(asked, reversed))?;
        let mut examined = 0;
        for change in &changes {
            examined += 1;
            page.changes_scanned += 1;
            remaining = range.after(change.timestamp, reversed);
            let ChangeKind::TransferCreated(id) = change.kind else { continue };
            let transfer = store.transfer(id)?.ok_or_else(|| missing_record(change, "transfer"))?;
            if query.matches(&transfer) {
                page.transfers.push(transfer);
                if page.transfers.len() == limit {
                    break;
                }
            }
        }
        if examined == changes.len() && changes.len() < asked as usize {
            // A short page: the store holds nothing more in the range.
            remaining = None;
        }
    }
    Ok(page)
}

/// A page of the change log, as [`read_changes`] returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChangePage {
    /// The changes of the page that belong to the ledger asked for, with
    /// their records, oldest first.
    pub changes: Vec<ResolvedChange>,
    /// The timestamp of the last change examined (the `after` asked for if
    /// none): the next page starts after it.
    pub cursor: u64,
    /// Whether the page reached the end of the log as the store holds it now.
    pub caught_up: bool,
}

/// The next page of the change log after the cursor `after`: examines up to
/// `limit` changes (1 to [`BATCH_EVENTS_MAX`]), keeps those of `ledger` (`0`:
/// every ledger) with the records they concern.
pub fn read_changes<S: Store + ?Sized>(
    store: &S,
    after: u64,
    ledger: LedgerId,
    limit: u32,
) -> Result<ChangePage, QueryError> {
    check_limit(limit)?;
    let changes = store.changes(&ChangeFilter::after(after, limit))?;
    let mut page = ChangePage { changes: Vec::with_capacity(changes.len()), cursor: after, caught_up: false };
    for change in &changes {
        if change.timestamp <= page.cursor {
            return Err(StoreError::Inconsistent {
                detail: format!("the change log lists {} after {}", change.timestamp, page.cursor),
            }
            .into());
        }
        page.cursor = change.timestamp;
        let resolved = resolve_change(store, change)?;
        if ledger.0 == 0 || resolved.record.ledger() == ledger {
            page.changes.push(resolved);
        }
    }
    page.caught_up = changes.len() < limit as usize;
    Ok(page)
}

/// The change with the record it concerns (an account as it was created).
pub fn resolve_change<S: Store + ?Sized>(store: &S, change: &Change) -> Result<ResolvedChange, QueryError> {
    let record = match change.kind {
        ChangeKind::LedgerCreated(id) => {
            ChangedRecord::LedgerCreated(store.ledger(id)?.ok_or_else(|| missing_record(change, "ledger"))?)
        }
        ChangeKind::AccountCreated { id, closed } => {
            let account = store.account(id)?.ok_or_else(|| missing_record(change, "account"))?;
            let flags = match closed {
                true => account.flags.with(AccountFlags::CLOSED),
                false => account.flags.without(AccountFlags::CLOSED),
            };
            ChangedRecord::AccountCreated(Account {
                flags,
                debits_pending: 0,
                debits_posted: 0,
                credits_pending: 0,
                credits_posted: 0,
                ..account
            })
        }
        ChangeKind::TransferCreated(id) => {
            ChangedRecord::TransferCreated(store.transfer(id)?.ok_or_else(|| missing_record(change, "transfer"))?)
        }
        ChangeKind::PendingExpired(id) => {
            ChangedRecord::PendingExpired(store.transfer(id)?.ok_or_else(|| missing_record(change, "transfer"))?)
        }
    };
    Ok(ResolvedChange { timestamp: change.timestamp, record })
}

/// The change log names a record the store does not hold.
fn missing_record(change: &Change, record: &str) -> QueryError {
    QueryError::Store(StoreError::Inconsistent {
        detail: format!(
            "the change log lists {:?} at {}, whose {record} does not exist",
            change.kind, change.timestamp
        ),
    })
}
