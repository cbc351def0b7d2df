//! The counters the server keeps as it works (map messages by kind and their bytes, endpoint
//! updates, ended map sessions by reason, registrations by outcome, policy compiles),
//! process-wide, and their text in Prometheus's exposition format. The metrics listener
//! (`metrics`) serves them. Where Headscale v0.29 has a metric for the same thing, the name
//! and labels are Headscale's (`headscale_mapresponse_sent_total{status,type}`,
//! `headscale_mapresponse_endpoint_updates_total{status}`,
//! `headscale_mapresponse_ended_total{reason}`), so its dashboards keep working.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of map message a session sends.
#[derive(Debug, Clone, Copy)]
pub enum MapKind {
    Full,
    Delta,
    KeepAlive,
}

/// Why a map session ended, as Headscale labels it.
#[derive(Debug, Clone, Copy)]
pub enum SessionEnd {
    /// The client went away (`done`).
    Client,
    /// The server ended it: the node was removed, or the server stops (`cancelled`).
    Server,
}

/// How a registration request ended.
#[derive(Debug, Clone, Copy)]
pub enum Registration {
    Authorized,
    NeedsAuth,
    LoggedOut,
    Refused,
    Failed,
}

/// The process's counters.
struct Counters {
    map_full: AtomicU64,
    map_delta: AtomicU64,
    map_keepalive: AtomicU64,
    map_bytes: AtomicU64,
    endpoint_updates: AtomicU64,
    sessions_done: AtomicU64,
    sessions_cancelled: AtomicU64,
    registrations: [AtomicU64; 5],
    policy_compiles: AtomicU64,
}

static COUNTERS: Counters = Counters {
    map_full: AtomicU64::new(0),
    map_delta: AtomicU64::new(0),
    map_keepalive: AtomicU64::new(0),
    map_bytes: AtomicU64::new(0),
    endpoint_updates: AtomicU64::new(0),
    sessions_done: AtomicU64::new(0),
    sessions_cancelled: AtomicU64::new(0),
    registrations: [const { AtomicU64::new(0) }; 5],
    policy_compiles: AtomicU64::new(0),
};

const REGISTRATION_OUTCOMES: [(Registration, &str); 5] = [
    (Registration::Authorized, "authorized"),
    (Registration::NeedsAuth, "needs_auth"),
    (Registration::LoggedOut, "logged_out"),
    (Registration::Refused, "refused"),
    (Registration::Failed, "failed"),
];

/// Counts a map message of `bytes` bytes (as framed on the wire).
pub fn map_sent(kind: MapKind, bytes: usize) {
    let counter = match kind {
        MapKind::Full => &COUNTERS.map_full,
        MapKind::Delta => &COUNTERS.map_delta,
        MapKind::KeepAlive => &COUNTERS.map_keepalive,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    COUNTERS.map_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Counts a one-off map request that only reported the node's endpoints and host info
/// (not streaming, peers omitted: Tailscale's "lite" update).
pub fn endpoint_update() {
    COUNTERS.endpoint_updates.fetch_add(1, Ordering::Relaxed);
}

/// Counts a map session that ended.
pub fn session_ended(why: SessionEnd) {
    let counter = match why {
        SessionEnd::Client => &COUNTERS.sessions_done,
        SessionEnd::Server => &COUNTERS.sessions_cancelled,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts a registration request by outcome.
pub fn registered(outcome: Registration) {
    COUNTERS.registrations[outcome as usize].fetch_add(1, Ordering::Relaxed);
}

/// Counts a compile of the policy for the tailnet.
pub fn policy_compiled() {
    COUNTERS.policy_compiles.fetch_add(1, Ordering::Relaxed);
}

/// A page in Prometheus's text exposition format, written one metric at a time.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    /// Adds metric `name` of `kind` (`counter`, `gauge`) with its samples (labels, value).
    pub fn metric<V: std::fmt::Display>(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, V)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{labels} {value}");
        }
    }

    /// The page.
    pub fn into_text(self) -> String {
        self.0
    }
}

/// Adds every counter to `out`.
pub fn expose(out: &mut Exposition) {
    let c = &COUNTERS;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    out.metric(
        "headscale_mapresponse_sent_total",
        "counter",
        "Map messages sent to nodes, by kind.",
        &[
            ("{status=\"ok\",type=\"full\"}", get(&c.map_full)),
            ("{status=\"ok\",type=\"delta\"}", get(&c.map_delta)),
            ("{status=\"ok\",type=\"keepalive\"}", get(&c.map_keepalive)),
        ],
    );
    out.metric(
        "headscale_mapresponse_endpoint_updates_total",
        "counter",
        "One-off map requests that reported endpoints (not streaming, peers omitted).",
        &[("{status=\"ok\"}", get(&c.endpoint_updates))],
    );
    out.metric(
        "headscale_mapresponse_sent_bytes_total",
        "counter",
        "Bytes of map messages sent, as framed.",
        &[("", get(&c.map_bytes))],
    );
    out.metric(
        "headscale_mapresponse_ended_total",
        "counter",
        "Map sessions that ended: done when the client left, cancelled when the server ended it.",
        &[("{reason=\"cancelled\"}", get(&c.sessions_cancelled)), ("{reason=\"done\"}", get(&c.sessions_done))],
    );
    let outcomes: Vec<(String, u64)> = REGISTRATION_OUTCOMES
        .iter()
        .map(|(o, label)| (format!("{{outcome=\"{label}\"}}"), get(&c.registrations[*o as usize])))
        .collect();
    let outcomes: Vec<(&str, u64)> = outcomes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    out.metric("headscale_registrations_total", "counter", "Registration requests, by outcome.", &outcomes);
    out.metric(
        "headscale_policy_compiles_total",
        "counter",
        "Compiles of the policy for the whole tailnet.",
        &[("", get(&c.policy_compiles))],
    );
}
