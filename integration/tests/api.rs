//! The admin API against a server running in this process: every RPC through a gRPC client
//! generated from the wire contract (`testdata/docs/headscale-v1-api.md`, see `build.rs`), on
//! the local socket and on the remote listener with an API key; the contract's messages and
//! REST routes against this server's `proto/`; REST under `/api/v1` with snapshots of the JSON
//! answers, errors included; refusal of missing, wrong and expired keys; and the CLI in local
//! and remote mode (plaintext and through a TLS proxy) in every output format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use headscale::app::Running;
use headscale::cli::{client_command_output, Cli, CliError};
use headscale::config::Config;
use headscale::state::RegisterOutcome;
use headscale::tailcfg::{Hostinfo, MachineKey, NodeKey, RegisterRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use integration::{init, test_config, Options};
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request};

/// The client generated from the wire contract (whose device messages no RPC uses).
mod contract {
    #![allow(clippy::all, missing_docs, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/headscale.v1.rs"));
}

use contract::headscale_service_client::HeadscaleServiceClient;

/// The contract's compiled descriptors.
const CONTRACT_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/contract_descriptor.bin"));

/// A server with the remote gRPC listener on (plaintext), its files in a temporary directory.
struct ApiServer {
    running: Running,
    /// The configuration of a CLI on the server host (local socket).
    config: Config,
    grpc_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ApiServer {
    async fn start() -> Result<ApiServer> {
        Self::start_with(|c| c.grpc_allow_insecure = true).await
    }

    /// Starts a server whose test configuration `edit` adjusts (in its own directory).
    async fn start_with(edit: impl FnOnce(&mut Config)) -> Result<ApiServer> {
        init();
        let dir = tempfile::tempdir()?;
        let mut config = test_config(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &Options::default())?;
        config.grpc_listen_addr = "127.0.0.1:0".into();
        config.policy.mode = "database".into();
        config.tls_cert_path = dir.path().join("tls.crt").display().to_string();
        config.tls_key_path = dir.path().join("tls.key").display().to_string();
        edit(&mut config);
        if config.grpc_allow_insecure {
            config.tls_cert_path.clear();
            config.tls_key_path.clear();
        } else {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
            std::fs::write(&config.tls_cert_path, cert.cert.pem())?;
            std::fs::write(&config.tls_key_path, cert.key_pair.serialize_pem())?;
        }
        let running = headscale::app::start(config.clone()).await.context("starting the server")?;
        let grpc_addr = running.grpc_addr.context("the remote gRPC listener is bound")?;
        config.listen_addr = running.listen_addr.to_string();
        Ok(ApiServer { running, config, grpc_addr, _dir: dir })
    }

    /// The configuration of a CLI elsewhere, reaching the server with `key`.
    fn remote(&self, key: &str) -> Config {
        let mut c = self.config.clone();
        c.cli.address = format!("http://{}", self.grpc_addr);
        c.cli.api_key = key.to_string();
        c
    }

    /// Runs a CLI command the way the binary does and returns what it prints.
    async fn cli(&self, config: &Config, args: &[&str]) -> Result<String, CliError> {
        let cli = Cli::try_parse_from(std::iter::once("headscale").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("`{}` does not parse: {e}", args.join(" ")));
        client_command_output(&cli, config).await
    }

    /// Runs a CLI command that must succeed.
    async fn ok(&self, config: &Config, args: &[&str]) -> String {
        self.cli(config, args).await.unwrap_or_else(|e| panic!("`{}` failed: {e}", args.join(" ")))
    }

    /// Creates an API key with the local CLI and returns it.
    async fn api_key(&self, expiration: &str) -> String {
        let printed = self.ok(&self.config, &["apikeys", "create", "-e", expiration, "-o", "json"]).await;
        serde_json::from_str(&printed).expect("the key as a JSON string")
    }

    /// Starts an interactive registration as a client without a key would; returns its id.
    async fn pending(&self, n: u8) -> String {
        let req = RegisterRequest {
            version: 130,
            node_key: NodeKey([n; 32]),
            hostinfo: Some(Hostinfo { hostname: format!("host-{n}"), ..Default::default() }),
            ..Default::default()
        };
        match self.running.state.register(MachineKey([n; 32]), req).await.expect("register") {
            RegisterOutcome::NeedsAuth(url) => url.rsplit('/').next().expect("an id").to_string(),
            other => panic!("expected an auth URL, got {other:?}"),
        }
    }

    /// One REST call: the status and the JSON answer.
    async fn rest(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Result<(u16, Value)> {
        let tcp = TcpStream::connect(self.running.listen_addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req =
            http::Request::builder().method(method).uri(path).header("host", self.config.listen_addr.as_str());
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let resp = sender.send_request(req.body(Full::new(bytes))?).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&body)
            .with_context(|| format!("{method} {path} answered {status} with non-JSON {body:?}"))?;
        Ok((status, value))
    }

    /// A contract client on the local socket (no key), once the server listens there.
    async fn local_client(&self) -> Result<Client> {
        let path = self.config.unix_socket.clone();
        let channel = integration::eventually("the local socket", Duration::from_secs(5), || {
            let path = path.clone();
            async move {
                Endpoint::from_static("http://[::]:50051")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                    }))
                    .await
                    .ok()
            }
        })
        .await?;
        Ok(HeadscaleServiceClient::with_interceptor(channel, Bearer(None)))
    }

    /// A contract client on the remote listener, sending `key` (if any) as a bearer token.
    async fn remote_client(&self, key: Option<&str>) -> Result<Client> {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc_addr))?.connect().await?;
        let bearer = key.map(|k| format!("Bearer {k}").parse()).transpose()?;
        Ok(HeadscaleServiceClient::with_interceptor(channel, Bearer(bearer)))
    }
}

/// A contract client, with or without a key.
type Client = HeadscaleServiceClient<InterceptedService<Channel, Bearer>>;

/// Sends `authorization: Bearer <key>` when there is a key.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// 2030-01-31T12:00:00Z, a fixed time in the future.
const LATER: i64 = 1_896_091_200;

fn later() -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: LATER, nanos: 0 }
}

/// The prefix of a full API key.
fn prefix_of(key: &str) -> &str {
    key.strip_prefix("hskey-api-").and_then(|r| r.split('-').next()).expect("an API key")
}

/// The status of a call that must fail.
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.expect_err("the call must fail").code()
}

/// Calls every method of the service through the contract client. `run` keeps names and
/// machine keys of several runs on one server apart.
async fn exercise(srv: &ApiServer, c: &mut Client, run: u8) -> Result<()> {
    use contract::*;
    let name = |s: &str| format!("{s}-{run}");
    assert!(c.health(HealthRequest {}).await?.into_inner().database_connectivity);

    // Users.
    let request = CreateUserRequest {
        name: name("alice"),
        display_name: "Alice".into(),
        email: format!("alice{run}@example.com"),
        picture_url: "https://example.com/a.png".into(),
    };
    let user = c.create_user(request).await?.into_inner().user.context("a user")?;
    assert_eq!((user.name.as_str(), user.display_name.as_str()), (name("alice").as_str(), "Alice"));
    assert_eq!(user.profile_pic_url, "https://example.com/a.png");
    for filter in [
        ListUsersRequest { id: user.id, ..Default::default() },
        ListUsersRequest { name: name("alice"), ..Default::default() },
        ListUsersRequest { email: user.email.clone(), ..Default::default() },
    ] {
        let users = c.list_users(filter).await?.into_inner().users;
        assert_eq!(users.iter().map(|u| u.id).collect::<Vec<_>>(), vec![user.id]);
    }
    assert!(!c.list_users(ListUsersRequest::default()).await?.into_inner().users.is_empty());
    let renamed = c.rename_user(RenameUserRequest { old_id: user.id, new_name: name("alicia") }).await?.into_inner();
    assert_eq!(renamed.user.map(|u| u.name), Some(name("alicia")));

    // Pre-auth keys.
    let request = CreatePreAuthKeyRequest {
        user: user.id,
        reusable: true,
        ephemeral: false,
        expiration: Some(later()),
        acl_tags: vec![],
    };
    let key = c.create_pre_auth_key(request).await?.into_inner().pre_auth_key.context("a key")?;
    assert!(key.key.starts_with("hskey-auth-") && !key.key.ends_with("***"), "{}", key.key);
    assert_eq!((key.expiration.map(|t| t.seconds), key.reusable), (Some(LATER), true));
    let request = CreatePreAuthKeyRequest { acl_tags: vec!["tag:ci".into()], ..Default::default() };
    let tagged = c.create_pre_auth_key(request).await?.into_inner().pre_auth_key.context("a key")?;
    assert_eq!((tagged.user, tagged.acl_tags), (None, vec!["tag:ci".to_string()]));
    let keys = c.list_pre_auth_keys(ListPreAuthKeysRequest {}).await?.into_inner().pre_auth_keys;
    let listed = keys.iter().find(|k| k.id == key.id).context("the key is listed")?;
    assert!(listed.key.ends_with("-***") && key.key.starts_with(listed.key.trim_end_matches("***")));
    c.expire_pre_auth_key(ExpirePreAuthKeyRequest { id: key.id }).await?;
    for id in [key.id, tagged.id] {
        c.delete_pre_auth_key(DeletePreAuthKeyRequest { id }).await?;
    }
    let keys = c.list_pre_auth_keys(ListPreAuthKeysRequest {}).await?.into_inner().pre_auth_keys;
    assert!(!keys.iter().any(|k| k.id == key.id || k.id == tagged.id));

    // Nodes and registrations.
    let auth_id = srv.pending(run * 10 + 1).await;
    let node = c.auth_register(AuthRegisterRequest { user: name("alicia"), auth_id }).await?.into_inner().node;
    let node = node.context("a node")?;
    assert_eq!(node.register_method, RegisterMethod::Cli as i32);
    assert_eq!(node.user.as_ref().map(|u| u.id), Some(user.id));
    assert_eq!(node.ip_addresses.len(), 2);
    let key = srv.pending(run * 10 + 2).await;
    let other = c.register_node(RegisterNodeRequest { user: name("alicia"), key }).await?.into_inner().node;
    let other = other.context("a node")?;
    let got = c.get_node(GetNodeRequest { node_id: node.id }).await?.into_inner().node.context("a node")?;
    assert_eq!((got.machine_key, got.given_name), (node.machine_key.clone(), node.given_name.clone()));
    let nodes = c.list_nodes(ListNodesRequest { user: name("alicia") }).await?.into_inner().nodes;
    assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![node.id, other.id]);
    let renamed = c.rename_node(RenameNodeRequest { node_id: node.id, new_name: name("laptop") }).await?.into_inner();
    assert_eq!(renamed.node.map(|n| n.given_name), Some(name("laptop")));
    let request = ExpireNodeRequest { node_id: node.id, expiry: Some(later()), disable_expiry: false };
    let expiring = c.expire_node(request).await?.into_inner().node.context("a node")?;
    assert_eq!(expiring.expiry.map(|t| t.seconds), Some(LATER));
    let request = ExpireNodeRequest { node_id: node.id, expiry: None, disable_expiry: true };
    assert_eq!(c.expire_node(request).await?.into_inner().node.map(|n| n.expiry), Some(None));
    let third = srv.pending(run * 10 + 3).await;
    assert_eq!(code(c.auth_approve(AuthApproveRequest { auth_id: third.clone() }).await), Code::FailedPrecondition);
    c.auth_reject(AuthRejectRequest { auth_id: third }).await?;

    // Routes, tags, re-addressing, and a made-up node completed like an interactive one.
    let request = SetApprovedRoutesRequest { node_id: node.id, routes: vec!["10.1.0.0/16".into(), "::/0".into()] };
    let routed = c.set_approved_routes(request).await?.into_inner().node.context("a node")?;
    assert_eq!(routed.approved_routes, vec!["0.0.0.0/0", "10.1.0.0/16", "::/0"], "one exit route approves both");
    let tagged = c.set_tags(SetTagsRequest { node_id: other.id, tags: vec!["tag:ci".into()] }).await?.into_inner();
    let tagged = tagged.node.context("a node")?;
    assert_eq!((tagged.tags, tagged.user, tagged.expiry), (vec!["tag:ci".to_string()], None, None));
    let request = SetTagsRequest { node_id: other.id, tags: vec![] };
    assert_eq!(code(c.set_tags(request).await), Code::FailedPrecondition, "a tagged node keeps a tag");
    assert!(c.backfill_node_i_ps(BackfillNodeIPsRequest { confirmed: true }).await?.into_inner().changes.is_empty());
    let auth_id = format!("hskey-authreq-debug{run}");
    let request = DebugCreateNodeRequest {
        user: name("alicia"),
        key: auth_id.clone(),
        name: name("made-up"),
        routes: vec!["10.9.0.0/24".into()],
    };
    let made = c.debug_create_node(request).await?.into_inner().node.context("a node")?;
    assert_eq!(
        (made.name.as_str(), made.available_routes.as_slice()),
        (name("made-up").as_str(), &["10.9.0.0/24".to_string()][..])
    );
    let made = c.auth_register(AuthRegisterRequest { user: name("alicia"), auth_id }).await?.into_inner().node;
    let made = made.context("a node")?;
    assert_eq!((made.given_name, made.available_routes), (name("made-up"), vec!["10.9.0.0/24".to_string()]));

    assert_eq!(code(c.delete_user(DeleteUserRequest { id: user.id }).await), Code::FailedPrecondition);
    for node_id in [node.id, other.id, made.id] {
        c.delete_node(DeleteNodeRequest { node_id }).await?;
    }
    c.delete_user(DeleteUserRequest { id: user.id }).await?;

    // API keys.
    let full = c.create_api_key(CreateApiKeyRequest { expiration: Some(later()) }).await?.into_inner().api_key;
    let prefix = prefix_of(&full).to_string();
    let keys = c.list_api_keys(ListApiKeysRequest {}).await?.into_inner().api_keys;
    let listed = keys.iter().find(|k| k.prefix == prefix).context("the API key is listed")?;
    assert_eq!((listed.expiration.map(|t| t.seconds), listed.last_seen), (Some(LATER), None));
    c.expire_api_key(ExpireApiKeyRequest { prefix: prefix.clone(), id: 0 }).await?;
    c.delete_api_key(DeleteApiKeyRequest { prefix: String::new(), id: listed.id }).await?;
    let keys = c.list_api_keys(ListApiKeysRequest {}).await?.into_inner().api_keys;
    assert!(!keys.iter().any(|k| k.prefix == prefix));

    // The policy (database mode): check, set, get; a broken one is refused.
    let policy = r#"{"tagOwners": {"tag:ci": []}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    c.check_policy(CheckPolicyRequest { policy: policy.into() }).await?;
    let set = c.set_policy(SetPolicyRequest { policy: policy.into() }).await?.into_inner();
    assert!(set.updated_at.is_some());
    assert_eq!(c.get_policy(GetPolicyRequest {}).await?.into_inner().policy, policy);
    assert_eq!(code(c.set_policy(SetPolicyRequest { policy: "{".into() }).await), Code::InvalidArgument);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_client_calls_every_method_locally_and_remotely() -> Result<()> {
    let srv = ApiServer::start().await?;
    exercise(&srv, &mut srv.local_client().await?, 1).await?;
    let key = srv.api_key("1h").await;
    exercise(&srv, &mut srv.remote_client(Some(&key)).await?, 2).await?;
    let keys = srv.local_client().await?.list_api_keys(contract::ListApiKeysRequest {}).await?.into_inner().api_keys;
    assert!(
        keys.iter().all(|k| key.contains(&k.prefix) == k.last_seen.is_some()),
        "only the used key was seen: {keys:?}"
    );
    srv.running.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_grpc_refuses_missing_wrong_and_expired_keys() -> Result<()> {
    let srv = ApiServer::start().await?;
    let health = || contract::HealthRequest {};
    let refused = |r: Result<tonic::Response<contract::HealthResponse>, tonic::Status>| {
        let s = r.expect_err("refused");
        (s.code(), s.message().to_string())
    };
    let missing = refused(srv.remote_client(None).await?.health(health()).await);
    assert_eq!(missing, (Code::Unauthenticated, "an API key is required: send Authorization: Bearer <api key>".into()));

    let key = srv.api_key("1h").await;
    let wrong = format!("{}{}", &key[..key.len() - 1], if key.ends_with('a') { 'b' } else { 'a' });
    let unknown = format!("hskey-api-{}-{}", "z".repeat(12), "s".repeat(64));
    for bad in [wrong.as_str(), unknown.as_str(), "hskey-api-garbage", "not-a-key"] {
        let answer = refused(srv.remote_client(Some(bad)).await?.health(health()).await);
        assert_eq!(answer, (Code::Unauthenticated, "invalid API key".into()), "{bad}");
    }
    assert!(srv.remote_client(Some(&key)).await?.health(health()).await?.into_inner().database_connectivity);

    let prefix = prefix_of(&key);
    assert_eq!(srv.ok(&srv.config, &["apikeys", "expire", "--prefix", prefix]).await, "Key expired");
    let expired = refused(srv.remote_client(Some(&key)).await?.health(health()).await);
    assert_eq!(expired, (Code::Unauthenticated, "the API key has expired".into()));
    assert_eq!(srv.ok(&srv.config, &["apikeys", "delete", "--prefix", prefix]).await, "Key deleted");
    let deleted = refused(srv.remote_client(Some(&key)).await?.health(health()).await);
    assert_eq!(deleted, (Code::Unauthenticated, "invalid API key".into()));

    // The local socket is trusted.
    assert!(srv.local_client().await?.health(health()).await?.into_inner().database_connectivity);
    srv.running.stop().await;
    Ok(())
}

/// Message fields, enum values and service methods of the `headscale.v1` package.
fn shape(bytes: &[u8]) -> Result<std::collections::BTreeMap<String, String>> {
    use prost::Message;
    use prost_types::DescriptorProto;
    fn message(prefix: &str, m: &DescriptorProto, out: &mut std::collections::BTreeMap<String, String>) {
        let name = format!("{prefix}.{}", m.name());
        for f in &m.field {
            let key = format!("{name}.{}", f.name());
            out.insert(
                key,
                format!("{} {:?} {:?} {} json={}", f.number(), f.label(), f.r#type(), f.type_name(), f.json_name()),
            );
        }
        for nested in &m.nested_type {
            message(&name, nested, out);
        }
    }
    let set = prost_types::FileDescriptorSet::decode(bytes)?;
    let mut out = std::collections::BTreeMap::new();
    for file in set.file.iter().filter(|f| f.package() == "headscale.v1") {
        for m in &file.message_type {
            message("headscale.v1", m, &mut out);
        }
        for e in &file.enum_type {
            for v in &e.value {
                out.insert(format!("headscale.v1.{}.{}", e.name(), v.name()), v.number().to_string());
            }
        }
        for s in &file.service {
            for m in &s.method {
                out.insert(format!("{}.{}", s.name(), m.name()), format!("{} -> {}", m.input_type(), m.output_type()));
            }
        }
    }
    Ok(out)
}

#[test]
fn the_contract_matches_this_servers_proto() -> Result<()> {
    let contract = shape(CONTRACT_DESCRIPTORS)?;
    let ours = shape(headscale::grpc::FILE_DESCRIPTOR_SET)?;
    assert!(contract.len() > 150, "the contract was read whole: {} entries", contract.len());
    let differ: Vec<_> = contract
        .iter()
        .filter(|(k, v)| ours.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: contract {v:?}, ours {:?}", ours.get(k)))
        .chain(ours.keys().filter(|k| !contract.contains_key(*k)).map(|k| format!("{k}: not in the contract")))
        .collect();
    assert!(differ.is_empty(), "wire differences:\n{}", differ.join("\n"));

    let routes = |bytes| -> Result<std::collections::BTreeSet<(String, String, String)>> {
        Ok(headscale::api::Routes::from_descriptor_set(bytes)?.list().collect())
    };
    let contract_routes = routes(CONTRACT_DESCRIPTORS)?;
    assert_eq!(contract_routes.len(), 29);
    assert_eq!(contract_routes, routes(headscale::grpc::FILE_DESCRIPTOR_SET)?);
    Ok(())
}

/// Replaces what differs between runs (times, secrets, prefixes, registration ids) with
/// labels, so the REST answers can be compared with stored snapshots.
fn redact(v: &mut Value, hidden: &[(String, String)]) {
    match v {
        Value::String(s) => {
            if s.starts_with("hskey-api-") {
                *s = "[api key]".into();
            } else if let Some(rest) = s.strip_prefix("hskey-auth-") {
                *s = if rest.ends_with("-***") { "hskey-auth-[prefix]-***".into() } else { "[pre-auth key]".into() };
            }
            for (text, label) in hidden {
                *s = s.replace(text.as_str(), label);
            }
            if chrono::DateTime::parse_from_rfc3339(s).is_ok() && !s.starts_with("2030-") {
                *s = "[time]".into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, hidden)),
        Value::Object(fields) => fields.values_mut().for_each(|f| redact(f, hidden)),
        _ => {}
    }
}

/// A record of REST calls and their answers, kept as one snapshot.
struct Transcript<'a> {
    srv: &'a ApiServer,
    key: String,
    hidden: Vec<(String, String)>,
    entries: Vec<Value>,
}

impl<'a> Transcript<'a> {
    fn new(srv: &'a ApiServer, key: &str) -> Self {
        let hidden = vec![(prefix_of(key).to_string(), "[admin key prefix]".to_string())];
        Transcript { srv, key: key.to_string(), hidden, entries: Vec::new() }
    }

    /// From now on, and in the last answer recorded, `text` is shown as `label`.
    fn hide(&mut self, text: &str, label: &str) {
        self.hidden.push((text.to_string(), label.to_string()));
        if let Some(last) = self.entries.last_mut() {
            redact(last, &self.hidden);
        }
    }

    /// A call with the admin key.
    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let key = self.key.clone();
        self.call_as(Some(&key), "admin", method, path, body).await
    }

    /// A call with `key` (described as `who`), or none.
    async fn call_as(
        &mut self,
        key: Option<&str>,
        who: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, answer) = self.srv.rest(method, path, key, body.as_ref()).await?;
        let mut entry =
            json!({ "request": format!("{method} {path}"), "key": who, "status": status, "response": answer });
        if let Some(body) = body {
            entry["body"] = body;
        }
        redact(&mut entry, &self.hidden);
        self.entries.push(entry);
        Ok(answer)
    }

    fn snapshot(self, name: &str) {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"));
        settings.bind(|| insta::assert_json_snapshot!(name, self.entries));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_users_and_pre_auth_keys() -> Result<()> {
    let srv = ApiServer::start().await?;
    let key = srv.api_key("1h").await;
    let mut t = Transcript::new(&srv, &key);
    let alice = json!({ "name": "alice", "displayName": "Alice", "email": "alice@example.com", "pictureUrl": "https://example.com/a.png" });
    t.call("POST", "/api/v1/user", Some(alice)).await?;
    t.call("POST", "/api/v1/user", Some(json!({ "name": "bob", "display_name": "Bob", "unknownField": 1 }))).await?;
    t.call("GET", "/api/v1/user", None).await?;
    t.call("GET", "/api/v1/user?name=bob", None).await?;
    t.call("GET", "/api/v1/user?id=1", None).await?;
    t.call("GET", "/api/v1/user?email=alice%40example.com", None).await?;
    t.call("POST", "/api/v1/user/2/rename/robert", None).await?;
    let body = json!({ "user": "1", "reusable": true, "expiration": "2030-01-31T12:00:00Z" });
    t.call("POST", "/api/v1/preauthkey", Some(body)).await?;
    t.call("POST", "/api/v1/preauthkey", Some(json!({ "aclTags": ["tag:ci", "tag:web"], "ephemeral": true }))).await?;
    t.call("GET", "/api/v1/preauthkey", None).await?;
    t.call("POST", "/api/v1/preauthkey/expire", Some(json!({ "id": "1" }))).await?;
    t.call("DELETE", "/api/v1/preauthkey?id=2", None).await?;
    t.call("GET", "/api/v1/preauthkey", None).await?;
    t.call("DELETE", "/api/v1/user/2", None).await?;
    t.call("GET", "/api/v1/user", None).await?;
    t.call("GET", "/api/v1/health", None).await?;
    t.snapshot("rest_users_and_pre_auth_keys");
    srv.running.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_nodes_and_registrations() -> Result<()> {
    let srv = ApiServer::start().await?;
    let key = srv.api_key("1h").await;
    let mut t = Transcript::new(&srv, &key);
    t.call("POST", "/api/v1/user", Some(json!({ "name": "alice" }))).await?;
    let first = srv.pending(1).await;
    t.hide(&first, "[auth id 1]");
    t.call("POST", "/api/v1/auth/register", Some(json!({ "authId": first, "user": "alice" }))).await?;
    let second = srv.pending(2).await;
    t.hide(&second, "[auth id 2]");
    t.call("POST", &format!("/api/v1/node/register?user=alice&key={second}"), None).await?;
    t.call("GET", "/api/v1/node/1", None).await?;
    t.call("GET", "/api/v1/node?user=alice", None).await?;
    t.call("POST", "/api/v1/node/1/rename/laptop", None).await?;
    t.call("POST", "/api/v1/node/1/expire?expiry=2030-01-31T12:00:00Z", None).await?;
    t.call("POST", "/api/v1/node/1/expire?disableExpiry=true", None).await?;
    let third = srv.pending(3).await;
    t.hide(&third, "[auth id 3]");
    t.call("POST", "/api/v1/auth/approve", Some(json!({ "authId": third }))).await?;
    t.call("POST", "/api/v1/auth/reject", Some(json!({ "authId": third }))).await?;
    t.call("POST", "/api/v1/node/1/approve_routes", Some(json!({ "routes": ["10.1.0.0/16", "0.0.0.0/0"] }))).await?;
    t.call("POST", "/api/v1/node/2/tags", Some(json!({ "tags": ["tag:web", "tag:ci"] }))).await?;
    t.call("POST", "/api/v1/node/backfillips?confirmed=true", None).await?;
    t.call("POST", "/api/v1/policy/check", Some(json!({ "policy": r#"{"acls": []}"# }))).await?;
    t.call("PUT", "/api/v1/policy", Some(json!({ "policy": r#"{"tagOwners": {"tag:web": []}, "acls": []}"# }))).await?;
    t.call("GET", "/api/v1/policy", None).await?;
    let body =
        json!({ "user": "alice", "key": "hskey-authreq-debugnode", "name": "made-up", "routes": ["10.9.0.0/24"] });
    let made = t.call("POST", "/api/v1/debug/node", Some(body)).await?;
    for (field, label) in [("machineKey", "mkey:[random]"), ("nodeKey", "nodekey:[random]")] {
        t.hide(made["node"][field].as_str().unwrap_or("-"), label);
    }
    t.call("DELETE", "/api/v1/user/1", None).await?;
    t.call("DELETE", "/api/v1/node/2", None).await?;
    t.call("GET", "/api/v1/node", None).await?;
    t.snapshot("rest_nodes_and_registrations");
    srv.running.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_keys() -> Result<()> {
    let srv = ApiServer::start().await?;
    let key = srv.api_key("1h").await;
    let mut t = Transcript::new(&srv, &key);
    let created = t.call("POST", "/api/v1/apikey", Some(json!({ "expiration": "2030-01-31T12:00:00Z" }))).await?;
    let second = created["apiKey"].as_str().context("the new key")?.to_string();
    t.hide(prefix_of(&second), "[second key prefix]");
    t.call("GET", "/api/v1/apikey", None).await?;
    t.call_as(Some(&second), "second", "GET", "/api/v1/apikey", None).await?;
    t.call("POST", "/api/v1/apikey/expire", Some(json!({ "prefix": prefix_of(&second) }))).await?;
    t.call_as(Some(&second), "second", "GET", "/api/v1/apikey", None).await?;
    t.call("POST", "/api/v1/apikey", Some(json!({}))).await?;
    let third = srv.running.state.api_keys().await?.last().context("the third key")?.clone();
    let days = (third.expiration - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&days), "a key without an expiration is valid for 90 days, not {days}");
    t.hide(&third.prefix, "[third key prefix]");
    t.call("DELETE", &format!("/api/v1/apikey/{}", prefix_of(&second)), None).await?;
    t.call("DELETE", "/api/v1/apikey/-?id=3", None).await?;
    t.call("GET", "/api/v1/apikey", None).await?;
    t.snapshot("rest_api_keys");
    srv.running.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors() -> Result<()> {
    let srv = ApiServer::start().await?;
    let key = srv.api_key("1h").await;
    let expired = srv.api_key("1h").await;
    srv.ok(&srv.config, &["apikeys", "expire", "-p", prefix_of(&expired)]).await;
    let mut t = Transcript::new(&srv, &key);
    t.hide(prefix_of(&expired), "[expired key prefix]");
    t.call_as(None, "none", "GET", "/api/v1/user", None).await?;
    let wrong = format!("{}{}", &key[..key.len() - 1], if key.ends_with('a') { 'b' } else { 'a' });
    t.call_as(Some(&wrong), "right prefix, wrong secret", "GET", "/api/v1/user", None).await?;
    t.call_as(Some("hskey-api-nonsense"), "malformed", "GET", "/api/v1/user", None).await?;
    t.call_as(Some(&expired), "expired", "GET", "/api/v1/user", None).await?;
    t.call_as(None, "none", "GET", "/api/v1/nothing", None).await?;
    t.call("GET", "/api/v1/nothing", None).await?;
    t.call("PATCH", "/api/v1/user", None).await?;
    t.call("GET", "/api/v1/node/abc", None).await?;
    t.call("GET", "/api/v1/node/99", None).await?;
    t.call("DELETE", "/api/v1/user/-1", None).await?;
    t.call("POST", "/api/v1/user/99/rename/x", None).await?;
    t.call("POST", "/api/v1/user", Some(json!({ "name": "bad name" }))).await?;
    t.call("POST", "/api/v1/user", Some(json!({ "name": "alice" }))).await?;
    t.call("POST", "/api/v1/user", Some(json!({ "name": "alice" }))).await?;
    t.call("POST", "/api/v1/user", Some(json!(["alice"]))).await?;
    t.call("POST", "/api/v1/user/1/rename/Not%20Valid", None).await?;
    t.call("POST", "/api/v1/preauthkey", Some(json!({ "user": "99" }))).await?;
    t.call("POST", "/api/v1/preauthkey", Some(json!({ "user": "alice" }))).await?;
    t.call("POST", "/api/v1/preauthkey", Some(json!({ "user": "1", "aclTags": ["ci"] }))).await?;
    t.call("POST", "/api/v1/preauthkey", Some(json!({ "user": "1", "expiration": "tomorrow" }))).await?;
    t.call("POST", "/api/v1/preauthkey/expire", Some(json!({ "id": "42" }))).await?;
    t.call("GET", "/api/v1/node?user=nobody", None).await?;
    t.call("POST", "/api/v1/node/1/rename/x", None).await?;
    t.call("POST", "/api/v1/node/1/expire?disableExpiry=maybe", None).await?;
    t.call("POST", "/api/v1/auth/register", Some(json!({ "authId": "bogus", "user": "alice" }))).await?;
    t.call("POST", "/api/v1/auth/register", Some(json!({ "user": "alice" }))).await?;
    t.call("POST", "/api/v1/apikey/expire", Some(json!({}))).await?;
    t.call("POST", "/api/v1/apikey/expire", Some(json!({ "prefix": "nope" }))).await?;
    t.call("DELETE", "/api/v1/apikey/nope", None).await?;
    t.call("POST", "/api/v1/apikey", Some(json!({ "expiration": "soon" }))).await?;
    t.call("POST", "/api/v1/node/1/approve_routes", Some(json!({ "routes": ["10.0.0.0/33"] }))).await?;
    t.call("POST", "/api/v1/node/99/approve_routes", Some(json!({ "routes": ["10.0.0.0/8"] }))).await?;
    t.call("POST", "/api/v1/node/1/tags", Some(json!({ "tags": ["web"] }))).await?;
    t.call("POST", "/api/v1/node/99/tags", Some(json!({ "tags": ["tag:web"] }))).await?;
    t.call("POST", "/api/v1/node/backfillips", None).await?;
    t.call("POST", "/api/v1/policy/check", Some(json!({ "policy": r#"{"acls": [{"action": "drop"}]}"# }))).await?;
    t.call("PUT", "/api/v1/policy", Some(json!({ "policy": "{" }))).await?;
    let body = json!({ "user": "nobody", "key": "hskey-authreq-x", "name": "n" });
    t.call("POST", "/api/v1/debug/node", Some(body)).await?;
    t.call("POST", "/api/v1/debug/node", Some(json!({ "user": "alice", "key": "bogus", "name": "n" }))).await?;
    t.snapshot("rest_errors");
    srv.running.stop().await;
    Ok(())
}

/// The same commands through the CLI in each output format; `mode` keeps names apart.
async fn cli_session(srv: &ApiServer, c: &Config, mode: &str) -> Result<()> {
    let carol = format!("carol-{mode}");
    let created: Value =
        serde_json::from_str(&srv.ok(c, &["users", "create", &carol, "-e", "c@example.com", "-o", "json"]).await)?;
    assert_eq!(created["name"], carol.as_str());
    let line = srv.ok(c, &["users", "list", "-n", &carol, "-o", "json-line"]).await;
    assert!(!line.contains('\n'), "{line}");
    assert_eq!(serde_json::from_str::<Value>(&line)?[0]["email"], "c@example.com");
    let yaml = srv.ok(c, &["users", "list", "-n", &carol, "-o", "yaml"]).await;
    assert!(yaml.starts_with("- id: ") && yaml.contains(&format!("  name: {carol}\n")), "{yaml}");
    let table = srv.ok(c, &["users", "list", "-n", &carol]).await;
    assert!(table.starts_with("ID | Name | Username") && table.contains(&carol), "{table}");

    let key = srv.ok(c, &["preauthkeys", "create", "-u", &carol, "--reusable", "-o", "yaml"]).await;
    assert!(key.contains("reusable: true") && key.contains("key: hskey-auth-"), "{key}");
    let auth_id = srv.pending(if mode == "local" { 41 } else { 42 }).await;
    let node = srv.ok(c, &["auth", "register", "--auth-id", &auth_id, "-u", &carol]).await;
    assert!(node.starts_with("Node host-4") && node.ends_with(" registered"), "{node}");
    let nodes: Value = serde_json::from_str(&srv.ok(c, &["nodes", "list", "-u", &carol, "-o", "json"]).await)?;
    let id = nodes[0]["id"].as_u64().context("a node id")?.to_string();
    let routes = srv.ok(c, &["nodes", "list-routes", "-i", &id]).await;
    assert!(routes.starts_with("ID | Hostname | Approved | Available | Serving (Primary)"), "{routes}");
    assert_eq!(
        srv.ok(c, &["nodes", "delete", "-i", &id, "--force", "-o", "json-line"]).await,
        r#"{"Result":"Node deleted"}"#
    );

    let api_key: String = serde_json::from_str(&srv.ok(c, &["apikeys", "create", "-e", "2h", "-o", "json"]).await)?;
    let prefix = prefix_of(&api_key);
    let listed: Value = serde_json::from_str(&srv.ok(c, &["apikeys", "list", "-o", "json"]).await)?;
    let entry = listed.as_array().into_iter().flatten().find(|k| k["prefix"] == prefix).context("listed")?;
    let id = entry["id"].as_u64().context("an id")?.to_string();
    let yaml = srv.ok(c, &["api", "ls", "-o", "yaml"]).await;
    assert!(yaml.contains(&format!("prefix: {prefix}")), "{yaml}");
    let table = srv.ok(c, &["apikey", "list"]).await;
    assert!(table.starts_with("ID | Prefix") && table.contains(prefix), "{table}");
    assert_eq!(srv.ok(c, &["apikeys", "expire", "-p", prefix, "-o", "yaml"]).await, "{}");
    assert_eq!(srv.ok(c, &["apikeys", "delete", "-i", &id]).await, "Key deleted");
    let gone = srv.cli(c, &["apikeys", "delete", "-i", &id]).await.expect_err("already deleted");
    assert_eq!(gone.to_string(), format!("cannot delete the API key: API key with id {id} not found"));

    let bad = srv.cli(c, &["users", "create", "bad name", "-o", "json"]).await.expect_err("an invalid name");
    assert!(matches!(&bad, CliError::Request { status, .. } if status.code() == Code::InvalidArgument), "{bad:?}");
    assert_eq!(srv.ok(c, &["health", "-o", "json-line"]).await, r#"{"database_connectivity":true}"#);
    assert_eq!(srv.ok(c, &["users", "destroy", "-n", &carol, "--force"]).await, "User destroyed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_locally_and_remotely_in_every_format() -> Result<()> {
    let srv = ApiServer::start().await?;
    srv.ok(&srv.config, &["users", "create", "dave"]).await;
    cli_session(&srv, &srv.config, "local").await?;
    let key = srv.api_key("1h").await;
    let remote = srv.remote(&key);
    cli_session(&srv, &remote, "remote").await?;
    for format in ["json", "json-line", "yaml"] {
        let args = ["users", "list", "-o", format];
        assert_eq!(srv.ok(&srv.config, &args).await, srv.ok(&remote, &args).await, "same answer in {format}");
    }

    let wrong = srv.remote(&format!("{}{}", &key[..key.len() - 1], if key.ends_with('a') { 'b' } else { 'a' }));
    let refused = srv.cli(&wrong, &["users", "list"]).await.expect_err("a wrong key");
    assert_eq!(refused.to_string(), "cannot list users: invalid API key");
    let keyless = srv.remote("");
    assert!(matches!(srv.cli(&keyless, &["users", "list"]).await, Err(CliError::MissingApiKey(_))));
    let mut tls_to_plaintext = srv.remote(&key);
    tls_to_plaintext.cli.address = srv.grpc_addr.to_string();
    tls_to_plaintext.cli.insecure = true;
    let err = srv.cli(&tls_to_plaintext, &["users", "list"]).await.expect_err("TLS to a plaintext listener");
    assert!(matches!(err, CliError::RemoteUnreachable { .. }), "{err:?}");
    srv.running.stop().await;
    Ok(())
}

/// A TLS-terminating proxy with a self-signed certificate in front of `target`.
async fn tls_proxy(target: SocketAddr) -> Result<SocketAddr> {
    let mut tls = headscale::tls::self_signed_config(&["127.0.0.1".to_string()])?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let (Ok(mut front), Ok(mut back)) = (acceptor.accept(tcp).await, TcpStream::connect(target).await) {
                    let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
                }
            });
        }
    });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_tls_with_its_own_certificate() -> Result<()> {
    let srv = ApiServer::start_with(|_| {}).await?;
    let key = srv.api_key("1h").await;
    let mut c = srv.remote(&key);
    c.cli.insecure = true;
    c.cli.address = format!("https://{}", srv.grpc_addr);
    assert_eq!(srv.ok(&c, &["health"]).await, "The server is healthy");
    c.cli.insecure = false;
    let err = srv.cli(&c, &["health"]).await.expect_err("a self-signed certificate is not trusted");
    assert!(matches!(&err, CliError::RemoteUnreachable { reason, .. } if reason.contains("certificate")), "{err}");

    // The main listener, verified against the server's own certificate.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&srv.config.tls_cert_path)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(srv.running.listen_addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await?;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    srv.running.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_cli_speaks_tls_through_a_proxy() -> Result<()> {
    let srv = ApiServer::start().await?;
    let key = srv.api_key("1h").await;
    let proxy = tls_proxy(srv.grpc_addr).await?;
    let mut c = srv.remote(&key);
    c.cli.insecure = true;
    for address in [format!("https://{proxy}"), proxy.to_string()] {
        c.cli.address = address;
        assert_eq!(srv.ok(&c, &["health"]).await, "The server is healthy", "{}", c.cli.address);
    }
    c.cli.insecure = false;
    let err = srv.cli(&c, &["health"]).await.expect_err("a self-signed certificate is not trusted");
    assert!(matches!(&err, CliError::RemoteUnreachable { reason, .. } if reason.contains("certificate")), "{err}");
    srv.running.stop().await;
    Ok(())
}
