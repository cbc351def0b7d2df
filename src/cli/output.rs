//! What client commands print: the API's JSON shape (lowerCamelCase, 64-bit ids as strings,
//! RFC 3339 times) as pretty JSON, one-line JSON or YAML, and aligned tables for people.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::CliError;
use crate::grpc::{pb, to_datetime};

/// A machine-readable output format (`-o`); human-readable text when none is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Indented JSON.
    Json,
    /// JSON on one line.
    #[value(name = "json-line")]
    JsonLine,
    /// YAML.
    Yaml,
}

/// How an outcome's value is written in a machine format.
type Encoder = Box<dyn Fn(OutputFormat) -> Result<String, CliError> + Send>;

/// The result of a command: a value for the machine formats and the text shown to people.
pub struct Outcome {
    machine: Encoder,
    human: String,
}

impl Outcome {
    /// An outcome whose machine form is `value`, its fields in declaration order.
    pub fn new<T: Serialize + Send + 'static>(value: T, human: impl Into<String>) -> Self {
        Outcome { machine: Box::new(move |format| encode(&value, format)), human: human.into() }
    }

    /// An outcome with no data: `{}` for machines, a message for people.
    pub fn message(human: impl Into<String>) -> Self {
        Outcome::new(serde_json::Value::Object(Default::default()), human)
    }

    /// The text to print in `format`.
    pub fn render(&self, format: Option<OutputFormat>) -> Result<String, CliError> {
        match format {
            None => Ok(self.human.clone()),
            Some(f) => (self.machine)(f),
        }
    }
}

fn encode<T: Serialize + ?Sized>(value: &T, format: OutputFormat) -> Result<String, CliError> {
    let err = |e: &dyn std::fmt::Display| CliError::Encode(e.to_string());
    match format {
        OutputFormat::Json => {
            let mut out = Vec::new();
            let mut ser =
                serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"\t"));
            value.serialize(&mut ser).map_err(|e| err(&e))?;
            String::from_utf8(out).map_err(|e| err(&e))
        }
        OutputFormat::JsonLine => serde_json::to_string(value).map_err(|e| err(&e)),
        OutputFormat::Yaml => serde_yaml::to_string(value).map(|s| s.trim_end().to_string()).map_err(|e| err(&e)),
    }
}

/// An error as printed: its text, or `{"error": …}` in the machine formats.
pub fn format_error(format: Option<OutputFormat>, message: &str) -> String {
    match format {
        None => message.to_string(),
        Some(f) => encode(&serde_json::json!({ "error": message }), f).unwrap_or_else(|_| message.to_string()),
    }
}

fn rfc3339(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().and_then(to_datetime).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// A user in the API's JSON shape.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    display_name: String,
    email: String,
    provider_id: String,
    provider: String,
    profile_pic_url: String,
}

impl From<&pb::User> for UserView {
    fn from(u: &pb::User) -> Self {
        UserView {
            id: u.id.to_string(),
            name: u.name.clone(),
            created_at: rfc3339(&u.created_at),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            provider_id: u.provider_id.clone(),
            provider: u.provider.clone(),
            profile_pic_url: u.profile_pic_url.clone(),
        }
    }
}

/// A pre-auth key in the API's JSON shape.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyView {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserView>,
    id: String,
    key: String,
    reusable: bool,
    ephemeral: bool,
    used: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    acl_tags: Vec<String>,
}

impl From<&pb::PreAuthKey> for PreAuthKeyView {
    fn from(k: &pb::PreAuthKey) -> Self {
        PreAuthKeyView {
            user: k.user.as_ref().map(UserView::from),
            id: k.id.to_string(),
            key: k.key.clone(),
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            expiration: rfc3339(&k.expiration),
            created_at: rfc3339(&k.created_at),
            acl_tags: k.acl_tags.clone(),
        }
    }
}

/// An API key in the API's JSON shape.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    id: String,
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
}

impl From<&pb::ApiKey> for ApiKeyView {
    fn from(k: &pb::ApiKey) -> Self {
        ApiKeyView {
            id: k.id.to_string(),
            prefix: k.prefix.clone(),
            expiration: rfc3339(&k.expiration),
            created_at: rfc3339(&k.created_at),
            last_seen: rfc3339(&k.last_seen),
        }
    }
}

/// The policy and when it was last set, in the API's JSON shape.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

impl From<&pb::GetPolicyResponse> for PolicyView {
    fn from(p: &pb::GetPolicyResponse) -> Self {
        PolicyView { policy: p.policy.clone(), updated_at: rfc3339(&p.updated_at) }
    }
}

/// A node in the API's JSON shape.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    id: String,
    machine_key: String,
    node_key: String,
    disco_key: String,
    ip_addresses: Vec<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_auth_key: Option<PreAuthKeyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    register_method: &'static str,
    given_name: String,
    online: bool,
    approved_routes: Vec<String>,
    available_routes: Vec<String>,
    subnet_routes: Vec<String>,
    tags: Vec<String>,
}

impl From<&pb::Node> for NodeView {
    fn from(n: &pb::Node) -> Self {
        NodeView {
            id: n.id.to_string(),
            machine_key: n.machine_key.clone(),
            node_key: n.node_key.clone(),
            disco_key: n.disco_key.clone(),
            ip_addresses: n.ip_addresses.clone(),
            name: n.name.clone(),
            user: n.user.as_ref().map(UserView::from),
            last_seen: rfc3339(&n.last_seen),
            expiry: rfc3339(&n.expiry),
            pre_auth_key: n.pre_auth_key.as_ref().map(PreAuthKeyView::from),
            created_at: rfc3339(&n.created_at),
            register_method: n.register_method().as_str_name(),
            given_name: n.given_name.clone(),
            online: n.online,
            approved_routes: n.approved_routes.clone(),
            available_routes: n.available_routes.clone(),
            subnet_routes: n.subnet_routes.clone(),
            tags: n.tags.clone(),
        }
    }
}

/// Columns separated by ` | `, each as wide as its widest cell; the first row is the header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join(" | ").trim_end().to_string()
    };
    std::iter::once(line(&mut header.iter().copied()))
        .chain(rows.iter().map(|r| line(&mut r.iter().map(String::as_str))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A time as the tables show it (`2006-01-02 15:04:05`, UTC).
fn human_time(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().and_then(to_datetime).map(|t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// A key's short form as Tailscale prints it: `[` + five base64 characters + `]`.
fn short_key(text: &str) -> String {
    let hex_part = text.split_once(':').map_or(text, |(_, h)| h);
    match hex::decode(hex_part) {
        Ok(raw) if !raw.is_empty() => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            format!("[{}]", &b64[..5.min(b64.len())])
        }
        _ => text.to_string(),
    }
}

/// The users table: ID, Name (display name), Username, Email, Created.
pub fn users_table(users: &[pb::User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.id.to_string(),
                u.display_name.clone(),
                u.name.clone(),
                u.email.clone(),
                human_time(&u.created_at).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "Name", "Username", "Email", "Created"], &rows)
}

/// The pre-auth keys table; the owner is the user, or the tags of a tags-only key.
pub fn pre_auth_keys_table(keys: &[pb::PreAuthKey]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let owner = match &k.user {
                Some(u) => u.name.clone(),
                None => k.acl_tags.join(", "),
            };
            vec![
                k.id.to_string(),
                k.key.clone(),
                k.reusable.to_string(),
                k.ephemeral.to_string(),
                k.used.to_string(),
                human_time(&k.expiration).unwrap_or_else(|| "-".into()),
                human_time(&k.created_at).unwrap_or_default(),
                owner,
            ]
        })
        .collect();
    table(&["ID", "Key/Prefix", "Reusable", "Ephemeral", "Used", "Expiration", "Created", "Owner"], &rows)
}

/// The API keys table: ID, Prefix, Expiration, Created, Last seen.
pub fn api_keys_table(keys: &[pb::ApiKey]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.prefix.clone(),
                human_time(&k.expiration).unwrap_or_else(|| "-".into()),
                human_time(&k.created_at).unwrap_or_default(),
                human_time(&k.last_seen).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["ID", "Prefix", "Expiration", "Created", "Last seen"], &rows)
}

/// The routes table: each node's approved, available and served (primary) routes.
pub fn routes_table(nodes: &[pb::Node]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.approved_routes.join(", "),
                n.available_routes.join(", "),
                n.subnet_routes.join(", "),
            ]
        })
        .collect();
    table(&["ID", "Hostname", "Approved", "Available", "Serving (Primary)"], &rows)
}

/// The nodes table, with expiry judged at `now`.
pub fn nodes_table(nodes: &[pb::Node], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let expired = n.expiry.as_ref().and_then(to_datetime).is_some_and(|e| e <= now);
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.given_name.clone(),
                short_key(&n.machine_key),
                short_key(&n.node_key),
                n.user.as_ref().map(|u| u.name.clone()).unwrap_or_else(|| "-".into()),
                n.tags.join(","),
                n.ip_addresses.join(", "),
                n.pre_auth_key.as_ref().is_some_and(|k| k.ephemeral).to_string(),
                human_time(&n.last_seen).unwrap_or_else(|| "-".into()),
                human_time(&n.expiry).unwrap_or_else(|| "N/A".into()),
                if n.online { "online" } else { "offline" }.to_string(),
                if expired { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Hostname",
            "Name",
            "MachineKey",
            "NodeKey",
            "User",
            "Tags",
            "IP addresses",
            "Ephemeral",
            "Last seen",
            "Expiration",
            "Connected",
            "Expired",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn alice() -> pb::User {
        pb::User {
            id: 1,
            name: "alice".into(),
            created_at: ts(1_700_000_000),
            display_name: "Alice".into(),
            email: "alice@example.com".into(),
            ..Default::default()
        }
    }

    #[test]
    fn json_uses_the_api_shape() {
        let key = pb::PreAuthKey {
            user: Some(alice()),
            id: 18_446_744_073_709_551_615,
            key: "hskey-auth-abc-***".into(),
            reusable: true,
            created_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 500_000_000 }),
            acl_tags: vec!["tag:ci".into()],
            ..Default::default()
        };
        let out = Outcome::new(PreAuthKeyView::from(&key), "");
        let json = out.render(Some(OutputFormat::JsonLine)).expect("renders");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(v["id"], "18446744073709551615");
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20.500Z");
        assert_eq!(v["aclTags"][0], "tag:ci");
        assert_eq!(v["user"]["displayName"], "Alice");
        assert_eq!(v["user"]["createdAt"], "2023-11-14T22:13:20Z");
        assert!(v.get("expiration").is_none());
        assert!(!json.contains('\n'));
        assert!(
            json.starts_with(r#"{"user":{"id":"1","name":"alice","createdAt":"#),
            "fields keep their order: {json}"
        );

        let pretty = out.render(Some(OutputFormat::Json)).expect("renders");
        assert!(pretty.contains("\n\t\"id\": \"18446744073709551615\""), "{pretty}");
        let yaml = out.render(Some(OutputFormat::Yaml)).expect("renders");
        assert!(yaml.contains("reusable: true"), "{yaml}");
    }

    #[test]
    fn node_json_names_the_register_method() {
        let node = pb::Node {
            id: 5,
            register_method: pb::RegisterMethod::AuthKey as i32,
            ip_addresses: vec!["100.64.0.1".into()],
            ..Default::default()
        };
        let v = serde_json::to_value(NodeView::from(&node)).expect("encodes");
        assert_eq!(v["registerMethod"], "REGISTER_METHOD_AUTH_KEY");
        assert_eq!(v["ipAddresses"][0], "100.64.0.1");
        assert_eq!(v["givenName"], "");
        assert!(v.get("user").is_none());
    }

    #[test]
    fn errors_follow_the_output_format() {
        assert_eq!(format_error(None, "boom"), "boom");
        assert_eq!(format_error(Some(OutputFormat::JsonLine), "boom"), r#"{"error":"boom"}"#);
        assert_eq!(format_error(Some(OutputFormat::Yaml), "boom"), "error: boom");
    }

    #[test]
    fn tables_are_aligned() {
        let bob = pb::User { id: 22, name: "bob".into(), created_at: ts(0), ..Default::default() };
        let text = users_table(&[alice(), bob]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID | Name  | Username | Email             | Created");
        assert_eq!(lines[1], "1  | Alice | alice    | alice@example.com | 2023-11-14 22:13:20");
        assert_eq!(lines[2], "22 |       | bob      |                   | 1970-01-01 00:00:00");
    }

    #[test]
    fn node_and_key_tables_show_state() {
        let node = pb::Node {
            id: 1,
            machine_key: format!("mkey:{}", "00".repeat(32)),
            node_key: "nodekey:zz".into(),
            name: "laptop".into(),
            given_name: "laptop".into(),
            user: Some(alice()),
            expiry: ts(10),
            online: true,
            ..Default::default()
        };
        let text = nodes_table(&[node], Utc::now());
        let row = text.lines().nth(1).expect("a row");
        assert!(row.contains("[AAAAA]"), "{row}");
        assert!(row.contains("nodekey:zz"), "{row}");
        assert!(row.contains("online"), "{row}");
        assert!(row.ends_with("yes"), "{row}");

        let key = pb::PreAuthKey {
            id: 4,
            key: "k".into(),
            acl_tags: vec!["tag:a".into(), "tag:b".into()],
            ..Default::default()
        };
        let text = pre_auth_keys_table(&[key]);
        assert!(text.lines().nth(1).expect("a row").ends_with("| tag:a, tag:b"), "{text}");
    }

    #[test]
    fn api_keys_and_routes_tables() {
        let key =
            pb::ApiKey { id: 3, prefix: "abcdefghijkl".into(), expiration: ts(0), created_at: ts(0), last_seen: None };
        let text = api_keys_table(std::slice::from_ref(&key));
        assert_eq!(
            text.lines().next(),
            Some("ID | Prefix       | Expiration          | Created             | Last seen")
        );
        assert_eq!(text.lines().nth(1), Some("3  | abcdefghijkl | 1970-01-01 00:00:00 | 1970-01-01 00:00:00 | -"));
        let v = serde_json::to_value(ApiKeyView::from(&key)).expect("encodes");
        assert_eq!(
            v,
            serde_json::json!({"id": "3", "prefix": "abcdefghijkl", "expiration": "1970-01-01T00:00:00Z", "createdAt": "1970-01-01T00:00:00Z"})
        );

        let node = pb::Node {
            id: 2,
            name: "router".into(),
            approved_routes: vec!["10.0.0.0/8".into()],
            available_routes: vec!["10.0.0.0/8".into(), "0.0.0.0/0".into()],
            subnet_routes: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        let text = routes_table(&[node]);
        assert_eq!(text.lines().nth(1), Some("2  | router   | 10.0.0.0/8 | 10.0.0.0/8, 0.0.0.0/0 | 10.0.0.0/8"));
    }
}
