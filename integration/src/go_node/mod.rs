//! One official Tailscale client: Tailscale's Go tsnet (v1.90.9) inside a Caddy process
//! ([`caddy`]), driven with the same [`Request`]s as a tailscale-rs [`crate::node::Node`].
//! Its state is read from what it logs ([`observe`]: the MapResponses it decoded, rebuilt
//! into its map by [`netmap`]); TCP exchanges are HTTP requests it makes through its own
//! tsnet to a peer's HTTP echo on the tailnet ports. It always runs with
//! `TS_NO_LOGS_NO_SUPPORT=true` (no log upload to Tailscale) and `TS_DISABLE_PORTMAPPER=1`
//! (no NAT-PMP, PCP or UPnP probes of the gateway), and with a tripwire proxy that records
//! any HTTP(S) request it makes beyond its control server.
//!
//! What it cannot do here: UDP (Caddy offers it no UDP socket on the tailnet), advertising
//! routes, and Tailscale SSH.

pub mod caddy;
pub mod netmap;
pub mod observe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::client::Client;
use crate::protocol::{ClientHealth, Exchange, NodeStatus, Request, EXCHANGE_TIMEOUT, PROBE_TIMEOUT};
use observe::Observed;

/// How a Go node joins.
#[derive(Debug, Clone)]
pub struct GoSpec {
    /// The control server.
    pub control_url: url::Url,
    /// The hostname to register (also the node's name in Caddy's configuration).
    pub hostname: String,
    /// A pre-auth key; without one the node waits for interactive approval.
    pub authkey: Option<String>,
    /// Tags the node asks for as it registers (`--advertise-tags`).
    pub tags: Vec<String>,
    /// Where the node keeps its keys and Caddy its files.
    pub state_dir: PathBuf,
    /// Where the client's log goes (a file, or `/dev/stderr`).
    pub log_file: PathBuf,
    /// Register as an ephemeral node.
    pub ephemeral: bool,
    /// The tailnet port with an HTTP echo; the next port has one too.
    pub echo_port: u16,
}

impl GoSpec {
    /// A node named `name` that keeps its state in `dir/name` and its log in `dir/name.log`,
    /// asks for no tags, is not ephemeral and echoes on [`crate::scenario::ECHO_PORT`].
    pub fn in_dir(control_url: url::Url, dir: &std::path::Path, name: &str, authkey: Option<String>) -> GoSpec {
        GoSpec {
            control_url,
            hostname: name.into(),
            authkey,
            tags: Vec::new(),
            state_dir: dir.join(name),
            log_file: dir.join(format!("{name}.log")),
            ephemeral: false,
            echo_port: crate::scenario::ECHO_PORT,
        }
    }
}

/// How long the client may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One Caddy process and the task that reads its log into the shared [`Observed`].
struct Process {
    child: Child,
    follower: JoinHandle<()>,
}

/// A running official client; see the module documentation.
pub struct GoNode {
    spec: Mutex<GoSpec>,
    program: PathBuf,
    process: tokio::sync::Mutex<Option<Process>>,
    observed: Arc<Mutex<Observed>>,
    tripwire: SocketAddr,
    /// The loopback listener of the current process that dials through the tailnet.
    dial: Mutex<SocketAddr>,
    restarts: AtomicU32,
}

impl GoNode {
    /// Starts the client (it registers in the background).
    pub async fn start(spec: GoSpec) -> Result<GoNode> {
        let program = caddy::program()?;
        std::fs::create_dir_all(&spec.state_dir).with_context(|| format!("creating {}", spec.state_dir.display()))?;
        let observed = Arc::new(Mutex::new(Observed::default()));
        let tripwire = observe::tripwire(observed.clone()).await?;
        let node = GoNode {
            spec: Mutex::new(spec),
            program,
            process: tokio::sync::Mutex::new(None),
            observed,
            tripwire,
            dial: Mutex::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            restarts: AtomicU32::new(0),
        };
        *node.process.lock().await = Some(node.spawn().await?);
        Ok(node)
    }

    fn spec(&self) -> GoSpec {
        self.spec.lock().expect("spec lock").clone()
    }

    /// Starts a Caddy process for the current spec, with a fresh map.
    async fn spawn(&self) -> Result<Process> {
        let spec = self.spec();
        let dial = free_loopback_port().await?;
        *self.dial.lock().expect("dial lock") = dial;
        let config_path = spec.state_dir.join("caddy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&caddy::config(&spec, dial))?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let home = spec.state_dir.join("home");
        std::fs::create_dir_all(&home)?;
        let proxy = format!("http://{}", self.tripwire);
        let control_host = spec.control_url.host_str().unwrap_or_default().to_string();
        let mut cmd = Command::new(&self.program);
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("TS_NO_LOGS_NO_SUPPORT", "true")
            .env("TS_DISABLE_PORTMAPPER", "1")
            .env("TS_VERBOSE", "1")
            .env("TS_DEBUG_MAP", "1")
            .env("HTTPS_PROXY", &proxy)
            .env("HTTP_PROXY", &proxy)
            .env("NO_PROXY", control_host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", self.program.display()))?;
        let log = child.stderr.take().context("the client's log pipe")?;
        let sink = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .await
            .with_context(|| format!("opening {}", spec.log_file.display()))?;
        self.observed.lock().expect("observed lock").reset();
        let observed = self.observed.clone();
        let pid = child.id();
        let follower = tokio::spawn(async move {
            observe::follow(log, sink, observed.clone()).await;
            let mut o = observed.lock().expect("observed lock");
            if o.exited.is_none() {
                o.exited = Some(format!("the client process {pid:?} closed its log (it exited)"));
            }
        });
        Ok(Process { child, follower })
    }

    /// Stops the process (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) and waits until its
    /// log has been read to the end, so that nothing of it reaches the next process's state.
    async fn stop_process(mut process: Process) {
        if let Some(pid) = process.child.id() {
            // SAFETY: sends a signal to a child this node started and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if timeout(STOP_TIMEOUT, process.child.wait()).await.is_err() {
            let _ = process.child.kill().await;
        }
        if timeout(STOP_TIMEOUT, &mut process.follower).await.is_err() {
            process.follower.abort();
        }
    }

    /// Stops the client and starts it again with the same keys (and the current spec).
    async fn restart(&self) -> Result<()> {
        let mut process = self.process.lock().await;
        if let Some(old) = process.take() {
            Self::stop_process(old).await;
        }
        self.restarts.fetch_add(1, Ordering::Relaxed);
        *process = Some(self.spawn().await?);
        Ok(())
    }

    fn alive(&self) -> Result<()> {
        let o = self.observed.lock().expect("observed lock");
        match &o.exited {
            Some(why) => bail!("{why}; its last lines:\n{}", o.tail.join("\n")),
            None => Ok(()),
        }
    }

    fn status(&self) -> Result<NodeStatus> {
        self.alive()?;
        let o = self.observed.lock().expect("observed lock");
        let (ipv4, ipv6) = o.map.addresses();
        Ok(NodeStatus {
            hostname: self.spec().hostname,
            authorized: o.map.authorized(),
            auth_url: o.auth_url.clone(),
            ipv4,
            ipv6,
            key_expiry: o.map.key_expiry(),
            restarts: self.restarts.load(Ordering::Relaxed),
        })
    }

    /// An HTTP request through the client's tsnet to `to` (`IP:PORT` or `NAME:PORT`, a
    /// MagicDNS name resolved by the client), whose echo must answer.
    async fn tcp(&self, to: &str, within: Duration) -> Result<Exchange> {
        self.alive()?;
        let start = Instant::now();
        let dial = *self.dial.lock().expect("dial lock");
        let fetch = async {
            let mut sock =
                TcpStream::connect(dial).await.with_context(|| format!("connecting to the dial listener {dial}"))?;
            let request = format!("GET / HTTP/1.0\r\nHost: {to}\r\n{}: {to}\r\n\r\n", caddy::TARGET_HEADER);
            sock.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            sock.read_to_end(&mut raw).await?;
            anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
        };
        let raw = timeout(within, fetch).await.with_context(|| format!("no answer from {to} within {within:?}"))??;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        ensure!(
            status == "200" && body.starts_with(caddy::ECHO_PREFIX),
            "{to} did not answer through the tailnet: {} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        );
        let answered_by = body.strip_prefix(caddy::ECHO_PREFIX).map(|n| n.trim().to_string());
        Ok(Exchange { ms: start.elapsed().as_secs_f64() * 1000.0, answered_by })
    }
}

#[async_trait]
impl Client for GoNode {
    async fn handle(&self, request: &Request) -> Result<Value> {
        Ok(match request {
            Request::Status => serde_json::to_value(self.status()?)?,
            Request::Peer(name) => {
                self.alive()?;
                serde_json::to_value(self.observed.lock().expect("observed lock").map.peer(name))?
            }
            Request::Tcp(addr) => serde_json::to_value(self.tcp(&addr.to_string(), EXCHANGE_TIMEOUT).await?)?,
            Request::Probe(addr) => serde_json::to_value(self.tcp(&addr.to_string(), PROBE_TIMEOUT).await?)?,
            Request::TcpName(name, port) => {
                serde_json::to_value(self.tcp(&format!("{name}:{port}"), EXCHANGE_TIMEOUT).await?)?
            }
            Request::Udp(_) => {
                bail!("the official client runs inside Caddy here, which offers no UDP socket on the tailnet")
            }
            Request::Login(key) => {
                self.spec.lock().expect("spec lock").authkey = Some(key.clone());
                self.restart().await?;
                serde_json::to_value(self.status()?)?
            }
            Request::NetMap => {
                self.alive()?;
                self.observed.lock().expect("observed lock").map.to_json()
            }
            Request::Health => {
                let o = self.observed.lock().expect("observed lock");
                serde_json::to_value(ClientHealth { outside: o.outside.clone() })?
            }
        })
    }

    async fn shutdown(&self) {
        if let Some(process) = self.process.lock().await.take() {
            Self::stop_process(process).await;
        }
    }
}

/// A loopback port free right now.
async fn free_loopback_port() -> Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("finding a free loopback port")?;
    Ok(l.local_addr()?)
}
