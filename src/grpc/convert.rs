//! Conversions from the server's records (`model`, the snapshot, API keys) to the `headscale.v1`
//! messages, and between protobuf timestamps and `chrono` times.

use chrono::{DateTime, Utc};

use super::pb;
use crate::model::{self, RegisterMethod};
use crate::state::{NodeEntry, Snapshot};

/// A `chrono` time as a protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// A protobuf timestamp as a `chrono` time; `None` when it is out of range.
pub fn to_datetime(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(t.nanos).ok()?;
    DateTime::from_timestamp(t.seconds, nanos)
}

/// The listed form of a pre-auth key: its prefix with the secret masked.
pub fn masked_key(prefix: &str) -> String {
    format!("hskey-auth-{prefix}-***")
}

/// An API key as listed: its prefix and times, never its secret.
pub fn api_key(k: &crate::db::ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id,
        prefix: k.prefix.clone(),
        expiration: Some(timestamp(k.expiration)),
        created_at: Some(timestamp(k.created_at)),
        last_seen: k.last_seen.map(timestamp),
    }
}

/// A user as sent on the wire.
pub fn user(u: &model::User) -> pb::User {
    pb::User {
        id: u.id,
        name: u.name.clone(),
        created_at: Some(timestamp(u.created_at)),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        provider_id: u.provider_id.clone(),
        provider: u.provider.clone(),
        profile_pic_url: u.profile_pic_url.clone(),
    }
}

/// A pre-auth key as sent on the wire; `key` is the masked prefix or, right after creation,
/// the full secret.
pub fn pre_auth_key(k: &model::PreAuthKey, owner: Option<&model::User>, key: String) -> pb::PreAuthKey {
    pb::PreAuthKey {
        user: owner.map(user),
        id: k.id,
        key,
        reusable: k.reusable,
        ephemeral: k.ephemeral,
        used: k.used,
        expiration: k.expiration.map(timestamp),
        created_at: Some(timestamp(k.created_at)),
        acl_tags: k.tags.clone(),
    }
}

fn register_method(m: RegisterMethod) -> pb::RegisterMethod {
    match m {
        RegisterMethod::AuthKey => pb::RegisterMethod::AuthKey,
        RegisterMethod::Cli => pb::RegisterMethod::Cli,
        RegisterMethod::Oidc => pb::RegisterMethod::Oidc,
    }
}

/// The routes a node serves now: those it is the primary router of, and its exit routes.
fn served_routes(n: &model::Node, snap: &Snapshot) -> Vec<String> {
    let mut served = snap.policy.primary_routes(n.id);
    served.extend(n.live_routes().filter(|r| r.prefix_len() == 0));
    served.iter().map(ToString::to_string).collect()
}

/// A node as sent on the wire, with its owner and the (masked) key it registered with.
pub fn node(entry: &NodeEntry, snap: &Snapshot, keys: &[model::PreAuthKey]) -> pb::Node {
    let n = &entry.node;
    let owner = |id: Option<model::UserId>| id.and_then(|id| snap.user(id)).map(|u| u.as_ref());
    let auth_key = n.auth_key_id.and_then(|id| keys.iter().find(|k| k.id == id));
    pb::Node {
        id: n.id,
        machine_key: n.machine_key.to_string(),
        node_key: n.node_key.to_string(),
        disco_key: n.disco_key.unwrap_or_default().to_string(),
        ip_addresses: n.ips().iter().map(ToString::to_string).collect(),
        name: n.hostname.clone(),
        user: owner(n.user_id).map(user),
        last_seen: n.last_seen.map(timestamp),
        expiry: n.expiry.map(timestamp),
        pre_auth_key: auth_key.map(|k| pre_auth_key(k, owner(k.user_id), masked_key(&k.prefix))),
        created_at: Some(timestamp(n.created_at)),
        register_method: register_method(n.register_method).into(),
        given_name: n.given_name.clone(),
        online: entry.online,
        approved_routes: n.approved_routes.iter().map(ToString::to_string).collect(),
        available_routes: n.hostinfo.routable_ips.iter().map(ToString::to_string).collect(),
        subnet_routes: served_routes(n, snap),
        tags: n.tags.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Node, PreAuthKey, User};
    use crate::tailcfg::{DiscoKey, MachineKey, NodeKey};

    fn alice() -> User {
        User {
            id: 7,
            name: "alice".into(),
            display_name: "Alice".into(),
            email: "alice@example.com".into(),
            provider_id: String::new(),
            provider: String::new(),
            profile_pic_url: String::new(),
            created_at: DateTime::from_timestamp(1_700_000_000, 5).expect("valid"),
        }
    }

    fn key() -> PreAuthKey {
        PreAuthKey {
            id: 3,
            prefix: "abcdefghijkl".into(),
            hash: crate::model::KeyHash::Sha256([0; 32]),
            user_id: Some(7),
            reusable: true,
            ephemeral: false,
            used: false,
            tags: vec!["tag:ci".into()],
            expiration: None,
            created_at: DateTime::from_timestamp(1_700_000_100, 0).expect("valid"),
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("valid");
        let pb = timestamp(t);
        assert_eq!((pb.seconds, pb.nanos), (1_700_000_000, 123_456_789));
        assert_eq!(to_datetime(&pb), Some(t));
        assert_eq!(to_datetime(&prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
    }

    #[test]
    fn converts_users_and_keys() {
        let u = user(&alice());
        assert_eq!((u.id, u.name.as_str(), u.display_name.as_str()), (7, "alice", "Alice"));
        assert_eq!(u.created_at.map(|t| t.seconds), Some(1_700_000_000));

        let k = pre_auth_key(&key(), Some(&alice()), masked_key("abcdefghijkl"));
        assert_eq!(k.key, "hskey-auth-abcdefghijkl-***");
        assert_eq!(k.user.map(|u| u.name), Some("alice".to_string()));
        assert_eq!(k.acl_tags, vec!["tag:ci".to_string()]);
        assert!(k.expiration.is_none());
    }

    #[test]
    fn converts_nodes_with_owner_and_key() {
        let mut snap = Snapshot::default();
        snap.users.insert(7, Arc::new(alice()));
        let node_rec = Node {
            id: 1,
            machine_key: MachineKey([1; 32]),
            node_key: NodeKey([2; 32]),
            disco_key: None,
            endpoints: Vec::new(),
            hostinfo: Default::default(),
            ipv4: Some("100.64.0.1".parse().expect("valid")),
            ipv6: Some("fd7a:115c:a1e0::1".parse().expect("valid")),
            hostname: "Laptop".into(),
            given_name: "laptop".into(),
            user_id: Some(7),
            register_method: RegisterMethod::AuthKey,
            tags: Vec::new(),
            auth_key_id: Some(3),
            ephemeral: false,
            expiry: None,
            last_seen: None,
            approved_routes: Vec::new(),
            created_at: DateTime::from_timestamp(1_700_000_200, 0).expect("valid"),
        };
        let entry = NodeEntry::new(node_rec, true);
        let n = node(&entry, &snap, &[key()]);
        assert_eq!(n.name, "Laptop");
        assert_eq!(n.given_name, "laptop");
        assert!(n.machine_key.starts_with("mkey:0101"));
        assert!(n.node_key.starts_with("nodekey:0202"));
        assert_eq!(n.disco_key, DiscoKey::default().to_string());
        assert_eq!(n.ip_addresses, vec!["100.64.0.1".to_string(), "fd7a:115c:a1e0::1".to_string()]);
        assert_eq!(n.user.map(|u| u.name), Some("alice".to_string()));
        assert_eq!(n.pre_auth_key.map(|k| k.key), Some("hskey-auth-abcdefghijkl-***".to_string()));
        assert_eq!(n.register_method, pb::RegisterMethod::AuthKey as i32);
        assert!(n.online);
        assert!(n.expiry.is_none());
    }
}
