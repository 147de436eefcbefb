//! `authz_http`: Envoy's HTTP ext_authz and forward-auth (nginx `auth_request`, Traefik
//! ForwardAuth). Any method and path is a check of that method and path;
//! `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik) and `X-Original-Method`/
//! `X-Original-URI` (nginx) override them when present.
//!
//! - allow: `200`, the forward headers, and `x-envoy-auth-headers-to-remove` naming the
//!   forward headers a client may have sent itself;
//! - deny: the decision's status, `WWW-Authenticate` and a short JSON body.
//!
//! Served by actix-http's HTTP/1.1 dispatcher directly, with the limits of the other
//! HTTP listeners: every request is the same check, so actix-web's router, extractors
//! and per-request `HttpRequest` have nothing to do. Under load, the answers decided in
//! one turn of the worker's event loop are written together (see `turn`).

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_http::body::BoxBody;
use actix_http::header::{self, HeaderName, HeaderValue};
use actix_http::{HttpMessage as _, HttpService, Request, Response, StatusCode};
use actix_service::fn_service;
use actix_web::web::Bytes;

use super::ActixHeaders;
use crate::authz::{Authorizer, RequestView};
use crate::decision::Decision;
use crate::metrics::Listener;

/// Binds `addr` and returns the bound addresses and the server, not yet polled.
pub fn bind(
    authz: Arc<Authorizer>,
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(Vec<SocketAddr>, actix_server::Server)> {
    let listener = super::tcp_listener(addr)?;
    let local = listener.local_addr()?;
    let builder = actix_server::Server::build()
        .workers(usize::max(workers, 1))
        .max_concurrent_connections(super::MAX_CONNECTIONS_PER_WORKER)
        .shutdown_timeout(super::SHUTDOWN_GRACE.as_secs())
        .disable_signals();
    let signal = builder.graceful_shutdown_signal();
    let server = builder
        .listen("authz_http", listener, move || {
            let authz = authz.clone();
            let signal = signal.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                .client_request_timeout(super::CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(super::CLIENT_DISCONNECT_TIMEOUT)
                .h1_allow_half_closed(true)
                .local_addr(local)
                .h1(fn_service(move |req: Request| {
                    let authz = authz.clone();
                    async move { Ok::<_, Infallible>(check(&authz, &req).await) }
                }))
                .tcp()
        })?
        .run();
    Ok((vec![local], server))
}

/// The headers that name the checked request's method and path (forward-auth).
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// One check: the request's method, path and headers, answered.
async fn check(authz: &Authorizer, req: &Request) -> Response<BoxBody> {
    let headers = req.headers();
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let method = header(&X_FORWARDED_METHOD)
        .or_else(|| header(&X_ORIGINAL_METHOD))
        .unwrap_or_else(|| req.method().as_str());
    let path = header(&X_FORWARDED_URI)
        .or_else(|| header(&X_ORIGINAL_URI))
        .unwrap_or_else(|| req.uri().path_and_query().map_or("/", |pq| pq.as_str()));
    let view = RequestView {
        method,
        path,
        headers: &ActixHeaders(headers),
    };
    let verdict = authz.check(Listener::AuthzHttp, &view).await;
    super::turn::coalesce().await;
    respond(verdict.decision)
}

/// Most forward-header names a worker keeps converted.
const NAMES_KEPT: usize = 64;

thread_local! {
    /// The forward-header names this worker has converted (configured names only, so
    /// few): parsing one allocates, and every allow sends the same ones.
    static NAMES: RefCell<Vec<(Arc<str>, HeaderName)>> = const { RefCell::new(Vec::new()) };
}

/// `name` as a header name, converted once per worker.
fn header_name(name: &Arc<str>) -> Option<HeaderName> {
    NAMES.with_borrow_mut(|names| {
        if let Some((_, n)) = names.iter().find(|(k, _)| k == name) {
            return Some(n.clone());
        }
        let n = HeaderName::try_from(&**name).ok()?;
        if names.len() < NAMES_KEPT {
            names.push((name.clone(), n.clone()));
        }
        Some(n)
    })
}

/// Encodes a decision as an ext_authz / forward-auth HTTP response.
pub fn respond(decision: Decision) -> Response<BoxBody> {
    match decision {
        Decision::Allow(a) => {
            let mut resp = Response::new(StatusCode::OK);
            let h = resp.headers_mut();
            // Envoy removes these after it has set the allowed upstream headers: a name
            // set here must not be listed (its new value would go); Envoy overwrites
            // the client's copy of it anyway.
            let mut remove = String::new();
            for name in a.headers_to_remove.iter() {
                if !a.forward_headers.iter().any(|(set, _)| set == name) {
                    if !remove.is_empty() {
                        remove.push(',');
                    }
                    remove.push_str(name);
                }
            }
            for (name, value) in a.forward_headers {
                // The value's own buffer becomes the header's: no copy.
                if let (Some(n), Ok(v)) = (
                    header_name(&name),
                    HeaderValue::from_maybe_shared(Bytes::from(value)),
                ) {
                    h.insert(n, v);
                }
            }
            if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(remove))
                && !v.is_empty()
            {
                h.insert(HeaderName::from_static("x-envoy-auth-headers-to-remove"), v);
            }
            resp
        }
        Decision::Deny(d) => {
            let status =
                StatusCode::from_u16(d.reason.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut resp = Response::with_body(status, BoxBody::new(d.json_body()));
            let h = resp.headers_mut();
            if let Some(challenge) = d.www_authenticate()
                && let Ok(v) = HeaderValue::from_str(&challenge)
            {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
            if status == StatusCode::SERVICE_UNAVAILABLE {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}
