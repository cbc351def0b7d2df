//! `/machine/map`: the MapRequest a client sends and the MapResponse stream it receives, with
//! the Node, PeerChange and UserProfile types inside them (filter rules live in `filter`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::{is_default, time, DerpMap, DiscoKey, FilterRule, Hostinfo, MachineKey, NodeKey, SshPolicy};

/// A client's map request: a streaming poll, or a one-off update of its endpoints and Hostinfo.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MapRequest {
    #[serde(rename = "Version")]
    pub version: u16,
    #[serde(rename = "Compress", skip_serializing_if = "String::is_empty")]
    pub compress: String,
    #[serde(rename = "KeepAlive", skip_serializing_if = "std::ops::Not::not")]
    pub keep_alive: bool,
    #[serde(rename = "NodeKey")]
    pub node_key: NodeKey,
    #[serde(rename = "DiscoKey", skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoKey>,
    #[serde(rename = "Endpoints", skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<SocketAddr>>,
    #[serde(rename = "Hostinfo", alias = "HostInfo", skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    #[serde(rename = "Stream", skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(rename = "OmitPeers", skip_serializing_if = "std::ops::Not::not")]
    pub omit_peers: bool,
    #[serde(rename = "ReadOnly", skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A user as shown to nodes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty", default)]
    pub profile_pic_url: String,
}

/// A resolver address for the DNS configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct DnsResolver {
    #[serde(rename = "Addr")]
    pub addr: String,
}

/// The DNS configuration a node should use (MagicDNS).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct DnsConfig {
    #[serde(rename = "Resolvers", skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<DnsResolver>,
    #[serde(rename = "Routes", skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, Vec<DnsResolver>>,
    #[serde(rename = "Domains", skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(rename = "Proxied", skip_serializing_if = "std::ops::Not::not")]
    pub proxied: bool,
}

/// A node as the map shows it, to itself or to a peer.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "StableID")]
    pub stable_id: String,
    /// The FQDN, with a trailing dot.
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "User")]
    pub user: u64,
    #[serde(rename = "Key")]
    pub key: NodeKey,
    #[serde(
        rename = "KeyExpiry",
        skip_serializing_if = "Option::is_none",
        default,
        serialize_with = "time::ser_opt",
        deserialize_with = "time::de_opt"
    )]
    pub key_expiry: Option<DateTime<Utc>>,
    #[serde(rename = "Machine")]
    pub machine: MachineKey,
    #[serde(rename = "DiscoKey", skip_serializing_if = "Option::is_none", default)]
    pub disco_key: Option<DiscoKey>,
    /// Exactly one IPv4 then one IPv6 address.
    #[serde(rename = "Addresses")]
    pub addresses: Vec<IpNet>,
    #[serde(rename = "AllowedIPs")]
    pub allowed_ips: Vec<IpNet>,
    #[serde(rename = "Endpoints")]
    pub endpoints: Vec<SocketAddr>,
    #[serde(rename = "HomeDERP", skip_serializing_if = "is_default", default)]
    pub home_derp: i32,
    #[serde(rename = "Hostinfo", skip_serializing_if = "Option::is_none", default)]
    pub hostinfo: Option<Hostinfo>,
    #[serde(rename = "Created", serialize_with = "time::ser")]
    pub created: DateTime<Utc>,
    #[serde(rename = "Cap", skip_serializing_if = "is_default", default)]
    pub cap: u16,
    #[serde(rename = "Tags", skip_serializing_if = "Vec::is_empty", default)]
    pub tags: Vec<String>,
    #[serde(rename = "PrimaryRoutes", skip_serializing_if = "Vec::is_empty", default)]
    pub primary_routes: Vec<IpNet>,
    #[serde(
        rename = "LastSeen",
        skip_serializing_if = "Option::is_none",
        default,
        serialize_with = "time::ser_opt",
        deserialize_with = "time::de_opt"
    )]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none", default)]
    pub online: Option<bool>,
    #[serde(rename = "MachineAuthorized", skip_serializing_if = "std::ops::Not::not", default)]
    pub machine_authorized: bool,
    #[serde(rename = "CapMap", skip_serializing_if = "BTreeMap::is_empty", default)]
    pub cap_map: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(rename = "Expired", skip_serializing_if = "std::ops::Not::not", default)]
    pub expired: bool,
}

/// A node already serialized to JSON, shared by every map that shows it the same way.
#[derive(Debug, Clone)]
pub struct RawNode(pub Arc<Box<RawValue>>);

impl RawNode {
    /// Serializes a node once.
    pub fn new(node: &Node) -> Self {
        RawNode(Arc::new(serde_json::value::to_raw_value(node).expect("a Node always serializes")))
    }
}

impl Serialize for RawNode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RawNode(Arc::new(Box::<RawValue>::deserialize(d)?)))
    }
}

/// A small change to a peer that does not need the whole node resent.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PeerChange {
    #[serde(rename = "NodeID")]
    pub node_id: u64,
    #[serde(rename = "DERPRegion", skip_serializing_if = "is_default")]
    pub derp_region: i32,
    #[serde(rename = "Endpoints", skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<SocketAddr>>,
    #[serde(rename = "Key", skip_serializing_if = "Option::is_none")]
    pub key: Option<NodeKey>,
    #[serde(rename = "DiscoKey", skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoKey>,
    #[serde(rename = "Online", skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(
        rename = "LastSeen",
        skip_serializing_if = "Option::is_none",
        serialize_with = "time::ser_opt",
        deserialize_with = "time::de_opt"
    )]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(
        rename = "KeyExpiry",
        skip_serializing_if = "Option::is_none",
        serialize_with = "time::ser_opt",
        deserialize_with = "time::de_opt"
    )]
    pub key_expiry: Option<DateTime<Utc>>,
}

impl PeerChange {
    /// Folds a later patch for the same node into this one; later values win.
    pub fn merge(&mut self, later: PeerChange) {
        if later.derp_region != 0 {
            self.derp_region = later.derp_region;
        }
        macro_rules! take { ($($f:ident),*) => { $( if later.$f.is_some() { self.$f = later.$f; } )* } }
        take!(endpoints, key, disco_key, online, last_seen, key_expiry);
    }

    /// Whether it only says the node came online, went offline or was last seen at a time.
    pub fn is_presence_only(&self) -> bool {
        let presence =
            PeerChange { node_id: self.node_id, online: self.online, last_seen: self.last_seen, ..Default::default() };
        *self == presence
    }
}

/// One message of the map stream. Every field is optional; an absent field means "unchanged".
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MapResponse {
    #[serde(rename = "KeepAlive", skip_serializing_if = "std::ops::Not::not")]
    pub keep_alive: bool,
    #[serde(rename = "Node", skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(rename = "DERPMap", skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<Arc<DerpMap>>,
    /// The complete peer list; only in a full map. `Some(vec![])` means "no peers".
    #[serde(rename = "Peers", skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<RawNode>>,
    #[serde(rename = "PeersChanged", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed: Vec<RawNode>,
    #[serde(rename = "PeersRemoved", skip_serializing_if = "Vec::is_empty")]
    pub peers_removed: Vec<u64>,
    #[serde(rename = "PeersChangedPatch", skip_serializing_if = "Vec::is_empty")]
    pub peers_changed_patch: Vec<PeerChange>,
    #[serde(rename = "OnlineChange", skip_serializing_if = "BTreeMap::is_empty")]
    pub online_change: BTreeMap<u64, bool>,
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<Arc<DnsConfig>>,
    #[serde(rename = "Domain", skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// `None` keeps the client's current rules.
    #[serde(rename = "PacketFilter", skip_serializing_if = "Option::is_none")]
    pub packet_filter: Option<Arc<Vec<FilterRule>>>,
    #[serde(rename = "UserProfiles", skip_serializing_if = "Vec::is_empty")]
    pub user_profiles: Vec<UserProfile>,
    /// `None` keeps the client's current SSH rules; an empty policy removes them.
    #[serde(rename = "SSHPolicy", skip_serializing_if = "Option::is_none")]
    pub ssh_policy: Option<Arc<SshPolicy>>,
    #[serde(rename = "ControlTime", skip_serializing_if = "Option::is_none", serialize_with = "time::ser_opt")]
    pub control_time: Option<DateTime<Utc>>,
    /// Switches for the client's own behaviour; only in a full map.
    #[serde(rename = "Debug", skip_serializing_if = "Option::is_none")]
    pub debug: Option<ClientDebug>,
}

/// `MapResponse.Debug`: what the control server asks of the client itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientDebug {
    /// Stop uploading logs to Tailscale's log service (Headscale's `logtail.enabled: false`).
    #[serde(rename = "DisableLogTail", default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_log_tail: bool,
}

impl MapResponse {
    /// True when this message carries nothing but possibly a keep-alive.
    pub fn is_empty(&self) -> bool {
        self.node.is_none()
            && self.derp_map.is_none()
            && self.peers.is_none()
            && self.peers_changed.is_empty()
            && self.peers_removed.is_empty()
            && self.peers_changed_patch.is_empty()
            && self.online_change.is_empty()
            && self.dns_config.is_none()
            && self.packet_filter.is_none()
            && self.ssh_policy.is_none()
            && self.user_profiles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tailscale_rs_stream_request() {
        let raw = r#"{"DiscoKey":"discokey:0101010101010101010101010101010101010101010101010101010101010101",
          "HostInfo":{"App":"tailscale-rs","Hostname":"node-a","IpnVersion":"0.6.1"},
          "KeepAlive":true,"NodeKey":"nodekey:0202020202020202020202020202020202020202020202020202020202020202",
          "Stream":true,"Version":130}"#;
        let r: MapRequest = serde_json::from_str(raw).unwrap();
        assert!(r.stream && r.keep_alive && !r.omit_peers);
        assert_eq!(r.hostinfo.unwrap().hostname, "node-a");
        assert!(r.endpoints.is_none());
    }

    #[test]
    fn parses_a_lite_update_with_endpoints() {
        let raw = r#"{"NodeKey":"nodekey:0202020202020202020202020202020202020202020202020202020202020202",
          "OmitPeers":true,"Version":130,"Endpoints":["192.0.2.1:41641","[fd00::2]:41641"],"EndpointTypes":[1,1],
          "HostInfo":{"NetInfo":{"DerpLatency":{"900-v4":0.000262},"PreferredDerp":900}}}"#;
        let r: MapRequest = serde_json::from_str(raw).unwrap();
        assert_eq!(r.endpoints.unwrap().len(), 2);
        assert_eq!(r.hostinfo.unwrap().preferred_derp(), Some(900));
    }

    #[test]
    fn empty_fields_are_omitted_not_null() {
        let s = serde_json::to_string(&MapResponse { keep_alive: true, ..Default::default() }).unwrap();
        assert_eq!(s, r#"{"KeepAlive":true}"#);
        let n = serde_json::to_string(&Node::default()).unwrap();
        assert!(!n.contains("null"), "{n}");
        assert!(n.contains(r#""Endpoints":[]"#), "{n}");
    }

    #[test]
    fn patches_merge_later_values() {
        let mut a = PeerChange { node_id: 1, online: Some(true), derp_region: 900, ..Default::default() };
        a.merge(PeerChange { node_id: 1, online: Some(false), ..Default::default() });
        assert_eq!(a.online, Some(false));
        assert_eq!(a.derp_region, 900);
    }
}
