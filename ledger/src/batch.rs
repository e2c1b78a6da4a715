//! The working state of one batch: an overlay over the store that collects
//! every change, supports savepoints for linked chains, and turns into a
//! [`WriteSet`] at the end.
//!
//! Nothing here touches the store except to read it: a prepared batch is
//! invisible until the caller commits its write set.

use rustc_hash::FxHashMap;

use crate::ids::{AccountId, LedgerId, TransferId};
use crate::model::{
    Account, AccountBalance, AccountTransfer, Change, ChangeKind, Ledger, PendingStatus, Side, Transfer,
};
use crate::results::CreateTransferResult;
use crate::store::{Store, StoreError, WriteSet};
use crate::AccountFlags;

/// An account as the batch sees it: `None` if it does not exist (yet).
#[derive(Clone, Copy)]
struct Slot {
    account: Option<Account>,
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
}

/// The overlay of one batch over a store.
pub(crate) struct Batch<'s, S: Store + ?Sized> {
    store: &'s S,
    /// Whether changes are logged for undo (only inside a linked chain).
    recording: bool,
    undo: Vec<Undo>,
    ledgers: Vec<Ledger>,
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
    account_transfers: Vec<AccountTransfer>,
    balances: Vec<AccountBalance>,
    /// The change log's new entries, in timestamp order.
    changes: Vec<Change>,
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
            accounts: Vec::with_capacity(touched),
            account_index,
            accounts_dirty: Vec::with_capacity(touched),
            transfers: Vec::with_capacity(events),
            transfer_index,
            pending: FxHashMap::default(),
            pending_dirty: Vec::new(),
            failures: Vec::new(),
            failure_index: FxHashMap::default(),
            account_transfers: Vec::with_capacity(events * 2),
            balances: Vec::new(),
            // At most one change per event: one allocation per batch.
            changes: Vec::with_capacity(events),
        }
    }

    pub(crate) fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        match self.ledgers.iter().find(|ledger| ledger.id == id) {
            Some(ledger) => Ok(Some(ledger.clone())),
            None => self.store.ledger(id),
        }
    }

    /// Adds a created ledger and its change.
    pub(crate) fn insert_ledger(&mut self, ledger: Ledger) {
        self.record_change(ledger.timestamp, ChangeKind::LedgerCreated(ledger.id));
        self.ledgers.push(ledger);
    }

    /// Puts a created account in `slot` (from [`Self::account_slot`], which
    /// found none) and records its change.
    pub(crate) fn insert_account_at(&mut self, slot: usize, account: Account) {
        debug_assert!(self.account_at(slot).is_none(), "account {} is created once", account.id);
        let closed = account.flags.contains(AccountFlags::CLOSED);
        self.record_change(account.timestamp, ChangeKind::AccountCreated { id: account.id, closed });
        self.put_account_at(slot, account);
    }

    /// Records that the pending transfer `id` expired at `timestamp`.
    pub(crate) fn record_expiry(&mut self, id: TransferId, timestamp: u64) {
        self.record_change(timestamp, ChangeKind::PendingExpired(id));
    }

    /// Appends to the change log. Each event makes at most one change, and
    /// events run in timestamp order, so the log stays ordered.
    fn record_change(&mut self, timestamp: u64, kind: ChangeKind) {
        debug_assert!(self.changes.last().is_none_or(|last| last.timestamp < timestamp), "changes in order");
        self.changes.push(Change { timestamp, kind });
    }

    /// The slot of account `id`, loading it from the store on first touch.
    pub(crate) fn account_slot(&mut self, id: AccountId) -> Result<usize, StoreError> {
        use std::collections::hash_map::Entry;
        match self.account_index.entry(id) {
            Entry::Occupied(entry) => Ok(*entry.get()),
            Entry::Vacant(vacant) => {
                let account = self.store.account(id)?;
                let slot = self.accounts.len();
                self.accounts.push(Slot { account, dirty: false });
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
            None => self.store.transfer(id),
        }
    }

    /// Adds a transfer, its two history-index entries and its change.
    pub(crate) fn insert_transfer(&mut self, transfer: Transfer) {
        self.record_change(transfer.timestamp, ChangeKind::TransferCreated(transfer.id));
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
    }

    /// Everything the batch changed, as final values.
    pub(crate) fn into_write_set(mut self, last_timestamp: u64) -> WriteSet {
        // Sized up front: collecting a filtered iterator would grow (and
        // copy) the vector step by step, which cost a fifth of a batch.
        let mut accounts = Vec::with_capacity(self.accounts_dirty.len());
        accounts.extend(self.accounts_dirty.iter().filter_map(|slot| self.accounts.get(*slot).and_then(|e| e.account)));
        let mut pending = Vec::with_capacity(self.pending_dirty.len());
        pending.extend(self.pending_dirty.iter().filter_map(|id| self.pending.remove(id).map(|status| (*id, status))));
        WriteSet {
            last_timestamp,
            ledgers: self.ledgers,
            accounts,
            transfers: self.transfers,
            pending,
            failures: self.failures,
            account_transfers: self.account_transfers,
            balances: self.balances,
            changes: self.changes,
        }
    }
}
