//! DNS and the client's own settings as the official client decodes them: MagicDNS, global
//! and split nameservers, search domains, and `Debug.DisableLogTail` following `logtail`.
//! These read the client's map, which only the official client shows.

use super::*;

/// This area's scenarios.
pub fn list() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "DnsMagicDnsConfig",
            "MagicDNS is on: the map's DNS config is proxied and searches the base domain, and names are FQDNs in it",
            |t| Box::pin(magic_dns(t)),
        )
        .not_with(NEEDS_MAP),
        Scenario::new(
            "DnsNameserversAndSearchDomains",
            "global and split nameservers and search domains from the configuration reach the client",
            |t| Box::pin(nameservers(t)),
        )
        .setup(ServerSetup {
            config: &[
                ("HEADSCALE_DNS_NAMESERVERS_GLOBAL", "[192.0.2.53, 2001:db8::53]"),
                ("HEADSCALE_DNS_NAMESERVERS_SPLIT", "{corp.example: [192.0.2.54]}"),
                ("HEADSCALE_DNS_SEARCH_DOMAINS", "[corp.example]"),
            ],
            ..ServerSetup::default()
        })
        .not_with(NEEDS_MAP),
        Scenario::new(
            "DnsMagicDnsDisabled",
            "with magic_dns off the client is not told to proxy DNS nor search the base domain",
            |t| Box::pin(magic_dns_off(t)),
        )
        .setup(ServerSetup { config: &[("HEADSCALE_DNS_MAGIC_DNS", "false")], ..ServerSetup::default() })
        .not_with(NEEDS_MAP),
        Scenario::new(
            "LogTailDisabledByDefault",
            "the full map tells the client not to upload its logs to Tailscale (Debug.DisableLogTail)",
            |t| Box::pin(logtail_disabled(t)),
        )
        .not_with(NEEDS_MAP),
        Scenario::new(
            "LogTailEnabledLeavesClientLogging",
            "with logtail.enabled the map says nothing of log upload (the client keeps its own setting)",
            |t| Box::pin(logtail_enabled(t)),
        )
        .setup(ServerSetup { config: &[("HEADSCALE_LOGTAIL_ENABLED", "true")], ..ServerSetup::default() })
        .not_with(NEEDS_MAP),
        Scenario::new("DnsCustomBaseDomain", "a configured base domain names every node and is searched", |t| {
            Box::pin(custom_base_domain(t))
        })
        .setup(ServerSetup { config: &[("HEADSCALE_DNS_BASE_DOMAIN", "corp.test")], ..ServerSetup::default() })
        .not_with(NEEDS_MAP),
    ]
}

/// Joins one node and returns its map once it has one.
async fn joined_map(t: &Tailnet, name: &str) -> Result<serde_json::Value> {
    let user = t.user("dns").await?;
    let key = t.key(user, KeyOptions::default()).await?;
    t.join(name, &key.key).await?;
    t.netmap(name).await
}

async fn magic_dns(t: Tailnet) -> Result<Verdict> {
    let map = joined_map(&t, "resolver").await?;
    let domain = map["Domain"].as_str().context("the map names a domain")?;
    let dns = &map["DNSConfig"];
    ensure!(dns["Proxied"] == true, "MagicDNS is on but the client is not told to proxy DNS: {dns}");
    ensure!(dns["Domains"][0] == domain, "the base domain {domain} is not searched first: {dns}");
    let name = map["Node"]["Name"].as_str().unwrap_or_default();
    ensure!(name == format!("resolver.{domain}."), "the node's name is {name:?}");
    Ok(Verdict::Passed)
}

async fn nameservers(t: Tailnet) -> Result<Verdict> {
    let map = joined_map(&t, "resolver").await?;
    let dns = &map["DNSConfig"];
    let resolvers: Vec<&str> =
        dns["Resolvers"].as_array().into_iter().flatten().filter_map(|r| r["Addr"].as_str()).collect();
    ensure!(resolvers == ["192.0.2.53", "2001:db8::53"], "global resolvers {resolvers:?} in {dns}");
    ensure!(dns["Routes"]["corp.example"][0]["Addr"] == "192.0.2.54", "split DNS route for corp.example in {dns}");
    let domains: Vec<&str> = dns["Domains"].as_array().into_iter().flatten().filter_map(|d| d.as_str()).collect();
    ensure!(domains.contains(&"corp.example"), "search domains {domains:?}");
    Ok(Verdict::Passed)
}

async fn magic_dns_off(t: Tailnet) -> Result<Verdict> {
    let map = joined_map(&t, "resolver").await?;
    let dns = &map["DNSConfig"];
    ensure!(dns["Proxied"] != true, "MagicDNS is off but the client is told to proxy DNS: {dns}");
    let domain = map["Domain"].as_str().unwrap_or_default();
    let searched = dns["Domains"].as_array().is_some_and(|d| d.iter().any(|x| x == domain));
    ensure!(domain.is_empty() || !searched, "the base domain is searched with MagicDNS off: {dns}");
    Ok(Verdict::Passed)
}

async fn logtail_disabled(t: Tailnet) -> Result<Verdict> {
    let map = joined_map(&t, "quiet").await?;
    ensure!(map["Debug"]["DisableLogTail"] == true, "the map does not disable log upload: Debug = {}", map["Debug"]);
    Ok(Verdict::Passed)
}

async fn logtail_enabled(t: Tailnet) -> Result<Verdict> {
    let map = joined_map(&t, "chatty").await?;
    ensure!(map["Debug"]["DisableLogTail"] != true, "logtail is enabled but the map disables it: {}", map["Debug"]);
    Ok(Verdict::Passed)
}

async fn custom_base_domain(t: Tailnet) -> Result<Verdict> {
    let map = joined_map(&t, "desk").await?;
    ensure!(map["Domain"] == "corp.test", "the map's domain is {}", map["Domain"]);
    ensure!(map["Node"]["Name"] == "desk.corp.test.", "the node is named {}", map["Node"]["Name"]);
    ensure!(map["DNSConfig"]["Domains"][0] == "corp.test", "the search domains: {}", map["DNSConfig"]["Domains"]);
    Ok(Verdict::Passed)
}
