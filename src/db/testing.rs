//! Test support: a fresh database on either engine, and `storage_tests!`, which runs each
//! storage test once on SQLite and once on PostgreSQL (a throwaway cluster, see the
//! `test-postgres` crate); a PostgreSQL database with a short call deadline and a way to
//! pause the server backend behind it, for the fault tests.

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

/// A database on `settings` whose calls wait at most `deadline`, with no server-side
/// statement limit (so that a slow commit runs to its end there).
pub fn postgres_with_deadline(settings: &crate::config::Postgres, deadline: std::time::Duration) -> Db {
    let pool = super::postgres::open_with(settings, deadline, None).unwrap();
    Db::migrated(super::Store::Postgres(pool), None).unwrap()
}

/// The process id of the server backend behind the connection the next call will use.
pub fn backend_pid(db: &Db) -> i32 {
    let row = db.with(|c| c.query_opt("pid", "SELECT pg_backend_pid()::text AS pid", &[])).unwrap().unwrap();
    row.text("pid").unwrap().parse().unwrap()
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill only sends a signal; the pid is a backend of this test's own cluster.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "signal {sig} to {pid}");
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
