//! The admin surface: the `headscale` CLI's view of the tailnet, API keys guarding the REST
//! API (and what an unauthenticated caller gets), node deletion through REST, user renames
//! reaching clients, and the page a waiting node's login URL opens.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "CliNodesListMatchesClients",
            about: "`nodes list` shows every client with the address, owner and online state the clients have",
            setup: ServerSetup::default(),
            not_with: &[],
            run: |t| Box::pin(nodes_list(t)),
        },
        Scenario {
            name: "ApiKeyGuardsRest",
            about: "the REST API answers 401 without a key, with a bad one or an expired one, and 200 with a valid one",
            setup: ServerSetup::default(),
            not_with: &[],
            run: |t| Box::pin(api_key_guards(t)),
        },
        Scenario {
            name: "ApiDeleteNodeDropsPeer",
            about: "a node deleted through REST (DELETE /api/v1/node/ID) disappears from its peers' maps",
            setup: ServerSetup::default(),
            not_with: &[],
            run: |t| Box::pin(api_delete_node(t)),
        },
        Scenario {
            name: "UserRenameReachesPeers",
            about: "a user renamed by the admin is shown under the new name in its peers' user profiles",
            setup: ServerSetup::default(),
            not_with: &[(ClientKind::Rs, "tailscale-rs shows no user profiles")],
            run: |t| Box::pin(user_rename(t)),
        },
        Scenario {
            name: "RegisterPageNamesCommand",
            about: "a waiting node's login URL opens a page with the `headscale auth register` command for it",
            setup: ServerSetup::default(),
            not_with: &[],
            run: |t| Box::pin(register_page(t)),
        },
    ]
}

async fn nodes_list(t: Tailnet) -> Result<Verdict> {
    let mut expected = Vec::new();
    for user in ["alice", "bob"] {
        let id = t.user(user).await?;
        let key = t.key(id, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
        for i in 1..=2 {
            let name = format!("{user}-{i}");
            let status = t.join(&name, &key.key).await?;
            expected.push((name, user, status));
        }
    }
    let listed = eventually("the server to list all four online", SETTLE, || async {
        t.nodes().await.ok().filter(|n| n.len() == 4 && n.iter().all(|n| n.online))
    })
    .await?;
    for (name, user, status) in &expected {
        let node = listed.iter().find(|n| n.given_name == *name).with_context(|| format!("{name} is listed"))?;
        ensure!(node.user.as_ref().is_some_and(|u| u.name == *user), "{name} belongs to {user}: {node:?}");
        let ip = status.ipv4.context("client address")?.to_string();
        ensure!(node.ip_addresses.contains(&ip), "{name} has {ip}, the server lists {:?}", node.ip_addresses);
        if let Some(v6) = status.ipv6 {
            ensure!(node.ip_addresses.contains(&v6.to_string()), "{name} has {v6}, the server lists {:?}", node.ip_addresses);
        }
    }
    Ok(Verdict::Passed)
}

async fn api_key_guards(t: Tailnet) -> Result<Verdict> {
    t.user("secret-holder").await?;
    let key: String = t.cli_json(&["apikeys", "create"]).await?;
    for (bad, what) in [(None, "no key"), (Some("invalid"), "a malformed key"), (Some("hskey-api-aaaaaaaaaaaa-bbbb"), "an unknown key")] {
        let a = t.api("GET", "/api/v1/user", bad, "").await?;
        ensure!(a.status == 401, "GET /api/v1/user with {what} answered {}: {}", a.status, a.body);
        ensure!(!a.body.contains("secret-holder"), "the refusal with {what} leaks a user name: {}", a.body);
    }
    let ok = t.api("GET", "/api/v1/user", Some(&key), "").await?;
    ensure!(ok.status == 200 && ok.body.contains("secret-holder"), "a valid key got {}: {}", ok.status, ok.body);
    let prefix = key.strip_prefix("hskey-api-").and_then(|k| k.split('-').next()).context("the key's prefix")?;
    t.world().headscale(&["apikeys", "expire", "--prefix", prefix]).await?;
    let expired = t.api("GET", "/api/v1/user", Some(&key), "").await?;
    ensure!(expired.status == 401, "an expired key answered {}: {}", expired.status, expired.body);
    Ok(Verdict::Passed)
}

async fn api_delete_node(t: Tailnet) -> Result<Verdict> {
    let user = t.user("rest").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("doomed", &key.key).await?;
    t.join("watcher", &key.key).await?;
    t.await_reachable("watcher", "doomed").await?;
    let api_key: String = t.cli_json(&["apikeys", "create"]).await?;
    let id = t.node("doomed").await?.id;
    let a = t.api("DELETE", &format!("/api/v1/node/{id}"), Some(&api_key), "").await?;
    ensure!(a.status == 200, "DELETE /api/v1/node/{id} answered {}: {}", a.status, a.body);
    t.await_gone("watcher", "doomed").await?;
    ensure!(t.nodes().await?.len() == 1, "the server still lists the deleted node");
    Ok(Verdict::Passed)
}

async fn user_rename(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let bob = t.user("bob").await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    t.join("bob-1", &t.key(bob, KeyOptions::default()).await?.key).await?;
    t.await_reachable("bob-1", "alice-1").await?;
    t.world().headscale(&["users", "rename", "--name", "alice", "--new-name", "alicia"]).await?;
    eventually("bob-1 to see alice's profile renamed", SETTLE, || async {
        let map = t.netmap("bob-1").await.ok()?;
        let profiles = map["UserProfiles"].as_array()?.clone();
        profiles.iter().any(|p| p["LoginName"].as_str().is_some_and(|l| l.starts_with("alicia"))).then_some(())
    })
    .await?;
    ensure!(t.node("alice-1").await?.user.is_some_and(|u| u.name == "alicia"), "the server lists the new name");
    Ok(Verdict::Passed)
}

async fn register_page(t: Tailnet) -> Result<Verdict> {
    t.user("frank").await?;
    t.start("kiosk", None, false).await?;
    let url = eventually("kiosk to get a login URL", SETTLE, || async { t.status("kiosk").await.ok().and_then(|s| s.auth_url) })
        .await?;
    let path = url.split_once("/register/").map(|(_, id)| format!("/register/{id}")).context("a /register/ URL")?;
    let id = path.trim_start_matches("/register/");
    let (status, page) = crate::http::get(t.world().server_addr(), &path).await?;
    ensure!(status == 200, "GET {path} answered {status}");
    ensure!(page.contains(&format!("headscale auth register --auth-id {id}")), "the page does not show the command: {page}");
    let (status, _) = crate::http::get(t.world().server_addr(), "/register/not%20an%20id").await?;
    ensure!(status == 400, "a malformed registration id answered {status}");
    Ok(Verdict::Passed)
}
