//! A bare Tailscale control client made of tailscale-rs's `ts_control` (Noise, HTTP/2,
//! registration, a streaming map session; no data plane), for what the full client cannot do
//! in tests: announce subnet and exit routes in its Hostinfo, and ask for tags as it registers
//! (tailscale-rs 0.6.1 keeps `Config::tags` out of its registration requests). The map stream is
//! folded into a peer table that tests wait on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures_util::StreamExt;
use ipnet::IpNet;
use tokio::task::JoinHandle;
use ts_control::client::{map_stream, send_map_request, HttpConn};
use ts_control::{MapRequestBuilder, Node, NodeId, PeerUpdate};
use ts_control_serde::{HostInfo, RegisterAuth, RegisterRequest, RegisterResponse};
use ts_http_util::{ClientExt, ResponseExt};
use url::Url;

use crate::eventually;

/// What the server answered to a registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterAnswer {
    pub authorized: bool,
    pub auth_url: String,
    pub error: String,
}

/// One node driven through `ts_control`.
pub struct ControlClient {
    keys: ts_keys::NodeState,
    hostname: String,
    url: Url,
    peers: Arc<Mutex<BTreeMap<NodeId, Node>>>,
    session: Option<JoinHandle<()>>,
}

impl ControlClient {
    /// Registers a new node named `hostname` at `url` with a pre-auth key.
    pub async fn join(url: &Url, hostname: &str, authkey: &str) -> Result<ControlClient> {
        let client = ControlClient::new(url, hostname);
        let conn = client.connect().await?;
        let config = ts_control::Config {
            server_url: url.clone(),
            hostname: Some(hostname.to_string()),
            client_name: Some("integration".into()),
            tags: Vec::new(),
            ephemeral: false,
        };
        ts_control::register(&config, url, Some(authkey), None, &client.keys, &conn)
            .await
            .with_context(|| format!("registering {hostname}"))?;
        Ok(client)
    }

    /// A node named `hostname` at `url` that has not registered yet.
    pub fn new(url: &Url, hostname: &str) -> ControlClient {
        ControlClient {
            keys: ts_keys::NodeState::generate(),
            hostname: hostname.to_string(),
            url: url.clone(),
            peers: Arc::default(),
            session: None,
        }
    }

    /// Sends a registration request that asks for `tags` (as `tailscale up --advertise-tags`
    /// does), with a pre-auth key, or as the follow-up of an interactive registration, or with
    /// neither to start one; returns the server's answer.
    pub async fn register_requesting(
        &self,
        authkey: Option<&str>,
        followup: Option<&str>,
        tags: &[&str],
    ) -> Result<RegisterAnswer> {
        let conn = self.connect().await?;
        let request = RegisterRequest {
            version: ts_capabilityversion::CapabilityVersion::CURRENT,
            node_key: self.keys.node_keys.public,
            hostinfo: HostInfo {
                hostname: Some(&self.hostname),
                request_tags: (!tags.is_empty()).then(|| tags.to_vec()),
                ..Default::default()
            },
            auth: authkey.map(RegisterAuth::from),
            followup: followup.map(Url::parse).transpose()?,
            ..Default::default()
        };
        let body = bytes::Bytes::from(serde_json::to_vec(&request)?);
        let response = conn
            .post(&self.url.join("machine/register")?, [], body.into())
            .await
            .map_err(|e| anyhow!("{} registering: {e}", self.hostname))?;
        let status = response.status();
        let body = response.collect_bytes().await.map_err(|e| anyhow!("reading the answer: {e}"))?;
        anyhow::ensure!(status.is_success(), "registration answered {status}: {}", String::from_utf8_lossy(&body));
        let answer: RegisterResponse<'_> = serde_json::from_slice(&body).context("parsing the registration answer")?;
        Ok(RegisterAnswer {
            authorized: answer.machine_authorized,
            auth_url: answer.auth_url.to_string(),
            error: answer.error.to_string(),
        })
    }

    async fn connect(&self) -> Result<HttpConn> {
        ts_control::connect(&self.url, &self.keys.machine_keys)
            .await
            .map_err(|e| anyhow!("{} connecting to {}: {e}", self.hostname, self.url))
    }

    /// Opens a streaming map session on a new connection, announcing `routes`; the node is
    /// online until [`ControlClient::go_offline`].
    pub async fn go_online(&mut self, routes: &[IpNet]) -> Result<()> {
        self.go_offline();
        let conn = self.connect().await?;
        let mut request = MapRequestBuilder::new(&self.keys).hostname(&self.hostname).as_stream().build();
        if let Some(h) = request.host_info.as_mut() {
            h.routable_ips = Some(routes.to_vec());
        }
        let map_url = self.url.join("machine/map")?;
        let reader = send_map_request(request, &map_url, &conn).await.map_err(|e| anyhow!("map request: {e}"))?;
        let peers = self.peers.clone();
        self.session = Some(tokio::spawn(async move {
            let _conn = conn; // the session lives as long as its connection
            let mut updates = std::pin::pin!(map_stream(reader));
            while let Some(update) = updates.next().await {
                let mut table = peers.lock().expect("peer table");
                match update.peer_update {
                    Some(PeerUpdate::Full(all)) => *table = all.into_iter().map(|n| (n.id, n)).collect(),
                    Some(PeerUpdate::Delta { patch, upsert, remove }) => {
                        for id in remove {
                            table.remove(&id);
                        }
                        for n in upsert {
                            table.insert(n.id, n);
                        }
                        for p in patch {
                            if let Some(n) = table.get_mut(&p.id) {
                                n.apply_update(&p);
                            }
                        }
                    }
                    None => {}
                }
            }
        }));
        Ok(())
    }

    /// Ends the map session and closes its connection, as a client that goes away.
    pub fn go_offline(&mut self) {
        if let Some(task) = self.session.take() {
            task.abort();
        }
    }

    /// The routes this node may send to the peer named `hostname` (its `AllowedIPs` beyond
    /// its own addresses), if the peer is in its map.
    pub fn routes_via(&self, hostname: &str) -> Option<Vec<IpNet>> {
        let table = self.peers.lock().expect("peer table");
        let peer = table.values().find(|n| n.hostname == hostname)?;
        Some(peer.accepted_routes.iter().filter(|r| r.prefix_len() < r.max_prefix_len()).copied().collect())
    }

    /// Waits until the routes via `hostname` satisfy `ok`, described by `what`.
    pub async fn await_routes(&self, hostname: &str, what: &str, ok: impl Fn(&[IpNet]) -> bool) -> Result<Vec<IpNet>> {
        eventually(&format!("{} to see {hostname} {what}", self.hostname), Duration::from_secs(10), || async {
            self.routes_via(hostname).filter(|r| ok(r))
        })
        .await
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        self.go_offline();
    }
}
