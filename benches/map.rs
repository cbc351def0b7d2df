//! Map generation: a full map for 1,000 and 10,000 peers (built and serialized, peers' wire
//! forms already cached as they are in a running server), the cost of serializing one peer,
//! one change fanned out as a delta to 1,000 sessions, and a node's tag change under a
//! policy fanned out to 1,000 sessions.

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use headscale::mapper::{full_map, peer_wire, SessionView};
use headscale::policy::PolicyView;
use headscale::state::{Change, ChangeSet, NodeEntry};
use headscale::tailcfg::PeerChange;
use headscale::testing::{context, large_tailnet, node, recompiled, with_policy};

fn full_maps(c: &mut Criterion) {
    let ctx = context();
    let mut g = c.benchmark_group("full_map");
    for n in [1_000u32, 10_000] {
        let snap = large_tailnet(10, n);
        let me = snap.node(1).expect("node 1").clone();
        let now = Utc::now();
        // Warm the per-node wire caches, as every connected session shares them.
        let _ = serde_json::to_vec(&full_map(&snap, &me, &ctx, now));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let resp = full_map(&snap, &me, &ctx, now);
                black_box(serde_json::to_vec(&resp).expect("serializes"))
            })
        });
    }
    g.finish();
}

fn one_peer(c: &mut Criterion) {
    let ctx = context();
    let now = Utc::now();
    c.bench_function("peer_wire/render_one", |b| {
        b.iter_batched(
            || NodeEntry::new(node(7, Some(1)), true),
            |e| black_box(peer_wire(1, &e, &ctx, &PolicyView::default(), now)),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn delta_fanout(c: &mut Criterion) {
    let ctx = context();
    let sessions = 1_000u32;
    let mut snap = large_tailnet(10, sessions);
    let now = Utc::now();
    let mut views: Vec<SessionView> = (1..=sessions as u64)
        .map(|id| {
            let me = snap.node(id).expect("node").clone();
            SessionView::new(id, &snap, &full_map(&snap, &me, &ctx, now), now)
        })
        .collect();
    // Node 5 reports new endpoints.
    let mut changed = node(5, Some(6));
    changed.endpoints = vec!["198.51.100.5:41641".parse().expect("valid")];
    snap.put_node(NodeEntry::new(changed, true));
    let patch = PeerChange {
        node_id: 5,
        endpoints: Some(vec!["198.51.100.5:41641".parse().expect("valid")]),
        ..Default::default()
    };
    let set = ChangeSet { version: 2, changes: vec![Change::Node { id: 5, patch: Some(patch) }] };
    let mut g = c.benchmark_group("delta_fanout");
    g.throughput(Throughput::Elements(sessions as u64));
    g.bench_function("endpoint_change_to_1000_sessions", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for v in views.iter_mut() {
                v.apply(&set);
                if let Some(d) = v.flush(&snap, &ctx, now) {
                    bytes += serde_json::to_vec(&d).expect("serializes").len();
                }
            }
            black_box(bytes)
        })
    });
    g.finish();
}

/// A node becomes tagged under a policy where each user's nodes reach each other and one
/// user reaches the tag: its old peers lose it, the tag's users gain it, and the other 800
/// sessions keep the rules they had. Every session hears `Change::Rules`; the change and
/// its reverse alternate.
fn policy_fanout(c: &mut Criterion) {
    let ctx = context();
    let sessions = 1_000u32;
    let policy = r#"{
      "tagOwners": {"tag:web": ["user1@"]},
      "acls": [
        {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
        {"action": "accept", "src": ["user2@"], "dst": ["tag:web:443"]},
      ],
    }"#;
    let before = with_policy(large_tailnet(10, sessions), policy);
    let now = Utc::now();
    let mut views: Vec<SessionView> = (1..=sessions as u64)
        .map(|id| {
            let me = before.node(id).expect("node").clone();
            SessionView::new(id, &before, &full_map(&before, &me, &ctx, now), now)
        })
        .collect();
    // As in the server, each view is made while its predecessor holds every node's rules.
    let mut tagged = before.node(5).expect("node 5").node.clone();
    tagged.tags = vec!["tag:web".into()];
    let mut after = before.clone();
    after.put_node(NodeEntry::new(tagged, true));
    let after = recompiled(&before, after);
    for id in 1..=sessions as u64 {
        after.policy.rules(id);
    }
    let undone = recompiled(&after, before.clone());
    let rules = ChangeSet { version: 2, changes: vec![Change::Rules] };
    let mut flip = false;
    let mut g = c.benchmark_group("delta_fanout");
    g.throughput(Throughput::Elements(sessions as u64));
    g.bench_function("tag_change_under_policy_to_1000_sessions", |b| {
        b.iter(|| {
            flip = !flip;
            let snap = if flip { &after } else { &undone };
            let mut bytes = 0;
            for v in views.iter_mut() {
                v.apply(&rules);
                if let Some(d) = v.flush(snap, &ctx, now) {
                    bytes += serde_json::to_vec(&d).expect("serializes").len();
                }
            }
            black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(benches, full_maps, one_peer, delta_fanout, policy_fanout);
criterion_main!(benches);
