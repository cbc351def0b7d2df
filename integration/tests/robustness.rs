//! Bad input and the security boundary: garbage and truncated handshakes, oversized records,
//! bad JSON and unknown node keys each get a clear error or a closed connection while a real
//! client keeps working; `/machine/*` exists only inside Noise and only for the machine's
//! own nodes.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use headscale::tailcfg::{NodeKey, PrivateKey};
use http::StatusCode;
use http_body_util::BodyExt;
use integration::noise_client::{initiation, raw_exchange, server_key, upgrade_request, NoiseClient};
use integration::{await_peer, init, Options, TestServer};
use tokio::io::AsyncWriteExt;

async fn body_text(resp: http::Response<hyper::body::Incoming>) -> Result<String> {
    Ok(String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes()).into_owned())
}

/// The real client still reaches its peer: the server kept serving.
async fn still_connected(a: &tailscale::Device, peer: &str) -> Result<()> {
    let p = await_peer(a, peer).await?;
    ensure!(p.derp_region.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_while_a_real_client_keeps_working() -> Result<()> {
    init();
    let srv = TestServer::start(Options::default()).await?;
    let user = srv.create_user("ops").await?;
    let key = srv.auth_key(user, true, false).await?;
    let a = srv.join("steady-a", &key).await?;
    let b = srv.join("steady-b", &key).await?;
    still_connected(&a, "steady-b").await?;
    let addr = srv.running.listen_addr;

    // Garbage instead of HTTP: the connection is answered 400 or closed.
    let out = raw_exchange(addr, b"\x16\x03\x01garbage-not-http\r\n\r\n").await?;
    ensure!(out.is_empty() || out.starts_with(b"HTTP/1.1 400"), "garbage got {:?}", String::from_utf8_lossy(&out));

    // A handshake header that is not base64, too short, or the right length but not Noise.
    let resp = upgrade_request(addr, b"").await?;
    ensure!(resp.status() == StatusCode::BAD_REQUEST);
    let resp = upgrade_request(addr, &[0u8; 40]).await?;
    ensure!(resp.status() == StatusCode::BAD_REQUEST);
    ensure!(body_text(resp).await?.contains("handshake header is 40 bytes"));
    let mut junk = vec![0, 130, 1, 0, 96];
    junk.extend_from_slice(&[0x55; 96]);
    let resp = upgrade_request(addr, &junk).await?;
    ensure!(resp.status() == StatusCode::BAD_REQUEST);
    ensure!(body_text(resp).await?.contains("handshake failed"));
    let mut old = junk.clone();
    old[1] = 10;
    ensure!(body_text(upgrade_request(addr, &old).await?).await?.contains("older than the oldest supported"));

    // A valid handshake whose client then sends an oversized record: that channel is closed.
    let machine = PrivateKey::generate();
    let (raw, _hs) = initiation(&machine, &server_key(addr).await?)?;
    let resp = upgrade_request(addr, &raw).await?;
    ensure!(resp.status() == StatusCode::SWITCHING_PROTOCOLS);
    let mut io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(resp).await?);
    io.write_all(&[0x04, 0xff, 0xff]).await?;
    io.write_all(&[0u8; 1024]).await?;
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut io, &mut sink)).await;
    ensure!(closed.is_ok(), "the server closed the channel after an oversized record");

    // Inside a proper channel: bad JSON, unknown node keys, unknown paths.
    let mut ch = NoiseClient::connect(addr, &PrivateKey::generate()).await?;
    let r = ch.post("/machine/register", Bytes::from_static(b"{not json")).await?;
    ensure!(r.status() == StatusCode::BAD_REQUEST);
    ensure!(body_text(r).await?.contains("invalid RegisterRequest"));
    let r = ch.post("/machine/map", Bytes::from_static(br#"{"NodeKey":5}"#)).await?;
    ensure!(r.status() == StatusCode::BAD_REQUEST);
    let unknown = format!(r#"{{"Version":130,"NodeKey":"{}","Stream":true}}"#, NodeKey([3; 32]));
    let r = ch.post("/machine/map", unknown).await?;
    ensure!(r.status() == StatusCode::UNAUTHORIZED);
    let r = ch.post("/machine/register", r#"{"Version":130,"NodeKey":"nodekey:00","Auth":{"AuthKey":"x"}}"#).await?;
    ensure!(r.status() == StatusCode::BAD_REQUEST, "malformed key refused");
    let r = ch
        .post(
            "/machine/register",
            format!(r#"{{"Version":130,"NodeKey":"{}","Auth":{{"AuthKey":"hskey-auth-wrong"}}}}"#, NodeKey([4; 32])),
        )
        .await?;
    ensure!(r.status() == StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body_text(r).await?)?;
    ensure!(v["Error"] == "invalid pre-auth key" && v["MachineAuthorized"] == false, "{v}");
    let r = ch.post("/machine/set-dns", Bytes::new()).await?;
    ensure!(r.status() == StatusCode::NOT_IMPLEMENTED);
    let big = vec![b' '; 2 << 20];
    let r = ch.post("/machine/register", big).await?;
    ensure!(r.status() == StatusCode::PAYLOAD_TOO_LARGE);
    ensure!(srv.state().snapshot().nodes.len() == 2, "nothing was registered by bad input");

    // Through all of it the real clients kept their session and still talk.
    still_connected(&a, "steady-b").await?;
    still_connected(&b, "steady-a").await?;
    a.shutdown(Some(Duration::from_secs(2))).await;
    b.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn machine_endpoints_are_noise_only_and_bound_to_the_machine() -> Result<()> {
    init();
    let srv = TestServer::start(Options::default()).await?;
    let user = srv.create_user("sec").await?;
    let key = srv.auth_key(user, true, false).await?;
    let victim = srv.join("victim", &key).await?;
    let snap = srv.state().snapshot();
    let node = snap.nodes.values().next().context("victim node")?.clone();
    let victim_key = node.node.node_key;

    // Plain HTTP: refused.
    let out = raw_exchange(
        srv.running.listen_addr,
        b"POST /machine/map HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await?;
    let text = String::from_utf8_lossy(&out);
    ensure!(text.starts_with("HTTP/1.1 404") && text.contains("only inside the ts2021 Noise channel"), "{text}");

    // Another machine names the victim's node key: it can neither read its map nor change it.
    let mut intruder = NoiseClient::connect(srv.running.listen_addr, &PrivateKey::generate()).await?;
    let read = format!(r#"{{"Version":130,"NodeKey":"{victim_key}","Stream":true}}"#);
    let r = intruder.post("/machine/map", read).await?;
    ensure!(r.status() == StatusCode::FORBIDDEN, "stream of another machine's node: {}", r.status());
    let write = format!(
        r#"{{"Version":130,"NodeKey":"{victim_key}","OmitPeers":true,"Endpoints":["203.0.113.9:1"],"Hostinfo":{{"Hostname":"evil"}}}}"#
    );
    let r = intruder.post("/machine/map", write).await?;
    ensure!(r.status() == StatusCode::FORBIDDEN);
    let reg = format!(r#"{{"Version":130,"NodeKey":"{victim_key}","Auth":{{"AuthKey":"{key}"}}}}"#);
    let r = intruder.post("/machine/register", reg).await?;
    let v: serde_json::Value = serde_json::from_str(&body_text(r).await?)?;
    ensure!(v["MachineAuthorized"] == false && v["Error"] == "node key is registered to another machine", "{v}");
    let logout = format!(r#"{{"Version":130,"NodeKey":"{victim_key}","Expiry":"2000-01-01T00:00:00Z"}}"#);
    let r = intruder.post("/machine/register", logout).await?;
    let v: serde_json::Value = serde_json::from_str(&body_text(r).await?)?;
    ensure!(v["MachineAuthorized"] == false && !v["Error"].as_str().unwrap_or("").is_empty(), "{v}");

    let after = srv.state().snapshot();
    let n = after.node(node.node.id).context("victim still exists")?;
    ensure!(n.node.hostname == "victim" && n.node.expiry.is_none(), "victim unchanged");
    ensure!(!n.node.endpoints.iter().any(|e| e.to_string() == "203.0.113.9:1"));
    ensure!(after.nodes.len() == 1);
    victim.shutdown(Some(Duration::from_secs(2))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn derp_admits_only_registered_node_keys() -> Result<()> {
    init();
    let srv = TestServer::start(Options::default()).await?;
    let user = srv.create_user("derp").await?;
    let key = srv.auth_key(user, true, false).await?;
    let addr = srv.running.listen_addr;
    // A stranger's key is refused.
    let stranger = PrivateKey::generate();
    ensure!(integration::derp_client::connect(addr, stranger.0).await.is_err(), "unknown node key admitted");
    // Register a node whose node key we hold, through a real Noise channel.
    let node = PrivateKey::generate();
    let mut ch = NoiseClient::connect(addr, &PrivateKey::generate()).await?;
    let reg = format!(r#"{{"Version":130,"NodeKey":"{}","Auth":{{"AuthKey":"{key}"}}}}"#, NodeKey(node.public()));
    let v: serde_json::Value = serde_json::from_str(&body_text(ch.post("/machine/register", reg).await?).await?)?;
    ensure!(v["MachineAuthorized"] == true, "{v}");
    let mut conn = integration::derp_client::connect(addr, node.0).await?;
    let derp = srv.running.derp.as_ref().context("embedded DERP")?;
    ensure!(derp.is_connected(&node.public()));
    // Deleting the node closes its open DERP connection.
    let id = srv.state().snapshot().node_by_key(&NodeKey(node.public())).context("node")?.node.id;
    srv.cli(&["nodes", "delete", "-i", &id.to_string(), "--force"]).await?;
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut sink)).await;
    ensure!(closed.is_ok(), "the deleted node's DERP connection was closed");
    ensure!(!derp.is_connected(&node.public()));
    Ok(())
}
