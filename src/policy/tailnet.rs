//! The tailnet as the policy engine sees it: users and nodes with their addresses, tags and
//! routes ([`PolicyNode`], [`PolicyUser`]), and [`Tailnet`], the lookups compilation needs
//! (nodes by tag, by user, by address range; who routes what).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::fasthash::FastMap;
use super::ipset::{IpRange, IpSet};
use super::nodeset::NodeSet;

/// A user, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyUser {
    pub id: u64,
    /// The login name (`alice`), matched by `alice@` in a policy.
    pub name: String,
    /// The e-mail address, matched by `alice@example.com`.
    pub email: String,
}

/// A node, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNode {
    pub id: u64,
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The owner; `None` for tagged nodes.
    pub user: Option<PolicyUser>,
    pub tags: Vec<String>,
    /// The routes the node advertises.
    pub routable_ips: Vec<IpNet>,
    /// The routes an administrator (or an auto-approver) approved.
    pub approved_routes: Vec<IpNet>,
}

/// Whether a route is a default (exit) route.
pub fn is_exit_route(route: &IpNet) -> bool {
    route.prefix_len() == 0
}

impl PolicyNode {
    /// Tagged nodes belong to their tags, not to a user.
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    /// The node's own addresses, IPv4 first.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4.map(IpAddr::V4).into_iter().chain(self.ipv6.map(IpAddr::V6))
    }

    /// Advertised and approved routes, exit routes excluded.
    pub fn subnet_routes(&self) -> Vec<IpNet> {
        self.live_routes().filter(|r| !is_exit_route(r)).collect()
    }

    /// The exit routes (`0.0.0.0/0`, `::/0`) that are advertised and approved.
    pub fn exit_routes(&self) -> Vec<IpNet> {
        self.live_routes().filter(is_exit_route).collect()
    }

    /// Whether the node is an approved exit node.
    pub fn is_exit_node(&self) -> bool {
        self.live_routes().any(|r| is_exit_route(&r))
    }

    fn live_routes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.routable_ips.iter().filter(|r| self.approved_routes.contains(r)).copied()
    }
}

/// The nodes indexed for compilation.
#[derive(Debug, Clone)]
pub struct Tailnet {
    pub nodes: Vec<PolicyNode>,
    by_id: FastMap<u64, usize>,
    /// Every node address as (family, bits, node index), sorted.
    addrs: Vec<(bool, u128, usize)>,
    /// Each node's addresses as a rule writes them.
    pub addr_texts: Vec<Vec<Arc<str>>>,
    /// Every node address in the order of its text (rules list sources as sorted text): the
    /// text, the node, the address.
    by_text: Vec<(Arc<str>, usize, IpRange)>,
    /// Where each node's addresses sit in `by_text`.
    text_ranks: Vec<Vec<u32>>,
    /// Where each node's addresses sit in `addrs`.
    addr_ranks: Vec<Vec<u32>>,
    /// Every node has an address and no two nodes share one.
    addresses_identify_nodes: bool,
    /// Each node's subnet routes as ranges.
    pub subnet_ranges: Vec<Vec<IpRange>>,
    /// Nodes with at least one subnet route.
    pub routers: Vec<usize>,
    /// Every address some subnet route covers.
    route_space: IpSet,
    /// The routers whose subnet routes cover node addresses, with those nodes.
    routers_of_nodes: Vec<(usize, NodeSet)>,
    pub exit_nodes: NodeSet,
    pub tagged: NodeSet,
    pub by_tag: FastMap<String, NodeSet>,
    /// Untagged nodes by their user's id.
    pub by_user: FastMap<u64, NodeSet>,
    /// Every user owning an untagged node.
    pub users: Vec<PolicyUser>,
    /// Every approved subnet route in the tailnet, once each, sorted.
    pub all_subnet_routes: Vec<IpNet>,
}

impl Tailnet {
    /// Indexes the nodes.
    pub fn new(nodes: Vec<PolicyNode>) -> Self {
        let n = nodes.len();
        let mut t = Tailnet {
            by_id: FastMap::with_capacity_and_hasher(n, Default::default()),
            addrs: Vec::with_capacity(2 * n),
            addr_texts: Vec::with_capacity(n),
            by_text: Vec::new(),
            text_ranks: Vec::new(),
            addr_ranks: Vec::new(),
            addresses_identify_nodes: false,
            subnet_ranges: Vec::with_capacity(n),
            routers: Vec::new(),
            route_space: IpSet::default(),
            routers_of_nodes: Vec::new(),
            exit_nodes: NodeSet::new(n),
            tagged: NodeSet::new(n),
            by_tag: FastMap::default(),
            by_user: FastMap::default(),
            users: Vec::new(),
            all_subnet_routes: Vec::new(),
            nodes: Vec::new(),
        };
        for (i, node) in nodes.iter().enumerate() {
            t.by_id.insert(node.id, i);
            for a in node.addrs() {
                let r = IpRange::addr(a);
                t.addrs.push((r.v6, r.start, i));
            }
            t.addr_texts.push(node.addrs().map(|a| Arc::from(a.to_string())).collect());
            let routes = node.subnet_routes();
            if !routes.is_empty() {
                t.routers.push(i);
            }
            t.all_subnet_routes.extend(routes.iter().copied());
            t.subnet_ranges.push(routes.into_iter().map(IpRange::net).collect());
            if node.is_exit_node() {
                t.exit_nodes.insert(i);
            }
            if node.is_tagged() {
                t.tagged.insert(i);
                for tag in &node.tags {
                    t.by_tag.entry(tag.clone()).or_insert_with(|| NodeSet::new(n)).insert(i);
                }
            } else if let Some(u) = &node.user {
                let set = t.by_user.entry(u.id).or_insert_with(|| NodeSet::new(n));
                if set.is_empty() {
                    t.users.push(u.clone());
                }
                set.insert(i);
            }
        }
        t.addrs.sort_unstable();
        t.addresses_identify_nodes = nodes.iter().all(|n| n.addrs().next().is_some())
            && t.addrs.windows(2).all(|w| (w[0].0, w[0].1) != (w[1].0, w[1].1));
        t.rank_addresses(&nodes);
        t.route_space = IpSet::from_ranges(t.subnet_ranges.iter().flatten().copied());
        for &r in &t.routers {
            let mut covered = NodeSet::new(n);
            t.subnet_ranges[r].iter().for_each(|s| t.nodes_in(s).for_each(|i| covered.insert(i)));
            if !covered.is_empty() {
                t.routers_of_nodes.push((r, covered));
            }
        }
        t.all_subnet_routes.sort_unstable_by_key(|r| (IpRange::net(*r), r.prefix_len()));
        t.all_subnet_routes.dedup();
        t.users.sort_by_key(|u| u.id);
        t.nodes = nodes;
        t
    }

    /// Fills the address tables: `by_text`, `text_ranks` and `addr_ranks`.
    fn rank_addresses(&mut self, nodes: &[PolicyNode]) {
        let mut all: Vec<(Arc<str>, usize, IpRange)> = Vec::with_capacity(self.addrs.len());
        for (i, node) in nodes.iter().enumerate() {
            all.extend(
                self.addr_texts[i].iter().cloned().zip(node.addrs()).map(|(text, a)| (text, i, IpRange::addr(a))),
            );
        }
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.text_ranks = vec![Vec::new(); nodes.len()];
        for (rank, (_, i, _)) in all.iter().enumerate() {
            self.text_ranks[*i].push(rank as u32);
        }
        self.by_text = all;
        self.addr_ranks = vec![Vec::new(); nodes.len()];
        for (rank, &(_, _, i)) in self.addrs.iter().enumerate() {
            self.addr_ranks[i].push(rank as u32);
        }
    }

    /// The positions of `nodes`' addresses, ascending, in a table of every node address
    /// (`ranks` holds each node's positions, `owner` the node at a position). A large set is
    /// read off the table; a small one is sorted.
    fn positions(&self, nodes: &NodeSet, ranks: &[Vec<u32>], owner: impl Fn(usize) -> usize) -> Vec<u32> {
        let count: usize = nodes.iter().map(|i| ranks[i].len()).sum();
        let mut out = Vec::with_capacity(count);
        if count * 8 >= self.addrs.len() {
            out.extend((0..self.addrs.len() as u32).filter(|&k| nodes.contains(owner(k as usize))));
        } else {
            nodes.iter().for_each(|i| out.extend_from_slice(&ranks[i]));
            out.sort_unstable();
        }
        out
    }

    /// The addresses of some nodes that `keep` accepts, as text, in text order.
    pub fn address_texts(&self, nodes: &NodeSet, keep: impl Fn(&IpRange) -> bool) -> Vec<Arc<str>> {
        let positions = self.positions(nodes, &self.text_ranks, |k| self.by_text[k].1);
        let mut out = Vec::with_capacity(positions.len());
        let entries = positions.into_iter().map(|k| &self.by_text[k as usize]);
        out.extend(entries.filter(|(_, _, r)| keep(r)).map(|(text, _, _)| text.clone()));
        out
    }

    /// The addresses of some nodes that `keep` accepts, in address order.
    pub fn address_ranges(&self, nodes: &NodeSet, keep: impl Fn(&IpRange) -> bool) -> Vec<IpRange> {
        let positions = self.positions(nodes, &self.addr_ranks, |k| self.addrs[k].2);
        let mut out = Vec::with_capacity(positions.len());
        out.extend(positions.into_iter().map(|k| self.addr_range(k as usize)).filter(|r| keep(r)));
        out
    }

    /// The `k`th address of `addrs`.
    fn addr_range(&self, k: usize) -> IpRange {
        let (v6, bits, _) = self.addrs[k];
        IpRange { v6, start: bits, end: bits }
    }

    /// What [`Tailnet::touching`] gives for `addrs`, the addresses of exactly `nodes`: when
    /// addresses identify nodes, the nodes themselves and the routers of those addresses.
    pub fn touching_nodes(&self, nodes: &NodeSet, addrs: &IpSet) -> NodeSet {
        if !self.addresses_identify_nodes {
            return self.touching(addrs);
        }
        let mut out = nodes.clone();
        for (r, covered) in &self.routers_of_nodes {
            if covered.intersects(nodes) {
                out.insert(*r);
            }
        }
        out
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The index of the node with this id.
    pub fn index(&self, id: u64) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Nodes with an address inside `range`.
    pub fn nodes_in(&self, range: &IpRange) -> impl Iterator<Item = usize> + '_ {
        let (family, end) = (range.v6, range.end);
        let from = self.addrs.partition_point(|&(v6, bits, _)| (v6, bits) < (range.v6, range.start));
        self.addrs[from..].iter().take_while(move |&&(v6, bits, _)| v6 == family && bits <= end).map(|a| a.2)
    }

    /// Nodes whose subnet routes overlap `range`.
    pub fn routers_overlapping<'a>(&'a self, range: &'a IpRange) -> impl Iterator<Item = usize> + 'a {
        let routers = if self.route_space.overlaps_range(range) { &self.routers[..] } else { &[] };
        routers.iter().copied().filter(move |&i| self.subnet_ranges[i].iter().any(|r| r.overlaps(range)))
    }

    /// The nodes a set touches: those with an address in it or a subnet route overlapping it.
    pub fn touching(&self, set: &IpSet) -> NodeSet {
        let mut out = NodeSet::new(self.len());
        for r in set.ranges() {
            self.nodes_in(r).for_each(|i| out.insert(i));
            self.routers_overlapping(r).for_each(|i| out.insert(i));
        }
        out
    }

    /// The untagged nodes of the user(s) a token names: by e-mail, else by login name; a
    /// trailing `@` is ignored.
    pub fn user_nodes(&self, token: &str) -> NodeSet {
        let mut out = NodeSet::new(self.len());
        for u in users_named(&self.users, token) {
            out.union_with(&self.by_user[&u.id]);
        }
        out
    }

    /// The untagged nodes of every user whose e-mail is in `domain`.
    pub fn domain_nodes(&self, domain: &str) -> NodeSet {
        let mut out = NodeSet::new(self.len());
        for u in &self.users {
            if email_domain(&u.email).is_some_and(|d| d.eq_ignore_ascii_case(domain)) {
                out.union_with(&self.by_user[&u.id]);
            }
        }
        out
    }
}

/// The users a policy token names: those with that e-mail address, else those with that
/// login name; a trailing `@` is ignored.
pub fn users_named<'a>(users: &'a [PolicyUser], token: &str) -> Vec<&'a PolicyUser> {
    let token = token.strip_suffix('@').unwrap_or(token);
    let by_email: Vec<&PolicyUser> = users.iter().filter(|u| u.email == token).collect();
    if by_email.is_empty() {
        users.iter().filter(|u| u.name == token).collect()
    } else {
        by_email
    }
}

/// The part of an e-mail address after the last `@`.
pub fn email_domain(email: &str) -> Option<&str> {
    email.rsplit_once('@').map(|(_, d)| d)
}
