//! Tests for the camt.053 reader.

use super::*;

/// A camt.053.001.08 statement shaped like the real schema: group header,
/// one statement with OPBD, CLBD and an ignored CLAV balance, a transaction
/// summary, five booked entries and one pending entry.
const CAMT_08: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <BkToCstmrStmt>
    <GrpHdr>
      <MsgId>MSG-20270203-0001</MsgId>
      <CreDtTm>2027-02-03T18:30:00+01:00</CreDtTm>
      <MsgRcpt>
        <Nm>Coffer Treasury GmbH</Nm>
      </MsgRcpt>
      <MsgPgntn>
        <PgNb>1</PgNb>
        <LastPgInd>true</LastPgInd>
      </MsgPgntn>
    </GrpHdr>
    <Stmt>
      <Id>STMT-2027-02-03</Id>
      <StmtPgntn>
        <PgNb>1</PgNb>
        <LastPgInd>true</LastPgInd>
      </StmtPgntn>
      <ElctrncSeqNb>34</ElctrncSeqNb>
      <LglSeqNb>34</LglSeqNb>
      <CreDtTm>2027-02-03T18:30:00+01:00</CreDtTm>
      <FrToDt>
        <FrDtTm>2027-02-01T00:00:00+01:00</FrDtTm>
        <ToDtTm>2027-02-03T23:59:59+01:00</ToDtTm>
      </FrToDt>
      <Acct>
        <Id>
          <IBAN>DE89370400440532013000</IBAN>
        </Id>
        <Ccy>EUR</Ccy>
        <Ownr>
          <Nm>Coffer Treasury GmbH</Nm>
        </Ownr>
        <Svcr>
          <FinInstnId>
            <BICFI>COBADEFFXXX</BICFI>
          </FinInstnId>
        </Svcr>
      </Acct>
      <Bal>
        <Tp>
          <CdOrPrtry>
            <Cd>OPBD</Cd>
          </CdOrPrtry>
        </Tp>
        <Amt Ccy="EUR">15000.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Dt>
          <Dt>2027-01-31</Dt>
        </Dt>
      </Bal>
      <Bal>
        <Tp>
          <CdOrPrtry>
            <Cd>CLBD</Cd>
          </CdOrPrtry>
        </Tp>
        <Amt Ccy="EUR">11304.54</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Dt>
          <Dt>2027-02-03</Dt>
        </Dt>
      </Bal>
      <Bal>
        <Tp>
          <CdOrPrtry>
            <Cd>CLAV</Cd>
          </CdOrPrtry>
        </Tp>
        <Amt Ccy="EUR">11304.54</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Dt>
          <Dt>2027-02-03</Dt>
        </Dt>
      </Bal>
      <TxsSummry>
        <TtlNtries>
          <NbOfNtries>5</NbOfNtries>
        </TtlNtries>
      </TxsSummry>
      <Ntry>
        <NtryRef>NR-0001</NtryRef>
        <Amt Ccy="EUR">1250.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts>
          <Cd>BOOK</Cd>
        </Sts>
        <BookgDt>
          <Dt>2027-02-01</Dt>
        </BookgDt>
        <ValDt>
          <Dt>2027-02-01</Dt>
        </ValDt>
        <AcctSvcrRef>BK-0001</AcctSvcrRef>
        <BkTxCd>
          <Domn>
            <Cd>PMNT</Cd>
            <Fmly>
              <Cd>RCDT</Cd>
              <SubFmlyCd>ESCT</SubFmlyCd>
            </Fmly>
          </Domn>
        </BkTxCd>
        <NtryDtls>
          <TxDtls>
            <Refs>
              <MsgId>CUST-MSG-77</MsgId>
              <EndToEndId>INV-2027-0042</EndToEndId>
            </Refs>
            <Amt Ccy="EUR">1250.00</Amt>
            <CdtDbtInd>CRDT</CdtDbtInd>
            <RltdPties>
              <Dbtr>
                <Pty>
                  <Nm>Smith &amp; Sons Ltd</Nm>
                </Pty>
              </Dbtr>
            </RltdPties>
            <RmtInf>
              <Ustrd>Invoice 2027-0042 Smith &amp; Sons</Ustrd>
            </RmtInf>
          </TxDtls>
        </NtryDtls>
      </Ntry>
      <Ntry>
        <NtryRef>NR-0002</NtryRef>
        <Amt Ccy="EUR">830.45</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts>
          <Cd>BOOK</Cd>
        </Sts>
        <BookgDt>
          <Dt>2027-02-01</Dt>
        </BookgDt>
        <ValDt>
          <Dt>2027-01-31</Dt>
        </ValDt>
        <AcctSvcrRef>BK-0002</AcctSvcrRef>
        <BkTxCd>
          <Prtry>
            <Cd>CARD</Cd>
          </Prtry>
        </BkTxCd>
        <NtryDtls>
          <TxDtls>
            <Refs>
              <EndToEndId>NOTPROVIDED</EndToEndId>
            </Refs>
          </TxDtls>
        </NtryDtls>
        <AddtlNtryInf>Card payment office supplies</AddtlNtryInf>
      </Ntry>
      <Ntry>
        <NtryRef>NR-0003</NtryRef>
        <Amt Ccy="EUR">4200.00</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts>
          <Cd>BOOK</Cd>
        </Sts>
        <BookgDt>
          <Dt>2027-02-02</Dt>
        </BookgDt>
        <ValDt>
          <Dt>2027-02-02</Dt>
        </ValDt>
        <AcctSvcrRef>BK-0003</AcctSvcrRef>
        <NtryDtls>
          <Btch>
            <NbOfTxs>2</NbOfTxs>
          </Btch>
          <TxDtls>
            <Refs>
              <EndToEndId>PAY-7781</EndToEndId>
            </Refs>
            <Amt Ccy="EUR">3000.00</Amt>
            <CdtDbtInd>DBIT</CdtDbtInd>
            <RmtInf>
              <Ustrd>Rent February</Ustrd>
            </RmtInf>
          </TxDtls>
          <TxDtls>
            <Refs>
              <EndToEndId>PAY-7782</EndToEndId>
            </Refs>
            <Amt Ccy="EUR">1200.00</Amt>
            <CdtDbtInd>DBIT</CdtDbtInd>
            <RmtInf>
              <Ustrd>Cleaning services</Ustrd>
            </RmtInf>
          </TxDtls>
        </NtryDtls>
        <AddtlNtryInf>Batch payment</AddtlNtryInf>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">99.99</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts>
          <Cd>BOOK</Cd>
        </Sts>
        <BookgDt>
          <DtTm>2027-02-03T10:15:00+01:00</DtTm>
        </BookgDt>
        <AcctSvcrRef>BK-0004</AcctSvcrRef>
        <NtryDtls>
          <TxDtls>
            <RmtInf>
              <Ustrd>Refund order</Ustrd>
              <Ustrd><![CDATA[A-991 <web>]]></Ustrd>
            </RmtInf>
          </TxDtls>
        </NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="EUR">15.00</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts>
          <Cd>BOOK</Cd>
        </Sts>
        <BookgDt>
          <Dt>2027-02-03</Dt>
        </BookgDt>
        <AddtlNtryInf>Account maintenance fee</AddtlNtryInf>
      </Ntry>
      <Ntry>
        <NtryRef>NR-0006</NtryRef>
        <Amt Ccy="EUR">500.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts>
          <Cd>PDNG</Cd>
        </Sts>
        <BookgDt>
          <Dt>2027-02-04</Dt>
        </BookgDt>
        <AcctSvcrRef>BK-0006</AcctSvcrRef>
      </Ntry>
      <AddtlStmtInf>End of statement</AddtlStmtInf>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"#;

/// An older camt.053.001.02 statement: status as plain text, a PRCD
/// opening balance, an overdrawn closing balance, an account identified by
/// `Othr/Id` and no `Acct/Ccy`.
const CAMT_02: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
  <BkToCstmrStmt>
    <GrpHdr>
      <MsgId>053-2027-0007</MsgId>
      <CreDtTm>2027-03-01T06:00:00</CreDtTm>
    </GrpHdr>
    <Stmt>
      <Id>053-2027-0007-1</Id>
      <CreDtTm>2027-03-01T06:00:00</CreDtTm>
      <Acct>
        <Id>
          <Othr>
            <Id>110-222-333444</Id>
          </Othr>
        </Id>
      </Acct>
      <Bal>
        <Tp>
          <CdOrPrtry>
            <Cd>PRCD</Cd>
          </CdOrPrtry>
        </Tp>
        <Amt Ccy="JPY">20000</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Dt>
          <Dt>2027-02-28</Dt>
        </Dt>
      </Bal>
      <Bal>
        <Tp>
          <CdOrPrtry>
            <Cd>CLBD</Cd>
          </CdOrPrtry>
        </Tp>
        <Amt Ccy="JPY">10000</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Dt>
          <DtTm>2027-03-01T00:00:00</DtTm>
        </Dt>
      </Bal>
      <Ntry>
        <Amt Ccy="JPY">30000</Amt>
        <CdtDbtInd>DBIT</CdtDbtInd>
        <Sts>BOOK</Sts>
        <BookgDt>
          <Dt>2027-03-01</Dt>
        </BookgDt>
        <ValDt>
          <Dt>2027-03-01</Dt>
        </ValDt>
        <AcctSvcrRef>JP-BANK-1</AcctSvcrRef>
        <NtryDtls>
          <TxDtls>
            <Refs>
              <EndToEndId>SUP-0091</EndToEndId>
            </Refs>
            <RmtInf>
              <Ustrd>Supplier 91</Ustrd>
            </RmtInf>
          </TxDtls>
        </NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="JPY">700</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts>INFO</Sts>
        <BookgDt>
          <Dt>2027-03-02</Dt>
        </BookgDt>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"#;

/// Replaces the single occurrence of `from` in `base`, failing the test if
/// it is absent or repeated.
fn replace_once(base: &str, from: &str, to: &str) -> String {
    assert_eq!(base.matches(from).count(), 1, "fixture must contain {from:?} once");
    base.replacen(from, to, 1)
}

fn day(text: &str) -> Date {
    Date::parse(text).expect("test date")
}

fn camt_error(xml: &str, scale: u8) -> (String, String) {
    match parse_camt053(xml.as_bytes(), scale) {
        Err(StatementError::Camt { path, reason }) => (path, reason),
        other => panic!("expected a camt error, got {other:?}"),
    }
}

#[test]
fn reads_realistic_camt_053_001_08() {
    let statement = parse_camt053(CAMT_08.as_bytes(), 2).expect("valid statement");
    assert_eq!(statement.id, "STMT-2027-02-03");
    assert_eq!(statement.sequence, Some(34));
    assert_eq!(statement.account, "DE89370400440532013000");
    assert_eq!(statement.currency, "EUR");
    assert_eq!(statement.from, Some(day("2027-02-01")));
    assert_eq!(statement.to, Some(day("2027-02-03")));
    assert_eq!(statement.opening, Balance { amount: 1_500_000, date: day("2027-01-31") });
    assert_eq!(statement.closing, Balance { amount: 1_130_454, date: day("2027-02-03") });
    let expected = vec![
        StatementLine {
            index: 1,
            amount: 125_000,
            direction: Direction::Credit,
            booking_date: day("2027-02-01"),
            value_date: Some(day("2027-02-01")),
            reference: "INV-2027-0042".to_string(),
            bank_reference: "BK-0001".to_string(),
            description: "Invoice 2027-0042 Smith & Sons".to_string(),
        },
        StatementLine {
            index: 2,
            amount: 83_045,
            direction: Direction::Debit,
            booking_date: day("2027-02-01"),
            value_date: Some(day("2027-01-31")),
            reference: "NR-0002".to_string(),
            bank_reference: "BK-0002".to_string(),
            description: "Card payment office supplies".to_string(),
        },
        StatementLine {
            index: 3,
            amount: 420_000,
            direction: Direction::Debit,
            booking_date: day("2027-02-02"),
            value_date: Some(day("2027-02-02")),
            reference: "PAY-7781".to_string(),
            bank_reference: "BK-0003".to_string(),
            description: "Rent February Cleaning services".to_string(),
        },
        StatementLine {
            index: 4,
            amount: 9_999,
            direction: Direction::Credit,
            booking_date: day("2027-02-03"),
            value_date: None,
            reference: "BK-0004".to_string(),
            bank_reference: "BK-0004".to_string(),
            description: "Refund order A-991 <web>".to_string(),
        },
        StatementLine {
            index: 5,
            amount: 1_500,
            direction: Direction::Debit,
            booking_date: day("2027-02-03"),
            value_date: None,
            reference: String::new(),
            bank_reference: String::new(),
            description: "Account maintenance fee".to_string(),
        },
    ];
    assert_eq!(statement.lines, expected);

    // The booked lines account for the movement between the two balances.
    let net: i128 = statement
        .lines
        .iter()
        .map(|l| match l.direction {
            Direction::Credit => l.amount as i128,
            Direction::Debit => -(l.amount as i128),
        })
        .sum();
    assert_eq!(statement.opening.amount + net, statement.closing.amount);
}

#[test]
fn reads_camt_053_001_02_with_text_status() {
    let statement = parse_camt053(CAMT_02.as_bytes(), 0).expect("valid statement");
    assert_eq!(statement.id, "053-2027-0007-1");
    assert_eq!(statement.sequence, None);
    assert_eq!(statement.account, "110-222-333444");
    assert_eq!(statement.currency, "JPY");
    assert_eq!((statement.from, statement.to), (None, None));
    assert_eq!(statement.opening.amount, 20_000);
    assert_eq!(statement.opening.date, day("2027-02-28"));
    assert_eq!(statement.closing.amount, -10_000);
    assert_eq!(statement.closing.date, day("2027-03-01"));
    assert_eq!(statement.lines.len(), 1);
    let line = &statement.lines[0];
    assert_eq!(line.index, 1);
    assert_eq!(line.amount, 30_000);
    assert_eq!(line.direction, Direction::Debit);
    assert_eq!(line.reference, "SUP-0091");
    assert_eq!(line.bank_reference, "JP-BANK-1");
    assert_eq!(line.description, "Supplier 91");
}

#[test]
fn accepts_every_supported_version_and_prefixed_names() {
    for version in 2..=13 {
        let xml = CAMT_08.replace("camt.053.001.08", &format!("camt.053.001.{version:02}"));
        assert!(parse_camt053(xml.as_bytes(), 2).is_ok(), "version {version}");
    }
    let prefixed = CAMT_02
        .replace("<Document xmlns=", "<c:Document xmlns:c=")
        .replace("</Document>", "</c:Document>")
        .replace("<BkToCstmrStmt>", "<c:BkToCstmrStmt>")
        .replace("</BkToCstmrStmt>", "</c:BkToCstmrStmt>");
    let prefixed = prefixed
        .replace('<', "<c:")
        .replace("<c:/", "</c:")
        .replace("<c:c:", "<c:")
        .replace("</c:c:", "</c:")
        .replace("<c:?xml", "<?xml")
        .replace("<c:![CDATA[", "<![CDATA[");
    let statement = parse_camt053(prefixed.as_bytes(), 0).expect("prefixed document");
    assert_eq!(statement.lines.len(), 1);
}

#[test]
fn rejects_wrong_namespace() {
    let xml = CAMT_08.replace("camt.053.001.08", "camt.052.001.08");
    let (path, reason) = camt_error(&xml, 2);
    assert_eq!(path, "Document");
    assert!(reason.contains("urn:iso:std:iso:20022:tech:xsd:camt.052.001.08"), "{reason}");

    for bad in ["camt.053.001.01", "camt.053.001.14", "camt.053.001.8"] {
        let xml = CAMT_08.replace("camt.053.001.08", bad);
        let (path, reason) = camt_error(&xml, 2);
        assert_eq!(path, "Document");
        assert!(reason.contains(bad), "{reason}");
    }

    let xml =
        replace_once(CAMT_02, r#"<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">"#, "<Document>");
    let (path, reason) = camt_error(&xml, 0);
    assert_eq!(path, "Document");
    assert!(reason.contains("no namespace"), "{reason}");
}

#[test]
fn error_display_shows_path_and_reason() {
    let xml = CAMT_08.replace("camt.053.001.08", "camt.054.001.08");
    let err = parse_camt053(xml.as_bytes(), 2).expect_err("wrong message");
    let text = err.to_string();
    assert!(text.starts_with("Document: unsupported namespace"), "{text}");
    assert!(text.contains("camt.054.001.08"), "{text}");
}

#[test]
fn rejects_missing_closing_balance() {
    let xml = replace_once(CAMT_08, "<Cd>CLBD</Cd>", "<Cd>CLAV</Cd>");
    let (path, reason) = camt_error(&xml, 2);
    assert_eq!(path, "Stmt/Bal");
    assert!(reason.contains("Tp/CdOrPrtry/Cd CLBD missing"), "{reason}");
}

#[test]
fn rejects_missing_opening_balance() {
    let xml = replace_once(CAMT_08, "<Cd>OPBD</Cd>", "<Cd>ITBD</Cd>");
    let (path, reason) = camt_error(&xml, 2);
    assert_eq!(path, "Stmt/Bal");
    assert!(reason.contains("OPBD"), "{reason}");
}

#[test]
fn rejects_amount_with_too_many_decimals() {
    let xml = replace_once(CAMT_08, r#"<Amt Ccy="EUR">830.45</Amt>"#, r#"<Amt Ccy="EUR">830.455</Amt>"#);
    let err = parse_camt053(xml.as_bytes(), 2).expect_err("too many decimals");
    assert_eq!(
        err,
        StatementError::Camt {
            path: "Stmt/Ntry[2]/Amt".to_string(),
            reason: "830.455 has more decimals than the ledger's scale 2".to_string(),
        }
    );
    assert_eq!(err.to_string(), "Stmt/Ntry[2]/Amt: 830.455 has more decimals than the ledger's scale 2");

    // Surplus zeros are harmless.
    let xml = replace_once(CAMT_08, r#"<Amt Ccy="EUR">830.45</Amt>"#, r#"<Amt Ccy="EUR">830.4500</Amt>"#);
    assert!(parse_camt053(xml.as_bytes(), 2).is_ok());
}

#[test]
fn rejects_bad_amounts() {
    let cases = [
        ("-15.00", "negative"),
        ("", "empty"),
        ("15,00", "not a decimal number"),
        ("0.00", "greater than zero"),
        ("99999999999999999999999999999999999999999", "too large"),
    ];
    for (text, expected) in cases {
        let xml = replace_once(CAMT_08, r#"<Amt Ccy="EUR">15.00</Amt>"#, &format!(r#"<Amt Ccy="EUR">{text}</Amt>"#));
        let (path, reason) = camt_error(&xml, 2);
        assert_eq!(path, "Stmt/Ntry[5]/Amt", "{text}");
        assert!(reason.contains(expected), "{text}: {reason}");
    }

    let xml = replace_once(
        CAMT_08,
        r#"<Amt Ccy="EUR">11304.54</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Dt>
          <Dt>2027-02-03</Dt>
        </Dt>
      </Bal>
      <Bal>"#,
        r#"<Amt Ccy="EUR">11304.54</Amt>
        <CdtDbtInd>CRDIT</CdtDbtInd>
        <Dt>
          <Dt>2027-02-03</Dt>
        </Dt>
      </Bal>
      <Bal>"#,
    );
    let (path, reason) = camt_error(&xml, 2);
    assert_eq!(path, "Stmt/Bal[2]/CdtDbtInd");
    assert!(reason.contains("CRDIT"), "{reason}");
}

#[test]
fn rejects_currency_mismatch() {
    let xml = replace_once(CAMT_08, r#"<Amt Ccy="EUR">99.99</Amt>"#, r#"<Amt Ccy="USD">99.99</Amt>"#);
    let (path, reason) = camt_error(&xml, 2);
    assert_eq!(path, "Stmt/Ntry[4]/Amt");
    assert!(reason.contains("USD") && reason.contains("EUR"), "{reason}");

    // Without Acct/Ccy the opening balance sets the currency.
    let xml = replace_once(CAMT_02, r#"<Amt Ccy="JPY">10000</Amt>"#, r#"<Amt Ccy="KRW">10000</Amt>"#);
    let (path, reason) = camt_error(&xml, 0);
    assert_eq!(path, "Stmt/Bal[2]/Amt");
    assert!(reason.contains("KRW") && reason.contains("JPY"), "{reason}");
}

#[test]
fn skips_pending_entries_but_keeps_positions() {
    // Make the first entry pending: the remaining lines keep their
    // positions, and the pending entry's content is not inspected.
    let xml = replace_once(
        CAMT_08,
        r#"<Amt Ccy="EUR">1250.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts>
          <Cd>BOOK</Cd>
        </Sts>"#,
        r#"<Amt Ccy="EUR">1250.001</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd>
        <Sts>
          <Cd>PDNG</Cd>
        </Sts>"#,
    );
    let statement = parse_camt053(xml.as_bytes(), 2).expect("pending entry skipped");
    let indexes: Vec<u32> = statement.lines.iter().map(|l| l.index).collect();
    assert_eq!(indexes, vec![2, 3, 4, 5]);
    assert!(statement.lines.iter().all(|l| l.reference != "INV-2027-0042"));

    // The original fixture's sixth entry is pending as well.
    let statement = parse_camt053(CAMT_08.as_bytes(), 2).expect("valid statement");
    assert!(statement.lines.iter().all(|l| l.bank_reference != "BK-0006"));
}

#[test]
fn rejects_unknown_or_missing_status() {
    let xml = replace_once(CAMT_02, "<Sts>BOOK</Sts>", "<Sts>DONE</Sts>");
    let (path, reason) = camt_error(&xml, 0);
    assert_eq!(path, "Stmt/Ntry[1]/Sts");
    assert!(reason.contains("DONE"), "{reason}");

    let xml = replace_once(CAMT_02, "<Sts>BOOK</Sts>", "");
    let (path, _) = camt_error(&xml, 0);
    assert_eq!(path, "Stmt/Ntry[1]/Sts");
}

#[test]
fn rejects_several_or_no_statements() {
    let start = CAMT_02.find("<Stmt>").expect("Stmt start");
    let end = CAMT_02.find("</Stmt>").expect("Stmt end") + "</Stmt>".len();
    let one = &CAMT_02[start..end];
    let two = CAMT_02.replacen(one, &format!("{one}\n{one}"), 1);
    let (path, reason) = camt_error(&two, 0);
    assert_eq!(path, "Document/BkToCstmrStmt");
    assert!(reason.contains("one statement per file"), "{reason}");

    let none = CAMT_02.replacen(one, "", 1);
    let (_, reason) = camt_error(&none, 0);
    assert!(reason.contains("no Stmt"), "{reason}");
}

#[test]
fn reports_malformed_xml_with_position() {
    let xml = replace_once(CAMT_02, "<Sts>BOOK</Sts>", "<Sts>BOOK</Status>");
    match parse_camt053(xml.as_bytes(), 0) {
        Err(StatementError::Xml { position, message }) => {
            assert!(position > 0, "{message}");
            assert!(message.contains("Status"), "{message}");
        }
        other => panic!("expected an XML error, got {other:?}"),
    }

    let truncated = &CAMT_02[..CAMT_02.len() / 2];
    assert!(matches!(parse_camt053(truncated.as_bytes(), 0), Err(StatementError::Xml { .. })));
    assert!(matches!(parse_camt053(b"", 0), Err(StatementError::Xml { .. })));
    assert!(matches!(parse_camt053(b"<a>&bogus;</a>", 0), Err(StatementError::Xml { .. })));
    assert!(matches!(
        parse_camt053(b"\xff\xfe<a/>", 0),
        Err(StatementError::Xml { .. }) | Err(StatementError::Camt { .. })
    ));
}

#[test]
fn rejects_excessive_nesting_without_crashing() {
    let depth = 100_000;
    let xml = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(matches!(parse_camt053(xml.as_bytes(), 0), Err(StatementError::Xml { .. })));
}

#[test]
fn ignores_elements_from_other_namespaces() {
    let xml =
        replace_once(CAMT_02, "<Sts>BOOK</Sts>", r#"<x:Sts xmlns:x="urn:example:other">PDNG</x:Sts><Sts>BOOK</Sts>"#);
    let statement = parse_camt053(xml.as_bytes(), 0).expect("foreign element ignored");
    assert_eq!(statement.lines.len(), 1);
}

#[test]
fn rejects_invalid_dates_with_path() {
    let xml =
        replace_once(CAMT_02, "<BookgDt>\n          <Dt>2027-03-01</Dt>", "<BookgDt>\n          <Dt>2027-02-29</Dt>");
    let (path, reason) = camt_error(&xml, 0);
    assert_eq!(path, "Stmt/Ntry[1]/BookgDt/Dt");
    assert!(reason.contains("2027-02-29"), "{reason}");
}
