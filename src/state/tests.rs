//! Unit tests of the writer: registration rules, persistence and the change events published.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::config::Config;
use crate::db::testing::storage_tests;
use crate::db::Db;
use crate::tailcfg::{Hostinfo, MachineKey, MapRequest, NetInfo, NodeKey, RegisterRequest};

async fn state(db: Db) -> Arc<State> {
    let mut c = Config::embedded(std::path::Path::new("/nonexistent"));
    c.node.ephemeral.inactivity_timeout = Duration::from_millis(50);
    State::load(Arc::new(c), db).await.unwrap()
}

use crate::testing::register_request as req;

async fn key(s: &State, user: u64, reusable: bool, ephemeral: bool) -> String {
    s.create_pre_auth_key(Some(user), reusable, ephemeral, None, Vec::new()).await.unwrap().1
}

storage_tests!(
    wrong_expired_and_used_keys_are_refused_and_leave_nothing,
    known_node_re_registers_without_a_key_and_keeps_its_address,
    another_machine_cannot_take_a_node_key,
    logout_expires_and_rotation_needs_auth,
    interactive_registration_waits_for_approval,
    map_updates_publish_patches_or_full_changes,
    reported_fields_are_written_in_batches,
    ephemeral_nodes_are_removed_after_disconnect,
    users_with_nodes_cannot_be_deleted_and_keys_hold_no_secret,
    the_primary_router_fails_over_and_auto_approvers_approve,
);

fn authorized(r: Result<RegisterOutcome, RegisterError>) -> Arc<NodeEntry> {
    match r {
        Ok(RegisterOutcome::Authorized(e)) => e,
        other => panic!("expected authorized, got {other:?}"),
    }
}

async fn wrong_expired_and_used_keys_are_refused_and_leave_nothing(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let bad = s.register(MachineKey([1; 32]), req(1, "hskey-auth-nope")).await;
    assert!(matches!(bad, Err(RegisterError::InvalidKey)));
    let one_shot = key(&s, u.id, false, false).await;
    authorized(s.register(MachineKey([1; 32]), req(1, &one_shot)).await);
    let again = s.register(MachineKey([2; 32]), req(2, &one_shot)).await;
    assert!(matches!(again, Err(RegisterError::UsedKey)), "{again:?}");
    let (k, expired) = s.create_pre_auth_key(Some(u.id), true, false, Some(Utc::now()), vec![]).await.unwrap();
    assert!(k.expiration.is_some());
    assert!(matches!(s.register(MachineKey([3; 32]), req(3, &expired)).await, Err(RegisterError::ExpiredKey)));
    assert_eq!(s.snapshot().nodes.len(), 1);
    assert_eq!(s.db.nodes().unwrap().len(), 1);
}

async fn known_node_re_registers_without_a_key_and_keeps_its_address(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, false, false).await;
    let first = authorized(s.register(MachineKey([1; 32]), req(1, &k)).await);
    let again = authorized(s.register(MachineKey([1; 32]), req(1, "")).await);
    assert_eq!(first.node.id, again.node.id);
    assert_eq!(first.node.ipv4, again.node.ipv4);
    assert_eq!(first.node.ipv4.unwrap().to_string(), "100.64.0.1");
}

async fn another_machine_cannot_take_a_node_key(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, false).await;
    authorized(s.register(MachineKey([1; 32]), req(1, &k)).await);
    let stolen = s.register(MachineKey([9; 32]), req(1, &k)).await;
    assert!(matches!(stolen, Err(RegisterError::NodeKeyInUse)), "{stolen:?}");
}

async fn logout_expires_and_rotation_needs_auth(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, false).await;
    let n = authorized(s.register(MachineKey([1; 32]), req(1, &k)).await);
    let logout = RegisterRequest { expiry: Some(Utc::now() - chrono::Duration::seconds(1)), ..req(1, "") };
    assert!(matches!(s.register(MachineKey([1; 32]), logout).await, Ok(RegisterOutcome::LoggedOut(Some(_)))));
    assert!(s.snapshot().node(n.node.id).unwrap().is_expired(Utc::now()));
    // An expired node needs auth again; with no key it is sent to the interactive flow.
    assert!(matches!(s.register(MachineKey([1; 32]), req(1, "")).await, Ok(RegisterOutcome::NeedsAuth(_))));
    // Rotating to a new node key with a valid key keeps the node and its address.
    let rotated = RegisterRequest { old_node_key: NodeKey([1; 32]), ..req(7, &k) };
    let r = authorized(s.register(MachineKey([1; 32]), rotated).await);
    assert_eq!(r.node.id, n.node.id);
    assert_eq!(r.node.node_key, NodeKey([7; 32]));
    assert_eq!(r.node.ipv4, n.node.ipv4);
    assert!(!r.is_expired(Utc::now()));
}

async fn interactive_registration_waits_for_approval(db: Db) {
    let s = state(db).await;
    s.create_user("ann", "", "", "").await.unwrap();
    let mk = MachineKey([4; 32]);
    let url = match s.register(mk, req(4, "")).await.unwrap() {
        RegisterOutcome::NeedsAuth(u) => u,
        other => panic!("{other:?}"),
    };
    let id = url.rsplit('/').next().unwrap().to_string();
    match s.register(mk, req(4, "")).await.unwrap() {
        RegisterOutcome::NeedsAuth(again) => assert_eq!(again, url, "a machine asking again keeps its URL"),
        other => panic!("{other:?}"),
    }
    let nameless = s.register(MachineKey([5; 32]), req(0, "")).await;
    assert!(matches!(nameless, Err(RegisterError::NoNodeKey)), "a request without a node key waits for nothing");
    let waiter = {
        let s = s.clone();
        let follow = RegisterRequest { followup: url.clone(), ..req(4, "") };
        tokio::spawn(async move { s.register(mk, follow).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.approve_registration(&id, "nobody").await.is_err(), "unknown user refused");
    let node = s.approve_registration(&id, "ann").await.unwrap();
    let done = authorized(waiter.await.unwrap());
    assert_eq!(done.node.id, node.node.id);
}

async fn map_updates_publish_patches_or_full_changes(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, false).await;
    let n = authorized(s.register(MachineKey([1; 32]), req(1, &k)).await);
    let mut rx = s.subscribe();
    let endpoints = MapRequest {
        node_key: NodeKey([1; 32]),
        endpoints: Some(vec!["192.0.2.1:41641".parse().unwrap()]),
        ..Default::default()
    };
    s.apply_map_request(n.node.id, &endpoints).await.unwrap();
    let set = rx.recv().await.unwrap();
    assert!(matches!(&set.changes[..], [Change::Node { patch: Some(p), .. }] if p.endpoints.is_some()));
    let derp = MapRequest {
        node_key: NodeKey([1; 32]),
        hostinfo: Some(Hostinfo {
            hostname: "host-1".into(),
            net_info: Some(NetInfo { preferred_derp: 999, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    s.apply_map_request(n.node.id, &derp).await.unwrap();
    let set = rx.recv().await.unwrap();
    assert!(matches!(&set.changes[..], [Change::Node { patch: Some(p), .. }] if p.derp_region == 999));
    let os = MapRequest {
        hostinfo: Some(Hostinfo { os: "linux".into(), ..derp.hostinfo.clone().unwrap() }),
        ..derp.clone()
    };
    s.apply_map_request(n.node.id, &os).await.unwrap();
    let set = rx.recv().await.unwrap();
    assert!(matches!(&set.changes[..], [Change::Node { patch: None, .. }]));
    // The same request again changes nothing and publishes nothing.
    s.apply_map_request(n.node.id, &os).await.unwrap();
    assert!(rx.try_recv().is_err());
}

async fn reported_fields_are_written_in_batches(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, false).await;
    let id = authorized(s.register(MachineKey([1; 32]), req(1, &k)).await).node.id;
    let stored = |s: Arc<State>| async move {
        s.db().run(move |db| db.nodes()).await.unwrap().into_iter().find(|n| n.id == id).unwrap()
    };
    let endpoints = MapRequest {
        node_key: NodeKey([1; 32]),
        endpoints: Some(vec!["192.0.2.1:41641".parse().unwrap()]),
        ..Default::default()
    };
    s.apply_map_request(id, &endpoints).await.unwrap();
    assert_eq!(s.snapshot().node(id).unwrap().node.endpoints.len(), 1, "published at once");
    assert!(stored(s.clone()).await.endpoints.is_empty(), "written with the next batch");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stored(s.clone()).await.endpoints.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the background writer never wrote the endpoints");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.connect(id).await.unwrap();
    s.disconnect(id).await;
    s.rename_node(id, "renamed").await.unwrap();
    s.flush_reported().await;
    let node = stored(s.clone()).await;
    assert!(node.last_seen.is_some(), "the disconnect's last-seen time is stored");
    assert_eq!(node.given_name, "renamed", "a batch never undoes a later write");
}

async fn ephemeral_nodes_are_removed_after_disconnect(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, true).await;
    let n = authorized(s.register(MachineKey([1; 32]), req(1, &k)).await);
    assert!(n.node.ephemeral);
    s.connect(n.node.id).await.unwrap();
    s.disconnect(n.node.id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.snapshot().node(n.node.id).is_none());
    assert!(s.db.nodes().unwrap().is_empty());
}

async fn users_with_nodes_cannot_be_deleted_and_keys_hold_no_secret(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    assert!(matches!(s.create_user("ann", "", "", "").await, Err(StateError::UserExists(_))));
    let k = key(&s, u.id, true, false).await;
    let stored = s.pre_auth_keys().await;
    assert!(!k.contains(&hex::encode(stored[0].hash.to_bytes())) && !stored[0].prefix.is_empty());
    authorized(s.register(MachineKey([1; 32]), req(1, &k)).await);
    assert!(matches!(s.delete_user(u.id).await, Err(StateError::UserHasNodes(_))));
}

#[tokio::test]
async fn the_policy_file_covers_new_nodes_and_a_refused_reload_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.hujson");
    std::fs::write(&path, r#"{"acls": [{"action": "accept", "src": ["ann@"], "dst": ["bob@:80"]}]}"#).unwrap();
    let mut c = Config::embedded(dir.path());
    c.policy.path = path.display().to_string();
    let s = State::load(Arc::new(c), Db::open_in_memory().unwrap()).await.unwrap();
    let ann = s.create_user("ann", "", "", "").await.unwrap();
    let bob = s.create_user("bob", "", "", "").await.unwrap();
    let a = authorized(s.register(MachineKey([1; 32]), req(1, &key(&s, ann.id, false, false).await)).await);
    let mut changes = s.subscribe();
    let b = authorized(s.register(MachineKey([2; 32]), req(2, &key(&s, bob.id, false, false).await)).await);
    let added = changes.recv().await.unwrap();
    assert!(!added.changes.iter().any(|c| matches!(c, Change::Rules)), "an addition alone does not compile");
    assert!(s.snapshot().policy_stale && !s.snapshot().policy.rules(a.node.id).sees(b.node.id), "nobody sees it yet");
    let caught_up = tokio::time::timeout(Duration::from_secs(2), changes.recv()).await.unwrap().unwrap();
    assert!(caught_up.changes.iter().any(|c| matches!(c, Change::Rules)), "the coalesced compile follows");
    let snap = s.snapshot();
    assert!(!snap.policy_stale);
    let a_ip = a.node.ipv4.unwrap().to_string();
    let bob_filter = serde_json::to_string(&snap.policy.rules(b.node.id).filter).unwrap();
    assert!(bob_filter.contains(&a_ip), "bob accepts ann's node: {bob_filter}");
    assert!(snap.policy.rules(a.node.id).sees(b.node.id) && snap.policy.rules(b.node.id).sees(a.node.id));
    assert!(snap.policy.rules(a.node.id).filter.is_empty(), "nothing may reach ann");

    std::fs::write(&path, r#"{"acls": [{"action": "allow"}]}"#).unwrap();
    assert!(matches!(s.reload_policy_file().await, Err(StateError::Policy(_))));
    assert_eq!(s.snapshot().policy.epoch, snap.policy.epoch, "a refused file changes nothing");

    std::fs::write(&path, r#"{"acls": [{"action": "accept", "src": ["bob@"], "dst": ["ann@:*"]}]}"#).unwrap();
    s.reload_policy_file().await.unwrap();
    let snap = s.snapshot();
    assert!(snap.policy.rules(b.node.id).filter.is_empty(), "bob no longer accepts anything");
    assert!(!snap.policy.rules(a.node.id).filter.is_empty(), "ann now accepts bob");
}

async fn the_primary_router_fails_over_and_auto_approvers_approve(db: Db) {
    let s = state(db).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, false).await;
    let route: ipnet::IpNet = "10.1.0.0/16".parse().unwrap();
    let mut routers = Vec::new();
    for n in 1..=2u8 {
        let r = authorized(s.register(MachineKey([n; 32]), req(n, &k)).await).node.id;
        let hostinfo = Hostinfo { hostname: format!("host-{n}"), routable_ips: vec![route], ..Default::default() };
        s.apply_map_request(r, &MapRequest { hostinfo: Some(hostinfo), ..Default::default() }).await.unwrap();
        s.set_approved_routes(r, &[route.to_string()]).await.unwrap();
        s.connect(r).await.unwrap();
        routers.push(r);
    }
    let viewer = authorized(s.register(MachineKey([3; 32]), req(3, &k)).await).node.clone();
    let primary = |s: &State| s.snapshot().policy.primaries().get(&route).copied();
    assert_eq!(primary(&s), Some(routers[0]), "the lowest id among online routers");
    let allowed =
        |s: &State, r: NodeId| s.snapshot().policy.allowed_ips(viewer.id, &s.snapshot().node(r).unwrap().node);
    assert!(allowed(&s, routers[0]).contains(&route) && !allowed(&s, routers[1]).contains(&route));

    let mut changes = s.subscribe();
    s.disconnect(routers[0]).await;
    let set = changes.recv().await.unwrap();
    assert_eq!(primary(&s), Some(routers[1]), "the other router takes over");
    for r in &routers {
        assert!(
            set.changes.iter().any(|c| matches!(c, Change::Node { id, patch: None } if id == r)),
            "peers hear of {r}"
        );
    }
    s.connect(routers[0]).await.unwrap();
    assert_eq!(primary(&s), Some(routers[1]), "a router coming back does not take the route back");

    // With a policy whose autoApprovers cover the route, an advertised route is approved.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.hujson");
    std::fs::write(&path, r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], "autoApprovers": {"routes": {"10.2.0.0/16": ["ann@"]}}}"#).unwrap();
    let mut c = Config::embedded(dir.path());
    c.policy.path = path.display().to_string();
    let s = State::load(Arc::new(c), Db::open_in_memory().unwrap()).await.unwrap();
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let id = authorized(s.register(MachineKey([1; 32]), req(1, &key(&s, u.id, false, false).await)).await).node.id;
    let wanted: Vec<ipnet::IpNet> = vec!["10.2.0.0/16".parse().unwrap(), "10.3.0.0/16".parse().unwrap()];
    let hostinfo = Hostinfo { hostname: "host-1".into(), routable_ips: wanted.clone(), ..Default::default() };
    s.apply_map_request(id, &MapRequest { hostinfo: Some(hostinfo), ..Default::default() }).await.unwrap();
    // A node this new is ahead of the policy's coalesced compile, which approves it then.
    for _ in 0..200 {
        if !s.snapshot().node(id).unwrap().node.approved_routes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.snapshot().node(id).unwrap().node.approved_routes, vec![wanted[0]], "only the covered route");
    assert_eq!(s.db.nodes().unwrap()[0].approved_routes, vec![wanted[0]], "and it is stored");
}

#[tokio::test]
async fn backfill_gives_and_takes_addresses_after_a_prefix_change() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("db.sqlite");
    let mut c = Config::embedded(dir.path());
    c.prefixes.v6 = None;
    let s = State::load(Arc::new(c.clone()), Db::open(&db_path, true, 1000).unwrap()).await.unwrap();
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, false).await;
    for n in 1..=2u8 {
        authorized(s.register(MachineKey([n; 32]), req(n, &k)).await);
    }
    assert!(s.snapshot().nodes.values().all(|e| e.node.ipv6.is_none()));
    drop(s);

    // IPv6 configured again: every node gets an address of it; the IPv4 ones stay.
    c.prefixes.v6 = Config::embedded(dir.path()).prefixes.v6;
    let s = State::load(Arc::new(c.clone()), Db::open(&db_path, true, 1000).unwrap()).await.unwrap();
    let before: Vec<_> = s.snapshot().nodes.values().map(|e| e.node.ipv4).collect();
    let changes = s.backfill_node_ips().await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    let snap = s.snapshot();
    assert!(snap.nodes.values().all(|e| e.node.ipv6.is_some()));
    assert_eq!(snap.nodes.values().map(|e| e.node.ipv4).collect::<Vec<_>>(), before);
    let v6: std::collections::HashSet<_> = snap.nodes.values().map(|e| e.node.ipv6).collect();
    assert_eq!(v6.len(), 2, "distinct addresses");
    assert!(s.backfill_node_ips().await.unwrap().is_empty(), "nothing left to do");
    assert!(s.db.nodes().unwrap().iter().all(|n| n.ipv6.is_some()), "stored");

    // IPv4 removed: the IPv4 addresses go.
    drop(s);
    c.prefixes.v4 = None;
    let s = State::load(Arc::new(c), Db::open(&db_path, true, 1000).unwrap()).await.unwrap();
    assert_eq!(s.backfill_node_ips().await.unwrap().len(), 2);
    assert!(s.snapshot().nodes.values().all(|e| e.node.ipv4.is_none() && e.node.ipv6.is_some()));
}

/// A state whose policy file is `policy`.
async fn state_with_policy(dir: &std::path::Path, policy: &str) -> Arc<State> {
    let path = dir.join("policy.hujson");
    std::fs::write(&path, policy).unwrap();
    let mut c = Config::embedded(dir);
    c.policy.path = path.display().to_string();
    State::load(Arc::new(c), Db::open_in_memory().unwrap()).await.unwrap()
}

/// A registration request with a key and the tags the client asks for.
fn req_tags(node: u8, key: &str, tags: &[&str]) -> RegisterRequest {
    let mut r = req(node, key);
    r.hostinfo.as_mut().unwrap().request_tags = tags.iter().map(|t| t.to_string()).collect();
    r
}

fn refused_tags(r: Result<RegisterOutcome, RegisterError>) -> String {
    match r {
        Err(e @ RegisterError::Tags(_)) => e.to_string(),
        other => panic!("expected the tags to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn requested_tags_need_owners_or_a_key_that_carries_them() {
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"{"tagOwners": {"tag:web": ["ann@"], "tag:db": ["ann@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    let s = state_with_policy(dir.path(), policy).await;
    let ann = s.create_user("ann", "", "", "").await.unwrap();
    let bob = s.create_user("bob", "", "", "").await.unwrap();

    // A user's key: tags the user owns make a tagged node that never expires.
    let ann_key = key(&s, ann.id, true, false).await;
    let web = authorized(s.register(MachineKey([1; 32]), req_tags(1, &ann_key, &["tag:web"])).await);
    assert_eq!((web.node.user_id, web.node.tags.clone(), web.node.expiry), (None, vec!["tag:web".to_string()], None));
    let stored = s.db.nodes().unwrap().into_iter().find(|n| n.id == web.node.id).unwrap();
    assert_eq!(stored.tags, vec!["tag:web".to_string()]);

    // Tags the key's user does not own, or that no policy defines, are refused; nothing is left.
    let bob_key = key(&s, bob.id, true, false).await;
    let why = refused_tags(s.register(MachineKey([2; 32]), req_tags(2, &bob_key, &["tag:web"])).await);
    assert_eq!(why, "requested tags [tag:web] are invalid or not permitted");
    let why = refused_tags(s.register(MachineKey([2; 32]), req_tags(2, &ann_key, &["tag:web", "tag:nope"])).await);
    assert_eq!(why, "requested tags [tag:nope] are invalid or not permitted");
    assert_eq!(s.snapshot().nodes.len(), 1);
    assert_eq!(s.db.nodes().unwrap().len(), 1);

    // A tagged key permits its own tags and no others, whoever owns them.
    let (_, db_key) = s.create_pre_auth_key(None, true, false, None, vec!["tag:db".into()]).await.unwrap();
    let db = authorized(s.register(MachineKey([3; 32]), req_tags(3, &db_key, &["tag:db"])).await);
    assert_eq!(db.node.tags, vec!["tag:db".to_string()]);
    let why = refused_tags(s.register(MachineKey([4; 32]), req_tags(4, &db_key, &["tag:db", "tag:web"])).await);
    assert_eq!(why, "requested tags [tag:web] are invalid or not permitted");

    // Interactive: the approving user must own the tags; a refusal reaches the waiting client.
    let url = match s.register(MachineKey([5; 32]), req_tags(5, "", &["tag:web"])).await.unwrap() {
        RegisterOutcome::NeedsAuth(u) => u,
        other => panic!("{other:?}"),
    };
    let id = url.rsplit('/').next().unwrap().to_string();
    let waiter = {
        let (s, follow) = (s.clone(), RegisterRequest { followup: url.clone(), ..req_tags(5, "", &["tag:web"]) });
        tokio::spawn(async move { s.register(MachineKey([5; 32]), follow).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = s.approve_registration(&id, "bob").await.unwrap_err();
    assert_eq!(err.to_string(), "requested tags [tag:web] are invalid or not permitted");
    match waiter.await.unwrap() {
        Err(RegisterError::Rejected(why)) => assert!(why.contains("requested tags [tag:web]"), "{why}"),
        other => panic!("the client should hear the refusal, got {other:?}"),
    }
    assert_eq!(s.snapshot().nodes.len(), 2);

    let url = match s.register(MachineKey([5; 32]), req_tags(5, "", &["tag:web"])).await.unwrap() {
        RegisterOutcome::NeedsAuth(u) => u,
        other => panic!("{other:?}"),
    };
    let tagged = s.approve_registration(url.rsplit('/').next().unwrap(), "ann").await.unwrap();
    assert_eq!((tagged.node.user_id, tagged.node.tags.clone()), (None, vec!["tag:web".to_string()]));

    // Logging in again interactively without tags (`--advertise-tags= --force-reauth`, which
    // brings a new node key) makes the node the approving user's again.
    let again = RegisterRequest { old_node_key: NodeKey([5; 32]), ..req_tags(6, "", &[]) };
    let url = match s.register(MachineKey([5; 32]), again).await.unwrap() {
        RegisterOutcome::NeedsAuth(u) => u,
        other => panic!("{other:?}"),
    };
    let owned = s.approve_registration(url.rsplit('/').next().unwrap(), "ann").await.unwrap();
    assert_eq!(owned.node.id, tagged.node.id);
    assert_eq!((owned.node.user_id, owned.node.tags.is_empty()), (Some(ann.id), true));
}

#[tokio::test]
async fn a_node_change_derives_again_only_the_rules_it_can_affect() {
    let dir = tempfile::tempdir().unwrap();
    let s = state_with_policy(
        dir.path(),
        r#"{
          "tagOwners": {"tag:web": ["ann@"]},
          "acls": [
            {"action": "accept", "src": ["ann@"], "dst": ["bob@:80"]},
            {"action": "accept", "src": ["cat@"], "dst": ["tag:web:443"]},
          ],
        }"#,
    )
    .await;
    let mut ids = Vec::new();
    for (n, name) in [(1, "ann"), (2, "bob"), (3, "cat"), (4, "cat")] {
        let existing = s.snapshot().user_by_name(name).map(|u| u.id);
        let user = match existing {
            Some(id) => id,
            None => s.create_user(name, "", "", "").await.unwrap().id,
        };
        ids.push(authorized(s.register(MachineKey([n; 32]), req(n, &key(&s, user, false, false).await)).await).node.id);
    }
    while s.snapshot().policy_stale {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let [ann, bob, cat, web] = ids[..] else { unreachable!() };
    let before = s.snapshot();
    let rules_before: Vec<_> = ids.iter().map(|id| before.policy.rules(*id)).collect();
    assert!(!rules_before[2].sees(web), "cat's second node is no server yet");

    s.set_tags(web, &["tag:web".to_string()]).await.unwrap();
    let after = s.snapshot();
    assert_ne!(after.policy.epoch, before.policy.epoch);
    for (i, id) in [ann, bob].into_iter().enumerate() {
        assert!(Arc::ptr_eq(&rules_before[i], &after.policy.rules(id)), "node {id} is unrelated: its rules are kept");
    }
    assert!(after.policy.rules(cat).sees(web), "cat now reaches the tagged node");
    assert!(after.policy.rules(web).sees(cat));
    let web_filter = serde_json::to_string(&after.policy.rules(web).filter).unwrap();
    assert!(web_filter.contains("443"), "the tagged node accepts cat on 443: {web_filter}");
}

#[tokio::test(start_paused = true)]
async fn health_fails_while_the_writer_is_stuck_and_passes_again_after() {
    let s = state(Db::open_in_memory().unwrap()).await;
    assert!(s.database_ok().await);
    tokio::time::advance(HEALTH_FRESH).await;
    // A write stuck on the database holds the writer; health waits its turn, then gives up.
    let stuck = s.writer.lock().await;
    let started = tokio::time::Instant::now();
    assert!(!s.database_ok().await, "health passed while the writers' path was stuck");
    assert_eq!(started.elapsed(), HEALTH_WAIT);
    drop(stuck);
    // Within a second the answer stands: a flood of checks costs the writers one a second.
    assert!(!s.database_ok().await);
    tokio::time::advance(HEALTH_FRESH).await;
    assert!(s.database_ok().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_of_reported_fields_is_written_later_on_its_own() {
    use crate::db::testing::{backend_pid, postgres_settings, postgres_with_deadline, signal};
    let Some(settings) = postgres_settings() else { return };
    let s = state(postgres_with_deadline(&settings, Duration::from_secs(1))).await;
    let u = s.create_user("ann", "", "", "").await.unwrap();
    let k = key(&s, u.id, true, false).await;
    let id = authorized(s.register(MachineKey([1; 32]), req(1, &k)).await).node.id;
    // The database stops answering just before the node reports its endpoints.
    let pid = backend_pid(s.db());
    signal(pid, libc::SIGSTOP);
    let endpoints = MapRequest {
        node_key: NodeKey([1; 32]),
        endpoints: Some(vec!["192.0.2.1:41641".parse().unwrap()]),
        ..Default::default()
    };
    s.apply_map_request(id, &endpoints).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(pid, libc::SIGCONT);
    // Nothing else is reported: the batch that failed is written on its own.
    let other = Db::open_postgres(&settings).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stored = other.nodes().unwrap().into_iter().find(|n| n.id == id).unwrap();
        if !stored.endpoints.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the failed batch was never written again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
