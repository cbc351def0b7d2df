//! Route steering by `via` grants: a viewer among a via grant's sources reaches the grant's
//! destinations only through routers carrying one of its `via` tags, whichever router would
//! otherwise be primary for the route.

use ipnet::IpNet;

use super::alias::{Alias, AutoGroup};
use super::ipset::{IpRange, IpSet};
use super::nodeset::NodeSet;
use super::resolve::Resolver;
use super::tailnet::{is_exit_route, Tailnet};
use super::types::ParsedPolicy;

/// One `via` grant, as steering.
#[derive(Debug, Clone)]
struct Steering {
    /// The nodes among the grant's sources.
    viewers: NodeSet,
    /// The destination addresses (the internet excluded).
    dst: IpSet,
    /// Whether `autogroup:internet` is a destination.
    internet: bool,
    /// The nodes carrying one of the `via` tags.
    routers: NodeSet,
    /// Those of the routers that route a destination.
    serving: NodeSet,
}

/// Every via grant's steering.
#[derive(Debug, Clone)]
pub struct RouteSteering {
    steerings: Vec<Steering>,
}

impl RouteSteering {
    /// Resolves the policy's via grants.
    pub fn compile(policy: &ParsedPolicy, resolver: &mut Resolver<'_>) -> Self {
        let n = resolver.tailnet.len();
        let mut steerings = Vec::new();
        for grant in policy.grants.iter().filter(|g| !g.via.is_empty()) {
            let viewers = resolver.sources(&grant.src, false).nodes.clone();
            let internet = grant.dst.contains(&Alias::AutoGroup(AutoGroup::Internet));
            let dst = IpSet::from_ranges(
                grant
                    .dst
                    .iter()
                    .filter(|d| **d != Alias::AutoGroup(AutoGroup::Internet))
                    .flat_map(|d| resolver.resolve(d).set.ranges().to_vec()),
            );
            let mut routers = NodeSet::new(n);
            for tag in &grant.via {
                if let Some(nodes) = resolver.tailnet.by_tag.get(tag) {
                    routers.union_with(nodes);
                }
            }
            let t = resolver.tailnet;
            let mut serving = NodeSet::new(n);
            for r in routers.iter() {
                let routes_dst = t.subnet_ranges[r].iter().any(|s| dst.overlaps_range(s));
                if routes_dst || (internet && t.exit_nodes.contains(r)) {
                    serving.insert(r);
                }
            }
            steerings.push(Steering { viewers, dst, internet, routers, serving });
        }
        RouteSteering { steerings }
    }

    /// The nodes that see `v` as a peer through steering: the routers serving a via grant
    /// `v` is a source of, and the sources of the via grants `v` serves.
    pub fn peers(&self, v: usize, n: usize) -> NodeSet {
        let mut out = NodeSet::new(n);
        for s in &self.steerings {
            if s.viewers.contains(v) {
                out.union_with(&s.serving);
            }
            if s.serving.contains(v) {
                out.union_with(&s.viewers);
            }
        }
        out.remove(v);
        out
    }

    /// The routers viewer `v` must use for `route`, when a via grant steers it there.
    pub fn routers_for(&self, t: &Tailnet, v: usize, route: &IpNet) -> Option<NodeSet> {
        let exit = is_exit_route(route);
        let range = IpRange::net(*route);
        let mut out: Option<NodeSet> = None;
        for s in self.steerings.iter().filter(|s| s.viewers.contains(v)) {
            let covers = if exit { s.internet } else { s.dst.overlaps_range(&range) };
            if covers {
                let set = out.get_or_insert_with(|| NodeSet::new(t.len()));
                for r in s.routers.iter() {
                    let node = &t.nodes[r];
                    let offers =
                        if exit { node.exit_routes().contains(route) } else { node.subnet_routes().contains(route) };
                    if offers {
                        set.insert(r);
                    }
                }
            }
        }
        out
    }
}
