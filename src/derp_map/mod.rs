//! The DERP map clients are told, assembled as Headscale assembles it: the maps of
//! `derp.urls` (fetched over HTTP(S)), then of `derp.paths` (YAML or JSON files), each
//! overriding the regions of the ones before and `null` removing a region, then the embedded
//! region (`derp.server`, with the ports the server bound) on top. A map that cannot be read
//! at start stops start-up, as in Headscale; with `derp.auto_update_enabled` the map is read
//! again every `derp.update_frequency`, a change reaches connected clients as a delta, and a
//! failure keeps the last good map.

mod fetch;
mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use parse::{parse, PartialMap};

use crate::config::Config;
use crate::state::State;
use crate::tailcfg::{DerpMap, DerpNode, DerpRegion};

/// A DERP map source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DerpMapError {
    #[error("cannot fetch the DERP map {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("cannot read the DERP map {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the DERP map {origin} is not a DERP map: {message}")]
    Parse { origin: String, message: String },
}

/// The addresses the server bound, which the embedded region tells clients.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The main listener.
    pub listen: SocketAddr,
    /// The embedded DERP server's own TLS port, if it has one.
    pub derp_tls: Option<SocketAddr>,
    /// The STUN port, if the embedded DERP server runs.
    pub stun: Option<SocketAddr>,
}

/// Where the map comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub urls: Vec<String>,
    pub paths: Vec<PathBuf>,
    /// The embedded region, if the embedded relay runs and is added automatically.
    pub embedded: Option<DerpRegion>,
}

impl Sources {
    /// The sources the configuration names, for a server bound at `bound`.
    pub fn from_config(config: &Config, bound: &Bound) -> Sources {
        Sources {
            urls: config.derp.urls.clone(),
            paths: config.derp.paths.clone(),
            embedded: embedded_region(config, bound),
        }
    }

    /// Reads every source and merges them.
    pub async fn load(&self) -> Result<DerpMap, DerpMapError> {
        let mut maps = Vec::new();
        for url in &self.urls {
            let text = fetch::get(url).await?;
            maps.push(parse(&text).map_err(|message| DerpMapError::Parse { origin: url.clone(), message })?);
        }
        for path in &self.paths {
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|source| DerpMapError::Read { path: path.clone(), source })?;
            let origin = path.display().to_string();
            maps.push(parse(&text).map_err(|message| DerpMapError::Parse { origin, message })?);
        }
        Ok(merge(maps, self.embedded.clone()))
    }

    /// Whether anything besides the embedded region can change.
    fn external(&self) -> bool {
        !self.urls.is_empty() || !self.paths.is_empty()
    }
}

/// Merges maps in order (a later region replaces an earlier one of the same id; `None`
/// removes it), then puts the embedded region on top.
pub fn merge(maps: Vec<PartialMap>, embedded: Option<DerpRegion>) -> DerpMap {
    let mut regions: std::collections::BTreeMap<i32, Option<DerpRegion>> = Default::default();
    for map in maps {
        regions.extend(map);
    }
    let mut map = DerpMap { regions: regions.into_iter().filter_map(|(id, r)| Some((id, r?))).collect() };
    if let Some(region) = embedded {
        map.regions.insert(region.region_id, region);
    }
    map
}

/// Reads the map again every `every`, and publishes it when it changed; a failure is logged
/// and the map in force stays.
pub async fn keep_current(
    state: Arc<State>,
    sources: Sources,
    every: Duration,
    stopped: impl std::future::Future<Output = ()>,
) {
    if !sources.external() || every.is_zero() {
        return;
    }
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
        }
        match sources.load().await {
            Ok(map) => {
                if state.set_derp_map(map).await {
                    tracing::info!("the DERP map changed; connected clients are told");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh the DERP map; the last good one stays"),
        }
    }
}

/// The embedded region, with the ports the server actually bound; `None` unless the embedded
/// relay runs and `automatically_add_embedded_derp_region` is on.
fn embedded_region(config: &Config, bound: &Bound) -> Option<DerpRegion> {
    let d = &config.derp.server;
    if !d.enabled || !d.automatically_add_embedded_derp_region {
        return None;
    }
    // The relay's own TLS port if it has one; else, as Headscale tells clients, the port of
    // `server_url`, or the scheme's (443 behind a TLS proxy).
    let port = bound.derp_tls.map(|a| a.port()).unwrap_or_else(|| match config.server_url.parse::<http::Uri>() {
        Ok(u) => u.port_u16().unwrap_or(if u.scheme_str() == Some("https") { 443 } else { 80 }),
        Err(_) => bound.listen.port(),
    });
    let node = DerpNode {
        name: format!("{}a", d.region_id),
        region_id: d.region_id,
        host_name: config.server_host(),
        ipv4: d.ipv4.clone(),
        ipv6: d.ipv6.clone(),
        stun_port: bound.stun.map(|a| a.port() as i32).unwrap_or(-1),
        derp_port: port,
        insecure_for_tests: d.tls_self_signed,
        ..DerpNode::default()
    };
    Some(DerpRegion {
        region_id: d.region_id,
        region_code: d.region_code.clone(),
        region_name: d.region_name.clone(),
        nodes: vec![node],
    })
}

#[cfg(test)]
mod tests;
