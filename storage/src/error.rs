//! Storage errors. Each names what a user needs to find the problem: the
//! path, the column family, the key.

use std::path::PathBuf;

use coffer_ledger::StoreError;

/// A failure of the node's store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A record failed its checksum or did not decode. Never served as data.
    #[error("corrupt record in column family {cf} at key {key}: {reason}")]
    Corruption {
        /// The column family.
        cf: &'static str,
        /// The key, in hex.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The directory holds something that is not a Coffer store.
    #[error("{path} is not a Coffer store: {reason}")]
    NotACofferStore {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The store was written by another format version of Coffer.
    #[error("{path} has store format version {found}; this build reads version {expected}")]
    FormatVersion {
        /// The directory.
        path: PathBuf,
        /// The version on disk.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A column family the store needs is missing.
    #[error("{path} is missing column family {name}")]
    MissingColumnFamily {
        /// The directory.
        path: PathBuf,
        /// The column family.
        name: &'static str,
    },
    /// Records disagree with each other, or a request does not fit the log.
    #[error("inconsistent store: {detail}")]
    Inconsistent {
        /// What disagrees.
        detail: String,
    },
    /// A snapshot or backup failed verification or could not be used.
    #[error("snapshot {path}: {reason}")]
    Snapshot {
        /// The snapshot directory or file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The node is replacing its state with a snapshot from its leader (the
    /// install writes in several batches): no consistent view of the state
    /// can be had until it finishes. Transient: retry.
    #[error("{path} is installing a snapshot: its state is not readable until the install finishes")]
    Installing {
        /// The store's directory.
        path: PathBuf,
    },
    /// RocksDB failed.
    #[error("RocksDB: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl StorageError {
    /// Whether the same read may succeed later (see [`Self::Installing`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Installing { .. })
    }

    /// An IO error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

impl From<StorageError> for StoreError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Corruption { cf, key, reason } => {
                StoreError::Corruption { table: cf.to_owned(), key, reason }
            }
            StorageError::Inconsistent { detail } => StoreError::Inconsistent { detail },
            other => StoreError::Backend { detail: other.to_string() },
        }
    }
}

impl From<StorageError> for raft::Error {
    fn from(error: StorageError) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(error)))
    }
}
