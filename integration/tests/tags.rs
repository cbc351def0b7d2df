//! Tags a client asks for as it registers (`tailscale up --advertise-tags`), end to end over
//! tailscale-rs's control client (`ts_control`: Noise, HTTP/2): a pre-auth key registers a
//! tagged node only if its user owns the tags in `tagOwners`; a tagged key permits its own
//! tags; an interactive registration is refused, and the client told why, when the approving
//! user does not own them.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration::control_client::ControlClient;
use integration::{init, Options, TestServer};

const POLICY: &str = r#"{
    "tagOwners": {"tag:web": ["gina@"], "tag:db": ["gina@"]},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}"#;
const REFUSED: &str = "requested tags [tag:web] are invalid or not permitted";

/// The listed node named `name`, from `nodes list -o json`.
async fn listed(server: &TestServer, name: &str) -> Result<Option<serde_json::Value>> {
    let all: serde_json::Value = serde_json::from_str(&server.cli(&["nodes", "list", "-o", "json"]).await?)?;
    Ok(all.as_array().into_iter().flatten().find(|n| n["name"] == name).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advertised_tags_need_an_owner_or_a_tagged_key() -> Result<()> {
    init();
    let server = TestServer::start_with_policy(Options::default(), Some(POLICY)).await?;
    let url = server.url();
    let gina = server.create_user("gina").await?;
    let hank = server.create_user("hank").await?;

    // gina owns tag:web: her key registers a node tagged with it, owned by no user.
    let web = ControlClient::new(&url, "web");
    let answer = web.register_requesting(Some(&server.auth_key(gina, false, false).await?), None, &["tag:web"]).await?;
    ensure!(answer.authorized && answer.error.is_empty(), "{answer:?}");
    let node = listed(&server, "web").await?.context("web is listed")?;
    ensure!(node["tags"] == serde_json::json!(["tag:web"]), "nodes list shows the tag: {node}");
    ensure!(node["user"].is_null() || node["user"]["name"] == "tagged-devices", "no owning user: {node}");

    // hank does not: the client is told why, and nothing is stored.
    let refused = ControlClient::new(&url, "refused");
    let answer =
        refused.register_requesting(Some(&server.auth_key(hank, false, false).await?), None, &["tag:web"]).await?;
    ensure!(!answer.authorized && answer.error == REFUSED, "{answer:?}");
    ensure!(listed(&server, "refused").await?.is_none(), "the refused node is not stored");

    // A tagged key permits its own tags and no others.
    let created = server.cli(&["preauthkeys", "create", "--reusable", "--tags", "tag:db", "-o", "json"]).await?;
    let tagged_key = serde_json::from_str::<serde_json::Value>(&created)?["key"].as_str().context("key")?.to_string();
    let db = ControlClient::new(&url, "db");
    ensure!(db.register_requesting(Some(&tagged_key), None, &["tag:db"]).await?.authorized);
    let other = ControlClient::new(&url, "other");
    let answer = other.register_requesting(Some(&tagged_key), None, &["tag:db", "tag:web"]).await?;
    ensure!(!answer.authorized && answer.error == REFUSED, "{answer:?}");

    // Interactive: approving as hank fails on the CLI and reaches the waiting client.
    let laptop = ControlClient::new(&url, "laptop");
    let started = laptop.register_requesting(None, None, &["tag:web"]).await?;
    let auth_id = started.auth_url.rsplit('/').next().context("auth id")?.to_string();
    let followup = started.auth_url.clone();
    let waiting = tokio::spawn(async move { laptop.register_requesting(None, Some(&followup), &["tag:web"]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cli = server.auth_register(&auth_id, "hank").await;
    ensure!(cli.as_ref().is_err_and(|e| format!("{e:#}").contains(REFUSED)), "the CLI reports the refusal: {cli:?}");
    let answer = waiting.await??;
    ensure!(!answer.authorized && answer.error.contains(REFUSED), "the client hears it: {answer:?}");
    ensure!(listed(&server, "laptop").await?.is_none(), "the refused laptop is not stored");
    Ok(())
}
