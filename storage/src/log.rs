//! `LogStore`: the Raft log and Raft state in RocksDB, implementing
//! [`raft::Storage`].
//!
//! Entries live in `raft_log` under their index; `raft_state` holds the hard
//! state, the conf state and the truncated state (the index and term of the
//! last entry removed by compaction or replaced by a snapshot, so that
//! `term(first_index - 1)` still answers). Bounds and the hard state are
//! cached in memory and changed only after the write that persists them.
//!
//! The newest entries are kept in memory as well ([`LogStore::entries`],
//! [`raft::Storage::term`]): raft-rs asks for a recent entry's term on
//! every append it sends or accepts and on every commit, and a leader reads
//! back the entries it sends its followers. Read from RocksDB, each answer
//! copied and decoded a whole entry (a batch of up to 8,189 transfers, about
//! a megabyte): the terms alone were 1.3 % of a node's CPU under the load
//! generator. An entry's payload is shared (`Bytes`), so keeping it costs
//! no copy.

use std::collections::VecDeque;
use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};
use rocksdb::WriteBatch;

use crate::db::{keys, Db, CF_RAFT_LOG, CF_RAFT_STATE, KEY_CONF_STATE, KEY_HARD_STATE, KEY_TRUNCATED};
use crate::error::StorageError;
use crate::frame::corruption;

/// The last entry removed from the log: compaction or a snapshot replaced
/// everything up to and including it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Truncated {
    /// Its index (`0` for a log that never lost an entry).
    pub index: u64,
    /// Its term.
    pub term: u64,
}

impl Truncated {
    fn encode(self) -> [u8; 16] {
        keys::u128_u64(u128::from(self.index), self.term)[8..].try_into().unwrap_or([0; 16])
    }

    fn decode(payload: &[u8]) -> Result<Self, String> {
        match (keys::read_u64(payload, 0), keys::read_u64(payload, 8), payload.len()) {
            (Some(index), Some(term), 16) => Ok(Self { index, term }),
            _ => Err(format!("truncated state of {} bytes, expected 16", payload.len())),
        }
    }
}

/// Decodes a protobuf message, naming the key on failure.
pub(crate) fn decode_message<M: protobuf::Message>(payload: &[u8]) -> Result<M, String> {
    M::parse_from_bytes(payload).map_err(|error| format!("does not decode: {error}"))
}

/// Encodes a protobuf message.
pub(crate) fn encode_message<M: protobuf::Message>(message: &M) -> Result<Vec<u8>, StorageError> {
    message
        .write_to_bytes()
        .map_err(|error| StorageError::Inconsistent { detail: format!("cannot encode a raft message: {error}") })
}

/// The Raft log and Raft state of one node.
#[derive(Debug)]
pub struct LogStore {
    db: Arc<Db>,
    hard_state: HardState,
    truncated: Truncated,
    last_index: u64,
    /// The newest snapshot of the state this node can send, if any.
    latest_snapshot: Option<SnapshotMetadata>,
    /// The newest entries as written, oldest first: when not empty, the
    /// last is the one at `last_index` and they follow each other.
    recent: VecDeque<Entry>,
    /// Payload bytes of `recent`.
    recent_bytes: usize,
    /// Payload bytes `recent` keeps at most (though always the newest entry).
    recent_bytes_max: usize,
}

/// Payload bytes of an entry, as [`LogStore`]'s memory bound counts them.
fn payload_bytes(entry: &Entry) -> usize {
    entry.data.len() + entry.context.len()
}

impl LogStore {
    /// Loads the log's bounds and hard state, verifying what it reads. The
    /// newest entries, up to `recent_bytes_max` bytes of payload, are then
    /// kept in memory as they are appended.
    pub fn open(db: Arc<Db>, recent_bytes_max: usize) -> Result<Self, StorageError> {
        let hard_state =
            db.latest().get_decoded(CF_RAFT_STATE, KEY_HARD_STATE, decode_message::<HardState>)?.unwrap_or_default();
        let truncated = db.latest().get_decoded(CF_RAFT_STATE, KEY_TRUNCATED, Truncated::decode)?.unwrap_or_default();
        let last_index = match db.last_key(CF_RAFT_LOG)? {
            None => truncated.index,
            Some(key) => keys::read_u64(&key, 0)
                .filter(|_| key.len() == 8)
                .ok_or_else(|| corruption(CF_RAFT_LOG, &key, "log key is not a u64 index"))?,
        };
        if last_index < truncated.index {
            return Err(StorageError::Inconsistent {
                detail: format!("last log index {last_index} is below the truncated index {}", truncated.index),
            });
        }
        let store = Self {
            db,
            hard_state,
            truncated,
            last_index,
            latest_snapshot: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_bytes_max,
        };
        if last_index > truncated.index {
            // Pair check: the first and last entries must be where the bounds say.
            store.entry(store.first_index())?;
            store.entry(last_index)?;
        }
        Ok(store)
    }

    /// The first index still in the log.
    pub fn first_index(&self) -> u64 {
        self.truncated.index + 1
    }

    /// The last index in the log (the truncated index if the log is empty).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The hard state as last persisted.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The truncated state.
    pub fn truncated(&self) -> Truncated {
        self.truncated
    }

    /// The persisted conf state (empty if none was ever written).
    pub fn conf_state(&self) -> Result<ConfState, StorageError> {
        Ok(self
            .db
            .latest()
            .get_decoded(CF_RAFT_STATE, KEY_CONF_STATE, decode_message::<ConfState>)?
            .unwrap_or_default())
    }

    /// The entry at `index` if it is kept in memory.
    fn kept(&self, index: u64) -> Option<&Entry> {
        let first = self.recent.front()?.index;
        self.recent.get(usize::try_from(index.checked_sub(first)?).ok()?)
    }

    /// Drops the kept entries at and after `index`.
    fn forget_from(&mut self, index: u64) {
        while self.recent.back().is_some_and(|entry| entry.index >= index) {
            if let Some(entry) = self.recent.pop_back() {
                self.recent_bytes -= payload_bytes(&entry);
            }
        }
    }

    /// Drops the oldest kept entry, if any.
    fn forget_oldest(&mut self) {
        if let Some(entry) = self.recent.pop_front() {
            self.recent_bytes -= payload_bytes(&entry);
        }
    }

    /// Drops the kept entries before `index`.
    fn forget_before(&mut self, index: u64) {
        while self.recent.front().is_some_and(|entry| entry.index < index) {
            self.forget_oldest();
        }
    }

    /// Keeps `entries`, just written after the kept ones (see
    /// [`Self::append`]), within the memory bound.
    fn keep(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.forget_from(first.index);
        if self.recent.back().is_some_and(|entry| entry.index.checked_add(1) != Some(first.index)) {
            self.forget_from(0);
        }
        for entry in entries {
            self.recent_bytes += payload_bytes(entry);
            self.recent.push_back(entry.clone());
        }
        while self.recent.len() > 1 && self.recent_bytes > self.recent_bytes_max {
            self.forget_oldest();
        }
    }

    fn entry(&self, index: u64) -> Result<Entry, StorageError> {
        if let Some(entry) = self.kept(index) {
            return Ok(entry.clone());
        }
        let key = keys::u64(index);
        let entry =
            self.db.latest().get_decoded(CF_RAFT_LOG, &key, decode_message::<Entry>)?.ok_or_else(|| {
                StorageError::Inconsistent { detail: format!("raft log has no entry at index {index}") }
            })?;
        if entry.index != index {
            return Err(corruption(CF_RAFT_LOG, &key, format!("holds the entry of index {}", entry.index)));
        }
        Ok(entry)
    }

    /// Appends `entries` (replacing any conflicting suffix) and sets
    /// `hard_state`, in one write; with `sync`, returns once it is on disk.
    /// This is the Ready loop's persist step.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        if let Some(first) = entries.first() {
            if first.index <= self.truncated.index {
                return Err(StorageError::Inconsistent {
                    detail: format!(
                        "append at index {} overwrites the compacted log (truncated at {})",
                        first.index, self.truncated.index
                    ),
                });
            }
            if first.index > self.last_index + 1 {
                return Err(StorageError::Inconsistent {
                    detail: format!(
                        "append at index {} leaves a gap after last index {}",
                        first.index, self.last_index
                    ),
                });
            }
            for (offset, entry) in entries.iter().enumerate() {
                if entry.index != first.index + offset as u64 {
                    return Err(StorageError::Inconsistent {
                        detail: format!("appended entries are not contiguous at index {}", entry.index),
                    });
                }
            }
            if first.index <= self.last_index {
                let cf = self.db.cf(CF_RAFT_LOG)?;
                batch.delete_range_cf(cf, keys::u64(first.index), keys::u64(self.last_index + 1));
            }
            for entry in entries {
                self.db.put(&mut batch, CF_RAFT_LOG, &keys::u64(entry.index), &encode_message(entry)?)?;
            }
        }
        if let Some(hard_state) = hard_state {
            self.db.put(&mut batch, CF_RAFT_STATE, KEY_HARD_STATE, &encode_message(hard_state)?)?;
        }
        self.db.write(batch, sync)?;
        self.keep(entries);
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Persists a new commit index (from a `LightReady`); not synced, since
    /// Raft can learn the commit index again.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        self.append(&[], Some(&hard_state), false)
    }

    /// Removes every entry below `compact_index`. The caller must have
    /// applied them (and usually snapshotted the state).
    pub fn compact(&mut self, compact_index: u64) -> Result<(), StorageError> {
        if compact_index <= self.first_index() {
            return Ok(());
        }
        if compact_index > self.last_index + 1 {
            return Err(StorageError::Inconsistent {
                detail: format!("compaction to {compact_index} is past the last index {}", self.last_index),
            });
        }
        let truncated = Truncated { index: compact_index - 1, term: self.entry(compact_index - 1)?.term };
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(CF_RAFT_LOG)?, keys::u64(self.first_index()), keys::u64(compact_index));
        self.db.put(&mut batch, CF_RAFT_STATE, KEY_TRUNCATED, &truncated.encode())?;
        self.db.write(batch, false)?;
        self.truncated = truncated;
        self.forget_before(compact_index);
        Ok(())
    }

    /// Adds to `batch` what makes the Raft state match an installed snapshot:
    /// the log emptied and truncated at the snapshot, the hard state's term and
    /// commit raised to it, the conf state replaced. Apply with
    /// [`Self::snapshot_installed`] after `batch` is written.
    pub(crate) fn stage_snapshot(
        &self,
        batch: &mut WriteBatch,
        meta: &SnapshotMetadata,
    ) -> Result<HardState, StorageError> {
        let cf = self.db.cf(CF_RAFT_LOG)?;
        batch.delete_range_cf(cf, keys::u64(0), keys::u64(u64::MAX));
        let truncated = Truncated { index: meta.index, term: meta.term };
        self.db.put(batch, CF_RAFT_STATE, KEY_TRUNCATED, &truncated.encode())?;
        self.db.put(batch, CF_RAFT_STATE, KEY_CONF_STATE, &encode_message(meta.get_conf_state())?)?;
        let mut hard_state = self.hard_state.clone();
        if meta.term > hard_state.term {
            // A vote is for one term: a later term starts without one.
            hard_state.term = meta.term;
            hard_state.vote = 0;
        }
        hard_state.commit = hard_state.commit.max(meta.index);
        self.db.put(batch, CF_RAFT_STATE, KEY_HARD_STATE, &encode_message(&hard_state)?)?;
        Ok(hard_state)
    }

    /// Updates the cached bounds after a staged snapshot was written.
    pub(crate) fn snapshot_installed(&mut self, meta: &SnapshotMetadata, hard_state: HardState) {
        self.truncated = Truncated { index: meta.index, term: meta.term };
        self.last_index = meta.index;
        self.hard_state = hard_state;
        self.forget_from(0);
    }

    /// Records that a snapshot of the state at `meta` exists and can be sent
    /// (see [`raft::Storage::snapshot`]).
    pub fn set_latest_snapshot(&mut self, meta: SnapshotMetadata) {
        if self.latest_snapshot.as_ref().is_none_or(|latest| latest.index < meta.index) {
            self.latest_snapshot = Some(meta);
        }
    }

    /// Reloads the bounds and hard state from disk (after a snapshot install
    /// resumed by another handle).
    pub(crate) fn reload(&mut self) -> Result<(), StorageError> {
        *self = Self::open(self.db.clone(), self.recent_bytes_max)?;
        Ok(())
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state()?))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last_index + 1 || low > high {
            return Err(StorageError::Inconsistent {
                detail: format!("entries [{low}, {high}) requested beyond last index {}", self.last_index),
            }
            .into());
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        let mut size = 0u64;
        if low < high && self.kept(low).is_some() && self.kept(high - 1).is_some() {
            // The kept entries follow each other, so they hold the range.
            for entry in (low..high).filter_map(|index| self.kept(index)) {
                size += u64::from(entry.compute_size());
                // Always at least one entry, then only while within max_size.
                if !entries.is_empty() && size > max_size {
                    break;
                }
                entries.push(entry.clone());
            }
            return Ok(entries);
        }
        let mut expected = low;
        let mut full = false;
        self.db.latest().scan(CF_RAFT_LOG, &keys::u64(low), Some(&keys::u64(high)), &mut |key, payload| {
            let entry: Entry = decode_message(payload).map_err(|reason| corruption(CF_RAFT_LOG, key, reason))?;
            if entry.index != expected {
                return Err(corruption(
                    CF_RAFT_LOG,
                    key,
                    format!("expected the entry of index {expected}, found {}", entry.index),
                ));
            }
            size += u64::from(entry.compute_size());
            // Always at least one entry, then only while within max_size.
            if !entries.is_empty() && size > max_size {
                full = true;
                return Ok(false);
            }
            entries.push(entry);
            expected += 1;
            Ok(true)
        })?;
        if expected < high && !full {
            return Err(StorageError::Inconsistent { detail: format!("raft log is missing entry {expected}") }.into());
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.truncated.index {
            return Ok(self.truncated.term);
        }
        if index < self.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if index > self.last_index {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        Ok(self.entry(index)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(LogStore::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The state itself travels in chunks outside the Raft message (see
        // `crate::snapshot`); the message carries the metadata. Until the node
        // has made a snapshot at or past `request_index`, Raft is told to ask
        // again later.
        match &self.latest_snapshot {
            Some(meta) if meta.index >= request_index => {
                let mut snapshot = Snapshot::default();
                snapshot.set_metadata(meta.clone());
                Ok(snapshot)
            }
            _ => Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}
