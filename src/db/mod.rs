//! Storage: one schema with versioned migrations (`migrations`), kept in SQLite (`sqlite`) or
//! PostgreSQL (`postgres`). The reads and writes of each record (`users`, `pre_auth_keys`,
//! `nodes`, `api_keys`, `policies`) are written once, over `sql::Conn`, which both engines
//! implement. Only `state` calls into this module (and `app`, to open it). Users, nodes,
//! pre-auth keys and the policy are read back whole at start-up; API keys are looked up when
//! a request presents one or an admin lists them. Calls block; `Db::run` moves them off the
//! async runtime.

mod api_keys;
mod migrations;
mod nodes;
mod policies;
mod postgres;
mod pre_auth_keys;
mod sql;
mod sqlite;
mod takeover;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod users;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use api_keys::ApiKey;
pub use migrations::Schema;
pub use policies::StoredPolicy;
pub use sql::Engine;
pub use takeover::HEADSCALE_MIGRATIONS;

use crate::config::Database;
use sql::Conn;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    #[error("cannot reach PostgreSQL at {target}: {}", postgres::describe(.error))]
    Unreachable { target: String, error: tokio_postgres::Error },
    #[error("PostgreSQL at {target} refused the connection: {}", postgres::describe(.error))]
    Refused { target: String, error: tokio_postgres::Error },
    #[error("no PostgreSQL connection came free within {waited:?}; all {max_open} (database.postgres.max_open_conns) are in use")]
    PoolExhausted { max_open: usize, waited: Duration },
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    #[error("cannot start the PostgreSQL I/O thread: {0}")]
    IoThread(std::io::Error),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("database.type {0:?} is not one of sqlite, postgres")]
    UnknownType(String),
    #[error("stored value in {table}.{column} is invalid: {message}")]
    Corrupt { table: &'static str, column: &'static str, message: String },
    #[error("cannot encode the value of {column}: {message}")]
    Encode { column: &'static str, message: String },
    #[error("database schema version {found} is newer than this server knows ({known}); upgrade the server")]
    TooNew { found: i64, known: i64 },
    #[error("schema migration {version} failed: {source}")]
    Migration { version: i64, source: Box<DbError> },
    #[error("the database task was cancelled")]
    Cancelled,
    #[error("PostgreSQL did not answer within {waited:?}; the connection was closed")]
    Timeout { waited: Duration },
    #[error(
        "PostgreSQL did not say within {waited:?} whether transaction {xid} committed; until the server restarts, \
         what it serves may differ from the database"
    )]
    CommitUnknown { xid: i64, waited: Duration },
    #[error(
        "this Headscale database ran migration {0}, which this server does not know: it was made by a Headscale \
         newer than v0.29; nothing was changed"
    )]
    HeadscaleTooNew(String),
    #[error(
        "this Headscale database is older than Headscale v0.25.1: upgrade it with Headscale (v0.25.1, then each \
         release up to v0.29) before switching; nothing was changed"
    )]
    HeadscaleTooOld,
    #[error("taking over the Headscale database failed, and nothing was changed: {0}")]
    Takeover(Box<DbError>),
    #[error("cannot copy the Headscale database to {path} before taking it over: {source}")]
    Backup { path: std::path::PathBuf, source: Box<DbError> },
}

/// The error's text includes its causes (the server's message, the I/O error), so it is not
/// also given as a source.
impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

impl DbError {
    /// Whether the database could not be reached, so that trying again later may succeed.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DbError::Unreachable { .. })
    }
}

/// Where the copy of a Headscale SQLite database goes before it is taken over: beside it,
/// never over an earlier copy.
fn backup_path(file: &Path) -> std::path::PathBuf {
    let mut first = file.as_os_str().to_owned();
    first.push(".headscale-backup");
    let first = std::path::PathBuf::from(first);
    if !first.exists() {
        return first;
    }
    let mut dated = first.into_os_string();
    dated.push(format!("-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")));
    dated.into()
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    store: Store,
}

#[derive(Clone)]
enum Store {
    /// One connection: SQLite serializes writers anyway.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Arc<postgres::Pool>),
}

impl Db {
    /// Opens the database `database.*` describes and brings its schema up to date.
    pub fn open_configured(database: &Database) -> Result<Db, DbError> {
        match database.kind.as_str() {
            "sqlite" | "sqlite3" => {
                let s = &database.sqlite;
                Db::open(&s.path, s.write_ahead_log, s.wal_autocheckpoint)
            }
            "postgres" => Db::open_postgres(&database.postgres),
            other => Err(DbError::UnknownType(other.to_string())),
        }
    }

    /// Opens (creating if needed) an SQLite database file and brings its schema up to date.
    pub fn open(path: &Path, write_ahead_log: bool, wal_autocheckpoint: i64) -> Result<Db, DbError> {
        let mut conn = sqlite::open(path)?;
        // A database that cannot be taken over is refused before anything in it changes.
        takeover::detect(&mut conn)?;
        let conn = sqlite::tune(conn, write_ahead_log, wal_autocheckpoint)?;
        Db::migrated(Store::Sqlite(Arc::new(Mutex::new(conn))), Some(path))
    }

    /// An in-memory SQLite database, for tests.
    pub fn open_in_memory() -> Result<Db, DbError> {
        Db::migrated(Store::Sqlite(Arc::new(Mutex::new(sqlite::open_in_memory()?))), None)
    }

    /// Connects to PostgreSQL (`database.postgres.*`) and brings the schema up to date.
    pub fn open_postgres(settings: &crate::config::Postgres) -> Result<Db, DbError> {
        Db::migrated(Store::Postgres(postgres::open(settings)?), None)
    }

    /// What opening the configured database at start-up would find, read without writing
    /// anything (`headscale configtest`): `None` if the SQLite file does not exist yet (it
    /// will be created), else where its schema stands. A database written by a newer server
    /// is an error, as it is at start-up.
    pub fn inspect_configured(database: &Database) -> Result<Option<Schema>, DbError> {
        let db = match database.kind.as_str() {
            "sqlite" | "sqlite3" => {
                let path = &database.sqlite.path;
                if !path.exists() {
                    return Ok(None);
                }
                Db { store: Store::Sqlite(Arc::new(Mutex::new(sqlite::open_read_only(path)?))) }
            }
            "postgres" => Db { store: Store::Postgres(postgres::open(&database.postgres)?) },
            other => return Err(DbError::UnknownType(other.to_string())),
        };
        if let Some(found) = db.with(takeover::detect)? {
            return Ok(Some(Schema::Headscale { last_migration: found.last_migration }));
        }
        let found = db.with(migrations::version_read_only)?;
        migrations::compare(found).map(Some)
    }

    /// The database on `store`, a Headscale database taken over first (an SQLite file at
    /// `file` is copied beside itself before), with its schema brought up to date.
    fn migrated(store: Store, file: Option<&Path>) -> Result<Db, DbError> {
        let db = Db { store };
        if let Some(found) = db.with(takeover::detect)? {
            let backup = file.map(backup_path);
            if let Some(path) = &backup {
                let quoted = path.display().to_string().replace('\'', "''");
                db.with(|c| c.batch(&format!("VACUUM INTO '{quoted}'")))
                    .map_err(|e| DbError::Backup { path: path.clone(), source: Box::new(e) })?;
            }
            tracing::warn!(
                last_migration = %found.last_migration,
                copy = ?backup,
                "this is a Headscale database: taking it over in place"
            );
            let done = db.with(takeover::convert)?;
            tracing::info!(
                users = done.users,
                nodes = done.nodes,
                pre_auth_keys = done.pre_auth_keys,
                api_keys = done.api_keys,
                policy = done.policy,
                "the Headscale database is now this server's"
            );
        }
        db.with(migrations::migrate)?;
        Ok(db)
    }

    /// The engine behind this handle.
    pub fn engine(&self) -> Engine {
        match self.store {
            Store::Sqlite(_) => Engine::Sqlite,
            Store::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs a blocking database call off the async runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(|_| DbError::Cancelled)?
    }

    /// Runs `f` on a connection: SQLite's one, or one from the PostgreSQL pool.
    fn with<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>) -> Result<T, DbError> {
        match &self.store {
            Store::Sqlite(conn) => f(&mut *conn.lock().unwrap_or_else(PoisonError::into_inner)),
            Store::Postgres(pool) => f(&mut *pool.get()?),
        }
    }

    /// Runs `f` in one transaction: all of its writes, or none. Every write goes through here,
    /// single statements too, so that a PostgreSQL commit left in doubt is resolved before
    /// the caller publishes anything (`postgres::transaction`).
    fn transaction<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>) -> Result<T, DbError> {
        match &self.store {
            Store::Sqlite(_) => self.with(|c| sql::transaction(c, "BEGIN", f)),
            Store::Postgres(pool) => postgres::transaction(pool, f),
        }
    }

    /// The schema version (number of migrations run).
    pub fn schema_version(&self) -> Result<i64, DbError> {
        self.with(migrations::version)
    }

    /// Checks that the database answers.
    pub fn ping(&self) -> bool {
        self.with(|c| c.batch("SELECT 1")).is_ok()
    }
}
