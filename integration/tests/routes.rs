//! Subnet routes and exit nodes end to end with tailscale-rs's control client (`ts_control`):
//! two routers announce the same prefix, the administrator approves it on both with the CLI,
//! a third node's map routes the prefix through exactly one of them, and when that router goes
//! offline the map moves the prefix to the other; an approved exit node offers the internet.

use anyhow::{ensure, Result};
use integration::control_client::ControlClient;
use integration::{init, Options, TestServer};
use ipnet::IpNet;

/// The node id of the node named `hostname`, from `nodes list`.
async fn node_id(server: &TestServer, hostname: &str) -> Result<String> {
    let listed: serde_json::Value = serde_json::from_str(&server.cli(&["nodes", "list", "-o", "json"]).await?)?;
    let node = listed.as_array().into_iter().flatten().find(|n| n["name"] == hostname);
    Ok(node.map(|n| n["id"].to_string().trim_matches('"').to_string()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_route_fails_over_to_the_other_router() -> Result<()> {
    init();
    let server = TestServer::start(Options::default()).await?;
    let user = server.create_user("ops").await?;
    let key = server.auth_key(user, true, false).await?;
    let url = server.url();
    let subnet: IpNet = "10.33.0.0/24".parse()?;
    let exit: Vec<IpNet> = vec!["0.0.0.0/0".parse()?, "::/0".parse()?];

    let mut first = ControlClient::join(&url, "router-1", &key).await?;
    let mut second = ControlClient::join(&url, "router-2", &key).await?;
    let mut viewer = ControlClient::join(&url, "viewer", &key).await?;
    first.go_online(&[subnet]).await?;
    second.go_online(&[subnet]).await?;
    viewer.go_online(&[]).await?;
    viewer.await_routes("router-1", "without routes before approval", |r| r.is_empty()).await?;

    for router in ["router-1", "router-2"] {
        let id = node_id(&server, router).await?;
        server.cli(&["nodes", "approve-routes", "-i", &id, "-r", &subnet.to_string()]).await?;
    }
    viewer.await_routes("router-1", "routing the subnet", |r| r == [subnet]).await?;
    ensure!(viewer.routes_via("router-2") == Some(vec![]), "exactly one router is primary");
    let listed = server.cli(&["nodes", "list-routes", "-o", "json"]).await?;
    ensure!(listed.contains("10.33.0.0/24"), "list-routes shows the route: {listed}");

    first.go_offline();
    viewer.await_routes("router-2", "taking the subnet over", |r| r == [subnet]).await?;
    viewer.await_routes("router-1", "no longer routing it", |r| r.is_empty()).await?;

    // Back online, the first router does not take the route back.
    first.go_online(&[subnet]).await?;
    viewer.await_routes("router-1", "online again", |r| r.is_empty()).await?;
    ensure!(viewer.routes_via("router-2") == Some(vec![subnet]), "the route stays with router-2");

    // An exit node: advertised and approved, it offers both default routes.
    second.go_online(&[subnet, exit[0], exit[1]]).await?;
    let id = node_id(&server, "router-2").await?;
    server.cli(&["nodes", "approve-routes", "-i", &id, "-r", "10.33.0.0/24,0.0.0.0/0"]).await?;
    // (Its new session briefly took it offline, so router-1 routes the subnet again.)
    viewer.await_routes("router-2", "as an exit node", |r| exit.iter().all(|e| r.contains(e))).await?;
    Ok(())
}
