//! The ledger's rules as specifications: one test per result code of
//! `CreateLedgerResult`, `CreateAccountResult` and `CreateTransferResult`,
//! named for the rule it checks, then two-phase transfers, linked chains,
//! `id_already_failed`, balancing, closing, limits, overflows and the reads.
//!
//! Every result a test gets through [`Books`] is recorded, so
//! `every_result_code_is_produced_by_the_rule_test_listed_for_it` can run the
//! table in [`rule_tests`] and prove that each code of every `ALL` list is
//! produced by the test listed for it. A new result code without a rule test
//! fails that test.

use std::cell::RefCell;
use std::collections::BTreeSet;

use coffer_ledger::{
    balance_as_of, budget_warning, get_account_balances, get_account_transfers, lookup_accounts, lookup_transfers,
    trial_balance, Account, AccountBalance, AccountFilter, AccountFlags, AccountId, AccountKind, BalanceTotals,
    BudgetPolicy, CloseResult, CloseStep, CodeRange, CreateAccountResult, CreateLedgerResult, CreateTransferResult,
    ExpireResult, Ledger, LedgerId, MemoryStore, OperationResults, PendingState, Period, PeriodChange, QueryError,
    SetPeriodResult, Sides, StateMachine, Store, Transfer, TransferFlags, TransferId, TransferKind, YearClose,
    BATCH_EVENTS_MAX, EXPIRE_EVENTS_MAX, NS_PER_S,
};

use CreateAccountResult as AccountResult;
use CreateLedgerResult as LedgerResult;
use CreateTransferResult as TransferResult;

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

const KRW: LedgerId = LedgerId(1);
const USD: LedgerId = LedgerId(2);

/// A cash account, opened by [`Books::new`].
const CASH: AccountId = AccountId(1);
/// A non-cash account, opened by [`Books::new`].
const OTHER: AccountId = AccountId(2);
/// A second cash account, opened only by the tests that need it.
const CASH_2: AccountId = AccountId(3);
/// A second non-cash account, opened only by the tests that need it.
const OTHER_2: AccountId = AccountId(4);
/// An account id no test opens.
const MISSING: AccountId = AccountId(99);

/// How far the clock moves between batches.
const STEP: u64 = 1_000;

fn krw() -> Ledger {
    Ledger::new(KRW, "KRW", 0, "Korean won")
}

fn usd() -> Ledger {
    Ledger::new(USD, "USD", 2, "US dollar")
}

/// A KRW cash account (chart code 101).
fn cash(id: AccountId) -> Account {
    Account { id, ledger: KRW, code: 101, kind: AccountKind::Cash, ..Default::default() }
}

/// A KRW non-cash account (chart code 401).
fn other(id: AccountId) -> Account {
    Account { id, ledger: KRW, code: 401, kind: AccountKind::Other, ..Default::default() }
}

fn with_flags(account: Account, flags: AccountFlags) -> Account {
    Account { flags: account.flags | flags, ..account }
}

/// A posted KRW journal entry (code 1) of `amount` from `debit` to `credit`.
fn journal(id: u128, debit: AccountId, credit: AccountId, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: KRW,
        code: 1,
        kind: TransferKind::Journal,
        ..Default::default()
    }
}

/// A pending (reserved, not yet posted) journal entry.
fn pending(id: u128, debit: AccountId, credit: AccountId, amount: u128) -> Transfer {
    flagged(journal(id, debit, credit, amount), TransferFlags::PENDING)
}

/// Posts `amount` of pending transfer `pending_id`, inheriting every other field.
fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        pending_id: TransferId(pending_id),
        amount,
        flags: TransferFlags::POST_PENDING,
        ..Default::default()
    }
}

/// Voids pending transfer `pending_id`, inheriting every other field.
fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        pending_id: TransferId(pending_id),
        flags: TransferFlags::VOID_PENDING,
        ..Default::default()
    }
}

fn flagged(transfer: Transfer, flags: TransferFlags) -> Transfer {
    Transfer { flags: transfer.flags | flags, ..transfer }
}

fn linked(transfer: Transfer) -> Transfer {
    flagged(transfer, TransferFlags::LINKED)
}

fn linked_account(account: Account) -> Account {
    with_flags(account, AccountFlags::LINKED)
}

/// An account's four balances, for comparing in one assertion.
#[derive(Debug, PartialEq, Eq)]
struct Balances {
    debits_pending: u128,
    debits_posted: u128,
    credits_pending: u128,
    credits_posted: u128,
}

/// Balances in the order `debits_pending, debits_posted, credits_pending, credits_posted`.
fn balances(debits_pending: u128, debits_posted: u128, credits_pending: u128, credits_posted: u128) -> Balances {
    Balances { debits_pending, debits_posted, credits_pending, credits_posted }
}

// ---------------------------------------------------------------------------
// The books under test, recording every result they produce
// ---------------------------------------------------------------------------

/// A result code of any of the three operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Produced {
    Ledger(CreateLedgerResult),
    Account(CreateAccountResult),
    Transfer(CreateTransferResult),
}

thread_local! {
    /// Every result produced on this thread (each test runs on its own thread).
    static PRODUCED: RefCell<BTreeSet<Produced>> = const { RefCell::new(BTreeSet::new()) };
}

fn record(results: impl IntoIterator<Item = Produced>) {
    PRODUCED.with(|produced| produced.borrow_mut().extend(results));
}

/// A state machine over a memory store, with a clock that moves on by [`STEP`] per batch.
struct Books {
    machine: StateMachine<MemoryStore>,
    now: u64,
}

impl Books {
    /// No ledger and no account.
    fn empty() -> Self {
        Self { machine: StateMachine::new(MemoryStore::new()), now: 0 }
    }

    /// The KRW ledger with a cash account [`CASH`] and a non-cash account [`OTHER`].
    fn new() -> Self {
        let mut books = Self::empty();
        assert_eq!(books.create_ledger(krw()), LedgerResult::Created);
        books.open(&[cash(CASH), other(OTHER)]);
        books
    }

    /// Creates accounts that must all be created.
    fn open(&mut self, accounts: &[Account]) {
        let results = self.create_accounts(accounts);
        assert!(results.iter().all(|result| *result == AccountResult::Created), "{results:?}");
    }

    /// The next batch timestamp: [`STEP`] after the last batch or its last event.
    fn tick(&mut self) -> u64 {
        let last_event = self.store().last_timestamp().expect("the store reads");
        self.now = self.now.max(last_event) + STEP;
        self.now
    }

    /// Lets `ns` nanoseconds pass before the next batch.
    fn wait(&mut self, ns: u64) {
        self.now += ns;
    }

    fn create_ledgers(&mut self, events: &[Ledger]) -> Vec<CreateLedgerResult> {
        let timestamp = self.tick();
        let results = self.machine.create_ledgers(timestamp, events).expect("the batch is well formed");
        record(results.iter().copied().map(Produced::Ledger));
        results
    }

    fn create_ledger(&mut self, event: Ledger) -> CreateLedgerResult {
        self.create_ledgers(&[event])[0]
    }

    fn create_accounts(&mut self, events: &[Account]) -> Vec<CreateAccountResult> {
        let timestamp = self.tick();
        let results = self.machine.create_accounts(timestamp, events).expect("the batch is well formed");
        record(results.iter().copied().map(Produced::Account));
        results
    }

    fn create_account(&mut self, event: Account) -> CreateAccountResult {
        self.create_accounts(&[event])[0]
    }

    fn create_transfers(&mut self, events: &[Transfer]) -> Vec<CreateTransferResult> {
        let timestamp = self.tick();
        self.create_transfers_at(timestamp, events)
    }

    /// Creates transfers in a batch stamped `timestamp`, which must be later than any before.
    fn create_transfers_at(&mut self, timestamp: u64, events: &[Transfer]) -> Vec<CreateTransferResult> {
        self.now = timestamp;
        let results = self.machine.create_transfers(timestamp, events).expect("the batch is well formed");
        record(results.iter().copied().map(Produced::Transfer));
        results
    }

    fn create_transfer(&mut self, event: Transfer) -> CreateTransferResult {
        self.create_transfers(&[event])[0]
    }

    fn set_period(&mut self, ledger: LedgerId, period: Period) -> SetPeriodResult {
        let timestamp = self.tick();
        let results = self.machine.set_periods(timestamp, &[PeriodChange { ledger, period }]).expect("well formed");
        results[0]
    }

    fn expire(&mut self) -> ExpireResult {
        let timestamp = self.tick();
        self.machine.expire_pending(timestamp).expect("the store is consistent")
    }

    fn store(&self) -> &MemoryStore {
        self.machine.store()
    }

    fn account(&self, id: AccountId) -> Account {
        self.store().account(id).expect("the store reads").expect("the account exists")
    }

    fn is_closed(&self, id: AccountId) -> bool {
        self.account(id).flags.contains(AccountFlags::CLOSED)
    }

    fn balances(&self, id: AccountId) -> Balances {
        let account = self.account(id);
        balances(account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted)
    }

    fn transfer(&self, id: u128) -> Option<Transfer> {
        self.store().transfer(TransferId(id)).expect("the store reads")
    }

    fn pending_state(&self, id: u128) -> Option<PendingState> {
        self.store().pending_status(TransferId(id)).expect("the store reads").map(|status| status.state)
    }
}

// ---------------------------------------------------------------------------
// create_ledgers: one test per result code
// ---------------------------------------------------------------------------

#[test]
fn ledger_with_valid_fields_is_created_and_stamped() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(krw()), LedgerResult::Created);
    let stored = books.store().ledger(KRW).unwrap();
    assert_eq!(stored, Some(Ledger { timestamp: books.now, ..krw() }));
}

#[test]
fn ledger_with_a_client_timestamp_is_rejected_as_timestamp_must_be_zero() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(Ledger { timestamp: 1, ..krw() }), LedgerResult::TimestampMustBeZero);
    assert_eq!(books.store().ledger(KRW).unwrap(), None);
}

#[test]
fn ledger_id_zero_is_rejected_as_id_must_not_be_zero() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(Ledger { id: LedgerId(0), ..krw() }), LedgerResult::IdMustNotBeZero);
}

#[test]
fn ledger_id_u32_max_is_rejected_as_id_must_not_be_int_max() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(Ledger { id: LedgerId(u32::MAX), ..krw() }), LedgerResult::IdMustNotBeIntMax);
}

#[test]
fn ledger_retry_with_another_currency_fails_with_exists_with_different_currency() {
    let mut books = Books::new();
    let retry = Ledger { currency: "USD".into(), ..krw() };
    assert_eq!(books.create_ledger(retry), LedgerResult::ExistsWithDifferentCurrency);
}

#[test]
fn ledger_retry_with_another_scale_fails_with_exists_with_different_scale() {
    let mut books = Books::new();
    assert_eq!(books.create_ledger(Ledger { scale: 2, ..krw() }), LedgerResult::ExistsWithDifferentScale);
}

#[test]
fn ledger_retry_with_another_name_fails_with_exists_with_different_name() {
    let mut books = Books::new();
    assert_eq!(books.create_ledger(Ledger { name: "Won".into(), ..krw() }), LedgerResult::ExistsWithDifferentName);
}

#[test]
fn ledger_retry_with_the_same_fields_is_exists_and_keeps_the_first_timestamp() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(krw()), LedgerResult::Created);
    let created_at = books.now;
    assert_eq!(books.create_ledger(krw()), LedgerResult::Exists);
    assert_eq!(books.store().ledger(KRW).unwrap().map(|ledger| ledger.timestamp), Some(created_at));
}

#[test]
fn ledger_currency_outside_upper_case_letters_digits_and_underscore_fails_with_currency_must_be_valid() {
    let mut books = Books::empty();
    for currency in ["", "krw", "KR-W", "ABCDEFGHIJKLM"] {
        let ledger = Ledger { currency: currency.into(), ..krw() };
        assert_eq!(books.create_ledger(ledger), LedgerResult::CurrencyMustBeValid, "{currency:?}");
    }
    let gold = Ledger { id: LedgerId(7), currency: "GOLD_999_ABC".into(), ..krw() };
    assert_eq!(books.create_ledger(gold), LedgerResult::Created);
}

#[test]
fn ledger_scale_above_18_fails_with_scale_must_not_exceed_max() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(Ledger { scale: 19, ..krw() }), LedgerResult::ScaleMustNotExceedMax);
    assert_eq!(books.create_ledger(Ledger { scale: 18, ..krw() }), LedgerResult::Created);
}

#[test]
fn ledger_with_an_empty_name_fails_with_name_must_not_be_empty() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(Ledger { name: String::new(), ..krw() }), LedgerResult::NameMustNotBeEmpty);
}

#[test]
fn ledger_name_over_64_bytes_fails_with_name_too_long() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(Ledger { name: "x".repeat(65), ..krw() }), LedgerResult::NameTooLong);
    assert_eq!(books.create_ledger(Ledger { name: "x".repeat(64), ..krw() }), LedgerResult::Created);
}

// ---------------------------------------------------------------------------
// create_accounts: one test per result code
// ---------------------------------------------------------------------------

#[test]
fn account_with_valid_fields_is_created_with_zero_balances_and_stamped() {
    let mut books = Books::new();
    assert_eq!(books.create_account(other(OTHER_2)), AccountResult::Created);
    assert_eq!(books.account(OTHER_2), Account { timestamp: books.now, ..other(OTHER_2) });
}

#[test]
fn account_chain_with_a_failing_event_creates_none_of_it_and_fails_the_rest_as_linked_event_failed() {
    let mut books = Books::new();
    let results = books.create_accounts(&[
        linked_account(other(AccountId(10))),
        linked_account(other(AccountId(11))),
        Account { code: 0, ..other(AccountId(12)) },
        other(AccountId(13)),
    ]);
    assert_eq!(
        results,
        [
            AccountResult::LinkedEventFailed,
            AccountResult::LinkedEventFailed,
            AccountResult::CodeMustNotBeZero,
            AccountResult::Created
        ]
    );
    let found = lookup_accounts(books.store(), &[AccountId(10), AccountId(11), AccountId(12), AccountId(13)]).unwrap();
    assert_eq!(found.iter().map(Option::is_some).collect::<Vec<_>>(), [false, false, false, true]);
}

#[test]
fn account_chain_left_open_at_the_end_of_the_batch_fails_with_linked_event_chain_open() {
    let mut books = Books::new();
    let results = books.create_accounts(&[linked_account(other(AccountId(10))), linked_account(other(AccountId(11)))]);
    assert_eq!(results, [AccountResult::LinkedEventFailed, AccountResult::LinkedEventChainOpen]);
    assert_eq!(lookup_accounts(books.store(), &[AccountId(10), AccountId(11)]).unwrap(), [None, None]);
}

#[test]
fn account_with_a_client_timestamp_is_rejected_as_timestamp_must_be_zero() {
    let mut books = Books::new();
    assert_eq!(books.create_account(Account { timestamp: 1, ..other(OTHER_2) }), AccountResult::TimestampMustBeZero);
}

#[test]
fn account_with_an_undefined_flag_bit_is_rejected_as_reserved_flag() {
    let mut books = Books::new();
    let account = Account { flags: AccountFlags::from_bits(1 << 5), ..other(OTHER_2) };
    assert_eq!(books.create_account(account), AccountResult::ReservedFlag);
}

#[test]
fn account_id_zero_is_rejected_as_id_must_not_be_zero() {
    let mut books = Books::new();
    assert_eq!(books.create_account(other(AccountId(0))), AccountResult::IdMustNotBeZero);
}

#[test]
fn account_id_u128_max_is_rejected_as_id_must_not_be_int_max() {
    let mut books = Books::new();
    assert_eq!(books.create_account(other(AccountId(u128::MAX))), AccountResult::IdMustNotBeIntMax);
}

#[test]
fn account_retry_with_other_flags_fails_with_exists_with_different_flags() {
    let mut books = Books::new();
    let retry = with_flags(cash(CASH), AccountFlags::HISTORY);
    assert_eq!(books.create_account(retry), AccountResult::ExistsWithDifferentFlags);
}

#[test]
fn account_retry_with_another_user_data_128_fails_with_exists_with_different_user_data_128() {
    let mut books = Books::new();
    let retry = Account { user_data_128: 7, ..cash(CASH) };
    assert_eq!(books.create_account(retry), AccountResult::ExistsWithDifferentUserData128);
}

#[test]
fn account_retry_with_another_user_data_64_fails_with_exists_with_different_user_data_64() {
    let mut books = Books::new();
    let retry = Account { user_data_64: 7, ..cash(CASH) };
    assert_eq!(books.create_account(retry), AccountResult::ExistsWithDifferentUserData64);
}

#[test]
fn account_retry_with_another_user_data_32_fails_with_exists_with_different_user_data_32() {
    let mut books = Books::new();
    let retry = Account { user_data_32: 7, ..cash(CASH) };
    assert_eq!(books.create_account(retry), AccountResult::ExistsWithDifferentUserData32);
}

#[test]
fn account_retry_in_another_ledger_fails_with_exists_with_different_ledger() {
    let mut books = Books::new();
    let retry = Account { ledger: USD, ..cash(CASH) };
    assert_eq!(books.create_account(retry), AccountResult::ExistsWithDifferentLedger);
}

#[test]
fn account_retry_with_another_code_fails_with_exists_with_different_code() {
    let mut books = Books::new();
    let retry = Account { code: 102, ..cash(CASH) };
    assert_eq!(books.create_account(retry), AccountResult::ExistsWithDifferentCode);
}

#[test]
fn account_retry_with_another_kind_fails_with_exists_with_different_kind() {
    let mut books = Books::new();
    let retry = Account { kind: AccountKind::Other, ..cash(CASH) };
    assert_eq!(books.create_account(retry), AccountResult::ExistsWithDifferentKind);
}

#[test]
fn account_retry_with_the_same_fields_is_exists_and_changes_nothing() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 100)), TransferResult::Created);
    let before = books.account(CASH);
    assert_eq!(books.create_account(cash(CASH)), AccountResult::Exists);
    assert_eq!(books.account(CASH), before);
}

#[test]
fn account_retry_ignores_the_closed_flag_a_closing_transfer_set() {
    let mut books = Books::new();
    let closing = flagged(pending(1, CASH, OTHER, 10), TransferFlags::CLOSING_DEBIT);
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert!(books.is_closed(CASH));
    assert_eq!(books.create_account(cash(CASH)), AccountResult::Exists);
    assert_eq!(books.create_account(with_flags(cash(CASH), AccountFlags::CLOSED)), AccountResult::Exists);
}

#[test]
fn account_with_both_limit_flags_fails_with_flags_are_mutually_exclusive() {
    let mut books = Books::new();
    let both = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    assert_eq!(books.create_account(with_flags(other(OTHER_2), both)), AccountResult::FlagsAreMutuallyExclusive);
}

#[test]
fn account_with_debits_pending_fails_with_debits_pending_must_be_zero() {
    let mut books = Books::new();
    let account = Account { debits_pending: 1, ..other(OTHER_2) };
    assert_eq!(books.create_account(account), AccountResult::DebitsPendingMustBeZero);
}

#[test]
fn account_with_debits_posted_fails_with_debits_posted_must_be_zero() {
    let mut books = Books::new();
    let account = Account { debits_posted: 1, ..other(OTHER_2) };
    assert_eq!(books.create_account(account), AccountResult::DebitsPostedMustBeZero);
}

#[test]
fn account_with_credits_pending_fails_with_credits_pending_must_be_zero() {
    let mut books = Books::new();
    let account = Account { credits_pending: 1, ..other(OTHER_2) };
    assert_eq!(books.create_account(account), AccountResult::CreditsPendingMustBeZero);
}

#[test]
fn account_with_credits_posted_fails_with_credits_posted_must_be_zero() {
    let mut books = Books::new();
    let account = Account { credits_posted: 1, ..other(OTHER_2) };
    assert_eq!(books.create_account(account), AccountResult::CreditsPostedMustBeZero);
}

#[test]
fn account_in_ledger_zero_fails_with_ledger_must_not_be_zero() {
    let mut books = Books::new();
    let account = Account { ledger: LedgerId(0), ..other(OTHER_2) };
    assert_eq!(books.create_account(account), AccountResult::LedgerMustNotBeZero);
}

#[test]
fn account_with_code_zero_fails_with_code_must_not_be_zero() {
    let mut books = Books::new();
    assert_eq!(books.create_account(Account { code: 0, ..other(OTHER_2) }), AccountResult::CodeMustNotBeZero);
}

#[test]
fn account_in_an_unknown_ledger_fails_with_ledger_not_found() {
    let mut books = Books::new();
    assert_eq!(books.create_account(Account { ledger: USD, ..other(OTHER_2) }), AccountResult::LedgerNotFound);
}

// ---------------------------------------------------------------------------
// create_transfers: one test per result code
// ---------------------------------------------------------------------------

#[test]
fn journal_transfer_is_created_and_moves_its_amount_between_posted_balances() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 100)), TransferResult::Created);
    assert_eq!(books.balances(CASH), balances(0, 100, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 0, 100));
    assert_eq!(books.transfer(1), Some(Transfer { timestamp: books.now, ..journal(1, CASH, OTHER, 100) }));
}

#[test]
fn transfer_chain_with_a_failing_event_fails_its_earlier_events_as_linked_event_failed() {
    let mut books = Books::new();
    let results = books.create_transfers(&[linked(journal(1, CASH, OTHER, 10)), journal(2, CASH, MISSING, 10)]);
    assert_eq!(results, [TransferResult::LinkedEventFailed, TransferResult::CreditAccountNotFound]);
    assert_eq!(books.transfer(1), None);
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
}

#[test]
fn transfer_chain_left_open_at_the_end_of_the_batch_fails_with_linked_event_chain_open() {
    let mut books = Books::new();
    let results = books.create_transfers(&[
        journal(1, CASH, OTHER, 5),
        linked(journal(2, CASH, OTHER, 10)),
        linked(journal(3, CASH, OTHER, 20)),
    ]);
    assert_eq!(
        results,
        [TransferResult::Created, TransferResult::LinkedEventFailed, TransferResult::LinkedEventChainOpen]
    );
    assert_eq!((books.transfer(2), books.transfer(3)), (None, None));
    assert_eq!(books.balances(CASH), balances(0, 5, 0, 0));
}

#[test]
fn transfer_with_a_client_timestamp_is_rejected_as_timestamp_must_be_zero() {
    let mut books = Books::new();
    let transfer = Transfer { timestamp: 1, ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::TimestampMustBeZero);
}

#[test]
fn transfer_with_an_undefined_flag_bit_is_rejected_as_reserved_flag() {
    let mut books = Books::new();
    let transfer = Transfer { flags: TransferFlags::from_bits(1 << 9), ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::ReservedFlag);
}

#[test]
fn transfer_id_zero_is_rejected_as_id_must_not_be_zero() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(0, CASH, OTHER, 10)), TransferResult::IdMustNotBeZero);
}

#[test]
fn transfer_id_u128_max_is_rejected_as_id_must_not_be_int_max() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(u128::MAX, CASH, OTHER, 10)), TransferResult::IdMustNotBeIntMax);
}

/// Books holding journal transfer 1 of 100 from [`CASH`] to [`OTHER`], to retry.
fn books_with_transfer_1() -> Books {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 100)), TransferResult::Created);
    books
}

#[test]
fn transfer_retry_with_other_flags_fails_with_exists_with_different_flags() {
    let mut books = books_with_transfer_1();
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, 100)), TransferResult::ExistsWithDifferentFlags);
}

#[test]
fn post_retry_naming_another_pending_transfer_fails_with_exists_with_different_pending_id() {
    let mut books = Books::new();
    let pendings = books.create_transfers(&[pending(1, CASH, OTHER, 100), pending(2, CASH, OTHER, 100)]);
    assert_eq!(pendings, [TransferResult::Created, TransferResult::Created]);
    assert_eq!(books.create_transfer(post(3, 1, Transfer::AMOUNT_MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(post(3, 2, Transfer::AMOUNT_MAX)), TransferResult::ExistsWithDifferentPendingId);
}

#[test]
fn transfer_retry_with_another_timeout_fails_with_exists_with_different_timeout() {
    let mut books = Books::new();
    let reservation = Transfer { timeout: 60, ..pending(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(reservation), TransferResult::Created);
    let retry = Transfer { timeout: 30, ..reservation };
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentTimeout);
}

#[test]
fn transfer_retry_with_another_debit_account_fails_with_exists_with_different_debit_account_id() {
    let mut books = books_with_transfer_1();
    let retry = journal(1, CASH_2, OTHER, 100);
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentDebitAccountId);
}

#[test]
fn transfer_retry_with_another_credit_account_fails_with_exists_with_different_credit_account_id() {
    let mut books = books_with_transfer_1();
    let retry = journal(1, CASH, OTHER_2, 100);
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentCreditAccountId);
}

#[test]
fn transfer_retry_with_another_amount_fails_with_exists_with_different_amount() {
    let mut books = books_with_transfer_1();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 99)), TransferResult::ExistsWithDifferentAmount);
}

#[test]
fn transfer_retry_with_another_user_data_128_fails_with_exists_with_different_user_data_128() {
    let mut books = books_with_transfer_1();
    let retry = Transfer { user_data_128: 7, ..journal(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentUserData128);
}

#[test]
fn transfer_retry_with_another_user_data_64_fails_with_exists_with_different_user_data_64() {
    let mut books = books_with_transfer_1();
    let retry = Transfer { user_data_64: 7, ..journal(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentUserData64);
}

#[test]
fn transfer_retry_with_another_user_data_32_fails_with_exists_with_different_user_data_32() {
    let mut books = books_with_transfer_1();
    let retry = Transfer { user_data_32: 7, ..journal(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentUserData32);
}

#[test]
fn transfer_retry_in_another_ledger_fails_with_exists_with_different_ledger() {
    let mut books = books_with_transfer_1();
    let retry = Transfer { ledger: USD, ..journal(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentLedger);
}

#[test]
fn transfer_retry_with_another_code_fails_with_exists_with_different_code() {
    let mut books = books_with_transfer_1();
    let retry = Transfer { code: 2, ..journal(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentCode);
}

#[test]
fn transfer_retry_with_another_kind_fails_with_exists_with_different_kind() {
    let mut books = books_with_transfer_1();
    let retry = Transfer { kind: TransferKind::Receipt, ..journal(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(retry), TransferResult::ExistsWithDifferentKind);
}

#[test]
fn transfer_retry_with_the_same_fields_is_exists_and_moves_nothing_again() {
    let mut books = books_with_transfer_1();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 100)), TransferResult::Exists);
    assert_eq!(books.balances(CASH), balances(0, 100, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 0, 100));
}

#[test]
fn transfer_retry_after_a_transient_failure_fails_with_id_already_failed_once_the_account_exists() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER_2, 10)), TransferResult::CreditAccountNotFound);
    assert_eq!(books.store().transfer_failure(TransferId(1)).unwrap(), Some(TransferResult::CreditAccountNotFound));
    books.open(&[other(OTHER_2)]);
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER_2, 10)), TransferResult::IdAlreadyFailed);
    assert_eq!(books.transfer(1), None);
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER_2, 10)), TransferResult::Created);
}

#[test]
fn transfer_combining_post_or_void_with_an_excluded_flag_fails_with_flags_are_mutually_exclusive() {
    use TransferFlags as F;
    let mut books = Books::new();
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, 100)), TransferResult::Created);
    let combinations = [
        F::POST_PENDING | F::VOID_PENDING,
        F::POST_PENDING | F::PENDING,
        F::VOID_PENDING | F::PENDING,
        F::POST_PENDING | F::BALANCING_DEBIT,
        F::VOID_PENDING | F::BALANCING_CREDIT,
        F::POST_PENDING | F::CLOSING_DEBIT,
        F::VOID_PENDING | F::CLOSING_CREDIT,
    ];
    for (id, flags) in (10..).zip(combinations) {
        let transfer = Transfer { flags, ..post(id, 1, Transfer::AMOUNT_MAX) };
        assert_eq!(books.create_transfer(transfer), TransferResult::FlagsAreMutuallyExclusive, "{flags:?}");
    }
    assert_eq!(books.pending_state(1), Some(PendingState::Pending));
}

#[test]
fn transfer_debiting_account_zero_fails_with_debit_account_id_must_not_be_zero() {
    let mut books = Books::new();
    let transfer = journal(1, AccountId(0), OTHER, 10);
    assert_eq!(books.create_transfer(transfer), TransferResult::DebitAccountIdMustNotBeZero);
}

#[test]
fn transfer_debiting_account_u128_max_fails_with_debit_account_id_must_not_be_int_max() {
    let mut books = Books::new();
    let transfer = journal(1, AccountId(u128::MAX), OTHER, 10);
    assert_eq!(books.create_transfer(transfer), TransferResult::DebitAccountIdMustNotBeIntMax);
}

#[test]
fn transfer_crediting_account_zero_fails_with_credit_account_id_must_not_be_zero() {
    let mut books = Books::new();
    let transfer = journal(1, CASH, AccountId(0), 10);
    assert_eq!(books.create_transfer(transfer), TransferResult::CreditAccountIdMustNotBeZero);
}

#[test]
fn transfer_crediting_account_u128_max_fails_with_credit_account_id_must_not_be_int_max() {
    let mut books = Books::new();
    let transfer = journal(1, CASH, AccountId(u128::MAX), 10);
    assert_eq!(books.create_transfer(transfer), TransferResult::CreditAccountIdMustNotBeIntMax);
}

#[test]
fn transfer_from_an_account_to_itself_fails_with_accounts_must_be_different() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, CASH, 10)), TransferResult::AccountsMustBeDifferent);
}

#[test]
fn transfer_with_a_pending_id_that_neither_posts_nor_voids_fails_with_pending_id_must_be_zero() {
    let mut books = Books::new();
    let transfer = Transfer { pending_id: TransferId(5), ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::PendingIdMustBeZero);
}

#[test]
fn post_without_a_pending_id_fails_with_pending_id_must_not_be_zero() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(post(1, 0, 10)), TransferResult::PendingIdMustNotBeZero);
    assert_eq!(books.create_transfer(void(2, 0)), TransferResult::PendingIdMustNotBeZero);
}

#[test]
fn post_of_pending_id_u128_max_fails_with_pending_id_must_not_be_int_max() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(post(1, u128::MAX, 10)), TransferResult::PendingIdMustNotBeIntMax);
}

#[test]
fn post_naming_itself_as_its_pending_transfer_fails_with_pending_id_must_be_different() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(post(1, 1, 10)), TransferResult::PendingIdMustBeDifferent);
}

#[test]
fn timeout_on_a_transfer_that_is_not_pending_fails_with_timeout_reserved_for_pending_transfer() {
    let mut books = Books::new();
    let posted = Transfer { timeout: 60, ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(posted), TransferResult::TimeoutReservedForPendingTransfer);
    assert_eq!(books.create_transfer(pending(2, CASH, OTHER, 10)), TransferResult::Created);
    let timed_void = Transfer { timeout: 60, ..void(3, 2) };
    assert_eq!(books.create_transfer(timed_void), TransferResult::TimeoutReservedForPendingTransfer);
}

#[test]
fn closing_transfer_that_is_not_pending_fails_with_closing_transfer_must_be_pending() {
    let mut books = Books::new();
    let closing = flagged(journal(1, CASH, OTHER, 10), TransferFlags::CLOSING_DEBIT);
    assert_eq!(books.create_transfer(closing), TransferResult::ClosingTransferMustBePending);
    assert!(!books.is_closed(CASH));
}

#[test]
fn transfer_of_zero_fails_with_amount_must_not_be_zero() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 0)), TransferResult::AmountMustNotBeZero);
}

#[test]
fn transfer_in_ledger_zero_fails_with_ledger_must_not_be_zero() {
    let mut books = Books::new();
    let transfer = Transfer { ledger: LedgerId(0), ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::LedgerMustNotBeZero);
}

#[test]
fn transfer_with_code_zero_fails_with_code_must_not_be_zero() {
    let mut books = Books::new();
    let transfer = Transfer { code: 0, ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::CodeMustNotBeZero);
}

#[test]
fn transfer_debiting_an_unknown_account_fails_with_debit_account_not_found() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, MISSING, OTHER, 10)), TransferResult::DebitAccountNotFound);
}

#[test]
fn transfer_crediting_an_unknown_account_fails_with_credit_account_not_found() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, MISSING, 10)), TransferResult::CreditAccountNotFound);
}

#[test]
fn transfer_between_accounts_of_two_ledgers_fails_with_accounts_must_have_the_same_ledger() {
    let mut books = Books::new();
    assert_eq!(books.create_ledger(usd()), LedgerResult::Created);
    books.open(&[Account { ledger: USD, ..other(OTHER_2) }]);
    let transfer = journal(1, CASH, OTHER_2, 10);
    assert_eq!(books.create_transfer(transfer), TransferResult::AccountsMustHaveTheSameLedger);
}

#[test]
fn transfer_in_another_ledger_than_its_accounts_fails_with_transfer_must_have_the_same_ledger_as_accounts() {
    let mut books = Books::new();
    assert_eq!(books.create_ledger(usd()), LedgerResult::Created);
    let transfer = Transfer { ledger: USD, ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::TransferMustHaveTheSameLedgerAsAccounts);
}

#[test]
fn expenditure_debiting_a_cash_account_fails_with_debit_account_has_wrong_kind() {
    let mut books = Books::new();
    let expenditure = Transfer { kind: TransferKind::Expenditure, ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(expenditure), TransferResult::DebitAccountHasWrongKind);
}

#[test]
fn receipt_crediting_a_cash_account_fails_with_credit_account_has_wrong_kind() {
    let mut books = Books::new();
    books.open(&[cash(CASH_2)]);
    let receipt = Transfer { kind: TransferKind::Receipt, ..journal(1, CASH, CASH_2, 10) };
    assert_eq!(books.create_transfer(receipt), TransferResult::CreditAccountHasWrongKind);
}

#[test]
fn post_of_an_unknown_pending_transfer_fails_with_pending_transfer_not_found() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::PendingTransferNotFound);
}

#[test]
fn post_of_a_posted_transfer_fails_with_pending_transfer_not_pending() {
    let mut books = books_with_transfer_1();
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::PendingTransferNotPending);
}

/// Books holding pending transfer 1 of 100 from [`CASH`] to [`OTHER`].
fn books_with_pending_1() -> Books {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, 100)), TransferResult::Created);
    books
}

#[test]
fn post_naming_another_debit_account_fails_with_pending_transfer_has_different_debit_account_id() {
    let mut books = books_with_pending_1();
    let transfer = Transfer { debit_account_id: CASH_2, ..post(2, 1, Transfer::AMOUNT_MAX) };
    assert_eq!(books.create_transfer(transfer), TransferResult::PendingTransferHasDifferentDebitAccountId);
}

#[test]
fn post_naming_another_credit_account_fails_with_pending_transfer_has_different_credit_account_id() {
    let mut books = books_with_pending_1();
    let transfer = Transfer { credit_account_id: OTHER_2, ..post(2, 1, Transfer::AMOUNT_MAX) };
    assert_eq!(books.create_transfer(transfer), TransferResult::PendingTransferHasDifferentCreditAccountId);
}

#[test]
fn post_naming_another_ledger_fails_with_pending_transfer_has_different_ledger() {
    let mut books = books_with_pending_1();
    let transfer = Transfer { ledger: USD, ..post(2, 1, Transfer::AMOUNT_MAX) };
    assert_eq!(books.create_transfer(transfer), TransferResult::PendingTransferHasDifferentLedger);
}

#[test]
fn post_naming_another_code_fails_with_pending_transfer_has_different_code() {
    let mut books = books_with_pending_1();
    let transfer = Transfer { code: 9, ..post(2, 1, Transfer::AMOUNT_MAX) };
    assert_eq!(books.create_transfer(transfer), TransferResult::PendingTransferHasDifferentCode);
}

#[test]
fn post_of_another_kind_fails_with_pending_transfer_has_different_kind() {
    let mut books = books_with_pending_1();
    let transfer = Transfer { kind: TransferKind::Receipt, ..post(2, 1, Transfer::AMOUNT_MAX) };
    assert_eq!(books.create_transfer(transfer), TransferResult::PendingTransferHasDifferentKind);
}

#[test]
fn post_of_more_than_the_pending_amount_fails_with_exceeds_pending_transfer_amount() {
    let mut books = books_with_pending_1();
    assert_eq!(books.create_transfer(post(2, 1, 101)), TransferResult::ExceedsPendingTransferAmount);
    assert_eq!(books.pending_state(1), Some(PendingState::Pending));
}

#[test]
fn void_naming_another_amount_fails_with_pending_transfer_has_different_amount() {
    let mut books = books_with_pending_1();
    let partial_void = Transfer { amount: 40, ..void(2, 1) };
    assert_eq!(books.create_transfer(partial_void), TransferResult::PendingTransferHasDifferentAmount);
    let exact_void = Transfer { amount: 100, ..void(3, 1) };
    assert_eq!(books.create_transfer(exact_void), TransferResult::Created);
}

#[test]
fn second_post_or_void_of_a_posted_transfer_fails_with_pending_transfer_already_posted() {
    let mut books = books_with_pending_1();
    assert_eq!(books.create_transfer(post(2, 1, 30)), TransferResult::Created);
    assert_eq!(books.create_transfer(post(3, 1, 30)), TransferResult::PendingTransferAlreadyPosted);
    assert_eq!(books.create_transfer(void(4, 1)), TransferResult::PendingTransferAlreadyPosted);
    assert_eq!(books.balances(CASH), balances(0, 30, 0, 0));
}

#[test]
fn post_or_void_of_a_voided_transfer_fails_with_pending_transfer_already_voided() {
    let mut books = books_with_pending_1();
    assert_eq!(books.create_transfer(void(2, 1)), TransferResult::Created);
    assert_eq!(books.create_transfer(post(3, 1, Transfer::AMOUNT_MAX)), TransferResult::PendingTransferAlreadyVoided);
    assert_eq!(books.create_transfer(void(4, 1)), TransferResult::PendingTransferAlreadyVoided);
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
}

#[test]
fn post_of_expired_pending_transfer_is_rejected_as_expired() {
    let mut books = Books::new();
    let reservation = Transfer { timeout: 1, ..pending(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(reservation), TransferResult::Created);
    books.wait(NS_PER_S);
    assert_eq!(books.expire(), ExpireResult { expired: 1, more: false });
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::PendingTransferExpired);
    assert_eq!(books.create_transfer(void(3, 1)), TransferResult::PendingTransferExpired);
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
}

#[test]
fn transfer_debiting_a_closed_account_fails_with_debit_account_already_closed() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::CLOSED)]);
    assert_eq!(books.create_transfer(journal(1, CASH_2, OTHER, 10)), TransferResult::DebitAccountAlreadyClosed);
}

#[test]
fn transfer_crediting_a_closed_account_fails_with_credit_account_already_closed() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::CLOSED)]);
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH_2, 10)), TransferResult::CreditAccountAlreadyClosed);
}

#[test]
fn pending_debit_past_u128_max_reserved_fails_with_overflows_debits_pending() {
    let mut books = Books::new();
    books.open(&[other(OTHER_2)]);
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, u128::MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, CASH, OTHER_2, 1)), TransferResult::OverflowsDebitsPending);
}

#[test]
fn pending_credit_past_u128_max_reserved_fails_with_overflows_credits_pending() {
    let mut books = Books::new();
    books.open(&[other(OTHER_2)]);
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, u128::MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, OTHER_2, OTHER, 1)), TransferResult::OverflowsCreditsPending);
}

#[test]
fn debit_past_u128_max_posted_fails_with_overflows_debits_posted() {
    let mut books = Books::new();
    books.open(&[other(OTHER_2)]);
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, u128::MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER_2, 1)), TransferResult::OverflowsDebitsPosted);
}

#[test]
fn credit_past_u128_max_posted_fails_with_overflows_credits_posted() {
    let mut books = Books::new();
    books.open(&[other(OTHER_2)]);
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, u128::MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(2, OTHER_2, OTHER, 1)), TransferResult::OverflowsCreditsPosted);
}

#[test]
fn pending_debit_past_u128_max_debits_in_total_fails_with_overflows_debits() {
    let mut books = Books::new();
    books.open(&[other(OTHER_2)]);
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, u128::MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, CASH, OTHER_2, 1)), TransferResult::OverflowsDebits);
}

#[test]
fn pending_credit_past_u128_max_credits_in_total_fails_with_overflows_credits() {
    let mut books = Books::new();
    books.open(&[other(OTHER_2)]);
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, u128::MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, OTHER_2, OTHER, 1)), TransferResult::OverflowsCredits);
}

#[test]
fn pending_timeout_past_u64_max_nanoseconds_fails_with_overflows_timeout() {
    let mut books = Books::new();
    let late = u64::MAX - STEP;
    let results = books.create_transfers_at(
        late,
        &[Transfer { timeout: 1, ..pending(1, CASH, OTHER, 10) }, pending(2, CASH, OTHER, 10)],
    );
    assert_eq!(results, [TransferResult::OverflowsTimeout, TransferResult::Created]);
}

#[test]
fn debit_past_the_credits_of_a_limited_account_fails_with_exceeds_credits() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]);
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH_2, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(2, CASH_2, OTHER, 101)), TransferResult::ExceedsCredits);
    assert_eq!(books.create_transfer(journal(3, CASH_2, OTHER, 100)), TransferResult::Created);
}

#[test]
fn credit_past_the_debits_of_a_limited_account_fails_with_exceeds_debits() {
    let mut books = Books::new();
    books.open(&[with_flags(other(OTHER_2), AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)]);
    assert_eq!(books.create_transfer(journal(1, OTHER_2, CASH, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER_2, 101)), TransferResult::ExceedsDebits);
    assert_eq!(books.create_transfer(journal(3, CASH, OTHER_2, 100)), TransferResult::Created);
}

// ---------------------------------------------------------------------------
// Precedence and transfer kinds
// ---------------------------------------------------------------------------

#[test]
fn transfer_breaking_several_rules_gets_the_result_declared_first() {
    let mut books = Books::new();
    let shapeless =
        Transfer { timestamp: 1, flags: TransferFlags::from_bits(1 << 8), ..journal(0, AccountId(0), AccountId(0), 0) };
    assert_eq!(books.create_transfer(shapeless), TransferResult::TimestampMustBeZero);
    let empty = Transfer { ledger: LedgerId(0), code: 0, ..journal(1, CASH, OTHER, 0) };
    assert_eq!(books.create_transfer(empty), TransferResult::AmountMustNotBeZero);
    let unknown_accounts = journal(2, MISSING, AccountId(98), 10);
    assert_eq!(books.create_transfer(unknown_accounts), TransferResult::DebitAccountNotFound);
    books.open(&[with_flags(other(OTHER_2), AccountFlags::CLOSED)]);
    let wrong_kind_and_closed = Transfer { kind: TransferKind::CashTransfer, ..journal(3, OTHER_2, CASH, 10) };
    assert_eq!(books.create_transfer(wrong_kind_and_closed), TransferResult::DebitAccountHasWrongKind);
}

#[test]
fn transfer_kinds_are_created_between_the_account_kinds_they_require() {
    let mut books = Books::new();
    books.open(&[cash(CASH_2), other(OTHER_2)]);
    let of_kind = |kind, transfer: Transfer| Transfer { kind, ..transfer };
    let results = books.create_transfers(&[
        of_kind(TransferKind::Receipt, journal(1, CASH, OTHER, 100)),
        of_kind(TransferKind::Expenditure, journal(2, OTHER_2, CASH, 40)),
        of_kind(TransferKind::CashTransfer, journal(3, CASH, CASH_2, 30)),
        of_kind(TransferKind::Journal, journal(4, OTHER, OTHER_2, 20)),
        of_kind(TransferKind::CashTransfer, journal(5, CASH, OTHER, 10)),
        of_kind(TransferKind::Receipt, journal(6, OTHER, CASH, 10)),
    ]);
    assert_eq!(
        results,
        [
            TransferResult::Created,
            TransferResult::Created,
            TransferResult::Created,
            TransferResult::Created,
            TransferResult::CreditAccountHasWrongKind,
            TransferResult::DebitAccountHasWrongKind,
        ]
    );
}

// ---------------------------------------------------------------------------
// Two-phase transfers
// ---------------------------------------------------------------------------

#[test]
fn pending_transfer_reserves_its_amount_without_posting_it() {
    let books = books_with_pending_1();
    assert_eq!(books.balances(CASH), balances(100, 0, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 100, 0));
    assert_eq!(books.pending_state(1), Some(PendingState::Pending));
}

#[test]
fn post_with_amount_max_posts_the_whole_pending_amount_and_inherits_its_fields() {
    let mut books = Books::new();
    let reservation = Transfer { user_data_128: 42, ..pending(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(reservation), TransferResult::Created);
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::Created);
    assert_eq!(books.balances(CASH), balances(0, 100, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 0, 100));
    assert_eq!(books.pending_state(1), Some(PendingState::Posted));
    let expected = Transfer {
        pending_id: TransferId(1),
        flags: TransferFlags::POST_PENDING,
        user_data_128: 42,
        timestamp: books.now,
        ..journal(2, CASH, OTHER, 100)
    };
    assert_eq!(books.transfer(2), Some(expected));
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::Exists);
    assert_eq!(books.create_transfer(post(2, 1, 100)), TransferResult::Exists);
}

#[test]
fn partial_post_posts_part_of_the_reservation_and_releases_the_rest() {
    let mut books = books_with_pending_1();
    assert_eq!(books.create_transfer(post(2, 1, 60)), TransferResult::Created);
    assert_eq!(books.balances(CASH), balances(0, 60, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 0, 60));
    assert_eq!(books.transfer(2).map(|transfer| transfer.amount), Some(60));
    assert_eq!(books.pending_state(1), Some(PendingState::Posted));
}

#[test]
fn retry_of_a_partial_post_asking_for_the_whole_amount_exists_with_different_amount() {
    let mut books = books_with_pending_1();
    assert_eq!(books.create_transfer(post(2, 1, 30)), TransferResult::Created);
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::ExistsWithDifferentAmount);
    assert_eq!(books.create_transfer(post(2, 1, 30)), TransferResult::Exists);
    assert_eq!(books.create_transfer(post(3, 1, Transfer::AMOUNT_MAX)), TransferResult::PendingTransferAlreadyPosted);
}

#[test]
fn retry_of_a_full_post_asking_for_the_whole_amount_again_exists() {
    let mut books = books_with_pending_1();
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::Created);
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::Exists);
    assert_eq!(books.create_transfer(post(2, 1, 100)), TransferResult::Exists);
}

#[test]
fn void_matching_the_pending_transfers_fields_releases_the_whole_reservation() {
    let mut books = books_with_pending_1();
    let full_void = Transfer {
        debit_account_id: CASH,
        credit_account_id: OTHER,
        ledger: KRW,
        code: 1,
        amount: Transfer::AMOUNT_MAX,
        ..void(2, 1)
    };
    assert_eq!(books.create_transfer(full_void), TransferResult::Created);
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 0, 0));
    assert_eq!(books.transfer(2).map(|transfer| transfer.amount), Some(100));
    assert_eq!(books.pending_state(1), Some(PendingState::Voided));
}

#[test]
fn expire_pending_releases_only_the_reservations_whose_timeout_passed() {
    let mut books = Books::new();
    let results = books.create_transfers(&[
        Transfer { timeout: 1, ..pending(1, CASH, OTHER, 100) },
        Transfer { timeout: 2, ..pending(2, CASH, OTHER, 50) },
        pending(3, CASH, OTHER, 10),
    ]);
    assert_eq!(results, [TransferResult::Created; 3]);
    assert_eq!(books.expire(), ExpireResult { expired: 0, more: false });
    assert_eq!(books.balances(CASH), balances(160, 0, 0, 0));

    books.wait(NS_PER_S);
    assert_eq!(books.expire(), ExpireResult { expired: 1, more: false });
    assert_eq!(books.pending_state(1), Some(PendingState::Expired));
    assert_eq!(books.balances(CASH), balances(60, 0, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 60, 0));

    books.wait(NS_PER_S);
    assert_eq!(books.expire(), ExpireResult { expired: 1, more: false });
    assert_eq!(books.pending_state(2), Some(PendingState::Expired));
    assert_eq!(books.pending_state(3), Some(PendingState::Pending));
    assert_eq!(books.balances(CASH), balances(10, 0, 0, 0));
    assert_eq!(books.expire(), ExpireResult { expired: 0, more: false });
}

#[test]
fn post_or_void_after_the_timeout_fails_with_pending_transfer_expired_before_expiry_runs() {
    let mut books = Books::new();
    let reservation = Transfer { timeout: 1, ..pending(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(reservation), TransferResult::Created);
    books.wait(NS_PER_S);
    assert_eq!(books.create_transfer(void(2, 1)), TransferResult::PendingTransferExpired);
    assert_eq!(books.create_transfer(post(3, 1, Transfer::AMOUNT_MAX)), TransferResult::PendingTransferExpired);
    assert_eq!(books.balances(CASH), balances(100, 0, 0, 0));
    assert_eq!(books.expire(), ExpireResult { expired: 1, more: false });
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
}

#[test]
fn pending_transfer_posted_before_its_timeout_is_not_expired_later() {
    let mut books = Books::new();
    let reservation = Transfer { timeout: 60, ..pending(1, CASH, OTHER, 100) };
    assert_eq!(books.create_transfer(reservation), TransferResult::Created);
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::Created);
    books.wait(61 * NS_PER_S);
    assert_eq!(books.expire(), ExpireResult { expired: 0, more: false });
    assert_eq!(books.pending_state(1), Some(PendingState::Posted));
    assert_eq!(books.balances(CASH), balances(0, 100, 0, 0));
}

#[test]
fn retry_of_a_post_or_void_leaving_inherited_fields_zero_or_naming_them_is_exists() {
    let mut books = Books::new();
    let reservations = [pending(1, CASH, OTHER, 100), Transfer { user_data_32: 9, ..pending(2, CASH, OTHER, 50) }];
    assert_eq!(books.create_transfers(&reservations), [TransferResult::Created; 2]);
    assert_eq!(books.create_transfers(&[post(3, 1, 40), void(4, 2)]), [TransferResult::Created; 2]);
    let named_post =
        Transfer { debit_account_id: CASH, credit_account_id: OTHER, ledger: KRW, code: 1, ..post(3, 1, 40) };
    let named_void = Transfer { amount: 50, user_data_32: 9, ..void(4, 2) };
    let retries =
        [post(3, 1, 40), named_post, void(4, 2), Transfer { amount: Transfer::AMOUNT_MAX, ..void(4, 2) }, named_void];
    assert_eq!(books.create_transfers(&retries), [TransferResult::Exists; 5]);
    assert_eq!(books.create_transfer(post(3, 1, 30)), TransferResult::ExistsWithDifferentAmount);
    assert_eq!(
        books.create_transfer(Transfer { user_data_32: 8, ..void(4, 2) }),
        TransferResult::ExistsWithDifferentUserData32
    );
    assert_eq!(books.balances(CASH), balances(0, 40, 0, 0));
}

#[test]
fn pending_transfer_can_be_posted_in_the_batch_that_creates_it() {
    let mut books = Books::new();
    let results = books.create_transfers(&[pending(1, CASH, OTHER, 100), post(2, 1, 70)]);
    assert_eq!(results, [TransferResult::Created, TransferResult::Created]);
    assert_eq!(books.balances(CASH), balances(0, 70, 0, 0));
}

#[test]
fn pending_transfer_expires_exactly_when_its_timeout_has_passed_since_its_own_event() {
    let mut books = Books::new();
    let results = books.create_transfers(&[
        pending(1, CASH, OTHER, 10),
        Transfer { timeout: 1, ..pending(2, CASH, OTHER, 20) },
        Transfer { timeout: 1, ..pending(3, CASH, OTHER, 30) },
    ]);
    assert_eq!(results, [TransferResult::Created; 3]);
    let expires_at = books.transfer(2).unwrap().timestamp + NS_PER_S;
    let status = books.store().pending_status(TransferId(2)).unwrap().unwrap();
    assert_eq!(status.expires_at, expires_at);
    assert_eq!(books.store().pending_status(TransferId(1)).unwrap().unwrap().expires_at, 0);

    let just_before = books.create_transfers_at(expires_at - 1, &[post(4, 2, Transfer::AMOUNT_MAX)]);
    assert_eq!(just_before, [TransferResult::Created]);
    // Transfer 3 was stamped one nanosecond after transfer 2, so it expires one later.
    let at_expiry = books.create_transfers_at(expires_at + 1, &[void(5, 3)]);
    assert_eq!(at_expiry, [TransferResult::PendingTransferExpired]);
}

#[test]
fn expire_pending_expires_at_most_expire_events_max_at_once_and_reports_more() {
    let mut books = Books::new();
    let reservations: Vec<Transfer> = (1..=u128::try_from(EXPIRE_EVENTS_MAX).unwrap() + 1)
        .map(|id| Transfer { timeout: 1, ..pending(id, CASH, OTHER, 1) })
        .collect();
    let (first, rest) = reservations.split_at(BATCH_EVENTS_MAX);
    assert!(books.create_transfers(first).iter().all(|result| *result == TransferResult::Created));
    assert!(books.create_transfers(rest).iter().all(|result| *result == TransferResult::Created));
    books.wait(NS_PER_S);
    let expired_max = u32::try_from(EXPIRE_EVENTS_MAX).unwrap();
    assert_eq!(books.expire(), ExpireResult { expired: expired_max, more: true });
    assert_eq!(books.balances(CASH), balances(reservations.len() as u128 - u128::from(expired_max), 0, 0, 0));
    assert_eq!(books.expire(), ExpireResult { expired: 1, more: false });
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
}

#[test]
fn events_of_a_batch_are_stamped_one_nanosecond_apart() {
    let mut books = Books::new();
    books.open(&[cash(CASH_2), other(OTHER_2)]);
    let opened = books.now;
    assert_eq!((books.account(CASH_2).timestamp, books.account(OTHER_2).timestamp), (opened, opened + 1));
    let results = books.create_transfers(&[
        journal(1, CASH, OTHER, 10),
        journal(2, CASH, MISSING, 10),
        journal(3, CASH, OTHER, 10),
    ]);
    assert_eq!(results, [TransferResult::Created, TransferResult::CreditAccountNotFound, TransferResult::Created]);
    assert_eq!(books.transfer(1).unwrap().timestamp, books.now);
    assert_eq!(books.transfer(3).unwrap().timestamp, books.now + 2);
}

// ---------------------------------------------------------------------------
// Linked chains
// ---------------------------------------------------------------------------

#[test]
fn failed_chain_undoes_its_earlier_transfers_and_their_balances() {
    let mut books = Books::new();
    books.open(&[other(OTHER_2)]);
    let results = books.create_transfers(&[
        linked(journal(1, CASH, OTHER, 10)),
        linked(pending(2, CASH, OTHER_2, 20)),
        journal(3, CASH, MISSING, 30),
        journal(4, OTHER, OTHER_2, 5),
    ]);
    assert_eq!(
        results,
        [
            TransferResult::LinkedEventFailed,
            TransferResult::LinkedEventFailed,
            TransferResult::CreditAccountNotFound,
            TransferResult::Created,
        ]
    );
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 5, 0, 0));
    assert_eq!(books.balances(OTHER_2), balances(0, 0, 0, 5));
    assert_eq!((books.transfer(1), books.transfer(2), books.pending_state(2)), (None, None, None));
    // Rolled-back ids are not burned: they may be created later.
    let retry = books.create_transfers(&[journal(1, CASH, OTHER, 10), pending(2, CASH, OTHER_2, 20)]);
    assert_eq!(retry, [TransferResult::Created, TransferResult::Created]);
}

#[test]
fn failed_chain_undoes_the_posts_and_voids_it_made() {
    let mut books = Books::new();
    let reservations = books.create_transfers(&[pending(1, CASH, OTHER, 100), pending(2, CASH, OTHER, 50)]);
    assert_eq!(reservations, [TransferResult::Created, TransferResult::Created]);
    let results = books.create_transfers(&[
        linked(post(3, 1, Transfer::AMOUNT_MAX)),
        linked(void(4, 2)),
        journal(5, CASH, OTHER, 0),
    ]);
    assert_eq!(
        results,
        [TransferResult::LinkedEventFailed, TransferResult::LinkedEventFailed, TransferResult::AmountMustNotBeZero]
    );
    assert_eq!(books.pending_state(1), Some(PendingState::Pending));
    assert_eq!(books.pending_state(2), Some(PendingState::Pending));
    assert_eq!(books.balances(CASH), balances(150, 0, 0, 0));
    assert_eq!(books.balances(OTHER), balances(0, 0, 150, 0));
    assert_eq!((books.transfer(3), books.transfer(4)), (None, None));
    assert_eq!(books.create_transfer(post(3, 1, Transfer::AMOUNT_MAX)), TransferResult::Created);
    assert_eq!(books.balances(CASH), balances(50, 100, 0, 0));
}

#[test]
fn failed_chain_of_a_pending_transfer_with_a_timeout_leaves_nothing_to_expire() {
    let mut books = Books::new();
    let results = books.create_transfers(&[
        linked(Transfer { timeout: 1, ..pending(1, CASH, OTHER, 100) }),
        journal(2, CASH, OTHER, 0),
    ]);
    assert_eq!(results, [TransferResult::LinkedEventFailed, TransferResult::AmountMustNotBeZero]);
    books.wait(NS_PER_S);
    assert_eq!(books.expire(), ExpireResult { expired: 0, more: false });
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
}

#[test]
fn events_after_the_failing_one_in_a_chain_fail_as_linked_event_failed() {
    let mut books = Books::new();
    let results = books.create_transfers(&[
        linked(journal(1, CASH, MISSING, 10)),
        linked(journal(2, CASH, OTHER, 20)),
        journal(3, CASH, OTHER, 30),
        journal(4, CASH, OTHER, 40),
    ]);
    assert_eq!(
        results,
        [
            TransferResult::CreditAccountNotFound,
            TransferResult::LinkedEventFailed,
            TransferResult::LinkedEventFailed,
            TransferResult::Created,
        ]
    );
    assert_eq!(books.balances(CASH), balances(0, 40, 0, 0));
    assert_eq!(books.create_transfers(&[journal(2, CASH, OTHER, 20)]), [TransferResult::Created]);
}

#[test]
fn chain_ends_at_the_first_event_without_linked() {
    let mut books = Books::new();
    let results = books.create_transfers(&[
        linked(journal(1, CASH, OTHER, 10)),
        journal(2, CASH, OTHER, 20),
        journal(3, CASH, MISSING, 30),
    ]);
    assert_eq!(results, [TransferResult::Created, TransferResult::Created, TransferResult::CreditAccountNotFound]);
    assert_eq!(books.balances(CASH), balances(0, 30, 0, 0));
}

#[test]
fn exists_inside_a_chain_does_not_break_it() {
    let mut books = Books::new();
    let first = [linked(journal(1, CASH, OTHER, 100)), journal(2, CASH, OTHER, 10)];
    assert_eq!(books.create_transfers(&first), [TransferResult::Created, TransferResult::Created]);
    // A retry carries the flags it was first sent with, `linked` included.
    let results = books.create_transfers(&[
        linked(journal(1, CASH, OTHER, 100)),
        linked(journal(3, CASH, OTHER, 20)),
        journal(4, CASH, OTHER, 30),
    ]);
    assert_eq!(results, [TransferResult::Exists, TransferResult::Created, TransferResult::Created]);
    assert_eq!(books.balances(CASH), balances(0, 160, 0, 0));
}

#[test]
fn exists_keeps_its_result_and_its_transfer_when_its_chain_fails() {
    let mut books = Books::new();
    let first = [linked(journal(1, CASH, OTHER, 100)), journal(2, CASH, OTHER, 10)];
    assert_eq!(books.create_transfers(&first), [TransferResult::Created, TransferResult::Created]);
    let results = books.create_transfers(&[
        linked(journal(1, CASH, OTHER, 100)),
        linked(journal(3, CASH, OTHER, 20)),
        journal(4, CASH, MISSING, 30),
    ]);
    assert_eq!(
        results,
        [TransferResult::Exists, TransferResult::LinkedEventFailed, TransferResult::CreditAccountNotFound]
    );
    assert!(books.transfer(1).is_some());
    assert_eq!(books.transfer(3), None);
    assert_eq!(books.balances(CASH), balances(0, 110, 0, 0));
}

#[test]
fn exists_of_a_transfer_created_earlier_in_the_same_failed_chain_becomes_linked_event_failed() {
    let mut books = Books::new();
    let results = books.create_transfers(&[
        linked(journal(1, CASH, OTHER, 100)),
        linked(journal(1, CASH, OTHER, 100)),
        journal(2, CASH, MISSING, 30),
    ]);
    assert_eq!(
        results,
        [TransferResult::LinkedEventFailed, TransferResult::LinkedEventFailed, TransferResult::CreditAccountNotFound]
    );
    assert_eq!(books.transfer(1), None);
    assert_eq!(books.balances(CASH), balances(0, 0, 0, 0));
}

#[test]
fn later_events_of_the_batch_see_nothing_of_a_failed_chain() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]);
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH_2, 100)), TransferResult::Created);
    let results = books.create_transfers(&[
        linked(journal(2, CASH_2, OTHER, 100)),
        linked(pending(3, CASH, OTHER, 10)),
        journal(4, CASH, MISSING, 10),
        post(5, 3, Transfer::AMOUNT_MAX),
        journal(6, CASH_2, OTHER, 100),
        journal(3, CASH, OTHER, 10),
    ]);
    assert_eq!(
        results,
        [
            TransferResult::LinkedEventFailed,
            TransferResult::LinkedEventFailed,
            TransferResult::CreditAccountNotFound,
            TransferResult::PendingTransferNotFound,
            TransferResult::Created,
            TransferResult::Created,
        ]
    );
    assert_eq!(books.balances(CASH_2), balances(0, 100, 0, 100));
    assert_eq!(books.balances(CASH), balances(0, 10, 0, 0));
    assert_eq!(transfer_ids(&books, AccountFilter::all(CASH, 10)), [3]);
}

#[test]
fn later_accounts_of_the_batch_see_nothing_of_a_failed_chain() {
    let mut books = Books::new();
    let results = books.create_accounts(&[
        linked_account(other(AccountId(10))),
        Account { code: 0, ..other(AccountId(11)) },
        other(AccountId(10)),
    ]);
    assert_eq!(results, [AccountResult::LinkedEventFailed, AccountResult::CodeMustNotBeZero, AccountResult::Created]);
    assert_eq!(books.account(AccountId(10)), Account { timestamp: books.now + 2, ..other(AccountId(10)) });
}

#[test]
fn last_linked_event_of_a_chain_that_already_failed_gets_linked_event_failed() {
    // Both `linked_event_failed` and `linked_event_chain_open` apply; the
    // one declared first wins.
    let mut books = Books::new();
    let results = books.create_transfers(&[linked(journal(1, CASH, MISSING, 10)), linked(journal(2, CASH, OTHER, 20))]);
    assert_eq!(results, [TransferResult::CreditAccountNotFound, TransferResult::LinkedEventFailed]);
}

#[test]
fn transient_failure_inside_a_chain_is_recorded_although_the_chain_rolls_back() {
    let mut books = Books::new();
    let results = books.create_transfers(&[linked(journal(1, CASH, OTHER, 10)), journal(2, CASH, OTHER_2, 20)]);
    assert_eq!(results, [TransferResult::LinkedEventFailed, TransferResult::CreditAccountNotFound]);
    books.open(&[other(OTHER_2)]);
    let retry = books.create_transfers(&[journal(1, CASH, OTHER, 10), journal(2, CASH, OTHER_2, 20)]);
    assert_eq!(retry, [TransferResult::Created, TransferResult::IdAlreadyFailed]);
}

// ---------------------------------------------------------------------------
// id_already_failed: an id's outcome never changes
// ---------------------------------------------------------------------------

#[test]
fn id_that_exceeded_a_limit_fails_with_id_already_failed_after_funds_arrive() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]);
    assert_eq!(books.create_transfer(journal(1, CASH_2, OTHER, 100)), TransferResult::ExceedsCredits);
    assert_eq!(books.create_transfer(journal(2, OTHER, CASH_2, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(1, CASH_2, OTHER, 100)), TransferResult::IdAlreadyFailed);
    assert_eq!(books.create_transfer(journal(3, CASH_2, OTHER, 100)), TransferResult::Created);
}

#[test]
fn id_that_met_a_closed_account_fails_with_id_already_failed_after_it_reopens() {
    let mut books = Books::new();
    let closing = flagged(pending(1, CASH, OTHER, 1), TransferFlags::CLOSING_DEBIT);
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER, 10)), TransferResult::DebitAccountAlreadyClosed);
    assert_eq!(books.create_transfer(void(3, 1)), TransferResult::Created);
    assert!(!books.is_closed(CASH));
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER, 10)), TransferResult::IdAlreadyFailed);
    assert_eq!(books.create_transfer(journal(4, CASH, OTHER, 10)), TransferResult::Created);
}

#[test]
fn post_whose_pending_transfer_was_not_found_fails_with_id_already_failed_once_it_exists() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::PendingTransferNotFound);
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::IdAlreadyFailed);
    assert_eq!(books.pending_state(1), Some(PendingState::Pending));
}

#[test]
fn id_that_failed_transiently_fails_with_id_already_failed_later_in_the_same_batch() {
    let mut books = Books::new();
    let results = books.create_transfers(&[journal(1, CASH, MISSING, 10), journal(1, CASH, OTHER, 10)]);
    assert_eq!(results, [TransferResult::CreditAccountNotFound, TransferResult::IdAlreadyFailed]);
}

#[test]
fn failure_that_cannot_clear_does_not_burn_the_id() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 0)), TransferResult::AmountMustNotBeZero);
    assert_eq!(books.store().transfer_failure(TransferId(1)).unwrap(), None);
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 10)), TransferResult::Created);
}

// ---------------------------------------------------------------------------
// Balancing transfers
// ---------------------------------------------------------------------------

#[test]
fn balancing_debit_moves_only_what_the_debit_accounts_credits_cover_after_pending_debits() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, CASH, OTHER, 30)), TransferResult::Created);
    let sweep = flagged(journal(3, CASH, OTHER, 1_000), TransferFlags::BALANCING_DEBIT);
    assert_eq!(books.create_transfer(sweep), TransferResult::Created);
    assert_eq!(books.transfer(3).map(|transfer| transfer.amount), Some(70));
    assert_eq!(books.balances(CASH), balances(30, 70, 0, 100));
    // A retry asking at least the clamped amount is the same transfer.
    assert_eq!(books.create_transfer(sweep), TransferResult::Exists);
    let smaller = Transfer { amount: 50, ..sweep };
    assert_eq!(books.create_transfer(smaller), TransferResult::ExistsWithDifferentAmount);
}

#[test]
fn balancing_debit_keeps_a_limited_account_within_its_credits() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]);
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH_2, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(2, CASH_2, OTHER, 500)), TransferResult::ExceedsCredits);
    let sweep = flagged(journal(3, CASH_2, OTHER, 500), TransferFlags::BALANCING_DEBIT);
    assert_eq!(books.create_transfer(sweep), TransferResult::Created);
    assert_eq!(books.balances(CASH_2), balances(0, 100, 0, 100));
}

#[test]
fn balancing_credit_moves_only_what_the_credit_accounts_debits_cover() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, CASH, OTHER, 40)), TransferResult::Created);
    let refund = flagged(journal(3, CASH, OTHER, 250), TransferFlags::BALANCING_CREDIT);
    assert_eq!(books.create_transfer(refund), TransferResult::Created);
    assert_eq!(books.transfer(3).map(|transfer| transfer.amount), Some(60));
    assert_eq!(books.balances(OTHER), balances(0, 100, 40, 60));
}

// ---------------------------------------------------------------------------
// Closing accounts
// ---------------------------------------------------------------------------

#[test]
fn closing_debit_closes_the_debit_account_to_both_sides() {
    let mut books = Books::new();
    let closing = flagged(pending(1, CASH, OTHER, 10), TransferFlags::CLOSING_DEBIT);
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert!(books.is_closed(CASH));
    assert!(!books.is_closed(OTHER));
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER, 10)), TransferResult::DebitAccountAlreadyClosed);
    assert_eq!(books.create_transfer(journal(3, OTHER, CASH, 10)), TransferResult::CreditAccountAlreadyClosed);
}

#[test]
fn closing_credit_closes_the_credit_account() {
    let mut books = Books::new();
    let closing = flagged(pending(1, CASH, OTHER, 10), TransferFlags::CLOSING_CREDIT);
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert!(books.is_closed(OTHER));
    assert!(!books.is_closed(CASH));
    assert_eq!(books.create_transfer(journal(2, OTHER, CASH, 10)), TransferResult::DebitAccountAlreadyClosed);
}

#[test]
fn voiding_a_closing_transfer_reopens_the_account() {
    let mut books = Books::new();
    let closing = flagged(pending(1, CASH, OTHER, 10), TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT);
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert!(books.is_closed(CASH) && books.is_closed(OTHER));
    assert_eq!(books.create_transfer(void(2, 1)), TransferResult::Created);
    assert!(!books.is_closed(CASH) && !books.is_closed(OTHER));
    assert_eq!(books.create_transfer(journal(3, CASH, OTHER, 10)), TransferResult::Created);
}

#[test]
fn expiry_of_a_closing_transfer_reopens_the_account() {
    let mut books = Books::new();
    let closing = Transfer { timeout: 1, ..flagged(pending(1, CASH, OTHER, 10), TransferFlags::CLOSING_CREDIT) };
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert!(books.is_closed(OTHER));
    books.wait(NS_PER_S);
    assert_eq!(books.expire(), ExpireResult { expired: 1, more: false });
    assert!(!books.is_closed(OTHER));
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER, 10)), TransferResult::Created);
}

#[test]
fn posting_a_closing_transfer_is_allowed_and_keeps_its_account_closed() {
    let mut books = Books::new();
    let closing = flagged(pending(1, CASH, OTHER, 10), TransferFlags::CLOSING_DEBIT);
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert_eq!(books.create_transfer(post(2, 1, Transfer::AMOUNT_MAX)), TransferResult::Created);
    assert!(books.is_closed(CASH));
    assert_eq!(books.balances(CASH), balances(0, 10, 0, 0));
}

#[test]
fn posting_another_pending_transfer_of_a_closed_account_fails_but_voiding_it_succeeds() {
    let mut books = books_with_pending_1();
    let closing = flagged(pending(2, CASH, OTHER, 5), TransferFlags::CLOSING_DEBIT);
    assert_eq!(books.create_transfer(closing), TransferResult::Created);
    assert_eq!(books.create_transfer(post(3, 1, Transfer::AMOUNT_MAX)), TransferResult::DebitAccountAlreadyClosed);
    assert_eq!(books.create_transfer(void(4, 1)), TransferResult::Created);
    assert_eq!(books.balances(CASH), balances(5, 0, 0, 0));
    assert!(books.is_closed(CASH));
}

#[test]
fn closing_an_account_that_is_already_closed_fails_with_debit_account_already_closed() {
    let mut books = Books::new();
    let first = flagged(pending(1, CASH, OTHER, 10), TransferFlags::CLOSING_DEBIT);
    let second = flagged(pending(2, CASH, OTHER, 10), TransferFlags::CLOSING_DEBIT);
    assert_eq!(
        books.create_transfers(&[first, second]),
        [TransferResult::Created, TransferResult::DebitAccountAlreadyClosed]
    );
}

// ---------------------------------------------------------------------------
// Limits count pending amounts
// ---------------------------------------------------------------------------

#[test]
fn debits_must_not_exceed_credits_counts_pending_debits() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]);
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH_2, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, CASH_2, OTHER, 80)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(3, CASH_2, OTHER, 30)), TransferResult::ExceedsCredits);
    assert_eq!(books.create_transfer(pending(4, CASH_2, OTHER, 30)), TransferResult::ExceedsCredits);
    assert_eq!(books.create_transfer(journal(5, CASH_2, OTHER, 20)), TransferResult::Created);
    assert_eq!(books.create_transfer(void(6, 2)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(7, CASH_2, OTHER, 80)), TransferResult::Created);
    assert_eq!(books.balances(CASH_2), balances(0, 100, 0, 100));
}

#[test]
fn credits_must_not_exceed_debits_counts_pending_credits() {
    let mut books = Books::new();
    books.open(&[with_flags(other(OTHER_2), AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)]);
    assert_eq!(books.create_transfer(journal(1, OTHER_2, CASH, 100)), TransferResult::Created);
    assert_eq!(books.create_transfer(pending(2, CASH, OTHER_2, 80)), TransferResult::Created);
    assert_eq!(books.create_transfer(journal(3, CASH, OTHER_2, 30)), TransferResult::ExceedsDebits);
    assert_eq!(books.create_transfer(journal(4, CASH, OTHER_2, 20)), TransferResult::Created);
    assert_eq!(books.balances(OTHER_2), balances(0, 100, 80, 20));
}

// ---------------------------------------------------------------------------
// History reads
// ---------------------------------------------------------------------------

fn transfer_ids(books: &Books, filter: AccountFilter) -> Vec<u128> {
    get_account_transfers(books.store(), &filter)
        .expect("the filter is valid")
        .iter()
        .map(|transfer| transfer.id.0)
        .collect()
}

#[test]
fn account_transfers_are_read_by_side_in_order_within_a_range_and_up_to_a_limit() {
    let mut books = Books::new();
    for transfer in [
        journal(1, CASH, OTHER, 10),
        journal(2, OTHER, CASH, 20),
        journal(3, CASH, OTHER, 30),
        pending(4, OTHER, CASH, 40),
        post(5, 4, Transfer::AMOUNT_MAX),
    ] {
        assert_eq!(books.create_transfer(transfer), TransferResult::Created);
    }
    let stamp = |id| books.transfer(id).unwrap().timestamp;
    let all = AccountFilter::all(CASH, 10);
    assert_eq!(transfer_ids(&books, all), [1, 2, 3, 4, 5]);
    assert_eq!(transfer_ids(&books, AccountFilter { sides: Sides::Debits, ..all }), [1, 3]);
    assert_eq!(transfer_ids(&books, AccountFilter { sides: Sides::Credits, ..all }), [2, 4, 5]);
    assert_eq!(transfer_ids(&books, AccountFilter { sides: Sides::Credits, ..AccountFilter::all(OTHER, 10) }), [1, 3]);
    assert_eq!(transfer_ids(&books, AccountFilter { reversed: true, ..all }), [5, 4, 3, 2, 1]);
    assert_eq!(transfer_ids(&books, AccountFilter::all(CASH, 2)), [1, 2]);
    assert_eq!(transfer_ids(&books, AccountFilter { reversed: true, ..AccountFilter::all(CASH, 2) }), [5, 4]);
    let debits_newest_first = AccountFilter { sides: Sides::Debits, reversed: true, ..AccountFilter::all(CASH, 1) };
    assert_eq!(transfer_ids(&books, debits_newest_first), [3]);
    let range = AccountFilter { timestamp_min: stamp(2), timestamp_max: stamp(3), ..all };
    assert_eq!(transfer_ids(&books, range), [2, 3]);
    assert_eq!(transfer_ids(&books, AccountFilter { timestamp_min: stamp(3), ..all }), [3, 4, 5]);
    assert_eq!(transfer_ids(&books, AccountFilter { timestamp_max: stamp(2), ..all }), [1, 2]);
    let between = AccountFilter { timestamp_min: stamp(1) + 1, timestamp_max: stamp(2) - 1, ..all };
    assert!(transfer_ids(&books, between).is_empty());
    assert!(transfer_ids(&books, AccountFilter::all(MISSING, 10)).is_empty());
}

fn invalid_field(error: QueryError) -> &'static str {
    match error {
        QueryError::InvalidField { field, .. } => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn account_history_filters_out_of_range_fail_with_invalid_field_naming_the_field() {
    let books = books_with_transfer_1();
    let store = books.store();
    let all = AccountFilter::all(CASH, 10);
    let over_limit = u32::try_from(BATCH_EVENTS_MAX + 1).unwrap();
    let cases = [
        (AccountFilter { limit: 0, ..all }, "limit"),
        (AccountFilter { limit: over_limit, ..all }, "limit"),
        (AccountFilter { account_id: AccountId(0), ..all }, "account_id"),
        (AccountFilter { account_id: AccountId(u128::MAX), ..all }, "account_id"),
        (AccountFilter { timestamp_min: 20, timestamp_max: 10, ..all }, "timestamp_min"),
    ];
    for (filter, field) in cases {
        assert_eq!(invalid_field(get_account_transfers(store, &filter).unwrap_err()), field, "{filter:?}");
        assert_eq!(invalid_field(get_account_balances(store, &filter).unwrap_err()), field, "{filter:?}");
    }
    let at_limit = u32::try_from(BATCH_EVENTS_MAX).unwrap();
    assert_eq!(get_account_transfers(store, &AccountFilter { limit: at_limit, ..all }).unwrap().len(), 1);
}

/// The balance row of `account` at `timestamp`.
fn balance_row(account: AccountId, timestamp: u64, balances: Balances) -> AccountBalance {
    AccountBalance {
        account_id: account,
        timestamp,
        debits_pending: balances.debits_pending,
        debits_posted: balances.debits_posted,
        credits_pending: balances.credits_pending,
        credits_posted: balances.credits_posted,
    }
}

#[test]
fn account_balances_list_a_history_accounts_balances_after_each_change() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::HISTORY)]);
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH_2, 100)), TransferResult::Created);
    let funded = books.now;
    assert_eq!(
        books.create_transfer(Transfer { timeout: 1, ..pending(2, CASH_2, OTHER, 30) }),
        TransferResult::Created
    );
    let reserved = books.now;
    // A rolled-back chain leaves no balance row.
    let failed = books.create_transfers(&[linked(journal(3, CASH_2, OTHER, 5)), journal(4, CASH_2, MISSING, 5)]);
    assert_eq!(failed, [TransferResult::LinkedEventFailed, TransferResult::CreditAccountNotFound]);
    books.wait(NS_PER_S);
    assert_eq!(books.expire(), ExpireResult { expired: 1, more: false });
    let expired = books.now;

    let store = books.store();
    let rows = get_account_balances(store, &AccountFilter::all(CASH_2, 10)).unwrap();
    assert_eq!(
        rows,
        [
            balance_row(CASH_2, funded, balances(0, 0, 0, 100)),
            balance_row(CASH_2, reserved, balances(30, 0, 0, 100)),
            balance_row(CASH_2, expired, balances(0, 0, 0, 100)),
        ]
    );
    let newest = AccountFilter { reversed: true, ..AccountFilter::all(CASH_2, 1) };
    assert_eq!(get_account_balances(store, &newest).unwrap(), [rows[2]]);
    let middle = AccountFilter { timestamp_min: reserved, timestamp_max: reserved, ..AccountFilter::all(CASH_2, 10) };
    assert_eq!(get_account_balances(store, &middle).unwrap(), [rows[1]]);
}

#[test]
fn balance_history_of_an_account_without_the_history_flag_fails_with_account_has_no_history() {
    let books = books_with_transfer_1();
    let store = books.store();
    assert_eq!(get_account_balances(store, &AccountFilter::all(CASH, 10)), Err(QueryError::AccountHasNoHistory(CASH)));
    assert_eq!(balance_as_of(store, CASH, books.now), Err(QueryError::AccountHasNoHistory(CASH)));
    assert_eq!(balance_as_of(store, MISSING, books.now), Err(QueryError::AccountNotFound(MISSING)));
}

#[test]
fn balance_as_of_gives_the_balances_after_every_event_up_to_that_timestamp() {
    let mut books = Books::new();
    books.open(&[with_flags(cash(CASH_2), AccountFlags::HISTORY)]);
    let opened = books.now;
    assert_eq!(books.create_transfer(journal(1, OTHER, CASH_2, 100)), TransferResult::Created);
    let funded = books.now;
    assert_eq!(books.create_transfer(pending(2, CASH_2, OTHER, 30)), TransferResult::Created);
    let reserved = books.now;
    assert_eq!(books.create_transfer(post(3, 2, 10)), TransferResult::Created);
    let posted = books.now;

    let as_of = |timestamp| balance_as_of(books.store(), CASH_2, timestamp).unwrap();
    assert_eq!(as_of(opened - 1), None);
    assert_eq!(as_of(opened), Some(balance_row(CASH_2, opened, balances(0, 0, 0, 0))));
    assert_eq!(as_of(funded - 1), Some(balance_row(CASH_2, opened, balances(0, 0, 0, 0))));
    assert_eq!(as_of(funded), Some(balance_row(CASH_2, funded, balances(0, 0, 0, 100))));
    assert_eq!(as_of(reserved + 1), Some(balance_row(CASH_2, reserved, balances(30, 0, 0, 100))));
    assert_eq!(as_of(posted), Some(balance_row(CASH_2, posted, balances(0, 10, 0, 100))));
    assert_eq!(as_of(u64::MAX), Some(balance_row(CASH_2, posted, balances(0, 10, 0, 100))));
}

// ---------------------------------------------------------------------------
// Trial balance and lookups
// ---------------------------------------------------------------------------

fn totals(accounts: u64, balances: Balances) -> BalanceTotals {
    BalanceTotals {
        accounts,
        debits_pending: balances.debits_pending,
        debits_posted: balances.debits_posted,
        credits_pending: balances.credits_pending,
        credits_posted: balances.credits_posted,
    }
}

#[test]
fn trial_balance_sums_each_account_code_and_the_ledger_which_balances() {
    let mut books = Books::new();
    books.open(&[cash(CASH_2), Account { code: 402, ..other(OTHER_2) }]);
    assert_eq!(books.create_ledger(usd()), LedgerResult::Created);
    let (usd_cash, usd_other) = (AccountId(20), AccountId(21));
    books.open(&[Account { ledger: USD, ..cash(usd_cash) }, Account { ledger: USD, ..other(usd_other) }]);
    let results = books.create_transfers(&[
        journal(1, OTHER, CASH, 100),
        journal(2, CASH, OTHER_2, 40),
        pending(3, CASH, CASH_2, 25),
        Transfer { ledger: USD, ..journal(4, usd_cash, usd_other, 7) },
    ]);
    assert_eq!(results, [TransferResult::Created; 4]);

    let krw = trial_balance(books.store(), KRW).unwrap();
    assert_eq!(krw.ledger, KRW);
    assert_eq!(
        krw.codes,
        [
            (101, totals(2, balances(25, 40, 25, 100))),
            (401, totals(1, balances(0, 100, 0, 0))),
            (402, totals(1, balances(0, 0, 0, 40))),
        ]
    );
    assert_eq!(krw.total, totals(4, balances(25, 140, 25, 140)));
    assert!(krw.total.is_balanced());
    assert!(!krw.codes[0].1.is_balanced());

    let usd = trial_balance(books.store(), USD).unwrap();
    assert_eq!(usd.total, totals(2, balances(0, 7, 0, 7)));
    assert!(usd.total.is_balanced());
    assert_eq!(trial_balance(books.store(), LedgerId(9)), Err(QueryError::LedgerNotFound(LedgerId(9))));
}

#[test]
fn lookups_answer_one_entry_per_id_in_order() {
    let books = books_with_transfer_1();
    let store = books.store();
    let accounts = lookup_accounts(store, &[OTHER, MISSING, CASH]).unwrap();
    assert_eq!(accounts, [Some(books.account(OTHER)), None, Some(books.account(CASH))]);
    let transfers = lookup_transfers(store, &[TransferId(9), TransferId(1)]).unwrap();
    assert_eq!(transfers, [None, books.transfer(1)]);
    assert!(transfers[1].is_some());
    assert_eq!(invalid_field(lookup_accounts(store, &vec![CASH; BATCH_EVENTS_MAX + 1]).unwrap_err()), "ids");
    assert_eq!(invalid_field(lookup_transfers(store, &vec![TransferId(1); BATCH_EVENTS_MAX + 1]).unwrap_err()), "ids");
}

// ---------------------------------------------------------------------------
// Every result code has a rule test
// ---------------------------------------------------------------------------

/// Each result code with the rule test that must produce it.
fn rule_tests() -> Vec<(Produced, fn())> {
    use Produced::{Account as A, Ledger as L, Transfer as T};
    vec![
        (L(LedgerResult::Created), ledger_with_valid_fields_is_created_and_stamped),
        (L(LedgerResult::TimestampMustBeZero), ledger_with_a_client_timestamp_is_rejected_as_timestamp_must_be_zero),
        (L(LedgerResult::IdMustNotBeZero), ledger_id_zero_is_rejected_as_id_must_not_be_zero),
        (L(LedgerResult::IdMustNotBeIntMax), ledger_id_u32_max_is_rejected_as_id_must_not_be_int_max),
        (
            L(LedgerResult::ExistsWithDifferentCurrency),
            ledger_retry_with_another_currency_fails_with_exists_with_different_currency,
        ),
        (
            L(LedgerResult::ExistsWithDifferentScale),
            ledger_retry_with_another_scale_fails_with_exists_with_different_scale,
        ),
        (
            L(LedgerResult::ExistsWithDifferentName),
            ledger_retry_with_another_name_fails_with_exists_with_different_name,
        ),
        (L(LedgerResult::Exists), ledger_retry_with_the_same_fields_is_exists_and_keeps_the_first_timestamp),
        (
            L(LedgerResult::CurrencyMustBeValid),
            ledger_currency_outside_upper_case_letters_digits_and_underscore_fails_with_currency_must_be_valid,
        ),
        (L(LedgerResult::ScaleMustNotExceedMax), ledger_scale_above_18_fails_with_scale_must_not_exceed_max),
        (L(LedgerResult::NameMustNotBeEmpty), ledger_with_an_empty_name_fails_with_name_must_not_be_empty),
        (L(LedgerResult::NameTooLong), ledger_name_over_64_bytes_fails_with_name_too_long),
        (A(AccountResult::Created), account_with_valid_fields_is_created_with_zero_balances_and_stamped),
        (
            A(AccountResult::LinkedEventFailed),
            account_chain_with_a_failing_event_creates_none_of_it_and_fails_the_rest_as_linked_event_failed,
        ),
        (
            A(AccountResult::LinkedEventChainOpen),
            account_chain_left_open_at_the_end_of_the_batch_fails_with_linked_event_chain_open,
        ),
        (A(AccountResult::TimestampMustBeZero), account_with_a_client_timestamp_is_rejected_as_timestamp_must_be_zero),
        (A(AccountResult::ReservedFlag), account_with_an_undefined_flag_bit_is_rejected_as_reserved_flag),
        (A(AccountResult::IdMustNotBeZero), account_id_zero_is_rejected_as_id_must_not_be_zero),
        (A(AccountResult::IdMustNotBeIntMax), account_id_u128_max_is_rejected_as_id_must_not_be_int_max),
        (
            A(AccountResult::ExistsWithDifferentFlags),
            account_retry_with_other_flags_fails_with_exists_with_different_flags,
        ),
        (
            A(AccountResult::ExistsWithDifferentUserData128),
            account_retry_with_another_user_data_128_fails_with_exists_with_different_user_data_128,
        ),
        (
            A(AccountResult::ExistsWithDifferentUserData64),
            account_retry_with_another_user_data_64_fails_with_exists_with_different_user_data_64,
        ),
        (
            A(AccountResult::ExistsWithDifferentUserData32),
            account_retry_with_another_user_data_32_fails_with_exists_with_different_user_data_32,
        ),
        (
            A(AccountResult::ExistsWithDifferentLedger),
            account_retry_in_another_ledger_fails_with_exists_with_different_ledger,
        ),
        (
            A(AccountResult::ExistsWithDifferentCode),
            account_retry_with_another_code_fails_with_exists_with_different_code,
        ),
        (
            A(AccountResult::ExistsWithDifferentKind),
            account_retry_with_another_kind_fails_with_exists_with_different_kind,
        ),
        (A(AccountResult::Exists), account_retry_with_the_same_fields_is_exists_and_changes_nothing),
        (
            A(AccountResult::FlagsAreMutuallyExclusive),
            account_with_both_limit_flags_fails_with_flags_are_mutually_exclusive,
        ),
        (A(AccountResult::DebitsPendingMustBeZero), account_with_debits_pending_fails_with_debits_pending_must_be_zero),
        (A(AccountResult::DebitsPostedMustBeZero), account_with_debits_posted_fails_with_debits_posted_must_be_zero),
        (
            A(AccountResult::CreditsPendingMustBeZero),
            account_with_credits_pending_fails_with_credits_pending_must_be_zero,
        ),
        (A(AccountResult::CreditsPostedMustBeZero), account_with_credits_posted_fails_with_credits_posted_must_be_zero),
        (A(AccountResult::LedgerMustNotBeZero), account_in_ledger_zero_fails_with_ledger_must_not_be_zero),
        (A(AccountResult::CodeMustNotBeZero), account_with_code_zero_fails_with_code_must_not_be_zero),
        (A(AccountResult::LedgerNotFound), account_in_an_unknown_ledger_fails_with_ledger_not_found),
        (A(AccountResult::LedgerPeriodClosing), account_in_a_year_being_closed_fails_with_ledger_period_closing),
        (T(TransferResult::Created), journal_transfer_is_created_and_moves_its_amount_between_posted_balances),
        (
            T(TransferResult::LinkedEventFailed),
            transfer_chain_with_a_failing_event_fails_its_earlier_events_as_linked_event_failed,
        ),
        (
            T(TransferResult::LinkedEventChainOpen),
            transfer_chain_left_open_at_the_end_of_the_batch_fails_with_linked_event_chain_open,
        ),
        (
            T(TransferResult::TimestampMustBeZero),
            transfer_with_a_client_timestamp_is_rejected_as_timestamp_must_be_zero,
        ),
        (T(TransferResult::ReservedFlag), transfer_with_an_undefined_flag_bit_is_rejected_as_reserved_flag),
        (T(TransferResult::IdMustNotBeZero), transfer_id_zero_is_rejected_as_id_must_not_be_zero),
        (T(TransferResult::IdMustNotBeIntMax), transfer_id_u128_max_is_rejected_as_id_must_not_be_int_max),
        (
            T(TransferResult::ExistsWithDifferentFlags),
            transfer_retry_with_other_flags_fails_with_exists_with_different_flags,
        ),
        (
            T(TransferResult::ExistsWithDifferentPendingId),
            post_retry_naming_another_pending_transfer_fails_with_exists_with_different_pending_id,
        ),
        (
            T(TransferResult::ExistsWithDifferentTimeout),
            transfer_retry_with_another_timeout_fails_with_exists_with_different_timeout,
        ),
        (
            T(TransferResult::ExistsWithDifferentDebitAccountId),
            transfer_retry_with_another_debit_account_fails_with_exists_with_different_debit_account_id,
        ),
        (
            T(TransferResult::ExistsWithDifferentCreditAccountId),
            transfer_retry_with_another_credit_account_fails_with_exists_with_different_credit_account_id,
        ),
        (
            T(TransferResult::ExistsWithDifferentAmount),
            transfer_retry_with_another_amount_fails_with_exists_with_different_amount,
        ),
        (
            T(TransferResult::ExistsWithDifferentUserData128),
            transfer_retry_with_another_user_data_128_fails_with_exists_with_different_user_data_128,
        ),
        (
            T(TransferResult::ExistsWithDifferentUserData64),
            transfer_retry_with_another_user_data_64_fails_with_exists_with_different_user_data_64,
        ),
        (
            T(TransferResult::ExistsWithDifferentUserData32),
            transfer_retry_with_another_user_data_32_fails_with_exists_with_different_user_data_32,
        ),
        (
            T(TransferResult::ExistsWithDifferentLedger),
            transfer_retry_in_another_ledger_fails_with_exists_with_different_ledger,
        ),
        (
            T(TransferResult::ExistsWithDifferentCode),
            transfer_retry_with_another_code_fails_with_exists_with_different_code,
        ),
        (
            T(TransferResult::ExistsWithDifferentKind),
            transfer_retry_with_another_kind_fails_with_exists_with_different_kind,
        ),
        (T(TransferResult::Exists), transfer_retry_with_the_same_fields_is_exists_and_moves_nothing_again),
        (
            T(TransferResult::IdAlreadyFailed),
            transfer_retry_after_a_transient_failure_fails_with_id_already_failed_once_the_account_exists,
        ),
        (
            T(TransferResult::FlagsAreMutuallyExclusive),
            transfer_combining_post_or_void_with_an_excluded_flag_fails_with_flags_are_mutually_exclusive,
        ),
        (
            T(TransferResult::DebitAccountIdMustNotBeZero),
            transfer_debiting_account_zero_fails_with_debit_account_id_must_not_be_zero,
        ),
        (
            T(TransferResult::DebitAccountIdMustNotBeIntMax),
            transfer_debiting_account_u128_max_fails_with_debit_account_id_must_not_be_int_max,
        ),
        (
            T(TransferResult::CreditAccountIdMustNotBeZero),
            transfer_crediting_account_zero_fails_with_credit_account_id_must_not_be_zero,
        ),
        (
            T(TransferResult::CreditAccountIdMustNotBeIntMax),
            transfer_crediting_account_u128_max_fails_with_credit_account_id_must_not_be_int_max,
        ),
        (
            T(TransferResult::AccountsMustBeDifferent),
            transfer_from_an_account_to_itself_fails_with_accounts_must_be_different,
        ),
        (
            T(TransferResult::PendingIdMustBeZero),
            transfer_with_a_pending_id_that_neither_posts_nor_voids_fails_with_pending_id_must_be_zero,
        ),
        (T(TransferResult::PendingIdMustNotBeZero), post_without_a_pending_id_fails_with_pending_id_must_not_be_zero),
        (
            T(TransferResult::PendingIdMustNotBeIntMax),
            post_of_pending_id_u128_max_fails_with_pending_id_must_not_be_int_max,
        ),
        (
            T(TransferResult::PendingIdMustBeDifferent),
            post_naming_itself_as_its_pending_transfer_fails_with_pending_id_must_be_different,
        ),
        (
            T(TransferResult::TimeoutReservedForPendingTransfer),
            timeout_on_a_transfer_that_is_not_pending_fails_with_timeout_reserved_for_pending_transfer,
        ),
        (
            T(TransferResult::ClosingTransferMustBePending),
            closing_transfer_that_is_not_pending_fails_with_closing_transfer_must_be_pending,
        ),
        (T(TransferResult::AmountMustNotBeZero), transfer_of_zero_fails_with_amount_must_not_be_zero),
        (T(TransferResult::LedgerMustNotBeZero), transfer_in_ledger_zero_fails_with_ledger_must_not_be_zero),
        (T(TransferResult::CodeMustNotBeZero), transfer_with_code_zero_fails_with_code_must_not_be_zero),
        (
            T(TransferResult::DebitAccountNotFound),
            transfer_debiting_an_unknown_account_fails_with_debit_account_not_found,
        ),
        (
            T(TransferResult::CreditAccountNotFound),
            transfer_crediting_an_unknown_account_fails_with_credit_account_not_found,
        ),
        (
            T(TransferResult::AccountsMustHaveTheSameLedger),
            transfer_between_accounts_of_two_ledgers_fails_with_accounts_must_have_the_same_ledger,
        ),
        (
            T(TransferResult::TransferMustHaveTheSameLedgerAsAccounts),
            transfer_in_another_ledger_than_its_accounts_fails_with_transfer_must_have_the_same_ledger_as_accounts,
        ),
        (
            T(TransferResult::DebitAccountHasWrongKind),
            expenditure_debiting_a_cash_account_fails_with_debit_account_has_wrong_kind,
        ),
        (
            T(TransferResult::CreditAccountHasWrongKind),
            receipt_crediting_a_cash_account_fails_with_credit_account_has_wrong_kind,
        ),
        (
            T(TransferResult::PendingTransferNotFound),
            post_of_an_unknown_pending_transfer_fails_with_pending_transfer_not_found,
        ),
        (
            T(TransferResult::PendingTransferNotPending),
            post_of_a_posted_transfer_fails_with_pending_transfer_not_pending,
        ),
        (
            T(TransferResult::PendingTransferHasDifferentDebitAccountId),
            post_naming_another_debit_account_fails_with_pending_transfer_has_different_debit_account_id,
        ),
        (
            T(TransferResult::PendingTransferHasDifferentCreditAccountId),
            post_naming_another_credit_account_fails_with_pending_transfer_has_different_credit_account_id,
        ),
        (
            T(TransferResult::PendingTransferHasDifferentLedger),
            post_naming_another_ledger_fails_with_pending_transfer_has_different_ledger,
        ),
        (
            T(TransferResult::PendingTransferHasDifferentCode),
            post_naming_another_code_fails_with_pending_transfer_has_different_code,
        ),
        (
            T(TransferResult::PendingTransferHasDifferentKind),
            post_of_another_kind_fails_with_pending_transfer_has_different_kind,
        ),
        (
            T(TransferResult::ExceedsPendingTransferAmount),
            post_of_more_than_the_pending_amount_fails_with_exceeds_pending_transfer_amount,
        ),
        (
            T(TransferResult::PendingTransferHasDifferentAmount),
            void_naming_another_amount_fails_with_pending_transfer_has_different_amount,
        ),
        (
            T(TransferResult::PendingTransferAlreadyPosted),
            second_post_or_void_of_a_posted_transfer_fails_with_pending_transfer_already_posted,
        ),
        (
            T(TransferResult::PendingTransferAlreadyVoided),
            post_or_void_of_a_voided_transfer_fails_with_pending_transfer_already_voided,
        ),
        (T(TransferResult::PendingTransferExpired), post_of_expired_pending_transfer_is_rejected_as_expired),
        (
            T(TransferResult::DebitAccountAlreadyClosed),
            transfer_debiting_a_closed_account_fails_with_debit_account_already_closed,
        ),
        (
            T(TransferResult::CreditAccountAlreadyClosed),
            transfer_crediting_a_closed_account_fails_with_credit_account_already_closed,
        ),
        (
            T(TransferResult::OverflowsDebitsPending),
            pending_debit_past_u128_max_reserved_fails_with_overflows_debits_pending,
        ),
        (
            T(TransferResult::OverflowsCreditsPending),
            pending_credit_past_u128_max_reserved_fails_with_overflows_credits_pending,
        ),
        (T(TransferResult::OverflowsDebitsPosted), debit_past_u128_max_posted_fails_with_overflows_debits_posted),
        (T(TransferResult::OverflowsCreditsPosted), credit_past_u128_max_posted_fails_with_overflows_credits_posted),
        (T(TransferResult::OverflowsDebits), pending_debit_past_u128_max_debits_in_total_fails_with_overflows_debits),
        (
            T(TransferResult::OverflowsCredits),
            pending_credit_past_u128_max_credits_in_total_fails_with_overflows_credits,
        ),
        (T(TransferResult::OverflowsTimeout), pending_timeout_past_u64_max_nanoseconds_fails_with_overflows_timeout),
        (T(TransferResult::ExceedsCredits), debit_past_the_credits_of_a_limited_account_fails_with_exceeds_credits),
        (T(TransferResult::ExceedsDebits), credit_past_the_debits_of_a_limited_account_fails_with_exceeds_debits),
        (T(TransferResult::LedgerNotFound), transfer_on_a_ledger_that_does_not_exist_fails_with_ledger_not_found),
        (T(TransferResult::LedgerPeriodClosed), transfer_in_a_closed_period_fails_with_ledger_period_closed),
        (T(TransferResult::LedgerPeriodInAdjustment), transfer_in_an_adjustment_period_needs_the_adjustment_flag),
        (
            T(TransferResult::BudgetLegMissing),
            payment_without_its_budget_leg_fails_with_budget_leg_missing_and_changes_nothing,
        ),
        (
            L(LedgerResult::ExistsWithDifferentBudget),
            ledger_retry_with_another_budget_fails_with_exists_with_different_budget,
        ),
        (
            L(LedgerResult::PeriodMustBeOpen),
            ledger_created_in_another_period_than_open_is_rejected_as_period_must_be_open,
        ),
        (L(LedgerResult::BudgetLedgerMustBeDifferent), ledger_that_is_its_own_budget_ledger_is_rejected),
        (L(LedgerResult::BudgetCodesMustBeValid), budget_codes_out_of_order_or_without_a_budget_ledger_are_rejected),
        (
            L(LedgerResult::BudgetLedgerNotFound),
            budget_ledger_that_does_not_exist_is_rejected_as_budget_ledger_not_found,
        ),
        (
            L(LedgerResult::WarnPercentMustNotExceedMax),
            warning_share_over_100_is_rejected_as_warn_percent_must_not_exceed_max,
        ),
    ]
}

// ---------------------------------------------------------------------------
// Fiscal periods and budget control.
// ---------------------------------------------------------------------------

/// The budget ledger of [`budgeted_books`].
const BUDGET: LedgerId = LedgerId(3);
/// The budget ledger's appropriation account (credited with the budget;
/// its debits may not exceed its credits).
const APPROPRIATION: AccountId = AccountId(31);
/// The budget ledger's expended account.
const EXPENDED: AccountId = AccountId(32);
/// Where the appropriation comes from.
const AUTHORITY: AccountId = AccountId(33);

fn budget_ledger() -> Ledger {
    Ledger { id: BUDGET, currency: "KRW".into(), scale: 0, name: "Budget".into(), ..Default::default() }
}

fn budget_account(id: AccountId, flags: AccountFlags) -> Account {
    Account { id, ledger: BUDGET, code: 900, kind: AccountKind::Other, flags, ..Default::default() }
}

/// KRW under budget control (expenditures and code-7 transfers need a leg
/// in [`BUDGET`]), with an appropriation of 100.
fn budgeted_books() -> Books {
    let mut books = Books::empty();
    let policy = BudgetPolicy { ledger: BUDGET, code_min: 7, code_max: 7 };
    assert_eq!(
        books.create_ledgers(&[budget_ledger(), Ledger { budget: policy, ..krw() }]),
        [LedgerResult::Created; 2]
    );
    books.open(&[
        cash(CASH),
        other(OTHER),
        budget_account(APPROPRIATION, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        budget_account(EXPENDED, AccountFlags::NONE),
        budget_account(AUTHORITY, AccountFlags::NONE),
    ]);
    let appropriated = Transfer { ledger: BUDGET, ..journal(900, AUTHORITY, APPROPRIATION, 100) };
    assert_eq!(books.create_transfer(appropriated), TransferResult::Created);
    books
}

fn payment(id: u128, amount: u128) -> Transfer {
    Transfer { kind: TransferKind::Expenditure, ..journal(id, OTHER, CASH, amount) }
}

fn leg(id: u128, amount: u128) -> Transfer {
    Transfer { ledger: BUDGET, ..journal(id, APPROPRIATION, EXPENDED, amount) }
}

#[test]
fn ledger_retry_with_another_budget_fails_with_exists_with_different_budget() {
    let mut books = budgeted_books();
    assert_eq!(books.create_ledger(krw()), LedgerResult::ExistsWithDifferentBudget);
}

#[test]
fn ledger_created_in_another_period_than_open_is_rejected_as_period_must_be_open() {
    let mut books = Books::empty();
    let result = books.create_ledger(Ledger { period: Period::Adjustment, ..krw() });
    assert_eq!(result, LedgerResult::PeriodMustBeOpen);
}

#[test]
fn ledger_that_is_its_own_budget_ledger_is_rejected() {
    let mut books = Books::empty();
    let result = books.create_ledger(Ledger { budget: BudgetPolicy { ledger: KRW, ..Default::default() }, ..krw() });
    assert_eq!(result, LedgerResult::BudgetLedgerMustBeDifferent);
}

#[test]
fn budget_codes_out_of_order_or_without_a_budget_ledger_are_rejected() {
    let mut books = Books::empty();
    assert_eq!(books.create_ledger(budget_ledger()), LedgerResult::Created);
    for (ledger, code_min, code_max) in [(BUDGET, 5, 3), (BUDGET, 0, 3), (LedgerId(0), 1, 1)] {
        let budget = BudgetPolicy { ledger, code_min, code_max };
        assert_eq!(books.create_ledger(Ledger { budget, ..krw() }), LedgerResult::BudgetCodesMustBeValid);
    }
}

#[test]
fn budget_ledger_that_does_not_exist_is_rejected_as_budget_ledger_not_found() {
    let mut books = Books::empty();
    let result = books.create_ledger(Ledger { budget: BudgetPolicy { ledger: BUDGET, ..Default::default() }, ..krw() });
    assert_eq!(result, LedgerResult::BudgetLedgerNotFound);
}

#[test]
fn transfer_on_a_ledger_that_does_not_exist_fails_with_ledger_not_found() {
    let mut books = Books::new();
    let transfer = Transfer { ledger: LedgerId(77), ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::LedgerNotFound);
    // A ledger that exists but is not the accounts' is named as before.
    assert_eq!(books.create_ledger(usd()), LedgerResult::Created);
    let transfer = Transfer { ledger: USD, ..journal(2, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(transfer), TransferResult::TransferMustHaveTheSameLedgerAsAccounts);
    // Not found may pass (the ledger may be created): the id's outcome is kept.
    let again = Transfer { ledger: LedgerId(77), ..journal(1, CASH, OTHER, 10) };
    assert_eq!(books.create_transfer(again), TransferResult::IdAlreadyFailed);
}

#[test]
fn warning_share_over_100_is_rejected_as_warn_percent_must_not_exceed_max() {
    let mut books = Books::empty();
    let result = books.create_ledger(Ledger { warn_percent: 101, ..budget_ledger() });
    assert_eq!(result, LedgerResult::WarnPercentMustNotExceedMax);
    assert_eq!(books.create_ledger(Ledger { warn_percent: 100, ..budget_ledger() }), LedgerResult::Created);
}

#[test]
fn a_budget_warning_is_raised_once_when_the_share_is_crossed() {
    let limited = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    // 90 % of 1,000 is 900: crossing it warns, with the share reached.
    assert_eq!(budget_warning(90, limited, 899, 900, 1_000), Some(90));
    assert_eq!(budget_warning(90, limited, 500, 1_000, 1_000), Some(100));
    assert_eq!(budget_warning(90, limited, 900, 950, 1_000), None, "already past: warned before");
    assert_eq!(budget_warning(90, limited, 100, 899, 1_000), None, "not yet");
    assert_eq!(budget_warning(0, limited, 0, 1_000, 1_000), None, "no share set");
    assert_eq!(budget_warning(90, AccountFlags::NONE, 0, 1_000, 1_000), None, "not an appropriation");
    assert_eq!(budget_warning(90, limited, 0, 1, 0), None, "nothing appropriated");
    // The share rounds up: 90 % of 15 is 13.5, so 14 crosses it, 13 does not.
    assert_eq!(budget_warning(90, limited, 0, 13, 15), None);
    assert_eq!(budget_warning(90, limited, 0, 14, 15), Some(93));
    // Amounts near u128::MAX neither overflow nor wrap.
    let huge = u128::MAX;
    assert_eq!(budget_warning(90, limited, 0, huge, huge), Some(100));
    assert_eq!(budget_warning(90, limited, 0, huge / 100 * 89, huge), None);
}

#[test]
fn periods_move_forward_only_and_close_only_without_pending_transfers() {
    let mut books = Books::new();
    assert_eq!(books.set_period(LedgerId(0), Period::Closed), SetPeriodResult::LedgerMustNotBeZero);
    assert_eq!(books.set_period(USD, Period::Closed), SetPeriodResult::LedgerNotFound);
    assert_eq!(books.set_period(KRW, Period::Open), SetPeriodResult::Unchanged);
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, 10)), TransferResult::Created);
    assert_eq!(books.set_period(KRW, Period::Adjustment), SetPeriodResult::Changed);
    assert_eq!(books.set_period(KRW, Period::Open), SetPeriodResult::PeriodCannotReopen);
    assert_eq!(books.set_period(KRW, Period::Closed), SetPeriodResult::PendingTransfersOpen);
    let voided = flagged(void(2, 1), TransferFlags::ADJUSTMENT);
    assert_eq!(books.create_transfer(voided), TransferResult::Created);
    assert_eq!(books.set_period(KRW, Period::Closed), SetPeriodResult::Changed);
    assert_eq!(books.set_period(KRW, Period::Closed), SetPeriodResult::Unchanged);
    assert_eq!(books.set_period(KRW, Period::Adjustment), SetPeriodResult::PeriodCannotReopen);
    assert_eq!(books.store().ledger(KRW).unwrap().unwrap().period, Period::Closed);
}

#[test]
fn transfer_in_a_closed_period_fails_with_ledger_period_closed() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, 10)), TransferResult::Created);
    assert_eq!(books.create_transfer(void(2, 1)), TransferResult::Created);
    assert_eq!(books.set_period(KRW, Period::Closed), SetPeriodResult::Changed);
    let adjustment = flagged(journal(3, CASH, OTHER, 10), TransferFlags::ADJUSTMENT);
    assert_eq!(books.create_transfer(adjustment), TransferResult::LedgerPeriodClosed);
    assert_eq!(books.store().transfer(TransferId(3)).unwrap(), None);
}

#[test]
fn transfer_in_an_adjustment_period_needs_the_adjustment_flag() {
    let mut books = Books::new();
    assert_eq!(books.create_transfer(pending(1, CASH, OTHER, 10)), TransferResult::Created);
    assert_eq!(books.set_period(KRW, Period::Adjustment), SetPeriodResult::Changed);
    assert_eq!(books.create_transfer(journal(2, CASH, OTHER, 10)), TransferResult::LedgerPeriodInAdjustment);
    assert_eq!(books.create_transfer(post(3, 1, 10)), TransferResult::LedgerPeriodInAdjustment);
    let adjustment = flagged(journal(4, CASH, OTHER, 10), TransferFlags::ADJUSTMENT);
    assert_eq!(books.create_transfer(adjustment), TransferResult::Created);
    assert_eq!(books.create_transfer(flagged(post(5, 1, 10), TransferFlags::ADJUSTMENT)), TransferResult::Created);
}

#[test]
fn payment_without_its_budget_leg_fails_with_budget_leg_missing_and_changes_nothing() {
    let mut books = budgeted_books();
    assert_eq!(books.create_transfer(payment(1, 40)), TransferResult::BudgetLegMissing);
    assert_eq!(books.store().transfer(TransferId(1)).unwrap(), None);
    assert_eq!(books.store().account(OTHER).unwrap().unwrap().debits_posted, 0);
    // A leg of another amount, or in another ledger, is no leg.
    let results = books.create_transfers(&[linked(payment(2, 40)), leg(3, 39)]);
    assert_eq!(results, [TransferResult::BudgetLegMissing, TransferResult::LinkedEventFailed]);
    // A code the policy names needs a leg too; a journal of another code does not.
    let coded = Transfer { code: 7, ..journal(4, OTHER, CASH, 5) };
    assert_eq!(books.create_transfer(coded), TransferResult::BudgetLegMissing);
    assert_eq!(books.create_transfer(journal(5, OTHER, CASH, 5)), TransferResult::Created);
}

#[test]
fn payment_with_its_budget_leg_posts_both_and_the_appropriation_bounds_it() {
    let mut books = budgeted_books();
    let results = books.create_transfers(&[linked(payment(1, 60)), leg(2, 60)]);
    assert_eq!(results, [TransferResult::Created; 2]);
    assert_eq!(books.store().account(APPROPRIATION).unwrap().unwrap().debits_posted, 60);
    // The leg comes first in the chain just as well; two payments need two legs.
    let results =
        books.create_transfers(&[linked(leg(3, 20)), linked(payment(4, 20)), linked(payment(5, 20)), leg(6, 20)]);
    assert_eq!(results, [TransferResult::Created; 4]);
    // Past the appropriation the leg fails and takes the payment with it.
    let results = books.create_transfers(&[linked(payment(7, 1)), leg(8, 1)]);
    assert_eq!(results, [TransferResult::LinkedEventFailed, TransferResult::ExceedsCredits]);
    assert_eq!(books.store().transfer(TransferId(7)).unwrap(), None);
}

#[test]
fn account_in_a_year_being_closed_fails_with_ledger_period_closing() {
    let mut books = Books::new();
    let next = LedgerId(5);
    assert_eq!(books.create_ledger(Ledger::new(next, "KRW", 0, "Next year")), LedgerResult::Created);
    let opening = AccountId(50);
    books.open(&[Account { id: opening, ledger: next, code: 300, ..Default::default() }]);
    let close = YearClose {
        ledger: KRW,
        next_ledger: next,
        net_position: CASH,
        opening_account: opening,
        nominal: vec![CodeRange { min: 400, max: 499 }],
        carry: vec![CodeRange { min: 100, max: 199 }],
        account_offset: 100,
        first_transfer_id: 1_000,
        code: 9,
    };
    let timestamp = books.tick();
    let begun = books.machine.close_step(timestamp, &CloseStep::Begin(Box::new(close))).expect("well formed");
    assert_eq!(begun, OperationResults::Close(CloseResult::Begun));
    assert_eq!(books.create_account(other(AccountId(7))), AccountResult::LedgerPeriodClosing);
    assert_eq!(books.store().account(AccountId(7)).unwrap(), None);
    assert_eq!(books.create_transfer(journal(1, CASH, OTHER, 1)), TransferResult::LedgerPeriodClosed);
    assert_eq!(books.set_period(KRW, Period::Closed), SetPeriodResult::CloseInProgress);
}

#[test]
fn every_result_code_is_produced_by_the_rule_test_listed_for_it() {
    let table = rule_tests();
    let listed: BTreeSet<Produced> = table.iter().map(|(code, _)| *code).collect();
    assert_eq!(listed.len(), table.len(), "a result code is listed twice");
    let every_code = CreateLedgerResult::ALL
        .iter()
        .map(|code| Produced::Ledger(*code))
        .chain(CreateAccountResult::ALL.iter().map(|code| Produced::Account(*code)))
        .chain(CreateTransferResult::ALL.iter().map(|code| Produced::Transfer(*code)));
    let untested: Vec<Produced> = every_code.filter(|code| !listed.contains(code)).collect();
    assert!(untested.is_empty(), "result codes without a rule test: {untested:?}");
    for (code, rule_test) in table {
        PRODUCED.with(|produced| produced.borrow_mut().clear());
        rule_test();
        let seen = PRODUCED.with(|produced| produced.borrow().contains(&code));
        assert!(seen, "the rule test listed for {code:?} did not produce it");
    }
}
