//! Writes on users: create, rename, delete.

use std::sync::Arc;

use chrono::Utc;

use super::{Change, State, StateError};
use crate::model::{User, UserId};

fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'))
}

impl State {
    /// Creates a user.
    pub async fn create_user(
        &self,
        name: &str,
        display_name: &str,
        email: &str,
        picture_url: &str,
    ) -> Result<Arc<User>, StateError> {
        if !valid_user_name(name) {
            return Err(StateError::InvalidUserName(name.to_string()));
        }
        let _w = self.writer.lock().await;
        if self.snapshot().user_by_name(name).is_some() {
            return Err(StateError::UserExists(name.to_string()));
        }
        let user = User {
            id: 0,
            name: name.to_string(),
            display_name: display_name.to_string(),
            email: email.to_string(),
            provider_id: String::new(),
            provider: String::new(),
            profile_pic_url: picture_url.to_string(),
            created_at: Utc::now(),
        };
        let user = Arc::new(self.db.run(move |db| db.insert_user(user)).await?);
        let u = user.clone();
        self.publish(
            |s| {
                s.users.insert(u.id, u);
            },
            Vec::new(),
        );
        Ok(user)
    }

    /// Renames a user; peers see the new login name.
    pub async fn rename_user(&self, id: UserId, new_name: &str) -> Result<Arc<User>, StateError> {
        if !valid_user_name(new_name) {
            return Err(StateError::InvalidUserName(new_name.to_string()));
        }
        let _w = self.writer.lock().await;
        let snap = self.snapshot();
        let old = snap.user(id).ok_or_else(|| StateError::UserNotFound(id.to_string()))?;
        if snap.user_by_name(new_name).is_some_and(|u| u.id != id) {
            return Err(StateError::UserExists(new_name.to_string()));
        }
        let name = new_name.to_string();
        self.db.run(move |db| db.rename_user(id, &name)).await?;
        let user = Arc::new(User { name: new_name.to_string(), ..User::clone(old) });
        let u = user.clone();
        self.publish(
            |s| {
                s.users.insert(id, u);
            },
            vec![Change::Everything],
        );
        Ok(user)
    }

    /// Deletes a user that owns no nodes, with the user's pre-auth keys.
    pub async fn delete_user(&self, id: UserId) -> Result<(), StateError> {
        let mut w = self.writer.lock().await;
        let snap = self.snapshot();
        let user = snap.user(id).ok_or_else(|| StateError::UserNotFound(id.to_string()))?;
        if snap.nodes.values().any(|e| e.node.user_id == Some(id)) {
            return Err(StateError::UserHasNodes(user.name.clone()));
        }
        self.db.run(move |db| db.delete_user(id)).await?;
        let deleted: Vec<u64> = w.keys.iter().filter(|k| k.user_id == Some(id)).map(|k| k.id).collect();
        w.keys.retain(|k| k.user_id != Some(id));
        self.publish(
            |s| {
                s.users.remove(&id);
                s.forget_auth_keys(&deleted);
            },
            Vec::new(),
        );
        Ok(())
    }
}
