//! Why a run failed, with what the user needs to look into it.

use std::path::PathBuf;
use std::process::ExitStatus;

use coffer_api::client::ClientError;

/// A failure of `coffer bench` (a run that did not validate is not an
/// error: it returns its report, which says why).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The `coffer` executable that runs the local cluster is missing.
    #[error("{path} does not exist: build it (cargo build --workspace --bins) or name it with --coffer")]
    CofferMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No free ports for the local cluster.
    #[error("no free base port for the local cluster after {tries} tries")]
    NoFreePorts {
        /// Base ports tried.
        tries: u32,
    },
    /// `coffer dev` exited while the run needed it.
    #[error("the local cluster (coffer dev) exited with {status}; its output {log} ends: {tail}")]
    ClusterExited {
        /// How it exited.
        status: ExitStatus,
        /// Its output.
        log: PathBuf,
        /// The last line of its output.
        tail: String,
    },
    /// The cluster did not become ready in time.
    #[error("the cluster was not ready within {waited_ms} ms: {last}")]
    NotReady {
        /// How long was waited.
        waited_ms: u64,
        /// The last thing seen.
        last: String,
    },
    /// The cluster refused the ledgers or accounts of the run.
    #[error("setting up the run: {0}")]
    Setup(String),
    /// A call failed for good.
    #[error("{what}: {source}")]
    Client {
        /// What was being done.
        what: String,
        /// The client's error.
        source: ClientError,
    },
    /// A batch could not be delivered: its outcome is unknown.
    #[error("batch {number} ({transfers} transfers) failed {attempts} times, the last with: {source}")]
    Batch {
        /// The batch's number.
        number: u64,
        /// Its transfers.
        transfers: usize,
        /// Tries made.
        attempts: u32,
        /// The last failure.
        source: ClientError,
    },
    /// A sending task failed on its own.
    #[error("a sending task failed: {0}")]
    Task(String),
    /// The local cluster did not stop cleanly.
    #[error("stopping the local cluster: {0}")]
    Stop(String),
    /// A failure with the local cluster's data and logs kept for a look.
    #[error("{source} (the local cluster's data and logs are kept in {dir})")]
    Kept {
        /// The failure.
        source: Box<BenchError>,
        /// Where the data and logs are.
        dir: PathBuf,
    },
}

impl BenchError {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// A client failure while doing `what`.
    pub fn client(what: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let what = what.into();
        move |source| Self::Client { what, source }
    }
}
