//! `tsnode`: a small Tailscale node built on tailscale-rs, for scenarios that run each client
//! in its own container. It runs one supervised node (`integration::node::Node`: restarted
//! from its key file when tailscale-rs gives up, echoing TCP and UDP on its tailnet port) and
//! answers commands on a plain admin port, one line each — `status`, `peer NAME`,
//! `tcp IP PORT`, `udp IP PORT`, `login AUTHKEY` — with one JSON line each (`{"error": …}`
//! when a command fails). It prints `tsnode ready` once the admin port listens, and shuts the
//! device down on SIGTERM or Ctrl-C.
//!
//! tailscale-rs reports a DERP region it stopped serving only in its log (an error event of
//! `ts_runtime::multiderp::uniderp`); tsnode watches for that event and starts the device
//! again, as a client that re-dials DERP would recover. The event names no device, so one seen
//! just after a restart is blamed on the device that was replaced (see `DERP_GRACE`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use integration::node::{Node, NodeSpec, Request};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, Layer};

/// Where tailscale-rs logs that a DERP region's connection failed for good.
const DERP_TARGET: &str = "ts_runtime::multiderp::uniderp";
/// How long after a device starts a DERP failure is still blamed on the device it replaced.
const DERP_GRACE: Duration = Duration::from_secs(5);

/// Passes on the time of each "running derp client" error event.
struct DerpGaveUp(mpsc::UnboundedSender<Instant>);

/// Finds whether an event's message is the one looked for.
struct MessageIs(&'static str, bool);

impl Visit for MessageIs {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == self.0 {
            self.1 = true;
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for DerpGaveUp {
    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        let mut found = MessageIs("running derp client", false);
        event.record(&mut found);
        if found.1 {
            let _ = self.0.send(Instant::now());
        }
    }
}

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "tsnode", about = "A tailscale-rs node for integration scenarios")]
struct Args {
    /// The control server URL (plain http, e.g. http://10.0.0.2:8080).
    #[arg(long, env = "TS_CONTROL_URL")]
    control_url: url::Url,
    /// The hostname to register.
    #[arg(long, env = "TS_HOSTNAME")]
    hostname: String,
    /// A pre-auth key; without one the node waits for interactive approval.
    #[arg(long, env = "TS_AUTH_KEY")]
    authkey: Option<String>,
    /// Where the node keeps its keys across restarts.
    #[arg(long, default_value = "/var/lib/tsnode/keys.json")]
    state: PathBuf,
    /// Register as an ephemeral node.
    #[arg(long)]
    ephemeral: bool,
    /// The admin command port.
    #[arg(long, default_value = "0.0.0.0:9999")]
    admin: SocketAddr,
    /// The tailnet port echoed over TCP and UDP.
    #[arg(long, default_value_t = 7000)]
    echo_port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (derp_tx, mut derp_failures) = mpsc::unbounded_channel();
    let env = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(env))
        .with(DerpGaveUp(derp_tx).with_filter(filter::filter_fn(|m| {
            m.target() == DERP_TARGET && *m.level() == tracing::Level::ERROR
        })))
        .init();
    let args = Args::parse();
    if let Some(dir) = args.state.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let node = Arc::new(
        Node::start(NodeSpec {
            control_url: args.control_url,
            hostname: args.hostname,
            authkey: args.authkey,
            key_file: args.state,
            ephemeral: args.ephemeral,
            echo_port: args.echo_port,
        })
        .await?,
    );
    let watched = node.clone();
    tokio::spawn(async move {
        while let Some(seen) = derp_failures.recv().await {
            // A device that did not shut down completely keeps its DERP connection until its
            // successor (same node key) displaces it, and then logs the failure: a failure seen
            // within DERP_GRACE of a device's start is taken to be its predecessor's.
            let Some(before) = seen.checked_sub(DERP_GRACE) else { continue };
            let why = "tailscale-rs stopped serving a DERP region after its connection failed";
            if let Err(e) = watched.restart_if_started_before(before, why).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot start the device again");
            }
        }
    });
    let admin = TcpListener::bind(args.admin).await.with_context(|| format!("binding the admin port {}", args.admin))?;
    println!("tsnode ready");
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let (sock, _) = tokio::select! {
            r = admin.accept() => r?,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        tokio::spawn(serve_admin(node.clone(), sock));
    }
    node.shutdown().await;
    Ok(())
}

/// Answers the commands of one admin connection, one JSON line each.
async fn serve_admin(node: Arc<Node>, sock: tokio::net::TcpStream) {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.parse::<Request>() {
            Ok(request) => node.handle(&request).await,
            Err(e) => Err(e),
        };
        let answer = answer.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}
