//! The map context: everything besides the snapshot that shapes a map (base domain, DERP
//! map, DNS configuration, client debug switches, baseline capabilities), built once at start
//! from the configuration and the addresses the server bound.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::tailcfg::{self, DerpMap, DerpNode, DerpRegion, DnsConfig, DnsResolver};

/// Everything besides the snapshot that shapes a map; built once from the configuration.
#[derive(Debug, Clone)]
pub struct MapContext {
    pub base_domain: String,
    pub derp_map: Arc<DerpMap>,
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

/// The addresses the server bound, which the DERP map tells clients.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The main listener.
    pub listen: SocketAddr,
    /// The embedded DERP server's own TLS port, if it has one.
    pub derp_tls: Option<SocketAddr>,
    /// The STUN port, if the embedded DERP server runs.
    pub stun: Option<SocketAddr>,
}

impl MapContext {
    /// The context the configuration describes, for a server bound at `bound`.
    pub fn from_config(config: &Config, bound: &Bound) -> MapContext {
        MapContext {
            base_domain: config.dns.base_domain.clone(),
            derp_map: Arc::new(derp_map(config, bound)),
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

/// The DERP map: the embedded region, with the ports the server actually bound.
fn derp_map(config: &Config, bound: &Bound) -> DerpMap {
    let (listen, tls, stun) = (bound.listen, bound.derp_tls, bound.stun);
    let d = &config.derp.server;
    let mut map = DerpMap::default();
    if d.enabled && d.automatically_add_embedded_derp_region {
        let port = tls.map(|a| a.port()).unwrap_or_else(|| {
            config.server_url.parse::<http::Uri>().ok().and_then(|u| u.port_u16()).unwrap_or(listen.port())
        });
        let node = DerpNode {
            name: format!("{}a", d.region_id),
            region_id: d.region_id,
            host_name: config.server_host(),
            ipv4: d.ipv4.clone(),
            ipv6: d.ipv6.clone(),
            stun_port: stun.map(|a| a.port() as i32).unwrap_or(-1),
            derp_port: port,
            insecure_for_tests: d.tls_self_signed,
            can_port_80: false,
        };
        map.regions.insert(
            d.region_id,
            DerpRegion {
                region_id: d.region_id,
                region_code: d.region_code.clone(),
                region_name: d.region_name.clone(),
                nodes: vec![node],
            },
        );
    }
    map
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

    fn bound() -> Bound {
        Bound { listen: "127.0.0.1:8080".parse().unwrap(), derp_tls: None, stun: None }
    }

    /// Official clients kept uploading their logs to Tailscale's log service: no map told
    /// them `Debug.DisableLogTail`, which Headscale sends unless `logtail.enabled`.
    #[test]
    fn regression_official_clients_uploaded_their_logs_to_tailscale() {
        let mut config = Config::embedded(std::path::Path::new("/nonexistent"));
        let ctx = MapContext::from_config(&config, &bound());
        assert_eq!(ctx.debug, Some(tailcfg::ClientDebug { disable_log_tail: true }));
        config.logtail.enabled = true;
        assert_eq!(MapContext::from_config(&config, &bound()).debug, None);
    }
}
