//! Policy: ACLs and grants on users, groups, tags, autogroups, hosts and prefixes; tags set by
//! the admin; a policy changed under connected clients, and one refused while they run.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    vec![
        Scenario::new("AclAllowDeny", "a user-to-user policy allows what it grants and denies the rest", |t| {
            Box::pin(acl_matrix(t))
        })
        .policy(USER_POLICY),
        Scenario::new("AclTags", "a policy on tags: tagged nodes are reached as granted, and only so", |t| {
            Box::pin(acl_tags(t))
        })
        .policy(TAG_POLICY),
        Scenario::new(
            "AclRuntimeChange",
            "one port allowed, another refused, a user hidden; a policy change applies to connected clients",
            |t| Box::pin(acl_runtime_change(t)),
        )
        .policy(BOB_ONLY),
        Scenario::new("AclAutogroupMember", "autogroup:member covers the users' own nodes and not tagged ones", |t| {
            Box::pin(acl_autogroup_member(t))
        })
        .policy(MEMBER_POLICY),
        Scenario::new(
            "AclAutogroupSelf",
            "autogroup:self lets a user's nodes reach each other and no one else's",
            |t| Box::pin(acl_autogroup_self(t)),
        )
        .policy(SELF_POLICY),
        Scenario::new("AclGroups", "a group's members reach what the group is granted; others do not", |t| {
            Box::pin(acl_groups(t))
        })
        .policy(GROUP_POLICY),
        Scenario::new(
            "AclHostsAndPrefixes",
            "a hosts alias for the tailnet prefix and a raw prefix as destinations grant what they cover",
            |t| Box::pin(acl_hosts(t)),
        )
        .policy(HOSTS_POLICY),
        Scenario::new("AclWildcardAllowsAll", "src * to *:* lets every node reach every other, across users", |t| {
            Box::pin(acl_wildcard(t))
        })
        .policy(ALLOW_ALL),
        Scenario::new(
            "AclEmptyListDeniesAll",
            "a policy whose acls list is empty shows no node any peer and lets no traffic through",
            |t| Box::pin(acl_empty(t)),
        )
        .policy(r#"{ "acls": [] }"#),
        Scenario::new(
            "AclNoRulesAllowsAll",
            "a policy with neither acls nor grants (`{}`) lets every node reach every other, as Headscale does",
            |t| Box::pin(acl_wildcard(t)),
        )
        .policy("{}"),
        Scenario::new("GrantsIpPorts", "a grant with ip [\"tcp:7000\"] opens that port and not the next", |t| {
            Box::pin(grants_ip(t))
        })
        .policy(GRANT_POLICY),
        Scenario::new(
            "PolicyInvalidChangeKeepsLast",
            "an invalid policy written under running clients is refused and the last good one stays in force",
            |t| Box::pin(policy_invalid_change(t)),
        )
        .policy(USER_POLICY),
        Scenario::new(
            "PolicyCheckCli",
            "`headscale policy check` accepts a valid file and refuses an invalid one with the reason",
            |t| Box::pin(policy_check_cli(t)),
        ),
        Scenario::new(
            "AclTagSetByAdminApplies",
            "tagging a running node with `nodes tag` moves it under the tag's rules",
            |t| Box::pin(acl_tag_set_by_admin(t)),
        )
        .policy(TAG_POLICY),
        Scenario::new(
            "AclTagOwnedByGroup",
            "a tag owned by a group can be asked for by the group's members only",
            |t| Box::pin(acl_tag_owned_by_group(t)),
        )
        .policy(GROUP_TAG_OWNER)
        .not_with(NEEDS_REQUESTED_TAGS),
        Scenario::new("AclPortRange", "a destination port range opens every port in it and no other", |t| {
            Box::pin(acl_port_range(t))
        })
        .policy(PORT_RANGE),
        Scenario::new(
            "AclUdpOnlyRule",
            "a rule with proto udp lets UDP through and refuses TCP on the same port",
            |t| Box::pin(acl_udp_only(t)),
        )
        .policy(UDP_ONLY)
        .not_with(&[(ClientKind::Go, "the official client runs inside Caddy here, which offers no UDP socket")]),
        Scenario::new(
            "AclOneWayRuleWithConnectionTracking",
            "a rule from alice to bob only: alice opens connections to bob and gets replies; bob opens none to alice",
            |t| Box::pin(acl_one_way(t)),
        )
        .policy(ONE_WAY)
        .not_with(&[(ClientKind::Rs, "tailscale-rs filters without connection tracking, so replies need a rule back")]),
        Scenario::new(
            "AclTagChangedByAdmin",
            "moving a node from one tag to another moves it from one tag's rules to the other's",
            |t| Box::pin(acl_tag_changed(t)),
        )
        .policy(TWO_TAGS),
        Scenario::new(
            "AclUserCreatedLaterGetsAccess",
            "a user named in the policy before they exist gets the access once created and joined",
            |t| Box::pin(acl_user_created_later(t)),
        )
        .policy(FUTURE_USER),
        Scenario::new("AclAutogroupTagged", "autogroup:tagged covers tagged nodes and not users' nodes", |t| {
            Box::pin(acl_autogroup_tagged(t))
        })
        .policy(TAGGED_POLICY),
        Scenario::new(
            "PolicyDatabaseModeSetByCli",
            "with policy.mode database, `headscale policy set` changes what connected clients may reach",
            |t| Box::pin(policy_database_mode(t)),
        )
        .setup(ServerSetup { config: &[("HEADSCALE_POLICY_MODE", "database")], ..ServerSetup::default() }),
        Scenario::new(
            "AclGroupMemberAddedAtRuntime",
            "adding a user to a group in the policy file gives their running node the group's access",
            |t| Box::pin(group_member_added(t)),
        )
        .policy(GROUP_POLICY),
        Scenario::new(
            "AclHostAliasForOneNode",
            "a hosts alias for one node's address grants that node and not its sibling",
            |t| Box::pin(host_alias_one_node(t)),
        )
        .policy(ALLOW_ALL),
        Scenario::new(
            "PolicyWithPassingTestsApplies",
            "a policy written under running clients whose own tests pass is applied and enforced",
            |t| Box::pin(policy_with_tests(t)),
        )
        .policy(USER_POLICY),
        Scenario::new(
            "PacketFilterMatchesPolicy",
            "the packet filter a node receives allows exactly its sources on its granted ports",
            |t| Box::pin(packet_filter(t)),
        )
        .policy(USER_POLICY)
        .not_with(NEEDS_MAP),
        Scenario::new(
            "SshPolicyReachesTargets",
            "SSH rules reach the nodes they target as an SSH policy, and no other node gets one",
            |t| Box::pin(ssh_policy(t)),
        )
        .policy(SSH_POLICY)
        .not_with(NEEDS_MAP),
        Scenario::new(
            "GrantAppCapabilityReachesTarget",
            "a grant of an application capability reaches the destination's packet filter as a CapGrant",
            |t| Box::pin(app_grant(t)),
        )
        .policy(APP_GRANT)
        .not_with(NEEDS_MAP),
    ]
}

// tailscale-rs 0.6.1 filters inbound packets without connection tracking: a reply is
// accepted only if the replying peer may reach the sender's (ephemeral) port. Tailscale's own
// client accepts replies to flows it opened. So every policy below that lets A open
// connections to B also lets B reach A, and the scenarios check what A may open on B.

/// alice's nodes may open connections to bob's echo port only (bob's nodes may answer).
const USER_POLICY: &str = r#"{
  "acls": [
    { "action": "accept", "src": ["alice@"], "dst": ["bob@:7000"] },
    { "action": "accept", "src": ["bob@"], "dst": ["alice@:*"] },
  ],
}"#;

async fn acl_matrix(t: Tailnet) -> Result<Verdict> {
    let mut names = Vec::new();
    for user in ["alice", "bob"] {
        let id = t.user(user).await?;
        let key = t.key(id, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
        for i in 1..=2 {
            let name = format!("{user}-{i}");
            t.join(&name, &key.key).await?;
            names.push(name);
        }
    }
    t.await_reachable("alice-1", "bob-1").await?;
    for (a, b) in pairs(&names) {
        if a.starts_with("alice") && b.starts_with("bob") {
            t.tcp(a, b).await?;
            t.udp_if_possible(a, b).await?;
            t.tcp_port_fails(a, b, ECHO_PORT + 1).await?;
        } else if a[..3] == b[..3] {
            ensure!(t.peer(a, b).await?.is_none(), "{a} sees {b}, but no rule connects them");
            t.tcp_fails(a, b).await?;
        }
    }
    Ok(Verdict::Passed)
}

async fn acl_tags(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let bob = t.user("bob").await?;
    let tagged = t.key(alice, KeyOptions { tags: Some("tag:server"), ..KeyOptions::default() }).await?;
    t.join("server-1", &tagged.key).await?;
    t.join("bob-1", &t.key(bob, KeyOptions::default()).await?.key).await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    ensure!(t.node("server-1").await?.user.is_none_or(|u| u.name != "alice"), "a tagged node belongs to no user");
    t.await_reachable("bob-1", "server-1").await?;
    t.tcp("bob-1", "server-1").await?;
    t.tcp_port_fails("bob-1", "server-1", ECHO_PORT + 1).await?;
    ensure!(t.peer("alice-1", "server-1").await?.is_none(), "the tag owner's node sees the server without a rule");
    t.tcp_fails("alice-1", "server-1").await?;
    Ok(Verdict::Passed)
}

/// alice may open connections to bob's echo port only, and does not see carol.
const BOB_ONLY: &str = r#"{
  "acls": [
    { "action": "accept", "src": ["alice@", "carol@"], "dst": ["bob@:7000"] },
    { "action": "accept", "src": ["bob@"], "dst": ["alice@:*", "carol@:*"] },
  ],
}"#;

/// What the administrator changes it to: alice may reach carol on both echo ports, not bob.
const CAROL_ONLY: &str = r#"{
  "acls": [
    { "action": "accept", "src": ["alice@"], "dst": ["carol@:7000-7001"] },
    { "action": "accept", "src": ["carol@"], "dst": ["alice@:*"] },
  ],
}"#;

/// How soon connected clients must follow a policy change.
const POLICY_CHANGE_WITHIN: Duration = Duration::from_secs(3);

async fn acl_runtime_change(t: Tailnet) -> Result<Verdict> {
    for user in ["alice", "bob", "carol"] {
        let id = t.user(user).await?;
        let key = t.key(id, KeyOptions::default()).await?;
        t.join(&format!("{user}-1"), &key.key).await?;
    }
    t.await_reachable("alice-1", "bob-1").await?;
    t.await_reachable("carol-1", "bob-1").await?;
    t.tcp("alice-1", "bob-1").await?;
    t.tcp_port_fails("alice-1", "bob-1", ECHO_PORT + 1).await?;
    ensure!(t.peer("alice-1", "carol-1").await?.is_none(), "alice sees carol, whom the policy hides from her");
    t.tcp_fails("alice-1", "carol-1").await?;

    let changed = Instant::now();
    t.world().write_policy(CAROL_ONLY).await?;
    t.await_reachable("alice-1", "carol-1").await?;
    t.await_gone("alice-1", "bob-1").await?;
    let took = changed.elapsed();
    tracing::info!(?took, "connected clients follow the new policy");
    ensure!(took <= POLICY_CHANGE_WITHIN, "the policy change took {took:?} to reach the clients");
    t.tcp("alice-1", "carol-1").await?;
    t.tcp_port("alice-1", "carol-1", ECHO_PORT + 1).await?;
    t.tcp_fails("alice-1", "bob-1").await?;
    Ok(Verdict::Passed)
}

/// Joins one node per user with a fresh key each, named `USER-1`.
async fn one_each(t: &Tailnet, users: &[&str]) -> Result<()> {
    for user in users {
        let id = t.user(user).await?;
        let key = t.key(id, KeyOptions::default()).await?;
        t.join(&format!("{user}-1"), &key.key).await?;
    }
    Ok(())
}

/// Users' nodes may open connections to tagged nodes; tagged nodes may answer members.
const MEMBER_POLICY: &str = r#"{
  "tagOwners": { "tag:srv": ["alice@"] },
  "acls": [
    { "action": "accept", "src": ["autogroup:member"], "dst": ["tag:srv:7000"] },
    { "action": "accept", "src": ["tag:srv"], "dst": ["autogroup:member:*"] },
  ],
}"#;

async fn acl_autogroup_member(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let bob = t.user("bob").await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    t.join("bob-1", &t.key(bob, KeyOptions::default()).await?.key).await?;
    let tagged = t.key(alice, KeyOptions { reusable: true, tags: Some("tag:srv"), ..KeyOptions::default() }).await?;
    t.join("srv-1", &tagged.key).await?;
    t.join("srv-2", &tagged.key).await?;
    for member in ["alice-1", "bob-1"] {
        t.await_reachable(member, "srv-1").await?;
        t.tcp(member, "srv-1").await?;
    }
    ensure!(t.peer("alice-1", "bob-1").await?.is_none(), "members see each other, but no rule connects them");
    ensure!(
        t.peer("srv-1", "srv-2").await?.is_none(),
        "tagged nodes see each other, but autogroup:member excludes them"
    );
    t.tcp_fails("srv-1", "srv-2").await?;
    Ok(Verdict::Passed)
}

const SELF_POLICY: &str = r#"{
  "acls": [ { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] } ],
}"#;

async fn acl_autogroup_self(t: Tailnet) -> Result<Verdict> {
    let mut names = Vec::new();
    for user in ["alice", "bob"] {
        let id = t.user(user).await?;
        let key = t.key(id, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
        for i in 1..=2 {
            let name = format!("{user}-{i}");
            t.join(&name, &key.key).await?;
            names.push(name);
        }
    }
    for (a, b) in pairs(&names) {
        if a[..3] == b[..3] {
            t.await_reachable(a, b).await?;
            t.tcp(a, b).await?;
        } else {
            ensure!(t.peer(a, b).await?.is_none(), "{a} sees {b}, another user's node");
        }
    }
    t.tcp_fails("alice-1", "bob-1").await?;
    Ok(Verdict::Passed)
}

const GROUP_POLICY: &str = r#"{
  "groups": { "group:ops": ["alice@", "carol@"] },
  "acls": [
    { "action": "accept", "src": ["group:ops"], "dst": ["bob@:7000"] },
    { "action": "accept", "src": ["bob@"], "dst": ["group:ops:*"] },
  ],
}"#;

async fn acl_groups(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob", "carol", "dave"]).await?;
    for member in ["alice-1", "carol-1"] {
        t.await_reachable(member, "bob-1").await?;
        t.tcp(member, "bob-1").await?;
        t.tcp_port_fails(member, "bob-1", ECHO_PORT + 1).await?;
    }
    ensure!(t.peer("dave-1", "bob-1").await?.is_none(), "dave, outside the group, sees bob");
    t.tcp_fails("dave-1", "bob-1").await?;
    Ok(Verdict::Passed)
}

const HOSTS_POLICY: &str = r#"{
  "hosts": { "tailnet": "100.64.0.0/10" },
  "acls": [
    { "action": "accept", "src": ["alice@"], "dst": ["tailnet:7000"] },
    { "action": "accept", "src": ["bob@"], "dst": ["100.64.0.0/10:7001"] },
    { "action": "accept", "src": ["carol@"], "dst": ["alice@:*", "bob@:*"] },
  ],
}"#;

async fn acl_hosts(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob", "carol"]).await?;
    t.await_reachable("alice-1", "carol-1").await?;
    t.tcp("alice-1", "carol-1").await?;
    t.tcp_port_fails("alice-1", "carol-1", ECHO_PORT + 1).await?;
    t.await_reachable("bob-1", "carol-1").await?;
    t.tcp_port("bob-1", "carol-1", ECHO_PORT + 1).await?;
    t.tcp_port_fails("bob-1", "carol-1", ECHO_PORT).await?;
    Ok(Verdict::Passed)
}

const ALLOW_ALL: &str = r#"{ "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ] }"#;

async fn acl_wildcard(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob", "carol"]).await?;
    let names = ["alice-1", "bob-1", "carol-1"].map(String::from);
    all_reachable(&t, &names).await?;
    for (a, b) in pairs(&names) {
        t.tcp_port(a, b, ECHO_PORT + 1).await?;
    }
    Ok(Verdict::Passed)
}

async fn acl_empty(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    let user = t.user("carol").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("carol-1", &key.key).await?;
    t.join("carol-2", &key.key).await?;
    let names = ["alice-1", "bob-1", "carol-1", "carol-2"].map(String::from);
    for (a, b) in pairs(&names) {
        ensure!(t.peer(a, b).await?.is_none(), "{a} sees {b}, but the policy has no rules");
    }
    t.tcp_fails("carol-1", "carol-2").await?;
    Ok(Verdict::Passed)
}

const GRANT_POLICY: &str = r#"{
  "grants": [
    { "src": ["alice@"], "dst": ["bob@"], "ip": ["tcp:7000"] },
    { "src": ["bob@"], "dst": ["alice@"], "ip": ["*"] },
  ],
}"#;

async fn grants_ip(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    t.tcp("alice-1", "bob-1").await?;
    t.tcp_port_fails("alice-1", "bob-1", ECHO_PORT + 1).await?;
    Ok(Verdict::Passed)
}

/// What the administrator writes by mistake: it would open every port, and its own test
/// fails, so the server must refuse it.
const FAILS_ITS_TESTS: &str = r#"{
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
  "tests": [ { "src": "alice@", "deny": ["bob@:7001"] } ],
}"#;

async fn policy_invalid_change(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    t.tcp("alice-1", "bob-1").await?;
    for refused in [r#"{ "acls": [ { "action": "allow-everything", "src": ["*"] } ] }"#, FAILS_ITS_TESTS] {
        t.world().write_policy(refused).await?;
        // The server checks the file every second; give it several chances to (wrongly) apply it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        eventually("alice-1 to still reach bob-1", SETTLE, || async { t.tcp("alice-1", "bob-1").await.ok() }).await?;
        t.tcp_port_fails("alice-1", "bob-1", ECHO_PORT + 1).await?;
    }
    // Fixed again, the file applies.
    t.world().write_policy(ALLOW_ALL).await?;
    eventually("alice-1 to reach bob-1's second port", SETTLE, || async {
        t.tcp_port("alice-1", "bob-1", ECHO_PORT + 1).await.ok()
    })
    .await?;
    Ok(Verdict::Passed)
}

async fn policy_check_cli(t: Tailnet) -> Result<Verdict> {
    t.user("alice").await?;
    let good = t.world().server_file("good.hujson", USER_POLICY).await?;
    t.world().headscale(&["policy", "check", "-f", &good]).await.context("checking a valid policy")?;
    let bad = t
        .world()
        .server_file("bad.hujson", r#"{ "acls": [ { "action": "accept", "src": ["group:nobody"], "dst": ["*:*"] } ] }"#)
        .await?;
    match t.world().headscale(&["policy", "check", "-f", &bad]).await {
        Ok(out) => anyhow::bail!("an undefined group passed the check: {out}"),
        Err(e) => ensure!(format!("{e:#}").contains("group:nobody"), "the refusal does not name the group: {e:#}"),
    }
    Ok(Verdict::Passed)
}

async fn acl_tag_set_by_admin(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let bob = t.user("bob").await?;
    t.join("box", &t.key(alice, KeyOptions::default()).await?.key).await?;
    t.join("bob-1", &t.key(bob, KeyOptions::default()).await?.key).await?;
    ensure!(t.peer("bob-1", "box").await?.is_none(), "bob sees alice's untagged node without a rule");
    let id = t.node("box").await?.id;
    t.world().headscale(&["nodes", "tag", "-i", &id.to_string(), "-t", "tag:server"]).await?;
    ensure!(t.node("box").await?.tags == ["tag:server"], "the server lists the node's new tag");
    t.await_reachable("bob-1", "box").await?;
    t.tcp("bob-1", "box").await?;
    t.tcp_port_fails("bob-1", "box", ECHO_PORT + 1).await?;
    Ok(Verdict::Passed)
}

const GROUP_TAG_OWNER: &str = r#"{
  "groups": { "group:ops": ["alice@"] },
  "tagOwners": { "tag:ops": ["group:ops"] },
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
}"#;

async fn acl_tag_owned_by_group(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let bob = t.user("bob").await?;
    t.start_tagged("ops-1", Some(&t.key(alice, KeyOptions::default()).await?.key), &["tag:ops"]).await?;
    t.joined("ops-1").await?;
    ensure!(t.node("ops-1").await?.tags == ["tag:ops"], "alice's node got tag:ops");
    t.start_tagged("ops-2", Some(&t.key(bob, KeyOptions::default()).await?.key), &["tag:ops"]).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = t.status("ops-2").await?;
    ensure!(!s.authorized, "bob, outside the group, got tag:ops: {s:?}");
    ensure!(t.nodes().await?.len() == 1, "only alice's node is registered");
    Ok(Verdict::Passed)
}

const PORT_RANGE: &str = r#"{
  "acls": [
    { "action": "accept", "src": ["alice@"], "dst": ["bob@:6990-7001"] },
    { "action": "accept", "src": ["bob@"], "dst": ["alice@:*"] },
    { "action": "accept", "src": ["carol@"], "dst": ["bob@:7001-7010"] },
    { "action": "accept", "src": ["bob@"], "dst": ["carol@:*"] },
  ],
}"#;

async fn acl_port_range(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob", "carol"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    t.tcp_port("alice-1", "bob-1", ECHO_PORT).await?;
    t.tcp_port("alice-1", "bob-1", ECHO_PORT + 1).await?;
    t.await_reachable("carol-1", "bob-1").await?;
    t.tcp_port("carol-1", "bob-1", ECHO_PORT + 1).await?;
    t.tcp_port_fails("carol-1", "bob-1", ECHO_PORT).await?;
    Ok(Verdict::Passed)
}

const UDP_ONLY: &str = r#"{
  "acls": [
    { "action": "accept", "src": ["alice@"], "proto": "udp", "dst": ["bob@:7000"] },
    { "action": "accept", "src": ["bob@"], "dst": ["alice@:*"] },
  ],
}"#;

async fn acl_udp_only(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    t.udp("alice-1", "bob-1").await?;
    t.tcp_port_fails("alice-1", "bob-1", ECHO_PORT).await?;
    Ok(Verdict::Passed)
}

const ONE_WAY: &str = r#"{
  "acls": [ { "action": "accept", "src": ["alice@"], "dst": ["bob@:7000"] } ],
}"#;

async fn acl_one_way(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    // A rule in one direction makes both nodes peers of each other.
    t.await_reachable("bob-1", "alice-1").await?;
    t.tcp("alice-1", "bob-1").await?;
    t.tcp_fails("bob-1", "alice-1").await?;
    t.tcp_port_fails("alice-1", "bob-1", ECHO_PORT + 1).await?;
    Ok(Verdict::Passed)
}

const TWO_TAGS: &str = r#"{
  "tagOwners": { "tag:red": ["alice@"], "tag:blue": ["alice@"] },
  "acls": [
    { "action": "accept", "src": ["bob@"], "dst": ["tag:red:7000"] },
    { "action": "accept", "src": ["tag:red"], "dst": ["bob@:*"] },
    { "action": "accept", "src": ["carol@"], "dst": ["tag:blue:7000"] },
    { "action": "accept", "src": ["tag:blue"], "dst": ["carol@:*"] },
  ],
}"#;

async fn acl_tag_changed(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    t.join("box", &t.key(alice, KeyOptions { tags: Some("tag:red"), ..KeyOptions::default() }).await?.key).await?;
    one_each(&t, &["bob", "carol"]).await?;
    t.await_reachable("bob-1", "box").await?;
    t.tcp("bob-1", "box").await?;
    ensure!(t.peer("carol-1", "box").await?.is_none(), "carol sees the red node");
    let id = t.node("box").await?.id;
    t.world().headscale(&["nodes", "tag", "-i", &id.to_string(), "-t", "tag:blue"]).await?;
    t.await_reachable("carol-1", "box").await?;
    t.await_gone("bob-1", "box").await?;
    t.tcp("carol-1", "box").await?;
    t.tcp_fails("bob-1", "box").await?;
    Ok(Verdict::Passed)
}

const FUTURE_USER: &str = r#"{
  "acls": [
    { "action": "accept", "src": ["dana@"], "dst": ["bob@:7000"] },
    { "action": "accept", "src": ["bob@"], "dst": ["dana@:*"] },
  ],
}"#;

async fn acl_user_created_later(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["bob"]).await?;
    one_each(&t, &["dana"]).await?;
    t.await_reachable("dana-1", "bob-1").await?;
    t.tcp("dana-1", "bob-1").await?;
    t.tcp_port_fails("dana-1", "bob-1", ECHO_PORT + 1).await?;
    Ok(Verdict::Passed)
}

const TAGGED_POLICY: &str = r#"{
  "tagOwners": { "tag:srv": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["autogroup:tagged"], "dst": ["autogroup:tagged:*"] } ],
}"#;

async fn acl_autogroup_tagged(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let tagged = t.key(alice, KeyOptions { reusable: true, tags: Some("tag:srv"), ..KeyOptions::default() }).await?;
    t.join("srv-1", &tagged.key).await?;
    t.join("srv-2", &tagged.key).await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    t.await_reachable("srv-1", "srv-2").await?;
    t.tcp("srv-1", "srv-2").await?;
    ensure!(
        t.peer("alice-1", "srv-1").await?.is_none(),
        "a user's node sees a tagged node under autogroup:tagged rules"
    );
    t.tcp_fails("alice-1", "srv-1").await?;
    Ok(Verdict::Passed)
}

async fn policy_database_mode(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    let file = t.world().server_file("set.hujson", USER_POLICY).await?;
    t.world().headscale(&["policy", "set", "-f", &file]).await?;
    let shown = t.world().headscale(&["policy", "get"]).await?;
    ensure!(shown.contains("bob@:7000"), "`policy get` does not show the policy set: {shown}");
    t.await_reachable("alice-1", "bob-1").await?;
    t.await_refused("alice-1", "bob-1", ECHO_PORT + 1).await?;
    t.tcp("alice-1", "bob-1").await?;
    let open = t.world().server_file("open.hujson", ALLOW_ALL).await?;
    t.world().headscale(&["policy", "set", "-f", &open]).await?;
    eventually("alice-1 to reach bob-1's second port", SETTLE, || async {
        t.tcp_port("alice-1", "bob-1", ECHO_PORT + 1).await.ok()
    })
    .await?;
    Ok(Verdict::Passed)
}

async fn group_member_added(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob", "dave"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    t.tcp_fails("dave-1", "bob-1").await?;
    t.world()
        .write_policy(&GROUP_POLICY.replace(r#"["alice@", "carol@"]"#, r#"["alice@", "carol@", "dave@"]"#))
        .await?;
    t.await_reachable("dave-1", "bob-1").await?;
    eventually("dave-1 to reach bob-1", SETTLE, || async { t.tcp("dave-1", "bob-1").await.ok() }).await?;
    t.tcp_port_fails("dave-1", "bob-1", ECHO_PORT + 1).await?;
    Ok(Verdict::Passed)
}

async fn host_alias_one_node(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let bob = t.user("bob").await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    let key = t.key(bob, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    let chosen = t.join("bob-1", &key.key).await?.ipv4.context("bob-1's address")?;
    t.join("bob-2", &key.key).await?;
    let policy = format!(
        r#"{{
  "hosts": {{ "chosen": "{chosen}/32" }},
  "acls": [
    {{ "action": "accept", "src": ["alice@"], "dst": ["chosen:7000"] }},
    {{ "action": "accept", "src": ["bob@"], "dst": ["alice@:*"] }},
  ],
}}"#
    );
    t.world().write_policy(&policy).await?;
    // bob-2 stays alice-1's peer (bob's nodes may reach alice's), but alice-1 may not reach it.
    t.await_refused("alice-1", "bob-1", ECHO_PORT + 1).await?;
    t.tcp("alice-1", "bob-1").await?;
    t.tcp_fails("alice-1", "bob-2").await?;
    Ok(Verdict::Passed)
}

/// [`USER_POLICY`] opened to bob's second port, with tests of its own that pass.
const WITH_TESTS: &str = r#"{
  "acls": [
    { "action": "accept", "src": ["alice@"], "dst": ["bob@:7000-7001"] },
    { "action": "accept", "src": ["bob@"], "dst": ["alice@:*"] },
  ],
  "tests": [
    { "src": "alice@", "accept": ["bob@:7000", "bob@:7001"], "deny": ["bob@:22"] },
  ],
}"#;

async fn policy_with_tests(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    t.tcp_port_fails("alice-1", "bob-1", ECHO_PORT + 1).await?;
    t.world().write_policy(WITH_TESTS).await?;
    eventually("alice-1 to reach bob-1's second port", SETTLE, || async {
        t.tcp_port("alice-1", "bob-1", ECHO_PORT + 1).await.ok()
    })
    .await?;
    t.tcp("alice-1", "bob-1").await?;
    Ok(Verdict::Passed)
}

async fn packet_filter(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    let alice_ip = t.status("alice-1").await?.ipv4.context("alice-1's address")?.to_string();
    let bob_ip = t.status("bob-1").await?.ipv4.context("bob-1's address")?.to_string();
    let filter = t.netmap("bob-1").await?["PacketFilter"].clone();
    let rules = filter.as_array().context("bob-1 has a packet filter")?;
    let from_alice: Vec<&serde_json::Value> = rules
        .iter()
        .filter(|r| r["SrcIPs"].as_array().is_some_and(|s| s.iter().any(|ip| ip == alice_ip.as_str())))
        .collect();
    ensure!(from_alice.len() == 1, "bob-1's filter has {} rules from alice: {filter}", from_alice.len());
    let ports = &from_alice[0]["DstPorts"];
    let to_bob: Vec<&serde_json::Value> =
        ports.as_array().into_iter().flatten().filter(|p| p["IP"] == bob_ip.as_str()).collect();
    ensure!(
        to_bob.len() == 1 && to_bob[0]["Ports"]["First"] == 7000 && to_bob[0]["Ports"]["Last"] == 7000,
        "alice's rule on bob-1 grants {ports}"
    );
    Ok(Verdict::Passed)
}

const SSH_POLICY: &str = r#"{
  "tagOwners": { "tag:box": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
  "ssh": [ { "action": "accept", "src": ["alice@"], "dst": ["tag:box"], "users": ["root", "autogroup:nonroot"] } ],
}"#;

async fn ssh_policy(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    t.join("box", &t.key(alice, KeyOptions { tags: Some("tag:box"), ..KeyOptions::default() }).await?.key).await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    let alice_ip = t.status("alice-1").await?.ipv4.context("alice-1's address")?.to_string();
    let ssh = eventually("box to get an SSH policy", SETTLE, || async {
        let p = t.netmap("box").await.ok()?["SSHPolicy"].clone();
        p["rules"].as_array().is_some_and(|r| !r.is_empty()).then_some(p)
    })
    .await?;
    let rule = &ssh["rules"][0];
    ensure!(rule["action"]["accept"] == true, "the rule does not accept: {rule}");
    let principals = rule["principals"].to_string();
    ensure!(principals.contains(&alice_ip), "alice-1 ({alice_ip}) is not a principal: {principals}");
    ensure!(rule["sshUsers"]["root"] == "root", "root is not mapped to root: {}", rule["sshUsers"]);
    let other = t.netmap("alice-1").await?["SSHPolicy"].clone();
    ensure!(other["rules"].as_array().is_none_or(|r| r.is_empty()), "alice-1, not a target, got SSH rules: {other}");
    Ok(Verdict::Passed)
}

const APP_GRANT: &str = r#"{
  "grants": [
    { "src": ["alice@"], "dst": ["bob@"], "ip": ["*"] },
    { "src": ["bob@"], "dst": ["alice@"], "ip": ["*"] },
    { "src": ["alice@"], "dst": ["bob@"], "app": { "example.com/cap/widgets": [ { "level": "read" } ] } },
  ],
}"#;

async fn app_grant(t: Tailnet) -> Result<Verdict> {
    one_each(&t, &["alice", "bob"]).await?;
    t.await_reachable("alice-1", "bob-1").await?;
    let filter = t.netmap("bob-1").await?["PacketFilter"].clone();
    let grant = filter
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["CapGrant"].as_array().cloned().unwrap_or_default())
        .find(|g| g["CapMap"].get("example.com/cap/widgets").is_some())
        .with_context(|| format!("bob-1's filter carries no widgets grant: {filter}"))?;
    ensure!(grant["CapMap"]["example.com/cap/widgets"][0]["level"] == "read", "the grant's values: {grant}");
    let alices = t.netmap("alice-1").await?["PacketFilter"].to_string();
    ensure!(!alices.contains("example.com/cap/widgets"), "alice-1, the source, got the grant in its own filter");
    Ok(Verdict::Passed)
}
