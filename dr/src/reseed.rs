//! Re-seeding a region from a checkpoint of the other region's primary.
//!
//! A region that cannot follow the primary by shipping (it diverged after a
//! failover, or the primary compacted entries it needs) is rebuilt: the
//! primary makes a checkpoint (a verified backup at its applied index K),
//! every node of the region downloads it and prepares it as the entry K of
//! its own Raft group (its own membership, a term above every term it
//! used, the region a standby of the primary's epoch with cursor K), and
//! then restarts: before the node starts, the prepared snapshot is
//! installed, crash-safely, like a snapshot from a leader. The region comes
//! back with every node at the same state and an empty log after K, and
//! ships from K + 1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_storage::snapshot::{self, remove_dir, SnapshotChunk, SnapshotWriter};
use coffer_storage::{AppliedState, NodeStore, RegionRole, RegionState, StorageConfig, StorageError};
use tokio_stream::StreamExt as _;

use crate::proto::dr_service_client::DrServiceClient;
use crate::proto::FetchCheckpointRequest;
use crate::standby::CONNECT_TIMEOUT_MS;
use crate::SHIP_MESSAGE_BYTES_MAX;

/// The directory of a node's re-seed work, under its data directory.
const RESEED_DIR: &str = "dr-reseed";
/// The file whose presence says the prepared snapshot is to be installed.
const READY_FILE: &str = "READY";
/// The directory of the checkpoints a primary made for re-seeding.
pub(crate) const CHECKPOINTS_DIR: &str = "dr-checkpoints";
/// Checkpoints a node keeps (older ones are removed when one is made).
pub(crate) const CHECKPOINTS_KEPT: usize = 2;
/// Bytes per chunk of a checkpoint in transit.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

fn prepared_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(RESEED_DIR).join("prepared")
}

fn remove_file(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io(path, error)),
    }
}

/// Downloads checkpoint `name` from `source` into `target` (which must not
/// exist), checking every chunk and then the whole against its manifest.
pub(crate) async fn download(
    security: &coffer_security::Security,
    source: &str,
    name: &str,
    target: &Path,
) -> Result<(), String> {
    let endpoint = coffer_security::tls::endpoint(source, Duration::from_millis(CONNECT_TIMEOUT_MS))
        .map_err(|error| format!("{source}: {error}"))?;
    let channel = security
        .connect(endpoint, coffer_security::Expect::Node(None))
        .await
        .map_err(|error| format!("{source}: {error}"))?;
    let mut client = DrServiceClient::new(channel).max_decoding_message_size(SHIP_MESSAGE_BYTES_MAX);
    let mut stream = client
        .fetch_checkpoint(FetchCheckpointRequest { name: name.to_owned() })
        .await
        .map_err(|status| format!("FetchCheckpoint at {source}: {:?}: {}", status.code(), status.message()))?
        .into_inner();
    let mut writer = SnapshotWriter::new(target).map_err(|error| error.to_string())?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|status| format!("FetchCheckpoint at {source}: {}", status.message()))?;
        let chunk = SnapshotChunk { file: chunk.file, offset: chunk.offset, data: chunk.data, crc32: chunk.crc32 };
        writer.write_chunk(&chunk).map_err(|error| error.to_string())?;
    }
    writer.finish().map_err(|error| error.to_string())?;
    Ok(())
}

/// Prepares the downloaded checkpoint in `download` as entry `index` (term
/// `term`) of this node's group, whose membership is `conf_state`, the
/// region a standby of `epoch` with cursor `index`.
pub(crate) fn prepare(
    data_dir: &Path,
    download: &Path,
    index: u64,
    term: u64,
    epoch: u64,
    conf_state: &coffer_consensus::raft::prelude::ConfState,
) -> Result<(), StorageError> {
    let target = prepared_dir(data_dir);
    remove_file(&data_dir.join(RESEED_DIR).join(READY_FILE))?;
    remove_dir(&target)?;
    let region = RegionState { epoch, role: RegionRole::Standby, cursor: index, ..RegionState::default() };
    let applied = AppliedState { index, term, region };
    snapshot::prepare_reseed(download, &target, applied, conf_state, &StorageConfig::default())?;
    remove_dir(download)
}

/// Marks the prepared snapshot for installation at the next start.
pub(crate) fn mark_ready(data_dir: &Path) -> Result<(), StorageError> {
    let prepared = prepared_dir(data_dir);
    snapshot::SnapshotManifest::read(&prepared)?;
    let ready = data_dir.join(RESEED_DIR).join(READY_FILE);
    std::fs::write(&ready, b"install prepared\n").map_err(|error| StorageError::io(&ready, error))?;
    std::fs::File::open(&ready).and_then(|file| file.sync_all()).map_err(|error| StorageError::io(&ready, error))
}

/// The download directory of a re-seed (fresh for each).
pub(crate) fn download_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(RESEED_DIR).join("download")
}

/// Before a node starts: installs a prepared re-seed marked ready (its
/// state replaced, its log emptied after the re-seed index, its old
/// snapshots removed) and returns the index it installed. A crash midway
/// is resumed by the store itself (the install's redo marker) and by this,
/// which runs again while the ready mark exists.
pub fn install_pending(data_dir: &Path, config: &StorageConfig) -> Result<Option<u64>, StorageError> {
    let dir = data_dir.join(RESEED_DIR);
    if !dir.join(READY_FILE).exists() {
        return Ok(None);
    }
    let prepared = prepared_dir(data_dir);
    let mut store = NodeStore::open(&data_dir.join("db"), config)?;
    let manifest = snapshot::install(&mut store.log, &mut store.state, &prepared)?;
    // The region's log starts over after the re-seed index: nothing past it
    // is committed, and no vote was cast in the new term.
    let mut hard_state = store.log.hard_state().clone();
    hard_state.term = hard_state.term.max(manifest.applied.term);
    hard_state.vote = 0;
    hard_state.commit = manifest.applied.index;
    store.log.append(&[], Some(&hard_state), true)?;
    drop(store);
    // Snapshots of the old state must not be offered to peers.
    remove_dir(&data_dir.join("snapshots"))?;
    remove_file(&dir.join(READY_FILE))?;
    remove_dir(&dir)?;
    Ok(Some(manifest.applied.index))
}
