//! The generator's own record of what the cluster acknowledged: every
//! account's four balances recomputed from the acknowledged transfers, and
//! a uniform random sample of those transfers to look up after the run.
//!
//! Memory is bounded by the layout (four `u128` per account) and the sample
//! size, not by the length of the run.

use coffer_ledger::{CreateTransferResult, Transfer, TransferFlags};

use super::workload::Layout;
use crate::SplitMix64;

/// Unexpected results kept as examples for the report.
pub const FAILURE_EXAMPLES_MAX: usize = 10;

/// An account's balances (the ledger's one definition, shared by every
/// checker).
pub use coffer_ledger::invariants::Balances;

/// A uniform sample of a stream (Vitter's algorithm R), seeded.
#[derive(Clone, Debug)]
pub struct Reservoir<T> {
    capacity: usize,
    seen: u64,
    items: Vec<T>,
    random: SplitMix64,
}

impl<T> Reservoir<T> {
    /// A sample of at most `capacity` items.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self { capacity, seen: 0, items: Vec::with_capacity(capacity), random: SplitMix64::new(seed) }
    }

    /// Offers the next item of the stream.
    pub fn offer(&mut self, item: T) {
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push(item);
        } else {
            let slot = self.random.below(self.seen);
            if let Some(kept) = usize::try_from(slot).ok().and_then(|slot| self.items.get_mut(slot)) {
                *kept = item;
            }
        }
    }

    /// The sample.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Items offered so far.
    pub const fn seen(&self) -> u64 {
        self.seen
    }
}

/// What acknowledging one batch found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acknowledged {
    /// Transfers that succeeded (`created`, or `exists` for a retried one).
    pub committed: u64,
    /// Transfers with any other result.
    pub failed: u64,
    /// Pending transfers now acknowledged (to be posted or voided later).
    pub pendings: Vec<Transfer>,
}

/// The record of every acknowledged transfer's effect.
#[derive(Clone, Debug)]
pub struct Expected {
    layout: Layout,
    balances: Vec<Balances>,
    sample: Reservoir<Transfer>,
    committed: u64,
    failed: u64,
    failure_examples: Vec<String>,
}

impl Expected {
    /// An empty record over `layout`, sampling up to `sample` transfers.
    pub fn new(layout: Layout, sample: usize, seed: u64) -> Self {
        Self {
            layout,
            balances: vec![Balances::default(); layout.account_count()],
            sample: Reservoir::new(sample, seed ^ 0x7361_6D70_6C65),
            committed: 0,
            failed: 0,
            failure_examples: Vec::new(),
        }
    }

    /// Records the cluster's answer to `transfers`: one result each.
    pub fn acknowledge(&mut self, transfers: &[Transfer], results: &[CreateTransferResult]) -> Acknowledged {
        let mut acknowledged = Acknowledged::default();
        if transfers.len() != results.len() {
            // The answer cannot be matched to the transfers: none is known.
            acknowledged.failed = transfers.len() as u64;
            self.failed += acknowledged.failed;
            self.note_failure(format!("{} results for a batch of {} transfers", results.len(), transfers.len()));
            return acknowledged;
        }
        for (transfer, result) in transfers.iter().zip(results) {
            if !result.is_success() {
                acknowledged.failed += 1;
                self.note_failure(format!("transfer {}: {result}", transfer.id));
                continue;
            }
            if !self.apply(transfer) {
                acknowledged.failed += 1;
                continue;
            }
            self.sample.offer(*transfer);
            acknowledged.committed += 1;
            if transfer.flags.contains(TransferFlags::PENDING) {
                acknowledged.pendings.push(*transfer);
            }
        }
        self.committed += acknowledged.committed;
        self.failed += acknowledged.failed;
        acknowledged
    }

    fn note_failure(&mut self, example: String) {
        if self.failure_examples.len() < FAILURE_EXAMPLES_MAX {
            self.failure_examples.push(example);
        }
    }

    /// Applies one acknowledged transfer's effect on its two accounts;
    /// `false` (and an example noted) if it names an account not in the layout.
    fn apply(&mut self, transfer: &Transfer) -> bool {
        let (Some(debit), Some(credit)) =
            (self.layout.position(transfer.debit_account_id), self.layout.position(transfer.credit_account_id))
        else {
            self.note_failure(format!("transfer {} names an account the run did not create", transfer.id));
            return false;
        };
        let amount = transfer.amount;
        let flags = transfer.flags;
        if flags.contains(TransferFlags::PENDING) {
            self.balances[debit].debits_pending += amount;
            self.balances[credit].credits_pending += amount;
        } else if flags.is_post_or_void() {
            // Generated posts and voids carry the pending transfer's whole
            // amount: the reservation is released, and a post posts it.
            self.balances[debit].debits_pending -= amount;
            self.balances[credit].credits_pending -= amount;
            if flags.contains(TransferFlags::POST_PENDING) {
                self.balances[debit].debits_posted += amount;
                self.balances[credit].credits_posted += amount;
            }
        } else {
            self.balances[debit].debits_posted += amount;
            self.balances[credit].credits_posted += amount;
        }
        true
    }

    /// The expected balances of account `position`.
    pub fn balances(&self, position: usize) -> Balances {
        self.balances[position]
    }

    /// The expected totals of the accounts of ledger `ledger_index`.
    pub fn ledger_totals(&self, ledger_index: u32) -> Balances {
        let per_ledger = self.layout.accounts_per_ledger as usize;
        let start = ledger_index as usize * per_ledger;
        let mut totals = Balances::default();
        for balances in &self.balances[start..start + per_ledger] {
            totals.add(balances);
        }
        totals
    }

    /// The sampled acknowledged transfers.
    pub fn sample(&self) -> &[Transfer] {
        self.sample.items()
    }

    /// Transfers acknowledged as successful.
    pub const fn committed(&self) -> u64 {
        self.committed
    }

    /// Transfers answered with a failure.
    pub const fn failed(&self) -> u64 {
        self.failed
    }

    /// A few of the failures, for the report.
    pub fn failure_examples(&self) -> &[String] {
        &self.failure_examples
    }
}

#[cfg(test)]
mod tests {
    use coffer_ledger::AccountId;

    use super::*;
    use crate::loadgen::workload::IdSpace;

    fn transfer(layout: &Layout, id: u64, debit: u32, credit: u32, amount: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            id: layout.ids.transfer(id),
            debit_account_id: layout.ids.account(0, debit),
            credit_account_id: layout.ids.account(0, credit),
            amount,
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn balances_follow_posted_pending_posts_and_voids() {
        let layout = Layout::new(IdSpace::new(1), 1, 10, 0);
        let mut expected = Expected::new(layout, 10, 1);
        let created = CreateTransferResult::Created;
        let batch = [
            transfer(&layout, 1, 0, 5, 100, TransferFlags::NONE),
            transfer(&layout, 2, 0, 6, 30, TransferFlags::PENDING),
            transfer(&layout, 3, 0, 7, 20, TransferFlags::PENDING),
        ];
        let first = expected.acknowledge(&batch, &[created; 3]);
        assert_eq!((first.committed, first.failed, first.pendings.len()), (3, 0, 2));
        let resolutions = [
            transfer(&layout, 4, 0, 6, 30, TransferFlags::POST_PENDING),
            transfer(&layout, 5, 0, 7, 20, TransferFlags::VOID_PENDING),
            transfer(&layout, 6, 0, 8, 1, TransferFlags::NONE),
        ];
        let second = expected.acknowledge(&resolutions, &[created, CreateTransferResult::Exists, created]);
        assert_eq!((second.committed, second.failed), (3, 0));
        let balances = |index| expected.balances(layout.position(layout.ids.account(0, index)).unwrap());
        assert_eq!(balances(0), Balances { debits_posted: 131, ..Default::default() });
        assert_eq!(balances(6), Balances { credits_posted: 30, ..Default::default() });
        assert_eq!(balances(7), Balances::default());
        let totals = expected.ledger_totals(0);
        assert_eq!(totals.debits_posted, totals.credits_posted);
        assert_eq!((expected.committed(), expected.sample().len()), (6, 6));
    }

    #[test]
    fn failures_are_counted_and_change_nothing() {
        let layout = Layout::new(IdSpace::new(1), 1, 10, 0);
        let mut expected = Expected::new(layout, 10, 1);
        let batch = [transfer(&layout, 1, 0, 5, 100, TransferFlags::NONE)];
        let acknowledged = expected.acknowledge(&batch, &[CreateTransferResult::ExistsWithDifferentAmount]);
        assert_eq!((acknowledged.committed, acknowledged.failed), (0, 1));
        assert_eq!(expected.ledger_totals(0), Balances::default());
        assert!(expected.failure_examples()[0].contains("exists_with_different_amount"));
        let stray = Transfer { debit_account_id: AccountId(1), ..batch[0] };
        let acknowledged = expected.acknowledge(&[stray], &[CreateTransferResult::Created]);
        assert_eq!((acknowledged.committed, acknowledged.failed), (0, 1));
        assert!(expected.failure_examples()[1].contains("did not create"));
        let short = expected.acknowledge(&batch, &[]);
        assert_eq!((short.committed, short.failed, expected.failed()), (0, 1, 3));
    }

    #[test]
    fn the_reservoir_keeps_a_uniform_sample() {
        let mut hits = [0_u32; 10];
        for seed in 0..2_000 {
            let mut reservoir = Reservoir::new(2, seed);
            for item in 0..10 {
                reservoir.offer(item);
            }
            assert_eq!((reservoir.items().len(), reservoir.seen()), (2, 10));
            for &item in reservoir.items() {
                hits[item] += 1;
            }
        }
        // Each item is kept with probability 2/10: 400 of 2,000 runs.
        assert!(hits.iter().all(|&hits| (300..500).contains(&hits)), "{hits:?}");
    }
}
