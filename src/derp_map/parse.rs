//! Reading a DERP map in either form Headscale reads: Tailscale's JSON (`Regions`,
//! `RegionID`, `HostName`, ... as `derp.urls` serve it) or Headscale's YAML
//! (`derp-example.yaml`: `regions`, `regionid`, `hostname`, ...). Keys are matched without
//! regard to case; a region written as `null` removes that region when maps are merged.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use crate::tailcfg::{DerpNode, DerpRegion};

/// A map's regions by id; `None` removes the region from the maps merged before.
pub type PartialMap = BTreeMap<i32, Option<DerpRegion>>;

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMap {
    regions: BTreeMap<String, Option<RawRegion>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRegion {
    regionid: i32,
    regioncode: String,
    regionname: String,
    nodes: Vec<RawNode>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawNode {
    name: String,
    regionid: i32,
    hostname: String,
    ipv4: String,
    ipv6: String,
    stunport: i32,
    stunonly: bool,
    derpport: u16,
    canport80: bool,
    insecurefortests: bool,
}

/// Every mapping key in lower case, numbers as text.
fn lower_keys(v: Value) -> Value {
    match v {
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.to_lowercase(),
                        Value::Number(n) => n.to_string(),
                        other => serde_yaml::to_string(&other).unwrap_or_default().trim().to_string(),
                    };
                    (Value::String(key), lower_keys(v))
                })
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(lower_keys).collect()),
        other => other,
    }
}

/// Parses a DERP map; the error says what is wrong.
pub fn parse(text: &str) -> Result<PartialMap, String> {
    let tree: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let raw: RawMap = serde_yaml::from_value(lower_keys(tree)).map_err(|e| e.to_string())?;
    let mut map = PartialMap::new();
    for (key, region) in raw.regions {
        let id: i32 = key.parse().map_err(|_| format!("region key {key:?} is not a number"))?;
        let region = region.map(|r| {
            let region_id = if r.regionid == 0 { id } else { r.regionid };
            let nodes = r
                .nodes
                .into_iter()
                .map(|n| DerpNode {
                    name: n.name,
                    region_id: if n.regionid == 0 { region_id } else { n.regionid },
                    host_name: n.hostname,
                    ipv4: n.ipv4,
                    ipv6: n.ipv6,
                    stun_port: n.stunport,
                    stun_only: n.stunonly,
                    derp_port: n.derpport,
                    insecure_for_tests: n.insecurefortests,
                    can_port_80: n.canport80,
                })
                .collect();
            DerpRegion { region_id, region_code: r.regioncode, region_name: r.regionname, nodes }
        });
        map.insert(id, region);
    }
    Ok(map)
}
