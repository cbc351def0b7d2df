//! The ts2021 record layer: `0x04` · u16 BE length · ChaCha20-Poly1305 ciphertext, at most
//! 4096 bytes a frame, nonces of four zero bytes and a big-endian counter. `NoiseStream`
//! wraps a byte stream so HTTP/2 can run inside it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::NoiseError;

const RECORD_TYPE: u8 = 0x04;
const HEADER_LEN: usize = 3;
const TAG_LEN: usize = 16;
/// The largest frame on the wire, header included.
pub const MAX_FRAME_LEN: usize = 4096;
/// The most plaintext one frame carries.
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - HEADER_LEN - TAG_LEN;
/// The most plaintext one write seals before it is sent (16 records).
const WRITE_BATCH: usize = 16 * MAX_PLAINTEXT_LEN;

/// One direction's cipher and nonce counter. ChaCha20-Poly1305 comes from aws-lc, whose
/// vectorised assembly seals a 4 KiB record about twice as fast as a portable implementation;
/// every byte of every map goes through it.
struct Cipher {
    aead: LessSafeKey,
    counter: u64,
}

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("ChaCha20-Poly1305 takes a 32-byte key");
        Cipher { aead: LessSafeKey::new(key), counter: 0 }
    }

    fn next_nonce(&mut self) -> Result<Nonce, NoiseError> {
        if self.counter == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// Seals `plain` (at most `MAX_PLAINTEXT_LEN` bytes) into one frame appended to `out`.
fn seal(cipher: &mut Cipher, plain: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
    debug_assert!(plain.len() <= MAX_PLAINTEXT_LEN);
    let nonce = cipher.next_nonce()?;
    let start = out.len();
    out.push(RECORD_TYPE);
    out.extend_from_slice(&((plain.len() + TAG_LEN) as u16).to_be_bytes());
    let body = out.len();
    out.extend_from_slice(plain);
    let tag =
        cipher.aead.seal_in_place_separate_tag(nonce, Aad::empty(), &mut out[body..]).map_err(|_| NoiseError::Seal)?;
    out.extend_from_slice(tag.as_ref());
    debug_assert!(out.len() - start <= MAX_FRAME_LEN);
    Ok(())
}

/// If `buf` starts with a whole frame, removes it and returns its plaintext.
fn open_frame(cipher: &mut Cipher, buf: &mut BytesMut) -> Result<Option<BytesMut>, NoiseError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != RECORD_TYPE {
        return Err(NoiseError::BadRecordType(buf[0]));
    }
    let len = u16::from_be_bytes([buf[1], buf[2]]) as usize;
    if len + HEADER_LEN > MAX_FRAME_LEN {
        return Err(NoiseError::Oversized(len + HEADER_LEN));
    }
    if len < TAG_LEN {
        return Err(NoiseError::Decrypt);
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let mut body = buf.split_to(len);
    let nonce = cipher.next_nonce()?;
    cipher.aead.open_in_place(nonce, Aad::empty(), &mut body).map_err(|_| NoiseError::Decrypt)?;
    body.truncate(len - TAG_LEN);
    Ok(Some(body))
}

/// A byte stream carried in ts2021 records over `io`.
pub struct NoiseStream<IO> {
    io: IO,
    rx: Cipher,
    tx: Cipher,
    incoming: BytesMut,
    plain: BytesMut,
    outgoing: Vec<u8>,
    written: usize,
}

impl<IO> NoiseStream<IO> {
    /// Wraps `io` with the keys a completed handshake produced.
    pub fn new(io: IO, rx_key: &[u8; 32], tx_key: &[u8; 32]) -> Self {
        NoiseStream {
            io,
            rx: Cipher::new(rx_key),
            tx: Cipher::new(tx_key),
            incoming: BytesMut::new(),
            plain: BytesMut::new(),
            outgoing: Vec::new(),
            written: 0,
        }
    }
}

impl<IO: AsyncWrite + Unpin> NoiseStream<IO> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        // An idle connection keeps no buffer.
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for NoiseStream<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(out.remaining());
                out.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                if this.plain.is_empty() {
                    // Let go of the buffer it was split from.
                    this.plain = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(plain) = open_frame(&mut this.rx, &mut this.incoming)? {
                this.plain = plain;
                if this.incoming.is_empty() {
                    // An idle connection holds no read buffer.
                    this.incoming = BytesMut::new();
                }
                continue;
            }
            let mut chunk = [0u8; MAX_FRAME_LEN];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return if this.incoming.is_empty() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a record")))
                };
            }
            this.incoming.extend_from_slice(rb.filled());
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for NoiseStream<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        // Seal as many whole records as one batch holds, so a large message costs one write
        // to the socket per batch rather than one per 4 KiB record.
        let n = buf.len().min(WRITE_BATCH);
        // The batch's room at once: growing by doubling would copy it several times.
        this.outgoing.reserve(n.div_ceil(MAX_PLAINTEXT_LEN) * MAX_FRAME_LEN);
        for chunk in buf[..n].chunks(MAX_PLAINTEXT_LEN) {
            seal(&mut this.tx, chunk, &mut this.outgoing)?;
        }
        // Start sending now; whatever remains goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Decodes every complete frame in `data` with a fresh cipher; used by the fuzz target.
pub fn decode_frames(key: &[u8; 32], data: &[u8]) -> Result<Vec<Vec<u8>>, NoiseError> {
    let mut cipher = Cipher::new(key);
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    while let Some(p) = open_frame(&mut cipher, &mut buf)? {
        out.push(p.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn round_trips_large_writes_across_frames() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let mut server = NoiseStream::new(a, &k1, &k2);
        let mut client = NoiseStream::new(b, &k2, &k1);
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let d = data.clone();
        let w = tokio::spawn(async move {
            client.write_all(&d).await.unwrap();
            client.flush().await.unwrap();
            client
        });
        let mut got = vec![0u8; data.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, data);
        drop(w.await.unwrap());
    }

    #[test]
    fn frames_use_big_endian_nonces_and_reject_tampering() {
        let key = [7u8; 32];
        let mut c = Cipher::new(&key);
        let mut out = Vec::new();
        seal(&mut c, b"hello", &mut out).unwrap();
        seal(&mut c, b"world", &mut out).unwrap();
        assert_eq!(out[0], 0x04);
        assert_eq!(decode_frames(&key, &out).unwrap(), vec![b"hello".to_vec(), b"world".to_vec()]);
        // Nonce 1 for the first frame must fail: order matters.
        let second = out[3 + 5 + 16..].to_vec();
        assert!(matches!(decode_frames(&key, &second), Err(NoiseError::Decrypt)));
        let mut bad = out.clone();
        bad[5] ^= 1;
        assert!(matches!(decode_frames(&key, &bad), Err(NoiseError::Decrypt)));
    }

    #[test]
    fn rejects_oversized_and_wrong_type() {
        let key = [0u8; 32];
        assert!(matches!(decode_frames(&key, &[0x04, 0x10, 0x00]), Err(NoiseError::Oversized(_))));
        assert!(matches!(decode_frames(&key, &[0x02, 0x00, 0x30]), Err(NoiseError::BadRecordType(2))));
        assert!(decode_frames(&key, &[0x04, 0x00]).unwrap().is_empty(), "incomplete header waits for more");
    }
}
