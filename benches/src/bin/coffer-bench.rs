//! `coffer-bench`: the year-end-peak load generator, run as `coffer bench`
//! (the `coffer` binary hands its arguments to this executable, its
//! sibling). See [`coffer_benches::loadgen`] and `coffer bench --help`.
//!
//! Exit status: 0 when the run validated, 1 when it failed or did not
//! validate, 2 on a usage error, 130 when interrupted (SIGINT or SIGTERM;
//! the local cluster is stopped first).

use std::process::ExitCode;

use clap::Parser;
use coffer_benches::loadgen::{self, BenchArgs, BenchConfig, BenchError, Report};
use tokio::signal::unix::{signal, SignalKind};

/// Exit status of a failed or invalid run.
const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (as clap's own).
const EXIT_USAGE: u8 = 2;
/// Exit status after an interrupt (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let config = match args.resolve(std::env::current_exe().ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("coffer bench: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("coffer-bench").build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("coffer bench: starting the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: BenchConfig) -> ExitCode {
    let (mut interrupt, mut terminate) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("coffer bench: installing signal handlers: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // On a signal the run is dropped, which stops a local cluster.
    tokio::select! {
        outcome = loadgen::run(&config) => finish(&config, outcome),
        _ = interrupt.recv() => interrupted(),
        _ = terminate.recv() => interrupted(),
    }
}

fn interrupted() -> ExitCode {
    eprintln!("coffer bench: interrupted; the cluster it started is stopped");
    ExitCode::from(EXIT_INTERRUPTED)
}

fn finish(config: &BenchConfig, outcome: Result<Report, BenchError>) -> ExitCode {
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            eprintln!("coffer bench: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    println!();
    print!("{}", loadgen::report::render_table(&report));
    match loadgen::write_reports(&report, &config.json, &config.svg, &config.png) {
        Ok(()) => println!(
            "  reports        {}, {} and {}",
            config.json.display(),
            config.svg.display(),
            config.png.display()
        ),
        Err(error) => {
            eprintln!("coffer bench: writing the reports: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if report.validation.ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("coffer bench: the run did not validate ({} problems)", report.validation.problems_found);
        ExitCode::from(EXIT_FAILURE)
    }
}
