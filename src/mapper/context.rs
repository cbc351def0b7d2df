//! The map context: everything besides the snapshot that shapes a map (base domain, DNS
//! configuration, client debug switches, baseline capabilities), built once at start from the
//! configuration. (The DERP map can change while the server runs: it is in the snapshot.)

use std::sync::Arc;

use crate::config::Config;
use crate::tailcfg::{self, DnsConfig, DnsResolver};

/// Everything besides the snapshot that shapes a map; built once from the configuration.
#[derive(Debug, Clone)]
pub struct MapContext {
    pub base_domain: String,
    pub dns: Option<Arc<DnsConfig>>,
    /// Sent in every full map: `DisableLogTail` unless the configuration enables logtail.
    pub debug: Option<tailcfg::ClientDebug>,
    /// The capabilities every node has, on itself and as a peer (`tailcfg::caps::baseline`).
    pub caps: tailcfg::caps::Caps,
}

impl MapContext {
    /// The FQDN (with trailing dot) of a node name.
    pub(super) fn fqdn(&self, given_name: &str) -> String {
        if self.base_domain.is_empty() {
            format!("{given_name}.")
        } else {
            format!("{given_name}.{}.", self.base_domain)
        }
    }
}

impl MapContext {
    /// The context the configuration describes.
    pub fn from_config(config: &Config) -> MapContext {
        MapContext {
            base_domain: config.dns.base_domain.clone(),
            dns: dns_config(config),
            // As Headscale does: a client uploads its logs to Tailscale only if logtail is on.
            debug: (!config.logtail.enabled).then_some(tailcfg::ClientDebug { disable_log_tail: true }),
            caps: tailcfg::caps::baseline(tailcfg::caps::Switches {
                taildrop: config.taildrop.enabled,
                randomize_client_port: config.randomize_client_port,
                auto_update: config.auto_update.enabled,
            }),
        }
    }
}

/// The DNS configuration sent to nodes, if MagicDNS or resolvers are configured.
fn dns_config(config: &Config) -> Option<Arc<DnsConfig>> {
    let dns = &config.dns;
    let resolvers: Vec<_> = dns.nameservers.global.iter().map(|a| DnsResolver { addr: a.clone() }).collect();
    let mut domains = Vec::new();
    if dns.magic_dns && !dns.base_domain.is_empty() {
        domains.push(dns.base_domain.clone());
    }
    domains.extend(dns.search_domains.iter().cloned());
    let routes = dns
        .nameservers
        .split
        .iter()
        .map(|(d, rs)| (d.clone(), rs.iter().map(|a| DnsResolver { addr: a.clone() }).collect()))
        .collect();
    let cfg = DnsConfig { resolvers, routes, domains, proxied: dns.magic_dns };
    (cfg != DnsConfig::default()).then(|| Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Official clients kept uploading their logs to Tailscale's log service: no map told
    /// them `Debug.DisableLogTail`, which Headscale sends unless `logtail.enabled`.
    #[test]
    fn regression_official_clients_uploaded_their_logs_to_tailscale() {
        let mut config = Config::embedded(std::path::Path::new("/nonexistent"));
        let ctx = MapContext::from_config(&config);
        assert_eq!(ctx.debug, Some(tailcfg::ClientDebug { disable_log_tail: true }));
        config.logtail.enabled = true;
        assert_eq!(MapContext::from_config(&config).debug, None);
    }
}
