//! Tailscale wire types: the JSON the control protocol carries, written as strict serde structs.
//!
//! Real clients reject `null` where they expect a list, so every optional field is skipped when
//! empty. Incoming messages accept both the Go spellings and the ones tailscale-rs sends
//! (`HostInfo`/`Hostinfo`, `PreferredDerp`/`PreferredDERP`).

pub mod caps;
mod derp_map;
mod filter;
mod hostinfo;
mod keys;
mod map;
mod register;
mod time;

pub use derp_map::{DerpMap, DerpNode, DerpRegion};
pub use filter::{CapGrant, FilterRule, IpProto, NetPortRange, PortRange, SshAction, SshPolicy, SshPrincipal, SshRule};
pub use hostinfo::{Hostinfo, NetInfo};
pub use keys::{DiscoKey, KeyParseError, MachineKey, NlKey, NodeKey, PrivateKey};
pub use map::{ClientDebug, DnsConfig, DnsResolver, MapRequest, MapResponse, Node, PeerChange, RawNode, UserProfile};
pub use register::{RegisterAuth, RegisterLogin, RegisterRequest, RegisterResponse, RegisterUser};

/// The capability version this server speaks (tailscale-rs 0.6.1 sends 130).
pub const CURRENT_CAPABILITY_VERSION: u16 = 130;

/// The oldest client capability version accepted (Tailscale v1.80, as Headscale).
pub const MIN_CAPABILITY_VERSION: u16 = 113;

/// True when a value equals its type's default; used by `skip_serializing_if`.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
