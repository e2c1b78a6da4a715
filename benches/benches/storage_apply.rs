//! Durable apply on one node's RocksDB store.
//!
//! - `durable_apply/{uniform,hot}`: for each 8,189-transfer batch, what a
//!   node does per Raft entry: one synced append of the entry (its encoded
//!   size, about 1 MiB) to the Raft log, then prepare against `LedgerState`
//!   and the state write with the applied index (skipping the WAL: the Raft
//!   log is its redo log, see ARCHITECTURE.md).
//! - `durable_apply/{uniform,hot}_run4`: the same for four entries that
//!   arrive and commit together: one synced append of the four, each batch
//!   prepared over the ones before it (`coffer_ledger::Run`), and one state
//!   write (see ARCHITECTURE.md, write path step 4). Its throughput counts
//!   all four batches.
//! - `durable_apply/{uniform,hot}_run8`: the same for eight entries, the
//!   runs every node writes under load (see `Replica::may_hold` and
//!   `FOLLOWER_APPLY_SPAN` in `consensus/src/replica.rs`).
//! - `log_append/1mib`: one synced append of a 1 MiB entry.
//!
//! Run with `cargo bench --workspace --bench storage_apply` (`--workspace` keeps
//! the one RocksDB build; see ARCHITECTURE.md).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use coffer_benches::{Distribution, Workload};
use coffer_ledger::{prepare_create_transfers, Run, BATCH_EVENTS_MAX, RUN_BATCHES_MAX};
use coffer_storage::{AppliedState, NodeStore, StorageConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft::prelude::{Entry, HardState};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
/// Bytes of an encoded 8,189-transfer entry: about 128 bytes a transfer, 1 MiB.
const ENTRY_BYTES: usize = 1 << 20;

/// A fresh store holding the workload's ledger and accounts, and its applied index.
fn setup(workload: &mut Workload) -> (tempfile::TempDir, NodeStore, u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = NodeStore::open(dir.path(), &StorageConfig::default()).expect("open a store");
    let mut index = 0;
    for (timestamp, operation) in workload.setup_operations() {
        index += 1;
        store.log.append(&[entry(index)], Some(&hard_state(index)), true).expect("setup appends");
        let prepared = coffer_ledger::prepare(&store.state, timestamp, &operation).expect("setup prepares");
        store.state.apply(Some(&prepared.write_set), AppliedState::at(index, 1), None).expect("setup applies");
    }
    (dir, store, index)
}

fn entry(index: u64) -> Entry {
    Entry { index, term: 1, data: vec![index as u8; ENTRY_BYTES].into(), ..Default::default() }
}

fn hard_state(commit: u64) -> HardState {
    HardState { term: 1, commit, ..Default::default() }
}

/// One benchmark's store and workload, kept across criterion's samples so
/// that every sample measures a store in its steady state (memtables full,
/// data flushed to SST files, compactions running) instead of a fresh one.
struct Durable {
    workload: Workload,
    _dir: tempfile::TempDir,
    store: NodeStore,
    index: u64,
}

impl Durable {
    fn new(distribution: Distribution) -> Self {
        let mut workload = Workload::new(ACCOUNTS, distribution, 7);
        let (dir, store, index) = setup(&mut workload);
        Self { workload, _dir: dir, store, index }
    }

    /// Applies `iterations` batches as a node does, timing everything but
    /// building the batch.
    fn run(&mut self, iterations: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iterations {
            let (timestamp, batch) = self.workload.next_batch(BATCH_EVENTS_MAX);
            self.index += 1;
            let raft_entry = entry(self.index);
            let applied = AppliedState::at(self.index, 1);
            let store = &mut self.store;
            let start = Instant::now();
            store.log.append(&[raft_entry], Some(&hard_state(self.index)), true).expect("append");
            let prepared = prepare_create_transfers(&store.state, timestamp, &batch).expect("prepare");
            store.state.apply(Some(&prepared.write_set), applied, None).expect("apply");
            elapsed += start.elapsed();
        }
        elapsed
    }

    /// Applies `iterations` runs of `length` batches (at most
    /// [`RUN_BATCHES_MAX`]) as a replica does with entries it applies
    /// together, timing everything but building the batches.
    fn run_together(&mut self, length: usize, iterations: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iterations {
            let batches: Vec<_> = (0..length).map(|_| self.workload.next_batch(BATCH_EVENTS_MAX)).collect();
            let first = self.index + 1;
            self.index += length as u64;
            let entries: Vec<Entry> = (first..=self.index).map(entry).collect();
            let applied = AppliedState::at(self.index, 1);
            let store = &mut self.store;
            let start = Instant::now();
            store.log.append(&entries, Some(&hard_state(self.index)), true).expect("append");
            let write_set = {
                let mut run = Run::expecting(&store.state, batches.len());
                for (timestamp, batch) in &batches {
                    let prepared = prepare_create_transfers(&run, *timestamp, batch).expect("prepare");
                    run.push(prepared.write_set).expect("the batches follow each other");
                }
                run.into_write_set().expect("the run reads its base")
            };
            store.state.apply(write_set.as_ref(), applied, None).expect("apply");
            elapsed += start.elapsed();
        }
        elapsed
    }
}

fn apply(c: &mut Criterion) {
    durable_apply(c, "", 1, 20, Durable::run);
    durable_apply(c, "_run4", 4, 10, |durable, iterations| durable.run_together(4, iterations));
    durable_apply(c, "_run8", RUN_BATCHES_MAX, 10, |durable, iterations| {
        durable.run_together(RUN_BATCHES_MAX, iterations)
    });
}

/// The `durable_apply` cases `uniform{suffix}` and `hot{suffix}`, each on a
/// store of its own, `batches` batches an iteration applied by `apply`.
fn durable_apply(
    c: &mut Criterion,
    suffix: &str,
    batches: usize,
    samples: usize,
    apply: impl Fn(&mut Durable, u64) -> Duration,
) {
    let mut group = c.benchmark_group("durable_apply");
    group.throughput(Throughput::Elements((BATCH_EVENTS_MAX * batches) as u64));
    group.sample_size(samples);
    for (name, distribution) in [("uniform", Distribution::Uniform), ("hot", Distribution::Hot { hot: 10 })] {
        let mut durable = Durable::new(distribution);
        group.bench_function(format!("{name}{suffix}"), |b| b.iter_custom(|n| apply(&mut durable, n)));
    }
    group.finish();
}

fn log_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    group.throughput(Throughput::Bytes(ENTRY_BYTES as u64));
    group.sample_size(20);
    group.bench_function("1mib", |b| {
        b.iter_custom(|iterations| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let mut store = NodeStore::open(dir.path(), &StorageConfig::default()).expect("open a store");
            let mut elapsed = Duration::ZERO;
            for index in 1..=iterations {
                let raft_entry = entry(index);
                let start = Instant::now();
                store.log.append(&[raft_entry], Some(&hard_state(index)), true).expect("append");
                elapsed += start.elapsed();
            }
            elapsed
        });
    });
    group.finish();
}

criterion_group!(benches, apply, log_append);
criterion_main!(benches);
