//! Bank-statement import and reconciliation matching for the Coffer
//! treasury ledger.
//!
//! The crate is pure: it performs no input/output, reads no clock and uses
//! no randomness. Callers hand it bytes or text and get plain values back.
//!
//! * [`parse_camt053`] reads an ISO 20022 camt.053 bank-to-customer
//!   statement (message versions .02 to .13).
//! * [`parse_csv`] reads the simple line-oriented CSV statement format
//!   described in [`csv_format`].
//! * [`check_continuity`] verifies that a statement picks up where the
//!   previous one ended.
//! * [`reconcile`] pairs statement lines with ledger transfers using the
//!   rules described in [`matching`].
//!
//! All money amounts are integers counted in minor units (for example
//! cents), with the number of decimal places (the *scale*) supplied by the
//! caller. Floating point is never used.
//!
//! # Example
//!
//! ```
//! use coffer_recon::{parse_csv, reconcile, Date, Direction, LedgerEntry, MatchKind, MatchRules};
//!
//! let text = "\
//! statement,STMT-1,account,KR1234567890,currency,KRW
//! opening,2027-01-01,50000000
//! closing,2027-01-31,42500000
//! line,2027-01-15,debit,7500000,REF-27000001,BANKREF-1,salary run
//! ";
//! let statement = parse_csv(text, 0)?;
//! let ledger = [LedgerEntry {
//!     transfer: 27_000_001,
//!     amount: 7_500_000,
//!     direction: Direction::Debit,
//!     date: Date::parse("2027-01-14").ok_or("bad date")?,
//!     reference: "REF-27000001".to_string(),
//! }];
//! let outcome = reconcile(&statement.lines, &ledger, &MatchRules { window_days: 3 });
//! assert_eq!(outcome.matched.len(), 1);
//! assert_eq!(outcome.matched[0].kind, MatchKind::OneToOne);
//! assert!(outcome.unmatched_lines.is_empty() && outcome.unmatched_transfers.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod amount;
pub mod camt;
pub mod csv_format;
mod date;
pub mod matching;
mod statement;

pub use camt::parse_camt053;
pub use csv_format::parse_csv;
pub use date::Date;
pub use matching::{reconcile, LedgerEntry, Match, MatchKind, MatchRules, Mismatch, Outcome};
pub use statement::{check_continuity, Balance, Direction, Statement, StatementError, StatementLine};
