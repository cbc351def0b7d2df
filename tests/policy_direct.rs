//! `headscale policy get|set|check --bypass-grpc-and-access-database-directly`: the policy
//! commands on the configured database itself, with the server stopped, as Headscale v0.29
//! offers them; what is set this way is what the server enforces when it starts.

mod support;

const FLAG: &str = "--bypass-grpc-and-access-database-directly";

#[test]
fn the_policy_is_set_read_and_checked_with_the_server_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = support::write_config(dir.path(), port, "policy:\n  mode: database\n");
    let good = dir.path().join("good.hujson");
    std::fs::write(&good, r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:443"]}]}"#).unwrap();
    let bad = dir.path().join("bad.hujson");
    std::fs::write(&bad, r#"{"acls": [{"action": "accept", "src": ["group:nobody"], "dst": ["*:*"]}]}"#).unwrap();

    let set = support::headscale(&config, &["policy", "set", "-f", good.to_str().unwrap(), FLAG]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let get = support::headscale(&config, &["policy", "get", FLAG]);
    assert!(String::from_utf8_lossy(&get.stdout).contains("*:443"), "{get:?}");
    let check = support::headscale(&config, &["policy", "check", "-f", bad.to_str().unwrap(), FLAG]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("group:nobody"), "{check:?}");

    // The server starts with the policy set while it was stopped.
    let server = support::Serving::start(&config, port);
    let served = support::headscale(&config, &["policy", "get"]);
    drop(server);
    assert!(String::from_utf8_lossy(&served.stdout).contains("*:443"), "{served:?}");
}
