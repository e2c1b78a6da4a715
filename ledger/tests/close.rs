//! The year-end close (`coffer_ledger::close`), held against an independent
//! computation: the test keeps its own list of every transfer it posted and
//! works out from it what each account must hold after the close, without
//! reading the store's balances.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use coffer_ledger::close::plan_close;
use coffer_ledger::{
    trial_balance, Account, AccountFlags, AccountId, AccountKind, CloseResult, CloseStep, CodeRange,
    CreateAccountResult, CreateTransferResult, Ledger, LedgerId, MemoryStore, OperationResults, Period, PeriodChange,
    SetPeriodResult, StateMachine, Store, Transfer, TransferFlags, TransferId, TransferKind, YearClose,
};
use proptest::prelude::*;

const YEAR: LedgerId = LedgerId(2027);
const NEXT: LedgerId = LedgerId(2028);
/// The net position of 2027 (code 300, carried).
const POSITION: AccountId = AccountId(2_027_300);
/// The opening account of 2028.
const OPENING: AccountId = AccountId(2_028_999);
const OFFSET: u128 = 1_000_000;
const FIRST_ID: u128 = 1 << 64;

/// The codes the generated accounts get: cash and a liability carry, revenue
/// and expense are nominal, 800 is neither (it stays in the closed year).
const CODES: [u16; 5] = [101, 201, 401, 501, 800];

fn the_close() -> YearClose {
    YearClose {
        ledger: YEAR,
        next_ledger: NEXT,
        net_position: POSITION,
        opening_account: OPENING,
        nominal: vec![CodeRange { min: 400, max: 599 }],
        carry: vec![CodeRange { min: 100, max: 300 }],
        account_offset: OFFSET,
        first_transfer_id: FIRST_ID,
        code: 99,
    }
}

struct Books {
    machine: StateMachine<MemoryStore>,
    now: u64,
    /// Every transfer posted that succeeded, by the test (not the store).
    posted: Vec<Transfer>,
}

impl Books {
    fn new(accounts: &[(u128, u16)]) -> Self {
        let mut books = Self { machine: StateMachine::new(MemoryStore::new()), now: 0, posted: Vec::new() };
        let ledgers = [Ledger::new(YEAR, "KRW", 0, "FY2027"), Ledger::new(NEXT, "KRW", 0, "FY2028")];
        let t = books.tick();
        books.machine.create_ledgers(t, &ledgers).unwrap();
        let mut all: Vec<Account> = accounts.iter().map(|(id, code)| account(AccountId(*id), YEAR, *code)).collect();
        all.push(account(POSITION, YEAR, 300));
        all.push(account(OPENING, NEXT, 999));
        let t = books.tick();
        let results = books.machine.create_accounts(t, &all).unwrap();
        assert!(results.iter().all(|r| *r == CreateAccountResult::Created), "{results:?}");
        books
    }

    fn tick(&mut self) -> u64 {
        self.now = self.now.max(self.machine.store().last_timestamp().unwrap()) + 1_000;
        self.now
    }

    fn post(&mut self, transfers: &[Transfer]) -> Vec<CreateTransferResult> {
        let t = self.tick();
        let results = self.machine.create_transfers(t, transfers).unwrap();
        self.note(transfers, &results);
        results
    }

    fn note(&mut self, transfers: &[Transfer], results: &[CreateTransferResult]) {
        for (transfer, result) in transfers.iter().zip(results) {
            if *result == CreateTransferResult::Created {
                self.posted.push(*transfer);
            }
        }
    }

    fn step(&mut self, step: CloseStep) -> OperationResults {
        let t = self.tick();
        let results = self.machine.close_step(t, &step).unwrap();
        if let (CloseStep::Post { transfers, .. }, OperationResults::Transfers(results)) = (&step, &results) {
            self.note(transfers, results);
        }
        results
    }

    fn close_step(&mut self, step: CloseStep) -> CloseResult {
        match self.step(step) {
            OperationResults::Close(result) => result,
            other => panic!("a close step answered {other:?}"),
        }
    }

    /// Runs the close from its plan, stopping after `chunks_max` posts
    /// (`None`: to the end). Returns whether it finished.
    fn run_close(&mut self, chunk: usize, chunks_max: Option<usize>) -> bool {
        let plan = plan_close(self.machine.store(), YEAR).unwrap();
        let t = self.tick();
        let results = self.machine.create_accounts(t, &plan.accounts).unwrap();
        assert!(results.iter().all(|r| r.is_success()), "{results:?}");
        let chunks = plan.closing.chunks(chunk).chain(plan.opening.chunks(chunk));
        for (posted, transfers) in chunks.enumerate() {
            if chunks_max.is_some_and(|max| posted >= max) {
                return false;
            }
            match self.step(CloseStep::Post { ledger: YEAR, transfers: transfers.to_vec() }) {
                OperationResults::Transfers(results) => assert!(results.iter().all(|r| r.is_success()), "{results:?}"),
                other => panic!("a post answered {other:?}"),
            }
        }
        assert_eq!(
            self.close_step(CloseStep::Finish { ledger: YEAR, transfers: plan.transfers() }),
            CloseResult::Finished
        );
        true
    }

    fn account(&self, id: AccountId) -> Account {
        self.machine.store().account(id).unwrap().unwrap()
    }

    fn period(&self, ledger: LedgerId) -> Period {
        self.machine.store().ledger(ledger).unwrap().unwrap().period
    }

    /// An account's balance (debits minus credits posted) computed from the
    /// test's own list of transfers.
    fn expected_net(&self, id: AccountId) -> i128 {
        self.posted.iter().fold(0i128, |net, t| {
            let amount = i128::try_from(t.amount).unwrap();
            match (t.debit_account_id == id, t.credit_account_id == id) {
                (true, _) => net + amount,
                (_, true) => net - amount,
                _ => net,
            }
        })
    }
}

fn account(id: AccountId, ledger: LedgerId, code: u16) -> Account {
    let kind = if code == 101 { AccountKind::Cash } else { AccountKind::Other };
    Account { id, ledger, code, kind, user_data_32: u32::from(code), ..Default::default() }
}

fn journal(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        ledger: YEAR,
        code: 1,
        kind: TransferKind::Journal,
        ..Default::default()
    }
}

fn net_of(account: &Account) -> i128 {
    i128::try_from(account.debits_posted).unwrap() - i128::try_from(account.credits_posted).unwrap()
}

/// A year's accounts (id, code) and transfers between them (indexes, amount).
type Year = (Vec<(u128, u16)>, Vec<(usize, usize, u128)>);

fn year() -> impl Strategy<Value = Year> {
    prop::collection::vec(prop::sample::select(CODES.to_vec()), 2..40).prop_flat_map(|codes| {
        let accounts: Vec<(u128, u16)> = codes.iter().enumerate().map(|(i, code)| (10 + i as u128, *code)).collect();
        let n = accounts.len();
        let transfers = prop::collection::vec((0..n, 0..n, 1u128..1_000_000), 0..120);
        (Just(accounts), transfers)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the year holds, and however the close is cut into batches and
    /// interrupted, the close zeroes every nominal account into the net
    /// position, opens every carried balance in the next year, leaves the
    /// rest alone, and locks the year.
    #[test]
    fn a_close_moves_exactly_the_balances_the_rule_names(
        (accounts, transfers) in year(),
        chunk in 1usize..20,
        interrupt in prop::option::of(0usize..4),
    ) {
        let mut books = Books::new(&accounts);
        let journals: Vec<Transfer> = transfers
            .iter()
            .enumerate()
            .filter(|(_, (dr, cr, _))| dr != cr)
            .map(|(i, (dr, cr, amount))| journal(1 + i as u128, accounts[*dr].0, accounts[*cr].0, *amount))
            .collect();
        for batch in journals.chunks(7) {
            books.post(batch);
        }
        let before: BTreeMap<AccountId, i128> =
            accounts.iter().map(|(id, _)| (AccountId(*id), books.expected_net(AccountId(*id)))).collect();
        prop_assert_eq!(books.close_step(CloseStep::Begin(Box::new(the_close()))), CloseResult::Begun);
        prop_assert_eq!(books.period(YEAR), Period::Closing);
        let finished = books.run_close(chunk, interrupt);
        if !finished {
            // An interrupted close is continued by running it again.
            prop_assert_eq!(books.close_step(CloseStep::Begin(Box::new(the_close()))), CloseResult::Resumed);
            prop_assert!(books.run_close(chunk, None));
        }
        prop_assert_eq!(books.period(YEAR), Period::Closed);
        prop_assert_eq!(books.close_step(CloseStep::Begin(Box::new(the_close()))), CloseResult::Exists);

        let nominal_total: i128 = accounts.iter().filter(|(_, code)| *code == 401 || *code == 501)
            .map(|(id, _)| before[&AccountId(*id)]).sum();
        let mut carried_total = 0i128;
        for (id, code) in &accounts {
            let id = AccountId(*id);
            let now = net_of(&books.account(id));
            let carried = books.machine.store().account(AccountId(id.0 + OFFSET)).unwrap();
            match code {
                401 | 501 => {
                    prop_assert_eq!(now, 0, "nominal account {} is closed out", id);
                    prop_assert!(carried.is_none());
                }
                101 | 201 => {
                    prop_assert_eq!(now, before[&id], "a carried account keeps its balance in the closed year");
                    let opened = carried.map_or(0, |account| net_of(&account));
                    prop_assert_eq!(opened, before[&id], "account {} opens with its balance", id);
                    carried_total += before[&id];
                }
                _ => {
                    prop_assert_eq!(now, before[&id], "an account of neither rule is left alone");
                    prop_assert!(carried.is_none());
                }
            }
        }
        // The net position took every nominal balance, and carries it.
        prop_assert_eq!(net_of(&books.account(POSITION)), nominal_total);
        let position_opened = books.machine.store().account(AccountId(POSITION.0 + OFFSET)).unwrap();
        prop_assert_eq!(position_opened.map_or(0, |account| net_of(&account)), nominal_total);
        carried_total += nominal_total;
        prop_assert_eq!(net_of(&books.account(OPENING)), -carried_total);
        for ledger in [YEAR, NEXT] {
            let trial = trial_balance(books.machine.store(), ledger).unwrap();
            prop_assert_eq!(trial.total.debits_posted, trial.total.credits_posted);
        }
        // Closed: nothing more is posted in the year, and the close cannot be undone.
        let late = journal(999_999, accounts[0].0, accounts[1].0, 1);
        prop_assert_eq!(books.post(&[late]), vec![CreateTransferResult::LedgerPeriodClosed]);
        prop_assert_eq!(books.close_step(CloseStep::Abort { ledger: YEAR }), CloseResult::NotClosing);
    }
}

#[test]
fn a_closing_year_takes_no_transfer_no_account_and_no_period_change_but_the_close_s_own() {
    let mut books = Books::new(&[(10, 401), (11, 101)]);
    assert_eq!(books.post(&[journal(1, 11, 10, 500)]), [CreateTransferResult::Created]);
    assert_eq!(books.close_step(CloseStep::Begin(Box::new(the_close()))), CloseResult::Begun);
    assert_eq!(books.post(&[journal(2, 11, 10, 1)]), [CreateTransferResult::LedgerPeriodClosed]);
    let t = books.tick();
    let late = account(AccountId(12), YEAR, 401);
    assert_eq!(books.machine.create_accounts(t, &[late]).unwrap(), [CreateAccountResult::LedgerPeriodClosing]);
    let t = books.tick();
    let to_closed = PeriodChange { ledger: YEAR, period: Period::Closed };
    assert_eq!(books.machine.set_periods(t, &[to_closed]).unwrap(), [SetPeriodResult::CloseInProgress]);
    // Finishing before the closing transfers are posted is refused.
    assert_eq!(books.close_step(CloseStep::Finish { ledger: YEAR, transfers: 0 }), CloseResult::NominalBalanceRemains);
    // Before its first transfer a close can be undone: the year is open again.
    assert_eq!(books.close_step(CloseStep::Abort { ledger: YEAR }), CloseResult::Aborted);
    assert_eq!(books.period(YEAR), Period::Open);
    assert_eq!(books.post(&[journal(3, 11, 10, 1)]), [CreateTransferResult::Created]);
    // Once it has posted, it can only be finished.
    assert_eq!(books.close_step(CloseStep::Begin(Box::new(the_close()))), CloseResult::Begun);
    assert!(!books.run_close(1, Some(1)));
    assert_eq!(books.close_step(CloseStep::Abort { ledger: YEAR }), CloseResult::AlreadyPosted);
    assert_eq!(
        books.close_step(CloseStep::Finish { ledger: YEAR, transfers: 2 }),
        CloseResult::TransfersMissing,
        "the opening transfer is still to post"
    );
}

#[test]
fn a_close_is_refused_naming_what_is_wrong_and_changes_nothing() {
    let cases: Vec<(YearClose, CloseResult)> = vec![
        (YearClose { next_ledger: YEAR, ..the_close() }, CloseResult::NextLedgerMustBeDifferent),
        (YearClose { next_ledger: LedgerId(7), ..the_close() }, CloseResult::NextLedgerNotFound),
        (YearClose { code: 0, ..the_close() }, CloseResult::CodeMustNotBeZero),
        (YearClose { nominal: vec![], ..the_close() }, CloseResult::NominalCodesMustBeValid),
        (
            YearClose { nominal: vec![CodeRange { min: 5, max: 4 }], ..the_close() },
            CloseResult::NominalCodesMustBeValid,
        ),
        (
            YearClose { carry: vec![CodeRange { min: 450, max: 460 }], ..the_close() },
            CloseResult::CarryCodesMustBeValid,
        ),
        (YearClose { account_offset: 0, ..the_close() }, CloseResult::AccountOffsetMustNotBeZero),
        (YearClose { first_transfer_id: u128::MAX - 3, ..the_close() }, CloseResult::FirstTransferIdMustBeValid),
        (YearClose { net_position: AccountId(77), ..the_close() }, CloseResult::NetPositionNotFound),
        (YearClose { net_position: OPENING, ..the_close() }, CloseResult::NetPositionMustBeInLedger),
        (YearClose { net_position: AccountId(10), ..the_close() }, CloseResult::NetPositionMustNotBeNominal),
        (YearClose { net_position: AccountId(11), ..the_close() }, CloseResult::NetPositionMustBeUnlimited),
        (YearClose { opening_account: AccountId(78), ..the_close() }, CloseResult::OpeningAccountNotFound),
        (YearClose { opening_account: AccountId(11), ..the_close() }, CloseResult::OpeningAccountMustBeInNextLedger),
    ];
    let mut books = Books::new(&[(10, 401)]);
    let t = books.tick();
    let limited = Account { flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS, ..account(AccountId(11), YEAR, 101) };
    books.machine.create_accounts(t, &[limited]).unwrap();
    let before = books.machine.store().ledger(YEAR).unwrap();
    for (close, refusal) in cases {
        assert_eq!(books.close_step(CloseStep::Begin(Box::new(close.clone()))), refusal, "{close:?}");
        assert_eq!(books.machine.store().ledger(YEAR).unwrap(), before, "a refused close changes nothing");
    }
    // A pending transfer still reserving money holds the close back.
    let pending = Transfer { flags: TransferFlags::PENDING, ..journal(5, 11, 10, 3) };
    assert_eq!(books.post(&[pending]), [CreateTransferResult::Created]);
    assert_eq!(books.close_step(CloseStep::Begin(Box::new(the_close()))), CloseResult::PendingTransfersOpen);
    // Another close of a year being closed is refused.
    let void = Transfer { flags: TransferFlags::VOID_PENDING, pending_id: TransferId(5), ..journal(6, 0, 0, 0) };
    assert_eq!(books.post(&[Transfer { ledger: YEAR, code: 1, ..void }]), [CreateTransferResult::Created]);
    assert_eq!(books.close_step(CloseStep::Begin(Box::new(the_close()))), CloseResult::Begun);
    let other = YearClose { code: 98, ..the_close() };
    assert_eq!(books.close_step(CloseStep::Begin(Box::new(other))), CloseResult::CloseDiffers);
}
