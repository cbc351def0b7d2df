//! One PostgreSQL connection as a blocking `Conn`: statements are prepared once per
//! connection and cached, values are converted to and from the column types the server
//! reports, and each call waits for its answer on the calling thread while the connection's
//! I/O runs on the pool's own thread. Every call has a deadline: a server that stops
//! answering (paused, cut off) costs the caller at most that long, and the connection, whose
//! state is then unknown, is never used again.

use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_executor::block_on;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::db::sql::{Conn, Engine, Row, Value};
use crate::db::DbError;

type BoxError = Box<dyn Error + Sync + Send>;

/// A connection and the statements prepared on it.
pub struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// The I/O thread's runtime, whose clock times the calls.
    io: tokio::runtime::Handle,
    /// How long one call may wait for its answer.
    deadline: Duration,
    /// A call ran out of time: what the server did with it is unknown.
    timed_out: bool,
}

impl PgConn {
    pub fn new(client: Client, io: tokio::runtime::Handle, deadline: Duration) -> PgConn {
        PgConn { client, statements: HashMap::new(), io, deadline, timed_out: false }
    }

    /// Whether the connection is gone (the server closed it or the network failed) or must
    /// not be used again (a call ran out of time).
    pub fn is_broken(&self) -> bool {
        self.timed_out || self.client.is_closed()
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = timed(&self.io, self.deadline, &mut self.timed_out, self.client.prepare(sql))?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// Waits for `call` until `deadline`; past it, `timed_out` is set and the call is an error.
fn timed<T>(
    io: &tokio::runtime::Handle,
    deadline: Duration,
    timed_out: &mut bool,
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    if *timed_out {
        return Err(DbError::Timeout { waited: deadline });
    }
    let answer = {
        // The timer belongs to the I/O thread's runtime, which drives it while this thread
        // blocks.
        let _clock = io.enter();
        block_on(tokio::time::timeout(deadline, call))
    };
    match answer {
        Ok(answer) => Ok(answer?),
        Err(_) => {
            *timed_out = true;
            Err(DbError::Timeout { waited: deadline })
        }
    }
}

fn refs(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let st = self.statement(sql)?;
        timed(&self.io, self.deadline, &mut self.timed_out, self.client.execute(&st, &refs(args)))
    }

    fn query(&mut self, table: &'static str, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let st = self.statement(sql)?;
        let columns: Arc<[String]> = st.columns().iter().map(|c| c.name().to_string()).collect();
        let rows = timed(&self.io, self.deadline, &mut self.timed_out, self.client.query(&st, &refs(args)))?;
        rows.iter()
            .map(|r| {
                let values = (0..columns.len()).map(|i| r.try_get::<_, Value>(i)).collect::<Result<_, _>>()?;
                Ok(Row { table, columns: columns.clone(), values })
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        timed(&self.io, self.deadline, &mut self.timed_out, self.client.batch_execute(sql))
    }

    fn is_broken(&self) -> bool {
        PgConn::is_broken(self)
    }
}

/// Encodes `v` as the parameter type the server inferred, if `T` can.
fn encode<T: ToSql>(v: T, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    if !T::accepts(ty) {
        return Err(format!("a {} cannot be stored in a {ty} parameter", std::any::type_name::<T>()).into());
    }
    v.to_sql(ty, out)
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT4 => encode(i32::try_from(*v)?, ty, out),
                Type::INT2 => encode(i16::try_from(*v)?, ty, out),
                _ => encode(*v, ty, out),
            },
            Value::Bool(v) => encode(*v, ty, out),
            Value::Text(v) => encode(v.as_str(), ty, out),
            Value::Bytes(v) => encode(v.as_slice(), ty, out),
        }
    }

    /// Any type: `to_sql` checks the pairing of value and type.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::BYTEA => Value::Bytes(Vec::<u8>::from_sql(ty, raw)?),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL | Type::BYTEA)
            || <String as FromSql>::accepts(ty)
    }
}
