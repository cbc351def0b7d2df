//! End-to-end scenarios of the core issue with real tailscale-rs clients against the server
//! running in this process: joining, connectivity over the embedded DERP held for a minute,
//! changes reaching peers, restart (on SQLite and on PostgreSQL), interactive login, ephemeral
//! clean-up and one-shot keys.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use integration::{await_peer, eventually, init, join_with, Options, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// One TCP exchange from `a` to `b` through the tailnet.
async fn tcp_exchange(a: &tailscale::Device, b: &tailscale::Device, port: u16, msg: &[u8]) -> Result<()> {
    let ipb = b.ipv4_addr().await?;
    let listener = b.tcp_listen(SocketAddr::from((ipb, port))).await?;
    let expected = msg.to_vec();
    let server = tokio::spawn(async move {
        let mut s = listener.accept().await?;
        let mut buf = vec![0u8; expected.len()];
        s.read_exact(&mut buf).await?;
        s.write_all(&buf).await?;
        anyhow::Ok(buf)
    });
    let mut c = timeout(Duration::from_secs(15), a.tcp_connect(SocketAddr::from((ipb, port))))
        .await
        .context("tcp connect timed out")??;
    c.write_all(msg).await?;
    let mut echo = vec![0u8; msg.len()];
    timeout(Duration::from_secs(15), c.read_exact(&mut echo)).await.context("tcp echo timed out")??;
    ensure!(echo == msg, "echo differs");
    ensure!(timeout(Duration::from_secs(5), server).await???.as_slice() == msg, "server got other bytes");
    Ok(())
}

/// One UDP datagram from `a` to `b`, resent until it arrives.
async fn udp_exchange(a: &tailscale::Device, b: &tailscale::Device, port: u16) -> Result<()> {
    let (ipa, ipb) = (a.ipv4_addr().await?, b.ipv4_addr().await?);
    let rx = b.udp_bind(SocketAddr::from((ipb, port))).await?;
    let tx = a.udp_bind(SocketAddr::from((ipa, port + 1))).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 64];
    loop {
        tx.send_to(SocketAddr::from((ipb, port)), b"ping").await?;
        if let Ok(Ok((from, n))) = timeout(Duration::from_millis(500), rx.recv_from(&mut buf)).await {
            ensure!(&buf[..n] == b"ping", "udp payload differs");
            ensure!(from.ip() == IpAddr::V4(ipa), "udp came from {from}, expected {ipa}");
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "udp datagram never arrived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_reach_each_other_through_derp_for_a_minute() -> Result<()> {
    init();
    let srv = TestServer::start(Options::default()).await?;
    let user = srv.create_user("alice").await?;
    let key = srv.auth_key(user, true, false).await?;
    let names = ["node-a", "node-b", "node-c"];
    let mut devs = Vec::new();
    for n in names {
        devs.push(srv.join(n, &key).await?);
    }
    for (i, d) in devs.iter().enumerate() {
        for (j, n) in names.iter().enumerate() {
            if i != j {
                await_peer(d, n).await?;
            }
        }
    }
    // The server saw three online nodes, each with a home DERP.
    let snap = srv.state().snapshot();
    ensure!(snap.nodes.len() == 3);
    ensure!(snap.nodes.values().all(|e| e.online && e.node.home_derp() == 999), "all online with DERP 999");

    let started = Instant::now();
    let hold = Duration::from_secs(std::env::var("HOLD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let mut round = 0u16;
    while round == 0 || started.elapsed() < hold {
        for i in 0..3 {
            for j in 0..3 {
                if i == j {
                    continue;
                }
                let port = 10_000 + round * 20 + (i * 3 + j) as u16 * 2;
                tcp_exchange(&devs[i], &devs[j], port, format!("round {round} {i}->{j}").as_bytes())
                    .await
                    .with_context(|| format!("tcp {i}->{j} in round {round} after {:?}", started.elapsed()))?;
                udp_exchange(&devs[i], &devs[j], port)
                    .await
                    .with_context(|| format!("udp {i}->{j} in round {round} after {:?}", started.elapsed()))?;
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let derp = srv.running.derp.as_ref().context("embedded DERP")?.stats();
    eprintln!("{round} rounds in {:?}; DERP relayed {} packets", started.elapsed(), derp.packets_relayed);
    for d in devs {
        d.shutdown(Some(Duration::from_secs(2))).await;
    }
    srv.running.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_reach_peers_as_deltas() -> Result<()> {
    init();
    let srv = TestServer::start(Options::default()).await?;
    let user = srv.create_user("bob").await?;
    let key = srv.auth_key(user, true, false).await?;
    let a = srv.join("alpha", &key).await?;
    let b = srv.join("beta", &key).await?;
    // beta's home DERP arrives at alpha after beta reports it: a change seen by its peer.
    let peer = await_peer(&a, "beta").await?;
    ensure!(peer.derp_region.is_some());
    // An admin rename reaches the peer without reconnecting.
    let beta_id = srv.state().snapshot().nodes.values().find(|e| e.node.given_name == "beta").context("beta")?.node.id;
    srv.state().rename_node(beta_id, "gamma").await?;
    eventually("alpha to see beta renamed to gamma", Duration::from_secs(10), || async {
        a.peer_by_name("gamma").await.ok().flatten()
    })
    .await?;
    // Deleting a node removes it from its peers' maps.
    srv.state().delete_node(beta_id).await?;
    eventually("alpha to drop the deleted node", Duration::from_secs(10), || async {
        a.peer_by_name("gamma").await.ok().flatten().is_none().then_some(())
    })
    .await?;
    a.shutdown(Some(Duration::from_secs(2))).await;
    b.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_keep_keys_and_addresses_across_a_restart() -> Result<()> {
    keys_and_addresses_survive_a_restart(Options::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_keep_keys_and_addresses_across_a_restart_on_postgres() -> Result<()> {
    let Some(opts) = Options::on_postgres() else { return Ok(()) };
    keys_and_addresses_survive_a_restart(opts).await
}

async fn keys_and_addresses_survive_a_restart(opts: Options) -> Result<()> {
    init();
    let srv = TestServer::start(opts).await?;
    let user = srv.create_user("carol").await?;
    let key = srv.auth_key(user, false, false).await?;
    let key2 = srv.auth_key(user, false, false).await?;
    let kf_a = srv.dir().join("a.json");
    let kf_b = srv.dir().join("b.json");
    let a = join_with(&srv.client_config("one", Some(&kf_a)).await?, Some(key)).await?;
    let b = join_with(&srv.client_config("two", Some(&kf_b)).await?, Some(key2)).await?;
    let (ip_a, ip_b) = (a.ipv4_addr().await?, b.ipv4_addr().await?);
    await_peer(&a, "two").await?;
    tcp_exchange(&a, &b, 7000, b"before").await?;
    a.shutdown(Some(Duration::from_secs(2))).await;
    b.shutdown(Some(Duration::from_secs(2))).await;

    let srv = srv.restart().await?;
    // Same key files, and the one-shot keys are spent: only the stored node keys let them in.
    let a = join_with(&srv.client_config("one", Some(&kf_a)).await?, None).await?;
    let b = join_with(&srv.client_config("two", Some(&kf_b)).await?, None).await?;
    ensure!(a.ipv4_addr().await? == ip_a && b.ipv4_addr().await? == ip_b, "addresses changed across restart");
    await_peer(&a, "two").await?;
    await_peer(&b, "one").await?;
    // The first connection after the restart can be reset while the two new devices learn each
    // other's disco keys; a client would connect again, and so does this check, on a fresh
    // port each time. The last attempt's error is the one reported.
    let mut port = 7001;
    let settled = eventually("two to reach one over TCP after the restart", Duration::from_secs(30), || {
        port += 1;
        let (a, b, port) = (&a, &b, port);
        async move { tcp_exchange(b, a, port, b"after").await.ok() }
    })
    .await;
    if settled.is_err() {
        tcp_exchange(&b, &a, 7000, b"after").await?;
    }
    ensure!(srv.state().snapshot().nodes.len() == 2, "no duplicate nodes");
    a.shutdown(Some(Duration::from_secs(2))).await;
    b.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interactive_registration_is_completed_by_the_admin() -> Result<()> {
    init();
    let srv = TestServer::start(Options::default()).await?;
    srv.create_user("dave").await?;
    let cfg = srv.client_config("laptop", None).await?;
    let dev = timeout(Duration::from_secs(30), tailscale::Device::new(&cfg, None)).await??;
    let url = eventually("an AuthURL", Duration::from_secs(15), || async {
        match dev.is_authorized().await {
            Ok(tailscale::AuthState::NotAuthorized(u)) => Some(u),
            _ => None,
        }
    })
    .await?;
    ensure!(url.as_str().starts_with(&format!("{}register/hskey-authreq-", srv.url())), "AuthURL {url}");
    let auth_id = url.path_segments().and_then(|mut s| s.next_back()).context("auth id")?.to_string();
    ensure!(srv.state().snapshot().nodes.is_empty(), "nothing registered before approval");
    srv.auth_register(&auth_id, "dave").await?;
    let ip = timeout(Duration::from_secs(30), dev.ipv4_addr()).await??;
    ensure!(matches!(dev.is_authorized().await?, tailscale::AuthState::Authorized));
    let snap = srv.state().snapshot();
    let node = snap.nodes.values().next().context("registered node")?;
    ensure!(node.node.ipv4 == Some(ip) && node.node.given_name == "laptop");
    dev.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_node_disappears_after_inactivity() -> Result<()> {
    init();
    let srv = TestServer::start(Options { ephemeral_timeout: Duration::from_secs(2), ..Options::default() }).await?;
    let user = srv.create_user("erin").await?;
    let key = srv.auth_key(user, true, true).await?;
    let stay = srv.join("stays", &srv.auth_key(user, true, false).await?).await?;
    let dev = srv.join("fleeting", &key).await?;
    await_peer(&stay, "fleeting").await?;
    ensure!(srv.state().snapshot().nodes.values().any(|e| e.node.ephemeral));
    dev.shutdown(Some(Duration::from_secs(2))).await;
    eventually("the ephemeral node to be removed", Duration::from_secs(20), || async {
        (!srv.state().snapshot().nodes.values().any(|e| e.node.ephemeral)).then_some(())
    })
    .await?;
    eventually("its peer to drop it", Duration::from_secs(10), || async {
        stay.peer_by_name("fleeting").await.ok().flatten().is_none().then_some(())
    })
    .await?;
    stay.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_shot_key_cannot_register_twice() -> Result<()> {
    init();
    let srv = TestServer::start(Options::default()).await?;
    let user = srv.create_user("frank").await?;
    let key = srv.auth_key(user, false, false).await?;
    let first = srv.join("first", &key).await?;
    let cfg = srv.client_config("second", None).await?;
    let second = timeout(Duration::from_secs(30), tailscale::Device::new(&cfg, Some(key))).await??;
    // The second machine never gets an address, and nothing of it is stored.
    ensure!(timeout(Duration::from_secs(5), second.ipv4_addr()).await.map(|r| r.is_err()).unwrap_or(true));
    let snap = srv.state().snapshot();
    ensure!(snap.nodes.len() == 1, "only the first node exists, got {}", snap.nodes.len());
    let keys = srv.state().pre_auth_keys().await;
    ensure!(keys.iter().all(|k| k.used), "the key is marked used");
    first.shutdown(Some(Duration::from_secs(2))).await;
    second.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}
