//! Single-threaded state-machine apply: 8,189-transfer batches over 10,000
//! accounts, for the uniform and hot distributions. `apply` is prepare plus
//! commit to the in-memory store (the figure the design budget names);
//! `prepare` times the state machine alone (its commit runs untimed), to show
//! where the time goes. Run with `make bench` or
//! `cargo bench --workspace --bench ledger_apply`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use coffer_benches::{Distribution, Workload};
use coffer_ledger::{prepare_create_transfers, CreateTransferResult, MemoryStore, StoreMut, BATCH_EVENTS_MAX};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

// The allocator the `coffer` binary will use: large per-batch buffers are
// reused instead of being returned to the OS and faulted in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
/// Batches applied to one store before it is cleared and set up again, so
/// memory stays bounded however long criterion runs (about 0.8 M transfers
/// per store). Clearing keeps the store's allocations: after the first
/// store, the bench measures the state machine and the store's structures,
/// not the kernel zeroing never-used pages (a one-time cost per byte of RAM).
const BATCHES_PER_STORE: u64 = 100;

/// What one iteration times.
#[derive(Clone, Copy)]
enum Timed {
    PrepareAndCommit,
    PrepareOnly,
}

/// One benchmark's workload and store, kept across criterion's samples so
/// that every sample measures the steady state (a store that already has its
/// memory) rather than a fresh store growing from nothing.
struct Bench {
    distribution: Distribution,
    workload: Workload,
    store: MemoryStore,
    batches: u64,
}

impl Bench {
    fn new(distribution: Distribution) -> Self {
        let mut workload = Workload::new(ACCOUNTS, distribution, 42);
        let store = workload.setup().into_store();
        Self { distribution, workload, store, batches: 0 }
    }

    /// Applies `iterations` batches, timing the part `timed` names.
    fn run(&mut self, iterations: u64, timed: Timed) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iterations {
            if self.batches > 0 && self.batches.is_multiple_of(BATCHES_PER_STORE) {
                self.workload = Workload::new(ACCOUNTS, self.distribution, 42 + self.batches);
                let store = std::mem::take(&mut self.store);
                self.store = self.workload.setup_in(store).into_store();
            }
            self.batches += 1;
            let (timestamp, batch) = self.workload.next_batch(BATCH_EVENTS_MAX);
            let start = Instant::now();
            let prepared =
                prepare_create_transfers(&self.store, timestamp, black_box(&batch)).expect("timestamps increase");
            if let Timed::PrepareOnly = timed {
                elapsed += start.elapsed();
            }
            self.store.commit(&prepared.write_set).expect("the memory store commits");
            if let Timed::PrepareAndCommit = timed {
                elapsed += start.elapsed();
            }
            assert!(prepared.results.iter().all(|result| *result == CreateTransferResult::Created));
        }
        elapsed
    }
}

fn bench(c: &mut Criterion, timed: Timed, group: &str) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(BATCH_EVENTS_MAX as u64));
    for (name, distribution) in
        [("uniform_10k_accounts", Distribution::Uniform), ("hot_10_cash_accounts", Distribution::Hot { hot: 10 })]
    {
        let mut state = Bench::new(distribution);
        group.bench_function(name, |b| b.iter_custom(|iterations| state.run(iterations, timed)));
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    bench(c, Timed::PrepareAndCommit, "ledger_apply");
}

fn prepare(c: &mut Criterion) {
    bench(c, Timed::PrepareOnly, "ledger_prepare");
}

criterion_group!(benches, apply, prepare);
criterion_main!(benches);
