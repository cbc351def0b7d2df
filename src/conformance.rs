//! The conformance runner: replays policy scenarios captured from Tailscale's own control
//! plane (a directory laid out like `testdata/compat/tailscale-saas/`, one sub-directory per
//! category) and compares this engine's answers with the captured ones, following the
//! comparison rules of `testdata/compat/README.md`.
//!
//! The harness sets the tailnet up from each scenario's topology: node ids follow the node
//! names' order, the owner's e-mail domain is the only domain associated with the tailnet,
//! and `check` rules delegate to `https://unused`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::Value;

use crate::policy::{load_policy, CapMap, CompiledPolicy, IpRange, ParsedPolicy, PolicyError, PolicyNode, PolicyUser};
use crate::tailcfg::caps;

/// Where `check` rules delegate in the captures.
const CHECK_SERVER: &str = "https://unused";

/// Capabilities that follow a tailnet setting (automatic client updates: Headscale's
/// `auto_update.enabled`) whose value in the captured tailnet is not known: not compared, on
/// either side.
const SETTING_CAPS: [&str; 1] = [caps::DEFAULT_AUTO_UPDATE];

/// Capabilities Tailscale's control plane adds on its own; not compared.
const UNCOMPARED_CAPS: [&str; 12] = [
    "https://tailscale.com/cap/is-admin",
    "https://tailscale.com/cap/is-owner",
    "https://tailscale.com/cap/tailnet-lock",
    "https://tailscale.com/cap/warn-funnel-no-https",
    "service-host",
    "store-appc-routes",
    "tailnet-display-name",
    "tailnet.maxKeyDuration",
    "native-ipv4",
    "probe-udp-lifetime",
    "ssh-behavior-v1",
    "ssh-env-vars",
];

/// Why the runner could not run at all (a failing case is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} has no category directories", .0.display())]
    Empty(PathBuf),
}

/// A case that did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: String,
    /// The first difference found.
    pub difference: String,
}

/// The results of one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryReport {
    pub name: String,
    pub passed: usize,
    pub failures: Vec<Failure>,
}

/// The results of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub categories: Vec<CategoryReport>,
}

impl Report {
    /// The number of failed cases.
    pub fn failed(&self) -> usize {
        self.categories.iter().map(|c| c.failures.len()).sum()
    }

    /// The ids of the failed cases.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.categories.iter().flat_map(|c| c.failures.iter().map(|f| f.id.as_str())).collect()
    }
}

impl fmt::Display for Report {
    /// One `CATEGORY: N passed, M failed` line per category, each failure under it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.categories {
            writeln!(f, "{}: {} passed, {} failed", c.name, c.passed, c.failures.len())?;
            for failure in &c.failures {
                writeln!(f, "  {}: {}", failure.id, failure.difference)?;
            }
        }
        Ok(())
    }
}

/// The kinds of scenario, by directory name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Acl,
    Grant,
    Routes,
    Ssh,
    NodeAttrs,
    PolicyTest,
    SshTest,
    ExitVisibility,
}

impl Category {
    fn from_dir(name: &str) -> Option<Self> {
        Some(match name {
            "acl_results" => Category::Acl,
            "grant_results" => Category::Grant,
            "routes_results" => Category::Routes,
            "ssh_results" => Category::Ssh,
            "nodeattrs_results" => Category::NodeAttrs,
            "policytest_results" => Category::PolicyTest,
            "sshtest_results" => Category::SshTest,
            "issue_3212" => Category::ExitVisibility,
            _ => return None,
        })
    }
}

/// Runs every case under `dir`.
pub fn run(dir: &Path) -> Result<Report, ConformanceError> {
    let read =
        |path: &Path| std::fs::read_dir(path).map_err(|source| ConformanceError::Read { path: path.into(), source });
    let mut dirs: Vec<(String, PathBuf)> = read(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(ConformanceError::Empty(dir.into()));
    }
    let mut categories = Vec::new();
    for (name, path) in dirs {
        let mut files: Vec<PathBuf> = read(&path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut report = CategoryReport { name: name.clone(), passed: 0, failures: Vec::new() };
        for file in files {
            let id = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let outcome = match Category::from_dir(&name) {
                None => Err(format!("unknown category {name:?}")),
                Some(category) => std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read the case: {e}"))
                    .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| format!("not JSON: {e}")))
                    .and_then(|v| Case::new(&v).and_then(|case| case.check(category))),
            };
            match outcome {
                Ok(()) => report.passed += 1,
                Err(difference) => report.failures.push(Failure { id, difference }),
            }
        }
        categories.push(report);
    }
    Ok(Report { categories })
}

/// One scenario, read.
struct Case<'a> {
    v: &'a Value,
    policy_text: String,
    code: i64,
    error: bool,
    message: String,
    users: Vec<PolicyUser>,
    nodes: Vec<PolicyNode>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn prefixes(v: &Value) -> Result<Vec<IpNet>, String> {
    strings(v).iter().map(|s| s.parse().map_err(|_| format!("bad prefix {s:?} in the topology"))).collect()
}

impl<'a> Case<'a> {
    fn new(v: &'a Value) -> Result<Self, String> {
        let input = &v["input"];
        let policy_text = match &input["full_policy"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let users: Vec<PolicyUser> = v["topology"]["users"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| PolicyUser {
                id: u["id"].as_u64().unwrap_or_default(),
                name: u["name"].as_str().unwrap_or_default().to_string(),
                email: u["email"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        let topo = v["topology"]["nodes"].as_object().ok_or("the case has no topology nodes")?;
        let created = |name: &str| v["captures"][name]["netmap"]["SelfNode"]["Created"].as_str().map(String::from);
        let mut order: Vec<(&String, &Value)> = topo.iter().collect();
        order.sort_by_key(|(name, _)| (created(name).is_none(), created(name), name.to_string()));
        let mut nodes = Vec::with_capacity(topo.len());
        for (k, (name, n)) in order.into_iter().enumerate() {
            let tags = strings(&n["tags"]);
            let user = match n["user"].as_str() {
                Some(u) if tags.is_empty() && !u.is_empty() => Some(
                    users.iter().find(|x| x.name == u).cloned().ok_or(format!("node {name}: unknown user {u:?}"))?,
                ),
                _ => None,
            };
            nodes.push(PolicyNode {
                id: k as u64 + 1,
                name: name.clone(),
                ipv4: n["ipv4"].as_str().and_then(|s| s.parse().ok()),
                ipv6: n["ipv6"].as_str().and_then(|s| s.parse().ok()),
                user,
                tags,
                routable_ips: prefixes(&n["routable_ips"])?,
                approved_routes: prefixes(&n["approved_routes"])?,
            });
        }
        Ok(Case {
            v,
            policy_text,
            code: input["api_response_code"].as_i64().unwrap_or(200),
            error: v["error"].as_bool().unwrap_or(false),
            message: input["api_response_body"]["message"].as_str().unwrap_or_default().to_string(),
            users,
            nodes,
        })
    }

    /// The e-mail domains of the tailnet: its owner's.
    fn domains(&self) -> Vec<String> {
        let owner = self.users.iter().min_by_key(|u| u.id);
        owner.and_then(|u| u.email.rsplit_once('@')).map(|(_, d)| vec![d.to_string()]).unwrap_or_default()
    }

    /// Parses and validates the policy, as an API write would.
    fn load(&self) -> Result<ParsedPolicy, PolicyError> {
        let policy = ParsedPolicy::parse(&self.policy_text)?;
        policy.check_domains(&self.domains())?;
        Ok(policy)
    }

    fn compile(&self, policy: &ParsedPolicy) -> CompiledPolicy {
        CompiledPolicy::compile(policy, self.nodes.clone())
    }

    /// Loads the policy and runs its tests, as `headscale policy set` does.
    fn set(&self) -> Result<(), PolicyError> {
        load_policy(&self.policy_text, self.nodes.clone(), &self.domains()).map(drop)
    }

    fn node_id(&self, name: &str) -> Option<u64> {
        self.nodes.iter().find(|n| n.name == name).map(|n| n.id)
    }

    fn captures(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.v["captures"].as_object().into_iter().flatten()
    }

    fn check(&self, category: Category) -> Result<(), String> {
        let rejected = match category {
            Category::Acl => self.error,
            Category::Grant | Category::NodeAttrs => self.code == 400 || self.error,
            Category::Ssh | Category::PolicyTest | Category::SshTest => self.code != 200,
            Category::Routes | Category::ExitVisibility => false,
        };
        if rejected {
            let outcome = match category {
                Category::Ssh | Category::PolicyTest | Category::SshTest => self.set(),
                _ => self.load().map(drop),
            };
            let wanted = if category == Category::NodeAttrs { "" } else { &self.message };
            return expect_rejection(outcome, wanted);
        }
        match category {
            Category::PolicyTest | Category::SshTest => self.set().map_err(|e| format!("refused: {e}")),
            _ => {
                let policy = self.load().map_err(|e| format!("refused: {e}"))?;
                let compiled = self.compile(&policy);
                match category {
                    Category::Acl => self.check_filters(&compiled),
                    Category::Grant => {
                        self.check_filters(&compiled)?;
                        self.check_peer_routes(&compiled)
                    }
                    Category::Routes => {
                        self.check_filters(&compiled)?;
                        self.check_auto_approval(&compiled)?;
                        self.check_peer_allowed_ips(&compiled)?;
                        self.check_reduce_routes(&compiled)?;
                        self.check_no_extra_peers(&compiled)
                    }
                    Category::Ssh => self.check_ssh(&compiled),
                    Category::NodeAttrs => self.check_node_attrs(&compiled),
                    _ => self.check_exit_visibility(&compiled),
                }
            }
        }
    }

    fn check_filters(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        for (name, capture) in self.captures() {
            let Some(id) = self.node_id(name) else { continue };
            let expected: Vec<Value> = capture["packet_filter_rules"].as_array().cloned().unwrap_or_default();
            let actual: Vec<Value> =
                compiled.filter(id).iter().map(|r| serde_json::to_value(r).expect("serializes")).collect();
            let canon = |rules: &[Value]| rules.iter().map(CanonRule::from).collect::<Vec<_>>();
            let (want, got) = (canon(&expected), canon(&actual));
            if want.len() != got.len() {
                return Err(format!(
                    "{name}: expected {} rules, got {}: expected {}, got {}",
                    want.len(),
                    got.len(),
                    Value::Array(expected),
                    Value::Array(actual)
                ));
            }
            if let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) {
                return Err(format!("{name}: rule {i}: expected {}, got {}", expected[i], actual[i]));
            }
        }
        Ok(())
    }

    /// Each viewer's peers and the routes it reaches through them, the first-registered
    /// router being primary.
    fn check_peer_routes(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        let tailscale_ip = |r: &str| {
            let Ok(net) = r.parse::<IpNet>() else { return false };
            let ts: [IpNet; 2] =
                ["100.64.0.0/10".parse().expect("valid"), "fd7a:115c:a1e0::/48".parse().expect("valid")];
            net.prefix_len() == net.max_prefix_len() && ts.iter().any(|t| t.contains(&net))
        };
        let first_registered = |_: &IpNet, candidates: &[u64]| candidates.iter().copied().min();
        for (viewer, capture) in self.captures() {
            let (Some(v), Some(peers)) = (self.node_id(viewer), capture["netmap"]["Peers"].as_array()) else {
                continue;
            };
            let want: BTreeSet<String> = peers.iter().map(peer_name).collect();
            let got: BTreeSet<String> =
                compiled.peers(v).iter().filter_map(|id| compiled.node(*id)).map(|n| n.name.clone()).collect();
            if want != got {
                return Err(format!("{viewer}: peers {got:?}, expected {want:?}"));
            }
            for peer in peers {
                let name = peer_name(peer);
                let p = self.node_id(&name).ok_or(format!("{viewer}: captured peer {name} is not in the topology"))?;
                let mut want: Vec<String> =
                    strings(&peer["AllowedIPs"]).into_iter().filter(|r| !tailscale_ip(r)).collect();
                want.sort();
                let allowed = compiled.allowed_ips(v, p, first_registered);
                let mut got: Vec<String> =
                    allowed.iter().map(ToString::to_string).filter(|r| !tailscale_ip(r)).collect();
                got.sort();
                if want != got {
                    return Err(format!("{viewer} reaches {got:?} through {name}, expected {want:?}"));
                }
                let mut want_primary = strings(&peer["PrimaryRoutes"]);
                want_primary.sort();
                let mut got_primary: Vec<String> = allowed
                    .iter()
                    .filter(|r| r.prefix_len() > 0)
                    .map(ToString::to_string)
                    .filter(|r| !tailscale_ip(r))
                    .collect();
                got_primary.sort();
                if want_primary != got_primary {
                    return Err(format!("{viewer} sees {name} primary for {got_primary:?}, expected {want_primary:?}"));
                }
            }
        }
        Ok(())
    }

    fn check_auto_approval(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        for node in &self.nodes {
            for route in &node.routable_ips {
                let want = node.approved_routes.contains(route);
                if compiled.auto_approves(node.id, route) != want {
                    return Err(format!("{}: auto-approval of {route}: expected {want}, got {}", node.name, !want));
                }
            }
        }
        Ok(())
    }

    fn check_peer_allowed_ips(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        for (viewer, capture) in self.captures() {
            let Some(v) = self.node_id(viewer) else { continue };
            for peer in capture["netmap"]["Peers"].as_array().into_iter().flatten() {
                let name = peer_name(peer);
                let p = self.node_id(&name).ok_or(format!("{viewer}: captured peer {name} is not in the topology"))?;
                let mut want = strings(&peer["AllowedIPs"]);
                want.sort();
                let primaries = self.captured_primaries(capture)?;
                let elect = |route: &IpNet, candidates: &[u64]| {
                    candidates.iter().copied().find(|c| primaries.get(c).is_some_and(|r| r.contains(route)))
                };
                let mut got: Vec<String> = compiled.allowed_ips(v, p, elect).iter().map(ToString::to_string).collect();
                got.sort();
                if want != got {
                    return Err(format!("{viewer} sees {name} with AllowedIPs {got:?}, expected {want:?}"));
                }
            }
        }
        Ok(())
    }

    /// The primary routes each peer of a captured netmap holds, by node id.
    fn captured_primaries(&self, capture: &Value) -> Result<BTreeMap<u64, Vec<IpNet>>, String> {
        let mut out = BTreeMap::new();
        for peer in capture["netmap"]["Peers"].as_array().into_iter().flatten() {
            if let Some(id) = self.node_id(&peer_name(peer)) {
                out.insert(id, prefixes(&peer["PrimaryRoutes"])?);
            }
        }
        Ok(out)
    }

    /// Every viewer a captured rule admits must be allowed the rule's destinations.
    fn check_reduce_routes(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        for (dst_name, capture) in self.captures() {
            for rule in capture["packet_filter_rules"].as_array().into_iter().flatten() {
                let srcs = parse_ranges(&strings(&rule["SrcIPs"]))?;
                let dsts: Vec<String> = rule["DstPorts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d["IP"].as_str().map(String::from))
                    .collect();
                let dsts: Vec<IpNet> = parse_ranges(&dsts.into_iter().filter(|d| d != "*").collect::<Vec<_>>())?
                    .iter()
                    .flat_map(IpRange::prefixes)
                    .collect();
                for viewer in self.nodes.iter().filter(|n| &n.name != dst_name) {
                    let admitted = viewer.addrs().any(|a| srcs.iter().any(|s| s.contains_addr(a)))
                        || viewer.subnet_routes().iter().any(|r| srcs.iter().any(|s| s.overlaps(&IpRange::net(*r))));
                    if let Some(d) = dsts.iter().find(|d| admitted && !compiled.can_access_route(viewer.id, d)) {
                        return Err(format!("{} is admitted by a rule on {dst_name} but cannot use {d}", viewer.name));
                    }
                }
            }
        }
        Ok(())
    }

    /// Nodes no captured rule relates must not reach each other.
    fn check_no_extra_peers(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        let mut expected: BTreeSet<(u64, u64)> = BTreeSet::new();
        for (name, capture) in self.captures() {
            let Some(d) = self.node_id(name) else { continue };
            let rules: Vec<&Value> = capture["packet_filter_rules"].as_array().into_iter().flatten().collect();
            if rules.is_empty() {
                continue;
            }
            let srcs = parse_ranges(&rules.iter().flat_map(|r| strings(&r["SrcIPs"])).collect::<Vec<_>>())?;
            let dst_texts: Vec<String> = rules
                .iter()
                .flat_map(|r| r["DstPorts"].as_array().into_iter().flatten())
                .filter_map(|d| d["IP"].as_str().map(String::from))
                .collect();
            let dsts = parse_ranges(&dst_texts)?;
            let touches = |n: &PolicyNode, set: &[IpRange]| {
                n.addrs().any(|a| set.iter().any(|s| s.contains_addr(a)))
                    || n.subnet_routes().iter().any(|r| set.iter().any(|s| s.overlaps(&IpRange::net(*r))))
            };
            for x in &self.nodes {
                if touches(x, &srcs) || touches(x, &dsts) {
                    expected.insert((d.min(x.id), d.max(x.id)));
                }
            }
        }
        for a in &self.nodes {
            for b in self.nodes.iter().filter(|b| b.id > a.id) {
                let linked = compiled.can_access(a.id, b.id) || compiled.can_access(b.id, a.id);
                if linked && !expected.contains(&(a.id, b.id)) {
                    return Err(format!(
                        "{} and {} can reach each other, but no captured rule relates them",
                        a.name, b.name
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_ssh(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        for (name, capture) in self.captures() {
            let Some(id) = self.node_id(name) else { continue };
            let expected: Vec<Value> = capture["ssh_rules"].as_array().cloned().unwrap_or_default();
            let actual: Vec<Value> = compiled
                .ssh_policy(id, CHECK_SERVER)
                .map(|p| p.rules.iter().map(|r| serde_json::to_value(r).expect("serializes")).collect())
                .unwrap_or_default();
            let want: Vec<Value> = expected.iter().map(canon_ssh_rule).collect();
            let got: Vec<Value> = actual.iter().map(canon_ssh_rule).collect();
            if want != got {
                let i = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i)).unwrap_or_default();
                let show = |l: &[Value]| l.get(i).map_or("nothing".to_string(), ToString::to_string);
                return Err(format!(
                    "{name}: SSH rule {i} of {}: expected {}, got {} (of {})",
                    want.len(),
                    show(&want),
                    show(&got),
                    got.len()
                ));
            }
        }
        Ok(())
    }

    /// Each node's own and its peers' capability maps as the server sends them (the baseline
    /// every node gets, `tailcfg::caps`, under the policy's), against the captures. Where the
    /// two products' baselines differ by design, the difference is dropped on one side:
    /// [`SETTING_CAPS`] from both, and a Headscale baseline capability the
    /// capture lacks from ours ([`unmatched_baseline`]).
    fn check_node_attrs(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        let base = caps::baseline(caps::Switches { taildrop: true, ..caps::Switches::default() });
        for (name, capture) in self.captures() {
            let Some(self_node) = capture["netmap"].get("SelfNode") else { continue };
            let id = self.node_id(name).ok_or(format!("captured node {name} is not in the topology"))?;
            let want = compared_caps(&self_node["CapMap"]);
            let mut got = cap_texts(caps::with_base(&base, compiled.self_caps(id)));
            // Tailscale sends cap/ssh and cap/file-sharing to every node too: those are compared.
            unmatched_baseline(&mut got, &want, &[caps::DRIVE_SHARE, caps::DRIVE_ACCESS]);
            if want != got {
                return Err(format!("{name}: self CapMap: expected {want:?}, got {got:?}"));
            }
            for peer in capture["netmap"]["Peers"].as_array().into_iter().flatten() {
                let peer_node = peer_name(peer);
                let pid = self
                    .node_id(&peer_node)
                    .ok_or(format!("{name}: captured peer {peer_node} is not in the topology"))?;
                let want = compared_caps(&peer["CapMap"]);
                let mut got = cap_texts(caps::with_base(&base, compiled.peer_caps(pid)));
                // Headscale gives peers the same baseline as the node itself; Tailscale does not.
                let baseline: Vec<&str> = base.keys().map(String::as_str).collect();
                unmatched_baseline(&mut got, &want, &baseline);
                if want != got {
                    return Err(format!("{name} sees {peer_node} with CapMap {got:?}, expected {want:?}"));
                }
            }
        }
        Ok(())
    }

    /// An approved exit node whose captured `AllowedIPs` hold a default route is a peer.
    fn check_exit_visibility(&self, compiled: &CompiledPolicy) -> Result<(), String> {
        for (name, capture) in self.captures() {
            let Some(s) = self.node_id(name) else { continue };
            let peers = compiled.peers(s);
            for peer in capture["netmap"]["Peers"].as_array().into_iter().flatten() {
                let peer_node = peer_name(peer);
                let Some(p) = self.nodes.iter().find(|n| n.name == peer_node) else { continue };
                let default = |r: &str| r == "0.0.0.0/0" || r == "::/0";
                let exit_approved = p.approved_routes.iter().any(|r| default(&r.to_string()));
                let exit_allowed = strings(&peer["AllowedIPs"]).iter().any(|r| default(r));
                if exit_approved && exit_allowed && !peers.contains(&p.id) {
                    return Err(format!("{name} does not see the exit node {peer_node}"));
                }
            }
        }
        Ok(())
    }
}

/// Checks that a write was refused, with `message` in the error when given.
fn expect_rejection(outcome: Result<(), PolicyError>, message: &str) -> Result<(), String> {
    match outcome {
        Ok(()) => Err(format!("accepted, but Tailscale refuses it with {message:?}")),
        Err(e) if e.to_string().contains(message) => Ok(()),
        Err(e) => Err(format!("refused with {:?}, expected a message containing {message:?}", e.to_string())),
    }
}

/// A peer's short name.
fn peer_name(peer: &Value) -> String {
    let full = peer["Name"].as_str().or_else(|| peer["ComputedName"].as_str()).unwrap_or_default();
    full.split('.').next().unwrap_or_default().to_string()
}

/// Parses filter address patterns: `*`, addresses, prefixes and `a-b` ranges.
fn parse_ranges(texts: &[String]) -> Result<Vec<IpRange>, String> {
    let mut out = Vec::new();
    for t in texts {
        if t == "*" {
            out.push(IpRange::net("0.0.0.0/0".parse().expect("valid")));
            out.push(IpRange::net("::/0".parse().expect("valid")));
        } else if let Some((a, b)) = t.split_once('-') {
            let (a, b): (IpAddr, IpAddr) =
                (a.parse().map_err(|_| format!("bad range {t}"))?, b.parse().map_err(|_| format!("bad range {t}"))?);
            out.push(IpRange::between(a, b).ok_or(format!("bad range {t}"))?);
        } else if let Ok(a) = t.parse::<IpAddr>() {
            out.push(IpRange::addr(a));
        } else {
            out.push(IpRange::net(t.parse().map_err(|_| format!("bad address {t}"))?));
        }
    }
    Ok(out)
}

/// A capability grant in comparable form: sorted destinations, values as canonical JSON.
type CanonCapGrant = (Vec<String>, BTreeMap<String, Vec<Value>>);

/// A filter rule in comparable form: sorted where order does not matter.
#[derive(Debug, PartialEq)]
struct CanonRule {
    src: Vec<String>,
    dst: Vec<(String, u64, u64)>,
    proto: Vec<i64>,
    caps: Vec<CanonCapGrant>,
}

impl From<&Value> for CanonRule {
    fn from(v: &Value) -> Self {
        let mut src = strings(&v["SrcIPs"]);
        src.sort();
        let mut dst: Vec<(String, u64, u64)> = v["DstPorts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let ip = d["IP"].as_str().unwrap_or_default().to_string();
                (ip, d["Ports"]["First"].as_u64().unwrap_or_default(), d["Ports"]["Last"].as_u64().unwrap_or_default())
            })
            .collect();
        dst.sort();
        let mut proto: Vec<i64> = v["IPProto"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
        proto.sort_unstable();
        let caps = v["CapGrant"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let mut dsts = strings(&g["Dsts"]);
                dsts.sort();
                let map = g["CapMap"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, vals)| (k.clone(), vals.as_array().into_iter().flatten().map(canon_json).collect()))
                    .collect();
                (dsts, map)
            })
            .collect();
        CanonRule { src, dst, proto, caps }
    }
}

/// A JSON value with every number as a float, so `1` and `1.0` compare equal.
fn canon_json(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(a) => Value::Array(a.iter().map(canon_json).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), canon_json(v))).collect()),
        other => other.clone(),
    }
}

/// An SSH rule in comparable form: principals sorted, empty fields dropped.
fn canon_ssh_rule(v: &Value) -> Value {
    let mut principals: Vec<String> = v["principals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodeIP"].as_str().map(String::from))
        .collect();
    principals.sort();
    let mut out = serde_json::Map::new();
    out.insert("principals".into(), principals.into());
    for key in ["sshUsers", "action", "acceptEnv"] {
        let value = &v[key];
        let empty = value.is_null()
            || value.as_array().is_some_and(Vec::is_empty)
            || value.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

/// A captured capability map without the capabilities nobody compares, values as JSON text.
fn compared_caps(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            !UNCOMPARED_CAPS.contains(&k.as_str())
                && !SETTING_CAPS.contains(&k.as_str())
                && !k.starts_with("https://tailscale.com/cap/funnel-ports?")
        })
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// Drops from `got` the Headscale baseline capabilities among `baseline` that the capture
/// (`want`) does not have; one the capture has is still compared.
fn unmatched_baseline(got: &mut BTreeMap<String, String>, want: &BTreeMap<String, String>, baseline: &[&str]) {
    got.retain(|k, _| want.contains_key(k) || !baseline.contains(&k.as_str()));
}

/// This engine's capability map, values as JSON text (no values is `null`).
fn cap_texts(caps: CapMap) -> BTreeMap<String, String> {
    caps.into_iter()
        .filter(|(k, _)| !UNCOMPARED_CAPS.contains(&k.as_str()) && !SETTING_CAPS.contains(&k.as_str()))
        .map(|(k, v)| {
            let text = if v.is_empty() { "null".to_string() } else { Value::Array(v).to_string() };
            (k, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_rules_ignore_order_inside_a_rule_only() {
        let a: Value = serde_json::from_str(
            r#"{"SrcIPs":["b","a"],"DstPorts":[{"IP":"x","Ports":{"First":1,"Last":2}},{"IP":"w","Ports":{"First":1,"Last":2}}]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"SrcIPs":["a","b"],"DstPorts":[{"IP":"w","Ports":{"First":1,"Last":2}},{"IP":"x","Ports":{"First":1,"Last":2}}],"IPProto":[]}"#,
        )
        .unwrap();
        assert_eq!(CanonRule::from(&a), CanonRule::from(&b));
        let c: Value =
            serde_json::from_str(r#"{"SrcIPs":["a"],"CapGrant":[{"Dsts":["d"],"CapMap":{"x":null,"y":[{"n":1}]}}]}"#)
                .unwrap();
        let d: Value =
            serde_json::from_str(r#"{"SrcIPs":["a"],"CapGrant":[{"Dsts":["d"],"CapMap":{"x":[],"y":[{"n":1.0}]}}]}"#)
                .unwrap();
        assert_eq!(CanonRule::from(&c), CanonRule::from(&d));
    }

    #[test]
    fn rejections_need_the_message() {
        let err = || Err(PolicyError::Invalid(vec!["src=tag not found: \"tag:x\"".into()]));
        assert!(expect_rejection(err(), "tag not found").is_ok());
        assert!(expect_rejection(err(), "").is_ok());
        assert!(expect_rejection(err(), "other").is_err());
        assert!(expect_rejection(Ok(()), "").is_err());
    }

    #[test]
    fn suggests_only_known_capabilities_are_kept() {
        let v: Value =
            serde_json::from_str(r#"{"suggest-exit-node":null,"https://tailscale.com/cap/is-admin":null}"#).unwrap();
        assert_eq!(compared_caps(&v), BTreeMap::from([("suggest-exit-node".to_string(), "null".to_string())]));
    }
}
