//! What a scenario leaves behind in `control_logs/<timestamp>-<scenario>-<client>/`: the server
//! log, each client's log (an official client's holds every MapRequest it sent and
//! MapResponse it decoded) and final status (its own and what it sees of every other client;
//! an official client's whole map too, in `NAME.netmap.json`), the
//! database (the SQLite files copied out of the server container, or a `pg_dump` and the
//! PostgreSQL log), every MapResponse the server recorded (when it was asked to and supports it), the health
//! and metrics pages, and `result.txt` with the verdict.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use integration::protocol::Request;
use integration::scenario::World;
use serde_json::json;

use crate::world::{DockerWorld, CONTROL_PORT, DATA_DIR, MAPRESPONSE_DIR, METRICS_PORT};
use crate::{docker, postgres};
use integration::http::get as http_get;

/// The directory of one scenario's artifacts, created under `control_logs/`.
pub fn scenario_dir(root: &Path, started: chrono::DateTime<chrono::Local>, scenario: &str) -> Result<PathBuf> {
    let dir = root.join("control_logs").join(format!("{}-{scenario}", started.format("%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
}

/// Collects everything; with `stop_server` the server is stopped first, so that the database
/// files are copied at rest. Each part that fails is noted in `collect-errors.txt` and the
/// rest is still collected.
pub async fn collect(world: &DockerWorld, dir: &Path, stop_server: bool) -> Result<()> {
    let mut errors = Vec::new();
    let mut note = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            errors.push(format!("{what}: {e:#}"));
        }
    };
    note("client statuses", client_statuses(world, dir).await);
    note("health and metrics pages", pages(world, dir).await);
    if stop_server {
        note("stopping the server", docker::stop(&world.docker, &world.server, Duration::from_secs(10)).await);
    }
    match &world.postgres {
        Some(pg) => {
            note("pg_dump", postgres::dump(&world.docker, pg).await.and_then(|sql| write(dir, "db/pg_dump.sql", sql)));
            note("PostgreSQL log", docker::logs(&world.docker, pg).await.and_then(|l| write(dir, "postgres.log", l)));
        }
        None => note("server data directory", data_dir(world, dir).await),
    }
    note("MapResponses", map_responses(world, dir).await);
    note("server log", docker::logs(&world.docker, &world.server).await.and_then(|l| write(dir, "headscale.log", l)));
    for (name, c) in world.clients() {
        note(
            &format!("log of {name}"),
            docker::logs(&world.docker, &c.container).await.and_then(|l| write(dir, &format!("{name}.log"), l)),
        );
    }
    if !errors.is_empty() {
        write(dir, "collect-errors.txt", errors.join("\n") + "\n")?;
    }
    Ok(())
}

/// Each running client's status and its view of every other client.
async fn client_statuses(world: &DockerWorld, dir: &Path) -> Result<()> {
    let clients = world.clients();
    for (name, c) in &clients {
        let report = if docker::state(&world.docker, &c.container).await?.0 {
            let status =
                world.ask(name, &Request::Status).await.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
            let mut peers = serde_json::Map::new();
            for other in clients.keys().filter(|o| *o != name) {
                let seen = world
                    .ask(name, &Request::Peer(other.clone()))
                    .await
                    .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
                peers.insert(other.clone(), seen);
            }
            if c.kind == integration::scenario::ClientKind::Go {
                let map =
                    world.ask(name, &Request::NetMap).await.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
                write(dir, &format!("{name}.netmap.json"), serde_json::to_string_pretty(&map)?)?;
            }
            json!({ "container": c.container, "ip": c.ip, "client": c.kind.name(), "status": status, "peers": peers })
        } else {
            json!({ "container": c.container, "ip": c.ip, "status": "stopped" })
        };
        write(dir, &format!("{name}.status.json"), serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// `/health` and `/version` of the main listener, and `/metrics` of the metrics listener.
async fn pages(world: &DockerWorld, dir: &Path) -> Result<()> {
    let main = SocketAddr::from((world.server_ip, CONTROL_PORT));
    let metrics = SocketAddr::from((world.server_ip, METRICS_PORT));
    let mut report = String::new();
    for (addr, path, file) in
        [(main, "/health", "health.txt"), (main, "/version", "version.txt"), (metrics, "/metrics", "metrics.txt")]
    {
        match http_get(addr, path).await {
            Ok((200, body)) => write(dir, file, body)?,
            Ok((code, _)) => report.push_str(&format!("GET http://{addr}{path}: HTTP {code}\n")),
            Err(e) => report.push_str(&format!("GET http://{addr}{path}: {e:#}\n")),
        }
    }
    if !report.is_empty() {
        write(dir, "pages-not-served.txt", report)?;
    }
    Ok(())
}

/// Unpacks the regular files of a tar archive under `into`, dropping the archive's top
/// directory `strip` and any file for which `keep` says no.
fn unpack(archive: &[u8], strip: &str, into: &Path, keep: impl Fn(&Path) -> bool) -> Result<usize> {
    let mut count = 0;
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.into_owned();
        let rel = path.strip_prefix(strip).unwrap_or(&path).to_path_buf();
        if !keep(&rel) || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            continue;
        }
        let dest = into.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        std::fs::write(&dest, content).with_context(|| format!("writing {}", dest.display()))?;
        count += 1;
    }
    Ok(count)
}

/// The SQLite database (with `-wal` and `-shm`), copied out of the server container.
async fn data_dir(world: &DockerWorld, dir: &Path) -> Result<()> {
    let archive = docker::download(&world.docker, &world.server, DATA_DIR)
        .await?
        .with_context(|| format!("{DATA_DIR} does not exist in the server container"))?;
    let n = unpack(&archive, "headscale", &dir.join("db"), |p| {
        p.parent().is_some_and(|d| d.as_os_str().is_empty())
            && p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("db.sqlite"))
    })?;
    anyhow::ensure!(n > 0, "no db.sqlite in {DATA_DIR}");
    Ok(())
}

/// The recorded MapResponses, if the server recorded any.
async fn map_responses(world: &DockerWorld, dir: &Path) -> Result<()> {
    match docker::download(&world.docker, &world.server, MAPRESPONSE_DIR).await? {
        Some(archive) => {
            unpack(&archive, "mapresponses", &dir.join("mapresponses"), |_| true)?;
        }
        None => write(
            dir,
            "mapresponses-missing.txt",
            format!("the server wrote nothing to {MAPRESPONSE_DIR} (HEADSCALE_DEBUG_DUMP_MAPRESPONSE_PATH)\n"),
        )?,
    }
    Ok(())
}
