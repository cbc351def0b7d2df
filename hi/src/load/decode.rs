//! What one MapResponse says that the check needs ([`MapUpdate`]), from either of two decoders
//! of the same stream. Strict clients decode with `ts_control::client::map_stream`, the real
//! client's own decoder, so every message is proven acceptable to tailscale-rs. The others
//! read the same frames (u32 little-endian length, JSON) into just the fields checked: the
//! real decoder fills every node from `Node::default()`, which makes a random key pair
//! (`ts_keys`' `Default` for public keys), about 15 µs per peer, so thousands of real decoders
//! in one process would measure themselves rather than the server.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use futures_util::{Stream, StreamExt};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use ts_control::{NodeId, PeerUpdate, StateUpdate, TailnetAddress};

/// A node as the check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub address: TailnetAddress,
    pub endpoints: Vec<SocketAddr>,
}

/// What one MapResponse changes in a client's map.
#[derive(Debug, Default)]
pub struct MapUpdate {
    /// The client's own node.
    pub own: Option<Peer>,
    /// Every peer, replacing the ones held.
    pub peers: Option<Vec<Peer>>,
    pub removed: Vec<NodeId>,
    /// Peers added or replaced whole.
    pub changed: Vec<Peer>,
    /// Peers whose endpoints changed (other patched fields are not checked).
    pub endpoints: Vec<(NodeId, Vec<SocketAddr>)>,
}

impl From<ts_control::Node> for Peer {
    fn from(n: ts_control::Node) -> Peer {
        Peer { id: n.id, address: n.tailnet_address, endpoints: n.underlay_addresses }
    }
}

impl From<StateUpdate> for MapUpdate {
    fn from(u: StateUpdate) -> MapUpdate {
        let mut update = MapUpdate { own: u.node.map(Peer::from), ..MapUpdate::default() };
        match u.peer_update {
            Some(PeerUpdate::Full(nodes)) => update.peers = Some(nodes.into_iter().map(Peer::from).collect()),
            Some(PeerUpdate::Delta { patch, upsert, remove }) => {
                update.removed = remove;
                update.changed = upsert.into_iter().map(Peer::from).collect();
                update.endpoints = patch.into_iter().filter_map(|p| Some((p.id, p.underlay_addresses?))).collect();
            }
            None => {}
        }
        update
    }
}

/// The updates of a map stream, decoded by `ts_control` when `strict`, else by the minimal
/// decoder. The stream ends where the map stream ends; the minimal decoder also ends it
/// with an error item for a message it cannot read.
pub fn updates(reader: impl AsyncRead + Unpin + Send + 'static, strict: bool) -> impl Stream<Item = Result<MapUpdate>> {
    if strict {
        ts_control::client::map_stream(reader).map(|u| Ok(MapUpdate::from(u))).boxed()
    } else {
        futures_util::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match next_frame(&mut reader).await {
                Ok(None) => None,
                Ok(Some(update)) => Some((Ok(update), Some(reader))),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

/// Reads one frame; `None` at the end of the stream.
async fn next_frame(reader: &mut (impl AsyncRead + Unpin)) -> Result<Option<MapUpdate>> {
    let len = match reader.read_u32_le().await {
        Ok(len) => len,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("reading a map message's length"),
    };
    // Read into spare capacity: a full map is about a megabyte, not worth zeroing first.
    let mut json = Vec::with_capacity(len as usize);
    while json.len() < len as usize {
        let left = (len as usize - json.len()) as u64;
        let n = (&mut *reader).take(left).read_buf(&mut json).await.context("reading a map message")?;
        if n == 0 {
            bail!("the stream ended {left} bytes before the end of a map message of {len} bytes");
        }
    }
    let wire: WireResponse = serde_json::from_slice(&json).context("decoding a MapResponse")?;
    Ok(Some(wire.into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireResponse {
    node: Option<WireNode>,
    peers: Option<Vec<WireNode>>,
    peers_changed: Option<Vec<WireNode>>,
    peers_removed: Option<Vec<NodeId>>,
    peers_changed_patch: Option<Vec<WirePatch>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireNode {
    #[serde(rename = "ID")]
    id: NodeId,
    addresses: (Ipv4Net, Ipv6Net),
    #[serde(default)]
    endpoints: Vec<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WirePatch {
    #[serde(rename = "NodeID")]
    node_id: NodeId,
    endpoints: Option<Vec<SocketAddr>>,
}

impl From<WireNode> for Peer {
    fn from(n: WireNode) -> Peer {
        Peer { id: n.id, address: TailnetAddress { ipv4: n.addresses.0, ipv6: n.addresses.1 }, endpoints: n.endpoints }
    }
}

impl From<WireResponse> for MapUpdate {
    fn from(w: WireResponse) -> MapUpdate {
        let peers = |list: Option<Vec<WireNode>>| list.unwrap_or_default().into_iter().map(Peer::from).collect();
        MapUpdate {
            own: w.node.map(Peer::from),
            // As in `ts_control`: a peer list replaces everything and the deltas are ignored.
            peers: w.peers.map(|p| peers(Some(p))),
            removed: w.peers_removed.unwrap_or_default(),
            changed: peers(w.peers_changed),
            endpoints: w
                .peers_changed_patch
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| Some((p.node_id, p.endpoints?)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Frames MapResponses as the server sends them.
    fn frames(responses: &[Value]) -> std::io::Cursor<Vec<u8>> {
        let mut out = Vec::new();
        for r in responses {
            let json = r.to_string().into_bytes();
            out.extend((json.len() as u32).to_le_bytes());
            out.extend(json);
        }
        std::io::Cursor::new(out)
    }

    fn node(id: NodeId, port: u16) -> Value {
        json!({
            "ID": id, "StableID": format!("s{id}"), "Name": format!("n{id}.tailnet.internal."),
            "Key": format!("nodekey:{id:064x}"), "Addresses": [format!("100.64.0.{id}/32"), format!("fd7a:115c:a1e0::{id}/128")],
            "Endpoints": [format!("198.18.0.{id}:{port}")], "Hostinfo": {"Hostname": format!("n{id}")}, "Online": true,
        })
    }

    async fn both(responses: &[Value]) -> (Vec<String>, Vec<String>) {
        let mut out = Vec::new();
        for strict in [true, false] {
            let decoded: Vec<String> =
                updates(frames(responses), strict).map(|u| format!("{:?}", u.expect("decodes"))).collect().await;
            out.push(decoded);
        }
        let lax = out.pop().unwrap();
        (out.pop().unwrap(), lax)
    }

    #[tokio::test]
    async fn both_decoders_read_the_same_updates() {
        let responses = [
            json!({"Node": node(1, 1), "Peers": [node(2, 1), node(3, 1)], "DERPMap": {"Regions": {}}}),
            json!({"PeersChanged": [node(4, 1)], "PeersRemoved": [3], "PeersChangedPatch": [{"NodeID": 2, "Endpoints": ["198.18.0.2:7"]}]}),
            json!({"PeersChangedPatch": [{"NodeID": 2, "Online": false}]}),
            json!({"KeepAlive": true}),
        ];
        let (strict, lax) = both(&responses).await;
        assert_eq!(strict.len(), 4);
        assert_eq!(strict, lax);
    }

    #[tokio::test]
    async fn the_minimal_decoder_reports_a_message_cut_short() {
        let mut wire = frames(&[json!({"KeepAlive": true})]).into_inner();
        wire.truncate(wire.len() - 3);
        let mut decoded = std::pin::pin!(updates(std::io::Cursor::new(wire), false));
        let err = decoded.next().await.expect("an item").expect_err("a cut message");
        assert!(format!("{err:#}").contains("3 bytes before the end"), "{err:#}");
        assert!(decoded.next().await.is_none());
    }

    #[tokio::test]
    async fn the_minimal_decoder_reports_what_it_cannot_read() {
        let mut decoded = std::pin::pin!(updates(frames(&[json!({"Peers": [{"ID": 2}]})]), false));
        let err = decoded.next().await.expect("an item").expect_err("a node without addresses");
        assert!(format!("{err:#}").contains("decoding a MapResponse"), "{err:#}");
        assert!(decoded.next().await.is_none());
    }
}
