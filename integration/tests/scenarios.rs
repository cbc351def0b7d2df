//! Runs every scenario of `integration::scenarios` in the in-process world: the server and
//! real tailscale-rs clients in this process on loopback. The same scenarios run in Docker
//! with `cargo run -p hi -- run PATTERN`. Scenarios run one at a time (each starts several
//! clients), and one that cannot run here says so on standard error and passes as skipped.

use anyhow::{Context, Result};
use integration::scenario::Verdict;
use integration::{in_process, init, scenarios};

/// One scenario at a time: each runs a server and up to six clients.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(name: &str) -> Result<()> {
    init();
    let _turn = ONE_AT_A_TIME.lock().await;
    let all = scenarios::all();
    let scenario = all.iter().find(|s| s.name == name).with_context(|| format!("no scenario named {name}"))?;
    let started = std::time::Instant::now();
    match in_process::run(scenario).await.with_context(|| format!("scenario {name}"))? {
        Verdict::Passed => eprintln!("{name}: passed in {:.1?}", started.elapsed()),
        Verdict::Skipped(why) => eprintln!("{name}: SKIPPED in the in-process world: {why}"),
    }
    Ok(())
}

macro_rules! scenario_tests {
    ($($(#[$attr:meta])* $test:ident => $name:literal,)*) => {
        $(
            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() -> Result<()> {
                run($name).await
            }
        )*

        #[test]
        fn every_scenario_has_a_test() {
            let tested = [$($name),*];
            let missing: Vec<_> =
                scenarios::all().iter().map(|s| s.name).filter(|n| !tested.contains(n)).collect();
            assert!(missing.is_empty(), "scenarios without a test here: {missing:?}");
        }
    };
}

scenario_tests! {
    ping_all_tcp_udp => "PingAllTcpUdp",
    pre_auth_key_reusable => "PreAuthKeyReusable",
    pre_auth_key_one_shot => "PreAuthKeyOneShot",
    pre_auth_key_expired => "PreAuthKeyExpired",
    pre_auth_key_ephemeral => "PreAuthKeyEphemeral",
    logout_login_keeps_address => "LogoutLoginKeepsAddress",
    node_expiry => "NodeExpiry",
    interactive_login => "InteractiveLogin",
    server_restart => "ServerRestart",
    disconnect_shows_offline => "DisconnectShowsOffline",
    acl_allow_deny => "AclAllowDeny",
    acl_tags => "AclTags",
    acl_runtime_change => "AclRuntimeChange",
    derp_admission => "DerpAdmission",
}
