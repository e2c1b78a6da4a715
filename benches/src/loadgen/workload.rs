//! What the load generator sends: ids, the accounts it creates, and batches
//! of transfers drawn by the mix and the distribution.
//!
//! Every id is a function of the seed and a sequence number
//! ([`IdSpace`]), so a batch sent again carries identical ids and the ledger
//! answers `exists` for what already applied. The seed's tag fills the high
//! 64 bits of every account and transfer id, so runs with other seeds never
//! collide on one cluster.
//!
//! Accounts: in each ledger, the first `cash_per_ledger` are cash accounts
//! (code [`CASH_CODE`]), the rest other accounts (code [`OTHER_CODE`]); no
//! account has a limit flag, so no generated transfer can be refused. The
//! *cash side* of a transfer is the cash account an expenditure pays from,
//! a receipt or journal is debited to, or a cash transfer moves from; the
//! distribution decides it (in `hot`, one of the first `hot` cash accounts).

use std::collections::VecDeque;

use coffer_ledger::{
    Account, AccountFlags, AccountId, AccountKind, Ledger, LedgerId, Transfer, TransferFlags, TransferId, TransferKind,
};

use super::options::{DistributionConfig, Mix, Slot};
use crate::SplitMix64;

/// The first ledger id: ledger `i` (from 0) is `LEDGER_ID_BASE + i`.
pub const LEDGER_ID_BASE: u32 = 9_001;
/// The ledgers' currency (scale 0: amounts are whole won).
pub const CURRENCY: &str = "KRW";
/// The ledgers' name.
pub const LEDGER_NAME: &str = "coffer bench";
/// Chart-of-accounts code of cash accounts.
pub const CASH_CODE: u16 = 101;
/// Chart-of-accounts code of other accounts.
pub const OTHER_CODE: u16 = 501;
/// A tenth of the accounts are cash accounts...
pub const CASH_SHARE_DIVISOR: u32 = 10;
/// ...but at least two (a cash transfer needs two).
pub const CASH_ACCOUNTS_MIN: u32 = 2;
/// Transfer amounts are drawn from `1..=AMOUNT_MAX` won.
pub const AMOUNT_MAX: u64 = 10_000_000;
/// Of every four resolutions of a pending transfer, three post and one voids.
const POSTS_PER_FOUR_RESOLUTIONS: u64 = 3;
/// Acknowledged pending transfers kept waiting for their post or void; more
/// stay pending (the model still accounts for them).
pub const RESOLVABLE_MAX: usize = 1 << 20;

/// The `user_data_32` of each generated transfer: what the generator meant
/// (it helps when reading a mismatch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    /// An expenditure.
    Expenditure = 1,
    /// A receipt.
    Receipt = 2,
    /// A cash transfer.
    CashTransfer = 3,
    /// A journal entry.
    Journal = 4,
    /// A pending expenditure.
    Pending = 5,
    /// The post of a pending expenditure.
    Post = 6,
    /// The void of a pending expenditure.
    Void = 7,
}

/// Derives every id of a run from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdSpace {
    tag: u64,
}

impl IdSpace {
    /// The ids of seed `seed`. Distinct seeds have distinct tags (SplitMix64's
    /// first output is a bijection of the seed).
    pub fn new(seed: u64) -> Self {
        Self { tag: SplitMix64::new(seed).next_u64() }
    }

    /// The id of the transfer with sequence number `sequence` (from 1).
    pub fn transfer(self, sequence: u64) -> TransferId {
        assert!((1..u64::MAX).contains(&sequence), "transfer sequence numbers run from 1");
        TransferId(u128::from(self.tag) << 64 | u128::from(sequence))
    }

    /// The sequence number of a transfer id of this space.
    pub fn transfer_sequence(self, id: TransferId) -> Option<u64> {
        ((id.0 >> 64) as u64 == self.tag).then_some(id.0 as u64)
    }

    /// The id of account `index` (from 0) of ledger `ledger_index` (from 0).
    pub fn account(self, ledger_index: u32, index: u32) -> AccountId {
        assert!(index < u32::MAX, "account indexes are below u32::MAX");
        AccountId(u128::from(self.tag) << 64 | u128::from(ledger_index) << 32 | u128::from(index + 1))
    }

    /// `(ledger_index, index)` of an account id of this space.
    pub fn account_position(self, id: AccountId) -> Option<(u32, u32)> {
        if (id.0 >> 64) as u64 != self.tag {
            return None;
        }
        let low = id.0 as u64;
        let index = (low as u32).checked_sub(1)?;
        Some(((low >> 32) as u32, index))
    }
}

/// The ledgers and accounts of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Ids of this run.
    pub ids: IdSpace,
    /// Ledgers.
    pub ledgers: u32,
    /// Accounts per ledger.
    pub accounts_per_ledger: u32,
    /// Cash accounts per ledger (the first ones).
    pub cash_per_ledger: u32,
}

impl Layout {
    /// The layout of `ledgers` ledgers of `accounts_per_ledger` accounts, at
    /// least `hot` of them cash. Needs at least one other account.
    pub fn new(ids: IdSpace, ledgers: u32, accounts_per_ledger: u32, hot: u32) -> Self {
        let cash_per_ledger = (accounts_per_ledger / CASH_SHARE_DIVISOR).max(CASH_ACCOUNTS_MIN).max(hot);
        assert!(cash_per_ledger < accounts_per_ledger, "a ledger needs an other account besides its cash");
        Self { ids, ledgers, accounts_per_ledger, cash_per_ledger }
    }

    /// Other (non-cash) accounts per ledger.
    pub const fn other_per_ledger(&self) -> u32 {
        self.accounts_per_ledger - self.cash_per_ledger
    }

    /// Accounts in all ledgers.
    pub const fn account_count(&self) -> usize {
        self.ledgers as usize * self.accounts_per_ledger as usize
    }

    /// The id of ledger `ledger_index`.
    pub const fn ledger_id(ledger_index: u32) -> LedgerId {
        LedgerId(LEDGER_ID_BASE + ledger_index)
    }

    /// The ledgers to create.
    pub fn ledgers(&self) -> Vec<Ledger> {
        (0..self.ledgers)
            .map(|index| Ledger {
                id: Self::ledger_id(index),
                currency: CURRENCY.into(),
                scale: 0,
                name: LEDGER_NAME.into(),
                timestamp: 0,
                ..Default::default()
            })
            .collect()
    }

    /// Account `position` (dense, `0..account_count()`), as created.
    pub fn account(&self, position: usize) -> Account {
        let ledger_index = (position / self.accounts_per_ledger as usize) as u32;
        let index = (position % self.accounts_per_ledger as usize) as u32;
        let cash = index < self.cash_per_ledger;
        Account {
            id: self.ids.account(ledger_index, index),
            ledger: Self::ledger_id(ledger_index),
            code: if cash { CASH_CODE } else { OTHER_CODE },
            kind: if cash { AccountKind::Cash } else { AccountKind::Other },
            // One account per ledger keeps its balance history, so a
            // loaded cluster can be asked for a balance as of a past time.
            flags: if index == 0 { AccountFlags::HISTORY } else { AccountFlags::NONE },
            ..Default::default()
        }
    }

    /// The dense position of an account of this layout.
    pub fn position(&self, id: AccountId) -> Option<usize> {
        let (ledger_index, index) = self.ids.account_position(id)?;
        (ledger_index < self.ledgers && index < self.accounts_per_ledger)
            .then(|| ledger_index as usize * self.accounts_per_ledger as usize + index as usize)
    }
}

/// A table for drawing indexes `0..n` with probability ∝ 1/(k+1)^s.
#[derive(Clone, Debug, PartialEq)]
pub struct ZipfTable {
    cumulative: Vec<f64>,
}

impl ZipfTable {
    /// The table for `n` (at least 1) items and exponent `exponent`.
    pub fn new(n: u32, exponent: f64) -> Self {
        assert!(n >= 1, "a Zipf table needs an item");
        let mut sum = 0.0;
        let mut cumulative: Vec<f64> = (1..=n)
            .map(|rank| {
                sum += 1.0 / f64::from(rank).powf(exponent);
                sum
            })
            .collect();
        for value in &mut cumulative {
            *value /= sum;
        }
        Self { cumulative }
    }

    /// Draws an index.
    pub fn draw(&self, random: &mut SplitMix64) -> u32 {
        let point = unit(random);
        let index = self.cumulative.partition_point(|&value| value <= point);
        index.min(self.cumulative.len() - 1) as u32
    }

    /// The probability of index `index`.
    pub fn probability(&self, index: u32) -> f64 {
        let index = index as usize;
        let below = if index == 0 { 0.0 } else { self.cumulative[index - 1] };
        self.cumulative[index] - below
    }
}

/// A uniform number in `[0, 1)` from 53 random bits.
fn unit(random: &mut SplitMix64) -> f64 {
    (random.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
}

/// Draws the accounts of each side of a transfer, by the distribution.
#[derive(Clone, Debug, PartialEq)]
pub enum Picker {
    /// Uniform over each side.
    Uniform,
    /// The cash side among the first `hot` cash accounts; the other side uniform.
    Hot {
        /// Hot cash accounts per ledger.
        hot: u32,
    },
    /// Zipf over each side.
    Zipf {
        /// The cash side's table.
        cash: ZipfTable,
        /// The other side's table.
        other: ZipfTable,
    },
}

impl Picker {
    /// The picker of `distribution` over `layout`.
    pub fn new(distribution: DistributionConfig, layout: &Layout) -> Self {
        match distribution {
            DistributionConfig::Uniform => Self::Uniform,
            DistributionConfig::Hot { hot } => Self::Hot { hot: hot.min(layout.cash_per_ledger) },
            DistributionConfig::Zipf { exponent } => Self::Zipf {
                cash: ZipfTable::new(layout.cash_per_ledger, exponent),
                other: ZipfTable::new(layout.other_per_ledger(), exponent),
            },
        }
    }

    /// The cash-side account: an index among `cash` cash accounts.
    pub fn cash_side(&self, random: &mut SplitMix64, cash: u32) -> u32 {
        match self {
            Self::Uniform => random.below(u64::from(cash)) as u32,
            Self::Hot { hot } => random.below(u64::from(*hot)) as u32,
            Self::Zipf { cash, .. } => cash.draw(random),
        }
    }

    /// A second cash account, never `first`: an index among `cash` (≥ 2).
    pub fn other_cash(&self, random: &mut SplitMix64, cash: u32, first: u32) -> u32 {
        let drawn = match self {
            Self::Zipf { cash, .. } => cash.draw(random),
            Self::Uniform | Self::Hot { .. } => (first + 1 + random.below(u64::from(cash - 1)) as u32) % cash,
        };
        if drawn == first {
            (first + 1) % cash
        } else {
            drawn
        }
    }

    /// The other-side account: an index among `other` other accounts.
    pub fn other_side(&self, random: &mut SplitMix64, other: u32) -> u32 {
        match self {
            Self::Uniform | Self::Hot { .. } => random.below(u64::from(other)) as u32,
            Self::Zipf { other, .. } => other.draw(random),
        }
    }
}

/// A batch to send: its number and transfers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The batch's number (from 1), in order of generation.
    pub number: u64,
    /// The transfers, ids from consecutive sequence numbers.
    pub transfers: Vec<Transfer>,
}

/// Generates the run's batches, deterministically for a seed given the
/// order in which pending transfers are acknowledged.
#[derive(Clone, Debug)]
pub struct Generator {
    layout: Layout,
    picker: Picker,
    mix: Mix,
    random: SplitMix64,
    next_sequence: u64,
    next_batch: u64,
    resolvable: VecDeque<Transfer>,
}

impl Generator {
    /// A generator over `layout`; its random source is derived from `seed`.
    pub fn new(layout: Layout, distribution: DistributionConfig, mix: Mix, seed: u64) -> Self {
        let picker = Picker::new(distribution, &layout);
        // A stream of its own, apart from the id tag's.
        let random = SplitMix64::new(seed ^ 0x6C6F_6164_6765_6E00);
        Self { layout, picker, mix, random, next_sequence: 1, next_batch: 1, resolvable: VecDeque::new() }
    }

    /// Transfers generated so far.
    pub const fn generated(&self) -> u64 {
        self.next_sequence - 1
    }

    /// The next batch of `events` transfers (1..=8,189).
    pub fn next_batch(&mut self, events: usize) -> Batch {
        let number = self.next_batch;
        self.next_batch += 1;
        let transfers = (0..events).map(|_| self.next_transfer(number)).collect();
        Batch { number, transfers }
    }

    /// Makes an acknowledged pending transfer available for a post or void.
    pub fn pending_acknowledged(&mut self, pending: Transfer) {
        debug_assert!(pending.flags.contains(TransferFlags::PENDING));
        if self.resolvable.len() < RESOLVABLE_MAX {
            self.resolvable.push_back(pending);
        }
    }

    fn next_transfer(&mut self, batch: u64) -> Transfer {
        let id = self.layout.ids.transfer(self.next_sequence);
        self.next_sequence += 1;
        let base =
            Transfer { id, user_data_128: id.0 & u128::from(u64::MAX), user_data_64: batch, ..Default::default() };
        match self.mix.draw(&mut self.random) {
            Slot::TwoPhase => match self.resolvable.pop_front() {
                Some(pending) => self.resolution(base, &pending),
                None => self.single(base, TransferKind::Expenditure, Purpose::Pending),
            },
            Slot::Expenditure => self.single(base, TransferKind::Expenditure, Purpose::Expenditure),
            Slot::Receipt => self.single(base, TransferKind::Receipt, Purpose::Receipt),
            Slot::CashTransfer => self.single(base, TransferKind::CashTransfer, Purpose::CashTransfer),
            Slot::Journal => self.single(base, TransferKind::Journal, Purpose::Journal),
        }
    }

    /// A new transfer (or pending transfer) of `kind`.
    fn single(&mut self, base: Transfer, kind: TransferKind, purpose: Purpose) -> Transfer {
        let layout = self.layout;
        let ledger_index = self.random.below(u64::from(layout.ledgers)) as u32;
        let cash = self.picker.cash_side(&mut self.random, layout.cash_per_ledger);
        let cash_id = layout.ids.account(ledger_index, cash);
        let (debit, credit) = match kind {
            TransferKind::CashTransfer => {
                let to = self.picker.other_cash(&mut self.random, layout.cash_per_ledger, cash);
                (cash_id, layout.ids.account(ledger_index, to))
            }
            TransferKind::Expenditure | TransferKind::Receipt | TransferKind::Journal => {
                let other = self.picker.other_side(&mut self.random, layout.other_per_ledger());
                let other_id = layout.ids.account(ledger_index, layout.cash_per_ledger + other);
                if kind == TransferKind::Expenditure {
                    (other_id, cash_id)
                } else {
                    (cash_id, other_id)
                }
            }
        };
        let flags = if purpose == Purpose::Pending { TransferFlags::PENDING } else { TransferFlags::NONE };
        Transfer {
            debit_account_id: debit,
            credit_account_id: credit,
            amount: u128::from(1 + self.random.below(AMOUNT_MAX)),
            ledger: Layout::ledger_id(ledger_index),
            code: u16::from(kind.code()),
            kind,
            flags,
            user_data_32: purpose as u32,
            ..base
        }
    }

    /// The post or void of `pending`, every field spelled out (so the stored
    /// transfer equals the one sent).
    fn resolution(&mut self, base: Transfer, pending: &Transfer) -> Transfer {
        let post = self.random.below(4) < POSTS_PER_FOUR_RESOLUTIONS;
        let (flags, purpose) = if post {
            (TransferFlags::POST_PENDING, Purpose::Post)
        } else {
            (TransferFlags::VOID_PENDING, Purpose::Void)
        };
        Transfer {
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount: pending.amount,
            pending_id: pending.id,
            ledger: pending.ledger,
            code: pending.code,
            kind: pending.kind,
            flags,
            user_data_32: purpose as u32,
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_ledger::{CreateTransferResult, MemoryStore, StateMachine};

    use super::*;

    fn layout(accounts: u32, hot: u32) -> Layout {
        Layout::new(IdSpace::new(7), 2, accounts, hot)
    }

    #[test]
    fn ids_come_from_seed_and_sequence_and_decode_back() {
        let ids = IdSpace::new(42);
        assert_eq!(ids.transfer(5), IdSpace::new(42).transfer(5));
        assert_ne!(ids.transfer(5), IdSpace::new(43).transfer(5));
        assert_ne!(ids.transfer(5), ids.transfer(6));
        assert_eq!(ids.transfer_sequence(ids.transfer(123_456)), Some(123_456));
        assert_eq!(IdSpace::new(43).transfer_sequence(ids.transfer(1)), None);
        let account = ids.account(3, 9_999);
        assert!(account.is_valid() && ids.transfer(1).is_valid());
        assert_eq!(ids.account_position(account), Some((3, 9_999)));
        assert_eq!(IdSpace::new(1).account_position(account), None);
    }

    #[test]
    fn layout_positions_are_dense_and_round_trip() {
        let layout = layout(100, 0);
        assert_eq!((layout.cash_per_ledger, layout.other_per_ledger(), layout.account_count()), (10, 90, 200));
        for position in 0..layout.account_count() {
            let account = layout.account(position);
            assert_eq!(layout.position(account.id), Some(position));
            let cash = position % 100 < 10;
            assert_eq!(account.kind == AccountKind::Cash, cash);
        }
        assert_eq!(Layout::new(IdSpace::new(1), 1, 5, 0).cash_per_ledger, CASH_ACCOUNTS_MIN);
        assert_eq!(Layout::new(IdSpace::new(1), 1, 100, 30).cash_per_ledger, 30);
    }

    #[test]
    fn one_seed_generates_the_same_batches() {
        let generate = |seed| {
            let mut generator = Generator::new(layout(100, 0), DistributionConfig::Uniform, mix(), seed);
            (generator.next_batch(50), generator.next_batch(50))
        };
        assert_eq!(generate(3), generate(3));
        assert_ne!(generate(3), generate(4));
    }

    fn mix() -> Mix {
        "expenditure=40,receipt=30,cash=20,journal=5,two-phase=10".parse().unwrap()
    }

    /// Every generated transfer is valid for its kind: applied to a state
    /// machine with the layout's accounts, all are created, and posts and
    /// voids follow their pending transfers.
    #[test]
    fn every_generated_transfer_is_created_by_the_ledger() {
        let distributions = [
            DistributionConfig::Uniform,
            DistributionConfig::Hot { hot: 3 },
            DistributionConfig::Zipf { exponent: 1.2 },
        ];
        for distribution in distributions {
            let layout = layout(40, 3);
            let mut ledger = StateMachine::new(MemoryStore::new());
            ledger.create_ledgers(1, &layout.ledgers()).unwrap();
            let accounts: Vec<Account> = (0..layout.account_count()).map(|at| layout.account(at)).collect();
            let results = ledger.create_accounts(10, &accounts).unwrap();
            assert!(results.iter().all(|result| result.is_success()));
            let mut generator = Generator::new(layout, distribution, mix(), 11);
            let mut timestamp = 1_000;
            let mut resolutions = 0;
            for _ in 0..20 {
                let batch = generator.next_batch(200);
                let results = ledger.create_transfers(timestamp, &batch.transfers).unwrap();
                timestamp += 1_000;
                for (transfer, result) in batch.transfers.iter().zip(&results) {
                    assert_eq!(*result, CreateTransferResult::Created, "{distribution:?}: {transfer:?}");
                    if transfer.flags.contains(TransferFlags::PENDING) {
                        generator.pending_acknowledged(*transfer);
                    }
                    resolutions += u32::from(transfer.flags.is_post_or_void());
                }
            }
            assert!(resolutions > 100, "{distribution:?}: {resolutions} posts and voids");
        }
    }

    #[test]
    fn hot_transfers_touch_a_hot_cash_account() {
        let layout = layout(1_000, 10);
        let mut generator = Generator::new(layout, DistributionConfig::Hot { hot: 10 }, mix(), 5);
        let batch = generator.next_batch(2_000);
        for transfer in &batch.transfers {
            let cash_side = if transfer.kind == TransferKind::Expenditure {
                transfer.credit_account_id
            } else {
                transfer.debit_account_id
            };
            let (_, index) = layout.ids.account_position(cash_side).unwrap();
            assert!(index < 10, "{transfer:?}");
        }
    }

    #[test]
    fn zipf_draws_follow_the_law() {
        let table = ZipfTable::new(100, 1.0);
        let total: f64 = (0..100).map(|index| table.probability(index)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!((table.probability(0) / table.probability(1) - 2.0).abs() < 1e-9);
        let mut random = SplitMix64::new(1);
        let mut counts = [0_u32; 100];
        let draws = 200_000;
        for _ in 0..draws {
            counts[table.draw(&mut random) as usize] += 1;
        }
        for index in [0, 1, 9, 99] {
            let share = f64::from(counts[index]) / f64::from(draws);
            let expected = table.probability(index as u32);
            assert!((share - expected).abs() < 0.2 * expected + 0.001, "{index}: {share} vs {expected}");
        }
    }

    #[test]
    fn uniform_draws_cover_every_account_evenly() {
        let mut random = SplitMix64::new(2);
        let mut counts = [0_u32; 10];
        for _ in 0..100_000 {
            counts[Picker::Uniform.other_side(&mut random, 10) as usize] += 1;
        }
        assert!(counts.iter().all(|&count| (9_000..11_000).contains(&count)), "{counts:?}");
        for first in 0..10 {
            assert_ne!(Picker::Uniform.other_cash(&mut random, 10, first), first);
        }
    }
}
