//! The policy engine: Tailscale's policy language (HuJSON with `groups`, `hosts`,
//! `tagOwners`, `acls`, `grants`, `nodeAttrs`, `autoApprovers`, `ssh`, `tests`, `sshTests`)
//! with the results Tailscale's own control plane gives. Pure: no I/O, no clocks.
//!
//! - [`ParsedPolicy::parse`] reads and validates a policy (`hujson`, `alias`, `parse`,
//!   `types`); [`ParsedPolicy::check_domains`] checks `user:*@domain` names.
//! - [`CompiledPolicy::compile`] joins it with the tailnet ([`PolicyNode`]s) and answers per
//!   node: packet filter (`compile`), peers and routes (`matcher`, `routes`), SSH policy
//!   (`ssh`), capabilities (`attrs`), route auto-approval (`approve`).
//! - [`run_tests`] checks the policy's own `tests` and `sshTests` (`tests_eval`);
//!   [`load_policy`] does everything a policy write needs.
//! - [`PolicyView`] is what map generation consults for one snapshot: allow-all or the
//!   compiled policy, primary routers, and each node's rules (`view`).

mod alias;
mod approve;
mod attrs;
mod compile;
mod compiled;
mod fasthash;
#[cfg(test)]
mod fixture;
mod hujson;
mod ipset;
mod matcher;
mod nodeset;
mod owners;
mod parse;
mod resolve;
mod routes;
mod ssh;
mod tailnet;
mod tests_eval;
mod types;
mod view;

pub use alias::{Alias, AutoGroup, Role};
pub use attrs::CapMap;
pub use compiled::CompiledPolicy;
pub use hujson::{parse as parse_hujson, HujsonError};
pub use ipset::IpRange;
pub use parse::PolicyError;
pub use resolve::NOT_INTERNET;
pub use tailnet::{PolicyNode, PolicyUser};
pub use tests_eval::run_tests;
pub use types::{
    AutoApprovers, CheckPeriod, Grant, IpSpec, NodeAttr, ParsedPolicy, PolicyTest, SshActionKind, SshRuleSpec, SshTest,
};
pub use view::{compact, policy_node, ActivePolicy, NodeRules, PolicyView};

/// Parses and validates a policy, checks its `user:*@domain` names against `domains`, compiles
/// it for `nodes` and runs its tests: what `headscale policy set` and `check` need. A refused
/// policy must never replace the working one.
pub fn load_policy(
    text: &str,
    nodes: Vec<PolicyNode>,
    domains: &[String],
) -> Result<(ParsedPolicy, CompiledPolicy), PolicyError> {
    let policy = ParsedPolicy::parse(text)?;
    policy.check_domains(domains)?;
    let compiled = CompiledPolicy::compile(&policy, nodes);
    run_tests(&policy, &compiled)?;
    Ok((policy, compiled))
}
