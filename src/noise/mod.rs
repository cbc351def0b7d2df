//! ts2021: the Noise IK handshake that opens the control channel, and the record layer that
//! carries HTTP/2 inside it. Tailscale's record layer is its own (big-endian nonces, 4 KiB
//! frames), so snow runs the handshake (with X25519 from aws-lc) and the records are sealed
//! here.

mod handshake;
mod stream;

pub use handshake::{accept, early_payload, Accepted, Initiation, INITIATION_LEN};
pub use stream::{decode_frames, NoiseStream, MAX_FRAME_LEN, MAX_PLAINTEXT_LEN};

/// The handshake or a record could not be processed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("handshake header is {0} bytes, expected {INITIATION_LEN}")]
    BadInitiationLength(usize),
    #[error("handshake message type {0:#04x} is not an initiation (0x01)")]
    BadMessageType(u8),
    #[error("handshake payload length {0} is not 96")]
    BadPayloadLength(u16),
    #[error("client capability version {0} is older than the oldest supported ({1})")]
    TooOld(u16, u16),
    #[error("handshake failed: {0}")]
    Handshake(#[from] snow::Error),
    #[error("record type {0:#04x} is not a transport record (0x04)")]
    BadRecordType(u8),
    #[error("record of {0} bytes is larger than the maximum frame")]
    Oversized(usize),
    #[error("record could not be decrypted")]
    Decrypt,
    #[error("record could not be sealed")]
    Seal,
    #[error("nonce counter exhausted")]
    NonceExhausted,
}

impl From<NoiseError> for std::io::Error {
    fn from(e: NoiseError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}
