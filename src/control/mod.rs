//! The Noise side of the control protocol: the `/ts2021` upgrade, the HTTP/2 server that runs
//! inside the Noise channel, and its handlers. Every handler knows the machine key that
//! completed the handshake and acts only for that machine's nodes.

pub mod dump;
mod poll;
mod register;
mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

pub use upgrade::upgrade;

use crate::http::{text, Body};
use crate::mapper::MapContext;
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

/// Reads a whole request body, refusing one larger than `MAX_BODY`.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(text(StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than 1 MiB"))
        }
        Err(e) => Err(text(StatusCode::BAD_REQUEST, &format!("cannot read request body: {e}"))),
    }
}

/// Routes one request inside the Noise channel of `machine_key`.
async fn route(ctrl: Arc<Control>, machine_key: MachineKey, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let post = req.method() == http::Method::POST;
    Ok(match path.as_str() {
        "/machine/register" | "/machine/map" if !post => text(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        "/machine/register" => match read_body(req).await {
            Ok(body) => register::handle(&ctrl, machine_key, &body).await,
            Err(resp) => resp,
        },
        "/machine/map" => match read_body(req).await {
            Ok(body) => poll::handle(&ctrl, machine_key, &body).await,
            Err(resp) => resp,
        },
        p if p.starts_with("/machine/") => text(StatusCode::NOT_IMPLEMENTED, "not implemented by this server"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    })
}
