//! Headscale v0.29.2's stock `config-example.yaml` (`testdata/compat/headscale-config/`), with
//! only its paths and ports changed, passes `configtest` and starts `serve`: the remote gRPC
//! listener it names without a certificate is skipped as Headscale skips it, the settings this
//! server does not act on are named in one warning, and the DERP map comes from `derp.urls`
//! (a local HTTP server stands in for Tailscale's).

use std::process::Command;

mod support;

/// A DERP map in Tailscale's form, served over HTTP on loopback; its URL.
fn derp_map_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let body = r#"{"Regions": {"7": {"RegionID": 7, "RegionCode": "relay", "RegionName": "Relay",
                        "Nodes": [{"Name": "7a", "RegionID": 7, "HostName": "relay.example.com"}]}}}"#;
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let answer =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = std::io::Write::write_all(&mut conn, answer.as_bytes());
        }
    });
    format!("http://{addr}/derpmap/default")
}

/// The stock file with its paths under `dir`, free loopback ports, and its DERP map URL on
/// loopback.
fn stock_config(dir: &std::path::Path) -> (std::path::PathBuf, u16) {
    let stock = include_str!("../testdata/compat/headscale-config/config-example.yaml");
    let port = support::free_port();
    let text = stock
        .replace("/var/lib/headscale", &dir.display().to_string())
        .replace("/var/run/headscale", &dir.display().to_string())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", support::free_port()))
        .replace("127.0.0.1:50443", &format!("127.0.0.1:{}", support::free_port()))
        .replace("0.0.0.0:3478", "127.0.0.1:0")
        .replace("https://controlplane.tailscale.com/derpmap/default", &derp_map_server());
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    (path, port)
}

#[test]
fn the_stock_config_passes_configtest_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port) = stock_config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_headscale")).arg("-c").arg(&config).arg("configtest").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("remote gRPC is not served on grpc_listen_addr"), "{stdout}");
    assert!(!stdout.contains("derp.urls"), "derp.urls is acted on: {stdout}");

    // Serves /health on the stock config, or the test fails saying why.
    drop(support::Serving::start(&config, port));
}
