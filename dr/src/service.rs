//! `DrService`: the shipping stream (primary side) and the region
//! operations, on every node of both regions.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use coffer_consensus::region::{RegionNote, RegionOp, REASON_BYTES_MAX};
use coffer_consensus::{Applied, Outcome, ProposalError, RegionRole, RequestError};
use coffer_ledger::{stored_state_digest, Store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::dr_service_server::{DrService, DrServiceServer};
use crate::proto::{
    CheckpointChunk, CheckpointRequest, CheckpointResponse, DemoteRequest, DigestRequest, DigestResponse,
    DrStatusRequest, DrStatusResponse, FetchCheckpointRequest, FreezeRequest, IsolateRequest, IsolateResponse,
    LeaseRequest, PromoteRequest, RegionResponse, ReseedRequest, ReseedResponse, ShipDown, ShipUp, UnfreezeRequest,
};
use crate::{locked, region_info, role_name, Dr, Fencing, RegionRefusal, SHIP_MESSAGE_BYTES_MAX};

/// How long a promotion waits for the shipping session to stop.
const PAUSE_TIMEOUT_MS: u64 = 5_000;
/// How long a region operation may take before its caller is told so.
const OPERATION_TIMEOUT_MS: u64 = 10_000;

/// `DrService` over one node's [`Dr`].
#[derive(Clone, Debug)]
pub struct DrApi {
    dr: Arc<Dr>,
}

impl DrApi {
    /// The service of `dr`.
    pub fn new(dr: Arc<Dr>) -> Self {
        Self { dr }
    }

    /// The gRPC server, with the message-size limits set.
    pub fn into_server(self) -> DrServiceServer<Self> {
        DrServiceServer::new(self)
            .max_decoding_message_size(SHIP_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(SHIP_MESSAGE_BYTES_MAX)
    }

    /// `UNAVAILABLE` naming the leader, unless this node leads its region.
    fn require_leader(&self) -> Result<(), Status> {
        self.dr.require_leader()
    }

    /// The region's state, if its role is `role`; otherwise
    /// `FAILED_PRECONDITION` naming the region, its role and epoch, and `why`.
    fn require_role(&self, role: RegionRole, why: &str) -> Result<coffer_consensus::RegionState, Status> {
        let region = self.dr.node.view().region;
        if region.role == role {
            return Ok(region);
        }
        Err(Status::failed_precondition(format!(
            "region {} is a {} at epoch {}: {why}",
            self.dr.config.region,
            role_name(region.role),
            region.epoch
        )))
    }

    /// Proposes a region entry and answers with the region after it.
    async fn region_op(&self, op: RegionOp, note: RegionNote) -> Result<(u64, coffer_consensus::RegionState), Status> {
        self.require_leader()?;
        let name = op.name();
        let proposed =
            tokio::time::timeout(Duration::from_millis(OPERATION_TIMEOUT_MS), self.dr.node.propose_region(op, note))
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!("region operation {name} not applied in time; check status"))
                })?;
        match proposed {
            Ok(Applied { index, outcome: Outcome::Region(region) }) => {
                tracing::info!(
                    node = self.dr.node.id(),
                    index,
                    op = name,
                    epoch = region.epoch,
                    role = role_name(region.role),
                    "region changed"
                );
                Ok((index, region))
            }
            Ok(_) => Err(Status::internal("the node answered a region operation with another outcome")),
            Err(error) => Err(request_status(&error)),
        }
    }

    fn answer(&self, index: u64, region: coffer_consensus::RegionState) -> RegionResponse {
        RegionResponse {
            node_id: self.dr.node.id(),
            index,
            region: Some(region_info(&self.dr.config.region, region)),
            digest: String::new(),
            last_timestamp: 0,
        }
    }

    /// The state digest and last timestamp at this node's applied index:
    /// the digest the state machine keeps as it applies (one read, whatever
    /// the ledger's size; `coffer verify` recomputes it).
    async fn digest(&self) -> Result<(u64, String, u64), Status> {
        let read = self.dr.node.read_stale(|state| {
            let digest = stored_state_digest(state)?;
            Ok::<_, coffer_ledger::StoreError>((digest.to_string(), state.last_timestamp()?))
        });
        let (index, found) = read.await.map_err(|error| request_status(&error))?;
        let (digest, last_timestamp) = found.map_err(|error| Status::data_loss(error.to_string()))?;
        Ok((index, digest, last_timestamp))
    }
}

/// The gRPC status of a failed request to the node.
fn request_status(error: &RequestError) -> Status {
    let message = error.to_string();
    match error {
        RequestError::Proposal(ProposalError::RegionRefused { .. } | ProposalError::NotWritable { .. }) => {
            Status::failed_precondition(message)
        }
        RequestError::Proposal(ProposalError::NotLeader { .. }) => Status::unavailable(message),
        error if error.is_retryable() => Status::unavailable(message),
        RequestError::Invalid { .. } => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

type ShipStream = Pin<Box<dyn Stream<Item = Result<ShipDown, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<CheckpointChunk, Status>> + Send>>;

/// Whether `name` is a checkpoint name this node could have made.
fn checkpoint_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// Who asked for a region operation (the principal the API's access layer
/// authorized) and why.
fn note<T>(request: &Request<T>, reason: String) -> Result<RegionNote, Status> {
    if reason.len() > REASON_BYTES_MAX {
        return Err(Status::invalid_argument(format!("reason: {} bytes, at most {REASON_BYTES_MAX}", reason.len())));
    }
    let principal = request.extensions().get::<coffer_security::Principal>().map(|principal| principal.0.clone());
    Ok(RegionNote { principal: principal.unwrap_or_default(), reason })
}

#[tonic::async_trait]
impl DrService for DrApi {
    type ShipStream = ShipStream;
    type FetchCheckpointStream = ChunkStream;

    async fn checkpoint(&self, _: Request<CheckpointRequest>) -> Result<Response<CheckpointResponse>, Status> {
        let dr = &self.dr;
        self.require_role(RegionRole::Primary, "re-seed from a checkpoint of the primary")?;
        let root = dr.data_dir.join(crate::reseed::CHECKPOINTS_DIR);
        std::fs::create_dir_all(&root).map_err(|error| Status::internal(format!("{}: {error}", root.display())))?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!("cp-{stamp}");
        let manifest = dr.node.backup(root.join(&name)).await.map_err(|error| request_status(&error))?;
        let index = manifest.applied.index;
        // The re-seeded region ships from here on.
        let _ = dr.node.retain_log_from(index + 1);
        // Keep the newest few.
        if let Ok(entries) = std::fs::read_dir(&root) {
            let mut names: Vec<String> =
                entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect();
            names.sort();
            let excess = names.len().saturating_sub(crate::reseed::CHECKPOINTS_KEPT);
            for old in names.into_iter().take(excess) {
                let _ = std::fs::remove_dir_all(root.join(old));
            }
        }
        tracing::info!(node = dr.node.id(), index, %name, "checkpoint made for a re-seed");
        Ok(Response::new(CheckpointResponse {
            node_id: dr.node.id(),
            name,
            index,
            region: Some(region_info(&dr.config.region, dr.node.view().region)),
        }))
    }

    async fn fetch_checkpoint(
        &self,
        request: Request<FetchCheckpointRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let name = request.into_inner().name;
        if !checkpoint_name_ok(&name) {
            return Err(Status::invalid_argument(format!("name: {name:?} is not a checkpoint name")));
        }
        let dir = self.dr.data_dir.join(crate::reseed::CHECKPOINTS_DIR).join(&name);
        let mut reader = coffer_storage::snapshot::SnapshotReader::open(&dir, crate::reseed::CHUNK_BYTES)
            .map_err(|error| Status::not_found(format!("checkpoint {name}: {error}")))?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || loop {
            let next = match reader.next_chunk() {
                Ok(Some(chunk)) => {
                    Ok(CheckpointChunk { file: chunk.file, offset: chunk.offset, data: chunk.data, crc32: chunk.crc32 })
                }
                Ok(None) => return,
                Err(error) => Err(Status::internal(error.to_string())),
            };
            let failed = next.is_err();
            if sender.blocking_send(next).is_err() || failed {
                return;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn reseed(&self, request: Request<ReseedRequest>) -> Result<Response<ReseedResponse>, Status> {
        let request = request.into_inner();
        let dr = &self.dr;
        let region = dr.node.view().region;
        if region.role == RegionRole::Primary && !region.frozen {
            return Err(Status::failed_precondition(format!(
                "region {} is a primary taking writes: freeze it (or demote it) before re-seeding",
                dr.config.region
            )));
        }
        // A standby follows a primary of its epoch or a newer one; an old
        // primary only one of a newer epoch.
        let newer = request.epoch > region.epoch;
        if !newer && (region.role == RegionRole::Primary || request.epoch < region.epoch) {
            return Err(Status::invalid_argument(format!(
                "epoch: {} is not a primary's epoch region {} ({}, epoch {}) may follow",
                request.epoch,
                dr.config.region,
                role_name(region.role),
                region.epoch
            )));
        }
        if request.restart {
            crate::reseed::mark_ready(&dr.data_dir)
                .map_err(|error| Status::failed_precondition(format!("nothing prepared to install: {error}")))?;
            tracing::warn!(node = dr.node.id(), "re-seed prepared: restarting to install it");
            dr.restart.notify_one();
            return Ok(Response::new(ReseedResponse { node_id: dr.node.id(), detail: "restarting".into() }));
        }
        if !checkpoint_name_ok(&request.name) {
            return Err(Status::invalid_argument(format!("name: {:?} is not a checkpoint name", request.name)));
        }
        let status = dr.node.status().await.map_err(|error| request_status(&error))?;
        if request.term <= status.term {
            return Err(Status::invalid_argument(format!(
                "term: {} is not above node {}'s term {}",
                request.term,
                dr.node.id(),
                status.term
            )));
        }
        let download = crate::reseed::download_dir(&dr.data_dir);
        coffer_storage::snapshot::remove_dir(&download).map_err(|error| Status::internal(error.to_string()))?;
        crate::reseed::download(&self.dr.config.security, &request.source_address, &request.name, &download)
            .await
            .map_err(|reason| Status::unavailable(format!("downloading the checkpoint: {reason}")))?;
        let (data_dir, conf_state) = (dr.data_dir.clone(), status.conf_state);
        let (index, term, epoch) = (request.index, request.term, request.epoch);
        tokio::task::spawn_blocking(move || {
            crate::reseed::prepare(&data_dir, &download, index, term, epoch, &conf_state)
        })
        .await
        .map_err(|error| Status::internal(error.to_string()))?
        .map_err(|error| Status::failed_precondition(format!("preparing the checkpoint: {error}")))?;
        tracing::warn!(node = dr.node.id(), index, term, epoch, "re-seed prepared");
        Ok(Response::new(ReseedResponse { node_id: dr.node.id(), detail: format!("prepared at index {index}") }))
    }

    async fn ship(&self, request: Request<Streaming<ShipUp>>) -> Result<Response<ShipStream>, Status> {
        let mut acks = request.into_inner();
        let hello = acks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the shipping stream ended before its first message"))?;
        let next = crate::primary::check_hello(&self.dr, &hello)?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(crate::primary::ship(self.dr.clone(), next, acks, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn status(&self, _: Request<DrStatusRequest>) -> Result<Response<DrStatusResponse>, Status> {
        let dr = &self.dr;
        let view = dr.node.view();
        let region = view.region;
        let mut response = DrStatusResponse {
            node_id: dr.node.id(),
            region: Some(region_info(&dr.config.region, region)),
            applied_index: view.applied,
            leader_id: view.leader.unwrap_or(0),
            is_leader: view.is_leader,
            mode: dr.config.mode.name().to_owned(),
            max_lag_entries: dr.config.max_lag_entries,
            max_lag_ms: dr.config.max_lag_ms,
            peer_addresses: dr.config.peer_addresses.clone(),
            peer_region: dr.config.peer_region.clone(),
            fencing: if region.lease_waived && dr.config.fencing == Fencing::Lease {
                "lease (waived: no standby follows this primary yet)".to_owned()
            } else {
                dr.config.fencing.name().to_owned()
            },
            isolated: dr.is_isolated(),
            term: view.term,
            ..DrStatusResponse::default()
        };
        let (lag, behind) = dr.lag();
        response.lag_entries = lag;
        response.lag_ms = behind.as_millis() as u64;
        match region.role {
            RegionRole::Standby => {
                let standby = locked(&dr.standby);
                response.source_applied_index = standby.source_applied;
                response.source_heard_ms_ago =
                    standby.source_heard.map_or(u64::MAX, |heard| heard.elapsed().as_millis() as u64);
                response.shipping = standby.shipping;
                response.last_error = standby.last_error.clone();
                drop(standby);
                response.promote_wait_ms = dr.promote_wait().as_millis() as u64;
            }
            // Only the primary's leader ships and holds the lease.
            _ if view.is_leader => {
                let primary = dr.primary_side(region.epoch);
                response.standby_durable_index = primary.gate.durable().0;
                response.shipped_bytes = primary.shipped_bytes;
                response.standby_connected = primary.streams > 0;
                let now = dr.now_ms();
                response.lease_remaining_ms = primary.gate.lease_until().map_or(-1, |until| until as i64 - now as i64);
            }
            _ => {}
        }
        Ok(Response::new(response))
    }

    async fn freeze(&self, request: Request<FreezeRequest>) -> Result<Response<RegionResponse>, Status> {
        let (index, region) = self.region_op(RegionOp::Freeze, note(&request, String::new())?).await?;
        Ok(Response::new(self.answer(index, region)))
    }

    async fn unfreeze(&self, request: Request<UnfreezeRequest>) -> Result<Response<RegionResponse>, Status> {
        let reason = request.get_ref().reason.clone();
        let (index, region) = self.region_op(RegionOp::Unfreeze, note(&request, reason)?).await?;
        Ok(Response::new(self.answer(index, region)))
    }

    async fn promote(&self, request: Request<PromoteRequest>) -> Result<Response<RegionResponse>, Status> {
        let message = request.get_ref();
        let (force, keep_lease) = (message.force, message.keep_lease);
        if force && message.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: a forced promotion needs a reason (the audit trail records it with who forced it)",
            ));
        }
        let reason = if force { format!("forced: {}", message.reason) } else { message.reason.clone() };
        let note = note(&request, reason)?;
        self.require_leader()?;
        let dr = &self.dr;
        let region = self.require_role(RegionRole::Standby, "only a standby is promoted")?;
        let wait = dr.promote_wait();
        if !force && !wait.is_zero() {
            return Err(RegionRefusal::LeaseHeld.status(format!(
                "the primary region {} may still hold a write lease for {} ms (granted by this region, plus the \
                 clock-skew margin): promote after it lapses, or with force once the primary region is known down \
                 or cut off",
                dr.config.peer_region,
                wait.as_millis()
            )));
        }
        if !dr.pause_shipping(Duration::from_millis(PAUSE_TIMEOUT_MS)).await {
            dr.resume_shipping();
            return Err(Status::unavailable("the shipping session did not stop in time; retry"));
        }
        // Nothing changes the state now: shipping stopped and a standby
        // takes no writes. The digest is of the state the promotion keeps.
        let digest = self.digest().await;
        let promoted = match digest {
            Ok(digest) => self
                .region_op(RegionOp::Promote { epoch: region.epoch + 1, keep_lease }, note)
                .await
                .map(|done| (digest, done)),
            Err(status) => Err(status),
        };
        dr.resume_shipping();
        let ((_, digest, last_timestamp), (index, region)) = promoted?;
        tracing::warn!(node = dr.node.id(), index, epoch = region.epoch, force, %digest, "region promoted to primary");
        Ok(Response::new(RegionResponse { digest, last_timestamp, ..self.answer(index, region) }))
    }

    async fn demote(&self, request: Request<DemoteRequest>) -> Result<Response<RegionResponse>, Status> {
        let note = note(&request, String::new())?;
        let request = request.into_inner();
        self.require_leader()?;
        let dr = &self.dr;
        let region = self.require_role(RegionRole::Primary, "only a primary is demoted")?;
        if request.epoch <= region.epoch {
            return Err(Status::invalid_argument(format!(
                "epoch: {} is not above region {}'s epoch {}",
                request.epoch, dr.config.region, region.epoch
            )));
        }
        if !region.frozen {
            self.region_op(RegionOp::Freeze, note.clone()).await?;
        }
        // Frozen: nothing changes the ledger any more.
        let (_, found) = dr.node.read(|state| state.last_timestamp()).await.map_err(|error| request_status(&error))?;
        let last_timestamp = found.map_err(|error| Status::data_loss(error.to_string()))?;
        if !crate::core::may_demote(&dr.rules, last_timestamp, request.base_timestamp) {
            return Err(RegionRefusal::Diverged.status(format!(
                "region {} applied writes the new primary does not hold (its last timestamp {last_timestamp} is not \
                 the new primary's base {}): it diverged and must be re-seeded; it stays frozen",
                dr.config.region, request.base_timestamp
            )));
        }
        let op = RegionOp::Demote { epoch: request.epoch, cursor: request.cursor };
        let (index, region) = self.region_op(op, note).await?;
        Ok(Response::new(self.answer(index, region)))
    }

    async fn isolate(&self, request: Request<IsolateRequest>) -> Result<Response<IsolateResponse>, Status> {
        let isolated = request.into_inner().isolated;
        self.dr.isolated.store(isolated, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            node = self.dr.node.id(),
            isolated,
            "drill: link to the other region {}",
            if isolated { "cut" } else { "restored" }
        );
        Ok(Response::new(IsolateResponse { node_id: self.dr.node.id(), isolated }))
    }

    async fn lease(&self, request: Request<LeaseRequest>) -> Result<Response<RegionResponse>, Status> {
        let (required, reason) = (request.get_ref().required, request.get_ref().reason.clone());
        if !required && reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: waiving the write lease needs a reason (the audit trail records it with who waived it)",
            ));
        }
        let note = note(&request, reason)?;
        let (index, region) = self.region_op(RegionOp::Lease { required }, note).await?;
        Ok(Response::new(self.answer(index, region)))
    }

    async fn digest(&self, _: Request<DigestRequest>) -> Result<Response<DigestResponse>, Status> {
        let (index, digest, last_timestamp) = DrApi::digest(self).await?;
        let region = self.dr.node.view().region;
        Ok(Response::new(DigestResponse {
            node_id: self.dr.node.id(),
            applied_index: index,
            region: Some(region_info(&self.dr.config.region, region)),
            digest,
            last_timestamp,
        }))
    }
}
