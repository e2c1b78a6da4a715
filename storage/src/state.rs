//! `LedgerState`: the ledger's state in RocksDB, implementing the ledger's
//! [`Store`], plus the applied index kept in the same writes.
//!
//! Applying a committed entry writes the ledger's write set, the applied
//! index (and the conf state when it changed) in **one** `WriteBatch`, so
//! after any crash the state and the applied index agree.
//!
//! Those writes skip RocksDB's WAL ([`Db::write_unlogged`]): the Raft log is
//! their redo log. They are durable once a flush persists them, and flushes
//! are atomic across column families, so after a crash (even of the
//! process) the state is the one at the last flush, with its own applied
//! index, and Raft re-applies the committed entries after it from the log,
//! which is never compacted past the newest snapshot (each one a checkpoint
//! that flushes first). See ARCHITECTURE.md, "Storage".

use std::sync::{Arc, Mutex, PoisonError};

use coffer_ledger::codec::{
    decode_account, decode_change, decode_code_totals, decode_ledger, decode_pending_status, decode_totals_entry,
    decode_transfer, encode_account, encode_change, encode_code_totals, encode_ledger, encode_pending_status,
    encode_totals_entry, encode_transfer, TRANSFER_SIZE,
};
use coffer_ledger::index::{
    account_index_keys, transfer_index_keys, IndexField, IndexKey, Indexed, INDEX_KEY_SIZE_MAX,
};
use coffer_ledger::invariants::{account_fault, transfer_fault};
use coffer_ledger::reconcile::{decode_reconciliation, encode_reconciliation, reconciliation_key, Reconciliation};
use coffer_ledger::{
    Account, AccountBalance, AccountFilter, AccountId, AccountTransfer, Change, ChangeFilter, CodeTotals,
    CreateTransferResult, DigestSum, Ledger, LedgerId, PendingStatus, Side, Store, StoreError, StoreMut, TotalsEntry,
    Transfer, TransferId, WriteSet, DEFERRED_ACCOUNT_DIGEST,
};
use raft::prelude::ConfState;
use rocksdb::WriteBatch;

use crate::audit::{AuditRecord, BatchSpan};
use crate::cache::AccountCache;
use crate::db::{
    keys, Db, Reader, Snapshot, Visit, CF_ACCOUNTS, CF_ACCOUNT_TRANSFERS, CF_BALANCES, CF_CHANGES, CF_EXPIRY,
    CF_FAILURES, CF_INDEX, CF_LEDGERS, CF_META, CF_PENDING, CF_RAFT_STATE, CF_TOTALS, CF_TOTALS_HISTORY, CF_TRANSFERS,
    KEY_APPLIED, KEY_CONF_STATE, KEY_DIGEST_SUM, KEY_LAST_TIMESTAMP, KEY_SNAPSHOT_INSTALL,
};
use crate::db::{member_key, CF_AUDIT, CF_RECONCILIATIONS, KEY_MEMBER_PREFIX};
use crate::error::StorageError;
use crate::frame::corruption;
use crate::log::encode_message;

/// The last Raft entry applied to the state, and the region's disaster
/// recovery state as of that entry (written in the same write, so a crash
/// never separates them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AppliedState {
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The region's role, epoch and shipping cursor after it.
    pub region: RegionState,
}

/// A region's role, as its Raft entries last set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RegionRole {
    /// No region entry applied yet: the node's configuration says.
    #[default]
    Configured,
    /// The region that accepts writes.
    Primary,
    /// The region that follows the primary by shipping.
    Standby,
}

impl RegionRole {
    fn code(self) -> u8 {
        match self {
            Self::Configured => 0,
            Self::Primary => 1,
            Self::Standby => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Configured),
            1 => Some(Self::Primary),
            2 => Some(Self::Standby),
            _ => None,
        }
    }
}

/// The disaster-recovery state of a region: changed only by applying Raft
/// entries, so every node of the region holds the same one at the same
/// index, and it survives crashes and travels in snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegionState {
    /// Rises by one at every switchover or failover; `0` until the first.
    pub epoch: u64,
    /// The role ([`RegionRole::Configured`] until a region entry sets one).
    pub role: RegionRole,
    /// A primary that froze its writes for a switchover.
    pub frozen: bool,
    /// A standby: the last index of the primary's log it has applied.
    pub cursor: u64,
    /// A standby: the primary froze its writes (or was demoted), and every
    /// entry the primary committed before that is applied here.
    pub source_frozen: bool,
    /// A primary: the index of the entry that promoted it (`0`: primary from
    /// the start). Its log before that is a standby's, which it does not ship.
    pub primary_since: u64,
    /// A primary that writes without a lease from a standby: set when it is
    /// promoted (no standby follows it yet), cleared once one does.
    pub lease_waived: bool,
    /// A promoted primary: the ledger's last timestamp when it was promoted.
    /// The former primary holds the same state if its last timestamp is
    /// this one (it applied nothing the promoted region did not).
    pub base_timestamp: u64,
}

/// The encoded size of an [`AppliedState`] with its region (a store of
/// format version 2 written before regions holds 16 bytes: no region entry).
const APPLIED_ENCODED_LEN: usize = 50;

impl AppliedState {
    /// The state of entry `index` of `term`, with no region entry applied.
    pub const fn at(index: u64, term: u64) -> Self {
        let region = RegionState {
            epoch: 0,
            role: RegionRole::Configured,
            frozen: false,
            cursor: 0,
            source_frozen: false,
            lease_waived: false,
            primary_since: 0,
            base_timestamp: 0,
        };
        Self { index, term, region }
    }

    /// The stored form: index, term, epoch, role, flags, cursor,
    /// primary_since, base_timestamp.
    pub fn encode(self) -> Vec<u8> {
        let region = self.region;
        let flags =
            u8::from(region.frozen) | (u8::from(region.source_frozen) << 1) | (u8::from(region.lease_waived) << 2);
        let mut out = Vec::with_capacity(APPLIED_ENCODED_LEN);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out.extend_from_slice(&region.epoch.to_be_bytes());
        out.push(region.role.code());
        out.push(flags);
        out.extend_from_slice(&region.cursor.to_be_bytes());
        out.extend_from_slice(&region.primary_since.to_be_bytes());
        out.extend_from_slice(&region.base_timestamp.to_be_bytes());
        out
    }

    /// Reads [`Self::encode`]'s form (or the 16-byte form without a region).
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        let (Some(index), Some(term)) = (keys::read_u64(payload, 0), keys::read_u64(payload, 8)) else {
            return Err(format!("applied state of {} bytes, expected {APPLIED_ENCODED_LEN}", payload.len()));
        };
        match payload.len() {
            16 => Ok(Self::at(index, term)),
            APPLIED_ENCODED_LEN => {
                let role = RegionRole::from_code(payload[24])
                    .ok_or_else(|| format!("applied state: region role {} is not one of 0, 1, 2", payload[24]))?;
                let flags = payload[25];
                if flags & !0b111 != 0 {
                    return Err(format!("applied state: region flags {flags:#04x} has unknown bits"));
                }
                let region = RegionState {
                    epoch: keys::read_u64(payload, 16).unwrap_or_default(),
                    role,
                    frozen: flags & 1 != 0,
                    cursor: keys::read_u64(payload, 26).unwrap_or_default(),
                    source_frozen: flags & 2 != 0,
                    lease_waived: flags & 4 != 0,
                    primary_since: keys::read_u64(payload, 34).unwrap_or_default(),
                    base_timestamp: keys::read_u64(payload, 42).unwrap_or_default(),
                };
                Ok(Self { index, term, region })
            }
            len => Err(format!("applied state of {len} bytes, expected {APPLIED_ENCODED_LEN}")),
        }
    }
}

fn decode_u64(payload: &[u8]) -> Result<u64, String> {
    match (keys::read_u64(payload, 0), payload.len()) {
        (Some(value), 8) => Ok(value),
        _ => Err(format!("{} bytes, expected a u64", payload.len())),
    }
}

/// The applied state and the last event timestamp `reader` sees: the point
/// a store (or a snapshot of it) is at. Both are written in the same batch
/// as the state they describe.
fn applied_point(reader: Reader<'_>) -> Result<(AppliedState, u64), StorageError> {
    let applied = reader.get_decoded(CF_META, KEY_APPLIED, AppliedState::decode)?.unwrap_or_default();
    let last_timestamp = reader.get_decoded(CF_META, KEY_LAST_TIMESTAMP, decode_u64)?.unwrap_or_default();
    Ok((applied, last_timestamp))
}

/// Changes [`Store::changes`] reserves room for before it reads (the rest
/// grow as found), so a large limit on a short range costs nothing.
const CHANGES_PREALLOCATED_MAX: usize = 1_024;

/// Transfers one key of `transfers` holds at most: those whose ids differ
/// only in their last four bits.
///
/// A key per transfer was the state's largest cost per transfer after the
/// index (its memtable insert, filter update, flush and compaction: a fifth
/// of a node's CPU under the load generator). Ids a client allocates in
/// order fill each group in one write, a sixteenth of the keys. A group a
/// later write adds to is read and rewritten whole
/// ([`LedgerState::stage_transfers`]), so a client writing one transfer at a
/// time rewrites at most sixteen records per transfer; random ids make
/// groups of one, as before, and each write then looks its groups up once
/// more (bloom-filtered, as the check for used ids does).
const TRANSFERS_PER_GROUP: usize = 16;

/// The key of the group transfer `id` belongs to: the id with its last four
/// bits cleared.
fn transfer_group(id: TransferId) -> u128 {
    id.0 & !(TRANSFERS_PER_GROUP as u128 - 1)
}

/// The encoded records of a group's payload: one to sixteen whole ones.
fn transfer_records(payload: &[u8]) -> Result<std::slice::ChunksExact<'_, u8>, String> {
    let count = payload.len() / TRANSFER_SIZE;
    if !payload.len().is_multiple_of(TRANSFER_SIZE) || !(1..=TRANSFERS_PER_GROUP).contains(&count) {
        return Err(format!("{} bytes are not 1 to {TRANSFERS_PER_GROUP} transfers", payload.len()));
    }
    Ok(payload.chunks_exact(TRANSFER_SIZE))
}

/// The transfers of a group stored under `key`, checked: one to sixteen
/// whole records, ids rising, each in the key's group.
fn decode_transfer_group(key: &[u8], payload: &[u8]) -> Result<Vec<Transfer>, String> {
    let records = transfer_records(payload)?;
    let group = keys::read_u128(key, 0).filter(|_| key.len() == 16).ok_or("the key is not a 16-byte id")?;
    let mut transfers = Vec::with_capacity(records.len());
    for record in records {
        let transfer = decode_transfer(record).map_err(|error| error.to_string())?;
        if transfer_group(transfer.id) != group {
            return Err(format!("holds transfer {}, of another group", transfer.id));
        }
        if transfers.last().is_some_and(|last: &Transfer| last.id >= transfer.id) {
            return Err(format!("holds transfer {} out of order", transfer.id));
        }
        transfers.push(transfer);
    }
    Ok(transfers)
}

/// Transfer `id` in the payload of its group, decoding that record only
/// (a record starts with its id).
fn find_in_transfer_group(payload: &[u8], id: TransferId) -> Result<Option<Transfer>, String> {
    let wanted = id.0.to_be_bytes();
    let Some(record) = transfer_records(payload)?.find(|record| record[..16] == wanted) else {
        return Ok(None);
    };
    decode_transfer(record).map(Some).map_err(|error| error.to_string())
}

/// `items` in ascending order of `key` (see [`LedgerState::stage`] for why).
fn sorted<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_unstable_by_key(|item| key(item));
    sorted
}

/// The key of a code's running totals: ledger ++ code.
fn totals_key(ledger: LedgerId, code: u16) -> [u8; 6] {
    let mut key = [0; 6];
    key[..4].copy_from_slice(&ledger.0.to_be_bytes());
    key[4..].copy_from_slice(&code.to_be_bytes());
    key
}

/// The key of a totals-history entry: ledger ++ code ++ last timestamp.
fn totals_history_key(totals_key: [u8; 6], last_timestamp: u64) -> [u8; 14] {
    let mut key = [0; 14];
    key[..6].copy_from_slice(&totals_key);
    key[6..].copy_from_slice(&last_timestamp.to_be_bytes());
    key
}

/// An index block's key: the index key's encoding ++ the block's last
/// timestamp (or the encoding alone, as a prefix).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct IndexEntryKey {
    bytes: [u8; INDEX_KEY_SIZE_MAX + 8],
    len: u8,
}

impl IndexEntryKey {
    /// The encoding of `key` alone (no timestamp); `encoded` is scratch space.
    fn prefix(key: &IndexKey, encoded: &mut Vec<u8>) -> Self {
        encoded.clear();
        key.encode(encoded);
        let mut bytes = [0; INDEX_KEY_SIZE_MAX + 8];
        let len = encoded.len().min(INDEX_KEY_SIZE_MAX);
        bytes[..len].copy_from_slice(&encoded[..len]);
        Self { bytes, len: len as u8 }
    }

    /// The prefix of the span blocks of `key`'s records and field whose
    /// first value is `key`'s (see [`index_blocks`]): `key`'s encoding with
    /// [`SPAN_TAG_BIT`] set in its field tag.
    fn span_prefix(key: &IndexKey, encoded: &mut Vec<u8>) -> Self {
        let mut prefix = Self::prefix(key, encoded);
        prefix.bytes[1] |= SPAN_TAG_BIT;
        prefix
    }

    /// This prefix ++ `timestamp`.
    fn with_timestamp(&self, timestamp: u64) -> Self {
        let mut key = *self;
        let at = usize::from(self.len);
        key.bytes[at..at + 8].copy_from_slice(&timestamp.to_be_bytes());
        key.len += 8;
        key
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Index fields per record: ledger, code, kind and three user data.
const INDEX_FIELDS: usize = 6;

/// Values a span block covers: its rows' values lie less than this far
/// above its first (see [`index_blocks`]).
const SPAN_VALUES: u128 = 256;

/// Set in the field tag of a span block's key, so that a field's span
/// blocks form a key range of their own after every per-value block.
const SPAN_TAG_BIT: u8 = 0x80;

/// The value of a field whose records may go into span blocks (the three
/// user data fields, where a value is often one record's own), as a
/// number; `None` for the others.
fn spanned_value(field: IndexField) -> Option<u128> {
    match field {
        IndexField::UserData128(value) => Some(value),
        IndexField::UserData64(value) => Some(u128::from(value)),
        IndexField::UserData32(value) => Some(u128::from(value)),
        IndexField::Ledger(_) | IndexField::Code(_) | IndexField::Kind(_) => None,
    }
}

/// `field` with `value` instead of its own, for a value no greater than
/// its own (so it fits the field's width).
fn with_spanned_value(field: IndexField, value: u128) -> IndexField {
    match field {
        IndexField::UserData128(_) => IndexField::UserData128(value),
        IndexField::UserData64(own) => IndexField::UserData64(u64::try_from(value).unwrap_or(own)),
        IndexField::UserData32(own) => IndexField::UserData32(u32::try_from(value).unwrap_or(own)),
        other => other,
    }
}

/// Passes `put` the index blocks (key, value) of the accounts and
/// transfers `write_set` creates, in key order (see [`LedgerState::stage`]
/// for why): per index key (records,
/// field, value), one block of the timestamps the batch added, keyed by the
/// key ++ its last timestamp. A batch of 8,189 transfers of one ledger adds
/// one ledger block instead of 8,189 entries: a key per record cost a
/// fifth of the apply path's throughput.
///
/// A user data value the write set gives one record only (a reference
/// unique to each payment, say) would still make a key per record. Such
/// rows of nearby values share a *span block* instead: up to
/// [`SPAN_VALUES`] consecutive values, keyed by the records and field (tag
/// with [`SPAN_TAG_BIT`]), the first value and the block's latest
/// timestamp, holding each row's value and timestamp
/// ([`encode_span_block`]). References allocated in order then cost a
/// key per 256 records: that one key per transfer was a tenth of a node's
/// CPU under the load generator. A lookup of a value reads its own blocks
/// and the span blocks whose first value is less than [`SPAN_VALUES`]
/// below it ([`StateReads::index_seek`]). A value with no neighbour among
/// the write set's single rows keeps its own one-row block.
///
/// Keys start with the records' tag (accounts before transfers), then the
/// field's tag, then the value big-endian, so within one field the values'
/// numeric order is their keys' order: each field's rows are sorted by
/// value (never by encoded key) and a key is encoded once per block. The
/// rows of one field are made in timestamp order, so a stable sort keeps
/// each value's timestamps in order.
fn index_blocks(write_set: &WriteSet, put: &mut dyn FnMut(&[u8], &[u8])) {
    let rows_max = write_set.accounts.len().max(write_set.transfers.len());
    let mut fields: [Vec<(IndexField, u64)>; INDEX_FIELDS] = std::array::from_fn(|_| Vec::with_capacity(rows_max));
    let mut writer = IndexWriter {
        put,
        scratch: Vec::with_capacity(INDEX_KEY_SIZE_MAX + 8),
        block: Vec::new(),
        span: Vec::with_capacity(SPAN_VALUES as usize),
        spans: Vec::new(),
    };
    // An account the batch created has a timestamp of the batch; one it
    // changed is older.
    for account in write_set.accounts.iter().filter(|account| account.timestamp >= write_set.first_timestamp) {
        for key in account_index_keys(account) {
            fields[usize::from(key.field.tag() - 1)].push((key.field, account.timestamp));
        }
    }
    writer.records(Indexed::Accounts, &mut fields);
    for transfer in &write_set.transfers {
        for key in transfer_index_keys(transfer) {
            fields[usize::from(key.field.tag() - 1)].push((key.field, transfer.timestamp));
        }
    }
    writer.records(Indexed::Transfers, &mut fields);
}

/// What [`index_blocks`] writes with: where blocks go, scratch space, and
/// the span blocks of the records at hand (put after their per-value
/// blocks, which come first in key order).
struct IndexWriter<'p> {
    put: &'p mut dyn FnMut(&[u8], &[u8]),
    scratch: Vec<u8>,
    block: Vec<u8>,
    /// The single rows of nearby values gathered for the next span block.
    span: Vec<(u128, u64)>,
    spans: Vec<(IndexEntryKey, Vec<u8>)>,
}

impl IndexWriter<'_> {
    /// Puts the blocks of one kind of `records`, each field's rows
    /// (`(value, timestamp)`, in timestamp order) taken from `fields`.
    fn records(&mut self, records: Indexed, fields: &mut [Vec<(IndexField, u64)>; INDEX_FIELDS]) {
        for rows in fields.iter_mut() {
            // Stable, and one pass for rows already in order (a batch's
            // ledger, code and kind are mostly one value; ids rise).
            rows.sort_by_key(|(value, _)| *value);
            let mut spanned = None;
            for rows in rows.chunk_by(|a, b| a.0 == b.0) {
                let (field, last) = rows[rows.len() - 1];
                match spanned_value(field) {
                    Some(value) if rows.len() == 1 => {
                        if self.span.first().is_some_and(|(first, _)| value - first >= SPAN_VALUES) {
                            self.end_span(records, field);
                        }
                        self.span.push((value, last));
                        spanned = Some(field);
                    }
                    _ => {
                        // A lone row gathered so far keeps its own block,
                        // put now so that keys stay in order.
                        if self.span.len() == 1 {
                            self.end_span(records, field);
                        }
                        self.put_block(records, field, rows);
                    }
                }
            }
            if let Some(field) = spanned {
                self.end_span(records, field);
            }
            rows.clear();
        }
        for (key, value) in self.spans.drain(..) {
            (self.put)(key.as_slice(), &value);
        }
    }

    /// Puts the block of `field`'s value: its rows' timestamps.
    fn put_block(&mut self, records: Indexed, field: IndexField, rows: &[(IndexField, u64)]) {
        let last = rows[rows.len() - 1].1;
        let prefix = IndexEntryKey::prefix(&IndexKey { records, field }, &mut self.scratch);
        self.block.clear();
        // A block of one row is its key alone (see `decode_index_block`).
        if rows.len() > 1 {
            encode_block_into(rows.iter().map(|(_, timestamp)| (*timestamp, [0u8; 0])), &mut self.block);
        }
        (self.put)(prefix.with_timestamp(last).as_slice(), &self.block);
    }

    /// Ends the span gathered so far of `field` (whose value is ignored):
    /// two rows or more make a span block, one keeps its own block.
    fn end_span(&mut self, records: Indexed, field: IndexField) {
        match *self.span.as_slice() {
            [] => {}
            [(value, timestamp)] => self.put_block(records, with_spanned_value(field, value), &[(field, timestamp)]),
            [(first, _), ..] => {
                let key = IndexKey { records, field: with_spanned_value(field, first) };
                let latest = self.span.iter().map(|(_, timestamp)| *timestamp).max().unwrap_or_default();
                let mut value = Vec::with_capacity(10 + self.span.len() * 4);
                encode_span_block(&self.span, &mut value);
                self.spans.push((IndexEntryKey::span_prefix(&key, &mut self.scratch).with_timestamp(latest), value));
            }
        }
        self.span.clear();
    }
}

/// A block's value (an index block's, or an account history group's): how
/// many rows, the first row's timestamp (8 bytes), its `W`-byte payload,
/// then for each next row its timestamp's distance from the one before
/// (a LEB128 varint) and its payload. An index block's rows have no payload.
fn encode_block<const W: usize>(rows: impl ExactSizeIterator<Item = (u64, [u8; W])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + rows.len() * (2 + W));
    encode_block_into(rows, &mut out);
    out
}

/// [`encode_block`], appending to `out`.
fn encode_block_into<const W: usize>(mut rows: impl ExactSizeIterator<Item = (u64, [u8; W])>, out: &mut Vec<u8>) {
    write_varint(out, rows.len() as u64);
    let Some((first, payload)) = rows.next() else { return };
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&payload);
    let mut previous = first;
    for (timestamp, payload) in rows {
        write_varint(out, timestamp - previous);
        out.extend_from_slice(&payload);
        previous = timestamp;
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The rows of a block whose key ends in `last`, checked: at least one,
/// timestamps strictly rising, ending at `last`.
fn decode_block<const W: usize>(payload: &[u8], last: u64) -> Result<Vec<(u64, [u8; W])>, String> {
    let mut block = BlockReader::start(payload)?;
    let mut rows: Vec<(u64, [u8; W])> = Vec::with_capacity(block.capacity());
    while let Some(timestamp) = block.next_timestamp()? {
        let row_payload = block.payload.get(block.at..block.at + W).and_then(|bytes| <[u8; W]>::try_from(bytes).ok());
        rows.push((timestamp, row_payload.ok_or("a row is cut short")?));
        block.at += W;
    }
    block.finish(last)?;
    Ok(rows)
}

/// Reads a block's framing (its count, first timestamp and distances; see
/// [`encode_block`] and [`encode_change_block`]): the caller reads each
/// row's payload at `at` between timestamps.
struct BlockReader<'p> {
    payload: &'p [u8],
    at: usize,
    count: u64,
    read: u64,
    timestamp: u64,
}

impl<'p> BlockReader<'p> {
    /// Reads the count (at least one) and the first timestamp.
    fn start(payload: &'p [u8]) -> Result<Self, String> {
        let mut at = 0;
        let count = read_varint(payload, &mut at).filter(|count| *count > 0).ok_or("the count is cut short or 0")?;
        let timestamp = keys::read_u64(payload, at).ok_or("the first timestamp is cut short")?;
        Ok(Self { payload, at: at + 8, count, read: 0, timestamp })
    }

    /// Rows to allocate for: the count, bounded by the payload's size.
    fn capacity(&self) -> usize {
        usize::try_from(self.count).unwrap_or(0).min(self.payload.len())
    }

    /// The next row's timestamp (strictly above the one before), or `None`
    /// after the last row.
    fn next_timestamp(&mut self) -> Result<Option<u64>, String> {
        if self.read == self.count {
            return Ok(None);
        }
        if self.read > 0 {
            let delta = read_varint(self.payload, &mut self.at)
                .filter(|delta| *delta > 0)
                .ok_or("a distance is cut short or 0")?;
            self.timestamp = self.timestamp.checked_add(delta).ok_or("a timestamp overflows")?;
        }
        self.read += 1;
        Ok(Some(self.timestamp))
    }

    /// Checks that the block ended where its payload does, at its key's
    /// timestamp `last`.
    fn finish(&self, last: u64) -> Result<(), String> {
        if self.at != self.payload.len() || self.timestamp != last {
            return Err(format!("the block does not end at its key's timestamp {last}"));
        }
        Ok(())
    }
}

/// Changes one change-log block holds at most: a batch's changes are
/// written as blocks of this many consecutive events, each one key, so the
/// memtable, the flushes and the compactions handle a sixty-fourth of the
/// keys a record per change made them handle, while reading one change back
/// (an indexed query resolving a timestamp) decodes at most this many.
pub const CHANGES_PER_BLOCK: usize = 64;

/// A change-log block's value: how many changes (a LEB128 varint), the
/// first change's timestamp (8 bytes), then for each change its
/// timestamp's distance from the one before (a varint; not for the first),
/// its encoding's length (a varint) and its encoding
/// ([`coffer_ledger::codec::encode_change`]). The key is the last
/// change's timestamp. Timestamps must rise strictly.
fn encode_change_block(changes: &[&Change], out: &mut Vec<u8>) -> Result<(), StorageError> {
    let Some(first) = changes.first() else { return Ok(()) };
    write_varint(out, changes.len() as u64);
    out.extend_from_slice(&first.timestamp.to_be_bytes());
    let mut encoded = Vec::with_capacity(160);
    let mut previous = None;
    for change in changes {
        if let Some(previous) = previous {
            if change.timestamp <= previous {
                return Err(StorageError::Inconsistent {
                    detail: format!("a write set's changes do not rise in time: {} after {previous}", change.timestamp),
                });
            }
            write_varint(out, change.timestamp - previous);
        }
        encoded.clear();
        encode_change(change, &mut encoded);
        write_varint(out, encoded.len() as u64);
        out.extend_from_slice(&encoded);
        previous = Some(change.timestamp);
    }
    Ok(())
}

/// A visitor of a change-log block's `(timestamp, encoded change)` pairs;
/// returns whether to go on.
type VisitChange<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, String> + 'a;

/// Visits the `(timestamp, encoded change)` pairs of a change-log block
/// whose key is `last`, checked: at least one, timestamps strictly rising,
/// every length inside the block, ending at `last`. Decoding stops early
/// (and the block's end is not checked) if `visit` returns false.
fn walk_change_block(payload: &[u8], last: u64, visit: &mut VisitChange<'_>) -> Result<(), String> {
    let mut block = BlockReader::start(payload)?;
    while let Some(timestamp) = block.next_timestamp()? {
        let length = read_varint(payload, &mut block.at).ok_or("a change's length is cut short")?;
        let end = usize::try_from(length).ok().and_then(|length| block.at.checked_add(length));
        let encoded = end.and_then(|end| payload.get(block.at..end)).ok_or("a change is cut short")?;
        block.at += encoded.len();
        if timestamp > last {
            return Err(format!("a change at {timestamp} is past the block's key {last}"));
        }
        if !visit(timestamp, encoded)? {
            return Ok(());
        }
    }
    block.finish(last)
}

/// The timestamps of an index block whose key ends in `last`, checked.
///
/// An empty value is a block of one row, at `last`: with a unique user
/// data field, most blocks hold one record, and its count and timestamp
/// (9 bytes of every such key's value) repeated what the key says. A
/// block in the full form, which earlier writes used for single rows too,
/// reads the same.
fn decode_index_block(payload: &[u8], last: u64) -> Result<Vec<u64>, String> {
    if payload.is_empty() {
        return Ok(vec![last]);
    }
    Ok(decode_block::<0>(payload, last)?.into_iter().map(|(timestamp, _)| timestamp).collect())
}

/// A span block's value: how many rows (a LEB128 varint, at least two),
/// the first row's timestamp (8 bytes), then for each next row its value's
/// distance above the one before (a varint, at least 1) and its
/// timestamp's difference from the one before (a zigzag varint: rows are
/// in value order, and a later value may be an earlier record). The first
/// row's value is in the key, and the key ends in the latest timestamp.
fn encode_span_block(rows: &[(u128, u64)], out: &mut Vec<u8>) {
    write_varint(out, rows.len() as u64);
    let Some(&(mut previous_value, mut previous_timestamp)) = rows.first() else { return };
    out.extend_from_slice(&previous_timestamp.to_be_bytes());
    for &(value, timestamp) in &rows[1..] {
        write_varint(out, u64::try_from(value - previous_value).unwrap_or(u64::MAX));
        let difference = timestamp.wrapping_sub(previous_timestamp) as i64;
        write_varint(out, ((difference << 1) ^ (difference >> 63)) as u64);
        (previous_value, previous_timestamp) = (value, timestamp);
    }
}

/// The `(value, timestamp)` rows of a span block whose first value is
/// `first` and whose key ends in `latest`, checked: at least two rows,
/// values rising within [`SPAN_VALUES`] of the first, the latest timestamp
/// the key's, nothing after the last row.
fn decode_span_block(payload: &[u8], first: u128, latest: u64) -> Result<Vec<(u128, u64)>, String> {
    let mut at = 0;
    let count = read_varint(payload, &mut at).filter(|count| *count >= 2).ok_or("the count is cut short or below 2")?;
    let mut timestamp = keys::read_u64(payload, at).ok_or("the first timestamp is cut short")?;
    at += 8;
    let mut value = first;
    let mut rows = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(SPAN_VALUES as usize));
    rows.push((value, timestamp));
    for _ in 1..count {
        let distance = read_varint(payload, &mut at)
            .filter(|distance| *distance > 0)
            .ok_or("a value's distance is cut short or 0")?;
        value = value
            .checked_add(u128::from(distance))
            .filter(|value| value - first < SPAN_VALUES)
            .ok_or("a value is outside the block's span")?;
        let zigzag = read_varint(payload, &mut at).ok_or("a timestamp's difference is cut short")?;
        let difference = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        timestamp = timestamp.wrapping_add(difference as u64);
        rows.push((value, timestamp));
    }
    if at != payload.len() {
        return Err("bytes follow the last row".to_string());
    }
    if rows.iter().map(|(_, timestamp)| *timestamp).max() != Some(latest) {
        return Err(format!("the latest row is not at the key's timestamp {latest}"));
    }
    Ok(rows)
}

/// Bytes of an account history row's payload: transfer id ++ side.
const HISTORY_ROW_BYTES: usize = 17;

/// An account's history rows one batch added (sorted by timestamp), as a
/// block: its key's timestamp is the last row's.
fn encode_history_group(rows: &[&AccountTransfer]) -> Vec<u8> {
    encode_block(rows.iter().map(|row| {
        let mut payload = [0; HISTORY_ROW_BYTES];
        payload[..16].copy_from_slice(&row.transfer_id.0.to_be_bytes());
        payload[16] = side_code(row.side);
        (row.timestamp, payload)
    }))
}

fn side_code(side: Side) -> u8 {
    match side {
        Side::Debit => 0,
        Side::Credit => 1,
    }
}

/// The ledger's state of one node.
#[derive(Debug)]
pub struct LedgerState {
    db: Arc<Db>,
    cache: Mutex<AccountCache>,
    applied: AppliedState,
    last_timestamp: u64,
    digest_sum: DigestSum,
    /// Bytes of the largest write that carried a write set: the next one
    /// reserves as much up front (see [`Self::write_batch`]).
    write_bytes: usize,
}

impl LedgerState {
    /// Loads the applied index, last timestamp and digest sum, verifying them.
    pub fn open(db: Arc<Db>, account_cache_entries: usize) -> Result<Self, StorageError> {
        let (applied, last_timestamp) = applied_point(db.latest())?;
        let digest_sum = StateReads(db.latest()).digest_sum()?;
        let cache = Mutex::new(AccountCache::new(account_cache_entries));
        Ok(Self { db, cache, applied, last_timestamp, digest_sum, write_bytes: 0 })
    }

    /// The store this state lives in.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The last entry applied.
    pub fn applied(&self) -> AppliedState {
        self.applied
    }

    fn reads(&self) -> StateReads<'_> {
        StateReads(self.db.latest())
    }

    /// Writes the results of applying the entry `applied`: its write set (if
    /// the entry changed the ledger), the applied index, and the new conf
    /// state (if the entry changed membership), in one atomic write that
    /// skips the WAL (see the module docs: a crash loses what no flush has
    /// persisted yet, and Raft applies it again from the log).
    pub fn apply(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        conf_state: Option<&ConfState>,
    ) -> Result<(), StorageError> {
        self.apply_audited(write_set, applied, conf_state, &[])
    }

    /// [`Self::apply`], with the entry's audit records in the same write.
    pub fn apply_audited(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        conf_state: Option<&ConfState>,
        audit: &[AuditRecord],
    ) -> Result<(), StorageError> {
        if applied.index <= self.applied.index {
            return Err(StorageError::Inconsistent {
                detail: format!("entry {} applied again (applied index is {})", applied.index, self.applied.index),
            });
        }
        let mut batch = self.write_batch(write_set, applied, conf_state)?;
        let mut payload = Vec::new();
        for record in audit {
            payload.clear();
            record.encode(&mut payload);
            self.db.put(&mut batch, CF_AUDIT, &record.key(), &payload)?;
            if let Some((key, payload)) = record.time_entry() {
                self.db.put(&mut batch, CF_AUDIT, &key, &payload)?;
            }
        }
        if write_set.is_some() {
            self.write_bytes = self.write_bytes.max(batch.size_in_bytes());
        }
        self.db.write_unlogged(batch)?;
        self.applied = applied;
        if let Some(write_set) = write_set {
            self.committed(write_set);
        }
        Ok(())
    }

    /// Writes a membership change: its applied index, the new
    /// configuration, and the addresses of the members it adds (`Some`: the
    /// change's context) or forgets (`None`), in one write (see
    /// [`crate::db::KEY_MEMBER_PREFIX`]).
    pub fn apply_membership(
        &mut self,
        applied: AppliedState,
        conf_state: &ConfState,
        members: &[(u64, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        if applied.index <= self.applied.index {
            return Err(StorageError::Inconsistent {
                detail: format!("entry {} applied again (applied index is {})", applied.index, self.applied.index),
            });
        }
        let mut batch = self.write_batch(None, applied, Some(conf_state))?;
        let meta = self.db.puts(CF_META)?;
        for (node, addresses) in members {
            match addresses {
                Some(addresses) => self.db.put(&mut batch, CF_META, &member_key(*node), addresses)?,
                None => meta.delete(&mut batch, &member_key(*node)),
            }
        }
        self.db.write_unlogged(batch)?;
        self.applied = applied;
        Ok(())
    }

    /// The addresses of the members that applied membership changes added,
    /// by node id: each the context of the change that added it.
    pub fn member_addresses(&self) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut found = Vec::new();
        self.db.latest().scan(CF_META, KEY_MEMBER_PREFIX, None, &mut |key, payload| {
            let Some(id) = key.strip_prefix(KEY_MEMBER_PREFIX) else { return Ok(false) };
            let id: [u8; 8] = id.try_into().map_err(|_| corruption(CF_META, key, "a member key holds no node id"))?;
            found.push((u64::from_be_bytes(id), payload.to_vec()));
            Ok(true)
        })?;
        Ok(found)
    }

    /// The RocksDB batch [`Self::apply`] writes, without writing it.
    fn write_batch(
        &self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        conf_state: Option<&ConfState>,
    ) -> Result<WriteBatch, StorageError> {
        // A run of four full batches writes megabytes. Grown by doubling,
        // such a batch was copied about once more in all, into fresh pages
        // faulted in one by one: reserving the largest write so far
        // allocates it once (only the pages written are touched).
        let mut batch = match write_set {
            Some(write_set) => {
                let mut batch = WriteBatch::with_capacity_bytes(self.write_bytes);
                self.stage(&mut batch, write_set)?;
                batch
            }
            None => WriteBatch::default(),
        };
        self.db.put(&mut batch, CF_META, KEY_APPLIED, &applied.encode())?;
        if let Some(conf_state) = conf_state {
            self.db.put(&mut batch, CF_RAFT_STATE, KEY_CONF_STATE, &encode_message(conf_state)?)?;
        }
        Ok(batch)
    }

    /// Adds the applied index to `batch` (for a bootstrap, which applies no entry).
    pub(crate) fn stage_applied(&self, batch: &mut WriteBatch, applied: AppliedState) -> Result<(), StorageError> {
        self.db.put(batch, CF_META, KEY_APPLIED, &applied.encode())
    }

    /// Adds every record of `write_set` to `batch`, each column family's
    /// records in key order.
    ///
    /// The order is for speed: RocksDB inserts a batch's records into the
    /// memtable (a skip list) one after another, and each insert starts its
    /// search from where the previous one landed. Keys in ascending order
    /// land next to each other, so an insert walks a few links instead of
    /// searching the whole list from the top; unsorted, the memtable
    /// inserts were two thirds of a durable batch's time (a `perf` profile
    /// of `benches/storage_apply.rs`). Transfers and changes usually come sorted already
    /// (ids a client allocates in order, timestamps always), and sorting a
    /// sorted slice is one pass.
    fn stage(&self, batch: &mut WriteBatch, write_set: &WriteSet) -> Result<(), StorageError> {
        if write_set.account_digest_deferred {
            return Err(StorageError::Inconsistent { detail: DEFERRED_ACCOUNT_DIGEST.to_string() });
        }
        let db = &self.db;
        let mut buffer = Vec::with_capacity(160);
        db.put(batch, CF_META, KEY_LAST_TIMESTAMP, &write_set.last_timestamp.to_be_bytes())?;
        let digest_sum = self.digest_sum.plus(write_set.digest_delta);
        db.put(batch, CF_META, KEY_DIGEST_SUM, &digest_sum.to_bytes())?;
        let (mut totals, mut totals_history) = (db.puts(CF_TOTALS)?, db.puts(CF_TOTALS_HISTORY)?);
        for code_totals in &write_set.totals {
            buffer.clear();
            encode_code_totals(code_totals, &mut buffer);
            let key = totals_key(code_totals.ledger, code_totals.code);
            totals.put(batch, &key, &buffer);
            buffer.clear();
            let entry = TotalsEntry {
                first_timestamp: write_set.first_timestamp,
                last_timestamp: write_set.last_timestamp,
                totals: *code_totals,
            };
            encode_totals_entry(&entry, &mut buffer);
            totals_history.put(batch, &totals_history_key(key, write_set.last_timestamp), &buffer);
        }
        let mut index = db.puts(CF_INDEX)?;
        index_blocks(write_set, &mut |key, block| index.put(batch, key, block));
        let mut reconciliations = db.puts(CF_RECONCILIATIONS)?;
        for record in &write_set.reconciliations {
            buffer.clear();
            encode_reconciliation(record, &mut buffer);
            reconciliations.put(batch, &record.key(), &buffer);
        }
        for (account, statement) in &write_set.latest_statements {
            reconciliations.put(batch, &account.0.to_be_bytes(), statement.as_bytes());
        }
        let mut ledgers = db.puts(CF_LEDGERS)?;
        for ledger in &write_set.ledgers {
            buffer.clear();
            encode_ledger(ledger, &mut buffer);
            ledgers.put(batch, &ledger.id.0.to_be_bytes(), &buffer);
        }
        let mut accounts = db.puts(CF_ACCOUNTS)?;
        for account in sorted(&write_set.accounts, |account| account.id) {
            buffer.clear();
            encode_account(account, &mut buffer);
            accounts.put(batch, &keys::u128(account.id.0), &buffer);
        }
        self.stage_transfers(batch, &write_set.transfers)?;
        let (mut pending, mut expiry) = (db.puts(CF_PENDING)?, db.puts(CF_EXPIRY)?);
        for (id, status) in sorted(&write_set.pending, |(id, _)| *id) {
            buffer.clear();
            encode_pending_status(status, &mut buffer);
            pending.put(batch, &keys::u128(id.0), &buffer);
            if status.expires_at != 0 {
                let key = keys::u64_u128(status.expires_at, id.0);
                if status.state == coffer_ledger::PendingState::Pending {
                    expiry.put(batch, &key, &[]);
                } else {
                    expiry.delete(batch, &key);
                }
            }
        }
        let mut failures = db.puts(CF_FAILURES)?;
        for (id, result) in &write_set.failures {
            failures.put(batch, &keys::u128(id.0), &result.code().to_be_bytes());
        }
        // One group per account the batch touched: a batch of 8,189
        // transfers over 10,000 accounts writes about 6,000 keys instead of
        // 16,378 (each a skip-list insert at a random place in the memtable).
        let mut history = db.puts(CF_ACCOUNT_TRANSFERS)?;
        let rows = sorted(&write_set.account_transfers, |row| (row.account_id, row.timestamp));
        for group in rows.chunk_by(|a, b| a.account_id == b.account_id) {
            let last = group[group.len() - 1];
            history.put(batch, &keys::u128_u64(last.account_id.0, last.timestamp), &encode_history_group(group));
        }
        let mut balances = db.puts(CF_BALANCES)?;
        for row in sorted(&write_set.balances, |row| (row.account_id, row.timestamp)) {
            let mut value = [0; 64];
            let sums = [row.debits_pending, row.debits_posted, row.credits_pending, row.credits_posted];
            for (chunk, sum) in value.chunks_exact_mut(16).zip(sums) {
                chunk.copy_from_slice(&sum.to_be_bytes());
            }
            balances.put(batch, &keys::u128_u64(row.account_id.0, row.timestamp), &value);
        }
        let mut changes = db.puts(CF_CHANGES)?;
        for block in sorted(&write_set.changes, |change| change.timestamp).chunks(CHANGES_PER_BLOCK) {
            let Some(last) = block.last() else { continue };
            buffer.clear();
            encode_change_block(block, &mut buffer)?;
            changes.put(batch, &keys::u64(last.timestamp), &buffer);
        }
        Ok(())
    }

    /// Adds `transfers` (all new) to `batch` by group ([`transfer_group`]),
    /// each group in id order under its key. A group an earlier write began
    /// (its key is not above the largest key stored) is read and rewritten
    /// with the new transfers: one batched lookup, which for ids allocated
    /// in order finds at most the groups a write boundary split.
    fn stage_transfers(&self, batch: &mut WriteBatch, transfers: &[Transfer]) -> Result<(), StorageError> {
        let new = sorted(transfers, |transfer| transfer.id);
        let groups: Vec<&[&Transfer]> = new.chunk_by(|a, b| transfer_group(a.id) == transfer_group(b.id)).collect();
        let reads = self.db.latest();
        let largest = reads.last_key(CF_TRANSFERS)?;
        let begun: Vec<[u8; 16]> = groups
            .iter()
            .map(|group| keys::u128(transfer_group(group[0].id)))
            .take_while(|key| largest.as_deref().is_some_and(|largest| key.as_slice() <= largest))
            .collect();
        let stored = reads.get_sorted(CF_TRANSFERS, &begun)?;
        let mut puts = self.db.puts(CF_TRANSFERS)?;
        let mut value = Vec::with_capacity(TRANSFERS_PER_GROUP * TRANSFER_SIZE);
        for (at, group) in groups.into_iter().enumerate() {
            let key = keys::u128(transfer_group(group[0].id));
            value.clear();
            match stored.get(at).and_then(Option::as_ref) {
                None => group.iter().for_each(|transfer| encode_transfer(transfer, &mut value)),
                Some(payload) => {
                    let mut all = decode_transfer_group(&key, payload)
                        .map_err(|reason| corruption(CF_TRANSFERS, &key, reason))?;
                    all.extend(group.iter().map(|transfer| **transfer));
                    all.sort_unstable_by_key(|transfer| transfer.id);
                    if all.windows(2).any(|pair| pair[0].id == pair[1].id) {
                        return Err(StorageError::Inconsistent {
                            detail: format!(
                                "a write set creates a transfer that group {} holds",
                                transfer_group(group[0].id)
                            ),
                        });
                    }
                    all.iter().for_each(|transfer| encode_transfer(transfer, &mut value));
                }
            }
            puts.put(batch, &key, &value);
        }
        Ok(())
    }

    /// Brings the in-memory copies up to date after `write_set` was written.
    fn committed(&mut self, write_set: &WriteSet) {
        self.last_timestamp = write_set.last_timestamp;
        self.digest_sum = self.digest_sum.plus(write_set.digest_delta);
        let cache = self.cache.get_mut().unwrap_or_else(PoisonError::into_inner);
        // A write set hashes every account or none.
        let hashes: &[DigestSum] =
            if write_set.account_hashes.len() == write_set.accounts.len() { &write_set.account_hashes } else { &[] };
        debug_assert!(!hashes.is_empty() || write_set.account_hashes.is_empty(), "one hash per account or none");
        for (at, account) in write_set.accounts.iter().enumerate() {
            cache.put(*account, hashes.get(at).copied());
        }
    }

    /// Reloads everything from disk and empties the cache (after the state
    /// was replaced by a snapshot).
    pub(crate) fn reload(&mut self) -> Result<(), StorageError> {
        (self.applied, self.last_timestamp) = applied_point(self.db.latest())?;
        self.digest_sum = self.reads().digest_sum()?;
        self.cache.get_mut().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }
}

/// The ledger's reads, of the store's latest state or of a snapshot (see
/// [`Reader`]): what [`LedgerState`] and [`ReadView`] both answer with.
#[derive(Clone, Copy, Debug)]
struct StateReads<'a>(Reader<'a>);

impl StateReads<'_> {
    /// Visits, in timestamp order (newest first if `reversed`), every block
    /// of `cf` keyed by `prefix` ++ its last timestamp (index blocks,
    /// account history groups) that may hold a row timestamped within
    /// `[min, max]`, while `visit` returns true. A block ending at or after
    /// `max` may still begin before it: the first such block is visited
    /// too (first when newest first).
    fn visit_blocks(
        &self,
        cf: &'static str,
        prefix: &[u8],
        min: u64,
        max: u64,
        reversed: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StorageError> {
        if min > max {
            return Ok(());
        }
        let key = |timestamp: u64| [prefix, &timestamp.to_be_bytes()].concat();
        let (low, high) = (key(min), key(max));
        let ours = |block_key: &[u8]| block_key.len() == prefix.len() + 8 && block_key.starts_with(prefix);
        if !reversed {
            return self.0.scan(cf, &low, None, &mut |block_key, payload| {
                if !ours(block_key) {
                    return Ok(false);
                }
                Ok(visit(block_key, payload)? && block_key < high.as_slice())
            });
        }
        let mut go_on = true;
        let mut straddling = None;
        self.0.scan(cf, &high, None, &mut |block_key, payload| {
            if ours(block_key) {
                straddling = Some(block_key.to_vec());
                go_on = visit(block_key, payload)?;
            }
            Ok(false)
        })?;
        if go_on {
            self.0.scan_reverse(cf, &low, &high, &mut |block_key, payload| {
                if !ours(block_key) || straddling.as_deref() == Some(block_key) {
                    return Ok(true);
                }
                visit(block_key, payload)
            })?;
        }
        Ok(())
    }

    fn history_range(filter: &AccountFilter) -> ([u8; 24], [u8; 24]) {
        let max = if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max };
        (keys::u128_u64(filter.account_id.0, filter.timestamp_min), keys::u128_u64(filter.account_id.0, max))
    }

    /// Scans an account's rows in `cf` that `filter` selects, in its order,
    /// keeping at most `filter.limit` rows that `decode` returns.
    fn history<T>(
        &self,
        cf: &'static str,
        filter: &AccountFilter,
        mut decode: impl FnMut(u64, &[u8]) -> Result<Option<T>, String>,
    ) -> Result<Vec<T>, StorageError> {
        let (from, to) = Self::history_range(filter);
        let limit = filter.limit as usize;
        let mut rows = Vec::new();
        let mut visit = |key: &[u8], payload: &[u8]| -> Result<bool, StorageError> {
            if key > to.as_slice() {
                return Ok(false);
            }
            let timestamp = keys::read_u64(key, 16)
                .filter(|_| key.len() == 24)
                .ok_or_else(|| corruption(cf, key, "key is not account ++ timestamp"))?;
            if let Some(row) = decode(timestamp, payload).map_err(|reason| corruption(cf, key, reason))? {
                rows.push(row);
            }
            Ok(rows.len() < limit)
        };
        if filter.reversed {
            self.0.scan_reverse(cf, &from, &to, &mut visit)?;
        } else {
            self.0.scan(cf, &from, None, &mut visit)?;
        }
        Ok(rows)
    }

    fn digest_sum(&self) -> Result<DigestSum, StorageError> {
        let sum = self.0.get_decoded(CF_META, KEY_DIGEST_SUM, |payload| {
            <[u8; 32]>::try_from(payload).map_err(|_| format!("digest sum of {} bytes, expected 32", payload.len()))
        })?;
        Ok(sum.map(DigestSum::from_bytes).unwrap_or(DigestSum::ZERO))
    }

    fn code_totals(&self, ledger: LedgerId, code: u16) -> Result<Option<CodeTotals>, StoreError> {
        Ok(self
            .0
            .get_decoded(CF_TOTALS, &totals_key(ledger, code), |payload| decode_code_totals(ledger, code, payload))?)
    }

    fn ledger_totals(&self, ledger: LedgerId) -> Result<Vec<CodeTotals>, StoreError> {
        let from = totals_key(ledger, 0);
        let past = ledger.0.checked_add(1).map(|next| totals_key(LedgerId(next), 0));
        let mut rows = Vec::new();
        self.0.scan(CF_TOTALS, &from, past.as_ref().map(|key| key.as_slice()), &mut |key, payload| {
            let code = <[u8; 2]>::try_from(key.get(4..).unwrap_or_default())
                .map(u16::from_be_bytes)
                .map_err(|_| corruption(CF_TOTALS, key, "key is not ledger ++ code"))?;
            rows.push(decode_at(CF_TOTALS, key, payload, |payload| decode_code_totals(ledger, code, payload))?);
            Ok(true)
        })?;
        Ok(rows)
    }

    fn totals_around(
        &self,
        ledger: LedgerId,
        code: u16,
        timestamp: u64,
    ) -> Result<(Option<TotalsEntry>, Option<TotalsEntry>), StoreError> {
        let prefix = totals_key(ledger, code);
        let decode = |key: &[u8], payload: &[u8]| -> Result<TotalsEntry, StorageError> {
            let last_timestamp = keys::read_u64(key, 6)
                .filter(|_| key.len() == 14)
                .ok_or_else(|| corruption(CF_TOTALS_HISTORY, key, "key is not ledger ++ code ++ timestamp"))?;
            decode_at(CF_TOTALS_HISTORY, key, payload, |payload| {
                decode_totals_entry(ledger, code, last_timestamp, payload)
            })
        };
        let mut before = None;
        let (low, at) = (totals_history_key(prefix, 0), totals_history_key(prefix, timestamp));
        self.0.scan_reverse(CF_TOTALS_HISTORY, &low, &at, &mut |key, payload| {
            before = Some(decode(key, payload)?);
            Ok(false)
        })?;
        let mut after = None;
        if let Some(next) = timestamp.checked_add(1) {
            let (from, high) = (totals_history_key(prefix, next), totals_history_key(prefix, u64::MAX));
            self.0.scan(CF_TOTALS_HISTORY, &from, None, &mut |key, payload| {
                if key <= high.as_slice() {
                    after = Some(decode(key, payload)?);
                }
                Ok(false)
            })?;
        }
        Ok((before, after))
    }

    fn index_seek(
        &self,
        key: &IndexKey,
        timestamp_min: u64,
        timestamp_max: u64,
        reversed: bool,
    ) -> Result<Option<u64>, StoreError> {
        if timestamp_min > timestamp_max {
            return Ok(None);
        }
        let prefix = IndexEntryKey::prefix(key, &mut Vec::with_capacity(INDEX_KEY_SIZE_MAX));
        let mut found = None;
        self.visit_blocks(
            CF_INDEX,
            prefix.as_slice(),
            timestamp_min,
            timestamp_max,
            reversed,
            &mut |block_key, payload| {
                let last = keys::read_u64(block_key, block_key.len() - 8).unwrap_or_default();
                let block =
                    decode_index_block(payload, last).map_err(|reason| corruption(CF_INDEX, block_key, reason))?;
                let within = |timestamp: &u64| (timestamp_min..=timestamp_max).contains(timestamp);
                found = if reversed { block.into_iter().rev().find(within) } else { block.into_iter().find(within) };
                Ok(found.is_none())
            },
        )?;
        let Some(value) = spanned_value(key.field) else { return Ok(found) };
        // The span blocks that may hold the value: those whose first value
        // is less than `SPAN_VALUES` below it, whatever their time.
        let scratch = &mut Vec::with_capacity(INDEX_KEY_SIZE_MAX);
        let lowest = IndexKey {
            records: key.records,
            field: with_spanned_value(key.field, value.saturating_sub(SPAN_VALUES - 1)),
        };
        let low = IndexEntryKey::span_prefix(&lowest, scratch).with_timestamp(0);
        let high = IndexEntryKey::span_prefix(key, scratch).with_timestamp(u64::MAX);
        let width = usize::from(prefix.len) - 2;
        self.0.scan(CF_INDEX, low.as_slice(), None, &mut |block_key, payload| {
            if block_key > high.as_slice() {
                return Ok(false);
            }
            let first = (block_key.len() == usize::from(high.len))
                .then(|| block_key[2..2 + width].iter().fold(0u128, |first, byte| first << 8 | u128::from(*byte)))
                .ok_or_else(|| corruption(CF_INDEX, block_key, "a span block's key of another length"))?;
            let latest = keys::read_u64(block_key, block_key.len() - 8).unwrap_or_default();
            let rows =
                decode_span_block(payload, first, latest).map_err(|reason| corruption(CF_INDEX, block_key, reason))?;
            let timestamp = rows.iter().find(|(row_value, _)| *row_value == value).map(|(_, timestamp)| *timestamp);
            if let Some(timestamp) = timestamp.filter(|timestamp| (timestamp_min..=timestamp_max).contains(timestamp)) {
                found = Some(match found {
                    Some(other) if reversed => other.max(timestamp),
                    Some(other) => other.min(timestamp),
                    None => timestamp,
                });
            }
            Ok(true)
        })?;
        Ok(found)
    }

    fn visit_all(&self, cf: &'static str, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        self.0.scan(cf, &[], None, visit)?;
        Ok(())
    }

    fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        Ok(self.0.get_decoded(CF_LEDGERS, &id.0.to_be_bytes(), decode_ledger)?)
    }

    fn reconciliation(&self, account: AccountId, statement: &str) -> Result<Option<Reconciliation>, StoreError> {
        let key = reconciliation_key(account, statement);
        Ok(self.0.get_decoded(CF_RECONCILIATIONS, &key, decode_reconciliation)?)
    }

    fn latest_reconciliation(&self, account: AccountId) -> Result<Option<Reconciliation>, StoreError> {
        let key = account.0.to_be_bytes();
        let statement = self.0.get_decoded(CF_RECONCILIATIONS, &key, |payload| String::from_utf8(payload.to_vec()))?;
        match statement {
            Some(statement) => self.reconciliation(account, &statement),
            None => Ok(None),
        }
    }

    fn reconciliations(
        &self,
        account: AccountId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Reconciliation>, StoreError> {
        let prefix = account.0.to_be_bytes();
        let mut from = reconciliation_key(account, after);
        if !after.is_empty() {
            // The first key after `after`'s own.
            from.push(0);
        }
        let mut found = Vec::new();
        self.0.scan(CF_RECONCILIATIONS, &from, None, &mut |key, payload| {
            if !key.starts_with(&prefix) || found.len() >= limit {
                return Ok(false);
            }
            if key.len() > prefix.len() {
                found.push(
                    decode_reconciliation(payload).map_err(|e| corruption(CF_RECONCILIATIONS, key, e.to_string()))?,
                );
            }
            Ok(true)
        })?;
        Ok(found)
    }

    fn account(&self, id: AccountId) -> Result<Option<Account>, StorageError> {
        let key = keys::u128(id.0);
        let account = self.0.get_decoded(CF_ACCOUNTS, &key, decode_account)?;
        if let Some(account) = account.filter(|account| account.id != id) {
            return Err(corruption(CF_ACCOUNTS, &key, format!("holds account {}", account.id)));
        }
        // Paired with the state machine's check before writing it.
        if let Some(fault) = account.as_ref().and_then(account_fault) {
            return Err(corruption(CF_ACCOUNTS, &key, fault));
        }
        Ok(account)
    }

    fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        let key = keys::u128(transfer_group(id));
        let transfer = self.0.get_decoded(CF_TRANSFERS, &key, |payload| find_in_transfer_group(payload, id))?.flatten();
        if let Some(fault) = transfer.as_ref().and_then(transfer_fault) {
            return Err(corruption(CF_TRANSFERS, &key, fault).into());
        }
        Ok(transfer)
    }

    fn pending_status(&self, id: TransferId) -> Result<Option<PendingStatus>, StoreError> {
        Ok(self.0.get_decoded(CF_PENDING, &keys::u128(id.0), decode_pending_status)?)
    }

    fn transfer_failure(&self, id: TransferId) -> Result<Option<CreateTransferResult>, StoreError> {
        Ok(self.0.get_decoded(CF_FAILURES, &keys::u128(id.0), decode_failure)?)
    }

    /// [`Store::unused_transfer_ids`] in two batched lookups: `transfers`
    /// for every id, `failures` for those it lacks.
    ///
    /// An id above the largest id in both families cannot be in either, and
    /// is not looked up: clients that allocate ids in increasing order (a
    /// sequence, or time-based ids, as payment systems and TigerBeetle's
    /// clients do) skip the lookups entirely, which were 7 % of a driver
    /// thread. Finding the two largest ids is one seek each.
    fn unused_transfer_ids(&self, ids: &[TransferId]) -> Result<Vec<bool>, StorageError> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&at| ids[at]);
        let sorted: Vec<[u8; 16]> = order.iter().map(|&at| keys::u128(ids[at].0)).collect();
        let mut unused = vec![true; ids.len()];
        // A group's key is at most its ids, so an id above the largest key
        // of either family (the last group's, which may hold ids up to its
        // end) is in neither.
        let last_group = self.0.last_key(CF_TRANSFERS)?.map(|key| {
            let group = keys::read_u128(&key, 0).unwrap_or(u128::MAX);
            keys::u128(group | (TRANSFERS_PER_GROUP as u128 - 1)).to_vec()
        });
        let largest = last_group.max(self.0.last_key(CF_FAILURES)?);
        let stored = sorted.partition_point(|key| largest.as_deref().is_some_and(|largest| key.as_slice() <= largest));
        let (order, sorted) = (&order[..stored], &sorted[..stored]);
        // One lookup per group the ids fall in.
        let mut group_keys: Vec<[u8; 16]> = order.iter().map(|&at| keys::u128(transfer_group(ids[at]))).collect();
        group_keys.dedup();
        let groups = self.0.get_sorted(CF_TRANSFERS, &group_keys)?;
        // In id order: the groups are, and so is each group.
        let mut held = Vec::new();
        for (key, payload) in group_keys.iter().zip(&groups) {
            if let Some(payload) = payload {
                let group =
                    decode_transfer_group(key, payload).map_err(|reason| corruption(CF_TRANSFERS, key, reason))?;
                held.extend(group.iter().map(|transfer| transfer.id));
            }
        }
        let mut absent = Vec::with_capacity(order.len());
        let mut absent_keys = Vec::with_capacity(order.len());
        for (&at, key) in order.iter().zip(sorted) {
            if held.binary_search(&ids[at]).is_ok() {
                unused[at] = false;
            } else {
                absent.push(at);
                absent_keys.push(*key);
            }
        }
        for (at, failed) in absent.into_iter().zip(self.0.present_sorted(CF_FAILURES, &absent_keys)?) {
            unused[at] = !failed;
        }
        Ok(unused)
    }

    fn expiring(&self, up_to: u64, limit: usize) -> Result<Vec<(u64, TransferId)>, StoreError> {
        let mut due = Vec::new();
        let end = up_to.checked_add(1).map(|after| keys::u64_u128(after, 0));
        self.0.scan(CF_EXPIRY, &[], end.as_ref().map(|key| key.as_slice()), &mut |key, _| {
            let parsed = (keys::read_u64(key, 0), keys::read_u128(key, 8), key.len());
            let (Some(expires_at), Some(id), 24) = parsed else {
                return Err(corruption(CF_EXPIRY, key, "key is not expires_at ++ transfer id"));
            };
            due.push((expires_at, TransferId(id)));
            Ok(due.len() < limit)
        })?;
        Ok(due)
    }

    fn account_transfers(&self, filter: &AccountFilter) -> Result<Vec<AccountTransfer>, StoreError> {
        let max = if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max };
        let limit = filter.limit as usize;
        let mut rows = Vec::new();
        let prefix = filter.account_id.0.to_be_bytes();
        let cf = CF_ACCOUNT_TRANSFERS;
        self.visit_blocks(cf, &prefix, filter.timestamp_min, max, filter.reversed, &mut |key, payload| {
            let last = keys::read_u64(key, 16).unwrap_or_default();
            let group =
                decode_block::<HISTORY_ROW_BYTES>(payload, last).map_err(|reason| corruption(cf, key, reason))?;
            let mut take = |(timestamp, row): &(u64, [u8; HISTORY_ROW_BYTES])| -> Result<bool, StorageError> {
                let side = match row[16] {
                    0 => Side::Debit,
                    1 => Side::Credit,
                    other => return Err(corruption(cf, key, format!("unknown side {other}"))),
                };
                let within = (filter.timestamp_min..=max).contains(timestamp);
                if within && filter.sides.includes(side) && rows.len() < limit {
                    let transfer_id = TransferId(keys::read_u128(row, 0).unwrap_or_default());
                    rows.push(AccountTransfer {
                        account_id: filter.account_id,
                        timestamp: *timestamp,
                        transfer_id,
                        side,
                    });
                }
                Ok(rows.len() < limit)
            };
            if filter.reversed {
                for row in group.iter().rev() {
                    if !take(row)? {
                        return Ok(false);
                    }
                }
            } else {
                for row in &group {
                    if !take(row)? {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })?;
        Ok(rows)
    }

    fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>, StoreError> {
        Ok(self.history(CF_BALANCES, filter, |timestamp, payload| {
            let balance = |at| keys::read_u128(payload, at);
            let (Some(debits_pending), Some(debits_posted), Some(credits_pending), Some(credits_posted), 64) =
                (balance(0), balance(16), balance(32), balance(48), payload.len())
            else {
                return Err("balance row is not four u128".to_owned());
            };
            Ok(Some(AccountBalance {
                account_id: filter.account_id,
                timestamp,
                debits_pending,
                debits_posted,
                credits_pending,
                credits_posted,
            }))
        })?)
    }

    fn changes(&self, filter: &ChangeFilter) -> Result<Vec<Change>, StoreError> {
        let limit = filter.limit as usize;
        let mut changes = Vec::with_capacity(limit.min(CHANGES_PREALLOCATED_MAX));
        if limit == 0 || filter.timestamp_min > filter.timestamp_max {
            return Ok(changes);
        }
        let (min, max) = (filter.timestamp_min, filter.timestamp_max);
        // Each block's key is its last change's timestamp, so the first
        // block that can hold `min` is the first whose key is at least
        // `min`, and the last that can hold `max` the first whose key is at
        // least `max`. A change outside the range is never decoded; its
        // block's frame is checked when it shares a block with one inside.
        let mut visit = |key: &[u8], payload: &[u8]| -> Result<bool, StorageError> {
            let last = keys::read_u64(key, 0)
                .filter(|_| key.len() == 8)
                .ok_or_else(|| corruption(CF_CHANGES, key, "key is not a u64 timestamp"))?;
            let mut block = Vec::new();
            let mut in_range = |timestamp: u64, encoded: &[u8]| -> Result<bool, String> {
                if timestamp > max {
                    return Ok(false);
                }
                if timestamp >= min {
                    block.push(decode_change(timestamp, encoded).map_err(|error| error.to_string())?);
                }
                Ok(true)
            };
            walk_change_block(payload, last, &mut in_range).map_err(|reason| corruption(CF_CHANGES, key, reason))?;
            if filter.reversed {
                block.reverse();
            }
            let room = limit - changes.len();
            changes.extend(block.into_iter().take(room));
            // Forward, a block ending past `max` is the range's last.
            Ok(changes.len() < limit && (filter.reversed || last < max))
        };
        if filter.reversed {
            // The block holding `max` (if any block ends at or after it)
            // bounds the backward scan.
            let mut upper = keys::u64(max).to_vec();
            self.0.scan(CF_CHANGES, &keys::u64(max), None, &mut |key, _| {
                upper = key.to_vec();
                Ok(false)
            })?;
            self.0.scan_reverse(CF_CHANGES, &keys::u64(min), &upper, &mut visit)?;
        } else {
            self.0.scan(CF_CHANGES, &keys::u64(min), None, &mut visit)?;
        }
        Ok(changes)
    }

    fn for_each_ledger(&self, visit: &mut dyn FnMut(&Ledger)) -> Result<(), StoreError> {
        self.visit_all(CF_LEDGERS, &mut |key, payload| {
            visit(&decode_at(CF_LEDGERS, key, payload, decode_ledger)?);
            Ok(true)
        })
    }

    fn for_each_account(&self, visit: &mut dyn FnMut(&Account)) -> Result<(), StoreError> {
        self.visit_all(CF_ACCOUNTS, &mut |key, payload| {
            visit(&decode_at(CF_ACCOUNTS, key, payload, decode_account)?);
            Ok(true)
        })
    }

    fn for_each_transfer(&self, visit: &mut dyn FnMut(&Transfer)) -> Result<(), StoreError> {
        self.visit_all(CF_TRANSFERS, &mut |key, payload| {
            decode_at(CF_TRANSFERS, key, payload, |payload| decode_transfer_group(key, payload))?
                .iter()
                .for_each(&mut *visit);
            Ok(true)
        })
    }

    fn for_each_pending(&self, visit: &mut dyn FnMut(TransferId, &PendingStatus)) -> Result<(), StoreError> {
        self.visit_all(CF_PENDING, &mut |key, payload| {
            visit(transfer_id_of(CF_PENDING, key)?, &decode_at(CF_PENDING, key, payload, decode_pending_status)?);
            Ok(true)
        })
    }

    fn for_each_failure(&self, visit: &mut dyn FnMut(TransferId, CreateTransferResult)) -> Result<(), StoreError> {
        self.visit_all(CF_FAILURES, &mut |key, payload| {
            visit(transfer_id_of(CF_FAILURES, key)?, decode_at(CF_FAILURES, key, payload, decode_failure)?);
            Ok(true)
        })
    }
}

fn decode_at<T, E: std::fmt::Display>(
    cf: &'static str,
    key: &[u8],
    payload: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<T, StorageError> {
    decode(payload).map_err(|error| corruption(cf, key, error.to_string()))
}

fn transfer_id_of(cf: &'static str, key: &[u8]) -> Result<TransferId, StorageError> {
    keys::read_u128(key, 0)
        .filter(|_| key.len() == 16)
        .map(TransferId)
        .ok_or_else(|| corruption(cf, key, "key is not a u128 id"))
}

fn decode_failure(payload: &[u8]) -> Result<CreateTransferResult, String> {
    let code =
        <[u8; 2]>::try_from(payload).map(u16::from_be_bytes).map_err(|_| "failure is not a u16 code".to_owned())?;
    CreateTransferResult::from_code(code).ok_or_else(|| format!("unknown result code {code}"))
}

/// The [`Store`] methods that both [`LedgerState`] and [`ReadView`] answer
/// straight from [`StateReads`] (each type writes `last_timestamp` and
/// `account` itself).
macro_rules! state_reads {
    () => {
        fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
            self.reads().ledger(id)
        }

        fn reconciliation(&self, account: AccountId, statement: &str) -> Result<Option<Reconciliation>, StoreError> {
            self.reads().reconciliation(account, statement)
        }

        fn latest_reconciliation(&self, account: AccountId) -> Result<Option<Reconciliation>, StoreError> {
            self.reads().latest_reconciliation(account)
        }

        fn reconciliations(
            &self,
            account: AccountId,
            after: &str,
            limit: usize,
        ) -> Result<Vec<Reconciliation>, StoreError> {
            self.reads().reconciliations(account, after, limit)
        }

        fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
            self.reads().transfer(id)
        }

        fn pending_status(&self, id: TransferId) -> Result<Option<PendingStatus>, StoreError> {
            self.reads().pending_status(id)
        }

        fn transfer_failure(&self, id: TransferId) -> Result<Option<CreateTransferResult>, StoreError> {
            self.reads().transfer_failure(id)
        }

        fn unused_transfer_ids(&self, ids: &[TransferId]) -> Result<Option<Vec<bool>>, StoreError> {
            Ok(Some(self.reads().unused_transfer_ids(ids)?))
        }

        fn expiring(&self, up_to: u64, limit: usize) -> Result<Vec<(u64, TransferId)>, StoreError> {
            self.reads().expiring(up_to, limit)
        }

        fn account_transfers(&self, filter: &AccountFilter) -> Result<Vec<AccountTransfer>, StoreError> {
            self.reads().account_transfers(filter)
        }

        fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>, StoreError> {
            self.reads().account_balances(filter)
        }

        fn changes(&self, filter: &ChangeFilter) -> Result<Vec<Change>, StoreError> {
            self.reads().changes(filter)
        }

        fn for_each_ledger(&self, visit: &mut dyn FnMut(&Ledger)) -> Result<(), StoreError> {
            self.reads().for_each_ledger(visit)
        }

        fn for_each_account(&self, visit: &mut dyn FnMut(&Account)) -> Result<(), StoreError> {
            self.reads().for_each_account(visit)
        }

        fn for_each_transfer(&self, visit: &mut dyn FnMut(&Transfer)) -> Result<(), StoreError> {
            self.reads().for_each_transfer(visit)
        }

        fn for_each_pending(&self, visit: &mut dyn FnMut(TransferId, &PendingStatus)) -> Result<(), StoreError> {
            self.reads().for_each_pending(visit)
        }

        fn for_each_failure(&self, visit: &mut dyn FnMut(TransferId, CreateTransferResult)) -> Result<(), StoreError> {
            self.reads().for_each_failure(visit)
        }

        fn code_totals(&self, ledger: LedgerId, code: u16) -> Result<Option<CodeTotals>, StoreError> {
            self.reads().code_totals(ledger, code)
        }

        fn ledger_totals(&self, ledger: LedgerId) -> Result<Vec<CodeTotals>, StoreError> {
            self.reads().ledger_totals(ledger)
        }

        fn totals_around(
            &self,
            ledger: LedgerId,
            code: u16,
            timestamp: u64,
        ) -> Result<(Option<TotalsEntry>, Option<TotalsEntry>), StoreError> {
            self.reads().totals_around(ledger, code, timestamp)
        }

        fn index_seek(
            &self,
            key: &IndexKey,
            timestamp_min: u64,
            timestamp_max: u64,
            reversed: bool,
        ) -> Result<Option<u64>, StoreError> {
            self.reads().index_seek(key, timestamp_min, timestamp_max, reversed)
        }
    };
}

impl Store for LedgerState {
    fn last_timestamp(&self) -> Result<u64, StoreError> {
        Ok(self.last_timestamp)
    }

    fn digest_sum(&self) -> Result<DigestSum, StoreError> {
        Ok(self.digest_sum)
    }

    fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.account_hashed(id)?.map(|(account, _)| account))
    }

    fn account_hashed(&self, id: AccountId) -> Result<Option<(Account, Option<DigestSum>)>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache.get(id) {
            return Ok(Some(cached));
        }
        let account = self.reads().account(id)?;
        if let Some(account) = account {
            cache.put(account, None);
        }
        Ok(account.map(|account| (account, None)))
    }

    state_reads!();
}

impl StoreMut for LedgerState {
    /// Commits a write set without moving the applied index: for tools that
    /// drive the ledger outside Raft (tests, offline imports).
    fn commit(&mut self, write_set: &WriteSet) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.stage(&mut batch, write_set)?;
        self.db.write(batch, false)?;
        self.committed(write_set);
        Ok(())
    }
}

/// A consistent, read-only view of a node's ledger state at one applied
/// index: a RocksDB snapshot, with the applied index and last timestamp
/// read from it (they are written in the same batch as the state, so they
/// describe exactly what the view holds).
///
/// A view is opened on any thread from the node's [`Db`]; the node goes on
/// applying meanwhile and the view does not change. It never reads or fills
/// the apply path's account cache.
pub struct ReadView<'a> {
    db: &'a Db,
    snapshot: Snapshot<'a>,
    applied: AppliedState,
    last_timestamp: u64,
}

impl std::fmt::Debug for ReadView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView").field("db", self.db).field("applied", &self.applied).finish_non_exhaustive()
    }
}

impl<'a> ReadView<'a> {
    /// Opens a view of `db`'s state as it is now. Refused (transiently,
    /// [`StorageError::Installing`]) while a snapshot install is replacing
    /// the state: the install writes in several batches, and a view taken
    /// between them would be of no single index.
    pub fn open(db: &'a Db) -> Result<Self, StorageError> {
        let snapshot = db.snapshot();
        let reader = db.at(&snapshot);
        if reader.get(CF_RAFT_STATE, KEY_SNAPSHOT_INSTALL)?.is_some() {
            return Err(StorageError::Installing { path: db.path().to_owned() });
        }
        let (applied, last_timestamp) = applied_point(reader)?;
        Ok(Self { db, snapshot, applied, last_timestamp })
    }

    /// The last entry applied to the state this view holds.
    pub fn applied(&self) -> AppliedState {
        self.applied
    }

    /// Raw reads of the whole store as this view holds it.
    pub fn reader(&self) -> Reader<'_> {
        self.db.at(&self.snapshot)
    }

    /// The audit trail after entry `after_index` (see
    /// [`crate::audit::audit_page`]).
    pub fn audit(
        &self,
        after_index: u64,
        limit: usize,
        principal: Option<&str>,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        crate::audit::audit_page(&self.reader(), after_index, limit, principal)
    }

    /// The committed batches holding events `first ..= last`, with their
    /// principals (see [`crate::audit::batch_spans`]).
    pub fn batch_spans(&self, first: u64, last: u64) -> Result<Vec<BatchSpan>, StorageError> {
        crate::audit::batch_spans(&self.reader(), first, last)
    }

    fn reads(&self) -> StateReads<'_> {
        StateReads(self.reader())
    }
}

impl Store for ReadView<'_> {
    fn last_timestamp(&self) -> Result<u64, StoreError> {
        Ok(self.last_timestamp)
    }

    fn digest_sum(&self) -> Result<DigestSum, StoreError> {
        Ok(self.reads().digest_sum()?)
    }

    fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.reads().account(id)?)
    }

    state_reads!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_blocks_round_trip_and_refuse_what_no_writer_makes() {
        for timestamps in [vec![7], vec![1, 2, 300, 1 << 40, u64::MAX]] {
            let block = encode_block(timestamps.iter().map(|timestamp| (*timestamp, [0u8; 0])));
            let last = *timestamps.last().unwrap();
            assert_eq!(decode_index_block(&block, last), Ok(timestamps.clone()));
            assert!(decode_index_block(&block, last - 1).is_err(), "another last timestamp");
            assert!(decode_index_block(&block[..block.len() - 1], last).is_err(), "cut short");
        }
        assert_eq!(decode_index_block(&[], 9), Ok(vec![9]), "one row, at its key's timestamp");
        let repeated = [encode_block([(5, [0u8; 0])].into_iter()), vec![0]].concat();
        assert!(decode_index_block(&[&[2u8][..], &repeated[1..]].concat(), 5).is_err(), "a distance of 0");
    }

    #[test]
    fn index_blocks_are_the_records_grouped_by_encoded_key() {
        use coffer_ledger::{Account, AccountId, Transfer, TransferId};
        // Values chosen so that numeric and byte order would differ if a
        // value were encoded little-endian, repeated out of order, and
        // zero (not indexed) for some records; the accounts' and the last
        // transfers' user data are each one record's own.
        let user_data = [0u128, 0x100, 0x01, 0x100, 1 << 100, 0x01, 0];
        let transfers: Vec<Transfer> = (0..46u64)
            .map(|n| Transfer {
                id: TransferId(u128::from(1_000 - n)),
                ledger: LedgerId(1 + (n % 3) as u32 * 255),
                code: (n % 2) as u16 * 256 + 1,
                user_data_128: if n < 40 {
                    user_data[n as usize % user_data.len()]
                } else {
                    0x1_0000 + u128::from(n % 3) * 200 + u128::from(n)
                },
                user_data_64: n % 4,
                user_data_32: (n % 5) as u32 * 0x0101,
                timestamp: 100 + n,
                ..Default::default()
            })
            .collect();
        let accounts: Vec<Account> = (0..9u64)
            .map(|n| Account {
                id: AccountId(u128::from(n + 1)),
                ledger: LedgerId(7 - (n % 2) as u32),
                code: 3,
                user_data_64: 9 - n,
                // The first three are older than the batch: changed, not created.
                timestamp: if n < 3 { 10 + n } else { 50 + n },
                ..Default::default()
            })
            .collect();
        let write_set =
            WriteSet { first_timestamp: 50, last_timestamp: 145, accounts, transfers, ..WriteSet::default() };
        // Every row the write set indexes, as (field key without value, value, timestamp).
        let created = write_set.accounts.iter().filter(|account| account.timestamp >= 50);
        let rows = created.flat_map(|account| account_index_keys(account).map(|key| (key, account.timestamp))).chain(
            write_set
                .transfers
                .iter()
                .flat_map(|transfer| transfer_index_keys(transfer).map(|key| (key, transfer.timestamp))),
        );
        let mut expected: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut rows_of_value = std::collections::BTreeMap::<Vec<u8>, usize>::new();
        for (key, timestamp) in rows {
            let mut encoded = Vec::new();
            key.encode(&mut encoded);
            *rows_of_value.entry(encoded.clone()).or_default() += 1;
            expected.push((encoded, timestamp));
        }
        let mut made: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut keys_made: Vec<Vec<u8>> = Vec::new();
        let (mut spans, mut grouped) = (0, false);
        index_blocks(&write_set, &mut |key, block| {
            keys_made.push(key.to_vec());
            let (prefix, last) = (&key[..key.len() - 8], keys::read_u64(key, key.len() - 8).unwrap());
            if prefix[1] & SPAN_TAG_BIT == 0 {
                let timestamps = decode_index_block(block, last).unwrap();
                assert_eq!(block.is_empty(), timestamps.len() == 1, "a block of one row is its key alone");
                grouped |= timestamps.len() > 1;
                made.extend(timestamps.into_iter().map(|timestamp| (prefix.to_vec(), timestamp)));
                return;
            }
            spans += 1;
            let first = prefix[2..].iter().fold(0u128, |first, byte| first << 8 | u128::from(*byte));
            let rows = decode_span_block(block, first, last).unwrap();
            assert!(rows.len() >= 2 && rows.iter().all(|(value, _)| value - first < SPAN_VALUES));
            for (value, timestamp) in rows {
                let mut own = prefix.to_vec();
                own[1] &= !SPAN_TAG_BIT;
                let width = own.len() - 2;
                own.truncate(2);
                own.extend_from_slice(&value.to_be_bytes()[16 - width..]);
                assert_eq!(rows_of_value[&own], 1, "a span block holds values of one row each");
                made.push((own, timestamp));
            }
        });
        expected.sort();
        made.sort();
        assert_eq!(made, expected, "every row is in exactly one block");
        assert!(keys_made.windows(2).all(|pair| pair[0] < pair[1]), "put in key order");
        assert!(grouped, "some blocks group several records");
        // The accounts' `user_data_64` (1 to 6), and the last transfers'
        // `user_data_128` in two spans: 200 apart, 200 and 400 beyond.
        assert_eq!(spans, 3, "{keys_made:?}");
    }

    #[test]
    fn transfer_groups_refuse_what_no_writer_makes() {
        use coffer_ledger::Transfer;
        let record = |id: u128| {
            let mut bytes = Vec::new();
            encode_transfer(&Transfer { id: TransferId(id), ..Default::default() }, &mut bytes);
            bytes
        };
        let key = keys::u128(0x40);
        let two = [record(0x41), record(0x4f)].concat();
        let read = decode_transfer_group(&key, &two).unwrap();
        assert_eq!(read.iter().map(|transfer| transfer.id.0).collect::<Vec<_>>(), vec![0x41, 0x4f]);
        assert!(decode_transfer_group(&key, &[]).is_err(), "no transfer");
        assert!(decode_transfer_group(&key, &two[..two.len() - 1]).is_err(), "cut short");
        assert!(decode_transfer_group(&key, &[record(0x4f), record(0x41)].concat()).is_err(), "out of order");
        assert!(decode_transfer_group(&key, &[record(0x41), record(0x41)].concat()).is_err(), "twice");
        assert!(decode_transfer_group(&key, &record(0x50)).is_err(), "of another group");
        assert!(decode_transfer_group(&key[..8], &record(0x41)).is_err(), "a short key");
        let seventeen: Vec<u8> = (0..17).flat_map(|_| record(0x41)).collect();
        assert!(decode_transfer_group(&key, &seventeen).is_err(), "more than a group holds");
        let found = |payload: &[u8], id| find_in_transfer_group(payload, TransferId(id));
        assert_eq!(found(&two, 0x4f).unwrap().map(|transfer| transfer.id.0), Some(0x4f));
        assert_eq!(found(&two, 0x42), Ok(None));
        assert!(found(&two[1..], 0x4f).is_err(), "cut short");
        assert!(found(&seventeen, 0x41).is_err(), "more than a group holds");
    }

    #[test]
    fn span_blocks_round_trip_and_refuse_what_no_writer_makes() {
        let rows = [(10u128, 500u64), (11, 400), (200, 900), (265, 7)];
        let mut block = Vec::new();
        encode_span_block(&rows, &mut block);
        assert_eq!(decode_span_block(&block, 10, 900), Ok(rows.to_vec()));
        assert!(decode_span_block(&block, 10, 500).is_err(), "another latest timestamp");
        let mut wide = Vec::new();
        encode_span_block(&[(10, 1), (266, 2)], &mut wide);
        assert!(decode_span_block(&wide, 10, 2).is_err(), "values 256 apart");
        assert!(decode_span_block(&block[..block.len() - 1], 10, 900).is_err(), "cut short");
        assert!(decode_span_block(&[block.as_slice(), &[0]].concat(), 10, 900).is_err(), "a byte past the end");
        let mut one = Vec::new();
        encode_span_block(&rows[..1], &mut one);
        assert!(decode_span_block(&one, 10, 500).is_err(), "a single row has a block of its own");
        let mut repeated = Vec::new();
        encode_span_block(&[(10, 1), (10, 2)], &mut repeated);
        assert!(decode_span_block(&repeated, 10, 2).is_err(), "a value twice");
        let wide = [(u128::MAX - 255, 1), (u128::MAX, 2)];
        let mut block = Vec::new();
        encode_span_block(&wide, &mut block);
        assert_eq!(decode_span_block(&block, u128::MAX - 255, 2), Ok(wide.to_vec()));
    }

    #[test]
    fn change_blocks_round_trip_and_refuse_what_no_writer_makes() {
        let change = |timestamp, id| Change {
            timestamp,
            kind: coffer_ledger::ChangeKind::LedgerCreated(LedgerId(id)),
            balances: None,
        };
        let changes = [change(5, 1), change(6, 2), change(1 << 40, 3)];
        let mut block = Vec::new();
        encode_change_block(&changes.iter().collect::<Vec<_>>(), &mut block).unwrap();
        let read = |payload: &[u8], last| {
            let mut read = Vec::new();
            walk_change_block(payload, last, &mut |timestamp, encoded| {
                read.push(decode_change(timestamp, encoded).map_err(|error| error.to_string())?);
                Ok(true)
            })
            .map(|()| read)
        };
        assert_eq!(read(&block, 1 << 40), Ok(changes.to_vec()));
        assert!(read(&block, (1 << 40) + 1).is_err(), "another last timestamp");
        assert!(read(&block[..block.len() - 1], 1 << 40).is_err(), "cut short");
        assert!(read(&[block.as_slice(), &[0]].concat(), 1 << 40).is_err(), "a byte past the end");
        assert!(read(&[0], 1).is_err(), "no changes");
        let mut falling = Vec::new();
        let error = encode_change_block(&[&change(6, 1), &change(6, 2)], &mut falling).unwrap_err();
        assert!(error.to_string().contains("6 after 6"), "{error}");
    }

    #[test]
    fn the_applied_state_round_trips_with_its_region_and_reads_the_form_without_one() {
        let region = RegionState {
            epoch: 3,
            role: RegionRole::Standby,
            frozen: true,
            cursor: 99,
            source_frozen: true,
            lease_waived: true,
            primary_since: 7,
            base_timestamp: 1_234,
        };
        let applied = AppliedState { index: 12, term: 4, region };
        assert_eq!(AppliedState::decode(&applied.encode()), Ok(applied));
        let legacy = [12u64.to_be_bytes(), 4u64.to_be_bytes()].concat();
        assert_eq!(AppliedState::decode(&legacy), Ok(AppliedState::at(12, 4)));
        let mut bad_role = applied.encode();
        bad_role[24] = 9;
        assert!(AppliedState::decode(&bad_role).unwrap_err().contains("region role 9"));
        let mut bad_flags = applied.encode();
        bad_flags[25] = 0x80;
        assert!(AppliedState::decode(&bad_flags).unwrap_err().contains("unknown bits"));
        assert!(AppliedState::decode(&applied.encode()[..30]).unwrap_err().contains("30 bytes"));
    }
}
