//! Bank-statement reconciliation on the API: parse the statement
//! (`coffer_recon`), read the cash account's transfers around its days on a
//! read view, match them, and propose the outcome for the state machine to
//! keep (see [`coffer_ledger::reconcile`]). Matching and reading run here,
//! off the apply path; the entry carries their result.

use coffer_ledger::amount::format_amount;
use coffer_ledger::reconcile::{
    GroupKind, MatchGroup, ReconcileOp, Reconciliation, StatementLine, STATEMENT_TEXT_LEN_MAX,
};
use coffer_ledger::{
    balance_as_of, get_account_transfers, Account, AccountFilter, AccountFlags, AccountId, LedgerId, Operation,
    OperationResults, QueryError, ReconcileResult, Sides, Store, Transfer, TransferFlags, TransferId, BATCH_EVENTS_MAX,
    NS_PER_S,
};
use coffer_recon::{reconcile, Date, Direction, LedgerEntry, MatchKind, MatchRules, Statement};
use tonic::{Response, Status};

use super::{Deadline, Proposed, Shared};
use crate::access::{Caller, Role};
use crate::convert::{self, FieldError};
use crate::node::Node;
use crate::proto;

/// The date window when a request names none, in days.
const WINDOW_DAYS_DEFAULT: u32 = 3;
/// The widest date window, in days.
const WINDOW_DAYS_MAX: u32 = 31;
/// The largest offset of a bank's dates from UTC, in minutes.
const UTC_OFFSET_MINUTES_MAX: i32 = 14 * 60;
/// The most transfers of the account one import reads (in the window, and
/// after the statement's end when the account keeps no balance history).
const TRANSFERS_READ_MAX: usize = 16 * BATCH_EVENTS_MAX;
/// Seconds per day.
const SECONDS_PER_DAY: i64 = 86_400;

/// The account's ledger, its scale and currency, and the account.
type AccountContext = (Account, LedgerId, u8, String);

/// Reads the account and its ledger; `None` when the account does not exist.
async fn account_context<N: Node>(
    shared: &Shared<N>,
    account: AccountId,
    stale: bool,
    deadline: Deadline,
) -> Result<Option<AccountContext>, Status> {
    let (_, found) = shared
        .read(stale, deadline, move |state| {
            let Some(account) = state.account(account)? else { return Ok(None) };
            let ledger = state.ledger(account.ledger)?.ok_or(QueryError::LedgerNotFound(account.ledger))?;
            Ok::<_, QueryError>(Some((account, ledger.id, ledger.scale, ledger.currency)))
        })
        .await?;
    found.map_err(|error| crate::status::query_error(&error))
}

/// Serves `ImportStatement`.
pub(super) async fn import<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    message: proto::ImportStatementRequest,
    deadline: Deadline,
    forwarded: bool,
) -> Result<Response<proto::ReconciliationResponse>, Status> {
    let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
    let account = AccountId(convert::parse_valid_id("account", &message.account)?);
    let window_days = match message.window_days {
        0 => WINDOW_DAYS_DEFAULT,
        days if days <= WINDOW_DAYS_MAX => days,
        days => return Err(FieldError::new("window_days", format!("{days}, at most {WINDOW_DAYS_MAX}")).into()),
    };
    let offset_minutes = message.utc_offset_minutes;
    if offset_minutes.abs() > UTC_OFFSET_MINUTES_MAX {
        let reason = format!("{offset_minutes}, at most ±{UTC_OFFSET_MINUTES_MAX}");
        return Err(FieldError::new("utc_offset_minutes", reason).into());
    }
    let Some((cash, ledger, scale, currency)) = account_context(shared, account, false, deadline).await? else {
        return Ok(refused(ReconcileResult::AccountNotFound));
    };
    caller.check_ledgers(Role::Poster, "account", [ledger.0])?;
    let statement = parse(&message, scale)?;
    if statement.currency != currency {
        let reason = format!("the statement is in {}, ledger {ledger} keeps {currency}", statement.currency);
        return Err(FieldError::new("content", reason).into());
    }
    if cash.kind != coffer_ledger::AccountKind::Cash {
        return Ok(refused(ReconcileResult::AccountNotCash));
    }
    let record = reconcile_statement(shared, &cash, &statement, window_days, offset_minutes, deadline).await?;
    let op = ReconcileOp::Record(Box::new(record));
    let address = match propose(shared, caller, op, deadline, forwarded, unit, scale, ledger).await? {
        Proposed::Applied(response) => return Ok(response),
        Proposed::Forward(address) => address,
    };
    let answer =
        shared.leader_client(&address)?.import_statement(shared.forward_request(message, deadline, caller)).await;
    shared.forwarded(&address, answer)
}

/// Parses the statement in the request's format at the ledger's scale.
fn parse(message: &proto::ImportStatementRequest, scale: u8) -> Result<Statement, Status> {
    let parsed = match proto::StatementFormat::try_from(message.format) {
        Ok(proto::StatementFormat::Camt053) => coffer_recon::parse_camt053(&message.content, scale),
        Ok(proto::StatementFormat::Csv) => {
            let text = std::str::from_utf8(&message.content)
                .map_err(|error| FieldError::new("content", format!("the CSV is not UTF-8: {error}")))?;
            coffer_recon::parse_csv(text, scale)
        }
        _ => return Err(FieldError::new("format", "set camt053 or csv").into()),
    };
    let statement = parsed.map_err(|error| FieldError::new("content", error.to_string()))?;
    if statement.lines.len() > coffer_ledger::reconcile::STATEMENT_LINES_MAX {
        let reason =
            format!("{} lines, at most {}", statement.lines.len(), coffer_ledger::reconcile::STATEMENT_LINES_MAX);
        return Err(FieldError::new("content", reason).into());
    }
    if statement.id.is_empty() || statement.id.len() > STATEMENT_TEXT_LEN_MAX {
        return Err(FieldError::new(
            "content",
            format!("the statement id must be 1 to {STATEMENT_TEXT_LEN_MAX} bytes"),
        )
        .into());
    }
    Ok(statement)
}

/// The date of event timestamp `timestamp` (ns) at `offset_minutes` from UTC.
fn date_of(timestamp: u64, offset_minutes: i32) -> Date {
    let seconds = i64::try_from(timestamp / NS_PER_S).unwrap_or(i64::MAX) + i64::from(offset_minutes) * 60;
    Date::from_days_since_epoch(seconds.div_euclid(SECONDS_PER_DAY))
}

/// The first event timestamp (ns) of day `day` (days since 1970-01-01) at `offset_minutes`.
fn day_start(day: i64, offset_minutes: i32) -> u64 {
    let seconds = day * SECONDS_PER_DAY - i64::from(offset_minutes) * 60;
    u64::try_from(seconds).unwrap_or(0).saturating_mul(NS_PER_S)
}

/// A reference compared by its digits (a payment request number): a line's
/// `PAY-2027-0001` and a transfer's `user_data_128` 20270001 match. Text
/// without digits is compared whole.
fn normalized(reference: &str) -> String {
    let digits: String = reference.chars().filter(char::is_ascii_digit).collect();
    match digits.trim_start_matches('0') {
        "" if digits.is_empty() => reference.to_owned(),
        "" => "0".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// Cuts `text` to at most [`STATEMENT_TEXT_LEN_MAX`] bytes, on a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(STATEMENT_TEXT_LEN_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What the read view says about the account around the statement.
struct AccountRead {
    existing: Option<Reconciliation>,
    transfers: Vec<Transfer>,
    balance_at_end: Result<i128, String>,
}

/// Matches `statement` against `cash`'s transfers and builds the record
/// to keep; a re-run keeps the manual matches of the earlier run.
async fn reconcile_statement<N: Node>(
    shared: &Shared<N>,
    cash: &Account,
    statement: &Statement,
    window_days: u32,
    offset_minutes: i32,
    deadline: Deadline,
) -> Result<Reconciliation, Status> {
    let first_line = statement.lines.iter().map(|line| line.booking_date).min();
    let from = statement.from.or(first_line).unwrap_or(statement.closing.date).min(statement.closing.date);
    let to = statement.to.unwrap_or(statement.closing.date).max(statement.closing.date);
    let window = i64::from(window_days);
    let (low, high) = (from.days_since_epoch() - window, to.days_since_epoch() + window + 1);
    let (range_min, range_max) = (day_start(low, offset_minutes), day_start(high, offset_minutes).saturating_sub(1));
    let end_of_statement = day_start(to.days_since_epoch() + 1, offset_minutes).saturating_sub(1);
    let (account, id) = (*cash, statement.id.clone());
    let (_, read) = shared
        .read(false, deadline, move |state| read_account(state, &account, &id, range_min, range_max, end_of_statement))
        .await?;
    let read = read.map_err(|error| crate::status::query_error(&error))?;
    let ledger_balance = read.balance_at_end.map_err(Status::failed_precondition)?;
    let manual: Vec<MatchGroup> = read
        .existing
        .iter()
        .flat_map(|old| old.groups.iter().filter(|g| g.kind == GroupKind::Manual))
        .cloned()
        .collect();
    let taken_lines: Vec<u32> = manual.iter().flat_map(|g| g.lines.clone()).collect();
    let taken_transfers: Vec<TransferId> = manual.iter().flat_map(|g| g.transfers.clone()).collect();
    let lines: Vec<coffer_recon::StatementLine> = statement
        .lines
        .iter()
        .filter(|line| !taken_lines.contains(&line.index))
        .map(|line| coffer_recon::StatementLine { reference: normalized(&line.reference), ..line.clone() })
        .collect();
    let entries: Vec<LedgerEntry> = read
        .transfers
        .iter()
        .filter(|t| !taken_transfers.contains(&t.id))
        .map(|t| LedgerEntry {
            transfer: t.id.0,
            amount: t.amount,
            direction: if t.debit_account_id == cash.id { Direction::Credit } else { Direction::Debit },
            date: date_of(t.timestamp, offset_minutes),
            reference: if t.user_data_128 == 0 { String::new() } else { t.user_data_128.to_string() },
        })
        .collect();
    let outcome = reconcile(&lines, &entries, &MatchRules { window_days });
    let mut groups = manual;
    for matched in outcome.matched {
        let kind = match matched.kind {
            MatchKind::OneToOne => GroupKind::OneToOne,
            MatchKind::OneToMany => GroupKind::OneToMany,
            MatchKind::ManyToOne => GroupKind::ManyToOne,
        };
        let transfers = matched.transfers.into_iter().map(TransferId).collect();
        groups.push(MatchGroup { kind, lines: matched.lines, transfers, ..MatchGroup::default() });
    }
    for mismatch in outcome.mismatched {
        let transfers = vec![TransferId(mismatch.transfer)];
        groups.push(MatchGroup {
            kind: GroupKind::Mismatch,
            lines: vec![mismatch.line],
            transfers,
            ..MatchGroup::default()
        });
    }
    // A transfer of the window's margins that nothing matched belongs to
    // another statement, not to this one's unmatched.
    let dates: std::collections::HashMap<u128, Date> =
        read.transfers.iter().map(|t| (t.id.0, date_of(t.timestamp, offset_minutes))).collect();
    let within = |id: &u128| dates.get(id).is_some_and(|date| *date >= from && *date <= to);
    let unmatched_transfers =
        outcome.unmatched_transfers.iter().filter(|id| within(id)).map(|id| TransferId(*id)).collect();
    let day = |date: Date| i32::try_from(date.days_since_epoch()).unwrap_or(i32::MAX);
    Ok(Reconciliation {
        account: cash.id,
        statement: statement.id.clone(),
        from_date: day(from),
        to_date: day(to),
        opening: statement.opening.amount,
        closing: statement.closing.amount,
        ledger_balance,
        lines: statement
            .lines
            .iter()
            .map(|line| StatementLine {
                index: line.index,
                amount: line.amount,
                credit: line.direction == Direction::Credit,
                date: day(line.booking_date),
                reference: bounded(&line.reference),
            })
            .collect(),
        groups,
        unmatched_transfers,
        runs: 0,
        timestamp: 0,
    })
}

/// Reads what an import needs from one consistent state.
fn read_account<S: Store + ?Sized>(
    state: &S,
    cash: &Account,
    statement: &str,
    range_min: u64,
    range_max: u64,
    end_of_statement: u64,
) -> Result<AccountRead, QueryError> {
    let existing = state.reconciliation(cash.id, statement)?;
    let posted = |t: &Transfer| !t.flags.intersects(TransferFlags::PENDING | TransferFlags::VOID_PENDING);
    let transfers = account_transfers(state, cash.id, range_min, range_max)?.into_iter().filter(posted).collect();
    let now = state.account(cash.id)?.unwrap_or(*cash);
    let net = |debits: u128, credits: u128| {
        i128::try_from(debits).unwrap_or(i128::MAX) - i128::try_from(credits).unwrap_or(i128::MAX)
    };
    let balance_at_end = if cash.flags.contains(AccountFlags::HISTORY) {
        let balance = balance_as_of(state, cash.id, end_of_statement)?.unwrap_or_default();
        Ok(net(balance.debits_posted, balance.credits_posted))
    } else {
        match account_transfers(state, cash.id, end_of_statement.saturating_add(1), u64::MAX) {
            Ok(after) => {
                Ok(after.iter().filter(|t| posted(t)).fold(net(now.debits_posted, now.credits_posted), |net, t| {
                    let amount = i128::try_from(t.amount).unwrap_or(i128::MAX);
                    if t.debit_account_id == cash.id {
                        net - amount
                    } else {
                        net + amount
                    }
                }))
            }
            Err(QueryError::InvalidField { reason, .. }) => Err(format!(
                "account {}: {reason} after the statement's end; give the account the history flag so its balance \
                 at any date is kept",
                cash.id
            )),
            Err(error) => return Err(error),
        }
    };
    Ok(AccountRead { existing, transfers, balance_at_end })
}

/// The account's transfers in `[min, max]`, at most [`TRANSFERS_READ_MAX`].
fn account_transfers<S: Store + ?Sized>(
    state: &S,
    account: AccountId,
    min: u64,
    max: u64,
) -> Result<Vec<Transfer>, QueryError> {
    let mut found = Vec::new();
    let mut filter = AccountFilter {
        timestamp_min: min.max(1),
        timestamp_max: max,
        sides: Sides::Both,
        ..AccountFilter::all(account, BATCH_EVENTS_MAX as u32)
    };
    loop {
        let page = get_account_transfers(state, &filter)?;
        let last = page.last().map(|t| t.timestamp);
        let full = page.len() == BATCH_EVENTS_MAX;
        found.extend(page);
        if found.len() > TRANSFERS_READ_MAX {
            return Err(QueryError::InvalidField {
                field: "account",
                reason: format!("more than {TRANSFERS_READ_MAX} transfers"),
            });
        }
        match last {
            Some(last) if full && last < max => filter.timestamp_min = last + 1,
            _ => return Ok(found),
        }
    }
}

/// Proposes `op` and answers with the record it left; on a follower, says
/// where the leader is.
#[allow(clippy::too_many_arguments)]
async fn propose<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    op: ReconcileOp,
    deadline: Deadline,
    forwarded: bool,
    unit: proto::AmountUnit,
    scale: u8,
    ledger: LedgerId,
) -> Result<Proposed<Response<proto::ReconciliationResponse>>, Status> {
    let (account, statement) = match &op {
        ReconcileOp::Record(record) => (record.account, record.statement.clone()),
        ReconcileOp::Match { account, statement, .. } => (*account, statement.clone()),
    };
    let answer = |served: proto::Served, results: OperationResults| match results {
        OperationResults::Reconcile(result) => Some((served, result)),
        _ => None,
    };
    let proposed = shared
        .propose((Operation::Reconcile(Box::new(op)), caller), deadline, forwarded, "reconciliation", answer)
        .await?;
    let (served, result) = match proposed {
        Proposed::Applied(applied) => applied,
        Proposed::Forward(address) => return Ok(Proposed::Forward(address)),
    };
    let (_, record) = shared.read(true, deadline, move |state| state.reconciliation(account, &statement)).await?;
    let record = record.map_err(|error| crate::status::store_error(&error))?;
    Ok(Proposed::Applied(Response::new(proto::ReconciliationResponse {
        served: Some(served),
        result: result.as_str().to_owned(),
        reconciliation: record.map(|record| to_wire(&record, ledger, unit, scale)),
    })))
}

fn refused(result: ReconcileResult) -> Response<proto::ReconciliationResponse> {
    Response::new(proto::ReconciliationResponse { result: result.as_str().to_owned(), ..Default::default() })
}

/// Serves `MatchStatement`.
pub(super) async fn match_by_hand<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    message: proto::MatchStatementRequest,
    deadline: Deadline,
    forwarded: bool,
) -> Result<Response<proto::ReconciliationResponse>, Status> {
    let unit = convert::amount_unit("amount_unit", message.amount_unit)?;
    let account = AccountId(convert::parse_valid_id("account", &message.account)?);
    let transfers = message
        .transfers
        .iter()
        .enumerate()
        .map(|(i, id)| convert::parse_valid_id(&format!("transfers[{i}]"), id).map(TransferId))
        .collect::<Result<Vec<_>, _>>()?;
    if message.reason.trim().is_empty() {
        return Err(FieldError::new("reason", "say why these belong together").into());
    }
    let Some((_, ledger, scale, _)) = account_context(shared, account, false, deadline).await? else {
        return Ok(refused(ReconcileResult::AccountNotFound));
    };
    caller.check_ledgers(Role::Poster, "account", [ledger.0])?;
    let op = ReconcileOp::Match {
        account,
        statement: message.statement.clone(),
        lines: message.lines.clone(),
        transfers,
        reason: message.reason.clone(),
        by: caller.principal(),
    };
    let address = match propose(shared, caller, op, deadline, forwarded, unit, scale, ledger).await? {
        Proposed::Applied(response) => return Ok(response),
        Proposed::Forward(address) => address,
    };
    let answer =
        shared.leader_client(&address)?.match_statement(shared.forward_request(message, deadline, caller)).await;
    shared.forwarded(&address, answer)
}

/// Serves `GetReconciliation` and `ListReconciliations`: the records of
/// `account` (one statement, or a page after `after`).
pub(super) async fn read<N: Node>(
    shared: &Shared<N>,
    caller: &Caller,
    account: &str,
    which: Which,
    stale: bool,
    unit: i32,
    deadline: Deadline,
) -> Result<(proto::Served, Vec<proto::Reconciliation>), Status> {
    let unit = convert::amount_unit("amount_unit", unit)?;
    let account = AccountId(convert::parse_valid_id("account", account)?);
    let Some((_, ledger, scale, _)) = account_context(shared, account, stale, deadline).await? else {
        return Err(Status::not_found(format!("account {account} does not exist")));
    };
    caller.check_ledgers(Role::Reader, "account", [ledger.0])?;
    let (served, found) = shared
        .read(stale, deadline, move |state| match which {
            Which::One(statement) => state.reconciliation(account, &statement).map(|found| found.into_iter().collect()),
            Which::After(after, limit) => state.reconciliations(account, &after, limit),
        })
        .await?;
    let found: Vec<Reconciliation> = found.map_err(|error| crate::status::store_error(&error))?;
    Ok((served, found.iter().map(|record| to_wire(record, ledger, unit, scale)).collect()))
}

/// Which reconciliations [`read`] returns.
pub(super) enum Which {
    /// One statement's.
    One(String),
    /// Those after a statement id, at most this many.
    After(String, usize),
}

/// A signed balance as text.
fn signed(amount: i128, unit: proto::AmountUnit, scale: u8) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}{}", unsigned(amount.unsigned_abs(), unit, scale))
}

fn unsigned(amount: u128, unit: proto::AmountUnit, scale: u8) -> String {
    match unit {
        proto::AmountUnit::Minor => amount.to_string(),
        proto::AmountUnit::Decimal => format_amount(amount, scale),
    }
}

/// A reconciliation for the wire.
fn to_wire(record: &Reconciliation, ledger: LedgerId, unit: proto::AmountUnit, scale: u8) -> proto::Reconciliation {
    let date = |day: i32| Date::from_days_since_epoch(i64::from(day)).to_string();
    let state_of = |index: u32| match record.groups.iter().find(|g| g.lines.contains(&index)) {
        Some(group) if group.kind == GroupKind::Mismatch => "mismatched",
        Some(_) => "matched",
        None => "unmatched",
    };
    proto::Reconciliation {
        account: record.account.0.to_string(),
        ledger: ledger.0,
        statement: record.statement.clone(),
        from_date: date(record.from_date),
        to_date: date(record.to_date),
        opening_balance: signed(record.opening, unit, scale),
        closing_balance: signed(record.closing, unit, scale),
        ledger_balance: signed(record.ledger_balance, unit, scale),
        balances_agree: record.closing == record.ledger_balance,
        lines: record
            .lines
            .iter()
            .map(|line| proto::StatementLine {
                index: line.index,
                amount: unsigned(line.amount, unit, scale),
                direction: if line.credit { "credit" } else { "debit" }.to_owned(),
                date: date(line.date),
                reference: line.reference.clone(),
                state: state_of(line.index).to_owned(),
            })
            .collect(),
        groups: record
            .groups
            .iter()
            .map(|group| proto::MatchGroup {
                kind: group.kind.as_str().to_owned(),
                lines: group.lines.clone(),
                transfers: group.transfers.iter().map(|id| id.0.to_string()).collect(),
                reason: group.reason.clone(),
                by: group.by.clone(),
            })
            .collect(),
        unmatched_lines: record.unmatched_lines(),
        unmatched_transfers: record.unmatched_transfers.iter().map(|id| id.0.to_string()).collect(),
        runs: record.runs,
    }
}
