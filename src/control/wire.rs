//! Map messages as they go on the wire: u32 little-endian length, then the JSON (zstd-compressed
//! when the client asks). An uncompressed message (unless the debug dump is on) is handed out
//! in chunks of about `CHUNK` bytes (one HTTP/2 DATA frame), built as the connection can take
//! them from the peers' cached JSON, so a full map for thousands of peers (about 600 bytes
//! each; tailscale-rs does not ask for zstd) never exists as one buffer. In a reconnect storm
//! that is the difference between one buffer per connected node, in fresh pages the kernel
//! must map and zero, and a few reused ones.

use std::io::Write;

use bytes::Bytes;

use crate::model::NodeId;
use crate::tailcfg::{MapResponse, RawNode};

/// About how many bytes one chunk holds.
const CHUNK: usize = 16 * 1024;
/// Room for the node that crosses `CHUNK`, in the usual case.
const SLACK: usize = 4096;

/// A list of serialized nodes spliced into the message's JSON object under `key`.
#[derive(Debug)]
struct List {
    key: &'static str,
    nodes: Vec<RawNode>,
}

impl List {
    /// The bytes of `"key":[` … `]` with commas between nodes.
    fn len(&self) -> usize {
        let nodes: usize = self.nodes.iter().map(|n| n.0.get().len()).sum();
        self.key.len() + 5 + nodes + self.nodes.len().saturating_sub(1)
    }
}

/// One framed map message, handed out chunk by chunk.
#[derive(Debug)]
pub struct MapFrame {
    len: usize,
    /// How much of it was handed out.
    sent: usize,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// Complete (compressed, or small); `None` once handed out, so that a sent message holds
    /// nothing (a session keeps its last message until the next one).
    Whole(Option<Bytes>),
    /// The length prefix and `{`, then the lists, then the rest of the object, `rest` being
    /// the other fields' JSON without its braces.
    Spliced { lists: Vec<List>, rest: Vec<u8>, at: Option<Cursor> },
}

/// Where the next chunk starts: in list `list` (past the last list: at the rest), before
/// node `node`.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    list: usize,
    node: usize,
}

impl MapFrame {
    /// Frames `resp` for `node`, compressed when `zstd`. Records it in the debug dump when
    /// that is on.
    pub fn new(node: NodeId, mut resp: MapResponse, zstd: bool) -> MapFrame {
        let mut lists = Vec::new();
        if let Some(nodes) = resp.peers.take() {
            lists.push(List { key: "Peers", nodes });
        }
        if !resp.peers_changed.is_empty() {
            lists.push(List { key: "PeersChanged", nodes: std::mem::take(&mut resp.peers_changed) });
        }
        let object = serde_json::to_vec(&resp).expect("a MapResponse always serializes");
        let rest = object[1..object.len() - 1].to_vec();
        let separators = (lists.len() + usize::from(!rest.is_empty())).saturating_sub(1);
        let len = 2 + lists.iter().map(List::len).sum::<usize>() + separators + rest.len();
        let mut frame = MapFrame { len: 4 + len, sent: 0, body: Body::Spliced { lists, rest, at: None } };
        if zstd || super::dump::enabled() {
            let json = frame.json();
            super::dump::record(node, &json);
            if zstd {
                let compressed = zstd::bulk::compress(&json, 3).expect("zstd compresses in memory");
                return MapFrame::whole(&compressed);
            }
            return MapFrame::whole(&json);
        }
        frame
    }

    /// A frame holding `payload` as it is.
    fn whole(payload: &[u8]) -> MapFrame {
        let mut out = Vec::with_capacity(4 + payload.len());
        out.extend_from_slice(&prefix(payload.len()));
        out.extend_from_slice(payload);
        MapFrame { len: out.len(), sent: 0, body: Body::Whole(Some(Bytes::from(out))) }
    }

    /// Its length on the wire, prefix included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The whole JSON, without the length prefix.
    fn json(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        while let Some(chunk) = self.next_chunk() {
            out.extend_from_slice(&chunk);
        }
        out.split_off(4)
    }

    /// The next chunk; `None` once all of it was handed out.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        let (lists, rest, at) = match &mut self.body {
            Body::Whole(whole) => {
                let chunk = whole.take();
                self.sent += chunk.as_ref().map_or(0, Bytes::len);
                return chunk;
            }
            Body::Spliced { lists, rest, at } => (lists, rest, at),
        };
        let mut out = Vec::with_capacity((self.len - self.sent).min(CHUNK + SLACK));
        let Cursor { mut list, mut node } = *at.get_or_insert_with(|| {
            out.extend_from_slice(&prefix(self.len - 4));
            out.push(b'{');
            Cursor { list: 0, node: 0 }
        });
        while out.len() < CHUNK {
            let Some(l) = lists.get(list) else {
                if !rest.is_empty() {
                    if !lists.is_empty() {
                        out.push(b',');
                    }
                    out.extend_from_slice(rest);
                }
                out.push(b'}');
                self.body = Body::Whole(None);
                self.sent += out.len();
                return Some(Bytes::from(out));
            };
            if node == 0 {
                if list > 0 {
                    out.push(b',');
                }
                write!(out, "\"{}\":[", l.key).expect("writing to a Vec");
            }
            // A list's first node goes in the chunk that opens the list: a cursor before a
            // list's first node means its key is not written yet.
            while node < l.nodes.len() && (out.len() < CHUNK || node == 0) {
                if node > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(l.nodes[node].0.get().as_bytes());
                node += 1;
            }
            if node == l.nodes.len() {
                out.push(b']');
                (list, node) = (list + 1, 0);
            }
        }
        *at = Some(Cursor { list, node });
        self.sent += out.len();
        Some(Bytes::from(out))
    }
}

/// The length prefix of a payload of `len` bytes.
fn prefix(len: usize) -> [u8; 4] {
    u32::try_from(len).expect("a map message is under 4 GiB").to_le_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;
    use serde_json::{json, Value};

    use super::*;

    fn raw(id: u64, pad: usize) -> RawNode {
        let node = json!({"ID": id, "Name": "x".repeat(pad)});
        RawNode(Arc::new(RawValue::from_string(node.to_string()).unwrap()))
    }

    /// Every chunk of `frame`, joined, checked against its stated lengths, decoded.
    fn decode(mut frame: MapFrame, zstd: bool) -> (Value, usize) {
        let mut wire = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = frame.next_chunk() {
            assert!(!chunk.is_empty());
            wire.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert_eq!(wire.len(), frame.len(), "the stated length");
        assert!(matches!(frame.body, Body::Whole(None)), "a sent message holds nothing");
        assert_eq!(frame.sent, frame.len());
        let len = u32::from_le_bytes(wire[..4].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 4, "little-endian length prefix");
        let payload = if zstd { zstd::decode_all(&wire[4..]).unwrap() } else { wire[4..].to_vec() };
        (serde_json::from_slice(&payload).unwrap(), chunks)
    }

    #[test]
    fn frames_plain_and_zstd_messages() {
        for zstd in [false, true] {
            let msg = MapResponse { keep_alive: true, domain: "example.test".into(), ..Default::default() };
            let (v, chunks) = decode(MapFrame::new(1, msg, zstd), zstd);
            assert_eq!(v, json!({"KeepAlive": true, "Domain": "example.test"}));
            assert_eq!(chunks, 1);
        }
    }

    #[test]
    fn a_large_map_comes_in_chunks_that_join_into_its_json() {
        let peers: Vec<RawNode> = (1..=400).map(|i| raw(i, 200)).collect();
        let changed = vec![raw(500, 10), raw(501, 10)];
        for zstd in [false, true] {
            let msg = MapResponse {
                peers: Some(peers.clone()),
                peers_changed: changed.clone(),
                domain: "example.test".into(),
                ..Default::default()
            };
            let (v, chunks) = decode(MapFrame::new(1, msg, zstd), zstd);
            let ids: Vec<u64> = v["Peers"].as_array().unwrap().iter().map(|p| p["ID"].as_u64().unwrap()).collect();
            assert_eq!(ids, (1..=400).collect::<Vec<_>>());
            assert_eq!(v["PeersChanged"][1]["ID"], 501);
            assert_eq!(v["Domain"], "example.test");
            // 400 peers of about 230 bytes: about 92 KB, in chunks of about 16 KiB.
            assert_eq!(chunks, if zstd { 1 } else { 6 });
        }
    }

    #[test]
    fn a_list_opened_at_the_end_of_a_chunk_is_opened_once() {
        // Prefix (4), `{`, `"Peers":[`, a node of 16,368 bytes and `]` end one byte short of
        // a chunk: the next list's key then fills the chunk.
        let node = raw(1, CHUNK - 34);
        assert_eq!(4 + 1 + 9 + node.0.get().len() + 1, CHUNK - 1);
        let msg = MapResponse { peers: Some(vec![node]), peers_changed: vec![raw(2, 10)], ..Default::default() };
        let (v, chunks) = decode(MapFrame::new(1, msg, false), false);
        assert_eq!(v["PeersChanged"][0]["ID"], 2);
        assert_eq!(chunks, 2);
    }

    proptest::proptest! {
        /// Whatever the lists and fields, the chunks join into the message serde would write
        /// whole, and no chunk but one that holds a single large node exceeds a chunk's room.
        #[test]
        fn chunks_join_into_the_whole_message(
            peers in proptest::option::of(proptest::collection::vec(0usize..3000, 0..60)),
            changed in proptest::collection::vec(0usize..3000, 0..20),
            keep_alive: bool,
            domain in "[a-z.]{0,12}",
        ) {
            let nodes = |sizes: &[usize], first: u64| -> Vec<RawNode> {
                sizes.iter().enumerate().map(|(i, &pad)| raw(first + i as u64, pad)).collect()
            };
            let msg = MapResponse {
                keep_alive,
                domain,
                peers: peers.as_deref().map(|p| nodes(p, 1)),
                peers_changed: nodes(&changed, 1000),
                ..Default::default()
            };
            let whole = serde_json::to_value(&msg).unwrap();
            let mut frame = MapFrame::new(1, msg, false);
            let mut chunks = Vec::new();
            while let Some(chunk) = frame.next_chunk() {
                chunks.push(chunk);
            }
            proptest::prop_assert!(chunks.iter().all(|c| c.len() < CHUNK + 3100));
            let (v, _) = decode(MapFrame { len: frame.len(), sent: 0, body: Body::Whole(Some(chunks.concat().into())) }, false);
            proptest::prop_assert_eq!(v, whole);
        }
    }

    #[test]
    fn empty_lists_and_objects_stay_valid_json() {
        let (v, _) =
            decode(MapFrame::new(1, MapResponse { peers: Some(Vec::new()), ..Default::default() }, false), false);
        assert_eq!(v, json!({"Peers": []}));
        let (v, _) = decode(MapFrame::new(1, MapResponse::default(), false), false);
        assert_eq!(v, json!({}));
    }
}
