//! Tag ownership (`tagOwners`): whether a user may give a node a tag, checked when a client
//! asks for tags (`--advertise-tags`) as it registers.

use super::alias::{Alias, AutoGroup};
use super::tailnet::{email_domain, users_named, PolicyUser};
use super::types::ParsedPolicy;

impl ParsedPolicy {
    /// Whether `user` owns `tag`: the tag is defined and one of its owners names the user
    /// directly, by e-mail domain, through a group, or as `autogroup:member`. Tags owned by
    /// other tags and admin-console roles give a user nothing.
    pub fn user_owns_tag(&self, tag: &str, user: &PolicyUser, users: &[PolicyUser]) -> bool {
        let Some(owners) = self.tag_owners.get(tag) else { return false };
        owners.iter().any(|owner| match owner {
            Alias::Group(g) => self.groups.get(g).is_some_and(|members| members.iter().any(|m| names(m, user, users))),
            other => names(other, user, users),
        })
    }
}

/// Whether a user alias (a user token, `user:*@domain` or `autogroup:member`) names `user`.
fn names(alias: &Alias, user: &PolicyUser, users: &[PolicyUser]) -> bool {
    match alias {
        Alias::User(token) => users_named(users, token).iter().any(|u| u.id == user.id),
        Alias::UserDomain(domain) => email_domain(&user.email).is_some_and(|d| d.eq_ignore_ascii_case(domain)),
        Alias::AutoGroup(AutoGroup::Member) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, name: &str, email: &str) -> PolicyUser {
        PolicyUser { id, name: name.into(), email: email.into() }
    }

    #[test]
    fn owners_are_matched_as_users_groups_domains_and_members() {
        let policy = ParsedPolicy::parse(
            r#"{
                "groups": {"group:ops": ["bob@"]},
                "tagOwners": {
                    "tag:web": ["alice@example.com"],
                    "tag:db": ["group:ops"],
                    "tag:corp": ["user:*@corp.example"],
                    "tag:any": ["autogroup:member"],
                    "tag:child": ["tag:web"],
                },
            }"#,
        )
        .unwrap();
        let alice = user(1, "alice", "alice@example.com");
        let bob = user(2, "bob", "");
        let carol = user(3, "carol", "carol@corp.example");
        let users = [alice.clone(), bob.clone(), carol.clone()];
        let owns = |tag: &str, u: &PolicyUser| policy.user_owns_tag(tag, u, &users);
        assert!(owns("tag:web", &alice) && !owns("tag:web", &bob));
        assert!(owns("tag:db", &bob) && !owns("tag:db", &alice));
        assert!(owns("tag:corp", &carol) && !owns("tag:corp", &alice));
        assert!(owns("tag:any", &alice) && owns("tag:any", &bob));
        assert!(!owns("tag:child", &alice), "a tag's owner tag gives users nothing");
        assert!(!owns("tag:undefined", &alice));
    }
}
