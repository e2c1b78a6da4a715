//! The year-end close: a fiscal year's ledger closed into the next year's.
//!
//! A close runs as a bounded sequence of operations, never as one whose cost
//! grows with the ledger (a 100,000-account year would hold every other
//! ledger's writes for its whole length):
//!
//! 1. [`CloseStep::Begin`] checks the request against the two ledgers and
//!    moves the year to [`Period::Closing`]: from then on no transfer but the
//!    close's own is accepted in it, and no account is created in it, so its
//!    balances are frozen.
//! 2. [`plan_close`] reads the frozen year (off the apply path, on a read
//!    view) and computes everything the close posts: the next year's
//!    accounts for carried balances, one closing transfer per nominal
//!    account with a balance (into the net position), one opening transfer
//!    per carried account with a balance (against the next year's opening
//!    account). Ids are derived from the accounts' ranks, so a plan made
//!    again after an interruption names the same transfers.
//! 3. The accounts are created with `create_accounts` and the transfers with
//!    [`CloseStep::Post`] in batches of at most [`BATCH_EVENTS_MAX`]: a
//!    retry of a batch answers `exists` for what was posted.
//! 4. [`CloseStep::Finish`] checks that every nominal code's running totals
//!    net to zero and that the close posted every transfer it planned, then
//!    moves the year to `closed` and keeps the close's record in it.
//!
//! A close that stops part-way leaves the year `closing` (no writes) with its
//! progress recorded; running the same close again continues it. Before its
//! first transfer it can be undone ([`CloseStep::Abort`]), which puts the year
//! back in the period it was in.

use crate::flags::AccountFlags;
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::model::{Account, Ledger, Period, Transfer, TransferKind, BATCH_EVENTS_MAX};
use crate::query::{query_accounts, QueryError, QueryFilter};
use crate::store::{Store, StoreError};

/// The most code ranges a close names as nominal, and as carried.
pub const CLOSE_CODE_RANGES_MAX: usize = 8;

/// An inclusive range of account codes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CodeRange {
    /// The lowest code of the range.
    pub min: u16,
    /// The highest code of the range.
    pub max: u16,
}

impl CodeRange {
    /// Whether `code` lies in the range.
    pub const fn contains(self, code: u16) -> bool {
        code >= self.min && code <= self.max
    }

    /// Whether the two ranges share a code.
    pub const fn overlaps(self, other: Self) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

/// Whether any of `ranges` contains `code`.
pub fn in_ranges(ranges: &[CodeRange], code: u16) -> bool {
    ranges.iter().any(|range| range.contains(code))
}

/// What a year-end close does, as its request names it. It is kept with
/// the closed year, so a retry of the same close is recognised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct YearClose {
    /// The fiscal year's ledger to close.
    pub ledger: LedgerId,
    /// The next year's ledger, which receives the opening balances.
    pub next_ledger: LedgerId,
    /// The account of `ledger` that the nominal accounts close into.
    pub net_position: AccountId,
    /// The account of `next_ledger` that is the other side of every
    /// opening balance.
    pub opening_account: AccountId,
    /// The codes of the nominal accounts (revenue and expense): each one's
    /// balance is closed into the net position. 1 to
    /// [`CLOSE_CODE_RANGES_MAX`] ranges.
    pub nominal: Vec<CodeRange>,
    /// The codes whose balances open the next year (real accounts, carried
    /// appropriations; the net position's code if it carries). Up to
    /// [`CLOSE_CODE_RANGES_MAX`] ranges, none shared with `nominal`.
    pub carry: Vec<CodeRange>,
    /// Account `a` of this year carries into account `a + account_offset` of
    /// the next (created by the close when it does not exist).
    pub account_offset: u128,
    /// The close's transfers have ids from here: `first_transfer_id + r` closes
    /// the account of rank `r` (0-based, by id, among the year's accounts),
    /// `first_transfer_id + accounts + r` opens it in the next year.
    pub first_transfer_id: u128,
    /// The code of the close's transfers (not under a budget policy).
    pub code: u16,
}

impl YearClose {
    /// The id of the transfer that closes the account of rank `rank`.
    pub fn closing_id(&self, rank: u64) -> Option<TransferId> {
        self.first_transfer_id.checked_add(u128::from(rank)).map(TransferId)
    }

    /// The id of the transfer that opens the account of rank `rank`, in a
    /// year of `accounts` accounts.
    pub fn opening_id(&self, accounts: u64, rank: u64) -> Option<TransferId> {
        self.first_transfer_id.checked_add(u128::from(accounts))?.checked_add(u128::from(rank)).map(TransferId)
    }

    /// The next year's account that `account` carries into.
    pub fn carried_id(&self, account: AccountId) -> Option<AccountId> {
        account.0.checked_add(self.account_offset).map(AccountId)
    }
}

/// A close's record, kept in the year's ledger from the moment it begins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CloseRecord {
    /// The close, as requested.
    pub close: YearClose,
    /// The year's accounts when it began (no account is created after).
    pub accounts: u64,
    /// The period the year was in before (an abort goes back to it).
    pub reopen_to: Period,
    /// The timestamp of the operation that began it: the year's state then
    /// is its trial balance before the close.
    pub begun_at: u64,
    /// Transfers the close has created so far.
    pub posted: u64,
    /// The timestamp of the operation that finished it; `0` while closing.
    pub finished_at: u64,
}

/// One operation of a year-end close (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseStep {
    /// Check the close and freeze the year (`closing`).
    Begin(Box<YearClose>),
    /// Create the close's transfers: like `create_transfers`, but the year
    /// being closed accepts them (its accounts even when `closed`).
    Post {
        /// The year being closed.
        ledger: LedgerId,
        /// The transfers: closing ones in `ledger`, opening ones in the next year.
        transfers: Vec<Transfer>,
    },
    /// Check the year is closed out and lock it (`closed`).
    Finish {
        /// The year being closed.
        ledger: LedgerId,
        /// How many transfers the plan has: the close must have posted them all.
        transfers: u64,
    },
    /// Undo a close that has posted nothing yet.
    Abort {
        /// The year being closed.
        ledger: LedgerId,
    },
}

impl CloseStep {
    /// The ledger the step is about.
    pub fn ledger(&self) -> LedgerId {
        match self {
            Self::Begin(close) => close.ledger,
            Self::Post { ledger, .. } | Self::Finish { ledger, .. } | Self::Abort { ledger } => *ledger,
        }
    }
}

/// What [`plan_close`] computes: everything a close posts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClosePlan {
    /// The next year's accounts that carried balances need, to create.
    pub accounts: Vec<Account>,
    /// The closing transfers (nominal accounts into the net position), by rank.
    pub closing: Vec<Transfer>,
    /// The opening transfers (carried balances in the next year), by rank.
    pub opening: Vec<Transfer>,
}

impl ClosePlan {
    /// How many transfers the close posts.
    pub fn transfers(&self) -> u64 {
        (self.closing.len() + self.opening.len()) as u64
    }
}

/// Why a close could not be planned; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ClosePlanError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the year's accounts failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The ledger is not being closed.
    #[error("ledger {0} is not closing: begin the close first")]
    NotClosing(LedgerId),
    /// The year's accounts changed while it was closing (corruption).
    #[error("ledger {ledger} has {found} accounts, {expected} when its close began")]
    AccountsChanged {
        /// The year.
        ledger: LedgerId,
        /// Accounts recorded when the close began.
        expected: u64,
        /// Accounts found now.
        found: u64,
    },
    /// A next-year account the close would carry into exists and differs.
    #[error("account {carried} (where account {account} carries) exists with another {field}: it must be in ledger {ledger} with the same code, kind, flags and user data")]
    CarriedAccountDiffers {
        /// The year's account.
        account: AccountId,
        /// The next year's account id it maps to.
        carried: AccountId,
        /// The next year's ledger.
        ledger: LedgerId,
        /// The field that differs.
        field: &'static str,
    },
    /// A transfer id of the close's range is taken by another transfer.
    #[error("transfer id {0} of the close's range is taken by another transfer: choose another first_transfer_id")]
    TransferIdTaken(TransferId),
    /// An id or a sum does not fit in 128 bits.
    #[error("{0} overflows 128 bits")]
    Overflow(&'static str),
}

/// A balance's side and size: `debits_posted - credits_posted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Zero,
    Debit(u128),
    Credit(u128),
}

fn net(debits_posted: u128, credits_posted: u128) -> Net {
    match debits_posted.cmp(&credits_posted) {
        std::cmp::Ordering::Equal => Net::Zero,
        std::cmp::Ordering::Greater => Net::Debit(debits_posted - credits_posted),
        std::cmp::Ordering::Less => Net::Credit(credits_posted - debits_posted),
    }
}

/// The year's accounts, in id order (read page by page from its index).
fn accounts_of<S: Store + ?Sized>(store: &S, ledger: LedgerId) -> Result<Vec<Account>, ClosePlanError> {
    let mut accounts = Vec::new();
    let mut filter = QueryFilter { ledger, ..QueryFilter::all(BATCH_EVENTS_MAX as u32) };
    loop {
        let page = query_accounts(store, &filter)?;
        accounts.extend(page.records);
        if page.next_timestamp == 0 {
            break;
        }
        filter.timestamp_min = page.next_timestamp;
    }
    accounts.sort_unstable_by_key(|account| account.id);
    Ok(accounts)
}

/// Computes the close of the year that `store` holds frozen (its ledger is
/// `closing`): the accounts to create and the transfers to post. Reads every
/// account of the year: run it on a read view, not on the apply path.
pub fn plan_close<S: Store + ?Sized>(store: &S, ledger: LedgerId) -> Result<ClosePlan, ClosePlanError> {
    let record = match store.ledger(ledger)? {
        Some(Ledger { period: Period::Closing | Period::Closed, close: Some(record), .. }) => record,
        _ => return Err(ClosePlanError::NotClosing(ledger)),
    };
    let close = &record.close;
    let accounts = accounts_of(store, ledger)?;
    if accounts.len() as u64 != record.accounts {
        return Err(ClosePlanError::AccountsChanged {
            ledger,
            expected: record.accounts,
            found: accounts.len() as u64,
        });
    }
    let mut plan = ClosePlan::default();
    // The net position's balance after the closing transfers.
    let (mut position_debits, mut position_credits) = (0u128, 0u128);
    let transfer =
        |id: TransferId, debit: AccountId, credit: AccountId, amount: u128, ledger: LedgerId, from: AccountId| {
            Transfer {
                id,
                debit_account_id: debit,
                credit_account_id: credit,
                amount,
                ledger,
                code: close.code,
                kind: TransferKind::Journal,
                user_data_128: from.0,
                ..Transfer::default()
            }
        };
    for (rank, account) in accounts.iter().enumerate() {
        if account.id == close.net_position || !in_ranges(&close.nominal, account.code) {
            continue;
        }
        let id = close.closing_id(rank as u64).ok_or(ClosePlanError::Overflow("a closing transfer id"))?;
        let closing = match net(account.debits_posted, account.credits_posted) {
            Net::Zero => continue,
            Net::Debit(amount) => {
                position_debits =
                    position_debits.checked_add(amount).ok_or(ClosePlanError::Overflow("net position"))?;
                transfer(id, close.net_position, account.id, amount, ledger, account.id)
            }
            Net::Credit(amount) => {
                position_credits =
                    position_credits.checked_add(amount).ok_or(ClosePlanError::Overflow("net position"))?;
                transfer(id, account.id, close.net_position, amount, ledger, account.id)
            }
        };
        plan.closing.push(closing);
    }
    for (rank, account) in accounts.iter().enumerate() {
        if !in_ranges(&close.carry, account.code) {
            continue;
        }
        let (mut debits, mut credits) = (account.debits_posted, account.credits_posted);
        if account.id == close.net_position {
            debits = debits.checked_add(position_debits).ok_or(ClosePlanError::Overflow("net position"))?;
            credits = credits.checked_add(position_credits).ok_or(ClosePlanError::Overflow("net position"))?;
        }
        let balance = net(debits, credits);
        if balance == Net::Zero {
            continue;
        }
        let carried = close.carried_id(account.id).ok_or(ClosePlanError::Overflow("a carried account id"))?;
        let id =
            close.opening_id(record.accounts, rank as u64).ok_or(ClosePlanError::Overflow("an opening transfer id"))?;
        plan.accounts.push(carried_account(account, carried, close.next_ledger));
        plan.opening.push(match balance {
            Net::Debit(amount) => transfer(id, carried, close.opening_account, amount, close.next_ledger, account.id),
            Net::Credit(amount) => transfer(id, close.opening_account, carried, amount, close.next_ledger, account.id),
            Net::Zero => continue,
        });
    }
    check_plan(store, close, &plan)?;
    Ok(plan)
}

/// The next year's account that `account` carries into: the same code,
/// kind, flags (not `closed` or `linked`) and user data.
fn carried_account(account: &Account, id: AccountId, ledger: LedgerId) -> Account {
    Account {
        id,
        ledger,
        code: account.code,
        kind: account.kind,
        flags: account.flags.without(AccountFlags::CLOSED | AccountFlags::LINKED),
        user_data_128: account.user_data_128,
        user_data_64: account.user_data_64,
        user_data_32: account.user_data_32,
        ..Account::default()
    }
}

/// Checks that what the plan creates either does not exist or exists as
/// planned, so posting it cannot stop on a conflict that is already there.
fn check_plan<S: Store + ?Sized>(store: &S, close: &YearClose, plan: &ClosePlan) -> Result<(), ClosePlanError> {
    for wanted in &plan.accounts {
        let Some(found) = store.account(wanted.id)? else { continue };
        let field = if found.ledger != wanted.ledger {
            "ledger"
        } else if found.code != wanted.code {
            "code"
        } else if found.kind != wanted.kind {
            "kind"
        } else if found.flags.without(AccountFlags::CLOSED) != wanted.flags {
            "flags"
        } else if (found.user_data_128, found.user_data_64, found.user_data_32)
            != (wanted.user_data_128, wanted.user_data_64, wanted.user_data_32)
        {
            "user data"
        } else if found.flags.contains(AccountFlags::CLOSED) {
            "closed flag"
        } else {
            continue;
        };
        return Err(ClosePlanError::CarriedAccountDiffers {
            account: AccountId(wanted.id.0 - close.account_offset),
            carried: wanted.id,
            ledger: wanted.ledger,
            field,
        });
    }
    for planned in plan.closing.iter().chain(&plan.opening) {
        if let Some(found) = store.transfer(planned.id)? {
            let same = found.debit_account_id == planned.debit_account_id
                && found.credit_account_id == planned.credit_account_id
                && found.amount == planned.amount
                && found.ledger == planned.ledger
                && found.code == planned.code
                && found.user_data_128 == planned.user_data_128
                && found.flags == planned.flags;
            if !same {
                return Err(ClosePlanError::TransferIdTaken(planned.id));
            }
        } else if store.transfer_failure(planned.id)?.is_some() {
            return Err(ClosePlanError::TransferIdTaken(planned.id));
        }
    }
    Ok(())
}
