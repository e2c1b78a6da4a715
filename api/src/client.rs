//! The Rust client of a Coffer cluster.
//!
//! A [`Client`] is built from the client addresses of some of the cluster's
//! nodes. It sends each call to the node that last answered (at first the
//! first address), follows the leader a node names (`coffer-leader`), and
//! retries what may succeed on a retry — `UNAVAILABLE` (at the leader it
//! names, or at the next address) and `RESOURCE_EXHAUSTED` (after a
//! backoff) — with the **same request**, so a write carries the same ids
//! each time and a retry of a write that did apply gets `exists`. Each call
//! has one deadline across all its tries ([`ClientConfig::deadline_ms`]).
//!
//! It speaks ledger types: amounts travel in minor units
//! (`AMOUNT_UNIT_MINOR`), so the client needs no ledger scale.
//!
//! [`Client::subscribe_changes`] follows the change log as a [`ChangeFeed`]:
//! when its node fails (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`, a read past its
//! deadline, a stream that ends), it resumes at the next address after the
//! last cursor it delivered, so the caller sees every change exactly once,
//! in order.
//!
//! ```no_run
//! # async fn run() -> Result<(), coffer_api::client::ClientError> {
//! use coffer_api::client::{Client, ClientConfig};
//! use coffer_ledger::{Ledger, LedgerId};
//!
//! let client = Client::new(ClientConfig::new(vec!["127.0.0.1:7100".into(), "127.0.0.1:7101".into()]))?;
//! let krw = Ledger::new(LedgerId(1), "KRW", 0, "Won");
//! let reply = client.create_ledgers(&[krw]).await?;
//! println!("{:?} at index {}", reply.value, reply.applied_index);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use coffer_ledger::{
    Account, AccountBalance, AccountFilter, AccountId, ChangedRecord, CreateAccountResult, CreateLedgerResult,
    CreateTransferResult, Ledger, LedgerId, PeriodChange, QueryFilter, SetPeriodResult, Transfer, TransferBalances,
    TransferId, TransferQuery, TrialBalance, YearClose,
};
use coffer_security::tls::endpoint;
use coffer_security::{Expect, Security};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::convert::{self, Amounts, FieldError, ResultName};
use crate::packed;
use crate::proto;
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::ledger_service_client::LedgerServiceClient;
use crate::server::MESSAGE_BYTES_MAX;
use crate::status;

/// The default deadline of one call, across all its tries.
pub const DEADLINE_MS_DEFAULT: u64 = 30_000;
/// The default bound on tries of one call.
pub const ATTEMPTS_MAX_DEFAULT: u32 = 32;
/// The default first backoff; it doubles after each retry, up to the max.
pub const BACKOFF_MIN_MS_DEFAULT: u64 = 10;
/// The default longest backoff.
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 1_000;
/// The default connection timeout.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// Connections kept open (to the configured nodes and the leaders they name).
const CHANNELS_MAX: usize = 64;

/// How a client reaches the cluster. Every bound has a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Client addresses (`host:port`) of one or more nodes.
    pub addresses: Vec<String>,
    /// The deadline of one call, across all its tries.
    pub deadline_ms: u64,
    /// The most tries of one call.
    pub attempts_max: u32,
    /// The first backoff before a retry; it doubles up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// The longest backoff.
    pub backoff_max_ms: u64,
    /// How long a connection attempt may take.
    pub connect_timeout_ms: u64,
    /// Read from whichever node answers without confirming with the leader
    /// (faster; may be behind). Default: `false` (linearizable reads).
    pub stale_reads: bool,
    /// TLS with this client's certificate, or plaintext for a cluster
    /// configured `insecure = true`. Default: plaintext.
    pub security: Security,
}

impl ClientConfig {
    /// The defaults, for these node addresses.
    pub fn new(addresses: Vec<String>) -> Self {
        Self {
            addresses,
            deadline_ms: DEADLINE_MS_DEFAULT,
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            backoff_min_ms: BACKOFF_MIN_MS_DEFAULT,
            backoff_max_ms: BACKOFF_MAX_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            stale_reads: false,
            security: Security::Insecure,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration is invalid.
    #[error("invalid client configuration: {field}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The request is invalid (refused before it was sent).
    #[error("invalid request: {0}")]
    Invalid(FieldError),
    /// A node answered with an error that a retry cannot fix, or the last
    /// of `attempts` tries still failed.
    #[error("{address} answered {:?}: {}{}", status.code(), status.message(), after_tries(*attempts))]
    Status {
        /// The node that answered.
        address: String,
        /// Its answer.
        status: Status,
        /// Tries made.
        attempts: u32,
    },
    /// The call's deadline passed. For a write, the outcome is unknown:
    /// send it again with the same ids.
    #[error("no answer within the deadline of {deadline_ms} ms ({attempts} tries; last: {last})")]
    Deadline {
        /// The deadline.
        deadline_ms: u64,
        /// Tries made.
        attempts: u32,
        /// The last failure seen, if any.
        last: String,
    },
    /// A node's answer does not decode (a server of another version?).
    #[error("the answer does not decode: {0}")]
    Decode(FieldError),
}

/// How many tries an answer took, when it took more than one.
fn after_tries(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} tries)")
    } else {
        String::new()
    }
}

impl ClientError {
    /// The gRPC code the cluster answered with, if it answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { status, .. } => Some(status.code()),
            Self::Deadline { .. } => Some(Code::DeadlineExceeded),
            Self::Config { .. } | Self::Invalid(_) | Self::Decode(_) => None,
        }
    }
}

/// An answer with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<T> {
    /// The answer.
    pub value: T,
    /// The node that applied the write or served the read.
    pub node_id: u64,
    /// For a write: the log index that applied it. For a read: the applied
    /// index of the state read.
    pub applied_index: u64,
    /// Whether the read was stale (not confirmed with the leader).
    pub stale: bool,
}

impl<T> Reply<T> {
    fn new(served: Option<proto::Served>, value: T) -> Self {
        let served = served.unwrap_or_default();
        Self { value, node_id: served.node_id, applied_index: served.applied_index, stale: served.stale }
    }
}

/// The transfers a [`TransferQuery`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferQueryPage {
    /// The matching transfers, in the query's order.
    pub transfers: Vec<Transfer>,
    /// `0` when the whole range was examined; otherwise continue the query
    /// with `timestamp_min` (oldest first) or `timestamp_max` (newest first)
    /// set to this value.
    pub next_timestamp: u64,
}

/// A page of [`Client::query_accounts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountQueryPage {
    /// The matching accounts, in the query's order, with their balances now.
    pub accounts: Vec<Account>,
    /// As in [`TransferQueryPage`].
    pub next_timestamp: u64,
}

/// One change a [`ChangeFeed`] delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedChange {
    /// The change's cursor (its event timestamp, the same on every node):
    /// a feed subscribed `after` it delivers the changes that follow it.
    pub cursor: u64,
    /// What changed, with the record: the ledger or the account as created
    /// (zero balances), the transfer created, or the pending transfer that
    /// expired. Amounts are in minor units.
    pub record: ChangedRecord,
    /// For a transfer created or expired: its debit and credit accounts'
    /// balances right after it (minor units).
    pub balances: Option<TransferBalances>,
    /// Who proposed the batch the change came from (empty for a pending
    /// transfer's expiry, the cluster's own work).
    pub principal: String,
    /// For a transfer that took a limited account of a budget ledger across
    /// the ledger's warning share: that account and the share it reached,
    /// in whole per cent.
    pub budget_warning: Option<(AccountId, u8)>,
    /// The node that served the change.
    pub node_id: u64,
    /// That node's applied index when it read the change.
    pub applied_index: u64,
}

/// Changes a [`ChangeFeed`] holds for its caller before it stops reading.
const FEED_BUFFER_CHANGES: usize = 64;

/// A feed of the ledger's changes, from [`Client::subscribe_changes`]: a
/// `Stream` of [`FeedChange`]s in cursor order, each delivered once. It ends
/// after an error it cannot resume from (delivered as its last item).
/// Dropping it stops the feed.
#[derive(Debug)]
pub struct ChangeFeed {
    receiver: mpsc::Receiver<Result<FeedChange, ClientError>>,
    task: JoinHandle<()>,
}

impl ChangeFeed {
    /// The next change; `None` once the feed ended.
    pub async fn next(&mut self) -> Option<Result<FeedChange, ClientError>> {
        self.receiver.recv().await
    }
}

impl tokio_stream::Stream for ChangeFeed {
    type Item = Result<FeedChange, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A node's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader.
    Follower,
    /// Campaigning.
    Candidate,
    /// Leads.
    Leader,
    /// Checking whether it could win before campaigning.
    PreCandidate,
}

/// One node's state, as `Status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// The node.
    pub node_id: u64,
    /// Its client address (empty: not in the address book).
    pub address: String,
    /// Its role (`None`: it did not answer).
    pub role: Option<Role>,
    /// Its term.
    pub term: u64,
    /// The leader it knows of (0: none).
    pub leader_id: u64,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Entries its applied index is behind the highest commit index reported.
    pub lag: u64,
    /// Voters in its configuration.
    pub voters: Vec<u64>,
    /// Learners in its configuration.
    pub learners: Vec<u64>,
    /// Why it could not be asked (`None`: it answered).
    pub error: Option<String>,
    /// It runs without TLS (`insecure = true`).
    pub plaintext: bool,
}

/// The membership after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The change's log index.
    pub index: u64,
    /// Voters.
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
}

/// A snapshot a node made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The node.
    pub node_id: u64,
    /// The applied index (and term) of the state it holds.
    pub applied_index: u64,
    /// See `applied_index`.
    pub applied_term: u64,
    /// Files in it.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// Where a call goes.
#[derive(Clone, Copy, Debug)]
enum Target<'a> {
    /// The leader (or any node, for reads): follow hints, try other addresses.
    Cluster,
    /// This node only.
    Node(&'a str),
}

struct Inner {
    config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
    /// The node that answered last (the leader, after a write).
    preferred: Mutex<String>,
}

/// A client of a Coffer cluster. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the cluster whose nodes are at `config.addresses`.
    /// Connects lazily: no node need be up yet.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let invalid = |field, reason: String| Err(ClientError::Config { field, reason });
        let Some(first) = config.addresses.first().cloned() else {
            return invalid("addresses", "at least one node address is needed".into());
        };
        for address in &config.addresses {
            if let Err(reason) = endpoint(address, Duration::ZERO) {
                return invalid("addresses", reason);
            }
        }
        if config.deadline_ms == 0 || config.attempts_max == 0 || config.connect_timeout_ms == 0 {
            return invalid("deadline_ms, attempts_max, connect_timeout_ms", "must be at least 1".into());
        }
        if config.backoff_min_ms == 0 || config.backoff_min_ms > config.backoff_max_ms {
            return invalid("backoff_min_ms", "must be at least 1 and at most backoff_max_ms".into());
        }
        let inner = Inner { config, channels: Mutex::new(HashMap::new()), preferred: Mutex::new(first) };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// A client sharing this one's connections whose reads are stale
    /// (served by whichever node answers, without confirming with the leader).
    pub fn with_stale_reads(&self, stale: bool) -> Self {
        let config = ClientConfig { stale_reads: stale, ..self.inner.config.clone() };
        let channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let preferred = self.preferred();
        Self { inner: Arc::new(Inner { config, channels: Mutex::new(channels), preferred: Mutex::new(preferred) }) }
    }

    fn preferred(&self) -> String {
        self.inner.preferred.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn prefer(&self, address: &str) {
        let mut preferred = self.inner.preferred.lock().unwrap_or_else(PoisonError::into_inner);
        if *preferred != address {
            address.clone_into(&mut preferred);
        }
    }

    /// The configured address after `address` (round robin): where a
    /// caller that follows the cluster itself (a change feed) goes next.
    pub fn next_address(&self, address: &str) -> String {
        let addresses = &self.inner.config.addresses;
        let at = addresses.iter().position(|known| known == address).map_or(0, |at| (at + 1) % addresses.len());
        addresses.get(at).cloned().unwrap_or_else(|| address.to_owned())
    }

    fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        let mut channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let timeout = Duration::from_millis(self.inner.config.connect_timeout_ms);
        // A leader hint names an address from the cluster's configuration;
        // one that is not an address fails the call rather than the client.
        let endpoint = endpoint(address, timeout)
            .map_err(|reason| ClientError::Decode(FieldError::new(status::LEADER_METADATA_KEY, reason)))?;
        let channel = self.inner.config.security.connect_lazy(endpoint, Expect::Any);
        if channels.len() >= CHANNELS_MAX {
            channels.clear();
        }
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends `message` until it is answered, a failure is final, the tries
    /// run out or the deadline passes. Every try sends the same message.
    async fn call<Req, Resp, F, Fut>(&self, target: Target<'_>, message: Req, rpc: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let config = &self.inner.config;
        let deadline = Instant::now() + Duration::from_millis(config.deadline_ms);
        let backoff_max = Duration::from_millis(config.backoff_max_ms);
        let mut backoff = Duration::from_millis(config.backoff_min_ms);
        let mut address = match target {
            Target::Cluster => self.preferred(),
            Target::Node(address) => address.to_owned(),
        };
        let mut followed_hint = false;
        let mut last = String::from("none");
        for attempt in 1..=config.attempts_max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let expired =
                || ClientError::Deadline { deadline_ms: config.deadline_ms, attempts: attempt, last: last.clone() };
            if remaining.is_zero() {
                return Err(expired());
            }
            let mut request = Request::new(message.clone());
            request.set_timeout(remaining);
            let status = match tokio::time::timeout(remaining, rpc(self.channel(&address)?, request)).await {
                Err(_) => return Err(expired()),
                Ok(Ok(response)) => {
                    if matches!(target, Target::Cluster) {
                        self.prefer(&address);
                    }
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
            };
            if !status::is_retryable(status.code()) || attempt == config.attempts_max {
                return Err(ClientError::Status { address, status, attempts: attempt });
            }
            last = format!("{address} answered {:?}: {}", status.code(), status.message());
            let hint = status::leader_hint(&status).filter(|hint| *hint != address);
            let wait = match (target, status.code(), hint) {
                // Follow a leader hint at once, unless the last try followed
                // one too (hints that chase each other back off).
                (Target::Cluster, Code::Unavailable, Some(leader)) => {
                    address = leader;
                    std::mem::replace(&mut followed_hint, true)
                }
                (Target::Cluster, Code::Unavailable, None) => {
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
                backoff = (backoff * 2).min(backoff_max);
            }
        }
        Err(ClientError::Deadline { deadline_ms: config.deadline_ms, attempts: config.attempts_max, last })
    }

    /// Sends a `LedgerService` request built by the caller (for example
    /// one with decimal amounts, which the typed methods do not speak) with
    /// this client's rules: the same message is sent again on `UNAVAILABLE`
    /// (at the leader the answer names, else at the next address) and on
    /// `RESOURCE_EXHAUSTED` (after a backoff), within one deadline.
    pub async fn ledger_call<Req, Resp, F, Fut>(&self, message: Req, rpc: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(LedgerServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.call(Target::Cluster, message, |channel, request| rpc(ledger_client(channel), request)).await
    }

    /// A `LedgerService` client of the node at `address`, over this
    /// client's shared connections, for a caller that handles one node's
    /// answers itself (a change feed).
    pub fn ledger_service(&self, address: &str) -> Result<LedgerServiceClient<Channel>, ClientError> {
        Ok(ledger_client(self.channel(address)?))
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Creates ledgers: one result per ledger.
    pub async fn create_ledgers(&self, ledgers: &[Ledger]) -> Result<Reply<Vec<CreateLedgerResult>>, ClientError> {
        convert::check_events("ledgers", ledgers.len()).map_err(ClientError::Invalid)?;
        let message = proto::CreateLedgersRequest { ledgers: ledgers.iter().map(convert::ledger_to_wire).collect() };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.create_ledgers(request).await })
            .await?;
        let results = results(&response.results, ledgers.len())?;
        Ok(Reply::new(response.served, results))
    }

    /// Moves ledgers' fiscal periods forward: one result per change
    /// (`changed`, or `unchanged` for a retry).
    pub async fn set_periods(&self, changes: &[PeriodChange]) -> Result<Reply<Vec<SetPeriodResult>>, ClientError> {
        convert::check_events("changes", changes.len()).map_err(ClientError::Invalid)?;
        let changes_wire = changes
            .iter()
            .map(|change| proto::PeriodChange {
                ledger: change.ledger.0,
                period: convert::period_to_wire(change.period) as i32,
            })
            .collect();
        let message = proto::SetPeriodsRequest { changes: changes_wire };
        let response =
            self.ledger_call(message, |mut client, request| async move { client.set_periods(request).await }).await?;
        let results = results(&response.results, changes.len())?;
        Ok(Reply::new(response.served, results))
    }

    /// Closes a fiscal year into the next (see `CloseFiscalYear`): the
    /// response's `result` is `finished`, `exists` for a retry of a finished
    /// close, or the refusal. Amounts in its trial balances are minor units.
    pub async fn close_fiscal_year(&self, close: &YearClose) -> Result<proto::CloseFiscalYearResponse, ClientError> {
        let message = proto::CloseFiscalYearRequest {
            ledger: close.ledger.0,
            next_ledger: close.next_ledger.0,
            net_position_account: close.net_position.0.to_string(),
            opening_account: close.opening_account.0.to_string(),
            nominal: convert::code_ranges_to_wire(&close.nominal),
            carry: convert::code_ranges_to_wire(&close.carry),
            account_offset: close.account_offset.to_string(),
            first_transfer_id: close.first_transfer_id.to_string(),
            code: u32::from(close.code),
            abort: false,
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        self.ledger_call(message, |mut client, request| async move { client.close_fiscal_year(request).await }).await
    }

    /// Imports a bank statement of cash account `account` (`format`:
    /// camt.053 or CSV) and reconciles it; the response's `result` is
    /// `recorded`, `rerun`, `unchanged` or the refusal. Amounts in minor units;
    /// dates at `utc_offset_minutes` from UTC; `window_days` 0: the default.
    pub async fn import_statement(
        &self,
        account: AccountId,
        format: proto::StatementFormat,
        content: Vec<u8>,
        window_days: u32,
        utc_offset_minutes: i32,
    ) -> Result<proto::ReconciliationResponse, ClientError> {
        let message = proto::ImportStatementRequest {
            account: account.0.to_string(),
            format: format as i32,
            content,
            window_days,
            utc_offset_minutes,
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        self.ledger_call(message, |mut client, request| async move { client.import_statement(request).await }).await
    }

    /// Matches lines and transfers of a statement's reconciliation by hand,
    /// saying why (the reconciliation keeps the reason and who gave it).
    pub async fn match_statement(
        &self,
        account: AccountId,
        statement: &str,
        lines: &[u32],
        transfers: &[TransferId],
        reason: &str,
    ) -> Result<proto::ReconciliationResponse, ClientError> {
        let message = proto::MatchStatementRequest {
            account: account.0.to_string(),
            statement: statement.to_owned(),
            lines: lines.to_vec(),
            transfers: transfers.iter().map(|id| id.0.to_string()).collect(),
            reason: reason.to_owned(),
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        self.ledger_call(message, |mut client, request| async move { client.match_statement(request).await }).await
    }

    /// The reconciliation of `account`'s statement `statement` (minor units).
    pub async fn reconciliation(
        &self,
        account: AccountId,
        statement: &str,
    ) -> Result<proto::ReconciliationResponse, ClientError> {
        let message = proto::GetReconciliationRequest {
            account: account.0.to_string(),
            statement: statement.to_owned(),
            amount_unit: proto::AmountUnit::Minor as i32,
            stale: false,
        };
        self.ledger_call(message, |mut client, request| async move { client.get_reconciliation(request).await }).await
    }

    /// Creates accounts: one result per account.
    pub async fn create_accounts(&self, accounts: &[Account]) -> Result<Reply<Vec<CreateAccountResult>>, ClientError> {
        convert::check_events("accounts", accounts.len()).map_err(ClientError::Invalid)?;
        let message = proto::CreateAccountsRequest {
            accounts: accounts.iter().map(|account| convert::account_to_wire(account, Amounts::Minor)).collect(),
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.create_accounts(request).await })
            .await?;
        let results = results(&response.results, accounts.len())?;
        Ok(Reply::new(response.served, results))
    }

    /// Creates transfers (and posts and voids pending ones): one result per
    /// transfer. Safe to call again with the same transfers after any
    /// failure: transfers already applied answer `exists`.
    pub async fn create_transfers(
        &self,
        transfers: &[Transfer],
    ) -> Result<Reply<Vec<CreateTransferResult>>, ClientError> {
        convert::check_events("transfers", transfers.len()).map_err(ClientError::Invalid)?;
        // Packed: no decimal text to format here or parse on the server.
        let message = proto::CreateTransfersRequest {
            transfers: Vec::new(),
            amount_unit: proto::AmountUnit::Minor as i32,
            packed_transfers: packed::transfers_to_packed(transfers),
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.create_transfers(request).await })
            .await?;
        let results = results(&response.results, transfers.len())?;
        Ok(Reply::new(response.served, results))
    }

    /// The accounts with these ids, one entry per id (`None`: no such account).
    pub async fn lookup_accounts(&self, ids: &[AccountId]) -> Result<Reply<Vec<Option<Account>>>, ClientError> {
        convert::check_batch("ids", ids.len()).map_err(ClientError::Invalid)?;
        let message = proto::LookupAccountsRequest {
            ids: ids.iter().map(|id| id.0.to_string()).collect(),
            stale: self.inner.config.stale_reads,
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.lookup_accounts(request).await })
            .await?;
        let found = response
            .accounts
            .iter()
            .enumerate()
            .map(|(i, account)| convert::account_from_wire("accounts", i, account, Amounts::Minor))
            .map(|account| account.map(|account| (account.id, account)))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(ClientError::Decode)?;
        let accounts = ids.iter().map(|id| found.get(id).copied()).collect();
        Ok(Reply::new(response.served, accounts))
    }

    /// The transfers with these ids, one entry per id (`None`: no such transfer).
    pub async fn lookup_transfers(&self, ids: &[TransferId]) -> Result<Reply<Vec<Option<Transfer>>>, ClientError> {
        convert::check_batch("ids", ids.len()).map_err(ClientError::Invalid)?;
        let message = proto::LookupTransfersRequest {
            ids: ids.iter().map(|id| id.0.to_string()).collect(),
            stale: self.inner.config.stale_reads,
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.lookup_transfers(request).await })
            .await?;
        let found = decode_transfers(&response.transfers)?
            .into_iter()
            .map(|transfer| (transfer.id, transfer))
            .collect::<BTreeMap<_, _>>();
        let transfers = ids.iter().map(|id| found.get(id).copied()).collect();
        Ok(Reply::new(response.served, transfers))
    }

    /// A page of the transfers that touched `filter.account_id`.
    pub async fn get_account_transfers(&self, filter: &AccountFilter) -> Result<Reply<Vec<Transfer>>, ClientError> {
        let message = proto::GetAccountTransfersRequest {
            filter: Some(convert::filter_to_wire(filter)),
            stale: self.inner.config.stale_reads,
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.get_account_transfers(request).await })
            .await?;
        Ok(Reply::new(response.served, decode_transfers(&response.transfers)?))
    }

    /// A page of the balance history of `filter.account_id` (an account
    /// with the `history` flag).
    pub async fn get_account_balances(
        &self,
        filter: &AccountFilter,
    ) -> Result<Reply<Vec<AccountBalance>>, ClientError> {
        let message = proto::GetAccountBalancesRequest {
            filter: Some(convert::filter_to_wire(filter)),
            stale: self.inner.config.stale_reads,
            amount_unit: proto::AmountUnit::Minor as i32,
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.get_account_balances(request).await })
            .await?;
        let balances = response
            .balances
            .iter()
            .enumerate()
            // Minor units need no scale, so no ledger either.
            .map(|(i, balance)| convert::balance_from_wire(i, balance, LedgerId(0), Amounts::Minor))
            .collect::<Result<_, _>>()
            .map_err(ClientError::Decode)?;
        Ok(Reply::new(response.served, balances))
    }

    /// One ledger's trial balance now.
    pub async fn trial_balance(&self, ledger: LedgerId) -> Result<Reply<TrialBalance>, ClientError> {
        self.trial_balance_as_of(ledger, 0).await
    }

    /// One ledger's trial balance as it stood at the event timestamp
    /// `as_of` (`0`: now).
    pub async fn trial_balance_as_of(&self, ledger: LedgerId, as_of: u64) -> Result<Reply<TrialBalance>, ClientError> {
        let message = proto::TrialBalanceRequest {
            ledger: ledger.0,
            stale: self.inner.config.stale_reads,
            amount_unit: proto::AmountUnit::Minor as i32,
            as_of,
        };
        let response =
            self.ledger_call(message, |mut client, request| async move { client.trial_balance(request).await }).await?;
        let trial = convert::trial_balance_from_wire(&response, Amounts::Minor).map_err(ClientError::Decode)?;
        Ok(Reply::new(response.served, trial))
    }

    /// The transfers matching `query`: one page, from the server's
    /// secondary indexes (see [`TransferQuery`]); continue from
    /// `next_timestamp` while it is not `0`.
    pub async fn query_transfers(&self, query: &TransferQuery) -> Result<Reply<TransferQueryPage>, ClientError> {
        let message = proto::QueryTransfersRequest {
            stale: self.inner.config.stale_reads,
            ..convert::transfer_query_to_wire(query, proto::AmountUnit::Minor)
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.query_transfers(request).await })
            .await?;
        let page = TransferQueryPage {
            transfers: decode_transfers(&response.transfers)?,
            next_timestamp: response.next_timestamp,
        };
        Ok(Reply::new(response.served, page))
    }

    /// The accounts matching `query` (by creation time): one page, as
    /// [`Self::query_transfers`] pages transfers.
    pub async fn query_accounts(&self, query: &QueryFilter) -> Result<Reply<AccountQueryPage>, ClientError> {
        let message = proto::QueryAccountsRequest {
            stale: self.inner.config.stale_reads,
            ..convert::account_query_to_wire(query, proto::AmountUnit::Minor)
        };
        let response = self
            .ledger_call(message, |mut client, request| async move { client.query_accounts(request).await })
            .await?;
        let accounts = response
            .accounts
            .iter()
            .enumerate()
            .map(|(i, account)| convert::account_from_wire("accounts", i, account, Amounts::Minor))
            .collect::<Result<_, _>>()
            .map_err(ClientError::Decode)?;
        Ok(Reply::new(response.served, AccountQueryPage { accounts, next_timestamp: response.next_timestamp }))
    }

    /// Follows the change log from just after the cursor `after` (`0`: from
    /// the first change), only the changes of `ledger` (`LedgerId(0)`: every
    /// ledger). The feed is served by one node at a time; when that node
    /// fails it resumes at the next configured address after the last
    /// cursor delivered, so every change arrives exactly once, in order. It
    /// gives up (delivering the error) on a failure a retry cannot fix, or
    /// after `attempts_max` tries in a row that delivered nothing.
    ///
    /// Needs a Tokio runtime (the feed runs as a task of it).
    pub fn subscribe_changes(&self, after: u64, ledger: LedgerId) -> Result<ChangeFeed, ClientError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| ClientError::Config { field: "runtime", reason: error.to_string() })?;
        let (sender, receiver) = mpsc::channel(FEED_BUFFER_CHANGES);
        let task = runtime.spawn(follow_changes(self.clone(), after, ledger, sender));
        Ok(ChangeFeed { receiver, task })
    }

    async fn admin_call<Req, Resp, F, Fut>(&self, target: Target<'_>, message: Req, rpc: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(AdminServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.call(target, message, |channel, request| rpc(AdminServiceClient::new(channel), request)).await
    }

    /// Every node's state, as the node that answers sees the cluster (it
    /// asks the others).
    pub async fn status(&self) -> Result<Vec<NodeReport>, ClientError> {
        let message = proto::StatusRequest { local: false };
        let response = self
            .admin_call(Target::Cluster, message, |mut client, request| async move { client.status(request).await })
            .await?;
        Ok(response.nodes.into_iter().map(node_report).collect())
    }

    /// Up to `limit` records of the audit trail after entry `after_index`
    /// (only `principal`'s batches, if named), as the answering node holds
    /// it (linearizable unless the client reads stale).
    pub async fn list_audit(
        &self,
        after_index: u64,
        limit: u32,
        principal: Option<&str>,
    ) -> Result<Reply<Vec<proto::AuditRecord>>, ClientError> {
        let message = proto::ListAuditRequest {
            after_index,
            limit,
            principal: principal.unwrap_or_default().to_owned(),
            stale: self.inner.config.stale_reads,
        };
        let response = self
            .admin_call(Target::Cluster, message, |mut client, request| async move { client.list_audit(request).await })
            .await?;
        Ok(Reply::new(response.served, response.records))
    }

    /// The audit trail of node `address` alone (its own state, stale).
    pub async fn list_audit_at(
        &self,
        address: &str,
        after_index: u64,
        limit: u32,
    ) -> Result<Reply<Vec<proto::AuditRecord>>, ClientError> {
        let message = proto::ListAuditRequest { after_index, limit, principal: String::new(), stale: true };
        let response = self
            .admin_call(Target::Node(address), message, |mut client, request| async move {
                client.list_audit(request).await
            })
            .await?;
        Ok(Reply::new(response.served, response.records))
    }

    /// Adds node `node_id`, whose Raft transport is at `raft_address`, as a learner.
    pub async fn add_node(
        &self,
        node_id: u64,
        raft_address: &str,
        api_address: Option<&str>,
    ) -> Result<Membership, ClientError> {
        let api_address = api_address.unwrap_or_default().to_owned();
        let message = proto::AddNodeRequest { node_id, raft_address: raft_address.to_owned(), api_address };
        let response = self
            .admin_call(Target::Cluster, message, |mut client, request| async move { client.add_node(request).await })
            .await?;
        Ok(membership(response))
    }

    /// Makes learner `node_id` a voter; refused (`FAILED_PRECONDITION`) if it
    /// has not caught up with the leader's log, unless `force`.
    pub async fn promote_node(&self, node_id: u64, force: bool) -> Result<Membership, ClientError> {
        let message = proto::PromoteNodeRequest { node_id, force };
        let response =
            self.admin_call(Target::Cluster, message, |mut client, request| async move {
                client.promote_node(request).await
            })
            .await?;
        Ok(membership(response))
    }

    /// Removes node `node_id`; refused (`FAILED_PRECONDITION`) if the voters
    /// left, counting those the leader heard from recently, are fewer than a
    /// quorum of them plus one, unless `force`.
    pub async fn remove_node(&self, node_id: u64, force: bool) -> Result<Membership, ClientError> {
        let message = proto::RemoveNodeRequest { node_id, force };
        let response =
            self.admin_call(Target::Cluster, message, |mut client, request| async move {
                client.remove_node(request).await
            })
            .await?;
        Ok(membership(response))
    }

    /// Asks the leader to hand leadership to voter `node_id`.
    pub async fn transfer_leader(&self, node_id: u64) -> Result<(), ClientError> {
        let message = proto::TransferLeaderRequest { node_id };
        self.admin_call(Target::Cluster, message, |mut client, request| async move {
            client.transfer_leader(request).await
        })
        .await?;
        Ok(())
    }

    /// Makes a snapshot of the state of the node at `address` in `dir` (an
    /// absolute path on that node's machine that does not exist yet).
    pub async fn snapshot(&self, address: &str, dir: &Path) -> Result<SnapshotInfo, ClientError> {
        let message = proto::SnapshotRequest { dir: dir.to_string_lossy().into_owned() };
        let response =
            self.admin_call(Target::Node(address), message, |mut client, request| async move {
                client.snapshot(request).await
            })
            .await?;
        Ok(SnapshotInfo {
            node_id: response.node_id,
            applied_index: response.applied_index,
            applied_term: response.applied_term,
            files: response.files,
            bytes: response.bytes,
        })
    }
}

/// Whether a feed may resume at another node after `code`. Resuming is
/// always safe (a feed only reads, from the last cursor delivered), so it
/// resumes after anything but an answer that says the request itself is
/// wrong: a node that dies mid-stream surfaces as `UNKNOWN` (a broken
/// HTTP/2 stream) or `UNAVAILABLE`, a slow one as `DEADLINE_EXCEEDED`.
fn feed_resumes_after(code: Code) -> bool {
    status::is_retryable(code)
        || !matches!(
            code,
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::NotFound
                | Code::Unimplemented
                | Code::Unauthenticated
                | Code::PermissionDenied
        )
}

/// Runs a [`ChangeFeed`]: streams from one node, resumes at the next after a
/// failure, delivers each change after the last cursor delivered.
async fn follow_changes(
    client: Client,
    mut cursor: u64,
    ledger: LedgerId,
    sender: mpsc::Sender<Result<FeedChange, ClientError>>,
) {
    let config = &client.inner.config;
    let (backoff_min, backoff_max) =
        (Duration::from_millis(config.backoff_min_ms), Duration::from_millis(config.backoff_max_ms));
    let mut backoff = backoff_min;
    let mut address = client.preferred();
    let mut failures = 0;
    loop {
        let (status, delivered) = match stream_changes(&client, &address, &mut cursor, ledger, &sender).await {
            Ok(FeedEnd::CallerGone) => return,
            Ok(FeedEnd::Failed { status, delivered }) => (status, delivered),
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        if delivered {
            failures = 0;
            backoff = backoff_min;
        }
        failures += 1;
        if !feed_resumes_after(status.code()) || failures >= config.attempts_max {
            let error = ClientError::Status { address, status, attempts: failures };
            let _ = sender.send(Err(error)).await;
            return;
        }
        tracing::debug!(%address, cursor, code = ?status.code(), "change feed interrupted; resuming at the next node");
        address = client.next_address(&address);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(backoff_max);
    }
}

/// How one node's stream of a feed ended.
enum FeedEnd {
    /// The caller dropped the feed.
    CallerGone,
    /// The node failed or ended the stream; `delivered`: whether it
    /// delivered a change first.
    Failed { status: Status, delivered: bool },
}

/// Streams the changes after `cursor` from the node at `address` to
/// `sender`, moving `cursor` past each change delivered. A change at or
/// before the cursor (which a correct node never sends) is not delivered
/// again.
async fn stream_changes(
    client: &Client,
    address: &str,
    cursor: &mut u64,
    ledger: LedgerId,
    sender: &mpsc::Sender<Result<FeedChange, ClientError>>,
) -> Result<FeedEnd, ClientError> {
    let timeout = Duration::from_millis(client.inner.config.deadline_ms);
    let message = proto::SubscribeChangesRequest {
        after: *cursor,
        ledger: ledger.0,
        amount_unit: proto::AmountUnit::Minor as i32,
    };
    let opened =
        tokio::time::timeout(timeout, ledger_client(client.channel(address)?).subscribe_changes(message)).await;
    let mut stream = match opened {
        Err(_) => {
            let status = Status::deadline_exceeded(format!("no answer within {} ms", timeout.as_millis()));
            return Ok(FeedEnd::Failed { status, delivered: false });
        }
        Ok(Err(status)) => return Ok(FeedEnd::Failed { status, delivered: false }),
        Ok(Ok(response)) => response.into_inner(),
    };
    let mut delivered = false;
    loop {
        let wire = match stream.message().await {
            Ok(Some(wire)) => wire,
            Ok(None) => {
                let status = Status::unavailable(format!("{address} ended the change feed"));
                return Ok(FeedEnd::Failed { status, delivered });
            }
            Err(status) => return Ok(FeedEnd::Failed { status, delivered }),
        };
        let change = convert::change_from_wire(&wire, Amounts::Minor).map_err(ClientError::Decode)?;
        if change.timestamp <= *cursor {
            continue;
        }
        let served = wire.served.unwrap_or_default();
        let change = FeedChange {
            cursor: change.timestamp,
            record: change.record,
            balances: change.balances,
            principal: wire.principal.clone(),
            budget_warning: wire.budget_warning.as_ref().and_then(|warning| {
                let account = warning.account_id.parse().ok().map(AccountId)?;
                Some((account, u8::try_from(warning.share_percent).unwrap_or(u8::MAX)))
            }),
            node_id: served.node_id,
            applied_index: served.applied_index,
        };
        *cursor = change.cursor;
        delivered = true;
        if sender.send(Ok(change)).await.is_err() {
            return Ok(FeedEnd::CallerGone);
        }
    }
}

fn ledger_client(channel: Channel) -> LedgerServiceClient<Channel> {
    LedgerServiceClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// Results from the wire: one per event sent.
fn results<R: ResultName>(names: &[String], events: usize) -> Result<Vec<R>, ClientError> {
    if names.len() != events {
        let reason = format!("{} results for {events} events", names.len());
        return Err(ClientError::Decode(FieldError::new("results", reason)));
    }
    convert::results_from_wire(names).map_err(ClientError::Decode)
}

fn decode_transfers(transfers: &[proto::Transfer]) -> Result<Vec<Transfer>, ClientError> {
    transfers
        .iter()
        .enumerate()
        .map(|(i, transfer)| convert::transfer_from_wire("transfers", i, transfer, Amounts::Minor))
        .collect::<Result<_, _>>()
        .map_err(ClientError::Decode)
}

fn node_report(node: proto::NodeStatus) -> NodeReport {
    let role = match proto::Role::try_from(node.role) {
        Ok(proto::Role::Follower) => Some(Role::Follower),
        Ok(proto::Role::Candidate) => Some(Role::Candidate),
        Ok(proto::Role::Leader) => Some(Role::Leader),
        Ok(proto::Role::PreCandidate) => Some(Role::PreCandidate),
        Ok(proto::Role::Unspecified) | Err(_) => None,
    };
    NodeReport {
        node_id: node.node_id,
        address: node.address,
        role,
        term: node.term,
        leader_id: node.leader_id,
        commit_index: node.commit_index,
        applied_index: node.applied_index,
        lag: node.lag,
        voters: node.voters,
        learners: node.learners,
        error: (!node.error.is_empty()).then_some(node.error),
        plaintext: node.plaintext,
    }
}

fn membership(response: proto::MembershipResponse) -> Membership {
    Membership {
        index: response.served.map(|served| served.applied_index).unwrap_or_default(),
        voters: response.voters,
        learners: response.learners,
    }
}
