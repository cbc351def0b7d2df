//! The phases of a load run, in order, each timed: register N nodes with one reusable key;
//! open every map session and wait until every map is correct; a reconnect storm; endpoint
//! fan-out rounds; steady endpoint churn with the server's CPU time measured; and the
//! server's memory per connected node. Every wait ends with every client holding a complete
//! and correct map, checked, or with an error naming a client and what its map lacks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use ts_control::TailnetAddress;
use url::Url;

use super::client::Client;
use super::measure::{cpu_time, median, peak_rss_kb, rss_kb};
use super::report::Measurements;
use super::view::{Expectation, NodeFacts};
use super::ControlServer;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How many nodes.
    pub nodes: usize,
    /// Registrations in flight at once.
    pub register_concurrency: usize,
    /// How many clients decode their maps with `ts_control`'s own decoder.
    pub strict_clients: usize,
    /// Endpoint fan-out rounds.
    pub fanout_rounds: usize,
    /// Endpoint changes per second during churn.
    pub churn_per_s: u32,
    /// How long churn lasts.
    pub churn_for: Duration,
    /// How long any one phase may take.
    pub timeout: Duration,
}

/// How often the coordinator looks at the clients while it waits.
const POLL: Duration = Duration::from_millis(10);

/// Runs every phase against `server` and returns what was measured.
pub async fn run(server: &dyn ControlServer, plan: &Plan) -> Result<Measurements> {
    ensure!(plan.nodes >= 2, "a load run needs at least 2 nodes (fan-out needs a peer)");
    let pid = server.pid();
    let url = server.url();
    let rss_empty_kb = rss_kb(pid)?;
    let authkey = reusable_key(server).await?;
    let mut clients: Vec<Client> = (0..plan.nodes).map(|i| Client::new(i, i < plan.strict_clients)).collect();

    let registered_in = register(&mut clients, &url, &authkey, plan).await?;
    let register_per_s = plan.nodes as f64 / registered_in.as_secs_f64();
    println!("registered {} nodes in {:.2} s: {register_per_s:.0} per second", plan.nodes, registered_in.as_secs_f64());

    let (expect_tx, expect_rx) = watch::channel(Arc::new(expectation(server, &mut clients).await?));
    let waiter = Waiter { expected: &expect_tx, timeout: plan.timeout };

    let started = Instant::now();
    for c in &mut clients {
        c.start_session(&url, expect_rx.clone(), false);
    }
    let initial = waiter.all_correct(&clients, "the initial maps").await? - started;
    println!("every client holds a correct map {:.2} s after opening its session", initial.as_secs_f64());

    let (server_cpu, own_cpu, messages) = (cpu_time(pid)?, cpu_time(std::process::id())?, received(&clients));
    let started = Instant::now();
    for c in &mut clients {
        c.start_session(&url, expect_rx.clone(), true);
    }
    let storm = waiter.all_correct(&clients, "the reconnect storm").await? - started;
    let (storm_server_cpu, storm_own_cpu, storm_messages) =
        (cpu_time(pid)? - server_cpu, cpu_time(std::process::id())? - own_cpu, received(&clients) - messages);
    println!(
        "reconnect storm: all {} clients reconnected and hold a correct map after {:.2} s \
         (server CPU {:.2} s, load generator CPU {:.2} s, {:.1} map messages per client)",
        plan.nodes,
        storm.as_secs_f64(),
        storm_server_cpu.as_secs_f64(),
        storm_own_cpu.as_secs_f64(),
        storm_messages as f64 / plan.nodes as f64
    );

    let (mut fanout_ms, mut answered_ms) = (Vec::new(), Vec::new());
    for round in 0..plan.fanout_rounds {
        let i = round * plan.nodes / plan.fanout_rounds.max(1);
        let (endpoints, request) = clients[i].next_endpoints(&url);
        let node = clients[i].node_id;
        expect_tx.send_modify(|e| *e = Arc::new(e.with_endpoints(node, endpoints)));
        let sent = Instant::now();
        tokio::time::timeout(plan.timeout, request).await.context("an endpoint update got no answer")??;
        answered_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        let reached = waiter.all_correct(&clients, &format!("fan-out round {} (node {node})", round + 1)).await?;
        fanout_ms.push((reached - sent).as_secs_f64() * 1000.0);
    }
    println!(
        "fan-out: one node's new endpoints reach all {} peers in {:.1} ms median, {:.1} ms max ({} rounds); \
         the server answered the update in {:.1} ms median",
        plan.nodes - 1,
        median(&fanout_ms),
        fanout_ms.iter().copied().fold(0.0, f64::max),
        fanout_ms.len(),
        median(&answered_ms)
    );

    let churn = churn(&mut clients, &url, &expect_tx, plan, pid, &waiter).await?;
    let cpu_us_per_change_per_peer = churn.cpu.as_secs_f64() * 1e6 / (churn.changes as f64 * (plan.nodes - 1) as f64);
    println!(
        "churn: {} endpoint changes in {:.1} s, every map correct {:.0} ms after the last; server CPU {:.2} s, \
         {cpu_us_per_change_per_peer:.2} µs per change per peer",
        churn.changes,
        churn.sending.as_secs_f64(),
        churn.settled.as_secs_f64() * 1000.0,
        churn.cpu.as_secs_f64()
    );

    let rss_loaded_kb = rss_kb(pid)?;
    let rss_peak_kb = peak_rss_kb(pid)?;
    let rss_kb_per_node = rss_loaded_kb.saturating_sub(rss_empty_kb) as f64 / plan.nodes as f64;
    println!(
        "memory: server RSS {rss_empty_kb} KiB with no nodes, {rss_loaded_kb} KiB with {} connected: \
         {rss_kb_per_node:.1} KiB per node; at most {rss_peak_kb} KiB at any time",
        plan.nodes
    );

    // Close every connection, and give the clients' connection tasks a moment to see it
    // through before the server goes away.
    drop(clients);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Measurements {
        nodes: plan.nodes,
        register_per_s,
        initial_converged_s: initial.as_secs_f64(),
        storm_converged_s: storm.as_secs_f64(),
        storm_server_cpu_s: storm_server_cpu.as_secs_f64(),
        storm_generator_cpu_s: storm_own_cpu.as_secs_f64(),
        storm_messages_per_client: storm_messages as f64 / plan.nodes as f64,
        fanout_ms,
        fanout_answered_ms: median(&answered_ms),
        churn_changes: churn.changes,
        cpu_us_per_change_per_peer,
        rss_empty_kb,
        rss_loaded_kb,
        rss_kb_per_node,
        rss_peak_kb,
    })
}

/// Map messages the clients received so far.
fn received(clients: &[Client]) -> u64 {
    clients.iter().map(Client::messages).sum()
}

/// Creates a user and one reusable pre-auth key with the CLI.
async fn reusable_key(server: &dyn ControlServer) -> Result<String> {
    #[derive(Deserialize)]
    struct Created {
        id: u64,
    }
    #[derive(Deserialize)]
    struct Key {
        key: String,
    }
    let user: Created = serde_json::from_str(&server.headscale(&["users", "create", "load", "-o", "json"]).await?)
        .context("the output of `headscale users create`")?;
    let user = user.id.to_string();
    let args = ["preauthkeys", "create", "--user", &user, "--reusable", "--expiration", "24h", "-o", "json"];
    let key: Key = serde_json::from_str(&server.headscale(&args).await?)
        .context("the output of `headscale preauthkeys create`")?;
    Ok(key.key)
}

/// Registers every client, `plan.register_concurrency` at a time; returns how long it took.
async fn register(clients: &mut [Client], url: &Url, authkey: &str, plan: &Plan) -> Result<Duration> {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(plan.register_concurrency.max(1)));
    let mut joins = JoinSet::new();
    for c in clients.iter() {
        let (index, identity, url, authkey, permits) =
            (c.index, c.identity(), url.clone(), authkey.to_string(), permits.clone());
        joins.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
            (index, identity.join(&url, &authkey).await)
        });
    }
    let all = async {
        while let Some(joined) = joins.join_next().await {
            let (index, conn) = joined.context("a registration task panicked")?;
            clients[index].registered(conn?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(plan.timeout, all)
        .await
        .with_context(|| format!("registering {} nodes took longer than {:?}", clients.len(), plan.timeout))??;
    Ok(started.elapsed())
}

/// Learns every node's id and addresses from `headscale nodes list`, and expects each with the
/// endpoints its client announces.
async fn expectation(server: &dyn ControlServer, clients: &mut [Client]) -> Result<Expectation> {
    /// A node in Headscale's CLI shape (proto field names, empty fields left out).
    #[derive(Deserialize)]
    struct Listed {
        id: u64,
        node_key: String,
        #[serde(default)]
        ip_addresses: Vec<String>,
    }
    let listed: Option<Vec<Listed>> = serde_json::from_str(&server.headscale(&["nodes", "list", "-o", "json"]).await?)
        .context("the output of `headscale nodes list`")?;
    let listed = listed.unwrap_or_default();
    ensure!(
        listed.len() == clients.len(),
        "the server lists {} nodes, {} were registered",
        listed.len(),
        clients.len()
    );
    let by_key: HashMap<&str, &Listed> = listed.iter().map(|n| (n.node_key.as_str(), n)).collect();
    let mut nodes = HashMap::new();
    for c in clients.iter_mut() {
        let key = c.node_key();
        let n = by_key.get(key.as_str()).with_context(|| format!("the server does not list node key {key}"))?;
        c.node_id = i64::try_from(n.id).with_context(|| format!("node id {}", n.id))?;
        let address = tailnet_address(&n.ip_addresses).with_context(|| format!("the addresses of node {}", n.id))?;
        nodes.insert(c.node_id, NodeFacts { address, endpoints: c.endpoints() });
    }
    Ok(Expectation::new(nodes))
}

fn tailnet_address(listed: &[String]) -> Result<TailnetAddress> {
    let ips: Vec<IpAddr> = listed.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    match ips.as_slice() {
        [IpAddr::V4(v4), IpAddr::V6(v6)] | [IpAddr::V6(v6), IpAddr::V4(v4)] => {
            Ok(TailnetAddress { ipv4: (*v4).into(), ipv6: (*v6).into() })
        }
        _ => bail!("expected one IPv4 and one IPv6 address, got {listed:?}"),
    }
}

/// What the churn phase measured.
struct Churn {
    changes: u64,
    /// How long sending the changes took.
    sending: Duration,
    /// From the last change to every map correct.
    settled: Duration,
    /// Server CPU time from the first change to every map correct.
    cpu: Duration,
}

/// Sends `plan.churn_per_s` endpoint changes a second for `plan.churn_for`, from the clients in
/// turn, then waits until every map holds the last endpoints of every node.
async fn churn(
    clients: &mut [Client],
    url: &Url,
    expected: &watch::Sender<Arc<Expectation>>,
    plan: &Plan,
    pid: u32,
    waiter: &Waiter<'_>,
) -> Result<Churn> {
    let changes = (plan.churn_per_s as f64 * plan.churn_for.as_secs_f64()).round().max(1.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.churn_per_s.max(1) as f64));
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    for n in 0..changes {
        tick.tick().await;
        // A prime stride spreads the changes over the clients. Each update is answered before
        // the next is sent, so one client's updates reach the server in order.
        let c = &mut clients[(n as usize * 7919 + 1) % clients.len()];
        let (endpoints, request) = c.next_endpoints(url);
        let node = c.node_id;
        expected.send_modify(|e| *e = Arc::new(e.with_endpoints(node, endpoints)));
        tokio::time::timeout(plan.timeout, request).await.context("an endpoint update got no answer")??;
    }
    let last = Instant::now();
    let sending = last - started;
    let settled = waiter.all_correct(clients, "the end of churn").await?;
    let cpu = cpu_time(pid)? - cpu_before;
    Ok(Churn { changes, sending, settled: settled.saturating_duration_since(last), cpu })
}

/// Waits for every client to hold a correct map.
struct Waiter<'a> {
    expected: &'a watch::Sender<Arc<Expectation>>,
    timeout: Duration,
}

impl Waiter<'_> {
    /// Waits until every client's map is correct for the current expectation; returns when the
    /// last one became correct. Fails at once if a session failed, or after the timeout naming
    /// a client whose map is still wrong and what is wrong with it.
    async fn all_correct(&self, clients: &[Client], what: &str) -> Result<Instant> {
        let expected = self.expected.borrow().clone();
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut last = None;
            let mut waiting = None;
            let mut correct = 0;
            for c in clients {
                match c.correct_since(expected.revision()).with_context(|| format!("during {what}"))? {
                    Some(at) => {
                        correct += 1;
                        last = last.max(Some(at));
                    }
                    None => {
                        waiting.get_or_insert(c);
                    }
                }
            }
            let Some(waiting) = waiting else {
                return Ok(last.unwrap_or_else(Instant::now));
            };
            if Instant::now() >= deadline {
                bail!(
                    "{what}: only {correct} of {} clients hold a correct map after {:?}; {}",
                    clients.len(),
                    self.timeout,
                    waiting.describe(&expected)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
