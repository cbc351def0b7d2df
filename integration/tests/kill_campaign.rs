//! The SIGKILL campaign: the server runs in a process of its own (this test program run again
//! as `server_process`), while three writers keep it busy — registrations over ts2021 with a
//! pre-auth key, `users create` through the CLI on the local socket, and `POST /api/v1/user`
//! with an API key. At a random moment the process is killed with SIGKILL, mid-write more
//! often than not, and started again on the same files. At the end every write the server
//! acknowledged must be there: a node for each registration answered `MachineAuthorized`, a
//! user for each CLI and REST creation answered as done.
//!
//! It runs on SQLite and on the throwaway PostgreSQL cluster (which is never killed).
//! `cargo test -p integration --test kill_campaign` kills the server 25 times on each; the long
//! form sets the number: `HEADSCALE_TEST_KILLS=200 cargo test -p integration --test kill_campaign -- --nocapture`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use headscale::cli::{client_command_output, Cli};
use headscale::config::Config;
use headscale::tailcfg::{NodeKey, PrivateKey};
use integration::noise_client::NoiseClient;
use integration::{init, test_config, Options};
use rand::Rng;
use serde_json::Value;

/// Set in the server process: the path of its config file.
const SERVER_CONFIG: &str = "HEADSCALE_KILL_CAMPAIGN_CONFIG";
/// The number of kills, when not the default.
const KILLS: &str = "HEADSCALE_TEST_KILLS";
const DEFAULT_KILLS: usize = 25;

/// The server, when this program runs as the campaign's server process; otherwise nothing.
#[test]
fn server_process() {
    let Some(path) = std::env::var_os(SERVER_CONFIG) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let (config, _) = Config::load(Some(Path::new(&path))).expect("the campaign's config");
        let _running = headscale::app::start(config).await.expect("the server starts");
        std::future::pending::<()>().await;
    });
}

/// What the server acknowledged, by kind.
#[derive(Default)]
struct Acknowledged {
    nodes: Mutex<BTreeSet<String>>,
    cli_users: Mutex<BTreeSet<String>>,
    api_users: Mutex<BTreeSet<String>>,
}

/// The writers' shared state for one life of the server.
struct Writers {
    addr: SocketAddr,
    config: Config,
    auth_key: String,
    api_key: String,
    acked: Arc<Acknowledged>,
    names: Arc<AtomicU64>,
    /// Writes sent and not yet answered.
    in_flight: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Writers {
    fn name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.names.fetch_add(1, Ordering::Relaxed))
    }

    /// One registration of a new machine; its node key when the server authorized it.
    async fn register(&self) -> Result<Option<String>> {
        let node = NodeKey(PrivateKey::generate().public()).to_string();
        let mut channel = NoiseClient::connect(self.addr, &PrivateKey::generate()).await?;
        let body = format!(r#"{{"Version":130,"NodeKey":"{node}","Auth":{{"AuthKey":"{}"}}}}"#, self.auth_key);
        let answer = channel.post("/machine/register", body).await?;
        if !answer.status().is_success() {
            return Ok(None);
        }
        let bytes = http_body_util::BodyExt::collect(answer.into_body()).await?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes)?;
        Ok((v["MachineAuthorized"] == true).then_some(node))
    }

    /// `headscale users create NAME` through the CLI's own code, on the local socket.
    async fn cli_user(&self, name: &str) -> Result<bool> {
        let cli = Cli::try_parse_from(["headscale", "users", "create", name])?;
        Ok(client_command_output(&cli, &self.config).await.is_ok())
    }

    /// `POST /api/v1/user` with the API key.
    async fn api_user(&self, name: &str) -> Result<bool> {
        let bearer = format!("Bearer {}", self.api_key);
        let body = serde_json::json!({ "name": name }).to_string();
        let headers = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
        let answer = integration::http::request(self.addr, "POST", "/api/v1/user", &headers, &body).await?;
        Ok(answer.status == 200)
    }

    /// Writes of one kind until told to stop, recording what was acknowledged.
    async fn run(self: Arc<Self>, kind: usize) {
        while !self.stop.load(Ordering::Relaxed) {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            match kind {
                0 => {
                    if let Ok(Some(node)) = self.register().await {
                        self.acked.nodes.lock().unwrap().insert(node);
                    }
                }
                1 => {
                    let name = self.name("cli");
                    if let Ok(true) = self.cli_user(&name).await {
                        self.acked.cli_users.lock().unwrap().insert(name);
                    }
                }
                _ => {
                    let name = self.name("rest");
                    if let Ok(true) = self.api_user(&name).await {
                        self.acked.api_users.lock().unwrap().insert(name);
                    }
                }
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Starts the server process on `config_path` and waits until it answers `/health`.
async fn start_server(config_path: &Path, addr: SocketAddr, log: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "server_process", "--nocapture", "--test-threads=1"])
        .env(SERVER_CONFIG, config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the server process")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = integration::http::get(addr, "/health").await {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server process exited with {status} before it served");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the server did not answer /health within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a CLI command through the CLI's code and returns what it printed.
async fn cli(config: &Config, args: &[&str]) -> Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("headscale").chain(args.iter().copied()))?;
    Ok(client_command_output(&cli, config).await?)
}

/// The values of `field` in a JSON list the CLI printed (`null` for none).
fn listed(json: &str, field: &str) -> Result<BTreeSet<String>> {
    let v: Value = serde_json::from_str(json).with_context(|| format!("the CLI printed {json}"))?;
    Ok(v.as_array().into_iter().flatten().filter_map(|e| e[field].as_str().map(str::to_string)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() -> Result<()> {
    campaign("SQLite", Options::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_on_postgres() -> Result<()> {
    match Options::on_postgres() {
        Some(options) => campaign("PostgreSQL", options).await,
        None => {
            eprintln!("skipped: HEADSCALE_TEST_POSTGRES=skip");
            Ok(())
        }
    }
}

/// Kills the server on `engine` as many times as asked, then checks every acknowledged write.
async fn campaign(engine: &str, options: Options) -> Result<()> {
    init();
    let kills: usize = std::env::var(KILLS).ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_KILLS);
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = test_config(dir.path(), &addr.to_string(), "127.0.0.1:0", &options)?;
    let config_path: PathBuf = dir.path().join("config.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config)?)?;
    let log = dir.path().join("server.log");

    let mut server = start_server(&config_path, addr, &log).await?;
    cli(&config, &["users", "create", "campaign"]).await?;
    let key: Value =
        serde_json::from_str(&cli(&config, &["preauthkeys", "create", "-u", "1", "--reusable", "-o", "json"]).await?)?;
    let auth_key = key["key"].as_str().context("the pre-auth key")?.to_string();
    let api_key: String = serde_json::from_str(&cli(&config, &["apikeys", "create", "-o", "json"]).await?)?;

    let acked = Arc::new(Acknowledged::default());
    let names = Arc::new(AtomicU64::new(0));
    let (mut mid_write, started, mut starting) = (0, Instant::now(), Duration::ZERO);
    for round in 0..kills {
        if round > 0 {
            let t = Instant::now();
            server = start_server(&config_path, addr, &log).await.with_context(|| format!("restart {round}"))?;
            starting += t.elapsed();
        }
        let writers = Arc::new(Writers {
            addr,
            config: config.clone(),
            auth_key: auth_key.clone(),
            api_key: api_key.clone(),
            acked: acked.clone(),
            names: names.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let tasks: Vec<_> = (0..3).map(|kind| tokio::spawn(writers.clone().run(kind))).collect();
        let life = Duration::from_millis(rand::thread_rng().gen_range(30..400));
        tokio::time::sleep(life).await;
        mid_write += writers.in_flight.load(Ordering::SeqCst);
        server.kill().context("SIGKILL")?;
        server.wait()?;
        writers.stop.store(true, Ordering::Relaxed);
        // A write cut off by the kill fails at once, except the CLI's, which retries its
        // socket for seconds: nothing can be acknowledged any more, so it is stopped.
        for mut t in tasks {
            if tokio::time::timeout(Duration::from_millis(500), &mut t).await.is_err() {
                t.abort();
            }
        }
    }

    let mut server = start_server(&config_path, addr, &log).await?;
    let users = listed(&cli(&config, &["users", "list", "-o", "json"]).await?, "name")?;
    let nodes = listed(&cli(&config, &["nodes", "list", "-o", "json"]).await?, "node_key")?;
    server.kill()?;
    server.wait()?;

    let (acked_nodes, cli_users, api_users) = (
        acked.nodes.lock().unwrap().clone(),
        acked.cli_users.lock().unwrap().clone(),
        acked.api_users.lock().unwrap().clone(),
    );
    let lost_nodes: Vec<_> = acked_nodes.difference(&nodes).collect();
    let lost_users: Vec<_> = cli_users.union(&api_users).filter(|u| !users.contains(*u)).collect();
    eprintln!(
        "kill campaign on {engine}: {kills} kills in {:.1?} (restarts {:.1?} of it; {mid_write} writes in flight at the \
         kills); acknowledged: {} registrations, {} CLI users, {} REST users; lost: {} nodes, {} users",
        started.elapsed(),
        starting,
        acked_nodes.len(),
        cli_users.len(),
        api_users.len(),
        lost_nodes.len(),
        lost_users.len()
    );
    ensure!(lost_nodes.is_empty(), "acknowledged registrations lost after SIGKILL: {lost_nodes:?}");
    ensure!(lost_users.is_empty(), "acknowledged users lost after SIGKILL: {lost_users:?}");
    ensure!(
        !acked_nodes.is_empty() && !cli_users.is_empty() && !api_users.is_empty(),
        "some kind of write was never acknowledged: the campaign proved nothing for it"
    );
    Ok(())
}
