//! `coffer reconcile`: import a bank statement and reconcile it, show one,
//! list an account's, match lines and transfers by hand. A reconciliation
//! prints as a summary and a table of its lines (text), as JSON, or as CSV
//! for the accountants (`--csv`: one row per line and per unmatched transfer).

use std::path::Path;

use coffer_api::proto;
use serde::Serialize;

use super::conn::Conn;
use super::table::Table;
use super::{CliError, Out, ReconcileImportArgs, ReconcileListArgs, ReconcileMatchArgs, ReconcileShowArgs};

const DECIMAL: i32 = proto::AmountUnit::Decimal as i32;

/// A reconciliation as printed.
#[derive(Debug, Serialize)]
struct ReconciliationView {
    result: String,
    account: String,
    ledger: u32,
    statement: String,
    from_date: String,
    to_date: String,
    opening_balance: String,
    closing_balance: String,
    ledger_balance: String,
    balances_agree: bool,
    runs: u32,
    lines: Vec<LineView>,
    groups: Vec<GroupView>,
    unmatched_lines: Vec<u32>,
    unmatched_transfers: Vec<String>,
}

#[derive(Debug, Serialize)]
struct LineView {
    index: u32,
    date: String,
    direction: String,
    amount: String,
    reference: String,
    state: String,
    transfers: Vec<String>,
}

#[derive(Debug, Serialize)]
struct GroupView {
    kind: String,
    lines: Vec<u32>,
    transfers: Vec<String>,
    reason: String,
    by: String,
}

impl ReconciliationView {
    fn of(result: &str, record: &proto::Reconciliation) -> Self {
        let transfers_of = |index: u32| {
            record.groups.iter().filter(|g| g.lines.contains(&index)).flat_map(|g| g.transfers.clone()).collect()
        };
        Self {
            result: result.to_owned(),
            account: record.account.clone(),
            ledger: record.ledger,
            statement: record.statement.clone(),
            from_date: record.from_date.clone(),
            to_date: record.to_date.clone(),
            opening_balance: record.opening_balance.clone(),
            closing_balance: record.closing_balance.clone(),
            ledger_balance: record.ledger_balance.clone(),
            balances_agree: record.balances_agree,
            runs: record.runs,
            lines: record
                .lines
                .iter()
                .map(|line| LineView {
                    index: line.index,
                    date: line.date.clone(),
                    direction: line.direction.clone(),
                    amount: line.amount.clone(),
                    reference: line.reference.clone(),
                    state: line.state.clone(),
                    transfers: transfers_of(line.index),
                })
                .collect(),
            groups: record
                .groups
                .iter()
                .map(|g| GroupView {
                    kind: g.kind.clone(),
                    lines: g.lines.clone(),
                    transfers: g.transfers.clone(),
                    reason: g.reason.clone(),
                    by: g.by.clone(),
                })
                .collect(),
            unmatched_lines: record.unmatched_lines.clone(),
            unmatched_transfers: record.unmatched_transfers.clone(),
        }
    }

    fn text(&self) -> String {
        let matched = self.lines.iter().filter(|line| line.state == "matched").count();
        let mismatched = self.lines.iter().filter(|line| line.state == "mismatched").count();
        let mut text = format!(
            "statement {} of account {} ({} to {}): {}\n  {} lines: {matched} matched, {mismatched} mismatched, {} \
             unmatched; {} unmatched transfers\n  opening {}, closing {}; the account holds {} at the end: {}\n\n",
            self.statement,
            self.account,
            self.from_date,
            self.to_date,
            if self.result.is_empty() { "reconciled" } else { &self.result },
            self.lines.len(),
            self.unmatched_lines.len(),
            self.unmatched_transfers.len(),
            self.opening_balance,
            self.closing_balance,
            self.ledger_balance,
            if self.balances_agree { "AGREES" } else { "DIFFERS" },
        );
        let mut table = Table::new(&["LINE", "DATE", "DIRECTION", "AMOUNT", "REFERENCE", "STATE", "TRANSFERS"]);
        for line in &self.lines {
            table.row(vec![
                line.index.to_string(),
                line.date.clone(),
                line.direction.clone(),
                line.amount.clone(),
                line.reference.clone(),
                line.state.clone(),
                line.transfers.join(" "),
            ]);
        }
        text += &table.render();
        if !self.unmatched_transfers.is_empty() {
            text += &format!("\nunmatched transfers: {}\n", self.unmatched_transfers.join(" "));
        }
        for group in self.groups.iter().filter(|g| g.kind == "manual") {
            let lines: Vec<String> = group.lines.iter().map(u32::to_string).collect();
            text += &format!(
                "matched by hand by {}: lines {} with transfers {}: {}\n",
                group.by,
                lines.join(" "),
                group.transfers.join(" "),
                group.reason
            );
        }
        text
    }

    /// The accountants' CSV: one row per line, then one per unmatched transfer.
    fn csv(&self) -> Result<String, CliError> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let header = ["statement", "account", "line", "date", "direction", "amount", "reference", "state", "transfers"];
        let csv_error = |error: csv::Error| CliError::Usage { field: "--csv".into(), reason: error.to_string() };
        writer.write_record(header).map_err(csv_error)?;
        for line in &self.lines {
            let index = line.index.to_string();
            let transfers = line.transfers.join(" ");
            let row = [
                self.statement.as_str(),
                self.account.as_str(),
                &index,
                &line.date,
                &line.direction,
                &line.amount,
                &line.reference,
                &line.state,
                &transfers,
            ];
            writer.write_record(row).map_err(csv_error)?;
        }
        for transfer in &self.unmatched_transfers {
            let row =
                [self.statement.as_str(), self.account.as_str(), "", "", "", "", "", "unmatched_transfer", transfer];
            writer.write_record(row).map_err(csv_error)?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|error| CliError::Usage { field: "--csv".into(), reason: error.to_string() })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Prints `response` (as `--csv` asks) and fails the command for a refusal.
fn report(out: Out, rpc: &'static str, response: &proto::ReconciliationResponse, csv: bool) -> Result<(), CliError> {
    let Some(record) = &response.reconciliation else {
        return Err(CliError::Answer { rpc, reason: response.result.clone() });
    };
    let view = ReconciliationView::of(&response.result, record);
    if csv {
        print!("{}", view.csv()?);
    } else {
        out.emit(&view, ReconciliationView::text)?;
    }
    match response.result.as_str() {
        "" | "recorded" | "rerun" | "unchanged" | "matched" => Ok(()),
        _ => Err(CliError::Answer { rpc, reason: response.result.clone() }),
    }
}

/// The statement's format, from `--format` or the file's extension.
fn format_of(path: &Path, format: Option<&str>) -> Result<proto::StatementFormat, CliError> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match format.unwrap_or(&extension) {
        "camt053" | "xml" => Ok(proto::StatementFormat::Camt053),
        "csv" => Ok(proto::StatementFormat::Csv),
        other => Err(CliError::Usage {
            field: "--format".into(),
            reason: format!("{other:?}: give camt053 or csv (or a .xml or .csv file)"),
        }),
    }
}

/// `coffer reconcile import`
pub async fn import(conn: &Conn, out: Out, args: ReconcileImportArgs) -> Result<(), CliError> {
    let format = format_of(&args.file, args.format.as_deref())?;
    let content = std::fs::read(&args.file).map_err(|error| CliError::Usage {
        field: "--file".into(),
        reason: format!("{}: {error}", args.file.display()),
    })?;
    let message = proto::ImportStatementRequest {
        account: args.account.to_string(),
        format: format as i32,
        content,
        window_days: args.window_days,
        utc_offset_minutes: args.utc_offset_minutes,
        amount_unit: DECIMAL,
    };
    let response = conn
        .call("ImportStatement", message, |mut client, request| async move { client.import_statement(request).await })
        .await?;
    report(out, "ImportStatement", &response, args.csv)
}

/// `coffer reconcile show`
pub async fn show(conn: &Conn, out: Out, args: ReconcileShowArgs) -> Result<(), CliError> {
    let message = proto::GetReconciliationRequest {
        account: args.account.to_string(),
        statement: args.statement.clone(),
        amount_unit: DECIMAL,
        stale: conn.stale(),
    };
    let response =
        conn.call("GetReconciliation", message, |mut client, request| async move {
            client.get_reconciliation(request).await
        })
        .await?;
    report(out, "GetReconciliation", &response, args.csv)
}

/// `coffer reconcile match`
pub async fn match_by_hand(conn: &Conn, out: Out, args: ReconcileMatchArgs) -> Result<(), CliError> {
    let message = proto::MatchStatementRequest {
        account: args.account.to_string(),
        statement: args.statement.clone(),
        lines: args.line.clone(),
        transfers: args.transfer.iter().map(u128::to_string).collect(),
        reason: args.reason.clone(),
        amount_unit: DECIMAL,
    };
    let response = conn
        .call("MatchStatement", message, |mut client, request| async move { client.match_statement(request).await })
        .await?;
    report(out, "MatchStatement", &response, false)
}

/// `coffer reconcile list`
pub async fn list(conn: &Conn, out: Out, args: ReconcileListArgs) -> Result<(), CliError> {
    let message = proto::ListReconciliationsRequest {
        account: args.account.to_string(),
        after: String::new(),
        limit: 100,
        amount_unit: DECIMAL,
        stale: conn.stale(),
    };
    let response = conn
        .call("ListReconciliations", message, |mut client, request| async move {
            client.list_reconciliations(request).await
        })
        .await?;
    let views: Vec<ReconciliationView> =
        response.reconciliations.iter().map(|record| ReconciliationView::of("", record)).collect();
    out.emit(&views, |views| {
        let mut table =
            Table::new(&["STATEMENT", "FROM", "TO", "LINES", "UNMATCHED", "MISMATCHED", "CLOSING", "BOOKS", "RUNS"]);
        for view in views {
            let mismatched = view.lines.iter().filter(|line| line.state == "mismatched").count();
            table.row(vec![
                view.statement.clone(),
                view.from_date.clone(),
                view.to_date.clone(),
                view.lines.len().to_string(),
                (view.unmatched_lines.len() + view.unmatched_transfers.len()).to_string(),
                mismatched.to_string(),
                view.closing_balance.clone(),
                if view.balances_agree { "agree".into() } else { "differ".into() },
                view.runs.to_string(),
            ]);
        }
        table.render()
    })
}
