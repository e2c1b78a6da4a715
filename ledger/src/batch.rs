//! The working state of one batch: an overlay over the store that collects
//! every change, supports savepoints for linked chains, and turns into a
//! [`WriteSet`] at the end.
//!
//! Nothing here touches the store except to read it: a prepared batch is
//! invisible until the caller commits its write set.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::digest::{DigestSum, Record};
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::model::{
    Account, AccountBalance, AccountTransfer, BudgetPolicy, Change, ChangeKind, CodeTotals, Ledger, PendingStatus,
    Period, Side, Transfer, TransferBalances,
};
use crate::results::CreateTransferResult;
use crate::store::{Store, StoreError, WriteSet};
use crate::AccountFlags;

/// An account as the batch sees it: `None` if it does not exist (yet).
#[derive(Clone, Copy)]
struct Slot {
    account: Option<Account>,
    /// The account as the store held it before the batch (for the digest
    /// and the running totals, which replace the old value by the new).
    original: Option<Account>,
    /// The digest hash of `original`, if the store had it at hand.
    original_hash: Option<DigestSum>,
    /// Whether the batch changed it (and so listed it in `accounts_dirty`).
    dirty: bool,
}

/// What to restore when a linked chain fails.
enum Undo {
    /// The account slot at this index held this value.
    Account(usize, Option<Account>),
    Pending(TransferId, Option<PendingStatus>),
}

/// A point a failed linked chain rolls back to.
pub(crate) struct Savepoint {
    undo: usize,
    transfers: usize,
    account_transfers: usize,
    balances: usize,
    changes: usize,
    budget_warnings: u32,
}

/// What the transfers of a ledger are checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LedgerRules {
    /// The ledger's fiscal period.
    pub(crate) period: Period,
    /// Its budget control.
    pub(crate) budget: BudgetPolicy,
    /// Its warning share (for a budget ledger).
    pub(crate) warn_percent: u8,
}

/// The overlay of one batch over a store.
pub(crate) struct Batch<'s, S: Store + ?Sized> {
    store: &'s S,
    /// Whether changes are logged for undo (only inside a linked chain).
    recording: bool,
    undo: Vec<Undo>,
    /// Ledgers created or changed.
    ledgers: Vec<Ledger>,
    /// The period and budget policy of each ledger a transfer named (few
    /// per batch: a list, read once each).
    ledger_rules: Vec<(LedgerId, Option<LedgerRules>)>,
    /// Transfers that crossed a budget warning share (see
    /// [`crate::budget_warning`]).
    budget_warnings: u32,
    /// Every account the batch touched, densely, so the hot path indexes a
    /// vector instead of hashing an id on each read and write.
    accounts: Vec<Slot>,
    account_index: FxHashMap<AccountId, usize>,
    /// Slots changed by the batch, in first-change order.
    accounts_dirty: Vec<usize>,
    transfers: Vec<Transfer>,
    transfer_index: FxHashMap<TransferId, usize>,
    pending: FxHashMap<TransferId, PendingStatus>,
    pending_dirty: Vec<TransferId>,
    failures: Vec<(TransferId, CreateTransferResult)>,
    failure_index: FxHashMap<TransferId, CreateTransferResult>,
    /// Ids the store held neither a transfer nor a failure under when the
    /// batch began (asked once for the batch's events; see
    /// [`Self::learn_unused_ids`]): a lookup of one answers without the
    /// store.
    unused_ids: FxHashSet<TransferId>,
    account_transfers: Vec<AccountTransfer>,
    balances: Vec<AccountBalance>,
    /// The change log's new entries, in timestamp order.
    changes: Vec<Change>,
    /// The ledger whose year-end close this batch posts for: it accepts
    /// the batch's transfers while `closing` (see [`crate::close`]).
    closing_admitted: Option<LedgerId>,
}

impl<'s, S: Store + ?Sized> Batch<'s, S> {
    /// An empty overlay over `store`, sized for `events` events.
    pub(crate) fn new(store: &'s S, events: usize) -> Self {
        let touched = events.min(4096) * 2;
        let mut account_index = FxHashMap::default();
        account_index.reserve(touched);
        let mut transfer_index = FxHashMap::default();
        transfer_index.reserve(events);
        Self {
            store,
            recording: false,
            undo: Vec::new(),
            ledgers: Vec::new(),
            ledger_rules: Vec::new(),
            budget_warnings: 0,
            accounts: Vec::with_capacity(touched),
            account_index,
            accounts_dirty: Vec::with_capacity(touched),
            transfers: Vec::with_capacity(events),
            transfer_index,
            pending: FxHashMap::default(),
            pending_dirty: Vec::new(),
            failures: Vec::new(),
            failure_index: FxHashMap::default(),
            unused_ids: FxHashSet::default(),
            account_transfers: Vec::with_capacity(events * 2),
            balances: Vec::new(),
            // At most one change per event: one allocation per batch.
            changes: Vec::with_capacity(events),
            closing_admitted: None,
        }
    }

    /// The store under the overlay (what the batch has not changed).
    pub(crate) fn store(&self) -> &'s S {
        self.store
    }

    /// Lets this batch post the year-end close of `ledger`.
    pub(crate) fn admit_closing(&mut self, ledger: LedgerId) {
        self.closing_admitted = Some(ledger);
    }

    /// Whether this batch posts the year-end close of `ledger`.
    pub(crate) fn admits_closing(&self, ledger: LedgerId) -> bool {
        self.closing_admitted == Some(ledger)
    }

    pub(crate) fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        match self.ledgers.iter().find(|ledger| ledger.id == id) {
            Some(ledger) => Ok(Some(ledger.clone())),
            None => self.store.ledger(id),
        }
    }

    /// The period, budget policy and warning share of ledger `id`, if it exists.
    pub(crate) fn ledger_rules(&mut self, id: LedgerId) -> Result<Option<LedgerRules>, StoreError> {
        if let Some((_, rules)) = self.ledger_rules.iter().find(|(ledger, _)| *ledger == id) {
            return Ok(*rules);
        }
        let rules = self.ledger(id)?.map(|ledger| LedgerRules {
            period: ledger.period,
            budget: ledger.budget,
            warn_percent: ledger.warn_percent,
        });
        self.ledger_rules.push((id, rules));
        Ok(rules)
    }

    /// Counts a transfer that crossed a budget warning share.
    pub(crate) fn count_budget_warning(&mut self) {
        self.budget_warnings += 1;
    }

    /// Replaces an existing ledger (its period moved).
    pub(crate) fn put_ledger(&mut self, ledger: Ledger) {
        self.ledger_rules.retain(|(id, _)| *id != ledger.id);
        match self.ledgers.iter_mut().find(|existing| existing.id == ledger.id) {
            Some(existing) => *existing = ledger,
            None => self.ledgers.push(ledger),
        }
    }

    /// Adds a created ledger and its change.
    pub(crate) fn insert_ledger(&mut self, ledger: Ledger) {
        self.record_change(ledger.timestamp, ChangeKind::LedgerCreated(ledger.id), None);
        self.ledgers.push(ledger);
    }

    /// Puts a created account in `slot` (from [`Self::account_slot`], which
    /// found none) and records its change.
    pub(crate) fn insert_account_at(&mut self, slot: usize, account: Account) {
        debug_assert!(self.account_at(slot).is_none(), "account {} is created once", account.id);
        let closed = account.flags.contains(AccountFlags::CLOSED);
        self.record_change(account.timestamp, ChangeKind::AccountCreated { id: account.id, closed }, None);
        self.put_account_at(slot, account);
    }

    /// Records that the pending transfer `id` expired at `timestamp`,
    /// leaving its accounts at `dr` and `cr`.
    pub(crate) fn record_expiry(&mut self, id: TransferId, timestamp: u64, dr: &Account, cr: &Account) {
        let balances = TransferBalances { debit: dr.balances(), credit: cr.balances() };
        self.record_change(timestamp, ChangeKind::PendingExpired(id), Some(balances));
    }

    /// Appends to the change log. Each event makes at most one change, and
    /// events run in timestamp order, so the log stays ordered.
    fn record_change(&mut self, timestamp: u64, kind: ChangeKind, balances: Option<TransferBalances>) {
        debug_assert!(self.changes.last().is_none_or(|last| last.timestamp < timestamp), "changes in order");
        self.changes.push(Change { timestamp, kind, balances });
    }

    /// The slot of account `id`, loading it from the store on first touch.
    pub(crate) fn account_slot(&mut self, id: AccountId) -> Result<usize, StoreError> {
        use std::collections::hash_map::Entry;
        match self.account_index.entry(id) {
            Entry::Occupied(entry) => Ok(*entry.get()),
            Entry::Vacant(vacant) => {
                let (account, original_hash) = match self.store.account_hashed(id)? {
                    Some((account, hash)) => (Some(account), hash),
                    None => (None, None),
                };
                let slot = self.accounts.len();
                self.accounts.push(Slot { account, original: account, original_hash, dirty: false });
                vacant.insert(slot);
                Ok(slot)
            }
        }
    }

    /// The account in `slot` (from [`Self::account_slot`]), if it exists.
    pub(crate) fn account_at(&self, slot: usize) -> Option<Account> {
        self.accounts.get(slot).and_then(|slot| slot.account)
    }

    /// Replaces the account in `slot` (from [`Self::account_slot`]).
    pub(crate) fn put_account_at(&mut self, slot: usize, account: Account) {
        let Some(entry) = self.accounts.get_mut(slot) else {
            debug_assert!(false, "account slot {slot} was handed out by account_slot");
            return;
        };
        debug_assert_eq!(entry.account.map_or(account.id, |a| a.id), account.id);
        if self.recording {
            self.undo.push(Undo::Account(slot, entry.account));
        }
        entry.account = Some(account);
        if !entry.dirty {
            entry.dirty = true;
            self.accounts_dirty.push(slot);
        }
    }

    pub(crate) fn account(&mut self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let slot = self.account_slot(id)?;
        Ok(self.account_at(slot))
    }

    /// An account that committed records refer to, so it must exist.
    pub(crate) fn referenced_account(&mut self, id: AccountId, by: TransferId) -> Result<(usize, Account), StoreError> {
        let slot = self.account_slot(id)?;
        let account = self.account_at(slot).ok_or_else(|| StoreError::Inconsistent {
            detail: format!("account {id} referenced by transfer {by} does not exist"),
        })?;
        Ok((slot, account))
    }

    pub(crate) fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        match self.transfer_index.get(&id) {
            Some(&index) => Ok(self.transfers.get(index).copied()),
            None if !self.unused_ids.is_empty() && self.unused_ids.contains(&id) => Ok(None),
            None => self.store.transfer(id),
        }
    }

    /// Asks the store, in one question, which of `ids` it holds no transfer
    /// and no failure under; lookups of those then answer from the overlay.
    /// The store does not change while a batch is prepared, so the answer
    /// holds for the whole batch (what the batch itself adds is looked up
    /// first).
    pub(crate) fn learn_unused_ids(&mut self, ids: &[TransferId]) -> Result<(), StoreError> {
        let Some(unused) = self.store.unused_transfer_ids(ids)? else { return Ok(()) };
        self.unused_ids.reserve(ids.len());
        self.unused_ids.extend(ids.iter().zip(unused).filter(|(_, unused)| *unused).map(|(id, _)| *id));
        Ok(())
    }

    /// Adds a transfer, its two history-index entries and its change, which
    /// carries the balances its accounts are left with (`dr`, `cr`).
    pub(crate) fn insert_transfer(&mut self, transfer: Transfer, dr: &Account, cr: &Account) {
        let balances = TransferBalances { debit: dr.balances(), credit: cr.balances() };
        self.record_change(transfer.timestamp, ChangeKind::TransferCreated(transfer.id), Some(balances));
        self.transfer_index.insert(transfer.id, self.transfers.len());
        self.transfers.push(transfer);
        self.account_transfers.push(AccountTransfer {
            account_id: transfer.debit_account_id,
            timestamp: transfer.timestamp,
            transfer_id: transfer.id,
            side: Side::Debit,
        });
        self.account_transfers.push(AccountTransfer {
            account_id: transfer.credit_account_id,
            timestamp: transfer.timestamp,
            transfer_id: transfer.id,
            side: Side::Credit,
        });
    }

    pub(crate) fn pending_status(&self, id: TransferId) -> Result<Option<PendingStatus>, StoreError> {
        match self.pending.get(&id) {
            Some(status) => Ok(Some(*status)),
            None => self.store.pending_status(id),
        }
    }

    pub(crate) fn put_pending_status(&mut self, id: TransferId, status: PendingStatus) {
        let previous = self.pending.insert(id, status);
        if self.recording {
            self.undo.push(Undo::Pending(id, previous));
        }
        if previous.is_none() {
            self.pending_dirty.push(id);
        }
    }

    pub(crate) fn transfer_failed(&self, id: TransferId) -> Result<bool, StoreError> {
        if self.failure_index.contains_key(&id) {
            return Ok(true);
        }
        if !self.unused_ids.is_empty() && self.unused_ids.contains(&id) {
            return Ok(false);
        }
        Ok(self.store.transfer_failure(id)?.is_some())
    }

    /// Records a transient failure. Never undone: the id's outcome stands
    /// even when its chain is rolled back.
    pub(crate) fn record_failure(&mut self, id: TransferId, result: CreateTransferResult) {
        if self.failure_index.insert(id, result).is_none() {
            self.failures.push((id, result));
        }
    }

    /// Appends a balance-history entry if the account keeps history.
    pub(crate) fn record_balance(&mut self, account: &Account, timestamp: u64) {
        if account.flags.contains(AccountFlags::HISTORY) {
            self.balances.push(account.balance_at(timestamp));
        }
    }

    /// Starts logging changes for undo: a linked chain begins.
    pub(crate) fn begin_chain(&mut self) -> Savepoint {
        self.recording = true;
        Savepoint {
            undo: self.undo.len(),
            transfers: self.transfers.len(),
            account_transfers: self.account_transfers.len(),
            balances: self.balances.len(),
            changes: self.changes.len(),
            budget_warnings: self.budget_warnings,
        }
    }

    /// Stops logging changes: the chain ended (committed or rolled back).
    pub(crate) fn end_chain(&mut self) {
        self.recording = false;
        self.undo.clear();
    }

    /// Undoes every change made since `savepoint`, newest first.
    pub(crate) fn rollback(&mut self, savepoint: &Savepoint) {
        while self.undo.len() > savepoint.undo {
            match self.undo.pop() {
                Some(Undo::Account(slot, previous)) => {
                    if let Some(entry) = self.accounts.get_mut(slot) {
                        entry.account = previous;
                    }
                }
                Some(Undo::Pending(id, previous)) => match previous {
                    Some(status) => {
                        self.pending.insert(id, status);
                    }
                    None => {
                        self.pending.remove(&id);
                    }
                },
                None => break,
            }
        }
        for transfer in self.transfers.drain(savepoint.transfers..) {
            self.transfer_index.remove(&transfer.id);
        }
        self.account_transfers.truncate(savepoint.account_transfers);
        self.balances.truncate(savepoint.balances);
        self.changes.truncate(savepoint.changes);
        self.budget_warnings = savepoint.budget_warnings;
    }

    /// Everything the batch changed, as final values, with the digest sum's
    /// change and the running totals of every code whose accounts changed.
    /// `first_timestamp ..= last_timestamp` are the batch's event timestamps.
    pub(crate) fn into_write_set(mut self, first_timestamp: u64, last_timestamp: u64) -> Result<WriteSet, StoreError> {
        let mut digest = DigestSum::ZERO;
        let mut element = Vec::with_capacity(256);
        let mut totals = FxHashMap::<(LedgerId, u16), CodeTotals>::default();
        let defer_accounts = self.store.defers_account_digest();
        // Sized up front: collecting a filtered iterator would grow (and
        // copy) the vector step by step, which cost a fifth of a batch.
        let mut accounts = Vec::with_capacity(self.accounts_dirty.len());
        let mut account_hashes = Vec::with_capacity(if defer_accounts { 0 } else { self.accounts_dirty.len() });
        for slot in &self.accounts_dirty {
            let Some(Slot { account: Some(account), original, original_hash, .. }) = self.accounts.get(*slot).copied()
            else {
                continue;
            };
            let key = (account.ledger, account.code);
            let code_totals = match totals.entry(key) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry
                    .insert(self.store.code_totals(key.0, key.1)?.unwrap_or_else(|| CodeTotals::empty(key.0, key.1))),
            };
            match &original {
                Some(original) => {
                    debug_assert_eq!((original.ledger, original.code), key, "ledger and code never change");
                    code_totals.sub(&original.balances());
                    if !defer_accounts {
                        let hash = original_hash.unwrap_or_else(|| Record::Account(original).hash_with(&mut element));
                        digest = digest.minus(hash);
                    }
                }
                None => code_totals.accounts += 1,
            }
            code_totals.add(&account.balances());
            if !defer_accounts {
                let hash = Record::Account(&account).hash_with(&mut element);
                digest = digest.plus(hash);
                account_hashes.push(hash);
            }
            accounts.push(account);
        }
        let mut pending = Vec::with_capacity(self.pending_dirty.len());
        for id in &self.pending_dirty {
            let Some(status) = self.pending.remove(id) else { continue };
            // A transfer created by this batch had no status before it.
            if !self.transfer_index.contains_key(id) {
                if let Some(original) = self.store.pending_status(*id)? {
                    digest.remove_with(Record::Pending(*id, &original), &mut element);
                }
            }
            digest.add_with(Record::Pending(*id, &status), &mut element);
            pending.push((*id, status));
        }
        for ledger in &self.ledgers {
            if let Some(original) = self.store.ledger(ledger.id)? {
                digest.remove_with(Record::Ledger(&original), &mut element);
            }
            digest.add_with(Record::Ledger(ledger), &mut element);
        }
        self.transfers.iter().for_each(|transfer| digest.add_with(Record::Transfer(transfer), &mut element));
        self.failures.iter().for_each(|(id, result)| digest.add_with(Record::Failure(*id, *result), &mut element));
        self.changes.iter().for_each(|change| digest.add_with(Record::Change(change), &mut element));
        let mut totals: Vec<CodeTotals> = totals.into_values().collect();
        totals.sort_unstable_by_key(|totals| (totals.ledger, totals.code));
        // Paired with the storage's check on reading them back.
        let fault = accounts
            .iter()
            .find_map(crate::invariants::account_fault)
            .or_else(|| self.transfers.iter().find_map(crate::invariants::transfer_fault));
        if let Some(fault) = fault {
            return Err(StoreError::Inconsistent { detail: format!("the batch would write {fault}") });
        }
        Ok(WriteSet {
            first_timestamp,
            last_timestamp,
            digest_delta: digest,
            totals,
            ledgers: self.ledgers,
            accounts,
            account_hashes,
            account_digest_deferred: defer_accounts,
            transfers: self.transfers,
            pending,
            failures: self.failures,
            account_transfers: self.account_transfers,
            balances: self.balances,
            changes: self.changes,
            budget_warnings: self.budget_warnings,
            reconciliations: Vec::new(),
            latest_statements: Vec::new(),
        })
    }
}
