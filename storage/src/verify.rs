//! Offline verification of a stopped node's store: every record of every
//! column family read back and its frame checked, RocksDB's block checksums
//! included. Records a range deletion removed but compaction has not yet
//! dropped (the Raft log's compacted prefix) are read too: a scan that
//! honoured the deletion would skip their blocks, and the node's next
//! compaction, which reads them, would be the first to find them damaged.
//!
//! [`open_stopped`] opens a store read-only, and refuses one that a running
//! process holds (RocksDB's `LOCK` file): a running node's store changes
//! under the reader and its unflushed writes are not visible. Then
//! [`verify_records`] walks every column family of [`COLUMN_FAMILIES`]
//! generically, so a column family added later is covered without change.
//! The ledger's own invariants (balances, pending statuses) are checked one
//! level up, over the [`coffer_ledger::Store`] the state implements.

use std::path::{Path, PathBuf};

use crate::db::{Db, COLUMN_FAMILIES};
use crate::error::StorageError;
use crate::frame::{hex, unframe};

/// Where Linux lists the file locks every process holds.
const PROC_LOCKS: &str = "/proc/locks";

/// One column family's records, as read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnFamilyReport {
    /// The column family.
    pub name: &'static str,
    /// Records read (intact or not), including those a range deletion
    /// removed that compaction has not dropped yet.
    pub records: u64,
    /// Bytes of keys and values read.
    pub bytes: u64,
    /// Records whose frame did not verify.
    pub corrupt_records: u64,
    /// Whether RocksDB stopped the scan (a block that failed its checksum,
    /// an unreadable file): records past that point were not read.
    pub scan_failed: bool,
}

/// A record (or a block of records) that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The column family.
    pub cf: &'static str,
    /// The record's key in hex; for a block RocksDB could not read, the
    /// last key read before it (empty: none).
    pub key: String,
    /// What failed.
    pub reason: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "column family {}: {}", self.cf, self.reason)
        } else {
            write!(f, "column family {} at key {}: {}", self.cf, self.key, self.reason)
        }
    }
}

/// What [`verify_records`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordsReport {
    /// Every column family, in [`COLUMN_FAMILIES`] order.
    pub column_families: Vec<ColumnFamilyReport>,
    /// The first corruption met, in that order.
    pub first_corruption: Option<Corruption>,
}

impl RecordsReport {
    /// Whether every record of every column family verified.
    pub fn is_intact(&self) -> bool {
        self.first_corruption.is_none()
    }

    /// Records read, over all column families.
    pub fn records(&self) -> u64 {
        self.column_families.iter().map(|cf| cf.records).sum()
    }
}

/// Why a store could not be opened for verification.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoppedError {
    /// A process holds the store's lock: a node is running on it.
    #[error(
        "{path} is locked by process {pid} (a running node?): stop the node first; verify reads a stopped node's store"
    )]
    InUse {
        /// The store's directory.
        path: PathBuf,
        /// The process holding the lock.
        pid: u32,
    },
    /// Opening failed on a column family's file (RocksDB reads every SST
    /// file's index and meta blocks when it opens a store).
    #[error("{path}: column family {cf} does not open: {reason}")]
    ColumnFamily {
        /// The store's directory.
        path: PathBuf,
        /// The column family that alone fails to open.
        cf: &'static str,
        /// RocksDB's error.
        reason: String,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Opens the store at `path` read-only, after checking that no process holds
/// it. Nothing in the directory is changed. When RocksDB fails to open it,
/// the column family at fault is named if one alone fails to open.
pub fn open_stopped(path: &Path) -> Result<Db, OpenStoppedError> {
    if let Some(pid) = lock_holder(&path.join("LOCK"))? {
        return Err(OpenStoppedError::InUse { path: path.to_owned(), pid });
    }
    match Db::open_read_only(path) {
        Ok(db) => Ok(db),
        Err(StorageError::RocksDb(error)) => {
            Err(failing_column_family(path).unwrap_or_else(|| StorageError::RocksDb(error).into()))
        }
        Err(error) => Err(error.into()),
    }
}

/// The first column family that fails to open read-only on its own (a
/// read-only open may name a subset of them), as the error naming it.
fn failing_column_family(path: &Path) -> Option<OpenStoppedError> {
    let options = rocksdb::Options::default();
    COLUMN_FAMILIES.into_iter().find_map(|cf| {
        let error = rocksdb::DB::open_cf_for_read_only(&options, path, [cf], false).err()?;
        Some(OpenStoppedError::ColumnFamily { path: path.to_owned(), cf, reason: error.to_string() })
    })
}

/// The process holding a lock on `lock_file`, from `/proc/locks` (RocksDB
/// takes a POSIX lock on its `LOCK` file while open). `None`: nobody holds
/// it, there is no such file, or the system has no `/proc/locks` (the check
/// is then skipped).
pub fn lock_holder(lock_file: &Path) -> Result<Option<u32>, StorageError> {
    use std::os::unix::fs::MetadataExt;

    let metadata = match std::fs::metadata(lock_file) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io(lock_file, error)),
    };
    let locks = match std::fs::read_to_string(PROC_LOCKS) {
        Ok(locks) => locks,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io(PROC_LOCKS, error)),
    };
    let device = device_numbers(metadata.dev());
    Ok(locks.lines().find_map(|line| lock_line_holder(line, device, metadata.ino())))
}

/// `(major, minor)` of a Linux device number (glibc's encoding).
fn device_numbers(dev: u64) -> (u64, u64) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    (major, minor)
}

/// The pid of a `/proc/locks` line that locks the file `(device, inode)`,
/// e.g. `1: POSIX  ADVISORY  WRITE 4711 fd:00:2531452 0 EOF` (device numbers
/// in hex, the inode in decimal; a waiting lock has a `->` after the number).
fn lock_line_holder(line: &str, device: (u64, u64), inode: u64) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().filter(|field| *field != "->").collect();
    let at = fields.iter().position(|field| field.matches(':').count() == 2 && !field.ends_with(':'))?;
    let mut parts = fields[at].split(':');
    let major = u64::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
    let found = parts.next()?.parse::<u64>().ok()?;
    if found != inode || (major, minor) != device {
        return None;
    }
    fields.get(at.checked_sub(1)?)?.parse().ok()
}

/// Reads back every record of every column family, checking RocksDB's block
/// checksums and each value's frame (crc32 of key and payload). Corrupt
/// records are counted and the first one named; the scan goes on, so the
/// report covers the whole store. An error means the store could not be
/// read at all.
pub fn verify_records(db: &Db) -> Result<RecordsReport, StorageError> {
    let mut report = RecordsReport::default();
    for name in COLUMN_FAMILIES {
        let (cf_report, corruption) = verify_column_family(db, name)?;
        if report.first_corruption.is_none() {
            report.first_corruption = corruption;
        }
        report.column_families.push(cf_report);
    }
    Ok(report)
}

fn verify_column_family(db: &Db, name: &'static str) -> Result<(ColumnFamilyReport, Option<Corruption>), StorageError> {
    let mut options = crate::db::read_options();
    options.set_verify_checksums(true);
    // A one-off scan of everything: keep the cache for the node.
    options.fill_cache(false);
    // Read what range deletions hide as well (see the module docs). RocksDB
    // deprecates the option as a speed-up ("no effect without DeleteRange");
    // here it is the point, and `tests/faults.rs` shows it still works.
    #[allow(deprecated)]
    options.set_ignore_range_deletions(true);
    let mut iter = db.rocksdb().raw_iterator_cf_opt(db.cf(name)?, options);
    iter.seek_to_first();
    let mut report = ColumnFamilyReport { name, ..Default::default() };
    let mut first = None;
    let mut last_key = Vec::new();
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        report.records += 1;
        report.bytes += (key.len() + value.len()) as u64;
        if let Err(error) = unframe(name, key, value) {
            report.corrupt_records += 1;
            if first.is_none() {
                let reason = match error {
                    StorageError::Corruption { reason, .. } => reason,
                    other => other.to_string(),
                };
                first = Some(Corruption { cf: name, key: hex(key), reason });
            }
        }
        last_key.clear();
        last_key.extend_from_slice(key);
        iter.next();
    }
    if let Err(error) = iter.status() {
        report.scan_failed = true;
        let reason = format!("RocksDB stopped reading after {} records: {error}", report.records);
        let failed = Corruption { cf: name, key: hex(&last_key), reason };
        first = first.or(Some(failed));
    }
    Ok((report, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_locks_line_names_the_process_holding_the_file() {
        let line = "3: POSIX  ADVISORY  WRITE 4711 fd:01:2531452 0 EOF";
        assert_eq!(lock_line_holder(line, (0xfd, 1), 2_531_452), Some(4711));
        assert_eq!(lock_line_holder(line, (0xfd, 1), 2_531_453), None, "another inode");
        assert_eq!(lock_line_holder(line, (0xfd, 2), 2_531_452), None, "another device");
        let waiting = "3: -> POSIX  ADVISORY  WRITE 4712 fd:01:2531452 0 EOF";
        assert_eq!(lock_line_holder(waiting, (0xfd, 1), 2_531_452), Some(4712));
        assert_eq!(lock_line_holder("garbage", (0, 0), 0), None);
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        assert_eq!(device_numbers(0xfd01), (0xfd, 0x01));
        assert_eq!(device_numbers((0x123 << 8) | 0x45 | (0xabc00 << 12)), (0x123, 0xabc45));
    }
}
