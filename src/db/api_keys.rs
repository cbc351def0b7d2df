//! Stored API keys: the record and its SQLite reads and writes. Only the prefix and a SHA-256
//! of the secret are kept; the full key is shown once, when it is created.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::sqlite::{parse_opt_ts, parse_ts, ts};
use super::{Db, DbError};

/// An API key as stored: it opens the remote admin API until it expires or is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: u64,
    /// The public part of the key, `hskey-api-<prefix>-…`; unique.
    pub prefix: String,
    /// SHA-256 of the secret part.
    pub hash: [u8; 32],
    pub expiration: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When the key was last used, to the precision `state` records it with.
    pub last_seen: Option<DateTime<Utc>>,
}

const TABLE: &str = "api_keys";
const COLUMNS: &str = "id, prefix, hash, expiration, created_at, last_seen";

fn read_api_key(r: &Row<'_>) -> Result<ApiKey, DbError> {
    let hash: Vec<u8> = r.get(2)?;
    Ok(ApiKey {
        id: r.get::<_, i64>(0)? as u64,
        prefix: r.get(1)?,
        hash: hash.try_into().map_err(|_| DbError::Corrupt {
            table: TABLE,
            column: "hash",
            message: "not 32 bytes".into(),
        })?,
        expiration: parse_ts(TABLE, "expiration", &r.get::<_, String>(3)?)?,
        created_at: parse_ts(TABLE, "created_at", &r.get::<_, String>(4)?)?,
        last_seen: parse_opt_ts(TABLE, "last_seen", r.get(5)?)?,
    })
}

impl Db {
    /// Stores a new API key and returns it with its id.
    pub fn insert_api_key(&self, mut key: ApiKey) -> Result<ApiKey, DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO api_keys (prefix, hash, expiration, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.prefix,
                    key.hash.to_vec(),
                    ts(&key.expiration),
                    ts(&key.created_at),
                    key.last_seen.as_ref().map(ts)
                ],
            )?;
            key.id = c.last_insert_rowid() as u64;
            Ok(key)
        })
    }

    /// Every API key, by id.
    pub fn api_keys(&self) -> Result<Vec<ApiKey>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY id"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(read_api_key(r)?);
            }
            Ok(out)
        })
    }

    /// The API key with this id.
    pub fn api_key(&self, id: u64) -> Result<Option<ApiKey>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"))?;
            st.query_row(params![id as i64], |r| Ok(read_api_key(r))).optional()?.transpose()
        })
    }

    /// The API key with this prefix.
    pub fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM api_keys WHERE prefix = ?1"))?;
            st.query_row(params![prefix], |r| Ok(read_api_key(r))).optional()?.transpose()
        })
    }

    /// Sets a key's expiration.
    pub fn set_api_key_expiration(&self, id: u64, at: DateTime<Utc>) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("UPDATE api_keys SET expiration = ?1 WHERE id = ?2", params![ts(&at), id as i64])?;
            Ok(())
        })
    }

    /// Records when a key was last used.
    pub fn set_api_key_last_seen(&self, id: u64, at: DateTime<Utc>) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("UPDATE api_keys SET last_seen = ?1 WHERE id = ?2", params![ts(&at), id as i64])?;
            Ok(())
        })
    }

    /// Deletes a key.
    pub fn delete_api_key(&self, id: u64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("DELETE FROM api_keys WHERE id = ?1", params![id as i64])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid")
    }

    #[test]
    fn api_keys_round_trip() {
        let db = Db::open_in_memory().expect("db");
        let key = ApiKey {
            id: 0,
            prefix: "abcdefghijkl".into(),
            hash: [7; 32],
            expiration: at(2_000_000_000),
            created_at: at(1_700_000_000),
            last_seen: None,
        };
        let stored = db.insert_api_key(key.clone()).expect("insert");
        assert_eq!(stored.id, 1);
        assert_eq!(db.api_key_by_prefix("abcdefghijkl").expect("read"), Some(stored.clone()));
        assert_eq!(db.api_key(1).expect("read"), Some(stored.clone()));
        assert_eq!(db.api_key_by_prefix("nope").expect("read"), None);
        assert!(db.insert_api_key(key).is_err(), "prefixes are unique");

        db.set_api_key_expiration(1, at(1_800_000_000)).expect("expire");
        db.set_api_key_last_seen(1, at(1_750_000_000)).expect("touch");
        let read = db.api_keys().expect("list");
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].expiration, read[0].last_seen), (at(1_800_000_000), Some(at(1_750_000_000))));

        db.delete_api_key(1).expect("delete");
        assert_eq!(db.api_keys().expect("list"), Vec::new());
        assert_eq!(db.api_key(1).expect("read"), None);
    }
}
