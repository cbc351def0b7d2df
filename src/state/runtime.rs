//! Write-behind for what connected nodes report about themselves: disco key, endpoints, host
//! info and last-seen time. Those change with every roam and every disconnect; they are
//! published at once and written to the database in one transaction per `FLUSH_EVERY`, from
//! the newest snapshot, so a burst of thousands costs a handful of transactions. A crash loses
//! at most that window of them, and clients report them again when they reconnect. A batch
//! that fails (the database is unreachable) is tried again on its own, sooner or later up
//! to `RETRY_AT_MOST` apart, until it is written or a newer one replaces it. Everything
//! else a node holds (keys, owner, tags, routes, expiry, name) is still written before it is
//! published.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::State;
use crate::model::{Node, NodeId};

/// How long reported fields may wait before they are written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a batch that failed (the waits double from
/// `FLUSH_EVERY`).
const RETRY_AT_MOST: Duration = Duration::from_secs(10);

/// Nodes whose reported fields are newer in the snapshot than in the database.
#[derive(Default)]
pub(super) struct RuntimeQueue {
    pending: Mutex<BTreeSet<NodeId>>,
    wake: Arc<Notify>,
}

/// Whether `new` differs from `old` only in fields the node reports about itself.
pub(super) fn only_reported_fields_differ(old: &Node, new: &Node) -> bool {
    let reported = Node {
        disco_key: new.disco_key,
        endpoints: new.endpoints.clone(),
        hostinfo: new.hostinfo.clone(),
        last_seen: new.last_seen,
        ..old.clone()
    };
    reported == *new
}

impl State {
    /// Queues the node's reported fields for the next batched write.
    pub(super) fn persist_reported_later(&self, id: NodeId) {
        self.runtime.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
        self.runtime.wake.notify_one();
    }

    /// Writes every queued node's reported fields now, as the snapshot holds them. Runs under
    /// the writer lock, so it never overtakes a newer write. Called by the background writer
    /// and when the server stops. False when the write failed and the nodes are queued again.
    pub async fn flush_reported(&self) -> bool {
        let _w = self.writer.lock().await;
        let ids = std::mem::take(&mut *self.runtime.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if ids.is_empty() {
            return true;
        }
        let snap = self.snapshot();
        let nodes: Vec<Node> = ids.iter().filter_map(|id| snap.node(*id)).map(|e| e.node.clone()).collect();
        match self.db.run(move |db| db.update_reported_fields(&nodes)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, nodes = ids.len(), "could not write nodes' endpoints and last-seen times; will retry");
                self.runtime.pending.lock().unwrap_or_else(PoisonError::into_inner).extend(ids);
                false
            }
        }
    }

    /// Starts the background writer; it ends when the state is dropped.
    pub(super) fn spawn_reported_writer(self: &Arc<Self>) {
        let (state, wake): (Weak<State>, _) = (Arc::downgrade(self), self.runtime.wake.clone());
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let mut wait = FLUSH_EVERY;
                loop {
                    tokio::time::sleep(wait).await;
                    let Some(state) = state.upgrade() else { return };
                    if state.flush_reported().await {
                        break;
                    }
                    wait = (wait * 2).min(RETRY_AT_MOST);
                }
            }
        });
    }
}
