//! Stored users: create, rename, delete (with their pre-auth keys), list.

use super::sql::{args, Conn, Row};
use super::{Db, DbError};
use crate::model::{User, UserId};

const COLUMNS: &str = "id, name, display_name, email, provider_id, provider, profile_pic_url, created_at";

fn read_user(r: &Row) -> Result<User, DbError> {
    Ok(User {
        id: r.id("id")?,
        name: r.text("name")?,
        display_name: r.text("display_name")?,
        email: r.text("email")?,
        provider_id: r.text("provider_id")?,
        provider: r.text("provider")?,
        profile_pic_url: r.text("profile_pic_url")?,
        created_at: r.time("created_at")?,
    })
}

/// Stores `user` with its own id (a database taken over keeps its ids).
pub(super) fn restore(c: &mut dyn Conn, user: &User) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO users (id, name, display_name, email, provider_id, provider, profile_pic_url, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![
            user.id,
            &user.name,
            &user.display_name,
            &user.email,
            &user.provider_id,
            &user.provider,
            &user.profile_pic_url,
            user.created_at
        ],
    )?;
    Ok(())
}

impl Db {
    /// Stores a new user and returns it with its id.
    pub fn insert_user(&self, mut user: User) -> Result<User, DbError> {
        user.id = self.transaction(|c| {
            c.insert(
                "users",
                "INSERT INTO users (name, display_name, email, provider_id, provider, profile_pic_url, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                args![
                    &user.name,
                    &user.display_name,
                    &user.email,
                    &user.provider_id,
                    &user.provider,
                    &user.profile_pic_url,
                    user.created_at
                ],
            )
        })?;
        Ok(user)
    }

    /// Renames a user.
    pub fn rename_user(&self, id: UserId, name: &str) -> Result<(), DbError> {
        self.transaction(|c| c.execute("UPDATE users SET name = $1 WHERE id = $2", args![name, id]))?;
        Ok(())
    }

    /// Deletes a user and, with it, the user's pre-auth keys.
    pub fn delete_user(&self, id: UserId) -> Result<(), DbError> {
        self.transaction(|c| {
            c.execute(
                "UPDATE nodes SET auth_key_id = NULL WHERE auth_key_id IN (SELECT id FROM pre_auth_keys WHERE user_id = $1)",
                args![id],
            )?;
            c.execute("DELETE FROM pre_auth_keys WHERE user_id = $1", args![id])?;
            c.execute("DELETE FROM users WHERE id = $1", args![id])?;
            Ok(())
        })
    }

    /// Every user, by id.
    pub fn users(&self) -> Result<Vec<User>, DbError> {
        let rows = self.with(|c| c.query("users", &format!("SELECT {COLUMNS} FROM users ORDER BY id"), &[]))?;
        rows.iter().map(read_user).collect()
    }
}
