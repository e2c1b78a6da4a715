//! The simulator in CI: a fixed range of seeds, each with its own fault mix,
//! must run without a violation; and a seed must replay its run exactly.
//!
//! The seeds are split over a few tests so the test harness runs them on
//! every core. A longer run is one command:
//! `coffer-chaos sim --seeds 10000 --steps 3000`.

use coffer_chaos::summary::{replay_command, Summary};
use coffer_chaos::{run, Options};

/// Seeds CI runs: `0 .. CI_SEEDS`, in [`CI_PARTS`] tests.
const CI_SEEDS: u64 = 500;
const CI_PARTS: u64 = 4;
/// Steps (10 ms ticks) of each seed's fault phase in CI.
const CI_STEPS: u64 = 1_500;

/// Runs part `part` of the CI seeds and fails naming every failing seed
/// with the command that replays it.
fn run_part(part: u64) {
    let per_part = CI_SEEDS / CI_PARTS;
    let seeds = part * per_part..(part + 1) * per_part;
    let mut summary = Summary::default();
    let mut failures = Vec::new();
    for seed in seeds.clone() {
        let options = Options { seed, nodes: None, steps: CI_STEPS };
        let report = run(&options, None);
        if !report.violations.is_empty() {
            failures.push(format!(
                "seed {seed}: {}\n  replay: {}",
                report.violations[0],
                replay_command(seed, &options)
            ));
        }
        summary.add(&report);
    }
    println!("seeds {seeds:?}:\n{summary}");
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
    assert!(summary.faults_total() > 0 && summary.requests_acked > 0, "the seeds injected faults and did work");
}

#[test]
fn ci_seeds_part_1_hold_every_invariant() {
    run_part(0);
}

#[test]
fn ci_seeds_part_2_hold_every_invariant() {
    run_part(1);
}

#[test]
fn ci_seeds_part_3_hold_every_invariant() {
    run_part(2);
}

#[test]
fn ci_seeds_part_4_hold_every_invariant() {
    run_part(3);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [7, 42, 1_000_003, u64::MAX] {
        let options = Options { seed, nodes: None, steps: 400 };
        let mut first_log = Vec::new();
        let first = run(&options, Some(&mut |line: &str| first_log.push(line.to_owned())));
        let second = run(&options, None);
        assert_eq!(first.hash, second.hash, "seed {seed} ran differently twice");
        assert_eq!(first.steps, second.steps);
        assert_eq!(first.faults, second.faults);
        assert_eq!(first.events_acked, second.events_acked);
        assert!(first_log.len() > 10, "seed {seed} logged its events");
        let other = run(&Options { seed: seed.wrapping_add(1), ..options }, None);
        assert_ne!(first.hash, other.hash, "another seed runs differently");
    }
}

#[test]
fn both_cluster_sizes_are_simulated() {
    for nodes in [3, 5] {
        let report = run(&Options { seed: 11, nodes: Some(nodes), steps: 200 }, None);
        assert_eq!(report.profile.nodes, nodes);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(report.recovery_steps.is_some(), "the cluster committed a write after the faults");
    }
}
