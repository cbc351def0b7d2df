//! `autoApprovers`: which advertised routes a node gets approved without an administrator.
//! An exit route needs the node among `exitNode`; any other route needs a `routes` prefix
//! covering it whose approvers include the node.

use ipnet::IpNet;

use super::nodeset::NodeSet;
use super::resolve::Resolver;
use super::tailnet::is_exit_route;
use super::types::ParsedPolicy;

/// The resolved approvers.
#[derive(Debug, Clone)]
pub struct AutoApproval {
    routes: Vec<(IpNet, NodeSet)>,
    exit_node: NodeSet,
}

impl AutoApproval {
    /// Resolves the policy's approvers to nodes.
    pub fn compile(policy: &ParsedPolicy, resolver: &mut Resolver<'_>) -> Self {
        let n = resolver.tailnet.len();
        let mut nodes_of = |aliases: &[super::alias::Alias]| {
            let mut set = NodeSet::new(n);
            aliases.iter().for_each(|a| set.union_with(&resolver.resolve(a).nodes));
            set
        };
        let routes = policy.auto_approvers.routes.iter().map(|(p, a)| (*p, nodes_of(a))).collect();
        let exit_node = nodes_of(&policy.auto_approvers.exit_node);
        AutoApproval { routes, exit_node }
    }

    /// Whether node `i` may have `route` approved automatically.
    pub fn approves(&self, i: usize, route: &IpNet) -> bool {
        if is_exit_route(route) {
            return self.exit_node.contains(i);
        }
        self.routes.iter().any(|(prefix, nodes)| prefix.contains(route) && nodes.contains(i))
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::fixture::{compile, ALICE, EXIT, ROUTER};

    #[test]
    fn approvers_cover_sub_prefixes_and_exit_routes_need_exit_node() {
        let c = compile(
            r#""autoApprovers": {"routes": {"10.0.0.0/8": ["tag:router"], "0.0.0.0/0": ["tag:exit"]}, "exitNode": ["group:admins"]}"#,
        );
        let net = |s: &str| s.parse().unwrap();
        assert!(c.auto_approves(ROUTER, &net("10.33.0.0/16")));
        assert!(!c.auto_approves(ROUTER, &net("192.168.0.0/24")));
        assert!(!c.auto_approves(ALICE, &net("10.33.0.0/16")));
        assert!(!c.auto_approves(EXIT, &net("0.0.0.0/0")), "a routes key does not approve exit routes");
        assert!(c.auto_approves(ALICE, &net("::/0")));
    }
}
