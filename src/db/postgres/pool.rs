//! A bounded pool of PostgreSQL connections for blocking callers, with the limits of Go's
//! `database/sql` that Headscale's settings name: at most `max_open` connections (0: no
//! limit), at most `max_idle` kept while idle, each closed after `max_idle_time` unused. A
//! connection found broken is dropped and a new one opened on the next checkout.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::conn::PgConn;
use super::Connector;
use crate::db::DbError;

/// How long a caller waits for a connection when `max_open` are in use.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// The pool's limits (`database.postgres.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// 0 means no limit.
    pub max_open: usize,
    pub max_idle: usize,
    /// `None` keeps idle connections open.
    pub max_idle_time: Option<Duration>,
}

struct Slots {
    idle: Vec<(PgConn, Instant)>,
    /// Connections in use, idle, or being opened.
    open: usize,
}

/// The pool; checked-out connections go back to it when dropped.
pub struct Pool {
    slots: Mutex<Slots>,
    freed: Condvar,
    limits: Limits,
    connector: Connector,
}

/// A connection checked out of the pool.
pub struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<PgConn>,
}

impl Pool {
    /// A pool that opens its connections with `connector`. Idle connections past their time
    /// are closed by a task on the connector's I/O thread.
    pub fn new(connector: Connector, limits: Limits) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            slots: Mutex::new(Slots { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
            limits,
            connector,
        });
        if let Some(idle_time) = limits.max_idle_time {
            let weak = Arc::downgrade(&pool);
            pool.connector.spawn(close_idle(weak, idle_time));
        }
        pool
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, or a new one if the limit allows, or the first one given back
    /// within `CHECKOUT_TIMEOUT`.
    pub fn get(&self) -> Result<Pooled<'_>, DbError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut slots = self.slots();
        loop {
            self.close_expired(&mut slots);
            if let Some((conn, _)) = slots.idle.pop() {
                return Ok(Pooled { pool: self, conn: Some(conn) });
            }
            if self.limits.max_open == 0 || slots.open < self.limits.max_open {
                slots.open += 1;
                drop(slots);
                return match self.connector.connect() {
                    Ok(conn) => Ok(Pooled { pool: self, conn: Some(conn) }),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DbError::PoolExhausted { max_open: self.limits.max_open, waited: CHECKOUT_TIMEOUT });
            }
            slots = self.freed.wait_timeout(slots, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn release_slot(&self) {
        self.slots().open -= 1;
        self.freed.notify_one();
    }

    fn give_back(&self, conn: PgConn) {
        let mut slots = self.slots();
        if conn.is_broken() || slots.idle.len() >= self.limits.max_idle {
            slots.open -= 1;
        } else {
            slots.idle.push((conn, Instant::now()));
        }
        drop(slots);
        self.freed.notify_one();
    }

    /// Drops broken connections and those idle for longer than allowed.
    fn close_expired(&self, slots: &mut Slots) {
        let before = slots.idle.len();
        let max_idle_time = self.limits.max_idle_time;
        slots.idle.retain(|(conn, since)| !conn.is_broken() && max_idle_time.is_none_or(|t| since.elapsed() < t));
        slots.open -= before - slots.idle.len();
    }

    /// How many connections are open, and how many of them idle.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.slots();
        (slots.open, slots.idle.len())
    }
}

/// Closes idle connections past their time until the pool is gone.
async fn close_idle(pool: Weak<Pool>, idle_time: Duration) {
    let mut tick = tokio::time::interval(idle_time.clamp(Duration::from_secs(1), Duration::from_secs(60)));
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut slots = pool.slots();
        pool.close_expired(&mut slots);
    }
}

impl Deref for Pooled<'_> {
    type Target = PgConn;

    fn deref(&self) -> &PgConn {
        self.conn.as_ref().expect("a checked-out connection is present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("a checked-out connection is present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn);
        }
    }
}
