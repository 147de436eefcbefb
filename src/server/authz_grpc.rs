//! `authz_grpc`: Envoy's gRPC external authorization service,
//! `envoy.service.auth.v3.Authorization/Check` (types from the `envoy-types` crate).
//! The request seen by Envoy is read from `attributes.request.http` (method, path with
//! query, headers — or `header_map` when Envoy sends raw headers), checked by the one
//! [`Authorizer`], and the decision is encoded here and nowhere else:
//!
//! - allow: `status.code` OK and an `OkHttpResponse` whose `headers` set the forward
//!   headers (overwriting, never appending, so a client-sent copy cannot survive next to
//!   them), whose `headers_to_remove` names the forward-header names the client may have
//!   sent and that this decision does not set; the `CheckResponse`'s `dynamic_metadata`
//!   carries the verified claims as a `google.protobuf.Struct`, which Envoy publishes
//!   under the `envoy.filters.http.ext_authz` namespace (for access logs, later filters);
//! - deny: `status.code` = the decision's gRPC code (UNAUTHENTICATED, PERMISSION_DENIED,
//!   INVALID_ARGUMENT or UNAVAILABLE) and a `DeniedHttpResponse` with the HTTP status,
//!   `WWW-Authenticate`, `cache-control: no-store` and the short JSON body that
//!   `authz_http` sends.
//!
//! Endpoint: `POST /envoy.service.auth.v3.Authorization/Check` (gRPC over HTTP/2).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{ListValue, NullValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use serde_json::Value as Json;
use tonic::{Request, Response, Status};

use crate::authz::{Authorizer, RequestView};
use crate::decision::{Allowed, Decision, Denial};
use crate::metrics::Listener;
use crate::token::extract::Headers;

/// Largest `CheckRequest` / `CheckResponse` accepted or sent. Envoy's own limit on
/// request headers is 60 KiB by default and tokens are 8 KiB by default, so a check is
/// far below this; the bound keeps one stream from buffering without limit.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The gRPC code of an allowed check.
const OK: i32 = 0;

/// The `Authorization` service over the one authorizer.
#[derive(Debug, Clone)]
pub struct AuthzService {
    authz: Arc<Authorizer>,
}

/// The headers of the checked request as Envoy sent them: the lower-cased `headers` map
/// (repeated headers already merged with `,`), or the raw `header_map` list when Envoy
/// runs with `encode_raw_headers`.
#[derive(Debug)]
struct CheckHeaders<'a> {
    merged: &'a HashMap<String, String>,
    raw: &'a [HeaderValue],
}

// === impl AuthzService ===

impl AuthzService {
    /// A service answering with `authz`'s decisions.
    pub fn new(authz: Arc<Authorizer>) -> Self {
        Self { authz }
    }

    /// The tonic service, with the message size bounds applied.
    pub fn into_server(self) -> AuthorizationServer<Self> {
        AuthorizationServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let check = request.into_inner();
        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        // A check without HTTP attributes is still judged by the authorizer (as a
        // request without a token), so that no decision is made here.
        let empty_map = HashMap::new();
        let headers = CheckHeaders {
            merged: http.map_or(&empty_map, |h| &h.headers),
            raw: http
                .and_then(|h| h.header_map.as_ref())
                .map_or(&[][..], |m| &m.headers[..]),
        };
        let method = http.map_or("", |h| h.method.as_str());
        let path = match http.map(|h| h.path.as_str()) {
            Some(p) if !p.is_empty() => p,
            _ => "/",
        };
        let view = RequestView {
            method,
            path,
            headers: &headers,
        };
        let verdict = self.authz.check(Listener::AuthzGrpc, &view).await;
        Ok(Response::new(respond(&verdict.decision)))
    }
}

// === impl CheckHeaders ===

impl Headers for CheckHeaders<'_> {
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        if let Some(v) = self.merged.get(name) {
            f(v.as_bytes());
        }
        for h in self.raw {
            if h.key.eq_ignore_ascii_case(name) {
                // Raw headers carry bytes in `raw_value`; `value` is the UTF-8 form.
                f(if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                });
            }
        }
    }
}

/// Encodes a decision as a `CheckResponse`.
pub fn respond(decision: &Decision) -> CheckResponse {
    match decision {
        Decision::Allow(a) => allow(a),
        Decision::Deny(d) => deny(d),
    }
}

fn allow(a: &Allowed) -> CheckResponse {
    let headers = a
        .forward_headers
        .iter()
        .map(|(name, value)| overwrite(name, value))
        .collect();
    // Names this decision sets are overwritten above; the others must go, so that a
    // client cannot pass off, say, its own `x-auth-claims` on a request whose token
    // does not produce one (or on an anonymous request, which produces none).
    let headers_to_remove = a
        .headers_to_remove
        .iter()
        .filter(|name| !a.forward_headers.iter().any(|(set, _)| set == *name))
        .map(|name| name.to_string())
        .collect();
    let metadata = a
        .claims
        .as_ref()
        .and_then(|c| c.to_map())
        .map(|m| to_struct(&m));
    CheckResponse {
        status: Some(rpc::Status {
            code: OK,
            message: String::new(),
            details: Vec::new(),
        }),
        dynamic_metadata: metadata,
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..OkHttpResponse::default()
        })),
    }
}

fn deny(d: &Denial) -> CheckResponse {
    let status = d.reason.http_status();
    let mut headers = Vec::with_capacity(4);
    if let Some(challenge) = d.www_authenticate() {
        headers.push(overwrite("www-authenticate", &challenge));
    }
    if status == 503 {
        headers.push(overwrite("retry-after", "5"));
    }
    headers.push(overwrite("cache-control", "no-store"));
    headers.push(overwrite("content-type", "application/json"));
    CheckResponse {
        status: Some(rpc::Status {
            code: d.reason.grpc_code() as i32,
            message: d.reason.label().to_string(),
            details: Vec::new(),
        }),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            // envoy.type.v3.StatusCode numbers its values by the HTTP status itself.
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body: d.json_body(),
        })),
    }
}

/// A header that replaces any header of the same name (Envoy's `append` defaults to
/// false here, but the explicit action does not depend on that default).
fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// The verified claims as a `google.protobuf.Struct`.
pub fn to_struct(claims: &serde_json::Map<String, Json>) -> Struct {
    Struct {
        fields: claims
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

fn to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(NullValue::NullValue as i32),
        Json::Bool(b) => Kind::BoolValue(*b),
        // protobuf's Value has one number type, a double (as JSON itself).
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(list) => Kind::ListValue(ListValue {
            values: list.iter().map(to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(to_struct(map)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{AllowReason, Claims, DenyReason};
    use base64::Engine as _;

    fn header<'a>(list: &'a [HeaderValueOption], name: &str) -> Option<&'a HeaderValueOption> {
        list.iter()
            .find(|h| h.header.as_ref().is_some_and(|h| h.key == name))
    }

    #[test]
    fn allow_overwrites_forward_headers_and_removes_the_unset_ones() {
        let claims = serde_json::json!({
            "sub": "alice", "exp": 4102444800u64, "aud": ["a", "b"], "admin": false,
            "nested": {"x": null}
        });
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let allowed = Allowed {
            reason: AllowReason::Ok,
            forward_headers: vec![("x-auth-subject".into(), "alice".into())],
            headers_to_remove: vec!["x-auth-subject".into(), "x-auth-claims".into()].into(),
            claims: Some(Claims::new(&payload)),
        };
        let resp = respond(&Decision::Allow(allowed));
        assert_eq!(resp.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
            panic!("not an ok response: {resp:?}");
        };
        let subject = header(&ok.headers, "x-auth-subject").map(|h| h.append_action);
        assert_eq!(
            subject,
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd as i32)
        );
        assert_eq!(ok.headers_to_remove, vec!["x-auth-claims".to_string()]);
        let md = resp.dynamic_metadata.unwrap_or_default();
        assert_eq!(
            md.fields.get("sub").and_then(|v| v.kind.clone()),
            Some(Kind::StringValue("alice".into()))
        );
        assert_eq!(
            md.fields.get("exp").and_then(|v| v.kind.clone()),
            Some(Kind::NumberValue(4102444800.0))
        );
        assert!(matches!(
            md.fields.get("aud").and_then(|v| v.kind.clone()),
            Some(Kind::ListValue(l)) if l.values.len() == 2
        ));
    }

    #[test]
    fn anonymous_allow_removes_every_forward_header() {
        let allowed = Allowed {
            reason: AllowReason::Anonymous,
            forward_headers: Vec::new(),
            headers_to_remove: vec!["x-auth-subject".into(), "x-auth-scopes".into()].into(),
            claims: None,
        };
        let resp = respond(&Decision::Allow(allowed));
        let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
            panic!("not an ok response: {resp:?}");
        };
        assert!(ok.headers.is_empty());
        assert_eq!(
            ok.headers_to_remove,
            vec!["x-auth-subject", "x-auth-scopes"]
        );
        assert!(resp.dynamic_metadata.is_none());
    }

    #[test]
    fn denials_carry_status_challenge_and_grpc_code() {
        let cases = [
            (DenyReason::MissingToken, 401, 16),
            (DenyReason::Expired, 401, 16),
            (DenyReason::InsufficientScope, 403, 7),
            (DenyReason::InvalidRequest, 400, 3),
            (DenyReason::KeysUnavailable, 503, 14),
        ];
        for (reason, http, grpc) in cases {
            let denial = Denial::new(reason);
            let resp = respond(&Decision::Deny(denial.clone()));
            assert_eq!(
                resp.status.as_ref().map(|s| s.code),
                Some(grpc),
                "{reason:?}"
            );
            let Some(HttpResponse::DeniedResponse(d)) = &resp.http_response else {
                panic!("not a denied response: {resp:?}");
            };
            assert_eq!(d.status.as_ref().map(|s| s.code), Some(http), "{reason:?}");
            assert_eq!(d.body, denial.json_body());
            let challenge = header(&d.headers, "www-authenticate")
                .and_then(|h| h.header.as_ref())
                .map(|h| h.value.clone());
            assert_eq!(challenge, denial.www_authenticate(), "{reason:?}");
        }
    }

    #[test]
    fn raw_and_merged_headers_are_both_read() {
        let merged = HashMap::from([("authorization".to_string(), "Bearer a".to_string())]);
        let raw = [HeaderValue {
            key: "Cookie".into(),
            value: String::new(),
            raw_value: b"t=1".to_vec(),
        }];
        let h = CheckHeaders {
            merged: &merged,
            raw: &raw,
        };
        let mut seen = Vec::new();
        h.for_each("authorization", &mut |v| seen.push(v.to_vec()));
        h.for_each("cookie", &mut |v| seen.push(v.to_vec()));
        assert_eq!(seen, vec![b"Bearer a".to_vec(), b"t=1".to_vec()]);
    }
}
