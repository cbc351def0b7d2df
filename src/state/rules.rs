//! Keeping the snapshot's policy view current. Every publish checks what its changes touch:
//! the primary router of each subnet route (kept while it stays online and keeps the route,
//! else the online router with the lowest id), and the compiled policy (compiled again when a
//! node the policy sees was removed or changed its name, addresses, owner, tags or routes).
//! A node's rules (peers, filter, SSH policy, capabilities) are derived again only if the
//! change can affect them (`PolicyView::successor_for_nodes`); the others are kept.
//! Additions are coalesced: a registration storm would otherwise compile the whole tailnet
//! once per new node and make every session re-derive its rules each time. A publish that
//! only adds nodes marks the policy stale instead (the new nodes see nothing and nobody sees
//! them), and `State::catch_up_policy` compiles once for the whole burst shortly after.
//! Replacing the policy itself is `State::install_policy`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;

use super::{Change, Snapshot};
use crate::model::NodeId;
use crate::policy::{ActivePolicy, CompiledPolicy, ParsedPolicy, PolicyView};

/// The e-mail domains of the tailnet's users, for `user:*@domain` aliases.
pub(super) fn user_domains(snap: &Snapshot) -> Vec<String> {
    let domains: BTreeSet<String> =
        snap.users.values().filter_map(|u| u.email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase())).collect();
    domains.into_iter().collect()
}

/// `source` compiled for the snapshot's nodes.
pub fn compile(source: Arc<ParsedPolicy>, snap: &Snapshot) -> ActivePolicy {
    crate::counters::policy_compiled();
    let compiled = Arc::new(CompiledPolicy::compile(&source, snap.policy_nodes()));
    ActivePolicy { source, compiled }
}

/// Whether the node routes at least one subnet in `snap`.
fn is_router(snap: &Snapshot, id: NodeId) -> bool {
    snap.node(id).is_some_and(|e| e.node.live_routes().any(|r| r.prefix_len() > 0))
}

/// The primary router of every subnet route among the online routers.
fn elect(snap: &Snapshot, prior: &BTreeMap<IpNet, NodeId>) -> BTreeMap<IpNet, NodeId> {
    let mut candidates: BTreeMap<IpNet, Vec<NodeId>> = BTreeMap::new();
    for e in snap.nodes.values().filter(|e| e.online) {
        for route in e.node.live_routes().filter(|r| r.prefix_len() > 0) {
            candidates.entry(route).or_default().push(e.node.id);
        }
    }
    candidates
        .into_iter()
        .map(|(route, ids)| {
            let keep = prior.get(&route).filter(|p| ids.contains(p));
            (route, keep.copied().unwrap_or_else(|| ids[0]))
        })
        .collect()
}

/// Brings `next.policy` up to date after `changes` turned `prev` into `next`, adding what
/// sessions must hear: routers whose primary routes moved, and `Change::Rules` when any
/// answer of the policy may differ.
pub(super) fn refresh(prev: &Snapshot, next: &mut Snapshot, changes: &mut Vec<Change>) {
    let view = next.policy.clone();
    let everything = changes.iter().any(|c| matches!(c, Change::Everything));
    let touched: Vec<NodeId> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Node { id, .. } | Change::Removed(id) => Some(*id),
            Change::Everything | Change::Rules | Change::DerpMap => None,
        })
        .collect();
    let routers_touched = everything || touched.iter().any(|&id| is_router(prev, id) || is_router(next, id));
    let primaries = if routers_touched { elect(next, view.primaries()) } else { view.primaries().clone() };
    let changed: Vec<NodeId> =
        touched.iter().copied().filter(|&id| prev.policy_node(id) != next.policy_node(id)).collect();
    // The coalesced compile clears the mark on an unchanged view to ask for its compile.
    let catch_up = prev.policy_stale && !next.policy_stale && Arc::ptr_eq(&prev.policy, &next.policy);
    let only_added = !changed.is_empty() && changed.iter().all(|&id| prev.node(id).is_none());
    let defer = view.policy().is_some() && !everything && !catch_up && only_added;
    let recompile = view.policy().is_some() && (everything || catch_up || (!changed.is_empty() && !defer));
    if recompile {
        next.policy_stale = false;
    } else if defer {
        next.policy_stale = true;
    }
    if primaries == *view.primaries() && !recompile {
        return;
    }
    let moved: BTreeSet<NodeId> = view
        .primaries()
        .iter()
        .chain(primaries.iter())
        .filter(|(route, id)| view.primaries().get(route) != primaries.get(route) && next.node(**id).is_some())
        .map(|(_, id)| *id)
        .collect();
    changes.extend(moved.into_iter().map(|id| Change::Node { id, patch: None }));
    next.policy = Arc::new(match view.policy() {
        Some(active) if recompile => view.successor_for_nodes(compile(active.source.clone(), next), primaries),
        Some(active) => view.successor_for_nodes(active.clone(), primaries),
        None => view.successor(None, primaries),
    });
    changes.push(Change::Rules);
}

/// The nodes whose peers must get them again because `next` changes how they look to peers
/// (their capabilities).
pub(super) fn peer_caps_changed(prev: &PolicyView, next: &PolicyView, snap: &Snapshot) -> Vec<NodeId> {
    snap.nodes.keys().filter(|id| prev.peer_caps(**id) != next.peer_caps(**id)).copied().collect()
}
