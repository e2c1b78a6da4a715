//! The state machine's rules for bank-statement reconciliations: what it
//! keeps, what it refuses (each with its result, changing nothing), and how
//! a manual match takes lines and transfers out of a mismatch.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use coffer_ledger::reconcile::{GroupKind, MatchGroup, StatementLine};
use coffer_ledger::{
    Account, AccountId, AccountKind, Ledger, LedgerId, MemoryStore, Operation, OperationResults, ReconcileOp,
    ReconcileResult as R, Reconciliation, StateMachine, Store, TransferId,
};

const CASH: AccountId = AccountId(1);
const OTHER: AccountId = AccountId(2);

struct Books {
    machine: StateMachine<MemoryStore>,
    now: u64,
}

impl Books {
    fn new() -> Self {
        let mut books = Self { machine: StateMachine::new(MemoryStore::new()), now: 1_000 };
        books.machine.create_ledgers(1, &[Ledger::new(LedgerId(1), "KRW", 0, "Won")]).unwrap();
        let cash = Account { id: CASH, ledger: LedgerId(1), code: 101, kind: AccountKind::Cash, ..Default::default() };
        let other = Account { id: OTHER, ledger: LedgerId(1), code: 401, ..Default::default() };
        books.machine.create_accounts(2, &[cash, other]).unwrap();
        books
    }

    fn apply(&mut self, op: ReconcileOp) -> R {
        self.now += 1_000;
        match self.machine.apply(self.now, &Operation::Reconcile(Box::new(op))).unwrap() {
            OperationResults::Reconcile(result) => result,
            other => panic!("{other:?}"),
        }
    }

    fn stored(&self, statement: &str) -> Option<Reconciliation> {
        self.machine.store().reconciliation(CASH, statement).unwrap()
    }
}

fn line(index: u32, amount: u128) -> StatementLine {
    StatementLine { index, amount, credit: false, date: 20_000, reference: format!("R{index}") }
}

/// Statement `id` of days `from..=to`, opening at `opening`, closing at
/// `closing`: line 1 matched to transfer 1, line 2 mismatched with transfer
/// 2, line 3 unmatched, transfer 3 unmatched.
fn statement(id: &str, from: i32, to: i32, opening: i128, closing: i128) -> Reconciliation {
    Reconciliation {
        account: CASH,
        statement: id.into(),
        from_date: from,
        to_date: to,
        opening,
        closing,
        ledger_balance: closing,
        lines: vec![line(1, 10), line(2, 20), line(3, 30)],
        groups: vec![
            MatchGroup {
                kind: GroupKind::Mismatch,
                lines: vec![2],
                transfers: vec![TransferId(2)],
                ..Default::default()
            },
            MatchGroup {
                kind: GroupKind::OneToOne,
                lines: vec![1],
                transfers: vec![TransferId(1)],
                ..Default::default()
            },
        ],
        unmatched_transfers: vec![TransferId(3)],
        ..Default::default()
    }
}

fn manual(statement: &str, lines: &[u32], transfers: &[u128], reason: &str) -> ReconcileOp {
    ReconcileOp::Match {
        account: CASH,
        statement: statement.into(),
        lines: lines.to_vec(),
        transfers: transfers.iter().map(|id| TransferId(*id)).collect(),
        reason: reason.into(),
        by: "accountant".into(),
    }
}

#[test]
fn a_statement_is_kept_once_per_outcome_and_must_continue_the_previous_one() {
    let mut books = Books::new();
    let first = statement("S1", 20_000, 20_000, 0, 100);
    assert_eq!(books.apply(ReconcileOp::Record(Box::new(first.clone()))), R::Recorded);
    let kept = books.stored("S1").unwrap();
    assert_eq!((kept.runs, kept.groups[0].lines.as_slice()), (1, &[1][..]), "groups in line order");
    assert_eq!(books.apply(ReconcileOp::Record(Box::new(first.clone()))), R::Unchanged);
    let changed = Reconciliation { unmatched_transfers: vec![], ..first };
    assert_eq!(books.apply(ReconcileOp::Record(Box::new(changed))), R::Rerun);
    assert_eq!(books.stored("S1").unwrap().runs, 2);

    let refusals = [
        (Reconciliation { account: OTHER, ..statement("S2", 20_001, 20_001, 100, 50) }, R::AccountNotCash),
        (Reconciliation { account: AccountId(9), ..statement("S2", 20_001, 20_001, 100, 50) }, R::AccountNotFound),
        (statement("", 20_001, 20_001, 100, 50), R::StatementIdInvalid),
        (statement("S2", 20_001, 20_001, 99, 50), R::OpeningBalanceDiscontinuous),
        (statement("S2", 19_000, 19_999, 100, 50), R::StatementBeforePrevious),
    ];
    for (record, refusal) in refusals {
        assert_eq!(books.apply(ReconcileOp::Record(Box::new(record.clone()))), refusal, "{record:?}");
        assert_eq!(books.machine.store().reconciliation(record.account, &record.statement).unwrap(), None);
    }
    assert_eq!(books.apply(ReconcileOp::Record(Box::new(statement("S2", 20_001, 20_001, 100, 50)))), R::Recorded);
    assert_eq!(books.machine.store().latest_reconciliation(CASH).unwrap().unwrap().statement, "S2");
    assert_eq!(books.machine.store().reconciliations(CASH, "", 10).unwrap().len(), 2);
    assert_eq!(books.machine.store().reconciliations(CASH, "S1", 10).unwrap().len(), 1);
}

#[test]
fn a_manual_match_takes_open_lines_and_transfers_and_dissolves_a_mismatch() {
    let mut books = Books::new();
    assert_eq!(books.apply(ReconcileOp::Record(Box::new(statement("S1", 20_000, 20_000, 0, 100)))), R::Recorded);
    let refusals = [
        (manual("S9", &[3], &[], "why"), R::ReconciliationNotFound),
        (manual("S1", &[3], &[], ""), R::ReasonMustNotBeEmpty),
        (manual("S1", &[], &[], "why"), R::NothingToMatch),
        (manual("S1", &[7], &[], "why"), R::LineNotFound),
        (manual("S1", &[1], &[], "why"), R::LineAlreadyMatched),
        (manual("S1", &[3], &[1], "why"), R::TransferNotUnmatched),
        (manual("S1", &[3], &[99], "why"), R::TransferNotUnmatched),
    ];
    let before = books.stored("S1");
    for (op, refusal) in refusals {
        assert_eq!(books.apply(op.clone()), refusal, "{op:?}");
        assert_eq!(books.stored("S1"), before, "a refused match changes nothing");
    }
    // Line 2 (mismatched with transfer 2) matched by hand with transfer 3:
    // the mismatch is dissolved and transfer 2 is unmatched again.
    assert_eq!(books.apply(manual("S1", &[2], &[3], "booked under another request number")), R::Matched);
    let record = books.stored("S1").unwrap();
    assert_eq!(record.unmatched_transfers, [TransferId(2)]);
    assert!(record.groups.iter().all(|g| g.kind != GroupKind::Mismatch));
    let by_hand = record.groups.iter().find(|g| g.kind == GroupKind::Manual).unwrap();
    assert_eq!((by_hand.by.as_str(), by_hand.lines.as_slice()), ("accountant", &[2][..]));
    assert_eq!(record.unmatched_lines(), [3]);
}
