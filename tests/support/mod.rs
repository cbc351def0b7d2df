//! What the tests that run the `headscale` program share: a configuration in a temporary
//! directory, on free loopback ports. Each test program uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
