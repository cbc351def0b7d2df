//! The DERP relay: handshake, registry of connected clients, packet
//! forwarding, PeerGone notifications and keep-alives.
//!
//! Each connection gets a bounded queue of outgoing frames drained by its own
//! writer; forwarding only ever does a non-blocking push into the
//! destination's queue, so one slow client cannot hold up the others (its
//! packets are dropped instead).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crypto_box::aead::Aead;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::frame::{
    self, ClientInfo, Frame, FrameError, FrameType, PeerGoneReason, KEY_LEN, NONCE_LEN, PROTOCOL_VERSION,
};
use crate::log_rate::{LogRate, PERIOD};

/// Decides whether a client node public key may use the relay.
pub type Admission = Arc<dyn Fn(&[u8; KEY_LEN]) -> bool + Send + Sync>;

/// Default interval between KeepAlive frames.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// Default depth of each client's outgoing frame queue.
pub const DEFAULT_QUEUE_DEPTH: usize = 128;

/// Time allowed from connection start to a received ClientInfo.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for one batch of writes to a client before giving up on it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most frames written in one batch before flushing.
const MAX_WRITE_BATCH: usize = 64;

/// Refused node keys, logged at most once per period: anyone can try one.
static REFUSED: LogRate = LogRate::new(PERIOD);

/// Why a DERP connection ended (logged at debug level).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Reading or writing a frame failed.
    #[error("DERP framing failed: {0}")]
    Frame(#[from] FrameError),
    /// The client did not complete the handshake in time.
    #[error("DERP client did not send ClientInfo within {0:?}")]
    HandshakeTimeout(Duration),
    /// The first client frame was not ClientInfo.
    #[error("expected a ClientInfo frame first, got frame type {0:#04x}")]
    NotClientInfo(u8),
    /// The sealed ClientInfo did not open with the claimed key.
    #[error("ClientInfo box from nodekey:{0} failed to decrypt")]
    ClientInfoDecrypt(String),
    /// The ClientInfo content was not a JSON object.
    #[error("ClientInfo from nodekey:{0} is not a JSON object")]
    ClientInfoJson(String),
    /// The client key is not allowed to use this relay.
    #[error("nodekey:{0} is not admitted to this DERP server")]
    NotAdmitted(String),
    /// Sealing the ServerInfo failed.
    #[error("sealing ServerInfo failed")]
    ServerInfoSeal,
    /// A write to the client did not finish in time.
    #[error("writing to DERP client timed out after {0:?}")]
    WriteTimeout(Duration),
}

/// A snapshot of the relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DerpStats {
    /// Clients currently registered.
    pub connected_clients: usize,
    /// Packets handed to a destination's queue.
    pub packets_relayed: u64,
    /// Packets dropped (unknown destination, full queue, malformed).
    pub packets_dropped: u64,
    /// Clients that completed a handshake since start.
    pub clients_accepted: u64,
    /// Connections refused by the admission check since start.
    pub clients_refused: u64,
}

#[derive(Default)]
struct Counters {
    relayed: AtomicU64,
    dropped: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A registered connection, as seen by other connections.
struct ClientHandle {
    conn_id: u64,
    tx: mpsc::Sender<Frame>,
    /// Dropping this ends the connection.
    _close: oneshot::Sender<()>,
}

#[derive(Default)]
struct Registry {
    clients: HashMap<[u8; KEY_LEN], ClientHandle>,
    /// destination key → keys of clients that have sent packets to it.
    senders_to: HashMap<[u8; KEY_LEN], HashSet<[u8; KEY_LEN]>>,
}

/// An in-process DERP relay server.
pub struct DerpServer {
    secret: SecretKey,
    public: [u8; KEY_LEN],
    admission: Admission,
    registry: Mutex<Registry>,
    next_conn_id: AtomicU64,
    counters: Counters,
    keepalive_interval: Duration,
    queue_depth: usize,
}

impl std::fmt::Debug for DerpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerpServer")
            .field("public_key", &hex::encode(self.public))
            .field("keepalive_interval", &self.keepalive_interval)
            .field("queue_depth", &self.queue_depth)
            .finish_non_exhaustive()
    }
}

/// An admission policy that admits every client.
pub fn admit_all() -> Admission {
    Arc::new(|_: &[u8; KEY_LEN]| true)
}

fn key_hex(key: &[u8; KEY_LEN]) -> String {
    hex::encode(key)
}

impl DerpServer {
    /// Create a relay with the given Curve25519 private key (a
    /// `crypto_box::SecretKey` or its 32 raw bytes) and admission policy.
    pub fn new(private_key: impl Into<SecretKey>, admission: Admission) -> Self {
        let secret: SecretKey = private_key.into();
        let public = secret.public_key().to_bytes();
        Self {
            secret,
            public,
            admission,
            registry: Mutex::new(Registry::default()),
            next_conn_id: AtomicU64::new(1),
            counters: Counters::default(),
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            queue_depth: DEFAULT_QUEUE_DEPTH,
        }
    }

    /// Change the interval between KeepAlive frames (default 60 s).
    pub fn with_keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Change the per-client outgoing queue depth (default 128 frames).
    pub fn with_queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth.max(1);
        self
    }

    /// The server's Curve25519 public key, as sent in ServerKey.
    pub fn public_key(&self) -> [u8; KEY_LEN] {
        self.public
    }

    /// Whether a client with this node key is currently connected.
    pub fn is_connected(&self, key: &[u8; KEY_LEN]) -> bool {
        self.lock().clients.contains_key(key)
    }

    /// Node keys of all connected clients.
    pub fn connected_keys(&self) -> Vec<[u8; KEY_LEN]> {
        self.lock().clients.keys().copied().collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DerpStats {
        DerpStats {
            connected_clients: self.lock().clients.len(),
            packets_relayed: self.counters.relayed.load(Ordering::Relaxed),
            packets_dropped: self.counters.dropped.load(Ordering::Relaxed),
            clients_accepted: self.counters.accepted.load(Ordering::Relaxed),
            clients_refused: self.counters.refused.load(Ordering::Relaxed),
        }
    }

    /// Close the connection of the client with this node key, if any (for
    /// instance after the node was deleted). Returns whether one was
    /// connected. Peers that sent to it get PeerGone.
    pub fn disconnect(&self, key: &[u8; KEY_LEN]) -> bool {
        let removed = {
            let mut reg = self.lock();
            Self::remove_locked(&mut reg, key, None)
        };
        match removed {
            Some(handle) => {
                info!(node_key = %key_hex(key), "DERP client disconnected by server");
                drop(handle);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remove `key` from the registry (only if its connection id matches,
    /// when given) and tell the clients that sent to it that it is gone.
    fn remove_locked(reg: &mut Registry, key: &[u8; KEY_LEN], conn_id: Option<u64>) -> Option<ClientHandle> {
        match (reg.clients.get(key), conn_id) {
            (None, _) => return None,
            (Some(h), Some(id)) if h.conn_id != id => return None,
            _ => {}
        }
        let handle = reg.clients.remove(key)?;
        let senders = reg.senders_to.remove(key).unwrap_or_default();
        reg.senders_to.retain(|_, set| {
            set.remove(key);
            !set.is_empty()
        });
        let gone = Frame::peer_gone(key, PeerGoneReason::Disconnected);
        for sender in senders {
            if let Some(peer) = reg.clients.get(&sender) {
                // Best effort: a full queue just misses the notification.
                let _ = peer.tx.try_send(gone.clone());
            }
        }
        Some(handle)
    }

    /// Register a new connection, returning the connection it replaces.
    fn register(&self, key: [u8; KEY_LEN], handle: ClientHandle) -> Option<ClientHandle> {
        self.lock().clients.insert(key, handle)
    }

    /// Forward a packet from `src` to `dst`, or drop it.
    fn relay(&self, src: &[u8; KEY_LEN], dst: &[u8; KEY_LEN], packet: &[u8]) {
        let frame = Frame::recv_packet(src, packet);
        let mut guard = self.lock();
        let reg = &mut *guard;
        let delivered = match reg.clients.get(dst) {
            Some(peer) => match peer.tx.try_send(frame) {
                Ok(()) => true,
                Err(_) => {
                    debug!(dst = %key_hex(dst), "DERP destination queue full, dropping packet");
                    false
                }
            },
            None => false,
        };
        if reg.clients.contains_key(dst) {
            reg.senders_to.entry(*dst).or_default().insert(*src);
        }
        drop(guard);
        if delivered {
            self.counters.relayed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Run the DERP protocol on an already-upgraded connection until it ends.
    ///
    /// Sends ServerKey, reads and checks ClientInfo, applies the admission
    /// policy, answers ServerInfo, then relays packets. Errors are logged and
    /// only ever close this one connection.
    pub async fn serve_conn<IO>(self: &Arc<Self>, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        match self.run_conn(io, conn_id).await {
            Ok(()) | Err(ConnError::Frame(FrameError::Closed)) => {
                debug!(conn_id, "DERP connection closed");
            }
            Err(ConnError::NotAdmitted(_)) => {}
            Err(e) => debug!(conn_id, error = %e, "DERP connection ended"),
        }
    }

    async fn run_conn<IO>(self: &Arc<Self>, io: IO, conn_id: u64) -> Result<(), ConnError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let mut rd = BufReader::new(rd);
        let mut wr = BufWriter::new(wr);

        let client_key = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.read_client_info(&mut rd, &mut wr))
            .await
            .map_err(|_| ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??;

        if !(self.admission)(&client_key) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(left_out) = REFUSED.allow() {
                info!(node_key = %key_hex(&client_key), left_out, "DERP client refused: node key not admitted");
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
            return Err(ConnError::NotAdmitted(key_hex(&client_key)));
        }

        // Register before ServerInfo so a client that finished the handshake
        // is guaranteed to be reachable.
        let (tx, mut rx) = mpsc::channel(self.queue_depth);
        let (close_tx, close_rx) = oneshot::channel();
        let replaced = self.register(client_key, ClientHandle { conn_id, tx: tx.clone(), _close: close_tx });
        if replaced.is_some() {
            info!(node_key = %key_hex(&client_key), "DERP client reconnected, closing its previous connection");
        }
        drop(replaced);
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        debug!(conn_id, node_key = %key_hex(&client_key), "DERP client connected");

        let result = async {
            self.write_server_info(&client_key, &mut wr).await?;
            tokio::select! {
                r = self.read_loop(&mut rd, &client_key, &tx) => r,
                r = write_loop(&mut wr, &mut rx, self.keepalive_interval) => r,
                _ = close_rx => Ok(()),
            }
        }
        .await;

        let removed = {
            let mut reg = self.lock();
            Self::remove_locked(&mut reg, &client_key, Some(conn_id))
        };
        drop(removed);
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
        debug!(conn_id, node_key = %key_hex(&client_key), "DERP client gone");
        result
    }

    /// Send ServerKey and read/verify ClientInfo; returns the client's key.
    async fn read_client_info<R, W>(&self, rd: &mut R, wr: &mut W) -> Result<[u8; KEY_LEN], ConnError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        frame::write_frame(wr, &Frame::server_key(&self.public)).await?;
        wr.flush().await.map_err(FrameError::from)?;

        let first = frame::read_frame(rd).await?;
        if first.frame_type() != Some(FrameType::ClientInfo) {
            return Err(ConnError::NotClientInfo(first.kind));
        }
        let info = ClientInfo::parse(&first.body)?;
        let cbox = SalsaBox::new(&PublicKey::from(info.key), &self.secret);
        let plain = cbox
            .decrypt(Nonce::from_slice(&info.nonce), info.sealed.as_ref())
            .map_err(|_| ConnError::ClientInfoDecrypt(key_hex(&info.key)))?;
        let json: serde_json::Value =
            serde_json::from_slice(&plain).map_err(|_| ConnError::ClientInfoJson(key_hex(&info.key)))?;
        if !json.is_object() {
            return Err(ConnError::ClientInfoJson(key_hex(&info.key)));
        }
        debug!(node_key = %key_hex(&info.key), client_info = %json, "DERP ClientInfo");
        Ok(info.key)
    }

    async fn write_server_info<W: AsyncWrite + Unpin>(
        &self,
        client_key: &[u8; KEY_LEN],
        wr: &mut W,
    ) -> Result<(), ConnError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = serde_json::json!({ "version": PROTOCOL_VERSION }).to_string();
        let cbox = SalsaBox::new(&PublicKey::from(*client_key), &self.secret);
        let sealed =
            cbox.encrypt(Nonce::from_slice(&nonce), payload.as_bytes()).map_err(|_| ConnError::ServerInfoSeal)?;
        tokio::time::timeout(WRITE_TIMEOUT, async {
            frame::write_frame(wr, &Frame::server_info(&nonce, &sealed)).await?;
            wr.flush().await.map_err(FrameError::from)
        })
        .await
        .map_err(|_| ConnError::WriteTimeout(WRITE_TIMEOUT))??;
        Ok(())
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        client_key: &[u8; KEY_LEN],
        own_tx: &mpsc::Sender<Frame>,
    ) -> Result<(), ConnError> {
        loop {
            let f = match frame::read_frame(rd).await {
                Ok(f) => f,
                Err(FrameError::Closed) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match f.frame_type() {
                Some(FrameType::SendPacket) => match frame::parse_keyed(FrameType::SendPacket, &f.body) {
                    Ok((dst, packet)) => self.relay(client_key, &dst, &packet),
                    Err(e) => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "ignoring malformed SendPacket");
                    }
                },
                Some(FrameType::Ping) => match frame::parse_ping(FrameType::Ping, &f.body) {
                    Ok(payload) => {
                        let _ = own_tx.try_send(Frame::pong(payload));
                    }
                    Err(e) => debug!(error = %e, "ignoring malformed Ping"),
                },
                other => {
                    // NotePreferred, Pong, KeepAlive, mesh frames (WatchConns,
                    // ClosePeer, ForwardPacket) and unknown types: accepted and
                    // ignored. Mesh features are not offered.
                    debug!(frame_type = ?other, raw_type = f.kind, len = f.body.len(), "ignoring DERP frame");
                }
            }
        }
    }
}

/// Drain the outgoing queue to the client, batching writes, and send a
/// KeepAlive every `keepalive`.
async fn write_loop<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rx: &mut mpsc::Receiver<Frame>,
    keepalive: Duration,
) -> Result<(), ConnError> {
    let start = tokio::time::Instant::now() + keepalive;
    let mut ticker = tokio::time::interval_at(start, keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            next = rx.recv() => match next {
                Some(f) => f,
                None => return Ok(()),
            },
            _ = ticker.tick() => Frame::keep_alive(),
        };
        tokio::time::timeout(WRITE_TIMEOUT, async {
            frame::write_frame(wr, &first).await?;
            for _ in 0..MAX_WRITE_BATCH {
                match rx.try_recv() {
                    Ok(f) => frame::write_frame(wr, &f).await?,
                    Err(_) => break,
                }
            }
            wr.flush().await.map_err(FrameError::from)
        })
        .await
        .map_err(|_| ConnError::WriteTimeout(WRITE_TIMEOUT))??;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::derp::frame::{parse_peer_gone, parse_server_key, read_frame, write_frame};
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, ReadHalf, WriteHalf};

    /// A minimal DERP client for tests.
    pub(crate) struct TestClient<IO> {
        pub rd: ReadHalf<IO>,
        pub wr: WriteHalf<IO>,
        pub key: [u8; 32],
    }

    /// Why the test client's handshake failed (shown through `Debug`).
    #[derive(Debug)]
    #[allow(dead_code)]
    pub(crate) enum HandshakeFailure {
        Frame(FrameError),
        Other(&'static str),
    }

    impl From<FrameError> for HandshakeFailure {
        fn from(e: FrameError) -> Self {
            Self::Frame(e)
        }
    }

    impl<IO: AsyncRead + AsyncWrite + Unpin> TestClient<IO> {
        /// Run the client side of the handshake on `io` with `secret`.
        pub(crate) async fn handshake(io: IO, secret: &SecretKey) -> Result<Self, HandshakeFailure> {
            let (mut rd, mut wr) = tokio::io::split(io);
            let sk = read_frame(&mut rd).await?;
            if sk.frame_type() != Some(FrameType::ServerKey) {
                return Err(HandshakeFailure::Other("first frame not ServerKey"));
            }
            let server_pub = parse_server_key(&sk.body)?;
            let key = secret.public_key().to_bytes();
            let cbox = SalsaBox::new(&PublicKey::from(server_pub), secret);
            let mut nonce = [0u8; 24];
            rand::rngs::OsRng.fill_bytes(&mut nonce);
            let json = br#"{"can_ack_pings":false,"is_prober":false,"mesh_key":"none","version":2}"#;
            let sealed = cbox.encrypt(Nonce::from_slice(&nonce), &json[..]).unwrap();
            write_frame(&mut wr, &Frame::client_info(&key, &nonce, &sealed)).await?;
            wr.flush().await.map_err(FrameError::from)?;
            let si = read_frame(&mut rd).await?;
            if si.frame_type() != Some(FrameType::ServerInfo) {
                return Err(HandshakeFailure::Other("second frame not ServerInfo"));
            }
            if si.body.len() < 24 {
                return Err(HandshakeFailure::Other("short ServerInfo"));
            }
            let plain = cbox
                .decrypt(Nonce::from_slice(&si.body[..24]), &si.body[24..])
                .map_err(|_| HandshakeFailure::Other("ServerInfo does not decrypt"))?;
            let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            if v["version"] != 2 {
                return Err(HandshakeFailure::Other("ServerInfo version is not 2"));
            }
            Ok(Self { rd, wr, key })
        }

        pub(crate) async fn send(&mut self, f: &Frame) {
            write_frame(&mut self.wr, f).await.unwrap();
            self.wr.flush().await.unwrap();
        }

        pub(crate) async fn recv(&mut self) -> Result<Frame, FrameError> {
            tokio::time::timeout(Duration::from_secs(5), read_frame(&mut self.rd))
                .await
                .expect("timed out waiting for a frame")
        }

        /// Receive the next frame that is not a KeepAlive.
        pub(crate) async fn recv_non_keepalive(&mut self) -> Result<Frame, FrameError> {
            loop {
                let f = self.recv().await?;
                if f.frame_type() != Some(FrameType::KeepAlive) {
                    return Ok(f);
                }
            }
        }

        /// Assert that nothing (other than nothing at all) arrives for `dur`.
        pub(crate) async fn expect_silence(&mut self, dur: Duration) {
            if let Ok(r) = tokio::time::timeout(dur, read_frame(&mut self.rd)).await {
                panic!("expected no frame, got {r:?}");
            }
        }
    }

    fn new_secret() -> SecretKey {
        SecretKey::generate(&mut rand::rngs::OsRng)
    }

    fn server_with(admission: Admission) -> Arc<DerpServer> {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Arc::new(DerpServer::new(k, admission))
    }

    fn spawn_conn(server: &Arc<DerpServer>, buf: usize) -> tokio::io::DuplexStream {
        let (client, srv) = tokio::io::duplex(buf);
        let s = server.clone();
        tokio::spawn(async move { s.serve_conn(srv).await });
        client
    }

    async fn connect(server: &Arc<DerpServer>) -> (TestClient<tokio::io::DuplexStream>, SecretKey) {
        let secret = new_secret();
        let c = TestClient::handshake(spawn_conn(server, 256 * 1024), &secret).await.expect("handshake");
        (c, secret)
    }

    async fn wait_until(mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    #[test]
    fn public_key_matches_secret() {
        let secret = new_secret();
        let expected = secret.public_key().to_bytes();
        let s = DerpServer::new(secret.clone(), admit_all());
        assert_eq!(s.public_key(), expected);
        let s2 = DerpServer::new(secret.to_bytes(), admit_all());
        assert_eq!(s2.public_key(), expected);
    }

    #[tokio::test]
    async fn relays_packet_between_two_clients() {
        let server = server_with(admit_all());
        let (mut a, _) = connect(&server).await;
        let (mut b, _) = connect(&server).await;
        assert!(server.is_connected(&a.key));
        assert!(server.is_connected(&b.key));
        assert_eq!(server.stats().connected_clients, 2);

        a.send(&Frame::send_packet(&b.key, b"ping over derp")).await;
        let f = b.recv_non_keepalive().await.unwrap();
        assert_eq!(f.frame_type(), Some(FrameType::RecvPacket));
        let (src, pkt) = frame::parse_keyed(FrameType::RecvPacket, &f.body).unwrap();
        assert_eq!(src, a.key);
        assert_eq!(&pkt[..], b"ping over derp");

        b.send(&Frame::send_packet(&a.key, b"reply")).await;
        let f = a.recv_non_keepalive().await.unwrap();
        let (src, pkt) = frame::parse_keyed(FrameType::RecvPacket, &f.body).unwrap();
        assert_eq!(src, b.key);
        assert_eq!(&pkt[..], b"reply");

        // Unknown destination: dropped, nothing sent back.
        a.send(&Frame::send_packet(&[0x55; 32], b"nobody")).await;
        a.expect_silence(Duration::from_millis(100)).await;

        let st = server.stats();
        assert_eq!(st.packets_relayed, 2);
        assert_eq!(st.packets_dropped, 1);
        assert_eq!(st.clients_accepted, 2);
    }

    #[tokio::test]
    async fn refused_client_is_closed() {
        let allowed = new_secret();
        let allowed_pub = allowed.public_key().to_bytes();
        let server = server_with(Arc::new(move |k: &[u8; 32]| *k == allowed_pub));

        let refused = new_secret();
        let r = TestClient::handshake(spawn_conn(&server, 64 * 1024), &refused).await;
        assert!(
            matches!(r, Err(HandshakeFailure::Frame(FrameError::Closed))),
            "expected the connection to close, got {:?}",
            r.as_ref().err()
        );
        assert!(!server.is_connected(&refused.public_key().to_bytes()));
        assert_eq!(server.stats().clients_refused, 1);

        let ok = TestClient::handshake(spawn_conn(&server, 64 * 1024), &allowed).await;
        assert!(ok.is_ok());
        assert!(server.is_connected(&allowed_pub));
    }

    #[tokio::test]
    async fn peer_gone_goes_only_to_senders() {
        let server = server_with(admit_all());
        let (mut a, _) = connect(&server).await;
        let (mut b, _) = connect(&server).await;
        let (mut c, _) = connect(&server).await;

        a.send(&Frame::send_packet(&b.key, b"x")).await;
        let _ = b.recv_non_keepalive().await.unwrap();

        let b_key = b.key;
        drop(b);
        wait_until(|| !server.is_connected(&b_key)).await;

        let f = a.recv_non_keepalive().await.unwrap();
        assert_eq!(f.frame_type(), Some(FrameType::PeerGone));
        assert_eq!(f.body.len(), 33);
        assert_eq!(parse_peer_gone(&f.body).unwrap(), (b_key, 0));

        c.expect_silence(Duration::from_millis(150)).await;
        a.expect_silence(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn garbage_client_info_closes_only_that_connection() {
        let server = server_with(admit_all());
        let (mut a, _) = connect(&server).await;
        let (mut b, _) = connect(&server).await;

        // Too-short ClientInfo.
        let io = spawn_conn(&server, 64 * 1024);
        let (mut rd, mut wr) = tokio::io::split(io);
        let _ = read_frame(&mut rd).await.unwrap();
        write_frame(&mut wr, &Frame::new(FrameType::ClientInfo, vec![1u8; 10])).await.unwrap();
        assert!(matches!(read_frame(&mut rd).await, Err(FrameError::Closed)));

        // Right size but garbage box.
        let io = spawn_conn(&server, 64 * 1024);
        let (mut rd, mut wr) = tokio::io::split(io);
        let _ = read_frame(&mut rd).await.unwrap();
        write_frame(&mut wr, &Frame::new(FrameType::ClientInfo, vec![7u8; 120])).await.unwrap();
        assert!(matches!(read_frame(&mut rd).await, Err(FrameError::Closed)));

        // Truncated frame, then the client goes away.
        let io = spawn_conn(&server, 64 * 1024);
        let (mut rd, mut wr) = tokio::io::split(io);
        let _ = read_frame(&mut rd).await.unwrap();
        wr.write_all(&[0x02, 0, 0, 0, 100, 1, 2, 3]).await.unwrap();
        wr.shutdown().await.unwrap();
        drop(wr);
        let mut rest = Vec::new();
        let _ = rd.read_to_end(&mut rest).await;
        assert!(rest.is_empty());

        // Oversized first frame.
        let io = spawn_conn(&server, 64 * 1024);
        let (mut rd, mut wr) = tokio::io::split(io);
        let _ = read_frame(&mut rd).await.unwrap();
        wr.write_all(&[0x02, 0x7f, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(read_frame(&mut rd).await, Err(FrameError::Closed)));

        // Wrong first frame type.
        let io = spawn_conn(&server, 64 * 1024);
        let (mut rd, mut wr) = tokio::io::split(io);
        let _ = read_frame(&mut rd).await.unwrap();
        write_frame(&mut wr, &Frame::send_packet(&a.key, b"sneaky")).await.unwrap();
        assert!(matches!(read_frame(&mut rd).await, Err(FrameError::Closed)));

        // Everyone else is still fine.
        a.send(&Frame::send_packet(&b.key, b"still here")).await;
        let f = b.recv_non_keepalive().await.unwrap();
        assert_eq!(&f.body[32..], b"still here");
        assert_eq!(server.stats().connected_clients, 2);
        assert_eq!(server.stats().packets_relayed, 1);
    }

    #[tokio::test]
    async fn oversize_frame_after_handshake_closes() {
        let server = server_with(admit_all());
        let (mut a, _) = connect(&server).await;
        a.wr.write_all(&[0x04, 0x00, 0x01, 0x00, 0x01]).await.unwrap();
        a.wr.flush().await.unwrap();
        assert!(matches!(a.recv().await, Err(FrameError::Closed)));
        let key = a.key;
        wait_until(|| !server.is_connected(&key)).await;
    }

    #[tokio::test]
    async fn newer_connection_replaces_older() {
        let server = server_with(admit_all());
        let secret = new_secret();
        let mut first = TestClient::handshake(spawn_conn(&server, 64 * 1024), &secret).await.unwrap();
        let mut second = TestClient::handshake(spawn_conn(&server, 64 * 1024), &secret).await.unwrap();
        assert!(matches!(first.recv().await, Err(FrameError::Closed)));
        assert!(server.is_connected(&second.key));
        assert_eq!(server.stats().connected_clients, 1);

        let (mut other, _) = connect(&server).await;
        other.send(&Frame::send_packet(&second.key, b"to the new one")).await;
        let f = second.recv_non_keepalive().await.unwrap();
        assert_eq!(&f.body[32..], b"to the new one");
        // The replaced connection did not make the key look gone.
        other.expect_silence(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn disconnect_closes_and_sends_peer_gone() {
        let server = server_with(admit_all());
        let (mut a, _) = connect(&server).await;
        let (mut b, _) = connect(&server).await;
        a.send(&Frame::send_packet(&b.key, b"x")).await;
        let _ = b.recv_non_keepalive().await.unwrap();

        assert!(server.disconnect(&b.key));
        assert!(!server.is_connected(&b.key));
        assert!(!server.disconnect(&b.key));
        assert!(matches!(b.recv_non_keepalive().await, Err(FrameError::Closed)));
        let f = a.recv_non_keepalive().await.unwrap();
        assert_eq!(parse_peer_gone(&f.body).unwrap(), (b.key, 0));
    }

    #[tokio::test]
    async fn ping_pong_and_ignored_frames() {
        let server = server_with(admit_all());
        let (mut a, _) = connect(&server).await;
        let (mut b, _) = connect(&server).await;

        // Frames real Go clients may send; all must be tolerated.
        a.send(&Frame::new(FrameType::NotePreferred, vec![1u8])).await;
        a.send(&Frame::new(FrameType::WatchConns, Bytes::new())).await;
        a.send(&Frame::new(FrameType::ClosePeer, vec![0u8; 32])).await;
        a.send(&Frame::new(FrameType::ForwardPacket, vec![0u8; 70])).await;
        a.send(&Frame::new(FrameType::Pong, vec![0u8; 8])).await;
        a.send(&Frame::new(FrameType::KeepAlive, Bytes::new())).await;
        a.send(&Frame { kind: 0x7e, body: Bytes::from_static(b"??") }).await;
        a.send(&Frame::new(FrameType::Ping, vec![1u8, 2])).await; // short: ignored
        a.send(&Frame::new(FrameType::SendPacket, vec![0u8; 5])).await; // short: dropped

        a.send(&Frame::ping(*b"pingpong")).await;
        let f = a.recv_non_keepalive().await.unwrap();
        assert_eq!(f.frame_type(), Some(FrameType::Pong));
        assert_eq!(&f.body[..], b"pingpong");

        a.send(&Frame::send_packet(&b.key, b"after noise")).await;
        let f = b.recv_non_keepalive().await.unwrap();
        assert_eq!(&f.body[32..], b"after noise");
    }

    #[tokio::test]
    async fn keepalive_is_sent() {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        let server = Arc::new(DerpServer::new(k, admit_all()).with_keepalive_interval(Duration::from_millis(50)));
        let (mut a, _) = connect(&server).await;
        let f = a.recv().await.unwrap();
        assert_eq!(f.frame_type(), Some(FrameType::KeepAlive));
        assert!(f.body.is_empty());
    }

    #[tokio::test]
    async fn slow_client_does_not_block_others() {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        let server = Arc::new(DerpServer::new(k, admit_all()).with_queue_depth(4));
        let (mut a, _) = connect(&server).await;
        let (mut c, _) = connect(&server).await;
        // The slow client has a tiny pipe and never reads after the handshake.
        let slow_secret = new_secret();
        let slow = TestClient::handshake(spawn_conn(&server, 1024), &slow_secret).await.unwrap();

        let payload = vec![0xaa; 1000];
        for _ in 0..200 {
            a.send(&Frame::send_packet(&slow.key, &payload)).await;
        }
        a.send(&Frame::send_packet(&c.key, b"not blocked")).await;
        let f = c.recv_non_keepalive().await.unwrap();
        assert_eq!(&f.body[32..], b"not blocked");
        let st = server.stats();
        assert!(st.packets_dropped > 0, "{st:?}");
        assert!(server.is_connected(&slow.key));
    }
}
