//! Standard gRPC clients on a unix socket (gRPC C-core: Python's grpcio, and the others built
//! on it) send the socket's path, percent-encoded, as `:authority`; the HTTP/2 library under
//! tonic refuses that as a malformed authority and resets the stream. Every connection of the
//! local socket passes through this filter on its way in: the client's header blocks are
//! decoded and encoded again as literals (no dynamic table), with an `:authority` that is not
//! a valid authority replaced by `localhost`; every other frame passes unchanged, and nothing
//! is changed on the way out. A header block is bounded in size.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;

use crate::http2::encode_fields;
use crate::http2::frame::{self, Head, CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PADDED, PRIORITY_FLAG};

/// The largest header block a client may send (tonic's own limit is 16 KiB of decoded fields).
const MAX_BLOCK: usize = 1 << 20;

/// A client's connection, with its header blocks filtered, as the stream tonic serves.
pub fn filtered(client: UnixStream) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (client_in, mut client_out) = client.into_split();
    let (ours_in, ours_out) = tokio::io::split(ours);
    tokio::spawn(async move {
        let mut ours_in = ours_in;
        let _ = tokio::io::copy(&mut ours_in, &mut client_out).await;
    });
    tokio::spawn(async move {
        if let Err(e) = pump(client_in, ours_out).await {
            tracing::debug!(error = %e, "local gRPC connection ended");
        }
    });
    theirs
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string())
}

/// Copies the client's frames from `from` to `to`, header blocks filtered.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut head = [0u8; frame::HEAD_LEN];
    loop {
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return to.shutdown().await,
            Err(e) => return Err(e),
        }
        let h = Head::parse(&head);
        let mut payload = vec![0u8; h.len];
        from.read_exact(&mut payload).await?;
        if h.kind != HEADERS {
            to.write_all(&head).await?;
            to.write_all(&payload).await?;
            continue;
        }
        let (priority, mut block) = headers_payload(&h, &payload)?;
        let mut end = h.has(END_HEADERS);
        while !end {
            from.read_exact(&mut head).await?;
            let c = Head::parse(&head);
            if c.kind != CONTINUATION || c.stream != h.stream {
                return Err(invalid("a header block was not continued"));
            }
            if block.len() + c.len > MAX_BLOCK {
                return Err(invalid("a header block is too large"));
            }
            let start = block.len();
            block.resize(start + c.len, 0);
            from.read_exact(&mut block[start..]).await?;
            end = c.has(END_HEADERS);
        }
        let fields = decoder.decode(&block).map_err(|e| invalid(&format!("undecodable header block: {e:?}")))?;
        let mut encoded = priority.to_vec();
        encode_fields(&with_valid_authority(fields), &mut encoded);
        let mut out = Vec::with_capacity(encoded.len() + 2 * frame::HEAD_LEN);
        let mut chunks = encoded.chunks(frame::DEFAULT_MAX_FRAME).peekable();
        let mut flags = (h.flags & END_STREAM) | if priority.is_empty() { 0 } else { PRIORITY_FLAG };
        let mut kind = HEADERS;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            frame::frame(&mut out, kind, flags | if last { END_HEADERS } else { 0 }, h.stream, chunk);
            (kind, flags) = (CONTINUATION, 0);
        }
        to.write_all(&out).await?;
    }
}

/// A HEADERS frame's priority fields (or none) and its header block fragment, padding removed.
fn headers_payload<'p>(h: &Head, payload: &'p [u8]) -> std::io::Result<(&'p [u8], Vec<u8>)> {
    let mut rest = payload;
    let mut pad = 0;
    if h.has(PADDED) {
        pad = usize::from(*rest.first().ok_or_else(|| invalid("padded frame without a length"))?);
        rest = &rest[1..];
    }
    let priority_len = if h.has(PRIORITY_FLAG) { 5 } else { 0 };
    if rest.len() < priority_len + pad {
        return Err(invalid("HEADERS frame shorter than its padding and priority"));
    }
    let (priority, rest) = rest.split_at(priority_len);
    Ok((priority, rest[..rest.len() - pad].to_vec()))
}

/// The fields with an `:authority` that is not a valid authority replaced by `localhost`.
fn with_valid_authority(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .into_iter()
        .map(|(name, value)| {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                (name, b"localhost".to_vec())
            } else {
                (name, value)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_others_stay() {
        let fields = vec![
            (b":authority".to_vec(), b"tmp%2Fgtest%2Fhs.sock".to_vec()),
            (b":path".to_vec(), b"/headscale.v1.HeadscaleService/ListUsers".to_vec()),
        ];
        let fixed = with_valid_authority(fields.clone());
        assert_eq!(fixed[0].1, b"localhost");
        assert_eq!(fixed[1], fields[1]);
        let valid = vec![(b":authority".to_vec(), b"localhost:50443".to_vec())];
        assert_eq!(with_valid_authority(valid.clone()), valid);
    }

    #[tokio::test]
    async fn header_blocks_are_rewritten_across_continuations_and_other_frames_pass() {
        let mut encoder = Vec::new();
        let fields = vec![(b":authority".to_vec(), b"a%2Fb".to_vec()), (b"x-long".to_vec(), vec![b'v'; 20_000])];
        encode_fields(&fields, &mut encoder);
        let mut input = crate::http2::frame::PREFACE.to_vec();
        let (first, second) = encoder.split_at(10_000);
        frame::frame(&mut input, HEADERS, END_STREAM, 1, first);
        frame::frame(&mut input, CONTINUATION, END_HEADERS, 1, second);
        frame::frame(&mut input, frame::PING, 0, 0, &[7; 8]);
        let mut output = Vec::new();
        pump(input.as_slice(), &mut output).await.unwrap();
        assert!(output.starts_with(crate::http2::frame::PREFACE));
        let mut rest = &output[24..];
        let mut block = Vec::new();
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let h = Head::parse(rest);
            kinds.push((h.kind, h.flags));
            if h.kind == HEADERS || h.kind == CONTINUATION {
                block.extend_from_slice(&rest[frame::HEAD_LEN..frame::HEAD_LEN + h.len]);
            }
            rest = &rest[frame::HEAD_LEN + h.len..];
        }
        assert_eq!(kinds, vec![(HEADERS, END_STREAM), (CONTINUATION, END_HEADERS), (frame::PING, 0)]);
        let decoded = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(decoded[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(decoded[1], fields[1]);
    }
}
