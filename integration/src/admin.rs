//! The admin port of a client program (`tsnode`, `gonode`): one [`Request`] a line in, one
//! JSON line out (`{"error": …}` when the request failed), as many as the connection sends;
//! and the command-line arguments both programs share.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

use crate::client::Client;
use crate::protocol::Request;

/// What both client programs are told on their command line.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The control server URL (e.g. http://10.0.0.2:8080).
    #[arg(long, env = "TS_CONTROL_URL")]
    pub control_url: url::Url,
    /// The hostname to register.
    #[arg(long, env = "TS_HOSTNAME")]
    pub hostname: String,
    /// A pre-auth key; without one the node waits for interactive approval.
    #[arg(long, env = "TS_AUTH_KEY")]
    pub authkey: Option<String>,
    /// Register as an ephemeral node.
    #[arg(long)]
    pub ephemeral: bool,
    /// The admin command port.
    #[arg(long, default_value = "0.0.0.0:9999")]
    pub admin: SocketAddr,
    /// The tailnet port with an echo (the next one has one too).
    #[arg(long, default_value_t = 7000)]
    pub echo_port: u16,
}

/// Says `PROGRAM ready`, answers every admin connection on `listener` until SIGTERM or
/// Ctrl-C, then shuts the client down.
pub async fn serve(listener: TcpListener, client: Arc<dyn Client>, program: &str) -> anyhow::Result<()> {
    println!("{program} ready");
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        tokio::spawn(answer(client.clone(), sock));
    }
    client.shutdown().await;
    Ok(())
}

/// Answers the requests of one admin connection until it closes.
pub async fn answer(client: Arc<dyn Client>, sock: TcpStream) {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.parse::<Request>() {
            Ok(request) => client.handle(&request).await,
            Err(e) => Err(e),
        };
        let answer = answer.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}
