//! Change events: what the writer tells every map session after publishing a snapshot.
//! A session folds events into its pending delta; how a node changed decides whether peers
//! get a small patch or the whole node again.

use crate::model::NodeId;
use crate::tailcfg::PeerChange;

/// One thing that changed in the tailnet.
#[derive(Debug, Clone)]
pub enum Change {
    /// A node was added or changed. With `patch`, peers need only these fields; without,
    /// they need the whole node.
    Node { id: NodeId, patch: Option<PeerChange> },
    /// A node was deleted.
    Removed(NodeId),
    /// Something that affects every node's view (users, policy, DNS, DERP map): each
    /// session re-checks its whole peer list and its own node.
    Everything,
    /// The policy's answers changed (a new policy, a recompilation, or another primary
    /// router): each session re-derives its peers, packet filter and SSH policy and sends
    /// what differs.
    Rules,
    /// The DERP map changed: each session sends the snapshot's.
    DerpMap,
}

/// The changes of one published version.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    pub version: u64,
    pub changes: Vec<Change>,
}
