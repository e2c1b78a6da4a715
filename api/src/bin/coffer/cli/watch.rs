//! `coffer watch`: the `SubscribeChanges` feed, one line (or JSON object)
//! per committed change, until Ctrl-C.
//!
//! A change's cursor is the same on every node, so when a feed breaks (the
//! node stopped, a network failure) the command reconnects — to the leader
//! a refusal names, else to the next address — with `after` = the last
//! cursor printed, and prints every later change exactly once, in order.

use std::cell::Cell;
use std::time::Duration;

use coffer_api::proto;
use coffer_api::status::leader_hint;
use tonic::{Code, Status};

use super::conn::Conn;
use super::ledger::DECIMAL;
use super::view::ChangeView;
use super::{CliError, Out, WatchArgs};

/// Failed tries in a row (connecting or a broken feed) before giving up.
const WATCH_TRIES_MAX: u32 = 60;
/// The first wait before reconnecting; it doubles up to [`BACKOFF_MAX_MS`].
const BACKOFF_MIN_MS: u64 = 100;
/// The longest wait before reconnecting.
const BACKOFF_MAX_MS: u64 = 2_000;
const RPC: &str = "SubscribeChanges";

/// How one connection's feed ended.
enum Ended {
    /// It may work again: at this address, for this reason.
    Retry { address: String, reason: String },
    /// It cannot.
    Fatal(CliError),
}

/// Whether a failure of the feed may pass on a reconnect.
fn reconnectable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
    )
}

/// `coffer watch`
pub async fn run(conn: &Conn, out: Out, args: WatchArgs) -> Result<(), CliError> {
    let cursor = Cell::new(args.after);
    tokio::select! {
        result = follow(conn, out, args.ledger.unwrap_or(0), &cursor) => result,
        signal = tokio::signal::ctrl_c() => {
            signal?;
            let cursor = cursor.get();
            eprintln!("watch: stopped; resume with --after {cursor}");
            Ok(())
        }
    }
}

/// Follows the feed across reconnects; `cursor` is the last change printed.
async fn follow(conn: &Conn, out: Out, ledger: u32, cursor: &Cell<u64>) -> Result<(), CliError> {
    let Some(mut address) = conn.addresses().first().cloned() else {
        return Err(CliError::usage("--addresses", "at least one node address (host:port) is needed"));
    };
    let mut failures = 0;
    let mut backoff = Duration::from_millis(BACKOFF_MIN_MS);
    loop {
        let before = cursor.get();
        let (next, reason) = match stream(conn, out, &address, ledger, cursor).await {
            Ended::Retry { address, reason } => (address, reason),
            Ended::Fatal(error) => return Err(error),
        };
        if cursor.get() != before {
            failures = 0;
            backoff = Duration::from_millis(BACKOFF_MIN_MS);
        }
        failures += 1;
        if failures >= WATCH_TRIES_MAX {
            return Err(CliError::WatchGaveUp { attempts: failures, cursor: cursor.get(), last: reason });
        }
        eprintln!("watch: {reason}; reconnecting to {next} after cursor {}", cursor.get());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(BACKOFF_MAX_MS));
        address = next;
    }
}

/// Where to reconnect after `status` from `address`, and why.
fn retry(conn: &Conn, address: &str, status: &Status) -> Ended {
    let next = leader_hint(status).unwrap_or_else(|| conn.next_address(address));
    Ended::Retry { address: next, reason: format!("{address} answered {:?}: {}", status.code(), status.message()) }
}

/// Prints the feed of the node at `address` from just after `cursor`.
async fn stream(conn: &Conn, out: Out, address: &str, ledger: u32, cursor: &Cell<u64>) -> Ended {
    let mut client = match conn.ledger_client(address) {
        Ok(client) => client,
        Err(error) => return Ended::Fatal(error),
    };
    let request = proto::SubscribeChangesRequest { after: cursor.get(), ledger, amount_unit: DECIMAL };
    let opened = tokio::time::timeout(Duration::from_millis(conn.timeout_ms()), client.subscribe_changes(request));
    let mut feed = match opened.await {
        Err(_) => {
            let reason = format!("{address} did not answer within {} ms", conn.timeout_ms());
            return Ended::Retry { address: conn.next_address(address), reason };
        }
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) if reconnectable(status.code()) => return retry(conn, address, &status),
        Ok(Err(status)) => return Ended::Fatal(CliError::rpc(RPC, address, &status)),
    };
    loop {
        match feed.message().await {
            Ok(Some(change)) => {
                let view = ChangeView::from(&change);
                let printed = if out.json { out.json(&view) } else { out.text(&format!("{}\n", view.line())) };
                if let Err(error) = printed {
                    return Ended::Fatal(error);
                }
                cursor.set(change.cursor);
            }
            Ok(None) => {
                let reason = format!("{address} ended the feed");
                return Ended::Retry { address: conn.next_address(address), reason };
            }
            Err(status) if reconnectable(status.code()) => return retry(conn, address, &status),
            Err(status) => return Ended::Fatal(CliError::rpc(RPC, address, &status)),
        }
    }
}
