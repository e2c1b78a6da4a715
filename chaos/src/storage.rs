//! The simulated disk and [`SimStorage`], the in-memory [`ReplicaStorage`]
//! on it.
//!
//! # Durability model
//!
//! It models what `ARCHITECTURE.md` says the RocksDB store guarantees, and no
//! more. Every write of the store (an append of entries and hard state, a
//! commit index, an applied entry with its write set, a compaction, a
//! snapshot install) is one atomic batch of records. All but one kind go to
//! the write-ahead log; an applied entry's write skips it (the Raft log is
//! its redo log) and lives only in the memtables until a flush:
//!
//! - a **flush** persists every batch written before it, logged or not, at
//!   one point (RocksDB's atomic flush); a snapshot (a checkpoint) flushes
//!   first, and the memtables filling up ([`FLUSH_AFTER_BATCHES`]) flushes;
//! - a logged batch written with `sync` is durable, and so is **every logged
//!   batch before it** (one WAL);
//! - a logged batch not yet synced is in the page cache: a **process crash**
//!   keeps it, a **power loss** keeps only a prefix of the unsynced logged
//!   batches (the WAL is replayed up to its first missing record), possibly
//!   none;
//! - an **unlogged** batch not yet flushed is lost by any crash: the store
//!   reopens with the state and applied index of the last flush, plus the
//!   logged batches replayed on top, and Raft applies the committed entries
//!   after that applied index again from the log;
//! - batches are atomic: a crash never leaves half of one.
//!
//! [`Disk`] holds the records as of the last flush and the batches written
//! since, in order, each marked synced, unsynced or unlogged;
//! [`Disk::crash`] replays onto the flushed records the logged batches up to
//! the last synced one and a prefix of the rest (the simulator draws how
//! long), and drops the unlogged ones. A node may also die in the middle of a round
//! ([`Disk::cut_round`]): the writes it had not yet made never happen, and
//! the messages it had not yet sent are never sent. [`SimStorage`] is the
//! node's view while it runs: the same records as if nothing were lost,
//! decoded for Raft and the ledger.
//!
//! # Records and corruption
//!
//! Every record is framed as the real store frames its values:
//! `crc32(table ++ key ++ payload)` (big-endian) followed by the payload.
//! [`Disk::damage`] flips a bit of a stopped node's record or tears it
//! (truncates it). [`SimStorage::open`] verifies every record's checksum and
//! decoding, pairs each with its key (an entry's index, a transfer's id),
//! checks that the log is contiguous and that the applied index is within
//! it, and **refuses** to open (`StorageError::Corruption` or
//! `Inconsistent`) instead of serving anything it cannot verify; the real
//! node does the same at read time and `coffer_storage::verify` offline. A
//! node whose store is refused is not repaired in place (its log may hold
//! entries it acknowledged to a leader): the simulator's operator replaces
//! it with a new, empty node through membership changes.
//!
//! # Snapshots
//!
//! A snapshot is an in-memory copy of the state records at the applied
//! index ([`SimSnapshot`]). Like a checkpoint directory it is not part of
//! the WAL: snapshots made before a crash are gone after it, and the store
//! makes a new one when it opens (as `DiskStorage::open` does when no
//! snapshot covers the log's start). A snapshot received from a leader is
//! put on the receiver's disk first ([`Disk::receive_snapshot`], as the
//! transport's verified, synced chunk receiver does) and installed, verified
//! record by record, in one synced batch.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::rc::Rc;

use coffer_consensus::ReplicaStorage;
use coffer_ledger::codec::{
    decode_account, decode_change, decode_ledger, decode_pending_status, decode_transfer, encode_account,
    encode_change, encode_ledger, encode_pending_status, encode_transfer,
};
use coffer_ledger::{
    AccountBalance, AccountId, AccountTransfer, CodeTotals, CreateTransferResult, DigestSum, LedgerId, MemoryStore,
    Side, Store, StoreMut, TransferId, WriteSet,
};
use coffer_storage::db::keys;
use coffer_storage::{AppliedState, RegionRole, RegionState, StorageError, Truncated};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};

use crate::crc::crc32;
use crate::random::Random;

/// Snapshots a store keeps to send (the newest and the one before, so a
/// transfer that started just before a new snapshot was made can finish).
const SNAPSHOTS_KEPT: usize = 2;
/// Received snapshots a disk keeps before it drops the oldest.
const INCOMING_SNAPSHOTS_MAX: usize = 4;
/// Batches written since the last flush past which the next round starts
/// with a flush (the memtables filled up).
pub const FLUSH_AFTER_BATCHES: usize = 48;

const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
const KEY_TRUNCATED: &[u8] = b"truncated";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_LAST_TIMESTAMP: &[u8] = b"last_timestamp";
/// The digest sum the ledger keeps as it applies (as the real store's `meta`).
const KEY_DIGEST_SUM: &[u8] = b"digest_sum";

/// A table of the simulated store: the column families of the real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Raft entries by index.
    RaftLog,
    /// Hard state, conf state, truncated state.
    RaftState,
    /// Applied index and last timestamp.
    Meta,
    /// Ledgers by id.
    Ledgers,
    /// Accounts by id.
    Accounts,
    /// Transfers by id.
    Transfers,
    /// Pending statuses by transfer id.
    Pending,
    /// Transient failures by transfer id.
    Failures,
    /// Account history index by (account, timestamp).
    AccountTransfers,
    /// Balance history by (account, timestamp).
    Balances,
    /// The change log by timestamp.
    Changes,
}

impl Table {
    /// Every table.
    pub const ALL: [Self; 11] = [
        Self::RaftLog,
        Self::RaftState,
        Self::Meta,
        Self::Ledgers,
        Self::Accounts,
        Self::Transfers,
        Self::Pending,
        Self::Failures,
        Self::AccountTransfers,
        Self::Balances,
        Self::Changes,
    ];

    /// Whether a snapshot carries this table: the ledger state and its
    /// meta records, not the node's own Raft log and state.
    const fn in_snapshot(self) -> bool {
        !matches!(self, Self::RaftLog | Self::RaftState)
    }

    /// The real store's column family name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RaftLog => "raft_log",
            Self::RaftState => "raft_state",
            Self::Meta => "meta",
            Self::Ledgers => "ledgers",
            Self::Accounts => "accounts",
            Self::Transfers => "transfers",
            Self::Pending => "pending",
            Self::Failures => "failures",
            Self::AccountTransfers => "account_transfers",
            Self::Balances => "balances",
            Self::Changes => "changes",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Records of every table, each value framed with its checksum.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    tables: [BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()],
}

impl Tables {
    fn table(&self, table: Table) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.tables[table.index()]
    }

    fn table_mut(&mut self, table: Table) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        &mut self.tables[table.index()]
    }

    fn apply(&mut self, batch: &Batch) {
        for write in &batch.writes {
            match write {
                Write::Put { table, key, value } => {
                    self.table_mut(*table).insert(key.clone(), value.clone());
                }
                Write::DeleteRange { table, from, to } => {
                    let records = self.table_mut(*table);
                    let mut removed = records.split_off(from.as_slice());
                    let mut after = removed.split_off(to.as_slice());
                    records.append(&mut after);
                }
                Write::Clear(table) => self.table_mut(*table).clear(),
            }
        }
    }

    /// How many records there are.
    pub fn record_count(&self) -> usize {
        self.tables.iter().map(BTreeMap::len).sum()
    }

    /// A copy of the state tables only (what a snapshot carries).
    fn state_only(&self) -> Self {
        let mut copy = Self::default();
        for table in Table::ALL.into_iter().filter(|table| table.in_snapshot()) {
            *copy.table_mut(table) = self.table(table).clone();
        }
        copy
    }
}

/// One write of a batch.
#[derive(Clone, Debug)]
enum Write {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes the keys in `from..to`.
    DeleteRange {
        table: Table,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Clear(Table),
}

/// An atomic batch of writes: one RocksDB WriteBatch.
#[derive(Clone, Debug, Default)]
struct Batch {
    writes: Vec<Write>,
}

impl Batch {
    fn put(&mut self, table: Table, key: &[u8], payload: &[u8]) {
        self.writes.push(Write::Put { table, key: key.to_vec(), value: frame(table, key, payload) });
    }

    fn put_framed(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.writes.push(Write::Put { table, key: key.to_vec(), value: value.to_vec() });
    }

    fn delete_range(&mut self, table: Table, from: &[u8], to: &[u8]) {
        self.writes.push(Write::DeleteRange { table, from: from.to_vec(), to: to.to_vec() });
    }

    fn clear(&mut self, table: Table) {
        self.writes.push(Write::Clear(table));
    }
}

/// `crc32(table ++ key ++ payload) ++ payload`.
fn frame(table: Table, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let crc = crc32(&[&[table as u8], key, payload]);
    let mut value = Vec::with_capacity(4 + payload.len());
    value.extend_from_slice(&crc.to_be_bytes());
    value.extend_from_slice(payload);
    value
}

/// The payload of a framed record, once its checksum is verified.
fn unframe<'v>(table: Table, key: &[u8], value: &'v [u8]) -> Result<&'v [u8], StorageError> {
    let Some((crc, payload)) = value.split_at_checked(4) else {
        return Err(corruption(table, key, format!("record of {} bytes is shorter than its checksum", value.len())));
    };
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32(&[&[table as u8], key, payload]);
    if stored != computed {
        return Err(corruption(
            table,
            key,
            format!("checksum {stored:08x} does not match the record ({computed:08x})"),
        ));
    }
    Ok(payload)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn corruption(table: Table, key: &[u8], reason: impl Into<String>) -> StorageError {
    StorageError::Corruption { cf: table.name(), key: hex(key), reason: reason.into() }
}

fn inconsistent(detail: impl Into<String>) -> StorageError {
    StorageError::Inconsistent { detail: detail.into() }
}

fn encode_message<M: protobuf::Message>(message: &M) -> Result<Vec<u8>, StorageError> {
    message.write_to_bytes().map_err(|error| inconsistent(format!("cannot encode a raft message: {error}")))
}

fn decode_message<M: protobuf::Message>(table: Table, key: &[u8], payload: &[u8]) -> Result<M, StorageError> {
    M::parse_from_bytes(payload).map_err(|error| corruption(table, key, format!("does not decode: {error}")))
}

fn encode_pair(first: u64, second: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&first.to_be_bytes());
    out[8..].copy_from_slice(&second.to_be_bytes());
    out
}

fn decode_pair(table: Table, key: &[u8], payload: &[u8]) -> Result<(u64, u64), StorageError> {
    match (keys::read_u64(payload, 0), keys::read_u64(payload, 8), payload.len()) {
        (Some(first), Some(second), 16) => Ok((first, second)),
        _ => Err(corruption(table, key, format!("{} bytes, expected 16", payload.len()))),
    }
}

/// A key of exactly `N` bytes.
fn fixed_key<const N: usize>(table: Table, key: &[u8]) -> Result<[u8; N], StorageError> {
    key.try_into().map_err(|_| corruption(table, key, format!("key of {} bytes, expected {N}", key.len())))
}

/// How a stopped node's record is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Damage {
    /// One bit of the stored value flipped (bit rot, a bad sector).
    BitFlip,
    /// The stored value cut short (a torn write).
    Torn,
}

/// How a batch was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// To the WAL, synced.
    Synced,
    /// To the WAL, not synced.
    Unsynced,
    /// Not to the WAL: durable only once flushed.
    Unlogged,
}

/// A node's disk: what survives a crash.
#[derive(Debug, Default)]
pub struct Disk {
    /// The records as of the last flush.
    durable: Tables,
    /// Batches written since the last flush, oldest first, each with how.
    written: Vec<(Batch, Written)>,
    /// Where the node's current round begins in `written`.
    round_start: usize,
    /// Snapshots received from leaders, verified and synced, waiting to be
    /// installed, by (index, term) (the transport's incoming directories).
    incoming: BTreeMap<(u64, u64), Rc<SimSnapshot>>,
    /// Batches written, synced and lost, for the summary.
    stats: DiskStats,
}

/// What happened to one disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Batches written.
    pub writes: u64,
    /// Synced writes.
    pub syncs: u64,
    /// Unsynced batches lost in crashes, and batches a crash in the middle
    /// of a round kept from being written.
    pub lost: u64,
    /// Unlogged (state) batches lost in crashes before a flush persisted
    /// them, and so applied again from the Raft log.
    pub unflushed_lost: u64,
    /// Flushes.
    pub flushes: u64,
}

/// A disk shared between a node's running storage and the simulator, which
/// keeps it across the node's crashes.
pub type SharedDisk = Rc<RefCell<Disk>>;

impl Disk {
    /// A new, empty disk.
    pub fn shared() -> SharedDisk {
        Rc::new(RefCell::new(Self::default()))
    }

    fn write(&mut self, batch: Batch, how: Written) {
        self.stats.writes += 1;
        self.stats.syncs += u64::from(how == Written::Synced);
        self.written.push((batch, how));
    }

    /// Persists every batch written so far, logged or not, at one point.
    fn flush(&mut self) {
        for (batch, _) in self.written.drain(..) {
            self.durable.apply(&batch);
        }
        self.round_start = 0;
        self.stats.flushes += 1;
    }

    /// The node starts a round (one `advance`), after a flush if the
    /// memtables filled up.
    pub fn begin_round(&mut self) {
        if self.written.len() >= FLUSH_AFTER_BATCHES {
            self.flush();
        }
        self.round_start = self.written.len();
    }

    /// Writes the node made in its current round so far.
    pub fn round_writes(&self) -> usize {
        self.written.len() - self.round_start
    }

    /// The node died in the middle of its round, after the first `kept`
    /// writes of it: the later ones never happened. Returns how many.
    pub fn cut_round(&mut self, kept: usize) -> usize {
        let keep = self.round_start + kept.min(self.round_writes());
        let cut = self.written.len() - keep;
        self.written.truncate(keep);
        self.stats.lost += cut as u64;
        cut
    }

    /// Where the logged writes after the last synced one begin.
    fn unsynced_start(&self) -> usize {
        self.written.iter().rposition(|(_, how)| *how == Written::Synced).map_or(0, |last| last + 1)
    }

    /// Logged writes after the last synced one.
    pub fn unsynced_writes(&self) -> usize {
        self.written[self.unsynced_start()..].iter().filter(|(_, how)| *how == Written::Unsynced).count()
    }

    /// Unlogged writes since the last flush.
    pub fn unflushed_writes(&self) -> usize {
        self.written.iter().filter(|(_, how)| *how == Written::Unlogged).count()
    }

    /// The node crashed: the logged writes up to the last synced one are
    /// replayed onto the flushed records, then the first `kept` of the
    /// unsynced logged ones (all of them for a process crash, a prefix for
    /// a power loss); the rest, and every unlogged write, are lost. Returns
    /// how many logged writes were lost.
    pub fn crash(&mut self, kept: usize) -> usize {
        let unsynced_start = self.unsynced_start();
        let (mut replayed, mut lost) = (0, 0);
        for (at, (batch, how)) in self.written.drain(..).enumerate() {
            match how {
                Written::Unlogged => self.stats.unflushed_lost += 1,
                Written::Synced => self.durable.apply(&batch),
                Written::Unsynced if at < unsynced_start => self.durable.apply(&batch),
                Written::Unsynced if replayed < kept => {
                    replayed += 1;
                    self.durable.apply(&batch);
                }
                Written::Unsynced => lost += 1,
            }
        }
        self.round_start = 0;
        self.stats.lost += lost as u64;
        lost
    }

    /// Durable records.
    pub fn record_count(&self) -> usize {
        self.durable.record_count()
    }

    /// What happened to this disk so far.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// Stores a snapshot received from a leader, to be installed.
    pub fn receive_snapshot(&mut self, snapshot: Rc<SimSnapshot>) {
        self.incoming.insert((snapshot.index(), snapshot.term()), snapshot);
        while self.incoming.len() > INCOMING_SNAPSHOTS_MAX {
            self.incoming.pop_first();
        }
    }

    /// Damages one durable record, chosen by `random`, of a stopped node's
    /// disk. Returns which (`None` on an empty disk).
    pub fn damage(&mut self, random: &mut Random, damage: Damage) -> Option<String> {
        debug_assert!(self.written.is_empty(), "only a crashed node's disk is damaged");
        let count = self.durable.record_count();
        let mut chosen = random.below(count as u64) as usize;
        for table in Table::ALL {
            let records = self.durable.table_mut(table);
            if chosen >= records.len() {
                chosen -= records.len();
                continue;
            }
            let (key, value) = records.iter_mut().nth(chosen)?;
            let detail = match damage {
                Damage::BitFlip => {
                    let bit = random.below(value.len() as u64 * 8) as usize;
                    value[bit / 8] ^= 1 << (bit % 8);
                    format!("bit {bit} of {}/{} flipped", table.name(), hex(key))
                }
                Damage::Torn => {
                    let length = random.below(value.len() as u64) as usize;
                    value.truncate(length);
                    format!("{}/{} torn to {length} bytes", table.name(), hex(key))
                }
            };
            return Some(detail);
        }
        None
    }
}

/// A snapshot of a node's ledger state: its state records at `meta.index`.
#[derive(Debug)]
pub struct SimSnapshot {
    meta: SnapshotMetadata,
    records: Tables,
}

impl SimSnapshot {
    /// The index it was made at.
    pub fn index(&self) -> u64 {
        self.meta.index
    }

    /// The term of that entry.
    pub fn term(&self) -> u64 {
        self.meta.term
    }
}

/// The in-memory store of a running node, on its [`Disk`]. See the module
/// docs for what survives a crash.
#[derive(Debug)]
pub struct SimStorage {
    disk: SharedDisk,
    /// The records as written (durable or not): what a snapshot copies.
    records: Tables,
    log: VecDeque<Entry>,
    truncated: Truncated,
    hard_state: HardState,
    conf_state: ConfState,
    applied: AppliedState,
    ledger: MemoryStore,
    /// Snapshots this node can send, newest last.
    snapshots: VecDeque<Rc<SimSnapshot>>,
    snapshot_requested: Cell<bool>,
}

impl SimStorage {
    /// Opens the store on `disk`, verifying every durable record (see the
    /// module docs); an empty disk gives an empty store. If the log was
    /// compacted or bootstrapped, a snapshot of the recovered state is made,
    /// so Raft can always send a peer what the log no longer holds.
    pub fn open(disk: SharedDisk) -> Result<Self, StorageError> {
        let records = disk.borrow().durable.clone();
        let (hard_state, conf_state, truncated) = decode_raft_state(&records)?;
        let log = decode_log(&records, truncated)?;
        let (ledger, applied) = decode_state(&records)?;
        let mut storage = Self {
            disk,
            records,
            log,
            truncated,
            hard_state,
            conf_state,
            applied,
            ledger,
            snapshots: VecDeque::new(),
            snapshot_requested: Cell::new(false),
        };
        if applied.index < storage.truncated.index {
            return Err(inconsistent(format!(
                "applied index {} is below the log's start {}: the entries between are gone",
                applied.index,
                storage.first()
            )));
        }
        if applied.index > storage.last() {
            return Err(inconsistent(format!(
                "applied index {} is past the last log index {}",
                applied.index,
                storage.last()
            )));
        }
        if storage.truncated.index > 0 {
            storage.make_snapshot()?;
        }
        Ok(storage)
    }

    /// Makes a fresh store the first state of a cluster of `voters`, as
    /// `NodeStore::bootstrap` does: the log starts after index 1 (term 1),
    /// which holds the founding membership, as if a snapshot of the empty
    /// ledger had been installed there.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<(), StorageError> {
        let fresh = self.log.is_empty()
            && self.truncated == Truncated::default()
            && self.hard_state == HardState::default()
            && self.conf_state == ConfState::default()
            && self.applied == AppliedState::default();
        if !fresh || voters.is_empty() || voters.contains(&0) {
            return Err(inconsistent(format!("bootstrap of a used store or with voters {voters:?}")));
        }
        let mut conf_state = ConfState::default();
        conf_state.set_voters(voters.to_vec());
        let mut meta = SnapshotMetadata { index: 1, term: 1, ..Default::default() };
        meta.set_conf_state(conf_state);
        let mut batch = Batch::default();
        self.stage_raft_reset(&mut batch, &meta)?;
        let applied = AppliedState::at(1, 1);
        batch.put(Table::Meta, KEY_APPLIED, &applied.encode());
        self.write(batch, Written::Synced);
        self.applied = applied;
        self.make_snapshot()?;
        Ok(())
    }

    /// A checkpoint of the state at the applied index (what a primary
    /// hands a region it re-seeds).
    pub fn checkpoint(&self) -> Rc<SimSnapshot> {
        let meta = SnapshotMetadata { index: self.applied.index, term: self.applied.term, ..Default::default() };
        Rc::new(SimSnapshot { meta, records: self.records.state_only() })
    }

    /// Re-seeds a fresh `disk` from `checkpoint` (the primary's state at its
    /// index K), as `coffer_dr::reseed` prepares a node: the state becomes
    /// entry K of a Raft group of `voters` in `term` (above every term the
    /// region used), the region a standby of `epoch` following the primary
    /// from K. Returns the store opened on it.
    pub fn reseed(
        disk: SharedDisk,
        voters: &[u64],
        checkpoint: &SimSnapshot,
        term: u64,
        epoch: u64,
    ) -> Result<Self, StorageError> {
        let mut storage = Self::open(disk.clone())?;
        let index = checkpoint.index();
        let region = RegionState { epoch, role: RegionRole::Standby, cursor: index, ..RegionState::default() };
        let mut batch = Batch::default();
        for table in Table::ALL.into_iter().filter(|table| table.in_snapshot()) {
            batch.clear(table);
            for (key, value) in checkpoint.records.table(table) {
                batch.put_framed(table, key, value);
            }
        }
        batch.put(Table::Meta, KEY_APPLIED, &AppliedState { index, term, region }.encode());
        let mut conf_state = ConfState::default();
        conf_state.set_voters(voters.to_vec());
        let mut meta = SnapshotMetadata { index, term, ..Default::default() };
        meta.set_conf_state(conf_state);
        storage.stage_raft_reset(&mut batch, &meta)?;
        storage.write(batch, Written::Synced);
        drop(storage);
        // A prepared re-seed is on disk before the node restarts onto it.
        disk.borrow_mut().flush();
        Self::open(disk)
    }

    /// The snapshot made at `index`, if this store still has it.
    pub fn snapshot_data(&self, index: u64) -> Option<Rc<SimSnapshot>> {
        self.snapshots.iter().rev().find(|snapshot| snapshot.index() == index).cloned()
    }

    /// The disk this store writes.
    pub fn disk(&self) -> &SharedDisk {
        &self.disk
    }

    fn first(&self) -> u64 {
        self.truncated.index + 1
    }

    fn last(&self) -> u64 {
        self.truncated.index + self.log.len() as u64
    }

    fn write(&mut self, batch: Batch, how: Written) {
        self.records.apply(&batch);
        self.disk.borrow_mut().write(batch, how);
    }

    /// Adds to `batch` what makes the Raft state match a snapshot at `meta`
    /// (log emptied and truncated there, term and commit raised to it,
    /// membership replaced), and applies it to this view.
    fn stage_raft_reset(&mut self, batch: &mut Batch, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        let truncated = Truncated { index: meta.index, term: meta.term };
        let mut hard_state = self.hard_state.clone();
        hard_state.term = hard_state.term.max(meta.term);
        hard_state.commit = hard_state.commit.max(meta.index);
        batch.clear(Table::RaftLog);
        batch.put(Table::RaftState, KEY_TRUNCATED, &encode_pair(truncated.index, truncated.term));
        batch.put(Table::RaftState, KEY_CONF_STATE, &encode_message(meta.get_conf_state())?);
        batch.put(Table::RaftState, KEY_HARD_STATE, &encode_message(&hard_state)?);
        self.log.clear();
        self.truncated = truncated;
        self.hard_state = hard_state;
        self.conf_state = meta.get_conf_state().clone();
        Ok(())
    }

    fn entry_term(&self, index: u64) -> Option<u64> {
        let offset = index.checked_sub(self.first())?;
        self.log.get(usize::try_from(offset).ok()?).map(|entry| entry.term)
    }
}

/// Whether `conf_state` counts `node` as a member.
fn names(conf_state: &ConfState, node: u64) -> bool {
    conf_state.voters.iter().chain(&conf_state.learners).chain(&conf_state.voters_outgoing).any(|&id| id == node)
}

impl raft::Storage for SimStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            let detail = format!("entries [{low}, {high}) requested beyond last index {}", self.last());
            return Err(inconsistent(detail).into());
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let start = (low - self.first()) as usize;
        let end = (high - self.first()) as usize;
        let mut entries = Vec::with_capacity(end - start);
        let mut size = 0u64;
        for entry in self.log.range(start..end) {
            size += u64::from(entry.compute_size());
            // Always at least one entry, then only while within max_size.
            if !entries.is_empty() && size > max_size {
                break;
            }
            entries.push(entry.clone());
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.truncated.index {
            return Ok(self.truncated.term);
        }
        if index < self.first() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        self.entry_term(index).ok_or(raft::Error::Store(raft::StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // As `DiskStorage`: a snapshot whose membership lacks the peer (a
        // node just added) is not offered; a newer one is made next round.
        match self.snapshots.back() {
            Some(newest) if newest.index() >= request_index && names(newest.meta.get_conf_state(), to) => {
                let mut snapshot = Snapshot::default();
                snapshot.set_metadata(newest.meta.clone());
                Ok(snapshot)
            }
            _ => {
                self.snapshot_requested.set(true);
                Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable))
            }
        }
    }
}

impl ReplicaStorage for SimStorage {
    type Ledger = MemoryStore;

    fn ledger(&self) -> &MemoryStore {
        &self.ledger
    }

    fn applied(&self) -> AppliedState {
        self.applied
    }

    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        if let Some(first) = entries.first() {
            if first.index <= self.truncated.index || first.index > self.last() + 1 {
                return Err(inconsistent(format!(
                    "append at index {} outside the log ({}..={})",
                    first.index,
                    self.first(),
                    self.last()
                )));
            }
            if entries.iter().enumerate().any(|(offset, entry)| entry.index != first.index + offset as u64) {
                return Err(inconsistent(format!("appended entries from {} are not contiguous", first.index)));
            }
            if first.index <= self.last() {
                batch.delete_range(Table::RaftLog, &keys::u64(first.index), &keys::u64(self.last() + 1));
            }
            for entry in entries {
                batch.put(Table::RaftLog, &keys::u64(entry.index), &encode_message(entry)?);
            }
            self.log.truncate((first.index - self.first()) as usize);
            self.log.extend(entries.iter().cloned());
        }
        if let Some(hard_state) = hard_state {
            batch.put(Table::RaftState, KEY_HARD_STATE, &encode_message(hard_state)?);
            self.hard_state = hard_state.clone();
        }
        self.write(batch, if sync { Written::Synced } else { Written::Unsynced });
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        self.append(&[], Some(&hard_state), false)
    }

    fn apply(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        conf_state: Option<&ConfState>,
    ) -> Result<(), StorageError> {
        if applied.index <= self.applied.index {
            return Err(inconsistent(format!(
                "entry {} applied again (applied index is {})",
                applied.index, self.applied.index
            )));
        }
        let mut batch = Batch::default();
        if let Some(write_set) = write_set {
            stage_write_set(&mut batch, write_set);
            self.ledger.commit(write_set).map_err(|error| inconsistent(error.to_string()))?;
            let sum = self.ledger.digest_sum().map_err(|error| inconsistent(error.to_string()))?;
            batch.put(Table::Meta, KEY_DIGEST_SUM, &sum.to_bytes());
        }
        batch.put(Table::Meta, KEY_APPLIED, &applied.encode());
        if let Some(conf_state) = conf_state {
            batch.put(Table::RaftState, KEY_CONF_STATE, &encode_message(conf_state)?);
            self.conf_state = conf_state.clone();
        }
        // Unlogged, as `LedgerState::apply`: an apply no flush persisted is
        // redone from the log, which holds every entry above the applied
        // index of the last flush.
        self.write(batch, Written::Unlogged);
        self.applied = applied;
        Ok(())
    }

    fn log_first_index(&self) -> u64 {
        self.first()
    }

    fn compact(&mut self, compact_index: u64) -> Result<(), StorageError> {
        if compact_index <= self.first() {
            return Ok(());
        }
        if compact_index > self.last() + 1 || compact_index > self.applied.index + 1 {
            return Err(inconsistent(format!(
                "compaction to {compact_index} is past the last index {} or the applied index {}",
                self.last(),
                self.applied.index
            )));
        }
        let index = compact_index - 1;
        let term = self.entry_term(index).ok_or_else(|| inconsistent(format!("raft log has no entry {index}")))?;
        let mut batch = Batch::default();
        batch.delete_range(Table::RaftLog, &keys::u64(self.first()), &keys::u64(compact_index));
        batch.put(Table::RaftState, KEY_TRUNCATED, &encode_pair(index, term));
        self.log.drain(..(compact_index - self.first()) as usize);
        self.truncated = Truncated { index, term };
        self.write(batch, Written::Unsynced);
        Ok(())
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshots.back().map_or(0, |snapshot| snapshot.index())
    }

    fn snapshot_requested(&self) -> bool {
        self.snapshot_requested.get()
    }

    fn make_snapshot(&mut self) -> Result<SnapshotMetadata, StorageError> {
        self.snapshot_requested.set(false);
        // A checkpoint flushes first: the log may now be compacted up to
        // this snapshot, and a crash must not take the state back below it.
        self.disk.borrow_mut().flush();
        let mut meta = SnapshotMetadata { index: self.applied.index, term: self.applied.term, ..Default::default() };
        meta.set_conf_state(self.conf_state.clone());
        let snapshot = Rc::new(SimSnapshot { meta: meta.clone(), records: self.records.state_only() });
        self.snapshots.retain(|kept| kept.index() != meta.index);
        self.snapshots.push_back(snapshot);
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            self.snapshots.pop_front();
        }
        Ok(meta)
    }

    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        let path = PathBuf::from(format!("sim/snapshots/in/{:020}-{:020}", meta.index, meta.term));
        let incoming = {
            let mut disk = self.disk.borrow_mut();
            let snapshot = disk.incoming.remove(&(meta.index, meta.term));
            // Older ones are of no use once this one is installed.
            disk.incoming.retain(|&(index, _), _| index > meta.index);
            snapshot
        };
        let Some(snapshot) = incoming else {
            return Err(StorageError::Snapshot { path, reason: "no received snapshot has this index and term".into() });
        };
        // Verified record by record before anything is replaced.
        let (ledger, applied) = decode_state(&snapshot.records)?;
        if applied.index != meta.index || applied.term != meta.term {
            return Err(StorageError::Snapshot {
                path,
                reason: format!("holds applied {applied:?}, Raft installed index {} term {}", meta.index, meta.term),
            });
        }
        let mut batch = Batch::default();
        for table in Table::ALL.into_iter().filter(|table| table.in_snapshot()) {
            batch.clear(table);
            for (key, value) in snapshot.records.table(table) {
                batch.put_framed(table, key, value);
            }
        }
        self.stage_raft_reset(&mut batch, meta)?;
        self.write(batch, Written::Synced);
        self.ledger = ledger;
        self.applied = applied;
        // What this node can now send on is what it installed.
        self.make_snapshot()?;
        Ok(())
    }
}

/// The records of `write_set`, as `LedgerState::apply` stages them.
fn stage_write_set(batch: &mut Batch, write_set: &WriteSet) {
    let mut buffer = Vec::with_capacity(160);
    batch.put(Table::Meta, KEY_LAST_TIMESTAMP, &write_set.last_timestamp.to_be_bytes());
    for ledger in &write_set.ledgers {
        buffer.clear();
        encode_ledger(ledger, &mut buffer);
        batch.put(Table::Ledgers, &ledger.id.0.to_be_bytes(), &buffer);
    }
    for account in &write_set.accounts {
        buffer.clear();
        encode_account(account, &mut buffer);
        batch.put(Table::Accounts, &keys::u128(account.id.0), &buffer);
    }
    for transfer in &write_set.transfers {
        buffer.clear();
        encode_transfer(transfer, &mut buffer);
        batch.put(Table::Transfers, &keys::u128(transfer.id.0), &buffer);
    }
    for (id, status) in &write_set.pending {
        buffer.clear();
        encode_pending_status(status, &mut buffer);
        batch.put(Table::Pending, &keys::u128(id.0), &buffer);
    }
    for (id, result) in &write_set.failures {
        batch.put(Table::Failures, &keys::u128(id.0), &result.code().to_be_bytes());
    }
    for row in &write_set.account_transfers {
        let mut value = [0; 17];
        value[..16].copy_from_slice(&row.transfer_id.0.to_be_bytes());
        value[16] = u8::from(row.side == Side::Credit);
        batch.put(Table::AccountTransfers, &keys::u128_u64(row.account_id.0, row.timestamp), &value);
    }
    for row in &write_set.balances {
        let value: Vec<u8> = [row.debits_pending, row.debits_posted, row.credits_pending, row.credits_posted]
            .iter()
            .flat_map(|balance| balance.to_be_bytes())
            .collect();
        batch.put(Table::Balances, &keys::u128_u64(row.account_id.0, row.timestamp), &value);
    }
    for change in &write_set.changes {
        buffer.clear();
        encode_change(change, &mut buffer);
        batch.put(Table::Changes, &keys::u64(change.timestamp), &buffer);
    }
}

fn decode_raft_state(records: &Tables) -> Result<(HardState, ConfState, Truncated), StorageError> {
    let table = Table::RaftState;
    let (mut hard_state, mut conf_state, mut truncated) = Default::default();
    for (key, value) in records.table(table) {
        let payload = unframe(table, key, value)?;
        match key.as_slice() {
            KEY_HARD_STATE => hard_state = decode_message(table, key, payload)?,
            KEY_CONF_STATE => conf_state = decode_message(table, key, payload)?,
            KEY_TRUNCATED => {
                let (index, term) = decode_pair(table, key, payload)?;
                truncated = Truncated { index, term };
            }
            _ => return Err(corruption(table, key, "unknown key")),
        }
    }
    Ok((hard_state, conf_state, truncated))
}

fn decode_log(records: &Tables, truncated: Truncated) -> Result<VecDeque<Entry>, StorageError> {
    let table = Table::RaftLog;
    let mut log = VecDeque::with_capacity(records.table(table).len());
    for (key, value) in records.table(table) {
        let index = u64::from_be_bytes(fixed_key(table, key)?);
        let entry: Entry = decode_message(table, key, unframe(table, key, value)?)?;
        if entry.index != index {
            return Err(corruption(table, key, format!("holds the entry of index {}", entry.index)));
        }
        let expected = truncated.index + 1 + log.len() as u64;
        if index != expected {
            return Err(inconsistent(format!("raft log has entry {index} where {expected} belongs")));
        }
        log.push_back(entry);
    }
    Ok(log)
}

/// Decodes the state tables into a ledger store, verifying every record.
fn decode_state(records: &Tables) -> Result<(MemoryStore, AppliedState), StorageError> {
    let mut write_set = WriteSet::default();
    let mut applied = AppliedState::default();
    let paired = |table: Table, key: &[u8], same: bool| {
        if same {
            Ok(())
        } else {
            Err(corruption(table, key, "the record's id is not its key"))
        }
    };
    for table in Table::ALL.into_iter().filter(|table| table.in_snapshot()) {
        for (key, value) in records.table(table) {
            let payload = unframe(table, key, value)?;
            match table {
                Table::Meta => match key.as_slice() {
                    KEY_APPLIED => {
                        applied = AppliedState::decode(payload).map_err(|error| corruption(table, key, error))?;
                    }
                    KEY_LAST_TIMESTAMP => {
                        write_set.last_timestamp = u64::from_be_bytes(fixed_key(table, payload)?);
                    }
                    // Committed onto an empty store, the delta is the sum.
                    KEY_DIGEST_SUM => write_set.digest_delta = DigestSum::from_bytes(fixed_key(table, payload)?),
                    _ => return Err(corruption(table, key, "unknown key")),
                },
                Table::Ledgers => {
                    let ledger = decode_ledger(payload).map_err(|error| corruption(table, key, error.to_string()))?;
                    paired(table, key, ledger.id.0 == u32::from_be_bytes(fixed_key(table, key)?))?;
                    write_set.ledgers.push(ledger);
                }
                Table::Accounts => {
                    let account = decode_account(payload).map_err(|error| corruption(table, key, error.to_string()))?;
                    paired(table, key, account.id.0 == u128::from_be_bytes(fixed_key(table, key)?))?;
                    write_set.accounts.push(account);
                }
                Table::Transfers => {
                    let transfer =
                        decode_transfer(payload).map_err(|error| corruption(table, key, error.to_string()))?;
                    paired(table, key, transfer.id.0 == u128::from_be_bytes(fixed_key(table, key)?))?;
                    write_set.transfers.push(transfer);
                }
                Table::Pending => {
                    let status =
                        decode_pending_status(payload).map_err(|error| corruption(table, key, error.to_string()))?;
                    write_set.pending.push((TransferId(u128::from_be_bytes(fixed_key(table, key)?)), status));
                }
                Table::Failures => {
                    let code = u16::from_be_bytes(fixed_key(table, payload)?);
                    let result = CreateTransferResult::from_code(code)
                        .ok_or_else(|| corruption(table, key, format!("unknown result code {code}")))?;
                    write_set.failures.push((TransferId(u128::from_be_bytes(fixed_key(table, key)?)), result));
                }
                Table::AccountTransfers => {
                    let (account_id, timestamp) = history_key(table, key)?;
                    let value: [u8; 17] = fixed_key(table, payload)?;
                    let side = match value[16] {
                        0 => Side::Debit,
                        1 => Side::Credit,
                        other => return Err(corruption(table, key, format!("unknown side {other}"))),
                    };
                    let transfer_id = TransferId(keys::read_u128(&value, 0).unwrap_or_default());
                    write_set.account_transfers.push(AccountTransfer { account_id, timestamp, transfer_id, side });
                }
                Table::Balances => {
                    let (account_id, timestamp) = history_key(table, key)?;
                    let value: [u8; 64] = fixed_key(table, payload)?;
                    let balance = |at: usize| keys::read_u128(&value, at).unwrap_or_default();
                    write_set.balances.push(AccountBalance {
                        account_id,
                        timestamp,
                        debits_pending: balance(0),
                        debits_posted: balance(16),
                        credits_pending: balance(32),
                        credits_posted: balance(48),
                    });
                }
                Table::Changes => {
                    let timestamp = u64::from_be_bytes(fixed_key(table, key)?);
                    write_set.changes.push(
                        decode_change(timestamp, payload).map_err(|error| corruption(table, key, error.to_string()))?,
                    );
                }
                Table::RaftLog | Table::RaftState => {}
            }
        }
    }
    // The running totals are derived from the accounts; this disk keeps
    // none (its checks are of Raft and the digest, not of as-of reads), so
    // the store rebuilt from it starts their history here.
    let mut totals = BTreeMap::<(LedgerId, u16), CodeTotals>::new();
    for account in &write_set.accounts {
        let key = (account.ledger, account.code);
        let code_totals = totals.entry(key).or_insert_with(|| CodeTotals::empty(key.0, key.1));
        code_totals.accounts += 1;
        code_totals.add(&account.balances());
    }
    write_set.totals = totals.into_values().collect();
    // One "batch" of everything since the start: every account is indexed
    // as created by it.
    write_set.first_timestamp = 0;
    let mut ledger = MemoryStore::new();
    ledger.commit(&write_set).map_err(|error| inconsistent(error.to_string()))?;
    Ok((ledger, applied))
}

fn history_key(table: Table, key: &[u8]) -> Result<(AccountId, u64), StorageError> {
    let key: [u8; 24] = fixed_key(table, key)?;
    let account = keys::read_u128(&key, 0).unwrap_or_default();
    let timestamp = keys::read_u64(&key, 16).unwrap_or_default();
    Ok((AccountId(account), timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_ledger::{state_digest, Account, Ledger, LedgerId, Operation, Transfer, TransferKind};
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 8].into(), ..Default::default() }
    }

    fn hard_state(term: u64, commit: u64) -> HardState {
        HardState { term, vote: 1, commit, ..Default::default() }
    }

    fn bootstrapped() -> SimStorage {
        let mut storage = SimStorage::open(Disk::shared()).unwrap();
        storage.bootstrap(&[1, 2, 3]).unwrap();
        storage
    }

    /// Applies, at indexes `first`, `first + 1` and `first + 2`, a ledger,
    /// two accounts and one transfer (the entries must be in the log).
    fn apply_bank(storage: &mut SimStorage, first: u64) {
        let ledger = Ledger::new(LedgerId(1), "KRW", 0, "Won");
        let account = |id| Account { id: AccountId(id), ledger: LedgerId(1), code: 1, ..Default::default() };
        let transfer = Transfer {
            id: TransferId(9),
            debit_account_id: AccountId(1),
            credit_account_id: AccountId(2),
            amount: 5,
            ledger: LedgerId(1),
            code: 1,
            kind: TransferKind::Journal,
            ..Default::default()
        };
        let operations = [
            Operation::CreateLedgers(vec![ledger]),
            Operation::CreateAccounts(vec![account(1), account(2)]),
            Operation::CreateTransfers(vec![transfer]),
        ];
        for (offset, operation) in operations.iter().enumerate() {
            let index = first + offset as u64;
            let prepared = coffer_ledger::prepare(storage.ledger(), index * 10, operation).unwrap();
            storage.apply(Some(&prepared.write_set), AppliedState::at(index, 1), None).unwrap();
        }
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes.map(|index| entry(index, 1)).collect()
    }

    #[test]
    fn synced_appends_survive_a_power_loss_and_unsynced_ones_do_not() {
        let mut storage = bootstrapped();
        storage.append(&[entry(2, 1), entry(3, 1)], Some(&hard_state(1, 1)), true).unwrap();
        storage.append(&[entry(4, 1)], None, false).unwrap();
        let disk = storage.disk().clone();
        drop(storage);
        assert_eq!(disk.borrow_mut().crash(0), 1);
        let reopened = SimStorage::open(disk).unwrap();
        assert_eq!((reopened.first_index().unwrap(), reopened.last_index().unwrap()), (2, 3));
        assert_eq!(reopened.initial_state().unwrap().hard_state, hard_state(1, 1));
    }

    #[test]
    fn a_crash_loses_the_unflushed_applies_and_the_log_redoes_them() {
        let mut storage = bootstrapped();
        storage.append(&entries(2..=4), Some(&hard_state(1, 4)), true).unwrap();
        apply_bank(&mut storage, 2);
        let digest = state_digest(storage.ledger()).unwrap();
        storage.append(&[entry(5, 1)], None, true).unwrap();
        let disk = storage.disk().clone();
        drop(storage);
        assert_eq!(disk.borrow().unflushed_writes(), 3);
        assert_eq!(disk.borrow_mut().crash(0), 0, "every logged write was synced");
        let mut reopened = SimStorage::open(disk).unwrap();
        assert_eq!(reopened.applied(), AppliedState::at(1, 1), "back to the last flush (the bootstrap's snapshot)");
        assert_eq!((reopened.first_index().unwrap(), reopened.last_index().unwrap()), (2, 5), "the log kept them");
        apply_bank(&mut reopened, 2);
        assert_eq!(state_digest(reopened.ledger()).unwrap(), digest, "applied again, the state is the same");
    }

    #[test]
    fn a_snapshot_flushes_the_applies_before_it() {
        let mut storage = bootstrapped();
        storage.append(&entries(2..=4), Some(&hard_state(1, 4)), true).unwrap();
        apply_bank(&mut storage, 2);
        let digest = state_digest(storage.ledger()).unwrap();
        storage.make_snapshot().unwrap();
        storage.compact(5).unwrap();
        storage.apply(None, AppliedState::at(5, 1), None).unwrap();
        let disk = storage.disk().clone();
        drop(storage);
        let unsynced = disk.borrow().unsynced_writes();
        disk.borrow_mut().crash(unsynced);
        let reopened = SimStorage::open(disk).unwrap();
        assert_eq!(
            reopened.applied(),
            AppliedState::at(4, 1),
            "the snapshot's flush kept them; the later apply is lost"
        );
        assert_eq!(state_digest(reopened.ledger()).unwrap(), digest);
        assert_eq!(reopened.first_index().unwrap(), 5, "a process crash keeps the logged compaction");
    }

    #[test]
    fn a_power_loss_keeps_a_prefix_of_the_unsynced_writes() {
        let mut storage = bootstrapped();
        storage.append(&entries(2..=3), Some(&hard_state(1, 1)), true).unwrap();
        for index in 4..=6 {
            storage.append(&[entry(index, 1)], None, false).unwrap();
        }
        let disk = storage.disk().clone();
        drop(storage);
        assert_eq!(disk.borrow().unsynced_writes(), 3);
        assert_eq!(disk.borrow_mut().crash(2), 1);
        let reopened = SimStorage::open(disk).unwrap();
        assert_eq!(reopened.last_index().unwrap(), 5, "the first two unsynced appends were kept, the last lost");
    }

    #[test]
    fn every_damaged_record_is_refused_at_open() {
        for seed in 0..200 {
            let mut storage = bootstrapped();
            storage.append(&entries(2..=4), Some(&hard_state(1, 4)), true).unwrap();
            apply_bank(&mut storage, 2);
            storage.make_snapshot().unwrap();
            storage.append(&[], Some(&hard_state(1, 4)), true).unwrap();
            let disk = storage.disk().clone();
            drop(storage);
            assert_eq!(disk.borrow_mut().crash(0), 0, "everything was synced");
            let mut random = Random::new(seed);
            let damage = if seed % 2 == 0 { Damage::BitFlip } else { Damage::Torn };
            let what = disk.borrow_mut().damage(&mut random, damage).unwrap();
            let refused = SimStorage::open(disk).unwrap_err();
            assert!(
                matches!(refused, StorageError::Corruption { .. } | StorageError::Inconsistent { .. }),
                "{what}: {refused}"
            );
        }
    }

    #[test]
    fn a_snapshot_installs_on_another_store_with_the_same_digest() {
        let mut leader = bootstrapped();
        leader.append(&entries(2..=4), Some(&hard_state(1, 4)), true).unwrap();
        apply_bank(&mut leader, 2);
        let meta = leader.make_snapshot().unwrap();
        let mut follower = SimStorage::open(Disk::shared()).unwrap();
        follower.disk().borrow_mut().receive_snapshot(leader.snapshot_data(meta.index).unwrap());
        follower.install_snapshot(&meta).unwrap();
        assert_eq!(follower.applied(), leader.applied());
        assert_eq!(state_digest(follower.ledger()).unwrap(), state_digest(leader.ledger()).unwrap());
        assert_eq!(follower.first_index().unwrap(), 5);
        let disk = follower.disk().clone();
        drop(follower);
        disk.borrow_mut().crash(0);
        let reopened = SimStorage::open(disk).unwrap();
        assert_eq!(reopened.applied().index, 4, "an install is synced");
    }

    #[test]
    fn a_crash_partway_through_a_round_loses_the_writes_not_yet_made() {
        let mut storage = bootstrapped();
        storage.disk().borrow_mut().begin_round();
        storage.append(&entries(2..=3), Some(&hard_state(1, 1)), true).unwrap();
        storage.append(&entries(4..=4), None, true).unwrap();
        let disk = storage.disk().clone();
        drop(storage);
        assert_eq!(disk.borrow().round_writes(), 2);
        assert_eq!(disk.borrow_mut().cut_round(1), 1);
        disk.borrow_mut().crash(0);
        let reopened = SimStorage::open(disk).unwrap();
        assert_eq!(reopened.last_index().unwrap(), 3, "the second append never happened");
    }

    #[test]
    fn applying_an_index_twice_is_refused() {
        let mut storage = bootstrapped();
        storage.append(&[entry(2, 1)], Some(&hard_state(1, 2)), true).unwrap();
        storage.apply(None, AppliedState::at(2, 1), None).unwrap();
        assert!(storage.apply(None, AppliedState::at(2, 1), None).is_err());
    }
}
