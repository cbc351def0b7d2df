//! `headscale serve` and signals, as systemd sends them: SIGHUP (`systemctl reload`) reloads
//! the policy file and never stops the server, with or without a policy file; SIGTERM,
//! SIGINT and SIGQUIT shut it down cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

/// A running `headscale serve`, killed if the test ends early.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path, extra: &str) -> Server {
        let port = support::free_port();
        let config = support::write_config(dir, port, extra);
        let child = Command::new(env!("CARGO_BIN_EXE_headscale"))
            .arg("-c")
            .arg(&config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.healthy() {
            assert!(Instant::now() < deadline, "the server did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn healthy(&self) -> bool {
        support::healthy(self.port)
    }

    fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    /// Waits for the process to end; its exit code.
    fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn policy(&self, config_dir: &Path) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_headscale"))
            .arg("-c")
            .arg(config_dir.join("config.yaml"))
            .args(["policy", "get"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn sighup_without_a_policy_file_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "");
    for _ in 0..3 {
        server.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        assert!(server.healthy(), "SIGHUP stopped the server");
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code(), Some(0));
}

#[test]
fn sighup_reloads_the_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.hujson");
    std::fs::write(&policy, r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}"#).unwrap();
    let server = Server::start(dir.path(), &format!("policy:\n  mode: file\n  path: {}\n", policy.display()));
    assert!(server.policy(dir.path()).contains("*:22"));
    // A new policy, then SIGHUP (as `systemctl reload` after editing it): the server reloads
    // and goes on serving.
    std::fs::write(&policy, r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:80"]}]}"#).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.policy(dir.path()).contains("*:80") {
        assert!(Instant::now() < deadline, "the policy was not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.healthy());
    server.signal(libc::SIGINT);
    assert_eq!(server.exit_code(), Some(0));
}

#[test]
fn sigquit_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "");
    server.signal(libc::SIGQUIT);
    assert_eq!(server.exit_code(), Some(0));
    assert!(!dir.path().join("headscale.sock").exists(), "the socket is removed on shutdown");
}
