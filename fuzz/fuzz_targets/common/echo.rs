//! What the HTTP/2 targets share: running the server over bytes that end, with a handler that
//! echoes each request's body, on a runtime kept for the process (the server's deadlines are
//! tokio timers).
use bytes::Bytes;
use headscale::http2::{serve, HandlerFuture};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};

/// Serves `input` (preface included) until it runs out; the connection must end cleanly.
pub fn serve_bytes(input: &[u8]) {
    // The reader ends after the input, so the connection ends however far it got.
    let io = tokio::io::join(input, tokio::io::sink());
    let echo = |req: Request<Bytes>| -> HandlerFuture {
        Box::pin(std::future::ready(Response::new(Full::new(req.into_body()).map_err(|e| match e {}).boxed())))
    };
    RUNTIME.with(|rt| {
        // The connection is made inside the runtime: it sets its timers when made.
        let _ = rt.block_on(async { serve(io, 4096, echo).await });
    });
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
}
