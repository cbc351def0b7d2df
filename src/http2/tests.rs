//! The HTTP/2 server against hyper's HTTP/2 client (an independent implementation) over an
//! in-memory pipe, and against hand-written frames for what a well-behaved client never sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::http2::Http2Error;
use crate::response::text;

const MAX_BODY: usize = 100_000;

/// Sets a flag when dropped: shows that a response body went away with its stream.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The handler under test: `/echo` answers the body it got; `/big/N` streams N bytes in
/// 10,000-byte chunks; `/forever` sends one chunk and then nothing, holding `flag`.
fn handler(flag: Arc<AtomicBool>) -> impl FnMut(Request<Bytes>) -> HandlerFuture + Unpin {
    move |req: Request<Bytes>| -> HandlerFuture {
        let flag = flag.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if path == "/echo" {
                let mut resp = Response::new(Full::new(req.into_body()).map_err(|e| match e {}).boxed());
                resp.headers_mut().insert("x-echo", "yes".parse().expect("valid"));
                return resp;
            }
            if let Some(n) = path.strip_prefix("/big/") {
                let n: usize = n.parse().expect("a number");
                let chunks = (0..n).step_by(10_000).map(move |i| {
                    let len = 10_000.min(n - i);
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![(i / 10_000) as u8; len])))
                });
                return Response::new(BodyExt::boxed(StreamBody::new(stream::iter(chunks))));
            }
            if path == "/forever" {
                let guard = DropFlag(flag);
                let first = stream::once(async { Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"hello"))) });
                let rest = stream::pending::<Result<Frame<Bytes>, std::io::Error>>().inspect(move |_| {
                    let _ = &guard;
                });
                return Response::new(BodyExt::boxed(StreamBody::new(first.chain(rest))));
            }
            text(StatusCode::NOT_FOUND, "not found")
        })
    }
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// A server connection on one end of a pipe and a hyper client on the other.
async fn connected(flag: Arc<AtomicBool>) -> (Sender, tokio::task::JoinHandle<Result<(), Http2Error>>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(serve(server_io, MAX_BODY, handler(flag)));
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .adaptive_window(false)
        .handshake(TokioIo::new(client_io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    (sender, server)
}

async fn post(sender: &mut Sender, path: &str, body: Vec<u8>) -> Response<hyper::body::Incoming> {
    let req = Request::post(format!("http://control{path}")).body(Full::new(Bytes::from(body))).expect("request");
    sender.ready().await.expect("ready");
    sender.send_request(req).await.expect("response")
}

async fn body_of(resp: Response<hyper::body::Incoming>) -> Bytes {
    resp.into_body().collect().await.expect("whole body").to_bytes()
}

#[tokio::test]
async fn requests_get_their_answers_with_headers_and_bodies() {
    let (mut sender, _server) = connected(Arc::default()).await;
    let resp = post(&mut sender, "/echo", b"ping".to_vec()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-echo"], "yes");
    assert_eq!(body_of(resp).await, "ping");
    let resp = post(&mut sender, "/nowhere", Vec::new()).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_of(resp).await, "not found\n");
    // A body that takes several DATA frames and more than one window.
    let big: Vec<u8> = (0..90_000u32).map(|i| i as u8).collect();
    let resp = post(&mut sender, "/echo", big.clone()).await;
    assert_eq!(body_of(resp).await, big);
}

#[tokio::test]
async fn a_response_larger_than_the_windows_arrives_whole() {
    let (mut sender, _server) = connected(Arc::default()).await;
    let resp = post(&mut sender, "/big/3000000", Vec::new()).await;
    let body = body_of(resp).await;
    assert_eq!(body.len(), 3_000_000);
    assert!(body.chunks(10_000).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)));
}

#[tokio::test]
async fn a_long_poll_does_not_hold_up_other_requests_and_ends_when_the_client_drops_it() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (mut sender, _server) = connected(dropped.clone()).await;
    let mut poll = post(&mut sender, "/forever", Vec::new()).await.into_body();
    let first = poll.frame().await.expect("a frame").expect("no error").into_data().expect("data");
    assert_eq!(first, "hello");
    let resp = post(&mut sender, "/echo", b"meanwhile".to_vec()).await;
    assert_eq!(body_of(resp).await, "meanwhile");
    assert!(!dropped.load(Ordering::SeqCst));
    // Dropping the response makes the client reset the stream; the server drops the body.
    drop(poll);
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the response body outlived its stream");
}

#[tokio::test]
async fn a_body_over_the_limit_is_answered_413_and_the_connection_goes_on() {
    let (mut sender, _server) = connected(Arc::default()).await;
    let resp = post(&mut sender, "/echo", vec![0; MAX_BODY + 1]).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = post(&mut sender, "/echo", b"after".to_vec()).await;
    assert_eq!(body_of(resp).await, "after");
}

#[tokio::test]
async fn the_connection_ends_when_the_client_closes_it() {
    let (sender, server) = connected(Arc::default()).await;
    drop(sender);
    let ended = tokio::time::timeout(Duration::from_secs(5), server).await.expect("server ended").expect("joined");
    assert!(ended.is_ok(), "{ended:?}");
}

/// Runs a server on a pipe, writes `bytes` as the client, and returns what the server said
/// and how it ended.
async fn raw(bytes: &[u8]) -> (Vec<u8>, Result<(), Http2Error>) {
    raw_within(bytes, Duration::from_secs(5)).await
}

/// Like [`raw`], waiting up to `within` for the server to end (in paused time, the clock
/// runs ahead whenever everything waits).
async fn raw_within(bytes: &[u8], within: Duration) -> (Vec<u8>, Result<(), Http2Error>) {
    let (mut client, server_io): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve(server_io, MAX_BODY, handler(Arc::default())));
    // The server may close before it has read everything; what it said is what counts.
    let _ = client.write_all(bytes).await;
    let ended = tokio::time::timeout(within, server).await.expect("server ended").expect("joined");
    let mut said = Vec::new();
    client.read_to_end(&mut said).await.expect("read");
    (said, ended)
}

/// The frames in `bytes`, as (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= frame::HEAD_LEN {
        let h = frame::Head::parse(bytes);
        out.push((h.kind, h.flags, h.stream, bytes[frame::HEAD_LEN..frame::HEAD_LEN + h.len].to_vec()));
        bytes = &bytes[frame::HEAD_LEN + h.len..];
    }
    out
}

#[tokio::test]
async fn a_connection_without_the_preface_is_refused() {
    let (said, ended) = raw(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(matches!(ended, Err(Http2Error::BadPreface)), "{ended:?}");
    // Nothing but (at most) the server's own SETTINGS went out.
    assert!(frames(&said).iter().all(|f| f.0 == frame::SETTINGS));
}

#[tokio::test]
async fn protocol_errors_end_the_connection_with_goaway() {
    let cases: [(&str, Vec<u8>, Reason); 4] = [
        // Refused on its header, before its 64 KiB payload.
        ("oversized frame", vec![0x01, 0x00, 0x00, frame::DATA, 0, 0, 0, 0, 1], Reason::FrameSize),
        ("DATA on stream 0", vec![0, 0, 1, frame::DATA, 0, 0, 0, 0, 0, b'x'], Reason::Protocol),
        (
            "undecodable header block",
            vec![0, 0, 1, frame::HEADERS, frame::END_HEADERS, 0, 0, 0, 1, 0xff],
            Reason::Compression,
        ),
        (
            "CONTINUATION out of the blue",
            vec![0, 0, 0, frame::CONTINUATION, frame::END_HEADERS, 0, 0, 0, 1],
            Reason::Protocol,
        ),
    ];
    for (what, bad, reason) in cases {
        let (said, ended) = raw(&[frame::PREFACE, &bad].concat()).await;
        assert!(matches!(ended, Err(Http2Error::Protocol(r, _)) if r == reason), "{what}: {ended:?}");
        let goaway = frames(&said).into_iter().find(|f| f.0 == frame::GOAWAY).expect("a GOAWAY");
        assert_eq!(u32::from_be_bytes(goaway.3[4..8].try_into().expect("4 bytes")), reason as u32, "{what}");
    }
}

#[tokio::test]
async fn settings_and_pings_are_acknowledged() {
    let mut bytes = frame::PREFACE.to_vec();
    frame::settings(&mut bytes, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]);
    frame::frame(&mut bytes, frame::PING, 0, 0, b"12345678");
    frame::goaway(&mut bytes, 0, Reason::NoError);
    let (said, ended) = raw(&bytes).await;
    assert!(ended.is_ok(), "{ended:?}");
    let kinds: Vec<_> = frames(&said).into_iter().map(|f| (f.0, f.1, f.3)).collect();
    assert!(kinds.contains(&(frame::SETTINGS, frame::ACK, Vec::new())), "{kinds:?}");
    assert!(kinds.contains(&(frame::PING, frame::ACK, b"12345678".to_vec())), "{kinds:?}");
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffers() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let mut conn = serve(server_io, MAX_BODY, handler(Arc::default()));
    let client = async {
        let (mut sender, c) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
            .await
            .expect("handshake");
        tokio::spawn(c);
        let resp = post(&mut sender, "/big/200000", vec![7; 50_000]).await;
        assert_eq!(body_of(resp).await.len(), 200_000);
        sender
    };
    let sender = tokio::select! {
        s = client => s,
        r = &mut conn => panic!("server ended early: {r:?}"),
    };
    // Let the server take the client's last frames, then look inside.
    let _ = tokio::time::timeout(Duration::from_millis(100), &mut conn).await;
    assert_eq!(conn.read.capacity(), 0);
    assert_eq!(conn.write.len(), 0);
    assert_eq!(conn.write.capacity(), 0);
    assert!(conn.streams.is_empty());
    drop(sender);
}

/// The `:status` of each response, by stream, from what the server said.
fn statuses(said: &[u8]) -> Vec<(u32, String)> {
    frames(said)
        .into_iter()
        .filter(|f| f.0 == frame::HEADERS)
        .map(|f| {
            let fields = loona_hpack::Decoder::new().decode(&f.3).expect("a response block");
            let status = fields.iter().find(|(n, _)| n == b":status").expect(":status");
            (f.2, String::from_utf8_lossy(&status.1).into_owned())
        })
        .collect()
}

/// A HEADERS frame opening `stream` with `POST /echo`, then `extra` block bytes.
fn request_headers(out: &mut Vec<u8>, stream: u32, end_stream: bool, extra: &[u8]) {
    // :method POST (static 3), :scheme http (static 6), :path "/echo" as a literal of :path (static 4).
    let mut block = vec![0x83, 0x86, 0x04, 5];
    block.extend_from_slice(b"/echo");
    block.extend_from_slice(extra);
    let flags = frame::END_HEADERS | if end_stream { frame::END_STREAM } else { 0 };
    frame::frame(out, frame::HEADERS, flags, stream, &block);
}

#[tokio::test]
async fn a_small_block_that_decodes_to_a_huge_header_list_is_answered_431() {
    // One 4,000-byte value added to the dynamic table, then referred to 10,000 times: a 14 KB
    // block that decodes to 40 MB if nothing stops it.
    let mut extra = vec![0x40, 5];
    extra.extend_from_slice(b"x-big");
    // 4,000 as a 7-bit-prefix integer: 127, then 3,873 = 33 + 30 × 128.
    extra.extend_from_slice(&[0x7f, 0x80 | 33, 30]);
    extra.extend(std::iter::repeat_n(b'a', 4000));
    extra.extend(std::iter::repeat_n(0x80 | 62, 10_000));
    let mut bytes = frame::PREFACE.to_vec();
    request_headers(&mut bytes, 1, true, &extra);
    request_headers(&mut bytes, 3, true, &[]);
    frame::goaway(&mut bytes, 3, Reason::NoError);
    let (said, ended) = raw(&bytes).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(statuses(&said), [(1, "431".to_string()), (3, "200".to_string())], "the next request is served");
}

#[tokio::test(start_paused = true)]
async fn bodies_are_bounded_together_and_in_time() {
    let mut bytes = frame::PREFACE.to_vec();
    // Stream 1 sends 60,000 bytes and never ends; stream 3's 60,000 bytes would take the
    // connection past MAX_BODY (100,000) together: 413 at once. Stream 1 gets 408 later.
    for stream in [1, 3] {
        request_headers(&mut bytes, stream, false, &[]);
        for _ in 0..4 {
            frame::frame(&mut bytes, frame::DATA, 0, stream, &[0; 15_000]);
        }
    }
    frame::goaway(&mut bytes, 3, Reason::NoError);
    let started = tokio::time::Instant::now();
    let (said, ended) = raw_within(&bytes, Duration::from_secs(3600)).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(statuses(&said), [(3, "413".to_string()), (1, "408".to_string())]);
    assert!(started.elapsed() >= BODY_TIMEOUT, "the slow body had its time: {:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_channel_that_never_sends_the_preface_is_closed() {
    let (said, ended) = raw_within(&frame::PREFACE[..10], Duration::from_secs(3600)).await;
    assert!(matches!(ended, Err(Http2Error::TimedOut(_))), "{ended:?}");
    assert!(frames(&said).iter().all(|f| f.0 == frame::SETTINGS));
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_with_goaway() {
    let mut bytes = frame::PREFACE.to_vec();
    request_headers(&mut bytes, 1, true, &[]);
    let started = tokio::time::Instant::now();
    let (said, ended) = raw_within(&bytes, Duration::from_secs(3600)).await;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(statuses(&said), [(1, "200".to_string())]);
    let goaway = frames(&said).into_iter().find(|f| f.0 == frame::GOAWAY).expect("a GOAWAY");
    assert_eq!(&goaway.3[4..8], &(Reason::NoError as u32).to_be_bytes());
    assert!(started.elapsed() >= IDLE_TIMEOUT, "{:?}", started.elapsed());
}
