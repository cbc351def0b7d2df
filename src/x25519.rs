//! X25519 from aws-lc, for the ts2021 handshake (`noise`) and for deriving public keys
//! (`tailcfg`). aws-lc's assembly does a Diffie-Hellman in about half the time of the portable
//! implementation snow brings (24 µs against 52 µs here), and a responder does four per
//! handshake: in a reconnect storm every client handshakes at once. snow takes it through a
//! resolver that answers only for Curve25519 and leaves hashing, ciphers and randomness to
//! snow's own.

use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};

const KEY_LEN: usize = 32;

/// The X25519 public key of `private` (clamped as X25519 does).
pub fn public_key(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    KeyPair::from_private(private).public
}

/// snow's resolver with X25519 from aws-lc.
pub fn resolver() -> BoxedCryptoResolver {
    Box::new(FallbackResolver::new(Box::new(AwsLcDh), Box::new(DefaultResolver)))
}

struct AwsLcDh;

impl CryptoResolver for AwsLcDh {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        None
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::<KeyPair>::default()),
            _ => None,
        }
    }

    fn resolve_hash(&self, _: &HashChoice) -> Option<Box<dyn Hash>> {
        None
    }

    fn resolve_cipher(&self, _: &CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

/// A key pair; `key` is `None` only before a private key is set.
#[derive(Default)]
struct KeyPair {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
    key: Option<agreement::PrivateKey>,
}

impl KeyPair {
    fn from_private(private: &[u8; KEY_LEN]) -> KeyPair {
        // Any 32 bytes are an X25519 private key: neither step can fail.
        let key = agreement::PrivateKey::from_private_key(&X25519, private).expect("a 32-byte X25519 key");
        let derived = key.compute_public_key().expect("an X25519 public key");
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(derived.as_ref());
        KeyPair { private: *private, public, key: Some(key) }
    }
}

impl Dh for KeyPair {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        // snow hands over exactly `priv_len` bytes.
        let mut private = [0u8; KEY_LEN];
        private.copy_from_slice(privkey);
        *self = KeyPair::from_private(&private);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = [0u8; KEY_LEN];
        rng.try_fill_bytes(&mut private)?;
        *self = KeyPair::from_private(&private);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    /// `pubkey` may be longer than a key (snow passes its largest key buffer): the key is
    /// its first 32 bytes. Fails for a peer key of small order (an all-zero shared secret),
    /// as Tailscale's own clients and control server do.
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
        let peer = pubkey.get(..KEY_LEN).ok_or(snow::Error::Dh)?;
        agreement::agree(key, UnparsedPublicKey::new(&X25519, peer), snow::Error::Dh, |shared| {
            out[..shared.len()].copy_from_slice(shared);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748, section 6.1: Alice's and Bob's key pairs and their shared secret.
    type Key = [u8; 32];

    fn rfc7748() -> (Key, Key, Key, Key, Key) {
        let h = |s: &str| -> [u8; 32] { hex::decode(s).unwrap().try_into().unwrap() };
        (
            h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
            h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
            h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
            h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
            h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"),
        )
    }

    #[test]
    fn matches_the_rfc_vectors() {
        let (alice, alice_pub, bob, bob_pub, shared) = rfc7748();
        assert_eq!(public_key(&alice), alice_pub);
        assert_eq!(public_key(&bob), bob_pub);
        let mut out = [0u8; 32];
        KeyPair::from_private(&alice).dh(&bob_pub, &mut out).unwrap();
        assert_eq!(out, shared);
        let mut padded = [0u8; 56];
        padded[..32].copy_from_slice(&alice_pub);
        KeyPair::from_private(&bob).dh(&padded, &mut out).unwrap();
        assert_eq!(out, shared);
        let mut pair = KeyPair::default();
        pair.set(&bob);
        assert_eq!(pair.pubkey(), bob_pub);
        pair.dh(&alice_pub, &mut out).unwrap();
        assert_eq!(out, shared);
    }

    #[test]
    fn refuses_small_order_points_and_unset_keys() {
        let (alice, ..) = rfc7748();
        let mut out = [0u8; 32];
        assert!(KeyPair::from_private(&alice).dh(&[0u8; 32], &mut out).is_err());
        assert!(KeyPair::default().dh(&[9u8; 32], &mut out).is_err());
    }
}
