//! Bank-statement reconciliation on real `coffer node` processes: a
//! camt.053 statement (written here in the real schema's shape) of a cash
//! account is imported and matched with the account's transfers (one to
//! one, one line to several transfers, a mismatch, an unmatched line and an
//! unmatched transfer), re-run idempotently, resolved by hand (audited), and
//! followed by a CSV statement that must continue it; bad input is refused
//! naming what is wrong and changes nothing. Every node holds the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coffer_api::client::{Client, ClientError};
use coffer_api::proto::{self, StatementFormat};
use coffer_ledger::{
    Account, AccountFlags, AccountId, AccountKind, CreateTransferResult as R, Ledger, LedgerId, Transfer, TransferId,
    TransferKind,
};
use coffer_tests::{client_of, coffer, Cluster};

const FY2027: LedgerId = LedgerId(2027);
const CASH: AccountId = AccountId(27_101);
const PAYABLE: AccountId = AccountId(27_201);
const REVENUE: AccountId = AccountId(27_401);
const EXPENSE: AccountId = AccountId(27_501);
/// Korea's offset from UTC: the bank's dates.
const KST_MINUTES: i32 = 540;

fn transfer(id: u128, debit: AccountId, credit: AccountId, amount: u128, reference: u128) -> Transfer {
    let kind = if debit == CASH { TransferKind::Receipt } else { TransferKind::Expenditure };
    Transfer {
        id: TransferId(id),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: FY2027,
        code: 1,
        kind,
        user_data_128: reference,
        ..Default::default()
    }
}

/// The bank's date (KST) of a transfer's timestamp, YYYY-MM-DD.
fn kst_date(timestamp_ns: u64) -> String {
    let days = (timestamp_ns / 1_000_000_000 + 9 * 3600) / 86_400;
    coffer_recon::Date::from_days_since_epoch(days as i64).to_string()
}

/// One camt.053 entry: amount, CRDT/DBIT, booking date, end-to-end reference.
fn entry(amount: &str, direction: &str, date: &str, reference: &str) -> String {
    format!(
        "<Ntry><Amt Ccy=\"KRW\">{amount}</Amt><CdtDbtInd>{direction}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>\
         <BookgDt><Dt>{date}</Dt></BookgDt><ValDt><Dt>{date}</Dt></ValDt><AcctSvcrRef>BK-{reference}</AcctSvcrRef>\
         <NtryDtls><TxDtls><Refs><EndToEndId>{reference}</EndToEndId></Refs>\
         <RmtInf><Ustrd>payment {reference}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"
    )
}

/// A camt.053.001.08 statement of the treasury's KRW account.
fn camt053(namespace: &str, id: &str, date: &str, opening: &str, closing: &str, entries: &[String]) -> Vec<u8> {
    let balance = |code: &str, amount: &str| {
        format!(
            "<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp><Amt Ccy=\"KRW\">{amount}</Amt>\
             <CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{date}</Dt></Dt></Bal>"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Document xmlns=\"{namespace}\"><BkToCstmrStmt>\
         <GrpHdr><MsgId>MSG-{id}</MsgId><CreDtTm>{date}T18:00:00+09:00</CreDtTm></GrpHdr>\
         <Stmt><Id>{id}</Id><ElctrncSeqNb>1</ElctrncSeqNb><CreDtTm>{date}T18:00:00+09:00</CreDtTm>\
         <FrToDt><FrDtTm>{date}T00:00:00+09:00</FrDtTm><ToDtTm>{date}T23:59:59+09:00</ToDtTm></FrToDt>\
         <Acct><Id><Othr><Id>1002-027-101</Id></Othr></Id><Ccy>KRW</Ccy></Acct>{}{}{}</Stmt></BkToCstmrStmt></Document>",
        balance("OPBD", opening),
        balance("CLBD", closing),
        entries.concat()
    )
    .into_bytes()
}

const CAMT_08: &str = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08";

async fn import(
    client: &Client,
    account: AccountId,
    content: Vec<u8>,
    format: StatementFormat,
) -> proto::ReconciliationResponse {
    client.import_statement(account, format, content, 0, KST_MINUTES).await.unwrap()
}

fn states(record: &proto::Reconciliation) -> Vec<(u32, String)> {
    record.lines.iter().map(|line| (line.index, line.state.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_statement_is_reconciled_rerun_resolved_by_hand_and_continued() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let created = client.create_ledgers(&[Ledger::new(FY2027, "KRW", 0, "General account FY2027")]).await.unwrap();
    assert!(created.value[0].is_success());
    let account = |id, code, kind, flags| Account { id, ledger: FY2027, code, kind, flags, ..Default::default() };
    let accounts = [
        account(CASH, 101, AccountKind::Cash, AccountFlags::HISTORY),
        account(PAYABLE, 201, AccountKind::Other, AccountFlags::NONE),
        account(REVENUE, 401, AccountKind::Other, AccountFlags::NONE),
        account(EXPENSE, 501, AccountKind::Other, AccountFlags::NONE),
    ];
    assert!(client.create_accounts(&accounts).await.unwrap().value.iter().all(|r| r.is_success()));
    // The day's transfers; user_data_128 is the payment request number the
    // bank's lines carry as their end-to-end reference.
    let day = [
        transfer(1, CASH, REVENUE, 1_000_000, 27_000_001),
        transfer(2, EXPENSE, CASH, 250_000, 27_000_002),
        transfer(3, EXPENSE, CASH, 300_000, 27_000_003),
        transfer(4, EXPENSE, CASH, 50_000, 27_000_004),
        transfer(5, EXPENSE, CASH, 70_000, 27_000_004),
        transfer(6, EXPENSE, CASH, 40_000, 27_000_006),
    ];
    assert_eq!(client.create_transfers(&day).await.unwrap().value, [R::Created; 6]);
    let posted = client.lookup_transfers(&[TransferId(1)]).await.unwrap().value;
    let date = kst_date(posted[0].unwrap().timestamp);

    // The bank's statement of the day: payment 3 was charged 310,000; the
    // two payments of request 27000004 were booked as one line; payment 6 is
    // not on it; a credit of interest is not in the books.
    let lines = [
        entry("1000000", "CRDT", &date, "PAY-27000001"),
        entry("250000", "DBIT", &date, "PAY-27000002"),
        entry("310000", "DBIT", &date, "PAY-27000003"),
        entry("120000", "DBIT", &date, "PAY-27000004"),
        entry("1234", "CRDT", &date, "INTEREST-Q4"),
    ];
    let statement = camt053(CAMT_08, "STMT-0001", &date, "0", "321234", &lines);
    let first = import(&client, CASH, statement.clone(), StatementFormat::Camt053).await;
    assert_eq!(first.result, "recorded", "{first:?}");
    let record = first.reconciliation.unwrap();
    assert_eq!(
        states(&record),
        [
            (1, "matched".into()),
            (2, "matched".into()),
            (3, "mismatched".into()),
            (4, "matched".into()),
            (5, "unmatched".into())
        ]
    );
    let kinds: Vec<(String, Vec<u32>, Vec<String>)> =
        record.groups.iter().map(|g| (g.kind.clone(), g.lines.clone(), g.transfers.clone())).collect();
    assert!(kinds.contains(&("one_to_many".into(), vec![4], vec!["4".into(), "5".into()])), "{kinds:?}");
    assert!(kinds.contains(&("mismatch".into(), vec![3], vec!["3".into()])), "{kinds:?}");
    assert_eq!(record.unmatched_lines, [5]);
    assert_eq!(record.unmatched_transfers, ["6"]);
    // The bank says 321,234; the books hold 290,000 at the day's end.
    assert_eq!((record.closing_balance.as_str(), record.ledger_balance.as_str()), ("321234", "290000"));
    assert!(!record.balances_agree);

    // Imported again: the same outcome, nothing written.
    let again = import(&client, CASH, statement.clone(), StatementFormat::Camt053).await;
    assert_eq!(again.result, "unchanged");
    assert_eq!(again.reconciliation.unwrap().runs, 1);

    // The mismatch resolved by hand, with a reason; kept across a re-run.
    let reason = "the bank took a 10,000 fee with payment 27000003";
    let matched = client.match_statement(CASH, "STMT-0001", &[3], &[TransferId(3)], reason).await.unwrap();
    assert_eq!(matched.result, "matched");
    let record = matched.reconciliation.unwrap();
    let manual = record.groups.iter().find(|g| g.kind == "manual").unwrap();
    assert_eq!((manual.reason.as_str(), manual.by.as_str()), (reason, "admin"));
    assert_eq!(states(&record)[2], (3, "matched".into()));
    let rerun = import(&client, CASH, statement, StatementFormat::Camt053).await;
    assert_eq!(rerun.result, "unchanged", "a re-run keeps the manual match");
    // A manual match of a line already matched is refused.
    let twice = client.match_statement(CASH, "STMT-0001", &[1], &[], "again").await.unwrap();
    assert_eq!(twice.result, "line_already_matched");

    // Bad input: each refused naming what is wrong, nothing kept.
    let wrong_namespace = camt053("urn:iso:std:iso:20022:tech:xsd:camt.052.001.08", "STMT-X", &date, "0", "0", &[]);
    let error = client.import_statement(CASH, StatementFormat::Camt053, wrong_namespace, 0, KST_MINUTES).await;
    let message = status_message(error);
    assert!(message.contains("content") && message.contains("camt.052"), "{message}");
    let decimals = camt053(CAMT_08, "STMT-X", &date, "0", "10.5", &[entry("10.5", "CRDT", &date, "X")]);
    let message =
        status_message(client.import_statement(CASH, StatementFormat::Camt053, decimals, 0, KST_MINUTES).await);
    assert!(message.contains("Amt"), "{message}");
    let not_cash =
        import(&client, PAYABLE, camt053(CAMT_08, "STMT-P", &date, "0", "0", &[]), StatementFormat::Camt053).await;
    assert_eq!(not_cash.result, "account_not_cash");
    // The next statement must open where this one closed.
    let gap = format!(
        "statement,STMT-0002,account,1002-027-101,currency,KRW,from,{date},to,{date}\nopening,{date},5\nclosing,{date},5\n"
    );
    let refused = import(&client, CASH, gap.into_bytes(), StatementFormat::Csv).await;
    assert_eq!(refused.result, "opening_balance_discontinuous");
    assert!(client.reconciliation(CASH, "STMT-0002").await.is_err(), "nothing was kept");
    let next = format!(
        "statement,STMT-0002,account,1002-027-101,currency,KRW,from,{date},to,{date}\nopening,{date},321234\n\
         closing,{date},281234\nline,{date},debit,40000,PAY-27000006,BK-6,late payment\n"
    );
    let continued = import(&client, CASH, next.into_bytes(), StatementFormat::Csv).await;
    assert_eq!(continued.result, "recorded", "{continued:?}");
    let record = continued.reconciliation.unwrap();
    assert_eq!(states(&record), [(1, "matched".into())]);

    // The accountants' CSV, from the command line.
    let at = cluster.api_addresses().join(",");
    let shown =
        coffer(&["--addresses", &at, "reconcile", "show", "--account", "27101", "--statement", "STMT-0001", "--csv"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.starts_with("statement,account,line,date,direction,amount,reference,state,transfers"), "{text}");
    assert!(text.contains("STMT-0001,27101,5,") && text.contains("unmatched_transfer,6"), "{text}");

    // Every node holds the same reconciliation, and the audit trail names
    // who imported and who matched by hand.
    let index = continued.served.unwrap().applied_index;
    let expected = client.reconciliation(CASH, "STMT-0001").await.unwrap().reconciliation;
    for (id, node) in &cluster.nodes {
        cluster.wait_applied(*id, index, Duration::from_secs(10)).await;
        let message = proto::GetReconciliationRequest {
            account: CASH.0.to_string(),
            statement: "STMT-0001".into(),
            amount_unit: proto::AmountUnit::Minor as i32,
            stale: true,
        };
        let here = client_of(vec![node.addresses.api.clone()]);
        let found = here
            .ledger_call(message, |mut client, request| async move { client.get_reconciliation(request).await })
            .await
            .unwrap();
        assert_eq!(found.served.unwrap().node_id, *id);
        assert_eq!(found.reconciliation, expected, "node {id}");
        let trail = client.list_audit_at(&node.addresses.api, 0, 100).await.unwrap().value;
        let reconciled: Vec<_> = trail.iter().filter(|record| record.kind == "reconcile").collect();
        // Seven entries: five imports (recorded, unchanged twice, refused,
        // recorded; the non-cash one was refused before proposing) and two
        // manual matches (one refused).
        assert_eq!(reconciled.len(), 7, "node {id}: {trail:#?}");
        assert!(reconciled.iter().all(|record| record.principal == "admin"), "node {id}");
    }
}

fn status_message<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(error) => error.to_string(),
        Ok(value) => panic!("expected a refusal, got {value:?}"),
    }
}
