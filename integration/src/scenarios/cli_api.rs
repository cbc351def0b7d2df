//! The admin surface: the `headscale` CLI's view of the tailnet, API keys guarding the REST
//! API (and what an unauthenticated caller gets), node deletion through REST, user renames
//! reaching clients, and the page a waiting node's login URL opens.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    vec![
        Scenario::new("CliNodesListMatchesClients", "`nodes list` shows every client with the address, owner and online state the clients have", |t| Box::pin(nodes_list(t))),
        Scenario::new("ApiKeyGuardsRest", "the REST API answers 401 without a key, with a bad one or an expired one, and 200 with a valid one", |t| Box::pin(api_key_guards(t))),
        Scenario::new("ApiDeleteNodeDropsPeer", "a node deleted through REST (DELETE /api/v1/node/ID) disappears from its peers' maps", |t| Box::pin(api_delete_node(t))),
        Scenario::new("UserRenameReachesPeers", "a user renamed by the admin is shown under the new name in its peers' user profiles", |t| Box::pin(user_rename(t)))
            .not_with(NEEDS_MAP),
        Scenario::new("RegisterPageNamesCommand", "a waiting node's login URL opens a page with the `headscale auth register` command for it", |t| Box::pin(register_page(t))),
        Scenario::new("ApiCreatesUserAndKey", "a user and a pre-auth key made through REST register a node that reaches a CLI-made one", |t| Box::pin(api_user_and_key(t))),
        Scenario::new("ApiRenamesExpiresAndTagsNodes", "REST renames a node, sets its tags and expires it, and the server and peers follow", |t| Box::pin(api_node_admin(t)))
            .policy(ADMIN_TAGS),
        Scenario::new("CliNodesListFiltersByUser", "`nodes list -u USER` lists that user's nodes only", |t| Box::pin(nodes_by_user(t))),
        Scenario::new("CliPreAuthKeysListShowsState", "`preauthkeys list` shows which keys are used, reusable, ephemeral, tagged and expired", |t| Box::pin(keys_list(t))),
        Scenario::new("HealthAndVersionServed", "/health says pass and /version names a version, without an API key", |t| Box::pin(health_version(t))),
        Scenario::new("ApiKeyListHidesKeyAndDeleteRevokes", "`apikeys list` shows prefixes, never keys; a deleted key is refused", |t| Box::pin(api_key_list_delete(t))),
        Scenario::new("CliRefusesBadNamesAndTags", "duplicate users, user renames onto another user, node names over 63 characters and malformed or unowned tags are refused", |t| Box::pin(cli_refusals(t)))
            .policy(ADMIN_TAGS),
        Scenario::new("ApiListNodesMatchesCli", "GET /api/v1/node lists the same nodes, addresses and users as `nodes list`", |t| Box::pin(api_list_nodes(t))),
        Scenario::new("ApiWritesRefusedWithoutKey", "REST writes without a valid key (create user, pre-auth key, delete node) are refused and change nothing", |t| Box::pin(api_writes_refused(t))),
        Scenario::new("ApiExpiresPreAuthKey", "a pre-auth key expired through REST registers nothing more", |t| Box::pin(api_expire_key(t))),
        Scenario::new("CliUsersListFilters", "`users list` filters by name and by id", |t| Box::pin(users_list_filters(t))),
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
            ensure!(
                node.ip_addresses.contains(&v6.to_string()),
                "{name} has {v6}, the server lists {:?}",
                node.ip_addresses
            );
        }
    }
    Ok(Verdict::Passed)
}

async fn api_key_guards(t: Tailnet) -> Result<Verdict> {
    t.user("secret-holder").await?;
    let key: String = t.cli_json(&["apikeys", "create"]).await?;
    for (bad, what) in [
        (None, "no key"),
        (Some("invalid"), "a malformed key"),
        (Some("hskey-api-aaaaaaaaaaaa-bbbb"), "an unknown key"),
    ] {
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
    // A one-shot key of its own: a client that starts over with its key cannot come back.
    t.join("doomed", &t.key(user, KeyOptions::default()).await?.key).await?;
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
    let url = eventually("kiosk to get a login URL", SETTLE, || async {
        t.status("kiosk").await.ok().and_then(|s| s.auth_url)
    })
    .await?;
    let path = url.split_once("/register/").map(|(_, id)| format!("/register/{id}")).context("a /register/ URL")?;
    let id = path.trim_start_matches("/register/");
    let (status, page) = crate::http::get(t.world().server_addr(), &path).await?;
    ensure!(status == 200, "GET {path} answered {status}");
    ensure!(
        page.contains(&format!("headscale auth register --auth-id {id}")),
        "the page does not show the command: {page}"
    );
    let (status, _) = crate::http::get(t.world().server_addr(), "/register/not%20an%20id").await?;
    ensure!(status == 400, "a malformed registration id answered {status}");
    Ok(Verdict::Passed)
}

async fn api_user_and_key(t: Tailnet) -> Result<Verdict> {
    let admin: String = t.cli_json(&["apikeys", "create"]).await?;
    let a = t.api("POST", "/api/v1/user", Some(&admin), r#"{"name":"restful"}"#).await?;
    ensure!(a.status == 200, "POST /api/v1/user answered {}: {}", a.status, a.body);
    let user: serde_json::Value = serde_json::from_str(&a.body)?;
    let id = user["user"]["id"].as_str().context("the new user's id")?;
    let body = format!(r#"{{"user":"{id}","reusable":false,"ephemeral":false}}"#);
    let k = t.api("POST", "/api/v1/preauthkey", Some(&admin), &body).await?;
    ensure!(k.status == 200, "POST /api/v1/preauthkey answered {}: {}", k.status, k.body);
    let key: serde_json::Value = serde_json::from_str(&k.body)?;
    let key = key["preAuthKey"]["key"].as_str().context("the key in the answer")?.to_string();
    t.join("rest-1", &key).await?;
    let cli_user = t.user("cli").await?;
    t.join("cli-1", &t.key(cli_user, KeyOptions::default()).await?.key).await?;
    ensure!(t.node("rest-1").await?.user.is_some_and(|u| u.name == "restful"), "rest-1 belongs to the REST-made user");
    t.await_reachable("cli-1", "rest-1").await?;
    t.tcp("cli-1", "rest-1").await?;
    Ok(Verdict::Passed)
}

const ADMIN_TAGS: &str = r#"{
  "tagOwners": { "tag:ops": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
}"#;

async fn api_node_admin(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let key = t.key(alice, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("target", &key.key).await?;
    t.join("observer", &key.key).await?;
    t.await_reachable("observer", "target").await?;
    let admin: String = t.cli_json(&["apikeys", "create"]).await?;
    let id = t.node("target").await?.id;
    let r = t.api("POST", &format!("/api/v1/node/{id}/rename/renamed"), Some(&admin), "").await?;
    ensure!(r.status == 200, "rename answered {}: {}", r.status, r.body);
    ensure!(t.node("renamed").await?.id == id, "the server lists the node under its new name");
    let r = t.api("POST", &format!("/api/v1/node/{id}/tags"), Some(&admin), r#"{"tags":["tag:ops"]}"#).await?;
    ensure!(r.status == 200, "setting tags answered {}: {}", r.status, r.body);
    ensure!(t.node("renamed").await?.tags == ["tag:ops"], "the server lists the node's tags");
    let r = t.api("POST", &format!("/api/v1/node/{id}/tags"), Some(&admin), r#"{"tags":["ops"]}"#).await?;
    ensure!(r.status >= 400, "a tag without the tag: prefix was accepted: {}", r.body);
    let r = t.api("POST", &format!("/api/v1/node/{id}/expire"), Some(&admin), "").await?;
    ensure!(r.status == 200, "expire answered {}: {}", r.status, r.body);
    t.await_peer("observer", "renamed", "expired", |p| p.expired()).await?;
    Ok(Verdict::Passed)
}

async fn nodes_by_user(t: Tailnet) -> Result<Verdict> {
    for user in ["alice", "bob"] {
        let id = t.user(user).await?;
        let key = t.key(id, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
        for i in 1..=2 {
            t.join(&format!("{user}-{i}"), &key.key).await?;
        }
    }
    let alices: Vec<crate::scenario::ServerNode> = t.cli_list(&["nodes", "list", "-u", "alice"]).await?;
    let names: Vec<&str> = alices.iter().map(|n| n.given_name.as_str()).collect();
    ensure!(names == ["alice-1", "alice-2"], "`nodes list -u alice` listed {names:?}");
    Ok(Verdict::Passed)
}

async fn keys_list(t: Tailnet) -> Result<Verdict> {
    t.world().headscale(&["users", "create", "keeper"]).await?;
    let user = t.cli_list::<serde_json::Value>(&["users", "list"]).await?[0]["id"].as_u64().context("the user's id")?;
    let used = t.key(user, KeyOptions::default()).await?;
    let reusable = t.key(user, KeyOptions { reusable: true, ephemeral: true, ..KeyOptions::default() }).await?;
    let expired = t.key(user, KeyOptions::default()).await?;
    t.world().headscale(&["preauthkeys", "expire", "-i", &expired.id.to_string()]).await?;
    t.join("keyed", &used.key).await?;
    let keys: Vec<serde_json::Value> = t.cli_list(&["preauthkeys", "list"]).await?;
    let find = |id: u64| keys.iter().find(|k| k["id"] == id).cloned();
    let u = find(used.id).context("the used key is listed")?;
    ensure!(u["used"] == true && u["reusable"] != true, "the used one-shot key: {u}");
    let r = find(reusable.id).context("the reusable key is listed")?;
    ensure!(r["reusable"] == true && r["ephemeral"] == true && r["used"] != true, "the reusable ephemeral key: {r}");
    let e = find(expired.id).context("the expired key is listed")?;
    let seconds = e["expiration"]["seconds"].as_i64().context("an expiration")?;
    let when = chrono::DateTime::from_timestamp(seconds, 0).context("an expiration in range")?;
    ensure!(when <= chrono::Utc::now(), "the expired key expires at {when}");
    for k in &keys {
        ensure!(!k.to_string().contains(&used.key), "`preauthkeys list` shows a whole key: {k}");
    }
    Ok(Verdict::Passed)
}

async fn health_version(t: Tailnet) -> Result<Verdict> {
    let (status, body) = crate::http::get(t.world().server_addr(), "/health").await?;
    ensure!(status == 200 && body.contains("pass"), "/health answered {status}: {body}");
    let (status, body) = crate::http::get(t.world().server_addr(), "/version").await?;
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("/version answered {status}: {body}"))?;
    ensure!(
        status == 200
            && v["version"].as_str().is_some_and(|v| !v.is_empty())
            && ["commit", "buildTime"].iter().all(|f| v[f].is_string())
            && ["version", "os", "arch"].iter().all(|f| v["go"][f].is_string())
            && v["dirty"].is_boolean(),
        "/version answered {status}, not in Headscale's shape: {body}"
    );
    let cli: serde_json::Value = t.cli_json(&["version"]).await?;
    ensure!(cli == v, "`headscale version -o json` printed {cli}, /version {v}");
    Ok(Verdict::Passed)
}

async fn api_key_list_delete(t: Tailnet) -> Result<Verdict> {
    let key: String = t.cli_json(&["apikeys", "create"]).await?;
    let prefix =
        key.strip_prefix("hskey-api-").and_then(|k| k.split('-').next()).context("the key's prefix")?.to_string();
    let listed = t.world().headscale(&["apikeys", "list", "-o", "json"]).await?;
    ensure!(listed.contains(&prefix), "`apikeys list` does not show the prefix {prefix}: {listed}");
    ensure!(!listed.contains(&key), "`apikeys list` shows a whole key");
    ensure!(t.api("GET", "/api/v1/user", Some(&key), "").await?.status == 200, "the new key is refused");
    t.world().headscale(&["apikeys", "delete", "--prefix", &prefix, "--force"]).await?;
    let a = t.api("GET", "/api/v1/user", Some(&key), "").await?;
    ensure!(a.status == 401, "a deleted key answered {}: {}", a.status, a.body);
    Ok(Verdict::Passed)
}

async fn cli_refusals(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    t.user("bob").await?;
    let refused = |what: &'static str, r: Result<String>| match r {
        Ok(out) => Err(anyhow::anyhow!("{what} was accepted: {out}")),
        Err(_) => Ok(()),
    };
    refused("a second user named alice", t.world().headscale(&["users", "create", "alice"]).await)?;
    refused(
        "renaming bob to alice",
        t.world().headscale(&["users", "rename", "--name", "bob", "--new-name", "alice"]).await,
    )?;
    t.join("plain", &t.key(alice, KeyOptions::default()).await?.key).await?;
    let id = t.node("plain").await?.id.to_string();
    let long = "n".repeat(64);
    refused("a 64-character node name", t.world().headscale(&["nodes", "rename", "-i", &id, &long]).await)?;
    refused("a tag without tag:", t.world().headscale(&["nodes", "tag", "-i", &id, "-t", "ops"]).await)?;
    refused("a tag outside tagOwners", t.world().headscale(&["nodes", "tag", "-i", &id, "-t", "tag:nobody"]).await)?;
    let node = t.node("plain").await?;
    ensure!(node.tags.is_empty() && node.given_name == "plain", "a refused change changed the node: {node:?}");
    let users: Vec<serde_json::Value> = t.cli_list(&["users", "list"]).await?;
    ensure!(users.len() == 2, "the refusals changed the users: {users:?}");
    Ok(Verdict::Passed)
}

async fn api_list_nodes(t: Tailnet) -> Result<Verdict> {
    for user in ["alice", "bob"] {
        let id = t.user(user).await?;
        t.join(&format!("{user}-1"), &t.key(id, KeyOptions::default()).await?.key).await?;
    }
    let admin: String = t.cli_json(&["apikeys", "create"]).await?;
    let a = t.api("GET", "/api/v1/node", Some(&admin), "").await?;
    ensure!(a.status == 200, "GET /api/v1/node answered {}: {}", a.status, a.body);
    let rest: serde_json::Value = serde_json::from_str(&a.body)?;
    let rest_nodes = rest["nodes"].as_array().context("a nodes list")?;
    let cli = t.nodes().await?;
    ensure!(rest_nodes.len() == cli.len(), "REST lists {} nodes, the CLI {}", rest_nodes.len(), cli.len());
    for n in &cli {
        let r = rest_nodes
            .iter()
            .find(|r| r["id"] == n.id.to_string().as_str())
            .with_context(|| format!("REST lists {}", n.given_name))?;
        ensure!(r["givenName"] == n.given_name.as_str(), "names differ: {r}");
        ensure!(r["user"]["name"] == n.user.as_ref().map(|u| u.name.as_str()).unwrap_or_default(), "users differ: {r}");
        let ips: Vec<&str> = r["ipAddresses"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        ensure!(ips == n.ip_addresses, "addresses differ: {ips:?} and {:?}", n.ip_addresses);
    }
    Ok(Verdict::Passed)
}

async fn api_writes_refused(t: Tailnet) -> Result<Verdict> {
    let user = t.user("target").await?;
    t.join("kept", &t.key(user, KeyOptions::default()).await?.key).await?;
    let id = t.node("kept").await?.id;
    let attempts = [
        ("POST", "/api/v1/user".to_string(), r#"{"name":"intruder"}"#.to_string()),
        ("POST", "/api/v1/preauthkey".to_string(), format!(r#"{{"user":"{user}","reusable":true}}"#)),
        ("DELETE", format!("/api/v1/node/{id}"), String::new()),
        ("POST", format!("/api/v1/node/{id}/rename/owned"), String::new()),
    ];
    for key in [None, Some("Bearer"), Some("hskey-api-xxxxxxxxxxxx-yyyyyyyyyyyy")] {
        for (method, path, body) in &attempts {
            let a = t.api(method, path, key, body).await?;
            ensure!(a.status == 401, "{method} {path} with key {key:?} answered {}: {}", a.status, a.body);
        }
    }
    let users: Vec<serde_json::Value> = t.cli_list(&["users", "list"]).await?;
    ensure!(users.len() == 1, "a refused write created a user: {users:?}");
    let keys: Vec<serde_json::Value> = t.cli_list(&["preauthkeys", "list"]).await?;
    ensure!(keys.len() == 1, "a refused write created a key: {keys:?}");
    let node = t.node("kept").await?;
    ensure!(node.id == id && node.given_name == "kept", "a refused write changed the node: {node:?}");
    Ok(Verdict::Passed)
}

async fn api_expire_key(t: Tailnet) -> Result<Verdict> {
    let user = t.user("revoked").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("before", &key.key).await?;
    let admin: String = t.cli_json(&["apikeys", "create"]).await?;
    let a = t.api("POST", "/api/v1/preauthkey/expire", Some(&admin), &format!(r#"{{"id":"{}"}}"#, key.id)).await?;
    ensure!(a.status == 200, "expiring through REST answered {}: {}", a.status, a.body);
    t.start("after", Some(&key.key), false).await?;
    stays_refused(&t, "after", &["before"]).await?;
    Ok(Verdict::Passed)
}

async fn users_list_filters(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    t.user("bob").await?;
    let by_name: Vec<serde_json::Value> = t.cli_list(&["users", "list", "--name", "bob"]).await?;
    ensure!(by_name.len() == 1 && by_name[0]["name"] == "bob", "`users list --name bob` gave {by_name:?}");
    let by_id: Vec<serde_json::Value> = t.cli_list(&["users", "list", "-i", &alice.to_string()]).await?;
    ensure!(by_id.len() == 1 && by_id[0]["name"] == "alice", "`users list -i {alice}` gave {by_id:?}");
    let all: Vec<serde_json::Value> = t.cli_list(&["users", "list"]).await?;
    ensure!(all.len() == 2, "`users list` gave {all:?}");
    Ok(Verdict::Passed)
}
