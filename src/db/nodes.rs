//! Stored nodes: insert (consuming a one-shot key in the same transaction), update, delete,
//! list. Keys and addresses are stored in their text forms, lists and host info as JSON.

use super::pre_auth_keys::consume;
use super::sql::{json, Conn, Row, Value};
use super::{Db, DbError};
use crate::model::{Node, NodeId, RegisterMethod};

const COLUMNS: &str = "id, machine_key, node_key, disco_key, endpoints, hostinfo, ipv4, ipv6, hostname, \
    given_name, user_id, register_method, tags, auth_key_id, ephemeral, expiry, last_seen, approved_routes, created_at";

const INSERT: &str = "INSERT INTO nodes (machine_key, node_key, disco_key, endpoints, hostinfo, ipv4, ipv6, hostname,
       given_name, user_id, register_method, tags, auth_key_id, ephemeral, expiry, last_seen, approved_routes, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING id";

const UPDATE: &str = "UPDATE nodes SET machine_key = $1, node_key = $2, disco_key = $3, endpoints = $4, hostinfo = $5,
       ipv4 = $6, ipv6 = $7, hostname = $8, given_name = $9, user_id = $10, register_method = $11, tags = $12,
       auth_key_id = $13, ephemeral = $14, expiry = $15, last_seen = $16, approved_routes = $17, created_at = $18
     WHERE id = $19";

const UPDATE_REPORTED: &str =
    "UPDATE nodes SET disco_key = $1, endpoints = $2, hostinfo = $3, last_seen = $4 WHERE id = $5";

/// The stored columns of a node, in the order of `INSERT` and `UPDATE`; the id comes last.
fn values(n: &Node) -> Result<[Value; 19], DbError> {
    Ok([
        n.machine_key.to_string().into(),
        n.node_key.to_string().into(),
        n.disco_key.map(|k| k.to_string()).into(),
        json("endpoints", &n.endpoints)?,
        json("hostinfo", &n.hostinfo)?,
        n.ipv4.map(|a| a.to_string()).into(),
        n.ipv6.map(|a| a.to_string()).into(),
        n.hostname.as_str().into(),
        n.given_name.as_str().into(),
        n.user_id.into(),
        n.register_method.as_str().into(),
        json("tags", &n.tags)?,
        n.auth_key_id.into(),
        n.ephemeral.into(),
        n.expiry.into(),
        n.last_seen.into(),
        json("approved_routes", &n.approved_routes)?,
        n.created_at.into(),
        n.id.into(),
    ])
}

fn read_node(r: &Row) -> Result<Node, DbError> {
    Ok(Node {
        id: r.id("id")?,
        machine_key: r.parsed("machine_key")?,
        node_key: r.parsed("node_key")?,
        disco_key: r.opt_parsed("disco_key")?,
        endpoints: r.json("endpoints")?,
        hostinfo: r.json("hostinfo")?,
        ipv4: r.opt_parsed("ipv4")?,
        ipv6: r.opt_parsed("ipv6")?,
        hostname: r.text("hostname")?,
        given_name: r.text("given_name")?,
        user_id: r.opt_id("user_id")?,
        register_method: RegisterMethod::parse(&r.text("register_method")?),
        tags: r.json("tags")?,
        auth_key_id: r.opt_id("auth_key_id")?,
        ephemeral: r.flag("ephemeral")?,
        expiry: r.opt_time("expiry")?,
        last_seen: r.opt_time("last_seen")?,
        approved_routes: r.json("approved_routes")?,
        created_at: r.time("created_at")?,
    })
}

const RESTORE: &str = "INSERT INTO nodes (machine_key, node_key, disco_key, endpoints, hostinfo, ipv4, ipv6, hostname,
       given_name, user_id, register_method, tags, auth_key_id, ephemeral, expiry, last_seen, approved_routes, created_at, id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// Stores `node` with its own id (a database taken over keeps its ids).
pub(super) fn restore(c: &mut dyn Conn, node: &Node) -> Result<(), DbError> {
    c.execute(RESTORE, &values(node)?)?;
    Ok(())
}

impl Db {
    /// Stores a new node (its id is assigned here) and, in the same transaction, marks the
    /// one-shot key that registered it as used. Returns `None`, storing nothing, if that key
    /// was used meanwhile.
    pub fn insert_node(&self, mut node: Node, consume_key: Option<u64>) -> Result<Option<Node>, DbError> {
        let values = values(&node)?;
        let id = self.transaction(|c| {
            if let Some(key) = consume_key {
                if !consume(c, key)? {
                    return Ok(None);
                }
            }
            c.insert("nodes", INSERT, &values[..18]).map(Some)
        })?;
        Ok(id.map(|id| {
            node.id = id;
            node
        }))
    }

    /// Writes every column of an existing node.
    pub fn update_node(&self, node: &Node) -> Result<(), DbError> {
        let values = values(node)?;
        self.transaction(|c| c.execute(UPDATE, &values))?;
        Ok(())
    }

    /// Writes what nodes report about themselves (disco key, endpoints, host info, last seen)
    /// for many nodes in one transaction; a node deleted meanwhile is skipped.
    pub fn update_reported_fields(&self, nodes: &[Node]) -> Result<(), DbError> {
        let rows = nodes
            .iter()
            .map(|n| {
                Ok([
                    n.disco_key.map(|k| k.to_string()).into(),
                    json("endpoints", &n.endpoints)?,
                    json("hostinfo", &n.hostinfo)?,
                    n.last_seen.into(),
                    n.id.into(),
                ])
            })
            .collect::<Result<Vec<[Value; 5]>, DbError>>()?;
        self.transaction(|c| rows.iter().try_for_each(|row| c.execute(UPDATE_REPORTED, row).map(drop)))
    }

    /// Updates an existing node and marks a key used in one transaction (re-authentication
    /// with a one-shot key). Returns false, changing nothing, if the key was used meanwhile.
    pub fn update_node_consuming_key(&self, node: &Node, key_id: u64) -> Result<bool, DbError> {
        let values = values(node)?;
        self.transaction(|c| {
            if !consume(c, key_id)? {
                return Ok(false);
            }
            c.execute(UPDATE, &values)?;
            Ok(true)
        })
    }

    /// Deletes a node.
    pub fn delete_node(&self, id: NodeId) -> Result<(), DbError> {
        self.transaction(|c| c.execute("DELETE FROM nodes WHERE id = $1", &[id.into()]))?;
        Ok(())
    }

    /// Every node, by id.
    pub fn nodes(&self) -> Result<Vec<Node>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM nodes ORDER BY id");
        let rows = self.with(|c| c.query("nodes", &sql, &[]))?;
        rows.iter().map(read_node).collect()
    }
}
