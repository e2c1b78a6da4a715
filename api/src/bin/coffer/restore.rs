//! `coffer restore`: a node's data directory made from a backup (`coffer
//! snapshot`, or a DR checkpoint), offline. Every file of the backup is
//! checked against its manifest first; the data directory must be missing or
//! empty, so a restore never overwrites a store.
//!
//! The restored store holds the backup's ledger, applied index and
//! membership, and an empty Raft log after that index. Started with the
//! same node id as before, the node rejoins its cluster and catches up from
//! the leader (by log or snapshot); the README's runbook gives the steps for
//! one node and for a whole cluster.

use std::path::PathBuf;

use coffer_storage::{NodeStore, StorageConfig, StorageError};
use serde::Serialize;

/// `coffer restore`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup: a directory `coffer snapshot --dir` made.
    #[arg(long, value_name = "DIR")]
    pub backup: PathBuf,
    /// The node's data directory to create (missing or empty); the store goes
    /// to its `db/`, as `coffer node` expects.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Why a restore failed; nothing was written to a non-empty directory.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The data directory holds something already.
    #[error("{0} is not empty: restore makes a new data directory and never overwrites one")]
    NotEmpty(PathBuf),
    /// Reading the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The backup failed verification, or the store could not be made.
    #[error("restoring {backup} into {db}: {source}")]
    Store {
        /// The backup directory.
        backup: PathBuf,
        /// The store directory.
        db: PathBuf,
        /// What failed.
        source: StorageError,
    },
}

/// What a restore made.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The store directory written.
    pub db: PathBuf,
    /// The applied index the store holds.
    pub applied_index: u64,
    /// Its term.
    pub applied_term: u64,
    /// The voters of the membership it holds.
    pub voters: Vec<u64>,
    /// The learners of that membership.
    pub learners: Vec<u64>,
}

/// Restores `args.backup` into `args.data_dir/db`.
pub fn run(args: &RestoreArgs) -> Result<RestoreReport, RestoreError> {
    match std::fs::read_dir(&args.data_dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => return Err(RestoreError::NotEmpty(args.data_dir.clone())),
        Ok(false) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(RestoreError::Io { path: args.data_dir.clone(), source }),
    }
    let db = args.data_dir.join("db");
    let store_error = |source| RestoreError::Store { backup: args.backup.clone(), db: db.clone(), source };
    let store = NodeStore::restore(&args.backup, &db, &StorageConfig::default()).map_err(store_error)?;
    let applied = store.state.applied();
    let conf_state = store.log.conf_state().map_err(store_error)?;
    Ok(RestoreReport {
        db: db.clone(),
        applied_index: applied.index,
        applied_term: applied.term,
        voters: conf_state.voters,
        learners: conf_state.learners,
    })
}

/// The report as text.
pub fn render_text(report: &RestoreReport) -> String {
    format!(
        "restored {} at applied index {} (term {}); voters {:?}, learners {:?}\n\
         restore every node of the cluster from this same backup, then start each with its own node id \
         (README: Backups and restores)\n",
        report.db.display(),
        report.applied_index,
        report.applied_term,
        report.voters,
        report.learners
    )
}
