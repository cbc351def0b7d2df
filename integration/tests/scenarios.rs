//! Runs every scenario of `integration::scenarios` in the in-process world, once with the
//! official Go client and once with tailscale-rs (`SCENARIO::go`, `SCENARIO::rs`): the server in
//! this process on SQLite, the clients on loopback. The scenarios where storage matters run
//! once more with the Go client on PostgreSQL (`SCENARIO::go_postgres`, a throwaway cluster). The same scenarios run in Docker with
//! `cargo run -p hi -- run PATTERN`. Scenarios run one at a time (each starts several
//! clients); one that cannot run with a client, or here, says why on standard error and
//! passes as skipped. The Go clients' logs (every MapResponse they decoded included) are kept
//! in `target/tmp/scenarios/SCENARIO-CLIENT/`.

use anyhow::{Context, Result};
use integration::scenario::{ClientKind, Engine, Verdict};
use integration::{in_process, init, scenarios};

/// One scenario at a time: each runs a server and up to six clients.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(name: &str, kind: ClientKind, engine: Engine) -> Result<()> {
    init();
    let _turn = ONE_AT_A_TIME.lock().await;
    let all = scenarios::all();
    let scenario = all.iter().find(|s| s.name == name).with_context(|| format!("no scenario named {name}"))?;
    let label = format!("{name}-{kind}-{}", engine.name());
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scenarios").join(&label);
    let _ = std::fs::remove_dir_all(&logs);
    let started = std::time::Instant::now();
    let ran = in_process::run(scenario, kind, engine, &logs)
        .await
        .with_context(|| format!("scenario {label} (client logs in {})", logs.display()))?;
    match ran.verdict {
        Verdict::Passed => eprintln!("{label}: passed in {:.1?}", started.elapsed()),
        Verdict::Skipped(why) => eprintln!("{label}: SKIPPED in the in-process world: {why}"),
    }
    for note in ran.notes {
        eprintln!("{label}: note: {note}");
    }
    Ok(())
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal $(, $postgres:ident)?;)*) => {
        $(
            mod $test {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn go() -> Result<()> {
                    run($name, ClientKind::Go, Engine::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn rs() -> Result<()> {
                    run($name, ClientKind::Rs, Engine::Sqlite).await
                }

                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $postgres() -> Result<()> {
                        run($name, ClientKind::Go, Engine::Postgres).await
                    }
                )?
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

// A name followed by `go_postgres` also runs with the Go client on PostgreSQL.
scenario_tests! {
    ping_all_tcp_udp => "PingAllTcpUdp";
    server_restart => "ServerRestart";
    disconnect_shows_offline => "DisconnectShowsOffline";
    ping_all_by_magic_dns_name => "PingAllByMagicDnsName";
    server_killed_nodes_reconnect => "ServerKilledNodesReconnect";
    client_restart_keeps_identity => "ClientRestartKeepsIdentity", go_postgres;
    client_quit_shows_offline => "ClientQuitShowsOffline";
    late_joiner_reaches_all => "LateJoinerReachesAll";
    ping_all_ten_nodes => "PingAllTenNodes";
    all_clients_restart_mesh_holds => "AllClientsRestartMeshHolds";
    server_restart_keeps_policy_and_tags => "ServerRestartKeepsPolicyAndTags";
    new_node_after_server_restart => "NewNodeAfterServerRestart";
    offline_peer_has_last_seen => "OfflinePeerHasLastSeen";
    peers_learn_endpoints_and_home_derp => "PeersLearnEndpointsAndHomeDerp";
    pre_auth_key_reusable => "PreAuthKeyReusable", go_postgres;
    pre_auth_key_one_shot => "PreAuthKeyOneShot", go_postgres;
    pre_auth_key_expired => "PreAuthKeyExpired";
    pre_auth_key_ephemeral => "PreAuthKeyEphemeral", go_postgres;
    logout_login_keeps_address => "LogoutLoginKeepsAddress", go_postgres;
    node_expiry => "NodeExpiry", go_postgres;
    interactive_login => "InteractiveLogin", go_postgres;
    pre_auth_key_tagged_makes_tagged_node => "PreAuthKeyTaggedMakesTaggedNode", go_postgres;
    requested_tag_owned_is_applied => "RequestedTagOwnedIsApplied";
    requested_tag_not_owned_is_refused => "RequestedTagNotOwnedIsRefused";
    tagged_key_refuses_other_requested_tags => "TaggedKeyRefusesOtherRequestedTags";
    key_expired_after_use_keeps_nodes => "KeyExpiredAfterUseKeepsNodes", go_postgres;
    node_deleted_is_dropped_by_peers => "NodeDeletedIsDroppedByPeers", go_postgres;
    node_renamed_reached_by_new_name => "NodeRenamedReachedByNewName", go_postgres;
    interactive_login_unknown_user_refused => "InteractiveLoginUnknownUserRefused";
    interactive_login_requested_tags => "InteractiveLoginRequestedTags";
    node_expiry_disabled_by_admin => "NodeExpiryDisabledByAdmin", go_postgres;
    user_with_nodes_cannot_be_destroyed => "UserWithNodesCannotBeDestroyed", go_postgres;
    ephemeral_reusable_key_both_removed => "EphemeralReusableKeyBothRemoved";
    ephemeral_survives_quick_restart => "EphemeralSurvivesQuickRestart";
    pre_auth_key_deleted_keeps_node => "PreAuthKeyDeletedKeepsNode", go_postgres;
    relogin_with_expired_key_refused => "ReloginWithExpiredKeyRefused";
    node_expiry_in_the_future => "NodeExpiryInTheFuture";
    tagged_node_has_tagged_devices_profile => "TaggedNodeHasTaggedDevicesProfile";
    interactive_relogin_keeps_address => "InteractiveReloginKeepsAddress", go_postgres;
    interactive_login_ping_all => "InteractiveLoginPingAll";
    one_shot_key_not_reusable_after_deletion => "OneShotKeyNotReusableAfterDeletion";
    same_hostname_gets_unique_name => "SameHostnameGetsUniqueName", go_postgres;
    tagged_node_keeps_at_least_one_tag => "TaggedNodeKeepsAtLeastOneTag";
    expired_node_sees_no_peers => "ExpiredNodeSeesNoPeers";
    acl_allow_deny => "AclAllowDeny";
    acl_tags => "AclTags";
    acl_runtime_change => "AclRuntimeChange";
    acl_autogroup_member => "AclAutogroupMember";
    acl_autogroup_self => "AclAutogroupSelf";
    acl_groups => "AclGroups";
    acl_hosts_and_prefixes => "AclHostsAndPrefixes";
    acl_wildcard_allows_all => "AclWildcardAllowsAll";
    acl_empty_list_denies_all => "AclEmptyListDeniesAll";
    acl_no_rules_allows_all => "AclNoRulesAllowsAll";
    grants_ip_ports => "GrantsIpPorts";
    policy_invalid_change_keeps_last => "PolicyInvalidChangeKeepsLast";
    policy_check_cli => "PolicyCheckCli";
    acl_tag_set_by_admin_applies => "AclTagSetByAdminApplies";
    acl_tag_owned_by_group => "AclTagOwnedByGroup";
    acl_port_range => "AclPortRange";
    acl_udp_only_rule => "AclUdpOnlyRule";
    acl_one_way_rule_with_connection_tracking => "AclOneWayRuleWithConnectionTracking";
    acl_tag_changed_by_admin => "AclTagChangedByAdmin";
    acl_user_created_later_gets_access => "AclUserCreatedLaterGetsAccess";
    acl_autogroup_tagged => "AclAutogroupTagged";
    policy_database_mode_set_by_cli => "PolicyDatabaseModeSetByCli", go_postgres;
    acl_group_member_added_at_runtime => "AclGroupMemberAddedAtRuntime";
    acl_host_alias_for_one_node => "AclHostAliasForOneNode";
    policy_with_passing_tests_applies => "PolicyWithPassingTestsApplies";
    packet_filter_matches_policy => "PacketFilterMatchesPolicy";
    ssh_policy_reaches_targets => "SshPolicyReachesTargets";
    grant_app_capability_reaches_target => "GrantAppCapabilityReachesTarget";
    dns_magic_dns_config => "DnsMagicDnsConfig";
    dns_nameservers_and_search_domains => "DnsNameserversAndSearchDomains";
    dns_magic_dns_disabled => "DnsMagicDnsDisabled";
    log_tail_disabled_by_default => "LogTailDisabledByDefault";
    log_tail_enabled_leaves_client_logging => "LogTailEnabledLeavesClientLogging";
    dns_custom_base_domain => "DnsCustomBaseDomain";
    caps_baseline_on_self_and_peers => "CapsBaselineOnSelfAndPeers";
    caps_follow_configuration => "CapsFollowConfiguration";
    caps_from_node_attrs => "CapsFromNodeAttrs";
    derp_admission => "DerpAdmission";
    derp_verify_endpoint => "DerpVerifyEndpoint";
    derp_map_embedded_region_is_home => "DerpMapEmbeddedRegionIsHome";
    derp_map_file_change_reaches_clients => "DerpMapFileChangeReachesClients";
    cli_nodes_list_matches_clients => "CliNodesListMatchesClients";
    api_key_guards_rest => "ApiKeyGuardsRest", go_postgres;
    api_delete_node_drops_peer => "ApiDeleteNodeDropsPeer";
    user_rename_reaches_peers => "UserRenameReachesPeers", go_postgres;
    register_page_names_command => "RegisterPageNamesCommand";
    api_creates_user_and_key => "ApiCreatesUserAndKey", go_postgres;
    api_renames_expires_and_tags_nodes => "ApiRenamesExpiresAndTagsNodes", go_postgres;
    cli_nodes_list_filters_by_user => "CliNodesListFiltersByUser";
    cli_pre_auth_keys_list_shows_state => "CliPreAuthKeysListShowsState", go_postgres;
    health_and_version_served => "HealthAndVersionServed";
    api_key_list_hides_key_and_delete_revokes => "ApiKeyListHidesKeyAndDeleteRevokes";
    cli_refuses_bad_names_and_tags => "CliRefusesBadNamesAndTags";
    api_list_nodes_matches_cli => "ApiListNodesMatchesCli";
    api_writes_refused_without_key => "ApiWritesRefusedWithoutKey";
    api_expires_pre_auth_key => "ApiExpiresPreAuthKey";
    cli_users_list_filters => "CliUsersListFilters";
}
