//! Taking over a Headscale database in place. A database Headscale (v0.25.1 to v0.29) made is
//! recognised by its `migrations` table; its rows are read with Headscale's encodings (Go's
//! time text, JSON lists that may be `null`, zero times, bcrypt and plain-text keys), brought
//! to the state Headscale v0.29.2's own migrations leave them in, and written into this
//! server's schema, in one transaction that also drops Headscale's tables: all of it, or
//! nothing. Ids are kept, so nodes keep their ids, names and addresses, and registered devices
//! reconnect without logging in again.
//!
//! What Headscale's data migrations after its v0.25 baseline do, and so what is done here:
//! a pre-auth key reference to a missing key is cleared; `forced_tags` became `tags`; tags a
//! client asked for before v0.28 (`Hostinfo.RequestTags`) are granted where the database
//! policy lets the node's user own them (a policy in a file is not read here); a tagged node
//! belongs to no user; an untagged node without a user gets its pre-auth key's
//! user; a node expiry before 1900 (Go's zero time) means none. Pre-auth keys keep working as
//! Headscale checks them: bcrypt of the secret for `hskey-auth-` keys, the whole key for
//! plain-text legacy keys (stored here as its SHA-256, under a `legacy-<id>` prefix).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};

use super::sql::{self, Conn, Engine, Row, Value};
use super::{api_keys, migrations, nodes, policies, pre_auth_keys, users, ApiKey, DbError, StoredPolicy};
use crate::auth::LEGACY_KEY_PREFIX;
use crate::model::{KeyHash, Node, PreAuthKey, RegisterMethod, User};
use crate::policy::{ParsedPolicy, PolicyUser};
use crate::tailcfg::Hostinfo;

/// The migrations Headscale v0.29.2 knows, in order (`hscontrol/db/db.go`).
pub const HEADSCALE_MIGRATIONS: [&str; 17] = [
    "202501221827",
    "202501311657",
    "202502070949",
    "202502131714",
    "202502171819",
    "202505091439",
    "202505141324",
    "202507021200",
    "202510311551",
    "202511101554-drop-old-idx",
    "202511011637-preauthkey-bcrypt",
    "202511122344-remove-newline-index",
    "202511131445-node-forced-tags-to-tags",
    "202601121700-migrate-hostinfo-request-tags",
    "202602201200-clear-tagged-node-user-id",
    "202605221435-clear-zero-time-node-expiry",
    "202606181200-recover-null-tags-node-user-id",
];

/// The Headscale migration that grants the tags clients asked for before v0.28.
const REQUEST_TAGS_MIGRATION: &str = "202601121700-migrate-hostinfo-request-tags";

/// Headscale v0.25's baseline migration: older databases must first be upgraded by Headscale.
const BASELINE: &str = "202501221827";

/// An API key without an expiry in Headscale never expires: this far ahead.
const NEVER: &str = "9999-12-31T23:59:59Z";

/// Headscale's tables, dropped once their rows are copied (children before parents).
const HEADSCALE_TABLES: [&str; 8] =
    ["nodes", "pre_auth_keys", "api_keys", "policies", "routes", "users", "migrations", "database_versions"];

/// A Headscale database, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The last of Headscale's migrations it ran.
    pub last_migration: String,
}

/// What a takeover copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub users: usize,
    pub nodes: usize,
    pub pre_auth_keys: usize,
    pub api_keys: usize,
    pub policy: bool,
}

/// The tables of the database.
fn tables(c: &mut dyn Conn) -> Result<BTreeSet<String>, DbError> {
    let sql = match c.engine() {
        Engine::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Engine::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = current_schema()"
        }
    };
    c.query("tables", sql, &[])?.iter().map(|r| r.text("name")).collect()
}

/// The columns of `table`.
fn columns(c: &mut dyn Conn, table: &'static str) -> Result<BTreeSet<String>, DbError> {
    let rows = match c.engine() {
        Engine::Sqlite => c.query(table, &format!("SELECT name FROM pragma_table_info('{table}')"), &[])?,
        Engine::Postgres => c.query(
            table,
            "SELECT column_name::text AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[table.into()],
        )?,
    };
    rows.iter().map(|r| r.text("name")).collect()
}

/// Whether the database is Headscale's: `None` if it is not (empty, or this server's).
/// A Headscale database older than v0.25.1, or newer than the v0.29 releases understood, is
/// an error that says what to do.
pub fn detect(c: &mut dyn Conn) -> Result<Option<Found>, DbError> {
    let tables = tables(c)?;
    if !tables.contains("migrations") || tables.contains("schema_version") {
        return Ok(None);
    }
    if c.engine() == Engine::Sqlite && migrations::version(c)? != 0 {
        return Ok(None);
    }
    let ids: BTreeSet<String> = c
        .query("migrations", "SELECT id FROM migrations", &[])?
        .iter()
        .map(|r| r.text("id"))
        .collect::<Result<_, _>>()?;
    if let Some(newer) = ids.iter().find(|id| !HEADSCALE_MIGRATIONS.contains(&id.as_str()) && id.as_str() > BASELINE) {
        return Err(DbError::HeadscaleTooNew(newer.clone()));
    }
    if !ids.contains(BASELINE) {
        return Err(DbError::HeadscaleTooOld);
    }
    let last = HEADSCALE_MIGRATIONS.iter().rev().find(|id| ids.contains(**id)).expect("the baseline is known");
    Ok(Some(Found { last_migration: last.to_string() }))
}

/// The ids of the Headscale migrations the database ran.
fn migration_ids(c: &mut dyn Conn) -> Result<BTreeSet<String>, DbError> {
    c.query("migrations", "SELECT id FROM migrations", &[])?.iter().map(|r| r.text("id")).collect()
}

/// Converts the Headscale database on `c` into this server's schema, in one transaction.
pub fn convert(c: &mut dyn Conn) -> Result<Summary, DbError> {
    let engine = c.engine();
    sql::transaction(c, migrations::begin_exclusive(engine), |c| {
        let ran = migration_ids(c)?;
        let data = Headscale::read(c, &ran)?;
        for table in HEADSCALE_TABLES {
            c.batch(&format!("DROP TABLE IF EXISTS {table}"))?;
        }
        migrations::create_all(c)?;
        data.write(c)
    })
    .map_err(|e| DbError::Takeover(Box::new(e)))
}

/// A column to read: plain, or a time (read as text in both engines).
enum Column {
    Plain(&'static str),
    Time(&'static str),
}

/// `SELECT`s `wanted` from `table`, with `NULL` for the columns this database's release lacks.
fn select(c: &mut dyn Conn, table: &'static str, wanted: &[Column], rest: &str) -> Result<Vec<Row>, DbError> {
    let present = columns(c, table)?;
    let list: Vec<String> = wanted
        .iter()
        .map(|col| match col {
            Column::Plain(n) | Column::Time(n) if !present.contains(*n) => format!("NULL AS {n}"),
            Column::Plain(n) => n.to_string(),
            Column::Time(n) => format!("CAST({n} AS TEXT) AS {n}"),
        })
        .collect();
    c.query(table, &format!("SELECT {} FROM {table} {rest}", list.join(", ")), &[])
}

/// A time as Headscale wrote it: Go's `2006-01-02 15:04:05.999999999-07:00` in SQLite,
/// PostgreSQL's text of a `timestamptz`, or RFC 3339.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok().map(|t| t.and_utc()))
}

/// Go's zero time and anything before 1900: unset.
fn is_zero(t: &DateTime<Utc>) -> bool {
    t.year() < 1900
}

/// Reads a time column; `Err` when it holds text that is not a time.
fn time(r: &Row, column: &'static str) -> Result<Option<DateTime<Utc>>, DbError> {
    match r.opt_text(column)? {
        None => Ok(None),
        Some(t) if t.is_empty() => Ok(None),
        Some(t) => parse_time(&t).map(Some).ok_or_else(|| DbError::Corrupt {
            table: "headscale",
            column,
            message: format!("{t:?} is not a time"),
        }),
    }
}

/// A flag as either engine stores it (`numeric` 0/1 in SQLite, `boolean` in PostgreSQL).
fn flag(r: &Row, column: &'static str) -> Result<bool, DbError> {
    Ok(match r.opt_text(column).ok().flatten().as_deref() {
        Some("true" | "t" | "1") => true,
        Some(_) => false,
        None => r.flag(column).unwrap_or(false),
    })
}

/// A JSON list column that may be NULL, empty, `null` or `[]`.
fn list<T: serde::de::DeserializeOwned>(r: &Row, column: &'static str) -> Result<Vec<T>, DbError> {
    match r.opt_text(column)?.as_deref().map(str::trim) {
        None | Some("" | "null") => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| DbError::Corrupt {
            table: "headscale",
            column,
            message: format!("{text:?}: {e}"),
        }),
    }
}

/// A text column parsed, NULL and empty meaning none.
fn non_empty<T: std::str::FromStr>(r: &Row, column: &'static str) -> Result<Option<T>, DbError> {
    match r.opt_text(column)?.filter(|t| !t.is_empty()) {
        Some(t) => t.parse().map(Some).map_err(|_| DbError::Corrupt {
            table: "nodes",
            column,
            message: format!("{t:?} is not valid"),
        }),
        None => Ok(None),
    }
}

/// Every row worth keeping, read from Headscale's tables.
struct Headscale {
    users: Vec<User>,
    keys: Vec<PreAuthKey>,
    api_keys: Vec<ApiKey>,
    nodes: Vec<Node>,
    policy: Option<StoredPolicy>,
}

impl Headscale {
    fn read(c: &mut dyn Conn, migrations_run: &BTreeSet<String>) -> Result<Headscale, DbError> {
        use Column::{Plain, Time};
        let now = Utc::now();
        let mut users = Vec::new();
        let cols = [
            Plain("id"),
            Plain("name"),
            Plain("display_name"),
            Plain("email"),
            Plain("provider_identifier"),
            Plain("provider"),
            Plain("profile_pic_url"),
            Time("created_at"),
            Time("deleted_at"),
        ];
        for r in select(c, "users", &cols, "ORDER BY id")? {
            if time(&r, "deleted_at")?.is_some() {
                continue;
            }
            let text = |col| r.opt_text(col).map(Option::unwrap_or_default);
            users.push(User {
                id: r.id("id")?,
                name: text("name")?,
                display_name: text("display_name")?,
                email: text("email")?,
                provider_id: text("provider_identifier")?,
                provider: text("provider")?,
                profile_pic_url: text("profile_pic_url")?,
                created_at: time(&r, "created_at")?.unwrap_or(now),
            });
        }
        let user_ids: BTreeSet<u64> = users.iter().map(|u| u.id).collect();

        let mut keys = Vec::new();
        // Every key row's owner, usable or not: Headscale recovers a node's user from it.
        let mut key_owner: HashMap<u64, Option<u64>> = HashMap::new();
        let cols = [
            Plain("id"),
            Plain("key"),
            Plain("prefix"),
            Plain("hash"),
            Plain("user_id"),
            Plain("reusable"),
            Plain("ephemeral"),
            Plain("used"),
            Plain("tags"),
            Time("expiration"),
            Time("created_at"),
        ];
        for r in select(c, "pre_auth_keys", &cols, "ORDER BY id")? {
            let id = r.id("id")?;
            let user_id = r.opt_id("user_id")?.filter(|u| user_ids.contains(u));
            key_owner.insert(id, user_id);
            let prefix = r.opt_text("prefix")?.filter(|p| !p.is_empty());
            let hash = match r.raw("hash")? {
                Value::Bytes(b) if !b.is_empty() => KeyHash::from_bytes(b),
                _ => None,
            };
            let (prefix, hash) = match (prefix, hash, r.opt_text("key")?.filter(|k| !k.is_empty())) {
                (Some(prefix), Some(hash), _) => (prefix, hash),
                (_, _, Some(plain)) => (format!("{LEGACY_KEY_PREFIX}{id}"), KeyHash::of(&plain)),
                _ => {
                    tracing::warn!(id, "a Headscale pre-auth key has neither a hash nor a plain key: it cannot be used, and is not kept");
                    continue;
                }
            };
            keys.push(PreAuthKey {
                id,
                prefix,
                hash,
                user_id,
                reusable: flag(&r, "reusable")?,
                ephemeral: flag(&r, "ephemeral")?,
                used: flag(&r, "used")?,
                tags: list(&r, "tags")?,
                expiration: time(&r, "expiration")?,
                created_at: time(&r, "created_at")?.unwrap_or(now),
            });
        }
        let key_of: HashMap<u64, &PreAuthKey> = keys.iter().map(|k| (k.id, k)).collect();

        let mut api_keys = Vec::new();
        let cols =
            [Plain("id"), Plain("prefix"), Plain("hash"), Time("expiration"), Time("created_at"), Time("last_seen")];
        let never = parse_time(NEVER).expect("a valid time");
        for r in select(c, "api_keys", &cols, "ORDER BY id")? {
            let Value::Bytes(bytes) = r.raw("hash")? else { continue };
            let Some(hash) = KeyHash::from_bytes(bytes) else { continue };
            api_keys.push(ApiKey {
                id: r.id("id")?,
                prefix: r.text("prefix")?,
                hash,
                expiration: time(&r, "expiration")?.unwrap_or(never),
                created_at: time(&r, "created_at")?.unwrap_or(now),
                last_seen: time(&r, "last_seen")?.filter(|t| !is_zero(t)),
            });
        }

        let cols = [Plain("data"), Time("updated_at"), Time("created_at"), Time("deleted_at")];
        let mut policy = None;
        for r in select(c, "policies", &cols, "ORDER BY id DESC")? {
            if time(&r, "deleted_at")?.is_some() {
                continue;
            }
            let at = time(&r, "updated_at")?.or(time(&r, "created_at")?).unwrap_or(now);
            policy = r.opt_text("data")?.map(|data| StoredPolicy { data, updated_at: at });
            break;
        }
        // Tags clients asked for before Headscale v0.28 made tags identity, which Headscale's
        // migration 202601121700 grants where the database policy lets the node's user own them.
        let grant_requested = !migrations_run.contains(REQUEST_TAGS_MIGRATION);
        let owners = policy.as_ref().filter(|_| grant_requested).and_then(|p| ParsedPolicy::parse(&p.data).ok());
        let policy_users: Vec<PolicyUser> =
            users.iter().map(|u| PolicyUser { id: u.id, name: u.name.clone(), email: u.email.clone() }).collect();
        let mut nodes = Vec::new();
        let cols = [
            Plain("id"),
            Plain("machine_key"),
            Plain("node_key"),
            Plain("disco_key"),
            Plain("endpoints"),
            Plain("host_info"),
            Plain("ipv4"),
            Plain("ipv6"),
            Plain("hostname"),
            Plain("given_name"),
            Plain("user_id"),
            Plain("register_method"),
            Plain("tags"),
            Plain("forced_tags"),
            Plain("auth_key_id"),
            Time("last_seen"),
            Time("expiry"),
            Plain("approved_routes"),
            Time("created_at"),
            Time("deleted_at"),
        ];
        for r in select(c, "nodes", &cols, "ORDER BY id")? {
            if time(&r, "deleted_at")?.is_some() {
                continue;
            }
            let id = r.id("id")?;
            let hostinfo: Hostinfo = match r.opt_text("host_info")?.filter(|t| !t.trim().is_empty()) {
                Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                    tracing::warn!(id, error = %e, "a Headscale node's host info cannot be read; it is left empty");
                    Hostinfo::default()
                }),
                None => Hostinfo::default(),
            };
            let mut tags: Vec<String> =
                if r.opt_text("tags")?.is_some() { list(&r, "tags")? } else { list(&r, "forced_tags")? };
            if let (Some(owners), Some(owner)) = (&owners, r.opt_id("user_id")?) {
                let user = policy_users.iter().find(|u| u.id == owner);
                for tag in &hostinfo.request_tags {
                    if user.is_some_and(|u| owners.user_owns_tag(tag, u, &policy_users)) {
                        tags.push(tag.clone());
                    }
                }
            }
            tags.sort();
            tags.dedup();
            let key_row = r.opt_id("auth_key_id")?.filter(|k| key_owner.contains_key(k));
            let key = key_row.and_then(|k| key_of.get(&k));
            // As Headscale leaves it: a tagged node belongs to no user; an untagged one without
            // a user gets its pre-auth key's (a CLI-registered one stays without).
            let user_id = if !tags.is_empty() {
                None
            } else {
                r.opt_id("user_id")?.filter(|u| user_ids.contains(u)).or_else(|| key_row.and_then(|k| key_owner[&k]))
            };
            let auth_key_id = key.map(|k| k.id);
            let endpoints: Vec<String> = list(&r, "endpoints")?;
            let hostname = r.opt_text("hostname")?.unwrap_or_default();
            nodes.push(Node {
                id,
                machine_key: r.parsed("machine_key")?,
                node_key: r.parsed("node_key")?,
                disco_key: non_empty(&r, "disco_key")?,
                endpoints: endpoints.iter().filter_map(|e| e.parse().ok()).collect(),
                hostinfo,
                ipv4: non_empty(&r, "ipv4")?,
                ipv6: non_empty(&r, "ipv6")?,
                given_name: r.opt_text("given_name")?.filter(|g| !g.is_empty()).unwrap_or_else(|| hostname.clone()),
                hostname,
                user_id,
                register_method: RegisterMethod::parse(&r.opt_text("register_method")?.unwrap_or_default()),
                tags,
                auth_key_id,
                ephemeral: key.is_some_and(|k| k.ephemeral),
                expiry: time(&r, "expiry")?.filter(|t| !is_zero(t)),
                last_seen: time(&r, "last_seen")?.filter(|t| !is_zero(t)),
                approved_routes: list(&r, "approved_routes")?,
                created_at: time(&r, "created_at")?.unwrap_or(now),
            });
        }

        Ok(Headscale { users, keys, api_keys, nodes, policy })
    }

    /// Writes the rows into this server's tables, ids kept, and moves PostgreSQL's id
    /// sequences past them.
    fn write(&self, c: &mut dyn Conn) -> Result<Summary, DbError> {
        self.users.iter().try_for_each(|u| users::restore(c, u))?;
        self.keys.iter().try_for_each(|k| pre_auth_keys::restore(c, k))?;
        self.api_keys.iter().try_for_each(|k| api_keys::restore(c, k))?;
        self.nodes.iter().try_for_each(|n| nodes::restore(c, n))?;
        if let Some(p) = &self.policy {
            policies::restore(c, p)?;
        }
        if c.engine() == Engine::Postgres {
            for table in ["users", "pre_auth_keys", "api_keys", "nodes", "policies"] {
                c.batch(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
                ))?;
            }
        }
        Ok(Summary {
            users: self.users.len(),
            nodes: self.nodes.len(),
            pre_auth_keys: self.keys.len(),
            api_keys: self.api_keys.len(),
            policy: self.policy.is_some(),
        })
    }
}
