//! The map as the official Go client decoded it, rebuilt from its own log: with
//! `TS_DEBUG_MAP=1` tsnet logs every MapResponse it decoded (zstd already undone) as JSON, and
//! this applies them in order the way its control client does — a full `Peers` list replaces
//! the peers, `PeersChanged` upserts, `PeersRemoved` removes, `PeersChangedPatch`,
//! `OnlineChange` and `PeerSeenChange` patch single fields — and keeps the latest value of
//! every other top-level field (`DNSConfig`, `PacketFilter`, `Debug`, `SSHPolicy`, …).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::protocol::PeerStatus;

/// Fields of a MapResponse that describe changes to peers rather than a latest value.
const PEER_DELTAS: [&str; 6] =
    ["Peers", "PeersChanged", "PeersRemoved", "PeersChangedPatch", "OnlineChange", "PeerSeenChange"];

/// Which fields of a `PeersChangedPatch` entry land in which field of the node.
const PATCH_FIELDS: [(&str, &str); 8] = [
    ("DERPRegion", "HomeDERP"),
    ("Online", "Online"),
    ("LastSeen", "LastSeen"),
    ("KeyExpiry", "KeyExpiry"),
    ("Key", "Key"),
    ("DiscoKey", "DiscoKey"),
    ("Endpoints", "Endpoints"),
    ("CapMap", "CapMap"),
];

/// The rebuilt map.
#[derive(Debug, Default, Clone)]
pub struct NetMap {
    /// The node itself, as last sent.
    pub node: Option<Value>,
    /// The peers by node id.
    pub peers: BTreeMap<u64, Value>,
    /// The latest value of every other top-level field.
    pub latest: BTreeMap<String, Value>,
    /// How many MapResponses were applied.
    pub responses: u64,
}

impl NetMap {
    /// Applies one decoded MapResponse.
    pub fn apply(&mut self, resp: &Value) {
        let Some(resp) = resp.as_object() else { return };
        self.responses += 1;
        if let Some(node) = resp.get("Node").filter(|n| n.is_object()) {
            self.node = Some(node.clone());
        }
        if let Some(Value::Array(all)) = resp.get("Peers") {
            self.peers = all.iter().filter_map(|p| Some((node_id(p)?, p.clone()))).collect();
        }
        if let Some(Value::Array(changed)) = resp.get("PeersChanged") {
            for p in changed {
                if let Some(id) = node_id(p) {
                    self.peers.insert(id, p.clone());
                }
            }
        }
        if let Some(Value::Array(removed)) = resp.get("PeersRemoved") {
            for id in removed.iter().filter_map(Value::as_u64) {
                self.peers.remove(&id);
            }
        }
        if let Some(Value::Array(patches)) = resp.get("PeersChangedPatch") {
            for patch in patches {
                let Some(peer) = patch.get("NodeID").and_then(Value::as_u64).and_then(|id| self.peers.get_mut(&id))
                else {
                    continue;
                };
                for (from, to) in PATCH_FIELDS {
                    if let (Some(v), Some(fields)) = (patch.get(from), peer.as_object_mut()) {
                        fields.insert(to.to_string(), v.clone());
                    }
                }
            }
        }
        self.apply_flags(resp.get("OnlineChange"), "Online", Value::Bool);
        self.apply_flags(resp.get("PeerSeenChange"), "LastSeen", |seen| match seen {
            true => Value::String(Utc::now().to_rfc3339()),
            false => Value::Null,
        });
        for (k, v) in resp {
            if k != "Node" && !PEER_DELTAS.contains(&k.as_str()) && !v.is_null() {
                self.latest.insert(k.clone(), v.clone());
            }
        }
    }

    /// Applies a `{node id: bool}` map to one field of each named peer.
    fn apply_flags(&mut self, flags: Option<&Value>, field: &str, value: impl Fn(bool) -> Value) {
        let Some(Value::Object(flags)) = flags else { return };
        for (id, flag) in flags {
            let (Ok(id), Some(flag)) = (id.parse::<u64>(), flag.as_bool()) else { continue };
            if let Some(fields) = self.peers.get_mut(&id).and_then(Value::as_object_mut) {
                fields.insert(field.to_string(), value(flag));
            }
        }
    }

    /// The node's own tailnet addresses.
    pub fn addresses(&self) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        self.node.as_ref().map_or((None, None), addresses)
    }

    /// When the node's own key expires; `None` when it never does.
    pub fn key_expiry(&self) -> Option<DateTime<Utc>> {
        self.node.as_ref().and_then(key_expiry)
    }

    /// The control server let the node in and its key has not expired.
    pub fn authorized(&self) -> bool {
        let Some(node) = &self.node else { return false };
        let machine = node.get("MachineAuthorized").and_then(Value::as_bool).unwrap_or(false);
        machine
            && !node.get("Expired").and_then(Value::as_bool).unwrap_or(false)
            && key_expiry(node).is_none_or(|e| e > Utc::now())
    }

    /// The peer whose hostname or DNS label is `name`.
    pub fn peer(&self, name: &str) -> Option<PeerStatus> {
        let p = self.peers.values().find(|p| hostname(p) == Some(name) || label(p) == Some(name))?;
        Some(PeerStatus {
            name: hostname(p).or(label(p)).unwrap_or_default().to_string(),
            ipv4: addresses(p).0?,
            derp_region: home_derp(p),
            online: p.get("Online").and_then(Value::as_bool),
            key_expiry: key_expiry(p),
        })
    }

    /// The whole map as one JSON object (`Node`, `Peers`, and the latest other fields).
    pub fn to_json(&self) -> Value {
        let mut out: Map<String, Value> = self.latest.clone().into_iter().collect();
        out.insert("Node".into(), self.node.clone().unwrap_or(Value::Null));
        out.insert("Peers".into(), Value::Array(self.peers.values().cloned().collect()));
        Value::Object(out)
    }
}

fn node_id(node: &Value) -> Option<u64> {
    node.get("ID").and_then(Value::as_u64)
}

fn hostname(node: &Value) -> Option<&str> {
    node.pointer("/Hostinfo/Hostname").and_then(Value::as_str)
}

/// The first label of the node's MagicDNS name.
fn label(node: &Value) -> Option<&str> {
    node.get("Name").and_then(Value::as_str).and_then(|n| n.split('.').next()).filter(|l| !l.is_empty())
}

fn addresses(node: &Value) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let mut v4 = None;
    let mut v6 = None;
    for a in node.get("Addresses").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let ip = a.split('/').next().unwrap_or(a);
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            v4.get_or_insert(ip);
        } else if let Ok(ip) = ip.parse::<Ipv6Addr>() {
            v6.get_or_insert(ip);
        }
    }
    (v4, v6)
}

/// A key expiry; Go writes "no expiry" as the zero time, which is read as `None`.
fn key_expiry(node: &Value) -> Option<DateTime<Utc>> {
    let t = node.get("KeyExpiry")?.as_str()?.parse::<DateTime<Utc>>().ok()?;
    (t.timestamp() > 0).then_some(t)
}

/// The home DERP region: `HomeDERP`, or the legacy `DERP` address `127.3.3.40:N`.
fn home_derp(node: &Value) -> Option<u32> {
    let region = node
        .get("HomeDERP")
        .and_then(Value::as_u64)
        .or_else(|| node.get("DERP")?.as_str()?.strip_prefix("127.3.3.40:")?.parse().ok())?;
    u32::try_from(region).ok().filter(|r| *r != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn peer(id: u64, name: &str, ip: &str) -> Value {
        json!({"ID": id, "Name": format!("{name}.tailnet.internal."), "Addresses": [format!("{ip}/32")],
               "Hostinfo": {"Hostname": name}, "HomeDERP": 999, "Online": true})
    }

    #[test]
    fn deltas_apply_in_order() {
        let mut m = NetMap::default();
        m.apply(&json!({
            "Node": {"ID": 1, "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"], "MachineAuthorized": true,
                     "KeyExpiry": "0001-01-01T00:00:00Z"},
            "Peers": [peer(2, "b", "100.64.0.2")],
            "DNSConfig": {"Domains": ["tailnet.internal"]},
        }));
        assert!(m.authorized());
        assert_eq!(m.addresses().0, Some("100.64.0.1".parse().unwrap()));
        assert_eq!(m.key_expiry(), None, "the zero time means no expiry");
        assert_eq!(m.peer("b").unwrap().derp_region, Some(999));

        m.apply(&json!({"PeersChanged": [peer(3, "c", "100.64.0.3")], "OnlineChange": {"2": false}}));
        assert_eq!(m.peer("b").unwrap().online, Some(false));
        assert_eq!(m.peer("c").unwrap().ipv4, "100.64.0.3".parse::<Ipv4Addr>().unwrap());

        m.apply(&json!({"PeersChangedPatch": [{"NodeID": 3, "DERPRegion": 7, "KeyExpiry": "2000-01-01T00:00:00Z"}]}));
        let c = m.peer("c").unwrap();
        assert_eq!(c.derp_region, Some(7));
        assert!(c.expired());

        m.apply(&json!({"PeersRemoved": [2]}));
        assert!(m.peer("b").is_none());
        m.apply(&json!({"Peers": []}));
        assert!(m.peer("c").is_none(), "a full list replaces every peer");
        assert_eq!(m.to_json()["DNSConfig"]["Domains"][0], "tailnet.internal");
        assert_eq!(m.responses, 5);
    }

    #[test]
    fn an_expired_self_is_not_authorized() {
        let mut m = NetMap::default();
        m.apply(&json!({"Node": {"ID": 1, "MachineAuthorized": true, "KeyExpiry": "2001-01-01T00:00:00Z"}}));
        assert!(!m.authorized());
        m.apply(&json!({"Node": {"ID": 1, "MachineAuthorized": true, "KeyExpiry": "2999-01-01T00:00:00Z"}}));
        assert!(m.authorized());
    }

    #[test]
    fn peers_are_found_by_dns_label_too() {
        let mut m = NetMap::default();
        let mut p = peer(2, "laptop", "100.64.0.2");
        p["Name"] = json!("laptop-1.tailnet.internal.");
        m.apply(&json!({"Peers": [p]}));
        assert_eq!(m.peer("laptop-1").unwrap().name, "laptop");
    }
}
