//! The REST route table, read from the `google.api.http` options of the service's methods in
//! the compiled descriptor set, so the paths and verbs are exactly those of the contract.
//! Matching follows grpc-gateway: literal segments win over variables, and variables are
//! percent-decoded.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

/// The service the table is built for.
pub const SERVICE: &str = "headscale.v1.HeadscaleService";

/// The route table could not be built from the descriptors.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The descriptor set does not decode.
    #[error("the API descriptor set is invalid: {0}")]
    Descriptor(#[from] prost_reflect::DescriptorError),
    /// A name the table needs is missing from the descriptors.
    #[error("the API descriptors have no {0}")]
    Missing(&'static str),
    /// A method's `google.api.http` option uses a form this table does not support.
    #[error("method {method}: unsupported HTTP rule: {message}")]
    Unsupported { method: String, message: String },
}

/// One path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A variable bound to the request field of this (proto) name.
    Field(String),
}

/// A method's REST binding.
#[derive(Debug, Clone)]
pub struct Route {
    verb: Method,
    segments: Vec<Segment>,
    /// `body: "*"`: the request body is the JSON request message (less the path fields).
    pub body: bool,
    /// The method it calls.
    pub method: MethodDescriptor,
}

/// The values of a path's variables, by request field name.
pub type PathValues = Vec<(String, String)>;

/// What a request's verb and path lead to.
#[derive(Debug)]
pub enum Found<'a> {
    /// A route, with the values of its path variables.
    Route(&'a Route, PathValues),
    /// The path exists for other verbs only.
    WrongVerb,
    /// No route has this path.
    Nothing,
}

/// Every REST route of the service.
#[derive(Debug)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// The routes of [`SERVICE`] in an encoded `FileDescriptorSet` (with its imports).
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Routes, RouteError> {
        let pool = DescriptorPool::decode(bytes)?;
        let service = pool.get_service_by_name(SERVICE).ok_or(RouteError::Missing("HeadscaleService"))?;
        let http = pool.get_extension_by_name("google.api.http").ok_or(RouteError::Missing("google.api.http"))?;
        let mut routes = Vec::new();
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            if let Value::Message(rule) = options.get_extension(&http).as_ref() {
                routes.push(route(&method, rule)?);
            }
        }
        Ok(Routes { routes })
    }

    /// The route for a verb and path, preferring the template with the most literal segments.
    pub fn find(&self, verb: &Method, path: &str) -> Found<'_> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut best: Option<(&Route, PathValues)> = None;
        let mut other_verb = false;
        for route in &self.routes {
            let Some(params) = route.bind(&parts) else { continue };
            if route.verb != *verb {
                other_verb = true;
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| route.literals() > b.literals()) {
                best = Some((route, params));
            }
        }
        match best {
            Some((route, params)) => Found::Route(route, params),
            None if other_verb => Found::WrongVerb,
            None => Found::Nothing,
        }
    }

    /// Every route, for tests and listings: verb, template and method name.
    pub fn list(&self) -> impl Iterator<Item = (String, String, String)> + '_ {
        self.routes.iter().map(|r| {
            let template: Vec<String> = r
                .segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.clone(),
                    Segment::Field(f) => format!("{{{f}}}"),
                })
                .collect();
            (r.verb.to_string(), format!("/{}", template.join("/")), r.method.name().to_string())
        })
    }
}

impl Route {
    /// How many segments of the template are literal.
    fn literals(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
    }

    /// The path variables if `parts` fit the template; values are percent-decoded.
    fn bind(&self, parts: &[&str]) -> Option<PathValues> {
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Field(_) if part.is_empty() => return None,
                Segment::Field(f) => params.push((f.clone(), percent_decode(part, false))),
            }
        }
        Some(params)
    }
}

/// A method's route from its `HttpRule`.
fn route(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Route, RouteError> {
    let unsupported = |message: String| RouteError::Unsupported { method: method.name().to_string(), message };
    let verbs = [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ];
    let (verb, template) = verbs
        .into_iter()
        .find(|(name, _)| rule.has_field_by_name(name))
        .and_then(|(name, verb)| Some((verb, rule.get_field_by_name(name)?.as_str()?.to_string())))
        .ok_or_else(|| unsupported("no get, put, post, delete or patch pattern".into()))?;
    let body = rule.get_field_by_name("body").and_then(|b| b.as_str().map(str::to_string)).unwrap_or_default();
    if !body.is_empty() && body != "*" {
        return Err(unsupported(format!("body {body:?} (only \"*\" is supported)")));
    }
    let path =
        template.strip_prefix('/').ok_or_else(|| unsupported(format!("template {template:?} is not absolute")))?;
    let segments = path
        .split('/')
        .map(|s| match s.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
            Some(field) if method.input().get_field_by_name(field).is_some() => Ok(Segment::Field(field.to_string())),
            Some(field) => Err(unsupported(format!("variable {field:?} is not a request field"))),
            None => Ok(Segment::Literal(s.to_string())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Route { verb, segments, body: body == "*", method: method.clone() })
}

/// Decodes `%XX` escapes (and `+` as a space in query strings); invalid UTF-8 is replaced.
pub fn percent_decode(text: &str, plus_as_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) if plus_as_space => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::FILE_DESCRIPTOR_SET;

    fn routes() -> Routes {
        Routes::from_descriptor_set(FILE_DESCRIPTOR_SET).expect("the table builds")
    }

    fn method(found: Found<'_>) -> (String, Vec<(String, String)>) {
        match found {
            Found::Route(r, params) => (r.method.name().to_string(), params),
            other => panic!("expected a route, got {other:?}"),
        }
    }

    #[test]
    fn every_method_has_a_route() {
        let table = routes();
        assert_eq!(table.list().count(), 29);
        assert!(table.list().any(|r| r == ("DELETE".into(), "/api/v1/apikey/{prefix}".into(), "DeleteApiKey".into())));
        assert!(table.list().any(|r| r == ("PUT".into(), "/api/v1/policy".into(), "SetPolicy".into())));
    }

    #[test]
    fn literals_win_over_variables() {
        let table = routes();
        assert_eq!(method(table.find(&Method::POST, "/api/v1/node/register")).0, "RegisterNode");
        assert_eq!(method(table.find(&Method::POST, "/api/v1/node/backfillips")).0, "BackfillNodeIPs");
        assert_eq!(method(table.find(&Method::POST, "/api/v1/apikey/expire")).0, "ExpireApiKey");
        let (name, params) = method(table.find(&Method::GET, "/api/v1/node/12"));
        assert_eq!((name.as_str(), params), ("GetNode", vec![("node_id".to_string(), "12".to_string())]));
        let (name, params) = method(table.find(&Method::POST, "/api/v1/user/3/rename/new%20name"));
        assert_eq!(name, "RenameUser");
        assert_eq!(params, vec![("old_id".into(), "3".into()), ("new_name".into(), "new name".into())]);
    }

    #[test]
    fn unknown_paths_and_verbs_are_told_apart() {
        let table = routes();
        assert!(matches!(table.find(&Method::PATCH, "/api/v1/user"), Found::WrongVerb));
        assert!(matches!(table.find(&Method::GET, "/api/v1/nothing"), Found::Nothing));
        assert!(matches!(table.find(&Method::GET, "/api/v1/node/"), Found::Nothing), "variables are never empty");
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb%20c+d", false), "a/b c+d");
        assert_eq!(percent_decode("a+b%", true), "a b%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }
}
