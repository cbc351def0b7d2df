//! Transactions on PostgreSQL, and what happens when a commit's answer never comes (the call
//! ran out of time, or the connection broke while the commit was on its way): the
//! transaction's id is taken when it begins, and a commit left in doubt is asked about on
//! another connection (`txid_status`) until the server says committed or aborted, for at most
//! [`RESOLVE_FOR`]. The caller then learns the truth — its writes are in, or they are not —
//! and publishes, or not, accordingly.

use std::time::{Duration, Instant};

use super::Pool;
use crate::db::sql::{self, Conn, Ended, Value};
use crate::db::DbError;

/// How long the outcome of a commit left in doubt is asked for.
pub const RESOLVE_FOR: Duration = Duration::from_secs(60);
/// The pause between two questions.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// Runs `f` in one transaction on a connection of `pool`; a commit left in doubt is resolved.
pub fn transaction<T>(pool: &Pool, f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>) -> Result<T, DbError> {
    let mut xid = None;
    let ended = {
        let mut conn = pool.get()?;
        sql::transaction_ended(&mut *conn, "BEGIN", |c| {
            xid = Some(current_xid(c)?);
            f(c)
        })?
    };
    match ended {
        Ended::Committed(value) => Ok(value),
        Ended::InDoubt { value, error } => {
            let xid = xid.expect("the id is taken before the commit");
            tracing::warn!(xid, error = %error, "PostgreSQL did not answer a commit; asking whether it went through");
            if resolve(pool, xid, RESOLVE_FOR)? {
                tracing::info!(xid, "the commit that was in doubt went through");
                Ok(value)
            } else {
                tracing::info!(xid, "the commit that was in doubt did not go through");
                Err(error)
            }
        }
    }
}

/// The id of the transaction open on `c` (one is assigned now if none was).
fn current_xid(c: &mut dyn Conn) -> Result<i64, DbError> {
    let row = c.query_opt("txid", "SELECT txid_current()::text AS xid", &[])?;
    let text = row.map(|r| r.text("xid")).transpose()?.unwrap_or_default();
    text.parse().map_err(|_| DbError::Corrupt { table: "txid", column: "xid", message: format!("{text:?}") })
}

/// Whether transaction `xid` committed, as the server says within `until`: asked on a
/// connection other than the one the commit was sent on, while the server still reports the
/// transaction in progress (its connection has not been noticed gone) or cannot be reached.
fn resolve(pool: &Pool, xid: i64, within: Duration) -> Result<bool, DbError> {
    let until = Instant::now() + within;
    loop {
        let asked = pool.get().and_then(|mut c| {
            c.query_opt("txid", "SELECT txid_status($1)::text AS status", &[Value::Int(xid)])?
                .map(|r| r.opt_text("status"))
                .transpose()
        });
        match asked {
            Ok(Some(Some(status))) if status == "committed" => return Ok(true),
            Ok(Some(Some(status))) if status == "aborted" => return Ok(false),
            Ok(_) => {}
            Err(e) => tracing::debug!(xid, error = %e, "cannot ask PostgreSQL about a commit yet"),
        }
        if Instant::now() + ASK_EVERY >= until {
            return Err(DbError::CommitUnknown { xid, waited: within });
        }
        std::thread::sleep(ASK_EVERY);
    }
}
