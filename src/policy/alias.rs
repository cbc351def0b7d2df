//! The words of the policy language: aliases (`*`, users, `user:*@domain`, groups, tags,
//! hosts, addresses, prefixes, ranges, autogroups), port lists and protocols, parsed from
//! the strings a policy writes. Error texts follow Tailscale's.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::ipset::IpRange;
use crate::tailcfg::{IpProto, PortRange};

/// The `autogroup:` aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AutoGroup {
    /// Nodes owned by users (not tagged).
    Member,
    /// Tagged nodes.
    Tagged,
    /// A destination meaning "the source user's own untagged nodes".
    SelfDevices,
    /// Everything reachable through an exit node.
    Internet,
    /// Every address, on the source side.
    DangerAll,
    /// SSH: any login but root.
    NonRoot,
    /// Nodes shared into the tailnet from elsewhere (never any here).
    Shared,
    /// Users holding an admin-console role; a self-hosted tailnet has none.
    Role(Role),
}

/// The admin-console roles Tailscale names as autogroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Owner,
    Admin,
    ItAdmin,
    NetworkAdmin,
    BillingAdmin,
    Auditor,
}

const AUTOGROUPS: [(&str, AutoGroup); 13] = [
    ("member", AutoGroup::Member),
    ("tagged", AutoGroup::Tagged),
    ("self", AutoGroup::SelfDevices),
    ("internet", AutoGroup::Internet),
    ("danger-all", AutoGroup::DangerAll),
    ("nonroot", AutoGroup::NonRoot),
    ("shared", AutoGroup::Shared),
    ("owner", AutoGroup::Role(Role::Owner)),
    ("admin", AutoGroup::Role(Role::Admin)),
    ("it-admin", AutoGroup::Role(Role::ItAdmin)),
    ("network-admin", AutoGroup::Role(Role::NetworkAdmin)),
    ("billing-admin", AutoGroup::Role(Role::BillingAdmin)),
    ("auditor", AutoGroup::Role(Role::Auditor)),
];

impl AutoGroup {
    /// The name after `autogroup:`.
    pub fn name(self) -> &'static str {
        AUTOGROUPS.iter().find(|(_, g)| *g == self).map(|(n, _)| *n).expect("every autogroup is listed")
    }
}

/// One alias: something that stands for a set of addresses (or, for SSH, of users).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alias {
    /// `*`: every Tailscale address (and, as a source, every approved subnet route).
    Wildcard,
    /// A user, by e-mail or by name with a trailing `@` (`alice@example.com`, `alice@`).
    User(String),
    /// `user:*@domain`: every user whose e-mail is in the domain.
    UserDomain(String),
    /// `group:name`.
    Group(String),
    /// `tag:name`.
    Tag(String),
    /// A name from `hosts`.
    Host(String),
    /// An address or prefix literal (an address is a single-address prefix).
    Prefix(IpNet),
    /// An `a-b` address range literal.
    Range(IpRange),
    /// `autogroup:name`.
    AutoGroup(AutoGroup),
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alias::Wildcard => f.write_str("*"),
            Alias::User(u) => f.write_str(u),
            Alias::UserDomain(d) => write!(f, "user:*@{d}"),
            Alias::Group(g) | Alias::Tag(g) | Alias::Host(g) => f.write_str(g),
            Alias::Prefix(p) if p.prefix_len() == p.max_prefix_len() => write!(f, "{}", p.addr()),
            Alias::Prefix(p) => write!(f, "{p}"),
            Alias::Range(r) => write!(f, "{}-{}", r.first(), r.last()),
            Alias::AutoGroup(g) => write!(f, "autogroup:{}", g.name()),
        }
    }
}

/// Why an alias, port list or protocol could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("{0:?} is not a valid autogroup")]
    UnknownAutoGroup(String),
    #[error("{0}")]
    BadTag(&'static str),
    #[error("{0:?} is not a valid alias")]
    Empty(String),
    #[error("invalid address range {0:?}")]
    BadRange(String),
    #[error("port range {0:?}: invalid first integer")]
    BadFirstPort(String),
    #[error("port range {0:?}: invalid last integer")]
    BadLastPort(String),
    #[error("port range {0:?}: first port must be >0, or use '*' for wildcard")]
    ZeroPort(String),
    #[error("port range {0:?}: first port must not be greater than last port")]
    ReversedPorts(String),
    #[error("missing port range in {0:?}: use \"alias:ports\", like \"tag:server:22\" or \"tag:server:*\"")]
    MissingPorts(String),
    #[error("proto {0:?} is not a valid protocol name or number (1-255)")]
    BadProto(String),
    #[error("proto {0:?} does not support specific ports; use '*'")]
    ProtoWithoutPorts(String),
}

/// Checks a tag name the way Tailscale does: `tag:` then an ASCII letter, then letters,
/// digits or dashes.
pub fn check_tag(tag: &str) -> Result<(), AliasError> {
    let name = tag.strip_prefix("tag:").ok_or(AliasError::BadTag("tags must start with 'tag:'"))?;
    let first = name.chars().next().ok_or(AliasError::BadTag("tag names must not be empty"))?;
    if !first.is_ascii_alphabetic() {
        return Err(AliasError::BadTag("tag names must start with a letter, after 'tag:'"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(AliasError::BadTag("tag names can only contain numbers, letters, or dashes"));
    }
    Ok(())
}

/// Parses an alias. Surrounding whitespace is ignored.
pub fn parse_alias(text: &str) -> Result<Alias, AliasError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(AliasError::Empty(text.to_string()));
    }
    if s == "*" {
        return Ok(Alias::Wildcard);
    }
    if let Some(name) = s.strip_prefix("autogroup:") {
        return AUTOGROUPS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, g)| Alias::AutoGroup(*g))
            .ok_or_else(|| AliasError::UnknownAutoGroup(s.to_string()));
    }
    if s.starts_with("group:") {
        return Ok(Alias::Group(s.to_string()));
    }
    if s.starts_with("tag:") {
        check_tag(s)?;
        return Ok(Alias::Tag(s.to_string()));
    }
    if let Some(user) = s.strip_prefix("user:") {
        return Ok(match user.strip_prefix("*@") {
            Some(domain) => Alias::UserDomain(domain.to_string()),
            None => Alias::User(user.to_string()),
        });
    }
    if s.contains('@') {
        return Ok(Alias::User(s.to_string()));
    }
    if let Some(p) = parse_prefix(s) {
        return Ok(Alias::Prefix(p));
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(first), Ok(last)) = (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
            return IpRange::between(first, last).map(Alias::Range).ok_or_else(|| AliasError::BadRange(s.to_string()));
        }
    }
    Ok(Alias::Host(s.to_string()))
}

/// Parses an address (as a single-address prefix) or a CIDR prefix, masking host bits.
pub fn parse_prefix(s: &str) -> Option<IpNet> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Some(IpNet::from(addr));
    }
    s.parse::<IpNet>().ok().map(|n| n.trunc())
}

/// Splits `alias:ports` (an ACL destination) at its last colon; IPv6 addresses may be
/// written in brackets (`[fd7a::1]:22`).
pub fn split_host_ports(text: &str) -> Result<(&str, &str), AliasError> {
    let s = text.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((addr, ports)) = rest.split_once("]:") {
            return Ok((addr, ports));
        }
    }
    s.rsplit_once(':').ok_or_else(|| AliasError::MissingPorts(text.to_string()))
}

/// Parses a port list: `*`, `22`, `80-443`, or a comma-separated list of those.
pub fn parse_ports(text: &str) -> Result<Vec<PortRange>, AliasError> {
    if text == "*" {
        return Ok(vec![PortRange::ANY]);
    }
    text.split(',').map(parse_port_range).collect()
}

fn parse_port_range(text: &str) -> Result<PortRange, AliasError> {
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => {
            let first = parse_port(a).ok_or_else(|| AliasError::BadFirstPort(text.to_string()))?;
            (first, parse_port(b).ok_or_else(|| AliasError::BadLastPort(text.to_string()))?)
        }
        None => {
            let p = parse_port(text).ok_or_else(|| AliasError::BadFirstPort(text.to_string()))?;
            (p, p)
        }
    };
    if first == 0 {
        return Err(AliasError::ZeroPort(text.to_string()));
    }
    if first > last {
        return Err(AliasError::ReversedPorts(text.to_string()));
    }
    Ok(PortRange { first, last })
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

const PROTOCOLS: [(&str, IpProto); 14] = [
    ("icmp", IpProto::ICMP),
    ("igmp", IpProto::IGMP),
    ("ipv4", IpProto::IPV4),
    ("ip-in-ip", IpProto::IPV4),
    ("tcp", IpProto::TCP),
    ("egp", IpProto::EGP),
    ("igp", IpProto::IGP),
    ("udp", IpProto::UDP),
    ("gre", IpProto::GRE),
    ("esp", IpProto::ESP),
    ("ah", IpProto::AH),
    ("ipv6-icmp", IpProto::ICMPV6),
    ("sctp", IpProto::SCTP),
    ("fc", IpProto::FC),
];

/// Parses a protocol: a name, a number 1-255 (no leading zeros), or empty / `*` for "the
/// default set" (returned as an empty list).
pub fn parse_proto(text: &str) -> Result<Vec<IpProto>, AliasError> {
    if text.is_empty() || text == "*" {
        return Ok(Vec::new());
    }
    if let Some((_, p)) = PROTOCOLS.iter().find(|(n, _)| n.eq_ignore_ascii_case(text)) {
        return Ok(vec![*p]);
    }
    let numeric = !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u8>() {
        Ok(n) if numeric && n > 0 => Ok(vec![IpProto(n)]),
        _ => Err(AliasError::BadProto(text.to_string())),
    }
}

/// Whether a set of protocols (empty: the default TCP, UDP, ICMP, ICMPv6) has port numbers.
pub fn protos_have_ports(protos: &[IpProto]) -> bool {
    protos.is_empty() || protos.iter().all(|p| [IpProto::TCP, IpProto::UDP, IpProto::SCTP].contains(p))
}

/// Parses a grant `ip` entry: `*`, `ports`, or `proto:ports`.
pub fn parse_ip_entry(text: &str) -> Result<(Vec<IpProto>, Vec<PortRange>), AliasError> {
    let (protos, ports) = match text.split_once(':') {
        Some((proto, ports)) => (parse_proto(proto)?, parse_ports(ports)?),
        None => (Vec::new(), parse_ports(text)?),
    };
    if ports != [PortRange::ANY] && !protos_have_ports(&protos) {
        return Err(AliasError::ProtoWithoutPorts(text.split(':').next().unwrap_or(text).to_string()));
    }
    Ok((protos, ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_alias_form() {
        assert_eq!(parse_alias("*").unwrap(), Alias::Wildcard);
        assert_eq!(parse_alias("alice@example.com").unwrap(), Alias::User("alice@example.com".into()));
        assert_eq!(parse_alias("alice@").unwrap(), Alias::User("alice@".into()));
        assert_eq!(parse_alias("user:*@example.com").unwrap(), Alias::UserDomain("example.com".into()));
        assert_eq!(parse_alias("group:dev").unwrap(), Alias::Group("group:dev".into()));
        assert_eq!(parse_alias(" tag:server ").unwrap(), Alias::Tag("tag:server".into()));
        assert_eq!(parse_alias("webserver").unwrap(), Alias::Host("webserver".into()));
        assert_eq!(parse_alias("100.64.0.1").unwrap(), Alias::Prefix("100.64.0.1/32".parse().unwrap()));
        assert_eq!(parse_alias("10.1.2.3/8").unwrap(), Alias::Prefix("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_alias("fd7a:115c:a1e0::1").unwrap(), Alias::Prefix("fd7a:115c:a1e0::1/128".parse().unwrap()));
        assert!(matches!(parse_alias("100.64.0.1-100.64.0.9").unwrap(), Alias::Range(_)));
        assert_eq!(parse_alias("autogroup:danger-all").unwrap(), Alias::AutoGroup(AutoGroup::DangerAll));
        assert_eq!(parse_alias("autogroup:it-admin").unwrap(), Alias::AutoGroup(AutoGroup::Role(Role::ItAdmin)));
        assert_eq!(parse_alias("autogroup:self").unwrap().to_string(), "autogroup:self");
    }

    #[test]
    fn refuses_bad_aliases() {
        assert!(matches!(parse_alias("autogroup:bogus"), Err(AliasError::UnknownAutoGroup(_))));
        assert_eq!(
            parse_alias("tag:сервер").unwrap_err().to_string(),
            "tag names must start with a letter, after 'tag:'"
        );
        assert!(parse_alias("tag:a_b").is_err());
        assert!(parse_alias("").is_err());
        assert!(parse_alias("100.64.0.9-100.64.0.1").is_err());
    }

    #[test]
    fn splits_destinations_and_reads_ports() {
        assert_eq!(split_host_ports("tag:server:22").unwrap(), ("tag:server", "22"));
        assert_eq!(split_host_ports("fd00::1/128:443").unwrap(), ("fd00::1/128", "443"));
        assert_eq!(split_host_ports("[fd7a::1]:22").unwrap(), ("fd7a::1", "22"));
        assert!(split_host_ports("webserver").is_err());
        assert_eq!(parse_ports("*").unwrap(), [PortRange::ANY]);
        assert_eq!(
            parse_ports("22,80-443").unwrap(),
            [PortRange { first: 22, last: 22 }, PortRange { first: 80, last: 443 }]
        );
        assert_eq!(parse_ports("ssh").unwrap_err().to_string(), "port range \"ssh\": invalid first integer");
        assert_eq!(
            parse_ports("0").unwrap_err().to_string(),
            "port range \"0\": first port must be >0, or use '*' for wildcard"
        );
        assert!(parse_ports("443-80").is_err());
        assert!(parse_ports("70000").is_err());
        assert!(parse_ports("-1").is_err());
    }

    #[test]
    fn reads_protocols_and_ip_entries() {
        assert_eq!(parse_proto("tcp").unwrap(), [IpProto::TCP]);
        assert_eq!(parse_proto("6").unwrap(), [IpProto::TCP]);
        assert_eq!(parse_proto("icmp").unwrap(), [IpProto::ICMP]);
        assert!(parse_proto("").unwrap().is_empty());
        assert!(parse_proto("06").is_err() && parse_proto("256").is_err() && parse_proto("0").is_err());
        assert_eq!(parse_ip_entry("tcp:443").unwrap(), (vec![IpProto::TCP], vec![PortRange { first: 443, last: 443 }]));
        assert_eq!(parse_ip_entry("*").unwrap(), (vec![], vec![PortRange::ANY]));
        assert_eq!(parse_ip_entry("icmp:*").unwrap(), (vec![IpProto::ICMP], vec![PortRange::ANY]));
        assert_eq!(parse_ip_entry("icmp").unwrap_err().to_string(), "port range \"icmp\": invalid first integer");
        assert!(matches!(parse_ip_entry("icmp:22"), Err(AliasError::ProtoWithoutPorts(_))));
    }
}
