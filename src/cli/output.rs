//! What client commands print: for machines, the value Headscale's CLI prints, in its shape
//! ([`super::go_shape`]) as indented JSON, one-line JSON or YAML; aligned tables for people.

use base64::Engine;
use chrono::{DateTime, Utc};

use super::go_shape::{json_text, yaml_text, Go};
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

/// The result of a command: a value for the machine formats and the text shown to people.
pub struct Outcome {
    machine: Option<Go>,
    human: String,
}

impl Outcome {
    /// An outcome whose machine form is `value`.
    pub fn new(value: Go, human: impl Into<String>) -> Self {
        Outcome { machine: Some(value), human: human.into() }
    }

    /// An outcome printed as this text in every format (Headscale's `policy` commands).
    pub fn text(text: impl Into<String>) -> Self {
        Outcome { machine: None, human: text.into() }
    }

    /// An outcome whose machine form is an empty response message (`{}`).
    pub fn message(human: impl Into<String>) -> Self {
        Outcome::new(Go::message(Vec::new()), human)
    }

    /// The text to print in `format`.
    pub fn render(&self, format: Option<OutputFormat>) -> Result<String, CliError> {
        match (format, &self.machine) {
            (Some(f), Some(value)) => encode(value, f),
            _ => Ok(self.human.clone()),
        }
    }
}

fn encode(value: &Go, format: OutputFormat) -> Result<String, CliError> {
    let err = |e: &dyn std::fmt::Display| CliError::Encode(e.to_string());
    match format {
        OutputFormat::Json => json_text(value, true).map_err(|e| err(&e)),
        OutputFormat::JsonLine => json_text(value, false).map_err(|e| err(&e)),
        OutputFormat::Yaml => yaml_text(value).map_err(|e| err(&e)),
    }
}

/// An error as printed: its text, or `{"error": …}` in the machine formats.
pub fn format_error(format: Option<OutputFormat>, message: &str) -> String {
    match format {
        None => message.to_string(),
        Some(f) => encode(&Go::result("error", message), f).unwrap_or_else(|_| message.to_string()),
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
    fn outcomes_render_the_machine_value_or_the_text() {
        let out = Outcome::new(Go::list(&[alice()]), "a table");
        assert_eq!(out.render(None).expect("renders"), "a table");
        let line = out.render(Some(OutputFormat::JsonLine)).expect("renders");
        assert!(line.starts_with(r#"[{"id":1,"name":"alice","created_at":{"seconds":1700000000}"#), "{line}");
        assert_eq!(Outcome::message("done").render(Some(OutputFormat::Json)).expect("renders"), "{}");
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
        // A time at the epoch is a Timestamp whose fields are all zero: `{}`, as Go writes it.
        assert_eq!(
            Outcome::new(Go::list(&[key]), "").render(Some(OutputFormat::JsonLine)).expect("renders"),
            r#"[{"id":3,"prefix":"abcdefghijkl","expiration":{},"created_at":{}}]"#
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
