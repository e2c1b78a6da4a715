//! The storage a replica runs on: the one interface through which the node
//! core reaches the disk.
//!
//! [`ReplicaStorage`] is what the core needs beyond [`raft::Storage`]:
//! persist entries and hard state, apply a committed entry's changes with
//! its index in one write, compact the log, make and install snapshots.
//! [`DiskStorage`] implements it on `coffer-storage` (RocksDB); the
//! simulator implements it in memory with its own durability model.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use coffer_ledger::{Store, WriteSet};
use coffer_storage::snapshot::{self, remove_dir, SnapshotManifest, MANIFEST_FILE};
use coffer_storage::{AppliedState, LedgerState, NodeStore, StorageConfig, StorageError};
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};

/// What the node core needs from its storage, beyond [`raft::Storage`].
pub trait ReplicaStorage: raft::Storage {
    /// The ledger state the state machine reads.
    type Ledger: Store;

    /// The ledger state.
    fn ledger(&self) -> &Self::Ledger;

    /// The last entry applied to the ledger state.
    fn applied(&self) -> AppliedState;

    /// Appends `entries` (replacing a conflicting suffix) and sets
    /// `hard_state` in one write; with `sync`, returns once it is durable.
    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) -> Result<(), StorageError>;

    /// Records a new commit index (need not be synced: Raft relearns it).
    fn set_commit(&mut self, commit: u64) -> Result<(), StorageError>;

    /// Writes a committed entry's ledger changes, its index and a changed
    /// membership in one atomic write.
    fn apply(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        conf_state: Option<&ConfState>,
    ) -> Result<(), StorageError>;

    /// [`Self::apply`] for a ledger entry, with its audit records (who
    /// proposed each batch) in the same write. A storage that keeps no
    /// audit trail (the simulator's) drops them.
    fn apply_audited(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        audit: &[coffer_storage::audit::AuditRecord],
    ) -> Result<(), StorageError> {
        let _ = audit;
        self.apply(write_set, applied, None)
    }

    /// [`Self::apply`] for a membership change, with the addresses of the
    /// members it adds (`Some`: the change's context) or removes (`None`)
    /// in the same write, so that a node restarted later still reaches
    /// them. A storage that keeps no addresses (the simulator's) drops them.
    fn apply_membership(
        &mut self,
        applied: AppliedState,
        conf_state: &ConfState,
        members: &[(u64, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        let _ = members;
        self.apply(None, applied, Some(conf_state))
    }

    /// The first index still in the log.
    fn log_first_index(&self) -> u64;

    /// Removes log entries below `compact_index` (all applied).
    fn compact(&mut self, compact_index: u64) -> Result<(), StorageError>;

    /// The index of the newest snapshot this node can send (`0`: none).
    fn snapshot_index(&self) -> u64;

    /// Whether Raft asked for a snapshot this storage could not offer (none
    /// recent enough, or one whose membership lacks the peer it is for).
    fn snapshot_requested(&self) -> bool;

    /// Makes a snapshot of the ledger state at the applied index and makes it
    /// the one [`raft::Storage::snapshot`] offers.
    fn make_snapshot(&mut self) -> Result<SnapshotMetadata, StorageError>;

    /// Starts making a snapshot of the ledger state as it is now, where the
    /// storage can off the caller's thread (making one reads the whole
    /// state: seconds at ten million transfers, which the Raft thread must
    /// not spend); [`Self::snapshot_finished`] takes it up once made. A
    /// storage that cannot makes it at once (the default).
    fn start_snapshot(&mut self) -> Result<(), StorageError> {
        self.make_snapshot().map(drop)
    }

    /// Takes up the snapshot [`Self::start_snapshot`] started if it is made:
    /// it becomes the one offered. Whether one was taken up.
    fn snapshot_finished(&mut self) -> Result<bool, StorageError> {
        Ok(false)
    }

    /// Installs the snapshot Raft handed over in a Ready (its data was
    /// received and verified by the transport before the message was
    /// stepped): replaces the ledger state and resets the log to match.
    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError>;
}

/// Where snapshots live under a node's data directory: the ones it made to
/// send, and the ones it is receiving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDirs {
    root: PathBuf,
}

impl SnapshotDirs {
    /// Snapshots under `root` (usually `<data dir>/snapshots`).
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    /// The directory of the snapshot this node made at `index`.
    pub fn outgoing(&self, index: u64) -> PathBuf {
        self.root.join("out").join(format!("{index:020}"))
    }

    /// The directory a snapshot at `index`/`term` is received into.
    pub fn incoming(&self, index: u64, term: u64) -> PathBuf {
        self.root.join("in").join(format!("{index:020}-{term:020}"))
    }

    fn outgoing_root(&self) -> PathBuf {
        self.root.join("out")
    }

    /// Where a snapshot is made before its index is known (it is then
    /// renamed to [`Self::outgoing`]).
    fn staging(&self) -> PathBuf {
        self.root.join("making")
    }
}

/// A snapshot being made on a thread of its own.
#[derive(Debug)]
struct Making {
    thread: std::thread::JoinHandle<Result<SnapshotManifest, StorageError>>,
    dir: PathBuf,
}

/// The production storage: a node's RocksDB store plus its snapshot
/// directories.
#[derive(Debug)]
pub struct DiskStorage {
    store: NodeStore,
    dirs: SnapshotDirs,
    snapshot_index: u64,
    /// Set by [`raft::Storage::snapshot`] (which cannot make one: it only
    /// reads); the core makes one on its next round.
    snapshot_requested: Cell<bool>,
    /// The snapshot being made off the Raft thread, if one is.
    making: Option<Making>,
    /// Time of each apply write (measured here, at the IO edge, so the
    /// replica core reads no clock).
    apply_latency: metrics::Histogram,
}

impl DiskStorage {
    /// Writes an applied entry (its state, conf state and audit records)
    /// and records how long the write took.
    fn apply_audited_with(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        conf_state: Option<&ConfState>,
        audit: &[coffer_storage::audit::AuditRecord],
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let written = self.store.state.apply_audited(write_set, applied, conf_state, audit);
        self.apply_latency.record(started.elapsed());
        written
    }

    /// Labels this storage's metrics with the node they belong to.
    pub fn label_metrics(&mut self, node: u64) {
        self.apply_latency = metrics::histogram!("coffer_consensus_apply_latency_seconds", "node" => node.to_string());
    }

    /// Opens the store in `data_dir/db` with snapshots under
    /// `data_dir/snapshots`. If the log was compacted (or bootstrapped) and
    /// no snapshot covers its start, one is made now, so Raft can always
    /// send a peer what the log no longer holds.
    pub fn open(data_dir: &Path, config: &StorageConfig) -> Result<Self, StorageError> {
        let store = NodeStore::open(&data_dir.join("db"), config)?;
        let mut storage = Self {
            store,
            dirs: SnapshotDirs::new(&data_dir.join("snapshots")),
            snapshot_index: 0,
            snapshot_requested: Cell::new(false),
            making: None,
            apply_latency: metrics::histogram!("coffer_consensus_apply_latency_seconds"),
        };
        // A snapshot a crash interrupted while it was being made.
        remove_dir(&storage.dirs.staging())?;
        storage.load_latest_snapshot()?;
        if storage.store.log.truncated().index > storage.snapshot_index {
            storage.make_snapshot()?;
        }
        Ok(storage)
    }

    /// Makes a fresh store the first state of a cluster of `voters`
    /// (see [`NodeStore::bootstrap`]) and makes its first snapshot.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<(), StorageError> {
        self.store.bootstrap(voters)?;
        self.make_snapshot()?;
        Ok(())
    }

    /// The node's store.
    pub fn store(&self) -> &NodeStore {
        &self.store
    }

    /// The snapshot directories.
    pub fn snapshot_dirs(&self) -> &SnapshotDirs {
        &self.dirs
    }

    /// Finds the newest complete snapshot this node made before a restart.
    fn load_latest_snapshot(&mut self) -> Result<(), StorageError> {
        let root = self.dirs.outgoing_root();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(StorageError::io(&root, error)),
        };
        let mut newest: Option<SnapshotManifest> = None;
        for entry in entries {
            let path = entry.map_err(|error| StorageError::io(&root, error))?.path();
            if !path.join(MANIFEST_FILE).is_file() {
                // A snapshot a crash interrupted before its manifest: unusable.
                remove_dir(&path)?;
                continue;
            }
            let manifest = SnapshotManifest::read(&path)?;
            if newest.as_ref().is_none_or(|newest| newest.applied.index < manifest.applied.index) {
                newest = Some(manifest);
            }
        }
        if let Some(manifest) = newest {
            self.snapshot_index = manifest.applied.index;
            self.store.log.set_latest_snapshot(manifest.metadata());
        }
        Ok(())
    }
}

/// Whether `conf_state` counts `node` as a member.
fn names(conf_state: &ConfState, node: u64) -> bool {
    conf_state.voters.iter().chain(&conf_state.learners).chain(&conf_state.voters_outgoing).any(|&id| id == node)
}

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.store.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.store.log.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.store.log.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.store.log.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.store.log.last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A peer refuses a snapshot whose membership does not name it (a
        // node just added), so such a snapshot is not offered: a newer one,
        // made after the change was applied, is.
        match self.store.log.snapshot(request_index, to) {
            Ok(snapshot) if names(snapshot.get_metadata().get_conf_state(), to) => Ok(snapshot),
            Ok(_) | Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable)) => {
                self.snapshot_requested.set(true);
                Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable))
            }
            Err(error) => Err(error),
        }
    }
}

impl ReplicaStorage for DiskStorage {
    type Ledger = LedgerState;

    fn ledger(&self) -> &LedgerState {
        &self.store.state
    }

    fn applied(&self) -> AppliedState {
        self.store.state.applied()
    }

    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) -> Result<(), StorageError> {
        self.store.log.append(entries, hard_state, sync)
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        self.store.log.set_commit(commit)
    }

    fn apply(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        conf_state: Option<&ConfState>,
    ) -> Result<(), StorageError> {
        self.apply_audited_with(write_set, applied, conf_state, &[])
    }

    fn apply_audited(
        &mut self,
        write_set: Option<&WriteSet>,
        applied: AppliedState,
        audit: &[coffer_storage::audit::AuditRecord],
    ) -> Result<(), StorageError> {
        self.apply_audited_with(write_set, applied, None, audit)
    }

    fn apply_membership(
        &mut self,
        applied: AppliedState,
        conf_state: &ConfState,
        members: &[(u64, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let written = self.store.state.apply_membership(applied, conf_state, members);
        self.apply_latency.record(started.elapsed());
        written
    }

    fn log_first_index(&self) -> u64 {
        self.store.log.first_index()
    }

    fn compact(&mut self, compact_index: u64) -> Result<(), StorageError> {
        self.store.log.compact(compact_index)
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    fn snapshot_requested(&self) -> bool {
        self.snapshot_requested.get()
    }

    fn make_snapshot(&mut self) -> Result<SnapshotMetadata, StorageError> {
        self.snapshot_requested.set(false);
        let applied = self.store.state.applied().index;
        let dir = self.dirs.outgoing(applied);
        // A directory left by a crash midway through this same snapshot.
        remove_dir(&dir)?;
        let manifest = snapshot::create(self.store.state.db(), &dir)?;
        self.offer(&manifest)
    }

    fn start_snapshot(&mut self) -> Result<(), StorageError> {
        if self.making.is_some() {
            return Ok(());
        }
        self.snapshot_requested.set(false);
        let dir = self.dirs.staging();
        remove_dir(&dir)?;
        let (db, made_in) = (self.store.state.db().clone(), dir.clone());
        let thread = std::thread::Builder::new()
            .name("coffer-snapshot".into())
            .spawn(move || snapshot::create(&db, &made_in))
            .map_err(|error| StorageError::io(&dir, error))?;
        self.making = Some(Making { thread, dir });
        Ok(())
    }

    fn snapshot_finished(&mut self) -> Result<bool, StorageError> {
        let Some(making) = self.making.take_if(|making| making.thread.is_finished()) else {
            return Ok(false);
        };
        let manifest = match making.thread.join() {
            Ok(Ok(manifest)) => manifest,
            // An install replaced the state meanwhile: it made its own.
            Ok(Err(StorageError::Installing { .. })) => {
                remove_dir(&making.dir)?;
                return Ok(false);
            }
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(StorageError::Inconsistent { detail: "the thread making a snapshot panicked".into() })
            }
        };
        if manifest.applied.index <= self.snapshot_index {
            remove_dir(&making.dir)?;
            return Ok(false);
        }
        let dir = self.dirs.outgoing(manifest.applied.index);
        remove_dir(&dir)?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|error| StorageError::io(parent, error))?;
        }
        std::fs::rename(&making.dir, &dir).map_err(|error| StorageError::io(&dir, error))?;
        self.offer(&manifest)?;
        Ok(true)
    }

    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<(), StorageError> {
        // One being made holds the replaced state (or fails on the install
        // marker): it is of no use after the install.
        if let Some(making) = self.making.take() {
            let _made = making.thread.join();
            remove_dir(&making.dir)?;
        }
        let dir = self.dirs.incoming(meta.index, meta.term);
        let manifest = snapshot::install(&mut self.store.log, &mut self.store.state, &dir)?;
        if manifest.applied.index != meta.index || manifest.applied.term != meta.term {
            return Err(StorageError::Snapshot {
                path: dir,
                reason: format!(
                    "holds index {} term {}, Raft installed index {} term {}",
                    manifest.applied.index, manifest.applied.term, meta.index, meta.term
                ),
            });
        }
        remove_dir(&dir)?;
        // What this node can now send on is what it installed.
        self.make_snapshot()?;
        Ok(())
    }
}

impl DiskStorage {
    /// Makes the snapshot of `manifest`, in [`SnapshotDirs::outgoing`], the
    /// one offered; the one before it is removed.
    fn offer(&mut self, manifest: &SnapshotManifest) -> Result<SnapshotMetadata, StorageError> {
        let meta = manifest.metadata();
        self.store.log.set_latest_snapshot(meta.clone());
        let previous = self.snapshot_index;
        self.snapshot_index = manifest.applied.index;
        if previous != 0 && previous != self.snapshot_index {
            // Only the newest is offered; a transfer of the old one still
            // running fails and Raft sends the new one.
            remove_dir(&self.dirs.outgoing(previous))?;
        }
        Ok(meta)
    }
}

/// Receives a snapshot sent by a peer into the directory
/// [`SnapshotDirs::incoming`] names, chunk by chunk, verifying each; call
/// [`IncomingSnapshot::finish`] before stepping the snapshot message into
/// Raft.
#[derive(Debug)]
pub struct IncomingSnapshot {
    writer: snapshot::SnapshotWriter,
}

impl IncomingSnapshot {
    /// Starts receiving the snapshot at `index`/`term` (a partial earlier
    /// attempt at the same snapshot is discarded).
    pub fn start(dirs: &SnapshotDirs, index: u64, term: u64) -> Result<Self, StorageError> {
        let dir = dirs.incoming(index, term);
        remove_dir(&dir)?;
        Ok(Self { writer: snapshot::SnapshotWriter::new(&dir)? })
    }

    /// Writes one chunk (checked against its crc32 and position).
    pub fn write(&mut self, chunk: &snapshot::SnapshotChunk) -> Result<(), StorageError> {
        self.writer.write_chunk(chunk)
    }

    /// Verifies the whole snapshot and syncs it; returns its manifest.
    pub fn finish(self) -> Result<SnapshotManifest, StorageError> {
        self.writer.finish()
    }
}
