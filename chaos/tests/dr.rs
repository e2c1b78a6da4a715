//! The two-region disaster-recovery simulator in CI: a fixed range of seeds
//! must hold every DR invariant, each planted bug must be caught, and a
//! seed must replay exactly. A longer run is one command:
//! `coffer-chaos dr --seeds 10000` (and `--plant NAME` for a planted bug).

use coffer_chaos::dr::{run_dr, DrOptions, DrSummary};
use coffer_dr::core::Planted;

/// Seeds CI runs: `0 .. CI_SEEDS`, in [`CI_PARTS`] tests.
const CI_SEEDS: u64 = 200;
const CI_PARTS: u64 = 4;
/// Steps (10 ms ticks) of each seed's fault phase in CI.
const CI_STEPS: u64 = 1_500;
/// Seeds each planted bug runs over; every bug must fail at least one.
const PLANTED_SEEDS: u64 = 25;

fn run_seeds(seeds: std::ops::Range<u64>, planted: Planted) -> DrSummary {
    let mut summary = DrSummary::default();
    for seed in seeds {
        let options = DrOptions { seed, steps: CI_STEPS, planted };
        summary.add(&run_dr(&options, None), &options);
    }
    summary
}

fn run_part(part: u64) {
    let per_part = CI_SEEDS / CI_PARTS;
    let summary = run_seeds(part * per_part..(part + 1) * per_part, Planted::None);
    println!("{summary}");
    assert!(summary.failing.is_empty(), "{} DR seeds failed:\n{summary}", summary.failing.len());
    for operation in ["switchover", "failover", "failback", "re-seed", "partition", "region crash"] {
        assert!(summary.events.get(operation).is_some_and(|&count| count > 0), "no {operation} in:\n{summary}");
    }
    assert!(summary.acknowledged > 1_000, "the seeds did work:\n{summary}");
}

#[test]
fn dr_seeds_part_1_hold_every_invariant() {
    run_part(0);
}

#[test]
fn dr_seeds_part_2_hold_every_invariant() {
    run_part(1);
}

#[test]
fn dr_seeds_part_3_hold_every_invariant() {
    run_part(2);
}

#[test]
fn dr_seeds_part_4_hold_every_invariant() {
    run_part(3);
}

#[test]
fn every_planted_bug_fails_seeds_and_names_its_checker() {
    let expected = [
        (Planted::PromoteWithoutLease, "[split brain]"),
        (Planted::AckAfterLeaseLapse, "[split brain]"),
        (Planted::FailbackSkipsDivergence, "[digest]"),
    ];
    for (bug, checker) in expected {
        let summary = run_seeds(0..PLANTED_SEEDS, bug);
        println!("{bug:?}: {} of {PLANTED_SEEDS} seeds failed", summary.failing.len());
        assert!(!summary.failing.is_empty(), "planted {bug:?} went unnoticed:\n{summary}");
        assert!(
            summary.failing.iter().any(|(_, failure)| failure.contains(checker) && failure.contains("--plant")),
            "{bug:?} is caught by {checker}, with a replay command:\n{summary}"
        );
    }
}

#[test]
fn the_same_dr_seed_replays_the_same_run() {
    for seed in [3, 1_000_003] {
        let options = DrOptions { seed, steps: 600, planted: Planted::None };
        let mut log = Vec::new();
        let first = run_dr(&options, Some(&mut |line: &str| log.push(line.to_owned())));
        let second = run_dr(&options, None);
        assert_eq!((first.hash, first.steps, first.acknowledged), (second.hash, second.steps, second.acknowledged));
        assert!(log.len() > 10 && log[0].contains(&format!("seed {seed}")), "seed {seed} logged its events");
        let other = run_dr(&DrOptions { seed: seed + 1, ..options }, None);
        assert_ne!(first.hash, other.hash, "another seed runs differently");
    }
}
