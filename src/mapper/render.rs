//! Rendering nodes and full maps: the self node, peers as their viewers see them (serialized
//! once per node version and policy view, except a peer with routes under a policy, which may
//! show them differently to different viewers), user profiles, DERP map, DNS configuration,
//! packet filter and SSH policy.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::MapContext;
use crate::model::{NodeId, UserId};
use crate::policy::{NodeRules, PolicyView};
use crate::state::{NodeEntry, Snapshot};
use crate::tailcfg::{self, MapResponse, RawNode, UserProfile};

/// The user id Tailscale shows for tagged nodes.
pub const TAGGED_DEVICES_USER_ID: UserId = 2_147_455_555;

fn addresses(e: &NodeEntry) -> Vec<IpNet> {
    let n = &e.node;
    let v4 = n.ipv4.map(|a| IpNet::V4(Ipv4Net::new(a, 32).expect("/32 is valid")));
    let v6 = n.ipv6.map(|a| IpNet::V6(Ipv6Net::new(a, 128).expect("/128 is valid")));
    v4.into_iter().chain(v6).collect()
}

/// Node `e` as `viewer` sees it, or as it sees itself when `viewer` is `None`.
fn render(
    e: &NodeEntry,
    ctx: &MapContext,
    view: &PolicyView,
    now: DateTime<Utc>,
    viewer: Option<NodeId>,
) -> tailcfg::Node {
    let n = &e.node;
    let as_peer = viewer.is_some();
    let addrs = addresses(e);
    let expired = n.is_expired(now);
    // An expired peer is cut off even for clients that ignore `Expired`: nothing routes to it
    // and nothing from it is accepted.
    let cut_off = as_peer && expired;
    let primary_routes = view.primary_routes(n.id);
    let allowed_ips = match viewer {
        _ if cut_off => Vec::new(),
        Some(v) => view.allowed_ips(v, n),
        None => addrs.iter().chain(&primary_routes).copied().collect(),
    };
    tailcfg::Node {
        id: n.id,
        stable_id: n.id.to_string(),
        name: ctx.fqdn(&n.given_name),
        user: n.user_id.unwrap_or(TAGGED_DEVICES_USER_ID),
        key: n.node_key,
        key_expiry: n.expiry,
        machine: n.machine_key,
        disco_key: n.disco_key,
        allowed_ips,
        addresses: addrs,
        endpoints: if cut_off { Vec::new() } else { n.endpoints.clone() },
        home_derp: if cut_off { 0 } else { n.home_derp() },
        hostinfo: Some(n.hostinfo.clone()),
        created: n.created_at,
        cap: 0,
        tags: n.tags.clone(),
        primary_routes,
        last_seen: if as_peer && !e.online { n.last_seen } else { None },
        online: as_peer.then_some(e.online),
        machine_authorized: !expired,
        cap_map: tailcfg::caps::with_base(
            &ctx.caps,
            if as_peer { view.peer_caps(n.id) } else { view.rules(n.id).caps.clone() },
        ),
        expired,
    }
}

/// Whether `me` (with its `rules`) is shown `peer`: the policy lets `me` see it and `me`'s
/// own key has not expired (an expired node sees no one). Expired peers stay listed, marked
/// expired, but unroutable.
pub fn shows(rules: &NodeRules, me: &NodeEntry, peer: &NodeEntry, now: DateTime<Utc>) -> bool {
    me.node.id != peer.node.id && !me.is_expired(now) && rules.sees(peer.node.id)
}

/// A node as it sees itself.
pub fn self_node(e: &NodeEntry, ctx: &MapContext, view: &PolicyView, now: DateTime<Utc>) -> tailcfg::Node {
    render(e, ctx, view, now, None)
}

/// Node `e` as `viewer` sees it: serialized once per published version and policy view,
/// unless a policy may show its routes differently to different viewers
/// ([`PolicyView::varies_by_viewer`]).
pub fn peer_wire(viewer: NodeId, e: &NodeEntry, ctx: &MapContext, view: &PolicyView, now: DateTime<Utc>) -> RawNode {
    let rendered = |e: &NodeEntry| RawNode::new(&render(e, ctx, view, now, Some(viewer)));
    if view.varies_by_viewer(&e.node) {
        rendered(e)
    } else {
        e.peer_wire(view.epoch, rendered)
    }
}

fn profile(snap: &Snapshot, id: UserId) -> Option<UserProfile> {
    if id == TAGGED_DEVICES_USER_ID {
        return Some(UserProfile {
            id,
            login_name: "tagged-devices".into(),
            display_name: "Tagged Devices".into(),
            profile_pic_url: String::new(),
        });
    }
    snap.user(id).map(|u| UserProfile {
        id,
        login_name: u.login_name(),
        display_name: u.shown_name().to_string(),
        profile_pic_url: u.profile_pic_url.clone(),
    })
}

/// The profiles of the given users.
pub fn user_profiles(snap: &Snapshot, users: impl IntoIterator<Item = UserId>) -> Vec<UserProfile> {
    users.into_iter().collect::<BTreeSet<_>>().into_iter().filter_map(|u| profile(snap, u)).collect()
}

/// The first message of a session: the node itself, every visible peer, the DERP map, the
/// packet filter, SSH policy, DNS and the users shown.
pub fn full_map(snap: &Snapshot, me: &NodeEntry, ctx: &MapContext, now: DateTime<Utc>) -> MapResponse {
    let view = &snap.policy;
    let rules = view.rules(me.node.id);
    let peers: Vec<&Arc<NodeEntry>> = snap.nodes.values().filter(|p| shows(&rules, me, p, now)).collect();
    let owner = |e: &NodeEntry| e.node.user_id.unwrap_or(TAGGED_DEVICES_USER_ID);
    MapResponse {
        node: Some(self_node(me, ctx, view, now)),
        derp_map: Some(snap.derp_map.clone()),
        peers: Some(peers.iter().map(|p| peer_wire(me.node.id, p, ctx, view, now)).collect()),
        dns_config: ctx.dns.clone(),
        domain: ctx.base_domain.clone(),
        packet_filter: Some(rules.filter.clone()),
        ssh_policy: rules.ssh.clone(),
        user_profiles: user_profiles(snap, std::iter::once(owner(me)).chain(peers.iter().map(|p| owner(p)))),
        control_time: Some(now),
        debug: ctx.debug,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{context, t0, tailnet};

    fn first_map_json(me: u64) -> serde_json::Value {
        let snap = tailnet();
        let resp = full_map(&snap, snap.node(me).unwrap(), &context(), t0());
        serde_json::to_value(&resp).unwrap()
    }

    #[test]
    fn full_map_snapshot() {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../../snapshots");
        settings.bind(|| insta::assert_json_snapshot!("full_map_for_node_1", first_map_json(1)));
    }

    #[test]
    fn full_map_is_what_tailscale_rs_requires() {
        let v = first_map_json(1);
        let text = v.to_string();
        assert!(!text.contains("null"), "no nulls: {text}");
        let peers = v["Peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2);
        for n in peers.iter().chain([&v["Node"]]) {
            let addrs = n["Addresses"].as_array().unwrap();
            assert_eq!(addrs.len(), 2, "one IPv4 then one IPv6");
            assert!(addrs[0].as_str().unwrap().starts_with("100.64."));
            assert_eq!(n["Name"].as_str().unwrap().matches('.').count(), 3, "FQDN with trailing dot");
        }
        assert!(peers.iter().all(|p| p["HomeDERP"] == 999));
        assert_eq!(v["PacketFilter"][0]["SrcIPs"][0], "*");
        let users: Vec<u64> = v["UserProfiles"].as_array().unwrap().iter().map(|u| u["ID"].as_u64().unwrap()).collect();
        assert_eq!(users, vec![1, TAGGED_DEVICES_USER_ID]);
        // Only an offline peer carries LastSeen; online ones say Online.
        let offline = peers.iter().find(|p| p["ID"] == 3).unwrap();
        assert_eq!(offline["Online"], false);
        assert!(offline.get("LastSeen").is_some());
        let online = peers.iter().find(|p| p["ID"] == 2).unwrap();
        assert!(online.get("LastSeen").is_none());
    }
}
