//! What a configuration says that must be said at start rather than dropped: Headscale's
//! warnings for the deprecated keys it used (see `aliases`), and the keys set to something this
//! server does not act on (named together in one warning).

use serde_yaml::Value;

use super::Config;

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
