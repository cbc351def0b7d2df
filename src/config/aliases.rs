//! Deprecated keys Headscale still reads: each is moved to the key that replaced it before the
//! configuration is read, with Headscale's warning.

use serde_yaml::Value;

/// Deprecated keys Headscale v0.29 still reads, each with the key that replaced it.
const ALIASES: [(&str, &str); 1] = [("ephemeral_node_inactivity_timeout", "node.ephemeral.inactivity_timeout")];

/// Moves each deprecated key of `tree` to its new place (unless that is set too, which wins),
/// and returns Headscale's warning for each.
pub fn take_deprecated(tree: &mut Value) -> Vec<String> {
    let mut warnings = Vec::new();
    for (old, new) in ALIASES {
        let Some(value) = tree.as_mapping_mut().and_then(|m| m.remove(old)) else { continue };
        warnings.push(format!(
            "The {old:?} configuration key is deprecated. Please use {new:?} instead. {old:?} will be removed in the future."
        ));
        if lookup(tree, new).is_none() {
            set(tree, new, value);
        }
    }
    warnings
}

fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |v, k| v.get(k)).filter(|v| !v.is_null())
}

fn set(tree: &mut Value, path: &str, value: Value) {
    let mut cur = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Default::default());
        }
        let map = cur.as_mapping_mut().expect("a mapping");
        cur = map.entry(Value::String(part.to_string())).or_insert(Value::Null);
    }
    if !cur.is_mapping() {
        *cur = Value::Mapping(Default::default());
    }
    cur.as_mapping_mut().expect("a mapping").insert(Value::String(parts[parts.len() - 1].to_string()), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_ephemeral_key_is_taken_over_with_headscales_warning() {
        let mut tree: Value = serde_yaml::from_str("ephemeral_node_inactivity_timeout: 30m\n").unwrap();
        let warnings = take_deprecated(&mut tree);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("The \"ephemeral_node_inactivity_timeout\" configuration key is deprecated."));
        assert_eq!(lookup(&tree, "node.ephemeral.inactivity_timeout"), Some(&Value::from("30m")));
        assert!(tree.get("ephemeral_node_inactivity_timeout").is_none());

        let both = "ephemeral_node_inactivity_timeout: 30m\nnode:\n  ephemeral:\n    inactivity_timeout: 5m\n";
        let mut tree: Value = serde_yaml::from_str(both).unwrap();
        assert_eq!(take_deprecated(&mut tree).len(), 1);
        assert_eq!(lookup(&tree, "node.ephemeral.inactivity_timeout"), Some(&Value::from("5m")), "the new key wins");
    }
}
