//! The services and the client over real gRPC on loopback, against
//! in-memory nodes whose answers each test scripts: a leader and a
//! follower sharing one ledger, overloaded queues, writes whose outcome is
//! unknown, writes that never finish.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_api::client::{Client, ClientConfig, ClientError, Role};
use coffer_api::node::Node;
use coffer_api::proto;
use coffer_api::proto::ledger_service_client::LedgerServiceClient;
use coffer_api::server::{ApiServer, ServerConfig};
use coffer_api::status::LEADER_METADATA_KEY;
use coffer_consensus::raft::prelude::ConfState;
use coffer_consensus::raft::StateRole;
use coffer_consensus::{Applied, MembershipChange, NodeStatus, Outcome, ProposalError, RequestError};
use coffer_ledger::{
    Account, AccountFilter, AccountFlags, AccountId, AccountKind, CreateAccountResult, CreateLedgerResult,
    CreateTransferResult, Ledger, LedgerId, MemoryStore, Operation, StateMachine, Transfer, TransferId, TransferKind,
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
        let machine = self.cluster.machine.lock().unwrap();
        Ok((self.cluster.applied.load(Ordering::SeqCst), f(machine.store())))
    }

    fn conf_state() -> ConfState {
        ConfState { voters: vec![1, 2], ..Default::default() }
    }
}

impl Node for FakeNode {
    type State = MemoryStore;

    fn id(&self) -> u64 {
        self.id
    }

    fn is_stopped(&self) -> bool {
        false
    }

    async fn propose(&self, operation: Operation) -> Result<Applied, RequestError> {
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

    async fn change_membership(&self, _change: MembershipChange, _address: String) -> Result<Applied, RequestError> {
        if self.id != self.leader() {
            return Err(RequestError::Proposal(ProposalError::NotLeader { leader: Some(self.leader()) }));
        }
        let index = self.cluster.applied.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Applied { index, outcome: Outcome::Membership(Self::conf_state()) })
    }

    async fn snapshot(&self, _dir: PathBuf) -> Result<SnapshotManifest, RequestError> {
        let index = self.cluster.applied.load(Ordering::SeqCst);
        Ok(SnapshotManifest { applied: AppliedState { index, term: 1 }, conf_state: Self::conf_state(), files: vec![] })
    }
}

/// Two fake nodes (1 leads) serving the API on loopback.
struct TestCluster {
    cluster: Arc<Cluster>,
    addresses: BTreeMap<u64, String>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl TestCluster {
    async fn start(forward_writes: bool) -> Self {
        let cluster = Arc::new(Cluster::default());
        cluster.leader.store(1, Ordering::SeqCst);
        let mut listeners = Vec::new();
        let mut addresses = BTreeMap::new();
        for id in [1, 2] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(id, listener.local_addr().unwrap().to_string());
            listeners.push((id, listener));
        }
        let mut stops = Vec::new();
        for (id, listener) in listeners {
            let node = FakeNode { id, cluster: cluster.clone() };
            let config = ServerConfig { forward_writes, ..ServerConfig::new(addresses.clone()) };
            let server = ApiServer::new(node, config).unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(server.serve(listener, async move {
                let _ = stopped.await;
            }));
            stops.push(stop);
        }
        Self { cluster, addresses, _stops: stops }
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
    Ledger { id: LedgerId(id), currency: "KRW".into(), scale, name: format!("ledger {id}"), timestamp: 0 }
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
    proto::CreateTransfersRequest { transfers, amount_unit: proto::AmountUnit::Decimal as i32 }
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
    assert_eq!(response.into_inner().results, ["transfer_must_have_the_same_ledger_as_accounts"]);
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

    let unimplemented = raw.query_transfers(proto::QueryTransfersRequest::default()).await.unwrap_err();
    assert_eq!(unimplemented.code(), Code::Unimplemented);

    let trial = raw.trial_balance(proto::TrialBalanceRequest { ledger: 77, ..Default::default() }).await.unwrap_err();
    assert_eq!(trial.code(), Code::NotFound);
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
    let mut request = Request::new(proto::CreateLedgersRequest { ledgers: vec![] });
    request.set_timeout(Duration::from_millis(300));
    let refused = raw.create_ledgers(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::DeadlineExceeded, "{}", refused.message());
    assert!(refused.message().contains("retry with the same ids"), "{}", refused.message());

    cluster.script(&[Script::Hang]);
    let client = Client::new(ClientConfig { deadline_ms: 300, ..ClientConfig::new(vec![cluster.address(1)]) }).unwrap();
    let error = client.create_ledgers(&[]).await.unwrap_err();
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
    let membership = client.add_node(3, "127.0.0.1:9").await.unwrap();
    assert!(membership.index > 0);
    let refused = client.promote_node(0).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument));
    let refused = client.add_node(4, "nowhere").await.unwrap_err();
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
    for name in ["coffer.v1.LedgerService", "coffer.v1.AdminService", "grpc.health.v1.Health"] {
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
