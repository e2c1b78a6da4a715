//! A run of consecutive transfer batches prepared one after another and
//! committed as one write set.
//!
//! A replica that has several committed entries to apply at once may
//! prepare each against a [`Run`] (the store plus what the run's earlier
//! batches wrote) and commit [`Run::into_write_set`] in one write. Each
//! batch decides exactly what it would decide alone, after the batches
//! before it were committed: the results, the timestamps and the digest
//! delta do not depend on how entries are grouped into runs. What the
//! grouping saves is writing and hashing: an account that several batches
//! of the run change is written once, with its last value, and hashed for
//! the digest once (its batches leave it out of their digest deltas, and
//! the run adds its change from before the run to its last value); its
//! history rows of the whole run go in one group.
//!
//! Only `create_transfers` batches may be prepared against a run: their
//! reads are answered from the run's records first ([`Store::ledger`],
//! accounts, transfers, pending statuses, failures, running totals, the
//! last timestamp and the digest sum). The reads other operations make
//! (history, change log, expiry index, reconciliations, visitors) are
//! refused with an error once the run holds a batch, never answered from
//! the store alone.

use rustc_hash::FxHashMap;

use crate::digest::{DigestSum, Record};
use crate::ids::{AccountId, LedgerId, TransferId};
use crate::index::IndexKey;
use crate::model::{
    Account, AccountBalance, AccountTransfer, Change, CodeTotals, Ledger, PendingStatus, TotalsEntry, Transfer,
};
use crate::reconcile::Reconciliation;
use crate::results::CreateTransferResult;
use crate::store::{AccountFilter, ChangeFilter, Store, StoreError, WriteSet};

/// The most batches a run holds: a run of eight merges the account updates
/// of up to 65,512 transfers (about 8,000 of 10,000 accounts change in a
/// batch of 8,189 uniform transfers, all of them in eight) and keeps what
/// a trial balance as of a time replays bounded (see
/// [`crate::trial_balance_as_of`]).
pub const RUN_BATCHES_MAX: usize = 8;

/// The write sets of consecutive batches merged into one, as an overlay
/// over the store they will be committed to.
pub struct Run<'s, S: Store + ?Sized> {
    base: &'s S,
    held: SuspendedRun,
}

/// What a [`Run`] holds, apart from the store it is over: a run set aside
/// by [`Run::suspend`] between two batches and taken up again by
/// [`Run::resume`] over the same, unchanged store (a leader keeps the
/// batches it has prepared and answered so while their write waits for
/// more batches).
pub struct SuspendedRun {
    /// What the run's batches wrote, merged (see [`merge`]); `None` before
    /// the first batch.
    merged: Option<WriteSet>,
    /// Positions in `merged`'s lists, by key.
    accounts: FxHashMap<AccountId, usize>,
    transfers: FxHashMap<TransferId, usize>,
    pending: FxHashMap<TransferId, usize>,
    failures: FxHashMap<TransferId, usize>,
    totals: FxHashMap<(LedgerId, u16), usize>,
    ledgers: FxHashMap<LedgerId, usize>,
    batches: usize,
    /// How many batches the run expects (see [`Run::expecting`]).
    expected: usize,
}

impl<'s, S: Store + ?Sized> Run<'s, S> {
    /// An empty run over `base`: it answers every read as `base` does.
    pub fn new(base: &'s S) -> Self {
        Self::expecting(base, 1)
    }

    /// An empty run over `base` that expects `batches` batches (at most
    /// [`RUN_BATCHES_MAX`]): the first batch's lists and positions get room
    /// for that many batches of its size, so merging the later ones copies
    /// nothing already merged (left to grow by doubling, a run of four full
    /// batches copied megabytes again). Room reserved and not used touches
    /// no memory; a run may still hold fewer or more batches.
    pub fn expecting(base: &'s S, batches: usize) -> Self {
        let held = SuspendedRun {
            merged: None,
            accounts: FxHashMap::default(),
            transfers: FxHashMap::default(),
            pending: FxHashMap::default(),
            failures: FxHashMap::default(),
            totals: FxHashMap::default(),
            ledgers: FxHashMap::default(),
            batches: 0,
            expected: batches.clamp(1, RUN_BATCHES_MAX),
        };
        Self::resume(base, held)
    }

    /// Takes `held` up again over `base`, which must be the store it was
    /// prepared over, unchanged since: the run's records are merged over
    /// whatever `base` answers.
    pub fn resume(base: &'s S, held: SuspendedRun) -> Self {
        Self { base, held }
    }

    /// Sets the run aside, without the store it is over.
    pub fn suspend(self) -> SuspendedRun {
        self.held
    }

    /// How many batches' write sets the run holds.
    pub fn batches(&self) -> usize {
        self.held.batches
    }

    /// Adds the write set of a batch prepared against this run (so its
    /// timestamps follow the run's and it read the run's records).
    ///
    /// # Errors
    /// A run that holds [`RUN_BATCHES_MAX`] batches already, a write set
    /// that does not follow the run (its first timestamp is not after the
    /// run's last), one with reconciliations (not a transfer batch), or one
    /// not prepared against a run (its digest delta counts its accounts):
    /// nothing is added.
    pub fn push(&mut self, write_set: WriteSet) -> Result<(), StoreError> {
        if self.held.batches == RUN_BATCHES_MAX {
            return Err(StoreError::Inconsistent { detail: format!("a run holds at most {RUN_BATCHES_MAX} batches") });
        }
        if !write_set.account_digest_deferred {
            return Err(StoreError::Inconsistent {
                detail:
                    "a run holds batches prepared against it, and this write set's digest delta counts its accounts"
                        .to_string(),
            });
        }
        if !write_set.reconciliations.is_empty() || !write_set.latest_statements.is_empty() {
            return Err(StoreError::Inconsistent {
                detail: "a run holds transfer batches only, and this write set records reconciliations".to_string(),
            });
        }
        let Some(merged) = self.held.merged.as_mut() else {
            let merged = self.held.merged.insert(write_set);
            let more = self.held.expected - 1;
            merged.transfers.reserve(merged.transfers.len() * more);
            merged.account_transfers.reserve(merged.account_transfers.len() * more);
            merged.balances.reserve(merged.balances.len() * more);
            merged.changes.reserve(merged.changes.len() * more);
            self.held.transfers.reserve(merged.transfers.len() * self.held.expected);
            index(&mut self.held.accounts, merged.accounts.iter().map(|account| account.id), 0);
            index(&mut self.held.transfers, merged.transfers.iter().map(|transfer| transfer.id), 0);
            index(&mut self.held.pending, merged.pending.iter().map(|(id, _)| *id), 0);
            index(&mut self.held.failures, merged.failures.iter().map(|(id, _)| *id), 0);
            index(&mut self.held.totals, merged.totals.iter().map(|totals| (totals.ledger, totals.code)), 0);
            index(&mut self.held.ledgers, merged.ledgers.iter().map(|ledger| ledger.id), 0);
            self.held.batches = 1;
            return Ok(());
        };
        if write_set.first_timestamp <= merged.last_timestamp {
            return Err(StoreError::Inconsistent {
                detail: format!(
                    "a batch starting at {} does not follow the run, which ends at {}",
                    write_set.first_timestamp, merged.last_timestamp
                ),
            });
        }
        merge(
            merged,
            write_set,
            &mut self.held.accounts,
            &mut self.held.totals,
            &mut self.held.ledgers,
            &mut self.held.pending,
        );
        let merged = self.held.merged.as_ref().expect("set above");
        let from = self.held.transfers.len();
        index(&mut self.held.transfers, merged.transfers[from..].iter().map(|transfer| transfer.id), from);
        let from = self.held.failures.len();
        index(&mut self.held.failures, merged.failures[from..].iter().map(|(id, _)| *id), from);
        self.held.batches += 1;
        Ok(())
    }

    /// The run's merged write set (`None` if it holds no batch), to commit
    /// to the store in one write: its digest delta now counts each account
    /// the run changed, once.
    ///
    /// # Errors
    /// A read of an account's value before the run failed.
    pub fn into_write_set(self) -> Result<Option<WriteSet>, StoreError> {
        let Some(mut merged) = self.held.merged else { return Ok(None) };
        let (delta, hashes) = account_digest(self.base, &merged.accounts)?;
        merged.digest_delta = merged.digest_delta.plus(delta);
        merged.account_hashes = hashes;
        merged.account_digest_deferred = false;
        Ok(Some(merged))
    }

    /// The base store, to answer `read` (named in the error), while the
    /// run holds nothing: a read the run cannot merge (scans, history, the
    /// change log) is refused once it holds a batch, never answered from a
    /// base that lacks the run's writes.
    fn base_only(&self, read: &str) -> Result<&S, StoreError> {
        match self.held.merged {
            None => Ok(self.base),
            Some(_) => Err(StoreError::Inconsistent {
                detail: format!(
                    "a run of {} prepared batches cannot answer {read}: only transfer batches run",
                    self.held.batches
                ),
            }),
        }
    }
}

/// What changing `accounts` (their last values) adds to `base`'s digest
/// sum: each account's hash minus that of its value in `base`, if any; and
/// each account's hash.
fn account_digest<S: Store + ?Sized>(
    base: &S,
    accounts: &[Account],
) -> Result<(DigestSum, Vec<DigestSum>), StoreError> {
    let mut delta = DigestSum::ZERO;
    let mut hashes = Vec::with_capacity(accounts.len());
    let mut element = Vec::with_capacity(256);
    for account in accounts {
        if let Some((before, hash)) = base.account_hashed(account.id)? {
            delta = delta.minus(hash.unwrap_or_else(|| Record::Account(&before).hash_with(&mut element)));
        }
        let hash = Record::Account(account).hash_with(&mut element);
        delta = delta.plus(hash);
        hashes.push(hash);
    }
    Ok((delta, hashes))
}

/// Records `keys`' positions, the first being `from`.
fn index<K: std::hash::Hash + Eq>(positions: &mut FxHashMap<K, usize>, keys: impl Iterator<Item = K>, from: usize) {
    positions.reserve(keys.size_hint().0);
    for (at, key) in keys.enumerate() {
        positions.insert(key, from + at);
    }
}

/// Upserts `record` into `list` by its key's position in `positions`.
fn upsert<K: std::hash::Hash + Eq, T>(list: &mut Vec<T>, positions: &mut FxHashMap<K, usize>, key: K, record: T) {
    match positions.get(&key) {
        Some(&at) => list[at] = record,
        None => {
            positions.insert(key, list.len());
            list.push(record);
        }
    }
}

/// Merges `next` (the batch after `merged`'s) into `merged`: changed
/// records keep their last value, created ones and log rows are appended,
/// the digest deltas (which leave the accounts out) add up.
fn merge(
    merged: &mut WriteSet,
    next: WriteSet,
    accounts: &mut FxHashMap<AccountId, usize>,
    totals: &mut FxHashMap<(LedgerId, u16), usize>,
    ledgers: &mut FxHashMap<LedgerId, usize>,
    pending: &mut FxHashMap<TransferId, usize>,
) {
    merged.last_timestamp = next.last_timestamp;
    merged.digest_delta = merged.digest_delta.plus(next.digest_delta);
    for account in next.accounts {
        upsert(&mut merged.accounts, accounts, account.id, account);
    }
    for code_totals in next.totals {
        upsert(&mut merged.totals, totals, (code_totals.ledger, code_totals.code), code_totals);
    }
    // Stores write the totals in key order.
    if merged.totals.windows(2).any(|pair| (pair[0].ledger, pair[0].code) > (pair[1].ledger, pair[1].code)) {
        merged.totals.sort_unstable_by_key(|totals| (totals.ledger, totals.code));
        totals.clear();
        index(totals, merged.totals.iter().map(|totals| (totals.ledger, totals.code)), 0);
    }
    for ledger in next.ledgers {
        upsert(&mut merged.ledgers, ledgers, ledger.id, ledger);
    }
    for (id, status) in next.pending {
        upsert(&mut merged.pending, pending, id, (id, status));
    }
    merged.transfers.extend(next.transfers);
    merged.failures.extend(next.failures);
    merged.account_transfers.extend(next.account_transfers);
    merged.balances.extend(next.balances);
    merged.changes.extend(next.changes);
    merged.budget_warnings += next.budget_warnings;
}

impl<S: Store + ?Sized> Store for Run<'_, S> {
    fn last_timestamp(&self) -> Result<u64, StoreError> {
        match &self.held.merged {
            Some(merged) => Ok(merged.last_timestamp),
            None => self.base.last_timestamp(),
        }
    }

    fn ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        match (self.held.ledgers.get(&id), &self.held.merged) {
            (Some(&at), Some(merged)) => Ok(Some(merged.ledgers[at].clone())),
            _ => self.base.ledger(id),
        }
    }

    fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.account_hashed(id)?.map(|(account, _)| account))
    }

    fn account_hashed(&self, id: AccountId) -> Result<Option<(Account, Option<DigestSum>)>, StoreError> {
        match (self.held.accounts.get(&id), &self.held.merged) {
            // Batches prepared against the run do not hash accounts.
            (Some(&at), Some(merged)) => Ok(Some((merged.accounts[at], None))),
            _ => self.base.account_hashed(id),
        }
    }

    fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        match (self.held.transfers.get(&id), &self.held.merged) {
            (Some(&at), Some(merged)) => Ok(Some(merged.transfers[at])),
            _ => self.base.transfer(id),
        }
    }

    fn unused_transfer_ids(&self, ids: &[TransferId]) -> Result<Option<Vec<bool>>, StoreError> {
        let Some(mut unused) = self.base.unused_transfer_ids(ids)? else { return Ok(None) };
        for (id, unused) in ids.iter().zip(unused.iter_mut()) {
            *unused = *unused && !self.held.transfers.contains_key(id) && !self.held.failures.contains_key(id);
        }
        Ok(Some(unused))
    }

    fn pending_status(&self, id: TransferId) -> Result<Option<PendingStatus>, StoreError> {
        match (self.held.pending.get(&id), &self.held.merged) {
            (Some(&at), Some(merged)) => Ok(Some(merged.pending[at].1)),
            _ => self.base.pending_status(id),
        }
    }

    fn transfer_failure(&self, id: TransferId) -> Result<Option<CreateTransferResult>, StoreError> {
        match (self.held.failures.get(&id), &self.held.merged) {
            (Some(&at), Some(merged)) => Ok(Some(merged.failures[at].1)),
            _ => self.base.transfer_failure(id),
        }
    }

    fn expiring(&self, up_to: u64, limit: usize) -> Result<Vec<(u64, TransferId)>, StoreError> {
        self.base_only("the expiry index")?.expiring(up_to, limit)
    }

    fn account_transfers(&self, filter: &AccountFilter) -> Result<Vec<AccountTransfer>, StoreError> {
        self.base_only("an account's history")?.account_transfers(filter)
    }

    fn account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>, StoreError> {
        self.base_only("an account's balance history")?.account_balances(filter)
    }

    fn changes(&self, filter: &ChangeFilter) -> Result<Vec<Change>, StoreError> {
        self.base_only("the change log")?.changes(filter)
    }

    fn for_each_ledger(&self, visit: &mut dyn FnMut(&Ledger)) -> Result<(), StoreError> {
        self.base_only("every ledger")?.for_each_ledger(visit)
    }

    fn for_each_account(&self, visit: &mut dyn FnMut(&Account)) -> Result<(), StoreError> {
        self.base_only("every account")?.for_each_account(visit)
    }

    fn for_each_transfer(&self, visit: &mut dyn FnMut(&Transfer)) -> Result<(), StoreError> {
        self.base_only("every transfer")?.for_each_transfer(visit)
    }

    fn for_each_pending(&self, visit: &mut dyn FnMut(TransferId, &PendingStatus)) -> Result<(), StoreError> {
        self.base_only("every pending status")?.for_each_pending(visit)
    }

    fn for_each_failure(&self, visit: &mut dyn FnMut(TransferId, CreateTransferResult)) -> Result<(), StoreError> {
        self.base_only("every failure")?.for_each_failure(visit)
    }

    fn digest_sum(&self) -> Result<DigestSum, StoreError> {
        let sum = self.base.digest_sum()?;
        let Some(merged) = &self.held.merged else { return Ok(sum) };
        let (accounts, _) = account_digest(self.base, &merged.accounts)?;
        Ok(sum.plus(merged.digest_delta).plus(accounts))
    }

    fn defers_account_digest(&self) -> bool {
        true
    }

    fn code_totals(&self, ledger: LedgerId, code: u16) -> Result<Option<CodeTotals>, StoreError> {
        match (self.held.totals.get(&(ledger, code)), &self.held.merged) {
            (Some(&at), Some(merged)) => Ok(Some(merged.totals[at])),
            _ => self.base.code_totals(ledger, code),
        }
    }

    fn ledger_totals(&self, ledger: LedgerId) -> Result<Vec<CodeTotals>, StoreError> {
        self.base_only("a ledger's running totals")?.ledger_totals(ledger)
    }

    fn totals_around(
        &self,
        ledger: LedgerId,
        code: u16,
        timestamp: u64,
    ) -> Result<(Option<TotalsEntry>, Option<TotalsEntry>), StoreError> {
        self.base_only("the totals history")?.totals_around(ledger, code, timestamp)
    }

    fn reconciliation(&self, account: AccountId, statement: &str) -> Result<Option<Reconciliation>, StoreError> {
        self.base_only("a reconciliation")?.reconciliation(account, statement)
    }

    fn latest_reconciliation(&self, account: AccountId) -> Result<Option<Reconciliation>, StoreError> {
        self.base_only("a reconciliation")?.latest_reconciliation(account)
    }

    fn reconciliations(
        &self,
        account: AccountId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Reconciliation>, StoreError> {
        self.base_only("reconciliations")?.reconciliations(account, after, limit)
    }

    fn index_seek(
        &self,
        key: &IndexKey,
        timestamp_min: u64,
        timestamp_max: u64,
        reversed: bool,
    ) -> Result<Option<u64>, StoreError> {
        self.base_only("a query index")?.index_seek(key, timestamp_min, timestamp_max, reversed)
    }
}
