//! Checking a presented secret against its stored hash without stalling the server. A SHA-256
//! is checked in place. A bcrypt hash (a key of a Headscale database taken over) costs tens of
//! milliseconds of CPU, so it is checked on the blocking pool, at most [`SLOW_CHECKS`] at a
//! time: guesses at a known prefix queue behind each other instead of taking every core or
//! holding up the runtime. The caller replaces a bcrypt hash that matched by the secret's
//! SHA-256 ([`KeyHash::of`]), so each Headscale key pays the slow check once.

use tokio::sync::Semaphore;

use crate::model::KeyHash;

/// How many bcrypt checks may run at once.
pub const SLOW_CHECKS: usize = 2;

static SLOW: Semaphore = Semaphore::const_new(SLOW_CHECKS);

/// Whether `secret` is the one `hash` was made from.
pub async fn matches(hash: &KeyHash, secret: &str) -> bool {
    if !hash.is_bcrypt() {
        return hash.verify(secret);
    }
    let Ok(_turn) = SLOW.acquire().await else { return false };
    let (hash, secret) = (hash.clone(), secret.to_string());
    tokio::task::spawn_blocking(move || hash.verify(&secret)).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_kinds_of_hash_are_checked() {
        let fast = KeyHash::of("secret");
        assert!(matches(&fast, "secret").await);
        assert!(!matches(&fast, "other").await);
        let slow = KeyHash::Bcrypt(bcrypt::hash("secret", 4).expect("hashes"));
        assert!(matches(&slow, "secret").await);
        assert!(!matches(&slow, "other").await);
    }
}
