//! The NodeStore at 10,000 nodes: lock-free reads (load the snapshot, look a node up by key),
//! publishing a changed node into a new snapshot, and the write path through `State` for
//! map-request updates: one update (publish and change event; the database write is batched),
//! and a thousand updates from different nodes followed by their one batched database write;
//! and one registration (one committed transaction in SQLite's WAL, as durable as configured).

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use headscale::config::Config;
use headscale::db::Db;
use headscale::state::{NodeEntry, State};
use headscale::tailcfg::MapRequest;
use headscale::testing::{large_tailnet, node};

const NODES: u32 = 10_000;

fn reads(c: &mut Criterion) {
    let store = ArcSwap::from_pointee(large_tailnet(10, NODES));
    let key = node(4242, None).node_key;
    c.bench_function("node_store/read_by_node_key_10k", |b| {
        b.iter(|| {
            let snap = store.load();
            black_box(snap.node_by_key(black_box(&key)).map(|e| e.node.id))
        })
    });
}

fn publish(c: &mut Criterion) {
    let base = large_tailnet(10, NODES);
    let mut n = node(4242, Some(3));
    c.bench_function("node_store/publish_one_change_10k", |b| {
        b.iter(|| {
            let mut next = base.clone();
            n.endpoints = vec!["198.51.100.1:1".parse().expect("valid")];
            next.put_node(NodeEntry::new(n.clone(), true));
            black_box(next.version)
        })
    });
}

fn state_write(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, key) = rt.block_on(async {
        let config = Arc::new(Config::embedded(dir.path()));
        let db = Db::open(&dir.path().join("bench.sqlite"), true, 1000).expect("db");
        let state = State::load(config, db).await.expect("state");
        let user = state.create_user("bench", "", "", "").await.expect("user");
        let (_, key) = state.create_pre_auth_key(Some(user.id), true, false, None, Vec::new()).await.expect("key");
        for i in 1..=NODES {
            let mk = headscale::tailcfg::MachineKey(*node(i, None).machine_key.as_bytes());
            let req = headscale::tailcfg::RegisterRequest {
                node_key: node(i, None).node_key,
                auth: Some(headscale::tailcfg::RegisterAuth { auth_key: key.clone() }),
                hostinfo: Some(node(i, None).hostinfo),
                ..Default::default()
            };
            state.register(mk, req).await.expect("register");
        }
        (state, key)
    });
    let id_of = |i: u32| state.snapshot().node_by_key(&node(i, None).node_key).expect("node").node.id;
    let update = |i: u32, port: u16| MapRequest {
        node_key: node(i, None).node_key,
        endpoints: Some(vec![format!("198.51.100.1:{port}").parse().expect("valid")]),
        ..Default::default()
    };
    let target = id_of(4242);
    let mut port = 0u16;
    c.bench_function("state/apply_endpoint_update_10k", |b| {
        b.to_async(&rt).iter(|| {
            port = port.wrapping_add(1);
            let (state, req) = (state.clone(), update(4242, port));
            async move { state.apply_map_request(target, &req).await.expect("applies") }
        })
    });
    let mut next = NODES;
    c.bench_function("state/register_one_node_10k_sqlite_wal", |b| {
        b.to_async(&rt).iter(|| {
            next += 1;
            let (state, fresh) = (state.clone(), node(next, None));
            let key = key.clone();
            async move {
                let mk = headscale::tailcfg::MachineKey(*fresh.machine_key.as_bytes());
                let req = headscale::tailcfg::RegisterRequest {
                    node_key: fresh.node_key,
                    auth: Some(headscale::tailcfg::RegisterAuth { auth_key: key }),
                    hostinfo: Some(fresh.hostinfo),
                    ..Default::default()
                };
                state.register(mk, req).await.expect("register")
            }
        })
    });
    let batch: Vec<(u32, u64)> = (1..=1000).map(|i| (i, id_of(i))).collect();
    c.bench_function("state/apply_1000_endpoint_updates_and_write_them_10k_sqlite_wal", |b| {
        b.to_async(&rt).iter(|| {
            port = port.wrapping_add(1);
            let (state, batch, port) = (state.clone(), batch.clone(), port);
            async move {
                for (i, id) in batch {
                    state.apply_map_request(id, &update(i, port)).await.expect("applies");
                }
                state.flush_reported().await;
            }
        })
    });
}

criterion_group!(benches, reads, publish, state_write);
criterion_main!(benches);
