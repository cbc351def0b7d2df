//! The Noise side of the control protocol: the `/ts2021` upgrade, the HTTP/2 server that runs
//! inside the Noise channel, and its handlers. Every handler knows the machine key that
//! completed the handshake and acts only for that machine's nodes.

pub mod dump;
mod poll;
mod register;
mod upgrade;
mod wire;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

pub use upgrade::upgrade;

use crate::mapper::MapContext;
use crate::response::{text, Body};
use crate::state::State;
use crate::tailcfg::{MachineKey, PrivateKey};

/// The largest request body accepted inside the Noise channel.
const MAX_BODY: usize = 1 << 20;

/// What the control handlers share.
pub struct Control {
    pub state: Arc<State>,
    pub noise_key: PrivateKey,
    pub map: MapContext,
}

/// Routes one request inside the Noise channel of `machine_key`; the HTTP/2 layer has read
/// its body (at most `MAX_BODY` bytes).
async fn route(ctrl: Arc<Control>, machine_key: MachineKey, req: Request<Bytes>) -> Response<Body> {
    let post = req.method() == http::Method::POST;
    match req.uri().path() {
        "/machine/register" | "/machine/map" if !post => text(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        "/machine/register" => register::handle(&ctrl, machine_key, req.body()).await,
        "/machine/map" => poll::handle(&ctrl, machine_key, req.body()).await,
        p if p.starts_with("/machine/") => text(StatusCode::NOT_IMPLEMENTED, "not implemented by this server"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}
