//! The policy as map generation sees it for one snapshot of the tailnet: allow-all when no
//! policy is configured, else the policy compiled for the snapshot's nodes; the primary
//! router of each subnet route; and each node's rules (peers, packet filter, SSH policy,
//! capabilities), derived on first use and shared by every session until the view changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use ipnet::IpNet;
use roaring::RoaringTreemap;

use super::attrs::CapMap;
use super::compiled::CompiledPolicy;
use super::tailnet::{PolicyNode, PolicyUser};
use super::types::ParsedPolicy;
use crate::model::{Node, NodeId, User};
use crate::tailcfg::{FilterRule, SshPolicy};

/// What a node may do and see under the policy.
#[derive(Debug, PartialEq)]
pub struct NodeRules {
    /// The nodes in its peer list (a compressed bitmap: node ids are dense, and every node's
    /// list is held at once); `None` is every node.
    peers: Option<RoaringTreemap>,
    /// Its packet filter: what it accepts from whom.
    pub filter: Arc<Vec<FilterRule>>,
    /// Its SSH policy, if any rule concerns it.
    pub ssh: Option<Arc<SshPolicy>>,
    /// The capabilities the policy gives it.
    pub caps: CapMap,
}

impl NodeRules {
    /// Whether `peer` is in the node's peer list.
    pub fn sees(&self, peer: NodeId) -> bool {
        self.peers.as_ref().is_none_or(|p| p.contains(peer))
    }

    /// The nodes in one of the two peer lists but not in the other; `None` when either
    /// list is every node.
    pub fn peers_differing(&self, other: &NodeRules) -> Option<RoaringTreemap> {
        Some(self.peers.as_ref()? ^ other.peers.as_ref()?)
    }
}

/// The configured policy and its compilation for the current nodes.
#[derive(Debug, Clone)]
pub struct ActivePolicy {
    pub source: Arc<ParsedPolicy>,
    pub compiled: Arc<CompiledPolicy>,
}

/// One version of the policy's answers. A new version gets a new `epoch`.
#[derive(Debug)]
pub struct PolicyView {
    /// Changes whenever any answer of this view may have changed.
    pub epoch: u64,
    policy: Option<ActivePolicy>,
    /// The router each subnet route goes through.
    primaries: BTreeMap<IpNet, NodeId>,
    server_url: Arc<str>,
    rules: Mutex<HashMap<NodeId, Arc<NodeRules>>>,
    allow_all: Arc<NodeRules>,
    route_holders: OnceLock<Vec<NodeId>>,
}

impl Default for PolicyView {
    fn default() -> Self {
        PolicyView::new(0, None, BTreeMap::new(), Arc::from(""))
    }
}

impl PolicyView {
    /// A view of `policy` (allow-all when `None`) with these primary routers. `server_url`
    /// is where SSH `check` rules send clients.
    pub fn new(
        epoch: u64,
        policy: Option<ActivePolicy>,
        primaries: BTreeMap<IpNet, NodeId>,
        server_url: Arc<str>,
    ) -> Self {
        let allow_all = Arc::new(NodeRules {
            peers: None,
            filter: Arc::new(vec![FilterRule::allow_all()]),
            ssh: None,
            caps: CapMap::new(),
        });
        PolicyView {
            epoch,
            policy,
            primaries,
            server_url,
            rules: Mutex::default(),
            allow_all,
            route_holders: OnceLock::new(),
        }
    }

    /// The next version: another policy or other primary routers.
    pub fn successor(&self, policy: Option<ActivePolicy>, primaries: BTreeMap<IpNet, NodeId>) -> PolicyView {
        PolicyView::new(self.epoch + 1, policy, primaries, self.server_url.clone())
    }

    /// The next version for `policy`, the same policy as this view's, compiled again or not,
    /// keeping the rules this view derived for every node the new compilation cannot have
    /// changed ([`CompiledPolicy::affected_since`]). Only the affected nodes' rules are
    /// derived again, and a session whose rules were kept sees the same `Arc`.
    pub fn successor_for_nodes(&self, policy: ActivePolicy, primaries: BTreeMap<IpNet, NodeId>) -> PolicyView {
        let affected = match &self.policy {
            Some(old) if Arc::ptr_eq(&old.compiled, &policy.compiled) => Some(BTreeSet::new()),
            Some(old) if Arc::ptr_eq(&old.source, &policy.source) => policy.compiled.affected_since(&old.compiled),
            _ => None,
        };
        let next = self.successor(Some(policy), primaries);
        if let Some(affected) = affected {
            let kept = self.rules.lock().expect("rules lock");
            let kept = kept.iter().filter(|(id, _)| !affected.contains(id)).map(|(id, r)| (*id, r.clone()));
            next.rules.lock().expect("rules lock").extend(kept);
        }
        next
    }

    /// The configured policy, if any.
    pub fn policy(&self) -> Option<&ActivePolicy> {
        self.policy.as_ref()
    }

    /// The router each subnet route goes through.
    pub fn primaries(&self) -> &BTreeMap<IpNet, NodeId> {
        &self.primaries
    }

    /// Node `id`'s rules, derived once per view.
    pub fn rules(&self, id: NodeId) -> Arc<NodeRules> {
        let Some(active) = &self.policy else { return self.allow_all.clone() };
        if let Some(r) = self.rules.lock().expect("rules lock").get(&id) {
            return r.clone();
        }
        let p = &active.compiled;
        let derived = Arc::new(NodeRules {
            peers: Some(compact(p.peers(id).into_iter().collect())),
            filter: Arc::new(p.filter(id)),
            ssh: p.ssh_policy(id, &self.server_url).map(Arc::new),
            caps: p.self_caps(id),
        });
        self.rules.lock().expect("rules lock").entry(id).or_insert(derived).clone()
    }

    /// The capabilities peers see on node `id`.
    pub fn peer_caps(&self, id: NodeId) -> CapMap {
        self.policy.as_ref().map(|a| a.compiled.peer_caps(id)).unwrap_or_default()
    }

    /// The subnet routes `id` is the primary router of.
    pub fn primary_routes(&self, id: NodeId) -> Vec<IpNet> {
        self.primaries.iter().filter(|(_, r)| **r == id).map(|(route, _)| *route).collect()
    }

    /// Whether `peer`'s `AllowedIPs` differ between viewers (a policy decides which of its
    /// routes each viewer may use); otherwise one rendering serves every viewer.
    pub fn varies_by_viewer(&self, peer: &Node) -> bool {
        self.policy.is_some() && peer.live_routes().next().is_some()
    }

    /// The nodes for which `varies_by_viewer` holds, as the policy was compiled.
    pub fn viewer_dependent(&self) -> &[NodeId] {
        self.route_holders.get_or_init(|| self.policy.as_ref().map(|a| a.compiled.route_holders()).unwrap_or_default())
    }

    /// The `AllowedIPs` `viewer` gets for `peer`: its addresses, the subnet routes it is the
    /// primary router of, and its exit routes, as far as the policy lets the viewer use them.
    pub fn allowed_ips(&self, viewer: NodeId, peer: &Node) -> Vec<IpNet> {
        match &self.policy {
            None => {
                let mut out: Vec<IpNet> = peer.ips().into_iter().map(IpNet::from).collect();
                out.extend(
                    peer.live_routes().filter(|r| r.prefix_len() == 0 || self.primaries.get(r) == Some(&peer.id)),
                );
                out
            }
            Some(active) => {
                active.compiled.allowed_ips(viewer, peer.id, |route, candidates| match self.primaries.get(route) {
                    Some(p) if candidates.contains(p) => Some(*p),
                    _ => candidates.iter().min().copied(),
                })
            }
        }
    }
}

/// `set` in its smallest form: runs of consecutive ids (node ids are handed out in order)
/// take a few bytes each, and a lookup in them stays in one cache line.
pub fn compact(mut set: RoaringTreemap) -> RoaringTreemap {
    set.optimize();
    set
}

/// A stored user as the policy sees it.
impl From<&User> for PolicyUser {
    fn from(u: &User) -> Self {
        PolicyUser { id: u.id, name: u.name.clone(), email: u.email.clone() }
    }
}

/// A node as the policy sees it.
pub fn policy_node(node: &Node, owner: Option<&User>) -> PolicyNode {
    PolicyNode {
        id: node.id,
        name: node.given_name.clone(),
        ipv4: node.ipv4,
        ipv6: node.ipv6,
        user: owner.filter(|_| !node.is_tagged()).map(PolicyUser::from),
        tags: node.tags.clone(),
        routable_ips: node.hostinfo.routable_ips.clone(),
        approved_routes: node.approved_routes.clone(),
    }
}
