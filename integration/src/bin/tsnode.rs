//! `tsnode`: a small Tailscale node built on tailscale-rs, for scenarios that run each client
//! in its own container. It runs one supervised node (`integration::node::Node`: restarted
//! from its key file when tailscale-rs gives up, echoing TCP and UDP on its tailnet port) and
//! answers commands on a plain admin port, one line each — `status`, `peer NAME`,
//! `tcp IP PORT`, `udp IP PORT`, `login AUTHKEY` — with one JSON line each (`{"error": …}`
//! when a command fails). It prints `tsnode ready` once the admin port listens, and shuts the
//! device down on SIGTERM or Ctrl-C.
//!
//! When the device has to start again unattended, tsnode runs itself again in its own place
//! (`exec`, same process id), so no task of the old device survives; the admin port stays
//! open across (its descriptor is inherited, named by `TSNODE_ADMIN_FD`), commands wait in its
//! backlog meanwhile, and the restart count carries over in `TSNODE_RESTARTS`.
//!
//! tailscale-rs reports a DERP region it stopped serving only in its log (an error event of
//! `ts_runtime::multiderp::uniderp`); tsnode watches for that event and starts the device
//! again, as a client that re-dials DERP would recover. The event names no device, so one seen
//! just after a device replaced another in this process (`login`) is blamed on the one replaced
//! (see `DERP_GRACE`); after an unattended restart the process is new and no such doubt exists.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use integration::admin::ClientArgs;
use integration::client::Client;
use integration::node::{Node, NodeSpec, Reexec};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, Layer};

/// Where tailscale-rs logs that a DERP region's connection failed for good.
const DERP_TARGET: &str = "ts_runtime::multiderp::uniderp";
/// How long after a device replaced another in this process a DERP failure is still blamed on
/// the one replaced.
const DERP_GRACE: Duration = Duration::from_secs(5);
/// The admin listener's descriptor, inherited by a tsnode that replaced its predecessor.
const ADMIN_FD_VAR: &str = "TSNODE_ADMIN_FD";
/// How many times the node restarted before this process.
const RESTARTS_VAR: &str = "TSNODE_RESTARTS";

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
    #[command(flatten)]
    client: ClientArgs,
    /// Where the node keeps its keys across restarts.
    #[arg(long, default_value = "/var/lib/tsnode/keys.json")]
    state: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (derp_tx, mut derp_failures) = mpsc::unbounded_channel();
    let env = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(env))
        .with(
            DerpGaveUp(derp_tx)
                .with_filter(filter::filter_fn(|m| m.target() == DERP_TARGET && *m.level() == tracing::Level::ERROR)),
        )
        .init();
    let args = Args::parse();
    if let Some(dir) = args.state.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let inherited = std::env::var(ADMIN_FD_VAR).ok().and_then(|fd| fd.parse::<RawFd>().ok());
    let restarts = std::env::var(RESTARTS_VAR).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let admin_fd = Arc::new(OnceLock::new());
    let spec = NodeSpec {
        control_url: args.client.control_url,
        hostname: args.client.hostname,
        authkey: args.client.authkey,
        key_file: args.state,
        ephemeral: args.client.ephemeral,
        echo_port: args.client.echo_port,
    };
    let supervised = Arc::new(start_node(spec, restarts, admin_fd.clone()).await);
    let watched = supervised.clone();
    tokio::spawn(async move {
        while let Some(seen) = derp_failures.recv().await {
            // A device that did not shut down completely keeps its DERP connection until its
            // successor (same node key) displaces it, and then logs the failure.
            let why = "tailscale-rs stopped serving a DERP region after its connection failed";
            if let Err(e) = watched.restart_after_failure(seen, DERP_GRACE, why).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot start the device again");
            }
        }
    });
    let admin = match inherited {
        Some(fd) => {
            // SAFETY: the descriptor is the listener the previous process kept open for this one.
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener).context("taking over the admin port")?
        }
        None => TcpListener::bind(args.client.admin)
            .await
            .with_context(|| format!("binding the admin port {}", args.client.admin))?,
    };
    let _ = admin_fd.set(admin.as_raw_fd());
    let node: Arc<dyn Client> = supervised;
    integration::admin::serve(admin, node, "tsnode").await
}

/// Starts the node, retrying every second until its device starts (the server may be away).
async fn start_node(spec: NodeSpec, restarts: u32, admin_fd: Arc<OnceLock<RawFd>>) -> Node {
    loop {
        match Node::start_replaceable(spec.clone(), restarts, reexec(admin_fd.clone())).await {
            Ok(node) => return node,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the device did not start; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs this program again in place of the current process, handing over the admin listener
/// and the node's current auth key and restart count.
fn reexec(admin_fd: Arc<OnceLock<RawFd>>) -> Reexec {
    Box::new(move |spec: &NodeSpec, restarts: u32| {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => return anyhow::Error::from(e).context("finding the tsnode program"),
        };
        let mut cmd = std::process::Command::new(exe);
        cmd.args(without_authkey(std::env::args_os().skip(1))).env(RESTARTS_VAR, restarts.to_string());
        match &spec.authkey {
            Some(key) => cmd.env("TS_AUTH_KEY", key),
            None => cmd.env_remove("TS_AUTH_KEY"),
        };
        if let Some(&fd) = admin_fd.get() {
            // SAFETY: clears close-on-exec on a descriptor this process owns.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return anyhow::Error::from(std::io::Error::last_os_error()).context("keeping the admin port open");
            }
            cmd.env(ADMIN_FD_VAR, fd.to_string());
        }
        anyhow::Error::from(cmd.exec()).context("running tsnode again")
    })
}

/// The arguments without `--authkey KEY` or `--authkey=KEY`: the key goes in `TS_AUTH_KEY`.
fn without_authkey(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match a.to_str() {
            Some("--authkey") => skip_value = true,
            Some(s) if s.starts_with("--authkey=") => {}
            _ => out.push(a),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_authkey;

    #[test]
    fn the_auth_key_leaves_the_arguments_in_both_forms() {
        let args = ["--hostname", "a", "--authkey", "k1", "--ephemeral", "--authkey=k2", "--echo-port", "7000"];
        let kept = without_authkey(args.iter().map(Into::into));
        assert_eq!(kept, ["--hostname", "a", "--ephemeral", "--echo-port", "7000"].map(std::ffi::OsString::from));
    }
}
