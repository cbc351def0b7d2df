//! A minimal ts2021 client: fetches the server key, performs the Noise IK handshake through
//! the `/ts2021` upgrade and speaks HTTP/2 inside the channel. Tests use it to act as a
//! machine that misbehaves (naming another machine's node, sending oversized records).

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use headscale::noise::NoiseStream;
use headscale::tailcfg::{MachineKey, PrivateKey};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Noise protocol Tailscale's control channel uses.
const PROTOCOL: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The capability version this client claims.
pub const VERSION: u16 = 130;

/// An open control channel.
pub struct NoiseClient {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

/// Fetches the server's Noise public key from `/key`.
pub async fn server_key(addr: SocketAddr) -> Result<[u8; 32]> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::get(format!("/key?v={VERSION}")).header("host", "127.0.0.1").body(Empty::<Bytes>::new())?;
    let body = send.send_request(req).await?.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let key = v["publicKey"].as_str().context("no publicKey in /key answer")?;
    Ok(MachineKey::parse(key)?.0)
}

/// Builds the 101-byte initiation header and the handshake state that finishes it.
pub fn initiation(machine: &PrivateKey, server: &[u8; 32]) -> Result<(Vec<u8>, snow::HandshakeState)> {
    let prologue = format!("Tailscale Control Protocol v{VERSION}");
    let mut hs = snow::Builder::new(PROTOCOL.parse()?)
        .local_private_key(&machine.0)?
        .remote_public_key(server)?
        .prologue(prologue.as_bytes())?
        .build_initiator()?;
    let mut msg = [0u8; 96];
    hs.write_message(&[], &mut msg)?;
    let mut raw = VERSION.to_be_bytes().to_vec();
    raw.push(0x01);
    raw.extend_from_slice(&96u16.to_be_bytes());
    raw.extend_from_slice(&msg);
    Ok((raw, hs))
}

/// Sends a `/ts2021` upgrade with the given handshake header and returns the raw answer.
pub async fn upgrade_request(addr: SocketAddr, handshake: &[u8]) -> Result<Response<Incoming>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn.with_upgrades());
    let req = Request::post("/ts2021")
        .header("host", "127.0.0.1")
        .header("upgrade", "tailscale-control-protocol")
        .header("connection", "Upgrade")
        .header("x-tailscale-handshake", base64::engine::general_purpose::STANDARD.encode(handshake))
        .body(Empty::<Bytes>::new())?;
    Ok(send.send_request(req).await?)
}

impl NoiseClient {
    /// Opens a control channel to the server at `addr` as the machine `machine`.
    pub async fn connect(addr: SocketAddr, machine: &PrivateKey) -> Result<NoiseClient> {
        let server = server_key(addr).await?;
        let (raw, mut hs) = initiation(machine, &server)?;
        let resp = upgrade_request(addr, &raw).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            bail!("upgrade refused with {}", resp.status());
        }
        let mut io = TokioIo::new(hyper::upgrade::on(resp).await?);
        let mut answer = [0u8; 51];
        io.read_exact(&mut answer).await?;
        if answer[0] != 0x02 {
            bail!("handshake answer has type {:#04x}", answer[0]);
        }
        let mut payload = [0u8; 64];
        hs.read_message(&answer[3..], &mut payload)?;
        let (c2s, s2c) = hs.dangerously_get_raw_split();
        let mut stream = NoiseStream::new(io, &s2c, &c2s);
        let mut magic = [0u8; 9];
        stream.read_exact(&mut magic).await?;
        if &magic[..5] != b"\xff\xff\xffTS" {
            bail!("no early payload");
        }
        let mut json = vec![0u8; u32::from_be_bytes(magic[5..9].try_into()?) as usize];
        stream.read_exact(&mut json).await?;
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(NoiseClient { sender })
    }

    /// POSTs a body to a path inside the channel.
    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Result<Response<Incoming>> {
        let req = Request::post(format!("http://127.0.0.1{path}"))
            .header("host", "127.0.0.1")
            .body(Full::new(body.into()))?;
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }
}

/// Writes raw bytes on a fresh TCP connection and returns whatever comes back before close.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    Ok(out)
}
