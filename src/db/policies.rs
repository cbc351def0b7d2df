//! The stored policy of `policy.mode: database`: every accepted version is kept as a row;
//! the newest one not deleted is in force.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::sqlite::{parse_ts, ts};
use super::{Db, DbError};

/// The policy in force and when it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub data: String,
    pub updated_at: DateTime<Utc>,
}

impl Db {
    /// The policy in force, if one was ever set.
    pub fn policy(&self) -> Result<Option<StoredPolicy>, DbError> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT data, updated_at FROM policies WHERE deleted_at IS NULL ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()?;
            row.map(|(data, at)| Ok(StoredPolicy { data, updated_at: parse_ts("policies", "updated_at", &at)? }))
                .transpose()
        })
    }

    /// Stores a new version of the policy, in force from now on.
    pub fn set_policy(&self, data: &str, at: DateTime<Utc>) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO policies (data, created_at, updated_at) VALUES (?1, ?2, ?2)",
                params![data, ts(&at)],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_policy_is_in_force() {
        let db = Db::open_in_memory().unwrap();
        assert_eq!(db.policy().unwrap(), None);
        let t = crate::testing::t0();
        db.set_policy("{}", t).unwrap();
        db.set_policy(r#"{"acls":[]}"#, t + chrono::Duration::seconds(1)).unwrap();
        let p = db.policy().unwrap().unwrap();
        assert_eq!(p.data, r#"{"acls":[]}"#);
        assert_eq!(p.updated_at, t + chrono::Duration::seconds(1));
    }
}
