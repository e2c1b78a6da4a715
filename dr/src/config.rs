//! A node's disaster-recovery settings.

/// When the primary answers a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// After its own commit: the standby may miss the newest acknowledged
    /// writes if the primary region is lost (RPO = the shipping lag).
    #[default]
    Async,
    /// Only once the standby region has committed the entry too (RPO = 0).
    Sync,
}

impl Mode {
    /// `"async"` or `"sync"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Async => "async",
            Self::Sync => "sync",
        }
    }

    /// Reads `"async"` or `"sync"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "async" => Ok(Self::Async),
            "sync" => Ok(Self::Sync),
            other => Err(format!("{other:?} is not a mode: async or sync")),
        }
    }
}

/// What keeps two regions from accepting writes at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fencing {
    /// The primary writes only while it holds a lease the standby granted;
    /// the standby promotes itself only after every lease it granted has
    /// expired (plus the clock-skew margin), unless forced.
    #[default]
    Lease,
    /// No lease: the primary writes without one and the standby promotes at
    /// once. Availability over safety: a primary cut off from the standby
    /// keeps writing after the standby took over. Set it on purpose.
    None,
}

impl Fencing {
    /// `"lease"` or `"none"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lease => "lease",
            Self::None => "none",
        }
    }

    /// Reads `"lease"` or `"none"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "lease" => Ok(Self::Lease),
            "none" => Ok(Self::None),
            other => Err(format!("{other:?} is not a fencing: lease or none")),
        }
    }
}

/// The default write lease the standby grants.
pub const LEASE_MS_DEFAULT: u64 = 4_000;
/// The default margin for clocks running at different rates.
pub const CLOCK_SKEW_MS_DEFAULT: u64 = 500;
/// The default interval of the primary's heartbeats on the shipping stream.
pub const HEARTBEAT_MS_DEFAULT: u64 = 250;
/// The default bound on how long an async primary's applied entry may wait
/// for the standby region's confirmation before writes stop: the RPO.
pub const MAX_LAG_MS_DEFAULT: u64 = 1_000;

/// One node's disaster-recovery settings (the `[dr]` section). Every node
/// of a region has the same ones, but for `region`'s own address book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrConfig {
    /// This region's name (`"seoul"`).
    pub region: String,
    /// The other region's name.
    pub peer_region: String,
    /// The other region's nodes' client addresses (`host:port`).
    pub peer_addresses: Vec<String>,
    /// When the primary answers a write.
    pub mode: Mode,
    /// The primary refuses writes while the standby has not committed this
    /// many of its entries (`0`: no bound).
    pub max_lag_entries: u64,
    /// Async mode: once an entry this region applied has waited this long
    /// for the standby region's confirmation, the primary takes no write and
    /// acknowledges none it applied since, until the standby catches up; so
    /// a failover loses at most this much time of acknowledged writes (the
    /// RPO). `0`: no bound (the lease bounds it). Default
    /// [`MAX_LAG_MS_DEFAULT`].
    pub max_lag_ms: u64,
    /// The write lease the standby grants with each acknowledgement.
    pub lease_ms: u64,
    /// Margin for clock rates: the standby waits this much past a lease.
    pub clock_skew_ms: u64,
    /// How often the primary sends a heartbeat when it has nothing to ship.
    pub heartbeat_ms: u64,
    /// Lease fencing, or none.
    pub fencing: Fencing,
    /// How long a new standby leader waits for a lease an earlier leader may
    /// have granted: the region's election timeout (a deposed leader steps
    /// down within it).
    pub election_timeout_ms: u64,
    /// How connections to the other region are secured: under TLS, the
    /// server dialled must be a node of this cluster. Default: plaintext.
    pub security: coffer_security::Security,
}

impl DrConfig {
    /// The defaults for region `region` following or feeding `peer_region`
    /// at `peer_addresses`.
    pub fn new(region: String, peer_region: String, peer_addresses: Vec<String>) -> Self {
        Self {
            region,
            peer_region,
            peer_addresses,
            mode: Mode::Async,
            max_lag_entries: 0,
            max_lag_ms: MAX_LAG_MS_DEFAULT,
            lease_ms: LEASE_MS_DEFAULT,
            clock_skew_ms: CLOCK_SKEW_MS_DEFAULT,
            heartbeat_ms: HEARTBEAT_MS_DEFAULT,
            fencing: Fencing::Lease,
            election_timeout_ms: 2_000,
            security: coffer_security::Security::Insecure,
        }
    }

    /// Checks the settings; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.region.is_empty() {
            return Err(("dr.region", "must name this region".into()));
        }
        if self.peer_region.is_empty() || self.peer_region == self.region {
            return Err(("dr.peer_region", format!("must name the other region, not {:?}", self.peer_region)));
        }
        if self.peer_addresses.is_empty() {
            return Err(("dr.peer_addresses", "must list the other region's client addresses".into()));
        }
        for address in &self.peer_addresses {
            let port = address.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|port| port.parse::<u16>().ok()).is_none() {
                return Err(("dr.peer_addresses", format!("{address:?} is not host:port")));
            }
        }
        if self.lease_ms == 0 || self.heartbeat_ms == 0 {
            return Err(("dr.lease_ms", "the lease and the heartbeat must be at least 1 ms".into()));
        }
        if self.heartbeat_ms * 2 > self.lease_ms {
            return Err((
                "dr.heartbeat_ms",
                format!(
                    "{} ms: at most half the lease ({} ms), or leases lapse between heartbeats",
                    self.heartbeat_ms, self.lease_ms
                ),
            ));
        }
        if self.max_lag_ms != 0 && self.max_lag_ms < self.heartbeat_ms {
            return Err((
                "dr.max_lag_ms",
                format!(
                    "{} ms: 0 (no bound) or at least the heartbeat ({} ms), or writes stop between confirmations",
                    self.max_lag_ms, self.heartbeat_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_names_the_field_it_gets_wrong() {
        let good = DrConfig::new("seoul".into(), "busan".into(), vec!["127.0.0.1:7000".into()]);
        assert_eq!(good.check(), Ok(()));
        let same = DrConfig { peer_region: "seoul".into(), ..good.clone() };
        assert_eq!(same.check().unwrap_err().0, "dr.peer_region");
        let bad = DrConfig { peer_addresses: vec!["nohost".into()], ..good.clone() };
        assert_eq!(bad.check().unwrap_err().0, "dr.peer_addresses");
        let tight = DrConfig { max_lag_ms: 100, ..good.clone() };
        assert_eq!(tight.check().unwrap_err().0, "dr.max_lag_ms");
        assert_eq!(DrConfig { max_lag_ms: 0, ..good.clone() }.check(), Ok(()));
        let slow = DrConfig { heartbeat_ms: 3_000, ..good };
        assert_eq!(slow.check().unwrap_err().0, "dr.heartbeat_ms");
        assert_eq!(Mode::parse("sync"), Ok(Mode::Sync));
        assert!(Mode::parse("fast").is_err());
        assert_eq!(Fencing::parse("none"), Ok(Fencing::None));
    }
}
