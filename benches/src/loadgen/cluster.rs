//! The fresh local cluster of a run: `coffer dev --data-dir <temporary
//! directory> --base-port <free> --no-sample` as a child process, whose
//! three `coffer node` children are found through `/proc` (for their
//! memory and CPU). Stopping sends the dev process SIGTERM (it stops its
//! nodes in order) and then makes sure no node is left: a node still
//! running after the dev process has gone is killed. Dropping a
//! [`LocalCluster`] that was not stopped stops it, so an error, a panic or
//! an interrupted run leaves nothing behind.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_api::client::{Client, Role};
use tempfile::TempDir;

use super::error::BenchError;
use super::process;

/// Nodes `coffer dev` runs.
pub const NODES: usize = 3;
/// Node `i` listens on `base + i` (API), `base + 100 + i` (Raft) and
/// `base + 200 + i` (metrics): the ports `coffer dev` takes.
const PORT_OFFSETS: [u16; 9] = [1, 2, 3, 101, 102, 103, 201, 202, 203];
/// Base ports are tried in `BASE_PORT_FIRST..BASE_PORT_FIRST + BASE_PORT_SPAN`.
const BASE_PORT_FIRST: u16 = 20_000;
const BASE_PORT_SPAN: u16 = 30_000;
/// Base ports tried before giving up.
const BASE_PORT_TRIES: u32 = 64;
/// How long the cluster may take to elect a leader.
pub const READY_WAIT_MS: u64 = 60_000;
/// How often readiness is polled.
const POLL_MS: u64 = 100;
/// How long `coffer dev` may take to write the cluster's certificates.
const TLS_WAIT_MS: u64 = 30_000;
/// How long the dev process may take to stop its nodes after SIGTERM.
pub const STOP_WAIT_MS: u64 = 30_000;

/// One node process of the local cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeProcess {
    /// The node's id.
    pub node: u16,
    /// Its process id.
    pub pid: u32,
}

/// A running local cluster (see the module docs).
#[derive(Debug)]
pub struct LocalCluster {
    dev: Child,
    dir: Option<TempDir>,
    log: PathBuf,
    addresses: Vec<String>,
    nodes: Vec<NodeProcess>,
    stopped: bool,
    insecure: bool,
}

impl LocalCluster {
    /// Starts `coffer dev` from `coffer` on free ports in a new temporary directory.
    /// `node_toml` is added to every node's configuration (`coffer dev --node-toml`).
    pub fn start(coffer: &Path, node_toml: Option<&Path>, insecure: bool) -> Result<Self, BenchError> {
        if !coffer.is_file() {
            return Err(BenchError::CofferMissing { path: coffer.to_owned() });
        }
        let dir = tempfile::Builder::new()
            .prefix("coffer-bench-")
            .tempdir()
            .map_err(|error| BenchError::io(std::env::temp_dir(), error))?;
        let log = dir.path().join("dev.log");
        let output = File::create(&log).map_err(|error| BenchError::io(&log, error))?;
        let output_err = output.try_clone().map_err(|error| BenchError::io(&log, error))?;
        let base = free_base_port()?;
        let data_dir = dir.path().join("cluster");
        let mut dev = Command::new(coffer);
        dev.arg("dev");
        if let Some(toml) = node_toml {
            dev.arg("--node-toml").arg(toml);
        }
        if insecure {
            dev.arg("--insecure");
        }
        let dev = dev
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--no-sample")
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(output_err))
            .spawn()
            .map_err(|error| BenchError::io(coffer, error))?;
        let addresses = PORT_OFFSETS[..NODES].iter().map(|offset| format!("127.0.0.1:{}", base + offset)).collect();
        Ok(Self { dev, dir: Some(dir), log, addresses, nodes: Vec::new(), stopped: false, insecure })
    }

    /// Where `coffer dev` wrote the cluster's certificates (`None`:
    /// plaintext), once it has: it writes them before it starts the nodes,
    /// the access policy last.
    pub fn tls_dir(&self) -> Result<Option<PathBuf>, BenchError> {
        let Some(dir) = self.dir.as_ref().filter(|_| !self.insecure) else {
            return Ok(None);
        };
        let tls = dir.path().join("cluster").join("tls");
        let started = Instant::now();
        while !tls.join("access.toml").exists() {
            if started.elapsed() > Duration::from_millis(TLS_WAIT_MS) {
                let last =
                    format!("no certificates in {} after {TLS_WAIT_MS} ms (see {})", tls.display(), self.log.display());
                return Err(BenchError::NotReady { waited_ms: TLS_WAIT_MS, last });
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        Ok(Some(tls))
    }

    /// The nodes' client addresses.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The node processes (known once [`Self::wait_ready`] returned).
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// Where the cluster's data, configs and logs are.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    /// Waits until a node leads and the three node processes are known;
    /// fails if the dev process exits meanwhile.
    pub async fn wait_ready(&mut self, client: &Client) -> Result<(), BenchError> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < Duration::from_millis(READY_WAIT_MS) {
            self.check_alive()?;
            self.nodes = node_processes(self.dev.id());
            match client.status().await {
                Ok(nodes) if nodes.iter().any(|node| node.role == Some(Role::Leader)) => {
                    if self.nodes.len() == NODES {
                        return Ok(());
                    }
                    last = format!("a leader, but {} of {NODES} node processes found", self.nodes.len());
                }
                Ok(nodes) => last = format!("{} nodes answered, none leads", nodes.len()),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
        Err(BenchError::NotReady { waited_ms: READY_WAIT_MS, last })
    }

    /// Fails if the dev process has exited.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.dev.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                Err(BenchError::ClusterExited { status, log: self.log.clone(), tail: last_line(&self.log) })
            }
            Err(error) => Err(BenchError::io(&self.log, error)),
        }
    }

    /// Stops the cluster (see the module docs) and removes its directory
    /// unless [`Self::keep`] kept it.
    pub fn stop(&mut self) -> Result<(), BenchError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut failures = Vec::new();
        if matches!(self.dev.try_wait(), Ok(None)) && !signal(self.dev.id(), "TERM") {
            failures.push("SIGTERM could not be sent to coffer dev".to_owned());
        }
        let deadline = Instant::now() + Duration::from_millis(STOP_WAIT_MS);
        loop {
            match self.dev.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    failures.push(format!("coffer dev exited with {status} (its output: {})", self.log.display()));
                    break;
                }
                Ok(None) if Instant::now() >= deadline => {
                    failures.push(format!("coffer dev did not stop within {STOP_WAIT_MS} ms and was killed"));
                    let _ = self.dev.kill();
                    let _ = self.dev.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(POLL_MS)),
                Err(error) => {
                    failures.push(format!("waiting for coffer dev: {error}"));
                    break;
                }
            }
        }
        for node in &self.nodes {
            // A pid is reused only after its process is gone; check it is
            // still our node before killing.
            if process::is_running(node.pid) && node_of(node.pid) == Some(node.node) {
                failures.push(format!("node {} (pid {}) outlived coffer dev and was killed", node.node, node.pid));
                signal(node.pid, "KILL");
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Stop(failures.join("; ")))
        }
    }

    /// Keeps the cluster's directory when the cluster is dropped; returns it.
    pub fn keep(&mut self) -> Option<PathBuf> {
        self.dir.take().map(TempDir::keep)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("coffer bench: {error}");
        }
    }
}

/// Sends signal `name` to `pid` with the `kill` utility (sending one from
/// Rust needs unsafe code, which the workspace forbids).
fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The `coffer node` children of the dev process `dev`, by node id.
fn node_processes(dev: u32) -> Vec<NodeProcess> {
    let mut nodes: Vec<NodeProcess> =
        process::children(dev).into_iter().filter_map(|pid| Some(NodeProcess { node: node_of(pid)?, pid })).collect();
    nodes.sort_by_key(|node| node.node);
    nodes
}

/// The node id of a `coffer node --config <dir>/node<N>.toml` process.
fn node_of(pid: u32) -> Option<u16> {
    let args = process::cmdline(pid)?;
    let config = args.iter().skip_while(|arg| *arg != "--config").nth(1)?;
    let name = Path::new(config).file_stem()?.to_str()?;
    name.strip_prefix("node")?.parse().ok()
}

/// A base port all of whose cluster ports are free now.
fn free_base_port() -> Result<u16, BenchError> {
    let mut random = crate::SplitMix64::new(u64::from(std::process::id()) ^ now_ns());
    for _ in 0..BASE_PORT_TRIES {
        let base = BASE_PORT_FIRST + random.below(u64::from(BASE_PORT_SPAN)) as u16;
        let free = PORT_OFFSETS.iter().all(|offset| TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return Ok(base);
        }
    }
    Err(BenchError::NoFreePorts { tries: BASE_PORT_TRIES })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
}

/// The last non-empty line of `log`.
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| text.lines().rev().find(|line| !line.trim().is_empty()).map(str::to_owned))
        .unwrap_or_else(|| "(nothing)".into())
}
