//! Security end to end, on real `coffer node` processes over TLS: who may
//! connect, which role may do what on which ledger, certificates from
//! another authority, rotation without a restart, and the refusals' codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use coffer_api::client::{Client, ClientConfig, ClientError};
use coffer_dr::proto::dr_service_client::DrServiceClient;
use coffer_dr::proto::ShipUp;
use coffer_ledger::{Account, AccountId, AccountKind, Ledger, LedgerId, Transfer, TransferId, TransferKind};
use coffer_security::issue::{loopback_hosts, Authority};
use coffer_security::{Identity, Security, TlsContext, TlsFiles};
use coffer_tests::pki::{pki, CLUSTER};
use coffer_tests::{client_config, coffer_as, Cluster};
use tonic::Code;

/// Ledger 1, where `poster1` may post, and ledger 2, where it may not.
const LEDGERS: [LedgerId; 2] = [LedgerId(1), LedgerId(2)];

fn account(id: u128, ledger: LedgerId) -> Account {
    Account { id: AccountId(id), ledger, code: 1, kind: AccountKind::Other, ..Default::default() }
}

fn transfer(id: u128, ledger: LedgerId) -> Transfer {
    let (debit, credit) = (u128::from(ledger.0) * 100 + 1, u128::from(ledger.0) * 100 + 2);
    Transfer {
        id: TransferId(id),
        debit_account_id: AccountId(debit),
        credit_account_id: AccountId(credit),
        amount: 5,
        ledger,
        code: 1,
        kind: TransferKind::Journal,
        ..Default::default()
    }
}

/// Two ledgers with two accounts each, made by `admin`.
async fn set_up(cluster: &Cluster) {
    let admin = cluster.client();
    let ledgers: Vec<Ledger> = LEDGERS
        .iter()
        .map(|&id| Ledger {
            id,
            currency: "KRW".into(),
            scale: 0,
            name: format!("ledger {}", id.0),
            ..Default::default()
        })
        .collect();
    admin.create_ledgers(&ledgers).await.unwrap();
    let accounts: Vec<Account> =
        LEDGERS.iter().flat_map(|&ledger| [1, 2].map(|n| account(u128::from(ledger.0) * 100 + n, ledger))).collect();
    admin.create_accounts(&accounts).await.unwrap();
}

/// A client of `cluster` presenting `principal`'s certificate, trying once.
fn client_as(cluster: &Cluster, principal: &str) -> Client {
    let config = ClientConfig {
        security: pki().security(principal),
        deadline_ms: 5_000,
        attempts_max: 3,
        ..client_config(cluster.api_addresses())
    };
    Client::new(config).unwrap()
}

fn refusal(error: ClientError) -> (Code, String) {
    match error {
        ClientError::Status { status, .. } => (status.code(), status.message().to_owned()),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_ledgers_decide_who_may_post_and_a_refused_batch_changes_nothing() {
    let cluster = Cluster::start(3).await;
    set_up(&cluster).await;

    let reader = client_as(&cluster, "reader");
    let (code, message) = refusal(reader.create_transfers(&[transfer(1, LEDGERS[0])]).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("principal reader does not hold the role poster"), "{message}");

    let poster = client_as(&cluster, "poster1");
    poster.create_transfers(&[transfer(2, LEDGERS[0])]).await.unwrap();
    let mixed = [transfer(3, LEDGERS[0]), transfer(4, LEDGERS[1])];
    let (code, message) = refusal(poster.create_transfers(&mixed).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("transfers[1]: principal poster1 does not hold poster on ledger 2"), "{message}");
    let admin = cluster.client();
    let found = admin.lookup_transfers(&[TransferId(2), TransferId(3), TransferId(4)]).await.unwrap().value;
    assert_eq!(found.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false, false], "nothing of the batch");

    // Through each follower (which forwards to the leader naming the
    // principal) the grants are the same.
    let leader = cluster.wait_for_leader(&[]).await;
    for (id, node) in cluster.nodes.iter().filter(|(id, _)| **id != leader) {
        let config = ClientConfig {
            security: pki().security("poster1"),
            attempts_max: 1,
            ..client_config(vec![node.addresses.api.clone()])
        };
        let through = Client::new(config).unwrap();
        through.create_transfers(&[transfer(10 + u128::from(*id), LEDGERS[0])]).await.unwrap();
        let (code, _) =
            refusal(through.create_transfers(&[transfer(20 + u128::from(*id), LEDGERS[1])]).await.unwrap_err());
        assert_eq!(code, Code::PermissionDenied);
    }

    // A scoped reader sees its ledgers only.
    let read = poster.lookup_accounts(&[AccountId(101), AccountId(201)]).await.unwrap().value;
    assert_eq!(read.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false]);
    let (code, _) = refusal(poster.trial_balance(LEDGERS[1]).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied);

    // Operations need an operator; a revoked principal is not even heard.
    let (code, message) = refusal(poster.transfer_leader(leader).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("does not hold the role operator"), "{message}");
    let (code, message) = refusal(client_as(&cluster, "revoked").status().await.unwrap_err());
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("principal revoked is revoked"), "{message}");
    let (code, _) = refusal(client_as(&cluster, "nobody").lookup_accounts(&[AccountId(101)]).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied, "a principal the policy does not name holds no role");

    // Each node's own audit log holds the calls it refused and the
    // administrative calls it served, with who made them.
    cluster.client().transfer_leader(leader).await.unwrap();
    let log = cluster.nodes[&leader].data_dir.join("audit.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let refused = lines.iter().any(|line| line["principal"] == "reader" && line["outcome"] == "refused");
        let served = lines.iter().any(|line| {
            line["principal"] == "admin"
                && line["method"] == "/coffer.v1.AdminService/TransferLeader"
                && line["outcome"] == "ok"
        });
        if refused && served {
            break lines;
        }
        assert!(Instant::now() < deadline, "{} holds:\n{text}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(lines.iter().all(|line| line["node"] == leader), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_the_principal_of_every_batch_identically_on_every_node() {
    let cluster = Cluster::start(3).await;
    set_up(&cluster).await;
    let poster = client_as(&cluster, "poster1");
    let posted = poster.create_transfers(&[transfer(1, LEDGERS[0]), transfer(2, LEDGERS[0])]).await.unwrap();
    let index = posted.applied_index;
    let mut trails = Vec::new();
    for (id, node) in &cluster.nodes {
        cluster.wait_applied(*id, index, Duration::from_secs(10)).await;
        let trail = cluster.client().list_audit_at(&node.addresses.api, 0, 100).await.unwrap().value;
        trails.push(trail);
    }
    assert!(trails.windows(2).all(|pair| pair[0] == pair[1]), "the nodes' trails differ: {trails:#?}");
    let trail = &trails[0];
    let batch = trail.iter().find(|record| record.index == index).expect("the posted batch is in the trail");
    assert_eq!(
        (batch.principal.as_str(), batch.kind.as_str(), batch.events, batch.applied),
        ("poster1", "transfers", 2, true)
    );
    assert!(trail.iter().any(|record| record.principal == "admin" && record.kind == "ledgers"), "{trail:#?}");

    // The change feed names the principal of each change, on every node:
    // admin's ledgers and accounts, poster1's two transfers, then admin's.
    let admins = cluster.client().create_transfers(&[transfer(3, LEDGERS[1])]).await.unwrap();
    let expected = [vec!["admin"; LEDGERS.len()], vec!["admin"; 4], vec!["poster1", "poster1"], vec!["admin"]].concat();
    for (id, node) in &cluster.nodes {
        cluster.wait_applied(*id, admins.applied_index, Duration::from_secs(10)).await;
        let config =
            ClientConfig { security: pki().security("reader"), ..client_config(vec![node.addresses.api.clone()]) };
        let reader = Client::new(config).unwrap();
        let mut feed = reader.subscribe_changes(0, LedgerId(0)).unwrap();
        let mut principals = Vec::new();
        while principals.len() < expected.len() {
            let next = tokio::time::timeout(Duration::from_secs(20), feed.next()).await;
            let change = next.expect("a change within 20 s").expect("the feed goes on").unwrap();
            assert_eq!(change.node_id, *id, "served by the node asked");
            principals.push(change.principal);
        }
        assert_eq!(principals, expected, "node {id}'s feed");
    }

    // Only an auditor reads it; a filter names one principal.
    let (code, message) = refusal(poster.list_audit(0, 10, None).await.unwrap_err());
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("does not hold the role auditor"), "{message}");
    let at = cluster.api_addresses().join(",");
    let listed = coffer_as("admin", &["--addresses", &at, "--json", "audit", "--of", "poster1"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let records = json.as_array().unwrap();
    assert!(!records.is_empty() && records.iter().all(|record| record["principal"] == "poster1"), "{json:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_of_the_cluster_are_refused_and_the_node_serves_on() {
    let cluster = Cluster::start(3).await;
    let plaintext =
        Client::new(ClientConfig { attempts_max: 1, deadline_ms: 3_000, ..ClientConfig::new(cluster.api_addresses()) })
            .unwrap();
    assert!(plaintext.status().await.is_err(), "a plaintext client on a TLS port");

    let elsewhere = tempfile::tempdir().unwrap();
    let other = Authority::create(CLUSTER, 1).unwrap();
    other.to_issued().write(elsewhere.path(), "other-ca").unwrap();
    other.issue(&Identity::client(CLUSTER, "admin"), &[], 1).unwrap().write(elsewhere.path(), "admin").unwrap();
    // It trusts the cluster's authority, but its own certificate is another's.
    let files = TlsFiles {
        ca: pki().dir().join("ca.crt"),
        cert: elsewhere.path().join("admin.crt"),
        key: elsewhere.path().join("admin.key"),
    };
    let foreign = Security::Tls(TlsContext::load(files).unwrap());
    let config = ClientConfig {
        security: foreign,
        attempts_max: 1,
        deadline_ms: 3_000,
        ..client_config(cluster.api_addresses())
    };
    assert!(Client::new(config).unwrap().status().await.is_err(), "a certificate of another authority");

    let log = std::fs::read_to_string(&cluster.nodes[&1].log).unwrap();
    assert!(log.contains("connection refused"), "the refusals are logged");
    assert!(cluster.client().status().await.is_ok(), "and the node serves everyone else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_of_another_authority_cannot_join_and_a_client_cannot_ship() {
    let mut cluster = Cluster::start(3).await;
    let admin = cluster.client();
    set_up(&cluster).await;
    admin.create_transfers(&[transfer(1, LEDGERS[0])]).await.unwrap();

    // Node 4 presents a certificate of another authority (naming the
    // cluster and node 4 all the same) and is added as a learner.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Authority::create(CLUSTER, 1).unwrap();
    other.to_issued().write(elsewhere.path(), "ca").unwrap();
    let identity = Identity::node(CLUSTER, coffer_security::DEFAULT_REGION, 4);
    other.issue(&identity, &loopback_hosts(), 1).unwrap().write(elsewhere.path(), "node4").unwrap();
    let addresses = cluster.spawn_joining_with(4, TlsFiles::in_dir(elsewhere.path(), "node4"));
    admin.add_node(4, &addresses.raft, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = std::fs::read_to_string(&cluster.nodes[&4].log).unwrap_or_default();
        assert!(!log.contains("snapshot installed"), "node 4 received the group's state:\n{log}");
    }
    let leader = cluster.wait_for_leader(&[4]).await;
    let leader_log = std::fs::read_to_string(&cluster.nodes[&leader].log).unwrap();
    assert!(leader_log.contains("peer=4"), "the leader failed to reach node 4");
    let node4_log = std::fs::read_to_string(&cluster.nodes[&4].log).unwrap();
    assert!(node4_log.contains("connection refused"), "node 4 refused the group's nodes:\n{node4_log}");

    // Shipping is for the other region's nodes: a client is refused.
    let leader_api = cluster.nodes[&leader].addresses.api.clone();
    let mut dr = coffer_tests::channel(&leader_api).await.map(DrServiceClient::new).unwrap();
    let up = tokio_stream::iter([ShipUp::default()]);
    let refused = dr.ship(up).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("only the other region's nodes"), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_may_switch_regions_over_and_a_poster_may_not() {
    let settings = "lease_ms = 2000\nclock_skew_ms = 200\nheartbeat_ms = 100";
    let (seoul, _busan) = Cluster::start_regions(3, settings).await;
    let at = seoul.api_addresses().join(",");
    let switchover = ["--addresses", at.as_str(), "dr", "switchover"];
    let refused = coffer_as("poster1", &switchover);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a poster switched the regions over");
    assert!(said.contains("PermissionDenied") && said.contains("does not hold the role operator"), "{said}");
    // Nothing moved: seoul is still the primary, and writable.
    seoul.client().status().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = coffer_as("operator", &switchover);
        if done.status.success() {
            break;
        }
        // The standby may not be promotable yet (its lease wait).
        let said = String::from_utf8_lossy(&done.stderr).into_owned();
        assert!(Instant::now() < deadline && !said.contains("PermissionDenied"), "{said}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_rotated_files_without_a_restart() {
    let mut cluster = Cluster::start(3).await;
    // Node 1 runs on copies of its files, which the test rotates.
    let dir = tempfile::tempdir().unwrap();
    let node = cluster.node(1);
    node.terminate();
    let own = TlsFiles::in_dir(dir.path(), "node1");
    for (from, to) in [(&node.tls.ca, &own.ca), (&node.tls.cert, &own.cert), (&node.tls.key, &own.key)] {
        std::fs::copy(from, to).unwrap();
    }
    node.tls = own.clone();
    node.start();
    let node1 = node.addresses.api.clone();
    cluster.wait_for_leader(&[]).await;

    // A client whose certificate a second authority issued: node 1 does
    // not trust it until its CA bundle holds that authority too.
    let second = Authority::create(CLUSTER, 1).unwrap();
    second.issue(&Identity::client(CLUSTER, "admin"), &[], 1).unwrap().write(dir.path(), "admin").unwrap();
    let files = TlsFiles {
        ca: pki().dir().join("ca.crt"),
        cert: dir.path().join("admin.crt"),
        key: dir.path().join("admin.key"),
    };
    let config = ClientConfig {
        security: Security::Tls(TlsContext::load(files).unwrap()),
        attempts_max: 1,
        deadline_ms: 3_000,
        ..client_config(vec![node1])
    };
    let client = Client::new(config).unwrap();
    assert!(client.status().await.is_err(), "before the rotation");

    let bundle = std::fs::read_to_string(&own.ca).unwrap() + second.cert_pem();
    let staged = dir.path().join("ca.staged");
    std::fs::write(&staged, bundle).unwrap();
    std::fs::rename(&staged, &own.ca).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.status().await {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "the rotated bundle was not taken: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(&cluster.nodes[&1].log).unwrap();
    assert!(log.contains("TLS files changed: reloaded"), "the reload is logged");
    assert_eq!(
        log.matches("serving node=1").count(),
        2,
        "node 1 was started twice by the test, not restarted by the rotation"
    );
}
