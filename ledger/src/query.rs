//! Reads: lookups, account history, balances as of a timestamp, trial
//! balance, and the change log (pages of changes for feeds, transfers by
//! their fields).
//!
//! Reads see only committed state and change nothing.

use rustc_hash::FxHashMap;

use crate::flags::AccountFlags;
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::index::{IndexField, IndexKey, Indexed};
use crate::model::{
    Account, AccountBalance, Change, ChangeKind, ChangedRecord, CodeTotals, ResolvedChange, Total, Transfer,
    TransferKind, BATCH_EVENTS_MAX,
};
use crate::store::{AccountFilter, ChangeFilter, Store, StoreError};

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
    /// A code's running totals as `u128` sums, or the sum that overflows.
    fn of(totals: &CodeTotals) -> Result<Self, QueryError> {
        let value = |total: Total, what| total.value().ok_or(QueryError::Overflow { what });
        Ok(Self {
            accounts: totals.accounts,
            debits_pending: value(totals.debits_pending, "debits_pending")?,
            debits_posted: value(totals.debits_posted, "debits_posted")?,
            credits_pending: value(totals.credits_pending, "credits_pending")?,
            credits_posted: value(totals.credits_posted, "credits_posted")?,
        })
    }

    fn add(&mut self, other: &Self) -> Result<(), QueryError> {
        let sum = |total: u128, amount: u128, what| total.checked_add(amount).ok_or(QueryError::Overflow { what });
        self.accounts += other.accounts;
        self.debits_pending = sum(self.debits_pending, other.debits_pending, "debits_pending")?;
        self.debits_posted = sum(self.debits_posted, other.debits_posted, "debits_posted")?;
        self.credits_pending = sum(self.credits_pending, other.credits_pending, "credits_pending")?;
        self.credits_posted = sum(self.credits_posted, other.credits_posted, "credits_posted")?;
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

impl TrialBalance {
    fn of(ledger: LedgerId, totals: impl IntoIterator<Item = CodeTotals>) -> Result<Self, QueryError> {
        let mut balance = Self { ledger, ..Self::default() };
        for code_totals in totals.into_iter().filter(|totals| totals.accounts > 0) {
            let row = BalanceTotals::of(&code_totals)?;
            balance.total.add(&row)?;
            balance.codes.push((code_totals.code, row));
        }
        Ok(balance)
    }
}

/// The trial balance of one ledger now, from the running totals the state
/// machine keeps: one read per account code, whatever the number of accounts.
pub fn trial_balance<S: Store + ?Sized>(store: &S, ledger: LedgerId) -> Result<TrialBalance, QueryError> {
    if store.ledger(ledger)?.is_none() {
        return Err(QueryError::LedgerNotFound(ledger));
    }
    TrialBalance::of(ledger, store.ledger_totals(ledger)?)
}

/// The trial balance of one ledger as it stood at `timestamp` (after every
/// event stamped at or before it), e.g. at a period end.
///
/// For each account code it reads the last totals-history entry at or
/// before `timestamp`. When `timestamp` falls inside a write (a batch's
/// events carry consecutive timestamps and its totals are recorded once,
/// at its end; a replica may write a run of up to [`RUN_BATCHES_MAX`]
/// batches at once, see [`crate::Run`]), the events of that write up to
/// `timestamp` are replayed from the change log on top: at most
/// [`RUN_BATCHES_MAX`] × [`BATCH_EVENTS_MAX`] of them. The cost is one or
/// two reads per code, plus that bounded replay.
///
/// [`RUN_BATCHES_MAX`]: crate::RUN_BATCHES_MAX
pub fn trial_balance_as_of<S: Store + ?Sized>(
    store: &S,
    ledger: LedgerId,
    timestamp: u64,
) -> Result<TrialBalance, QueryError> {
    if store.ledger(ledger)?.is_none() {
        return Err(QueryError::LedgerNotFound(ledger));
    }
    check_as_of(store, timestamp)?;
    let mut codes = std::collections::BTreeMap::new();
    let mut straddled = None;
    for now in store.ledger_totals(ledger)? {
        let (before, after) = store.totals_around(ledger, now.code, timestamp)?;
        let base = before.map_or_else(|| CodeTotals::empty(ledger, now.code), |entry| entry.totals);
        if let Some(after) = after.filter(|after| after.first_timestamp <= timestamp) {
            straddled = Some(after.first_timestamp);
        }
        codes.insert(now.code, base);
    }
    if let Some(first_timestamp) = straddled {
        replay(store, ledger, first_timestamp, timestamp, &mut codes)?;
    }
    TrialBalance::of(ledger, codes.into_values())
}

/// Refuses an as-of timestamp of `0` or one after the last applied event
/// (a state that does not exist yet).
fn check_as_of<S: Store + ?Sized>(store: &S, timestamp: u64) -> Result<(), QueryError> {
    let last_timestamp = store.last_timestamp()?;
    if timestamp == 0 || timestamp > last_timestamp {
        return Err(QueryError::InvalidField {
            field: "timestamp",
            reason: format!(
                "{timestamp} is not a past event timestamp (the last applied event is at {last_timestamp})"
            ),
        });
    }
    Ok(())
}

/// Adds the effect of the events in `first ..= last` that concern `ledger`
/// to its codes' totals: an account created counts, a transfer moves its
/// amount into the pending or posted sums (a post or void first releases
/// its pending transfer's amount), an expiry releases one.
fn replay<S: Store + ?Sized>(
    store: &S,
    ledger: LedgerId,
    first: u64,
    last: u64,
    codes: &mut std::collections::BTreeMap<u16, CodeTotals>,
) -> Result<(), QueryError> {
    use crate::flags::TransferFlags as F;
    let mut account_codes = FxHashMap::<AccountId, u16>::default();
    let mut code_of = |id: AccountId| -> Result<u16, QueryError> {
        if let Some(code) = account_codes.get(&id) {
            return Ok(*code);
        }
        let account = store.account(id)?.ok_or_else(|| {
            QueryError::Store(StoreError::Inconsistent {
                detail: format!("a transfer names account {id}, which does not exist"),
            })
        })?;
        account_codes.insert(id, account.code);
        Ok(account.code)
    };
    let mut range =
        ChangeFilter { timestamp_min: first, timestamp_max: last, limit: SCAN_PAGE_CHANGES, reversed: false };
    loop {
        let page = store.changes(&range)?;
        for change in &page {
            let record = resolve_change(store, change)?.record;
            if record.ledger() != ledger {
                continue;
            }
            let (transfer, expired) = match record {
                ChangedRecord::LedgerCreated(_) => continue,
                ChangedRecord::AccountCreated(account) => {
                    codes.entry(account.code).or_insert_with(|| CodeTotals::empty(ledger, account.code)).accounts += 1;
                    continue;
                }
                ChangedRecord::TransferCreated(transfer) => (transfer, false),
                ChangedRecord::PendingExpired(transfer) => (transfer, true),
            };
            let mut effect = Effect::default();
            if expired || transfer.flags.intersects(F::POST_PENDING | F::VOID_PENDING) {
                let pending_id = if expired { transfer.id } else { transfer.pending_id };
                let pending = store.transfer(pending_id)?.ok_or_else(|| missing_record(change, "pending transfer"))?;
                effect.released = pending.amount;
            }
            if !expired && !transfer.flags.contains(F::VOID_PENDING) {
                match transfer.flags.contains(F::PENDING) {
                    true => effect.pending = transfer.amount,
                    false => effect.posted = transfer.amount,
                }
            }
            for (account, debit) in [(transfer.debit_account_id, true), (transfer.credit_account_id, false)] {
                let code = code_of(account)?;
                let totals = codes.entry(code).or_insert_with(|| CodeTotals::empty(ledger, code));
                effect.apply(totals, debit);
            }
        }
        match page.last().and_then(|change| change.timestamp.checked_add(1)) {
            Some(next) if page.len() == SCAN_PAGE_CHANGES as usize => range.timestamp_min = next,
            _ => return Ok(()),
        }
    }
}

/// What one transfer event does to one side of its accounts' balances.
#[derive(Clone, Copy, Default)]
struct Effect {
    /// Pending amount released (a post, void or expiry of a pending transfer).
    released: u128,
    /// Amount newly pending.
    pending: u128,
    /// Amount newly posted.
    posted: u128,
}

impl Effect {
    fn apply(self, totals: &mut CodeTotals, debit: bool) {
        let (pending, posted) = match debit {
            true => (&mut totals.debits_pending, &mut totals.debits_posted),
            false => (&mut totals.credits_pending, &mut totals.credits_posted),
        };
        pending.sub(self.released);
        pending.add(self.pending);
        posted.add(self.posted);
    }
}

/// The most index entries one query reads (each a seek). A query that
/// reaches it before filling its page returns what it found with a
/// continuation; the next page goes on from there.
pub const QUERY_SEEKS_MAX: u32 = 16_384;

/// The fields a query selects records by: every field that is set
/// (non-zero, `Some`) must match. Used by [`query_transfers`] and
/// [`query_accounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueryFilter {
    /// The ledger (`0`: any).
    pub ledger: LedgerId,
    /// The code (`0`: any).
    pub code: u16,
    /// The kind's code (`0`: any): a [`TransferKind`] code for transfers, an
    /// [`AccountKind`](crate::AccountKind) code for accounts.
    pub kind: u8,
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
    /// Most records to return: 1 to [`BATCH_EVENTS_MAX`].
    pub limit: u32,
    /// Newest first instead of oldest first.
    pub reversed: bool,
}

impl QueryFilter {
    /// Every record, oldest first, at most `limit` of them (a query needs
    /// a field or a time bound besides).
    pub const fn all(limit: u32) -> Self {
        Self {
            ledger: LedgerId(0),
            code: 0,
            kind: 0,
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            timestamp_min: 0,
            timestamp_max: 0,
            limit,
            reversed: false,
        }
    }

    /// Whether `transfer` has every field the filter sets (time aside).
    pub fn matches(&self, transfer: &Transfer) -> bool {
        (self.ledger.0 == 0 || transfer.ledger == self.ledger)
            && (self.code == 0 || transfer.code == self.code)
            && (self.kind == 0 || transfer.kind.code() == self.kind)
            && (self.user_data_128 == 0 || transfer.user_data_128 == self.user_data_128)
            && (self.user_data_64 == 0 || transfer.user_data_64 == self.user_data_64)
            && (self.user_data_32 == 0 || transfer.user_data_32 == self.user_data_32)
    }

    /// Whether `account` has every field the filter sets (time aside).
    pub fn matches_account(&self, account: &Account) -> bool {
        (self.ledger.0 == 0 || account.ledger == self.ledger)
            && (self.code == 0 || account.code == self.code)
            && (self.kind == 0 || account.kind.code() == self.kind)
            && (self.user_data_128 == 0 || account.user_data_128 == self.user_data_128)
            && (self.user_data_64 == 0 || account.user_data_64 == self.user_data_64)
            && (self.user_data_32 == 0 || account.user_data_32 == self.user_data_32)
    }

    /// The indexes of the fields the filter sets.
    fn keys(&self, records: Indexed) -> Vec<IndexKey> {
        [
            (self.ledger.0 != 0).then_some(IndexField::Ledger(self.ledger.0)),
            (self.code != 0).then_some(IndexField::Code(self.code)),
            (self.kind != 0).then_some(IndexField::Kind(self.kind)),
            (self.user_data_128 != 0).then_some(IndexField::UserData128(self.user_data_128)),
            (self.user_data_64 != 0).then_some(IndexField::UserData64(self.user_data_64)),
            (self.user_data_32 != 0).then_some(IndexField::UserData32(self.user_data_32)),
        ]
        .into_iter()
        .flatten()
        .map(|field| IndexKey { records, field })
        .collect()
    }

    fn check(&self, kinds: &[u8]) -> Result<(), QueryError> {
        check_limit(self.limit)?;
        check_range(self.timestamp_min, self.timestamp_max)?;
        if self.kind != 0 && !kinds.contains(&self.kind) {
            return Err(QueryError::InvalidField {
                field: "kind",
                reason: format!("{} is not a kind code", self.kind),
            });
        }
        let unbounded = self.timestamp_min == 0 && self.timestamp_max == 0;
        if unbounded && self.keys(Indexed::Transfers).is_empty() {
            return Err(QueryError::InvalidField {
                field: "filter",
                reason: "set a field to select by (ledger, code, kind, user_data) or a time range".into(),
            });
        }
        Ok(())
    }
}

/// The transfers [`query_transfers`] looks for.
pub type TransferQuery = QueryFilter;

/// A page of a query's results.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueryPage<T> {
    /// The records found, in the query's order.
    pub records: Vec<T>,
    /// Where to continue: the next page asks with this as `timestamp_min`
    /// (`timestamp_max` if reversed). `0`: the range is exhausted.
    pub next_timestamp: u64,
}

/// What [`query_transfers`] found.
pub type TransferPage = QueryPage<Transfer>;

/// The timestamps a query walks, both ends inclusive.
#[derive(Clone, Copy, Debug)]
struct Window {
    low: u64,
    high: u64,
    reversed: bool,
}

impl Window {
    fn of(filter: &QueryFilter) -> Self {
        let high = if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max };
        Self { low: filter.timestamp_min, high, reversed: filter.reversed }
    }

    /// The end the walk starts from.
    const fn front(self) -> u64 {
        if self.reversed {
            self.high
        } else {
            self.low
        }
    }

    /// The window past `timestamp`, in the walk's direction; `None` if empty.
    fn after(self, timestamp: u64) -> Option<Self> {
        let rest = if self.reversed {
            Self { high: timestamp.checked_sub(1)?, ..self }
        } else {
            Self { low: timestamp.checked_add(1)?, ..self }
        };
        (rest.low <= rest.high).then_some(rest)
    }
}

/// Walks the indexes `keys` together from the front of `window` and returns
/// the timestamps all of them hold (at most `limit`), and where to go on.
/// Each step seeks one index to the current candidate timestamp; an index
/// that answers later moves the candidate, and a candidate that every index
/// holds is a match. At most [`QUERY_SEEKS_MAX`] seeks.
fn intersect<S: Store + ?Sized>(
    store: &S,
    keys: &[IndexKey],
    mut window: Window,
    limit: usize,
) -> Result<(Vec<u64>, u64), QueryError> {
    let mut found = Vec::new();
    let mut seeks = 0;
    'walk: loop {
        let mut agreed = 0;
        let mut index = 0;
        while agreed < keys.len() {
            if seeks == QUERY_SEEKS_MAX {
                return Ok((found, window.front()));
            }
            seeks += 1;
            let Some(key) = keys.get(index) else { break };
            let Some(timestamp) = store.index_seek(key, window.low, window.high, window.reversed)? else {
                break 'walk;
            };
            if timestamp == window.front() {
                agreed += 1;
            } else {
                agreed = 1;
                window = match window.reversed {
                    true => Window { high: timestamp, ..window },
                    false => Window { low: timestamp, ..window },
                };
            }
            index = (index + 1) % keys.len();
        }
        let candidate = window.front();
        if found.len() == limit {
            // One match past the page: the next page starts at it.
            return Ok((found, candidate));
        }
        found.push(candidate);
        match window.after(candidate) {
            Some(rest) => window = rest,
            None => break,
        }
    }
    Ok((found, 0))
}

/// The records a filter selects, as `(timestamp, id)`: from the indexes
/// when it sets a field (the change log names each match's id), else from
/// the change log alone (a time range only, whose creations of `records`
/// are the matches). Stops at `limit` records, at one past them (whose
/// timestamp is where the next page starts), or after [`QUERY_SEEKS_MAX`]
/// steps (the next page starts where it stopped).
fn select<S: Store + ?Sized>(
    store: &S,
    filter: &QueryFilter,
    records: Indexed,
) -> Result<(Vec<(u64, u128)>, u64), QueryError> {
    let keys = filter.keys(records);
    let window = Window::of(filter);
    let limit = filter.limit as usize;
    if !keys.is_empty() {
        let (timestamps, next) = intersect(store, &keys, window, limit)?;
        let mut found = Vec::with_capacity(timestamps.len());
        for timestamp in timestamps {
            let change = store.changes(&ChangeFilter {
                timestamp_min: timestamp,
                timestamp_max: timestamp,
                limit: 1,
                reversed: false,
            })?;
            let id = change.first().and_then(|change| created_id(records, change.kind)).ok_or_else(|| {
                QueryError::Store(StoreError::Inconsistent {
                    detail: format!(
                        "an index lists {records:?} at {timestamp}, where the change log has no such creation"
                    ),
                })
            })?;
            found.push((timestamp, id));
        }
        return Ok((found, next));
    }
    let mut found = Vec::new();
    let mut window = Some(window);
    let mut examined = 0;
    while let Some(range) = window {
        if examined >= QUERY_SEEKS_MAX {
            return Ok((found, range.front()));
        }
        let changes = store.changes(&ChangeFilter {
            timestamp_min: range.low,
            timestamp_max: range.high,
            limit: SCAN_PAGE_CHANGES,
            reversed: range.reversed,
        })?;
        for change in &changes {
            examined += 1;
            window = range.after(change.timestamp);
            let Some(id) = created_id(records, change.kind) else { continue };
            if found.len() == limit {
                return Ok((found, change.timestamp));
            }
            found.push((change.timestamp, id));
        }
        if changes.len() < SCAN_PAGE_CHANGES as usize {
            // A short page: the store holds nothing more in the range.
            window = None;
        }
    }
    Ok((found, 0))
}

/// The id of the record of kind `records` a change created, if it created one.
fn created_id(records: Indexed, kind: ChangeKind) -> Option<u128> {
    match (records, kind) {
        (Indexed::Transfers, ChangeKind::TransferCreated(id)) => Some(id.0),
        (Indexed::Accounts, ChangeKind::AccountCreated { id, .. }) => Some(id.0),
        _ => None,
    }
}

/// The transfers that match `query`, from the secondary indexes of the
/// fields it sets (intersected) or, for a time range alone, from the change
/// log; oldest or newest first, at most `limit`, with a continuation.
pub fn query_transfers<S: Store + ?Sized>(store: &S, query: &QueryFilter) -> Result<TransferPage, QueryError> {
    query.check(&TransferKind::ALL.map(TransferKind::code))?;
    let page = query_page(store, query, Indexed::Transfers, "transfer", |id| store.transfer(TransferId(id)))?;
    debug_assert!(page.records.iter().all(|transfer| query.matches(transfer)), "index entries match their fields");
    Ok(page)
}

/// The accounts that match `query` (by creation timestamp), as
/// [`query_transfers`] finds transfers; each with its balances now.
pub fn query_accounts<S: Store + ?Sized>(store: &S, query: &QueryFilter) -> Result<QueryPage<Account>, QueryError> {
    query.check(&crate::AccountKind::ALL.map(crate::AccountKind::code))?;
    query_page(store, query, Indexed::Accounts, "account", |id| store.account(AccountId(id)))
}

/// The page of `records` that `query` selects, each record read by `read`
/// from its id (`what` names it in the error when one is missing).
fn query_page<S: Store + ?Sized, T>(
    store: &S,
    query: &QueryFilter,
    records: Indexed,
    what: &str,
    read: impl Fn(u128) -> Result<Option<T>, StoreError>,
) -> Result<QueryPage<T>, QueryError> {
    let (entries, next_timestamp) = select(store, query, records)?;
    let mut found = Vec::with_capacity(entries.len());
    for (timestamp, id) in entries {
        found.push(read(id)?.ok_or_else(|| {
            QueryError::Store(StoreError::Inconsistent {
                detail: format!("the change log lists {what} {id} at {timestamp}, which does not exist"),
            })
        })?);
    }
    Ok(QueryPage { records: found, next_timestamp })
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
    Ok(ResolvedChange { timestamp: change.timestamp, record, balances: change.balances })
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
