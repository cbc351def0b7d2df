//! One PostgreSQL connection as a blocking `Conn`: statements are prepared once per
//! connection and cached, values are converted to and from the column types the server
//! reports, and each call waits for its answer on the calling thread while the connection's
//! I/O runs on the pool's own thread.

use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;

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
}

impl PgConn {
    pub fn new(client: Client) -> PgConn {
        PgConn { client, statements: HashMap::new() }
    }

    /// Whether the connection is gone (the server closed it or the network failed).
    pub fn is_broken(&self) -> bool {
        self.client.is_closed()
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = block_on(self.client.prepare(sql))?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
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
        Ok(block_on(self.client.execute(&st, &refs(args)))?)
    }

    fn query(&mut self, table: &'static str, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let st = self.statement(sql)?;
        let columns: Arc<[String]> = st.columns().iter().map(|c| c.name().to_string()).collect();
        let rows = block_on(self.client.query(&st, &refs(args)))?;
        rows.iter()
            .map(|r| {
                let values = (0..columns.len()).map(|i| r.try_get::<_, Value>(i)).collect::<Result<_, _>>()?;
                Ok(Row { table, columns: columns.clone(), values })
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        Ok(block_on(self.client.batch_execute(sql))?)
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
