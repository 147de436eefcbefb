//! `proxy`: the sidecar reverse proxy in front of `upstream.url`. Every request is first
//! checked by the one [`Authorizer`] (listener `proxy`); a denial is answered exactly as
//! `authz_http` answers it, and the upstream never sees the request. An allowed request
//! is forwarded with its method, query, headers and body unchanged, except:
//!
//! - the path is the judged one: dot segments resolved and escaped unreserved
//!   characters decoded ([`crate::request::resolve`]), so the app serves the path that
//!   was judged;
//! - hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it names,
//!   `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are
//!   dropped in both directions, and so is `Expect` (this hop already answered it);
//! - client-sent copies of every forward-header name, and of spellings of it with `_`
//!   for `-`, are removed, then the decision's forward headers are added (also on
//!   anonymous requests, which get none);
//! - with `forward.strip_authorization`, the token headers (`token.from_headers` names)
//!   are removed;
//! - `X-Forwarded-For` gets the client's address appended; `X-Forwarded-Proto` (`http`)
//!   and `X-Forwarded-Host` (the request's `Host`) are set, replacing client values.
//!
//! Bodies are streamed both ways, never buffered whole: hyper's request body is the
//! upstream request's body (backpressure reaches the client's socket), the response body
//! is relayed as it arrives. The `Host` header is kept, so the app sees
//! the name the client used. Connections to the upstream are pooled.
//!
//! `upstream.timeout` bounds the wait for the upstream's response head (from the start
//! of the request, upload included) and every later wait for more response body; when
//! it runs out before the head, the client gets `504`. An upstream that cannot be
//! reached, or that fails before answering, gives `502`. Both carry a one-line body.
//!
//! Endpoint: every method and path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};

use crate::authz::{Authorizer, RequestView};
use crate::config::Upstream;
use crate::decision::{Allowed, Decision, DenyReason};
use crate::metrics::Listener;
use crate::request;

/// The body of every proxy answer: the upstream's, streamed, or a short one of ours.
pub type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Idle pooled connections kept per upstream.
pub const POOL_MAX_IDLE: usize = 64;
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Request headers this hop handles itself and never forwards (RFC 9110 §7.6.1, plus
/// `Expect`, which hyper answers with `100 Continue` when the body is first read).
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

    /// Checks one request from `peer` and, when allowed, forwards it.
    pub async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> hyper::Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        // A framing error is not a decision: answered, never counted or shadowed.
        if request::check_host(&parts.headers).is_err() {
            return deny(&DenyReason::InvalidRequest.into());
        }
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let view = RequestView {
            method: parts.method.as_str(),
            target,
            headers: &parts.headers,
            peer: Default::default(),
        };
        let verdict = self.authz.check(Listener::Proxy, &view).await;
        let allowed = match &verdict.decision {
            Decision::Allow(a) => a,
            Decision::Deny(d) => return deny(d),
        };
        // The app gets the path that was judged: the same resolution, which succeeded
        // for the check to allow. In shadow mode a request refused as `invalid_request`
        // goes on as it came (SPEC §9), if its target is a path at all.
        let url = match request::resolve(target) {
            Ok(resolved) => {
                let mut url = format!("{}{}", self.base, resolved.path);
                if let Some(q) = resolved.query {
                    url.push('?');
                    url.push_str(q);
                }
                url
            }
            Err(_) if allowed.shadow_deny.is_some() && target.starts_with('/') => {
                format!("{}{target}", self.base)
            }
            Err(_) => return deny(&DenyReason::InvalidRequest.into()),
        };
        let policy = self.authz.policy();
        let token_headers: &[crate::config::HeaderSource] =
            if policy.config.forward.strip_authorization {
                &policy.config.token.from_headers
            } else {
                &[]
            };
        let headers = upstream_headers(&parts.headers, allowed, token_headers, peer);
        let mut upstream = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers);
        if has_body(&parts.headers) {
            upstream = upstream.body(reqwest::Body::wrap(body));
        }
        match upstream.send().await {
            Ok(resp) => downstream(resp, parts.method == Method::HEAD),
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
}

/// The headers the upstream gets (see the module docs for the rules).
fn upstream_headers(
    received: &HeaderMap,
    allowed: &Allowed,
    token_headers: &[crate::config::HeaderSource],
    peer: SocketAddr,
) -> HeaderMap {
    let named = connection_tokens(received.get_all("connection"));
    let mut out = HeaderMap::with_capacity(received.len() + 4);
    let mut forwarded_for: Vec<&str> = Vec::new();
    for (name, value) in received {
        let n = name.as_str();
        if is_hop_by_hop(n, &named)
            || allowed.headers_to_remove.iter().any(|h| &**h == n)
            || token_headers.iter().any(|h| h.name == n)
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
        out.append(name.clone(), value.clone());
    }
    for (name, value) in &allowed.forward_headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.insert(n, v);
        }
    }
    // Append, as every proxy in a chain does: the last entry is the one this hop saw.
    let mut chain = forwarded_for.join(", ");
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&peer.ip().to_string());
    if let Ok(v) = HeaderValue::from_str(&chain) {
        out.insert("x-forwarded-for", v);
    }
    out.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = received.get("host") {
        out.insert("x-forwarded-host", host.clone());
    }
    out
}

/// True when the request announces a body (RFC 9112 §6.3: a `Content-Length` or a
/// `Transfer-Encoding`); a request without either has none, and the upstream must not
/// get a chunked empty body for it.
fn has_body(h: &HeaderMap) -> bool {
    h.contains_key("transfer-encoding")
        || h.get("content-length")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The client's response: the upstream's status, end-to-end headers and body, streamed.
fn downstream(resp: reqwest::Response, head: bool) -> hyper::Response<ProxyBody> {
    let status = resp.status();
    let named = connection_tokens(resp.headers().get_all("connection").iter());
    // 204 and 304 never carry a body (a 304 keeps the upstream's Content-Length, which
    // describes the representation); a HEAD answer carries none either, but keeps the
    // upstream's length.
    let bodiless = head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut out = hyper::Response::builder().status(status);
    if let Some(headers) = out.headers_mut() {
        for (name, value) in resp.headers() {
            if is_hop_by_hop(name.as_str(), &named) {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
    }
    let body: ProxyBody = if bodiless {
        empty()
    } else {
        let response: http::Response<reqwest::Body> = resp.into();
        response.into_body().map_err(Into::into).boxed()
    };
    out.body(body)
        .unwrap_or_else(|_| plain(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n"))
}

/// A denial, as every HTTP listener answers it.
fn deny(d: &crate::decision::Denial) -> hyper::Response<ProxyBody> {
    super::denial_response(d).map(|b| b.map_err(|never| match never {}).boxed())
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
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

fn plain(status: StatusCode, body: &'static str) -> hyper::Response<ProxyBody> {
    let mut resp = hyper::Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
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
