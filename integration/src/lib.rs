//! The scenario harness: start the real server in-process on loopback, create users and keys,
//! join real Tailscale clients (the official Go client and tailscale-rs), and wait for things
//! to become true with a message that says what was awaited. `noise_client` is a minimal
//! ts2021 client for tests that must send what a well-behaved client never would. `scenario`
//! is the API scenarios are written against, `scenarios` the scenarios, `in_process` the world
//! that runs them here; `protocol` is what a client is asked and answers, `client` the
//! interface both kinds of client share, `go_node` the official client (also run by `gonode`)
//! and `node` the supervised tailscale-rs one (also run by `tsnode`); `admin` serves the
//! protocol on a client program's admin port.

pub mod admin;
pub mod client;
pub mod control_client;
pub mod derp_client;
pub mod go_node;
pub mod http;
pub mod in_process;
pub mod node;
pub mod noise_client;
pub mod protocol;
pub mod scenario;
pub mod scenarios;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use headscale::app::Running;
use headscale::config::Config;

/// Installs the process-wide TLS provider and a log subscriber once (`RUST_LOG` filters).
pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settings a scenario may change before the server starts.
#[derive(Debug, Clone)]
pub struct Options {
    pub ephemeral_timeout: Duration,
    /// Run on this PostgreSQL database instead of SQLite in the server's directory.
    pub postgres: Option<headscale::config::Postgres>,
    /// Configuration keys as `HEADSCALE_*` variables would set them.
    pub config: Vec<(&'static str, &'static str)>,
    /// A DERP map file ([`DERP_MAP_FILE`] in the server's directory) given as `derp.paths`
    /// and read again every second.
    pub derp_map: Option<&'static str>,
}

/// The name of a scenario's DERP map file, where the world keeps the server's files
/// (`World::server_file` replaces it).
pub const DERP_MAP_FILE: &str = "derp.yaml";

impl Default for Options {
    fn default() -> Self {
        Options { ephemeral_timeout: Duration::from_secs(120), postgres: None, config: Vec::new(), derp_map: None }
    }
}

impl Options {
    /// The defaults, on a fresh database of this process's throwaway PostgreSQL cluster;
    /// `None` when `HEADSCALE_TEST_POSTGRES=skip`.
    pub fn on_postgres() -> Option<Options> {
        let cluster = test_postgres::cluster()?;
        let postgres = headscale::config::Postgres {
            host: "127.0.0.1".into(),
            port: cluster.port(),
            name: cluster.create_database(),
            user: test_postgres::USER.into(),
            pass: test_postgres::PASSWORD.into(),
            ..Default::default()
        };
        Some(Options { postgres: Some(postgres), ..Options::default() })
    }
}

/// A server running in this process on 127.0.0.1, with its files in a temporary directory.
pub struct TestServer {
    pub running: Running,
    pub config: Config,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on fresh ports.
    pub async fn start(opts: Options) -> Result<TestServer> {
        Self::start_with_policy(opts, None).await
    }

    /// Starts a server on fresh ports with a policy (HuJSON) as `policy.path`.
    pub async fn start_with_policy(opts: Options, policy: Option<&str>) -> Result<TestServer> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut config = test_config(&dir, "127.0.0.1:0", "127.0.0.1:0", &opts)?;
        if let Some(policy) = policy {
            let path = dir.join("policy.hujson");
            std::fs::write(&path, policy).with_context(|| format!("writing {}", path.display()))?;
            config.policy.path = path.display().to_string();
        }
        let mut s = Self::start_with(config, dir).await?;
        s._tmp = Some(tmp);
        Ok(s)
    }

    async fn start_with(config: Config, dir: PathBuf) -> Result<TestServer> {
        let running = headscale::app::start(config.clone()).await.context("starting the server")?;
        let mut config = config;
        config.listen_addr = running.listen_addr.to_string();
        config.server_url = format!("http://{}", running.listen_addr);
        if let Some(a) = running.derp_tls_addr {
            config.derp.server.tls_listen_addr = a.to_string();
        }
        if let Some(a) = running.stun_addr {
            config.derp.server.stun_listen_addr = a.to_string();
        }
        Ok(TestServer { running, config, dir, _tmp: None })
    }

    /// Stops the server and starts it again on the same ports, database and keys.
    pub async fn restart(self) -> Result<TestServer> {
        self.restart_after(|_| Ok(())).await
    }

    /// Stops the server, runs `change` on its directory (its database, keys and files), and
    /// starts it again on the same ports.
    pub async fn restart_after(self, change: impl FnOnce(&Path) -> Result<()>) -> Result<TestServer> {
        let TestServer { running, config, dir, _tmp } = self;
        running.stop().await;
        change(&dir)?;
        let mut s = Self::start_with(config, dir).await?;
        s._tmp = _tmp;
        Ok(s)
    }

    /// The directory holding the database, keys and socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The control URL clients use.
    pub fn url(&self) -> url::Url {
        format!("http://{}", self.running.listen_addr).parse().expect("a socket address makes a URL")
    }

    /// The server state, for assertions.
    pub fn state(&self) -> &std::sync::Arc<headscale::state::State> {
        &self.running.state
    }

    /// Runs a `headscale` CLI command against this server, through the same code as the
    /// binary (the admin API on the local socket), and returns what it prints.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        use clap::Parser;
        let cli = headscale::cli::Cli::try_parse_from(std::iter::once("headscale").chain(args.iter().copied()))?;
        Ok(headscale::cli::client_command_output(&cli, &self.config).await?)
    }

    /// Creates a user with `headscale users create` and returns its id.
    pub async fn create_user(&self, name: &str) -> Result<u64> {
        let out: serde_json::Value = serde_json::from_str(&self.cli(&["users", "create", name, "-o", "json"]).await?)?;
        out["id"].as_u64().context("user id in CLI output")
    }

    /// Creates a pre-auth key with `headscale preauthkeys create` and returns its full text.
    pub async fn auth_key(&self, user: u64, reusable: bool, ephemeral: bool) -> Result<String> {
        let user = user.to_string();
        let mut args = vec!["preauthkeys", "create", "-u", &user, "-o", "json"];
        if reusable {
            args.push("--reusable");
        }
        if ephemeral {
            args.push("--ephemeral");
        }
        let out: serde_json::Value = serde_json::from_str(&self.cli(&args).await?)?;
        Ok(out["key"].as_str().context("key in CLI output")?.to_string())
    }

    /// Completes an interactive registration with `headscale auth register`.
    pub async fn auth_register(&self, auth_id: &str, user: &str) -> Result<String> {
        self.cli(&["auth", "register", "--auth-id", auth_id, "--user", user]).await
    }

    /// A client configuration for this server; keys persist in `key_file` if given.
    pub async fn client_config(&self, hostname: &str, key_file: Option<&Path>) -> Result<tailscale::Config> {
        let mut c = match key_file {
            Some(p) => tailscale::Config::default_with_key_file(p).await?,
            None => tailscale::Config::default(),
        };
        c.control_server_url = self.url();
        c.requested_hostname = Some(hostname.to_string());
        Ok(c)
    }

    /// Joins a real client with an auth key and waits for its address.
    pub async fn join(&self, hostname: &str, key: &str) -> Result<tailscale::Device> {
        let cfg = self.client_config(hostname, None).await?;
        join_with(&cfg, Some(key.to_string())).await
    }
}

/// Starts a client and waits until it holds its tailnet address.
pub async fn join_with(cfg: &tailscale::Config, key: Option<String>) -> Result<tailscale::Device> {
    let dev = tokio::time::timeout(Duration::from_secs(30), tailscale::Device::new(cfg, key))
        .await
        .context("Device::new did not return")??;
    tokio::time::timeout(Duration::from_secs(30), dev.ipv4_addr())
        .await
        .context("the client never got its address")??;
    Ok(dev)
}

/// The configuration of a test server rooted in `dir`.
pub fn test_config(dir: &Path, listen: &str, derp_tls: &str, opts: &Options) -> Result<Config> {
    let mut c = Config::embedded(dir);
    c.server_url = format!("http://{listen}");
    c.listen_addr = listen.to_string();
    c.derp.server.tls_listen_addr = derp_tls.to_string();
    c.derp.server.stun_listen_addr = "127.0.0.1:0".into();
    c.metrics_listen_addr = "127.0.0.1:0".into();
    c.node.ephemeral.inactivity_timeout = opts.ephemeral_timeout;
    if let Some(postgres) = &opts.postgres {
        c.database.kind = "postgres".into();
        c.database.postgres = postgres.clone();
    }
    if let Some(map) = opts.derp_map {
        let path = dir.join(DERP_MAP_FILE);
        std::fs::write(&path, map).with_context(|| format!("writing {}", path.display()))?;
        c.derp.paths = vec![path];
        c.derp.auto_update_enabled = true;
        c.derp.update_frequency = Duration::from_secs(1);
    }
    if opts.config.is_empty() {
        return Ok(c);
    }
    let mut tree = serde_yaml::to_value(&c).context("the test configuration as a tree")?;
    let vars = opts.config.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    headscale::config::apply_env(&mut tree, vars).context("applying the scenario's configuration")?;
    serde_yaml::from_value(tree).context("the scenario's configuration")
}

/// Waits until `dev` sees a peer named `name` with a home DERP region.
pub async fn await_peer(dev: &tailscale::Device, name: &str) -> Result<tailscale::NodeInfo> {
    eventually(&format!("peer {name} with a home DERP"), Duration::from_secs(30), || async {
        dev.peer_by_name(name).await.ok().flatten().filter(|p| p.derp_region.is_some())
    })
    .await
}
