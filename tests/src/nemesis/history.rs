//! The bank workload's clients and the history they record.
//!
//! Each client runs `coffer-chaos`'s [`Workload`] (single-phase, pending,
//! post and void, linked chains, resends of old requests with the same
//! ids) against the whole cluster through the leader-following client, and
//! reads balances with linearizable reads. Every try of every request is
//! recorded with when it was sent and when it finished: acknowledged (with
//! the log index and per-event results), failed with a gRPC code, or
//! indeterminate (timeout, unavailable). A write that is not acknowledged is
//! tried again with the same ids, a few times, before the client moves on;
//! the workload may resend it later too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use coffer_api::client::{Client, ClientError};
use coffer_chaos::random::Random;
use coffer_chaos::workload::{Bank, OpenPending, TransferRole, Workload};
use coffer_ledger::{Account, CreateTransferResult, Operation, Transfer};
use tonic::Code;

/// Tries of one write before the client moves on (the first and retries
/// with the same ids).
pub const WRITE_TRIES_MAX: u32 = 3;
/// Share of a client's requests that are reads.
const READ_SHARE: f64 = 0.3;
/// Accounts one read looks up.
const READ_ACCOUNTS: usize = 3;
/// A pause between a client's requests, so that the clients leave the
/// nodes (two cores for three nodes) time to elect leaders.
const THINK_MS: u64 = 2;

/// How one try of a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The cluster answered: the log index that applied it, the node, and
    /// each event's result.
    Acked {
        /// The log index.
        index: u64,
        /// The node that answered.
        node: u64,
        /// One result per transfer.
        results: Vec<CreateTransferResult>,
    },
    /// The cluster answered with an error that a retry would not fix.
    /// Treated by the checks as "may or may not have been applied".
    Failed {
        /// The gRPC code.
        code: Code,
    },
    /// No answer (deadline, unavailable): the outcome is unknown.
    Indeterminate {
        /// What the client saw.
        error: String,
    },
}

/// One try of one write request.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// The client that sent it.
    pub client: u32,
    /// What it sent.
    pub transfers: Vec<Transfer>,
    /// When it was sent, since the run began.
    pub sent: Duration,
    /// When its outcome was known.
    pub finished: Duration,
    /// How it ended.
    pub outcome: WriteOutcome,
}

/// One account as a linearizable read returned it.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    /// The client that read it.
    pub client: u32,
    /// The account, with its balances.
    pub account: Account,
    /// When the read was sent, since the run began.
    pub began: Duration,
    /// When its answer arrived.
    pub ended: Duration,
    /// The node that served it.
    pub node: u64,
    /// The applied index of the state it was served from.
    pub applied_index: u64,
}

/// Everything the clients did.
#[derive(Debug, Default)]
pub struct HistoryLog {
    /// Every try of every write.
    pub writes: Vec<WriteRecord>,
    /// Every account read.
    pub reads: Vec<ReadRecord>,
    /// Reads that got no answer.
    pub reads_failed: u64,
    /// Accounts a linearizable read did not find (all exist before the
    /// clients start), with the node and applied index that served it.
    pub reads_missing: Vec<String>,
}

impl HistoryLog {
    /// The tries that were acknowledged.
    pub fn acked(&self) -> impl Iterator<Item = &WriteRecord> {
        self.writes.iter().filter(|write| matches!(write.outcome, WriteOutcome::Acked { .. }))
    }

    /// The tries whose outcome is unknown.
    pub fn indeterminate(&self) -> impl Iterator<Item = &WriteRecord> {
        self.writes.iter().filter(|write| matches!(write.outcome, WriteOutcome::Indeterminate { .. }))
    }

    /// The tries refused with an error code, by code.
    pub fn failed_by_code(&self) -> std::collections::BTreeMap<String, u64> {
        let mut codes = std::collections::BTreeMap::new();
        for write in &self.writes {
            if let WriteOutcome::Failed { code } = write.outcome {
                *codes.entry(format!("{code:?}")).or_default() += 1;
            }
        }
        codes
    }
}

/// The history, shared by the clients.
#[derive(Clone, Debug)]
pub struct Recorder {
    started: Instant,
    log: Arc<Mutex<HistoryLog>>,
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self { started: Instant::now(), log: Arc::default() }
    }

    /// Time since the run began.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, HistoryLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one try of a write.
    pub fn write(&self, record: WriteRecord) {
        self.log().writes.push(record);
    }

    /// The history so far (a copy).
    pub fn snapshot(&self) -> HistoryLog {
        let log = self.log();
        HistoryLog {
            writes: log.writes.clone(),
            reads: log.reads.clone(),
            reads_failed: log.reads_failed,
            reads_missing: log.reads_missing.clone(),
        }
    }

    /// Sends `transfers` once and records the try; its outcome.
    pub async fn send(&self, client_id: u32, client: &Client, transfers: &[Transfer]) -> WriteOutcome {
        let sent = self.now();
        let outcome = match client.create_transfers(transfers).await {
            Ok(reply) => WriteOutcome::Acked { index: reply.applied_index, node: reply.node_id, results: reply.value },
            Err(error) => classify(&error),
        };
        let record =
            WriteRecord { client: client_id, transfers: transfers.to_vec(), sent, finished: self.now(), outcome };
        self.write(record.clone());
        record.outcome
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether an error leaves the write's outcome unknown.
fn classify(error: &ClientError) -> WriteOutcome {
    match error.code() {
        None
        | Some(
            Code::DeadlineExceeded
            | Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::Internal,
        ) => WriteOutcome::Indeterminate { error: error.to_string() },
        Some(code) => WriteOutcome::Failed { code },
    }
}

/// One bank client: writes and reads until `stop` is set.
pub struct BankClient {
    /// Its number (its transfer ids carry it).
    pub id: u32,
    /// Its connection to the cluster.
    pub client: Client,
    /// The accounts it works on.
    pub bank: Arc<Bank>,
    /// Its random choices.
    pub random: Random,
    /// Where it records what it did.
    pub recorder: Recorder,
}

impl BankClient {
    /// Runs until `stop` is set.
    pub async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut workload = Workload::new(self.id);
        while !stop.load(Ordering::Relaxed) {
            if self.random.chance(READ_SHARE) {
                self.read().await;
            } else {
                self.write(&mut workload).await;
            }
            tokio::time::sleep(Duration::from_millis(THINK_MS)).await;
        }
    }

    async fn write(&mut self, workload: &mut Workload) {
        let operation = workload.next_write(&self.bank, &mut self.random);
        let Operation::CreateTransfers(transfers) = &operation else {
            return;
        };
        for _ in 0..WRITE_TRIES_MAX {
            match self.recorder.send(self.id, &self.client, transfers).await {
                WriteOutcome::Acked { results, .. } => {
                    for (transfer, result) in transfers.iter().zip(&results) {
                        if TransferRole::of(transfer) == TransferRole::Pending && result.is_success() {
                            workload.pending_acknowledged(OpenPending { id: transfer.id, amount: transfer.amount });
                        }
                    }
                    break;
                }
                WriteOutcome::Failed { .. } => break,
                WriteOutcome::Indeterminate { .. } => {}
            }
        }
        workload.finished(&operation);
    }

    async fn read(&mut self) {
        let ids: Vec<_> = (0..READ_ACCOUNTS).map(|_| Workload::read_target(&self.bank, &mut self.random)).collect();
        let began = self.recorder.now();
        let answer = self.client.lookup_accounts(&ids).await;
        let ended = self.recorder.now();
        let mut log = self.recorder.log();
        match answer {
            Ok(reply) => {
                for (id, account) in ids.iter().zip(reply.value) {
                    let Some(account) = account else {
                        let (node, index) = (reply.node_id, reply.applied_index);
                        log.reads_missing.push(format!("account {} at node {node}, index {index}", id.0));
                        continue;
                    };
                    log.reads.push(ReadRecord {
                        client: self.id,
                        account,
                        began,
                        ended,
                        node: reply.node_id,
                        applied_index: reply.applied_index,
                    });
                }
            }
            Err(_) => log.reads_failed += 1,
        }
    }
}
