//! The parsed form of a bank statement, shared by every input format, and
//! the error type the parsers report.

use std::fmt;

use crate::Date;

/// Which way money moved on the bank account, from the account holder's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Money came into the account (camt code `CRDT`).
    Credit,
    /// Money left the account (camt code `DBIT`).
    Debit,
}

impl Direction {
    /// The lowercase word used in the CSV format and in messages:
    /// `credit` or `debit`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Credit => "credit",
            Direction::Debit => "debit",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account balance on a given day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Balance {
    /// Signed amount in minor units: positive when the account is in credit,
    /// negative when it is overdrawn (a debit balance).
    pub amount: i128,
    /// The day the balance refers to.
    pub date: Date,
}

/// One booked movement on the bank account, as reported by the bank.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatementLine {
    /// 1-based position of the line's record in the statement file (for
    /// camt.053, the position of its `Ntry` among all entries, so entries
    /// that were skipped as not booked leave gaps).
    pub index: u32,
    /// Amount moved, in minor units; always greater than zero.
    pub amount: u128,
    /// Whether the money came in or went out.
    pub direction: Direction,
    /// The day the bank booked the movement.
    pub booking_date: Date,
    /// The day the movement took effect for interest, when the bank gave one.
    pub value_date: Option<Date>,
    /// The reference used for matching against the ledger. For camt.053 this
    /// is the end-to-end id when present (and not `NOTPROVIDED`), otherwise
    /// the entry reference, otherwise the bank's own reference. May be empty.
    pub reference: String,
    /// The bank's own reference for the movement (camt `AcctSvcrRef`); may
    /// be empty.
    pub bank_reference: String,
    /// Free text describing the movement (remittance information or the
    /// entry's additional information); may be empty.
    pub description: String,
}

/// A complete bank statement for one account and period.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Statement {
    /// The bank's identifier of the statement.
    pub id: String,
    /// The bank's running number of the statement, when given.
    pub sequence: Option<u64>,
    /// The account the statement is about (an IBAN or another identifier).
    pub account: String,
    /// ISO 4217 currency code of the account, such as `EUR`.
    pub currency: String,
    /// First day covered by the statement, when given.
    pub from: Option<Date>,
    /// Last day covered by the statement, when given.
    pub to: Option<Date>,
    /// Balance at the start of the period.
    pub opening: Balance,
    /// Balance at the end of the period.
    pub closing: Balance,
    /// The booked movements, in the order the statement lists them.
    pub lines: Vec<StatementLine>,
}

/// Why a statement could not be read or accepted.
///
/// Every variant says where the problem is: a path of camt elements, a CSV
/// line number and field name, or a byte offset in malformed XML.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// The bytes are not well-formed XML.
    #[error("malformed XML at byte {position}: {message}")]
    Xml {
        /// Byte offset in the input near which the problem was found.
        position: u64,
        /// What the XML reader objected to.
        message: String,
    },
    /// The XML is well-formed but is not an acceptable camt.053 statement.
    #[error("{path}: {reason}")]
    Camt {
        /// Element path, such as `Stmt/Ntry[3]/Amt` (entry and balance
        /// numbers are 1-based).
        path: String,
        /// What is wrong with that element.
        reason: String,
    },
    /// A record of a CSV statement is not acceptable.
    #[error("line {line}, field {field}: {reason}")]
    Csv {
        /// 1-based line number in the CSV text.
        line: u64,
        /// Name of the field at fault, such as `amount`.
        field: String,
        /// What is wrong with that field.
        reason: String,
    },
    /// A CSV statement lacks a record that must appear exactly once.
    #[error("CSV statement has no {record} record; exactly one is required")]
    CsvMissingRecord {
        /// The missing record type: `statement`, `opening` or `closing`.
        record: String,
    },
    /// A statement's opening balance does not continue the previous closing
    /// balance.
    #[error(
        "opening balance {opening} (minor units) of statement {statement} does not equal \
         the previous closing balance {previous_closing}"
    )]
    OpeningMismatch {
        /// Identifier of the statement being checked.
        statement: String,
        /// The previous statement's closing amount.
        previous_closing: i128,
        /// This statement's opening amount.
        opening: i128,
    },
    /// A statement's opening balance is dated before the previous closing
    /// balance.
    #[error(
        "opening balance of statement {statement} is dated {opening}, before the previous \
         closing balance dated {previous_closing}"
    )]
    OpeningBeforePreviousClosing {
        /// Identifier of the statement being checked.
        statement: String,
        /// Date of the previous closing balance.
        previous_closing: Date,
        /// Date of this statement's opening balance.
        opening: Date,
    },
}

impl StatementError {
    /// Shorthand for a [`StatementError::Camt`] error.
    pub(crate) fn camt(path: impl Into<String>, reason: impl Into<String>) -> Self {
        StatementError::Camt { path: path.into(), reason: reason.into() }
    }

    /// Shorthand for a [`StatementError::Csv`] error.
    pub(crate) fn csv(line: u64, field: impl Into<String>, reason: impl Into<String>) -> Self {
        StatementError::Csv { line, field: field.into(), reason: reason.into() }
    }
}

/// Checks that `next` continues from a statement that closed with
/// `previous_closing`: its opening amount must be equal, and its opening
/// date must not be earlier than the previous closing date.
///
/// # Errors
///
/// [`StatementError::OpeningMismatch`] (naming both amounts) or
/// [`StatementError::OpeningBeforePreviousClosing`] (naming both dates).
pub fn check_continuity(previous_closing: &Balance, next: &Statement) -> Result<(), StatementError> {
    if next.opening.amount != previous_closing.amount {
        return Err(StatementError::OpeningMismatch {
            statement: next.id.clone(),
            previous_closing: previous_closing.amount,
            opening: next.opening.amount,
        });
    }
    if next.opening.date < previous_closing.date {
        return Err(StatementError::OpeningBeforePreviousClosing {
            statement: next.id.clone(),
            previous_closing: previous_closing.date,
            opening: next.opening.date,
        });
    }
    Ok(())
}

/// Checks an ISO 4217-shaped currency code: exactly three ASCII capitals.
pub(crate) fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(opening: i128, date: Date) -> Statement {
        Statement {
            id: "S-2".to_string(),
            sequence: Some(2),
            account: "DE89370400440532013000".to_string(),
            currency: "EUR".to_string(),
            from: None,
            to: None,
            opening: Balance { amount: opening, date },
            closing: Balance { amount: opening, date },
            lines: Vec::new(),
        }
    }

    fn day(text: &str) -> Date {
        Date::parse(text).expect("test date")
    }

    #[test]
    fn continuity_accepts_matching_balance() {
        let previous = Balance { amount: -1_250, date: day("2027-01-31") };
        assert_eq!(check_continuity(&previous, &statement(-1_250, day("2027-02-01"))), Ok(()));
        // Some banks date the opening balance on the previous closing day.
        assert_eq!(check_continuity(&previous, &statement(-1_250, day("2027-01-31"))), Ok(()));
    }

    #[test]
    fn continuity_reports_both_amounts() {
        let previous = Balance { amount: 32_500_000, date: day("2027-01-31") };
        let err = check_continuity(&previous, &statement(32_400_000, day("2027-02-01")));
        let Err(err) = err else {
            panic!("expected an error");
        };
        let text = err.to_string();
        assert!(text.contains("32400000") && text.contains("32500000"), "{text}");
        assert_eq!(
            err,
            StatementError::OpeningMismatch {
                statement: "S-2".to_string(),
                previous_closing: 32_500_000,
                opening: 32_400_000,
            }
        );
    }

    #[test]
    fn continuity_rejects_earlier_opening_date() {
        let previous = Balance { amount: 10, date: day("2027-01-31") };
        let err = check_continuity(&previous, &statement(10, day("2027-01-30")));
        assert!(matches!(err, Err(StatementError::OpeningBeforePreviousClosing { .. })));
    }
}
