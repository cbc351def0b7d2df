//! Interactive registrations waiting for an admin: a client without a key gets an AuthURL, and
//! its follow-up request waits here until `headscale auth register` approves it, or it expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use tokio::sync::watch;

use crate::model::NodeId;
use crate::tailcfg::{MachineKey, RegisterRequest};

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

    /// Starts a registration and returns its id.
    pub fn start(&self, machine_key: MachineKey, request: RegisterRequest) -> AuthId {
        let id = format!("hskey-authreq-{}", Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24));
        self.insert(id.clone(), machine_key, request);
        id
    }

    /// Starts a registration under an id chosen by the caller (`debug create-node`),
    /// replacing any live one with that id.
    pub fn insert(&self, id: AuthId, machine_key: MachineKey, request: RegisterRequest) {
        let mut entries = self.lock();
        let ttl = self.ttl;
        entries.retain(|_, p| p.created.elapsed() < ttl);
        if entries.len() >= self.max_entries {
            if let Some(oldest) = entries.iter().min_by_key(|(_, p)| p.created).map(|(k, _)| k.clone()) {
                entries.remove(&oldest);
            }
        }
        let (verdict, _) = watch::channel(None);
        entries.insert(id, PendingRegistration { machine_key, request, created: Instant::now(), verdict });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_request_wakes_on_verdict() {
        let p = PendingRegistrations::new(Duration::from_secs(60), 10);
        let mk = MachineKey([1; 32]);
        let id = p.start(mk, RegisterRequest::default());
        assert!(p.watch(&id, &MachineKey([2; 32])).is_none(), "another machine cannot wait on it");
        let mut rx = p.watch(&id, &mk).unwrap();
        assert!(p.finish(&id, Verdict::Approved(7)));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), Some(Verdict::Approved(7)));
        assert!(p.get(&id).is_none());
    }

    #[test]
    fn bounded_in_number() {
        let p = PendingRegistrations::new(Duration::from_secs(60), 2);
        let a = p.start(MachineKey([1; 32]), RegisterRequest::default());
        p.start(MachineKey([2; 32]), RegisterRequest::default());
        p.start(MachineKey([3; 32]), RegisterRequest::default());
        assert_eq!(p.lock().len(), 2);
        let _ = a;
    }
}
