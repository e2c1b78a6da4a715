//! The sans-IO core of disaster recovery: the write lease, the standby's
//! confirmations, the RPO bound and the promotion wait, as state stepped
//! with explicit time. No clock, task or socket is reached from here: the
//! tokio shell ([`crate::Dr`]) passes its monotonic milliseconds, and the
//! deterministic simulator (`coffer-chaos dr`) passes simulated ones.
//!
//! Time is a node's own monotonic clock in milliseconds ([`Millis`]); two
//! regions' clocks may run at slightly different rates, which the
//! promotion wait covers with `clock_skew_ms`.
//!
//! The safety argument, in one place:
//! - the primary's lease counts from when it *sent* the message the standby
//!   acknowledged ([`Primary::acknowledged`]); the standby records the grant
//!   before it sends it ([`Standby::granted`]), so the lease ends, on the
//!   primary's clock, no later than `lease_ms` after the grant;
//! - the standby promotes only `lease_ms + clock_skew_ms` after its last
//!   grant, and a new standby leader also waits out what a predecessor may
//!   have granted ([`Standby::promote_wait`]);
//! - so, clocks drifting within the margin, a primary cut off from its
//!   standby stops admitting and acknowledging writes
//!   ([`Primary::admit`], [`Primary::acknowledge`]) before the standby
//!   takes over.

use std::collections::VecDeque;

use coffer_storage::RegionState;

use crate::{DrConfig, Fencing, Mode};

/// Milliseconds on one node's monotonic clock.
pub type Millis = u64;

/// A region's epoch: every promotion or demotion starts a higher one, and
/// a primary's log is only meaningful within its epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// An index in a region's Raft log (whose log is the caller's to say: the
/// primary's, for a shipping cursor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for LogIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A bug planted on purpose, for the simulator to prove its checkers catch
/// it (`coffer-chaos dr --plant NAME`). Never set outside such a run: no
/// configuration reaches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Planted {
    /// The code as it should be.
    #[default]
    None,
    /// The standby promotes without waiting for the leases it granted.
    PromoteWithoutLease,
    /// The primary admits and acknowledges writes after its lease lapsed.
    AckAfterLeaseLapse,
    /// A failback demotes the old primary without checking it diverged.
    FailbackSkipsDivergence,
}

impl Planted {
    /// Every planted bug, with its name on the command line.
    pub const ALL: [(Self, &'static str); 3] = [
        (Self::PromoteWithoutLease, "promote-without-lease"),
        (Self::AckAfterLeaseLapse, "ack-after-lease-lapse"),
        (Self::FailbackSkipsDivergence, "failback-skips-divergence"),
    ];

    /// The bug named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, known)| *known == name).map(|(bug, _)| *bug)
    }
}

/// The settings the core decides by (a subset of [`DrConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// When the primary answers a write.
    pub mode: Mode,
    /// Lease fencing, or none.
    pub fencing: Fencing,
    /// The lease each acknowledgement grants.
    pub lease_ms: Millis,
    /// The margin for clock rates the standby waits past a lease.
    pub clock_skew_ms: Millis,
    /// How long a deposed standby leader may still believe it leads.
    pub election_timeout_ms: Millis,
    /// The most entries the standby may lag (`0`: no bound).
    pub max_lag_entries: u64,
    /// Async mode: the longest an answered entry waits for the standby's
    /// confirmation (`0`: no bound).
    pub max_lag_ms: Millis,
    /// A planted bug (simulation only).
    pub planted: Planted,
}

impl Rules {
    /// The rules of `config`.
    pub fn of(config: &DrConfig) -> Self {
        Self {
            mode: config.mode,
            fencing: config.fencing,
            lease_ms: config.lease_ms,
            clock_skew_ms: config.clock_skew_ms,
            election_timeout_ms: config.election_timeout_ms,
            max_lag_entries: config.max_lag_entries,
            max_lag_ms: config.max_lag_ms,
            planted: Planted::None,
        }
    }

    /// Whether a primary in `region` needs a lease to write.
    pub fn lease_required(&self, region: RegionState) -> bool {
        self.fencing == Fencing::Lease && !region.lease_waived
    }

    /// Whether `max_lag_ms` bounds a primary in `region`: async mode with a
    /// bound and a standby (a waived lease means none follows).
    pub fn rpo_bounded(&self, region: RegionState) -> bool {
        self.mode == Mode::Async && self.max_lag_ms != 0 && !region.lease_waived
    }

    /// Whether a primary in `region` answers a write only once the standby
    /// committed it.
    pub fn waits_for_standby(&self, region: RegionState) -> bool {
        self.mode == Mode::Sync && !region.lease_waived
    }
}

/// Why the primary's leader refuses a write now (the shell names the
/// regions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateRefusal {
    /// No valid lease: it lapsed this long ago, or none was granted.
    NoLease {
        /// How long ago it lapsed (`None`: never granted).
        lapsed_ms: Option<Millis>,
    },
    /// The standby lags more than `max_lag_entries`.
    Lagging {
        /// Its lag in entries.
        lag: u64,
        /// The bound.
        max: u64,
    },
    /// An answered entry has waited longer than `max_lag_ms`.
    Behind {
        /// The oldest entry not confirmed.
        index: LogIndex,
        /// How long it has waited.
        waited_ms: Millis,
        /// The bound.
        max_ms: Millis,
    },
}

/// The primary side on its region's leader: the lease, what the standby has
/// confirmed, and the answered entries it has not.
#[derive(Clone, Debug, Default)]
pub struct Primary {
    epoch: Epoch,
    lease_until: Option<Millis>,
    durable: LogIndex,
    unconfirmed: VecDeque<(LogIndex, Millis)>,
}

impl Primary {
    /// Starts over when the region's epoch is not this one's (a new epoch is
    /// a new primary log and a new standby); whether it did.
    pub fn enter_epoch(&mut self, epoch: Epoch) -> bool {
        if self.epoch == epoch {
            return false;
        }
        *self = Self { epoch, ..Self::default() };
        true
    }

    /// Everything up to here is committed in the standby region.
    pub fn durable(&self) -> LogIndex {
        self.durable
    }

    /// Until when this node may write, if a lease was granted.
    pub fn lease_until(&self) -> Option<Millis> {
        self.lease_until
    }

    /// The standby confirmed everything through `durable`; whether that is
    /// news.
    pub fn confirmed(&mut self, durable: LogIndex) -> bool {
        if durable <= self.durable {
            return false;
        }
        self.durable = durable;
        while self.unconfirmed.front().is_some_and(|(index, _)| *index <= durable) {
            self.unconfirmed.pop_front();
        }
        true
    }

    /// The standby acknowledged a message sent at `sent_at`, granting
    /// `lease_ms` (never more than this region's own setting).
    pub fn acknowledged(&mut self, rules: &Rules, sent_at: Millis, lease_ms: Millis) {
        let until = sent_at + lease_ms.min(rules.lease_ms);
        if self.lease_until.is_none_or(|current| current < until) {
            self.lease_until = Some(until);
        }
    }

    /// Whether the lease holds at `now`.
    fn lease_check(&self, rules: &Rules, region: RegionState, now: Millis) -> Result<(), GateRefusal> {
        if !rules.lease_required(region) {
            return Ok(());
        }
        match self.lease_until {
            Some(until) if until > now => Ok(()),
            // The planted bug: a lease once granted is taken to hold forever.
            Some(_) if rules.planted == Planted::AckAfterLeaseLapse => Ok(()),
            Some(until) => Err(GateRefusal::NoLease { lapsed_ms: Some(now - until) }),
            None => Err(GateRefusal::NoLease { lapsed_ms: None }),
        }
    }

    /// Notes that entry `index` was answered (or is about to be) by `now`
    /// without the standby's confirmation.
    fn note_unconfirmed(&mut self, rules: &Rules, region: RegionState, index: LogIndex, now: Millis) {
        let noted = self.unconfirmed.back().map_or(self.durable, |&(last, _)| last.max(self.durable));
        if rules.rpo_bounded(region) && index > noted {
            self.unconfirmed.push_back((index, now));
        }
    }

    /// Whether the oldest answered entry the standby has not confirmed has
    /// waited at most `max_lag_ms`.
    fn within_rpo(&self, rules: &Rules, region: RegionState, now: Millis) -> Result<(), GateRefusal> {
        if !rules.rpo_bounded(region) {
            return Ok(());
        }
        match self.unconfirmed.front() {
            Some(&(index, at)) if now.saturating_sub(at) > rules.max_lag_ms => {
                Err(GateRefusal::Behind { index, waited_ms: now - at, max_ms: rules.max_lag_ms })
            }
            _ => Ok(()),
        }
    }

    /// Whether the leader of the primary `region`, having applied through
    /// `applied`, may take a write at `now`: it holds a lease, the standby is
    /// within `max_lag_entries` and (async) no answered entry has waited
    /// longer than `max_lag_ms`.
    pub fn admit(
        &mut self,
        rules: &Rules,
        region: RegionState,
        applied: LogIndex,
        now: Millis,
    ) -> Result<(), GateRefusal> {
        self.lease_check(rules, region, now)?;
        let lag = applied.0.saturating_sub(self.durable.0);
        if rules.max_lag_entries != 0 && lag > rules.max_lag_entries {
            return Err(GateRefusal::Lagging { lag, max: rules.max_lag_entries });
        }
        // Entries a former leader answered are not in this node's list: its
        // clock for them starts now.
        self.note_unconfirmed(rules, region, applied, now);
        self.within_rpo(rules, region, now)
    }

    /// Async mode: whether the write applied at `index` may be answered at
    /// `now`: confirmed already, or the lease still holds (an entry that
    /// committed after it lapsed is not answered: the standby may have taken
    /// over) and no answered entry has waited past `max_lag_ms`. Sync mode
    /// waits for [`Self::durable`] instead ([`Rules::waits_for_standby`]).
    pub fn acknowledge(&mut self, rules: &Rules, region: RegionState, index: LogIndex, now: Millis) -> bool {
        if self.durable >= index {
            return true;
        }
        if self.lease_check(rules, region, now).is_err() {
            return false;
        }
        self.note_unconfirmed(rules, region, index, now);
        self.within_rpo(rules, region, now).is_ok()
    }
}

/// The most messages a shipping stream keeps unacknowledged for the lease.
const UNACKED_MAX: usize = 4_096;

/// One shipping stream's messages awaiting acknowledgement, with when each
/// was sent (the lease counts from then).
#[derive(Clone, Debug, Default)]
pub struct Stream {
    seq: u64,
    unacked: VecDeque<(u64, Millis)>,
}

impl Stream {
    /// A message is sent at `now`: its sequence number.
    pub fn send(&mut self, now: Millis) -> u64 {
        self.seq += 1;
        if self.unacked.len() == UNACKED_MAX {
            self.unacked.pop_front();
        }
        self.unacked.push_back((self.seq, now));
        self.seq
    }

    /// The standby acknowledged message `seq` (and every one before): when
    /// it was sent, if this stream still knows.
    pub fn acknowledged(&mut self, seq: u64) -> Option<Millis> {
        let mut sent_at = None;
        while let Some(&(sent, at)) = self.unacked.front() {
            if sent > seq {
                break;
            }
            self.unacked.pop_front();
            if sent == seq {
                sent_at = Some(at);
            }
        }
        sent_at
    }
}

/// The standby side on each node: the leases it granted and since when it
/// leads (and so may have to honour a predecessor's grants).
#[derive(Clone, Debug)]
pub struct Standby {
    started: Millis,
    last_grant: Option<Millis>,
    leader_since: Option<Millis>,
}

impl Standby {
    /// A node that started at `now`: it may have led before a restart, so
    /// it waits as a new leader would.
    pub fn new(now: Millis) -> Self {
        Self { started: now, last_grant: None, leader_since: None }
    }

    /// The node leads its region from `now` (or stopped leading).
    pub fn leadership(&mut self, leading: bool, now: Millis) {
        self.leader_since = leading.then_some(now);
    }

    /// The node grants the primary a lease at `now` (recorded before the
    /// acknowledgement is sent).
    pub fn granted(&mut self, now: Millis) {
        self.last_grant = Some(now);
    }

    /// How long from `now` until this node may promote its region without
    /// force: every lease it granted has lapsed plus the clock margin, and
    /// so has any an earlier leader could have granted (it stepped down
    /// within an election timeout of this node's leadership). Nothing when
    /// fencing is off or the primary froze itself (a switchover).
    pub fn promote_wait(&self, rules: &Rules, source_frozen: bool, now: Millis) -> Millis {
        if rules.fencing == Fencing::None || source_frozen || rules.planted == Planted::PromoteWithoutLease {
            return 0;
        }
        let lease = rules.lease_ms + rules.clock_skew_ms;
        let granted = self.last_grant.map_or(0, |granted| (granted + lease).saturating_sub(now));
        let since = self.leader_since.unwrap_or(self.started).max(self.started);
        let inherited = (since + lease + rules.election_timeout_ms).saturating_sub(now);
        granted.max(inherited)
    }
}

/// Whether the old primary, whose last applied timestamp is
/// `last_timestamp`, may become a standby of the new primary whose state
/// began from `base_timestamp`: it may only if it applied nothing the new
/// primary lacks. `false`: it diverged and must be re-seeded.
pub fn may_demote(rules: &Rules, last_timestamp: u64, base_timestamp: u64) -> bool {
    last_timestamp == base_timestamp || rules.planted == Planted::FailbackSkipsDivergence
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_storage::RegionRole;

    fn rules(mode: Mode) -> Rules {
        Rules {
            mode,
            fencing: Fencing::Lease,
            lease_ms: 400,
            clock_skew_ms: 100,
            election_timeout_ms: 200,
            max_lag_entries: 0,
            max_lag_ms: 200,
            planted: Planted::None,
        }
    }

    fn primary_region() -> RegionState {
        RegionState { role: RegionRole::Primary, epoch: 1, ..RegionState::default() }
    }

    #[test]
    fn the_lease_counts_from_the_send_and_lapses_on_time() {
        let rules = rules(Mode::Async);
        let region = primary_region();
        let mut primary = Primary::default();
        let mut stream = Stream::default();
        assert_eq!(primary.admit(&rules, region, LogIndex(5), 0), Err(GateRefusal::NoLease { lapsed_ms: None }));
        let first = stream.send(100);
        let second = stream.send(150);
        assert_eq!(stream.acknowledged(second), Some(150));
        assert_eq!(stream.acknowledged(first), None, "an older acknowledgement is gone with the newer");
        primary.acknowledged(&rules, 150, 10_000);
        assert_eq!(primary.lease_until(), Some(550), "never longer than this region's lease");
        assert!(primary.admit(&rules, region, LogIndex(5), 549).is_ok());
        assert_eq!(primary.admit(&rules, region, LogIndex(5), 600), Err(GateRefusal::NoLease { lapsed_ms: Some(50) }));
        let planted = Rules { planted: Planted::AckAfterLeaseLapse, ..rules };
        assert!(primary.admit(&planted, region, LogIndex(5), 600).is_ok());
    }

    #[test]
    fn answered_entries_wait_at_most_max_lag_ms_for_the_standby() {
        let rules = rules(Mode::Async);
        let region = primary_region();
        let mut primary = Primary::default();
        primary.acknowledged(&rules, 0, 400);
        assert!(primary.acknowledge(&rules, region, LogIndex(3), 10));
        assert!(primary.acknowledge(&rules, region, LogIndex(4), 150));
        assert!(!primary.acknowledge(&rules, region, LogIndex(5), 211), "entry 3 has waited 201 ms");
        assert!(matches!(
            primary.admit(&rules, region, LogIndex(5), 211),
            Err(GateRefusal::Behind { index: LogIndex(3), .. })
        ));
        assert!(primary.confirmed(LogIndex(4)));
        assert!(!primary.confirmed(LogIndex(4)));
        assert!(primary.admit(&rules, region, LogIndex(5), 212).is_ok(), "entry 5 noted at 211");
        let waived = RegionState { lease_waived: true, ..region };
        assert!(primary.acknowledge(&rules, waived, LogIndex(9), 5_000), "no standby: nothing to wait for");
        assert!(primary.enter_epoch(Epoch(2)));
        assert_eq!(primary.durable(), LogIndex(0));
    }

    #[test]
    fn the_standby_waits_out_its_grants_and_its_predecessors() {
        let rules = rules(Mode::Async);
        let mut standby = Standby::new(1_000);
        assert_eq!(standby.promote_wait(&rules, false, 1_000), 700, "a restarted node waits as a new leader");
        standby.leadership(true, 1_100);
        standby.granted(1_500);
        assert_eq!(standby.promote_wait(&rules, false, 1_600), 400);
        assert_eq!(standby.promote_wait(&rules, false, 2_000), 0);
        assert_eq!(standby.promote_wait(&rules, true, 1_600), 0, "a frozen primary holds no lease to wait out");
        let planted = Rules { planted: Planted::PromoteWithoutLease, ..rules };
        assert_eq!(standby.promote_wait(&planted, false, 1_600), 0);
        assert!(may_demote(&rules, 7, 7));
        assert!(!may_demote(&rules, 8, 7));
        assert!(may_demote(&Rules { planted: Planted::FailbackSkipsDivergence, ..rules }, 8, 7));
        assert_eq!(Planted::parse("ack-after-lease-lapse"), Some(Planted::AckAfterLeaseLapse));
    }
}
