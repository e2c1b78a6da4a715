//! The faults the nemesis injects into a running cluster, one at a time:
//! each is injected, held for a random while, then healed.
//!
//! - [`FaultKind::Kill`]: `SIGKILL` a node (the leader half the time), then
//!   start it again from its disk.
//! - [`FaultKind::Pause`]: `SIGSTOP` a node (the leader half the time), then
//!   `SIGCONT` it.
//! - [`FaultKind::Partition`]: cut every link into and out of one node, or
//!   both directions between two nodes.
//! - [`FaultKind::OneWay`]: cut one direction only: everything a node sends,
//!   everything it receives, or one link `i → j`.
//! - [`FaultKind::Corrupt`]: `SIGKILL` a node, flip bytes in one of its
//!   RocksDB table files (`*.sst`), check that `coffer verify` reports the
//!   corruption, start the node on the damaged store and check that it
//!   either stops naming the problem or serves nothing that breaks the
//!   ledger's invariants, then kill it, put the original bytes back (Raft
//!   forbids wiping a voter's state, so restoring is the repair), check that
//!   `coffer verify` passes again and restart it.
//!
//! Cuts either refuse new connections or blackhole them ([`Cut`]).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use coffer_api::client::Role;
use coffer_chaos::random::Random;
use coffer_chaos::workload::Bank;
use coffer_chaos::Violation;
use coffer_ledger::{AccountFlags, AccountId, LedgerId};

use super::proxy::{Cut, ProxyNet};
use crate::{coffer, quick_client, Cluster};

/// Bytes flipped in a corrupted table file.
const CORRUPT_BYTES: u64 = 8;
/// Table files this small are skipped (nothing but a footer to flip).
const SST_BYTES_MIN: u64 = 256;
/// How long a node started on a corrupt store is watched.
const CORRUPT_WATCH: Duration = Duration::from_secs(3);
/// How long one node may take to answer a status call while the nemesis
/// looks for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Characters of a node's log line quoted in a fault's detail.
const LOG_QUOTE_CHARS: usize = 300;
/// Lines of a crashed node's log quoted in the violation.
const CRASH_LOG_LINES: usize = 3;
/// How long a stale read of a node started on a corrupt store may take.
const CORRUPT_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `SIGKILL`, then restart.
    Kill,
    /// `SIGSTOP`, then `SIGCONT`.
    Pause,
    /// A node cut off both ways, or both directions between two nodes.
    Partition,
    /// One direction cut.
    OneWay,
    /// Bytes flipped in a stopped node's table file, then restored.
    Corrupt,
}

impl FaultKind {
    /// Every kind, in the order a run first injects them (so a short run
    /// covers them all).
    pub const ALL: [Self; 5] = [Self::Pause, Self::Partition, Self::Kill, Self::OneWay, Self::Corrupt];

    /// Its name in the summary.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
            Self::OneWay => "one-way",
            Self::Corrupt => "corrupt",
        }
    }

    /// Fault `number` of a run: the kinds in [`FaultKind::ALL`]'s order,
    /// then random ones.
    pub fn nth(number: u32, random: &mut Random) -> Self {
        if let Some(kind) = Self::ALL.get(number as usize) {
            return *kind;
        }
        match random.below(10) {
            0 | 1 => Self::Kill,
            2 | 3 => Self::Pause,
            4 | 5 => Self::Partition,
            6 | 7 => Self::OneWay,
            _ => Self::Corrupt,
        }
    }
}

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// Its number in the run.
    pub number: u32,
    /// Its kind.
    pub kind: FaultKind,
    /// What was done, naming nodes and links.
    pub detail: String,
}

/// What the corruption faults found.
#[derive(Clone, Debug, Default)]
pub struct CorruptionTally {
    /// `coffer verify` reported the damage.
    pub verify_detected: u64,
    /// `coffer verify` passed: the bytes were in a part a full read does
    /// not check (the node then must not be hurt either).
    pub verify_passed: u64,
    /// The node, started on the damaged store, stopped naming the problem.
    pub node_refused: u64,
    /// Of those, after `coffer verify` had passed the same store: damage
    /// the node reads but verify's full scan does not (reported, not a
    /// violation: the node does not serve it).
    pub verify_missed: u64,
    /// The node kept running and everything it served held the invariants.
    pub node_served: u64,
    /// The damaged file was gone (compacted away) when it was to be restored.
    pub file_gone: u64,
    /// No table file to damage yet.
    pub skipped: u64,
}

/// `coffer verify --json`'s verdict on a stopped node's store.
#[derive(Clone, Debug, Default)]
pub struct VerifyVerdict {
    /// Whether the store passed every check.
    pub ok: bool,
    /// What it reports (or why it could not run).
    pub problems: Vec<String>,
    /// The applied index, if it got that far.
    pub applied_index: Option<u64>,
    /// The state digest, if it got that far.
    pub state_digest: Option<String>,
}

/// Runs `coffer verify --json --data-dir data_dir` (off the async runtime).
pub async fn verify(data_dir: &Path) -> VerifyVerdict {
    let dir = data_dir.display().to_string();
    let output = tokio::task::spawn_blocking(move || coffer(&["verify", "--json", "--data-dir", &dir]))
        .await
        .expect("the coffer verify task does not panic");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Ok(report) = serde_json::from_str::<serde_json::Value>(&stdout) else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return VerifyVerdict {
            ok: false,
            problems: vec![format!("verify did not run: {stderr}")],
            ..Default::default()
        };
    };
    let problems = report["problems"]
        .as_array()
        .map(|problems| problems.iter().map(|problem| problem.as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    VerifyVerdict {
        ok: report["ok"].as_bool().unwrap_or(false) && output.status.success(),
        problems,
        applied_index: report["raft"]["applied_index"].as_u64(),
        state_digest: report["state_digest"].as_str().map(str::to_owned),
    }
}

/// Injects faults into one cluster.
pub struct Nemesis {
    random: Random,
    bank: Bank,
    /// Every fault injected.
    pub faults: Vec<FaultRecord>,
    /// What the corruption faults found.
    pub corruption: CorruptionTally,
    /// What the faults themselves showed to be wrong.
    pub violations: Vec<Violation>,
}

impl Nemesis {
    /// A nemesis drawing from `random`, for a cluster holding `bank`.
    pub fn new(random: Random, bank: Bank) -> Self {
        Self { random, bank, faults: Vec::new(), corruption: CorruptionTally::default(), violations: Vec::new() }
    }

    fn violation(&mut self, number: u32, checker: &'static str, detail: String) {
        self.violations.push(Violation { step: u64::from(number), checker, detail });
    }

    fn duration_ms(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.random.between(low, high))
    }

    fn node_ids(cluster: &Cluster) -> Vec<u64> {
        cluster.nodes.keys().copied().collect()
    }

    /// A node to hurt: the leader half the time (when one answers).
    async fn target(&mut self, cluster: &Cluster) -> u64 {
        let ids = Self::node_ids(cluster);
        if self.random.chance(0.5) {
            if let Some(leader) = leader_of(cluster).await {
                return leader;
            }
        }
        self.random.pick(&ids).expect("a cluster has nodes")
    }

    /// Injects fault `number` of kind `kind`, holds it and heals it.
    pub async fn inject(&mut self, number: u32, kind: FaultKind, cluster: &mut Cluster, net: &ProxyNet) {
        let detail = match kind {
            FaultKind::Kill => self.kill(cluster).await,
            FaultKind::Pause => self.pause(cluster).await,
            FaultKind::Partition => self.partition(cluster, net).await,
            FaultKind::OneWay => self.one_way(cluster, net).await,
            FaultKind::Corrupt => self.corrupt(number, cluster).await,
        };
        self.faults.push(FaultRecord { number, kind, detail });
        self.restart_exited(number, cluster);
    }

    async fn kill(&mut self, cluster: &mut Cluster) -> String {
        let node = self.target(cluster).await;
        let down = self.duration_ms(200, 2_000);
        cluster.node(node).kill();
        tokio::time::sleep(down).await;
        cluster.node(node).start();
        format!("SIGKILL node {node}, restarted after {down:?}")
    }

    async fn pause(&mut self, cluster: &mut Cluster) -> String {
        let node = self.target(cluster).await;
        let frozen = self.duration_ms(300, 2_500);
        cluster.node(node).pause();
        tokio::time::sleep(frozen).await;
        cluster.node(node).resume();
        format!("SIGSTOP node {node} for {frozen:?}")
    }

    fn how(&mut self) -> Cut {
        if self.random.chance(0.5) {
            Cut::Refuse
        } else {
            Cut::Blackhole
        }
    }

    /// Cuts `links` as `how` says for a while, then heals them.
    async fn hold_cut(&mut self, net: &ProxyNet, links: &[(u64, u64)], how: Cut) -> Duration {
        let held = self.duration_ms(500, 3_000);
        for &(from, to) in links {
            net.cut(from, to, how);
        }
        tokio::time::sleep(held).await;
        for &(from, to) in links {
            net.heal(from, to);
        }
        held
    }

    async fn partition(&mut self, cluster: &Cluster, net: &ProxyNet) -> String {
        let ids = Self::node_ids(cluster);
        let node = self.target(cluster).await;
        let how = self.how();
        let (links, what) = if self.random.chance(0.6) {
            let links: Vec<_> = ids.iter().filter(|&&id| id != node).flat_map(|&id| [(node, id), (id, node)]).collect();
            (links, format!("node {node} isolated"))
        } else {
            let others: Vec<u64> = ids.iter().copied().filter(|&id| id != node).collect();
            let other = self.random.pick(&others).expect("a cluster of two or more");
            (vec![(node, other), (other, node)], format!("nodes {node} and {other} cut apart"))
        };
        let held = self.hold_cut(net, &links, how).await;
        format!("{what} ({how:?}) for {held:?}")
    }

    async fn one_way(&mut self, cluster: &Cluster, net: &ProxyNet) -> String {
        let ids = Self::node_ids(cluster);
        let node = self.target(cluster).await;
        let others: Vec<u64> = ids.iter().copied().filter(|&id| id != node).collect();
        let how = self.how();
        let (links, what) = match self.random.below(3) {
            0 => (others.iter().map(|&id| (node, id)).collect::<Vec<_>>(), format!("node {node} cannot send")),
            1 => (others.iter().map(|&id| (id, node)).collect(), format!("node {node} cannot receive")),
            _ => {
                let other = self.random.pick(&others).expect("a cluster of two or more");
                (vec![(node, other)], format!("link {node} → {other} cut"))
            }
        };
        let held = self.hold_cut(net, &links, how).await;
        format!("{what} ({how:?}) for {held:?}")
    }

    async fn corrupt(&mut self, number: u32, cluster: &mut Cluster) -> String {
        let ids = Self::node_ids(cluster);
        let node = self.random.pick(&ids).expect("a cluster has nodes");
        cluster.node(node).kill();
        let data_dir = cluster.node(node).data_dir.clone();
        let Some(damage) = self.damage(&data_dir.join("db")) else {
            self.corruption.skipped += 1;
            cluster.node(node).start();
            return format!("node {node} has no table file yet: nothing corrupted");
        };
        let mut detail = format!("node {node}: {damage}");
        let before = verify(&data_dir).await;
        if before.ok {
            self.corruption.verify_passed += 1;
            detail.push_str("; verify passed (bytes not read by a full scan)");
        } else {
            self.corruption.verify_detected += 1;
            detail.push_str(&format!("; verify: {}", first_line(&before.problems)));
        }
        detail.push_str(&self.start_on_damage(number, node, cluster, before.ok).await);
        cluster.node(node).kill();
        match damage.restore() {
            Ok(true) => {}
            Ok(false) => {
                self.corruption.file_gone += 1;
                detail.push_str("; the file was compacted away");
            }
            Err(error) => self.violation(number, "corruption", format!("restoring {damage}: {error}")),
        }
        let after = verify(&data_dir).await;
        if !after.ok {
            let problems = after.problems.join("; ");
            self.violation(number, "corruption", format!("node {node} fails verify after the repair: {problems}"));
        }
        cluster.node(node).start();
        detail.push_str("; restored and restarted");
        detail
    }

    /// Starts `node` on its damaged store and watches it: it must stop
    /// naming the problem, or serve only state that holds the invariants.
    async fn start_on_damage(&mut self, number: u32, node: u64, cluster: &mut Cluster, verify_ok: bool) -> String {
        let log = cluster.node(node).log.clone();
        let log_from = std::fs::metadata(&log).map(|meta| meta.len()).unwrap_or(0);
        cluster.node(node).start();
        let started = tokio::time::Instant::now();
        while started.elapsed() < CORRUPT_WATCH {
            if let Some(status) = cluster.node(node).exited() {
                self.corruption.node_refused += 1;
                let said = log_since(&log, log_from);
                let naming =
                    said.lines().find(|line| line.to_lowercase().contains("corrupt") || line.contains("checksum"));
                let Some(naming) = naming else {
                    let tail: String = said.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                    let detail = format!("node {node} stopped ({status}) on a damaged store without naming it: {tail}");
                    self.violation(number, "corruption", detail);
                    return format!("; the node stopped ({status}) without naming the damage");
                };
                if verify_ok {
                    self.corruption.verify_missed += 1;
                }
                let naming: String = naming.chars().take(LOG_QUOTE_CHARS).collect();
                return format!("; the node stopped ({status}): {naming}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let address = cluster.node(node).addresses.api.clone();
        let ids: Vec<AccountId> = self.bank.accounts.iter().map(|account| account.id).collect();
        let client = quick_client(&address).with_stale_reads(true);
        let read = tokio::time::timeout(CORRUPT_READ_TIMEOUT, client.lookup_accounts(&ids)).await;
        let Ok(Ok(reply)) = read else {
            return "; the node ran but served no read".to_owned();
        };
        self.corruption.node_served += 1;
        let accounts: Vec<_> = reply.value.into_iter().flatten().collect();
        let mut totals: BTreeMap<LedgerId, (u128, u128, u128, u128)> = BTreeMap::new();
        for account in &accounts {
            let total = totals.entry(account.ledger).or_default();
            total.0 = total.0.wrapping_add(account.debits_pending);
            total.1 = total.1.wrapping_add(account.credits_pending);
            total.2 = total.2.wrapping_add(account.debits_posted);
            total.3 = total.3.wrapping_add(account.credits_posted);
            let limited = account.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
            if limited && account.debits_pending.saturating_add(account.debits_posted) > account.credits_posted {
                self.violation(number, "corruption", format!("node {node} on a damaged store served {account:?}"));
            }
        }
        for (ledger, (dp, cp, dq, cq)) in totals {
            if accounts.len() == ids.len() && (dp != cp || dq != cq) {
                let detail = format!("node {node} on a damaged store served ledger {} unbalanced", ledger.0);
                self.violation(number, "corruption", detail);
            }
        }
        let (served, index) = (accounts.len(), reply.applied_index);
        format!("; the node ran and served {served} accounts at index {index} that hold the invariants")
    }

    /// Flips bytes in the first half (where the data blocks are) of a
    /// random table file of the store in `db`.
    fn damage(&mut self, db: &Path) -> Option<Damage> {
        let mut tables: Vec<(PathBuf, u64)> = std::fs::read_dir(db)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sst"))
            .filter_map(|path| Some((path.clone(), std::fs::metadata(&path).ok()?.len())))
            .filter(|(_, len)| *len >= SST_BYTES_MIN)
            .collect();
        tables.sort();
        let (path, len) = tables.get(self.random.below(tables.len() as u64) as usize)?.clone();
        let offset = self.random.below(len / 2);
        let mut file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        let mut original = vec![0u8; CORRUPT_BYTES as usize];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut original).ok()?;
        let flipped: Vec<u8> = original.iter().map(|byte| byte ^ 0xFF).collect();
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.write_all(&flipped).ok()?;
        file.sync_all().ok()?;
        Some(Damage { path, offset, original, len })
    }

    /// Restarts every node that exited by itself (a crash is a violation).
    fn restart_exited(&mut self, number: u32, cluster: &mut Cluster) {
        for id in Self::node_ids(cluster) {
            let node = cluster.node(id);
            if let Some(status) = node.exited() {
                let lines = node.log_tail();
                let tail = lines[lines.len().saturating_sub(CRASH_LOG_LINES)..].join("\n");
                node.start();
                self.violation(number, "crash", format!("node {id} exited by itself ({status}); its log:\n{tail}"));
            }
        }
    }
}

/// Bytes flipped in a table file, and what was there.
#[derive(Clone, Debug)]
struct Damage {
    path: PathBuf,
    offset: u64,
    original: Vec<u8>,
    len: u64,
}

impl Damage {
    /// Puts the original bytes back; `false` if the file is gone.
    fn restore(&self) -> std::io::Result<bool> {
        let file = OpenOptions::new().write(true).open(&self.path);
        let mut file = match file {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        file.write_all(&self.original)?;
        file.sync_all()?;
        Ok(true)
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        write!(f, "{} bytes flipped at {} of {name} ({} bytes)", self.original.len(), self.offset, self.len)
    }
}

/// The node that reports itself leader, if one answers quickly.
pub async fn leader_of(cluster: &Cluster) -> Option<u64> {
    for node in cluster.nodes.values() {
        let id = node.addresses.id;
        let status = tokio::time::timeout(STATUS_TIMEOUT, quick_client(&node.addresses.api).status()).await;
        if let Ok(Ok(reports)) = status {
            if reports.first().is_some_and(|own| own.node_id == id && own.role == Some(Role::Leader)) {
                return Some(id);
            }
        }
    }
    None
}

/// What `log` gained since byte `from`.
fn log_since(log: &Path, from: u64) -> String {
    let Ok(mut file) = std::fs::File::open(log) else {
        return String::new();
    };
    let mut text = String::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.read_to_string(&mut text);
    }
    text
}

fn first_line(problems: &[String]) -> String {
    problems.first().map(|problem| problem.lines().next().unwrap_or_default().to_owned()).unwrap_or_default()
}
