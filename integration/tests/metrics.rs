//! The metrics listener (`metrics_listen_addr`): after a real client joins and its map
//! session runs, `GET /metrics` counts the registration and the map messages sent, and reads
//! the tailnet's size; other paths are not found.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration::{init, Options, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET; returns the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> Result<(String, String)> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await?;
    let (head, body) = raw.split_once("\r\n\r\n").context("an HTTP answer")?;
    Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
}

/// The value of the sample named exactly `sample` (name and labels).
fn sample(page: &str, sample: &str) -> Option<u64> {
    page.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_registrations_and_map_messages() -> Result<()> {
    init();
    let server = TestServer::start(Options::default()).await?;
    let addr = server.running.metrics_addr.context("the test server serves metrics")?;
    let user = server.create_user("mia").await?;
    let dev = server.join("counted", &server.auth_key(user, false, false).await?).await?;
    let (status, page) = get(addr, "/metrics").await?;
    ensure!(status.contains("200"), "{status}");
    ensure!(page.contains("# TYPE headscale_mapresponse_sent_total counter"), "{page}");
    ensure!(sample(&page, "headscale_registrations_total{outcome=\"authorized\"}") >= Some(1), "{page}");
    ensure!(sample(&page, "headscale_mapresponse_sent_total{status=\"ok\",type=\"full\"}") >= Some(1), "{page}");
    ensure!(sample(&page, "process_resident_memory_bytes") > Some(0), "{page}");
    ensure!(sample(&page, "headscale_nodestore_nodes") == Some(1), "{page}");
    ensure!(sample(&page, "headscale_users") == Some(1), "{page}");
    let (status, _) = get(addr, "/debug/nothing").await?;
    ensure!(status.contains("404"), "{status}");
    dev.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}
