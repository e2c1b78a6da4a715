//! Wire (`coffer.v1` messages) ⇄ `coffer_ledger` types.
//!
//! Everything that arrives from the network is checked here, and every
//! refusal is a [`FieldError`] naming the field with its position
//! (`transfers[3].amount`), which `status` turns into `INVALID_ARGUMENT`.
//! Nothing here panics on input.
//!
//! What the API refuses and what the ledger answers are split on purpose:
//! the API refuses only what the ledger cannot even represent or judge
//! (text that is not a number, an amount finer than the ledger's scale, a
//! code above `u16::MAX`, an enum value it does not know, a batch above
//! [`BATCH_EVENTS_MAX`]); everything the ledger has a result code for (an id
//! of 0, a non-zero timestamp, an unknown account...) is left to the ledger,
//! so one bad event gets its own result instead of failing its whole batch.

use std::collections::BTreeMap;

use coffer_ledger::amount::{format_amount, parse_amount, AmountError};
use coffer_ledger::close::{CloseRecord, CLOSE_CODE_RANGES_MAX};
use coffer_ledger::{
    Account, AccountBalance, AccountFilter, AccountFlags, AccountId, AccountKind, BalanceTotals, Balances,
    BudgetPolicy, ChangedRecord, CloseResult, CodeRange, CreateAccountResult, CreateLedgerResult, CreateTransferResult,
    Ledger, LedgerId, Period, PeriodChange, QueryFilter, ResolvedChange, SetPeriodResult, Sides, Transfer,
    TransferBalances, TransferFlags, TransferId, TransferKind, TransferQuery, TrialBalance, YearClose,
    BATCH_EVENTS_MAX, WARN_PERCENT_MAX,
};

use crate::proto;

/// The wire form of [`Transfer::AMOUNT_MAX`] ("post the whole pending amount").
pub const AMOUNT_MAX_TEXT: &str = "max";

/// The longest decimal text of a `u128` (39 digits).
const U128_DIGITS_MAX: usize = 39;

/// A request field the API refuses: `field` names it with its position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, with its position (`transfers[3].amount`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// How the amounts of a message are written, and the scales to read them at.
#[derive(Clone, Copy, Debug)]
pub enum Amounts<'a> {
    /// Integer counts of the ledger's minor unit (`AMOUNT_UNIT_MINOR`).
    Minor,
    /// Decimal strings at each ledger's scale; a ledger missing from the map
    /// does not exist (as far as the server could see).
    Decimal(&'a BTreeMap<LedgerId, u8>),
}

impl Amounts<'_> {
    /// The scale amounts of `ledger` are written at: `None` when the ledger
    /// is unknown.
    fn scale(self, ledger: LedgerId) -> Option<u8> {
        match self {
            Self::Minor => Some(0),
            Self::Decimal(scales) => scales.get(&ledger).copied(),
        }
    }

    /// Parses the amount `text` of `field`, kept in `ledger`.
    pub fn parse(self, field: &str, text: &str, ledger: LedgerId) -> Result<u128, FieldError> {
        if text.is_empty() {
            return Ok(0);
        }
        let scale = self.scale(ledger);
        let shown = truncated(text);
        parse_amount(field, text, scale.unwrap_or(0)).map_err(|error| match error {
            AmountError::Invalid { .. } => FieldError::new(field, format!("{shown:?} is not a decimal number")),
            AmountError::Negative { .. } => FieldError::new(field, format!("{shown:?} is negative")),
            AmountError::OutOfRange { .. } => FieldError::new(field, format!("{shown} is out of range")),
            AmountError::TooManyDecimalPlaces { .. } => {
                let reason = match (self, scale) {
                    (Self::Minor, _) => format!("{shown} is not a whole number of minor units (amount_unit is minor)"),
                    (Self::Decimal(_), Some(scale)) => {
                        format!("{shown} has more decimal places than ledger {ledger}'s scale {scale}")
                    }
                    (Self::Decimal(_), None) => {
                        format!(
                            "{shown} has decimal places, and ledger {ledger} does not exist, so its scale is unknown"
                        )
                    }
                };
                FieldError::new(field, reason)
            }
        })
    }

    /// Formats `amount`, kept in `ledger`, for a response. A ledger missing
    /// from the map (which a stored record never names) is written at scale 0.
    pub fn format(self, amount: u128, ledger: LedgerId) -> String {
        format_amount(amount, self.scale(ledger).unwrap_or(0))
    }
}

/// Which form a request asked for, from its `amount_unit` field.
pub fn amount_unit(field: &str, value: i32) -> Result<proto::AmountUnit, FieldError> {
    proto::AmountUnit::try_from(value).map_err(|_| FieldError::new(field, format!("{value} is not an amount unit")))
}

/// Refuses a batch (or id list) of more than [`BATCH_EVENTS_MAX`] entries.
pub fn check_batch(field: &str, len: usize) -> Result<(), FieldError> {
    if len > BATCH_EVENTS_MAX {
        return Err(FieldError::new(field, format!("{len} entries, more than the {BATCH_EVENTS_MAX} allowed")));
    }
    Ok(())
}

/// Refuses a batch of events to create (ledgers, accounts, transfers) that
/// is empty or larger than [`BATCH_EVENTS_MAX`]: an empty one would commit
/// a Raft entry that changes nothing.
pub fn check_events(field: &str, len: usize) -> Result<(), FieldError> {
    if len == 0 {
        return Err(FieldError::new(field, format!("no entries: a batch holds 1 to {BATCH_EVENTS_MAX}")));
    }
    check_batch(field, len)
}

/// Parses a 128-bit id or `user_data_128` (decimal digits; empty is 0).
pub fn parse_u128(field: &str, text: &str) -> Result<u128, FieldError> {
    if text.is_empty() {
        return Ok(0);
    }
    if text.len() > U128_DIGITS_MAX || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::new(field, format!("{:?} is not a decimal 128-bit number", truncated(text))));
    }
    decimal_u128(text.as_bytes()).ok_or_else(|| FieldError::new(field, format!("{text} is more than u128::MAX")))
}

/// The value of ASCII decimal `digits` (checked by the caller), `None` past
/// `u128::MAX`. Nineteen digits at a time in `u64`, then one `u128`
/// multiply-add per group: a leader parses five of these per transfer, and
/// digit-by-digit `u128` arithmetic was 1 % of the cluster's CPU.
fn decimal_u128(digits: &[u8]) -> Option<u128> {
    const GROUP: usize = 19;
    let mut value: u128 = 0;
    for group in digits.rchunks(GROUP).rev() {
        let part = group.iter().fold(0u64, |part, digit| part * 10 + u64::from(digit - b'0'));
        value = value.checked_mul(10u128.pow(group.len() as u32))?.checked_add(u128::from(part))?;
    }
    Some(value)
}

/// Parses an id that must be usable: neither 0 nor `u128::MAX` (lookups, filters).
pub fn parse_valid_id(field: &str, text: &str) -> Result<u128, FieldError> {
    let id = parse_u128(field, text)?;
    if id == 0 || id == u128::MAX {
        return Err(FieldError::new(field, format!("{id} is not a valid id (0 and u128::MAX are not)")));
    }
    Ok(id)
}

/// At most 64 characters of `text`, so an error never echoes a huge input.
fn truncated(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn parse_code(field: &str, code: u32) -> Result<u16, FieldError> {
    u16::try_from(code).map_err(|_| FieldError::new(field, format!("{code} is more than {}", u16::MAX)))
}

/// Account flags on the wire, in bit order (`flags[i]` is bit `i`).
const ACCOUNT_FLAGS: [(proto::AccountFlag, AccountFlags); 5] = [
    (proto::AccountFlag::Linked, AccountFlags::LINKED),
    (proto::AccountFlag::DebitsMustNotExceedCredits, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    (proto::AccountFlag::CreditsMustNotExceedDebits, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    (proto::AccountFlag::History, AccountFlags::HISTORY),
    (proto::AccountFlag::Closed, AccountFlags::CLOSED),
];

/// Transfer flags on the wire, in bit order.
const TRANSFER_FLAGS: [(proto::TransferFlag, TransferFlags); 9] = [
    (proto::TransferFlag::Linked, TransferFlags::LINKED),
    (proto::TransferFlag::Pending, TransferFlags::PENDING),
    (proto::TransferFlag::PostPending, TransferFlags::POST_PENDING),
    (proto::TransferFlag::VoidPending, TransferFlags::VOID_PENDING),
    (proto::TransferFlag::BalancingDebit, TransferFlags::BALANCING_DEBIT),
    (proto::TransferFlag::BalancingCredit, TransferFlags::BALANCING_CREDIT),
    (proto::TransferFlag::ClosingDebit, TransferFlags::CLOSING_DEBIT),
    (proto::TransferFlag::ClosingCredit, TransferFlags::CLOSING_CREDIT),
    (proto::TransferFlag::Adjustment, TransferFlags::ADJUSTMENT),
];

fn account_flags_from_wire(field: &str, values: &[i32]) -> Result<AccountFlags, FieldError> {
    values.iter().enumerate().try_fold(AccountFlags::NONE, |flags, (i, value)| {
        let flag = ACCOUNT_FLAGS.iter().find(|(wire, _)| *wire as i32 == *value).map(|(_, flag)| *flag);
        flag.map(|flag| flags | flag)
            .ok_or_else(|| FieldError::new(format!("{field}[{i}]"), format!("{value} is not an account flag")))
    })
}

fn account_flags_to_wire(flags: AccountFlags) -> Vec<i32> {
    ACCOUNT_FLAGS.iter().filter(|(_, flag)| flags.contains(*flag)).map(|(wire, _)| *wire as i32).collect()
}

fn transfer_flags_from_wire(field: &str, values: &[i32]) -> Result<TransferFlags, FieldError> {
    values.iter().enumerate().try_fold(TransferFlags::NONE, |flags, (i, value)| {
        let flag = TRANSFER_FLAGS.iter().find(|(wire, _)| *wire as i32 == *value).map(|(_, flag)| *flag);
        flag.map(|flag| flags | flag)
            .ok_or_else(|| FieldError::new(format!("{field}[{i}]"), format!("{value} is not a transfer flag")))
    })
}

fn transfer_flags_to_wire(flags: TransferFlags) -> Vec<i32> {
    TRANSFER_FLAGS.iter().filter(|(_, flag)| flags.contains(*flag)).map(|(wire, _)| *wire as i32).collect()
}

fn account_kind_from_wire(field: &str, value: i32) -> Result<AccountKind, FieldError> {
    match proto::AccountKind::try_from(value) {
        Ok(proto::AccountKind::Cash) => Ok(AccountKind::Cash),
        Ok(proto::AccountKind::Other) => Ok(AccountKind::Other),
        Ok(proto::AccountKind::Unspecified) => Err(FieldError::new(field, "must be set (cash or other)")),
        Err(_) => Err(FieldError::new(field, format!("{value} is not an account kind"))),
    }
}

fn account_kind_to_wire(kind: AccountKind) -> proto::AccountKind {
    match kind {
        AccountKind::Cash => proto::AccountKind::Cash,
        AccountKind::Other => proto::AccountKind::Other,
    }
}

/// A transfer kind from the wire (`*_UNSPECIFIED` and unknown values refused).
pub fn transfer_kind_from_wire(field: &str, value: i32) -> Result<TransferKind, FieldError> {
    match proto::TransferKind::try_from(value) {
        Ok(proto::TransferKind::Expenditure) => Ok(TransferKind::Expenditure),
        Ok(proto::TransferKind::Receipt) => Ok(TransferKind::Receipt),
        Ok(proto::TransferKind::CashTransfer) => Ok(TransferKind::CashTransfer),
        Ok(proto::TransferKind::Journal) => Ok(TransferKind::Journal),
        Ok(proto::TransferKind::Unspecified) => {
            Err(FieldError::new(field, "must be set (expenditure, receipt, cash_transfer or journal)"))
        }
        Err(_) => Err(FieldError::new(field, format!("{value} is not a transfer kind"))),
    }
}

fn transfer_kind_to_wire(kind: TransferKind) -> proto::TransferKind {
    match kind {
        TransferKind::Expenditure => proto::TransferKind::Expenditure,
        TransferKind::Receipt => proto::TransferKind::Receipt,
        TransferKind::CashTransfer => proto::TransferKind::CashTransfer,
        TransferKind::Journal => proto::TransferKind::Journal,
    }
}

/// A ledger from `ledgers[index]`.
pub fn ledger_from_wire(index: usize, wire: &proto::Ledger) -> Result<Ledger, FieldError> {
    let field = |name: &str| format!("ledgers[{index}].{name}");
    let scale = u8::try_from(wire.scale)
        .map_err(|_| FieldError::new(field("scale"), format!("{} is more than 255", wire.scale)))?;
    let period = match wire.period {
        0 => Period::Open,
        value => period_from_wire(&field("period"), value)?,
    };
    let budget = match &wire.budget {
        None => BudgetPolicy::default(),
        Some(budget) => BudgetPolicy {
            ledger: LedgerId(budget.ledger),
            code_min: parse_code(&field("budget.code_min"), budget.code_min)?,
            code_max: parse_code(&field("budget.code_max"), budget.code_max)?,
        },
    };
    let warn_percent = u8::try_from(wire.warn_percent).map_err(|_| {
        FieldError::new(field("warn_percent"), format!("{} is more than {WARN_PERCENT_MAX}", wire.warn_percent))
    })?;
    Ok(Ledger {
        id: LedgerId(wire.id),
        currency: wire.currency.clone(),
        scale,
        name: wire.name.clone(),
        timestamp: wire.timestamp,
        period,
        budget,
        warn_percent,
        close: None,
    })
}

/// A ledger for the wire.
pub fn ledger_to_wire(ledger: &Ledger) -> proto::Ledger {
    proto::Ledger {
        id: ledger.id.0,
        currency: ledger.currency.clone(),
        scale: u32::from(ledger.scale),
        name: ledger.name.clone(),
        timestamp: ledger.timestamp,
        period: period_to_wire(ledger.period) as i32,
        budget: ledger.budget.is_set().then(|| proto::BudgetPolicy {
            ledger: ledger.budget.ledger.0,
            code_min: u32::from(ledger.budget.code_min),
            code_max: u32::from(ledger.budget.code_max),
        }),
        warn_percent: u32::from(ledger.warn_percent),
        close: ledger.close.as_ref().map(close_record_to_wire),
    }
}

/// A ledger's year-end close record for the wire.
fn close_record_to_wire(record: &CloseRecord) -> proto::YearCloseRecord {
    let close = &record.close;
    proto::YearCloseRecord {
        next_ledger: close.next_ledger.0,
        net_position_account: close.net_position.0.to_string(),
        opening_account: close.opening_account.0.to_string(),
        nominal: code_ranges_to_wire(&close.nominal),
        carry: code_ranges_to_wire(&close.carry),
        account_offset: close.account_offset.to_string(),
        first_transfer_id: close.first_transfer_id.to_string(),
        code: u32::from(close.code),
        accounts: record.accounts,
        posted: record.posted,
        begun_at: record.begun_at,
        finished_at: record.finished_at,
    }
}

/// Code ranges for the wire.
pub fn code_ranges_to_wire(ranges: &[CodeRange]) -> Vec<proto::CodeRange> {
    ranges.iter().map(|range| proto::CodeRange { min: u32::from(range.min), max: u32::from(range.max) }).collect()
}

/// Code ranges from the wire (`field[i].min`, `.max`), at most
/// [`CLOSE_CODE_RANGES_MAX`].
fn code_ranges_from_wire(field: &str, wire: &[proto::CodeRange]) -> Result<Vec<CodeRange>, FieldError> {
    if wire.len() > CLOSE_CODE_RANGES_MAX {
        return Err(FieldError::new(field, format!("{} ranges, at most {CLOSE_CODE_RANGES_MAX}", wire.len())));
    }
    wire.iter()
        .enumerate()
        .map(|(i, range)| {
            let min = parse_code(&format!("{field}[{i}].min"), range.min)?;
            let max = parse_code(&format!("{field}[{i}].max"), range.max)?;
            if min == 0 || min > max {
                return Err(FieldError::new(
                    format!("{field}[{i}]"),
                    format!("{min}..{max} is not a range of non-zero codes"),
                ));
            }
            Ok(CodeRange { min, max })
        })
        .collect()
}

/// A year-end close from its request. Ids are checked here; what depends on
/// the ledgers is checked by the state machine.
pub fn year_close_from_wire(wire: &proto::CloseFiscalYearRequest) -> Result<YearClose, FieldError> {
    let nominal = code_ranges_from_wire("nominal", &wire.nominal)?;
    if nominal.is_empty() {
        return Err(FieldError::new("nominal", "name at least one range of nominal codes"));
    }
    let code = parse_code("code", wire.code)?;
    if code == 0 {
        return Err(FieldError::new("code", "must not be 0"));
    }
    Ok(YearClose {
        ledger: LedgerId(wire.ledger),
        next_ledger: LedgerId(wire.next_ledger),
        net_position: AccountId(parse_valid_id("net_position_account", &wire.net_position_account)?),
        opening_account: AccountId(parse_valid_id("opening_account", &wire.opening_account)?),
        nominal,
        carry: code_ranges_from_wire("carry", &wire.carry)?,
        account_offset: parse_valid_id("account_offset", &wire.account_offset)?,
        first_transfer_id: parse_valid_id("first_transfer_id", &wire.first_transfer_id)?,
        code,
    })
}

/// A fiscal period from the wire (`PERIOD_UNSPECIFIED` and unknown values
/// refused).
pub fn period_from_wire(field: &str, value: i32) -> Result<Period, FieldError> {
    match proto::Period::try_from(value) {
        Ok(proto::Period::Open) => Ok(Period::Open),
        Ok(proto::Period::Adjustment) => Ok(Period::Adjustment),
        Ok(proto::Period::Closed) => Ok(Period::Closed),
        Ok(proto::Period::Closing) => {
            Err(FieldError::new(field, "only CloseFiscalYear moves a ledger into closing (coffer ledger close)"))
        }
        Ok(proto::Period::Unspecified) => Err(FieldError::new(field, "must be set (open, adjustment or closed)")),
        Err(_) => Err(FieldError::new(field, format!("{value} is not a period"))),
    }
}

/// A fiscal period for the wire.
pub fn period_to_wire(period: Period) -> proto::Period {
    match period {
        Period::Open => proto::Period::Open,
        Period::Adjustment => proto::Period::Adjustment,
        Period::Closed => proto::Period::Closed,
        Period::Closing => proto::Period::Closing,
    }
}

/// The period change `changes[index]`.
pub fn period_change_from_wire(index: usize, wire: &proto::PeriodChange) -> Result<PeriodChange, FieldError> {
    Ok(PeriodChange {
        ledger: LedgerId(wire.ledger),
        period: period_from_wire(&format!("changes[{index}].period"), wire.period)?,
    })
}

/// An account from `{list}[{index}]` (`accounts[2]`), balances read with `amounts`.
pub fn account_from_wire(
    list: &str,
    index: usize,
    wire: &proto::Account,
    amounts: Amounts<'_>,
) -> Result<Account, FieldError> {
    let field = |name: &str| format!("{list}[{index}].{name}");
    let ledger = LedgerId(wire.ledger);
    let balance = |name: &str, text: &str| amounts.parse(&field(name), text, ledger);
    Ok(Account {
        id: AccountId(parse_u128(&field("id"), &wire.id)?),
        ledger,
        code: parse_code(&field("code"), wire.code)?,
        kind: account_kind_from_wire(&field("kind"), wire.kind)?,
        flags: account_flags_from_wire(&field("flags"), &wire.flags)?,
        debits_pending: balance("debits_pending", &wire.debits_pending)?,
        debits_posted: balance("debits_posted", &wire.debits_posted)?,
        credits_pending: balance("credits_pending", &wire.credits_pending)?,
        credits_posted: balance("credits_posted", &wire.credits_posted)?,
        user_data_128: parse_u128(&field("user_data_128"), &wire.user_data_128)?,
        user_data_64: wire.user_data_64,
        user_data_32: wire.user_data_32,
        timestamp: wire.timestamp,
    })
}

/// An account for the wire, balances written with `amounts`.
pub fn account_to_wire(account: &Account, amounts: Amounts<'_>) -> proto::Account {
    let amount = |value: u128| amounts.format(value, account.ledger);
    proto::Account {
        id: account.id.0.to_string(),
        ledger: account.ledger.0,
        code: u32::from(account.code),
        kind: account_kind_to_wire(account.kind) as i32,
        flags: account_flags_to_wire(account.flags),
        debits_pending: amount(account.debits_pending),
        debits_posted: amount(account.debits_posted),
        credits_pending: amount(account.credits_pending),
        credits_posted: amount(account.credits_posted),
        user_data_128: account.user_data_128.to_string(),
        user_data_64: account.user_data_64,
        user_data_32: account.user_data_32,
        timestamp: account.timestamp,
    }
}

/// A transfer from `{list}[{index}]`, its amount read with `amounts`
/// (`"max"` is [`Transfer::AMOUNT_MAX`]).
pub fn transfer_from_wire(
    list: &str,
    index: usize,
    wire: &proto::Transfer,
    amounts: Amounts<'_>,
) -> Result<Transfer, FieldError> {
    // The field's full name (`transfers[3].amount`) is only built for an
    // error: formatting eight names per transfer cost 2 % of a node's CPU.
    // A part the parser named (`[1]` of `flags[1]`) is kept.
    let named = |name: &'static str| {
        move |error: FieldError| FieldError::new(format!("{list}[{index}].{name}{}", error.field), error.reason)
    };
    let ledger = LedgerId(wire.ledger);
    let amount = if wire.amount == AMOUNT_MAX_TEXT {
        Transfer::AMOUNT_MAX
    } else {
        amounts.parse("", &wire.amount, ledger).map_err(named("amount"))?
    };
    Ok(Transfer {
        id: TransferId(parse_u128("", &wire.id).map_err(named("id"))?),
        debit_account_id: AccountId(parse_u128("", &wire.debit_account_id).map_err(named("debit_account_id"))?),
        credit_account_id: AccountId(parse_u128("", &wire.credit_account_id).map_err(named("credit_account_id"))?),
        amount,
        pending_id: TransferId(parse_u128("", &wire.pending_id).map_err(named("pending_id"))?),
        ledger,
        code: parse_code("", wire.code).map_err(named("code"))?,
        kind: transfer_kind_from_wire("", wire.kind).map_err(named("kind"))?,
        flags: transfer_flags_from_wire("", &wire.flags).map_err(named("flags"))?,
        timeout: wire.timeout,
        user_data_128: parse_u128("", &wire.user_data_128).map_err(named("user_data_128"))?,
        user_data_64: wire.user_data_64,
        user_data_32: wire.user_data_32,
        timestamp: wire.timestamp,
    })
}

/// A transfer for the wire, its amount written with `amounts`.
pub fn transfer_to_wire(transfer: &Transfer, amounts: Amounts<'_>) -> proto::Transfer {
    let id = |value: u128| if value == 0 { String::new() } else { value.to_string() };
    let amount = if transfer.amount == Transfer::AMOUNT_MAX {
        AMOUNT_MAX_TEXT.to_owned()
    } else {
        amounts.format(transfer.amount, transfer.ledger)
    };
    proto::Transfer {
        id: transfer.id.0.to_string(),
        debit_account_id: id(transfer.debit_account_id.0),
        credit_account_id: id(transfer.credit_account_id.0),
        amount,
        pending_id: id(transfer.pending_id.0),
        ledger: transfer.ledger.0,
        code: u32::from(transfer.code),
        kind: transfer_kind_to_wire(transfer.kind) as i32,
        flags: transfer_flags_to_wire(transfer.flags),
        timeout: transfer.timeout,
        user_data_128: transfer.user_data_128.to_string(),
        user_data_64: transfer.user_data_64,
        user_data_32: transfer.user_data_32,
        timestamp: transfer.timestamp,
    }
}

/// An account balance for the wire, of an account kept in `ledger`.
pub fn balance_to_wire(balance: &AccountBalance, ledger: LedgerId, amounts: Amounts<'_>) -> proto::AccountBalance {
    let amount = |value: u128| amounts.format(value, ledger);
    proto::AccountBalance {
        account_id: balance.account_id.0.to_string(),
        timestamp: balance.timestamp,
        debits_pending: amount(balance.debits_pending),
        debits_posted: amount(balance.debits_posted),
        credits_pending: amount(balance.credits_pending),
        credits_posted: amount(balance.credits_posted),
    }
}

/// An account balance from `balances[index]`, of an account kept in `ledger`.
pub fn balance_from_wire(
    index: usize,
    wire: &proto::AccountBalance,
    ledger: LedgerId,
    amounts: Amounts<'_>,
) -> Result<AccountBalance, FieldError> {
    let field = |name: &str| format!("balances[{index}].{name}");
    let amount = |name: &str, text: &str| amounts.parse(&field(name), text, ledger);
    Ok(AccountBalance {
        account_id: AccountId(parse_u128(&field("account_id"), &wire.account_id)?),
        timestamp: wire.timestamp,
        debits_pending: amount("debits_pending", &wire.debits_pending)?,
        debits_posted: amount("debits_posted", &wire.debits_posted)?,
        credits_pending: amount("credits_pending", &wire.credits_pending)?,
        credits_posted: amount("credits_posted", &wire.credits_posted)?,
    })
}

/// Balance totals for the wire.
pub fn totals_to_wire(totals: &BalanceTotals, ledger: LedgerId, amounts: Amounts<'_>) -> proto::BalanceTotals {
    let amount = |value: u128| amounts.format(value, ledger);
    proto::BalanceTotals {
        accounts: totals.accounts,
        debits_pending: amount(totals.debits_pending),
        debits_posted: amount(totals.debits_posted),
        credits_pending: amount(totals.credits_pending),
        credits_posted: amount(totals.credits_posted),
    }
}

/// Balance totals from the wire (`field` names them, e.g. `codes[2].totals`).
pub fn totals_from_wire(
    field: &str,
    wire: &proto::BalanceTotals,
    ledger: LedgerId,
    amounts: Amounts<'_>,
) -> Result<BalanceTotals, FieldError> {
    let amount = |name: &str, text: &str| amounts.parse(&format!("{field}.{name}"), text, ledger);
    Ok(BalanceTotals {
        accounts: wire.accounts,
        debits_pending: amount("debits_pending", &wire.debits_pending)?,
        debits_posted: amount("debits_posted", &wire.debits_posted)?,
        credits_pending: amount("credits_pending", &wire.credits_pending)?,
        credits_posted: amount("credits_posted", &wire.credits_posted)?,
    })
}

/// A trial balance for the wire (without `served`).
pub fn trial_balance_to_wire(trial: &TrialBalance, amounts: Amounts<'_>) -> proto::TrialBalanceResponse {
    proto::TrialBalanceResponse {
        served: None,
        ledger: trial.ledger.0,
        codes: trial
            .codes
            .iter()
            .map(|(code, totals)| proto::CodeTotals {
                code: u32::from(*code),
                totals: Some(totals_to_wire(totals, trial.ledger, amounts)),
            })
            .collect(),
        total: Some(totals_to_wire(&trial.total, trial.ledger, amounts)),
        balanced: trial.total.is_balanced(),
        as_of: 0,
    }
}

/// A trial balance from the wire.
pub fn trial_balance_from_wire(
    wire: &proto::TrialBalanceResponse,
    amounts: Amounts<'_>,
) -> Result<TrialBalance, FieldError> {
    let ledger = LedgerId(wire.ledger);
    let codes = wire
        .codes
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let field = format!("codes[{i}]");
            let code = parse_code(&format!("{field}.code"), row.code)?;
            let totals = row.totals.as_ref().ok_or_else(|| FieldError::new(format!("{field}.totals"), "missing"))?;
            Ok((code, totals_from_wire(&format!("{field}.totals"), totals, ledger, amounts)?))
        })
        .collect::<Result<_, FieldError>>()?;
    let total = wire.total.as_ref().ok_or_else(|| FieldError::new("total", "missing"))?;
    Ok(TrialBalance { ledger, codes, total: totals_from_wire("total", total, ledger, amounts)? })
}

/// An account filter from the wire (`field` names it, e.g. `filter`): a
/// usable account id, a limit of 1 to [`BATCH_EVENTS_MAX`], a time range
/// that is not reversed.
pub fn filter_from_wire(field: &str, wire: Option<&proto::AccountFilter>) -> Result<AccountFilter, FieldError> {
    let wire = wire.ok_or_else(|| FieldError::new(field, "missing"))?;
    let sides = match proto::Sides::try_from(wire.sides) {
        Ok(proto::Sides::Both) => Sides::Both,
        Ok(proto::Sides::Debits) => Sides::Debits,
        Ok(proto::Sides::Credits) => Sides::Credits,
        Err(_) => return Err(FieldError::new(format!("{field}.sides"), format!("{} is not a side", wire.sides))),
    };
    let reversed = reversed_from_wire(&format!("{field}.order"), wire.order)?;
    if wire.limit == 0 || wire.limit as usize > BATCH_EVENTS_MAX {
        let reason = format!("{} is not between 1 and {BATCH_EVENTS_MAX}", wire.limit);
        return Err(FieldError::new(format!("{field}.limit"), reason));
    }
    if wire.timestamp_max != 0 && wire.timestamp_min > wire.timestamp_max {
        let reason = format!("{} is after timestamp_max {}", wire.timestamp_min, wire.timestamp_max);
        return Err(FieldError::new(format!("{field}.timestamp_min"), reason));
    }
    Ok(AccountFilter {
        account_id: AccountId(parse_valid_id(&format!("{field}.account_id"), &wire.account_id)?),
        timestamp_min: wire.timestamp_min,
        timestamp_max: wire.timestamp_max,
        limit: wire.limit,
        sides,
        reversed,
    })
}

/// An account filter for the wire.
pub fn filter_to_wire(filter: &AccountFilter) -> proto::AccountFilter {
    let sides = match filter.sides {
        Sides::Both => proto::Sides::Both,
        Sides::Debits => proto::Sides::Debits,
        Sides::Credits => proto::Sides::Credits,
    };
    let order = order_to_wire(filter.reversed);
    proto::AccountFilter {
        account_id: filter.account_id.0.to_string(),
        timestamp_min: filter.timestamp_min,
        timestamp_max: filter.timestamp_max,
        limit: filter.limit,
        sides: sides as i32,
        order: order as i32,
    }
}

/// Which order a request asked for (`true`: newest first).
fn reversed_from_wire(field: &str, value: i32) -> Result<bool, FieldError> {
    match proto::Order::try_from(value) {
        Ok(proto::Order::Ascending) => Ok(false),
        Ok(proto::Order::Descending) => Ok(true),
        Err(_) => Err(FieldError::new(field, format!("{value} is not an order"))),
    }
}

fn order_to_wire(reversed: bool) -> proto::Order {
    if reversed {
        proto::Order::Descending
    } else {
        proto::Order::Ascending
    }
}

/// The fields both queries share, checked: a limit of 1 to
/// [`BATCH_EVENTS_MAX`], a code that fits 16 bits, a decimal
/// `user_data_128`, a known order, a time range that is not reversed. The
/// kind is the caller's (its enum differs).
#[allow(clippy::too_many_arguments)]
fn query_filter_from_wire(
    ledger: u32,
    code: u32,
    kind: u8,
    user_data: (&str, u64, u32),
    timestamps: (u64, u64),
    limit: u32,
    order: i32,
) -> Result<QueryFilter, FieldError> {
    let (timestamp_min, timestamp_max) = timestamps;
    if limit == 0 || limit as usize > BATCH_EVENTS_MAX {
        return Err(FieldError::new("limit", format!("{limit} is not between 1 and {BATCH_EVENTS_MAX}")));
    }
    if timestamp_max != 0 && timestamp_min > timestamp_max {
        let reason = format!("{timestamp_min} is after timestamp_max {timestamp_max}");
        return Err(FieldError::new("timestamp_min", reason));
    }
    let user_data_128 = if user_data.0.is_empty() { 0 } else { parse_u128("user_data_128", user_data.0)? };
    Ok(QueryFilter {
        ledger: LedgerId(ledger),
        code: parse_code("code", code)?,
        kind,
        user_data_128,
        user_data_64: user_data.1,
        user_data_32: user_data.2,
        timestamp_min,
        timestamp_max,
        limit,
        reversed: reversed_from_wire("order", order)?,
    })
}

/// A transfer query from the wire (see [`query_filter_from_wire`]; a known
/// kind, unspecified: any).
pub fn transfer_query_from_wire(wire: &proto::QueryTransfersRequest) -> Result<TransferQuery, FieldError> {
    let kind = match proto::TransferKind::try_from(wire.kind) {
        Ok(proto::TransferKind::Unspecified) => 0,
        _ => transfer_kind_from_wire("kind", wire.kind)?.code(),
    };
    let user_data = (wire.user_data_128.as_str(), wire.user_data_64, wire.user_data_32);
    let timestamps = (wire.timestamp_min, wire.timestamp_max);
    query_filter_from_wire(wire.ledger, wire.code, kind, user_data, timestamps, wire.limit, wire.order)
}

/// An account query from the wire (see [`query_filter_from_wire`]; a known
/// kind, unspecified: any).
pub fn account_query_from_wire(wire: &proto::QueryAccountsRequest) -> Result<QueryFilter, FieldError> {
    let kind = match proto::AccountKind::try_from(wire.kind) {
        Ok(proto::AccountKind::Unspecified) => 0,
        _ => account_kind_from_wire("kind", wire.kind)?.code(),
    };
    let user_data = (wire.user_data_128.as_str(), wire.user_data_64, wire.user_data_32);
    let timestamps = (wire.timestamp_min, wire.timestamp_max);
    query_filter_from_wire(wire.ledger, wire.code, kind, user_data, timestamps, wire.limit, wire.order)
}

/// A transfer query for the wire (read linearizably, amounts in `unit`).
pub fn transfer_query_to_wire(query: &TransferQuery, unit: proto::AmountUnit) -> proto::QueryTransfersRequest {
    let kind = TransferKind::from_code(query.kind).map_or(proto::TransferKind::Unspecified, transfer_kind_to_wire);
    proto::QueryTransfersRequest {
        ledger: query.ledger.0,
        code: u32::from(query.code),
        kind: kind as i32,
        user_data_128: if query.user_data_128 == 0 { String::new() } else { query.user_data_128.to_string() },
        user_data_64: query.user_data_64,
        user_data_32: query.user_data_32,
        timestamp_min: query.timestamp_min,
        timestamp_max: query.timestamp_max,
        limit: query.limit,
        order: order_to_wire(query.reversed) as i32,
        stale: false,
        amount_unit: unit as i32,
    }
}

/// An account query for the wire (read linearizably, amounts in `unit`).
pub fn account_query_to_wire(query: &QueryFilter, unit: proto::AmountUnit) -> proto::QueryAccountsRequest {
    let kind = AccountKind::from_code(query.kind).map_or(proto::AccountKind::Unspecified, account_kind_to_wire);
    proto::QueryAccountsRequest {
        ledger: query.ledger.0,
        code: u32::from(query.code),
        kind: kind as i32,
        user_data_128: if query.user_data_128 == 0 { String::new() } else { query.user_data_128.to_string() },
        user_data_64: query.user_data_64,
        user_data_32: query.user_data_32,
        timestamp_min: query.timestamp_min,
        timestamp_max: query.timestamp_max,
        limit: query.limit,
        order: order_to_wire(query.reversed) as i32,
        stale: false,
        amount_unit: unit as i32,
    }
}

/// A change of the log for a feed, its amounts written with `amounts`.
pub fn change_to_wire(change: &ResolvedChange, amounts: Amounts<'_>, served: proto::Served) -> proto::Change {
    let mut wire = proto::Change {
        cursor: change.timestamp,
        ledger_id: change.record.ledger().0,
        served: Some(served),
        ..Default::default()
    };
    let kind = match &change.record {
        ChangedRecord::LedgerCreated(ledger) => {
            wire.ledger = Some(ledger_to_wire(ledger));
            proto::ChangeKind::LedgerCreated
        }
        ChangedRecord::AccountCreated(account) => {
            wire.account = Some(account_to_wire(account, amounts));
            proto::ChangeKind::AccountCreated
        }
        ChangedRecord::TransferCreated(transfer) => {
            wire.transfer = Some(transfer_to_wire(transfer, amounts));
            proto::ChangeKind::TransferCreated
        }
        ChangedRecord::PendingExpired(transfer) => {
            wire.transfer = Some(transfer_to_wire(transfer, amounts));
            proto::ChangeKind::PendingExpired
        }
    };
    if let (ChangedRecord::TransferCreated(transfer) | ChangedRecord::PendingExpired(transfer), Some(balances)) =
        (&change.record, &change.balances)
    {
        let side = |account_id: AccountId, balances: &Balances| {
            let balance = AccountBalance {
                account_id,
                timestamp: change.timestamp,
                debits_pending: balances.debits_pending,
                debits_posted: balances.debits_posted,
                credits_pending: balances.credits_pending,
                credits_posted: balances.credits_posted,
            };
            balance_to_wire(&balance, transfer.ledger, amounts)
        };
        wire.debit_account_balance = Some(side(transfer.debit_account_id, &balances.debit));
        wire.credit_account_balance = Some(side(transfer.credit_account_id, &balances.credit));
    }
    wire.kind = kind as i32;
    wire
}

/// A change of a feed from the wire, its amounts read with `amounts`: the
/// record its kind names must be there.
pub fn change_from_wire(wire: &proto::Change, amounts: Amounts<'_>) -> Result<ResolvedChange, FieldError> {
    let missing = |field: &str| FieldError::new(field, format!("missing in a change of kind {}", wire.kind));
    let transfer = || {
        let transfer = wire.transfer.as_ref().ok_or_else(|| missing("transfer"))?;
        transfer_from_wire("change", 0, transfer, amounts)
    };
    let record = match proto::ChangeKind::try_from(wire.kind) {
        Ok(proto::ChangeKind::LedgerCreated) => {
            let ledger = wire.ledger.as_ref().ok_or_else(|| missing("ledger"))?;
            ChangedRecord::LedgerCreated(ledger_from_wire(0, ledger)?)
        }
        Ok(proto::ChangeKind::AccountCreated) => {
            let account = wire.account.as_ref().ok_or_else(|| missing("account"))?;
            ChangedRecord::AccountCreated(account_from_wire("change", 0, account, amounts)?)
        }
        Ok(proto::ChangeKind::TransferCreated) => ChangedRecord::TransferCreated(transfer()?),
        Ok(proto::ChangeKind::PendingExpired) => ChangedRecord::PendingExpired(transfer()?),
        Ok(proto::ChangeKind::Unspecified) | Err(_) => {
            return Err(FieldError::new("kind", format!("{} is not a change kind", wire.kind)))
        }
    };
    if record.ledger().0 != wire.ledger_id {
        let reason = format!("{} is not the ledger of the change's record ({})", wire.ledger_id, record.ledger());
        return Err(FieldError::new("ledger_id", reason));
    }
    let balance = |field: &str, wire: Option<&proto::AccountBalance>| -> Result<Option<Balances>, FieldError> {
        let Some(wire) = wire else { return Ok(None) };
        let amount = |name: &str, text: &str| amounts.parse(&format!("{field}.{name}"), text, record.ledger());
        Ok(Some(Balances {
            debits_pending: amount("debits_pending", &wire.debits_pending)?,
            debits_posted: amount("debits_posted", &wire.debits_posted)?,
            credits_pending: amount("credits_pending", &wire.credits_pending)?,
            credits_posted: amount("credits_posted", &wire.credits_posted)?,
        }))
    };
    let debit = balance("debit_account_balance", wire.debit_account_balance.as_ref())?;
    let credit = balance("credit_account_balance", wire.credit_account_balance.as_ref())?;
    let balances = match (debit, credit) {
        (Some(debit), Some(credit)) => Some(TransferBalances { debit, credit }),
        _ => None,
    };
    Ok(ResolvedChange { timestamp: wire.cursor, record, balances })
}

/// Result names for the wire, one per event.
pub fn results_to_wire<R: ResultName>(results: &[R]) -> Vec<String> {
    results.iter().map(|result| result.name().to_owned()).collect()
}

/// Results from the wire, one per event (an unknown name is refused: the
/// server is of a version with results this client does not know).
pub fn results_from_wire<R: ResultName>(names: &[String]) -> Result<Vec<R>, FieldError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            R::from_name(name).ok_or_else(|| {
                FieldError::new(format!("results[{i}]"), format!("{:?} is not a known result", truncated(name)))
            })
        })
        .collect()
}

/// A ledger result type, named on the wire by its snake-case name.
pub trait ResultName: Sized {
    /// The result's name (`exceeds_credits`).
    fn name(&self) -> &'static str;
    /// The result with this name, if any.
    fn from_name(name: &str) -> Option<Self>;
}

macro_rules! result_name {
    ($($result:ty),*) => {$(
        impl ResultName for $result {
            fn name(&self) -> &'static str {
                self.as_str()
            }
            fn from_name(name: &str) -> Option<Self> {
                <$result>::from_name(name)
            }
        }
    )*};
}
result_name!(CreateLedgerResult, CreateAccountResult, CreateTransferResult, SetPeriodResult, CloseResult);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_u128_agrees_with_the_standard_parser() {
        let max = u128::MAX.to_string();
        let past_max = "340282366920938463463374607431768211456";
        let cases = ["0", "7", "0000000000000000000000000000000000001", "9999999999999999999", "10000000000000000000"];
        for text in cases.iter().copied().chain([max.as_str(), past_max, "999999999999999999999999999999999999999"]) {
            assert_eq!(decimal_u128(text.as_bytes()), text.parse::<u128>().ok(), "{text}");
        }
        let mut state = 0x9E37_79B9_7F4A_7C15_u128;
        for _ in 0..1_000 {
            state = state.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1);
            let value = state >> (state % 128);
            assert_eq!(decimal_u128(value.to_string().as_bytes()), Some(value));
        }
    }

    fn scales() -> BTreeMap<LedgerId, u8> {
        BTreeMap::from([(LedgerId(1), 0), (LedgerId(2), 2)])
    }

    fn transfer() -> Transfer {
        Transfer {
            id: TransferId(u128::MAX - 1),
            debit_account_id: AccountId(7),
            credit_account_id: AccountId(8),
            amount: 12_345,
            pending_id: TransferId(0),
            ledger: LedgerId(2),
            code: 65_535,
            kind: TransferKind::Expenditure,
            flags: TransferFlags::PENDING | TransferFlags::LINKED | TransferFlags::CLOSING_CREDIT,
            timeout: 3_600,
            user_data_128: u128::MAX,
            user_data_64: u64::MAX,
            user_data_32: u32::MAX,
            timestamp: 0,
        }
    }

    fn account() -> Account {
        Account {
            id: AccountId(42),
            ledger: LedgerId(2),
            code: 101,
            kind: AccountKind::Cash,
            flags: AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            debits_pending: 1,
            debits_posted: 250,
            credits_pending: 0,
            credits_posted: 99_999,
            user_data_128: 11_110,
            user_data_64: 3,
            user_data_32: 4,
            timestamp: 1_700_000_000_000_000_000,
        }
    }

    fn wire_transfer() -> proto::Transfer {
        let scales = scales();
        transfer_to_wire(&transfer(), Amounts::Decimal(&scales))
    }

    #[test]
    fn transfers_round_trip_in_decimal_and_minor_units() {
        let scales = scales();
        let wire = transfer_to_wire(&transfer(), Amounts::Decimal(&scales));
        assert_eq!(wire.amount, "123.45");
        assert_eq!(wire.pending_id, "");
        assert_eq!(transfer_from_wire("transfers", 0, &wire, Amounts::Decimal(&scales)), Ok(transfer()));
        let minor = transfer_to_wire(&transfer(), Amounts::Minor);
        assert_eq!(minor.amount, "12345");
        assert_eq!(transfer_from_wire("transfers", 0, &minor, Amounts::Minor), Ok(transfer()));
    }

    #[test]
    fn every_transfer_flag_and_kind_round_trips() {
        for (_, flag) in TRANSFER_FLAGS {
            let wire = transfer_flags_to_wire(flag);
            assert_eq!(transfer_flags_from_wire("flags", &wire), Ok(flag));
        }
        let all = TRANSFER_FLAGS.iter().fold(TransferFlags::NONE, |all, (_, flag)| all | *flag);
        assert_eq!(all, TransferFlags::ALL, "every ledger transfer flag has a wire value");
        for kind in TransferKind::ALL {
            assert_eq!(transfer_kind_from_wire("kind", transfer_kind_to_wire(kind) as i32), Ok(kind));
        }
    }

    #[test]
    fn accounts_round_trip_with_every_flag_and_kind() {
        let scales = scales();
        let wire = account_to_wire(&account(), Amounts::Decimal(&scales));
        assert_eq!(wire.credits_posted, "999.99");
        assert_eq!(account_from_wire("accounts", 0, &wire, Amounts::Decimal(&scales)), Ok(account()));
        let all = ACCOUNT_FLAGS.iter().fold(AccountFlags::NONE, |all, (_, flag)| all | *flag);
        assert_eq!(all, AccountFlags::ALL, "every ledger account flag has a wire value");
        for kind in AccountKind::ALL {
            let wire = proto::Account { kind: account_kind_to_wire(kind) as i32, flags: vec![], ..wire.clone() };
            assert_eq!(account_from_wire("accounts", 0, &wire, Amounts::Decimal(&scales)).map(|a| a.kind), Ok(kind));
        }
    }

    #[test]
    fn ledgers_and_filters_round_trip() {
        let ledger = Ledger {
            id: LedgerId(3),
            currency: "USD".into(),
            scale: 2,
            name: "Dollar".into(),
            timestamp: 9,
            ..Default::default()
        };
        assert_eq!(ledger_from_wire(0, &ledger_to_wire(&ledger)), Ok(ledger));
        let filter = AccountFilter {
            account_id: AccountId(5),
            timestamp_min: 10,
            timestamp_max: 20,
            limit: 100,
            sides: Sides::Credits,
            reversed: true,
        };
        assert_eq!(filter_from_wire("filter", Some(&filter_to_wire(&filter))), Ok(filter));
    }

    #[test]
    fn trial_balances_and_balances_round_trip() {
        let scales = scales();
        let totals = BalanceTotals {
            accounts: 2,
            debits_pending: 5,
            debits_posted: 700,
            credits_pending: 5,
            credits_posted: 700,
        };
        let trial = TrialBalance { ledger: LedgerId(2), codes: vec![(101, totals), (401, totals)], total: totals };
        let wire = trial_balance_to_wire(&trial, Amounts::Decimal(&scales));
        assert!(wire.balanced);
        assert_eq!(trial_balance_from_wire(&wire, Amounts::Decimal(&scales)), Ok(trial));
        let balance = account().balance_at(77);
        let wire = balance_to_wire(&balance, LedgerId(2), Amounts::Minor);
        assert_eq!(balance_from_wire(0, &wire, LedgerId(2), Amounts::Minor), Ok(balance));
    }

    #[test]
    fn results_round_trip_by_name() {
        let results = CreateTransferResult::ALL.to_vec();
        let names = results_to_wire(&results);
        assert_eq!(names[0], "created");
        assert_eq!(results_from_wire::<CreateTransferResult>(&names), Ok(results));
        let error = results_from_wire::<CreateAccountResult>(&["created".into(), "nonsense".into()]).unwrap_err();
        assert_eq!(error.field, "results[1]");
    }

    #[test]
    fn an_amount_finer_than_the_scale_is_refused_naming_the_field_and_ledger() {
        let scales = scales();
        let wire = proto::Transfer { amount: "12.5".into(), ledger: 1, ..wire_transfer() };
        let error = transfer_from_wire("transfers", 3, &wire, Amounts::Decimal(&scales)).unwrap_err();
        assert_eq!(error.to_string(), "transfers[3].amount: 12.5 has more decimal places than ledger 1's scale 0");
    }

    #[test]
    fn trailing_zeros_are_not_decimal_places() {
        let scales = scales();
        let wire = proto::Transfer { amount: "12.50".into(), ledger: 2, ..wire_transfer() };
        assert_eq!(transfer_from_wire("transfers", 0, &wire, Amounts::Decimal(&scales)).map(|t| t.amount), Ok(1_250));
    }

    #[test]
    fn an_unknown_ledger_takes_whole_amounts_only() {
        let scales = scales();
        let whole = proto::Transfer { amount: "100".into(), ledger: 9, ..wire_transfer() };
        assert_eq!(transfer_from_wire("transfers", 0, &whole, Amounts::Decimal(&scales)).map(|t| t.amount), Ok(100));
        let fraction = proto::Transfer { amount: "1.5".into(), ..whole };
        let error = transfer_from_wire("transfers", 4, &fraction, Amounts::Decimal(&scales)).unwrap_err();
        assert_eq!(error.field, "transfers[4].amount");
        assert!(error.reason.contains("ledger 9 does not exist"), "{error}");
    }

    #[test]
    fn minor_units_must_be_whole() {
        let wire = proto::Transfer { amount: "1.5".into(), ..wire_transfer() };
        let error = transfer_from_wire("transfers", 0, &wire, Amounts::Minor).unwrap_err();
        assert!(error.reason.contains("not a whole number of minor units"), "{error}");
    }

    #[test]
    fn max_means_the_whole_pending_amount() {
        let wire = proto::Transfer { amount: "max".into(), ..wire_transfer() };
        let parsed = transfer_from_wire("transfers", 0, &wire, Amounts::Minor).unwrap();
        assert_eq!(parsed.amount, Transfer::AMOUNT_MAX);
        assert_eq!(transfer_to_wire(&parsed, Amounts::Minor).amount, "max");
    }

    #[test]
    fn bad_amounts_name_the_field() {
        let scales = scales();
        for text in ["-5", "abc", "1e3", " 1", "340282366920938463463374607431768211456"] {
            let wire = proto::Transfer { amount: text.into(), ..wire_transfer() };
            let error = transfer_from_wire("transfers", 2, &wire, Amounts::Decimal(&scales)).unwrap_err();
            assert_eq!(error.field, "transfers[2].amount", "{text}");
        }
        let wire = proto::Account { debits_posted: "0.001".into(), ..account_to_wire(&account(), Amounts::Minor) };
        let error = account_from_wire("accounts", 6, &wire, Amounts::Decimal(&scales)).unwrap_err();
        assert_eq!(error.field, "accounts[6].debits_posted");
    }

    #[test]
    fn bad_ids_name_the_field() {
        let scales = scales();
        let cases = [
            (proto::Transfer { id: "12a".into(), ..wire_transfer() }, "transfers[1].id"),
            (proto::Transfer { debit_account_id: "-1".into(), ..wire_transfer() }, "transfers[1].debit_account_id"),
            (proto::Transfer { credit_account_id: " 5".into(), ..wire_transfer() }, "transfers[1].credit_account_id"),
            (proto::Transfer { pending_id: "1".repeat(40), ..wire_transfer() }, "transfers[1].pending_id"),
            (
                proto::Transfer { user_data_128: "340282366920938463463374607431768211456".into(), ..wire_transfer() },
                "transfers[1].user_data_128",
            ),
        ];
        for (wire, field) in cases {
            let error = transfer_from_wire("transfers", 1, &wire, Amounts::Decimal(&scales)).unwrap_err();
            assert_eq!(error.field, field);
        }
        assert_eq!(parse_u128("id", &u128::MAX.to_string()), Ok(u128::MAX));
        assert_eq!(parse_valid_id("ids[0]", "0").unwrap_err().field, "ids[0]");
        assert_eq!(parse_valid_id("ids[1]", &u128::MAX.to_string()).unwrap_err().field, "ids[1]");
        assert_eq!(parse_valid_id("ids[2]", "").unwrap_err().field, "ids[2]");
    }

    #[test]
    fn unknown_enum_values_and_oversized_codes_are_refused() {
        let scales = scales();
        let cases = [
            (proto::Transfer { kind: 0, ..wire_transfer() }, "transfers[0].kind"),
            (proto::Transfer { kind: 99, ..wire_transfer() }, "transfers[0].kind"),
            (proto::Transfer { flags: vec![2, 0], ..wire_transfer() }, "transfers[0].flags[1]"),
            (proto::Transfer { flags: vec![10], ..wire_transfer() }, "transfers[0].flags[0]"),
            (proto::Transfer { code: 65_536, ..wire_transfer() }, "transfers[0].code"),
        ];
        for (wire, field) in cases {
            let error = transfer_from_wire("transfers", 0, &wire, Amounts::Decimal(&scales)).unwrap_err();
            assert_eq!(error.field, field);
        }
        let wire = proto::Account { kind: 3, ..account_to_wire(&account(), Amounts::Minor) };
        assert_eq!(account_from_wire("accounts", 0, &wire, Amounts::Minor).unwrap_err().field, "accounts[0].kind");
        let wire = proto::Account { flags: vec![6], ..account_to_wire(&account(), Amounts::Minor) };
        assert_eq!(account_from_wire("accounts", 0, &wire, Amounts::Minor).unwrap_err().field, "accounts[0].flags[0]");
        let ledger = proto::Ledger { scale: 256, ..Default::default() };
        assert_eq!(ledger_from_wire(5, &ledger).unwrap_err().field, "ledgers[5].scale");
        let filter = proto::AccountFilter { account_id: "5".into(), sides: 7, limit: 1, ..Default::default() };
        assert_eq!(filter_from_wire("filter", Some(&filter)).unwrap_err().field, "filter.sides");
        let filter = proto::AccountFilter { account_id: "5".into(), order: 2, limit: 1, ..Default::default() };
        assert_eq!(filter_from_wire("filter", Some(&filter)).unwrap_err().field, "filter.order");
        assert_eq!(filter_from_wire("filter", None).unwrap_err().field, "filter");
        assert_eq!(amount_unit("amount_unit", 5).unwrap_err().field, "amount_unit");
    }

    #[test]
    fn filters_need_a_usable_account_a_limit_and_an_ordered_range() {
        let good = proto::AccountFilter { account_id: "5".into(), limit: 10, ..Default::default() };
        assert!(filter_from_wire("filter", Some(&good)).is_ok());
        let cases = [
            (proto::AccountFilter { account_id: "0".into(), ..good.clone() }, "filter.account_id"),
            (proto::AccountFilter { limit: 0, ..good.clone() }, "filter.limit"),
            (proto::AccountFilter { limit: 8_190, ..good.clone() }, "filter.limit"),
            (proto::AccountFilter { timestamp_min: 9, timestamp_max: 8, ..good.clone() }, "filter.timestamp_min"),
        ];
        for (wire, field) in cases {
            assert_eq!(filter_from_wire("filter", Some(&wire)).unwrap_err().field, field);
        }
    }

    #[test]
    fn transfer_queries_round_trip_and_refusals_name_the_field() {
        let query = TransferQuery {
            ledger: LedgerId(2),
            code: 7,
            kind: TransferKind::Receipt.code(),
            user_data_128: u128::MAX,
            user_data_64: 5,
            user_data_32: 6,
            timestamp_min: 10,
            timestamp_max: 20,
            limit: 30,
            reversed: true,
        };
        let wire = transfer_query_to_wire(&query, proto::AmountUnit::Minor);
        assert_eq!(transfer_query_from_wire(&wire), Ok(query));
        let any = TransferQuery::all(1);
        assert_eq!(transfer_query_from_wire(&transfer_query_to_wire(&any, proto::AmountUnit::Minor)), Ok(any));
        let cases = [
            (proto::QueryTransfersRequest { limit: 0, ..wire.clone() }, "limit"),
            (proto::QueryTransfersRequest { limit: 8_190, ..wire.clone() }, "limit"),
            (proto::QueryTransfersRequest { kind: 42, ..wire.clone() }, "kind"),
            (proto::QueryTransfersRequest { code: 65_536, ..wire.clone() }, "code"),
            (proto::QueryTransfersRequest { user_data_128: "1x".into(), ..wire.clone() }, "user_data_128"),
            (proto::QueryTransfersRequest { order: 3, ..wire.clone() }, "order"),
            (proto::QueryTransfersRequest { timestamp_min: 21, ..wire.clone() }, "timestamp_min"),
        ];
        for (wire, field) in cases {
            assert_eq!(transfer_query_from_wire(&wire).unwrap_err().field, field);
        }
    }

    #[test]
    fn changes_round_trip_with_their_records() {
        let scales = scales();
        let served = proto::Served { node_id: 3, applied_index: 9, stale: true };
        let ledger = Ledger {
            id: LedgerId(2),
            currency: "USD".into(),
            scale: 2,
            name: "Dollar".into(),
            timestamp: 1,
            ..Default::default()
        };
        let records = [
            ChangedRecord::LedgerCreated(ledger),
            ChangedRecord::AccountCreated(account()),
            ChangedRecord::TransferCreated(transfer()),
            ChangedRecord::PendingExpired(transfer()),
        ];
        let balances = TransferBalances {
            debit: Balances { debits_pending: 5, debits_posted: 1_234, ..Balances::default() },
            credit: Balances { credits_posted: 1_239, ..Balances::default() },
        };
        for (timestamp, record) in (1..).zip(records) {
            let balances = match record {
                ChangedRecord::TransferCreated(_) | ChangedRecord::PendingExpired(_) => Some(balances),
                _ => None,
            };
            let change = ResolvedChange { timestamp, record, balances };
            let wire = change_to_wire(&change, Amounts::Decimal(&scales), served);
            assert_eq!((wire.cursor, wire.ledger_id, wire.served), (timestamp, 2, Some(served)));
            assert_eq!(change_from_wire(&wire, Amounts::Decimal(&scales)), Ok(change.clone()));
            let minor = change_to_wire(&change, Amounts::Minor, served);
            assert_eq!(change_from_wire(&minor, Amounts::Minor), Ok(change));
        }
        let wire = change_to_wire(
            &ResolvedChange { timestamp: 1, record: ChangedRecord::TransferCreated(transfer()), balances: None },
            Amounts::Minor,
            served,
        );
        let no_record = proto::Change { transfer: None, ..wire.clone() };
        assert_eq!(change_from_wire(&no_record, Amounts::Minor).unwrap_err().field, "transfer");
        let unknown = proto::Change { kind: 9, ..wire.clone() };
        assert_eq!(change_from_wire(&unknown, Amounts::Minor).unwrap_err().field, "kind");
        let other_ledger = proto::Change { ledger_id: 5, ..wire };
        assert_eq!(change_from_wire(&other_ledger, Amounts::Minor).unwrap_err().field, "ledger_id");
    }

    #[test]
    fn empty_and_oversized_batches_are_refused() {
        assert!(check_events("transfers", 1).is_ok());
        let error = check_events("accounts", 0).unwrap_err();
        assert!(error.to_string().contains("accounts"), "{error}");
        assert!(check_events("transfers", BATCH_EVENTS_MAX + 1).is_err());
        assert!(check_batch("transfers", BATCH_EVENTS_MAX).is_ok());
        let error = check_batch("transfers", BATCH_EVENTS_MAX + 1).unwrap_err();
        assert_eq!(error.to_string(), "transfers: 8190 entries, more than the 8189 allowed");
    }

    #[test]
    fn errors_never_echo_huge_inputs() {
        let error = parse_u128("id", &"x".repeat(1 << 20)).unwrap_err();
        assert!(error.reason.len() < 200);
        let error = Amounts::Minor.parse("amount", &"1".repeat(1 << 20), LedgerId(1)).unwrap_err();
        assert!(error.reason.len() < 200);
    }
}
