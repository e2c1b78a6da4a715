//! A plain CSV statement format, for banks or tools that cannot produce
//! camt.053.
//!
//! # Format
//!
//! The text is UTF-8 and holds one record per line (a record never spans
//! lines). Fields are separated by commas; a field containing a comma or a
//! double quote is wrapped in double quotes, with inner quotes doubled
//! (`"say ""hi"""`). White space around a field is ignored. Blank lines, and
//! lines whose first non-blank character is `#`, are ignored.
//!
//! The first field of every record is a lowercase word giving its type:
//!
//! ```text
//! # comments start with '#'
//! statement,STMT-2027-01-31,account,KR1234567890,currency,KRW,from,2027-01-01,to,2027-01-31
//! opening,2027-01-01,50000000
//! closing,2027-01-31,32500000
//! line,2027-01-15,debit,7500000,REF-27000001,BANKREF-1,"salary run"
//! line,2027-01-20,credit,1000000,INV-1001,,customer payment,2027-01-21
//! ```
//!
//! * `statement,<id>,<key>,<value>,...` names the statement and is followed
//!   by key/value pairs in any order: `account` and `currency` (a
//!   three-letter code) are required; `from` and `to` (first and last day
//!   covered) and `sequence` (the bank's running number, a whole number) are
//!   optional. Each key may appear once.
//! * `opening,<date>,<amount>` and `closing,<date>,<amount>` give the
//!   balances at the start and end of the period. The amount is signed: a
//!   leading `-` marks a debit (overdrawn) balance.
//! * `line,<booking date>,<direction>,<amount>,<reference>,<bank reference>,<description>,<value date>`
//!   is one booked movement. The direction is `credit` (money in) or `debit`
//!   (money out), and the amount is unsigned and greater than zero. The last
//!   four fields may be left empty or omitted from the end of the record.
//!   The reference is what the ledger is matched against.
//!
//! Exactly one `statement`, one `opening` and one `closing` record are
//! required; `line` records may number zero or more and keep their order.
//! Records may otherwise come in any order, and a leading UTF-8 byte-order
//! mark is ignored.
//! Each line's [`StatementLine::index`] is its position among the `line`
//! records, starting at 1.
//!
//! Dates are written `YYYY-MM-DD`. Amounts are decimal numbers such as
//! `1234.50` and are converted to minor units with the scale given by the
//! caller; fewer decimals are padded with zeros, more are refused unless the
//! surplus digits are zeros.
//!
//! Every error names the line number and the field, for example
//! `line 4, field amount: 12.5 has more decimals than the ledger's scale 0`.

use csv::{ReaderBuilder, StringRecord, Trim};

use crate::amount::{parse_signed, parse_unsigned};
use crate::statement::is_currency_code;
use crate::{Balance, Date, Direction, Statement, StatementError, StatementLine};

/// Reads a statement in the CSV format described in this module's
/// documentation, converting amounts to minor units with `scale` decimal
/// places.
///
/// # Errors
///
/// [`StatementError::Csv`] naming the line and field of the first record
/// that cannot be accepted, or [`StatementError::CsvMissingRecord`] when the
/// `statement`, `opening` or `closing` record is absent.
pub fn parse_csv(text: &str, scale: u8) -> Result<Statement, StatementError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut header: Option<(u64, Header)> = None;
    let mut opening: Option<(u64, Balance)> = None;
    let mut closing: Option<(u64, Balance)> = None;
    let mut lines: Vec<StatementLine> = Vec::new();

    for (number, raw) in text.lines().enumerate() {
        let line = u64::try_from(number).map_or(u64::MAX, |n| n.saturating_add(1));
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let record = split_record(content, line)?;
        let fields = Fields { record: &record, line };
        match fields.get(0) {
            "statement" => {
                once(&header, "statement", line)?;
                header = Some((line, read_header(&fields)?));
            }
            "opening" => {
                once(&opening, "opening", line)?;
                opening = Some((line, read_balance(&fields, scale)?));
            }
            "closing" => {
                once(&closing, "closing", line)?;
                closing = Some((line, read_balance(&fields, scale)?));
            }
            "line" => {
                let index = u32::try_from(lines.len() + 1)
                    .map_err(|_| StatementError::csv(line, "record type", "too many lines in one statement"))?;
                lines.push(read_line(&fields, index, scale)?);
            }
            other => {
                return Err(StatementError::csv(
                    line,
                    "record type",
                    format!("unknown record type '{other}'; expected statement, opening, closing or line"),
                ))
            }
        }
    }

    let missing = |record: &str| StatementError::CsvMissingRecord { record: record.to_string() };
    let (_, header) = header.ok_or_else(|| missing("statement"))?;
    let (_, opening) = opening.ok_or_else(|| missing("opening"))?;
    let (_, closing) = closing.ok_or_else(|| missing("closing"))?;
    Ok(Statement {
        id: header.id,
        sequence: header.sequence,
        account: header.account,
        currency: header.currency,
        from: header.from,
        to: header.to,
        opening,
        closing,
        lines,
    })
}

/// Splits one line into its comma-separated fields.
fn split_record(content: &str, line: u64) -> Result<StringRecord, StatementError> {
    // A record never spans lines, so every opened quote must close on it.
    if content.bytes().filter(|&b| b == b'"').count() % 2 != 0 {
        return Err(StatementError::csv(
            line,
            "record",
            "unbalanced double quote; quote a whole field and double any quote inside it",
        ));
    }
    let mut reader =
        ReaderBuilder::new().has_headers(false).flexible(true).trim(Trim::All).from_reader(content.as_bytes());
    let mut record = StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record),
        Ok(false) => Err(StatementError::csv(line, "record", "no fields found")),
        Err(err) => Err(StatementError::csv(line, "record", err.to_string())),
    }
}

/// The content of the `statement` record.
struct Header {
    /// Statement identifier.
    id: String,
    /// Account identifier.
    account: String,
    /// Currency code.
    currency: String,
    /// Optional first day.
    from: Option<Date>,
    /// Optional last day.
    to: Option<Date>,
    /// Optional running number.
    sequence: Option<u64>,
}

/// A record together with its line number, with field helpers.
struct Fields<'a> {
    /// The record's fields.
    record: &'a StringRecord,
    /// 1-based line on which the record starts.
    line: u64,
}

impl Fields<'_> {
    /// Field number `position` (0-based), or an empty string when absent.
    fn get(&self, position: usize) -> &str {
        self.record.get(position).unwrap_or("")
    }

    /// Builds an error about the field called `field`.
    fn error(&self, field: &str, reason: impl Into<String>) -> StatementError {
        StatementError::csv(self.line, field, reason)
    }

    /// Refuses fields beyond the first `count`.
    fn at_most(&self, count: usize) -> Result<(), StatementError> {
        if self.record.len() > count {
            return Err(self.error(
                "record",
                format!(
                    "{} fields given but {} records have at most {count}; quote text that contains commas",
                    self.record.len(),
                    self.get(0)
                ),
            ));
        }
        Ok(())
    }

    /// Field `position`, which must not be empty.
    fn required(&self, position: usize, field: &str) -> Result<&str, StatementError> {
        let value = self.get(position);
        if value.is_empty() {
            return Err(self.error(field, "value missing"));
        }
        Ok(value)
    }

    /// Field `position` parsed as a date; it must be present.
    fn date(&self, position: usize, field: &str) -> Result<Date, StatementError> {
        let value = self.required(position, field)?;
        parse_date(value).map_err(|reason| self.error(field, reason))
    }
}

/// Parses `YYYY-MM-DD`, with a message naming the text on failure.
fn parse_date(value: &str) -> Result<Date, String> {
    Date::parse(value).ok_or_else(|| format!("'{value}' is not a valid date (expected YYYY-MM-DD)"))
}

/// Refuses a second record of a type that must appear once.
fn once<T>(seen: &Option<(u64, T)>, record: &str, line: u64) -> Result<(), StatementError> {
    match seen {
        Some((first, _)) => Err(StatementError::csv(
            line,
            "record type",
            format!("a second {record} record (the first is on line {first}); import one statement per file"),
        )),
        None => Ok(()),
    }
}

/// Reads `statement,<id>,<key>,<value>,...`.
fn read_header(fields: &Fields) -> Result<Header, StatementError> {
    let id = fields.required(1, "id")?.to_string();
    let mut account: Option<String> = None;
    let mut currency: Option<String> = None;
    let mut from: Option<Date> = None;
    let mut to: Option<Date> = None;
    let mut sequence: Option<u64> = None;
    let mut seen: Vec<&str> = Vec::new();
    let mut position = 2;
    while position < fields.record.len() {
        let key = fields.get(position);
        let value = fields.get(position + 1);
        if !matches!(key, "account" | "currency" | "from" | "to" | "sequence") {
            return Err(
                fields.error("key", format!("unknown key '{key}'; expected account, currency, from, to or sequence"))
            );
        }
        if seen.contains(&key) {
            return Err(fields.error(key, "given more than once"));
        }
        seen.push(key);
        if value.is_empty() {
            return Err(fields.error(key, "value missing"));
        }
        match key {
            "account" => account = Some(value.to_string()),
            "currency" => {
                if !is_currency_code(value) {
                    return Err(fields.error(key, format!("'{value}' is not a three-letter currency code such as EUR")));
                }
                currency = Some(value.to_string());
            }
            "from" => from = Some(parse_date(value).map_err(|r| fields.error(key, r))?),
            "to" => to = Some(parse_date(value).map_err(|r| fields.error(key, r))?),
            _ => {
                sequence = Some(
                    value.parse::<u64>().map_err(|_| fields.error(key, format!("'{value}' is not a whole number")))?,
                )
            }
        }
        position += 2;
    }
    Ok(Header {
        id,
        account: account.ok_or_else(|| fields.error("account", "key missing"))?,
        currency: currency.ok_or_else(|| fields.error("currency", "key missing"))?,
        from,
        to,
        sequence,
    })
}

/// Reads `opening|closing,<date>,<signed amount>`.
fn read_balance(fields: &Fields, scale: u8) -> Result<Balance, StatementError> {
    fields.at_most(3)?;
    let date = fields.date(1, "date")?;
    let text = fields.required(2, "amount")?;
    let amount = parse_signed(text, scale).map_err(|reason| fields.error("amount", reason))?;
    Ok(Balance { amount, date })
}

/// Reads `line,<date>,<direction>,<amount>,<ref>,<bank ref>,<text>,<value date>`.
fn read_line(fields: &Fields, index: u32, scale: u8) -> Result<StatementLine, StatementError> {
    fields.at_most(8)?;
    let booking_date = fields.date(1, "booking date")?;
    let direction = match fields.required(2, "direction")? {
        "credit" => Direction::Credit,
        "debit" => Direction::Debit,
        other => return Err(fields.error("direction", format!("'{other}' is neither credit nor debit"))),
    };
    let text = fields.required(3, "amount")?;
    let amount = parse_unsigned(text, scale).map_err(|reason| fields.error("amount", reason))?;
    if amount == 0 {
        return Err(fields.error("amount", "a line amount must be greater than zero"));
    }
    let value_date = match fields.get(7) {
        "" => None,
        _ => Some(fields.date(7, "value date")?),
    };
    Ok(StatementLine {
        index,
        amount,
        direction,
        booking_date,
        value_date,
        reference: fields.get(4).to_string(),
        bank_reference: fields.get(5).to_string(),
        description: fields.get(6).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# Statement exported from the bank portal
statement,STMT-2027-01-31,account,KR1234567890,currency,KRW,from,2027-01-01,to,2027-01-31,sequence,12
opening,2027-01-01,50000000

closing,2027-01-31,32500000
line,2027-01-15,debit,7500000,REF-27000001,BANKREF-1,\"salary run, January\"
line,2027-01-20,credit,1000000,INV-1001,,customer payment,2027-01-21
  # comments may be indented
";

    fn day(text: &str) -> Date {
        Date::parse(text).expect("test date")
    }

    fn csv_error(text: &str, scale: u8) -> (u64, String, String) {
        match parse_csv(text, scale) {
            Err(StatementError::Csv { line, field, reason }) => (line, field, reason),
            other => panic!("expected a CSV error, got {other:?}"),
        }
    }

    #[test]
    fn reads_documented_example() {
        let statement = parse_csv(GOOD, 0).expect("valid statement");
        assert_eq!(statement.id, "STMT-2027-01-31");
        assert_eq!(statement.account, "KR1234567890");
        assert_eq!(statement.currency, "KRW");
        assert_eq!(statement.sequence, Some(12));
        assert_eq!(statement.from, Some(day("2027-01-01")));
        assert_eq!(statement.to, Some(day("2027-01-31")));
        assert_eq!(statement.opening.amount, 50_000_000);
        assert_eq!(statement.closing.amount, 32_500_000);
        assert_eq!(statement.closing.date, day("2027-01-31"));
        assert_eq!(
            statement.lines,
            vec![
                StatementLine {
                    index: 1,
                    amount: 7_500_000,
                    direction: Direction::Debit,
                    booking_date: day("2027-01-15"),
                    value_date: None,
                    reference: "REF-27000001".to_string(),
                    bank_reference: "BANKREF-1".to_string(),
                    description: "salary run, January".to_string(),
                },
                StatementLine {
                    index: 2,
                    amount: 1_000_000,
                    direction: Direction::Credit,
                    booking_date: day("2027-01-20"),
                    value_date: Some(day("2027-01-21")),
                    reference: "INV-1001".to_string(),
                    bank_reference: String::new(),
                    description: "customer payment".to_string(),
                },
            ]
        );
    }

    #[test]
    fn unknown_record_type_is_named() {
        let text = format!("{GOOD}\r\ntotal,3\r\n");
        let (line, field, reason) = csv_error(&text, 0);
        assert_eq!((line, field.as_str()), (10, "record type"));
        assert!(reason.contains("unknown record type 'total'"), "{reason}");
    }

    #[test]
    fn optional_parts_and_signed_balances() {
        let text = "\u{feff}statement,S1,currency,EUR,account,DE02120300000000202051\n\
                    closing,2027-02-28,-12.5\n\
                    opening,2027-02-01,0.00\n\
                    line,2027-02-03,debit,12.50\n";
        let statement = parse_csv(text, 2).expect("valid statement");
        assert_eq!(statement.opening.amount, 0);
        assert_eq!(statement.closing.amount, -1_250);
        assert_eq!((statement.from, statement.to, statement.sequence), (None, None, None));
        assert_eq!(statement.lines.len(), 1);
        assert_eq!(statement.lines[0].amount, 1_250);
        assert_eq!(statement.lines[0].reference, "");
    }

    #[test]
    fn amount_with_too_many_decimals_names_line_and_field() {
        let text = GOOD.replace("debit,7500000,", "debit,12.5,");
        let err = parse_csv(&text, 0).expect_err("too many decimals");
        assert_eq!(err.to_string(), "line 6, field amount: 12.5 has more decimals than the ledger's scale 0");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(&str, &str, u64, &str, &str); 10] = [
            ("debit,7500000,", "debet,7500000,", 6, "direction", "debet"),
            ("debit,7500000,", "debit,0,", 6, "amount", "greater than zero"),
            ("debit,7500000,", "debit,-5,", 6, "amount", "negative"),
            ("debit,7500000,", "debit,,", 6, "amount", "missing"),
            ("line,2027-01-15,", "line,2027-01-32,", 6, "booking date", "2027-01-32"),
            ("opening,2027-01-01,50000000", "opening,2027-01-01,5e7", 3, "amount", "5e7"),
            ("opening,2027-01-01,50000000", "opening,2027-01-01,1,2", 3, "record", "at most 3"),
            ("currency,KRW", "currency,krw", 2, "currency", "krw"),
            ("currency,KRW", "curency,KRW", 2, "key", "curency"),
            (",sequence,12", ",sequence,twelve", 2, "sequence", "twelve"),
        ];
        for (from, to, line, field, needle) in cases {
            assert_eq!(GOOD.matches(from).count(), 1, "{from}");
            let text = GOOD.replacen(from, to, 1);
            let (got_line, got_field, reason) = csv_error(&text, 0);
            assert_eq!((got_line, got_field.as_str()), (line, field), "{to}: {reason}");
            assert!(reason.contains(needle), "{to}: {reason}");
        }
    }

    #[test]
    fn header_keys_are_checked() {
        let text = GOOD.replacen(",account,KR1234567890", "", 1);
        let (line, field, _) = csv_error(&text, 0);
        assert_eq!((line, field.as_str()), (2, "account"));

        let text = GOOD.replacen(",to,2027-01-31", ",from,2027-01-31", 1);
        let (line, field, reason) = csv_error(&text, 0);
        assert_eq!((line, field.as_str()), (2, "from"));
        assert!(reason.contains("more than once"), "{reason}");

        let text = GOOD.replacen(",sequence,12", ",sequence", 1);
        let (_, field, reason) = csv_error(&text, 0);
        assert_eq!(field, "sequence");
        assert!(reason.contains("missing"), "{reason}");
    }

    #[test]
    fn records_must_appear_once() {
        let text = format!("{GOOD}closing,2027-01-31,1\n");
        let (line, field, reason) = csv_error(&text, 0);
        assert_eq!((line, field.as_str()), (9, "record type"));
        assert!(reason.contains("line 5"), "{reason}");

        let text = GOOD.replacen("closing,2027-01-31,32500000\n", "", 1);
        assert_eq!(parse_csv(&text, 0), Err(StatementError::CsvMissingRecord { record: "closing".to_string() }));
        assert_eq!(parse_csv("", 0), Err(StatementError::CsvMissingRecord { record: "statement".to_string() }));
    }

    #[test]
    fn windows_line_endings_and_quotes() {
        let text = "statement,S,account,A,currency,EUR\r\n\
                    opening,2027-01-01,0\r\n\
                    closing,2027-01-31,0.01\r\n\
                    line,2027-01-02,credit,0.01,R1,,\"say \"\"hi\"\", then go\"\r\n";
        let statement = parse_csv(text, 2).expect("valid statement");
        assert_eq!(statement.lines[0].description, "say \"hi\", then go");

        let text = "statement,S,account,A,currency,EUR\n\
                    line,2027-01-02,credit,1,R1,,\"first\n\
                    second\"\n";
        let (line, field, reason) = csv_error(text, 2);
        assert_eq!((line, field.as_str()), (2, "record"));
        assert!(reason.contains("quote"), "{reason}");
    }
}
