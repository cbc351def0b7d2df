//! One real Tailscale node (a tailscale-rs `Device`) kept alive the way a client daemon keeps
//! itself alive, answering the requests of `protocol`.
//!
//! tailscale-rs 0.6.1 gives up for good when its control connection fails six times within
//! about five seconds (a server restart or a cut network is enough), it never dials a DERP
//! region again once that connection failed (`ts_runtime` `uniderp::start_runner` returns on
//! the first error), and it has no logout. A [`Node`] therefore watches its device and, when
//! the device is dead, starts a new one from the same key file, so that the node keeps its
//! identity across such events; [`Node::restart_after_failure`] does the same for a DERP
//! failure its owner noticed, and `login KEY` on purpose with a new auth key. Every restart is
//! counted and reported in the node's status, so a scenario (and its artifacts) show when it
//! happened.
//!
//! A tailscale-rs device does not always stop completely when it is shut down: its DERP and
//! control tasks can outlive it, and the server then hears the old and the new device (same
//! node key, different disco keys) in turn. A node whose program can be run again (`tsnode`,
//! see [`Node::start_replaceable`]) therefore restarts unattended by replacing its whole
//! process, which ends every task of the old device; in-process nodes replace the device.
//!
//! The same [`Node`] runs in-process (the loopback world) and inside each client container
//! (`tsnode`), where [`Request`] lines arrive on an admin TCP port and each answer is one
//! JSON line (`admin`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::protocol::{ClientHealth, Exchange, NodeStatus, PeerStatus, Request, EXCHANGE_TIMEOUT, PROBE_TIMEOUT};

/// How a node joins: everything `tailscale::Config` needs, plus the echo port.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The control server (plain http).
    pub control_url: url::Url,
    /// The hostname to register.
    pub hostname: String,
    /// A pre-auth key; without one the node waits for interactive approval.
    pub authkey: Option<String>,
    /// Where the node keeps its keys, so a restarted device is the same node.
    pub key_file: PathBuf,
    /// Register as an ephemeral node.
    pub ephemeral: bool,
    /// The tailnet port echoed over TCP and UDP; the next port echoes TCP too.
    pub echo_port: u16,
}

/// How long `Device::new` may take (it never returns while control is unreachable).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the supervisor checks that the device is alive.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Failed checks in a row after which the device counts as dead.
const DEAD_AFTER: u32 = 3;

/// A running device, the echo tasks bound to it, when it started, and whether it replaced
/// another device in this process (whose tasks may still be winding down).
struct Incarnation {
    device: Arc<tailscale::Device>,
    echo: Vec<JoinHandle<()>>,
    born: Instant,
    successor: bool,
}

/// Runs the node's program again in place of the current process, with `spec` and the
/// restart count; returns only if that failed.
pub type Reexec = Box<dyn Fn(&NodeSpec, u32) -> anyhow::Error + Send + Sync>;

struct Shared {
    spec: Mutex<NodeSpec>,
    reexec: Option<Reexec>,
    current: watch::Sender<Option<Arc<tailscale::Device>>>,
    restarts: AtomicU32,
    /// Serializes restarts (the supervisor's and `login`'s).
    restart_lock: tokio::sync::Mutex<Option<Incarnation>>,
}

/// A supervised tailscale-rs device; see the module documentation.
pub struct Node {
    shared: Arc<Shared>,
    supervisor: JoinHandle<()>,
}

impl Node {
    /// Starts the device (it registers in the background) and its supervisor.
    pub async fn start(spec: NodeSpec) -> Result<Node> {
        Self::start_with(spec, 0, None).await
    }

    /// Like [`Node::start`] for a program that `reexec` can run again: unattended restarts
    /// replace the process. `restarts` is the count the previous process reached.
    pub async fn start_replaceable(spec: NodeSpec, restarts: u32, reexec: Reexec) -> Result<Node> {
        Self::start_with(spec, restarts, Some(reexec)).await
    }

    async fn start_with(spec: NodeSpec, restarts: u32, reexec: Option<Reexec>) -> Result<Node> {
        let incarnation = incarnate(&spec).await?;
        let (current, _) = watch::channel(Some(incarnation.device.clone()));
        let shared = Arc::new(Shared {
            spec: Mutex::new(spec),
            reexec,
            current,
            restarts: AtomicU32::new(restarts),
            restart_lock: tokio::sync::Mutex::new(Some(incarnation)),
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        Ok(Node { shared, supervisor })
    }

    /// The hostname this node registers.
    pub fn hostname(&self) -> String {
        self.shared.spec.lock().expect("spec lock").hostname.clone()
    }

    /// Answers one request; the JSON is what the admin port sends back.
    async fn answer(&self, request: &Request) -> Result<Value> {
        Ok(match request {
            Request::Status => serde_json::to_value(self.status().await?)?,
            Request::Peer(name) => serde_json::to_value(self.peer(name).await?)?,
            Request::Tcp(addr) => serde_json::to_value(self.tcp(*addr, EXCHANGE_TIMEOUT).await?)?,
            Request::Probe(addr) => serde_json::to_value(self.tcp(*addr, PROBE_TIMEOUT).await?)?,
            Request::Udp(addr) => serde_json::to_value(self.udp(*addr).await?)?,
            Request::Login(key) => {
                self.shared.spec.lock().expect("spec lock").authkey = Some(key.clone());
                restart(&self.shared, "login with a new auth key", None, false).await?;
                serde_json::to_value(self.status().await?)?
            }
            Request::NetMap => bail!("tailscale-rs shows no raw map; run the scenario with the official client"),
            Request::TcpName(..) => {
                bail!("tailscale-rs resolves no MagicDNS names; run the scenario with the official client")
            }
            // tailscale-rs uploads no logs and dials only the control server and its DERP map.
            Request::Health => serde_json::to_value(ClientHealth::default())?,
        })
    }

    /// Starts the device again, keeping its keys, after a failure seen at `seen` that
    /// tailscale-rs does not recover from by itself — unless the failure may be that of the
    /// device it replaced in this process: one seen within `grace` of its start.
    pub async fn restart_after_failure(&self, seen: Instant, grace: Duration, why: &str) -> Result<()> {
        restart(&self.shared, why, Some((seen, grace)), true).await
    }

    /// Stops the supervisor and shuts the device down.
    async fn stop(&self) {
        self.supervisor.abort();
        if let Some(old) = self.shared.restart_lock.lock().await.take() {
            self.shared.current.send_replace(None);
            retire(old).await;
        }
    }

    async fn device(&self) -> Result<Arc<tailscale::Device>> {
        let mut rx = self.shared.current.subscribe();
        let dev = timeout(START_TIMEOUT, rx.wait_for(Option::is_some))
            .await
            .context("the device is restarting and did not come back")?
            .context("the node is shut down")?;
        Ok(dev.clone().expect("waited for Some"))
    }

    async fn status(&self) -> Result<NodeStatus> {
        let dev = self.device().await?;
        let quick = Duration::from_millis(500);
        let auth = timeout(quick, dev.is_authorized()).await.ok().and_then(Result::ok);
        let me = timeout(quick, dev.self_node()).await.ok().and_then(Result::ok);
        Ok(NodeStatus {
            hostname: self.hostname(),
            authorized: matches!(auth, Some(tailscale::AuthState::Authorized)),
            auth_url: match auth {
                Some(tailscale::AuthState::NotAuthorized(u)) => Some(u.to_string()),
                _ => None,
            },
            ipv4: me.as_ref().map(|n| n.tailnet_address.ipv4.addr()),
            ipv6: me.as_ref().map(|n| n.tailnet_address.ipv6.addr()),
            key_expiry: me.and_then(|n| n.node_key_expiry),
            restarts: self.shared.restarts.load(Ordering::Relaxed),
        })
    }

    async fn peer(&self, name: &str) -> Result<Option<PeerStatus>> {
        let dev = self.device().await?;
        let Some(p) =
            timeout(Duration::from_secs(5), dev.peer_by_name(name)).await.context("peer lookup timed out")??
        else {
            return Ok(None);
        };
        Ok(Some(PeerStatus {
            name: p.hostname.clone(),
            ipv4: p.tailnet_address.ipv4.addr(),
            derp_region: p.derp_region.map(|r| r.0.get()),
            online: match p.status {
                ts_control::NodeStatus::Online => Some(true),
                ts_control::NodeStatus::Offline(_) => Some(false),
                ts_control::NodeStatus::Unknown => None,
            },
            key_expiry: p.node_key_expiry,
        }))
    }

    async fn tcp(&self, to: SocketAddr, within: Duration) -> Result<Exchange> {
        let dev = self.device().await?;
        let start = Instant::now();
        let payload = format!("tcp echo from {} at {:?}", self.hostname(), start);
        let mut c =
            timeout(within, dev.tcp_connect(to)).await.with_context(|| format!("TCP connect to {to} timed out"))??;
        c.write_all(payload.as_bytes()).await?;
        let mut echo = vec![0u8; payload.len()];
        timeout(within, c.read_exact(&mut echo)).await.with_context(|| format!("no TCP echo from {to}"))??;
        ensure!(echo == payload.as_bytes(), "the TCP echo from {to} differs from what was sent");
        Ok(Exchange { ms: start.elapsed().as_secs_f64() * 1000.0, answered_by: None })
    }

    async fn udp(&self, to: SocketAddr) -> Result<Exchange> {
        let dev = self.device().await?;
        let me = dev.ipv4_addr().await?;
        // The netstack has no ephemeral UDP ports: pick one.
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), 20_000..60_000);
        let sock = dev.udp_bind(SocketAddr::from((me, port))).await?;
        let payload = format!("udp echo from {}", self.hostname());
        let start = Instant::now();
        let mut buf = [0u8; 256];
        while start.elapsed() < EXCHANGE_TIMEOUT {
            sock.send_to(to, payload.as_bytes()).await?;
            if let Ok(Ok((from, n))) = timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
                if from == to && &buf[..n] == payload.as_bytes() {
                    return Ok(Exchange { ms: start.elapsed().as_secs_f64() * 1000.0, answered_by: None });
                }
            }
        }
        bail!("no UDP echo from {to} within {EXCHANGE_TIMEOUT:?}")
    }
}

/// Starts a device for `spec` and its echo servers. Control must accept connections first:
/// `Device::new` never returns if its one dial attempt fails.
async fn incarnate(spec: &NodeSpec) -> Result<Incarnation> {
    let host = spec.control_url.host_str().context("control URL without a host")?;
    let port = spec.control_url.port_or_known_default().context("control URL without a port")?;
    timeout(Duration::from_secs(2), tokio::net::TcpStream::connect((host, port)))
        .await
        .with_context(|| format!("the control server {} does not accept connections", spec.control_url))?
        .with_context(|| format!("the control server {} does not accept connections", spec.control_url))?;
    let mut cfg = tailscale::Config::default_with_key_file(&spec.key_file)
        .await
        .with_context(|| format!("loading or creating the key file {}", spec.key_file.display()))?;
    cfg.control_server_url = spec.control_url.clone();
    cfg.requested_hostname = Some(spec.hostname.clone());
    cfg.ephemeral = spec.ephemeral;
    let device = timeout(START_TIMEOUT, tailscale::Device::new(&cfg, spec.authkey.clone()))
        .await
        .with_context(|| format!("the control server {} did not answer", spec.control_url))?
        .context("starting the tailscale device")?;
    let device = Arc::new(device);
    let echo = vec![
        tokio::spawn(echo_tcp(device.clone(), spec.echo_port)),
        tokio::spawn(echo_udp(device.clone(), spec.echo_port)),
        // A second TCP port, so that a policy can allow one port and refuse the other.
        tokio::spawn(echo_tcp(device.clone(), spec.echo_port + 1)),
    ];
    Ok(Incarnation { device, echo, born: Instant::now(), successor: false })
}

/// Stops an incarnation's echo tasks and shuts its device down.
async fn retire(old: Incarnation) {
    for t in &old.echo {
        t.abort();
    }
    for t in old.echo {
        let _ = t.await;
    }
    // Requests in flight may still hold the device for a moment.
    let mut device = old.device;
    for _ in 0..50 {
        match Arc::try_unwrap(device) {
            Ok(d) => {
                d.shutdown(Some(Duration::from_secs(2))).await;
                return;
            }
            Err(shared) => device = shared,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the old device is still in use; dropping it without a shutdown");
}

/// Replaces the device with a new one from the same key file, retrying until one starts;
/// an `unattended` restart of a replaceable node replaces the process instead. With a failure
/// `(seen, grace)`, a device that replaced another in this process less than `grace` before
/// `seen` is kept: the failure may be its predecessor's.
async fn restart(shared: &Shared, why: &str, failure: Option<(Instant, Duration)>, unattended: bool) -> Result<()> {
    let mut slot = shared.restart_lock.lock().await;
    let Some(old) = slot.take() else { bail!("the node is shut down") };
    if failure.is_some_and(|(seen, grace)| old.successor && seen < old.born + grace) {
        *slot = Some(old);
        return Ok(());
    }
    let n = shared.restarts.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(reexec) = shared.reexec.as_ref().filter(|_| unattended) {
        tracing::warn!(restart = n, reason = why, "running the program again");
        let spec = shared.spec.lock().expect("spec lock").clone();
        let failed = reexec(&spec, n);
        tracing::warn!(error = %format!("{failed:#}"), "cannot run the program again; starting the device in this process");
    }
    shared.current.send_replace(None);
    retire(old).await;
    tracing::warn!(restart = n, reason = why, "starting the device again");
    let mut attempt = 0u32;
    loop {
        let spec = shared.spec.lock().expect("spec lock").clone();
        match incarnate(&spec).await {
            Ok(inc) => {
                shared.current.send_replace(Some(inc.device.clone()));
                *slot = Some(Incarnation { successor: true, ..inc });
                tracing::info!(restart = n, "the device is running again");
                return Ok(());
            }
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %format!("{e:#}"), attempt, "the device did not start; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Watches the device and restarts it when it stopped answering for good.
async fn supervise(shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let Some(dev) = shared.current.borrow().clone() else { continue };
        // `self_node` waits for the first map; only an error (not a wait) means dead.
        match timeout(Duration::from_millis(500), dev.self_node()).await {
            Ok(Err(_)) => failures += 1,
            _ => failures = 0,
        }
        drop(dev);
        if failures >= DEAD_AFTER {
            failures = 0;
            let _ = restart(&shared, "the device stopped (control unreachable too often)", None, true).await;
        }
    }
}

async fn echo_tcp(dev: Arc<tailscale::Device>, port: u16) {
    let Ok(ip) = dev.ipv4_addr().await else { return };
    let listener = match dev.tcp_listen(SocketAddr::from((ip, port))).await {
        Ok(l) => l,
        Err(e) => return tracing::warn!(error = %e, "cannot listen for TCP echo"),
    };
    while let Ok(mut s) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn echo_udp(dev: Arc<tailscale::Device>, port: u16) {
    let Ok(ip) = dev.ipv4_addr().await else { return };
    let sock = match dev.udp_bind(SocketAddr::from((ip, port))).await {
        Ok(s) => s,
        Err(e) => return tracing::warn!(error = %e, "cannot bind the UDP echo"),
    };
    let mut buf = [0u8; 2048];
    while let Ok((from, n)) = sock.recv_from(&mut buf).await {
        let _ = sock.send_to(from, &buf[..n]).await;
    }
}

#[async_trait::async_trait]
impl crate::client::Client for Node {
    async fn handle(&self, request: &Request) -> Result<Value> {
        self.answer(request).await
    }

    async fn shutdown(&self) {
        self.stop().await
    }
}
