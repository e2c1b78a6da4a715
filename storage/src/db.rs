//! The RocksDB instance of one node: its column families, key layout,
//! options, and opening with the checks that keep a node off state it cannot
//! verify.
//!
//! Keys are big-endian so that ranges scan in numeric order. Every value is
//! framed with a crc32 (see [`crate::frame`]).

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, MemtableFactory, Options,
    ReadOptions, SliceTransform, SnapshotWithThreadMode, WriteBatch, WriteOptions, DB,
};

use crate::error::StorageError;
use crate::frame::{corruption, frame, frame_into, unframe};

/// The Raft log: index (u64) → entry.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Raft state: hard state, conf state, truncated state.
pub const CF_RAFT_STATE: &str = "raft_state";
/// Accounts: id (u128) → account.
pub const CF_ACCOUNTS: &str = "accounts";
/// Transfers: id (u128) → transfer.
pub const CF_TRANSFERS: &str = "transfers";
/// Pending statuses: transfer id (u128) → status.
pub const CF_PENDING: &str = "pending";
/// Expiry index: expires_at (u64) ++ transfer id (u128) → nothing.
pub const CF_EXPIRY: &str = "expiry";
/// Transient failures: transfer id (u128) → result code (u16).
pub const CF_FAILURES: &str = "failures";
/// History index: account id (u128) ++ the last timestamp of a group (u64)
/// → the group: the rows one batch added for the account, each a
/// timestamp, a transfer id (u128) and a side (u8) (a count, the first
/// timestamp, then varint distances; see `state.rs`).
pub const CF_ACCOUNT_TRANSFERS: &str = "account_transfers";
/// Balance history: account id (u128) ++ timestamp (u64) → four u128 balances.
pub const CF_BALANCES: &str = "balances";
/// Ledgers: id (u32) → ledger.
pub const CF_LEDGERS: &str = "ledgers";
/// The change log, in blocks of up to 64 consecutive events: the last
/// event's timestamp (u64) → each event's timestamp and change (kind ++ id,
/// and for a transfer both accounts' balances after it; 5 to 145 bytes).
/// See `state.rs` for the block's layout.
pub const CF_CHANGES: &str = "changes";
/// Running totals: ledger (u32) ++ code (u16) → accounts and four sums.
pub const CF_TOTALS: &str = "totals";
/// Totals history: ledger (u32) ++ code (u16) ++ a batch's last timestamp
/// (u64) → the batch's first timestamp and the totals after it.
pub const CF_TOTALS_HISTORY: &str = "totals_history";
/// Secondary indexes: index key (records, field, value; 3 to 18 bytes) ++
/// the last timestamp of a block (u64) → the block: the timestamps one batch
/// added under that key (a count, the first, then varint distances). The
/// change log names the record at each timestamp.
pub const CF_INDEX: &str = "index";
/// Node metadata: format, applied index, last event timestamp, snapshot install marker.
pub const CF_META: &str = "meta";
/// The audit trail: who proposed each committed batch (see
/// [`crate::audit`]).
pub const CF_AUDIT: &str = "audit";

/// Bank-statement reconciliations: account (u128) ++ statement id → the
/// reconciliation; account alone → its latest statement's id.
pub const CF_RECONCILIATIONS: &str = "reconciliations";

/// Every column family, in a fixed order.
pub const COLUMN_FAMILIES: [&str; 17] = [
    CF_RAFT_LOG,
    CF_RAFT_STATE,
    CF_ACCOUNTS,
    CF_TRANSFERS,
    CF_PENDING,
    CF_EXPIRY,
    CF_FAILURES,
    CF_ACCOUNT_TRANSFERS,
    CF_BALANCES,
    CF_LEDGERS,
    CF_CHANGES,
    CF_TOTALS,
    CF_TOTALS_HISTORY,
    CF_INDEX,
    CF_META,
    CF_AUDIT,
    CF_RECONCILIATIONS,
];

/// The column families that hold the replicated state: what a snapshot
/// carries and what installing one replaces (the Raft log and Raft state are
/// each node's own).
pub const STATE_COLUMN_FAMILIES: [&str; 15] = [
    CF_ACCOUNTS,
    CF_TRANSFERS,
    CF_PENDING,
    CF_EXPIRY,
    CF_FAILURES,
    CF_ACCOUNT_TRANSFERS,
    CF_BALANCES,
    CF_LEDGERS,
    CF_CHANGES,
    CF_TOTALS,
    CF_TOTALS_HISTORY,
    CF_INDEX,
    CF_META,
    CF_AUDIT,
    CF_RECONCILIATIONS,
];

/// `meta` key: the store's format marker.
pub const KEY_FORMAT: &[u8] = b"format";
/// `meta` key: the applied index and its term.
pub const KEY_APPLIED: &[u8] = b"applied";
/// `meta` key: the last event timestamp the ledger used.
pub const KEY_LAST_TIMESTAMP: &[u8] = b"last_timestamp";
/// `meta` key: the state's digest sum (32 bytes; see `coffer_ledger::digest`).
pub const KEY_DIGEST_SUM: &[u8] = b"digest_sum";
/// `raft_state` key: the hard state (term, vote, commit).
pub const KEY_HARD_STATE: &[u8] = b"hard_state";
/// `raft_state` key: the conf state (voters, learners).
pub const KEY_CONF_STATE: &[u8] = b"conf_state";
/// `raft_state` key: the last entry removed from the log (index, term).
pub const KEY_TRUNCATED: &[u8] = b"truncated";
/// `raft_state` key: present while a snapshot is being installed; holds the
/// snapshot directory to finish installing from after a crash.
pub const KEY_SNAPSHOT_INSTALL: &[u8] = b"snapshot_install";

/// `meta` key prefix of a member's addresses: `member/` ++ node id (u64,
/// big-endian) → the context of the membership change that added it (its
/// Raft and API addresses). Replicated state: snapshots carry it, so a node
/// that restarts, or joins later, knows every member added after the
/// static configurations were written.
pub const KEY_MEMBER_PREFIX: &[u8] = b"member/";

/// The `meta` key of member `node`'s addresses.
pub fn member_key(node: u64) -> Vec<u8> {
    [KEY_MEMBER_PREFIX, &node.to_be_bytes()].concat()
}

/// Block cache of a read-only open (tools such as `coffer verify`, which
/// read each block once).
const READ_ONLY_CACHE_BYTES: usize = 8 << 20;

/// The format marker's magic bytes.
const FORMAT_MAGIC: &[u8] = b"coffer-store";
/// The store format this build reads and writes. Version 2 added the
/// `changes` column family (the change log); version 3 the digest sum,
/// balances in the change log, running totals and secondary indexes;
/// version 4 groups an account's history rows per batch, and writes the
/// state without the WAL (a version-3 store's history reads wrongly);
/// version 5 adds the `audit` column family; version 6 tags its keys and
/// places each batch in time there, gives ledger records their fiscal
/// section, and renumbers transfer result codes (recorded failures are
/// stored by code); version 7 writes the change log in blocks of up to 64
/// events; version 8 puts a user data field's single rows of nearby values
/// in span blocks (which a version-7 reader would miss).
pub const FORMAT_VERSION: u32 = 8;

/// A visitor of verified `(key, payload)` pairs; returns whether to go on.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StorageError> + 'a;

/// Tunables of the RocksDB instance, with the defaults a node uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    /// Bytes of RocksDB's block cache, shared by all column families.
    pub block_cache_bytes: usize,
    /// Accounts kept in the in-process account cache (write-through, so
    /// never stale; bounded).
    pub account_cache_entries: usize,
    /// Bytes of one memtable per column family before it is flushed.
    pub write_buffer_bytes: usize,
    /// Bytes of all memtables together: past it, RocksDB flushes the
    /// largest, so a node's memory stays bounded however many column
    /// families are being written (without it, twelve families could each
    /// hold two full memtables).
    pub memtable_total_bytes: usize,
    /// Background threads for flushes and compactions.
    pub background_jobs: i32,
    /// Payload bytes of the newest Raft log entries kept in memory for the
    /// terms and entries Raft reads back (see [`crate::LogStore`]); the
    /// newest entry is kept whatever its size.
    pub recent_log_bytes: usize,
    /// Flushes and compactions write their files with `O_DIRECT`, past the
    /// page cache: copying into it and allocating its pages cost a node
    /// about a seventh of its CPU under the load generator, for pages the
    /// block cache serves anyway. Where the file system refuses `O_DIRECT`
    /// (tmpfs), the store falls back to buffered writes.
    pub direct_io: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            block_cache_bytes: 256 << 20,
            account_cache_entries: 1 << 16,
            write_buffer_bytes: 64 << 20,
            memtable_total_bytes: 256 << 20,
            background_jobs: 2,
            recent_log_bytes: 32 << 20,
            direct_io: true,
        }
    }
}

/// The node's RocksDB instance.
pub struct Db {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish_non_exhaustive()
    }
}

fn db_options(config: &StorageConfig) -> Options {
    let mut options = Options::default();
    options.set_max_background_jobs(config.background_jobs);
    options.set_paranoid_checks(true);
    options.set_bytes_per_sync(1 << 20);
    options.set_db_write_buffer_size(config.memtable_total_bytes);
    // State writes skip the WAL (see `Db::write_unlogged`): every flush
    // must then persist all column families at one point, so that the
    // state, its applied index and the Raft log it is redone from agree
    // after any crash.
    options.set_atomic_flush(true);
    // `accounts` keeps its memtable in hash buckets (see `cf_options`),
    // which RocksDB inserts into from one thread only; a node's writes come
    // from its driver thread anyway.
    options.set_allow_concurrent_memtable_write(false);
    options
}

/// Whether the file system under `dir` takes `O_DIRECT` (tmpfs does not):
/// probed by creating a file with it.
fn supports_direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt as _;
    let probe = dir.join(".direct-io-probe");
    let opened =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(&probe);
    let _ = std::fs::remove_file(&probe);
    opened.is_ok()
}

fn cf_options(name: &str, config: &StorageConfig, cache: &Cache) -> Result<Options, StorageError> {
    let mut options = Options::default();
    options.set_write_buffer_size(config.write_buffer_bytes);
    // No compression: compactions run while payments are posted, on the
    // same cores, and compressing their output took 7 % of the cluster's
    // CPU under the load generator (Zstandard at the bottommost level,
    // later LZ4 at every level but the first two); disk is the cheaper
    // resource. The families that are only added to compact tiered
    // (universal): fewer rewrites of each byte than levelled compaction,
    // 4 % more throughput at 10 M transfers.
    options.set_compression_type(DBCompressionType::None);
    options.set_bottommost_compression_type(DBCompressionType::None);
    if is_insert_only(name) {
        options.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
        // Tiered compaction may then move a sorted run down whole when no
        // other overlaps it, instead of rewriting it. The families keyed by
        // time (changes, totals history, audit) or by ids allocated in
        // order (transfers, the indexes of increasing values) are mostly
        // such runs: at ten million transfers, 9 % more throughput and 8 %
        // less CPU. The Rust binding has no setter for this one option; the
        // options string starts from the options set so far (the table
        // factory, which holds the block cache, is set after it).
        options = options.get_options_from_string("compaction_options_universal={allow_trivial_move=true}")?;
        if !has_bloom_filter(name) {
            // The families read only by scans (history groups, index
            // blocks, the change log) span every account or value with each
            // flush, so their runs overlap and every merge rewrites them.
            // Merging once sixteen runs wait rather than four rewrote each
            // byte fewer times: at ten million transfers, 10 % less CPU and
            // 11 % more throughput (README, "Performance"). A scan then
            // seeks in at most that many runs more (a bound, not a cost
            // that grows with the ledger); the point-lookup families keep
            // RocksDB's four, since every new id is checked in each run.
            options.set_level_zero_file_num_compaction_trigger(SCANNED_RUNS_BEFORE_MERGE);
            options.set_level_zero_slowdown_writes_trigger(SCANNED_RUNS_BEFORE_MERGE + L0_SLOWDOWN_MARGIN);
            options.set_level_zero_stop_writes_trigger(SCANNED_RUNS_BEFORE_MERGE + L0_STOP_MARGIN);
        }
    }
    if name != CF_ACCOUNTS {
        // A write inserts each family's keys in ascending order, but most
        // land between keys already in the memtable (history groups after
        // each account's older ones, index entries of several clients'
        // ranges). RocksDB's own insert position is used only if the key
        // goes right after the previous insert; otherwise each insert
        // searched the skip list from the top. With a hint (one per first
        // key byte: a single one when ids share a prefix), an insert
        // climbs only as far as the distance from the previous insert.
        // `accounts` keeps hash buckets, which take no hint.
        options = options.get_options_from_string(MEMTABLE_INSERT_HINT)?;
    }
    if name == CF_ACCOUNTS {
        // Every batch rewrites most accounts it touches, so the memtable
        // holds many versions of each. In a skip list each new version was a
        // search from the top through all of them (a quarter of a durable
        // batch's time, `benches/storage_apply.rs`); in hash buckets of
        // linked lists keyed by the account id, the newest version goes at
        // the head of its account's bucket. The prefix is the whole key, so
        // lookups are unchanged and scans read in total order
        // ([`read_options`]).
        options.set_prefix_extractor(SliceTransform::create_fixed_prefix(ACCOUNT_KEY_BYTES));
        options.set_memtable_factory(MemtableFactory::HashLinkList { bucket_count: ACCOUNT_MEMTABLE_BUCKETS });
    }
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    // Point lookups (does this id exist?) are the hot read: a bloom filter
    // answers most misses without reading a block.
    if has_bloom_filter(name) {
        table.set_bloom_filter(10.0, false);
        // The same for the memtable: every new transfer id is looked up
        // (and nearly always missed) in `transfers` and `failures` before it
        // is written; without this filter each miss searches the memtable's
        // skip list.
        // `accounts`' memtable finds a key by its hash bucket, an empty
        // bucket answering a miss at once: a filter in front of it only
        // cost a cache miss on every insert (a sixth of a driver thread's
        // memtable inserts were filter updates).
        if name != CF_ACCOUNTS {
            // A hundredth of the memtable: 640 KiB for 64 MiB, which fits a
            // core's L2 cache, and about 14 bits for each of the ~380,000
            // transfers such a memtable holds (under 1 % false positives).
            // A twentieth (3.2 MiB) made every insert's filter update a miss
            // to L3: `durable_apply` −5 % (alternated both ways).
            options.set_memtable_prefix_bloom_ratio(0.01);
            options.set_memtable_whole_key_filtering(true);
        }
    }
    options.set_block_based_table_factory(&table);
    Ok(options)
}

/// Insert hints by each key's first byte (see `cf_options`).
const MEMTABLE_INSERT_HINT: &str = "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.1";

/// Sorted runs of a scanned insert-only family (see `cf_options`) that
/// start a compaction (RocksDB's default is four).
const SCANNED_RUNS_BEFORE_MERGE: i32 = 16;

/// Level-0 files past the compaction trigger at which RocksDB slows writes
/// down, and at which it stops them, until compactions catch up: the
/// margins of RocksDB's defaults (20 and 36 over a trigger of 4).
const L0_SLOWDOWN_MARGIN: i32 = 16;
/// See [`L0_SLOWDOWN_MARGIN`].
const L0_STOP_MARGIN: i32 = 32;

/// Bytes of an `accounts` key (the account id).
const ACCOUNT_KEY_BYTES: usize = 16;

/// Hash buckets of an `accounts` memtable (8 bytes each, allocated with
/// it): one per account for a quarter of a million accounts touched between
/// flushes; past that, accounts share buckets, which RocksDB turns into
/// skip lists once they grow long.
const ACCOUNT_MEMTABLE_BUCKETS: usize = 1 << 18;

/// Options of every scan: in total key order. Without it, a column family
/// with a prefix extractor (`accounts`) would scan only the keys sharing
/// the prefix of where it started.
pub(crate) fn read_options() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_total_order_seek(true);
    options
}

/// Whether column family `name` is only ever added to (no key is written
/// twice or deleted, but by a snapshot install): tiered compaction suits it.
fn is_insert_only(name: &str) -> bool {
    matches!(
        name,
        CF_TRANSFERS | CF_ACCOUNT_TRANSFERS | CF_CHANGES | CF_INDEX | CF_BALANCES | CF_TOTALS_HISTORY | CF_AUDIT
    )
}

/// Every column family with the options a node opens it with.
fn descriptors(config: &StorageConfig, cache: &Cache) -> Result<Vec<ColumnFamilyDescriptor>, StorageError> {
    COLUMN_FAMILIES
        .iter()
        .map(|name| Ok(ColumnFamilyDescriptor::new(*name, cf_options(name, config, cache)?)))
        .collect()
}

/// Whether column family `name` has bloom filters (in its table files, and
/// in its memtable but for `accounts`'): the point-lookup families.
pub fn has_bloom_filter(name: &str) -> bool {
    matches!(name, CF_ACCOUNTS | CF_TRANSFERS | CF_PENDING | CF_FAILURES)
}

/// Bytes [`CfPuts`] first reserves for a framed value (an account is the
/// largest hot record).
const CF_PUTS_VALUE_CAPACITY: usize = 256;

/// Framed puts into one column family of a batch. The family's handle is
/// looked up once and one buffer frames every value, so staging a batch's
/// thousands of records costs no lookup or allocation per record
/// ([`Db::put`] is the one-record form).
pub struct CfPuts<'d> {
    cf: &'d ColumnFamily,
    value: Vec<u8>,
}

impl CfPuts<'_> {
    /// Adds a put of `payload`, framed, under `key` to `batch`.
    pub fn put(&mut self, batch: &mut WriteBatch, key: &[u8], payload: &[u8]) {
        frame_into(&mut self.value, key, payload);
        batch.put_cf(self.cf, key, &self.value);
    }

    /// Adds a delete of `key` to `batch`.
    pub fn delete(&self, batch: &mut WriteBatch, key: &[u8]) {
        batch.delete_cf(self.cf, key);
    }
}

/// Whether `path` has no entries (or does not exist).
fn is_empty_dir(path: &Path) -> Result<bool, StorageError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(StorageError::io(path, error)),
    }
}

impl Db {
    /// Opens the store at `path`, creating a new one if the directory is
    /// missing or empty. A directory that is not a Coffer store, holds
    /// another format version, or lacks a column family is refused with an
    /// error saying so; nothing in it is changed.
    pub fn open(path: &Path, config: &StorageConfig) -> Result<Self, StorageError> {
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let descriptors = || descriptors(config, &cache);
        let mut options = db_options(config);
        if is_empty_dir(path)? {
            std::fs::create_dir_all(path).map_err(|error| StorageError::io(path, error))?;
            options.set_use_direct_io_for_flush_and_compaction(config.direct_io && supports_direct_io(path));
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let db = Self { db: DB::open_cf_descriptors(&options, path, descriptors()?)?, path: path.to_owned() };
            db.write_format_marker()?;
            return Ok(db);
        }
        if !path.join("CURRENT").is_file() {
            return Err(StorageError::NotACofferStore {
                path: path.to_owned(),
                reason: "the directory is not empty and holds no RocksDB database (no CURRENT file)".into(),
            });
        }
        let existing = DB::list_cf(&options, path).map_err(|error| StorageError::NotACofferStore {
            path: path.to_owned(),
            reason: format!("cannot list its column families: {error}"),
        })?;
        if let Some(name) = COLUMN_FAMILIES.iter().find(|name| !existing.iter().any(|e| e == *name)) {
            return Err(StorageError::MissingColumnFamily { path: path.to_owned(), name });
        }
        if let Some(unknown) = existing.iter().find(|e| *e != "default" && !COLUMN_FAMILIES.contains(&e.as_str())) {
            return Err(StorageError::NotACofferStore {
                path: path.to_owned(),
                reason: format!("unknown column family {unknown}"),
            });
        }
        // Check the format marker read-only first: opening read-write makes
        // RocksDB rewrite files (manifest, options, log, WAL), so a store it
        // must refuse is never opened that way.
        drop(Self::open_read_only(path)?);
        options.set_use_direct_io_for_flush_and_compaction(config.direct_io && supports_direct_io(path));
        let db = Self { db: DB::open_cf_descriptors(&options, path, descriptors()?)?, path: path.to_owned() };
        db.check_format_marker()?;
        Ok(db)
    }

    fn write_format_marker(&self) -> Result<(), StorageError> {
        let mut payload = FORMAT_MAGIC.to_vec();
        payload.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        let mut batch = WriteBatch::default();
        self.put(&mut batch, CF_META, KEY_FORMAT, &payload)?;
        self.write(batch, true)
    }

    fn check_format_marker(&self) -> Result<(), StorageError> {
        let not_coffer = |reason: String| StorageError::NotACofferStore { path: self.path.clone(), reason };
        let payload = self
            .latest()
            .get(CF_META, KEY_FORMAT)
            .map_err(|error| not_coffer(format!("its format marker does not verify: {error}")))?
            .ok_or_else(|| not_coffer("it has no format marker".into()))?;
        let version = payload
            .strip_prefix(FORMAT_MAGIC)
            .and_then(|rest| <[u8; 4]>::try_from(rest).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| not_coffer("its format marker is not Coffer's".into()))?;
        if version != FORMAT_VERSION {
            return Err(StorageError::FormatVersion {
                path: self.path.clone(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying RocksDB handle.
    pub fn rocksdb(&self) -> &DB {
        &self.db
    }

    /// The handle of column family `name` (one of [`COLUMN_FAMILIES`]).
    pub fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or(StorageError::MissingColumnFamily { path: self.path.clone(), name })
    }

    /// Reads of the store as it is at each call (no snapshot).
    pub fn latest(&self) -> Reader<'_> {
        Reader { db: self, snapshot: None }
    }

    /// A consistent snapshot of the whole store: reads through it see the
    /// store as it was when it was taken, whatever is written since.
    pub fn snapshot(&self) -> Snapshot<'_> {
        self.db.snapshot()
    }

    /// Reads of the store as `snapshot` holds it.
    pub fn at<'a>(&'a self, snapshot: &'a Snapshot<'a>) -> Reader<'a> {
        Reader { db: self, snapshot: Some(snapshot) }
    }

    /// Framed puts into column family `cf`, for staging many records (see
    /// [`CfPuts`]).
    pub fn puts(&self, cf: &'static str) -> Result<CfPuts<'_>, StorageError> {
        Ok(CfPuts { cf: self.cf(cf)?, value: Vec::with_capacity(CF_PUTS_VALUE_CAPACITY) })
    }

    /// Adds a framed put to `batch`.
    pub fn put(
        &self,
        batch: &mut WriteBatch,
        cf: &'static str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), StorageError> {
        batch.put_cf(self.cf(cf)?, key, frame(key, payload));
        Ok(())
    }

    /// Writes `batch` atomically; with `sync`, waits until it is on disk.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Writes `batch` atomically without RocksDB's WAL: it is durable once
    /// a flush persists it (flushes are atomic across column families, and
    /// [`crate::snapshot::create`]'s checkpoint makes one). Only for writes
    /// that a redo log outside RocksDB can repeat after a crash: the state
    /// writes of applied Raft entries, redone from the Raft log (which is
    /// never compacted past the newest snapshot, so it always reaches back
    /// to the last flush).
    pub fn write_unlogged(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Flushes every column family's memtable to disk at one point (an
    /// atomic flush), and waits for it: what [`Self::write_unlogged`] wrote
    /// before is then durable.
    pub fn flush(&self) -> Result<(), StorageError> {
        let handles = COLUMN_FAMILIES.iter().map(|name| self.cf(name)).collect::<Result<Vec<_>, _>>()?;
        self.db.flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    /// The last key of `cf`, if any (not verified: keys carry no frame).
    pub fn last_key(&self, cf: &'static str) -> Result<Option<Vec<u8>>, StorageError> {
        self.latest().last_key(cf)
    }
}

/// A consistent snapshot of a [`Db`] (see [`Db::snapshot`]).
pub type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;

/// Reads of a [`Db`]: of its latest state ([`Db::latest`]) or of a snapshot
/// ([`Db::at`]). Every payload is verified against its frame.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    db: &'a Db,
    snapshot: Option<&'a Snapshot<'a>>,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("db", self.db).field("snapshot", &self.snapshot.is_some()).finish()
    }
}

impl<'a> Reader<'a> {
    /// The store read.
    pub fn db(&self) -> &'a Db {
        self.db
    }

    fn options(&self) -> ReadOptions {
        let mut options = read_options();
        if let Some(snapshot) = self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }

    /// The last key of `cf` (not verified: keys carry no frame).
    pub fn last_key(&self, cf: &'static str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut iter = self.db.db.raw_iterator_cf_opt(self.db.cf(cf)?, self.options());
        iter.seek_to_last();
        let key = iter.key().map(<[u8]>::to_vec);
        iter.status()?;
        Ok(key)
    }

    /// Whether each of `keys` (in ascending order) is present in `cf`, in
    /// one batched lookup: RocksDB probes each table's filter for all the
    /// keys together, several times cheaper than a lookup per key when
    /// nearly all are absent (a batch's new transfer ids). Presence only:
    /// the values are neither read nor verified.
    pub fn present_sorted<K: AsRef<[u8]>>(&self, cf: &'static str, keys: &[K]) -> Result<Vec<bool>, StorageError> {
        debug_assert!(keys.windows(2).all(|pair| pair[0].as_ref() <= pair[1].as_ref()), "keys in order");
        let found = self.db.db.batched_multi_get_cf_opt(self.db.cf(cf)?, keys.iter(), true, &self.options());
        found.into_iter().map(|value| Ok(value?.is_some())).collect()
    }

    /// The verified payloads under each of `keys` (in ascending order) in
    /// `cf`, in one batched lookup (see [`Self::present_sorted`]).
    pub fn get_sorted<K: AsRef<[u8]>>(
        &self,
        cf: &'static str,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        debug_assert!(keys.windows(2).all(|pair| pair[0].as_ref() <= pair[1].as_ref()), "keys in order");
        let found = self.db.db.batched_multi_get_cf_opt(self.db.cf(cf)?, keys.iter(), true, &self.options());
        found
            .into_iter()
            .zip(keys)
            .map(|(value, key)| match value? {
                None => Ok(None),
                Some(value) => Ok(Some(unframe(cf, key.as_ref(), &value)?.to_vec())),
            })
            .collect()
    }

    /// The verified payload under `key` in `cf`.
    pub fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_decoded(cf, key, |payload| Ok::<_, String>(payload.to_vec()))
    }

    /// Like [`Self::get`], decoding the payload with `decode`; a payload that
    /// does not decode is corruption.
    pub fn get_decoded<T, E: std::fmt::Display>(
        &self,
        cf: &'static str,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Option<T>, StorageError> {
        match self.db.db.get_pinned_cf_opt(self.db.cf(cf)?, key, &self.options())? {
            None => Ok(None),
            Some(value) => {
                let payload = unframe(cf, key, &value)?;
                decode(payload).map(Some).map_err(|error| corruption(cf, key, error.to_string()))
            }
        }
    }

    /// Visits every verified `(key, payload)` of `cf` from `from` (inclusive)
    /// up to `to` (exclusive, or the end), in key order, while `visit`
    /// returns true.
    pub fn scan(
        &self,
        cf: &'static str,
        from: &[u8],
        to: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), StorageError> {
        let mut options = self.options();
        if let Some(to) = to {
            options.set_iterate_upper_bound(to.to_vec());
        }
        let mut iter = self.db.db.raw_iterator_cf_opt(self.db.cf(cf)?, options);
        iter.seek(from);
        walk(cf, iter, true, visit)
    }

    /// Visits every verified `(key, payload)` of `cf` with `from <= key <= to`
    /// in descending key order, while `visit` returns true.
    pub fn scan_reverse(
        &self,
        cf: &'static str,
        from: &[u8],
        to: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), StorageError> {
        let mut options = self.options();
        options.set_iterate_lower_bound(from.to_vec());
        let mut iter = self.db.db.raw_iterator_cf_opt(self.db.cf(cf)?, options);
        iter.seek_for_prev(to);
        walk(cf, iter, false, visit)
    }
}

/// Visits verified `(key, payload)` pairs from the iterator's position,
/// forward or backward, while `visit` returns true.
fn walk(
    cf: &'static str,
    mut iter: rocksdb::DBRawIterator<'_>,
    forward: bool,
    visit: &mut Visit<'_>,
) -> Result<(), StorageError> {
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if !visit(key, unframe(cf, key, value)?)? {
            return Ok(());
        }
        if forward {
            iter.next();
        } else {
            iter.prev();
        }
    }
    iter.status()?;
    Ok(())
}

/// Big-endian key encodings.
pub mod keys {
    /// A u64 key (log index, timestamp).
    pub fn u64(value: u64) -> [u8; 8] {
        value.to_be_bytes()
    }

    /// A u128 key (account or transfer id).
    pub fn u128(value: u128) -> [u8; 16] {
        value.to_be_bytes()
    }

    /// An id followed by a u64 (account history: account ++ timestamp; expiry: id-less).
    pub fn u128_u64(id: u128, value: u64) -> [u8; 24] {
        let mut key = [0; 24];
        key[..16].copy_from_slice(&id.to_be_bytes());
        key[16..].copy_from_slice(&value.to_be_bytes());
        key
    }

    /// A u64 followed by an id (expiry index: expires_at ++ transfer id).
    pub fn u64_u128(value: u64, id: u128) -> [u8; 24] {
        let mut key = [0; 24];
        key[..8].copy_from_slice(&value.to_be_bytes());
        key[8..].copy_from_slice(&id.to_be_bytes());
        key
    }

    /// Reads a big-endian u64 from `bytes[at..at + 8]`.
    pub fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    }

    /// Reads a big-endian u128 from `bytes[at..at + 16]`.
    pub fn read_u128(bytes: &[u8], at: usize) -> Option<u128> {
        Some(u128::from_be_bytes(bytes.get(at..at + 16)?.try_into().ok()?))
    }
}

impl Db {
    /// Opens a store read-only (a snapshot's checkpoint), checking its
    /// format marker; nothing in the directory is changed.
    pub fn open_read_only(path: &Path) -> Result<Self, StorageError> {
        let options = Options::default();
        let existing = DB::list_cf(&options, path).map_err(|error| StorageError::NotACofferStore {
            path: path.to_owned(),
            reason: format!("cannot list its column families: {error}"),
        })?;
        if let Some(name) = COLUMN_FAMILIES.iter().find(|name| !existing.iter().any(|e| e == *name)) {
            return Err(StorageError::MissingColumnFamily { path: path.to_owned(), name });
        }
        // The node's column-family options, so that the table files' filter
        // blocks are read (and their checksums checked) as the node reads them.
        let cache = Cache::new_lru_cache(READ_ONLY_CACHE_BYTES);
        let config = StorageConfig::default();
        let db = DB::open_cf_descriptors_read_only(&options, path, descriptors(&config, &cache)?, false)?;
        let db = Self { db, path: path.to_owned() };
        db.check_format_marker()?;
        Ok(db)
    }
}
