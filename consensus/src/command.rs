//! The payload of a normal Raft entry: one ledger [`Operation`], the
//! leader's timestamp, and which proposals of which node it carries.
//!
//! Group commit packs several client proposals of the same kind into one
//! operation; [`Part`]s record how many events each contributed, so the
//! proposer can hand every client exactly its own results.
//!
//! Layout (big-endian, version 2):
//!
//! ```text
//! version u8 = 2 | kind u8 | timestamp u64 | proposer u64 | term u64
//! parts u32 | parts × (sequence u64, events u32, principal_len u8, principal)
//! events u32 | events × record
//! ```
//!
//! Each part names the principal that proposed it (the audit trail records
//! it with the batch, the same on every replica). Version 1, without
//! principals, still decodes: its parts' principal is empty.
//!
//! Records are `coffer_ledger::codec` encodings: accounts and transfers
//! fixed-size, ledgers prefixed by their length as a `u16`; a period change
//! is its ledger (`u32`) and the period's code (`u8`). The storage
//! layer frames each entry with a crc32, so this layout carries none.

use coffer_ledger::close::CLOSE_CODE_RANGES_MAX;
use coffer_ledger::codec::{
    decode_account, decode_ledger, decode_transfer, encode_account, encode_ledger, encode_transfer, ACCOUNT_SIZE,
    TRANSFER_SIZE,
};
use coffer_ledger::codec::{decode_year_close, encode_year_close};
use coffer_ledger::reconcile::{decode_reconcile_op, encode_reconcile_op};
use coffer_ledger::{CloseStep, LedgerId, Operation, Period, PeriodChange, BATCH_EVENTS_MAX};

const VERSION: u8 = 2;
/// The version without principals, still read.
const VERSION_WITHOUT_PRINCIPALS: u8 = 1;
/// The longest principal a part names.
pub const PRINCIPAL_BYTES_MAX: usize = 128;
const KIND_LEDGERS: u8 = 1;
const KIND_ACCOUNTS: u8 = 2;
const KIND_TRANSFERS: u8 = 3;
const KIND_EXPIRE: u8 = 4;
// Kind 5 is a region entry's (`crate::region::KIND_REGION`).
const KIND_PERIODS: u8 = 6;
const KIND_CLOSE: u8 = 7;
/// A reconciliation operation: its `coffer_ledger::reconcile` encoding,
/// prefixed by its length as a `u32`.
const KIND_RECONCILE: u8 = 8;
/// A close step's tags: which step follows.
const CLOSE_BEGIN: u8 = 1;
const CLOSE_POST: u8 = 2;
const CLOSE_FINISH: u8 = 3;
const CLOSE_ABORT: u8 = 4;
/// Bytes of one `set_periods` event: ledger u32, period u8.
const PERIOD_CHANGE_SIZE: usize = 5;
/// The most parts one entry may carry: one per event at most.
const PARTS_MAX: usize = BATCH_EVENTS_MAX;

/// The events one proposal contributed to an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Part {
    /// The proposer's sequence number of the proposal (its `ProposalId`).
    pub sequence: u64,
    /// How many consecutive events of the operation are this proposal's.
    pub events: u32,
    /// Who proposed it (the API's principal; empty when unknown).
    pub principal: String,
}

/// A decoded normal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The leader's timestamp (ns); the state machine never goes below
    /// `last_timestamp + 1` whatever this says.
    pub timestamp: u64,
    /// The node that proposed the entry (`0`: nobody waits for it).
    pub proposer: u64,
    /// The term the proposer led when it proposed: (term, sequence) names a
    /// proposal uniquely across the proposer's restarts.
    pub term: u64,
    /// The proposals packed into the operation, in event order.
    pub parts: Vec<Part>,
    /// The operation to apply.
    pub operation: Operation,
}

/// Why an entry's payload did not decode. A committed entry that does not
/// decode is corruption: every replica would fail on it the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("entry payload field {field}: {reason}")]
pub struct CommandError {
    /// The field that failed.
    pub field: &'static str,
    /// What was wrong.
    pub reason: String,
}

fn error(field: &'static str, reason: impl Into<String>) -> CommandError {
    CommandError { field, reason: reason.into() }
}

/// Whether an entry payload is an encoded [`Operation::CreateTransfers`]
/// command, read from its kind byte alone (nothing is decoded).
pub fn is_transfer_batch(data: &[u8]) -> bool {
    data.get(1) == Some(&KIND_TRANSFERS)
}

impl Command {
    /// Encodes the command. Fails only for a ledger whose currency or name
    /// is longer than a `u16` length allows (the API rejects those first).
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let (kind, events) = match &self.operation {
            Operation::CreateLedgers(events) => (KIND_LEDGERS, events.len()),
            Operation::CreateAccounts(events) => (KIND_ACCOUNTS, events.len()),
            Operation::CreateTransfers(events) => (KIND_TRANSFERS, events.len()),
            Operation::ExpirePending => (KIND_EXPIRE, 0),
            Operation::SetPeriods(events) => (KIND_PERIODS, events.len()),
            Operation::Close(CloseStep::Post { transfers, .. }) => (KIND_CLOSE, transfers.len()),
            Operation::Close(_) => (KIND_CLOSE, 1),
            Operation::Reconcile(_) => (KIND_RECONCILE, 1),
        };
        // Sized once: each part is 13 bytes and its principal; a record is
        // at most a transfer's size (ledgers and close steps may grow it).
        let principals: usize = self.parts.iter().map(|part| part.principal.len()).sum();
        let mut out = Vec::with_capacity(34 + self.parts.len() * 13 + principals + events * TRANSFER_SIZE);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out.extend_from_slice(&count(self.parts.len(), "parts")?.to_be_bytes());
        for part in &self.parts {
            out.extend_from_slice(&part.sequence.to_be_bytes());
            out.extend_from_slice(&part.events.to_be_bytes());
            let principal = part.principal.as_bytes();
            if principal.len() > PRINCIPAL_BYTES_MAX {
                return Err(error(
                    "part.principal",
                    format!("{} bytes, at most {PRINCIPAL_BYTES_MAX}", principal.len()),
                ));
            }
            out.push(principal.len() as u8);
            out.extend_from_slice(principal);
        }
        out.extend_from_slice(&count(events, "events")?.to_be_bytes());
        match &self.operation {
            Operation::CreateLedgers(ledgers) => {
                let mut record = Vec::new();
                for ledger in ledgers {
                    if ledger.currency.len() > usize::from(u8::MAX) || ledger.name.len() > usize::from(u8::MAX) {
                        return Err(error(
                            "ledger",
                            format!("ledger {} has a currency or name over 255 bytes", ledger.id.0),
                        ));
                    }
                    record.clear();
                    encode_ledger(ledger, &mut record);
                    out.extend_from_slice(&count(record.len(), "ledger")?.to_be_bytes()[2..]);
                    out.extend_from_slice(&record);
                }
            }
            Operation::CreateAccounts(accounts) => {
                accounts.iter().for_each(|account| encode_account(account, &mut out))
            }
            Operation::CreateTransfers(transfers) => {
                transfers.iter().for_each(|transfer| encode_transfer(transfer, &mut out));
            }
            Operation::ExpirePending => {}
            Operation::SetPeriods(changes) => {
                for change in changes {
                    out.extend_from_slice(&change.ledger.0.to_be_bytes());
                    out.push(change.period.code());
                }
            }
            Operation::Close(step) => encode_close_step(step, &mut out)?,
            Operation::Reconcile(op) => {
                let mut record = Vec::new();
                encode_reconcile_op(op, &mut record);
                out.extend_from_slice(&count(record.len(), "reconcile")?.to_be_bytes());
                out.extend_from_slice(&record);
            }
        }
        Ok(out)
    }

    /// Decodes a payload written by [`Command::encode`], checking every
    /// length and count.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let mut reader = Reader { bytes };
        let version = reader.u8("version")?;
        if version != VERSION && version != VERSION_WITHOUT_PRINCIPALS {
            return Err(error(
                "version",
                format!("{version}, this build reads {VERSION_WITHOUT_PRINCIPALS} and {VERSION}"),
            ));
        }
        let kind = reader.u8("kind")?;
        let timestamp = reader.u64("timestamp")?;
        let proposer = reader.u64("proposer")?;
        let term = reader.u64("term")?;
        let parts_len = reader.u32("parts")? as usize;
        if parts_len > PARTS_MAX {
            return Err(error("parts", format!("{parts_len} parts, at most {PARTS_MAX}")));
        }
        let mut parts = Vec::with_capacity(parts_len);
        for _ in 0..parts_len {
            let (sequence, events) = (reader.u64("part.sequence")?, reader.u32("part.events")?);
            let principal = if version == VERSION {
                let len = usize::from(reader.u8("part.principal_len")?);
                if len > PRINCIPAL_BYTES_MAX {
                    return Err(error("part.principal", format!("{len} bytes, at most {PRINCIPAL_BYTES_MAX}")));
                }
                let bytes = reader.take(len, "part.principal")?;
                std::str::from_utf8(bytes).map_err(|e| error("part.principal", e.to_string()))?.to_owned()
            } else {
                String::new()
            };
            parts.push(Part { sequence, events, principal });
        }
        let events = reader.u32("events")? as usize;
        if events > BATCH_EVENTS_MAX {
            return Err(error("events", format!("{events} events, at most {BATCH_EVENTS_MAX}")));
        }
        let operation = match kind {
            KIND_LEDGERS => {
                let mut ledgers = Vec::with_capacity(events);
                for _ in 0..events {
                    let len = usize::from(reader.u16("ledger.length")?);
                    let record = reader.take(len, "ledger")?;
                    ledgers.push(decode_ledger(record).map_err(|e| error("ledger", e.to_string()))?);
                }
                Operation::CreateLedgers(ledgers)
            }
            KIND_ACCOUNTS => Operation::CreateAccounts(reader.records(events, ACCOUNT_SIZE, "account", |record| {
                decode_account(record).map_err(|e| error("account", e.to_string()))
            })?),
            KIND_TRANSFERS => {
                Operation::CreateTransfers(reader.records(events, TRANSFER_SIZE, "transfer", |record| {
                    decode_transfer(record).map_err(|e| error("transfer", e.to_string()))
                })?)
            }
            KIND_PERIODS => {
                Operation::SetPeriods(reader.records(events, PERIOD_CHANGE_SIZE, "period_change", |record| {
                    let ledger = LedgerId(u32::from_be_bytes([record[0], record[1], record[2], record[3]]));
                    let period = Period::from_code(record[4])
                        .ok_or_else(|| error("period_change.period", format!("unknown period {}", record[4])))?;
                    Ok(PeriodChange { ledger, period })
                })?)
            }
            KIND_CLOSE => Operation::Close(decode_close_step(&mut reader, events)?),
            KIND_RECONCILE if events == 1 => {
                let len = reader.u32("reconcile.length")? as usize;
                let record = reader.take(len, "reconcile")?;
                Operation::Reconcile(Box::new(
                    decode_reconcile_op(record).map_err(|e| error("reconcile", e.to_string()))?,
                ))
            }
            KIND_RECONCILE => {
                return Err(error("events", format!("a reconciliation carries one event, found {events}")))
            }
            KIND_EXPIRE if events == 0 => Operation::ExpirePending,
            KIND_EXPIRE => return Err(error("events", format!("an expiry carries no events, found {events}"))),
            other => return Err(error("kind", format!("unknown operation kind {other}"))),
        };
        if !reader.bytes.is_empty() {
            return Err(error("payload", format!("{} bytes after the last event", reader.bytes.len())));
        }
        let claimed: u64 = parts.iter().map(|part| u64::from(part.events)).sum();
        if !parts.is_empty() && claimed != events as u64 {
            return Err(error("parts", format!("parts claim {claimed} events, the entry has {events}")));
        }
        Ok(Self { timestamp, proposer, term, parts, operation })
    }
}

/// Appends a close step: its tag and ledger, then what the step carries
/// (`Begin`: the close's fields, code ranges as a count u8 and (min, max)
/// u16 pairs; `Post`: transfer records; `Finish`: the planned count u64).
fn encode_close_step(step: &CloseStep, out: &mut Vec<u8>) -> Result<(), CommandError> {
    let tag = match step {
        CloseStep::Begin(_) => CLOSE_BEGIN,
        CloseStep::Post { .. } => CLOSE_POST,
        CloseStep::Finish { .. } => CLOSE_FINISH,
        CloseStep::Abort { .. } => CLOSE_ABORT,
    };
    out.push(tag);
    out.extend_from_slice(&step.ledger().0.to_be_bytes());
    match step {
        CloseStep::Begin(close) => {
            for (field, ranges) in [("close.nominal", &close.nominal), ("close.carry", &close.carry)] {
                if ranges.len() > CLOSE_CODE_RANGES_MAX {
                    return Err(error(field, format!("{} ranges, at most {CLOSE_CODE_RANGES_MAX}", ranges.len())));
                }
            }
            encode_year_close(close, out);
        }
        CloseStep::Post { transfers, .. } => transfers.iter().for_each(|transfer| encode_transfer(transfer, out)),
        CloseStep::Finish { transfers, .. } => out.extend_from_slice(&transfers.to_be_bytes()),
        CloseStep::Abort { .. } => {}
    }
    Ok(())
}

/// Decodes a close step written by [`encode_close_step`]; `events` is the
/// entry's event count (a `Post`'s transfers, `1` otherwise).
fn decode_close_step(reader: &mut Reader<'_>, events: usize) -> Result<CloseStep, CommandError> {
    let tag = reader.u8("close.step")?;
    let ledger = LedgerId(reader.u32("close.ledger")?);
    if tag != CLOSE_POST && events != 1 {
        return Err(error("events", format!("a close step carries one event, found {events}")));
    }
    Ok(match tag {
        CLOSE_BEGIN => {
            let rest = reader.take(reader.bytes.len(), "close")?;
            let (close, _) = decode_year_close(ledger, rest).map_err(|e| error("close", e.to_string()))?;
            CloseStep::Begin(Box::new(close))
        }
        CLOSE_POST => CloseStep::Post {
            ledger,
            transfers: reader.records(events, TRANSFER_SIZE, "transfer", |record| {
                decode_transfer(record).map_err(|e| error("transfer", e.to_string()))
            })?,
        },
        CLOSE_FINISH => CloseStep::Finish { ledger, transfers: reader.u64("close.transfers")? },
        CLOSE_ABORT => CloseStep::Abort { ledger },
        other => return Err(error("close.step", format!("unknown close step {other}"))),
    })
}

fn count(value: usize, field: &'static str) -> Result<u32, CommandError> {
    u32::try_from(value).map_err(|_| error(field, format!("{value} does not fit a u32")))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], CommandError> {
        let (head, rest) = self
            .bytes
            .split_at_checked(len)
            .ok_or_else(|| error(field, format!("needs {len} bytes, {} left", self.bytes.len())))?;
        self.bytes = rest;
        Ok(head)
    }

    /// Decodes `events` records of `size` bytes each. The list is sized
    /// once (for at most as many records as the bytes left can hold): a
    /// batch of 8,189 transfers collected without a size grew by doubling,
    /// copying about a megabyte more per entry on every replica.
    fn records<T>(
        &mut self,
        events: usize,
        size: usize,
        field: &'static str,
        decode: impl Fn(&'a [u8]) -> Result<T, CommandError>,
    ) -> Result<Vec<T>, CommandError> {
        let mut records = Vec::with_capacity(events.min(self.bytes.len() / size));
        for _ in 0..events {
            records.push(decode(self.take(size, field)?)?);
        }
        Ok(records)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CommandError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, CommandError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, CommandError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CommandError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, CommandError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_ledger::{Account, AccountId, CodeRange, Ledger, LedgerId, Transfer, TransferId, YearClose};

    fn command(operation: Operation) -> Command {
        Command {
            timestamp: 42,
            proposer: 3,
            term: 2,
            parts: vec![
                Part { sequence: 7, events: 1, principal: "gangnam-payments".into() },
                Part { sequence: 8, events: 1, principal: String::new() },
            ],
            operation,
        }
    }

    #[test]
    fn every_operation_round_trips() {
        let ledger = Ledger::new(LedgerId(1), "KRW", 0, "Won");
        let account = Account { id: AccountId(5), ledger: LedgerId(1), code: 1, ..Default::default() };
        let transfer = Transfer { id: TransferId(9), amount: 10, ..Default::default() };
        for operation in [
            Operation::CreateLedgers(vec![ledger.clone(), ledger]),
            Operation::CreateAccounts(vec![account, account]),
            Operation::CreateTransfers(vec![transfer, transfer]),
            Operation::SetPeriods(vec![
                PeriodChange { ledger: LedgerId(1), period: Period::Adjustment },
                PeriodChange { ledger: LedgerId(2), period: Period::Closed },
            ]),
        ] {
            let command = command(operation);
            assert_eq!(Command::decode(&command.encode().unwrap()).unwrap(), command);
        }
        let periods =
            command(Operation::SetPeriods(vec![PeriodChange { ledger: LedgerId(1), period: Period::Closed }]));
        assert!(!crate::region::is_region_entry(&periods.encode().unwrap()), "kinds are distinct");
        let mut bytes = periods.encode().unwrap();
        *bytes.last_mut().unwrap() = 9;
        let error = Command::decode(&bytes).unwrap_err();
        assert_eq!((error.field, error.reason.as_str()), ("period_change.period", "unknown period 9"));
        let expire = Command { parts: Vec::new(), ..command(Operation::ExpirePending) };
        assert_eq!(Command::decode(&expire.encode().unwrap()).unwrap(), expire);
    }

    #[test]
    fn close_steps_round_trip() {
        let close = YearClose {
            ledger: LedgerId(2027),
            next_ledger: LedgerId(2028),
            net_position: AccountId(3),
            opening_account: AccountId(4),
            nominal: vec![CodeRange { min: 400, max: 599 }],
            carry: vec![CodeRange { min: 100, max: 299 }],
            account_offset: 1000,
            first_transfer_id: 1 << 100,
            code: 99,
        };
        let transfer = Transfer { id: TransferId(9), amount: 10, ..Default::default() };
        let ledger = LedgerId(2027);
        for step in [
            CloseStep::Begin(Box::new(close)),
            CloseStep::Post { ledger, transfers: vec![transfer, transfer] },
            CloseStep::Finish { ledger, transfers: 12 },
            CloseStep::Abort { ledger },
        ] {
            let events = match &step {
                CloseStep::Post { transfers, .. } => transfers.len() as u32,
                _ => 1,
            };
            let parts = vec![Part { sequence: 1, events, principal: "operator".into() }];
            let command = Command { parts, ..command(Operation::Close(step)) };
            let bytes = command.encode().unwrap();
            assert_eq!(Command::decode(&bytes).unwrap(), command);
            assert!(Command::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn truncated_or_padded_payloads_are_refused_naming_the_field() {
        let transfer = Transfer { id: TransferId(9), amount: 10, ..Default::default() };
        let bytes = command(Operation::CreateTransfers(vec![transfer, transfer])).encode().unwrap();
        assert_eq!(Command::decode(&bytes[..bytes.len() - 1]).unwrap_err().field, "transfer");
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(Command::decode(&padded).unwrap_err().field, "payload");
        let mut other_version = bytes;
        other_version[0] = 3;
        assert_eq!(Command::decode(&other_version).unwrap_err().field, "version");
    }

    #[test]
    fn a_version_1_entry_decodes_with_no_principals() {
        let transfer = Transfer { id: TransferId(9), amount: 10, ..Default::default() };
        let mut command = command(Operation::CreateTransfers(vec![transfer, transfer]));
        command.parts.iter_mut().for_each(|part| part.principal.clear());
        let mut bytes = command.encode().unwrap();
        // Version 2 with empty principals is version 1 plus a zero length
        // byte after each part (sequence u64 + events u32 at offset 30).
        bytes[0] = VERSION_WITHOUT_PRINCIPALS;
        bytes.remove(30 + 12);
        bytes.remove(30 + 12 + 12);
        assert_eq!(Command::decode(&bytes).unwrap(), command);
    }

    #[test]
    fn a_principal_too_long_is_refused() {
        let mut command = command(Operation::CreateTransfers(vec![Transfer::default(), Transfer::default()]));
        command.parts[0].principal = "x".repeat(PRINCIPAL_BYTES_MAX + 1);
        assert_eq!(command.encode().unwrap_err().field, "part.principal");
    }

    #[test]
    fn parts_must_account_for_every_event() {
        let transfer = Transfer { id: TransferId(9), amount: 10, ..Default::default() };
        let mut command = command(Operation::CreateTransfers(vec![transfer]));
        let bytes = command.encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap_err().field, "parts");
        command.parts.pop();
        assert!(Command::decode(&command.encode().unwrap()).is_ok());
    }
}
