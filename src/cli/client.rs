//! The CLI's connection to the admin API. Without `cli.address`: gRPC over the server's local
//! unix socket (trusted, no key), retried with back-off until `cli.timeout` while the server
//! starts. With `cli.address`: gRPC over TCP with `Authorization: Bearer <cli.api_key>` on
//! every call. The address's scheme picks the transport: `http://` is plaintext (a server with
//! `grpc_allow_insecure: true`); `https://` or a bare `host:port` is TLS, verified against the
//! system's roots unless `cli.insecure` is set, which skips certificate verification as in
//! Headscale v0.29.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};

use super::CliError;
use crate::config::Config;
use crate::grpc::pb::headscale_service_client::HeadscaleServiceClient;
use crate::tls::{TlsError, Trust};

/// A connected admin API client.
pub type Client = HeadscaleServiceClient<InterceptedService<Channel, Bearer>>;

/// The timeout used when `cli.timeout` is zero.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `authorization: Bearer <key>` to every call, when there is a key.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// Connects to the server named by the configuration.
pub async fn connect(config: &Config) -> Result<Client, CliError> {
    let timeout = if config.cli.timeout.is_zero() { DEFAULT_TIMEOUT } else { config.cli.timeout };
    if config.cli.address.is_empty() {
        let channel = connect_unix(config, timeout).await?;
        Ok(HeadscaleServiceClient::with_interceptor(channel, Bearer(None)))
    } else {
        connect_remote(config, timeout).await
    }
}

async fn connect_unix(config: &Config, timeout: Duration) -> Result<Channel, CliError> {
    let path = config.unix_socket.clone();
    // The URI is required by the transport but unused: every connection goes to the socket.
    let endpoint = Endpoint::from_static("http://[::]:50051").timeout(timeout).connect_timeout(timeout);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let socket = path.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        });
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => return Ok(channel),
            Err(e) => {
                if Instant::now() + delay >= deadline {
                    tracing::debug!(error = %e, path = %path.display(), "cannot connect to the admin socket");
                    return Err(CliError::Unreachable(path));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Where and how to reach a remote server.
#[derive(Debug, PartialEq, Eq)]
struct Remote {
    host: String,
    port: u16,
    tls: bool,
}

/// Reads `cli.address`: `http://host[:port]`, `https://host[:port]` or `host:port`.
fn parse_address(address: &str) -> Result<Remote, CliError> {
    let invalid = |why: &str| CliError::InvalidAddress { address: address.to_string(), reason: why.to_string() };
    let (tls, rest) = match address.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some((scheme, _)) => return Err(invalid(&format!("unknown scheme {scheme:?}: use http:// or https://"))),
        None => (true, address),
    };
    let uri: Uri =
        format!("scheme://{}", rest.trim_end_matches('/')).parse().map_err(|_| invalid("not a host:port"))?;
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Remote { host: host.trim_matches(['[', ']']).to_string(), port, tls })
}

/// The text of an error and its causes, for a message about a failed connection.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Some errors repeat their cause in their own text.
        let cause = s.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
        source = s.source();
    }
    text
}

async fn connect_remote(config: &Config, timeout: Duration) -> Result<Client, CliError> {
    let address = config.cli.address.clone();
    let remote = parse_address(&address)?;
    if config.cli.api_key.is_empty() {
        return Err(CliError::MissingApiKey(address));
    }
    let bearer = MetadataValue::try_from(format!("Bearer {}", config.cli.api_key))
        .map_err(|_| CliError::Invalid("cli.api_key contains characters that cannot be sent in a header".into()))?;
    let authority = if remote.host.contains(':') { format!("[{}]", remote.host) } else { remote.host.clone() };
    let endpoint = Endpoint::from_shared(format!("http://{authority}:{}", remote.port))
        .map_err(|e| CliError::InvalidAddress { address: address.clone(), reason: e.to_string() })?
        .timeout(timeout)
        .connect_timeout(timeout);
    let target = (remote.host.clone(), remote.port);
    let connected = if remote.tls {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(config.cli.insecure)?));
        let name = ServerName::try_from(remote.host.clone())
            .map_err(|e| CliError::InvalidAddress { address: address.clone(), reason: e.to_string() })?;
        endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let (tls, name, target) = (tls.clone(), name.clone(), target.clone());
                async move {
                    let tcp = TcpStream::connect(target).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls.connect(name, tcp).await?))
                }
            }))
            .await
    } else {
        endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let target = target.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(TcpStream::connect(target).await?)) }
            }))
            .await
    };
    let channel = connected.map_err(|e| CliError::RemoteUnreachable { address, reason: causes(&e) })?;
    Ok(HeadscaleServiceClient::with_interceptor(channel, Bearer(Some(bearer))))
}

/// The TLS settings for a remote server: HTTP/2 by ALPN, the system's roots, or no
/// certificate verification at all with `insecure`.
fn tls_config(insecure: bool) -> Result<rustls::ClientConfig, CliError> {
    let trust = if insecure { Trust::Anything } else { Trust::SystemRoots };
    let mut config = crate::tls::client_config(trust).map_err(|e| match e {
        TlsError::NoRoots { .. } => CliError::Tls(format!("{e}; set cli.insecure to skip verification")),
        e => CliError::Tls(e.to_string()),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(host: &str, port: u16, tls: bool) -> Remote {
        Remote { host: host.into(), port, tls }
    }

    #[test]
    fn addresses_pick_the_transport() {
        assert_eq!(
            parse_address("headscale.example.com:50443").ok(),
            Some(remote("headscale.example.com", 50443, true))
        );
        assert_eq!(parse_address("https://hs.example.com").ok(), Some(remote("hs.example.com", 443, true)));
        assert_eq!(parse_address("http://127.0.0.1:50443/").ok(), Some(remote("127.0.0.1", 50443, false)));
        assert_eq!(parse_address("http://[::1]:50443").ok(), Some(remote("::1", 50443, false)));
        assert!(matches!(parse_address("ftp://x:1"), Err(CliError::InvalidAddress { .. })));
        assert!(matches!(parse_address("http://:50443"), Err(CliError::InvalidAddress { .. })));
    }

    #[test]
    fn tls_settings_speak_http2() {
        assert_eq!(tls_config(true).expect("builds").alpn_protocols, vec![b"h2".to_vec()]);
    }
}
