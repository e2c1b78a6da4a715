//! The command line of `coffer bench` and the checked configuration it
//! becomes: every bound is a named constant, every default documented in
//! `--help`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use coffer_ledger::BATCH_EVENTS_MAX;
use coffer_security::TlsFiles;

use crate::SplitMix64;

/// Accounts per ledger unless told.
pub const ACCOUNTS_DEFAULT: u32 = 10_000;
/// The most accounts per ledger.
pub const ACCOUNTS_PER_LEDGER_MAX: u32 = 1_000_000;
/// The most accounts in all ledgers together (the generator keeps four
/// balances of each in memory).
pub const ACCOUNTS_TOTAL_MAX: u64 = 4_000_000;
/// The most ledgers.
pub const LEDGERS_MAX: u32 = 64;
/// The most concurrent clients.
pub const CLIENTS_MAX: u32 = 256;
/// Transfers in a run unless told (and unless `--duration` is given).
pub const TRANSFERS_DEFAULT: u64 = 1_000_000;
/// The most transfers looked up one by one after the run.
pub const SAMPLE_MAX: usize = 100_000;
/// The default mix of transfer kinds.
pub const MIX_DEFAULT: &str = "expenditure=40,receipt=30,cash=20,two-phase=10";
/// Where the JSON and SVG reports go unless told.
pub const OUT_DIR_DEFAULT: &str = "data/bench";

/// Which accounts the transfers touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DistributionArg {
    /// Every account of a side (cash or other) equally likely.
    Uniform,
    /// The cash side of every transfer is one of `--hot-accounts` cash accounts.
    Hot,
    /// Accounts drawn by a Zipf law of `--zipf-exponent` (account 1 the most likely).
    Zipf,
}

/// `coffer bench`: replays a year-end payment peak against a Coffer
/// cluster, checks that every acknowledged transfer is there, and reports
/// throughput and latency.
///
/// By default it starts a fresh local three-node cluster (`coffer dev` in a
/// temporary directory, on free ports), creates the ledgers and accounts,
/// runs the load, validates, stops the cluster and writes the reports.
/// With `--addresses` it drives an existing cluster instead.
///
/// Exit status: 0 when the run validated, 1 when it failed or did not
/// validate, 2 on a usage error, 130 when interrupted.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "coffer-bench", bin_name = "coffer bench", version, verbatim_doc_comment)]
pub struct BenchArgs {
    /// Drive the existing cluster at these client addresses (host:port,
    /// comma-separated) instead of starting a local one.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub addresses: Vec<String>,
    /// With --addresses: the nodes' process ids (comma-separated, on this
    /// machine), to report their peak RSS and CPU; without it those are "unknown".
    #[arg(long, value_delimiter = ',', requires = "addresses", value_name = "PID,...")]
    pub pids: Vec<u32>,
    /// The `coffer` executable that runs the local cluster [default: the
    /// `coffer` next to this executable].
    #[arg(long, value_name = "PATH", conflicts_with = "addresses")]
    pub coffer: Option<PathBuf>,
    /// For the local cluster: TOML added to every node's configuration (its
    /// `[storage]`, `[raft]`, `[batch]` sections; see api/coffer.example.toml).
    #[arg(long, value_name = "FILE", conflicts_with = "addresses")]
    pub node_toml: Option<PathBuf>,
    /// Accounts per ledger: a tenth of them (at least 2, and at least
    /// --hot-accounts) cash accounts, the rest other accounts.
    #[arg(long, default_value_t = ACCOUNTS_DEFAULT, value_parser = clap::value_parser!(u32).range(3..=i64::from(ACCOUNTS_PER_LEDGER_MAX)))]
    pub accounts: u32,
    /// Ledgers (currencies); each transfer picks one at random.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(LEDGERS_MAX)))]
    pub ledgers: u32,
    /// Transfers per request (at most 8,189).
    #[arg(long, default_value_t = BATCH_EVENTS_MAX, value_parser = parse_batch_size)]
    pub batch_size: usize,
    /// Concurrent clients, each with its own connections. Closed loop: each
    /// has one batch in flight. Open loop: batches are spread over them.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=i64::from(CLIENTS_MAX)))]
    pub clients: u32,
    /// Which accounts the transfers touch.
    #[arg(long, value_enum, default_value_t = DistributionArg::Uniform)]
    pub distribution: DistributionArg,
    /// With --distribution hot: hot cash accounts per ledger.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub hot_accounts: u32,
    /// With --distribution zipf: the exponent s (probability of the k-th
    /// account ∝ 1/k^s).
    #[arg(long, default_value_t = 1.0, value_parser = parse_zipf_exponent)]
    pub zipf_exponent: f64,
    /// Shares of transfer kinds, `kind=weight` comma-separated; kinds:
    /// expenditure, receipt, cash (cash transfer), journal, two-phase (a
    /// pending expenditure, posted or voided in a later batch; both count).
    #[arg(long, default_value = MIX_DEFAULT, value_name = "KIND=WEIGHT,...")]
    pub mix: Mix,
    /// Transfers to send in all [default: 1,000,000, or no limit with --duration].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub transfers: Option<u64>,
    /// Open loop: send batches on a schedule at this many transfers/s and
    /// measure latency from each batch's scheduled time. Without it: closed
    /// loop at the cluster's maximum.
    #[arg(long, value_name = "TRANSFERS_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Stop sending after this long (e.g. `90s`, `5m`; a bare number is seconds).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of every id, account choice and amount: one seed, one workload.
    /// Use another seed to run again against the same cluster.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Acknowledged transfers looked up and compared field by field after the run.
    #[arg(long, default_value_t = 1_000, value_parser = parse_sample)]
    pub sample: usize,
    /// Where the JSON report goes [default: <out-dir>/coffer-bench-<distribution>.json].
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Where the SVG chart goes [default: <out-dir>/coffer-bench-<distribution>.svg].
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// Where the PNG chart goes [default: <out-dir>/coffer-bench-<distribution>.png].
    #[arg(long, value_name = "PATH")]
    pub png: Option<PathBuf>,
    /// The directory of the default report paths.
    #[arg(long, value_name = "DIR", default_value = OUT_DIR_DEFAULT)]
    pub out_dir: PathBuf,
    /// Plaintext: the local cluster runs with `insecure = true` (to measure
    /// what TLS costs), or the cluster at --addresses does.
    #[arg(long)]
    pub insecure: bool,
    /// With --addresses: the directory of the certificates to present
    /// (ca.crt, and PRINCIPAL.crt and .key, as `coffer certs` writes them).
    #[arg(long, value_name = "DIR", requires = "addresses", conflicts_with = "insecure")]
    pub tls_dir: Option<PathBuf>,
    /// With --tls-dir: the principal whose certificate to present (it must
    /// hold `poster` and `reader` on every ledger of the run).
    #[arg(long, value_name = "NAME", default_value = "admin")]
    pub principal: String,
}

/// Where the load goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A fresh local cluster run by `coffer dev` from this executable.
    Local {
        /// The `coffer` executable.
        coffer: PathBuf,
        /// TOML added to every node's configuration.
        node_toml: Option<PathBuf>,
        /// Plaintext (`coffer dev --insecure`).
        insecure: bool,
    },
    /// An existing cluster.
    Remote {
        /// Client addresses of its nodes.
        addresses: Vec<String>,
        /// The nodes' process ids, if known.
        pids: Vec<u32>,
        /// The certificates to present (`None`: plaintext).
        tls: Option<TlsFiles>,
    },
}

/// How transfers pick their accounts.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DistributionConfig {
    /// Uniform over each side's accounts.
    Uniform,
    /// The cash side is one of `hot` cash accounts per ledger.
    Hot {
        /// Hot cash accounts per ledger.
        hot: u32,
    },
    /// Zipf over each side's accounts.
    Zipf {
        /// The exponent s.
        exponent: f64,
    },
}

impl DistributionConfig {
    /// The short name used in file names and titles.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Hot { .. } => "hot",
            Self::Zipf { .. } => "zipf",
        }
    }
}

impl fmt::Display for DistributionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uniform => f.write_str("uniform"),
            Self::Hot { hot } => write!(f, "hot ({hot} cash accounts per ledger)"),
            Self::Zipf { exponent } => write!(f, "zipf (s = {exponent})"),
        }
    }
}

/// A checked configuration of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// Where the load goes.
    pub target: Target,
    /// Accounts per ledger.
    pub accounts: u32,
    /// Ledgers.
    pub ledgers: u32,
    /// Transfers per request.
    pub batch_size: usize,
    /// Concurrent clients.
    pub clients: u32,
    /// How transfers pick accounts.
    pub distribution: DistributionConfig,
    /// Shares of transfer kinds.
    pub mix: Mix,
    /// Transfers to send (`None`: until `duration`).
    pub transfers: Option<u64>,
    /// Open-loop rate in transfers/s (`None`: closed loop).
    pub rate: Option<u64>,
    /// When to stop sending.
    pub duration: Option<Duration>,
    /// The workload's seed.
    pub seed: u64,
    /// Transfers looked up after the run.
    pub sample: usize,
    /// The JSON report's path.
    pub json: PathBuf,
    /// The SVG chart's path.
    pub svg: PathBuf,
    /// The PNG chart's path.
    pub png: PathBuf,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {reason}")]
pub struct UsageError {
    /// The flag at fault.
    pub flag: &'static str,
    /// Why.
    pub reason: String,
}

impl BenchArgs {
    /// Checks the combination of flags; `own_exe` is this executable's path
    /// (the default `coffer` is its sibling).
    pub fn resolve(self, own_exe: Option<PathBuf>) -> Result<BenchConfig, UsageError> {
        let usage = |flag, reason: String| Err(UsageError { flag, reason });
        let distribution = match self.distribution {
            DistributionArg::Uniform => DistributionConfig::Uniform,
            DistributionArg::Hot => DistributionConfig::Hot { hot: self.hot_accounts },
            DistributionArg::Zipf => DistributionConfig::Zipf { exponent: self.zipf_exponent },
        };
        if u64::from(self.accounts) * u64::from(self.ledgers) > ACCOUNTS_TOTAL_MAX {
            return usage("accounts", format!("accounts × ledgers must be at most {ACCOUNTS_TOTAL_MAX}"));
        }
        if let DistributionConfig::Hot { hot } = distribution {
            if hot >= self.accounts {
                return usage(
                    "hot-accounts",
                    format!("{hot} hot accounts leave no other account of {}", self.accounts),
                );
            }
        }
        if self.mix.total() == 0 {
            return usage("mix", "at least one kind needs a weight above 0".into());
        }
        // The default total applies only when no duration bounds the run.
        let transfers = match (self.transfers, self.duration) {
            (Some(transfers), _) => Some(transfers),
            (None, Some(_)) => None,
            (None, None) => Some(TRANSFERS_DEFAULT),
        };
        let target = if self.addresses.is_empty() {
            let coffer = match (self.coffer, own_exe) {
                (Some(coffer), _) => coffer,
                (None, Some(exe)) => exe.with_file_name("coffer"),
                (None, None) => return usage("coffer", "this executable's path is unknown; name `coffer`".into()),
            };
            Target::Local { coffer, node_toml: self.node_toml, insecure: self.insecure }
        } else {
            let tls = match (self.insecure, &self.tls_dir) {
                (true, _) => None,
                (false, Some(dir)) => Some(TlsFiles::in_dir(dir, &self.principal)),
                (false, None) => {
                    return usage(
                        "tls-dir",
                        "with --addresses, name the certificates' directory (or --insecure)".into(),
                    )
                }
            };
            Target::Remote { addresses: self.addresses, pids: self.pids, tls }
        };
        let file = |extension: &str| self.out_dir.join(format!("coffer-bench-{}.{extension}", distribution.name()));
        Ok(BenchConfig {
            target,
            accounts: self.accounts,
            ledgers: self.ledgers,
            batch_size: self.batch_size,
            clients: self.clients,
            distribution,
            mix: self.mix,
            transfers,
            rate: self.rate,
            duration: self.duration,
            seed: self.seed,
            sample: self.sample,
            json: self.json.unwrap_or_else(|| file("json")),
            svg: self.svg.unwrap_or_else(|| file("svg")),
            png: self.png.unwrap_or_else(|| file("png")),
        })
    }
}

fn parse_batch_size(text: &str) -> Result<usize, String> {
    let size: usize = text.parse().map_err(|error| format!("{text:?}: {error}"))?;
    if (1..=BATCH_EVENTS_MAX).contains(&size) {
        Ok(size)
    } else {
        Err(format!("{size} is not in 1..={BATCH_EVENTS_MAX}"))
    }
}

fn parse_sample(text: &str) -> Result<usize, String> {
    let sample: usize = text.parse().map_err(|error| format!("{text:?}: {error}"))?;
    if sample <= SAMPLE_MAX {
        Ok(sample)
    } else {
        Err(format!("{sample} is more than {SAMPLE_MAX}"))
    }
}

fn parse_zipf_exponent(text: &str) -> Result<f64, String> {
    let exponent: f64 = text.parse().map_err(|error| format!("{text:?}: {error}"))?;
    if exponent.is_finite() && exponent > 0.0 && exponent <= 10.0 {
        Ok(exponent)
    } else {
        Err(format!("{exponent} is not in (0, 10]"))
    }
}

/// Parses `90`, `90s`, `1500ms`, `5m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 5m or 1h"))?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" | "min" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3_600)),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if duration.is_zero() {
        return Err("a duration must be above zero".into());
    }
    Ok(duration)
}

/// What one transfer slot of the mix becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A payment: debits an other account, credits cash.
    Expenditure,
    /// Money in: debits cash, credits an other account.
    Receipt,
    /// Cash to cash.
    CashTransfer,
    /// A journal entry (no kind rule), shaped like a receipt.
    Journal,
    /// A pending expenditure, or the post or void of an earlier one.
    TwoPhase,
}

/// Shares of transfer kinds, as weights (they need not sum to 100).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Mix {
    /// Weight of expenditures.
    pub expenditure: u32,
    /// Weight of receipts.
    pub receipt: u32,
    /// Weight of cash transfers.
    pub cash_transfer: u32,
    /// Weight of journal entries.
    pub journal: u32,
    /// Weight of two-phase events (pendings and their posts or voids).
    pub two_phase: u32,
}

impl Mix {
    /// The most a weight may be (so the total fits a `u32` comfortably).
    pub const WEIGHT_MAX: u32 = 1_000_000;

    /// The sum of the weights.
    pub const fn total(&self) -> u32 {
        self.expenditure + self.receipt + self.cash_transfer + self.journal + self.two_phase
    }

    fn slots(&self) -> [(Slot, u32); 5] {
        [
            (Slot::Expenditure, self.expenditure),
            (Slot::Receipt, self.receipt),
            (Slot::CashTransfer, self.cash_transfer),
            (Slot::Journal, self.journal),
            (Slot::TwoPhase, self.two_phase),
        ]
    }

    /// Draws a slot with probability weight / total. The total must be above 0.
    pub fn draw(&self, random: &mut SplitMix64) -> Slot {
        let total = self.total();
        assert!(total > 0, "a mix is checked to have a weight above 0");
        let mut point = random.below(u64::from(total));
        for (slot, weight) in self.slots() {
            if point < u64::from(weight) {
                return slot;
            }
            point -= u64::from(weight);
        }
        unreachable!("the point is below the sum of the weights")
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut mix = Self::default();
        let mut seen = Vec::new();
        for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (name, weight) =
                part.split_once('=').ok_or_else(|| format!("{part:?} is not kind=weight (e.g. receipt=30)"))?;
            let name = name.trim().to_ascii_lowercase().replace('_', "-");
            let weight: u32 =
                weight.trim().parse().map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
            if weight > Self::WEIGHT_MAX {
                return Err(format!("{part:?}: the weight must be at most {}", Self::WEIGHT_MAX));
            }
            let field = match name.as_str() {
                "expenditure" => &mut mix.expenditure,
                "receipt" => &mut mix.receipt,
                "cash" | "cash-transfer" => &mut mix.cash_transfer,
                "journal" => &mut mix.journal,
                "two-phase" => &mut mix.two_phase,
                _ => return Err(format!("unknown kind {name:?} (expenditure, receipt, cash, journal, two-phase)")),
            };
            if seen.contains(&name) {
                return Err(format!("{name} is given twice"));
            }
            *field = weight;
            seen.push(name);
        }
        if mix.total() == 0 {
            return Err(format!("{text:?}: at least one kind needs a weight above 0"));
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = ["expenditure", "receipt", "cash", "journal", "two-phase"];
        let parts: Vec<String> = self
            .slots()
            .iter()
            .zip(names)
            .filter(|((_, weight), _)| *weight > 0)
            .map(|((_, weight), name)| format!("{name}={weight}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        BenchArgs::command().debug_assert();
    }

    #[test]
    fn the_default_mix_parses_and_prints_back() {
        let mix: Mix = MIX_DEFAULT.parse().unwrap();
        assert_eq!(mix, Mix { expenditure: 40, receipt: 30, cash_transfer: 20, journal: 0, two_phase: 10 });
        assert_eq!(mix.to_string(), MIX_DEFAULT);
        assert_eq!("cash_transfer=1, Two_Phase=2".parse::<Mix>().unwrap().to_string(), "cash=1,two-phase=2");
    }

    #[test]
    fn a_bad_mix_is_refused_naming_the_part() {
        for (text, says) in [
            ("refund=5", "unknown kind"),
            ("receipt", "not kind=weight"),
            ("receipt=x", "whole number"),
            ("receipt=1,receipt=2", "twice"),
            ("receipt=0", "above 0"),
            ("receipt=2000000", "at most"),
        ] {
            let error = text.parse::<Mix>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn drawn_slots_follow_the_weights() {
        let mix: Mix = "expenditure=40,receipt=30,cash=20,two-phase=10".parse().unwrap();
        let mut random = SplitMix64::new(9);
        let mut counts = std::collections::HashMap::new();
        let draws = 100_000;
        for _ in 0..draws {
            *counts.entry(mix.draw(&mut random)).or_insert(0_u32) += 1;
        }
        for (slot, weight) in mix.slots() {
            let share = f64::from(counts.get(&slot).copied().unwrap_or(0)) / f64::from(draws);
            let expected = f64::from(weight) / f64::from(mix.total());
            assert!((share - expected).abs() < 0.01, "{slot:?}: {share} vs {expected}");
        }
        assert!(!counts.contains_key(&Slot::Journal));
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1_500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3_600));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn defaults_start_a_local_cluster_next_to_this_executable() {
        let args = BenchArgs::try_parse_from(["coffer-bench"]).unwrap();
        let config = args.resolve(Some(PathBuf::from("/opt/coffer/bin/coffer-bench"))).unwrap();
        assert_eq!(
            config.target,
            Target::Local { coffer: PathBuf::from("/opt/coffer/bin/coffer"), node_toml: None, insecure: false }
        );
        assert_eq!((config.accounts, config.ledgers, config.batch_size), (10_000, 1, 8_189));
        assert_eq!((config.transfers, config.rate, config.seed), (Some(1_000_000), None, 1));
        assert_eq!(config.json, PathBuf::from("data/bench/coffer-bench-uniform.json"));
        assert_eq!(config.svg, PathBuf::from("data/bench/coffer-bench-uniform.svg"));
        assert_eq!(config.png, PathBuf::from("data/bench/coffer-bench-uniform.png"));
    }

    #[test]
    fn a_duration_lifts_the_default_total_and_addresses_name_a_cluster() {
        let args = BenchArgs::try_parse_from([
            "coffer-bench",
            "--addresses",
            "10.0.0.1:7101,10.0.0.2:7101",
            "--pids",
            "11,12",
            "--duration",
            "30s",
            "--distribution",
            "hot",
            "--rate",
            "50000",
            "--tls-dir",
            "/etc/coffer/tls",
            "--principal",
            "bench",
        ])
        .unwrap();
        let config = args.resolve(None).unwrap();
        assert_eq!(config.transfers, None);
        assert_eq!(config.distribution, DistributionConfig::Hot { hot: 10 });
        assert_eq!(
            config.target,
            Target::Remote {
                addresses: vec!["10.0.0.1:7101".into(), "10.0.0.2:7101".into()],
                pids: vec![11, 12],
                tls: Some(TlsFiles::in_dir(std::path::Path::new("/etc/coffer/tls"), "bench")),
            }
        );
    }

    #[test]
    fn impossible_combinations_are_usage_errors() {
        assert!(BenchArgs::try_parse_from(["coffer-bench", "--batch-size", "8190"]).is_err());
        assert!(BenchArgs::try_parse_from(["coffer-bench", "--pids", "1"]).is_err());
        let args = BenchArgs::try_parse_from(["coffer-bench", "--accounts", "10", "--distribution", "hot"]).unwrap();
        assert_eq!(args.resolve(None).unwrap_err().flag, "hot-accounts");
        let args = BenchArgs::try_parse_from(["coffer-bench", "--accounts", "1000000", "--ledgers", "5"]).unwrap();
        assert_eq!(args.resolve(None).unwrap_err().flag, "accounts");
    }
}
