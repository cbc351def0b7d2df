//! What a correct map is, and one client's map checked against it. The [`Expectation`] lists
//! every registered node with its tailnet addresses and endpoints, and is revised one node at
//! a time as endpoints change. A [`MapView`] folds the updates of one map session and keeps
//! the set of nodes it holds wrongly, rechecking only the nodes an update or a revision
//! touched, so that thousands of views stay cheap to keep exact.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use ts_control::{NodeId, TailnetAddress};

use super::decode::{MapUpdate, Peer};

/// What every map must show of one node (and what a map holds of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Its tailnet addresses, as the server's node list gives them.
    pub address: TailnetAddress,
    /// The endpoints it last announced.
    pub endpoints: Vec<SocketAddr>,
}

impl NodeFacts {
    /// The same addresses and the same endpoints, in any order.
    fn agrees_with(&self, other: &NodeFacts) -> bool {
        self.address == other.address
            && self.endpoints.len() == other.endpoints.len()
            && self.endpoints.iter().all(|e| other.endpoints.contains(e))
    }
}

/// What every client's map must hold: all registered nodes, at one revision.
#[derive(Debug, Clone)]
pub struct Expectation {
    nodes: HashMap<NodeId, NodeFacts>,
    /// The node each revision changed: revision `r` (from 1) changed `log[r - 1]`.
    log: Vec<NodeId>,
}

impl Expectation {
    /// Revision 0: these nodes, as they are.
    pub fn new(nodes: HashMap<NodeId, NodeFacts>) -> Expectation {
        Expectation { nodes, log: Vec::new() }
    }

    /// How many revisions came before this one.
    pub fn revision(&self) -> u64 {
        self.log.len() as u64
    }

    /// The next revision: node `id` announced `endpoints`.
    pub fn with_endpoints(&self, id: NodeId, endpoints: Vec<SocketAddr>) -> Expectation {
        let mut next = self.clone();
        if let Some(facts) = next.nodes.get_mut(&id) {
            facts.endpoints = endpoints;
        }
        next.log.push(id);
        next
    }

    fn node(&self, id: NodeId) -> Option<&NodeFacts> {
        self.nodes.get(&id)
    }

    /// The nodes changed after `revision`, possibly with repeats.
    fn changed_since(&self, revision: u64) -> &[NodeId] {
        self.log.get(revision as usize..).unwrap_or_default()
    }
}

/// One client's map in one session, and which nodes it holds wrongly.
#[derive(Debug)]
pub struct MapView {
    me: NodeId,
    /// Its own node as the map gave it: id and addresses.
    own: Option<(NodeId, TailnetAddress)>,
    peers: HashMap<NodeId, NodeFacts>,
    /// Nodes missing, unexpected or different from the expectation (itself included).
    wrong: BTreeSet<NodeId>,
    /// The expectation revision the view was last checked against.
    revision: u64,
}

impl MapView {
    /// An empty map of node `me`: every expected node is still wrong.
    pub fn new(me: NodeId, expected: &Expectation) -> MapView {
        MapView {
            me,
            own: None,
            peers: HashMap::new(),
            wrong: expected.nodes.keys().copied().collect(),
            revision: expected.revision(),
        }
    }

    /// Whether the map is complete and correct for the revision it was checked against.
    pub fn is_correct(&self) -> bool {
        self.wrong.is_empty()
    }

    /// The revision the view was last checked against.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Folds one map update into the view, as the client applies it: a full peer list
    /// replaces the peers, else removals, then whole peers, then endpoint patches.
    pub fn apply(&mut self, update: MapUpdate, expected: &Expectation) {
        if let Some(own) = update.own {
            self.own = Some((own.id, own.address));
            self.recheck(self.me, expected);
        }
        if let Some(peers) = update.peers {
            self.peers = peers.into_iter().map(|p| (p.id, held(p))).collect();
            self.recheck_all(expected);
            return;
        }
        for id in update.removed {
            self.peers.remove(&id);
            self.recheck(id, expected);
        }
        for peer in update.changed {
            let id = peer.id;
            self.peers.insert(id, held(peer));
            self.recheck(id, expected);
        }
        for (id, endpoints) in update.endpoints {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.endpoints = endpoints;
            }
            self.recheck(id, expected);
        }
    }

    /// Checks the view against a newer revision, looking only at the nodes it changed.
    pub fn expect(&mut self, expected: &Expectation) {
        if expected.revision() <= self.revision {
            return;
        }
        for &id in expected.changed_since(self.revision) {
            self.recheck(id, expected);
        }
        self.revision = expected.revision();
    }

    /// What is wrong, in a few words per node, for error messages.
    pub fn describe(&self, expected: &Expectation) -> String {
        if self.is_correct() {
            return "its map is correct".into();
        }
        let shown: Vec<String> = self.wrong.iter().take(3).map(|&id| self.explain(id, expected)).collect();
        format!("{} nodes wrong in its map: {}", self.wrong.len(), shown.join("; "))
    }

    fn explain(&self, id: NodeId, expected: &Expectation) -> String {
        let want = expected.node(id);
        if id == self.me {
            return match (&self.own, want) {
                (None, _) => "its own node was not received".into(),
                (Some((got, address)), want) => {
                    format!("its own node is {got} at {address:?}, expected {id} at {:?}", want.map(|f| &f.address))
                }
            };
        }
        match (self.peers.get(&id), want) {
            (None, _) => format!("peer {id} is missing"),
            (Some(_), None) => format!("peer {id} is not another registered node"),
            (Some(held), Some(facts)) => format!(
                "peer {id} is at {:?} with endpoints {:?}, expected {:?} with {:?}",
                held.address, held.endpoints, facts.address, facts.endpoints
            ),
        }
    }

    fn recheck_all(&mut self, expected: &Expectation) {
        // Usually nothing is wrong: the set is built from what is, not node by node.
        let missing_or_different = expected.nodes.keys().filter(|&&id| !self.is_right(id, expected));
        let unexpected = self.peers.keys().filter(|id| !expected.nodes.contains_key(id));
        self.wrong = missing_or_different.chain(unexpected).copied().collect();
    }

    fn recheck(&mut self, id: NodeId, expected: &Expectation) {
        let right = self.is_right(id, expected);
        if right {
            self.wrong.remove(&id);
        } else {
            self.wrong.insert(id);
        }
    }

    /// Whether the view holds node `id` as `expected` says (or, not expected, does not hold it).
    fn is_right(&self, id: NodeId, expected: &Expectation) -> bool {
        let want = expected.node(id);
        if id == self.me {
            return !self.peers.contains_key(&id)
                && matches!((&self.own, want), (Some((got, address)), Some(facts)) if *got == id && *address == facts.address);
        }
        match (self.peers.get(&id), want) {
            (None, None) => true,
            (Some(held), Some(facts)) => held.agrees_with(facts),
            _ => false,
        }
    }
}

fn held(peer: Peer) -> NodeFacts {
    NodeFacts { address: peer.address, endpoints: peer.endpoints }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(id: NodeId) -> TailnetAddress {
        TailnetAddress {
            ipv4: format!("100.64.0.{id}/32").parse().unwrap(),
            ipv6: format!("fd7a:115c:a1e0::{id}/128").parse().unwrap(),
        }
    }

    fn endpoint(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], port))
    }

    fn expectation(ids: &[NodeId]) -> Expectation {
        Expectation::new(
            ids.iter().map(|&id| (id, NodeFacts { address: address(id), endpoints: vec![endpoint(1)] })).collect(),
        )
    }

    /// Node `id` at the addresses of `at`, with one endpoint on `port`.
    fn peer(id: NodeId, at: NodeId, port: u16) -> Peer {
        Peer { id, address: address(at), endpoints: vec![endpoint(port)] }
    }

    fn first_map(me: NodeId, peers: Vec<Peer>) -> MapUpdate {
        MapUpdate { own: Some(peer(me, me, 1)), peers: Some(peers), ..MapUpdate::default() }
    }

    #[test]
    fn a_full_map_with_every_other_node_is_correct() {
        let exp = expectation(&[1, 2, 3]);
        let mut view = MapView::new(1, &exp);
        assert!(!view.is_correct());
        view.apply(first_map(1, vec![peer(2, 2, 1)]), &exp);
        assert!(!view.is_correct(), "node 3 is missing");
        assert!(view.describe(&exp).contains("peer 3 is missing"), "{}", view.describe(&exp));
        view.apply(MapUpdate { changed: vec![peer(3, 3, 1)], ..MapUpdate::default() }, &exp);
        assert!(view.is_correct(), "{}", view.describe(&exp));
    }

    #[test]
    fn itself_as_a_peer_or_an_unknown_peer_is_wrong() {
        let exp = expectation(&[1, 2]);
        let mut view = MapView::new(1, &exp);
        view.apply(first_map(1, vec![peer(1, 1, 1), peer(2, 2, 1)]), &exp);
        assert!(!view.is_correct());
        view.apply(MapUpdate { peers: Some(vec![peer(2, 2, 1), peer(9, 9, 1)]), ..MapUpdate::default() }, &exp);
        assert!(view.describe(&exp).contains("peer 9 is not another registered node"), "{}", view.describe(&exp));
        view.apply(MapUpdate { removed: vec![9], ..MapUpdate::default() }, &exp);
        assert!(view.is_correct(), "{}", view.describe(&exp));
    }

    #[test]
    fn a_wrong_own_node_is_reported() {
        let exp = expectation(&[1, 2]);
        let mut view = MapView::new(1, &exp);
        view.apply(
            MapUpdate { own: Some(peer(2, 2, 1)), peers: Some(vec![peer(2, 2, 1)]), ..MapUpdate::default() },
            &exp,
        );
        assert!(view.describe(&exp).contains("its own node is 2"), "{}", view.describe(&exp));
    }

    #[test]
    fn an_endpoint_revision_is_met_by_a_patch() {
        let exp = expectation(&[1, 2]);
        let mut view = MapView::new(1, &exp);
        view.apply(first_map(1, vec![peer(2, 2, 1)]), &exp);
        assert!(view.is_correct());
        let next = exp.with_endpoints(2, vec![endpoint(2)]);
        view.expect(&next);
        assert_eq!(view.revision(), 1);
        assert!(!view.is_correct(), "the old endpoints no longer match");
        view.apply(MapUpdate { endpoints: vec![(2, vec![endpoint(2)])], ..MapUpdate::default() }, &next);
        assert!(view.is_correct(), "{}", view.describe(&next));
    }

    #[test]
    fn an_update_before_its_revision_counts_once_the_revision_arrives() {
        let exp = expectation(&[1, 2]);
        let mut view = MapView::new(1, &exp);
        view.apply(first_map(1, vec![peer(2, 2, 1)]), &exp);
        view.apply(MapUpdate { endpoints: vec![(2, vec![endpoint(3)])], ..MapUpdate::default() }, &exp);
        assert!(!view.is_correct());
        let skipped = exp.with_endpoints(2, vec![endpoint(2)]).with_endpoints(2, vec![endpoint(3)]);
        view.expect(&skipped);
        assert!(view.is_correct(), "{}", view.describe(&skipped));
    }

    #[test]
    fn wrong_addresses_are_reported() {
        let exp = expectation(&[1, 2]);
        let mut view = MapView::new(1, &exp);
        view.apply(first_map(1, vec![peer(2, 7, 1)]), &exp);
        assert!(view.describe(&exp).starts_with("1 nodes wrong in its map: peer 2 is at"), "{}", view.describe(&exp));
    }
}
