//! The node capabilities Headscale v0.29 gives every node, on itself and as a peer, whatever
//! the policy says: `cap/is-admin` and `cap/ssh` (a client runs Tailscale SSH only with the
//! latter), `cap/file-sharing` while Taildrop is on, `randomize-client-port` when configured,
//! the Taildrive attributes `drive:share` and `drive:access` (access itself is granted by
//! `cap/drive` grants), each with no values (`[]`), and `default-auto-update` with the value of
//! `auto_update.enabled` (the default a client without a local choice follows). Policy
//! `nodeAttrs` add to these.

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

/// `tailcfg.NodeAttrDefaultAutoUpdate`.
pub const DEFAULT_AUTO_UPDATE: &str = "default-auto-update";

/// A node's capabilities and their values.
pub type Caps = BTreeMap<String, Vec<Value>>;

/// The configuration switches the baseline follows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Switches {
    /// `taildrop.enabled`.
    pub taildrop: bool,
    /// `randomize_client_port`.
    pub randomize_client_port: bool,
    /// `auto_update.enabled`.
    pub auto_update: bool,
}

/// The capabilities every node gets under `switches`.
pub fn baseline(switches: Switches) -> Caps {
    let Switches { taildrop, randomize_client_port, auto_update } = switches;
    let mut caps: Caps =
        [IS_ADMIN, SSH, DRIVE_SHARE, DRIVE_ACCESS].iter().map(|c| (c.to_string(), Vec::new())).collect();
    caps.insert(DEFAULT_AUTO_UPDATE.to_string(), vec![Value::Bool(auto_update)]);
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
        let off = baseline(Switches::default());
        assert_eq!(off.keys().collect::<Vec<_>>(), [DEFAULT_AUTO_UPDATE, DRIVE_ACCESS, DRIVE_SHARE, IS_ADMIN, SSH]);
        assert_eq!(off[DEFAULT_AUTO_UPDATE], [Value::Bool(false)]);
        let on = baseline(Switches { taildrop: true, randomize_client_port: true, auto_update: true });
        assert!(on.contains_key(FILE_SHARING) && on.contains_key(RANDOMIZE_CLIENT_PORT));
        assert_eq!(on[DEFAULT_AUTO_UPDATE], [Value::Bool(true)]);
        assert!(on.iter().filter(|(k, _)| *k != DEFAULT_AUTO_UPDATE).all(|(_, v)| v.is_empty()));
    }

    #[test]
    fn policy_values_win_over_the_baseline() {
        let policy: Caps = [(SSH.to_string(), vec![Value::from(1)])].into();
        let merged = with_base(&baseline(Switches { taildrop: true, ..Switches::default() }), policy);
        assert_eq!(merged[SSH], [Value::from(1)]);
        assert!(merged[IS_ADMIN].is_empty());
    }
}
