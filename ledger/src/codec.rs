//! Fixed-layout binary encodings of the records, used by the state digest
//! and by stores that keep records as bytes.
//!
//! Every integer is big-endian; enums are their one-byte codes; flags their
//! raw `u16`. The layouts are part of the digest's definition: changing one
//! changes every digest.

use crate::close::{CloseRecord, CodeRange, YearClose, CLOSE_CODE_RANGES_MAX};
use crate::flags::{AccountFlags, TransferFlags};
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::model::{
    Account, AccountKind, Balances, BudgetPolicy, Change, ChangeKind, CodeTotals, Ledger, PendingState, PendingStatus,
    Period, Total, TotalsEntry, Transfer, TransferBalances, TransferKind,
};

/// Bytes of an encoded [`Account`].
pub const ACCOUNT_SIZE: usize = 125;
/// Bytes of an encoded [`Transfer`].
pub const TRANSFER_SIZE: usize = 129;
/// Bytes of an encoded [`PendingStatus`].
pub const PENDING_STATUS_SIZE: usize = 9;
/// Bytes of the longest encoded [`Balances`]: four `u128` varints of at
/// most 19 bytes (most balances take 4 to 8 bytes each).
pub const BALANCES_SIZE_MAX: usize = 4 * 19;
/// Bytes of the longest encoded [`Change`] (a transfer creation or expiry,
/// with both accounts' balances); a ledger creation takes 5, an account
/// creation 18.
pub const CHANGE_SIZE_MAX: usize = 17 + 2 * BALANCES_SIZE_MAX;
/// Bytes of an encoded [`CodeTotals`] value (without ledger and code, which
/// a store keeps in the key).
pub const CODE_TOTALS_SIZE: usize = 8 + 4 * 24;
/// Bytes of an encoded [`TotalsEntry`] value (first timestamp, totals).
pub const TOTALS_ENTRY_SIZE: usize = 8 + CODE_TOTALS_SIZE;

/// Why bytes did not decode to a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input has the wrong length for the record.
    #[error("{record}: expected {expected} bytes, got {actual}")]
    Length {
        /// The record type.
        record: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// A field holds a value no encoder writes.
    #[error("{record}.{field}: invalid value {value}")]
    InvalidField {
        /// The record type.
        record: &'static str,
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

/// Reads fixed-width big-endian fields from a slice of known length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut out = [0; N];
        out.copy_from_slice(head);
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn u128(&mut self) -> u128 {
        u128::from_be_bytes(self.take())
    }
}

fn reader<'a>(record: &'static str, bytes: &'a [u8], expected: usize) -> Result<Reader<'a>, DecodeError> {
    if bytes.len() != expected {
        return Err(DecodeError::Length { record, expected, actual: bytes.len() });
    }
    Ok(Reader { bytes })
}

/// Appends the encoding of `account` to `out`.
pub fn encode_account(account: &Account, out: &mut Vec<u8>) {
    out.extend_from_slice(&account.id.0.to_be_bytes());
    out.extend_from_slice(&account.ledger.0.to_be_bytes());
    out.extend_from_slice(&account.code.to_be_bytes());
    out.push(account.kind.code());
    out.extend_from_slice(&account.flags.bits().to_be_bytes());
    for balance in [account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted] {
        out.extend_from_slice(&balance.to_be_bytes());
    }
    out.extend_from_slice(&account.user_data_128.to_be_bytes());
    out.extend_from_slice(&account.user_data_64.to_be_bytes());
    out.extend_from_slice(&account.user_data_32.to_be_bytes());
    out.extend_from_slice(&account.timestamp.to_be_bytes());
}

/// Decodes an account written by [`encode_account`].
pub fn decode_account(bytes: &[u8]) -> Result<Account, DecodeError> {
    let mut r = reader("account", bytes, ACCOUNT_SIZE)?;
    let id = AccountId(r.u128());
    let ledger = LedgerId(r.u32());
    let code = r.u16();
    let kind_code = r.u8();
    let kind = AccountKind::from_code(kind_code).ok_or(DecodeError::InvalidField {
        record: "account",
        field: "kind",
        value: kind_code.into(),
    })?;
    Ok(Account {
        id,
        ledger,
        code,
        kind,
        flags: AccountFlags::from_bits(r.u16()),
        debits_pending: r.u128(),
        debits_posted: r.u128(),
        credits_pending: r.u128(),
        credits_posted: r.u128(),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        timestamp: r.u64(),
    })
}

/// Appends the encoding of `transfer` to `out`.
pub fn encode_transfer(transfer: &Transfer, out: &mut Vec<u8>) {
    out.extend_from_slice(&transfer.id.0.to_be_bytes());
    out.extend_from_slice(&transfer.debit_account_id.0.to_be_bytes());
    out.extend_from_slice(&transfer.credit_account_id.0.to_be_bytes());
    out.extend_from_slice(&transfer.amount.to_be_bytes());
    out.extend_from_slice(&transfer.pending_id.0.to_be_bytes());
    out.extend_from_slice(&transfer.ledger.0.to_be_bytes());
    out.extend_from_slice(&transfer.code.to_be_bytes());
    out.push(transfer.kind.code());
    out.extend_from_slice(&transfer.flags.bits().to_be_bytes());
    out.extend_from_slice(&transfer.timeout.to_be_bytes());
    out.extend_from_slice(&transfer.user_data_128.to_be_bytes());
    out.extend_from_slice(&transfer.user_data_64.to_be_bytes());
    out.extend_from_slice(&transfer.user_data_32.to_be_bytes());
    out.extend_from_slice(&transfer.timestamp.to_be_bytes());
}

/// Decodes a transfer written by [`encode_transfer`].
pub fn decode_transfer(bytes: &[u8]) -> Result<Transfer, DecodeError> {
    let mut r = reader("transfer", bytes, TRANSFER_SIZE)?;
    let id = TransferId(r.u128());
    let debit_account_id = AccountId(r.u128());
    let credit_account_id = AccountId(r.u128());
    let amount = r.u128();
    let pending_id = TransferId(r.u128());
    let ledger = LedgerId(r.u32());
    let code = r.u16();
    let kind_code = r.u8();
    let kind = TransferKind::from_code(kind_code).ok_or(DecodeError::InvalidField {
        record: "transfer",
        field: "kind",
        value: kind_code.into(),
    })?;
    Ok(Transfer {
        id,
        debit_account_id,
        credit_account_id,
        amount,
        pending_id,
        ledger,
        code,
        kind,
        flags: TransferFlags::from_bits(r.u16()),
        timeout: r.u32(),
        user_data_128: r.u128(),
        user_data_64: r.u64(),
        user_data_32: r.u32(),
        timestamp: r.u64(),
    })
}

/// Appends the encoding of `status` to `out`.
pub fn encode_pending_status(status: &PendingStatus, out: &mut Vec<u8>) {
    out.push(status.state.code());
    out.extend_from_slice(&status.expires_at.to_be_bytes());
}

/// Decodes a pending status written by [`encode_pending_status`].
pub fn decode_pending_status(bytes: &[u8]) -> Result<PendingStatus, DecodeError> {
    let mut r = reader("pending_status", bytes, PENDING_STATUS_SIZE)?;
    let state_code = r.u8();
    let state = PendingState::from_code(state_code).ok_or(DecodeError::InvalidField {
        record: "pending_status",
        field: "state",
        value: state_code.into(),
    })?;
    Ok(PendingStatus { state, expires_at: r.u64() })
}

/// Appends the encoding of `change` to `out`, without its timestamp (a store
/// keys the record by it): the kind's code, then the id it names (a ledger
/// id as 4 bytes, an account or transfer id as 16), then for an account
/// creation whether the account was created closed (1) or not (0), and for
/// a transfer created or expired the debit then the credit account's
/// balances after it (see [`encode_balances`]; a change without them
/// writes zeros).
/// Each kind carries only what it needs: this record is written once per
/// event.
pub fn encode_change(change: &Change, out: &mut Vec<u8>) {
    out.push(change.kind.code());
    match change.kind {
        ChangeKind::LedgerCreated(id) => out.extend_from_slice(&id.0.to_be_bytes()),
        ChangeKind::AccountCreated { id, closed } => {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.push(u8::from(closed));
        }
        ChangeKind::TransferCreated(id) | ChangeKind::PendingExpired(id) => {
            out.extend_from_slice(&id.0.to_be_bytes());
            let balances = change.balances.unwrap_or_default();
            encode_balances(&balances.debit, out);
            encode_balances(&balances.credit, out);
        }
    }
}

/// Appends the four balances, each an unsigned LEB128 varint (7 bits a
/// byte, least significant first): a change is written once per event, and
/// a balance rarely needs more than 8 of the 16 bytes of a `u128`.
pub fn encode_balances(balances: &Balances, out: &mut Vec<u8>) {
    for sum in [balances.debits_pending, balances.debits_posted, balances.credits_pending, balances.credits_posted] {
        let mut value = sum;
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
}

/// Reads one `u128` varint from the front of `bytes`, moving past it.
fn read_varint_u128(bytes: &mut &[u8]) -> Option<u128> {
    let mut value = 0u128;
    for shift in (0..128).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        let bits = u128::from(byte & 0x7f);
        // The last of 19 bytes holds 2 bits; more would overflow.
        if shift == 126 && bits > 0b11 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads balances written by [`encode_balances`] from the front of `bytes`.
fn read_balances(bytes: &mut &[u8]) -> Option<Balances> {
    Some(Balances {
        debits_pending: read_varint_u128(bytes)?,
        debits_posted: read_varint_u128(bytes)?,
        credits_pending: read_varint_u128(bytes)?,
        credits_posted: read_varint_u128(bytes)?,
    })
}

/// Decodes balances written by [`encode_balances`] (nothing may follow).
pub fn decode_balances(bytes: &[u8]) -> Result<Balances, DecodeError> {
    let mut rest = bytes;
    match read_balances(&mut rest) {
        Some(balances) if rest.is_empty() => Ok(balances),
        _ => Err(DecodeError::InvalidField { record: "balances", field: "varint", value: bytes.len() as u64 }),
    }
}

/// Appends a code's totals, without ledger and code: accounts (8 bytes),
/// then each of the four sums as its high (8) and low (16) parts.
pub fn encode_code_totals(totals: &CodeTotals, out: &mut Vec<u8>) {
    out.extend_from_slice(&totals.accounts.to_be_bytes());
    for total in [totals.debits_pending, totals.debits_posted, totals.credits_pending, totals.credits_posted] {
        out.extend_from_slice(&total.high.to_be_bytes());
        out.extend_from_slice(&total.low.to_be_bytes());
    }
}

fn read_code_totals(r: &mut Reader<'_>, ledger: LedgerId, code: u16) -> CodeTotals {
    let accounts = r.u64();
    let mut total = || Total { high: r.u64(), low: r.u128() };
    let (debits_pending, debits_posted, credits_pending, credits_posted) = (total(), total(), total(), total());
    CodeTotals { ledger, code, accounts, debits_pending, debits_posted, credits_pending, credits_posted }
}

/// Decodes the totals of `code` in `ledger` written by [`encode_code_totals`].
pub fn decode_code_totals(ledger: LedgerId, code: u16, bytes: &[u8]) -> Result<CodeTotals, DecodeError> {
    Ok(read_code_totals(&mut reader("code totals", bytes, CODE_TOTALS_SIZE)?, ledger, code))
}

/// Appends a totals-history entry, without ledger, code and last timestamp
/// (the key): the first timestamp, then the totals.
pub fn encode_totals_entry(entry: &TotalsEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&entry.first_timestamp.to_be_bytes());
    encode_code_totals(&entry.totals, out);
}

/// Decodes a totals-history entry written by [`encode_totals_entry`].
pub fn decode_totals_entry(
    ledger: LedgerId,
    code: u16,
    last_timestamp: u64,
    bytes: &[u8],
) -> Result<TotalsEntry, DecodeError> {
    let mut r = reader("totals entry", bytes, TOTALS_ENTRY_SIZE)?;
    let first_timestamp = r.u64();
    if first_timestamp > last_timestamp {
        return Err(DecodeError::InvalidField {
            record: "totals entry",
            field: "first_timestamp",
            value: first_timestamp,
        });
    }
    Ok(TotalsEntry { first_timestamp, last_timestamp, totals: read_code_totals(&mut r, ledger, code) })
}

/// Decodes the change at `timestamp` written by [`encode_change`].
pub fn decode_change(timestamp: u64, bytes: &[u8]) -> Result<Change, DecodeError> {
    let record = "change";
    let Some((&code, rest)) = bytes.split_first() else {
        return Err(DecodeError::Length { record, expected: 1, actual: 0 });
    };
    let length = |expected: usize| reader(record, bytes, expected).map(|_| Reader { bytes: rest });
    let kind = match code {
        1 => ChangeKind::LedgerCreated(LedgerId(length(5)?.u32())),
        2 => {
            let mut r = length(18)?;
            let id = AccountId(r.u128());
            let closed = match r.u8() {
                0 => false,
                1 => true,
                other => return Err(DecodeError::InvalidField { record, field: "closed", value: other.into() }),
            };
            ChangeKind::AccountCreated { id, closed }
        }
        3 | 4 => {
            let (id, mut tail) =
                rest.split_at_checked(16).ok_or(DecodeError::Length { record, expected: 17, actual: bytes.len() })?;
            let id = TransferId(u128::from_be_bytes(id.try_into().unwrap_or_default()));
            let (debit, credit) = (read_balances(&mut tail), read_balances(&mut tail));
            let (Some(debit), Some(credit), true) = (debit, credit, tail.is_empty()) else {
                return Err(DecodeError::InvalidField { record, field: "balances", value: bytes.len() as u64 });
            };
            let balances = TransferBalances { debit, credit };
            let kind = if code == 3 { ChangeKind::TransferCreated(id) } else { ChangeKind::PendingExpired(id) };
            return Ok(Change { timestamp, kind, balances: Some(balances) });
        }
        other => return Err(DecodeError::InvalidField { record, field: "kind", value: other.into() }),
    };
    Ok(Change { timestamp, kind, balances: None })
}

/// Appends the encoding of `ledger` to `out`: fixed fields, then the
/// currency and the name, each prefixed by its length as one byte (both are
/// at most 64 bytes once validated).
pub fn encode_ledger(ledger: &Ledger, out: &mut Vec<u8>) {
    out.extend_from_slice(&ledger.id.0.to_be_bytes());
    out.push(ledger.scale);
    out.extend_from_slice(&ledger.timestamp.to_be_bytes());
    for text in [&ledger.currency, &ledger.name] {
        let bytes = text.as_bytes();
        let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
        out.push(len);
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    // Fiscal section (absent in records written before periods existed).
    out.push(ledger.period.code());
    out.extend_from_slice(&ledger.budget.ledger.0.to_be_bytes());
    out.extend_from_slice(&ledger.budget.code_min.to_be_bytes());
    out.extend_from_slice(&ledger.budget.code_max.to_be_bytes());
    out.push(ledger.warn_percent);
    if let Some(record) = &ledger.close {
        encode_close(record, out);
    }
}

/// Bytes of a year close's fixed part: next ledger u32, net position,
/// opening account, account offset and first transfer id u128 × 4, code u16.
const YEAR_CLOSE_FIXED_SIZE: usize = 4 + 16 * 4 + 2;

/// Bytes of a close record's progress: reopen-to period u8, accounts,
/// begun at, posted, finished at u64 × 4.
const CLOSE_PROGRESS_SIZE: usize = 1 + 8 * 4;

/// Appends a year close as its request names it (its ledger aside): the
/// fixed part, then the nominal and the carried code ranges, each a count
/// u8 and (min u16, max u16) pairs. A close step's `Begin` entry and the
/// closed ledger's record both carry it.
pub fn encode_year_close(close: &YearClose, out: &mut Vec<u8>) {
    out.extend_from_slice(&close.next_ledger.0.to_be_bytes());
    for value in [close.net_position.0, close.opening_account.0, close.account_offset, close.first_transfer_id] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(&close.code.to_be_bytes());
    for ranges in [&close.nominal, &close.carry] {
        let len = ranges.len().min(CLOSE_CODE_RANGES_MAX);
        out.push(len as u8);
        for range in &ranges[..len] {
            out.extend_from_slice(&range.min.to_be_bytes());
            out.extend_from_slice(&range.max.to_be_bytes());
        }
    }
}

/// Decodes a year close of `ledger` written by [`encode_year_close`] at the
/// start of `bytes`; returns it and the bytes after it.
pub fn decode_year_close(ledger: LedgerId, bytes: &[u8]) -> Result<(YearClose, &[u8]), DecodeError> {
    let record = "year close";
    let (fixed, mut rest) = bytes.split_at_checked(YEAR_CLOSE_FIXED_SIZE).ok_or(DecodeError::Length {
        record,
        expected: YEAR_CLOSE_FIXED_SIZE + 2,
        actual: bytes.len(),
    })?;
    let mut r = Reader { bytes: fixed };
    let next_ledger = LedgerId(r.u32());
    let (net_position, opening_account) = (AccountId(r.u128()), AccountId(r.u128()));
    let (account_offset, first_transfer_id, code) = (r.u128(), r.u128(), r.u16());
    let mut ranges = || -> Result<Vec<CodeRange>, DecodeError> {
        let (&len, tail) = rest.split_first().ok_or(DecodeError::Length { record, expected: 1, actual: 0 })?;
        let size = usize::from(len) * 4;
        if usize::from(len) > CLOSE_CODE_RANGES_MAX || tail.len() < size {
            return Err(DecodeError::InvalidField { record, field: "code ranges", value: u64::from(len) });
        }
        let (pairs, tail) = tail.split_at(size);
        rest = tail;
        let mut r = Reader { bytes: pairs };
        Ok((0..len).map(|_| CodeRange { min: r.u16(), max: r.u16() }).collect())
    };
    let (nominal, carry) = (ranges()?, ranges()?);
    let close = YearClose {
        ledger,
        next_ledger,
        net_position,
        opening_account,
        nominal,
        carry,
        account_offset,
        first_transfer_id,
        code,
    };
    Ok((close, rest))
}

/// Appends a ledger's close section: the year close, then its progress.
fn encode_close(record: &CloseRecord, out: &mut Vec<u8>) {
    encode_year_close(&record.close, out);
    out.push(record.reopen_to.code());
    for value in [record.accounts, record.begun_at, record.posted, record.finished_at] {
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Decodes a close section written by [`encode_close`] for ledger `ledger`.
fn decode_close(ledger: LedgerId, bytes: &[u8]) -> Result<CloseRecord, DecodeError> {
    let record = "ledger close";
    let (close, rest) = decode_year_close(ledger, bytes)?;
    if rest.len() != CLOSE_PROGRESS_SIZE {
        let expected = bytes.len() - rest.len() + CLOSE_PROGRESS_SIZE;
        return Err(DecodeError::Length { record, expected, actual: bytes.len() });
    }
    let mut r = Reader { bytes: rest };
    let reopen_code = r.u8();
    let reopen_to = Period::from_code(reopen_code).ok_or(DecodeError::InvalidField {
        record,
        field: "reopen_to",
        value: u64::from(reopen_code),
    })?;
    let (accounts, begun_at, posted, finished_at) = (r.u64(), r.u64(), r.u64(), r.u64());
    Ok(CloseRecord { close, accounts, reopen_to, begun_at, posted, finished_at })
}

/// Bytes of a ledger's fiscal section: period u8, budget ledger u32, budget
/// codes u16 × 2, warning share u8.
const LEDGER_FISCAL_SIZE: usize = 1 + 4 + 2 + 2 + 1;

/// Decodes a ledger written by [`encode_ledger`].
pub fn decode_ledger(bytes: &[u8]) -> Result<Ledger, DecodeError> {
    const FIXED: usize = 4 + 1 + 8;
    let record = "ledger";
    let too_short = || DecodeError::Length { record, expected: FIXED + 2, actual: bytes.len() };
    let (fixed, mut rest) = bytes.split_at_checked(FIXED).ok_or_else(too_short)?;
    let mut r = Reader { bytes: fixed };
    let id = LedgerId(r.u32());
    let scale = r.u8();
    let timestamp = r.u64();
    let mut text = |field: &'static str| -> Result<String, DecodeError> {
        let (&len, tail) = rest.split_first().ok_or_else(too_short)?;
        let (value, tail) = tail.split_at_checked(usize::from(len)).ok_or_else(too_short)?;
        rest = tail;
        String::from_utf8(value.to_vec()).map_err(|_| DecodeError::InvalidField {
            record,
            field,
            value: u64::from(len),
        })
    };
    let currency = text("currency")?;
    let name = text("name")?;
    let (period, budget, warn_percent, close) = match rest.len() {
        0 => (Period::Open, BudgetPolicy::default(), 0, None),
        len if len >= LEDGER_FISCAL_SIZE => {
            let (fiscal, close) = rest.split_at(LEDGER_FISCAL_SIZE);
            let mut r = Reader { bytes: fiscal };
            let code = r.u8();
            let period = Period::from_code(code).ok_or(DecodeError::InvalidField {
                record,
                field: "period",
                value: u64::from(code),
            })?;
            let budget = BudgetPolicy { ledger: LedgerId(r.u32()), code_min: r.u16(), code_max: r.u16() };
            let close = match close.is_empty() {
                true => None,
                false => Some(decode_close(LedgerId(id.0), close)?),
            };
            (period, budget, r.u8(), close)
        }
        _ => {
            let expected = bytes.len() - rest.len() + LEDGER_FISCAL_SIZE;
            return Err(DecodeError::Length { record, expected, actual: bytes.len() });
        }
    };
    Ok(Ledger { id, currency, scale, name, timestamp, period, budget, warn_percent, close })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_account() -> Account {
        Account {
            id: AccountId(u128::MAX - 1),
            ledger: LedgerId(7),
            code: 1001,
            kind: AccountKind::Cash,
            flags: AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            debits_pending: 1,
            debits_posted: 2,
            credits_pending: 3,
            credits_posted: u128::MAX,
            user_data_128: 5,
            user_data_64: 6,
            user_data_32: 7,
            timestamp: 8,
        }
    }

    #[test]
    fn account_round_trips() {
        let mut bytes = Vec::new();
        encode_account(&sample_account(), &mut bytes);
        assert_eq!(bytes.len(), ACCOUNT_SIZE);
        assert_eq!(decode_account(&bytes), Ok(sample_account()));
    }

    #[test]
    fn transfer_round_trips() {
        let transfer = Transfer {
            id: TransferId(1),
            debit_account_id: AccountId(2),
            credit_account_id: AccountId(3),
            amount: 4,
            pending_id: TransferId(5),
            ledger: LedgerId(6),
            code: 7,
            kind: TransferKind::CashTransfer,
            flags: TransferFlags::POST_PENDING,
            timeout: 9,
            user_data_128: 10,
            user_data_64: 11,
            user_data_32: 12,
            timestamp: 13,
        };
        let mut bytes = Vec::new();
        encode_transfer(&transfer, &mut bytes);
        assert_eq!(bytes.len(), TRANSFER_SIZE);
        assert_eq!(decode_transfer(&bytes), Ok(transfer));
    }

    #[test]
    fn ledger_round_trips_and_rejects_trailing_bytes() {
        let ledger = Ledger {
            id: LedgerId(3),
            currency: "KRW".into(),
            scale: 0,
            name: "Won".into(),
            timestamp: 9,
            period: Period::Adjustment,
            budget: BudgetPolicy { ledger: LedgerId(4), code_min: 7, code_max: 9 },
            warn_percent: 90,
            close: None,
        };
        let mut bytes = Vec::new();
        encode_ledger(&ledger, &mut bytes);
        assert_eq!(decode_ledger(&bytes), Ok(ledger.clone()));
        // A record written before periods existed: open, no budget control.
        let legacy = &bytes[..bytes.len() - LEDGER_FISCAL_SIZE];
        let open = Ledger { period: Period::Open, budget: BudgetPolicy::default(), warn_percent: 0, ..ledger };
        assert_eq!(decode_ledger(legacy), Ok(open));
        let mut bad_period = bytes.clone();
        let at = bad_period.len() - LEDGER_FISCAL_SIZE;
        bad_period[at] = 9;
        assert!(matches!(decode_ledger(&bad_period), Err(DecodeError::InvalidField { field: "period", .. })));
        bytes.push(0);
        assert!(decode_ledger(&bytes).is_err());
        assert!(decode_ledger(&bytes[..5]).is_err());
    }

    #[test]
    fn ledger_with_a_close_round_trips_and_rejects_a_cut_one() {
        let close = YearClose {
            ledger: LedgerId(2027),
            next_ledger: LedgerId(2028),
            net_position: AccountId(27900),
            opening_account: AccountId(28999),
            nominal: vec![CodeRange { min: 400, max: 599 }],
            carry: vec![CodeRange { min: 100, max: 299 }, CodeRange { min: 900, max: 900 }],
            account_offset: 1000,
            first_transfer_id: u128::MAX / 2,
            code: 99,
        };
        let record =
            CloseRecord { close, accounts: 12, reopen_to: Period::Adjustment, begun_at: 5, posted: 7, finished_at: 8 };
        let ledger = Ledger {
            period: Period::Closed,
            timestamp: 3,
            close: Some(record),
            ..Ledger::new(LedgerId(2027), "KRW", 0, "FY2027")
        };
        let mut bytes = Vec::new();
        encode_ledger(&ledger, &mut bytes);
        assert_eq!(decode_ledger(&bytes), Ok(ledger));
        for cut in 1..=5 {
            assert!(decode_ledger(&bytes[..bytes.len() - cut]).is_err(), "cut by {cut}");
        }
        bytes.push(0);
        assert!(decode_ledger(&bytes).is_err());
    }

    #[test]
    fn pending_status_round_trips() {
        let status = PendingStatus { state: PendingState::Voided, expires_at: 99 };
        let mut bytes = Vec::new();
        encode_pending_status(&status, &mut bytes);
        assert_eq!(decode_pending_status(&bytes), Ok(status));
    }

    #[test]
    fn changes_round_trip_at_their_own_sizes() {
        let kinds = [
            (ChangeKind::LedgerCreated(LedgerId(u32::MAX - 1)), 5),
            (ChangeKind::AccountCreated { id: AccountId(u128::MAX - 1), closed: true }, 18),
            (ChangeKind::AccountCreated { id: AccountId(3), closed: false }, 18),
            (ChangeKind::TransferCreated(TransferId(4)), CHANGE_SIZE_MAX),
            (ChangeKind::PendingExpired(TransferId(5)), CHANGE_SIZE_MAX),
        ];
        for (kind, size) in kinds {
            let balances = match kind {
                ChangeKind::TransferCreated(_) | ChangeKind::PendingExpired(_) => Some(TransferBalances {
                    debit: Balances { debits_pending: 1, debits_posted: 2, credits_pending: 3, credits_posted: 4 },
                    credit: Balances { credits_posted: u128::MAX, ..Balances::default() },
                }),
                _ => None,
            };
            let change = Change { timestamp: 77, kind, balances };
            let mut bytes = Vec::new();
            encode_change(&change, &mut bytes);
            assert!(bytes.len() <= size, "{kind:?}");
            assert_eq!(decode_change(77, &bytes), Ok(change));
            assert!(decode_change(77, &bytes[..bytes.len() - 1]).is_err(), "{kind:?} cut short");
            bytes.push(0);
            assert!(decode_change(77, &bytes).is_err(), "{kind:?} with a byte too many");
        }
    }

    #[test]
    fn a_change_of_unknown_kind_or_closed_flag_is_refused() {
        assert_eq!(
            decode_change(1, &[9, 0, 0, 0, 1]),
            Err(DecodeError::InvalidField { record: "change", field: "kind", value: 9 })
        );
        let mut bytes = Vec::new();
        encode_change(
            &Change {
                timestamp: 1,
                kind: ChangeKind::AccountCreated { id: AccountId(1), closed: true },
                balances: None,
            },
            &mut bytes,
        );
        bytes[17] = 2;
        assert_eq!(
            decode_change(1, &bytes),
            Err(DecodeError::InvalidField { record: "change", field: "closed", value: 2 })
        );
        assert_eq!(decode_change(1, &[]), Err(DecodeError::Length { record: "change", expected: 1, actual: 0 }));
    }

    #[test]
    fn balances_take_a_varint_each_and_refuse_one_past_u128() {
        let balances =
            Balances { debits_pending: 0, debits_posted: 127, credits_pending: 128, credits_posted: u128::MAX };
        let mut bytes = Vec::new();
        encode_balances(&balances, &mut bytes);
        assert_eq!(bytes.len(), 1 + 1 + 2 + 19);
        assert_eq!(decode_balances(&bytes), Ok(balances));
        // u128::MAX's last byte holds two bits: three is past it.
        let last = bytes.len() - 1;
        bytes[last] = 0b111;
        assert!(decode_balances(&bytes).is_err());
    }

    #[test]
    fn totals_and_their_history_round_trip() {
        let totals = CodeTotals {
            ledger: LedgerId(7),
            code: 3,
            accounts: 9,
            debits_pending: Total { high: 1, low: 2 },
            debits_posted: Total { high: 0, low: u128::MAX },
            credits_pending: Total::default(),
            credits_posted: Total { high: 5, low: 6 },
        };
        let mut bytes = Vec::new();
        encode_code_totals(&totals, &mut bytes);
        assert_eq!(bytes.len(), CODE_TOTALS_SIZE);
        assert_eq!(decode_code_totals(LedgerId(7), 3, &bytes), Ok(totals));
        let entry = TotalsEntry { first_timestamp: 10, last_timestamp: 20, totals };
        bytes.clear();
        encode_totals_entry(&entry, &mut bytes);
        assert_eq!(decode_totals_entry(LedgerId(7), 3, 20, &bytes), Ok(entry));
        assert!(decode_totals_entry(LedgerId(7), 3, 9, &bytes).is_err(), "a batch cannot end before it starts");
    }

    #[test]
    fn wrong_length_and_unknown_kind_are_named() {
        let mut bytes = Vec::new();
        encode_account(&sample_account(), &mut bytes);
        assert_eq!(
            decode_account(&bytes[1..]),
            Err(DecodeError::Length { record: "account", expected: ACCOUNT_SIZE, actual: ACCOUNT_SIZE - 1 })
        );
        bytes[22] = 9; // the kind byte
        assert_eq!(
            decode_account(&bytes),
            Err(DecodeError::InvalidField { record: "account", field: "kind", value: 9 })
        );
    }
}
