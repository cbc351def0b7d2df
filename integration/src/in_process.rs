//! The in-process world: the server runs in this process on 127.0.0.1 ([`TestServer`]), the
//! CLI goes through the same code as the `headscale` binary, and each client is either the
//! official Go client in a process of its own on loopback ([`GoNode`], its log kept in the
//! scenario's artifact directory) or a supervised tailscale-rs [`Node`] in this process.
//! There is no network to cut here, and stopping the
//! in-process server leaves its open connections served, so `disconnect` and
//! `restart_server` report [`WorldError::Unsupported`] and those scenarios are skipped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::client::{Client, ClientKind};
use crate::go_node::{GoNode, GoSpec};
use crate::node::{Node, NodeSpec};
use crate::protocol::Request;
use crate::scenario::{ClientSpec, Engine, Scenario, ServerSetup, Tailnet, Verdict, World, WorldError, ECHO_PORT};
use crate::{Options, TestServer};

/// The server and clients of one scenario, all in this process.
pub struct InProcessWorld {
    server: RwLock<Option<TestServer>>,
    clients: Mutex<HashMap<String, Arc<dyn Client>>>,
    /// How each client was started, to start it again.
    specs: Mutex<HashMap<String, ClientSpec>>,
    keys: tempfile::TempDir,
    /// Where the Go clients' logs go.
    logs: PathBuf,
    addr: SocketAddr,
}

impl InProcessWorld {
    /// Starts a server set up as `setup` asks, on `engine`; the Go clients' logs go into `logs`.
    pub async fn start(setup: &ServerSetup, engine: Engine, logs: &Path) -> Result<InProcessWorld> {
        let base = match engine {
            Engine::Sqlite => Options::default(),
            Engine::Postgres => Options::on_postgres().ok_or(WorldError::Unsupported {
                world: "in-process",
                what: "run on PostgreSQL here (HEADSCALE_TEST_POSTGRES=skip)",
            })?,
        };
        let mut opts = Options { config: setup.config.to_vec(), derp_map: setup.derp_map, ..base };
        if let Some(t) = setup.ephemeral_timeout {
            opts.ephemeral_timeout = t;
        }
        let server = TestServer::start_with_policy(opts, setup.policy).await?;
        let addr = server.running.listen_addr;
        Ok(InProcessWorld {
            server: RwLock::new(Some(server)),
            clients: Mutex::new(HashMap::new()),
            specs: Mutex::new(HashMap::new()),
            keys: tempfile::tempdir().context("a directory for client keys")?,
            logs: logs.to_path_buf(),
            addr,
        })
    }

    /// Shuts every client and the server down.
    pub async fn stop(self) {
        for (_, node) in self.clients.lock().await.drain() {
            node.shutdown().await;
        }
        if let Some(s) = self.server.write().await.take() {
            s.running.stop().await;
        }
    }

    async fn node(&self, name: &str) -> Result<Arc<dyn Client>> {
        self.clients.lock().await.get(name).cloned().with_context(|| format!("no client named {name}"))
    }
}

#[async_trait]
impl World for InProcessWorld {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn headscale(&self, args: &[&str]) -> Result<String> {
        let server = self.server.read().await;
        let server = server.as_ref().context("the server is stopped")?;
        server.cli(args).await.with_context(|| format!("headscale {}", args.join(" ")))
    }

    async fn start_client(&self, spec: &ClientSpec) -> Result<()> {
        let url = self.server.read().await.as_ref().context("the server is stopped")?.url();
        let node: Arc<dyn Client> = match spec.kind {
            ClientKind::Go => Arc::new(
                GoNode::start(GoSpec {
                    control_url: url,
                    hostname: spec.hostname().to_string(),
                    authkey: spec.authkey.clone(),
                    tags: spec.tags.clone(),
                    state_dir: self.keys.path().join(&spec.name),
                    log_file: self.logs.join(format!("{}.log", spec.name)),
                    ephemeral: spec.ephemeral,
                    echo_port: ECHO_PORT,
                })
                .await?,
            ),
            ClientKind::Rs => {
                if !spec.tags.is_empty() {
                    return Err(WorldError::ClientCannot {
                        client: ClientKind::Rs,
                        what: "ask for tags (tailscale-rs drops them)",
                    }
                    .into());
                }
                Arc::new(
                    Node::start(NodeSpec {
                        control_url: url,
                        hostname: spec.hostname().to_string(),
                        authkey: spec.authkey.clone(),
                        key_file: self.keys.path().join(format!("{}.json", spec.name)),
                        ephemeral: spec.ephemeral,
                        echo_port: ECHO_PORT,
                    })
                    .await?,
                )
            }
        };
        self.clients.lock().await.insert(spec.name.clone(), node);
        self.specs.lock().await.insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    async fn stop_client(&self, name: &str) -> Result<()> {
        let node = self.clients.lock().await.remove(name).with_context(|| format!("no client named {name}"))?;
        node.shutdown().await;
        Ok(())
    }

    async fn restart_client(&self, name: &str) -> Result<()> {
        let spec = self.specs.lock().await.get(name).cloned().with_context(|| format!("no client named {name}"))?;
        if let Some(node) = self.clients.lock().await.remove(name) {
            node.shutdown().await;
        }
        self.start_client(&ClientSpec { authkey: None, ..spec }).await
    }

    async fn ask(&self, client: &str, request: &Request) -> Result<Value> {
        self.node(client).await?.handle(request).await
    }

    async fn disconnect(&self, _client: &str) -> Result<()> {
        Err(WorldError::Unsupported { world: "in-process", what: "cut one client's network (run it with `hi`)" }.into())
    }

    async fn reconnect(&self, _client: &str) -> Result<()> {
        Err(WorldError::Unsupported { world: "in-process", what: "cut one client's network (run it with `hi`)" }.into())
    }

    async fn kill_server(&self) -> Result<()> {
        Err(WorldError::Unsupported {
            world: "in-process",
            what: "kill the server (it is this process; run it with `hi`)",
        }
        .into())
    }

    async fn restart_server(&self) -> Result<()> {
        // `Running::stop` stops the listeners but not the connections already accepted: the
        // old server would keep serving every connected client, and no client would reconnect.
        Err(WorldError::Unsupported {
            world: "in-process",
            what: "restart the server under connected clients (stopping it leaves their connections served; run it with `hi`)",
        }
        .into())
    }

    async fn write_policy(&self, policy: &str) -> Result<()> {
        let server = self.server.read().await;
        let path = &server.as_ref().context("the server is stopped")?.config.policy.path;
        anyhow::ensure!(!path.is_empty(), "the server was started without a policy file");
        std::fs::write(path, policy).with_context(|| format!("writing {path}"))
    }

    async fn server_file(&self, name: &str, content: &str) -> Result<String> {
        let server = self.server.read().await;
        let path = server.as_ref().context("the server is stopped")?.dir().join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.display().to_string())
    }

    fn server_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// How a scenario ended, and what it noted on the way.
#[derive(Debug)]
pub struct Ran {
    /// Passed or skipped.
    pub verdict: Verdict,
    /// What the scenario said of this run (checks its client could not make).
    pub notes: Vec<String>,
}

/// Runs one scenario with clients of `kind` in a fresh in-process world on `engine`, the Go
/// clients' logs in `logs`, and returns how it ended.
pub async fn run(scenario: &Scenario, kind: ClientKind, engine: Engine, logs: &Path) -> Result<Ran> {
    if let Some(why) = scenario.cannot_run_with(kind) {
        return Ok(Ran { verdict: Verdict::Skipped(format!("not with the {kind} client: {why}")), notes: Vec::new() });
    }
    std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
    let world = match InProcessWorld::start(&scenario.setup, engine, logs).await {
        Ok(w) => Arc::new(w),
        Err(e) => return Ok(Ran { verdict: crate::scenario::skip_if_unsupported(e)?, notes: Vec::new() }),
    };
    let tailnet = Tailnet::new(world.clone(), kind);
    let verdict = match (scenario.run)(tailnet.clone()).await {
        Ok(Verdict::Passed) => tailnet.check_contained().await.map(|()| Verdict::Passed),
        other => other,
    };
    let notes = tailnet.notes();
    drop(tailnet);
    match Arc::try_unwrap(world) {
        Ok(w) => w.stop().await,
        Err(_) => tracing::warn!("the scenario kept its world; it stops when the process ends"),
    }
    Ok(Ran { verdict: crate::scenario::skip_if_unsupported_result(verdict)?, notes })
}
