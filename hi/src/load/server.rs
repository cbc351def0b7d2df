//! The server under load, as its own process on loopback: a configuration written into a
//! temporary directory (the embedded default with free ports, SQLite there unless the
//! environment given names another database), `headscale serve` with its log in that
//! directory, and the `headscale` CLI pointed at the same configuration (the local socket).
//! The process is killed when this is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use tokio::process::{Child, Command};
use url::Url;

use super::ControlServer;
use integration::http::get as http_get;

/// A running `headscale serve`.
pub struct ServerProcess {
    binary: PathBuf,
    config: PathBuf,
    /// `HEADSCALE_*` settings given to the server and the CLI.
    env: Vec<(String, String)>,
    log: PathBuf,
    url: Url,
    pid: u32,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `binary` on a free loopback port, with `env` added to its environment, and
    /// waits until `/health` answers.
    pub async fn start(binary: &Path, env: Vec<(String, String)>) -> Result<ServerProcess> {
        let dir = tempfile::tempdir().context("a directory for the server's files")?;
        let listen = format!("127.0.0.1:{}", free_port()?);
        let mut config = headscale::config::Config::embedded(dir.path());
        config.server_url = format!("http://{listen}");
        config.listen_addr = listen.clone();
        config.derp.server.tls_listen_addr = "127.0.0.1:0".into();
        config.derp.server.stun_listen_addr = "127.0.0.1:0".into();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).context("writing the configuration as YAML")?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log = dir.path().join("headscale.log");
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = ServerProcess {
            binary: binary.to_path_buf(),
            config: config_path,
            env,
            log,
            url: format!("http://{listen}").parse()?,
            pid,
            child,
            _dir: dir,
        };
        server.await_healthy(listen.parse()?).await?;
        Ok(server)
    }

    async fn await_healthy(&mut self, addr: std::net::SocketAddr) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(addr, "/health").await {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited with {status}:\n{}", self.log_tail(20));
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the server did not answer /health at {addr} within 30 s:\n{}", self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no log at {}: {e})", self.log.display()),
        }
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(mut self) {
        if let Err(e) = self.child.kill().await {
            eprintln!("stopping the server (pid {}): {e}", self.pid);
        }
    }
}

#[async_trait]
impl ControlServer for ServerProcess {
    fn url(&self) -> Url {
        self.url.clone()
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    async fn headscale(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running `headscale {}`", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`headscale {}` exited with {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).with_context(|| format!("the output of `headscale {}`", args.join(" ")))
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr()?.port())
}
