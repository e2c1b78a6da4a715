//! `coffer dev`: a local three-node cluster for trying Coffer (with `--dr`,
//! two: the primary region "seoul", nodes 1-3, and the standby region
//! "busan", nodes 11-13, shipping from it) — child processes of this
//! executable (`coffer node --config <dir>/nodeN.toml`,
//! configs written here, logs in `<dir>/nodeN.log`), a sample treasury
//! created idempotently (fixed ids: running it again on the same data
//! answers `exists`), endpoints and ready-to-paste commands printed. SIGINT
//! or SIGTERM stops the nodes (SIGTERM, then waits). A node that exits on
//! its own (killed, crashed) is reported and started again after a backoff
//! while the others keep serving; only a node that cannot start at all
//! (it exits within seconds, several times in a row) stops the cluster.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use coffer_api::client::{Client, ClientConfig, ClientError, Role};
use coffer_ledger::{Account, AccountFlags, AccountId, AccountKind, Ledger, LedgerId};
use coffer_security::Security;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// Nodes in the dev cluster.
pub const DEV_NODES: u16 = 3;
/// Node `i`'s API port is `base + i`, its Raft port `base + 100 + i`, its
/// metrics port `base + 200 + i`.
const RAFT_PORT_OFFSET: u16 = 100;
const METRICS_PORT_OFFSET: u16 = 200;
/// The default base port: APIs on 7101-7103, Raft on 7201-7203, metrics
/// on 7301-7303 (the client commands' default addresses).
const BASE_PORT_DEFAULT: u16 = 7100;
/// With `--dr`, the standby region's node ids (and port offsets) are the
/// primary's plus this.
const STANDBY_ID_OFFSET: u16 = 10;
/// The highest base port: the last node's metrics port must fit.
const BASE_PORT_MAX: u16 = u16::MAX - METRICS_PORT_OFFSET - STANDBY_ID_OFFSET - DEV_NODES;
/// The dev regions' names.
const PRIMARY_REGION: &str = "seoul";
const STANDBY_REGION: &str = "busan";
/// How long the cluster may take to elect a leader.
const LEADER_WAIT_MS: u64 = 30_000;
/// How often the children and the cluster are polled.
const POLL_MS: u64 = 200;
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT_MS: u64 = 15_000;
/// A node that exits sooner than this after it started counts as one that
/// could not start.
const START_GRACE_MS: u64 = 5_000;
/// A node that could not start this many times in a row is given up on, and
/// `coffer dev` stops.
const QUICK_EXITS_MAX: u32 = 5;
/// The first wait before a node that exited is started again; it doubles
/// with each quick exit in a row, up to [`RESTART_BACKOFF_MAX_MS`].
const RESTART_BACKOFF_MIN_MS: u64 = 500;
/// The longest wait before a node that exited is started again.
const RESTART_BACKOFF_MAX_MS: u64 = 8_000;
/// The deadline of each call the sample treasury makes.
const CALL_DEADLINE_MS: u64 = 10_000;

/// The sample treasury's ledger.
const KRW: LedgerId = LedgerId(1);
/// The dev cluster's name in its certificates.
const DEV_CLUSTER: &str = "coffer-dev";
/// The principals `coffer dev` issues client certificates for, and the
/// grants its access policy gives each (the README's quick start uses
/// `admin`, the CLI's default).
const DEV_PRINCIPALS: [(&str, &str); 5] = [
    ("admin", "poster = \"all\"\nreader = \"all\"\noperator = true\nauditor = true"),
    ("poster", "poster = [1]\nreader = [1]"),
    ("reader", "reader = \"all\""),
    ("operator", "operator = true\nreader = \"all\""),
    ("auditor", "auditor = true\nreader = \"all\""),
];
/// The sample funds: `(number, name)`. Fund `f`'s accounts are `f001` (cash),
/// `f401` (revenue), `f501` (personnel expense), `f502` (operations expense).
const FUNDS: [(u128, &str); 3] = [(1, "General fund"), (2, "Welfare fund"), (3, "Public works fund")];

/// `coffer dev`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct DevArgs {
    /// Where the nodes' configs, data and logs go.
    #[arg(long, value_name = "DIR", default_value = "data/dev")]
    pub data_dir: PathBuf,
    /// Node i listens on base+i (API), base+100+i (Raft), base+200+i (metrics).
    #[arg(long, default_value_t = BASE_PORT_DEFAULT, value_parser = clap::value_parser!(u16).range(1..=i64::from(BASE_PORT_MAX)))]
    pub base_port: u16,
    /// Do not create the sample treasury.
    #[arg(long)]
    pub no_sample: bool,
    /// Start two regions: the primary (nodes 1-3) and a disaster-recovery
    /// standby (nodes 11-13) that ships from it.
    #[arg(long)]
    pub dr: bool,
    /// With --dr: async (the primary answers after its own commit) or sync
    /// (after the standby committed too).
    #[arg(long, default_value = "async", value_parser = ["async", "sync"])]
    pub dr_mode: String,
    /// TOML added to every node's configuration (`[storage]`, `[raft]`,
    /// `[batch]` sections; see api/coffer.example.toml), e.g. smaller caches.
    #[arg(long, value_name = "FILE")]
    pub node_toml: Option<PathBuf>,
}

/// Why `coffer dev` failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A file or directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node could not be started.
    #[error("starting node {node}: {source}")]
    Spawn {
        /// The node.
        node: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node exited on its own.
    #[error("node {node} exited unexpectedly ({status}); its log {log} ends: {last_line}")]
    NodeDied {
        /// The node.
        node: u16,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last line of its log.
        last_line: String,
    },
    /// No leader was elected in time.
    #[error("no leader within {LEADER_WAIT_MS} ms (last answer: {last}); see the logs in {dir}")]
    NoLeader {
        /// The last status answer or failure.
        last: String,
        /// The data directory.
        dir: PathBuf,
    },
    /// The sample treasury could not be created.
    #[error("creating the sample treasury: {0}")]
    Sample(String),
    /// Nodes did not stop cleanly.
    #[error("stopping the cluster: {0}")]
    Stop(String),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The dev certificates could not be made or read.
    #[error("dev certificates: {0}")]
    Tls(String),
}

impl DevError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// One node of the dev cluster.
struct DevNode {
    id: u16,
    api: String,
    raft: String,
    metrics: String,
    config: PathBuf,
    log: PathBuf,
    /// With `--dr`: `[dr]`'s region, peer region, peer addresses, role, mode.
    dr: Option<(String, String, Vec<String>, String, String)>,
}

impl DevNode {
    fn new(dir: &Path, base_port: u16, id: u16) -> Self {
        let address = |port: u16| format!("127.0.0.1:{port}");
        Self {
            id,
            api: address(base_port + id),
            raft: address(base_port + RAFT_PORT_OFFSET + id),
            metrics: address(base_port + METRICS_PORT_OFFSET + id),
            config: dir.join(format!("node{id}.toml")),
            log: dir.join(format!("node{id}.log")),
            dr: None,
        }
    }

    /// The nodes of both regions: the primary's, then the standby's.
    fn regions(dir: &Path, base_port: u16, mode: &str) -> (Vec<Self>, Vec<Self>) {
        let mut primary: Vec<Self> = (1..=DEV_NODES).map(|id| Self::new(dir, base_port, id)).collect();
        let mut standby: Vec<Self> =
            (1..=DEV_NODES).map(|id| Self::new(dir, base_port, STANDBY_ID_OFFSET + id)).collect();
        let apis = |nodes: &[Self]| nodes.iter().map(|node| node.api.clone()).collect::<Vec<_>>();
        let (primary_apis, standby_apis) = (apis(&primary), apis(&standby));
        for node in &mut primary {
            let names = (PRIMARY_REGION.into(), STANDBY_REGION.into());
            node.dr = Some((names.0, names.1, standby_apis.clone(), "primary".into(), mode.into()));
        }
        for node in &mut standby {
            let names = (STANDBY_REGION.into(), PRIMARY_REGION.into());
            node.dr = Some((names.0, names.1, primary_apis.clone(), "standby".into(), mode.into()));
        }
        (primary, standby)
    }

    /// The node's region (its certificate names it).
    fn region(&self) -> &str {
        self.dr.as_ref().map_or(coffer_security::DEFAULT_REGION, |dr| dr.0.as_str())
    }

    /// The `[tls]` and `[access]` sections: the node's certificate in
    /// `tls_dir`, the dev policy and fault injection (for the drills); or
    /// plaintext.
    fn security_text(&self, tls_dir: Option<&Path>) -> String {
        let quote = |path: &Path| toml::Value::String(path.to_string_lossy().into_owned()).to_string();
        let Some(tls_dir) = tls_dir else {
            return "\n[tls]\ninsecure = true\n\n[access]\nfault_injection = true\n".into();
        };
        let files = coffer_security::TlsFiles::in_dir(tls_dir, &format!("node{}", self.id));
        format!(
            "\n[tls]\nca = {}\ncert = {}\nkey = {}\n\n[access]\npolicy = {}\nfault_injection = true\n",
            quote(&files.ca),
            quote(&files.cert),
            quote(&files.key),
            quote(&tls_dir.join("access.toml"))
        )
    }

    /// The node's configuration file.
    fn config_text(&self, dir: &Path, nodes: &[DevNode]) -> String {
        let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let data_dir = dir.join(format!("node{}", self.id));
        let voters = nodes.iter().map(|node| node.id.to_string()).collect::<Vec<_>>().join(", ");
        let mut text = format!(
            "# Written by `coffer dev`; rewritten on each run.\n\
             node_id = {}\ndata_dir = {}\napi_listen = {}\nraft_listen = {}\nmetrics_listen = {}\nbootstrap = [{voters}]\n",
            self.id,
            quote(&data_dir.to_string_lossy()),
            quote(&self.api),
            quote(&self.raft),
            quote(&self.metrics),
        );
        for peer in nodes.iter().filter(|peer| peer.id != self.id) {
            text.push_str(&format!(
                "\n[[peers]]\nid = {}\napi = {}\nraft = {}\n",
                peer.id,
                quote(&peer.api),
                quote(&peer.raft)
            ));
        }
        if let Some((region, peer_region, peer_addresses, role, mode)) = &self.dr {
            let list = peer_addresses.iter().map(|address| quote(address)).collect::<Vec<_>>().join(", ");
            text.push_str(&format!(
                "
[dr]
region = {}
peer_region = {}
peer_addresses = [{list}]
role = {}
mode = {}
",
                quote(region),
                quote(peer_region),
                quote(role),
                quote(mode)
            ));
        }
        text
    }
}

/// Writes the dev cluster's certificates into `tls_dir`: its authority
/// (kept across runs, so client certificates stay valid), one certificate
/// per node and per dev principal (issued again each run), and the access
/// policy granting the principals their roles.
fn write_tls(tls_dir: &Path, nodes: &[&DevNode]) -> Result<(), DevError> {
    use coffer_security::issue::{loopback_hosts, Authority, AUTHORITY_VALID_DAYS, CERTIFICATE_VALID_DAYS};
    use coffer_security::Identity;
    std::fs::create_dir_all(tls_dir).map_err(|error| DevError::io(tls_dir, error))?;
    let issue = |error: coffer_security::issue::IssueError| DevError::Tls(error.to_string());
    let (ca_cert, ca_key) = (tls_dir.join("ca.crt"), tls_dir.join("ca.key"));
    let authority = if ca_cert.exists() && ca_key.exists() {
        Authority::load(&ca_cert, &ca_key).map_err(issue)?
    } else {
        let authority = Authority::create(DEV_CLUSTER, AUTHORITY_VALID_DAYS).map_err(issue)?;
        authority.to_issued().write(tls_dir, "ca").map_err(issue)?;
        authority
    };
    for node in nodes {
        let identity = Identity::node(DEV_CLUSTER, node.region(), u64::from(node.id));
        let issued = authority.issue(&identity, &loopback_hosts(), CERTIFICATE_VALID_DAYS).map_err(issue)?;
        issued.write(tls_dir, &format!("node{}", node.id)).map_err(issue)?;
    }
    let mut policy = String::from("# Written by `coffer dev`; rewritten on each run.\n");
    for (name, grants) in DEV_PRINCIPALS {
        let issued =
            authority.issue(&Identity::client(DEV_CLUSTER, name), &[], CERTIFICATE_VALID_DAYS).map_err(issue)?;
        issued.write(tls_dir, name).map_err(issue)?;
        policy.push_str(&format!("\n[principals.{name}]\n{grants}\n"));
    }
    let path = tls_dir.join("access.toml");
    std::fs::write(&path, policy).map_err(|error| DevError::io(&path, error))
}

/// A node's child process, and what supervising it needs.
struct Running {
    node: u16,
    log: PathBuf,
    child: Child,
    /// When this child was started.
    started: Instant,
    /// Exits within [`START_GRACE_MS`] of starting, in a row.
    quick_exits: u32,
    /// Set while the node is down: when it is started again.
    restart_at: Option<Instant>,
}

/// Runs the dev cluster until a signal or a failure.
pub async fn run(args: &DevArgs, insecure: bool, log_level: Option<&str>) -> Result<(), DevError> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DevError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DevError::Signals)?;
    std::fs::create_dir_all(&args.data_dir).map_err(|error| DevError::io(&args.data_dir, error))?;
    let dir = std::path::absolute(&args.data_dir).map_err(|error| DevError::io(&args.data_dir, error))?;
    let (nodes, standby) = if args.dr {
        DevNode::regions(&dir, args.base_port, &args.dr_mode)
    } else {
        ((1..=DEV_NODES).map(|id| DevNode::new(&dir, args.base_port, id)).collect(), Vec::new())
    };
    let extra = match &args.node_toml {
        Some(path) => std::fs::read_to_string(path).map_err(|error| DevError::io(path, error))?,
        None => String::new(),
    };
    let tls_dir = (!insecure).then(|| dir.join("tls"));
    if let Some(tls_dir) = &tls_dir {
        write_tls(tls_dir, &nodes.iter().chain(&standby).collect::<Vec<_>>())?;
    }
    for region in [&nodes, &standby] {
        for node in region {
            // Sections only (a top-level key would land in the last table).
            let security = node.security_text(tls_dir.as_deref());
            let text = format!("{}{security}\n{extra}", node.config_text(&dir, region));
            std::fs::write(&node.config, text).map_err(|error| DevError::io(&node.config, error))?;
        }
    }
    let exe = std::env::current_exe().map_err(|error| DevError::io(Path::new("current executable"), error))?;
    let count = nodes.len() + standby.len();
    println!("Starting {count} Coffer nodes (data, configs and logs in {})", args.data_dir.display());
    let mut running = Vec::new();
    for node in nodes.iter().chain(&standby) {
        match spawn(&exe, node, log_level) {
            Ok(child) => running.push(child),
            Err(error) => {
                if let Err(failure) = stop_all(&mut running) {
                    eprintln!("coffer dev: {failure}");
                }
                return Err(error);
            }
        }
    }
    let specs: Vec<&DevNode> = nodes.iter().chain(&standby).collect();
    let restart = Restart { exe: &exe, specs: &specs, log_level };
    let outcome = tokio::select! {
        _ = interrupt.recv() => Ok(()),
        _ = terminate.recv() => Ok(()),
        started = start(args, tls_dir.as_deref(), &restart, &nodes, &standby, &mut running) => match started {
            Ok(()) => supervise(&mut running, &restart, &mut interrupt, &mut terminate).await,
            Err(error) => Err(error),
        },
    };
    println!("Stopping the cluster...");
    let stopped = stop_all(&mut running);
    outcome?;
    stopped.map_err(DevError::Stop)?;
    println!("Stopped: all {count} nodes shut down cleanly.");
    Ok(())
}

/// Starts node `node` as a child process, its output appended to its log.
fn spawn(exe: &Path, node: &DevNode, log_level: Option<&str>) -> Result<Running, DevError> {
    let log =
        File::options().create(true).append(true).open(&node.log).map_err(|error| DevError::io(&node.log, error))?;
    let log_err = log.try_clone().map_err(|error| DevError::io(&node.log, error))?;
    let mut command = Command::new(exe);
    command.arg("node").arg("--config").arg(&node.config);
    if let Some(level) = log_level {
        command.arg("--log-level").arg(level);
    }
    // A process group of its own: a terminal's Ctrl-C reaches only this
    // process, which stops the nodes in order.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|source| DevError::Spawn { node: node.id, source })?;
    Ok(Running {
        node: node.id,
        log: node.log.clone(),
        child,
        started: Instant::now(),
        quick_exits: 0,
        restart_at: None,
    })
}

/// Waits for a leader, creates the sample treasury, prints the endpoints.
async fn start(
    args: &DevArgs,
    tls_dir: Option<&Path>,
    restart: &Restart<'_>,
    nodes: &[DevNode],
    standby: &[DevNode],
    running: &mut [Running],
) -> Result<(), DevError> {
    let addresses: Vec<String> = nodes.iter().map(|node| node.api.clone()).collect();
    let security = match tls_dir {
        Some(tls_dir) => {
            let files = coffer_security::TlsFiles::in_dir(tls_dir, crate::cli::PRINCIPAL_DEFAULT);
            Security::Tls(coffer_security::TlsContext::load(files).map_err(|error| DevError::Tls(error.to_string()))?)
        }
        None => Security::Insecure,
    };
    let mut config = ClientConfig::new(addresses.clone());
    config.deadline_ms = CALL_DEADLINE_MS;
    config.security = security.clone();
    let client = Client::new(config).map_err(|error| DevError::Sample(error.to_string()))?;
    let (leader, term) = wait_for_leader(&client, running, restart, &args.data_dir).await?;
    if !standby.is_empty() {
        println!(
            "
Region {PRIMARY_REGION} (primary, {} mode):",
            args.dr_mode
        );
    }
    print_endpoints(nodes, leader, term, &args.data_dir);
    if !standby.is_empty() {
        let standby_addresses: Vec<String> = standby.iter().map(|node| node.api.clone()).collect();
        let config = ClientConfig {
            deadline_ms: CALL_DEADLINE_MS,
            security: security.clone(),
            ..ClientConfig::new(standby_addresses)
        };
        let standby_client = Client::new(config).map_err(|error| DevError::Sample(error.to_string()))?;
        let (leader, term) = wait_for_leader(&standby_client, running, restart, &args.data_dir).await?;
        println!(
            "
Region {STANDBY_REGION} (disaster-recovery standby, ships from {PRIMARY_REGION}):"
        );
        print_endpoints(standby, leader, term, &args.data_dir);
    }
    let at = client_flags(args, tls_dir, &addresses);
    print_security(tls_dir);
    if args.no_sample {
        println!("\nNo sample treasury (--no-sample).");
    } else {
        let results = create_sample(&client).await.map_err(|error| DevError::Sample(error.to_string()))?;
        print_sample(&results);
        // The client's default addresses are the default ports' nodes.
        print_commands(restart.exe, &at);
    }
    if !standby.is_empty() {
        let coffer = restart.exe.display();
        println!("\nDisaster recovery: the write lease and shipping start within a second or two.");
        println!("  {coffer} dr status{at}");
        println!("  {coffer} dr drill --scenario switchover --load 200{at}");
        println!("  {coffer} dr drill --scenario failover --failback --load 200{at}");
    }
    println!("\nCtrl-C stops the cluster.");
    Ok(())
}

/// The flags a client command needs to reach this cluster when it is not
/// the default one: its addresses, where its certificates are (or that it
/// is plaintext).
fn client_flags(args: &DevArgs, tls_dir: Option<&Path>, addresses: &[String]) -> String {
    let mut flags = String::new();
    if args.base_port != BASE_PORT_DEFAULT {
        flags.push_str(&format!(" --addresses {}", addresses.join(",")));
    }
    match tls_dir {
        None => flags.push_str(" --insecure"),
        Some(dir) if args.data_dir != Path::new("data/dev") => {
            flags.push_str(&format!(" --tls-dir {}", dir.display()));
        }
        Some(_) => {}
    }
    flags
}

/// Says how the cluster is secured and where the client certificates are.
fn print_security(tls_dir: Option<&Path>) {
    let Some(dir) = tls_dir else {
        println!("\nPLAINTEXT (--insecure): no TLS, and every client may do everything.");
        return;
    };
    let names = DEV_PRINCIPALS.map(|(name, _)| name).join(", ");
    println!("\nTLS on every connection. Certificates in {}: ca.crt, and a client certificate per", dir.display());
    println!("role ({names}); the commands below present `admin`'s (--principal NAME for another).");
}

/// Polls the cluster's status until one node leads (and the children live).
async fn wait_for_leader(
    client: &Client,
    running: &mut [Running],
    restart: &Restart<'_>,
    dir: &Path,
) -> Result<(u64, u64), DevError> {
    let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MS);
    let mut last = String::from("none");
    while Instant::now() < deadline {
        watch_nodes(running, restart)?;
        match client.status().await {
            Ok(nodes) => {
                if let Some(leader) = nodes.iter().find(|node| node.role == Some(Role::Leader)) {
                    return Ok((leader.node_id, leader.term));
                }
                last =
                    format!("{} nodes answered, none leads", nodes.iter().filter(|node| node.error.is_none()).count());
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    Err(DevError::NoLeader { last, dir: dir.to_owned() })
}

/// The last non-empty line of `log` (for saying why a node died).
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| text.lines().rev().find(|line| !line.trim().is_empty()).map(str::to_owned))
        .unwrap_or_else(|| "(empty)".into())
}

/// What starting a node again needs.
struct Restart<'a> {
    exe: &'a Path,
    /// Every node, in the order of `running`.
    specs: &'a [&'a DevNode],
    log_level: Option<&'a str>,
}

/// Watches the children until a signal: a node that exits is reported and
/// started again after a backoff, while the others keep serving. Fails only
/// when a node cannot start at all ([`QUICK_EXITS_MAX`] quick exits in a row).
async fn supervise(
    running: &mut [Running],
    restart: &Restart<'_>,
    interrupt: &mut Signal,
    terminate: &mut Signal,
) -> Result<(), DevError> {
    let mut poll = tokio::time::interval(Duration::from_millis(POLL_MS));
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = poll.tick() => watch_nodes(running, restart)?,
        }
    }
}

/// One look at every node (see [`watch_node`]).
fn watch_nodes(running: &mut [Running], restart: &Restart<'_>) -> Result<(), DevError> {
    running.iter_mut().zip(restart.specs).try_for_each(|(run, spec)| watch_node(run, spec, restart))
}

/// One look at one node: notes an exit and schedules the restart, or starts
/// the node again when its restart is due.
fn watch_node(run: &mut Running, spec: &DevNode, restart: &Restart<'_>) -> Result<(), DevError> {
    if let Some(due) = run.restart_at {
        if Instant::now() >= due {
            let again = spawn(restart.exe, spec, restart.log_level)?;
            run.child = again.child;
            run.started = again.started;
            run.restart_at = None;
            println!("coffer dev: node {} started again", run.node);
        }
        return Ok(());
    }
    let Some(status) = run.child.try_wait().map_err(|error| DevError::io(&run.log, error))? else {
        return Ok(());
    };
    let quick = run.started.elapsed() < Duration::from_millis(START_GRACE_MS);
    run.quick_exits = if quick { run.quick_exits + 1 } else { 0 };
    if run.quick_exits >= QUICK_EXITS_MAX {
        return Err(DevError::NodeDied {
            node: run.node,
            status,
            log: run.log.clone(),
            last_line: last_line(&run.log),
        });
    }
    let backoff = RESTART_BACKOFF_MIN_MS.saturating_mul(1 << run.quick_exits.min(8)).min(RESTART_BACKOFF_MAX_MS);
    println!(
        "coffer dev: node {} exited ({status}); the others keep serving; restarting it in {backoff} ms (log: {})",
        run.node,
        run.log.display()
    );
    run.restart_at = Some(Instant::now() + Duration::from_millis(backoff));
    Ok(())
}

/// Sends SIGTERM to every child still running, waits for each (SIGKILL
/// after [`STOP_TIMEOUT_MS`]), and says which did not stop cleanly.
fn stop_all(running: &mut [Running]) -> Result<(), String> {
    for run in running.iter_mut() {
        if matches!(run.child.try_wait(), Ok(None)) {
            // `kill` the utility: sending a signal from Rust needs unsafe code.
            let sent = Command::new("kill").args(["-s", "TERM", &run.child.id().to_string()]).status();
            if !sent.is_ok_and(|status| status.success()) {
                eprintln!("node {}: SIGTERM could not be sent; killing it", run.node);
                let _ = run.child.kill();
            }
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
    let mut failures = Vec::new();
    for run in running.iter_mut() {
        if run.restart_at.is_some() {
            // Down and waiting to be started again: nothing to stop.
            println!("  node {} was down", run.node);
            continue;
        }
        let status = loop {
            match run.child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = run.child.kill();
                    break Err(format!("node {} did not stop within {STOP_TIMEOUT_MS} ms and was killed", run.node));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(POLL_MS / 4)),
                Err(error) => break Err(format!("node {}: {error}", run.node)),
            }
        };
        match status {
            Ok(status) if status.success() => println!("  node {} stopped", run.node),
            Ok(status) => failures.push(format!("node {} exited with {status} (see {})", run.node, run.log.display())),
            Err(failure) => failures.push(failure),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// One account of the sample treasury.
struct SampleAccount {
    account: Account,
    name: String,
}

/// The sample treasury's accounts: per fund, a cash account that must not
/// go below zero (cash is debited by receipts, credited by payments) with
/// balance history, a revenue account and two expense accounts.
fn sample_accounts() -> Vec<SampleAccount> {
    let mut accounts = Vec::new();
    for (fund, fund_name) in FUNDS {
        let base = fund * 1_000;
        let cash_flags = AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS | AccountFlags::HISTORY;
        let rows = [
            (1, 101, AccountKind::Cash, cash_flags, "cash"),
            (401, 401, AccountKind::Other, AccountFlags::NONE, "revenue"),
            (501, 501, AccountKind::Other, AccountFlags::NONE, "personnel expense"),
            (502, 502, AccountKind::Other, AccountFlags::NONE, "operations expense"),
        ];
        for (offset, code, kind, flags, what) in rows {
            let account = Account {
                id: AccountId(base + offset),
                ledger: KRW,
                code,
                kind,
                flags,
                user_data_64: fund as u64,
                ..Default::default()
            };
            accounts.push(SampleAccount { account, name: format!("{fund_name} {what}") });
        }
    }
    accounts
}

/// The sample treasury's ledger: 1, Korean won.
fn sample_ledger() -> Ledger {
    Ledger { id: KRW, currency: "KRW".into(), scale: 0, name: "Korean won".into(), ..Default::default() }
}

/// What creating the sample answered: the ledger's result, then each account's.
struct SampleResults {
    ledger: String,
    accounts: Vec<(SampleAccount, String)>,
}

/// Creates the ledger and the accounts; `exists` (a re-run) is success.
async fn create_sample(client: &Client) -> Result<SampleResults, SampleError> {
    let ledger = client.create_ledgers(&[sample_ledger()]).await?.value;
    let ledger = match ledger.as_slice() {
        [result] if result.is_success() => result.to_string(),
        other => return Err(SampleError::Refused(format!("ledger 1: {other:?}"))),
    };
    let accounts = sample_accounts();
    let events: Vec<Account> = accounts.iter().map(|sample| sample.account).collect();
    let results = client.create_accounts(&events).await?.value;
    if let Some((sample, result)) = accounts.iter().zip(&results).find(|(_, result)| !result.is_success()) {
        return Err(SampleError::Refused(format!("account {}: {result}", sample.account.id.0)));
    }
    let accounts = accounts.into_iter().zip(results.iter().map(ToString::to_string)).collect();
    Ok(SampleResults { ledger, accounts })
}

/// Why the sample treasury was not created.
#[derive(Debug, thiserror::Error)]
enum SampleError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("refused: {0}")]
    Refused(String),
}

fn print_endpoints(nodes: &[DevNode], leader: u64, term: u64, dir: &Path) {
    println!("\n  {:<5} {:<16} {:<16} {:<32} log", "node", "api", "raft", "metrics");
    for node in nodes {
        let metrics = format!("http://{}/metrics", node.metrics);
        let log = node.log.strip_prefix(std::env::current_dir().unwrap_or_default()).unwrap_or(&node.log);
        println!("  {:<5} {:<16} {:<16} {:<32} {}", node.id, node.api, node.raft, metrics, log.display());
    }
    println!("\nLeader: node {leader} (term {term}). Data: {}", dir.display());
}

fn print_sample(results: &SampleResults) {
    println!("\nSample treasury: ledger 1 KRW (scale 0, \"Korean won\"): {}", results.ledger);
    println!("  {:<8} {:<37} {:<6} {:<5} {:<42} result", "account", "name", "kind", "code", "flags");
    for (sample, result) in &results.accounts {
        let account = &sample.account;
        let flags = account.flags.to_string();
        let (id, name, kind, code) = (account.id.0, &sample.name, account.kind.as_str(), account.code);
        println!("  {id:<8} {name:<37} {kind:<6} {code:<5} {flags:<42} {result}");
    }
}

/// Prints ready-to-paste client commands: a receipt into the General
/// fund's cash, a payment from it, its balance and the trial balance.
fn print_commands(exe: &Path, at: &str) {
    let coffer = exe.display();
    println!("\nTry it: a receipt of 1,500,000 won into the General fund's cash, then a payment from it:");
    println!("  {coffer} transfer create --id 10001 --debit 1001 --credit 1401 --amount 1500000 --ledger 1 --code 1 --kind receipt{at}");
    println!("  {coffer} transfer create --id 10002 --debit 1501 --credit 1001 --amount 250000 --ledger 1 --code 1 --kind expenditure{at}");
    println!("  {coffer} balance 1001{at}");
    println!("  {coffer} trial-balance --ledger 1{at}");
    println!("  {coffer} status{at}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeFileConfig;

    #[test]
    fn every_dev_config_resolves_to_a_founding_node_on_its_ports() {
        let dir = Path::new("/tmp/coffer-dev");
        let nodes: Vec<DevNode> = (1..=DEV_NODES).map(|id| DevNode::new(dir, 7100, id)).collect();
        for node in &nodes {
            let text = node.config_text(dir, &nodes) + &node.security_text(Some(&dir.join("tls")));
            let resolved = NodeFileConfig::parse(&node.config, &text).unwrap().resolve().unwrap();
            let files = resolved.tls.as_ref().unwrap();
            assert_eq!(files.cert, dir.join("tls").join(format!("node{}.crt", node.id)));
            assert!(resolved.access.fault_injection, "the drills isolate regions");
            assert_eq!(resolved.node.consensus.node_id, u64::from(node.id));
            assert_eq!(resolved.node.bootstrap_voters, Some(vec![1, 2, 3]));
            assert_eq!(resolved.api_listen.port(), 7100 + node.id);
            assert_eq!(resolved.node.listen_addr.map(|addr| addr.port()), Some(7200 + node.id));
            assert_eq!(resolved.metrics_listen.map(|addr| addr.port()), Some(7300 + node.id));
            assert_eq!(resolved.server.addresses.len(), 3);
            assert_eq!(resolved.node.data_dir, dir.join(format!("node{}", node.id)));
        }
    }

    #[test]
    fn with_dr_both_regions_resolve_each_naming_the_other_and_extra_sections_apply() {
        let dir = Path::new("/tmp/coffer-dev");
        let (primary, standby) = DevNode::regions(dir, 7100, "sync");
        let extra = "[storage]\nblock_cache_bytes = 33554432\n";
        for (region, role, peers) in [(&primary, false, &standby), (&standby, true, &primary)] {
            for node in region.iter() {
                let text = format!("{}{}\n{extra}", node.config_text(dir, region), node.security_text(None));
                let resolved = NodeFileConfig::parse(&node.config, &text).unwrap().resolve().unwrap();
                assert_eq!(resolved.node.consensus.standby, role);
                assert_eq!(resolved.node.storage.block_cache_bytes, 32 << 20);
                let dr = resolved.dr.unwrap();
                assert_eq!(dr.mode, coffer_dr::Mode::Sync);
                let apis: Vec<String> = peers.iter().map(|peer| peer.api.clone()).collect();
                assert_eq!(dr.peer_addresses, apis);
                let voters: Vec<u64> = region.iter().map(|node| u64::from(node.id)).collect();
                assert_eq!(resolved.node.bootstrap_voters, Some(voters));
            }
        }
        assert_eq!(standby[0].api, "127.0.0.1:7111");
    }

    #[test]
    fn the_sample_accounts_are_valid_and_their_ids_unique() {
        let accounts = sample_accounts();
        let ids: std::collections::BTreeSet<_> = accounts.iter().map(|sample| sample.account.id).collect();
        assert_eq!(ids.len(), accounts.len());
        let mut ledger = coffer_ledger::StateMachine::new(coffer_ledger::MemoryStore::new());
        ledger.create_ledgers(1, &[sample_ledger()]).unwrap();
        let events: Vec<Account> = accounts.iter().map(|sample| sample.account).collect();
        let results = ledger.create_accounts(10, &events).unwrap();
        assert!(results.iter().all(|result| result.to_string() == "created"), "{results:?}");
        let again = ledger.create_accounts(100, &events).unwrap();
        assert!(again.iter().all(|result| result.to_string() == "exists"), "{again:?}");

        // The printed commands: a receipt into cash, a payment from it; a
        // payment from a fund with no cash is refused.
        let transfer = |id, debit, credit, amount, kind| coffer_ledger::Transfer {
            id: coffer_ledger::TransferId(id),
            debit_account_id: AccountId(debit),
            credit_account_id: AccountId(credit),
            amount,
            ledger: KRW,
            code: 1,
            kind,
            ..Default::default()
        };
        use coffer_ledger::TransferKind::{Expenditure, Receipt};
        let results = ledger
            .create_transfers(
                200,
                &[
                    transfer(10001, 1001, 1401, 1_500_000, Receipt),
                    transfer(10002, 1501, 1001, 250_000, Expenditure),
                    transfer(10003, 2501, 2001, 1, Expenditure),
                ],
            )
            .unwrap();
        let names: Vec<String> = results.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["created", "created", "exceeds_debits"]);
    }
}
