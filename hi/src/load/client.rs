//! One simulated node, made of tailscale-rs's control client (`ts_control`): its keys, its
//! control connection (TCP without Nagle's delay, `/key`, Noise IK, HTTP/2), registration with a pre-auth key, a
//! streaming map session whose updates are decoded (`decode`) and folded into a checked
//! [`MapView`], and endpoint changes sent as non-streaming map requests, as a real client
//! sends them. There is no data plane. A session runs in its own task; what the coordinator
//! needs of it (the connection, the view, when it last became correct, why it failed) sits
//! behind one mutex per client.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ts_capabilityversion::CapabilityVersion;
use ts_control::client::{
    fetch_control_key, read_challenge_packet, send_map_request, upgrade_ts2021, HttpConn, CONTROL_PROTOCOL_VERSION,
};
use ts_control::{Endpoint, EndpointType, MapRequestBuilder, NodeId};
use ts_http_util::EmptyBody;
use url::Url;

use super::decode::{self, MapUpdate};
use super::view::{Expectation, MapView};

/// Who a client is: its keys and hostname.
pub struct Identity {
    keys: ts_keys::NodeState,
    hostname: String,
}

impl Identity {
    /// Connects to control and registers with `authkey`; returns the connection.
    pub async fn join(&self, url: &Url, authkey: &str) -> Result<HttpConn> {
        let conn = self.connect(url).await?;
        let config = ts_control::Config {
            server_url: url.clone(),
            hostname: Some(self.hostname.clone()),
            client_name: Some("hi load".into()),
            tags: Vec::new(),
            ephemeral: false,
        };
        ts_control::register(&config, url, Some(authkey), None, &self.keys, &conn)
            .await
            .with_context(|| format!("registering {}", self.hostname))?;
        Ok(conn)
    }

    /// Opens a control connection the way `ts_control::connect` does (`/key`, the ts2021
    /// upgrade with the Noise IK handshake, the optional early payload, HTTP/2), from the
    /// same `ts_control` steps, on a socket with `TCP_NODELAY`. tailscale-rs leaves Nagle's
    /// algorithm on, so the second record of a request (its body, after the headers) waits for
    /// the server's delayed ACK, about 40 ms, which would be measured as the server's latency.
    async fn connect(&self, url: &Url) -> Result<HttpConn> {
        let fail = |step: &str, e: &dyn std::fmt::Display| anyhow!("{} {step} at {url}: {e}", self.hostname);
        let host = url.host_str().context("the control URL has no host")?;
        let port = url.port_or_known_default().context("the control URL has no port")?;
        let tcp = TcpStream::connect((host, port)).await.map_err(|e| fail("connecting", &e))?;
        tcp.set_nodelay(true).map_err(|e| fail("setting TCP_NODELAY", &e))?;
        let h1 = ts_http_util::http1::connect::<EmptyBody>(tcp).await.map_err(|e| fail("starting HTTP/1.1", &e))?;
        let server_key = fetch_control_key(url).await.map_err(|e| fail("fetching the server key", &e))?;
        let (handshake, initiation) = ts_control_noise::Handshake::initialize(
            CONTROL_PROTOCOL_VERSION.as_str(),
            &self.keys.machine_keys,
            &server_key,
            CapabilityVersion::CURRENT,
        );
        let noise = upgrade_ts2021(url, &initiation, handshake, &self.keys.machine_keys, h1)
            .await
            .map_err(|e| fail("upgrading to ts2021", &e))?;
        let noise = read_challenge_packet(noise).await.map_err(|e| fail("reading the early payload", &e))?;
        ts_http_util::http2::connect(noise).await.map_err(|e| fail("starting HTTP/2", &e))
    }

    /// A map request with this node's hostname and endpoints.
    fn map_request(&self, endpoints: &[SocketAddr]) -> MapRequestBuilder<'_> {
        let endpoints = endpoints.iter().map(|&endpoint| Endpoint { endpoint, ty: EndpointType::Stun }).collect();
        MapRequestBuilder::new(&self.keys).hostname(&self.hostname).endpoints(endpoints)
    }
}

/// What a client's session task shares with the coordinator.
#[derive(Default)]
struct Shared {
    /// Bumped whenever the client drops its session; an older task may no longer write.
    session: u64,
    conn: Option<HttpConn>,
    view: Option<MapView>,
    /// The expectation revision the map was last found correct for, and since when.
    correct_since: Option<(u64, Instant)>,
    failure: Option<String>,
    /// Map messages received, over all sessions.
    messages: u64,
}

impl Shared {
    fn refresh(&mut self) {
        let Some(view) = &self.view else { return };
        if !view.is_correct() {
            self.correct_since = None;
        } else if self.correct_since.is_none_or(|(revision, _)| revision != view.revision()) {
            self.correct_since = Some((view.revision(), Instant::now()));
        }
    }
}

/// One simulated node.
pub struct Client {
    /// Its position among the clients; it also picks its endpoint addresses.
    pub index: usize,
    /// Its node id, once registered.
    pub node_id: NodeId,
    /// Whether it decodes its map with `ts_control`'s own decoder.
    strict: bool,
    identity: Arc<Identity>,
    /// How many times its endpoints changed.
    endpoint_version: u32,
    shared: Arc<Mutex<Shared>>,
    task: Option<JoinHandle<()>>,
}

impl Client {
    /// A client with fresh keys, named `load-INDEX`; `strict` if it decodes its map with
    /// `ts_control`'s own decoder.
    pub fn new(index: usize, strict: bool) -> Client {
        Client {
            index,
            node_id: 0,
            strict,
            identity: Arc::new(Identity { keys: ts_keys::NodeState::generate(), hostname: format!("load-{index}") }),
            endpoint_version: 0,
            shared: Arc::default(),
            task: None,
        }
    }

    /// Who it is, to register it from another task.
    pub fn identity(&self) -> Arc<Identity> {
        self.identity.clone()
    }

    /// Its node key as the server prints it.
    pub fn node_key(&self) -> String {
        self.identity.keys.node_keys.public.to_string()
    }

    /// The endpoints it announces now.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        vec![endpoint(self.index, self.endpoint_version)]
    }

    /// Keeps the connection it registered on, for its map session.
    pub fn registered(&mut self, conn: HttpConn) {
        self.lock().conn = Some(conn);
    }

    /// Starts its map session: on the connection it holds, or on a new one when `reconnect`
    /// (dropping the old session and connection first).
    pub fn start_session(&mut self, url: &Url, expected: watch::Receiver<Arc<Expectation>>, reconnect: bool) {
        if let Some(old) = self.task.take() {
            old.abort();
        }
        let session = {
            let mut shared = self.lock();
            let reuse = if reconnect { None } else { shared.conn.clone() };
            *shared =
                Shared { session: shared.session + 1, conn: reuse, messages: shared.messages, ..Shared::default() };
            shared.session
        };
        let task = SessionTask {
            url: url.clone(),
            me: self.node_id,
            strict: self.strict,
            identity: self.identity.clone(),
            endpoints: self.endpoints(),
            shared: self.shared.clone(),
            session,
        };
        self.task = Some(tokio::spawn(task.run(expected)));
    }

    /// Moves to the next endpoints; returns them and the request that announces them, a
    /// non-streaming map request on the client's connection (to run in any task).
    pub fn next_endpoints(
        &mut self,
        url: &Url,
    ) -> (Vec<SocketAddr>, impl Future<Output = Result<()>> + Send + 'static) {
        self.endpoint_version += 1;
        let endpoints = self.endpoints();
        let identity = self.identity.clone();
        let conn = self.lock().conn.clone();
        let map_url = url.join("machine/map");
        let sent = endpoints.clone();
        let request = async move {
            let conn = conn.with_context(|| format!("{} has no control connection", identity.hostname))?;
            let request = identity.map_request(&sent).as_request().build();
            let mut body = send_map_request(request, &map_url?, &conn)
                .await
                .map_err(|e| anyhow!("{} announcing endpoints {sent:?}: {e}", identity.hostname))?;
            tokio::io::copy(&mut body, &mut tokio::io::sink())
                .await
                .with_context(|| format!("{} reading the answer to its endpoint update", identity.hostname))?;
            Ok(())
        };
        (endpoints, request)
    }

    /// Since when its map is correct for expectation `revision`, if it is; an error if its
    /// session failed.
    pub fn correct_since(&self, revision: u64) -> Result<Option<Instant>> {
        let shared = self.lock();
        if let Some(failure) = &shared.failure {
            bail!("{}: {failure}", self.name());
        }
        Ok(shared.correct_since.filter(|(r, _)| *r == revision).map(|(_, at)| at))
    }

    /// How many map messages it received so far.
    pub fn messages(&self) -> u64 {
        self.lock().messages
    }

    /// What is wrong with its map, for error messages.
    pub fn describe(&self, expected: &Expectation) -> String {
        let shared = self.lock();
        let what = match &shared.view {
            Some(view) => view.describe(expected),
            None if shared.conn.is_none() => "it is still connecting".into(),
            None => "it has no answer to its streaming map request yet".into(),
        };
        format!("{}: {what}", self.name())
    }

    fn name(&self) -> String {
        format!("client {} ({}, node {})", self.index, self.identity.hostname, self.node_id)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().expect("a session task panicked holding the client state")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The endpoint of client `index` after `version` changes: an address of the benchmarking
/// range 198.18.0.0/15, one per client, and a port per version.
pub fn endpoint(index: usize, version: u32) -> SocketAddr {
    let ip = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + index as u32;
    SocketAddr::from((Ipv4Addr::from(ip), 40000 + (version % 20000) as u16))
}

/// The most clients [`endpoint`] has distinct addresses for.
pub const MAX_CLIENTS: usize = 1 << 17;

/// One map session of one client.
struct SessionTask {
    url: Url,
    me: NodeId,
    strict: bool,
    identity: Arc<Identity>,
    endpoints: Vec<SocketAddr>,
    shared: Arc<Mutex<Shared>>,
    session: u64,
}

impl SessionTask {
    async fn run(self, expected: watch::Receiver<Arc<Expectation>>) {
        if let Err(e) = self.stream(expected).await {
            let mut shared = self.shared.lock().expect("client state");
            if shared.session == self.session {
                shared.failure = Some(format!("{e:#}"));
            }
        }
    }

    /// Runs the session until it is dropped (`Ok`) or fails.
    async fn stream(&self, mut expected: watch::Receiver<Arc<Expectation>>) -> Result<()> {
        let held = self.shared.lock().expect("client state").conn.clone();
        let conn = match held {
            Some(conn) => conn,
            None => {
                let conn = self.identity.connect(&self.url).await?;
                let mut shared = self.shared.lock().expect("client state");
                if shared.session != self.session {
                    return Ok(());
                }
                shared.conn = Some(conn.clone());
                conn
            }
        };
        let request = self.identity.map_request(&self.endpoints).as_stream().build();
        let reader = send_map_request(request, &self.url.join("machine/map")?, &conn)
            .await
            .map_err(|e| anyhow!("sending its streaming map request: {e}"))?;
        drop(conn);
        let mut updates = decode::updates(reader, self.strict);
        let mut current = expected.borrow_and_update().clone();
        if !self.with(|s| s.view = Some(MapView::new(self.me, &current))) {
            return Ok(());
        }
        loop {
            tokio::select! {
                update = updates.next() => {
                    let Some(update) = update else {
                        bail!("its map stream ended (closed by the server, or a MapResponse ts_control could not decode)");
                    };
                    if !self.fold(update?, &current) {
                        return Ok(());
                    }
                }
                changed = expected.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    current = expected.borrow_and_update().clone();
                    let revised = self.with(|s| {
                        if let Some(view) = &mut s.view {
                            view.expect(&current);
                        }
                    });
                    if !revised {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn fold(&self, update: MapUpdate, expected: &Expectation) -> bool {
        self.with(|s| {
            s.messages += 1;
            if let Some(view) = &mut s.view {
                view.apply(update, expected);
            }
        })
    }

    /// Changes the shared state and refreshes its verdict; false if this session was dropped.
    fn with(&self, change: impl FnOnce(&mut Shared)) -> bool {
        let mut shared = self.shared.lock().expect("client state");
        if shared.session != self.session {
            return false;
        }
        change(&mut shared);
        shared.refresh();
        true
    }
}
