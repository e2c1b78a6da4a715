//! Crash test: a child process does what a node's Ready loop does (append
//! each entry to the Raft log, synced, then apply it, the state write
//! skipping the WAL) and reports each entry once applied; the store flushes
//! now and then, as RocksDB does when memtables fill. The parent SIGKILLs
//! the child at random moments, reopens the store, and checks that every
//! reported entry is in the log, that the state is the one of exactly the
//! entries up to its applied index (nothing partial: it equals a replay),
//! that the log still reaches back to that index, and that the applied
//! index never goes back past a flush. Applies lost with the process are
//! done again from the log, as Raft does: by the next child on start, and
//! by the parent at the end.
//!
//! `COFFER_CRASH_KILLS` sets the number of kills (200 by default, as in CI);
//! `COFFER_CRASH_SEED` the seed of the kill schedule.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use coffer_ledger::{
    prepare, state_digest, Account, AccountFlags, AccountId, AccountKind, Ledger, LedgerId, MemoryStore, Operation,
    StoreMut, Transfer, TransferFlags, TransferId, TransferKind,
};
use coffer_storage::{AppliedState, NodeStore, StorageConfig};
use raft::prelude::{Entry, HardState};
use raft::Storage as _;

const CHILD_DIR_ENV: &str = "COFFER_CRASH_CHILD_DIR";
const ACCOUNTS: u64 = 20;
const TRANSFERS_PER_BATCH: u64 = 20;
const SECOND_NS: u64 = 1_000_000_000;

/// SplitMix64: the deterministic source of the workload and the kill schedule.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The operation of Raft entry `index`: a fixed function of the index, so
/// parent and child agree on every batch without talking.
fn operation(index: u64) -> Operation {
    let mut random = Random(index.wrapping_mul(7919));
    match index {
        1 => Operation::CreateLedgers(vec![Ledger::new(LedgerId(1), "KRW", 0, "Won")]),
        2 => Operation::CreateAccounts(
            (1..=ACCOUNTS)
                .map(|id| Account {
                    id: AccountId(u128::from(id)),
                    ledger: LedgerId(1),
                    code: 1,
                    kind: if id <= 4 { AccountKind::Cash } else { AccountKind::Other },
                    flags: if id % 2 == 0 { AccountFlags::HISTORY } else { AccountFlags::NONE },
                    ..Default::default()
                })
                .collect(),
        ),
        _ if index.is_multiple_of(5) => Operation::ExpirePending,
        _ => Operation::CreateTransfers(
            (0..TRANSFERS_PER_BATCH)
                .map(|k| {
                    let debit = 1 + random.below(ACCOUNTS);
                    let credit = 1 + (debit + random.below(ACCOUNTS - 1)) % ACCOUNTS;
                    let id = u128::from(index * 100 + k);
                    match random.below(5) {
                        0 => Transfer {
                            flags: TransferFlags::PENDING,
                            timeout: 1 + random.below(3) as u32,
                            ..journal(id, debit, credit, 1 + random.below(1_000))
                        },
                        1 => Transfer {
                            id: TransferId(id),
                            pending_id: TransferId(u128::from((index - 1) * 100 + random.below(TRANSFERS_PER_BATCH))),
                            amount: Transfer::AMOUNT_MAX,
                            flags: TransferFlags::POST_PENDING,
                            ..Default::default()
                        },
                        2 => Transfer {
                            flags: TransferFlags::LINKED,
                            ..journal(id, debit, credit, 1 + random.below(1_000))
                        },
                        _ => journal(id, debit, credit, 1 + random.below(1_000)),
                    }
                })
                .collect(),
        ),
    }
}

fn journal(id: u128, debit: u64, credit: u64, amount: u64) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(u128::from(debit)),
        credit_account_id: AccountId(u128::from(credit)),
        amount: u128::from(amount),
        ledger: LedgerId(1),
        code: 1,
        kind: TransferKind::Journal,
        ..Default::default()
    }
}

/// Entry `index`'s timestamp: one second apart, so pending transfers expire.
fn timestamp(index: u64) -> u64 {
    index * SECOND_NS
}

fn entry(index: u64) -> Entry {
    Entry { index, term: 1, data: index.to_be_bytes().to_vec().into(), ..Default::default() }
}

/// Applies entry `index` (whose log entry is `data`) to `store`.
fn apply(store: &mut NodeStore, index: u64, data: &[u8]) {
    assert_eq!(data, index.to_be_bytes(), "log entry {index} is damaged");
    let prepared = prepare(&store.state, timestamp(index), &operation(index)).expect("prepare");
    store.state.apply(Some(&prepared.write_set), AppliedState::at(index, 1), None).expect("apply");
}

/// Applies again, from the log, the entries after the applied index (those
/// a crash took before a flush persisted them); returns the last.
fn redo(store: &mut NodeStore) -> u64 {
    let (applied, last) = (store.state.applied().index, store.log.last_index());
    if last > applied {
        let entries = store.log.entries(applied + 1, last + 1, None, raft::GetEntriesContext::empty(false));
        for entry in entries.expect("the log holds every entry after the applied index") {
            apply(store, entry.index, &entry.data);
        }
    }
    last
}

/// Entries between two flushes of the child's store.
const FLUSH_EVERY: u64 = 7;

/// The child: applies entries after the store's applied index, forever,
/// printing each index once its log entry is synced and it is applied.
fn run_child(dir: &Path) {
    let mut store = NodeStore::open(dir, &StorageConfig::default()).expect("the child opens the store");
    let mut index = redo(&mut store);
    loop {
        index += 1;
        // The Ready loop's order: persist the entry (synced), then apply it.
        let hard_state = HardState { term: 1, commit: index, ..Default::default() };
        store.log.append(&[entry(index)], Some(&hard_state), true).expect("append");
        apply(&mut store, index, &index.to_be_bytes());
        if index.is_multiple_of(FLUSH_EVERY) {
            store.state.db().flush().expect("flush");
        }
        println!("{index}");
    }
}

#[test]
fn crash_child() {
    // Runs only when the crash test starts this binary as its child.
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        run_child(Path::new(&dir));
    }
}

/// Starts the child, lets it run for a random while, SIGKILLs it, and
/// returns the highest index it reported.
fn run_and_kill(dir: &Path, random: &mut Random) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1", "--quiet"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (reports, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(index) = line.trim().parse::<u64>() {
                if reports.send(index).is_err() {
                    break;
                }
            }
        }
    });
    // Sometimes kill while the child is still opening (recovering), mostly
    // once it is writing.
    if random.below(10) != 0 {
        let _ = received.recv_timeout(Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_micros(random.below(40_000)));
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("the reader thread ends with the pipe");
    received.try_iter().max().unwrap_or(0)
}

#[test]
fn every_reported_batch_survives_sigkill_and_nothing_partial_is_visible() {
    let kills: u64 = std::env::var("COFFER_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let seed: u64 = std::env::var("COFFER_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0xC0FFEE);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut random = Random(seed);
    let mut model = MemoryStore::new();
    let mut model_index = 0;
    let (mut reported_max, mut redone_kills) = (0, 0);
    for kill in 0..kills {
        reported_max = reported_max.max(run_and_kill(dir.path(), &mut random));
        let store = NodeStore::open(dir.path(), &StorageConfig::default())
            .unwrap_or_else(|error| panic!("kill {kill} (seed {seed}): the store does not reopen: {error}"));
        let (applied, first, last) = (store.state.applied().index, store.log.first_index(), store.log.last_index());
        assert!(
            last >= reported_max,
            "kill {kill} (seed {seed}): the log ends at {last}, before reported {reported_max}"
        );
        assert!(last >= applied, "kill {kill}: applied index {applied} is past the log's last index {last}");
        assert!(first <= applied + 1, "kill {kill}: the log starts at {first}, after applied index {applied}");
        assert!(applied >= model_index, "kill {kill}: applied index {applied} went back past a flush ({model_index})");
        redone_kills += u64::from(applied < reported_max);
        for index in model_index + 1..=applied {
            let prepared = prepare(&model, timestamp(index), &operation(index)).expect("the model replays");
            model.commit(&prepared.write_set).expect("the model commits");
        }
        model_index = applied;
        assert_eq!(
            state_digest(&store.state).expect("the store's digest"),
            state_digest(&model).expect("the model's digest"),
            "kill {kill} (seed {seed}): the state at applied index {applied} differs from a replay"
        );
    }
    assert!(model_index > 0, "the child never applied a batch");
    assert!(redone_kills > 0, "no kill took an unflushed apply, so none was done again from the log");
    // Done again from the log, the state is the one of every entry in it.
    let mut store = NodeStore::open(dir.path(), &StorageConfig::default()).expect("the store reopens");
    let last = redo(&mut store);
    for index in model_index + 1..=last {
        let prepared = prepare(&model, timestamp(index), &operation(index)).expect("the model replays");
        model.commit(&prepared.write_set).expect("the model commits");
    }
    assert!(last >= reported_max);
    assert_eq!(state_digest(&store.state).unwrap(), state_digest(&model).unwrap(), "redone from the log");
}
