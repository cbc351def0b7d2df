//! What scenarios ask a client and what it answers, the same for both kinds of client and in
//! both worlds: in-process as values, and on a client program's admin port as one line per
//! [`Request`] and one JSON line per answer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long one TCP or UDP exchange may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a probe (an exchange expected to be refused) waits: an allowed exchange on these
/// networks completes in milliseconds, and a refused one would take the whole
/// [`EXCHANGE_TIMEOUT`].
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A command for a node. On the admin port each is one line: `status`, `peer NAME`,
/// `tcp IP PORT`, `tcpname NAME PORT`, `probe IP PORT`, `udp IP PORT`, `login AUTHKEY`, `netmap`, `health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The node's own state ([`NodeStatus`]).
    Status,
    /// What the node knows of a peer ([`PeerStatus`], or `null` when it does not know it).
    Peer(String),
    /// A TCP echo exchange with a tailnet address ([`Exchange`]).
    Tcp(SocketAddr),
    /// A TCP echo exchange with a peer by its MagicDNS name (the official client only).
    TcpName(String, u16),
    /// A TCP echo exchange given only [`PROBE_TIMEOUT`], for checking that one is refused.
    Probe(SocketAddr),
    /// A UDP echo exchange with a tailnet address, resent until answered ([`Exchange`]).
    Udp(SocketAddr),
    /// Start over with this auth key and the same node keys (a login after a logout).
    Login(String),
    /// The whole map as the client decoded it (the official client only).
    NetMap,
    /// What the client did beyond its answers ([`crate::client::ClientHealth`]).
    Health,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status => write!(f, "status"),
            Request::Peer(name) => write!(f, "peer {name}"),
            Request::Tcp(a) => write!(f, "tcp {} {}", a.ip(), a.port()),
            Request::TcpName(name, port) => write!(f, "tcpname {name} {port}"),
            Request::Probe(a) => write!(f, "probe {} {}", a.ip(), a.port()),
            Request::Udp(a) => write!(f, "udp {} {}", a.ip(), a.port()),
            Request::Login(key) => write!(f, "login {key}"),
            Request::NetMap => write!(f, "netmap"),
            Request::Health => write!(f, "health"),
        }
    }
}

impl FromStr for Request {
    type Err = anyhow::Error;

    fn from_str(line: &str) -> Result<Request> {
        let addr = |ip: &str, port: &str| -> Result<SocketAddr> {
            Ok(SocketAddr::new(ip.parse::<IpAddr>().context("bad IP")?, port.parse().context("bad port")?))
        };
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["status"] => Ok(Request::Status),
            ["peer", name] => Ok(Request::Peer(name.to_string())),
            ["tcp", ip, port] => Ok(Request::Tcp(addr(ip, port)?)),
            ["probe", ip, port] => Ok(Request::Probe(addr(ip, port)?)),
            ["tcpname", name, port] => Ok(Request::TcpName(name.to_string(), port.parse().context("bad port")?)),
            ["udp", ip, port] => Ok(Request::Udp(addr(ip, port)?)),
            ["login", key] => Ok(Request::Login(key.to_string())),
            ["netmap"] => Ok(Request::NetMap),
            ["health"] => Ok(Request::Health),
            _ => bail!(
                "unknown command {line:?}; expected status, peer NAME, tcp IP PORT, tcpname NAME PORT, probe IP PORT, \
                 udp IP PORT, \
                 login KEY, netmap or health"
            ),
        }
    }
}

/// A node's own state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The hostname the node asked for.
    pub hostname: String,
    /// The control server accepted the node.
    pub authorized: bool,
    /// The URL to approve the node at, while it waits for interactive approval.
    pub auth_url: Option<String>,
    /// The tailnet IPv4 address, once the first map arrived.
    pub ipv4: Option<Ipv4Addr>,
    /// The tailnet IPv6 address, once the first map arrived.
    pub ipv6: Option<Ipv6Addr>,
    /// When the node's key expires, as its own map says.
    pub key_expiry: Option<DateTime<Utc>>,
    /// How many times the device was started again (dead device or login).
    pub restarts: u32,
}

/// What a node knows of one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's hostname.
    pub name: String,
    /// The peer's tailnet IPv4 address.
    pub ipv4: Ipv4Addr,
    /// The peer's home DERP region; without one the peer is unreachable.
    pub derp_region: Option<u32>,
    /// Online as control last said; `None` when control has not said.
    pub online: Option<bool>,
    /// When the peer's key expires, as control said.
    pub key_expiry: Option<DateTime<Utc>>,
}

impl PeerStatus {
    /// The peer's key has expired.
    pub fn expired(&self) -> bool {
        self.key_expiry.is_some_and(|e| e <= Utc::now())
    }
}

/// The result of one echo exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    /// Milliseconds from the first send to the echo.
    pub ms: f64,
    /// The hostname of the node that answered, where the echo says it (the official client's).
    #[serde(default)]
    pub answered_by: Option<String>,
}

/// What a client did that a test must know about beyond its answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientHealth {
    /// Every attempt it made to reach something beyond its control server and the tailnet.
    pub outside: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_their_line_form() {
        for r in [
            Request::Status,
            Request::Peer("node-a".into()),
            Request::Tcp("100.64.0.1:7000".parse().unwrap()),
            Request::TcpName("node-b".into(), 7001),
            Request::Probe("100.64.0.2:7001".parse().unwrap()),
            Request::Udp("100.64.0.2:7000".parse().unwrap()),
            Request::Login("hskey-auth-x".into()),
            Request::NetMap,
            Request::Health,
        ] {
            assert_eq!(r.to_string().parse::<Request>().unwrap(), r);
        }
        assert!("peer".parse::<Request>().is_err());
        assert!("tcp 1.2.3.4 x".parse::<Request>().is_err());
    }
}
