//! Registration: pre-auth keys of every kind (reusable, one-shot, expired, ephemeral,
//! tagged), tags a client asks for, interactive login, logout and login again, expiry,
//! deletion and renaming of nodes.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    let short_ephemeral = ServerSetup { ephemeral_timeout: Some(Duration::from_secs(5)), ..ServerSetup::default() };
    vec![
        Scenario::new("PreAuthKeyReusable", "one reusable key registers two nodes that reach each other", |t| Box::pin(reusable_key(t))),
        Scenario::new("PreAuthKeyOneShot", "a one-shot key registers one node; a second machine with it is refused", |t| Box::pin(one_shot_key(t))),
        Scenario::new("PreAuthKeyExpired", "an expired key registers nothing", |t| Box::pin(expired_key(t))),
        Scenario::new("PreAuthKeyEphemeral", "an ephemeral node is removed after it disconnects, and its peers drop it", |t| Box::pin(ephemeral_key(t)))
            .setup(short_ephemeral),
        Scenario::new("LogoutLoginKeepsAddress", "a node logged out (expired by the admin) logs in again with a new key and keeps its address", |t| Box::pin(logout_login(t))),
        Scenario::new("NodeExpiry", "an expired node is cut off and its peers see it expired", |t| Box::pin(node_expiry(t))),
        Scenario::new("InteractiveLogin", "a node without a key gets a URL and is approved with `headscale auth register`", |t| Box::pin(interactive_login(t))),
        Scenario::new("PreAuthKeyTaggedMakesTaggedNode", "a tagged pre-auth key registers a node owned by its tags, not by a user, and peers see the tags", |t| Box::pin(tagged_key(t)))
            .policy(TAG_OWNERS),
        Scenario::new("RequestedTagOwnedIsApplied", "a node asking for a tag its key's user owns (tagOwners) registers as a tagged node", |t| Box::pin(requested_tag_owned(t)))
            .policy(TAG_OWNERS)
            .not_with(NEEDS_REQUESTED_TAGS),
        Scenario::new("RequestedTagNotOwnedIsRefused", "a node asking for a tag its key's user does not own is refused and nothing is registered", |t| Box::pin(requested_tag_not_owned(t)))
            .policy(TAG_OWNERS)
            .not_with(NEEDS_REQUESTED_TAGS),
        Scenario::new("TaggedKeyRefusesOtherRequestedTags", "a node with a tagged key that asks for another tag is refused", |t| Box::pin(tagged_key_other_tag(t)))
            .policy(TAG_OWNERS)
            .not_with(NEEDS_REQUESTED_TAGS),
        Scenario::new("KeyExpiredAfterUseKeepsNodes", "expiring a used reusable key keeps its nodes connected but registers no new one", |t| Box::pin(key_expired_after_use(t))),
        Scenario::new("NodeDeletedIsDroppedByPeers", "a node deleted by the admin disappears from its peers' maps and from the server", |t| Box::pin(node_deleted(t))),
        Scenario::new("NodeRenamedReachedByNewName", "a node renamed by the admin is shown under its new DNS name and reached by it", |t| Box::pin(node_renamed(t)))
            .not_with(NEEDS_MAGIC_DNS),
        Scenario::new("InteractiveLoginUnknownUserRefused", "approving a waiting node for a user that does not exist fails and registers nothing; the right user works", |t| Box::pin(interactive_unknown_user(t))),
        Scenario::new("InteractiveLoginRequestedTags", "a node logging in interactively with a tag the approving user owns becomes tagged", |t| Box::pin(interactive_requested_tags(t)))
            .policy(TAG_OWNERS)
            .not_with(NEEDS_REQUESTED_TAGS),
        Scenario::new("NodeExpiryDisabledByAdmin", "an expired node whose expiry the admin disables is let back in without a new login", |t| Box::pin(expiry_disabled(t))),
        Scenario::new("UserWithNodesCannotBeDestroyed", "a user who owns nodes cannot be destroyed; once the nodes are deleted the user can", |t| Box::pin(user_destroy(t))),
        Scenario::new("EphemeralReusableKeyBothRemoved", "two nodes of one reusable ephemeral key are both removed after they quit", |t| Box::pin(ephemeral_reusable(t)))
            .setup(ServerSetup { ephemeral_timeout: Some(Duration::from_secs(5)), ..ServerSetup::default() }),
        Scenario::new("EphemeralSurvivesQuickRestart", "an ephemeral node that restarts within the inactivity timeout is kept as the same node", |t| Box::pin(ephemeral_quick_restart(t)))
            .setup(ServerSetup { ephemeral_timeout: Some(Duration::from_secs(30)), ..ServerSetup::default() }),
        Scenario::new("PreAuthKeyDeletedKeepsNode", "deleting the key a node registered with keeps the node, which reconnects after a restart", |t| Box::pin(key_deleted_keeps_node(t))),
        Scenario::new("ReloginWithExpiredKeyRefused", "a logged-out node that tries to log in again with an expired key stays out", |t| Box::pin(relogin_expired_key(t))),
        Scenario::new("NodeExpiryInTheFuture", "an expiry set in the future reaches peers as the node's key expiry, and the node stays reachable", |t| Box::pin(expiry_in_future(t))),
        Scenario::new("TaggedNodeHasTaggedDevicesProfile", "peers see a tagged node as owned by the tagged-devices profile, not by the key's user", |t| Box::pin(tagged_devices_profile(t)))
            .policy(TAG_OWNERS)
            .not_with(NEEDS_MAP),
        Scenario::new("InteractiveReloginKeepsAddress", "a node registered in the browser flow, logged out by the admin, logs in the same way and keeps its address", |t| Box::pin(interactive_relogin(t))),
        Scenario::new("InteractiveLoginPingAll", "three nodes registered in the browser flow, for two users, all reach each other", |t| Box::pin(interactive_ping_all(t))),
        Scenario::new("OneShotKeyNotReusableAfterDeletion", "a one-shot key whose node was deleted registers nothing more", |t| Box::pin(one_shot_after_deletion(t))),
        Scenario::new("SameHostnameGetsUniqueName", "two machines asking for one hostname get distinct DNS names, and each is reached by its own", |t| Box::pin(same_hostname(t))),
        Scenario::new("TaggedNodeKeepsAtLeastOneTag", "the admin cannot take every tag off a tagged node; it stays tagged", |t| Box::pin(tagged_keeps_a_tag(t)))
            .policy(TAG_OWNERS),
        Scenario::new("ExpiredNodeSeesNoPeers", "a node whose key expired is sent a map with no peers", |t| Box::pin(expired_sees_no_one(t)))
            .not_with(NEEDS_MAP),
    ]
}

async fn reusable_key(t: Tailnet) -> Result<Verdict> {
    let user = t.user("reuse").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("first", &key.key).await?;
    t.join("second", &key.key).await?;
    t.await_reachable("first", "second").await?;
    t.tcp("first", "second").await?;
    ensure!(t.nodes().await?.len() == 2, "two nodes registered with one reusable key");
    Ok(Verdict::Passed)
}

async fn one_shot_key(t: Tailnet) -> Result<Verdict> {
    let user = t.user("once").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    t.join("first", &key.key).await?;
    t.start("second", Some(&key.key), false).await?;
    stays_refused(&t, "second", &["first"]).await?;
    let keys: Vec<serde_json::Value> = t.cli_list(&["preauthkeys", "list"]).await?;
    ensure!(keys.iter().all(|k| k["used"] == true), "the one-shot key is marked used: {keys:?}");
    Ok(Verdict::Passed)
}

async fn expired_key(t: Tailnet) -> Result<Verdict> {
    let user = t.user("late").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.world().headscale(&["preauthkeys", "expire", "-i", &key.id.to_string()]).await?;
    t.start("late", Some(&key.key), false).await?;
    stays_refused(&t, "late", &[]).await?;
    Ok(Verdict::Passed)
}

async fn ephemeral_key(t: Tailnet) -> Result<Verdict> {
    let user = t.user("eph").await?;
    let stay = t.key(user, KeyOptions::default()).await?;
    let fleeting = t.key(user, KeyOptions { ephemeral: true, ..KeyOptions::default() }).await?;
    t.join("stays", &stay.key).await?;
    t.join("fleeting", &fleeting.key).await?;
    t.await_reachable("stays", "fleeting").await?;
    t.stop("fleeting").await?;
    eventually("the server to remove the ephemeral node", SETTLE, || async {
        let nodes = t.nodes().await.ok()?;
        (nodes.len() == 1 && nodes[0].given_name == "stays").then_some(())
    })
    .await?;
    t.await_gone("stays", "fleeting").await?;
    Ok(Verdict::Passed)
}

async fn logout_login(t: Tailnet) -> Result<Verdict> {
    let user = t.user("roam").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    let before = t.join("roamer", &key.key).await?;
    t.join("home", &key.key).await?;
    t.await_reachable("home", "roamer").await?;
    // tailscale-rs cannot log out by itself: the admin logs the node out instead.
    let id = t.node("roamer").await?.id;
    t.world().headscale(&["nodes", "expire", "-i", &id.to_string()]).await?;
    t.await_peer("home", "roamer", "expired", |p| p.expired()).await?;
    let fresh = t.key(user, KeyOptions::default()).await?;
    t.login("roamer", &fresh.key).await?;
    let after = t.joined("roamer").await?;
    ensure!(after.ipv4 == before.ipv4 && after.ipv6 == before.ipv6, "address changed: {before:?} -> {after:?}");
    ensure!(t.nodes().await?.len() == 2, "logging in again made no new node");
    t.await_peer("home", "roamer", "no longer expired", |p| !p.expired()).await?;
    t.await_reachable("home", "roamer").await?;
    t.tcp("home", "roamer").await?;
    Ok(Verdict::Passed)
}

async fn node_expiry(t: Tailnet) -> Result<Verdict> {
    let user = t.user("exp").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    let names = ["doomed", "left", "right"].map(String::from);
    for n in &names {
        t.join(n, &key.key).await?;
    }
    all_reachable(&t, &names).await?;
    t.tcp("left", "doomed").await?;
    let id = t.node("doomed").await?.id;
    t.world().headscale(&["nodes", "expire", "-i", &id.to_string()]).await?;
    ensure!(t.node("doomed").await?.expired(), "the server lists the node as expired");
    for peer in ["left", "right"] {
        t.await_peer(peer, "doomed", "expired", |p| p.expired()).await?;
    }
    t.tcp_fails("left", "doomed").await?;
    t.tcp_fails("doomed", "right").await?;
    t.tcp("left", "right").await?;
    Ok(Verdict::Passed)
}

async fn interactive_login(t: Tailnet) -> Result<Verdict> {
    t.user("dave").await?;
    t.start("laptop", None, false).await?;
    let url = eventually("laptop to get a login URL", SETTLE, || async {
        t.status("laptop").await.ok().and_then(|s| s.auth_url)
    })
    .await?;
    let auth_id = url.rsplit('/').next().context("auth id in the login URL")?.to_string();
    ensure!(auth_id.starts_with("hskey-authreq-"), "login URL {url}");
    ensure!(t.nodes().await?.is_empty(), "nothing is registered before approval");
    t.world().headscale(&["auth", "register", "--auth-id", &auth_id, "--user", "dave"]).await?;
    let status = t.joined("laptop").await?;
    let node = t.node("laptop").await?;
    ensure!(node.user.as_ref().is_some_and(|u| u.name == "dave"), "the node belongs to dave: {node:?}");
    let ip = status.ipv4.context("address")?.to_string();
    ensure!(node.ip_addresses.contains(&ip), "client address {ip} is the server's {:?}", node.ip_addresses);
    Ok(Verdict::Passed)
}

/// alice owns `tag:web`; bob owns nothing; everyone may reach everyone.
const TAG_OWNERS: &str = r#"{
  "tagOwners": { "tag:web": ["alice@"], "tag:db": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
}"#;

/// Waits until the server lists `name` as a tagged node with exactly `tags` and no user.
async fn tagged_as(t: &Tailnet, name: &str, tags: &[&str]) -> Result<()> {
    let node = t.node(name).await?;
    ensure!(node.tags == tags, "{name} has tags {:?}, expected {tags:?}", node.tags);
    ensure!(
        node.user.as_ref().is_none_or(|u| u.name != "alice" && u.name != "bob"),
        "{name} is owned by {:?}",
        node.user
    );
    Ok(())
}

async fn tagged_key(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let key = t.key(alice, KeyOptions { tags: Some("tag:web"), ..KeyOptions::default() }).await?;
    t.join("web-1", &key.key).await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    tagged_as(&t, "web-1", &["tag:web"]).await?;
    let status = t.status("web-1").await?;
    ensure!(status.key_expiry.is_none(), "a tagged node's key never expires, its map says {:?}", status.key_expiry);
    t.await_reachable("alice-1", "web-1").await?;
    t.tcp("alice-1", "web-1").await?;
    if t.client() == ClientKind::Go {
        let peer = t.peer_entry("alice-1", "web-1").await?.context("alice-1 has web-1 in its map")?;
        ensure!(peer["Tags"] == serde_json::json!(["tag:web"]), "alice-1 sees web-1 with tags {}", peer["Tags"]);
    } else {
        t.note("peer tags not checked: tailscale-rs shows no raw map");
    }
    Ok(Verdict::Passed)
}

async fn requested_tag_owned(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let key = t.key(alice, KeyOptions::default()).await?;
    t.start_tagged("web-1", Some(&key.key), &["tag:web"]).await?;
    t.joined("web-1").await?;
    tagged_as(&t, "web-1", &["tag:web"]).await?;
    Ok(Verdict::Passed)
}

async fn requested_tag_not_owned(t: Tailnet) -> Result<Verdict> {
    t.user("alice").await?;
    let bob = t.user("bob").await?;
    let key = t.key(bob, KeyOptions::default()).await?;
    t.start_tagged("sneaky", Some(&key.key), &["tag:web"]).await?;
    stays_refused(&t, "sneaky", &[]).await?;
    Ok(Verdict::Passed)
}

async fn tagged_key_other_tag(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let key = t.key(alice, KeyOptions { tags: Some("tag:web"), ..KeyOptions::default() }).await?;
    t.start_tagged("db-1", Some(&key.key), &["tag:db"]).await?;
    stays_refused(&t, "db-1", &[]).await?;
    Ok(Verdict::Passed)
}

async fn key_expired_after_use(t: Tailnet) -> Result<Verdict> {
    let user = t.user("lapse").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("kept-1", &key.key).await?;
    t.join("kept-2", &key.key).await?;
    t.await_reachable("kept-1", "kept-2").await?;
    t.world().headscale(&["preauthkeys", "expire", "-i", &key.id.to_string()]).await?;
    t.start("refused", Some(&key.key), false).await?;
    stays_refused(&t, "refused", &["kept-1", "kept-2"]).await?;
    for (a, b) in [("kept-1", "kept-2"), ("kept-2", "kept-1")] {
        t.tcp(a, b).await?;
    }
    Ok(Verdict::Passed)
}

async fn node_deleted(t: Tailnet) -> Result<Verdict> {
    let user = t.user("prune").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    let names = ["gone", "left", "right"].map(String::from);
    // The deleted node has a key of its own, used up: a client that starts over with its
    // key (tailscale-rs's supervisor does) cannot come back as a new node.
    t.join("gone", &t.key(user, KeyOptions::default()).await?.key).await?;
    for n in &names[1..] {
        t.join(n, &key.key).await?;
    }
    all_reachable(&t, &names).await?;
    let id = t.node("gone").await?.id;
    t.world().headscale(&["nodes", "delete", "-i", &id.to_string(), "--force"]).await?;
    for peer in ["left", "right"] {
        t.await_gone(peer, "gone").await?;
    }
    let listed: Vec<String> = t.nodes().await?.into_iter().map(|n| n.given_name).collect();
    ensure!(listed == ["left", "right"], "the server lists {listed:?} after the deletion");
    t.tcp("left", "right").await?;
    Ok(Verdict::Passed)
}

async fn node_renamed(t: Tailnet) -> Result<Verdict> {
    let user = t.user("label").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("plain", &key.key).await?;
    t.join("viewer", &key.key).await?;
    t.await_reachable("viewer", "plain").await?;
    let id = t.node("plain").await?.id;
    t.world().headscale(&["nodes", "rename", "-i", &id.to_string(), "fancy"]).await?;
    ensure!(t.node("fancy").await?.given_name == "fancy", "the server lists the new name");
    eventually("viewer to see plain as fancy", SETTLE, || async {
        let p = t.peer_entry("viewer", "plain").await.ok()??;
        p["Name"].as_str().is_some_and(|n| n.starts_with("fancy.")).then_some(())
    })
    .await?;
    t.tcp_name("viewer", "fancy", "plain").await?;
    Ok(Verdict::Passed)
}

/// Starts `name` without a key and returns the auth id of the login it waits for.
async fn waiting_login(t: &Tailnet, name: &str, tags: &[&str]) -> Result<String> {
    t.start_tagged(name, None, tags).await?;
    let url = eventually(&format!("{name} to get a login URL"), SETTLE, || async {
        t.status(name).await.ok().and_then(|s| s.auth_url)
    })
    .await?;
    Ok(url.rsplit('/').next().context("auth id in the login URL")?.to_string())
}

async fn interactive_unknown_user(t: Tailnet) -> Result<Verdict> {
    t.user("erin").await?;
    let auth_id = waiting_login(&t, "desk", &[]).await?;
    let wrong = t.world().headscale(&["auth", "register", "--auth-id", &auth_id, "--user", "nobody"]).await;
    ensure!(wrong.is_err(), "approving for a user that does not exist succeeded: {wrong:?}");
    ensure!(t.nodes().await?.is_empty(), "a node was registered for a user that does not exist");
    ensure!(!t.status("desk").await?.authorized, "the node was let in");
    t.world().headscale(&["auth", "register", "--auth-id", &auth_id, "--user", "erin"]).await?;
    t.joined("desk").await?;
    ensure!(t.node("desk").await?.user.is_some_and(|u| u.name == "erin"), "the node belongs to erin");
    Ok(Verdict::Passed)
}

async fn interactive_requested_tags(t: Tailnet) -> Result<Verdict> {
    t.user("alice").await?;
    let auth_id = waiting_login(&t, "web-2", &["tag:web"]).await?;
    t.world().headscale(&["auth", "register", "--auth-id", &auth_id, "--user", "alice"]).await?;
    t.joined("web-2").await?;
    tagged_as(&t, "web-2", &["tag:web"]).await?;
    Ok(Verdict::Passed)
}

async fn expiry_disabled(t: Tailnet) -> Result<Verdict> {
    let user = t.user("lazarus").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("lazarus", &key.key).await?;
    t.join("mourner", &key.key).await?;
    t.await_reachable("mourner", "lazarus").await?;
    let id = t.node("lazarus").await?.id.to_string();
    t.world().headscale(&["nodes", "expire", "-i", &id]).await?;
    t.await_peer("mourner", "lazarus", "expired", |p| p.expired()).await?;
    t.world().headscale(&["nodes", "expire", "-i", &id, "--disable"]).await?;
    ensure!(!t.node("lazarus").await?.expired(), "the server still lists the node expired");
    t.await_peer("mourner", "lazarus", "no longer expired", |p| !p.expired()).await?;
    eventually("mourner to reach lazarus again", Duration::from_secs(45), || async {
        t.tcp("mourner", "lazarus").await.ok()
    })
    .await?;
    Ok(Verdict::Passed)
}

async fn user_destroy(t: Tailnet) -> Result<Verdict> {
    let user = t.user("owner").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    t.join("owned", &key.key).await?;
    let refused = t.world().headscale(&["users", "destroy", "--name", "owner", "--force"]).await;
    ensure!(refused.is_err(), "a user with a node was destroyed: {refused:?}");
    let id = t.node("owned").await?.id;
    t.world().headscale(&["nodes", "delete", "-i", &id.to_string(), "--force"]).await?;
    t.world().headscale(&["users", "destroy", "--name", "owner", "--force"]).await?;
    let users: Vec<serde_json::Value> = t.cli_list(&["users", "list"]).await?;
    ensure!(users.is_empty(), "users left after the destroy: {users:?}");
    Ok(Verdict::Passed)
}

async fn ephemeral_reusable(t: Tailnet) -> Result<Verdict> {
    let user = t.user("fleet").await?;
    let key = t.key(user, KeyOptions { reusable: true, ephemeral: true, ..KeyOptions::default() }).await?;
    t.join("drone-1", &key.key).await?;
    t.join("drone-2", &key.key).await?;
    t.await_reachable("drone-1", "drone-2").await?;
    t.stop("drone-1").await?;
    t.stop("drone-2").await?;
    eventually("the server to remove both ephemeral nodes", SETTLE, || async {
        t.nodes().await.ok().filter(|n| n.is_empty())
    })
    .await?;
    Ok(Verdict::Passed)
}

async fn ephemeral_quick_restart(t: Tailnet) -> Result<Verdict> {
    let user = t.user("blink").await?;
    let key = t.key(user, KeyOptions { ephemeral: true, ..KeyOptions::default() }).await?;
    let before = t.join("blinker", &key.key).await?;
    t.join("steady", &t.key(user, KeyOptions::default()).await?.key).await?;
    let id = t.node("blinker").await?.id;
    t.restart_client("blinker").await?;
    let after = t.joined("blinker").await?;
    ensure!(after.ipv4 == before.ipv4, "the ephemeral node changed address: {:?} -> {:?}", before.ipv4, after.ipv4);
    ensure!(t.node("blinker").await?.id == id, "the ephemeral node was replaced");
    t.await_reachable("steady", "blinker").await?;
    eventually("steady to reach blinker", Duration::from_secs(45), || async { t.tcp("steady", "blinker").await.ok() })
        .await?;
    Ok(Verdict::Passed)
}

async fn key_deleted_keeps_node(t: Tailnet) -> Result<Verdict> {
    let user = t.user("orphan").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    t.join("orphan", &key.key).await?;
    t.join("friend", &t.key(user, KeyOptions::default()).await?.key).await?;
    t.world().headscale(&["preauthkeys", "delete", "-i", &key.id.to_string(), "--force"]).await?;
    t.await_reachable("friend", "orphan").await?;
    ensure!(t.status("orphan").await?.authorized, "the node was logged out with its key");
    t.restart_client("orphan").await?;
    t.joined("orphan").await?;
    ensure!(t.nodes().await?.len() == 2, "the restarted node is still one of two");
    eventually("friend to reach orphan after its restart", Duration::from_secs(45), || async {
        t.tcp("friend", "orphan").await.ok()
    })
    .await?;
    Ok(Verdict::Passed)
}

async fn relogin_expired_key(t: Tailnet) -> Result<Verdict> {
    let user = t.user("stale").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    t.join("stale", &key.key).await?;
    let id = t.node("stale").await?.id;
    t.world().headscale(&["nodes", "expire", "-i", &id.to_string()]).await?;
    let logged_out =
        |s: &crate::protocol::NodeStatus| !s.authorized || s.key_expiry.is_some_and(|e| e <= chrono::Utc::now());
    eventually("stale to see itself logged out", SETTLE, || async { t.status("stale").await.ok().filter(logged_out) })
        .await?;
    let old = t.key(user, KeyOptions::default()).await?;
    t.world().headscale(&["preauthkeys", "expire", "-i", &old.id.to_string()]).await?;
    let _ = t.login("stale", &old.key).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A refused login may also end the client (Caddy stops when tsnet cannot start).
    match t.status("stale").await {
        Ok(s) => ensure!(logged_out(&s), "an expired key let the node back in: {s:?}"),
        Err(e) => ensure!(format!("{e:#}").contains("exited"), "the client cannot say how it is: {e:#}"),
    }
    ensure!(t.node("stale").await?.expired(), "the server lists the node as expired still");
    Ok(Verdict::Passed)
}

async fn expiry_in_future(t: Tailnet) -> Result<Verdict> {
    let user = t.user("later").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("later", &key.key).await?;
    t.join("peer", &key.key).await?;
    t.await_reachable("peer", "later").await?;
    let when = chrono::DateTime::from_timestamp((chrono::Utc::now() + chrono::Duration::days(3)).timestamp(), 0)
        .context("a time three days ahead")?;
    let id = t.node("later").await?.id;
    t.world().headscale(&["nodes", "expire", "-i", &id.to_string(), "-e", &when.to_rfc3339()]).await?;
    let seen = t
        .await_peer("peer", "later", "with the new expiry", |p| {
            p.key_expiry.is_some_and(|e| (e - when).num_seconds().abs() <= 1)
        })
        .await?;
    ensure!(!seen.expired(), "a future expiry shows the node expired");
    t.tcp("peer", "later").await?;
    Ok(Verdict::Passed)
}

async fn tagged_devices_profile(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    t.join("web-1", &t.key(alice, KeyOptions { tags: Some("tag:web"), ..KeyOptions::default() }).await?.key).await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    t.await_reachable("alice-1", "web-1").await?;
    let map = t.netmap("alice-1").await?;
    let peer = t.peer_entry("alice-1", "web-1").await?.context("web-1 in alice-1's map")?;
    let owner = peer["User"].as_u64().context("the peer's user id")?;
    let profile = map["UserProfiles"].as_array().into_iter().flatten().find(|p| p["ID"].as_u64() == Some(owner));
    let login = profile.and_then(|p| p["LoginName"].as_str()).unwrap_or_default();
    ensure!(login == "tagged-devices", "web-1 is shown owned by {login:?} (user {owner})");
    Ok(Verdict::Passed)
}

async fn interactive_relogin(t: Tailnet) -> Result<Verdict> {
    t.user("gail").await?;
    let auth_id = waiting_login(&t, "roamer", &[]).await?;
    t.world().headscale(&["auth", "register", "--auth-id", &auth_id, "--user", "gail"]).await?;
    let before = t.joined("roamer").await?;
    let id = t.node("roamer").await?.id;
    t.world().headscale(&["nodes", "expire", "-i", &id.to_string()]).await?;
    t.restart_client("roamer").await?;
    let url = eventually("roamer to get a new login URL", SETTLE, || async {
        t.status("roamer").await.ok().and_then(|s| s.auth_url)
    })
    .await?;
    let again = url.rsplit('/').next().context("auth id in the login URL")?.to_string();
    ensure!(again != auth_id, "the new login reused the old auth id");
    t.world().headscale(&["auth", "register", "--auth-id", &again, "--user", "gail"]).await?;
    let after = t.joined("roamer").await?;
    ensure!(after.ipv4 == before.ipv4, "address changed: {:?} -> {:?}", before.ipv4, after.ipv4);
    ensure!(t.node("roamer").await?.id == id, "logging in again made a new node");
    ensure!(!t.node("roamer").await?.expired(), "the server still lists the node expired");
    Ok(Verdict::Passed)
}

async fn interactive_ping_all(t: Tailnet) -> Result<Verdict> {
    t.user("hana").await?;
    t.user("ivan").await?;
    let names = ["hana-1", "hana-2", "ivan-1"].map(String::from);
    for n in &names {
        let auth_id = waiting_login(&t, n, &[]).await?;
        let user = &n[..4];
        t.world().headscale(&["auth", "register", "--auth-id", &auth_id, "--user", user]).await?;
        t.joined(n).await?;
    }
    all_reachable(&t, &names).await?;
    for (a, b) in pairs(&names) {
        t.tcp(a, b).await?;
    }
    Ok(Verdict::Passed)
}

async fn one_shot_after_deletion(t: Tailnet) -> Result<Verdict> {
    let user = t.user("single").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    t.join("first", &key.key).await?;
    let id = t.node("first").await?.id;
    t.stop("first").await?;
    t.world().headscale(&["nodes", "delete", "-i", &id.to_string(), "--force"]).await?;
    t.start("second", Some(&key.key), false).await?;
    stays_refused(&t, "second", &[]).await?;
    Ok(Verdict::Passed)
}

async fn same_hostname(t: Tailnet) -> Result<Verdict> {
    let user = t.user("twins").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    for name in ["first", "second"] {
        t.start_with(crate::scenario::ClientSpec {
            name: name.into(),
            hostname: Some("twin".into()),
            authkey: Some(key.key.clone()),
            ephemeral: false,
            tags: Vec::new(),
            kind: t.client(),
        })
        .await?;
        t.joined(name).await?;
    }
    let nodes = t.nodes().await?;
    let given: Vec<&str> = nodes.iter().map(|n| n.given_name.as_str()).collect();
    ensure!(nodes.len() == 2 && given[0] != given[1], "two nodes with distinct names, got {given:?}");
    ensure!(nodes.iter().all(|n| n.name == "twin"), "both keep the hostname they asked for: {nodes:?}");
    let first_ip = t.status("first").await?.ipv4.context("first's address")?.to_string();
    let (mine, other): (Vec<_>, Vec<_>) = nodes.iter().partition(|n| n.ip_addresses.contains(&first_ip));
    let (mine, other) = (&mine[0].given_name, &other[0].given_name);
    t.await_reachable("second", mine).await?;
    t.tcp("second", "first").await?;
    if t.client() == ClientKind::Go {
        t.tcp_name("second", mine, "twin").await?;
        let x = t.ask_tcp_name("first", other).await?;
        ensure!(x.answered_by.as_deref() == Some("twin"), "{other} answered as {:?}", x.answered_by);
    }
    Ok(Verdict::Passed)
}

async fn tagged_keeps_a_tag(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    t.join("web-1", &t.key(alice, KeyOptions { tags: Some("tag:web"), ..KeyOptions::default() }).await?.key).await?;
    let id = t.node("web-1").await?.id.to_string();
    let r = t.world().headscale(&["nodes", "tag", "-i", &id, "-t", ""]).await;
    ensure!(r.is_err(), "all tags were taken off a tagged node: {r:?}");
    ensure!(t.node("web-1").await?.tags == ["tag:web"], "the node's tags changed");
    t.world().headscale(&["nodes", "tag", "-i", &id, "-t", "tag:db"]).await?;
    ensure!(t.node("web-1").await?.tags == ["tag:db"], "the admin's replacement tag applies");
    Ok(Verdict::Passed)
}

async fn expired_sees_no_one(t: Tailnet) -> Result<Verdict> {
    let user = t.user("lone").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("lone", &key.key).await?;
    t.join("crowd", &key.key).await?;
    t.await_reachable("lone", "crowd").await?;
    let id = t.node("lone").await?.id;
    t.world().headscale(&["nodes", "expire", "-i", &id.to_string()]).await?;
    eventually("lone's map to hold no peers", SETTLE, || async {
        let map = t.netmap("lone").await.ok()?;
        map["Peers"].as_array().is_some_and(|p| p.is_empty()).then_some(())
    })
    .await?;
    Ok(Verdict::Passed)
}
