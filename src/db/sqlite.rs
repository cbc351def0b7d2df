//! The SQLite store (rusqlite): opening with WAL, running migrations, and reading and writing
//! users, nodes and pre-auth keys. Calls block; `Db::run` moves them off the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};

use super::migrations::MIGRATIONS;
use super::DbError;
use crate::model::{Node, NodeId, PreAuthKey, RegisterMethod, User, UserId};

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

pub(super) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(table: &'static str, column: &'static str, s: &str) -> Result<DateTime<Utc>, DbError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Corrupt { table, column, message: format!("{s:?}: {e}") })
}

pub(super) fn parse_opt_ts(table: &'static str, column: &'static str, s: Option<String>) -> Result<Option<DateTime<Utc>>, DbError> {
    s.map(|s| parse_ts(table, column, &s)).transpose()
}

fn json<T: serde::de::DeserializeOwned>(table: &'static str, column: &'static str, s: &str) -> Result<T, DbError> {
    serde_json::from_str(s).map_err(|e| DbError::Corrupt { table, column, message: e.to_string() })
}

fn parsed<T: std::str::FromStr>(table: &'static str, column: &'static str, s: &str) -> Result<T, DbError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| DbError::Corrupt { table, column, message: format!("{s:?}: {e}") })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("stored values serialize")
}

impl Db {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path, write_ahead_log: bool, wal_autocheckpoint: i64) -> Result<Db, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let conn = Connection::open(path)?;
        Self::prepare(conn, write_ahead_log, wal_autocheckpoint)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Db, DbError> {
        Self::prepare(Connection::open_in_memory()?, false, 0)
    }

    fn prepare(mut conn: Connection, wal: bool, autocheckpoint: i64) -> Result<Db, DbError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        if wal {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // With WAL, NORMAL still never loses a committed transaction on a process crash.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            if autocheckpoint > 0 {
                conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)?;
            }
        } else {
            conn.pragma_update(None, "synchronous", "FULL")?;
        }
        migrate(&mut conn)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs a blocking database call off the async runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(|_| DbError::Cancelled)?
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// The schema version (number of migrations run).
    pub fn schema_version(&self) -> Result<i64, DbError> {
        self.with(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
    }

    /// Checks that the database answers.
    pub fn ping(&self) -> bool {
        self.with(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)).is_ok()
    }

    // ---- users ----

    /// Stores a new user and returns it with its id.
    pub fn insert_user(&self, mut user: User) -> Result<User, DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO users (name, display_name, email, provider_id, provider, profile_pic_url, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![user.name, user.display_name, user.email, user.provider_id, user.provider, user.profile_pic_url, ts(&user.created_at)],
            )?;
            user.id = c.last_insert_rowid() as UserId;
            Ok(user)
        })
    }

    /// Renames a user.
    pub fn rename_user(&self, id: UserId, name: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("UPDATE users SET name = ?1 WHERE id = ?2", params![name, id as i64])?;
            Ok(())
        })
    }

    /// Deletes a user and, with it, the user's pre-auth keys.
    pub fn delete_user(&self, id: UserId) -> Result<(), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("UPDATE nodes SET auth_key_id = NULL WHERE auth_key_id IN (SELECT id FROM pre_auth_keys WHERE user_id = ?1)", params![id as i64])?;
            tx.execute("DELETE FROM pre_auth_keys WHERE user_id = ?1", params![id as i64])?;
            tx.execute("DELETE FROM users WHERE id = ?1", params![id as i64])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Every user, by id.
    pub fn users(&self) -> Result<Vec<User>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, name, display_name, email, provider_id, provider, profile_pic_url, created_at FROM users ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, display_name, email, provider_id, provider, profile_pic_url, created) = row?;
                out.push(User {
                    id: id as UserId,
                    name,
                    display_name,
                    email,
                    provider_id,
                    provider,
                    profile_pic_url,
                    created_at: parse_ts("users", "created_at", &created)?,
                });
            }
            Ok(out)
        })
    }

    // ---- pre-auth keys ----

    /// Stores a new pre-auth key and returns it with its id.
    pub fn insert_pre_auth_key(&self, mut key: PreAuthKey) -> Result<PreAuthKey, DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO pre_auth_keys (prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    key.prefix,
                    key.hash.to_vec(),
                    key.user_id.map(|u| u as i64),
                    key.reusable,
                    key.ephemeral,
                    key.used,
                    to_json(&key.tags),
                    key.expiration.as_ref().map(ts),
                    ts(&key.created_at)
                ],
            )?;
            key.id = c.last_insert_rowid() as u64;
            Ok(key)
        })
    }

    /// Marks a key used, only if it was not: returns false when someone else used it first.
    pub fn mark_pre_auth_key_used(&self, id: u64) -> Result<bool, DbError> {
        self.with(|c| Ok(c.execute("UPDATE pre_auth_keys SET used = 1 WHERE id = ?1 AND used = 0", params![id as i64])? == 1))
    }

    /// Sets a key's expiration.
    pub fn set_pre_auth_key_expiration(&self, id: u64, at: DateTime<Utc>) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("UPDATE pre_auth_keys SET expiration = ?1 WHERE id = ?2", params![ts(&at), id as i64])?;
            Ok(())
        })
    }

    /// Deletes a key; nodes it registered keep working.
    pub fn delete_pre_auth_key(&self, id: u64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("DELETE FROM pre_auth_keys WHERE id = ?1", params![id as i64])?;
            Ok(())
        })
    }

    /// Every pre-auth key, by id.
    pub fn pre_auth_keys(&self) -> Result<Vec<PreAuthKey>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at FROM pre_auth_keys ORDER BY id",
            )?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let hash: Vec<u8> = r.get(2)?;
                out.push(PreAuthKey {
                    id: r.get::<_, i64>(0)? as u64,
                    prefix: r.get(1)?,
                    hash: hash.try_into().map_err(|_| DbError::Corrupt {
                        table: "pre_auth_keys",
                        column: "hash",
                        message: "not 32 bytes".into(),
                    })?,
                    user_id: r.get::<_, Option<i64>>(3)?.map(|u| u as UserId),
                    reusable: r.get(4)?,
                    ephemeral: r.get(5)?,
                    used: r.get(6)?,
                    tags: json("pre_auth_keys", "tags", &r.get::<_, String>(7)?)?,
                    expiration: parse_opt_ts("pre_auth_keys", "expiration", r.get(8)?)?,
                    created_at: parse_ts("pre_auth_keys", "created_at", &r.get::<_, String>(9)?)?,
                });
            }
            Ok(out)
        })
    }

    // ---- nodes ----

    /// Stores a new node (its id is assigned here) and, in the same transaction, marks the
    /// one-shot key that registered it as used. Fails if that key was used meanwhile.
    pub fn insert_node(&self, mut node: Node, consume_key: Option<u64>) -> Result<Option<Node>, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            if let Some(key_id) = consume_key {
                if tx.execute("UPDATE pre_auth_keys SET used = 1 WHERE id = ?1 AND used = 0", params![key_id as i64])? != 1 {
                    return Ok(None);
                }
            }
            write_node(&tx, &node, true)?;
            node.id = tx.last_insert_rowid() as NodeId;
            tx.commit()?;
            Ok(Some(node))
        })
    }

    /// Writes every column of an existing node.
    pub fn update_node(&self, node: &Node) -> Result<(), DbError> {
        self.with(|c| write_node(c, node, false))
    }

    /// Updates an existing node and marks a key used in one transaction (re-authentication
    /// with a one-shot key). Returns false, changing nothing, if the key was used meanwhile.
    pub fn update_node_consuming_key(&self, node: &Node, key_id: u64) -> Result<bool, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            if tx.execute("UPDATE pre_auth_keys SET used = 1 WHERE id = ?1 AND used = 0", params![key_id as i64])? != 1 {
                return Ok(false);
            }
            write_node(&tx, node, false)?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Deletes a node.
    pub fn delete_node(&self, id: NodeId) -> Result<(), DbError> {
        self.with(|c| {
            c.execute("DELETE FROM nodes WHERE id = ?1", params![id as i64])?;
            Ok(())
        })
    }

    /// Every node, by id.
    pub fn nodes(&self) -> Result<Vec<Node>, DbError> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(read_node(r)?);
            }
            Ok(out)
        })
    }
}

const NODE_COLUMNS: &str = "id, machine_key, node_key, disco_key, endpoints, hostinfo, ipv4, ipv6, hostname, \
    given_name, user_id, register_method, tags, auth_key_id, ephemeral, expiry, last_seen, approved_routes, created_at";

fn write_node(c: &Connection, n: &Node, insert: bool) -> Result<(), DbError> {
    let values = params![
        n.machine_key.to_string(),
        n.node_key.to_string(),
        n.disco_key.map(|k| k.to_string()),
        to_json(&n.endpoints),
        to_json(&n.hostinfo),
        n.ipv4.map(|a| a.to_string()),
        n.ipv6.map(|a| a.to_string()),
        n.hostname,
        n.given_name,
        n.user_id.map(|u| u as i64),
        n.register_method.as_str(),
        to_json(&n.tags),
        n.auth_key_id.map(|k| k as i64),
        n.ephemeral,
        n.expiry.as_ref().map(ts),
        n.last_seen.as_ref().map(ts),
        to_json(&n.approved_routes),
        ts(&n.created_at),
        n.id as i64,
    ];
    if insert {
        c.execute(
            "INSERT INTO nodes (machine_key, node_key, disco_key, endpoints, hostinfo, ipv4, ipv6, hostname, given_name,
               user_id, register_method, tags, auth_key_id, ephemeral, expiry, last_seen, approved_routes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            &values[..18],
        )?;
    } else {
        c.execute(
            "UPDATE nodes SET machine_key = ?1, node_key = ?2, disco_key = ?3, endpoints = ?4, hostinfo = ?5, ipv4 = ?6,
               ipv6 = ?7, hostname = ?8, given_name = ?9, user_id = ?10, register_method = ?11, tags = ?12,
               auth_key_id = ?13, ephemeral = ?14, expiry = ?15, last_seen = ?16, approved_routes = ?17, created_at = ?18
             WHERE id = ?19",
            values,
        )?;
    }
    Ok(())
}

fn read_node(r: &Row<'_>) -> Result<Node, DbError> {
    const T: &str = "nodes";
    let opt = |i: usize| -> Result<Option<String>, DbError> { Ok(r.get::<_, Option<String>>(i)?) };
    Ok(Node {
        id: r.get::<_, i64>(0)? as NodeId,
        machine_key: parsed(T, "machine_key", &r.get::<_, String>(1)?)?,
        node_key: parsed(T, "node_key", &r.get::<_, String>(2)?)?,
        disco_key: opt(3)?.map(|s| parsed(T, "disco_key", &s)).transpose()?,
        endpoints: json(T, "endpoints", &r.get::<_, String>(4)?)?,
        hostinfo: json(T, "hostinfo", &r.get::<_, String>(5)?)?,
        ipv4: opt(6)?.map(|s| parsed(T, "ipv4", &s)).transpose()?,
        ipv6: opt(7)?.map(|s| parsed(T, "ipv6", &s)).transpose()?,
        hostname: r.get(8)?,
        given_name: r.get(9)?,
        user_id: r.get::<_, Option<i64>>(10)?.map(|u| u as UserId),
        register_method: RegisterMethod::parse(&r.get::<_, String>(11)?),
        tags: json(T, "tags", &r.get::<_, String>(12)?)?,
        auth_key_id: r.get::<_, Option<i64>>(13)?.map(|k| k as u64),
        ephemeral: r.get(14)?,
        expiry: parse_opt_ts(T, "expiry", opt(15)?)?,
        last_seen: parse_opt_ts(T, "last_seen", opt(16)?)?,
        approved_routes: json(T, "approved_routes", &r.get::<_, String>(17)?)?,
        created_at: parse_ts(T, "created_at", &r.get::<_, String>(18)?)?,
    })
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(DbError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
