//! Tailscale SSH: the `ssh` rules compiled into each node's [`SshPolicy`].
//!
//! For a destination node, each rule whose sources exist yields rules whose principals are
//! the source nodes' addresses: user-owned nodes grouped by user (ascending id), then tagged
//! nodes, each once per tag it carries. `sshUsers` maps `root` only when listed,
//! `autogroup:nonroot` to `"*": "="`, and other names to themselves; `localpart:*@domain`
//! adds, for each source user of that domain, a rule mapping the e-mail's local part to
//! itself. `check` rules come before `accept` rules.

use std::collections::BTreeMap;

use super::alias::{Alias, AutoGroup};
use super::nodeset::NodeSet;
use super::resolve::Resolver;
use super::tailnet::{email_domain, Tailnet};
use super::types::{SshActionKind, SshRuleSpec};
use crate::tailcfg::{SshAction, SshPolicy, SshPrincipal, SshRule};

/// The path a `check` rule delegates to, under the server's URL.
const CHECK_PATH: &str = "/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER";

/// The domain of a canonical `localpart:*@domain` login.
pub fn localpart_domain(user: &str) -> Option<&str> {
    user.strip_prefix("localpart:*@").filter(|d| !d.is_empty() && !d.contains(['@', '*']))
}

/// One `ssh` rule resolved against the tailnet.
#[derive(Debug, Clone)]
struct CompiledSshRule {
    action: SshActionKind,
    /// Source nodes of each user, by ascending user id, with the user's e-mail.
    user_groups: Vec<(u64, String, Vec<usize>)>,
    /// Tagged source nodes, each once per tag.
    tagged: Vec<usize>,
    sources: NodeSet,
    /// Nodes named by a destination other than `autogroup:self`.
    dst_nodes: NodeSet,
    to_self: bool,
    common_users: BTreeMap<String, String>,
    localpart_domains: Vec<String>,
    accept_env: Vec<String>,
}

/// Every `ssh` rule, ready to be written for any node.
#[derive(Debug, Clone)]
pub struct SshRules {
    rules: Vec<CompiledSshRule>,
}

impl SshRules {
    /// Resolves the rules' sources and destinations.
    pub fn compile(specs: &[SshRuleSpec], resolver: &mut Resolver<'_>) -> Self {
        let t = resolver.tailnet;
        let mut rules = Vec::new();
        for spec in specs {
            let mut sources = NodeSet::new(t.len());
            spec.src.iter().for_each(|a| sources.union_with(&resolver.resolve(a).nodes));
            let mut dst_nodes = NodeSet::new(t.len());
            for a in spec.dst.iter().filter(|a| **a != Alias::AutoGroup(AutoGroup::SelfDevices)) {
                dst_nodes.union_with(&resolver.resolve(a).nodes);
            }
            let mut user_groups: Vec<(u64, String, Vec<usize>)> = Vec::new();
            let mut tagged = Vec::new();
            for i in sources.iter() {
                let node = &t.nodes[i];
                if node.is_tagged() {
                    tagged.extend(std::iter::repeat_n(i, node.tags.len()));
                } else if let Some(u) = &node.user {
                    match user_groups.iter_mut().find(|g| g.0 == u.id) {
                        Some(g) => g.2.push(i),
                        None => user_groups.push((u.id, u.email.clone(), vec![i])),
                    }
                }
            }
            user_groups.sort_by_key(|g| g.0);
            let mut common_users = BTreeMap::from([("root".to_string(), String::new())]);
            let mut localpart_domains = Vec::new();
            for u in &spec.users {
                if let Some(d) = localpart_domain(u) {
                    localpart_domains.push(d.to_string());
                } else if u == "autogroup:nonroot" {
                    common_users.insert("*".into(), "=".into());
                } else {
                    common_users.insert(u.clone(), u.clone());
                }
            }
            rules.push(CompiledSshRule {
                action: spec.action,
                user_groups,
                tagged,
                sources,
                dst_nodes,
                to_self: spec.dst.contains(&Alias::AutoGroup(AutoGroup::SelfDevices)),
                common_users,
                localpart_domains,
                accept_env: spec.accept_env.clone(),
            });
        }
        SshRules { rules }
    }

    /// The nodes whose SSH policy may name node `i`, as a principal or through its user:
    /// the sources and destinations of every rule `i` is a source of, and for a rule to
    /// `autogroup:self`, the nodes of `i`'s user.
    pub fn related(&self, t: &Tailnet, i: usize) -> NodeSet {
        let mut out = NodeSet::new(t.len());
        let node = &t.nodes[i];
        let own_nodes = node.user.as_ref().filter(|_| !node.is_tagged()).and_then(|u| t.by_user.get(&u.id));
        for rule in self.rules.iter().filter(|r| r.sources.contains(i)) {
            out.union_with(&rule.sources);
            out.union_with(&rule.dst_nodes);
            if let Some(nodes) = own_nodes.filter(|_| rule.to_self) {
                out.union_with(nodes);
            }
        }
        out
    }

    /// The SSH policy of node `i`; `server_url` is where `check` rules delegate.
    pub fn policy_for(&self, t: &Tailnet, i: usize, server_url: &str) -> SshPolicy {
        let node = &t.nodes[i];
        let own_user = node.user.as_ref().filter(|_| !node.is_tagged()).map(|u| u.id);
        let mut out: Vec<SshRule> = Vec::new();
        for rule in &self.rules {
            if rule.sources.is_empty() {
                continue;
            }
            let writer = Writer { t, rule, server_url };
            let own_group = || rule.user_groups.iter().find(|g| Some(g.0) == own_user);
            if rule.dst_nodes.contains(i) {
                if rule.localpart_domains.is_empty() {
                    let all: Vec<usize> = rule
                        .user_groups
                        .iter()
                        .flat_map(|g| g.2.iter().copied())
                        .chain(rule.tagged.iter().copied())
                        .collect();
                    out.extend(writer.common(&all));
                } else {
                    for group in &rule.user_groups {
                        out.extend(writer.for_user(group));
                    }
                    out.extend(writer.common(&rule.tagged));
                }
            } else if let Some(group) = own_group().filter(|_| rule.to_self) {
                out.extend(writer.for_user(group));
            } else if !rule.localpart_domains.is_empty() && rule.sources.contains(i) {
                match own_group() {
                    Some(group) => out.extend(writer.for_user(group)),
                    None => out.extend(writer.common(&[i])),
                }
            }
        }
        out.sort_by_key(|r| r.action.as_ref().is_none_or(|a| a.hold_and_delegate.is_empty()));
        SshPolicy { rules: out }
    }
}

struct Writer<'a> {
    t: &'a Tailnet,
    rule: &'a CompiledSshRule,
    server_url: &'a str,
}

impl Writer<'_> {
    fn rule(&self, principals: &[usize], ssh_users: BTreeMap<String, String>) -> SshRule {
        let action = match self.rule.action {
            SshActionKind::Accept => SshAction {
                accept: true,
                allow_agent_forwarding: true,
                allow_local_port_forwarding: true,
                allow_remote_port_forwarding: true,
                ..Default::default()
            },
            SshActionKind::Check => SshAction {
                hold_and_delegate: format!("{}{CHECK_PATH}", self.server_url.trim_end_matches('/')),
                ..Default::default()
            },
        };
        SshRule {
            principals: principals
                .iter()
                .flat_map(|&i| self.t.nodes[i].addrs())
                .map(|a| SshPrincipal { node_ip: a.to_string() })
                .collect(),
            ssh_users,
            action: Some(action),
            accept_env: self.rule.accept_env.clone(),
        }
    }

    /// The rule with the listed logins, if there are principals.
    fn common(&self, principals: &[usize]) -> Option<SshRule> {
        (!principals.is_empty()).then(|| self.rule(principals, self.rule.common_users.clone()))
    }

    /// A user's rules: the listed logins, then the e-mail's local part when its domain is a
    /// `localpart:*@domain` of the rule.
    fn for_user(&self, (_, email, nodes): &(u64, String, Vec<usize>)) -> Vec<SshRule> {
        let mut out: Vec<SshRule> = self.common(nodes).into_iter().collect();
        let domain = email_domain(email).unwrap_or_default();
        if self.rule.localpart_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            let local = email.rsplit_once('@').map_or(email.as_str(), |(l, _)| l).to_string();
            out.push(self.rule(nodes, BTreeMap::from([(local.clone(), local)])));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::fixture::{compile, ALICE, BOB, SERVER};

    #[test]
    fn principals_are_source_addresses_and_users_map_as_written() {
        let c = compile(
            r#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["ubuntu", "autogroup:nonroot"]}]"#,
        );
        let p = c.ssh_policy(SERVER, "https://hs.example").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"rules":[{"principals":[{"nodeIP":"100.64.0.1"},{"nodeIP":"fd7a:115c:a1e0::1"},{"nodeIP":"100.64.0.2"},{"nodeIP":"fd7a:115c:a1e0::2"}],"sshUsers":{"*":"=","root":"","ubuntu":"ubuntu"},"action":{"accept":true,"allowAgentForwarding":true,"allowLocalPortForwarding":true,"allowRemotePortForwarding":true}}]}"#
        );
        assert!(c.ssh_policy(ALICE, "https://hs.example").is_none());
    }

    #[test]
    fn localpart_adds_a_rule_per_user_of_the_domain_and_checks_come_first() {
        let c = compile(
            r#""ssh": [
                {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["localpart:*@example.com"]},
                {"action": "check", "src": ["bob@example.org"], "dst": ["tag:server"], "users": ["root"]}]"#,
        );
        let rules = c.ssh_policy(SERVER, "https://hs.example/").unwrap().rules;
        let users: Vec<String> = rules.iter().map(|r| serde_json::to_string(&r.ssh_users).unwrap()).collect();
        assert_eq!(users, [r#"{"root":"root"}"#, r#"{"root":""}"#, r#"{"alice":"alice"}"#, r#"{"root":""}"#]);
        assert_eq!(
            rules[0].action.as_ref().unwrap().hold_and_delegate,
            "https://hs.example/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"
        );
        assert_eq!(rules[3].principals[0].node_ip, "100.64.0.2");
        assert_eq!(c.ssh_policy(ALICE, "").unwrap().rules.len(), 2, "a localpart source gets its own rules");
    }

    #[test]
    fn self_destinations_give_each_user_its_own_nodes() {
        let c = compile(
            r#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]}]"#,
        );
        let bob = c.ssh_policy(BOB, "").unwrap().rules;
        assert_eq!(bob.len(), 1);
        assert_eq!(bob[0].principals.len(), 2);
        assert_eq!(bob[0].principals[0].node_ip, "100.64.0.2");
        assert!(c.ssh_policy(SERVER, "").is_none());
    }
}
