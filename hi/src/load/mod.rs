//! `hi load --nodes N`: the load generator. It builds and starts the server as its own
//! process on loopback, then drives N simulated nodes made of tailscale-rs's control client
//! (`ts_control`: registration, Noise, HTTP/2, map streaming; no data plane) in this process,
//! through the phases of `phases`, and prints a summary and, last, one JSON line.
//!
//! `client` is one simulated node, `decode` how its map messages are read, `view` what a
//! correct map is and how each client's map is checked against it, `measure` the readings of
//! the server process, `report` the output, `server` the server process, `cluster` the
//! PostgreSQL cluster of `--postgres`.

mod client;
mod cluster;
mod decode;
mod measure;
mod phases;
mod report;
mod server;
mod view;

#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use async_trait::async_trait;
use url::Url;

use crate::image;
use cluster::Cluster;
use phases::Plan;
use server::ServerProcess;

/// The server a load run drives.
#[async_trait]
pub trait ControlServer: Send + Sync {
    /// The control URL clients dial.
    fn url(&self) -> Url;
    /// The process whose CPU time and memory are measured.
    fn pid(&self) -> u32;
    /// Runs `headscale ARGS` against the server and returns what it printed.
    async fn headscale(&self, args: &[&str]) -> Result<String>;
}

/// `hi load` arguments.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// How many nodes to register and connect.
    #[arg(long)]
    nodes: usize,
    /// Run the server on PostgreSQL: a throwaway cluster of this host's PostgreSQL server
    /// installation (Debian's `postgresql` package), on a unix socket.
    #[arg(long)]
    postgres: bool,
    /// Endpoint changes per second in the churn phase.
    #[arg(long, default_value_t = 20)]
    churn: u32,
    /// How long the churn phase lasts, in seconds.
    #[arg(long, default_value_t = 10)]
    churn_secs: u64,
    /// How many fan-out rounds (one node's endpoint change each).
    #[arg(long, default_value_t = 5)]
    fanout_rounds: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How many clients decode every map message with `ts_control`'s own decoder, which
    /// makes a random key pair for every peer it reads (about 35 µs per peer in this
    /// process); the others read the checked fields of the same messages with a minimal
    /// decoder. Every client receives the same kinds of messages, so a few strict clients
    /// prove them all acceptable to tailscale-rs; sixteen cost the generator a tenth of its
    /// CPU in a 2,000-node storm, CPU the server, on the same two cores, did not get.
    #[arg(long, default_value_t = 4)]
    strict_clients: usize,
    /// How long any one phase may take, in seconds, before the run fails.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// A policy file for the server (`policy.path`). It must let every node see every other,
    /// since every client's map is checked to hold all peers.
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
}

impl LoadArgs {
    fn plan(&self) -> Result<Plan> {
        ensure!(
            (2..=client::MAX_CLIENTS).contains(&self.nodes),
            "--nodes must be between 2 and {}",
            client::MAX_CLIENTS
        );
        ensure!(self.churn > 0, "--churn must be at least 1 change per second");
        Ok(Plan {
            nodes: self.nodes,
            register_concurrency: self.concurrency.max(1),
            strict_clients: self.strict_clients,
            fanout_rounds: self.fanout_rounds,
            churn_per_s: self.churn,
            churn_for: Duration::from_secs(self.churn_secs),
            timeout: Duration::from_secs(self.timeout),
        })
    }
}

/// Builds the server, starts it, runs every phase, prints the results; fails with what went
/// wrong and the end of the server's log.
pub async fn run(args: LoadArgs) -> Result<ExitCode> {
    let plan = args.plan()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .try_init();
    // One connection per client here, its peer in the server (which inherits the limit), and
    // a margin for the runtime, the database and the CLI.
    let limit = measure::raise_open_files(plan.nodes as u64 + 1024)?;
    println!("open-files limit {limit}; building headscale (release)");
    let bins = tokio::task::spawn_blocking(|| image::build_binaries(true)).await??;
    let cluster = match args.postgres {
        true => Some(Cluster::start().await?),
        false => None,
    };
    let mut env = cluster.as_ref().map(Cluster::server_env).unwrap_or_default();
    if let Some(policy) = &args.policy {
        let path = std::fs::canonicalize(policy).with_context(|| format!("the policy file {}", policy.display()))?;
        env.push(("HEADSCALE_POLICY_PATH".into(), path.display().to_string()));
    }
    let database = if args.postgres { "PostgreSQL" } else { "SQLite" };
    let outcome = match ServerProcess::start(&bins.headscale, env).await {
        Ok(server) => drive(server, database, &plan).await,
        Err(e) => Err(e),
    };
    if let Some(c) = cluster {
        c.stop().await;
    }
    outcome
}

/// Runs every phase against `server`, then stops it.
async fn drive(server: ServerProcess, database: &str, plan: &Plan) -> Result<ExitCode> {
    println!("headscale serving at {} (pid {}, {database})", server.url(), server.pid());
    match phases::run(&server, plan).await {
        Ok(m) => {
            server.stop().await;
            println!("{}", m.summary());
            println!("{}", m.json());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let tail = server.log_tail(20);
            server.stop().await;
            Err(anyhow!("{e:#}\nthe end of the server log:\n{tail}"))
        }
    }
}
