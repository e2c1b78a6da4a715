//! `coffer`: Coffer's one executable.
//!
//! - `coffer node --config FILE`: run one node of a cluster (consensus
//!   node, gRPC API, Prometheus metrics) until SIGINT/SIGTERM;
//! - `coffer dev`: a local three-node cluster with a sample treasury;
//! - `coffer verify --data-dir DIR`: check a stopped node's store offline;
//! - `coffer bench`: the load generator (the `coffer-bench` executable);
//! - `coffer certs`: issue a cluster's authority, node and client
//!   certificates;
//! - the client commands (`coffer status`, `coffer transfer create`, ...),
//!   which talk to a running cluster.
//!
//! Exit status: 0 on success, 1 on a failure (printed as one line naming
//! the file, field or node), 2 on a usage error (a bad flag or setting).

mod bench;
mod certs;
mod cli;
mod config;
mod dev;
mod dr;
mod node;
mod restore;
mod telemetry;
mod verify;

use std::process::ExitCode;

/// mimalloc rather than the C library's allocator: a node allocates and
/// frees a batch's buffers (about a megabyte each) every few milliseconds
/// on several threads, where glibc's per-thread arenas fragment (a node's
/// memory kept rising through a 40 M-transfer run) and cost more CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Exit status of a failure.
const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (as clap's own).
const EXIT_USAGE: u8 = 2;

/// Coffer: a replicated double-entry ledger for public treasuries.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, propagate_version = true)]
struct Cli {
    /// Log filter (a level like `info`, or directives like
    /// `info,coffer_consensus=debug`); overrides COFFER_LOG and RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(flatten)]
    client: cli::ClientOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node: the consensus node, its gRPC API and its metrics.
    Node(Box<config::NodeArgs>),
    /// Run a local three-node cluster with a sample treasury.
    Dev(dev::DevArgs),
    /// Check a stopped node's store offline: checksums, invariants, digest.
    Verify(verify::VerifyArgs),
    /// Make a node's data directory from a backup (`coffer snapshot`),
    /// offline, verifying every file first.
    Restore(restore::RestoreArgs),
    /// Replay a year-end payment peak against a cluster, validate it and
    /// report throughput and latency (`coffer bench --help`).
    Bench(bench::BenchArgs),
    /// Disaster recovery across the two regions: status, switchover,
    /// failover, failback, drills.
    #[command(subcommand)]
    Dr(dr::DrCommand),
    /// Issue the cluster's certificates: its authority, nodes', clients'.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// A failure, and whether it was a usage error.
struct Failure {
    message: String,
    usage: bool,
}

impl Failure {
    fn usage(error: impl std::fmt::Display) -> Self {
        Self { message: error.to_string(), usage: true }
    }

    fn failed(error: impl std::fmt::Display) -> Self {
        Self { message: error.to_string(), usage: false }
    }
}

fn main() -> ExitCode {
    if let Some(args) = bench::direct_args() {
        eprintln!("coffer: {}", bench::exec(&args));
        return ExitCode::from(EXIT_FAILURE);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("coffer: {}", failure.message);
            ExitCode::from(if failure.usage { EXIT_USAGE } else { EXIT_FAILURE })
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coffer")
        .build()
        .map_err(|error| Failure::failed(format!("starting the async runtime: {error}")))
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let log_level = cli.log_level.as_deref();
    match cli.command {
        Command::Node(args) => {
            let mut file = match &args.config {
                Some(path) => config::NodeFileConfig::load(path).map_err(Failure::usage)?,
                None => config::NodeFileConfig::default(),
            };
            file.override_with(&args);
            let resolved = file.resolve().map_err(Failure::usage)?;
            telemetry::init_logging(log_level, resolved.log_level.as_deref(), "info").map_err(Failure::usage)?;
            runtime()?.block_on(node::run(resolved)).map_err(Failure::failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(args) => {
            telemetry::init_logging(log_level, None, "warn").map_err(Failure::usage)?;
            runtime()?.block_on(dev::run(&args, cli.client.insecure, log_level)).map_err(Failure::failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            telemetry::init_logging(log_level, None, "warn").map_err(Failure::usage)?;
            let report = verify::run(&args).map_err(Failure::failed)?;
            if cli.client.json {
                let json = serde_json::to_string_pretty(&report).map_err(Failure::failed)?;
                println!("{json}");
            } else {
                print!("{}", verify::render_text(&report));
            }
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) })
        }
        Command::Restore(args) => {
            telemetry::init_logging(log_level, None, "warn").map_err(Failure::usage)?;
            let report = restore::run(&args).map_err(Failure::failed)?;
            if cli.client.json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(Failure::failed)?);
            } else {
                print!("{}", restore::render_text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => Err(Failure::failed(bench::exec(&args.args))),
        Command::Certs(command) => {
            for path in certs::run(&command).map_err(Failure::failed)? {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dr(command) => {
            telemetry::init_logging(log_level, None, "warn").map_err(Failure::usage)?;
            cli::set_security(cli.client.security().map_err(Failure::usage)?);
            runtime()?.block_on(dr::run(command, &cli.client)).map_err(Failure::failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(command) => {
            telemetry::init_logging(log_level, None, "warn").map_err(Failure::usage)?;
            cli::set_security(cli.client.security().map_err(Failure::usage)?);
            runtime()?.block_on(cli::run(command, &cli.client)).map_err(Failure::failed)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_opens_with_what_coffer_is() {
        let help = Cli::command().render_help().to_string();
        assert!(help.starts_with("Coffer: a replicated double-entry ledger for public treasuries"), "{help}");
    }

    #[test]
    fn node_takes_its_config_and_every_override() {
        let cli = Cli::try_parse_from([
            "coffer",
            "node",
            "--config",
            "node.toml",
            "--node-id",
            "4",
            "--peer",
            "1=127.0.0.1:7101,127.0.0.1:7201",
            "--peer",
            "2=127.0.0.1:7102,127.0.0.1:7202",
            "--bootstrap",
            "1,2,4",
            "--tick-ms",
            "20",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        let Command::Node(args) = cli.command else { panic!("not node: {:?}", cli.command) };
        assert_eq!((args.node_id, args.tick_ms, args.peers.len()), (Some(4), Some(20), 2));
        assert_eq!(args.bootstrap, Some(vec![1, 2, 4]));
    }

    #[test]
    fn verify_and_dev_take_their_flags_and_the_global_json() {
        let cli = Cli::try_parse_from(["coffer", "verify", "--data-dir", "data/dev/node1", "--json"]).unwrap();
        assert!(cli.client.json);
        assert!(matches!(cli.command, Command::Verify(args) if args.data_dir.ends_with("node1")));
        let cli = Cli::try_parse_from(["coffer", "dev", "--base-port", "9000", "--no-sample"]).unwrap();
        assert!(matches!(cli.command, Command::Dev(args) if args.base_port == 9000 && args.no_sample));
    }

    #[test]
    fn a_bad_flag_is_a_usage_error() {
        let error = Cli::try_parse_from(["coffer", "node", "--node-id", "one"]).unwrap_err();
        assert_eq!(error.exit_code(), i32::from(EXIT_USAGE));
        let error = Cli::try_parse_from(["coffer", "dev", "--base-port", "65500"]).unwrap_err();
        assert_eq!(error.exit_code(), i32::from(EXIT_USAGE));
    }
}
