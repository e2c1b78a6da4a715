//! The load phase: batches go out closed-loop (each client sends its next
//! batch when the last one is answered) or open-loop (batches leave on a
//! fixed schedule whatever the answers), every answer is recorded in the
//! [`Expected`] model and the latency [`Recorder`], and the processes'
//! memory is sampled once a second.
//!
//! **Latency**: closed loop, from the moment a batch is sent to its answer.
//! Open loop, from the moment the schedule said it should be sent: when the
//! cluster falls behind and batches wait (for an in-flight slot, or behind
//! a slow scheduler), that wait counts, so a stall shows in the percentiles
//! instead of thinning the samples (no coordinated omission).
//!
//! **Retries**: the client already retries within its deadline; a batch
//! whose call still fails is sent again, identical (same ids), up to
//! [`BATCH_ATTEMPTS_MAX`] times, and its latency runs from the first send.
//! Transfers that did apply answer `exists`, which counts as success.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coffer_api::client::{Client, ClientError};
use coffer_ledger::CreateTransferResult;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::error::BenchError;
use super::expected::Expected;
use super::process;
use super::stats::Recorder;
use super::workload::{Batch, Generator};

/// Tries of one batch (each with the client's own retries inside).
pub const BATCH_ATTEMPTS_MAX: u32 = 5;
/// The pause before a batch is sent again.
const BATCH_RETRY_PAUSE_MS: u64 = 500;
/// Open loop: batches in flight at most; later ones wait (and the wait
/// counts in their latency). Bounds the memory of a cluster that falls behind.
pub const OPEN_LOOP_IN_FLIGHT_MAX: usize = 64;
/// How often the processes' memory is sampled.
const SAMPLE_INTERVAL_MS: u64 = 1_000;
/// A scheduled batch that leaves this much late counts as late (well above
/// the timer's 1 ms granularity).
const LATE_MS: u64 = 10;

/// What the load phase is to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Transfers per batch.
    pub batch_size: usize,
    /// Transfers in all (`None`: until the duration ends).
    pub transfers: Option<u64>,
    /// Sending stops this long after the start.
    pub duration: Option<Duration>,
    /// Open loop at this many transfers/s; `None`: closed loop.
    pub rate: Option<u64>,
}

/// What the load phase did.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LoadSummary {
    /// From the first send to the last answer.
    pub elapsed_s: f64,
    /// Batches answered.
    pub batches: u64,
    /// Transfers sent.
    pub transfers_sent: u64,
    /// Transfers committed (`created`, or `exists` for a retry).
    pub transfers_committed: u64,
    /// Transfers answered with any other result.
    pub transfers_failed: u64,
    /// Batches sent again after a failed call.
    pub batch_retries: u64,
    /// Open loop: batches that left more than 10 ms after their scheduled time.
    pub late_batches: u64,
}

/// What the sending tasks share.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    plan: Plan,
    start: Instant,
    pids: Vec<Option<u32>>,
}

/// The generator, the model and the recorder, changed together under one lock.
#[derive(Debug)]
struct State {
    generator: Generator,
    expected: Expected,
    recorder: Recorder,
    summary: LoadSummary,
    last_answer: Instant,
}

impl Shared {
    /// Shared state for a load phase starting now; `pids` are the processes
    /// whose memory is sampled (`None`: unknown).
    pub fn new(plan: Plan, generator: Generator, expected: Expected, pids: Vec<Option<u32>>) -> Arc<Self> {
        let start = Instant::now();
        let state = State {
            generator,
            expected,
            recorder: Recorder::new(),
            summary: LoadSummary::default(),
            last_answer: start,
        };
        Arc::new(Self { state: Mutex::new(state), stop: AtomicBool::new(false), plan, start, pids })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch, or `None` once the total is sent, the duration is
    /// over or the run is stopping.
    fn next_batch(&self) -> Option<Batch> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if self.plan.duration.is_some_and(|duration| self.start.elapsed() >= duration) {
            return None;
        }
        let mut state = self.lock();
        let remaining = self.plan.transfers.map_or(u64::MAX, |total| total - state.generator.generated());
        if remaining == 0 {
            return None;
        }
        let events = self.plan.batch_size.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let batch = state.generator.next_batch(events);
        state.summary.transfers_sent += events as u64;
        Some(batch)
    }

    /// Records the answer to `batch`, measured from `since`.
    fn answered(&self, batch: &Batch, results: &[CreateTransferResult], since: Instant, retries: u32) {
        let now = Instant::now();
        let mut state = self.lock();
        let acknowledged = state.expected.acknowledge(&batch.transfers, results);
        for pending in acknowledged.pendings {
            state.generator.pending_acknowledged(pending);
        }
        state.recorder.record(now - self.start, now - since, acknowledged.committed);
        let summary = &mut state.summary;
        summary.batches += 1;
        summary.transfers_committed += acknowledged.committed;
        summary.transfers_failed += acknowledged.failed;
        summary.batch_retries += u64::from(retries);
        state.last_answer = state.last_answer.max(now);
    }

    fn sample_memory(&self) {
        let rss = self.pids.iter().map(|pid| pid.and_then(process::usage).map(|usage| usage.rss_kib)).collect();
        let at = self.start.elapsed();
        self.lock().recorder.record_rss(at, rss);
    }

    /// Ends the load phase: the model, the recorder and the summary.
    pub fn finish(self: Arc<Self>) -> (Expected, Recorder, LoadSummary) {
        match Arc::try_unwrap(self) {
            Ok(shared) => {
                let state = shared.state.into_inner().unwrap_or_else(PoisonError::into_inner);
                (state.expected, state.recorder, state.summary)
            }
            Err(shared) => {
                // An aborted task has not dropped its reference yet: copy.
                let state = shared.lock();
                (state.expected.clone(), state.recorder.clone(), state.summary)
            }
        }
    }
}

/// Runs the load phase with `clients` (one connection set each). Returns
/// when every batch is answered, or with the first batch that failed for
/// good (the others are abandoned).
pub async fn run(shared: &Arc<Shared>, clients: &[Client]) -> Result<(), BenchError> {
    let sampler = {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(SAMPLE_INTERVAL_MS));
            loop {
                interval.tick().await;
                shared.sample_memory();
            }
        })
    };
    let outcome = match shared.plan.rate {
        None => closed_loop(shared, clients).await,
        Some(rate) => open_loop(shared, clients, rate).await,
    };
    sampler.abort();
    shared.sample_memory();
    shared.stop.store(true, Ordering::Relaxed);
    let mut state = shared.lock();
    let elapsed = state.last_answer - shared.start;
    state.summary.elapsed_s = elapsed.as_secs_f64();
    outcome
}

/// Each client sends its next batch when the last one is answered.
async fn closed_loop(shared: &Arc<Shared>, clients: &[Client]) -> Result<(), BenchError> {
    let mut tasks = JoinSet::new();
    for client in clients {
        let (shared, client) = (Arc::clone(shared), client.clone());
        tasks.spawn(async move {
            while let Some(batch) = shared.next_batch() {
                let sent = Instant::now();
                let (results, retries) = send(&client, &batch).await?;
                shared.answered(&batch, &results, sent, retries);
            }
            Ok(())
        });
    }
    join_all(shared, tasks).await
}

/// Batch `k` leaves at `start + k × batch_size / rate`, answered or not
/// (at most [`OPEN_LOOP_IN_FLIGHT_MAX`] in flight), round robin over the clients.
async fn open_loop(shared: &Arc<Shared>, clients: &[Client], rate: u64) -> Result<(), BenchError> {
    let interval = Duration::from_secs_f64(shared.plan.batch_size as f64 / rate as f64);
    let slots = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
    let mut tasks = JoinSet::new();
    let mut late = 0;
    for k in 0_u32.. {
        let scheduled = shared.start + interval.mul_f64(f64::from(k));
        tokio::time::sleep_until(scheduled).await;
        let Some(batch) = shared.next_batch() else { break };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
        if scheduled.elapsed() > Duration::from_millis(LATE_MS) {
            late += 1;
        }
        let client = clients[k as usize % clients.len()].clone();
        let task_shared = Arc::clone(shared);
        tasks.spawn(async move {
            let outcome = send(&client, &batch).await;
            drop(slot);
            let (results, retries) = outcome?;
            task_shared.answered(&batch, &results, scheduled, retries);
            Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            if let Err(error) = flatten(done) {
                shared.stop.store(true, Ordering::Relaxed);
                tasks.abort_all();
                return Err(error);
            }
        }
    }
    shared.lock().summary.late_batches = late;
    join_all(shared, tasks).await
}

fn flatten(done: Result<Result<(), BenchError>, tokio::task::JoinError>) -> Result<(), BenchError> {
    done.map_err(|error| BenchError::Task(error.to_string()))?
}

/// Waits for every task; on the first failure stops the others.
async fn join_all(shared: &Shared, mut tasks: JoinSet<Result<(), BenchError>>) -> Result<(), BenchError> {
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = flatten(done) {
            shared.stop.store(true, Ordering::Relaxed);
            tasks.abort_all();
            return Err(error);
        }
    }
    Ok(())
}

/// Sends `batch` until answered: the identical request each time.
async fn send(client: &Client, batch: &Batch) -> Result<(Vec<CreateTransferResult>, u32), BenchError> {
    let mut attempt = 1;
    loop {
        match client.create_transfers(&batch.transfers).await {
            Ok(reply) => return Ok((reply.value, attempt - 1)),
            Err(error) if attempt < BATCH_ATTEMPTS_MAX && may_succeed_later(&error) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(BATCH_RETRY_PAUSE_MS)).await;
            }
            Err(source) => {
                return Err(BenchError::Batch {
                    number: batch.number,
                    transfers: batch.transfers.len(),
                    attempts: attempt,
                    source,
                })
            }
        }
    }
}

/// Whether a failed call may succeed if sent again (the cluster was busy,
/// electing, or slow, or the node serving the call died mid-call: `coffer
/// dev` restarts it, and a connection cut mid-call surfaces as `Unknown`,
/// "transport error"); a refused request will not. Resending is safe: the
/// batch is identical, so what did apply answers `exists`.
fn may_succeed_later(error: &ClientError) -> bool {
    use tonic::Code;
    match error {
        ClientError::Deadline { .. } => true,
        ClientError::Status { status, .. } => matches!(
            status.code(),
            Code::Unavailable
                | Code::ResourceExhausted
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::Cancelled
                | Code::Unknown
        ),
        ClientError::Config { .. } | ClientError::Invalid(_) | ClientError::Decode(_) => false,
    }
}
