//! HTTP glue for the DERP relay: the `/derp` upgrade endpoint and the
//! latency-check / probe endpoints, as a hyper request handler.
//!
//! Serve it from a hyper HTTP/1 connection built with `.with_upgrades()`.
//! Routing looks only at the URI path, so absolute-form requests
//! (`POST https://host:port/derp`) work too.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::frame::PROTOCOL_VERSION;
use super::server::DerpServer;

/// Path of the DERP upgrade endpoint.
pub const DERP_PATH: &str = "/derp";
/// Path clients use to measure latency.
pub const LATENCY_CHECK_PATH: &str = "/derp/latency-check";
/// Path used by probers.
pub const PROBE_PATH: &str = "/derp/probe";
/// Captive-portal check path.
pub const GENERATE_204_PATH: &str = "/generate_204";

const CHALLENGE_HEADER: &str = "x-tailscale-challenge";
const CHALLENGE_RESPONSE_HEADER: &str = "x-tailscale-response";

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Whether the request asks for a `DERP` protocol upgrade.
pub fn wants_derp_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("derp"))
}

/// Handle one HTTP request aimed at the DERP server.
///
/// * `GET|HEAD /derp/latency-check` and `/derp/probe`: 200, empty body.
/// * `GET|POST /derp` with `Upgrade: DERP`: 101, then the DERP protocol runs
///   on the upgraded connection in a spawned task.
/// * `/derp` without the upgrade: 426.
/// * `GET /generate_204`: 204 (captive-portal check).
/// * anything else: 404.
pub async fn handle<B>(server: Arc<DerpServer>, mut req: Request<B>) -> Response<Full<Bytes>>
where
    B: Send + 'static,
{
    let path = req.uri().path().to_owned();
    match path.as_str() {
        LATENCY_CHECK_PATH | PROBE_PATH => {
            if req.method() == Method::GET || req.method() == Method::HEAD {
                let mut resp = empty(StatusCode::OK);
                resp.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                resp
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, "bogus probe method\n")
            }
        }
        GENERATE_204_PATH => {
            let mut resp = empty(StatusCode::NO_CONTENT);
            if let Some(challenge) = req.headers().get(CHALLENGE_HEADER).and_then(|v| v.to_str().ok()) {
                let valid = !challenge.is_empty()
                    && challenge.len() <= 64
                    && challenge.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
                if valid {
                    if let Ok(v) = HeaderValue::from_str(&format!("response {challenge}")) {
                        resp.headers_mut().insert(CHALLENGE_RESPONSE_HEADER, v);
                    }
                }
            }
            resp
        }
        DERP_PATH => {
            if !wants_derp_upgrade(&req) {
                return text(StatusCode::UPGRADE_REQUIRED, "DERP requires connection upgrade\n");
            }
            if req.method() != Method::GET && req.method() != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "DERP upgrade needs GET or POST\n");
            }
            // The relayed connection keeps the slot of the connection it came on.
            let slot = req.extensions().get::<crate::listen::Slot>().cloned();
            let on_upgrade = hyper::upgrade::on(&mut req);
            let server_for_task = server.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match on_upgrade.await {
                    Ok(upgraded) => server_for_task.serve_conn(TokioIo::new(upgraded)).await,
                    Err(e) => debug!(error = %e, "DERP HTTP upgrade failed"),
                }
            });
            let mut resp = empty(StatusCode::SWITCHING_PROTOCOLS);
            let headers = resp.headers_mut();
            headers.insert(UPGRADE, HeaderValue::from_static("DERP"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert("derp-version", HeaderValue::from(PROTOCOL_VERSION));
            if let Ok(v) = HeaderValue::from_str(&hex::encode(server.public_key())) {
                headers.insert("derp-public-key", v);
            }
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derp::server::admit_all;

    fn server() -> Arc<DerpServer> {
        Arc::new(DerpServer::new([1u8; 32], admit_all()))
    }

    fn req(method: Method, uri: &str, upgrade: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri).header("host", "127.0.0.1");
        if let Some(u) = upgrade {
            b = b.header("upgrade", u).header("connection", "Upgrade");
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn routes_without_upgrade() {
        let s = server();
        let r = handle(s.clone(), req(Method::GET, "https://127.0.0.1:4433/derp/latency-check", None)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = handle(s.clone(), req(Method::HEAD, "/derp/probe", None)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = handle(s.clone(), req(Method::POST, "/derp/probe", None)).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = handle(s.clone(), req(Method::POST, "https://127.0.0.1:4433/derp", None)).await;
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        let r = handle(s.clone(), req(Method::GET, "/derp", Some("websocket"))).await;
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        let r = handle(s.clone(), req(Method::GET, "/nope", None)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = handle(s.clone(), req(Method::GET, "/derp/", None)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = handle(s.clone(), req(Method::PUT, "/derp", Some("DERP"))).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

        let mut q = req(Method::GET, "/generate_204", None);
        q.headers_mut().insert(CHALLENGE_HEADER, HeaderValue::from_static("abc-123"));
        let r = handle(s.clone(), q).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()[CHALLENGE_RESPONSE_HEADER], "response abc-123");
    }

    #[tokio::test]
    async fn upgrade_response_headers() {
        let s = server();
        for up in ["DERP", "derp", "Derp"] {
            let r = handle(s.clone(), req(Method::POST, "https://127.0.0.1:4433/derp", Some(up))).await;
            assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(r.headers()[UPGRADE], "DERP");
            assert_eq!(r.headers()[CONNECTION], "Upgrade");
            assert_eq!(r.headers()["derp-version"], "2");
        }
    }
}
