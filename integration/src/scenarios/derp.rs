//! DERP: the embedded relay admits only registered node keys, answers external relays'
//! `/verify` admission checks, and is in every client's DERP map as its home region; a DERP
//! map file (`derp.paths`) that changes reaches connected clients, and a broken one is ignored.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    vec![
        Scenario::new("DerpAdmission", "the embedded DERP refuses unknown and expired node keys and drops deleted ones", |t| {
            Box::pin(derp_admission(t))
        }),
        Scenario::new(
            "DerpVerifyEndpoint",
            "POST /verify (an external DERP's admission check) allows registered node keys and refuses unknown and expired ones",
            |t| Box::pin(derp_verify(t)),
        ),
        Scenario::new(
            "DerpMapEmbeddedRegionIsHome",
            "clients get the embedded DERP region in their map and make it their home",
            |t| Box::pin(derp_home(t)),
        ),
        Scenario::new(
            "DerpMapFileChangeReachesClients",
            "a region added to the derp.paths file reaches connected clients, a broken file keeps the last good map, and a removed region goes",
            |t| Box::pin(derp_map_file_change(t)),
        )
        .setup(ServerSetup { derp_map: Some(NO_REGIONS), ..ServerSetup::default() })
        .not_with(NEEDS_MAP),
    ]
}

/// A DERP map file with no region of its own: clients get the embedded region only.
const NO_REGIONS: &str = "regions: {}\n";
/// The id of the region the scenario adds.
const ADDED_REGION: &str = "950";

/// Registers a node whose key this process holds, over a real Noise channel; returns its key.
async fn registered_node(t: &Tailnet, authkey: &str) -> Result<PrivateKey> {
    let node = PrivateKey::generate();
    let mut channel = NoiseClient::connect(t.world().server_addr(), &PrivateKey::generate()).await?;
    let request =
        format!(r#"{{"Version":130,"NodeKey":"{}","Auth":{{"AuthKey":"{}"}}}}"#, NodeKey(node.public()), authkey);
    let answer = channel.post("/machine/register", request).await?;
    ensure!(answer.status().is_success(), "registration answered {}", answer.status());
    Ok(node)
}

/// Waits until the server closes a DERP connection.
async fn closed(conn: &mut crate::derp_client::DerpConn, why: &str) -> Result<()> {
    let mut sink = Vec::new();
    let ended =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(conn, &mut sink)).await;
    ensure!(ended.is_ok(), "the DERP connection of {why} stayed open");
    Ok(())
}

async fn derp_admission(t: Tailnet) -> Result<Verdict> {
    let addr = t.world().server_addr();
    let stranger = PrivateKey::generate();
    ensure!(crate::derp_client::connect(addr, stranger.0).await.is_err(), "the DERP admitted an unknown node key");
    let user = t.user("relay").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    let node = registered_node(&t, &key.key).await?;
    let mut conn = crate::derp_client::connect(addr, node.0).await.context("the DERP refused a registered node key")?;
    // An expired node (as a logged-out one) may not open a connection.
    let lapsing = registered_node(&t, &key.key).await?;
    let listed = t.nodes().await?;
    let id_of = |k: &PrivateKey| {
        let text = NodeKey(k.public()).to_string();
        listed.iter().find(|n| n.node_key == text).map(|n| n.id.to_string()).context("the registered node")
    };
    t.world().headscale(&["nodes", "expire", "-i", &id_of(&lapsing)?]).await?;
    ensure!(crate::derp_client::connect(addr, lapsing.0).await.is_err(), "the DERP admitted an expired node key");
    // Deleting the node closes its open connection and refuses the key from then on.
    t.world().headscale(&["nodes", "delete", "-i", &id_of(&node)?, "--force"]).await?;
    closed(&mut conn, "a deleted node").await?;
    ensure!(crate::derp_client::connect(addr, node.0).await.is_err(), "the DERP admitted a deleted node key");
    Ok(Verdict::Passed)
}

/// What `POST /verify` answers for `key`.
async fn verify(t: &Tailnet, key: NodeKey) -> Result<bool> {
    let body = format!(r#"{{"NodePublic":"{key}","Source":"192.0.2.1"}}"#);
    let headers = [("Content-Type", "application/json")];
    let a = crate::http::request(t.world().server_addr(), "POST", "/verify", &headers, &body).await?;
    ensure!(a.status == 200, "POST /verify answered {}: {}", a.status, a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).with_context(|| format!("the answer {}", a.body))?;
    v["Allow"].as_bool().with_context(|| format!("/verify answered {v}"))
}

async fn derp_verify(t: Tailnet) -> Result<Verdict> {
    let user = t.user("verify").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    let node = NodeKey(registered_node(&t, &key.key).await?.public());
    ensure!(verify(&t, node).await?, "/verify refused a registered node key");
    ensure!(!verify(&t, NodeKey(PrivateKey::generate().public())).await?, "/verify allowed an unknown node key");
    let id = t.nodes().await?.first().context("the registered node")?.id;
    t.world().headscale(&["nodes", "expire", "-i", &id.to_string()]).await?;
    ensure!(!verify(&t, node).await?, "/verify allowed an expired node key");
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

/// The region ids in `client`'s DERP map (the official client's own map).
async fn regions(t: &Tailnet, client: &str) -> Result<Vec<String>> {
    let map = t.netmap(client).await?;
    Ok(map["DERPMap"]["Regions"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default())
}

/// Waits until both clients' DERP maps hold exactly `want` (sorted ids).
async fn both_see(t: &Tailnet, want: &[String], what: &str) -> Result<()> {
    for client in ["a", "b"] {
        crate::eventually(&format!("{client} {what}"), Duration::from_secs(30), || async {
            (regions(t, client).await.ok()? == want).then_some(())
        })
        .await?;
    }
    Ok(())
}

async fn derp_map_file_change(t: Tailnet) -> Result<Verdict> {
    let user = t.user("relay").await?;
    let key = t.key(user, KeyOptions { reusable: true, ..KeyOptions::default() }).await?;
    t.join("a", &key.key).await?;
    t.join("b", &key.key).await?;
    t.await_reachable("a", "b").await?;
    let map = t.netmap("a").await?;
    let regions_now = map["DERPMap"]["Regions"].as_object().context("the map has DERP regions")?;
    ensure!(regions_now.len() == 1, "with an empty file the map has regions {:?}", regions_now.keys());
    let (embedded_id, embedded) = regions_now.iter().next().expect("one region");
    // A second region served by the same relay, so that clients that try it reach it.
    let mut added = embedded.clone();
    added["RegionID"] = serde_json::json!(950);
    added["RegionCode"] = serde_json::json!("mirror");
    added["RegionName"] = serde_json::json!("Mirror");
    for node in added["Nodes"].as_array_mut().context("the region has nodes")? {
        node["RegionID"] = serde_json::json!(950);
        node["Name"] = serde_json::json!("950a");
    }
    let file = serde_json::json!({ "Regions": { ADDED_REGION: added } }).to_string();
    t.world().server_file(crate::DERP_MAP_FILE, &file).await?;
    let mut both = vec![embedded_id.clone(), ADDED_REGION.to_string()];
    both.sort();
    both_see(&t, &both, "gets the added region").await?;

    t.world().server_file(crate::DERP_MAP_FILE, "regions: [this is not a DERP map\n").await?;
    // The file is read every second: three reads later the map is unchanged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(regions(&t, "a").await? == both, "a broken file changed the map");
    t.tcp("a", "b").await?;

    t.world().server_file(crate::DERP_MAP_FILE, NO_REGIONS).await?;
    both_see(&t, std::slice::from_ref(embedded_id), "loses the removed region").await?;
    t.tcp("b", "a").await?;
    Ok(Verdict::Passed)
}
