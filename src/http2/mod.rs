//! A small HTTP/2 server (RFC 9113) for the control connections inside the Noise channel.
//! Each connected node keeps one of these open for as long as it is online, mostly idle
//! between map updates, so it is built to hold nothing sized for traffic while idle: its read
//! and write buffers exist only while they hold bytes, and streams are polled inside the
//! connection's own task. It speaks what Tailscale clients use: requests with bodies,
//! streamed responses under flow control, SETTINGS, PING and GOAWAY; no server push.

mod conn;
pub mod frame;
mod headers;

pub use conn::{serve, Connection, HandlerFuture, BODY_TIMEOUT, IDLE_TIMEOUT, MAX_HEADER_LIST, PREFACE_TIMEOUT};
pub use frame::Reason;
pub use headers::encode_fields;

/// Why a connection ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("client did not open with the HTTP/2 preface")]
    BadPreface,
    #[error("HTTP/2 protocol error ({0:?}): {1}")]
    Protocol(Reason, &'static str),
    #[error("connection timed out: {0}")]
    TimedOut(&'static str),
}
