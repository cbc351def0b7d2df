//! Registration: pre-auth keys, re-registration of known nodes, logout, node-key rotation and
//! the interactive flow completed by an admin. A refused registration leaves nothing behind.
//! Tags a client asks for (`Hostinfo.RequestTags`) are checked here, once: a tagged key permits
//! its own tags; otherwise the registering user must own every tag in the policy's `tagOwners`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{Change, NodeEntry, State, StateError};
use crate::auth::{is_legacy_pre_auth_key, split_pre_auth_key, PendingFull, Verdict, LEGACY_KEY_PREFIX};
use crate::model::{KeyHash, Node, PreAuthKey, RegisterMethod, UserId};
use crate::names::{sanitize_hostname, unique_name};
use crate::policy::PolicyUser;
use crate::tailcfg::{MachineKey, NodeKey, RegisterRequest};

/// Why a registration was refused; the text goes back to the client.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("invalid pre-auth key")]
    InvalidKey,
    #[error("pre-auth key has expired")]
    ExpiredKey,
    #[error("pre-auth key has already been used")]
    UsedKey,
    #[error("node key is registered to another machine")]
    NodeKeyInUse,
    #[error("node key does not belong to this machine")]
    NotYourNode,
    #[error("registration was rejected: {0}")]
    Rejected(String),
    #[error("the node key is missing")]
    NoNodeKey,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    PendingFull(#[from] PendingFull),
    #[error(transparent)]
    Tags(#[from] TagsNotPermitted),
    #[error("internal error: {0}")]
    Internal(#[from] StateError),
}

/// The client asked for tags it may not have; the text is the one Tailscale gives.
#[derive(Debug, Clone, thiserror::Error)]
#[error("requested tags [{}] are invalid or not permitted", .0.join(" "))]
pub struct TagsNotPermitted(pub Vec<String>);

/// What a registration request led to.
#[derive(Debug)]
pub enum RegisterOutcome {
    /// The node may use the tailnet.
    Authorized(Arc<NodeEntry>),
    /// The node must be approved: send it this URL.
    NeedsAuth(String),
    /// The node logged out (its key is now expired, or it was deleted if ephemeral).
    LoggedOut(Option<Arc<NodeEntry>>),
}

/// Who a new node will belong to, and how it got there.
struct Grant {
    user_id: Option<UserId>,
    tags: Vec<String>,
    ephemeral: bool,
    method: RegisterMethod,
    key: Option<PreAuthKey>,
}

/// How long a follow-up request waits for the admin before the client is told to ask again.
const FOLLOWUP_WAIT: Duration = Duration::from_secs(60);

impl State {
    /// Handles a `/machine/register` request from the machine that completed the Noise
    /// handshake with `machine_key`.
    pub async fn register(
        &self,
        machine_key: MachineKey,
        req: RegisterRequest,
    ) -> Result<RegisterOutcome, RegisterError> {
        if req.node_key == NodeKey([0; 32]) {
            return Err(RegisterError::NoNodeKey);
        }
        let now = Utc::now();
        let snap = self.snapshot();
        if let Some(holder) = snap.node_by_key(&req.node_key) {
            if holder.node.machine_key != machine_key {
                return Err(RegisterError::NodeKeyInUse);
            }
        }
        let existing = snap.node_by_machine(&machine_key).cloned();

        if let Some(expiry) = req.expiry.filter(|e| *e <= now) {
            let node = existing.ok_or(RegisterError::NotYourNode)?;
            if node.node.node_key != req.node_key {
                return Err(RegisterError::NotYourNode);
            }
            let _ = expiry;
            return Ok(RegisterOutcome::LoggedOut(self.logout(node.node.id).await?));
        }

        if let Some(e) = &existing {
            if e.node.node_key == req.node_key && !e.is_expired(now) {
                return Ok(RegisterOutcome::Authorized(e.clone()));
            }
        }

        if !req.followup.is_empty() {
            return self.follow_up(machine_key, req).await;
        }

        match req.auth.as_ref().map(|a| a.auth_key.as_str()).filter(|k| !k.is_empty()) {
            Some(auth_key) => {
                let opened = self.open_pre_auth_key(auth_key).await?;
                let mut w = self.writer.lock().await;
                // The key as it is now: it may have been used, expired or deleted meanwhile.
                let key = w.keys.iter().find(|k| k.id == opened.id).cloned().ok_or(RegisterError::InvalidKey)?;
                check_usable(&key, now)?;
                let (user_id, tags) = self.key_owner(&key, &req)?;
                let grant = Grant {
                    user_id,
                    tags,
                    ephemeral: key.ephemeral || req.ephemeral,
                    method: RegisterMethod::AuthKey,
                    key: Some(key.clone()),
                };
                let entry = self.enroll(&mut w, machine_key, &req, grant).await?;
                if !key.reusable {
                    if let Some(k) = w.keys.iter_mut().find(|k| k.id == key.id) {
                        k.used = true;
                    }
                }
                Ok(RegisterOutcome::Authorized(entry))
            }
            None => {
                let id = self.pending.start(machine_key, req)?;
                Ok(RegisterOutcome::NeedsAuth(self.auth_url(&id)))
            }
        }
    }

    /// The stored key an auth-key string opens. The candidates are copied under the writer lock
    /// and the secret is checked after it is released (a Headscale bcrypt hash is slow); a
    /// bcrypt hash that matched is then replaced by the secret's SHA-256.
    async fn open_pre_auth_key(&self, auth_key: &str) -> Result<PreAuthKey, RegisterError> {
        let (candidates, secret): (Vec<PreAuthKey>, &str) = {
            let w = self.writer.lock().await;
            match split_pre_auth_key(auth_key) {
                Some((prefix, secret)) => (w.keys.iter().filter(|k| k.prefix == prefix).cloned().collect(), secret),
                // A plain-text key of an older Headscale, kept from a database taken over.
                None if is_legacy_pre_auth_key(auth_key) => {
                    (w.keys.iter().filter(|k| k.prefix.starts_with(LEGACY_KEY_PREFIX)).cloned().collect(), auth_key)
                }
                None => return Err(RegisterError::InvalidKey),
            }
        };
        for key in candidates {
            if crate::auth::matches(&key.hash, secret).await {
                if key.hash.is_bcrypt() {
                    self.rehash_pre_auth_key(&key, secret).await?;
                }
                return Ok(key);
            }
        }
        Err(RegisterError::InvalidKey)
    }

    /// Stores the SHA-256 of a key's secret in place of its bcrypt hash.
    async fn rehash_pre_auth_key(&self, key: &PreAuthKey, secret: &str) -> Result<(), StateError> {
        let new = KeyHash::of(secret);
        let mut w = self.writer.lock().await;
        let (id, old, stored) = (key.id, key.hash.clone(), new.clone());
        if self.db.run(move |db| db.rehash_pre_auth_key(id, &old, &stored)).await? {
            if let Some(k) = w.keys.iter_mut().find(|k| k.id == id) {
                k.hash = new;
            }
        }
        Ok(())
    }

    fn auth_url(&self, id: &str) -> String {
        format!("{}/register/{id}", self.config.server_url.trim_end_matches('/'))
    }

    /// Waits for the admin to decide on an interactive registration.
    async fn follow_up(&self, machine_key: MachineKey, req: RegisterRequest) -> Result<RegisterOutcome, RegisterError> {
        let id = req.followup.rsplit('/').next().unwrap_or_default().to_string();
        let Some(mut verdict) = self.pending.watch(&id, &machine_key) else {
            // Unknown or expired: start over with a new URL.
            let id = self.pending.start(machine_key, RegisterRequest { followup: String::new(), ..req })?;
            return Ok(RegisterOutcome::NeedsAuth(self.auth_url(&id)));
        };
        let decided = tokio::time::timeout(FOLLOWUP_WAIT, verdict.wait_for(Option::is_some)).await;
        let outcome = match decided {
            Ok(Ok(v)) => v.clone(),
            Ok(Err(_)) | Err(_) => None,
        };
        match outcome {
            Some(Verdict::Approved(node_id)) => {
                let entry = self.snapshot().node(node_id).cloned().ok_or(StateError::NodeNotFound(node_id))?;
                Ok(RegisterOutcome::Authorized(entry))
            }
            Some(Verdict::Rejected(why)) => Err(RegisterError::Rejected(why)),
            None => Ok(RegisterOutcome::NeedsAuth(req.followup)),
        }
    }

    /// Completes an interactive registration for a user (`headscale auth register`).
    pub async fn approve_registration(&self, auth_id: &str, user_name: &str) -> Result<Arc<NodeEntry>, StateError> {
        let (machine_key, req) =
            self.pending.get(auth_id).ok_or_else(|| StateError::RegistrationNotFound(auth_id.to_string()))?;
        let user = self
            .snapshot()
            .user_by_name(user_name)
            .cloned()
            .ok_or_else(|| StateError::UserNotFound(user_name.to_string()))?;
        let requested = requested_tags(&req);
        if let Err(refused) = self.check_owned(user.id, &requested) {
            self.pending.finish(auth_id, Verdict::Rejected(refused.to_string()));
            return Err(refused.into());
        }
        let (user_id, tags) = if requested.is_empty() { (Some(user.id), Vec::new()) } else { (None, requested) };
        let mut w = self.writer.lock().await;
        let grant = Grant { user_id, tags, ephemeral: req.ephemeral, method: RegisterMethod::Cli, key: None };
        let entry = self.enroll(&mut w, machine_key, &req, grant).await.map_err(|e| match e {
            RegisterError::Internal(e) => e,
            other => StateError::RegistrationNotFound(other.to_string()),
        })?;
        self.pending.finish(auth_id, Verdict::Approved(entry.node.id));
        Ok(entry)
    }

    /// Who a node registered with `key` belongs to: the key's tags when it has some (the client
    /// may ask for no others), else the tags the client asked for if the key's user owns them
    /// all, else the key's user.
    fn key_owner(
        &self,
        key: &PreAuthKey,
        req: &RegisterRequest,
    ) -> Result<(Option<UserId>, Vec<String>), TagsNotPermitted> {
        let requested = requested_tags(req);
        if !key.tags.is_empty() {
            let foreign: Vec<String> = requested.into_iter().filter(|t| !key.tags.contains(t)).collect();
            return if foreign.is_empty() { Ok((None, key.tags.clone())) } else { Err(TagsNotPermitted(foreign)) };
        }
        match key.user_id {
            _ if requested.is_empty() => Ok((key.user_id, Vec::new())),
            Some(user) => self.check_owned(user, &requested).map(|()| (None, requested)),
            None => Err(TagsNotPermitted(requested)),
        }
    }

    /// Checks that `user` owns every tag in `tags` under the policy in force; without a
    /// policy no tag is defined, so none may be asked for.
    fn check_owned(&self, user: UserId, tags: &[String]) -> Result<(), TagsNotPermitted> {
        if tags.is_empty() {
            return Ok(());
        }
        let snap = self.snapshot();
        let users: Vec<PolicyUser> = snap.users.values().map(|u| PolicyUser::from(&**u)).collect();
        let owner = users.iter().find(|u| u.id == user);
        let refused: Vec<String> = tags
            .iter()
            .filter(|tag| {
                let owned =
                    snap.policy.policy().zip(owner).is_some_and(|(p, u)| p.source.user_owns_tag(tag, u, &users));
                !owned
            })
            .cloned()
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(TagsNotPermitted(refused))
        }
    }

    /// Refuses an interactive registration.
    pub fn reject_registration(&self, auth_id: &str, reason: &str) -> Result<(), StateError> {
        if self.pending.finish(auth_id, Verdict::Rejected(reason.to_string())) {
            Ok(())
        } else {
            Err(StateError::RegistrationNotFound(auth_id.to_string()))
        }
    }

    /// Creates the node for a machine, or re-keys the machine's existing node, and publishes it.
    async fn enroll(
        &self,
        w: &mut super::Writer,
        machine_key: MachineKey,
        req: &RegisterRequest,
        grant: Grant,
    ) -> Result<Arc<NodeEntry>, RegisterError> {
        let now = Utc::now();
        let snap = self.snapshot();
        // Checked again under the writer lock: two machines may race for one node key.
        if snap.node_by_key(&req.node_key).is_some_and(|n| n.node.machine_key != machine_key) {
            return Err(RegisterError::NodeKeyInUse);
        }
        let expiry = (!self.config.node.expiry.is_zero() && grant.tags.is_empty())
            .then(|| now + chrono::Duration::from_std(self.config.node.expiry).unwrap_or(chrono::Duration::MAX));
        let hostinfo = req.hostinfo.clone().unwrap_or_default();
        let consume = grant.key.as_ref().filter(|k| !k.reusable).map(|k| k.id);
        let online = snap.node_by_machine(&machine_key).is_some_and(|e| e.online);

        let node = match snap.node_by_machine(&machine_key) {
            Some(existing) => {
                let node = Node {
                    node_key: req.node_key,
                    hostinfo,
                    user_id: grant.user_id,
                    tags: grant.tags,
                    register_method: grant.method,
                    auth_key_id: grant.key.as_ref().map(|k| k.id).or(existing.node.auth_key_id),
                    ephemeral: grant.ephemeral,
                    expiry,
                    ..existing.node.clone()
                };
                let stored = node.clone();
                let ok = match consume {
                    Some(key_id) => self
                        .db
                        .run(move |db| db.update_node_consuming_key(&stored, key_id))
                        .await
                        .map_err(StateError::from)?,
                    None => {
                        self.db.run(move |db| db.update_node(&stored)).await.map_err(StateError::from)?;
                        true
                    }
                };
                if !ok {
                    return Err(RegisterError::UsedKey);
                }
                node
            }
            None => {
                let (ipv4, ipv6) = w.ipam.allocate().map_err(StateError::from)?;
                let hostname =
                    if hostinfo.hostname.is_empty() { "node".to_string() } else { hostinfo.hostname.clone() };
                let given_name = unique_name(&sanitize_hostname(&hostname), |n| snap.given_name_taken(n, None));
                let node = Node {
                    id: 0,
                    machine_key,
                    node_key: req.node_key,
                    disco_key: None,
                    endpoints: Vec::new(),
                    hostinfo,
                    ipv4,
                    ipv6,
                    hostname,
                    given_name,
                    user_id: grant.user_id,
                    register_method: grant.method,
                    tags: grant.tags,
                    auth_key_id: grant.key.as_ref().map(|k| k.id),
                    ephemeral: grant.ephemeral,
                    expiry,
                    last_seen: None,
                    approved_routes: Vec::new(),
                    created_at: now,
                };
                let inserted = self.db.run(move |db| db.insert_node(node, consume)).await;
                match inserted {
                    Ok(Some(node)) => node,
                    other => {
                        for ip in ipv4.map(Into::into).into_iter().chain(ipv6.map(Into::into)) {
                            w.ipam.release(ip);
                        }
                        return match other {
                            Ok(None) => Err(RegisterError::UsedKey),
                            Err(e) => Err(StateError::from(e).into()),
                            Ok(Some(_)) => unreachable!("handled above"),
                        };
                    }
                }
            }
        };
        let id = node.id;
        let entry = NodeEntry::new(node, online);
        self.publish(|s| s.put_node(entry), vec![Change::Node { id, patch: None }]);
        Ok(self.snapshot().node(id).cloned().expect("just published"))
    }
}

/// The tags a client asks for, trimmed, sorted and without repeats.
fn requested_tags(req: &RegisterRequest) -> Vec<String> {
    let mut tags: Vec<String> = req
        .hostinfo
        .iter()
        .flat_map(|h| h.request_tags.iter())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Whether a key may still register a node.
fn check_usable(key: &PreAuthKey, now: chrono::DateTime<Utc>) -> Result<(), RegisterError> {
    if key.is_expired(now) {
        return Err(RegisterError::ExpiredKey);
    }
    if key.used && !key.reusable {
        return Err(RegisterError::UsedKey);
    }
    Ok(())
}
