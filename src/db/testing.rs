//! Test support: a fresh database on either engine, and `storage_tests!`, which runs each
//! storage test once on SQLite and once on PostgreSQL (a throwaway cluster, see the
//! `test-postgres` crate).

use super::Db;
use crate::config::Postgres;

/// The settings of a fresh database in this process's PostgreSQL cluster, reached over TCP
/// with a password; `None` when PostgreSQL tests are skipped.
pub fn postgres_settings() -> Option<Postgres> {
    let cluster = test_postgres::cluster()?;
    Some(Postgres {
        host: "127.0.0.1".into(),
        port: cluster.port(),
        name: cluster.create_database(),
        user: test_postgres::USER.into(),
        pass: test_postgres::PASSWORD.into(),
        max_open_conns: 4,
        ..Postgres::default()
    })
}

/// A fresh, migrated PostgreSQL database; `None` when PostgreSQL tests are skipped.
pub fn postgres() -> Option<Db> {
    postgres_settings().map(|s| Db::open_postgres(&s).expect("opening the test database on PostgreSQL"))
}

/// For each `async fn NAME(db: Db)` named, the tests `NAME::sqlite` (in memory) and
/// `NAME::postgres`.
macro_rules! storage_tests {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    super::$test($crate::db::Db::open_in_memory().expect("in-memory SQLite")).await
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(db) = $crate::db::testing::postgres() {
                        super::$test(db).await
                    }
                }
            }
        )+
    };
}
pub(crate) use storage_tests;
