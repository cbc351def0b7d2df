//! The server configuration: Headscale's YAML keys (compatible with its `config-example.yaml`),
//! `HEADSCALE_*` environment overrides, an embedded default for running with no file at all,
//! and validation that names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::duration::serde_text;

mod aliases;
pub mod notices;

/// What went wrong while loading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

/// How addresses are picked from the prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    #[default]
    Sequential,
    Random,
}

/// `prefixes.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prefixes {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
    pub allocation: Allocation,
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes {
            v4: Some("100.64.0.0/10".parse().expect("valid")),
            v6: Some("fd7a:115c:a1e0::/48".parse().expect("valid")),
            allocation: Allocation::Sequential,
        }
    }
}

/// `noise.*`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Noise {
    pub private_key_path: PathBuf,
}

/// `derp.server.*`: the embedded DERP relay and STUN server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DerpServer {
    pub enabled: bool,
    pub region_id: i32,
    pub region_code: String,
    pub region_name: String,
    pub verify_clients: bool,
    pub stun_listen_addr: String,
    pub private_key_path: PathBuf,
    pub automatically_add_embedded_derp_region: bool,
    pub ipv4: String,
    pub ipv6: String,
    /// Serve DERP over TLS on its own port (clients only speak DERP over TLS).
    pub tls_listen_addr: String,
    /// Use a generated self-signed certificate and mark the region `InsecureForTests`.
    pub tls_self_signed: bool,
}

impl Default for DerpServer {
    fn default() -> Self {
        DerpServer {
            enabled: false,
            region_id: 999,
            region_code: "headscale".into(),
            region_name: "Headscale Embedded DERP".into(),
            verify_clients: true,
            stun_listen_addr: "0.0.0.0:3478".into(),
            private_key_path: PathBuf::new(),
            automatically_add_embedded_derp_region: true,
            ipv4: String::new(),
            ipv6: String::new(),
            tls_listen_addr: String::new(),
            tls_self_signed: false,
        }
    }
}

/// `derp.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Derp {
    pub server: DerpServer,
    pub urls: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub auto_update_enabled: bool,
    #[serde(with = "serde_text")]
    pub update_frequency: Duration,
}

impl Default for Derp {
    fn default() -> Self {
        Derp {
            server: DerpServer::default(),
            urls: Vec::new(),
            paths: Vec::new(),
            auto_update_enabled: true,
            update_frequency: Duration::from_secs(3 * 3600),
        }
    }
}

/// `node.ephemeral.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ephemeral {
    #[serde(with = "serde_text")]
    pub inactivity_timeout: Duration,
}

impl Default for Ephemeral {
    fn default() -> Self {
        Ephemeral { inactivity_timeout: Duration::from_secs(120) }
    }
}

/// `node.*`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// Default key expiry of user-owned nodes; zero means never.
    #[serde(with = "serde_text")]
    pub expiry: Duration,
    pub ephemeral: Ephemeral,
    pub routes: Value,
}

/// `database.sqlite.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sqlite {
    pub path: PathBuf,
    pub write_ahead_log: bool,
    pub wal_autocheckpoint: i64,
}

impl Default for Sqlite {
    fn default() -> Self {
        Sqlite { path: PathBuf::new(), write_ahead_log: true, wal_autocheckpoint: 1000 }
    }
}

/// `database.postgres.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Postgres {
    /// A host name or address, or the directory of a unix socket (starting with `/`).
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub pass: String,
    /// `true`/`false`, or a libpq `sslmode`; see `Postgres::ssl_mode`.
    pub ssl: Value,
    /// At most this many connections at once; 0 means no limit.
    pub max_open_conns: u32,
    /// At most this many connections kept open while idle.
    pub max_idle_conns: u32,
    /// An idle connection is closed after this many seconds; 0 means never.
    pub conn_max_idle_time_secs: u64,
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres {
            host: String::new(),
            port: 5432,
            name: String::new(),
            user: String::new(),
            pass: String::new(),
            ssl: Value::Bool(false),
            max_open_conns: 10,
            max_idle_conns: 10,
            conn_max_idle_time_secs: 3600,
        }
    }
}

/// TLS to PostgreSQL, from `database.postgres.ssl`. As in Headscale, `false` is libpq's
/// `disable` and `true` its default, `prefer`; any other text is a libpq `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it (`allow` and `prefer`); the certificate is not checked.
    Prefer,
    /// TLS or nothing; the certificate is not checked.
    Require,
    /// TLS with a certificate signed by a trusted authority, for any name.
    VerifyCa,
    /// TLS with a trusted certificate for the host name.
    VerifyFull,
}

impl Postgres {
    /// The TLS mode `ssl` asks for.
    pub fn ssl_mode(&self) -> Result<SslMode, ConfigError> {
        let text = match &self.ssl {
            Value::Bool(b) => b.to_string(),
            Value::String(s) => s.clone(),
            Value::Null => "false".into(),
            other => {
                return Err(invalid("database.postgres.ssl", format!("{other:?} is not true, false or an sslmode")))
            }
        };
        Ok(match text.as_str() {
            "false" | "False" | "FALSE" | "f" | "F" | "0" | "disable" => SslMode::Disable,
            "true" | "True" | "TRUE" | "t" | "T" | "1" | "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(invalid(
                    "database.postgres.ssl",
                    format!(
                        "{other:?} is not one of true, false, disable, allow, prefer, require, verify-ca, verify-full"
                    ),
                ))
            }
        })
    }
}

/// `database.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    #[serde(rename = "type")]
    pub kind: String,
    pub debug: bool,
    pub gorm: Value,
    pub sqlite: Sqlite,
    pub postgres: Postgres,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            kind: "sqlite".into(),
            debug: false,
            gorm: Value::Null,
            sqlite: Sqlite::default(),
            postgres: Postgres::default(),
        }
    }
}

/// `log.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: String,
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { level: "info".into(), format: "text".into() }
    }
}

/// `policy.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub mode: String,
    pub path: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { mode: "file".into(), path: String::new() }
    }
}

/// `dns.nameservers.*`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Nameservers {
    pub global: Vec<String>,
    pub split: std::collections::BTreeMap<String, Vec<String>>,
}

/// `dns.*`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    pub magic_dns: bool,
    pub base_domain: String,
    pub override_local_dns: bool,
    pub nameservers: Nameservers,
    pub search_domains: Vec<String>,
    pub extra_records: Value,
    pub extra_records_path: String,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            magic_dns: true,
            base_domain: String::new(),
            override_local_dns: true,
            nameservers: Nameservers::default(),
            search_domains: Vec::new(),
            extra_records: Value::Null,
            extra_records_path: String::new(),
        }
    }
}

/// `cli.*`: how the CLI reaches a remote server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cli {
    pub address: String,
    pub api_key: String,
    #[serde(with = "serde_text")]
    pub timeout: Duration,
    pub insecure: bool,
}

impl Default for Cli {
    fn default() -> Self {
        Cli { address: String::new(), api_key: String::new(), timeout: Duration::from_secs(5), insecure: false }
    }
}

/// `logtail.*`, `taildrop.*`: single `enabled` switches.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Switch {
    pub enabled: bool,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server_url: String,
    pub listen_addr: String,
    pub metrics_listen_addr: String,
    pub grpc_listen_addr: String,
    pub grpc_allow_insecure: bool,
    pub trusted_proxies: Vec<String>,
    pub noise: Noise,
    pub prefixes: Prefixes,
    pub derp: Derp,
    pub disable_check_updates: bool,
    pub node: NodeSettings,
    pub database: Database,
    pub acme_url: String,
    pub acme_email: String,
    pub tls_letsencrypt_hostname: String,
    pub tls_letsencrypt_cache_dir: String,
    pub tls_letsencrypt_challenge_type: String,
    pub tls_letsencrypt_listen: String,
    pub tls_cert_path: String,
    pub tls_key_path: String,
    pub log: Log,
    pub policy: Policy,
    pub dns: Dns,
    pub unix_socket: PathBuf,
    pub unix_socket_permission: String,
    pub oidc: Value,
    pub logtail: Switch,
    pub taildrop: Switch,
    pub auto_update: Switch,
    pub randomize_client_port: bool,
    pub cli: Cli,
    pub tuning: Value,
    pub preauth_keys: Value,
    /// Headscale's warnings for the deprecated keys the file used (see `aliases`).
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_url: "http://127.0.0.1:8080".into(),
            listen_addr: "127.0.0.1:8080".into(),
            metrics_listen_addr: String::new(),
            grpc_listen_addr: String::new(),
            grpc_allow_insecure: false,
            trusted_proxies: Vec::new(),
            noise: Noise::default(),
            prefixes: Prefixes::default(),
            derp: Derp::default(),
            disable_check_updates: false,
            node: NodeSettings::default(),
            database: Database::default(),
            acme_url: String::new(),
            acme_email: String::new(),
            tls_letsencrypt_hostname: String::new(),
            tls_letsencrypt_cache_dir: String::new(),
            tls_letsencrypt_challenge_type: String::new(),
            tls_letsencrypt_listen: String::new(),
            tls_cert_path: String::new(),
            tls_key_path: String::new(),
            log: Log::default(),
            policy: Policy::default(),
            dns: Dns::default(),
            unix_socket: PathBuf::from("/var/run/headscale/headscale.sock"),
            unix_socket_permission: "0770".into(),
            oidc: Value::Null,
            logtail: Switch::default(),
            taildrop: Switch { enabled: true },
            auto_update: Switch::default(),
            randomize_client_port: false,
            cli: Cli::default(),
            tuning: Value::Null,
            preauth_keys: Value::Null,
            deprecations: Vec::new(),
        }
    }
}

/// Where a loaded configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// No file was found: the embedded default, with its data directory.
    Embedded(PathBuf),
}

/// The embedded default's data directory: `$HEADSCALE_DATA_DIR`, else
/// `$XDG_DATA_HOME/headscale`, else `~/.local/share/headscale`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HEADSCALE_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("headscale");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/headscale")
}

impl Config {
    /// The configuration a newcomer gets with no file: everything on 127.0.0.1, SQLite and keys
    /// in `data_dir`, the embedded DERP on a self-signed TLS port.
    pub fn embedded(data_dir: &Path) -> Config {
        let mut c = Config::default();
        c.noise.private_key_path = data_dir.join("noise_private.key");
        c.database.sqlite.path = data_dir.join("db.sqlite");
        c.unix_socket = data_dir.join("headscale.sock");
        c.dns.base_domain = "tailnet.internal".into();
        c.derp.server = DerpServer {
            enabled: true,
            region_id: 999,
            private_key_path: data_dir.join("derp_server_private.key"),
            stun_listen_addr: "127.0.0.1:3478".into(),
            ipv4: "127.0.0.1".into(),
            ipv6: "none".into(),
            tls_listen_addr: "127.0.0.1:8443".into(),
            tls_self_signed: true,
            ..DerpServer::default()
        };
        c
    }

    /// Finds and loads the configuration: the given path, else `$HEADSCALE_CONFIG`, else
    /// `/etc/headscale/config.yaml`, `~/.headscale/config.yaml`, `./config.yaml`; with none of
    /// them, the embedded default. `HEADSCALE_*` variables override keys in every case.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Source), ConfigError> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("HEADSCALE_CONFIG").map(PathBuf::from))
            .or_else(|| search_paths().into_iter().find(|p| p.is_file()));
        let (mut tree, source) = match path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(&p).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
                let tree: Value = serde_yaml::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: p.display().to_string(), source })?;
                let tree = if tree.is_null() { Value::Mapping(Default::default()) } else { tree };
                (tree, Source::File(p))
            }
            None => {
                let dir = default_data_dir();
                let tree = serde_yaml::to_value(Config::embedded(&dir)).expect("config serializes");
                (tree, Source::Embedded(dir))
            }
        };
        apply_env(&mut tree, std::env::vars())?;
        let origin = match &source {
            Source::File(p) => p.display().to_string(),
            Source::Embedded(_) => "embedded default".to_string(),
        };
        let deprecations = aliases::take_deprecated(&mut tree);
        let mut config: Config =
            serde_yaml::from_value(tree).map_err(|source| ConfigError::Parse { path: origin, source })?;
        config.deprecations = deprecations;
        config.validate()?;
        Ok((config, source))
    }

    /// Parses YAML text (no environment), then validates it.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let parse = |source| ConfigError::Parse { path: "<text>".into(), source };
        let mut tree: Value = serde_yaml::from_str(text).map_err(parse)?;
        let deprecations = aliases::take_deprecated(&mut tree);
        let mut c: Config = serde_yaml::from_value(tree).map_err(parse)?;
        c.deprecations = deprecations;
        c.validate()?;
        Ok(c)
    }

    /// Checks the values that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url: http::Uri = self
            .server_url
            .parse()
            .map_err(|e| invalid("server_url", format!("{:?} is not a URL: {e}", self.server_url)))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(invalid("server_url", format!("{:?} must start with http:// or https://", self.server_url)));
        }
        let host = url.host().unwrap_or_default();
        if !self.dns.base_domain.is_empty()
            && (host == self.dns.base_domain || host.ends_with(&format!(".{}", self.dns.base_domain)))
        {
            return Err(invalid("dns.base_domain", "must not be the domain of server_url or one of its parents"));
        }
        self.listen_addr
            .parse::<SocketAddr>()
            .map_err(|e| invalid("listen_addr", format!("{:?}: {e}", self.listen_addr)))?;
        if self.noise.private_key_path.as_os_str().is_empty() {
            return Err(invalid("noise.private_key_path", "is required"));
        }
        if self.prefixes.v4.is_none() && self.prefixes.v6.is_none() {
            return Err(invalid("prefixes", "at least one of prefixes.v4 and prefixes.v6 is required"));
        }
        match self.database.kind.as_str() {
            "sqlite" | "sqlite3" => {
                if self.database.sqlite.path.as_os_str().is_empty() {
                    return Err(invalid("database.sqlite.path", "is required with database.type sqlite"));
                }
            }
            "postgres" => {
                let p = &self.database.postgres;
                for (key, value) in [
                    ("database.postgres.host", &p.host),
                    ("database.postgres.name", &p.name),
                    ("database.postgres.user", &p.user),
                ] {
                    if value.is_empty() {
                        return Err(invalid(key, "is required with database.type postgres"));
                    }
                }
                p.ssl_mode()?;
            }
            other => return Err(invalid("database.type", format!("{other:?} is not one of sqlite, postgres"))),
        }
        if self.dns.magic_dns && self.dns.base_domain.is_empty() {
            return Err(invalid("dns.base_domain", "is required when dns.magic_dns is true"));
        }
        if !self.dns.base_domain.is_empty() && !crate::names::is_valid_domain(&self.dns.base_domain) {
            return Err(invalid("dns.base_domain", format!("{:?} is not a valid domain name", self.dns.base_domain)));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", format!("{:?} is not one of text, json", self.log.format)));
        }
        if !matches!(
            self.log.level.as_str(),
            "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "panic" | "disabled"
        ) {
            return Err(invalid("log.level", format!("{:?} is not a log level", self.log.level)));
        }
        if !matches!(self.policy.mode.as_str(), "file" | "database") {
            return Err(invalid("policy.mode", format!("{:?} is not one of file, database", self.policy.mode)));
        }
        if self.node.ephemeral.inactivity_timeout.is_zero() {
            return Err(invalid("node.ephemeral.inactivity_timeout", "must be more than zero"));
        }
        let d = &self.derp.server;
        if d.enabled {
            if d.region_id <= 0 {
                return Err(invalid("derp.server.region_id", "must be a positive number"));
            }
            if d.private_key_path.as_os_str().is_empty() {
                return Err(invalid("derp.server.private_key_path", "is required when derp.server.enabled is true"));
            }
            if d.private_key_path == self.noise.private_key_path {
                return Err(invalid("derp.server.private_key_path", "must differ from noise.private_key_path"));
            }
            d.stun_listen_addr
                .parse::<SocketAddr>()
                .map_err(|e| invalid("derp.server.stun_listen_addr", format!("{:?}: {e}", d.stun_listen_addr)))?;
            if !d.tls_listen_addr.is_empty() {
                d.tls_listen_addr
                    .parse::<SocketAddr>()
                    .map_err(|e| invalid("derp.server.tls_listen_addr", format!("{:?}: {e}", d.tls_listen_addr)))?;
            }
            if d.tls_self_signed && d.tls_listen_addr.is_empty() {
                return Err(invalid("derp.server.tls_self_signed", "needs derp.server.tls_listen_addr"));
            }
            for (key, v) in [("derp.server.ipv4", &d.ipv4), ("derp.server.ipv6", &d.ipv6)] {
                if !v.is_empty() && v != "none" && v.parse::<std::net::IpAddr>().is_err() {
                    return Err(invalid(key, format!("{v:?} is not an IP address")));
                }
            }
        }
        Ok(())
    }

    /// The base domain nodes' names live under (`<given-name>.<base>`).
    pub fn base_domain(&self) -> &str {
        &self.dns.base_domain
    }

    /// The host name (or address) in `server_url`, `localhost` if it has none.
    pub fn server_host(&self) -> String {
        self.server_url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
            .unwrap_or_else(|| "localhost".into())
    }
}

fn search_paths() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/headscale/config.yaml")];
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".headscale/config.yaml"));
    }
    v.push(PathBuf::from("config.yaml"));
    v
}

/// Every leaf key path of the configuration (`derp.server.enabled`, ...), from the defaults.
fn leaf_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, child) in m {
                if let Some(k) = k.as_str() {
                    let p = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                    leaf_paths(child, &p, out);
                }
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// Applies `HEADSCALE_<KEY_WITH_DOTS_AS_UNDERSCORES>` variables to a config tree.
pub fn apply_env(tree: &mut Value, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
    let defaults = serde_yaml::to_value(Config::default()).expect("config serializes");
    let mut paths = Vec::new();
    leaf_paths(&defaults, "", &mut paths);
    let vars: std::collections::HashMap<String, String> = vars.collect();
    for path in paths {
        let var = format!("HEADSCALE_{}", path.replace('.', "_").to_uppercase());
        let Some(raw) = vars.get(&var) else { continue };
        let value: Value = serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        // Paths and plain strings stay strings even when they look like numbers or booleans.
        let value = match defaults_at(&defaults, &path) {
            Some(Value::String(_)) => Value::String(raw.clone()),
            _ => value,
        };
        set_path(tree, &path, value).map_err(|message| ConfigError::Env { var, message })?;
    }
    Ok(())
}

fn defaults_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn set_path(tree: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut cur = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Mapping(Default::default());
        }
        let map = cur.as_mapping_mut().ok_or_else(|| format!("`{}` is not a section", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            map.insert(Value::String(part.to_string()), value);
            return Ok(());
        }
        cur = map.entry(Value::String(part.to_string())).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "server_url: http://127.0.0.1:8080\nlisten_addr: 127.0.0.1:8080\n\
        noise:\n  private_key_path: /tmp/noise.key\ndatabase:\n  type: sqlite\n  sqlite:\n    path: /tmp/db.sqlite\n\
        dns:\n  base_domain: example.internal\n";

    #[test]
    fn minimal_file_loads_with_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.prefixes.v4.unwrap().to_string(), "100.64.0.0/10");
        assert_eq!(c.node.ephemeral.inactivity_timeout, Duration::from_secs(120));
        assert!(c.database.sqlite.write_ahead_log);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml(&format!("{MINIMAL}derp:\n  server:\n    enabeld: true\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("enabeld"), "{msg}");
    }

    #[test]
    fn invalid_value_names_the_key() {
        let err = Config::from_yaml(&MINIMAL.replace("http://127.0.0.1:8080", "ftp://x")).unwrap_err();
        assert!(err.to_string().contains("server_url"), "{err}");
        let err = Config::from_yaml(&format!("{MINIMAL}prefixes:\n  allocation: shuffled\n")).unwrap_err();
        assert!(err.to_string().contains("shuffled"), "{err}");
        let err = Config::from_yaml(&format!("{MINIMAL}node:\n  expiry: 3 days\n")).unwrap_err();
        assert!(err.to_string().contains("3 days"), "{err}");
    }

    #[test]
    fn environment_overrides_keys() {
        let mut tree: Value = serde_yaml::from_str(MINIMAL).unwrap();
        let vars = vec![
            ("HEADSCALE_DERP_SERVER_ENABLED".to_string(), "true".to_string()),
            ("HEADSCALE_SERVER_URL".to_string(), "http://10.1.1.1:9000".to_string()),
            ("HEADSCALE_NODE_EXPIRY".to_string(), "24h".to_string()),
            ("HEADSCALE_DERP_SERVER_REGION_CODE".to_string(), "123".to_string()),
        ];
        apply_env(&mut tree, vars.into_iter()).unwrap();
        let c: Config = serde_yaml::from_value(tree).unwrap();
        assert!(c.derp.server.enabled);
        assert_eq!(c.server_url, "http://10.1.1.1:9000");
        assert_eq!(c.node.expiry, Duration::from_secs(86400));
        assert_eq!(c.derp.server.region_code, "123");
    }

    #[test]
    fn embedded_default_is_valid() {
        Config::embedded(Path::new("/tmp/hs")).validate().unwrap();
    }

    #[test]
    fn postgres_is_set_from_the_environment_with_headscale_defaults() {
        let mut tree: Value = serde_yaml::from_str(MINIMAL).unwrap();
        let vars = [
            ("HEADSCALE_DATABASE_TYPE", "postgres"),
            ("HEADSCALE_DATABASE_POSTGRES_HOST", "10.1.1.3"),
            ("HEADSCALE_DATABASE_POSTGRES_NAME", "headscale"),
            ("HEADSCALE_DATABASE_POSTGRES_USER", "hs"),
            ("HEADSCALE_DATABASE_POSTGRES_PASS", "12345"),
            ("HEADSCALE_DATABASE_POSTGRES_SSL", "require"),
            ("HEADSCALE_DATABASE_POSTGRES_MAX_OPEN_CONNS", "3"),
        ];
        apply_env(&mut tree, vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        let c: Config = serde_yaml::from_value(tree).unwrap();
        c.validate().unwrap();
        let p = &c.database.postgres;
        assert_eq!((c.database.kind.as_str(), p.host.as_str(), p.pass.as_str()), ("postgres", "10.1.1.3", "12345"));
        assert_eq!((p.port, p.max_open_conns, p.max_idle_conns, p.conn_max_idle_time_secs), (5432, 3, 10, 3600));
        assert_eq!(p.ssl_mode().unwrap(), SslMode::Require);
    }

    #[test]
    fn postgres_settings_are_checked() {
        let postgres = |settings: &str| {
            let base = MINIMAL.replace("database:\n  type: sqlite\n  sqlite:\n    path: /tmp/db.sqlite\n", "");
            Config::from_yaml(&format!("{base}database:\n  type: postgres\n  postgres:\n{settings}"))
        };
        let named = "    host: db\n    name: hs\n    user: hs\n";
        assert_eq!(postgres(named).unwrap().database.postgres.ssl_mode().unwrap(), SslMode::Disable);
        let c = postgres(&format!("{named}    ssl: true\n")).unwrap();
        assert_eq!(c.database.postgres.ssl_mode().unwrap(), SslMode::Prefer);
        let err = postgres(&format!("{named}    ssl: sometimes\n")).unwrap_err().to_string();
        assert!(err.contains("database.postgres.ssl") && err.contains("sometimes"), "{err}");
        let err = postgres("    name: hs\n    user: hs\n").unwrap_err().to_string();
        assert!(err.contains("database.postgres.host"), "{err}");
    }
}
