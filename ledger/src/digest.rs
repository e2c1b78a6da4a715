//! `state_digest`: one SHA-256 over the whole ledger state, so replicas can be
//! compared.
//!
//! The digest is defined as SHA-256 of, in this order:
//!
//! 1. the ASCII tag `coffer-state-v2`;
//! 2. the last event timestamp, as 8 big-endian bytes;
//! 3. six sections — ledgers, accounts, transfers, pending statuses,
//!    transient failures, the change log — each the section's one-byte tag
//!    (`L`, `A`, `T`, `P`, `F`, `C`), then every record in ascending id order
//!    (changes: ascending timestamp) in its [`codec`](crate::codec) encoding
//!    (a pending status and a failure are preceded by their transfer id, 16
//!    bytes, a failure is its result's `u16` code, and a change is preceded
//!    by its timestamp, 8 bytes), then the section's record count as 8
//!    big-endian bytes.
//!
//! History indexes and balance history are derived from the transfers and
//! are left out. The change log is in: it is what change feeds read, and
//! their cursors must mean the same on every replica. Two stores that
//! applied the same batches have equal digests; any difference in a record
//! changes it.

use sha2::{Digest, Sha256};

use crate::codec::{encode_account, encode_change, encode_ledger, encode_pending_status, encode_transfer};
use crate::store::{ChangeFilter, Store, StoreError};

/// Changes read from the store at once while the change log is hashed.
const DIGEST_PAGE_CHANGES: u32 = 4_096;

/// A state digest: 32 bytes of SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateDigest(pub [u8; 32]);

impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// Hashes one section: tag, records, count.
struct Section<'h> {
    hasher: &'h mut Sha256,
    buffer: Vec<u8>,
    count: u64,
}

impl<'h> Section<'h> {
    fn begin(hasher: &'h mut Sha256, tag: u8) -> Self {
        hasher.update([tag]);
        Self { hasher, buffer: Vec::with_capacity(256), count: 0 }
    }

    fn record(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        self.buffer.clear();
        encode(&mut self.buffer);
        self.hasher.update(&self.buffer);
        self.count += 1;
    }

    fn end(self) {
        self.hasher.update(self.count.to_be_bytes());
    }
}

/// The digest of everything in `store` (see the module docs for its definition).
pub fn state_digest<S: Store + ?Sized>(store: &S) -> Result<StateDigest, StoreError> {
    let mut hasher = Sha256::new();
    hasher.update(b"coffer-state-v2");
    hasher.update(store.last_timestamp()?.to_be_bytes());

    let mut section = Section::begin(&mut hasher, b'L');
    store.for_each_ledger(&mut |ledger| section.record(|out| encode_ledger(ledger, out)))?;
    section.end();

    let mut section = Section::begin(&mut hasher, b'A');
    store.for_each_account(&mut |account| section.record(|out| encode_account(account, out)))?;
    section.end();

    let mut section = Section::begin(&mut hasher, b'T');
    store.for_each_transfer(&mut |transfer| section.record(|out| encode_transfer(transfer, out)))?;
    section.end();

    let mut section = Section::begin(&mut hasher, b'P');
    store.for_each_pending(&mut |id, status| {
        section.record(|out| {
            out.extend_from_slice(&id.0.to_be_bytes());
            encode_pending_status(status, out);
        });
    })?;
    section.end();

    let mut section = Section::begin(&mut hasher, b'F');
    store.for_each_failure(&mut |id, result| {
        section.record(|out| {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&result.code().to_be_bytes());
        });
    })?;
    section.end();

    let mut section = Section::begin(&mut hasher, b'C');
    let mut range = ChangeFilter::all(DIGEST_PAGE_CHANGES);
    loop {
        let page = store.changes(&range)?;
        for change in &page {
            section.record(|out| {
                out.extend_from_slice(&change.timestamp.to_be_bytes());
                encode_change(change, out);
            });
        }
        match page.last().and_then(|last| last.timestamp.checked_add(1)) {
            Some(next) if page.len() == DIGEST_PAGE_CHANGES as usize => range.timestamp_min = next,
            _ => break,
        }
    }
    section.end();

    Ok(StateDigest(hasher.finalize().into()))
}
