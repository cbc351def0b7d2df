//! TLS to PostgreSQL (`database.postgres.ssl`): what tokio-postgres is asked to negotiate,
//! and how the server's certificate is checked. Like libpq, `prefer` and `require` encrypt
//! without checking the certificate; `verify-ca` checks that a trusted authority signed it,
//! `verify-full` also that it names the host.

use tokio_postgres::config::SslMode as Negotiate;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::SslMode;
use crate::db::DbError;
use crate::tls::{client_config, TlsError, Trust};

/// What to negotiate and the TLS connector for `mode`.
pub fn connector(mode: SslMode) -> Result<(Negotiate, MakeRustlsConnect), DbError> {
    let (negotiate, trust) = match mode {
        SslMode::Disable => (Negotiate::Disable, Trust::Anything),
        SslMode::Prefer => (Negotiate::Prefer, Trust::Anything),
        SslMode::Require => (Negotiate::Require, Trust::Anything),
        SslMode::VerifyCa => (Negotiate::Require, Trust::SystemRootsAnyName),
        SslMode::VerifyFull => (Negotiate::Require, Trust::SystemRoots),
    };
    let config = client_config(trust).map_err(|e| match e {
        TlsError::NoRoots { .. } => DbError::Tls(format!("database.postgres.ssl {mode:?} needs trusted roots: {e}")),
        e => DbError::Tls(e.to_string()),
    })?;
    Ok((negotiate, MakeRustlsConnect::new(config)))
}
