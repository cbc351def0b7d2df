//! The Docker world: one private bridge network per scenario, the server in one container at a
//! fixed address, and one container per client running `gonode` (the official client) or
//! `tsnode` (tailscale-rs), as the scenario's run asks. The CLI runs inside the
//! server container (`docker exec headscale …`, over its local socket, as an admin would);
//! clients are driven through their admin port, reached from this host at the container's
//! address on the scenario's network. Cutting a client off is `docker network disconnect`,
//! and it comes back at the same address. With `--postgres`, PostgreSQL runs in a fourth kind
//! of container on the same network and the server is pointed at it. With `--installed` the
//! server runs from the image users get (`scripts/build-image`) as Headscale's image is run:
//! its entry point given `serve`, a config file in its `/etc/headscale` volume.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use bollard::Docker;
use integration::http::get as http_get;
use integration::protocol::Request;
use integration::scenario::{ClientKind, ClientSpec, ServerSetup, World, WorldError, ECHO_PORT};
use integration::DERP_MAP_FILE;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::docker::{self, ContainerSpec, Network};
use crate::image::{CADDY, GONODE, HEADSCALE, TSNODE};
use crate::postgres;

/// The server's main listener (control, `/health`, `/derp`) inside its container.
pub const CONTROL_PORT: u16 = 8080;
/// The embedded DERP's TLS port.
const DERP_TLS_PORT: u16 = 8443;
/// The metrics listener, if the server serves one.
pub const METRICS_PORT: u16 = 9090;
/// Each client's admin port.
const ADMIN_PORT: u16 = 9999;
/// The server's data directory: keys, SQLite database, local socket.
pub const DATA_DIR: &str = "/var/lib/headscale";
/// Where the server is asked to record every MapResponse it sends (a directory; one JSON
/// file per message), by the environment variable of the same purpose.
pub const MAPRESPONSE_DIR: &str = "/var/lib/headscale/mapresponses";
const POLICY_DIR: &str = "/etc/headscale";
/// How long a client may take to answer one admin request (exchanges retry up to 15 s).
const ASK_TIMEOUT: Duration = Duration::from_secs(90);

/// A client container.
#[derive(Debug, Clone)]
pub struct Client {
    /// The container name.
    pub container: String,
    /// Its address on the scenario's network.
    pub ip: Ipv4Addr,
    /// The client it runs.
    pub kind: ClientKind,
}

/// The server could not run on PostgreSQL (it exited naming it): every scenario would fail
/// the same way.
#[derive(Debug, thiserror::Error)]
#[error("the server cannot run on PostgreSQL: {0}")]
pub struct PostgresUnusable(pub String);

/// The images a world's containers run.
#[derive(Debug, Clone, Copy)]
pub struct Images<'a> {
    /// The test image ([`crate::image::ensure_image`]): the clients, and the server unless
    /// `installed` is given.
    pub tailnet: &'a str,
    /// The server's image as users get it ([`crate::image::installed_image`]).
    pub installed: Option<&'a str>,
    /// PostgreSQL's image, when the server runs on PostgreSQL.
    pub postgres: Option<&'a str>,
}

/// One scenario's containers and network.
pub struct DockerWorld {
    pub(crate) docker: Docker,
    run: String,
    prefix: String,
    image: String,
    /// The installed image the server runs from, if not the test image.
    installed: Option<String>,
    /// The server program in its container, for the CLI.
    program: &'static str,
    pub(crate) network: Network,
    pub(crate) server: String,
    pub(crate) server_ip: Ipv4Addr,
    /// The PostgreSQL container, when the server runs on PostgreSQL.
    pub(crate) postgres: Option<String>,
    pub(crate) clients: Mutex<BTreeMap<String, Client>>,
}

impl DockerWorld {
    /// Creates the network and starts the server, set up as `setup` asks, from the `images`
    /// given (on PostgreSQL if that image is given). `run` labels every resource; `prefix`
    /// names them.
    pub async fn start(
        docker: &Docker,
        run: &str,
        prefix: &str,
        images: Images<'_>,
        setup: &ServerSetup,
    ) -> Result<DockerWorld> {
        let postgres = images.postgres;
        let network = docker::create_network(docker, prefix, run).await?;
        let server_ip = network.host(2);
        let world = DockerWorld {
            docker: docker.clone(),
            run: run.to_string(),
            prefix: prefix.to_string(),
            image: images.tailnet.to_string(),
            installed: images.installed.map(str::to_string),
            // The installed image has the program on its PATH, as `docker exec headscale
            // headscale …` expects of Headscale's.
            program: if images.installed.is_some() { "headscale" } else { HEADSCALE },
            server: format!("{prefix}-headscale"),
            postgres: postgres.map(|_| format!("{prefix}-postgres")),
            network,
            server_ip,
            clients: Mutex::new(BTreeMap::new()),
        };
        let started = async {
            if let (Some(pg_image), Some(name)) = (postgres, &world.postgres) {
                postgres::start(docker, run, name, pg_image, &world.network.name, world.postgres_ip()).await?;
            }
            world.start_server(setup).await
        };
        if let Err(e) = started.await {
            // Leave nothing behind; the log goes into the error first.
            let tail = world.log_tail(&world.server).await;
            let _ = world.remove().await;
            if e.is::<WorldError>() || e.is::<PostgresUnusable>() {
                return Err(e);
            }
            return Err(anyhow::anyhow!("{e:#}\nlast lines of the server log:\n{tail}"));
        }
        Ok(world)
    }

    /// A world around a server container that its caller runs on `network` at the network's
    /// second host address (as the package test installs one), with `program` as its CLI;
    /// clients run from the test image `image`.
    pub fn around(
        docker: &Docker,
        run: &str,
        prefix: &str,
        image: &str,
        network: Network,
        server: &str,
        program: &'static str,
    ) -> DockerWorld {
        DockerWorld {
            docker: docker.clone(),
            run: run.to_string(),
            prefix: prefix.to_string(),
            image: image.to_string(),
            installed: None,
            program,
            server: server.to_string(),
            server_ip: network.host(2),
            postgres: None,
            network,
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    fn postgres_ip(&self) -> Ipv4Addr {
        self.network.host(3)
    }

    async fn start_server(&self, setup: &ServerSetup) -> Result<()> {
        let ip = self.server_ip;
        let mut env = vec![
            format!("HEADSCALE_DATA_DIR={DATA_DIR}"),
            format!("HEADSCALE_SERVER_URL=http://{ip}:{CONTROL_PORT}"),
            format!("HEADSCALE_LISTEN_ADDR=0.0.0.0:{CONTROL_PORT}"),
            format!("HEADSCALE_METRICS_LISTEN_ADDR=0.0.0.0:{METRICS_PORT}"),
            format!("HEADSCALE_DERP_SERVER_IPV4={ip}"),
            format!("HEADSCALE_DERP_SERVER_TLS_LISTEN_ADDR=0.0.0.0:{DERP_TLS_PORT}"),
            "HEADSCALE_DERP_SERVER_STUN_LISTEN_ADDR=0.0.0.0:3478".to_string(),
            "HEADSCALE_LOG_LEVEL=debug".to_string(),
            format!("HEADSCALE_DEBUG_DUMP_MAPRESPONSE_PATH={MAPRESPONSE_DIR}"),
            "NO_COLOR=1".to_string(),
        ];
        if let Some(t) = setup.ephemeral_timeout {
            env.push(format!("HEADSCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT={}s", t.as_secs()));
        }
        if setup.policy.is_some() {
            env.push(format!("HEADSCALE_POLICY_PATH={POLICY_DIR}/policy.hujson"));
        }
        if setup.derp_map.is_some() {
            env.extend([
                format!("HEADSCALE_DERP_PATHS=[{POLICY_DIR}/{DERP_MAP_FILE}]"),
                "HEADSCALE_DERP_AUTO_UPDATE_ENABLED=true".to_string(),
                "HEADSCALE_DERP_UPDATE_FREQUENCY=1s".to_string(),
            ]);
        }
        env.extend(setup.config.iter().map(|(k, v)| format!("{k}={v}")));
        if self.postgres.is_some() {
            env.extend([
                "HEADSCALE_DATABASE_TYPE=postgres".to_string(),
                format!("HEADSCALE_DATABASE_POSTGRES_HOST={}", self.postgres_ip()),
                format!("HEADSCALE_DATABASE_POSTGRES_PORT={}", postgres::PORT),
                format!("HEADSCALE_DATABASE_POSTGRES_NAME={}", postgres::DATABASE),
                format!("HEADSCALE_DATABASE_POSTGRES_USER={}", postgres::ROLE),
                format!("HEADSCALE_DATABASE_POSTGRES_PASS={}", postgres::PASSWORD),
            ]);
        }
        let (image, cmd) = match &self.installed {
            // The image's entry point is the program, as in Headscale's image.
            Some(installed) => (installed.clone(), vec!["serve".to_string()]),
            None => (self.image.clone(), vec![HEADSCALE.to_string(), "serve".to_string()]),
        };
        let spec = ContainerSpec {
            name: self.server.clone(),
            image,
            cmd,
            env,
            network: self.network.name.clone(),
            ip: Some(ip),
            // A client cut off the network is noticed when a write to it fails; the kernel's
            // default retransmissions would take a quarter of an hour to give up.
            sysctls: HashMap::from([("net.ipv4.tcp_retries2".to_string(), "4".to_string())]),
            role: "server".into(),
            ..ContainerSpec::default()
        };
        docker::create_container(&self.docker, &self.run, &spec).await?;
        if self.installed.is_some() {
            // A config file where Headscale's image reads it; the environment above overrides
            // what must differ in this network.
            let example = std::fs::read(crate::image::workspace_root().join("config-example.yaml"))
                .context("reading config-example.yaml")?;
            docker::upload_file(&self.docker, &self.server, POLICY_DIR, "config.yaml", &example).await?;
        }
        if let Some(policy) = setup.policy {
            docker::upload_file(&self.docker, &self.server, POLICY_DIR, "policy.hujson", policy.as_bytes()).await?;
        }
        if let Some(map) = setup.derp_map {
            docker::upload_file(&self.docker, &self.server, POLICY_DIR, DERP_MAP_FILE, map.as_bytes()).await?;
        }
        docker::start(&self.docker, &self.server).await?;
        self.await_healthy().await
    }

    /// Waits until `/health` answers 200, or reports why the server exited: a failure to use
    /// PostgreSQL is told apart from other failures.
    pub(crate) async fn await_healthy(&self) -> Result<()> {
        let addr = SocketAddr::from((self.server_ip, CONTROL_PORT));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(addr, "/health").await {
                return Ok(());
            }
            let (running, code) = docker::state(&self.docker, &self.server).await?;
            if !running {
                let log = String::from_utf8_lossy(&docker::logs(&self.docker, &self.server).await?).into_owned();
                // Each line starts with the engine's timestamp.
                let last = log.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
                let last = last.split_once(' ').map_or(last, |(_, text)| text).to_string();
                if self.postgres.is_some() && last.to_lowercase().contains("postgres") {
                    return Err(PostgresUnusable(last).into());
                }
                bail!("the server exited with {code:?}: {last}");
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the server did not answer /health at {addr} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a client's admin port listens (once its device started, which needs the
    /// server), or reports why its program exited.
    async fn await_admin(&self, name: &str, c: &Client) -> Result<()> {
        let admin = SocketAddr::from((c.ip, ADMIN_PORT));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(admin).await.is_ok() {
                return Ok(());
            }
            if !docker::state(&self.docker, &c.container).await?.0 {
                bail!("the {} client {name} exited:\n{}", c.kind, self.log_tail(&c.container).await);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the {} client {name} did not open its admin port {admin} within 60 s", c.kind);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The clients started so far, by name.
    pub fn clients(&self) -> BTreeMap<String, Client> {
        self.clients.lock().expect("clients lock").clone()
    }

    fn client(&self, name: &str) -> Result<Client> {
        self.clients().get(name).cloned().with_context(|| format!("no client named {name}"))
    }

    /// Removes every container and the network of this scenario, as much as it can.
    pub async fn remove(&self) -> Result<()> {
        let mut failures = Vec::new();
        let containers =
            self.clients().into_values().map(|c| c.container).chain([self.server.clone()]).chain(self.postgres.clone());
        for c in containers {
            if let Err(e) = docker::remove_container(&self.docker, &c).await {
                failures.push(format!("{e:#}"));
            }
        }
        if let Err(e) = self.docker.remove_network(&self.network.name).await {
            failures.push(format!("removing network {}: {e}", self.network.name));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("{}", failures.join("; "))
        }
    }

    /// The last lines of a container's log, for error messages.
    async fn log_tail(&self, container: &str) -> String {
        match docker::logs(&self.docker, container).await {
            Ok(log) => {
                let text = String::from_utf8_lossy(&log).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            }
            Err(e) => format!("(no log: {e:#})"),
        }
    }
}

#[async_trait]
impl World for DockerWorld {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn headscale(&self, args: &[&str]) -> Result<String> {
        let mut cmd = vec![self.program];
        cmd.extend_from_slice(args);
        let out = docker::exec(&self.docker, &self.server, None, &cmd).await?;
        if out.exit_code != 0 {
            bail!("`headscale {}` exited with {}: {}", args.join(" "), out.exit_code, out.stderr.trim());
        }
        Ok(out.stdout)
    }

    async fn start_client(&self, spec: &ClientSpec) -> Result<()> {
        let container = format!("{}-{}", self.prefix, spec.name);
        let program = match spec.kind {
            ClientKind::Go => GONODE,
            ClientKind::Rs => TSNODE,
        };
        let mut cmd = vec![
            program.to_string(),
            "--control-url".into(),
            format!("http://{}:{CONTROL_PORT}", self.server_ip),
            "--hostname".into(),
            spec.hostname().to_string(),
            "--echo-port".into(),
            ECHO_PORT.to_string(),
            "--admin".into(),
            format!("0.0.0.0:{ADMIN_PORT}"),
        ];
        if spec.ephemeral {
            cmd.push("--ephemeral".into());
        }
        if !spec.tags.is_empty() {
            if spec.kind == ClientKind::Rs {
                return Err(WorldError::ClientCannot {
                    client: ClientKind::Rs,
                    what: "ask for tags (tailscale-rs drops them)",
                }
                .into());
            }
            cmd.extend(["--tags".into(), spec.tags.join(",")]);
        }
        let mut env = vec!["NO_COLOR=1".to_string(), "RUST_LOG=info".to_string()];
        if spec.kind == ClientKind::Go {
            env.push(format!("{}={CADDY}", integration::go_node::caddy::PROGRAM_VAR));
        }
        if let Some(key) = &spec.authkey {
            env.push(format!("TS_AUTH_KEY={key}"));
        }
        let c = ContainerSpec {
            name: container.clone(),
            image: self.image.clone(),
            cmd,
            env,
            network: self.network.name.clone(),
            role: "client".into(),
            ..ContainerSpec::default()
        };
        docker::create_container(&self.docker, &self.run, &c).await?;
        docker::start(&self.docker, &container).await?;
        let ip = docker::address(&self.docker, &container, &self.network.name).await?;
        let client = Client { container: container.clone(), ip, kind: spec.kind };
        self.clients.lock().expect("clients lock").insert(spec.name.clone(), client.clone());
        self.await_admin(&spec.name, &client).await
    }

    async fn stop_client(&self, name: &str) -> Result<()> {
        let c = self.client(name)?;
        docker::stop(&self.docker, &c.container, Duration::from_secs(10)).await
    }

    async fn restart_client(&self, name: &str) -> Result<()> {
        let c = self.client(name)?;
        // Its key stays in the container's file system; an auth key given at creation is
        // ignored by a node that is already registered.
        docker::restart(&self.docker, &c.container, Duration::from_secs(10)).await?;
        self.await_admin(name, &c).await
    }

    async fn ask(&self, client: &str, request: &Request) -> Result<Value> {
        let c = self.client(client)?;
        let admin = SocketAddr::from((c.ip, ADMIN_PORT));
        let exchange = async {
            let mut sock = TcpStream::connect(admin).await.with_context(|| format!("connecting to {admin}"))?;
            sock.write_all(format!("{request}\n").as_bytes()).await?;
            let mut line = String::new();
            BufReader::new(sock).read_line(&mut line).await?;
            anyhow::Ok(line)
        };
        let line =
            timeout(ASK_TIMEOUT, exchange).await.with_context(|| format!("{client} did not answer `{request}`"))??;
        let answer: Value =
            serde_json::from_str(&line).with_context(|| format!("{client} answered `{request}` with {line:?}"))?;
        match answer.get("error").and_then(Value::as_str) {
            Some(e) => bail!("{e}"),
            None => Ok(answer),
        }
    }

    async fn disconnect(&self, client: &str) -> Result<()> {
        let c = self.client(client)?;
        docker::disconnect(&self.docker, &self.network.name, &c.container).await
    }

    async fn reconnect(&self, client: &str) -> Result<()> {
        let c = self.client(client)?;
        docker::connect_at(&self.docker, &self.network.name, &c.container, c.ip).await
    }

    async fn restart_server(&self) -> Result<()> {
        docker::restart(&self.docker, &self.server, Duration::from_secs(10)).await?;
        self.await_healthy().await
    }

    async fn kill_server(&self) -> Result<()> {
        docker::kill(&self.docker, &self.server).await?;
        docker::start(&self.docker, &self.server).await?;
        self.await_healthy().await
    }

    async fn write_policy(&self, policy: &str) -> Result<()> {
        docker::upload_file(&self.docker, &self.server, POLICY_DIR, "policy.hujson", policy.as_bytes()).await
    }

    async fn server_file(&self, name: &str, content: &str) -> Result<String> {
        docker::upload_file(&self.docker, &self.server, POLICY_DIR, name, content.as_bytes()).await?;
        Ok(format!("{POLICY_DIR}/{name}"))
    }

    fn server_addr(&self) -> SocketAddr {
        SocketAddr::from((self.server_ip, CONTROL_PORT))
    }
}
