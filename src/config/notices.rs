//! What a configuration says that must be said at start rather than dropped: deprecated keys
//! Headscale still accepts (taken over into their new place, with Headscale's warning), and
//! keys set to something this server does not act on (named together in one warning).

use serde_yaml::Value;

use super::Config;

/// Deprecated keys Headscale v0.29 still reads, each with the key that replaced it.
const ALIASES: [(&str, &str); 1] = [("ephemeral_node_inactivity_timeout", "node.ephemeral.inactivity_timeout")];

/// Moves each deprecated key of `tree` to its new place (unless that is set too, which wins),
/// and returns Headscale's warning for each.
pub fn take_deprecated(tree: &mut Value) -> Vec<String> {
    let mut warnings = Vec::new();
    for (old, new) in ALIASES {
        let Some(value) = tree.as_mapping_mut().and_then(|m| m.remove(old)) else { continue };
        warnings.push(format!(
            "The {old:?} configuration key is deprecated. Please use {new:?} instead. {old:?} will be removed in the future."
        ));
        if lookup(tree, new).is_none() {
            set(tree, new, value);
        }
    }
    warnings
}

fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |v, k| v.get(k)).filter(|v| !v.is_null())
}

fn set(tree: &mut Value, path: &str, value: Value) {
    let mut cur = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Default::default());
        }
        let map = cur.as_mapping_mut().expect("a mapping");
        cur = map.entry(Value::String(part.to_string())).or_insert(Value::Null);
    }
    if !cur.is_mapping() {
        *cur = Value::Mapping(Default::default());
    }
    cur.as_mapping_mut().expect("a mapping").insert(Value::String(parts[parts.len() - 1].to_string()), value);
}

/// Whether a free-form section holds anything (not absent, `null`, `[]` or `{}`).
fn holds(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        _ => true,
    }
}

/// The keys `config` sets to something this server does not act on, in file order.
pub fn unhonoured(config: &Config) -> Vec<&'static str> {
    let c = config;
    [
        ("trusted_proxies", !c.trusted_proxies.is_empty()),
        ("node.routes", holds(&c.node.routes)),
        ("database.debug", c.database.debug),
        ("database.gorm", holds(&c.database.gorm)),
        ("dns.override_local_dns", !c.dns.override_local_dns),
        ("dns.extra_records", holds(&c.dns.extra_records)),
        ("dns.extra_records_path", !c.dns.extra_records_path.is_empty()),
        ("oidc", holds(&c.oidc)),
        ("tuning", holds(&c.tuning)),
        ("preauth_keys", holds(&c.preauth_keys)),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// Every warning the configuration calls for, one sentence each.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut all = config.deprecations.clone();
    let keys = unhonoured(config);
    if !keys.is_empty() {
        all.push(format!(
            "this server does not act on these settings, which keep their effect only under Headscale: {}",
            keys.join(", ")
        ));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_ephemeral_key_is_taken_over_with_headscales_warning() {
        let mut tree: Value = serde_yaml::from_str("ephemeral_node_inactivity_timeout: 30m\n").unwrap();
        let warnings = take_deprecated(&mut tree);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("The \"ephemeral_node_inactivity_timeout\" configuration key is deprecated."));
        assert_eq!(lookup(&tree, "node.ephemeral.inactivity_timeout"), Some(&Value::from("30m")));
        assert!(tree.get("ephemeral_node_inactivity_timeout").is_none());

        let both = "ephemeral_node_inactivity_timeout: 30m\nnode:\n  ephemeral:\n    inactivity_timeout: 5m\n";
        let mut tree: Value = serde_yaml::from_str(both).unwrap();
        assert_eq!(take_deprecated(&mut tree).len(), 1);
        assert_eq!(lookup(&tree, "node.ephemeral.inactivity_timeout"), Some(&Value::from("5m")), "the new key wins");
    }

    #[test]
    fn settings_not_acted_on_are_named_and_defaults_are_not() {
        let config = Config::default();
        assert!(unhonoured(&config).is_empty(), "{:?}", unhonoured(&config));
        let yaml = "trusted_proxies: [10.0.0.0/8]\nderp:\n  urls: [https://example.com/derpmap]\n\
                    node:\n  routes:\n    ha:\n      probe_interval: 10s\n\
                    dns:\n  override_local_dns: false\n  extra_records: []\ntuning:\n  batch_change_delay: 1s\n";
        let config: Config = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(unhonoured(&config), ["trusted_proxies", "node.routes", "dns.override_local_dns", "tuning"]);
        let warning = warnings(&config).pop().unwrap();
        assert!(warning.contains("trusted_proxies, node.routes"), "{warning}");
    }
}
