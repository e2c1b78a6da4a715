//! `coffer node`'s configuration: one TOML file ([`NodeFileConfig`], see
//! `api/coffer.example.toml`), every setting of which a flag
//! ([`NodeArgs`]) overrides. Unset settings take the defaults of the
//! component they configure (`ConsensusConfig::new`,
//! `StorageConfig::default`, `ServerConfig::new`), so each default is
//! written in one place. An unknown key or a bad value is refused with the
//! file, line and key; a missing or inconsistent setting with its name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use coffer_api::server::ServerConfig;
use coffer_consensus::NodeConfig;
use serde::Deserialize;

/// The longest snippet of a file quoted in an error.
const SNIPPET_LEN_MAX: usize = 40;

/// A node's configuration file. Every field is optional in the file; the
/// first five must be set by the file or by their flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// This node's id: non-zero, unique in the cluster. Required.
    pub node_id: Option<u64>,
    /// The node's data directory (`db/` and `snapshots/` inside). Required.
    pub data_dir: Option<PathBuf>,
    /// Where the gRPC API (`coffer.v1`) listens. Required.
    pub api_listen: Option<SocketAddr>,
    /// The API address (`host:port`) clients and other nodes use to reach
    /// this node (leader hints, forwarding). Default: `api_listen`, which
    /// must then be a specific address, not `0.0.0.0`.
    pub api_advertise: Option<String>,
    /// Where the Raft peer transport listens. Required.
    pub raft_listen: Option<SocketAddr>,
    /// Where Prometheus metrics are served over HTTP (`/metrics`).
    /// Default: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// The log filter: a level (`info`) or per-crate directives
    /// (`info,coffer_consensus=debug`). Default: `info`. `--log-level`,
    /// then `COFFER_LOG`, then `RUST_LOG` take precedence.
    pub log_level: Option<String>,
    /// The voters of the cluster this node founds, the same list on every
    /// founding node; used only on a fresh store. Default: none, for a node
    /// that joins a running cluster (`coffer member add`).
    pub bootstrap: Option<Vec<u64>>,
    /// The other nodes of the cluster. Default: none.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Raft timings and bounds.
    #[serde(default)]
    pub raft: RaftSection,
    /// Group commit and queue bounds.
    #[serde(default)]
    pub batch: BatchSection,
    /// RocksDB settings.
    #[serde(default)]
    pub storage: StorageSection,
    /// API server settings.
    #[serde(default)]
    pub api: ApiSection,
    /// Disaster recovery: absent for a cluster without a second region.
    pub dr: Option<DrSection>,
    /// TLS: required, unless it says `insecure = true`.
    pub tls: Option<TlsSection>,
    /// Who may call what.
    #[serde(default)]
    pub access: AccessSection,
}

/// `[tls]`: the node's certificate authority bundle, certificate and key
/// (PEM files; reloaded when they change and on SIGHUP), or `insecure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate authorities trusted for nodes and clients.
    pub ca: Option<PathBuf>,
    /// This node's certificate (`coffer://CLUSTER/region/REGION/node/ID`).
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
    /// Plaintext, trusting every peer and client. Default: false.
    pub insecure: Option<bool>,
}

/// `[access]`: the access policy and fault injection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// The policy file (principals' roles per ledger; reloaded when it
    /// changes and on SIGHUP). Default: none, so no client holds a role.
    pub policy: Option<PathBuf>,
    /// Whether `Isolate` (fault injection for drills) is served.
    /// Default: false.
    pub fault_injection: Option<bool>,
    /// Requests one client principal may have in flight on this node.
    /// Default: 256.
    pub requests_per_principal_max: Option<usize>,
    /// Events one client principal may have in flight in write requests on
    /// this node. Default: 32,756 (four full batches).
    pub events_per_principal_max: Option<usize>,
}

/// `[dr]`: this node's region and the other one. Unset values take
/// `DrConfig::new`'s defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrSection {
    /// This region's name.
    pub region: String,
    /// The other region's name.
    pub peer_region: String,
    /// The other region's nodes' client addresses.
    pub peer_addresses: Vec<String>,
    /// The role this region starts with: "primary" or "standby" (later
    /// switchovers and failovers change it, in the region's state).
    pub role: String,
    /// "async" (default) or "sync".
    pub mode: Option<String>,
    /// The primary refuses writes while the standby lags more entries (0:
    /// no bound, the default).
    pub max_lag_entries: Option<u64>,
    /// Async mode: writes stop once an entry has waited this long for the
    /// standby's confirmation (the RPO; 0: no bound). Default: 1,000.
    pub max_lag_ms: Option<u64>,
    /// The write lease the standby grants. Default: 4,000.
    pub lease_ms: Option<u64>,
    /// The margin for clock rates. Default: 500.
    pub clock_skew_ms: Option<u64>,
    /// The primary's heartbeat on the shipping stream. Default: 250.
    pub heartbeat_ms: Option<u64>,
    /// "lease" (default) or "none" (availability over safety).
    pub fencing: Option<String>,
    /// Log entries a primary keeps past the standby's cursor for it (then
    /// the standby must be re-seeded). Default: 65,536.
    pub log_retain_entries_max: Option<u64>,
}

/// Another node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id.
    pub id: u64,
    /// Its API address (`host:port`).
    pub api: String,
    /// Its Raft transport address (`host:port`).
    pub raft: String,
}

/// `[raft]`: every field defaults to `ConsensusConfig::new`'s value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// Length of one tick. Default: 50.
    pub tick_ms: Option<u64>,
    /// Ticks without a heartbeat before a follower campaigns. Default: 20.
    pub election_ticks: Option<usize>,
    /// Ticks between a leader's heartbeats. Default: 2.
    pub heartbeat_ticks: Option<usize>,
    /// Bytes of entries per append message. Default: 1 MiB.
    pub max_size_per_msg_bytes: Option<u64>,
    /// Append messages in flight to one follower. Default: 256.
    pub max_inflight_msgs: Option<usize>,
    /// Bytes of uncommitted entries a leader accepts. Default: 256 MiB.
    pub max_uncommitted_bytes: Option<u64>,
    /// Bytes of committed entries applied per Ready. Default: 16 MiB.
    pub max_committed_bytes_per_ready: Option<u64>,
    /// Interval between a leader's expiry proposals. Default: 1,000.
    pub expiry_interval_ms: Option<u64>,
    /// Ticks a ReadIndex read waits before it is tried again. Default: 40.
    pub read_timeout_ticks: Option<usize>,
    /// Tries of a ReadIndex read. Default: 3.
    pub read_attempts_max: Option<u32>,
    /// Reads waiting at once. Default: 65,536.
    pub reads_max: Option<usize>,
    /// Applied entries kept before the log is compacted. Default: 4,096.
    pub log_gc_threshold_entries: Option<u64>,
    /// Entries kept below the compaction point. Default: 1,024.
    pub log_gc_keep_entries: Option<u64>,
    /// Seed of the election-timeout randomness. Default: the node id.
    pub seed: Option<u64>,
}

/// `[batch]`: every field defaults to `ConsensusConfig::new`'s value
/// (`requests_max`: `NodeConfig::new`'s).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Events waiting in the proposal queue. Default: 16 × 8,189.
    pub queue_events_max: Option<usize>,
    /// Proposals waiting in the proposal queue. Default: 4,096.
    pub queue_proposals_max: Option<usize>,
    /// Events packed into one entry. Default: 8,189.
    pub entry_events_max: Option<usize>,
    /// Entries proposed per round of group commit. Default: 16.
    pub entries_per_round_max: Option<usize>,
    /// Ticks a node may keep committed transfer batches unwritten, to write
    /// up to eight as one run (0: write each at once). Default: 16.
    pub apply_hold_ticks: Option<u64>,
    /// Requests waiting for the node's driver. Default: 4,096.
    pub requests_max: Option<usize>,
}

/// `[storage]`: every field defaults to `StorageConfig::default`'s value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Bytes of RocksDB's block cache. Default: 256 MiB.
    pub block_cache_bytes: Option<usize>,
    /// Accounts in the in-process account cache. Default: 65,536.
    pub account_cache_entries: Option<usize>,
    /// Bytes of one memtable per column family. Default: 64 MiB.
    pub write_buffer_bytes: Option<usize>,
    /// Bytes of all memtables together. Default: 256 MiB.
    pub memtable_total_bytes: Option<usize>,
    /// RocksDB background threads. Default: 2.
    pub background_jobs: Option<i32>,
    /// Payload bytes of the newest Raft log entries kept in memory (the
    /// newest is kept whatever its size). Default: 32 MiB.
    pub recent_log_bytes: Option<usize>,
    /// Flushes and compactions write past the page cache (`O_DIRECT`),
    /// where the file system allows it. Default: true.
    pub direct_io: Option<bool>,
}

/// `[api]`: every field defaults to `ServerConfig::new`'s value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Whether a follower forwards writes to the leader. Default: true.
    pub forward_writes: Option<bool>,
    /// The longest any request waits for the node. Default: 30,000.
    pub request_timeout_ms: Option<u64>,
    /// How long `Status` waits for each other node. Default: 1,000.
    pub status_peer_timeout_ms: Option<u64>,
}

/// `coffer node`'s flags: each overrides the file's setting.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeArgs {
    /// The configuration file (TOML; see api/coffer.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the gRPC API listens.
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// The API address others use to reach this node.
    #[arg(long, value_name = "HOST:PORT")]
    pub api_advertise: Option<String>,
    /// Where the Raft transport listens.
    #[arg(long, value_name = "ADDR")]
    pub raft_listen: Option<SocketAddr>,
    /// Where Prometheus metrics are served.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Another node, `ID=API_ADDR,RAFT_ADDR` (repeatable; replaces the
    /// file's entry for that id).
    #[arg(long = "peer", value_name = "ID=API,RAFT", value_parser = parse_peer)]
    pub peers: Vec<PeerConfig>,
    /// The founding voters, e.g. `1,2,3` (fresh store only).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub bootstrap: Option<Vec<u64>>,
    /// Length of one Raft tick.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Ticks before a follower campaigns.
    #[arg(long)]
    pub election_ticks: Option<usize>,
    /// Ticks between heartbeats.
    #[arg(long)]
    pub heartbeat_ticks: Option<usize>,
    /// Events waiting in the proposal queue.
    #[arg(long)]
    pub queue_events_max: Option<usize>,
    /// Proposals waiting in the proposal queue.
    #[arg(long)]
    pub queue_proposals_max: Option<usize>,
    /// Events packed into one entry.
    #[arg(long)]
    pub entry_events_max: Option<usize>,
    /// Entries proposed per round.
    #[arg(long)]
    pub entries_per_round_max: Option<usize>,
    /// Requests waiting for the driver.
    #[arg(long)]
    pub requests_max: Option<usize>,
    /// The longest any API request waits for the node.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// The certificate authorities trusted (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Run in plaintext, trusting every peer and client (`[tls] insecure`).
    #[arg(long)]
    pub tls_insecure: bool,
    /// The access policy file.
    #[arg(long, value_name = "FILE")]
    pub access_policy: Option<PathBuf>,
    /// Serve `Isolate` (fault injection for drills and tests).
    #[arg(long)]
    pub fault_injection: bool,
}

/// Parses `ID=API_ADDR,RAFT_ADDR`.
fn parse_peer(text: &str) -> Result<PeerConfig, String> {
    let usage = || format!("{text:?} is not ID=API_ADDR,RAFT_ADDR");
    let (id, addresses) = text.split_once('=').ok_or_else(usage)?;
    let (api, raft) = addresses.split_once(',').ok_or_else(usage)?;
    let id = id.trim().parse().map_err(|_| format!("{id:?} is not a node id"))?;
    Ok(PeerConfig { id, api: api.trim().to_owned(), raft: raft.trim().to_owned() })
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds an unknown key or a bad value.
    #[error("{path}:{line}: {message}{near}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        message: String,
        /// ` (at `key`)`, the text the error points at, if any.
        near: String,
    },
    /// A required setting is set neither in the file nor by a flag.
    #[error("{field} is not set: set it in the config file or with --{flag}")]
    Missing {
        /// The setting.
        field: &'static str,
        /// Its flag.
        flag: &'static str,
    },
    /// A setting is invalid, alone or with the others.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: String,
        /// Why.
        reason: String,
    },
}

/// The `[dr]` section as the DR runtime's settings; sets the node's
/// starting role.
fn resolve_dr(section: &DrSection, node: &mut NodeConfig) -> Result<coffer_dr::DrConfig, ConfigError> {
    use coffer_dr::{DrConfig, Fencing, Mode};
    let mut dr = DrConfig::new(section.region.clone(), section.peer_region.clone(), section.peer_addresses.clone());
    node.consensus.standby = match section.role.as_str() {
        "primary" => false,
        "standby" => true,
        other => return Err(invalid("dr.role", format!("{other:?} is not a role: primary or standby"))),
    };
    if let Some(mode) = &section.mode {
        dr.mode = Mode::parse(mode).map_err(|reason| invalid("dr.mode", reason))?;
    }
    if let Some(fencing) = &section.fencing {
        dr.fencing = Fencing::parse(fencing).map_err(|reason| invalid("dr.fencing", reason))?;
    }
    dr.max_lag_entries = section.max_lag_entries.unwrap_or(dr.max_lag_entries);
    dr.max_lag_ms = section.max_lag_ms.unwrap_or(dr.max_lag_ms);
    dr.lease_ms = section.lease_ms.unwrap_or(dr.lease_ms);
    dr.clock_skew_ms = section.clock_skew_ms.unwrap_or(dr.clock_skew_ms);
    dr.heartbeat_ms = section.heartbeat_ms.unwrap_or(dr.heartbeat_ms);
    if let Some(entries) = section.log_retain_entries_max {
        node.consensus.dr_log_retain_entries_max = entries;
    }
    // raft-rs draws election timeouts up to twice the configured one.
    let election = node.consensus.tick_ms.saturating_mul(node.consensus.election_ticks as u64);
    dr.election_timeout_ms = election.saturating_mul(2);
    dr.check().map_err(|(field, reason)| invalid(field, reason))?;
    Ok(dr)
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

/// Everything `coffer node` runs with.
#[derive(Clone, Debug)]
pub struct ResolvedConfig {
    /// The consensus node's configuration.
    pub node: NodeConfig,
    /// The API server's configuration.
    pub server: ServerConfig,
    /// Where the API listens.
    pub api_listen: SocketAddr,
    /// Where metrics are served, if they are.
    pub metrics_listen: Option<SocketAddr>,
    /// The log filter of the file, if it sets one.
    pub log_level: Option<String>,
    /// Disaster recovery, when the node is one of two regions.
    pub dr: Option<coffer_dr::DrConfig>,
    /// The TLS files; `None`: plaintext (`insecure = true`).
    pub tls: Option<coffer_security::TlsFiles>,
    /// Who may call what (the policy file is read when the node starts).
    pub access: coffer_api::access::AccessConfig,
}

impl NodeFileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            let line = text.get(..span.start).map_or(1, |before| before.matches('\n').count() + 1);
            let snippet = text.get(span).unwrap_or_default().lines().next().unwrap_or_default().trim();
            let near = match snippet {
                "" => String::new(),
                snippet if snippet.len() > SNIPPET_LEN_MAX => format!(" (at `{}…`)", truncate(snippet)),
                snippet => format!(" (at `{snippet}`)"),
            };
            let message = error.message().lines().next().unwrap_or_default().trim().to_owned();
            ConfigError::Parse { path: path.to_owned(), line, message, near }
        })
    }

    /// Applies the flags that are set over the file's settings.
    pub fn override_with(&mut self, args: &NodeArgs) {
        fn set<T: Clone>(target: &mut Option<T>, flag: &Option<T>) {
            if flag.is_some() {
                target.clone_from(flag);
            }
        }
        set(&mut self.node_id, &args.node_id);
        set(&mut self.data_dir, &args.data_dir);
        set(&mut self.api_listen, &args.api_listen);
        set(&mut self.api_advertise, &args.api_advertise);
        set(&mut self.raft_listen, &args.raft_listen);
        set(&mut self.metrics_listen, &args.metrics_listen);
        set(&mut self.bootstrap, &args.bootstrap);
        set(&mut self.raft.tick_ms, &args.tick_ms);
        set(&mut self.raft.election_ticks, &args.election_ticks);
        set(&mut self.raft.heartbeat_ticks, &args.heartbeat_ticks);
        set(&mut self.batch.queue_events_max, &args.queue_events_max);
        set(&mut self.batch.queue_proposals_max, &args.queue_proposals_max);
        set(&mut self.batch.entry_events_max, &args.entry_events_max);
        set(&mut self.batch.entries_per_round_max, &args.entries_per_round_max);
        set(&mut self.batch.requests_max, &args.requests_max);
        set(&mut self.api.request_timeout_ms, &args.request_timeout_ms);
        if args.tls_ca.is_some() || args.tls_cert.is_some() || args.tls_key.is_some() || args.tls_insecure {
            let tls = self.tls.get_or_insert_with(TlsSection::default);
            set(&mut tls.ca, &args.tls_ca);
            set(&mut tls.cert, &args.tls_cert);
            set(&mut tls.key, &args.tls_key);
            if args.tls_insecure {
                tls.insecure = Some(true);
            }
        }
        set(&mut self.access.policy, &args.access_policy);
        if args.fault_injection {
            self.access.fault_injection = Some(true);
        }
        for peer in &args.peers {
            self.peers.retain(|known| known.id != peer.id);
            self.peers.push(peer.clone());
        }
    }

    /// The node's and the API server's configurations, checked.
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        let node_id = self.node_id.ok_or(ConfigError::Missing { field: "node_id", flag: "node-id" })?;
        let data_dir = self.data_dir.clone().ok_or(ConfigError::Missing { field: "data_dir", flag: "data-dir" })?;
        let api_listen = self.api_listen.ok_or(ConfigError::Missing { field: "api_listen", flag: "api-listen" })?;
        let raft_listen = self.raft_listen.ok_or(ConfigError::Missing { field: "raft_listen", flag: "raft-listen" })?;
        if node_id == 0 {
            return Err(invalid("node_id", "0 is not a node id"));
        }
        let advertise = match &self.api_advertise {
            Some(address) => {
                check_address(address).map_err(|reason| invalid("api_advertise", reason))?;
                address.clone()
            }
            None if api_listen.ip().is_unspecified() => {
                return Err(invalid(
                    "api_listen",
                    format!("{api_listen} is not an address others can reach: set api_advertise"),
                ));
            }
            None => api_listen.to_string(),
        };
        let mut addresses = BTreeMap::from([(node_id, advertise)]);
        let mut raft_peers = BTreeMap::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let field = |name: &str| format!("peers[{i}].{name}");
            if peer.id == 0 || peer.id == node_id {
                return Err(invalid(field("id"), format!("{} is not another node's id", peer.id)));
            }
            check_address(&peer.api).map_err(|reason| invalid(field("api"), reason))?;
            check_address(&peer.raft).map_err(|reason| invalid(field("raft"), reason))?;
            if addresses.insert(peer.id, peer.api.clone()).is_some() {
                return Err(invalid(field("id"), format!("node {} is listed twice", peer.id)));
            }
            raft_peers.insert(peer.id, peer.raft.clone());
        }
        if let Some(voters) = &self.bootstrap {
            check_bootstrap(node_id, voters, &raft_peers)?;
        }
        let mut node = NodeConfig::new(node_id, data_dir);
        node.listen_addr = Some(raft_listen);
        node.peers = raft_peers;
        node.bootstrap_voters = self.bootstrap.clone();
        self.apply_sections(&mut node);
        node.consensus.raft_config(0).map_err(|error| invalid("raft", error.to_string()))?;
        check_bounds(&node)?;
        let mut server = ServerConfig::new(addresses);
        let api = &self.api;
        server.forward_writes = api.forward_writes.unwrap_or(server.forward_writes);
        server.request_timeout_ms = api.request_timeout_ms.unwrap_or(server.request_timeout_ms);
        server.status_peer_timeout_ms = api.status_peer_timeout_ms.unwrap_or(server.status_peer_timeout_ms);
        for (field, value) in [
            ("api.request_timeout_ms", server.request_timeout_ms),
            ("api.status_peer_timeout_ms", server.status_peer_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        let dr = match &self.dr {
            Some(section) => Some(resolve_dr(section, &mut node)?),
            None => None,
        };
        server.other_region = dr.as_ref().map(|dr| dr.peer_addresses.clone()).unwrap_or_default();
        let tls = resolve_tls(self.tls.as_ref())?;
        let defaults = coffer_api::access::AccessConfig::default();
        let access = coffer_api::access::AccessConfig {
            policy: self.access.policy.clone(),
            fault_injection: self.access.fault_injection.unwrap_or(false),
            peer_region: dr.as_ref().map(|dr| dr.peer_region.clone()),
            insecure: tls.is_none(),
            requests_per_principal_max: self
                .access
                .requests_per_principal_max
                .unwrap_or(defaults.requests_per_principal_max),
            events_per_principal_max: self.access.events_per_principal_max.unwrap_or(defaults.events_per_principal_max),
        };
        for (field, value) in [
            ("access.requests_per_principal_max", access.requests_per_principal_max),
            ("access.events_per_principal_max", access.events_per_principal_max),
        ] {
            if value == 0 || value > tokio::sync::Semaphore::MAX_PERMITS {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if access.events_per_principal_max < coffer_ledger::BATCH_EVENTS_MAX {
            let reason = format!("at least one full batch, {}", coffer_ledger::BATCH_EVENTS_MAX);
            return Err(invalid("access.events_per_principal_max", reason));
        }
        Ok(ResolvedConfig {
            node,
            server,
            api_listen,
            metrics_listen: self.metrics_listen,
            log_level: self.log_level.clone(),
            dr,
            tls,
            access,
        })
    }

    /// Sets every `[raft]`, `[batch]` and `[storage]` value the file gives.
    fn apply_sections(&self, node: &mut NodeConfig) {
        fn set<T: Copy>(target: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *target = value;
            }
        }
        let (raft, consensus) = (&self.raft, &mut node.consensus);
        set(&mut consensus.tick_ms, raft.tick_ms);
        set(&mut consensus.election_ticks, raft.election_ticks);
        set(&mut consensus.heartbeat_ticks, raft.heartbeat_ticks);
        set(&mut consensus.max_size_per_msg_bytes, raft.max_size_per_msg_bytes);
        set(&mut consensus.max_inflight_msgs, raft.max_inflight_msgs);
        set(&mut consensus.max_uncommitted_bytes, raft.max_uncommitted_bytes);
        set(&mut consensus.max_committed_bytes_per_ready, raft.max_committed_bytes_per_ready);
        set(&mut consensus.expiry_interval_ns, raft.expiry_interval_ms.map(|ms| ms.saturating_mul(1_000_000)));
        set(&mut consensus.read_timeout_ticks, raft.read_timeout_ticks);
        set(&mut consensus.read_attempts_max, raft.read_attempts_max);
        set(&mut consensus.reads_max, raft.reads_max);
        set(&mut consensus.log_gc_threshold_entries, raft.log_gc_threshold_entries);
        set(&mut consensus.log_gc_keep_entries, raft.log_gc_keep_entries);
        set(&mut consensus.seed, raft.seed);
        let batch = &self.batch;
        set(&mut consensus.queue_events_max, batch.queue_events_max);
        set(&mut consensus.queue_proposals_max, batch.queue_proposals_max);
        set(&mut consensus.entry_events_max, batch.entry_events_max);
        set(&mut consensus.entries_per_round_max, batch.entries_per_round_max);
        set(&mut consensus.apply_hold_ticks, batch.apply_hold_ticks);
        set(&mut node.requests_max, batch.requests_max);
        let (storage, config) = (&self.storage, &mut node.storage);
        set(&mut config.block_cache_bytes, storage.block_cache_bytes);
        set(&mut config.account_cache_entries, storage.account_cache_entries);
        set(&mut config.write_buffer_bytes, storage.write_buffer_bytes);
        set(&mut config.memtable_total_bytes, storage.memtable_total_bytes);
        set(&mut config.background_jobs, storage.background_jobs);
        set(&mut config.recent_log_bytes, storage.recent_log_bytes);
        set(&mut config.direct_io, storage.direct_io);
    }
}

/// The `[tls]` section's files, or `None` for an explicitly insecure node.
fn resolve_tls(section: Option<&TlsSection>) -> Result<Option<coffer_security::TlsFiles>, ConfigError> {
    let missing = || {
        invalid("tls", "not configured: set [tls] ca, cert and key (or --tls-ca, --tls-cert, --tls-key), or insecure = true to run in plaintext")
    };
    let section = section.ok_or_else(missing)?;
    let files = (&section.ca, &section.cert, &section.key);
    match (section.insecure.unwrap_or(false), files) {
        (true, (None, None, None)) => Ok(None),
        (true, _) => Err(invalid("tls.insecure", "insecure = true and TLS files together: choose one")),
        (false, (Some(ca), Some(cert), Some(key))) => {
            Ok(Some(coffer_security::TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }))
        }
        (false, (None, None, None)) => Err(missing()),
        (false, (ca, cert, _)) => {
            let absent = if ca.is_none() {
                "tls.ca"
            } else if cert.is_none() {
                "tls.cert"
            } else {
                "tls.key"
            };
            Err(ConfigError::Missing { field: absent, flag: absent_flag(absent) })
        }
    }
}

fn absent_flag(field: &'static str) -> &'static str {
    match field {
        "tls.ca" => "tls-ca",
        "tls.cert" => "tls-cert",
        _ => "tls-key",
    }
}

/// A founding node must be among the voters, and must know where the other
/// voters are.
fn check_bootstrap(node_id: u64, voters: &[u64], peers: &BTreeMap<u64, String>) -> Result<(), ConfigError> {
    if !voters.contains(&node_id) {
        return Err(invalid("bootstrap", format!("{voters:?} does not include this node ({node_id})")));
    }
    if let Some(unknown) = voters.iter().find(|&&voter| voter != node_id && !peers.contains_key(&voter)) {
        return Err(invalid("bootstrap", format!("node {unknown} is a voter but has no [[peers]] entry")));
    }
    Ok(())
}

/// Bounds that must be at least 1 and limits that must hold together.
fn check_bounds(node: &NodeConfig) -> Result<(), ConfigError> {
    let consensus = &node.consensus;
    let at_least_one = [
        ("raft.tick_ms", consensus.tick_ms as usize),
        ("raft.reads_max", consensus.reads_max),
        ("raft.read_attempts_max", consensus.read_attempts_max as usize),
        ("raft.read_timeout_ticks", consensus.read_timeout_ticks),
        ("raft.expiry_interval_ms", usize::from(consensus.expiry_interval_ns > 0)),
        ("batch.queue_events_max", consensus.queue_events_max),
        ("batch.queue_proposals_max", consensus.queue_proposals_max),
        ("batch.entry_events_max", consensus.entry_events_max),
        ("batch.entries_per_round_max", consensus.entries_per_round_max),
        ("batch.requests_max", node.requests_max),
        ("storage.account_cache_entries", node.storage.account_cache_entries),
        ("storage.background_jobs", usize::try_from(node.storage.background_jobs).unwrap_or(0)),
    ];
    if let Some((field, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
        return Err(invalid(*field, "must be at least 1"));
    }
    if consensus.entry_events_max > coffer_ledger::BATCH_EVENTS_MAX {
        let reason = format!("at most the ledger's batch limit, {}", coffer_ledger::BATCH_EVENTS_MAX);
        return Err(invalid("batch.entry_events_max", reason));
    }
    Ok(())
}

/// Whether `address` is `host:port`.
fn check_address(address: &str) -> Result<(), String> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{address:?} is not host:port")),
    }
}

fn truncate(text: &str) -> &str {
    let end = (0..=SNIPPET_LEN_MAX).rev().find(|&at| text.is_char_boundary(at)).unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../coffer.example.toml");

    fn parse(text: &str) -> Result<NodeFileConfig, ConfigError> {
        NodeFileConfig::parse(Path::new("node.toml"), text)
    }

    fn minimal() -> NodeFileConfig {
        NodeFileConfig {
            node_id: Some(1),
            data_dir: Some("data/node1".into()),
            api_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7101))),
            raft_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7201))),
            tls: Some(TlsSection { insecure: Some(true), ..TlsSection::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn tls_is_required_unless_insecure_is_said_and_a_missing_file_is_named() {
        let tls = |section: TlsSection| NodeFileConfig { tls: Some(section), ..minimal() }.resolve();
        let none = NodeFileConfig { tls: None, ..minimal() }.resolve().unwrap_err().to_string();
        assert!(none.starts_with("invalid tls: not configured"), "{none}");
        let files = TlsSection {
            ca: Some("ca.crt".into()),
            cert: Some("n.crt".into()),
            key: Some("n.key".into()),
            insecure: None,
        };
        let resolved = tls(files.clone()).unwrap();
        assert_eq!(resolved.tls.map(|files| files.key), Some(PathBuf::from("n.key")));
        assert!(!resolved.access.insecure);
        let no_key = tls(TlsSection { key: None, ..files.clone() }).unwrap_err().to_string();
        assert_eq!(no_key, "tls.key is not set: set it in the config file or with --tls-key");
        let both = tls(TlsSection { insecure: Some(true), ..files }).unwrap_err().to_string();
        assert!(both.starts_with("invalid tls.insecure: "), "{both}");
        assert!(minimal().resolve().unwrap().access.insecure);
    }

    #[test]
    fn the_example_config_parses_and_resolves_to_node_1_of_three() {
        let config = parse(EXAMPLE).unwrap();
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.node.consensus.node_id, 1);
        assert_eq!(resolved.node.bootstrap_voters, Some(vec![1, 2, 3]));
        assert_eq!(resolved.node.peers.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(resolved.server.addresses.len(), 3);
        assert_eq!(resolved.metrics_listen, Some(SocketAddr::from(([127, 0, 0, 1], 7301))));
        assert_eq!(resolved.node.consensus.tick_ms, 50);
        assert_eq!(resolved.tls.map(|files| files.cert), Some(PathBuf::from("/etc/coffer/tls/node1.crt")));
        assert_eq!(resolved.access.policy, Some(PathBuf::from("/etc/coffer/access.toml")));
        assert!(!resolved.access.fault_injection);
    }

    #[test]
    fn an_unknown_key_is_refused_naming_the_key_and_its_line() {
        let error = parse("node_id = 1\n\n[raft]\ntick_msx = 5\n").unwrap_err().to_string();
        assert!(error.starts_with("node.toml:4: "), "{error}");
        assert!(error.contains("tick_msx"), "{error}");
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_line() {
        let error = parse("node_id = 1\napi_listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(error.starts_with("node.toml:2: "), "{error}");
        assert!(error.contains("nowhere"), "{error}");
        let error = parse("node_id = -1\n").unwrap_err().to_string();
        assert!(error.starts_with("node.toml:1: "), "{error}");
    }

    #[test]
    fn unset_settings_take_the_components_defaults() {
        let resolved = minimal().resolve().unwrap();
        let defaults = NodeConfig::new(1, "data/node1".into());
        assert_eq!(resolved.node.consensus, defaults.consensus);
        assert_eq!(resolved.node.storage, defaults.storage);
        assert_eq!(resolved.node.bootstrap_voters, None, "a node joining a running cluster");
        assert_eq!(resolved.server, ServerConfig::new(BTreeMap::from([(1, "127.0.0.1:7101".to_owned())])));
    }

    #[test]
    fn storage_settings_of_the_file_reach_the_store() {
        let text = "node_id = 1\ndata_dir = \"d\"\napi_listen = \"127.0.0.1:7101\"\nraft_listen = \"127.0.0.1:7201\"\n\
                    [tls]\ninsecure = true\n[storage]\nrecent_log_bytes = 1024\ndirect_io = false\n";
        let storage = parse(text).unwrap().resolve().unwrap().node.storage;
        assert_eq!((storage.recent_log_bytes, storage.direct_io), (1024, false));
        assert_eq!(storage.write_buffer_bytes, coffer_storage::StorageConfig::default().write_buffer_bytes);
    }

    #[test]
    fn flags_override_the_file() {
        let mut config = parse(EXAMPLE).unwrap();
        let args = NodeArgs {
            node_id: Some(2),
            tick_ms: Some(10),
            peers: vec![parse_peer("1=127.0.0.1:7101,127.0.0.1:7201").unwrap()],
            ..Default::default()
        };
        config.override_with(&args);
        config.peers.retain(|peer| peer.id != 2);
        config.api_listen = Some(SocketAddr::from(([127, 0, 0, 1], 7102)));
        let resolved = config.resolve().unwrap();
        assert_eq!(resolved.node.consensus.node_id, 2);
        assert_eq!(resolved.node.consensus.tick_ms, 10);
        assert_eq!(resolved.server.addresses.get(&2).map(String::as_str), Some("127.0.0.1:7102"));
    }

    #[test]
    fn missing_and_inconsistent_settings_are_named() {
        let missing = NodeFileConfig { node_id: None, ..minimal() }.resolve().unwrap_err().to_string();
        assert_eq!(missing, "node_id is not set: set it in the config file or with --node-id");
        let outsider = NodeFileConfig { bootstrap: Some(vec![2, 3]), ..minimal() }.resolve().unwrap_err();
        assert!(outsider.to_string().starts_with("invalid bootstrap: "), "{outsider}");
        let unknown = NodeFileConfig { bootstrap: Some(vec![1, 2]), ..minimal() }.resolve().unwrap_err();
        assert!(unknown.to_string().contains("node 2 is a voter but has no [[peers]] entry"), "{unknown}");
        let everywhere = NodeFileConfig { api_listen: Some(SocketAddr::from(([0, 0, 0, 0], 7101))), ..minimal() };
        assert!(everywhere.resolve().unwrap_err().to_string().contains("set api_advertise"));
        let mut bad_peer = minimal();
        bad_peer.peers.push(PeerConfig { id: 2, api: "nowhere".into(), raft: "127.0.0.1:1".into() });
        assert!(bad_peer.resolve().unwrap_err().to_string().starts_with("invalid peers[0].api: "));
        let mut slow = minimal();
        slow.raft.heartbeat_ticks = Some(30);
        assert!(slow.resolve().unwrap_err().to_string().starts_with("invalid raft: "));
        let mut huge = minimal();
        huge.batch.entry_events_max = Some(10_000);
        assert!(huge.resolve().unwrap_err().to_string().starts_with("invalid batch.entry_events_max: "));
    }

    #[test]
    fn a_dr_section_resolves_and_its_mistakes_are_named() {
        let section = DrSection {
            region: "seoul".into(),
            peer_region: "busan".into(),
            peer_addresses: vec!["10.2.0.1:7101".into()],
            role: "standby".into(),
            mode: Some("sync".into()),
            log_retain_entries_max: Some(10),
            ..DrSection::default()
        };
        let resolved = NodeFileConfig { dr: Some(section.clone()), ..minimal() }.resolve().unwrap();
        assert!(resolved.node.consensus.standby);
        assert_eq!(resolved.node.consensus.dr_log_retain_entries_max, 10);
        let dr = resolved.dr.unwrap();
        assert_eq!((dr.mode, dr.election_timeout_ms), (coffer_dr::Mode::Sync, 2_000));
        let wrong = [
            (DrSection { role: "leader".into(), ..section.clone() }, "invalid dr.role: "),
            (DrSection { mode: Some("eventual".into()), ..section.clone() }, "invalid dr.mode: "),
            (DrSection { peer_addresses: vec![], ..section.clone() }, "invalid dr.peer_addresses: "),
            (DrSection { peer_region: "seoul".into(), ..section.clone() }, "invalid dr.peer_region: "),
            (DrSection { fencing: Some("maybe".into()), ..section.clone() }, "invalid dr.fencing: "),
            (DrSection { max_lag_ms: Some(10), ..section.clone() }, "invalid dr.max_lag_ms: "),
        ];
        for (section, expected) in wrong {
            let error = NodeFileConfig { dr: Some(section), ..minimal() }.resolve().unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn a_peer_flag_is_id_equals_api_comma_raft() {
        let peer = parse_peer("3=10.0.0.3:7101,10.0.0.3:7201").unwrap();
        assert_eq!(peer, PeerConfig { id: 3, api: "10.0.0.3:7101".into(), raft: "10.0.0.3:7201".into() });
        assert!(parse_peer("3=10.0.0.3:7101").is_err());
        assert!(parse_peer("x=a:1,b:2").is_err());
    }
}
