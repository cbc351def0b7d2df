//! Tailscale key types in their text form (`nodekey:<hex>`, `mkey:<hex>`, `discokey:<hex>`,
//! `privkey:<hex>`): parsing, printing and serde.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A key string did not have the expected `prefix:64-hex` form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyParseError {
    #[error("key {0:?} does not start with {1:?}")]
    WrongPrefix(String, &'static str),
    #[error("key {0:?} is not 64 hexadecimal digits after its prefix")]
    BadHex(String),
}

fn parse_prefixed(s: &str, prefix: &'static str) -> Result<[u8; 32], KeyParseError> {
    let hex_part = s.strip_prefix(prefix).ok_or_else(|| KeyParseError::WrongPrefix(s.to_string(), prefix))?;
    let mut out = [0u8; 32];
    if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut out).is_err() {
        return Err(KeyParseError::BadHex(s.to_string()));
    }
    Ok(out)
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The text prefix of this key type.
            pub const PREFIX: &'static str = $prefix;

            /// Parses the `prefix:hex` text form.
            pub fn parse(s: &str) -> Result<Self, KeyParseError> {
                parse_prefixed(s, $prefix).map(Self)
            }

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// True for the all-zero key, which means "no key".
            pub fn is_zero(&self) -> bool {
                self.0 == [0u8; 32]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

key_type!(
    /// A node's WireGuard public key; public to every peer.
    NodeKey, "nodekey:"
);
key_type!(
    /// A machine's long-lived Noise public key; it authenticates the control channel.
    MachineKey, "mkey:"
);
key_type!(
    /// A node's disco public key, used for path discovery.
    DiscoKey, "discokey:"
);
key_type!(
    /// A tailnet-lock public key (accepted, stored, never checked).
    NlKey, "nlpub:"
);
key_type!(
    /// A Curve25519 private key, as stored in key files (`privkey:<hex>`).
    PrivateKey, "privkey:"
);

impl PrivateKey {
    /// A fresh random key, clamped as X25519 expects.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        PrivateKey(k)
    }

    /// The X25519 public key of this private key.
    pub fn public(&self) -> [u8; 32] {
        crate::x25519::public_key(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_form() {
        let k = NodeKey([0xab; 32]);
        let s = k.to_string();
        assert!(s.starts_with("nodekey:abab"));
        assert_eq!(NodeKey::parse(&s).unwrap(), k);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<NodeKey>(&json).unwrap(), k);
    }

    #[test]
    fn rejects_wrong_prefix_and_bad_hex() {
        assert!(matches!(MachineKey::parse("nodekey:00"), Err(KeyParseError::WrongPrefix(..))));
        assert!(matches!(MachineKey::parse("mkey:zz"), Err(KeyParseError::BadHex(_))));
        assert!(MachineKey::parse(&format!("mkey:{}", "0".repeat(63))).is_err());
    }

    #[test]
    fn private_key_has_matching_public() {
        let k = PrivateKey::generate();
        assert_ne!(k.public(), [0; 32]);
        assert_eq!(PrivateKey::parse(&k.to_string()).unwrap(), k);
    }
}
