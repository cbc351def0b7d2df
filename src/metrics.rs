//! The metrics listener (`metrics_listen_addr`, `GET /metrics`): the process's counters
//! (`counters`), gauges read from the snapshot when the page is asked for, and the process's
//! own figures (`process_stats`), in Prometheus's text format. Like Headscale's debug listener, it answers loopback, private, link-local and
//! Tailscale addresses only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::counters::{self, Exposition};
use crate::process_stats;
use crate::response::{text, Body};
use crate::state::{Snapshot, State};

/// The metrics page in Prometheus's text format: the counters, and gauges read from `snap`.
pub fn render(snap: &Snapshot) -> String {
    let mut out = Exposition::default();
    counters::expose(&mut out);
    let online = snap.nodes.values().filter(|e| e.online).count() as u64;
    out.metric("headscale_nodestore_nodes", "gauge", "Nodes in the tailnet.", &[("", snap.nodes.len() as u64)]);
    out.metric("headscale_nodes_online", "gauge", "Nodes with an open map session.", &[("", online)]);
    out.metric("headscale_users", "gauge", "Users.", &[("", snap.users.len() as u64)]);
    out.metric(
        "headscale_nodestore_snapshot_version",
        "gauge",
        "Version of the tailnet snapshot.",
        &[("", snap.version)],
    );
    process_stats::expose(&mut out);
    out.into_text()
}

/// Whether `ip` may read the metrics: loopback, private (RFC 1918, RFC 4193), link-local, or
/// a Tailscale address.
fn allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => allowed(IpAddr::V4(v4)),
            None => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

/// Answers one request on the metrics listener.
fn answer(state: &State, peer: SocketAddr, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    if !allowed(peer.ip()) {
        return text(StatusCode::FORBIDDEN, "metrics are served to loopback, private and Tailscale addresses only");
    }
    if req.method() != http::Method::GET || req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found; the metrics are at GET /metrics");
    }
    let mut resp = text(StatusCode::OK, &render(&state.snapshot()));
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// Serves the metrics listener until `stopped`.
pub async fn serve(listener: TcpListener, state: Arc<State>, stopped: impl std::future::Future<Output = ()>) {
    crate::listen::accept_each(listener, stopped, |tcp, peer, _slot| {
        let state = state.clone();
        async move {
            let service = service_fn(move |req| {
                let resp = answer(&state, peer, &req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            if let Err(e) = crate::listen::http_server().serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_private_and_tailscale_addresses_are_answered() {
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.2",
            "192.168.1.1",
            "100.64.0.7",
            "::1",
            "fd7a:115c:a1e0::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(allowed(ok.parse().unwrap()), "{ok}");
        }
        for no in ["8.8.8.8", "100.128.0.1", "2001:db8::1", "::ffff:1.1.1.1"] {
            assert!(!allowed(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn the_page_counts_what_happened_and_what_is() {
        counters::map_sent(counters::MapKind::Full, 100);
        counters::registered(counters::Registration::Refused);
        let page = render(&crate::testing::tailnet());
        assert!(page.contains("# TYPE headscale_mapresponse_sent_total counter"), "{page}");
        let full: u64 = page
            .lines()
            .find_map(|l| l.strip_prefix("headscale_mapresponse_sent_total{status=\"ok\",type=\"full\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(full >= 1);
        assert!(page.contains("headscale_registrations_total{outcome=\"refused\"} "), "{page}");
        let nodes = crate::testing::tailnet().nodes.len();
        assert!(page.contains(&format!("headscale_nodestore_nodes {nodes}\n")), "{page}");
        assert!(page.contains("headscale_mapresponse_ended_total{reason=\"done\"} "), "{page}");
        assert!(page.contains("headscale_mapresponse_endpoint_updates_total{status=\"ok\"} "), "{page}");
        assert!(page.contains("\nprocess_resident_memory_bytes "), "{page}");
    }
}
