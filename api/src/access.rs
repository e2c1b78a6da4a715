//! Who may do what: roles granted to principals per ledger, checked on
//! every RPC in one place.
//!
//! A request's principal comes from its connection's certificate
//! ([`coffer_security::PeerInfo`]): a client principal, or a node. Nodes
//! are the cluster's own infrastructure and may call everything except
//! fault injection where it is off; a node forwarding a client's write to
//! the leader names the client in [`PRINCIPAL_METADATA_KEY`], and the
//! leader checks that client's grants (the header counts only on a
//! connection from a node). On a plaintext node (`insecure = true`) every
//! caller is anonymous and may do everything: that is what insecure means.
//!
//! [`AccessLayer`] runs before every service on the API port: it resolves
//! the [`Caller`], refuses a revoked principal (`UNAUTHENTICATED`) and a
//! method whose role the caller holds on no ledger (`PERMISSION_DENIED`
//! naming the role), and puts the [`Caller`] in the request's extensions,
//! where the handlers narrow the check to the ledgers a request names
//! ([`Caller::check_ledgers`]). A batch that names a ledger its principal
//! may not post to is refused whole: nothing of it is applied.
//!
//! The policy is a TOML file ([`Policy::parse`]), the same on every node,
//! reloaded when it changes (and on SIGHUP):
//!
//! ```toml
//! revoked = ["old-payments-module"]
//!
//! [principals.gangnam-payments]
//! poster = [1]          # ledgers it may post to
//! reader = [1]          # ledgers it may read
//!
//! [principals.treasury-ops]
//! operator = true       # membership, leader transfer, snapshots, DR
//! reader = "all"
//!
//! [principals.audit-office]
//! auditor = true
//! reader = "all"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use coffer_security::{Identity, PeerInfo};

use crate::audit_log::{AuditLog, LocalAuditEntry};
use serde::Deserialize;
use tonic::codegen::{http, Service};
use tonic::Status;

/// The metadata key in which a node forwarding a request names the client
/// principal it forwards for.
pub const PRINCIPAL_METADATA_KEY: &str = "coffer-principal";
/// How often the policy file is checked for a change.
pub const POLICY_POLL_MS: u64 = 2_000;
/// Requests one principal may have in flight on one node, by default.
pub const REQUESTS_PER_PRINCIPAL_MAX_DEFAULT: usize = 256;
/// Events (ledgers, accounts, transfers) one principal may have in flight
/// in write requests on one node, by default: four full batches.
pub const EVENTS_PER_PRINCIPAL_MAX_DEFAULT: usize = 4 * coffer_ledger::BATCH_EVENTS_MAX;
/// Principals whose limits one node keeps at once (their semaphores are
/// dropped, and made again, past it).
const LIMITED_PRINCIPALS_MAX: usize = 4_096;

/// A role: what kind of calls a principal may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Create ledgers, accounts and transfers, on its ledgers.
    Poster,
    /// Lookups, queries, balances, trial balances, the change feed, on its
    /// ledgers.
    Reader,
    /// Membership, leader transfer, snapshots and disaster-recovery
    /// operations (cluster-wide).
    Operator,
    /// Read the audit trail (cluster-wide).
    Auditor,
}

impl Role {
    /// Its name in the policy file and in refusals.
    pub fn name(self) -> &'static str {
        match self {
            Self::Poster => "poster",
            Self::Reader => "reader",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        }
    }
}

/// The ledgers a grant covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ledgers {
    /// Every ledger, present and future.
    All,
    /// These ledgers.
    Some(BTreeSet<u32>),
}

impl Ledgers {
    fn covers(&self, ledger: u32) -> bool {
        match self {
            Self::All => true,
            Self::Some(ledgers) => ledgers.contains(&ledger),
        }
    }
}

/// What one principal is granted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Where it may post.
    pub poster: Option<Ledgers>,
    /// Where it may read.
    pub reader: Option<Ledgers>,
    /// Whether it is an operator.
    pub operator: bool,
    /// Whether it is an auditor.
    pub auditor: bool,
}

impl Grants {
    /// Every role on every ledger.
    pub fn everything() -> Self {
        Self { poster: Some(Ledgers::All), reader: Some(Ledgers::All), operator: true, auditor: true }
    }

    fn ledgers(&self, role: Role) -> Option<&Ledgers> {
        match role {
            Role::Poster => self.poster.as_ref(),
            Role::Reader => self.reader.as_ref(),
            Role::Operator => self.operator.then_some(&Ledgers::All),
            Role::Auditor => self.auditor.then_some(&Ledgers::All),
        }
    }

    /// Whether it holds `role` on at least one ledger.
    pub fn holds(&self, role: Role) -> bool {
        match self.ledgers(role) {
            None => false,
            Some(Ledgers::All) => true,
            Some(Ledgers::Some(ledgers)) => !ledgers.is_empty(),
        }
    }

    /// Whether it holds `role` on `ledger`.
    pub fn covers(&self, role: Role, ledger: u32) -> bool {
        self.ledgers(role).is_some_and(|ledgers| ledgers.covers(ledger))
    }

    /// Whether it holds `role` on every ledger.
    pub fn covers_all(&self, role: Role) -> bool {
        matches!(self.ledgers(role), Some(Ledgers::All))
    }
}

/// The access policy: principals' grants, and the principals refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    principals: BTreeMap<String, Arc<Grants>>,
    revoked: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    revoked: Vec<String>,
    #[serde(default)]
    principals: BTreeMap<String, GrantsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    poster: Option<LedgersFile>,
    reader: Option<LedgersFile>,
    #[serde(default)]
    operator: bool,
    #[serde(default)]
    auditor: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LedgersFile {
    List(Vec<u32>),
    Word(String),
}

impl LedgersFile {
    fn resolve(self, principal: &str, role: &str) -> Result<Ledgers, String> {
        match self {
            Self::List(ledgers) => {
                if let Some(zero) = ledgers.iter().find(|ledger| **ledger == 0) {
                    return Err(format!("principals.{principal}.{role}: {zero} is not a ledger"));
                }
                Ok(Ledgers::Some(ledgers.into_iter().collect()))
            }
            Self::Word(word) if word == "all" => Ok(Ledgers::All),
            Self::Word(word) => {
                Err(format!("principals.{principal}.{role}: {word:?} is neither a list of ledgers nor \"all\""))
            }
        }
    }
}

impl Policy {
    /// Parses a policy file's text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|error| format!("{}: {}", path.display(), error.message()))?;
        let mut principals = BTreeMap::new();
        for (name, grants) in file.principals {
            coffer_security::identity::check_name(&name)
                .map_err(|reason| format!("{}: principal {name:?}: {reason}", path.display()))?;
            let resolve = |ledgers: Option<LedgersFile>, role| {
                ledgers
                    .map(|ledgers| ledgers.resolve(&name, role))
                    .transpose()
                    .map_err(|e| format!("{}: {e}", path.display()))
            };
            let grants = Grants {
                poster: resolve(grants.poster, "poster")?,
                reader: resolve(grants.reader, "reader")?,
                operator: grants.operator,
                auditor: grants.auditor,
            };
            principals.insert(name, Arc::new(grants));
        }
        Ok(Self { principals, revoked: file.revoked.into_iter().collect() })
    }

    /// Reads and parses the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
        Self::parse(path, &text)
    }

    /// `principal`'s grants (none for a principal the policy does not name).
    pub fn grants(&self, principal: &str) -> Arc<Grants> {
        self.principals.get(principal).cloned().unwrap_or_default()
    }

    /// Whether `principal` is revoked.
    pub fn is_revoked(&self, principal: &str) -> bool {
        self.revoked.contains(principal)
    }
}

/// How a node's API decides access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessConfig {
    /// The policy file; `None`: no client principal holds any role (nodes
    /// still may do everything).
    pub policy: Option<PathBuf>,
    /// Whether `Isolate` (fault injection for drills and tests) is served.
    /// Default: false.
    pub fault_injection: bool,
    /// The other region's name, whose nodes may ship from this one.
    pub peer_region: Option<String>,
    /// Plaintext: every caller is anonymous and may do everything.
    pub insecure: bool,
    /// Requests one client principal may have in flight on this node; one
    /// more is refused `RESOURCE_EXHAUSTED`. Default:
    /// [`REQUESTS_PER_PRINCIPAL_MAX_DEFAULT`].
    pub requests_per_principal_max: usize,
    /// Events one client principal may have in flight in write requests on
    /// this node. Default: [`EVENTS_PER_PRINCIPAL_MAX_DEFAULT`].
    pub events_per_principal_max: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            policy: None,
            fault_injection: false,
            peer_region: None,
            insecure: false,
            requests_per_principal_max: REQUESTS_PER_PRINCIPAL_MAX_DEFAULT,
            events_per_principal_max: EVENTS_PER_PRINCIPAL_MAX_DEFAULT,
        }
    }
}

/// One principal's bounds on this node, so that one module's burst cannot
/// take every slot.
#[derive(Debug)]
pub struct PrincipalLimits {
    requests: Arc<tokio::sync::Semaphore>,
    events: Arc<tokio::sync::Semaphore>,
}

/// The access decisions of one node: the configuration and the current
/// policy, reloaded when its file changes.
#[derive(Debug)]
pub struct Access {
    config: AccessConfig,
    policy: RwLock<(Arc<Policy>, Option<SystemTime>)>,
    limits: std::sync::Mutex<std::collections::HashMap<String, Arc<PrincipalLimits>>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|meta| meta.modified()).ok()
}

impl Access {
    /// The access of `config`, its policy file read.
    pub fn load(config: AccessConfig) -> Result<Arc<Self>, String> {
        let (policy, stamp) = match &config.policy {
            Some(path) => (Policy::load(path)?, modified(path)),
            None => (Policy::default(), None),
        };
        Ok(Arc::new(Self { config, policy: RwLock::new((Arc::new(policy), stamp)), limits: Default::default() }))
    }

    /// Everyone may do everything (plaintext, or tests embedding a server).
    pub fn open() -> Arc<Self> {
        let config = AccessConfig { insecure: true, fault_injection: true, ..AccessConfig::default() };
        Arc::new(Self { config, policy: RwLock::new((Arc::new(Policy::default()), None)), limits: Default::default() })
    }

    /// Its configuration.
    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    /// Reads the policy file again, if there is one: `Ok(true)` when it
    /// changed and was taken. A policy that does not parse is refused and
    /// the one in force stays.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let Some(path) = &self.config.policy else {
            return Ok(false);
        };
        let stamp = modified(path);
        if !force && self.policy.read().unwrap_or_else(PoisonError::into_inner).1 == stamp {
            return Ok(false);
        }
        let parsed = Policy::load(path);
        let mut current = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        current.1 = stamp;
        let policy = parsed?;
        let changed = *current.0 != policy;
        current.0 = Arc::new(policy);
        Ok(changed)
    }

    /// Spawns the task that reloads the policy when its file changes.
    pub fn spawn_watch(self: &Arc<Self>, node: u64) -> tokio::task::JoinHandle<()> {
        let access = Arc::clone(self);
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(Duration::from_millis(POLICY_POLL_MS));
            loop {
                poll.tick().await;
                match access.reload(false) {
                    Ok(true) => tracing::info!(node, "access policy changed: reloaded"),
                    Ok(false) => {}
                    Err(error) => tracing::error!(node, error, "access policy refused; the one in force stays"),
                }
            }
        })
    }

    /// The caller of a request that arrived on a connection from `peer`
    /// naming `forwarded_for` in [`PRINCIPAL_METADATA_KEY`]; a revoked
    /// principal is refused.
    pub fn caller(&self, peer: Option<&PeerInfo>, forwarded_for: Option<&str>) -> Result<Caller, Status> {
        let identity = peer.and_then(|peer| peer.identity.as_deref());
        let name = match (identity, forwarded_for) {
            (None, _) if self.config.insecure => return Ok(Caller::Anonymous),
            (None, _) => return Err(Status::unauthenticated("the connection carries no client certificate")),
            (Some(Identity::Node { id, .. }), None) => return Ok(Caller::Node(*id)),
            (Some(Identity::Node { .. }), Some(name)) => name.to_owned(),
            (Some(Identity::Client { name, .. }), _) => name.clone(),
        };
        let policy = self.policy();
        if policy.is_revoked(&name) {
            return Err(Status::unauthenticated(format!("principal {name} is revoked")));
        }
        let grants = policy.grants(&name);
        let limits = self.limits_of(&name);
        Ok(Caller::Principal { name, grants, limits })
    }

    /// `principal`'s limits on this node.
    fn limits_of(&self, principal: &str) -> Arc<PrincipalLimits> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = limits.get(principal) {
            return found.clone();
        }
        if limits.len() >= LIMITED_PRINCIPALS_MAX {
            // Requests in flight keep their permits: a principal seen again
            // starts from a fresh bound.
            limits.clear();
        }
        let made = Arc::new(PrincipalLimits {
            requests: Arc::new(tokio::sync::Semaphore::new(self.config.requests_per_principal_max)),
            events: Arc::new(tokio::sync::Semaphore::new(self.config.events_per_principal_max)),
        });
        limits.insert(principal.to_owned(), made.clone());
        made
    }
}

/// Who made a request, as [`AccessLayer`] resolved it.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Plaintext: nobody is identified and everything is allowed.
    Anonymous,
    /// A node of the cluster.
    Node(u64),
    /// A client principal and its grants.
    Principal {
        /// Its name.
        name: String,
        /// Its grants when the request arrived.
        grants: Arc<Grants>,
        /// Its bounds on this node.
        limits: Arc<PrincipalLimits>,
    },
}

/// Events a write request holds against its principal's bound while it
/// runs (nothing for a node or an anonymous caller).
#[derive(Debug)]
pub struct EventsPermit {
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Caller {
    /// The caller of `request` ([`Caller::Anonymous`] where no layer ran:
    /// a server embedded without one trusts its callers).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request.extensions().get::<Self>().cloned().unwrap_or(Self::Anonymous)
    }

    /// Its name as the audit trail and refusals write it.
    pub fn principal(&self) -> String {
        match self {
            Self::Anonymous => "anonymous".into(),
            Self::Node(id) => format!("node:{id}"),
            Self::Principal { name, .. } => name.clone(),
        }
    }

    /// The client principal to name when forwarding for it.
    pub fn forwarded_for(&self) -> Option<&str> {
        match self {
            Self::Principal { name, .. } => Some(name),
            Self::Anonymous | Self::Node(_) => None,
        }
    }

    /// Takes `events` from the principal's bound on events in flight, for
    /// as long as the permit lives; `RESOURCE_EXHAUSTED` naming the limit
    /// when they are not there.
    pub fn admit_events(&self, events: usize) -> Result<EventsPermit, Status> {
        let Self::Principal { name, limits, .. } = self else {
            return Ok(EventsPermit { _held: None });
        };
        let count = u32::try_from(events).unwrap_or(u32::MAX);
        match limits.events.clone().try_acquire_many_owned(count) {
            Ok(permit) => Ok(EventsPermit { _held: Some(permit) }),
            Err(_) => Err(Status::resource_exhausted(format!(
                "principal {name} has too many events in flight on this node for {events} more \
                 ([access] events_per_principal_max); retry when its earlier batches are answered"
            ))),
        }
    }

    fn grants(&self) -> Option<&Grants> {
        match self {
            Self::Principal { grants, .. } => Some(grants),
            Self::Anonymous | Self::Node(_) => None,
        }
    }

    /// Whether it holds `role` on `ledger`.
    pub fn may(&self, role: Role, ledger: u32) -> bool {
        self.grants().is_none_or(|grants| grants.covers(role, ledger))
    }

    /// Checks `role` on the ledger of every event (`what` names them:
    /// "transfers"). Ledger 0 (a post or void taking its pending transfer's
    /// ledger) needs the role on every ledger, since the ledger is not
    /// known before the transfer is applied.
    pub fn check_ledgers(&self, role: Role, what: &str, ledgers: impl IntoIterator<Item = u32>) -> Result<(), Status> {
        let Some(grants) = self.grants() else {
            return Ok(());
        };
        for (at, ledger) in ledgers.into_iter().enumerate() {
            if ledger == 0 && !grants.covers_all(role) {
                return Err(Status::permission_denied(format!(
                    "{what}[{at}]: principal {} holds {} on some ledgers only, so every event must name its ledger \
                     (ledger 0 takes it from the pending transfer); nothing of the batch was applied",
                    self.principal(),
                    role.name()
                )));
            }
            if ledger != 0 && !grants.covers(role, ledger) {
                return Err(Status::permission_denied(format!(
                    "{what}[{at}]: principal {} does not hold {} on ledger {ledger}; nothing of the batch was applied",
                    self.principal(),
                    role.name()
                )));
            }
        }
        Ok(())
    }
}

/// What a method needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated caller (health, reflection, cluster status).
    Authenticated,
    /// A role, on at least one ledger (the handler checks which).
    Role(Role),
    /// A node of the other region (shipping, checkpoints for re-seeding).
    PeerRegionNode,
    /// An operator, on a node whose configuration enables fault injection.
    FaultInjection,
}

/// What each method served on the API port needs: one table for every
/// service. A method not in it is refused.
pub fn need(path: &str) -> Option<Need> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let need = match (service, method) {
        (
            "coffer.v1.LedgerService",
            "CreateLedgers" | "CreateAccounts" | "CreateTransfers" | "SetPeriods" | "ImportStatement"
            | "MatchStatement",
        ) => Need::Role(Role::Poster),
        (
            "coffer.v1.LedgerService",
            "LookupAccounts"
            | "LookupTransfers"
            | "GetAccountTransfers"
            | "GetAccountBalances"
            | "QueryTransfers"
            | "QueryAccounts"
            | "TrialBalance"
            | "SubscribeChanges"
            | "GetReconciliation"
            | "ListReconciliations",
        ) => Need::Role(Role::Reader),
        ("coffer.v1.LedgerService", "CloseFiscalYear") => Need::Role(Role::Operator),
        ("coffer.v1.AdminService", "Status") => Need::Authenticated,
        ("coffer.v1.AdminService", "AddNode" | "PromoteNode" | "RemoveNode" | "TransferLeader" | "Snapshot") => {
            Need::Role(Role::Operator)
        }
        ("coffer.v1.AdminService", "ListAudit") => Need::Role(Role::Auditor),
        ("coffer.dr.v1.DrService", "Ship" | "FetchCheckpoint") => Need::PeerRegionNode,
        (
            "coffer.dr.v1.DrService",
            "Status" | "Freeze" | "Unfreeze" | "Promote" | "Demote" | "Lease" | "Checkpoint" | "Reseed" | "Digest",
        ) => Need::Role(Role::Operator),
        ("coffer.dr.v1.DrService", "Isolate") => Need::FaultInjection,
        ("grpc.health.v1.Health", _)
        | ("grpc.reflection.v1.ServerReflection", _)
        | ("grpc.reflection.v1alpha.ServerReflection", _) => Need::Authenticated,
        _ => return None,
    };
    Some(need)
}

impl Access {
    /// Decides whether `caller` (arriving from `peer`) may call `path`.
    pub fn authorize(&self, path: &str, caller: &Caller, peer: Option<&PeerInfo>) -> Result<(), Status> {
        let Some(need) = need(path) else {
            return Err(Status::permission_denied(format!("{path} is not a method this node serves to anyone")));
        };
        if need == Need::FaultInjection && !self.config.fault_injection {
            return Err(Status::permission_denied(format!(
                "{path}: fault injection is off on this node ([access] fault_injection = false)"
            )));
        }
        match caller {
            Caller::Anonymous => Ok(()),
            Caller::Node(id) => match need {
                Need::PeerRegionNode => {
                    let region = peer.and_then(|peer| match peer.identity.as_deref() {
                        Some(Identity::Node { region, .. }) => Some(region.as_str()),
                        _ => None,
                    });
                    match (&self.config.peer_region, region) {
                        (Some(peer_region), Some(region)) if peer_region == region => Ok(()),
                        _ => Err(Status::permission_denied(format!(
                            "{path}: node {id} of region {} is not a node of the other region ({})",
                            region.unwrap_or("?"),
                            self.config.peer_region.as_deref().unwrap_or("none configured")
                        ))),
                    }
                }
                _ => Ok(()),
            },
            Caller::Principal { name, grants, .. } => {
                let role = match need {
                    Need::Authenticated => return Ok(()),
                    Need::Role(role) => role,
                    Need::FaultInjection => Role::Operator,
                    Need::PeerRegionNode => {
                        return Err(Status::permission_denied(format!(
                            "{path}: only the other region's nodes may call it; principal {name} is a client"
                        )))
                    }
                };
                if grants.holds(role) {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "{path}: principal {name} does not hold the role {}",
                        role.name()
                    )))
                }
            }
        }
    }
}

/// The layer that authorizes every request on the API port (see the
/// module's documentation).
#[derive(Clone, Debug)]
pub struct AccessLayer {
    access: Arc<Access>,
    node: u64,
    log: Option<Arc<AuditLog>>,
}

impl AccessLayer {
    /// Node `node`'s layer, deciding with `access`, recording refusals and
    /// administrative calls in `log`.
    pub fn new(access: Arc<Access>, node: u64, log: Option<Arc<AuditLog>>) -> Self {
        Self { access, node, log }
    }
}

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService { inner, access: self.access.clone(), node: self.node, log: self.log.clone() }
    }
}

/// The service [`AccessLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct AccessService<S> {
    inner: S,
    access: Arc<Access>,
    node: u64,
    log: Option<Arc<AuditLog>>,
}

/// Whether calls that need `need` are administrative (recorded in the
/// node-local audit log with their outcome).
fn is_administrative(need: Option<Need>) -> bool {
    matches!(need, Some(Need::Role(Role::Operator | Role::Auditor) | Need::FaultInjection))
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for AccessService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let forwarded_for =
            request.headers().get(PRINCIPAL_METADATA_KEY).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let path = request.uri().path().to_owned();
        let decided = self
            .access
            .caller(peer.as_ref(), forwarded_for.as_deref())
            .and_then(|caller| self.access.authorize(&path, &caller, peer.as_ref()).map(|()| caller));
        let admitted = decided.and_then(|caller| {
            let permit = match &caller {
                Caller::Principal { name, limits, .. } => {
                    Some(limits.requests.clone().try_acquire_owned().map_err(|_| {
                        Status::resource_exhausted(format!(
                        "principal {name} has {} requests in flight on this node ([access] requests_per_principal_max)",
                        self.access.config.requests_per_principal_max
                    ))
                    })?)
                }
                Caller::Anonymous | Caller::Node(_) => None,
            };
            Ok((caller, permit))
        });
        let remote = peer.as_ref().and_then(|peer| peer.remote).map(|remote| remote.to_string()).unwrap_or_default();
        let entry = |principal: String, outcome: String, detail: String| LocalAuditEntry {
            time_ms: crate::audit_log::now_ms(),
            node: self.node,
            principal,
            method: path.clone(),
            outcome,
            detail,
            remote: remote.clone(),
        };
        match admitted {
            Ok((caller, permit)) => {
                let pending = is_administrative(need(&path))
                    .then(|| self.log.clone().map(|log| (log, entry(caller.principal(), String::new(), String::new()))))
                    .flatten();
                request.extensions_mut().insert(coffer_security::Principal(caller.principal()));
                request.extensions_mut().insert(caller);
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let answered = answer.await;
                    drop(permit);
                    if let (Some((log, mut entry)), Ok(response)) = (pending, &answered) {
                        let code = response.headers().get("grpc-status").and_then(|code| code.to_str().ok());
                        entry.outcome = match code {
                            None | Some("0") => "ok".into(),
                            Some(code) => format!("{:?}", tonic::Code::from(code.parse::<i32>().unwrap_or(2))),
                        };
                        log.record(entry);
                    }
                    answered
                })
            }
            Err(status) => {
                let identity = peer.and_then(|peer| peer.identity);
                let who = identity.as_ref().map(|identity| identity.uri());
                if let Some(log) = &self.log {
                    let named = identity.as_ref().map(|identity| identity.principal());
                    let principal = forwarded_for.clone().or(named).unwrap_or_else(|| "anonymous".into());
                    log.record(entry(principal, "refused".into(), status.message().to_owned()));
                }
                tracing::warn!(
                    node = self.node,
                    path,
                    who,
                    remote,
                    forwarded_for,
                    refusal = status.message(),
                    "call refused"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let text = r#"
            revoked = ["old"]
            [principals.gangnam]
            poster = [1]
            reader = [1, 2]
            [principals.ops]
            operator = true
            reader = "all"
        "#;
        Policy::parse(Path::new("access.toml"), text).unwrap()
    }

    fn access(config: AccessConfig) -> Access {
        Access { config, policy: RwLock::new((Arc::new(policy()), None)), limits: Default::default() }
    }

    fn caller(name: &str) -> Caller {
        let peer = PeerInfo { remote: None, identity: Some(Arc::new(Identity::client("c", name))) };
        access(AccessConfig::default()).caller(Some(&peer), None).unwrap()
    }

    #[test]
    fn a_principal_is_bounded_in_events_in_flight_and_a_node_is_not() {
        let access = access(AccessConfig { events_per_principal_max: 10, ..AccessConfig::default() });
        let peer = PeerInfo { remote: None, identity: Some(Arc::new(Identity::client("c", "gangnam"))) };
        let caller = access.caller(Some(&peer), None).unwrap();
        let held = caller.admit_events(8).unwrap();
        let refused = caller.admit_events(3).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("events_per_principal_max"), "{}", refused.message());
        let again = access.caller(Some(&peer), None).unwrap();
        assert!(again.admit_events(3).is_err(), "the bound is the principal's, not the request's");
        drop(held);
        assert!(again.admit_events(10).is_ok());
        assert!(Caller::Node(1).admit_events(1_000_000).is_ok());
    }

    #[test]
    fn grants_cover_their_ledgers_only() {
        let gangnam = policy().grants("gangnam");
        assert!(gangnam.covers(Role::Poster, 1));
        assert!(!gangnam.covers(Role::Poster, 2));
        assert!(gangnam.covers(Role::Reader, 2));
        assert!(!gangnam.holds(Role::Operator));
        assert!(policy().grants("ops").covers_all(Role::Reader));
        assert_eq!(*policy().grants("nobody"), Grants::default());
        assert!(policy().is_revoked("old"));
    }

    #[test]
    fn a_bad_policy_is_refused_naming_the_key() {
        let refused = |text: &str| Policy::parse(Path::new("p.toml"), text).unwrap_err();
        assert!(refused("[principals.a]\nposter = [0]").contains("principals.a.poster: 0 is not a ledger"));
        assert!(refused("[principals.a]\nreader = \"some\"").contains("principals.a.reader"));
        assert!(refused("[principals.a]\nadmin = true").contains("unknown field"));
        assert!(refused("[principals.\"a b\"]\noperator = true").contains("principal \"a b\""));
    }

    #[test]
    fn every_method_needs_what_the_table_says() {
        assert_eq!(need("/coffer.v1.LedgerService/CreateTransfers"), Some(Need::Role(Role::Poster)));
        assert_eq!(need("/coffer.v1.LedgerService/SubscribeChanges"), Some(Need::Role(Role::Reader)));
        assert_eq!(need("/coffer.dr.v1.DrService/Promote"), Some(Need::Role(Role::Operator)));
        assert_eq!(need("/coffer.dr.v1.DrService/Ship"), Some(Need::PeerRegionNode));
        assert_eq!(need("/coffer.v1.LedgerService/DropEverything"), None);
    }

    #[test]
    fn a_scoped_poster_names_each_ledger_and_only_its_own() {
        let caller = caller("gangnam");
        assert!(caller.check_ledgers(Role::Poster, "transfers", [1, 1]).is_ok());
        let refused = caller.check_ledgers(Role::Poster, "transfers", [1, 2]).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("transfers[1]: principal gangnam does not hold poster on ledger 2"));
        assert!(caller.check_ledgers(Role::Poster, "transfers", [0]).is_err());
    }

    #[test]
    fn a_client_cannot_ship_and_a_reader_cannot_post() {
        let access = access(AccessConfig::default());
        let reader = caller("ops");
        let refused = access.authorize("/coffer.v1.LedgerService/CreateTransfers", &reader, None).unwrap_err();
        assert!(refused.message().contains("does not hold the role poster"));
        assert!(access.authorize("/coffer.dr.v1.DrService/Ship", &reader, None).is_err());
        assert!(access.authorize("/coffer.dr.v1.DrService/Isolate", &Caller::Node(1), None).is_err());
    }
}
