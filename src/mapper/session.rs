//! What one map session has sent, and the delta it owes its client. Change events are folded
//! in as they arrive (bursts coalesce: several patches to one peer become one, a full update
//! absorbs patches); `flush` renders the delta against the latest snapshot. When the policy's
//! answers change, the session compares its client's peer list, packet filter, SSH policy and
//! capabilities with the new ones and sends only what differs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use roaring::RoaringTreemap;

use super::render::{peer_wire, self_node, shows, user_profiles, TAGGED_DEVICES_USER_ID};
use super::MapContext;
use crate::model::NodeId;
use crate::policy::{compact, NodeRules};
use crate::state::{Change, ChangeSet, Snapshot};
use crate::tailcfg::{FilterRule, MapResponse, PeerChange, SshPolicy};

/// A session's record of its client's view, and the changes not yet sent.
#[derive(Debug)]
pub struct SessionView {
    me: NodeId,
    /// The peers the client holds: a compressed bitmap, a few bytes per peer, since every
    /// session keeps one.
    known: RoaringTreemap,
    /// The policy view the client's rules come from, and those rules.
    epoch: u64,
    rules: Arc<NodeRules>,
    filter: Option<Arc<Vec<FilterRule>>>,
    ssh: Option<Arc<SshPolicy>>,
    full: BTreeSet<NodeId>,
    patches: BTreeMap<NodeId, PeerChange>,
    /// Peers whose presence (online, last seen) changed; their current presence is read from
    /// the snapshot at flush. In a reconnect storm every session hears of every peer, twice:
    /// noting one is a push, and repeats are folded away now and then (`note_presence`).
    presence: Vec<NodeId>,
    removed: BTreeSet<NodeId>,
    self_dirty: bool,
    /// The client was last sent itself expired (and so no peers).
    sent_expired: bool,
    rules_dirty: bool,
    /// The DERP map changed since the client was sent it.
    derp_dirty: bool,
    resync: bool,
    /// Something besides peers' presence (online, last seen) waits to be sent.
    urgent: bool,
}

impl SessionView {
    /// The view after the client received `first` (a full map built at `now`) for node `me`.
    pub fn new(me: NodeId, snap: &Snapshot, first: &MapResponse, now: DateTime<Utc>) -> Self {
        let rules = snap.policy.rules(me);
        let known = match snap.node(me) {
            Some(e) => {
                // The snapshot holds nodes in id order, from which roaring builds the set by
                // appending instead of searching for each id's place.
                let ids = snap.nodes.values().filter(|p| shows(&rules, e, p, now)).map(|p| p.node.id);
                compact(RoaringTreemap::from_sorted_iter(ids).expect("the snapshot holds nodes in id order"))
            }
            None => RoaringTreemap::new(),
        };
        SessionView {
            me,
            known,
            epoch: snap.policy.epoch,
            rules: rules.clone(),
            filter: first.packet_filter.clone(),
            ssh: first.ssh_policy.clone(),
            full: BTreeSet::new(),
            patches: BTreeMap::new(),
            presence: Vec::new(),
            removed: BTreeSet::new(),
            self_dirty: false,
            sent_expired: snap.node(me).is_some_and(|e| e.is_expired(now)),
            rules_dirty: false,
            derp_dirty: false,
            resync: false,
            urgent: false,
        }
    }

    /// Folds one published change set into the pending delta.
    pub fn apply(&mut self, set: &ChangeSet) {
        for change in &set.changes {
            match change {
                Change::Node { id, .. } if *id == self.me => {
                    self.self_dirty = true;
                    self.urgent = true;
                }
                Change::Node { id, patch: Some(p) } if p.is_presence_only() => self.note_presence(*id),
                Change::Node { id, patch: Some(p) } => {
                    self.urgent = true;
                    if self.full.contains(id) || !self.known.contains(*id) {
                        self.full.insert(*id);
                    } else {
                        self.patches.entry(*id).and_modify(|q| q.merge(p.clone())).or_insert_with(|| p.clone());
                    }
                }
                Change::Node { id, patch: None } => {
                    self.urgent = true;
                    self.patches.remove(id);
                    self.removed.remove(id);
                    self.full.insert(*id);
                }
                Change::Removed(id) => {
                    self.urgent = true;
                    self.full.remove(id);
                    self.patches.remove(id);
                    self.removed.insert(*id);
                }
                Change::Everything => {
                    self.resync = true;
                    self.urgent = true;
                }
                // Noticed at flush, where the snapshot's policy view has a new epoch.
                Change::Rules => {
                    self.rules_dirty = true;
                    self.urgent = true;
                }
                Change::DerpMap => {
                    self.derp_dirty = true;
                    self.urgent = true;
                }
            }
        }
    }

    /// Notes that peer `id`'s presence changed. When the list fills its allocation, repeats
    /// are folded away first, so it holds each peer about once however long the burst.
    fn note_presence(&mut self, id: NodeId) {
        if self.presence.len() == self.presence.capacity() && self.presence.len() >= 64 {
            self.presence.sort_unstable();
            self.presence.dedup();
        }
        self.presence.push(id);
    }

    /// The session fell behind the change stream: compare everything at the next flush.
    pub fn lagged(&mut self) {
        self.resync = true;
        self.urgent = true;
    }

    /// Whether what waits is more than peers coming online, going offline or being seen:
    /// those can wait for a longer batch, everything else is sent promptly.
    pub fn is_urgent(&self) -> bool {
        self.urgent
    }

    /// Whether anything waits to be sent.
    pub fn has_pending(&self) -> bool {
        self.self_dirty
            || self.rules_dirty
            || self.derp_dirty
            || self.resync
            || !self.full.is_empty()
            || !self.patches.is_empty()
            || !self.presence.is_empty()
            || !self.removed.is_empty()
    }

    /// Renders the pending delta against `snap`. `None` if the session's own node is gone
    /// (the stream must end); an empty response if nothing the client sees changed.
    pub fn flush(&mut self, snap: &Snapshot, ctx: &MapContext, now: DateTime<Utc>) -> Option<MapResponse> {
        let me = snap.node(self.me)?.clone();
        self.urgent = false;
        let view = &snap.policy;
        let rules = view.rules(self.me);
        // A resync (users renamed, or anything else that may touch every node) sends every
        // shown peer again, with the profiles of their users and of this node's own.
        let resync = std::mem::take(&mut self.resync);
        // An expired node sees no one; one whose expiry was lifted sees its peers again.
        let expired = me.is_expired(now);
        let expiry_turned = self.self_dirty && (expired || self.sent_expired);
        if self.self_dirty {
            self.sent_expired = expired;
        }
        if resync || expiry_turned {
            self.self_dirty = true;
            for p in snap.nodes.values().filter(|p| p.node.id != self.me) {
                self.full.insert(p.node.id);
            }
            self.removed.extend(self.known.iter().filter(|id| snap.node(*id).is_none()));
        }
        let rules_changed = std::mem::take(&mut self.rules_dirty) && view.epoch != self.epoch;
        if rules_changed {
            self.epoch = view.epoch;
            // Peers that appear or disappear: only those whose place in the peer list changed
            // when both lists are known, else every node is compared. Peers whose routes
            // depend on the viewer are sent again.
            if !Arc::ptr_eq(&self.rules, &rules) {
                match self.rules.peers_differing(&rules) {
                    Some(differing) => self.full.extend(differing.iter().filter(|id| *id != self.me)),
                    None => {
                        for p in snap.nodes.values().filter(|p| p.node.id != self.me) {
                            if shows(&rules, &me, p, now) != self.known.contains(p.node.id) {
                                self.full.insert(p.node.id);
                            }
                        }
                    }
                }
                // The capabilities the client holds are those of the rules it had.
                if self.rules.caps != rules.caps {
                    self.self_dirty = true;
                }
                self.rules = rules.clone();
            }
            self.full.extend(view.viewer_dependent().iter().filter(|id| **id != self.me && self.known.contains(**id)));
        }
        // Presence as it is now; a peer sent whole carries its own, and one the client does
        // not hold is sent whole if it should now see it.
        let mut presence = std::mem::take(&mut self.presence);
        presence.sort_unstable();
        presence.dedup();
        for id in presence {
            if self.full.contains(&id) {
                continue;
            }
            if !self.known.contains(id) {
                self.full.insert(id);
            } else if let Some(p) = snap.node(id) {
                let patch = self.patches.entry(id).or_insert_with(|| PeerChange { node_id: id, ..Default::default() });
                patch.online = Some(p.online);
                patch.last_seen = if p.online { None } else { p.node.last_seen };
            }
        }
        let mut resp = MapResponse::default();
        let mut new_users = Vec::new();
        if resync {
            new_users.push(me.node.user_id.unwrap_or(TAGGED_DEVICES_USER_ID));
        }
        let peers_before = self.known.len();
        for id in std::mem::take(&mut self.full) {
            match snap.node(id).filter(|p| shows(&rules, &me, p, now)) {
                Some(p) => {
                    resp.peers_changed.push(peer_wire(self.me, p, ctx, view, now));
                    if self.known.insert(id) || resync {
                        new_users.push(p.node.user_id.unwrap_or(TAGGED_DEVICES_USER_ID));
                    }
                }
                None => {
                    if self.known.remove(id) {
                        resp.peers_removed.push(id);
                    }
                }
            }
        }
        for (id, patch) in std::mem::take(&mut self.patches) {
            if self.known.contains(id) && !resp.peers_removed.contains(&id) {
                resp.peers_changed_patch.push(patch);
            }
        }
        for id in std::mem::take(&mut self.removed) {
            if self.known.remove(id) {
                resp.peers_removed.push(id);
            }
        }
        if self.known.len() != peers_before || !resp.peers_removed.is_empty() {
            self.known.optimize();
        }
        if rules_changed || self.self_dirty {
            if self.filter.as_ref() != Some(&rules.filter) {
                self.filter = Some(rules.filter.clone());
                resp.packet_filter = Some(rules.filter.clone());
            }
            if self.ssh != rules.ssh {
                self.ssh = rules.ssh.clone();
                resp.ssh_policy = Some(rules.ssh.clone().unwrap_or_default());
            }
        }
        if std::mem::take(&mut self.self_dirty) {
            resp.node = Some(self_node(&me, ctx, view, now));
        }
        if std::mem::take(&mut self.derp_dirty) {
            resp.derp_map = Some(snap.derp_map.clone());
        }
        resp.user_profiles = user_profiles(snap, new_users);
        Some(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::super::full_map;
    use super::*;
    use crate::state::NodeEntry;
    use crate::testing::{context, node, t0, tailnet, with_policy};

    fn session() -> (Snapshot, SessionView) {
        let snap = tailnet();
        let first = full_map(&snap, snap.node(1).unwrap(), &context(), t0());
        let view = SessionView::new(1, &snap, &first, t0());
        (snap, view)
    }

    fn set(changes: Vec<Change>) -> ChangeSet {
        ChangeSet { version: 1, changes }
    }

    #[test]
    fn patches_coalesce_and_never_carry_peers() {
        let (mut snap, mut view) = session();
        let offline = crate::model::Node { last_seen: Some(t0()), ..snap.node(2).unwrap().node.clone() };
        snap.put_node(NodeEntry::new(offline, false));
        let p1 = PeerChange { node_id: 2, online: Some(false), last_seen: Some(t0()), ..Default::default() };
        let p2 = PeerChange { node_id: 2, derp_region: 900, ..Default::default() };
        view.apply(&set(vec![Change::Node { id: 2, patch: Some(p1) }]));
        assert!(view.has_pending() && !view.is_urgent(), "presence alone may wait for a longer batch");
        view.apply(&set(vec![Change::Node { id: 2, patch: Some(p2) }]));
        assert!(view.is_urgent(), "a new home DERP is sent promptly");
        let d = view.flush(&snap, &context(), t0()).unwrap();
        assert!(d.peers.is_none(), "a delta never carries Peers");
        assert_eq!(d.peers_changed_patch.len(), 1);
        assert_eq!(d.peers_changed_patch[0].online, Some(false), "presence is the snapshot's");
        assert_eq!(d.peers_changed_patch[0].last_seen, Some(t0()));
        assert_eq!(d.peers_changed_patch[0].derp_region, 900);
        assert!(d.node.is_none() && d.packet_filter.is_none());
        assert!(!view.has_pending());
    }

    #[test]
    fn full_change_absorbs_patches_and_new_peers_bring_their_user() {
        let (mut snap, mut view) = session();
        view.apply(&set(vec![Change::Node {
            id: 2,
            patch: Some(PeerChange { node_id: 2, online: Some(false), ..Default::default() }),
        }]));
        view.apply(&set(vec![Change::Node { id: 2, patch: None }]));
        snap.put_node(NodeEntry::new(node(4, Some(1)), true));
        view.apply(&set(vec![Change::Node { id: 4, patch: Some(PeerChange { node_id: 4, ..Default::default() }) }]));
        let d = view.flush(&snap, &context(), t0()).unwrap();
        assert!(d.peers_changed_patch.is_empty());
        let ids: Vec<u64> = d
            .peers_changed
            .iter()
            .map(|r| serde_json::from_str::<serde_json::Value>(r.0.get()).unwrap()["ID"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, vec![2, 4], "a patch for an unknown peer becomes the whole node");
        assert_eq!(d.user_profiles.len(), 1);
    }

    #[test]
    fn removals_are_sent_once_and_own_removal_ends_the_session() {
        let (mut snap, mut view) = session();
        snap.remove_node(3);
        view.apply(&set(vec![Change::Removed(3), Change::Node { id: 3, patch: None }]));
        let d = view.flush(&snap, &context(), t0()).unwrap();
        assert_eq!(d.peers_removed, vec![3]);
        view.apply(&set(vec![Change::Removed(3)]));
        assert!(view.flush(&snap, &context(), t0()).unwrap().is_empty());
        snap.remove_node(1);
        view.apply(&set(vec![Change::Removed(1)]));
        assert!(view.flush(&snap, &context(), t0()).is_none());
    }

    #[test]
    fn own_changes_resend_the_node_but_not_an_unchanged_filter() {
        let (snap, mut view) = session();
        view.apply(&set(vec![Change::Node { id: 1, patch: None }]));
        let d = view.flush(&snap, &context(), t0()).unwrap();
        assert_eq!(d.node.as_ref().map(|n| n.id), Some(1));
        assert!(d.packet_filter.is_none());
    }

    /// A resync (after a user was renamed) sent only the profiles of users new to the client,
    /// so clients kept showing the old name.
    #[test]
    fn regression_a_resync_kept_a_renamed_users_old_profile() {
        let (mut snap, mut view) = session();
        snap.users.insert(1, Arc::new(crate::testing::user(1, "alicia")));
        view.apply(&set(vec![Change::Everything]));
        let d = view.flush(&snap, &context(), t0()).unwrap();
        let names: Vec<&str> = d.user_profiles.iter().map(|p| p.login_name.as_str()).collect();
        assert!(names.contains(&"alicia@"), "the renamed user's profile is sent again: {names:?}");
    }

    #[test]
    fn lagging_resyncs_by_comparison_not_a_full_map() {
        let (mut snap, mut view) = session();
        snap.remove_node(2);
        view.lagged();
        let d = view.flush(&snap, &context(), t0()).unwrap();
        assert!(d.peers.is_none());
        assert_eq!(d.peers_removed, vec![2]);
        assert_eq!(d.peers_changed.len(), 1);
    }

    /// Expired peers are unroutable and an expired node sees no one. Pins a bug: when the
    /// admin lifted a node's expiry, its peers were not sent again, so it stayed alone.
    #[test]
    fn regression_a_lifted_expiry_left_the_node_without_peers() {
        let (mut snap, mut view) = session();
        let mut two = crate::testing::node(2, Some(1));
        two.expiry = Some(t0() - chrono::Duration::seconds(1));
        snap.put_node(NodeEntry::new(two, true));
        view.apply(&set(vec![Change::Node { id: 2, patch: None }]));
        let d = view.flush(&snap, &context(), t0()).unwrap();
        let peer: serde_json::Value = serde_json::from_str(d.peers_changed[0].0.get()).unwrap();
        assert_eq!(peer["Expired"], true);
        assert_eq!(peer["AllowedIPs"], serde_json::json!([]), "an expired peer is unroutable");
        let mut me = crate::testing::node(1, Some(1));
        me.expiry = Some(t0() - chrono::Duration::seconds(1));
        snap.put_node(NodeEntry::new(me, true));
        view.apply(&set(vec![Change::Node { id: 1, patch: None }]));
        let d = view.flush(&snap, &context(), t0()).unwrap();
        assert_eq!(d.peers_removed, vec![2, 3]);
        assert!(d.node.unwrap().expired);
        // The admin lifts the expiry: the node sees its peers again.
        let mut me = crate::testing::node(1, Some(1));
        me.expiry = None;
        snap.put_node(NodeEntry::new(me, true));
        view.apply(&set(vec![Change::Node { id: 1, patch: None }]));
        let d = view.flush(&snap, &context(), t0()).unwrap();
        assert!(!d.node.unwrap().expired);
        assert_eq!(peer_ids(&d.peers_changed), vec![2, 3], "every peer is sent again");
    }

    /// alice's nodes may reach the tagged server on port 22, and nothing else is allowed.
    const SERVER_ONLY: &str = r#"{
      "tagOwners": {"tag:server": ["alice@"]},
      "acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:server:22"]}],
    }"#;
    const OPEN: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

    fn peer_ids(raw: &[crate::tailcfg::RawNode]) -> Vec<u64> {
        raw.iter()
            .map(|r| serde_json::from_str::<serde_json::Value>(r.0.get()).unwrap()["ID"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn the_policy_decides_peers_and_filters() {
        let snap = with_policy(tailnet(), SERVER_ONLY);
        let alice = full_map(&snap, snap.node(1).unwrap(), &context(), t0());
        assert_eq!(peer_ids(alice.peers.as_ref().unwrap()), vec![3], "alice sees the server, not her other node");
        assert!(alice.packet_filter.as_ref().unwrap().is_empty(), "nothing may reach alice");
        let server = full_map(&snap, snap.node(3).unwrap(), &context(), t0());
        assert_eq!(peer_ids(server.peers.as_ref().unwrap()), vec![1, 2], "the server sees who may reach it");
        let filter = serde_json::to_value(server.packet_filter.as_ref().unwrap()).unwrap();
        assert_eq!(
            filter[0]["SrcIPs"],
            serde_json::json!(["100.64.0.1", "100.64.0.2", "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2"])
        );
        assert_eq!(filter[0]["DstPorts"][0]["Ports"], serde_json::json!({"First": 22, "Last": 22}));
    }

    #[test]
    fn policy_changes_arrive_as_deltas_and_unchanged_rules_are_not_resent() {
        let snap = with_policy(tailnet(), SERVER_ONLY);
        let first = full_map(&snap, snap.node(1).unwrap(), &context(), t0());
        let mut view = SessionView::new(1, &snap, &first, t0());
        let rules = || set(vec![Change::Rules]);

        let open = with_policy(snap.clone(), OPEN);
        view.apply(&rules());
        let d = view.flush(&open, &context(), t0()).unwrap();
        assert_eq!(peer_ids(&d.peers_changed), vec![2], "only the newly visible peer is sent");
        assert!(d.peers.is_none() && d.peers_removed.is_empty());
        assert!(!d.packet_filter.unwrap().is_empty(), "alice may now be reached");

        let same = with_policy(open.clone(), OPEN);
        view.apply(&rules());
        assert!(view.flush(&same, &context(), t0()).unwrap().is_empty(), "same answers: nothing is sent");

        let closed = with_policy(same.clone(), SERVER_ONLY);
        view.apply(&rules());
        let d = view.flush(&closed, &context(), t0()).unwrap();
        assert_eq!(d.peers_removed, vec![2]);
        assert!(d.peers_changed.is_empty());
        assert_eq!(d.packet_filter.as_deref(), Some(&Vec::new()));
    }
}
