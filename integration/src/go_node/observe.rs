//! What a running Go client shows of itself: its log (Caddy's JSON lines on standard error,
//! tsnet's among them) is copied to the node's log file and read as it goes — decoded
//! MapResponses rebuild its map, a `/register/` URL is the login it waits for — and a
//! tripwire proxy catches any HTTP(S) request it makes beyond its control server: the client
//! runs with `HTTPS_PROXY`/`HTTP_PROXY` pointing at the tripwire, so such a request arrives
//! there (and goes no further) instead of leaving the machine. A log line naming Tailscale's
//! own hosts counts as reaching out too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::netmap::NetMap;

/// Hosts of Tailscale's own services; a client of this server must never name them.
const OUTSIDE_HOSTS: [&str; 2] = [".tailscale.com", ".tailscale.io"];

/// What the log and the tripwire have shown of the current process.
#[derive(Debug, Default)]
pub struct Observed {
    /// The map, rebuilt from the MapResponses the client decoded.
    pub map: NetMap,
    /// The login URL the client waits at, until a map says it is in.
    pub auth_url: Option<String>,
    /// Every attempt to reach beyond this machine's control server, as seen.
    pub outside: Vec<String>,
    /// The process ended; the text says how.
    pub exited: Option<String>,
    /// The last lines of the log, for error messages.
    pub tail: Vec<String>,
}

/// Lines of log kept for error messages.
const TAIL_LINES: usize = 20;

impl Observed {
    /// Forgets what the previous process showed (a new process starts with an empty map).
    pub fn reset(&mut self) {
        self.map = NetMap::default();
        self.auth_url = None;
        self.exited = None;
    }

    /// Takes one line of the client's log into account.
    pub fn line(&mut self, line: &str) {
        let msg = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("msg").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| line.to_string());
        if let Some(resp) = msg.strip_prefix("MapResponse: ") {
            match serde_json::from_str::<Value>(resp) {
                Ok(resp) => {
                    self.map.apply(&resp);
                    if self.map.authorized() {
                        self.auth_url = None;
                    }
                }
                Err(e) => self.tail(format!("(a MapResponse in the log could not be read: {e})")),
            }
            return;
        }
        if msg.starts_with("MapRequest: ") {
            return;
        }
        if let Some(url) = login_url(&msg) {
            self.auth_url = Some(url.to_string());
        }
        // tshttpproxy reports which proxy a URL would use (the tripwire, for Tailscale's
        // default control URL) without connecting: the tripwire sees real requests.
        if !msg.starts_with("tshttpproxy: ") && OUTSIDE_HOSTS.iter().any(|h| msg.contains(h)) {
            self.outside.push(format!("log: {msg}"));
        }
        self.tail(msg);
    }

    fn tail(&mut self, msg: String) {
        if self.tail.len() == TAIL_LINES {
            self.tail.remove(0);
        }
        self.tail.push(msg);
    }
}

/// The login URL in a line such as "To start this tsnet server, … go to: http://…/register/…".
fn login_url(msg: &str) -> Option<&str> {
    let start = msg.find("http://").or_else(|| msg.find("https://"))?;
    let url = msg[start..].split_whitespace().next()?;
    url.contains("/register/").then_some(url)
}

/// Copies `log` into `sink` line by line and into `observed`, until it ends.
pub async fn follow(
    log: impl AsyncRead + Unpin,
    mut sink: impl tokio::io::AsyncWrite + Unpin,
    observed: Arc<Mutex<Observed>>,
) {
    let mut lines = BufReader::new(log).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = sink.write_all(line.as_bytes()).await;
        let _ = sink.write_all(b"\n").await;
        observed.lock().expect("observed lock").line(&line);
    }
    let _ = sink.flush().await;
}

/// A loopback listener posing as an HTTP proxy: it records the first line of every request
/// (`CONNECT host:443 HTTP/1.1`) in `observed` and refuses it.
pub async fn tripwire(observed: Arc<Mutex<Observed>>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the tripwire proxy")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let observed = observed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let first = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
                observed.lock().expect("observed lock").outside.push(format!("proxy request: {first}"));
                let _ = sock.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_build_the_state() {
        let mut o = Observed::default();
        o.line(r#"{"level":"info","logger":"tailscale","msg":"To start this tsnet server, restart with TS_AUTHKEY set, or go to: http://127.0.0.1:8080/register/hskey-authreq-abc"}"#);
        assert_eq!(o.auth_url.as_deref(), Some("http://127.0.0.1:8080/register/hskey-authreq-abc"));
        let resp = serde_json::json!({"Node": {"ID": 1, "MachineAuthorized": true, "Addresses": ["100.64.0.1/32"]}});
        let line = serde_json::json!({"level": "info", "msg": format!("MapResponse: {resp}")}).to_string();
        o.line(&line);
        assert!(o.map.authorized());
        assert_eq!(o.auth_url, None, "a map that lets the node in ends the wait for login");
        assert!(o.outside.is_empty());
        o.line(r#"{"msg":"logtail: dial \"log.tailscale.com:443\" failed"}"#);
        assert_eq!(o.outside.len(), 1);
    }

    #[tokio::test]
    async fn the_tripwire_records_a_proxy_request() {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let addr = tripwire(observed.clone()).await.unwrap();
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"CONNECT log.tailscale.com:443 HTTP/1.1\r\nHost: log.tailscale.com:443\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        sock.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"));
        let outside = observed.lock().unwrap().outside.clone();
        assert_eq!(outside, ["proxy request: CONNECT log.tailscale.com:443 HTTP/1.1"]);
    }
}
