//! `hi package`: the server installed as Headscale is, through a deployment's life. The Debian
//! package is built twice by the project's own script (`scripts/build-deb`: an earlier
//! version and this one) from the binary built here; a Debian host boots systemd in a
//! container ([`crate::debian`]); then, checking each step:
//! 1. install: the `headscale` user, the paths, the conffile and the unit; the service enabled
//!    and serving on the example configuration, as with Headscale's package;
//! 2. a Headscale deployment's data in place (service stopped): a database Headscale made, a
//!    policy file, and the config edited as its administrator would;
//! 3. `systemctl start`: the server runs as `headscale` on that data, and two official Go
//!    clients join it and reach each other;
//! 4. `systemctl reload` (SIGHUP): the same process reloads the policy, the clients stay;
//! 5. an upgrade to this version: restarted on the same data and config, the clients back;
//! 6. `systemctl stop`: a clean exit; 7. purge: program and config gone, data and user kept.
//!
//! The service's journal and the usual artifacts go to `control_logs/<time>-package/`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use integration::scenario::{ClientKind, KeyOptions, Tailnet};

use crate::docker;
use crate::world::DockerWorld;
use crate::{artifacts, debian, image};

/// `hi package` arguments.
#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// Leave the Debian host and the clients running afterwards (remove them with
    /// `hi cleanup`).
    #[arg(long)]
    keep: bool,
}

/// The server program the package installs.
const PROGRAM: &str = "/usr/bin/headscale";
/// The conffile the package installs and the administrator edits.
const CONFIG: &str = "/etc/headscale/config.yaml";
/// The Headscale-made database the deployment runs on (a dump from Headscale's test data).
const HEADSCALE_DB: &str = "request_tags_migration_test.sql";
/// A policy file that lets every node reach every other.
const POLICY: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

/// The two packages: an earlier version, and this one to upgrade to.
struct Packages {
    earlier: PathBuf,
    current: PathBuf,
    version: String,
}

/// Builds the packages and the images, runs the life cycle, and reports.
pub async fn run(args: PackageArgs) -> Result<ExitCode> {
    let docker = docker::connect().await?;
    let t0 = Instant::now();
    println!("building headscale, tsnode and gonode (debug)");
    let bins = tokio::task::spawn_blocking(|| image::build_binaries(false)).await??;
    let tailnet_image = image::ensure_image(&docker, &bins).await?;
    let debian_image = debian::ensure_image(&docker).await?;
    let scratch = tempfile::tempdir().context("a scratch directory for the packages")?;
    let binary = bins.headscale.clone();
    let out = scratch.path().to_path_buf();
    let packages = tokio::task::spawn_blocking(move || build_packages(&binary, &out)).await??;
    println!("images and packages ready after {:.0?}", t0.elapsed());

    let run_id = format!("{}-{}", chrono::Local::now().format("%H%M%S"), std::process::id());
    let prefix = format!("hi-{run_id}-pkg");
    let network = docker::create_network(&docker, &prefix, &run_id).await?;
    let host = format!("{prefix}-debian");
    docker::create_container(
        &docker,
        &run_id,
        &debian::host_spec(&host, &debian_image, &network.name, network.host(2)),
    )
    .await?;
    let world = Arc::new(DockerWorld::around(&docker, &run_id, &prefix, &tailnet_image, network, &host, PROGRAM));
    let dir = artifacts::scenario_dir(&image::workspace_root(), chrono::Local::now(), "package")?;
    let outcome = tokio::select! {
        o = async {
            docker::start(&docker, &host).await?;
            life(&world, &packages).await
        } => o,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Ok(journal) = sh(&world, "journalctl --no-pager -o short-iso -u headscale").await {
        let _ = std::fs::write(dir.join("journal.txt"), journal);
    }
    if let Err(e) = artifacts::collect(&world, &dir, false).await {
        eprintln!("collecting artifacts into {}: {e:#}", dir.display());
    }
    if !args.keep {
        if let Err(e) = world.remove().await {
            eprintln!("removing the package test's containers: {e:#}");
        }
    }
    match outcome {
        Ok(()) => {
            println!("PASS package life cycle in {:.0?}\n   artifacts: {}", t0.elapsed(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("FAIL package life cycle: {e:#}\n   artifacts: {}", dir.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `scripts/build-deb` twice from `binary`: an earlier version and the crate's own.
fn build_packages(binary: &Path, out: &Path) -> Result<Packages> {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let build = |v: &str, sub: &str| -> Result<PathBuf> {
        let out = Command::new(image::workspace_root().join("scripts/build-deb"))
            .arg("--binary")
            .arg(binary)
            .args(["--version", v, "--out"])
            .arg(out.join(sub))
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running scripts/build-deb")?;
        ensure!(out.status.success(), "scripts/build-deb --version {v} failed ({})", out.status);
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    // `~` sorts before anything in Debian versions: 0.1.0~earlier < 0.1.0.
    Ok(Packages {
        earlier: build(&format!("{version}~earlier"), "earlier")?,
        current: build(&version, "current")?,
        version,
    })
}

/// Runs `script` with `sh -c` on the Debian host as root; its output, or an error with both
/// streams if it fails.
async fn sh(world: &DockerWorld, script: &str) -> Result<String> {
    let out = docker::exec(&world.docker, &world.server, None, &["/bin/sh", "-c", script]).await?;
    if out.exit_code != 0 {
        bail!("`{script}` exited with {}:\n{}{}", out.exit_code, out.stdout, out.stderr);
    }
    Ok(out.stdout)
}

/// What `systemctl show -p PROPERTY --value headscale` says.
async fn unit(world: &DockerWorld, property: &str) -> Result<String> {
    Ok(sh(world, &format!("systemctl show -p {property} --value headscale")).await?.trim().to_string())
}

/// One check passed: said in the log.
fn passed(what: &str) {
    println!("   ok: {what}");
}

/// Copies a package into the host and installs it with dpkg.
async fn install(world: &DockerWorld, deb: &Path) -> Result<()> {
    let name = deb.file_name().and_then(|n| n.to_str()).context("package file name")?;
    let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    docker::upload_file(&world.docker, &world.server, "/tmp", name, &bytes).await?;
    // As unattended upgrades do: a conffile the administrator changed is kept.
    sh(world, &format!("dpkg --force-confold -i /tmp/{name}")).await?;
    Ok(())
}

/// The steps of a deployment's life, each checked.
async fn life(world: &Arc<DockerWorld>, packages: &Packages) -> Result<()> {
    debian::await_booted(&world.docker, &world.server).await?;
    println!("== install {}", packages.earlier.display());
    install(world, &packages.earlier).await?;
    fresh_install(world).await?;

    println!("== systemctl stop; a Headscale deployment's data and configuration");
    sh(world, "systemctl stop headscale").await?;
    let nodes_before = headscale_data(world).await?;

    println!("== systemctl start headscale");
    sh(world, "systemctl start headscale").await?;
    world.await_healthy().await.context("the service did not become healthy")?;
    let pid = running_as_headscale(world).await?;
    let t = Tailnet::new(world.clone(), ClientKind::Go);
    let listed = t.nodes().await?.len();
    ensure!(listed == nodes_before, "the server lists {listed} nodes where Headscale's database holds {nodes_before}");
    passed(&format!("the {nodes_before} nodes of Headscale's database are served"));
    let user = t.user("packaged").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    for name in ["go-1", "go-2"] {
        t.start(name, Some(&key.key), false).await?;
    }
    both_joined_and_reach(&t).await?;

    println!("== systemctl reload headscale");
    reload(world, &t, &pid).await?;

    println!("== upgrade to {}", packages.current.display());
    install(world, &packages.current).await?;
    upgraded(world, &t, packages, &pid, nodes_before + 2).await?;

    println!("== systemctl stop headscale");
    sh(world, "systemctl stop headscale").await?;
    let state = unit(world, "ActiveState").await?;
    let result = unit(world, "Result").await?;
    ensure!(state == "inactive" && result == "success", "after stop the unit is {state} with result {result}");
    passed("the service stopped cleanly (inactive, result success)");

    println!("== dpkg --purge headscale");
    sh(world, "dpkg --purge headscale").await?;
    sh(world, &format!("test ! -e {PROGRAM} && test ! -e {CONFIG}"))
        .await
        .context("purge left the program or config")?;
    sh(world, "test -s /var/lib/headscale/db.sqlite && getent passwd headscale")
        .await
        .context("purge took the data")?;
    passed("purge removed the program and config, and kept the database and the user");
    Ok(())
}

/// What a first install leaves: the user, the state directory, the conffile and the unit,
/// the service enabled and answering the CLI on the example configuration.
async fn fresh_install(world: &DockerWorld) -> Result<()> {
    let passwd = sh(world, "getent passwd headscale").await?;
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    ensure!(
        fields.get(5) == Some(&"/var/lib/headscale") && fields.get(6) == Some(&"/usr/sbin/nologin"),
        "the headscale user is {passwd:?}"
    );
    passed("system user headscale, home /var/lib/headscale, no login shell");
    let dir = sh(world, "stat -c '%U:%G %a' /var/lib/headscale").await?;
    ensure!(dir.trim() == "headscale:headscale 750", "/var/lib/headscale is {dir:?}");
    passed("/var/lib/headscale belongs to headscale, mode 750");
    let conffiles = sh(world, "dpkg-query -W -f='${Conffiles}' headscale").await?;
    ensure!(conffiles.contains(CONFIG), "{CONFIG} is not a conffile: {conffiles:?}");
    sh(world, "test -f /usr/lib/systemd/system/headscale.service").await?;
    passed("conffile /etc/headscale/config.yaml and unit /usr/lib/systemd/system/headscale.service");
    let enabled = unit(world, "UnitFileState").await?;
    let state = unit(world, "ActiveState").await?;
    ensure!(enabled == "enabled" && state == "active", "after install the unit is {enabled} and {state}");
    let users = sh(world, "headscale users list -o json").await?;
    ensure!(users.trim() == "null", "a fresh install has users: {users}");
    passed("the service is enabled and serves the CLI on the example configuration (no users yet)");
    Ok(())
}

/// Puts a database Headscale made (in place of the fresh one) and a policy file in place and
/// edits the config as an administrator would (this network's address, the policy file);
/// returns how many nodes the database holds.
async fn headscale_data(world: &DockerWorld) -> Result<usize> {
    let scratch = tempfile::tempdir()?;
    let db = scratch.path().join("db.sqlite");
    let dump = image::workspace_root().join("testdata/compat/headscale-db").join(HEADSCALE_DB);
    let sql = std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    let conn = rusqlite::Connection::open(&db)?;
    conn.execute_batch(&sql).with_context(|| format!("loading {HEADSCALE_DB}"))?;
    let nodes: i64 = conn.query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))?;
    drop(conn);
    let bytes = std::fs::read(&db)?;
    sh(world, "rm -f /var/lib/headscale/db.sqlite /var/lib/headscale/db.sqlite-wal /var/lib/headscale/db.sqlite-shm")
        .await?;
    docker::upload_file(&world.docker, &world.server, "/var/lib/headscale", "db.sqlite", &bytes).await?;
    docker::upload_file(&world.docker, &world.server, "/etc/headscale", "policy.hujson", POLICY.as_bytes()).await?;
    let ip = world.server_ip;
    sh(
        world,
        &format!(
            "chown headscale:headscale /var/lib/headscale/db.sqlite && chmod 600 /var/lib/headscale/db.sqlite && \
             sed -i -e 's|^server_url: .*|server_url: http://{ip}:8080|' \
             -e 's|^listen_addr: .*|listen_addr: 0.0.0.0:8080|' \
             -e 's|^    ipv4: .*|    ipv4: {ip}|' {CONFIG} && \
             printf 'policy:\\n  mode: file\\n  path: /etc/headscale/policy.hujson\\n' >> {CONFIG} && \
             headscale configtest"
        ),
    )
    .await?;
    passed(&format!("Headscale's {HEADSCALE_DB} ({nodes} nodes) in place; the config passes configtest"));
    Ok(nodes as usize)
}

/// The service's main process runs as the `headscale` user and its files are that user's;
/// returns the process id.
async fn running_as_headscale(world: &DockerWorld) -> Result<String> {
    let pid = unit(world, "MainPID").await?;
    let uid = sh(world, &format!("awk '/^Uid:/ {{print $2}}' /proc/{pid}/status")).await?;
    let headscale = sh(world, "id -u headscale").await?;
    ensure!(uid.trim() == headscale.trim(), "the server (pid {pid}) runs as uid {uid:?}, not headscale's");
    let foreign = sh(world, "find /var/lib/headscale /run/headscale ! -user headscale").await?;
    ensure!(foreign.trim().is_empty(), "files not owned by headscale: {foreign}");
    sh(world, "test -S /run/headscale/headscale.sock").await.context("no local socket in /var/run/headscale")?;
    passed(&format!("serving as user headscale (pid {pid}); its files and socket are headscale's"));
    Ok(pid)
}

/// Both clients are in the tailnet and reach each other.
async fn both_joined_and_reach(t: &Tailnet) -> Result<()> {
    for name in ["go-1", "go-2"] {
        t.joined(name).await?;
    }
    t.await_reachable("go-1", "go-2").await?;
    let there = t.tcp("go-1", "go-2").await?;
    let back = t.tcp("go-2", "go-1").await?;
    passed(&format!("two Go clients joined and reach each other ({:.0} ms, {:.0} ms)", there.ms, back.ms));
    Ok(())
}

/// `systemctl reload`: the same process reloads the policy file, and the clients stay.
async fn reload(world: &DockerWorld, t: &Tailnet, pid: &str) -> Result<()> {
    let reloads = || async {
        let journal = sh(world, "journalctl --no-pager -o cat -u headscale").await?;
        anyhow::Ok(journal.matches("policy reloaded").count())
    };
    let before = reloads().await?;
    sh(world, "systemctl reload headscale").await?;
    integration::eventually("the policy reloaded after SIGHUP", Duration::from_secs(15), || async {
        (reloads().await.ok()? > before).then_some(())
    })
    .await?;
    let now = unit(world, "MainPID").await?;
    ensure!(now == pid, "reload replaced the process ({pid} → {now})");
    ensure!(unit(world, "ActiveState").await? == "active", "the service is not active after reload");
    let nodes = t.nodes().await?;
    ensure!(
        ["go-1", "go-2"].iter().all(|n| nodes.iter().any(|s| s.name == *n && s.online)),
        "a client went offline over the reload: {nodes:?}"
    );
    t.tcp("go-1", "go-2").await?;
    passed(&format!("SIGHUP reloaded the policy in the same process ({pid}); the clients stayed online"));
    Ok(())
}

/// After the upgrade: the new version runs in a new process, on the same config and data,
/// and the clients are back.
async fn upgraded(world: &DockerWorld, t: &Tailnet, packages: &Packages, pid: &str, nodes: usize) -> Result<()> {
    let version = sh(world, "dpkg-query -W -f='${Version}' headscale").await?;
    ensure!(version.trim() == packages.version, "dpkg says version {version:?}");
    world.await_healthy().await.context("the service did not come back after the upgrade")?;
    let now = unit(world, "MainPID").await?;
    ensure!(now != pid, "the upgrade did not restart the service (still {pid})");
    sh(world, &format!("grep -q '^listen_addr: 0.0.0.0:8080' {CONFIG}"))
        .await
        .context("the upgrade replaced the config")?;
    passed(&format!("upgraded to {version}: restarted ({pid} → {now}), the edited config kept"));
    integration::eventually("both clients online again", Duration::from_secs(60), || async {
        let listed = t.nodes().await.ok()?;
        (listed.len() == nodes && ["go-1", "go-2"].iter().all(|n| listed.iter().any(|s| s.name == *n && s.online)))
            .then_some(())
    })
    .await?;
    t.tcp("go-1", "go-2").await?;
    passed(&format!("all {nodes} nodes kept; the clients reconnected and reach each other"));
    Ok(())
}
