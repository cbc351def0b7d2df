//! PostgreSQL that stops answering, under load, with the official Go client: the whole
//! cluster (postmaster and every backend) is paused with SIGSTOP for longer than a call's
//! deadline while an administrator keeps creating users. `/health` says so; the clients keep
//! their sessions and keep reaching each other through the pause; once the cluster goes on,
//! writes go through again, no client registers again, and every write the server
//! acknowledged is in the database.
//!
//! The test has a program of its own, so its throwaway cluster is paused under no other test.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use integration::client::Client;
use integration::go_node::{GoNode, GoSpec};
use integration::protocol::{NodeStatus, Request};
use integration::scenario::ECHO_PORT;
use integration::{eventually, init, Options, TestServer};

/// How long the cluster stays paused: longer than a PostgreSQL call's deadline (10 s).
const PAUSE: Duration = Duration::from_secs(15);

/// The cluster's processes: the postmaster and its children.
fn cluster_processes(postmaster: u32) -> Vec<i32> {
    let mut pids = vec![postmaster as i32];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The parent's pid is the second field after the command name, which ends with ')'.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if parent.and_then(|p| p.parse::<u32>().ok()) == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

fn signal_all(pids: &[i32], sig: i32) {
    for &pid in pids {
        // SAFETY: kill only sends a signal; these are this test's own cluster's processes.
        unsafe { libc::kill(pid, sig) };
    }
}

async fn go(server: &TestServer, dir: &Path, name: &str, authkey: String) -> Result<GoNode> {
    GoNode::start(GoSpec::in_dir(server.url(), dir, name, Some(authkey))).await
}

async fn status(node: &GoNode) -> Option<NodeStatus> {
    serde_json::from_value(node.handle(&Request::Status).await.ok()?).ok()
}

async fn joined(node: &GoNode) -> Result<NodeStatus> {
    eventually("the node joins", Duration::from_secs(60), || async {
        status(node).await.filter(|s| s.authorized && s.ipv4.is_some())
    })
    .await
}

async fn reaches(from: &GoNode, to: &NodeStatus, within: Duration) -> Result<()> {
    let target = SocketAddr::new(to.ipv4.context("an address")?.into(), ECHO_PORT);
    eventually("an exchange through the tailnet", within, || async {
        from.handle(&Request::Tcp(target)).await.ok().map(drop)
    })
    .await
}

/// `/health`'s status code.
async fn health(server: &TestServer) -> u16 {
    integration::http::get(server.running.listen_addr, "/health").await.map(|(code, _)| code).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_postgres_costs_no_session_and_no_acknowledged_write() -> Result<()> {
    init();
    let Some(options) = Options::on_postgres() else {
        eprintln!("skipped: HEADSCALE_TEST_POSTGRES=skip");
        return Ok(());
    };
    let postmaster = test_postgres::cluster().context("the cluster")?.pid();
    let clients = tempfile::tempdir()?;
    let server = Arc::new(TestServer::start(options).await?);
    let user = server.create_user("alice").await?;
    let key = server.auth_key(user, true, false).await?;
    let a = go(&server, clients.path(), "a", key.clone()).await?;
    let b = go(&server, clients.path(), "b", key).await?;
    let (a_was, b_was) = (joined(&a).await?, joined(&b).await?);
    reaches(&a, &b_was, Duration::from_secs(60)).await?;
    let nodes_before = server.cli(&["nodes", "list", "-o", "json"]).await?;

    // An administrator creating users all along; what the server acknowledged is kept.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, acked, stop) = (server.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("admin{n}");
                if server.cli(&["users", "create", &name]).await.is_ok() {
                    acked.lock().unwrap().insert(name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pids = cluster_processes(postmaster);
    signal_all(&pids, libc::SIGSTOP);
    let paused = Instant::now();
    let failing = eventually("/health reports the stuck writer", PAUSE, || async {
        (health(&server).await == 503).then_some(())
    })
    .await;
    let seen_failing = paused.elapsed();
    // The sessions need no database: the clients still reach each other.
    let through = reaches(&b, &a_was, Duration::from_secs(5)).await;
    tokio::time::sleep(PAUSE.saturating_sub(paused.elapsed())).await;
    signal_all(&pids, libc::SIGCONT);
    failing?;
    through.context("the clients could not reach each other while PostgreSQL was paused")?;

    let resumed = Instant::now();
    eventually("/health passes again", Duration::from_secs(60), || async {
        (health(&server).await == 200).then_some(())
    })
    .await?;
    let healthy_after = resumed.elapsed();
    let before = acked.lock().unwrap().len();
    eventually("a write goes through again", Duration::from_secs(60), || async {
        (acked.lock().unwrap().len() > before).then_some(())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    writer.await?;

    // The same nodes, with the same addresses: nobody registered again.
    ensure!(server.cli(&["nodes", "list", "-o", "json"]).await? == nodes_before, "the nodes changed");
    let (a_now, b_now) = (joined(&a).await?, joined(&b).await?);
    ensure!(a_now.ipv4 == a_was.ipv4 && b_now.ipv4 == b_was.ipv4, "an address changed");
    reaches(&a, &b_now, Duration::from_secs(30)).await?;
    reaches(&b, &a_now, Duration::from_secs(30)).await?;

    let listed: serde_json::Value = serde_json::from_str(&server.cli(&["users", "list", "-o", "json"]).await?)?;
    let users: BTreeSet<String> =
        listed.as_array().into_iter().flatten().filter_map(|u| u["name"].as_str().map(str::to_string)).collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.difference(&users).collect();
    eprintln!(
        "paused PostgreSQL for {PAUSE:?}: /health failed after {seen_failing:.1?} and passed {healthy_after:.1?} after \
         it went on; {} users acknowledged, {} lost; the clients reached each other during the pause",
        acked.len(),
        lost.len()
    );
    ensure!(lost.is_empty(), "acknowledged users lost: {lost:?}");
    for node in [a, b] {
        node.shutdown().await;
    }
    Ok(())
}
