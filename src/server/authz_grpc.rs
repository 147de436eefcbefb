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
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{ListValue, NullValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use prost::Message as _;
use serde_json::Value as Json;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::authz::{Authorizer, RequestView};
use crate::decision::{Allowed, Decision, Denial};
use crate::metrics::Listener;
use crate::request::Peer;
use crate::token::extract::Headers;

/// Largest `CheckRequest` / `CheckResponse` accepted or sent. Envoy's own limit on
/// request headers is 60 KiB by default and tokens are 8 KiB by default, so a check is
/// far below this; the bound keeps one stream from buffering without limit.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The gRPC code of an allowed check.
const OK: i32 = 0;

/// The method's path.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The `Authorization` service over the one authorizer.
#[derive(Debug, Clone)]
pub struct AuthzService {
    authz: Arc<Authorizer>,
}

/// The parts of a `CheckRequest` (`envoy.service.auth.v3`) a decision reads, decoded
/// with the message's own field numbers; every other field (the destination peer, context extensions,
/// metadata, the request's id, host, body, …) is skipped without being allocated.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckInput {
    /// `CheckRequest.attributes`.
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributesInput>,
}

/// `AttributeContext`: `source` and `request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributesInput {
    /// `AttributeContext.source`: the downstream client.
    #[prost(message, optional, tag = "1")]
    pub source: Option<PeerInput>,
    /// `AttributeContext.request`.
    #[prost(message, optional, tag = "4")]
    pub request: Option<RequestInput>,
}

/// `AttributeContext.Peer`: only `certificate`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerInput {
    /// `certificate`: the client's TLS leaf certificate as URL-encoded PEM, empty without
    /// one (Envoy sends it with `include_peer_certificate: true`).
    #[prost(string, tag = "5")]
    pub certificate: String,
}

/// `AttributeContext.Request`: only `http`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestInput {
    /// `AttributeContext.Request.http`.
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpInput>,
}

/// `AttributeContext.HttpRequest`: method, headers, path, raw headers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpInput {
    /// `method`.
    #[prost(string, tag = "2")]
    pub method: String,
    /// `headers` (lower-cased names; repeated headers merged with `,`).
    #[prost(map = "string, string", tag = "3")]
    pub headers: HashMap<String, String>,
    /// `path` (with the query).
    #[prost(string, tag = "4")]
    pub path: String,
    /// `host` (the `:authority`).
    #[prost(string, tag = "5")]
    pub host: String,
    /// `scheme`, as Envoy received the request.
    #[prost(string, tag = "6")]
    pub scheme: String,
    /// `header_map` (`encode_raw_headers`).
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMapInput>,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMapInput {
    /// `headers`.
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// tonic's service wrapper: routes `Check` through [`CheckCodec`].
#[derive(Debug, Clone)]
pub struct AuthorizationServer {
    service: AuthzService,
}

/// Decodes [`CheckInput`], encodes a `CheckResponse`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckCodec;

/// The [`CheckCodec`] encoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerEncoder;

/// The [`CheckCodec`] decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputDecoder;

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

    /// The tonic service.
    pub fn into_server(self) -> AuthorizationServer {
        AuthorizationServer { service: self }
    }

    /// Decides one check.
    pub async fn check(&self, check: CheckInput) -> CheckResponse {
        self.check_traced(check, None).await
    }

    /// Decides one check whose gRPC call carried a W3C trace context (`traceparent`,
    /// `tracestate` metadata: Envoy's span for the ext_authz call, when it traces).
    pub async fn check_traced(
        &self,
        check: CheckInput,
        trace_context: Option<(&str, Option<&str>)>,
    ) -> CheckResponse {
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
        let target = match http.map(|h| h.path.as_str()) {
            Some(p) if !p.is_empty() => p,
            _ => "/",
        };
        fn non_empty(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        let view = RequestView {
            method,
            target,
            headers: &headers,
            peer: Peer {
                scheme: http.and_then(|h| non_empty(&h.scheme)),
                authority: http.and_then(|h| non_empty(&h.host)),
                certificate: check
                    .attributes
                    .as_ref()
                    .and_then(|a| a.source.as_ref())
                    .and_then(|s| non_empty(&s.certificate)),
            },
        };
        let verdict = self
            .authz
            .check_traced(Listener::AuthzGrpc, &view, trace_context)
            .await;
        respond(&verdict.decision)
    }
}

// === impl AuthorizationServer ===

impl NamedService for AuthorizationServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> Service<http::Request<B>> for AuthorizationServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented("only Authorization/Check is served").into_http())
            });
        }
        let service = self.service.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(CheckCodec)
                .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), Some(MAX_MESSAGE_BYTES));
            Ok(grpc.unary(service, req).await)
        })
    }
}

impl UnaryService<CheckInput> for AuthzService {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<CheckInput>) -> Self::Future {
        let service = self.clone();
        let text = |name: &str| {
            let mut values = request.metadata().get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().ok().map(str::to_string),
                _ => None,
            }
        };
        let traceparent = text("traceparent");
        let tracestate = traceparent.as_ref().and_then(|_| text("tracestate"));
        Box::pin(async move {
            let context = traceparent
                .as_deref()
                .map(|parent| (parent, tracestate.as_deref()));
            Ok(Response::new(
                service.check_traced(request.into_inner(), context).await,
            ))
        })
    }
}

// === impl CheckCodec ===

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = CheckInput;
    type Encoder = AnswerEncoder;
    type Decoder = InputDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        InputDecoder
    }
}

impl Encoder for AnswerEncoder {
    type Item = CheckResponse;
    type Error = Status;

    fn encode(&mut self, item: CheckResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

impl Decoder for InputDecoder {
    type Item = CheckInput;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckInput>, Status> {
        CheckInput::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a CheckRequest: {e}")))
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

    fn names(&self, f: &mut dyn FnMut(&str)) {
        for n in self.merged.keys() {
            f(n);
        }
        for h in self.raw {
            f(&h.key);
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
    let headers_to_remove = a.removals().map(str::to_string).collect();
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
    let headers = d
        .headers()
        .iter()
        .map(|(name, value)| overwrite(name, value))
        .collect();
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

    /// A check of `token` as Envoy would send it.
    fn input(token: &str, path: &str) -> CheckInput {
        CheckInput {
            attributes: Some(AttributesInput {
                source: None,
                request: Some(RequestInput {
                    http: Some(HttpInput {
                        method: "GET".into(),
                        headers: [("authorization".to_string(), format!("Bearer {token}"))]
                            .into_iter()
                            .collect(),
                        path: path.into(),
                        host: "api.example".into(),
                        scheme: "https".into(),
                        header_map: None,
                    }),
                }),
            }),
        }
    }

    #[tokio::test]
    async fn a_check_is_judged_on_the_attributes_and_encoded_here() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let tokens: serde_json::Value = std::fs::read_to_string(fixtures.join("tokens.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let token = |name: &str| tokens[name].as_str().unwrap_or_default().to_string();
        let cfg = serde_json::json!({
            "listeners": {"authz_http": null, "authz_grpc": "127.0.0.1:1", "admin": null},
            "issuers": [{
                "name": "main", "issuer": "https://issuer.example", "audiences": ["orders-api"],
                "key_sources": [{"jwks_file": fixtures.join("jwks.json")}]
            }],
            "routes": [{"path_prefix": "/admin", "scopes_all": ["admin"]}]
        });
        let config = crate::config::Config::parse(
            std::path::Path::new("/test/config.json"),
            cfg.to_string().as_bytes(),
        )
        .unwrap();
        let app = crate::app::App::new(
            config,
            tokio::runtime::Handle::current(),
            Arc::new(crate::clock::FixedClock::new(1_800_000_000)),
            Arc::new(crate::metrics::Metrics::new()),
            Arc::new(|_: &str| None),
        );
        let service = AuthzService::new(app.authorizer().clone());
        let good = token("GOOD_RS256");
        let first = service.check(input(&good, "/orders")).await;
        let second = service.check(input(&good, "/orders")).await;
        // The cached second answer is the same allow, claims metadata included.
        assert_eq!(first, second);
        assert_eq!(second.status.as_ref().map(|s| s.code), Some(0));
        assert!(
            second
                .dynamic_metadata
                .is_some_and(|m| m.fields.contains_key("sub"))
        );
        // The same cached token on a route it lacks the scope for is denied.
        let denied = service.check(input(&good, "/admin/x")).await;
        assert_eq!(denied.status.as_ref().map(|s| s.code), Some(7));
        // A path that would resolve elsewhere is refused (Envoy normalises first).
        let unresolved = service.check(input(&good, "/public/../admin")).await;
        assert_eq!(unresolved.status.as_ref().map(|s| s.code), Some(3));
        let expired = service.check(input(&token("EXPIRED"), "/orders")).await;
        assert_eq!(expired.status.as_ref().map(|s| s.code), Some(16));
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
            shadow_deny: None,
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
            shadow_deny: None,
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
            (DenyReason::RuleFailed, 403, 7),
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
