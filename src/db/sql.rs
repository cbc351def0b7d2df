//! What the record modules write against, whatever the engine: values, result rows read by
//! column name, the `Conn` trait each engine implements, and transactions. Statements are
//! written once, with PostgreSQL's `$1` placeholders (SQLite is handed `?1`), `TRUE`/`FALSE`
//! for flags and `RETURNING id` for new rows, which both engines accept.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::DbError;
use crate::model::KeyHash;

/// The storage engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        })
    }
}

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    /// A flag: a `BOOLEAN` in PostgreSQL, 0 or 1 in SQLite.
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

/// Ids are stored as signed 64-bit integers; ids never come near the sign bit.
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

/// Times are stored as RFC 3339 text in UTC with microseconds, which sorts as time does.
impl From<DateTime<Utc>> for Value {
    fn from(t: DateTime<Utc>) -> Self {
        Value::Text(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A value stored as JSON text; `column` names it if it cannot be encoded.
pub fn json<T: serde::Serialize>(column: &'static str, v: &T) -> Result<Value, DbError> {
    serde_json::to_string(v).map(Value::Text).map_err(|e| DbError::Encode { column, message: e.to_string() })
}

/// The arguments of a statement: `args![a, b]` is `&[Value::from(a), Value::from(b)]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::db::sql::Value::from($v)),*][..]
    };
}
pub(super) use args;

/// One result row of `table`, read by column name. A value that does not have the type the
/// reader expects is reported as corrupt data in `table.column`.
#[derive(Debug)]
pub struct Row {
    pub(super) table: &'static str,
    pub(super) columns: Arc<[String]>,
    pub(super) values: Vec<Value>,
}

impl Row {
    fn corrupt(&self, column: &'static str, message: impl Into<String>) -> DbError {
        DbError::Corrupt { table: self.table, column, message: message.into() }
    }

    /// The value of `column` as stored.
    pub fn raw(&self, column: &'static str) -> Result<&Value, DbError> {
        self.value(column)
    }

    fn value(&self, column: &'static str) -> Result<&Value, DbError> {
        self.columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| self.corrupt(column, "the column is missing from the result"))
    }

    fn wrong(&self, column: &'static str, expected: &str, found: &Value) -> DbError {
        self.corrupt(column, format!("expected {expected}, found {}", found.kind()))
    }

    /// An integer that may be NULL.
    pub fn opt_int(&self, column: &'static str) -> Result<Option<i64>, DbError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(self.wrong(column, "an integer", other)),
        }
    }

    /// An id (a non-negative integer) that may be NULL.
    pub fn opt_id(&self, column: &'static str) -> Result<Option<u64>, DbError> {
        self.opt_int(column)?
            .map(|v| u64::try_from(v).map_err(|_| self.corrupt(column, format!("{v} is not an id"))))
            .transpose()
    }

    /// An id.
    pub fn id(&self, column: &'static str) -> Result<u64, DbError> {
        self.opt_id(column)?.ok_or_else(|| self.corrupt(column, "unexpected NULL"))
    }

    /// Text that may be NULL.
    pub fn opt_text(&self, column: &'static str) -> Result<Option<String>, DbError> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            other => Err(self.wrong(column, "text", other)),
        }
    }

    /// Text.
    pub fn text(&self, column: &'static str) -> Result<String, DbError> {
        self.opt_text(column)?.ok_or_else(|| self.corrupt(column, "unexpected NULL"))
    }

    /// A flag, stored as a boolean or as 0/1.
    pub fn flag(&self, column: &'static str) -> Result<bool, DbError> {
        match self.value(column)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(0) => Ok(false),
            Value::Int(1) => Ok(true),
            other => Err(self.wrong(column, "a flag", other)),
        }
    }

    /// A key's hash: a SHA-256 digest, or a bcrypt hash's text.
    pub fn key_hash(&self, column: &'static str) -> Result<KeyHash, DbError> {
        match self.value(column)? {
            Value::Bytes(b) => {
                KeyHash::from_bytes(b).ok_or_else(|| self.corrupt(column, "neither a SHA-256 nor a bcrypt hash"))
            }
            other => Err(self.wrong(column, "bytes", other)),
        }
    }

    /// A time that may be NULL.
    pub fn opt_time(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, DbError> {
        self.opt_text(column)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| self.corrupt(column, format!("{s:?}: {e}")))
            })
            .transpose()
    }

    /// A time.
    pub fn time(&self, column: &'static str) -> Result<DateTime<Utc>, DbError> {
        self.opt_time(column)?.ok_or_else(|| self.corrupt(column, "unexpected NULL"))
    }

    /// A value stored as JSON text.
    pub fn json<T: serde::de::DeserializeOwned>(&self, column: &'static str) -> Result<T, DbError> {
        serde_json::from_str(&self.text(column)?).map_err(|e| self.corrupt(column, e.to_string()))
    }

    /// A value stored in its text form, that may be NULL.
    pub fn opt_parsed<T: std::str::FromStr>(&self, column: &'static str) -> Result<Option<T>, DbError>
    where
        T::Err: fmt::Display,
    {
        self.opt_text(column)?
            .map(|s| s.parse().map_err(|e: T::Err| self.corrupt(column, format!("{s:?}: {e}"))))
            .transpose()
    }

    /// A value stored in its text form.
    pub fn parsed<T: std::str::FromStr>(&self, column: &'static str) -> Result<T, DbError>
    where
        T::Err: fmt::Display,
    {
        self.opt_parsed(column)?.ok_or_else(|| self.corrupt(column, "unexpected NULL"))
    }
}

/// A connection to either engine. Statements use `$n` placeholders.
pub trait Conn {
    /// Which engine this is, for the few statements that differ (see `migrations`).
    fn engine(&self) -> Engine;

    /// Runs one statement and returns how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError>;

    /// Runs one query over `table` and returns its rows.
    fn query(&mut self, table: &'static str, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError>;

    /// Runs statements without arguments (schema changes, transaction control).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;

    /// Whether the connection can no longer be used (a call ran out of time): nothing more
    /// is sent on it, not even a rollback.
    fn is_broken(&self) -> bool {
        false
    }

    /// Runs an `INSERT … RETURNING id` and returns the new row's id.
    fn insert(&mut self, table: &'static str, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let rows = self.query(table, sql, args)?;
        let row = rows.first().ok_or(DbError::Corrupt { table, column: "id", message: "no id returned".into() })?;
        row.id("id")
    }

    /// The first row of a query, if any.
    fn query_opt(&mut self, table: &'static str, sql: &str, args: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(table, sql, args)?.into_iter().next())
    }
}

/// How a transaction that got as far as its commit ended.
pub enum Ended<T> {
    /// The commit was answered: the writes are in.
    Committed(T),
    /// The commit was sent but its answer never came (the call ran out of time, or the
    /// connection broke): whether the writes are in is unknown here.
    InDoubt { value: T, error: DbError },
}

/// Runs `f` in a transaction opened with `begin`: committed if `f` succeeds, rolled back if it
/// fails or panics.
pub fn transaction<T>(
    conn: &mut dyn Conn,
    begin: &str,
    f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>,
) -> Result<T, DbError> {
    match transaction_ended(conn, begin, f)? {
        Ended::Committed(value) => Ok(value),
        Ended::InDoubt { error, .. } => Err(error),
    }
}

/// [`transaction`], telling a commit that failed from one whose outcome is unknown.
pub fn transaction_ended<T>(
    conn: &mut dyn Conn,
    begin: &str,
    f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>,
) -> Result<Ended<T>, DbError> {
    /// Rolls back unless the commit was sent.
    struct Open<'a> {
        conn: &'a mut dyn Conn,
        commit_sent: bool,
    }
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            // A broken connection is closed instead; the server then rolls back on its own.
            if !self.commit_sent && !self.conn.is_broken() {
                if let Err(e) = self.conn.batch("ROLLBACK") {
                    tracing::warn!(error = %e, "rolling back a failed transaction");
                }
            }
        }
    }
    conn.batch(begin)?;
    let mut tx = Open { conn, commit_sent: false };
    let value = f(&mut *tx.conn)?;
    tx.commit_sent = true;
    match tx.conn.batch("COMMIT") {
        Ok(()) => Ok(Ended::Committed(value)),
        Err(error) if tx.conn.is_broken() => Ok(Ended::InDoubt { value, error }),
        Err(error) => Err(error),
    }
}
