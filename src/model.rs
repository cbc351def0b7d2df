//! The tailnet's records as the server keeps them: users, nodes and pre-auth keys.
//! Plain values; `db` stores them and `state` publishes them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::tailcfg::{DiscoKey, Hostinfo, MachineKey, NodeKey};

/// A node's numeric id.
pub type NodeId = u64;
/// A user's numeric id.
pub type UserId = u64;

/// A person (or owner) in the tailnet.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub provider_id: String,
    pub provider: String,
    pub profile_pic_url: String,
    pub created_at: DateTime<Utc>,
}

impl User {
    /// The name shown as the login: the e-mail if there is one, else `name@`.
    pub fn login_name(&self) -> String {
        if self.email.is_empty() {
            format!("{}@", self.name)
        } else {
            self.email.clone()
        }
    }

    /// The display name, falling back to the user name.
    pub fn shown_name(&self) -> &str {
        if self.display_name.is_empty() {
            &self.name
        } else {
            &self.display_name
        }
    }
}

/// How a node was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterMethod {
    AuthKey,
    Cli,
    Oidc,
}

impl RegisterMethod {
    /// The stored text form.
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterMethod::AuthKey => "authkey",
            RegisterMethod::Cli => "cli",
            RegisterMethod::Oidc => "oidc",
        }
    }

    /// Reads the stored text form; unknown text reads as `Cli`.
    pub fn parse(s: &str) -> Self {
        match s {
            "authkey" => RegisterMethod::AuthKey,
            "oidc" => RegisterMethod::Oidc,
            _ => RegisterMethod::Cli,
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: NodeId,
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub disco_key: Option<DiscoKey>,
    pub endpoints: Vec<SocketAddr>,
    pub hostinfo: Hostinfo,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The hostname the client reported.
    pub hostname: String,
    /// The DNS label the node is known by; unique in the tailnet.
    pub given_name: String,
    /// The owner; `None` for a tagged node.
    pub user_id: Option<UserId>,
    pub register_method: RegisterMethod,
    pub tags: Vec<String>,
    pub auth_key_id: Option<u64>,
    pub ephemeral: bool,
    /// When the node key expires; `None` is never.
    pub expiry: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub approved_routes: Vec<IpNet>,
    pub created_at: DateTime<Utc>,
}

impl Node {
    /// The node's tailnet addresses, IPv4 first.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.ipv4.map(IpAddr::V4).into_iter().chain(self.ipv6.map(IpAddr::V6)).collect()
    }

    /// Whether the node key has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }

    /// The advertised routes that are approved: the ones the node may route.
    pub fn live_routes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.hostinfo.routable_ips.iter().filter(|r| self.approved_routes.contains(r)).copied()
    }

    /// Whether the node belongs to tags rather than a user.
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    /// The home DERP region the node reported.
    pub fn home_derp(&self) -> i32 {
        self.hostinfo.preferred_derp().unwrap_or(0)
    }
}

/// A key that lets a device join without an interactive login.
#[derive(Debug, Clone, PartialEq)]
pub struct PreAuthKey {
    pub id: u64,
    /// The public part of the key, used to find it.
    pub prefix: String,
    /// SHA-256 of the secret part.
    pub hash: [u8; 32],
    pub user_id: Option<UserId>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub tags: Vec<String>,
    pub expiration: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl PreAuthKey {
    /// Whether the key has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }
}
