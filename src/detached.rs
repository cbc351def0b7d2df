//! Requests run to their end even when the client stops waiting. A handler that writes does
//! its database write and then publishes the new snapshot; if the request's future were
//! dropped between the two (a client reset, a CLI timeout), the database would hold what the
//! server does not know. So registrations that write (`control/register.rs`), the REST API and
//! the gRPC service run in a task of their own, which a departing client cannot cancel. Map
//! requests need none: they publish first and leave the database write to a batch.

use std::future::Future;

use futures_util::future::BoxFuture;

/// Runs `work` in its own task and waits for its result; dropping the returned future leaves
/// the work running to its end. `None` only when the runtime is shutting down. A panic in the
/// work is raised again here.
pub async fn run_to_end<F>(work: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(out) => Some(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// A gRPC request's future run with [`run_to_end`], for `tower::util::MapFutureLayer`; a
/// request cut off by shutdown is answered `UNAVAILABLE`.
pub fn grpc_to_end<F, E>(work: F) -> BoxFuture<'static, Result<http::Response<tonic::body::Body>, E>>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send + 'static,
    E: Send + 'static,
{
    Box::pin(async move {
        run_to_end(work)
            .await
            .unwrap_or_else(|| Ok(tonic::Status::unavailable("the server is shutting down").into_http()))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_work_ends_even_when_nobody_waits() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let waiting = run_to_end(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
        });
        // The caller gives up at once.
        assert!(tokio::time::timeout(Duration::from_millis(1), waiting).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(run_to_end(async { 7 }).await, Some(7));
    }
}
