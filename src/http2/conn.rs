//! One HTTP/2 server connection as a single future: it reads frames, runs each request's
//! handler, sends each response body as flow-controlled DATA frames, and answers SETTINGS,
//! PING and WINDOW_UPDATE. Requests and response bodies are polled in place with the
//! connection's own waker, so a connection is one task however many streams it carries.
//!
//! Buffers live only while they hold something: an idle connection (a map session waiting for
//! the next change) keeps its HPACK table, a timer and a few counters, nothing sized for
//! traffic.
//!
//! What a client can make the connection hold is bounded: the decoded header list of a request
//! ([`MAX_HEADER_LIST`], counted as RFC 9113 counts it, however small its compressed block),
//! the request bodies being received across all its streams (`max_body` together), the time a
//! body may take to arrive ([`BODY_TIMEOUT`]), the time to send the preface
//! ([`PREFACE_TIMEOUT`]) and the time a connection may stay open with nothing in it
//! ([`IDLE_TIMEOUT`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::frame::{self, Head, Reason};
use super::headers;
use super::Http2Error;
use crate::response::{text, Body};

/// Streams a client may have open at once.
const MAX_STREAMS: usize = 32;
/// The largest header block accepted (all its CONTINUATION frames together).
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Response bytes queued for the socket before bodies are asked for more. A connection whose
/// client reads slowly holds about this much here, up to as much again in sealed records,
/// and the body's current chunk: in a reconnect storm, thousands of connections at once.
const WRITE_HIGH_WATER: usize = 32 * 1024;
/// The largest DATA frame sent, whatever larger size the client allows, so that a busy
/// connection's write buffer stays below `WRITE_HIGH_WATER + DATA_FRAME + a frame head`.
const DATA_FRAME: usize = 16 * 1024;
/// How much is read from the transport at a time.
const READ_CHUNK: usize = 4096;
/// The largest decoded header list of a request: each field's name and value plus 32 bytes
/// (RFC 9113 §6.5.2), what hyper's server allows too. A larger one is answered `431`.
pub const MAX_HEADER_LIST: usize = 16 * 1024;
/// How long the client has to send the HTTP/2 preface once the channel is open.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may take to arrive in full; a slower one is answered `408`.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may stay open with no stream and nothing received before it is
/// closed with GOAWAY (a client that needs it again dials again).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Serves HTTP/2 on `io` until the client closes the connection or breaks the protocol.
/// `handle` answers each request, whose body has been read in full (at most `max_body` bytes;
/// a larger one is answered `413` without calling it).
pub fn serve<IO, H>(io: IO, max_body: usize, handle: H) -> Connection<IO, H>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Request<Bytes>) -> HandlerFuture,
{
    let mut write = Vec::new();
    frame::settings(
        &mut write,
        &[
            (frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
            (frame::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
        ],
    );
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(4096);
    Connection {
        io,
        handle,
        max_body,
        read: BytesMut::new(),
        preface_left: frame::PREFACE.len(),
        write,
        written: 0,
        decoder,
        peer_max_frame: frame::DEFAULT_MAX_FRAME,
        peer_initial_window: frame::DEFAULT_WINDOW,
        send_window: frame::DEFAULT_WINDOW,
        streams: Vec::new(),
        last_stream: 0,
        partial: None,
        peer_going_away: false,
        eof: false,
        timer: Box::pin(tokio::time::sleep(PREFACE_TIMEOUT)),
        opened: Instant::now(),
        last_read: Instant::now(),
    }
}

/// A request whose header block still awaits CONTINUATION frames.
struct PartialHeaders {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

enum Phase {
    /// Headers are in since `since`; the body is still arriving. The head is boxed so that a
    /// stream in its long sending phase is not the size of a request head.
    Receiving { head: Box<Request<()>>, body: BytesMut, since: Instant },
    /// The handler is working on the request.
    Handling(HandlerFuture),
    /// The response headers are sent; the body is being sent.
    Sending { body: Body, pending: Bytes },
}

struct Stream {
    id: u32,
    send_window: i64,
    phase: Phase,
}

pub struct Connection<IO, H> {
    io: IO,
    handle: H,
    max_body: usize,
    read: BytesMut,
    /// Bytes of the client preface not yet seen.
    preface_left: usize,
    write: Vec<u8>,
    written: usize,
    decoder: loona_hpack::Decoder<'static>,
    peer_max_frame: usize,
    peer_initial_window: i64,
    /// The connection-level send window.
    send_window: i64,
    streams: Vec<Stream>,
    /// The highest stream id the client has opened.
    last_stream: u32,
    partial: Option<PartialHeaders>,
    peer_going_away: bool,
    eof: bool,
    /// Fires at the next deadline: the preface, the oldest body still arriving, or idleness.
    timer: Pin<Box<Sleep>>,
    opened: Instant,
    /// When the client last sent anything.
    last_read: Instant,
}

impl<IO, H> Future for Connection<IO, H>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Request<Bytes>) -> HandlerFuture + Unpin,
{
    type Output = Result<(), Http2Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let mut progress = false;
            if !this.eof && this.queued() < WRITE_HIGH_WATER {
                match this.poll_read(cx) {
                    Ok(p) => progress |= p,
                    Err(e) => return this.fail(cx, e),
                }
            }
            if this.eof {
                // The client is gone; whatever it had open goes with it.
                return Poll::Ready(Ok(()));
            }
            progress |= this.poll_streams(cx);
            match this.poll_write(cx) {
                Poll::Ready(Ok(p)) => progress |= p,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            if this.peer_going_away && this.streams.is_empty() && this.queued() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                match this.poll_deadline(cx) {
                    Ok(true) => continue,
                    Ok(false) => return Poll::Pending,
                    Err(e) => return this.fail(cx, e),
                }
            }
        }
    }
}

impl<IO, H> Connection<IO, H>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(Request<Bytes>) -> HandlerFuture,
{
    fn queued(&self) -> usize {
        self.write.len() - self.written
    }

    /// The next deadline and what happens then.
    fn deadline(&self) -> Option<(Instant, Deadline)> {
        if self.preface_left > 0 {
            return Some((self.opened + PREFACE_TIMEOUT, Deadline::Preface));
        }
        let receiving = self.streams.iter().filter_map(|s| match &s.phase {
            Phase::Receiving { since, .. } => Some(*since + BODY_TIMEOUT),
            _ => None,
        });
        if let Some(first) = receiving.min() {
            return Some((first, Deadline::Body));
        }
        (self.streams.is_empty() && self.partial.is_none() && self.queued() == 0)
            .then(|| (self.last_read + IDLE_TIMEOUT, Deadline::Idle))
    }

    /// Arms the timer for the next deadline, or acts on one that has passed. Returns whether
    /// something changed (a stream answered).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Result<bool, Http2Error> {
        let Some((at, what)) = self.deadline() else { return Ok(false) };
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Ok(false);
        }
        match what {
            Deadline::Preface => Err(Http2Error::TimedOut("the HTTP/2 preface did not arrive in time")),
            Deadline::Idle => {
                frame::goaway(&mut self.write, self.last_stream, Reason::NoError);
                self.peer_going_away = true;
                Ok(true)
            }
            Deadline::Body => {
                let now = Instant::now();
                for s in &mut self.streams {
                    if matches!(&s.phase, Phase::Receiving { since, .. } if *since + BODY_TIMEOUT <= now) {
                        s.phase = ready(text(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"));
                    }
                }
                Ok(true)
            }
        }
    }

    /// Bytes of request bodies being received on all streams.
    fn buffered(&self) -> usize {
        self.streams
            .iter()
            .map(|s| match &s.phase {
                Phase::Receiving { body, .. } => body.len(),
                _ => 0,
            })
            .sum()
    }

    /// Tells the client why the connection ends, sends what can be sent without waiting, and
    /// ends with `err`.
    fn fail(&mut self, cx: &mut Context<'_>, err: Http2Error) -> Poll<Result<(), Http2Error>> {
        if let Http2Error::Protocol(reason, _) = err {
            frame::goaway(&mut self.write, self.last_stream, reason);
            let _ = self.poll_write(cx);
        }
        Poll::Ready(Err(err))
    }

    /// Reads once from the transport and handles every whole frame read so far. Returns
    /// whether anything happened.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, Http2Error> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Pending => return Ok(false),
            Poll::Ready(r) => r?,
        }
        if buf.filled().is_empty() {
            self.eof = true;
            return Ok(true);
        }
        self.last_read = Instant::now();
        self.read.extend_from_slice(buf.filled());
        self.take_frames()?;
        if self.read.is_empty() {
            // An idle connection holds no read buffer.
            self.read = BytesMut::new();
        }
        Ok(true)
    }

    fn take_frames(&mut self) -> Result<(), Http2Error> {
        if self.preface_left > 0 {
            let seen = frame::PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(self.read.len());
            if self.read[..n] != frame::PREFACE[seen..seen + n] {
                return Err(Http2Error::BadPreface);
            }
            self.read.advance(n);
            self.preface_left -= n;
            if self.preface_left > 0 {
                return Ok(());
            }
        }
        while self.read.len() >= frame::HEAD_LEN {
            let head = Head::parse(&self.read[..frame::HEAD_LEN]);
            if head.len > frame::DEFAULT_MAX_FRAME {
                return Err(Http2Error::Protocol(Reason::FrameSize, "frame larger than 16 KiB"));
            }
            if self.read.len() < frame::HEAD_LEN + head.len {
                break;
            }
            self.read.advance(frame::HEAD_LEN);
            let payload = self.read.split_to(head.len).freeze();
            self.on_frame(head, payload)?;
        }
        Ok(())
    }

    fn on_frame(&mut self, head: Head, payload: Bytes) -> Result<(), Http2Error> {
        if self.partial.is_some() && head.kind != frame::CONTINUATION {
            return Err(Http2Error::Protocol(Reason::Protocol, "header block interrupted"));
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::CONTINUATION => self.on_continuation(head, &payload),
            frame::PRIORITY if head.len != 5 => Err(Http2Error::Protocol(Reason::FrameSize, "PRIORITY is 5 bytes")),
            frame::RST_STREAM => {
                if head.len != 4 {
                    return Err(Http2Error::Protocol(Reason::FrameSize, "RST_STREAM is 4 bytes"));
                }
                // Dropping the stream drops its handler or body: a map session ends here.
                self.streams.retain(|s| s.id != head.stream);
                Ok(())
            }
            frame::SETTINGS => self.on_settings(head, &payload),
            frame::PING => {
                if head.len != 8 || head.stream != 0 {
                    return Err(Http2Error::Protocol(Reason::FrameSize, "PING is 8 bytes on stream 0"));
                }
                if !head.has(frame::ACK) {
                    frame::frame(&mut self.write, frame::PING, frame::ACK, 0, &payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                self.peer_going_away = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, &payload),
            frame::PUSH_PROMISE => Err(Http2Error::Protocol(Reason::Protocol, "clients may not push")),
            // PRIORITY is advisory; unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<(), Http2Error> {
        if head.stream == 0 {
            return Err(Http2Error::Protocol(Reason::Protocol, "DATA on stream 0"));
        }
        let range = frame::unpadded(&head, &payload)
            .ok_or(Http2Error::Protocol(Reason::Protocol, "padding longer than the frame"))?;
        // Everything received is handed back at once: the limit on a request's size is
        // `max_body`, not the window.
        if head.len > 0 {
            frame::window_update(&mut self.write, 0, head.len as u32);
        }
        let max_body = self.max_body;
        // All bodies being received on this connection together stay within `max_body`.
        let buffered = self.buffered();
        let Some(stream) = self.streams.iter_mut().find(|s| s.id == head.stream) else {
            // A stream already answered or reset; its late data only counts for the window.
            return Ok(());
        };
        let Phase::Receiving { body, .. } = &mut stream.phase else {
            return Ok(());
        };
        if buffered + range.len() > max_body {
            // Answered at once; the rest of the body is dropped as it arrives.
            let why = if body.len() + range.len() > max_body {
                format!("request body is larger than {max_body} bytes")
            } else {
                format!("request bodies on this connection are larger than {max_body} bytes together")
            };
            stream.phase = ready(text(StatusCode::PAYLOAD_TOO_LARGE, &why));
            return Ok(());
        }
        body.extend_from_slice(&payload[range]);
        if head.has(frame::END_STREAM) {
            self.start_handler(head.stream);
        } else if head.len > 0 {
            frame::window_update(&mut self.write, head.stream, head.len as u32);
        }
        Ok(())
    }

    fn on_headers(&mut self, head: Head, payload: Bytes) -> Result<(), Http2Error> {
        if head.stream == 0 {
            return Err(Http2Error::Protocol(Reason::Protocol, "HEADERS on stream 0"));
        }
        let mut range = frame::unpadded(&head, &payload)
            .ok_or(Http2Error::Protocol(Reason::Protocol, "padding longer than the frame"))?;
        if head.has(frame::PRIORITY_FLAG) {
            if range.len() < 5 {
                return Err(Http2Error::Protocol(Reason::FrameSize, "HEADERS too short for its priority"));
            }
            range.start += 5;
        }
        let partial = PartialHeaders {
            stream: head.stream,
            end_stream: head.has(frame::END_STREAM),
            block: payload[range].to_vec(),
        };
        if head.has(frame::END_HEADERS) {
            self.on_header_block(partial)
        } else {
            self.partial = Some(partial);
            Ok(())
        }
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), Http2Error> {
        let Some(mut partial) = self.partial.take() else {
            return Err(Http2Error::Protocol(Reason::Protocol, "CONTINUATION without HEADERS"));
        };
        if partial.stream != head.stream {
            return Err(Http2Error::Protocol(Reason::Protocol, "CONTINUATION on another stream"));
        }
        if partial.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return Err(Http2Error::Protocol(Reason::Protocol, "header block larger than 64 KiB"));
        }
        partial.block.extend_from_slice(payload);
        if head.has(frame::END_HEADERS) {
            self.on_header_block(partial)
        } else {
            self.partial = Some(partial);
            Ok(())
        }
    }

    fn on_header_block(&mut self, block: PartialHeaders) -> Result<(), Http2Error> {
        // Decoding comes first whatever the stream: the decoder's table must see every block.
        // Fields are kept only while the list is within its limit: a small block can refer to
        // a large table entry many times over.
        let mut fields = Vec::new();
        let mut list_size = 0usize;
        self.decoder
            .decode_with_cb(&block.block, |name, value| {
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if list_size <= MAX_HEADER_LIST {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|_| Http2Error::Protocol(Reason::Compression, "header block cannot be decoded"))?;
        let id = block.stream;
        if let Some(stream) = self.streams.iter().find(|s| s.id == id) {
            // Trailers: they end a request body; their fields are not used.
            if matches!(stream.phase, Phase::Receiving { .. }) && block.end_stream {
                self.start_handler(id);
                return Ok(());
            }
            return Err(Http2Error::Protocol(Reason::Protocol, "HEADERS on a stream that is not receiving"));
        }
        if id.is_multiple_of(2) || id <= self.last_stream {
            return Err(Http2Error::Protocol(Reason::Protocol, "HEADERS opening a stream id already used or even"));
        }
        self.last_stream = id;
        if self.peer_going_away || self.streams.len() >= MAX_STREAMS {
            frame::rst_stream(&mut self.write, id, Reason::RefusedStream);
            return Ok(());
        }
        let phase = match headers::request(fields) {
            _ if list_size > MAX_HEADER_LIST => ready(text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &format!("request headers are larger than {MAX_HEADER_LIST} bytes"),
            )),
            Ok(head) => Phase::Receiving { head: Box::new(head), body: BytesMut::new(), since: Instant::now() },
            Err(e) => ready(text(StatusCode::BAD_REQUEST, &e.to_string())),
        };
        self.streams.push(Stream { id, send_window: self.peer_initial_window, phase });
        if block.end_stream {
            self.start_handler(id);
        }
        Ok(())
    }

    /// The request on stream `id` is complete: hand it to the handler.
    fn start_handler(&mut self, id: u32) {
        let Some(stream) = self.streams.iter_mut().find(|s| s.id == id) else { return };
        // A pending future is zero-sized: the placeholder allocates nothing.
        let phase = std::mem::replace(&mut stream.phase, Phase::Handling(Box::pin(std::future::pending())));
        stream.phase = match phase {
            Phase::Receiving { head, body, .. } => {
                let (parts, ()) = head.into_parts();
                Phase::Handling((self.handle)(Request::from_parts(parts, body.freeze())))
            }
            other => other,
        };
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), Http2Error> {
        if head.stream != 0 || !payload.len().is_multiple_of(6) {
            return Err(Http2Error::Protocol(Reason::FrameSize, "malformed SETTINGS"));
        }
        if head.has(frame::ACK) {
            return Ok(());
        }
        for entry in payload.chunks_exact(6) {
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match u16::from_be_bytes([entry[0], entry[1]]) {
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(Http2Error::Protocol(Reason::FlowControl, "initial window too large"));
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for s in &mut self.streams {
                        s.send_window += delta;
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME as u32..1 << 24).contains(&value) {
                        return Err(Http2Error::Protocol(Reason::Protocol, "max frame size out of range"));
                    }
                    self.peer_max_frame = value as usize;
                }
                // The header table size only bounds an encoder's dynamic table, and responses
                // never use one; the rest do not concern a server that does not push.
                _ => {}
            }
        }
        frame::frame(&mut self.write, frame::SETTINGS, frame::ACK, 0, &[]);
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), Http2Error> {
        if payload.len() != 4 {
            return Err(Http2Error::Protocol(Reason::FrameSize, "WINDOW_UPDATE is 4 bytes"));
        }
        let increment = i64::from(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff);
        if head.stream == 0 {
            if increment == 0 {
                return Err(Http2Error::Protocol(Reason::Protocol, "window increment of 0"));
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(Http2Error::Protocol(Reason::FlowControl, "connection window overflow"));
            }
            return Ok(());
        }
        let Some(i) = self.streams.iter().position(|s| s.id == head.stream) else { return Ok(()) };
        let stream = &mut self.streams[i];
        stream.send_window += increment;
        if increment == 0 || stream.send_window > frame::MAX_WINDOW {
            let reason = if increment == 0 { Reason::Protocol } else { Reason::FlowControl };
            frame::rst_stream(&mut self.write, head.stream, reason);
            self.streams.remove(i);
        }
        Ok(())
    }

    /// Polls every stream's handler and body, queueing what they produce. Returns whether
    /// anything was queued or finished.
    fn poll_streams(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.streams.len() {
            let (step, done) = self.poll_stream(i, cx);
            progress |= step;
            if done {
                self.streams.remove(i);
            } else {
                i += 1;
            }
        }
        progress
    }

    /// Polls stream `i`: returns whether it made progress and whether it is finished.
    fn poll_stream(&mut self, i: usize, cx: &mut Context<'_>) -> (bool, bool) {
        let stream = &mut self.streams[i];
        let id = stream.id;
        let mut progress = false;
        if let Phase::Handling(fut) = &mut stream.phase {
            let Poll::Ready(resp) = fut.as_mut().poll(cx) else { return (false, false) };
            progress = true;
            let mut block = Vec::new();
            headers::encode_response(&resp, &mut block);
            let body = resp.into_body();
            let end = body.is_end_stream();
            self.queue_headers(id, &block, end);
            if end {
                return (true, true);
            }
            self.streams[i].phase = Phase::Sending { body, pending: Bytes::new() };
        }
        let stream = &mut self.streams[i];
        let Phase::Sending { body, pending } = &mut stream.phase else { return (progress, false) };
        loop {
            if self.write.len() - self.written >= WRITE_HIGH_WATER {
                return (progress, false);
            }
            if pending.is_empty() {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => return (progress, false),
                    Poll::Ready(None) => {
                        frame::frame(&mut self.write, frame::DATA, frame::END_STREAM, id, &[]);
                        return (true, true);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(stream = id, error = %e, "response body failed");
                        frame::rst_stream(&mut self.write, id, Reason::Internal);
                        return (true, true);
                    }
                    Poll::Ready(Some(Ok(f))) => {
                        progress = true;
                        // Trailers are not sent: no handler here produces them.
                        if let Ok(data) = f.into_data() {
                            *pending = data;
                        }
                        continue;
                    }
                }
            }
            let window = stream.send_window.min(self.send_window).max(0) as usize;
            let n = pending.len().min(self.peer_max_frame).min(DATA_FRAME).min(window);
            if n == 0 {
                // Blocked on the client's window; its WINDOW_UPDATE wakes the connection.
                return (progress, false);
            }
            // Room at once rather than by doubling, which copies what is queued each time: for
            // what this body has at hand, or, when that is a whole frame's worth (a large
            // message, whose next chunks follow), for the most the buffer holds.
            let most = WRITE_HIGH_WATER + DATA_FRAME + frame::HEAD_LEN;
            let frames = pending.len().div_ceil(DATA_FRAME);
            let wanted = if pending.len() >= DATA_FRAME {
                most
            } else {
                (self.write.len() + pending.len() + frames * frame::HEAD_LEN).min(most)
            };
            self.write.reserve_exact(wanted.saturating_sub(self.write.len()));
            frame::frame(&mut self.write, frame::DATA, 0, id, &pending[..n]);
            pending.advance(n);
            if pending.is_empty() {
                // Let go of the chunk: a long poll may wait hours for its next message.
                *pending = Bytes::new();
            }
            stream.send_window -= n as i64;
            self.send_window -= n as i64;
            progress = true;
        }
    }

    /// Queues a header block as HEADERS and, if it is larger than a frame, CONTINUATION frames.
    fn queue_headers(&mut self, id: u32, block: &[u8], end_stream: bool) {
        let mut chunks = block.chunks(self.peer_max_frame).peekable();
        let mut kind = frame::HEADERS;
        let mut flags = if end_stream { frame::END_STREAM } else { 0 };
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let last = chunks.peek().is_none();
            frame::frame(&mut self.write, kind, flags | if last { frame::END_HEADERS } else { 0 }, id, chunk);
            if last {
                return;
            }
            kind = frame::CONTINUATION;
            flags = 0;
        }
    }

    /// Sends what is queued. `Ready(Ok(true))` when something was written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut wrote = false;
        while self.written < self.write.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return if wrote { Poll::Ready(Ok(true)) } else { Poll::Pending },
            }
        }
        if wrote || self.written > 0 {
            // Everything was sent: an idle connection (most of them, most of the time) keeps
            // no write buffer; the next write allocates one sized for what it queues.
            self.write = Vec::new();
            self.written = 0;
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(wrote)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if wrote {
                    Poll::Ready(Ok(true))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

/// What happens when the connection's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The preface never came: the connection ends.
    Preface,
    /// A body took too long: its stream is answered `408`.
    Body,
    /// Nothing happened for a while: the connection is closed with GOAWAY.
    Idle,
}

/// A stream whose answer is already known.
fn ready(resp: Response<Body>) -> Phase {
    Phase::Handling(Box::pin(std::future::ready(resp)))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
