//! The tailnet's records as the server keeps them: users, nodes and pre-auth keys.
//! Plain values; `db` stores them and `state` publishes them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use sha2::{Digest, Sha256};

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

/// What is stored to check a key's secret: a SHA-256 of it (the keys this server makes: the
/// secret is long and random, so a fast hash is as safe as a slow one), or a bcrypt hash (the
/// keys of a Headscale database this server took over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyHash {
    Sha256([u8; 32]),
    Bcrypt(String),
}

impl KeyHash {
    /// The SHA-256 of `secret`.
    pub fn of(secret: &str) -> KeyHash {
        KeyHash::Sha256(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `secret` is the one hashed; SHA-256s are compared in constant time.
    pub fn verify(&self, secret: &str) -> bool {
        match self {
            KeyHash::Sha256(stored) => {
                let given: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
                stored.iter().zip(given).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
            }
            KeyHash::Bcrypt(stored) => bcrypt::verify(secret, stored).unwrap_or(false),
        }
    }

    /// Whether checking costs a slow hash (a Headscale key, until it is stored again).
    pub fn is_bcrypt(&self) -> bool {
        matches!(self, KeyHash::Bcrypt(_))
    }

    /// The stored bytes: 32 for a SHA-256, the bcrypt text otherwise.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KeyHash::Sha256(h) => h.to_vec(),
            KeyHash::Bcrypt(text) => text.as_bytes().to_vec(),
        }
    }

    /// Reads stored bytes back; `None` if they are neither.
    pub fn from_bytes(bytes: &[u8]) -> Option<KeyHash> {
        if let Ok(h) = <[u8; 32]>::try_from(bytes) {
            return Some(KeyHash::Sha256(h));
        }
        let text = std::str::from_utf8(bytes).ok()?;
        (text.starts_with("$2") && text.len() == 60).then(|| KeyHash::Bcrypt(text.to_string()))
    }
}

/// A key that lets a device join without an interactive login.
#[derive(Debug, Clone, PartialEq)]
pub struct PreAuthKey {
    pub id: u64,
    /// The public part of the key, used to find it.
    pub prefix: String,
    /// The hash of the secret part.
    pub hash: KeyHash,
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
