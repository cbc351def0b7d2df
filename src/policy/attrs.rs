//! Node attributes: the capabilities `nodeAttrs` (and `randomizeClientPort`) give a node in
//! its own capability map, and the one a peer shows of it (`suggest-exit-node`, only on an
//! approved exit node).

use std::collections::BTreeMap;

use serde_json::Value;

use super::nodeset::NodeSet;
use super::resolve::Resolver;
use super::tailnet::Tailnet;
use super::types::ParsedPolicy;

/// Shown on an exit node the tailnet suggests.
pub const SUGGEST_EXIT_NODE: &str = "suggest-exit-node";
/// `randomizeClientPort` as a node capability.
pub const RANDOMIZE_CLIENT_PORT: &str = "randomize-client-port";

/// A capability map: capability to its values (possibly none).
pub type CapMap = BTreeMap<String, Vec<Value>>;

/// Every node attribute rule with the nodes it targets.
#[derive(Debug, Clone)]
pub struct NodeAttrs {
    rules: Vec<(NodeSet, CapMap)>,
    randomize_client_port: bool,
}

impl NodeAttrs {
    /// Resolves the targets of the policy's `nodeAttrs`.
    pub fn compile(policy: &ParsedPolicy, resolver: &mut Resolver<'_>) -> Self {
        let n = resolver.tailnet.len();
        let rules = policy
            .node_attrs
            .iter()
            .map(|attr| {
                let mut targets = NodeSet::new(n);
                attr.target.iter().for_each(|a| targets.union_with(&resolver.resolve(a).nodes));
                let mut caps: CapMap = attr.attr.iter().map(|a| (a.clone(), Vec::new())).collect();
                for (k, v) in &attr.app {
                    caps.entry(k.clone()).or_default().extend(v.iter().cloned());
                }
                (targets, caps)
            })
            .collect();
        NodeAttrs { rules, randomize_client_port: policy.randomize_client_port }
    }

    /// The capabilities the policy gives node `i` in its own map.
    pub fn self_caps(&self, i: usize) -> CapMap {
        let mut out = CapMap::new();
        for (targets, caps) in &self.rules {
            if targets.contains(i) {
                for (k, v) in caps {
                    out.entry(k.clone()).or_default().extend(v.iter().cloned());
                }
            }
        }
        if self.randomize_client_port {
            out.entry(RANDOMIZE_CLIENT_PORT.to_string()).or_default();
        }
        out
    }

    /// The capabilities peers see on node `i`.
    pub fn peer_caps(&self, t: &Tailnet, i: usize) -> CapMap {
        let mut out = CapMap::new();
        if t.exit_nodes.contains(i) {
            if let Some(v) = self.self_caps(i).remove(SUGGEST_EXIT_NODE) {
                out.insert(SUGGEST_EXIT_NODE.to_string(), v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixture::{compile, ALICE, EXIT, SERVER};

    #[test]
    fn targets_get_their_attributes_and_exit_nodes_show_suggestions() {
        let c = compile(
            r#""nodeAttrs": [{"target": ["tag:server", "tag:exit"], "attr": ["nextdns:abc", "suggest-exit-node"]},
                            {"target": ["*"], "app": {"example.com/cap/x": [{"v": 1}]}}],
               "randomizeClientPort": true"#,
        );
        let server = c.self_caps(SERVER);
        assert_eq!(
            server.keys().collect::<Vec<_>>(),
            ["example.com/cap/x", "nextdns:abc", RANDOMIZE_CLIENT_PORT, SUGGEST_EXIT_NODE]
        );
        assert_eq!(server["example.com/cap/x"], [serde_json::json!({"v": 1})]);
        assert!(
            c.self_caps(ALICE).contains_key(RANDOMIZE_CLIENT_PORT) && !c.self_caps(ALICE).contains_key("nextdns:abc")
        );
        assert!(c.peer_caps(SERVER).is_empty(), "not an exit node");
        assert_eq!(c.peer_caps(EXIT).keys().collect::<Vec<_>>(), [SUGGEST_EXIT_NODE]);
    }
}
