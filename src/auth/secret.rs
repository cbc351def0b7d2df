//! Secret keys of the form `hskey-<kind>-<prefix>-<secret>`: pre-auth keys (`hskey-auth-`) and
//! API keys (`hskey-api-`). Only the prefix and a SHA-256 of the secret are stored. The secret
//! is 64 characters drawn uniformly from 62 (about 381 bits of randomness), so a fast hash is as
//! safe as a slow one here (nothing to brute-force) and keeps registration fast; comparisons
//! are constant-time.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};

const AUTH_KEY_TAG: &str = "hskey-auth-";
const API_KEY_TAG: &str = "hskey-api-";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 64;

/// A freshly generated key: the full text (shown once) and what is stored.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub full: String,
    pub prefix: String,
    pub hash: [u8; 32],
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random key whose text starts with `tag`.
fn generate(tag: &str) -> GeneratedKey {
    let mut rng = rand::rngs::OsRng;
    let prefix = Alphanumeric.sample_string(&mut rng, PREFIX_LEN).to_lowercase();
    let secret = Alphanumeric.sample_string(&mut rng, SECRET_LEN);
    GeneratedKey { full: format!("{tag}{prefix}-{secret}"), hash: hash_secret(&secret), prefix }
}

/// Splits `<tag><prefix>-<secret>` into prefix and secret hash; `None` if malformed.
fn split<'k>(tag: &str, key: &'k str) -> Option<(&'k str, [u8; 32])> {
    let rest = key.strip_prefix(tag)?;
    let (prefix, secret) = rest.split_once('-')?;
    if prefix.len() != PREFIX_LEN || secret.len() != SECRET_LEN {
        return None;
    }
    Some((prefix, hash_secret(secret)))
}

/// A new random pre-auth key.
pub fn generate_pre_auth_key() -> GeneratedKey {
    generate(AUTH_KEY_TAG)
}

/// Splits `hskey-auth-<prefix>-<secret>` into prefix and secret hash; `None` if malformed.
pub fn split_pre_auth_key(key: &str) -> Option<(&str, [u8; 32])> {
    split(AUTH_KEY_TAG, key)
}

/// A new random API key, `hskey-api-<prefix>-<secret>`.
pub fn generate_api_key() -> GeneratedKey {
    generate(API_KEY_TAG)
}

/// Splits `hskey-api-<prefix>-<secret>` into prefix and secret hash; `None` if malformed.
pub fn split_api_key(key: &str) -> Option<(&str, [u8; 32])> {
    split(API_KEY_TAG, key)
}

/// The prefix of an API key written the way people copy it: bare, as `hskey-api-<prefix>`, or
/// as the whole key.
pub fn api_key_prefix(text: &str) -> &str {
    let rest = text.strip_prefix(API_KEY_TAG).unwrap_or(text);
    rest.split_once('-').map_or(rest, |(prefix, _)| prefix)
}

/// Compares two hashes in constant time.
pub fn hashes_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_split_back() {
        let k = generate_pre_auth_key();
        assert!(k.full.starts_with("hskey-auth-"));
        let (prefix, hash) = split_pre_auth_key(&k.full).unwrap();
        assert_eq!(prefix, k.prefix);
        assert!(hashes_match(&hash, &k.hash));
        assert!(split_pre_auth_key("tskey-auth-abc").is_none());
        assert!(split_pre_auth_key(&k.full[..k.full.len() - 1]).is_none());
    }

    #[test]
    fn api_keys_have_their_own_tag() {
        let k = generate_api_key();
        assert!(k.full.starts_with("hskey-api-"));
        let (prefix, hash) = split_api_key(&k.full).unwrap();
        assert_eq!(prefix, k.prefix);
        assert!(hashes_match(&hash, &k.hash));
        assert!(split_pre_auth_key(&k.full).is_none());
        assert!(split_api_key(&generate_pre_auth_key().full).is_none());
        assert_eq!(api_key_prefix(&k.full), k.prefix);
        assert_eq!(api_key_prefix(&format!("hskey-api-{}", k.prefix)), k.prefix);
        assert_eq!(api_key_prefix(&k.prefix), k.prefix);
    }
}
