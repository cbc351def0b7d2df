//! The policy's own assertions: `tests` (can this source reach that `host:port`?) checked
//! against the tailnet-wide rules, and `sshTests` (may this source log in as that user?)
//! checked against each destination's SSH rules. A malformed entry fails like a false one,
//! which is how Tailscale reports it.

use std::net::IpAddr;

use super::alias::{parse_alias, parse_proto, split_host_ports, Alias, AutoGroup};
use super::compile::{DstEntry, RuleBody};
use super::compiled::CompiledPolicy;
use super::ipset::{IpRange, IpSet};
use super::nodeset::NodeSet;
use super::parse::PolicyError;
use super::resolve::Resolver;
use super::types::{ParsedPolicy, PolicyTest, SshTest};
use crate::tailcfg::{IpProto, SshRule};

/// The protocols a test without `proto` checks.
const DEFAULT_PROTOS: [IpProto; 4] = [IpProto::TCP, IpProto::UDP, IpProto::ICMP, IpProto::ICMPV6];

/// Runs the policy's `tests` and `sshTests` against its compiled form.
pub fn run_tests(policy: &ParsedPolicy, compiled: &CompiledPolicy) -> Result<(), PolicyError> {
    let mut resolver = Resolver::new(policy, compiled.tailnet());
    let mut failures = Vec::new();
    for (i, test) in policy.tests.iter().enumerate() {
        if let Err(why) = check_test(test, compiled, &mut resolver) {
            failures.push(format!("tests[{i}]: {why}"));
        }
    }
    for (i, test) in policy.ssh_tests.iter().enumerate() {
        if let Some(refusal) = ssh_test_refusal(test) {
            return Err(PolicyError::Invalid(vec![refusal]));
        }
        if let Err(why) = check_ssh_test(test, compiled, &mut resolver) {
            failures.push(format!("sshTests[{i}]: {why}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(PolicyError::TestsFailed(failures))
    }
}

/// The source of a test: its alias, and the addresses it stands for.
fn test_source(src: Option<&str>, resolver: &mut Resolver<'_>) -> Result<(Alias, IpSet, NodeSet), String> {
    let text = src.filter(|s| !s.trim().is_empty()).ok_or("src is missing")?;
    let alias = parse_alias(text).map_err(|e| format!("src {text:?}: {e}"))?;
    let r = resolver.resolve(&alias);
    if r.set.is_empty() {
        return Err(format!("src {text:?} matches no address"));
    }
    Ok((alias, r.set.clone(), r.nodes.clone()))
}

/// The untagged nodes of the user(s) a source names, for `autogroup:self` destinations.
fn self_nodes(src: &Alias, src_nodes: &NodeSet, resolver: &Resolver<'_>) -> NodeSet {
    let t = resolver.tailnet;
    let mut out = NodeSet::new(t.len());
    if matches!(src, Alias::User(_) | Alias::UserDomain(_) | Alias::Group(_) | Alias::AutoGroup(AutoGroup::Member)) {
        for i in src_nodes.iter() {
            if let Some(u) = t.nodes[i].user.as_ref().filter(|_| !t.nodes[i].is_tagged()) {
                out.union_with(&t.by_user[&u.id]);
            }
        }
    }
    out
}

fn check_test(test: &PolicyTest, compiled: &CompiledPolicy, resolver: &mut Resolver<'_>) -> Result<(), String> {
    if test.accept.is_empty() && test.deny.is_empty() {
        return Err("neither accept nor deny is given".into());
    }
    let proto_text = test.proto.as_deref().unwrap_or_default();
    let protos = parse_proto(proto_text).map_err(|e| e.to_string())?;
    if protos.iter().any(|p| ![IpProto::TCP, IpProto::UDP, IpProto::SCTP].contains(p)) {
        return Err(format!("proto {proto_text:?} cannot be tested: use tcp, udp or sctp"));
    }
    let protos = if protos.is_empty() { DEFAULT_PROTOS.to_vec() } else { protos };
    let (src_alias, src_set, src_nodes) = test_source(test.src.as_deref(), resolver)?;
    let cases = test.accept.iter().map(|d| (d, true)).chain(test.deny.iter().map(|d| (d, false)));
    for (dst, want) in cases {
        let (host, port) = split_host_ports(dst).map_err(|e| e.to_string())?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or(format!("{dst:?}: give exactly one port"))?;
        if host.contains('/') {
            return Err(format!("{dst:?}: a destination must be a host, not a prefix"));
        }
        let alias = parse_alias(host).map_err(|e| format!("{dst:?}: {e}"))?;
        let dst_set = match &alias {
            Alias::AutoGroup(AutoGroup::Internet) => return Err(format!("{dst:?}: the internet cannot be tested")),
            Alias::AutoGroup(AutoGroup::SelfDevices) => {
                resolver.nodes_alias(self_nodes(&src_alias, &src_nodes, resolver)).set
            }
            _ => resolver.resolve(&alias).set.clone(),
        };
        if dst_set.ranges().is_empty() {
            return Err(format!("{dst:?} matches no address"));
        }
        let literal = matches!(alias, Alias::Host(_) | Alias::Prefix(_) | Alias::Range(_));
        if literal && dst_set.ranges().iter().any(|r| r.start != r.end) {
            return Err(format!("{dst:?}: a destination must be a host, not a prefix"));
        }
        let reach = |s: &IpRange| reaches(compiled, s, &dst_set, port, &protos);
        let got = if want { src_set.ranges().iter().all(reach) } else { src_set.ranges().iter().any(reach) };
        if got != want {
            let (expected, actual) = if want { ("accept", "deny") } else { ("deny", "accept") };
            return Err(format!(
                "{} -> {dst}: expected {expected}, got {actual}",
                test.src.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Whether some tailnet-wide rule lets `src` reach `dst` on `port` with one of `protos`.
fn reaches(compiled: &CompiledPolicy, src: &IpRange, dst: &IpSet, port: u16, protos: &[IpProto]) -> bool {
    let rules = compiled.rule_set();
    rules.rules.iter().any(|rule| {
        let RuleBody::Ports { protos: rule_protos, entries, .. } = &rule.body else { return false };
        let names_dst = |e: &DstEntry| rules.target(e).range.is_none_or(|t| dst.overlaps_range(&t));
        rule.src.set.overlaps_range(src)
            && (rule_protos.is_empty() || rule_protos.iter().any(|p| protos.contains(p)))
            && entries.iter().any(|e| e.ports.contains(port) && names_dst(e))
    })
}

/// Destinations Tailscale refuses outright, with its message.
fn ssh_test_refusal(test: &SshTest) -> Option<String> {
    for d in &test.dst {
        if d.trim() == "autogroup:internet" {
            return Some(format!("SSH tests dst contains disallowed element {d:?}"));
        }
        if d.starts_with("tag:") && d.matches(':').count() > 1 {
            return Some(format!("SSH tests dst contains unknown tag {d:?}"));
        }
    }
    None
}

fn check_ssh_test(test: &SshTest, compiled: &CompiledPolicy, resolver: &mut Resolver<'_>) -> Result<(), String> {
    if test.accept.is_empty() && test.deny.is_empty() && test.check.is_empty() {
        return Err("none of accept, deny or check is given".into());
    }
    let (src_alias, _, src_nodes) = test_source(test.src.as_deref(), resolver)?;
    let t = resolver.tailnet;
    let src_ips: Vec<IpAddr> = src_nodes.iter().flat_map(|i| t.nodes[i].addrs()).collect();
    if src_ips.is_empty() {
        return Err("src matches no node".into());
    }
    for d in &test.dst {
        let alias = parse_alias(d).map_err(|e| format!("dst {d:?}: {e}"))?;
        let is_name = matches!(alias, Alias::Tag(_) | Alias::AutoGroup(_) | Alias::Group(_) | Alias::User(_));
        if d.contains(':') && !is_name {
            return Err(format!("dst {d:?}: a destination must be a host without a port"));
        }
        let nodes = match alias {
            Alias::AutoGroup(AutoGroup::SelfDevices) => self_nodes(&src_alias, &src_nodes, resolver),
            other => resolver.resolve(&other).nodes.clone(),
        };
        if nodes.is_empty() {
            return Err(format!("dst {d:?} matches no node"));
        }
        for n in nodes.iter() {
            let rules = compiled.ssh_policy(t.nodes[n].id, "").map(|p| p.rules).unwrap_or_default();
            let hits = |login: &str, ip: &IpAddr, need_check: bool| {
                rules.iter().any(|r| {
                    (!need_check || r.action.as_ref().is_some_and(|a| !a.hold_and_delegate.is_empty()))
                        && r.principals.iter().any(|p| p.node_ip == ip.to_string())
                        && allows_login(r, login)
                })
            };
            for login in &test.accept {
                if !src_ips.iter().all(|ip| hits(login, ip, false)) {
                    return Err(format!("{d}: login {login:?} expected to be accepted"));
                }
            }
            for login in &test.check {
                if !src_ips.iter().all(|ip| hits(login, ip, true)) {
                    return Err(format!("{d}: login {login:?} expected to need a check"));
                }
            }
            for login in &test.deny {
                if src_ips.iter().any(|ip| hits(login, ip, false)) {
                    return Err(format!("{d}: login {login:?} expected to be denied"));
                }
            }
        }
    }
    Ok(())
}

/// Whether a rule's `sshUsers` lets `login` in: named with a non-empty mapping, or (except
/// root) covered by a non-empty `*`.
fn allows_login(rule: &SshRule, login: &str) -> bool {
    if login.is_empty() {
        return false;
    }
    match rule.ssh_users.get(login) {
        Some(mapped) => !mapped.is_empty(),
        None => login != "root" && rule.ssh_users.get("*").is_some_and(|m| !m.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixture::{nodes, policy};

    fn run(body: &str) -> Result<(), PolicyError> {
        let p = policy(body);
        run_tests(&p, &CompiledPolicy::compile(&p, nodes()))
    }

    const ACL: &str = r#""acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:22"], "proto": "tcp"}],
        "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]}]"#;

    #[test]
    fn reachability_tests_pass_and_fail_like_the_rules() {
        assert!(run(&format!(r#"{ACL}, "tests": [{{"src": "alice@example.com", "accept": ["tag:server:22"], "deny": ["tag:server:80"]}}]"#)).is_ok());
        assert!(run(&format!(r#"{ACL}, "tests": [{{"src": "alice@", "proto": "tcp", "accept": ["100.64.0.3:22"]}}]"#))
            .is_ok());
        for bad in [
            r#"{"src": "bob@example.org", "accept": ["tag:server:22"]}"#,
            r#"{"src": "alice@example.com", "proto": "udp", "accept": ["tag:server:22"]}"#,
            r#"{"src": "alice@example.com", "deny": ["tag:server:22"]}"#,
            r#"{"src": "alice@example.com", "accept": ["tag:server:22,80"]}"#,
            r#"{"src": "alice@example.com", "accept": ["10.0.0.0/8:22"]}"#,
            r#"{"src": "alice@example.com", "proto": "icmp", "accept": ["tag:server:22"]}"#,
            r#"{"src": "alice@example.com"}"#,
            r#"{"accept": ["tag:server:22"]}"#,
            r#"{"src": "ghost@example.com", "accept": ["tag:server:22"]}"#,
        ] {
            let err = run(&format!(r#"{ACL}, "tests": [{bad}]"#)).expect_err(bad);
            assert!(err.to_string().starts_with("test(s) failed"), "{err}");
        }
    }

    #[test]
    fn ssh_tests_follow_the_ssh_rules() {
        let ok = format!(
            r#"{ACL}, "sshTests": [{{"src": "alice@example.com", "dst": ["tag:server"], "accept": ["ubuntu"], "deny": ["root"]}}]"#
        );
        assert!(run(&ok).is_ok());
        let denied = format!(
            r#"{ACL}, "sshTests": [{{"src": "bob@example.org", "dst": ["tag:server"], "accept": ["ubuntu"]}}]"#
        );
        assert!(run(&denied).unwrap_err().to_string().starts_with("test(s) failed"));
        let no_check = format!(
            r#"{ACL}, "sshTests": [{{"src": "alice@example.com", "dst": ["tag:server"], "check": ["ubuntu"]}}]"#
        );
        assert!(run(&no_check).is_err());
        let internet = format!(
            r#"{ACL}, "sshTests": [{{"src": "alice@example.com", "dst": ["autogroup:internet"], "accept": ["x"]}}]"#
        );
        assert_eq!(
            run(&internet).unwrap_err().to_string(),
            r#"SSH tests dst contains disallowed element "autogroup:internet""#
        );
        let port = format!(
            r#"{ACL}, "sshTests": [{{"src": "alice@example.com", "dst": ["tag:server:22"], "accept": ["x"]}}]"#
        );
        assert_eq!(run(&port).unwrap_err().to_string(), r#"SSH tests dst contains unknown tag "tag:server:22""#);
    }
}
