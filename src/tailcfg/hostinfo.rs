//! Hostinfo and NetInfo: what a client tells about itself. Both Go's and tailscale-rs's key
//! spellings are accepted; Go's are written. Fields this server does not interpret are kept
//! as they came, so peers see them unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A client's network conditions, including its home DERP region.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NetInfo {
    #[serde(rename = "PreferredDERP", alias = "PreferredDerp", skip_serializing_if = "super::is_default")]
    pub preferred_derp: i32,
    #[serde(rename = "DERPLatency", alias = "DerpLatency", skip_serializing_if = "BTreeMap::is_empty")]
    pub derp_latency: BTreeMap<String, f64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// What a node reports about its host.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Hostinfo {
    #[serde(rename = "IPNVersion", alias = "IpnVersion", skip_serializing_if = "String::is_empty")]
    pub ipn_version: String,
    #[serde(rename = "OS", alias = "Os", skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(rename = "OSVersion", alias = "OsVersion", skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    #[serde(rename = "App", skip_serializing_if = "String::is_empty")]
    pub app: String,
    #[serde(rename = "Hostname", skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(rename = "RoutableIPs", alias = "RoutableIps", skip_serializing_if = "Vec::is_empty")]
    pub routable_ips: Vec<ipnet::IpNet>,
    #[serde(rename = "RequestTags", skip_serializing_if = "Vec::is_empty")]
    pub request_tags: Vec<String>,
    #[serde(rename = "NetInfo", skip_serializing_if = "Option::is_none")]
    pub net_info: Option<NetInfo>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Hostinfo {
    /// The home DERP region the client prefers, if it said.
    pub fn preferred_derp(&self) -> Option<i32> {
        self.net_info.as_ref().map(|n| n.preferred_derp).filter(|r| *r > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rust_client_spellings_and_writes_go_ones() {
        let raw = r#"{"App":"tailscale-rs","Hostname":"node-a","IpnVersion":"0.6.1",
            "NetInfo":{"DerpLatency":{"900-v4":0.0002},"PreferredDerp":900,"WorkingUdp":true}}"#;
        let h: Hostinfo = serde_json::from_str(raw).unwrap();
        assert_eq!(h.preferred_derp(), Some(900));
        assert_eq!(h.ipn_version, "0.6.1");
        let out = serde_json::to_string(&h).unwrap();
        assert!(out.contains(r#""PreferredDERP":900"#), "{out}");
        assert!(out.contains(r#""IPNVersion":"0.6.1""#), "{out}");
        assert!(out.contains(r#""WorkingUdp":true"#), "{out}");
    }
}
