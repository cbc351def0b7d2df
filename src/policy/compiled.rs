//! [`CompiledPolicy`]: a policy joined with the current tailnet, answering everything map
//! generation asks per node: its packet filter, its peers, the routes it may use through
//! each peer, its SSH policy and capabilities, and which advertised routes to approve.
//! Nodes are named by their id; an unknown id gets the empty answer.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::approve::AutoApproval;
use super::attrs::{CapMap, NodeAttrs};
use super::compile::RuleSet;
use super::matcher::Matchers;
use super::nodeset::NodeSet;
use super::resolve::Resolver;
use super::routes::RouteSteering;
use super::ssh::SshRules;
use super::tailnet::{PolicyNode, Tailnet};
use super::types::ParsedPolicy;
use crate::tailcfg::{FilterRule, SshPolicy};

/// Above this many changed nodes, and an eighth of the tailnet, `affected_since` stops
/// tracking them one by one: nearly every node is affected anyway.
const MAX_TRACKED_CHANGES: usize = 64;

/// A policy compiled for one state of the tailnet. Immutable; compile again when the policy
/// or the nodes change.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    tailnet: Tailnet,
    rules: RuleSet,
    matchers: Matchers,
    steering: RouteSteering,
    ssh: SshRules,
    attrs: NodeAttrs,
    approval: AutoApproval,
}

impl CompiledPolicy {
    /// Compiles `policy` for these nodes.
    pub fn compile(policy: &ParsedPolicy, nodes: Vec<PolicyNode>) -> Self {
        let tailnet = Tailnet::new(nodes);
        let mut resolver = Resolver::new(policy, &tailnet);
        let rules = RuleSet::compile(policy, &mut resolver);
        let matchers = Matchers::build(&rules, &tailnet, resolver.internet());
        let steering = RouteSteering::compile(policy, &mut resolver);
        let ssh = SshRules::compile(&policy.ssh, &mut resolver);
        let attrs = NodeAttrs::compile(policy, &mut resolver);
        let approval = AutoApproval::compile(policy, &mut resolver);
        drop(resolver);
        CompiledPolicy { tailnet, rules, matchers, steering, ssh, attrs, approval }
    }

    /// The indexed tailnet.
    pub(super) fn tailnet(&self) -> &Tailnet {
        &self.tailnet
    }

    /// The compiled rules.
    pub(super) fn rule_set(&self) -> &RuleSet {
        &self.rules
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> Option<&PolicyNode> {
        self.tailnet.index(id).map(|i| &self.tailnet.nodes[i])
    }

    /// The packet filter node `id` enforces (`PacketFilter`); empty allows nothing in.
    pub fn filter(&self, id: u64) -> Vec<FilterRule> {
        self.tailnet.index(id).map(|i| self.rules.filter(&self.tailnet, i)).unwrap_or_default()
    }

    /// The ids of the nodes in `id`'s peer list.
    pub fn peers(&self, id: u64) -> Vec<u64> {
        let Some(i) = self.tailnet.index(id) else { return Vec::new() };
        self.peer_set(i).iter().map(|j| self.tailnet.nodes[j].id).collect()
    }

    /// The peers of the node at index `i`.
    fn peer_set(&self, i: usize) -> NodeSet {
        let mut peers = self.matchers.peers(i);
        peers.union_with(&self.steering.peers(i, self.tailnet.len()));
        peers
    }

    /// The nodes whose rules (peers, packet filter, SSH policy, capabilities) may differ
    /// between `old` and this compilation of the same policy, when the tailnets they were
    /// compiled for differ in some nodes: those nodes, and every node that was or is related
    /// to one of them, every exit node and every node without an address. A node's filter
    /// lists sources that may reach it, which makes them peers (in both directions), except
    /// that an exit node's filter also takes rules to parts of the internet, and the filter
    /// of a node without an address rules to `*`, neither of which makes it a peer;
    /// its SSH policy names only the sources of the rules that concern it; its capabilities
    /// depend on itself alone. `None` when every node is taken as affected: the tailnet's
    /// subnet routes changed (`*` as a source lists them all), or so many nodes changed
    /// that nearly every node is affected anyway.
    pub fn affected_since(&self, old: &CompiledPolicy) -> Option<BTreeSet<u64>> {
        let changed: Vec<u64> = old
            .tailnet
            .nodes
            .iter()
            .filter(|n| self.node(n.id) != Some(*n))
            .chain(self.tailnet.nodes.iter().filter(|n| old.node(n.id).is_none()))
            .map(|n| n.id)
            .collect();
        let size = self.tailnet.len().max(old.tailnet.len());
        let many = changed.len() > MAX_TRACKED_CHANGES && changed.len() * 8 > size;
        if many || self.tailnet.all_subnet_routes != old.tailnet.all_subnet_routes {
            return None;
        }
        let mut out: BTreeSet<u64> = changed.iter().copied().collect();
        for c in [old, self] {
            out.extend(c.tailnet.exit_nodes.iter().map(|i| c.tailnet.nodes[i].id));
            out.extend(c.tailnet.nodes.iter().filter(|n| n.addrs().next().is_none()).map(|n| n.id));
            for &id in &changed {
                let Some(i) = c.tailnet.index(id) else { continue };
                let mut related = c.peer_set(i);
                related.union_with(&c.ssh.related(&c.tailnet, i));
                out.extend(related.iter().map(|j| c.tailnet.nodes[j].id));
            }
        }
        Some(out)
    }

    /// Every node with an approved route (subnet or exit): the peers whose `AllowedIPs`
    /// may differ from one viewer to another.
    pub fn route_holders(&self) -> Vec<u64> {
        let mut holders = self.tailnet.exit_nodes.clone();
        for &r in &self.tailnet.routers {
            holders.insert(r);
        }
        holders.iter().map(|i| self.tailnet.nodes[i].id).collect()
    }

    /// Whether node `from` may reach node `to` (an address, a subnet route, or, for an exit
    /// node, the internet).
    pub fn can_access(&self, from: u64, to: u64) -> bool {
        match (self.tailnet.index(from), self.tailnet.index(to)) {
            (Some(a), Some(b)) => self.matchers.can_access(a, b),
            _ => false,
        }
    }

    /// Whether node `viewer` may use `route` through whichever peer offers it.
    pub fn can_access_route(&self, viewer: u64, route: &IpNet) -> bool {
        self.tailnet.index(viewer).is_some_and(|v| self.matchers.can_access_route(&self.tailnet, v, route))
    }

    /// The `AllowedIPs` `viewer` should get for `peer`: the peer's addresses, then each of
    /// its routes the viewer may use through it. A subnet route goes through one router:
    /// `elect(route, candidates)` picks it among the candidate node ids (the server's
    /// high-availability choice). A viewer with access to the route (or routing it too)
    /// chooses among every router of the route; one reaching it only through a `via` grant
    /// chooses among that grant's routers. Exit routes are not elected: each exit node the
    /// viewer may use offers its own.
    pub fn allowed_ips(&self, viewer: u64, peer: u64, elect: impl Fn(&IpNet, &[u64]) -> Option<u64>) -> Vec<IpNet> {
        let (Some(v), Some(p)) = (self.tailnet.index(viewer), self.tailnet.index(peer)) else { return Vec::new() };
        let node = &self.tailnet.nodes[p];
        let mut out: Vec<IpNet> = node.addrs().map(IpNet::from).collect();
        for route in node.subnet_routes() {
            let all_routers = || {
                let mut set = NodeSet::new(self.tailnet.len());
                for &r in &self.tailnet.routers {
                    if self.tailnet.nodes[r].subnet_routes().contains(&route) {
                        set.insert(r);
                    }
                }
                set
            };
            let also_routes = self.tailnet.nodes[v].subnet_routes().contains(&route);
            let candidates = if also_routes || self.matchers.can_access_route(&self.tailnet, v, &route) {
                all_routers()
            } else {
                match self.steering.routers_for(&self.tailnet, v, &route) {
                    Some(routers) => routers,
                    None => continue,
                }
            };
            let ids: Vec<u64> = candidates.iter().map(|i| self.tailnet.nodes[i].id).collect();
            if elect(&route, &ids) == Some(peer) {
                out.push(route);
            }
        }
        for route in node.exit_routes() {
            let steered_here = || self.steering.routers_for(&self.tailnet, v, &route).is_some_and(|r| r.contains(p));
            if self.matchers.can_access_route(&self.tailnet, v, &route) || steered_here() {
                out.push(route);
            }
        }
        out
    }

    /// The SSH policy of node `id`, or `None` when no rule concerns it. `server_url` is the
    /// URL clients reach this server at, where `check` rules delegate.
    pub fn ssh_policy(&self, id: u64, server_url: &str) -> Option<SshPolicy> {
        let i = self.tailnet.index(id)?;
        let policy = self.ssh.policy_for(&self.tailnet, i, server_url);
        (!policy.rules.is_empty()).then_some(policy)
    }

    /// The capabilities the policy adds to node `id`'s own capability map.
    pub fn self_caps(&self, id: u64) -> CapMap {
        self.tailnet.index(id).map(|i| self.attrs.self_caps(i)).unwrap_or_default()
    }

    /// The capabilities other nodes see on node `id`.
    pub fn peer_caps(&self, id: u64) -> CapMap {
        self.tailnet.index(id).map(|i| self.attrs.peer_caps(&self.tailnet, i)).unwrap_or_default()
    }

    /// Whether node `id` may have the advertised `route` approved without an administrator.
    pub fn auto_approves(&self, id: u64, route: &IpNet) -> bool {
        self.tailnet.index(id).is_some_and(|i| self.approval.approves(i, route))
    }
}
