//! A Debian host in a container, for the package test: Debian 12 (bookworm) made with
//! `debootstrap` (its minimal variant, plus systemd as init), imported as an image and run with
//! systemd as PID 1, so that a `.deb` installs, and its unit starts, reloads and stops, as on
//! a real machine. The image is made once per machine (about 40 s; it needs root,
//! Debian's `debootstrap` and a Debian mirror, `$HI_DEBIAN_MIRROR` or deb.debian.org) and
//! kept until `hi cleanup --images`.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bollard::Docker;

use crate::docker::{self, import_archive, ContainerSpec};

/// The image's repository and tag.
const REPOSITORY: &str = "hi-debian";
const TAG: &str = "bookworm-systemd";
/// The Debian release, and what is added to its minimal variant (procps is on every real
/// Debian system, and the package depends on it).
const SUITE: &str = "bookworm";
const INCLUDE: &str = "systemd,systemd-sysv,dbus,procps";
/// Where the packages come from unless `$HI_DEBIAN_MIRROR` says otherwise.
const MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian image, made now if this engine lacks it; returns its tag.
pub async fn ensure_image(docker: &Docker) -> Result<String> {
    let tag = format!("{REPOSITORY}:{TAG}");
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let archive = tokio::task::spawn_blocking(bootstrap).await??;
    let changes = ["ENV container=docker", r#"CMD ["/sbin/init"]"#];
    import_archive(docker, REPOSITORY, TAG, archive, &changes).await?;
    Ok(tag)
}

/// Runs debootstrap into a scratch directory and returns the system as a tar archive.
fn bootstrap() -> Result<Vec<u8>> {
    ensure!(rustix::process::geteuid().is_root(), "making the Debian image needs root (debootstrap)");
    let scratch = tempfile::tempdir().context("a scratch directory for debootstrap")?;
    let root = scratch.path().join("root");
    let mirror = std::env::var("HI_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.to_string());
    println!("making the Debian image: debootstrap {SUITE} from {mirror}");
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&root)
        .arg(&mirror)
        .output()
        .context("running debootstrap (apt-get install debootstrap)")?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        bail!(
            "debootstrap failed ({}):\n{}\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&root)
        .args(["-c", "."])
        .output()
        .context("running tar")?;
    ensure!(tar.status.success(), "tar of the Debian system failed: {}", String::from_utf8_lossy(&tar.stderr));
    Ok(tar.stdout)
}

/// A container of the Debian image that boots systemd: `/run` in memory, the control groups
/// of the host visible read-only, on `network` at `ip`.
pub fn host_spec(name: &str, image: &str, network: &str, ip: Ipv4Addr) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        cmd: vec!["/sbin/init".to_string()],
        env: vec!["container=docker".to_string()],
        network: network.to_string(),
        ip: Some(ip),
        role: "debian".to_string(),
        tmpfs: vec!["/run".to_string(), "/run/lock".to_string()],
        binds: vec!["/sys/fs/cgroup:/sys/fs/cgroup:ro".to_string()],
        ..ContainerSpec::default()
    }
}

/// Waits until systemd in `name` has booted (`running`, or `degraded` when some unit of the
/// bare system failed).
pub async fn await_booted(docker: &Docker, name: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = docker::exec(docker, name, None, &["systemctl", "is-system-running"]).await?;
        let state = out.stdout.trim().to_string();
        if state == "running" || state == "degraded" {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("systemd in {name} did not finish booting within 60 s (it says {state:?})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
