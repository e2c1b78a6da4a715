//! `coffer bench`, the year-end-peak load generator: starts (or reaches) a
//! cluster, creates a run's ledgers and accounts, sends transfers by a mix
//! and a distribution, closed- or open-loop, then validates the cluster
//! against its own record and reports throughput, latency percentiles,
//! per-second series and each node's memory and CPU.
//!
//! - [`options`]: the command line and the checked [`BenchConfig`];
//! - [`workload`]: ids from seed and sequence, accounts, batches;
//! - [`runner`]: the load phase (closed and open loop, latency, retries);
//! - [`expected`]: the record of acknowledged transfers (balances, sample);
//! - [`validate`]: the checks after the run;
//! - [`stats`], [`report`], [`chart`]: histograms, the table and JSON, the charts;
//! - [`cluster`], [`process`]: the local cluster and what `/proc` says of it.

pub mod chart;
pub mod cluster;
pub mod error;
pub mod expected;
pub mod options;
pub mod process;
pub mod report;
pub mod runner;
pub mod stats;
pub mod validate;
pub mod workload;

use std::path::Path;
use std::time::{Duration, Instant};

use coffer_api::client::{Client, ClientConfig};
use coffer_ledger::{Account, CreateAccountResult, BATCH_EVENTS_MAX};
use coffer_security::{Security, TlsContext, TlsFiles};

pub use error::BenchError;
pub use options::{BenchArgs, BenchConfig};
pub use report::Report;

use cluster::LocalCluster;
use expected::Expected;
use options::{DistributionConfig, Target};
use report::{ClusterReport, ConfigReport, Phases, ProcessReport};
use runner::{Plan, Shared};
use workload::{Generator, IdSpace, Layout};

/// The deadline of one call of the run (the client retries within it).
pub const CALL_DEADLINE_MS: u64 = 30_000;

/// The cluster of a run: started by it, or an existing one.
enum Cluster {
    Local(LocalCluster),
    Existing { addresses: Vec<String>, pids: Vec<u32>, tls: Option<TlsFiles> },
}

impl Cluster {
    /// How the run's clients secure their connections: the local cluster's
    /// `admin` certificate, the files given for an existing one, or
    /// plaintext.
    fn security(&self) -> Result<Security, BenchError> {
        let files = match self {
            Self::Local(local) => local.tls_dir()?.map(|dir| TlsFiles::in_dir(&dir, "admin")),
            Self::Existing { tls, .. } => tls.clone(),
        };
        match files {
            None => Ok(Security::Insecure),
            Some(files) => {
                TlsContext::load(files).map(Security::Tls).map_err(|error| BenchError::Setup(format!("TLS: {error}")))
            }
        }
    }

    fn addresses(&self) -> Vec<String> {
        match self {
            Self::Local(local) => local.addresses().to_vec(),
            Self::Existing { addresses, .. } => addresses.clone(),
        }
    }

    /// `(name, pid)` of every process to report: the nodes, then this one.
    fn processes(&self) -> Vec<(String, Option<u32>)> {
        let mut processes: Vec<(String, Option<u32>)> = match self {
            Self::Local(local) => {
                local.nodes().iter().map(|node| (format!("node {}", node.node), Some(node.pid))).collect()
            }
            Self::Existing { addresses, pids, .. } if pids.is_empty() => {
                addresses.iter().map(|address| (format!("node at {address}"), None)).collect()
            }
            Self::Existing { pids, .. } => pids.iter().map(|&pid| (format!("pid {pid}"), Some(pid))).collect(),
        };
        processes.push(("loadgen".into(), Some(std::process::id())));
        processes
    }
}

/// Runs one benchmark: the returned report says whether it validated.
/// A local cluster is stopped before this returns, whatever happens; its
/// data and logs are kept (and named) when the run fails or does not validate.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let started = Instant::now();
    let mut cluster = match &config.target {
        Target::Local { coffer, node_toml, insecure } => {
            let local = LocalCluster::start(coffer, node_toml.as_deref(), *insecure)?;
            let dir = local.dir().map(|dir| dir.display().to_string()).unwrap_or_default();
            println!("coffer bench: starting a local 3-node cluster in {dir} ({})", coffer.display());
            Cluster::Local(local)
        }
        Target::Remote { addresses, pids, tls } => {
            Cluster::Existing { addresses: addresses.clone(), pids: pids.clone(), tls: tls.clone() }
        }
    };
    let outcome = run_on(config, &mut cluster, started).await;
    let Cluster::Local(mut local) = cluster else { return outcome };
    let keep = !matches!(&outcome, Ok(report) if report.validation.ok);
    let kept = if keep { local.keep() } else { None };
    let stopped = local.stop();
    match (outcome, kept) {
        (Err(error), Some(dir)) => Err(BenchError::Kept { source: Box::new(error), dir }),
        (Err(error), None) => Err(error),
        (Ok(report), kept) => {
            if let Some(dir) = kept {
                println!("coffer bench: the local cluster's data and logs are kept in {}", dir.display());
            }
            stopped?;
            Ok(report)
        }
    }
}

/// How often the load phase checks that a local cluster still runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Returns once `local`'s `coffer dev` has exited, with why.
async fn watch(local: &mut LocalCluster) -> BenchError {
    loop {
        if let Err(exited) = local.check_alive() {
            return exited;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

async fn run_on(config: &BenchConfig, cluster: &mut Cluster, started: Instant) -> Result<Report, BenchError> {
    let addresses = cluster.addresses();
    let security = cluster.security()?;
    let clients = (0..config.clients).map(|_| client(&addresses, &security)).collect::<Result<Vec<_>, _>>()?;
    let first = &clients[0];
    match cluster {
        Cluster::Local(local) => local.wait_ready(first).await?,
        Cluster::Existing { .. } => {
            first.status().await.map_err(BenchError::client("asking the cluster for its status"))?;
        }
    }
    let hot = match config.distribution {
        DistributionConfig::Hot { hot } => hot,
        DistributionConfig::Uniform | DistributionConfig::Zipf { .. } => 0,
    };
    let layout = Layout::new(IdSpace::new(config.seed), config.ledgers, config.accounts, hot);
    set_up(first, &layout, config.seed).await?;
    let setup = started.elapsed();

    let processes = cluster.processes();
    let pids: Vec<Option<u32>> = processes.iter().map(|(_, pid)| *pid).collect();
    let before: Vec<_> = pids.iter().map(|pid| pid.and_then(process::usage)).collect();
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let plan = Plan {
        batch_size: config.batch_size,
        transfers: config.transfers,
        duration: config.duration,
        rate: config.rate,
    };
    let generator = Generator::new(layout, config.distribution, config.mix, config.seed);
    let expected = Expected::new(layout, config.sample, config.seed);
    println!(
        "coffer bench: sending {} ({} clients, {})...",
        config.transfers.map_or_else(|| "transfers".into(), |total| format!("{} transfers", report::thousands(total))),
        config.clients,
        config.rate.map_or_else(|| "closed loop".into(), |rate| format!("open loop at {rate}/s")),
    );
    let load_started = Instant::now();
    let shared = Shared::new(plan, generator, expected, pids.clone());
    match cluster {
        // A local cluster is watched while the load runs: if `coffer dev`
        // exits (a node died, the disk filled), the run stops at once with
        // the reason, instead of retrying every batch against nobody. The
        // load's tasks are aborted with the dropped future.
        Cluster::Local(local) => {
            tokio::select! {
                result = runner::run(&shared, &clients) => result?,
                exited = watch(local) => return Err(exited),
            }
        }
        Cluster::Existing { .. } => runner::run(&shared, &clients).await?,
    }
    let load_time = load_started.elapsed();
    let after: Vec<_> = pids.iter().map(|pid| pid.and_then(process::usage)).collect();
    let (expected, recorder, load) = shared.finish();
    if let Cluster::Local(local) = cluster {
        local.check_alive()?;
    }

    println!("coffer bench: validating...");
    let validation_started = Instant::now();
    let exact_totals = matches!(cluster, Cluster::Local(_));
    let validation = validate::validate(first, &layout, &expected, exact_totals).await?;
    let validation_time = validation_started.elapsed();

    let elapsed = Duration::from_secs_f64(load.elapsed_s);
    let process_reports = processes
        .into_iter()
        .zip(before.iter().zip(&after))
        .map(|((name, pid), usage)| process_report(name, pid, usage, elapsed))
        .collect();
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        config: ConfigReport::of(config),
        cluster: ClusterReport::of(&config.target, &addresses),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        load_average,
        phases: Phases {
            setup_s: setup.as_secs_f64(),
            load_s: load_time.as_secs_f64(),
            validation_s: validation_time.as_secs_f64(),
        },
        throughput_per_s: stats::throughput(load.transfers_committed, elapsed),
        latency_ms: recorder.percentiles(),
        processes: process_reports,
        per_second: recorder.per_second(),
        load,
        validation,
    })
}

fn process_report(
    name: String,
    pid: Option<u32>,
    (before, after): (&Option<process::Usage>, &Option<process::Usage>),
    elapsed: Duration,
) -> ProcessReport {
    let cpu_s = match (before, after) {
        (Some(before), Some(after)) => Some(after.cpu_s() - before.cpu_s()),
        _ => None,
    };
    let seconds = elapsed.as_secs_f64();
    ProcessReport {
        name,
        pid,
        peak_rss_kib: after.map(|usage| usage.peak_rss_kib),
        cpu_s,
        cpu_percent: cpu_s.filter(|_| seconds > 0.0).map(|cpu| cpu / seconds * 100.0),
    }
}

fn client(addresses: &[String], security: &Security) -> Result<Client, BenchError> {
    let mut config = ClientConfig::new(addresses.to_vec());
    config.deadline_ms = CALL_DEADLINE_MS;
    config.security = security.clone();
    Client::new(config).map_err(BenchError::client("configuring the client"))
}

/// Creates the run's ledgers (an existing identical ledger is fine) and
/// accounts (which must be new: accounts of this seed that already exist
/// carry an earlier run's balances).
async fn set_up(client: &Client, layout: &Layout, seed: u64) -> Result<(), BenchError> {
    let ledgers = layout.ledgers();
    let results = client.create_ledgers(&ledgers).await.map_err(BenchError::client("creating the ledgers"))?.value;
    if let Some((ledger, result)) = ledgers.iter().zip(&results).find(|(_, result)| !result.is_success()) {
        return Err(BenchError::Setup(format!("ledger {}: {result}", ledger.id)));
    }
    let accounts: Vec<Account> = (0..layout.account_count()).map(|position| layout.account(position)).collect();
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        let results = client.create_accounts(chunk).await.map_err(BenchError::client("creating the accounts"))?.value;
        for (account, result) in chunk.iter().zip(&results) {
            if *result == CreateAccountResult::Exists {
                return Err(BenchError::Setup(format!(
                    "account {} exists: this cluster already ran seed {seed}; choose another --seed",
                    account.id
                )));
            }
            if !result.is_success() {
                return Err(BenchError::Setup(format!("account {}: {result}", account.id)));
            }
        }
    }
    Ok(())
}

/// Writes the JSON report, then the SVG and PNG charts, creating their
/// directories.
pub fn write_reports(report: &Report, json: &Path, svg: &Path, png: &Path) -> Result<(), BenchError> {
    let text =
        serde_json::to_string_pretty(report).map_err(|error| BenchError::io(json, std::io::Error::other(error)))?;
    write(json, &text)?;
    let drawn = chart::svg(report).map_err(|error| BenchError::io(svg, std::io::Error::other(error)))?;
    write(svg, &drawn)?;
    create_parent(png)?;
    chart::png(report, png).map_err(|error| BenchError::io(png, std::io::Error::other(error)))
}

fn create_parent(path: &Path) -> Result<(), BenchError> {
    match path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|error| BenchError::io(parent, error)),
        None => Ok(()),
    }
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    create_parent(path)?;
    std::fs::write(path, text).map_err(|error| BenchError::io(path, error))
}
