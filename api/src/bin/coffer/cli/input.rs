//! Transfers read from a file: CSV with a header row, or JSON lines.
//!
//! Field names are those of the proto `Transfer` message (`id`,
//! `debit_account_id`, `credit_account_id`, `amount`, `pending_id`,
//! `ledger`, `code`, `kind`, `flags`, `timeout`, `user_data_128`,
//! `user_data_64`, `user_data_32`, `timestamp`); `id` and `kind` are
//! required, every other field defaults to empty / 0. Values use the
//! command line's forms: ids and amounts as decimal text (`"123.45"`, at the
//! ledger's scale; the server checks the scale), kinds and flags by name,
//! flags `|`-separated in CSV (a list or a `|`-separated string in JSON).
//!
//! The whole file is checked before anything is sent: the first malformed
//! line is reported with its line number, column and field.

use std::fmt;

use coffer_api::convert::parse_u128;
use coffer_api::proto;
use serde_json::{Map, Value};

use super::parse::{check_amount, known_names, parse_name, Named};

/// The most transfers one import file may hold (≈ 300 bytes of memory each).
pub const IMPORT_TRANSFERS_MAX: usize = 1_000_000;
/// The longest line read (a transfer's CSV line is < 400 bytes).
const LINE_BYTES_MAX: usize = 64 << 10;

/// A malformed line of an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The 1-based line number.
    pub line: usize,
    /// The 1-based column (in characters) where the problem starts.
    pub column: usize,
    /// The field, when the problem is one field's value.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: ", self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// A transfer and the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LineTransfer {
    /// The 1-based line number.
    pub line: usize,
    /// The transfer, as it will be sent.
    pub transfer: proto::Transfer,
}

/// The fields of the proto `Transfer` message, by name.
const FIELDS: [&str; 14] = [
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "pending_id",
    "ledger",
    "code",
    "kind",
    "flags",
    "timeout",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "timestamp",
];
/// Fields every line must have.
const FIELDS_REQUIRED: [&str; 2] = ["id", "kind"];

fn unknown_field(name: &str) -> String {
    format!("unknown field {name:?} (the fields of a Transfer: {})", FIELDS.join(", "))
}

/// Sets `field` of `transfer` from its text (empty: the default). The
/// field is one of [`FIELDS`].
fn set_field(transfer: &mut proto::Transfer, field: &str, text: &str) -> Result<(), String> {
    fn number<T: std::str::FromStr + Default>(text: &str) -> Result<T, String> {
        if text.is_empty() {
            return Ok(T::default());
        }
        text.parse().map_err(|_| format!("{text:?} is not a number in range"))
    }
    let id = |text: &str| parse_u128(field, text).map(|_| text.to_owned()).map_err(|error| error.reason);
    match field {
        "id" => transfer.id = id(text)?,
        "debit_account_id" => transfer.debit_account_id = id(text)?,
        "credit_account_id" => transfer.credit_account_id = id(text)?,
        "pending_id" => transfer.pending_id = id(text)?,
        "user_data_128" => transfer.user_data_128 = id(text)?,
        "amount" => {
            if !text.is_empty() {
                check_amount(text, true)?;
            }
            text.clone_into(&mut transfer.amount);
        }
        "ledger" => transfer.ledger = number(text)?,
        "code" => {
            let code: u32 = number(text)?;
            if code > u32::from(u16::MAX) {
                return Err(format!("{code} is more than {}", u16::MAX));
            }
            transfer.code = code;
        }
        "kind" => {
            if text.is_empty() {
                let known = known_names::<proto::TransferKind>().join(", ");
                return Err(format!("must be set ({known})"));
            }
            transfer.kind = parse_name::<proto::TransferKind>(text)?.number();
        }
        "flags" => transfer.flags = parse_flags::<proto::TransferFlag>(text.split('|'))?,
        "timeout" => transfer.timeout = number(text)?,
        "user_data_64" => transfer.user_data_64 = number(text)?,
        "user_data_32" => transfer.user_data_32 = number(text)?,
        "timestamp" => transfer.timestamp = number(text)?,
        _ => return Err(unknown_field(field)),
    }
    Ok(())
}

/// Parses flag names (empty ones are skipped) into wire numbers.
pub fn parse_flags<'a, T: Named>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<i32>, String> {
    names.into_iter().filter(|name| !name.trim().is_empty()).map(|name| parse_name::<T>(name).map(T::number)).collect()
}

/// Lines of `text` with their 1-based numbers, a UTF-8 byte-order mark
/// and `\r` line ends removed, blank lines left out.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty())
}

fn check_line(line: usize, text: &str) -> Result<(), InputError> {
    if text.len() > LINE_BYTES_MAX {
        return Err(InputError {
            line,
            column: 1,
            field: None,
            reason: format!("the line is longer than {LINE_BYTES_MAX} bytes"),
        });
    }
    Ok(())
}

fn check_count(line: usize, count: usize) -> Result<(), InputError> {
    if count >= IMPORT_TRANSFERS_MAX {
        let reason = format!("more than {IMPORT_TRANSFERS_MAX} transfers in one file: split it");
        return Err(InputError { line, column: 1, field: None, reason });
    }
    Ok(())
}

/// One CSV field: its text and the 1-based column where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvField {
    pub column: usize,
    pub text: String,
}

/// Splits one CSV line into fields: separated by commas; a field in double
/// quotes may hold commas and doubled quotes (`""`). A field may not span
/// lines. Errors are `(column, reason)`.
pub fn split_csv_line(line: &str) -> Result<Vec<CsvField>, (usize, String)> {
    let mut fields = Vec::new();
    let mut chars = line.chars().enumerate().map(|(i, c)| (i + 1, c)).peekable();
    loop {
        let column = chars.peek().map_or(line.chars().count() + 1, |(column, _)| *column);
        let mut text = String::new();
        if chars.next_if(|(_, c)| *c == '"').is_some() {
            loop {
                match chars.next() {
                    None => return Err((column, "a quoted field is not closed (fields may not span lines)".into())),
                    Some((_, '"')) if chars.next_if(|(_, c)| *c == '"').is_some() => text.push('"'),
                    Some((_, '"')) => break,
                    Some((_, c)) => text.push(c),
                }
            }
            match chars.peek() {
                None | Some((_, ',')) => {}
                Some((at, _)) => {
                    return Err((*at, "a closing quote must end its field (a comma or the line's end)".into()))
                }
            }
        } else {
            while let Some((at, c)) = chars.next_if(|(_, c)| *c != ',') {
                if c == '"' {
                    return Err((
                        at,
                        "a quote inside an unquoted field (quote the whole field, doubling its quotes)".into(),
                    ));
                }
                text.push(c);
            }
        }
        fields.push(CsvField { column, text });
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// Reads transfers from CSV text whose first line names the fields.
pub fn read_csv(text: &str) -> Result<Vec<LineTransfer>, InputError> {
    let mut lines = lines(text);
    let Some((header_line, header_text)) = lines.next() else {
        return Err(InputError { line: 1, column: 1, field: None, reason: "the file is empty (no header row)".into() });
    };
    check_line(header_line, header_text)?;
    let error = |line: usize, column: usize, field: Option<&str>, reason: String| InputError {
        line,
        column,
        field: field.map(str::to_owned),
        reason,
    };
    let header = split_csv_line(header_text).map_err(|(column, reason)| error(header_line, column, None, reason))?;
    let mut names: Vec<&'static str> = Vec::with_capacity(header.len());
    for field in &header {
        let name = field.text.trim();
        let Some(known) = FIELDS.iter().copied().find(|known| *known == name) else {
            return Err(error(header_line, field.column, None, unknown_field(name)));
        };
        if names.contains(&known) {
            return Err(error(header_line, field.column, None, format!("the column {name:?} is named twice")));
        }
        names.push(known);
    }
    if let Some(missing) = FIELDS_REQUIRED.iter().copied().find(|required| !names.contains(required)) {
        return Err(error(header_line, 1, None, format!("the header has no {missing:?} column")));
    }
    let mut transfers = Vec::new();
    for (line, line_text) in lines {
        check_line(line, line_text)?;
        check_count(line, transfers.len())?;
        let fields = split_csv_line(line_text).map_err(|(column, reason)| error(line, column, None, reason))?;
        if fields.len() != names.len() {
            let column = fields.get(names.len()).map_or(line_text.chars().count() + 1, |field| field.column);
            let reason = format!("{} fields, but the header names {}", fields.len(), names.len());
            return Err(error(line, column, None, reason));
        }
        let mut transfer = proto::Transfer::default();
        for (&name, field) in names.iter().zip(&fields) {
            set_field(&mut transfer, name, &field.text)
                .map_err(|reason| error(line, field.column, Some(name), reason))?;
        }
        transfers.push(LineTransfer { line, transfer });
    }
    Ok(transfers)
}

/// Reads transfers from JSON lines: one object per line.
pub fn read_jsonl(text: &str) -> Result<Vec<LineTransfer>, InputError> {
    let mut transfers = Vec::new();
    for (line, line_text) in lines(text) {
        check_line(line, line_text)?;
        check_count(line, transfers.len())?;
        let object = serde_json::from_str::<Map<String, Value>>(line_text).map_err(|error| InputError {
            line,
            column: error.column().max(1),
            field: None,
            reason: format!("not a JSON object: {error}"),
        })?;
        let at = |field: &str, reason: String| InputError {
            line,
            column: key_column(line_text, field),
            field: Some(field.to_owned()),
            reason,
        };
        let mut transfer = proto::Transfer::default();
        for (name, value) in &object {
            let Some(field) = FIELDS.iter().copied().find(|known| *known == name.as_str()) else {
                return Err(at(name, unknown_field(name)));
            };
            let text = json_text(field, value).map_err(|reason| at(field, reason))?;
            set_field(&mut transfer, field, &text).map_err(|reason| at(field, reason))?;
        }
        if let Some(missing) = FIELDS_REQUIRED.iter().find(|required| !object.contains_key(**required)) {
            let reason = format!("the object has no {missing:?} field");
            return Err(InputError { line, column: 1, field: None, reason });
        }
        transfers.push(LineTransfer { line, transfer });
    }
    Ok(transfers)
}

/// The text of a JSON value of `field`: strings as they are, whole numbers
/// in decimal, `null` as empty; flags also as a list of names. A fractional
/// number is refused (it may already have lost digits).
fn json_text(field: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) if number.is_u64() => Ok(number.to_string()),
        Value::Number(number) => Err(format!("{number} is not a whole non-negative number (write amounts as strings)")),
        Value::Array(items) if field == "flags" => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| format!("{item} is not a flag name")))
            .collect::<Result<Vec<_>, _>>()
            .map(|names| names.join("|")),
        other => Err(format!("{other} is not a string or a number")),
    }
}

/// The 1-based column of `"key"` in a JSON line (1 when not found verbatim).
fn key_column(line: &str, key: &str) -> usize {
    line.find(&format!("\"{key}\"")).map_or(1, |at| line[..at].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_texts(line: &str) -> Vec<String> {
        split_csv_line(line).unwrap().into_iter().map(|field| field.text).collect()
    }

    #[test]
    fn csv_fields_may_be_quoted_holding_commas_and_quotes() {
        assert_eq!(csv_texts("a,b,,c"), ["a", "b", "", "c"]);
        assert_eq!(csv_texts(r#""1,000","say ""hi""",x"#), ["1,000", r#"say "hi""#, "x"]);
        assert_eq!(csv_texts(r#""""#), [""]);
        assert_eq!(csv_texts("a,"), ["a", ""]);
        let columns = split_csv_line(r#"ab,"c",d"#).unwrap().into_iter().map(|field| field.column).collect::<Vec<_>>();
        assert_eq!(columns, [1, 4, 8]);
    }

    #[test]
    fn csv_quote_errors_name_their_column() {
        assert_eq!(split_csv_line(r#"a,"bc"#).unwrap_err().0, 3);
        assert_eq!(split_csv_line(r#"a,"b"c"#).unwrap_err().0, 6);
        assert_eq!(split_csv_line(r#"a,b"c"#).unwrap_err().0, 4);
    }

    const HEADER: &str = "id,debit_account_id,credit_account_id,amount,ledger,code,kind,flags";

    #[test]
    fn csv_transfers_are_read_with_their_line_numbers() {
        let text = format!(
            "\u{feff}{HEADER}\r\n1,10,11,1500000,1,7,expenditure,\r\n\n2,10,11,\"12.50\",1,7,journal,pending|linked\n"
        );
        let transfers = read_csv(&text).unwrap();
        assert_eq!(transfers.len(), 2);
        assert_eq!(transfers[0].line, 2);
        assert_eq!(transfers[0].transfer.amount, "1500000");
        assert_eq!(transfers[0].transfer.kind, proto::TransferKind::Expenditure as i32);
        assert!(transfers[0].transfer.flags.is_empty());
        assert_eq!(transfers[1].line, 4);
        assert_eq!(transfers[1].transfer.amount, "12.50");
        assert_eq!(
            transfers[1].transfer.flags,
            [proto::TransferFlag::Pending as i32, proto::TransferFlag::Linked as i32]
        );
    }

    #[test]
    fn a_malformed_csv_value_is_reported_with_line_column_and_field() {
        let text = format!("{HEADER}\n1,10,11,100,1,7,expenditure,\n2,10,11,1.2.3,1,7,expenditure,\n");
        let error = read_csv(&text).unwrap_err();
        assert_eq!((error.line, error.column, error.field.as_deref()), (3, 9, Some("amount")));
        assert!(
            error.to_string().starts_with("line 3, column 9: amount: \"1.2.3\" is not a decimal amount"),
            "{error}"
        );

        let error = read_csv(&format!("{HEADER}\n1,10,11,100,1,7,expenditure,pending|histroy\n")).unwrap_err();
        assert_eq!((error.line, error.column), (2, 29));
        assert!(error.reason.contains("unknown transfer flag \"histroy\""), "{error}");
    }

    #[test]
    fn csv_header_and_row_shape_errors() {
        let error = read_csv("id,kind,colour\n").unwrap_err();
        assert_eq!((error.line, error.column), (1, 9));
        assert!(error.reason.contains("unknown field \"colour\""), "{error}");
        assert!(read_csv("id,id,kind\n").unwrap_err().reason.contains("named twice"));
        assert!(read_csv("id,amount\n").unwrap_err().reason.contains("no \"kind\" column"));
        assert!(read_csv("").unwrap_err().reason.contains("empty"));
        let error = read_csv("id,kind\n1,journal,extra\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 11));
        assert!(error.reason.contains("3 fields, but the header names 2"), "{error}");
        let error = read_csv("id,kind,code\n1,journal,70000\n").unwrap_err();
        assert!(error.reason.contains("more than 65535"), "{error}");
        assert!(read_csv("id,kind\n1,\n").unwrap_err().reason.contains("must be set"));
    }

    #[test]
    fn jsonl_transfers_are_read_with_strings_numbers_and_flag_lists() {
        let text = concat!(
            r#"{"id":"1","debit_account_id":10,"credit_account_id":"11","amount":"123.45","ledger":1,"code":7,"kind":"expenditure"}"#,
            "\n\n",
            r#"{"id":2,"pending_id":"1","amount":"max","kind":"EXPENDITURE","flags":["post_pending","linked"],"user_data_128":null}"#,
            "\n",
            r#"{"id":3,"kind":"journal","flags":"pending|linked"}"#,
        );
        let transfers = read_jsonl(text).unwrap();
        assert_eq!(transfers.iter().map(|transfer| transfer.line).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(transfers[0].transfer.debit_account_id, "10");
        assert_eq!(transfers[0].transfer.amount, "123.45");
        assert_eq!(transfers[1].transfer.amount, "max");
        assert_eq!(
            transfers[1].transfer.flags,
            [proto::TransferFlag::PostPending as i32, proto::TransferFlag::Linked as i32]
        );
        assert_eq!(transfers[2].transfer.flags.len(), 2);
    }

    #[test]
    fn jsonl_errors_name_line_column_and_field() {
        let error =
            read_jsonl("{\"id\":\"1\",\"kind\":\"journal\"}\n{\"id\":\"2\",\"kind\":\"journal\",}\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.column > 1 && error.reason.starts_with("not a JSON object"), "{error}");

        let error = read_jsonl(r#"{"id":"2","kind":"journal","amount":12.5}"#).unwrap_err();
        assert_eq!((error.line, error.column, error.field.as_deref()), (1, 28, Some("amount")));
        assert!(error.reason.contains("write amounts as strings"), "{error}");

        assert!(read_jsonl(r#"{"id":"2","kind":"journal","colour":"red"}"#)
            .unwrap_err()
            .reason
            .contains("unknown field"));
        assert!(read_jsonl(r#"{"id":"2"}"#).unwrap_err().reason.contains("no \"kind\" field"));
        let error = read_jsonl(r#"{"id":"-2","kind":"journal"}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("id"));
    }
}
