//! Deterministic tailnets (fixed keys, names and times) for tests, snapshots and benches.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use crate::mapper::MapContext;
use crate::model::{Node, RegisterMethod, User};
use crate::policy::ParsedPolicy;
use crate::state::{compile_policy, Snapshot};
use crate::tailcfg::{
    DerpMap, DerpNode, DerpRegion, DiscoKey, Hostinfo, MachineKey, NetInfo, NodeKey, RegisterAuth, RegisterRequest,
};

/// A registration request from node `n` (node key `[n; 32]`, hostname `host-n`) with `key`.
pub fn register_request(n: u8, key: &str) -> RegisterRequest {
    RegisterRequest {
        version: 130,
        node_key: NodeKey([n; 32]),
        auth: Some(RegisterAuth { auth_key: key.to_string() }),
        hostinfo: Some(Hostinfo { hostname: format!("host-{n}"), ..Default::default() }),
        ..Default::default()
    }
}

/// A fixed point in time.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid time")
}

/// 32 key bytes that differ for every `i` and every `kind`.
fn key_bytes(kind: u8, i: u32) -> [u8; 32] {
    let mut k = [kind; 32];
    k[..4].copy_from_slice(&i.to_be_bytes());
    // Small ones are easy to tell apart in a snapshot; none is all zeros (no key).
    let fill = kind.wrapping_add(i as u8);
    if i < 256 && fill != 0 {
        k = [fill; 32];
    }
    k
}

/// Node `i` (1-based, up to about four million) of user `user` (tagged when `user` is `None`).
pub fn node(i: u32, user: Option<u64>) -> Node {
    let (hi, lo) = ((i >> 8) % 20_000, i as u8);
    Node {
        id: i as u64,
        machine_key: MachineKey(key_bytes(0, i)),
        node_key: NodeKey(key_bytes(0x10, i)),
        disco_key: Some(DiscoKey(key_bytes(0x20, i))),
        endpoints: vec![format!("192.0.2.{lo}:{}", 41641 + hi).parse().expect("valid")],
        hostinfo: Hostinfo {
            hostname: format!("host-{i}"),
            os: "linux".into(),
            net_info: Some(NetInfo { preferred_derp: 999, ..Default::default() }),
            ..Default::default()
        },
        // 100.64.(i / 256).(i % 256) and fd7a:115c:a1e0::(i in hex), on through the prefixes.
        ipv4: Some(std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + i)),
        ipv6: Some(std::net::Ipv6Addr::from(
            u128::from(std::net::Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0)) + u128::from(i),
        )),
        hostname: format!("host-{i}"),
        given_name: format!("host-{i}"),
        user_id: user,
        register_method: RegisterMethod::AuthKey,
        tags: if user.is_none() { vec!["tag:server".into()] } else { Vec::new() },
        auth_key_id: None,
        ephemeral: false,
        expiry: None,
        last_seen: Some(t0()),
        approved_routes: Vec::new(),
        created_at: t0(),
    }
}

/// A user with a fixed creation time.
pub fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.into(),
        display_name: String::new(),
        email: String::new(),
        provider_id: String::new(),
        provider: String::new(),
        profile_pic_url: String::new(),
        created_at: t0(),
    }
}

/// Three nodes: two of user 1 (online), one tagged (offline).
pub fn tailnet() -> Snapshot {
    let mut snap = Snapshot::build(
        [user(1, "alice")],
        [(node(1, Some(1)), true), (node(2, Some(1)), true), (node(3, None), false)],
    );
    snap.derp_map = derp_map();
    snap
}

/// `n` nodes spread over `users` users, all online.
pub fn large_tailnet(users: u64, n: u32) -> Snapshot {
    let mut snap = Snapshot::build(
        (1..=users).map(|u| user(u, &format!("user{u}"))),
        (1..=n).map(|i| (node(i, Some(1 + i as u64 % users)), true)),
    );
    snap.derp_map = derp_map();
    snap
}

/// One loopback DERP region.
pub fn derp_map() -> Arc<DerpMap> {
    let mut derp = DerpMap::default();
    derp.regions.insert(
        999,
        DerpRegion {
            region_id: 999,
            region_code: "headscale".into(),
            region_name: "Headscale Embedded DERP".into(),
            nodes: vec![DerpNode {
                name: "999a".into(),
                region_id: 999,
                host_name: "127.0.0.1".into(),
                ipv4: "127.0.0.1".into(),
                ipv6: "none".into(),
                stun_port: 3478,
                derp_port: 8443,
                insecure_for_tests: true,
                ..DerpNode::default()
            }],
        },
    );
    Arc::new(derp)
}

/// A map context with the test tailnet's base domain and Headscale's default switches.
pub fn context() -> MapContext {
    MapContext {
        base_domain: "tailnet.test".into(),
        dns: None,
        debug: Some(crate::tailcfg::ClientDebug { disable_log_tail: true }),
        caps: crate::tailcfg::caps::baseline(crate::tailcfg::caps::Switches { taildrop: true, ..Default::default() }),
    }
}

/// `next`, a changed copy of `prev`, with `prev`'s policy compiled for it the way the
/// server does after a node change: the rules of nodes the change cannot affect are kept.
pub fn recompiled(prev: &Snapshot, mut next: Snapshot) -> Snapshot {
    let source = prev.policy.policy().expect("a policy in force").source.clone();
    let active = compile_policy(source, &next);
    next.policy = Arc::new(prev.policy.successor_for_nodes(active, prev.policy.primaries().clone()));
    next
}

/// `snap` with `policy` (HuJSON) in force; panics if the policy is invalid.
pub fn with_policy(mut snap: Snapshot, policy: &str) -> Snapshot {
    let source = Arc::new(ParsedPolicy::parse(policy).expect("a valid policy"));
    let active = compile_policy(source, &snap);
    snap.policy = Arc::new(snap.policy.successor(Some(active), Default::default()));
    snap
}
