//! `gonode`: the official Tailscale client (tsnet inside Caddy, `integration::go_node`) for
//! scenarios that run each client in its own container. It starts the client, copies its log
//! (the MapResponses it decoded included) to standard error, and answers the same admin
//! commands as `tsnode` on a plain TCP port, one JSON line each. It prints `gonode ready` once
//! the admin port listens, and stops the client on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use integration::client::Client;
use integration::go_node::{GoNode, GoSpec};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "gonode", about = "The official Tailscale client for integration scenarios")]
struct Args {
    /// The control server URL (e.g. http://10.0.0.2:8080).
    #[arg(long, env = "TS_CONTROL_URL")]
    control_url: url::Url,
    /// The hostname to register.
    #[arg(long, env = "TS_HOSTNAME")]
    hostname: String,
    /// A pre-auth key; without one the node waits for interactive approval.
    #[arg(long, env = "TS_AUTH_KEY")]
    authkey: Option<String>,
    /// Tags to ask for, comma-separated (`tag:a,tag:b`).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Where the node keeps its keys across restarts.
    #[arg(long, default_value = "/var/lib/gonode")]
    state: PathBuf,
    /// Where the client's log goes.
    #[arg(long, default_value = "/dev/stderr")]
    log: PathBuf,
    /// Register as an ephemeral node.
    #[arg(long)]
    ephemeral: bool,
    /// The admin command port.
    #[arg(long, default_value = "0.0.0.0:9999")]
    admin: SocketAddr,
    /// The tailnet port with an HTTP echo (the next one has one too).
    #[arg(long, default_value_t = 7000)]
    echo_port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let spec = GoSpec {
        control_url: args.control_url,
        hostname: args.hostname,
        authkey: args.authkey,
        tags: args.tags,
        state_dir: args.state,
        log_file: args.log,
        ephemeral: args.ephemeral,
        echo_port: args.echo_port,
    };
    let node: Arc<dyn Client> = Arc::new(GoNode::start(spec).await?);
    let admin =
        TcpListener::bind(args.admin).await.with_context(|| format!("binding the admin port {}", args.admin))?;
    println!("gonode ready");
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let (sock, _) = tokio::select! {
            r = admin.accept() => r?,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        tokio::spawn(integration::admin::answer(node.clone(), sock));
    }
    node.shutdown().await;
    Ok(())
}
