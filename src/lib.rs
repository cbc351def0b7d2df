//! A self-hosted Tailscale control server, compatible with Headscale: its configuration, CLI,
//! API and behaviour, with real Tailscale clients. `ARCHITECTURE.md` maps the modules.

pub mod alloc;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod derp;
pub mod duration;
pub mod grpc;
pub mod http;
pub mod http2;
pub mod ipam;
pub mod mapper;
pub mod metrics;
pub mod model;
pub mod names;
pub mod noise;
pub mod policy;
pub mod state;
pub mod tailcfg;
pub mod testing;
pub mod tls;

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
