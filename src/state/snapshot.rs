//! The NodeStore's immutable snapshot: every node and user, and the policy view, as of one
//! version. Readers load it without locks (only a node's cached wire form takes a short
//! mutex); the writer publishes a new one that shares everything unchanged (persistent maps),
//! so a write costs O(log n), not a copy of the tailnet.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::model::{Node, NodeId, User, UserId};
use crate::policy::{policy_node, PolicyNode, PolicyView};
use crate::tailcfg::{DerpMap, MachineKey, NodeKey, RawNode};

/// One node as published, with what is only known at run time.
#[derive(Debug)]
pub struct NodeEntry {
    pub node: Node,
    /// Whether the node holds at least one map stream now.
    pub online: bool,
    /// The node as its peers see it under one policy view (by epoch), serialized once.
    peer_wire: Mutex<Option<(u64, RawNode)>>,
}

impl NodeEntry {
    /// A new entry; its wire form is computed lazily.
    pub fn new(node: Node, online: bool) -> Self {
        NodeEntry { node, online, peer_wire: Mutex::new(None) }
    }

    /// The peer view under policy view `epoch`, serialized once and shared by every session
    /// that shows this version.
    pub fn peer_wire(&self, epoch: u64, render: impl FnOnce(&NodeEntry) -> RawNode) -> RawNode {
        if let Some((e, wire)) = &*self.peer_wire.lock().expect("peer wire lock") {
            if *e == epoch {
                return wire.clone();
            }
        }
        let wire = render(self);
        *self.peer_wire.lock().expect("peer wire lock") = Some((epoch, wire.clone()));
        wire
    }

    /// Whether the node key has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.node.is_expired(now)
    }
}

/// Every node and user at one version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: u64,
    pub nodes: imbl::OrdMap<NodeId, Arc<NodeEntry>>,
    pub users: imbl::OrdMap<UserId, Arc<User>>,
    pub by_node_key: imbl::HashMap<NodeKey, NodeId>,
    pub by_machine_key: imbl::HashMap<MachineKey, NodeId>,
    /// Given names with the nodes that hold them (a database taken over may hold a name
    /// twice), so that finding a free name costs a lookup, not a pass over every node.
    by_given_name: imbl::OrdSet<(String, NodeId)>,
    /// The policy's answers for these nodes.
    pub policy: Arc<PolicyView>,
    /// Nodes were added since the policy was last compiled: until the coalesced compile
    /// catches up, the policy gives them no peers and no access, and nobody sees them.
    pub policy_stale: bool,
    /// The relay regions clients are told (`derp_map`: the embedded region and the maps of
    /// `derp.urls` and `derp.paths`).
    pub derp_map: Arc<DerpMap>,
}

impl Snapshot {
    /// A snapshot holding these users and nodes (with their online status); for tests and
    /// benches that need a tailnet without a database.
    pub fn build(users: impl IntoIterator<Item = User>, nodes: impl IntoIterator<Item = (Node, bool)>) -> Snapshot {
        let mut s = Snapshot::default();
        for u in users {
            s.users.insert(u.id, Arc::new(u));
        }
        for (n, online) in nodes {
            s.put_node(NodeEntry::new(n, online));
        }
        s
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&Arc<NodeEntry>> {
        self.nodes.get(&id)
    }

    /// The node holding this node key.
    pub fn node_by_key(&self, key: &NodeKey) -> Option<&Arc<NodeEntry>> {
        self.by_node_key.get(key).and_then(|id| self.nodes.get(id))
    }

    /// Whether `key` may open a relay connection (to the embedded DERP, or to an external one
    /// asking `/verify`): a registered node whose key has not expired (nor been logged out).
    pub fn relay_admits(&self, key: &NodeKey, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.node_by_key(key).is_some_and(|e| !e.node.is_expired(now))
    }

    /// The node registered from this machine.
    pub fn node_by_machine(&self, key: &MachineKey) -> Option<&Arc<NodeEntry>> {
        self.by_machine_key.get(key).and_then(|id| self.nodes.get(id))
    }

    /// The user with this id.
    pub fn user(&self, id: UserId) -> Option<&Arc<User>> {
        self.users.get(&id)
    }

    /// Node `id` as the policy sees it.
    pub fn policy_node(&self, id: NodeId) -> Option<PolicyNode> {
        let e = self.node(id)?;
        Some(policy_node(&e.node, e.node.user_id.and_then(|u| self.user(u)).map(|u| &**u)))
    }

    /// Every node as the policy sees it.
    pub fn policy_nodes(&self) -> Vec<PolicyNode> {
        self.nodes.keys().filter_map(|id| self.policy_node(*id)).collect()
    }

    /// The user with this name.
    pub fn user_by_name(&self, name: &str) -> Option<&Arc<User>> {
        self.users.values().find(|u| u.name == name)
    }

    /// Whether a node already uses this DNS label (other than `except`).
    pub fn given_name_taken(&self, name: &str, except: Option<NodeId>) -> bool {
        let from = (name.to_string(), NodeId::MIN);
        self.by_given_name.range(from..).take_while(|(n, _)| n == name).any(|(_, id)| Some(*id) != except)
    }

    /// Inserts or replaces a node, keeping the key indexes right.
    pub fn put_node(&mut self, entry: NodeEntry) {
        if let Some(old) = self.nodes.get(&entry.node.id) {
            if old.node.node_key != entry.node.node_key {
                self.by_node_key.remove(&old.node.node_key);
            }
            if old.node.machine_key != entry.node.machine_key {
                self.by_machine_key.remove(&old.node.machine_key);
            }
            if old.node.given_name != entry.node.given_name {
                self.by_given_name.remove(&(old.node.given_name.clone(), old.node.id));
            }
        }
        self.by_node_key.insert(entry.node.node_key, entry.node.id);
        self.by_machine_key.insert(entry.node.machine_key, entry.node.id);
        self.by_given_name.insert((entry.node.given_name.clone(), entry.node.id));
        self.nodes.insert(entry.node.id, Arc::new(entry));
    }

    /// Clears references to deleted pre-auth keys from nodes (the database does the same).
    pub(super) fn forget_auth_keys(&mut self, deleted: &[u64]) {
        let stale: Vec<Arc<NodeEntry>> =
            self.nodes.values().filter(|e| e.node.auth_key_id.is_some_and(|k| deleted.contains(&k))).cloned().collect();
        for e in stale {
            let node = Node { auth_key_id: None, ..e.node.clone() };
            self.put_node(NodeEntry::new(node, e.online));
        }
    }

    /// Removes a node and its index entries.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Arc<NodeEntry>> {
        let old = self.nodes.remove(&id)?;
        self.by_node_key.remove(&old.node.node_key);
        self.by_machine_key.remove(&old.node.machine_key);
        self.by_given_name.remove(&(old.node.given_name.clone(), old.node.id));
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;

    #[test]
    fn given_names_are_found_through_their_index() {
        let named = |i: u32, name: &str| (Node { given_name: name.into(), ..node(i, None) }, false);
        let mut s = Snapshot::build([], [named(1, "web"), named(2, "web"), named(3, "db")]);
        assert!(s.given_name_taken("web", None));
        assert!(s.given_name_taken("web", Some(1)), "a name held twice is taken for either holder");
        assert!(!s.given_name_taken("db", Some(3)), "a node's own name is free for it");
        assert!(!s.given_name_taken("we", None) && !s.given_name_taken("webb", None));
        s.remove_node(2);
        assert!(!s.given_name_taken("web", Some(1)));
        let renamed = NodeEntry::new(Node { given_name: "api".into(), ..node(1, None) }, false);
        s.put_node(renamed);
        assert!(!s.given_name_taken("web", None) && s.given_name_taken("api", None));
    }
}
