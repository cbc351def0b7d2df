//! The `headscale` command line: Headscale's command tree, aliases and flags. `serve` and
//! `configtest` are run by the main program; every other command is a client of the admin API
//! (on the local unix socket, or remote with `cli.address` and an API key) or needs no server
//! at all, and runs through [`run_client_command`].

mod client;
mod commands;
mod debug;
mod go_shape;
mod output;

use std::io::Write as _;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

pub use debug::DebugCommand;
pub use output::{format_error, OutputFormat};

use crate::config::Config;

/// A client command failed; the text is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The local socket did not answer within `cli.timeout`.
    #[error("cannot reach the headscale server at {}: is `headscale serve` running?", .0.display())]
    Unreachable(PathBuf),
    /// `cli.address` is not something to connect to.
    #[error("invalid cli.address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// Remote mode without a key.
    #[error(
        "cli.address is set to {0:?} but cli.api_key is empty: create a key on the server with \
         `headscale apikeys create` and set cli.api_key or HEADSCALE_CLI_API_KEY"
    )]
    MissingApiKey(String),
    /// The remote server did not answer or the TLS handshake failed.
    #[error(
        "cannot reach the headscale server at {address}: {reason} (a server with grpc_allow_insecure \
         needs cli.address http://HOST:PORT; https:// or a bare HOST:PORT uses TLS)"
    )]
    RemoteUnreachable { address: String, reason: String },
    /// The TLS settings for remote mode could not be built.
    #[error("cannot set up TLS for cli.address: {0}")]
    Tls(String),
    /// A file named on the command line could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    /// The server refused or failed a request.
    #[error("cannot {action}: {}", .status.message())]
    Request { action: &'static str, status: tonic::Status },
    /// An argument could not be used.
    #[error("{0}")]
    Invalid(String),
    /// The selected user or node does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A prompt was needed but there is no terminal to ask on.
    #[error("{0} needs confirmation but standard input is not a terminal; pass --force to skip the prompt")]
    NeedsForce(String),
    /// `serve` or `configtest`, which the main program runs itself.
    #[error("`headscale {0}` is run by the server program, not as a client command")]
    NotAClientCommand(&'static str),
    /// The server answered but cannot reach its database.
    #[error("the server cannot reach its database")]
    Unhealthy,
    /// The confirmation prompt could not be read.
    #[error("cannot read the answer: {0}")]
    Prompt(std::io::Error),
    /// The database could not be opened or read directly.
    #[error("{0}")]
    Direct(String),
    /// The result could not be encoded in the chosen format.
    #[error("cannot write the output: {0}")]
    Encode(String),
    /// Some policy conformance cases failed; `report` lists every category and failure.
    #[error("{report}{failed} policy conformance case(s) failed")]
    ConformanceFailed { report: String, failed: usize },
}

/// `headscale`: a self-hosted Tailscale control server, compatible with Headscale.
#[derive(Debug, Parser)]
#[command(name = "headscale", version = crate::VERSION, about = "headscale - a Tailscale control server")]
pub struct Cli {
    /// The configuration file (default: $HEADSCALE_CONFIG, /etc/headscale/config.yaml,
    /// ~/.headscale/config.yaml, ./config.yaml, else the embedded default).
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: json, json-line or yaml; human-readable when absent.
    #[arg(short = 'o', long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Skip confirmation prompts.
    #[arg(long, global = true)]
    pub force: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch the headscale server.
    Serve,
    /// Test the configuration: build the whole server from it, then exit.
    Configtest,
    /// Print the version.
    Version,
    /// Check that the server is running and can reach its database.
    Health,
    /// Generate the autocompletion script for the specified shell.
    Completion {
        /// The shell: bash, zsh, fish, powershell or elvish.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Generate keys.
    #[command(visible_alias = "gen")]
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
    /// Manage the users of headscale.
    #[command(visible_alias = "user")]
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage the pre-auth keys.
    #[command(visible_aliases = ["preauthkey", "authkey", "pre"])]
    Preauthkeys {
        #[command(subcommand)]
        command: PreAuthKeysCommand,
    },
    /// Manage the nodes of headscale.
    #[command(visible_alias = "node")]
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Complete, approve or reject pending authentication requests.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Manage the API keys for the remote API and CLI.
    #[command(visible_aliases = ["apikey", "api"])]
    Apikeys {
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// Read, replace or check the policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Developer tools that run without a server.
    Debug {
        #[command(subcommand)]
        command: DebugCommand,
    },
}

/// `generate …`
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Generate a private key for the headscale server.
    PrivateKey,
}

/// Selects a user by id or by name (exactly one).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("user").required(true).args(["identifier", "name"])))]
pub struct UserSelector {
    /// The user's id.
    #[arg(short = 'i', long)]
    pub identifier: Option<u64>,
    /// The user's name.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
}

/// `users …`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// The user name.
        name: String,
        /// The display name.
        #[arg(short = 'd', long)]
        display_name: Option<String>,
        /// The e-mail address.
        #[arg(short = 'e', long)]
        email: Option<String>,
        /// The profile picture URL.
        #[arg(short = 'p', long)]
        picture_url: Option<String>,
    },
    /// List users, or the one matching a filter.
    #[command(visible_aliases = ["ls", "show"])]
    #[command(group(ArgGroup::new("filter").args(["identifier", "name", "email"])))]
    List {
        /// Only the user with this id.
        #[arg(short = 'i', long)]
        identifier: Option<u64>,
        /// Only the user with this name.
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Only the user with this e-mail address.
        #[arg(short = 'e', long)]
        email: Option<String>,
    },
    /// Rename a user.
    #[command(visible_alias = "mv")]
    Rename {
        #[command(flatten)]
        user: UserSelector,
        /// The new name.
        #[arg(short = 'r', long)]
        new_name: String,
    },
    /// Delete a user and its pre-auth keys; it must own no nodes.
    #[command(visible_alias = "delete")]
    Destroy {
        #[command(flatten)]
        user: UserSelector,
    },
}

/// `preauthkeys …`
#[derive(Debug, Subcommand)]
pub enum PreAuthKeysCommand {
    /// List the pre-auth keys.
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Create a pre-auth key; the full key is printed only now.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// The key may register more than one node.
        #[arg(long)]
        reusable: bool,
        /// Nodes registered with the key are removed when they stay offline.
        #[arg(long)]
        ephemeral: bool,
        /// How long the key stays valid (30m, 24h, 90d).
        #[arg(short = 'e', long, default_value = "1h")]
        expiration: String,
        /// Tags for the nodes registered with the key (tag:a,tag:b).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// The owner: a user id (or name); omit for a tags-only key.
        #[arg(short = 'u', long)]
        user: Option<String>,
    },
    /// Expire a pre-auth key.
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire {
        /// The key's id.
        #[arg(short = 'i', long)]
        id: u64,
    },
    /// Delete a pre-auth key.
    #[command(visible_aliases = ["del", "rm", "d"])]
    Delete {
        /// The key's id.
        #[arg(short = 'i', long)]
        id: u64,
    },
}

/// `nodes …`
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        /// Only the nodes of this user (by name).
        #[arg(short = 'u', long)]
        user: Option<String>,
    },
    /// Register a pending node (deprecated: use `auth register`).
    #[command(hide = true)]
    Register {
        /// The user the node will belong to.
        #[arg(short = 'u', long)]
        user: String,
        /// The registration id from the node's login URL.
        #[arg(short = 'k', long)]
        key: String,
    },
    /// Expire a node's key now, at a given time, or disable its expiry.
    #[command(visible_aliases = ["logout", "exp", "e"])]
    Expire {
        /// The node's id.
        #[arg(short = 'i', long)]
        identifier: u64,
        /// When the key expires (RFC 3339); now when absent.
        #[arg(short = 'e', long, conflicts_with = "disable")]
        expiry: Option<String>,
        /// The key never expires.
        #[arg(short = 'd', long)]
        disable: bool,
    },
    /// Give a node a new DNS name.
    Rename {
        /// The node's id.
        #[arg(short = 'i', long)]
        identifier: u64,
        /// The new name.
        new_name: String,
    },
    /// Delete a node.
    #[command(visible_alias = "del")]
    Delete {
        /// The node's id.
        #[arg(short = 'i', long)]
        identifier: u64,
    },
    /// Set a node's tags (an admin's tags make it a tagged node).
    #[command(visible_aliases = ["tags", "t"])]
    Tag {
        /// The node's id.
        #[arg(short = 'i', long)]
        identifier: u64,
        /// The tags (tag:a,tag:b).
        #[arg(short = 't', long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Approve the routes a node may serve; none clears its approvals.
    ApproveRoutes {
        /// The node's id.
        #[arg(short = 'i', long)]
        identifier: u64,
        /// The routes (10.0.0.0/8,0.0.0.0/0,::/0), comma-separated.
        #[arg(short = 'r', long, value_delimiter = ',')]
        routes: Vec<String>,
    },
    /// List the routes of one node, or of every node that has any.
    #[command(visible_aliases = ["lsr", "routes"])]
    ListRoutes {
        /// Only this node.
        #[arg(short = 'i', long)]
        identifier: Option<u64>,
    },
    /// Give every node the addresses of the configured prefixes, and drop the others.
    Backfillips,
}

/// Selects an API key by prefix or by id (exactly one).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("key").required(true).args(["prefix", "id"])))]
pub struct ApiKeySelector {
    /// The key's prefix.
    #[arg(short = 'p', long)]
    pub prefix: Option<String>,
    /// The key's id.
    #[arg(short = 'i', long)]
    pub id: Option<u64>,
}

/// `apikeys …`
#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// List the API keys.
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Create an API key; the full key is printed only now.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// How long the key stays valid (30m, 24h, 90d).
        #[arg(short = 'e', long, default_value = "90d")]
        expiration: String,
    },
    /// Expire an API key now.
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire {
        #[command(flatten)]
        key: ApiKeySelector,
    },
    /// Delete an API key.
    #[command(visible_aliases = ["remove", "del"])]
    Delete {
        #[command(flatten)]
        key: ApiKeySelector,
    },
}

/// `policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy the server enforces.
    #[command(visible_aliases = ["show", "view", "fetch"])]
    Get {
        #[command(flatten)]
        direct: Direct,
    },
    /// Replace the policy with a file's (policy.mode must be database).
    #[command(visible_aliases = ["put", "update"])]
    Set {
        /// The HuJSON policy file.
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[command(flatten)]
        direct: Direct,
    },
    /// Check a policy file against the server's users and nodes without applying it.
    Check {
        /// The HuJSON policy file.
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[command(flatten)]
        direct: Direct,
    },
}

impl PolicyCommand {
    /// Whether the command reads the database itself instead of asking the server.
    pub fn direct(&self) -> bool {
        match self {
            PolicyCommand::Get { direct } | PolicyCommand::Set { direct, .. } | PolicyCommand::Check { direct, .. } => {
                direct.bypass_grpc_and_access_database_directly
            }
        }
    }
}

/// `--bypass-grpc-and-access-database-directly`, as Headscale v0.29 spells it.
#[derive(Debug, clap::Args)]
pub struct Direct {
    /// Open the configured database directly instead of asking the server (works while it is
    /// stopped; a policy set this way reaches a running server at its next start).
    #[arg(long)]
    pub bypass_grpc_and_access_database_directly: bool,
}

/// `auth …`
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Complete a pending registration for a user.
    Register {
        /// The registration id from the node's login URL.
        #[arg(long)]
        auth_id: String,
        /// The user the node will belong to.
        #[arg(short = 'u', long)]
        user: String,
    },
    /// Approve a pending authentication request.
    Approve {
        /// The request id.
        #[arg(long)]
        auth_id: String,
    },
    /// Reject a pending authentication request.
    Reject {
        /// The request id.
        #[arg(long)]
        auth_id: String,
    },
}

/// Runs a client command (everything but `serve` and `configtest`) and prints its result on
/// standard output in the chosen format. A reader that stops early (`| head`) is no error.
pub async fn run_client_command(cli: &Cli, config: &Config) -> Result<(), CliError> {
    let text = client_command_output(cli, config).await?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Encode(e.to_string())),
        _ => Ok(()),
    }
}

/// Runs a client command like [`run_client_command`] and returns the text it would print.
pub async fn client_command_output(cli: &Cli, config: &Config) -> Result<String, CliError> {
    commands::execute(cli, config).await
}

/// Prints an error on standard error: its text, or `{"error": …}` in the machine formats.
pub fn report_error(cli: &Cli, err: &CliError) {
    eprintln!("{}", format_error(cli.output, &err.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("headscale").chain(args.iter().copied()))
    }

    #[test]
    fn command_tree_is_valid() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn accepts_headscale_aliases_and_global_flags() {
        let cli = parse(&["pre", "c", "--reusable", "--tags", "tag:a,tag:b", "-u", "1", "-o", "json"]).expect("parses");
        assert_eq!(cli.output, Some(OutputFormat::Json));
        match cli.command {
            Command::Preauthkeys { command: PreAuthKeysCommand::Create { reusable, tags, user, expiration, .. } } => {
                assert!(reusable);
                assert_eq!(tags, ["tag:a", "tag:b"]);
                assert_eq!(user.as_deref(), Some("1"));
                assert_eq!(expiration, "1h");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(&["user", "ls", "-n", "alice"]).expect("parses").command,
            Command::Users { command: UsersCommand::List { .. } }
        ));
        assert!(matches!(
            parse(&["node", "logout", "-i", "3", "--force"]).expect("parses").command,
            Command::Nodes { command: NodesCommand::Expire { identifier: 3, .. } }
        ));
        assert!(parse(&["-o", "json-line", "authkey", "revoke", "-i", "2"]).is_ok());
        assert!(parse(&["gen", "private-key"]).is_ok());
        assert!(parse(&["users", "mv", "-i", "1", "-r", "bob"]).is_ok());
        assert!(parse(&["users", "delete", "-n", "bob", "--force"]).is_ok());
        assert!(parse(&["nodes", "register", "-u", "alice", "-k", "id"]).is_ok());
        assert!(parse(&["auth", "register", "--auth-id", "x", "-u", "alice"]).is_ok());
        assert!(matches!(
            parse(&["api", "c"]).expect("parses").command,
            Command::Apikeys { command: ApiKeysCommand::Create { expiration } } if expiration == "90d"
        ));
        assert!(parse(&["apikey", "revoke", "-p", "abc"]).is_ok());
        assert!(parse(&["apikeys", "remove", "--id", "3"]).is_ok());
        assert!(parse(&["apikeys", "ls", "-o", "yaml"]).is_ok());
        assert!(matches!(
            parse(&["nodes", "approve-routes", "-i", "1", "-r", "10.0.0.0/8,::/0"]).expect("parses").command,
            Command::Nodes { command: NodesCommand::ApproveRoutes { routes, .. } } if routes.len() == 2
        ));
        assert!(parse(&["nodes", "tags", "-i", "1", "-t", "tag:a"]).is_ok());
        assert!(parse(&["nodes", "lsr"]).is_ok());
        assert!(parse(&["nodes", "backfillips", "--force"]).is_ok());
        assert!(parse(&["policy", "fetch"]).is_ok());
        assert!(parse(&["policy", "put", "-f", "policy.hujson"]).is_ok());
    }

    #[test]
    fn remote_settings_come_from_the_environment() {
        let mut tree = serde_yaml::to_value(Config::default()).expect("serializes");
        let vars = [
            ("HEADSCALE_CLI_ADDRESS", "https://headscale.example.com:50443"),
            ("HEADSCALE_CLI_API_KEY", "hskey-api-abcdefghijkl-secret"),
            ("HEADSCALE_CLI_TIMEOUT", "10s"),
            ("HEADSCALE_CLI_INSECURE", "true"),
        ];
        crate::config::apply_env(&mut tree, vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).expect("applies");
        let config: Config = serde_yaml::from_value(tree).expect("a config");
        assert_eq!(config.cli.address, "https://headscale.example.com:50443");
        assert_eq!(config.cli.api_key, "hskey-api-abcdefghijkl-secret");
        assert_eq!(config.cli.timeout, std::time::Duration::from_secs(10));
        assert!(config.cli.insecure);
    }

    #[test]
    fn rejects_bad_flag_combinations() {
        assert!(parse(&["users", "list", "-i", "1", "-n", "alice"]).is_err());
        assert!(parse(&["users", "rename", "-r", "bob"]).is_err());
        assert!(parse(&["users", "destroy"]).is_err());
        assert!(parse(&["nodes", "expire", "-i", "1", "-d", "-e", "2030-01-01T00:00:00Z"]).is_err());
        assert!(parse(&["-o", "xml", "users", "list"]).is_err());
        assert!(parse(&["preauthkeys", "expire"]).is_err());
        assert!(parse(&["apikeys", "expire"]).is_err(), "a prefix or an id is required");
        assert!(parse(&["apikeys", "delete", "-p", "abc", "-i", "1"]).is_err(), "not both");
        assert!(parse(&["policy", "check"]).is_err());
    }
}
