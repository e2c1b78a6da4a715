//! Transfers as packed binary records: `CreateTransfersRequest.packed_transfers`.
//!
//! A batch of 8,189 transfers as protobuf messages is 8,189 messages of
//! fourteen fields, five of them decimal text, each parsed (and allocated)
//! by the server and formatted by the client. As records of
//! [`PACKED_TRANSFER_BYTES`] it is one byte string read field by field at
//! fixed offsets. The layout (little-endian) is documented with the field
//! in `coffer.proto`; this module is its one reader and writer.
//!
//! The checks are those of [`crate::convert::transfer_from_wire`] where the
//! record can hold the same mistake (a kind or flag that does not exist),
//! plus what only a record can get wrong (a length that is not a whole
//! number of records, reserved bytes that are not zero); each refusal
//! names the record (`packed_transfers[3].kind`). What the ledger has a
//! result code for is left to the ledger.

use coffer_ledger::{AccountId, LedgerId, Transfer, TransferFlags, TransferId};

use crate::convert::{check_events, transfer_kind_from_wire, FieldError};

/// Bytes of one packed transfer.
pub const PACKED_TRANSFER_BYTES: usize = 128;

/// Where each field of a record starts (the layout in `coffer.proto`).
mod at {
    pub const ID: usize = 0;
    pub const DEBIT_ACCOUNT_ID: usize = 16;
    pub const CREDIT_ACCOUNT_ID: usize = 32;
    pub const AMOUNT: usize = 48;
    pub const PENDING_ID: usize = 64;
    pub const USER_DATA_128: usize = 80;
    pub const USER_DATA_64: usize = 96;
    pub const USER_DATA_32: usize = 104;
    pub const TIMEOUT: usize = 108;
    pub const LEDGER: usize = 112;
    pub const CODE: usize = 116;
    pub const FLAGS: usize = 118;
    pub const KIND: usize = 120;
    pub const RESERVED: usize = 121;
}

/// The transfers of `packed`, a whole number (1 to 8,189) of records;
/// `field` names it in a refusal.
pub fn transfers_from_packed(field: &str, packed: &[u8]) -> Result<Vec<Transfer>, FieldError> {
    if !packed.len().is_multiple_of(PACKED_TRANSFER_BYTES) {
        let reason = format!("{} bytes are not a whole number of {PACKED_TRANSFER_BYTES}-byte records", packed.len());
        return Err(FieldError::new(field, reason));
    }
    let events = packed.len() / PACKED_TRANSFER_BYTES;
    check_events(field, events)?;
    // Sized once (collecting into a `Result` cannot know the length, and
    // grew the list by doubling).
    let mut transfers = Vec::with_capacity(events);
    for (index, record) in packed.chunks_exact(PACKED_TRANSFER_BYTES).enumerate() {
        let record: &[u8; PACKED_TRANSFER_BYTES] = record.try_into().unwrap_or(&[0; PACKED_TRANSFER_BYTES]);
        let transfer = transfer_from_record(record)
            .map_err(|(name, reason)| FieldError::new(format!("{field}[{index}].{name}"), reason))?;
        transfers.push(transfer);
    }
    Ok(transfers)
}

/// `transfers` as records, for `packed_transfers`. Their timestamps are
/// not written (a request's must be 0).
pub fn transfers_to_packed(transfers: &[Transfer]) -> Vec<u8> {
    let mut packed = vec![0; transfers.len() * PACKED_TRANSFER_BYTES];
    for (record, transfer) in packed.chunks_exact_mut(PACKED_TRANSFER_BYTES).zip(transfers) {
        let mut put = |at: usize, bytes: &[u8]| record[at..at + bytes.len()].copy_from_slice(bytes);
        put(at::ID, &transfer.id.0.to_le_bytes());
        put(at::DEBIT_ACCOUNT_ID, &transfer.debit_account_id.0.to_le_bytes());
        put(at::CREDIT_ACCOUNT_ID, &transfer.credit_account_id.0.to_le_bytes());
        put(at::AMOUNT, &transfer.amount.to_le_bytes());
        put(at::PENDING_ID, &transfer.pending_id.0.to_le_bytes());
        put(at::USER_DATA_128, &transfer.user_data_128.to_le_bytes());
        put(at::USER_DATA_64, &transfer.user_data_64.to_le_bytes());
        put(at::USER_DATA_32, &transfer.user_data_32.to_le_bytes());
        put(at::TIMEOUT, &transfer.timeout.to_le_bytes());
        put(at::LEDGER, &transfer.ledger.0.to_le_bytes());
        put(at::CODE, &transfer.code.to_le_bytes());
        put(at::FLAGS, &transfer.flags.bits().to_le_bytes());
        put(at::KIND, &[transfer.kind.code()]);
    }
    packed
}

/// One record's transfer, or the refused field's name and why.
fn transfer_from_record(record: &[u8; PACKED_TRANSFER_BYTES]) -> Result<Transfer, (&'static str, String)> {
    let u128_at = |at: usize| u128::from_le_bytes(array(record, at));
    if let Some(offset) = record[at::RESERVED..].iter().position(|byte| *byte != 0) {
        let reason = format!(
            "byte {} is {}: bytes {}..{PACKED_TRANSFER_BYTES} must be 0",
            at::RESERVED + offset,
            record[at::RESERVED + offset],
            at::RESERVED
        );
        return Err(("reserved", reason));
    }
    let flags = TransferFlags::from_bits(u16::from_le_bytes(array(record, at::FLAGS)));
    if flags.has_reserved_bits() {
        let reserved = flags.without(TransferFlags::ALL).bits();
        return Err(("flags", format!("bits {reserved:#06x} are not transfer flags")));
    }
    let kind = transfer_kind_from_wire("", i32::from(record[at::KIND])).map_err(|error| ("kind", error.reason))?;
    Ok(Transfer {
        id: TransferId(u128_at(at::ID)),
        debit_account_id: AccountId(u128_at(at::DEBIT_ACCOUNT_ID)),
        credit_account_id: AccountId(u128_at(at::CREDIT_ACCOUNT_ID)),
        amount: u128_at(at::AMOUNT),
        pending_id: TransferId(u128_at(at::PENDING_ID)),
        ledger: LedgerId(u32::from_le_bytes(array(record, at::LEDGER))),
        code: u16::from_le_bytes(array(record, at::CODE)),
        kind,
        flags,
        timeout: u32::from_le_bytes(array(record, at::TIMEOUT)),
        user_data_128: u128_at(at::USER_DATA_128),
        user_data_64: u64::from_le_bytes(array(record, at::USER_DATA_64)),
        user_data_32: u32::from_le_bytes(array(record, at::USER_DATA_32)),
        timestamp: 0,
    })
}

/// The `N` bytes of `record` from `at` (the offsets are constants within
/// the record, so the slice is always whole).
fn array<const N: usize>(record: &[u8; PACKED_TRANSFER_BYTES], at: usize) -> [u8; N] {
    let mut bytes = [0; N];
    bytes.copy_from_slice(&record[at..at + N]);
    bytes
}

#[cfg(test)]
mod tests {
    use coffer_ledger::{TransferKind, BATCH_EVENTS_MAX};

    use super::*;

    fn transfer(id: u128) -> Transfer {
        Transfer {
            id: TransferId(id),
            debit_account_id: AccountId(u128::MAX - id),
            credit_account_id: AccountId(id << 64 | 7),
            amount: Transfer::AMOUNT_MAX - id,
            pending_id: TransferId(id ^ 0x5555),
            ledger: LedgerId(410),
            code: 65_535,
            kind: TransferKind::CashTransfer,
            flags: TransferFlags::PENDING | TransferFlags::ADJUSTMENT,
            timeout: u32::MAX,
            user_data_128: u128::MAX / 3,
            user_data_64: u64::MAX - 1,
            user_data_32: 0x0102_0304,
            timestamp: 0,
        }
    }

    fn refusal(packed: &[u8]) -> FieldError {
        transfers_from_packed("packed_transfers", packed).expect_err("refused")
    }

    #[test]
    fn records_round_trip_every_field() {
        let transfers = (1..=3).map(transfer).chain([Transfer { kind: TransferKind::Journal, ..transfer(9) }]);
        let transfers = transfers.collect::<Vec<_>>();
        let packed = transfers_to_packed(&transfers);
        assert_eq!(packed.len(), 4 * PACKED_TRANSFER_BYTES);
        assert_eq!(transfers_from_packed("packed_transfers", &packed), Ok(transfers));
    }

    #[test]
    fn the_layout_is_the_one_documented() {
        let packed = transfers_to_packed(&[transfer(1)]);
        assert_eq!(packed[..16], 1_u128.to_le_bytes());
        assert_eq!(packed[112..116], 410_u32.to_le_bytes());
        assert_eq!(packed[116..118], 65_535_u16.to_le_bytes());
        // pending is TransferFlag 2 (bit 1), adjustment TransferFlag 9 (bit 8).
        assert_eq!(packed[118..120], (1_u16 << 1 | 1 << 8).to_le_bytes());
        assert_eq!(packed[120], 3, "cash_transfer");
        assert_eq!(packed[121..], [0; 7]);
    }

    #[test]
    fn a_timestamp_is_not_carried() {
        let sent = Transfer { timestamp: 99, ..transfer(1) };
        let received = transfers_from_packed("packed_transfers", &transfers_to_packed(&[sent])).unwrap();
        assert_eq!(received, [transfer(1)]);
    }

    #[test]
    fn a_length_that_is_not_whole_records_or_a_batch_is_refused() {
        let one = transfers_to_packed(&[transfer(1)]);
        let error = refusal(&one[..PACKED_TRANSFER_BYTES - 1]);
        assert_eq!(error.field, "packed_transfers");
        assert!(error.reason.contains("127 bytes"), "{error}");
        assert_eq!(refusal(&[]).field, "packed_transfers");
        let too_many = vec![0; (BATCH_EVENTS_MAX + 1) * PACKED_TRANSFER_BYTES];
        assert!(refusal(&too_many).reason.contains("8189"), "{}", refusal(&too_many));
    }

    #[test]
    fn a_bad_record_is_refused_by_position_and_field() {
        let mut packed = transfers_to_packed(&[transfer(1), transfer(2), transfer(3)]);
        let second = PACKED_TRANSFER_BYTES;
        packed[second + 127] = 1;
        let error = refusal(&packed);
        assert_eq!(error.field, "packed_transfers[1].reserved");
        assert!(error.reason.contains("byte 127 is 1"), "{error}");
        packed[second + 127] = 0;
        packed[2 * second + 120] = 5;
        assert_eq!(refusal(&packed).field, "packed_transfers[2].kind");
        packed[2 * second + 120] = 0;
        assert!(refusal(&packed).reason.contains("must be set"), "kind 0 is unspecified");
        packed[2 * second + 120] = 4;
        packed[119] = 0x80;
        let error = refusal(&packed);
        assert_eq!(error.field, "packed_transfers[0].flags");
        assert!(error.reason.contains("0x8000"), "{error}");
    }
}
