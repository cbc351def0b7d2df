//! Stored pre-auth keys: create, use once (atomically), expire, delete, list.

use chrono::{DateTime, Utc};

use super::sql::{args, json, Conn, Row};
use super::{Db, DbError};
use crate::model::{KeyHash, PreAuthKey};

const COLUMNS: &str = "id, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at";

/// Marks the key `id` used, only if it was not: false when someone else used it first.
pub(super) fn consume(c: &mut dyn Conn, id: u64) -> Result<bool, DbError> {
    Ok(c.execute("UPDATE pre_auth_keys SET used = TRUE WHERE id = $1 AND used = FALSE", args![id])? == 1)
}

fn read_key(r: &Row) -> Result<PreAuthKey, DbError> {
    Ok(PreAuthKey {
        id: r.id("id")?,
        prefix: r.text("prefix")?,
        hash: r.key_hash("hash")?,
        user_id: r.opt_id("user_id")?,
        reusable: r.flag("reusable")?,
        ephemeral: r.flag("ephemeral")?,
        used: r.flag("used")?,
        tags: r.json("tags")?,
        expiration: r.opt_time("expiration")?,
        created_at: r.time("created_at")?,
    })
}

/// Stores `key` with its own id (a database taken over keeps its ids).
pub(super) fn restore(c: &mut dyn Conn, key: &PreAuthKey) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO pre_auth_keys (id, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        args![
            key.id,
            &key.prefix,
            key.hash.to_bytes(),
            key.user_id,
            key.reusable,
            key.ephemeral,
            key.used,
            json("tags", &key.tags)?,
            key.expiration,
            key.created_at
        ],
    )?;
    Ok(())
}

impl Db {
    /// Stores a new pre-auth key and returns it with its id.
    pub fn insert_pre_auth_key(&self, mut key: PreAuthKey) -> Result<PreAuthKey, DbError> {
        let tags = json("tags", &key.tags)?;
        key.id = self.transaction(|c| {
            c.insert(
                "pre_auth_keys",
                "INSERT INTO pre_auth_keys (prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                args![
                    &key.prefix,
                    key.hash.to_bytes(),
                    key.user_id,
                    key.reusable,
                    key.ephemeral,
                    key.used,
                    tags,
                    key.expiration,
                    key.created_at
                ],
            )
        })?;
        Ok(key)
    }

    /// Marks a key used, only if it was not: returns false when someone else used it first.
    pub fn mark_pre_auth_key_used(&self, id: u64) -> Result<bool, DbError> {
        self.transaction(|c| consume(c, id))
    }

    /// Replaces a key's stored hash (a Headscale bcrypt hash by a SHA-256 after its first use),
    /// only if it is still `old`: returns false when the key changed or went meanwhile.
    pub fn rehash_pre_auth_key(&self, id: u64, old: &KeyHash, new: &KeyHash) -> Result<bool, DbError> {
        let sql = "UPDATE pre_auth_keys SET hash = $1 WHERE id = $2 AND hash = $3";
        Ok(self.transaction(|c| c.execute(sql, args![new.to_bytes(), id, old.to_bytes()]))? == 1)
    }

    /// Sets a key's expiration.
    pub fn set_pre_auth_key_expiration(&self, id: u64, at: DateTime<Utc>) -> Result<(), DbError> {
        self.transaction(|c| c.execute("UPDATE pre_auth_keys SET expiration = $1 WHERE id = $2", args![at, id]))?;
        Ok(())
    }

    /// Deletes a key; nodes it registered keep working.
    pub fn delete_pre_auth_key(&self, id: u64) -> Result<(), DbError> {
        self.transaction(|c| c.execute("DELETE FROM pre_auth_keys WHERE id = $1", args![id]))?;
        Ok(())
    }

    /// Every pre-auth key, by id.
    pub fn pre_auth_keys(&self) -> Result<Vec<PreAuthKey>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM pre_auth_keys ORDER BY id");
        let rows = self.with(|c| c.query("pre_auth_keys", &sql, &[]))?;
        rows.iter().map(read_key).collect()
    }
}
