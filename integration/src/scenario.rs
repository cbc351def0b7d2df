//! The scenario API: a scenario is written once against [`Tailnet`], which drives a [`World`]
//! — the server in this process with clients on loopback (`cargo test`, see `in_process`), or
//! the server and one container per client on a private Docker network (`hi run`). Users and
//! keys are made with the real `headscale` CLI, clients are real Tailscale clients of the kind
//! the run asks for ([`ClientKind`]: the official Go client or tailscale-rs), and every wait
//! says what it waited for. What a client cannot do is said in the scenario's notes, and a
//! scenario fails if any of its clients tried to reach beyond this machine's server.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub use crate::client::ClientKind;
use crate::eventually;
use crate::protocol::{ClientHealth, Exchange, NodeStatus, PeerStatus, Request};

/// The tailnet port every client echoes TCP and UDP on; it also echoes TCP on the next one.
pub const ECHO_PORT: u16 = 7000;

/// How the server of a scenario is set up before it starts.
#[derive(Debug, Clone, Default)]
pub struct ServerSetup {
    /// `node.ephemeral.inactivity_timeout`; the server's default when `None`.
    pub ephemeral_timeout: Option<Duration>,
    /// A policy file (HuJSON) given to the server as `policy.path`.
    pub policy: Option<&'static str>,
    /// Configuration keys set as the server's `HEADSCALE_*` environment variables, e.g.
    /// `("HEADSCALE_DNS_MAGIC_DNS", "false")`.
    pub config: &'static [(&'static str, &'static str)],
    /// A DERP map file (YAML or JSON) given to the server as `derp.paths`, read again every
    /// second; `World::server_file(DERP_MAP_FILE, …)` replaces it while the server runs.
    pub derp_map: Option<&'static str>,
}

/// A client to start.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Its name in the world, and its hostname unless `hostname` says otherwise.
    pub name: String,
    /// The hostname it registers, when not its name (two clients asking for one hostname).
    pub hostname: Option<String>,
    /// A pre-auth key; without one it waits for interactive approval.
    pub authkey: Option<String>,
    /// Register as an ephemeral node.
    pub ephemeral: bool,
    /// Tags to ask for as it registers (`--advertise-tags`).
    pub tags: Vec<String>,
    /// Which client it runs.
    pub kind: ClientKind,
}

/// The database the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite in the server's directory (the embedded default).
    Sqlite,
    /// PostgreSQL: a throwaway cluster in-process, a container of its own in Docker.
    Postgres,
}

impl Engine {
    /// The short name used in test names and tables.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Why a world could not be made; the runner reports these as skips, not failures.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The world cannot do what the scenario needs.
    #[error("the {world} world cannot {what}")]
    Unsupported { world: &'static str, what: &'static str },
    /// The client cannot do what the scenario needs.
    #[error("the {client} client cannot {what}")]
    ClientCannot { client: ClientKind, what: &'static str },
}

/// Where a scenario runs: the server, its CLI and the clients.
#[async_trait]
pub trait World: Send + Sync {
    /// A short name for messages: "in-process" or "docker".
    fn kind(&self) -> &'static str;
    /// Runs `headscale ARGS` against the server and returns what it printed.
    async fn headscale(&self, args: &[&str]) -> Result<String>;
    /// Starts a client; it registers in the background.
    async fn start_client(&self, spec: &ClientSpec) -> Result<()>;
    /// Stops a client the way a user quits it.
    async fn stop_client(&self, name: &str) -> Result<()>;
    /// Quits a client and starts it again with the same state (keys) and no auth key.
    async fn restart_client(&self, name: &str) -> Result<()>;
    /// Sends a request to a client and returns its JSON answer.
    async fn ask(&self, client: &str, request: &Request) -> Result<Value>;
    /// Cuts a client off the network (its process keeps running).
    async fn disconnect(&self, client: &str) -> Result<()>;
    /// Gives a disconnected client its network back, with the same address.
    async fn reconnect(&self, client: &str) -> Result<()>;
    /// Stops the server and starts it again on the same database and keys.
    async fn restart_server(&self) -> Result<()>;
    /// Kills the server (SIGKILL) and starts it again on the same database and keys.
    async fn kill_server(&self) -> Result<()>;
    /// Replaces the server's policy file (`policy.path`) while it runs.
    async fn write_policy(&self, policy: &str) -> Result<()>;
    /// Puts a file where the server's CLI can read it and returns its path there.
    async fn server_file(&self, name: &str, content: &str) -> Result<String>;
    /// The server's main listener (control, `/derp`), as reachable from this process.
    fn server_addr(&self) -> SocketAddr;
}

/// How a scenario ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything it checked held.
    Passed,
    /// It could not run here; the text says why.
    Skipped(String),
}

/// A scenario's body.
pub type ScenarioFuture = Pin<Box<dyn Future<Output = Result<Verdict>> + Send>>;

/// A named scenario and the server it needs.
pub struct Scenario {
    /// CamelCase, matched by `hi run PATTERN`.
    pub name: &'static str,
    /// One line on what it proves.
    pub about: &'static str,
    /// The server it needs.
    pub setup: ServerSetup,
    /// The clients it cannot run with, and why; it runs with every other.
    pub not_with: &'static [(ClientKind, &'static str)],
    /// Its body.
    pub run: fn(Tailnet) -> ScenarioFuture,
}

impl ClientSpec {
    /// The hostname the client registers.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }
}

impl Scenario {
    /// A scenario on the default server that runs with both clients.
    pub fn new(name: &'static str, about: &'static str, run: fn(Tailnet) -> ScenarioFuture) -> Scenario {
        Scenario { name, about, setup: ServerSetup::default(), not_with: &[], run }
    }

    /// The same on a server set up as `setup` says.
    pub fn setup(self, setup: ServerSetup) -> Scenario {
        Scenario { setup, ..self }
    }

    /// The same on a server with `policy` as its policy file.
    pub fn policy(self, policy: &'static str) -> Scenario {
        self.setup(ServerSetup { policy: Some(policy), ..ServerSetup::default() })
    }

    /// The same, saying which clients it cannot run with and why.
    pub fn not_with(self, not_with: &'static [(ClientKind, &'static str)]) -> Scenario {
        Scenario { not_with, ..self }
    }

    /// Why it cannot run with `kind`, if it cannot.
    pub fn cannot_run_with(&self, kind: ClientKind) -> Option<&'static str> {
        self.not_with.iter().find(|(k, _)| *k == kind).map(|(_, why)| *why)
    }

    /// The clients it runs with.
    pub fn clients(&self) -> Vec<ClientKind> {
        ClientKind::ALL.into_iter().filter(|k| self.cannot_run_with(*k).is_none()).collect()
    }
}

/// Matches `name` against a glob with `*` and `?`, ignoring case.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b) && go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Turns a world error into a skip when it is one of the [`WorldError`]s.
pub fn skip_if_unsupported(err: anyhow::Error) -> Result<Verdict> {
    match err.downcast_ref::<WorldError>() {
        Some(e) => Ok(Verdict::Skipped(e.to_string())),
        None => Err(err),
    }
}

/// [`skip_if_unsupported`] on a scenario's result.
pub fn skip_if_unsupported_result(result: Result<Verdict>) -> Result<Verdict> {
    result.or_else(skip_if_unsupported)
}

/// A pre-auth key as `headscale preauthkeys create -o json` prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthKey {
    /// The key's id (for `preauthkeys expire`).
    pub id: u64,
    /// The full key, as clients use it.
    pub key: String,
}

/// A node as `headscale nodes list -o json` prints it (Headscale's shape: proto field names,
/// empty fields left out, times as `{"seconds", "nanos"}`).
#[derive(Debug, Clone, Deserialize)]
pub struct ServerNode {
    /// The node id (for `nodes expire`, `nodes delete`).
    pub id: u64,
    /// The hostname the node reported.
    #[serde(default)]
    pub name: String,
    /// Its DNS label in the tailnet.
    #[serde(default)]
    pub given_name: String,
    /// Its tailnet addresses.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// Its node key (`nodekey:…`).
    #[serde(default)]
    pub node_key: String,
    /// It has a map session open.
    #[serde(default)]
    pub online: bool,
    /// Its owner; tagged nodes have none.
    pub user: Option<ServerUser>,
    /// When its key expires.
    #[serde(default, deserialize_with = "go_time")]
    pub expiry: Option<chrono::DateTime<chrono::Utc>>,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ServerNode {
    /// Its key has expired.
    pub fn expired(&self) -> bool {
        self.expiry.is_some_and(|e| e <= chrono::Utc::now())
    }
}

/// The owner of a node, as the CLI prints it.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerUser {
    /// The user name.
    pub name: String,
}

/// A time as the CLI prints it: a protobuf `Timestamp` in Go's JSON (`{"seconds", "nanos"}`,
/// zero parts left out).
fn go_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    #[derive(Deserialize)]
    struct Timestamp {
        #[serde(default)]
        seconds: i64,
        #[serde(default)]
        nanos: u32,
    }
    let Some(t) = Option::<Timestamp>::deserialize(d)? else { return Ok(None) };
    chrono::DateTime::from_timestamp(t.seconds, t.nanos)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("time out of range: {} s", t.seconds)))
}

/// Options of `preauthkeys create`.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyOptions {
    /// `--reusable`.
    pub reusable: bool,
    /// `--ephemeral`.
    pub ephemeral: bool,
    /// `--tags`, comma-separated (`tag:a,tag:b`).
    pub tags: Option<&'static str>,
}

/// How long joining, and waiting for a change to reach a node, may take.
pub const SETTLE: Duration = Duration::from_secs(30);

/// What scenarios are written against: typed helpers over a [`World`], starting clients of
/// one kind.
#[derive(Clone)]
pub struct Tailnet {
    world: Arc<dyn World>,
    kind: ClientKind,
    /// What the scenario said of its run (what a client could not check, mostly).
    notes: Arc<Mutex<Vec<String>>>,
    /// The clients started and not stopped.
    running: Arc<Mutex<BTreeSet<String>>>,
    /// Each client's tailnet address as it last said, for reaching one that stopped.
    addresses: Arc<Mutex<BTreeMap<String, Ipv4Addr>>>,
}

impl Tailnet {
    /// Wraps a world; clients started through it run `kind`.
    pub fn new(world: Arc<dyn World>, kind: ClientKind) -> Tailnet {
        Tailnet { world, kind, notes: Arc::default(), running: Arc::default(), addresses: Arc::default() }
    }

    /// The world underneath.
    pub fn world(&self) -> &dyn World {
        self.world.as_ref()
    }

    /// The client this run starts.
    pub fn client(&self) -> ClientKind {
        self.kind
    }

    /// Records something the run's summary must show (e.g. a check this client cannot make).
    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        let mut notes = self.notes.lock().expect("notes lock");
        if !notes.contains(&text) {
            notes.push(text);
        }
    }

    /// What the scenario noted.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }

    /// Fails if any running client tried to reach beyond this machine's server; runners call
    /// it after a scenario passed.
    pub async fn check_contained(&self) -> Result<()> {
        let names: Vec<String> = self.running.lock().expect("running lock").iter().cloned().collect();
        for name in names {
            let health: ClientHealth = self.ask(&name, Request::Health).await?;
            ensure!(
                health.outside.is_empty(),
                "{name} tried to reach beyond its server: {}",
                health.outside.join("; ")
            );
        }
        Ok(())
    }

    /// Runs the `headscale` CLI with `-o json` and parses what it prints.
    pub async fn cli_json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.world.headscale(&all).await?;
        serde_json::from_str(&out)
            .with_context(|| format!("reading the output of `headscale {}`: {out}", args.join(" ")))
    }

    /// Runs a listing command with `-o json`; an empty list prints as `null`, as Headscale's does.
    pub async fn cli_list<T: DeserializeOwned>(&self, args: &[&str]) -> Result<Vec<T>> {
        Ok(self.cli_json::<Option<Vec<T>>>(args).await?.unwrap_or_default())
    }

    /// Creates a user with `headscale users create` and returns its id.
    pub async fn user(&self, name: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct Created {
            id: u64,
        }
        Ok(self.cli_json::<Created>(&["users", "create", name]).await?.id)
    }

    /// Creates a pre-auth key with `headscale preauthkeys create`.
    pub async fn key(&self, user: u64, opts: KeyOptions) -> Result<AuthKey> {
        let user = user.to_string();
        let mut args = vec!["preauthkeys", "create", "-u", &user];
        if opts.reusable {
            args.push("--reusable");
        }
        if opts.ephemeral {
            args.push("--ephemeral");
        }
        if let Some(tags) = opts.tags {
            args.extend(["--tags", tags]);
        }
        self.cli_json(&args).await
    }

    /// The nodes the server knows (`headscale nodes list`).
    pub async fn nodes(&self) -> Result<Vec<ServerNode>> {
        self.cli_list(&["nodes", "list"]).await
    }

    /// The server's record of the node named `name`.
    pub async fn node(&self, name: &str) -> Result<ServerNode> {
        self.nodes()
            .await?
            .into_iter()
            .find(|n| n.given_name == name || n.name == name)
            .with_context(|| format!("the server has no node named {name}"))
    }

    /// Starts a client without waiting for it.
    pub async fn start(&self, name: &str, authkey: Option<&str>, ephemeral: bool) -> Result<()> {
        self.start_with(ClientSpec {
            name: name.into(),
            hostname: None,
            authkey: authkey.map(str::to_string),
            ephemeral,
            tags: Vec::new(),
            kind: self.kind,
        })
        .await
    }

    /// Starts a client as `spec` says, without waiting for it.
    pub async fn start_with(&self, spec: ClientSpec) -> Result<()> {
        self.world.start_client(&spec).await.with_context(|| format!("starting {} client {}", spec.kind, spec.name))?;
        self.running.lock().expect("running lock").insert(spec.name);
        Ok(())
    }

    /// Stops a client the way a user quits it.
    pub async fn stop(&self, name: &str) -> Result<()> {
        self.running.lock().expect("running lock").remove(name);
        self.world.stop_client(name).await.with_context(|| format!("stopping {name}"))
    }

    /// Starts a client with `authkey` and waits until it has its address.
    pub async fn join(&self, name: &str, authkey: &str) -> Result<NodeStatus> {
        self.start(name, Some(authkey), false).await?;
        self.joined(name).await
    }

    /// Waits until a started client is authorized and has its address.
    pub async fn joined(&self, name: &str) -> Result<NodeStatus> {
        eventually(&format!("{name} to be authorized with an address"), SETTLE, || async {
            self.status(name).await.ok().filter(|s| s.authorized && s.ipv4.is_some())
        })
        .await
    }

    /// Sends a request and decodes the answer.
    async fn ask<T: DeserializeOwned>(&self, client: &str, request: Request) -> Result<T> {
        let v = self.world.ask(client, &request).await.with_context(|| format!("asking {client}: {request}"))?;
        serde_json::from_value(v).map_err(|e| anyhow!("{client} answered `{request}` with something unexpected: {e}"))
    }

    /// A client's own state.
    pub async fn status(&self, client: &str) -> Result<NodeStatus> {
        let status: NodeStatus = self.ask(client, Request::Status).await?;
        if let Some(ip) = status.ipv4 {
            self.addresses.lock().expect("addresses lock").insert(client.to_string(), ip);
        }
        Ok(status)
    }

    /// What `client` knows of `peer`.
    pub async fn peer(&self, client: &str, peer: &str) -> Result<Option<PeerStatus>> {
        self.ask(client, Request::Peer(peer.into())).await
    }

    /// Waits until `client` sees `peer` in a state that `ok` accepts, described by `what`.
    pub async fn await_peer(
        &self,
        client: &str,
        peer: &str,
        what: &str,
        ok: impl Fn(&PeerStatus) -> bool,
    ) -> Result<PeerStatus> {
        eventually(&format!("{client} to see {peer} {what}"), SETTLE, || async {
            self.peer(client, peer).await.ok().flatten().filter(|p| ok(p))
        })
        .await
    }

    /// Waits until `client` sees `peer` online with a home DERP region (reachable).
    pub async fn await_reachable(&self, client: &str, peer: &str) -> Result<PeerStatus> {
        self.await_peer(client, peer, "online with a home DERP", |p| p.derp_region.is_some() && p.online != Some(false))
            .await
    }

    /// Waits until `client` no longer has `peer` in its map.
    pub async fn await_gone(&self, client: &str, peer: &str) -> Result<()> {
        eventually(&format!("{client} to drop {peer}"), SETTLE, || async {
            matches!(self.peer(client, peer).await, Ok(None)).then_some(())
        })
        .await
    }

    /// A client's tailnet address; for one that is stopped or cut off, the one it last had.
    async fn ipv4(&self, client: &str) -> Result<Ipv4Addr> {
        let stopped = !self.running.lock().expect("running lock").contains(client);
        let last = self.addresses.lock().expect("addresses lock").get(client).copied();
        if let Some(ip) = last.filter(|_| stopped) {
            return Ok(ip);
        }
        match self.status(client).await {
            Ok(s) => s.ipv4.with_context(|| format!("{client} has no tailnet address")),
            Err(e) => last.ok_or(e),
        }
    }

    /// A TCP echo exchange from `from` to `to` over the tailnet.
    pub async fn tcp(&self, from: &str, to: &str) -> Result<Exchange> {
        self.tcp_port(from, to, ECHO_PORT).await
    }

    /// A TCP echo exchange from `from` to `to`'s `port` (`ECHO_PORT` or the one after it).
    pub async fn tcp_port(&self, from: &str, to: &str, port: u16) -> Result<Exchange> {
        let addr = SocketAddr::from((self.ipv4(to).await?, port));
        self.ask(from, Request::Tcp(addr)).await.with_context(|| format!("TCP from {from} to {to}:{port}"))
    }

    /// A UDP echo exchange from `from` to `to` over the tailnet, where this run's client can
    /// make one; otherwise a note says it was not checked.
    pub async fn udp_if_possible(&self, from: &str, to: &str) -> Result<Option<Exchange>> {
        if !self.kind.has_udp() {
            self.note(format!("UDP not checked: the {} client here has no UDP socket on the tailnet", self.kind));
            return Ok(None);
        }
        self.udp(from, to).await.map(Some)
    }

    /// The whole map as `client` decoded it (the official client only).
    pub async fn netmap(&self, client: &str) -> Result<Value> {
        self.world.ask(client, &Request::NetMap).await.with_context(|| format!("asking {client} for its map"))
    }

    /// The `Node` entry of `peer` in `client`'s map, as the client decoded it (the official
    /// client only); `None` when the client does not have it.
    pub async fn peer_entry(&self, client: &str, peer: &str) -> Result<Option<Value>> {
        let map = self.netmap(client).await?;
        let peers = map["Peers"].as_array().cloned().unwrap_or_default();
        Ok(peers.into_iter().find(|p| {
            p.pointer("/Hostinfo/Hostname").and_then(Value::as_str) == Some(peer)
                || p["Name"].as_str().and_then(|n| n.split('.').next()) == Some(peer)
        }))
    }

    /// A TCP echo exchange from `from` to the node whose MagicDNS name is `name` (the official
    /// client only); fails unless the node `expect` answered.
    pub async fn tcp_name(&self, from: &str, name: &str, expect: &str) -> Result<Exchange> {
        let x: Exchange = self
            .ask(from, Request::TcpName(name.into(), ECHO_PORT))
            .await
            .with_context(|| format!("TCP from {from} to {name}:{ECHO_PORT} by name"))?;
        ensure!(x.answered_by.as_deref() == Some(expect), "{name} reached {:?}, expected {expect}", x.answered_by);
        Ok(x)
    }

    /// A TCP echo exchange from `from` to the node named `name` (the official client only),
    /// whoever answers.
    pub async fn ask_tcp_name(&self, from: &str, name: &str) -> Result<Exchange> {
        self.ask(from, Request::TcpName(name.into(), ECHO_PORT))
            .await
            .with_context(|| format!("TCP from {from} to {name} by name"))
    }

    /// Starts a client with `authkey` that asks for `tags`, without waiting for it.
    pub async fn start_tagged(&self, name: &str, authkey: Option<&str>, tags: &[&str]) -> Result<()> {
        self.start_with(ClientSpec {
            name: name.into(),
            hostname: None,
            authkey: authkey.map(str::to_string),
            ephemeral: false,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            kind: self.kind,
        })
        .await
    }

    /// Quits a client (if it runs) and starts it again with its keys and no auth key.
    pub async fn restart_client(&self, name: &str) -> Result<()> {
        self.world.restart_client(name).await.with_context(|| format!("restarting {name}"))?;
        self.running.lock().expect("running lock").insert(name.to_string());
        Ok(())
    }

    /// A request to the server's REST API (`/api/v1/…`) with `api_key` as its bearer token.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        api_key: Option<&str>,
        body: &str,
    ) -> Result<crate::http::Answer> {
        let auth = api_key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        crate::http::request(self.world.server_addr(), method, path, &headers, body).await
    }

    /// A UDP echo exchange from `from` to `to` over the tailnet.
    pub async fn udp(&self, from: &str, to: &str) -> Result<Exchange> {
        let addr = SocketAddr::from((self.ipv4(to).await?, ECHO_PORT));
        self.ask(from, Request::Udp(addr)).await.with_context(|| format!("UDP from {from} to {to}"))
    }

    /// Checks that `from` cannot reach `to` over TCP.
    pub async fn tcp_fails(&self, from: &str, to: &str) -> Result<()> {
        self.tcp_port_fails(from, to, ECHO_PORT).await
    }

    /// Checks that `from` cannot reach `to`'s `port` over TCP (within [`crate::protocol::PROBE_TIMEOUT`]).
    pub async fn tcp_port_fails(&self, from: &str, to: &str, port: u16) -> Result<()> {
        let addr = SocketAddr::from((self.ipv4(to).await?, port));
        match self.ask::<Exchange>(from, Request::Probe(addr)).await {
            Ok(x) => bail!("{from} reached {to}:{port} over TCP in {:.0} ms, but must not", x.ms),
            Err(_) => Ok(()),
        }
    }

    /// Waits until `from` can no longer reach `to`'s `port` (a policy change reaching both).
    pub async fn await_refused(&self, from: &str, to: &str, port: u16) -> Result<()> {
        eventually(&format!("{from} to be refused on {to}:{port}"), SETTLE, || async {
            self.tcp_port_fails(from, to, port).await.ok()
        })
        .await
    }

    /// Logs `client` in again with `authkey`, keeping its node keys.
    pub async fn login(&self, client: &str, authkey: &str) -> Result<NodeStatus> {
        self.ask(client, Request::Login(authkey.into())).await
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_scenario_names() {
        assert!(glob_match("PingAll*", "PingAllTcpUdp"));
        assert!(glob_match("pingall*", "PingAllTcpUdp"));
        assert!(glob_match("*", "DerpAdmission"));
        assert!(glob_match("PreAuthKey????", "PreAuthKeyOnce"));
        assert!(glob_match("*Key*", "PreAuthKeyExpired"));
        assert!(!glob_match("PingAll", "PingAllTcpUdp"));
        assert!(!glob_match("Acl?", "AclTags"));
    }
}
