//! `headscale debug …`: developer tools. `create-node` starts a registration for a made-up
//! machine on the running server (completed with `auth register`), as Headscale's does;
//! `policy-conformance` replays captured Tailscale policy scenarios against this server's
//! policy engine and needs no server.

use std::path::PathBuf;

use super::client::connect;
use super::go_shape::Go;
use super::output::Outcome;
use super::CliError;
use crate::config::Config;
use crate::conformance;
use crate::grpc::pb;
use clap::Subcommand;

/// `debug …`
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Create a node that can be registered with the `auth register` command.
    CreateNode {
        /// The node's hostname.
        #[arg(long)]
        name: String,
        /// The user it will belong to.
        #[arg(short = 'u', long)]
        user: String,
        /// The registration id (`hskey-authreq-…`) to complete with `auth register --auth-id`.
        #[arg(short = 'k', long)]
        key: String,
        /// Routes to advertise (repeat, or separate with commas).
        #[arg(short = 'r', long = "route", value_delimiter = ',')]
        routes: Vec<String>,
    },
    /// Compare the policy engine with captured Tailscale results: one line per category,
    /// then each failed case with its first difference; fails when any case fails.
    PolicyConformance {
        /// A directory laid out like testdata/compat/tailscale-saas (one sub-directory per category).
        dir: PathBuf,
    },
}

/// Runs a debug command.
pub(super) async fn execute(command: &DebugCommand, config: &Config) -> Result<Outcome, CliError> {
    match command {
        DebugCommand::CreateNode { name, user, key, routes } => {
            let request = pb::DebugCreateNodeRequest {
                user: user.clone(),
                key: key.clone(),
                name: name.clone(),
                routes: routes.clone(),
            };
            let node = connect(config)
                .await?
                .debug_create_node(request)
                .await
                .map_err(|status| CliError::Request { action: "create the node", status })?
                .into_inner()
                .node;
            Ok(Outcome::new(Go::optional(node.as_ref()), "Node created"))
        }
        DebugCommand::PolicyConformance { dir } => {
            let report = conformance::run(dir).map_err(|e| CliError::Invalid(e.to_string()))?;
            let text = report.to_string();
            let failed = report.failed();
            if failed > 0 {
                return Err(CliError::ConformanceFailed { report: text, failed });
            }
            let summary = report
                .categories
                .iter()
                .map(|c| {
                    Go::Struct(vec![
                        ("category", Go::Str(c.name.clone())),
                        ("passed", Go::Uint(c.passed as u64)),
                        ("failed", Go::Uint(0)),
                    ])
                })
                .collect();
            Ok(Outcome::new(Go::Struct(vec![("categories", Go::List(Some(summary)))]), text.trim_end().to_string()))
        }
    }
}
