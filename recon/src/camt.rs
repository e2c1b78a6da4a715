//! Reading ISO 20022 camt.053 (bank-to-customer statement) messages.
//!
//! Message versions `camt.053.001.02` to `camt.053.001.13` are accepted.
//! The document must hold exactly one statement (`Stmt`); a file carrying
//! several is refused so that each statement is imported on its own.
//! Elements the ledger has no use for (the group header, transaction codes,
//! related parties, supplementary data, ...) are skipped wherever they
//! appear. Only elements in the message's own namespace are read.
//!
//! Entries (`Ntry`) whose status is `PDNG` (pending), `INFO` or `FUTR`
//! (future) are not part of the booked statement and are left out; only
//! `BOOK` entries become [`StatementLine`]s. Older versions give the status
//! as text (`<Sts>BOOK</Sts>`), newer ones as a code (`<Sts><Cd>BOOK</Cd></Sts>`);
//! both are understood.
//!
//! Date-times (`DtTm`, `FrDtTm`, `ToDtTm`) contribute only their calendar
//! date part, exactly as written, without any time-zone conversion.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::amount::{parse_unsigned, signed_from_magnitude};
use crate::statement::is_currency_code;
use crate::{Balance, Date, Direction, Statement, StatementError, StatementLine};

/// Namespace prefix shared by every camt.053 message version.
const NAMESPACE_PREFIX: &str = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.";
/// Oldest and newest accepted message versions.
const VERSIONS: std::ops::RangeInclusive<u8> = 2..=13;
/// Deepest element nesting accepted; real statements stay far below it.
const MAX_DEPTH: usize = 128;

/// Reads a camt.053 statement whose amounts are converted into minor units
/// with `scale` decimal places (2 for EUR or USD, 0 for KRW or JPY, ...).
///
/// An amount with more decimals than `scale` is refused unless the surplus
/// digits are all zeros. Negative, empty, malformed or overflowing amounts,
/// zero entry amounts, and amounts in a currency other than the account's
/// are refused as well.
///
/// # Errors
///
/// [`StatementError::Xml`] when the bytes are not well-formed XML, and
/// [`StatementError::Camt`] naming the offending element (for example
/// `Stmt/Ntry[3]/Amt`) when the document is not an acceptable camt.053
/// statement.
pub fn parse_camt053(xml: &[u8], scale: u8) -> Result<Statement, StatementError> {
    let root = read_tree(xml)?;
    if root.name != "Document" {
        return Err(StatementError::camt(root.name.as_str(), "root element must be Document"));
    }
    check_namespace(root.namespace.as_deref())?;
    let group = root
        .child("BkToCstmrStmt")
        .ok_or_else(|| StatementError::camt("Document", "BkToCstmrStmt missing: not a bank-to-customer statement"))?;
    let mut statements = group.children("Stmt");
    let statement = statements.next().ok_or_else(|| {
        StatementError::camt("Document/BkToCstmrStmt", "no Stmt element: the file holds no statement")
    })?;
    let extra = statements.count();
    if extra > 0 {
        return Err(StatementError::camt(
            "Document/BkToCstmrStmt",
            format!("the file holds {} statements (Stmt); import one statement per file", extra + 1),
        ));
    }
    read_statement(statement, scale)
}

/// Refuses anything but a camt.053.001.02 to .13 namespace.
fn check_namespace(namespace: Option<&str>) -> Result<(), StatementError> {
    let Some(namespace) = namespace else {
        return Err(StatementError::camt(
            "Document",
            format!("no namespace given; expected {NAMESPACE_PREFIX}NN with NN from 02 to 13"),
        ));
    };
    let version = namespace
        .strip_prefix(NAMESPACE_PREFIX)
        .filter(|v| v.len() == 2 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|v| VERSIONS.contains(v));
    match version {
        Some(_) => Ok(()),
        None => Err(StatementError::camt(
            "Document",
            format!("unsupported namespace '{namespace}'; expected {NAMESPACE_PREFIX}NN with NN from 02 to 13"),
        )),
    }
}

/// An XML element reduced to what statement reading needs.
#[derive(Debug, Default)]
struct Element {
    /// Local name, without any prefix.
    name: String,
    /// Namespace of the element (kept for the root only).
    namespace: Option<String>,
    /// Whether the element is in the same namespace as the root.
    in_document_namespace: bool,
    /// Attributes as (local name, unescaped value).
    attributes: Vec<(String, String)>,
    /// All character data directly inside the element, unescaped.
    text: String,
    /// Child elements in document order.
    children: Vec<Element>,
}

impl Element {
    /// Child elements of the document's namespace called `name`.
    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.in_document_namespace && c.name == name)
    }

    /// The first child element called `name`.
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.in_document_namespace && c.name == name)
    }

    /// Follows a chain of child names, taking the first match at each step.
    fn descend(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |element, name| element.child(name))
    }

    /// Value of the attribute with local name `name`.
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The element's text with surrounding white space removed.
    fn value(&self) -> &str {
        self.text.trim()
    }
}

/// Builds an XML error at `position` from anything printable.
fn xml_error(position: u64, message: impl ToString) -> StatementError {
    StatementError::Xml { position, message: message.to_string() }
}

/// Parses the whole document into an [`Element`] tree and returns its root.
fn read_tree(xml: &[u8]) -> Result<Element, StatementError> {
    let mut reader = NsReader::from_reader(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut root_namespace: Option<Vec<u8>> = None;
    loop {
        // Offset where the event starts, used for errors found after reading it.
        let position = reader.buffer_position();
        let (namespace, event) = match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(ns), event)) => (Some(ns.as_ref().to_vec()), event),
            Ok((ResolveResult::Unbound, event)) => (None, event),
            Ok((ResolveResult::Unknown(prefix), _)) => {
                return Err(xml_error(
                    position,
                    format!("namespace prefix '{}' is not declared", String::from_utf8_lossy(&prefix)),
                ))
            }
            Err(err) => return Err(xml_error(reader.error_position(), err)),
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(xml_error(position, "more than one root element"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(xml_error(position, format!("elements nested deeper than {MAX_DEPTH} levels")));
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let mut element = Element { name, ..Element::default() };
                if stack.is_empty() {
                    element.namespace = namespace.as_deref().map(|ns| String::from_utf8_lossy(ns).into_owned());
                    element.in_document_namespace = true;
                    root_namespace = namespace;
                } else {
                    element.in_document_namespace = namespace == root_namespace;
                }
                for attribute in start.attributes() {
                    let attribute = attribute.map_err(|err| xml_error(position, err))?;
                    let value = attribute
                        .decode_and_unescape_value(reader.decoder())
                        .map_err(|err| xml_error(position, err))?;
                    let key = String::from_utf8_lossy(attribute.key.local_name().as_ref()).into_owned();
                    element.attributes.push((key, value.into_owned()));
                }
                if matches!(event, Event::Start(_)) {
                    stack.push(element);
                } else {
                    attach(&mut stack, &mut root, element);
                }
            }
            Event::End(_) => {
                // quick-xml verifies that end tags match their start tags.
                let element = stack.pop().ok_or_else(|| xml_error(position, "end tag without a start tag"))?;
                attach(&mut stack, &mut root, element);
            }
            Event::Text(text) => {
                let content = text.xml10_content().map_err(|err| xml_error(position, err))?;
                add_text(&mut stack, &content, position)?;
            }
            Event::CData(data) => {
                let content = data.xml10_content().map_err(|err| xml_error(position, err))?;
                add_text(&mut stack, &content, position)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|err| xml_error(position, err))? {
                    Some(ch) => ch.to_string(),
                    None => {
                        let name = reference.decode().map_err(|err| xml_error(position, err))?;
                        resolve_predefined_entity(&name)
                            .ok_or_else(|| xml_error(position, format!("unknown entity reference &{name};")))?
                            .to_string()
                    }
                };
                add_text(&mut stack, &resolved, position)?;
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(xml_error(
            reader.buffer_position(),
            format!("document ends before element {} is closed", open.name),
        ));
    }
    root.ok_or_else(|| xml_error(reader.buffer_position(), "document has no root element"))
}

/// Hangs a finished element under its parent, or makes it the root.
fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Adds character data to the innermost open element. Outside the root only
/// white space is allowed.
fn add_text(stack: &mut [Element], text: &str, position: u64) -> Result<(), StatementError> {
    match stack.last_mut() {
        Some(element) => {
            element.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(xml_error(position, "text outside the root element")),
    }
}

/// Text of the child `name` of `parent`, trimmed, required and non-empty.
fn required_text<'a>(parent: &'a Element, parent_path: &str, name: &str) -> Result<&'a str, StatementError> {
    let child =
        parent.child(name).ok_or_else(|| StatementError::camt(format!("{parent_path}/{name}"), "element missing"))?;
    let value = child.value();
    if value.is_empty() {
        return Err(StatementError::camt(format!("{parent_path}/{name}"), "element is empty"));
    }
    Ok(value)
}

/// Trimmed text of the optional child `name`, or an empty string.
fn optional_text(parent: &Element, name: &str) -> String {
    parent.child(name).map(|c| c.value().to_string()).unwrap_or_default()
}

/// Parses a date-and-time value and keeps its calendar date.
fn date_of(text: &str, path: &str, kind: &str) -> Result<Date, StatementError> {
    let date_part = if kind == "DtTm" { text.split_once('T').map_or(text, |(date, _)| date) } else { text };
    Date::parse(date_part)
        .ok_or_else(|| StatementError::camt(path, format!("'{text}' is not a valid date (expected YYYY-MM-DD)")))
}

/// Reads a `DateAndDateTimeChoice` element: `Dt` or `DtTm`.
fn date_choice(element: &Element, path: &str) -> Result<Date, StatementError> {
    if let Some(date) = element.child("Dt") {
        date_of(date.value(), &format!("{path}/Dt"), "Dt")
    } else if let Some(date_time) = element.child("DtTm") {
        date_of(date_time.value(), &format!("{path}/DtTm"), "DtTm")
    } else {
        Err(StatementError::camt(path, "neither Dt nor DtTm present"))
    }
}

/// Reads `CdtDbtInd` under `parent`.
fn direction_of(parent: &Element, parent_path: &str) -> Result<Direction, StatementError> {
    match required_text(parent, parent_path, "CdtDbtInd")? {
        "CRDT" => Ok(Direction::Credit),
        "DBIT" => Ok(Direction::Debit),
        other => {
            Err(StatementError::camt(format!("{parent_path}/CdtDbtInd"), format!("'{other}' is neither CRDT nor DBIT")))
        }
    }
}

/// Reads `Amt` under `parent`: the unsigned amount and its `Ccy` attribute.
fn amount_of<'a>(parent: &'a Element, parent_path: &str, scale: u8) -> Result<(u128, &'a str), StatementError> {
    let path = format!("{parent_path}/Amt");
    let element = parent.child("Amt").ok_or_else(|| StatementError::camt(&path, "element missing"))?;
    let amount = parse_unsigned(element.value(), scale).map_err(|reason| StatementError::camt(&path, reason))?;
    let currency = element
        .attribute("Ccy")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| StatementError::camt(&path, "attribute Ccy missing"))?;
    Ok((amount, currency))
}

/// Refuses an amount whose currency differs from the statement's.
fn check_currency(found: &str, expected: &str, path: &str) -> Result<(), StatementError> {
    if found == expected {
        Ok(())
    } else {
        Err(StatementError::camt(path, format!("currency {found} differs from the account currency {expected}")))
    }
}

/// A balance as read, before its currency has been checked.
struct RawBalance<'a> {
    /// Path of the `Bal` element, for later messages.
    path: String,
    /// The signed balance.
    balance: Balance,
    /// The `Ccy` attribute of its amount.
    currency: &'a str,
}

/// Reads one `Bal` element of a type the ledger uses.
fn read_balance<'a>(element: &'a Element, path: String, scale: u8) -> Result<RawBalance<'a>, StatementError> {
    let (magnitude, currency) = amount_of(element, &path, scale)?;
    let direction = direction_of(element, &path)?;
    let amount = signed_from_magnitude(magnitude, direction == Direction::Debit)
        .ok_or_else(|| StatementError::camt(format!("{path}/Amt"), "balance is too large to represent"))?;
    let date_element =
        element.child("Dt").ok_or_else(|| StatementError::camt(format!("{path}/Dt"), "element missing"))?;
    let date = date_choice(date_element, &format!("{path}/Dt"))?;
    Ok(RawBalance { path, balance: Balance { amount, date }, currency })
}

/// Reads the single `Stmt` element.
fn read_statement(stmt: &Element, scale: u8) -> Result<Statement, StatementError> {
    let id = required_text(stmt, "Stmt", "Id")?.to_string();
    let sequence = match stmt.child("ElctrncSeqNb") {
        None => None,
        Some(element) => Some(element.value().parse::<u64>().map_err(|_| {
            StatementError::camt("Stmt/ElctrncSeqNb", format!("'{}' is not a whole number", element.value()))
        })?),
    };

    let account_element = stmt.child("Acct").ok_or_else(|| StatementError::camt("Stmt/Acct", "element missing"))?;
    let account_id =
        account_element.child("Id").ok_or_else(|| StatementError::camt("Stmt/Acct/Id", "element missing"))?;
    let account = match account_id.child("IBAN") {
        Some(iban) => iban.value(),
        None => account_id.descend(&["Othr", "Id"]).map_or("", Element::value),
    };
    if account.is_empty() {
        return Err(StatementError::camt("Stmt/Acct/Id", "neither IBAN nor Othr/Id gives an account identifier"));
    }
    let account_currency = match account_element.child("Ccy") {
        None => None,
        Some(ccy) if is_currency_code(ccy.value()) => Some(ccy.value()),
        Some(ccy) => {
            return Err(StatementError::camt(
                "Stmt/Acct/Ccy",
                format!("'{}' is not a three-letter currency code", ccy.value()),
            ))
        }
    };

    let (from, to) = match stmt.child("FrToDt") {
        None => (None, None),
        Some(period) => {
            let bound = |name: &str| match period.child(name) {
                None => Ok(None),
                Some(element) => date_of(element.value(), &format!("Stmt/FrToDt/{name}"), "DtTm").map(Some),
            };
            (bound("FrDtTm")?, bound("ToDtTm")?)
        }
    };

    // Balances: keep the first of each type the ledger uses.
    let mut opening_booked: Option<RawBalance> = None;
    let mut opening_previous: Option<RawBalance> = None;
    let mut closing: Option<RawBalance> = None;
    for (number, element) in stmt.children("Bal").enumerate() {
        let path = format!("Stmt/Bal[{}]", number + 1);
        let code = element.descend(&["Tp", "CdOrPrtry", "Cd"]).map_or("", Element::value);
        let slot = match code {
            "OPBD" => &mut opening_booked,
            "PRCD" => &mut opening_previous,
            "CLBD" => &mut closing,
            _ => continue,
        };
        if let Some(first) = slot {
            return Err(StatementError::camt(
                format!("{path}/Tp/CdOrPrtry/Cd"),
                format!("a second {code} balance (the first is {})", first.path),
            ));
        }
        *slot = Some(read_balance(element, path, scale)?);
    }
    let opening = opening_booked
        .or(opening_previous)
        .ok_or_else(|| StatementError::camt("Stmt/Bal", "balance with Tp/CdOrPrtry/Cd OPBD (or PRCD) missing"))?;
    let closing =
        closing.ok_or_else(|| StatementError::camt("Stmt/Bal", "balance with Tp/CdOrPrtry/Cd CLBD missing"))?;
    let currency = account_currency.unwrap_or(opening.currency);
    if !is_currency_code(currency) {
        return Err(StatementError::camt(
            format!("{}/Amt", opening.path),
            format!("'{currency}' is not a three-letter currency code"),
        ));
    }
    for balance in [&opening, &closing] {
        check_currency(balance.currency, currency, &format!("{}/Amt", balance.path))?;
    }

    let mut lines = Vec::new();
    for (number, entry) in stmt.children("Ntry").enumerate() {
        let position = number + 1;
        let path = format!("Stmt/Ntry[{position}]");
        if !is_booked(entry, &path)? {
            continue;
        }
        let index =
            u32::try_from(position).map_err(|_| StatementError::camt(&path, "too many entries in one statement"))?;
        lines.push(read_entry(entry, &path, index, scale, currency)?);
    }

    Ok(Statement {
        id,
        sequence,
        account: account.to_string(),
        currency: currency.to_string(),
        from,
        to,
        opening: opening.balance,
        closing: closing.balance,
        lines,
    })
}

/// Reads an entry's `Sts` and says whether the entry is booked.
fn is_booked(entry: &Element, path: &str) -> Result<bool, StatementError> {
    let status_path = format!("{path}/Sts");
    let status = entry.child("Sts").ok_or_else(|| StatementError::camt(&status_path, "element missing"))?;
    let (code, code_path) = if let Some(code) = status.child("Cd") {
        (code.value(), format!("{status_path}/Cd"))
    } else if status.child("Prtry").is_some() {
        return Err(StatementError::camt(
            format!("{status_path}/Prtry"),
            "proprietary entry status is not supported; expected Cd BOOK, PDNG, INFO or FUTR",
        ));
    } else {
        (status.value(), status_path)
    };
    match code {
        "BOOK" => Ok(true),
        "PDNG" | "INFO" | "FUTR" => Ok(false),
        "" => Err(StatementError::camt(code_path, "element is empty")),
        other => Err(StatementError::camt(
            code_path,
            format!("unknown entry status '{other}'; expected BOOK, PDNG, INFO or FUTR"),
        )),
    }
}

/// Reads one booked `Ntry` into a statement line.
fn read_entry(
    entry: &Element,
    path: &str,
    index: u32,
    scale: u8,
    currency: &str,
) -> Result<StatementLine, StatementError> {
    let (amount, amount_currency) = amount_of(entry, path, scale)?;
    if amount == 0 {
        return Err(StatementError::camt(format!("{path}/Amt"), "entry amount must be greater than zero"));
    }
    check_currency(amount_currency, currency, &format!("{path}/Amt"))?;
    let direction = direction_of(entry, path)?;
    let booking_path = format!("{path}/BookgDt");
    let booking_date = date_choice(
        entry.child("BookgDt").ok_or_else(|| StatementError::camt(&booking_path, "element missing"))?,
        &booking_path,
    )?;
    let value_date = match entry.child("ValDt") {
        None => None,
        Some(element) => Some(date_choice(element, &format!("{path}/ValDt"))?),
    };

    let entry_reference = optional_text(entry, "NtryRef");
    let bank_reference = optional_text(entry, "AcctSvcrRef");
    let details: Vec<&Element> = entry.children("NtryDtls").flat_map(|d| d.children("TxDtls")).collect();
    let end_to_end = details
        .iter()
        .filter_map(|tx| tx.descend(&["Refs", "EndToEndId"]))
        .map(Element::value)
        .find(|id| !id.is_empty() && !id.eq_ignore_ascii_case("NOTPROVIDED"));
    let reference = match end_to_end {
        Some(id) => id.to_string(),
        None if !entry_reference.is_empty() => entry_reference,
        None => bank_reference.clone(),
    };
    let remittance: Vec<&str> = details
        .iter()
        .flat_map(|tx| tx.children("RmtInf"))
        .flat_map(|r| r.children("Ustrd"))
        .map(Element::value)
        .filter(|text| !text.is_empty())
        .collect();
    let description = if remittance.is_empty() { optional_text(entry, "AddtlNtryInf") } else { remittance.join(" ") };

    Ok(StatementLine { index, amount, direction, booking_date, value_date, reference, bank_reference, description })
}

#[cfg(test)]
#[path = "camt_tests.rs"]
mod tests;
