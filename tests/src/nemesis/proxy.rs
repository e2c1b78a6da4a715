//! A fault-injecting TCP proxy per directed link between nodes.
//!
//! Node `i`'s address book names, for each peer `j`, the proxy of the
//! link `i → j` ([`ProxyNet::routes`]), which forwards to `j`'s real Raft
//! port. Coffer's transport sends node `i`'s Raft messages to `j` only on
//! connections `i` opens to `j` (`j` answers on its own connections to
//! `i`), so cutting the proxy `i → j` loses exactly the messages from `i` to
//! `j`: one-way (asymmetric) cuts are real, and a node is partitioned by
//! cutting every link into and out of it.
//!
//! A cut ([`ProxyNet::cut`]) drops every connection the link carries at
//! once, and until the link is healed either closes each new connection as
//! soon as it is accepted ([`Cut::Refuse`]) or accepts it and swallows
//! what it is sent without answering ([`Cut::Blackhole`]: the sender learns
//! only from its own HTTP/2 keepalive timeout). Healing closes blackholed
//! connections, so the sender reconnects.
//!
//! The proxies run on a runtime of their own, so that whatever blocks the
//! test's runtime (a `kill`, a `coffer verify`) never stalls the links.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Bytes read at once from a blackholed connection (and thrown away).
const BLACKHOLE_BUFFER_BYTES: usize = 16 * 1024;
/// Wait after a failed `accept` (out of file descriptors, ...) before the next.
const ACCEPT_RETRY_MS: u64 = 10;
/// How long the proxy waits to connect to the real port before it gives up
/// on a connection (the target is down or frozen).
const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Threads of the proxies' runtime.
const PROXY_THREADS: usize = 1;

/// How a cut link treats new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cut {
    /// Closed as soon as accepted: the sender sees the connection fail.
    Refuse,
    /// Accepted and never answered: the sender sees silence.
    Blackhole,
}

/// The state of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Open,
    Cut(Cut),
}

/// What the proxies did, for the run's summary.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Connections accepted and forwarded.
    pub forwarded: AtomicU64,
    /// Connections closed by a cut while they carried traffic.
    pub dropped: AtomicU64,
    /// New connections refused while a link was cut.
    pub refused: AtomicU64,
    /// New connections blackholed while a link was cut.
    pub blackholed: AtomicU64,
}

/// One directed link's proxy.
#[derive(Debug)]
struct LinkProxy {
    /// Where it listens (`127.0.0.1:port`).
    address: String,
    state: watch::Sender<LinkState>,
}

/// The proxies of every directed link of a cluster.
#[derive(Debug)]
pub struct ProxyNet {
    links: BTreeMap<(u64, u64), LinkProxy>,
    counters: Arc<ProxyCounters>,
    runtime: Option<Runtime>,
}

impl ProxyNet {
    /// Starts a proxy for every ordered pair of distinct nodes of
    /// `raft_addresses` (node id → its real Raft address), every link open.
    /// No proxy listens on an address of `reserved`: the addresses the
    /// nodes will bind, chosen free and released before the proxies start,
    /// which the kernel may hand out again (a node then cannot start).
    pub fn start(raft_addresses: &BTreeMap<u64, String>, reserved: &BTreeSet<String>) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PROXY_THREADS)
            .thread_name("nemesis-proxy")
            .enable_all()
            .build()?;
        let counters = Arc::new(ProxyCounters::default());
        let mut links = BTreeMap::new();
        // Listeners on reserved addresses, held until every proxy has its
        // own so that no bind gets one again.
        let mut held = Vec::new();
        for &from in raft_addresses.keys() {
            for (&to, target) in raft_addresses.iter().filter(|(to, _)| **to != from) {
                let (listener, address) = loop {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                    let address = listener.local_addr()?.to_string();
                    if !reserved.contains(&address) && !raft_addresses.values().any(|target| *target == address) {
                        break (listener, address);
                    }
                    held.push(listener);
                };
                listener.set_nonblocking(true)?;
                let listener = {
                    let _entered = runtime.enter();
                    TcpListener::from_std(listener)?
                };
                let (state, watcher) = watch::channel(LinkState::Open);
                runtime.spawn(serve(listener, target.clone(), watcher, counters.clone()));
                links.insert((from, to), LinkProxy { address, state });
            }
        }
        Ok(Self { links, counters, runtime: Some(runtime) })
    }

    /// The address node `from` must use to reach node `to`, by
    /// `(from, to)`: what [`crate::ClusterOptions::raft_routes`] takes.
    pub fn routes(&self) -> BTreeMap<(u64, u64), String> {
        self.links.iter().map(|(&link, proxy)| (link, proxy.address.clone())).collect()
    }

    fn set(&self, from: u64, to: u64, state: LinkState) {
        let proxy = self.links.get(&(from, to)).unwrap_or_else(|| panic!("no link {from} → {to}"));
        proxy.state.send_replace(state);
    }

    /// Cuts the link `from → to`: its connections are dropped now, new ones
    /// are treated as `how` says.
    pub fn cut(&self, from: u64, to: u64, how: Cut) {
        self.set(from, to, LinkState::Cut(how));
    }

    /// Heals the link `from → to`.
    pub fn heal(&self, from: u64, to: u64) {
        self.set(from, to, LinkState::Open);
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for proxy in self.links.values() {
            proxy.state.send_replace(LinkState::Open);
        }
    }

    /// The links that are cut now.
    pub fn cut_links(&self) -> Vec<(u64, u64)> {
        self.links.iter().filter(|(_, proxy)| *proxy.state.borrow() != LinkState::Open).map(|(&l, _)| l).collect()
    }

    /// What the proxies did so far.
    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a test's own runtime forbids.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Accepts connections to one link and treats each as its state says.
async fn serve(listener: TcpListener, target: String, state: watch::Receiver<LinkState>, counters: Arc<ProxyCounters>) {
    loop {
        let inbound = match listener.accept().await {
            Ok((inbound, _)) => inbound,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let current = *state.borrow();
        match current {
            LinkState::Open => {
                tokio::spawn(forward(inbound, target.clone(), state.clone(), counters.clone()));
            }
            LinkState::Cut(Cut::Refuse) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                drop(inbound);
            }
            LinkState::Cut(Cut::Blackhole) => {
                counters.blackholed.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(swallow(inbound, state.clone()));
            }
        }
    }
}

/// Carries one connection both ways until either side closes it or the
/// link is cut.
async fn forward(
    mut inbound: TcpStream,
    target: String,
    mut state: watch::Receiver<LinkState>,
    counters: Arc<ProxyCounters>,
) {
    let connect = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(&target));
    let Ok(Ok(mut outbound)) = connect.await else {
        return;
    };
    // Raft messages are small and latency-bound.
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    counters.forwarded.fetch_add(1, Ordering::Relaxed);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = state.wait_for(|state| *state != LinkState::Open) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads and throws away what a blackholed connection is sent, until the
/// link heals (then closes it, so the sender reconnects) or the sender
/// gives up.
async fn swallow(mut inbound: TcpStream, mut state: watch::Receiver<LinkState>) {
    let mut buffer = vec![0u8; BLACKHOLE_BUFFER_BYTES];
    let drain = async { while matches!(inbound.read(&mut buffer).await, Ok(read) if read > 0) {} };
    tokio::select! {
        () = drain => {}
        _ = state.wait_for(|state| *state == LinkState::Open) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    use super::*;

    /// An echo server on loopback; its address.
    fn echo_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 256];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    fn connect(address: &str) -> StdStream {
        let stream = StdStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        stream
    }

    /// Sends a byte and says whether it came back.
    fn echoes(stream: &mut StdStream) -> bool {
        stream.write_all(b"x").is_ok() && matches!(stream.read(&mut [0u8; 1]), Ok(1))
    }

    fn net() -> ProxyNet {
        let targets = BTreeMap::from([(1, echo_server()), (2, echo_server())]);
        ProxyNet::start(&targets, &BTreeSet::new()).unwrap()
    }

    #[test]
    fn an_open_link_forwards_both_ways_and_a_cut_drops_its_connections() {
        let net = net();
        let routes = net.routes();
        assert_eq!(routes.len(), 2, "one proxy per directed link");
        let mut stream = connect(&routes[&(1, 2)]);
        assert!(echoes(&mut stream));
        net.cut(1, 2, Cut::Refuse);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!echoes(&mut stream), "the cut dropped the connection");
        let mut refused = connect(&routes[&(1, 2)]);
        assert!(!echoes(&mut refused), "a new connection is refused");
        let mut other_way = connect(&routes[&(2, 1)]);
        assert!(echoes(&mut other_way), "the link 2 → 1 is not cut");
        net.heal(1, 2);
        let mut healed = connect(&routes[&(1, 2)]);
        assert!(echoes(&mut healed));
        assert_eq!(net.counters().dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_blackholed_link_swallows_until_healed() {
        let net = net();
        let route = net.routes()[&(2, 1)].clone();
        net.cut(2, 1, Cut::Blackhole);
        assert_eq!(net.cut_links(), [(2, 1)]);
        let mut stream = connect(&route);
        assert!(!echoes(&mut stream), "nothing comes back");
        net.heal_all();
        assert!(net.cut_links().is_empty());
        let mut healed = connect(&route);
        assert!(echoes(&mut healed));
    }
}
