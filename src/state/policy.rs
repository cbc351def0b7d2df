//! Where the policy comes from and how it is replaced. `policy.mode: file` reads
//! `policy.path` (at start, on SIGHUP and when the file changes); `policy.mode: database`
//! keeps every accepted version in the database (`headscale policy set`). A policy is
//! checked in full (syntax, `user:*@domain` names, compilation, its `tests` and `sshTests`)
//! against the current tailnet before it replaces anything: a refused policy never replaces
//! a working one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::rules::{compile, peer_caps_changed, user_domains};
use super::{Change, Snapshot, State, StateError};
use crate::config::Config;
use crate::db::Db;
use crate::policy::{run_tests, ActivePolicy, ParsedPolicy};

/// Whether policies live in the database rather than a file.
fn in_database(config: &Config) -> bool {
    config.policy.mode == "database"
}

/// A policy's text and when it last changed, if known.
type PolicyText = (String, Option<DateTime<Utc>>);

/// Reads the policy file; `None` when no path is configured.
fn read_file(config: &Config) -> Result<Option<PolicyText>, StateError> {
    let path = &config.policy.path;
    if path.is_empty() {
        return Ok(None);
    }
    let error = |source| StateError::PolicyFile { path: path.clone(), source };
    let text = std::fs::read_to_string(path).map_err(error)?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok().map(DateTime::<Utc>::from);
    Ok(Some((text, modified)))
}

/// The policy text in force at start-up, from the file or the database; `None` allows all.
pub(super) async fn stored_policy(config: &Config, db: &Db) -> Result<Option<String>, StateError> {
    if in_database(config) {
        Ok(db.run(|db| db.policy()).await?.map(|p| p.data))
    } else {
        Ok(read_file(config)?.map(|(text, _)| text))
    }
}

/// `text` checked in full and compiled for the nodes of `snap`.
pub(super) fn checked(text: &str, snap: &Snapshot) -> Result<ActivePolicy, StateError> {
    let source = Arc::new(ParsedPolicy::parse(text)?);
    source.check_domains(&user_domains(snap))?;
    let active = compile(source, snap);
    run_tests(&active.source, &active.compiled)?;
    Ok(active)
}

impl State {
    /// Checks a policy against the current tailnet without applying it.
    pub fn check_policy(&self, text: &str) -> Result<(), StateError> {
        checked(text, &self.snapshot()).map(|_| ())
    }

    /// The policy text in force and when it was last changed; empty when none is set.
    pub async fn policy_text(&self) -> Result<PolicyText, StateError> {
        if in_database(&self.config) {
            let stored = self.db.run(|db| db.policy()).await?;
            Ok(stored.map(|p| (p.data, Some(p.updated_at))).unwrap_or_default())
        } else {
            Ok(read_file(&self.config)?.unwrap_or_default())
        }
    }

    /// Replaces the policy (`policy.mode: database`): checked, stored, then in force.
    /// Returns when it was set.
    pub async fn set_policy(&self, text: &str) -> Result<DateTime<Utc>, StateError> {
        if !in_database(&self.config) {
            return Err(StateError::PolicyNotInDatabase);
        }
        let _w = self.writer.lock().await;
        let active = checked(text, &self.snapshot())?;
        let (data, now) = (text.to_string(), Utc::now());
        self.db.run(move |db| db.set_policy(&data, now)).await?;
        self.install_policy(Some(active));
        self.auto_approve_all().await?;
        Ok(now)
    }

    /// Reads the policy file again (`policy.mode: file`) and puts it in force if it passes
    /// the checks; a refused file leaves the policy in force as it was.
    pub async fn reload_policy_file(&self) -> Result<(), StateError> {
        let _w = self.writer.lock().await;
        let active = read_file(&self.config)?.map(|(text, _)| checked(&text, &self.snapshot())).transpose()?;
        self.install_policy(active);
        self.auto_approve_all().await
    }

    /// Keeps the policy file in force (`policy.mode: file` with a path): reloads it when its
    /// contents change (checked every second). A refused file is logged and the policy in
    /// force stays. (SIGHUP reloads it too: see `app::Running::reload`.)
    pub async fn watch_policy_file(self: Arc<Self>, stopped: impl std::future::Future<Output = ()>) {
        if !self.has_policy_file() {
            return;
        }
        tokio::pin!(stopped);
        let mut last = read_file(&self.config).ok().flatten().map(|(text, _)| text);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tick.tick() => {}
            }
            let current = read_file(&self.config).ok().flatten().map(|(text, _)| text);
            if current == last {
                continue;
            }
            last = current;
            self.reload_policy_file_logged().await;
        }
    }

    /// Whether the policy comes from a file (`policy.mode: file` with a path).
    pub fn has_policy_file(&self) -> bool {
        !in_database(&self.config) && !self.config.policy.path.is_empty()
    }

    /// Reloads the policy file, logging the outcome.
    pub async fn reload_policy_file_logged(&self) {
        match self.reload_policy_file().await {
            Ok(()) => tracing::info!(path = %self.config.policy.path, "policy reloaded"),
            Err(e) => tracing::error!(error = %e, "policy file refused; the policy in force stays"),
        }
    }

    /// Publishes a view with `active` in force. Sessions re-derive their rules; peers whose
    /// capabilities changed are sent again. Called with the writer lock held.
    fn install_policy(&self, active: Option<ActivePolicy>) {
        let snap = self.snapshot();
        let next = Arc::new(snap.policy.successor(active, snap.policy.primaries().clone()));
        let mut changes: Vec<Change> = peer_caps_changed(&snap.policy, &next, &snap)
            .into_iter()
            .map(|id| Change::Node { id, patch: None })
            .collect();
        changes.push(Change::Rules);
        self.publish(
            |s| {
                s.policy = next;
                s.policy_stale = false;
            },
            changes,
        );
    }

    /// Compiles the policy for the nodes added since it was last compiled (see
    /// `rules::refresh`), once per burst: waits `POLICY_COALESCE` after the first addition,
    /// then compiles under the writer lock and approves the new nodes' routes the policy's
    /// `autoApprovers` allow. Holds no reference to the state while it waits, and ends at its
    /// next wake-up once the state is gone.
    pub async fn catch_up_policy(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        drop(self);
        loop {
            let Some(state) = weak.upgrade() else { return };
            let stale = state.policy_stale.clone();
            drop(state);
            stale.notified().await;
            tokio::time::sleep(POLICY_COALESCE).await;
            let Some(state) = weak.upgrade() else { return };
            let _w = state.writer.lock().await;
            // Another change may have compiled meanwhile; the new nodes' routes still need
            // the approvals the stale policy could not give.
            if state.snapshot().policy_stale {
                state.publish(|s| s.policy_stale = false, Vec::new());
            }
            if let Err(e) = state.auto_approve_all().await {
                tracing::error!(error = %e, "cannot store the routes the policy approves for new nodes");
            }
        }
    }
}

/// How long the policy may lag behind added nodes, so that a burst of registrations is
/// compiled once.
const POLICY_COALESCE: Duration = Duration::from_millis(50);
