//! The server side: the rustls configuration for the main listener, the remote gRPC listener
//! and the DERP TLS port, from the server's own certificate (`tls_cert_path`, `tls_key_path`,
//! PEM files) or a freshly made self-signed one, and the handshake every accepted connection
//! goes through.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{crypto_provider, TlsError};
use crate::config::Config;

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
    Config { cert: String, key: String, source: TlsError },
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
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::Key { path: key.clone(), message: e.to_string() })?;
    let mut tls = config_from_der(chain, private).map_err(|source| CertError::Config {
        cert: cert.clone(),
        key: key.clone(),
        source,
    })?;
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

/// A server configuration with a freshly made self-signed certificate for `hostnames` (DNS
/// names or IP addresses; the first is also the subject's common name; `localhost` if the
/// list is empty). No ALPN protocol is offered, so clients speak HTTP/1.1.
pub fn self_signed_config(hostnames: &[String]) -> Result<rustls::ServerConfig, TlsError> {
    let names: Vec<String> = if hostnames.is_empty() { vec!["localhost".to_owned()] } else { hostnames.to_vec() };
    let mut params = rcgen::CertificateParams::new(names.clone())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    config_from_der(vec![cert.der().clone()], key)
}

/// A server configuration from a DER certificate chain and its private key, offering no ALPN
/// protocol.
pub fn config_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TlsError> {
    Ok(rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_configs_offer_no_alpn() {
        let cfg = self_signed_config(&[]).unwrap();
        assert!(cfg.alpn_protocols.is_empty());
        let cfg = self_signed_config(&["derp.example.com".to_owned(), "::1".to_owned()]).unwrap();
        assert!(cfg.alpn_protocols.is_empty());
    }
}
