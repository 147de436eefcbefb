//! `authz_http`: Envoy's HTTP ext_authz and forward-auth (nginx `auth_request`, Traefik
//! ForwardAuth). Any method and path is a check of that method and path; with
//! `forward_auth.headers` set to `"nginx"` (`X-Original-Method`/`X-Original-URI`) or
//! `"traefik"` (`X-Forwarded-Method`/`X-Forwarded-Uri`), the check is of the method and
//! URI those headers name, and each must then be present exactly once
//! ([`crate::request`]). Without a family, no override header is read.
//!
//! - allow: `200`, the forward headers, and `x-envoy-auth-headers-to-remove` naming the
//!   forward headers (and spoofed spellings of them) a client may have sent itself;
//! - deny: the decision's status, its headers ([`crate::decision::Denial::headers`]) and
//!   a short JSON body.
//!
//! Every request is answered from its head; a body is never read.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

use crate::authz::{Authorizer, RequestView};
use crate::decision::{Allowed, Decision, DenyReason};
use crate::metrics::Listener;
use crate::request;

/// Answers one check.
pub async fn answer(
    authz: &Authorizer,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, _body) = req.into_parts();
    // A framing error is not a decision: answered, never counted or shadowed.
    if request::check_host(&parts.headers).is_err() {
        return super::denial_response(&DenyReason::InvalidRequest.into());
    }
    let view = RequestView {
        method: parts.method.as_str(),
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers: &parts.headers,
        peer: Default::default(),
    };
    let verdict = authz.check(Listener::AuthzHttp, &view).await;
    match &verdict.decision {
        Decision::Allow(a) => allow(a),
        Decision::Deny(d) => super::denial_response(d),
    }
}

/// An allow as an ext_authz / forward-auth answer.
fn allow(a: &Allowed) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    let headers = resp.headers_mut();
    for (name, value) in &a.forward_headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    let mut remove = String::new();
    for name in a.removals() {
        if !remove.is_empty() {
            remove.push(',');
        }
        remove.push_str(name);
    }
    if !remove.is_empty()
        && let Ok(v) = http::HeaderValue::from_str(&remove)
    {
        headers.insert("x-envoy-auth-headers-to-remove", v);
    }
    resp
}
