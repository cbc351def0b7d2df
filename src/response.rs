//! Response helpers the server's HTTP handlers share (all but the DERP relay's): the body type
//! and plain-text, JSON, HTML and empty responses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use serde::Serialize;

/// The response body type of every handler.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response with a plain-text body.
pub fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{msg}\n"))).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// A response with a JSON body.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("response values serialize");
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A response with no body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

/// A response with an HTML page.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(page)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}
