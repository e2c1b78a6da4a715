//! What the services need of a consensus node: [`Node`], implemented by the
//! production [`NodeHandle`] (each method delegates to the handle's method
//! of the same name) and, in tests, by in-memory nodes.
//!
//! The services are generic over it so that they can be tested against a
//! node whose answers a test chooses (a follower naming a leader, an
//! overloaded queue, a write whose outcome is unknown) without a Raft
//! cluster; the production server is `LedgerApi<NodeHandle>`.

use std::future::Future;
use std::path::PathBuf;

use coffer_consensus::audit::{AuditRecord, BatchSpan};
use coffer_consensus::{
    Applied, MembershipChange, NodeHandle, NodeStatus, ReadView, RequestError, SnapshotManifest, StorageError,
};
use coffer_ledger::{MemoryStore, Operation, Store};

/// What a state knows of who proposed the batches its changes came from,
/// so that the change feed can name the principal of each change.
pub trait BatchPrincipals {
    /// The committed batches holding events `first ..= last`, in time order
    /// (see [`coffer_consensus::audit::batch_spans`]).
    fn batch_spans(&self, first: u64, last: u64) -> Result<Vec<BatchSpan>, StorageError>;
}

impl BatchPrincipals for ReadView<'_> {
    fn batch_spans(&self, first: u64, last: u64) -> Result<Vec<BatchSpan>, StorageError> {
        ReadView::batch_spans(self, first, last)
    }
}

/// The in-memory store keeps no audit trail: its changes name no principal.
impl BatchPrincipals for MemoryStore {
    fn batch_spans(&self, _first: u64, _last: u64) -> Result<Vec<BatchSpan>, StorageError> {
        Ok(Vec::new())
    }
}

/// A running consensus node, as the API uses it. Cheap to clone.
pub trait Node: Clone + Send + Sync + 'static {
    /// The view of the ledger state that reads run on (`'v`: the view's
    /// lifetime, the read's).
    type State<'v>: Store + BatchPrincipals;

    /// The node's id.
    fn id(&self) -> u64;

    /// Whether the node stopped (it answers nothing any more).
    fn is_stopped(&self) -> bool;

    /// The client API address of `node`, if a membership change that added
    /// it named one (the node's store keeps them); `None` by default.
    fn member_api_address(&self, node: u64) -> Option<String> {
        let _ = node;
        None
    }

    /// The nodes membership changes added with a client API address, and
    /// those addresses.
    fn member_api_addresses(&self) -> Vec<(u64, String)> {
        Vec::new()
    }

    /// Proposes a ledger operation for `principal` (whom the audit trail
    /// records with it); answers once it is applied on this node (the
    /// leader), with its per-event results.
    fn propose(
        &self,
        operation: Operation,
        principal: String,
    ) -> impl Future<Output = Result<Applied, RequestError>> + Send;

    /// Up to `limit` audit records after entry `after_index` (only
    /// `principal`'s, if named), from this node's state after a
    /// linearizable read, or as it is now when `stale`; with the applied
    /// index read at.
    fn audit(
        &self,
        after_index: u64,
        limit: usize,
        principal: Option<String>,
        stale: bool,
    ) -> impl Future<Output = Result<(u64, Result<Vec<AuditRecord>, StorageError>), RequestError>> + Send;

    /// Runs `f` on the state after a linearizable read (ReadIndex), and
    /// returns the applied index it saw with `f`'s result.
    fn read<F, R>(&self, f: F) -> impl Future<Output = Result<(u64, R), RequestError>> + Send
    where
        F: for<'v> FnOnce(&Self::State<'v>) -> R + Send + 'static,
        R: Send + 'static;

    /// Runs `f` on this node's state as it is now (possibly stale).
    fn read_stale<F, R>(&self, f: F) -> impl Future<Output = Result<(u64, R), RequestError>> + Send
    where
        F: for<'v> FnOnce(&Self::State<'v>) -> R + Send + 'static,
        R: Send + 'static;

    /// The node's Raft status.
    fn status(&self) -> impl Future<Output = Result<NodeStatus, RequestError>> + Send;

    /// Hands leadership (this node's) to `target`.
    fn transfer_leader(&self, target: u64) -> impl Future<Output = Result<(), RequestError>> + Send;

    /// Proposes a membership change at the leader (this node); `address` is
    /// the added node's Raft transport address (empty for none); `force`
    /// skips the safety checks (a learner not caught up, a removal leaving
    /// no room for another failure).
    fn change_membership(
        &self,
        change: MembershipChange,
        address: String,
        force: bool,
    ) -> impl Future<Output = Result<Applied, RequestError>> + Send;

    /// Makes a snapshot (a verified backup) of the node's state in `dir`,
    /// which must not exist.
    fn snapshot(&self, dir: PathBuf) -> impl Future<Output = Result<SnapshotManifest, RequestError>> + Send;
}

impl Node for NodeHandle {
    type State<'v> = ReadView<'v>;

    fn id(&self) -> u64 {
        NodeHandle::id(self)
    }

    fn is_stopped(&self) -> bool {
        NodeHandle::is_stopped(self)
    }

    fn member_api_address(&self, node: u64) -> Option<String> {
        self.member_addresses().remove(&node).and_then(|member| member.api)
    }

    fn member_api_addresses(&self) -> Vec<(u64, String)> {
        self.member_addresses().into_iter().filter_map(|(node, member)| Some((node, member.api?))).collect()
    }

    fn propose(
        &self,
        operation: Operation,
        principal: String,
    ) -> impl Future<Output = Result<Applied, RequestError>> + Send {
        NodeHandle::propose_as(self, operation, principal)
    }

    async fn audit(
        &self,
        after_index: u64,
        limit: usize,
        principal: Option<String>,
        stale: bool,
    ) -> Result<(u64, Result<Vec<AuditRecord>, StorageError>), RequestError> {
        let read = move |view: &ReadView<'_>| view.audit(after_index, limit, principal.as_deref());
        if stale {
            NodeHandle::read_stale(self, read).await
        } else {
            NodeHandle::read(self, read).await
        }
    }

    fn read<F, R>(&self, f: F) -> impl Future<Output = Result<(u64, R), RequestError>> + Send
    where
        F: for<'v> FnOnce(&ReadView<'v>) -> R + Send + 'static,
        R: Send + 'static,
    {
        NodeHandle::read(self, f)
    }

    fn read_stale<F, R>(&self, f: F) -> impl Future<Output = Result<(u64, R), RequestError>> + Send
    where
        F: for<'v> FnOnce(&ReadView<'v>) -> R + Send + 'static,
        R: Send + 'static,
    {
        NodeHandle::read_stale(self, f)
    }

    fn status(&self) -> impl Future<Output = Result<NodeStatus, RequestError>> + Send {
        NodeHandle::status(self)
    }

    fn transfer_leader(&self, target: u64) -> impl Future<Output = Result<(), RequestError>> + Send {
        NodeHandle::transfer_leader(self, target)
    }

    fn change_membership(
        &self,
        change: MembershipChange,
        address: String,
        force: bool,
    ) -> impl Future<Output = Result<Applied, RequestError>> + Send {
        NodeHandle::change_membership(self, change, address, force)
    }

    fn snapshot(&self, dir: PathBuf) -> impl Future<Output = Result<SnapshotManifest, RequestError>> + Send {
        NodeHandle::backup(self, dir)
    }
}
