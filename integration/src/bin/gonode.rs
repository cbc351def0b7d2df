//! `gonode`: the official Tailscale client (tsnet inside Caddy, `integration::go_node`) for
//! scenarios that run each client in its own container. It starts the client, copies its log
//! (the MapResponses it decoded included) to standard error, and answers the same admin
//! commands as `tsnode` on a plain TCP port, one JSON line each. It prints `gonode ready` once
//! the admin port listens, and stops the client on SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use integration::admin::ClientArgs;
use integration::client::Client;
use integration::go_node::{GoNode, GoSpec};
use tokio::net::TcpListener;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "gonode", about = "The official Tailscale client for integration scenarios")]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Tags to ask for, comma-separated (`tag:a,tag:b`).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Where the node keeps its keys across restarts.
    #[arg(long, default_value = "/var/lib/gonode")]
    state: PathBuf,
    /// Where the client's log goes.
    #[arg(long, default_value = "/dev/stderr")]
    log: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let spec = GoSpec {
        control_url: args.client.control_url,
        hostname: args.client.hostname,
        authkey: args.client.authkey,
        tags: args.tags,
        state_dir: args.state,
        log_file: args.log,
        ephemeral: args.client.ephemeral,
        echo_port: args.client.echo_port,
    };
    let node: Arc<dyn Client> = Arc::new(GoNode::start(spec).await?);
    let admin = TcpListener::bind(args.client.admin)
        .await
        .with_context(|| format!("binding the admin port {}", args.client.admin))?;
    integration::admin::serve(admin, node, "gonode").await
}
