//! Bank-statement reconciliations, kept as replicated state.
//!
//! A reconciliation is one bank statement of one cash account, its lines,
//! and how they stand against the account's transfers: matched (one to one,
//! one line to several transfers, several lines to one transfer, or by hand
//! with a reason), mismatched (same reference, other amount), or unmatched
//! on either side; with the statement's balances and the account's balance
//! at the statement's end. The matching itself is computed outside the state
//! machine (on a read view, by the API); the state machine checks what it can
//! in bounded time (the account is a cash account, the statement continues
//! the previous one, a manual match names lines and transfers that are open)
//! and keeps the record, so every replica holds the same.

use crate::codec::DecodeError;
use crate::ids::{AccountId, TransferId};
use crate::model::BATCH_EVENTS_MAX;

/// The most lines one statement may have.
pub const STATEMENT_LINES_MAX: usize = BATCH_EVENTS_MAX;
/// The most transfers one reconciliation may list (matched and unmatched).
pub const RECONCILED_TRANSFERS_MAX: usize = 4 * BATCH_EVENTS_MAX;
/// The longest statement id or line reference, in bytes.
pub const STATEMENT_TEXT_LEN_MAX: usize = 64;
/// The longest reason of a manual match, or name of who made it, in bytes.
pub const REASON_LEN_MAX: usize = 256;

/// How a group of lines and transfers was matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKind {
    /// One line, one transfer, same reference and amount.
    #[default]
    OneToOne,
    /// One line covering several transfers with its reference.
    OneToMany,
    /// Several lines covering one transfer with their reference.
    ManyToOne,
    /// One line and one transfer with the same reference but other amounts.
    Mismatch,
    /// Matched by hand, with a reason.
    Manual,
}

impl GroupKind {
    const ALL: [Self; 5] = [Self::OneToOne, Self::OneToMany, Self::ManyToOne, Self::Mismatch, Self::Manual];

    /// The kind's stable one-byte code.
    pub const fn code(self) -> u8 {
        match self {
            Self::OneToOne => 1,
            Self::OneToMany => 2,
            Self::ManyToOne => 3,
            Self::Mismatch => 4,
            Self::Manual => 5,
        }
    }

    /// The kind with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The kind's snake-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OneToOne => "one_to_one",
            Self::OneToMany => "one_to_many",
            Self::ManyToOne => "many_to_one",
            Self::Mismatch => "mismatch",
            Self::Manual => "manual",
        }
    }
}

/// Lines and transfers that belong together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MatchGroup {
    /// How they were matched.
    pub kind: GroupKind,
    /// The statement lines (their indexes).
    pub lines: Vec<u32>,
    /// The transfers.
    pub transfers: Vec<TransferId>,
    /// For a manual match: why (empty otherwise).
    pub reason: String,
    /// For a manual match: who made it (the API's principal).
    pub by: String,
}

/// One booked line of a statement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatementLine {
    /// Its position in the statement, from 1.
    pub index: u32,
    /// Its amount, in the ledger's minor units.
    pub amount: u128,
    /// Money into the account (`true`) or out of it.
    pub credit: bool,
    /// Its booking date, in days since 1970-01-01.
    pub date: i32,
    /// The reference it carries (up to [`STATEMENT_TEXT_LEN_MAX`] bytes).
    pub reference: String,
}

/// One statement of one cash account, reconciled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reconciliation {
    /// The cash account.
    pub account: AccountId,
    /// The statement's id (1 to [`STATEMENT_TEXT_LEN_MAX`] bytes).
    pub statement: String,
    /// The first day it covers, in days since 1970-01-01.
    pub from_date: i32,
    /// The last day it covers (its closing balance's date).
    pub to_date: i32,
    /// Its opening balance (money in the account positive).
    pub opening: i128,
    /// Its closing balance.
    pub closing: i128,
    /// The account's balance (debits minus credits posted) at the end of
    /// `to_date`: equal to `closing` when the books and the bank agree.
    pub ledger_balance: i128,
    /// Its booked lines, in order.
    pub lines: Vec<StatementLine>,
    /// Matched and mismatched lines with their transfers.
    pub groups: Vec<MatchGroup>,
    /// Transfers of the account within the statement's days that no line matched.
    pub unmatched_transfers: Vec<TransferId>,
    /// How many times it was run (imported again).
    pub runs: u32,
    /// When it was last recorded (set by the state machine).
    pub timestamp: u64,
}

impl Reconciliation {
    /// The indexes of the lines no group holds.
    pub fn unmatched_lines(&self) -> Vec<u32> {
        let grouped: std::collections::BTreeSet<u32> =
            self.groups.iter().flat_map(|group| group.lines.iter().copied()).collect();
        self.lines.iter().map(|line| line.index).filter(|index| !grouped.contains(index)).collect()
    }

    /// Its store key (see [`reconciliation_key`]).
    pub fn key(&self) -> Vec<u8> {
        reconciliation_key(self.account, &self.statement)
    }

    /// Puts the groups in their canonical order: by their first line, then
    /// their first transfer (groups without lines last).
    pub fn sort_groups(&mut self) {
        let key = |group: &MatchGroup| {
            (group.lines.iter().min().copied().unwrap_or(u32::MAX), group.transfers.iter().min().copied())
        };
        self.groups.sort_by_key(key);
    }

    /// Whether `other` holds the same outcome (runs and time aside).
    pub fn same_outcome(&self, other: &Self) -> bool {
        Self { runs: 0, timestamp: 0, ..self.clone() } == Self { runs: 0, timestamp: 0, ..other.clone() }
    }
}

/// The store key of the reconciliation of `account`'s statement
/// `statement`: the account (16 bytes, big-endian) then the statement id.
/// The key of the account alone names its latest statement.
pub fn reconciliation_key(account: AccountId, statement: &str) -> Vec<u8> {
    [&account.0.to_be_bytes()[..], statement.as_bytes()].concat()
}

/// One reconciliation operation: the payload of a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileOp {
    /// Keep a statement's reconciliation (first run or a re-run).
    Record(Box<Reconciliation>),
    /// Match lines and transfers by hand.
    Match {
        /// The cash account.
        account: AccountId,
        /// The statement.
        statement: String,
        /// The lines matched (unmatched or mismatched ones).
        lines: Vec<u32>,
        /// The transfers matched (unmatched or mismatched ones).
        transfers: Vec<TransferId>,
        /// Why (1 to [`REASON_LEN_MAX`] bytes).
        reason: String,
        /// Who (the API's principal).
        by: String,
    },
}

/// Appends the encoding of `record` (see [`decode_reconciliation`]).
pub fn encode_reconciliation(record: &Reconciliation, out: &mut Vec<u8>) {
    out.extend_from_slice(&record.account.0.to_be_bytes());
    text(out, &record.statement);
    out.extend_from_slice(&record.from_date.to_be_bytes());
    out.extend_from_slice(&record.to_date.to_be_bytes());
    for balance in [record.opening, record.closing, record.ledger_balance] {
        out.extend_from_slice(&balance.to_be_bytes());
    }
    out.extend_from_slice(&record.runs.to_be_bytes());
    out.extend_from_slice(&record.timestamp.to_be_bytes());
    out.extend_from_slice(&(record.lines.len() as u32).to_be_bytes());
    for line in &record.lines {
        out.extend_from_slice(&line.index.to_be_bytes());
        out.extend_from_slice(&line.amount.to_be_bytes());
        out.push(u8::from(line.credit));
        out.extend_from_slice(&line.date.to_be_bytes());
        text(out, &line.reference);
    }
    out.extend_from_slice(&(record.groups.len() as u32).to_be_bytes());
    for group in &record.groups {
        out.push(group.kind.code());
        out.extend_from_slice(&(group.lines.len() as u32).to_be_bytes());
        group.lines.iter().for_each(|line| out.extend_from_slice(&line.to_be_bytes()));
        ids(out, &group.transfers);
        text(out, &group.reason);
        text(out, &group.by);
    }
    ids(out, &record.unmatched_transfers);
}

fn text(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn ids(out: &mut Vec<u8>, ids: &[TransferId]) {
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    ids.iter().for_each(|id| out.extend_from_slice(&id.0.to_be_bytes()));
}

/// Reads a reconciliation record, checking every length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.bytes.split_at_checked(len).ok_or(DecodeError::Length {
            record: "reconciliation",
            expected: len,
            actual: self.bytes.len(),
        })?;
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array()?))
    }
    fn i128(&mut self) -> Result<i128, DecodeError> {
        Ok(i128::from_be_bytes(self.array()?))
    }
    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = u16::from_be_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid(field, u64::from(len)))
    }
    /// A count of records of at least `size` bytes each, checked against
    /// what is left (so a corrupt count cannot allocate without bound).
    fn count(&mut self, size: usize, field: &'static str) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(size) > self.bytes.len() {
            return Err(invalid(field, count as u64));
        }
        Ok(count)
    }
    fn ids(&mut self, field: &'static str) -> Result<Vec<TransferId>, DecodeError> {
        let count = self.count(16, field)?;
        (0..count).map(|_| self.u128().map(TransferId)).collect()
    }
}

fn invalid(field: &'static str, value: u64) -> DecodeError {
    DecodeError::InvalidField { record: "reconciliation", field, value }
}

/// Decodes a record written by [`encode_reconciliation`].
pub fn decode_reconciliation(bytes: &[u8]) -> Result<Reconciliation, DecodeError> {
    let mut r = Reader { bytes };
    let account = AccountId(r.u128()?);
    let statement = r.text("statement")?;
    let (from_date, to_date) = (r.i32()?, r.i32()?);
    let (opening, closing, ledger_balance) = (r.i128()?, r.i128()?, r.i128()?);
    let runs = r.u32()?;
    let timestamp = u64::from_be_bytes(r.array()?);
    let lines_len = r.count(4 + 16 + 1 + 4 + 2, "lines")?;
    let mut lines = Vec::with_capacity(lines_len);
    for _ in 0..lines_len {
        let (index, amount) = (r.u32()?, r.u128()?);
        let credit = r.array::<1>()?[0] != 0;
        let date = r.i32()?;
        lines.push(StatementLine { index, amount, credit, date, reference: r.text("line.reference")? });
    }
    let groups_len = r.count(1 + 4 + 4 + 2 + 2, "groups")?;
    let mut groups = Vec::with_capacity(groups_len);
    for _ in 0..groups_len {
        let code = r.array::<1>()?[0];
        let kind = GroupKind::from_code(code).ok_or(invalid("group.kind", u64::from(code)))?;
        let count = r.count(4, "group.lines")?;
        let group_lines = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
        let transfers = r.ids("group.transfers")?;
        let (reason, by) = (r.text("group.reason")?, r.text("group.by")?);
        groups.push(MatchGroup { kind, lines: group_lines, transfers, reason, by });
    }
    let unmatched_transfers = r.ids("unmatched_transfers")?;
    if !r.bytes.is_empty() {
        return Err(DecodeError::Length {
            record: "reconciliation",
            expected: bytes.len() - r.bytes.len(),
            actual: bytes.len(),
        });
    }
    Ok(Reconciliation {
        account,
        statement,
        from_date,
        to_date,
        opening,
        closing,
        ledger_balance,
        lines,
        groups,
        unmatched_transfers,
        runs,
        timestamp,
    })
}

/// Appends the encoding of `op` (a tag, then a record or a manual match).
pub fn encode_reconcile_op(op: &ReconcileOp, out: &mut Vec<u8>) {
    match op {
        ReconcileOp::Record(record) => {
            out.push(1);
            encode_reconciliation(record, out);
        }
        ReconcileOp::Match { account, statement, lines, transfers, reason, by } => {
            out.push(2);
            out.extend_from_slice(&account.0.to_be_bytes());
            text(out, statement);
            out.extend_from_slice(&(lines.len() as u32).to_be_bytes());
            lines.iter().for_each(|line| out.extend_from_slice(&line.to_be_bytes()));
            ids(out, transfers);
            text(out, reason);
            text(out, by);
        }
    }
}

/// Decodes an operation written by [`encode_reconcile_op`].
pub fn decode_reconcile_op(bytes: &[u8]) -> Result<ReconcileOp, DecodeError> {
    let (&tag, rest) =
        bytes.split_first().ok_or(DecodeError::Length { record: "reconcile operation", expected: 1, actual: 0 })?;
    match tag {
        1 => Ok(ReconcileOp::Record(Box::new(decode_reconciliation(rest)?))),
        2 => {
            let mut r = Reader { bytes: rest };
            let account = AccountId(r.u128()?);
            let statement = r.text("statement")?;
            let count = r.count(4, "lines")?;
            let lines = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            let transfers = r.ids("transfers")?;
            let (reason, by) = (r.text("reason")?, r.text("by")?);
            if !r.bytes.is_empty() {
                return Err(invalid("trailing bytes", r.bytes.len() as u64));
            }
            Ok(ReconcileOp::Match { account, statement, lines, transfers, reason, by })
        }
        other => {
            Err(DecodeError::InvalidField { record: "reconcile operation", field: "tag", value: u64::from(other) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reconciliation {
        Reconciliation {
            account: AccountId(27_101),
            statement: "STMT-2027-01".into(),
            from_date: 20_000,
            to_date: 20_030,
            opening: -5,
            closing: 1_000,
            ledger_balance: 995,
            lines: vec![
                StatementLine { index: 1, amount: 500, credit: true, date: 20_001, reference: "27000001".into() },
                StatementLine { index: 3, amount: 7, credit: false, date: 20_002, reference: String::new() },
            ],
            groups: vec![MatchGroup {
                kind: GroupKind::Manual,
                lines: vec![3],
                transfers: vec![TransferId(9), TransferId(10)],
                reason: "bank fee booked in two parts".into(),
                by: "accountant".into(),
            }],
            unmatched_transfers: vec![TransferId(11)],
            runs: 2,
            timestamp: 77,
        }
    }

    #[test]
    fn a_reconciliation_round_trips_and_a_cut_one_is_refused() {
        let mut bytes = Vec::new();
        encode_reconciliation(&sample(), &mut bytes);
        assert_eq!(decode_reconciliation(&bytes), Ok(sample()));
        for cut in [1, 5, 17, bytes.len() - 1] {
            assert!(decode_reconciliation(&bytes[..bytes.len() - cut]).is_err(), "cut by {cut}");
        }
        assert_eq!(sample().unmatched_lines(), [1]);
    }

    #[test]
    fn operations_round_trip() {
        let ops = [
            ReconcileOp::Record(Box::new(sample())),
            ReconcileOp::Match {
                account: AccountId(1),
                statement: "S".into(),
                lines: vec![1, 2],
                transfers: vec![TransferId(3)],
                reason: "why".into(),
                by: "who".into(),
            },
        ];
        for op in ops {
            let mut bytes = Vec::new();
            encode_reconcile_op(&op, &mut bytes);
            assert_eq!(decode_reconcile_op(&bytes), Ok(op));
            assert!(decode_reconcile_op(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}
