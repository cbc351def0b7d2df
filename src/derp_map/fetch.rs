//! Fetching a DERP map over HTTP or HTTPS (`derp.urls`): one GET, the answer bounded in size
//! and time. HTTPS certificates are checked against the system's roots, which
//! `SSL_CERT_FILE` can extend, as Go's client does for Headscale.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::DerpMapError;
use crate::tls::{client_config, Trust};

/// The most a DERP map may take to arrive.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest DERP map read (Tailscale's own is about 10 KB).
const MAX_BYTES: usize = 4 << 20;

/// The body of `GET url`.
pub async fn get(url: &str) -> Result<String, DerpMapError> {
    let fail = |message: String| DerpMapError::Fetch { url: url.to_string(), message };
    match tokio::time::timeout(TIMEOUT, fetch(url)).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail(format!("no answer within {TIMEOUT:?}"))),
    }
}

async fn fetch(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_string();
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
    if !tls {
        return exchange(tcp, &uri).await;
    }
    let config = client_config(Trust::SystemRoots).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let stream =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    exchange(stream, &uri).await
}

async fn exchange(io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static, uri: &http::Uri) -> Result<String, String> {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, concat!("headscale/", env!("CARGO_PKG_VERSION")))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("the server answered {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_BYTES).collect().await.map_err(|e| e.to_string())?.to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8 text".into())
}
