//! `POST /ts2021`: checks the client's Noise initiation, answers `101 Switching Protocols`,
//! finishes the handshake on the raw connection, sends the early payload and then serves
//! HTTP/2 (`crate::http2`) inside the Noise channel for as long as the client keeps it open.

use std::sync::Arc;

use base64::Engine;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::{route, Control, MAX_BODY};
use crate::http2::{self, HandlerFuture};
use crate::listen::Slot;
use crate::log_rate::{LogRate, PERIOD};
use crate::noise::{self, early_payload, Initiation, NoiseStream};
use crate::response::{empty, text, Body};

/// The upgrade protocol name clients ask for.
const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
const HANDSHAKE_HEADER: &str = "x-tailscale-handshake";

/// Refused handshakes, logged at most once per period: anyone can send one.
static REFUSED: LogRate = LogRate::new(PERIOD);

/// Handles the upgrade request.
pub async fn upgrade(ctrl: Arc<Control>, req: Request<Incoming>) -> Response<Body> {
    let wants_upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !wants_upgrade {
        return text(StatusCode::BAD_REQUEST, "expected Upgrade: tailscale-control-protocol");
    }
    let Some(raw) = req
        .headers()
        .get(HANDSHAKE_HEADER)
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.as_bytes()).ok())
    else {
        return text(StatusCode::BAD_REQUEST, "missing or invalid X-Tailscale-Handshake header");
    };
    let accepted = match Initiation::parse(&raw).and_then(|init| noise::accept(&ctrl.noise_key, &init)) {
        Ok(a) => a,
        Err(e) => {
            if let Some(left_out) = REFUSED.allow() {
                tracing::info!(error = %e, left_out, "ts2021 handshake refused");
            }
            return text(StatusCode::BAD_REQUEST, &format!("handshake refused: {e}"));
        }
    };
    let machine_key = accepted.machine_key;
    // The channel keeps the connection's slot for as long as it lives.
    let slot = req.extensions().get::<Slot>().cloned();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "ts2021 upgrade did not complete");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        if io.write_all(&accepted.response).await.is_err() {
            return;
        }
        let mut stream = NoiseStream::new(io, &accepted.rx_key, &accepted.tx_key);
        if stream.write_all(&early_payload()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        tracing::debug!(%machine_key, version = accepted.version, "control channel open");
        let handle = move |req| -> HandlerFuture { Box::pin(route(ctrl.clone(), machine_key, req)) };
        if let Err(e) = http2::serve(stream, MAX_BODY, handle).await {
            tracing::debug!(%machine_key, error = %e, "control channel closed with an error");
        }
    });
    let mut resp = empty(StatusCode::SWITCHING_PROTOCOLS);
    resp.headers_mut().insert(http::header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}
