//! Fuzzes the HTTP/2 server inside the Noise channel: the client preface followed by any byte
//! string must end the connection cleanly (served, refused or closed), never panic or hang.
#![no_main]
use bytes::Bytes;
use futures_executor::block_on;
use headscale::http2::{serve, HandlerFuture};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let input = [PREFACE, data].concat();
    // The reader ends after the input, so the connection ends however far it got.
    let io = tokio::io::join(&input[..], tokio::io::sink());
    let echo = |req: Request<Bytes>| -> HandlerFuture {
        Box::pin(std::future::ready(Response::new(Full::new(req.into_body()).map_err(|e| match e {}).boxed())))
    };
    let _ = block_on(serve(io, 4096, echo));
});
