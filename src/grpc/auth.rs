//! Access control for the admin API away from the local socket: every request carries
//! `Authorization: Bearer <api key>`. [`authorize`] checks it (for gRPC and REST alike) and
//! logs refusals by key prefix, never with the secret; [`ApiKeyLayer`] applies it to the
//! remote gRPC listener.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::HeaderMap;
use tonic::Status;

use crate::db::ApiKey;
use crate::log_rate::{LogRate, PERIOD};
use crate::state::api_keys::ApiKeyError;
use crate::state::State;

/// The bearer token of an `Authorization` header; the scheme is case-insensitive.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Refused admin requests, logged at most once per period.
static REFUSED: LogRate = LogRate::new(PERIOD);

/// Checks the API key of a request that came `via` a transport (named in the log). A
/// refusal is logged (with the key's prefix only, at most once per period) and answered with
/// `UNAUTHENTICATED`; a database failure with `INTERNAL`.
pub async fn authorize(state: &State, headers: &HeaderMap, via: &str) -> Result<ApiKey, Status> {
    let Some(token) = bearer(headers) else {
        log_refusal(&REFUSED, via, &"no API key");
        return Err(Status::unauthenticated("an API key is required: send Authorization: Bearer <api key>"));
    };
    match state.authenticate_api_key(token).await {
        Ok(key) => Ok(key),
        Err(ApiKeyError::Db(e)) => {
            tracing::error!(error = %e, "cannot check an API key");
            Err(Status::internal("cannot check the API key"))
        }
        Err(e) => {
            // The error names the prefix at most; the secret never reaches the log.
            log_refusal(&REFUSED, via, &e);
            let message = match e {
                ApiKeyError::Expired(..) => "the API key has expired",
                _ => "invalid API key",
            };
            Err(Status::unauthenticated(message))
        }
    }
}

/// Logs a refused admin request, if `rate` allows a line now.
fn log_refusal(rate: &LogRate, via: &str, reason: &dyn std::fmt::Display) {
    if let Some(left_out) = rate.allow() {
        tracing::warn!(via, %reason, left_out, "refused an admin API request");
    }
}

/// A tower layer that lets through only gRPC requests with a valid API key.
#[derive(Clone)]
pub struct ApiKeyLayer {
    state: Arc<State>,
}

impl ApiKeyLayer {
    /// A layer checking keys against `state`.
    pub fn new(state: Arc<State>) -> Self {
        ApiKeyLayer { state }
    }
}

impl<S> tower::Layer<S> for ApiKeyLayer {
    type Service = RequireApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKey { inner, state: self.state.clone() }
    }
}

/// The service [`ApiKeyLayer`] builds: answers `UNAUTHENTICATED` itself, or passes the
/// request on.
#[derive(Clone)]
pub struct RequireApiKey<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, B> tower::Service<http::Request<B>> for RequireApiKey<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone is not known to be ready: call the one that is and keep the clone.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let state = self.state.clone();
        Box::pin(async move {
            let peer = req.extensions().get::<tonic::transport::server::TcpConnectInfo>().and_then(|c| c.remote_addr);
            let via = peer.map_or_else(|| "gRPC".to_string(), |p| format!("gRPC from {p}"));
            match authorize(&state, req.headers(), &via).await {
                Ok(_) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::Utc;

    use super::*;
    use crate::config::Config;
    use crate::db::Db;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn with_key(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("valid"));
        h
    }

    #[tokio::test]
    async fn refusals_are_logged_by_prefix_without_the_secret() {
        let config = Arc::new(Config::embedded(std::path::Path::new("/nonexistent")));
        let state = State::load(config, Db::open_in_memory().expect("db")).await.expect("state");
        let (key, full) = state.create_api_key(Utc::now() + chrono::Duration::hours(1)).await.expect("a key");
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let wrong = format!("{}{}", &full[..full.len() - 1], if full.ends_with('a') { 'b' } else { 'a' });
        let refused = authorize(&state, &with_key(&wrong), "test").await.expect_err("a wrong secret");
        assert_eq!((refused.code(), refused.message()), (tonic::Code::Unauthenticated, "invalid API key"));
        let missing = authorize(&state, &HeaderMap::new(), "test").await.expect_err("no key");
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert_eq!(authorize(&state, &with_key(&full), "test").await.expect("the right key").id, key.id);
        state.expire_api_key(&crate::state::api_keys::ApiKeySelector::Id(key.id)).await.expect("expire");
        let expired = authorize(&state, &with_key(&full), "test").await.expect_err("expired");
        assert_eq!(expired.message(), "the API key has expired");

        // What is logged, with a rate of its own (the server's is shared by every test here).
        let wrong_secret = state.authenticate_api_key(&wrong).await.expect_err("a wrong secret");
        let expired = state.authenticate_api_key(&full).await.expect_err("expired");
        for reason in [&wrong_secret, &expired] {
            log_refusal(&LogRate::new(PERIOD), "test", reason);
        }
        let once = LogRate::new(PERIOD);
        log_refusal(&once, "flood", &"no API key");
        log_refusal(&once, "flood", &"no API key");

        let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(logs.contains(&format!("API key \"{}\" has a wrong secret", key.prefix)), "{logs}");
        assert!(logs.contains("expired at"), "{logs}");
        assert_eq!(logs.matches("via=\"flood\"").count(), 1, "one line per period: {logs}");
        for secret in [&full[full.len() - 64..], &wrong[wrong.len() - 64..]] {
            assert!(!logs.contains(secret), "the log shows a secret: {logs}");
        }
    }

    #[test]
    fn reads_bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(http::header::AUTHORIZATION, "Bearer hskey-api-abc".parse().expect("valid"));
        assert_eq!(bearer(&h), Some("hskey-api-abc"));
        h.insert(http::header::AUTHORIZATION, "bearer  spaced ".parse().expect("valid"));
        assert_eq!(bearer(&h), Some("spaced"));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().expect("valid"));
        assert_eq!(bearer(&h), None);
    }
}
