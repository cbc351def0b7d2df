//! The main HTTP listener's routes: `/key`, `/ts2021`, `/health`, `/version`,
//! `/register/{id}`, `/verify`, the REST admin API on `/api/v1/*` and the embedded DERP on
//! `/derp*`. Requests may come in absolute form (`POST http://host/path`), so routing looks at
//! the path only.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;

use crate::control::Control;
use crate::derp::DerpServer;
use crate::response::{html, json, text, Body};
use crate::tailcfg::{MachineKey, NodeKey};

/// What the main router needs.
pub struct Router {
    pub control: Arc<Control>,
    pub derp: Option<Arc<DerpServer>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlKeys {
    legacy_public_key: MachineKey,
    public_key: MachineKey,
}

#[derive(serde::Deserialize)]
struct AdmitRequest {
    #[serde(rename = "NodePublic")]
    node_public: NodeKey,
}

#[derive(Serialize)]
struct AdmitResponse {
    #[serde(rename = "Allow")]
    allow: bool,
}

impl Router {
    /// Routes one request of the main listener.
    pub async fn route(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let state = &self.control.state;
        Ok(match (method.as_str(), path.as_str()) {
            ("GET", "/key") => json(
                StatusCode::OK,
                &ControlKeys {
                    legacy_public_key: MachineKey::default(),
                    public_key: MachineKey(self.control.noise_key.public()),
                },
            ),
            ("POST", "/ts2021") => crate::control::upgrade(self.control.clone(), req).await,
            ("GET", "/ts2021") => text(StatusCode::NOT_IMPLEMENTED, "ts2021 over WebSocket is not supported"),
            ("GET", "/health") => health(state.database_ok().await),
            ("GET", "/version") => json(StatusCode::OK, &crate::version::VersionInfo::current()),
            ("GET", "/robots.txt") => text(StatusCode::OK, "User-agent: *\nDisallow: /"),
            ("GET", p) if p.starts_with("/register/") => register_page(&p["/register/".len()..]),
            ("POST", "/verify") => self.verify(req).await,
            (_, p) if p.starts_with("/api/v1/") => crate::api::handle(state.clone(), req).await,
            (_, p) if p.starts_with("/machine/") => {
                text(StatusCode::NOT_FOUND, "machine endpoints exist only inside the ts2021 Noise channel")
            }
            (_, p) if p == "/derp" || p.starts_with("/derp/") || p == "/generate_204" => match &self.derp {
                Some(d) => crate::derp::handle(d.clone(), req).await.map(|b| b.map_err(|e| match e {}).boxed()),
                None => text(StatusCode::NOT_FOUND, "the embedded DERP server is not enabled"),
            },
            _ => text(StatusCode::NOT_FOUND, "not found"),
        })
    }

    /// `/verify`: admission for external DERP servers, allowed for known node keys.
    async fn verify(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::BAD_REQUEST, "cannot read request body"),
        };
        match serde_json::from_slice::<AdmitRequest>(&body) {
            Ok(r) => {
                let allow = self.control.state.snapshot().relay_admits(&r.node_public, chrono::Utc::now());
                json(StatusCode::OK, &AdmitResponse { allow })
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("invalid admission request: {e}")),
        }
    }
}

/// `/health` as Headscale answers it: `{"status":"pass"}` (or `fail`, with 503, when the
/// database does not answer), as `application/health+json`.
fn health(database_ok: bool) -> Response<Body> {
    let status = if database_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut r = json(status, &serde_json::json!({ "status": if database_ok { "pass" } else { "fail" } }));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/health+json"));
    r
}

/// The page a user opens from the AuthURL: it tells the admin what to run.
fn register_page(auth_id: &str) -> Response<Body> {
    if auth_id.is_empty() || !auth_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return text(StatusCode::BAD_REQUEST, "invalid registration id");
    }
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Registration</title></head><body>\n\
         <h1>Machine registration</h1>\n<p>Run this command on the server to add the machine:</p>\n\
         <pre>headscale auth register --auth-id {auth_id} --user USERNAME</pre>\n</body></html>\n"
    );
    html(StatusCode::OK, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_as_headscale_does() {
        let ok = health(true);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[http::header::CONTENT_TYPE], "application/health+json");
        assert_eq!(health(false).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
