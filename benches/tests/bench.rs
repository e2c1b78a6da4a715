//! End to end: `coffer bench` starts a fresh local cluster, runs a small
//! load, validates it, writes its reports and leaves no node running, also
//! when it is interrupted.
//!
//! Needs the `coffer` binary next to `coffer-bench` (`cargo build
//! --workspace --bins`; `cargo test --workspace` builds both), or its path
//! in `COFFER_BIN`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use coffer_benches::loadgen::process;

/// One cluster at a time: the machine has two cores, and two clusters
/// electing leaders at once make election timeouts flaky.
static CLUSTER_SLOT: Mutex<()> = Mutex::new(());

/// The time a small run may take in a debug build on two busy cores.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The `coffer` executable under test (next to `coffer-bench`, where
/// `coffer bench` looks for it).
fn coffer_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COFFER_BIN") {
        return PathBuf::from(path);
    }
    let bench = Path::new(env!("CARGO_BIN_EXE_coffer-bench"));
    let coffer = bench.with_file_name("coffer");
    assert!(coffer.exists(), "{} is missing: build it with `cargo build --workspace --bins`", coffer.display());
    coffer
}

/// Whether none of `pids` is still running.
fn all_gone(pids: &[u32]) -> bool {
    pids.iter().all(|&pid| !process::is_running(pid))
}

#[test]
fn a_small_run_on_a_fresh_cluster_validates_and_writes_its_reports() {
    let _slot = CLUSTER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let (json, svg) = (out.path().join("run.json"), out.path().join("charts/run.svg"));
    let png = out.path().join("charts/png/run.png");
    let started = Instant::now();
    let output = Command::new(coffer_binary())
        .args(["bench", "--transfers", "20000", "--batch-size", "1000", "--accounts", "1000", "--distribution", "hot"])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .arg("--png")
        .arg(&png)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "coffer bench failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(started.elapsed() < RUN_LIMIT, "took {:?}", started.elapsed());
    assert!(stdout.contains("validation     ok"), "{stdout}");
    assert!(stdout.contains("p99.9"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["validation"]["ok"], true, "{report:#}");
    assert_eq!(report["load"]["transfers_committed"], 20_000);
    assert_eq!(report["load"]["batches"], 20);
    assert_eq!(report["validation"]["accounts_checked"], 1_000);
    assert_eq!(report["validation"]["transfers_sampled"], 1_000);
    assert_eq!(report["validation"]["ledgers"][0]["matches_expected"], true);
    assert!(report["throughput_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["latency_ms"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(!report["per_second"].as_array().unwrap().is_empty());
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 4, "three nodes and the generator: {processes:?}");
    for process in processes {
        assert!(process["peak_rss_kib"].as_u64().unwrap() > 0, "{process}");
        assert!(process["cpu_s"].as_f64().is_some(), "{process}");
    }
    let pids: Vec<u32> = processes[..3].iter().map(|process| process["pid"].as_u64().unwrap() as u32).collect();
    assert!(all_gone(&pids), "nodes {pids:?} outlived the run");

    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg ") && chart.trim_end().ends_with("</svg>"));
    assert!(chart.contains("transfers committed / s") && chart.contains("p99 batch latency (ms)"));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"), "the PNG chart");
}

/// Starts a 60-second `coffer bench` on a fresh local cluster, waits until
/// it sends, and returns it with its `coffer dev` child and the three nodes
/// below that (`coffer bench` became `coffer-bench` in place: same pid).
fn start_sending(out: &Path, stderr: Stdio) -> (std::process::Child, Vec<u32>, Vec<u32>) {
    let mut bench = Command::new(coffer_binary())
        .args(["bench", "--duration", "60s", "--batch-size", "500", "--accounts", "1000", "--out-dir"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("coffer bench starts");
    let mut lines = BufReader::new(bench.stdout.take().expect("its output is piped")).lines();
    let sending = lines.by_ref().map_while(Result::ok).any(|line| line.contains("sending"));
    assert!(sending, "coffer bench never started sending");
    let dev = process::children(bench.id());
    assert_eq!(dev.len(), 1, "one coffer dev child: {dev:?}");
    let nodes = process::children(dev[0]);
    assert_eq!(nodes.len(), 3, "three nodes under coffer dev: {nodes:?}");
    (bench, dev, nodes)
}

#[test]
fn an_interrupted_run_stops_its_cluster() {
    let _slot = CLUSTER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let (mut bench, dev, nodes) = start_sending(out.path(), Stdio::null());

    let sent = Command::new("kill").args(["-s", "INT", &bench.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "coffer bench did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    let mut all = nodes.clone();
    all.push(dev[0]);
    assert!(all_gone(&all), "processes {all:?} outlived the interrupted run");
    assert!(!out.path().join("coffer-bench-uniform.json").exists(), "an interrupted run writes no report");
}

#[test]
fn a_run_whose_cluster_dies_stops_at_once_saying_why() {
    let _slot = CLUSTER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let (mut bench, dev, nodes) = start_sending(out.path(), Stdio::piped());

    // The whole cluster dies (`coffer dev` and its three nodes at once; a
    // single node is restarted instead, see below): the generator must
    // notice within seconds, not retry against nobody.
    let killed = Instant::now();
    for pid in dev.iter().chain(&nodes) {
        let sent = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status().unwrap();
        assert!(sent.success());
    }
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "coffer bench kept going without its cluster");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut bench.stderr.take().unwrap(), &mut stderr).unwrap();
    // Whichever comes first says why: the watcher seeing `coffer dev` gone,
    // or a batch whose node vanished mid-call.
    let why = stderr.contains("coffer dev") || stderr.contains("batch");
    assert!(why && (stderr.contains("exited") || stderr.contains("failed")), "{stderr}");
    let mut all = nodes.clone();
    all.push(dev[0]);
    assert!(all_gone(&all), "processes {all:?} outlived the run");
    // A failed run keeps the cluster's data for a look; the test removes it.
    let kept = stderr.split("are kept in ").nth(1).and_then(|rest| rest.split(')').next());
    if let Some(dir) = kept.map(str::trim).filter(|dir| dir.starts_with(&*std::env::temp_dir().to_string_lossy())) {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_run_goes_on_through_a_killed_node_which_coffer_dev_restarts() {
    let _slot = CLUSTER_SLOT.lock().unwrap_or_else(PoisonError::into_inner);
    let out = tempfile::tempdir().unwrap();
    let mut bench = Command::new(coffer_binary())
        .args(["bench", "--duration", "12s", "--batch-size", "500", "--accounts", "1000", "--out-dir"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coffer bench starts");
    let mut stdout = BufReader::new(bench.stdout.take().expect("its output is piped"));
    let mut seen = String::new();
    while !seen.contains("sending") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "coffer bench never started sending: {seen}");
        seen.push_str(&line);
    }
    let dev = process::children(bench.id());
    let nodes = process::children(dev[0]);
    assert_eq!(nodes.len(), 3, "three nodes under coffer dev: {nodes:?}");
    let sent = Command::new("kill").args(["-s", "KILL", &nodes[0].to_string()]).status().unwrap();
    assert!(sent.success());

    std::io::Read::read_to_string(&mut stdout, &mut seen).unwrap();
    let status = bench.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut bench.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "coffer bench failed ({status}):\n{seen}\n{stderr}");
    assert!(seen.contains("validation     ok"), "{seen}");
    let mut all = nodes.clone();
    all.push(dev[0]);
    assert!(all_gone(&all), "processes {all:?} outlived the run");
}
