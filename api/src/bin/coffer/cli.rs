//! The client subcommands of `coffer`: every RPC of `LedgerService` and
//! `AdminService` from the command line.
//!
//! Amounts are decimal strings at the ledger's scale (`AMOUNT_UNIT_DECIMAL`:
//! the server converts them and refuses extra decimal places); ids are
//! decimal; kinds and flags are names (`cash-transfer`, `pending,linked`);
//! timestamps are nanoseconds since the UNIX epoch or UTC
//! (`2025-11-29T22:00:00Z`). Output is an aligned table, or with `--json`
//! one JSON document (for `watch`, one object per change) on stdout.
//!
//! A create command prints one result per event and fails (exit status 1)
//! when any event failed, so scripts notice; so do lookups that miss an id
//! and a trial balance that is not balanced.

mod admin;
mod conn;
mod import;
mod input;
mod ledger;
mod parse;
mod reconcile;
pub mod table;
mod view;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Args, Subcommand, ValueEnum};
use coffer_api::client::{ClientConfig, ClientError, DEADLINE_MS_DEFAULT};
use coffer_api::proto;
use coffer_ledger::BATCH_EVENTS_MAX;
use coffer_security::{Security, TlsContext, TlsFiles};
use serde::Serialize;
use tonic::{Code, Status};

use conn::Conn;
use input::InputError;
use parse::parse_name;

/// The default client addresses: a local three-node cluster (`coffer dev`).
pub const ADDRESSES_DEFAULT: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";
/// Where `coffer dev` (with its default data directory) writes its
/// certificates.
pub const TLS_DIR_DEFAULT: &str = "data/dev/tls";
/// The principal a client presents unless told: the dev cluster's one with
/// every role.
pub const PRINCIPAL_DEFAULT: &str = "admin";
/// The most rows a page may ask for (the API's bound).
const ROWS_MAX: i64 = BATCH_EVENTS_MAX as i64;
/// Rows a page asks for unless told.
const ROWS_DEFAULT: u32 = 100;

/// How the client commands reach the cluster and print (global options).
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// Client addresses (host:port) of some of the cluster's nodes,
    /// comma-separated; calls follow the leader they name.
    #[arg(long, global = true, env = "COFFER_ADDRESSES", value_delimiter = ',', default_value = ADDRESSES_DEFAULT)]
    pub addresses: Vec<String>,
    /// Print JSON (one document; for `watch`, one object per line) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The deadline of each call, across its retries, in milliseconds.
    #[arg(long, global = true, default_value_t = DEADLINE_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Read the answering node's state without confirming it with the
    /// leader (faster; may be behind).
    #[arg(long, global = true)]
    pub stale: bool,
    /// The certificate authorities to trust (PEM), with --cert and --key;
    /// otherwise the files of --principal in --tls-dir are used.
    #[arg(long, global = true, env = "COFFER_CA", value_name = "FILE", requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    #[arg(long, global = true, env = "COFFER_CERT", value_name = "FILE", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "COFFER_KEY", value_name = "FILE", requires_all = ["ca", "cert"])]
    pub key: Option<PathBuf>,
    /// A directory of certificates as `coffer dev` and `coffer certs` write
    /// them: ca.crt, and NAME.crt and NAME.key per principal.
    #[arg(long, global = true, env = "COFFER_TLS_DIR", value_name = "DIR", default_value = TLS_DIR_DEFAULT)]
    pub tls_dir: PathBuf,
    /// The principal whose certificate in --tls-dir this client presents.
    #[arg(long, global = true, env = "COFFER_PRINCIPAL", value_name = "NAME", default_value = PRINCIPAL_DEFAULT)]
    pub principal: String,
    /// Plaintext, for a cluster whose nodes run with `insecure = true`.
    #[arg(long, global = true, env = "COFFER_INSECURE", conflicts_with_all = ["ca", "cert", "key"])]
    pub insecure: bool,
}

impl ClientOptions {
    /// The TLS files these options name: --ca, --cert and --key, or
    /// --principal's in --tls-dir; `None` with --insecure.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        if self.insecure {
            return None;
        }
        Some(match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() },
            _ => TlsFiles::in_dir(&self.tls_dir, &self.principal),
        })
    }

    /// The security of this process's connections, from the options.
    pub fn security(&self) -> Result<Security, CliError> {
        let Some(files) = self.tls_files() else {
            return Ok(Security::Insecure);
        };
        if self.ca.is_none() && !files.cert.exists() {
            return Err(CliError::usage(
                "--principal",
                format!(
                    "no certificate {} (pass --ca, --cert and --key, or --tls-dir where `coffer dev` or `coffer certs` \
                     wrote them, or --insecure for a plaintext cluster)",
                    files.cert.display()
                ),
            ));
        }
        let context = TlsContext::load(files).map_err(|error| CliError::usage("TLS", error.to_string()))?;
        Ok(Security::Tls(context))
    }
}

/// The security every connection of this process uses, chosen once from
/// the options when it starts ([`set_security`]).
static SECURITY: OnceLock<Security> = OnceLock::new();

/// Sets the security of this process's connections (once; later calls
/// change nothing).
pub fn set_security(security: Security) {
    let _ = SECURITY.set(security);
}

/// The security of this process's connections: what [`set_security`] set,
/// plaintext before (a node refuses it unless it runs insecure).
pub fn security() -> Security {
    SECURITY.get().cloned().unwrap_or(Security::Insecure)
}

/// A client configuration for `addresses` with this process's security.
pub fn client_config(addresses: Vec<String>) -> ClientConfig {
    ClientConfig { security: security(), ..ClientConfig::new(addresses) }
}

/// The client commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Ledgers: one per currency or asset.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Accounts: create, show, list their transfers.
    #[command(subcommand)]
    Account(AccountCommand),
    /// An account's balances: now, as of a time, or their history.
    Balance(BalanceArgs),
    /// Transfers: create, post or void pending ones, show, query, import from a file.
    #[command(subcommand)]
    Transfer(TransferCommand),
    /// One ledger's trial balance: totals per account code, and whether debits equal credits.
    TrialBalance(TrialBalanceArgs),
    /// Print every committed change as it is applied, until Ctrl-C.
    Watch(WatchArgs),
    /// Every node's role, term, commit and applied index, and lag.
    Status,
    /// Cluster membership: add a learner, promote it to voter, remove a node.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Make a verified backup of one node's state in a directory on that node.
    Snapshot(SnapshotArgs),
    /// The audit trail: who proposed each committed batch (role `auditor`).
    Audit(AuditArgs),
    /// Bank statements: import (camt.053 or CSV) and reconcile with a cash
    /// account's transfers, show, list, match by hand.
    #[command(subcommand)]
    Reconcile(ReconcileCommand),
}

/// `coffer reconcile ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ReconcileCommand {
    /// Import a statement and reconcile it (again: a re-run that keeps manual matches).
    Import(ReconcileImportArgs),
    /// Show one statement's reconciliation.
    Show(ReconcileShowArgs),
    /// List a cash account's reconciliations.
    List(ReconcileListArgs),
    /// Match statement lines and transfers by hand, with a reason.
    Match(ReconcileMatchArgs),
}

/// `coffer reconcile import`
#[derive(Debug, Clone, Args)]
pub struct ReconcileImportArgs {
    /// The cash account the statement is of.
    #[arg(long)]
    pub account: u128,
    /// The statement file: ISO 20022 camt.053 (.xml) or Coffer's CSV (.csv).
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// camt053 or csv (default: from the file's extension).
    #[arg(long)]
    pub format: Option<String>,
    /// A line and a transfer match only within this many days (0: 3).
    #[arg(long, default_value_t = 0)]
    pub window_days: u32,
    /// The bank's dates' offset from UTC in minutes (Korea: 540).
    #[arg(long, default_value_t = 540, allow_hyphen_values = true)]
    pub utc_offset_minutes: i32,
    /// Print CSV (one row per line and per unmatched transfer).
    #[arg(long)]
    pub csv: bool,
}

/// `coffer reconcile show`
#[derive(Debug, Clone, Args)]
pub struct ReconcileShowArgs {
    /// The cash account.
    #[arg(long)]
    pub account: u128,
    /// The statement's id.
    #[arg(long)]
    pub statement: String,
    /// Print CSV (one row per line and per unmatched transfer).
    #[arg(long)]
    pub csv: bool,
}

/// `coffer reconcile list`
#[derive(Debug, Clone, Args)]
pub struct ReconcileListArgs {
    /// The cash account.
    #[arg(long)]
    pub account: u128,
}

/// `coffer reconcile match`
#[derive(Debug, Clone, Args)]
pub struct ReconcileMatchArgs {
    /// The cash account.
    #[arg(long)]
    pub account: u128,
    /// The statement's id.
    #[arg(long)]
    pub statement: String,
    /// A statement line's number; repeatable.
    #[arg(long)]
    pub line: Vec<u32>,
    /// A transfer id; repeatable.
    #[arg(long)]
    pub transfer: Vec<u128>,
    /// Why they belong together (kept with the match).
    #[arg(long)]
    pub reason: String,
}

/// `coffer audit`
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Records of log entries after this index (the last page's last index).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many records.
    #[arg(long, default_value_t = ROWS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=ROWS_MAX))]
    pub limit: u32,
    /// Only this principal's batches (a client's name, or node:ID).
    #[arg(long, value_name = "NAME")]
    pub of: Option<String>,
}

/// `coffer ledger ...`
#[derive(Debug, Clone, Subcommand)]
pub enum LedgerCommand {
    /// Create a ledger (one fund's fiscal year).
    Create(LedgerCreateArgs),
    /// Move a ledger's fiscal period forward: open → adjustment (only
    /// transfers flagged adjustment) → closed (none).
    Period(LedgerPeriodArgs),
    /// Close a fiscal year into the next: nominal accounts into the net
    /// position, carried balances opened in the next year, the year locked.
    /// Running it again continues an interrupted close.
    Close(LedgerCloseArgs),
}

/// `coffer ledger close`
#[derive(Debug, Clone, Args)]
pub struct LedgerCloseArgs {
    /// The fiscal year's ledger to close.
    #[arg(long)]
    pub id: u32,
    /// The next year's ledger (open, same currency and scale).
    #[arg(long, required_unless_present = "abort")]
    pub next: Option<u32>,
    /// The account of this year that nominal accounts close into.
    #[arg(long, required_unless_present = "abort")]
    pub net_position: Option<u128>,
    /// The account of the next year on the other side of opening balances.
    #[arg(long, required_unless_present = "abort")]
    pub opening_account: Option<u128>,
    /// Codes MIN-MAX of nominal (revenue, expense) accounts; repeatable.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_code_range, required_unless_present = "abort")]
    pub nominal: Vec<(u16, u16)>,
    /// Codes MIN-MAX whose balances open the next year; repeatable.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_code_range)]
    pub carry: Vec<(u16, u16)>,
    /// Account A carries into account A + OFFSET of the next year.
    #[arg(long, value_name = "OFFSET", required_unless_present = "abort")]
    pub account_offset: Option<u128>,
    /// The first id of the close's transfers (a free range of twice the
    /// year's accounts).
    #[arg(long, required_unless_present = "abort")]
    pub first_transfer_id: Option<u128>,
    /// The code of the close's transfers.
    #[arg(long, required_unless_present = "abort")]
    pub code: Option<u16>,
    /// Undo a close that stopped before posting a transfer.
    #[arg(long)]
    pub abort: bool,
}

/// `coffer ledger period`
#[derive(Debug, Clone, Args)]
pub struct LedgerPeriodArgs {
    /// The ledger.
    #[arg(long)]
    pub id: u32,
    /// adjustment or closed.
    #[arg(long, value_parser = parse_name::<proto::Period>)]
    pub to: proto::Period,
}

/// `coffer ledger create`
#[derive(Debug, Clone, Args)]
pub struct LedgerCreateArgs {
    /// The ledger's id: 1 to 4294967294.
    #[arg(long)]
    pub id: u32,
    /// ISO 4217 code (KRW) or an asset name: 1 to 12 of A-Z, 0-9, _.
    #[arg(long)]
    pub currency: String,
    /// Decimal places of the minor unit (0 for KRW, 2 for USD); at most 18.
    #[arg(long)]
    pub scale: u32,
    /// A human-readable name, 1 to 64 bytes.
    #[arg(long)]
    pub name: String,
    /// Budget control: every expenditure must carry, in its linked chain, a
    /// transfer of the same amount in this budget ledger.
    #[arg(long, value_name = "LEDGER")]
    pub budget_ledger: Option<u32>,
    /// With --budget-ledger: transfer codes MIN-MAX that need a budget leg
    /// besides expenditures.
    #[arg(long, value_name = "MIN-MAX", requires = "budget_ledger", value_parser = parse_code_range)]
    pub budget_codes: Option<(u16, u16)>,
    /// For a budget ledger: warn (change feed, metrics) when a transfer
    /// charges an appropriation past this share of it, in per cent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0)]
    pub warn_percent: u32,
}

/// Parses `MIN-MAX` (two codes, 1 to 65535).
fn parse_code_range(text: &str) -> Result<(u16, u16), String> {
    let (min, max) = text.split_once('-').ok_or_else(|| format!("{text:?} is not MIN-MAX"))?;
    let code = |part: &str| part.trim().parse::<u16>().map_err(|error| format!("{part:?}: {error}"));
    Ok((code(min)?, code(max)?))
}

/// User data of an account or transfer.
#[derive(Debug, Clone, Args)]
pub struct UserDataArgs {
    /// Free 128-bit number (e.g. the local-government code or payment request number).
    #[arg(long, default_value_t = 0)]
    pub user_data_128: u128,
    /// Free 64-bit number (e.g. the fund).
    #[arg(long, default_value_t = 0)]
    pub user_data_64: u64,
    /// Free 32-bit number (e.g. the budget line).
    #[arg(long, default_value_t = 0)]
    pub user_data_32: u32,
}

/// `coffer account ...`
#[derive(Debug, Clone, Subcommand)]
pub enum AccountCommand {
    /// Create an account.
    Create(AccountCreateArgs),
    /// Show accounts with their balances.
    Show(ShowArgs),
    /// A page of the transfers that touched an account, by time.
    History(HistoryArgs),
    /// Accounts by ledger, code, kind, user data and creation time (from
    /// the server's indexes), with their balances.
    Query(AccountQueryArgs),
}

/// `coffer account create`
#[derive(Debug, Clone, Args)]
pub struct AccountCreateArgs {
    /// The account's id.
    #[arg(long)]
    pub id: u128,
    /// The ledger the account is kept in.
    #[arg(long)]
    pub ledger: u32,
    /// Chart-of-accounts code: 1 to 65535.
    #[arg(long)]
    pub code: u16,
    /// cash (treasury or bank cash) or other.
    #[arg(long, value_parser = parse_name::<proto::AccountKind>)]
    pub kind: proto::AccountKind,
    /// Comma-separated: linked, debits-must-not-exceed-credits,
    /// credits-must-not-exceed-debits, history, closed.
    #[arg(long, value_delimiter = ',', value_parser = parse_name::<proto::AccountFlag>)]
    pub flags: Vec<proto::AccountFlag>,
    #[command(flatten)]
    pub user_data: UserDataArgs,
}

/// Ids to look up.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The ids (at most 8189).
    #[arg(required = true, num_args = 1..)]
    pub ids: Vec<u128>,
}

/// A time range and page size.
#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// Earliest timestamp, inclusive (ns since the epoch, or UTC like 2025-01-01T00:00:00Z).
    #[arg(long, value_parser = parse::timestamp)]
    pub from: Option<u64>,
    /// Latest timestamp, inclusive.
    #[arg(long, value_parser = parse::timestamp)]
    pub to: Option<u64>,
    /// Most rows: 1 to 8189.
    #[arg(long, default_value_t = ROWS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=ROWS_MAX))]
    pub limit: u32,
    /// Newest first.
    #[arg(long)]
    pub desc: bool,
}

/// Which of an account's transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidesArg {
    /// Debiting or crediting the account.
    Both,
    /// Debiting the account.
    Debits,
    /// Crediting the account.
    Credits,
}

/// `coffer account history`
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The account.
    pub id: u128,
    #[command(flatten)]
    pub range: RangeArgs,
    /// Which transfers: both sides, debits or credits.
    #[arg(long, value_enum, default_value_t = SidesArg::Both)]
    pub sides: SidesArg,
}

/// `coffer balance`
#[derive(Debug, Clone, Args)]
pub struct BalanceArgs {
    /// The account.
    pub id: u128,
    /// The balances as of this time (accounts with the history flag).
    #[arg(long, value_parser = parse::timestamp, conflicts_with_all = ["history", "from", "to", "desc"])]
    pub as_of: Option<u64>,
    /// A page of the balance history (accounts with the history flag);
    /// implied by --from, --to or --desc.
    #[arg(long)]
    pub history: bool,
    /// Earliest timestamp of the history, inclusive.
    #[arg(long, value_parser = parse::timestamp)]
    pub from: Option<u64>,
    /// Latest timestamp of the history, inclusive.
    #[arg(long, value_parser = parse::timestamp)]
    pub to: Option<u64>,
    /// Most history rows: 1 to 8189.
    #[arg(long, default_value_t = ROWS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=ROWS_MAX))]
    pub limit: u32,
    /// History newest first.
    #[arg(long)]
    pub desc: bool,
}

/// `coffer transfer ...`
#[derive(Debug, Clone, Subcommand)]
pub enum TransferCommand {
    /// Create a transfer.
    Create(TransferCreateArgs),
    /// Post all or part of a pending transfer.
    Post(PostArgs),
    /// Void a pending transfer (release its reservation).
    Void(VoidArgs),
    /// Show transfers.
    Show(ShowArgs),
    /// Transfers by ledger, code, kind, user data and time.
    Query(QueryArgs),
    /// Create the transfers of a CSV or JSON-lines file, in batches.
    Import(ImportArgs),
}

/// `coffer transfer create`
#[derive(Debug, Clone, Args)]
pub struct TransferCreateArgs {
    /// The transfer's id (a retry with the same id and fields answers exists).
    #[arg(long)]
    pub id: u128,
    /// The account debited.
    #[arg(long)]
    pub debit: u128,
    /// The account credited.
    #[arg(long)]
    pub credit: u128,
    /// The amount, at the ledger's scale (1500000, 123.45).
    #[arg(long, value_parser = parse::amount)]
    pub amount: String,
    /// The ledger of both accounts.
    #[arg(long)]
    pub ledger: u32,
    /// The reason code: 1 to 65535.
    #[arg(long)]
    pub code: u16,
    /// expenditure, receipt, cash-transfer or journal.
    #[arg(long, value_parser = parse_name::<proto::TransferKind>)]
    pub kind: proto::TransferKind,
    /// Comma-separated: linked, pending, balancing-debit, balancing-credit,
    /// closing-debit, closing-credit (post/void: use `transfer post|void`).
    #[arg(long, value_delimiter = ',', value_parser = parse_name::<proto::TransferFlag>)]
    pub flags: Vec<proto::TransferFlag>,
    /// For a pending transfer: seconds until it expires (0: never).
    #[arg(long, default_value_t = 0)]
    pub timeout: u32,
    #[command(flatten)]
    pub user_data: UserDataArgs,
}

/// `coffer transfer post`
#[derive(Debug, Clone, Args)]
pub struct PostArgs {
    /// The post's own transfer id.
    #[arg(long)]
    pub id: u128,
    /// The pending transfer to post.
    #[arg(long)]
    pub pending_id: u128,
    /// The amount to post (default: the whole pending amount).
    #[arg(long, value_parser = parse::post_amount)]
    pub amount: Option<String>,
}

/// `coffer transfer void`
#[derive(Debug, Clone, Args)]
pub struct VoidArgs {
    /// The void's own transfer id.
    #[arg(long)]
    pub id: u128,
    /// The pending transfer to void.
    #[arg(long)]
    pub pending_id: u128,
}

/// The fields both queries select by besides the kind; each set one must
/// match.
#[derive(Debug, Clone, Args)]
pub struct FieldArgs {
    /// The ledger.
    #[arg(long)]
    pub ledger: Option<u32>,
    /// The code.
    #[arg(long)]
    pub code: Option<u16>,
    /// user_data_128.
    #[arg(long)]
    pub user_data_128: Option<u128>,
    /// user_data_64 (e.g. a local government's code).
    #[arg(long)]
    pub user_data_64: Option<u64>,
    /// user_data_32.
    #[arg(long)]
    pub user_data_32: Option<u32>,
}

/// `coffer transfer query`
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Ledger, code and user data.
    #[command(flatten)]
    pub fields: FieldArgs,
    /// The kind.
    #[arg(long, value_parser = parse_name::<proto::TransferKind>)]
    pub kind: Option<proto::TransferKind>,
    /// Times, page size and order.
    #[command(flatten)]
    pub range: RangeArgs,
}

/// `coffer account query`
#[derive(Debug, Clone, Args)]
pub struct AccountQueryArgs {
    /// Ledger, code and user data.
    #[command(flatten)]
    pub fields: FieldArgs,
    /// The kind: cash or other.
    #[arg(long, value_parser = parse_name::<proto::AccountKind>)]
    pub kind: Option<proto::AccountKind>,
    /// Creation times, page size and order.
    #[command(flatten)]
    pub range: RangeArgs,
}

/// The format of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// Comma-separated values with a header row of field names.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// `coffer transfer import`
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file: CSV with a header row of Transfer field names (flags
    /// `|`-separated), or one JSON object per line.
    pub file: std::path::PathBuf,
    /// The file's format (default: jsonl for *.jsonl and *.ndjson, else csv).
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Transfers per request: 1 to 8189 (a linked chain is not split across requests when it fits).
    #[arg(long, default_value_t = BATCH_EVENTS_MAX as u32, value_parser = clap::value_parser!(u32).range(1..=ROWS_MAX))]
    pub batch: u32,
}

/// `coffer trial-balance`
#[derive(Debug, Clone, Args)]
pub struct TrialBalanceArgs {
    /// The ledger.
    #[arg(long)]
    pub ledger: u32,
    /// The trial balance as it stood at this time (ns since the epoch, or
    /// UTC like 2025-12-31T23:59:59.999999999Z), e.g. a period end.
    #[arg(long, value_parser = parse::timestamp)]
    pub as_of: Option<u64>,
}

/// `coffer watch`
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Start just after this change's cursor (0: from the first change).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Only changes of this ledger.
    #[arg(long)]
    pub ledger: Option<u32>,
}

/// `coffer member ...`
#[derive(Debug, Clone, Subcommand)]
pub enum MemberCommand {
    /// Add a node as a learner (it receives the log but does not vote).
    Add(MemberAddArgs),
    /// Make a learner a voter.
    Promote(NodeIdArgs),
    /// Remove a node.
    Remove(NodeIdArgs),
}

/// `coffer member add`
#[derive(Debug, Clone, Args)]
pub struct MemberAddArgs {
    /// The new node's id (not 0).
    #[arg(long)]
    pub id: u64,
    /// Where the new node serves the Raft transport (host:port).
    #[arg(long)]
    pub raft_address: String,
    /// Where it serves the client API (host:port): kept with the membership,
    /// so every node's address book has it.
    #[arg(long)]
    pub api_address: Option<String>,
}

/// A node.
#[derive(Debug, Clone, Args)]
pub struct NodeIdArgs {
    /// The node's id.
    #[arg(long)]
    pub id: u64,
    /// Promote a learner that has not caught up, or remove a voter although
    /// the voters left could not lose another one (the node's audit log
    /// records the call).
    #[arg(long)]
    pub force: bool,
}

/// `coffer leader ...`
#[derive(Debug, Clone, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to a caught-up voter (`coffer status` shows the outcome).
    Transfer(LeaderTransferArgs),
}

/// `coffer leader transfer`
#[derive(Debug, Clone, Args)]
pub struct LeaderTransferArgs {
    /// The voter to lead.
    #[arg(long)]
    pub to: u64,
}

/// `coffer snapshot`
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// An absolute directory on the node's machine that does not exist yet.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// The node's client address (default: the first of --addresses).
    #[arg(long)]
    pub node: Option<String>,
}

/// Why a client command failed: one line naming the field, file line or node.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A command-line value is invalid.
    #[error("{field}: {reason}")]
    Usage { field: String, reason: String },
    /// A line of an input file is malformed.
    #[error("{path}: {error}; nothing of the file was submitted")]
    Input { path: String, error: InputError },
    /// A file could not be read.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// A node refused the call.
    #[error("{rpc} at {address}: {code:?}: {message}")]
    Rpc { rpc: &'static str, address: String, code: Code, message: String },
    /// The node does not serve this RPC (yet).
    #[error("{rpc} is not implemented by the node at {address}: {message}")]
    Unimplemented { rpc: &'static str, address: String, message: String },
    /// No answer within the deadline.
    #[error("{rpc}: no answer within {timeout_ms} ms ({attempts} tries; last: {last}){}", write_hint(rpc))]
    Deadline { rpc: &'static str, timeout_ms: u64, attempts: u32, last: String },
    /// A node's answer does not fit the request (a server of another version?).
    #[error("{rpc}: unexpected answer: {reason}")]
    Answer { rpc: &'static str, reason: String },
    /// An admin call failed.
    #[error("{rpc}: {error}")]
    Client { rpc: &'static str, error: ClientError },
    /// Some events of a create request failed (their results were printed).
    #[error("{failed} of {total} {what} failed (results above)")]
    EventsFailed { what: &'static str, failed: usize, total: usize },
    /// Ids that were looked up do not exist.
    #[error("{what} not found: {ids}")]
    NotFound { what: &'static str, ids: String },
    /// The trial balance does not balance.
    #[error("ledger {ledger} is NOT BALANCED (node {node_id}, applied index {applied_index})")]
    NotBalanced { ledger: u32, node_id: u64, applied_index: u64 },
    /// A batch of an import was refused as a whole.
    #[error(
        "batch {batch} (lines {first_line}-{last_line}) was refused: {error}; the {submitted} transfers of the \
         batches before it were submitted (running the import again is safe: they answer exists)"
    )]
    BatchRefused { batch: usize, first_line: usize, last_line: usize, submitted: usize, error: Box<CliError> },
    /// The change feed could not be kept open.
    #[error("watch: gave up after {attempts} failed tries in a row (resume with --after {cursor}); last: {last}")]
    WatchGaveUp { attempts: u32, cursor: u64, last: String },
    /// The output could not be written.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

fn write_hint(rpc: &str) -> &'static str {
    if rpc.starts_with("Create") {
        "; the write's outcome is unknown: run it again with the same ids (applied events answer exists)"
    } else {
        ""
    }
}

impl CliError {
    /// The error of a refused call.
    pub fn rpc(rpc: &'static str, address: &str, status: &Status) -> Self {
        let (address, message) = (address.to_owned(), status.message().to_owned());
        match status.code() {
            Code::Unimplemented => Self::Unimplemented { rpc, address, message },
            code => Self::Rpc { rpc, address, code, message },
        }
    }

    fn usage(field: &str, reason: impl Into<String>) -> Self {
        Self::Usage { field: field.to_owned(), reason: reason.into() }
    }
}

/// How a command prints: tables and lines, or JSON.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// Writes `text` to stdout.
    fn text(self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    /// Writes `value` as one line of JSON.
    fn json<T: Serialize>(self, value: &T) -> Result<(), CliError> {
        let mut line = serde_json::to_string(value).map_err(std::io::Error::other)?;
        line.push('\n');
        self.text(&line)
    }

    /// Writes `value` as JSON, or the text `text` makes of it.
    fn emit<T: Serialize>(self, value: &T, text: impl FnOnce(&T) -> String) -> Result<(), CliError> {
        if self.json {
            self.json(value)
        } else {
            self.text(&text(value))
        }
    }
}

/// Runs a client command against the cluster at `options.addresses`.
pub async fn run(command: ClientCommand, options: &ClientOptions) -> Result<(), CliError> {
    let out = Out { json: options.json };
    let conn = || Conn::new(&options.addresses, options.timeout_ms, options.stale);
    match command {
        ClientCommand::Ledger(LedgerCommand::Create(args)) => ledger::create_ledger(&conn()?, out, args).await,
        ClientCommand::Ledger(LedgerCommand::Period(args)) => ledger::set_period(&conn()?, out, args).await,
        ClientCommand::Ledger(LedgerCommand::Close(args)) => ledger::close_year(&conn()?, out, args).await,
        ClientCommand::Account(AccountCommand::Create(args)) => ledger::create_account(&conn()?, out, args).await,
        ClientCommand::Account(AccountCommand::Show(args)) => ledger::show_accounts(&conn()?, out, args).await,
        ClientCommand::Account(AccountCommand::History(args)) => ledger::account_history(&conn()?, out, args).await,
        ClientCommand::Account(AccountCommand::Query(args)) => ledger::query_accounts(&conn()?, out, args).await,
        ClientCommand::Balance(args) => ledger::balance(&conn()?, out, args).await,
        ClientCommand::Transfer(TransferCommand::Create(args)) => ledger::create_transfer(&conn()?, out, args).await,
        ClientCommand::Transfer(TransferCommand::Post(args)) => {
            let amount = args.amount.unwrap_or_else(|| "max".into());
            let flag = proto::TransferFlag::PostPending;
            ledger::finish_pending(&conn()?, out, args.id, args.pending_id, flag, amount).await
        }
        ClientCommand::Transfer(TransferCommand::Void(args)) => {
            let flag = proto::TransferFlag::VoidPending;
            ledger::finish_pending(&conn()?, out, args.id, args.pending_id, flag, String::new()).await
        }
        ClientCommand::Transfer(TransferCommand::Show(args)) => ledger::show_transfers(&conn()?, out, args).await,
        ClientCommand::Transfer(TransferCommand::Query(args)) => ledger::query_transfers(&conn()?, out, args).await,
        ClientCommand::Transfer(TransferCommand::Import(args)) => import::run(&conn()?, out, args).await,
        ClientCommand::TrialBalance(args) => ledger::trial_balance(&conn()?, out, args).await,
        ClientCommand::Watch(args) => watch::run(&conn()?, out, args).await,
        ClientCommand::Status => admin::status(options, out).await,
        ClientCommand::Member(command) => admin::member(options, out, command).await,
        ClientCommand::Leader(LeaderCommand::Transfer(args)) => admin::transfer_leader(options, out, args).await,
        ClientCommand::Snapshot(args) => admin::snapshot(options, out, args).await,
        ClientCommand::Audit(args) => admin::audit(options, out, args).await,
        ClientCommand::Reconcile(ReconcileCommand::Import(args)) => reconcile::import(&conn()?, out, args).await,
        ClientCommand::Reconcile(ReconcileCommand::Show(args)) => reconcile::show(&conn()?, out, args).await,
        ClientCommand::Reconcile(ReconcileCommand::List(args)) => reconcile::list(&conn()?, out, args).await,
        ClientCommand::Reconcile(ReconcileCommand::Match(args)) => reconcile::match_by_hand(&conn()?, out, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// `coffer` as far as the client commands go (main.rs flattens the same two).
    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        options: ClientOptions,
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(line: &str) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(["coffer"].into_iter().chain(line.split_whitespace()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn global_options_have_defaults_and_go_anywhere() {
        let cli = parse("status").unwrap();
        assert_eq!(cli.options.addresses, ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]);
        assert_eq!(cli.options.timeout_ms, DEADLINE_MS_DEFAULT);
        assert!(!cli.options.json);
        let cli = parse("account show 5 6 --json --addresses a:1,b:2 --timeout-ms 500").unwrap();
        assert_eq!(cli.options.addresses, ["a:1", "b:2"]);
        assert!(cli.options.json);
        assert_eq!(cli.options.timeout_ms, 500);
        let ClientCommand::Account(AccountCommand::Show(show)) = cli.command else { panic!("{:?}", cli.command) };
        assert_eq!(show.ids, [5, 6]);
        assert!(parse("status --timeout-ms 0").is_err());
    }

    #[test]
    fn account_create_parses_kind_and_flags_in_any_spelling() {
        let cli = parse(
            "account create --id 10 --ledger 1 --code 101 --kind cash \
             --flags debits-must-not-exceed-credits,HISTORY --user-data-32 7",
        )
        .unwrap();
        let ClientCommand::Account(AccountCommand::Create(args)) = cli.command else { panic!("{:?}", cli.command) };
        assert_eq!((args.id, args.ledger, args.code), (10, 1, 101));
        assert_eq!(args.kind, proto::AccountKind::Cash);
        assert_eq!(args.flags, [proto::AccountFlag::DebitsMustNotExceedCredits, proto::AccountFlag::History]);
        assert_eq!(args.user_data.user_data_32, 7);
    }

    #[test]
    fn an_unknown_flag_is_refused_naming_it() {
        let error = parse("account create --id 1 --ledger 1 --code 1 --kind cash --flags histroy").unwrap_err();
        assert!(error.to_string().contains("unknown account flag \"histroy\""), "{error}");
        let error = parse("transfer create --id 1 --debit 2 --credit 3 --amount 1 --ledger 1 --code 1 --kind gift")
            .unwrap_err();
        assert!(error.to_string().contains("unknown transfer kind \"gift\""), "{error}");
    }

    #[test]
    fn transfer_amounts_are_decimal_text() {
        let line =
            "transfer create --id 1 --debit 2 --credit 3 --amount 123.45 --ledger 1 --code 7 --kind expenditure \
                    --flags pending --timeout 60";
        let ClientCommand::Transfer(TransferCommand::Create(args)) = parse(line).unwrap().command else { panic!() };
        assert_eq!(args.amount, "123.45");
        assert_eq!(args.flags, [proto::TransferFlag::Pending]);
        assert_eq!(args.timeout, 60);
        assert!(parse(&line.replace("123.45", "-5")).is_err());
        assert!(parse(&line.replace("123.45", "1,000")).is_err());
        let post = parse("transfer post --id 2 --pending-id 1").unwrap();
        let ClientCommand::Transfer(TransferCommand::Post(args)) = post.command else { panic!() };
        assert_eq!((args.id, args.pending_id, args.amount), (2, 1, None));
        assert!(parse("transfer post --id 2 --pending-id 1 --amount max").is_ok());
    }

    #[test]
    fn balance_as_of_excludes_a_history_range() {
        let cli = parse("balance 10 --as-of 2025-01-01T00:00:00Z").unwrap();
        let ClientCommand::Balance(args) = cli.command else { panic!() };
        assert_eq!(args.as_of, Some(1_735_689_600_000_000_000));
        assert!(parse("balance 10 --as-of 5 --from 1").is_err());
        assert!(parse("balance 10 --from 1 --limit 9000").is_err());
    }

    #[test]
    fn history_query_import_and_admin_commands_parse() {
        let cli = parse("account history 10 --from 5 --limit 20 --sides debits --desc").unwrap();
        let ClientCommand::Account(AccountCommand::History(args)) = cli.command else { panic!() };
        assert_eq!((args.range.from, args.range.to, args.range.limit, args.range.desc), (Some(5), None, 20, true));
        assert_eq!(args.sides, SidesArg::Debits);
        let cli = parse("transfer query --ledger 1 --kind receipt --user-data-64 9").unwrap();
        let ClientCommand::Transfer(TransferCommand::Query(args)) = cli.command else { panic!() };
        let found = (args.fields.ledger, args.kind, args.fields.user_data_64);
        assert_eq!(found, (Some(1), Some(proto::TransferKind::Receipt), Some(9)));
        let cli = parse("transfer import payments.csv --batch 100").unwrap();
        let ClientCommand::Transfer(TransferCommand::Import(args)) = cli.command else { panic!() };
        assert_eq!((args.batch, args.format), (100, None));
        assert!(parse("transfer import payments.csv --batch 8190").is_err());
        assert!(parse("trial-balance --ledger 1").is_ok());
        assert!(parse("watch --after 17 --ledger 2 --json").is_ok());
        assert!(parse("member add --id 4 --raft-address 127.0.0.1:7204").is_ok());
        assert!(parse("member promote --id 4").is_ok());
        assert!(parse("leader transfer --to 2").is_ok());
        assert!(parse("snapshot --dir /var/backups/coffer-1").is_ok());
        assert!(parse("ledger create --id 1 --currency KRW --scale 0 --name won").is_ok());
    }
}
