//! The data model: ledgers, accounts, transfers and the records the state
//! machine derives from them (pending status, history, balances).

use crate::close::CloseRecord;
use crate::flags::{AccountFlags, TransferFlags};
use crate::ids::{AccountId, LedgerId, TransferId};

/// The most events one batch may carry (one Raft entry's worth for one client).
pub const BATCH_EVENTS_MAX: usize = 8_189;

/// The most pending transfers one `expire_pending` operation expires; the
/// rest wait for the next one, so one entry's work stays bounded.
pub const EXPIRE_EVENTS_MAX: usize = 8_189;

/// The largest scale (decimal places of the minor unit) a ledger may have.
pub const LEDGER_SCALE_MAX: u8 = 18;

/// The longest currency or asset code, in bytes.
pub const LEDGER_CURRENCY_LEN_MAX: usize = 12;

/// The longest ledger name, in bytes.
pub const LEDGER_NAME_LEN_MAX: usize = 64;

/// Nanoseconds per second: a transfer's `timeout` is in seconds, timestamps in ns.
pub const NS_PER_S: u64 = 1_000_000_000;

/// A ledger: one currency or asset. Transfers move money only inside one ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ledger {
    /// The ledger's id.
    pub id: LedgerId,
    /// ISO 4217 code (`KRW`) or an asset name: 1 to 12 of `A-Z`, `0-9`, `_`.
    pub currency: String,
    /// Decimal places of the minor unit: `0` for KRW, `2` for USD.
    pub scale: u8,
    /// A human-readable name, 1 to 64 bytes.
    pub name: String,
    /// Set by the state machine when the ledger is created; must be `0` in a request.
    pub timestamp: u64,
    /// Where the ledger's fiscal period stands: a ledger is created `open`
    /// and moves forward only, by a `set_periods` operation.
    pub period: Period,
    /// The budget control its transfers are under (none by default); set
    /// when the ledger is created and fixed for its life.
    pub budget: BudgetPolicy,
    /// For a budget ledger: the share of an appropriation (a limited
    /// account's credits posted), in per cent, at which a transfer charging
    /// it raises a warning ([`budget_warning`]); `0`: none. At most 100.
    pub warn_percent: u8,
    /// The year-end close of this year, from the moment it began (`None` in
    /// a request: only a close sets it).
    pub close: Option<CloseRecord>,
}

impl Ledger {
    /// A ledger to create: its id, currency, scale and name; open, under
    /// no budget policy, with no timestamp yet.
    pub fn new(id: LedgerId, currency: &str, scale: u8, name: &str) -> Self {
        Self { id, currency: currency.to_owned(), scale, name: name.to_owned(), ..Self::default() }
    }
}

/// The most a ledger's `warn_percent` may be.
pub const WARN_PERCENT_MAX: u8 = 100;

/// Whether a transfer that took the debits (pending + posted) of an account
/// from `debits_before` to `debits_after` crosses the warning share
/// `warn_percent` of its `credits_posted`: the share it reached, in whole
/// per cent, if the account is limited (`debits_must_not_exceed_credits`),
/// holds credits, and was below the share before and is at or above it
/// after. Each crossing warns once; a void that falls back below re-arms it.
pub fn budget_warning(
    warn_percent: u8,
    flags: AccountFlags,
    debits_before: u128,
    debits_after: u128,
    credits_posted: u128,
) -> Option<u8> {
    if warn_percent == 0 || credits_posted == 0 || !flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
        return None;
    }
    // ceil(credits_posted × warn_percent / 100), without overflow.
    let percent = u128::from(warn_percent.min(WARN_PERCENT_MAX));
    let threshold = credits_posted / 100 * percent + (credits_posted % 100 * percent).div_ceil(100);
    if debits_before >= threshold || debits_after < threshold {
        return None;
    }
    // The share reached, in whole per cent (at most 100 while the limit holds).
    let share = match debits_after.checked_mul(100) {
        Some(hundredfold) => hundredfold / credits_posted,
        None => debits_after / (credits_posted / 100).max(1),
    };
    Some(u8::try_from(share.min(u128::from(WARN_PERCENT_MAX))).unwrap_or(WARN_PERCENT_MAX))
}

/// Where a ledger's fiscal period stands. A ledger stands for one fund's
/// fiscal year; it moves `open` → `adjustment` → `closed` (or straight from
/// `open` to `closed`), never back; a year-end close passes through
/// `closing` on its way to `closed` (see [`crate::close`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    /// Every transfer is accepted.
    #[default]
    Open,
    /// The closing-adjustment period after the year's end: only transfers
    /// flagged `adjustment` are accepted.
    Adjustment,
    /// A year-end close is under way: only the close's own transfers are
    /// accepted (others get `ledger_period_closed`), and no account is created.
    Closing,
    /// The year is settled: no transfer is accepted.
    Closed,
}

impl Period {
    /// Every period state, in code order.
    pub const ALL: [Self; 4] = [Self::Open, Self::Adjustment, Self::Closed, Self::Closing];

    /// The state's stable one-byte code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Adjustment => 2,
            Self::Closed => 3,
            Self::Closing => 4,
        }
    }

    /// The state with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|period| period.code() == code)
    }

    /// The state's lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Adjustment => "adjustment",
            Self::Closed => "closed",
            Self::Closing => "closing",
        }
    }

    /// The state named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|period| period.as_str() == name)
    }
}

/// One `set_periods` event: move `ledger` to `period`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeriodChange {
    /// The ledger.
    pub ledger: LedgerId,
    /// The period it moves to.
    pub period: Period,
}

/// A ledger's budget control: every expenditure of the ledger (a transfer
/// of kind `expenditure`, or with a code in `code_min ..= code_max`) must
/// carry, in its linked chain, its budget leg: a new transfer of the same
/// amount in the budget ledger `ledger` (which charges an appropriation,
/// allotment or commitment account there, whose limit flag bounds it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BudgetPolicy {
    /// The budget ledger; `0`: no budget control.
    pub ledger: LedgerId,
    /// The lowest transfer code that needs a leg besides expenditures
    /// (`0` with `code_max` `0`: expenditures only).
    pub code_min: u16,
    /// The highest such code.
    pub code_max: u16,
}

impl BudgetPolicy {
    /// Whether the policy controls anything.
    pub const fn is_set(&self) -> bool {
        self.ledger.0 != 0
    }

    /// Whether a new transfer of `kind` and `code` needs a budget leg.
    pub const fn needs_leg(&self, kind: TransferKind, code: u16) -> bool {
        self.is_set()
            && (matches!(kind, TransferKind::Expenditure)
                || (self.code_min != 0 && code >= self.code_min && code <= self.code_max))
    }
}

/// Whether an account holds treasury/bank cash or anything else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountKind {
    /// A treasury or bank cash account (one per fund: a hot account).
    Cash,
    /// Every other account: expense, revenue, appropriation, liability...
    #[default]
    Other,
}

/// The treasury meaning of a transfer, validated against its accounts' kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransferKind {
    /// A payment: debits a non-cash account, credits a cash account.
    Expenditure,
    /// Money received: debits a cash account, credits a non-cash account.
    Receipt,
    /// Cash moved between two cash accounts.
    CashTransfer,
    /// Any other entry; no rule on the accounts' kinds.
    #[default]
    Journal,
}

impl AccountKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 2] = [Self::Cash, Self::Other];

    /// The kind's stable one-byte code (used by encodings and the digest).
    pub const fn code(self) -> u8 {
        match self {
            Self::Cash => 1,
            Self::Other => 2,
        }
    }

    /// The kind with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The kind's lower-case name: `cash` or `other`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cash => "cash",
            Self::Other => "other",
        }
    }
}

impl TransferKind {
    /// Every kind, in code order.
    pub const ALL: [Self; 4] = [Self::Expenditure, Self::Receipt, Self::CashTransfer, Self::Journal];

    /// The kind's stable one-byte code (used by encodings and the digest).
    pub const fn code(self) -> u8 {
        match self {
            Self::Expenditure => 1,
            Self::Receipt => 2,
            Self::CashTransfer => 3,
            Self::Journal => 4,
        }
    }

    /// The kind with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The kind's snake-case name, e.g. `cash_transfer`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Expenditure => "expenditure",
            Self::Receipt => "receipt",
            Self::CashTransfer => "cash_transfer",
            Self::Journal => "journal",
        }
    }

    /// The account kinds this transfer kind requires on its debit and credit
    /// side; `None` where any kind is allowed.
    pub const fn required_kinds(self) -> (Option<AccountKind>, Option<AccountKind>) {
        match self {
            Self::Expenditure => (Some(AccountKind::Other), Some(AccountKind::Cash)),
            Self::Receipt => (Some(AccountKind::Cash), Some(AccountKind::Other)),
            Self::CashTransfer => (Some(AccountKind::Cash), Some(AccountKind::Cash)),
            Self::Journal => (None, None),
        }
    }
}

/// An account. Never deleted: only its balances and its `closed` flag change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Account {
    /// The account's id.
    pub id: AccountId,
    /// The ledger (currency) the account is kept in.
    pub ledger: LedgerId,
    /// Chart-of-accounts class; must not be `0`.
    pub code: u16,
    /// Cash or other.
    pub kind: AccountKind,
    /// Limit, history and closed flags.
    pub flags: AccountFlags,
    /// Amounts reserved against this account by pending transfers it is debited by.
    pub debits_pending: u128,
    /// Amounts debited by posted transfers.
    pub debits_posted: u128,
    /// Amounts reserved for this account by pending transfers it is credited by.
    pub credits_pending: u128,
    /// Amounts credited by posted transfers.
    pub credits_posted: u128,
    /// Free for the client: e.g. the local-government code.
    pub user_data_128: u128,
    /// Free for the client: e.g. the fund.
    pub user_data_64: u64,
    /// Free for the client: e.g. the budget line.
    pub user_data_32: u32,
    /// Set by the state machine at creation; must be `0` in a request.
    pub timestamp: u64,
}

impl Account {
    /// The account's four balances.
    pub const fn balances(&self) -> Balances {
        Balances {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }

    /// The account's four balances as they stand now, stamped with `timestamp`.
    pub const fn balance_at(&self, timestamp: u64) -> AccountBalance {
        AccountBalance {
            account_id: self.id,
            timestamp,
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }
}

/// A transfer between two accounts of one ledger. Immutable once created: a
/// mistake is corrected by another transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// The transfer's id.
    pub id: TransferId,
    /// The account debited.
    pub debit_account_id: AccountId,
    /// The account credited.
    pub credit_account_id: AccountId,
    /// Amount in the ledger's minor unit. In a `post_pending` request,
    /// [`Transfer::AMOUNT_MAX`] posts the whole pending amount.
    pub amount: u128,
    /// For `post_pending` / `void_pending`: the pending transfer; otherwise `0`.
    pub pending_id: TransferId,
    /// The ledger; must match both accounts'.
    pub ledger: LedgerId,
    /// The reason code; must not be `0`.
    pub code: u16,
    /// The treasury meaning, checked against the accounts' kinds.
    pub kind: TransferKind,
    /// Linked, two-phase, balancing and closing flags.
    pub flags: TransferFlags,
    /// For `pending` transfers: seconds until the reservation expires (`0`: never).
    pub timeout: u32,
    /// Free for the client: e.g. the payment request number.
    pub user_data_128: u128,
    /// Free for the client.
    pub user_data_64: u64,
    /// Free for the client.
    pub user_data_32: u32,
    /// Set by the state machine at creation; must be `0` in a request.
    pub timestamp: u64,
}

impl Transfer {
    /// In a `post_pending` request: post the pending transfer's whole amount.
    /// In a `void_pending` request, `0` or this value stand for the pending amount.
    pub const AMOUNT_MAX: u128 = u128::MAX;
}

/// Where a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingState {
    /// Reserved, not yet posted, voided or expired.
    Pending,
    /// Posted (in full or in part) by a `post_pending` transfer.
    Posted,
    /// Voided by a `void_pending` transfer.
    Voided,
    /// Its timeout passed and an `expire_pending` operation released it.
    Expired,
}

impl PendingState {
    /// Every state, in code order.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Posted, Self::Voided, Self::Expired];

    /// The state's stable one-byte code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Pending => 1,
            Self::Posted => 2,
            Self::Voided => 3,
            Self::Expired => 4,
        }
    }

    /// The state with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.code() == code)
    }
}

/// The status of one pending transfer, kept beside the immutable transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingStatus {
    /// Where it stands.
    pub state: PendingState,
    /// When it expires, in ns (`0`: never). A store keeps pending transfers
    /// with a non-zero `expires_at` in `Pending` state in an expiry index.
    pub expires_at: u64,
}

/// Which side of a transfer an account is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The account is the transfer's debit account.
    Debit,
    /// The account is the transfer's credit account.
    Credit,
}

/// One entry of an account's history index: `transfer_id` touched
/// `account_id` at `timestamp` on `side`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountTransfer {
    /// The account.
    pub account_id: AccountId,
    /// The transfer's timestamp.
    pub timestamp: u64,
    /// The transfer.
    pub transfer_id: TransferId,
    /// Which side the account is on.
    pub side: Side,
}

/// An account's four balances just after the event at `timestamp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountBalance {
    /// The account.
    pub account_id: AccountId,
    /// The event after which these balances held.
    pub timestamp: u64,
    /// See [`Account::debits_pending`].
    pub debits_pending: u128,
    /// See [`Account::debits_posted`].
    pub debits_posted: u128,
    /// See [`Account::credits_pending`].
    pub credits_pending: u128,
    /// See [`Account::credits_posted`].
    pub credits_posted: u128,
}

/// What one change to the ledger was, and which record it concerns.
///
/// A change is an event that changed the ledger: failed events and retries
/// that answer `exists` change nothing and record none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A ledger was created.
    LedgerCreated(LedgerId),
    /// An account was created. `closed` says whether it was created with the
    /// `closed` flag: that flag is the only field besides the balances that
    /// changes over an account's life, so the account as created is the
    /// account as it is now with zero balances and this flag.
    AccountCreated {
        /// The account.
        id: AccountId,
        /// Whether it was created closed.
        closed: bool,
    },
    /// A transfer was created (posts and voids of pending transfers included).
    TransferCreated(TransferId),
    /// A pending transfer's timeout passed and an `expire_pending` operation
    /// released its reservation.
    PendingExpired(TransferId),
}

impl ChangeKind {
    /// The kind's stable one-byte code (used by encodings and the digest).
    pub const fn code(self) -> u8 {
        match self {
            Self::LedgerCreated(_) => 1,
            Self::AccountCreated { .. } => 2,
            Self::TransferCreated(_) => 3,
            Self::PendingExpired(_) => 4,
        }
    }

    /// The kind's snake-case name, e.g. `transfer_created`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LedgerCreated(_) => "ledger_created",
            Self::AccountCreated { .. } => "account_created",
            Self::TransferCreated(_) => "transfer_created",
            Self::PendingExpired(_) => "pending_expired",
        }
    }
}

/// One entry of the change log: the event at `timestamp` changed the ledger.
///
/// The timestamp is the change's cursor: unique, strictly increasing in
/// commit order, and the same on every replica (event `i` of a batch is
/// stamped `timestamp + i`), so a reader that resumes after the last cursor
/// it processed sees every later change exactly once, on any replica. The
/// record is small on purpose (a kind and an id): the record it names is
/// read from the store when the change is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    /// The event's timestamp: the change's cursor.
    pub timestamp: u64,
    /// What changed.
    pub kind: ChangeKind,
    /// For a transfer created or a pending transfer expired: the debit and
    /// credit accounts' balances right after it, so a reconciliation feed
    /// needs no second read. `None` for a ledger or an account created.
    pub balances: Option<TransferBalances>,
}

/// The four balances of an account at one point in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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

/// The balances of a transfer's two accounts right after the transfer (or
/// the pending transfer's expiry) was applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TransferBalances {
    /// The debit account's.
    pub debit: Balances,
    /// The credit account's.
    pub credit: Balances,
}

/// A sum of many `u128` balances, exact: `high * 2^128 + low`. The sum of a
/// ledger's balances can pass `u128::MAX` even though no account's does;
/// it is then reported as an overflow, never wrapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Total {
    /// The multiples of 2^128.
    pub high: u64,
    /// The rest.
    pub low: u128,
}

impl Total {
    /// Adds `amount`. A total of at most 2^64 accounts' balances cannot
    /// pass `2^192`, so `high` cannot wrap.
    pub fn add(&mut self, amount: u128) {
        let (low, carry) = self.low.overflowing_add(amount);
        self.low = low;
        self.high = self.high.wrapping_add(u64::from(carry));
    }

    /// Subtracts `amount` (a balance that was added before).
    pub fn sub(&mut self, amount: u128) {
        let (low, borrow) = self.low.overflowing_sub(amount);
        self.low = low;
        self.high = self.high.wrapping_sub(u64::from(borrow));
    }

    /// The total as a `u128`, if it fits.
    pub const fn value(self) -> Option<u128> {
        match self.high {
            0 => Some(self.low),
            _ => None,
        }
    }
}

/// The running totals of one account code of one ledger: how many accounts
/// it has and the sums of their four balances. The state machine keeps them
/// as it applies, so a trial balance reads one record per code instead of
/// every account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodeTotals {
    /// The ledger.
    pub ledger: LedgerId,
    /// The account code.
    pub code: u16,
    /// Accounts of this ledger with this code.
    pub accounts: u64,
    /// Their debits pending.
    pub debits_pending: Total,
    /// Their debits posted.
    pub debits_posted: Total,
    /// Their credits pending.
    pub credits_pending: Total,
    /// Their credits posted.
    pub credits_posted: Total,
}

impl CodeTotals {
    /// Zero totals of `code` in `ledger`.
    pub fn empty(ledger: LedgerId, code: u16) -> Self {
        Self { ledger, code, ..Self::default() }
    }

    /// Adds one account's balances.
    pub fn add(&mut self, balances: &Balances) {
        self.debits_pending.add(balances.debits_pending);
        self.debits_posted.add(balances.debits_posted);
        self.credits_pending.add(balances.credits_pending);
        self.credits_posted.add(balances.credits_posted);
    }

    /// Subtracts one account's balances (added before).
    pub fn sub(&mut self, balances: &Balances) {
        self.debits_pending.sub(balances.debits_pending);
        self.debits_posted.sub(balances.debits_posted);
        self.credits_pending.sub(balances.credits_pending);
        self.credits_posted.sub(balances.credits_posted);
    }
}

/// An entry of a code's totals history: the totals right after a batch that
/// changed them. Batches cover disjoint, increasing timestamp ranges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TotalsEntry {
    /// The batch's first event timestamp.
    pub first_timestamp: u64,
    /// The batch's last event timestamp (the entry's key).
    pub last_timestamp: u64,
    /// The totals after the batch.
    pub totals: CodeTotals,
}

/// A change with the record it concerns, as a change feed delivers it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChangedRecord {
    /// The ledger created.
    LedgerCreated(Ledger),
    /// The account as created: zero balances, its flags at creation.
    AccountCreated(Account),
    /// The transfer created.
    TransferCreated(Transfer),
    /// The pending transfer that expired.
    PendingExpired(Transfer),
}

impl ChangedRecord {
    /// The ledger the change belongs to.
    pub fn ledger(&self) -> LedgerId {
        match self {
            Self::LedgerCreated(ledger) => ledger.id,
            Self::AccountCreated(account) => account.ledger,
            Self::TransferCreated(transfer) | Self::PendingExpired(transfer) => transfer.ledger,
        }
    }
}

/// A change of the log with the record it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolvedChange {
    /// The change's timestamp: its cursor.
    pub timestamp: u64,
    /// What changed, with the record.
    pub record: ChangedRecord,
    /// For a transfer created or expired: both accounts' balances after it.
    pub balances: Option<TransferBalances>,
}
