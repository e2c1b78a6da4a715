//! Swarm testing: each seed draws its own fault profile, so different seeds
//! stress different mixes — some lose no message, some partition heavily,
//! some crash nodes over and over, some corrupt disks — instead of every
//! seed running one average mix that finds only average bugs.

use std::fmt;

use crate::network::LinkFaults;
use crate::random::Random;

/// Fault rates of one run. Rates named `*_per_step` are probabilities per
/// simulated step (one tick).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultProfile {
    /// Founding voters: 3 or 5.
    pub nodes: usize,
    /// Simulated clients.
    pub clients: u32,
    /// Per-message faults while faults run.
    pub links: LinkFaults,
    /// A new partition (isolate a node, split the cluster, or cut one link
    /// one way).
    pub partition_per_step: f64,
    /// All links restored.
    pub heal_per_step: f64,
    /// A running node crashes.
    pub crash_per_step: f64,
    /// Share of crashes that are power losses (unsynced writes lost);
    /// the others are process crashes (unsynced writes kept).
    pub power_loss_share: f64,
    /// Each crashed node restarts.
    pub restart_per_step: f64,
    /// Probability that a crashed node's disk is then damaged.
    pub damage_per_crash: f64,
    /// The leader is asked to hand over to another voter.
    pub leader_transfer_per_step: f64,
    /// A voter is replaced by a new node (remove, add learner, promote).
    pub replace_per_step: f64,
    /// A node's clock misses a tick.
    pub tick_skip_per_step: f64,
    /// Applied entries before a node compacts its log (small: snapshots).
    pub log_gc_threshold_entries: u64,
    /// A client idle this step sends a new request.
    pub request_per_step: f64,
    /// Share of client requests that are reads.
    pub read_share: f64,
}

/// One of a few levels of a rate: off, low, or high.
fn level(random: &mut Random, off: f64, low: f64, high: f64) -> f64 {
    match random.below(100) {
        p if (p as f64) < off * 100.0 => 0.0,
        p if p % 2 == 0 => low * (0.5 + random.unit()),
        _ => high * (0.5 + random.unit()),
    }
}

impl FaultProfile {
    /// Draws a profile; `nodes` fixes the cluster size if given.
    pub fn draw(random: &mut Random, nodes: Option<usize>) -> Self {
        let nodes = nodes.unwrap_or(if random.chance(0.5) { 3 } else { 5 });
        let links = LinkFaults {
            drop: level(random, 0.4, 0.02, 0.15),
            duplicate: level(random, 0.5, 0.02, 0.1),
            delay_max_steps: random.pick(&[1, 2, 3, 5, 8]).unwrap_or(2),
        };
        Self {
            nodes,
            clients: random.between(2, 6) as u32,
            links,
            partition_per_step: level(random, 0.35, 0.003, 0.02),
            heal_per_step: 0.01 + random.unit() * 0.05,
            crash_per_step: level(random, 0.3, 0.002, 0.01),
            power_loss_share: random.pick(&[0.0, 0.5, 1.0]).unwrap_or(0.5),
            restart_per_step: 0.01 + random.unit() * 0.04,
            damage_per_crash: level(random, 0.5, 0.1, 0.4),
            leader_transfer_per_step: level(random, 0.5, 0.002, 0.01),
            replace_per_step: level(random, 0.6, 0.001, 0.004),
            tick_skip_per_step: level(random, 0.6, 0.05, 0.3),
            log_gc_threshold_entries: random.pick(&[8, 32, 128, 4_096]).unwrap_or(32),
            request_per_step: 0.1 + random.unit() * 0.4,
            read_share: 0.1 + random.unit() * 0.3,
        }
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, {} clients; drop {:.3} duplicate {:.3} delay ≤{} steps; partition {:.4} heal {:.3}; crash {:.4} \
             (power loss {:.0}%) restart {:.3} damage {:.2}; leader transfer {:.4}; replace {:.4}; tick skip {:.2}; \
             log gc every {} entries",
            self.nodes,
            self.clients,
            self.links.drop,
            self.links.duplicate,
            self.links.delay_max_steps,
            self.partition_per_step,
            self.heal_per_step,
            self.crash_per_step,
            self.power_loss_share * 100.0,
            self.restart_per_step,
            self.damage_per_crash,
            self.leader_transfer_per_step,
            self.replace_per_step,
            self.tick_skip_per_step,
            self.log_gc_threshold_entries,
        )
    }
}
