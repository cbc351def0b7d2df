//! The SQLite engine (rusqlite): opening a file with the pragmas that keep it safe (WAL when
//! `database.sqlite.write_ahead_log` is on), or read-only for `configtest`, and `Conn` over
//! one connection, which `Db` serializes behind a mutex.

use std::path::Path;
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::sql::{Conn, Engine, Row, Value};
use super::DbError;

/// Opens (creating if needed) the database file, changing nothing in it yet: `tune` sets
/// the journal mode and the other pragmas once the caller has looked at what it holds.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir { path: dir.to_path_buf(), source })?;
    }
    Ok(Connection::open(path)?)
}

/// Opens an existing database file for reading only: nothing is created or changed. Without
/// a write-ahead log beside it (no server has it open, and every commit is in the file) the
/// file is opened as immutable, since even a read-only reader of a WAL database would
/// otherwise create the log and its index; with one, it is read through them.
pub fn open_read_only(path: &Path) -> Result<Connection, DbError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let escaped: String = path
        .to_string_lossy()
        .chars()
        .map(|c| match c {
            '%' => "%25".to_string(),
            '?' => "%3f".to_string(),
            '#' => "%23".to_string(),
            c => c.to_string(),
        })
        .collect();
    let immutable = if Path::new(&wal).exists() { "" } else { "&immutable=1" };
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(format!("file:{escaped}?mode=ro{immutable}"), flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// An in-memory database.
pub fn open_in_memory() -> Result<Connection, DbError> {
    tune(Connection::open_in_memory()?, false, 0)
}

/// Sets the pragmas that keep the database safe, and the journal mode.
pub fn tune(conn: Connection, wal: bool, autocheckpoint: i64) -> Result<Connection, DbError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if wal {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL syncs the log at every commit: what the server acknowledged survives a power
        // loss too, not only a crash of the process (which NORMAL covers). The cost is
        // measured in BENCHMARKS.md (state/register_one_node_10k_sqlite_wal).
        conn.pragma_update(None, "synchronous", "FULL")?;
        if autocheckpoint > 0 {
            conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)?;
        }
    } else {
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

/// The statement with SQLite's numbered placeholders: `$3` becomes `?3`.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let numbered = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if numbered { '?' } else { c });
    }
    out
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        // No column holds a float; one read back is shown as text, and refused as corrupt
        // by whichever reader expected something else.
        ValueRef::Real(f) => Value::Text(f.to_string()),
        // Text that is not UTF-8 is kept as bytes, and refused as corrupt where text is expected.
        ValueRef::Text(t) => String::from_utf8(t.to_vec()).map_or_else(|e| Value::Bytes(e.into_bytes()), Value::Text),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

impl Conn for Connection {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let mut st = self.prepare_cached(&placeholders(sql))?;
        Ok(st.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn query(&mut self, table: &'static str, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut st = self.prepare_cached(&placeholders(sql))?;
        let columns: Arc<[String]> = st.column_names().into_iter().map(String::from).collect();
        let mut rows = st.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let values = (0..columns.len()).map(|i| r.get_ref(i).map(value)).collect::<Result<_, _>>()?;
            out.push(Row { table, columns: columns.clone(), values });
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(self.execute_batch(sql)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_sqlite() {
        assert_eq!(
            placeholders("UPDATE t SET a = $1 WHERE id = $12 AND b = '$x'"),
            "UPDATE t SET a = ?1 WHERE id = ?12 AND b = '$x'"
        );
    }

    #[test]
    fn a_file_database_is_created_with_its_directory_and_keeps_what_it_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/db.sqlite");
        let db = super::super::Db::open(&path, true, 1000).expect("open");
        db.set_policy("{}", crate::testing::t0()).expect("write");
        drop(db);
        let db = super::super::Db::open(&path, true, 1000).expect("reopen");
        assert_eq!(db.policy().expect("read").map(|p| p.data), Some("{}".into()));
        assert_eq!(db.schema_version().expect("version"), super::super::migrations::LATEST);
    }
}
