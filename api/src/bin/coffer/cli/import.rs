//! `coffer transfer import`: the transfers of a CSV or JSON-lines file,
//! checked in full, then created in batches.
//!
//! Each batch is one `CreateTransfers` request, retried unchanged on
//! `UNAVAILABLE`, so running an import again after any failure is safe:
//! transfers already applied answer `exists`. A batch never splits a
//! linked chain that fits in one batch.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use coffer_api::proto;
use serde::Serialize;

use super::conn::Conn;
use super::input::{read_csv, read_jsonl, LineTransfer};
use super::ledger::DECIMAL;
use super::parse::Named;
use super::table::Table;
use super::view::counted;
use super::{CliError, ImportArgs, ImportFormat, Out};

/// The largest file read (1M transfers of CSV take < 400 MiB).
const IMPORT_BYTES_MAX: u64 = 512 << 20;

/// One batch's outcome.
#[derive(Debug, Clone, Serialize)]
struct BatchReport {
    batch: usize,
    first_line: usize,
    last_line: usize,
    transfers: usize,
    node_id: u64,
    applied_index: u64,
    /// How many transfers got each result.
    results: BTreeMap<String, usize>,
}

impl BatchReport {
    fn line(&self) -> String {
        let counts = self.results.iter().map(|(result, count)| format!("{count} {result}")).collect::<Vec<_>>();
        format!(
            "batch {}: lines {}-{}, {}: {} (node {}, log index {})\n",
            self.batch,
            self.first_line,
            self.last_line,
            counted(self.transfers, "transfer", "transfers"),
            counts.join(", "),
            self.node_id,
            self.applied_index
        )
    }
}

/// A transfer that failed.
#[derive(Debug, Clone, Serialize)]
struct Failure {
    line: usize,
    id: String,
    result: String,
}

/// The import's outcome.
#[derive(Debug, Clone, Default, Serialize)]
struct ImportReport {
    file: String,
    transfers: usize,
    batches: Vec<BatchReport>,
    created: usize,
    exists: usize,
    failed: usize,
    failures: Vec<Failure>,
}

impl ImportReport {
    fn summary(&self) -> String {
        let mut text = String::new();
        if !self.failures.is_empty() {
            let mut table = Table::new(&["LINE", "ID", "RESULT"]);
            for failure in &self.failures {
                table.row(vec![failure.line.to_string(), failure.id.clone(), failure.result.clone()]);
            }
            text.push_str(&table.render());
        }
        text.push_str(&format!(
            "{}: {} in {}: {} created, {} exists, {} failed\n",
            self.file,
            counted(self.transfers, "transfer", "transfers"),
            counted(self.batches.len(), "batch", "batches"),
            self.created,
            self.exists,
            self.failed
        ));
        text
    }
}

/// The format of `path` when not given: JSON lines for `.jsonl` and `.ndjson`, else CSV.
fn format_of(path: &Path) -> ImportFormat {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("jsonl" | "ndjson") => ImportFormat::Jsonl,
        _ => ImportFormat::Csv,
    }
}

/// Index ranges of batches of at most `batch_max` transfers. A batch ends
/// after the last transfer that closes a linked chain, so a chain is never
/// split, unless one chain is longer than a batch (the server then answers
/// `linked_event_chain_open` for it).
fn batch_ranges(transfers: &[LineTransfer], batch_max: usize) -> Vec<Range<usize>> {
    assert!(batch_max > 0, "a batch holds at least one transfer");
    let linked = proto::TransferFlag::Linked.number();
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < transfers.len() {
        let mut end = (start + batch_max).min(transfers.len());
        if end < transfers.len() {
            if let Some(closing) = (start..end).rev().find(|&i| !transfers[i].transfer.flags.contains(&linked)) {
                end = closing + 1;
            }
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// Adds the file line of `transfers[i]` to an error that names it.
fn with_line(error: CliError, batch: &[LineTransfer]) -> CliError {
    let CliError::Rpc { rpc, address, code, message } = error else { return error };
    let index = message
        .split_once("transfers[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(index, _)| index.parse::<usize>().ok());
    let message = match index.and_then(|index| batch.get(index).map(|transfer| (index, transfer.line))) {
        Some((index, line)) => format!("{message} (transfers[{index}] is line {line})"),
        None => message,
    };
    CliError::Rpc { rpc, address, code, message }
}

/// `coffer transfer import`
pub async fn run(conn: &Conn, out: Out, args: ImportArgs) -> Result<(), CliError> {
    let path = args.file.display().to_string();
    let file_error = |reason: String| CliError::File { path: path.clone(), reason };
    let bytes = std::fs::metadata(&args.file).map_err(|error| file_error(error.to_string()))?.len();
    if bytes > IMPORT_BYTES_MAX {
        return Err(file_error(format!("{bytes} bytes, more than the {IMPORT_BYTES_MAX} an import reads: split it")));
    }
    let text = std::fs::read_to_string(&args.file).map_err(|error| file_error(error.to_string()))?;
    let transfers = match args.format.unwrap_or_else(|| format_of(&args.file)) {
        ImportFormat::Csv => read_csv(&text),
        ImportFormat::Jsonl => read_jsonl(&text),
    }
    .map_err(|error| CliError::Input { path: path.clone(), error })?;
    let mut report = ImportReport { file: path, transfers: transfers.len(), ..ImportReport::default() };
    for (number, range) in batch_ranges(&transfers, args.batch as usize).into_iter().enumerate() {
        let batch = &transfers[range];
        let submitted = report.created + report.exists + report.failed;
        let batch_report = match submit(conn, number + 1, batch, &mut report).await {
            Ok(batch_report) => batch_report,
            Err(error) => {
                if out.json {
                    out.json(&report)?;
                }
                return Err(CliError::BatchRefused {
                    batch: number + 1,
                    first_line: batch.first().map_or(0, |transfer| transfer.line),
                    last_line: batch.last().map_or(0, |transfer| transfer.line),
                    submitted,
                    error: Box::new(with_line(error, batch)),
                });
            }
        };
        if !out.json {
            out.text(&batch_report.line())?;
        }
        report.batches.push(batch_report);
    }
    out.emit(&report, ImportReport::summary)?;
    if report.failed > 0 {
        return Err(CliError::EventsFailed { what: "transfers", failed: report.failed, total: report.transfers });
    }
    Ok(())
}

/// Sends one batch and adds its results to `report`.
async fn submit(
    conn: &Conn,
    number: usize,
    batch: &[LineTransfer],
    report: &mut ImportReport,
) -> Result<BatchReport, CliError> {
    let transfers = batch.iter().map(|transfer| transfer.transfer.clone()).collect();
    let message = proto::CreateTransfersRequest { transfers, amount_unit: DECIMAL, ..Default::default() };
    let response = conn
        .call("CreateTransfers", message, |mut client, request| async move { client.create_transfers(request).await })
        .await?;
    if response.results.len() != batch.len() {
        let reason = format!("{} results for {} transfers", response.results.len(), batch.len());
        return Err(CliError::Answer { rpc: "CreateTransfers", reason });
    }
    let mut results = BTreeMap::new();
    for (transfer, result) in batch.iter().zip(&response.results) {
        *results.entry(result.clone()).or_insert(0) += 1;
        match result.as_str() {
            "created" => report.created += 1,
            "exists" => report.exists += 1,
            _ => {
                report.failed += 1;
                let failure = Failure { line: transfer.line, id: transfer.transfer.id.clone(), result: result.clone() };
                report.failures.push(failure);
            }
        }
    }
    let served = response.served.unwrap_or_default();
    Ok(BatchReport {
        batch: number,
        first_line: batch.first().map_or(0, |transfer| transfer.line),
        last_line: batch.last().map_or(0, |transfer| transfer.line),
        transfers: batch.len(),
        node_id: served.node_id,
        applied_index: served.applied_index,
        results,
    })
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn transfers(linked: &[bool]) -> Vec<LineTransfer> {
        linked
            .iter()
            .enumerate()
            .map(|(i, linked)| LineTransfer {
                line: i + 2,
                transfer: proto::Transfer {
                    id: (i + 1).to_string(),
                    flags: if *linked { vec![proto::TransferFlag::Linked.number()] } else { Vec::new() },
                    ..Default::default()
                },
            })
            .collect()
    }

    #[test]
    fn batches_hold_at_most_the_batch_size() {
        assert_eq!(batch_ranges(&transfers(&[false; 5]), 2), [0..2, 2..4, 4..5]);
        let one = batch_ranges(&transfers(&[false; 4]), 8189);
        assert_eq!((one.len(), one.first()), (1, Some(&(0..4))));
        assert!(batch_ranges(&[], 3).is_empty());
    }

    #[test]
    fn a_linked_chain_is_not_split_across_batches() {
        // Transfers 2-4 are one chain (2 and 3 linked, 4 closes it).
        let chain = transfers(&[false, true, true, false, false]);
        assert_eq!(batch_ranges(&chain, 3), [0..1, 1..4, 4..5]);
        // A chain longer than a batch is cut (and fails on the server).
        assert_eq!(batch_ranges(&transfers(&[true, true, true, false]), 2), [0..2, 2..4]);
    }

    #[test]
    fn a_refused_batch_names_the_line_of_the_transfer_at_fault() {
        let batch = transfers(&[false, false, false]);
        let error = CliError::Rpc {
            rpc: "CreateTransfers",
            address: "127.0.0.1:7101".into(),
            code: Code::InvalidArgument,
            message: "transfers[2].amount: 1.5 has more decimal places than ledger 1's scale 0".into(),
        };
        assert!(with_line(error, &batch).to_string().ends_with("(transfers[2] is line 4)"));
    }

    #[test]
    fn the_format_follows_the_file_name() {
        assert_eq!(format_of(Path::new("payments.jsonl")), ImportFormat::Jsonl);
        assert_eq!(format_of(Path::new("payments.ndjson")), ImportFormat::Jsonl);
        assert_eq!(format_of(Path::new("payments.csv")), ImportFormat::Csv);
        assert_eq!(format_of(Path::new("payments")), ImportFormat::Csv);
    }
}
