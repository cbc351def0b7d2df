//! Fuzzes policy parsing (HuJSON, then the policy language), and compiles whatever parses
//! against a small fixed tailnet, asking every per-node question of the result.
#![no_main]
use headscale::policy::{run_tests, CompiledPolicy, ParsedPolicy, PolicyNode, PolicyUser};
use libfuzzer_sys::fuzz_target;

/// Two users' devices, a server, a subnet router and an exit node.
fn tailnet() -> Vec<PolicyNode> {
    let node = |id: u64, user: Option<(&str, &str)>, tags: &[&str], routes: &[&str]| PolicyNode {
        id,
        name: format!("node{id}"),
        ipv4: Some(format!("100.64.0.{id}").parse().expect("valid address")),
        ipv6: Some(format!("fd7a:115c:a1e0::{id}").parse().expect("valid address")),
        user: user.map(|(name, email)| PolicyUser { id, name: name.into(), email: email.into() }),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        routable_ips: routes.iter().map(|r| r.parse().expect("valid route")).collect(),
        approved_routes: routes.iter().map(|r| r.parse().expect("valid route")).collect(),
    };
    vec![
        node(1, Some(("alice", "alice@example.com")), &[], &[]),
        node(2, Some(("bob", "bob@example.org")), &[], &[]),
        node(3, None, &["tag:server"], &[]),
        node(4, None, &["tag:router"], &["10.33.0.0/16"]),
        node(5, None, &["tag:exit"], &["0.0.0.0/0", "::/0"]),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = ParsedPolicy::parse(text) else { return };
    let nodes = tailnet();
    let compiled = CompiledPolicy::compile(&policy, nodes.clone());
    let elect = |_: &_, ids: &[u64]| ids.first().copied();
    for a in &nodes {
        compiled.filter(a.id);
        compiled.peers(a.id);
        compiled.ssh_policy(a.id, "https://headscale.example.com");
        compiled.self_caps(a.id);
        compiled.peer_caps(a.id);
        for route in &a.approved_routes {
            compiled.auto_approves(a.id, route);
        }
        for b in &nodes {
            compiled.can_access(a.id, b.id);
            compiled.allowed_ips(a.id, b.id, elect);
        }
    }
    let _ = run_tests(&policy, &compiled);
});
