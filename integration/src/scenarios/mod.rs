//! The scenarios, each written once against [`Tailnet`] and run in both worlds — by
//! `cargo test -p integration --test scenarios` in-process and by `hi run PATTERN` in Docker —
//! with both clients (the official Go client and tailscale-rs) unless a scenario says why it
//! cannot run with one. [`all`] lists them, area by area; names are CamelCase and say the
//! behaviour proved, so that `hi run 'Acl*'` selects by prefix.

mod caps;
mod cli_api;
mod connectivity;
mod derp;
mod dns;
mod policy;
mod registration;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use headscale::tailcfg::{NodeKey, PrivateKey};

use crate::eventually;
use crate::noise_client::NoiseClient;
use crate::scenario::{
    skip_if_unsupported, ClientKind, KeyOptions, Scenario, ServerSetup, Tailnet, Verdict, ECHO_PORT, SETTLE,
};

/// For scenarios that read the client's decoded map (DNS config, capabilities, profiles).
const NEEDS_MAP: &[(ClientKind, &str)] = &[(ClientKind::Rs, "tailscale-rs shows no raw map")];
/// For scenarios that dial peers by name.
const NEEDS_MAGIC_DNS: &[(ClientKind, &str)] = &[(ClientKind::Rs, "tailscale-rs resolves no MagicDNS names")];
/// For scenarios where a node asks for tags as it registers.
const NEEDS_REQUESTED_TAGS: &[(ClientKind, &str)] = &[(ClientKind::Rs, "tailscale-rs drops the tags a node asks for")];

/// bob's nodes may open connections to `tag:server` nodes (which may answer); alice's may not.
const TAG_POLICY: &str = r#"{
  "tagOwners": { "tag:server": ["alice@"] },
  "acls": [
    { "action": "accept", "src": ["bob@"], "dst": ["tag:server:7000"] },
    { "action": "accept", "src": ["tag:server"], "dst": ["bob@:*"] },
  ],
}"#;

/// Every scenario, in the order `hi` runs them.
pub fn all() -> Vec<Scenario> {
    [
        connectivity::list(),
        registration::list(),
        policy::list(),
        dns::list(),
        caps::list(),
        derp::list(),
        cli_api::list(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Every ordered pair of distinct names.
fn pairs(names: &[String]) -> impl Iterator<Item = (&str, &str)> {
    names.iter().flat_map(move |a| names.iter().filter(move |b| *b != a).map(move |b| (a.as_str(), b.as_str())))
}

/// Waits until every node sees every other reachable.
async fn all_reachable(t: &Tailnet, names: &[String]) -> Result<()> {
    for (a, b) in pairs(names) {
        t.await_reachable(a, b).await?;
    }
    Ok(())
}

/// Checks for a few seconds that `client` stays unauthorized and the server lists only `names`.
async fn stays_refused(t: &Tailnet, client: &str, names: &[&str]) -> Result<()> {
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < until {
        let s = t.status(client).await?;
        ensure!(!s.authorized && s.ipv4.is_none(), "{client} was let in: {s:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listed: Vec<String> = t.nodes().await?.into_iter().map(|n| n.given_name).collect();
    ensure!(listed == names, "the server lists {listed:?}, expected {names:?}");
    Ok(())
}
