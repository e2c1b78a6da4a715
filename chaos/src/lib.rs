//! `coffer-chaos`: Coffer proven under faults.
//!
//! The **deterministic simulator** ([`sim`]) runs the real consensus core
//! ([`coffer_consensus::Replica`]) and the real ledger state machine for 3
//! or 5 nodes in one thread, over a simulated disk that loses unsynced
//! writes and detects damaged records ([`storage`]), a simulated network
//! that drops, delays, reorders, duplicates and partitions ([`network`]),
//! and a simulated clock. Simulated clients run a bank workload
//! ([`workload`]) and the checkers ([`checker`]) hold every acknowledgement
//! and every replica to the ledger's invariants. Each seed draws its own
//! fault mix ([`swarm`]); one seeded random source ([`random`]) decides
//! everything, so a seed replays its run exactly: `coffer-chaos sim --seed S`
//! (the `coffer-chaos` binary; [`summary`] totals many seeds).
//!
//! The **disaster-recovery simulator** ([`dr`]) runs two regions of real
//! replicas joined by shipping, with the DR core (`coffer_dr::core`), under
//! cross-region partitions, region crashes, clock drift and the operator's
//! switchovers, failovers, failbacks and re-seeds: `coffer-chaos dr --seed S`.
//!
//! The real-process nemesis is in `coffer-tests` (`tests/src/nemesis/`): it
//! drives real `coffer node` processes and holds their stores to the same
//! [`checker`], with the same [`workload`].

pub mod checker;
mod crc;
pub mod dr;
pub mod network;
pub mod random;
pub mod sim;
pub mod storage;
pub mod summary;
pub mod swarm;
pub mod workload;

pub use checker::Violation;
pub use sim::{run, Options, Report, LIVENESS_STEPS_MAX, PROBE_STEPS_MAX, TICK_NS};
pub use swarm::FaultProfile;
