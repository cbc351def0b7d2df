//! Compilation: a [`ParsedPolicy`] joined with a [`Tailnet`] gives the packet filter of every
//! node. Grants become rules in policy order (global rules, then each grant's
//! `autogroup:self` rules per user; `via` rules belong to the routers they name); rules with
//! the same sources and protocols merge into the first; each node then keeps only the
//! destinations that are its own, routed by it, or the internet behind an exit node.
//!
//! For speed, every destination entry is indexed by the nodes it reaches, so a node's filter
//! costs what it contains, not the size of the policy.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::Value;

use super::alias::{Alias, AutoGroup};
use super::fasthash::FastMap;
use super::ipset::{merge_sorted, IpRange, IpSet};
use super::nodeset::NodeSet;
use super::resolve::{wildcard_prefixes, Resolved, Resolver, Sources};
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

/// An address a destination entry names, as a rule writes it.
#[derive(Debug, Clone)]
pub struct Target {
    pub ip: Arc<str>,
    /// The addresses it covers; `None` for `*`.
    pub range: Option<IpRange>,
}

/// A `DstPorts` entry: a target (its index among the rule set's targets) on some ports.
#[derive(Debug, Clone, Copy)]
pub struct DstEntry {
    pub target: u32,
    pub ports: PortRange,
}

/// The targets of a rule set being compiled. Each destination alias's addresses get one
/// block of targets, so entries are small and what a target reaches is worked out once.
#[derive(Default)]
struct Targets {
    list: Vec<Target>,
    /// The block of each alias the resolver holds.
    blocks: FastMap<*const Resolved, u32>,
    star: Option<u32>,
}

impl Targets {
    /// The first target of the block of an alias the resolver holds.
    fn block(&mut self, r: &Arc<Resolved>) -> u32 {
        let list = &mut self.list;
        *self.blocks.entry(Arc::as_ptr(r)).or_insert_with(|| add_block(list, r))
    }

    /// The target `*`.
    fn star(&mut self) -> u32 {
        let list = &mut self.list;
        *self.star.get_or_insert_with(|| {
            list.push(Target { ip: Arc::from("*"), range: None });
            list.len() as u32 - 1
        })
    }
}

/// Adds a block of targets for an alias's addresses; returns its first.
fn add_block(list: &mut Vec<Target>, r: &Resolved) -> u32 {
    let first = list.len() as u32;
    list.extend(r.atoms.iter().zip(&r.texts).map(|(a, text)| Target { ip: text.clone(), range: Some(a.range()) }));
    first
}

/// The capabilities a rule grants on some destinations.
#[derive(Debug, Clone)]
pub struct CapDst {
    pub dsts: Vec<IpNet>,
    pub caps: Arc<BTreeMap<String, Vec<Value>>>,
}

/// What a rule carries: ports on destination entries (with every address they name), or
/// capabilities.
#[derive(Debug, Clone)]
pub enum RuleBody {
    Ports { protos: Vec<IpProto>, entries: Vec<DstEntry>, dst: DstAddrs },
    Caps(Vec<CapDst>),
}

/// Every address a ports rule names: all addresses of some nodes, and other ranges. Merged
/// rules join theirs; the set is built once, for the matcher.
#[derive(Debug, Clone)]
pub struct DstAddrs {
    nodes: NodeSet,
    /// Prefixes, ranges and `*`, in no particular order.
    other: Vec<IpRange>,
}

impl DstAddrs {
    fn new(n: usize) -> Self {
        DstAddrs { nodes: NodeSet::new(n), other: Vec::new() }
    }

    /// Adds what an alias stands for.
    fn add(&mut self, r: &Resolved) {
        if r.by_nodes {
            self.nodes.union_with(&r.nodes);
        } else {
            self.other.extend_from_slice(r.set.ranges());
        }
    }

    /// Adds another rule's addresses.
    fn join(&mut self, other: DstAddrs) {
        self.nodes.union_with(&other.nodes);
        self.other.extend(other.other);
    }

    /// The addresses as a set.
    fn set(&self, t: &Tailnet) -> IpSet {
        let nodes = IpSet::from_ranges(t.address_ranges(&self.nodes, |_| true));
        if self.other.is_empty() {
            return nodes;
        }
        nodes.union(&IpSet::from_ranges(self.other.iter().copied()))
    }
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
    pub fn dst_set(&self, t: &Tailnet) -> IpSet {
        match &self.body {
            RuleBody::Ports { dst, .. } => dst.set(t),
            RuleBody::Caps(caps) => {
                IpSet::from_ranges(caps.iter().flat_map(|c| c.dsts.iter().map(|d| IpRange::net(*d))))
            }
        }
    }
}

fn empty_filter_rule(src: &Sources) -> FilterRule {
    FilterRule { src_ips: src.ips.clone(), dst_ports: Vec::new(), ip_proto: Vec::new(), cap_grant: Vec::new() }
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
    // First where each rule goes and how many entries each merged rule gets, so that every
    // merged rule's entries are allocated once.
    let mut first: FastMap<MergeKey, usize> = FastMap::default();
    let mut place = Vec::with_capacity(rules.len());
    let mut sizes: Vec<usize> = Vec::new();
    for rule in &rules {
        let len = match &rule.body {
            RuleBody::Ports { entries, .. } => entries.len(),
            RuleBody::Caps(_) => 0,
        };
        let slot = match merge_key(rule) {
            Some(key) => *first.entry(key).or_insert(sizes.len()),
            None => sizes.len(),
        };
        if slot == sizes.len() {
            sizes.push(0);
        }
        sizes[slot] += len;
        place.push(slot);
    }
    let mut out: Vec<Rule> = Vec::with_capacity(sizes.len());
    for (mut rule, slot) in rules.into_iter().zip(place) {
        if slot == out.len() {
            if let RuleBody::Ports { entries, .. } = &mut rule.body {
                entries.reserve_exact(sizes[slot] - entries.len());
            }
            out.push(rule);
        } else if let (RuleBody::Ports { entries: into, dst: into_dst, .. }, RuleBody::Ports { entries, dst, .. }) =
            (&mut out[slot].body, rule.body)
        {
            into.extend(entries);
            into_dst.join(dst);
        }
    }
    out
}

/// The rules of a tailnet under a policy, ready to answer per-node questions.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// What destination entries name.
    targets: Vec<Target>,
    /// Global rules, merged, in policy order.
    pub rules: Vec<Rule>,
    keys: FastMap<MergeKey, usize>,
    /// `autogroup:self` rules by user id, in policy order.
    pub self_rules: FastMap<u64, Vec<Rule>>,
    /// `via` rules by node index, in policy order.
    pub via_rules: Vec<Vec<Rule>>,
    /// Entries for every node (`*` destinations): (rule, entry).
    star_entries: Vec<(u32, u32)>,
    /// Entries reaching each node: (rule, entry).
    node_entries: Vec<Vec<(u32, u32)>>,
    /// Capability grants reaching each node: (rule, grant).
    node_caps: Vec<Vec<(u32, u32)>>,
    /// The nodes each global rule's destinations touch, by address or subnet route.
    pub touched: Vec<NodeSet>,
    internet: IpSet,
}

impl RuleSet {
    /// Compiles the grants of a policy for a tailnet.
    pub fn compile(policy: &ParsedPolicy, resolver: &mut Resolver<'_>) -> RuleSet {
        let t = resolver.tailnet;
        let mut targets = Targets::default();
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
            global.extend(grant_rules(gi, grant, resolver, &mut targets));
            if grant.dst.contains(&Alias::AutoGroup(AutoGroup::SelfDevices)) {
                self_grants.push((gi, grant, resolver.sources(&grant.src, true)));
            }
        }
        let rules = merge_rules(global);
        let mut self_rules = FastMap::default();
        for user in &t.users {
            let nodes = &t.by_user[&user.id];
            let mut grants = self_grants.iter().filter(|(_, _, src)| src.nodes.intersects(nodes)).peekable();
            if grants.peek().is_none() {
                continue;
            }
            let own = resolver.nodes_alias(nodes.clone());
            let first = add_block(&mut targets.list, &own);
            let list: Vec<Rule> =
                grants.flat_map(|(gi, g, src)| self_rules_for(*gi, g, src, (&own, first), resolver)).collect();
            if !list.is_empty() {
                self_rules.insert(user.id, list);
            }
        }
        let via_rules = (0..t.len())
            .map(|i| via_grants.iter().flat_map(|(gi, g)| via_rules_for(*gi, g, i, resolver, &mut targets)).collect())
            .collect();
        let mut set = RuleSet {
            targets: targets.list,
            keys: FastMap::default(),
            self_rules,
            via_rules,
            star_entries: Vec::new(),
            node_entries: vec![Vec::new(); t.len()],
            node_caps: vec![Vec::new(); t.len()],
            touched: Vec::with_capacity(rules.len()),
            internet: resolver.internet().clone(),
            rules,
        };
        set.index(t);
        set
    }

    /// Indexes every destination entry by the nodes it reaches, and notes which nodes each
    /// rule's destinations touch.
    fn index(&mut self, t: &Tailnet) {
        // Rules name the same targets over and over: what each reaches is worked out once.
        let mut reach: Vec<Option<(Vec<usize>, bool)>> = vec![None; self.targets.len()];
        let touching_all = t.touching(&IpSet::everything());
        for (ri, rule) in self.rules.iter().enumerate() {
            if let Some(key) = merge_key(rule) {
                self.keys.insert(key, ri);
            }
            let mut touched = NodeSet::new(t.len());
            match &rule.body {
                RuleBody::Ports { entries, .. } => {
                    for (ei, e) in entries.iter().enumerate() {
                        let at = (ri as u32, ei as u32);
                        match &self.targets[e.target as usize].range {
                            None => {
                                self.star_entries.push(at);
                                touched.union_with(&touching_all);
                            }
                            Some(r) => {
                                let (nodes, internet) =
                                    reach[e.target as usize].get_or_insert_with(|| entry_reach(t, &self.internet, r));
                                for &node in nodes.iter() {
                                    self.node_entries[node].push(at);
                                    touched.insert(node);
                                }
                                if *internet {
                                    for node in t.exit_nodes.iter().filter(|n| !nodes.contains(n)) {
                                        self.node_entries[node].push(at);
                                    }
                                }
                            }
                        }
                    }
                }
                RuleBody::Caps(caps) => {
                    for (ci, c) in caps.iter().enumerate() {
                        let reached = t.touching(&IpSet::from_ranges(c.dsts.iter().map(|d| IpRange::net(*d))));
                        for node in reached.iter() {
                            self.node_caps[node].push((ri as u32, ci as u32));
                        }
                        touched.union_with(&reached);
                    }
                }
            }
            self.touched.push(touched);
        }
    }

    /// The packet filter of node `i`: its global, self and via rules, merged, reduced to
    /// what concerns the node.
    pub fn filter(&self, t: &Tailnet, i: usize) -> Vec<FilterRule> {
        let node = &t.nodes[i];
        let merged;
        let entries = if self.star_entries.is_empty() {
            &self.node_entries[i][..]
        } else {
            merged = merge_sorted(&self.star_entries, &self.node_entries[i], |a, b| a <= b);
            &merged[..]
        };
        let rules = entries.chunk_by(|a, b| a.0 == b.0).count() + self.node_caps[i].len();
        let mut out: Vec<(Order, FilterRule)> = Vec::with_capacity(rules);
        let mut slots: Vec<(u32, usize)> = Vec::with_capacity(rules);
        // Entries come grouped by rule, in rule order.
        for run in entries.chunk_by(|a, b| a.0 == b.0) {
            let ri = run[0].0;
            let slot = self.global_slot(&mut slots, &mut out, ri);
            if let RuleBody::Ports { entries, .. } = &self.rules[ri as usize].body {
                let dst_ports = &mut out[slot].1.dst_ports;
                dst_ports.reserve_exact(run.len());
                dst_ports.extend(run.iter().map(|&(_, ei)| self.dst_port(&entries[ei as usize])));
            }
        }
        for &(ri, ci) in &self.node_caps[i] {
            if let RuleBody::Caps(caps) = &self.rules[ri as usize].body {
                if let Some(g) = reduce_cap(t, node, &caps[ci as usize]) {
                    let slot = self.global_slot(&mut slots, &mut out, ri);
                    out[slot].1.cap_grant.push(g);
                }
            }
        }
        let self_rules = node.user.as_ref().filter(|_| !node.is_tagged()).and_then(|u| self.self_rules.get(&u.id));
        let mut extra_slots: FastMap<MergeKey, usize> = FastMap::default();
        for rule in self_rules.into_iter().flatten().chain(&self.via_rules[i]) {
            match &rule.body {
                RuleBody::Ports { protos, entries, .. } => {
                    let key = merge_key(rule).expect("ports rules have a key");
                    let kept: Vec<NetPortRange> =
                        entries.iter().filter(|e| self.entry_reaches_node(t, i, e)).map(|e| self.dst_port(e)).collect();
                    let slot = match (extra_slots.get(&key), self.keys.get(&key)) {
                        (Some(&s), _) => s,
                        (None, Some(&ri)) => self.global_slot(&mut slots, &mut out, ri as u32),
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
        if !out.is_sorted_by_key(|(order, _)| *order) {
            out.sort_by_key(|(order, _)| *order);
        }
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// The place in `out` of global rule `ri`, added empty when the node meets it first.
    /// `slots` holds (rule, place) by rule; rules mostly arrive in order.
    fn global_slot(&self, slots: &mut Vec<(u32, usize)>, out: &mut Vec<(Order, FilterRule)>, ri: u32) -> usize {
        if let Some(&(_, slot)) = slots.last().filter(|(r, _)| *r == ri) {
            return slot;
        }
        match slots.binary_search_by_key(&ri, |&(r, _)| r) {
            Ok(k) => slots[k].1,
            Err(k) => {
                let rule = &self.rules[ri as usize];
                let mut fr = empty_filter_rule(&rule.src);
                if let RuleBody::Ports { protos, .. } = &rule.body {
                    fr.ip_proto = protos.clone();
                }
                out.push((rule.order, fr));
                slots.insert(k, (ri, out.len() - 1));
                out.len() - 1
            }
        }
    }

    /// What an entry names.
    pub fn target(&self, e: &DstEntry) -> &Target {
        &self.targets[e.target as usize]
    }

    /// An entry as a filter writes it.
    fn dst_port(&self, e: &DstEntry) -> NetPortRange {
        NetPortRange { ip: self.target(e).ip.clone(), ports: e.ports }
    }

    fn entry_reaches_node(&self, t: &Tailnet, i: usize, e: &DstEntry) -> bool {
        let Some(r) = &self.target(e).range else { return true };
        t.nodes[i].addrs().any(|a| r.contains_addr(a))
            || t.subnet_ranges[i].iter().any(|s| s.overlaps(r))
            || (t.exit_nodes.contains(i) && self.internet.contains_range(r))
    }
}

/// The nodes a destination range touches (by address or subnet route), once each, and
/// whether it lies in the internet, which exit nodes also reach.
fn entry_reach(t: &Tailnet, internet: &IpSet, r: &IpRange) -> (Vec<usize>, bool) {
    let mut nodes: Vec<usize> = t.nodes_in(r).collect();
    let by_address = nodes.len();
    nodes.extend(t.routers_overlapping(r));
    if nodes.len() > by_address {
        nodes.sort_unstable();
        nodes.dedup();
    }
    (nodes, internet.contains_range(r))
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

/// The destination entries of some aliases on some ports, and every address they name.
fn dst_entries<'a>(
    resolver: &mut Resolver<'_>,
    targets: &mut Targets,
    aliases: impl IntoIterator<Item = &'a Alias>,
    ports: &[PortRange],
) -> (Vec<DstEntry>, DstAddrs) {
    let mut out = Vec::new();
    let mut dst = DstAddrs::new(resolver.tailnet.len());
    if ports.is_empty() {
        return (out, dst);
    }
    for alias in aliases {
        if *alias == Alias::Wildcard {
            let star = targets.star();
            out.extend(ports.iter().map(|p| DstEntry { target: star, ports: *p }));
            dst.other.extend_from_slice(IpSet::everything().ranges());
        } else {
            let r = resolver.resolve(alias);
            block_entries(targets.block(&r), r.atoms.len(), ports, &mut out);
            dst.add(&r);
        }
    }
    (out, dst)
}

/// Each of `count` targets from `first` on each port range.
fn block_entries(first: u32, count: usize, ports: &[PortRange], out: &mut Vec<DstEntry>) {
    out.reserve(count * ports.len());
    for target in first..first + count as u32 {
        out.extend(ports.iter().map(|p| DstEntry { target, ports: *p }));
    }
}

/// The prefixes an alias names as a capability destination.
fn cap_dsts(resolver: &mut Resolver<'_>, alias: &Alias) -> Vec<IpNet> {
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
fn grant_rules(gi: u32, grant: &Grant, resolver: &mut Resolver<'_>, targets: &mut Targets) -> Vec<Rule> {
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
            let (entries, dst) = dst_entries(resolver, targets, dsts.iter().copied(), &ip.ports);
            if !entries.is_empty() {
                out.push(Rule {
                    order: order(),
                    src: src.clone(),
                    body: RuleBody::Ports { protos: ip.protos.clone(), entries, dst },
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

/// The `autogroup:self` rules of a grant (whose sources are `all_src`) for one user's
/// untagged nodes: `own`, whose addresses are the targets from `first` on.
fn self_rules_for(
    gi: u32,
    grant: &Grant,
    all_src: &Sources,
    (own, first): (&Resolved, u32),
    resolver: &mut Resolver<'_>,
) -> Vec<Rule> {
    let user_nodes = &own.nodes;
    let src_nodes = user_nodes.intersection(&all_src.nodes);
    if src_nodes.is_empty() {
        return Vec::new();
    }
    let src = resolver.node_sources(src_nodes);
    let mut seq = SELF_RULES;
    let mut order = || {
        seq += 1;
        (gi, seq - 1)
    };
    let mut out = Vec::new();
    for ip in &grant.ip {
        let mut entries = Vec::new();
        block_entries(first, own.atoms.len(), &ip.ports, &mut entries);
        let mut dst = DstAddrs::new(resolver.tailnet.len());
        if !entries.is_empty() {
            dst.add(own);
        }
        out.push(Rule {
            order: order(),
            src: src.clone(),
            body: RuleBody::Ports { protos: ip.protos.clone(), entries, dst },
        });
    }
    if !grant.app.is_empty() {
        let dst_src = resolver.node_sources(user_nodes.clone());
        let per_node: Vec<Vec<IpNet>> =
            user_nodes.iter().map(|i| resolver.tailnet.nodes[i].addrs().map(IpNet::from).collect()).collect();
        out.extend(cap_rules(&mut order, src, dst_src, per_node, &grant.app));
    }
    out
}

/// The `via` rules of a grant for node `i`, if it carries a via tag and routes a destination.
fn via_rules_for(gi: u32, grant: &Grant, i: usize, resolver: &mut Resolver<'_>, targets: &mut Targets) -> Vec<Rule> {
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
            let (entries, dst) = dst_entries(resolver, targets, &grant.dst, &ip.ports);
            (!entries.is_empty()).then(|| Rule {
                order: (gi, k as u32),
                src: src.clone(),
                body: RuleBody::Ports { protos: ip.protos.clone(), entries, dst },
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
        assert_eq!(*router[0].src_ips, ["100.64.0.1", "fd7a:115c:a1e0::1"], "merged into the first rule's place");
        assert!(c.filter(ALICE).is_empty() && c.filter(BOB).is_empty());
    }

    #[test]
    fn wildcard_sources_are_the_tailscale_ranges_and_every_subnet_route() {
        let c = compile(r#""acls": [{"action": "accept", "src": ["*", "tag:server"], "dst": ["tag:server:22"]}]"#);
        assert_eq!(
            *c.filter(SERVER)[0].src_ips,
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
        assert_eq!(&*router[0].dst_ports[0].ip, "10.33.1.0/24");
        let exit = c.filter(EXIT);
        assert_eq!(&*exit[0].dst_ports[0].ip, "8.8.8.0/24");
        assert_eq!(exit[1].dst_ports.len(), 7, "the internet as ranges");
        assert_eq!(&*exit[1].dst_ports[0].ip, "0.0.0.0-9.255.255.255");
        assert!(c.filter(SERVER).is_empty());
    }

    #[test]
    fn self_destinations_are_per_user() {
        let c = compile(r#""acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]"#);
        assert_eq!(
            json(&c.filter(ALICE)),
            r#"[{"SrcIPs":["100.64.0.1","fd7a:115c:a1e0::1"],"DstPorts":[{"IP":"100.64.0.1","Ports":{"First":0,"Last":65535}},{"IP":"fd7a:115c:a1e0::1","Ports":{"First":0,"Last":65535}}]}]"#
        );
        assert_eq!(*c.filter(BOB)[0].src_ips, ["100.64.0.2", "fd7a:115c:a1e0::2"]);
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
        assert_eq!(*c.filter(ROUTER)[0].src_ips, ["100.64.0.2", "fd7a:115c:a1e0::2"]);
        assert!(c.filter(BOB).is_empty() && c.filter(SERVER).is_empty(), "via rules exist only on their routers");
    }

    #[test]
    fn empty_sources_give_nothing_and_no_rules_means_allow_all() {
        let c = compile(r#""acls": [{"action": "accept", "src": [], "dst": ["tag:server:22"]}], "grants": []"#);
        assert!(c.filter(SERVER).is_empty());
        let open = compile(r#""ssh": []"#);
        assert_eq!(&*open.filter(BOB)[0].dst_ports[0].ip, "*");
        let closed = compile(r#""acls": []"#);
        assert!(closed.filter(BOB).is_empty());
    }
}
