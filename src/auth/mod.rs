//! Credentials: pre-auth keys and API keys (generated, parsed and checked against their stored
//! hash, slow Headscale hashes off the async threads) and the interactive registrations waiting for an admin.

mod check;
mod pending;
mod secret;

pub use check::matches;

pub use pending::{AuthId, PendingFull, PendingRegistration, PendingRegistrations, Verdict};
pub use secret::{
    api_key_prefix, generate_api_key, generate_pre_auth_key, is_legacy_pre_auth_key, split_api_key, split_pre_auth_key,
    GeneratedKey, LEGACY_KEY_PREFIX,
};
