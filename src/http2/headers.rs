//! Header blocks: a client's request headers decoded with HPACK (RFC 7541, the connection's
//! decoder keeps the dynamic table), and response headers encoded without a dynamic table
//! (`:status 200` as its static-table entry, everything else as literals), so the encoder
//! keeps no state.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri};

/// Why a request's header block was refused. Either way only that stream is answered with an
/// error; a block the HPACK decoder cannot read ends the connection instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestHeadError {
    #[error("request lacks the {0} pseudo-header")]
    Missing(&'static str),
    #[error("request header {0:?} is not valid")]
    Invalid(String),
}

/// A request head built from decoded header fields.
pub fn request(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Request<()>, RequestHeadError> {
    let mut method = None;
    let mut path = None;
    let mut headers = HeaderMap::new();
    let invalid = |name: &[u8]| RequestHeadError::Invalid(String::from_utf8_lossy(name).into_owned());
    for (name, value) in fields {
        match name.as_slice() {
            b":method" => method = Some(Method::from_bytes(&value).map_err(|_| invalid(&name))?),
            b":path" => path = Some(Uri::try_from(value).map_err(|_| invalid(&name))?),
            b":scheme" | b":authority" => {}
            n if n.starts_with(b":") => return Err(invalid(n)),
            n => {
                let header = HeaderName::from_bytes(n).map_err(|_| invalid(n))?;
                let value = HeaderValue::from_bytes(&value).map_err(|_| invalid(n))?;
                headers.append(header, value);
            }
        }
    }
    let mut req = Request::new(());
    *req.method_mut() = method.ok_or(RequestHeadError::Missing(":method"))?;
    *req.uri_mut() = path.ok_or(RequestHeadError::Missing(":path"))?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Appends the HPACK block for a response's status and headers.
pub fn encode_response<B>(resp: &Response<B>, out: &mut Vec<u8>) {
    // `:status` is entry 8 of the static table; 200 is the whole of entry 8.
    let status = resp.status();
    if status == http::StatusCode::OK {
        out.push(0x80 | 8);
    } else {
        integer(out, 8, 4, 0x00);
        string(out, status.as_str().as_bytes());
    }
    // Literal header fields without indexing, new name (RFC 7541 §6.2.2).
    let fields: Vec<(Vec<u8>, Vec<u8>)> =
        resp.headers().iter().map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
    encode_fields(&fields, out);
}

/// Appends an HPACK block of `fields` as literals without indexing, in order.
pub fn encode_fields(fields: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    for (name, value) in fields {
        out.push(0x00);
        string(out, name);
        string(out, value);
    }
}

/// A string literal without Huffman coding.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (RFC 7541 §5.1); `high` holds the bits above the prefix.
fn integer(out: &mut Vec<u8>, mut value: usize, prefix_bits: u32, high: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        loona_hpack::Decoder::new().decode(block).expect("valid block")
    }

    #[test]
    fn responses_decode_back_to_what_was_encoded() {
        let mut resp = Response::new(());
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        let mut block = Vec::new();
        encode_response(&resp, &mut block);
        assert_eq!(
            decoded(&block),
            vec![(b":status".to_vec(), b"200".to_vec()), (b"content-type".to_vec(), b"application/json".to_vec())]
        );
        *resp.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
        let long = "x".repeat(300);
        resp.headers_mut().insert("x-long", HeaderValue::from_str(&long).expect("ascii"));
        block.clear();
        encode_response(&resp, &mut block);
        let fields = decoded(&block);
        assert_eq!(fields[0], (b":status".to_vec(), b"413".to_vec()));
        assert!(fields.contains(&(b"x-long".to_vec(), long.into_bytes())));
    }

    #[test]
    fn requests_need_method_and_path_and_valid_names() {
        let field = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        let req = request(vec![
            field(":method", "POST"),
            field(":scheme", "http"),
            field(":path", "/machine/map?x=1"),
            field("content-type", "application/json"),
        ])
        .expect("valid request");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/machine/map");
        assert_eq!(req.headers()["content-type"], "application/json");
        assert_eq!(request(vec![field(":path", "/")]).unwrap_err(), RequestHeadError::Missing(":method"));
        assert!(matches!(request(vec![field(":bogus", "1")]), Err(RequestHeadError::Invalid(_))));
        assert!(matches!(
            request(vec![field(":method", "GET"), field("bad name", "1")]),
            Err(RequestHeadError::Invalid(_))
        ));
    }
}
