//! The node capabilities Headscale v0.29 gives every node, on itself and as a peer, whatever
//! the policy says: `cap/is-admin` and `cap/ssh` (a client runs Tailscale SSH only with the
//! latter), `cap/file-sharing` while Taildrop is on, `randomize-client-port` when configured,
//! and the Taildrive attributes `drive:share` and `drive:access` (access itself is granted by
//! `cap/drive` grants). Each has no values (`[]`). Policy `nodeAttrs` add to these.

use std::collections::BTreeMap;

use serde_json::Value;

/// `tailcfg.CapabilityAdmin`.
pub const IS_ADMIN: &str = "https://tailscale.com/cap/is-admin";
/// `tailcfg.CapabilitySSH`.
pub const SSH: &str = "https://tailscale.com/cap/ssh";
/// `tailcfg.CapabilityFileSharing`.
pub const FILE_SHARING: &str = "https://tailscale.com/cap/file-sharing";
/// `tailcfg.NodeAttrRandomizeClientPort`.
pub const RANDOMIZE_CLIENT_PORT: &str = "randomize-client-port";
/// `tailcfg.NodeAttrsTaildriveShare`.
pub const DRIVE_SHARE: &str = "drive:share";
/// `tailcfg.NodeAttrsTaildriveAccess`.
pub const DRIVE_ACCESS: &str = "drive:access";

/// A node's capabilities and their values.
pub type Caps = BTreeMap<String, Vec<Value>>;

/// The capabilities every node gets, given `taildrop.enabled` and `randomize_client_port`.
pub fn baseline(taildrop: bool, randomize_client_port: bool) -> Caps {
    let mut caps: Caps =
        [IS_ADMIN, SSH, DRIVE_SHARE, DRIVE_ACCESS].iter().map(|c| (c.to_string(), Vec::new())).collect();
    if taildrop {
        caps.insert(FILE_SHARING.to_string(), Vec::new());
    }
    if randomize_client_port {
        caps.insert(RANDOMIZE_CLIENT_PORT.to_string(), Vec::new());
    }
    caps
}

/// `policy` on top of `base`: a capability the policy gives keeps the policy's values.
pub fn with_base(base: &Caps, mut policy: Caps) -> Caps {
    for (cap, values) in base {
        policy.entry(cap.clone()).or_insert_with(|| values.clone());
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_follows_the_configuration() {
        let off = baseline(false, false);
        assert_eq!(off.keys().collect::<Vec<_>>(), [DRIVE_ACCESS, DRIVE_SHARE, IS_ADMIN, SSH]);
        let on = baseline(true, true);
        assert!(on.contains_key(FILE_SHARING) && on.contains_key(RANDOMIZE_CLIENT_PORT));
        assert!(on.values().all(Vec::is_empty));
    }

    #[test]
    fn policy_values_win_over_the_baseline() {
        let policy: Caps = [(SSH.to_string(), vec![Value::from(1)])].into();
        let merged = with_base(&baseline(true, false), policy);
        assert_eq!(merged[SSH], [Value::from(1)]);
        assert!(merged[IS_ADMIN].is_empty());
    }
}
