//! In-process tests of the admin API: a real server on a unix socket in a temporary directory,
//! driven through the CLI's client code path (argument parsing, connection, output).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::cli::{client_command_output, Cli, CliError};
use crate::config::Config;
use crate::db::Db;
use crate::state::RegisterOutcome;
use crate::tailcfg::{Hostinfo, MachineKey, NodeKey, RegisterRequest};

struct Server {
    _dir: tempfile::TempDir,
    config: Config,
    state: Arc<State>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), GrpcError>>,
}

async fn start() -> Server {
    start_with(|_| {}).await
}

/// Starts a server whose embedded configuration `edit` adjusts.
async fn start_with(edit: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded(dir.path());
    config.unix_socket = dir.path().join("run").join("headscale.sock");
    config.cli.timeout = Duration::from_secs(5);
    edit(&mut config);
    let state = State::load(Arc::new(config.clone()), Db::open_in_memory().expect("db")).await.expect("state");
    let (stop, stopped) = oneshot::channel::<()>();
    let path = config.unix_socket.clone();
    let serving = state.clone();
    let task = tokio::spawn(async move {
        serve_unix(&path, 0o770, serving, async {
            let _ = stopped.await;
        })
        .await
    });
    Server { _dir: dir, config, state, stop, task }
}

async fn run(config: &Config, args: &[&str]) -> Result<String, CliError> {
    let cli = Cli::try_parse_from(std::iter::once("headscale").chain(args.iter().copied())).expect("arguments parse");
    client_command_output(&cli, config).await
}

async fn ok(config: &Config, args: &[&str]) -> String {
    match run(config, args).await {
        Ok(text) => text,
        Err(e) => panic!("`{}` failed: {e}", args.join(" ")),
    }
}

async fn json(config: &Config, args: &[&str]) -> Value {
    let mut full = vec!["-o", "json"];
    full.extend_from_slice(args);
    let text = ok(config, &full).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("`{}` printed invalid JSON ({e}): {text}", args.join(" ")))
}

async fn failure(config: &Config, args: &[&str]) -> CliError {
    match run(config, args).await {
        Ok(text) => panic!("`{}` should fail but printed {text}", args.join(" ")),
        Err(e) => e,
    }
}

fn code(e: &CliError) -> tonic::Code {
    match e {
        CliError::Request { status, .. } => status.code(),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// A time as the CLI prints it: a protobuf Timestamp in Go's JSON, `{"seconds", "nanos"}`.
fn time(v: &Value) -> DateTime<Utc> {
    let nanos = v["nanos"].as_u64().unwrap_or(0) as u32;
    DateTime::from_timestamp(v["seconds"].as_i64().expect("a Timestamp"), nanos).expect("a time in range")
}

/// Starts an interactive registration as a client without a key would, returning its id.
async fn pending(state: &State, n: u8) -> String {
    let req = RegisterRequest {
        version: 130,
        node_key: NodeKey([n; 32]),
        hostinfo: Some(Hostinfo { hostname: format!("host-{n}"), ..Default::default() }),
        ..Default::default()
    };
    match state.register(MachineKey([n; 32]), req).await.expect("register") {
        RegisterOutcome::NeedsAuth(url) => url.rsplit('/').next().expect("an id").to_string(),
        other => panic!("expected an auth URL, got {other:?}"),
    }
}

#[tokio::test]
async fn users_and_pre_auth_keys_through_the_cli() {
    let s = start().await;
    let c = &s.config;

    assert_eq!(ok(c, &["users", "create", "alice", "-d", "Alice", "-e", "alice@example.com"]).await, "User created");
    let bob = json(c, &["user", "new", "bob"]).await;
    assert_eq!((bob["id"].as_u64(), bob["name"].as_str()), (Some(2), Some("bob")));
    let dup = failure(c, &["users", "create", "bob"]).await;
    assert_eq!(code(&dup), tonic::Code::AlreadyExists);
    assert_eq!(dup.to_string(), "cannot create the user: user \"bob\" already exists");
    assert_eq!(code(&failure(c, &["users", "create", "bad name"]).await), tonic::Code::InvalidArgument);

    let users = json(c, &["users", "list"]).await;
    let users = users.as_array().expect("a list");
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["display_name"], "Alice");
    assert!(time(&users[0]["created_at"]) <= Utc::now());
    let table = ok(c, &["users", "ls", "-n", "bob"]).await;
    assert!(table.starts_with("ID | Name | Username | Email"), "{table}");
    assert!(table.contains("bob") && !table.contains("alice"), "{table}");
    assert_eq!(json(c, &["users", "list", "-e", "alice@example.com"]).await[0]["name"], "alice");
    assert_eq!(json(c, &["users", "list", "-i", "9"]).await, Value::Null, "an empty list is Go's nil slice");

    let key = json(c, &["preauthkeys", "create", "-u", "alice", "--reusable", "-e", "2h"]).await;
    let full = key["key"].as_str().expect("a key");
    assert!(full.starts_with("hskey-auth-") && !full.ends_with("***"), "{full}");
    assert_eq!(key["user"]["name"], "alice");
    assert_eq!(key["reusable"], true);
    let expires = time(&key["expiration"]) - Utc::now();
    assert!(expires > chrono::Duration::minutes(119) && expires <= chrono::Duration::hours(2), "{expires}");
    let printed = ok(c, &["pre", "c", "-u", "1", "--tags", "tag:ci,tag:web"]).await;
    assert!(printed.starts_with("hskey-auth-") && !printed.contains('\n'), "{printed}");
    assert_eq!(code(&failure(c, &["preauthkeys", "create", "--tags", "ci"]).await), tonic::Code::InvalidArgument);
    assert_eq!(code(&failure(c, &["preauthkeys", "create", "-u", "77"]).await), tonic::Code::NotFound);
    let nobody = failure(c, &["preauthkeys", "create", "-u", "nobody"]).await;
    assert_eq!(nobody.to_string(), "user \"nobody\" not found");
    assert!(matches!(failure(c, &["preauthkeys", "create", "-u", "1", "-e", "soon"]).await, CliError::Invalid(_)));

    let keys = json(c, &["preauthkeys", "list"]).await;
    let keys = keys.as_array().expect("a list");
    assert_eq!(keys.len(), 2);
    let prefix = &full["hskey-auth-".len()..full.len() - 65];
    assert_eq!(keys[0]["key"], format!("hskey-auth-{prefix}-***"));
    assert_eq!(keys[1]["acl_tags"], serde_json::json!(["tag:ci", "tag:web"]));
    let table = ok(c, &["authkey", "ls"]).await;
    assert!(table.lines().nth(2).is_some_and(|l| l.ends_with("| alice")), "{table}");

    assert_eq!(ok(c, &["preauthkeys", "expire", "-i", "1"]).await, "Key expired");
    assert!(time(&json(c, &["preauthkeys", "list"]).await[0]["expiration"]) <= Utc::now());
    assert_eq!(ok(c, &["preauthkeys", "rm", "--id", "1"]).await, "Key deleted");
    let gone = failure(c, &["preauthkeys", "delete", "-i", "1"]).await;
    assert_eq!(code(&gone), tonic::Code::NotFound);
    assert_eq!(gone.to_string(), "cannot delete the pre-auth key: pre-auth key 1 not found");
    assert_eq!(code(&failure(c, &["preauthkeys", "expire", "-i", "1"]).await), tonic::Code::NotFound);
    assert_eq!(json(c, &["preauthkeys", "list"]).await.as_array().map(Vec::len), Some(1));

    assert_eq!(ok(c, &["users", "rename", "-n", "bob", "-r", "robert"]).await, "User renamed");
    assert_eq!(json(c, &["users", "mv", "-i", "2", "-r", "rob"]).await["name"], "rob");
    assert_eq!(code(&failure(c, &["users", "rename", "-i", "2", "-r", "alice"]).await), tonic::Code::AlreadyExists);
    assert_eq!(failure(c, &["users", "rename", "-i", "9", "-r", "x"]).await.to_string(), "user with id 9 not found");

    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        assert!(matches!(failure(c, &["users", "destroy", "-n", "rob"]).await, CliError::NeedsForce(_)));
    }
    assert_eq!(ok(c, &["users", "destroy", "-n", "rob", "--force"]).await, "User destroyed");
    assert_eq!(ok(c, &["-o", "json", "users", "delete", "-i", "1", "--force"]).await, "{}");
    assert_eq!(failure(c, &["users", "destroy", "-n", "rob", "--force"]).await.to_string(), "user \"rob\" not found");
    assert_eq!(json(c, &["users", "list"]).await, Value::Null);
    assert_eq!(json(c, &["preauthkeys", "list"]).await, Value::Null, "keys go with their user");

    assert_eq!(ok(c, &["health"]).await, "The server is healthy");
    assert_eq!(json(c, &["health"]).await["database_connectivity"], true);
    let _ = s.stop.send(());
    s.task.await.expect("joins").expect("served cleanly");
    assert!(!s.config.unix_socket.exists(), "the socket is removed on shutdown");
}

#[tokio::test]
async fn nodes_and_registrations_through_the_cli() {
    let s = start().await;
    let c = &s.config;
    ok(c, &["users", "create", "alice"]).await;

    let id = pending(&s.state, 1).await;
    let node = json(c, &["auth", "register", "--auth-id", &id, "-u", "alice"]).await;
    assert_eq!(node["id"], 1);
    assert_eq!(node["given_name"], "host-1");
    assert_eq!(node["name"], "host-1");
    assert_eq!(node["user"]["name"], "alice");
    assert_eq!(node["register_method"], pb::RegisterMethod::Cli as i32);
    assert!(node.get("online").is_none(), "false is left out, as Go's omitempty does: {node}");
    assert!(node["machine_key"].as_str().is_some_and(|k| k.starts_with("mkey:01")));
    assert!(node["disco_key"].as_str().is_some_and(|k| k.starts_with("discokey:")));
    assert_eq!(node["ip_addresses"].as_array().map(Vec::len), Some(2));

    let second = pending(&s.state, 2).await;
    assert_eq!(ok(c, &["nodes", "register", "-u", "alice", "-k", &second]).await, "Node host-2 registered");
    assert_eq!(
        code(&failure(c, &["auth", "register", "--auth-id", "bogus", "-u", "alice"]).await),
        tonic::Code::NotFound
    );
    let third = pending(&s.state, 3).await;
    assert_eq!(
        code(&failure(c, &["auth", "register", "--auth-id", &third, "-u", "nobody"]).await),
        tonic::Code::NotFound
    );
    assert_eq!(code(&failure(c, &["auth", "approve", "--auth-id", &third]).await), tonic::Code::FailedPrecondition);
    assert_eq!(ok(c, &["auth", "reject", "--auth-id", &third]).await, "Auth request rejected");
    assert_eq!(code(&failure(c, &["auth", "reject", "--auth-id", &third]).await), tonic::Code::NotFound);

    let table = ok(c, &["nodes", "list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID | Hostname | Name   | MachineKey | NodeKey | User  | Tags | IP addresses"),
        "{table}"
    );
    assert!(lines[1].contains("| alice |") && lines[1].contains("offline"), "{table}");
    assert_eq!(json(c, &["nodes", "ls", "-u", "alice"]).await.as_array().map(Vec::len), Some(2));
    assert_eq!(code(&failure(c, &["nodes", "list", "-u", "nobody"]).await), tonic::Code::NotFound);

    assert_eq!(ok(c, &["nodes", "rename", "-i", "1", "laptop"]).await, "Node renamed");
    assert_eq!(code(&failure(c, &["nodes", "rename", "-i", "2", "laptop"]).await), tonic::Code::AlreadyExists);
    assert_eq!(code(&failure(c, &["nodes", "rename", "-i", "2", "Not A Label"]).await), tonic::Code::InvalidArgument);
    assert_eq!(code(&failure(c, &["nodes", "rename", "-i", "9", "x"]).await), tonic::Code::NotFound);

    let never = json(c, &["nodes", "expire", "-i", "1", "-d"]).await;
    assert!(never.get("expiry").is_none(), "{never}");
    assert_eq!(never["given_name"], "laptop");
    let later = json(c, &["nodes", "exp", "-i", "1", "-e", "2030-01-31T12:00:00Z"]).await;
    assert_eq!(time(&later["expiry"]), DateTime::parse_from_rfc3339("2030-01-31T12:00:00Z").expect("a time"));
    assert!(matches!(failure(c, &["nodes", "expire", "-i", "1", "-e", "tomorrow"]).await, CliError::Invalid(_)));
    assert_eq!(ok(c, &["nodes", "logout", "-i", "1"]).await, "Node expired");
    let table = ok(c, &["nodes", "list"]).await;
    assert!(table.lines().nth(1).is_some_and(|l| l.ends_with("| yes")), "{table}");

    let fetched = s.state.snapshot().node(1).map(|e| e.node.given_name.clone());
    assert_eq!(fetched.as_deref(), Some("laptop"));
    assert_eq!(ok(c, &["nodes", "delete", "-i", "1", "--force"]).await, "Node deleted");
    assert_eq!(code(&failure(c, &["node", "del", "-i", "1", "--force"]).await), tonic::Code::NotFound);
    let busy = failure(c, &["users", "destroy", "-n", "alice", "--force"]).await;
    assert_eq!(code(&busy), tonic::Code::FailedPrecondition);
    let _ = s.stop.send(());
}

#[tokio::test]
async fn raw_requests_get_clear_errors_and_health_answers() {
    let s = start().await;
    ok(&s.config, &["health"]).await; // waits until the server listens
    let path = s.config.unix_socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await;
    let mut client = pb::headscale_service_client::HeadscaleServiceClient::new(channel.expect("connects"));
    let err =
        client.set_tags(pb::SetTagsRequest { node_id: 1, tags: vec!["tag:a".into()] }).await.expect_err("no node");
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "node 1 not found"));
    let err = client.set_tags(pb::SetTagsRequest { node_id: 1, tags: vec!["a".into()] }).await.expect_err("bad tag");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .set_approved_routes(pb::SetApprovedRoutesRequest { node_id: 1, routes: vec!["10.0.0.0/33".into()] })
        .await
        .expect_err("bad route");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err =
        client.backfill_node_i_ps(pb::BackfillNodeIPsRequest { confirmed: false }).await.expect_err("unconfirmed");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = client.set_policy(pb::SetPolicyRequest { policy: "{}".into() }).await.expect_err("file mode");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(err.message(), "the policy can only be changed when policy.mode is database");
    let health = client.health(pb::HealthRequest {}).await.expect("answers").into_inner();
    assert!(health.database_connectivity);
    let node = client.get_node(pb::GetNodeRequest { node_id: 4 }).await.expect_err("no such node");
    assert_eq!((node.code(), node.message()), (tonic::Code::NotFound, "node 4 not found"));

    let mode = std::fs::metadata(&s.config.unix_socket).expect("socket exists");
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o7777, 0o770);
    let again = serve_unix(&s.config.unix_socket, 0o770, s.state.clone(), async {}).await;
    assert!(matches!(again, Err(GrpcError::InUse(_))), "{again:?}");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn policy_in_the_database_through_the_cli() {
    let s = start_with(|c| c.policy.mode = "database".into()).await;
    ok(&s.config, &["health"]).await;
    assert_eq!(ok(&s.config, &["policy", "get"]).await, "");
    let dir = s.config.unix_socket.parent().expect("socket directory").to_path_buf();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("policy file");
        path.display().to_string()
    };
    let good = write(
        "good.hujson",
        r#"{
  // the office may reach the web server
  "hosts": {"office": "100.64.0.1", "web": "100.64.0.2"},
  "acls": [{"action": "accept", "src": ["office"], "dst": ["web:80"]},],
  "tests": [{"src": "office", "accept": ["web:80"], "deny": ["web:22"]}],
}"#,
    );
    let broken = write("broken.hujson", r#"{"acls": [{"action": "allow", "src": ["*"], "dst": ["*:*"]}]}"#);
    let failing = write(
        "failing.hujson",
        r#"{"acls": [{"action": "accept", "src": ["100.64.0.1"], "dst": ["100.64.0.2:80"]}], "tests": [{"src": "100.64.0.1", "accept": ["100.64.0.2:22"]}]}"#,
    );
    ok(&s.config, &["policy", "check", "-f", &good]).await;
    let refused = failure(&s.config, &["policy", "check", "-f", &broken]).await;
    assert_eq!(code(&refused), tonic::Code::InvalidArgument);
    assert!(refused.to_string().contains(r#"action="allow" is not supported"#), "{refused}");
    assert_eq!(ok(&s.config, &["policy", "get"]).await, "", "check applies nothing");

    ok(&s.config, &["policy", "set", "-f", &good]).await;
    let stored = ok(&s.config, &["policy", "get", "-o", "json"]).await;
    assert_eq!(stored, std::fs::read_to_string(&good).expect("read"), "the policy as it was written, in any format");
    assert!(s.state.snapshot().policy.policy().is_some(), "the policy is in force");

    let refused = failure(&s.config, &["policy", "set", "-f", &failing]).await;
    assert_eq!(code(&refused), tonic::Code::InvalidArgument);
    assert_eq!(ok(&s.config, &["policy", "get"]).await, stored, "a refused policy changes nothing");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("headscale.sock");
    std::fs::write(&path, b"left over").expect("writes");
    let config = Config::embedded(dir.path());
    let state = State::load(Arc::new(config), Db::open_in_memory().expect("db")).await.expect("state");
    let served = serve_unix(&path, 0o700, state, async {}).await;
    assert!(served.is_ok(), "{served:?}");
    assert!(!path.exists());
}

#[tokio::test]
async fn the_cli_explains_an_unreachable_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded(dir.path());
    config.cli.timeout = Duration::from_millis(200);
    let err = failure(&config, &["users", "list"]).await;
    assert_eq!(
        err.to_string(),
        format!("cannot reach the headscale server at {}: is `headscale serve` running?", config.unix_socket.display())
    );
    config.cli.address = "headscale.example.com:443".into();
    assert!(matches!(failure(&config, &["users", "list"]).await, CliError::MissingApiKey(_)));
    config.cli.address = "http://127.0.0.1:1".into();
    config.cli.api_key = "hskey-api-abc-def".into();
    let err = failure(&config, &["users", "list"]).await;
    assert!(matches!(&err, CliError::RemoteUnreachable { address, .. } if address == "http://127.0.0.1:1"), "{err:?}");
    assert!(matches!(failure(&config, &["serve"]).await, CliError::NotAClientCommand("serve")));
    let bash = ok(&config, &["completion", "bash"]).await;
    assert!(bash.contains("_headscale()") && bash.contains("preauthkeys"), "a bash completion script");
    assert!(ok(&config, &["completion", "zsh"]).await.starts_with("#compdef headscale"));
    let key = ok(&config, &["generate", "private-key"]).await;
    assert!(key.starts_with("privkey:") && key.len() == "privkey:".len() + 64, "{key}");
    assert_eq!(json(&config, &["version"]).await["version"], crate::VERSION);
}

#[tokio::test]
async fn remote_grpc_without_tls_or_an_explicit_opt_out_is_skipped_as_headscale_does() {
    let mut config = Config::embedded(std::path::Path::new("/nonexistent"));
    assert!(bind_tcp(&config).await.expect("nothing to bind").is_none());
    assert_eq!(remote_skipped(&config), None);
    config.grpc_listen_addr = "127.0.0.1:0".into();
    assert!(bind_tcp(&config).await.expect("skipped, not refused").is_none(), "no certificate for TLS");
    let why = remote_skipped(&config).expect("a reason");
    assert!(why.contains("grpc_listen_addr") && why.contains("grpc_allow_insecure"), "{why}");
    config.grpc_allow_insecure = true;
    assert_eq!(remote_skipped(&config), None);
    let listener = bind_tcp(&config).await.expect("binds").expect("a listener");
    assert!(listener.local_addr().expect("an address").port() > 0);
    config.grpc_listen_addr = "256.0.0.1:1".into();
    assert!(matches!(bind_tcp(&config).await, Err(GrpcError::Bind { .. })));
}

#[test]
fn permissions_parse_as_octal() {
    assert_eq!(parse_permission("0770").ok(), Some(0o770));
    assert_eq!(parse_permission("770").ok(), Some(0o770));
    assert_eq!(parse_permission("0o700").ok(), Some(0o700));
    assert!(parse_permission("0980").is_err());
    assert!(parse_permission("").is_err());
}

#[test]
fn the_descriptor_set_describes_the_service() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decodes");
    let service = set
        .file
        .iter()
        .filter(|f| f.package() == "headscale.v1")
        .flat_map(|f| f.service.iter())
        .find(|s| s.name() == "HeadscaleService")
        .expect("the service");
    assert_eq!(service.method.len(), 29);
    assert!(set.file.iter().any(|f| f.name() == "google/api/annotations.proto"));
}
