//! The working state of one batch: an overlay over the store that collects
//! every change, supports savepoints for linked chains, and turns into a
//! [`WriteSet`] at the end.
//!
//! Nothing here touches the store except to read it: a prepared batch is
//! invisible until the caller commits its write set.

use rustc_hash::FxHashMap;

use crate::ids::{AccountId, LedgerId, TransferId};
use crate::model::{Account, AccountBalance, AccountTransfer, Ledger, PendingStatus, Side, Transfer};
use crate::results::CreateTransferResult;
use crate::store::{Store, StoreError, WriteSet};

/// An account as the batch sees it: `None` if it does not exist (yet).
#[derive(Clone, Copy)]
struct Slot {
    account: Option<Account>,
    /// Whether the batch changed it (and so listed it in `accounts_dirty`).
    dirty: bool,
}

/// What to restore when a linked chain fails.
enum Undo {
    Account(AccountId, Option<Account>),
    Pending(TransferId, Option<PendingStatus>),
}

/// A point a failed linked chain rolls back to.
pub(crate) struct Savepoint {
    undo: usize,
    transfers: usize,
    account_transfers: usize,
    balances: usize,
}

/// The overlay of one batch over a store.
pub(crate) struct Batch<'s, S: Store + ?Sized> {
    store: &'s S,
    /// Whether changes are logged for undo (only inside a linked chain).
    recording: bool,
    undo: Vec<Undo>,
    ledgers: Vec<Ledger>,
    accounts: FxHashMap<AccountId, Slot>,
    accounts_dirty: Vec<AccountId>,
    transfers: Vec<Transfer>,
    transfer_index: FxHashMap<TransferId, usize>,
    pending: FxHashMap<TransferId, PendingStatus>,
    pending_dirty: Vec<TransferId>,
    failures: Vec<(TransferId, CreateTransferResult)>,
    failure_index: FxHashMap<TransferId, CreateTransferResult>,
    account_transfers: Vec<AccountTransfer>,
    balances: Vec<AccountBalance>,
}

impl<'s, S: Store + ?Sized> Batch<'s, S> {
    /// An empty overlay over `store`, sized for `events` events.
    pub(crate) fn new(store: &'s S, events: usize) -> Self {
        let mut accounts = FxHashMap::default();
        accounts.reserve(events.min(4096) * 2);
        let mut transfer_index = FxHashMap::default();
        transfer_index.reserve(events);
        Self {
            store,
            recording: false,
            undo: Vec::new(),
            ledgers: Vec::new(),
            accounts,
            accounts_dirty: Vec::with_capacity(events.min(4096) * 2),
            transfers: Vec::with_capacity(events),
            transfer_index,
            pending: FxHashMap::default(),
            pending_dirty: Vec::new(),
            failures: Vec::new(),
            failure_index: FxHashMap::default(),
            account_transfers: Vec::with_capacity(events * 2),
            balances: Vec::new(),
        }
    }

    pub(crate) fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        match self.ledgers.iter().find(|ledger| ledger.id == id) {
            Some(ledger) => Ok(Some(ledger.clone())),
            None => self.store.ledger(id),
        }
    }

    pub(crate) fn insert_ledger(&mut self, ledger: Ledger) {
        self.ledgers.push(ledger);
    }

    pub(crate) fn account(&mut self, id: AccountId) -> Result<Option<Account>, StoreError> {
        use std::collections::hash_map::Entry;
        match self.accounts.entry(id) {
            Entry::Occupied(slot) => Ok(slot.get().account),
            Entry::Vacant(vacant) => {
                let account = self.store.account(id)?;
                vacant.insert(Slot { account, dirty: false });
                Ok(account)
            }
        }
    }

    /// An account that committed records refer to, so it must exist.
    pub(crate) fn referenced_account(&mut self, id: AccountId, by: TransferId) -> Result<Account, StoreError> {
        self.account(id)?.ok_or_else(|| StoreError::Inconsistent {
            detail: format!("account {id} referenced by transfer {by} does not exist"),
        })
    }

    pub(crate) fn put_account(&mut self, account: Account) {
        let slot = self.accounts.entry(account.id).or_insert(Slot { account: None, dirty: false });
        if self.recording {
            self.undo.push(Undo::Account(account.id, slot.account));
        }
        slot.account = Some(account);
        if !slot.dirty {
            slot.dirty = true;
            self.accounts_dirty.push(account.id);
        }
    }

    pub(crate) fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        match self.transfer_index.get(&id) {
            Some(&index) => Ok(self.transfers.get(index).copied()),
            None => self.store.transfer(id),
        }
    }

    /// Adds a transfer and its two history-index entries.
    pub(crate) fn insert_transfer(&mut self, transfer: Transfer) {
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
        if account.flags.contains(crate::AccountFlags::HISTORY) {
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
                Some(Undo::Account(id, previous)) => {
                    if let Some(slot) = self.accounts.get_mut(&id) {
                        slot.account = previous;
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
    }

    /// Everything the batch changed, as final values.
    pub(crate) fn into_write_set(mut self, last_timestamp: u64) -> WriteSet {
        let accounts =
            self.accounts_dirty.iter().filter_map(|id| self.accounts.get(id).and_then(|slot| slot.account)).collect();
        let pending =
            self.pending_dirty.iter().filter_map(|id| self.pending.remove(id).map(|status| (*id, status))).collect();
        WriteSet {
            last_timestamp,
            ledgers: self.ledgers,
            accounts,
            transfers: self.transfers,
            pending,
            failures: self.failures,
            account_transfers: self.account_transfers,
            balances: self.balances,
        }
    }
}
