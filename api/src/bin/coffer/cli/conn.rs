//! Calls to `LedgerService` with decimal amounts, through the Rust client.
//!
//! The typed [`Client`] methods speak minor units; the command line speaks
//! decimal amounts at the ledger's scale and lets the server convert them
//! (`AMOUNT_UNIT_DECIMAL`), so the command line builds its own messages and
//! sends them with [`Client::ledger_call`]: the client's connections, its
//! leader-following and its retry rules (the same message sent again, so a
//! retried write answers `exists`), within one deadline across all tries.

use std::future::Future;
use std::time::Duration;

use coffer_api::client::{Client, ClientConfig, ClientError};
use coffer_api::proto::ledger_service_client::LedgerServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::CliError;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// A cluster as the command line reaches it.
#[derive(Debug)]
pub struct Conn {
    client: Client,
}

/// A `host:port` address as a lazily connecting endpoint.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    coffer_security::tls::endpoint(address, Duration::from_millis(CONNECT_TIMEOUT_MS))
}

impl Conn {
    /// Connections (made lazily) to the nodes at `addresses`; every call
    /// has `timeout_ms` across all its tries; reads are `stale` or not.
    pub fn new(addresses: &[String], timeout_ms: u64, stale: bool) -> Result<Self, CliError> {
        if addresses.is_empty() {
            return Err(CliError::usage("--addresses", "at least one node address (host:port) is needed"));
        }
        let config = ClientConfig {
            deadline_ms: timeout_ms,
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            stale_reads: stale,
            ..super::client_config(addresses.to_vec())
        };
        let client = Client::new(config).map_err(|error| CliError::usage("--addresses", error.to_string()))?;
        Ok(Self { client })
    }

    /// The configured addresses.
    pub fn addresses(&self) -> &[String] {
        &self.client.config().addresses
    }

    /// The deadline of one call, across its tries.
    pub fn timeout_ms(&self) -> u64 {
        self.client.config().deadline_ms
    }

    /// Whether reads may be stale.
    pub fn stale(&self) -> bool {
        self.client.config().stale_reads
    }

    /// A `LedgerService` client of the node at `address`.
    pub fn ledger_client(&self, address: &str) -> Result<LedgerServiceClient<Channel>, CliError> {
        self.client.ledger_service(address).map_err(|error| CliError::usage("leader address", error.to_string()))
    }

    /// The configured address after `address` (round robin).
    pub fn next_address(&self, address: &str) -> String {
        self.client.next_address(address)
    }

    /// Sends `message` to `LedgerService.{rpc}` until it is answered, a
    /// failure is final, the tries run out or the deadline passes.
    pub async fn call<Req, Resp, F, Fut>(&self, rpc: &'static str, message: Req, send: F) -> Result<Resp, CliError>
    where
        Req: Clone,
        F: Fn(LedgerServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.client.ledger_call(message, send).await.map_err(|error| match error {
            ClientError::Status { address, status, .. } => CliError::rpc(rpc, &address, &status),
            ClientError::Deadline { deadline_ms, attempts, last } => {
                CliError::Deadline { rpc, timeout_ms: deadline_ms, attempts, last }
            }
            error => CliError::Client { rpc, error },
        })
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
        let bad = Conn::new(&["127.0.0.1".to_owned()], 1_000, false).unwrap_err();
        assert!(bad.to_string().starts_with("--addresses: "), "{bad}");
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
