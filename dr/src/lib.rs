//! `coffer-dr`: disaster recovery between two regions.
//!
//! Each region is its own Raft group. The standby region's leader pulls the
//! primary's committed entries over a gRPC stream ([`proto`]'s `Ship`),
//! checks each one's crc, and proposes it into its own group as a region
//! entry (`coffer_consensus::region`); the same state machine applies it,
//! so at equal primary index both regions hold the same ledger. Every
//! acknowledgement the standby sends grants the primary a write lease; the
//! primary admits writes only while it holds one ([`Dr::admit`]), and the
//! standby promotes itself only once every lease it granted has expired,
//! plus a clock-skew margin: a primary cut off from the standby stops
//! writing before the standby starts. In `sync` mode the primary answers a
//! write only once the standby has committed it ([`Dr::acknowledge`]).
//!
//! The region's role, epoch and shipping cursor are Raft state: see
//! `coffer_consensus::region`. The operations (status, freeze, promote,
//! demote, digest) are [`DrApi`]'s RPCs; the `coffer dr` commands compose
//! them into switchover, failover, failback and drills.

mod config;
pub mod core;
mod primary;
pub mod reseed;
mod service;
mod standby;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use coffer_consensus::{NodeHandle, RegionRole, RegionState};
use tokio::sync::watch;

pub use config::{DrConfig, Fencing, Mode, CLOCK_SKEW_MS_DEFAULT, HEARTBEAT_MS_DEFAULT, LEASE_MS_DEFAULT};
pub use service::DrApi;

/// The generated gRPC code of `coffer.dr.v1`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("coffer.dr.v1");

    /// The encoded file descriptor set of the protocol, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("coffer_dr_v1_descriptor");
}

/// The response metadata naming the leader's client address (the key the
/// ledger API uses for the same purpose, `coffer_api::status`).
pub const LEADER_METADATA_KEY: &str = "coffer-leader";
/// The response metadata naming why a region operation or a write was
/// refused, for callers that act on the reason ([`RegionRefusal`], the
/// write gate's [`Refusal::name`]); the message is for people.
pub const REFUSAL_METADATA_KEY: &str = "coffer-refusal";

/// Why a region operation was refused, where a caller acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionRefusal {
    /// A promotion without force while the primary may still hold a write
    /// lease: retry once it lapsed.
    LeaseHeld,
    /// A demotion of a region that applied writes the new primary does not
    /// hold: it must be re-seeded.
    Diverged,
}

impl RegionRefusal {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::LeaseHeld => "lease_held",
            Self::Diverged => "diverged",
        }
    }

    /// A `FAILED_PRECONDITION` answer saying `message`, tagged with this reason.
    pub fn status(self, message: String) -> tonic::Status {
        let mut status = tonic::Status::failed_precondition(message);
        status.metadata_mut().insert(REFUSAL_METADATA_KEY, tonic::metadata::MetadataValue::from_static(self.name()));
        status
    }

    /// The reason `status` carries, if any.
    pub fn of(status: &tonic::Status) -> Option<Self> {
        let name = status.metadata().get(REFUSAL_METADATA_KEY)?.to_str().ok()?;
        [Self::LeaseHeld, Self::Diverged].into_iter().find(|reason| reason.name() == name)
    }
}
/// The most bytes of entries one shipped message carries.
pub const SHIP_BATCH_BYTES: u64 = 4 << 20;
/// The most bytes of a shipped message the standby accepts.
pub const SHIP_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Why the primary refuses or cannot yet answer a write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The primary holds no valid write lease from the standby region.
    #[error(
        "region {region} holds no write lease from the standby region {peer} ({detail}): writes wait until the \
         standby acknowledges shipping again; retry"
    )]
    NoLease {
        /// This region.
        region: String,
        /// The standby region.
        peer: String,
        /// When the last lease lapsed, or that none was granted.
        detail: String,
    },
    /// The standby region lags more than `max_lag_entries`.
    #[error(
        "the standby region {peer} lags {lag} entries, more than the bound of {max}: writes wait until it catches \
         up; retry"
    )]
    Lagging {
        /// The standby region.
        peer: String,
        /// Its lag.
        lag: u64,
        /// The bound.
        max: u64,
    },
    /// Async mode: an entry this region applied has waited longer than
    /// `max_lag_ms` for the standby region's confirmation.
    #[error(
        "the standby region {peer} has not confirmed entry {index}, applied here {waited_ms} ms ago, more than the \
         bound of {max_ms} ms (max_lag_ms): writes wait until it catches up; retry"
    )]
    Behind {
        /// The standby region.
        peer: String,
        /// The oldest entry not confirmed.
        index: u64,
        /// How long it has waited.
        waited_ms: u64,
        /// The bound.
        max_ms: u64,
    },
    /// Sync mode: the entry committed here but the standby region did not
    /// confirm it in time (or the lease lapsed before the answer).
    #[error(
        "entry {index} committed in region {region} but the standby region {peer} has not confirmed it: the \
         write's outcome is unknown; retry with the same ids"
    )]
    NotConfirmed {
        /// This region.
        region: String,
        /// The standby region.
        peer: String,
        /// The entry.
        index: u64,
    },
}

impl Refusal {
    /// Its reason on the wire, in [`REFUSAL_METADATA_KEY`]: `no_lease`,
    /// `lagging`, `behind` (`max_lag_ms`) or `not_confirmed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NoLease { .. } => "no_lease",
            Self::Lagging { .. } => "lagging",
            Self::Behind { .. } => "behind",
            Self::NotConfirmed { .. } => "not_confirmed",
        }
    }

    /// The `UNAVAILABLE` answer (retryable with the same ids) saying why,
    /// tagged with [`Self::name`] for callers that act on the reason.
    pub fn status(&self) -> tonic::Status {
        let mut status = tonic::Status::unavailable(self.to_string());
        status.metadata_mut().insert(REFUSAL_METADATA_KEY, tonic::metadata::MetadataValue::from_static(self.name()));
        status
    }
}

/// The primary side's shipping figures (on the node serving the stream).
#[derive(Debug, Default)]
struct PrimarySide {
    /// The lease, the standby's confirmations and the RPO bound.
    gate: core::Primary,
    /// Shipping streams open now.
    streams: usize,
    shipped_bytes: u64,
    /// When this node applied each index not yet durable in the standby
    /// (sampled), for the lag in seconds (a figure, decided nothing by).
    applied_at: VecDeque<(u64, Instant)>,
}

/// The standby side's state (on every node; the leader ships).
#[derive(Debug)]
struct StandbySide {
    /// The leases granted and since when this node leads.
    clock: core::Standby,
    /// The primary's applied index as last heard, and when.
    source_applied: u64,
    source_heard: Option<Instant>,
    /// A shipping session is running; `paused` asks it to end (promotion).
    shipping: bool,
    paused: bool,
    last_error: String,
    /// When the cursor last reached the primary's applied index.
    caught_up_at: Option<Instant>,
}

/// One node's disaster-recovery runtime: the write gate, the shipping
/// figures of both sides, and the standby's shipping task.
#[derive(Debug)]
pub struct Dr {
    config: DrConfig,
    /// What the core decides by.
    rules: core::Rules,
    node: NodeHandle,
    /// This region's nodes' client addresses by id (to name the leader).
    addresses: BTreeMap<u64, String>,
    primary: Mutex<PrimarySide>,
    standby: Mutex<StandbySide>,
    /// The standby region's durable index, for sync-mode waits.
    durable: watch::Sender<u64>,
    started: Instant,
    /// A drill cut the link: no shipping to or from this node.
    isolated: std::sync::atomic::AtomicBool,
    /// The node's data directory (checkpoints and re-seeds go there).
    data_dir: PathBuf,
    /// Asks the process to restart (to install a prepared re-seed).
    restart: Arc<tokio::sync::Notify>,
    /// Wakes the standby's shipping session when a promotion pauses it.
    pause_signal: tokio::sync::Notify,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Dr {
    /// Starts disaster recovery on `node`: the standby's shipping task (it
    /// ships only while this node leads a standby region) and the metrics.
    /// `addresses` is this region's client address book. Call inside a
    /// tokio runtime.
    /// `data_dir` is the node's; `restart` is notified when the node must
    /// restart to install a re-seed (see [`reseed`]).
    pub fn start(
        config: DrConfig,
        node: NodeHandle,
        addresses: BTreeMap<u64, String>,
        data_dir: PathBuf,
        restart: Arc<tokio::sync::Notify>,
    ) -> Arc<Self> {
        let (durable, _) = watch::channel(0);
        let dr = Arc::new(Self {
            rules: core::Rules::of(&config),
            config,
            node,
            addresses,
            primary: Mutex::new(PrimarySide::default()),
            standby: Mutex::new(StandbySide {
                clock: core::Standby::new(0),
                source_applied: 0,
                source_heard: None,
                shipping: false,
                paused: false,
                last_error: String::new(),
                caught_up_at: None,
            }),
            durable,
            started: Instant::now(),
            isolated: std::sync::atomic::AtomicBool::new(false),
            data_dir,
            restart,
            pause_signal: tokio::sync::Notify::new(),
        });
        tokio::spawn(standby::follow(dr.clone()));
        tokio::spawn(record_metrics(dr.clone()));
        dr
    }

    /// The settings.
    pub fn config(&self) -> &DrConfig {
        &self.config
    }

    /// The node.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// `UNAVAILABLE` unless this node leads its region, naming the leader's
    /// client address in the message and in [`LEADER_METADATA_KEY`] (the
    /// standby's shipper follows it; so do `coffer dr` and other clients).
    pub(crate) fn require_leader(&self) -> Result<(), tonic::Status> {
        let view = self.node.view();
        if view.is_leader {
            return Ok(());
        }
        let address = view.leader.and_then(|leader| self.addresses.get(&leader)).cloned();
        let mut status = tonic::Status::unavailable(format!(
            "node {} does not lead region {}{}",
            self.node.id(),
            self.config.region,
            address.as_ref().map(|address| format!("; its leader is at {address}")).unwrap_or_default()
        ));
        if let Some(value) = address.and_then(|address| address.parse().ok()) {
            status.metadata_mut().insert(LEADER_METADATA_KEY, value);
        }
        Err(status)
    }

    /// Whether a drill cut this node off the other region.
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn region(&self) -> RegionState {
        self.node.view().region
    }

    /// Whether the primary may take a write now: on the leader of the
    /// primary region, it must hold a write lease (lease fencing) and the
    /// standby must be within `max_lag_entries` and, in async mode,
    /// `max_lag_ms`. Anywhere else the node itself answers (a follower
    /// forwards, a standby refuses).
    pub fn admit(&self) -> Result<(), Refusal> {
        let view = self.node.view();
        if !view.is_leader || view.region.role != RegionRole::Primary {
            return Ok(());
        }
        let now = self.now_ms();
        let mut primary = self.primary_side(view.region.epoch);
        primary.gate.admit(&self.rules, view.region, core::LogIndex(view.applied), now).map_err(|refusal| {
            let peer = self.config.peer_region.clone();
            match refusal {
                core::GateRefusal::NoLease { lapsed_ms: Some(ms) } => self.no_lease(format!("it lapsed {ms} ms ago")),
                core::GateRefusal::NoLease { lapsed_ms: None } => self.no_lease("none granted to this node yet".into()),
                core::GateRefusal::Lagging { lag, max } => Refusal::Lagging { peer, lag, max },
                core::GateRefusal::Behind { index, waited_ms, max_ms } => {
                    Refusal::Behind { peer, index: index.0, waited_ms, max_ms }
                }
            }
        })
    }

    /// Milliseconds on this node's monotonic clock (since it started DR).
    fn now_ms(&self) -> core::Millis {
        self.started.elapsed().as_millis() as core::Millis
    }

    /// The primary side's figures, reset when the epoch changed: a new epoch
    /// is a new primary log, and a new standby relationship.
    fn primary_side(&self, epoch: u64) -> MutexGuard<'_, PrimarySide> {
        let mut primary = locked(&self.primary);
        if primary.gate.enter_epoch(core::Epoch(epoch)) {
            primary.shipped_bytes = 0;
            primary.applied_at.clear();
            self.durable.send_replace(0);
        }
        primary
    }

    /// The standby confirmed everything through `durable` (on the primary's
    /// leader): sync-mode waits end and the log may be compacted up to it.
    fn confirmed(&self, epoch: u64, durable: u64) {
        if self.primary_side(epoch).gate.confirmed(core::LogIndex(durable)) {
            self.durable.send_replace(durable);
            let _ = self.node.retain_log_from(durable + 1);
        }
    }

    fn no_lease(&self, detail: String) -> Refusal {
        Refusal::NoLease { region: self.config.region.clone(), peer: self.config.peer_region.clone(), detail }
    }

    /// Whether the write applied at `index` may be acknowledged: in sync
    /// mode once the standby has committed it (waiting up to `within`); in
    /// async mode as [`core::Primary::acknowledge`] decides.
    pub async fn acknowledge(&self, index: u64, within: Duration) -> Result<(), Refusal> {
        let region = self.region();
        if region.role != RegionRole::Primary {
            return Ok(());
        }
        let not_confirmed = || Refusal::NotConfirmed {
            region: self.config.region.clone(),
            peer: self.config.peer_region.clone(),
            index,
        };
        if self.rules.waits_for_standby(region) {
            let mut durable = self.durable.subscribe();
            let waited = tokio::time::timeout(within, durable.wait_for(|durable| *durable >= index)).await;
            return match waited {
                Ok(Ok(_)) => Ok(()),
                _ => Err(not_confirmed()),
            };
        }
        let now = self.now_ms();
        let mut primary = self.primary_side(region.epoch);
        if primary.gate.acknowledge(&self.rules, region, core::LogIndex(index), now) {
            Ok(())
        } else {
            Err(not_confirmed())
        }
    }

    /// How long until this (standby) node may promote its region without
    /// force: every lease it or an earlier leader granted has expired, plus
    /// the skew margin. Zero when the primary froze its writes (it gave them
    /// up in its own log, which this region applied) or without lease
    /// fencing.
    pub fn promote_wait(&self) -> Duration {
        let now = self.now_ms();
        let wait = locked(&self.standby).clock.promote_wait(&self.rules, self.region().source_frozen, now);
        Duration::from_millis(wait)
    }

    /// The standby leader's shipping session is asked to stop and waited
    /// for (up to `within`), before a promotion reads the state it promotes.
    async fn pause_shipping(&self, within: Duration) -> bool {
        locked(&self.standby).paused = true;
        self.pause_signal.notify_waiters();
        let deadline = Instant::now() + within;
        while locked(&self.standby).shipping {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn resume_shipping(&self) {
        locked(&self.standby).paused = false;
    }

    /// How far the standby region is behind, as this node knows it: on a
    /// standby, the primary's applied index as last heard against the
    /// cursor, and for how long it has not been caught up; on the primary's
    /// leader, [`Self::primary_lag`]; elsewhere nothing (only those two
    /// nodes ship).
    fn lag(&self) -> (u64, Duration) {
        let view = self.node.view();
        match view.region.role {
            RegionRole::Standby => {
                let standby = locked(&self.standby);
                let entries = standby.source_applied.saturating_sub(view.region.cursor);
                let behind = match (entries, standby.caught_up_at) {
                    (0, _) | (_, None) => Duration::ZERO,
                    (_, Some(at)) => at.elapsed(),
                };
                (entries, behind)
            }
            _ if view.is_leader => self.primary_lag(),
            _ => (0, Duration::ZERO),
        }
    }

    /// The primary side's lag behind this node: entries not yet committed
    /// in the standby region, and for how long the oldest of them has been
    /// applied here.
    fn primary_lag(&self) -> (u64, Duration) {
        let view = self.node.view();
        let applied = view.applied;
        let mut primary = self.primary_side(view.region.epoch);
        let durable = primary.gate.durable().0;
        while primary.applied_at.front().is_some_and(|(index, _)| *index <= durable) {
            primary.applied_at.pop_front();
        }
        let since = primary.applied_at.front().map_or(Duration::ZERO, |(_, at)| at.elapsed());
        (applied.saturating_sub(durable), since)
    }
}

/// Publishes the DR gauges once a second.
async fn record_metrics(dr: Arc<Dr>) {
    let node = dr.node.id().to_string();
    let gauge = |name: &'static str| metrics::gauge!(name, "node" => node.clone());
    let (lag_entries, lag_seconds, lease, epoch, role) = (
        gauge("coffer_dr_lag_entries"),
        gauge("coffer_dr_lag_seconds"),
        gauge("coffer_dr_lease_remaining_seconds"),
        gauge("coffer_dr_epoch"),
        gauge("coffer_dr_role"),
    );
    let shipped = metrics::gauge!("coffer_dr_shipped_bytes", "node" => node.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !dr.node.is_stopped() {
        tick.tick().await;
        let view = dr.node.view();
        epoch.set(view.region.epoch as f64);
        role.set(match view.region.role {
            RegionRole::Primary => 1.0,
            RegionRole::Standby => 2.0,
            RegionRole::Configured => 0.0,
        });
        let (entries, behind) = dr.lag();
        lag_entries.set(entries as f64);
        lag_seconds.set(behind.as_secs_f64());
        let now = dr.now_ms();
        let primary = locked(&dr.primary);
        let remaining = primary.gate.lease_until().map_or(0.0, |until| until.saturating_sub(now) as f64 / 1e3);
        lease.set(remaining);
        shipped.set(primary.shipped_bytes as f64);
    }
}

/// The crc32 of a shipped entry: its index (big-endian) then its payload.
pub fn entry_crc(index: u64, data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_be_bytes());
    hasher.update(data);
    hasher.finalize()
}

/// A region's state as the wire carries it.
pub fn region_info(region_name: &str, region: RegionState) -> proto::RegionInfo {
    proto::RegionInfo {
        region: region_name.to_owned(),
        role: role_name(region.role).to_owned(),
        epoch: region.epoch,
        frozen: region.frozen,
        cursor: region.cursor,
        source_frozen: region.source_frozen,
        primary_since: region.primary_since,
        base_timestamp: region.base_timestamp,
    }
}

/// `"primary"`, `"standby"` (or `"configured"` before the role is resolved).
pub fn role_name(role: RegionRole) -> &'static str {
    match role {
        RegionRole::Primary => "primary",
        RegionRole::Standby => "standby",
        RegionRole::Configured => "configured",
    }
}

/// The role a `RegionInfo.role` names ([`role_name`]'s inverse): the one
/// place a role read from the wire is parsed; callers compare the enum.
pub fn role_from_name(name: &str) -> Option<RegionRole> {
    [RegionRole::Primary, RegionRole::Standby, RegionRole::Configured].into_iter().find(|role| role_name(*role) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_name_reads_back_as_its_role() {
        for role in [RegionRole::Primary, RegionRole::Standby, RegionRole::Configured] {
            assert_eq!(role_from_name(role_name(role)), Some(role));
        }
        assert_eq!(role_from_name("leader"), None);
    }

    #[test]
    fn a_refusal_reason_travels_beside_its_message() {
        for reason in [RegionRefusal::LeaseHeld, RegionRefusal::Diverged] {
            let status = reason.status("for people".into());
            assert_eq!((status.code(), status.message()), (tonic::Code::FailedPrecondition, "for people"));
            assert_eq!(RegionRefusal::of(&status), Some(reason));
        }
        // The words alone say nothing to a program.
        assert_eq!(RegionRefusal::of(&tonic::Status::failed_precondition("it diverged")), None);
        let behind = Refusal::Behind { peer: "busan".into(), index: 9, waited_ms: 1_200, max_ms: 1_000 };
        let status = behind.status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("max_lag_ms"), "{}", status.message());
        assert_eq!(status.metadata().get(REFUSAL_METADATA_KEY).map(|value| value.to_str().ok()), Some(Some("behind")));
    }
}
