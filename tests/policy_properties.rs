//! Property tests of the policy engine, through its public API, over random tailnets (users,
//! user-owned and tagged nodes, advertised and approved subnet and exit routes) and random
//! policies built from the language's pieces and rendered to policy text:
//!
//! - parsing never panics, on generated policies and on plausible but broken text, and
//!   compiling (then asking every per-node question) never panics on what parses;
//! - a node's filter names only destinations that belong to it: each entry covers one of its
//!   addresses or approved subnet routes, or, on an approved exit node, lies in the internet
//!   (public IPv4, global IPv6);
//! - adding an accept rule never removes access: `can_access` and peers only grow, and every
//!   packet a node's filter accepted before is still accepted;
//! - when nodes change, every node outside `CompiledPolicy::affected_since` keeps its peers,
//!   filter, SSH policy and capabilities.
//!
//! `PROPTEST_CASES` sets the number of cases per property.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use headscale::policy::{run_tests, CompiledPolicy, ParsedPolicy, PolicyNode, PolicyUser, NOT_INTERNET};
use headscale::tailcfg::FilterRule;
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use serde_json::{json, Map, Value};

/// Cases per property when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 128;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    config
}

// ---------------------------------------------------------------------------------------
// Tailnets

/// Users; the last has no e-mail address, as a local user may not.
const USERS: [(u64, &str, &str); 5] = [
    (1, "alice", "alice@example.com"),
    (2, "bob", "bob@example.org"),
    (3, "carol", "carol@example.com"),
    (4, "dave", "dave@example.net"),
    (5, "erin", ""),
];

/// The tags the policy defines.
const TAGS: [&str; 4] = ["tag:server", "tag:router", "tag:exit", "tag:db"];

/// The tags nodes may carry: the policy's, and one it never defines.
const NODE_TAGS: [&str; 5] = ["tag:server", "tag:router", "tag:exit", "tag:db", "tag:stray"];

/// Routes nodes may advertise and have approved; the last two make an exit node.
const ROUTES: [&str; 7] =
    ["10.33.0.0/16", "10.33.1.0/24", "10.0.0.0/8", "192.168.1.0/24", "fd00:1::/64", "0.0.0.0/0", "::/0"];

const MAX_NODES: usize = 12;

fn user(i: usize) -> PolicyUser {
    let (id, name, email) = USERS[i];
    PolicyUser { id, name: name.into(), email: email.into() }
}

#[derive(Debug, Clone)]
enum Owner {
    User(usize),
    Tags(Vec<&'static str>),
}

/// Node number `index`: its last address byte is `index + 1`, so addresses never collide.
/// Some land in 100.115.92.0/23, which `*` leaves out.
fn node(index: usize) -> impl Strategy<Value = PolicyNode> {
    let owner = prop_oneof![
        3 => (0..USERS.len()).prop_map(Owner::User),
        2 => subsequence(NODE_TAGS.to_vec(), 1..=2).prop_map(Owner::Tags),
    ];
    let v4 = prop::option::weighted(0.9, (prop_oneof![64u8..128, Just(115u8)], prop_oneof![any::<u8>(), 92u8..94]));
    let v6 = prop::option::weighted(0.9, any::<u16>());
    let routes = prop::collection::vec((prop::bool::weighted(0.2), prop::bool::weighted(0.7)), ROUTES.len());
    (owner, v4, v6, routes).prop_map(move |(owner, v4, v6, routes)| {
        let host = index as u8 + 1;
        let mut node = PolicyNode {
            id: index as u64 * 3 + 7,
            name: format!("node{index}"),
            ipv4: v4.map(|(b, c)| Ipv4Addr::new(100, b, c, host)),
            ipv6: v6.map(|s| Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, s, 0, 0, 0, u16::from(host))),
            user: None,
            tags: Vec::new(),
            routable_ips: Vec::new(),
            approved_routes: Vec::new(),
        };
        match owner {
            Owner::User(u) => node.user = Some(user(u)),
            Owner::Tags(tags) => node.tags = tags.iter().map(ToString::to_string).collect(),
        }
        for (route, (advertised, approved)) in ROUTES.iter().zip(routes) {
            let route: IpNet = route.parse().expect("valid route");
            if advertised {
                node.routable_ips.push(route);
            }
            if approved {
                node.approved_routes.push(route);
            }
        }
        node
    })
}

fn tailnet() -> impl Strategy<Value = Vec<PolicyNode>> {
    (1..=MAX_NODES).prop_flat_map(|n| (0..n).map(node).collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------------------
// Policies

/// User tokens in every spelling the language has.
const USER_TOKENS: [&str; 7] = [
    "alice@example.com",
    "bob@",
    "carol@example.com",
    "dave@example.net",
    "erin@",
    "nobody@example.com",
    "user:*@example.com",
];

const GROUPS: [&str; 3] = ["group:admins", "group:dev", "group:empty"];

/// Aliases valid on both sides of a rule besides users, groups, `*` and the tailnet's own
/// addresses: tags, hosts, prefixes, ranges and node autogroups.
const OTHER_ALIASES: [&str; 24] = [
    "tag:server",
    "tag:router",
    "tag:exit",
    "tag:db",
    "web",
    "lan",
    "pub",
    "10.33.0.0/16",
    "10.33.1.7",
    "10.0.0.0/8",
    "192.168.1.0/24",
    "100.64.0.0/10",
    "100.64.0.0/12",
    "fd7a:115c:a1e0::/48",
    "fd7a:115c:a1e0::/64",
    "8.8.8.0/24",
    "2001:db8::/32",
    "100.64.0.0-100.100.255.255",
    "10.33.0.5-10.33.0.200",
    "100.0.0.0/8",
    "8.0.0.0-100.127.255.255",
    "autogroup:member",
    "autogroup:tagged",
    "autogroup:shared",
];

/// Aliases valid on both sides of a rule, besides the tailnet's own addresses.
fn aliases() -> impl Iterator<Item = &'static str> + Clone {
    ["*"].into_iter().chain(USER_TOKENS).chain(GROUPS).chain(OTHER_ALIASES)
}

const PORTS: [&str; 6] = ["*", "22", "80-443", "22,443", "53", "1-65535"];

/// ACL protocols; empty is "not set".
const PROTOS: [&str; 7] = ["", "tcp", "udp", "icmp", "6", "sctp", "17"];

/// Grant `ip` entries.
const IPS: [&str; 8] = ["*", "tcp:22", "udp:53", "icmp:*", "443", "tcp:80-443", "sctp:9", "22,80"];

const SSH_USERS: [&str; 4] = ["root", "autogroup:nonroot", "alice", "localpart:*@example.com"];

const NODE_ATTRS: [&str; 3] = ["funnel", "mullvad", "drive:share"];

/// The aliases rules draw from, with the tailnet's addresses among them.
#[derive(Debug, Clone)]
struct Vocab {
    src: Vec<String>,
    dst: Vec<String>,
    addrs: Vec<String>,
}

impl Vocab {
    fn new(nodes: &[PolicyNode]) -> Self {
        let addrs: Vec<String> = nodes.iter().flat_map(|n| n.addrs()).map(|a| a.to_string()).collect();
        let common = aliases().map(ToString::to_string).chain(addrs.iter().cloned());
        let src = common.clone().chain(["autogroup:danger-all".to_string(), "autogroup:admin".to_string()]).collect();
        let dst = common.chain(["autogroup:self".to_string(), "autogroup:internet".to_string()]).collect();
        Vocab { src, dst, addrs }
    }
}

/// Whether an alias names users only (`*` counts where `wildcard` allows it), as an
/// `autogroup:self` destination requires of every source.
fn user_like(alias: &str, wildcard: bool) -> bool {
    match alias {
        "*" => wildcard,
        "autogroup:member" | "autogroup:admin" => true,
        a => a.starts_with("group:") || a.contains('@'),
    }
}

fn drop_self_unless_user_sources(src: &[String], dst: &mut Vec<String>, wildcard: bool) {
    if !src.iter().all(|s| user_like(s, wildcard)) {
        dst.retain(|d| d != "autogroup:self");
    }
}

fn acl(v: &Vocab) -> impl Strategy<Value = Value> {
    let dst = (select(v.dst.clone()), select(PORTS.to_vec()), any::<bool>());
    let src = prop::collection::vec(select(v.src.clone()), 0..=3);
    (src, prop::collection::vec(dst, 0..=3), select(PROTOS.to_vec())).prop_map(|(src, dst, proto)| {
        let portless = proto == "icmp";
        let mut hosts: Vec<String> = dst.iter().map(|(host, _, _)| host.clone()).collect();
        drop_self_unless_user_sources(&src, &mut hosts, true);
        let dst: Vec<String> = dst
            .into_iter()
            .filter(|(host, _, _)| hosts.contains(host))
            .map(|(host, ports, bracket)| {
                let ports = if portless { "*" } else { ports };
                if bracket && host.parse::<Ipv6Addr>().is_ok() {
                    format!("[{host}]:{ports}")
                } else {
                    format!("{host}:{ports}")
                }
            })
            .collect();
        let mut acl = json!({"action": "accept", "src": src, "dst": dst});
        if !proto.is_empty() {
            acl["proto"] = json!(proto);
        }
        acl
    })
}

fn app() -> impl Strategy<Value = Map<String, Value>> {
    let caps = vec![
        json!({"example.com/cap/web": [{"role": "viewer"}]}),
        json!({"tailscale.com/cap/drive": [{"shares": ["*"], "access": "ro"}]}),
        json!({"tailscale.com/cap/relay": []}),
    ];
    prop_oneof![
        3 => Just(Map::new()),
        1 => select(caps).prop_map(|c| c.as_object().cloned().expect("an object")),
    ]
}

fn grant(v: &Vocab) -> impl Strategy<Value = Value> {
    let src = prop::collection::vec(select(v.src.clone()), 0..=3);
    let dst = prop::collection::vec(select(v.dst.clone()), 0..=3);
    let ip = prop::collection::vec(select(IPS.to_vec()), 0..=2);
    let via = prop::option::weighted(0.15, select(vec!["tag:router", "tag:exit"]));
    (src, dst, ip, app(), via).prop_map(|(src, mut dst, mut ip, app, via)| {
        if ip.is_empty() && app.is_empty() {
            ip.push("*");
        }
        if !app.is_empty() {
            dst.retain(|d| d != "autogroup:internet");
        }
        drop_self_unless_user_sources(&src, &mut dst, false);
        let mut grant = json!({"src": src, "dst": dst, "ip": ip});
        if !app.is_empty() {
            grant["app"] = Value::Object(app);
        }
        if let Some(tag) = via {
            grant["via"] = json!([tag]);
        }
        grant
    })
}

fn ssh_rule() -> impl Strategy<Value = Value> {
    let src_pool: Vec<&str> = ["*", "10.0.0.0/8", "autogroup:member", "autogroup:tagged"]
        .into_iter()
        .chain(USER_TOKENS)
        .chain(GROUPS)
        .chain(TAGS)
        .collect();
    let dst_pool: Vec<&str> = ["autogroup:self", "autogroup:member", "autogroup:tagged"]
        .into_iter()
        .chain(USER_TOKENS)
        .chain(GROUPS)
        .chain(TAGS)
        .collect();
    (
        select(vec!["accept", "check"]),
        prop::collection::vec(select(src_pool), 0..=2),
        prop::collection::vec(select(dst_pool), 0..=2),
        subsequence(SSH_USERS.to_vec(), 1..=2),
    )
        .prop_map(|(action, src, dst, users)| json!({"action": action, "src": src, "dst": dst, "users": users}))
}

fn node_attr() -> impl Strategy<Value = Value> {
    let targets: Vec<&str> = ["*", "autogroup:member", "autogroup:tagged"]
        .into_iter()
        .chain(USER_TOKENS)
        .chain(GROUPS)
        .chain(TAGS)
        .collect();
    (prop::collection::vec(select(targets), 1..=2), subsequence(NODE_ATTRS.to_vec(), 0..=2), app())
        .prop_map(|(target, attr, app)| json!({"target": target, "attr": attr, "app": app}))
}

/// Who may own a tag or be an auto-approver.
fn owners() -> Vec<&'static str> {
    USER_TOKENS.into_iter().chain(GROUPS).chain(["autogroup:member"]).collect()
}

fn auto_approvers() -> impl Strategy<Value = Value> {
    let approvers: Vec<&str> = owners().into_iter().chain(TAGS).chain(["autogroup:tagged"]).collect();
    let per_route = prop::option::weighted(0.4, subsequence(approvers.clone(), 0..=2));
    (prop::collection::vec(per_route, ROUTES.len()), subsequence(approvers, 0..=2)).prop_map(|(routes, exit)| {
        let routes: Map<String, Value> =
            ROUTES.iter().zip(routes).filter_map(|(r, a)| a.map(|a| (r.to_string(), json!(a)))).collect();
        json!({"routes": routes, "exitNode": exit})
    })
}

/// A policy: every section but the rules, and the rules (`None` leaves the key out).
#[derive(Debug, Clone)]
struct Spec {
    sections: Map<String, Value>,
    acls: Option<Vec<Value>>,
    grants: Option<Vec<Value>>,
    hujson: bool,
}

impl Spec {
    /// The policy text: JSON, or HuJSON with comments and trailing commas.
    fn render(&self) -> String {
        let mut doc = self.sections.clone();
        if let Some(acls) = &self.acls {
            doc.insert("acls".into(), Value::Array(acls.clone()));
        }
        if let Some(grants) = &self.grants {
            doc.insert("grants".into(), Value::Array(grants.clone()));
        }
        let text = serde_json::to_string_pretty(&Value::Object(doc)).expect("serializable");
        if self.hujson {
            hujson(&text)
        } else {
            text
        }
    }
}

/// Pretty JSON with what HuJSON adds: comments, and a trailing comma after the last element
/// of every multi-line object and array. Generated strings hold no newlines or comment markers.
fn hujson(json: &str) -> String {
    let lines: Vec<&str> = json.lines().collect();
    let mut out = String::from("// a generated policy\n");
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        let opens = line.ends_with('[') || line.ends_with('{');
        let closes_next = lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with([']', '}']));
        if closes_next && !opens {
            out.push(',');
        }
        if opens {
            out.push_str(" // opens");
        } else if line.ends_with(',') {
            out.push_str(" /* next */");
        }
        out.push('\n');
    }
    out
}

fn spec(v: &Vocab) -> impl Strategy<Value = Spec> {
    let groups = (subsequence(USER_TOKENS.to_vec(), 0..=3), subsequence(USER_TOKENS.to_vec(), 0..=2))
        .prop_map(|(admins, dev)| json!({"group:admins": admins, "group:dev": dev, "group:empty": []}));
    let web = select(v.addrs.iter().cloned().chain(["100.64.0.1".to_string()]).collect::<Vec<_>>());
    let hosts = (
        web,
        select(vec!["10.33.0.0/16", "10.33.1.0/24", "192.168.1.0/24"]),
        select(vec!["8.8.8.0/24", "2001:db8::1"]),
    )
        .prop_map(|(web, lan, public)| json!({"web": web, "lan": lan, "pub": public}));
    let tag_owners = prop::collection::vec(subsequence(owners(), 0..=2), TAGS.len())
        .prop_map(|o| Value::Object(TAGS.iter().zip(o).map(|(t, o)| (t.to_string(), json!(o))).collect()));
    let sections = (
        groups,
        hosts,
        tag_owners,
        prop::option::weighted(0.5, auto_approvers()),
        prop::collection::vec(ssh_rule(), 0..=2),
        prop::collection::vec(node_attr(), 0..=2),
    )
        .prop_map(|(groups, hosts, tag_owners, approvers, ssh, attrs)| {
            let mut m = Map::new();
            m.insert("groups".into(), groups);
            m.insert("hosts".into(), hosts);
            m.insert("tagOwners".into(), tag_owners);
            if let Some(a) = approvers {
                m.insert("autoApprovers".into(), a);
            }
            m.insert("ssh".into(), Value::Array(ssh));
            m.insert("nodeAttrs".into(), Value::Array(attrs));
            m
        });
    let acls = prop::option::weighted(0.85, prop::collection::vec(acl(v), 0..=6));
    let grants = prop::option::weighted(0.5, prop::collection::vec(grant(v), 0..=4));
    (sections, acls, grants, any::<bool>()).prop_map(|(sections, acls, grants, hujson)| Spec {
        sections,
        acls,
        grants,
        hujson,
    })
}

/// A tailnet and a policy for it.
fn scenario() -> impl Strategy<Value = (Vec<PolicyNode>, Spec)> {
    tailnet().prop_flat_map(|nodes| {
        let v = Vocab::new(&nodes);
        (Just(nodes), spec(&v))
    })
}

/// A rule to add to a policy: a new ACL or grant, or a copy of one of the policy's rules
/// keeping some of its destinations (same sources, so it merges with the rule it copies).
#[derive(Debug, Clone)]
enum Extra {
    Acl(Value),
    Grant(Value),
    Copy(Index, Vec<bool>),
}

impl Extra {
    /// Adds the rule to `spec` at position `at` of its list.
    fn add_to(self, spec: &mut Spec, at: Index) {
        let (to_grants, rule) = match self {
            Extra::Acl(rule) => (false, rule),
            Extra::Grant(rule) => (true, rule),
            Extra::Copy(which, keep) => {
                let acls = spec.acls.iter().flatten().map(|r| (false, r));
                let all: Vec<(bool, &Value)> = acls.chain(spec.grants.iter().flatten().map(|r| (true, r))).collect();
                if all.is_empty() {
                    return;
                }
                let (is_grant, original) = all[which.index(all.len())];
                let mut rule = original.clone();
                let dst = rule["dst"].as_array().cloned().unwrap_or_default();
                let kept = dst.into_iter().zip(keep.iter().cycle()).filter(|(_, k)| **k).map(|(d, _)| d).collect();
                rule["dst"] = Value::Array(kept);
                (is_grant, rule)
            }
        };
        let list = if to_grants { &mut spec.grants } else { &mut spec.acls }.get_or_insert_with(Vec::new);
        list.insert(at.index(list.len() + 1), rule);
    }
}

/// A tailnet, a policy, and rules to add to it one after the other, each at a position.
fn scenario_with_extra_rules() -> impl Strategy<Value = (Vec<PolicyNode>, Spec, Vec<(Extra, Index)>)> {
    tailnet().prop_flat_map(|nodes| {
        let v = Vocab::new(&nodes);
        let copy = (any::<Index>(), prop::collection::vec(any::<bool>(), 1..4)).prop_map(|(i, k)| Extra::Copy(i, k));
        let extra = prop_oneof![acl(&v).prop_map(Extra::Acl), grant(&v).prop_map(Extra::Grant), copy];
        (Just(nodes), spec(&v), prop::collection::vec((extra, any::<Index>()), 1..=3))
    })
}

// ---------------------------------------------------------------------------------------
// Plausible text

/// Pieces of policy text, whole and broken.
const TOKENS: [&str; 66] = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"acls\"",
    "\"grants\"",
    "\"groups\"",
    "\"hosts\"",
    "\"tagOwners\"",
    "\"autoApprovers\"",
    "\"routes\"",
    "\"exitNode\"",
    "\"ssh\"",
    "\"nodeAttrs\"",
    "\"tests\"",
    "\"sshTests\"",
    "\"src\"",
    "\"dst\"",
    "\"ip\"",
    "\"app\"",
    "\"via\"",
    "\"action\"",
    "\"accept\"",
    "\"check\"",
    "\"users\"",
    "\"proto\"",
    "\"target\"",
    "\"ipPool\"",
    "\"*\"",
    "\"tag:server\"",
    "\"tag:server:22\"",
    "\"group:admins\"",
    "\"alice@example.com\"",
    "\"autogroup:self:*\"",
    "\"autogroup:internet:443\"",
    "\"10.0.0.0/8:*\"",
    "\"[fd7a:115c:a1e0::1]:22\"",
    "\"tcp:22\"",
    "\"icmp:*\"",
    "\"100.64.0.0/10\"",
    "\"fd7a:115c:a1e0::/48\"",
    "\"0.0.0.0/0\"",
    "\"web\"",
    "\"example.com/cap/x\"",
    "\"tailscale.com/cap/drive\"",
    "\"root\"",
    "\"checkPeriod\"",
    "\"24h\"",
    "\"randomizeClientPort\"",
    "true",
    "null",
    "-1",
    "1e999",
    "65536",
    "\"\\u00e9\"",
    "\"\\ud800\"",
    "\"\\\"\"",
    "// c\n",
    "/* c */",
    "/*",
    "*/",
    "\"",
    "\u{feff}",
    "é",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((select(TOKENS.to_vec()), select(vec!["", " ", "\n"])), 0..80)
        .prop_map(|parts| parts.into_iter().flat_map(|(t, sep)| [t, sep]).collect())
}

/// One edit of a text: delete a run, insert a token, or replace a character by a token.
#[derive(Debug, Clone)]
enum Edit {
    Delete(Index, usize),
    Insert(Index, &'static str),
    Replace(Index, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<Index>(), select(TOKENS.to_vec())).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<Index>(), select(TOKENS.to_vec())).prop_map(|(at, t)| Edit::Replace(at, t)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let from = at.index(len).min(chars.len());
                let to = (from + n).min(chars.len());
                chars.drain(from..to);
            }
            Edit::Insert(at, t) => {
                let at = at.index(len + 1).min(chars.len());
                chars.splice(at..at, t.chars());
            }
            Edit::Replace(at, t) => {
                let at = at.index(len).min(chars.len());
                let to = (at + 1).min(chars.len());
                chars.splice(at..to, t.chars());
            }
        }
    }
    chars.into_iter().collect()
}

/// A tailnet, a policy, and the same tailnet after some nodes were replaced (new owner,
/// addresses or routes, same id), removed, or one added.
fn scenario_with_changed_nodes() -> impl Strategy<Value = (Vec<PolicyNode>, Spec, Vec<PolicyNode>)> {
    tailnet().prop_flat_map(|nodes| {
        let v = Vocab::new(&nodes);
        let n = nodes.len();
        let replace = (0..n).prop_flat_map(|i| node(i).prop_map(move |new| (i, Some(new))));
        let remove = (0..n).prop_map(|i| (i, None));
        let edits = prop::collection::vec(prop_oneof![replace, remove], 0..3);
        let added = prop::option::of(node(n));
        (Just(nodes), spec(&v), edits, added).prop_map(|(nodes, spec, edits, added)| {
            let mut after: Vec<Option<PolicyNode>> = nodes.iter().cloned().map(Some).collect();
            for (i, new) in edits {
                after[i] = new;
            }
            after.push(added);
            (nodes, spec, after.into_iter().flatten().collect())
        })
    })
}

// ---------------------------------------------------------------------------------------
// Checks

/// Asks every per-node question of a compiled policy.
fn exercise(policy: &ParsedPolicy, c: &CompiledPolicy, nodes: &[PolicyNode]) {
    let elect = |_: &IpNet, ids: &[u64]| ids.iter().copied().min();
    for a in nodes {
        c.filter(a.id);
        c.peers(a.id);
        c.ssh_policy(a.id, "https://headscale.example.com");
        c.self_caps(a.id);
        c.peer_caps(a.id);
        for route in a.routable_ips.iter().chain(&a.approved_routes) {
            c.auto_approves(a.id, route);
            c.can_access_route(a.id, route);
        }
        for b in nodes {
            c.can_access(a.id, b.id);
            c.allowed_ips(a.id, b.id, elect);
        }
    }
    assert!(c.filter(u64::MAX).is_empty() && c.peers(u64::MAX).is_empty());
    let _ = run_tests(policy, c);
}

/// Parses a text and, when it parses, compiles it and asks every question: nothing may panic.
fn parse_and_exercise(text: &str, nodes: &[PolicyNode]) {
    if let Ok(policy) = ParsedPolicy::parse(text) {
        let compiled = CompiledPolicy::compile(&policy, nodes.to_vec());
        exercise(&policy, &compiled, nodes);
    }
}

/// An inclusive address range of one family, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Span {
    v6: bool,
    lo: u128,
    hi: u128,
}

impl Span {
    fn addr(a: IpAddr) -> Self {
        Span::net(IpNet::from(a))
    }

    fn net(n: IpNet) -> Self {
        match n {
            IpNet::V4(n) => Span { v6: false, lo: u32::from(n.network()).into(), hi: u32::from(n.broadcast()).into() },
            IpNet::V6(n) => Span { v6: true, lo: n.network().into(), hi: n.broadcast().into() },
        }
    }

    fn overlaps(&self, other: &Span) -> bool {
        self.v6 == other.v6 && self.lo <= other.hi && other.lo <= self.hi
    }
}

/// The addresses a filter's address text stands for: `*`, an address, a prefix or a range.
fn spans(text: &str) -> Vec<Span> {
    if text == "*" {
        return vec![Span::net("0.0.0.0/0".parse().expect("valid")), Span::net("::/0".parse().expect("valid"))];
    }
    if let Some((a, b)) = text.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (a.parse().expect("range start"), b.parse().expect("range end"));
        let (first, last) = (Span::addr(a), Span::addr(b));
        assert!(first.v6 == last.v6 && first.lo <= last.hi, "a well-formed range: {text}");
        return vec![Span { v6: first.v6, lo: first.lo, hi: last.hi }];
    }
    match text.parse::<IpAddr>() {
        Ok(a) => vec![Span::addr(a)],
        Err(_) => vec![Span::net(text.parse().unwrap_or_else(|_| panic!("an address, prefix or range: {text}")))],
    }
}

/// Whether a range lies in the internet: public IPv4, or global unicast IPv6 (2000::/3).
fn in_internet(s: &Span) -> bool {
    let global = Span::net("2000::/3".parse().expect("valid"));
    let within = !s.v6 || (global.lo <= s.lo && s.hi <= global.hi);
    within && !NOT_INTERNET.iter().any(|n| Span::net(n.parse().expect("valid")).overlaps(s))
}

/// Checks that node `node`'s filter names only destinations that belong to it.
fn check_own_destinations(c: &CompiledPolicy, node: &PolicyNode) -> Result<(), TestCaseError> {
    let own: Vec<Span> = node.addrs().map(Span::addr).collect();
    let routes: Vec<Span> = node.subnet_routes().into_iter().map(Span::net).collect();
    let belongs = |s: &Span| own.iter().chain(&routes).any(|o| o.overlaps(s));
    let internet = |s: &Span| node.is_exit_node() && in_internet(s);
    for rule in c.filter(node.id) {
        for d in &rule.dst_ports {
            if &*d.ip == "*" {
                continue;
            }
            for s in spans(&d.ip) {
                prop_assert!(belongs(&s) || internet(&s), "node {} got destination {} in {:?}", node.id, d.ip, rule);
            }
        }
        for grant in &rule.cap_grant {
            for d in &grant.dsts {
                let host = own.contains(&Span::net(*d));
                prop_assert!(
                    host || routes.iter().any(|r| r.overlaps(&Span::net(*d))),
                    "node {} got capability destination {d}",
                    node.id
                );
            }
        }
    }
    Ok(())
}

/// The default protocols of a rule without `IPProto`: ICMP, TCP, UDP, ICMPv6.
const DEFAULT_PROTOS: [u8; 4] = [1, 6, 17, 58];
/// Protocols with ports (TCP, UDP, SCTP); the others match on addresses alone.
const PORTED: [u8; 3] = [6, 17, 132];

/// A block of accepted packets: source, destination and port intervals.
type Cell = [(u128, u128); 3];

/// The packets one filter entry accepts, by (protocol, IPv6).
fn entry_cells(rule: &FilterRule, dst: &str, ports: (u16, u16)) -> Vec<((u8, bool), Cell)> {
    let protos: Vec<u8> =
        if rule.ip_proto.is_empty() { DEFAULT_PROTOS.to_vec() } else { rule.ip_proto.iter().map(|p| p.0).collect() };
    let srcs: Vec<Span> = rule.src_ips.iter().flat_map(|s| spans(s)).collect();
    let mut out = Vec::new();
    for d in spans(dst) {
        for s in srcs.iter().filter(|s| s.v6 == d.v6) {
            for &p in &protos {
                let ports = if PORTED.contains(&p) { (ports.0.into(), ports.1.into()) } else { (0, 65535) };
                out.push(((p, d.v6), [(s.lo, s.hi), (d.lo, d.hi), ports]));
            }
        }
    }
    out
}

/// Whether the cells `others` together hold all of `cell`: take the first one overlapping it;
/// what lies outside it must be held by the ones after it.
fn covered(cell: Cell, others: &[Cell]) -> bool {
    for (k, o) in others.iter().enumerate() {
        if !(0..3).all(|d| cell[d].0 <= o[d].1 && o[d].0 <= cell[d].1) {
            continue;
        }
        let mut rest = cell;
        for d in 0..3 {
            if rest[d].0 < o[d].0 {
                let mut outside = rest;
                outside[d] = (rest[d].0, o[d].0 - 1);
                if !covered(outside, &others[k + 1..]) {
                    return false;
                }
                rest[d].0 = o[d].0;
            }
            if rest[d].1 > o[d].1 {
                let mut outside = rest;
                outside[d] = (o[d].1 + 1, rest[d].1);
                if !covered(outside, &others[k + 1..]) {
                    return false;
                }
                rest[d].1 = o[d].1;
            }
        }
        return true;
    }
    false
}

/// Checks that every packet `before` accepts, `after` accepts too.
fn check_filter_covered(id: u64, before: &[FilterRule], after: &[FilterRule]) -> Result<(), TestCaseError> {
    // Entries kept as they were (same sources, protocols, address and ports) need no geometry.
    let entry_key = |r: &FilterRule, ip: &str, first: u16, last: u16| {
        (r.src_ips.clone(), r.ip_proto.iter().map(|p| p.0).collect::<Vec<u8>>(), ip.to_string(), first, last)
    };
    let kept: HashSet<_> = after
        .iter()
        .flat_map(|r| r.dst_ports.iter().map(move |d| entry_key(r, &d.ip, d.ports.first, d.ports.last)))
        .collect();
    let mut cells: HashMap<(u8, bool), Vec<Cell>> = HashMap::new();
    for r in after {
        for d in &r.dst_ports {
            for (key, cell) in entry_cells(r, &d.ip, (d.ports.first, d.ports.last)) {
                cells.entry(key).or_default().push(cell);
            }
        }
    }
    for r in before {
        for d in &r.dst_ports {
            if kept.contains(&entry_key(r, &d.ip, d.ports.first, d.ports.last)) {
                continue;
            }
            for (key, cell) in entry_cells(r, &d.ip, (d.ports.first, d.ports.last)) {
                let others = cells.get(&key).map(Vec::as_slice).unwrap_or_default();
                prop_assert!(covered(cell, others), "node {id}: {d:?} of {r:?} is no longer accepted");
            }
        }
    }
    Ok(())
}

fn parse(text: &str) -> Result<ParsedPolicy, TestCaseError> {
    ParsedPolicy::parse(text).map_err(|e| TestCaseError::fail(format!("a generated policy was refused: {e}\n{text}")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn compiling_what_parses_never_panics((nodes, spec) in scenario()) {
        let text = spec.render();
        let policy = parse(&text)?;
        let compiled = CompiledPolicy::compile(&policy, nodes.clone());
        exercise(&policy, &compiled, &nodes);
    }

    #[test]
    fn parsing_plausible_text_never_panics(
        (nodes, spec) in scenario(),
        soup in token_soup(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        parse_and_exercise(&soup, &nodes);
        parse_and_exercise(&format!("{{\"acls\": [{soup}]}}"), &nodes);
        parse_and_exercise(&apply(&spec.render(), &edits), &nodes);
    }

    #[test]
    fn filters_name_only_destinations_of_their_node((nodes, spec) in scenario()) {
        let compiled = CompiledPolicy::compile(&parse(&spec.render())?, nodes.clone());
        for node in &nodes {
            check_own_destinations(&compiled, node)?;
        }
    }

    #[test]
    fn adding_an_accept_rule_never_removes_access((nodes, mut spec, extras) in scenario_with_extra_rules()) {
        // With neither `acls` nor `grants` a policy allows everything; keep the key present.
        spec.acls.get_or_insert_with(Vec::new);
        let mut before = CompiledPolicy::compile(&parse(&spec.render())?, nodes.clone());
        for (extra, at) in extras {
            extra.add_to(&mut spec, at);
            let after = CompiledPolicy::compile(&parse(&spec.render())?, nodes.clone());
            for a in &nodes {
                for b in &nodes {
                    let kept = !before.can_access(a.id, b.id) || after.can_access(a.id, b.id);
                    prop_assert!(kept, "{} lost access to {}", a.id, b.id);
                }
                let peers: HashSet<u64> = after.peers(a.id).into_iter().collect();
                prop_assert!(before.peers(a.id).iter().all(|p| peers.contains(p)), "{} lost a peer", a.id);
                check_filter_covered(a.id, &before.filter(a.id), &after.filter(a.id))?;
            }
            before = after;
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// What lets the server re-derive only some nodes' rules when nodes change.
    #[test]
    fn nodes_outside_the_affected_set_keep_their_rules((nodes, spec, after) in scenario_with_changed_nodes()) {
        let policy = parse(&spec.render())?;
        let old = CompiledPolicy::compile(&policy, nodes.clone());
        let new = CompiledPolicy::compile(&policy, after.clone());
        let Some(affected) = new.affected_since(&old) else {
            // Every node counts as affected only when the tailnet's subnet routes changed.
            let routes = |nodes: &[PolicyNode]| {
                let live = nodes.iter().flat_map(|n| n.routable_ips.iter().filter(|r| n.approved_routes.contains(r)));
                live.filter(|r| r.prefix_len() > 0).copied().collect::<std::collections::BTreeSet<IpNet>>()
            };
            prop_assert_ne!(routes(&nodes), routes(&after));
            return Ok(());
        };
        let url = "https://headscale.example.com";
        let sorted = |mut v: Vec<u64>| {
            v.sort_unstable();
            v
        };
        for id in after.iter().map(|n| n.id).filter(|id| !affected.contains(id)) {
            prop_assert_eq!(sorted(old.peers(id)), sorted(new.peers(id)), "peers of {}", id);
            prop_assert_eq!(old.filter(id), new.filter(id), "filter of {}", id);
            prop_assert_eq!(old.ssh_policy(id, url), new.ssh_policy(id, url), "SSH policy of {}", id);
            prop_assert_eq!(old.self_caps(id), new.self_caps(id), "capabilities of {}", id);
        }
    }
}

#[test]
fn covering_is_exact() {
    let cell = |a: (u128, u128), b: (u128, u128), p: (u128, u128)| [a, b, p];
    let whole = cell((0, 9), (0, 9), (0, 9));
    let halves = [cell((0, 4), (0, 9), (0, 9)), cell((5, 9), (0, 9), (0, 9))];
    assert!(covered(whole, &halves));
    let holed = [cell((0, 4), (0, 9), (0, 9)), cell((5, 9), (0, 9), (0, 8))];
    assert!(!covered(whole, &holed), "port 9 of the upper half is missing");
    let crossed = [cell((0, 9), (0, 4), (0, 9)), cell((0, 4), (5, 9), (0, 9)), cell((5, 9), (5, 9), (0, 9))];
    assert!(covered(whole, &crossed));
    assert!(!covered(whole, &[]));
}
