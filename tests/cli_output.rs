//! What every client command prints with `-o json`, `-o json-line` and `-o yaml`, against a
//! running server, in the shape Headscale v0.29's CLI prints (the `headscale.v1` Go structs
//! through Go's `encoding/json` and yaml.v3; see `src/cli/go_shape.rs`). The snapshots keep the
//! exact text, tabs included, with keys, key material and times replaced by placeholders.

use std::path::Path;
use std::process::Output;

mod support;

struct Cli<'a> {
    config: &'a Path,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        support::headscale(self.config, args)
    }

    /// Runs a command that must succeed and returns what it printed, redacted.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "headscale {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        redact(&String::from_utf8(out.stdout).unwrap())
    }
}

/// Replaces what differs from run to run: key material after its prefix, API key prefixes, and
/// the numbers of `seconds` and `nanos`.
fn redact(text: &str) -> String {
    let mut out = text.to_string();
    let keys =
        ["hskey-auth-", "hskey-api-", "hskey-authreq-", "mkey:", "nodekey:", "discokey:", "privkey:", "\"prefix\": \""];
    for prefix in keys {
        out = replace_after(&out, prefix, |c| c != '"' && !c.is_whitespace(), "[redacted]");
    }
    for field in ["\"seconds\": ", "\"seconds\":", "\"nanos\": ", "\"nanos\":", "seconds: ", "nanos: "] {
        out = replace_after(&out, field, |c| c.is_ascii_digit(), "0");
    }
    out
}

/// Replaces the run of characters accepted by `part` that follows each `prefix`.
fn replace_after(text: &str, prefix: &str, part: impl Fn(char) -> bool, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at + prefix.len()]);
        rest = &rest[at + prefix.len()..];
        let end = rest.find(|c: char| !part(c)).unwrap_or(rest.len());
        if end > 0 {
            out.push_str(with);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_command_prints_headscale_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = support::write_config(dir.path(), port, "policy:\n  mode: database\n");
    let policy = dir.path().join("policy.hujson");
    std::fs::write(
        &policy,
        r#"{"tagOwners": {"tag:web": ["alicia@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    )
    .unwrap();
    let _server = support::Serving::start(&config, port);
    let cli = Cli { config: &config };
    let json = |args: &[&str]| cli.ok(&[args, &["-o", "json"]].concat());

    // Nothing yet: Go prints a nil slice as null.
    insta::assert_snapshot!("users_list_empty", json(&["users", "list"]));
    insta::assert_snapshot!(
        "users_create",
        json(&["users", "create", "alice", "-d", "Alice <a&b>", "-e", "alice@example.com"])
    );
    insta::assert_snapshot!("users_rename", json(&["users", "rename", "--name", "alice", "--new-name", "alicia"]));
    insta::assert_snapshot!("users_list", json(&["users", "list"]));
    insta::assert_snapshot!("users_list_yaml", cli.ok(&["users", "list", "-o", "yaml"]));
    insta::assert_snapshot!("users_list_json_line", cli.ok(&["users", "list", "-o", "json-line"]));
    cli.ok(&["policy", "set", "-f", policy.to_str().unwrap()]);

    insta::assert_snapshot!("preauthkeys_create", json(&["preauthkeys", "create", "-u", "1", "--reusable"]));
    insta::assert_snapshot!("preauthkeys_list", json(&["preauthkeys", "list"]));
    insta::assert_snapshot!("preauthkeys_expire", json(&["preauthkeys", "expire", "-i", "1"]));

    let api_key = json(&["apikeys", "create"]);
    insta::assert_snapshot!("apikeys_create", api_key);
    insta::assert_snapshot!("apikeys_list", json(&["apikeys", "list"]));
    insta::assert_snapshot!("apikeys_expire", json(&["apikeys", "expire", "-i", "1"]));
    insta::assert_snapshot!("apikeys_delete", json(&["apikeys", "delete", "-i", "1", "--force"]));

    let auth_id = "hskey-authreq-AbCdEfGhIjKlMnOpQrStUvWx";
    insta::assert_snapshot!(
        "debug_create_node",
        json(&["debug", "create-node", "--name", "box", "-u", "alicia", "--key", auth_id, "--route", "10.1.0.0/24"])
    );
    insta::assert_snapshot!("auth_register", json(&["auth", "register", "--auth-id", auth_id, "-u", "alicia"]));
    insta::assert_snapshot!("nodes_list", json(&["nodes", "list"]));
    insta::assert_snapshot!("nodes_list_routes", json(&["nodes", "list-routes"]));
    insta::assert_snapshot!("nodes_approve_routes", json(&["nodes", "approve-routes", "-i", "1", "-r", "10.1.0.0/24"]));
    insta::assert_snapshot!("nodes_rename", json(&["nodes", "rename", "-i", "1", "web-1"]));
    insta::assert_snapshot!("nodes_tag", json(&["nodes", "tag", "-i", "1", "-t", "tag:web"]));
    insta::assert_snapshot!("nodes_expire", json(&["nodes", "expire", "-i", "1"]));
    insta::assert_snapshot!("nodes_backfillips", json(&["nodes", "backfillips", "--force"]));
    insta::assert_snapshot!("nodes_delete", json(&["nodes", "delete", "-i", "1", "--force"]));
    insta::assert_snapshot!("nodes_list_routes_empty", json(&["nodes", "list-routes"]));

    insta::assert_snapshot!("users_destroy", json(&["users", "destroy", "--name", "alicia", "--force"]));
    insta::assert_snapshot!("health", json(&["health"]));
    insta::assert_snapshot!("generate_private_key", json(&["generate", "private-key"]));

    // The policy commands print the policy or a message whatever the format, as Headscale's do.
    let shown = cli.run(&["policy", "get", "-o", "json"]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), std::fs::read_to_string(&policy).unwrap().trim());

    // An error goes to standard error as {"error": …}, and the command fails.
    let refused = cli.run(&["users", "destroy", "--name", "nobody", "--force", "-o", "json"]);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "{refused:?}");
    let error: serde_json::Value = serde_json::from_slice(&refused.stderr).unwrap();
    assert!(error["error"].as_str().is_some_and(|e| e.contains("nobody")), "{error}");
}

#[test]
fn version_prints_headscale_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), support::free_port(), "");
    let out = Cli { config: &config }.run(&["version", "-o", "json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("\t\"")?.split('"').next()).collect();
    assert_eq!(keys, ["version", "commit", "buildTime", "go", "dirty"], "{text}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["go"]["os"], std::env::consts::OS);
    let yaml = String::from_utf8(Cli { config: &config }.run(&["version", "-o", "yaml"]).stdout).unwrap();
    assert!(yaml.contains("buildtime: ") && yaml.contains("dirty: false"), "{yaml}");
}
