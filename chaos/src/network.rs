//! The simulated network between the nodes: every Raft message is delayed
//! by a number of steps drawn per message (so messages overtake each other:
//! reordering), may be dropped or duplicated when sent, and is dropped on
//! arrival if its link is cut. Links are cut one way at a time, so a
//! partition may be symmetric or asymmetric.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use raft::prelude::Message;

use crate::random::Random;
use crate::storage::SimSnapshot;

/// Messages in flight before the network drops new ones (a bounded queue,
/// as the transport's per-peer queues are).
pub const IN_FLIGHT_MAX: usize = 65_536;

/// A message in flight; a snapshot message carries the snapshot's data,
/// read from the sender when it was sent (as the transport streams the
/// sender's snapshot directory beside the message).
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The Raft message.
    pub message: Message,
    /// The data of a snapshot message.
    pub snapshot: Option<Rc<SimSnapshot>>,
}

/// How the network treats messages, drawn per run (see `swarm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// The longest delay, in steps (every message takes at least one).
    pub delay_max_steps: u64,
}

impl LinkFaults {
    /// A healthy network: nothing lost, short delays.
    pub const HEALTHY: Self = Self { drop: 0.0, duplicate: 0.0, delay_max_steps: 2 };
}

/// What happened to one message when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// It is on its way (twice if `duplicated`).
    Queued {
        /// Whether a second copy is on its way too.
        duplicated: bool,
    },
    /// It was lost.
    Dropped,
}

/// Counters of the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages delivered to a running node.
    pub delivered: u64,
    /// Messages lost when sent.
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Messages lost to a cut link or a stopped node.
    pub undeliverable: u64,
}

/// The network. See the module docs.
#[derive(Debug, Default)]
pub struct Network {
    /// Messages in flight by (delivery step, sequence): delivered in that
    /// order, which is decided by the seed alone.
    in_flight: BTreeMap<(u64, u64), Envelope>,
    next_sequence: u64,
    /// Directed links (from, to) that lose everything.
    cut: BTreeSet<(u64, u64)>,
    /// What happened so far.
    pub stats: NetworkStats,
}

impl Network {
    /// Sends `envelope` at `step`.
    pub fn send(&mut self, envelope: Envelope, step: u64, faults: &LinkFaults, random: &mut Random) -> Sent {
        self.stats.sent += 1;
        if random.chance(faults.drop) || self.in_flight.len() >= IN_FLIGHT_MAX {
            self.stats.dropped += 1;
            return Sent::Dropped;
        }
        let duplicated = random.chance(faults.duplicate);
        if duplicated {
            self.stats.duplicated += 1;
            self.enqueue(envelope.clone(), step, faults, random);
        }
        self.enqueue(envelope, step, faults, random);
        Sent::Queued { duplicated }
    }

    fn enqueue(&mut self, envelope: Envelope, step: u64, faults: &LinkFaults, random: &mut Random) {
        let delay = random.between(1, faults.delay_max_steps.max(1));
        self.in_flight.insert((step + delay, self.next_sequence), envelope);
        self.next_sequence += 1;
    }

    /// Takes every message due at or before `step`, in delivery order.
    pub fn due(&mut self, step: u64) -> Vec<Envelope> {
        let later = self.in_flight.split_off(&(step + 1, 0));
        let due = std::mem::replace(&mut self.in_flight, later);
        due.into_values().collect()
    }

    /// Whether messages from `from` to `to` are lost.
    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&mut self, from: u64, to: u64) {
        self.cut.insert((from, to));
    }

    /// Cuts every link between `group` and the other `nodes`, both ways.
    pub fn partition(&mut self, group: &[u64], nodes: &[u64]) {
        for &inside in group {
            for &outside in nodes.iter().filter(|node| !group.contains(node)) {
                self.cut(inside, outside);
                self.cut(outside, inside);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(to: u64) -> Envelope {
        Envelope { message: Message { from: 1, to, ..Default::default() }, snapshot: None }
    }

    #[test]
    fn messages_arrive_after_their_delay_in_a_seeded_order() {
        let faults = LinkFaults { drop: 0.0, duplicate: 0.0, delay_max_steps: 5 };
        let run = |seed| {
            let mut network = Network::default();
            let mut random = Random::new(seed);
            for to in 2..20 {
                network.send(envelope(to), 0, &faults, &mut random);
            }
            assert!(network.due(0).is_empty(), "nothing arrives in the step it was sent");
            (1..=5).flat_map(|step| network.due(step)).map(|e| e.message.to).collect::<Vec<_>>()
        };
        let order = run(3);
        assert_eq!(order.len(), 18);
        assert_eq!(order, run(3));
        assert_ne!(order, (2..20).collect::<Vec<_>>(), "delays reorder messages");
    }

    #[test]
    fn drops_and_duplicates_follow_the_rates() {
        let mut network = Network::default();
        let mut random = Random::new(1);
        let faults = LinkFaults { drop: 1.0, duplicate: 0.0, delay_max_steps: 1 };
        assert_eq!(network.send(envelope(2), 0, &faults, &mut random), Sent::Dropped);
        let faults = LinkFaults { drop: 0.0, duplicate: 1.0, delay_max_steps: 1 };
        assert_eq!(network.send(envelope(2), 0, &faults, &mut random), Sent::Queued { duplicated: true });
        assert_eq!(network.due(1).len(), 2);
    }

    #[test]
    fn partitions_cut_both_ways_and_single_cuts_one_way() {
        let mut network = Network::default();
        network.partition(&[1], &[1, 2, 3]);
        assert!(network.is_cut(1, 2) && network.is_cut(2, 1) && network.is_cut(3, 1));
        assert!(!network.is_cut(2, 3));
        network.heal();
        network.cut(2, 3);
        assert!(network.is_cut(2, 3) && !network.is_cut(3, 2));
    }
}
