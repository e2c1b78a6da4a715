//! The consensus core, without disks or sockets.
//!
//! - `entry_codec/{encode,decode}`: a Raft entry's payload (a
//!   [`Command`] carrying 8,189 transfers, about 1 MiB) encoded and decoded
//!   — what the leader does once per entry and every replica once per apply.
//! - `consensus_round/three_nodes`: one full round of replication on three
//!   real [`Replica`]s with their production storage (`DiskStorage`:
//!   RocksDB, synced appends, the ledger state) in a memory-backed
//!   directory (`/dev/shm` when there is one): the leader takes an
//!   8,189-transfer proposal, appends it, sends it, the followers append and
//!   answer, the entry commits, and all three apply it to their ledgers.
//!   Messages are handed over in memory with no delay and syncs cost no
//!   disk wait, so the figure is the CPU cost of a round on one thread
//!   (three nodes' work): the ceiling that network and disk latency then
//!   lower. (The simulator's own storage is built for checking, not speed,
//!   so it is not what this measures.)
//!
//! Run with `make bench` or `cargo bench --workspace --bench consensus`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use coffer_benches::{Distribution, Workload};
use coffer_consensus::command::{Command, Part};
use coffer_consensus::raft::prelude::Message;
use coffer_consensus::raft::StateRole;
use coffer_consensus::{Completion, ConsensusConfig, DiskStorage, Outcome, ProposalId, Replica};
use coffer_ledger::{Operation, OperationResults, BATCH_EVENTS_MAX};
use coffer_storage::StorageConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
/// Rounds on one cluster before it is built afresh (untimed): its stores
/// live in memory, so this bounds the bench's memory (about 10 MB a round).
const ROUNDS_PER_CLUSTER: u64 = 60;
/// Message exchanges a round may take before the bench gives up.
const EXCHANGES_MAX: usize = 1_000;
const NODES: [u64; 3] = [1, 2, 3];

fn entry_codec(c: &mut Criterion) {
    let mut workload = Workload::new(ACCOUNTS, Distribution::Uniform, 3);
    let (timestamp, transfers) = workload.next_batch(BATCH_EVENTS_MAX);
    let command = Command {
        timestamp,
        proposer: 1,
        term: 1,
        parts: vec![Part { sequence: 1, events: BATCH_EVENTS_MAX as u32, principal: "bench".into() }],
        operation: Operation::CreateTransfers(transfers),
    };
    let encoded = command.encode().expect("the command encodes");
    let mut group = c.benchmark_group("entry_codec");
    group.throughput(Throughput::Elements(BATCH_EVENTS_MAX as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(&command).encode().expect("encodes")));
    group.bench_function("decode", |b| b.iter(|| Command::decode(black_box(&encoded)).expect("decodes")));
    group.finish();
}

/// Three replicas with their stores in one memory-backed directory, and a workload.
struct Cluster {
    replicas: Vec<Replica<DiskStorage>>,
    _dir: tempfile::TempDir,
    workload: Workload,
    now_ns: u64,
    rounds: u64,
}

impl Cluster {
    /// A fresh cluster with node 1 leading and the workload's ledger and
    /// accounts created.
    fn new(seed: u64) -> Self {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
        let dir = dir.expect("a temporary directory");
        let replicas = NODES
            .iter()
            .map(|&id| {
                let mut storage = DiskStorage::open(&dir.path().join(id.to_string()), &StorageConfig::default())
                    .expect("an empty store opens");
                storage.bootstrap(&NODES).expect("bootstrap");
                Replica::new(ConsensusConfig::new(id), storage).expect("a replica starts")
            })
            .collect();
        let workload = Workload::new(ACCOUNTS, Distribution::Uniform, seed);
        let mut cluster = Self { replicas, _dir: dir, workload, now_ns: 1, rounds: 0 };
        cluster.replicas[0].campaign().expect("node 1 campaigns");
        cluster.exchange_until(|cluster| cluster.replicas[0].status().role == StateRole::Leader);
        for (_, operation) in cluster.workload.setup_operations() {
            cluster.round(operation);
        }
        cluster
    }

    /// Runs every replica once and delivers what they sent; returns the
    /// requests that finished.
    fn exchange(&mut self) -> Vec<Completion> {
        self.now_ns += 1_000;
        let mut completions = Vec::new();
        let mut messages: Vec<Message> = Vec::new();
        for replica in &mut self.replicas {
            let output = replica.advance(self.now_ns, &mut messages).expect("the replica advances");
            completions.extend(output.completions);
        }
        for message in messages {
            let to = message.to;
            if let Some(replica) = self.replicas.iter_mut().find(|replica| replica.id() == to) {
                replica.step(message).expect("the message steps");
            }
        }
        completions
    }

    /// Exchanges until `done`.
    fn exchange_until(&mut self, done: impl Fn(&Self) -> bool) {
        for _ in 0..EXCHANGES_MAX {
            if done(self) {
                return;
            }
            self.exchange();
        }
        panic!("the cluster did not get there in {EXCHANGES_MAX} exchanges");
    }

    /// Proposes `operation` on the leader and runs until all three replicas
    /// applied it; every event must succeed.
    fn round(&mut self, operation: Operation) {
        let id: ProposalId = self.replicas[0].propose(operation).expect("the leader takes the proposal");
        let mut result = None;
        for _ in 0..EXCHANGES_MAX {
            let completions = self.exchange();
            result = result.or_else(|| {
                completions.into_iter().find_map(|completion| match completion {
                    Completion::Proposal { id: done, result } if done == id => Some(result),
                    _ => None,
                })
            });
            let applied = match &result {
                Some(Ok(applied)) => applied.index,
                Some(Err(error)) => panic!("the proposal failed: {error}"),
                None => continue,
            };
            if self.replicas.iter().all(|replica| replica.status().applied >= applied) {
                break;
            }
        }
        let applied = result.expect("the proposal completed").expect("the proposal applied");
        let succeeded = match applied.outcome {
            Outcome::Operation(OperationResults::Transfers(results)) => results.iter().all(|r| r.is_success()),
            Outcome::Operation(OperationResults::Accounts(results)) => results.iter().all(|r| r.is_success()),
            Outcome::Operation(OperationResults::Ledgers(results)) => results.iter().all(|r| r.is_success()),
            _ => false,
        };
        assert!(succeeded, "every event of the round succeeds");
    }
}

/// The cluster a bench function runs on, rebuilt every [`ROUNDS_PER_CLUSTER`] rounds.
struct Rounds {
    cluster: Cluster,
    seed: u64,
}

impl Rounds {
    fn run(&mut self, iterations: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iterations {
            if self.cluster.rounds == ROUNDS_PER_CLUSTER {
                self.seed += 1;
                self.cluster = Cluster::new(self.seed);
            }
            self.cluster.rounds += 1;
            let (_, transfers) = self.cluster.workload.next_batch(BATCH_EVENTS_MAX);
            let start = Instant::now();
            self.cluster.round(Operation::CreateTransfers(transfers));
            elapsed += start.elapsed();
        }
        elapsed
    }
}

fn consensus_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("consensus_round");
    group.throughput(Throughput::Elements(BATCH_EVENTS_MAX as u64));
    group.sample_size(20);
    let mut rounds = Rounds { cluster: Cluster::new(11), seed: 11 };
    group.bench_function("three_nodes", |b| b.iter_custom(|iterations| rounds.run(iterations)));
    group.finish();
}

criterion_group!(benches, entry_codec, consensus_round);
criterion_main!(benches);
