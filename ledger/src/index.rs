//! Secondary indexes of accounts and transfers by their fields, for
//! `query_accounts` and `query_transfers`.
//!
//! Each index is a set of `(field, value, timestamp)`; a record's timestamp
//! is unique and the change log maps it to the record's id, so an index is
//! a list of records in time order per field value, and an entry holds
//! nothing but its key. A query with several fields walks their lists together
//! (each step seeks every list to the latest candidate timestamp; a
//! timestamp all lists hold is a match), as TigerBeetle's query does.
//!
//! Every account and transfer is indexed by ledger, code and kind; by each
//! `user_data` field only when it is not zero (zero means "not set", and a
//! query cannot ask for it).

use crate::model::{Account, Transfer};

/// The records an index lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Indexed {
    /// Accounts, by creation timestamp.
    Accounts,
    /// Transfers, by timestamp.
    Transfers,
}

/// A field and value that an index lists records by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexField {
    /// The ledger id.
    Ledger(u32),
    /// The code.
    Code(u16),
    /// The kind's code.
    Kind(u8),
    /// `user_data_128`.
    UserData128(u128),
    /// `user_data_64`.
    UserData64(u64),
    /// `user_data_32`.
    UserData32(u32),
}

/// One index: the records of one kind with one field value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexKey {
    /// Which records.
    pub records: Indexed,
    /// Which field value.
    pub field: IndexField,
}

/// Bytes of the longest encoded [`IndexKey`] (a `user_data_128` one).
pub const INDEX_KEY_SIZE_MAX: usize = 2 + 16;

impl IndexKey {
    /// Appends the key's fixed encoding: records tag, field tag, value
    /// (big-endian). A store appends the timestamp (8 bytes, big-endian) to
    /// make the entry's key, so one index is one contiguous key range.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self.records {
            Indexed::Accounts => b'a',
            Indexed::Transfers => b't',
        });
        out.push(self.field.tag());
        match self.field {
            IndexField::Ledger(value) => out.extend_from_slice(&value.to_be_bytes()),
            IndexField::Code(value) => out.extend_from_slice(&value.to_be_bytes()),
            IndexField::Kind(value) => out.push(value),
            IndexField::UserData128(value) => out.extend_from_slice(&value.to_be_bytes()),
            IndexField::UserData64(value) => out.extend_from_slice(&value.to_be_bytes()),
            IndexField::UserData32(value) => out.extend_from_slice(&value.to_be_bytes()),
        }
    }
}

impl IndexField {
    /// The field's tag in an encoded key: 1 (ledger) to 6 (`user_data_32`).
    pub const fn tag(&self) -> u8 {
        match self {
            Self::Ledger(_) => 1,
            Self::Code(_) => 2,
            Self::Kind(_) => 3,
            Self::UserData128(_) => 4,
            Self::UserData64(_) => 5,
            Self::UserData32(_) => 6,
        }
    }
}

/// The fields a record is indexed by: ledger, code, kind, and each non-zero
/// `user_data` field.
fn fields(ledger: u32, code: u16, kind: u8, user_data: (u128, u64, u32)) -> impl Iterator<Item = IndexField> {
    let (user_data_128, user_data_64, user_data_32) = user_data;
    [
        Some(IndexField::Ledger(ledger)),
        Some(IndexField::Code(code)),
        Some(IndexField::Kind(kind)),
        (user_data_128 != 0).then_some(IndexField::UserData128(user_data_128)),
        (user_data_64 != 0).then_some(IndexField::UserData64(user_data_64)),
        (user_data_32 != 0).then_some(IndexField::UserData32(user_data_32)),
    ]
    .into_iter()
    .flatten()
}

/// The index keys a transfer is listed under.
pub fn transfer_index_keys(transfer: &Transfer) -> impl Iterator<Item = IndexKey> {
    let user_data = (transfer.user_data_128, transfer.user_data_64, transfer.user_data_32);
    fields(transfer.ledger.0, transfer.code, transfer.kind.code(), user_data)
        .map(|field| IndexKey { records: Indexed::Transfers, field })
}

/// The index keys an account is listed under.
pub fn account_index_keys(account: &Account) -> impl Iterator<Item = IndexKey> {
    let user_data = (account.user_data_128, account.user_data_64, account.user_data_32);
    fields(account.ledger.0, account.code, account.kind.code(), user_data)
        .map(|field| IndexKey { records: Indexed::Accounts, field })
}
