//! The standby side of shipping: on the leader of a standby region, pull
//! the primary's entries, check each one's crc and order, propose them into
//! this region's Raft group, and acknowledge what committed, granting the
//! primary a write lease with every acknowledgement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_consensus::region::RegionOp;
use coffer_consensus::{Applied, RegionRole, RequestError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::proto::dr_service_client::DrServiceClient;
use crate::proto::{ShipUp, ShippedEntry};
use crate::{entry_crc, locked, Dr, SHIP_MESSAGE_BYTES_MAX};

/// The first wait after a failed session; doubled up to the most.
const RETRY_MS_MIN: u64 = 100;
const RETRY_MS_MAX: u64 = 2_000;
/// How long to wait for a connection to a primary node.
pub(crate) const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Runs for the node's life: ships whenever this node leads a standby
/// region and no promotion paused it.
pub(crate) async fn follow(dr: Arc<Dr>) {
    let node = dr.node.clone();
    let mut views = node.watch_view();
    let mut retry = RETRY_MS_MIN;
    let mut next_address = 0usize;
    let mut leading = false;
    while !node.is_stopped() {
        let view = node.view();
        if view.is_leader != leading {
            leading = view.is_leader;
            locked(&dr.standby).clock.leadership(leading, dr.now_ms());
        }
        let paused = locked(&dr.standby).paused || dr.is_isolated();
        if !view.is_leader || view.region.role != RegionRole::Standby || paused {
            tokio::select! {
                changed = views.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_millis(RETRY_MS_MIN)) => {}
            }
            continue;
        }
        let addresses = &dr.config.peer_addresses;
        let address = addresses[next_address % addresses.len()].clone();
        locked(&dr.standby).shipping = true;
        let ended = session(&dr, &address).await;
        locked(&dr.standby).shipping = false;
        match ended {
            Ok(()) => retry = RETRY_MS_MIN,
            Err(failure) => {
                tracing::info!(node = node.id(), primary = %address, error = %failure.reason, "shipping session ended");
                locked(&dr.standby).last_error = format!("{address}: {}", failure.reason);
                match failure.leader.and_then(|leader| addresses.iter().position(|known| *known == leader)) {
                    Some(position) => next_address = position,
                    None => next_address += 1,
                }
                if !failure.progressed {
                    tokio::time::sleep(Duration::from_millis(retry)).await;
                    retry = (retry * 2).min(RETRY_MS_MAX);
                } else {
                    retry = RETRY_MS_MIN;
                }
            }
        }
    }
}

/// Why a session ended, where the primary's leader is (if it said), and
/// whether anything was shipped first.
struct Failure {
    reason: String,
    leader: Option<String>,
    progressed: bool,
}

fn failure(reason: impl Into<String>) -> Failure {
    Failure { reason: reason.into(), leader: None, progressed: false }
}

/// One shipping session with the primary node at `address`. `Ok` when it
/// ended because this node should stop shipping (not the leader any more,
/// promoted, paused).
async fn session(dr: &Arc<Dr>, address: &str) -> Result<(), Failure> {
    let node = &dr.node;
    let endpoint = coffer_security::tls::endpoint(address, Duration::from_millis(CONNECT_TIMEOUT_MS))
        .map_err(|error| failure(format!("bad address: {error}")))?;
    let channel = dr
        .config
        .security
        .connect(endpoint, coffer_security::Expect::Node(None))
        .await
        .map_err(|error| failure(format!("connect: {error}")))?;
    let mut client = DrServiceClient::new(channel)
        .max_decoding_message_size(SHIP_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(SHIP_MESSAGE_BYTES_MAX);
    let view = node.view();
    let mut cursor = coffer_consensus::region::shipped_through(view.region);
    let mut epoch = view.region.epoch;
    let (acks, outgoing) = mpsc::channel::<ShipUp>(64);
    let hello = ShipUp { region: dr.config.region.clone(), epoch, cursor, ..ShipUp::default() };
    acks.try_send(hello).map_err(|_| failure("the acknowledgement channel is closed"))?;
    let response = client.ship(ReceiverStream::new(outgoing)).await.map_err(|status| Failure {
        reason: format!("{:?}: {}", status.code(), status.message()),
        leader: status
            .metadata()
            .get(crate::LEADER_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        progressed: false,
    })?;
    let mut stream = response.into_inner();
    let mut progressed = false;
    let timeout = Duration::from_millis(dr.config.lease_ms);
    loop {
        // A promotion pausing the session wakes it at once (not at the next
        // message, up to a heartbeat later): the switchover waits for it.
        let paused = dr.pause_signal.notified();
        tokio::pin!(paused);
        paused.as_mut().enable();
        if locked(&dr.standby).paused {
            return Ok(());
        }
        let next = tokio::select! {
            next = tokio::time::timeout(timeout, stream.message()) => next,
            () = &mut paused => return Ok(()),
        };
        let mut message = match next {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => return Err(Failure { progressed, ..failure("the primary closed the stream") }),
            Ok(Err(status)) => {
                return Err(Failure { progressed, ..failure(format!("{:?}: {}", status.code(), status.message())) })
            }
            Err(_) => {
                return Err(Failure { progressed, ..failure(format!("nothing heard for {} ms", timeout.as_millis())) })
            }
        };
        let view = node.view();
        if !view.is_leader || view.region.role != RegionRole::Standby || locked(&dr.standby).paused || dr.is_isolated()
        {
            return Ok(());
        }
        if message.epoch < view.region.epoch {
            return Err(failure(format!(
                "node {} of region {} is a primary of epoch {}, older than this region's epoch {}",
                message.node_id, message.region, message.epoch, view.region.epoch
            )));
        }
        epoch = epoch.max(message.epoch);
        let entries = std::mem::take(&mut message.entries);
        let proposals = propose(dr, entries, message.node_id, cursor, epoch)?;
        for (index, proposal) in proposals {
            match proposal.await {
                Ok(Applied { .. }) => {
                    cursor = index;
                    progressed = true;
                }
                Err(error) => return Err(Failure { progressed, ..failure(refused(index, &error)) }),
            }
        }
        {
            let mut standby = locked(&dr.standby);
            standby.source_applied = message.applied_index;
            standby.source_heard = Some(Instant::now());
            if cursor >= message.applied_index {
                standby.caught_up_at = Some(Instant::now());
            }
            // The grant is recorded before it is sent: the promotion wait
            // counts from no earlier than the primary's lease does.
            standby.clock.granted(dr.now_ms());
            standby.last_error.clear();
        }
        let ack =
            ShipUp { ack_seq: message.seq, durable_cursor: cursor, lease_ms: dr.config.lease_ms, ..ShipUp::default() };
        if acks.send(ack).await.is_err() {
            return Err(Failure { progressed, ..failure("the acknowledgement stream closed") });
        }
    }
}

type Proposal = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Applied, RequestError>> + Send>>;

/// Checks every entry of `message` (crc, order after `cursor`) and proposes
/// them all at once, in order: one round of this region's group commit.
/// The payloads move into the proposals: an entry is not copied on the way.
fn propose(
    dr: &Arc<Dr>,
    entries: Vec<ShippedEntry>,
    from_node: u64,
    cursor: u64,
    epoch: u64,
) -> Result<Vec<(u64, Proposal)>, Failure> {
    let mut expected = cursor + 1;
    let mut proposals = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.index < expected {
            // Already applied (a resent entry): skip.
            continue;
        }
        if entry.index != expected {
            return Err(failure(format!("entry {} arrived where {expected} was due", entry.index)));
        }
        let crc = entry_crc(entry.index, &entry.data);
        if crc != entry.crc32 {
            return Err(failure(format!(
                "entry {} from node {} fails its crc ({:08x}, computed {crc:08x}): refused",
                entry.index, from_node, entry.crc32
            )));
        }
        let op = RegionOp::Ship { source_epoch: epoch, index: entry.index, data: entry.data };
        let node = dr.node.clone();
        proposals.push((entry.index, enqueue(node, op)));
        expected += 1;
    }
    Ok(proposals)
}

/// Sends the proposal to the driver now (so proposals keep their order) and
/// returns its answer as a future.
fn enqueue(node: coffer_consensus::NodeHandle, op: RegionOp) -> Proposal {
    let queued = node.queue_region(op, coffer_consensus::region::RegionNote::default());
    Box::pin(async move {
        match queued {
            Ok(answer) => answer.await,
            Err(error) => Err(error),
        }
    })
}

fn refused(index: u64, error: &RequestError) -> String {
    format!("shipping entry {index}: {error}")
}
