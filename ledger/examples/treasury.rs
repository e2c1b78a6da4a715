//! A small local-government treasury on Coffer's ledger state machine.
//!
//! Two ledgers side by side: `KRW` for cash and `KRW_BUDGET` for budget
//! authority. Every payment is one linked chain across both, so the budget
//! is charged if and only if the cash moves. The demo posts a tax receipt, a
//! two-tranche welfare commitment (pending), its payments (a partial post,
//! then the rest), a commitment voided when its contract is cancelled, and an
//! over-budget road expenditure that is rejected whole; then it prints the
//! results, the balances and both trial balances.
//!
//! Run it with `make demo`.

use coffer_ledger::amount::format_amount;
use coffer_ledger::{
    balance_as_of, trial_balance, Account, AccountFlags, AccountId, AccountKind, ApplyError, Ledger, LedgerId,
    MemoryStore, StateMachine, Store, Transfer, TransferFlags, TransferId, TransferKind,
};

const CASH: LedgerId = LedgerId(1);
const BUDGET: LedgerId = LedgerId(2);

const GENERAL_FUND_CASH: AccountId = AccountId(101);
const WELFARE_FUND_CASH: AccountId = AccountId(102);
const LOCAL_TAX_REVENUE: AccountId = AccountId(401);
const WELFARE_EXPENSE: AccountId = AccountId(501);
const ROADS_EXPENSE: AccountId = AccountId(502);
const COUNCIL_APPROPRIATIONS: AccountId = AccountId(901);
const WELFARE_BUDGET: AccountId = AccountId(911);
const ROADS_BUDGET: AccountId = AccountId(912);
const BUDGET_SPENT: AccountId = AccountId(921);

const SECOND_NS: u64 = 1_000_000_000;

/// Entry timestamps: one simulated second apart, as a Raft leader would stamp them.
struct Clock(u64);

impl Clock {
    fn next(&mut self) -> u64 {
        self.0 += SECOND_NS;
        self.0
    }
}

fn account(id: AccountId, ledger: LedgerId, code: u16, kind: AccountKind, flags: AccountFlags) -> Account {
    Account { id, ledger, code, kind, flags: flags | AccountFlags::HISTORY, ..Default::default() }
}

fn transfer(id: u128, kind: TransferKind, debit: AccountId, credit: AccountId, amount: u128) -> Transfer {
    let ledger = if kind == TransferKind::Journal { BUDGET } else { CASH };
    Transfer {
        id: TransferId(id),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger,
        code: 1,
        kind,
        ..Default::default()
    }
}

fn with(flags: TransferFlags, transfer: Transfer) -> Transfer {
    Transfer { flags: transfer.flags | flags, ..transfer }
}

fn post(id: u128, pending: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        pending_id: TransferId(pending),
        amount,
        kind: TransferKind::Journal,
        flags: TransferFlags::POST_PENDING,
        ..Default::default()
    }
}

fn name(id: AccountId) -> &'static str {
    match id {
        GENERAL_FUND_CASH => "General fund cash",
        WELFARE_FUND_CASH => "Welfare fund cash",
        LOCAL_TAX_REVENUE => "Local tax revenue",
        WELFARE_EXPENSE => "Welfare benefits expense",
        ROADS_EXPENSE => "Road maintenance expense",
        COUNCIL_APPROPRIATIONS => "Council appropriations",
        WELFARE_BUDGET => "Welfare budget",
        ROADS_BUDGET => "Roads budget",
        BUDGET_SPENT => "Budget spent",
        _ => "?",
    }
}

fn step(
    ledger: &mut StateMachine<MemoryStore>,
    clock: &mut Clock,
    title: &str,
    events: &[Transfer],
) -> Result<u64, ApplyError> {
    let timestamp = clock.next();
    let results = ledger.create_transfers(timestamp, events)?;
    println!("\n{title}");
    for (event, result) in events.iter().zip(&results) {
        let whole_pending = event.amount == Transfer::AMOUNT_MAX || event.flags.contains(TransferFlags::VOID_PENDING);
        let amount = if whole_pending { "all".to_owned() } else { won(event.amount) };
        println!("  transfer {:>3}  {:<14} {:>13}  ->  {result}", event.id, event.kind.as_str(), amount);
    }
    // Event i of a batch is stamped timestamp + i: return the last one's.
    Ok(timestamp + events.len() as u64 - 1)
}

fn won(amount: u128) -> String {
    let digits = format_amount(amount, 0);
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ledger = StateMachine::new(MemoryStore::new());
    let mut clock = Clock(1_798_761_600 * SECOND_NS); // 2027-01-01, the start of a fiscal year

    ledger.create_ledgers(
        clock.next(),
        &[Ledger::new(CASH, "KRW", 0, "Cash (won)"), Ledger::new(BUDGET, "KRW_BUDGET", 0, "Budget authority")],
    )?;
    let never_below_zero = AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    let within_appropriation = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    let none = AccountFlags::NONE;
    let results = ledger.create_accounts(
        clock.next(),
        &[
            account(GENERAL_FUND_CASH, CASH, 101, AccountKind::Cash, never_below_zero),
            account(WELFARE_FUND_CASH, CASH, 102, AccountKind::Cash, never_below_zero),
            account(LOCAL_TAX_REVENUE, CASH, 401, AccountKind::Other, none),
            account(WELFARE_EXPENSE, CASH, 501, AccountKind::Other, none),
            account(ROADS_EXPENSE, CASH, 502, AccountKind::Other, none),
            account(COUNCIL_APPROPRIATIONS, BUDGET, 901, AccountKind::Other, none),
            account(WELFARE_BUDGET, BUDGET, 911, AccountKind::Other, within_appropriation),
            account(ROADS_BUDGET, BUDGET, 912, AccountKind::Other, within_appropriation),
            account(BUDGET_SPENT, BUDGET, 921, AccountKind::Other, none),
        ],
    )?;
    assert!(results.iter().all(|result| result.is_success()), "the demo's accounts are valid");
    println!("Coffer demo: a local-government treasury (KRW cash ledger + KRW_BUDGET ledger)");

    let journal = TransferKind::Journal;
    step(
        &mut ledger,
        &mut clock,
        "1. The council appropriates the budget (welfare 300,000,000; roads 50,000,000)",
        &[
            transfer(1, journal, COUNCIL_APPROPRIATIONS, WELFARE_BUDGET, 300_000_000),
            transfer(2, journal, COUNCIL_APPROPRIATIONS, ROADS_BUDGET, 50_000_000),
        ],
    )?;
    step(
        &mut ledger,
        &mut clock,
        "2. A local-tax receipt, and cash moved to the welfare fund",
        &[
            transfer(10, TransferKind::Receipt, GENERAL_FUND_CASH, LOCAL_TAX_REVENUE, 500_000_000),
            transfer(11, TransferKind::CashTransfer, WELFARE_FUND_CASH, GENERAL_FUND_CASH, 200_000_000),
        ],
    )?;
    let committed_at = step(
        &mut ledger,
        &mut clock,
        "3. A welfare contract is committed (pending) in two tranches, atomically",
        &[
            with(
                TransferFlags::PENDING | TransferFlags::LINKED,
                transfer(20, journal, WELFARE_BUDGET, BUDGET_SPENT, 80_000_000),
            ),
            with(TransferFlags::PENDING, transfer(21, journal, WELFARE_BUDGET, BUDGET_SPENT, 40_000_000)),
        ],
    )?;
    step(
        &mut ledger,
        &mut clock,
        "4. Tranche 1 is paid at its invoiced 75,000,000 (partial post; 5,000,000 returns to the budget)",
        &[
            with(TransferFlags::LINKED, post(30, 20, 75_000_000)),
            transfer(31, TransferKind::Expenditure, WELFARE_EXPENSE, WELFARE_FUND_CASH, 75_000_000),
        ],
    )?;
    step(
        &mut ledger,
        &mut clock,
        "5. Tranche 2, the rest, is paid in full (post of the whole pending amount)",
        &[
            with(TransferFlags::LINKED, post(32, 21, Transfer::AMOUNT_MAX)),
            transfer(33, TransferKind::Expenditure, WELFARE_EXPENSE, WELFARE_FUND_CASH, 40_000_000),
        ],
    )?;
    step(
        &mut ledger,
        &mut clock,
        "6. A road contract is committed, then cancelled (void releases the budget)",
        &[with(TransferFlags::PENDING, transfer(40, journal, ROADS_BUDGET, BUDGET_SPENT, 30_000_000))],
    )?;
    let void = Transfer { flags: TransferFlags::VOID_PENDING, ..post(41, 40, 0) };
    step(&mut ledger, &mut clock, "   ... the cancellation", &[void])?;
    step(
        &mut ledger,
        &mut clock,
        "7. A 60,000,000 road expenditure exceeds its 50,000,000 budget: rejected whole, no cash moves",
        &[
            with(TransferFlags::LINKED, transfer(50, journal, ROADS_BUDGET, BUDGET_SPENT, 60_000_000)),
            transfer(51, TransferKind::Expenditure, ROADS_EXPENSE, GENERAL_FUND_CASH, 60_000_000),
        ],
    )?;
    step(
        &mut ledger,
        &mut clock,
        "8. The payment module retries step 5 after a timeout: nothing is paid twice",
        &[
            with(TransferFlags::LINKED, post(32, 21, Transfer::AMOUNT_MAX)),
            transfer(33, TransferKind::Expenditure, WELFARE_EXPENSE, WELFARE_FUND_CASH, 40_000_000),
        ],
    )?;

    println!("\nBalances");
    println!(
        "  {:<4} {:<26} {:>6} {:>14} {:>14} {:>14} {:>14}",
        "id", "account", "ledger", "debits_pending", "debits_posted", "credits_pending", "credits_posted"
    );
    let ids = [
        GENERAL_FUND_CASH,
        WELFARE_FUND_CASH,
        LOCAL_TAX_REVENUE,
        WELFARE_EXPENSE,
        ROADS_EXPENSE,
        COUNCIL_APPROPRIATIONS,
        WELFARE_BUDGET,
        ROADS_BUDGET,
        BUDGET_SPENT,
    ];
    for id in ids {
        let Some(a) = ledger.store().account(id)? else { continue };
        let ledger_name = if a.ledger == CASH { "KRW" } else { "BUDGET" };
        println!(
            "  {:<4} {:<26} {:>6} {:>14} {:>14} {:>14} {:>14}",
            a.id,
            name(id),
            ledger_name,
            won(a.debits_pending),
            won(a.debits_posted),
            won(a.credits_pending),
            won(a.credits_posted)
        );
    }

    if let Some(then) = balance_as_of(ledger.store(), WELFARE_BUDGET, committed_at)? {
        let available = then.credits_posted - then.debits_posted - then.debits_pending;
        println!(
            "\nWelfare budget as of step 3 (history): {} committed, {} still available",
            won(then.debits_pending),
            won(available)
        );
    }

    for (id, title) in [(CASH, "KRW"), (BUDGET, "KRW_BUDGET")] {
        let trial = trial_balance(ledger.store(), id)?;
        println!("\nTrial balance, ledger {id} ({title})");
        println!(
            "  {:<6} {:>8} {:>14} {:>14} {:>14} {:>14}",
            "code", "accounts", "debits_pend", "debits_post", "credits_pend", "credits_post"
        );
        for (code, t) in trial.codes.iter().chain(std::iter::once(&(0, trial.total))) {
            let label = if *code == 0 { "total".to_owned() } else { code.to_string() };
            println!(
                "  {:<6} {:>8} {:>14} {:>14} {:>14} {:>14}",
                label,
                t.accounts,
                won(t.debits_pending),
                won(t.debits_posted),
                won(t.credits_pending),
                won(t.credits_posted)
            );
        }
        let verdict = if trial.total.is_balanced() { "balanced" } else { "NOT BALANCED" };
        println!("  debits = credits: {verdict}");
    }
    println!("\nstate digest: {}", ledger.state_digest()?);
    Ok(())
}
