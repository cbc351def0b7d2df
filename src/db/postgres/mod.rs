//! The PostgreSQL engine (tokio-postgres): `database.postgres.*` turned into a connector, a
//! pool of connections, and an I/O thread of its own that drives them. Callers block, as with
//! SQLite, and may do so from any thread: the connections' I/O never waits for the caller's
//! runtime.

mod commit;
mod conn;
mod pool;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use commit::transaction;
use conn::PgConn;
use pool::Limits;
pub use pool::Pool;

use crate::config::Postgres as Settings;
use crate::db::DbError;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call (a statement, a commit) may wait for its answer. The server is also
/// asked to end a statement that runs longer (`statement_timeout`), so that a slow statement
/// is stopped there rather than left running behind a closed connection.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The pool described by `settings`; connections are opened when first needed.
pub fn open(settings: &Settings) -> Result<Arc<Pool>, DbError> {
    open_with(settings, CALL_TIMEOUT, Some(CALL_TIMEOUT))
}

/// [`open`], with calls that wait at most `deadline` and, if given, statements the server
/// stops after `statement_timeout`.
pub fn open_with(
    settings: &Settings,
    deadline: Duration,
    statement_timeout: Option<Duration>,
) -> Result<Arc<Pool>, DbError> {
    let mode = settings.ssl_mode().map_err(|e| DbError::Tls(e.to_string()))?;
    let (negotiate, tls) = tls::connector(mode)?;
    let port = if settings.port == 0 { 5432 } else { settings.port };
    let mut config = tokio_postgres::Config::new();
    config
        .host(&settings.host)
        .port(port)
        .dbname(&settings.name)
        .user(&settings.user)
        .ssl_mode(negotiate)
        .application_name("headscale")
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives_idle(Duration::from_secs(60));
    if let Some(limit) = statement_timeout {
        config.options(format!("-c statement_timeout={}", limit.as_millis()));
    }
    if !settings.pass.is_empty() {
        config.password(&settings.pass);
    }
    let connector = Connector {
        target: format!("{}@{}:{port}/{}", settings.user, settings.host, settings.name),
        config,
        tls,
        io: Io::start()?,
        deadline,
    };
    let limits = Limits {
        max_open: settings.max_open_conns as usize,
        max_idle: settings.max_idle_conns as usize,
        max_idle_time: (settings.conn_max_idle_time_secs > 0)
            .then(|| Duration::from_secs(settings.conn_max_idle_time_secs)),
    };
    Ok(Pool::new(connector, limits))
}

/// A tokio-postgres error as one line of text with its causes: the server's own message
/// (`FATAL: password authentication failed …`), or what failed and why (`error connecting to
/// server: Connection refused`).
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(server) = e.as_db_error() {
        return server.to_string().replace('\n', "; ");
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Opens connections to one server, whose I/O runs on `io`.
pub struct Connector {
    /// `user@host:port/database`, for messages.
    target: String,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    io: Io,
    /// How long a call on its connections may wait ([`CALL_TIMEOUT`]).
    deadline: Duration,
}

impl Connector {
    /// Runs a task on the I/O thread.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.io.runtime.spawn(task);
    }

    /// Opens a connection; its I/O runs on the I/O thread until the connection is dropped.
    pub fn connect(&self) -> Result<PgConn, DbError> {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let opened = self.io.runtime.spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection lost");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        match futures_executor::block_on(opened) {
            Ok(Ok(client)) => Ok(PgConn::new(client, self.io.runtime.clone(), self.deadline)),
            Ok(Err(e)) => Err(self.connect_error(e)),
            Err(_) => Err(DbError::Cancelled),
        }
    }

    /// A failed connection attempt: unreachable (worth retrying) unless the server answered
    /// with a refusal that will not change by itself (wrong password, no such database).
    fn connect_error(&self, error: tokio_postgres::Error) -> DbError {
        let target = self.target.clone();
        match error.code() {
            Some(code) if *code != SqlState::CANNOT_CONNECT_NOW && *code != SqlState::TOO_MANY_CONNECTIONS => {
                DbError::Refused { target, error }
            }
            _ => DbError::Unreachable { target, error },
        }
    }
}

/// The thread that runs every connection's I/O. It stops when this is dropped.
struct Io {
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Io {
    fn start() -> Result<Io, DbError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DbError::IoThread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("postgres-io".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(DbError::IoThread)?;
        Ok(Io { runtime: handle, _stop: stop })
    }
}
