//! The policy engine at scale: a policy of 5,000 ACL rules (users, groups, tags, hosts,
//! prefixes, `autogroup:self`, assorted ports and protocols) over a tailnet of 1,000 nodes
//! (user devices, tagged servers, subnet routers, exit nodes). Measures parsing, compiling,
//! and deriving every node's packet filter, beside the cost of merely copying those filters.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use headscale::policy::{CompiledPolicy, ParsedPolicy, PolicyNode, PolicyUser};
use serde_json::{json, Map, Value};

const NODES: usize = 1_000;
const RULES: usize = 5_000;
const USERS: usize = 250;
const GROUPS: usize = 40;
const TAGS: usize = 40;
const HOSTS: usize = 100;
/// Tagged nodes from this index on; the ones before belong to users.
const FIRST_TAGGED: usize = 650;
/// Tagged nodes routing a /16 each, then exit nodes.
const ROUTERS: usize = 20;
const EXITS: usize = 5;

/// A fixed-seed xorshift generator: the same tailnet and policy on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn email(u: usize) -> String {
    format!("user{u}@example.com")
}

fn tailnet() -> Vec<PolicyNode> {
    (0..NODES)
        .map(|i| {
            let tagged = i >= FIRST_TAGGED;
            let k = i - FIRST_TAGGED.min(i);
            let mut node = PolicyNode {
                id: i as u64 + 1,
                name: format!("node{i}"),
                ipv4: Some(Ipv4Addr::new(100, 64 + (i >> 8) as u8, (i & 0xff) as u8, 1)),
                ipv6: Some(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, (i >> 8) as u16, (i & 0xff) as u16)),
                user: (!tagged).then(|| {
                    let u = i % USERS;
                    PolicyUser { id: u as u64 + 1, name: format!("user{u}"), email: email(u) }
                }),
                tags: if tagged { vec![format!("tag:t{}", k % TAGS)] } else { Vec::new() },
                routable_ips: Vec::new(),
                approved_routes: Vec::new(),
            };
            if tagged && k % 7 == 0 {
                node.tags.push(format!("tag:t{}", (k / 7) % TAGS));
            }
            let routes: Vec<ipnet::IpNet> = if tagged && k < ROUTERS {
                vec![format!("10.{k}.0.0/16").parse().expect("valid")]
            } else if tagged && k < ROUTERS + EXITS {
                vec!["0.0.0.0/0".parse().expect("valid"), "::/0".parse().expect("valid")]
            } else {
                Vec::new()
            };
            node.routable_ips = routes.clone();
            node.approved_routes = routes;
            node
        })
        .collect()
}

/// A source alias: mostly users, groups and tags.
fn source(rng: &mut Rng) -> String {
    match rng.below(100) {
        0..=34 => email(rng.below(USERS)),
        35..=64 => format!("group:g{}", rng.below(GROUPS)),
        65..=89 => format!("tag:t{}", rng.below(TAGS)),
        90..=92 => "autogroup:member".into(),
        93..=96 => format!("host{}", rng.below(HOSTS)),
        _ => format!("10.{}.0.0/16", rng.below(ROUTERS)),
    }
}

/// A destination alias with its ports: mostly tagged servers, then users and hosts.
fn destination(rng: &mut Rng, ports: &str, self_allowed: bool) -> String {
    let host = match rng.below(100) {
        0..=39 => format!("tag:t{}", rng.below(TAGS)),
        40..=54 => email(rng.below(USERS)),
        55..=64 => format!("group:g{}", rng.below(GROUPS)),
        65..=84 => format!("host{}", rng.below(HOSTS)),
        85..=94 => format!("10.{}.{}.0/24", rng.below(ROUTERS), rng.below(256)),
        95..=97 if self_allowed => "autogroup:self".into(),
        _ => "autogroup:internet".into(),
    };
    format!("{host}:{ports}")
}

fn policy_text() -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let groups: Map<String, Value> = (0..GROUPS)
        .map(|g| (format!("group:g{g}"), json!((0..8).map(|_| email(rng.below(USERS))).collect::<Vec<_>>())))
        .collect();
    let tag_owners: Map<String, Value> =
        (0..TAGS).map(|t| (format!("tag:t{t}"), json!([format!("group:g{}", t % GROUPS)]))).collect();
    let hosts: Map<String, Value> = (0..HOSTS)
        .map(|h| {
            let target =
                if h % 2 == 0 { format!("10.{}.{}.0/24", h % ROUTERS, h) } else { format!("100.64.{}.1", h % 4) };
            (format!("host{h}"), json!(target))
        })
        .collect();
    let acls: Vec<Value> = (0..RULES)
        .map(|_| {
            let src: Vec<String> = (0..1 + rng.below(2)).map(|_| source(&mut rng)).collect();
            let user_sources = src.iter().all(|s| s.contains('@') || s.starts_with("group:"));
            let proto = rng.pick(&["", "", "", "", "tcp", "udp"]);
            let ports = rng.pick(&["22", "80", "443", "80,443", "5432", "8000-8999", "53", "*"]);
            let dst: Vec<String> = (0..1 + rng.below(3)).map(|_| destination(&mut rng, ports, user_sources)).collect();
            let mut acl = json!({"action": "accept", "src": src, "dst": dst});
            if !proto.is_empty() {
                acl["proto"] = json!(proto);
            }
            acl
        })
        .collect();
    let routes: Map<String, Value> =
        (0..ROUTERS).map(|k| (format!("10.{k}.0.0/16"), json!([format!("tag:t{}", k % TAGS)]))).collect();
    let policy = json!({
        "groups": groups,
        "tagOwners": tag_owners,
        "hosts": hosts,
        "acls": acls,
        "autoApprovers": {"routes": routes, "exitNode": ["tag:t0"]},
    });
    serde_json::to_string(&policy).expect("serializable")
}

fn policy(c: &mut Criterion) {
    let text = policy_text();
    let nodes = tailnet();
    let parsed = ParsedPolicy::parse(&text).expect("the bench policy is valid");
    let mut group = c.benchmark_group("policy");
    group.sample_size(20);
    group.bench_function("parse_5000_rules", |b| b.iter(|| ParsedPolicy::parse(black_box(&text)).expect("valid")));
    group.bench_function("compile_5000_rules_1000_nodes", |b| {
        b.iter_batched(
            || nodes.clone(),
            |nodes| CompiledPolicy::compile(black_box(&parsed), nodes),
            BatchSize::LargeInput,
        )
    });
    let compiled = CompiledPolicy::compile(&parsed, nodes.clone());
    let entries: usize =
        nodes.iter().map(|n| compiled.filter(n.id).iter().map(|r| r.dst_ports.len()).sum::<usize>()).sum();
    println!("policy: {} grants; every node's filter holds {entries} destination entries in all", parsed.grants.len());
    group.throughput(Throughput::Elements(NODES as u64));
    group.bench_function("filter_every_node_1000", |b| {
        b.iter(|| {
            for n in &nodes {
                black_box(compiled.filter(n.id));
            }
        })
    });
    // The floor for the above: copying the finished filters (every address a `String`).
    let filters: Vec<_> = nodes.iter().map(|n| compiled.filter(n.id)).collect();
    group.bench_function("clone_every_filter_1000", |b| {
        b.iter(|| {
            for f in &filters {
                black_box(f.clone());
            }
        })
    });
    // One node changes owner: compile again, find the nodes whose rules it can affect, and
    // derive only theirs (what the server does), against deriving every node's.
    let mut moved = nodes.clone();
    let owner = moved[0].user.clone().expect("the first node belongs to a user");
    moved[0].user =
        Some(PolicyUser { id: owner.id + 1, name: format!("{}x", owner.name), email: format!("x{}", owner.email) });
    let recompiled = CompiledPolicy::compile(&parsed, moved.clone());
    let affected = recompiled.affected_since(&compiled).expect("one changed node is tracked");
    println!("policy: one node changing owner affects {} of {NODES} nodes", affected.len());
    group.bench_function("one_node_changed_owner_affected_rules_1000", |b| {
        b.iter_batched(
            || moved.clone(),
            |moved| {
                let next = CompiledPolicy::compile(black_box(&parsed), moved);
                for id in next.affected_since(&compiled).expect("tracked") {
                    black_box(next.filter(id));
                    black_box(next.peers(id));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
