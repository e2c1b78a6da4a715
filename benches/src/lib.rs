//! `coffer-benches` owns Coffer's measurements: the criterion
//! micro-benchmarks (`benches/`) and the year-end-peak load generator
//! ([`loadgen`], run as `coffer bench` through the `coffer-bench`
//! executable). This library holds the workloads they share.
//!
//! Workloads are deterministic: a seeded SplitMix64 decides every id and
//! amount, so two runs with one seed apply the same batches.

pub mod loadgen;

use coffer_ledger::{
    Account, AccountId, AccountKind, Ledger, LedgerId, MemoryStore, Operation, OperationResults, StateMachine,
    Transfer, TransferId, TransferKind, BATCH_EVENTS_MAX,
};

/// The ledger every workload posts to: KRW, scale 0.
pub const LEDGER: LedgerId = LedgerId(1);

/// A small, fast, seeded random source (SplitMix64). Not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A source that always yields the same sequence for `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`), by multiply-shift (bias below 2^-32 for our bounds).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Which accounts a workload's transfers touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Debit and credit accounts drawn uniformly from all accounts (journals).
    Uniform,
    /// Every transfer debits one of `hot` cash accounts (a receipt into a
    /// fund's cash account) and credits a uniformly drawn other account.
    Hot {
        /// How many hot cash accounts.
        hot: u32,
    },
}

/// A treasury-shaped workload: one ledger, `accounts` accounts (the first
/// `hot` of them cash accounts in the hot distribution), and batches of
/// fresh transfers.
#[derive(Clone, Debug)]
pub struct Workload {
    accounts: u32,
    distribution: Distribution,
    random: SplitMix64,
    next_transfer_id: u128,
    next_timestamp: u64,
}

impl Workload {
    /// A workload over `accounts` accounts (at least 2, and more than the hot ones).
    pub fn new(accounts: u32, distribution: Distribution, seed: u64) -> Self {
        Self { accounts, distribution, random: SplitMix64::new(seed), next_transfer_id: 1, next_timestamp: 1 }
    }

    fn timestamp(&mut self, events: usize) -> u64 {
        let timestamp = self.next_timestamp;
        self.next_timestamp += events.max(1) as u64;
        timestamp
    }

    /// A state machine with the workload's ledger and accounts created.
    pub fn setup(&mut self) -> StateMachine<MemoryStore> {
        self.setup_in(MemoryStore::new())
    }

    /// Like [`Self::setup`], reusing `store`'s allocations (it is cleared first).
    pub fn setup_in(&mut self, mut store: MemoryStore) -> StateMachine<MemoryStore> {
        store.clear();
        let mut ledger = StateMachine::new(store);
        for (timestamp, operation) in self.setup_operations() {
            let results = ledger.apply(timestamp, &operation).expect("timestamps increase");
            let valid = match results {
                OperationResults::Ledgers(results) => results.iter().all(|result| result.is_success()),
                OperationResults::Accounts(results) => results.iter().all(|result| result.is_success()),
                _ => false,
            };
            assert!(valid, "the workload's ledger and accounts are valid");
        }
        ledger
    }

    /// The operations that create the workload's ledger and accounts, with
    /// the timestamps to apply them at, for any store.
    pub fn setup_operations(&mut self) -> Vec<(u64, Operation)> {
        let krw = Ledger::new(LEDGER, "KRW", 0, "Won");
        let mut operations = vec![(self.timestamp(1), Operation::CreateLedgers(vec![krw]))];
        let hot = match self.distribution {
            Distribution::Uniform => 0,
            Distribution::Hot { hot } => hot,
        };
        let accounts: Vec<Account> = (1..=self.accounts)
            .map(|id| Account {
                id: AccountId(u128::from(id)),
                ledger: LEDGER,
                code: 1,
                kind: if id <= hot { AccountKind::Cash } else { AccountKind::Other },
                ..Default::default()
            })
            .collect();
        for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
            operations.push((self.timestamp(chunk.len()), Operation::CreateAccounts(chunk.to_vec())));
        }
        operations
    }

    /// The next batch of `events` new transfers, with the timestamp to apply it at.
    pub fn next_batch(&mut self, events: usize) -> (u64, Vec<Transfer>) {
        let accounts = u64::from(self.accounts);
        let mut batch = Vec::with_capacity(events);
        for _ in 0..events {
            let (debit, credit, kind) = match self.distribution {
                Distribution::Uniform => {
                    let debit = 1 + self.random.below(accounts);
                    let credit = 1 + (debit + self.random.below(accounts - 1)) % accounts;
                    (debit, credit, TransferKind::Journal)
                }
                Distribution::Hot { hot } => {
                    let hot = u64::from(hot);
                    let debit = 1 + self.random.below(hot);
                    let credit = 1 + hot + self.random.below(accounts - hot);
                    (debit, credit, TransferKind::Receipt)
                }
            };
            batch.push(Transfer {
                id: TransferId(self.next_transfer_id),
                debit_account_id: AccountId(u128::from(debit)),
                credit_account_id: AccountId(u128::from(credit)),
                amount: u128::from(1 + self.random.below(1_000_000)),
                ledger: LEDGER,
                code: 1,
                kind,
                ..Default::default()
            });
            self.next_transfer_id += 1;
        }
        (self.timestamp(events), batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_transfer_is_created() {
        for distribution in [Distribution::Uniform, Distribution::Hot { hot: 10 }] {
            let mut workload = Workload::new(100, distribution, 7);
            let mut ledger = workload.setup();
            for _ in 0..3 {
                let (timestamp, batch) = workload.next_batch(500);
                let results = ledger.create_transfers(timestamp, &batch).unwrap();
                assert!(results.iter().all(|result| *result == coffer_ledger::CreateTransferResult::Created));
            }
        }
    }

    #[test]
    fn hot_transfers_debit_only_hot_cash_accounts() {
        let mut workload = Workload::new(1_000, Distribution::Hot { hot: 10 }, 1);
        let (_, batch) = workload.next_batch(1_000);
        assert!(batch.iter().all(|t| t.debit_account_id.0 <= 10 && t.credit_account_id.0 > 10));
    }

    #[test]
    fn same_seed_same_batches() {
        let batch = |seed| Workload::new(50, Distribution::Uniform, seed).next_batch(100);
        assert_eq!(batch(3), batch(3));
        assert_ne!(batch(3), batch(4));
    }
}
