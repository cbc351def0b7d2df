//! PostgreSQL for `hi run --postgres`, in its own container on the scenario's network. The
//! image is made without a registry from this host's PostgreSQL server installation
//! (`/usr/lib/postgresql/<version>`, Debian's `postgresql` package): the server, `initdb` and
//! `pg_dump` with their libraries, the extension modules, the share and time zone data, and
//! `/bin/sh` (initdb starts the server through a shell). The cluster is created once per image
//! by running `initdb` in a container and committing the result, so each scenario starts from
//! an empty, ready cluster in about a second.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bollard::models::ContainerConfig;
use bollard::query_parameters::CommitContainerOptionsBuilder;
use bollard::Docker;

use crate::docker::{self, ContainerSpec};
use crate::rootfs::{prune, RootFs};

/// The port PostgreSQL listens on.
pub const PORT: u16 = 5432;
/// The database, role and password the server uses (`database.postgres.*`).
pub const DATABASE: &str = "postgres";
/// The role the server logs in as; it owns the cluster.
pub const ROLE: &str = "headscale";
/// The role's password (checked with SCRAM over the network).
pub const PASSWORD: &str = "headscale";

const REPOSITORY: &str = "hi-postgres";
const BASE_REPOSITORY: &str = "hi-postgres-base";
const DATA: &str = "/var/lib/postgresql/data";
const CONF_DIR: &str = "/etc/hi-postgres";
/// The `postgres` user in the image.
const UID: u32 = 999;

/// The newest PostgreSQL server installed on this host.
pub fn host_installation() -> Result<PathBuf> {
    test_postgres::debian_installation().context(
        "no PostgreSQL server here: nothing under /usr/lib/postgresql/<version>/bin (apt-get install postgresql)",
    )
}

/// The root file system: the server installation and what it loads.
fn root_fs(install: &Path) -> Result<RootFs> {
    let version = install.file_name().and_then(|v| v.to_str()).context("PostgreSQL version directory")?;
    let mut fs = RootFs::default();
    for tool in ["postgres", "initdb", "pg_dump"] {
        let path = install.join("bin").join(tool);
        fs.host_file(&path, 0o755)?.libraries_of(&path)?;
    }
    for entry in std::fs::read_dir(install.join("lib"))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // The JIT needs LLVM (hundreds of MB); it is switched off instead.
        if name.ends_with(".so") && !name.starts_with("llvmjit") {
            fs.host_file(&path, 0o755)?.libraries_of(&path)?;
        }
    }
    fs.host_tree(&Path::new("/usr/share/postgresql").join(version))?.host_tree(Path::new("/usr/share/zoneinfo"))?;
    let sh = Path::new("/bin/dash");
    fs.file("/bin/sh", 0o755, std::fs::read(sh).context("reading /bin/dash (initdb needs a shell)")?)
        .libraries_of(sh)?;
    fs.file(
        "/etc/passwd",
        0o644,
        format!("root:x:0:0:root:/root:/bin/sh\npostgres:x:{UID}:{UID}:PostgreSQL:/var/lib/postgresql:/bin/sh\n"),
    )
    .file("/etc/group", 0o644, format!("root:x:0:\npostgres:x:{UID}:\n"))
    .file(&format!("{CONF_DIR}/password"), 0o644, format!("{PASSWORD}\n"))
    .file(&format!("{CONF_DIR}/pg_hba.conf"), 0o644, "local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n")
    .dir("/tmp", 0o1777, 0)
    .dir(CONF_DIR, 0o755, 0)
    .dir("/var/lib/postgresql", 0o700, UID)
    .dir("/var/run/postgresql", 0o2775, UID);
    Ok(fs)
}

/// Builds (or finds) the image with an initialized cluster and returns its tag.
pub async fn ensure_image(docker: &Docker, run: &str) -> Result<String> {
    let install = host_installation()?;
    let bin = install.join("bin").display().to_string();
    let path = format!("ENV PATH={bin}:/bin");
    let base = root_fs(&install)?.import(docker, BASE_REPOSITORY, &[&path, "ENV TZ=UTC"]).await?;
    let hash = base.rsplit(':').next().unwrap_or_default();
    let tag = format!("{REPOSITORY}:{hash}");
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let name = format!("hi-{run}-initdb");
    let spec = ContainerSpec {
        name: name.clone(),
        image: base.clone(),
        user: Some("postgres".into()),
        cmd: ["initdb".to_string()]
            .into_iter()
            .chain(test_postgres::initdb_args(DATA, ROLE, &format!("{CONF_DIR}/password")))
            .collect(),
        network: "none".into(),
        role: "initdb".into(),
        ..ContainerSpec::default()
    };
    docker::create_container(docker, run, &spec).await?;
    let initialized = async {
        docker::start(docker, &name).await?;
        let code = docker::wait_exit(docker, &name).await?;
        if code != 0 {
            let log = String::from_utf8_lossy(&docker::logs(docker, &name).await?).into_owned();
            bail!("initdb exited with {code}:\n{log}");
        }
        let opts = CommitContainerOptionsBuilder::new().container(&name).repo(REPOSITORY).tag(hash).build();
        docker
            .commit_container(opts, ContainerConfig::default())
            .await
            .context("committing the initialized cluster")?;
        anyhow::Ok(())
    }
    .await;
    docker::remove_container(docker, &name).await?;
    initialized?;
    prune(docker, REPOSITORY, &tag).await?;
    Ok(tag)
}

/// Starts PostgreSQL as `name` on `network` at `ip` and waits until it accepts connections.
pub async fn start(
    docker: &Docker,
    run: &str,
    name: &str,
    image: &str,
    network: &str,
    ip: std::net::Ipv4Addr,
) -> Result<()> {
    let spec = ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        user: Some("postgres".into()),
        cmd: ["postgres", "-D", DATA, "-c", "listen_addresses=*", "-c", "jit=off"]
            .into_iter()
            .map(String::from)
            .chain(["-c".to_string(), format!("hba_file={CONF_DIR}/pg_hba.conf")])
            .collect(),
        network: network.to_string(),
        ip: Some(ip),
        role: "postgres".into(),
        ..ContainerSpec::default()
    };
    docker::create_container(docker, run, &spec).await?;
    docker::start(docker, name).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = String::from_utf8_lossy(&docker::logs(docker, name).await?).into_owned();
        if log.contains(test_postgres::READY) {
            return Ok(());
        }
        ensure!(docker::state(docker, name).await?.0, "PostgreSQL exited:\n{log}");
        ensure!(tokio::time::Instant::now() < deadline, "PostgreSQL was not ready within 30 s:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A plain SQL dump of the server's database.
pub async fn dump(docker: &Docker, name: &str) -> Result<String> {
    let out = docker::exec(docker, name, Some("postgres"), &["pg_dump", "-U", ROLE, DATABASE]).await?;
    ensure!(out.exit_code == 0, "pg_dump exited with {}: {}", out.exit_code, out.stderr.trim());
    Ok(out.stdout)
}
