//! Region entries: the Raft entries that carry disaster recovery.
//!
//! A region's role (primary or standby), its epoch and a standby's shipping
//! cursor are state ([`RegionState`], stored with the applied index), and
//! only these entries change it, so every node of a region agrees on them at
//! every index. The kinds:
//!
//! - [`RegionOp::Ship`]: one committed entry of the primary's log, shipped to
//!   a standby, which applies its ledger effects exactly as the primary did
//!   and advances its cursor to the entry's index.
//! - [`RegionOp::Freeze`] / [`RegionOp::Unfreeze`]: a primary stops (or
//!   resumes) accepting writes, for a switchover.
//! - [`RegionOp::Promote`]: a standby becomes the primary of a higher epoch
//!   (needing no write lease until a standby follows it, unless it keeps
//!   the lease: a switchover's promotion, whose old primary will follow).
//! - [`RegionOp::Demote`]: a primary becomes a standby of a higher epoch,
//!   following the new primary's log after `cursor`.
//! - [`RegionOp::Lease`]: a primary starts (or stops) needing a write lease
//!   from its standby; a promoted primary needs none until a standby
//!   follows it again.
//!
//! Layout (big-endian), told apart from a ledger [`Command`](crate::command)
//! by its kind byte:
//!
//! ```text
//! version u8 = 1 | kind u8 = 5 | proposer u64 | term u64 | sequence u64 | op u8 | op fields
//! Ship:    source_epoch u64 | index u64 | data_len u32 | data
//! Freeze, Unfreeze: nothing
//! Promote, PromoteKeepingLease: epoch u64
//! Demote:  epoch u64 | cursor u64
//! Lease:   required u8
//! ```

use coffer_storage::{RegionRole, RegionState, BOOTSTRAP_INDEX};

use crate::command::CommandError;

/// The version byte every entry payload starts with.
const VERSION: u8 = 2;
/// The version without a note, still read.
const VERSION_WITHOUT_NOTE: u8 = 1;
/// The longest reason a region entry carries.
pub const REASON_BYTES_MAX: usize = 1_024;
/// The kind byte of a region entry (ledger commands use 1 to 4 and 6).
pub const KIND_REGION: u8 = 5;
const OP_SHIP: u8 = 1;
const OP_FREEZE: u8 = 2;
const OP_UNFREEZE: u8 = 3;
const OP_PROMOTE: u8 = 4;
const OP_DEMOTE: u8 = 5;
const OP_LEASE: u8 = 6;
const OP_PROMOTE_KEEPING_LEASE: u8 = 7;

/// What a region entry does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionOp {
    /// An entry of the primary's log, for a standby to apply.
    Ship {
        /// The epoch of the primary that shipped it.
        source_epoch: u64,
        /// Its index in the primary's log.
        index: u64,
        /// Its payload (empty for an entry without ledger effects: a new
        /// leader's empty entry or a membership change).
        data: Vec<u8>,
    },
    /// The primary stops accepting writes.
    Freeze,
    /// The primary accepts writes again.
    Unfreeze,
    /// The standby becomes the primary of `epoch`.
    Promote {
        /// The new epoch: above the region's.
        epoch: u64,
        /// Whether its writes still need a standby's lease (a switchover:
        /// the old primary follows it, and until it does nothing is
        /// acknowledged that it could lack). Otherwise (a failover) it writes
        /// without one until a standby follows it again.
        keep_lease: bool,
    },
    /// The primary becomes a standby of `epoch`, whose primary's log it
    /// follows after `cursor`.
    Demote {
        /// The new epoch: above the region's.
        epoch: u64,
        /// The last index of the new primary's log whose state this region
        /// already holds.
        cursor: u64,
    },
    /// The primary needs (or stops needing) a write lease from a standby.
    Lease {
        /// Whether writes need a lease from now on.
        required: bool,
    },
}

impl RegionOp {
    /// A short name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ship { .. } => "ship",
            Self::Freeze => "freeze",
            Self::Unfreeze => "unfreeze",
            Self::Promote { .. } => "promote",
            Self::Demote { .. } => "demote",
            Self::Lease { .. } => "lease",
        }
    }
}

/// A decoded region entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionCommand {
    /// The node that proposed it (`0`: nobody waits for it).
    pub proposer: u64,
    /// The term the proposer led when it proposed.
    pub term: u64,
    /// The proposer's sequence number of the proposal.
    pub sequence: u64,
    /// What it does.
    pub op: RegionOp,
    /// Who asked for it and why (the audit trail records it).
    pub note: RegionNote,
}

/// Who asked for a region operation, and why: an operator's principal and
/// the reason given (a forced promotion or a waived lease needs one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionNote {
    /// The principal (at most 128 bytes; empty for shipping, which the
    /// standby's own leader proposes).
    pub principal: String,
    /// The reason (at most [`REASON_BYTES_MAX`] bytes).
    pub reason: String,
}

/// Whether an entry payload is a region entry (not a ledger command).
pub fn is_region_entry(data: &[u8]) -> bool {
    data.get(1) == Some(&KIND_REGION)
}

fn error(field: &'static str, reason: impl Into<String>) -> CommandError {
    CommandError { field, reason: reason.into() }
}

impl RegionCommand {
    /// Encodes the entry.
    pub fn encode(&self) -> Vec<u8> {
        let data_len = match &self.op {
            RegionOp::Ship { data, .. } => data.len(),
            _ => 0,
        };
        let mut out = Vec::with_capacity(48 + data_len);
        out.push(VERSION);
        out.push(KIND_REGION);
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        match &self.op {
            RegionOp::Ship { source_epoch, index, data } => {
                out.push(OP_SHIP);
                out.extend_from_slice(&source_epoch.to_be_bytes());
                out.extend_from_slice(&index.to_be_bytes());
                // A Raft entry is far below 4 GiB (the transport's message bound).
                out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(data);
            }
            RegionOp::Freeze => out.push(OP_FREEZE),
            RegionOp::Unfreeze => out.push(OP_UNFREEZE),
            RegionOp::Promote { epoch, keep_lease } => {
                out.push(if *keep_lease { OP_PROMOTE_KEEPING_LEASE } else { OP_PROMOTE });
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            RegionOp::Demote { epoch, cursor } => {
                out.push(OP_DEMOTE);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&cursor.to_be_bytes());
            }
            RegionOp::Lease { required } => {
                out.push(OP_LEASE);
                out.push(u8::from(*required));
            }
        }
        // Bounded by the proposer (`Replica::propose_region_as`).
        let principal =
            &self.note.principal.as_bytes()[..self.note.principal.len().min(crate::command::PRINCIPAL_BYTES_MAX)];
        let reason = &self.note.reason.as_bytes()[..self.note.reason.len().min(REASON_BYTES_MAX)];
        out.push(principal.len() as u8);
        out.extend_from_slice(principal);
        out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        out.extend_from_slice(reason);
        out
    }

    /// Decodes [`Self::encode`]'s form, checking every length.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let mut at = 0usize;
        let mut take = |field: &'static str, len: usize| -> Result<&[u8], CommandError> {
            let slice = bytes
                .get(at..at + len)
                .ok_or_else(|| error(field, format!("payload ends at byte {} of {}", bytes.len(), at + len)))?;
            at += len;
            Ok(slice)
        };
        let u64_of = |slice: &[u8]| u64::from_be_bytes(slice.try_into().unwrap_or([0; 8]));
        let version = take("version", 1)?[0];
        if version != VERSION && version != VERSION_WITHOUT_NOTE {
            return Err(error("version", format!("{version}, this build reads {VERSION_WITHOUT_NOTE} and {VERSION}")));
        }
        let kind = take("kind", 1)?[0];
        if kind != KIND_REGION {
            return Err(error("kind", format!("{kind} is not a region entry ({KIND_REGION})")));
        }
        let proposer = u64_of(take("proposer", 8)?);
        let term = u64_of(take("term", 8)?);
        let sequence = u64_of(take("sequence", 8)?);
        let op = match take("op", 1)?[0] {
            OP_SHIP => {
                let source_epoch = u64_of(take("source_epoch", 8)?);
                let index = u64_of(take("index", 8)?);
                let len = u32::from_be_bytes(take("data_len", 4)?.try_into().unwrap_or([0; 4])) as usize;
                let data = take("data", len)?.to_vec();
                RegionOp::Ship { source_epoch, index, data }
            }
            OP_FREEZE => RegionOp::Freeze,
            OP_UNFREEZE => RegionOp::Unfreeze,
            OP_PROMOTE => RegionOp::Promote { epoch: u64_of(take("epoch", 8)?), keep_lease: false },
            OP_PROMOTE_KEEPING_LEASE => RegionOp::Promote { epoch: u64_of(take("epoch", 8)?), keep_lease: true },
            OP_DEMOTE => {
                let epoch = u64_of(take("epoch", 8)?);
                RegionOp::Demote { epoch, cursor: u64_of(take("cursor", 8)?) }
            }
            OP_LEASE => match take("required", 1)?[0] {
                0 => RegionOp::Lease { required: false },
                1 => RegionOp::Lease { required: true },
                other => return Err(error("required", format!("{other} is not 0 or 1"))),
            },
            other => return Err(error("op", format!("{other} is not a region operation"))),
        };
        let mut note = RegionNote::default();
        if version == VERSION {
            let text = |field: &'static str, bytes: &[u8]| {
                std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| error(field, e.to_string()))
            };
            let len = usize::from(take("principal_len", 1)?[0]);
            note.principal = text("principal", take("principal", len)?)?;
            let len = usize::from(u16::from_be_bytes(take("reason_len", 2)?.try_into().unwrap_or([0; 2])));
            note.reason = text("reason", take("reason", len)?)?;
        }
        if at != bytes.len() {
            return Err(error("op", format!("{} bytes after the entry", bytes.len() - at)));
        }
        Ok(Self { proposer, term, sequence, op, note })
    }
}

/// The last index of the primary's log whose effects `region` (a standby)
/// holds, the one its shipping resumes after: its cursor, or for a standby
/// that never shipped, the bootstrap index, since every new cluster starts
/// with the empty ledger there.
pub fn shipped_through(region: RegionState) -> u64 {
    region.cursor.max(BOOTSTRAP_INDEX)
}

/// The region state `op`, in the entry at `index`, leads to from `region`
/// (whose role is resolved: never [`RegionRole::Configured`]), or why the
/// region refuses it. Pure: every node of a region decides the same. `Ship`
/// is checked here; its ledger effects are the caller's.
pub fn next_region(region: RegionState, op: &RegionOp, index: u64) -> Result<RegionState, String> {
    let mut next = region;
    match op {
        RegionOp::Ship { source_epoch, index: shipped, .. } => {
            if region.role != RegionRole::Standby {
                return Err(format!("only a standby applies shipped entries; this region is {:?}", region.role));
            }
            if *source_epoch < region.epoch {
                return Err(format!(
                    "shipped from a primary of epoch {source_epoch}, below this region's epoch {}",
                    region.epoch
                ));
            }
            if *source_epoch > region.epoch {
                if region.cursor != 0 {
                    return Err(format!(
                        "shipped from a primary of epoch {source_epoch}, but this region follows epoch {} from \
                         index {}: it must be demoted or re-seeded to follow the new primary",
                        region.epoch, region.cursor
                    ));
                }
                next.epoch = *source_epoch;
            }
            let base = shipped_through(region);
            if *shipped != base + 1 {
                return Err(format!("shipped entry {shipped} does not follow the cursor {base}"));
            }
            next.cursor = *shipped;
        }
        RegionOp::Freeze => {
            if region.role != RegionRole::Primary {
                return Err(format!("only the primary freezes its writes; this region is {:?}", region.role));
            }
            next.frozen = true;
        }
        RegionOp::Unfreeze => {
            if region.role != RegionRole::Primary {
                return Err(format!("only the primary unfreezes its writes; this region is {:?}", region.role));
            }
            next.frozen = false;
        }
        RegionOp::Promote { epoch, keep_lease } => {
            if region.role != RegionRole::Standby {
                return Err(format!("only a standby is promoted; this region is {:?}", region.role));
            }
            if *epoch <= region.epoch {
                return Err(format!("epoch {epoch} is not above the region's epoch {}", region.epoch));
            }
            next = RegionState {
                epoch: *epoch,
                role: RegionRole::Primary,
                frozen: false,
                source_frozen: false,
                lease_waived: !keep_lease,
                primary_since: index,
                ..region
            };
        }
        RegionOp::Demote { epoch, cursor } => {
            if region.role != RegionRole::Primary {
                return Err(format!("only a primary is demoted; this region is {:?}", region.role));
            }
            if *epoch <= region.epoch {
                return Err(format!("epoch {epoch} is not above the region's epoch {}", region.epoch));
            }
            next = RegionState {
                epoch: *epoch,
                role: RegionRole::Standby,
                frozen: false,
                cursor: *cursor,
                source_frozen: false,
                lease_waived: false,
                primary_since: 0,
                base_timestamp: 0,
            };
        }
        RegionOp::Lease { required } => {
            if region.role != RegionRole::Primary {
                return Err(format!("only a primary holds write leases; this region is {:?}", region.role));
            }
            next.lease_waived = !required;
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standby(epoch: u64, cursor: u64) -> RegionState {
        RegionState { epoch, role: RegionRole::Standby, cursor, ..RegionState::default() }
    }

    #[test]
    fn every_op_round_trips_and_truncations_are_refused() {
        let ops = [
            RegionOp::Ship { source_epoch: 3, index: 9, data: vec![1, 2, 3] },
            RegionOp::Freeze,
            RegionOp::Unfreeze,
            RegionOp::Promote { epoch: 4, keep_lease: false },
            RegionOp::Promote { epoch: 4, keep_lease: true },
            RegionOp::Demote { epoch: 5, cursor: 77 },
            RegionOp::Lease { required: true },
            RegionOp::Lease { required: false },
        ];
        for op in ops {
            let note = RegionNote { principal: "treasury-ops".into(), reason: "seoul is down".into() };
            let command = RegionCommand { proposer: 2, term: 7, sequence: 11, op, note };
            let bytes = command.encode();
            assert!(is_region_entry(&bytes));
            assert_eq!(RegionCommand::decode(&bytes).unwrap(), command);
            for cut in 0..bytes.len() {
                assert!(RegionCommand::decode(&bytes[..cut]).is_err(), "{cut} bytes of {:?}", command.op);
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(RegionCommand::decode(&longer).unwrap_err().to_string().contains("after the entry"));
        }
    }

    #[test]
    fn shipping_advances_the_cursor_one_entry_at_a_time() {
        let ship = |index| RegionOp::Ship { source_epoch: 1, index, data: vec![] };
        let next = next_region(standby(1, 4), &ship(5), 1).unwrap();
        assert_eq!(next.cursor, 5);
        assert!(next_region(next, &ship(5), 2).unwrap_err().contains("does not follow the cursor 5"));
        assert!(next_region(next, &ship(7), 2).is_err());
        let primary = RegionState { role: RegionRole::Primary, ..next };
        assert!(next_region(primary, &ship(6), 2).unwrap_err().contains("only a standby"));
    }

    #[test]
    fn epochs_only_rise_and_a_following_standby_does_not_jump_epochs() {
        // A standby that never shipped starts after the bootstrap index (1).
        let stale = RegionOp::Ship { source_epoch: 1, index: 2, data: vec![] };
        assert!(next_region(standby(2, 0), &stale, 1).unwrap_err().contains("below this region's epoch 2"));
        let newer = RegionOp::Ship { source_epoch: 3, index: 2, data: vec![] };
        assert_eq!(next_region(standby(2, 0), &newer, 1).unwrap().epoch, 3);
        let first = RegionOp::Ship { source_epoch: 3, index: 1, data: vec![] };
        assert!(next_region(standby(3, 0), &first, 1).unwrap_err().contains("does not follow the cursor 1"));
        let newer = RegionOp::Ship { source_epoch: 3, index: 9, data: vec![] };
        assert!(next_region(standby(2, 8), &newer, 1).unwrap_err().contains("demoted or re-seeded"));
        assert!(next_region(standby(2, 8), &RegionOp::Promote { epoch: 2, keep_lease: false }, 20).is_err());
        let switched = next_region(standby(2, 8), &RegionOp::Promote { epoch: 3, keep_lease: true }, 20).unwrap();
        assert!(!switched.lease_waived, "a switchover's new primary writes under its follower's lease");
        let promoted = next_region(standby(2, 8), &RegionOp::Promote { epoch: 3, keep_lease: false }, 20).unwrap();
        assert!(promoted.lease_waived, "a promoted primary has no standby yet");
        assert_eq!(
            (promoted.role, promoted.epoch, promoted.cursor, promoted.primary_since),
            (RegionRole::Primary, 3, 8, 20)
        );
        let demoted = next_region(promoted, &RegionOp::Demote { epoch: 4, cursor: 12 }, 21).unwrap();
        assert_eq!(demoted, standby(4, 12));
        assert!(next_region(demoted, &RegionOp::Freeze, 22).is_err());
    }
}
