//! The treasury's year on real `coffer node` processes: budget control (a
//! payment needs its budget leg, and the appropriation bounds it) and fiscal
//! periods (open, closing adjustment, closed), through the Rust client and
//! the command line, the same on every node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coffer_api::client::Client;
use coffer_ledger::{
    Account, AccountFlags, AccountId, AccountKind, BudgetPolicy, ChangedRecord, CodeRange, CreateTransferResult as R,
    Ledger, LedgerId, Period, PeriodChange, SetPeriodResult, Transfer, TransferFlags, TransferId, TransferKind,
    YearClose,
};
use coffer_tests::{client_of, coffer, Cluster};

/// The fund's fiscal year 2026: payments, under budget control.
const FY2026: LedgerId = LedgerId(2026);
/// The budget ledger of 2026: appropriations.
const BUDGET: LedgerId = LedgerId(9026);
const CASH: AccountId = AccountId(1);
const EXPENSE: AccountId = AccountId(2);
const AUTHORITY: AccountId = AccountId(11);
const APPROPRIATION: AccountId = AccountId(12);
const EXPENDED: AccountId = AccountId(13);
/// The commitments made against the appropriation (contracts signed): what
/// payments may charge.
const COMMITMENT: AccountId = AccountId(14);
/// What the appropriation allows.
const APPROPRIATED: u128 = 1_000_000;
/// What was committed of it.
const COMMITTED: u128 = 950_000;

fn account(id: AccountId, ledger: LedgerId, kind: AccountKind, flags: AccountFlags) -> Account {
    Account { id, ledger, code: 100, kind, flags, ..Default::default() }
}

fn payment(id: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: EXPENSE,
        credit_account_id: CASH,
        amount,
        ledger: FY2026,
        code: 1,
        kind: TransferKind::Expenditure,
        ..Default::default()
    }
}

fn leg(id: u128, amount: u128) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: COMMITMENT,
        credit_account_id: EXPENDED,
        amount,
        ledger: BUDGET,
        code: 1,
        kind: TransferKind::Journal,
        ..Default::default()
    }
}

fn linked(transfer: Transfer) -> Transfer {
    Transfer { flags: transfer.flags.with(TransferFlags::LINKED), ..transfer }
}

/// The timestamp (feed cursor) of transfer `id`.
async fn warned_cursor(client: &Client, id: u128) -> u64 {
    let found = client.lookup_transfers(&[TransferId(id)]).await.unwrap().value;
    found[0].expect("the transfer exists").timestamp
}

/// The Prometheus text a node's metrics endpoint serves.
fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The two ledgers, their accounts, and the appropriation.
async fn set_up(client: &Client) {
    let budget = BudgetPolicy { ledger: BUDGET, ..Default::default() };
    let ledgers = [
        Ledger {
            id: BUDGET,
            currency: "KRW".into(),
            name: "Budget FY2026".into(),
            warn_percent: 90,
            ..Default::default()
        },
        Ledger {
            id: FY2026,
            currency: "KRW".into(),
            name: "General account FY2026".into(),
            budget,
            ..Default::default()
        },
    ];
    let created = client.create_ledgers(&ledgers).await.unwrap().value;
    assert!(created.iter().all(|result| result.is_success()), "{created:?}");
    let accounts = [
        account(CASH, FY2026, AccountKind::Cash, AccountFlags::NONE),
        account(EXPENSE, FY2026, AccountKind::Other, AccountFlags::NONE),
        account(AUTHORITY, BUDGET, AccountKind::Other, AccountFlags::NONE),
        account(APPROPRIATION, BUDGET, AccountKind::Other, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        account(EXPENDED, BUDGET, AccountKind::Other, AccountFlags::NONE),
        account(COMMITMENT, BUDGET, AccountKind::Other, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    ];
    let created = client.create_accounts(&accounts).await.unwrap().value;
    assert!(created.iter().all(|result| result.is_success()), "{created:?}");
    let appropriation =
        Transfer { debit_account_id: AUTHORITY, credit_account_id: APPROPRIATION, amount: APPROPRIATED, ..leg(1, 0) };
    let commitment =
        Transfer { debit_account_id: APPROPRIATION, credit_account_id: COMMITMENT, amount: COMMITTED, ..leg(2, 0) };
    assert_eq!(client.create_transfers(&[appropriation, commitment]).await.unwrap().value, [R::Created; 2]);
    // The appropriation bounds the commitments: one more past it is refused.
    let over = Transfer { amount: APPROPRIATED - COMMITTED + 1, ..commitment };
    assert_eq!(
        client.create_transfers(&[Transfer { id: TransferId(3), ..over }]).await.unwrap().value,
        [R::ExceedsCredits]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_control_and_fiscal_periods_hold_on_every_node() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    set_up(&client).await;

    // A payment without its budget leg is refused, and nothing of it stays.
    assert_eq!(client.create_transfers(&[payment(100, 400_000)]).await.unwrap().value, [R::BudgetLegMissing]);
    // With its leg, both post.
    let paid = client.create_transfers(&[linked(payment(101, 400_000)), leg(102, 400_000)]).await.unwrap();
    assert_eq!(paid.value, [R::Created, R::Created]);
    // Past 90 % of the commitment (855,000): a warning, in the change feed
    // of the budget ledger (on the leg that crossed it) and in every node's
    // metrics.
    let warned = client.create_transfers(&[linked(payment(110, 500_000)), leg(111, 500_000)]).await.unwrap();
    assert_eq!(warned.value, [R::Created, R::Created]);
    // The commitment of 95 % of the appropriation warned first.
    let mut feed = client.subscribe_changes(0, BUDGET).unwrap();
    let last = warned_cursor(&client, 111).await;
    let mut warnings = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), feed.next()).await;
        let change = next.expect("a change within 20 s").expect("the feed goes on").unwrap();
        if let (Some(warning), ChangedRecord::TransferCreated(transfer)) = (change.budget_warning, &change.record) {
            warnings.push((transfer.id, warning));
        }
        if change.cursor >= last {
            break;
        }
    }
    assert_eq!(warnings, [(TransferId(2), (APPROPRIATION, 95)), (TransferId(111), (COMMITMENT, 94))]);
    // Beyond what is left of the commitment (50,000) the leg fails, and the
    // payment with it.
    let beyond = client.create_transfers(&[linked(payment(103, 50_001)), leg(104, 50_001)]).await.unwrap();
    assert_eq!(beyond.value, [R::LinkedEventFailed, R::ExceedsCredits]);

    // The closing-adjustment period, from the command line: only
    // adjustments are accepted.
    let at = cluster.api_addresses().join(",");
    let moved = coffer(&["--addresses", &at, "ledger", "period", "--id", "2026", "--to", "adjustment"]);
    let text = String::from_utf8_lossy(&moved.stdout);
    assert!(moved.status.success(), "{text}{}", String::from_utf8_lossy(&moved.stderr));
    assert!(text.contains("ledger 2026 period adjustment: changed"), "{text}");
    let late = [linked(payment(105, 1_000)), leg(106, 1_000)];
    assert_eq!(
        client.create_transfers(&late).await.unwrap().value,
        [R::LedgerPeriodInAdjustment, R::LinkedEventFailed]
    );
    let adjustment = Transfer { flags: TransferFlags::LINKED.with(TransferFlags::ADJUSTMENT), ..payment(107, 1_000) };
    let adjusted = client.create_transfers(&[adjustment, leg(108, 1_000)]).await.unwrap();
    assert_eq!(adjusted.value, [R::Created, R::Created]);

    // Closed: nothing more, not even an adjustment; the year never reopens.
    let closed = client.set_periods(&[PeriodChange { ledger: FY2026, period: Period::Closed }]).await.unwrap();
    assert_eq!(closed.value, [SetPeriodResult::Changed]);
    let after = Transfer { flags: TransferFlags::ADJUSTMENT, ..payment(109, 10) };
    assert_eq!(client.create_transfers(&[after]).await.unwrap().value, [R::LedgerPeriodClosed]);
    let refused = coffer(&["--addresses", &at, "ledger", "period", "--id", "2026", "--to", "open"]);
    assert!(!refused.status.success(), "a refused change fails the command");
    assert!(String::from_utf8_lossy(&refused.stdout).contains("period_cannot_reopen"));
    let reopen = client.set_periods(&[PeriodChange { ledger: FY2026, period: Period::Open }]).await.unwrap();
    assert_eq!(reopen.value, [SetPeriodResult::PeriodCannotReopen]);

    // Every node holds the same: the posted payments, the appropriation
    // charged by exactly them, and the period changes in the audit trail.
    let index = reopen.applied_index;
    let expected = [false, true, true, false, false, false, false, true, true, false, true, true];
    for (id, node) in &cluster.nodes {
        cluster.wait_applied(*id, index, Duration::from_secs(10)).await;
        // This node's own state (a stale read is served where it is asked).
        let here = client_of(vec![node.addresses.api.clone()]).with_stale_reads(true);
        let ids: Vec<TransferId> = (100..=111).map(TransferId).collect();
        let found = here.lookup_transfers(&ids).await.unwrap();
        assert_eq!(found.node_id, *id);
        let found = found.value;
        assert_eq!(found.iter().map(Option::is_some).collect::<Vec<_>>(), expected, "node {id}");
        let accounts = here.lookup_accounts(&[APPROPRIATION, COMMITMENT]).await.unwrap().value;
        let [Some(appropriation), Some(commitment)] = accounts[..] else { panic!("node {id}: {accounts:?}") };
        assert_eq!((appropriation.debits_posted, appropriation.credits_posted), (COMMITTED, APPROPRIATED), "node {id}");
        assert_eq!((commitment.debits_posted, commitment.credits_posted), (901_000, COMMITTED), "node {id}");
        let metrics = scrape(&node.addresses.metrics);
        let warnings = metrics.lines().find(|line| line.starts_with("coffer_budget_warnings_total"));
        assert!(warnings.is_some_and(|line| line.ends_with(" 2")), "node {id}: {warnings:?}");
        let trail = client.list_audit_at(&node.addresses.api, 0, 100).await.unwrap().value;
        let periods: Vec<_> = trail.iter().filter(|record| record.kind == "periods").collect();
        assert_eq!(periods.len(), 4, "node {id}: {trail:#?}");
        assert!(periods.iter().all(|record| record.principal == "admin"), "node {id}: {periods:#?}");
    }
}

/// The general account of 2027, closed into 2028.
const FY2027: LedgerId = LedgerId(2027);
const FY2028: LedgerId = LedgerId(2028);
/// 2027's net position (code 300, carried) and 2028's opening account.
const POSITION_2027: AccountId = AccountId(27_300);
const OPENING_2028: AccountId = AccountId(28_399);
/// Account A of 2027 carries into A + this in 2028.
const CARRY_OFFSET: u128 = 1_000;

/// 2027's accounts: (id, code, kind). 101 cash and 201 payables carry;
/// 401-402 revenue and 501-503 expenses are nominal.
const ACCOUNTS_2027: [(u128, u16, AccountKind); 8] = [
    (27_101, 101, AccountKind::Cash),
    (27_201, 201, AccountKind::Other),
    (27_401, 401, AccountKind::Other),
    (27_402, 402, AccountKind::Other),
    (27_501, 501, AccountKind::Other),
    (27_502, 502, AccountKind::Other),
    (27_503, 503, AccountKind::Other),
    (27_300, 300, AccountKind::Other),
];

fn close_of_2027() -> YearClose {
    YearClose {
        ledger: FY2027,
        next_ledger: FY2028,
        net_position: POSITION_2027,
        opening_account: OPENING_2028,
        nominal: vec![CodeRange { min: 400, max: 599 }],
        carry: vec![CodeRange { min: 100, max: 300 }],
        account_offset: CARRY_OFFSET,
        first_transfer_id: 2_027_900_000,
        code: 99,
    }
}

/// The year's transfers: (id, debit, credit, amount, kind).
fn year_2027() -> Vec<Transfer> {
    let t = |id: u128, debit: u128, credit: u128, amount: u128, kind: TransferKind| Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount,
        ledger: FY2027,
        code: 1,
        kind,
        ..Default::default()
    };
    vec![
        t(1, 27_101, 27_401, 9_000_000, TransferKind::Receipt),
        t(2, 27_101, 27_402, 1_500_000, TransferKind::Receipt),
        t(3, 27_501, 27_101, 2_000_000, TransferKind::Expenditure),
        t(4, 27_502, 27_101, 3_250_000, TransferKind::Expenditure),
        t(5, 27_503, 27_201, 700_000, TransferKind::Journal),
        t(6, 27_201, 27_101, 400_000, TransferKind::Journal),
        t(7, 27_401, 27_502, 50_000, TransferKind::Journal),
    ]
}

/// Debits minus credits posted of `account` in `transfers`: the test's own
/// computation, from what it posted.
fn net(transfers: &[Transfer], account: u128) -> i128 {
    transfers.iter().fold(0, |net, t| {
        let amount = i128::try_from(t.amount).unwrap();
        net + if t.debit_account_id.0 == account { amount } else { 0 }
            - if t.credit_account_id.0 == account { amount } else { 0 }
    })
}

/// A trial balance row's (code, debits posted, credits posted) from the wire.
fn rows(trial: &coffer_api::proto::TrialBalanceResponse) -> Vec<(u32, u128, u128)> {
    trial
        .codes
        .iter()
        .map(|row| {
            let totals = row.totals.as_ref().unwrap();
            (row.code, totals.debits_posted.parse().unwrap(), totals.credits_posted.parse().unwrap())
        })
        .collect()
}

/// The rows a trial balance of `accounts` (id, code) must have after
/// `transfers`: one per code, its debits and credits posted.
fn expected_rows(transfers: &[Transfer], accounts: &[(u128, u16)]) -> Vec<(u32, u128, u128)> {
    let mut rows: std::collections::BTreeMap<u32, (u128, u128)> = std::collections::BTreeMap::new();
    for (_, code) in accounts {
        rows.entry(u32::from(*code)).or_default();
    }
    for t in transfers {
        for (account, debit) in [(t.debit_account_id.0, true), (t.credit_account_id.0, false)] {
            let Some((_, code)) = accounts.iter().find(|(id, _)| *id == account) else { continue };
            let row = rows.entry(u32::from(*code)).or_default();
            if debit {
                row.0 += t.amount;
            } else {
                row.1 += t.amount;
            }
        }
    }
    rows.into_iter().map(|(code, (debits, credits))| (code, debits, credits)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fiscal_year_closes_into_the_next_and_every_node_holds_the_same_books() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let ledgers = [Ledger::new(FY2027, "KRW", 0, "General account FY2027"), Ledger::new(FY2028, "KRW", 0, "FY2028")];
    assert!(client.create_ledgers(&ledgers).await.unwrap().value.iter().all(|r| r.is_success()));
    let mut accounts: Vec<Account> = ACCOUNTS_2027
        .iter()
        .map(|(id, code, kind)| Account {
            id: AccountId(*id),
            ledger: FY2027,
            code: *code,
            kind: *kind,
            ..Default::default()
        })
        .collect();
    accounts.push(Account { id: OPENING_2028, ledger: FY2028, code: 399, ..Default::default() });
    assert!(client.create_accounts(&accounts).await.unwrap().value.iter().all(|r| r.is_success()));
    let year = year_2027();
    assert_eq!(client.create_transfers(&year).await.unwrap().value, vec![R::Created; year.len()]);

    // A close is refused while a pending transfer still reserves money, and
    // when its net position is missing; either changes nothing.
    let pending = Transfer { flags: TransferFlags::PENDING, ..year[3] };
    let pending = Transfer { id: TransferId(8), amount: 10, ..pending };
    assert_eq!(client.create_transfers(&[pending]).await.unwrap().value, [R::Created]);
    assert_eq!(client.close_fiscal_year(&close_of_2027()).await.unwrap().result, "pending_transfers_open");
    let void = Transfer { id: TransferId(9), pending_id: TransferId(8), flags: TransferFlags::VOID_PENDING, ..pending };
    assert_eq!(client.create_transfers(&[void]).await.unwrap().value, [R::Created]);
    let missing = YearClose { net_position: AccountId(27_999), ..close_of_2027() };
    assert_eq!(client.close_fiscal_year(&missing).await.unwrap().result, "net_position_not_found");
    // The closing-adjustment period, then the close.
    let adjust = PeriodChange { ledger: FY2027, period: Period::Adjustment };
    assert_eq!(client.set_periods(&[adjust]).await.unwrap().value, [SetPeriodResult::Changed]);
    let closed = client.close_fiscal_year(&close_of_2027()).await.unwrap();
    assert_eq!(closed.result, "finished", "{closed:?}");
    assert_eq!((closed.closing_transfers, closed.opening_transfers, closed.accounts_opened), (5, 3, 3));

    // The trial balances, against the test's own computation.
    let codes: Vec<(u128, u16)> = ACCOUNTS_2027.iter().map(|(id, code, _)| (*id, *code)).collect();
    let before = expected_rows(&year, &codes);
    assert_eq!(rows(closed.before.as_ref().unwrap()), before);
    let nominal: i128 = codes.iter().filter(|(_, code)| (400..600).contains(code)).map(|(id, _)| net(&year, *id)).sum();
    let after = rows(closed.after.as_ref().unwrap());
    for (code, debits, credits) in &after {
        let (code, debits, credits) = (*code as u16, *debits as i128, *credits as i128);
        let expected = match code {
            400..=599 => 0,
            300 => nominal,
            _ => codes.iter().filter(|(_, c)| *c == code).map(|(id, _)| net(&year, *id)).sum(),
        };
        assert_eq!(debits - credits, expected, "code {code} after the close");
    }
    let next: Vec<(u32, i128)> = rows(closed.next_after.as_ref().unwrap())
        .into_iter()
        .map(|(code, debits, credits)| (code, debits as i128 - credits as i128))
        .collect();
    let cash = net(&year, 27_101);
    let payables = net(&year, 27_201);
    assert_eq!(next, [(101, cash), (201, payables), (300, nominal), (399, -(cash + payables + nominal))]);
    assert!(closed.after.as_ref().unwrap().balanced && closed.next_after.as_ref().unwrap().balanced);

    // A retry answers `exists`; the year takes nothing more.
    let again = client.close_fiscal_year(&close_of_2027()).await.unwrap();
    assert_eq!(again.result, "exists");
    assert_eq!(rows(again.before.as_ref().unwrap()), before);
    let late = Transfer { id: TransferId(10), flags: TransferFlags::ADJUSTMENT, ..year[0] };
    assert_eq!(client.create_transfers(&[late]).await.unwrap().value, [R::LedgerPeriodClosed]);

    // From the command line too: the same close is a safe retry.
    let at = cluster.api_addresses().join(",");
    let cli = coffer(&[
        "--addresses",
        &at,
        "ledger",
        "close",
        "--id",
        "2027",
        "--next",
        "2028",
        "--net-position",
        "27300",
        "--opening-account",
        "28399",
        "--nominal",
        "400-599",
        "--carry",
        "100-300",
        "--account-offset",
        "1000",
        "--first-transfer-id",
        "2027900000",
        "--code",
        "99",
    ]);
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{text}{}", String::from_utf8_lossy(&cli.stderr));
    assert!(text.contains("ledger 2027 close: exists") && text.contains("after the close"), "{text}");

    // Every node holds the same books and the close in its audit trail.
    let index = closed.served.unwrap().applied_index;
    for (id, node) in &cluster.nodes {
        cluster.wait_applied(*id, index, Duration::from_secs(10)).await;
        let here = client_of(vec![node.addresses.api.clone()]).with_stale_reads(true);
        let carried = [27_101 + CARRY_OFFSET, 27_201 + CARRY_OFFSET, 27_300 + CARRY_OFFSET, 27_401];
        let found = here.lookup_accounts(&carried.map(AccountId)).await.unwrap().value;
        let nets: Vec<i128> =
            found.iter().map(|a| a.map_or(i128::MIN, |a| a.debits_posted as i128 - a.credits_posted as i128)).collect();
        assert_eq!(nets, [cash, payables, nominal, 0], "node {id}");
        let trail = client.list_audit_at(&node.addresses.api, 0, 100).await.unwrap().value;
        let steps = trail.iter().filter(|record| record.kind == "close").count();
        assert!(steps >= 4, "node {id}: begin, posts and finish are audited: {trail:#?}");
    }
}
