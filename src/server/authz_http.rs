//! `authz_http`: Envoy's HTTP ext_authz and forward-auth (nginx `auth_request`, Traefik
//! ForwardAuth). Any method and path is a check of that method and path;
//! `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik) and `X-Original-Method`/
//! `X-Original-URI` (nginx) override them when present.
//!
//! - allow: `200`, the forward headers, and `x-envoy-auth-headers-to-remove` naming the
//!   forward headers a client may have sent itself;
//! - deny: the decision's status, `WWW-Authenticate` and a short JSON body.
//!
//! Under load, the answers decided in one turn of the worker's event loop are written
//! together (see `turn`).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use super::ActixHeaders;
use crate::authz::{Authorizer, RequestView};
use crate::decision::Decision;
use crate::metrics::Listener;

/// The handler for every method and path.
pub async fn check(req: HttpRequest, authz: web::Data<Arc<Authorizer>>) -> HttpResponse {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let method = header("x-forwarded-method")
        .or_else(|| header("x-original-method"))
        .unwrap_or_else(|| req.method().as_str());
    let path = header("x-forwarded-uri")
        .or_else(|| header("x-original-uri"))
        .unwrap_or_else(|| req.uri().path_and_query().map_or("/", |pq| pq.as_str()));
    let view = RequestView {
        method,
        path,
        headers: &ActixHeaders(headers),
    };
    let verdict = authz.check(Listener::AuthzHttp, &view).await;
    super::turn::coalesce().await;
    respond(&verdict.decision)
}

/// Encodes a decision as an ext_authz / forward-auth HTTP response.
pub fn respond(decision: &Decision) -> HttpResponse {
    match decision {
        Decision::Allow(a) => {
            let mut resp = HttpResponse::Ok();
            for (name, value) in &a.forward_headers {
                if let (Ok(n), Ok(v)) =
                    (HeaderName::try_from(&**name), HeaderValue::from_str(value))
                {
                    resp.insert_header((n, v));
                }
            }
            // Envoy removes these after it has set the allowed upstream headers: a name
            // set above must not be listed (its new value would go); Envoy overwrites
            // the client's copy of it anyway.
            let list: Vec<&str> = a
                .headers_to_remove
                .iter()
                .filter(|h| !a.forward_headers.iter().any(|(set, _)| set == *h))
                .map(|h| &**h)
                .collect();
            if !list.is_empty() {
                resp.insert_header(("x-envoy-auth-headers-to-remove", list.join(",")));
            }
            resp.finish()
        }
        Decision::Deny(d) => {
            let status =
                StatusCode::from_u16(d.reason.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut resp = HttpResponse::build(status);
            if let Some(challenge) = d.www_authenticate() {
                resp.insert_header(("www-authenticate", challenge));
            }
            if status == StatusCode::SERVICE_UNAVAILABLE {
                resp.insert_header(("retry-after", "5"));
            }
            resp.insert_header(("cache-control", "no-store"));
            resp.content_type("application/json").body(d.json_body())
        }
    }
}
