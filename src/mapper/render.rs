//! Rendering nodes and full maps: the self node, peers as their viewers see them (serialized
//! once per node version), user profiles, DERP map and DNS configuration.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::UserId;
use crate::policy::Policy;
use crate::state::{NodeEntry, Snapshot};
use crate::tailcfg::{self, DerpMap, DnsConfig, MapResponse, RawNode, UserProfile};

/// The user id Tailscale shows for tagged nodes.
pub const TAGGED_DEVICES_USER_ID: UserId = 2_147_455_555;

/// Everything besides the snapshot that shapes a map; built once from the configuration.
#[derive(Debug, Clone)]
pub struct MapContext {
    pub base_domain: String,
    pub derp_map: Arc<DerpMap>,
    pub dns: Option<Arc<DnsConfig>>,
    pub policy: Policy,
}

impl MapContext {
    /// The FQDN (with trailing dot) of a node name.
    fn fqdn(&self, given_name: &str) -> String {
        if self.base_domain.is_empty() {
            format!("{given_name}.")
        } else {
            format!("{given_name}.{}.", self.base_domain)
        }
    }
}

fn addresses(e: &NodeEntry) -> Vec<IpNet> {
    let n = &e.node;
    let v4 = n.ipv4.map(|a| IpNet::V4(Ipv4Net::new(a, 32).expect("/32 is valid")));
    let v6 = n.ipv6.map(|a| IpNet::V6(Ipv6Net::new(a, 128).expect("/128 is valid")));
    v4.into_iter().chain(v6).collect()
}

fn render(e: &NodeEntry, ctx: &MapContext, now: DateTime<Utc>, as_peer: bool) -> tailcfg::Node {
    let n = &e.node;
    let addrs = addresses(e);
    let expired = n.is_expired(now);
    // An expired peer is cut off even for clients that ignore `Expired`: nothing routes to it
    // and nothing from it is accepted.
    let cut_off = as_peer && expired;
    tailcfg::Node {
        id: n.id,
        stable_id: n.id.to_string(),
        name: ctx.fqdn(&n.given_name),
        user: n.user_id.unwrap_or(TAGGED_DEVICES_USER_ID),
        key: n.node_key,
        key_expiry: n.expiry,
        machine: n.machine_key,
        disco_key: n.disco_key,
        allowed_ips: if cut_off { Vec::new() } else { addrs.clone() },
        addresses: addrs,
        endpoints: if cut_off { Vec::new() } else { n.endpoints.clone() },
        home_derp: if cut_off { 0 } else { n.home_derp() },
        hostinfo: Some(n.hostinfo.clone()),
        created: n.created_at,
        cap: 0,
        tags: n.tags.clone(),
        primary_routes: Vec::new(),
        last_seen: if as_peer && !e.online { n.last_seen } else { None },
        online: as_peer.then_some(e.online),
        machine_authorized: !expired,
        cap_map: Default::default(),
        expired,
    }
}

/// Whether `me` is shown `peer`: the policy allows it and `me`'s own key has not expired (an
/// expired node sees no one). Expired peers stay listed, marked expired, but unroutable.
pub fn shows(ctx: &MapContext, me: &NodeEntry, peer: &NodeEntry, now: DateTime<Utc>) -> bool {
    me.node.id != peer.node.id && !me.is_expired(now) && ctx.policy.peer_visible(&me.node, &peer.node)
}

/// A node as it sees itself.
pub fn self_node(e: &NodeEntry, ctx: &MapContext, now: DateTime<Utc>) -> tailcfg::Node {
    render(e, ctx, now, false)
}

/// A node as its peers see it, serialized once per published version.
pub fn peer_wire(e: &NodeEntry, ctx: &MapContext, now: DateTime<Utc>) -> RawNode {
    e.peer_wire(|e| RawNode::new(&render(e, ctx, now, true)))
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
/// packet filter, DNS and the users shown.
pub fn full_map(snap: &Snapshot, me: &NodeEntry, ctx: &MapContext, now: DateTime<Utc>) -> MapResponse {
    let peers: Vec<&Arc<NodeEntry>> = snap
        .nodes
        .values()
        .filter(|p| shows(ctx, me, p, now))
        .collect();
    let owner = |e: &NodeEntry| e.node.user_id.unwrap_or(TAGGED_DEVICES_USER_ID);
    MapResponse {
        node: Some(self_node(me, ctx, now)),
        derp_map: Some(ctx.derp_map.clone()),
        peers: Some(peers.iter().map(|p| peer_wire(p, ctx, now)).collect()),
        dns_config: ctx.dns.clone(),
        domain: ctx.base_domain.clone(),
        packet_filter: Some(ctx.policy.packet_filter(&me.node)),
        user_profiles: user_profiles(snap, std::iter::once(owner(me)).chain(peers.iter().map(|p| owner(p)))),
        control_time: Some(now),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{context, t0, tailnet};
    use super::*;

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
