//! `headscale debug …`: developer tools that need no running server. `policy-conformance`
//! replays captured Tailscale policy scenarios against this server's policy engine.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::output::Outcome;
use super::CliError;
use crate::conformance;

/// `debug …`
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Compare the policy engine with captured Tailscale results: one line per category,
    /// then each failed case with its first difference; fails when any case fails.
    PolicyConformance {
        /// A directory laid out like testdata/compat/tailscale-saas (one sub-directory per category).
        dir: PathBuf,
    },
}

/// Runs a debug command.
pub(super) fn execute(command: &DebugCommand) -> Result<Outcome, CliError> {
    match command {
        DebugCommand::PolicyConformance { dir } => {
            let report = conformance::run(dir).map_err(|e| CliError::Invalid(e.to_string()))?;
            let text = report.to_string();
            let failed = report.failed();
            if failed > 0 {
                return Err(CliError::ConformanceFailed { report: text, failed });
            }
            let summary: Vec<_> = report
                .categories
                .iter()
                .map(|c| json!({ "category": c.name, "passed": c.passed, "failed": 0 }))
                .collect();
            Ok(Outcome::new(json!({ "categories": summary }), text.trim_end().to_string()))
        }
    }
}
