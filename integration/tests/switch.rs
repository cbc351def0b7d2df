//! Switching a Headscale deployment to this server, with the official Go client: devices
//! registered in a database Headscale made reconnect without a key after the switch, keep
//! their addresses and reach each other; a pre-auth key Headscale made registers a new device;
//! an API key Headscale made opens the REST API and the remote gRPC API (the CLI with
//! `cli.address` and `cli.api_key`, as a Headscale admin's remote CLI is set up).
//!
//! The Headscale database is written the way Headscale v0.29 writes it (its own
//! `schema.sql`, its migration rows, Go's time text, bcrypt key hashes), from the rows of the
//! devices that first registered here, since a real device's keys are needed to reconnect.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use headscale::cli::{client_command_output, Cli};
use integration::client::Client;
use integration::go_node::{GoNode, GoSpec};
use integration::protocol::{NodeStatus, Request};
use integration::scenario::ECHO_PORT;
use integration::{eventually, init, Options, TestServer};

const SCHEMA: &str = include_str!("../../testdata/compat/headscale-db/schema.sql");

/// The secret of the pre-auth key and of the API key that "Headscale" made.
const SECRET: &str = "Hs0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop";
const AUTH_PREFIX: &str = "hsauthprefix";
const API_PREFIX: &str = "hsapi-prefix";

fn go_time(text: &str) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(text).expect("an RFC 3339 time");
    t.format("%Y-%m-%d %H:%M:%S%.f+00:00").to_string()
}

/// Replaces the server's database in `dir` with a Headscale v0.29 database holding its users
/// and nodes, a Headscale-made pre-auth key for the first user, and a Headscale-made API key.
fn make_it_headscales(dir: &Path) -> Result<()> {
    let ours = rusqlite::Connection::open(dir.join("db.sqlite"))?;
    let theirs_path = dir.join("headscale.sqlite");
    let theirs = rusqlite::Connection::open(&theirs_path)?;
    theirs.execute_batch(SCHEMA)?;
    for id in headscale::db::HEADSCALE_MIGRATIONS {
        theirs.execute("INSERT INTO migrations (id) VALUES (?1)", [id])?;
    }
    theirs.execute(
        "INSERT INTO database_versions (id, version, updated_at) VALUES (1, 'v0.29.2', '2026-01-01 00:00:00+00:00')",
        [],
    )?;
    let mut users = ours.prepare("SELECT id, name, display_name, email, created_at FROM users")?;
    let mut first_user = None;
    for row in users.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })? {
        let (id, name, display, email, created) = row?;
        first_user.get_or_insert(id);
        theirs.execute(
            "INSERT INTO users (id, name, display_name, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            rusqlite::params![id, name, display, email, go_time(&created)],
        )?;
    }
    let mut nodes = ours.prepare(
        "SELECT id, machine_key, node_key, disco_key, endpoints, hostinfo, ipv4, ipv6, hostname, given_name, user_id,
                register_method, tags, last_seen, approved_routes, created_at FROM nodes",
    )?;
    let rows: Vec<Vec<rusqlite::types::Value>> =
        nodes.query_map([], |r| (0..16).map(|i| r.get(i)).collect())?.collect::<Result<_, _>>()?;
    for mut row in rows {
        for i in [13, 15] {
            if let rusqlite::types::Value::Text(t) = &row[i] {
                row[i] = rusqlite::types::Value::Text(go_time(t));
            }
        }
        theirs.execute(
            "INSERT INTO nodes (id, machine_key, node_key, disco_key, endpoints, host_info, ipv4, ipv6, hostname,
                                given_name, user_id, register_method, tags, last_seen, approved_routes, created_at,
                                updated_at, expiry, auth_key_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16,
                     '0001-01-01 00:00:00+00:00', NULL)",
            rusqlite::params_from_iter(row),
        )?;
    }
    let hash = bcrypt::hash(SECRET, bcrypt::DEFAULT_COST)?;
    theirs.execute(
        "INSERT INTO pre_auth_keys (id, key, prefix, hash, user_id, reusable, ephemeral, used, tags, created_at, expiration)
         VALUES (7, '', ?1, ?2, ?3, 1, 0, 0, '[]', '2026-01-01 00:00:00+00:00', '2999-01-01 00:00:00+00:00')",
        rusqlite::params![AUTH_PREFIX, hash.as_bytes(), first_user.context("a user")?],
    )?;
    theirs.execute(
        "INSERT INTO api_keys (id, prefix, hash, created_at, expiration) VALUES (3, ?1, ?2, '2026-01-01 00:00:00+00:00', NULL)",
        rusqlite::params![API_PREFIX, hash.as_bytes()],
    )?;
    drop(users);
    drop(nodes);
    drop(ours);
    drop(theirs);
    for leftover in ["db.sqlite-wal", "db.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.join(leftover));
    }
    std::fs::rename(theirs_path, dir.join("db.sqlite"))?;
    Ok(())
}

async fn go(server: &TestServer, dir: &Path, name: &str, authkey: Option<String>) -> Result<GoNode> {
    GoNode::start(GoSpec::in_dir(server.url(), dir, name, authkey)).await
}

async fn joined(node: &GoNode) -> Result<NodeStatus> {
    eventually("the node joins", Duration::from_secs(60), || async {
        let status: NodeStatus = serde_json::from_value(node.handle(&Request::Status).await.ok()?).ok()?;
        (status.authorized && status.ipv4.is_some()).then_some(status)
    })
    .await
}

async fn reaches(from: &GoNode, to: &NodeStatus) -> Result<()> {
    let target = SocketAddr::new(to.ipv4.context("an address")?.into(), ECHO_PORT);
    eventually("an exchange through the tailnet", Duration::from_secs(60), || async {
        from.handle(&Request::Tcp(target)).await.ok().map(drop)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_of_a_headscale_database_reconnect_without_a_key() -> Result<()> {
    init();
    let clients = tempfile::tempdir()?;
    // The remote gRPC listener, plaintext, as a deployment behind a TLS proxy runs it.
    let options = Options {
        config: vec![("HEADSCALE_GRPC_LISTEN_ADDR", "127.0.0.1:0"), ("HEADSCALE_GRPC_ALLOW_INSECURE", "true")],
        ..Options::default()
    };
    let server = TestServer::start(options).await?;
    let user = server.create_user("alice").await?;
    let key = server.auth_key(user, true, false).await?;
    let laptop = go(&server, clients.path(), "laptop", Some(key.clone())).await?;
    let phone = go(&server, clients.path(), "phone", Some(key)).await?;
    let (laptop_was, phone_was) = (joined(&laptop).await?, joined(&phone).await?);
    reaches(&laptop, &phone_was).await?;
    laptop.shutdown().await;
    phone.shutdown().await;

    let server = server.restart_after(make_it_headscales).await?;
    let copy = server.dir().join("db.sqlite.headscale-backup");
    ensure!(copy.exists(), "the Headscale database was not copied before the takeover");

    // Back with no key: the devices are known, with their addresses.
    let laptop = go(&server, clients.path(), "laptop", None).await?;
    let phone = go(&server, clients.path(), "phone", None).await?;
    let (laptop_now, phone_now) = (joined(&laptop).await?, joined(&phone).await?);
    ensure!((laptop_now.ipv4, laptop_now.ipv6) == (laptop_was.ipv4, laptop_was.ipv6), "the laptop's addresses moved");
    ensure!((phone_now.ipv4, phone_now.ipv6) == (phone_was.ipv4, phone_was.ipv6), "the phone's addresses moved");
    reaches(&laptop, &phone_now).await?;
    reaches(&phone, &laptop_now).await?;

    // Headscale's pre-auth key registers a new device, which reaches the others.
    let tablet = go(&server, clients.path(), "tablet", Some(format!("hskey-auth-{AUTH_PREFIX}-{SECRET}"))).await?;
    let tablet_now = joined(&tablet).await?;
    reaches(&laptop, &tablet_now).await?;

    // Headscale's API key opens the REST API.
    let addr: SocketAddr = server.config.listen_addr.parse()?;
    let bearer = format!("Bearer hskey-api-{API_PREFIX}-{SECRET}");
    let answer =
        integration::http::request(addr, "GET", "/api/v1/user", &[("Authorization", bearer.as_str())], "").await?;
    ensure!(answer.status == 200 && answer.body.contains("alice"), "REST with Headscale's API key: {answer:?}");
    let wrong = integration::http::request(
        addr,
        "GET",
        "/api/v1/user",
        &[("Authorization", "Bearer hskey-api-hsapi-prefix-wrong")],
        "",
    )
    .await?;
    ensure!(wrong.status == 401, "a wrong secret is refused: {wrong:?}");

    // And the remote gRPC API, through the CLI as a remote admin runs it.
    let grpc = server.running.grpc_addr.context("the remote gRPC listener is bound")?;
    let remote = |key: &str| {
        let mut c = server.config.clone();
        c.cli.address = format!("http://{grpc}");
        c.cli.api_key = key.to_string();
        c
    };
    let cli = Cli::try_parse_from(["headscale", "nodes", "list", "-o", "json"])?;
    let listed = client_command_output(&cli, &remote(&format!("hskey-api-{API_PREFIX}-{SECRET}"))).await?;
    for name in ["laptop", "phone", "tablet"] {
        ensure!(listed.contains(&format!("\"{name}\"")), "gRPC with Headscale's API key lists no {name}: {listed}");
    }
    let refused = client_command_output(&cli, &remote("hskey-api-hsapi-prefix-wrong")).await;
    let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(why.contains("invalid API key"), "gRPC with a wrong secret: {why:?}");

    for node in [laptop, phone, tablet] {
        node.shutdown().await;
    }
    Ok(())
}
