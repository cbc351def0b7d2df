//! What a node enforces and grants: packet-filter rules (`PacketFilter`), the capability
//! grants carried inside them, and the SSH policy (`SSHPolicy`), in Go's JSON shape.
//!
//! Empty optional fields are omitted, never `null`, except inside a capability map, where a
//! capability without values is written as an empty list.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A port range; `0..=65535` is "any port".
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    #[serde(rename = "First")]
    pub first: u16,
    #[serde(rename = "Last")]
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange { first: 0, last: 65535 };

    /// Whether `port` is inside the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// A destination of a filter rule: an address pattern (`*`, an address, a CIDR prefix or an
/// `a-b` range) and a port range.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct NetPortRange {
    /// Shared with every other rule that names the same destination.
    #[serde(rename = "IP")]
    pub ip: Arc<str>,
    #[serde(rename = "Ports")]
    pub ports: PortRange,
}

/// An IP protocol number, as carried in `IPProto`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct IpProto(pub u8);

impl IpProto {
    /// Internet Control Message Protocol.
    pub const ICMP: IpProto = IpProto(1);
    /// Internet Group Management Protocol.
    pub const IGMP: IpProto = IpProto(2);
    /// IPv4 encapsulation (IP in IP).
    pub const IPV4: IpProto = IpProto(4);
    /// Transmission Control Protocol.
    pub const TCP: IpProto = IpProto(6);
    /// Exterior Gateway Protocol.
    pub const EGP: IpProto = IpProto(8);
    /// Any private interior gateway protocol.
    pub const IGP: IpProto = IpProto(9);
    /// User Datagram Protocol.
    pub const UDP: IpProto = IpProto(17);
    /// Generic Routing Encapsulation.
    pub const GRE: IpProto = IpProto(47);
    /// Encapsulating Security Payload.
    pub const ESP: IpProto = IpProto(50);
    /// Authentication Header.
    pub const AH: IpProto = IpProto(51);
    /// ICMP for IPv6.
    pub const ICMPV6: IpProto = IpProto(58);
    /// Stream Control Transmission Protocol.
    pub const SCTP: IpProto = IpProto(132);
    /// Fibre Channel.
    pub const FC: IpProto = IpProto(133);
}

/// Capabilities granted to the rule's sources on some destinations of the node.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CapGrant {
    /// The destination prefixes the capabilities apply to.
    #[serde(rename = "Dsts")]
    pub dsts: Vec<IpNet>,
    /// Capability name to its values; a capability may have no values.
    #[serde(rename = "CapMap", deserialize_with = "de_cap_map")]
    pub cap_map: BTreeMap<String, Vec<Value>>,
}

/// Reads a capability map whose values may be `null` (Go's nil slice).
fn de_cap_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<Value>>, D::Error> {
    let raw = BTreeMap::<String, Option<Vec<Value>>>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
}

/// One packet-filter rule: who may send to which destinations, or which capabilities the
/// sources hold on this node. A rule carries `DstPorts` or `CapGrant`, not both.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FilterRule {
    /// Shared by every node's copy of the rule, so filters copy cheaply and equal lists
    /// compare by pointer first.
    #[serde(rename = "SrcIPs")]
    pub src_ips: Arc<[String]>,
    #[serde(rename = "DstPorts", skip_serializing_if = "Vec::is_empty", default)]
    pub dst_ports: Vec<NetPortRange>,
    /// The protocols the rule allows; empty means TCP, UDP, ICMP and ICMPv6.
    #[serde(rename = "IPProto", skip_serializing_if = "Vec::is_empty", default)]
    pub ip_proto: Vec<IpProto>,
    #[serde(rename = "CapGrant", skip_serializing_if = "Vec::is_empty", default)]
    pub cap_grant: Vec<CapGrant>,
}

impl FilterRule {
    /// The rule that lets every node reach every node on every port.
    pub fn allow_all() -> Self {
        FilterRule {
            src_ips: Arc::from(["*".to_string()]),
            dst_ports: vec![NetPortRange { ip: "*".into(), ports: PortRange::ANY }],
            ip_proto: Vec::new(),
            cap_grant: Vec::new(),
        }
    }
}

/// The SSH access rules a node enforces for incoming Tailscale SSH connections.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SshPolicy {
    /// Evaluated in order; the first matching rule decides.
    #[serde(rename = "rules", default)]
    pub rules: Vec<SshRule>,
}

/// One SSH rule: who (`principals`) may log in as which local users (`sshUsers`), and how.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SshRule {
    #[serde(rename = "principals", default)]
    pub principals: Vec<SshPrincipal>,
    /// Requested login to the local user it maps to; `*` covers any login, `=` maps a login
    /// to itself, and an empty value refuses the login.
    #[serde(rename = "sshUsers", default)]
    pub ssh_users: BTreeMap<String, String>,
    #[serde(rename = "action", skip_serializing_if = "Option::is_none", default)]
    pub action: Option<SshAction>,
    /// Environment variable names (with `*` globs) the client may send.
    #[serde(rename = "acceptEnv", skip_serializing_if = "Vec::is_empty", default)]
    pub accept_env: Vec<String>,
}

/// Who a rule applies to; this server always names source nodes by address.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct SshPrincipal {
    #[serde(rename = "nodeIP", skip_serializing_if = "String::is_empty", default)]
    pub node_ip: String,
}

/// What happens when a rule matches.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SshAction {
    #[serde(rename = "accept", skip_serializing_if = "std::ops::Not::not", default)]
    pub accept: bool,
    #[serde(rename = "reject", skip_serializing_if = "std::ops::Not::not", default)]
    pub reject: bool,
    #[serde(rename = "allowAgentForwarding", skip_serializing_if = "std::ops::Not::not", default)]
    pub allow_agent_forwarding: bool,
    #[serde(rename = "allowLocalPortForwarding", skip_serializing_if = "std::ops::Not::not", default)]
    pub allow_local_port_forwarding: bool,
    #[serde(rename = "allowRemotePortForwarding", skip_serializing_if = "std::ops::Not::not", default)]
    pub allow_remote_port_forwarding: bool,
    /// The URL the client asks before accepting (a `check` rule).
    #[serde(rename = "holdAndDelegate", skip_serializing_if = "String::is_empty", default)]
    pub hold_and_delegate: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_grant_rules_omit_dst_ports_and_accept_null_values() {
        let raw = r#"{"SrcIPs":["100.64.0.1"],"CapGrant":[{"Dsts":["100.64.0.2/32"],"CapMap":{"tailscale.com/cap/relay-target":null}}]}"#;
        let rule: FilterRule = serde_json::from_str(raw).unwrap();
        assert!(rule.dst_ports.is_empty());
        assert_eq!(rule.cap_grant[0].cap_map["tailscale.com/cap/relay-target"], Vec::<Value>::new());
        let out = serde_json::to_string(&rule).unwrap();
        assert!(!out.contains("DstPorts") && !out.contains("null"), "{out}");
    }

    #[test]
    fn ip_proto_is_a_number_and_empty_is_omitted() {
        let mut rule = FilterRule::allow_all();
        assert!(!serde_json::to_string(&rule).unwrap().contains("IPProto"));
        rule.ip_proto = vec![IpProto::TCP];
        assert!(serde_json::to_string(&rule).unwrap().contains(r#""IPProto":[6]"#));
    }

    #[test]
    fn ssh_rules_use_go_names_and_omit_empty_fields() {
        let rule = SshRule {
            principals: vec![SshPrincipal { node_ip: "100.64.0.1".into() }],
            ssh_users: BTreeMap::from([("root".to_string(), "root".to_string())]),
            action: Some(SshAction { accept: true, ..Default::default() }),
            accept_env: Vec::new(),
        };
        let out = serde_json::to_string(&SshPolicy { rules: vec![rule] }).unwrap();
        assert_eq!(
            out,
            r#"{"rules":[{"principals":[{"nodeIP":"100.64.0.1"}],"sshUsers":{"root":"root"},"action":{"accept":true}}]}"#
        );
    }
}
