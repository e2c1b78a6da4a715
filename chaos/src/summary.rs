//! The totals of many runs, as `coffer-chaos sim --seeds N` and the CI test
//! print them.

use std::collections::BTreeMap;
use std::fmt;

use crate::checker::Violation;
use crate::sim::{
    Options, Report, DAMAGE_REFUSED, MESSAGE_DROPPED, MESSAGE_DUPLICATED, TICK_SKIPPED, UNFLUSHED_LOST, WRITE_LOST,
};

/// Counts listed apart from the schedule's faults.
const PER_MESSAGE_OR_TICK: [&str; 6] =
    [MESSAGE_DROPPED, MESSAGE_DUPLICATED, TICK_SKIPPED, WRITE_LOST, UNFLUSHED_LOST, DAMAGE_REFUSED];

/// Totals over seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds of 3 and of 5 founding voters.
    pub clusters: BTreeMap<usize, u64>,
    /// Steps run.
    pub steps: u64,
    /// Simulated time, in nanoseconds.
    pub simulated_ns: u64,
    /// Write requests acknowledged.
    pub requests_acked: u64,
    /// Transfer results acknowledged.
    pub events_acked: u64,
    /// Distinct transfer ids acknowledged.
    pub transfers_acked: u64,
    /// Reads checked.
    pub reads_checked: u64,
    /// Replica checks run.
    pub replica_checks: u64,
    /// The slowest recovery (steps from the end of faults to a committed
    /// probe write).
    pub recovery_steps_max: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Violations, with their seed.
    pub violations: Vec<(u64, Violation)>,
    /// Seeds with a violation.
    pub failing_seeds: Vec<u64>,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, report: &Report) {
        self.seeds += 1;
        *self.clusters.entry(report.profile.nodes).or_default() += 1;
        self.steps += report.steps;
        self.simulated_ns += report.simulated_ns;
        self.requests_acked += report.requests_acked;
        self.events_acked += report.events_acked;
        self.transfers_acked += report.transfers_acked;
        self.reads_checked += report.reads_checked;
        self.replica_checks += report.replica_checks;
        self.recovery_steps_max = self.recovery_steps_max.max(report.recovery_steps.unwrap_or(0));
        for (kind, count) in &report.faults {
            *self.faults.entry(kind).or_default() += count;
        }
        if !report.violations.is_empty() {
            self.failing_seeds.push(report.seed);
            self.violations.extend(report.violations.iter().map(|violation| (report.seed, violation.clone())));
        }
    }

    /// Adds another summary's runs.
    pub fn merge(&mut self, other: &Self) {
        self.seeds += other.seeds;
        for (nodes, count) in &other.clusters {
            *self.clusters.entry(*nodes).or_default() += count;
        }
        self.steps += other.steps;
        self.simulated_ns += other.simulated_ns;
        self.requests_acked += other.requests_acked;
        self.events_acked += other.events_acked;
        self.transfers_acked += other.transfers_acked;
        self.reads_checked += other.reads_checked;
        self.replica_checks += other.replica_checks;
        self.recovery_steps_max = self.recovery_steps_max.max(other.recovery_steps_max);
        for (kind, count) in &other.faults {
            *self.faults.entry(kind).or_default() += count;
        }
        self.violations.extend(other.violations.iter().cloned());
        self.failing_seeds.extend(&other.failing_seeds);
    }

    /// Faults of the schedule injected: crashes, restarts, disk damage,
    /// partitions, heals, leader transfers, node replacements (not counting
    /// per-message and per-tick faults).
    pub fn faults_total(&self) -> u64 {
        self.faults.iter().filter(|(kind, _)| !PER_MESSAGE_OR_TICK.contains(kind)).map(|(_, count)| count).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clusters: Vec<String> = self.clusters.iter().map(|(n, c)| format!("{c} of {n} nodes")).collect();
        writeln!(f, "seeds:        {} ({})", self.seeds, clusters.join(", "))?;
        writeln!(f, "simulated:    {:.2} hours ({} steps of 10 ms)", self.simulated_ns as f64 / 3.6e12, self.steps)?;
        writeln!(
            f,
            "operations:   {} write requests acknowledged ({} transfer results, {} distinct transfers), {} reads \
             checked, {} replica checks",
            self.requests_acked, self.events_acked, self.transfers_acked, self.reads_checked, self.replica_checks
        )?;
        writeln!(
            f,
            "recovery:     slowest {} steps from the end of faults to a committed write",
            self.recovery_steps_max
        )?;
        writeln!(f, "faults:       {} scheduled", self.faults_total())?;
        for (kind, count) in self.faults.iter().filter(|(kind, _)| !PER_MESSAGE_OR_TICK.contains(kind)) {
            writeln!(f, "  {kind:<28} {count}")?;
        }
        writeln!(f, "              and per message, per tick, and their consequences:")?;
        for (kind, count) in self.faults.iter().filter(|(kind, _)| PER_MESSAGE_OR_TICK.contains(kind)) {
            writeln!(f, "  {kind:<28} {count}")?;
        }
        write!(f, "violations:   {}", self.violations.len())?;
        for (seed, violation) in &self.violations {
            write!(f, "\n  seed {seed}: {violation}")?;
        }
        Ok(())
    }
}

/// The command that replays `seed` with `options`.
pub fn replay_command(seed: u64, options: &Options) -> String {
    let nodes = options.nodes.map(|nodes| format!(" --nodes {nodes}")).unwrap_or_default();
    format!("coffer-chaos sim --seed {seed} --steps {}{nodes} --log", options.steps)
}
