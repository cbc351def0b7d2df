//! A small tailnet for the policy engine's unit tests: two users' laptops, a server, a
//! subnet router and an exit node.

use super::compiled::CompiledPolicy;
use super::tailnet::{PolicyNode, PolicyUser};
use super::types::ParsedPolicy;

/// Node ids of the fixture.
pub const ALICE: u64 = 1;
pub const BOB: u64 = 2;
pub const SERVER: u64 = 3;
pub const ROUTER: u64 = 4;
pub const EXIT: u64 = 5;

fn node(id: u64, name: &str, user: Option<(u64, &str, &str)>, tags: &[&str], routes: &[&str]) -> PolicyNode {
    let routes: Vec<ipnet::IpNet> = routes.iter().map(|r| r.parse().expect("valid route")).collect();
    PolicyNode {
        id,
        name: name.into(),
        ipv4: Some(format!("100.64.0.{id}").parse().expect("valid")),
        ipv6: Some(format!("fd7a:115c:a1e0::{id}").parse().expect("valid")),
        user: user.map(|(id, name, email)| PolicyUser { id, name: name.into(), email: email.into() }),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        routable_ips: routes.clone(),
        approved_routes: routes,
    }
}

/// alice's laptop, bob's phone, a `tag:server`, a `tag:router` for 10.33.0.0/16 and a
/// `tag:exit` exit node.
pub fn nodes() -> Vec<PolicyNode> {
    vec![
        node(ALICE, "laptop", Some((1, "alice", "alice@example.com")), &[], &[]),
        node(BOB, "phone", Some((2, "bob", "bob@example.org")), &[], &[]),
        node(SERVER, "server", None, &["tag:server"], &[]),
        node(ROUTER, "router", None, &["tag:router"], &["10.33.0.0/16"]),
        node(EXIT, "exit", None, &["tag:exit"], &["0.0.0.0/0", "::/0"]),
    ]
}

/// The fixture's tag owners and groups, then `body`.
pub fn policy(body: &str) -> ParsedPolicy {
    let text = format!(
        r#"{{"tagOwners": {{"tag:server": ["alice@example.com"], "tag:router": ["alice@example.com"],
             "tag:exit": ["alice@example.com"]}},
            "groups": {{"group:admins": ["alice@example.com"]}},
            {body}}}"#
    );
    ParsedPolicy::parse(&text).expect("the test policy is valid")
}

/// The fixture compiled under `body`.
pub fn compile(body: &str) -> CompiledPolicy {
    CompiledPolicy::compile(&policy(body), nodes())
}
