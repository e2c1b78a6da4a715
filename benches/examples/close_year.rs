//! Measures a year-end close of a large ledger on a running cluster, and
//! the pause it causes for writers of other ledgers.
//!
//! ```sh
//! coffer dev --data-dir /tmp/closedev      # another shell
//! cargo run --release -p coffer-benches --example close_year -- \
//!     127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 /tmp/closedev/tls 100000
//! ```
//!
//! It creates two ledgers (a year and the next), `accounts` accounts in the
//! year (half nominal, half carried, each given a balance by one transfer),
//! then closes the year while one client posts batches of 100 transfers to
//! another ledger back to back, and prints the close's time and entries and
//! that writer's batch latencies before and during the close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_api::client::{Client, ClientConfig};
use coffer_ledger::{
    Account, AccountId, AccountKind, CodeRange, Ledger, LedgerId, Transfer, TransferId, TransferKind, YearClose,
    BATCH_EVENTS_MAX,
};
use coffer_security::{Security, TlsContext, TlsFiles};

const YEAR: LedgerId = LedgerId(3_027);
const NEXT: LedgerId = LedgerId(3_028);
const OTHER: LedgerId = LedgerId(3_099);
const FIRST_ACCOUNT: u128 = 30_000_000;
const POSITION: AccountId = AccountId(39_000_000);
const OPENING: AccountId = AccountId(49_000_000);
const WRITER_BATCH: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

fn summary(name: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{name}: {} batches, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: close_year ADDRESSES TLS_DIR ACCOUNTS";
    let addresses: Vec<String> = args.get(1).ok_or(usage)?.split(',').map(str::to_owned).collect();
    let tls = TlsContext::load(TlsFiles::in_dir(std::path::Path::new(args.get(2).ok_or(usage)?), "admin"))?;
    let accounts: u128 = args.get(3).ok_or(usage)?.parse()?;
    let mut config = ClientConfig::new(addresses);
    config.deadline_ms = 600_000;
    config.security = Security::Tls(tls);
    let client = Client::new(config)?;

    let ledgers = [
        Ledger::new(YEAR, "KRW", 0, "Measured year"),
        Ledger::new(NEXT, "KRW", 0, "Next year"),
        Ledger::new(OTHER, "KRW", 0, "Another fund"),
    ];
    client.create_ledgers(&ledgers).await?;
    let mut all: Vec<Account> = (0..accounts)
        .map(|i| {
            let (code, kind) = match i % 4 {
                0 => (101, AccountKind::Cash),
                1 => (201, AccountKind::Other),
                2 => (401, AccountKind::Other),
                _ => (501, AccountKind::Other),
            };
            Account { id: AccountId(FIRST_ACCOUNT + i), ledger: YEAR, code, kind, ..Default::default() }
        })
        .collect();
    all.push(Account { id: POSITION, ledger: YEAR, code: 300, ..Default::default() });
    all.push(Account { id: OPENING, ledger: NEXT, code: 399, ..Default::default() });
    all.push(Account { id: AccountId(1), ledger: OTHER, code: 101, kind: AccountKind::Cash, ..Default::default() });
    all.push(Account { id: AccountId(2), ledger: OTHER, code: 401, ..Default::default() });
    let started = Instant::now();
    for chunk in all.chunks(BATCH_EVENTS_MAX) {
        client.create_accounts(chunk).await?;
    }
    // Account 4k+2 (revenue) and 4k (cash), 4k+3 (expense) and 4k+1 (payable).
    let transfers: Vec<Transfer> = (0..accounts / 2)
        .map(|k| {
            let (debit, credit) = match k % 2 {
                0 => (2 * k, 2 * k + 2),
                _ => (2 * k + 1, 2 * k - 1),
            };
            Transfer {
                id: TransferId(FIRST_ACCOUNT + k),
                debit_account_id: AccountId(FIRST_ACCOUNT + debit),
                credit_account_id: AccountId(FIRST_ACCOUNT + credit),
                amount: 1_000 + k,
                ledger: YEAR,
                code: 1,
                kind: TransferKind::Journal,
                ..Default::default()
            }
        })
        .filter(|t| t.credit_account_id.0 < FIRST_ACCOUNT + accounts)
        .collect();
    for chunk in transfers.chunks(BATCH_EVENTS_MAX) {
        client.create_transfers(chunk).await?;
    }
    println!("set up {accounts} accounts and {} transfers in {:?}", transfers.len(), started.elapsed());

    // The other fund's writer: back-to-back batches, latency of each.
    let closing = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, closing, done) = (client.clone(), closing.clone(), done.clone());
        tokio::spawn(async move {
            let (mut before, mut during) = (Vec::new(), Vec::new());
            let mut id = 900_000_000u128;
            while !done.load(Ordering::Relaxed) {
                let batch: Vec<Transfer> = (0..WRITER_BATCH)
                    .map(|_| {
                        id += 1;
                        Transfer {
                            id: TransferId(id),
                            debit_account_id: AccountId(1),
                            credit_account_id: AccountId(2),
                            amount: 1,
                            ledger: OTHER,
                            code: 1,
                            kind: TransferKind::Receipt,
                            ..Default::default()
                        }
                    })
                    .collect();
                let sent = Instant::now();
                if client.create_transfers(&batch).await.is_err() {
                    continue;
                }
                let latency = sent.elapsed();
                if closing.load(Ordering::Relaxed) {
                    during.push(latency)
                } else {
                    before.push(latency)
                }
            }
            (before, during)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    closing.store(true, Ordering::Relaxed);
    let close = YearClose {
        ledger: YEAR,
        next_ledger: NEXT,
        net_position: POSITION,
        opening_account: OPENING,
        nominal: vec![CodeRange { min: 400, max: 599 }],
        carry: vec![CodeRange { min: 100, max: 300 }],
        account_offset: 100_000_000,
        first_transfer_id: 1 << 80,
        code: 99,
    };
    let started = Instant::now();
    let closed = client.close_fiscal_year(&close).await?;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (before, during) = writer.await?;
    println!(
        "close: {} in {elapsed:?} (server {} ms, {} entries): {} closing, {} opening transfers, {} accounts opened",
        closed.result,
        closed.elapsed_ms,
        closed.entries,
        closed.closing_transfers,
        closed.opening_transfers,
        closed.accounts_opened
    );
    summary("other ledger's writer before the close", before);
    summary("other ledger's writer during the close", during);
    Ok(())
}
