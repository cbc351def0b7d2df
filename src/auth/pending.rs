//! Interactive registrations waiting for an admin: a client without a key gets an AuthURL, and
//! its follow-up request waits here until `headscale auth register` approves it, or it expires.
//!
//! Anyone who completes a Noise handshake can start one, so what they cost is bounded: one per
//! machine (a machine asking again keeps its URL), a fixed number in all (when full, new ones
//! are refused and those waiting are kept, so a flood cannot push out an admin's), and of each
//! request only what registering needs ([`trimmed`]: the node key, a few short host fields,
//! the routes and tags asked for), never the rest of the host info a client sends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use tokio::sync::watch;

use crate::model::NodeId;
use crate::tailcfg::{Hostinfo, MachineKey, RegisterRequest};

/// The longest host field kept (hostname, OS, versions), in bytes.
const MAX_FIELD: usize = 256;
/// The most routes and the most tags kept from a request.
const MAX_ITEMS: usize = 256;

/// No room for another registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many registrations are waiting for approval ({0}); try again later")]
pub struct PendingFull(pub usize);

/// The id of a pending registration (`hskey-authreq-…`), the last segment of its AuthURL.
pub type AuthId = String;

/// How a pending registration ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved(NodeId),
    Rejected(String),
}

/// One registration waiting for approval.
#[derive(Debug)]
pub struct PendingRegistration {
    pub machine_key: MachineKey,
    pub request: RegisterRequest,
    created: Instant,
    verdict: watch::Sender<Option<Verdict>>,
}

/// All pending registrations, bounded in number and age.
#[derive(Debug)]
pub struct PendingRegistrations {
    entries: Mutex<HashMap<AuthId, PendingRegistration>>,
    ttl: Duration,
    max_entries: usize,
}

impl PendingRegistrations {
    /// An empty set whose entries live `ttl`, at most `max_entries` at once.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        PendingRegistrations { entries: Mutex::new(HashMap::new()), ttl, max_entries }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AuthId, PendingRegistration>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a registration and returns its id; a machine that already has one waiting gets
    /// that one back, holding this request.
    pub fn start(&self, machine_key: MachineKey, request: RegisterRequest) -> Result<AuthId, PendingFull> {
        let mut entries = self.lock();
        self.purge(&mut entries);
        let request = trimmed(request);
        if let Some((id, p)) = entries.iter_mut().find(|(_, p)| p.machine_key == machine_key) {
            p.request = request;
            return Ok(id.clone());
        }
        let id = format!("hskey-authreq-{}", Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24));
        self.add(&mut entries, id.clone(), machine_key, request)?;
        Ok(id)
    }

    /// Starts a registration under an id chosen by the caller (`debug create-node`),
    /// replacing any live one with that id.
    pub fn insert(&self, id: AuthId, machine_key: MachineKey, request: RegisterRequest) -> Result<(), PendingFull> {
        let mut entries = self.lock();
        self.purge(&mut entries);
        entries.remove(&id);
        self.add(&mut entries, id, machine_key, trimmed(request))
    }

    fn purge(&self, entries: &mut HashMap<AuthId, PendingRegistration>) {
        let ttl = self.ttl;
        entries.retain(|_, p| p.created.elapsed() < ttl);
    }

    fn add(
        &self,
        entries: &mut HashMap<AuthId, PendingRegistration>,
        id: AuthId,
        machine_key: MachineKey,
        request: RegisterRequest,
    ) -> Result<(), PendingFull> {
        if entries.len() >= self.max_entries {
            return Err(PendingFull(self.max_entries));
        }
        let (verdict, _) = watch::channel(None);
        entries.insert(id, PendingRegistration { machine_key, request, created: Instant::now(), verdict });
        Ok(())
    }

    /// How many registrations are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes to the verdict of a live registration started by this machine.
    pub fn watch(&self, id: &str, machine_key: &MachineKey) -> Option<watch::Receiver<Option<Verdict>>> {
        let entries = self.lock();
        let p = entries.get(id)?;
        (p.machine_key == *machine_key && p.created.elapsed() < self.ttl).then(|| p.verdict.subscribe())
    }

    /// The machine key and request of a live registration.
    pub fn get(&self, id: &str) -> Option<(MachineKey, RegisterRequest)> {
        let entries = self.lock();
        let p = entries.get(id).filter(|p| p.created.elapsed() < self.ttl)?;
        Some((p.machine_key, p.request.clone()))
    }

    /// Ends a registration with a verdict, waking its waiting request.
    pub fn finish(&self, id: &str, verdict: Verdict) -> bool {
        match self.lock().remove(id) {
            Some(p) => {
                let _ = p.verdict.send(Some(verdict));
                true
            }
            None => false,
        }
    }
}

/// What a waiting registration keeps of its request.
pub fn trimmed(request: RegisterRequest) -> RegisterRequest {
    let short = |mut s: String| {
        if s.len() > MAX_FIELD {
            let end = (0..=MAX_FIELD).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
            s.truncate(end);
        }
        s
    };
    let hostinfo = request.hostinfo.map(|h| Hostinfo {
        ipn_version: short(h.ipn_version),
        os: short(h.os),
        os_version: short(h.os_version),
        app: short(h.app),
        hostname: short(h.hostname),
        routable_ips: h.routable_ips.into_iter().take(MAX_ITEMS).collect(),
        request_tags: h.request_tags.into_iter().take(MAX_ITEMS).map(short).collect(),
        ..Hostinfo::default()
    });
    RegisterRequest {
        version: request.version,
        node_key: request.node_key,
        old_node_key: request.old_node_key,
        hostinfo,
        ephemeral: request.ephemeral,
        ..RegisterRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_request_wakes_on_verdict() {
        let p = PendingRegistrations::new(Duration::from_secs(60), 10);
        let mk = MachineKey([1; 32]);
        let id = p.start(mk, RegisterRequest::default()).unwrap();
        assert!(p.watch(&id, &MachineKey([2; 32])).is_none(), "another machine cannot wait on it");
        let mut rx = p.watch(&id, &mk).unwrap();
        assert!(p.finish(&id, Verdict::Approved(7)));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), Some(Verdict::Approved(7)));
        assert!(p.get(&id).is_none());
    }

    #[test]
    fn bounded_per_machine_and_in_all_keeping_those_waiting() {
        let p = PendingRegistrations::new(Duration::from_secs(60), 2);
        let first = p.start(MachineKey([1; 32]), RegisterRequest::default()).unwrap();
        let again = p.start(MachineKey([1; 32]), RegisterRequest { version: 7, ..Default::default() }).unwrap();
        assert_eq!(again, first, "a machine asking again keeps its URL");
        assert_eq!(p.get(&first).unwrap().1.version, 7, "with its latest request");
        p.start(MachineKey([2; 32]), RegisterRequest::default()).unwrap();
        assert_eq!(p.start(MachineKey([3; 32]), RegisterRequest::default()), Err(PendingFull(2)));
        assert!(p.get(&first).is_some(), "a flood does not push out those waiting");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn only_what_registering_needs_is_kept() {
        let mut other = std::collections::BTreeMap::new();
        other.insert("Services".to_string(), serde_json::Value::from(vec!["x"; 1000]));
        let req = RegisterRequest {
            version: 130,
            node_key: crate::tailcfg::NodeKey([5; 32]),
            hostinfo: Some(Hostinfo {
                hostname: "é".repeat(1000),
                request_tags: vec!["tag:a".into(); 1000],
                other,
                ..Default::default()
            }),
            ..Default::default()
        };
        let kept = trimmed(req);
        let h = kept.hostinfo.unwrap();
        assert!(h.hostname.len() <= MAX_FIELD && h.hostname.starts_with('é'));
        assert_eq!(h.request_tags.len(), MAX_ITEMS);
        assert!(h.other.is_empty());
        assert_eq!(kept.node_key, crate::tailcfg::NodeKey([5; 32]));
    }
}
