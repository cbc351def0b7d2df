//! Writes on nodes: what a map request reports, online status, logout, expiry, rename,
//! delete, and the clean-up of ephemeral nodes that stay away.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Change, NodeEntry, State, StateError};
use crate::model::{Node, NodeId};
use crate::names::is_valid_label;
use crate::tailcfg::{MapRequest, PeerChange};

impl State {
    /// Writes a node and publishes it with the given peer-facing change.
    async fn store_node(
        &self,
        node: Node,
        online: bool,
        patch: Option<PeerChange>,
    ) -> Result<Arc<NodeEntry>, StateError> {
        let stored = node.clone();
        self.db.run(move |db| db.update_node(&stored)).await?;
        let id = node.id;
        self.publish(|s| s.put_node(NodeEntry::new(node, online)), vec![Change::Node { id, patch }]);
        Ok(self.snapshot().node(id).cloned().expect("just published"))
    }

    /// Applies what a map request reports (Hostinfo, endpoints, disco key, home DERP).
    /// Peers get a patch when only endpoints, disco key or home DERP changed, the whole node
    /// when anything else they see changed, and nothing when nothing did.
    pub async fn apply_map_request(&self, id: NodeId, req: &MapRequest) -> Result<(), StateError> {
        let _w = self.writer.lock().await;
        let current = self.snapshot().node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        let old = &current.node;
        let mut node = old.clone();
        if let Some(h) = &req.hostinfo {
            node.hostinfo = h.clone();
        }
        if let Some(e) = &req.endpoints {
            node.endpoints = e.clone();
        }
        if let Some(d) = req.disco_key.filter(|d| !d.is_zero()) {
            node.disco_key = Some(d);
        }
        if let Some(approved) = self.auto_approved(&node) {
            node = approved;
        }
        if node == *old {
            return Ok(());
        }
        let mut patch = PeerChange { node_id: id, ..Default::default() };
        if node.endpoints != old.endpoints {
            patch.endpoints = Some(node.endpoints.clone());
        }
        if node.disco_key != old.disco_key {
            patch.disco_key = node.disco_key;
        }
        if node.home_derp() != old.home_derp() {
            patch.derp_region = node.home_derp();
        }
        let visible_to_peers = |n: &Node| {
            let mut h = n.hostinfo.clone();
            h.net_info = None;
            h
        };
        let change = if visible_to_peers(&node) != visible_to_peers(old) {
            Some(None)
        } else if patch != (PeerChange { node_id: id, ..Default::default() }) {
            Some(Some(patch))
        } else {
            None // only details peers do not see (DERP latencies): store, tell nobody
        };
        if super::runtime::only_reported_fields_differ(old, &node) {
            self.persist_reported_later(id);
        } else {
            let stored = node.clone();
            self.db.run(move |db| db.update_node(&stored)).await?;
        }
        let changes = change.map(|patch| Change::Node { id, patch }).into_iter().collect();
        self.publish(|s| s.put_node(NodeEntry::new(node, current.online)), changes);
        Ok(())
    }

    /// Records that a node opened a map stream; the first one makes it online.
    pub async fn connect(&self, id: NodeId) -> Result<(), StateError> {
        let mut w = self.writer.lock().await;
        let entry = self.snapshot().node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        *w.sessions.epoch.entry(id).or_default() += 1;
        let count = w.sessions.count.entry(id).or_default();
        *count += 1;
        if *count > 1 {
            return Ok(());
        }
        let node = entry.node.clone();
        let patch = PeerChange { node_id: id, online: Some(true), ..Default::default() };
        self.publish(|s| s.put_node(NodeEntry::new(node, true)), vec![Change::Node { id, patch: Some(patch) }]);
        Ok(())
    }

    /// Records that a node closed a map stream; the last one makes it offline, stamps its
    /// last-seen time and, for an ephemeral node, schedules its removal.
    pub async fn disconnect(self: &Arc<Self>, id: NodeId) {
        let mut w = self.writer.lock().await;
        let Some(count) = w.sessions.count.get_mut(&id) else { return };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        w.sessions.count.remove(&id);
        let epoch = w.sessions.epoch.get(&id).copied().unwrap_or_default();
        let Some(entry) = self.snapshot().node(id).cloned() else { return };
        let now = Utc::now();
        let node = Node { last_seen: Some(now), ..entry.node.clone() };
        let patch = PeerChange { node_id: id, online: Some(false), last_seen: Some(now), ..Default::default() };
        self.publish(|s| s.put_node(NodeEntry::new(node, false)), vec![Change::Node { id, patch: Some(patch) }]);
        self.persist_reported_later(id);
        if entry.node.ephemeral {
            self.schedule_ephemeral_cleanup(id, epoch);
        }
    }

    /// Deletes an ephemeral node if it stays offline for the inactivity timeout.
    fn schedule_ephemeral_cleanup(self: &Arc<Self>, id: NodeId, epoch: u64) {
        let state = Arc::clone(self);
        let wait = self.config.node.ephemeral.inactivity_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let w = state.writer.lock().await;
            let back =
                w.sessions.count.contains_key(&id) || w.sessions.epoch.get(&id).copied().unwrap_or_default() != epoch;
            drop(w);
            if !back {
                match state.delete_node(id).await {
                    Ok(()) => tracing::info!(node = id, "removed ephemeral node after inactivity"),
                    Err(StateError::NodeNotFound(_)) => {}
                    Err(e) => tracing::warn!(node = id, error = %e, "could not remove ephemeral node"),
                }
            }
        });
    }

    /// At start-up every ephemeral node is offline: schedule them all.
    pub(super) async fn schedule_ephemeral_cleanup_for_all(self: &Arc<Self>) {
        for e in self.snapshot().nodes.values().filter(|e| e.node.ephemeral) {
            self.schedule_ephemeral_cleanup(e.node.id, 0);
        }
    }

    /// Logs a node out: an ephemeral node is deleted, any other one has its key expired now.
    pub async fn logout(&self, id: NodeId) -> Result<Option<Arc<NodeEntry>>, StateError> {
        let entry = self.snapshot().node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        if entry.node.ephemeral {
            self.delete_node(id).await?;
            return Ok(None);
        }
        self.expire_node(id, Some(Utc::now())).await.map(Some)
    }

    /// Sets when a node's key expires (`None`: never).
    pub async fn expire_node(&self, id: NodeId, at: Option<DateTime<Utc>>) -> Result<Arc<NodeEntry>, StateError> {
        let _w = self.writer.lock().await;
        let entry = self.snapshot().node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        let node = Node { expiry: at, ..entry.node.clone() };
        self.store_node(node, entry.online, None).await
    }

    /// Gives a node a new DNS name, unique in the tailnet.
    pub async fn rename_node(&self, id: NodeId, name: &str) -> Result<Arc<NodeEntry>, StateError> {
        if !is_valid_label(name) {
            return Err(StateError::InvalidNodeName(name.to_string()));
        }
        let _w = self.writer.lock().await;
        let snap = self.snapshot();
        let entry = snap.node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        if snap.given_name_taken(name, Some(id)) {
            return Err(StateError::NodeNameTaken(name.to_string()));
        }
        let node = Node { given_name: name.to_string(), ..entry.node.clone() };
        self.store_node(node, entry.online, None).await
    }

    /// Deletes a node; its own map streams end and its peers drop it.
    pub async fn delete_node(&self, id: NodeId) -> Result<(), StateError> {
        let mut w = self.writer.lock().await;
        let entry = self.snapshot().node(id).cloned().ok_or(StateError::NodeNotFound(id))?;
        self.db.run(move |db| db.delete_node(id)).await?;
        for ip in entry.node.ips() {
            w.ipam.release(ip);
        }
        self.publish(
            |s| {
                s.remove_node(id);
            },
            vec![Change::Removed(id)],
        );
        Ok(())
    }

    /// Republishes nodes whose key expired in `(since, now]`, so maps show them expired.
    pub async fn publish_expired(&self, since: DateTime<Utc>, now: DateTime<Utc>) {
        let _w = self.writer.lock().await;
        let due: Vec<Arc<NodeEntry>> = self
            .snapshot()
            .nodes
            .values()
            .filter(|e| e.node.expiry.is_some_and(|x| x > since && x <= now))
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        let changes = due.iter().map(|e| Change::Node { id: e.node.id, patch: None }).collect();
        self.publish(
            |s| {
                for e in &due {
                    s.put_node(NodeEntry::new(e.node.clone(), e.online));
                }
            },
            changes,
        );
    }
}
