//! `coffer-chaos`: runs Coffer's deterministic cluster simulator.
//!
//! ```text
//! coffer-chaos sim --seed 7 --log        # replay one seed, with its event log
//! coffer-chaos sim --seeds 500 --from 0  # run many, print a summary
//! coffer-chaos dr --seed 7 --log         # two regions: replay one DR seed
//! coffer-chaos dr --seeds 200            # many DR seeds
//! coffer-chaos dr --seeds 200 --plant promote-without-lease  # must fail
//! ```
//!
//! A seed with a violation prints the command that replays it, and the
//! process exits with status 1.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use coffer_chaos::dr::{run_dr, DrOptions, DrSummary};
use coffer_chaos::summary::{replay_command, Summary};
use coffer_chaos::{run, Options};
use coffer_dr::core::Planted;

/// Steps of the fault phase by default (10 ms each: 15 s of faults).
const STEPS_DEFAULT: u64 = 1_500;

#[derive(Parser)]
#[command(name = "coffer-chaos", version, about = "Coffer under faults: the deterministic cluster simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the deterministic simulator: one seed with its event log, or
    /// many with a summary.
    Sim(SimArgs),
    /// Runs the two-region disaster-recovery simulator: one seed with its
    /// event log, or many.
    Dr(DrArgs),
}

/// Which seeds to run: one to replay, or many from a first.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["seed", "seeds"]))]
struct Seeds {
    /// Replays this seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Runs this many seeds and prints a summary.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0, requires = "seeds")]
    from: u64,
}

#[derive(Args)]
struct DrArgs {
    #[command(flatten)]
    which: Seeds,
    /// Steps (10 ms ticks) of the fault phase.
    #[arg(long, default_value_t = coffer_chaos::dr::STEPS_DEFAULT)]
    steps: u64,
    /// Plants a bug the checkers must catch: promote-without-lease,
    /// ack-after-lease-lapse or failback-skips-divergence.
    #[arg(long, value_parser = parse_planted)]
    plant: Option<Planted>,
    /// Prints the readable event log of `--seed`.
    #[arg(long, requires = "seed")]
    log: bool,
}

fn parse_planted(name: &str) -> Result<Planted, String> {
    Planted::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Planted::ALL.iter().map(|(_, name)| *name).collect();
        format!("{name:?} is not a planted bug; one of {}", known.join(", "))
    })
}

#[derive(Args)]
struct SimArgs {
    #[command(flatten)]
    which: Seeds,
    /// Founding voters, 3 or 5 (by default each seed draws one).
    #[arg(long, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: Option<u64>,
    /// Steps (10 ms ticks) of the fault phase.
    #[arg(long, default_value_t = STEPS_DEFAULT)]
    steps: u64,
    /// Prints the readable event log of `--seed`.
    #[arg(long, requires = "seed")]
    log: bool,
}

fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Sim(args) => args,
        Command::Dr(args) => return dr(&args),
    };
    if args.nodes == Some(4) {
        eprintln!("--nodes must be 3 or 5");
        return ExitCode::from(2);
    }
    let options = |seed| Options { seed, nodes: args.nodes.map(|n| n as usize), steps: args.steps };
    match (args.which.seed, args.which.seeds) {
        (Some(seed), _) => replay(&options(seed), args.log),
        (None, Some(count)) => many(args.which.from, count, options),
        (None, None) => ExitCode::from(2),
    }
}

/// Runs one seed; with `log`, streams its event log to stdout.
fn replay(options: &Options, log: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut open = true;
    let mut print = |line: &str| {
        // A closed pipe (`| head`) ends the log, not the run.
        open = open && writeln!(out, "{line}").is_ok();
    };
    let started = Instant::now();
    let report = run(options, if log { Some(&mut print) } else { None });
    let mut summary = Summary::default();
    summary.add(&report);
    let mut out = stdout.lock();
    let _ = writeln!(out, "seed {}: {}", report.seed, report.profile);
    let _ = writeln!(out, "{summary}");
    let _ = writeln!(out, "event log hash: {:016x}; wall time {:.2?}", report.hash, started.elapsed());
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        let _ = writeln!(out, "FAILED; replay with: {}", replay_command(report.seed, options));
        ExitCode::FAILURE
    }
}

/// Runs seeds `from .. from + count` and prints the summary.
fn many(from: u64, count: u64, options: impl Fn(u64) -> Options) -> ExitCode {
    let started = Instant::now();
    let mut summary = Summary::default();
    for seed in from..from.saturating_add(count) {
        let options = options(seed);
        let report = run(&options, None);
        if !report.violations.is_empty() {
            println!(
                "seed {seed} FAILED ({} violations); replay with: {}",
                report.violations.len(),
                replay_command(seed, &options)
            );
        }
        summary.add(&report);
    }
    println!("{summary}");
    println!("wall time:    {:.2?}", started.elapsed());
    if summary.failing_seeds.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {:?}", summary.failing_seeds);
        ExitCode::FAILURE
    }
}

/// `coffer-chaos dr`: one seed with its log, or many with a summary.
fn dr(args: &DrArgs) -> ExitCode {
    let options = |seed| DrOptions { seed, steps: args.steps, planted: args.plant.unwrap_or_default() };
    let started = Instant::now();
    let mut summary = DrSummary::default();
    if let Some(seed) = args.which.seed {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut open = true;
        let mut print = |line: &str| open = open && writeln!(out, "{line}").is_ok();
        let report = run_dr(&options(seed), if args.log { Some(&mut print) } else { None });
        summary.add(&report, &options(seed));
    } else if let Some(count) = args.which.seeds {
        for seed in args.which.from..args.which.from.saturating_add(count) {
            summary.add(&run_dr(&options(seed), None), &options(seed));
        }
    }
    println!("{summary}");
    println!("wall time:    {:.2?}", started.elapsed());
    if summary.failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
