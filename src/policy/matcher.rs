//! Who may talk to whom, from the unreduced rules: each rule becomes a [`Matcher`] (its
//! source and destination addresses, and the nodes they touch), which answers peer
//! visibility (two nodes are peers when either may reach the other) and which routes a
//! viewer may use.
//!
//! A node touches an address set with one of its addresses or one of its subnet routes; an
//! exit node is a destination when the set covers a default route or the whole internet.

use std::sync::Arc;

use ipnet::IpNet;

use super::compile::{Rule, RuleSet};
use super::fasthash::FastMap;
use super::ipset::{IpRange, IpSet};
use super::nodeset::NodeSet;
use super::resolve::Sources;
use super::tailnet::Tailnet;

/// One rule's reach.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The rule's sources (shared between rules).
    pub src: Arc<Sources>,
    pub dst: IpSet,
    /// Nodes on the source side.
    pub src_nodes: NodeSet,
    /// Nodes on the destination side.
    pub dst_nodes: NodeSet,
}

/// Every matcher of a tailnet: shared ones, and each node's own (its `via` rules).
#[derive(Debug, Clone)]
pub struct Matchers {
    pub global: Vec<Matcher>,
    pub per_node: Vec<Vec<Matcher>>,
}

impl Matchers {
    /// Builds the matchers of the global, self and via rules. The nodes each global rule's
    /// destinations touch come from the rule set's index.
    pub fn build(rules: &RuleSet, t: &Tailnet, internet: &IpSet) -> Self {
        let defaults = ["0.0.0.0/0", "::/0"].map(|d| IpRange::net(d.parse().expect("valid")));
        let mut builder = Builder { t, internet, defaults, src_cache: FastMap::default() };
        let indexed = rules.rules.iter().zip(rules.touched.iter().map(Some));
        let self_rules = rules.self_rules.values().flatten().zip(std::iter::repeat(None));
        let global = indexed.chain(self_rules).map(|(r, touched)| builder.matcher(r, touched)).collect();
        let per_node =
            rules.via_rules.iter().map(|list| list.iter().map(|r| builder.matcher(r, None)).collect()).collect();
        Matchers { global, per_node }
    }

    fn for_pair(&self, a: usize, b: usize) -> impl Iterator<Item = &Matcher> {
        self.global.iter().chain(&self.per_node[a]).chain(if a == b { &[][..] } else { &self.per_node[b][..] })
    }

    /// Whether `a` may reach `b`, by `a`'s, `b`'s or the shared rules.
    pub fn can_access(&self, a: usize, b: usize) -> bool {
        self.for_pair(a, b).any(|m| m.src_nodes.contains(a) && m.dst_nodes.contains(b))
    }

    /// The nodes that see `a` as a peer and that `a` sees: either may reach the other.
    pub fn peers(&self, a: usize) -> NodeSet {
        let n = self.per_node.len();
        let mut out = NodeSet::new(n);
        for m in self.global.iter().chain(&self.per_node[a]) {
            if m.src_nodes.contains(a) {
                out.union_with(&m.dst_nodes);
            }
            if m.dst_nodes.contains(a) {
                out.union_with(&m.src_nodes);
            }
        }
        for (b, list) in self.per_node.iter().enumerate() {
            let linked = |m: &Matcher| {
                (m.src_nodes.contains(a) && m.dst_nodes.contains(b))
                    || (m.src_nodes.contains(b) && m.dst_nodes.contains(a))
            };
            if b != a && list.iter().any(linked) {
                out.insert(b);
            }
        }
        out.remove(a);
        out
    }

    /// Whether viewer `v` may use `route`: it reaches into the route, the route reaches it,
    /// or the same through `v`'s own subnet routes.
    pub fn can_access_route(&self, t: &Tailnet, v: usize, route: &IpNet) -> bool {
        let r = IpRange::net(*route);
        let node = &t.nodes[v];
        let v_in = |s: &IpSet| node.addrs().any(|a| s.contains_addr(a));
        let routes_in = |s: &IpSet| t.subnet_ranges[v].iter().any(|x| s.overlaps_range(x));
        self.global.iter().chain(&self.per_node[v]).any(|m| {
            let src = &m.src.set;
            (v_in(src) && m.dst.overlaps_range(&r))
                || (src.overlaps_range(&r) && v_in(&m.dst))
                || (routes_in(src) && m.dst.overlaps_range(&r))
                || (src.overlaps_range(&r) && routes_in(&m.dst))
        })
    }
}

struct Builder<'a> {
    t: &'a Tailnet,
    internet: &'a IpSet,
    /// The default routes, `0.0.0.0/0` and `::/0`.
    defaults: [IpRange; 2],
    src_cache: FastMap<*const Sources, NodeSet>,
}

impl Builder<'_> {
    /// The matcher of a rule; `touched` is what its destinations touch, when known.
    fn matcher(&mut self, rule: &Rule, touched: Option<&NodeSet>) -> Matcher {
        let t = self.t;
        let src = &rule.src;
        let touching = || if src.by_nodes { t.touching_nodes(&src.nodes, &src.set) } else { t.touching(&src.set) };
        let src_nodes = self.src_cache.entry(Arc::as_ptr(src)).or_insert_with(touching).clone();
        let dst = rule.dst_set(t);
        let mut dst_nodes = touched.cloned().unwrap_or_else(|| t.touching(&dst));
        let covers_internet = self.internet.ranges().iter().all(|r| dst.contains_range(r));
        if self.defaults.iter().any(|d| dst.contains_range(d)) || covers_internet {
            dst_nodes.union_with(&t.exit_nodes);
        }
        Matcher { src: rule.src.clone(), dst, src_nodes, dst_nodes }
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::fixture::{compile, ALICE, BOB, EXIT, ROUTER, SERVER};

    fn primary(_: &ipnet::IpNet, candidates: &[u64]) -> Option<u64> {
        candidates.iter().copied().min()
    }

    #[test]
    fn peers_are_nodes_either_side_may_reach() {
        let c = compile(r#""acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:22"]}]"#);
        assert_eq!(c.peers(ALICE), [SERVER]);
        assert_eq!(c.peers(SERVER), [ALICE]);
        assert!(c.peers(BOB).is_empty());
        assert!(c.can_access(ALICE, SERVER) && !c.can_access(SERVER, ALICE));
    }

    #[test]
    fn routes_and_exit_nodes_are_visible_to_who_may_use_them() {
        let c = compile(
            r#""acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["10.33.0.0/16:*", "autogroup:internet:*"]}]"#,
        );
        assert_eq!(c.peers(ALICE), [ROUTER, EXIT]);
        let routes: Vec<String> = c.allowed_ips(ALICE, ROUTER, primary).iter().map(ToString::to_string).collect();
        assert_eq!(routes, ["100.64.0.4/32", "fd7a:115c:a1e0::4/128", "10.33.0.0/16"]);
        assert_eq!(c.allowed_ips(ALICE, EXIT, primary).len(), 4, "both default routes");
        assert_eq!(c.allowed_ips(BOB, ROUTER, primary).len(), 2, "no access, no route");
        assert!(c.can_access_route(ALICE, &"10.33.1.0/24".parse().unwrap()));
        assert!(!c.can_access_route(BOB, &"10.33.1.0/24".parse().unwrap()));
    }

    #[test]
    fn via_grants_steer_their_sources_to_the_tagged_router() {
        let c = compile(
            r#""grants": [{"src": ["bob@example.org"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["tag:router"]}]"#,
        );
        assert_eq!(c.peers(BOB), [ROUTER]);
        let elect_none = |_: &ipnet::IpNet, _: &[u64]| None;
        assert_eq!(c.allowed_ips(BOB, ROUTER, primary).len(), 3);
        assert_eq!(c.allowed_ips(BOB, ROUTER, elect_none).len(), 2, "not elected, no route");
    }
}
