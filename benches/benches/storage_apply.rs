//! Durable apply on RocksDB: 8,189-transfer batches (uniform over 10,000
//! accounts) prepared against `LedgerState` and written with the applied
//! index, and the synced Raft-log append that precedes each apply.
//!
//! - `storage_apply/apply_wal`: prepare + the write as Coffer does it
//!   (through the WAL, unsynced);
//! - `storage_apply/apply_no_wal`: prepare + the same write with the WAL
//!   disabled, the alternative ARCHITECTURE.md weighs;
//! - `storage_apply/log_append_synced`: one synced append of an entry the
//!   size of an encoded batch.
//!
//! Run with `cargo bench -p coffer-benches --bench storage_apply`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use coffer_benches::{Distribution, Workload};
use coffer_ledger::{prepare_create_transfers, BATCH_EVENTS_MAX};
use coffer_storage::{AppliedState, NodeStore, StorageConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft::prelude::{Entry, HardState};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
/// Bytes of an encoded 8,189-transfer batch, about 129 bytes a transfer.
const ENTRY_BYTES: usize = BATCH_EVENTS_MAX * 129;

/// A fresh store holding the workload's ledger and accounts.
fn setup(workload: &mut Workload) -> (tempfile::TempDir, NodeStore, u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = NodeStore::open(dir.path(), &StorageConfig::default()).expect("open a store");
    let mut index = 0;
    for (timestamp, operation) in workload.setup_operations() {
        index += 1;
        let prepared = coffer_ledger::prepare(&store.state, timestamp, &operation).expect("setup prepares");
        store.state.apply(Some(&prepared.write_set), AppliedState { index, term: 1 }, None).expect("setup applies");
    }
    (dir, store, index)
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage_apply");
    group.throughput(Throughput::Elements(BATCH_EVENTS_MAX as u64));
    group.sample_size(20);
    for (name, disable_wal) in [("apply_wal", false), ("apply_no_wal", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut workload = Workload::new(ACCOUNTS, Distribution::Uniform, 7);
                let (_dir, mut store, mut index) = setup(&mut workload);
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let (timestamp, batch) = workload.next_batch(BATCH_EVENTS_MAX);
                    index += 1;
                    let applied = AppliedState { index, term: 1 };
                    let start = Instant::now();
                    let prepared = prepare_create_transfers(&store.state, timestamp, &batch).expect("prepare");
                    if disable_wal {
                        let write = store.state.write_batch(Some(&prepared.write_set), applied, None).expect("batch");
                        let mut options = coffer_storage::rocksdb::WriteOptions::default();
                        options.disable_wal(true);
                        store.state.db().rocksdb().write_opt(write, &options).expect("write");
                    } else {
                        store.state.apply(Some(&prepared.write_set), applied, None).expect("apply");
                    }
                    elapsed += start.elapsed();
                }
                elapsed
            });
        });
    }
    group.bench_function("log_append_synced", |b| {
        b.iter_custom(|iterations| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let mut store = NodeStore::open(dir.path(), &StorageConfig::default()).expect("open a store");
            let mut elapsed = Duration::ZERO;
            for index in 1..=iterations {
                let data = vec![index as u8; ENTRY_BYTES].into();
                let entry = Entry { index, term: 1, data, ..Default::default() };
                let hard_state = HardState { term: 1, ..Default::default() };
                let start = Instant::now();
                store.log.append(&[entry], Some(&hard_state), true).expect("append");
                elapsed += start.elapsed();
            }
            elapsed
        });
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
