//! The primary side of shipping: one task per stream, on the primary
//! region's leader, sends every applied entry from the standby's cursor on,
//! heartbeats when idle, and turns the standby's acknowledgements into the
//! durable index (sync mode, lag) and the write lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_consensus::raft::prelude::EntryType;
use coffer_consensus::{EntriesError, RegionRole};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::proto::{ShipDown, ShipUp, ShippedEntry};
use crate::{entry_crc, locked, Dr, SHIP_BATCH_BYTES};

/// Checks the standby's first message against this node; the stream's
/// first index, or why it is refused.
pub(crate) fn check_hello(dr: &Dr, hello: &ShipUp) -> Result<u64, Status> {
    let view = dr.node.view();
    let region = &dr.config.region;
    if dr.is_isolated() {
        return Err(Status::unavailable(format!("node {} is cut off the other region by a drill", dr.node.id())));
    }
    if view.region.role != RegionRole::Primary {
        return Err(Status::failed_precondition(format!(
            "region {region} is a {} at epoch {}: ship from the primary region",
            crate::role_name(view.region.role),
            view.region.epoch
        )));
    }
    dr.require_leader()?;
    if hello.epoch > view.region.epoch {
        return Err(Status::failed_precondition(format!(
            "region {region} is at epoch {}, older than the standby's epoch {}: it is no longer the primary",
            view.region.epoch, hello.epoch
        )));
    }
    if hello.cursor < view.region.primary_since {
        return Err(Status::failed_precondition(format!(
            "the standby's cursor {} is before index {}, where region {region} became the primary: the standby \
             must be demoted at that index or re-seeded",
            hello.cursor, view.region.primary_since
        )));
    }
    Ok(hello.cursor + 1)
}

/// Ships from `next` until the standby goes away or this node stops being
/// the primary's leader.
pub(crate) async fn ship(
    dr: Arc<Dr>,
    mut next: u64,
    mut acks: Streaming<ShipUp>,
    sender: mpsc::Sender<Result<ShipDown, Status>>,
) {
    let node = dr.node.clone();
    let mut views = node.watch_view();
    let heartbeat = Duration::from_millis(dr.config.heartbeat_ms);
    let mut ticker = tokio::time::interval(heartbeat);
    let mut stream = crate::core::Stream::default();
    let mut last_sent = Instant::now() - heartbeat;
    let _ = node.retain_log_from(next);
    {
        // The standby holds everything before `next` already.
        let epoch = node.view().region.epoch;
        dr.primary_side(epoch).streams += 1;
        dr.confirmed(epoch, next - 1);
    }
    tracing::info!(node = node.id(), from = next, "shipping to the standby region");
    let ending: Result<(), Status> = 'ship: loop {
        let view = node.view();
        if dr.is_isolated() {
            break Err(Status::unavailable(format!("node {} is cut off the other region by a drill", node.id())));
        }
        if !view.is_leader || view.region.role != RegionRole::Primary {
            break Err(Status::unavailable(format!(
                "node {} stopped being the primary region's leader; reconnect",
                node.id()
            )));
        }
        {
            let mut primary = dr.primary_side(view.region.epoch);
            if primary.applied_at.back().is_none_or(|(index, _)| *index < view.applied) {
                primary.applied_at.push_back((view.applied, Instant::now()));
            }
        }
        let mut entries = Vec::new();
        if view.applied >= next {
            match node.applied_entries(next, SHIP_BATCH_BYTES).await {
                Ok(Ok(read)) => entries = read,
                Ok(Err(EntriesError::Compacted { first })) => {
                    break Err(Status::failed_precondition(format!(
                        "entry {next} is no longer in the log of node {} (it starts at {first}): the standby \
                         region fell too far behind and must be re-seeded",
                        node.id()
                    )));
                }
                Ok(Err(error)) => break Err(Status::internal(format!("node {}: {error}", node.id()))),
                Err(error) => break Err(Status::unavailable(error.to_string())),
            }
        }
        if !entries.is_empty() || last_sent.elapsed() >= heartbeat {
            let mut bytes = 0u64;
            let shipped: Vec<ShippedEntry> = entries
                .into_iter()
                .map(|entry| {
                    let data = match entry.get_entry_type() {
                        EntryType::EntryNormal => entry.data.to_vec(),
                        // Membership is each region's own.
                        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => Vec::new(),
                    };
                    bytes += data.len() as u64;
                    ShippedEntry { index: entry.index, crc32: entry_crc(entry.index, &data), data }
                })
                .collect();
            if let Some(last) = shipped.last() {
                next = last.index + 1;
            }
            let sent_at = Instant::now();
            let message = ShipDown {
                seq: stream.send(dr.now_ms()),
                region: dr.config.region.clone(),
                node_id: node.id(),
                epoch: view.region.epoch,
                applied_index: view.applied,
                entries: shipped,
            };
            // Sending waits while the standby is slow (HTTP/2 flow control);
            // acknowledgements are read meanwhile.
            let send = sender.send(Ok(message));
            tokio::pin!(send);
            loop {
                tokio::select! {
                    sent = &mut send => {
                        if sent.is_err() {
                            break 'ship Ok(());
                        }
                        break;
                    }
                    ack = acks.message() => match ack {
                        Ok(Some(ack)) => on_ack(&dr, &ack, &mut stream),
                        Ok(None) => break 'ship Ok(()),
                        Err(status) => break 'ship Err(status),
                    },
                }
            }
            last_sent = sent_at;
            locked(&dr.primary).shipped_bytes += bytes;
            if view.applied >= next {
                // More is applied already: send it before waiting.
                continue;
            }
        }
        tokio::select! {
            ack = acks.message() => match ack {
                Ok(Some(ack)) => on_ack(&dr, &ack, &mut stream),
                Ok(None) => break Ok(()),
                Err(status) => break Err(status),
            },
            changed = views.changed() => if changed.is_err() {
                break Err(Status::unavailable(format!("node {} stopped", node.id())));
            },
            _ = ticker.tick() => {}
        }
    };
    locked(&dr.primary).streams -= 1;
    match ending {
        Ok(()) => tracing::info!(node = node.id(), "the standby region closed its shipping stream"),
        Err(status) => {
            tracing::info!(node = node.id(), error = %status.message(), "shipping stream ended");
            let _ = sender.send(Err(status)).await;
        }
    }
}

/// An acknowledgement: the standby's durable index, and a lease counted
/// from when the acknowledged message was sent (never longer than this
/// region's own setting).
fn on_ack(dr: &Dr, ack: &ShipUp, stream: &mut crate::core::Stream) {
    let epoch = dr.node.view().region.epoch;
    if let Some(sent_at) = stream.acknowledged(ack.ack_seq) {
        dr.primary_side(epoch).gate.acknowledged(&dr.rules, sent_at, ack.lease_ms);
    }
    dr.confirmed(epoch, ack.durable_cursor);
}
