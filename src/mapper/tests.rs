//! Snapshots of the deltas one session sends its client for the events a tailnet sees: a
//! peer's presence and home DERP, a peer changed and a new one with its owner, a removal, its
//! own node changed, a new DERP map, a policy that opens and then closes the tailnet again. A change to any of
//! these messages' wire shape shows up as a snapshot diff.

use serde_json::{json, Value};

use super::{full_map, SessionView};
use crate::state::{Change, ChangeSet, NodeEntry, Snapshot};
use crate::tailcfg::PeerChange;
use crate::testing::{context, node, t0, tailnet, with_policy};

/// alice's nodes may reach the tagged server on port 22, and nothing else is allowed.
const SERVER_ONLY: &str = r#"{
  "tagOwners": {"tag:server": ["alice@"]},
  "acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:server:22"]}],
}"#;
const OPEN: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

/// Node 1's session: applies each step's changes to the snapshot, and records the delta sent.
struct Recorder {
    snap: Snapshot,
    view: SessionView,
    steps: Vec<Value>,
}

impl Recorder {
    fn new(snap: Snapshot) -> Recorder {
        let first = full_map(&snap, snap.node(1).unwrap(), &context(), t0());
        let view = SessionView::new(1, &snap, &first, t0());
        Recorder { snap, view, steps: Vec::new() }
    }

    fn step(&mut self, event: &str, changes: Vec<Change>) {
        self.view.apply(&ChangeSet { version: self.steps.len() as u64 + 2, changes });
        let delta = self.view.flush(&self.snap, &context(), t0()).expect("the session goes on");
        self.steps.push(json!({ "event": event, "delta": serde_json::to_value(&delta).unwrap() }));
    }

    fn assert_snapshot(self, name: &str) {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../../snapshots");
        settings.bind(|| insta::assert_json_snapshot!(name, self.steps));
    }
}

#[test]
fn deltas_for_node_changes() {
    let mut r = Recorder::new(tailnet());

    let offline = crate::model::Node { last_seen: Some(t0()), ..r.snap.node(2).unwrap().node.clone() };
    r.snap.put_node(NodeEntry::new(offline, false));
    let presence = PeerChange { node_id: 2, online: Some(false), last_seen: Some(t0()), ..Default::default() };
    let derp = PeerChange { node_id: 2, derp_region: 900, ..Default::default() };
    r.step(
        "peer 2 went offline and moved to DERP region 900",
        vec![Change::Node { id: 2, patch: Some(presence) }, Change::Node { id: 2, patch: Some(derp) }],
    );

    let mut renamed = r.snap.node(2).unwrap().node.clone();
    renamed.given_name = "renamed".into();
    r.snap.put_node(NodeEntry::new(renamed, false));
    r.snap.users.insert(2, std::sync::Arc::new(crate::testing::user(2, "bob")));
    r.snap.put_node(NodeEntry::new(node(4, Some(2)), true));
    r.step(
        "peer 2 renamed, and bob's node 4 joined",
        vec![Change::Node { id: 2, patch: None }, Change::Node { id: 4, patch: None }],
    );

    r.snap.remove_node(3);
    r.step("peer 3 deleted", vec![Change::Removed(3)]);

    let mut me = r.snap.node(1).unwrap().node.clone();
    me.hostinfo.hostname = "laptop".into();
    r.snap.put_node(NodeEntry::new(me, true));
    r.step("node 1 itself changed", vec![Change::Node { id: 1, patch: None }]);

    let mut derp = crate::tailcfg::DerpMap::clone(&r.snap.derp_map);
    derp.regions.remove(&999);
    r.snap.derp_map = std::sync::Arc::new(derp);
    r.step("the DERP map changed", vec![Change::DerpMap]);

    r.assert_snapshot("deltas_for_node_changes");
}

#[test]
fn deltas_for_policy_changes() {
    let mut r = Recorder::new(with_policy(tailnet(), SERVER_ONLY));
    r.snap = with_policy(r.snap.clone(), OPEN);
    r.step("the policy opened the tailnet", vec![Change::Rules]);
    r.snap = with_policy(r.snap.clone(), SERVER_ONLY);
    r.step("the policy closed it again", vec![Change::Rules]);
    r.assert_snapshot("deltas_for_policy_changes");
}
