//! TLS, both ways, with aws-lc-rs passed explicitly (nothing depends on a process-wide default
//! provider): the server side (the server's certificate files or a self-signed one, and the
//! handshake of an accepted connection) and the client side (how a peer's certificate is
//! checked, for the CLI's remote connection and for PostgreSQL).

mod client;
mod server;

use std::sync::Arc;

pub use client::{client_config, Trust};
pub use server::{accept, config_from_der, self_signed_config, server_config, CertError};

/// The crypto provider of every TLS configuration the server builds.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating a self-signed certificate failed.
    #[error("generating a self-signed certificate failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the protocol versions, certificate or key.
    #[error("rustls refused the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificates are to be checked, and the system trusts no authority.
    #[error("no trusted root certificates were found on this system ({errors} errors reading them)")]
    NoRoots { errors: usize },
    /// The certificate verifier could not be built from the system's roots.
    #[error("cannot check certificates against the system's roots: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}
