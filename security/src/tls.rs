//! TLS on Coffer's connections: rustls (TLS 1.3, ring), mutual
//! authentication against the cluster's certificate authority, reloaded
//! from its files without a restart.
//!
//! [`TlsContext`] holds the current server and client configurations built
//! from three PEM files (CA bundle, certificate chain, private key).
//! [`TlsContext::reload_if_changed`] rebuilds them when a file changed (a
//! watcher task polls every [`RELOAD_POLL_MS`]; `coffer node` also reloads
//! on SIGHUP). A reload that fails keeps the configuration in use, so a
//! half-rotated set of files never takes a node off the network; new
//! connections use the new certificate, open ones keep theirs.
//!
//! [`Security`] is what listeners and dialers are given: TLS, or plaintext
//! when a configuration says `insecure = true`. Its [`Security::incoming`]
//! performs handshakes off the accept loop (bounded, with a timeout),
//! refuses peers that name another cluster (or, on a Raft listener, that
//! are not nodes of this region) and yields [`Conn`]s whose
//! [`PeerInfo`] tonic puts in every request's extensions.
//! [`Security::connect`] dials a tonic channel through rustls and can
//! insist that the server is a given node.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{Identity, IdentityError};

/// How often the certificate files are checked for a change.
pub const RELOAD_POLL_MS: u64 = 2_000;
/// How long a peer may take to complete a handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Handshakes in progress at once on one listener; more connections wait
/// in the kernel's backlog.
pub const HANDSHAKES_MAX: usize = 256;
/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;
/// The wait after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_RETRY_MS: u64 = 100;
/// The protocol negotiated: gRPC runs over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The three PEM files of a node's or a client's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate authorities trusted (one or more certificates: during
    /// a rotation of the authority, the old and the new).
    pub ca: PathBuf,
    /// This party's certificate, then any intermediates.
    pub cert: PathBuf,
    /// This party's private key (PKCS #8, PKCS #1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate names no Coffer identity.
    #[error("{path}: {source}")]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        source: IdentityError,
    },
    /// rustls refused the certificates or the key.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being built.
        what: &'static str,
        /// rustls's error.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("the client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// When each file was last changed, and its length.
type Stamp = [Option<(SystemTime, u64)>; 3];

fn stamp(files: &TlsFiles) -> Stamp {
    let of = |path: &Path| std::fs::metadata(path).ok().and_then(|meta| Some((meta.modified().ok()?, meta.len())));
    [of(&files.ca), of(&files.cert), of(&files.key)]
}

/// The configurations built from one reading of the files.
struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    identity: Identity,
    stamp: Stamp,
}

/// A party's TLS: its identity and its current configurations, reloaded
/// when the files change.
pub struct TlsContext {
    files: TlsFiles,
    loaded: RwLock<Loaded>,
    /// The files' stamp when a reload last failed, so that a bad set of
    /// files is reported once, not at every poll.
    failed: RwLock<Option<Stamp>>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext").field("files", &self.files).field("identity", &self.identity()).finish()
    }
}

/// The ring provider: rustls deprecates it for lacking post-quantum key
/// exchange, which only its aws-lc-rs provider offers, at the price of a
/// second large C build on every fresh machine. Classical X25519 is kept
/// until that trade is revisited (ARCHITECTURE.md, security).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: reason.to_string() }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let stamp = stamp(files);
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for certificate in certificates(&files.ca)? {
        roots.add(certificate).map_err(|error| file_error(&files.ca, error))?;
    }
    let roots = Arc::new(roots);
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| file_error(&files.key, error))?;
    let identity = Identity::from_certificate(&chain[0])
        .map_err(|source| TlsError::Identity { path: files.cert.clone(), source })?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|source| TlsError::Rustls { what: "the certificate and its key", source })?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls { what: "the server configuration", source })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|source| TlsError::Rustls { what: "the server certificate", source })?;
    server.alpn_protocols = vec![ALPN_H2.to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls { what: "the client configuration", source })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsError::Rustls { what: "the client certificate", source })?;
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Loaded { server: Arc::new(server), client: Arc::new(client), identity, stamp })
}

impl TlsContext {
    /// Reads `files` and builds the configurations.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let loaded = load(&files)?;
        Ok(Arc::new(Self { files, loaded: RwLock::new(loaded), failed: RwLock::new(None) }))
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What this party's current certificate names.
    pub fn identity(&self) -> Identity {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner).identity.clone()
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner).server.clone()
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        self.loaded.read().unwrap_or_else(PoisonError::into_inner).client.clone()
    }

    /// Reads the files again and uses them from the next connection on. A
    /// certificate that names another identity than the one in use is
    /// refused: a node does not change who it is by a rotation.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.files)?;
        let mut current = self.loaded.write().unwrap_or_else(PoisonError::into_inner);
        if loaded.identity != current.identity {
            return Err(TlsError::Identity {
                path: self.files.cert.clone(),
                source: IdentityError::Invalid {
                    text: loaded.identity.uri(),
                    reason: format!("the party in use is {}; a rotated certificate must name it", current.identity),
                },
            });
        }
        *current = loaded;
        Ok(())
    }

    /// Reloads if a file changed since the last load: `Ok(true)` when it
    /// did. A failure is returned once per state of the files.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        if self.loaded.read().unwrap_or_else(PoisonError::into_inner).stamp == now {
            return Ok(false);
        }
        if *self.failed.read().unwrap_or_else(PoisonError::into_inner) == Some(now) {
            return Ok(false);
        }
        match self.reload() {
            Ok(()) => {
                *self.failed.write().unwrap_or_else(PoisonError::into_inner) = None;
                Ok(true)
            }
            Err(error) => {
                *self.failed.write().unwrap_or_else(PoisonError::into_inner) = Some(now);
                Err(error)
            }
        }
    }

    /// Spawns the task that reloads the files when they change, logging
    /// each reload and each refused set of files; it ends with the runtime.
    pub fn spawn_watch(self: &Arc<Self>, who: String) -> tokio::task::JoinHandle<()> {
        let context = Arc::clone(self);
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(Duration::from_millis(RELOAD_POLL_MS));
            loop {
                poll.tick().await;
                match context.reload_if_changed() {
                    Ok(true) => tracing::info!(%who, identity = %context.identity(), "TLS files changed: reloaded"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%who, %error, "TLS files changed but were refused; the ones in use stay")
                    }
                }
            }
        })
    }
}

/// Who a connection's peer is, as tonic hands it to every request
/// (`request.extensions().get::<PeerInfo>()`).
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// What its certificate names; `None` on a plaintext connection.
    pub identity: Option<Arc<Identity>>,
}

/// Which peers a listener accepts at the handshake (finer checks, such as
/// roles, come later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The client API: clients and nodes of this cluster.
    Api,
    /// The Raft transport: nodes of this cluster and region only.
    Raft,
}

/// Checks a peer's identity against this party's for `listener`.
pub fn admit(own: &Identity, peer: &Identity, listener: Listener) -> Result<(), String> {
    if let (Some(ours), Some(theirs)) = (own.cluster(), peer.cluster()) {
        if ours != theirs {
            return Err(format!("{peer} names cluster {theirs:?}; this is cluster {ours:?}"));
        }
    }
    if listener == Listener::Raft {
        match (own, peer) {
            (Identity::Node { region: ours, .. }, Identity::Node { region: theirs, .. }) if ours != theirs => {
                return Err(format!("{peer} is a node of region {theirs:?}; this transport is region {ours:?}'s"));
            }
            (_, Identity::Client { .. }) => return Err(format!("{peer} is not a node")),
            _ => {}
        }
    }
    Ok(())
}

/// An accepted connection: TLS, or plaintext on an insecure listener.
#[derive(Debug)]
pub enum Conn {
    /// A TLS connection and its authenticated peer.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
    /// A plaintext connection.
    Plain(TcpStream, PeerInfo),
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Self::Tls(_, peer) | Self::Plain(_, peer) => peer.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            Self::Plain(stream, _) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            Self::Plain(stream, _) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
            Self::Plain(stream, _) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tls(stream, _) => stream.is_write_vectored(),
            Self::Plain(stream, _) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
            Self::Plain(stream, _) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            Self::Plain(stream, _) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// What a dialer insists on about the server it reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Any server the authority vouches for at that host.
    Any,
    /// A node of this party's cluster; with an id, that node.
    Node(Option<u64>),
}

/// How a party's connections are secured.
#[derive(Clone, Debug)]
pub enum Security {
    /// TLS with these files.
    Tls(Arc<TlsContext>),
    /// Plaintext, trusting every peer: only where a configuration says
    /// `insecure = true`.
    Insecure,
}

impl Security {
    /// Whether connections are plaintext.
    pub fn is_insecure(&self) -> bool {
        matches!(self, Self::Insecure)
    }

    /// This party's identity, under TLS.
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Self::Tls(context) => Some(context.identity()),
            Self::Insecure => None,
        }
    }

    /// The connections accepted on `listener`, handshaken and admitted for
    /// `kind`, as a stream for `serve_with_incoming`. `who` names the
    /// listener in logs. The accept loop ends when the stream is dropped.
    pub fn incoming(&self, listener: TcpListener, kind: Listener, who: String) -> ReceiverStream<io::Result<Conn>> {
        let (accepted, stream) = mpsc::channel(ACCEPTED_QUEUE_MAX);
        tokio::spawn(accept_loop(self.clone(), listener, kind, who, accepted));
        ReceiverStream::new(stream)
    }

    /// A channel to `endpoint` (an `http://host:port` URI) through this
    /// party's security; under TLS the server must be what `expect` says.
    pub async fn connect(&self, endpoint: Endpoint, expect: Expect) -> Result<Channel, tonic::transport::Error> {
        match self {
            Self::Tls(context) => endpoint.connect_with_connector(Dialer { context: context.clone(), expect }).await,
            Self::Insecure => endpoint.connect().await,
        }
    }

    /// Like [`Security::connect`], connecting at the first call.
    pub fn connect_lazy(&self, endpoint: Endpoint, expect: Expect) -> Channel {
        match self {
            Self::Tls(context) => endpoint.connect_with_connector_lazy(Dialer { context: context.clone(), expect }),
            Self::Insecure => endpoint.connect_lazy(),
        }
    }
}

async fn accept_loop(
    security: Security,
    listener: TcpListener,
    kind: Listener,
    who: String,
    accepted: mpsc::Sender<io::Result<Conn>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let permit = tokio::select! {
            () = accepted.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, remote) = tokio::select! {
            () = accepted.closed() => return,
            result = listener.accept() => match result {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%who, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let context = match &security {
            Security::Insecure => {
                let peer = PeerInfo { remote: Some(remote), identity: None };
                if accepted.send(Ok(Conn::Plain(stream, peer))).await.is_err() {
                    return;
                }
                continue;
            }
            Security::Tls(context) => context.clone(),
        };
        let (accepted, who) = (accepted.clone(), who.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(&context, stream, remote, kind).await {
                Ok(conn) => {
                    let _ = accepted.send(Ok(conn)).await;
                }
                Err(reason) => tracing::warn!(%who, %remote, reason, "connection refused"),
            }
        });
    }
}

async fn handshake(
    context: &TlsContext,
    stream: TcpStream,
    remote: SocketAddr,
    kind: Listener,
) -> Result<Conn, String> {
    let acceptor = TlsAcceptor::from(context.server_config());
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    let stream = tokio::time::timeout(timeout, acceptor.accept(stream))
        .await
        .map_err(|_| format!("no TLS handshake within {HANDSHAKE_TIMEOUT_MS} ms"))?
        .map_err(|error| format!("TLS handshake: {error}"))?;
    let identity = {
        let (_, session) = stream.get_ref();
        let certificate = session
            .peer_certificates()
            .and_then(<[_]>::first)
            .ok_or_else(|| "the peer presented no certificate".to_owned())?;
        Identity::from_certificate(certificate).map_err(|error| error.to_string())?
    };
    admit(&context.identity(), &identity, kind)?;
    let peer = PeerInfo { remote: Some(remote), identity: Some(Arc::new(identity)) };
    Ok(Conn::Tls(Box::new(stream), peer))
}

/// The connector tonic dials through under TLS.
#[derive(Clone)]
struct Dialer {
    context: Arc<TlsContext>,
    expect: Expect,
}

type DialFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, io::Error>> + Send>>;

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = DialFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> DialFuture {
        let (context, expect) = (self.context.clone(), self.expect);
        Box::pin(async move {
            let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
            let host = uri.host().ok_or_else(|| invalid(format!("{uri} names no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid(format!("{uri} names no port")))?;
            let name = ServerName::try_from(host.clone()).map_err(|error| invalid(format!("{host}: {error}")))?;
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            let stream = TlsConnector::from(context.client_config()).connect(name, stream).await?;
            check_server(&context.identity(), stream.get_ref().1.peer_certificates(), expect).map_err(|reason| {
                io::Error::new(io::ErrorKind::PermissionDenied, format!("{host}:{port}: {reason}"))
            })?;
            Ok(TokioIo::new(stream))
        })
    }
}

fn check_server(own: &Identity, certificates: Option<&[CertificateDer<'_>]>, expect: Expect) -> Result<(), String> {
    let Expect::Node(wanted) = expect else {
        return Ok(());
    };
    let certificate = certificates.and_then(<[_]>::first).ok_or("the server presented no certificate")?;
    let server = Identity::from_certificate(certificate).map_err(|error| error.to_string())?;
    let Identity::Node { id, .. } = &server else {
        return Err(format!("the server is {server}, not a node"));
    };
    if own.cluster() != server.cluster() {
        return Err(format!("the server is {server}, of another cluster than {own}"));
    }
    match wanted {
        Some(wanted) if wanted != *id => Err(format!("the server is {server}, not node {wanted}")),
        _ => Ok(()),
    }
}

impl PartialEq for Security {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Tls(ours), Self::Tls(theirs)) => Arc::ptr_eq(ours, theirs) || ours.files == theirs.files,
            (Self::Insecure, Self::Insecure) => true,
            _ => false,
        }
    }
}

impl Eq for Security {}

/// A lazily connecting endpoint for `address` (`host:port`), or why it is
/// not one. Dial it with [`Security::connect`] or
/// [`Security::connect_lazy`].
pub fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, String> {
    let port = address.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
    if port.and_then(|port| port.parse::<u16>().ok()).is_none() {
        return Err(format!("{address:?} is not host:port"));
    }
    Endpoint::from_shared(format!("http://{address}"))
        .map(|endpoint| endpoint.connect_timeout(connect_timeout).tcp_nodelay(true))
        .map_err(|error| format!("{address:?}: {error}"))
}

impl TlsFiles {
    /// The files of principal (or node) `name` in a directory laid out as
    /// `coffer dev` and `coffer certs` write it: `ca.crt`, `NAME.crt`,
    /// `NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self { ca: dir.join("ca.crt"), cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) }
    }
}
