//! [`CompiledPolicy`]: a policy joined with the current tailnet, answering everything map
//! generation asks per node: its packet filter, its peers, the routes it may use through
//! each peer, its SSH policy and capabilities, and which advertised routes to approve.
//! Nodes are named by their id; an unknown id gets the empty answer.

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
        let mut peers = self.matchers.peers(i);
        peers.union_with(&self.steering.peers(i, self.tailnet.len()));
        peers.iter().map(|j| self.tailnet.nodes[j].id).collect()
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
