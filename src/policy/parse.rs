//! From policy text to a validated [`ParsedPolicy`]: HuJSON, then the structure (field names
//! match case-insensitively, unknown fields are refused), then the rules of the language.
//! Every problem found is reported, each with the text Tailscale's control plane gives.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::alias::{
    check_tag, parse_alias, parse_ip_entry, parse_ports, parse_prefix, parse_proto, protos_have_ports,
    split_host_ports, Alias, AutoGroup,
};
use super::hujson::{self, HujsonError};
use super::ipset::IpRange;
use super::types::{
    AutoApprovers, CheckPeriod, Grant, IpSpec, NodeAttr, ParsedPolicy, PolicyTest, SshActionKind, SshRuleSpec, SshTest,
};
use crate::tailcfg::PortRange;

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not HuJSON.
    #[error("policy is not valid HuJSON: {0}")]
    Syntax(#[from] HujsonError),
    /// The policy breaks the language's rules; one message per problem.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Some of the policy's `tests` or `sshTests` did not hold.
    #[error("test(s) failed: {}", .0.join("; "))]
    TestsFailed(Vec<String>),
}

/// The longest `checkPeriod` Tailscale accepts.
const MAX_CHECK_PERIOD: Duration = Duration::from_secs(168 * 3600);

/// The `tailscale.com` capabilities a policy may grant; the rest of that domain is reserved.
const TAILSCALE_APP_CAPS: [&str; 7] =
    ["cap/drive", "cap/kubernetes", "cap/relay", "cap/webui", "cap/tsidp", "cap/golink", "cap/secrets"];

/// Address blocks a node address pool may not overlap.
const RESERVED_POOLS: [&str; 2] = ["100.100.100.0/24", "100.115.92.0/23"];

impl ParsedPolicy {
    /// Parses and validates a policy file.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let value = hujson::parse(text)?;
        let mut parser = Parser::default();
        let policy = parser.policy(value);
        if parser.errors.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError::Invalid(parser.errors))
        }
    }

    /// Checks every `user:*@domain` and `localpart:*@domain` against the e-mail domains this
    /// tailnet owns; Tailscale refuses the others.
    pub fn check_domains(&self, associated: &[String]) -> Result<(), PolicyError> {
        let known = |d: &str| associated.iter().any(|a| a == d);
        let not_associated = |d: &str| {
            format!("{d} is not associated with this Tailnet and cannot be used in user:*@<domain> expressions")
        };
        let mut errors = Vec::new();
        let mut check = |aliases: &[Alias], prefix: &str| {
            for a in aliases {
                if let Alias::UserDomain(d) = a {
                    if !known(d) {
                        errors.push(format!("{prefix}{}", not_associated(d)));
                    }
                }
            }
        };
        for g in &self.grants {
            check(&g.src, "");
            check(&g.dst, "");
        }
        for members in self.groups.values() {
            check(members, "");
        }
        for rule in &self.ssh {
            check(&rule.src, "[ssh] ");
            check(&rule.dst, "[ssh] ");
        }
        for rule in &self.ssh {
            for d in rule.users.iter().filter_map(|u| u.strip_prefix("localpart:*@")) {
                if !known(d) {
                    errors.push(not_associated(d));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Invalid(errors))
        }
    }
}

/// Which side of a rule an alias is on; the allowed autogroups differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

#[derive(Default)]
struct Parser {
    errors: Vec<String>,
    tags: BTreeMap<String, ()>,
    groups: BTreeMap<String, ()>,
    hosts: BTreeMap<String, ()>,
}

/// An object's fields by their canonical names.
type Fields = BTreeMap<&'static str, Value>;

impl Parser {
    fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// Splits an object into its known fields. Names match case-insensitively; `#`-prefixed
    /// keys are comments when `comments` is set.
    fn fields(&mut self, value: Value, path: &str, known: &[&'static str], comments: bool) -> Fields {
        let Value::Object(map) = value else {
            self.error(format!("{path}: expected an object"));
            return Fields::new();
        };
        let mut out = Fields::new();
        for (key, v) in map {
            match known.iter().find(|k| k.eq_ignore_ascii_case(&key)) {
                Some(k) if out.contains_key(k) => self.error(format!("{path}: duplicate field {key:?}")),
                Some(k) => {
                    out.insert(k, v);
                }
                None if comments && key.starts_with('#') => {}
                None => self.error(format!("{path}: unknown field {key:?}")),
            }
        }
        out
    }

    /// A list of strings; absent or `null` is empty.
    fn strings(&mut self, value: Option<Value>, path: &str) -> Vec<String> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s),
                        other => self.error(format!("{path}: expected a string, got {other}")),
                    }
                }
                out
            }
            Some(other) => {
                self.error(format!("{path}: expected a list of strings, got {other}"));
                Vec::new()
            }
        }
    }

    fn string(&mut self, value: Option<Value>, path: &str) -> Option<String> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.error(format!("{path}: expected a string, got {other}"));
                None
            }
        }
    }

    fn object(&mut self, value: Option<Value>, path: &str) -> Map<String, Value> {
        match value {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.error(format!("{path}: expected an object, got {other}"));
                Map::new()
            }
        }
    }

    fn list(&mut self, value: Option<Value>, path: &str) -> Vec<Value> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.error(format!("{path}: expected a list, got {other}"));
                Vec::new()
            }
        }
    }

    fn policy(&mut self, value: Value) -> ParsedPolicy {
        let mut f = self.fields(
            value,
            "policy",
            &[
                "groups",
                "hosts",
                "tagOwners",
                "acls",
                "grants",
                "nodeAttrs",
                "autoApprovers",
                "ssh",
                "tests",
                "sshTests",
                "randomizeClientPort",
            ],
            false,
        );
        let present = |f: &Fields, k: &str| f.get(k).is_some_and(|v| !v.is_null());
        let allow_all = !present(&f, "acls") && !present(&f, "grants");

        // Names first: rules refer to them.
        let tag_owner_map = self.object(f.remove("tagOwners"), "tagOwners");
        let group_map = self.object(f.remove("groups"), "groups");
        let host_map = self.object(f.remove("hosts"), "hosts");
        for tag in tag_owner_map.keys() {
            match check_tag(tag) {
                Ok(()) => {
                    self.tags.insert(tag.clone(), ());
                }
                Err(e) => self.error(format!("tagOwners[{tag:?}]: {e}")),
            }
        }
        self.groups = group_map.keys().map(|g| (g.clone(), ())).collect();
        self.hosts = host_map.keys().map(|h| (h.clone(), ())).collect();

        let mut policy = ParsedPolicy {
            groups: self.groups_section(group_map),
            hosts: self.hosts_section(host_map),
            tag_owners: self.tag_owners_section(tag_owner_map),
            ..Default::default()
        };
        let grants = self.list(f.remove("grants"), "grants");
        for (i, g) in grants.into_iter().enumerate() {
            let grant = self.grant(g, &format!("grants[{i}]"));
            policy.grants.push(grant);
        }
        let acls = self.list(f.remove("acls"), "acls");
        for (i, a) in acls.into_iter().enumerate() {
            let converted = self.acl(a, &format!("acls[{i}]"));
            policy.grants.extend(converted);
        }
        if allow_all {
            policy.grants.push(Grant {
                src: vec![Alias::Wildcard],
                dst: vec![Alias::Wildcard],
                ip: vec![IpSpec { protos: Vec::new(), ports: vec![PortRange::ANY] }],
                app: BTreeMap::new(),
                via: Vec::new(),
            });
        }
        let node_attrs = self.list(f.remove("nodeAttrs"), "nodeAttrs");
        policy.node_attrs =
            node_attrs.into_iter().enumerate().map(|(i, a)| self.node_attr(a, &format!("nodeAttrs[{i}]"))).collect();
        if let Some(v) = f.remove("autoApprovers") {
            policy.auto_approvers = self.auto_approvers(v);
        }
        let ssh = self.list(f.remove("ssh"), "ssh");
        policy.ssh = ssh.into_iter().enumerate().filter_map(|(i, r)| self.ssh_rule(r, &format!("ssh[{i}]"))).collect();
        let tests = self.list(f.remove("tests"), "tests");
        policy.tests =
            tests.into_iter().enumerate().map(|(i, t)| self.policy_test(t, &format!("tests[{i}]"))).collect();
        let ssh_tests = self.list(f.remove("sshTests"), "sshTests");
        policy.ssh_tests =
            ssh_tests.into_iter().enumerate().map(|(i, t)| self.ssh_test(t, &format!("sshTests[{i}]"))).collect();
        match f.remove("randomizeClientPort") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => policy.randomize_client_port = b,
            Some(other) => self.error(format!("randomizeClientPort: expected true or false, got {other}")),
        }
        policy
    }

    fn groups_section(&mut self, map: Map<String, Value>) -> BTreeMap<String, Vec<Alias>> {
        let mut out = BTreeMap::new();
        for (name, members) in map {
            if !name.starts_with("group:") {
                self.error(format!("groups[{name:?}]: group names must start with 'group:'"));
                continue;
            }
            let path = format!("groups[{name:?}]");
            let mut aliases = Vec::new();
            for m in self.strings(Some(members), &path) {
                match parse_alias(&m) {
                    Ok(a @ (Alias::User(_) | Alias::UserDomain(_))) => aliases.push(a),
                    Ok(Alias::Group(_)) => self.error(format!("{path}: {m:?}: group members cannot be recursive")),
                    Ok(_) => self.error(format!("{path}: {m:?}: group members must be users")),
                    Err(e) => self.error(format!("{path}: {m:?}: {e}")),
                }
            }
            out.insert(name, aliases);
        }
        out
    }

    fn hosts_section(&mut self, map: Map<String, Value>) -> BTreeMap<String, IpNet> {
        let mut out = BTreeMap::new();
        for (name, value) in map {
            let path = format!("hosts[{name:?}]");
            if name.is_empty() || name.contains([':', '@', '/', '*']) || parse_prefix(&name).is_some() {
                self.error(format!("{path}: host names must not be addresses or contain ':', '@', '/' or '*'"));
                continue;
            }
            let Some(text) = self.string(Some(value), &path) else { continue };
            match parse_prefix(&text) {
                Some(p) => {
                    out.insert(name, p);
                }
                None => self.error(format!("{path}: {text:?} is not an IP address or CIDR prefix")),
            }
        }
        out
    }

    fn tag_owners_section(&mut self, map: Map<String, Value>) -> BTreeMap<String, Vec<Alias>> {
        let mut out = BTreeMap::new();
        for (tag, owners) in map {
            let path = format!("tagOwners[{tag:?}]");
            let mut aliases = Vec::new();
            for o in self.strings(Some(owners), &path) {
                match parse_alias(&o) {
                    Ok(a @ (Alias::User(_) | Alias::UserDomain(_) | Alias::Group(_) | Alias::Tag(_))) => {
                        if let Some(e) = self.undefined(&a) {
                            self.error(format!("{path}: {e}"));
                        }
                        aliases.push(a);
                    }
                    Ok(a @ Alias::AutoGroup(AutoGroup::Member | AutoGroup::Role(_))) => aliases.push(a),
                    Ok(_) => self.error(format!("{path}: {o:?}: tag owners must be users, groups or tags")),
                    Err(e) => self.error(format!("{path}: {o:?}: {e}")),
                }
            }
            if check_tag(&tag).is_ok() {
                out.insert(tag, aliases);
            }
        }
        out
    }

    /// The "not found" text for an alias naming something the policy does not define.
    fn undefined(&self, alias: &Alias) -> Option<String> {
        match alias {
            Alias::Tag(t) if !self.tags.contains_key(t) => Some(format!("tag not found: {t:?}")),
            Alias::Group(g) if !self.groups.contains_key(g) => Some(format!("group not found: {g:?}")),
            Alias::Host(h) if !self.hosts.contains_key(h) => Some(format!("host not found: {h:?}")),
            _ => None,
        }
    }

    /// Parses a rule's source or destination alias and checks it is allowed there.
    fn rule_alias(&mut self, text: &str, side: Side) -> Option<Alias> {
        let name = side_name(side);
        let alias = match parse_alias(text) {
            Ok(a) => a,
            Err(e) => {
                self.error(format!("{name}={text:?}: {e}"));
                return None;
            }
        };
        if let Some(e) = self.undefined(&alias) {
            match side {
                Side::Src => self.error(format!("src={e}")),
                Side::Dst => self.error(format!("dst={:?}: {e}", alias.to_string())),
            }
            return None;
        }
        let problem = match (&alias, side) {
            (Alias::AutoGroup(g @ (AutoGroup::SelfDevices | AutoGroup::Internet | AutoGroup::NonRoot)), Side::Src) => {
                Some(format!("\"autogroup:{}\" not valid on the src side of a rule", g.name()))
            }
            (Alias::AutoGroup(AutoGroup::DangerAll), Side::Dst) => {
                Some("cannot use autogroup:danger-all as a dst".to_string())
            }
            (Alias::AutoGroup(AutoGroup::NonRoot), Side::Dst) => {
                Some("\"autogroup:nonroot\" not valid on the dst side of a rule".to_string())
            }
            (Alias::Prefix(p), Side::Dst) if p.prefix_len() == 0 => {
                Some(format!("dst {:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\"", p.to_string()))
            }
            _ => None,
        };
        match problem {
            Some(p) => {
                self.error(p);
                None
            }
            None => Some(alias),
        }
    }

    /// Checks that `autogroup:self` destinations come only from user-like sources.
    fn check_self_sources(&mut self, src: &[Alias], dst: &[Alias], wildcard_allowed: bool) {
        if !dst.contains(&Alias::AutoGroup(AutoGroup::SelfDevices)) {
            return;
        }
        let user_like = |a: &Alias| match a {
            Alias::User(_) | Alias::UserDomain(_) | Alias::Group(_) => true,
            Alias::AutoGroup(AutoGroup::Member | AutoGroup::Role(_)) => true,
            Alias::Wildcard => wildcard_allowed,
            _ => false,
        };
        if !src.iter().all(user_like) {
            self.error("autogroup:self can only be used with users, groups, or supported autogroups");
        }
    }

    fn aliases(&mut self, value: Option<Value>, path: &str, side: Side) -> Vec<Alias> {
        let texts = self.strings(value, path);
        texts.iter().filter_map(|t| self.rule_alias(t, side)).collect()
    }

    fn grant(&mut self, value: Value, path: &str) -> Grant {
        let mut f = self.fields(value, path, &["src", "dst", "ip", "app", "via"], false);
        let src = self.aliases(f.remove("src"), &format!("{path}.src"), Side::Src);
        let dst = self.aliases(f.remove("dst"), &format!("{path}.dst"), Side::Dst);
        let mut ip = Vec::new();
        for entry in self.strings(f.remove("ip"), &format!("{path}.ip")) {
            match parse_ip_entry(&entry) {
                Ok((protos, ports)) => ip.push(IpSpec { protos, ports }),
                Err(e) => self.error(format!("ip={entry:?}: {e}")),
            }
        }
        let app = self.cap_map(f.remove("app"), &format!("{path}.app"));
        let mut via = Vec::new();
        for v in self.strings(f.remove("via"), &format!("{path}.via")) {
            match parse_alias(&v) {
                Ok(Alias::Tag(t)) if self.tags.contains_key(&t) => via.push(t),
                Ok(Alias::Tag(t)) => self.error(format!("tag {t:?} not found")),
                _ => self.error("via can only be a tag"),
            }
        }
        if ip.is_empty() && app.is_empty() {
            self.error("ip and app can not both be empty");
        }
        if !app.is_empty() && dst.contains(&Alias::AutoGroup(AutoGroup::Internet)) {
            self.error("cannot use app grants with autogroup:internet");
        }
        self.check_self_sources(&src, &dst, false);
        Grant { src, dst, ip, app, via }
    }

    /// A capability map (`app`), checking each capability name.
    fn cap_map(&mut self, value: Option<Value>, path: &str) -> BTreeMap<String, Vec<Value>> {
        let mut out = BTreeMap::new();
        for (name, values) in self.object(value, path) {
            if let Err(e) = check_cap_name(&name) {
                self.error(e);
                continue;
            }
            let values = match values {
                Value::Null => Vec::new(),
                Value::Array(v) => v,
                other => {
                    self.error(format!("{path}[{name:?}]: expected a list, got {other}"));
                    continue;
                }
            };
            out.insert(name, values);
        }
        out
    }

    /// One ACL, as one grant per destination. When the ACL names anything but autogroups,
    /// its `autogroup:self` destinations come last, which is the order Tailscale emits.
    fn acl(&mut self, value: Value, path: &str) -> Vec<Grant> {
        let mut f = self.fields(value, path, &["action", "src", "dst", "proto"], true);
        let action = self.string(f.remove("action"), &format!("{path}.action")).unwrap_or_default();
        if action != "accept" {
            self.error(format!("action={action:?} is not supported"));
        }
        let src = self.aliases(f.remove("src"), &format!("{path}.src"), Side::Src);
        let protos = match self.string(f.remove("proto"), &format!("{path}.proto")) {
            None => Vec::new(),
            Some(p) => parse_proto(&p).unwrap_or_else(|e| {
                self.error(format!("proto={p:?}: {e}"));
                Vec::new()
            }),
        };
        let mut dsts = Vec::new();
        for text in self.strings(f.remove("dst"), &format!("{path}.dst")) {
            let (host, ports) = match split_host_ports(&text) {
                Ok(split) => split,
                Err(e) => {
                    self.error(format!("dst={text:?}: {e}"));
                    continue;
                }
            };
            let ports = match parse_ports(ports) {
                Ok(p) => p,
                Err(e) => {
                    self.error(format!("dst={text:?}: {e}"));
                    continue;
                }
            };
            if ports != [PortRange::ANY] && !protos_have_ports(&protos) {
                self.error(format!("dst={text:?}: the rule's protocol does not support specific ports; use '*'"));
                continue;
            }
            if let Some(alias) = self.rule_alias(host, Side::Dst) {
                dsts.push((alias, ports));
            }
        }
        let aliases: Vec<Alias> = dsts.iter().map(|(a, _)| a.clone()).collect();
        self.check_self_sources(&src, &aliases, true);
        let is_self = |a: &Alias| *a == Alias::AutoGroup(AutoGroup::SelfDevices);
        if aliases.iter().any(|a| !matches!(a, Alias::AutoGroup(_))) {
            dsts.sort_by_key(|(a, _)| is_self(a));
        }
        dsts.into_iter()
            .map(|(alias, ports)| Grant {
                src: src.clone(),
                dst: vec![alias],
                ip: vec![IpSpec { protos: protos.clone(), ports }],
                app: BTreeMap::new(),
                via: Vec::new(),
            })
            .collect()
    }

    fn node_attr(&mut self, value: Value, path: &str) -> NodeAttr {
        let mut f = self.fields(value, path, &["target", "attr", "app", "ipPool"], false);
        let mut target = Vec::new();
        for t in self.strings(f.remove("target"), &format!("{path}.target")) {
            match parse_alias(&t) {
                Ok(Alias::AutoGroup(g @ (AutoGroup::SelfDevices | AutoGroup::NonRoot | AutoGroup::Internet))) => {
                    self.error(format!("{path}: \"autogroup:{}\" is not valid as a nodeAttrs target", g.name()));
                }
                Ok(a) => match self.undefined(&a) {
                    Some(e) => self.error(e),
                    None => target.push(a),
                },
                Err(e) => self.error(format!("{path}.target {t:?}: {e}")),
            }
        }
        let attr = self.strings(f.remove("attr"), &format!("{path}.attr"));
        let app = self.cap_map(f.remove("app"), &format!("{path}.app"));
        let mut ip_pool = Vec::new();
        for p in self.strings(f.remove("ipPool"), &format!("{path}.ipPool")) {
            match p.parse::<IpNet>() {
                Ok(net) => match check_pool(net) {
                    Ok(()) => ip_pool.push(net),
                    Err(e) => self.error(e),
                },
                Err(_) => self.error(format!("{path}.ipPool: {p:?} is not a CIDR prefix")),
            }
        }
        NodeAttr { target, attr, app, ip_pool }
    }

    fn auto_approvers(&mut self, value: Value) -> AutoApprovers {
        let mut f = self.fields(value, "autoApprovers", &["routes", "exitNode"], false);
        let mut out = AutoApprovers::default();
        for (prefix, approvers) in self.object(f.remove("routes"), "autoApprovers.routes") {
            let path = format!("autoApprovers.routes[{prefix:?}]");
            let Ok(net) = prefix.parse::<IpNet>() else {
                self.error(format!("{path}: {prefix:?} is not a CIDR prefix"));
                continue;
            };
            let approvers = self.approvers(Some(approvers), &path);
            out.routes.push((net.trunc(), approvers));
        }
        out.exit_node = self.approvers(f.remove("exitNode"), "autoApprovers.exitNode");
        out
    }

    fn approvers(&mut self, value: Option<Value>, path: &str) -> Vec<Alias> {
        let mut out = Vec::new();
        for a in self.strings(value, path) {
            match parse_alias(&a) {
                Ok(alias @ (Alias::User(_) | Alias::UserDomain(_) | Alias::Group(_) | Alias::Tag(_))) => {
                    match self.undefined(&alias) {
                        Some(e) => self.error(format!("{path}: {e}")),
                        None => out.push(alias),
                    }
                }
                Ok(alias @ Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged | AutoGroup::Role(_))) => {
                    out.push(alias)
                }
                Ok(_) => self.error(format!("{path}: {a:?}: approvers must be users, groups, tags or autogroups")),
                Err(e) => self.error(format!("{path}: {a:?}: {e}")),
            }
        }
        out
    }

    fn ssh_rule(&mut self, value: Value, path: &str) -> Option<SshRuleSpec> {
        let mut f = self.fields(value, path, &["action", "src", "dst", "users", "checkPeriod", "acceptEnv"], false);
        let action = match self.string(f.remove("action"), &format!("{path}.action")).as_deref() {
            None | Some("") => {
                self.error("action must be specified");
                None
            }
            Some("accept") => Some(SshActionKind::Accept),
            Some("check") => Some(SshActionKind::Check),
            Some(other) => {
                self.error(format!("{other:?} is not a valid action"));
                None
            }
        };
        let users = self.strings(f.remove("users"), &format!("{path}.users"));
        if users.is_empty() {
            self.error("users must be specified");
        }
        for u in users.iter().filter(|u| u.is_empty() || *u == "*") {
            self.error(format!("user {u:?} is not valid"));
        }
        let accept_env = self.strings(f.remove("acceptEnv"), &format!("{path}.acceptEnv"));
        if accept_env.iter().any(String::is_empty) {
            self.error("acceptEnv values cannot be empty");
        }
        let check_period = match self.string(f.remove("checkPeriod"), &format!("{path}.checkPeriod")) {
            None => None,
            Some(p) if p == "always" => Some(CheckPeriod::Always),
            Some(p) => match crate::duration::parse_go(&p) {
                Err(e) => {
                    self.error(e);
                    None
                }
                Ok(n) if n <= 0 => {
                    self.error(format!("checkPeriod {} must be a positive duration", crate::duration::format_go(n)));
                    None
                }
                Ok(n) if n > MAX_CHECK_PERIOD.as_nanos() as i128 => {
                    self.error(format!("checkPeriod {} is above the max (168h)", crate::duration::format_go(n)));
                    None
                }
                Ok(n) => Some(CheckPeriod::Every(Duration::from_nanos(n as u64))),
            },
        };
        let src = self.ssh_aliases(f.remove("src"), &format!("{path}.src"), Side::Src);
        let dst = self.ssh_aliases(f.remove("dst"), &format!("{path}.dst"), Side::Dst);
        Some(SshRuleSpec { action: action?, src, dst, users, check_period, accept_env })
    }

    fn ssh_aliases(&mut self, value: Option<Value>, path: &str, side: Side) -> Vec<Alias> {
        let mut out = Vec::new();
        for text in self.strings(value, path) {
            let alias = match parse_alias(&text) {
                Ok(a) => a,
                Err(e) => {
                    self.error(format!("{path}: {text:?}: {e}"));
                    continue;
                }
            };
            if let Some(e) = self.undefined(&alias) {
                self.error(format!("{path}: {e}"));
                continue;
            }
            let refused = matches!(
                (&alias, side),
                (Alias::AutoGroup(AutoGroup::Internet | AutoGroup::DangerAll | AutoGroup::NonRoot), _)
                    | (Alias::AutoGroup(AutoGroup::SelfDevices), Side::Src)
                    | (Alias::Wildcard | Alias::Host(_) | Alias::Prefix(_) | Alias::Range(_), Side::Dst)
            );
            if refused {
                self.error(format!(
                    "{path}: {:?} is not valid in an ssh rule's {}",
                    alias.to_string(),
                    side_name(side)
                ));
            } else {
                out.push(alias);
            }
        }
        out
    }

    fn policy_test(&mut self, value: Value, path: &str) -> PolicyTest {
        let mut f = self.fields(value, path, &["src", "proto", "accept", "deny"], false);
        PolicyTest {
            src: self.string(f.remove("src"), &format!("{path}.src")),
            proto: self.string(f.remove("proto"), &format!("{path}.proto")),
            accept: self.strings(f.remove("accept"), &format!("{path}.accept")),
            deny: self.strings(f.remove("deny"), &format!("{path}.deny")),
        }
    }

    fn ssh_test(&mut self, value: Value, path: &str) -> SshTest {
        let mut f = self.fields(value, path, &["src", "dst", "accept", "deny", "check"], false);
        SshTest {
            src: self.string(f.remove("src"), &format!("{path}.src")),
            dst: self.strings(f.remove("dst"), &format!("{path}.dst")),
            accept: self.strings(f.remove("accept"), &format!("{path}.accept")),
            deny: self.strings(f.remove("deny"), &format!("{path}.deny")),
            check: self.strings(f.remove("check"), &format!("{path}.check")),
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Src => "src",
        Side::Dst => "dst",
    }
}

/// Checks an `app` capability name: `{domain}/{path}`, outside the reserved part of
/// `tailscale.com`.
fn check_cap_name(name: &str) -> Result<(), &'static str> {
    const FORM: &str = "capability name must have the form {domain}/{path}";
    let (domain, path) = name.split_once('/').ok_or(FORM)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !domain_ok || path.is_empty() {
        return Err(FORM);
    }
    if domain.eq_ignore_ascii_case("tailscale.com") && !TAILSCALE_APP_CAPS.contains(&path) {
        return Err("capability name must not be in the tailscale.com domain");
    }
    Ok(())
}

/// Checks a node address pool: inside the CGNAT range, clear of reserved blocks.
fn check_pool(net: IpNet) -> Result<(), String> {
    let cgnat: IpNet = "100.64.0.0/10".parse().expect("valid");
    if !cgnat.contains(&net) {
        return Err(format!("IPPool({net}): network not within {cgnat}"));
    }
    let range = IpRange::net(net);
    if RESERVED_POOLS.iter().any(|r| IpRange::net(r.parse().expect("valid")).overlaps(&range)) {
        return Err(format!("IPPool({net}): network within reserved range"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""tagOwners": {"tag:server": ["odin@example.com"], "tag:client": ["odin@example.com"]},
        "groups": {"group:admins": ["odin@example.com"]},
        "hosts": {"webserver": "100.108.74.26", "internal": "10.0.0.0/8"}"#;

    fn parse(body: &str) -> Result<ParsedPolicy, PolicyError> {
        ParsedPolicy::parse(&format!("{{{BASE}, {body}}}"))
    }

    fn error_of(body: &str) -> String {
        parse(body).expect_err("should be refused").to_string()
    }

    #[test]
    fn acls_become_grants_with_self_last() {
        let p = parse(
            r#"// comment
            "acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self:*", "tag:server:22,80", "webserver:443",],},]"#,
        )
        .unwrap();
        let dsts: Vec<String> = p.grants.iter().map(|g| g.dst[0].to_string()).collect();
        assert_eq!(dsts, ["tag:server", "webserver", "autogroup:self"]);
        assert_eq!(p.grants[0].ip[0].ports.len(), 2);
        let all_auto = parse(
            r#""acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self:*", "autogroup:member:22"]}]"#,
        )
        .unwrap();
        assert_eq!(all_auto.grants[0].dst[0].to_string(), "autogroup:self");
    }

    #[test]
    fn grants_come_before_acls_and_no_rules_means_allow_all() {
        let p = parse(
            r#""acls": [{"action": "accept", "src": ["tag:client"], "dst": ["tag:server:22"]}],
               "grants": [{"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:80"]}]"#,
        )
        .unwrap();
        assert_eq!(p.grants[0].ip[0].protos, [crate::tailcfg::IpProto::TCP]);
        assert_eq!(p.grants[1].src, [Alias::Tag("tag:client".into())]);
        let open = parse(r#""ssh": []"#).unwrap();
        assert_eq!(open.grants.len(), 1);
        assert_eq!(open.grants[0].src, [Alias::Wildcard]);
        assert!(parse(r#""grants": []"#).unwrap().grants.is_empty());
    }

    #[test]
    fn field_names_are_case_insensitive_and_unknown_fields_refused() {
        let p = parse(r#""ACLs": [{"Action": "accept", "SRC": ["*"], "dst": ["*:*"]}]"#).unwrap();
        assert_eq!(p.grants.len(), 1);
        assert!(error_of(r#""acls": [], "postures": {}"#).contains("unknown field \"postures\""));
        assert!(error_of(r#""acls": [], "Acls": []"#).contains("duplicate field"));
        assert!(parse(r##""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "#note": "x"}]"##).is_ok());
    }

    #[test]
    fn reports_tailscale_error_texts() {
        let acl = |src: &str, dst: &str| {
            error_of(&format!(r#""acls": [{{"action": "accept", "src": [{src}], "dst": [{dst}]}}]"#))
        };
        assert!(acl(r#""tag:nonexistent""#, r#""*:*""#).contains(r#"src=tag not found: "tag:nonexistent""#));
        assert!(acl(r#""*""#, r#""tag:nonexistent:22""#)
            .contains(r#"dst="tag:nonexistent": tag not found: "tag:nonexistent""#));
        assert!(
            acl(r#""autogroup:self""#, r#""*:*""#).contains(r#""autogroup:self" not valid on the src side of a rule"#)
        );
        assert!(acl(r#""*""#, r#""tag:server:ssh""#)
            .contains(r#"dst="tag:server:ssh": port range "ssh": invalid first integer"#));
        assert!(acl(r#""tag:client""#, r#""autogroup:self:*""#)
            .contains("autogroup:self can only be used with users, groups, or supported autogroups"));
        assert!(error_of(r#""acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]"#)
            .contains(r#"action="deny" is not supported"#));
        let grant = |g: &str| error_of(&format!(r#""grants": [{g}]"#));
        assert!(grant(r#"{"src": ["*"], "dst": ["*"]}"#).contains("ip and app can not both be empty"));
        assert!(grant(r#"{"src": ["*"], "dst": ["*"], "app": {"https://tailscale.com/cap/x": [{}]}}"#)
            .contains("capability name must have the form {domain}/{path}"));
        assert!(grant(r#"{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/relay-target": [{}]}}"#)
            .contains("capability name must not be in the tailscale.com domain"));
        assert!(grant(r#"{"src": ["*"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": ["autogroup:tagged"]}"#)
            .contains("via can only be a tag"));
        assert!(grant(r#"{"src": ["*"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": ["tag:nope"]}"#)
            .contains(r#"tag "tag:nope" not found"#));
        assert!(grant(r#"{"src": ["*"], "dst": ["tag:server"], "ip": ["tcp:0"]}"#)
            .contains(r#"port range "0": first port must be >0, or use '*' for wildcard"#));
        assert!(grant(r#"{"src": ["*"], "dst": ["autogroup:danger-all"], "ip": ["*"]}"#)
            .contains("cannot use autogroup:danger-all as a dst"));
        assert!(grant(r#"{"src": ["*"], "dst": ["autogroup:internet"], "app": {"example.com/cap/x": []}}"#)
            .contains("cannot use app grants with autogroup:internet"));
        assert!(grant(r#"{"src": ["*"], "dst": ["::/0"], "ip": ["*"]}"#)
            .contains(r#"dst "::/0": to allow all IP addresses, use "*" or "autogroup:internet""#));
        assert!(grant(r#"{"src": ["*"], "dst": ["autogroup:self"], "ip": ["*"]}"#).contains("autogroup:self can only"));
    }

    #[test]
    fn reports_ssh_and_name_errors() {
        let ssh = |r: &str| error_of(&format!(r#""ssh": [{r}]"#));
        assert!(ssh(r#"{"src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}"#)
            .contains("action must be specified"));
        assert!(ssh(r#"{"action": "Accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}"#)
            .contains(r#""Accept" is not a valid action"#));
        assert!(ssh(r#"{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": null}"#)
            .contains("users must be specified"));
        assert!(ssh(
            r#"{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root", "*"]}"#
        )
        .contains(r#"user "*" is not valid"#));
        assert!(ssh(r#"{"action": "check", "checkPeriod": "-1m", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}"#)
            .contains("checkPeriod -1m0s must be a positive duration"));
        assert!(ssh(r#"{"action": "check", "checkPeriod": "168h0m1s", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}"#)
            .contains("checkPeriod 168h0m1s is above the max (168h)"));
        assert!(ssh(r#"{"action": "check", "checkPeriod": "abc", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}"#)
            .contains(r#"time: invalid duration "abc""#));
        assert!(ssh(r#"{"action": "accept", "acceptEnv": [""], "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}"#)
            .contains("acceptEnv values cannot be empty"));
        let e = ParsedPolicy::parse(r#"{"groups": {"group:a": ["group:b"], "group:b": ["group:a"]}}"#).unwrap_err();
        assert!(e.to_string().contains(r#"groups["group:b"]: "group:a": group members cannot be recursive"#), "{e}");
        let e = ParsedPolicy::parse(r#"{"tagOwners": {"tag:сервер": []}}"#).unwrap_err();
        assert!(e.to_string().contains(r#"tagOwners["tag:сервер"]: tag names must start with a letter, after 'tag:'"#));
        assert!(ParsedPolicy::parse("{").is_err());
    }

    #[test]
    fn checks_domains_and_pools() {
        let p = parse(
            r#""ssh": [{"action": "accept", "src": ["user:*@example.org"], "dst": ["tag:server"], "users": ["localpart:*@example.net"]}]"#,
        )
        .unwrap();
        let e = p.check_domains(&["example.com".into()]).unwrap_err().to_string();
        assert!(e.contains("[ssh] example.org is not associated with this Tailnet"), "{e}");
        assert!(e.contains("example.net is not associated"), "{e}");
        assert!(p.check_domains(&["example.org".into(), "example.net".into()]).is_ok());
        assert!(error_of(r#""nodeAttrs": [{"target": ["*"], "ipPool": ["100.100.100.0/24"]}]"#)
            .contains("IPPool(100.100.100.0/24): network within reserved range"));
        assert!(parse(r#""nodeAttrs": [{"target": ["group:admins"], "ipPool": ["100.85.0.0/16"]}]"#).is_ok());
        assert!(error_of(r#""nodeAttrs": [{"target": ["tag:undefined"], "attr": ["x"]}]"#)
            .contains(r#"tag not found: "tag:undefined""#));
    }
}
