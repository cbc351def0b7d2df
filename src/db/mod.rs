//! Storage: the schema with its versioned migrations, and the SQLite store. Only `state`
//! calls into this module; everything it stores is read back whole at start-up.

mod api_keys;
mod migrations;
mod policies;
mod sqlite;

pub use api_keys::ApiKey;
pub use policies::StoredPolicy;
pub use sqlite::Db;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("stored value in {table}.{column} is invalid: {message}")]
    Corrupt { table: &'static str, column: &'static str, message: String },
    #[error("database schema version {found} is newer than this server knows ({known}); upgrade the server")]
    TooNew { found: i64, known: i64 },
    #[error("the database task was cancelled")]
    Cancelled,
}
