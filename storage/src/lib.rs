//! `coffer-storage`: everything a Coffer node keeps on disk, in one RocksDB
//! instance.
//!
//! - [`LogStore`]: the Raft log and Raft state, implementing
//!   [`raft::Storage`]; entries and hard state are appended in one (synced)
//!   write.
//! - [`LedgerState`]: the ledger's state, implementing
//!   [`coffer_ledger::Store`]; applying a committed entry writes the ledger's
//!   write set and the applied index in one write.
//! - [`audit`]: the audit trail, one record per committed client batch
//!   naming its principal, written with the batch's state.
//! - [`snapshot`]: checkpoints with a checksummed manifest, read out and
//!   received in chunks, installed atomically; the same code makes offline
//!   backups and restores.
//! - [`verify`]: offline verification of a stopped node's store (every
//!   record's frame and RocksDB's block checksums); [`metrics`]: RocksDB's
//!   size properties as gauges.
//!
//! Every value is framed with a crc32 checked on every read ([`frame`]); a
//! mismatch is a [`StorageError::Corruption`] naming the column family and
//! key, never data. Opening refuses a directory that is not a Coffer store,
//! holds another format version, or lacks a column family.

pub mod audit;
pub mod cache;
pub mod db;
mod error;
pub mod frame;
mod log;
pub mod metrics;
pub mod snapshot;
mod state;
pub mod verify;

use std::path::Path;
use std::sync::Arc;

pub use db::{Db, Reader, Snapshot, StorageConfig, FORMAT_VERSION};
pub use error::StorageError;
pub use log::{LogStore, Truncated};
/// The `rocksdb` crate this store is built on, for tools and benchmarks
/// that need its types (write options, raw iterators).
pub use rocksdb;
pub use state::{AppliedState, LedgerState, ReadView, RegionRole, RegionState};

/// The log index (and term) a bootstrapped cluster starts after; see
/// [`NodeStore::bootstrap`].
pub const BOOTSTRAP_INDEX: u64 = 1;

/// A node's store, opened: its Raft log and its ledger state, which share
/// one RocksDB instance.
#[derive(Debug)]
pub struct NodeStore {
    /// The Raft log and Raft state.
    pub log: LogStore,
    /// The ledger state and applied index.
    pub state: LedgerState,
}

impl NodeStore {
    /// Opens (or creates, if `path` is missing or empty) the store at `path`,
    /// and finishes a snapshot install a crash interrupted.
    pub fn open(path: &Path, config: &StorageConfig) -> Result<Self, StorageError> {
        let db = Arc::new(Db::open(path, config)?);
        let mut store = Self {
            log: LogStore::open(db.clone(), config.recent_log_bytes)?,
            state: LedgerState::open(db.clone(), config.account_cache_entries)?,
        };
        if let Some(dir) = snapshot::interrupted_install(&db)? {
            if !dir.join(snapshot::MANIFEST_FILE).is_file() {
                return Err(StorageError::Snapshot {
                    path: dir,
                    reason: "an install of this snapshot was interrupted and its files are gone; restore the node from a backup".into(),
                });
            }
            snapshot::install(&mut store.log, &mut store.state, &dir)?;
            store.log.reload()?;
        }
        let applied = store.state.applied().index;
        // State writes skip the WAL: after a crash the state is the one of
        // the last flush, and the log must still hold every entry after it.
        let truncated = store.log.truncated().index;
        if applied < truncated {
            return Err(StorageError::Inconsistent {
                detail: format!(
                    "applied index {applied} is below the log's start {}: the entries between are gone",
                    truncated + 1
                ),
            });
        }
        if applied > store.log.last_index() {
            return Err(StorageError::Inconsistent {
                detail: format!("applied index {applied} is past the last log index {}", store.log.last_index()),
            });
        }
        Ok(store)
    }

    /// Makes a fresh store the first state of a new cluster whose voters are
    /// `voters`: the log starts after [`BOOTSTRAP_INDEX`] (term 1), which
    /// holds the initial membership, as if a snapshot of the empty ledger at
    /// that index had been installed. Every founding node bootstraps the
    /// same way; a node added later starts empty and is caught up by a
    /// snapshot, so it learns the founding membership too. Refused on a
    /// store that holds any Raft state.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<(), StorageError> {
        if voters.is_empty() || voters.contains(&0) {
            return Err(StorageError::Inconsistent {
                detail: format!("bootstrap needs one or more non-zero voter ids, got {voters:?}"),
            });
        }
        let fresh = self.log.last_index() == 0
            && *self.log.hard_state() == raft::prelude::HardState::default()
            && self.log.conf_state()? == raft::prelude::ConfState::default()
            && self.state.applied() == AppliedState::default();
        if !fresh {
            return Err(StorageError::Inconsistent {
                detail: "bootstrap of a store that already holds Raft state".into(),
            });
        }
        let mut conf_state = raft::prelude::ConfState::default();
        conf_state.set_voters(voters.to_vec());
        let mut meta =
            raft::prelude::SnapshotMetadata { index: BOOTSTRAP_INDEX, term: BOOTSTRAP_INDEX, ..Default::default() };
        meta.set_conf_state(conf_state);
        let mut batch = rocksdb::WriteBatch::default();
        let hard_state = self.log.stage_snapshot(&mut batch, &meta)?;
        let applied = AppliedState::at(BOOTSTRAP_INDEX, BOOTSTRAP_INDEX);
        self.state.stage_applied(&mut batch, applied)?;
        self.state.db().write(batch, true)?;
        self.log.snapshot_installed(&meta, hard_state);
        self.state.reload()?;
        Ok(())
    }

    /// Makes an offline backup (a snapshot) of this store in `dir`.
    pub fn backup(&self, dir: &Path) -> Result<snapshot::SnapshotManifest, StorageError> {
        snapshot::create(self.state.db(), dir)
    }

    /// Creates a new store at `data_dir` (missing or empty) from the backup
    /// in `backup_dir`, verifying every checksum first.
    pub fn restore(backup_dir: &Path, data_dir: &Path, config: &StorageConfig) -> Result<Self, StorageError> {
        let manifest = snapshot::SnapshotManifest::read(backup_dir)?;
        manifest.verify_files(backup_dir)?;
        let is_empty = std::fs::read_dir(data_dir).map(|mut entries| entries.next().is_none()).unwrap_or(true);
        if !is_empty {
            return Err(StorageError::Snapshot {
                path: data_dir.to_owned(),
                reason: "restore needs an empty data directory".into(),
            });
        }
        let mut store = Self::open(data_dir, config)?;
        snapshot::install(&mut store.log, &mut store.state, backup_dir)?;
        Ok(store)
    }
}
