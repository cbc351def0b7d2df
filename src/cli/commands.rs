//! Running client commands: each one (but `debug`, which needs no server) becomes admin API
//! calls whose answers are turned into an [`Outcome`] for the chosen output format.
//! Destructive commands ask first unless `--force`.

use std::io::{BufRead, IsTerminal, Write};

use chrono::{DateTime, Utc};
use tonic::Status;

use super::client::{connect, Client};
use super::go_shape::{Go, ToGo};
use super::output::{api_keys_table, nodes_table, pre_auth_keys_table, routes_table, users_table, Outcome};
use super::{
    ApiKeySelector, ApiKeysCommand, AuthCommand, Cli, CliError, Command, GenerateCommand, NodesCommand, PolicyCommand,
    PreAuthKeysCommand, UserSelector, UsersCommand,
};
use crate::config::Config;
use crate::db::Db;
use crate::duration::parse_duration;
use crate::grpc::{pb, timestamp};
use crate::state::State;
use crate::tailcfg::PrivateKey;
use crate::version::VersionInfo;

/// Runs a client command and returns the text to print.
pub(super) async fn execute(cli: &Cli, config: &Config) -> Result<String, CliError> {
    let outcome = match &cli.command {
        Command::Serve => return Err(CliError::NotAClientCommand("serve")),
        Command::Configtest => return Err(CliError::NotAClientCommand("configtest")),
        Command::Version => {
            let info = VersionInfo::current();
            Outcome::new(info.to_go(), info.to_string())
        }
        // The script itself, whatever the output format: a shell sources it.
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "headscale", &mut script);
            return Ok(String::from_utf8_lossy(&script).trim_end().to_string());
        }
        Command::Generate { command: GenerateCommand::PrivateKey } => {
            let key = PrivateKey::generate().to_string();
            Outcome::new(Go::result("private_key", &key), key)
        }
        Command::Health => health(&mut connect(config).await?).await?,
        Command::Users { command } => users(&mut connect(config).await?, cli, command).await?,
        Command::Preauthkeys { command } => pre_auth_keys(&mut connect(config).await?, command).await?,
        Command::Nodes { command } => nodes(&mut connect(config).await?, cli, command).await?,
        Command::Auth { command } => auth(&mut connect(config).await?, command).await?,
        Command::Apikeys { command } => api_keys(&mut connect(config).await?, command).await?,
        Command::Policy { command } if command.direct() => policy_direct(config, command).await?,
        Command::Policy { command } => policy(&mut connect(config).await?, command).await?,
        Command::Debug { command } => super::debug::execute(command, config).await?,
    };
    outcome.render(cli.output)
}

/// Wraps a failed call with what was being done.
fn failed(action: &'static str) -> impl FnOnce(Status) -> CliError {
    move |status| CliError::Request { action, status }
}

/// Asks before a destructive change; `--force` answers yes. Without a terminal to ask on, the
/// command fails rather than guess.
async fn confirm(cli: &Cli, what: &str, question: String) -> Result<bool, CliError> {
    if cli.force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NeedsForce(what.to_string()));
    }
    tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr();
        write!(stderr, "{question} [y/N] ").and_then(|()| stderr.flush()).map_err(CliError::Prompt)?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(CliError::Prompt)?;
        Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
    })
    .await
    .map_err(|e| CliError::Prompt(std::io::Error::other(e)))?
}

async fn health(client: &mut Client) -> Result<Outcome, CliError> {
    let resp = client.health(pb::HealthRequest {}).await.map_err(failed("check health"))?.into_inner();
    if !resp.database_connectivity {
        return Err(CliError::Unhealthy);
    }
    Ok(Outcome::new(Go::message(vec![("database_connectivity", Go::Bool(true))]), "The server is healthy"))
}

/// The one user matching a selector.
async fn find_user(client: &mut Client, selector: &UserSelector) -> Result<pb::User, CliError> {
    let (request, described) = match (&selector.identifier, &selector.name) {
        (Some(id), _) => (pb::ListUsersRequest { id: *id, ..Default::default() }, format!("user with id {id}")),
        (None, Some(name)) => {
            (pb::ListUsersRequest { name: name.clone(), ..Default::default() }, format!("user {name:?}"))
        }
        (None, None) => return Err(CliError::Invalid("select a user with --identifier or --name".into())),
    };
    let users = client.list_users(request).await.map_err(failed("find the user"))?.into_inner().users;
    users.into_iter().next().ok_or(CliError::NotFound(described))
}

async fn users(client: &mut Client, cli: &Cli, command: &UsersCommand) -> Result<Outcome, CliError> {
    match command {
        UsersCommand::Create { name, display_name, email, picture_url } => {
            let request = pb::CreateUserRequest {
                name: name.clone(),
                display_name: display_name.clone().unwrap_or_default(),
                email: email.clone().unwrap_or_default(),
                picture_url: picture_url.clone().unwrap_or_default(),
            };
            let user = client.create_user(request).await.map_err(failed("create the user"))?.into_inner().user;
            Ok(Outcome::new(Go::optional(user.as_ref()), "User created"))
        }
        UsersCommand::List { identifier, name, email } => {
            let request = pb::ListUsersRequest {
                id: identifier.unwrap_or_default(),
                name: name.clone().unwrap_or_default(),
                email: email.clone().unwrap_or_default(),
            };
            let users = client.list_users(request).await.map_err(failed("list users"))?.into_inner().users;
            Ok(Outcome::new(Go::list(&users), users_table(&users)))
        }
        UsersCommand::Rename { user, new_name } => {
            let old = find_user(client, user).await?;
            let request = pb::RenameUserRequest { old_id: old.id, new_name: new_name.clone() };
            let user = client.rename_user(request).await.map_err(failed("rename the user"))?.into_inner().user;
            Ok(Outcome::new(Go::optional(user.as_ref()), "User renamed"))
        }
        UsersCommand::Destroy { user } => {
            let user = find_user(client, user).await?;
            let question =
                format!("Do you want to remove the user {:?} ({}) and any associated preauthkeys?", user.name, user.id);
            if !confirm(cli, "destroying a user", question).await? {
                return Ok(Outcome::new(Go::result("Result", "User not destroyed"), "User not destroyed"));
            }
            client.delete_user(pb::DeleteUserRequest { id: user.id }).await.map_err(failed("destroy the user"))?;
            Ok(Outcome::message("User destroyed"))
        }
    }
}

async fn pre_auth_keys(client: &mut Client, command: &PreAuthKeysCommand) -> Result<Outcome, CliError> {
    match command {
        PreAuthKeysCommand::List => {
            let keys = client
                .list_pre_auth_keys(pb::ListPreAuthKeysRequest {})
                .await
                .map_err(failed("list pre-auth keys"))?
                .into_inner()
                .pre_auth_keys;
            Ok(Outcome::new(Go::list(&keys), pre_auth_keys_table(&keys)))
        }
        PreAuthKeysCommand::Create { reusable, ephemeral, expiration, tags, user } => {
            let expires = expires_in(expiration)?;
            let user = match user.as_deref() {
                None => 0,
                Some(text) => match text.parse::<u64>() {
                    Ok(id) => id,
                    Err(_) => {
                        find_user(client, &UserSelector { identifier: None, name: Some(text.to_string()) }).await?.id
                    }
                },
            };
            let request = pb::CreatePreAuthKeyRequest {
                user,
                reusable: *reusable,
                ephemeral: *ephemeral,
                expiration: Some(timestamp(expires)),
                acl_tags: tags.clone(),
            };
            let key = client
                .create_pre_auth_key(request)
                .await
                .map_err(failed("create the pre-auth key"))?
                .into_inner()
                .pre_auth_key;
            let full = key.as_ref().map(|k| k.key.clone()).unwrap_or_default();
            Ok(Outcome::new(Go::optional(key.as_ref()), full))
        }
        PreAuthKeysCommand::Expire { id } => {
            client
                .expire_pre_auth_key(pb::ExpirePreAuthKeyRequest { id: *id })
                .await
                .map_err(failed("expire the pre-auth key"))?;
            Ok(Outcome::message("Key expired"))
        }
        PreAuthKeysCommand::Delete { id } => {
            client
                .delete_pre_auth_key(pb::DeletePreAuthKeyRequest { id: *id })
                .await
                .map_err(failed("delete the pre-auth key"))?;
            Ok(Outcome::message("Key deleted"))
        }
    }
}

/// The time a key created now with a validity of `text` (30m, 24h, 90d) expires.
fn expires_in(text: &str) -> Result<DateTime<Utc>, CliError> {
    let valid_for = parse_duration(text).map_err(|e| CliError::Invalid(e.to_string()))?;
    chrono::Duration::from_std(valid_for)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .ok_or_else(|| CliError::Invalid(format!("expiration {text:?} is too far in the future")))
}

/// Registers a pending node for a user.
async fn register(client: &mut Client, auth_id: &str, user: &str) -> Result<Outcome, CliError> {
    let request = pb::AuthRegisterRequest { user: user.to_string(), auth_id: auth_id.to_string() };
    let node = client.auth_register(request).await.map_err(failed("register the node"))?.into_inner().node;
    let name = node.as_ref().map(|n| n.given_name.clone()).unwrap_or_default();
    Ok(Outcome::new(Go::optional(node.as_ref()), format!("Node {name} registered")))
}

fn parse_expiry(text: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        CliError::Invalid(format!("invalid expiry {text:?} ({e}): use RFC 3339, like 2030-01-31T12:00:00Z"))
    })
}

async fn nodes(client: &mut Client, cli: &Cli, command: &NodesCommand) -> Result<Outcome, CliError> {
    match command {
        NodesCommand::List { user } => {
            let request = pb::ListNodesRequest { user: user.clone().unwrap_or_default() };
            let nodes = client.list_nodes(request).await.map_err(failed("list nodes"))?.into_inner().nodes;
            Ok(Outcome::new(Go::list(&nodes), nodes_table(&nodes, Utc::now())))
        }
        NodesCommand::Register { user, key } => {
            eprintln!("`nodes register` is deprecated: use `headscale auth register --auth-id <id> --user <user>`");
            register(client, key, user).await
        }
        NodesCommand::Expire { identifier, expiry, disable } => {
            let message = match (disable, expiry) {
                (true, _) => "Node expiry disabled",
                (false, Some(_)) => "Node expiration updated",
                (false, None) => "Node expired",
            };
            let expiry = expiry.as_deref().map(parse_expiry).transpose()?.map(timestamp);
            let request = pb::ExpireNodeRequest { node_id: *identifier, expiry, disable_expiry: *disable };
            let node = client.expire_node(request).await.map_err(failed("expire the node"))?.into_inner().node;
            Ok(Outcome::new(Go::optional(node.as_ref()), message))
        }
        NodesCommand::Rename { identifier, new_name } => {
            let request = pb::RenameNodeRequest { node_id: *identifier, new_name: new_name.clone() };
            let node = client.rename_node(request).await.map_err(failed("rename the node"))?.into_inner().node;
            Ok(Outcome::new(Go::optional(node.as_ref()), "Node renamed"))
        }
        NodesCommand::Delete { identifier } => {
            let node = client
                .get_node(pb::GetNodeRequest { node_id: *identifier })
                .await
                .map_err(failed("find the node"))?
                .into_inner()
                .node
                .ok_or_else(|| CliError::NotFound(format!("node {identifier}")))?;
            let question = format!("Do you want to remove the node {}?", node.given_name);
            if !confirm(cli, "deleting a node", question).await? {
                return Ok(Outcome::new(Go::result("Result", "Node not deleted"), "Node not deleted"));
            }
            client.delete_node(pb::DeleteNodeRequest { node_id: node.id }).await.map_err(failed("delete the node"))?;
            Ok(Outcome::new(Go::result("Result", "Node deleted"), "Node deleted"))
        }
        NodesCommand::Tag { identifier, tags } => {
            let request = pb::SetTagsRequest { node_id: *identifier, tags: tags.clone() };
            let node = client.set_tags(request).await.map_err(failed("set the tags"))?.into_inner().node;
            Ok(Outcome::new(Go::optional(node.as_ref()), "Node updated"))
        }
        NodesCommand::ApproveRoutes { identifier, routes } => {
            let routes = routes.iter().filter(|r| !r.is_empty()).cloned().collect();
            let request = pb::SetApprovedRoutesRequest { node_id: *identifier, routes };
            let node =
                client.set_approved_routes(request).await.map_err(failed("approve the routes"))?.into_inner().node;
            Ok(Outcome::new(Go::optional(node.as_ref()), "Node updated"))
        }
        NodesCommand::ListRoutes { identifier } => {
            let nodes = match identifier {
                Some(id) => {
                    let request = pb::GetNodeRequest { node_id: *id };
                    client
                        .get_node(request)
                        .await
                        .map_err(failed("find the node"))?
                        .into_inner()
                        .node
                        .into_iter()
                        .collect()
                }
                None => {
                    let nodes = client
                        .list_nodes(pb::ListNodesRequest::default())
                        .await
                        .map_err(failed("list nodes"))?
                        .into_inner()
                        .nodes;
                    nodes
                        .into_iter()
                        .filter(|n| !(n.approved_routes.is_empty() && n.available_routes.is_empty()))
                        .collect::<Vec<_>>()
                }
            };
            Ok(Outcome::new(Go::built_list(&nodes), routes_table(&nodes)))
        }
        NodesCommand::Backfillips => {
            let question = "Are you sure that you want to assign/remove IPs to/from nodes?".to_string();
            if !confirm(cli, "backfilling addresses", question).await? {
                return Ok(Outcome::new(Go::result("Result", "Nothing changed"), "Nothing changed"));
            }
            let request = pb::BackfillNodeIPsRequest { confirmed: true };
            let changes =
                client.backfill_node_i_ps(request).await.map_err(failed("backfill addresses"))?.into_inner().changes;
            let text = if changes.is_empty() { "No changes".to_string() } else { changes.join("\n") };
            Ok(Outcome::new(Go::message(vec![("changes", Go::strings(&changes))]), text))
        }
    }
}

async fn auth(client: &mut Client, command: &AuthCommand) -> Result<Outcome, CliError> {
    match command {
        AuthCommand::Register { auth_id, user } => register(client, auth_id, user).await,
        AuthCommand::Approve { auth_id } => {
            let request = pb::AuthApproveRequest { auth_id: auth_id.clone() };
            client.auth_approve(request).await.map_err(failed("approve the request"))?;
            Ok(Outcome::message("Auth request approved"))
        }
        AuthCommand::Reject { auth_id } => {
            let request = pb::AuthRejectRequest { auth_id: auth_id.clone() };
            client.auth_reject(request).await.map_err(failed("reject the request"))?;
            Ok(Outcome::message("Auth request rejected"))
        }
    }
}

/// The request fields naming an API key: a prefix or an id.
fn api_key_fields(key: &ApiKeySelector) -> (String, u64) {
    (key.prefix.clone().unwrap_or_default(), key.id.unwrap_or_default())
}

async fn api_keys(client: &mut Client, command: &ApiKeysCommand) -> Result<Outcome, CliError> {
    match command {
        ApiKeysCommand::List => {
            let keys = client
                .list_api_keys(pb::ListApiKeysRequest {})
                .await
                .map_err(failed("list API keys"))?
                .into_inner()
                .api_keys;
            Ok(Outcome::new(Go::list(&keys), api_keys_table(&keys)))
        }
        ApiKeysCommand::Create { expiration } => {
            let request = pb::CreateApiKeyRequest { expiration: Some(timestamp(expires_in(expiration)?)) };
            let key = client.create_api_key(request).await.map_err(failed("create the API key"))?.into_inner().api_key;
            Ok(Outcome::new(Go::Str(key.clone()), key))
        }
        ApiKeysCommand::Expire { key } => {
            let (prefix, id) = api_key_fields(key);
            client
                .expire_api_key(pb::ExpireApiKeyRequest { prefix, id })
                .await
                .map_err(failed("expire the API key"))?;
            Ok(Outcome::message("Key expired"))
        }
        ApiKeysCommand::Delete { key } => {
            let (prefix, id) = api_key_fields(key);
            client
                .delete_api_key(pb::DeleteApiKeyRequest { prefix, id })
                .await
                .map_err(failed("delete the API key"))?;
            Ok(Outcome::message("Key deleted"))
        }
    }
}

/// A policy file's text.
fn read_policy(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::ReadFile { path: path.to_path_buf(), source })
}

async fn policy(client: &mut Client, command: &PolicyCommand) -> Result<Outcome, CliError> {
    match command {
        PolicyCommand::Get { .. } => {
            let resp = client.get_policy(pb::GetPolicyRequest {}).await.map_err(failed("get the policy"))?.into_inner();
            Ok(Outcome::text(resp.policy))
        }
        PolicyCommand::Set { file, .. } => {
            let request = pb::SetPolicyRequest { policy: read_policy(file)? };
            client.set_policy(request).await.map_err(failed("set the policy"))?;
            Ok(Outcome::text("Policy updated."))
        }
        PolicyCommand::Check { file, .. } => {
            let request = pb::CheckPolicyRequest { policy: read_policy(file)? };
            client.check_policy(request).await.map_err(failed("check the policy"))?;
            Ok(Outcome::text("Policy is valid"))
        }
    }
}

/// `policy … --bypass-grpc-and-access-database-directly`: the same operations, on the
/// configured database opened here, with the server running or not.
async fn policy_direct(config: &Config, command: &PolicyCommand) -> Result<Outcome, CliError> {
    let direct = |e: &dyn std::fmt::Display| CliError::Direct(e.to_string());
    let database = config.database.clone();
    let db = tokio::task::spawn_blocking(move || Db::open_configured(&database))
        .await
        .map_err(|e| direct(&e))?
        .map_err(|e| direct(&e))?;
    let state = State::load(std::sync::Arc::new(config.clone()), db).await.map_err(|e| direct(&e))?;
    match command {
        PolicyCommand::Get { .. } => {
            let (policy, at) = state.policy_text().await.map_err(|e| direct(&e))?;
            let resp = pb::GetPolicyResponse { policy, updated_at: at.map(timestamp) };
            Ok(Outcome::text(resp.policy))
        }
        PolicyCommand::Set { file, .. } => {
            state.set_policy(&read_policy(file)?).await.map_err(|e| direct(&e))?;
            Ok(Outcome::text("Policy updated."))
        }
        PolicyCommand::Check { file, .. } => {
            state.check_policy(&read_policy(file)?).map_err(|e| direct(&e))?;
            Ok(Outcome::text("Policy is valid"))
        }
    }
}
