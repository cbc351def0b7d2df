//! The DERP map: the relay regions a client may use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// All DERP regions, keyed by region id.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct DerpMap {
    #[serde(rename = "Regions")]
    pub regions: BTreeMap<i32, DerpRegion>,
}

/// One DERP region.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct DerpRegion {
    #[serde(rename = "RegionID")]
    pub region_id: i32,
    #[serde(rename = "RegionCode")]
    pub region_code: String,
    #[serde(rename = "RegionName")]
    pub region_name: String,
    #[serde(rename = "Nodes")]
    pub nodes: Vec<DerpNode>,
}

/// One relay server in a region.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct DerpNode {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "RegionID")]
    pub region_id: i32,
    #[serde(rename = "HostName")]
    pub host_name: String,
    /// An address, `"none"` to disable IPv4, or empty to resolve `HostName`.
    #[serde(rename = "IPv4", skip_serializing_if = "String::is_empty", default)]
    pub ipv4: String,
    #[serde(rename = "IPv6", skip_serializing_if = "String::is_empty", default)]
    pub ipv6: String,
    /// `-1` disables STUN, `0` means 3478.
    #[serde(rename = "STUNPort", skip_serializing_if = "super::is_default", default)]
    pub stun_port: i32,
    /// The node only answers STUN; it relays nothing.
    #[serde(rename = "STUNOnly", skip_serializing_if = "std::ops::Not::not", default)]
    pub stun_only: bool,
    /// `0` means 443.
    #[serde(rename = "DERPPort", skip_serializing_if = "super::is_default", default)]
    pub derp_port: u16,
    #[serde(rename = "InsecureForTests", skip_serializing_if = "std::ops::Not::not", default)]
    pub insecure_for_tests: bool,
    #[serde(rename = "CanPort80", skip_serializing_if = "std::ops::Not::not", default)]
    pub can_port_80: bool,
}
