//! [`DevCluster`]: `coffer dev` run as a newcomer runs it, on a block of
//! free ports, with its output kept for the test to read.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::coffer_binary;

/// How long `coffer dev` may take to report its cluster up.
pub const DEV_START_WAIT: Duration = Duration::from_secs(60);

/// `coffer dev` in a directory of its own: started on a free block of ports,
/// stopped with SIGTERM (as Ctrl-C would) when dropped, so a failing test
/// leaves no nodes behind.
#[derive(Debug)]
pub struct DevCluster {
    child: Child,
    output: PathBuf,
    base_port: u16,
    data_dir: PathBuf,
}

impl DevCluster {
    /// Starts `coffer dev <args> --base-port P --data-dir <dir>/data` with
    /// `dir` as its working directory, and waits until it reports the
    /// cluster up ("Ctrl-C stops the cluster").
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let base_port = free_base_port();
        let output = dir.join("dev.out");
        let child = Command::new(coffer_binary())
            .arg("dev")
            .args(args)
            .args(["--base-port", &base_port.to_string(), "--data-dir"])
            .arg(dir.join("data"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&output).expect("the dev output file"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coffer dev starts");
        let dev = Self { child, output, base_port, data_dir: dir.join("data") };
        let started = Instant::now();
        while !dev.printed().contains("Ctrl-C stops the cluster") {
            assert!(started.elapsed() < DEV_START_WAIT, "coffer dev did not come up; it printed:\n{}", dev.printed());
            std::thread::sleep(Duration::from_millis(100));
        }
        dev
    }

    /// The API addresses of nodes 1-3.
    pub fn api_addresses(&self) -> Vec<String> {
        (1..=3).map(|id| format!("127.0.0.1:{}", self.base_port + id)).collect()
    }

    /// Where `coffer dev` wrote the cluster's certificates.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// TLS as the dev cluster's `admin`.
    pub fn security(&self) -> coffer_security::Security {
        let files = coffer_security::TlsFiles::in_dir(&self.tls_dir(), "admin");
        coffer_security::Security::Tls(coffer_security::TlsContext::load(files).expect("the dev cluster's admin TLS"))
    }

    /// Everything `coffer dev` printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// The configuration file `coffer dev` wrote for node `id`.
    pub fn node_config(&self, dir: &Path, id: u64) -> PathBuf {
        dir.join("data").join(format!("node{id}.toml"))
    }

    /// Stops `coffer dev` with SIGTERM and waits for it.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        }
        self.child.wait().expect("coffer dev is waited for")
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A base port whose nine dev ports (API, Raft, metrics of nodes 1-3) are
/// free now.
fn free_base_port() -> u16 {
    let seed = u16::try_from(std::process::id() % 200).unwrap_or(0);
    for step in 0..200u16 {
        let base = 20_000 + ((seed + step) % 200) * 100;
        let ports = [0, 100, 200].into_iter().flat_map(|offset| (1..=3).map(move |id| base + offset + id));
        let held: Vec<_> = ports.map(|port| TcpListener::bind(("127.0.0.1", port))).collect();
        if held.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free block of dev ports");
}
