//! DERP wire framing: frame types, the `type · length · body` encoding, and
//! helpers to build and parse the frame bodies the relay uses.
//!
//! Every frame is a one-byte type, a big-endian `u32` body length and the
//! body. Bodies larger than [`MAX_FRAME_LEN`] are refused: the peer is
//! misbehaving and the connection should be closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The magic prefix of a ServerKey frame body: `"DERP🔑"` in UTF-8.
pub const MAGIC: [u8; 8] = [0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91];

/// The DERP protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame body accepted or produced (64 KiB).
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Size of a frame header: one type byte plus a four-byte length.
pub const HEADER_LEN: usize = 5;

/// Size of a Curve25519 public key.
pub const KEY_LEN: usize = 32;

/// Size of a NaCl box nonce.
pub const NONCE_LEN: usize = 24;

/// Size of the authentication tag of a NaCl box.
pub const BOX_TAG_LEN: usize = 16;

/// Size of a Ping/Pong payload.
pub const PING_LEN: usize = 8;

/// Size of a ServerKey frame body (magic + key).
pub const SERVER_KEY_LEN: usize = MAGIC.len() + KEY_LEN;

/// Size of a PeerGone frame body (key + reason byte).
pub const PEER_GONE_LEN: usize = KEY_LEN + 1;

/// The frame types of the DERP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// S→C, first frame: magic + server public key.
    ServerKey = 0x01,
    /// C→S: client key, nonce and the sealed client information.
    ClientInfo = 0x02,
    /// S→C: nonce and the sealed server information.
    ServerInfo = 0x03,
    /// C→S: destination key + packet.
    SendPacket = 0x04,
    /// S→C: source key + packet.
    RecvPacket = 0x05,
    /// S→C: no content; keeps the connection alive.
    KeepAlive = 0x06,
    /// C→S: one byte, whether this is the client's preferred (home) server.
    NotePreferred = 0x07,
    /// S→C: a peer this client sent to has left (key + reason).
    PeerGone = 0x08,
    /// S→C (mesh watchers): a peer connected.
    PeerPresent = 0x09,
    /// Mesh: packet forwarded between servers of one region.
    ForwardPacket = 0x0a,
    /// C→S (mesh): subscribe to connect/disconnect notifications.
    WatchConns = 0x10,
    /// C→S (mesh): ask the server to close a peer's connection.
    ClosePeer = 0x11,
    /// Either direction: 8-byte payload that asks for a Pong.
    Ping = 0x12,
    /// Either direction: answer to a Ping, echoing its payload.
    Pong = 0x13,
    /// S→C: health message.
    Health = 0x14,
    /// S→C: the server is restarting.
    Restarting = 0x15,
}

impl FrameType {
    /// Map a wire byte to a known frame type.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x01 => Self::ServerKey,
            0x02 => Self::ClientInfo,
            0x03 => Self::ServerInfo,
            0x04 => Self::SendPacket,
            0x05 => Self::RecvPacket,
            0x06 => Self::KeepAlive,
            0x07 => Self::NotePreferred,
            0x08 => Self::PeerGone,
            0x09 => Self::PeerPresent,
            0x0a => Self::ForwardPacket,
            0x10 => Self::WatchConns,
            0x11 => Self::ClosePeer,
            0x12 => Self::Ping,
            0x13 => Self::Pong,
            0x14 => Self::Health,
            0x15 => Self::Restarting,
            _ => return None,
        })
    }

    /// The wire byte of this frame type.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Why a peer is reported gone in a PeerGone frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerGoneReason {
    /// The peer was connected and has disconnected.
    Disconnected = 0,
    /// The peer is not connected to this server.
    NotHere = 1,
}

/// Errors from reading, writing or interpreting DERP frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared body length is larger than allowed.
    #[error("DERP frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer closed the connection cleanly between frames.
    #[error("DERP connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("DERP connection closed in the middle of a frame")]
    Truncated,
    /// An I/O error on the underlying connection.
    #[error("I/O error on DERP connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame body has the wrong size for its type.
    #[error("{frame:?} frame body has {len} bytes, expected {expected}")]
    BadLength {
        /// The frame type whose body is malformed.
        frame: FrameType,
        /// The body length received.
        len: usize,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// A ServerKey frame does not start with the DERP magic.
    #[error("ServerKey frame does not start with the DERP magic")]
    BadMagic,
}

/// One DERP frame: its type byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The raw type byte (may be a type this crate does not know).
    pub kind: u8,
    /// The frame body, without the header.
    pub body: Bytes,
}

impl Frame {
    /// Build a frame of a known type.
    pub fn new(kind: FrameType, body: impl Into<Bytes>) -> Self {
        Self { kind: kind.as_u8(), body: body.into() }
    }

    /// The frame type, if it is one this crate knows.
    pub fn frame_type(&self) -> Option<FrameType> {
        FrameType::from_u8(self.kind)
    }

    /// Number of bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// ServerKey: magic followed by the server's public key.
    pub fn server_key(server_public: &[u8; KEY_LEN]) -> Self {
        let mut body = BytesMut::with_capacity(SERVER_KEY_LEN);
        body.put_slice(&MAGIC);
        body.put_slice(server_public);
        Self::new(FrameType::ServerKey, body.freeze())
    }

    /// ClientInfo: client public key, nonce and sealed JSON.
    pub fn client_info(client_public: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], sealed: &[u8]) -> Self {
        let mut body = BytesMut::with_capacity(KEY_LEN + NONCE_LEN + sealed.len());
        body.put_slice(client_public);
        body.put_slice(nonce);
        body.put_slice(sealed);
        Self::new(FrameType::ClientInfo, body.freeze())
    }

    /// ServerInfo: nonce followed by the sealed JSON.
    pub fn server_info(nonce: &[u8; NONCE_LEN], sealed: &[u8]) -> Self {
        let mut body = BytesMut::with_capacity(NONCE_LEN + sealed.len());
        body.put_slice(nonce);
        body.put_slice(sealed);
        Self::new(FrameType::ServerInfo, body.freeze())
    }

    /// SendPacket: destination key followed by the packet.
    pub fn send_packet(dst: &[u8; KEY_LEN], packet: &[u8]) -> Self {
        Self::keyed(FrameType::SendPacket, dst, packet)
    }

    /// RecvPacket: source key followed by the packet.
    pub fn recv_packet(src: &[u8; KEY_LEN], packet: &[u8]) -> Self {
        Self::keyed(FrameType::RecvPacket, src, packet)
    }

    /// PeerGone: the departed peer's key and the reason (always 33 bytes).
    pub fn peer_gone(peer: &[u8; KEY_LEN], reason: PeerGoneReason) -> Self {
        Self::keyed(FrameType::PeerGone, peer, &[reason as u8])
    }

    /// KeepAlive with an empty body.
    pub fn keep_alive() -> Self {
        Self::new(FrameType::KeepAlive, Bytes::new())
    }

    /// Ping carrying an 8-byte payload.
    pub fn ping(payload: [u8; PING_LEN]) -> Self {
        Self::new(FrameType::Ping, Bytes::copy_from_slice(&payload))
    }

    /// Pong echoing an 8-byte payload.
    pub fn pong(payload: [u8; PING_LEN]) -> Self {
        Self::new(FrameType::Pong, Bytes::copy_from_slice(&payload))
    }

    fn keyed(kind: FrameType, key: &[u8; KEY_LEN], rest: &[u8]) -> Self {
        let mut body = BytesMut::with_capacity(KEY_LEN + rest.len());
        body.put_slice(key);
        body.put_slice(rest);
        Self::new(kind, body.freeze())
    }
}

/// The parsed body of a ClientInfo frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's node public key.
    pub key: [u8; KEY_LEN],
    /// The nonce of the sealed box.
    pub nonce: [u8; NONCE_LEN],
    /// The sealed JSON (ciphertext including the tag).
    pub sealed: Bytes,
}

impl ClientInfo {
    /// Split a ClientInfo body into key, nonce and sealed box.
    pub fn parse(body: &Bytes) -> Result<Self, FrameError> {
        if body.len() < KEY_LEN + NONCE_LEN + BOX_TAG_LEN {
            return Err(FrameError::BadLength {
                frame: FrameType::ClientInfo,
                len: body.len(),
                expected: "at least 72 (key, nonce, sealed box)",
            });
        }
        let key = take_key(body);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[KEY_LEN..KEY_LEN + NONCE_LEN]);
        Ok(Self { key, nonce, sealed: body.slice(KEY_LEN + NONCE_LEN..) })
    }
}

fn take_key(body: &[u8]) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&body[..KEY_LEN]);
    key
}

/// Split a body made of a 32-byte key followed by a payload (SendPacket,
/// RecvPacket).
pub fn parse_keyed(frame: FrameType, body: &Bytes) -> Result<([u8; KEY_LEN], Bytes), FrameError> {
    if body.len() < KEY_LEN {
        return Err(FrameError::BadLength { frame, len: body.len(), expected: "at least 32 (key)" });
    }
    Ok((take_key(body), body.slice(KEY_LEN..)))
}

/// Extract the server public key from a ServerKey body, checking the magic.
pub fn parse_server_key(body: &[u8]) -> Result<[u8; KEY_LEN], FrameError> {
    if body.len() < SERVER_KEY_LEN {
        return Err(FrameError::BadLength {
            frame: FrameType::ServerKey,
            len: body.len(),
            expected: "at least 40 (magic, key)",
        });
    }
    if body[..MAGIC.len()] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    Ok(take_key(&body[MAGIC.len()..]))
}

/// Extract the key and reason byte of a PeerGone body.
pub fn parse_peer_gone(body: &[u8]) -> Result<([u8; KEY_LEN], u8), FrameError> {
    if body.len() != PEER_GONE_LEN {
        return Err(FrameError::BadLength {
            frame: FrameType::PeerGone,
            len: body.len(),
            expected: "exactly 33 (key, reason)",
        });
    }
    Ok((take_key(body), body[KEY_LEN]))
}

/// Extract the 8-byte payload of a Ping or Pong body. Extra bytes are ignored.
pub fn parse_ping(frame: FrameType, body: &[u8]) -> Result<[u8; PING_LEN], FrameError> {
    if body.len() < PING_LEN {
        return Err(FrameError::BadLength { frame, len: body.len(), expected: "at least 8" });
    }
    let mut payload = [0u8; PING_LEN];
    payload.copy_from_slice(&body[..PING_LEN]);
    Ok(payload)
}

fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_LEN });
    }
    Ok(())
}

/// Append the wire encoding of `frame` to `dst`.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    check_len(frame.body.len())?;
    dst.reserve(frame.encoded_len());
    dst.put_u8(frame.kind);
    dst.put_u32(frame.body.len() as u32);
    dst.put_slice(&frame.body);
    Ok(())
}

/// Take one complete frame off the front of `src`.
///
/// Returns `Ok(None)` when more bytes are needed. An oversized length is
/// reported as soon as the header is available.
pub fn decode_frame(src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if src.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = src[0];
    let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
    check_len(len)?;
    if src.len() < HEADER_LEN + len {
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let body = src.split_to(len).freeze();
    Ok(Some(Frame { kind, body }))
}

/// Read one frame from `reader`.
///
/// A clean end of stream before the first header byte gives
/// [`FrameError::Closed`]; an end of stream inside a frame gives
/// [`FrameError::Truncated`].
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(reader: &mut R) -> Result<Frame, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 { FrameError::Closed } else { FrameError::Truncated });
        }
        filled += n;
    }
    let kind = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    check_len(len)?;
    let mut body = BytesMut::zeroed(len);
    if len > 0 {
        reader.read_exact(&mut body).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Truncated
            } else {
                FrameError::Io(e)
            }
        })?;
    }
    Ok(Frame { kind, body: body.freeze() })
}

/// Write one frame to `writer` (without flushing).
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(writer: &mut W, frame: &Frame) -> Result<(), FrameError> {
    check_len(frame.body.len())?;
    let mut header = [0u8; HEADER_LEN];
    header[0] = frame.kind;
    header[1..].copy_from_slice(&(frame.body.len() as u32).to_be_bytes());
    writer.write_all(&header).await?;
    writer.write_all(&frame.body).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_type_round_trip() {
        for v in 0u8..=255 {
            if let Some(t) = FrameType::from_u8(v) {
                assert_eq!(t.as_u8(), v);
            }
        }
        assert_eq!(FrameType::from_u8(0x0a), Some(FrameType::ForwardPacket));
        assert_eq!(FrameType::from_u8(0x15), Some(FrameType::Restarting));
        assert_eq!(FrameType::from_u8(0x0b), None);
        assert_eq!(FrameType::from_u8(0x00), None);
    }

    #[test]
    fn magic_is_derp_key_emoji() {
        assert_eq!(&MAGIC[..], "DERP🔑".as_bytes());
    }

    #[test]
    fn encode_decode_round_trip() {
        let frames = vec![
            Frame::server_key(&[7u8; 32]),
            Frame::recv_packet(&[1u8; 32], b"hello"),
            Frame::keep_alive(),
            Frame::peer_gone(&[9u8; 32], PeerGoneReason::Disconnected),
            Frame::pong(*b"12345678"),
            Frame { kind: 0x7f, body: Bytes::from_static(b"unknown") },
            Frame::new(FrameType::SendPacket, vec![0u8; MAX_FRAME_LEN]),
        ];
        let mut buf = BytesMut::new();
        for f in &frames {
            encode_frame(f, &mut buf).unwrap();
        }
        let total: usize = frames.iter().map(Frame::encoded_len).sum();
        assert_eq!(buf.len(), total);

        // Feed byte by byte up to the first frame boundary: must wait.
        let mut partial = BytesMut::from(&buf[..HEADER_LEN + 3]);
        assert!(decode_frame(&mut partial).unwrap().is_none());
        let mut partial = BytesMut::from(&buf[..2]);
        assert!(decode_frame(&mut partial).unwrap().is_none());

        let mut decoded = Vec::new();
        while let Some(f) = decode_frame(&mut buf).unwrap() {
            decoded.push(f);
        }
        assert!(buf.is_empty());
        assert_eq!(decoded, frames);
    }

    #[test]
    fn wire_layout() {
        let mut buf = BytesMut::new();
        encode_frame(&Frame::keep_alive(), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0x06, 0, 0, 0, 0]);

        let mut buf = BytesMut::new();
        encode_frame(&Frame::peer_gone(&[0xab; 32], PeerGoneReason::Disconnected), &mut buf).unwrap();
        assert_eq!(buf[0], 0x08);
        assert_eq!(&buf[1..5], &33u32.to_be_bytes());
        assert_eq!(buf.len(), 5 + 33);
        assert_eq!(buf[5 + 32], 0);

        let sk = Frame::server_key(&[3u8; 32]);
        assert_eq!(sk.body.len(), 40);
        assert_eq!(parse_server_key(&sk.body).unwrap(), [3u8; 32]);
    }

    #[test]
    fn oversize_rejected() {
        let mut buf = BytesMut::new();
        let big = Frame::new(FrameType::SendPacket, vec![0u8; MAX_FRAME_LEN + 1]);
        assert!(matches!(
            encode_frame(&big, &mut buf),
            Err(FrameError::TooLarge { len, .. }) if len == MAX_FRAME_LEN + 1
        ));

        let mut header = BytesMut::new();
        header.put_u8(0x04);
        header.put_u32((MAX_FRAME_LEN + 1) as u32);
        assert!(matches!(decode_frame(&mut header.clone()), Err(FrameError::TooLarge { .. })));
        let mut huge = BytesMut::new();
        huge.put_u8(0x04);
        huge.put_u32(u32::MAX);
        assert!(matches!(decode_frame(&mut huge), Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn async_read_write() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let f = Frame::recv_packet(&[5u8; 32], &[1, 2, 3]);
        write_frame(&mut a, &f).await.unwrap();
        write_frame(&mut a, &Frame::keep_alive()).await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), f);
        assert_eq!(read_frame(&mut b).await.unwrap(), Frame::keep_alive());
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn async_read_rejects_oversize_and_truncation() {
        let mut data: &[u8] = &[0x04, 0x00, 0x01, 0x00, 0x01];
        assert!(matches!(read_frame(&mut data).await, Err(FrameError::TooLarge { len: 65537, .. })));
        let mut data: &[u8] = &[0x04, 0x00, 0x00, 0x00, 0x10, 1, 2, 3];
        assert!(matches!(read_frame(&mut data).await, Err(FrameError::Truncated)));
        let mut data: &[u8] = &[0x04, 0x00];
        assert!(matches!(read_frame(&mut data).await, Err(FrameError::Truncated)));
    }

    #[test]
    fn body_parsers() {
        let ci = Frame::client_info(&[1u8; 32], &[2u8; 24], &[3u8; 40]);
        let parsed = ClientInfo::parse(&ci.body).unwrap();
        assert_eq!(parsed.key, [1u8; 32]);
        assert_eq!(parsed.nonce, [2u8; 24]);
        assert_eq!(&parsed.sealed[..], &[3u8; 40]);
        assert!(ClientInfo::parse(&Bytes::from_static(&[0u8; 71])).is_err());

        let sp = Frame::send_packet(&[4u8; 32], b"xyz");
        let (dst, pkt) = parse_keyed(FrameType::SendPacket, &sp.body).unwrap();
        assert_eq!(dst, [4u8; 32]);
        assert_eq!(&pkt[..], b"xyz");
        assert!(parse_keyed(FrameType::SendPacket, &Bytes::from_static(&[0u8; 31])).is_err());

        let pg = Frame::peer_gone(&[6u8; 32], PeerGoneReason::NotHere);
        assert_eq!(parse_peer_gone(&pg.body).unwrap(), ([6u8; 32], 1));
        assert!(parse_peer_gone(&[0u8; 32]).is_err());

        assert_eq!(parse_ping(FrameType::Ping, b"abcdefghij").unwrap(), *b"abcdefgh");
        assert!(parse_ping(FrameType::Ping, b"abc").is_err());
        assert!(matches!(parse_server_key(&[0u8; 40]), Err(FrameError::BadMagic)));
    }
}
