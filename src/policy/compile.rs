//! Compilation: a [`ParsedPolicy`] joined with a [`Tailnet`] gives the packet filter of every
//! node. Grants become rules in policy order (global rules, then each grant's
//! `autogroup:self` rules per user; `via` rules belong to the routers they name); rules with
//! the same sources and protocols merge into the first; each node then keeps only the
//! destinations that are its own, routed by it, or the internet behind an exit node.
//!
//! For speed, every destination entry is indexed by the nodes it reaches, so a node's filter
//! costs what it contains, not the size of the policy.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::Value;

use super::alias::{Alias, AutoGroup};
use super::ipset::{Atom, IpRange, IpSet};
use super::nodeset::NodeSet;
use super::resolve::{wildcard_prefixes, Resolver, Sources};
use super::tailnet::{PolicyNode, Tailnet};
use super::types::{Grant, ParsedPolicy};
use crate::tailcfg::{CapGrant, FilterRule, IpProto, NetPortRange, PortRange};

/// Capabilities that imply a companion capability in the other direction.
const COMPANION_CAPS: [(&str, &str); 2] = [
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

/// Where a rule sits in policy order: the grant, then the rule within it.
pub type Order = (u32, u32);

/// The first rule number of a grant's `autogroup:self` rules.
const SELF_RULES: u32 = 1 << 20;

/// A `DstPorts` entry, with the addresses it covers (`None` for `*`).
#[derive(Debug, Clone)]
pub struct DstEntry {
    pub ip: Arc<str>,
    pub target: Option<IpRange>,
    pub ports: PortRange,
}

/// The capabilities a rule grants on some destinations.
#[derive(Debug, Clone)]
pub struct CapDst {
    pub dsts: Vec<IpNet>,
    pub caps: Arc<BTreeMap<String, Vec<Value>>>,
}

/// What a rule carries.
#[derive(Debug, Clone)]
pub enum RuleBody {
    Ports { protos: Vec<IpProto>, entries: Vec<DstEntry> },
    Caps(Vec<CapDst>),
}

/// A rule before it is reduced to one node.
#[derive(Debug, Clone)]
pub struct Rule {
    pub order: Order,
    pub src: Arc<Sources>,
    pub body: RuleBody,
}

impl Rule {
    /// Every destination address the rule names (`*` is everything).
    pub fn dst_set(&self) -> IpSet {
        match &self.body {
            RuleBody::Ports { entries, .. } if entries.iter().any(|e| e.target.is_none()) => IpSet::everything(),
            RuleBody::Ports { entries, .. } => IpSet::from_ranges(entries.iter().filter_map(|e| e.target)),
            RuleBody::Caps(caps) => {
                IpSet::from_ranges(caps.iter().flat_map(|c| c.dsts.iter().map(|d| IpRange::net(*d))))
            }
        }
    }
}

fn empty_filter_rule(src: &Sources) -> FilterRule {
    FilterRule { src_ips: src.ips.to_vec(), dst_ports: Vec::new(), ip_proto: Vec::new(), cap_grant: Vec::new() }
}

fn net_port_range(e: &DstEntry) -> NetPortRange {
    NetPortRange { ip: e.ip.to_string(), ports: e.ports }
}

/// The merge key of a ports rule: rules with equal sources and protocols become one.
#[derive(Debug, Clone)]
struct MergeKey {
    src: Arc<Sources>,
    protos: Vec<IpProto>,
}

impl PartialEq for MergeKey {
    fn eq(&self, other: &Self) -> bool {
        self.protos == other.protos && (Arc::ptr_eq(&self.src, &other.src) || self.src.ips == other.src.ips)
    }
}

impl Eq for MergeKey {}

impl Hash for MergeKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.src.ips_hash);
        self.protos.hash(state);
    }
}

fn merge_key(rule: &Rule) -> Option<MergeKey> {
    match &rule.body {
        RuleBody::Ports { protos, .. } => {
            let mut protos = protos.clone();
            protos.sort_unstable();
            Some(MergeKey { src: rule.src.clone(), protos })
        }
        RuleBody::Caps(_) => None,
    }
}

/// Merges ports rules with equal sources and protocols into the first of them, keeping every
/// destination entry (duplicates too); capability rules stay as they are.
pub fn merge_rules(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    let mut first: HashMap<MergeKey, usize> = HashMap::new();
    for rule in rules {
        let Some(key) = merge_key(&rule) else {
            out.push(rule);
            continue;
        };
        match first.get(&key) {
            Some(&i) => {
                if let (RuleBody::Ports { entries: into, .. }, RuleBody::Ports { entries, .. }) =
                    (&mut out[i].body, rule.body)
                {
                    into.extend(entries);
                }
            }
            None => {
                first.insert(key, out.len());
                out.push(rule);
            }
        }
    }
    out
}

/// The rules of a tailnet under a policy, ready to answer per-node questions.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Global rules, merged, in policy order.
    pub rules: Vec<Rule>,
    keys: HashMap<MergeKey, usize>,
    /// `autogroup:self` rules by user id, in policy order.
    pub self_rules: HashMap<u64, Vec<Rule>>,
    /// `via` rules by node index, in policy order.
    pub via_rules: Vec<Vec<Rule>>,
    /// Entries for every node (`*` destinations): (rule, entry).
    star_entries: Vec<(u32, u32)>,
    /// Entries reaching each node: (rule, entry).
    node_entries: Vec<Vec<(u32, u32)>>,
    /// Capability grants reaching each node: (rule, grant).
    node_caps: Vec<Vec<(u32, u32)>>,
    internet: IpSet,
}

impl RuleSet {
    /// Compiles the grants of a policy for a tailnet.
    pub fn compile(policy: &ParsedPolicy, resolver: &mut Resolver) -> RuleSet {
        let t = resolver.tailnet;
        let mut global = Vec::new();
        let mut self_grants = Vec::new();
        let mut via_grants = Vec::new();
        for (gi, grant) in policy.grants.iter().enumerate() {
            let gi = gi as u32;
            if grant.src.is_empty() || grant.dst.is_empty() {
                continue;
            }
            if !grant.via.is_empty() {
                via_grants.push((gi, grant));
                continue;
            }
            global.extend(grant_rules(gi, grant, resolver));
            if grant.dst.contains(&Alias::AutoGroup(AutoGroup::SelfDevices)) {
                self_grants.push((gi, grant));
            }
        }
        let rules = merge_rules(global);
        let mut self_rules = HashMap::new();
        for user in &t.users {
            let nodes = &t.by_user[&user.id];
            let list: Vec<Rule> =
                self_grants.iter().flat_map(|(gi, g)| self_rules_for(*gi, g, nodes, resolver)).collect();
            if !list.is_empty() {
                self_rules.insert(user.id, list);
            }
        }
        let via_rules = (0..t.len())
            .map(|i| via_grants.iter().flat_map(|(gi, g)| via_rules_for(*gi, g, i, resolver)).collect())
            .collect();
        let mut set = RuleSet {
            keys: HashMap::new(),
            self_rules,
            via_rules,
            star_entries: Vec::new(),
            node_entries: vec![Vec::new(); t.len()],
            node_caps: vec![Vec::new(); t.len()],
            internet: resolver.internet().clone(),
            rules,
        };
        set.index(t);
        set
    }

    /// Indexes every destination entry by the nodes it reaches.
    fn index(&mut self, t: &Tailnet) {
        let mut reached = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            if let Some(key) = merge_key(rule) {
                self.keys.insert(key, ri);
            }
            match &rule.body {
                RuleBody::Ports { entries, .. } => {
                    for (ei, e) in entries.iter().enumerate() {
                        let at = (ri as u32, ei as u32);
                        match &e.target {
                            None => self.star_entries.push(at),
                            Some(r) => {
                                reached.clear();
                                entry_reaches(t, &self.internet, r, &mut reached);
                                for &node in &reached {
                                    self.node_entries[node].push(at);
                                }
                            }
                        }
                    }
                }
                RuleBody::Caps(caps) => {
                    for (ci, c) in caps.iter().enumerate() {
                        let mut reached = NodeSet::new(t.len());
                        for d in &c.dsts {
                            let r = IpRange::net(*d);
                            t.nodes_in(&r).for_each(|i| reached.insert(i));
                            t.routers_overlapping(&r).for_each(|i| reached.insert(i));
                        }
                        for node in reached.iter() {
                            self.node_caps[node].push((ri as u32, ci as u32));
                        }
                    }
                }
            }
        }
    }

    /// The packet filter of node `i`: its global, self and via rules, merged, reduced to
    /// what concerns the node.
    pub fn filter(&self, t: &Tailnet, i: usize) -> Vec<FilterRule> {
        let node = &t.nodes[i];
        let mut out: Vec<(Order, FilterRule)> = Vec::new();
        let mut slot_of_rule: HashMap<u32, usize> = HashMap::new();
        let mut global_slot = |out: &mut Vec<(Order, FilterRule)>, ri: u32| -> usize {
            *slot_of_rule.entry(ri).or_insert_with(|| {
                let rule = &self.rules[ri as usize];
                let mut fr = empty_filter_rule(&rule.src);
                if let RuleBody::Ports { protos, .. } = &rule.body {
                    fr.ip_proto = protos.clone();
                }
                out.push((rule.order, fr));
                out.len() - 1
            })
        };
        for (ri, ei) in merge_sorted(&self.star_entries, &self.node_entries[i]) {
            let slot = global_slot(&mut out, ri);
            if let RuleBody::Ports { entries, .. } = &self.rules[ri as usize].body {
                out[slot].1.dst_ports.push(net_port_range(&entries[ei as usize]));
            }
        }
        for &(ri, ci) in &self.node_caps[i] {
            if let RuleBody::Caps(caps) = &self.rules[ri as usize].body {
                if let Some(g) = reduce_cap(t, node, &caps[ci as usize]) {
                    let slot = global_slot(&mut out, ri);
                    out[slot].1.cap_grant.push(g);
                }
            }
        }
        let self_rules = node.user.as_ref().filter(|_| !node.is_tagged()).and_then(|u| self.self_rules.get(&u.id));
        let mut extra_slots: HashMap<MergeKey, usize> = HashMap::new();
        for rule in self_rules.into_iter().flatten().chain(&self.via_rules[i]) {
            match &rule.body {
                RuleBody::Ports { protos, entries } => {
                    let key = merge_key(rule).expect("ports rules have a key");
                    let kept: Vec<NetPortRange> =
                        entries.iter().filter(|e| self.entry_reaches_node(t, i, e)).map(net_port_range).collect();
                    let slot = match (extra_slots.get(&key), self.keys.get(&key)) {
                        (Some(&s), _) => s,
                        (None, Some(&ri)) => global_slot(&mut out, ri as u32),
                        (None, None) => {
                            let mut fr = empty_filter_rule(&rule.src);
                            fr.ip_proto = protos.clone();
                            out.push((rule.order, fr));
                            out.len() - 1
                        }
                    };
                    extra_slots.insert(key, slot);
                    out[slot].0 = out[slot].0.min(rule.order);
                    out[slot].1.dst_ports.extend(kept);
                }
                RuleBody::Caps(caps) => {
                    let mut fr = empty_filter_rule(&rule.src);
                    fr.cap_grant = caps.iter().filter_map(|c| reduce_cap(t, node, c)).collect();
                    out.push((rule.order, fr));
                }
            }
        }
        out.retain(|(_, r)| !r.dst_ports.is_empty() || !r.cap_grant.is_empty());
        out.sort_by_key(|(order, _)| *order);
        out.into_iter().map(|(_, r)| r).collect()
    }

    fn entry_reaches_node(&self, t: &Tailnet, i: usize, e: &DstEntry) -> bool {
        let Some(r) = &e.target else { return true };
        t.nodes[i].addrs().any(|a| r.contains_addr(a))
            || t.subnet_ranges[i].iter().any(|s| s.overlaps(r))
            || (t.exit_nodes.contains(i) && self.internet.contains_range(r))
    }
}

/// The nodes a destination range reaches, ascending and once each: by address, by subnet
/// route, or as the internet behind an exit node.
fn entry_reaches(t: &Tailnet, internet: &IpSet, r: &IpRange, out: &mut Vec<usize>) {
    out.extend(t.nodes_in(r));
    let by_address = out.len();
    out.extend(t.routers_overlapping(r));
    if internet.contains_range(r) {
        out.extend(t.exit_nodes.iter());
    }
    if out.len() > by_address {
        out.sort_unstable();
        out.dedup();
    }
}

/// Two sorted lists, merged.
fn merge_sorted(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j == b.len() || (i < a.len() && a[i] <= b[j]) {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

/// A capability grant reduced to one node: its own addresses as host prefixes (a broader
/// prefix holding one is narrowed to it), and prefixes it routes, kept as they are.
fn reduce_cap(t: &Tailnet, node: &PolicyNode, cap: &CapDst) -> Option<CapGrant> {
    let i = t.index(node.id)?;
    let mut dsts: Vec<IpNet> = Vec::new();
    for d in &cap.dsts {
        let own: Vec<IpNet> = node.addrs().filter(|a| d.contains(a)).map(IpNet::from).collect();
        if !own.is_empty() {
            dsts.extend(own);
        } else if t.subnet_ranges[i].iter().any(|s| s.overlaps(&IpRange::net(*d))) {
            dsts.push(*d);
        }
    }
    dsts.sort_unstable_by_key(|p| (IpRange::net(*p), p.prefix_len()));
    dsts.dedup();
    (!dsts.is_empty()).then(|| CapGrant { dsts, cap_map: (*cap.caps).clone() })
}

/// The destination entries of one alias on some ports.
fn dst_entries(resolver: &mut Resolver, alias: &Alias, ports: &[PortRange]) -> Vec<DstEntry> {
    if *alias == Alias::Wildcard {
        return ports.iter().map(|p| DstEntry { ip: Arc::from("*"), target: None, ports: *p }).collect();
    }
    let r = resolver.resolve(alias);
    atom_entries(&r.atoms, &r.texts, ports)
}

/// Each address on each port range.
fn atom_entries(atoms: &[Atom], texts: &[Arc<str>], ports: &[PortRange]) -> Vec<DstEntry> {
    let mut out = Vec::with_capacity(atoms.len() * ports.len());
    for (atom, text) in atoms.iter().zip(texts) {
        for p in ports {
            out.push(DstEntry { ip: text.clone(), target: Some(atom.range()), ports: *p });
        }
    }
    out
}

/// The prefixes an alias names as a capability destination.
fn cap_dsts(resolver: &mut Resolver, alias: &Alias) -> Vec<IpNet> {
    if *alias == Alias::Wildcard {
        return wildcard_prefixes().to_vec();
    }
    resolver.resolve(alias).atoms.iter().flat_map(|a| a.range().prefixes()).collect()
}

/// The capability rules of a grant: the `app` map on each destination, then each companion
/// capability from the destinations back to the sources.
fn cap_rules(
    order: &mut impl FnMut() -> Order,
    src: Arc<Sources>,
    dst_src: Arc<Sources>,
    dsts: Vec<Vec<IpNet>>,
    app: &BTreeMap<String, Vec<Value>>,
) -> Vec<Rule> {
    let caps = Arc::new(app.clone());
    let mut out = vec![Rule {
        order: order(),
        src: src.clone(),
        body: RuleBody::Caps(dsts.into_iter().map(|d| CapDst { dsts: d, caps: caps.clone() }).collect()),
    }];
    for (cap, companion) in COMPANION_CAPS {
        if app.contains_key(cap) {
            out.push(Rule {
                order: order(),
                src: dst_src.clone(),
                body: RuleBody::Caps(vec![CapDst {
                    dsts: src.prefixes.clone(),
                    caps: Arc::new(BTreeMap::from([(companion.to_string(), Vec::new())])),
                }]),
            });
        }
    }
    out
}

/// The global rules of a grant (everything but `autogroup:self`).
fn grant_rules(gi: u32, grant: &Grant, resolver: &mut Resolver) -> Vec<Rule> {
    let src = resolver.sources(&grant.src, true);
    let dsts: Vec<&Alias> = grant.dst.iter().filter(|a| **a != Alias::AutoGroup(AutoGroup::SelfDevices)).collect();
    let mut seq = 0;
    let mut order = || {
        seq += 1;
        (gi, seq - 1)
    };
    let mut out = Vec::new();
    if dsts.is_empty() {
        return out;
    }
    if !src.is_empty() {
        for ip in &grant.ip {
            let entries: Vec<DstEntry> = dsts.iter().flat_map(|d| dst_entries(resolver, d, &ip.ports)).collect();
            if !entries.is_empty() {
                out.push(Rule {
                    order: order(),
                    src: src.clone(),
                    body: RuleBody::Ports { protos: ip.protos.clone(), entries },
                });
            }
        }
    }
    if !grant.app.is_empty() {
        let dst_aliases: Vec<Alias> = dsts.iter().map(|a| (*a).clone()).collect();
        let dst_src = resolver.sources(&dst_aliases, true);
        let cap_targets: Vec<Vec<IpNet>> = dsts.iter().map(|d| cap_dsts(resolver, d)).collect();
        out.extend(cap_rules(&mut order, src, dst_src, cap_targets, &grant.app));
    }
    out
}

/// The `autogroup:self` rules of a grant for one user's untagged nodes.
fn self_rules_for(gi: u32, grant: &Grant, user_nodes: &NodeSet, resolver: &mut Resolver) -> Vec<Rule> {
    let all_src = resolver.sources(&grant.src, true);
    let mut src_nodes = user_nodes.clone();
    for i in user_nodes.iter() {
        if !all_src.nodes.contains(i) {
            src_nodes.remove(i);
        }
    }
    if src_nodes.is_empty() {
        return Vec::new();
    }
    let src = Arc::new(resolver.node_sources(src_nodes));
    let targets = resolver.nodes_alias(user_nodes.clone());
    let mut seq = SELF_RULES;
    let mut order = || {
        seq += 1;
        (gi, seq - 1)
    };
    let mut out = Vec::new();
    for ip in &grant.ip {
        let entries = atom_entries(&targets.atoms, &targets.texts, &ip.ports);
        out.push(Rule {
            order: order(),
            src: src.clone(),
            body: RuleBody::Ports { protos: ip.protos.clone(), entries },
        });
    }
    if !grant.app.is_empty() {
        let dst_src = Arc::new(resolver.node_sources(user_nodes.clone()));
        let per_node: Vec<Vec<IpNet>> =
            user_nodes.iter().map(|i| resolver.tailnet.nodes[i].addrs().map(IpNet::from).collect()).collect();
        out.extend(cap_rules(&mut order, src, dst_src, per_node, &grant.app));
    }
    out
}

/// The `via` rules of a grant for node `i`, if it carries a via tag and routes a destination.
fn via_rules_for(gi: u32, grant: &Grant, i: usize, resolver: &mut Resolver) -> Vec<Rule> {
    let t = resolver.tailnet;
    let node = &t.nodes[i];
    if !node.tags.iter().any(|tag| grant.via.contains(tag)) || grant.ip.is_empty() {
        return Vec::new();
    }
    let routes_it = grant.dst.iter().any(|d| match d {
        Alias::AutoGroup(AutoGroup::Internet) => t.exit_nodes.contains(i),
        _ => {
            let r = resolver.resolve(d);
            r.atoms.iter().any(|a| t.subnet_ranges[i].iter().any(|s| s.overlaps(&a.range())))
        }
    });
    if !routes_it {
        return Vec::new();
    }
    let src = resolver.sources(&grant.src, false);
    if src.is_empty() {
        return Vec::new();
    }
    grant
        .ip
        .iter()
        .enumerate()
        .filter_map(|(k, ip)| {
            let entries: Vec<DstEntry> = grant.dst.iter().flat_map(|d| dst_entries(resolver, d, &ip.ports)).collect();
            (!entries.is_empty()).then(|| Rule {
                order: (gi, k as u32),
                src: src.clone(),
                body: RuleBody::Ports { protos: ip.protos.clone(), entries },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::policy::fixture::{compile, ALICE, BOB, EXIT, ROUTER, SERVER};
    use crate::tailcfg::FilterRule;

    fn json(rules: &[FilterRule]) -> String {
        serde_json::to_string(rules).unwrap()
    }

    #[test]
    fn a_node_keeps_its_own_destinations_merged_into_the_first_rule() {
        let c = compile(
            r#""acls": [
                {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:22"]},
                {"action": "accept", "src": ["bob@example.org"], "dst": ["tag:router:80"]},
                {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:443", "tag:router:443"]}]"#,
        );
        assert_eq!(
            json(&c.filter(SERVER)),
            r#"[{"SrcIPs":["100.64.0.1","fd7a:115c:a1e0::1"],"DstPorts":[{"IP":"100.64.0.3","Ports":{"First":22,"Last":22}},{"IP":"fd7a:115c:a1e0::3","Ports":{"First":22,"Last":22}},{"IP":"100.64.0.3","Ports":{"First":443,"Last":443}},{"IP":"fd7a:115c:a1e0::3","Ports":{"First":443,"Last":443}}]}]"#
        );
        let router = c.filter(ROUTER);
        assert_eq!(router.len(), 2);
        assert_eq!(router[0].src_ips, ["100.64.0.1", "fd7a:115c:a1e0::1"], "merged into the first rule's place");
        assert!(c.filter(ALICE).is_empty() && c.filter(BOB).is_empty());
    }

    #[test]
    fn wildcard_sources_are_the_tailscale_ranges_and_every_subnet_route() {
        let c = compile(r#""acls": [{"action": "accept", "src": ["*", "tag:server"], "dst": ["tag:server:22"]}]"#);
        assert_eq!(
            c.filter(SERVER)[0].src_ips,
            [
                "10.33.0.0/16",
                "100.115.94.0-100.127.255.255",
                "100.64.0.0-100.115.91.255",
                "100.64.0.3",
                "fd7a:115c:a1e0::/48",
                "fd7a:115c:a1e0::3"
            ]
        );
        let any = compile(r#""acls": [{"action": "accept", "src": ["autogroup:danger-all"], "dst": ["*:*"]}]"#);
        assert_eq!(
            json(&any.filter(BOB)),
            r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]"#
        );
    }

    #[test]
    fn routers_get_their_subnets_and_exit_nodes_the_internet() {
        let c = compile(
            r#""grants": [{"src": ["autogroup:member"], "dst": ["10.33.1.0/24", "8.8.8.0/24"], "ip": ["tcp:53"]},
                          {"src": ["bob@example.org"], "dst": ["autogroup:internet"], "ip": ["*"]}]"#,
        );
        let router = c.filter(ROUTER);
        assert_eq!(router.len(), 1);
        assert_eq!(router[0].dst_ports.len(), 1);
        assert_eq!(router[0].dst_ports[0].ip, "10.33.1.0/24");
        let exit = c.filter(EXIT);
        assert_eq!(exit[0].dst_ports[0].ip, "8.8.8.0/24");
        assert_eq!(exit[1].dst_ports.len(), 7, "the internet as ranges");
        assert_eq!(exit[1].dst_ports[0].ip, "0.0.0.0-9.255.255.255");
        assert!(c.filter(SERVER).is_empty());
    }

    #[test]
    fn self_destinations_are_per_user() {
        let c = compile(r#""acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]"#);
        assert_eq!(
            json(&c.filter(ALICE)),
            r#"[{"SrcIPs":["100.64.0.1","fd7a:115c:a1e0::1"],"DstPorts":[{"IP":"100.64.0.1","Ports":{"First":0,"Last":65535}},{"IP":"fd7a:115c:a1e0::1","Ports":{"First":0,"Last":65535}}]}]"#
        );
        assert_eq!(c.filter(BOB)[0].src_ips, ["100.64.0.2", "fd7a:115c:a1e0::2"]);
        assert!(c.filter(SERVER).is_empty());
        let admins =
            compile(r#""acls": [{"action": "accept", "src": ["group:admins"], "dst": ["autogroup:self:22"]}]"#);
        assert!(admins.filter(BOB).is_empty());
    }

    #[test]
    fn app_grants_carry_capabilities_and_their_companions() {
        let c = compile(
            r#""grants": [{"src": ["alice@example.com"], "dst": ["tag:server"], "app": {"tailscale.com/cap/drive": [{"shares": ["*"]}]}}]"#,
        );
        assert_eq!(
            json(&c.filter(SERVER)),
            r#"[{"SrcIPs":["100.64.0.1","fd7a:115c:a1e0::1"],"CapGrant":[{"Dsts":["100.64.0.3/32","fd7a:115c:a1e0::3/128"],"CapMap":{"tailscale.com/cap/drive":[{"shares":["*"]}]}}]}]"#
        );
        assert_eq!(
            json(&c.filter(ALICE)),
            r#"[{"SrcIPs":["100.64.0.3","fd7a:115c:a1e0::3"],"CapGrant":[{"Dsts":["100.64.0.1/32","fd7a:115c:a1e0::1/128"],"CapMap":{"tailscale.com/cap/drive-sharer":[]}}]}]"#
        );
    }

    #[test]
    fn via_rules_go_to_the_tagged_routers_only() {
        let c = compile(
            r#""grants": [{"src": ["bob@example.org"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["tag:exit"]}]"#,
        );
        assert!(c.filter(ROUTER).is_empty(), "the router does not carry the via tag");
        assert!(c.filter(EXIT).is_empty(), "the exit node does not route 10.33.0.0/16");
        let c = compile(
            r#""grants": [{"src": ["bob@example.org"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["tag:router"]}]"#,
        );
        assert_eq!(c.filter(ROUTER)[0].src_ips, ["100.64.0.2", "fd7a:115c:a1e0::2"]);
        assert!(c.filter(BOB).is_empty() && c.filter(SERVER).is_empty(), "via rules exist only on their routers");
    }

    #[test]
    fn empty_sources_give_nothing_and_no_rules_means_allow_all() {
        let c = compile(r#""acls": [{"action": "accept", "src": [], "dst": ["tag:server:22"]}], "grants": []"#);
        assert!(c.filter(SERVER).is_empty());
        let open = compile(r#""ssh": []"#);
        assert_eq!(open.filter(BOB)[0].dst_ports[0].ip, "*");
        let closed = compile(r#""acls": []"#);
        assert!(closed.filter(BOB).is_empty());
    }
}
