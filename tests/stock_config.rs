//! Headscale v0.29.2's stock `config-example.yaml` (`testdata/compat/headscale-config/`), with
//! only its paths and ports changed, passes `configtest` and starts `serve`: the remote gRPC
//! listener it names without a certificate is skipped as Headscale skips it, and the settings
//! this server does not act on are named in one warning.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

/// The stock file with its paths under `dir` and free loopback ports.
fn stock_config(dir: &std::path::Path) -> (std::path::PathBuf, u16) {
    let stock = include_str!("../testdata/compat/headscale-config/config-example.yaml");
    let port = support::free_port();
    let text = stock
        .replace("/var/lib/headscale", &dir.display().to_string())
        .replace("/var/run/headscale", &dir.display().to_string())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", support::free_port()))
        .replace("127.0.0.1:50443", &format!("127.0.0.1:{}", support::free_port()))
        .replace("0.0.0.0:3478", "127.0.0.1:0");
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
    assert!(stdout.contains("this server does not act on these settings") && stdout.contains("derp.urls"), "{stdout}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_headscale"))
        .arg("-c")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        if support::healthy(port) {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy, "the server did not serve /health on the stock config");
}
