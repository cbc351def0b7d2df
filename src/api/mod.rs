//! The admin API over REST under `/api/v1`, with grpc-gateway's conventions, as Headscale
//! v0.29 serves it on `listen_addr`. Every request needs an API key. A request is turned into
//! the method's protobuf request (see `json`), the same [`AdminService`] that answers gRPC is
//! called (see `dispatch`), and its protobuf response is written back as JSON. The routes
//! come from the `google.api.http` options of the compiled `proto/` (see `routes`).

mod dispatch;
mod json;
mod routes;

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use prost_reflect::DynamicMessage;
use tonic::Status;

pub use routes::{RouteError, Routes};

use crate::detached::run_to_end;
use crate::grpc::{authorize, AdminService, FILE_DESCRIPTOR_SET};
use crate::response::Body;
use crate::state::State;

/// The largest request body read (a policy is the biggest thing sent).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The route table, built once from the compiled descriptors.
static ROUTES: LazyLock<Result<Routes, RouteError>> =
    LazyLock::new(|| Routes::from_descriptor_set(FILE_DESCRIPTOR_SET));

/// Answers one REST request: 200 with the response message, or the error body with the
/// HTTP status grpc-gateway gives its gRPC code.
pub async fn handle<B>(state: Arc<State>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The request runs to its end even if the client goes: a write and its publish go together.
    let served = run_to_end(serve(state, req)).await.unwrap_or_else(|| Err(Status::unavailable("shutting down")));
    let (status, body) = match served {
        Ok(bytes) => (StatusCode::OK, bytes),
        Err(e) => (json::http_status(e.code()), serde_json::to_vec(&json::error_body(&e)).unwrap_or_default()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

async fn serve<B>(state: Arc<State>, req: Request<B>) -> Result<Vec<u8>, Status>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    authorize(&state, req.headers(), "REST").await?;
    let table = ROUTES.as_ref().map_err(|e| Status::internal(e.to_string()))?;
    let (route, path) = match table.find(req.method(), req.uri().path()) {
        routes::Found::Route(route, path) => (route, path),
        routes::Found::WrongVerb => return Err(Status::unimplemented("Method Not Allowed")),
        routes::Found::Nothing => return Err(Status::not_found("Not Found")),
    };
    let query = req.uri().query().unwrap_or_default().to_string();
    let body = if route.body {
        let collected = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read the request body: {e}")))?;
        Some(collected.to_bytes())
    } else {
        None
    };
    let input = json::request(&route.method.input(), body.as_deref(), &path, &query)?;
    let output = dispatch::call(&AdminService::new(state), route.method.name(), &input).await?;
    let message = DynamicMessage::decode(route.method.output(), output.as_slice())
        .map_err(|e| Status::internal(format!("cannot read the response: {e}")))?;
    json::response(&message)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::Full;

    use super::*;
    use crate::config::Config;
    use crate::db::Db;

    #[tokio::test]
    async fn a_request_runs_to_its_end_when_the_client_goes() {
        let config = Arc::new(Config::embedded(std::path::Path::new("/nonexistent")));
        let state = State::load(config, Db::open_in_memory().expect("db")).await.expect("state");
        let (_, key) = state.create_api_key(chrono::Utc::now() + chrono::Duration::hours(1)).await.expect("a key");
        let req = Request::post("/api/v1/user")
            .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Full::new(Bytes::from_static(br#"{"name": "late"}"#)))
            .expect("a request");
        // The client gives up after the request was taken, before any answer.
        let mut request = Box::pin(handle(state.clone(), req));
        assert!(futures_util::poll!(&mut request).is_pending());
        drop(request);
        for _ in 0..100 {
            if state.snapshot().user_by_name("late").is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the request stopped when its client went away");
    }
}
