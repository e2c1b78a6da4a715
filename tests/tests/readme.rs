//! README.md's examples run as written: every `coffer` command of its quick
//! start and command-line sections, in order, against a fresh `coffer dev`
//! cluster with the sample treasury (what `make run` starts), from the
//! repository's root. Each must exit 0; create commands must not report a
//! failed event, and `coffer watch` must print changes before it is stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use coffer_tests::coffer_binary;
use coffer_tests::dev::DevCluster;

/// The README's shell blocks that run against `coffer dev`, each found by a
/// command it holds: the quick start, the command line, the treasury's year.
const BLOCKS: [&str; 3] = ["transfer create --id 10001", "ledger create --id 2", "ledger create --id 9027"];
/// How long `coffer watch` (which never ends by itself) runs.
const WATCH_MS: u64 = 2_000;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

/// The command lines of the README's shell block holding `marker`: its
/// `coffer` commands and the `sed` lines that prepare their input files.
fn commands(readme: &str, marker: &str) -> Vec<String> {
    let block = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("README.md has no shell block with {marker:?}"));
    block
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("coffer ") || line.starts_with("sed "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_examples_run_as_written_against_the_dev_cluster() {
    let root = repository_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines: Vec<String> = BLOCKS.iter().flat_map(|marker| commands(&readme, marker)).collect();
    assert!(lines.len() >= 12, "too few commands found: {lines:?}");

    let dir = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(dir.path(), &[]);
    let bin_dir = coffer_binary().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for line in &lines {
        let watch = line.starts_with("coffer watch");
        // `timeout` stops the one command that runs until Ctrl-C.
        let script = if watch { format!("timeout {}s {line}", WATCH_MS / 1_000) } else { line.clone() };
        let output = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&root)
            .env("PATH", &path)
            .env("COFFER_ADDRESSES", dev.api_addresses().join(","))
            .env("COFFER_TLS_DIR", dev.tls_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr).into_owned());
        if watch {
            // Ended by `timeout` (124) after printing the sample's changes.
            assert_eq!(output.status.code(), Some(124), "{line}\n{stdout}{stderr}");
            assert!(stdout.contains("account_created"), "{line}\n{stdout}{stderr}");
            continue;
        }
        assert!(output.status.success(), "{line}\n{stdout}{stderr}\ncoffer dev printed:\n{}", dev.printed());
        assert!(!stdout.contains(" failed (") || stdout.contains(" 0 failed ("), "{line}\n{stdout}");
        if line.starts_with("coffer snapshot") {
            // "... made a snapshot of applied index N (term T) in DIR: ..."
            let made = stdout.split(" in ").nth(1).and_then(|rest| rest.split(':').next()).expect("the backup's path");
            let manifest = Path::new(made).join(coffer_storage::snapshot::MANIFEST_FILE);
            assert!(manifest.is_file(), "no backup at {made}: {stdout}");
            std::fs::remove_dir_all(made).unwrap();
        }
    }
}
