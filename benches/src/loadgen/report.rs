//! The run's report: one serializable [`Report`] (written as JSON), its
//! table for the terminal ([`render_table`]), and the numbers' formatting.

use std::fmt::Write as _;

use super::options::{BenchConfig, DistributionConfig, Target};
use super::runner::LoadSummary;
use super::stats::{Percentiles, SecondSummary};
use super::validate::Validation;

/// Rows of the per-second table at most; longer runs group seconds.
pub const TABLE_ROWS_MAX: usize = 60;

/// The configuration as the report states it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConfigReport {
    /// `closed_loop` or `open_loop`.
    pub mode: &'static str,
    /// Accounts per ledger.
    pub accounts_per_ledger: u32,
    /// Ledgers.
    pub ledgers: u32,
    /// Transfers per batch.
    pub batch_size: usize,
    /// Concurrent clients.
    pub clients: u32,
    /// How transfers pick accounts.
    pub distribution: DistributionConfig,
    /// Shares of transfer kinds.
    pub mix: String,
    /// Transfers asked for (`None`: until the duration ends).
    pub transfers: Option<u64>,
    /// Open-loop rate, transfers/s.
    pub rate: Option<u64>,
    /// Duration asked for, seconds.
    pub duration_s: Option<f64>,
    /// The workload's seed.
    pub seed: u64,
    /// Transfers looked up after the run.
    pub sample: usize,
}

impl ConfigReport {
    /// The report's view of `config`.
    pub fn of(config: &BenchConfig) -> Self {
        Self {
            mode: if config.rate.is_some() { "open_loop" } else { "closed_loop" },
            accounts_per_ledger: config.accounts,
            ledgers: config.ledgers,
            batch_size: config.batch_size,
            clients: config.clients,
            distribution: config.distribution,
            mix: config.mix.to_string(),
            transfers: config.transfers,
            rate: config.rate,
            duration_s: config.duration.map(|duration| duration.as_secs_f64()),
            seed: config.seed,
            sample: config.sample,
        }
    }
}

/// Where the load went.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClusterReport {
    /// `local` (started by the run) or `existing`.
    pub kind: &'static str,
    /// The nodes' client addresses.
    pub addresses: Vec<String>,
    /// Whether the clients and the nodes spoke TLS.
    pub tls: bool,
}

impl ClusterReport {
    /// The cluster of `target`, at `addresses`.
    pub fn of(target: &Target, addresses: &[String]) -> Self {
        let (kind, tls) = match target {
            Target::Local { insecure, .. } => ("local", !insecure),
            Target::Remote { tls, .. } => ("existing", tls.is_some()),
        };
        Self { kind, addresses: addresses.to_vec(), tls }
    }
}

/// One process's resource use over the load phase.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ProcessReport {
    /// `node 1`, ..., or `loadgen` (this process).
    pub name: String,
    /// Its process id, if known.
    pub pid: Option<u32>,
    /// Peak resident memory (`VmHWM`) at the end of the load, KiB.
    pub peak_rss_kib: Option<u64>,
    /// CPU seconds (user + system) spent during the load.
    pub cpu_s: Option<f64>,
    /// `cpu_s` over the load's duration, in percent of one core.
    pub cpu_percent: Option<f64>,
}

/// How long each phase took, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Phases {
    /// Starting the cluster (if any), creating ledgers and accounts.
    pub setup_s: f64,
    /// The load.
    pub load_s: f64,
    /// Validation.
    pub validation_s: f64,
}

/// Everything a run measured and checked.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// The command line that ran it.
    pub command: String,
    /// What was asked for.
    pub config: ConfigReport,
    /// Where the load went.
    pub cluster: ClusterReport,
    /// Processors of this machine.
    pub cpus: usize,
    /// The 1, 5 and 15-minute load averages when the load started.
    pub load_average: Option<String>,
    /// Phase durations.
    pub phases: Phases,
    /// What the load did.
    pub load: LoadSummary,
    /// Transfers committed per second over the load.
    pub throughput_per_s: f64,
    /// Batch latency over the load.
    pub latency_ms: Percentiles,
    /// Each process's resource use.
    pub processes: Vec<ProcessReport>,
    /// Second by second.
    pub per_second: Vec<SecondSummary>,
    /// What validation found.
    pub validation: Validation,
}

/// `1234567` as `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A number with one decimal, or `unknown`.
fn or_unknown(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "unknown".into(), |value| format!("{value:.1}{unit}"))
}

/// Milliseconds with a sensible number of decimals.
pub fn format_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", thousands(ms.round() as u64))
    }
}

/// The report as a table for the terminal.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let config = &report.config;
    let mode = match config.rate {
        Some(rate) => format!("open loop at {} transfers/s", thousands(rate)),
        None => "closed loop".into(),
    };
    let _ = writeln!(
        out,
        "coffer bench: {}, batches of {}, {} clients, {mode}, seed {}",
        config.distribution,
        thousands(config.batch_size as u64),
        config.clients,
        config.seed
    );
    let _ = writeln!(
        out,
        "  mix {}; {} ledger(s) × {} accounts; {} cluster {} ({}); {} cpus, load average {}",
        config.mix,
        config.ledgers,
        thousands(u64::from(config.accounts_per_ledger)),
        report.cluster.kind,
        report.cluster.addresses.join(","),
        if report.cluster.tls { "TLS" } else { "plaintext" },
        report.cpus,
        report.load_average.as_deref().unwrap_or("unknown"),
    );
    let load = &report.load;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  committed      {} transfers in {} batches in {:.2} s ({} failed, {} batches retried{})",
        thousands(load.transfers_committed),
        thousands(load.batches),
        load.elapsed_s,
        thousands(load.transfers_failed),
        thousands(load.batch_retries),
        if config.rate.is_some() { format!(", {} late", thousands(load.late_batches)) } else { String::new() },
    );
    let _ = writeln!(out, "  throughput     {} transfers/s", thousands(report.throughput_per_s.round() as u64));
    let p = &report.latency_ms;
    let _ = writeln!(
        out,
        "  batch latency  p50 {}   p90 {}   p99 {}   p99.9 {}   max {}   (mean {})",
        format_ms(p.p50_ms),
        format_ms(p.p90_ms),
        format_ms(p.p99_ms),
        format_ms(p.p99_9_ms),
        format_ms(p.max_ms),
        format_ms(p.mean_ms)
    );
    let _ = writeln!(
        out,
        "  phases         setup {:.1} s, load {:.1} s, validation {:.1} s",
        report.phases.setup_s, report.phases.load_s, report.phases.validation_s
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  {:<9} {:>8} {:>13} {:>9} {:>7}", "process", "pid", "peak RSS", "CPU s", "CPU %");
    for process in &report.processes {
        let pid = process.pid.map_or_else(|| "unknown".into(), |pid| pid.to_string());
        let rss = or_unknown(process.peak_rss_kib.map(|kib| kib as f64 / 1_024.0), " MiB");
        let cpu = process.cpu_s.map_or_else(|| "unknown".into(), |cpu| format!("{cpu:.2}"));
        let percent = process.cpu_percent.map_or_else(|| "unknown".into(), |percent| format!("{percent:.0}"));
        let _ = writeln!(out, "  {:<9} {pid:>8} {rss:>13} {cpu:>9} {percent:>7}", process.name);
    }
    let _ = writeln!(out);
    render_seconds(&mut out, &report.per_second);
    let _ = writeln!(out);
    render_validation(&mut out, &report.validation);
    out
}

/// Throughput and p99 over time: one row a second, or per group of seconds
/// for long runs (mean throughput and the worst second's p99).
fn render_seconds(out: &mut String, seconds: &[SecondSummary]) {
    let group = seconds.len().div_ceil(TABLE_ROWS_MAX).max(1);
    let p99_label = if group == 1 { "p99" } else { "worst p99" };
    let _ = writeln!(out, "  {:>11} {:>13} {:>12}", "time (s)", "transfers/s", p99_label);
    for rows in seconds.chunks(group) {
        let first = rows.first().map_or(0, |row| row.second);
        let last = rows.last().map_or(0, |row| row.second);
        let transfers: u64 = rows.iter().map(|row| row.transfers).sum();
        let rate = transfers / rows.len() as u64;
        let p99 = rows
            .iter()
            .filter_map(|row| row.p99_ms)
            .fold(None, |worst: Option<f64>, p99| Some(worst.map_or(p99, |worst| worst.max(p99))));
        let span = if first == last { format!("{first}") } else { format!("{first}-{last}") };
        let p99 = p99.map_or_else(|| "-".into(), format_ms);
        let _ = writeln!(out, "  {span:>11} {:>13} {p99:>12}", thousands(rate));
    }
}

fn render_validation(out: &mut String, validation: &Validation) {
    let verdict = if validation.ok { "ok" } else { "FAILED" };
    let _ = writeln!(
        out,
        "  validation     {verdict}: {} of {} sampled transfers match, {} of {} accounts match, {} failed transfers",
        thousands((validation.transfers_sampled - validation.transfers_mismatched) as u64),
        thousands(validation.transfers_sampled as u64),
        thousands((validation.accounts_checked - validation.accounts_mismatched) as u64),
        thousands(validation.accounts_checked as u64),
        thousands(validation.failed_transfers),
    );
    for ledger in &validation.ledgers {
        let matches = match ledger.matches_expected {
            Some(true) => ", equal to the generator's totals",
            Some(false) => ", NOT equal to the generator's totals",
            None => "",
        };
        let _ = writeln!(
            out,
            "                 ledger {}: {} accounts, debits {} = credits {} posted, {} = {} pending: {}{matches}",
            ledger.ledger,
            thousands(ledger.accounts),
            ledger.debits_posted,
            ledger.credits_posted,
            ledger.debits_pending,
            ledger.credits_pending,
            if ledger.balanced { "balanced" } else { "NOT BALANCED" },
        );
    }
    if validation.problems_found > 0 {
        let _ =
            writeln!(out, "  problems       {} (the first {}):", validation.problems_found, validation.problems.len());
        for problem in &validation.problems {
            let _ = writeln!(out, "    {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(format_ms(1.234), "1.23 ms");
        assert_eq!(format_ms(42.26), "42.3 ms");
        assert_eq!(format_ms(1_234.4), "1,234 ms");
    }

    #[test]
    fn long_runs_group_seconds_in_the_table() {
        let seconds: Vec<SecondSummary> = (0..130)
            .map(|second| SecondSummary {
                second,
                transfers: 1_000,
                batches: 1,
                p99_ms: Some(second as f64),
                ..Default::default()
            })
            .collect();
        let mut out = String::new();
        render_seconds(&mut out, &seconds);
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows.len(), 1 + 130_usize.div_ceil(3));
        assert!(rows[0].contains("worst p99"));
        assert!(rows[1].contains("0-2") && rows[1].contains("1,000") && rows[1].contains("2.00 ms"), "{}", rows[1]);
    }
}
