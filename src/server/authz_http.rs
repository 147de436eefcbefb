//! `authz_http`: Envoy's HTTP ext_authz and forward-auth (nginx `auth_request`, Traefik
//! ForwardAuth). Any method and path is a check of that method and path;
//! `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik) and `X-Original-Method`/
//! `X-Original-URI` (nginx) override them when present.
//!
//! - allow: `200`, the forward headers, and `x-envoy-auth-headers-to-remove` naming the
//!   forward headers a client may have sent itself;
//! - deny: the decision's status, `WWW-Authenticate` and a short JSON body.
//!
//! Served by `h1`, a small HTTP/1.1 connection with the limits of the other HTTP
//! listeners, on actix-server's workers (accept, connection limit, graceful shutdown):
//! every request is the same check, answered from its head alone, so a general HTTP
//! stack has nothing to do. Under load, the answers decided in one turn of the worker's
//! event loop are written together (see `turn`).

use std::sync::Arc;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

use super::h1::{self, Answer, Head};
use crate::authz::{Authorizer, RequestView};
use crate::decision::{Decision, Denial};
use crate::metrics::Listener;
use crate::token::extract::Headers;

/// The connection limits of this listener (those of the other HTTP listeners).
pub const LIMITS: h1::Limits = h1::Limits {
    request_timeout: super::CLIENT_REQUEST_TIMEOUT,
    disconnect_timeout: super::CLIENT_DISCONNECT_TIMEOUT,
};

/// Binds `addr` and returns the bound addresses and the server, not yet polled.
pub fn bind(
    authz: Arc<Authorizer>,
    addr: std::net::SocketAddr,
    workers: usize,
) -> std::io::Result<(Vec<std::net::SocketAddr>, actix_server::Server)> {
    let handler = Arc::new(Check(authz));
    serve(handler, addr, workers)
}

/// Serves `handler` on `addr` with this listener's limits: `workers` threads, each
/// accepting up to [`super::MAX_CONNECTIONS_PER_WORKER`] connections, graceful shutdown
/// within [`super::SHUTDOWN_GRACE`]. Also serves `examples/allow_all`, the do-nothing
/// baseline of the benchmarks.
pub fn serve<H: h1::Handler + Send + Sync + 'static>(
    handler: Arc<H>,
    addr: std::net::SocketAddr,
    workers: usize,
) -> std::io::Result<(Vec<std::net::SocketAddr>, actix_server::Server)> {
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
            let handler = handler.clone();
            let signal = signal.clone();
            actix_service::fn_service(move |io: tokio::net::TcpStream| {
                let handler = handler.clone();
                let signal = signal.clone();
                async move {
                    let stop = async move { signal.notified().await };
                    if let Err(e) = h1::serve(io, &*handler, LIMITS, stop).await {
                        tracing::debug!(listener = "authz_http", error = %e, "connection ended");
                    }
                    Ok::<(), ()>(())
                }
            })
        })?
        .run();
    Ok((vec![local], server))
}

/// The check every request is.
struct Check(Arc<Authorizer>);

impl h1::Handler for Check {
    async fn answer<'a>(&'a self, head: &'a Head<'a>, answer: &'a mut Answer) {
        // The forward-auth overrides, first of each name (one pass over the head).
        let mut overrides: [Option<&str>; 4] = [None; 4];
        for h in head.headers {
            if let Some(i) = OVERRIDES
                .iter()
                .position(|o| h.name.eq_ignore_ascii_case(o))
                && overrides[i].is_none()
            {
                overrides[i] = visible_ascii(h.value);
            }
        }
        let [
            forwarded_method,
            original_method,
            forwarded_uri,
            original_uri,
        ] = overrides;
        let view = RequestView {
            method: forwarded_method.or(original_method).unwrap_or(head.method),
            path: forwarded_uri.or(original_uri).unwrap_or(head.target),
            headers: &HeadHeaders(head.headers),
        };
        let verdict = self.0.check(Listener::AuthzHttp, &view).await;
        super::turn::coalesce().await;
        encode(&verdict.decision, answer);
    }
}

/// The headers that name the checked request's method and path (forward-auth):
/// Traefik's, then nginx's.
const OVERRIDES: [&str; 4] = [
    "x-forwarded-method",
    "x-original-method",
    "x-forwarded-uri",
    "x-original-uri",
];

/// A header value as text when it is visible ASCII (and tabs), as a header value that
/// names a method or a URI must be.
fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// A request head's headers as [`Headers`].
struct HeadHeaders<'a>(&'a [httparse::Header<'a>]);

impl Headers for HeadHeaders<'_> {
    fn for_each<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for h in self.0 {
            if h.name.eq_ignore_ascii_case(name) {
                f(h.value);
            }
        }
    }
}

/// Encodes a decision as an ext_authz / forward-auth answer.
fn encode(decision: &Decision, answer: &mut Answer) {
    match decision {
        Decision::Allow(a) => {
            answer.status(200);
            for (name, value) in &a.forward_headers {
                answer.header(name, value.as_bytes());
            }
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
            if !remove.is_empty() {
                answer.header("x-envoy-auth-headers-to-remove", remove.as_bytes());
            }
        }
        Decision::Deny(d) => {
            answer.status(d.reason.http_status());
            denial_headers(d, |name, value| {
                answer.header(name, value.as_bytes());
            });
            answer.body(d.json_body().as_bytes());
        }
    }
}

/// The headers of a denial on every HTTP listener, besides its status and JSON body.
fn denial_headers(d: &Denial, mut f: impl FnMut(&'static str, &str)) {
    if let Some(challenge) = d.www_authenticate() {
        f("www-authenticate", &challenge);
    }
    if d.reason.http_status() == 503 {
        f("retry-after", "5");
    }
    f("cache-control", "no-store");
    f("content-type", "application/json");
}

/// A denial as the proxy sends it: the same status, headers and body as `authz_http`.
pub fn denial_response(d: &Denial) -> HttpResponse {
    let status = StatusCode::from_u16(d.reason.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut resp = HttpResponse::build(status);
    denial_headers(d, |name, value| {
        resp.insert_header((name, value));
    });
    resp.body(d.json_body())
}
