//! `proxy`: the sidecar reverse proxy in front of `upstream.url`. Every request is first
//! checked by the one [`Authorizer`] (listener `proxy`, path = path and query); a denial
//! is answered exactly as `authz_http` answers it, and the upstream never sees the
//! request. An allowed request is forwarded with its method, path, query, headers and
//! body unchanged, except:
//!
//! - hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it names,
//!   `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are
//!   dropped in both directions, and so is `Expect` (this hop already answered it);
//! - client-sent copies of every forward-header name are removed, then the decision's
//!   forward headers are added (also on anonymous requests, which get none);
//! - with `forward.strip_authorization`, the token headers (`token.from_headers` names)
//!   are removed;
//! - `X-Forwarded-For` gets the client's address appended; `X-Forwarded-Proto` (`http`)
//!   and `X-Forwarded-Host` (the request's `Host`) are set, replacing client values.
//!
//! Bodies are streamed both ways, never buffered whole: the request body goes through a
//! channel of [`BODY_CHANNEL_CHUNKS`] chunks (backpressure reaches the client's socket),
//! the response body is relayed as it arrives. The `Host` header is kept, so the app sees
//! the name the client used. Connections to the upstream are pooled.
//!
//! `upstream.timeout` bounds the wait for the upstream's response head (from the start
//! of the request, upload included) and every later wait for more response body; when
//! it runs out before the head, the client gets `504`. An upstream that cannot be
//! reached, or that fails before answering, gives `502`. Both carry a one-line body.
//!
//! Endpoint: every method and path.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodyStream, None as NoBody, SizedStream};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::{ActixHeaders, authz_http};
use crate::authz::{Authorizer, RequestView};
use crate::config::Upstream;
use crate::decision::{Allowed, Decision};
use crate::metrics::Listener;

/// Request-body chunks in flight between the client and the upstream: the only request
/// buffering the proxy does (actix reads at most 32 KiB per chunk).
pub const BODY_CHANNEL_CHUNKS: usize = 4;
/// Idle pooled connections kept per upstream.
pub const POOL_MAX_IDLE: usize = 64;
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Request headers this hop handles itself and never forwards (RFC 9110 §7.6.1, plus
/// `Expect`, which actix already answered with `100 Continue`).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// The proxy's shared state: the authorizer, the upstream and a pooled client.
#[derive(Debug)]
pub struct Proxy {
    authz: Arc<Authorizer>,
    client: reqwest::Client,
    base: String,
}

// === impl Proxy ===

impl Proxy {
    /// A proxy to `upstream` deciding with `authz`.
    pub fn new(authz: Arc<Authorizer>, upstream: &Upstream) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            // A proxy relays redirects to its client; it never follows them itself.
            .redirect(reqwest::redirect::Policy::none())
            // The upstream is named by the config alone, never by proxy variables.
            .no_proxy()
            .connect_timeout(upstream.timeout)
            .read_timeout(upstream.timeout)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| format!("upstream.url: cannot build the HTTP client: {e}"))?;
        Ok(Self {
            authz,
            client,
            base: upstream.url.trim_end_matches('/').to_string(),
        })
    }
}

/// The handler for every method and path.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let view = RequestView {
        method: req.method().as_str(),
        path,
        headers: &ActixHeaders(req.headers()),
    };
    let verdict = proxy.authz.check(Listener::Proxy, &view).await;
    let allowed = match &verdict.decision {
        Decision::Allow(a) => a,
        Decision::Deny(d) => return authz_http::denial_response(d),
    };
    let policy = proxy.authz.policy();
    let token_headers: Vec<&str> = if policy.config.forward.strip_authorization {
        policy
            .config
            .token
            .from_headers
            .iter()
            .map(|h| h.name.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let headers = upstream_headers(&req, allowed, &token_headers);
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "the request method is not valid\n");
    };
    let url = format!("{}{}", proxy.base, path);
    let mut upstream = proxy.client.request(method, url).headers(headers);
    if has_body(&req) {
        upstream = upstream.body(stream_body(payload));
    }
    match upstream.send().await {
        Ok(resp) => downstream(resp, req.method() == actix_web::http::Method::HEAD),
        Err(e) if e.is_timeout() => {
            tracing::warn!(error = %e, "upstream timed out");
            plain(
                StatusCode::GATEWAY_TIMEOUT,
                "504 Gateway Timeout: the upstream did not answer in time\n",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, connect = e.is_connect(), "upstream failed");
            let body = if e.is_connect() {
                "502 Bad Gateway: the upstream could not be reached\n"
            } else {
                "502 Bad Gateway: the upstream failed to answer\n"
            };
            plain(StatusCode::BAD_GATEWAY, body)
        }
    }
}

/// The headers the upstream gets (see the module docs for the rules).
fn upstream_headers(
    req: &HttpRequest,
    allowed: &Allowed,
    token_headers: &[&str],
) -> reqwest::header::HeaderMap {
    use reqwest::header::{HeaderName as Name, HeaderValue as Value};

    let named = connection_tokens(req.headers().get_all("connection"));
    let mut out = reqwest::header::HeaderMap::with_capacity(req.headers().len() + 4);
    let mut forwarded_for: Vec<&str> = Vec::new();
    for (name, value) in req.headers() {
        let n = name.as_str();
        if is_hop_by_hop(n, &named)
            || allowed.headers_to_remove.iter().any(|h| &**h == n)
            || token_headers.iter().any(|h| h.eq_ignore_ascii_case(n))
            || n == "x-forwarded-proto"
            || n == "x-forwarded-host"
        {
            continue;
        }
        if n == "x-forwarded-for" {
            if let Ok(v) = value.to_str() {
                forwarded_for.push(v);
            }
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            Name::from_bytes(n.as_bytes()),
            Value::from_bytes(value.as_bytes()),
        ) {
            out.append(n, v);
        }
    }
    for (name, value) in &allowed.forward_headers {
        if let (Ok(n), Ok(v)) = (Name::from_bytes(name.as_bytes()), Value::from_str(value)) {
            out.insert(n, v);
        }
    }
    // Append, as every proxy in a chain does: the last entry is the one this hop saw.
    let mut chain = forwarded_for.join(", ");
    if let Some(peer) = req.peer_addr() {
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        chain.push_str(&peer.ip().to_string());
    }
    if !chain.is_empty()
        && let Ok(v) = Value::from_str(&chain)
    {
        out.insert("x-forwarded-for", v);
    }
    out.insert("x-forwarded-proto", Value::from_static("http"));
    if let Some(host) = req.headers().get("host")
        && let Ok(v) = Value::from_bytes(host.as_bytes())
    {
        out.insert("x-forwarded-host", v);
    }
    out
}

/// True when the request announces a body (RFC 9112 §6.3: a `Content-Length` or a
/// `Transfer-Encoding`); a request without either has none, and the upstream must not
/// get a chunked empty body for it.
fn has_body(req: &HttpRequest) -> bool {
    let h = req.headers();
    h.contains_key("transfer-encoding")
        || h.get("content-length")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Relays the request body through a bounded channel: actix's payload lives on its
/// worker thread (it is not `Send`), the upstream client wants a `Send` stream.
fn stream_body(mut payload: web::Payload) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_CHANNEL_CHUNKS);
    actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(std::io::Error::other);
            let failed = chunk.is_err();
            // A closed channel means the upstream request is over (answered early, or
            // failed): stop reading the client.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    reqwest::Body::wrap_stream(ReceiverStream::new(rx))
}

/// The client's response: the upstream's status, end-to-end headers and body, streamed.
fn downstream(resp: reqwest::Response, head: bool) -> HttpResponse {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let named = connection_tokens(resp.headers().get_all("connection").iter());
    // 204 and 304 never carry a body (a 304 keeps the upstream's Content-Length, which
    // describes the representation); a HEAD answer carries none either, but its length
    // is the upstream's, which hyper's empty HEAD body no longer tells.
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let head_length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut out = HttpResponse::build(status);
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if is_hop_by_hop(n, &named) || (n == "content-length" && !bodiless) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append_header((n, v));
        }
    }
    if bodiless {
        return out.body(NoBody::new());
    }
    if head {
        // actix writes the length of a sized body and, for HEAD, not the body itself.
        return match head_length {
            Some(len) => out.body(SizedStream::new(
                len,
                tokio_stream::empty::<Result<Bytes, std::io::Error>>(),
            )),
            None => out.body(NoBody::new()),
        };
    }
    match resp.content_length() {
        Some(len) => out.body(SizedStream::new(len, resp.bytes_stream())),
        None => out.body(BodyStream::new(resp.bytes_stream())),
    }
}

/// The lower-cased header names listed in `Connection` headers.
fn connection_tokens<V: AsRef<[u8]>>(values: impl IntoIterator<Item = V>) -> Vec<String> {
    values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v.as_ref()).ok().map(str::to_string))
        .flat_map(|v| {
            v.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_hop_by_hop(name: &str, named_by_connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name)
        || name.starts_with("proxy-")
        || named_by_connection.iter().any(|t| t == name)
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("cache-control", "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_more_hop_by_hop_headers() {
        let named = connection_tokens(["close, X-Secret", " keep-alive ,"].iter());
        assert_eq!(named, vec!["close", "x-secret", "keep-alive"]);
        assert!(is_hop_by_hop("x-secret", &named));
        assert!(is_hop_by_hop("proxy-authorization", &[]));
        assert!(is_hop_by_hop("transfer-encoding", &[]));
        assert!(!is_hop_by_hop("content-length", &[]));
        assert!(!is_hop_by_hop("authorization", &named));
    }
}
