//! `State`: the one door for writes. Every change (registration, map-request updates, admin
//! edits, expiry, disconnects) is written to the database first, then published as a new
//! immutable snapshot (the NodeStore) plus a change event that map sessions turn into deltas;
//! only what nodes report about themselves is published first and written shortly after
//! (`runtime`). Readers load the snapshot without locks and never wait for the database.

pub mod api_keys;
mod change;
mod keys;
mod node_admin;
mod nodes;
mod policy;
mod register;
mod rules;
mod runtime;
mod snapshot;
mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, Mutex};

pub use change::{Change, ChangeSet};
pub use register::{RegisterError, RegisterOutcome};
pub use rules::compile as compile_policy;
pub use snapshot::{NodeEntry, Snapshot};

use crate::auth::PendingRegistrations;
use crate::config::Config;
use crate::db::{Db, DbError};
use crate::ipam::Ipam;
use crate::model::{NodeId, PreAuthKey};
use crate::policy::PolicyView;
use crate::tailcfg::DerpMap;

/// How long `/health` waits for the writers' path before it reports a failure.
pub const HEALTH_WAIT: Duration = Duration::from_secs(5);
/// How long one health check answers for: `/health` is open to anyone, and each check
/// queues behind the writes, so checks asked for together share one, at most one a second.
pub const HEALTH_FRESH: Duration = Duration::from_secs(1);

/// A write was refused or failed; the message says which and why.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("user {0:?} not found")]
    UserNotFound(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("user {0:?} still owns nodes; delete them first")]
    UserHasNodes(String),
    #[error("invalid user name {0:?}: use letters, digits, '-', '_', '.' and '@', starting with a letter or digit")]
    InvalidUserName(String),
    #[error("node {0} not found")]
    NodeNotFound(NodeId),
    #[error("pre-auth key {0} not found")]
    KeyNotFound(u64),
    #[error("invalid node name {0:?}: it must be a DNS label (lowercase letters, digits and '-', at most 63)")]
    InvalidNodeName(String),
    #[error("node name {0:?} is already used by another node")]
    NodeNameTaken(String),
    #[error("invalid tag {0:?}: tags look like tag:name")]
    InvalidTag(String),
    #[error("a pre-auth key needs a user or at least one tag")]
    KeyWithoutOwner,
    #[error("registration {0:?} not found or expired")]
    RegistrationNotFound(String),
    #[error(transparent)]
    Exhausted(#[from] crate::ipam::Exhausted),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("cannot read the policy file {path}: {source}")]
    PolicyFile { path: String, source: std::io::Error },
    #[error("the policy can only be changed when policy.mode is database")]
    PolicyNotInDatabase,
    #[error("invalid route {0:?}: routes are IP prefixes such as 10.0.0.0/24 or 0.0.0.0/0")]
    InvalidRoute(String),
    #[error("node {0} is tagged and must keep at least one tag; log it in again as a user to make it user-owned")]
    TagsRequired(NodeId),
    #[error("tag {0:?} is not defined in the policy's tagOwners")]
    TagNotInPolicy(String),
    #[error("invalid registration id {0:?}: it looks like hskey-authreq-<id>")]
    InvalidAuthId(String),
    #[error(transparent)]
    PendingFull(#[from] crate::auth::PendingFull),
    #[error(transparent)]
    Tags(#[from] register::TagsNotPermitted),
}

/// Run-time session bookkeeping: how many map streams each node holds, and an epoch that
/// tells a pending ephemeral clean-up whether the node came back meanwhile.
#[derive(Debug, Default)]
struct Sessions {
    count: HashMap<NodeId, usize>,
    epoch: HashMap<NodeId, u64>,
}

/// The writer's private state, behind one lock so writes are serialized.
struct Writer {
    ipam: Ipam,
    keys: Vec<PreAuthKey>,
    sessions: Sessions,
}

/// The tailnet's state: snapshot for readers, serialized writes, change events.
pub struct State {
    config: Arc<Config>,
    db: Db,
    writer: Mutex<Writer>,
    snapshot: ArcSwap<Snapshot>,
    changes: broadcast::Sender<Arc<ChangeSet>>,
    pending: PendingRegistrations,
    runtime: runtime::RuntimeQueue,
    /// Woken when added nodes make the compiled policy stale (`catch_up_policy`).
    policy_stale: Arc<tokio::sync::Notify>,
    /// The last health check and when it ended; callers queue here while one runs.
    health: Mutex<Option<(tokio::time::Instant, bool)>>,
}

/// How many published change sets a slow session may fall behind before it re-syncs.
const CHANGE_BACKLOG: usize = 4096;

impl State {
    /// Loads everything stored and builds the first snapshot.
    pub async fn load(config: Arc<Config>, db: Db) -> Result<Arc<State>, StateError> {
        let (users, nodes, keys) = db.run(|db| Ok((db.users()?, db.nodes()?, db.pre_auth_keys()?))).await?;
        let mut ipam = Ipam::new(config.prefixes.v4, config.prefixes.v6, config.prefixes.allocation);
        let mut snap = Snapshot::default();
        for u in users {
            snap.users.insert(u.id, Arc::new(u));
        }
        for n in nodes {
            for ip in n.ips() {
                ipam.mark_used(ip);
            }
            snap.put_node(NodeEntry::new(n, false));
        }
        let text = policy::stored_policy(&config, &db).await?;
        let active = text.map(|t| policy::checked(&t, &snap)).transpose()?;
        snap.policy = Arc::new(PolicyView::new(1, active, Default::default(), Arc::from(config.server_url.as_str())));
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
        let state = Arc::new(State {
            config,
            db,
            writer: Mutex::new(Writer { ipam, keys, sessions: Sessions::default() }),
            snapshot: ArcSwap::from_pointee(snap),
            changes,
            pending: PendingRegistrations::new(Duration::from_secs(15 * 60), 1024),
            runtime: Default::default(),
            policy_stale: Default::default(),
            health: Mutex::new(None),
        });
        state.spawn_reported_writer();
        tokio::spawn(state.clone().catch_up_policy());
        state.schedule_ephemeral_cleanup_for_all().await;
        Ok(state)
    }

    /// The current snapshot; never blocks.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Subscribes to change events. Subscribe before reading the snapshot you start from, so
    /// that nothing published in between is missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeSet>> {
        self.changes.subscribe()
    }

    /// The configuration the state was built with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Whether writes go through: the database answers a query made on the writers' path,
    /// after the writes queued before it, within [`HEALTH_WAIT`]. A writer stuck on the
    /// database (a paused or unreachable PostgreSQL) makes this false although another
    /// connection might still answer.
    /// Checks asked for while one runs, or within [`HEALTH_FRESH`] of it, get its answer.
    pub async fn database_ok(&self) -> bool {
        let mut last = self.health.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < HEALTH_FRESH {
                return ok;
            }
        }
        let check = async {
            let _w = self.writer.lock().await;
            self.db.run(|db| Ok(db.ping())).await.unwrap_or(false)
        };
        let ok = tokio::time::timeout(HEALTH_WAIT, check).await.unwrap_or(false);
        *last = Some((tokio::time::Instant::now(), ok));
        ok
    }

    /// Puts `map` in force as the DERP map clients are told; connected clients get it in
    /// their next delta. Returns whether it differed from the one in force.
    pub async fn set_derp_map(&self, map: DerpMap) -> bool {
        let _w = self.writer.lock().await;
        if *self.snapshot().derp_map == map {
            return false;
        }
        self.publish(|s| s.derp_map = Arc::new(map), vec![Change::DerpMap]);
        true
    }

    /// The database handle, for dumps and health checks.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Publishes a new snapshot built by `edit` and announces its changes. Called only with
    /// the writer lock held, after the database write succeeded.
    fn publish(&self, edit: impl FnOnce(&mut Snapshot), mut changes: Vec<Change>) {
        let prev = self.snapshot.load_full();
        let mut next = Snapshot::clone(&prev);
        next.version += 1;
        edit(&mut next);
        rules::refresh(&prev, &mut next, &mut changes);
        if next.policy_stale && !prev.policy_stale {
            self.policy_stale.notify_one();
        }
        let version = next.version;
        self.snapshot.store(Arc::new(next));
        if !changes.is_empty() {
            // No receivers is fine: nobody is connected.
            let _ = self.changes.send(Arc::new(ChangeSet { version, changes }));
        }
    }
}

#[cfg(test)]
mod tests;
