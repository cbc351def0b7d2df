//! The `headscale.v1.HeadscaleService` admin API over gRPC: the generated protobuf types, the
//! service backed by [`State`], the local unix-socket listener the CLI talks to (trusted; its
//! clients' `:authority` made acceptable, `authority`), and
//! the remote listener on `grpc_listen_addr` (every request needs an API key).

mod auth;
mod authority;
mod convert;
mod service;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

pub use auth::{authorize, ApiKeyLayer, RequireApiKey};
pub use convert::{timestamp, to_datetime};
pub use service::AdminService;

use crate::config::Config;
use crate::detached::grpc_to_end;
use crate::state::State;

/// The generated `headscale.v1` messages, client and server.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("headscale.v1");
}

/// The encoded `FileDescriptorSet` of the API (with its imports), for tools that need the
/// schema at run time.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/headscale_descriptor.bin"));

/// The local API socket could not be set up or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The socket mode is not an octal number.
    #[error("invalid unix_socket_permission {0:?}: expected an octal mode such as 0770")]
    Permission(String),
    /// A live server already answers on the socket.
    #[error("another headscale server is already listening on {0}")]
    InUse(PathBuf),
    /// The socket or its directory could not be set up.
    #[error("cannot prepare the socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The server stopped with a transport error.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The remote listener could not be bound.
    #[error("cannot listen on {addr} (grpc_listen_addr): {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// Parses an octal file mode such as `0770` (or `770`, `0o770`).
pub fn parse_permission(text: &str) -> Result<u32, GrpcError> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| GrpcError::Permission(text.to_string()))
}

/// The admin service, ready to be added to a tonic server.
pub fn service(state: Arc<State>) -> pb::headscale_service_server::HeadscaleServiceServer<AdminService> {
    pb::headscale_service_server::HeadscaleServiceServer::new(AdminService::new(state))
}

/// Serves the admin API on a unix socket until `shutdown` completes. A stale socket file is
/// replaced (but not one a running server still answers on), the parent directory is created,
/// and the socket has `permission` as its mode from the moment it can be reached.
pub async fn serve_unix(
    path: &Path,
    permission: u32,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GrpcError> {
    let io_err = |source| GrpcError::Io { path: path.to_path_buf(), source };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(GrpcError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err)?;
    }
    // Bound under a temporary name, given its mode, then moved into place: nobody can
    // connect through a mode the umask left before `permission` applies.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary).map_err(io_err)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(permission))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(io_err(e));
    }
    tracing::debug!(path = %path.display(), "admin API listening on unix socket");
    let served = tonic::transport::Server::builder()
        .layer(tower::util::MapFutureLayer::new(grpc_to_end))
        .add_service(service(state))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener).map(|c| c.map(authority::filtered)), shutdown)
        .await;
    // The socket file is ours: leave nothing behind for the next start.
    let _ = std::fs::remove_file(path);
    served.map_err(GrpcError::from)
}

/// Why the remote gRPC listener is not served although `grpc_listen_addr` is set: as in
/// Headscale, it needs the server's certificate for TLS, or `grpc_allow_insecure: true`.
pub fn remote_skipped(config: &Config) -> Option<String> {
    let has_certificate = !config.tls_cert_path.is_empty();
    (!config.grpc_listen_addr.is_empty() && !config.grpc_allow_insecure && !has_certificate).then(|| {
        format!(
            "remote gRPC is not served on grpc_listen_addr {}: there is no certificate for TLS \
             (tls_cert_path, tls_key_path) and grpc_allow_insecure is false",
            config.grpc_listen_addr
        )
    })
}

/// Binds the remote gRPC listener on `grpc_listen_addr`; `None` when that is empty, or when
/// it cannot be served (`remote_skipped`, logged as a warning).
pub async fn bind_tcp(config: &Config) -> Result<Option<TcpListener>, GrpcError> {
    if let Some(why) = remote_skipped(config) {
        tracing::warn!("{why}");
        return Ok(None);
    }
    if config.grpc_listen_addr.is_empty() {
        return Ok(None);
    }
    let addr = &config.grpc_listen_addr;
    let listener = TcpListener::bind(addr).await.map_err(|source| GrpcError::Bind { addr: addr.clone(), source })?;
    Ok(Some(listener))
}

/// Serves the admin API on a bound TCP listener until `shutdown` completes, over TLS when
/// `tls` is given (else in plaintext), to requests that carry a valid API key. A transport
/// failure is logged: nothing waits for it.
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let server = tonic::transport::Server::builder()
        .layer(tower::util::MapFutureLayer::new(grpc_to_end))
        .layer(ApiKeyLayer::new(state.clone()))
        .add_service(service(state));
    let served = match tls {
        None => {
            tracing::warn!(%addr, "remote gRPC is served without TLS (grpc_allow_insecure); API keys cross the network in clear");
            server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown).await
        }
        Some(acceptor) => {
            // Handshakes run concurrently; a failed one is logged and dropped.
            let incoming = TcpListenerStream::new(listener)
                .filter_map(|tcp| std::future::ready(tcp.ok()))
                .map(move |tcp| {
                    let acceptor = acceptor.clone();
                    async move { crate::tls::accept(&acceptor, tcp).await }
                })
                .buffer_unordered(64)
                .filter_map(|r| {
                    std::future::ready(r.inspect_err(|e| tracing::debug!(error = %e, "gRPC TLS handshake failed")).ok())
                })
                .map(Ok::<_, std::io::Error>);
            server.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, %addr, "the remote gRPC listener stopped");
    }
}
