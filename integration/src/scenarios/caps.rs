//! Capabilities as the official client decodes them: the baseline every node gets on itself
//! and on its peers, following `taildrop.enabled`, `randomize_client_port` and
//! `auto_update.enabled`, and what a
//! policy's `nodeAttrs` add. These read the client's map, which only the official client shows.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "CapsBaselineOnSelfAndPeers",
            "every node has is-admin, ssh, file-sharing, the Taildrive attributes and default-auto-update \
             (off), and its peers show them too",
            |t| Box::pin(baseline(t)),
        )
        .not_with(NEEDS_MAP),
        Scenario::new(
            "CapsFollowConfiguration",
            "with Taildrop off there is no file-sharing capability; randomize_client_port adds its attribute; \
             auto_update.enabled turns default-auto-update on",
            |t| Box::pin(configured(t)),
        )
        .setup(ServerSetup {
            config: &[
                ("HEADSCALE_TAILDROP_ENABLED", "false"),
                ("HEADSCALE_RANDOMIZE_CLIENT_PORT", "true"),
                ("HEADSCALE_AUTO_UPDATE_ENABLED", "true"),
            ],
            ..ServerSetup::default()
        })
        .not_with(NEEDS_MAP),
        Scenario::new(
            "CapsFromNodeAttrs",
            "a policy's nodeAttrs give the targeted nodes their attributes, on top of the baseline",
            |t| Box::pin(node_attrs(t)),
        )
        .policy(NODE_ATTRS)
        .not_with(NEEDS_MAP),
    ]
}

const BASELINE: [&str; 6] = [
    "default-auto-update",
    "https://tailscale.com/cap/is-admin",
    "https://tailscale.com/cap/ssh",
    "https://tailscale.com/cap/file-sharing",
    "drive:share",
    "drive:access",
];

/// Two nodes of one user; returns the first's own capability map and the second as it sees it.
async fn two_nodes(t: &Tailnet) -> Result<(serde_json::Value, serde_json::Value)> {
    let user = t.user("caps").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("one", &key.key).await?;
    t.join("two", &key.key).await?;
    t.await_reachable("one", "two").await?;
    let own = t.netmap("one").await?["Node"]["CapMap"].clone();
    let peer = t.peer_entry("one", "two").await?.context("one has two in its map")?["CapMap"].clone();
    Ok((own, peer))
}

async fn baseline(t: Tailnet) -> Result<Verdict> {
    let (own, peer) = two_nodes(&t).await?;
    for cap in BASELINE {
        ensure!(own.get(cap).is_some(), "the node's own CapMap lacks {cap}: {own}");
        ensure!(peer.get(cap).is_some(), "the peer's CapMap lacks {cap}: {peer}");
    }
    ensure!(own.get("randomize-client-port").is_none(), "randomize-client-port without the setting: {own}");
    ensure!(own["default-auto-update"] == serde_json::json!([false]), "auto-update is off by default: {own}");
    Ok(Verdict::Passed)
}

async fn configured(t: Tailnet) -> Result<Verdict> {
    let (own, _) = two_nodes(&t).await?;
    ensure!(own.get("https://tailscale.com/cap/file-sharing").is_none(), "file-sharing with Taildrop off: {own}");
    ensure!(own.get("randomize-client-port").is_some(), "no randomize-client-port with the setting on: {own}");
    ensure!(own.get("https://tailscale.com/cap/ssh").is_some(), "the baseline lost cap/ssh: {own}");
    ensure!(own["default-auto-update"] == serde_json::json!([true]), "auto_update.enabled is not sent: {own}");
    Ok(Verdict::Passed)
}

const NODE_ATTRS: &str = r#"{
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
  "nodeAttrs": [ { "target": ["alice@"], "attr": ["funnel", "disable-captive-portal-detection"] } ],
}"#;

async fn node_attrs(t: Tailnet) -> Result<Verdict> {
    let alice = t.user("alice").await?;
    let bob = t.user("bob").await?;
    t.join("alice-1", &t.key(alice, KeyOptions::default()).await?.key).await?;
    t.join("bob-1", &t.key(bob, KeyOptions::default()).await?.key).await?;
    let own = t.netmap("alice-1").await?["Node"]["CapMap"].clone();
    ensure!(
        own.get("funnel").is_some() && own.get("disable-captive-portal-detection").is_some(),
        "alice lacks her attributes: {own}"
    );
    ensure!(own.get("https://tailscale.com/cap/ssh").is_some(), "the baseline is kept under nodeAttrs: {own}");
    let bobs = t.netmap("bob-1").await?["Node"]["CapMap"].clone();
    ensure!(bobs.get("funnel").is_none(), "bob got alice's attribute: {bobs}");
    Ok(Verdict::Passed)
}
