//! Requests run to their end even when the client stops waiting. A handler that writes does
//! its database write and then publishes the new snapshot; if the request's future were
//! dropped between the two (a client reset, a CLI timeout), the database would hold what the
//! server does not know. So the request handlers of the control channel, the REST API and the
//! gRPC service run in a task of their own, which a departing client cannot cancel.

use std::future::Future;
use std::task::{Context, Poll};

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

/// A tower layer that runs each request of the service it wraps with [`run_to_end`]; a
/// request cut off by shutdown is answered `UNAVAILABLE`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunToEndLayer;

impl<S> tower::Layer<S> for RunToEndLayer {
    type Service = RunToEnd<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RunToEnd { inner }
    }
}

/// The service [`RunToEndLayer`] builds.
#[derive(Debug, Clone)]
pub struct RunToEnd<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RunToEnd<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let work = self.inner.call(req);
        Box::pin(async move {
            run_to_end(work)
                .await
                .unwrap_or_else(|| Ok(tonic::Status::unavailable("the server is shutting down").into_http()))
        })
    }
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
