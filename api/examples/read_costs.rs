//! `read_costs`: times the reads whose cost used to grow with the ledger —
//! both regions' state digests, the trial balance now and as of a past
//! timestamp, an account's balance as of that timestamp, and indexed
//! queries of transfers and accounts — against a running primary and
//! standby region, and says which took longer than a bound.
//!
//! `scripts/read-costs.sh` (`make read-costs`) runs it on a loaded
//! `coffer dev --dr` cluster while a probe load runs.
//!
//! ```text
//! read_costs --primary 127.0.0.1:7101 --standby 127.0.0.1:7111 --ledger 9001 --account ID [--rounds 20] [--pause-ms 250] [--bound-ms 50]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use coffer_api::client::{Client, ClientConfig};
use coffer_dr::proto::dr_service_client::DrServiceClient;
use coffer_dr::proto::DigestRequest;
use coffer_ledger::{AccountFilter, AccountId, AccountKind, LedgerId, QueryFilter, TransferKind};

/// What the tool was asked.
struct Args {
    primary: String,
    standby: String,
    ledger: u32,
    account: u128,
    rounds: usize,
    pause_ms: u64,
    bound_ms: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        primary: String::new(),
        standby: String::new(),
        ledger: 0,
        account: 0,
        rounds: 20,
        pause_ms: 250,
        bound_ms: 50.0,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| value.parse::<u128>().map_err(|_| format!("{what}: {value:?} is not a number"));
        match flag.as_str() {
            "--primary" => args.primary = value.clone(),
            "--standby" => args.standby = value.clone(),
            "--ledger" => args.ledger = u32::try_from(number("--ledger")?).map_err(|_| "--ledger: too large")?,
            "--account" => args.account = number("--account")?,
            "--rounds" => args.rounds = usize::try_from(number("--rounds")?).map_err(|_| "--rounds: too large")?,
            "--pause-ms" => {
                args.pause_ms = u64::try_from(number("--pause-ms")?).map_err(|_| "--pause-ms: too large")?
            }
            "--bound-ms" => args.bound_ms = value.parse().map_err(|_| format!("--bound-ms: {value:?}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.primary.is_empty() || args.standby.is_empty() || args.ledger == 0 || args.account == 0 {
        return Err("--primary, --standby, --ledger and --account are required".into());
    }
    Ok(args)
}

/// The latencies of one kind of read, in milliseconds.
#[derive(Default)]
struct Samples {
    name: &'static str,
    millis: Vec<f64>,
}

impl Samples {
    fn percentile(&self, share: f64) -> f64 {
        let mut sorted = self.millis.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
    }
}

/// Times `read` once, adding its latency to `samples`.
async fn time<T, E: std::fmt::Display>(
    samples: &mut Samples,
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    let started = Instant::now();
    let value = read.await.map_err(|error| format!("{}: {error}", samples.name))?;
    samples.millis.push(started.elapsed().as_secs_f64() * 1e3);
    Ok(value)
}

async fn digest(address: &str) -> Result<String, String> {
    let mut client = DrServiceClient::connect(format!("http://{address}")).await.map_err(|error| error.to_string())?;
    let response = client.digest(DigestRequest {}).await.map_err(|error| error.to_string())?.into_inner();
    Ok(response.digest)
}

async fn run(args: Args) -> Result<bool, String> {
    let client = Client::new(ClientConfig::new(args.primary.split(',').map(str::to_owned).collect()))
        .map_err(|error| error.to_string())?;
    let ledger = LedgerId(args.ledger);
    // A timestamp in the middle of the ledger's transfers (most likely
    // inside a batch: the as-of reads then replay part of one).
    let any = QueryFilter { ledger, ..QueryFilter::all(1) };
    let first = client.query_transfers(&any).await.map_err(|error| error.to_string())?.value;
    let last = client.query_transfers(&QueryFilter { reversed: true, ..any }).await.map_err(|e| e.to_string())?.value;
    let (Some(first), Some(last)) = (first.transfers.first(), last.transfers.first()) else {
        return Err(format!("ledger {} has no transfers", args.ledger));
    };
    let as_of = first.timestamp + (last.timestamp - first.timestamp) / 2;
    println!(
        "as-of timestamp {as_of} (between the first transfer at {} and the last at {})",
        first.timestamp, last.timestamp
    );

    let names = [
        "digest (primary)",
        "digest (standby)",
        "trial balance",
        "trial balance as of",
        "account balance as of",
        "query transfers (3 indexes)",
        "query accounts (2 indexes)",
    ];
    let mut samples: Vec<Samples> = names.iter().map(|name| Samples { name, millis: Vec::new() }).collect();
    let primary_node = args.primary.split(',').next().unwrap_or_default().to_owned();
    let standby_node = args.standby.split(',').next().unwrap_or_default().to_owned();
    let account = AccountId(args.account);
    for _ in 0..args.rounds {
        let [digest_primary, digest_standby, trial, trial_as_of, balance_as_of, transfers, accounts] = &mut samples[..]
        else {
            unreachable!("seven kinds of read")
        };
        time(digest_primary, digest(&primary_node)).await?;
        time(digest_standby, digest(&standby_node)).await?;
        let trial = time(trial, client.trial_balance(ledger)).await?;
        if !trial.value.total.is_balanced() {
            return Err(format!("ledger {} is not balanced: {:?}", args.ledger, trial.value.total));
        }
        time(trial_as_of, client.trial_balance_as_of(ledger, as_of)).await?;
        let filter = AccountFilter { timestamp_max: as_of, reversed: true, ..AccountFilter::all(account, 1) };
        time(balance_as_of, client.get_account_balances(&filter)).await?;
        let query =
            QueryFilter { ledger, kind: TransferKind::Expenditure.code(), user_data_32: 5, ..QueryFilter::all(100) };
        time(transfers, client.query_transfers(&query)).await?;
        let query = QueryFilter { ledger, kind: AccountKind::Cash.code(), ..QueryFilter::all(100) };
        time(accounts, client.query_accounts(&query)).await?;
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    println!("{:<30} {:>6} {:>9} {:>9} {:>9}", "read", "calls", "p50 ms", "p99 ms", "max ms");
    let mut within = true;
    for kind in &samples {
        let max = kind.percentile(1.0);
        let verdict = if max <= args.bound_ms { "" } else { "  OVER THE BOUND" };
        within &= max <= args.bound_ms;
        println!(
            "{:<30} {:>6} {:>9.1} {:>9.1} {:>9.1}{verdict}",
            kind.name,
            kind.millis.len(),
            kind.percentile(0.5),
            kind.percentile(0.99),
            max
        );
    }
    println!("bound {} ms: {}", args.bound_ms, if within { "every read within it" } else { "exceeded" });
    Ok(within)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("read_costs: {error}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("read_costs: {error}");
            ExitCode::FAILURE
        }
    }
}
