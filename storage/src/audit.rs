//! The audit trail of committed batches and region operations: one record
//! per client batch (a part of a Raft entry) and per region operation
//! (freeze, promote, a waived lease, ...), naming the principal that
//! proposed it (and an operator's reason), written with the entry's state
//! in the same atomic write, the same on every replica (and, by shipping,
//! in the standby region).
//!
//! Column family `audit`, two kinds of keys (integers big-endian):
//!
//! - a record: `'r' ++ index u64 ++ part u32` (so the trail reads in log
//!   order) → `first_timestamp u64 | events u32 | kind u8 | proposer u64 |
//!   applied u8 | principal_len u8 | principal | note_len u16 | note`;
//! - for an applied batch with events, its place in time: `'t' ++
//!   first_timestamp u64` → `events u32 | index u64 | part u32 |
//!   principal_len u8 | principal`, so the change feed can name the
//!   principal of the batch each change came from (a batch's events are
//!   stamped `first_timestamp ..` consecutively).
//!
//! It is not part of the state digest: it records who asked, not what the
//! ledger holds.

use crate::db::{Reader, CF_AUDIT};
use crate::frame::corruption;
use crate::StorageError;

/// The most records one read returns.
pub const AUDIT_PAGE_MAX: usize = 8_189;

/// What a record is of: a batch of what it created, or a region operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditKind {
    /// Ledgers.
    Ledgers = 1,
    /// Accounts.
    Accounts = 2,
    /// Transfers.
    Transfers = 3,
    /// The primary stopped taking writes.
    Freeze = 4,
    /// The primary takes writes again.
    Unfreeze = 5,
    /// A standby became the primary.
    Promote = 6,
    /// The primary became a standby.
    Demote = 7,
    /// Writes need, or stop needing, a lease from the standby.
    Lease = 8,
    /// Ledgers' fiscal periods moved.
    Periods = 9,
    /// A step of a year-end close (its transfers included).
    Close = 10,
    /// A bank statement reconciled, or lines matched by hand.
    Reconcile = 11,
}

impl AuditKind {
    /// Its name in listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ledgers => "ledgers",
            Self::Accounts => "accounts",
            Self::Transfers => "transfers",
            Self::Freeze => "freeze",
            Self::Unfreeze => "unfreeze",
            Self::Promote => "promote",
            Self::Demote => "demote",
            Self::Lease => "lease",
            Self::Periods => "periods",
            Self::Close => "close",
            Self::Reconcile => "reconcile",
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [
            Self::Ledgers,
            Self::Accounts,
            Self::Transfers,
            Self::Freeze,
            Self::Unfreeze,
            Self::Promote,
            Self::Demote,
            Self::Lease,
            Self::Periods,
            Self::Close,
            Self::Reconcile,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == code)
    }
}

/// One committed batch in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// The Raft entry that carried it.
    pub index: u64,
    /// Its position among the entry's batches.
    pub part: u32,
    /// Its first event's timestamp (its events are stamped from it on).
    pub first_timestamp: u64,
    /// How many events it held.
    pub events: u32,
    /// What it created.
    pub kind: AuditKind,
    /// The node that proposed the entry (the leader then).
    pub proposer: u64,
    /// Whether the state machine applied it (per-event results then say
    /// which events succeeded); `false` when the entry was refused whole
    /// (a frozen or standby region, a bad timestamp).
    pub applied: bool,
    /// Who proposed it: a client principal, `node:ID`, or `anonymous` on a
    /// plaintext cluster; empty for an entry of a version that did not
    /// record it.
    pub principal: String,
    /// For a region operation, what the operator said (a forced promotion
    /// or a waived lease carries a reason); empty for a batch.
    pub note: String,
}

impl AuditRecord {
    /// Its key.
    pub fn key(&self) -> [u8; 13] {
        key(self.index, self.part)
    }

    /// For an applied batch with events: the key and payload that place it
    /// in time (see the module docs); `None` for anything else.
    pub fn time_entry(&self) -> Option<([u8; 9], Vec<u8>)> {
        let is_batch = matches!(
            self.kind,
            AuditKind::Ledgers | AuditKind::Accounts | AuditKind::Transfers | AuditKind::Periods | AuditKind::Close
        );
        if !is_batch || !self.applied || self.events == 0 || self.first_timestamp == 0 {
            return None;
        }
        let principal = bounded_principal(&self.principal);
        let mut payload = Vec::with_capacity(17 + principal.len());
        payload.extend_from_slice(&self.events.to_be_bytes());
        payload.extend_from_slice(&self.index.to_be_bytes());
        payload.extend_from_slice(&self.part.to_be_bytes());
        payload.push(principal.len() as u8);
        payload.extend_from_slice(principal);
        Some((time_key(self.first_timestamp), payload))
    }

    /// Its payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.first_timestamp.to_be_bytes());
        out.extend_from_slice(&self.events.to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.push(u8::from(self.applied));
        let principal = bounded_principal(&self.principal);
        out.push(principal.len() as u8);
        out.extend_from_slice(principal);
        let note = &self.note.as_bytes()[..self.note.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(note.len() as u16).to_be_bytes());
        out.extend_from_slice(note);
    }

    /// Decodes the record under `key`.
    pub fn decode(key: &[u8], payload: &[u8]) -> Result<Self, String> {
        let (index, part) = match key {
            [RECORD, index @ .., p0, p1, p2, p3] if index.len() == 8 => {
                (u64::from_be_bytes(index.try_into().map_err(|_| "key")?), u32::from_be_bytes([*p0, *p1, *p2, *p3]))
            }
            _ => return Err(format!("key of {} bytes, not 'r' ++ index ++ part (13)", key.len())),
        };
        let fixed = 8 + 4 + 1 + 8 + 1 + 1;
        if payload.len() < fixed {
            return Err(format!("{} bytes, at least {fixed}", payload.len()));
        }
        let u64_at = |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().unwrap_or_default());
        let kind = AuditKind::from_code(payload[12]).ok_or_else(|| format!("kind {}", payload[12]))?;
        let applied = match payload[21] {
            0 => false,
            1 => true,
            other => return Err(format!("applied {other}")),
        };
        let len = usize::from(payload[22]);
        let note_at = fixed + len;
        if payload.len() < note_at + 2 {
            return Err(format!("{} bytes, the principal says at least {}", payload.len(), note_at + 2));
        }
        let principal = std::str::from_utf8(&payload[fixed..note_at]).map_err(|error| error.to_string())?.to_owned();
        let note_len = usize::from(u16::from_be_bytes([payload[note_at], payload[note_at + 1]]));
        if payload.len() != note_at + 2 + note_len {
            return Err(format!("{} bytes, the note says {}", payload.len(), note_at + 2 + note_len));
        }
        let note = std::str::from_utf8(&payload[note_at + 2..]).map_err(|error| error.to_string())?.to_owned();
        Ok(Self {
            index,
            part,
            first_timestamp: u64_at(0),
            events: u32::from_be_bytes(payload[8..12].try_into().unwrap_or_default()),
            kind,
            proposer: u64_at(13),
            applied,
            principal,
            note,
        })
    }
}

/// The tag of a record's key.
const RECORD: u8 = b'r';
/// The tag of a batch's place in time.
const BY_TIME: u8 = b't';

/// The consensus layer bounds a principal to 128 bytes; the encoding to 255.
fn bounded_principal(principal: &str) -> &[u8] {
    &principal.as_bytes()[..principal.len().min(usize::from(u8::MAX))]
}

fn key(index: u64, part: u32) -> [u8; 13] {
    let mut key = [RECORD; 13];
    key[1..9].copy_from_slice(&index.to_be_bytes());
    key[9..].copy_from_slice(&part.to_be_bytes());
    key
}

fn time_key(timestamp: u64) -> [u8; 9] {
    let mut key = [BY_TIME; 9];
    key[1..].copy_from_slice(&timestamp.to_be_bytes());
    key
}

/// A committed batch's events in time, and who proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    /// Its first event's timestamp.
    pub first_timestamp: u64,
    /// How many events it held (stamped `first_timestamp ..` on).
    pub events: u32,
    /// The Raft entry that carried it.
    pub index: u64,
    /// Its position among the entry's batches.
    pub part: u32,
    /// Who proposed it (see [`AuditRecord::principal`]).
    pub principal: String,
}

impl BatchSpan {
    /// Whether event timestamp `timestamp` is one of the batch's.
    pub fn holds(&self, timestamp: u64) -> bool {
        timestamp >= self.first_timestamp && timestamp - self.first_timestamp < u64::from(self.events)
    }

    fn decode(key: &[u8], payload: &[u8]) -> Result<Self, String> {
        let first_timestamp = match key {
            [BY_TIME, timestamp @ ..] if timestamp.len() == 8 => {
                u64::from_be_bytes(timestamp.try_into().map_err(|_| "key")?)
            }
            _ => return Err(format!("key of {} bytes, not 't' ++ timestamp (9)", key.len())),
        };
        let fixed = 4 + 8 + 4 + 1;
        if payload.len() < fixed || payload.len() != fixed + usize::from(payload[fixed - 1]) {
            return Err(format!("{} bytes, not events ++ index ++ part ++ a principal", payload.len()));
        }
        let principal = std::str::from_utf8(&payload[fixed..]).map_err(|error| error.to_string())?.to_owned();
        Ok(Self {
            first_timestamp,
            events: u32::from_be_bytes(payload[..4].try_into().unwrap_or_default()),
            index: u64::from_be_bytes(payload[4..12].try_into().unwrap_or_default()),
            part: u32::from_be_bytes(payload[12..16].try_into().unwrap_or_default()),
            principal,
        })
    }
}

/// The committed batches whose events include any of `first ..= last`, in
/// time order: the batch holding `first` (if one does) and every batch that
/// starts after it, up to `last`. Events of no batch (a pending transfer's
/// expiry, which is the cluster's own work, or a batch applied before its
/// principal was recorded) fall between the spans.
pub fn batch_spans(reader: &Reader<'_>, first: u64, last: u64) -> Result<Vec<BatchSpan>, StorageError> {
    let mut spans = Vec::new();
    if first > last {
        return Ok(spans);
    }
    let decode = |key: &[u8], payload: &[u8]| {
        BatchSpan::decode(key, payload).map_err(|reason| corruption(CF_AUDIT, key, reason))
    };
    reader.scan_reverse(CF_AUDIT, &time_key(0), &time_key(first), &mut |key, payload| {
        let span = decode(key, payload)?;
        if span.holds(first) {
            spans.push(span);
        }
        Ok(false)
    })?;
    let Some(next) = first.checked_add(1) else {
        return Ok(spans);
    };
    let past = last.checked_add(1).map(time_key);
    let end = past.as_ref().map_or(&[BY_TIME + 1][..], |key| &key[..]);
    reader.scan(CF_AUDIT, &time_key(next), Some(end), &mut |key, payload| {
        spans.push(decode(key, payload)?);
        Ok(true)
    })?;
    Ok(spans)
}

/// The principal of the batch in `spans` (time-ordered, from
/// [`batch_spans`]) holding event timestamp `timestamp`, if one does.
pub fn principal_at(spans: &[BatchSpan], timestamp: u64) -> Option<&str> {
    let after = spans.partition_point(|span| span.first_timestamp <= timestamp);
    let span = spans[..after].last()?;
    span.holds(timestamp).then_some(span.principal.as_str())
}

/// Up to `limit` (at most [`AUDIT_PAGE_MAX`]) records after entry
/// `after_index` (all of its parts are past), in log order; with
/// `principal`, only that principal's.
pub fn audit_page(
    reader: &Reader<'_>,
    after_index: u64,
    limit: usize,
    principal: Option<&str>,
) -> Result<Vec<AuditRecord>, StorageError> {
    let limit = limit.min(AUDIT_PAGE_MAX);
    let mut records = Vec::new();
    let Some(from) = after_index.checked_add(1) else {
        return Ok(records);
    };
    if limit == 0 {
        return Ok(records);
    }
    reader.scan(CF_AUDIT, &key(from, 0), Some(&[RECORD + 1]), &mut |key, payload| {
        let record = AuditRecord::decode(key, payload).map_err(|reason| corruption(CF_AUDIT, key, reason))?;
        if principal.is_none_or(|principal| principal == record.principal) {
            records.push(record);
        }
        Ok(records.len() < limit)
    })?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_damaged_one_is_named() {
        let record = AuditRecord {
            index: 42,
            part: 3,
            first_timestamp: 1_700_000_000_000_000_000,
            events: 8_189,
            kind: AuditKind::Transfers,
            proposer: 2,
            applied: true,
            principal: "gangnam-payments".into(),
            note: String::new(),
        };
        let promoted = AuditRecord {
            kind: AuditKind::Promote,
            events: 0,
            principal: "treasury-ops".into(),
            note: "forced: seoul is down".into(),
            ..record.clone()
        };
        let mut promotion = Vec::new();
        promoted.encode(&mut promotion);
        assert_eq!(AuditRecord::decode(&promoted.key(), &promotion), Ok(promoted));
        let mut payload = Vec::new();
        record.encode(&mut payload);
        assert_eq!(AuditRecord::decode(&record.key(), &payload), Ok(record.clone()));
        assert!(AuditRecord::decode(&record.key(), &payload[..payload.len() - 1]).is_err());
        assert!(AuditRecord::decode(&record.key()[..9], &payload).is_err());
        payload[12] = 99;
        assert!(AuditRecord::decode(&record.key(), &payload).unwrap_err().contains("kind 99"));
    }
}
