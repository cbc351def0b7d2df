//! Writes on pre-auth keys: create (the full key is returned once), expire, delete, list.

use chrono::{DateTime, Utc};

use super::{State, StateError};
use crate::auth::generate_pre_auth_key;
use crate::model::{PreAuthKey, UserId};

/// Whether `tag` has the `tag:name` form.
pub fn valid_tag(tag: &str) -> bool {
    tag.strip_prefix("tag:")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

impl State {
    /// Creates a pre-auth key owned by a user, or by tags (then it registers tagged nodes).
    /// Returns the stored key and the full secret text, which is never shown again.
    pub async fn create_pre_auth_key(
        &self,
        user: Option<UserId>,
        reusable: bool,
        ephemeral: bool,
        expiration: Option<DateTime<Utc>>,
        mut tags: Vec<String>,
    ) -> Result<(PreAuthKey, String), StateError> {
        if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
            return Err(StateError::InvalidTag(bad.clone()));
        }
        tags.sort();
        tags.dedup();
        if user.is_none() && tags.is_empty() {
            return Err(StateError::KeyWithoutOwner);
        }
        if let Some(u) = user {
            if self.snapshot().user(u).is_none() {
                return Err(StateError::UserNotFound(u.to_string()));
            }
        }
        let mut w = self.writer.lock().await;
        let generated = generate_pre_auth_key();
        let key = PreAuthKey {
            id: 0,
            prefix: generated.prefix,
            hash: generated.hash,
            user_id: user,
            reusable,
            ephemeral,
            used: false,
            tags,
            expiration,
            created_at: Utc::now(),
        };
        let key = self.db.run(move |db| db.insert_pre_auth_key(key)).await?;
        w.keys.push(key.clone());
        Ok((key, generated.full))
    }

    /// Every pre-auth key.
    pub async fn pre_auth_keys(&self) -> Vec<PreAuthKey> {
        self.writer.lock().await.keys.clone()
    }

    /// Expires a key now; nodes it registered stay.
    pub async fn expire_pre_auth_key(&self, id: u64) -> Result<(), StateError> {
        let mut w = self.writer.lock().await;
        let now = Utc::now();
        let key = w.keys.iter_mut().find(|k| k.id == id).ok_or(StateError::KeyNotFound(id))?;
        self.db.run(move |db| db.set_pre_auth_key_expiration(id, now)).await?;
        key.expiration = Some(now);
        Ok(())
    }

    /// Deletes a key; nodes it registered stay.
    pub async fn delete_pre_auth_key(&self, id: u64) -> Result<(), StateError> {
        let mut w = self.writer.lock().await;
        if !w.keys.iter().any(|k| k.id == id) {
            return Err(StateError::KeyNotFound(id));
        }
        self.db.run(move |db| db.delete_pre_auth_key(id)).await?;
        w.keys.retain(|k| k.id != id);
        self.publish(|s| s.forget_auth_keys(&[id]), Vec::new());
        Ok(())
    }
}
