//! `MemoryStore`: the in-memory [`Store`], for tests, the simulator and benchmarks.
//!
//! Hash maps for point lookups (sorted on demand by the ordered visitors,
//! which only the digest and the trial balance use), and per-account vectors
//! for history, which grow in timestamp order because timestamps strictly
//! increase.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use crate::digest::DigestSum;
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::index::{account_index_keys, transfer_index_keys, IndexKey};
use crate::model::{
    Account, AccountBalance, AccountTransfer, Change, CodeTotals, Ledger, PendingState, PendingStatus, Side,
    TotalsEntry, Transfer,
};
use crate::reconcile::Reconciliation;
use crate::results::CreateTransferResult;
use crate::store::{AccountFilter, ChangeFilter, Store, StoreError, StoreMut, WriteSet, DEFERRED_ACCOUNT_DIGEST};

/// An in-memory [`Store`]. Commits are atomic because they cannot fail midway.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    last_timestamp: u64,
    ledgers: BTreeMap<LedgerId, Ledger>,
    accounts: FxHashMap<AccountId, Account>,
    transfers: Chunked<Transfer>,
    transfer_index: FxHashMap<TransferId, usize>,
    pending: FxHashMap<TransferId, PendingStatus>,
    expiry: BTreeSet<(u64, TransferId)>,
    failures: FxHashMap<TransferId, CreateTransferResult>,
    /// Every history-index entry, in commit order (append-only).
    history: Chunked<HistoryEntry>,
    /// Per account, the positions of its entries in `history`: 8 bytes per
    /// entry in a vector that grows, instead of the whole entry.
    account_transfers: FxHashMap<AccountId, Vec<usize>>,
    balances: FxHashMap<AccountId, Vec<AccountBalance>>,
    /// The change log, in timestamp order (append-only).
    changes: Chunked<Change>,
    digest_sum: DigestSum,
    totals: BTreeMap<(LedgerId, u16), CodeTotals>,
    totals_history: BTreeMap<(LedgerId, u16, u64), TotalsEntry>,
    index: BTreeSet<(IndexKey, u64)>,
    reconciliations: BTreeMap<(AccountId, String), Reconciliation>,
    /// Per account, its latest statement.
    latest_statements: FxHashMap<AccountId, String>,
}

/// An append-only vector kept in fixed-size chunks, so growing it never moves
/// (copies) what it already holds, and clearing it keeps the chunks.
#[derive(Clone, Debug)]
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    /// Chunks in use; those after them are empty and kept for reuse.
    used: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self { chunks: Vec::new(), used: 0 }
    }
}

impl<T> Chunked<T> {
    const CHUNK_LEN: usize = 1 << 14;

    fn len(&self) -> usize {
        match self.used {
            0 => 0,
            used => (used - 1) * Self::CHUNK_LEN + self.chunks.get(used - 1).map_or(0, Vec::len),
        }
    }

    fn push(&mut self, value: T) {
        let full = self.used == 0 || self.chunks.get(self.used - 1).is_none_or(|last| last.len() == Self::CHUNK_LEN);
        if full {
            if self.used == self.chunks.len() {
                self.chunks.push(Vec::with_capacity(Self::CHUNK_LEN));
            }
            self.used += 1;
        }
        if let Some(last) = self.chunks.get_mut(self.used - 1) {
            last.push(value);
        }
    }

    fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / Self::CHUNK_LEN)?.get(index % Self::CHUNK_LEN)
    }

    fn clear(&mut self) {
        self.chunks.iter_mut().for_each(Vec::clear);
        self.used = 0;
    }

    /// The index of the first element for which `before` is false, given
    /// that it is true for a prefix and false after (a binary search).
    fn partition_point(&self, before: impl Fn(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.get(middle).is_some_and(&before) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }
}

/// One entry of an account's history index, without the account id (the
/// per-account position lists say whose it is).
#[derive(Clone, Copy, Debug)]
struct HistoryEntry {
    transfer_id: TransferId,
    timestamp: u64,
    side: Side,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the store but keeps its allocations, so refilling it does not
    /// ask the operating system for memory again.
    pub fn clear(&mut self) {
        self.last_timestamp = 0;
        self.ledgers.clear();
        self.accounts.clear();
        self.transfers.clear();
        self.transfer_index.clear();
        self.pending.clear();
        self.expiry.clear();
        self.failures.clear();
        self.history.clear();
        self.account_transfers.values_mut().for_each(Vec::clear);
        self.balances.values_mut().for_each(Vec::clear);
        self.changes.clear();
        self.digest_sum = DigestSum::ZERO;
        self.totals.clear();
        self.totals_history.clear();
        self.index.clear();
    }

    /// How many transfers the store holds.
    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }

    /// How many accounts the store holds.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }
}

/// The rows of a timestamp-ordered history that `filter` selects.
fn page<T: Copy>(
    rows: &[T],
    timestamp: impl Fn(&T) -> u64,
    filter: &AccountFilter,
    keep: impl Fn(&T) -> bool,
) -> Vec<T> {
    let start = rows.partition_point(|row| timestamp(row) < filter.timestamp_min);
    let end = if filter.timestamp_max == 0 {
        rows.len()
    } else {
        rows.partition_point(|row| timestamp(row) <= filter.timestamp_max)
    };
    let range = rows.get(start..end.max(start)).unwrap_or_default();
    let limit = filter.limit as usize;
    if filter.reversed {
        range.iter().rev().filter(|row| keep(row)).take(limit).copied().collect()
    } else {
        range.iter().filter(|row| keep(row)).take(limit).copied().collect()
    }
}

fn sorted<K: Ord + Copy, V>(map: &FxHashMap<K, V>) -> Vec<(K, &V)> {
    let mut rows: Vec<(K, &V)> = map.iter().map(|(key, value)| (*key, value)).collect();
    rows.sort_unstable_by_key(|(key, _)| *key);
    rows
}

impl Store for MemoryStore {
    fn last_timestamp(&self) -> Result<u64, StoreError> {
        Ok(self.last_timestamp)
    }

    fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        Ok(self.ledgers.get(&id).cloned())
    }

    fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.accounts.get(&id).copied())
    }

    fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        Ok(self.transfer_index.get(&id).and_then(|index| self.transfers.get(*index)).copied())
    }

    fn pending_status(&self, id: TransferId) -> Result<Option<PendingStatus>, StoreError> {
        Ok(self.pending.get(&id).copied())
    }

    fn transfer_failure(&self, id: TransferId) -> Result<Option<CreateTransferResult>, StoreError> {
        Ok(self.failures.get(&id).copied())
    }

    fn expiring(&self, up_to: u64, limit: usize) -> Result<Vec<(u64, TransferId)>, StoreError> {
        Ok(self.expiry.range(..=(up_to, TransferId(u128::MAX))).take(limit).copied().collect())
    }

    fn account_transfers(&self, filter: &AccountFilter) -> Result<Vec<AccountTransfer>, StoreError> {
        let positions = self.account_transfers.get(&filter.account_id).map(Vec::as_slice).unwrap_or_default();
        let entry = |position: &usize| self.history.get(*position).copied();
        let timestamp = |position: &usize| entry(position).map_or(u64::MAX, |row| row.timestamp);
        let keep = |position: &usize| entry(position).is_some_and(|row| filter.sides.includes(row.side));
        let rows = page(positions, timestamp, filter, keep);
        Ok(rows
            .iter()
            .filter_map(entry)
            .map(|row| AccountTransfer {
                account_id: filter.account_id,
                timestamp: row.timestamp,
                transfer_id: row.transfer_id,
                side: row.side,
            })
            .collect())
    }

    fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>, StoreError> {
        let rows = self.balances.get(&filter.account_id).map(Vec::as_slice).unwrap_or_default();
        Ok(page(rows, |row| row.timestamp, filter, |_| true))
    }

    fn changes(&self, filter: &ChangeFilter) -> Result<Vec<Change>, StoreError> {
        let start = self.changes.partition_point(|change| change.timestamp < filter.timestamp_min);
        let end = self.changes.partition_point(|change| change.timestamp <= filter.timestamp_max).max(start);
        let limit = filter.limit as usize;
        let at = |index: usize| self.changes.get(index).copied();
        Ok(if filter.reversed {
            (start..end).rev().take(limit).filter_map(at).collect()
        } else {
            (start..end).take(limit).filter_map(at).collect()
        })
    }

    fn for_each_ledger(&self, visit: &mut dyn FnMut(&Ledger)) -> Result<(), StoreError> {
        self.ledgers.values().for_each(visit);
        Ok(())
    }

    fn for_each_account(&self, visit: &mut dyn FnMut(&Account)) -> Result<(), StoreError> {
        sorted(&self.accounts).into_iter().for_each(|(_, account)| visit(account));
        Ok(())
    }

    fn for_each_transfer(&self, visit: &mut dyn FnMut(&Transfer)) -> Result<(), StoreError> {
        for (_, index) in sorted(&self.transfer_index) {
            if let Some(transfer) = self.transfers.get(*index) {
                visit(transfer);
            }
        }
        Ok(())
    }

    fn for_each_pending(&self, visit: &mut dyn FnMut(TransferId, &PendingStatus)) -> Result<(), StoreError> {
        sorted(&self.pending).into_iter().for_each(|(id, status)| visit(id, status));
        Ok(())
    }

    fn for_each_failure(&self, visit: &mut dyn FnMut(TransferId, CreateTransferResult)) -> Result<(), StoreError> {
        sorted(&self.failures).into_iter().for_each(|(id, result)| visit(id, *result));
        Ok(())
    }

    fn digest_sum(&self) -> Result<DigestSum, StoreError> {
        Ok(self.digest_sum)
    }

    fn code_totals(&self, ledger: LedgerId, code: u16) -> Result<Option<CodeTotals>, StoreError> {
        Ok(self.totals.get(&(ledger, code)).copied())
    }

    fn ledger_totals(&self, ledger: LedgerId) -> Result<Vec<CodeTotals>, StoreError> {
        Ok(self.totals.range((ledger, 0)..=(ledger, u16::MAX)).map(|(_, totals)| *totals).collect())
    }

    fn totals_around(
        &self,
        ledger: LedgerId,
        code: u16,
        timestamp: u64,
    ) -> Result<(Option<TotalsEntry>, Option<TotalsEntry>), StoreError> {
        let before = self.totals_history.range((ledger, code, 0)..=(ledger, code, timestamp)).next_back();
        let after = match timestamp.checked_add(1) {
            Some(next) => self.totals_history.range((ledger, code, next)..=(ledger, code, u64::MAX)).next(),
            None => None,
        };
        Ok((before.map(|(_, entry)| *entry), after.map(|(_, entry)| *entry)))
    }

    fn index_seek(
        &self,
        key: &IndexKey,
        timestamp_min: u64,
        timestamp_max: u64,
        reversed: bool,
    ) -> Result<Option<u64>, StoreError> {
        if timestamp_min > timestamp_max {
            return Ok(None);
        }
        let mut range = self.index.range((*key, timestamp_min)..=(*key, timestamp_max));
        let found = if reversed { range.next_back() } else { range.next() };
        Ok(found.map(|(_, timestamp)| *timestamp))
    }

    fn reconciliation(&self, account: AccountId, statement: &str) -> Result<Option<Reconciliation>, StoreError> {
        Ok(self.reconciliations.get(&(account, statement.to_owned())).cloned())
    }

    fn latest_reconciliation(&self, account: AccountId) -> Result<Option<Reconciliation>, StoreError> {
        match self.latest_statements.get(&account) {
            Some(statement) => self.reconciliation(account, statement),
            None => Ok(None),
        }
    }

    fn reconciliations(
        &self,
        account: AccountId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Reconciliation>, StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let start = match after.is_empty() {
            true => Included((account, String::new())),
            false => Excluded((account, after.to_owned())),
        };
        let found = self.reconciliations.range((start, Unbounded)).take_while(|((owner, _), _)| *owner == account);
        Ok(found.take(limit).map(|(_, record)| record.clone()).collect())
    }
}

impl StoreMut for MemoryStore {
    fn commit(&mut self, write_set: &WriteSet) -> Result<(), StoreError> {
        if write_set.account_digest_deferred {
            return Err(StoreError::Inconsistent { detail: DEFERRED_ACCOUNT_DIGEST.to_string() });
        }
        self.last_timestamp = write_set.last_timestamp;
        for ledger in &write_set.ledgers {
            self.ledgers.insert(ledger.id, ledger.clone());
        }
        for record in &write_set.reconciliations {
            self.reconciliations.insert((record.account, record.statement.clone()), record.clone());
        }
        for (account, statement) in &write_set.latest_statements {
            self.latest_statements.insert(*account, statement.clone());
        }
        for account in &write_set.accounts {
            self.accounts.insert(account.id, *account);
        }
        self.transfer_index.reserve(write_set.transfers.len());
        for transfer in &write_set.transfers {
            self.transfer_index.insert(transfer.id, self.transfers.len());
            self.transfers.push(*transfer);
        }
        for (id, status) in &write_set.pending {
            if status.expires_at != 0 {
                if status.state == PendingState::Pending {
                    self.expiry.insert((status.expires_at, *id));
                } else {
                    self.expiry.remove(&(status.expires_at, *id));
                }
            }
            self.pending.insert(*id, *status);
        }
        for (id, result) in &write_set.failures {
            self.failures.insert(*id, *result);
        }
        for row in &write_set.account_transfers {
            let position = self.history.len();
            self.history.push(HistoryEntry { transfer_id: row.transfer_id, timestamp: row.timestamp, side: row.side });
            self.account_transfers.entry(row.account_id).or_default().push(position);
        }
        for row in &write_set.balances {
            self.balances.entry(row.account_id).or_default().push(*row);
        }
        for change in &write_set.changes {
            self.changes.push(*change);
        }
        self.digest_sum = self.digest_sum.plus(write_set.digest_delta);
        for totals in &write_set.totals {
            self.totals.insert((totals.ledger, totals.code), *totals);
            let entry = TotalsEntry {
                first_timestamp: write_set.first_timestamp,
                last_timestamp: write_set.last_timestamp,
                totals: *totals,
            };
            self.totals_history.insert((totals.ledger, totals.code, write_set.last_timestamp), entry);
        }
        for transfer in &write_set.transfers {
            for key in transfer_index_keys(transfer) {
                self.index.insert((key, transfer.timestamp));
            }
        }
        for account in write_set.accounts.iter().filter(|account| account.timestamp >= write_set.first_timestamp) {
            for key in account_index_keys(account) {
                self.index.insert((key, account.timestamp));
            }
        }
        Ok(())
    }
}
