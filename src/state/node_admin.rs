//! Administrator edits on nodes beyond the basics: approving routes (by hand, or by the
//! policy's `autoApprovers` when a node advertises them), tags as identity, giving nodes
//! addresses of a newly configured family (and taking away those of a removed one), and the
//! pending registrations the API's `DebugCreateNode` starts.

use std::sync::Arc;

use ipnet::IpNet;

use super::keys::valid_tag;
use super::{Change, NodeEntry, State, StateError};
use crate::model::{Node, NodeId, UserId};
use crate::tailcfg::{Hostinfo, MachineKey, NodeKey, PrivateKey, RegisterRequest};

/// The capability version `debug create-node` registrations claim (Tailscale v1.80).
const DEBUG_NODE_VERSION: u16 = 113;

/// The two exit routes; approving either approves both.
fn exit_routes() -> [IpNet; 2] {
    ["0.0.0.0/0".parse().expect("valid"), "::/0".parse().expect("valid")]
}

/// Parses routes as an administrator typed them, normalized and sorted.
fn parse_routes(routes: &[String]) -> Result<Vec<IpNet>, StateError> {
    let mut out = Vec::new();
    for text in routes.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        let route: IpNet = text.parse().map_err(|_| StateError::InvalidRoute(text.to_string()))?;
        if route.prefix_len() == 0 {
            out.extend(exit_routes());
        } else {
            out.push(route.trunc());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl State {
    /// Writes nodes edited together and publishes them as one change set.
    async fn store_nodes(&self, nodes: Vec<(Node, bool)>) -> Result<(), StateError> {
        if nodes.is_empty() {
            return Ok(());
        }
        let stored: Vec<Node> = nodes.iter().map(|(n, _)| n.clone()).collect();
        self.db.run(move |db| stored.iter().try_for_each(|n| db.update_node(n))).await?;
        let changes = nodes.iter().map(|(n, _)| Change::Node { id: n.id, patch: None }).collect();
        self.publish(
            |s| {
                for (n, online) in nodes {
                    s.put_node(NodeEntry::new(n, online));
                }
            },
            changes,
        );
        Ok(())
    }

    /// Replaces the routes an administrator approved for a node (`nodes approve-routes`).
    pub async fn set_approved_routes(&self, id: NodeId, routes: &[String]) -> Result<Arc<NodeEntry>, StateError> {
        let approved = parse_routes(routes)?;
        let _w = self.writer.lock().await;
        let entry = self.snapshot().node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        self.store_nodes(vec![(Node { approved_routes: approved, ..entry.node.clone() }, entry.online)]).await?;
        Ok(self.snapshot().node(id).cloned().expect("just published"))
    }

    /// The node with the advertised routes the policy's `autoApprovers` approve added to its
    /// approved routes; `None` when there are none to add.
    pub(super) fn auto_approved(&self, node: &Node) -> Option<Node> {
        let snap = self.snapshot();
        let active = snap.policy.policy()?;
        let mut added: Vec<IpNet> = node
            .hostinfo
            .routable_ips
            .iter()
            .filter(|r| !node.approved_routes.contains(r) && active.compiled.auto_approves(node.id, r))
            .copied()
            .collect();
        if added.is_empty() {
            return None;
        }
        added.extend(node.approved_routes.iter().copied());
        added.sort();
        added.dedup();
        Some(Node { approved_routes: added, ..node.clone() })
    }

    /// Approves what the policy's `autoApprovers` allow on every node (after a policy
    /// change). Called with the writer lock held.
    pub(super) async fn auto_approve_all(&self) -> Result<(), StateError> {
        let snap = self.snapshot();
        let updated: Vec<(Node, bool)> =
            snap.nodes.values().filter_map(|e| self.auto_approved(&e.node).map(|n| (n, e.online))).collect();
        self.store_nodes(updated).await
    }

    /// Makes a node tagged with exactly these tags (`nodes tag`). Admin-set tags are
    /// authoritative: a user-owned node becomes tagged (owned by no user, never expiring).
    /// With a policy in force, every tag must be defined in its `tagOwners`.
    pub async fn set_tags(&self, id: NodeId, tags: &[String]) -> Result<Arc<NodeEntry>, StateError> {
        let mut tags: Vec<String> = tags.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
            return Err(StateError::InvalidTag(bad.clone()));
        }
        tags.sort();
        tags.dedup();
        let _w = self.writer.lock().await;
        let snap = self.snapshot();
        let entry = snap.node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        if tags.is_empty() {
            if entry.node.is_tagged() {
                return Err(StateError::TagsRequired(id));
            }
            return Ok(entry);
        }
        if let Some(active) = snap.policy.policy() {
            if let Some(unknown) = tags.iter().find(|t| !active.source.tag_owners.contains_key(*t)) {
                return Err(StateError::TagNotInPolicy(unknown.clone()));
            }
        }
        let node = Node { tags, user_id: None, expiry: None, ..entry.node.clone() };
        self.store_nodes(vec![(node, entry.online)]).await?;
        Ok(self.snapshot().node(id).cloned().expect("just published"))
    }

    /// Gives every node an address of each configured family it lacks, and takes away those
    /// of families no longer configured (`nodes backfillips`). Returns one line per change.
    pub async fn backfill_node_ips(&self) -> Result<Vec<String>, StateError> {
        let mut w = self.writer.lock().await;
        let (want_v4, want_v6) = w.ipam.families();
        let mut updated = Vec::new();
        let mut report = Vec::new();
        for e in self.snapshot().nodes.values() {
            let mut node = e.node.clone();
            match (node.ipv4, want_v4) {
                (None, true) => node.ipv4 = w.ipam.allocate_v4()?,
                (Some(a), false) => {
                    w.ipam.release(a.into());
                    node.ipv4 = None;
                }
                _ => {}
            }
            match (node.ipv6, want_v6) {
                (None, true) => node.ipv6 = w.ipam.allocate_v6()?,
                (Some(a), false) => {
                    w.ipam.release(a.into());
                    node.ipv6 = None;
                }
                _ => {}
            }
            if node.ips() != e.node.ips() {
                let shown =
                    |ips: Vec<std::net::IpAddr>| ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                report.push(format!("{}: [{}] -> [{}]", node.given_name, shown(e.node.ips()), shown(node.ips())));
                updated.push((node, e.online));
            }
        }
        self.store_nodes(updated).await?;
        Ok(report)
    }

    /// Starts a pending registration for a made-up machine, as if a client without a key had
    /// asked to join (`debug create-node`); `auth register --auth-id ID` completes it.
    pub fn debug_create_node(
        &self,
        user: &str,
        auth_id: &str,
        name: &str,
        routes: &[String],
    ) -> Result<(UserId, MachineKey, RegisterRequest), StateError> {
        let owner = self
            .snapshot()
            .user_by_name(user)
            .map(|u| u.id)
            .ok_or_else(|| StateError::UserNotFound(user.to_string()))?;
        if !auth_id.starts_with("hskey-authreq-") || auth_id.len() <= "hskey-authreq-".len() {
            return Err(StateError::InvalidAuthId(auth_id.to_string()));
        }
        let routable_ips = routes
            .iter()
            .map(|r| r.parse::<IpNet>().map_err(|_| StateError::InvalidRoute(r.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let machine_key = MachineKey(PrivateKey::generate().public());
        let request = RegisterRequest {
            version: DEBUG_NODE_VERSION,
            node_key: NodeKey(PrivateKey::generate().public()),
            hostinfo: Some(Hostinfo { hostname: name.to_string(), routable_ips, ..Default::default() }),
            ..Default::default()
        };
        self.pending.insert(auth_id.to_string(), machine_key, request.clone())?;
        Ok((owner, machine_key, request))
    }
}
