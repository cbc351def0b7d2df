//! The policy as the engine holds it after parsing and validation: every alias parsed, every
//! ACL turned into grants (one per destination, in Tailscale's order), ports and protocols
//! resolved. Nothing here depends on the tailnet; [`super::compile`] joins the two.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::alias::Alias;
use crate::tailcfg::{IpProto, PortRange};

/// A validated policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedPolicy {
    /// `group:name` to its members' user tokens.
    pub groups: BTreeMap<String, Vec<Alias>>,
    /// Host names to their prefix.
    pub hosts: BTreeMap<String, IpNet>,
    /// Every defined tag to its owners.
    pub tag_owners: BTreeMap<String, Vec<Alias>>,
    /// Access rules in evaluation order: `grants` first, then `acls` as grants.
    pub grants: Vec<Grant>,
    /// Node attributes (capabilities) by target.
    pub node_attrs: Vec<NodeAttr>,
    /// Who may have which routes approved without an administrator.
    pub auto_approvers: AutoApprovers,
    /// Tailscale SSH rules, in order.
    pub ssh: Vec<SshRuleSpec>,
    /// Reachability assertions checked when the policy is set.
    pub tests: Vec<PolicyTest>,
    /// SSH assertions checked when the policy is set.
    pub ssh_tests: Vec<SshTest>,
    /// `randomizeClientPort`: every node picks a random WireGuard port.
    pub randomize_client_port: bool,
}

/// A protocol set and the ports it opens; no protocols means TCP, UDP, ICMP and ICMPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSpec {
    pub protos: Vec<IpProto>,
    pub ports: Vec<PortRange>,
}

/// One grant: sources may reach destinations on `ip`, and hold the `app` capabilities on
/// them; with `via`, only through subnet routers or exit nodes carrying one of those tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub ip: Vec<IpSpec>,
    pub app: BTreeMap<String, Vec<Value>>,
    pub via: Vec<String>,
}

/// Attributes given to the nodes a target matches.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAttr {
    pub target: Vec<Alias>,
    /// Capability names granted without values.
    pub attr: Vec<String>,
    /// Capability names granted with values.
    pub app: BTreeMap<String, Vec<Value>>,
    /// Address pools the matched nodes should be numbered from.
    pub ip_pool: Vec<IpNet>,
}

/// `autoApprovers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoApprovers {
    /// A route prefix (covering its sub-prefixes) to who may advertise it.
    pub routes: Vec<(IpNet, Vec<Alias>)>,
    /// Who may act as an exit node.
    pub exit_node: Vec<Alias>,
}

/// What an SSH rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshActionKind {
    Accept,
    /// Accept after the user re-authenticates, at most every `check_period`.
    Check,
}

/// How often a `check` rule asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckPeriod {
    /// Every connection.
    Always,
    Every(Duration),
}

/// One `ssh` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshRuleSpec {
    pub action: SshActionKind,
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    /// Local logins: names, `root`, `autogroup:nonroot`, `localpart:*@domain`.
    pub users: Vec<String>,
    pub check_period: Option<CheckPeriod>,
    pub accept_env: Vec<String>,
}

/// One entry of `tests`, kept as written: malformed entries fail when the tests run, which
/// is how Tailscale reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTest {
    pub src: Option<String>,
    pub proto: Option<String>,
    pub accept: Vec<String>,
    pub deny: Vec<String>,
}

/// One entry of `sshTests`, kept as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshTest {
    pub src: Option<String>,
    pub dst: Vec<String>,
    pub accept: Vec<String>,
    pub deny: Vec<String>,
    pub check: Vec<String>,
}
