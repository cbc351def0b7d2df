//! TLS with the server's own certificate (`tls_cert_path`, `tls_key_path`, PEM files): the
//! rustls configuration for the main listener, the remote gRPC listener and the DERP TLS
//! port, and the handshake every accepted connection goes through.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::derp::config_from_der;

/// Time allowed for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate files could not be turned into a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("tls_cert_path and tls_key_path must be set together")]
    Incomplete,
    #[error("cannot read the certificate chain {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("cannot read the private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("the certificate {cert} and key {key} do not make a TLS configuration: {source}")]
    Config { cert: String, key: String, source: crate::derp::TlsError },
}

/// The server's certificate and key as a rustls configuration offering `alpn`; `None` when
/// no certificate is configured.
pub fn server_config(config: &Config, alpn: &[&[u8]]) -> Result<Option<Arc<rustls::ServerConfig>>, CertError> {
    let (cert, key) = (&config.tls_cert_path, &config.tls_key_path);
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => return Err(CertError::Incomplete),
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| CertError::Certificate { path: cert.clone(), message: e.to_string() })?;
    if chain.is_empty() {
        return Err(CertError::Certificate { path: cert.clone(), message: "no certificate in the file".into() });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::Key { path: key.clone(), message: e.to_string() })?;
    let mut tls = config_from_der(chain, private)
        .map_err(|source| CertError::Config { cert: cert.clone(), key: key.clone(), source })?;
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Some(Arc::new(tls)))
}

/// Completes the TLS handshake of an accepted connection, or says why it failed.
pub async fn accept(acceptor: &TlsAcceptor, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}
