//! `coffer node`: one node of a cluster — the consensus node, its gRPC API
//! and its Prometheus exporter — until SIGINT or SIGTERM, then a graceful
//! stop (API server first, then the node, whose store is closed).

use std::time::Duration;

use coffer_api::server::{ApiServer, ServerError};
use coffer_consensus::{start_node, ConsensusError, NodeHandle, StartError};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use coffer_api::access::Access;
use coffer_security::{Identity, Security, TlsContext};

use crate::config::ResolvedConfig;

/// How often the node's liveness is checked while it serves.
const NODE_POLL_MS: u64 = 500;
/// How long in-flight API requests (and open streams) may run on after a
/// stop is asked for before they are cut.
const API_DRAIN_TIMEOUT_MS: u64 = 5_000;

/// Why `coffer node` stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API address could not be bound.
    #[error("api_listen {address}: {source}")]
    BindApi {
        /// The address.
        address: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics exporter could not start.
    #[error(transparent)]
    Metrics(#[from] coffer_api::metrics::MetricsError),
    /// The node did not start.
    #[error("node {node}: {source}")]
    Start {
        /// The node.
        node: u64,
        /// Why.
        source: StartError,
    },
    /// The API server could not start or failed.
    #[error("node {node}: API server: {reason}")]
    Api {
        /// The node.
        node: u64,
        /// Why.
        reason: String,
    },
    /// The node stopped by itself (a fatal error).
    #[error("node {node} stopped: {reason}")]
    Stopped {
        /// The node.
        node: u64,
        /// Why.
        reason: String,
    },
    /// The driver thread ended with a fatal error, or panicked.
    #[error("node {node}: {reason}")]
    Driver {
        /// The node.
        node: u64,
        /// Why.
        reason: String,
    },
    /// The process could not restart itself (to install a re-seed).
    #[error("restarting: {0}")]
    Restart(std::io::Error),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// TLS could not be set up, or the certificate names another node.
    #[error("node {node}: TLS: {reason}")]
    Tls {
        /// The node.
        node: u64,
        /// Why.
        reason: String,
    },
    /// The access policy could not be read.
    #[error("node {node}: access policy: {reason}")]
    Access {
        /// The node.
        node: u64,
        /// Why.
        reason: String,
    },
}

/// The node's TLS from its files, its certificate checked to name this
/// node of this region; or plaintext, said loudly.
fn security(config: &ResolvedConfig) -> Result<Security, NodeError> {
    let node_id = config.node.consensus.node_id;
    let Some(files) = &config.tls else {
        tracing::warn!(
            node = node_id,
            "PLAINTEXT: insecure = true. Every connection is unencrypted and every client may do everything; \
             never run a treasury's cluster this way"
        );
        return Ok(Security::Insecure);
    };
    let tls = |reason: String| NodeError::Tls { node: node_id, reason };
    let context = TlsContext::load(files.clone()).map_err(|error| tls(error.to_string()))?;
    let region = config.dr.as_ref().map_or(coffer_security::DEFAULT_REGION, |dr| dr.region.as_str());
    match context.identity() {
        Identity::Node { id, region: named, .. } if id == node_id && named == region => {}
        other => {
            return Err(tls(format!(
                "{} names {other}; this is node {node_id} of region {region:?}",
                files.cert.display()
            )))
        }
    }
    context.spawn_watch(format!("node {node_id}"));
    tracing::info!(node = node_id, identity = %context.identity(), "TLS on every connection");
    Ok(Security::Tls(context))
}

/// Reads the TLS files and the access policy again (SIGHUP).
fn reload(node_id: u64, security: &Security, access: &Access) {
    if let Security::Tls(context) = security {
        match context.reload() {
            Ok(()) => tracing::info!(node = node_id, identity = %context.identity(), "SIGHUP: TLS files reloaded"),
            Err(error) => tracing::error!(node = node_id, %error, "SIGHUP: TLS files refused; the ones in use stay"),
        }
    }
    match access.reload(true) {
        Ok(_) => tracing::info!(node = node_id, "SIGHUP: access policy reloaded"),
        Err(error) => tracing::error!(node = node_id, error, "SIGHUP: access policy refused; the one in force stays"),
    }
}

/// What ended serving.
enum Ending {
    /// SIGINT or SIGTERM: stop gracefully.
    Signal(&'static str),
    /// The node stopped by itself.
    NodeStopped(String),
    /// The API server ended unexpectedly: why, if it failed.
    ApiEnded(Option<String>),
    /// A re-seed was prepared: stop and start again.
    Restart,
}

/// Runs the node until a signal or a failure.
pub async fn run(mut config: ResolvedConfig) -> Result<(), NodeError> {
    let node_id = config.node.consensus.node_id;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(NodeError::Signals)?;
    let security = security(&config)?;
    let access = Access::load(config.access.clone()).map_err(|reason| NodeError::Access { node: node_id, reason })?;
    access.spawn_watch(node_id);
    config.node.security = security.clone();
    if let Some(dr) = &mut config.dr {
        dr.security = security.clone();
    }
    let api_listen = config.api_listen;
    let listener =
        TcpListener::bind(api_listen).await.map_err(|source| NodeError::BindApi { address: api_listen, source })?;
    // Before the node starts: its metric handles are taken at start.
    if let Some(address) = config.metrics_listen {
        coffer_api::metrics::install_exporter(address)?;
    }
    let raft_listen = config.node.listen_addr;
    let bootstrap = config.node.bootstrap_voters.clone();
    let data_dir = config.node.data_dir.clone();
    // A re-seed prepared before a restart is installed before the node opens.
    match coffer_dr::reseed::install_pending(&data_dir, &config.node.storage) {
        Ok(Some(index)) => tracing::warn!(node = node_id, index, "re-seed installed: the region restarts from it"),
        Ok(None) => {}
        Err(error) => {
            return Err(NodeError::Start { node: node_id, source: StartError::Storage(error) });
        }
    }
    let restart = std::sync::Arc::new(tokio::sync::Notify::new());
    let (node, driver) = start_node(config.node).await.map_err(|source| NodeError::Start { node: node_id, source })?;
    let addresses = config.server.addresses.clone();
    let server = match ApiServer::new(node.clone(), config.server) {
        Ok(server) => {
            let server = server.with_security(security.clone(), access.clone());
            let server = match coffer_api::audit_log::AuditLog::open(&data_dir) {
                Ok(log) => server.with_audit_log(log),
                Err(error) => {
                    stop_node(&node, driver).await?;
                    return Err(NodeError::Access { node: node_id, reason: format!("the audit log: {error}") });
                }
            };
            match config.dr {
                Some(dr) => {
                    tracing::info!(node = node_id, region = %dr.region, peer_region = %dr.peer_region, mode = dr.mode.name(), fencing = dr.fencing.name(), "disaster recovery on");
                    server.with_dr(coffer_dr::Dr::start(dr, node.clone(), addresses, data_dir.clone(), restart.clone()))
                }
                None => server,
            }
        }
        Err(source) => {
            stop_node(&node, driver).await?;
            return Err(NodeError::Api { node: node_id, reason: source.to_string() });
        }
    };
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let mut serving: JoinHandle<Result<(), ServerError>> = tokio::spawn(server.serve(listener, async move {
        let _ = api_stopped.await;
    }));
    tracing::info!(
        node = node_id,
        api = %api_listen,
        raft = ?raft_listen,
        metrics = ?config.metrics_listen,
        data_dir = %data_dir.display(),
        ?bootstrap,
        "serving"
    );
    let ending = loop {
        break tokio::select! {
            _ = hangup.recv() => {
                reload(node_id, &security, &access);
                continue;
            }
            _ = interrupt.recv() => Ending::Signal("SIGINT"),
            _ = terminate.recv() => Ending::Signal("SIGTERM"),
            reason = node_stopped(&node) => Ending::NodeStopped(reason),
            () = restart.notified() => Ending::Restart,
            ended = &mut serving => Ending::ApiEnded(match ended {
                Ok(served) => served.err().map(|error| error.to_string()),
                Err(error) => Some(format!("its task failed: {error}")),
            }),
        };
    };
    let restarting = matches!(ending, Ending::Restart);
    let failure = match ending {
        Ending::Signal(name) => {
            tracing::info!(node = node_id, signal = name, "shutting down");
            None
        }
        Ending::Restart => {
            tracing::warn!(node = node_id, "restarting to install a re-seed");
            None
        }
        Ending::NodeStopped(reason) => Some(NodeError::Stopped { node: node_id, reason }),
        Ending::ApiEnded(None) => Some(NodeError::Api { node: node_id, reason: "it ended by itself".into() }),
        Ending::ApiEnded(Some(reason)) => Some(NodeError::Api { node: node_id, reason }),
    };
    let _ = stop_api.send(());
    if !serving.is_finished() {
        let drained = tokio::time::timeout(Duration::from_millis(API_DRAIN_TIMEOUT_MS), &mut serving).await;
        if drained.is_err() {
            tracing::warn!(node = node_id, "API requests still running after {API_DRAIN_TIMEOUT_MS} ms: cut");
            serving.abort();
        }
    }
    stop_node(&node, driver).await?;
    if restarting && failure.is_none() {
        // The same process (pid, arguments, environment, log) runs again,
        // and installs the prepared re-seed before its node opens.
        let mut again = std::process::Command::new(std::env::current_exe().map_err(NodeError::Restart)?);
        again.args(std::env::args_os().skip(1));
        return Err(NodeError::Restart(std::os::unix::process::CommandExt::exec(&mut again)));
    }
    match failure {
        None => {
            tracing::info!(node = node_id, "stopped");
            Ok(())
        }
        Some(error) => Err(error),
    }
}

/// Waits until the node stops by itself; returns why.
async fn node_stopped(node: &NodeHandle) -> String {
    let mut poll = tokio::time::interval(Duration::from_millis(NODE_POLL_MS));
    loop {
        poll.tick().await;
        if node.is_stopped() {
            return node.stop_reason().unwrap_or_else(|| "its driver exited".into());
        }
    }
}

/// Stops the node and waits for its driver thread, which closes the store.
async fn stop_node(
    node: &NodeHandle,
    driver: std::thread::JoinHandle<Result<(), ConsensusError>>,
) -> Result<(), NodeError> {
    node.shutdown().await;
    let id = node.id();
    let joined = tokio::task::spawn_blocking(move || driver.join()).await;
    match joined {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(NodeError::Driver { node: id, reason: format!("fatal error: {error}") }),
        Ok(Err(_)) | Err(_) => Err(NodeError::Driver { node: id, reason: "the driver thread panicked".into() }),
    }
}
