//! Secret keys of the form `hskey-<kind>-<prefix>-<secret>`: pre-auth keys (`hskey-auth-`) and
//! API keys (`hskey-api-`). Only the prefix and a SHA-256 of the secret are stored. The secret
//! is 64 characters drawn uniformly from 62 (about 381 bits of randomness), so a fast hash is as
//! safe as a slow one here (nothing to brute-force) and keeps registration fast; comparisons
//! are constant-time.

use rand::distributions::{Alphanumeric, DistString};

use crate::model::KeyHash;

const AUTH_KEY_TAG: &str = "hskey-auth-";
const API_KEY_TAG: &str = "hskey-api-";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 64;

/// A freshly generated key: the full text (shown once) and what is stored.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub full: String,
    pub prefix: String,
    pub hash: KeyHash,
}

/// A new random key whose text starts with `tag`.
fn generate(tag: &str) -> GeneratedKey {
    let mut rng = rand::rngs::OsRng;
    let prefix = Alphanumeric.sample_string(&mut rng, PREFIX_LEN).to_lowercase();
    let secret = Alphanumeric.sample_string(&mut rng, SECRET_LEN);
    GeneratedKey { full: format!("{tag}{prefix}-{secret}"), hash: KeyHash::of(&secret), prefix }
}

/// Splits `<tag><prefix>-<secret>` into prefix and secret by position, as Headscale does (its
/// prefixes and secrets may hold `-` and `_`); `None` if malformed.
fn split<'k>(tag: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let rest = key.strip_prefix(tag)?;
    let url_safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if rest.len() != PREFIX_LEN + 1 + SECRET_LEN || rest.as_bytes()[PREFIX_LEN] != b'-' || !url_safe(rest) {
        return None;
    }
    Some((&rest[..PREFIX_LEN], &rest[PREFIX_LEN + 1..]))
}

/// A new random pre-auth key.
pub fn generate_pre_auth_key() -> GeneratedKey {
    generate(AUTH_KEY_TAG)
}

/// Splits `hskey-auth-<prefix>-<secret>` into prefix and secret; `None` if malformed.
pub fn split_pre_auth_key(key: &str) -> Option<(&str, &str)> {
    split(AUTH_KEY_TAG, key)
}

/// The prefix a plain-text pre-auth key of an older Headscale is stored under here, followed
/// by the key's id; its hash is the SHA-256 of the whole key.
pub const LEGACY_KEY_PREFIX: &str = "legacy-";

/// Whether `key` is an older Headscale's plain-text pre-auth key: as Headscale decides, any
/// key without `hskey-auth-` in it.
pub fn is_legacy_pre_auth_key(key: &str) -> bool {
    !key.contains(AUTH_KEY_TAG)
}

/// A new random API key, `hskey-api-<prefix>-<secret>`.
pub fn generate_api_key() -> GeneratedKey {
    generate(API_KEY_TAG)
}

/// The length of the prefix of an older Headscale's API keys, `<prefix>.<secret>`.
const LEGACY_API_PREFIX_LEN: usize = 7;

/// Splits `hskey-api-<prefix>-<secret>`, or an older Headscale's `<prefix>.<secret>`, into
/// prefix and secret; `None` if malformed.
pub fn split_api_key(key: &str) -> Option<(&str, &str)> {
    if key.starts_with(API_KEY_TAG) {
        return split(API_KEY_TAG, key);
    }
    let (prefix, secret) = key.split_once('.')?;
    (prefix.len() == LEGACY_API_PREFIX_LEN && !secret.is_empty()).then_some((prefix, secret))
}

/// The prefix of an API key written the way people copy it: bare, as `hskey-api-<prefix>`, or
/// as the whole key.
pub fn api_key_prefix(text: &str) -> &str {
    match text.strip_prefix(API_KEY_TAG) {
        Some(rest) => rest.get(..PREFIX_LEN).unwrap_or(rest),
        None => text.split_once('.').map_or(text, |(prefix, _)| prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_split_back() {
        let k = generate_pre_auth_key();
        assert!(k.full.starts_with("hskey-auth-"));
        let (prefix, secret) = split_pre_auth_key(&k.full).unwrap();
        assert_eq!(prefix, k.prefix);
        assert!(k.hash.verify(secret));
        assert!(split_pre_auth_key("tskey-auth-abc").is_none());
        assert!(split_pre_auth_key(&k.full[..k.full.len() - 1]).is_none());
    }

    #[test]
    fn headscale_keys_split_by_position_and_legacy_forms_are_recognised() {
        let secret = format!("a-b_{}", "c".repeat(60));
        let key = format!("hskey-auth-ab-cd_ef-ghi-{secret}");
        assert_eq!(split_pre_auth_key(&key), Some(("ab-cd_ef-ghi", secret.as_str())));
        assert!(split_pre_auth_key(&format!("hskey-auth-ab-cd_ef-ghi-{secret}x")).is_none());
        assert!(is_legacy_pre_auth_key("0123456789abcdef") && !is_legacy_pre_auth_key(&key));
        assert_eq!(split_api_key("hFKcRjL.secretpart"), Some(("hFKcRjL", "secretpart")));
        assert_eq!(api_key_prefix("hFKcRjL.secretpart"), "hFKcRjL");
        assert!(split_api_key("toolongprefix.secret").is_none() && split_api_key("nodot").is_none());
    }

    #[test]
    fn api_keys_have_their_own_tag() {
        let k = generate_api_key();
        assert!(k.full.starts_with("hskey-api-"));
        let (prefix, secret) = split_api_key(&k.full).unwrap();
        assert_eq!(prefix, k.prefix);
        assert!(k.hash.verify(secret));
        assert!(split_pre_auth_key(&k.full).is_none());
        assert!(split_api_key(&generate_pre_auth_key().full).is_none());
        assert_eq!(api_key_prefix(&k.full), k.prefix);
        assert_eq!(api_key_prefix(&format!("hskey-api-{}", k.prefix)), k.prefix);
        assert_eq!(api_key_prefix(&k.prefix), k.prefix);
    }
}
