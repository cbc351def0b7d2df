//! A self-hosted Tailscale control server, compatible with Headscale: its configuration, CLI,
//! API and behaviour, with real Tailscale clients. `ARCHITECTURE.md` maps the modules.

pub mod alloc;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod control;
pub mod counters;
pub mod db;
pub mod derp;
pub mod derp_map;
pub mod detached;
pub mod duration;
pub mod grpc;
pub mod http2;
pub mod ipam;
pub mod listen;
pub mod log_rate;
pub mod mapper;
pub mod metrics;
pub mod model;
pub mod names;
pub mod noise;
pub mod policy;
pub mod process_stats;
pub mod response;
pub mod router;
pub mod state;
pub mod tailcfg;
pub mod testing;
pub mod tls;
pub mod version;
pub mod x25519;

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
