//! The node-local audit log: every refused call and every administrative
//! or disaster-recovery call (membership, leader transfer, snapshots,
//! region operations, reading the audit trail), one JSON object per line
//! in `audit.log` in the node's data directory — who, what, when, from
//! where, and the outcome.
//!
//! What the replicated trail holds (who proposed each committed batch and
//! region operation, the same on every node) is read with `coffer audit`;
//! this log holds what one node saw and refused, which no other node saw.
//! Lines go through a bounded queue to one writer task, so a slow disk
//! never holds a request up; a line that does not fit is counted
//! (`coffer_audit_log_dropped_total`) and the next line written says how
//! many were dropped. The file is rotated to `audit.log.1` past
//! [`AUDIT_LOG_BYTES_MAX`].

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

/// Lines waiting for the writer before new ones are dropped.
pub const AUDIT_LOG_QUEUE_MAX: usize = 4_096;
/// The size past which `audit.log` is rotated to `audit.log.1`.
pub const AUDIT_LOG_BYTES_MAX: u64 = 64 << 20;
/// The log's file name in the data directory.
pub const AUDIT_LOG_FILE: &str = "audit.log";

/// One line of the log.
#[derive(Clone, Debug, Serialize)]
pub struct LocalAuditEntry {
    /// When (ms since the UNIX epoch, this node's clock).
    pub time_ms: u64,
    /// The node that served (or refused) the call.
    pub node: u64,
    /// The principal (`anonymous`, `node:ID`, a client's name), or the
    /// certificate's identity when no principal was resolved.
    pub principal: String,
    /// The method (`/coffer.dr.v1.DrService/Promote`).
    pub method: String,
    /// `ok`, `refused` (by the access check), or the gRPC code the call
    /// ended with.
    pub outcome: String,
    /// Why, for a refusal.
    pub detail: String,
    /// The peer's address.
    pub remote: String,
}

/// The log of one node.
#[derive(Debug)]
pub struct AuditLog {
    sender: mpsc::Sender<LocalAuditEntry>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the writer thread of `dir/audit.log` (appending; file writes
    /// block, so they stay off the async workers).
    pub fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        let path = dir.join(AUDIT_LOG_FILE);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let (sender, receiver) = mpsc::channel(AUDIT_LOG_QUEUE_MAX);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("coffer-audit-log".into())
            .spawn(move || write(&path, file, receiver, &lost))?;
        Ok(Arc::new(Self { sender, dropped }))
    }

    /// Queues `entry`; drops it (counted) if the queue is full.
    pub fn record(&self, entry: LocalAuditEntry) {
        if self.sender.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("coffer_audit_log_dropped_total").increment(1);
        }
    }
}

/// The current time in ms since the UNIX epoch (0 before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// The writer thread: ends when every sender is gone (the server stopped).
fn write(path: &Path, mut file: std::fs::File, mut entries: mpsc::Receiver<LocalAuditEntry>, dropped: &AtomicU64) {
    let mut written = file.metadata().map_or(0, |meta| meta.len());
    while let Some(entry) = entries.blocking_recv() {
        let mut lines = Vec::new();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            lines.push(serde_json::json!({ "time_ms": now_ms(), "dropped": lost }).to_string());
        }
        lines.push(serde_json::to_string(&entry).unwrap_or_default());
        while let Ok(entry) = entries.try_recv() {
            lines.push(serde_json::to_string(&entry).unwrap_or_default());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        if written + text.len() as u64 > AUDIT_LOG_BYTES_MAX {
            match rotate(path) {
                Ok(fresh) => (file, written) = (fresh, 0),
                Err(error) => tracing::error!(path = %path.display(), %error, "the audit log could not be rotated"),
            }
        }
        match file.write_all(text.as_bytes()) {
            Ok(()) => written += text.len() as u64,
            Err(error) => tracing::error!(path = %path.display(), %error, "the audit log could not be written"),
        }
    }
}

fn rotate(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::rename(path, path.with_extension("log.1"))?;
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}
