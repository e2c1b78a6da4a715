//! A bounded account cache: set-associative, write-through.
//!
//! Accounts are the hot reads of a batch (a fund's cash account is touched by
//! every payment of that fund). The cache holds at most its capacity, evicts
//! round-robin within a set of four, and is updated only after the write that
//! changed the accounts has succeeded, so it always equals what is on disk.
//! Misses (accounts that do not exist) are not cached.
//!
//! With each account it keeps the digest hash of that value when the write
//! that stored it computed one, so the next batch changing the account takes
//! it out of the digest sum without hashing it again.

use coffer_ledger::{Account, AccountId, DigestSum};

const WAYS: usize = 4;

#[derive(Clone, Debug, Default)]
struct Set {
    entries: [Option<Cached>; WAYS],
    next_victim: usize,
}

/// An account and, if known, the digest hash of that value.
type Cached = (Account, Option<DigestSum>);

/// A bounded cache of accounts.
#[derive(Clone, Debug)]
pub struct AccountCache {
    sets: Vec<Set>,
}

impl AccountCache {
    /// A cache of about `capacity` accounts (rounded up to a multiple of 4;
    /// `0` disables it).
    pub fn new(capacity: usize) -> Self {
        Self { sets: vec![Set::default(); capacity.div_ceil(WAYS)] }
    }

    fn set(&mut self, id: AccountId) -> Option<&mut Set> {
        let sets = self.sets.len();
        if sets == 0 {
            return None;
        }
        // Fibonacci hashing spreads sequential ids over the sets.
        let hash = (id.0 as u64 ^ (id.0 >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let index = ((u128::from(hash) * sets as u128) >> 64) as usize;
        self.sets.get_mut(index)
    }

    /// The cached account with this id, with its digest hash if known.
    pub fn get(&mut self, id: AccountId) -> Option<(Account, Option<DigestSum>)> {
        self.set(id)?.entries.iter().flatten().find(|(account, _)| account.id == id).copied()
    }

    /// Caches `account` (replacing its older value, or evicting another),
    /// with `hash`: the digest hash of exactly this value, if known.
    pub fn put(&mut self, account: Account, hash: Option<DigestSum>) {
        let Some(set) = self.set(account.id) else { return };
        if let Some(slot) = set.entries.iter_mut().find(|slot| slot.is_some_and(|(a, _)| a.id == account.id)) {
            *slot = Some((account, hash));
            return;
        }
        let way = match set.entries.iter().position(Option::is_none) {
            Some(empty) => empty,
            None => {
                let victim = set.next_victim;
                set.next_victim = (victim + 1) % WAYS;
                victim
            }
        };
        if let Some(slot) = set.entries.get_mut(way) {
            *slot = Some((account, hash));
        }
    }

    /// Forgets everything (after the state was replaced by a snapshot).
    pub fn clear(&mut self) {
        self.sets.iter_mut().for_each(|set| *set = Set::default());
    }

    /// How many accounts are cached.
    pub fn len(&self) -> usize {
        self.sets.iter().map(|set| set.entries.iter().flatten().count()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: u128, balance: u128) -> Account {
        Account { id: AccountId(id), credits_posted: balance, ..Default::default() }
    }

    #[test]
    fn a_put_replaces_the_older_value() {
        let mut cache = AccountCache::new(16);
        cache.put(account(7, 1), None);
        let hash = DigestSum::from_bytes([7; 32]);
        cache.put(account(7, 2), Some(hash));
        assert_eq!(cache.get(AccountId(7)), Some((account(7, 2), Some(hash))));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let mut cache = AccountCache::new(64);
        for id in 1..=10_000 {
            cache.put(account(id, id), None);
        }
        assert!(cache.len() <= 64);
        for id in 1..=10_000 {
            if let Some(found) = cache.get(AccountId(id)) {
                assert_eq!(found, (account(id, id), None));
            }
        }
    }

    #[test]
    fn a_zero_capacity_cache_holds_nothing() {
        let mut cache = AccountCache::new(0);
        cache.put(account(1, 1), None);
        assert_eq!(cache.get(AccountId(1)), None);
    }
}
