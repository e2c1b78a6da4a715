//! The `LedgerService` commands: ledgers, accounts, balances, transfers,
//! queries and the trial balance, all with decimal amounts.

use std::collections::BTreeSet;

use coffer_api::proto;
use coffer_ledger::BATCH_EVENTS_MAX;
use serde::Serialize;

use super::conn::Conn;
use super::parse::{format_timestamp, Named};
use super::table::Table;
use super::view::{
    accounts_table, balances_table, transfers_table, trial_balance_text, AccountView, BalanceView, CreateReport,
    TransferView, TrialBalanceView,
};
use super::{
    AccountCreateArgs, AccountQueryArgs, BalanceArgs, CliError, FieldArgs, HistoryArgs, LedgerCloseArgs,
    LedgerCreateArgs, LedgerPeriodArgs, Out, QueryArgs, RangeArgs, ShowArgs, SidesArg, TransferCreateArgs,
    TrialBalanceArgs,
};

/// Pages one `transfer query` follows (`next_timestamp`) to fill its limit.
const QUERY_PAGES_MAX: usize = 64;
/// Amounts in requests and responses: decimal at the ledger's scale.
pub(super) const DECIMAL: i32 = proto::AmountUnit::Decimal as i32;

/// Prints a create request's results; fails when any event failed.
pub(super) fn report_created(
    out: Out,
    rpc: &'static str,
    what: &'static str,
    served: Option<proto::Served>,
    ids: &[String],
    results: &[String],
) -> Result<(), CliError> {
    if results.len() != ids.len() {
        return Err(CliError::Answer { rpc, reason: format!("{} results for {} events", results.len(), ids.len()) });
    }
    let report = CreateReport::new(served, ids, results);
    out.emit(&report, |report| report.text(what))?;
    if report.failed > 0 {
        return Err(CliError::EventsFailed { what, failed: report.failed, total: report.results.len() });
    }
    Ok(())
}

/// `coffer ledger create`
pub async fn create_ledger(conn: &Conn, out: Out, args: LedgerCreateArgs) -> Result<(), CliError> {
    let budget = args.budget_ledger.map(|ledger| {
        let (code_min, code_max) = args.budget_codes.unwrap_or_default();
        proto::BudgetPolicy { ledger, code_min: u32::from(code_min), code_max: u32::from(code_max) }
    });
    let ledger = proto::Ledger {
        id: args.id,
        currency: args.currency,
        scale: args.scale,
        name: args.name,
        budget,
        warn_percent: args.warn_percent,
        ..Default::default()
    };
    let ids = [ledger.id.to_string()];
    let message = proto::CreateLedgersRequest { ledgers: vec![ledger] };
    let response = conn
        .call("CreateLedgers", message, |mut client, request| async move { client.create_ledgers(request).await })
        .await?;
    report_created(out, "CreateLedgers", "ledgers", response.served, &ids, &response.results)
}

/// What `coffer ledger period` did.
#[derive(Debug, Serialize)]
struct PeriodReport {
    ledger: u32,
    period: String,
    result: String,
    node_id: u64,
    applied_index: u64,
}

/// `coffer ledger period`
pub async fn set_period(conn: &Conn, out: Out, args: LedgerPeriodArgs) -> Result<(), CliError> {
    let change = proto::PeriodChange { ledger: args.id, period: args.to as i32 };
    let message = proto::SetPeriodsRequest { changes: vec![change] };
    let response = conn
        .call("SetPeriods", message, |mut client, request| async move { client.set_periods(request).await })
        .await?;
    let served = response.served.unwrap_or_default();
    let [result] = response.results.as_slice() else {
        let reason = format!("{} results for 1 change", response.results.len());
        return Err(CliError::Answer { rpc: "SetPeriods", reason });
    };
    let report = PeriodReport {
        ledger: args.id,
        period: super::parse::short_name(args.to),
        result: result.clone(),
        node_id: served.node_id,
        applied_index: served.applied_index,
    };
    out.emit(&report, |report| {
        format!(
            "ledger {} period {}: {} (node {}, log index {})\n",
            report.ledger, report.period, report.result, report.node_id, report.applied_index
        )
    })?;
    match result.as_str() {
        "changed" | "unchanged" => Ok(()),
        _ => Err(CliError::EventsFailed { what: "period changes", failed: 1, total: 1 }),
    }
}

/// `coffer account create`
pub async fn create_account(conn: &Conn, out: Out, args: AccountCreateArgs) -> Result<(), CliError> {
    let account = proto::Account {
        id: args.id.to_string(),
        ledger: args.ledger,
        code: u32::from(args.code),
        kind: args.kind.number(),
        flags: args.flags.iter().map(|flag| flag.number()).collect(),
        user_data_128: args.user_data.user_data_128.to_string(),
        user_data_64: args.user_data.user_data_64,
        user_data_32: args.user_data.user_data_32,
        ..Default::default()
    };
    let ids = [account.id.clone()];
    let message = proto::CreateAccountsRequest { accounts: vec![account], amount_unit: DECIMAL };
    let response = conn
        .call("CreateAccounts", message, |mut client, request| async move { client.create_accounts(request).await })
        .await?;
    report_created(out, "CreateAccounts", "accounts", response.served, &ids, &response.results)
}

fn lookup_ids(args: &ShowArgs) -> Result<Vec<String>, CliError> {
    if args.ids.len() > BATCH_EVENTS_MAX {
        return Err(CliError::usage(
            "IDS",
            format!("{} ids, more than the {BATCH_EVENTS_MAX} allowed", args.ids.len()),
        ));
    }
    Ok(args.ids.iter().map(u128::to_string).collect())
}

/// The ids of `asked` missing from `found`, or `Ok` when none is.
fn check_found<'a>(what: &'static str, asked: &[String], found: impl Iterator<Item = &'a str>) -> Result<(), CliError> {
    let found = found.collect::<BTreeSet<_>>();
    let missing = asked.iter().filter(|id| !found.contains(id.as_str())).cloned().collect::<Vec<_>>();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotFound { what, ids: missing.join(", ") })
    }
}

async fn lookup_accounts(conn: &Conn, ids: Vec<String>) -> Result<proto::LookupAccountsResponse, CliError> {
    let message = proto::LookupAccountsRequest { ids, stale: conn.stale(), amount_unit: DECIMAL };
    conn.call("LookupAccounts", message, |mut client, request| async move { client.lookup_accounts(request).await })
        .await
}

async fn lookup_transfers(conn: &Conn, ids: Vec<String>) -> Result<Vec<proto::Transfer>, CliError> {
    let message = proto::LookupTransfersRequest { ids, stale: conn.stale(), amount_unit: DECIMAL };
    let response = conn
        .call("LookupTransfers", message, |mut client, request| async move { client.lookup_transfers(request).await })
        .await?;
    Ok(response.transfers)
}

/// `coffer account show`
pub async fn show_accounts(conn: &Conn, out: Out, args: ShowArgs) -> Result<(), CliError> {
    let ids = lookup_ids(&args)?;
    let response = lookup_accounts(conn, ids.clone()).await?;
    let accounts = response.accounts.iter().map(AccountView::from).collect::<Vec<_>>();
    out.emit(
        &accounts,
        |accounts| if accounts.is_empty() { String::new() } else { accounts_table(accounts).render() },
    )?;
    check_found("accounts", &ids, accounts.iter().map(|account| account.id.as_str()))
}

/// `coffer transfer show`
pub async fn show_transfers(conn: &Conn, out: Out, args: ShowArgs) -> Result<(), CliError> {
    let ids = lookup_ids(&args)?;
    let transfers = lookup_transfers(conn, ids.clone()).await?.iter().map(TransferView::from).collect::<Vec<_>>();
    out.emit(
        &transfers,
        |transfers| {
            if transfers.is_empty() {
                String::new()
            } else {
                transfers_table(transfers).render()
            }
        },
    )?;
    check_found("transfers", &ids, transfers.iter().map(|transfer| transfer.id.as_str()))
}

/// Where the next page of a time-ordered listing starts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Next {
    /// Repeat with `--from` this (ascending).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from: Option<u64>,
    /// Repeat with `--to` this (descending).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_to: Option<u64>,
}

impl Next {
    /// After a full page whose last row is at `last`: the next page
    /// starts just past it.
    fn after_full_page(rows: usize, limit: u32, last: Option<u64>, desc: bool) -> Self {
        match last {
            Some(last) if rows >= limit as usize => {
                Self::at(if desc { last.saturating_sub(1) } else { last.saturating_add(1) }, desc)
            }
            _ => Self::default(),
        }
    }

    fn at(timestamp: u64, desc: bool) -> Self {
        if desc {
            Self { next_from: None, next_to: Some(timestamp) }
        } else {
            Self { next_from: Some(timestamp), next_to: None }
        }
    }

    fn hint(self) -> String {
        match (self.next_from, self.next_to) {
            (Some(from), _) => format!("more may follow: repeat with --from {from}\n"),
            (None, Some(to)) => format!("more may follow: repeat with --to {to}\n"),
            (None, None) => String::new(),
        }
    }
}

/// A page of transfers.
#[derive(Debug, Clone, Serialize)]
struct TransfersPage {
    transfers: Vec<TransferView>,
    #[serde(flatten)]
    next: Next,
}

impl TransfersPage {
    fn text(&self) -> String {
        if self.transfers.is_empty() {
            return format!("no transfers\n{}", self.next.hint());
        }
        format!("{}{}", transfers_table(&self.transfers).render(), self.next.hint())
    }
}

fn filter(id: u128, range: &RangeArgs, sides: SidesArg) -> proto::AccountFilter {
    let sides = match sides {
        SidesArg::Both => proto::Sides::Both,
        SidesArg::Debits => proto::Sides::Debits,
        SidesArg::Credits => proto::Sides::Credits,
    };
    proto::AccountFilter {
        account_id: id.to_string(),
        timestamp_min: range.from.unwrap_or(0),
        timestamp_max: range.to.unwrap_or(0),
        limit: range.limit,
        sides: sides as i32,
        order: order(range.desc),
    }
}

fn order(desc: bool) -> i32 {
    if desc {
        proto::Order::Descending as i32
    } else {
        proto::Order::Ascending as i32
    }
}

/// `coffer account history`
pub async fn account_history(conn: &Conn, out: Out, args: HistoryArgs) -> Result<(), CliError> {
    let message = proto::GetAccountTransfersRequest {
        filter: Some(filter(args.id, &args.range, args.sides)),
        stale: conn.stale(),
        amount_unit: DECIMAL,
    };
    let response = conn
        .call("GetAccountTransfers", message, |mut client, request| async move {
            client.get_account_transfers(request).await
        })
        .await?;
    let transfers = response.transfers.iter().map(TransferView::from).collect::<Vec<_>>();
    let last = transfers.last().map(|transfer| transfer.timestamp);
    let next = Next::after_full_page(transfers.len(), args.range.limit, last, args.range.desc);
    out.emit(&TransfersPage { transfers, next }, TransfersPage::text)
}

/// A page of balance history.
#[derive(Debug, Clone, Serialize)]
struct BalancesPage {
    balances: Vec<BalanceView>,
    #[serde(flatten)]
    next: Next,
}

/// An account's balances as of a time.
#[derive(Debug, Clone, Serialize)]
struct AsOf {
    account_id: String,
    as_of: u64,
    /// The balances after the last change at or before `as_of` (`None`: none).
    balance: Option<BalanceView>,
}

/// An account's balances now.
#[derive(Debug, Clone, Serialize)]
struct CurrentBalance {
    account_id: String,
    ledger: u32,
    debits_pending: String,
    debits_posted: String,
    credits_pending: String,
    credits_posted: String,
    node_id: u64,
    applied_index: u64,
}

impl CurrentBalance {
    fn text(&self) -> String {
        let mut table =
            Table::new(&["ACCOUNT", "LEDGER", "DEBITS_PENDING", "DEBITS_POSTED", "CREDITS_PENDING", "CREDITS_POSTED"]);
        table.row(vec![
            self.account_id.clone(),
            self.ledger.to_string(),
            self.debits_pending.clone(),
            self.debits_posted.clone(),
            self.credits_pending.clone(),
            self.credits_posted.clone(),
        ]);
        format!("{}(node {}, applied index {})\n", table.render(), self.node_id, self.applied_index)
    }
}

async fn balances(conn: &Conn, filter: proto::AccountFilter) -> Result<Vec<BalanceView>, CliError> {
    let message = proto::GetAccountBalancesRequest { filter: Some(filter), stale: conn.stale(), amount_unit: DECIMAL };
    let response =
        conn.call("GetAccountBalances", message, |mut client, request| async move {
            client.get_account_balances(request).await
        })
        .await?;
    Ok(response.balances.iter().map(BalanceView::from).collect())
}

/// `coffer balance`: now (any account), as of a time or a page of history
/// (accounts with the history flag).
pub async fn balance(conn: &Conn, out: Out, args: BalanceArgs) -> Result<(), CliError> {
    if let Some(as_of) = args.as_of {
        // The balance as of T is the first row of a descending page ending at T.
        let range = RangeArgs { from: None, to: Some(as_of), limit: 1, desc: true };
        let found = balances(conn, filter(args.id, &range, SidesArg::Both)).await?;
        let report = AsOf { account_id: args.id.to_string(), as_of, balance: found.into_iter().next() };
        return out.emit(&report, |report| match &report.balance {
            Some(balance) => balances_table(std::slice::from_ref(balance)).render(),
            None => format!(
                "account {} has no balance change at or before {} ({})\n",
                report.account_id,
                report.as_of,
                format_timestamp(report.as_of)
            ),
        });
    }
    if args.history || args.from.is_some() || args.to.is_some() || args.desc {
        let range = RangeArgs { from: args.from, to: args.to, limit: args.limit, desc: args.desc };
        let balances = balances(conn, filter(args.id, &range, SidesArg::Both)).await?;
        let last = balances.last().map(|balance| balance.timestamp);
        let next = Next::after_full_page(balances.len(), args.limit, last, args.desc);
        return out.emit(&BalancesPage { balances, next }, |page| {
            let rows = if page.balances.is_empty() {
                "no balance changes\n".into()
            } else {
                balances_table(&page.balances).render()
            };
            format!("{rows}{}", page.next.hint())
        });
    }
    let id = args.id.to_string();
    let response = lookup_accounts(conn, vec![id.clone()]).await?;
    let Some(account) = response.accounts.first() else {
        return Err(CliError::NotFound { what: "accounts", ids: id });
    };
    let served = response.served.unwrap_or_default();
    let current = CurrentBalance {
        account_id: account.id.clone(),
        ledger: account.ledger,
        debits_pending: account.debits_pending.clone(),
        debits_posted: account.debits_posted.clone(),
        credits_pending: account.credits_pending.clone(),
        credits_posted: account.credits_posted.clone(),
        node_id: served.node_id,
        applied_index: served.applied_index,
    };
    out.emit(&current, CurrentBalance::text)
}

async fn create_transfers(conn: &Conn, out: Out, transfers: Vec<proto::Transfer>) -> Result<(), CliError> {
    let ids = transfers.iter().map(|transfer| transfer.id.clone()).collect::<Vec<_>>();
    let message = proto::CreateTransfersRequest { transfers, amount_unit: DECIMAL, ..Default::default() };
    let response = conn
        .call("CreateTransfers", message, |mut client, request| async move { client.create_transfers(request).await })
        .await?;
    report_created(out, "CreateTransfers", "transfers", response.served, &ids, &response.results)
}

/// `coffer transfer create`
pub async fn create_transfer(conn: &Conn, out: Out, args: TransferCreateArgs) -> Result<(), CliError> {
    let transfer = proto::Transfer {
        id: args.id.to_string(),
        debit_account_id: args.debit.to_string(),
        credit_account_id: args.credit.to_string(),
        amount: args.amount,
        pending_id: String::new(),
        ledger: args.ledger,
        code: u32::from(args.code),
        kind: args.kind.number(),
        flags: args.flags.iter().map(|flag| flag.number()).collect(),
        timeout: args.timeout,
        user_data_128: args.user_data.user_data_128.to_string(),
        user_data_64: args.user_data.user_data_64,
        user_data_32: args.user_data.user_data_32,
        timestamp: 0,
    };
    create_transfers(conn, out, vec![transfer]).await
}

/// `coffer transfer post|void`: the pending transfer is looked up first, so
/// the post or void carries its ledger (for the amount's scale), code and
/// kind, which must match it.
pub async fn finish_pending(
    conn: &Conn,
    out: Out,
    id: u128,
    pending_id: u128,
    flag: proto::TransferFlag,
    amount: String,
) -> Result<(), CliError> {
    let pending_id = pending_id.to_string();
    let Some(pending) = lookup_transfers(conn, vec![pending_id.clone()]).await?.into_iter().next() else {
        return Err(CliError::NotFound { what: "pending transfers", ids: pending_id });
    };
    let transfer = proto::Transfer {
        id: id.to_string(),
        amount,
        pending_id,
        ledger: pending.ledger,
        code: pending.code,
        kind: pending.kind,
        flags: vec![flag.number()],
        ..Default::default()
    };
    create_transfers(conn, out, vec![transfer]).await
}

/// A query's fields as the wire has them (unset: 0 or empty).
fn field_values(fields: &FieldArgs) -> (u32, u32, String, u64, u32) {
    (
        fields.ledger.unwrap_or(0),
        fields.code.map_or(0, u32::from),
        fields.user_data_128.map(|value| value.to_string()).unwrap_or_default(),
        fields.user_data_64.unwrap_or(0),
        fields.user_data_32.unwrap_or(0),
    )
}

/// `coffer transfer query`: follows the server's continuation until the
/// limit is filled or the range is examined (at most [`QUERY_PAGES_MAX`] pages).
pub async fn query_transfers(conn: &Conn, out: Out, args: QueryArgs) -> Result<(), CliError> {
    let range = &args.range;
    let (ledger, code, user_data_128, user_data_64, user_data_32) = field_values(&args.fields);
    let mut message = proto::QueryTransfersRequest {
        ledger,
        code,
        kind: args.kind.map_or(0, |kind| kind.number()),
        user_data_128,
        user_data_64,
        user_data_32,
        timestamp_min: range.from.unwrap_or(0),
        timestamp_max: range.to.unwrap_or(0),
        limit: range.limit,
        order: order(range.desc),
        stale: conn.stale(),
        amount_unit: DECIMAL,
    };
    let mut transfers = Vec::new();
    let mut next_timestamp = 0;
    for _ in 0..QUERY_PAGES_MAX {
        let response = conn
            .call("QueryTransfers", message.clone(), |mut client, request| async move {
                client.query_transfers(request).await
            })
            .await?;
        transfers.extend(response.transfers.iter().map(TransferView::from));
        next_timestamp = response.next_timestamp;
        let Some(left) = (range.limit as usize).checked_sub(transfers.len()).filter(|left| *left > 0) else { break };
        if next_timestamp == 0 {
            break;
        }
        message.limit = u32::try_from(left).unwrap_or(range.limit);
        if range.desc {
            message.timestamp_max = next_timestamp;
        } else {
            message.timestamp_min = next_timestamp;
        }
    }
    let next = if next_timestamp == 0 { Next::default() } else { Next::at(next_timestamp, range.desc) };
    out.emit(&TransfersPage { transfers, next }, TransfersPage::text)
}

/// A page of accounts a query found.
#[derive(Debug, Clone, Serialize)]
struct AccountsPage {
    accounts: Vec<AccountView>,
    #[serde(flatten)]
    next: Next,
}

/// `coffer account query`: one page (the server's continuation, if any, is
/// printed as the `--from`/`--to` to repeat with).
pub async fn query_accounts(conn: &Conn, out: Out, args: AccountQueryArgs) -> Result<(), CliError> {
    let range = &args.range;
    let (ledger, code, user_data_128, user_data_64, user_data_32) = field_values(&args.fields);
    let message = proto::QueryAccountsRequest {
        ledger,
        code,
        kind: args.kind.map_or(0, |kind| kind as i32),
        user_data_128,
        user_data_64,
        user_data_32,
        timestamp_min: range.from.unwrap_or(0),
        timestamp_max: range.to.unwrap_or(0),
        limit: range.limit,
        order: order(range.desc),
        stale: conn.stale(),
        amount_unit: DECIMAL,
    };
    let response = conn
        .call("QueryAccounts", message, |mut client, request| async move { client.query_accounts(request).await })
        .await?;
    let accounts = response.accounts.iter().map(AccountView::from).collect::<Vec<_>>();
    let next = match response.next_timestamp {
        0 => Next::default(),
        at => Next::at(at, range.desc),
    };
    out.emit(&AccountsPage { accounts, next }, |page| {
        let table = if page.accounts.is_empty() { String::new() } else { accounts_table(&page.accounts).render() };
        table + &page.next.hint()
    })
}

/// What `coffer ledger close` did.
#[derive(Debug, Serialize)]
struct CloseReport {
    ledger: u32,
    result: String,
    closing_transfers: u64,
    opening_transfers: u64,
    accounts_opened: u64,
    transfer_ids: Vec<(String, String)>,
    elapsed_ms: u64,
    entries: u64,
    before: Option<TrialBalanceView>,
    after: Option<TrialBalanceView>,
    next_after: Option<TrialBalanceView>,
    node_id: u64,
    applied_index: u64,
}

fn close_report_text(report: &CloseReport) -> String {
    let mut text = format!("ledger {} close: {}", report.ledger, report.result);
    let ids: Vec<String> = report.transfer_ids.iter().map(|(first, last)| format!("{first}..={last}")).collect();
    let ids = if ids.is_empty() { "none".to_owned() } else { ids.join(", ") };
    if report.result == "exists" {
        text += &format!(" (closed earlier; the ids it reserved: {ids})");
    }
    if report.result == "finished" {
        text += &format!(
            " ({} closing and {} opening transfers, {} accounts opened, {} entries in {} ms; transfer ids {})",
            report.closing_transfers,
            report.opening_transfers,
            report.accounts_opened,
            report.entries,
            report.elapsed_ms,
            ids
        );
    }
    text += &format!(" (node {}, log index {})\n", report.node_id, report.applied_index);
    for (title, trial) in [
        ("before the close", &report.before),
        ("after the close", &report.after),
        ("next year opened", &report.next_after),
    ] {
        if let Some(trial) = trial {
            text += &format!("\n{title}:\n{}", trial_balance_text(trial));
        }
    }
    text
}

/// `coffer ledger close`
pub async fn close_year(conn: &Conn, out: Out, args: LedgerCloseArgs) -> Result<(), CliError> {
    let ranges = |ranges: &[(u16, u16)]| {
        ranges.iter().map(|(min, max)| proto::CodeRange { min: u32::from(*min), max: u32::from(*max) }).collect()
    };
    let text = |value: Option<u128>| value.map(|value| value.to_string()).unwrap_or_default();
    let message = proto::CloseFiscalYearRequest {
        ledger: args.id,
        next_ledger: args.next.unwrap_or(0),
        net_position_account: text(args.net_position),
        opening_account: text(args.opening_account),
        nominal: ranges(&args.nominal),
        carry: ranges(&args.carry),
        account_offset: text(args.account_offset),
        first_transfer_id: text(args.first_transfer_id),
        code: u32::from(args.code.unwrap_or(0)),
        abort: args.abort,
        amount_unit: DECIMAL,
    };
    let response = conn
        .call("CloseFiscalYear", message, |mut client, request| async move { client.close_fiscal_year(request).await })
        .await?;
    let served = response.served.unwrap_or_default();
    let report = CloseReport {
        ledger: args.id,
        result: response.result.clone(),
        closing_transfers: response.closing_transfers,
        opening_transfers: response.opening_transfers,
        accounts_opened: response.accounts_opened,
        transfer_ids: response.transfer_ids.iter().map(|range| (range.first.clone(), range.last.clone())).collect(),
        elapsed_ms: response.elapsed_ms,
        entries: response.entries,
        before: response.before.as_ref().map(TrialBalanceView::from),
        after: response.after.as_ref().map(TrialBalanceView::from),
        next_after: response.next_after.as_ref().map(TrialBalanceView::from),
        node_id: served.node_id,
        applied_index: served.applied_index,
    };
    out.emit(&report, close_report_text)?;
    match response.result.as_str() {
        "finished" | "exists" | "aborted" => Ok(()),
        _ => Err(CliError::EventsFailed { what: "close steps", failed: 1, total: 1 }),
    }
}

/// `coffer trial-balance`
pub async fn trial_balance(conn: &Conn, out: Out, args: TrialBalanceArgs) -> Result<(), CliError> {
    let message = proto::TrialBalanceRequest {
        ledger: args.ledger,
        stale: conn.stale(),
        amount_unit: DECIMAL,
        as_of: args.as_of.unwrap_or(0),
    };
    let response = conn
        .call("TrialBalance", message, |mut client, request| async move { client.trial_balance(request).await })
        .await?;
    let trial = TrialBalanceView::from(&response);
    out.emit(&trial, trial_balance_text)?;
    if !trial.balanced {
        return Err(CliError::NotBalanced {
            ledger: trial.ledger,
            node_id: trial.node_id,
            applied_index: trial.applied_index,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_says_where_the_next_one_starts() {
        assert_eq!(Next::after_full_page(10, 10, Some(500), false).next_from, Some(501));
        assert_eq!(Next::after_full_page(10, 10, Some(500), true).next_to, Some(499));
        let short = Next::after_full_page(3, 10, Some(500), false);
        assert_eq!((short.next_from, short.next_to), (None, None));
        assert_eq!(Next::at(77, false).hint(), "more may follow: repeat with --from 77\n");
    }

    #[test]
    fn missing_ids_are_named() {
        let asked = ["1".to_owned(), "2".to_owned(), "3".to_owned()];
        let error = check_found("accounts", &asked, ["2"].into_iter()).unwrap_err();
        assert_eq!(error.to_string(), "accounts not found: 1, 3");
        assert!(check_found("accounts", &asked, ["3", "1", "2"].into_iter()).is_ok());
    }
}
