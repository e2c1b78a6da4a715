//! The treasury's year on real `coffer node` processes: budget control (a
//! payment needs its budget leg, and the appropriation bounds it) and fiscal
//! periods (open, closing adjustment, closed), through the Rust client and
//! the command line, the same on every node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coffer_api::client::Client;
use coffer_ledger::{
    Account, AccountFlags, AccountId, AccountKind, BudgetPolicy, ChangedRecord, CreateTransferResult as R, Ledger,
    LedgerId, Period, PeriodChange, SetPeriodResult, Transfer, TransferFlags, TransferId, TransferKind,
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
