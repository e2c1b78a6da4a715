//! Bad input and faults: directories that are not Coffer stores, records
//! corrupted on disk, the ledger state held against the in-memory store, and
//! snapshots (sent in chunks, tampered with, backed up and restored, and
//! installs interrupted by a crash).

// A test harness: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use coffer_ledger::{
    balance_as_of, get_account_balances, get_account_transfers, lookup_accounts, lookup_transfers,
    prepare_create_accounts, prepare_create_ledgers, prepare_create_transfers, prepare_expire_pending, query_accounts,
    query_transfers, read_changes, state_digest, stored_state_digest, trial_balance, trial_balance_as_of, Account,
    AccountFilter, AccountFlags, AccountId, AccountKind, ApplyError, Change, ChangeFilter, ChangeKind,
    CreateAccountResult, CreateLedgerResult, CreateTransferResult, ExpireResult, Ledger, LedgerId, MemoryStore,
    Operation, OperationResults, PendingState, QueryError, Sides, Store, StoreError, StoreMut, Transfer, TransferFlags,
    TransferId, TransferKind, TransferQuery, WriteSet, BATCH_EVENTS_MAX, NS_PER_S,
};
use coffer_storage::db::{
    keys, CF_ACCOUNTS, CF_ACCOUNT_TRANSFERS, CF_BALANCES, CF_CHANGES, CF_INDEX, CF_META, CF_RAFT_LOG, CF_RAFT_STATE,
    CF_TRANSFERS, KEY_APPLIED, KEY_FORMAT, KEY_HARD_STATE, KEY_SNAPSHOT_INSTALL, STATE_COLUMN_FAMILIES,
};
use coffer_storage::snapshot::{self, SnapshotManifest, SnapshotReader, SnapshotWriter, CHECKPOINT_DIR, MANIFEST_FILE};
use coffer_storage::{AppliedState, Db, NodeStore, StorageConfig, StorageError, Truncated, FORMAT_VERSION};
use raft::prelude::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, Storage};
use tempfile::TempDir;

/// The term every entry of the treasury was proposed in.
const TERM: u64 = 2;
/// Chunk size of snapshots in transit.
const CHUNK_BYTES: usize = 4096;
/// The first batch's timestamp.
const T0: u64 = 1_000 * NS_PER_S;
const KRW: LedgerId = LedgerId(1);
const CASH: AccountId = AccountId(1);
const REVENUE: AccountId = AccountId(2);
const EXPENSE: AccountId = AccountId(3);
const RESERVE: AccountId = AccountId(4);
const UNKNOWN: AccountId = AccountId(99);
/// Where the treasury node stands: its last entry changed the membership.
const TREASURY_APPLIED: AppliedState = AppliedState::at(7, TERM);

fn open(dir: &Path) -> NodeStore {
    NodeStore::open(dir, &StorageConfig::default()).unwrap()
}

fn try_open(dir: &Path) -> Result<NodeStore, StorageError> {
    NodeStore::open(dir, &StorageConfig::default())
}

fn account(id: AccountId, kind: AccountKind, code: u16, flags: AccountFlags) -> Account {
    Account { id, ledger: KRW, code, kind, flags, ..Default::default() }
}

fn transfer(id: u128, debit: AccountId, credit: AccountId, amount: u128, kind: TransferKind) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: KRW,
        code: 1,
        kind,
        ..Default::default()
    }
}

/// A pending payment from the expense account, reserved in cash.
fn pending_payment(id: u128, amount: u128, timeout_s: u32) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING,
        timeout: timeout_s,
        ..transfer(id, EXPENSE, CASH, amount, TransferKind::Expenditure)
    }
}

fn post_pending(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        pending_id: TransferId(pending_id),
        amount,
        kind: TransferKind::Expenditure,
        flags: TransferFlags::POST_PENDING,
        ..Default::default()
    }
}

fn void_pending(id: u128, pending_id: u128) -> Transfer {
    Transfer { flags: TransferFlags::VOID_PENDING, ..post_pending(id, pending_id, 0) }
}

/// The treasury's Raft entries 1 to 6, as (timestamp, operation).
fn treasury() -> Vec<(u64, Operation)> {
    use TransferKind::{CashTransfer, Expenditure, Receipt};
    let krw = Ledger::new(KRW, "KRW", 0, "Won");
    vec![
        (T0, Operation::CreateLedgers(vec![krw])),
        (
            T0 + 10,
            Operation::CreateAccounts(vec![
                account(CASH, AccountKind::Cash, 101, AccountFlags::HISTORY),
                account(REVENUE, AccountKind::Other, 401, AccountFlags::NONE),
                account(EXPENSE, AccountKind::Other, 501, AccountFlags::HISTORY),
                account(RESERVE, AccountKind::Cash, 102, AccountFlags::HISTORY),
            ]),
        ),
        (
            T0 + 100,
            Operation::CreateTransfers(vec![
                transfer(1, CASH, REVENUE, 1_000_000, Receipt),
                transfer(2, EXPENSE, CASH, 200_000, Expenditure),
                pending_payment(3, 50_000, 3_600),
                pending_payment(4, 30_000, 0),
                pending_payment(5, 20_000, 0),
                pending_payment(6, 10_000, 1),
                transfer(7, RESERVE, CASH, 100_000, CashTransfer),
            ]),
        ),
        (
            T0 + 200,
            Operation::CreateTransfers(vec![
                post_pending(8, 4, 25_000),
                void_pending(9, 5),
                transfer(10, UNKNOWN, REVENUE, 1, Receipt),
            ]),
        ),
        (T0 + 2 * NS_PER_S, Operation::ExpirePending),
        (
            T0 + 3 * NS_PER_S,
            Operation::CreateTransfers(vec![
                transfer(11, CASH, REVENUE, 5_000, Receipt),
                transfer(1, CASH, REVENUE, 1_000_000, Receipt),
                transfer(10, UNKNOWN, REVENUE, 1, Receipt),
            ]),
        ),
    ]
}

/// What each treasury entry must result in.
fn treasury_results() -> Vec<OperationResults> {
    use CreateTransferResult as T;
    vec![
        OperationResults::Ledgers(vec![CreateLedgerResult::Created]),
        OperationResults::Accounts(vec![CreateAccountResult::Created; 4]),
        OperationResults::Transfers(vec![T::Created; 7]),
        OperationResults::Transfers(vec![T::Created, T::Created, T::DebitAccountNotFound]),
        OperationResults::Expired(ExpireResult { expired: 1, more: false }),
        OperationResults::Transfers(vec![T::Created, T::Exists, T::IdAlreadyFailed]),
    ]
}

/// Prepares `operation` on `store` with the ledger's prepare functions.
fn prepare_on<S: Store>(store: &S, timestamp: u64, operation: &Operation) -> (OperationResults, WriteSet) {
    match operation {
        Operation::CreateLedgers(events) => {
            let prepared = prepare_create_ledgers(store, timestamp, events).unwrap();
            (OperationResults::Ledgers(prepared.results), prepared.write_set)
        }
        Operation::CreateAccounts(events) => {
            let prepared = prepare_create_accounts(store, timestamp, events).unwrap();
            (OperationResults::Accounts(prepared.results), prepared.write_set)
        }
        Operation::CreateTransfers(events) => {
            let prepared = prepare_create_transfers(store, timestamp, events).unwrap();
            (OperationResults::Transfers(prepared.results), prepared.write_set)
        }
        Operation::ExpirePending => {
            let prepared = prepare_expire_pending(store, timestamp).unwrap();
            (OperationResults::Expired(prepared.results), prepared.write_set)
        }
        Operation::SetPeriods(events) => {
            let prepared = coffer_ledger::prepare_set_periods(store, timestamp, events).unwrap();
            (OperationResults::Periods(prepared.results), prepared.write_set)
        }
        Operation::Reconcile(_) => {
            let prepared = coffer_ledger::prepare(store, timestamp, operation).unwrap();
            (prepared.results, prepared.write_set)
        }
        Operation::Close(step) => {
            let prepared = coffer_ledger::prepare_close(store, timestamp, step).unwrap();
            (prepared.results, prepared.write_set)
        }
    }
}

/// Puts entry `index` in the node's log, with a hard state committing it.
fn append_to_log(node: &mut NodeStore, index: u64) {
    let entry = Entry { index, term: TERM, ..Default::default() };
    let hard_state = HardState { term: TERM, vote: 1, commit: index, ..Default::default() };
    node.log.append(&[entry], Some(&hard_state), true).unwrap();
}

/// Applies Raft entry `index` as a node does: the entry is in the log, then
/// its write set and the applied index are written together.
fn apply_entry(
    node: &mut NodeStore,
    index: u64,
    timestamp: u64,
    operation: &Operation,
) -> (OperationResults, WriteSet) {
    append_to_log(node, index);
    let (results, write_set) = prepare_on(&node.state, timestamp, operation);
    node.state.apply(Some(&write_set), AppliedState::at(index, TERM), None).unwrap();
    (results, write_set)
}

fn voters() -> ConfState {
    ConfState { voters: vec![1, 2, 3], ..Default::default() }
}

/// A node that applied the whole treasury (entries 1 to 6), then a
/// membership change (entry 7).
fn treasury_node(dir: &Path) -> NodeStore {
    let mut node = open(dir);
    for (index, (timestamp, operation)) in (1..).zip(treasury()) {
        apply_entry(&mut node, index, timestamp, &operation);
    }
    append_to_log(&mut node, TREASURY_APPLIED.index);
    node.state.apply(None, TREASURY_APPLIED, Some(&voters())).unwrap();
    node
}

/// The in-memory store after the treasury's entries.
fn treasury_memory() -> MemoryStore {
    let mut memory = MemoryStore::new();
    for (timestamp, operation) in treasury() {
        let (_, write_set) = prepare_on(&memory, timestamp, &operation);
        memory.commit(&write_set).unwrap();
    }
    memory
}

/// A node with a state of its own: a dollar ledger, a one-voter membership,
/// a log of term 1.
fn other_node(dir: &Path) -> NodeStore {
    let mut node = open(dir);
    let log: Vec<Entry> = (1..=3).map(|index| Entry { index, term: 1, ..Default::default() }).collect();
    node.log.append(&log, Some(&HardState { term: 1, vote: 9, commit: 2, ..Default::default() }), true).unwrap();
    let usd = Ledger::new(LedgerId(9), "USD", 2, "Dollar");
    let prepared = prepare_create_ledgers(&node.state, 5, &[usd]).unwrap();
    node.state.apply(Some(&prepared.write_set), AppliedState::at(1, 1), None).unwrap();
    let alone = ConfState { voters: vec![9], ..Default::default() };
    node.state.apply(None, AppliedState::at(2, 1), Some(&alone)).unwrap();
    node
}

/// Every filter shape a client can ask an account's history with.
fn filters(account_id: AccountId) -> Vec<AccountFilter> {
    let ranges = [(0, 0), (T0 + 101, 0), (0, T0 + 200), (T0 + 102, T0 + 106), (T0 + 200, T0 + 200), (u64::MAX - 1, 0)];
    let mut filters = Vec::new();
    for (timestamp_min, timestamp_max) in ranges {
        for reversed in [false, true] {
            for sides in [Sides::Both, Sides::Debits, Sides::Credits] {
                for limit in [1, 2, BATCH_EVENTS_MAX as u32] {
                    filters.push(AccountFilter { account_id, timestamp_min, timestamp_max, limit, sides, reversed });
                }
            }
        }
    }
    filters
}

/// Every range shape the change log is read with.
fn change_filters() -> Vec<ChangeFilter> {
    let ranges = [(0, u64::MAX), (T0 + 10, T0 + 105), (T0 + 101, T0 + 101), (T0 + 300, T0 + 2 * NS_PER_S), (9, 8)];
    let mut filters = Vec::new();
    for (timestamp_min, timestamp_max) in ranges {
        for reversed in [false, true] {
            for limit in [0, 1, 3, u32::MAX] {
                filters.push(ChangeFilter { timestamp_min, timestamp_max, limit, reversed });
            }
        }
    }
    filters
}

/// Asserts that two stores hold the same state and answer every read alike,
/// history and balances (which the digest leaves out) included.
fn assert_same_reads<A: Store, B: Store>(a: &A, b: &B, context: &str) {
    for filter in change_filters() {
        assert_eq!(a.changes(&filter), b.changes(&filter), "{context}: changes of {filter:?}");
    }
    for after in [0, T0 + 10, T0 + 200] {
        assert_eq!(read_changes(a, after, KRW, 5), read_changes(b, after, KRW, 5), "{context}: changes after {after}");
    }
    let queries = [
        TransferQuery::all(3),
        TransferQuery { timestamp_min: T0, ..TransferQuery::all(3) },
        TransferQuery { kind: TransferKind::Expenditure.code(), reversed: true, ..TransferQuery::all(10) },
        TransferQuery { ledger: KRW, code: 1, timestamp_min: T0 + 100, ..TransferQuery::all(10) },
        TransferQuery { ledger: KRW, user_data_64: 7, ..TransferQuery::all(2) },
    ];
    for query in queries {
        assert_eq!(query_transfers(a, &query), query_transfers(b, &query), "{context}: {query:?}");
        assert_eq!(query_accounts(a, &query), query_accounts(b, &query), "{context}: accounts {query:?}");
    }
    assert_eq!(state_digest(a), state_digest(b), "{context}: digest");
    assert_eq!(stored_state_digest(a), stored_state_digest(b), "{context}: stored digest");
    assert_eq!(stored_state_digest(a), state_digest(a), "{context}: stored digest against the recomputed one");
    assert_eq!(a.last_timestamp(), b.last_timestamp(), "{context}: last timestamp");
    let accounts = [CASH, REVENUE, EXPENSE, RESERVE, UNKNOWN];
    assert_eq!(lookup_accounts(a, &accounts), lookup_accounts(b, &accounts), "{context}: accounts");
    let transfers: Vec<TransferId> = (1..=13).map(TransferId).collect();
    assert_eq!(lookup_transfers(a, &transfers), lookup_transfers(b, &transfers), "{context}: transfers");
    for id in transfers {
        assert_eq!(a.pending_status(id), b.pending_status(id), "{context}: pending status of {id}");
        assert_eq!(a.transfer_failure(id), b.transfer_failure(id), "{context}: failure of {id}");
    }
    for (up_to, limit) in [(u64::MAX, 100), (T0 + 150, 100), (u64::MAX, 1), (0, 10)] {
        assert_eq!(a.expiring(up_to, limit), b.expiring(up_to, limit), "{context}: expiring({up_to}, {limit})");
    }
    for ledger in [KRW, LedgerId(9)] {
        assert_eq!(trial_balance(a, ledger), trial_balance(b, ledger), "{context}: trial balance of {ledger}");
    }
    let timestamps =
        [0, T0, T0 + 10, T0 + 99, T0 + 100, T0 + 103, T0 + 106, T0 + 200, T0 + 201, T0 + 3 * NS_PER_S, u64::MAX];
    for ledger in [KRW, LedgerId(9)] {
        for timestamp in timestamps {
            let (left, right) = (trial_balance_as_of(a, ledger, timestamp), trial_balance_as_of(b, ledger, timestamp));
            assert_eq!(left, right, "{context}: trial balance of {ledger} as of {timestamp}");
        }
    }
    for account in accounts {
        for timestamp in timestamps {
            let (left, right) = (balance_as_of(a, account, timestamp), balance_as_of(b, account, timestamp));
            assert_eq!(left, right, "{context}: balance of {account} as of {timestamp}");
        }
        for filter in filters(account) {
            let (left, right) = (get_account_transfers(a, &filter), get_account_transfers(b, &filter));
            assert_eq!(left, right, "{context}: transfers of {filter:?}");
            let (left, right) = (get_account_balances(a, &filter), get_account_balances(b, &filter));
            assert_eq!(left, right, "{context}: balances of {filter:?}");
        }
    }
}

/// Every file under `dir` with its bytes (a directory with none), by path
/// relative to `dir`.
fn dir_contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dir).unwrap().to_owned();
            if path.is_dir() {
                files.insert(relative, Vec::new());
                pending.push(path);
            } else {
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Asserts that `dir` holds exactly the files of `before`, byte for byte,
/// naming those that differ.
fn assert_unchanged(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let after = dir_contents(dir);
    let changed: BTreeSet<&PathBuf> =
        before.keys().chain(after.keys()).filter(|path| before.get(*path) != after.get(*path)).collect();
    assert!(changed.is_empty(), "{} changed: {changed:?}", dir.display());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Flips one bit of the raw value under `key` in `cf`, behind the frame's back.
fn flip_stored_bit(db: &Db, cf: &'static str, key: &[u8]) {
    let handle = db.cf(cf).unwrap();
    let mut value = db.rocksdb().get_cf(handle, key).unwrap().expect("the record to corrupt exists");
    let last = value.len() - 1;
    value[last] ^= 0x04;
    db.rocksdb().put_cf(handle, key, value).unwrap();
}

/// Writes `payload` under `key` in `cf`, framed as Coffer frames everything.
fn put_framed(db: &Db, cf: &'static str, key: &[u8], payload: &[u8]) {
    let mut batch = Default::default();
    db.put(&mut batch, cf, key, payload).unwrap();
    db.write(batch, true).unwrap();
}

/// Flips a byte in the middle of `path`.
fn flip_file_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(path, bytes).unwrap();
}

/// The `(cf, key)` a corruption error names; panics on any other error.
fn corruption_in(error: StorageError) -> (&'static str, String) {
    match error {
        StorageError::Corruption { cf, key, .. } => (cf, key),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

/// The storage error inside what `raft::Storage` returned.
fn inside_raft_error(error: raft::Error) -> StorageError {
    match error {
        raft::Error::Store(raft::StorageError::Other(inner)) => *inner.downcast::<StorageError>().unwrap(),
        other => panic!("expected a storage error inside the raft error, got {other:?}"),
    }
}

/// Reads a snapshot out in chunks and writes them into `staging`, as a
/// leader sends one to a follower.
fn send(snapshot_dir: &Path, staging: &Path) -> SnapshotManifest {
    let mut reader = SnapshotReader::open(snapshot_dir, CHUNK_BYTES).unwrap();
    let mut writer = SnapshotWriter::new(staging).unwrap();
    let mut chunks = 0;
    while let Some(chunk) = reader.next_chunk().unwrap() {
        assert!(chunk.data.len() <= CHUNK_BYTES);
        writer.write_chunk(&chunk).unwrap();
        chunks += 1;
    }
    assert!(chunks > 2, "a snapshot is a manifest and several files");
    writer.finish().unwrap()
}

/// What must not change on a node that refused something.
fn node_fingerprint(node: &NodeStore) -> impl PartialEq + std::fmt::Debug {
    let raft_state = node.log.initial_state().unwrap();
    (
        state_digest(&node.state).unwrap(),
        node.state.applied(),
        node.log.truncated(),
        node.log.last_index(),
        raft_state.hard_state,
        raft_state.conf_state,
        snapshot::interrupted_install(node.state.db()).unwrap(),
    )
}

/// The checkpoint file of a received snapshot whose name contains `pattern`.
fn checkpoint_file(snapshot_dir: &Path, pattern: &str) -> PathBuf {
    let dir = snapshot_dir.join(CHECKPOINT_DIR);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    names.sort();
    names
        .into_iter()
        .find(|path| path.file_name().unwrap().to_str().unwrap().contains(pattern))
        .unwrap_or_else(|| panic!("no {pattern} file in {}", dir.display()))
}

/// Asserts that `node`'s log is what an installed treasury snapshot leaves.
fn assert_log_reset_to_treasury_snapshot(node: &NodeStore) {
    let index = TREASURY_APPLIED.index;
    assert_eq!(node.log.truncated(), Truncated { index, term: TERM });
    assert_eq!(Storage::first_index(&node.log), Ok(index + 1));
    assert_eq!(Storage::last_index(&node.log), Ok(index));
    assert_eq!(node.log.term(index), Ok(TERM));
    assert_eq!(node.log.term(index - 1), Err(raft::Error::Store(raft::StorageError::Compacted)));
    assert_eq!(node.log.entries(index + 1, index + 1, None, GetEntriesContext::empty(false)), Ok(vec![]));
    let raft_state = node.log.initial_state().unwrap();
    assert_eq!(raft_state.conf_state, voters());
    assert!(raft_state.hard_state.commit >= index && raft_state.hard_state.term >= TERM);
}

// Opening what is not a Coffer store.

#[test]
fn the_options_set_by_string_reach_rocksdb() {
    // `allow_trivial_move` has no setter in the Rust binding and is set from
    // an options string: RocksDB's own options file shows whether it took.
    let dir = TempDir::new().unwrap();
    drop(open(dir.path()));
    let options_file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("OPTIONS-")))
        .max()
        .expect("RocksDB wrote an options file");
    let text = std::fs::read_to_string(options_file).unwrap();
    let section = |cf: &str| {
        let start = text.find(&format!("[CFOptions \"{cf}\"]")).unwrap_or_else(|| panic!("no section for {cf}"));
        let rest = &text[start + 1..];
        rest[..rest.find("\n[CFOptions").unwrap_or(rest.len())].to_string()
    };
    for cf in [CF_TRANSFERS, CF_CHANGES] {
        let options = section(cf);
        assert!(options.contains("compaction_style=kCompactionStyleUniversal"), "{cf}: {options}");
        assert!(options.contains("allow_trivial_move=true"), "{cf}: {options}");
        // What was set before the options string survives it.
        let buffer = format!("write_buffer_size={}", StorageConfig::default().write_buffer_bytes);
        assert!(options.contains(&buffer), "{cf}: {options}");
        assert!(options.contains("compression=kNoCompression"), "{cf}: {options}");
    }
    assert!(section(CF_ACCOUNTS).contains("allow_trivial_move=false"), "only the insert-only families");
    // Families only scanned merge later than those probed for each new id.
    let trigger = |cf: &str| {
        let options = section(cf);
        let value = options.split("level0_file_num_compaction_trigger=").nth(1).expect("the trigger is listed");
        value[..value.find('\n').unwrap_or(value.len())].trim().parse::<u32>().unwrap()
    };
    assert_eq!((trigger(CF_ACCOUNT_TRANSFERS), trigger(CF_INDEX), trigger(CF_CHANGES)), (16, 16, 16));
    assert_eq!((trigger(CF_TRANSFERS), trigger(CF_ACCOUNTS)), (4, 4));
    assert!(section(CF_INDEX).contains("level0_stop_writes_trigger=48"), "{}", section(CF_INDEX));
    assert!(section(CF_ACCOUNTS).contains("HashLinkListRepFactory"), "accounts' memtable");
    // A memtable filter where a miss would search a skip list, not a bucket.
    assert!(section(CF_ACCOUNTS).contains("memtable_prefix_bloom_size_ratio=0.000000"), "{}", section(CF_ACCOUNTS));
    assert!(section(CF_TRANSFERS).contains("memtable_prefix_bloom_size_ratio=0.010000"), "{}", section(CF_TRANSFERS));
}

#[test]
fn a_non_empty_directory_that_is_not_a_database_is_refused_and_left_unchanged() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("ledger.csv"), "id,amount\n1,100\n").unwrap();
    std::fs::create_dir(dir.path().join("old")).unwrap();
    std::fs::write(dir.path().join("old").join("notes.txt"), "keep me").unwrap();
    let before = dir_contents(dir.path());
    match try_open(dir.path()) {
        Err(StorageError::NotACofferStore { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("expected NotACofferStore, got {other:?}"),
    }
    assert_unchanged(dir.path(), &before);
}

#[test]
fn a_directory_with_a_current_file_but_no_database_is_refused_and_left_unchanged() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("CURRENT"), "MANIFEST-000001\n").unwrap();
    let before = dir_contents(dir.path());
    assert!(matches!(try_open(dir.path()), Err(StorageError::NotACofferStore { .. })));
    assert_unchanged(dir.path(), &before);
}

#[test]
fn a_path_that_is_a_file_is_refused_and_left_unchanged() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("store");
    std::fs::write(&file, "not a directory").unwrap();
    assert!(try_open(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn a_database_without_a_format_marker_is_refused_and_left_unchanged() {
    let dir = TempDir::new().unwrap();
    {
        let node = open(dir.path());
        let db = node.state.db();
        db.rocksdb().delete_cf(db.cf(CF_META).unwrap(), KEY_FORMAT).unwrap();
    }
    let before = dir_contents(dir.path());
    assert!(matches!(try_open(dir.path()), Err(StorageError::NotACofferStore { .. })));
    assert_unchanged(dir.path(), &before);
}

#[test]
fn a_database_whose_format_marker_is_not_coffers_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let node = open(dir.path());
        put_framed(node.state.db(), CF_META, KEY_FORMAT, b"other-store\x00\x00\x00\x01");
    }
    assert!(matches!(try_open(dir.path()), Err(StorageError::NotACofferStore { .. })));
}

#[test]
fn a_format_marker_that_fails_its_checksum_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let node = open(dir.path());
        flip_stored_bit(node.state.db(), CF_META, KEY_FORMAT);
    }
    assert!(matches!(try_open(dir.path()), Err(StorageError::NotACofferStore { .. })));
}

#[test]
fn a_store_of_another_format_version_is_refused_naming_both_versions_and_left_unchanged() {
    let dir = TempDir::new().unwrap();
    {
        let node = open(dir.path());
        // Version 1: a store from before the change log.
        let mut marker = b"coffer-store".to_vec();
        marker.extend_from_slice(&1u32.to_be_bytes());
        put_framed(node.state.db(), CF_META, KEY_FORMAT, &marker);
    }
    let before = dir_contents(dir.path());
    match try_open(dir.path()) {
        Err(StorageError::FormatVersion { path, found, expected }) => {
            assert_eq!((path.as_path(), found, expected), (dir.path(), 1, FORMAT_VERSION));
        }
        other => panic!("expected FormatVersion, got {other:?}"),
    }
    assert_unchanged(dir.path(), &before);
}

#[test]
fn a_read_only_open_refuses_another_format_version_too() {
    let dir = TempDir::new().unwrap();
    {
        let node = open(dir.path());
        let mut marker = b"coffer-store".to_vec();
        marker.extend_from_slice(&(FORMAT_VERSION + 1).to_be_bytes());
        put_framed(node.state.db(), CF_META, KEY_FORMAT, &marker);
    }
    let result = Db::open_read_only(dir.path());
    let newer = FORMAT_VERSION + 1;
    assert!(matches!(result, Err(StorageError::FormatVersion { found, .. }) if found == newer), "{result:?}");
}

// Records corrupted on disk.

#[test]
fn a_corrupt_transfer_is_reported_naming_its_column_family_and_key_and_never_returned() {
    let dir = TempDir::new().unwrap();
    let node = treasury_node(dir.path());
    // Transfers 1 to 11 share one key: their group's, id 0 (ids differing
    // only in their last four bits).
    flip_stored_bit(node.state.db(), CF_TRANSFERS, &keys::u128(0));
    let key = format!("{:032x}", 0);
    let is_wanted = |error: &StoreError| matches!(error, StoreError::Corruption { table, key: found, .. } if table == CF_TRANSFERS && *found == key);
    let error = node.state.transfer(TransferId(2)).unwrap_err();
    assert!(is_wanted(&error), "{error:?}");
    assert!(is_wanted(&state_digest(&node.state).unwrap_err()));
    match lookup_transfers(&node.state, &[TransferId(1), TransferId(2)]) {
        Err(QueryError::Store(error)) => assert!(is_wanted(&error), "{error:?}"),
        other => panic!("expected the corruption, got {other:?}"),
    }
    match get_account_transfers(&node.state, &AccountFilter::all(EXPENSE, 100)) {
        Err(QueryError::Store(error)) => assert!(is_wanted(&error), "{error:?}"),
        other => panic!("expected the corruption, got {other:?}"),
    }
    assert!(is_wanted(&node.state.transfer(TransferId(11)).unwrap_err()), "the whole group is refused");
    assert!(node.state.account(CASH).unwrap().is_some(), "other records stay readable");
    drop(node);
    let node = open(dir.path());
    assert!(is_wanted(&node.state.transfer(TransferId(2)).unwrap_err()));
}

#[test]
fn a_corrupt_account_is_reported_once_read_from_disk_and_stops_batches_that_touch_it() {
    let dir = TempDir::new().unwrap();
    {
        let node = treasury_node(dir.path());
        flip_stored_bit(node.state.db(), CF_ACCOUNTS, &keys::u128(EXPENSE.0));
    }
    let node = open(dir.path());
    let key = format!("{:032x}", EXPENSE.0);
    match node.state.account(EXPENSE) {
        Err(StoreError::Corruption { table, key: found, .. }) => {
            assert_eq!((table.as_str(), found), (CF_ACCOUNTS, key))
        }
        other => panic!("expected the corruption, got {other:?}"),
    }
    // The trial balance reads running totals, not accounts; a recomputed
    // digest reads every account.
    assert!(matches!(state_digest(&node.state), Err(StoreError::Corruption { .. })));
    let payment = transfer(12, EXPENSE, CASH, 1, TransferKind::Expenditure);
    let prepared = prepare_create_transfers(&node.state, T0 + 4 * NS_PER_S, &[payment]);
    assert!(matches!(prepared, Err(ApplyError::Store(StoreError::Corruption { .. }))), "{prepared:?}");
    assert!(node.state.account(CASH).unwrap().is_some(), "other records stay readable");
}

#[test]
fn an_account_that_breaks_its_limit_on_disk_is_refused_when_read_back() {
    // A record whose frame is intact but whose content no batch could have
    // written (its debits past its credits under a debit limit): the read
    // that pairs with the state machine's check before writing catches it.
    let dir = TempDir::new().unwrap();
    let node = treasury_node(dir.path());
    let mut account = node.state.account(CASH).unwrap().unwrap();
    account.flags = account.flags.with(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
    account.debits_posted = account.credits_posted + 1;
    let mut payload = Vec::new();
    coffer_ledger::codec::encode_account(&account, &mut payload);
    put_framed(node.state.db(), CF_ACCOUNTS, &keys::u128(CASH.0), &payload);
    drop(node);
    let node = open(dir.path());
    match node.state.account(CASH) {
        Err(StoreError::Corruption { table, reason, .. }) => {
            assert_eq!(table, CF_ACCOUNTS);
            assert!(reason.contains("debits_must_not_exceed_credits"), "{reason}");
        }
        other => panic!("expected the corruption, got {other:?}"),
    }
}

#[test]
fn a_corrupt_balance_row_is_reported_by_the_balance_history() {
    let dir = TempDir::new().unwrap();
    let node = treasury_node(dir.path());
    let db = node.state.db();
    let mut rows = db.rocksdb().raw_iterator_cf(db.cf(CF_BALANCES).unwrap());
    rows.seek(keys::u128_u64(CASH.0, 0));
    let key = rows.key().unwrap().to_vec();
    drop(rows);
    assert_eq!(key.get(..16), Some(CASH.0.to_be_bytes().as_slice()), "CASH has balance history");
    flip_stored_bit(db, CF_BALANCES, &key);
    match get_account_balances(&node.state, &AccountFilter::all(CASH, 100)) {
        Err(QueryError::Store(StoreError::Corruption { table, key: found, .. })) => {
            assert_eq!((table.as_str(), found), (CF_BALANCES, hex(&key)));
        }
        other => panic!("expected the corruption, got {other:?}"),
    }
}

#[test]
fn a_corrupt_log_entry_is_reported_by_entries_and_term_and_never_returned() {
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let log: Vec<Entry> =
        (1..=5).map(|index| Entry { index, term: 1, data: vec![7; 16].into(), ..Default::default() }).collect();
    node.log.append(&log, None, true).unwrap();
    flip_stored_bit(node.state.db(), CF_RAFT_LOG, &keys::u64(3));
    // Reopened: the entries just appended are no longer kept in memory.
    drop(node);
    let node = open(dir.path());
    let context = || GetEntriesContext::empty(false);
    for (low, high) in [(1, 6), (3, 4), (2, 5)] {
        let error = node.log.entries(low, high, None, context()).unwrap_err();
        assert_eq!(corruption_in(inside_raft_error(error)), (CF_RAFT_LOG, "0000000000000003".to_owned()));
    }
    let error = node.log.term(3).unwrap_err();
    assert_eq!(corruption_in(inside_raft_error(error)), (CF_RAFT_LOG, "0000000000000003".to_owned()));
    assert_eq!(node.log.entries(1, 3, None, context()).unwrap(), log[..2]);
    assert_eq!(node.log.entries(4, 6, None, context()).unwrap(), log[3..]);
    assert_eq!(node.log.term(2), Ok(1));
}

#[test]
fn a_corrupt_hard_state_stops_the_store_from_opening() {
    let dir = TempDir::new().unwrap();
    {
        let mut node = open(dir.path());
        append_to_log(&mut node, 1);
        flip_stored_bit(node.state.db(), CF_RAFT_STATE, KEY_HARD_STATE);
    }
    let error = try_open(dir.path()).unwrap_err();
    assert_eq!(corruption_in(error), (CF_RAFT_STATE, hex(KEY_HARD_STATE)));
}

#[test]
fn a_corrupt_applied_index_stops_the_store_from_opening() {
    let dir = TempDir::new().unwrap();
    {
        let node = treasury_node(dir.path());
        flip_stored_bit(node.state.db(), CF_META, KEY_APPLIED);
    }
    let error = try_open(dir.path()).unwrap_err();
    assert_eq!(corruption_in(error), (CF_META, hex(KEY_APPLIED)));
}

// The ledger state against the in-memory store.

#[test]
fn the_ledger_state_answers_every_read_as_the_in_memory_store_after_each_batch() {
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let mut memory = MemoryStore::new();
    assert_same_reads(&node.state, &memory, "before the first entry");
    for ((index, (timestamp, operation)), want) in (1..).zip(treasury()).zip(treasury_results()) {
        let (memory_results, memory_write_set) = prepare_on(&memory, timestamp, &operation);
        memory.commit(&memory_write_set).unwrap();
        let (results, write_set) = apply_entry(&mut node, index, timestamp, &operation);
        assert_eq!(results, want, "entry {index}");
        assert_eq!(memory_results, want, "entry {index}");
        assert_eq!(write_set, memory_write_set, "entry {index}: both stores were read alike");
        assert_eq!(node.state.applied(), AppliedState::at(index, TERM));
        assert_same_reads(&node.state, &memory, &format!("after entry {index}"));
    }
    let state_of = |id| node.state.pending_status(TransferId(id)).unwrap().map(|status| status.state);
    assert_eq!(state_of(3), Some(PendingState::Pending));
    assert_eq!(state_of(4), Some(PendingState::Posted));
    assert_eq!(state_of(5), Some(PendingState::Voided));
    assert_eq!(state_of(6), Some(PendingState::Expired));
    assert_eq!(node.state.transfer_failure(TransferId(10)), Ok(Some(CreateTransferResult::DebitAccountNotFound)));
    assert!(get_account_transfers(&node.state, &AccountFilter::all(CASH, 100)).unwrap().len() >= 7);
    assert!(get_account_balances(&node.state, &AccountFilter::all(CASH, 100)).unwrap().len() >= 7);
    assert_ne!(state_digest(&node.state), state_digest(&MemoryStore::new()));
}

/// Transfers whose user data fields take every shape a reference can:
/// unique and allocated in order (the span blocks of the index), with gaps,
/// at both ends of each field's width, given to two transfers of one batch,
/// given again by a later batch, and scattered.
fn user_data_batches() -> Vec<(u64, Operation)> {
    let with = |id: u128, user_data: (u128, u64, u32)| Transfer {
        user_data_128: user_data.0,
        user_data_64: user_data.1,
        user_data_32: user_data.2,
        ..transfer(id, CASH, REVENUE, 1, TransferKind::Receipt)
    };
    let in_order = (0..300u32)
        .map(|i| with(100 + u128::from(i), (1_000 + u128::from(i), 5_000 + 3 * u64::from(i), u32::MAX - 2 * i)));
    let shapes = [
        (1_150, 5_003, 1),
        (1_200, 0, 2),
        (1_201, 0, 2),
        (7, 1, 3),
        (u128::MAX, u64::MAX, 0),
        (u128::MAX - 3, u64::MAX - 255, 0),
        (5, 0, 0),
        (5, 0, 0),
        (1 << 100, 0, 0),
        ((1 << 100) + 255, 0, 0),
        ((1 << 100) + 256, 0, 0),
        (3 << 90, 0, 0),
    ];
    let mixed = shapes.iter().zip(500..).map(|(user_data, id)| with(id, *user_data));
    let again = (290..310u32).map(|i| with(600 + u128::from(i), (1_000 + u128::from(i), 5_000, 0)));
    let mut entries = treasury()[..2].to_vec();
    entries.push((T0 + 1_000, Operation::CreateTransfers(in_order.collect())));
    entries.push((T0 + 2_000, Operation::CreateTransfers(mixed.collect())));
    entries.push((T0 + 3_000, Operation::CreateTransfers(again.collect())));
    entries
}

#[test]
fn user_data_queries_read_span_blocks_as_the_in_memory_store_reads_its_index() {
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let mut memory = MemoryStore::new();
    let mut values: BTreeSet<(u128, u64, u32)> = BTreeSet::new();
    for (index, (timestamp, operation)) in (1..).zip(user_data_batches()) {
        let (memory_results, memory_write_set) = prepare_on(&memory, timestamp, &operation);
        memory.commit(&memory_write_set).unwrap();
        let (results, _) = apply_entry(&mut node, index, timestamp, &operation);
        assert_eq!(results, memory_results, "entry {index}");
        if let Operation::CreateTransfers(transfers) = &operation {
            values.extend(transfers.iter().map(|t| (t.user_data_128, t.user_data_64, t.user_data_32)));
        }
    }
    // Each value asked for, and its neighbours (some held by no transfer).
    let mut asked: BTreeSet<(u128, u64, u32)> = BTreeSet::new();
    for (user_data_128, user_data_64, user_data_32) in values {
        for delta in [0, 1, 255, 256] {
            asked.insert((user_data_128.wrapping_add(delta), 0, 0));
            asked.insert((user_data_128.wrapping_sub(delta), 0, 0));
            asked.insert((0, user_data_64.wrapping_add(delta as u64), 0));
            asked.insert((0, user_data_64.wrapping_sub(delta as u64), 0));
            asked.insert((0, 0, user_data_32.wrapping_add(delta as u32)));
            asked.insert((0, 0, user_data_32.wrapping_sub(delta as u32)));
        }
    }
    asked.remove(&(0, 0, 0));
    let mut found = 0;
    for (user_data_128, user_data_64, user_data_32) in asked {
        for (timestamp_min, timestamp_max) in [(0, 0), (T0 + 1_150, 0), (0, T0 + 2_500)] {
            for (limit, reversed) in [(1, false), (1, true), (1_000, false), (1_000, true)] {
                let query = TransferQuery {
                    user_data_128,
                    user_data_64,
                    user_data_32,
                    timestamp_min,
                    timestamp_max,
                    limit,
                    reversed,
                    ..TransferQuery::all(limit)
                };
                let page = query_transfers(&node.state, &query);
                assert_eq!(page, query_transfers(&memory, &query), "{query:?}");
                found += page.unwrap().records.len();
            }
        }
        let with_ledger =
            TransferQuery { ledger: KRW, user_data_128, user_data_64, user_data_32, ..TransferQuery::all(5) };
        assert_eq!(query_transfers(&node.state, &with_ledger), query_transfers(&memory, &with_ledger));
    }
    assert!(found > 1_000, "the queries found the transfers ({found} records)");
    // The references allocated in order went into span blocks: a few keys
    // for hundreds of transfers.
    let mut spans = 0;
    node.state
        .db()
        .latest()
        .scan(CF_INDEX, &[], None, &mut |key, _| {
            spans += usize::from(key.get(1).is_some_and(|tag| tag & 0x80 != 0));
            Ok(true)
        })
        .unwrap();
    assert!((4..=20).contains(&spans), "{spans} span blocks");
    drop(node);
    let node = open(dir.path());
    let query = TransferQuery { user_data_128: 1_290, ..TransferQuery::all(10) };
    assert_eq!(query_transfers(&node.state, &query), query_transfers(&memory, &query), "after reopening");
}

#[test]
fn transfers_sharing_a_key_across_batches_read_as_the_in_memory_store_reads_them() {
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let mut memory = MemoryStore::new();
    let receipt = |id: u128| transfer(id, CASH, REVENUE, 1, TransferKind::Receipt);
    // Groups of sixteen ids: 0x100 filled over three batches out of order,
    // 0x110 in one, ids repeated (exists) and failed (then repeated), the
    // last ids below u128::MAX, and scattered ones.
    let top = u128::MAX - 1;
    let batches: Vec<Vec<Transfer>> = vec![
        vec![receipt(0x105), receipt(0x10f), receipt(0x110), receipt(0x111), receipt(top), receipt(1 << 90)],
        vec![
            receipt(0x100),
            receipt(0x105),
            transfer(0x106, UNKNOWN, REVENUE, 1, TransferKind::Receipt),
            receipt(0x11f),
            receipt(top - 15),
        ],
        (0x101..0x10f).map(receipt).chain([receipt(0x106), receipt(top - 16), receipt((1 << 90) + 1)]).collect(),
    ];
    let mut entries = treasury()[..2].to_vec();
    entries.extend(batches.into_iter().zip(1..).map(|(batch, n)| (T0 + n * 1_000, Operation::CreateTransfers(batch))));
    for (index, (timestamp, operation)) in (1..).zip(entries) {
        let (memory_results, memory_write_set) = prepare_on(&memory, timestamp, &operation);
        memory.commit(&memory_write_set).unwrap();
        let (results, write_set) = apply_entry(&mut node, index, timestamp, &operation);
        assert_eq!(results, memory_results, "entry {index}");
        assert_eq!(write_set, memory_write_set, "entry {index}");
    }
    let ids: Vec<TransferId> = [
        0xff,
        0x100,
        0x105,
        0x106,
        0x10e,
        0x10f,
        0x110,
        0x111,
        0x112,
        0x11f,
        0x120,
        1 << 90,
        (1 << 90) + 1,
        top - 16,
        top - 15,
        top - 14,
        top,
    ]
    .into_iter()
    .map(TransferId)
    .collect();
    for id in &ids {
        assert_eq!(node.state.transfer(*id), memory.transfer(*id), "transfer {id}");
    }
    assert_eq!(lookup_transfers(&node.state, &ids), lookup_transfers(&memory, &ids));
    let unused: Vec<bool> = ids
        .iter()
        .map(|id| memory.transfer(*id).unwrap().is_none() && memory.transfer_failure(*id).unwrap().is_none())
        .collect();
    assert_eq!(node.state.unused_transfer_ids(&ids), Ok(Some(unused)));
    assert_eq!(state_digest(&node.state), state_digest(&memory), "every transfer visited once");
    assert_eq!(state_digest(&node.state), stored_state_digest(&node.state));
    // Group 0x100 is one key holding all sixteen; 0x110 one holding three.
    let count = |from: u128| {
        let mut keys = 0;
        node.state
            .db()
            .latest()
            .scan(CF_TRANSFERS, &keys::u128(from), Some(&keys::u128(from + 16)), &mut |_, _| {
                keys += 1;
                Ok(true)
            })
            .unwrap();
        keys
    };
    assert_eq!((count(0x100), count(0x110)), (1, 1));
    assert_eq!(memory.transfer(TransferId(0x10e)).unwrap().map(|t| t.id), Some(TransferId(0x10e)));
}

#[test]
fn a_reopened_store_keeps_its_applied_index_its_state_and_its_answers() {
    let dir = TempDir::new().unwrap();
    let digest = state_digest(&treasury_node(dir.path()).state).unwrap();
    let node = open(dir.path());
    assert_eq!(node.state.applied(), TREASURY_APPLIED);
    assert_eq!(state_digest(&node.state), Ok(digest));
    assert_eq!(node.log.initial_state().unwrap().conf_state, voters());
    assert_same_reads(&node.state, &treasury_memory(), "after reopening");
}

#[test]
fn applying_an_entry_at_or_below_the_applied_index_is_refused_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut node = treasury_node(dir.path());
    let before = state_digest(&node.state).unwrap();
    let payment = transfer(12, EXPENSE, CASH, 1_000, TransferKind::Expenditure);
    let (_, write_set) = prepare_on(&node.state, T0 + 4 * NS_PER_S, &Operation::CreateTransfers(vec![payment]));
    for index in [TREASURY_APPLIED.index, TREASURY_APPLIED.index - 1, 1] {
        let result = node.state.apply(Some(&write_set), AppliedState::at(index, TERM), None);
        assert!(matches!(result, Err(StorageError::Inconsistent { .. })), "apply at {index}: {result:?}");
    }
    assert_eq!(node.state.applied(), TREASURY_APPLIED);
    assert_eq!(state_digest(&node.state), Ok(before));
    assert_eq!(node.state.transfer(TransferId(12)), Ok(None));
    drop(node);

    let mut node = open(dir.path());
    assert_eq!((node.state.applied(), state_digest(&node.state)), (TREASURY_APPLIED, Ok(before)));
    let next = AppliedState::at(TREASURY_APPLIED.index + 1, TERM);
    append_to_log(&mut node, next.index);
    node.state.apply(Some(&write_set), next, None).unwrap();
    assert!(node.state.transfer(TransferId(12)).unwrap().is_some());
}

#[test]
fn the_change_log_is_written_with_each_entry_and_survives_a_reopen() {
    let dir = TempDir::new().unwrap();
    let node = treasury_node(dir.path());
    let changes = node.state.changes(&ChangeFilter::all(u32::MAX)).unwrap();
    let kinds: Vec<ChangeKind> = changes.iter().map(|change| change.kind).collect();
    let created = |id| ChangeKind::TransferCreated(TransferId(id));
    let account_created = |id| ChangeKind::AccountCreated { id, closed: false };
    assert_eq!(
        kinds,
        [
            ChangeKind::LedgerCreated(KRW),
            account_created(CASH),
            account_created(REVENUE),
            account_created(EXPENSE),
            account_created(RESERVE),
            created(1),
            created(2),
            created(3),
            created(4),
            created(5),
            created(6),
            created(7),
            created(8),
            created(9),
            ChangeKind::PendingExpired(TransferId(6)),
            created(11),
        ],
        "one change per event that changed the ledger; the failed and the retried ones add none"
    );
    assert_eq!(changes[0], Change { timestamp: T0, kind: ChangeKind::LedgerCreated(KRW), balances: None });
    assert_eq!(changes[14].timestamp, T0 + 2 * NS_PER_S, "the expiry at its event timestamp");
    assert_eq!(changes, treasury_memory().changes(&ChangeFilter::all(u32::MAX)).unwrap());
    drop(node);
    let reopened = open(dir.path());
    assert_eq!(reopened.state.changes(&ChangeFilter::all(u32::MAX)).unwrap(), changes);
    let newest = ChangeFilter { reversed: true, ..ChangeFilter::all(2) };
    assert_eq!(reopened.state.changes(&newest).unwrap(), [changes[15], changes[14]]);
}

#[test]
fn the_change_log_in_blocks_reads_every_range_as_one_record_per_change_would() {
    // Write sets of 1, 64 (one full block), 65 and 200 changes (blocks cut
    // mid-batch), then ranges starting and ending at and around every
    // block boundary, both ways, with limits that end inside a block.
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let mut memory = MemoryStore::new();
    let mut operations = vec![(T0, Operation::CreateLedgers(vec![Ledger::new(KRW, "KRW", 0, "Won")]))];
    let mut next = 1_000u128;
    for (batch, size) in [64u128, 65, 200].into_iter().enumerate() {
        let accounts =
            (0..size).map(|offset| account(AccountId(next + offset), AccountKind::Other, 401, AccountFlags::NONE));
        operations.push((T0 + 1_000 * (batch as u64 + 1), Operation::CreateAccounts(accounts.collect())));
        next += size;
    }
    for (index, (timestamp, operation)) in (1..).zip(&operations) {
        let (_, write_set) = apply_entry(&mut node, index, *timestamp, operation);
        memory.commit(&write_set).unwrap();
    }
    let all = memory.changes(&ChangeFilter::all(u32::MAX)).unwrap();
    assert_eq!(all.len(), 1 + 64 + 65 + 200);
    assert_eq!(node.state.changes(&ChangeFilter::all(u32::MAX)).unwrap(), all);
    let mut edges: Vec<u64> = vec![0, 1, u64::MAX];
    for (at, change) in all.iter().enumerate() {
        if at % 64 <= 1 || at % 64 == 63 || at + 2 >= all.len() {
            edges.extend([change.timestamp - 1, change.timestamp, change.timestamp + 1]);
        }
    }
    for &timestamp_min in &edges {
        for &timestamp_max in &edges {
            for reversed in [false, true] {
                for limit in [1, 2, 63, 64, 65, 130, u32::MAX] {
                    let filter = ChangeFilter { timestamp_min, timestamp_max, limit, reversed };
                    assert_eq!(node.state.changes(&filter), memory.changes(&filter), "{filter:?}");
                }
            }
        }
    }
    assert_eq!(state_digest(&node.state), state_digest(&memory));
}

#[test]
fn a_batched_id_lookup_answers_as_one_lookup_per_id_does() {
    let dir = TempDir::new().unwrap();
    let node = treasury_node(dir.path());
    let memory = treasury_memory();
    // Unsorted, repeated, present, failed (10: its debit account is
    // unknown) and never used.
    let ids: Vec<TransferId> = [99, 1, 10, 11, 1_000, 1, 5, 10, u128::MAX - 1].map(TransferId).to_vec();
    let expected = [true, false, false, false, true, false, false, false, true];
    assert!(memory.transfer_failure(TransferId(10)).unwrap().is_some(), "id 10 is a recorded failure");
    let per_id: Vec<bool> = ids
        .iter()
        .map(|&id| memory.transfer(id).unwrap().is_none() && memory.transfer_failure(id).unwrap().is_none())
        .collect();
    assert_eq!(per_id, expected, "one lookup per id");
    assert_eq!(memory.unused_transfer_ids(&ids).unwrap(), None, "the in-memory store answers per id");
    let expected = Some(expected.to_vec());
    assert_eq!(node.state.unused_transfer_ids(&ids).unwrap(), expected, "the batched lookup");
    let view = coffer_storage::ReadView::open(node.state.db()).unwrap();
    assert_eq!(view.unused_transfer_ids(&ids).unwrap(), expected, "through a read view");
    assert_eq!(node.state.unused_transfer_ids(&[]).unwrap(), Some(Vec::new()));
}

#[test]
fn ids_above_the_largest_stored_are_unused_and_the_largest_failure_counts_too() {
    // Ids above every stored transfer and failure skip the lookups; a
    // failure above every transfer raises that bound.
    let dir = TempDir::new().unwrap();
    let mut node = treasury_node(dir.path());
    let mut memory = treasury_memory();
    let failing = Operation::CreateTransfers(vec![transfer(5_000, UNKNOWN, REVENUE, 1, TransferKind::Receipt)]);
    let timestamp = T0 + 100_000_000_000;
    let (results, _) = apply_entry(&mut node, TREASURY_APPLIED.index + 1, timestamp, &failing);
    let (_, write_set) = prepare_on(&memory, timestamp, &failing);
    memory.commit(&write_set).unwrap();
    assert!(
        matches!(results, OperationResults::Transfers(ref r) if r[0] != CreateTransferResult::Created),
        "{results:?}"
    );
    let ids = [5_001, 4_999, 5_000, 11, 12, 10].map(TransferId);
    let per_id: Vec<bool> = ids
        .iter()
        .map(|&id| memory.transfer(id).unwrap().is_none() && memory.transfer_failure(id).unwrap().is_none())
        .collect();
    assert_eq!(per_id, [true, true, false, false, true, false], "one lookup per id");
    assert_eq!(node.state.unused_transfer_ids(&ids).unwrap(), Some(per_id.clone()));
    let view = coffer_storage::ReadView::open(node.state.db()).unwrap();
    assert_eq!(view.unused_transfer_ids(&ids).unwrap(), Some(per_id));
}

/// Every account as a full scan of `store` visits them.
fn scanned_accounts<S: Store>(store: &S) -> Vec<Account> {
    let mut accounts = Vec::new();
    store.for_each_account(&mut |account| accounts.push(*account)).unwrap();
    accounts
}

#[test]
fn accounts_rewritten_by_many_batches_scan_once_each_in_id_order() {
    // `accounts` keeps its memtable in hash buckets, one per account id,
    // with every version a batch wrote: a scan must still visit each
    // account once, newest version, in id order, whether it is in the
    // memtable, in a flushed table or both, and through a read view. The
    // account cache keeps each account's digest hash for the next batch.
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let mut memory = MemoryStore::new();
    let mut entries = vec![(T0, Operation::CreateLedgers(vec![Ledger::new(KRW, "KRW", 0, "Won")]))];
    // Ids created out of order, over a range wider than their number.
    let ids: Vec<AccountId> = (0..200u128).map(|i| AccountId(i * 7_919 % 1_009 + 1)).collect();
    let accounts = ids.iter().map(|&id| account(id, AccountKind::Other, 501, AccountFlags::NONE)).collect();
    entries.push((T0 + 10, Operation::CreateAccounts(accounts)));
    for round in 0..6u128 {
        let transfers = (0..100u128)
            .map(|i| {
                let (debit, credit) = (ids[(i * 3 + round) as usize % 200], ids[(i * 5 + 1) as usize % 200]);
                let credit = if credit == debit { ids[(i * 5 + 2) as usize % 200] } else { credit };
                transfer(1_000 * (round + 1) + i, debit, credit, 10 + i, TransferKind::Journal)
            })
            .collect();
        entries.push((T0 + 1_000 * (round as u64 + 1), Operation::CreateTransfers(transfers)));
    }
    for (index, (timestamp, operation)) in (1..).zip(&entries) {
        apply_entry(&mut node, index, *timestamp, operation);
        let (_, write_set) = prepare_on(&memory, *timestamp, operation);
        memory.commit(&write_set).unwrap();
        if index == 4 {
            node.state.db().flush().unwrap();
        }
    }
    let expected = scanned_accounts(&memory);
    assert_eq!(expected.len(), 200);
    assert!(expected.windows(2).all(|pair| pair[0].id < pair[1].id), "the in-memory store scans in id order");
    assert!(expected.iter().any(|account| account.debits_posted > 0 && account.credits_posted > 0));
    let same = |scanned: Vec<Account>, context: &str| {
        assert_eq!(scanned.len(), expected.len(), "{context}: accounts scanned");
        assert!(scanned == expected, "{context}: the accounts scanned differ");
    };
    same(scanned_accounts(&node.state), "memtable and table together");
    let view = coffer_storage::ReadView::open(node.state.db()).unwrap();
    same(scanned_accounts(&view), "through a read view");
    node.state.db().flush().unwrap();
    same(scanned_accounts(&node.state), "all flushed");
    assert_eq!(state_digest(&node.state).unwrap(), state_digest(&memory).unwrap());
    // The sum kept batch by batch took each old account value out by the
    // hash the write before had kept with it.
    assert_eq!(stored_state_digest(&node.state).unwrap(), state_digest(&memory).unwrap(), "the digest sum kept");
}

#[test]
fn a_corrupt_change_is_reported_naming_its_column_family_and_key() {
    let dir = TempDir::new().unwrap();
    let node = treasury_node(dir.path());
    // The change log's block holding the change at T0 + 100 (its key is
    // the block's last timestamp).
    let handle = node.state.db().cf(CF_CHANGES).unwrap();
    let mut blocks = node.state.db().rocksdb().raw_iterator_cf(handle);
    blocks.seek(keys::u64(T0 + 100));
    let key = blocks.key().expect("a block holds the change at T0 + 100").to_vec();
    blocks.prev();
    let block_before = keys::read_u64(blocks.key().expect("a block before it"), 0).unwrap();
    drop(blocks);
    flip_stored_bit(node.state.db(), CF_CHANGES, &key);
    let is_wanted = |error: &StoreError| matches!(error, StoreError::Corruption { table, key: found, .. } if table == CF_CHANGES && *found == hex(&key));
    let error = node.state.changes(&ChangeFilter::all(100)).unwrap_err();
    assert!(is_wanted(&error), "{error:?}");
    let reversed = ChangeFilter { reversed: true, ..ChangeFilter::all(100) };
    assert!(is_wanted(&node.state.changes(&reversed).unwrap_err()));
    assert!(is_wanted(&state_digest(&node.state).unwrap_err()));
    match query_transfers(&node.state, &TransferQuery { timestamp_min: 1, ..TransferQuery::all(100) }) {
        Err(QueryError::Store(error)) => assert!(is_wanted(&error), "{error:?}"),
        other => panic!("expected the corruption, got {other:?}"),
    }
    let before = ChangeFilter { timestamp_max: block_before, ..ChangeFilter::all(100) };
    let expected = treasury_memory().changes(&before).unwrap();
    assert!(!expected.is_empty());
    assert_eq!(node.state.changes(&before).unwrap(), expected, "the changes in the blocks before it still read");
}

// Snapshots.

#[test]
fn a_snapshot_sent_in_chunks_installs_the_same_state_and_resets_the_log() {
    let dirs = TempDir::new().unwrap();
    let mut source = treasury_node(&dirs.path().join("source"));
    let snapshot_dir = dirs.path().join("snapshot");
    let created = snapshot::create(source.state.db(), &snapshot_dir).unwrap();
    assert_eq!((created.applied, &created.conf_state), (TREASURY_APPLIED, &voters()));
    let staging = dirs.path().join("staging");
    assert_eq!(send(&snapshot_dir, &staging), created);

    let mut target = other_node(&dirs.path().join("target"));
    let installed = snapshot::install(&mut target.log, &mut target.state, &staging).unwrap();
    assert_eq!(installed, created);
    assert_eq!(target.state.applied(), TREASURY_APPLIED);
    assert_same_reads(&target.state, &source.state, "after install");
    let all = ChangeFilter::all(u32::MAX);
    assert_eq!(target.state.changes(&all).unwrap(), source.state.changes(&all).unwrap(), "the change log came along");
    assert_eq!(target.state.changes(&all).unwrap().len(), 16);
    assert_eq!(target.state.ledger(LedgerId(9)), Ok(None), "the target's own state is gone");
    assert_log_reset_to_treasury_snapshot(&target);

    // Both go on from the snapshot alike, and the target keeps it all.
    let payment = Operation::CreateTransfers(vec![transfer(12, EXPENSE, CASH, 1_000, TransferKind::Expenditure)]);
    let next = TREASURY_APPLIED.index + 1;
    apply_entry(&mut source, next, T0 + 4 * NS_PER_S, &payment);
    apply_entry(&mut target, next, T0 + 4 * NS_PER_S, &payment);
    assert_same_reads(&target.state, &source.state, "after the next entry");
    drop(target);
    let target = open(&dirs.path().join("target"));
    assert_eq!(target.state.applied(), AppliedState::at(next, TERM));
    assert_same_reads(&target.state, &source.state, "after reopening the target");
}

#[test]
fn a_chunk_whose_crc_does_not_match_its_bytes_is_refused() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    snapshot::create(source.state.db(), &dirs.path().join("snapshot")).unwrap();
    let mut reader = SnapshotReader::open(&dirs.path().join("snapshot"), CHUNK_BYTES).unwrap();
    let mut writer = SnapshotWriter::new(&dirs.path().join("staging")).unwrap();
    let chunk = reader.next_chunk().unwrap().unwrap();

    let mut wrong_crc = chunk.clone();
    wrong_crc.crc32 ^= 1;
    assert!(matches!(writer.write_chunk(&wrong_crc), Err(StorageError::Snapshot { .. })));
    let mut flipped_data = chunk.clone();
    flipped_data.data[0] ^= 1;
    assert!(matches!(writer.write_chunk(&flipped_data), Err(StorageError::Snapshot { .. })));

    writer.write_chunk(&chunk).unwrap();
    assert_eq!(std::fs::read(dirs.path().join("staging").join(&chunk.file)).unwrap(), chunk.data);
}

#[test]
fn a_chunk_naming_a_file_outside_the_snapshot_or_skipping_bytes_is_refused() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    snapshot::create(source.state.db(), &dirs.path().join("snapshot")).unwrap();
    let mut reader = SnapshotReader::open(&dirs.path().join("snapshot"), CHUNK_BYTES).unwrap();
    let staging = dirs.path().join("staging");
    let mut writer = SnapshotWriter::new(&staging).unwrap();
    let chunk = reader.next_chunk().unwrap().unwrap();
    for file in ["../escaped", "/tmp/escaped", "db/../../escaped", "db/sub/file", "", "other/file"] {
        let outside = snapshot::SnapshotChunk { file: file.to_owned(), ..chunk.clone() };
        assert!(matches!(writer.write_chunk(&outside), Err(StorageError::Snapshot { .. })), "{file:?}");
    }
    assert!(!dirs.path().join("escaped").exists());
    let skipping = snapshot::SnapshotChunk { offset: 1, ..chunk.clone() };
    assert!(matches!(writer.write_chunk(&skipping), Err(StorageError::Snapshot { .. })));
    assert!(SnapshotWriter::new(&staging).is_err(), "a staging directory is never reused");
}

#[test]
fn a_tampered_checkpoint_file_fails_install_and_leaves_the_node_unchanged() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let snapshot_dir = dirs.path().join("snapshot");
    snapshot::create(source.state.db(), &snapshot_dir).unwrap();
    let mut target = other_node(&dirs.path().join("target"));
    let before = node_fingerprint(&target);
    for pattern in [".sst", "MANIFEST-", "CURRENT", "OPTIONS-"] {
        let staging = dirs.path().join(format!("staging{pattern}"));
        send(&snapshot_dir, &staging);
        flip_file_byte(&checkpoint_file(&staging, pattern));
        let result = snapshot::install(&mut target.log, &mut target.state, &staging);
        assert!(matches!(result, Err(StorageError::Snapshot { .. })), "{pattern}: {result:?}");
        assert_eq!(node_fingerprint(&target), before, "{pattern}");
    }
    drop(target);
    assert_eq!(node_fingerprint(&open(&dirs.path().join("target"))), before);
}

#[test]
fn a_received_snapshot_with_a_tampered_file_is_refused_before_it_is_used() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let snapshot_dir = dirs.path().join("snapshot");
    snapshot::create(source.state.db(), &snapshot_dir).unwrap();
    let mut reader = SnapshotReader::open(&snapshot_dir, CHUNK_BYTES).unwrap();
    let mut writer = SnapshotWriter::new(&dirs.path().join("staging")).unwrap();
    let mut tampered = false;
    while let Some(mut chunk) = reader.next_chunk().unwrap() {
        assert_eq!(crc32(&chunk.data), chunk.crc32, "this test computes crcs as the sender does");
        if !tampered && chunk.file.ends_with(".sst") {
            // Bytes changed on the sender's disk before they were read: the
            // chunk is whole, the file is not what the manifest lists.
            chunk.data[0] ^= 1;
            chunk.crc32 = crc32(&chunk.data);
            tampered = true;
        }
        writer.write_chunk(&chunk).unwrap();
    }
    assert!(tampered);
    assert!(matches!(writer.finish(), Err(StorageError::Snapshot { .. })));
}

/// CRC-32 (IEEE), bit by bit: what a sender computes over a chunk's bytes.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn a_tampered_snapshot_manifest_is_refused_and_leaves_the_node_unchanged() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let snapshot_dir = dirs.path().join("snapshot");
    snapshot::create(source.state.db(), &snapshot_dir).unwrap();
    let mut target = other_node(&dirs.path().join("target"));
    let before = node_fingerprint(&target);

    // Edited text: the manifest's own crc no longer matches.
    let edited = dirs.path().join("edited");
    send(&snapshot_dir, &edited);
    let text = std::fs::read_to_string(edited.join(MANIFEST_FILE)).unwrap();
    let forged = text.replace("applied_index 7", "applied_index 8");
    assert_ne!(forged, text);
    std::fs::write(edited.join(MANIFEST_FILE), forged).unwrap();
    assert!(matches!(SnapshotReader::open(&edited, CHUNK_BYTES), Err(StorageError::Snapshot { .. })));
    let result = snapshot::install(&mut target.log, &mut target.state, &edited);
    assert!(matches!(result, Err(StorageError::Snapshot { .. })), "{result:?}");
    assert_eq!(node_fingerprint(&target), before);

    // A well-formed manifest that lies about the applied index.
    let lying = dirs.path().join("lying");
    send(&snapshot_dir, &lying);
    let mut manifest = SnapshotManifest::read(&lying).unwrap();
    manifest.applied.index += 1;
    std::fs::write(lying.join(MANIFEST_FILE), manifest.encode().unwrap()).unwrap();
    let result = snapshot::install(&mut target.log, &mut target.state, &lying);
    assert!(matches!(result, Err(StorageError::Snapshot { .. })), "{result:?}");
    assert_eq!(node_fingerprint(&target), before);

    // A well-formed manifest that leaves a checkpoint file out.
    let short = dirs.path().join("short");
    send(&snapshot_dir, &short);
    let mut manifest = SnapshotManifest::read(&short).unwrap();
    manifest.files.pop();
    std::fs::write(short.join(MANIFEST_FILE), manifest.encode().unwrap()).unwrap();
    let result = snapshot::install(&mut target.log, &mut target.state, &short);
    assert!(matches!(result, Err(StorageError::Snapshot { .. })), "{result:?}");
    assert_eq!(node_fingerprint(&target), before);
}

#[test]
fn a_backup_restores_into_an_empty_or_missing_directory_with_the_same_state() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let backup = dirs.path().join("backup");
    let manifest = source.backup(&backup).unwrap();
    assert_eq!(manifest.applied, TREASURY_APPLIED);

    let empty = dirs.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for data_dir in [empty, dirs.path().join("missing")] {
        let restored = NodeStore::restore(&backup, &data_dir, &StorageConfig::default()).unwrap();
        assert_eq!(restored.state.applied(), TREASURY_APPLIED);
        assert_same_reads(&restored.state, &source.state, "after restore");
        assert_log_reset_to_treasury_snapshot(&restored);
        drop(restored);
        let reopened = open(&data_dir);
        assert_eq!(reopened.state.applied(), TREASURY_APPLIED);
        assert_eq!(state_digest(&reopened.state), state_digest(&source.state));
    }
}

#[test]
fn restore_into_a_non_empty_directory_is_refused_and_leaves_it_unchanged() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let backup = dirs.path().join("backup");
    source.backup(&backup).unwrap();

    let cluttered = dirs.path().join("cluttered");
    std::fs::create_dir(&cluttered).unwrap();
    std::fs::write(cluttered.join("notes.txt"), "keep me").unwrap();
    let result = NodeStore::restore(&backup, &cluttered, &StorageConfig::default());
    assert!(matches!(result, Err(StorageError::Snapshot { .. })), "{result:?}");
    assert_eq!(dir_contents(&cluttered), BTreeMap::from([(PathBuf::from("notes.txt"), b"keep me".to_vec())]));

    let other = dirs.path().join("other");
    let fingerprint = node_fingerprint(&other_node(&other));
    let result = NodeStore::restore(&backup, &other, &StorageConfig::default());
    assert!(matches!(result, Err(StorageError::Snapshot { .. })), "{result:?}");
    assert_eq!(node_fingerprint(&open(&other)), fingerprint);
}

#[test]
fn a_tampered_backup_is_not_restored() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let backup = dirs.path().join("backup");
    source.backup(&backup).unwrap();
    // Tamper with a copy: the backup's table files are hard links to the
    // source's live ones.
    let copy = dirs.path().join("copy");
    send(&backup, &copy);
    flip_file_byte(&checkpoint_file(&copy, ".sst"));
    let data_dir = dirs.path().join("restored");
    let result = NodeStore::restore(&copy, &data_dir, &StorageConfig::default());
    assert!(matches!(result, Err(StorageError::Snapshot { .. })), "{result:?}");
    assert!(!data_dir.exists(), "nothing is created from a backup that does not verify");
}

// Installs interrupted by a crash.

/// Writes the install marker naming `snapshot_dir`, as `install` does first.
fn write_install_marker(node: &NodeStore, snapshot_dir: &Path) {
    put_framed(node.state.db(), CF_RAFT_STATE, KEY_SNAPSHOT_INSTALL, snapshot_dir.to_str().unwrap().as_bytes());
}

#[test]
fn an_install_interrupted_after_its_marker_is_finished_when_the_node_opens() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let snapshot_dir = dirs.path().join("snapshot");
    snapshot::create(source.state.db(), &snapshot_dir).unwrap();
    let target_dir = dirs.path().join("target");
    write_install_marker(&other_node(&target_dir), &snapshot_dir);

    let target = open(&target_dir);
    assert_eq!(target.state.applied(), TREASURY_APPLIED);
    assert_same_reads(&target.state, &source.state, "after the resumed install");
    assert_log_reset_to_treasury_snapshot(&target);
    assert_eq!(snapshot::interrupted_install(target.state.db()).unwrap(), None, "the marker is gone");
    drop(target);
    assert_eq!(state_digest(&open(&target_dir).state), state_digest(&source.state));
}

#[test]
fn an_install_interrupted_after_the_old_state_was_cleared_is_finished_when_the_node_opens() {
    let dirs = TempDir::new().unwrap();
    let source = treasury_node(&dirs.path().join("source"));
    let snapshot_dir = dirs.path().join("snapshot");
    snapshot::create(source.state.db(), &snapshot_dir).unwrap();
    let target_dir = dirs.path().join("target");
    {
        let target = other_node(&target_dir);
        write_install_marker(&target, &snapshot_dir);
        // The install's first write: every state column family emptied,
        // but for the format marker.
        let db = target.state.db();
        let (first, past_last): (&[u8], &[u8]) = (&[], &[0xFF; 32]);
        for cf in STATE_COLUMN_FAMILIES {
            db.rocksdb().delete_range_cf(db.cf(cf).unwrap(), first, past_last).unwrap();
        }
        let mut marker = b"coffer-store".to_vec();
        marker.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        put_framed(db, CF_META, KEY_FORMAT, &marker);
        assert_eq!(db.latest().get(CF_META, KEY_APPLIED).unwrap(), None, "the old applied index is gone");
    }
    let target = open(&target_dir);
    assert_eq!(target.state.applied(), TREASURY_APPLIED);
    assert_same_reads(&target.state, &source.state, "after the resumed install");
    assert_log_reset_to_treasury_snapshot(&target);
}

#[test]
fn an_interrupted_install_whose_snapshot_is_gone_stops_the_node_from_opening() {
    let dirs = TempDir::new().unwrap();
    let snapshot_dir = dirs.path().join("snapshot");
    let target_dir = dirs.path().join("target");
    write_install_marker(&other_node(&target_dir), &snapshot_dir);
    match try_open(&target_dir) {
        Err(StorageError::Snapshot { path, .. }) => assert_eq!(path, snapshot_dir),
        other => panic!("expected a snapshot error, got {other:?}"),
    }
}

#[test]
fn a_corrupt_block_of_records_a_range_deletion_removed_fails_verification() {
    // A log whose first entries were compacted away (a range deletion) but
    // are still in a table file: a scan honouring the deletion skips their
    // blocks, while the node's next compaction reads them.
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let entry =
        |index: u64| Entry { index, term: TERM, data: vec![index as u8; 16 << 10].into(), ..Default::default() };
    let entries: Vec<Entry> = (1..=64).map(entry).collect();
    let hard_state = HardState { term: TERM, vote: 1, commit: 64, ..Default::default() };
    node.log.append(&entries, Some(&hard_state), true).unwrap();
    let db = node.state.db().clone();
    db.rocksdb().flush_cf(db.cf(CF_RAFT_LOG).unwrap()).unwrap();
    let files = db.rocksdb().live_files().unwrap();
    let table = files.iter().find(|file| file.column_family_name == CF_RAFT_LOG).expect("a log table file");
    let path = dir.path().join(table.name.trim_start_matches('/'));
    node.log.compact(60).unwrap();
    db.rocksdb().flush_cf(db.cf(CF_RAFT_LOG).unwrap()).unwrap();
    drop(db);
    drop(node);

    // An eighth into the file: inside entry 8's value, long deleted.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 8;
    bytes[at..at + 8].iter_mut().for_each(|byte| *byte ^= 0x5A);
    std::fs::write(&path, bytes).unwrap();

    let damaged = coffer_storage::verify::open_stopped(dir.path()).unwrap();
    let report = coffer_storage::verify::verify_records(&damaged).unwrap();
    let corruption = report.first_corruption.expect("the damaged block is found");
    assert_eq!(corruption.cf, CF_RAFT_LOG, "{corruption}");
}

#[test]
fn a_read_view_holds_its_index_while_the_state_moves_on_and_answers_as_the_live_state() {
    let dirs = TempDir::new().unwrap();
    let mut node = treasury_node(&dirs.path().join("node"));
    let db = node.state.db().clone();
    let view = coffer_storage::ReadView::open(&db).unwrap();
    assert_eq!(view.applied(), TREASURY_APPLIED);
    assert_same_reads(&view, &node.state, "a view of the same index");
    assert_eq!(state_digest(&view), state_digest(&node.state));
    let digest_before = state_digest(&node.state).unwrap();

    // The node applies one more entry; the view still holds the old index.
    let next = TREASURY_APPLIED.index + 1;
    append_to_log(&mut node, next);
    node.state.apply(None, AppliedState::at(next, TREASURY_APPLIED.term), None).unwrap();
    assert_eq!(view.applied(), TREASURY_APPLIED);
    assert_eq!(state_digest(&view).unwrap(), digest_before);
    let later = coffer_storage::ReadView::open(&db).unwrap();
    assert_eq!(later.applied().index, next);
}

#[test]
fn no_view_or_checkpoint_is_had_while_a_snapshot_install_is_half_done() {
    let dirs = TempDir::new().unwrap();
    let node = treasury_node(&dirs.path().join("node"));
    let db = node.state.db().clone();
    // The marker an install writes (synced) before it replaces the state,
    // and removes in its last write.
    let mut marker = coffer_storage::rocksdb::WriteBatch::default();
    db.put(&mut marker, CF_RAFT_STATE, KEY_SNAPSHOT_INSTALL, b"/somewhere/in/4-2").unwrap();
    db.write(marker, true).unwrap();

    let view = coffer_storage::ReadView::open(&db);
    assert!(matches!(&view, Err(error @ StorageError::Installing { .. }) if error.is_transient()), "{view:?}");
    let checkpoint = dirs.path().join("backup");
    let made = snapshot::create(&db, &checkpoint);
    assert!(matches!(made, Err(StorageError::Installing { .. })), "{made:?}");
    assert!(!checkpoint.exists(), "a checkpoint of a half-installed state was kept");
}

#[test]
fn a_store_on_tmpfs_opens_and_flushes_with_direct_io_asked_for() {
    // Older kernels' tmpfs refuses O_DIRECT (the store then falls back to
    // buffered writes); newer ones take it. Flushes work either way.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else { return };
    let config = StorageConfig { direct_io: true, ..StorageConfig::default() };
    let mut store = NodeStore::open(dir.path(), &config).unwrap();
    store.log.append(&[Entry { index: 1, term: 1, ..Default::default() }], None, true).unwrap();
    store.state.apply(None, AppliedState::at(1, 1), None).unwrap();
    store.state.db().flush().unwrap();
    drop(store);
    let store = NodeStore::open(dir.path(), &config).unwrap();
    assert_eq!(store.state.applied(), AppliedState::at(1, 1), "the flushed apply is there");
}

#[test]
fn each_change_is_placed_in_the_batch_that_made_it_with_its_principal() {
    use coffer_storage::audit::{principal_at, AuditKind, AuditRecord};
    let dir = TempDir::new().unwrap();
    let mut node = open(dir.path());
    let record = |index: u64, part: u32, first_timestamp: u64, events: u32, principal: &str| AuditRecord {
        index,
        part,
        first_timestamp,
        events,
        kind: AuditKind::Transfers,
        proposer: 1,
        applied: true,
        principal: principal.into(),
        note: String::new(),
    };
    // Entry 1 carries two batches (events 100..=102 and 103..=104), entry 2
    // one refused whole, entry 3 a region operation, entry 4 one batch at
    // 200..=209; 105..=199 are events of no batch (expiries).
    let entries = [
        vec![record(1, 0, 100, 3, "gangnam"), record(1, 1, 103, 2, "jongno")],
        vec![AuditRecord { applied: false, ..record(2, 0, 0, 5, "busan-payments") }],
        vec![AuditRecord { kind: AuditKind::Freeze, ..record(3, 0, 0, 0, "treasury-ops") }],
        vec![record(4, 0, 200, 10, "gangnam")],
    ];
    for (index, records) in (1..).zip(&entries) {
        append_to_log(&mut node, index);
        node.state.apply_audited(None, AppliedState::at(index, TERM), None, records).unwrap();
    }
    let view = coffer_storage::ReadView::open(node.state.db()).unwrap();
    let spans = view.batch_spans(101, 200).unwrap();
    let firsts: Vec<(u64, u32, u64, u32)> =
        spans.iter().map(|span| (span.first_timestamp, span.events, span.index, span.part)).collect();
    assert_eq!(firsts, [(100, 3, 1, 0), (103, 2, 1, 1), (200, 10, 4, 0)]);
    let named: Vec<Option<&str>> = [101, 102, 103, 104, 105, 199, 200, 209].map(|t| principal_at(&spans, t)).into();
    assert_eq!(
        named,
        [
            Some("gangnam"),
            Some("gangnam"),
            Some("jongno"),
            Some("jongno"),
            None,
            None,
            Some("gangnam"),
            Some("gangnam")
        ]
    );
    assert_eq!(principal_at(&spans, 99), None);
    assert!(view.batch_spans(210, u64::MAX).unwrap().is_empty(), "nothing after the last batch");
    assert!(view.batch_spans(150, 160).unwrap().is_empty(), "a gap between batches");
    assert_eq!(view.batch_spans(209, 209).unwrap().len(), 1, "the last event of a batch");
    assert!(view.batch_spans(5, 4).unwrap().is_empty());
    // The trail itself still reads in log order, the time entries apart.
    let trail = view.audit(0, 100, None).unwrap();
    assert_eq!(
        trail.iter().map(|record| (record.index, record.part)).collect::<Vec<_>>(),
        [(1, 0), (1, 1), (2, 0), (3, 0), (4, 0)]
    );
    assert_eq!(view.audit(3, 100, None).unwrap().len(), 1);
}
