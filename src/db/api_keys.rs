//! Stored API keys: the record and its reads and writes. Only the prefix and a hash of the
//! secret are kept; the full key is shown once, when it is created.

use chrono::{DateTime, Utc};

use super::sql::{args, Conn, Row};
use super::{Db, DbError};
use crate::model::KeyHash;

/// An API key as stored: it opens the remote admin API until it expires or is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: u64,
    /// The public part of the key, `hskey-api-<prefix>-…`; unique.
    pub prefix: String,
    /// The hash of the secret part.
    pub hash: KeyHash,
    pub expiration: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When the key was last used, to the precision `state` records it with.
    pub last_seen: Option<DateTime<Utc>>,
}

const TABLE: &str = "api_keys";
const COLUMNS: &str = "id, prefix, hash, expiration, created_at, last_seen";

fn read_api_key(r: &Row) -> Result<ApiKey, DbError> {
    Ok(ApiKey {
        id: r.id("id")?,
        prefix: r.text("prefix")?,
        hash: r.key_hash("hash")?,
        expiration: r.time("expiration")?,
        created_at: r.time("created_at")?,
        last_seen: r.opt_time("last_seen")?,
    })
}

/// Stores `key` with its own id (a database taken over keeps its ids).
pub(super) fn restore(c: &mut dyn Conn, key: &ApiKey) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO api_keys (id, prefix, hash, expiration, created_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6)",
        args![key.id, &key.prefix, key.hash.to_bytes(), key.expiration, key.created_at, key.last_seen],
    )?;
    Ok(())
}

impl Db {
    /// Stores a new API key and returns it with its id.
    pub fn insert_api_key(&self, mut key: ApiKey) -> Result<ApiKey, DbError> {
        key.id = self.transaction(|c| {
            c.insert(
                TABLE,
                "INSERT INTO api_keys (prefix, hash, expiration, created_at, last_seen) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                args![&key.prefix, key.hash.to_bytes(), key.expiration, key.created_at, key.last_seen],
            )
        })?;
        Ok(key)
    }

    /// Every API key, by id.
    pub fn api_keys(&self) -> Result<Vec<ApiKey>, DbError> {
        let rows = self.with(|c| c.query(TABLE, &format!("SELECT {COLUMNS} FROM api_keys ORDER BY id"), &[]))?;
        rows.iter().map(read_api_key).collect()
    }

    /// The API key with this id.
    pub fn api_key(&self, id: u64) -> Result<Option<ApiKey>, DbError> {
        let row =
            self.with(|c| c.query_opt(TABLE, &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"), args![id]))?;
        row.as_ref().map(read_api_key).transpose()
    }

    /// The API key with this prefix.
    pub fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE prefix = $1");
        let row = self.with(|c| c.query_opt(TABLE, &sql, args![prefix]))?;
        row.as_ref().map(read_api_key).transpose()
    }

    /// Sets a key's expiration.
    pub fn set_api_key_expiration(&self, id: u64, at: DateTime<Utc>) -> Result<(), DbError> {
        self.transaction(|c| c.execute("UPDATE api_keys SET expiration = $1 WHERE id = $2", args![at, id]))?;
        Ok(())
    }

    /// Replaces a key's stored hash (a Headscale bcrypt hash by a SHA-256 after its first use),
    /// only if it is still `old`: returns false when the key changed or went meanwhile.
    pub fn rehash_api_key(&self, id: u64, old: &KeyHash, new: &KeyHash) -> Result<bool, DbError> {
        let sql = "UPDATE api_keys SET hash = $1 WHERE id = $2 AND hash = $3";
        Ok(self.transaction(|c| c.execute(sql, args![new.to_bytes(), id, old.to_bytes()]))? == 1)
    }

    /// Records when a key was last used.
    pub fn set_api_key_last_seen(&self, id: u64, at: DateTime<Utc>) -> Result<(), DbError> {
        self.transaction(|c| c.execute("UPDATE api_keys SET last_seen = $1 WHERE id = $2", args![at, id]))?;
        Ok(())
    }

    /// Deletes a key.
    pub fn delete_api_key(&self, id: u64) -> Result<(), DbError> {
        self.transaction(|c| c.execute("DELETE FROM api_keys WHERE id = $1", args![id]))?;
        Ok(())
    }
}
