//! The stored policy of `policy.mode: database`: every accepted version is kept as a row;
//! the newest one not deleted is in force.

use chrono::{DateTime, Utc};

use super::sql::{args, Conn};
use super::{Db, DbError};

/// The policy in force and when it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub data: String,
    pub updated_at: DateTime<Utc>,
}

/// Stores the policy in force of a database taken over.
pub(super) fn restore(c: &mut dyn Conn, policy: &StoredPolicy) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO policies (data, created_at, updated_at) VALUES ($1, $2, $2)",
        args![&policy.data, policy.updated_at],
    )?;
    Ok(())
}

impl Db {
    /// The policy in force, if one was ever set.
    pub fn policy(&self) -> Result<Option<StoredPolicy>, DbError> {
        let row = self.with(|c| {
            c.query_opt(
                "policies",
                "SELECT data, updated_at FROM policies WHERE deleted_at IS NULL ORDER BY id DESC LIMIT 1",
                &[],
            )
        })?;
        row.map(|r| Ok(StoredPolicy { data: r.text("data")?, updated_at: r.time("updated_at")? })).transpose()
    }

    /// Stores a new version of the policy, in force from now on.
    pub fn set_policy(&self, data: &str, at: DateTime<Utc>) -> Result<(), DbError> {
        self.transaction(|c| {
            c.execute("INSERT INTO policies (data, created_at, updated_at) VALUES ($1, $2, $2)", args![data, at])
        })?;
        Ok(())
    }
}
