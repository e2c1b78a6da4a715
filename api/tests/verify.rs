//! `coffer verify`, the real executable, on stores made here by applying
//! batches as a node does: a sound store passes with its state digest; a
//! flipped byte in an SST file, a corrupted value, a broken invariant or a
//! store a process holds open each fail with the reason.

// A test harness: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use coffer_consensus::raft::prelude::{Entry, HardState};
use coffer_ledger::codec::encode_account;
use coffer_ledger::{
    prepare, state_digest, Account, AccountFlags, AccountId, AccountKind, Ledger, LedgerId, Operation, Store, Transfer,
    TransferFlags, TransferId, TransferKind, NS_PER_S,
};
use coffer_storage::db::{keys, CF_ACCOUNTS, CF_META, CF_TRANSFERS, KEY_DIGEST_SUM};
use coffer_storage::{AppliedState, Db, NodeStore, StorageConfig};

/// The term the batches are applied in.
const TERM: u64 = 2;
const KRW: LedgerId = LedgerId(1);
const CASH: AccountId = AccountId(1001);
const REVENUE: AccountId = AccountId(1401);
const EXPENSE: AccountId = AccountId(1501);

fn storage_config() -> StorageConfig {
    StorageConfig { block_cache_bytes: 8 << 20, write_buffer_bytes: 4 << 20, ..StorageConfig::default() }
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

/// A small treasury: a ledger, three accounts, receipts, a payment, a
/// pending payment posted in part and one left open.
fn batches() -> Vec<Operation> {
    use TransferKind::{Expenditure, Receipt};
    let account = |id, kind, code, flags| Account { id, ledger: KRW, code, kind, flags, ..Default::default() };
    let pending =
        |id, amount| Transfer { flags: TransferFlags::PENDING, ..transfer(id, EXPENSE, CASH, amount, Expenditure) };
    let post = Transfer {
        id: TransferId(6),
        pending_id: TransferId(4),
        amount: 30_000,
        kind: Expenditure,
        flags: TransferFlags::POST_PENDING,
        ..Default::default()
    };
    vec![
        Operation::CreateLedgers(vec![Ledger::new(KRW, "KRW", 0, "Korean won")]),
        Operation::CreateAccounts(vec![
            account(CASH, AccountKind::Cash, 101, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS | AccountFlags::HISTORY),
            account(REVENUE, AccountKind::Other, 401, AccountFlags::NONE),
            account(EXPENSE, AccountKind::Other, 501, AccountFlags::NONE),
        ]),
        Operation::CreateTransfers(vec![
            transfer(1, CASH, REVENUE, 1_500_000, Receipt),
            transfer(2, EXPENSE, CASH, 250_000, Expenditure),
            transfer(3, CASH, REVENUE, 70_000, Receipt),
            pending(4, 50_000),
            pending(5, 20_000),
        ]),
        Operation::CreateTransfers(vec![post]),
    ]
}

/// Makes a node's store in `data_dir/db` by bootstrapping it and applying
/// [`batches`] as a node does; returns its state digest.
fn make_store(data_dir: &Path) -> String {
    let mut node = NodeStore::open(&data_dir.join("db"), &storage_config()).unwrap();
    node.bootstrap(&[1]).unwrap();
    for (i, operation) in batches().iter().enumerate() {
        let index = 2 + i as u64;
        let entry = Entry { index, term: TERM, ..Default::default() };
        let hard_state = HardState { term: TERM, vote: 1, commit: index, ..Default::default() };
        node.log.append(&[entry], Some(&hard_state), true).unwrap();
        let timestamp = (1_000 + i as u64) * NS_PER_S;
        let prepared = prepare(&node.state, timestamp, operation).unwrap();
        node.state.apply(Some(&prepared.write_set), AppliedState::at(index, TERM), None).unwrap();
    }
    state_digest(&node.state).unwrap().to_string()
}

fn coffer(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_coffer")).args(args).output().unwrap()
}

fn verify(data_dir: &Path, json: bool) -> (Option<i32>, String, String) {
    let dir = data_dir.to_str().unwrap();
    let output =
        if json { coffer(&["verify", "--data-dir", dir, "--json"]) } else { coffer(&["verify", "--data-dir", dir]) };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// Opens the store read-write (as a test may, to damage it).
fn open_db(data_dir: &Path) -> Db {
    Db::open(&data_dir.join("db"), &storage_config()).unwrap()
}

/// Writes a well-framed record behind the state machine's back.
fn put_framed(data_dir: &Path, cf: &'static str, key: &[u8], payload: &[u8]) {
    let db = open_db(data_dir);
    let mut batch = Default::default();
    db.put(&mut batch, cf, key, payload).unwrap();
    db.write(batch, true).unwrap();
}

#[test]
fn a_sound_store_verifies_and_reports_its_applied_index_term_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let digest = make_store(dir.path());

    let (code, stdout, stderr) = verify(dir.path(), false);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("state digest  {digest}")), "{stdout}");
    assert!(stdout.contains("applied       index 5 (term 2)"), "{stdout}");
    assert!(stdout.contains("every frame and block checksum verifies"), "{stdout}");
    assert!(
        stdout.contains("1 KRW: 3 accounts, posted 1850000 = 1850000, pending 20000 = 20000: balanced"),
        "{stdout}"
    );

    let (code, stdout, _) = verify(dir.path(), true);
    assert_eq!(code, Some(0));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["state_digest"], digest.as_str());
    assert_eq!(report["raft"]["applied_index"], 5);
    assert_eq!(report["raft"]["term"], TERM);
    assert_eq!(report["transfers"], 6);
    assert_eq!(report["pending_open"], 1);
    assert_eq!(report["column_families"].as_array().unwrap().len(), coffer_storage::db::COLUMN_FAMILIES.len());
}

#[test]
fn a_flipped_byte_in_an_sst_file_fails_naming_the_column_family() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    let sst = flushed_sst(dir.path(), CF_TRANSFERS);
    // At the start: the first data block, read only when the records are.
    flip_byte(&sst, 20);

    let (code, stdout, stderr) = verify(dir.path(), false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAILED        corrupt record"), "{stdout}");
    assert!(stdout.contains("column family transfers"), "{stdout}");
}

#[test]
fn a_flipped_byte_in_an_sst_files_index_fails_the_open_naming_the_column_family() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    let sst = flushed_sst(dir.path(), CF_TRANSFERS);
    // Near the end: the index and meta blocks, which RocksDB reads and
    // checks when it opens the store.
    let len = std::fs::metadata(&sst).unwrap().len() as usize;
    flip_byte(&sst, len - 80);

    let (code, stdout, stderr) = verify(dir.path(), false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("column family transfers"), "{stderr}");
}

#[test]
fn a_corrupted_value_fails_naming_its_column_family_and_key() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    {
        let db = open_db(dir.path());
        let handle = db.cf(CF_ACCOUNTS).unwrap();
        let key = keys::u128(CASH.0);
        let mut value = db.rocksdb().get_cf(handle, key).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 0x04;
        db.rocksdb().put_cf(handle, key, value).unwrap();
    }

    let (code, stdout, stderr) = verify(dir.path(), true);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    let first = report["problems"][0].as_str().unwrap();
    let key = format!("{:032x}", CASH.0);
    assert!(first.contains(&format!("column family accounts at key {key}: crc32 mismatch")), "{first}");
}

#[test]
fn a_broken_invariant_fails_naming_the_account() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    // A well-framed record whose balance no transfer explains.
    let store = NodeStore::open(&dir.path().join("db"), &storage_config()).unwrap();
    let mut cash = store.state.account(CASH).unwrap().unwrap();
    drop(store);
    cash.debits_posted += 1;
    let mut payload = Vec::new();
    encode_account(&cash, &mut payload);
    put_framed(dir.path(), CF_ACCOUNTS, &keys::u128(CASH.0), &payload);

    let (code, stdout, stderr) = verify(dir.path(), false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("NOT BALANCED"), "{stdout}");
    assert!(
        stdout.contains("FAILED        ledger 1 (KRW): Σ debits_posted 1850001 ≠ Σ credits_posted 1850000"),
        "{stdout}"
    );
    assert!(stdout.contains("FAILED        account 1001: posted balances 1570001/280000"), "{stdout}");
    assert!(stdout.contains("state digest"), "the digest is still printed: {stdout}");
    // The account changed behind the state machine's back: the totals and
    // the digest it kept no longer match the records.
    assert!(stdout.contains("FAILED        the running totals of ledger 1 code 101"), "{stdout}");
    assert!(stdout.contains("FAILED        the stored state digest"), "{stdout}");
}

#[test]
fn a_stored_digest_that_disagrees_with_the_records_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    put_framed(dir.path(), CF_META, KEY_DIGEST_SUM, &[7; 32]);
    let (code, stdout, stderr) = verify(dir.path(), false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAILED        the stored state digest"), "{stdout}");
    assert!(stdout.contains("disagrees with the one recomputed from every record"), "{stdout}");
    assert!(!stdout.contains("running totals"), "the totals still match: {stdout}");
}

#[test]
fn a_store_a_process_holds_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    let open = NodeStore::open(&dir.path().join("db"), &storage_config()).unwrap();

    let (code, stdout, stderr) = verify(dir.path(), false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let expected = format!("is locked by process {} (a running node?)", std::process::id());
    assert!(stderr.contains(&expected), "{stderr}");
    drop(open);
    assert_eq!(verify(dir.path(), false).0, Some(0), "verifies once the store is closed");
}

#[test]
fn a_directory_without_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = verify(dir.path(), false);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no Coffer store here"), "{stderr}");
    let missing: PathBuf = dir.path().join("missing");
    assert_eq!(verify(&missing, false).0, Some(1));
}

/// Flushes column family `cf` and returns its SST file.
fn flushed_sst(data_dir: &Path, cf: &'static str) -> PathBuf {
    let db = open_db(data_dir);
    db.rocksdb().flush_cf(db.cf(cf).unwrap()).unwrap();
    let files = db.rocksdb().live_files().unwrap();
    let file = files.iter().find(|file| file.column_family_name == cf).unwrap();
    data_dir.join("db").join(file.name.trim_start_matches('/'))
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0xFF;
    std::fs::write(path, bytes).unwrap();
}

/// `coffer restore`, the real executable.
fn restore(backup: &Path, data_dir: &Path) -> Output {
    coffer(&["restore", "--backup", backup.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
}

#[test]
fn a_restored_node_holds_the_backups_state_and_a_restore_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let digest = make_store(&source);
    let backup = dir.path().join("backup");
    NodeStore::open(&source.join("db"), &storage_config()).unwrap().backup(&backup).unwrap();

    let restored = dir.path().join("restored");
    let output = restore(&backup, &restored);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("at applied index 5 (term 2); voters [1]"), "{stdout}");
    let (code, report, stderr) = verify(&restored, false);
    assert_eq!(code, Some(0), "{report}{stderr}");
    assert!(report.contains(&format!("state digest  {digest}")), "{report}");

    // Into a directory that holds anything: refused, nothing touched.
    let output = restore(&backup, &source);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(verify(&source, false).0, Some(0));

    // A backup with a damaged file: refused naming it, no store left behind.
    let damaged = std::fs::read_dir(backup.join("db"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "sst"))
        .expect("the backup holds a table file");
    flip_byte(&damaged, 20);
    let elsewhere = dir.path().join("elsewhere");
    let output = restore(&backup, &elsewhere);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = damaged.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(name), "{stderr}");
    assert!(!elsewhere.join("db").join("CURRENT").exists(), "a store was made from a damaged backup");
}
