//! JSON transcoding with grpc-gateway's conventions. Requests: the JSON body (for `body: "*"`),
//! then path variables, then (without a body) query parameters, all by field name, read as
//! proto3 JSON (lowerCamelCase or proto names, 64-bit integers as strings, RFC 3339 times,
//! unknown fields ignored). Responses: proto3 JSON with every field present, in field order,
//! `null` for unset messages (grpc-gateway's `EmitUnpopulated`). Errors:
//! `{"code", "message", "details"}`.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use tonic::Status;

use super::routes::percent_decode;

/// A request parameter's text as the JSON value proto3 JSON expects for the field: booleans
/// as booleans, everything else (numbers, enums, times, strings) as a string.
fn parameter(field: &FieldDescriptor, name: &str, text: &str) -> Result<Value, Status> {
    match field.kind() {
        Kind::Bool => text
            .parse::<bool>()
            .map(Value::Bool)
            .map_err(|_| Status::invalid_argument(format!("parameter {name}: {text:?} is not true or false"))),
        _ => Ok(Value::String(text.to_string())),
    }
}

/// Reads a JSON object into a message of type `desc`.
fn message(desc: &MessageDescriptor, object: Map<String, Value>) -> Result<DynamicMessage, serde_json::Error> {
    DynamicMessage::deserialize_with_options(
        desc.clone(),
        Value::Object(object),
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
}

/// Sets `field` in `object` from a request parameter, checking the value on its own so that
/// an error names the parameter.
fn set_parameter(
    desc: &MessageDescriptor,
    object: &mut Map<String, Value>,
    field: &FieldDescriptor,
    text: &str,
) -> Result<(), Status> {
    let name = field.name();
    let value = parameter(field, name, text)?;
    let alone = Map::from_iter([(
        field.json_name().to_string(),
        if field.is_list() { Value::Array(vec![value.clone()]) } else { value.clone() },
    )]);
    message(desc, alone)
        .map_err(|e| Status::invalid_argument(format!("parameter {name}: invalid value {text:?}: {e}")))?;
    let key = field.json_name().to_string();
    if name != key {
        object.remove(name);
    }
    if field.is_list() {
        match object.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![value]),
        }
    } else {
        object.insert(key, value);
    }
    Ok(())
}

/// Builds the request message from its JSON body (when the route takes one), its path
/// variables and, for routes without a body, its query string.
pub fn request(
    desc: &MessageDescriptor,
    body: Option<&[u8]>,
    path: &[(String, String)],
    query: &str,
) -> Result<DynamicMessage, Status> {
    let mut object = match body {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(Status::invalid_argument("the request body must be a JSON object")),
            Err(e) => return Err(Status::invalid_argument(format!("the request body is not valid JSON: {e}"))),
        },
        _ => Map::new(),
    };
    for (name, text) in path {
        let field = desc.get_field_by_name(name).ok_or_else(|| Status::internal(format!("no request field {name}")))?;
        set_parameter(desc, &mut object, &field, text)?;
    }
    if body.is_none() {
        let path_fields: Vec<&str> = path.iter().map(|(n, _)| n.as_str()).collect();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, text) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, text) = (percent_decode(key, true), percent_decode(text, true));
            let field = desc.get_field_by_name(&key).or_else(|| desc.get_field_by_json_name(&key));
            // Unknown parameters are ignored, and path variables are not overridden.
            if let Some(field) = field.filter(|f| !path_fields.contains(&f.name())) {
                set_parameter(desc, &mut object, &field, &text)?;
            }
        }
    }
    message(desc, object.clone()).map_err(|e| invalid_body(desc, &object, e))
}

/// The error for a request that does not decode, naming the first field that does not.
fn invalid_body(desc: &MessageDescriptor, object: &Map<String, Value>, whole: serde_json::Error) -> Status {
    for (key, value) in object {
        let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) else { continue };
        if let Err(e) = message(desc, Map::from_iter([(key.clone(), value.clone())])) {
            return Status::invalid_argument(format!("field {}: invalid value {value}: {e}", field.name()));
        }
    }
    Status::invalid_argument(format!("invalid request: {whole}"))
}

/// A response message as grpc-gateway writes it.
pub fn response(msg: &DynamicMessage) -> Result<Vec<u8>, Status> {
    let options = SerializeOptions::new().skip_default_fields(false);
    let value = msg
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))?;
    serde_json::to_vec(&Shaped { kind: Kind::Message(msg.descriptor()), value: &value })
        .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
}

/// A JSON value laid out by its protobuf type: a message's fields in field order with `null`
/// for unset message fields; other values as they are.
struct Shaped<'a> {
    kind: Kind,
    value: &'a Value,
}

impl Serialize for Shaped<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (Kind::Message(desc), Value::Object(object)) = (&self.kind, self.value) else {
            return self.value.serialize(s);
        };
        // Well-known types have their own JSON forms (a Timestamp is a string).
        if desc.full_name().starts_with("google.protobuf.") {
            return self.value.serialize(s);
        }
        let mut map = s.serialize_map(None)?;
        for field in desc.fields() {
            let name = field.json_name();
            match (object.get(name), field.kind()) {
                (None, Kind::Message(_)) if !field.is_list() && !field.is_map() => {
                    map.serialize_entry(name, &Value::Null)?
                }
                (None, _) => {}
                (Some(value), Kind::Message(entry)) if field.is_map() => {
                    let kind = entry.map_entry_value_field().kind();
                    map.serialize_entry(name, &ShapedMap { kind, value })?
                }
                (Some(value), kind) if field.is_list() => map.serialize_entry(name, &ShapedList { kind, value })?,
                (Some(value), kind) => map.serialize_entry(name, &Shaped { kind, value })?,
            }
        }
        map.end()
    }
}

/// A repeated field's JSON array, each element laid out by the element type.
struct ShapedList<'a> {
    kind: Kind,
    value: &'a Value,
}

impl Serialize for ShapedList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Array(items) = self.value else { return self.value.serialize(s) };
        let mut seq = s.serialize_seq(Some(items.len()))?;
        for value in items {
            seq.serialize_element(&Shaped { kind: self.kind.clone(), value })?;
        }
        seq.end()
    }
}

/// A map field's JSON object, each value laid out by the value type.
struct ShapedMap<'a> {
    kind: Kind,
    value: &'a Value,
}

impl Serialize for ShapedMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Object(entries) = self.value else { return self.value.serialize(s) };
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (key, value) in entries {
            map.serialize_entry(key, &Shaped { kind: self.kind.clone(), value })?;
        }
        map.end()
    }
}

/// The HTTP status grpc-gateway answers a gRPC code with.
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as H;
    use tonic::Code as C;
    match code {
        C::Ok => H::OK,
        C::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        C::InvalidArgument | C::FailedPrecondition | C::OutOfRange => H::BAD_REQUEST,
        C::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        C::NotFound => H::NOT_FOUND,
        C::AlreadyExists | C::Aborted => H::CONFLICT,
        C::PermissionDenied => H::FORBIDDEN,
        C::Unauthenticated => H::UNAUTHORIZED,
        C::ResourceExhausted => H::TOO_MANY_REQUESTS,
        C::Unimplemented => H::NOT_IMPLEMENTED,
        C::Unavailable => H::SERVICE_UNAVAILABLE,
        C::Unknown | C::Internal | C::DataLoss => H::INTERNAL_SERVER_ERROR,
    }
}

/// The error body: `{"code": <gRPC code>, "message": …, "details": []}`.
pub fn error_body(status: &Status) -> Value {
    serde_json::json!({ "code": status.code() as i32, "message": status.message(), "details": [] })
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::grpc::FILE_DESCRIPTOR_SET;

    fn desc(name: &str) -> MessageDescriptor {
        let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("decodes");
        pool.get_message_by_name(&format!("headscale.v1.{name}")).expect("a message")
    }

    fn field(msg: &DynamicMessage, name: &str) -> prost_reflect::Value {
        msg.get_field_by_name(name).expect("a field").into_owned()
    }

    #[test]
    fn requests_merge_body_path_and_query() {
        let body = br#"{"name": "ignored", "displayName": "Alice", "picture_url": "p", "unknown": 1}"#;
        let m = request(&desc("CreateUserRequest"), Some(body), &[], "name=nope").expect("valid");
        assert_eq!(field(&m, "display_name").as_str(), Some("Alice"));
        assert_eq!(field(&m, "picture_url").as_str(), Some("p"), "proto names are accepted");
        assert_eq!(field(&m, "name").as_str(), Some("ignored"), "no query parameters with a body");

        let path = [("old_id".to_string(), "18446744073709551615".to_string()), ("new_name".into(), "bob".into())];
        let m = request(&desc("RenameUserRequest"), None, &path, "oldId=3").expect("valid");
        assert_eq!(field(&m, "old_id").as_u64(), Some(u64::MAX), "path variables win over the query");

        let m = request(
            &desc("ExpireNodeRequest"),
            None,
            &[("node_id".into(), "4".into())],
            "expiry=2030-01-31T12%3A00%3A00Z&disableExpiry=false",
        )
        .expect("valid");
        let expiry = field(&m, "expiry");
        assert_eq!(
            expiry.as_message().and_then(|t| t.get_field_by_name("seconds")).and_then(|s| s.as_i64()),
            Some(1_896_091_200)
        );
        let m = request(&desc("SetTagsRequest"), None, &[], "tags=tag:a&tags=tag%3Ab").expect("valid");
        assert_eq!(field(&m, "tags").as_list().map(<[_]>::len), Some(2));
    }

    #[test]
    fn bad_parameters_are_invalid_arguments() {
        let err =
            request(&desc("GetNodeRequest"), None, &[("node_id".into(), "abc".into())], "").expect_err("not a number");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("parameter node_id: invalid value \"abc\""), "{}", err.message());
        let err = request(&desc("BackfillNodeIPsRequest"), None, &[], "confirmed=yes").expect_err("not a bool");
        assert_eq!(err.message(), "parameter confirmed: \"yes\" is not true or false");
        let err = request(&desc("CreateUserRequest"), Some(b"[1]"), &[], "").expect_err("not an object");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = request(&desc("CreatePreAuthKeyRequest"), Some(br#"{"user": "x"}"#), &[], "").expect_err("bad type");
        assert!(err.message().starts_with(r#"field user: invalid value "x": "#), "{}", err.message());
    }

    #[test]
    fn responses_emit_every_field_in_order() {
        let mut node = DynamicMessage::new(desc("Node"));
        node.set_field_by_name("id", prost_reflect::Value::U64(7));
        node.set_field_by_name("tags", prost_reflect::Value::List(vec![prost_reflect::Value::String("tag:a".into())]));
        let mut resp = DynamicMessage::new(desc("GetNodeResponse"));
        resp.set_field_by_name("node", prost_reflect::Value::Message(node));
        let text = String::from_utf8(response(&resp).expect("encodes")).expect("utf-8");
        assert!(text.starts_with(r#"{"node":{"id":"7","machineKey":"","nodeKey":"","discoKey":"","ipAddresses":[],"name":"","user":null,"lastSeen":null,"expiry":null,"preAuthKey":null,"#), "{text}");
        assert!(text.contains(r#""registerMethod":"REGISTER_METHOD_UNSPECIFIED""#), "{text}");
        assert!(text.ends_with(r#""tags":["tag:a"]}}"#), "{text}");
        let empty = response(&DynamicMessage::new(desc("GetNodeResponse"))).expect("encodes");
        assert_eq!(empty, br#"{"node":null}"#);
    }

    #[test]
    fn codes_map_like_grpc_gateway() {
        assert_eq!(http_status(tonic::Code::NotFound), http::StatusCode::NOT_FOUND);
        assert_eq!(http_status(tonic::Code::FailedPrecondition), http::StatusCode::BAD_REQUEST);
        assert_eq!(http_status(tonic::Code::Unimplemented), http::StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            error_body(&Status::not_found("gone")),
            serde_json::json!({"code": 5, "message": "gone", "details": []})
        );
    }
}
