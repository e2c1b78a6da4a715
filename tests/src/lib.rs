//! `coffer-tests`: end-to-end tests that start real `coffer` processes on
//! loopback and drive them through the public API (the Rust client, raw
//! gRPC and the `coffer` command line).
//!
//! This library is the harness the tests in `tests/tests/` share:
//! [`Cluster`] starts `coffer node` processes with their own data
//! directories and ports, and can kill (`SIGKILL`), terminate (`SIGTERM`),
//! pause (`SIGSTOP`), resume and restart any of them; [`coffer`] runs other
//! subcommands (`verify`). Every process is killed when its [`Cluster`] is
//! dropped, and a failing test prints the tail of every node's log.
//! [`dev::DevCluster`] runs `coffer dev` as a newcomer does.
//!
//! [`nemesis`] is the real-process nemesis: a bank workload against a
//! cluster whose Raft links run through fault-injecting proxies, while
//! nodes are killed, paused, partitioned and have their files corrupted;
//! the history is then checked with `coffer-chaos`'s checkers.
//!
//! The binary is `$COFFER_BIN` or, by default, the `coffer` executable
//! next to the test's own `deps/` directory (the one `cargo test
//! --workspace` builds).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use coffer_api::client::{Client, ClientConfig, NodeReport, Role};

pub mod dev;
pub mod nemesis;
pub mod pki;

/// How long a cluster may take to elect a leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long a node may take to stop after `SIGTERM` before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(15);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 30;

/// One multi-process cluster at a time: the machine these tests run on has
/// two cores, and several clusters electing leaders at once would turn
/// election timeouts into test flakes.
static CLUSTER_SLOT: Mutex<()> = Mutex::new(());

/// The `coffer` executable under test.
pub fn coffer_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COFFER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let target_profile = exe.parent().and_then(Path::parent).expect("tests run from <target>/<profile>/deps");
    let binary = target_profile.join("coffer");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (make test does)",
        binary.display()
    );
    binary
}

/// Runs `coffer <args>` to completion and returns its output; client
/// commands present [`pki::ADMIN`]'s certificate.
pub fn coffer(args: &[&str]) -> Output {
    coffer_as(pki::ADMIN, args)
}

/// Runs `coffer <args>` presenting client principal `principal`'s
/// certificate.
pub fn coffer_as(principal: &str, args: &[&str]) -> Output {
    let files = pki::pki().client(principal);
    Command::new(coffer_binary())
        .args(args)
        .env("COFFER_CA", files.ca)
        .env("COFFER_CERT", files.cert)
        .env("COFFER_KEY", files.key)
        .output()
        .expect("the coffer binary runs")
}

/// Free loopback ports, all held until every one is chosen (so no two are
/// the same), then released for the nodes to bind.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    listeners.iter().map(|listener| listener.local_addr().expect("a bound address").port()).collect()
}

/// Where one node listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddresses {
    /// The node's id.
    pub id: u64,
    /// Its client API (`host:port`).
    pub api: String,
    /// Its Raft transport.
    pub raft: String,
    /// Its Prometheus metrics endpoint.
    pub metrics: String,
}

impl NodeAddresses {
    /// Free loopback addresses for node `id`.
    pub fn allocate(id: u64) -> Self {
        Self::allocate_all([id]).remove(0)
    }

    /// Free loopback addresses for nodes `ids`, all chosen while every one
    /// is held: no two nodes get the same port (allocating them one node at
    /// a time can hand a port just released to the next node).
    pub fn allocate_all(ids: impl IntoIterator<Item = u64>) -> Vec<Self> {
        let ids: Vec<u64> = ids.into_iter().collect();
        let ports = free_ports(3 * ids.len());
        let at = |port: u16| format!("127.0.0.1:{port}");
        ids.iter()
            .zip(ports.chunks(3))
            .map(|(&id, ports)| Self { id, api: at(ports[0]), raft: at(ports[1]), metrics: at(ports[2]) })
            .collect()
    }
}

/// One `coffer node` process (running or not).
#[derive(Debug)]
pub struct NodeProcess {
    /// Where it listens.
    pub addresses: NodeAddresses,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file (stdout and stderr, appended across restarts).
    pub log: PathBuf,
    /// The other nodes it knows of when it starts.
    peers: Vec<NodeAddresses>,
    /// The founding voters, for a founding node.
    bootstrap: Option<Vec<u64>>,
    /// Its configuration file (`--config`), if it has one.
    config: Option<PathBuf>,
    /// Its region (its certificate names it).
    region: String,
    /// The TLS files it presents (issued by the tests' authority unless a
    /// test gives it others).
    pub tls: coffer_security::TlsFiles,
    child: Option<Child>,
}

impl NodeProcess {
    /// The command line that starts it.
    fn command(&self) -> Command {
        let id = self.addresses.id.to_string();
        let data_dir = self.data_dir.display().to_string();
        let mut command = Command::new(coffer_binary());
        command.arg("node");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command.args(["--node-id", &id, "--data-dir", &data_dir]);
        command.args(["--api-listen", &self.addresses.api]);
        command.args(["--raft-listen", &self.addresses.raft]);
        command.args(["--metrics-listen", &self.addresses.metrics]);
        for peer in &self.peers {
            command.args(["--peer", &format!("{}={},{}", peer.id, peer.api, peer.raft)]);
        }
        if let Some(voters) = &self.bootstrap {
            let voters: Vec<String> = voters.iter().map(u64::to_string).collect();
            command.args(["--bootstrap", &voters.join(",")]);
        }
        command.arg("--tls-ca").arg(&self.tls.ca).arg("--tls-cert").arg(&self.tls.cert);
        command.arg("--tls-key").arg(&self.tls.key).arg("--access-policy").arg(pki::pki().policy());
        command.arg("--fault-injection");
        command.env("COFFER_LOG", "info");
        command
    }

    /// Starts the process (it must not be running).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.addresses.id);
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("the node's log file opens");
        let log_err = log.try_clone().expect("the log file handle clones");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("coffer node starts");
        self.child = Some(child);
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Whether the process is running (started and not yet reaped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().map(|status| status.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// How the process ended, if it was started and has exited by itself
    /// (it is then forgotten, so [`NodeProcess::start`] may run it again).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` (a name: `KILL`, `TERM`, `STOP`, `CONT`) through the
    /// `kill` command: the workspace forbids `unsafe`, which `kill(2)` needs.
    fn signal(&self, signal: &str) {
        let id = self.addresses.id;
        let child = self.child.as_ref().unwrap_or_else(|| panic!("node {id} is not running"));
        let sent = Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status();
        assert!(sent.is_ok_and(|status| status.success()), "SIG{signal} to node {id} failed");
    }

    /// `kill -9`: the process dies at once, wherever it was.
    pub fn kill(&mut self) {
        if self.is_running() {
            self.signal("KILL");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// `SIGTERM`, then waits for a clean exit; returns its status (a node
    /// that does not stop within [`STOP_WAIT`] is killed and the test fails).
    pub fn terminate(&mut self) -> ExitStatus {
        let id = self.addresses.id;
        self.signal("TERM");
        let mut child = self.child.take().expect("signalled, so running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("the child can be waited for") {
                return status;
            }
            if started.elapsed() > STOP_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} did not stop within {STOP_WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SIGSTOP`: the process freezes (a stalled machine).
    pub fn pause(&mut self) {
        self.signal("STOP");
    }

    /// `SIGCONT`: a paused process goes on.
    pub fn resume(&mut self) {
        self.signal("CONT");
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> Vec<String> {
        let Ok(file) = File::open(&self.log) else {
            return Vec::new();
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].to_vec()
    }

    /// A client of this node alone (its reads are served here).
    pub fn client(&self) -> Client {
        client_of(vec![self.addresses.api.clone()])
    }
}

/// The client defaults for `addresses`, presenting [`pki::ADMIN`]'s
/// certificate.
pub fn client_config(addresses: Vec<String>) -> ClientConfig {
    ClientConfig { security: pki::admin(), ..ClientConfig::new(addresses) }
}

/// A client of these addresses with test-friendly bounds.
pub fn client_of(addresses: Vec<String>) -> Client {
    client_with(addresses, pki::admin())
}

/// A client of these addresses with test-friendly bounds, secured by
/// `security`.
pub fn client_with(addresses: Vec<String>, security: coffer_security::Security) -> Client {
    let mut config = ClientConfig { security, ..ClientConfig::new(addresses) };
    config.deadline_ms = 20_000;
    config.attempts_max = 200;
    Client::new(config).expect("a valid client configuration")
}

/// A client of one node that gives up quickly (for polling).
pub fn quick_client(address: &str) -> Client {
    quick_client_with(address, pki::admin())
}

/// A client of one node that gives up quickly, secured by `security`.
pub fn quick_client_with(address: &str, security: coffer_security::Security) -> Client {
    let mut config = ClientConfig { security, ..ClientConfig::new(vec![address.to_owned()]) };
    config.deadline_ms = 2_000;
    config.attempts_max = 2;
    Client::new(config).expect("a valid client configuration")
}

/// How to start a cluster, beyond the defaults [`Cluster::start`] uses.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// The Raft address node `from` is given for node `to`, by
    /// `(from, to)`; a missing pair is `to`'s own Raft address. The
    /// nemesis points these at fault-injecting proxies.
    pub raft_routes: BTreeMap<(u64, u64), String>,
    /// TOML every node reads as its configuration file (`--config`), for
    /// settings that have no flag; the harness's flags still take
    /// precedence. `None`: no file.
    pub config_toml: Option<String>,
}

/// A cluster of `coffer node` processes on loopback, in a temporary
/// directory. Dropping it kills every node.
pub struct Cluster {
    /// The nodes by id.
    pub nodes: BTreeMap<u64, NodeProcess>,
    dir: tempfile::TempDir,
    /// The slot, held by the first cluster of a pair of regions.
    _slot: Option<MutexGuard<'static, ()>>,
}

impl Cluster {
    /// Starts `size` founding nodes (ids 1..=size) and waits for a leader.
    pub async fn start(size: u64) -> Self {
        Self::start_with(Self::founders(size), ClusterOptions::default()).await
    }

    /// Free addresses for `size` founding nodes (ids 1..=size), for
    /// [`Cluster::start_with`].
    pub fn founders(size: u64) -> Vec<NodeAddresses> {
        NodeAddresses::allocate_all(1..=size)
    }

    /// Starts `founders` as the founding voters, with `options`, and waits
    /// for a leader.
    pub async fn start_with(founders: Vec<NodeAddresses>, options: ClusterOptions) -> Self {
        let slot = CLUSTER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
        Self::launch_in(coffer_security::DEFAULT_REGION, founders, options, Some(slot)).await
    }

    /// Two regions of `size` nodes each on loopback: the primary (ids
    /// 1..=size, region "seoul") and the disaster-recovery standby (ids
    /// 11.., region "busan"), each naming the other in its `[dr]` section,
    /// which also gets `dr_settings` (TOML lines such as `mode = "sync"`).
    /// Waits for a leader in each.
    pub async fn start_regions(size: u64, dr_settings: &str) -> (Self, Self) {
        let slot = CLUSTER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
        let mut primary = NodeAddresses::allocate_all((1..=size).chain(11..11 + size));
        let standby = primary.split_off(size as usize);
        let section = |region: &str, peer: &str, peers: &[NodeAddresses], role: &str| {
            let addresses: Vec<String> = peers.iter().map(|node| format!("{:?}", node.api)).collect();
            let toml = format!(
                "[dr]\nregion = {region:?}\npeer_region = {peer:?}\npeer_addresses = [{}]\nrole = {role:?}\n{dr_settings}\n",
                addresses.join(", ")
            );
            ClusterOptions { config_toml: Some(toml), ..ClusterOptions::default() }
        };
        let primary_options = section("seoul", "busan", &standby, "primary");
        let standby_options = section("busan", "seoul", &primary, "standby");
        let primary = Self::launch_in("seoul", primary, primary_options, Some(slot)).await;
        let standby = Self::launch_in("busan", standby, standby_options, None).await;
        (primary, standby)
    }

    async fn launch_in(
        region: &str,
        founders: Vec<NodeAddresses>,
        options: ClusterOptions,
        slot: Option<MutexGuard<'static, ()>>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let voters: Vec<u64> = founders.iter().map(|founder| founder.id).collect();
        let config = options.config_toml.as_ref().map(|toml| {
            let path = dir.path().join("node.toml");
            std::fs::write(&path, toml).expect("the nodes' configuration file is written");
            path
        });
        let mut nodes = BTreeMap::new();
        for addresses in &founders {
            let peers = founders
                .iter()
                .filter(|peer| peer.id != addresses.id)
                .map(|peer| match options.raft_routes.get(&(addresses.id, peer.id)) {
                    Some(route) => NodeAddresses { raft: route.clone(), ..peer.clone() },
                    None => peer.clone(),
                })
                .collect();
            let mut node = Self::process(dir.path(), region, addresses.clone(), peers, Some(voters.clone()));
            node.config.clone_from(&config);
            nodes.insert(addresses.id, node);
        }
        let mut cluster = Self { nodes, dir, _slot: slot };
        for node in cluster.nodes.values_mut() {
            node.start();
        }
        cluster.wait_for_leader(&[]).await;
        cluster
    }

    fn process(
        dir: &Path,
        region: &str,
        addresses: NodeAddresses,
        peers: Vec<NodeAddresses>,
        bootstrap: Option<Vec<u64>>,
    ) -> NodeProcess {
        let data_dir = dir.join(format!("node-{}", addresses.id));
        let log = dir.join(format!("node-{}.log", addresses.id));
        let tls = pki::pki().node(region, addresses.id);
        let region = region.to_owned();
        NodeProcess { addresses, data_dir, log, peers, bootstrap, config: None, region, tls, child: None }
    }

    /// The cluster's region (its founders all run in one).
    fn region(&self) -> String {
        self.nodes
            .values()
            .next()
            .map_or_else(|| coffer_security::DEFAULT_REGION.to_owned(), |node| node.region.clone())
    }

    /// Starts a new node `id` that knows every current node and founds
    /// nothing (it joins once a leader adds it).
    pub fn spawn_joining(&mut self, id: u64) -> NodeAddresses {
        let tls = pki::pki().node(&self.region(), id);
        self.spawn_joining_with(id, tls)
    }

    /// Like [`Cluster::spawn_joining`], the node presenting `tls`.
    pub fn spawn_joining_with(&mut self, id: u64, tls: coffer_security::TlsFiles) -> NodeAddresses {
        let addresses = NodeAddresses::allocate(id);
        let peers = self.nodes.values().map(|node| node.addresses.clone()).collect();
        let mut node = Self::process(self.dir.path(), &self.region(), addresses.clone(), peers, None);
        node.tls = tls;
        node.start();
        self.nodes.insert(id, node);
        addresses
    }

    /// The node `id`.
    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    /// Every node's API address.
    pub fn api_addresses(&self) -> Vec<String> {
        self.nodes.values().map(|node| node.addresses.api.clone()).collect()
    }

    /// A leader-following client of every node.
    pub fn client(&self) -> Client {
        client_of(self.api_addresses())
    }

    /// Waits until a node other than those in `excluded` reports itself
    /// leader; its id.
    pub async fn wait_for_leader(&self, excluded: &[u64]) -> u64 {
        let candidates: Vec<(u64, String)> = self
            .nodes
            .values()
            .filter(|node| !excluded.contains(&node.addresses.id))
            .map(|node| (node.addresses.id, node.addresses.api.clone()))
            .collect();
        let started = Instant::now();
        while started.elapsed() < LEADER_WAIT {
            for (id, address) in &candidates {
                if let Ok(reports) = quick_client(address).status().await {
                    if reports.first().is_some_and(|own| own.node_id == *id && own.role == Some(Role::Leader)) {
                        return *id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader among {candidates:?} within {LEADER_WAIT:?}");
    }

    /// The status every node reports of itself (`None`: it did not answer).
    pub async fn own_reports(&self) -> BTreeMap<u64, Option<NodeReport>> {
        let mut reports = BTreeMap::new();
        for node in self.nodes.values() {
            let own =
                quick_client(&node.addresses.api).status().await.ok().and_then(|reports| reports.into_iter().next());
            reports.insert(node.addresses.id, own);
        }
        reports
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, within: Duration) {
        let node = self.nodes.get(&id).unwrap_or_else(|| panic!("no node {id}"));
        let client = quick_client(&node.addresses.api);
        let started = Instant::now();
        let mut seen = 0;
        while started.elapsed() < within {
            if let Ok(reports) = client.status().await {
                seen = reports.first().map(|own| own.applied_index).unwrap_or_default();
                if seen >= index {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {id} applied only up to {seen}, not {index}, within {within:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for node in self.nodes.values_mut() {
            if node.is_running() {
                // A paused node must be resumed to die of anything but SIGKILL;
                // SIGKILL works either way.
                node.kill();
            }
            if failing {
                eprintln!("---- node {} log ({}) ----", node.addresses.id, node.log.display());
                for line in node.log_tail() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// A gRPC channel to `address` presenting [`pki::ADMIN`]'s certificate,
/// for raw calls the Rust client does not make.
pub async fn channel(address: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    channel_as(address, &pki::admin()).await
}

/// A gRPC channel to `address` secured by `security`.
pub async fn channel_as(
    address: &str,
    security: &coffer_security::Security,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = coffer_security::tls::endpoint(address, Duration::from_secs(2))
        .unwrap_or_else(|reason| panic!("a test address: {reason}"));
    security.connect(endpoint, coffer_security::Expect::Any).await
}
