//! `coffer verify`: the offline check of a stopped node's store. It opens
//! the store read-only (refusing one a running node holds), reads back every
//! record of every column family ([`coffer_storage::verify`]), checks the
//! Raft bookkeeping and the ledger's invariants ([`coffer_ledger::invariants`]), and
//! prints the applied index, the term and the state digest, which equal
//! those of every other replica at the same applied index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_ledger::{state_digest, stored_state_digest, CodeTotals, LedgerId, Store};
use coffer_storage::verify::{open_stopped, verify_records, OpenStoppedError, RecordsReport};
use coffer_storage::{snapshot, LedgerState, LogStore, StorageError};
use serde::Serialize;

use coffer_ledger::invariants::{check_invariants, InvariantReport};

/// Accounts cached while verifying (each is read a few times).
const ACCOUNT_CACHE_ENTRIES: usize = 4_096;

/// `coffer verify`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// The node's data directory (holding `db/`), or the store directory itself.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Why verification could not run at all (as opposed to finding problems).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory holds no store.
    #[error("{0}: no Coffer store here (neither a db/ directory nor a RocksDB CURRENT file)")]
    NoStore(PathBuf),
    /// The store could not be opened (in use, not a Coffer store, ...).
    #[error(transparent)]
    Open(#[from] OpenStoppedError),
    /// The store failed while it was read.
    #[error("{path}: {source}")]
    Read {
        /// The store.
        path: PathBuf,
        /// The failure.
        source: StorageError,
    },
}

/// One column family's line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct ColumnFamilyRow {
    name: &'static str,
    records: u64,
    bytes: u64,
    corrupt_records: u64,
    scan_failed: bool,
}

/// One ledger's line of the report (amounts as decimal strings of minor units).
#[derive(Clone, Debug, Serialize)]
pub struct LedgerRow {
    id: u32,
    currency: String,
    accounts: u64,
    debits_posted: String,
    credits_posted: String,
    debits_pending: String,
    credits_pending: String,
    balanced: bool,
}

/// The Raft bookkeeping of the store.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RaftRow {
    applied_index: u64,
    applied_term: u64,
    term: u64,
    commit_index: u64,
    first_index: u64,
    last_index: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
}

/// What `coffer verify` reports (`--json` prints it as is).
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    store: PathBuf,
    ok: bool,
    problems: Vec<String>,
    raft: Option<RaftRow>,
    last_timestamp: Option<u64>,
    state_digest: Option<String>,
    records: u64,
    column_families: Vec<ColumnFamilyRow>,
    ledgers: Vec<LedgerRow>,
    accounts: u64,
    transfers: u64,
    pending: u64,
    pending_open: u64,
}

impl VerifyReport {
    /// Whether the store passed every check.
    pub fn ok(&self) -> bool {
        self.ok
    }
}

/// The store directory in `dir`: `dir/db`, or `dir` itself.
fn store_dir(dir: &Path) -> Result<PathBuf, VerifyError> {
    if dir.join("db").join("CURRENT").is_file() {
        Ok(dir.join("db"))
    } else if dir.join("CURRENT").is_file() {
        Ok(dir.to_owned())
    } else {
        Err(VerifyError::NoStore(dir.to_owned()))
    }
}

/// Verifies the store of `args.data_dir`.
pub fn run(args: &VerifyArgs) -> Result<VerifyReport, VerifyError> {
    let path = store_dir(&args.data_dir)?;
    let db = Arc::new(open_stopped(&path)?);
    let read_error = |source| VerifyError::Read { path: path.clone(), source };
    let records = verify_records(&db).map_err(read_error)?;
    let mut report = VerifyReport {
        store: path.clone(),
        ok: false,
        problems: Vec::new(),
        raft: None,
        last_timestamp: None,
        state_digest: None,
        records: records.records(),
        column_families: column_family_rows(&records),
        ledgers: Vec::new(),
        accounts: 0,
        transfers: 0,
        pending: 0,
        pending_open: 0,
    };
    if let Some(corruption) = &records.first_corruption {
        let corrupt = records.column_families.iter().map(|cf| cf.corrupt_records).sum::<u64>();
        report.problems.push(format!("corrupt record ({corrupt} in all): {corruption}"));
        report.problems.push("the Raft state and the ledger were not checked: the store is corrupt".into());
        return Ok(report);
    }
    if let Some(dir) = snapshot::interrupted_install(&db).map_err(read_error)? {
        let dir = dir.display();
        report.problems.push(format!("a snapshot install from {dir} was interrupted: start the node to finish it"));
    }
    let log = LogStore::open(db.clone(), 0).map_err(read_error)?;
    let state = LedgerState::open(db.clone(), ACCOUNT_CACHE_ENTRIES).map_err(read_error)?;
    let raft = raft_row(&log, &state).map_err(read_error)?;
    if raft.applied_index > raft.last_index {
        let (applied, last) = (raft.applied_index, raft.last_index);
        report.problems.push(format!("applied index {applied} is past the last log index {last}"));
    }
    if raft.applied_index + 1 < raft.first_index {
        let (applied, first) = (raft.applied_index, raft.first_index);
        report.problems.push(format!(
            "applied index {applied} is below the log's start {first}: the entries between, to be applied again after \
             a crash, are gone"
        ));
    }
    report.raft = Some(raft);
    let store_error = |error: coffer_ledger::StoreError| VerifyError::Read {
        path: path.clone(),
        source: StorageError::Inconsistent { detail: error.to_string() },
    };
    report.last_timestamp = Some(state.last_timestamp().map_err(store_error)?);
    let invariants = check_invariants(&state).map_err(store_error)?;
    add_invariants(&mut report, invariants);
    let digest = state_digest(&state).map_err(store_error)?;
    let stored = stored_state_digest(&state).map_err(store_error)?;
    if stored != digest {
        report.problems.push(format!(
            "the stored state digest {stored} disagrees with the one recomputed from every record ({digest})"
        ));
    }
    report.problems.extend(check_running_totals(&state).map_err(store_error)?);
    report.state_digest = Some(digest.to_string());
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// The running totals the state machine keeps, against sums of every
/// account: one problem per (ledger, code) that disagrees.
fn check_running_totals<S: Store>(state: &S) -> Result<Vec<String>, coffer_ledger::StoreError> {
    let mut summed = std::collections::BTreeMap::<(LedgerId, u16), CodeTotals>::new();
    state.for_each_account(&mut |account| {
        let key = (account.ledger, account.code);
        let totals = summed.entry(key).or_insert_with(|| CodeTotals::empty(key.0, key.1));
        totals.accounts += 1;
        totals.add(&account.balances());
    })?;
    let mut kept = std::collections::BTreeMap::new();
    let mut ledgers = Vec::new();
    state.for_each_ledger(&mut |ledger| ledgers.push(ledger.id))?;
    for ledger in ledgers {
        for totals in state.ledger_totals(ledger)? {
            kept.insert((totals.ledger, totals.code), totals);
        }
    }
    let keys: std::collections::BTreeSet<_> = summed.keys().chain(kept.keys()).copied().collect();
    Ok(keys
        .into_iter()
        .filter(|key| summed.get(key) != kept.get(key))
        .map(|(ledger, code)| {
            format!(
                "the running totals of ledger {ledger} code {code} ({:?}) disagree with its accounts' sums ({:?})",
                kept.get(&(ledger, code)),
                summed.get(&(ledger, code))
            )
        })
        .collect())
}

fn column_family_rows(records: &RecordsReport) -> Vec<ColumnFamilyRow> {
    records
        .column_families
        .iter()
        .map(|cf| ColumnFamilyRow {
            name: cf.name,
            records: cf.records,
            bytes: cf.bytes,
            corrupt_records: cf.corrupt_records,
            scan_failed: cf.scan_failed,
        })
        .collect()
}

fn raft_row(log: &LogStore, state: &LedgerState) -> Result<RaftRow, StorageError> {
    let conf_state = log.conf_state()?;
    let sorted = |ids: &[u64]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    };
    let applied = state.applied();
    Ok(RaftRow {
        applied_index: applied.index,
        applied_term: applied.term,
        term: log.hard_state().term,
        commit_index: log.hard_state().commit,
        first_index: log.first_index(),
        last_index: log.last_index(),
        voters: sorted(&conf_state.voters),
        learners: sorted(&conf_state.learners),
    })
}

fn add_invariants(report: &mut VerifyReport, invariants: InvariantReport) {
    report.accounts = invariants.accounts;
    report.transfers = invariants.transfers;
    report.pending = invariants.pending;
    report.pending_open = invariants.pending_open;
    report.ledgers = invariants
        .ledgers
        .iter()
        .map(|summary| LedgerRow {
            id: summary.ledger.id.0,
            currency: summary.ledger.currency.clone(),
            accounts: summary.totals.accounts,
            debits_posted: summary.totals.debits_posted.to_string(),
            credits_posted: summary.totals.credits_posted.to_string(),
            debits_pending: summary.totals.debits_pending.to_string(),
            credits_pending: summary.totals.credits_pending.to_string(),
            balanced: summary.totals.is_balanced(),
        })
        .collect();
    report.problems.extend(invariants.problems);
    if invariants.problems_more > 0 {
        report.problems.push(format!("... and {} more problems", invariants.problems_more));
    }
}

/// The report as text, one fact per line.
pub fn render_text(report: &VerifyReport) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| out.push_str(&format!("{label:<13} {text}\n"));
    line("store", report.store.display().to_string());
    let corrupt: u64 = report.column_families.iter().map(|cf| cf.corrupt_records).sum();
    let families = report.column_families.len();
    let verdict = if corrupt == 0 && !report.column_families.iter().any(|cf| cf.scan_failed) {
        "every frame and block checksum verifies".to_owned()
    } else {
        format!("{corrupt} corrupt")
    };
    line("records", format!("{} in {families} column families: {verdict}", report.records));
    for cf in report.column_families.iter().filter(|cf| cf.records > 0 || cf.corrupt_records > 0) {
        line("", format!("{:<18} {:>10} records {:>12} bytes", cf.name, cf.records, cf.bytes));
    }
    if let Some(raft) = &report.raft {
        let RaftRow { applied_index, applied_term, term, commit_index, first_index, last_index, .. } = raft;
        line("applied", format!("index {applied_index} (term {applied_term})"));
        line("raft", format!("term {term}, commit {commit_index}, log {first_index}..={last_index}"));
        line("members", format!("voters {:?}, learners {:?}", raft.voters, raft.learners));
    }
    for ledger in &report.ledgers {
        let verdict = if ledger.balanced { "balanced" } else { "NOT BALANCED" };
        line(
            "ledger",
            format!(
                "{} {}: {} accounts, posted {} = {}, pending {} = {}: {verdict}",
                ledger.id,
                ledger.currency,
                ledger.accounts,
                ledger.debits_posted,
                ledger.credits_posted,
                ledger.debits_pending,
                ledger.credits_pending
            ),
        );
    }
    if report.raft.is_some() {
        let (accounts, transfers, pending, open) =
            (report.accounts, report.transfers, report.pending, report.pending_open);
        line("state", format!("{accounts} accounts, {transfers} transfers, {pending} pending ({open} open)"));
    }
    if let Some(digest) = &report.state_digest {
        line("state digest", digest.clone());
    }
    for problem in &report.problems {
        line("FAILED", problem.clone());
    }
    if report.ok {
        line("OK", "the store verifies".into());
    }
    out
}
