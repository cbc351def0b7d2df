//! API keys: create (the full key is returned once), list, expire, delete, and the check of a
//! presented key for the remote admin API (a Headscale bcrypt hash is replaced by the secret's
//! SHA-256 on its first successful use). Keys are not part of the snapshot: they are read
//! from the database when used, and their last-seen time is written at most once per
//! [`LAST_SEEN_RESOLUTION`] per key, so a busy client does not turn every request into a write.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

use super::State;
use crate::auth::{api_key_prefix, generate_api_key, split_api_key};
use crate::db::{ApiKey, DbError};
use crate::model::KeyHash;

/// How stale a key's recorded last use may get before a request records it again.
pub const LAST_SEEN_RESOLUTION: TimeDelta = TimeDelta::seconds(60);

/// Which API key an admin means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeySelector {
    /// The key's numeric id.
    Id(u64),
    /// The key's prefix, bare or as `hskey-api-<prefix>`.
    Prefix(String),
}

impl std::fmt::Display for ApiKeySelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiKeySelector::Id(id) => write!(f, "with id {id}"),
            ApiKeySelector::Prefix(p) => write!(f, "with prefix {p:?}"),
        }
    }
}

/// An API key operation was refused or failed. The messages never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// No key matches the selector.
    #[error("API key {0} not found")]
    NotFound(ApiKeySelector),
    /// The presented text is not of the form `hskey-api-<prefix>-<secret>`.
    #[error("the API key is malformed: expected hskey-api-<prefix>-<secret>")]
    Malformed,
    /// No stored key has the presented prefix.
    #[error("API key {0:?} is not known")]
    Unknown(String),
    /// The prefix is known but the secret does not match.
    #[error("API key {0:?} has a wrong secret")]
    WrongSecret(String),
    /// The key has expired.
    #[error("API key {0:?} expired at {1}")]
    Expired(String, DateTime<Utc>),
}

/// Now, at the precision the database keeps (microseconds), so that what a call returns is
/// what a later read gives back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl State {
    /// Creates an API key valid until `expiration`. Returns the stored key and the full key
    /// text, which is never shown again.
    pub async fn create_api_key(&self, expiration: DateTime<Utc>) -> Result<(ApiKey, String), ApiKeyError> {
        let _w = self.writer.lock().await;
        let generated = generate_api_key();
        let key = ApiKey {
            id: 0,
            prefix: generated.prefix,
            hash: generated.hash,
            expiration: expiration.trunc_subsecs(6),
            created_at: now(),
            last_seen: None,
        };
        let key = self.db.run(move |db| db.insert_api_key(key)).await?;
        Ok((key, generated.full))
    }

    /// Every API key, by id.
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, ApiKeyError> {
        Ok(self.db.run(|db| db.api_keys()).await?)
    }

    /// The key a selector names. Called with the writer lock held, so it stays valid until the
    /// caller's write.
    async fn find_api_key(&self, which: &ApiKeySelector) -> Result<ApiKey, ApiKeyError> {
        let selector = which.clone();
        let found = self
            .db
            .run(move |db| match &selector {
                ApiKeySelector::Id(id) => db.api_key(*id),
                ApiKeySelector::Prefix(text) => db.api_key_by_prefix(api_key_prefix(text)),
            })
            .await?;
        found.ok_or_else(|| ApiKeyError::NotFound(which.clone()))
    }

    /// Expires a key now (a key that expired earlier keeps its time) and returns it.
    pub async fn expire_api_key(&self, which: &ApiKeySelector) -> Result<ApiKey, ApiKeyError> {
        let _w = self.writer.lock().await;
        let mut key = self.find_api_key(which).await?;
        key.expiration = key.expiration.min(now());
        let (id, at) = (key.id, key.expiration);
        self.db.run(move |db| db.set_api_key_expiration(id, at)).await?;
        Ok(key)
    }

    /// Deletes a key.
    pub async fn delete_api_key(&self, which: &ApiKeySelector) -> Result<(), ApiKeyError> {
        let _w = self.writer.lock().await;
        let id = self.find_api_key(which).await?.id;
        self.db.run(move |db| db.delete_api_key(id)).await?;
        Ok(())
    }

    /// Checks a presented `hskey-api-<prefix>-<secret>` and returns the key it opens. Records
    /// the use when the stored last-seen time is older than [`LAST_SEEN_RESOLUTION`].
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<ApiKey, ApiKeyError> {
        let (prefix, secret) = split_api_key(presented).ok_or(ApiKeyError::Malformed)?;
        let lookup = prefix.to_string();
        let mut key = self
            .db
            .run(move |db| db.api_key_by_prefix(&lookup))
            .await?
            .ok_or_else(|| ApiKeyError::Unknown(prefix.to_string()))?;
        if !crate::auth::matches(&key.hash, secret).await {
            return Err(ApiKeyError::WrongSecret(key.prefix));
        }
        let now = now();
        if key.expiration <= now {
            return Err(ApiKeyError::Expired(key.prefix, key.expiration));
        }
        if key.hash.is_bcrypt() {
            // A Headscale key pays the slow check once: its secret's SHA-256 replaces the bcrypt.
            let _w = self.writer.lock().await;
            let (id, old, new) = (key.id, key.hash.clone(), KeyHash::of(secret));
            self.db.run(move |db| db.rehash_api_key(id, &old, &new)).await?;
        }
        if key.last_seen.is_none_or(|seen| now - seen >= LAST_SEEN_RESOLUTION) {
            let _w = self.writer.lock().await;
            let id = key.id;
            self.db.run(move |db| db.set_api_key_last_seen(id, now)).await?;
            key.last_seen = Some(now);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::db::Db;

    async fn state() -> Arc<State> {
        let config = Config::embedded(std::path::Path::new("/nonexistent"));
        State::load(Arc::new(config), Db::open_in_memory().expect("db")).await.expect("state")
    }

    #[tokio::test]
    async fn keys_open_until_expired_or_deleted() {
        let s = state().await;
        let (key, full) = s.create_api_key(Utc::now() + chrono::Duration::days(1)).await.expect("create");
        assert!(full.starts_with(&format!("hskey-api-{}-", key.prefix)));

        let used = s.authenticate_api_key(&full).await.expect("a valid key");
        let seen = used.last_seen.expect("the first use is recorded");
        let again = s.authenticate_api_key(&full).await.expect("still valid");
        assert_eq!(again.last_seen, Some(seen), "a second use within the resolution is not written");
        assert_eq!(s.api_keys().await.expect("list")[0].last_seen, Some(seen));

        let other = if full.ends_with('x') { 'y' } else { 'x' };
        let wrong = format!("{}{other}", &full[..full.len() - 1]);
        assert!(matches!(s.authenticate_api_key(&wrong).await, Err(ApiKeyError::WrongSecret(p)) if p == key.prefix));
        assert!(matches!(s.authenticate_api_key("hskey-api-short-x").await, Err(ApiKeyError::Malformed)));
        let unknown = format!("hskey-api-{}-{}", "z".repeat(12), "s".repeat(64));
        assert!(matches!(s.authenticate_api_key(&unknown).await, Err(ApiKeyError::Unknown(_))));

        let expired =
            s.expire_api_key(&ApiKeySelector::Prefix(format!("hskey-api-{}", key.prefix))).await.expect("expire");
        assert!(expired.expiration <= Utc::now());
        let err = s.authenticate_api_key(&full).await.expect_err("expired");
        assert!(matches!(err, ApiKeyError::Expired(..)));
        assert!(!err.to_string().contains(&full[full.len() - 64..]), "errors never show the secret: {err}");
        let later = s.expire_api_key(&ApiKeySelector::Id(key.id)).await.expect("expire again");
        assert_eq!(later.expiration, expired.expiration, "expiring again keeps the first time");

        s.delete_api_key(&ApiKeySelector::Id(key.id)).await.expect("delete");
        assert!(matches!(s.authenticate_api_key(&full).await, Err(ApiKeyError::Unknown(_))));
        let gone = s.delete_api_key(&ApiKeySelector::Id(key.id)).await.expect_err("already gone");
        assert_eq!(gone.to_string(), format!("API key with id {} not found", key.id));
        assert!(s.api_keys().await.expect("list").is_empty());
    }
}
