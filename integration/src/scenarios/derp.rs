//! DERP: the embedded relay admits only registered node keys, answers external relays'
//! `/verify` admission checks, and is in every client's DERP map as its home region.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    vec![
        Scenario::new("DerpAdmission", "the embedded DERP refuses unknown node keys and drops deleted ones", |t| {
            Box::pin(derp_admission(t))
        }),
        Scenario::new(
            "DerpVerifyEndpoint",
            "POST /verify (an external DERP's admission check) allows registered node keys and refuses others",
            |t| Box::pin(derp_verify(t)),
        ),
        Scenario::new(
            "DerpMapEmbeddedRegionIsHome",
            "clients get the embedded DERP region in their map and make it their home",
            |t| Box::pin(derp_home(t)),
        ),
    ]
}

async fn derp_admission(t: Tailnet) -> Result<Verdict> {
    let addr = t.world().server_addr();
    let stranger = PrivateKey::generate();
    ensure!(crate::derp_client::connect(addr, stranger.0).await.is_err(), "the DERP admitted an unknown node key");
    // Register a node whose key this process holds, over a real Noise channel.
    let user = t.user("relay").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    let node = PrivateKey::generate();
    let mut channel = NoiseClient::connect(addr, &PrivateKey::generate()).await?;
    let request =
        format!(r#"{{"Version":130,"NodeKey":"{}","Auth":{{"AuthKey":"{}"}}}}"#, NodeKey(node.public()), key.key);
    let answer = channel.post("/machine/register", request).await?;
    ensure!(answer.status().is_success(), "registration answered {}", answer.status());
    let mut conn = crate::derp_client::connect(addr, node.0).await.context("the DERP refused a registered node key")?;
    // Deleting the node closes its open connection and refuses the key from then on.
    let listed = t.nodes().await?;
    let id = listed.first().context("the registered node")?.id;
    t.world().headscale(&["nodes", "delete", "-i", &id.to_string(), "--force"]).await?;
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut sink)).await;
    ensure!(closed.is_ok(), "the deleted node's DERP connection stayed open");
    ensure!(crate::derp_client::connect(addr, node.0).await.is_err(), "the DERP admitted a deleted node key");
    Ok(Verdict::Passed)
}

async fn derp_verify(t: Tailnet) -> Result<Verdict> {
    let user = t.user("verify").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    let node = PrivateKey::generate();
    let mut channel = NoiseClient::connect(t.world().server_addr(), &PrivateKey::generate()).await?;
    let request =
        format!(r#"{{"Version":130,"NodeKey":"{}","Auth":{{"AuthKey":"{}"}}}}"#, NodeKey(node.public()), key.key);
    ensure!(channel.post("/machine/register", request).await?.status().is_success(), "registration failed");
    for (k, allow) in [(NodeKey(node.public()), true), (NodeKey(PrivateKey::generate().public()), false)] {
        let body = format!(r#"{{"NodePublic":"{k}","Source":"192.0.2.1"}}"#);
        let a = crate::http::request(
            t.world().server_addr(),
            "POST",
            "/verify",
            &[("Content-Type", "application/json")],
            &body,
        )
        .await?;
        ensure!(a.status == 200, "POST /verify answered {}: {}", a.status, a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).with_context(|| format!("the answer {}", a.body))?;
        ensure!(v["Allow"] == allow, "/verify for {k} answered {v}, expected Allow {allow}");
    }
    Ok(Verdict::Passed)
}

async fn derp_home(t: Tailnet) -> Result<Verdict> {
    let user = t.user("relay").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("a", &key.key).await?;
    t.join("b", &key.key).await?;
    let seen = t.await_reachable("a", "b").await?;
    if t.client() == ClientKind::Go {
        let map = t.netmap("a").await?;
        let regions = map["DERPMap"]["Regions"].as_object().context("the map has DERP regions")?;
        ensure!(regions.len() == 1, "the map has regions {:?}, expected only the embedded one", regions.keys());
        let (id, region) = regions.iter().next().expect("one region");
        ensure!(
            seen.derp_region.map(|r| r.to_string()).as_deref() == Some(id.as_str()),
            "b's home {:?} is not region {id}",
            seen.derp_region
        );
        let node = &region["Nodes"][0];
        ensure!(
            node["InsecureForTests"] == true,
            "the embedded DERP's self-signed certificate is not marked for tests: {node}"
        );
    } else {
        ensure!(seen.derp_region.is_some(), "b has no home DERP region");
        t.note("DERP map not read: tailscale-rs shows no raw map");
    }
    Ok(Verdict::Passed)
}
