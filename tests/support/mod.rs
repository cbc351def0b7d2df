//! What the tests that run the `headscale` program share: a configuration in a temporary
//! directory, on free loopback ports. Each test program uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes `config.yaml` in `dir`: everything in `dir`, the main listener on `port`, the
/// embedded DERP with its STUN port on loopback, and `extra` YAML appended.
pub fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let config = dir.join("config.yaml");
    let yaml = format!(
        "server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\n\
         noise:\n  private_key_path: {dir}/noise_private.key\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {dir}/db/db.sqlite\n\
         derp:\n  server:\n    enabled: true\n    private_key_path: {dir}/derp_server_private.key\n    \
         stun_listen_addr: 127.0.0.1:0\n\
         unix_socket: {dir}/headscale.sock\n\
         dns:\n  magic_dns: true\n  base_domain: tailnet.example\n{extra}",
        dir = dir.display()
    );
    std::fs::write(&config, yaml).unwrap();
    config
}

/// Runs `headscale -c CONFIG ARGS…` and returns what it did.
pub fn headscale(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_headscale")).arg("-c").arg(config).args(args).output().unwrap()
}

/// Whether the server on loopback `port` answers `GET /health` with 200.
pub fn healthy(port: u16) -> bool {
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    tcp.write_all(request.as_bytes()).is_ok()
        && tcp.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// A running `headscale serve`, killed when dropped (a test that ends early leaves nothing).
pub struct Serving {
    child: Child,
    pub port: u16,
}

impl Serving {
    /// Starts `headscale -c CONFIG serve` and waits until `/health` on `port` answers.
    pub fn start(config: &Path, port: u16) -> Serving {
        Self::spawn(Self::command(config), port)
    }

    /// Like [`Serving::start`], with the process's open-file limit (soft and hard) at `files`.
    pub fn start_with_open_files(config: &Path, port: u16, files: u64) -> Serving {
        use std::os::unix::process::CommandExt;
        let mut command = Self::command(config);
        // SAFETY: runs in the child between fork and exec and only calls setrlimit, which is
        // async-signal-safe, on a struct that lives on the child's stack.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: files, rlim_max: files };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Self::spawn(command, port)
    }

    fn command(config: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_headscale"));
        command.arg("-c").arg(config).arg("serve").stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    fn spawn(mut command: Command, port: u16) -> Serving {
        let child = command.spawn().unwrap();
        let mut server = Serving { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(port) {
            assert!(server.child.try_wait().unwrap().is_none(), "the server exited at start");
            assert!(Instant::now() < deadline, "the server did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    /// Waits for the process to end; its exit code.
    pub fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
