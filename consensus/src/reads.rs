//! The read pool: where a node's reads run, off its driver thread.
//!
//! The driver thread does only Raft (tick, step, persist, send, apply). A
//! read is admitted by its [`NodeHandle`](crate::NodeHandle) (at most
//! [`ReadLimits::admitted_max`] at once, counting those waiting for their
//! read index), then, once it may run — at once for a stale read; for a
//! linearizable one when the driver has applied its read index — it runs
//! on tokio's blocking threads, at most [`ReadLimits::running_max`] at
//! once, against a [`ReadView`]: a RocksDB snapshot opened when the read
//! starts. The view holds the applied index it was taken at, which is what
//! the read answers with.
//!
//! Why this is linearizable: the driver completes a ReadIndex read only
//! after it has written every entry up to the read index, and the view is
//! opened after that completion, so it holds at least that index.
//!
//! The pool holds the store only weakly: once the node stops, reads that
//! have not started fail as stopped, and the driver waits for those running
//! to finish before it reports the store closed.

use std::sync::{Arc, Weak};

use coffer_storage::{Db, ReadView};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::driver::RequestError;

/// Default of [`ReadLimits::running_max`].
pub const READS_RUNNING_MAX_DEFAULT: usize = 4;
/// Default of [`ReadLimits::admitted_max`].
pub const READS_ADMITTED_MAX_DEFAULT: usize = 1_024;

/// The bounds on a node's reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Reads running at once (each on a blocking thread, against its own
    /// snapshot). More wait for a slot.
    pub running_max: usize,
    /// Reads admitted at once: running, waiting for a slot, or waiting for
    /// their read index. One more is refused as overloaded (retryable).
    pub admitted_max: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self { running_max: READS_RUNNING_MAX_DEFAULT, admitted_max: READS_ADMITTED_MAX_DEFAULT }
    }
}

/// A read, run against a view (or told why it cannot run).
pub(crate) type ReadJob = Box<dyn FnOnce(Result<&ReadView<'_>, RequestError>) + Send>;

/// Work on the store itself (a checkpoint), run on the pool like a read.
pub(crate) type StoreTask = Box<dyn FnOnce(Result<&Db, RequestError>) + Send>;

/// A node's read pool; cheap to clone (every clone is the same pool).
#[derive(Clone, Debug)]
pub(crate) struct ReadPool {
    node: u64,
    db: Weak<Db>,
    runtime: tokio::runtime::Handle,
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    admitted_max: usize,
}

impl ReadPool {
    /// A pool reading `db`, running its reads on `runtime`'s blocking threads.
    pub(crate) fn new(node: u64, db: &Arc<Db>, runtime: tokio::runtime::Handle, limits: ReadLimits) -> Self {
        Self {
            node,
            db: Arc::downgrade(db),
            runtime,
            running: Arc::new(Semaphore::new(limits.running_max)),
            admitted: Arc::new(Semaphore::new(limits.admitted_max)),
            admitted_max: limits.admitted_max,
        }
    }

    /// Admits one more read, or refuses it when [`ReadLimits::admitted_max`]
    /// are already admitted. The read holds the permit until it ends.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        self.admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| RequestError::Overloaded { node: self.node, capacity: self.admitted_max })
    }

    /// Runs `job` against a view of the store as it is when the job starts,
    /// or hands it `result`'s error without opening one.
    pub(crate) fn read(&self, job: ReadJob, result: Result<(), RequestError>) {
        let node = self.node;
        self.run(Box::new(move |db| match result.and(db) {
            Err(error) => job(Err(error)),
            Ok(db) => match ReadView::open(db) {
                Ok(view) => job(Ok(&view)),
                Err(source) => job(Err(RequestError::View { node, source: Box::new(source) })),
            },
        }));
    }

    /// Runs `task` on a blocking thread once a slot is free. A task that
    /// panics is caught and logged (its caller sees its reply dropped).
    pub(crate) fn run(&self, task: StoreTask) {
        let (db, running, node) = (self.db.clone(), self.running.clone(), self.node);
        self.runtime.spawn(async move {
            // Closed only if the pool were dropped, which it is not while a
            // clone of it spawns tasks.
            let Ok(slot) = running.acquire_owned().await else { return };
            let blocking = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let store = db.upgrade();
                let input =
                    store.as_deref().ok_or(RequestError::Stopped { node, reason: "its store is closed".into() });
                let run = std::panic::AssertUnwindSafe(move || task(input));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!(node, "a read panicked; the node goes on");
                }
            });
            // A join error is the panic already logged above, or a runtime
            // shutting down: nothing more to do either way.
            let _ = blocking.await;
        });
    }
}
