//! The bank workload: two ledgers of accounts, some with
//! `debits_must_not_exceed_credits`, and what simulated clients ask of them
//! (single-phase transfers, pending transfers with and without a timeout,
//! posts and voids of them, linked chains, resends of old requests with the
//! same ids, and reads).

use coffer_ledger::{
    Account, AccountFlags, AccountId, Ledger, LedgerId, Operation, Transfer, TransferFlags, TransferId, TransferKind,
};

use crate::random::Random;

/// Accounts per ledger: the first funds the others and has no limit.
const ACCOUNTS_PER_LEDGER: u128 = 6;
/// The largest amount one transfer moves.
const AMOUNT_MAX: u64 = 500;
/// The longest pending timeout, in seconds (timeouts are 1 s to this).
const PENDING_TIMEOUT_MAX_S: u64 = 3;
/// Requests a client remembers to resend later with the same ids.
const RESENDS_KEPT: usize = 8;
/// Pending transfers one client keeps open before it posts or voids one.
const OPEN_PENDING_MAX: usize = 6;

/// One account of the bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BankAccount {
    /// Its id.
    pub id: AccountId,
    /// Its ledger.
    pub ledger: LedgerId,
    /// Whether `debits_must_not_exceed_credits` is set.
    pub limited: bool,
}

/// The ledgers and accounts every client works on.
#[derive(Clone, Debug)]
pub struct Bank {
    /// The ledgers.
    pub ledgers: Vec<Ledger>,
    /// The accounts.
    pub accounts: Vec<BankAccount>,
}

impl Bank {
    /// Two ledgers (KRW, USD) of [`ACCOUNTS_PER_LEDGER`] accounts each: the
    /// first of each unlimited (the fund), the next three limited, the
    /// last two unlimited (one of them keeps balance history).
    pub fn new() -> Self {
        Self::sized(ACCOUNTS_PER_LEDGER)
    }

    /// Two ledgers (KRW, USD) of `accounts_per_ledger` accounts each (at
    /// least 2): the first of each unlimited (the fund), the first half of
    /// the others limited, the rest unlimited (the last keeps balance
    /// history). `sized(6)` is [`Bank::new`].
    pub fn sized(accounts_per_ledger: u128) -> Self {
        assert!(accounts_per_ledger >= 2, "a transfer needs two accounts of one ledger");
        assert!(accounts_per_ledger < 100, "account ids are ledger × 100 + k");
        let ledger = |id: u32, currency: &str, scale: u8| Ledger {
            id: LedgerId(id),
            currency: currency.into(),
            scale,
            name: format!("{currency} ledger"),
            ..Default::default()
        };
        let ledgers = vec![ledger(1, "KRW", 0), ledger(2, "USD", 2)];
        let mut accounts = Vec::new();
        for ledger in &ledgers {
            for k in 0..accounts_per_ledger {
                accounts.push(BankAccount {
                    id: AccountId(u128::from(ledger.id.0) * 100 + k + 1),
                    ledger: ledger.id,
                    limited: (1..=accounts_per_ledger / 2).contains(&k),
                });
            }
        }
        Self { ledgers, accounts }
    }

    /// The operations that create the bank, in order.
    pub fn setup(&self) -> Vec<Operation> {
        let accounts = self
            .accounts
            .iter()
            .enumerate()
            .map(|(n, account)| {
                let mut flags = AccountFlags::NONE;
                if account.limited {
                    flags = flags.with(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
                }
                let last_of_ledger = self.accounts.get(n + 1).is_none_or(|next| next.ledger != account.ledger);
                if last_of_ledger {
                    flags = flags.with(AccountFlags::HISTORY);
                }
                Account { id: account.id, ledger: account.ledger, code: 100, flags, ..Default::default() }
            })
            .collect();
        vec![Operation::CreateLedgers(self.ledgers.clone()), Operation::CreateAccounts(accounts)]
    }

    /// The account with this id.
    pub fn account(&self, id: AccountId) -> Option<&BankAccount> {
        self.accounts.iter().find(|account| account.id == id)
    }

    fn in_ledger(&self, ledger: LedgerId) -> Vec<BankAccount> {
        self.accounts.iter().copied().filter(|account| account.ledger == ledger).collect()
    }
}

impl Default for Bank {
    fn default() -> Self {
        Self::new()
    }
}

/// A transfer id as the event log prints it: `T<client>.<n>` for the
/// workload's ids (client `c` numbers its transfers from 1), else the number.
pub fn transfer_name(id: TransferId) -> String {
    let (client, n) = (id.0 >> 64, id.0 & u128::from(u64::MAX));
    if (1..=u128::from(u32::MAX)).contains(&client) {
        format!("T{}.{n}", client - 1)
    } else {
        id.0.to_string()
    }
}

pub use coffer_ledger::invariants::TransferRole;

/// A pending transfer a client saw acknowledged and has not yet resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenPending {
    /// Its id.
    pub id: TransferId,
    /// Its amount.
    pub amount: u128,
}

/// What one client generates: fresh ids, its open pending transfers, and
/// requests it may resend.
#[derive(Clone, Debug)]
pub struct Workload {
    client: u32,
    next_id: u64,
    open_pending: Vec<OpenPending>,
    resendable: Vec<Operation>,
}

impl Workload {
    /// The workload of client `client` (ids never collide across clients).
    pub fn new(client: u32) -> Self {
        Self { client, next_id: 1, open_pending: Vec::new(), resendable: Vec::new() }
    }

    fn fresh_id(&mut self) -> TransferId {
        let id = (u128::from(self.client) + 1) << 64 | u128::from(self.next_id);
        self.next_id += 1;
        TransferId(id)
    }

    /// A pending transfer this client created was acknowledged.
    pub fn pending_acknowledged(&mut self, pending: OpenPending) {
        if !self.open_pending.iter().any(|open| open.id == pending.id) {
            self.open_pending.push(pending);
        }
    }

    /// A request finished: remember it for a later resend.
    pub fn finished(&mut self, operation: &Operation) {
        if self.resendable.len() == RESENDS_KEPT {
            self.resendable.remove(0);
        }
        self.resendable.push(operation.clone());
    }

    /// The next write request: one to four events.
    pub fn next_write(&mut self, bank: &Bank, random: &mut Random) -> Operation {
        let roll = random.below(100);
        if roll < 5 && !self.resendable.is_empty() {
            let index = random.below(self.resendable.len() as u64) as usize;
            return self.resendable[index].clone();
        }
        let resolve = !self.open_pending.is_empty() && (roll < 30 || !self.may_open_pending());
        let transfers = if resolve {
            vec![self.resolve_pending(random)]
        } else if roll < 45 {
            self.linked_chain(bank, random)
        } else if roll < 65 {
            vec![self.transfer(bank, random, TransferFlags::PENDING)]
        } else {
            let count = random.between(1, 3);
            (0..count).map(|_| self.transfer(bank, random, TransferFlags::NONE)).collect()
        };
        Operation::CreateTransfers(transfers)
    }

    /// A transfer between two accounts of one ledger, most often from the
    /// fund (which keeps the limited accounts in money).
    fn transfer(&mut self, bank: &Bank, random: &mut Random, flags: TransferFlags) -> Transfer {
        let ledger = bank.ledgers[random.below(bank.ledgers.len() as u64) as usize].id;
        let accounts = bank.in_ledger(ledger);
        let count = accounts.len() as u64;
        let debit = if random.chance(0.4) { 0 } else { random.below(count) as usize };
        let credit = (debit + 1 + random.below(count - 1) as usize) % accounts.len();
        let timeout = if flags.contains(TransferFlags::PENDING) && random.chance(0.6) {
            random.between(1, PENDING_TIMEOUT_MAX_S) as u32
        } else {
            0
        };
        Transfer {
            id: self.fresh_id(),
            debit_account_id: accounts[debit].id,
            credit_account_id: accounts[credit].id,
            amount: u128::from(random.between(1, AMOUNT_MAX)),
            ledger,
            code: 1,
            kind: TransferKind::Journal,
            flags,
            timeout,
            ..Default::default()
        }
    }

    /// Two or three transfers that succeed or fail together; the last one
    /// is sometimes larger than any limited account holds.
    fn linked_chain(&mut self, bank: &Bank, random: &mut Random) -> Vec<Transfer> {
        let count = random.between(2, 3) as usize;
        let mut chain: Vec<Transfer> = (0..count)
            .map(|_| {
                let flags = if random.chance(0.3) { TransferFlags::PENDING } else { TransferFlags::NONE };
                self.transfer(bank, random, flags)
            })
            .collect();
        if random.chance(0.3) {
            if let Some(last) = chain.last_mut() {
                last.amount = u128::from(AMOUNT_MAX) * 1_000;
            }
        }
        let last = chain.len() - 1;
        for transfer in &mut chain[..last] {
            transfer.flags = transfer.flags.with(TransferFlags::LINKED);
        }
        chain
    }

    /// A post (whole or part) or a void of one of this client's open
    /// pending transfers; it is resolved once, under one id.
    fn resolve_pending(&mut self, random: &mut Random) -> Transfer {
        let index = random.below(self.open_pending.len() as u64) as usize;
        let pending = self.open_pending.swap_remove(index);
        let (flags, amount) = match random.below(3) {
            0 => (TransferFlags::POST_PENDING, Transfer::AMOUNT_MAX),
            1 => (TransferFlags::POST_PENDING, u128::from(random.between(0, pending.amount as u64))),
            _ => (TransferFlags::VOID_PENDING, 0),
        };
        Transfer { id: self.fresh_id(), pending_id: pending.id, amount, flags, ..Default::default() }
    }

    /// Whether the client has room for another open pending transfer.
    fn may_open_pending(&self) -> bool {
        self.open_pending.len() < OPEN_PENDING_MAX
    }

    /// The account a read looks at.
    pub fn read_target(bank: &Bank, random: &mut Random) -> AccountId {
        bank.accounts[random.below(bank.accounts.len() as u64) as usize].id
    }
}
