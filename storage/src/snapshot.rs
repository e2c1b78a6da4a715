//! Snapshots and backups of the ledger state.
//!
//! A snapshot is a directory: `db/`, a RocksDB checkpoint of the node's
//! store (hard links where possible, taken at one consistent point), and
//! `MANIFEST.coffer`, which names the applied index, term and conf state the
//! checkpoint holds and every file's size and crc32, and ends with a crc32 of
//! itself. The same directory is an offline backup.
//!
//! - [`create`] makes one from a running store;
//! - [`SnapshotReader`] reads one out in bounded chunks, and
//!   [`SnapshotWriter`] receives those chunks on another node, checking each;
//! - [`install`] verifies every checksum, then replaces the node's state
//!   column families with the snapshot's and sets the Raft state to match.
//!
//! Installing is made atomic by redo: a marker naming the snapshot is written
//! (synced) first and removed in the final write; a node that crashes in
//! between finishes the install when it opens again, before it serves
//! anything. A node never starts on a snapshot it could not verify.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use raft::prelude::{ConfState, SnapshotMetadata};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::WriteBatch;

use crate::db::{
    Db, CF_META, CF_RAFT_STATE, KEY_APPLIED, KEY_CONF_STATE, KEY_FORMAT, KEY_SNAPSHOT_INSTALL, STATE_COLUMN_FAMILIES,
};
use crate::error::StorageError;
use crate::frame::unframe;
use crate::log::{decode_message, encode_message, LogStore};
use crate::state::{AppliedState, LedgerState};

/// The manifest's file name inside a snapshot directory.
pub const MANIFEST_FILE: &str = "MANIFEST.coffer";
/// The checkpoint's directory inside a snapshot directory.
pub const CHECKPOINT_DIR: &str = "db";
const MANIFEST_MAGIC: &str = "coffer-snapshot v1";
/// Bytes of state copied per write while installing.
const INSTALL_BATCH_BYTES: usize = 8 << 20;

/// One file of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its path inside the snapshot directory (`db/000012.sst`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The crc32 of its bytes.
    pub crc32: u32,
}

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotManifest {
    /// The last Raft entry applied to the state.
    pub applied: AppliedState,
    /// The membership at that entry.
    pub conf_state: ConfState,
    /// Every file of the checkpoint.
    pub files: Vec<SnapshotFile>,
}

fn snapshot_error(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Snapshot { path: path.to_owned(), reason: reason.into() }
}

fn hex_bytes(bytes: &[u8]) -> String {
    crate::frame::hex(bytes)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

/// Whether `name` is a relative path inside the snapshot (no `..`, not absolute).
fn is_inside(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty() && path.components().all(|component| matches!(component, Component::Normal(_)))
}

impl SnapshotManifest {
    /// The Raft metadata of the snapshot.
    pub fn metadata(&self) -> SnapshotMetadata {
        let mut meta = SnapshotMetadata { index: self.applied.index, term: self.applied.term, ..Default::default() };
        meta.set_conf_state(self.conf_state.clone());
        meta
    }

    /// The manifest as text, ending with a crc32 of what precedes it.
    pub fn encode(&self) -> Result<String, StorageError> {
        let mut text = format!(
            "{MANIFEST_MAGIC}\napplied_index {}\napplied_term {}\nconf_state {}\n",
            self.applied.index,
            self.applied.term,
            hex_bytes(&encode_message(&self.conf_state)?)
        );
        for file in &self.files {
            text.push_str(&format!("file {} {} {:08x}\n", file.name, file.size, file.crc32));
        }
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("crc {crc:08x}\n"));
        Ok(text)
    }

    /// Parses and verifies a manifest read from `path`.
    pub fn decode(path: &Path, text: &str) -> Result<Self, StorageError> {
        let bad = |reason: String| snapshot_error(path, reason);
        let body_end = text.rfind("crc ").ok_or_else(|| bad("manifest has no crc line".into()))?;
        let (body, crc_line) = text.split_at(body_end);
        let stored = crc_line
            .trim_end()
            .strip_prefix("crc ")
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| bad(format!("manifest crc line {crc_line:?} is malformed")))?;
        let computed = crc32fast::hash(body.as_bytes());
        if stored != computed {
            return Err(bad(format!("manifest crc32 mismatch: stored {stored:08x}, computed {computed:08x}")));
        }
        let mut lines = body.lines();
        if lines.next() != Some(MANIFEST_MAGIC) {
            return Err(bad(format!("manifest does not start with {MANIFEST_MAGIC:?}")));
        }
        let mut field = |name: &str| -> Result<String, StorageError> {
            lines
                .next()
                .and_then(|line| line.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("manifest is missing {name}")))
        };
        let number =
            |name: &str, text: String| text.parse::<u64>().map_err(|_| bad(format!("{name} {text:?} is not a number")));
        let index = number("applied_index", field("applied_index")?)?;
        let term = number("applied_term", field("applied_term")?)?;
        let conf_hex = field("conf_state")?;
        let conf_state = unhex(&conf_hex).ok_or_else(|| bad("conf_state is not hex".into())).and_then(|bytes| {
            decode_message::<ConfState>(&bytes).map_err(|reason| bad(format!("conf_state {reason}")))
        })?;
        let mut files = Vec::new();
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            let [kind, name, size, crc] = parts.as_slice() else {
                return Err(bad(format!("manifest line {line:?} is malformed")));
            };
            let size = size.parse::<u64>().ok();
            let crc = u32::from_str_radix(crc, 16).ok();
            match (*kind, size, crc) {
                ("file", Some(size), Some(crc32)) if is_inside(name) => {
                    files.push(SnapshotFile { name: (*name).to_owned(), size, crc32 })
                }
                _ => return Err(bad(format!("manifest line {line:?} is malformed"))),
            }
        }
        Ok(Self { applied: AppliedState::at(index, term), conf_state, files })
    }

    /// Reads and verifies the manifest of the snapshot in `dir`.
    pub fn read(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|error| StorageError::io(&path, error))?;
        Self::decode(&path, &text)
    }

    /// Checks that every file in `dir` the manifest lists has its size and
    /// crc32, and that the checkpoint holds no file it does not list.
    pub fn verify_files(&self, dir: &Path) -> Result<(), StorageError> {
        for file in &self.files {
            let path = dir.join(&file.name);
            let (size, crc32) = file_checksum(&path)?;
            if size != file.size || crc32 != file.crc32 {
                return Err(snapshot_error(
                    &path,
                    format!(
                        "size {size} crc32 {crc32:08x}; the manifest says size {} crc32 {:08x}",
                        file.size, file.crc32
                    ),
                ));
            }
        }
        for name in list_files(&dir.join(CHECKPOINT_DIR))? {
            if !self.files.iter().any(|file| file.name == name) {
                return Err(snapshot_error(&dir.join(&name), "file is not in the manifest"));
            }
        }
        Ok(())
    }
}

/// The size and crc32 of a file.
fn file_checksum(path: &Path) -> Result<(u64, u32), StorageError> {
    let mut file = File::open(path).map_err(|error| StorageError::io(path, error))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0; 1 << 16];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(|error| StorageError::io(path, error))?;
        if read == 0 {
            return Ok((size, hasher.finalize()));
        }
        hasher.update(buffer.get(..read).unwrap_or_default());
        size += read as u64;
    }
}

/// The files of a checkpoint directory, as `db/<name>`, sorted.
fn list_files(dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|error| StorageError::io(dir, error))? {
        let entry = entry.map_err(|error| StorageError::io(dir, error))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| snapshot_error(dir, format!("file name {name:?} is not UTF-8")))?;
        if !entry.file_type().map_err(|error| StorageError::io(entry.path(), error))?.is_file() {
            return Err(snapshot_error(&entry.path(), "a checkpoint holds only files"));
        }
        names.push(format!("{CHECKPOINT_DIR}/{name}"));
    }
    names.sort();
    Ok(names)
}

/// Removes the directory `path` and everything in it; one that is not
/// there is already removed.
pub fn remove_dir(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io(path, error)),
    }
}

fn sync_file(path: &Path) -> Result<(), StorageError> {
    File::open(path).and_then(|file| file.sync_all()).map_err(|error| StorageError::io(path, error))
}

/// Reads the applied state and conf state a store holds.
fn read_applied(db: &Db) -> Result<(AppliedState, ConfState), StorageError> {
    let applied = db.latest().get_decoded(CF_META, KEY_APPLIED, AppliedState::decode)?.unwrap_or_default();
    let conf_state =
        db.latest().get_decoded(CF_RAFT_STATE, KEY_CONF_STATE, decode_message::<ConfState>)?.unwrap_or_default();
    Ok((applied, conf_state))
}

/// Creates a snapshot of the store `db` in `dir` (which must not exist) at
/// its current applied index. Safe on any thread while the node applies:
/// the checkpoint is of one point, and a checkpoint taken while a snapshot
/// install is replacing the state is refused ([`StorageError::Installing`])
/// and removed.
pub fn create(db: &Db, dir: &Path) -> Result<SnapshotManifest, StorageError> {
    if dir.exists() {
        return Err(snapshot_error(dir, "the snapshot directory already exists"));
    }
    std::fs::create_dir_all(dir).map_err(|error| StorageError::io(dir, error))?;
    let checkpoint_dir = dir.join(CHECKPOINT_DIR);
    Checkpoint::new(db.rocksdb())?.create_checkpoint(&checkpoint_dir)?;
    // Read what the checkpoint itself holds: its state and applied index
    // were written together, so they describe one point.
    let checkpoint = Db::open_read_only(&checkpoint_dir)?;
    if interrupted_install(&checkpoint)?.is_some() {
        drop(checkpoint);
        remove_dir(dir)?;
        return Err(StorageError::Installing { path: db.path().to_owned() });
    }
    let (applied, conf_state) = read_applied(&checkpoint)?;
    drop(checkpoint);
    let mut files = Vec::new();
    for name in list_files(&checkpoint_dir)? {
        let (size, crc32) = file_checksum(&dir.join(&name))?;
        files.push(SnapshotFile { name, size, crc32 });
    }
    let manifest = SnapshotManifest { applied, conf_state, files };
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, manifest.encode()?).map_err(|error| StorageError::io(&path, error))?;
    sync_file(&path)?;
    Ok(manifest)
}

/// Makes, in `target` (which must not exist), a snapshot of the ledger in
/// the snapshot at `source` as the entry `applied` of another Raft group
/// whose membership is `conf_state`: disaster recovery re-seeds a region
/// from a snapshot of the other region's primary this way. The source is
/// verified first (every file against its manifest); its checkpoint is then
/// opened and changed (`source` is consumed: it is the caller's copy).
/// Installing `target` with [`install`] replaces a node's state with the
/// source's ledger, and its Raft log with an empty one after `applied`.
pub fn prepare_reseed(
    source: &Path,
    target: &Path,
    applied: AppliedState,
    conf_state: &ConfState,
    config: &crate::StorageConfig,
) -> Result<SnapshotManifest, StorageError> {
    let manifest = SnapshotManifest::read(source)?;
    manifest.verify_files(source)?;
    if manifest.applied.index != applied.index {
        return Err(snapshot_error(
            source,
            format!("holds index {}, the re-seed is for index {}", manifest.applied.index, applied.index),
        ));
    }
    let store = crate::NodeStore::open(&source.join(CHECKPOINT_DIR), config)?;
    let db = store.state.db();
    let mut batch = WriteBatch::default();
    db.put(&mut batch, CF_META, KEY_APPLIED, &applied.encode())?;
    db.put(&mut batch, CF_RAFT_STATE, KEY_CONF_STATE, &encode_message(conf_state)?)?;
    db.write(batch, true)?;
    create(store.state.db(), target)
}

/// One chunk of a snapshot in transit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The file inside the snapshot directory (the manifest comes first).
    pub file: String,
    /// Where in the file `data` starts.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// The crc32 of `data`.
    pub crc32: u32,
}

/// Reads a snapshot out as chunks of at most `chunk_bytes`: the manifest
/// first, then every file in manifest order.
#[derive(Debug)]
pub struct SnapshotReader {
    dir: PathBuf,
    /// Files still to send, the current one first.
    pending: Vec<String>,
    offset: u64,
    chunk_bytes: usize,
}

impl SnapshotReader {
    /// A reader of the verified snapshot in `dir`.
    pub fn open(dir: &Path, chunk_bytes: usize) -> Result<Self, StorageError> {
        let manifest = SnapshotManifest::read(dir)?;
        let mut pending: Vec<String> = manifest.files.into_iter().map(|file| file.name).rev().collect();
        pending.push(MANIFEST_FILE.to_owned());
        Ok(Self { dir: dir.to_owned(), pending, offset: 0, chunk_bytes: chunk_bytes.max(1) })
    }

    /// The next chunk, or `None` when everything was read.
    pub fn next_chunk(&mut self) -> Result<Option<SnapshotChunk>, StorageError> {
        while let Some(name) = self.pending.last().cloned() {
            let path = self.dir.join(&name);
            let mut file = File::open(&path).map_err(|error| StorageError::io(&path, error))?;
            file.seek(SeekFrom::Start(self.offset)).map_err(|error| StorageError::io(&path, error))?;
            let mut data = Vec::with_capacity(self.chunk_bytes);
            file.take(self.chunk_bytes as u64)
                .read_to_end(&mut data)
                .map_err(|error| StorageError::io(&path, error))?;
            let empty_file = self.offset == 0 && data.is_empty();
            if data.is_empty() && !empty_file {
                self.pending.pop();
                self.offset = 0;
                continue;
            }
            let chunk = SnapshotChunk { file: name, offset: self.offset, crc32: crc32fast::hash(&data), data };
            self.offset += chunk.data.len() as u64;
            if empty_file || chunk.data.len() < self.chunk_bytes {
                self.pending.pop();
                self.offset = 0;
            }
            return Ok(Some(chunk));
        }
        Ok(None)
    }
}

/// Receives a snapshot's chunks into a staging directory, checking each.
#[derive(Debug)]
pub struct SnapshotWriter {
    dir: PathBuf,
}

impl SnapshotWriter {
    /// A writer into `dir`, which must not exist yet.
    pub fn new(dir: &Path) -> Result<Self, StorageError> {
        if dir.exists() {
            return Err(snapshot_error(dir, "the staging directory already exists"));
        }
        std::fs::create_dir_all(dir.join(CHECKPOINT_DIR)).map_err(|error| StorageError::io(dir, error))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Writes one chunk, after checking its crc, its file name and that it
    /// continues its file exactly where the previous chunk ended.
    pub fn write_chunk(&mut self, chunk: &SnapshotChunk) -> Result<(), StorageError> {
        let name_ok = chunk.file == MANIFEST_FILE
            || (chunk.file.starts_with(&format!("{CHECKPOINT_DIR}/"))
                && is_inside(&chunk.file)
                && Path::new(&chunk.file).components().count() == 2);
        if !name_ok {
            return Err(snapshot_error(&self.dir, format!("chunk names file {:?}, outside the snapshot", chunk.file)));
        }
        let path = self.dir.join(&chunk.file);
        let computed = crc32fast::hash(&chunk.data);
        if computed != chunk.crc32 {
            return Err(snapshot_error(
                &path,
                format!("chunk at offset {} has crc32 {computed:08x}, expected {:08x}", chunk.offset, chunk.crc32),
            ));
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| StorageError::io(&path, error))?;
        let size = file.metadata().map_err(|error| StorageError::io(&path, error))?.len();
        if size != chunk.offset {
            return Err(snapshot_error(
                &path,
                format!("chunk starts at offset {}, but the file has {size} bytes", chunk.offset),
            ));
        }
        file.write_all(&chunk.data).map_err(|error| StorageError::io(&path, error))?;
        Ok(())
    }

    /// Verifies the received snapshot (manifest, every file's size and crc32)
    /// and syncs it to disk.
    pub fn finish(self) -> Result<SnapshotManifest, StorageError> {
        let manifest = SnapshotManifest::read(&self.dir)?;
        manifest.verify_files(&self.dir)?;
        for file in &manifest.files {
            sync_file(&self.dir.join(&file.name))?;
        }
        Ok(manifest)
    }
}

/// Installs the snapshot in `dir` into this node: verifies it, replaces the
/// state column families, and sets the Raft state to match (log emptied and
/// truncated at the snapshot, conf state replaced). See the module docs for
/// how a crash midway is survived.
pub fn install(log: &mut LogStore, state: &mut LedgerState, dir: &Path) -> Result<SnapshotManifest, StorageError> {
    let manifest = SnapshotManifest::read(dir)?;
    manifest.verify_files(dir)?;
    let source = Db::open_read_only(&dir.join(CHECKPOINT_DIR))?;
    let (applied, conf_state) = read_applied(&source)?;
    let same_entry = (applied.index, applied.term) == (manifest.applied.index, manifest.applied.term);
    if !same_entry || conf_state != manifest.conf_state {
        return Err(snapshot_error(
            dir,
            format!("checkpoint holds applied {applied:?}, the manifest says {:?}", manifest.applied),
        ));
    }
    let db = state.db().clone();
    // The marker must name the snapshot however the node is started next.
    let dir = &std::fs::canonicalize(dir).map_err(|error| StorageError::io(dir, error))?;
    let dir_text = dir.to_str().ok_or_else(|| snapshot_error(dir, "path is not UTF-8"))?;
    let mut marker = WriteBatch::default();
    db.put(&mut marker, CF_RAFT_STATE, KEY_SNAPSHOT_INSTALL, dir_text.as_bytes())?;
    db.write(marker, true)?;
    replace_state(&db, &source)?;
    let mut last = WriteBatch::default();
    let hard_state = log.stage_snapshot(&mut last, &manifest.metadata())?;
    last.delete_cf(db.cf(CF_RAFT_STATE)?, KEY_SNAPSHOT_INSTALL);
    db.write(last, true)?;
    log.snapshot_installed(&manifest.metadata(), hard_state);
    state.reload()?;
    Ok(manifest)
}

/// Deletes every record of the state column families of `db` and copies in
/// those of `source`, verifying each frame, in bounded writes.
fn replace_state(db: &Db, source: &Db) -> Result<(), StorageError> {
    // Every key Coffer writes is at most 24 bytes, so this bounds them all.
    let end = [0xFF; 32];
    let mut batch = WriteBatch::default();
    for cf in STATE_COLUMN_FAMILIES {
        let handle = db.cf(cf)?;
        if cf == CF_META {
            // Keep the format marker: a crash before the copy below must
            // leave a store that opens, so that it can finish this install.
            let after_format = [KEY_FORMAT, &[0]].concat();
            batch.delete_range_cf(handle, [].as_slice(), KEY_FORMAT);
            batch.delete_range_cf(handle, after_format.as_slice(), end.as_slice());
        } else {
            batch.delete_range_cf(handle, [].as_slice(), end.as_slice());
        }
    }
    db.write(batch, false)?;
    for cf in STATE_COLUMN_FAMILIES {
        let target = db.cf(cf)?;
        let mut batch = WriteBatch::default();
        let mut iter = source.rocksdb().raw_iterator_cf_opt(source.cf(cf)?, crate::db::read_options());
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            unframe(cf, key, value)?;
            batch.put_cf(target, key, value);
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                db.write(std::mem::take(&mut batch), false)?;
            }
            iter.next();
        }
        iter.status()?;
        db.write(batch, false)?;
    }
    Ok(())
}

/// The snapshot directory of an install that a crash interrupted, if any.
pub fn interrupted_install(db: &Db) -> Result<Option<PathBuf>, StorageError> {
    Ok(db
        .latest()
        .get(CF_RAFT_STATE, KEY_SNAPSHOT_INSTALL)?
        .map(|bytes| PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())))
}
