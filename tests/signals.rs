//! `headscale serve` and signals, as systemd sends them: SIGHUP (`systemctl reload`) reloads
//! the policy file and never stops the server, with or without a policy file; SIGTERM,
//! SIGINT and SIGQUIT shut it down cleanly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use support::Serving;

/// A server started on a fresh configuration in `dir`, with `extra` YAML.
fn start(dir: &Path, extra: &str) -> Serving {
    let port = support::free_port();
    Serving::start(&support::write_config(dir, port, extra), port)
}

/// The policy the running server enforces, as `headscale policy get` prints it.
fn policy_in_force(config_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_headscale"))
        .arg("-c")
        .arg(config_dir.join("config.yaml"))
        .args(["policy", "get"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sighup_without_a_policy_file_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    for _ in 0..3 {
        server.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        assert!(support::healthy(server.port), "SIGHUP stopped the server");
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(), Some(0));
}

#[test]
fn sighup_reloads_the_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.hujson");
    std::fs::write(&policy, r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}"#).unwrap();
    let server = start(dir.path(), &format!("policy:\n  mode: file\n  path: {}\n", policy.display()));
    assert!(policy_in_force(dir.path()).contains("*:22"));
    // A new policy, then SIGHUP (as `systemctl reload` after editing it): the server reloads
    // and goes on serving.
    std::fs::write(&policy, r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:80"]}]}"#).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !policy_in_force(dir.path()).contains("*:80") {
        assert!(Instant::now() < deadline, "the policy was not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(support::healthy(server.port));
    server.signal(libc::SIGINT);
    assert_eq!(server.exit_code(), Some(0));
}

#[test]
fn sigquit_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "");
    server.signal(libc::SIGQUIT);
    assert_eq!(server.exit_code(), Some(0));
    assert!(!dir.path().join("headscale.sock").exists(), "the socket is removed on shutdown");
}
