//! Calls to `LedgerService` with decimal amounts, following the leader.
//!
//! The Rust [`coffer_api::client::Client`] speaks minor units; the command
//! line speaks decimal amounts at the ledger's scale and lets the server
//! convert them (`AMOUNT_UNIT_DECIMAL`), so the ledger calls go through the
//! generated client here, with the same retry rules as `Client`: a call is
//! sent again, unchanged (so a write keeps its ids and a retry of an applied
//! write answers `exists`), on `UNAVAILABLE` (at the leader the answer names,
//! else at the next address) and on `RESOURCE_EXHAUSTED` (after a backoff),
//! within one deadline across all tries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use coffer_api::proto::ledger_service_client::LedgerServiceClient;
use coffer_api::server::MESSAGE_BYTES_MAX;
use coffer_api::status::{is_retryable, leader_hint};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::CliError;

/// The most tries of one call.
const ATTEMPTS_MAX: u32 = 32;
/// The first backoff before a retry; it doubles up to [`BACKOFF_MAX_MS`].
const BACKOFF_MIN_MS: u64 = 10;
/// The longest backoff.
const BACKOFF_MAX_MS: u64 = 1_000;
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Connections kept open (the configured nodes and leaders they name).
const CHANNELS_MAX: usize = 16;

/// Connections to some of a cluster's nodes.
#[derive(Debug)]
pub struct Conn {
    addresses: Vec<String>,
    timeout_ms: u64,
    stale: bool,
    channels: Mutex<HashMap<String, Channel>>,
    /// The node that answered last (the leader, after a write).
    preferred: Mutex<String>,
}

/// A `host:port` address as a lazily connecting endpoint.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    coffer_security::tls::endpoint(address, Duration::from_millis(CONNECT_TIMEOUT_MS))
}

impl Conn {
    /// Connections (made lazily) to the nodes at `addresses`; every call
    /// has `timeout_ms` across all its tries; reads are `stale` or not.
    pub fn new(addresses: &[String], timeout_ms: u64, stale: bool) -> Result<Self, CliError> {
        let usage = |reason: String| CliError::Usage { field: "--addresses".into(), reason };
        let Some(first) = addresses.first() else {
            return Err(usage("at least one node address (host:port) is needed".into()));
        };
        for address in addresses {
            endpoint(address).map_err(usage)?;
        }
        Ok(Self {
            addresses: addresses.to_vec(),
            timeout_ms,
            stale,
            channels: Mutex::new(HashMap::new()),
            preferred: Mutex::new(first.clone()),
        })
    }

    /// The configured addresses.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The deadline of one call, across its tries.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Whether reads may be stale.
    pub fn stale(&self) -> bool {
        self.stale
    }

    /// A `LedgerService` client of the node at `address`.
    pub fn ledger_client(&self, address: &str) -> Result<LedgerServiceClient<Channel>, CliError> {
        let channel = self.channel(address)?;
        Ok(LedgerServiceClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    fn channel(&self, address: &str) -> Result<Channel, CliError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        // A leader hint names an address from the cluster's configuration.
        let endpoint =
            endpoint(address).map_err(|reason| CliError::Usage { field: "leader address".into(), reason })?;
        let channel = super::security().connect_lazy(endpoint, coffer_security::Expect::Any);
        if channels.len() >= CHANNELS_MAX {
            channels.clear();
        }
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    fn preferred(&self) -> String {
        self.preferred.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn prefer(&self, address: &str) {
        address.clone_into(&mut self.preferred.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The configured address after `address` (round robin).
    pub fn next_address(&self, address: &str) -> String {
        let at =
            self.addresses.iter().position(|known| known == address).map_or(0, |at| (at + 1) % self.addresses.len());
        self.addresses.get(at).cloned().unwrap_or_else(|| address.to_owned())
    }

    /// Sends `message` to `LedgerService.{rpc}` until it is answered, a
    /// failure is final, the tries run out or the deadline passes.
    pub async fn call<Req, Resp, F, Fut>(&self, rpc: &'static str, message: Req, send: F) -> Result<Resp, CliError>
    where
        Req: Clone,
        F: Fn(LedgerServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let deadline = Instant::now() + Duration::from_millis(self.timeout_ms);
        let mut backoff = Duration::from_millis(BACKOFF_MIN_MS);
        let mut address = self.preferred();
        let mut followed_hint = false;
        let mut last = String::from("none");
        for attempt in 1..=ATTEMPTS_MAX {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let expired =
                |last: String| CliError::Deadline { rpc, timeout_ms: self.timeout_ms, attempts: attempt, last };
            if remaining.is_zero() {
                return Err(expired(last));
            }
            let mut request = Request::new(message.clone());
            request.set_timeout(remaining);
            let status = match tokio::time::timeout(remaining, send(self.ledger_client(&address)?, request)).await {
                Err(_) => return Err(expired(last)),
                Ok(Ok(response)) => {
                    self.prefer(&address);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
            };
            if !is_retryable(status.code()) || attempt == ATTEMPTS_MAX {
                return Err(CliError::rpc(rpc, &address, &status));
            }
            last = format!("{address} answered {:?}: {}", status.code(), status.message());
            let hint = leader_hint(&status).filter(|hint| *hint != address);
            let wait = match (status.code(), hint) {
                // Follow a leader hint at once, unless the last try followed
                // one too (hints that chase each other back off).
                (Code::Unavailable, Some(leader)) => {
                    address = leader;
                    std::mem::replace(&mut followed_hint, true)
                }
                (Code::Unavailable, None) => {
                    address = self.next_address(&address);
                    followed_hint = false;
                    true
                }
                _ => {
                    followed_hint = false;
                    true
                }
            };
            if wait {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                backoff = (backoff * 2).min(Duration::from_millis(BACKOFF_MAX_MS));
            }
        }
        Err(CliError::Deadline { rpc, timeout_ms: self.timeout_ms, attempts: ATTEMPTS_MAX, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_host_and_port() {
        assert!(endpoint("127.0.0.1:7101").is_ok());
        assert!(endpoint("node-1.treasury:7101").is_ok());
        for bad in ["127.0.0.1", ":7101", "host:port", "host:70000"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_address_goes_round_robin() {
        let addresses = ["a:1".to_owned(), "b:2".to_owned(), "c:3".to_owned()];
        let conn = Conn::new(&addresses, 1_000, false).unwrap();
        assert_eq!(conn.next_address("a:1"), "b:2");
        assert_eq!(conn.next_address("c:3"), "a:1");
        assert_eq!(conn.next_address("leader:9"), "a:1");
        assert!(Conn::new(&[], 1_000, false).is_err());
    }
}
