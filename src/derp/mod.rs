//! Embedded DERP relay: the packet relay Tailscale clients fall back to when
//! no direct path exists, plus the STUN server they use to discover their
//! public address.
//!
//! * [`DerpServer`] runs the DERP protocol on upgraded connections.
//! * [`handle`] is the hyper handler for `/derp`, `/derp/latency-check` and
//!   `/derp/probe`.
//! * [`serve_tls`] runs a TLS listener serving that handler.
//! * [`serve_stun`] answers STUN Binding Requests on a UDP socket.

pub mod frame;
pub mod http;
pub mod server;
pub mod stun;
pub mod tls;

pub use self::frame::{Frame, FrameError, FrameType, PeerGoneReason, MAGIC, MAX_FRAME_LEN, PROTOCOL_VERSION};
pub use self::http::handle;
pub use self::server::{admit_all, Admission, ConnError, DerpServer, DerpStats};
pub use self::stun::serve_stun;
pub use self::tls::serve_tls;
