//! The listeners hold a bounded number of connections: with an open-file limit of 160 (128 kept
//! for everything else), the 33rd connection is answered 503 at once while the 32 held ones
//! are still served, the CLI (on the local socket) keeps working, and a slot comes back when a
//! connection ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

/// What the server answers to `GET /health` on `tcp`, whole.
fn health(tcp: &mut TcpStream) -> String {
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn connections_over_the_limit_are_refused_and_the_rest_served() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = support::write_config(dir.path(), port, "");
    let _server = support::Serving::start_with_open_files(&config, port, 160);

    // Wait until the health checks' own connections have gone, then hold every slot.
    let mut held: Vec<TcpStream> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let answer = health(&mut tcp);
        if answer.starts_with("HTTP/1.1 200") {
            held.push(tcp);
            continue;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        assert!(answer.contains("too many connections"), "{answer:?}");
        break;
    }
    assert!(Instant::now() < deadline);
    assert!((30..=32).contains(&held.len()), "held {} connections", held.len());

    // Those held are still served; the CLI, on the local socket, works.
    assert!(health(&mut held[0]).starts_with("HTTP/1.1 200"));
    let cli =
        Command::new(env!("CARGO_BIN_EXE_headscale")).arg("-c").arg(&config).args(["users", "list"]).output().unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));

    // A connection that ends frees its slot.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if health(&mut tcp).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
