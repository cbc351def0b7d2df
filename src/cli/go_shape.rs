//! The machine output of Headscale's CLI, which scripts parse: Headscale prints the generated
//! Go structs of `headscale.v1` with Go's `encoding/json` (`-o json` indented with tabs,
//! `-o json-line` on one line) or `gopkg.in/yaml.v3` (`-o yaml`). That fixes the shape:
//!
//! - JSON names a field by its proto name (`machine_key`) and leaves out every field that holds
//!   its zero value (`""`, `0`, `false`, no message, no element); 64-bit ids are numbers,
//!   enums their numbers, and a time is `{"seconds": …, "nanos": …}` (a `Timestamp` message).
//!   `<`, `>`, `&`, U+2028 and U+2029 in strings are written as `\u` escapes.
//! - YAML names a field by its Go name in lower case (`machinekey`, `ipaddresses`) and writes
//!   every field: an absent message is `null`, an empty list `[]`.
//! - A list with no element at the top (an empty `nodes list`) is a nil slice: `null` in
//!   JSON, `[]` in YAML. A Go map is written with its keys sorted.
//!
//! [`Go`] holds a value in that model; [`ToGo`] builds it from the protobuf messages.

use prost_types::Timestamp;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::grpc::pb;
use crate::version::VersionInfo;

/// A value as Go's encoders see a `headscale.v1` struct.
#[derive(Debug, Clone, PartialEq)]
pub enum Go {
    Str(String),
    Bool(bool),
    Uint(u64),
    Int(i64),
    /// A pointer to a generated struct: its fields by proto name (each `omitempty`), or `None`
    /// for a nil pointer.
    Message(Option<Vec<(&'static str, Go)>>),
    /// A hand-written struct whose fields are always written, named by their JSON tags.
    Struct(Vec<(&'static str, Go)>),
    /// A slice: `None` is nil (what protobuf decoding leaves for no element).
    List(Option<Vec<Go>>),
    /// A `map[string]string` (Headscale prints a few results this way).
    Map(Vec<(String, String)>),
}

impl Go {
    /// A struct with these fields.
    pub fn message(fields: Vec<(&'static str, Go)>) -> Go {
        Go::Message(Some(fields))
    }

    /// A repeated string field.
    pub fn strings(items: &[String]) -> Go {
        Go::List((!items.is_empty()).then(|| items.iter().cloned().map(Go::Str).collect()))
    }

    /// A repeated message field.
    pub fn list<T: ToGo>(items: &[T]) -> Go {
        Go::List((!items.is_empty()).then(|| items.iter().map(ToGo::to_go).collect()))
    }

    /// A slice the CLI built itself, which is never nil (`[]` when empty).
    pub fn built_list<T: ToGo>(items: &[T]) -> Go {
        Go::List(Some(items.iter().map(ToGo::to_go).collect()))
    }

    /// A `map[string]string` with one entry.
    pub fn result(key: &str, value: &str) -> Go {
        Go::Map(vec![(key.to_string(), value.to_string())])
    }

    /// A pointer that may be nil.
    pub fn optional<T: ToGo>(value: Option<&T>) -> Go {
        value.map_or(Go::Message(None), ToGo::to_go)
    }

    /// Go's zero value for the type: what `omitempty` leaves out.
    fn is_zero(&self) -> bool {
        match self {
            Go::Str(s) => s.is_empty(),
            Go::Bool(b) => !b,
            Go::Uint(n) => *n == 0,
            Go::Int(n) => *n == 0,
            Go::Message(m) => m.is_none(),
            Go::Struct(_) => false,
            Go::List(items) => items.as_ref().is_none_or(Vec::is_empty),
            Go::Map(entries) => entries.is_empty(),
        }
    }
}

/// A [`Go`] value serialized as `encoding/json` sees it (before its HTML escaping, see
/// [`json_text`]): fields in declaration order, zero fields left out.
struct AsJson<'a>(&'a Go);

impl Serialize for AsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Go::Str(v) => s.serialize_str(v),
            Go::Bool(v) => s.serialize_bool(*v),
            Go::Uint(v) => s.serialize_u64(*v),
            Go::Int(v) => s.serialize_i64(*v),
            Go::Message(None) => s.serialize_none(),
            Go::Message(Some(fields)) => {
                let present: Vec<_> = fields.iter().filter(|(_, v)| !v.is_zero()).collect();
                let mut map = s.serialize_map(Some(present.len()))?;
                for (k, v) in present {
                    map.serialize_entry(k, &AsJson(v))?;
                }
                map.end()
            }
            Go::Struct(fields) => s.collect_map(fields.iter().map(|(k, v)| (k, AsJson(v)))),
            Go::List(None) => s.serialize_none(),
            Go::List(Some(items)) => s.collect_seq(items.iter().map(AsJson)),
            Go::Map(entries) => s.collect_map(sorted(entries)),
        }
    }
}

/// A [`Go`] value serialized as `yaml.v3` sees it: every field, under its lower-case Go name.
struct AsYaml<'a>(&'a Go);

impl Serialize for AsYaml<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Go::Message(Some(fields)) | Go::Struct(fields) => {
                s.collect_map(fields.iter().map(|(k, v)| (go_yaml_name(k), AsYaml(v))))
            }
            Go::List(items) => s.collect_seq(items.iter().flatten().map(AsYaml)),
            other => AsJson(other).serialize(s),
        }
    }
}

/// A map's entries in key order, as Go's encoders write maps.
fn sorted(entries: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut entries: Vec<_> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    entries.sort_unstable();
    entries
}

/// The name yaml.v3 gives a field: its Go name in lower case (`IpAddresses`, generated for
/// `ip_addresses`, is `ipaddresses`; `BuildTime`, tagged `buildTime` for JSON, `buildtime`).
fn go_yaml_name(proto_name: &str) -> String {
    proto_name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

/// YAML text as `yaml.v3` writes the value's fields and values (the layout is serde_yaml's).
pub fn yaml_text(value: &Go) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&AsYaml(value)).map(|s| s.trim_end().to_string())
}

/// JSON text as `encoding/json` writes it: indented with tabs or on one line, with `<`, `>`,
/// `&`, U+2028 and U+2029 escaped. Those characters can only occur inside strings, so
/// replacing them in the finished text escapes exactly the strings.
pub fn json_text(value: &Go, indent: bool) -> Result<String, serde_json::Error> {
    let text = if indent {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        AsJson(value).serialize(&mut serde_json::Serializer::with_formatter(&mut out, formatter))?;
        String::from_utf8_lossy(&out).into_owned()
    } else {
        serde_json::to_string(&AsJson(value))?
    };
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    Ok(escaped)
}

/// A message in [`Go`]'s model.
pub trait ToGo {
    fn to_go(&self) -> Go;
}

impl ToGo for Timestamp {
    fn to_go(&self) -> Go {
        Go::message(vec![("seconds", Go::Int(self.seconds)), ("nanos", Go::Int(i64::from(self.nanos)))])
    }
}

impl ToGo for pb::User {
    fn to_go(&self) -> Go {
        Go::message(vec![
            ("id", Go::Uint(self.id)),
            ("name", Go::Str(self.name.clone())),
            ("created_at", Go::optional(self.created_at.as_ref())),
            ("display_name", Go::Str(self.display_name.clone())),
            ("email", Go::Str(self.email.clone())),
            ("provider_id", Go::Str(self.provider_id.clone())),
            ("provider", Go::Str(self.provider.clone())),
            ("profile_pic_url", Go::Str(self.profile_pic_url.clone())),
        ])
    }
}

impl ToGo for pb::PreAuthKey {
    fn to_go(&self) -> Go {
        Go::message(vec![
            ("user", Go::optional(self.user.as_ref())),
            ("id", Go::Uint(self.id)),
            ("key", Go::Str(self.key.clone())),
            ("reusable", Go::Bool(self.reusable)),
            ("ephemeral", Go::Bool(self.ephemeral)),
            ("used", Go::Bool(self.used)),
            ("expiration", Go::optional(self.expiration.as_ref())),
            ("created_at", Go::optional(self.created_at.as_ref())),
            ("acl_tags", Go::strings(&self.acl_tags)),
        ])
    }
}

impl ToGo for pb::ApiKey {
    fn to_go(&self) -> Go {
        Go::message(vec![
            ("id", Go::Uint(self.id)),
            ("prefix", Go::Str(self.prefix.clone())),
            ("expiration", Go::optional(self.expiration.as_ref())),
            ("created_at", Go::optional(self.created_at.as_ref())),
            ("last_seen", Go::optional(self.last_seen.as_ref())),
        ])
    }
}

impl ToGo for pb::Node {
    fn to_go(&self) -> Go {
        Go::message(vec![
            ("id", Go::Uint(self.id)),
            ("machine_key", Go::Str(self.machine_key.clone())),
            ("node_key", Go::Str(self.node_key.clone())),
            ("disco_key", Go::Str(self.disco_key.clone())),
            ("ip_addresses", Go::strings(&self.ip_addresses)),
            ("name", Go::Str(self.name.clone())),
            ("user", Go::optional(self.user.as_ref())),
            ("last_seen", Go::optional(self.last_seen.as_ref())),
            ("expiry", Go::optional(self.expiry.as_ref())),
            ("pre_auth_key", Go::optional(self.pre_auth_key.as_ref())),
            ("created_at", Go::optional(self.created_at.as_ref())),
            ("register_method", Go::Int(i64::from(self.register_method))),
            ("given_name", Go::Str(self.given_name.clone())),
            ("online", Go::Bool(self.online)),
            ("approved_routes", Go::strings(&self.approved_routes)),
            ("available_routes", Go::strings(&self.available_routes)),
            ("subnet_routes", Go::strings(&self.subnet_routes)),
            ("tags", Go::strings(&self.tags)),
        ])
    }
}

impl ToGo for VersionInfo {
    fn to_go(&self) -> Go {
        let text = |s: &str| Go::Str(s.to_string());
        Go::Struct(vec![
            ("version", text(self.version)),
            ("commit", text(self.commit)),
            ("buildTime", text(self.build_time)),
            (
                "go",
                Go::Struct(vec![
                    ("version", text(self.go.version)),
                    ("os", text(self.go.os)),
                    ("arch", text(self.go.arch)),
                ]),
            ),
            ("dirty", Go::Bool(self.dirty)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> pb::User {
        pb::User {
            id: 1,
            name: "alice".into(),
            created_at: Some(Timestamp { seconds: 1_700_000_000, nanos: 500 }),
            email: "a<b>&c@example.com".into(),
            ..Default::default()
        }
    }

    #[test]
    fn json_leaves_out_zero_fields_and_names_fields_as_the_proto_does() {
        let node = pb::Node {
            id: 18_446_744_073_709_551_615,
            machine_key: "mkey:00".into(),
            ip_addresses: vec!["100.64.0.1".into()],
            user: Some(alice()),
            register_method: pb::RegisterMethod::AuthKey as i32,
            ..Default::default()
        };
        let text = json_text(&node.to_go(), false).expect("encodes");
        assert_eq!(
            text,
            concat!(
                r#"{"id":18446744073709551615,"machine_key":"mkey:00","ip_addresses":["100.64.0.1"],"#,
                r#""user":{"id":1,"name":"alice","created_at":{"seconds":1700000000,"nanos":500},"#,
                r#""email":"a\u003cb\u003e\u0026c@example.com"},"register_method":1}"#
            )
        );
    }

    #[test]
    fn indented_json_uses_tabs_and_an_empty_list_is_null() {
        let key = pb::ApiKey { id: 2, prefix: "abc".into(), ..Default::default() };
        assert_eq!(json_text(&key.to_go(), true).expect("encodes"), "{\n\t\"id\": 2,\n\t\"prefix\": \"abc\"\n}");
        assert_eq!(json_text(&Go::list::<pb::Node>(&[]), true).expect("encodes"), "null");
        assert_eq!(json_text(&Go::built_list::<pb::Node>(&[]), true).expect("encodes"), "[]");
        assert_eq!(json_text(&Go::message(vec![]), true).expect("encodes"), "{}");
        assert_eq!(yaml_text(&Go::list::<pb::Node>(&[])).expect("encodes"), "[]");
    }

    #[test]
    fn yaml_writes_every_field_under_its_lower_case_go_name() {
        let key = pb::PreAuthKey { id: 3, user: Some(alice()), ..Default::default() };
        let yaml = yaml_text(&key.to_go()).expect("encodes");
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(v["id"], serde_yaml::Value::from(3u64));
        assert_eq!(v["reusable"], serde_yaml::Value::Bool(false));
        assert_eq!(v["expiration"], serde_yaml::Value::Null);
        assert_eq!(v["acltags"], serde_yaml::Value::Sequence(vec![]));
        assert_eq!(v["user"]["createdat"]["seconds"], serde_yaml::Value::from(1_700_000_000i64));
        assert_eq!(v["user"]["profilepicurl"], serde_yaml::Value::String(String::new()));
    }

    #[test]
    fn hand_written_structs_keep_zero_fields() {
        let v = Go::Struct(vec![("buildTime", Go::Str(String::new())), ("dirty", Go::Bool(false))]);
        assert_eq!(json_text(&v, false).expect("encodes"), r#"{"buildTime":"","dirty":false}"#);
        assert_eq!(yaml_text(&v).expect("encodes"), "buildtime: ''\ndirty: false");
    }

    #[test]
    fn maps_are_written_in_key_order() {
        let map = Go::Map(vec![("b".into(), "2".into()), ("a".into(), "1".into())]);
        assert_eq!(json_text(&map, false).expect("encodes"), r#"{"a":"1","b":"2"}"#);
    }
}
