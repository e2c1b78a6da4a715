//! `raft::Storage` contract tests of `LogStore` on RocksDB: the cases raft-rs
//! checks for its own `MemStorage` (term, entries, first and last index,
//! compaction, append, snapshot), plus what only a durable log must do: keep
//! everything across closing and reopening the store.
//!
//! Most tests start from the log raft-rs's tests use: entries 3, 4 and 5 with
//! terms 3, 4 and 5. Here the entries before them were compacted away, so the
//! log is truncated at index 2, term 2.

// A test harness: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::ops::RangeInclusive;
use std::path::Path;

use coffer_storage::{AppliedState, NodeStore, StorageConfig, Truncated};
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::util::limit_size;
use raft::{GetEntriesContext, Storage};
use tempfile::TempDir;

fn open(dir: &Path) -> NodeStore {
    NodeStore::open(dir, &StorageConfig::default()).unwrap()
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, ..Default::default() }
}

/// Entries `indexes`, each of the term equal to its index.
fn entries(indexes: RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|index| entry(index, index)).collect()
}

/// An entry whose encoded size is known: with term and index below 128 each
/// takes a tag byte and a one-byte varint, and `data` of `data_bytes` below
/// 128 takes a tag byte, a length byte and the bytes.
fn sized_entry(index: u64, term: u64, data_bytes: usize) -> (Entry, u64) {
    assert!(index < 128 && term < 128 && (1..128).contains(&data_bytes));
    let entry = Entry { index, term, data: vec![0xAB; data_bytes].into(), ..Default::default() };
    (entry, 2 + 2 + 2 + data_bytes as u64)
}

fn context() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn compacted() -> raft::Error {
    raft::Error::Store(raft::StorageError::Compacted)
}

fn unavailable() -> raft::Error {
    raft::Error::Store(raft::StorageError::Unavailable)
}

fn snapshot_temporarily_unavailable() -> raft::Error {
    raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable)
}

fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState { voters: voters.to_vec(), learners: learners.to_vec(), ..Default::default() }
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit, ..Default::default() }
}

fn snapshot_metadata(index: u64, term: u64, voters: &[u64]) -> SnapshotMetadata {
    let mut metadata = SnapshotMetadata { index, term, ..Default::default() };
    metadata.set_conf_state(conf_state(voters, &[]));
    metadata
}

/// Entries 3, 4, 5 (terms 3, 4, 5), truncated at index 2, term 2.
fn log_3_to_5(dir: &Path) -> NodeStore {
    let mut store = open(dir);
    store.log.append(&entries(1..=5), None, true).unwrap();
    // Applied, as a node compacts only applied entries (a store whose
    // applied index is below the log's start is refused at open).
    store.state.apply(None, AppliedState::at(2, 2), None).unwrap();
    store.log.compact(3).unwrap();
    assert_eq!((Storage::first_index(&store.log), Storage::last_index(&store.log)), (Ok(3), Ok(5)));
    store
}

/// Everything in the log, read through `raft::Storage`.
fn whole_log(store: &NodeStore) -> Vec<Entry> {
    let first = Storage::first_index(&store.log).unwrap();
    let last = Storage::last_index(&store.log).unwrap();
    store.log.entries(first, last + 1, None, context()).unwrap()
}

#[test]
fn a_fresh_log_is_empty_starts_at_index_one_and_has_term_zero_at_index_zero() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    assert_eq!(Storage::first_index(&store.log), Ok(1));
    assert_eq!(Storage::last_index(&store.log), Ok(0));
    assert_eq!(store.log.term(0), Ok(0));
    assert_eq!(store.log.term(1), Err(unavailable()));
    assert_eq!(store.log.entries(1, 1, None, context()), Ok(vec![]));
    let state = store.log.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(state.conf_state, ConfState::default());
}

#[test]
fn term_answers_inside_the_log_and_at_the_truncated_index_and_refuses_outside() {
    let dir = TempDir::new().unwrap();
    let store = log_3_to_5(dir.path());
    let cases = [(1, Err(compacted())), (2, Ok(2)), (3, Ok(3)), (4, Ok(4)), (5, Ok(5)), (6, Err(unavailable()))];
    for (index, want) in cases {
        assert_eq!(store.log.term(index), want, "term({index})");
    }
}

#[test]
fn entries_returns_exactly_the_requested_range() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    store.log.append(&[entry(6, 6)], None, true).unwrap();
    let cases = [
        (3, 4, entries(3..=3)),
        (4, 5, entries(4..=4)),
        (4, 6, entries(4..=5)),
        (4, 7, entries(4..=6)),
        (3, 7, entries(3..=6)),
    ];
    for (low, high, want) in cases {
        assert_eq!(store.log.entries(low, high, u64::MAX, context()), Ok(want), "entries({low}, {high})");
    }
}

#[test]
fn an_empty_range_gives_no_entries() {
    let dir = TempDir::new().unwrap();
    let store = log_3_to_5(dir.path());
    assert_eq!(store.log.entries(4, 4, None, context()), Ok(vec![]));
    assert_eq!(store.log.entries(6, 6, None, context()), Ok(vec![]));
}

#[test]
fn entries_below_the_first_index_are_compacted() {
    let dir = TempDir::new().unwrap();
    let store = log_3_to_5(dir.path());
    assert_eq!(store.log.entries(2, 6, u64::MAX, context()), Err(compacted()));
    assert_eq!(store.log.entries(1, 3, u64::MAX, context()), Err(compacted()));
}

#[test]
fn entries_past_the_last_index_or_of_a_reversed_range_are_refused_not_invented() {
    let dir = TempDir::new().unwrap();
    let store = log_3_to_5(dir.path());
    for (low, high) in [(3, 7), (6, 7), (5, 4)] {
        let result = store.log.entries(low, high, None, context());
        assert!(result.is_err(), "entries({low}, {high}) gave {result:?}");
        assert_ne!(result, Err(compacted()), "entries({low}, {high})");
    }
}

#[test]
fn entries_beyond_max_size_are_cut_but_never_below_one() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    let (e4, s4) = sized_entry(4, 4, 10);
    let (e5, s5) = sized_entry(5, 5, 20);
    let (e6, s6) = sized_entry(6, 6, 30);
    let mut check = vec![e4.clone(), e5.clone(), e6.clone()];
    limit_size(&mut check, Some(s4 + s5 + s6 - 1));
    assert_eq!(check.len(), 2, "the sizes this test assumes are the encoded sizes raft-rs computes");
    store.log.append(&[e4.clone(), e5.clone(), e6.clone()], None, true).unwrap();

    let all = vec![e4.clone(), e5.clone(), e6];
    let first_two = vec![e4.clone(), e5];
    let cases = [
        (u64::MAX, all.clone()),
        (0, vec![e4.clone()]),
        (1, vec![e4.clone()]),
        (s4, vec![e4.clone()]),
        (s4 + s5 - 1, vec![e4]),
        (s4 + s5, first_two.clone()),
        (s4 + s5 + s6 / 2, first_two.clone()),
        (s4 + s5 + s6 - 1, first_two),
        (s4 + s5 + s6, all.clone()),
    ];
    for (max_size, want) in cases {
        assert_eq!(store.log.entries(4, 7, max_size, context()), Ok(want), "max_size {max_size}");
    }
    assert_eq!(store.log.entries(4, 7, None, context()), Ok(all));
}

#[test]
fn entries_cut_by_max_size_agree_with_raft_limit_size_for_every_range_and_limit() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path());
    let (log, sizes): (Vec<Entry>, Vec<u64>) = (1..=6).map(|index| sized_entry(index, 1, 5 * index as usize)).unzip();
    store.log.append(&log, None, true).unwrap();
    let total: u64 = sizes.iter().sum();
    assert_every_range(&store, &log, 1..=7, &(0..=total + 1).collect::<Vec<_>>(), "");
}

/// Checks `store.log.entries` for every range inside `bounds` (`high`
/// exclusive) and each of `max_sizes` against `log` cut by raft-rs's own
/// `limit_size`; `step` names the case in a failure.
fn assert_every_range(store: &NodeStore, log: &[Entry], bounds: RangeInclusive<u64>, max_sizes: &[u64], step: &str) {
    for low in bounds.clone() {
        for high in low..=*bounds.end() {
            for &max_size in max_sizes {
                let mut want: Vec<Entry> = log.iter().filter(|e| (low..high).contains(&e.index)).cloned().collect();
                limit_size(&mut want, Some(max_size));
                let got = store.log.entries(low, high, max_size, context());
                assert_eq!(got, Ok(want), "{step}: entries({low}, {high}, {max_size})");
            }
        }
    }
}

#[test]
fn last_index_follows_appends() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    assert_eq!(Storage::last_index(&store.log), Ok(5));
    store.log.append(&[entry(6, 5)], None, true).unwrap();
    assert_eq!(Storage::last_index(&store.log), Ok(6));
}

#[test]
fn first_index_follows_compaction() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    assert_eq!(Storage::first_index(&store.log), Ok(3));
    store.log.compact(4).unwrap();
    assert_eq!(Storage::first_index(&store.log), Ok(4));
}

#[test]
fn compact_removes_the_entries_below_the_index_and_keeps_the_term_of_the_last_removed() {
    // (compact index, first index after, its term, entries left), as raft-rs's test.
    let cases = [(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)];
    for (compact_index, want_first, want_term, want_len) in cases {
        let dir = TempDir::new().unwrap();
        let mut store = log_3_to_5(dir.path());
        store.log.compact(compact_index).unwrap();
        let first = Storage::first_index(&store.log).unwrap();
        assert_eq!(first, want_first, "compact({compact_index})");
        let first_entry = store.log.entries(first, first + 1, 1, context()).unwrap();
        assert_eq!(first_entry.first().map(|e| e.term), Some(want_term), "compact({compact_index})");
        assert_eq!(whole_log(&store).len(), want_len, "compact({compact_index})");
        assert_eq!(store.log.term(first - 1), Ok(first - 1), "the truncated index keeps its term");
        assert_eq!(store.log.term(first - 2), Err(compacted()), "below the truncated index is compacted");
        assert_eq!(store.log.truncated(), Truncated { index: first - 1, term: first - 1 });
    }
}

#[test]
fn compacting_the_whole_log_keeps_the_last_index_and_its_term() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    store.log.compact(6).unwrap();
    assert_eq!(Storage::first_index(&store.log), Ok(6));
    assert_eq!(Storage::last_index(&store.log), Ok(5));
    assert_eq!(store.log.term(5), Ok(5));
    assert_eq!(store.log.term(4), Err(compacted()));
    assert_eq!(store.log.entries(6, 6, None, context()), Ok(vec![]));
    store.log.append(&[entry(6, 6)], None, true).unwrap();
    assert_eq!(whole_log(&store), entries(6..=6));
}

#[test]
fn compacting_past_the_last_index_is_refused_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    assert!(store.log.compact(7).is_err());
    assert_eq!(Storage::first_index(&store.log), Ok(3));
    assert_eq!(whole_log(&store), entries(3..=5));
}

#[test]
fn append_of_entries_already_in_the_log_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    store.log.append(&entries(3..=5), None, true).unwrap();
    assert_eq!(whole_log(&store), entries(3..=5));
}

#[test]
fn append_replaces_a_conflicting_suffix() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    let appended = [entry(3, 3), entry(4, 6), entry(5, 6)];
    store.log.append(&appended, None, true).unwrap();
    assert_eq!(whole_log(&store), appended);
    assert_eq!(store.log.term(4), Ok(6));
}

#[test]
fn append_that_overlaps_and_extends_the_log_keeps_the_overlap_and_adds_the_rest() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    let appended = [entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 5)];
    store.log.append(&appended, None, true).unwrap();
    assert_eq!(whole_log(&store), appended);
}

#[test]
fn append_at_the_next_index_extends_the_log() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    store.log.append(&[entry(6, 6)], None, true).unwrap();
    assert_eq!(whole_log(&store), entries(3..=6));
}

#[test]
fn append_inside_the_log_drops_every_later_entry_for_good() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = log_3_to_5(dir.path());
        store.log.append(&[entry(4, 5)], None, true).unwrap();
        assert_eq!(whole_log(&store), [entry(3, 3), entry(4, 5)]);
        assert_eq!(Storage::last_index(&store.log), Ok(4));
        assert_eq!(store.log.term(5), Err(unavailable()));
        assert!(store.log.entries(4, 6, None, context()).is_err());
    }
    let store = open(dir.path());
    assert_eq!(whole_log(&store), [entry(3, 3), entry(4, 5)]);
    assert_eq!(store.log.term(5), Err(unavailable()));
}

#[test]
fn append_over_the_compacted_log_is_refused_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    let result = store.log.append(&[entry(2, 3), entry(3, 3), entry(4, 5)], Some(&hard_state(9, 1, 1)), true);
    assert!(result.is_err());
    assert_eq!(whole_log(&store), entries(3..=5));
    assert_eq!(store.log.term(2), Ok(2));
    assert_eq!(store.log.hard_state(), &HardState::default(), "a refused append writes no hard state either");
}

#[test]
fn append_leaving_a_gap_is_refused_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    assert!(store.log.append(&[entry(7, 6)], None, true).is_err());
    assert_eq!(whole_log(&store), entries(3..=5));
    assert_eq!(Storage::last_index(&store.log), Ok(5));
}

#[test]
fn append_of_entries_that_are_not_contiguous_is_refused_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    assert!(store.log.append(&[entry(6, 6), entry(8, 6)], None, true).is_err());
    assert!(store.log.append(&[entry(4, 6), entry(4, 6)], None, true).is_err());
    assert_eq!(whole_log(&store), entries(3..=5));
}

#[test]
fn append_writes_the_hard_state_with_the_entries_or_alone() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    store.log.append(&[entry(6, 6)], Some(&hard_state(6, 2, 5)), true).unwrap();
    assert_eq!(store.log.hard_state(), &hard_state(6, 2, 5));
    assert_eq!(store.log.initial_state().unwrap().hard_state, hard_state(6, 2, 5));
    store.log.append(&[], Some(&hard_state(7, 3, 6)), true).unwrap();
    assert_eq!(store.log.initial_state().unwrap().hard_state, hard_state(7, 3, 6));
    assert_eq!(whole_log(&store), entries(3..=6));
}

#[test]
fn set_commit_moves_only_the_commit_index() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = log_3_to_5(dir.path());
        store.log.append(&[], Some(&hard_state(5, 2, 3)), true).unwrap();
        store.log.set_commit(5).unwrap();
        assert_eq!(store.log.hard_state(), &hard_state(5, 2, 5));
    }
    assert_eq!(open(dir.path()).log.hard_state(), &hard_state(5, 2, 5));
}

#[test]
fn snapshot_is_temporarily_unavailable_until_one_at_or_past_the_request_exists() {
    let dir = TempDir::new().unwrap();
    let mut store = log_3_to_5(dir.path());
    assert_eq!(store.log.snapshot(0, 2), Err(snapshot_temporarily_unavailable()));
    assert_eq!(store.log.snapshot(4, 2), Err(snapshot_temporarily_unavailable()));

    let at_4 = snapshot_metadata(4, 4, &[1, 2, 3]);
    store.log.set_latest_snapshot(at_4.clone());
    assert_eq!(store.log.snapshot(5, 2), Err(snapshot_temporarily_unavailable()));
    for request_index in [0, 3, 4] {
        let snapshot = store.log.snapshot(request_index, 2).unwrap();
        assert_eq!(snapshot.get_metadata(), &at_4, "snapshot({request_index})");
    }

    let at_5 = snapshot_metadata(5, 5, &[1, 2, 3]);
    store.log.set_latest_snapshot(at_5.clone());
    assert_eq!(store.log.snapshot(5, 2).unwrap().get_metadata(), &at_5);

    store.log.set_latest_snapshot(snapshot_metadata(3, 3, &[1]));
    let mut want = Snapshot::default();
    want.set_metadata(at_5);
    assert_eq!(store.log.snapshot(0, 2), Ok(want), "an older snapshot does not replace a newer one");
}

#[test]
fn initial_state_returns_the_persisted_hard_state_and_conf_state() {
    let dir = TempDir::new().unwrap();
    let voters = conf_state(&[1, 2, 3], &[4]);
    {
        let mut store = log_3_to_5(dir.path());
        store.log.append(&[], Some(&hard_state(5, 1, 4)), true).unwrap();
        store.state.apply(None, AppliedState::at(3, 3), Some(&conf_state(&[1], &[]))).unwrap();
        store.state.apply(None, AppliedState::at(4, 4), Some(&voters)).unwrap();
        let state = store.log.initial_state().unwrap();
        assert_eq!((state.hard_state, state.conf_state), (hard_state(5, 1, 4), voters.clone()));
    }
    let store = open(dir.path());
    let state = store.log.initial_state().unwrap();
    assert_eq!((state.hard_state, state.conf_state), (hard_state(5, 1, 4), voters));
}

#[test]
fn the_log_and_raft_state_survive_closing_and_reopening() {
    let dir = TempDir::new().unwrap();
    let voters = conf_state(&[1, 2, 3], &[]);
    let log: Vec<Entry> = (1..=7u64)
        .map(|index| Entry { index, term: 1 + index / 3, data: vec![index as u8; 9].into(), ..Default::default() })
        .collect();
    let kept = {
        let mut store = open(dir.path());
        store.log.append(&log, Some(&hard_state(3, 2, 5)), true).unwrap();
        store.log.compact(4).unwrap();
        let rewritten = Entry { index: 6, term: 3, data: b"rewritten".to_vec().into(), ..Default::default() };
        store.log.append(&[rewritten], Some(&hard_state(3, 2, 5)), true).unwrap();
        store.state.apply(None, AppliedState::at(5, 2), Some(&voters)).unwrap();
        whole_log(&store)
    };
    assert_eq!(kept.iter().map(|e| e.index).collect::<Vec<_>>(), [4, 5, 6]);

    let store = open(dir.path());
    assert_eq!(Storage::first_index(&store.log), Ok(4));
    assert_eq!(Storage::last_index(&store.log), Ok(6));
    assert_eq!(whole_log(&store), kept);
    assert_eq!(store.log.truncated(), Truncated { index: 3, term: 2 });
    assert_eq!(store.log.term(3), Ok(2));
    assert_eq!(store.log.term(2), Err(compacted()));
    assert_eq!(store.log.term(7), Err(unavailable()));
    let state = store.log.initial_state().unwrap();
    assert_eq!((state.hard_state, state.conf_state), (hard_state(3, 2, 5), voters));
    assert_eq!(store.state.applied(), AppliedState::at(5, 2));
}

#[test]
fn a_compacted_log_reopens_empty_at_its_truncated_index() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = log_3_to_5(dir.path());
        store.state.apply(None, AppliedState::at(5, 5), None).unwrap();
        store.log.compact(6).unwrap();
    }
    let mut store = open(dir.path());
    assert_eq!((Storage::first_index(&store.log), Storage::last_index(&store.log)), (Ok(6), Ok(5)));
    assert_eq!(store.log.term(5), Ok(5));
    store.log.append(&[entry(6, 6)], None, true).unwrap();
    assert_eq!(whole_log(&store), entries(6..=6));
}

/// Checks every term and every range (with every size limit) of `store`'s
/// log against `model`, the entries from the first index on, after
/// `truncated` (index and term).
fn assert_log_is(store: &NodeStore, model: &[Entry], truncated: (u64, u64), step: &str) {
    let first = truncated.0 + 1;
    let last = truncated.0 + model.len() as u64;
    assert_eq!((store.log.first_index(), store.log.last_index()), (first, last), "{step}: bounds");
    assert_eq!(store.log.term(truncated.0), Ok(truncated.1), "{step}: term at the truncated index");
    for entry in model {
        assert_eq!(store.log.term(entry.index), Ok(entry.term), "{step}: term({})", entry.index);
    }
    assert_eq!(store.log.term(last + 1), Err(unavailable()), "{step}: term past the end");
    let total: u64 = model.iter().map(|entry| u64::from(protobuf::Message::compute_size(entry))).sum();
    let max_sizes: Vec<u64> = (0..=total + 1).step_by(7).chain([u64::MAX]).collect();
    assert_every_range(store, model, first..=last + 1, &max_sizes, step);
}

/// The newest entries are answered from memory (up to `recent_log_bytes`
/// of payload) and older ones from RocksDB. Across appends that extend,
/// replace and cut the log, a reopen (which keeps nothing in memory) and
/// compactions, every term and range agrees with a model of the log, with
/// two entries kept and with all of them.
#[test]
fn terms_and_entries_kept_in_memory_agree_with_the_log_on_disk() {
    // Entries of 10 payload bytes: 25 bytes keep the newest two.
    for recent_log_bytes in [25, usize::MAX] {
        let dir = TempDir::new().unwrap();
        let config = StorageConfig { recent_log_bytes, ..StorageConfig::default() };
        let mut store = NodeStore::open(dir.path(), &config).unwrap();
        let make = |indexes: RangeInclusive<u64>, term: u64| -> Vec<Entry> {
            let entry = |index: u64| Entry { index, term, data: vec![index as u8; 10].into(), ..Default::default() };
            indexes.map(entry).collect()
        };
        let mut model: Vec<Entry> = Vec::new();
        let append = |store: &mut NodeStore, model: &mut Vec<Entry>, entries: Vec<Entry>| {
            store.log.append(&entries, None, true).unwrap();
            model.retain(|entry| entry.index < entries[0].index);
            model.extend(entries);
        };
        append(&mut store, &mut model, make(1..=8, 1));
        assert_log_is(&store, &model, (0, 0), "extended");
        append(&mut store, &mut model, make(6..=10, 2));
        assert_log_is(&store, &model, (0, 0), "suffix replaced");
        append(&mut store, &mut model, make(4..=5, 3));
        assert_log_is(&store, &model, (0, 0), "cut back to 5");
        append(&mut store, &mut model, make(6..=12, 3));
        assert_log_is(&store, &model, (0, 0), "extended again");
        drop(store);
        let mut store = NodeStore::open(dir.path(), &config).unwrap();
        assert_log_is(&store, &model, (0, 0), "reopened");
        append(&mut store, &mut model, make(12..=13, 4));
        assert_log_is(&store, &model, (0, 0), "replaced after reopening");
        store.log.compact(5).unwrap();
        model.retain(|entry| entry.index >= 5);
        assert_log_is(&store, &model, (4, 3), "compacted to 5");
        store.log.compact(13).unwrap();
        model.retain(|entry| entry.index >= 13);
        assert_log_is(&store, &model, (12, 4), "compacted to the last entry");
        append(&mut store, &mut model, make(14..=16, 5));
        assert_log_is(&store, &model, (12, 4), "extended after compaction");
    }
}
