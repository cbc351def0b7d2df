//! Wiring: loads keys and the database, builds `State`, binds the listeners (HTTP, DERP over
//! TLS, STUN, the local gRPC socket, remote gRPC, metrics), starts the background jobs, and
//! stops them all on shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::control::Control;
use crate::db::{Db, DbError, Schema};
use crate::derp::{self, DerpServer};
use crate::derp_map::{Bound, Sources};
use crate::mapper::MapContext;
use crate::router::Router;
use crate::state::{Change, State, StateError};
use crate::tailcfg::{NodeKey, PrivateKey};

/// Start-up failed; the message names what and where.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    #[error("TLS for the embedded DERP server: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Grpc(#[from] crate::grpc::GrpcError),
    #[error(transparent)]
    Certificate(#[from] crate::tls::CertError),
    #[error(transparent)]
    DerpMap(#[from] crate::derp_map::DerpMapError),
}

/// Reads a `privkey:<hex>` key file, or creates one (mode 0600) if it does not exist.
pub fn load_or_generate_key(path: &Path) -> Result<PrivateKey, AppError> {
    let err = |message: String| AppError::KeyFile { path: path.display().to_string(), message };
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::parse(text.trim()).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory: {e}")))?;
            }
            let key = PrivateKey::generate();
            write_private(path, &key.to_string()).map_err(|e| err(format!("cannot write: {e}")))?;
            tracing::info!(path = %path.display(), "generated a new private key");
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes a new key file so that a crash never leaves a partial one: the key goes to a
/// temporary file beside it, is synced, and is linked into place (never replacing a file
/// that appeared meanwhile), and the directory is synced.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&temporary, path)
    })();
    let _ = std::fs::remove_file(&temporary);
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// How long start-up keeps trying to reach the database.
const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

/// Opens the configured database at start-up. While it cannot be reached (PostgreSQL still
/// starting, or the network not up yet) it tries again, with growing pauses and a warning
/// each time, for `DATABASE_PATIENCE`; other failures end start-up at once.
async fn open_database_patiently(config: &Config) -> Result<Db, AppError> {
    let deadline = tokio::time::Instant::now() + DATABASE_PATIENCE;
    let mut pause = Duration::from_millis(500);
    loop {
        let database = config.database.clone();
        let opened = tokio::task::spawn_blocking(move || Db::open_configured(&database))
            .await
            .map_err(|_| DbError::Cancelled)?;
        match opened {
            Err(e) if e.is_unreachable() && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, retry_in = ?pause, "the database is not reachable yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
            Ok(db) => {
                tracing::info!(engine = %db.engine(), "database ready");
                return Ok(db);
            }
        }
    }
}

/// Checks everything `serve` would need, without listening and without writing anything
/// (`headscale configtest`): the settings, the key files that exist, and the database's
/// schema. Returns what start-up would do besides serving (keys to generate, a database to
/// create or migrate), one sentence each.
pub fn check(config: &Config) -> Result<Vec<String>, AppError> {
    reject_unsupported(config)?;
    crate::grpc::parse_permission(&config.unix_socket_permission)?;
    let mut notes = crate::config::notices::warnings(config);
    notes.extend(crate::grpc::remote_skipped(config));
    let mut key = |what: &str, path: &Path| -> Result<(), AppError> {
        match std::fs::read_to_string(path) {
            Ok(text) => PrivateKey::parse(text.trim())
                .map(drop)
                .map_err(|e| AppError::KeyFile { path: path.display().to_string(), message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                notes.push(format!("{what} {} does not exist; serve will generate it", path.display()));
                Ok(())
            }
            Err(e) => Err(AppError::KeyFile { path: path.display().to_string(), message: e.to_string() }),
        }
    };
    key("noise.private_key_path", &config.noise.private_key_path)?;
    if config.derp.server.enabled {
        key("derp.server.private_key_path", &config.derp.server.private_key_path)?;
    }
    match Db::inspect_configured(&config.database)? {
        None => notes.push(format!(
            "the database {} does not exist; serve will create it",
            config.database.sqlite.path.display()
        )),
        Some(Schema::Behind { found, latest }) => {
            notes.push(format!("the database schema is at version {found}; serve will migrate it to {latest}"))
        }
        Some(Schema::Headscale { last_migration }) => notes.push(format!(
            "the database is Headscale's (its last migration is {last_migration}); serve will take it over in \
             place, keeping users, nodes, keys and the policy, after copying an SQLite file beside itself"
        )),
        Some(Schema::Current) => {}
    }
    Ok(notes)
}

/// Refuses settings this version cannot honour, rather than silently ignoring them.
fn reject_unsupported(config: &Config) -> Result<(), AppError> {
    if !config.tls_letsencrypt_hostname.is_empty() {
        return Err(AppError::Unsupported(
            "tls_letsencrypt_hostname is not supported; give a certificate with tls_cert_path and tls_key_path, or terminate TLS in a proxy".into(),
        ));
    }
    Ok(())
}

/// How long the listeners and jobs get to finish once asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running server: its bound addresses and a handle to stop it.
pub struct Running {
    pub state: Arc<State>,
    pub listen_addr: SocketAddr,
    pub derp_tls_addr: Option<SocketAddr>,
    pub stun_addr: Option<SocketAddr>,
    /// The remote gRPC listener's address, when `grpc_listen_addr` is set.
    pub grpc_addr: Option<SocketAddr>,
    /// The metrics listener's address, when `metrics_listen_addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub derp: Option<Arc<DerpServer>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// What Headscale reloads on SIGHUP (`systemctl reload`): the policy file, when the
    /// policy comes from one. Never stops the server.
    pub async fn reload(&self) {
        if self.state.has_policy_file() {
            self.state.reload_policy_file_logged().await;
        } else {
            tracing::info!("SIGHUP: nothing to reload (the policy does not come from a file)");
        }
    }

    /// Stops every listener and job: each is asked to stop and given until [`STOP_GRACE`] to
    /// finish (the local socket removes its file, gRPC answers the calls in flight), then
    /// stopped outright.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
        self.state.flush_reported().await;
    }
}

async fn bind_tcp(what: &'static str, addr: &str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr).await.map_err(|source| AppError::Bind { what, addr: addr.to_string(), source })
}

/// Starts the server described by `config`.
pub async fn start(mut config: Config) -> Result<Running, AppError> {
    reject_unsupported(&config)?;
    if !config.derp.urls.is_empty() || !config.derp.paths.is_empty() {
        tracing::warn!(
            "derp.urls and derp.paths are not read by this version; only the embedded DERP region is served"
        );
    }
    if !config.oidc.is_null() {
        tracing::warn!("OIDC is not supported by this version; use pre-auth keys or `headscale auth register`");
    }
    let noise_key = load_or_generate_key(&config.noise.private_key_path)?;
    // The main listener serves HTTP/1.1 (the ts2021 upgrade, DERP) and HTTP/2 (REST clients).
    let tls = crate::tls::server_config(&config, &[b"h2", b"http/1.1"])?.map(TlsAcceptor::from);
    let listener = bind_tcp("listen_addr", &config.listen_addr).await?;
    let grpc_listener = crate::grpc::bind_tcp(&config).await?;
    let metrics_listener = match config.metrics_listen_addr.as_str() {
        "" => None,
        addr => Some(bind_tcp("metrics_listen_addr", addr).await?),
    };
    let grpc_addr = grpc_listener.as_ref().and_then(|l| l.local_addr().ok());
    let listen_addr = listener.local_addr().map_err(|source| AppError::Bind {
        what: "listen_addr",
        addr: config.listen_addr.clone(),
        source,
    })?;
    fix_server_url_port(&mut config, listen_addr.port());
    let db = open_database_patiently(&config).await?;
    let config = Arc::new(config);
    let state = State::load(config.clone(), db).await?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();

    let d = &config.derp.server;
    let (mut derp_server, mut derp_tls_addr, mut stun_addr) = (None, None, None);
    if d.enabled {
        let key = load_or_generate_key(&d.private_key_path)?;
        let admission: derp::Admission = if d.verify_clients {
            let st = state.clone();
            Arc::new(move |k: &[u8; 32]| st.snapshot().relay_admits(&NodeKey(*k), chrono::Utc::now()))
        } else {
            derp::admit_all()
        };
        let server = Arc::new(DerpServer::new(key.0, admission));
        if !d.tls_listen_addr.is_empty() {
            let l = bind_tcp("derp.server.tls_listen_addr", &d.tls_listen_addr).await?;
            derp_tls_addr = l.local_addr().ok();
            let tls = if d.tls_self_signed {
                Arc::new(crate::tls::self_signed_config(&[config.server_host(), "localhost".into()])?)
            } else {
                crate::tls::server_config(&config, &[])?.ok_or_else(|| {
                    AppError::Unsupported(
                        "derp.server.tls_listen_addr needs derp.server.tls_self_signed: true or a certificate (tls_cert_path, tls_key_path)".into(),
                    )
                })?
            };
            tasks.push(tokio::spawn(derp::serve_tls(l, tls, server.clone(), stopped())));
        }
        let udp = UdpSocket::bind(&d.stun_listen_addr).await.map_err(|source| AppError::Bind {
            what: "derp.server.stun_listen_addr",
            addr: d.stun_listen_addr.clone(),
            source,
        })?;
        stun_addr = udp.local_addr().ok();
        tasks.push(tokio::spawn(derp::serve_stun(udp, stopped())));
        if d.verify_clients {
            tasks.push(tokio::spawn(evict_unknown_derp_clients(state.clone(), server.clone(), stopped())));
        }
        derp_server = Some(server);
    }

    // As in Headscale, a DERP map that cannot be read at start stops start-up.
    let bound = Bound { listen: listen_addr, derp_tls: derp_tls_addr, stun: stun_addr };
    let sources = Sources::from_config(&config, &bound);
    state.set_derp_map(sources.load().await?).await;
    if config.derp.auto_update_enabled {
        let every = config.derp.update_frequency;
        tasks.push(tokio::spawn(crate::derp_map::keep_current(state.clone(), sources, every, stopped())));
    }
    let control = Arc::new(Control { state: state.clone(), noise_key, map: MapContext::from_config(&config) });
    let router = Arc::new(Router { control, derp: derp_server.clone() });
    tasks.push(tokio::spawn(serve_http(listener, tls, router, stopped())));
    tasks.push(tokio::spawn(expiry_ticker(state.clone(), stopped())));
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = metrics_listener {
        tracing::info!(addr = ?metrics_addr, "serving metrics at /metrics");
        tasks.push(tokio::spawn(crate::metrics::serve(l, state.clone(), stopped())));
    }
    tasks.push(tokio::spawn(state.clone().watch_policy_file(stopped())));
    let socket_state = state.clone();
    let socket = config.unix_socket.clone();
    let permission = crate::grpc::parse_permission(&config.unix_socket_permission)?;
    let grpc_stop = stopped();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = crate::grpc::serve_unix(&socket, permission, socket_state, grpc_stop).await {
            tracing::error!(error = %e, path = %socket.display(), "the local API socket stopped");
        }
    }));
    if let Some(l) = grpc_listener {
        let tls = crate::tls::server_config(&config, &[b"h2"])?.map(TlsAcceptor::from);
        tasks.push(tokio::spawn(crate::grpc::serve_tcp(l, tls, state.clone(), stopped())));
    }
    tracing::info!(%listen_addr, derp_tls = ?derp_tls_addr, stun = ?stun_addr, socket = %config.unix_socket.display(), "headscale is serving");
    Ok(Running {
        state,
        listen_addr,
        derp_tls_addr,
        stun_addr,
        grpc_addr,
        metrics_addr,
        derp: derp_server,
        shutdown,
        tasks,
    })
}

/// With `listen_addr` on port 0, the server URL names the port actually bound.
fn fix_server_url_port(config: &mut Config, port: u16) {
    if let Ok(uri) = config.server_url.parse::<http::Uri>() {
        if uri.port_u16() == Some(0) {
            config.server_url = config.server_url.replacen(":0", &format!(":{port}"), 1);
        }
    }
}

/// Serves the main listener, over TLS when the server has a certificate.
async fn serve_http(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Arc<Router>,
    stopped: impl std::future::Future<Output = ()>,
) {
    crate::listen::accept_each(listener, stopped, |tcp, _peer, slot| {
        let _ = tcp.set_nodelay(true);
        let (router, tls) = (router.clone(), tls.clone());
        async move {
            match tls {
                None => serve_connection(tcp, router, slot).await,
                Some(acceptor) => match crate::tls::accept(&acceptor, tcp).await {
                    Ok(stream) => serve_connection(stream, router, slot).await,
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                },
            }
        }
    })
    .await
}

/// Serves HTTP/1.1 (with upgrades) or HTTP/2 on one accepted connection; each request carries
/// the connection's slot, for a handler that upgrades it.
async fn serve_connection(
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    router: Arc<Router>,
    slot: crate::listen::Slot,
) {
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(slot.clone());
        router.clone().route(req)
    });
    if let Err(e) = crate::listen::http_server().serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Closes the DERP connections of node keys that no longer exist (deleted nodes, rotated
/// keys), so admission holds for connections already open, not only for new ones. A node
/// whose key expires (or logs out) keeps a connection it has open, as with Headscale: closing
/// it would only make the client redial into refusals and back off, and come back late
/// when the admin lifts the expiry; a new connection is refused while it is expired.
async fn evict_unknown_derp_clients(
    state: Arc<State>,
    derp: Arc<DerpServer>,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut changes = state.subscribe();
    loop {
        let relevant = tokio::select! {
            _ = &mut stopped => return,
            r = changes.recv() => match r {
                Ok(set) => set.changes.iter().any(|c| matches!(c, Change::Removed(_) | Change::Node { patch: None, .. })),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        if relevant {
            let snap = state.snapshot();
            for key in derp.connected_keys() {
                if snap.node_by_key(&NodeKey(key)).is_none() && derp.disconnect(&key) {
                    tracing::info!(node_key = %NodeKey(key), "closed the DERP connection of a removed node key");
                }
            }
        }
    }
}

/// Every few seconds, republishes nodes whose keys just expired so maps show it.
async fn expiry_ticker(state: Arc<State>, stopped: impl std::future::Future<Output = ()>) {
    tokio::pin!(stopped);
    let mut last = chrono::Utc::now();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now();
        state.publish_expired(last, now).await;
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_key_file_is_whole_private_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys").join("noise_private.key");
        let made = load_or_generate_key(&path).expect("generated");
        assert_eq!(std::fs::metadata(&path).expect("written").permissions().mode() & 0o777, 0o600);
        let again = load_or_generate_key(&path).expect("read back");
        assert_eq!(again.to_string(), made.to_string());
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir")).expect("listed").collect();
        assert_eq!(left.len(), 1, "no temporary file is left beside the key");
    }
}
