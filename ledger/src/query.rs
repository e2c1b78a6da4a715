//! Reads: lookups, account history, balances as of a timestamp, trial balance.
//!
//! Reads see only committed state and change nothing.

use crate::flags::AccountFlags;
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::model::{Account, AccountBalance, Transfer, BATCH_EVENTS_MAX};
use crate::store::{AccountFilter, Store, StoreError};

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
    if filter.limit == 0 || filter.limit as usize > BATCH_EVENTS_MAX {
        return Err(QueryError::InvalidField {
            field: "limit",
            reason: format!("{} is not between 1 and {BATCH_EVENTS_MAX}", filter.limit),
        });
    }
    if filter.timestamp_max != 0 && filter.timestamp_min > filter.timestamp_max {
        return Err(QueryError::InvalidField {
            field: "timestamp_min",
            reason: format!("{} is after timestamp_max {}", filter.timestamp_min, filter.timestamp_max),
        });
    }
    Ok(())
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
