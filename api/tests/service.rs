//! The services and the client over real gRPC on loopback, against
//! in-memory nodes whose answers each test scripts: a leader and a
//! follower sharing one ledger, overloaded queues, writes whose outcome is
//! unknown, writes that never finish; transfer queries and change feeds.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_api::client::{AccountQueryPage, ChangeFeed, Client, ClientConfig, ClientError, FeedChange, Role};
use coffer_api::node::Node;
use coffer_api::packed::{transfers_to_packed, PACKED_TRANSFER_BYTES};
use coffer_api::proto;
use coffer_api::proto::ledger_service_client::LedgerServiceClient;
use coffer_api::server::{ApiServer, ServerConfig};
use coffer_api::status::LEADER_METADATA_KEY;
use coffer_consensus::raft::prelude::ConfState;
use coffer_consensus::raft::StateRole;
use coffer_consensus::{Applied, MembershipChange, NodeStatus, Outcome, ProposalError, RequestError};
use coffer_ledger::{
    Account, AccountFilter, AccountFlags, AccountId, AccountKind, ChangedRecord, CreateAccountResult,
    CreateLedgerResult, CreateTransferResult, Ledger, LedgerId, MemoryStore, Operation, QueryFilter, StateMachine,
    Transfer, TransferId, TransferKind, TransferQuery,
};
use coffer_storage::snapshot::SnapshotManifest;
use coffer_storage::AppliedState;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// What the next proposal meets instead of the usual path.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// The queue is full: nothing is applied.
    Overloaded,
    /// The entry is applied, but the leader loses leadership before it can
    /// answer: the outcome is unknown to the client.
    AppliedThenLeadershipLost,
    /// The proposal never finishes.
    Hang,
}

/// The replicated state every fake node sees (as if replication were instant).
#[derive(Default)]
struct Cluster {
    machine: Mutex<StateMachine<MemoryStore>>,
    applied: AtomicU64,
    leader: AtomicU64,
    script: Mutex<VecDeque<Script>>,
    /// Every operation proposed at the leader, in order.
    proposed: Mutex<Vec<Operation>>,
    /// Every node stopped: reads fail with `Stopped`.
    stopped: AtomicBool,
}

#[derive(Clone)]
struct FakeNode {
    id: u64,
    cluster: Arc<Cluster>,
}

impl FakeNode {
    fn leader(&self) -> u64 {
        self.cluster.leader.load(Ordering::SeqCst)
    }

    fn apply(&self, operation: &Operation) -> Result<Applied, RequestError> {
        let mut machine = self.cluster.machine.lock().unwrap();
        let index = self.cluster.applied.fetch_add(1, Ordering::SeqCst) + 1;
        let results = machine
            .apply(index * 1_000_000, operation)
            .map_err(|error| RequestError::Proposal(ProposalError::Rejected(error)))?;
        Ok(Applied { index, outcome: Outcome::Operation(results) })
    }

    fn read_now<R>(&self, f: impl FnOnce(&MemoryStore) -> R) -> Result<(u64, R), RequestError> {
        if self.is_stopped() {
            return Err(RequestError::Stopped { node: self.id, reason: "stopped by the test".into() });
        }
        let machine = self.cluster.machine.lock().unwrap();
        Ok((self.cluster.applied.load(Ordering::SeqCst), f(machine.store())))
    }

    fn conf_state() -> ConfState {
        ConfState { voters: vec![1, 2], ..Default::default() }
    }
}

impl Node for FakeNode {
    type State<'v> = MemoryStore;

    fn id(&self) -> u64 {
        self.id
    }

    fn is_stopped(&self) -> bool {
        self.cluster.stopped.load(Ordering::SeqCst)
    }

    async fn audit(
        &self,
        _after_index: u64,
        _limit: usize,
        _principal: Option<String>,
        _stale: bool,
    ) -> Result<(u64, Result<Vec<coffer_storage::audit::AuditRecord>, coffer_consensus::StorageError>), RequestError>
    {
        // The fake node keeps no audit trail.
        Ok((0, Ok(Vec::new())))
    }

    async fn propose(&self, operation: Operation, _principal: String) -> Result<Applied, RequestError> {
        if self.id != self.leader() {
            return Err(RequestError::Proposal(ProposalError::NotLeader { leader: Some(self.leader()) }));
        }
        self.cluster.proposed.lock().unwrap().push(operation.clone());
        let script = self.cluster.script.lock().unwrap().pop_front();
        match script {
            None => self.apply(&operation),
            Some(Script::Overloaded) => {
                Err(RequestError::Proposal(ProposalError::Overloaded { queued: 9, max: 9, unit: "proposals" }))
            }
            Some(Script::AppliedThenLeadershipLost) => {
                self.apply(&operation)?;
                Err(RequestError::Proposal(ProposalError::LeadershipLost))
            }
            Some(Script::Hang) => std::future::pending().await,
        }
    }

    async fn read<F, R>(&self, f: F) -> Result<(u64, R), RequestError>
    where
        F: FnOnce(&MemoryStore) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.read_now(f)
    }

    async fn read_stale<F, R>(&self, f: F) -> Result<(u64, R), RequestError>
    where
        F: FnOnce(&MemoryStore) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.read_now(f)
    }

    async fn status(&self) -> Result<NodeStatus, RequestError> {
        let applied = self.cluster.applied.load(Ordering::SeqCst);
        Ok(NodeStatus {
            id: self.id,
            role: if self.id == self.leader() { StateRole::Leader } else { StateRole::Follower },
            term: 1,
            leader: self.leader(),
            commit: applied,
            applied,
            first_index: 1,
            last_index: applied,
            conf_state: Self::conf_state(),
            progress: Vec::new(),
        })
    }

    async fn transfer_leader(&self, target: u64) -> Result<(), RequestError> {
        if self.id != self.leader() {
            return Err(RequestError::Proposal(ProposalError::NotLeader { leader: Some(self.leader()) }));
        }
        self.cluster.leader.store(target, Ordering::SeqCst);
        Ok(())
    }

    async fn change_membership(
        &self,
        _change: MembershipChange,
        _address: String,
        _force: bool,
    ) -> Result<Applied, RequestError> {
        if self.id != self.leader() {
            return Err(RequestError::Proposal(ProposalError::NotLeader { leader: Some(self.leader()) }));
        }
        let index = self.cluster.applied.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Applied { index, outcome: Outcome::Membership(Self::conf_state()) })
    }

    async fn snapshot(&self, _dir: PathBuf) -> Result<SnapshotManifest, RequestError> {
        let index = self.cluster.applied.load(Ordering::SeqCst);
        Ok(SnapshotManifest { applied: AppliedState::at(index, 1), conf_state: Self::conf_state(), files: vec![] })
    }
}

/// Two fake nodes (1 leads) serving the API on loopback.
struct TestCluster {
    cluster: Arc<Cluster>,
    addresses: BTreeMap<u64, String>,
    /// Shuts a node's API server down (gracefully) when sent to or dropped.
    stops: BTreeMap<u64, oneshot::Sender<()>>,
}

impl TestCluster {
    async fn start(forward_writes: bool) -> Self {
        Self::start_with(|config| ServerConfig { forward_writes, ..config }).await
    }

    /// Both servers configured by `configure` from the defaults.
    async fn start_with(configure: impl Fn(ServerConfig) -> ServerConfig) -> Self {
        let cluster = Arc::new(Cluster::default());
        cluster.leader.store(1, Ordering::SeqCst);
        let mut listeners = Vec::new();
        let mut addresses = BTreeMap::new();
        for id in [1, 2] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(id, listener.local_addr().unwrap().to_string());
            listeners.push((id, listener));
        }
        let mut stops = BTreeMap::new();
        for (id, listener) in listeners {
            let node = FakeNode { id, cluster: cluster.clone() };
            let server = ApiServer::new(node, configure(ServerConfig::new(addresses.clone()))).unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(server.serve(listener, async move {
                let _ = stopped.await;
            }));
            stops.insert(id, stop);
        }
        Self { cluster, addresses, stops }
    }

    /// Shuts node `node`'s API server down.
    fn stop(&mut self, node: u64) {
        if let Some(stop) = self.stops.remove(&node) {
            let _ = stop.send(());
        }
    }

    fn address(&self, node: u64) -> String {
        self.addresses[&node].clone()
    }

    fn client(&self, nodes: &[u64]) -> Client {
        let addresses = nodes.iter().map(|node| self.address(*node)).collect();
        Client::new(ClientConfig { deadline_ms: 5_000, ..ClientConfig::new(addresses) }).unwrap()
    }

    async fn raw(&self, node: u64) -> LedgerServiceClient<Channel> {
        LedgerServiceClient::connect(format!("http://{}", self.address(node))).await.unwrap()
    }

    fn script(&self, steps: &[Script]) {
        self.cluster.script.lock().unwrap().extend(steps.iter().copied());
    }

    fn proposed(&self) -> Vec<Operation> {
        self.cluster.proposed.lock().unwrap().clone()
    }
}

fn ledger(id: u32, scale: u8) -> Ledger {
    Ledger { id: LedgerId(id), currency: "KRW".into(), scale, name: format!("ledger {id}"), ..Default::default() }
}

fn account(id: u128, ledger: u32, kind: AccountKind) -> Account {
    Account {
        id: AccountId(id),
        ledger: LedgerId(ledger),
        code: 101,
        kind,
        flags: AccountFlags::HISTORY,
        ..Default::default()
    }
}

fn receipt(id: u128, cash: u128, revenue: u128, amount: u128, ledger: u32) -> Transfer {
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(cash),
        credit_account_id: AccountId(revenue),
        amount,
        ledger: LedgerId(ledger),
        code: 1,
        kind: TransferKind::Receipt,
        ..Default::default()
    }
}

/// Ledger 1 (KRW, scale 0) and ledger 2 (scale 2), each with a cash
/// account (10, 20) and a revenue account (11, 21).
async fn seed(client: &Client) {
    let created = client.create_ledgers(&[ledger(1, 0), ledger(2, 2)]).await.unwrap();
    assert_eq!(created.value, [CreateLedgerResult::Created; 2]);
    let accounts = [
        account(10, 1, AccountKind::Cash),
        account(11, 1, AccountKind::Other),
        account(20, 2, AccountKind::Cash),
        account(21, 2, AccountKind::Other),
    ];
    assert_eq!(client.create_accounts(&accounts).await.unwrap().value, [CreateAccountResult::Created; 4]);
}

fn wire_receipt(id: &str, ledger: u32, amount: &str) -> proto::Transfer {
    let (cash, revenue) = if ledger == 2 { ("20", "21") } else { ("10", "11") };
    proto::Transfer {
        id: id.into(),
        debit_account_id: cash.into(),
        credit_account_id: revenue.into(),
        amount: amount.into(),
        ledger,
        code: 1,
        kind: proto::TransferKind::Receipt as i32,
        ..Default::default()
    }
}

fn transfers_request(transfers: Vec<proto::Transfer>) -> proto::CreateTransfersRequest {
    proto::CreateTransfersRequest { transfers, amount_unit: proto::AmountUnit::Decimal as i32, ..Default::default() }
}

#[tokio::test]
async fn a_batch_is_created_looked_up_paged_and_balanced_through_the_client() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1]);
    seed(&client).await;
    let transfers = [receipt(100, 20, 21, 12_345, 2), receipt(101, 20, 21, 5, 2), receipt(102, 10, 11, 7, 1)];
    let created = client.create_transfers(&transfers).await.unwrap();
    assert_eq!(created.value, [CreateTransferResult::Created; 3]);
    assert_eq!(created.node_id, 1);
    assert!(created.applied_index > 0);

    let ids = [AccountId(20), AccountId(99), AccountId(21)];
    let accounts = client.lookup_accounts(&ids).await.unwrap().value;
    assert_eq!(accounts[0].map(|a| a.debits_posted), Some(12_350));
    assert_eq!(accounts[1], None);
    assert_eq!(accounts[2].map(|a| a.credits_posted), Some(12_350));

    let found = client.lookup_transfers(&[TransferId(101), TransferId(7)]).await.unwrap().value;
    assert_eq!(found[0].map(|t| (t.amount, t.kind)), Some((5, TransferKind::Receipt)));
    assert_eq!(found[1], None);

    let newest_first = AccountFilter { reversed: true, ..AccountFilter::all(AccountId(20), 10) };
    let page = client.get_account_transfers(&newest_first).await.unwrap().value;
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), [TransferId(101), TransferId(100)]);
    let balances = client.get_account_balances(&AccountFilter::all(AccountId(20), 10)).await.unwrap().value;
    assert_eq!(balances.iter().map(|b| b.debits_posted).collect::<Vec<_>>(), [12_345, 12_350]);

    let trial = client.trial_balance(LedgerId(2)).await.unwrap().value;
    assert!(trial.total.is_balanced());
    assert_eq!(trial.total.debits_posted, 12_350);
    assert_eq!(trial.codes.len(), 1);

    let again = client.create_transfers(&transfers).await.unwrap();
    assert_eq!(again.value, [CreateTransferResult::Exists; 3], "a retry with the same ids is safe");
}

#[tokio::test]
async fn decimal_amounts_are_parsed_at_the_ledgers_scale_and_never_rounded() {
    let cluster = TestCluster::start(true).await;
    seed(&cluster.client(&[1])).await;
    let mut raw = cluster.raw(1).await;

    let request = transfers_request(vec![wire_receipt("1", 2, "12.34"), wire_receipt("2", 1, "1500000")]);
    let response = raw.create_transfers(request).await.unwrap().into_inner();
    assert_eq!(response.results, ["created", "created"]);

    let finer = transfers_request(vec![
        wire_receipt("3", 1, "5"),
        wire_receipt("4", 1, "6"),
        wire_receipt("5", 1, "7"),
        wire_receipt("6", 1, "12.5"),
    ]);
    let refused = raw.create_transfers(finer).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(refused.message(), "transfers[3].amount: 12.5 has more decimal places than ledger 1's scale 0");

    let lookup = proto::LookupTransfersRequest { ids: vec!["1".into(), "2".into()], ..Default::default() };
    let found = raw.lookup_transfers(lookup).await.unwrap().into_inner();
    let amounts = found.transfers.iter().map(|t| t.amount.as_str()).collect::<Vec<_>>();
    assert_eq!(amounts, ["12.34", "1500000"]);
    let lookup = proto::LookupAccountsRequest { ids: vec!["20".into()], ..Default::default() };
    let account = raw.lookup_accounts(lookup).await.unwrap().into_inner().accounts.remove(0);
    assert_eq!((account.debits_posted.as_str(), account.credits_posted.as_str()), ("12.34", "0.00"));
}

#[tokio::test]
async fn amounts_of_an_unknown_ledger_must_be_whole() {
    let cluster = TestCluster::start(true).await;
    seed(&cluster.client(&[1])).await;
    let mut raw = cluster.raw(1).await;

    let refused = raw.create_transfers(transfers_request(vec![wire_receipt("1", 9, "1.5")])).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("transfers[0].amount: 1.5"), "{}", refused.message());
    assert!(refused.message().contains("ledger 9 does not exist"), "{}", refused.message());

    let response = raw.create_transfers(transfers_request(vec![wire_receipt("1", 9, "15")])).await.unwrap();
    assert_eq!(response.into_inner().results, ["ledger_not_found"]);
}

#[tokio::test]
async fn malformed_requests_are_refused_naming_the_field() {
    let cluster = TestCluster::start(true).await;
    seed(&cluster.client(&[1])).await;
    let mut raw = cluster.raw(1).await;

    let too_many = transfers_request(vec![wire_receipt("1", 1, "1"); 8_190]);
    let refused = raw.create_transfers(too_many).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("transfers: 8190 entries"), "{}", refused.message());

    // The largest transfer the wire allows: every field at its widest.
    let widest = |i: u128| proto::Transfer {
        id: (u128::MAX - i).to_string(),
        debit_account_id: (u128::MAX - 1).to_string(),
        credit_account_id: (u128::MAX - 2).to_string(),
        amount: "79228162514264337593543950335".into(),
        pending_id: (u128::MAX - 3).to_string(),
        ledger: u32::MAX - 1,
        code: u32::from(u16::MAX),
        kind: proto::TransferKind::CashTransfer as i32,
        flags: (1..=8).collect(),
        timeout: u32::MAX,
        user_data_128: u128::MAX.to_string(),
        user_data_64: u64::MAX,
        user_data_32: u32::MAX,
        timestamp: u64::MAX,
    };
    let full = transfers_request((1..=8_189).map(widest).collect());
    let response = raw.create_transfers(full).await.unwrap().into_inner();
    assert_eq!(response.results.len(), 8_189, "a full batch of the widest transfers fits the message limit");
    assert!(response.results.iter().all(|result| result != "created"), "every event breaks a rule");

    let cases = [
        (proto::Transfer { kind: 42, ..wire_receipt("1", 1, "1") }, "transfers[0].kind: 42 is not a transfer kind"),
        (
            proto::Transfer { flags: vec![77], ..wire_receipt("1", 1, "1") },
            "transfers[0].flags[0]: 77 is not a transfer flag",
        ),
        (
            proto::Transfer { id: "12x".into(), ..wire_receipt("1", 1, "1") },
            "transfers[0].id: \"12x\" is not a decimal 128-bit number",
        ),
        (
            proto::Transfer { amount: "-3".into(), ..wire_receipt("1", 1, "1") },
            "transfers[0].amount: \"-3\" is negative",
        ),
    ];
    for (transfer, message) in cases {
        let refused = raw.create_transfers(transfers_request(vec![transfer])).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (Code::InvalidArgument, message));
    }

    let zero_id = proto::LookupAccountsRequest { ids: vec!["5".into(), "0".into()], ..Default::default() };
    let refused = raw.lookup_accounts(zero_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("ids[1]: 0 is not a valid id"), "{}", refused.message());

    let no_limit = proto::GetAccountTransfersRequest {
        filter: Some(proto::AccountFilter { account_id: "10".into(), ..Default::default() }),
        ..Default::default()
    };
    let refused = raw.get_account_transfers(no_limit).await.unwrap_err();
    assert!(refused.message().starts_with("filter.limit: 0 is not between 1 and 8189"), "{}", refused.message());

    let no_limit = raw.query_transfers(proto::QueryTransfersRequest::default()).await.unwrap_err();
    assert_eq!(no_limit.code(), Code::InvalidArgument);
    assert!(no_limit.message().starts_with("limit: 0 is not between 1 and 8189"), "{}", no_limit.message());

    let trial = raw.trial_balance(proto::TrialBalanceRequest { ledger: 77, ..Default::default() }).await.unwrap_err();
    assert_eq!(trial.code(), Code::NotFound);
}

#[tokio::test]
async fn packed_transfers_are_created_and_a_bad_packed_request_is_refused_naming_the_record() {
    let cluster = TestCluster::start(true).await;
    seed(&cluster.client(&[1])).await;
    let mut raw = cluster.raw(1).await;
    let packed = |transfers: &[Transfer], unit: proto::AmountUnit| proto::CreateTransfersRequest {
        packed_transfers: transfers_to_packed(transfers),
        amount_unit: unit as i32,
        ..Default::default()
    };
    let transfers = [receipt(300, 20, 21, 12_345, 2), receipt(301, 10, 11, 7, 1)];
    let response = raw.create_transfers(packed(&transfers, proto::AmountUnit::Minor)).await.unwrap().into_inner();
    assert_eq!(response.results, ["created", "created"]);
    let found = cluster.client(&[1]).lookup_transfers(&[TransferId(300), TransferId(301)]).await.unwrap().value;
    assert_eq!(
        found.iter().map(|t| t.map(|t| (t.amount, t.ledger))).collect::<Vec<_>>(),
        [Some((12_345, LedgerId(2))), Some((7, LedgerId(1)))]
    );

    let proposed = cluster.proposed().len();
    let mut bad_kind = transfers_to_packed(&[receipt(302, 10, 11, 1, 1), receipt(303, 10, 11, 1, 1)]);
    bad_kind[PACKED_TRANSFER_BYTES + 120] = 9;
    let both = proto::CreateTransfersRequest {
        transfers: vec![wire_receipt("304", 1, "1")],
        ..packed(&[receipt(305, 10, 11, 1, 1)], proto::AmountUnit::Minor)
    };
    let cases = [
        (both, "packed_transfers: set together with 1 transfers: send one of the two"),
        (
            packed(&[receipt(306, 10, 11, 1, 1)], proto::AmountUnit::Decimal),
            "amount_unit: must be AMOUNT_UNIT_MINOR with packed_transfers (their amounts are counts of minor units)",
        ),
        (
            proto::CreateTransfersRequest { packed_transfers: bad_kind, ..packed(&[], proto::AmountUnit::Minor) },
            "packed_transfers[1].kind: 9 is not a transfer kind",
        ),
        (
            proto::CreateTransfersRequest { packed_transfers: vec![0; 129], ..packed(&[], proto::AmountUnit::Minor) },
            "packed_transfers: 129 bytes are not a whole number of 128-byte records",
        ),
        (
            packed(&vec![receipt(307, 10, 11, 1, 1); 8_190], proto::AmountUnit::Minor),
            "packed_transfers: 8190 entries, more than the 8189 allowed",
        ),
    ];
    for (request, message) in cases {
        let refused = raw.create_transfers(request).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (Code::InvalidArgument, message));
    }
    assert_eq!(cluster.proposed().len(), proposed, "a refused request was proposed");
}

#[tokio::test]
async fn empty_batches_are_refused_and_commit_nothing() {
    let cluster = TestCluster::start(true).await;
    let mut raw = cluster.raw(1).await;
    let empty_ledgers = raw.create_ledgers(proto::CreateLedgersRequest::default()).await.unwrap_err();
    let empty_accounts = raw.create_accounts(proto::CreateAccountsRequest::default()).await.unwrap_err();
    let empty_transfers = raw.create_transfers(transfers_request(Vec::new())).await.unwrap_err();
    for (refused, field) in [(empty_ledgers, "ledgers"), (empty_accounts, "accounts"), (empty_transfers, "transfers")] {
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}: {}", refused.message());
        assert!(refused.message().starts_with(&format!("{field}: no entries")), "{}", refused.message());
    }
    assert!(cluster.proposed().is_empty(), "an empty batch was proposed: {:?}", cluster.proposed());
}

/// Sends and receives raw message bytes: what a broken or hostile client
/// can put on the wire.
#[derive(Clone, Copy, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> Self::Encoder {
        RawBytes
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = bytes::Buf::copy_to_bytes(buf, bytes::Buf::remaining(buf));
        Ok(Some(bytes.to_vec()))
    }
}

#[tokio::test]
async fn bytes_that_do_not_decode_are_invalid_argument_and_commit_nothing() {
    let cluster = TestCluster::start(true).await;
    let channel = Channel::from_shared(format!("http://{}", cluster.address(1))).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/coffer.v1.LedgerService/CreateTransfers");
    // A field 1 (transfers) whose length runs past the end of the message.
    let garbage = vec![0x0A, 0x7F, 0x01, 0x02];
    let refused = grpc.unary(Request::new(garbage), path, RawBytes).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{}", refused.message());
    assert!(refused.message().contains("does not decode"), "{}", refused.message());
    assert!(cluster.proposed().is_empty(), "garbage was proposed: {:?}", cluster.proposed());
}

#[tokio::test]
async fn amounts_past_96_bits_are_taken_in_minor_units_and_decimals() {
    let cluster = TestCluster::start(true).await;
    seed(&cluster.client(&[1])).await;
    let mut raw = cluster.raw(1).await;
    // 2^100 won on ledger 1 (scale 0), and u128::MAX - 1 cents on ledger 2
    // (scale 2): both parse; the ledger then refuses them on its own rules
    // (the cash account has no such funds), not the API as out of range.
    let huge = [
        wire_receipt("501", 1, "1267650600228229401496703205376"),
        wire_receipt("502", 2, "3402823669209384634633746074317682114.54"),
    ];
    let response = raw.create_transfers(transfers_request(huge.to_vec())).await.unwrap().into_inner();
    assert_eq!(response.results.len(), 2);
}

#[tokio::test]
async fn a_follower_whose_leader_does_not_answer_says_which_leader_it_tried() {
    let mut cluster = TestCluster::start(true).await;
    let leader = cluster.address(1);
    cluster.stop(1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut raw = cluster.raw(2).await;
    let refused = raw
        .create_ledgers(proto::CreateLedgersRequest {
            ledgers: vec![coffer_api::convert::ledger_to_wire(&ledger(1, 0))],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{}", refused.message());
    let expected = format!("node 2 forwarded the request to the leader at {leader}, which did not answer");
    assert!(refused.message().starts_with(&expected), "{}", refused.message());
    assert_eq!(
        refused.metadata().get(LEADER_METADATA_KEY).and_then(|value| value.to_str().ok()),
        Some(leader.as_str())
    );
}

#[tokio::test]
async fn a_follower_forwards_writes_to_the_leader() {
    let cluster = TestCluster::start(true).await;
    seed(&cluster.client(&[1])).await;
    let mut follower = cluster.raw(2).await;
    let response = follower.create_transfers(transfers_request(vec![wire_receipt("1", 2, "1.25")])).await.unwrap();
    let response = response.into_inner();
    assert_eq!(response.results, ["created"]);
    assert_eq!(response.served.map(|served| served.node_id), Some(1), "the leader applied it");

    let read = proto::LookupTransfersRequest { ids: vec!["1".into()], stale: true, ..Default::default() };
    let read = follower.lookup_transfers(read).await.unwrap().into_inner();
    let served = read.served.unwrap();
    assert_eq!((served.node_id, served.stale), (2, true), "reads are served by the node asked");
    assert_eq!(read.transfers[0].amount, "1.25");
}

#[tokio::test]
async fn a_follower_that_does_not_forward_names_the_leader_and_the_client_follows_it() {
    let cluster = TestCluster::start(false).await;
    let mut follower = cluster.raw(2).await;
    let request = proto::CreateLedgersRequest { ledgers: vec![coffer_api::convert::ledger_to_wire(&ledger(1, 0))] };
    let refused = follower.create_ledgers(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    let hint = refused.metadata().get(LEADER_METADATA_KEY).and_then(|value| value.to_str().ok()).map(str::to_owned);
    assert_eq!(hint, Some(cluster.address(1)));
    assert!(refused.message().contains(&cluster.address(1)), "{}", refused.message());

    let client = cluster.client(&[2]);
    let created = client.create_ledgers(&[ledger(1, 0)]).await.unwrap();
    assert_eq!((created.value[0], created.node_id), (CreateLedgerResult::Created, 1));
}

#[tokio::test]
async fn an_overloaded_leader_is_retried_with_the_same_request() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1]);
    seed(&client).await;
    let before = cluster.proposed().len();
    cluster.script(&[Script::Overloaded, Script::Overloaded]);
    let transfers = [receipt(500, 10, 11, 9, 1), receipt(501, 10, 11, 8, 1)];
    let created = client.create_transfers(&transfers).await.unwrap();
    assert_eq!(created.value, [CreateTransferResult::Created; 2]);
    let tries = cluster.proposed().split_off(before);
    assert_eq!(tries.len(), 3);
    assert!(tries.iter().all(|operation| *operation == Operation::CreateTransfers(transfers.to_vec())));
}

#[tokio::test]
async fn a_write_whose_outcome_is_unknown_is_retried_and_answers_exists() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1]);
    seed(&client).await;
    cluster.script(&[Script::AppliedThenLeadershipLost]);
    let created = client.create_transfers(&[receipt(600, 10, 11, 3, 1)]).await.unwrap();
    assert_eq!(created.value, [CreateTransferResult::Exists], "the first try was applied; the retry finds it");
    let accounts = client.lookup_accounts(&[AccountId(10)]).await.unwrap().value;
    assert_eq!(accounts[0].map(|a| a.debits_posted), Some(3), "applied once");
}

#[tokio::test]
async fn a_write_past_its_deadline_is_deadline_exceeded() {
    let cluster = TestCluster::start(true).await;
    cluster.script(&[Script::Hang]);
    let mut raw = cluster.raw(1).await;
    let one = vec![coffer_api::convert::ledger_to_wire(&ledger(1, 0))];
    let mut request = Request::new(proto::CreateLedgersRequest { ledgers: one });
    request.set_timeout(Duration::from_millis(300));
    let refused = raw.create_ledgers(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::DeadlineExceeded, "{}", refused.message());
    assert!(refused.message().contains("retry with the same ids"), "{}", refused.message());

    cluster.script(&[Script::Hang]);
    let client = Client::new(ClientConfig { deadline_ms: 300, ..ClientConfig::new(vec![cluster.address(1)]) }).unwrap();
    let error = client.create_ledgers(&[ledger(1, 0)]).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::DeadlineExceeded), "{error}");
}

#[tokio::test]
async fn status_reports_every_node_and_admin_calls_follow_the_leader() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[2]);
    seed(&client).await;
    let nodes = client.status().await.unwrap();
    assert_eq!(nodes.iter().map(|node| node.node_id).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(nodes[0].role, Some(Role::Follower));
    assert_eq!(nodes[1].role, Some(Role::Leader));
    assert_eq!(nodes[1].address, cluster.address(1));
    assert!(nodes.iter().all(|node| node.lag == 0 && node.error.is_none() && node.voters == [1, 2]));

    client.transfer_leader(2).await.unwrap();
    assert_eq!(cluster.cluster.leader.load(Ordering::SeqCst), 2);
    let membership = client.add_node(3, "127.0.0.1:9", None).await.unwrap();
    assert!(membership.index > 0);
    let refused = client.promote_node(0, false).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument));
    let refused = client.add_node(4, "nowhere", None).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument));

    let snapshot = client.snapshot(&cluster.address(1), std::path::Path::new("/tmp/coffer-snapshot-x")).await.unwrap();
    assert_eq!(snapshot.node_id, 1);
    let relative = client.snapshot(&cluster.address(1), std::path::Path::new("relative")).await.unwrap_err();
    assert_eq!(relative.code(), Some(Code::InvalidArgument));
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cluster = TestCluster::start(true).await;
    let channel = Channel::from_shared(format!("http://{}", cluster.address(1))).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["coffer.v1.LedgerService", "coffer.v1.AdminService"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names = list.service.iter().map(|service| service.name.as_str()).collect::<Vec<_>>();
    for name in ["coffer.v1.LedgerService", "coffer.v1.AdminService", "coffer.dr.v1.DrService", "grpc.health.v1.Health"]
    {
        assert!(names.contains(&name), "{names:?}");
    }
}

#[tokio::test]
async fn a_client_error_says_what_failed() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1]);
    let error = client.trial_balance(LedgerId(5)).await.unwrap_err();
    assert!(matches!(error, ClientError::Status { .. }));
    assert_eq!(error.code(), Some(Code::NotFound));
    assert!(Client::new(ClientConfig::new(vec![])).is_err());
    assert!(Client::new(ClientConfig::new(vec!["no-port".into()])).is_err());
}

// Transfer queries.

/// Transfers 100..=139: even ids in ledger 1 (cash 10, revenue 11), odd ids
/// in ledger 2 (cash 20, revenue 21); `user_data_64` is the id modulo 3.
async fn forty_receipts(client: &Client) -> Vec<Transfer> {
    let transfers: Vec<Transfer> = (100..140u128)
        .map(|id| {
            let (cash, revenue, ledger) = if id % 2 == 0 { (10, 11, 1) } else { (20, 21, 2) };
            Transfer { user_data_64: (id % 3) as u64, ..receipt(id, cash, revenue, 1_234, ledger) }
        })
        .collect();
    let created = client.create_transfers(&transfers).await.unwrap();
    assert!(created.value.iter().all(|result| *result == CreateTransferResult::Created));
    transfers
}

fn ids_of(transfers: &[Transfer]) -> Vec<u128> {
    transfers.iter().map(|transfer| transfer.id.0).collect()
}

/// Every page of `query`, continued from each page's `next_timestamp`.
async fn query_every_page(client: &Client, mut query: TransferQuery) -> (Vec<u128>, usize) {
    let (mut found, mut pages) = (Vec::new(), 0);
    loop {
        let page = client.query_transfers(&query).await.unwrap().value;
        pages += 1;
        found.extend(ids_of(&page.transfers));
        if page.next_timestamp == 0 {
            return (found, pages);
        }
        if query.reversed {
            query.timestamp_max = page.next_timestamp;
        } else {
            query.timestamp_min = page.next_timestamp;
        }
        assert!(pages < 500, "every page moves the query on");
    }
}

#[tokio::test]
async fn transfers_are_queried_by_their_fields_and_continued_from_next_timestamp() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[2]);
    seed(&client).await;
    forty_receipts(&client).await;

    let ledger_2 = TransferQuery { ledger: LedgerId(2), ..TransferQuery::all(100) };
    let reply = client.query_transfers(&ledger_2).await.unwrap();
    let odd: Vec<u128> = (100..140).filter(|id| id % 2 == 1).collect();
    assert_eq!(ids_of(&reply.value.transfers), odd);
    assert_eq!(reply.value.next_timestamp, 0, "the whole range was examined");
    assert_eq!(reply.node_id, 2, "any node serves a read");
    assert_eq!(reply.value.transfers[0].amount, 1_234);

    let filtered = TransferQuery { user_data_64: 2, code: 1, kind: TransferKind::Receipt.code(), ..ledger_2 };
    let expected: Vec<u128> = odd.iter().copied().filter(|id| id % 3 == 2).collect();
    assert_eq!(ids_of(&client.query_transfers(&filtered).await.unwrap().value.transfers), expected);
    let none = TransferQuery { kind: TransferKind::Journal.code(), ..ledger_2 };
    assert!(client.query_transfers(&none).await.unwrap().value.transfers.is_empty());

    for limit in [1, 3, 7] {
        let (found, pages) = query_every_page(&client, TransferQuery { limit, ..ledger_2 }).await;
        assert_eq!(found, odd, "limit {limit}: every match once, in order");
        assert!(pages >= odd.len() / limit as usize);
        let (found, _) = query_every_page(&client, TransferQuery { limit, reversed: true, ..ledger_2 }).await;
        assert_eq!(found, odd.iter().rev().copied().collect::<Vec<_>>(), "limit {limit}, newest first");
    }

    // Decimal amounts at the ledger's scale on the wire.
    let mut raw = cluster.raw(1).await;
    let request = proto::QueryTransfersRequest { ledger: 2, limit: 1, ..Default::default() };
    let response = raw.query_transfers(request).await.unwrap().into_inner();
    assert_eq!(response.transfers[0].amount, "12.34");
    assert_eq!(response.served.map(|served| (served.node_id, served.stale)), Some((1, false)));
    assert_ne!(response.next_timestamp, 0, "more matches are left");
}

#[tokio::test]
async fn a_time_range_query_pages_through_the_change_log_and_an_indexed_one_answers_at_once() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1]);
    seed(&client).await;
    let batch = |ids: std::ops::Range<u128>| -> Vec<Transfer> {
        ids.map(|id| if id % 2 == 0 { receipt(id, 10, 11, 1, 1) } else { receipt(id, 20, 21, 1, 2) }).collect()
    };
    for ids in [1_000..9_189, 9_189..10_000] {
        let created = client.create_transfers(&batch(ids)).await.unwrap();
        assert!(created.value.iter().all(|result| *result == CreateTransferResult::Created));
    }
    // 6 + 9,000 changes: a time range alone pages through the change log.
    let all = TransferQuery { timestamp_min: 1, ..TransferQuery::all(8_189) };
    let first = client.query_transfers(&all).await.unwrap().value;
    assert_eq!(first.transfers.len(), 8_189);
    assert_eq!(ids_of(&first.transfers), (1_000..9_189).collect::<Vec<_>>());
    assert_ne!(first.next_timestamp, 0);
    let (found, pages) = query_every_page(&client, TransferQuery { ledger: LedgerId(1), ..all }).await;
    assert_eq!(found, (1_000..10_000).filter(|id| id % 2 == 0).collect::<Vec<_>>());
    assert_eq!(pages, 1, "4,500 matches of one index: one answer");
}

#[tokio::test]
async fn accounts_are_queried_and_a_trial_balance_is_answered_as_of_a_past_time() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[2]);
    seed(&client).await;
    let ledger_2 = QueryFilter { ledger: LedgerId(2), ..QueryFilter::all(10) };
    let ids = |page: AccountQueryPage| page.accounts.iter().map(|account| account.id.0).collect::<Vec<_>>();
    assert_eq!(ids(client.query_accounts(&ledger_2).await.unwrap().value), [20, 21]);
    let cash = QueryFilter { kind: AccountKind::Cash.code(), ..QueryFilter::all(10) };
    assert_eq!(ids(client.query_accounts(&cash).await.unwrap().value), [10, 20]);

    client.create_transfers(&[receipt(100, 10, 11, 5, 1)]).await.unwrap();
    let first = client.lookup_transfers(&[TransferId(100)]).await.unwrap().value[0].expect("created");
    client.create_transfers(&[receipt(101, 10, 11, 7, 1)]).await.unwrap();
    let then = client.trial_balance_as_of(LedgerId(1), first.timestamp).await.unwrap().value;
    assert_eq!((then.total.debits_posted, then.total.accounts), (5, 2), "only the first receipt");
    let now = client.trial_balance(LedgerId(1)).await.unwrap().value;
    assert_eq!(now.total.debits_posted, 12);

    let mut raw = cluster.raw(1).await;
    let future = proto::TrialBalanceRequest { ledger: 1, as_of: u64::MAX, ..Default::default() };
    let refused = raw.trial_balance(future).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("invalid timestamp"), "{}", refused.message());
}

#[tokio::test]
async fn bad_query_fields_are_refused_naming_the_field() {
    let cluster = TestCluster::start(true).await;
    let mut raw = cluster.raw(1).await;
    let good = proto::QueryTransfersRequest { limit: 10, ledger: 1, ..Default::default() };
    assert!(raw.query_transfers(good.clone()).await.is_ok());
    let cases = [
        (
            proto::QueryTransfersRequest { ledger: 0, ..good.clone() },
            "invalid filter: set a field to select by (ledger, code, kind, user_data) or a time range",
        ),
        (proto::QueryTransfersRequest { limit: 8_190, ..good.clone() }, "limit: 8190 is not between 1 and 8189"),
        (proto::QueryTransfersRequest { kind: 42, ..good.clone() }, "kind: 42 is not a transfer kind"),
        (
            proto::QueryTransfersRequest { user_data_128: "12x".into(), ..good.clone() },
            "user_data_128: \"12x\" is not a decimal 128-bit number",
        ),
        (
            proto::QueryTransfersRequest { timestamp_min: 9, timestamp_max: 8, ..good.clone() },
            "timestamp_min: 9 is after timestamp_max 8",
        ),
        (proto::QueryTransfersRequest { code: 70_000, ..good.clone() }, "code: 70000 is more than 65535"),
        (proto::QueryTransfersRequest { order: 5, ..good.clone() }, "order: 5 is not an order"),
        (proto::QueryTransfersRequest { amount_unit: 9, ..good.clone() }, "amount_unit: 9 is not an amount unit"),
    ];
    for (request, message) in cases {
        let refused = raw.query_transfers(request).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (Code::InvalidArgument, message));
    }
}

// Change feeds.

/// The next `count` changes of `feed`, each within a bound.
async fn next_changes(feed: &mut ChangeFeed, count: usize) -> Vec<FeedChange> {
    let mut changes = Vec::new();
    while changes.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), feed.next()).await;
        changes.push(next.expect("a change within 10 s").expect("the feed goes on").unwrap());
    }
    changes
}

/// Asserts that `feed` delivers nothing more for a while.
async fn assert_quiet(feed: &mut ChangeFeed) {
    let next = tokio::time::timeout(Duration::from_millis(200), feed.next()).await;
    assert!(next.is_err(), "unexpected: {next:?}");
}

/// What a change is, without who served it.
fn what(change: &FeedChange) -> (u64, ChangedRecord) {
    (change.cursor, change.record.clone())
}

fn created_transfer_id(change: &FeedChange) -> Option<u128> {
    match &change.record {
        ChangedRecord::TransferCreated(transfer) => Some(transfer.id.0),
        _ => None,
    }
}

#[tokio::test]
async fn a_feed_delivers_every_change_once_in_order_then_each_new_one_and_resumes_from_a_cursor() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1]);
    seed(&client).await;
    client.create_transfers(&[receipt(100, 10, 11, 5, 1), receipt(101, 20, 21, 7, 2)]).await.unwrap();
    let refused = client.create_transfers(&[receipt(102, 10, 99, 5, 1)]).await.unwrap();
    assert_eq!(refused.value, [CreateTransferResult::CreditAccountNotFound]);

    let mut feed = client.subscribe_changes(0, LedgerId(0)).unwrap();
    let backlog = next_changes(&mut feed, 8).await;
    let ledger_ids: Vec<u32> = backlog.iter().map(|change| change.record.ledger().0).collect();
    assert_eq!(ledger_ids, [1, 2, 1, 1, 2, 2, 1, 2]);
    assert!(matches!(&backlog[0].record, ChangedRecord::LedgerCreated(ledger) if ledger.id == LedgerId(1)));
    let ChangedRecord::AccountCreated(cash) = &backlog[2].record else { panic!("{backlog:?}") };
    assert_eq!((cash.id, cash.debits_posted), (AccountId(10), 0), "the account as created");
    assert_eq!(backlog.iter().filter_map(created_transfer_id).collect::<Vec<_>>(), [100, 101]);
    let ChangedRecord::TransferCreated(transfer) = &backlog[7].record else { panic!("{backlog:?}") };
    assert_eq!(transfer.amount, 7, "minor units");
    let balances = backlog[7].balances.expect("a transfer's change carries its accounts' balances");
    assert_eq!((balances.debit.debits_posted, balances.credit.credits_posted), (7, 7));
    assert!(backlog[2].balances.is_none(), "an account's creation carries none");
    assert!(backlog.windows(2).all(|pair| pair[0].cursor < pair[1].cursor), "in commit order");
    assert!(backlog.iter().all(|change| change.node_id == 1 && change.applied_index > 0));
    assert_quiet(&mut feed).await;

    // Caught up, the feed delivers each change as it is applied.
    client.create_transfers(&[receipt(103, 10, 11, 1, 1)]).await.unwrap();
    let new = next_changes(&mut feed, 1).await;
    assert_eq!(created_transfer_id(&new[0]), Some(103));
    assert!(new[0].cursor > backlog[7].cursor);
    assert_quiet(&mut feed).await;

    // A feed after a cursor starts just after it, on any node.
    let mut resumed = cluster.client(&[2]).subscribe_changes(backlog[5].cursor, LedgerId(0)).unwrap();
    let after = next_changes(&mut resumed, 3).await;
    let expected: Vec<_> = backlog[6..].iter().chain(&new).map(what).collect();
    assert_eq!(after.iter().map(what).collect::<Vec<_>>(), expected);
    assert!(after.iter().all(|change| change.node_id == 2));
    assert_quiet(&mut resumed).await;
}

#[tokio::test]
async fn a_feed_filters_by_ledger_and_writes_amounts_in_the_unit_asked_for() {
    let cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1]);
    seed(&client).await;
    client.create_transfers(&[receipt(1, 10, 11, 5, 1), receipt(2, 20, 21, 1_234, 2)]).await.unwrap();

    let mut raw = cluster.raw(2).await;
    let request =
        proto::SubscribeChangesRequest { after: 0, ledger: 2, amount_unit: proto::AmountUnit::Decimal as i32 };
    let mut stream = raw.subscribe_changes(request).await.unwrap().into_inner();
    let mut changes = Vec::new();
    for _ in 0..4 {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap();
        changes.push(next.unwrap().unwrap());
    }
    let kinds: Vec<i32> = changes.iter().map(|change| change.kind).collect();
    use proto::ChangeKind as K;
    let expected = [K::LedgerCreated, K::AccountCreated, K::AccountCreated, K::TransferCreated].map(|kind| kind as i32);
    assert_eq!(kinds, expected);
    assert!(changes.iter().all(|change| change.ledger_id == 2));
    assert_eq!(changes[1].account.as_ref().map(|account| account.id.as_str()), Some("20"));
    assert_eq!(changes[1].account.as_ref().map(|account| account.debits_posted.as_str()), Some("0.00"));
    assert_eq!(changes[3].transfer.as_ref().map(|transfer| transfer.amount.as_str()), Some("12.34"));
    let served = changes[3].served.unwrap();
    assert_eq!((served.node_id, served.stale), (2, true));

    let mut feed = client.subscribe_changes(0, LedgerId(1)).unwrap();
    let ledger_1 = next_changes(&mut feed, 4).await;
    assert!(ledger_1.iter().all(|change| change.record.ledger() == LedgerId(1)));
    assert_eq!(created_transfer_id(&ledger_1[3]), Some(1));
    assert_quiet(&mut feed).await;
}

#[tokio::test]
async fn feeds_over_the_servers_bound_are_refused_until_one_ends() {
    let cluster = TestCluster::start_with(|config| ServerConfig { feed_streams_max: 2, ..config }).await;
    let mut raw = cluster.raw(1).await;
    let request = proto::SubscribeChangesRequest::default();
    let first = raw.subscribe_changes(request).await.unwrap().into_inner();
    let _second = raw.subscribe_changes(request).await.unwrap().into_inner();
    let refused = raw.subscribe_changes(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{}", refused.message());
    assert!(refused.message().contains("most change feeds (2)"), "{}", refused.message());
    let refused = raw.subscribe_changes(proto::SubscribeChangesRequest { amount_unit: 7, ..request }).await;
    assert_eq!(refused.unwrap_err().code(), Code::InvalidArgument, "a bad request is refused first");

    // A client that goes away frees its feed's place.
    drop(first);
    for attempt in 0.. {
        match raw.subscribe_changes(request).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted && attempt < 200 => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("the place was not freed: {status:?}"),
        }
    }
}

#[tokio::test]
async fn a_feed_resumes_at_another_node_without_losing_or_repeating_a_change() {
    let mut cluster = TestCluster::start(true).await;
    let client = cluster.client(&[1, 2]);
    seed(&client).await;
    let mut feed = client.subscribe_changes(0, LedgerId(0)).unwrap();
    let before = next_changes(&mut feed, 6).await;
    assert!(before.iter().all(|change| change.node_id == 1));
    let mut raw = cluster.raw(1).await.subscribe_changes(proto::SubscribeChangesRequest::default()).await.unwrap();
    let raw = raw.get_mut();
    for _ in 0..6 {
        raw.message().await.unwrap().unwrap();
    }

    // Node 2 leads, node 1's API shuts down: its feeds end with UNAVAILABLE.
    cluster.cluster.leader.store(2, Ordering::SeqCst);
    cluster.stop(1);
    let ended = tokio::time::timeout(Duration::from_secs(10), raw.message()).await.unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::Unavailable);

    client.create_transfers(&[receipt(300, 10, 11, 1, 1), receipt(301, 20, 21, 2, 2)]).await.unwrap();
    let after = next_changes(&mut feed, 2).await;
    assert_eq!(after.iter().filter_map(created_transfer_id).collect::<Vec<_>>(), [300, 301]);
    assert!(after.iter().all(|change| change.node_id == 2), "resumed at node 2");
    assert!(after[0].cursor > before[5].cursor);
    assert_quiet(&mut feed).await;
}

#[tokio::test]
async fn a_feed_ends_with_unavailable_when_its_node_stops() {
    let cluster = TestCluster::start(true).await;
    seed(&cluster.client(&[1])).await;
    let mut raw = cluster.raw(2).await;
    let mut stream = raw.subscribe_changes(proto::SubscribeChangesRequest::default()).await.unwrap().into_inner();
    for _ in 0..6 {
        stream.message().await.unwrap().unwrap();
    }
    cluster.cluster.stopped.store(true, Ordering::SeqCst);
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable);
    assert!(ended.message().contains("try another node"), "{}", ended.message());
}
