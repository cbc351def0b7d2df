//! PostgreSQL over TLS in the modes that check the server's certificate, against the test
//! cluster (whose certificate names `localhost` and is signed by an authority of its own):
//! `verify-full` accepts it for `localhost` and refuses it for `127.0.0.1`, a name it does not
//! carry; `verify-ca` accepts it under either name; `require` encrypts without checking. A test
//! binary of its own, because the trusted authorities come from `SSL_CERT_FILE`, which is
//! read process-wide.

use headscale::config::Postgres;
use headscale::db::{Db, Engine};

/// Opens a fresh database of the test cluster at `host` with `database.postgres.ssl: ssl`.
fn open(cluster: &test_postgres::Cluster, host: &str, ssl: &str) -> Result<Engine, String> {
    let settings = Postgres {
        host: host.into(),
        port: cluster.port(),
        name: cluster.create_database(),
        user: test_postgres::USER.into(),
        pass: test_postgres::PASSWORD.into(),
        ssl: serde_yaml::Value::String(ssl.into()),
        max_open_conns: 2,
        ..Postgres::default()
    };
    Db::open_postgres(&settings).map(|db| db.engine()).map_err(|e| e.to_string())
}

#[test]
fn certificate_checking_modes() {
    let Some(cluster) = test_postgres::cluster() else { return };
    // Nothing else in this process reads the environment concurrently.
    std::env::set_var("SSL_CERT_FILE", cluster.ca_file());
    assert_eq!(open(cluster, "localhost", "verify-full"), Ok(Engine::Postgres));
    let refused = open(cluster, "127.0.0.1", "verify-full").expect_err("the certificate does not name 127.0.0.1");
    assert!(refused.contains("certificate"), "the error says the certificate was refused: {refused}");
    assert_eq!(open(cluster, "127.0.0.1", "verify-ca"), Ok(Engine::Postgres));
    assert_eq!(open(cluster, "127.0.0.1", "require"), Ok(Engine::Postgres));
}
