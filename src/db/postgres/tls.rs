//! TLS to PostgreSQL (`database.postgres.ssl`): what tokio-postgres is asked to negotiate,
//! and how the server's certificate is checked. Like libpq, `prefer` and `require` encrypt
//! without checking the certificate; `verify-ca` checks that a trusted authority signed it,
//! `verify-full` also that it names the host.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode as Negotiate;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::SslMode;
use crate::db::DbError;

/// What to negotiate and the TLS connector for `mode`.
pub fn connector(mode: SslMode) -> Result<(Negotiate, MakeRustlsConnect), DbError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?;
    let unchecked = || {
        builder
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::cli::SkipVerification(provider.clone())))
            .with_no_client_auth()
    };
    let (negotiate, config) = match mode {
        SslMode::Disable => (Negotiate::Disable, unchecked()),
        SslMode::Prefer => (Negotiate::Prefer, unchecked()),
        SslMode::Require => (Negotiate::Require, unchecked()),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(DbError::Tls(format!(
                    "database.postgres.ssl {mode:?} needs trusted root certificates, and none were found on this system"
                )));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| DbError::Tls(e.to_string()))?;
            let verifier: Arc<dyn ServerCertVerifier> =
                if mode == SslMode::VerifyCa { Arc::new(AnyName(webpki)) } else { webpki };
            (Negotiate::Require, builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
        }
    };
    Ok((negotiate, MakeRustlsConnect::new(config)))
}

/// `verify-ca`: a certificate chain to a trusted root, whatever name it is for.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
