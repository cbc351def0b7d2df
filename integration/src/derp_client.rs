//! A minimal DERP client for admission tests: upgrades `/derp` on the server's plain HTTP
//! listener and sends a ClientInfo for a node key whose private half the test holds.

use std::net::SocketAddr;

use anyhow::{bail, Result};
use bytes::Bytes;
use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use headscale::derp::frame::{parse_server_key, read_frame, write_frame};
use headscale::derp::{Frame, FrameType};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An admitted DERP connection.
pub type DerpConn = TokioIo<hyper::upgrade::Upgraded>;

/// Connects and identifies as the node whose private key is `secret`. Returns the connection
/// once the server answered with ServerInfo, or an error if it closed the connection instead.
pub async fn connect(addr: SocketAddr, secret: [u8; 32]) -> Result<DerpConn> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn.with_upgrades());
    let req = Request::post("/derp")
        .header("host", "127.0.0.1")
        .header("upgrade", "DERP")
        .header("connection", "Upgrade")
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        bail!("DERP upgrade refused with {}", resp.status());
    }
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await?);
    let first = read_frame(&mut io).await?;
    let server = PublicKey::from(parse_server_key(&first.body)?);
    let client = SecretKey::from(secret);
    let nonce = SalsaBox::generate_nonce(&mut OsRng);
    let info = br#"{"can_ack_pings":false,"is_prober":false,"mesh_key":"none","version":2}"#;
    let sealed = SalsaBox::new(&server, &client)
        .encrypt(&nonce, &info[..])
        .map_err(|_| anyhow::anyhow!("cannot seal ClientInfo"))?;
    let nonce: [u8; 24] = nonce.into();
    write_frame(&mut io, &Frame::client_info(client.public_key().as_bytes(), &nonce, &sealed)).await?;
    let answer = read_frame(&mut io).await?;
    if answer.kind != FrameType::ServerInfo.as_u8() {
        bail!("expected ServerInfo, got frame type {:#04x}", answer.kind);
    }
    Ok(io)
}
