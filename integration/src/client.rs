//! The two Tailscale clients a scenario can run: the official Go client (tsnet inside Caddy,
//! [`crate::go_node::GoNode`]) and tailscale-rs ([`crate::node::Node`]), behind one
//! [`Client`] interface that answers the same [`Request`]s in both worlds.

use std::fmt;

use anyhow::Result;
use async_trait::async_trait;
use serde_json::Value;

use crate::protocol::Request;

/// Which Tailscale client a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKind {
    /// Tailscale's own Go client (tsnet from tailscale.com v1.90.9, inside Caddy).
    Go,
    /// tailscale-rs 0.6.1.
    Rs,
}

impl ClientKind {
    /// Both, the official client first.
    pub const ALL: [ClientKind; 2] = [ClientKind::Go, ClientKind::Rs];

    /// The short name used in test names, `hi run --client` and tables.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Go => "go",
            ClientKind::Rs => "rs",
        }
    }

    /// It can send and receive UDP on the tailnet here.
    pub fn has_udp(self) -> bool {
        self == ClientKind::Rs
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ClientKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<ClientKind> {
        match s {
            "go" => Ok(ClientKind::Go),
            "rs" => Ok(ClientKind::Rs),
            _ => anyhow::bail!("unknown client {s:?}; expected go or rs"),
        }
    }
}

/// A running client of either kind.
#[async_trait]
pub trait Client: Send + Sync {
    /// Answers one request; the JSON is what an admin port sends back.
    async fn handle(&self, request: &Request) -> Result<Value>;
    /// Stops the client the way a user quits it.
    async fn shutdown(&self);
}
