//! Aliases resolved against the tailnet: which nodes and addresses each one stands for, and
//! how a rule's sources are written (`SrcIPs`), following what Tailscale's control plane
//! emits: node addresses one by one, prefixes as written, `*` as the Tailscale ranges plus
//! every approved subnet route.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ipnet::IpNet;

use super::alias::{Alias, AutoGroup};
use super::fasthash::{FastHasher, FastMap};
use super::ipset::{merge_sorted, Atom, IpRange, IpSet};
use super::nodeset::NodeSet;
use super::tailnet::Tailnet;
use super::types::ParsedPolicy;

/// The Tailscale IPv4 range.
pub const CGNAT: &str = "100.64.0.0/10";
/// Inside the Tailscale IPv4 range, kept for ChromeOS virtual machines.
const CHROMEOS: &str = "100.115.92.0/23";
/// The Tailscale IPv6 range.
pub const TAILSCALE_ULA: &str = "fd7a:115c:a1e0::/48";
/// Private, link-local and Tailscale ranges: not "the internet".
pub const NOT_INTERNET: [&str; 8] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "fd7a:115c:a1e0::/48",
];

fn net(s: &str) -> IpNet {
    s.parse().expect("constant prefix")
}

/// What `autogroup:internet` covers: public IPv4 and global unicast IPv6.
pub fn internet() -> IpSet {
    let all = IpSet::from_ranges([IpRange::net(net("0.0.0.0/0")), IpRange::net(net("2000::/3"))]);
    all.subtract(&IpSet::from_ranges(NOT_INTERNET.iter().map(|s| IpRange::net(net(s)))))
}

/// The ranges `*` stands for, as Tailscale writes them.
fn wildcard_atoms() -> Vec<Atom> {
    let v4 =
        IpSet::from_ranges([IpRange::net(net(CGNAT))]).subtract(&IpSet::from_ranges([IpRange::net(net(CHROMEOS))]));
    v4.ranges().iter().map(|r| Atom::Range(*r)).chain([Atom::Net(net(TAILSCALE_ULA))]).collect()
}

/// The prefixes `*` stands for as a capability destination.
pub fn wildcard_prefixes() -> [IpNet; 2] {
    [net(CGNAT), net(TAILSCALE_ULA)]
}

/// What an alias stands for.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The alias was `*`.
    pub wildcard: bool,
    /// The alias was `autogroup:danger-all`.
    pub danger_all: bool,
    /// The alias names nodes (users, groups, tags, node autogroups): its addresses are
    /// exactly theirs.
    pub by_nodes: bool,
    /// Addresses, each as a rule writes it (`texts`).
    pub atoms: Vec<Atom>,
    pub texts: Vec<Arc<str>>,
    /// The same addresses as a set.
    pub set: IpSet,
    /// The nodes with an address in the set.
    pub nodes: NodeSet,
}

/// A rule's sources, written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// `SrcIPs`, sorted, as every node's filter rule shares them.
    pub ips: Arc<[String]>,
    /// A hash of `ips`, to merge rules quickly.
    pub ips_hash: u64,
    /// Every source address (subnet routes included for `*`).
    pub set: IpSet,
    /// The nodes with an address among the sources.
    pub nodes: NodeSet,
    /// The sources as prefixes, as a capability destination names them.
    pub prefixes: Vec<IpNet>,
    /// The sources are the addresses of `nodes`, nothing else.
    pub by_nodes: bool,
}

impl Sources {
    fn new(ips: Vec<Arc<str>>, set: IpSet, nodes: NodeSet, prefixes: Vec<IpNet>, by_nodes: bool) -> Self {
        let ips: Arc<[String]> = ips.iter().map(|t| t.to_string()).collect();
        let mut h = FastHasher::default();
        ips.hash(&mut h);
        Sources { ips, ips_hash: h.finish(), set, nodes, prefixes, by_nodes }
    }

    /// Whether there is no source at all.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }
}

/// Resolves aliases, remembering each answer.
pub struct Resolver<'a> {
    policy: &'a ParsedPolicy,
    pub tailnet: &'a Tailnet,
    internet: IpSet,
    wildcard: Vec<Atom>,
    cache: FastMap<Alias, Arc<Resolved>>,
    /// Sources by alias list, without and with `each_alias`.
    sources: FastMap<Vec<Alias>, [Option<Arc<Sources>>; 2]>,
    /// Sources naming nodes only, by the nodes: rules from different aliases naming the same
    /// nodes share them.
    node_sources: FastMap<NodeSet, Arc<Sources>>,
}

impl<'a> Resolver<'a> {
    /// A resolver for a policy over a tailnet.
    pub fn new(policy: &'a ParsedPolicy, tailnet: &'a Tailnet) -> Self {
        Resolver {
            policy,
            tailnet,
            internet: internet(),
            wildcard: wildcard_atoms(),
            cache: FastMap::default(),
            sources: FastMap::default(),
            node_sources: FastMap::default(),
        }
    }

    /// The internet set.
    pub fn internet(&self) -> &IpSet {
        &self.internet
    }

    /// What an alias stands for. `autogroup:self` depends on the viewer and resolves to
    /// nothing here.
    pub fn resolve(&mut self, alias: &Alias) -> Arc<Resolved> {
        if let Some(r) = self.cache.get(alias) {
            return r.clone();
        }
        let r = Arc::new(self.compute(alias));
        self.cache.insert(alias.clone(), r.clone());
        r
    }

    fn compute(&mut self, alias: &Alias) -> Resolved {
        let t = self.tailnet;
        let n = t.len();
        match alias {
            Alias::Wildcard => self.atoms_alias(self.wildcard.clone(), true, false),
            Alias::AutoGroup(AutoGroup::DangerAll) => {
                let mut r = self.atoms_alias(Vec::new(), false, true);
                r.set = IpSet::everything();
                r.nodes = NodeSet::full(n);
                r
            }
            Alias::AutoGroup(AutoGroup::Internet) => {
                let atoms = self.internet.ranges().iter().map(|r| Atom::Range(*r)).collect();
                self.atoms_alias(atoms, false, false)
            }
            Alias::Prefix(p) => self.atoms_alias(vec![Atom::Net(*p)], false, false),
            Alias::Range(r) => {
                let atom = r.as_prefix().map_or(Atom::Range(*r), Atom::Net);
                self.atoms_alias(vec![atom], false, false)
            }
            Alias::Host(h) => {
                let atoms = self.policy.hosts.get(h).map(|p| vec![Atom::Net(*p)]).unwrap_or_default();
                self.atoms_alias(atoms, false, false)
            }
            Alias::Tag(tag) => self.nodes_alias(t.by_tag.get(tag).cloned().unwrap_or_else(|| NodeSet::new(n))),
            Alias::User(token) => self.nodes_alias(t.user_nodes(token)),
            Alias::UserDomain(domain) => self.nodes_alias(t.domain_nodes(domain)),
            Alias::Group(g) => {
                let mut nodes = NodeSet::new(n);
                for member in self.policy.groups.get(g).cloned().unwrap_or_default() {
                    nodes.union_with(&self.resolve(&member).nodes);
                }
                self.nodes_alias(nodes)
            }
            Alias::AutoGroup(AutoGroup::Member) => {
                let mut nodes = NodeSet::new(n);
                (0..n).filter(|&i| !t.tagged.contains(i)).for_each(|i| nodes.insert(i));
                self.nodes_alias(nodes)
            }
            Alias::AutoGroup(AutoGroup::Tagged) => self.nodes_alias(t.tagged.clone()),
            Alias::AutoGroup(AutoGroup::SelfDevices | AutoGroup::NonRoot | AutoGroup::Shared | AutoGroup::Role(_)) => {
                self.nodes_alias(NodeSet::new(n))
            }
        }
    }

    /// What an alias naming exactly these addresses stands for.
    fn atoms_alias(&self, atoms: Vec<Atom>, wildcard: bool, danger_all: bool) -> Resolved {
        let set = IpSet::from_ranges(atoms.iter().map(Atom::range));
        let nodes = self.nodes_in_set(&set);
        let texts = atoms.iter().map(|a| Arc::from(a.to_string())).collect();
        Resolved { wildcard, danger_all, by_nodes: false, atoms, texts, set, nodes }
    }

    /// The nodes with an address in the set.
    pub fn nodes_in_set(&self, set: &IpSet) -> NodeSet {
        let mut nodes = NodeSet::new(self.tailnet.len());
        for r in set.ranges() {
            self.tailnet.nodes_in(r).for_each(|i| nodes.insert(i));
        }
        nodes
    }

    /// What an alias naming exactly these nodes stands for.
    pub fn nodes_alias(&self, nodes: NodeSet) -> Resolved {
        let t = self.tailnet;
        let atoms: Vec<Atom> = nodes.iter().flat_map(|i| t.nodes[i].addrs().map(Atom::addr)).collect();
        let texts = nodes.iter().flat_map(|i| t.addr_texts[i].iter().cloned()).collect();
        let set = IpSet::from_ranges(atoms.iter().map(Atom::range));
        Resolved { wildcard: false, danger_all: false, by_nodes: true, atoms, texts, set, nodes }
    }

    /// Writes a rule's sources. With `*` among them, Tailscale lists the other aliases'
    /// addresses too (`each_alias`); otherwise addresses covered by another are dropped.
    pub fn sources(&mut self, aliases: &[Alias], each_alias: bool) -> Arc<Sources> {
        if let Some(s) = self.sources.get(aliases).and_then(|e| e[usize::from(each_alias)].clone()) {
            return s;
        }
        let resolved: Vec<Arc<Resolved>> = aliases.iter().map(|a| self.resolve(a)).collect();
        let mut nodes = NodeSet::new(self.tailnet.len());
        resolved.iter().for_each(|r| nodes.union_with(&r.nodes));
        let s = if resolved.iter().any(|r| r.wildcard || r.danger_all) {
            Arc::new(self.wildcard_sources(&resolved, nodes, each_alias))
        } else if resolved.iter().all(|r| r.by_nodes) {
            self.node_sources(nodes)
        } else {
            Arc::new(self.mixed_sources(&resolved, nodes))
        };
        self.sources.entry(aliases.to_vec()).or_default()[usize::from(each_alias)] = Some(s.clone());
        s
    }

    /// The sources naming exactly these nodes: their addresses.
    pub fn node_sources(&mut self, nodes: NodeSet) -> Arc<Sources> {
        if let Some(s) = self.node_sources.get(&nodes) {
            return s.clone();
        }
        let mut ips = self.tailnet.address_texts(&nodes, |_| true);
        let mut addrs = self.tailnet.address_ranges(&nodes, |_| true);
        ips.dedup();
        addrs.dedup();
        let prefixes = addrs.iter().map(|r| IpNet::from(r.first())).collect();
        let s = Arc::new(Sources::new(ips, IpSet::from_ranges(addrs), nodes.clone(), prefixes, true));
        self.node_sources.insert(nodes, s.clone());
        s
    }

    /// Sources naming nodes and addresses (hosts, prefixes, ranges, the internet), `nodes`
    /// being every node among them: an address inside another is left out.
    fn mixed_sources(&mut self, resolved: &[Arc<Resolved>], nodes: NodeSet) -> Sources {
        let mut named = NodeSet::new(self.tailnet.len());
        let mut literal: Vec<(Atom, Arc<str>)> = Vec::new();
        let mut literal_prefixes: Vec<(IpRange, IpNet)> = Vec::new();
        for r in resolved {
            if r.by_nodes {
                named.union_with(&r.nodes);
            } else {
                literal.extend(r.atoms.iter().copied().zip(r.texts.iter().cloned()));
                let prefixes = r.atoms.iter().flat_map(|a| a.range().prefixes());
                literal_prefixes.extend(prefixes.map(|p| (IpRange::net(p), p)));
            }
        }
        let literal = minimal_atoms(literal);
        let literal_set = IpSet::from_ranges(literal.iter().map(|(a, _)| a.range()));
        let uncovered = |r: &IpRange| !literal_set.contains_range(r);
        let node_ips = self.tailnet.address_texts(&named, uncovered);
        let node_addrs = self.tailnet.address_ranges(&named, uncovered);
        let mut literal_ips: Vec<Arc<str>> = literal.into_iter().map(|(_, text)| text).collect();
        literal_ips.sort_unstable();
        let mut ips = merge_sorted(&node_ips, &literal_ips, |a, b| a <= b);
        ips.dedup();
        let set = IpSet::from_ranges(node_addrs).union(&literal_set);
        // Prefixes list every alias's addresses, covered or not.
        let key = |p: &IpNet| (IpRange::net(*p), p.prefix_len());
        literal_prefixes.sort_unstable_by_key(|(r, p)| (*r, p.prefix_len()));
        let literal_prefixes: Vec<IpNet> = literal_prefixes.into_iter().map(|(_, p)| p).collect();
        let node_prefixes = &self.node_sources(named).prefixes;
        let mut prefixes = merge_sorted(node_prefixes, &literal_prefixes, |a, b| key(a) <= key(b));
        prefixes.dedup();
        Sources::new(ips, set, nodes, prefixes, false)
    }

    /// Sources with `*` or `autogroup:danger-all` among them, `nodes` being every node among
    /// them.
    fn wildcard_sources(&self, resolved: &[Arc<Resolved>], nodes: NodeSet, each_alias: bool) -> Sources {
        let mut prefixes: Vec<IpNet> = Vec::new();
        for r in resolved {
            if r.wildcard {
                prefixes.extend(wildcard_prefixes());
            } else if r.danger_all {
                prefixes.extend([net("0.0.0.0/0"), net("::/0")]);
            } else {
                prefixes.extend(r.atoms.iter().flat_map(|a| a.range().prefixes()));
            }
        }
        prefixes.sort_unstable_by_key(|p| (IpRange::net(*p), p.prefix_len()));
        prefixes.dedup();
        if resolved.iter().any(|r| r.danger_all) {
            let everyone = NodeSet::full(self.tailnet.len());
            return Sources::new(vec![Arc::from("*")], IpSet::everything(), everyone, prefixes, false);
        }
        let routes = self.tailnet.all_subnet_routes.iter().map(|r| (Atom::Net(*r), Arc::from(r.to_string())));
        let pairs = |r: &Arc<Resolved>| r.atoms.iter().copied().zip(r.texts.iter().cloned()).collect::<Vec<_>>();
        let others = resolved.iter().filter(|r| each_alias && !r.wildcard).flat_map(pairs);
        let wildcard = self.wildcard.iter().map(|a| (*a, Arc::from(a.to_string())));
        let written: Vec<(Atom, Arc<str>)> = wildcard.chain(routes).chain(others).collect();
        let set = IpSet::from_ranges(written.iter().map(|(a, _)| a.range()));
        let mut ips: Vec<Arc<str>> = written.into_iter().map(|(_, t)| t).collect();
        ips.sort_unstable();
        ips.dedup();
        Sources::new(ips, set, nodes, prefixes, false)
    }
}

/// The atoms not covered by another one (an exact duplicate is kept once).
fn minimal_atoms<T>(mut all: Vec<(Atom, T)>) -> Vec<(Atom, T)> {
    all.sort_unstable_by(|(a, _), (b, _)| {
        let (ra, rb) = (a.range(), b.range());
        (ra.v6, ra.start, std::cmp::Reverse(ra.end)).cmp(&(rb.v6, rb.start, std::cmp::Reverse(rb.end)))
    });
    let mut out = Vec::with_capacity(all.len());
    let mut reach: Option<(bool, u128)> = None;
    for (a, text) in all {
        let r = a.range();
        if matches!(reach, Some((v6, end)) if v6 == r.v6 && r.end <= end) {
            continue;
        }
        reach = Some((r.v6, r.end));
        out.push((a, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internet_matches_tailscale_ranges() {
        let text: Vec<String> = internet().ranges().iter().map(|r| Atom::Range(*r).to_string()).collect();
        assert_eq!(
            text,
            [
                "0.0.0.0-9.255.255.255",
                "11.0.0.0-100.63.255.255",
                "100.128.0.0-169.253.255.255",
                "169.255.0.0-172.15.255.255",
                "172.32.0.0-192.167.255.255",
                "192.169.0.0-255.255.255.255",
                "2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ]
        );
        let w: Vec<String> = wildcard_atoms().iter().map(ToString::to_string).collect();
        assert_eq!(w, ["100.64.0.0-100.115.91.255", "100.115.94.0-100.127.255.255", "fd7a:115c:a1e0::/48"]);
    }

    #[test]
    fn covered_atoms_are_dropped_but_neighbours_kept() {
        let a = |s: &str| Atom::Net(s.parse().unwrap());
        let atoms = [a("10.0.0.0/8"), a("10.33.0.0/16"), a("100.64.0.15/32"), a("100.64.0.16/32"), a("10.0.0.0/8")];
        let out = minimal_atoms(atoms.iter().map(|a| (*a, ())).collect());
        let text: Vec<String> = out.iter().map(|(a, _)| a.to_string()).collect();
        assert_eq!(text, ["10.0.0.0/8", "100.64.0.15", "100.64.0.16"]);
    }
}
