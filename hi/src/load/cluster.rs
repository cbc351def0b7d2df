//! A throwaway PostgreSQL cluster for `hi load --postgres`, from this host's PostgreSQL server
//! installation (Debian's `postgresql` package): `initdb` into a temporary directory, then
//! `postgres` listening only on a unix socket in that directory, with local connections
//! trusted. PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
//! The server is pointed at it with the `HEADSCALE_DATABASE_*` settings, as `hi run
//! --postgres` does; the cluster is stopped and deleted afterwards.

use std::os::unix::fs::chown;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rustix::process::{kill_process, Pid, Signal};
use tokio::process::{Child, Command};

use crate::postgres::{host_installation, DATABASE, PASSWORD, PORT, ROLE};

/// A running cluster.
pub struct Cluster {
    child: Child,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Creates and starts a cluster; returns once it accepts connections.
    pub async fn start() -> Result<Cluster> {
        let bin = host_installation()?.join("bin");
        let dir = tempfile::tempdir().context("a directory for the PostgreSQL cluster")?;
        let owner = if rustix::process::geteuid().is_root() { Some(system_user("postgres")?) } else { None };
        if let Some((uid, gid)) = owner {
            chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("handing {} to postgres", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let run_as = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
            cmd.current_dir(dir.path()).stdin(Stdio::null());
            cmd
        };
        let out = run_as("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", ROLE, "-E", "UTF8", "--no-locale", "--auth=trust"])
            .output()
            .await
            .context("running initdb")?;
        ensure!(
            out.status.success(),
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        if let Some((uid, gid)) = owner {
            chown(dir.path().join("postgres.log"), Some(uid), Some(gid))?;
        }
        let child = run_as("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=", "-c", "jit=off", "-p", &PORT.to_string()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting postgres")?;
        let mut cluster = Cluster { child, dir };
        cluster.await_ready(&bin).await?;
        Ok(cluster)
    }

    async fn await_ready(&mut self, bin: &Path) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let probe = Command::new(bin.join("pg_isready"))
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &PORT.to_string(), "-q"])
                .status()
                .await
                .context("running pg_isready")?;
            if probe.success() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("postgres exited with {status}:\n{}", self.log());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("PostgreSQL did not accept connections within 30 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The settings that point the server at this cluster.
    pub fn server_env(&self) -> Vec<(String, String)> {
        [
            ("TYPE", "postgres".to_string()),
            ("POSTGRES_HOST", self.dir.path().display().to_string()),
            ("POSTGRES_PORT", PORT.to_string()),
            ("POSTGRES_NAME", DATABASE.to_string()),
            ("POSTGRES_USER", ROLE.to_string()),
            ("POSTGRES_PASS", PASSWORD.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("HEADSCALE_DATABASE_{k}"), v))
        .collect()
    }

    /// Stops PostgreSQL (a fast shutdown) and deletes the cluster.
    pub async fn stop(mut self) {
        let stopped = match self.child.id().and_then(|id| Pid::from_raw(id as i32)) {
            Some(pid) => kill_process(pid, Signal::INT).is_ok(),
            None => false,
        };
        let exited = stopped && tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_ok();
        if !exited {
            let _ = self.child.kill().await;
        }
    }
}

/// The uid and gid of a system user, from `/etc/passwd`.
fn system_user(name: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .with_context(|| format!("PostgreSQL does not run as root and there is no {name} user to run it as"))?;
    let id = |i: usize| -> Result<u32> {
        fields.get(i).and_then(|v| v.parse().ok()).context("a malformed /etc/passwd line")
    };
    Ok((id(2)?, id(3)?))
}
