//! Pairing bank-statement lines with ledger transfers.
//!
//! [`reconcile`] applies the rules below in order. Each rule only looks at
//! lines and transfers that earlier rules left unconsumed. Lines are visited
//! in ascending [`StatementLine::index`] order and transfers in ascending
//! transfer id order, so the outcome depends only on the input values, never
//! on the order of the input slices (as long as line indexes and transfer
//! ids are unique).
//!
//! A line and a transfer are *compatible* when they move money the same way
//! ([`Direction`]) and the line's booking date and the transfer's date are
//! at most [`MatchRules::window_days`] days apart. They *share a reference*
//! when the line's reference is non-empty and equal (exactly, case
//! included) to the transfer's.
//!
//! 1. **One to one by reference.** A line whose compatible transfers sharing
//!    its reference include exactly one with the line's amount is matched
//!    to that transfer.
//! 2. **One line, several transfers.** A line with two or more compatible
//!    transfers sharing its reference, whose amounts add up exactly to the
//!    line's amount, is matched to all of them.
//! 3. **Several lines, one transfer.** A transfer with two or more
//!    compatible lines sharing its reference, whose amounts add up exactly
//!    to the transfer's amount, is matched to all of them.
//! 4. **Mismatch.** A line with exactly one compatible transfer sharing its
//!    reference, for a different amount, is reported as a [`Mismatch`]. Both
//!    are consumed: neither is listed as unmatched.
//! 5. **By amount.** A line (whatever its reference) with exactly one
//!    compatible transfer of the same amount is matched to it, provided that
//!    transfer in turn has exactly one compatible line of that amount.
//! 6. Whatever remains is reported as unmatched.
//!
//! Sums use checked arithmetic: a group whose total would overflow simply
//! does not match.

use std::collections::BTreeMap;

use crate::{Date, Direction, StatementLine};

/// One transfer of the ledger touching the reconciled cash account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LedgerEntry {
    /// The ledger's identifier of the transfer.
    pub transfer: u128,
    /// Amount moved on the cash account, in minor units.
    pub amount: u128,
    /// [`Direction::Credit`] when the transfer puts money into the cash
    /// account, [`Direction::Debit`] when it takes money out.
    pub direction: Direction,
    /// The day the transfer is dated in the ledger.
    pub date: Date,
    /// The reference expected to appear on the bank statement; may be empty.
    pub reference: String,
}

/// Settings that bound which lines and transfers may be paired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MatchRules {
    /// A line and a transfer can only be paired when the line's booking date
    /// and the transfer's date are at most this many days apart.
    pub window_days: u32,
}

/// The shape of a successful match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchKind {
    /// One line paired with one transfer.
    OneToOne,
    /// One line covering several transfers.
    OneToMany,
    /// Several lines covering one transfer.
    ManyToOne,
}

/// Statement lines and ledger transfers that account for each other.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    /// Which rule produced the match.
    pub kind: MatchKind,
    /// Indexes of the statement lines involved, ascending.
    pub lines: Vec<u32>,
    /// Ids of the transfers involved, ascending.
    pub transfers: Vec<u128>,
}

/// A line and a transfer that share a reference but disagree on the amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mismatch {
    /// Index of the statement line.
    pub line: u32,
    /// Id of the transfer.
    pub transfer: u128,
    /// The amount on the statement, in minor units.
    pub line_amount: u128,
    /// The amount in the ledger, in minor units.
    pub ledger_amount: u128,
}

/// The result of [`reconcile`]. Every list is sorted ascending (matches by
/// their line indexes, then transfer ids; mismatches by line index).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// Lines and transfers that were paired.
    pub matched: Vec<Match>,
    /// Pairs that share a reference but not an amount.
    pub mismatched: Vec<Mismatch>,
    /// Indexes of lines that nothing accounts for.
    pub unmatched_lines: Vec<u32>,
    /// Ids of transfers that nothing accounts for.
    pub unmatched_transfers: Vec<u128>,
}

/// Working state: both sides sorted, with a consumed flag per item.
struct Board<'a> {
    /// Lines in ascending index order.
    lines: Vec<&'a StatementLine>,
    /// Transfers in ascending id order.
    entries: Vec<&'a LedgerEntry>,
    /// Whether each line (same position as `lines`) is consumed.
    line_used: Vec<bool>,
    /// Whether each transfer (same position as `entries`) is consumed.
    entry_used: Vec<bool>,
    /// Maximum distance in days between paired dates.
    window: i64,
    /// Matches found so far.
    outcome: Outcome,
}

impl<'a> Board<'a> {
    /// Whether line `l` and transfer `e` may be paired at all.
    fn compatible(&self, line: &StatementLine, entry: &LedgerEntry) -> bool {
        line.direction == entry.direction && line.booking_date.days_until(entry.date).abs() <= self.window
    }

    /// The line at `position`, if it is still unconsumed.
    fn free_line(&self, position: usize) -> Option<&'a StatementLine> {
        match self.line_used.get(position) {
            Some(false) => self.lines.get(position).copied(),
            _ => None,
        }
    }

    /// The transfer at `position`, if it is still unconsumed.
    fn free_entry(&self, position: usize) -> Option<&'a LedgerEntry> {
        match self.entry_used.get(position) {
            Some(false) => self.entries.get(position).copied(),
            _ => None,
        }
    }

    /// Marks the given lines and transfers as consumed.
    fn consume(&mut self, lines: &[usize], entries: &[usize]) {
        for &position in lines {
            if let Some(flag) = self.line_used.get_mut(position) {
                *flag = true;
            }
        }
        for &position in entries {
            if let Some(flag) = self.entry_used.get_mut(position) {
                *flag = true;
            }
        }
    }

    /// Records a match over the given positions and consumes them.
    fn record(&mut self, kind: MatchKind, lines: &[usize], entries: &[usize]) {
        let mut line_ids: Vec<u32> = lines.iter().filter_map(|&p| self.lines.get(p).map(|l| l.index)).collect();
        let mut transfer_ids: Vec<u128> =
            entries.iter().filter_map(|&p| self.entries.get(p).map(|e| e.transfer)).collect();
        line_ids.sort_unstable();
        transfer_ids.sort_unstable();
        self.outcome.matched.push(Match { kind, lines: line_ids, transfers: transfer_ids });
        self.consume(lines, entries);
    }

    /// Unconsumed transfers compatible with `line` among `positions`.
    fn entries_for(&self, line: &StatementLine, positions: &[usize]) -> Vec<usize> {
        positions.iter().copied().filter(|&p| self.free_entry(p).is_some_and(|e| self.compatible(line, e))).collect()
    }

    /// Unconsumed lines compatible with `entry` among `positions`.
    fn lines_for(&self, entry: &LedgerEntry, positions: &[usize]) -> Vec<usize> {
        positions.iter().copied().filter(|&p| self.free_line(p).is_some_and(|l| self.compatible(l, entry))).collect()
    }

    /// Total of the transfers at `positions`, or `None` on overflow.
    fn entry_total(&self, positions: &[usize]) -> Option<u128> {
        positions.iter().try_fold(0u128, |sum, &p| sum.checked_add(self.entries.get(p)?.amount))
    }

    /// Total of the lines at `positions`, or `None` on overflow.
    fn line_total(&self, positions: &[usize]) -> Option<u128> {
        positions.iter().try_fold(0u128, |sum, &p| sum.checked_add(self.lines.get(p)?.amount))
    }
}

/// Groups item positions by a key, keeping positions ascending.
fn group_by<'k, T>(items: &[&'k T], key: impl Fn(&'k T) -> Option<&'k str>) -> BTreeMap<&'k str, Vec<usize>> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (position, item) in items.iter().enumerate() {
        if let Some(k) = key(item) {
            groups.entry(k).or_default().push(position);
        }
    }
    groups
}

/// Returns the non-empty reference, or `None` for an empty one.
fn non_empty(reference: &str) -> Option<&str> {
    (!reference.is_empty()).then_some(reference)
}

/// Pairs statement `lines` with ledger `entries` following the rules in the
/// [module documentation](self). The result does not depend on the order of
/// the input slices.
#[must_use]
pub fn reconcile(lines: &[StatementLine], entries: &[LedgerEntry], rules: &MatchRules) -> Outcome {
    let mut sorted_lines: Vec<&StatementLine> = lines.iter().collect();
    sorted_lines.sort_by_key(|l| l.index);
    let mut sorted_entries: Vec<&LedgerEntry> = entries.iter().collect();
    sorted_entries.sort_by_key(|e| e.transfer);
    let mut board = Board {
        line_used: vec![false; sorted_lines.len()],
        entry_used: vec![false; sorted_entries.len()],
        lines: sorted_lines,
        entries: sorted_entries,
        window: i64::from(rules.window_days),
        outcome: Outcome::default(),
    };
    let entries_by_reference = group_by(&board.entries, |e| non_empty(&e.reference));
    let lines_by_reference = group_by(&board.lines, |l| non_empty(&l.reference));
    let no_positions: Vec<usize> = Vec::new();
    let line_count = board.lines.len();
    let entry_count = board.entries.len();

    // Rule 1: one to one by reference and amount.
    for l in 0..line_count {
        let Some(line) = board.free_line(l) else {
            continue;
        };
        let Some(positions) = entries_by_reference.get(line.reference.as_str()) else {
            continue;
        };
        let same_amount: Vec<usize> = board
            .entries_for(line, positions)
            .into_iter()
            .filter(|&p| board.entries.get(p).is_some_and(|e| e.amount == line.amount))
            .collect();
        if let [only] = same_amount.as_slice() {
            board.record(MatchKind::OneToOne, &[l], &[*only]);
        }
    }

    // Rule 2: one line covering several transfers with its reference.
    for l in 0..line_count {
        let Some(line) = board.free_line(l) else {
            continue;
        };
        let positions = entries_by_reference.get(line.reference.as_str()).unwrap_or(&no_positions);
        let candidates = board.entries_for(line, positions);
        if candidates.len() >= 2 && board.entry_total(&candidates) == Some(line.amount) {
            board.record(MatchKind::OneToMany, &[l], &candidates);
        }
    }

    // Rule 3: several lines with a transfer's reference covering it.
    for e in 0..entry_count {
        let Some(entry) = board.free_entry(e) else {
            continue;
        };
        let positions = lines_by_reference.get(entry.reference.as_str()).unwrap_or(&no_positions);
        let candidates = board.lines_for(entry, positions);
        if candidates.len() >= 2 && board.line_total(&candidates) == Some(entry.amount) {
            board.record(MatchKind::ManyToOne, &candidates, &[e]);
        }
    }

    // Rule 4: a single transfer with the line's reference but another amount.
    for l in 0..line_count {
        let Some(line) = board.free_line(l) else {
            continue;
        };
        let positions = entries_by_reference.get(line.reference.as_str()).unwrap_or(&no_positions);
        let candidates = board.entries_for(line, positions);
        let [only] = candidates.as_slice() else {
            continue;
        };
        let Some(entry) = board.free_entry(*only) else {
            continue;
        };
        if entry.amount != line.amount {
            board.outcome.mismatched.push(Mismatch {
                line: line.index,
                transfer: entry.transfer,
                line_amount: line.amount,
                ledger_amount: entry.amount,
            });
            board.consume(&[l], &[*only]);
        }
    }

    // Rule 5: unique pairing by amount, direction and date alone.
    let mut entries_by_amount: BTreeMap<(Direction, u128), Vec<usize>> = BTreeMap::new();
    for (position, entry) in board.entries.iter().enumerate() {
        entries_by_amount.entry((entry.direction, entry.amount)).or_default().push(position);
    }
    let mut lines_by_amount: BTreeMap<(Direction, u128), Vec<usize>> = BTreeMap::new();
    for (position, line) in board.lines.iter().enumerate() {
        lines_by_amount.entry((line.direction, line.amount)).or_default().push(position);
    }
    for l in 0..line_count {
        let Some(line) = board.free_line(l) else {
            continue;
        };
        let key = (line.direction, line.amount);
        let positions = entries_by_amount.get(&key).unwrap_or(&no_positions);
        let candidates = board.entries_for(line, positions);
        let [only] = candidates.as_slice() else {
            continue;
        };
        let Some(entry) = board.free_entry(*only) else {
            continue;
        };
        let line_positions = lines_by_amount.get(&key).unwrap_or(&no_positions);
        if board.lines_for(entry, line_positions).len() == 1 {
            board.record(MatchKind::OneToOne, &[l], &[*only]);
        }
    }

    // Rule 6: the rest is unmatched.
    let mut outcome = std::mem::take(&mut board.outcome);
    outcome.unmatched_lines = (0..line_count).filter_map(|l| board.free_line(l).map(|line| line.index)).collect();
    outcome.unmatched_transfers =
        (0..entry_count).filter_map(|e| board.free_entry(e).map(|entry| entry.transfer)).collect();
    outcome.matched.sort_by(|a, b| (&a.lines, &a.transfers).cmp(&(&b.lines, &b.transfers)));
    outcome.mismatched.sort();
    outcome.unmatched_lines.sort_unstable();
    outcome.unmatched_transfers.sort_unstable();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Date {
        Date::parse(text).expect("test date")
    }

    fn line(index: u32, amount: u128, direction: Direction, date: &str, reference: &str) -> StatementLine {
        StatementLine {
            index,
            amount,
            direction,
            booking_date: day(date),
            value_date: None,
            reference: reference.to_string(),
            bank_reference: String::new(),
            description: String::new(),
        }
    }

    fn entry(transfer: u128, amount: u128, direction: Direction, date: &str, reference: &str) -> LedgerEntry {
        LedgerEntry { transfer, amount, direction, date: day(date), reference: reference.to_string() }
    }

    const RULES: MatchRules = MatchRules { window_days: 3 };
    use Direction::{Credit, Debit};

    fn one(kind: MatchKind, lines: &[u32], transfers: &[u128]) -> Match {
        Match { kind, lines: lines.to_vec(), transfers: transfers.to_vec() }
    }

    #[test]
    fn one_to_one_by_reference() {
        let lines = [line(1, 500, Debit, "2027-01-10", "PAY-1")];
        // Transfer 7 has the same amount but another reference; the
        // reference match wins.
        let entries = [entry(9, 500, Debit, "2027-01-09", "PAY-1"), entry(7, 500, Debit, "2027-01-10", "PAY-2")];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert_eq!(outcome.matched, vec![one(MatchKind::OneToOne, &[1], &[9])]);
        assert!(outcome.mismatched.is_empty());
        assert!(outcome.unmatched_lines.is_empty());
        assert_eq!(outcome.unmatched_transfers, vec![7]);
    }

    #[test]
    fn reference_match_needs_same_direction() {
        let lines = [line(1, 500, Credit, "2027-01-10", "PAY-1")];
        let entries = [entry(9, 500, Debit, "2027-01-10", "PAY-1")];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert!(outcome.matched.is_empty());
        assert_eq!(outcome.unmatched_lines, vec![1]);
        assert_eq!(outcome.unmatched_transfers, vec![9]);
    }

    #[test]
    fn one_line_many_transfers() {
        let lines = [line(4, 4_200, Debit, "2027-02-02", "BATCH-7")];
        let entries = [
            entry(30, 3_000, Debit, "2027-02-01", "BATCH-7"),
            entry(31, 1_200, Debit, "2027-02-02", "BATCH-7"),
            // Outside the window: not a candidate, so it does not spoil the sum.
            entry(32, 99, Debit, "2027-03-01", "BATCH-7"),
        ];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert_eq!(outcome.matched, vec![one(MatchKind::OneToMany, &[4], &[30, 31])]);
        assert_eq!(outcome.unmatched_transfers, vec![32]);
        assert!(outcome.unmatched_lines.is_empty());
    }

    #[test]
    fn many_lines_one_transfer() {
        let lines = [line(2, 700, Credit, "2027-02-01", "INV-5"), line(5, 300, Credit, "2027-02-03", "INV-5")];
        let entries = [entry(40, 1_000, Credit, "2027-02-02", "INV-5")];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert_eq!(outcome.matched, vec![one(MatchKind::ManyToOne, &[2, 5], &[40])]);
        assert!(outcome.unmatched_lines.is_empty());
        assert!(outcome.unmatched_transfers.is_empty());
    }

    #[test]
    fn mismatch_consumes_both_sides() {
        let lines = [line(3, 1_000, Debit, "2027-02-01", "SUP-9")];
        let entries = [entry(50, 1_010, Debit, "2027-02-01", "SUP-9")];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert!(outcome.matched.is_empty());
        assert_eq!(
            outcome.mismatched,
            vec![Mismatch { line: 3, transfer: 50, line_amount: 1_000, ledger_amount: 1_010 }]
        );
        assert!(outcome.unmatched_lines.is_empty());
        assert!(outcome.unmatched_transfers.is_empty());
    }

    #[test]
    fn unique_amount_match_ignores_reference() {
        let lines = [line(1, 15, Debit, "2027-02-03", ""), line(2, 2_500, Credit, "2027-02-03", "BANK-ONLY-REF")];
        let entries = [entry(60, 15, Debit, "2027-02-01", "FEE-FEB"), entry(61, 2_500, Credit, "2027-02-04", "")];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert_eq!(
            outcome.matched,
            vec![one(MatchKind::OneToOne, &[1], &[60]), one(MatchKind::OneToOne, &[2], &[61]),]
        );
    }

    #[test]
    fn ambiguous_amounts_stay_unmatched() {
        // Two lines could take the same transfer, and one line could take
        // two transfers: neither pairing is unique.
        let lines = [
            line(1, 80, Debit, "2027-02-03", ""),
            line(2, 80, Debit, "2027-02-03", ""),
            line(3, 90, Credit, "2027-02-03", ""),
        ];
        let entries = [
            entry(70, 80, Debit, "2027-02-03", ""),
            entry(71, 90, Credit, "2027-02-02", ""),
            entry(72, 90, Credit, "2027-02-04", ""),
        ];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert!(outcome.matched.is_empty());
        assert_eq!(outcome.unmatched_lines, vec![1, 2, 3]);
        assert_eq!(outcome.unmatched_transfers, vec![70, 71, 72]);
    }

    #[test]
    fn window_excludes_distant_dates() {
        let lines = [
            line(1, 500, Debit, "2027-01-10", "PAY-1"),
            line(2, 600, Debit, "2027-01-10", ""),
            line(3, 700, Debit, "2027-01-10", "PAY-3"),
        ];
        let entries = [
            entry(1, 500, Debit, "2027-01-14", "PAY-1"),
            entry(2, 600, Debit, "2027-01-06", ""),
            // Within the window (exactly three days): reference mismatch.
            entry(3, 701, Debit, "2027-01-13", "PAY-3"),
        ];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert!(outcome.matched.is_empty());
        assert_eq!(outcome.mismatched.len(), 1);
        assert_eq!(outcome.unmatched_lines, vec![1, 2]);
        assert_eq!(outcome.unmatched_transfers, vec![1, 2]);

        // A wider window lets the first two pair up.
        let wide = MatchRules { window_days: 4 };
        let outcome = reconcile(&lines, &entries, &wide);
        assert_eq!(outcome.matched, vec![one(MatchKind::OneToOne, &[1], &[1]), one(MatchKind::OneToOne, &[2], &[2]),]);
    }

    #[test]
    fn rules_apply_in_order() {
        // Line 1 has two same-reference transfers: 100 and 50. Rule 1 pairs
        // it with the exact amount; transfer 2 is left for later rules and
        // then finds line 2 by amount alone.
        let lines = [line(1, 100, Debit, "2027-03-01", "R"), line(2, 50, Debit, "2027-03-01", "")];
        let entries = [entry(1, 100, Debit, "2027-03-01", "R"), entry(2, 50, Debit, "2027-03-01", "R")];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert_eq!(outcome.matched, vec![one(MatchKind::OneToOne, &[1], &[1]), one(MatchKind::OneToOne, &[2], &[2]),]);
    }

    #[test]
    fn overflowing_sums_do_not_match_or_panic() {
        let lines = [line(1, u128::MAX, Debit, "2027-03-01", "BIG")];
        let entries = [
            entry(1, u128::MAX, Debit, "2027-03-01", "BIG"),
            entry(2, u128::MAX, Debit, "2027-03-01", "BIG"),
            entry(3, 1, Debit, "2027-03-01", "BIG"),
        ];
        let outcome = reconcile(&lines, &entries, &RULES);
        assert!(outcome.matched.is_empty());
        assert!(outcome.mismatched.is_empty());
        assert_eq!(outcome.unmatched_lines, vec![1]);
        assert_eq!(outcome.unmatched_transfers, vec![1, 2, 3]);
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(reconcile(&[], &[], &RULES), Outcome::default());
    }

    #[test]
    fn outcome_is_deterministic_and_order_independent() {
        let lines = vec![
            line(1, 125_000, Credit, "2027-02-01", "INV-2027-0042"),
            line(2, 83_045, Debit, "2027-02-01", "NR-0002"),
            line(3, 420_000, Debit, "2027-02-02", "PAY-7781"),
            line(4, 9_999, Credit, "2027-02-03", "BK-0004"),
            line(5, 1_500, Debit, "2027-02-03", ""),
            line(6, 600, Credit, "2027-02-03", "SPLIT"),
            line(7, 400, Credit, "2027-02-03", "SPLIT"),
            line(8, 77, Debit, "2027-02-03", ""),
        ];
        let entries = vec![
            entry(101, 125_000, Credit, "2027-01-30", "INV-2027-0042"),
            entry(102, 83_000, Debit, "2027-02-01", "NR-0002"),
            entry(103, 300_000, Debit, "2027-02-02", "PAY-7781"),
            entry(104, 120_000, Debit, "2027-02-02", "PAY-7781"),
            entry(105, 1_500, Debit, "2027-02-01", "FEES"),
            entry(106, 1_000, Credit, "2027-02-03", "SPLIT"),
            entry(107, 5, Credit, "2027-02-03", "ORPHAN"),
        ];
        let expected = Outcome {
            matched: vec![
                one(MatchKind::OneToOne, &[1], &[101]),
                one(MatchKind::OneToMany, &[3], &[103, 104]),
                one(MatchKind::OneToOne, &[5], &[105]),
                one(MatchKind::ManyToOne, &[6, 7], &[106]),
            ],
            mismatched: vec![Mismatch { line: 2, transfer: 102, line_amount: 83_045, ledger_amount: 83_000 }],
            unmatched_lines: vec![4, 8],
            unmatched_transfers: vec![107],
        };
        let first = reconcile(&lines, &entries, &RULES);
        assert_eq!(first, expected);
        assert_eq!(reconcile(&lines, &entries, &RULES), first);

        let mut reversed_lines = lines.clone();
        reversed_lines.reverse();
        let mut rotated_entries = entries.clone();
        rotated_entries.rotate_left(3);
        assert_eq!(reconcile(&reversed_lines, &rotated_entries, &RULES), first);
    }
}
