//! The request the app gets is the request tokengate judged (SPEC §4a), against the built
//! `tokengate serve` on loopback: `authz_http`, and the `proxy` with the echo upstream
//! behind it, so that every proxy case also checks exactly what the app received (and
//! that a denied request sent it nothing).
//!
//! - forward-auth overrides: ignored unless `forward_auth.headers` names a family; with a
//!   family, exactly one visible-ASCII method and URI of that family, the other family
//!   never read, and never a fall-back to the request line;
//! - paths: the refusals (400 `invalid_request`), RFC 3986 §5.2.4 dot segments (refused
//!   on `authz_http` unless already resolved; resolved, judged and forwarded as judged by
//!   the proxy), empty segments ignored for routes but kept for the app, `path_case`;
//! - credentials: one `Authorization` field, one token source, cookies read per RFC 6265
//!   §5.2;
//! - forward headers spoofed with `_` for `-`;
//! - HTTP/1.1 framing on `authz_http`, `proxy` and `admin`: `Host`, `Transfer-Encoding`,
//!   `Content-Length`, CL+TE smuggling, the head limits (431), a head that stops halfway
//!   on a kept-alive connection.
//!
//! Not repeated here: `hardening::ambiguous_paths_never_pass_as_anonymous` (there, 400 or
//! 401; here the answer is pinned to 400 with its challenge), `hardening::slow_loris_*`
//! (heads trickled a byte a second; here a head that stops), `http_checks` (two
//! identical `Bearer` fields) and `serving::oversized_request_head_is_431_on_every_http_listener`.
//!
//! Every test uses the routes of [`Gate::start`]: `/public` anonymous, `/admin` needing
//! the scope `admin`, `POST /upload` needing it too. The fixture token `GOOD_RS256`
//! (`sub` alice, `scope` "orders:read orders:write") lacks it, so it gets 403 under
//! `/admin` and 200 anywhere unrouted.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::upstream::{Mode, Upstream, header_values};
use crate::support::{ANY_PORT, TempDir, Tokengate, fixture_issuer, http, token};

/// SPEC §4a: a request head must be complete within 5 s.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack over [`HEAD_TIMEOUT`] for a loaded machine.
const SLACK: Duration = Duration::from_secs(3);
/// SPEC §4a: the largest request head, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// SPEC §4a: the most header fields in one request head.
const MAX_FIELDS: usize = 100;

/// The `Host` line of every well-framed request here.
const HOST: &str = "host: app";

/// The token every "valid token" case sends: no `admin` scope.
const GOOD: &str = "GOOD_RS256";
/// A forged token (attacker key, kid `rsa-1`): `bad_signature`.
const FORGED: &str = "FOREIGN_KNOWN_KID";

/// RFC 6750 challenges, as tokengate writes them (SPEC §4 step 6).
const NO_CREDENTIALS: &str = "Bearer realm=\"tokengate\"";
const INVALID_REQUEST: &str = "Bearer realm=\"tokengate\", error=\"invalid_request\"";
const INVALID_TOKEN: &str = "Bearer realm=\"tokengate\", error=\"invalid_token\"";
const INSUFFICIENT_SCOPE: &str = "Bearer realm=\"tokengate\", error=\"insufficient_scope\"";

// === the gate and the case table ===

/// A running tokengate (`authz_http`, `admin`, and a `proxy` in front of an echo
/// upstream). Fields drop in order: the process first, the directory last.
struct Gate {
    tg: Tokengate,
    proxy: SocketAddr,
    upstream: Upstream,
    _dir: TempDir,
}

impl Gate {
    /// Starts one in its own directory on the config below, edited by `patch`; waits
    /// until it is ready.
    fn start(tag: &str, patch: impl FnOnce(&mut Value)) -> Gate {
        let dir = TempDir::new(tag);
        let upstream = Upstream::start(Mode::Echo);
        let mut config = json!({
            "listeners": {"proxy": ANY_PORT},
            "upstream": {"url": upstream.url(), "timeout": "2s"},
            "issuers": [fixture_issuer()],
            "routes": [
                {"path_prefix": "/public", "allow_anonymous": true},
                {"path_prefix": "/admin", "scopes_all": ["admin"]},
                {"path_prefix": "/upload", "methods": ["POST"], "scopes_all": ["admin"]}
            ],
            "forward": {"claim_headers": {"x-auth-subject": "sub"}}
        });
        patch(&mut config);
        let tg = Tokengate::start(&dir, config);
        tg.wait_ready();
        Gate {
            proxy: tg.addr("proxy"),
            tg,
            upstream,
            _dir: dir,
        }
    }

    /// `authz_http` and `proxy`, named.
    fn both(&self) -> [(&'static str, SocketAddr); 2] {
        [("authz_http", self.tg.authz), ("proxy", self.proxy)]
    }

    /// Sends `raw` to `addr` on a fresh connection: the answer, and how many request
    /// heads reached the upstream meanwhile (the proxy answers an allowed request only
    /// after the upstream has read it, so the count is complete when the answer is).
    fn send(&self, addr: SocketAddr, raw: &[u8]) -> Answer {
        let before = self.upstream.requests();
        let response = http::send_raw(addr, raw).unwrap_or_else(|| {
            panic!(
                "{addr} did not answer {:?}; log:\n{}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)]),
                self.tg.logs()
            )
        });
        Answer {
            forwarded: self.upstream.requests() - before,
            via_proxy: addr == self.proxy,
            response,
        }
    }

    /// Sends every case to every listener of `on`; one line per answer that is not the
    /// one wanted.
    fn run(&self, on: &[(&str, SocketAddr)], cases: &[Case]) -> Vec<String> {
        let mut failures = Vec::new();
        for (listener, addr) in on {
            for c in cases {
                if let Err(why) = self.send(*addr, &c.raw).verdict(c.want) {
                    failures.push(format!("{listener}: {}: want {:?}, {why}", c.name, c.want));
                }
            }
        }
        failures
    }
}

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// 200; through the proxy, the request reached the upstream exactly once.
    Allowed,
    /// 200, and the upstream got exactly one request, with this request target (proxy
    /// only).
    Forwarded(&'static str),
    /// 400 with tokengate's `invalid_request` challenge: read, then refused.
    Refused,
    /// 400, with or without a challenge: bytes an HTTP/1.1 parser refuses before any
    /// request exists (framing errors are protocol errors, not decisions: SPEC §9).
    BadRequest,
    /// 401 with the bare challenge: judged, and no token.
    NoToken,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`.
    Forbidden,
    /// 431.
    TooLarge,
}

/// One request and the answer it must get.
struct Case {
    name: String,
    raw: Vec<u8>,
    want: Want,
}

/// One answer, and what reached the upstream because of it.
struct Answer {
    response: http::Response,
    forwarded: usize,
    via_proxy: bool,
}

impl Answer {
    /// `Ok` when this is the answer `want` describes; else what was got instead.
    fn verdict(&self, want: Want) -> Result<(), String> {
        let r = &self.response;
        let challenge = r.header("www-authenticate").unwrap_or("");
        let status_ok = match want {
            Want::Allowed | Want::Forwarded(_) => r.status == 200,
            Want::Refused => r.status == 400 && challenge.starts_with(INVALID_REQUEST),
            Want::BadRequest => r.status == 400,
            Want::NoToken => r.status == 401 && challenge == NO_CREDENTIALS,
            Want::InvalidToken => r.status == 401 && challenge.starts_with(INVALID_TOKEN),
            Want::Forbidden => r.status == 403 && challenge.starts_with(INSUFFICIENT_SCOPE),
            Want::TooLarge => r.status == 431,
        };
        let forwarded_ok = self.forwarded
            == match want {
                Want::Allowed => usize::from(self.via_proxy),
                Want::Forwarded(_) => 1,
                _ => 0,
            };
        let target = echo_path(r);
        let target_ok = match want {
            Want::Forwarded(path) => target.as_deref() == Some(path),
            _ => true,
        };
        if status_ok && forwarded_ok && target_ok {
            return Ok(());
        }
        let body: String = r.body_text().chars().take(300).collect();
        Err(format!(
            "got {} (www-authenticate {challenge:?}), {} request(s) reached the upstream{}; body {body}",
            r.status,
            self.forwarded,
            target.map_or(String::new(), |t| format!(", which got {t:?}"))
        ))
    }
}

/// A request head: `METHOD TARGET HTTP/1.1`, `lines` as given (no `Host` unless
/// listed), then `connection: close` so that the server closes after its answer.
fn head(method: &str, target: &str, lines: &[&str]) -> Vec<u8> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\n");
    for line in lines {
        raw.push_str(line);
        raw.push_str("\r\n");
    }
    raw.push_str("connection: close\r\n\r\n");
    raw.into_bytes()
}

/// A case: `METHOD TARGET HTTP/1.1`, `host: app`, then `headers` in order.
fn req(name: &str, method: &str, target: &str, headers: &[(&str, &str)], want: Want) -> Case {
    let mut owned = vec![HOST.to_string()];
    owned.extend(headers.iter().map(|(n, v)| format!("{n}: {v}")));
    let lines: Vec<&str> = owned.iter().map(String::as_str).collect();
    Case {
        name: name.to_string(),
        raw: head(method, target, &lines),
        want,
    }
}

/// [`req`] with `GET`.
fn get(name: &str, target: &str, headers: &[(&str, &str)], want: Want) -> Case {
    req(name, "GET", target, headers, want)
}

/// Fails with every line of `failures`, if any.
fn assert_none_failed(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} case(s) got another answer:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", token(name))
}

/// The request target the upstream echoed, when the body is an echo.
fn echo_path(r: &http::Response) -> Option<String> {
    let echo: Value = serde_json::from_slice(&r.body).ok()?;
    echo["path"].as_str().map(str::to_string)
}

/// The upstream's echo in a proxied answer.
fn echo(r: &http::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "not an upstream echo ({e}): {} {:?} {}",
            r.status,
            r.headers,
            r.body_text()
        )
    })
}

/// `tokengate_decisions_total` summed over the samples whose labels include `want`.
fn decisions(tg: &Tokengate, want: &[(&str, &str)]) -> f64 {
    tg.metrics().sum("tokengate_decisions_total", want)
}

// === forward-auth override headers ===

/// With `forward_auth.headers` at its default (`"none"`), `authz_http` judges its own
/// request line, which is what Envoy's HTTP ext_authz sends: a client can add
/// `X-Forwarded-*` or `X-Original-*` headers and Envoy passes them on, so they must move
/// neither a check of `/admin` onto the anonymous `/public` nor the reverse, and even a
/// malformed one is not read at all.
#[test]
fn forwarded_uri_is_ignored_without_a_family() {
    let gate = Gate::start("bypass-no-family", |_| {});
    let cases = [
        get(
            "X-Forwarded-Uri names /public",
            "/admin/x",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/public/x"),
            ],
            Want::NoToken,
        ),
        get(
            "X-Original-URI names /public",
            "/admin/x",
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/public/x"),
            ],
            Want::NoToken,
        ),
        get(
            "both families name /public",
            "/admin/x",
            &[
                ("X-Original-Method", "GET"),
                ("X-Original-URI", "/public/x"),
                ("X-Forwarded-Method", "GET"),
                ("X-Forwarded-Uri", "/public/x"),
            ],
            Want::NoToken,
        ),
        get(
            "both families name /admin",
            "/public/x",
            &[
                ("x-original-uri", "/admin/x"),
                ("x-forwarded-uri", "/admin/x"),
            ],
            Want::Allowed,
        ),
        get(
            "malformed and repeated overrides",
            "/public/x",
            &[
                ("x-original-uri", "/admin/\u{e9}"),
                ("x-original-uri", "/admin/y"),
                ("x-forwarded-method", "G T"),
            ],
            Want::Allowed,
        ),
    ];
    let failures = gate.run(&[("authz_http", gate.tg.authz)], &cases);
    assert_none_failed("forward_auth.headers \"none\"", &failures);
}

/// A family of override headers and the other family's names.
struct Family {
    config: &'static str,
    method: &'static str,
    uri: &'static str,
    other_method: &'static str,
    other_uri: &'static str,
}

const NGINX: Family = Family {
    config: "nginx",
    method: "x-original-method",
    uri: "x-original-uri",
    other_method: "x-forwarded-method",
    other_uri: "x-forwarded-uri",
};

const TRAEFIK: Family = Family {
    config: "traefik",
    method: "x-forwarded-method",
    uri: "x-forwarded-uri",
    other_method: "x-original-method",
    other_uri: "x-original-uri",
};

/// The `authz_http` cases of a family. The check's own request line is
/// `GET /_tokengate` (unrouted: it would need a token), except in the refusals, where it
/// is `GET /public/x`: falling back to it there would answer 200.
fn family_cases(f: &Family, good: &str) -> Vec<Case> {
    let (m, u, om, ou) = (f.method, f.uri, f.other_method, f.other_uri);
    let u_upper = u.to_ascii_uppercase();
    let u_upper = u_upper.as_str();
    vec![
        get(
            "anonymous URI",
            "/_tokengate",
            &[(m, "GET"), (u, "/public/x")],
            Want::Allowed,
        ),
        get(
            "protected URI, no token",
            "/_tokengate",
            &[(m, "GET"), (u, "/admin/x")],
            Want::NoToken,
        ),
        get(
            "protected URI, a valid token without the scope",
            "/_tokengate",
            &[(m, "GET"), (u, "/admin/x"), ("authorization", good)],
            Want::Forbidden,
        ),
        get(
            "the request line's path is not judged",
            "/admin/x",
            &[(m, "GET"), (u, "/public/x")],
            Want::Allowed,
        ),
        get(
            "the overriding method is judged (POST /upload needs the scope)",
            "/_tokengate",
            &[(m, "POST"), (u, "/upload"), ("authorization", good)],
            Want::Forbidden,
        ),
        req(
            "the request line's method is not judged (GET /upload is unrouted)",
            "POST",
            "/upload",
            &[(m, "GET"), (u, "/upload"), ("authorization", good)],
            Want::Allowed,
        ),
        get(
            "the query is not part of the path",
            "/_tokengate",
            &[(m, "GET"), (u, "/public/x?next=/admin/x")],
            Want::Allowed,
        ),
        get(
            "absolute-form URI",
            "/_tokengate",
            &[(m, "GET"), (u, "http://app.example/public/x")],
            Want::Allowed,
        ),
        get(
            "absolute-form URI, judged by its path",
            "/_tokengate",
            &[(m, "GET"), (u, "http://app.example/admin/x")],
            Want::NoToken,
        ),
        get(
            "the other family cannot reopen /public",
            "/_tokengate",
            &[(m, "GET"), (u, "/admin/x"), (om, "GET"), (ou, "/public/x")],
            Want::NoToken,
        ),
        get(
            "the other family cannot refuse",
            "/_tokengate",
            &[
                (m, "GET"),
                (u, "/public/x"),
                (ou, "/admin/\u{e9}"),
                (ou, "/admin/y"),
            ],
            Want::Allowed,
        ),
        // Refusals, never a fall-back to the request line (/public/x).
        get("URI missing", "/public/x", &[(m, "GET")], Want::Refused),
        get(
            "method missing",
            "/public/x",
            &[(u, "/public/x")],
            Want::Refused,
        ),
        get(
            "URI twice",
            "/public/x",
            &[(m, "GET"), (u, "/public/x"), (u, "/public/x")],
            Want::Refused,
        ),
        get(
            "URI twice, in two casings",
            "/public/x",
            &[(m, "GET"), (u, "/public/x"), (u_upper, "/public/x")],
            Want::Refused,
        ),
        get(
            "method twice",
            "/public/x",
            &[(m, "GET"), (m, "GET"), (u, "/public/x")],
            Want::Refused,
        ),
        get(
            "URI empty",
            "/public/x",
            &[(m, "GET"), (u, "")],
            Want::Refused,
        ),
        get(
            "URI not ASCII (raw UTF-8)",
            "/public/x",
            &[(m, "GET"), (u, "/admin/\u{e9}")],
            Want::Refused,
        ),
        get(
            "URI not ASCII under /public",
            "/public/x",
            &[(m, "GET"), (u, "/public/\u{e9}")],
            Want::Refused,
        ),
        get(
            "URI with a space",
            "/public/x",
            &[(m, "GET"), (u, "/public/a b")],
            Want::Refused,
        ),
        get(
            "URI with a tab",
            "/public/x",
            &[(m, "GET"), (u, "/public/a\tb")],
            Want::Refused,
        ),
        get(
            "method with a space",
            "/public/x",
            &[(m, "GE T"), (u, "/public/x")],
            Want::Refused,
        ),
        get(
            "URI with a fragment",
            "/public/x",
            &[(m, "GET"), (u, "/admin#/../public")],
            Want::Refused,
        ),
        get(
            "absolute-form URI that does not parse",
            "/public/x",
            &[(m, "GET"), (u, "http://[/public/x")],
            Want::Refused,
        ),
        get(
            "absolute-form URI with an empty host (RFC 9110 §4.2.1)",
            "/public/x",
            &[(m, "GET"), (u, "http:///public/x")],
            Want::Refused,
        ),
        get(
            "URI with a dot segment",
            "/public/x",
            &[(m, "GET"), (u, "/public/../admin/x")],
            Want::Refused,
        ),
        get(
            "URI with an empty segment before ..",
            "/public/x",
            &[(m, "GET"), (u, "/admin//../public/x")],
            Want::Refused,
        ),
        get(
            "URI with an encoded slash",
            "/public/x",
            &[(m, "GET"), (u, "/public/..%2Fadmin/x")],
            Want::Refused,
        ),
        get(
            "URI with a ..; segment",
            "/public/x",
            &[(m, "GET"), (u, "/public/..;/admin/x")],
            Want::Refused,
        ),
    ]
}

/// Runs a family's cases on `authz_http`, and checks that the proxy never reads the
/// family (SPEC §4a: the proxy judges the request's own method and path).
fn check_family(tag: &str, f: &Family) {
    let gate = Gate::start(tag, |c| {
        c["forward_auth"] = json!({"headers": f.config});
    });
    let good = bearer(GOOD);
    let mut failures = gate.run(&[("authz_http", gate.tg.authz)], &family_cases(f, &good));
    let proxy_cases = [
        get(
            "the proxy judges its own request line",
            "/admin/x",
            &[(f.method, "GET"), (f.uri, "/public/x")],
            Want::NoToken,
        ),
        get(
            "the proxy forwards its own request line",
            "/public/x",
            &[(f.method, "GET"), (f.uri, "/admin/x")],
            Want::Forwarded("/public/x"),
        ),
    ];
    failures.extend(gate.run(&[("proxy", gate.proxy)], &proxy_cases));
    assert_none_failed(&format!("forward_auth.headers {:?}", f.config), &failures);
}

/// `forward_auth.headers: "nginx"` (nginx `auth_request`): the check is of
/// `X-Original-Method` + `X-Original-URI`, each exactly once and visible ASCII, else 400
/// — never the request line, never `X-Forwarded-*` (which a client may add and nginx
/// passes on).
#[test]
fn nginx_family_judges_the_original_method_and_uri() {
    check_family("bypass-nginx", &NGINX);
}

/// `forward_auth.headers: "traefik"` (Traefik ForwardAuth): the mirror of the nginx
/// family with `X-Forwarded-Method` + `X-Forwarded-Uri`; `X-Original-*` is never read.
#[test]
fn traefik_family_judges_the_forwarded_method_and_uri() {
    check_family("bypass-traefik", &TRAEFIK);
}

// === paths ===

/// Request targets that servers read differently (SPEC §4a "Path": a raw `\`, `%00`, an
/// encoded `/` `\` `.` in any case, a `;` on a dot segment, a non-ASCII byte) are
/// refused with 400 and the `invalid_request` challenge on both listeners, and the
/// upstream gets nothing. Most cases start under the anonymous `/public`, so that any
/// reading that judges them lets them through. Each refusal is a decision
/// (`reason="invalid_request"`, SPEC §9). Bytes an HTTP/1.1 parser cannot take in a
/// request line (control bytes, DEL, invalid UTF-8) may be refused by the parser
/// itself: 400, with or without the challenge.
#[test]
fn ambiguous_paths_are_refused_on_proxy_and_authz_http() {
    let gate = Gate::start("bypass-refusals", |_| {});
    let refused: Vec<Case> = [
        "/public\\..\\admin/x",
        "/admin\\..\\public/x",
        "/public/%00/x",
        "/public/..%2Fadmin/x",
        "/public/..%2fadmin/x",
        "/public/..%5Cadmin/x",
        "/public/..%5cadmin/x",
        "/public/%2E%2E/admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2e./admin/x",
        "/public/x%2Ejson",
        "/public/..;/admin/x",
        "/public/..;x=1/admin/x",
        "/public/.;/x",
        "/public/\u{e9}",
        "/admin/\u{e9}/../../public/x",
    ]
    .iter()
    .map(|t| get(&format!("{t:?}"), t, &[], Want::Refused))
    .collect();
    let mut parser: Vec<Case> = ["/public/\u{1}x", "/public/\u{1b}x", "/public/\u{7f}x"]
        .iter()
        .map(|t| get(&format!("{t:?}"), t, &[], Want::BadRequest))
        .collect();
    parser.push(Case {
        name: "invalid UTF-8 (0xFF)".into(),
        raw: b"GET /public/\xffx HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n".to_vec(),
        want: Want::BadRequest,
    });

    let both = gate.both();
    let counted = |listener: &str| {
        decisions(
            &gate.tg,
            &[
                ("listener", listener),
                ("decision", "deny"),
                ("reason", "invalid_request"),
            ],
        )
    };
    let before: Vec<f64> = both.iter().map(|(l, _)| counted(l)).collect();
    let mut failures = gate.run(&both, &refused);
    for ((listener, _), before) in both.iter().zip(before) {
        let n = counted(listener) - before;
        if n != refused.len() as f64 {
            failures.push(format!(
                "{listener}: {n} invalid_request decisions counted for {} refusals",
                refused.len()
            ));
        }
    }
    failures.extend(gate.run(&both, &parser));
    assert_none_failed("ambiguous paths", &failures);
}

/// `authz_http` cannot change the path the app gets (SPEC §4a), so a path that RFC 3986
/// §5.2.4 dot-segment removal (or the decoding of an escaped unreserved character) would
/// turn into another path is refused, whichever way it would go; a path already in its
/// resolved form is judged as it is, its query aside (dots and escapes in the query are
/// not the path's).
#[test]
fn authz_http_refuses_paths_that_are_not_resolved() {
    let gate = Gate::start("bypass-authz-resolved", |_| {});
    let mut cases: Vec<Case> = [
        "/public/../admin/x",
        "/admin/../public/x",
        "/./public/x",
        "/../public/x",
        "/admin//../public/x",
        "/public/./x",
        "/public/x/.",
        "/public/x/..",
        "/public/..",
        "/%61dmin/x",
        "/%70ublic/x",
        "/public/%7Ex",
    ]
    .iter()
    .map(|t| get(t, t, &[], Want::Refused))
    .collect();
    cases.extend([
        get("plain /public", "/public/x", &[], Want::Allowed),
        get("plain /admin", "/admin/x", &[], Want::NoToken),
        get(
            "dots in the query",
            "/public/x?a=/../admin",
            &[],
            Want::Allowed,
        ),
        get(
            "escapes in the query",
            "/public/x?r=%2Fadmin%2F..%5C",
            &[],
            Want::Allowed,
        ),
        get("an empty segment", "/public//x", &[], Want::Allowed),
        get("an escaped space", "/public/a%20b", &[], Want::Allowed),
        get("escaped UTF-8", "/public/caf%C3%A9", &[], Want::Allowed),
    ]);
    let failures = gate.run(&[("authz_http", gate.tg.authz)], &cases);
    assert_none_failed("authz_http, unresolved paths", &failures);
}

/// The proxy resolves dot segments exactly as RFC 3986 §5.2.4 says (empty segments kept,
/// never merged before `..` is resolved) and decodes escaped unreserved characters, then
/// judges that path and forwards that same path with the query unchanged: the app acts
/// on the path that was judged. `/admin//../public/x` is `/admin/public/x` (so 401 and
/// nothing forwarded), not `/public/x` as a reader that merges slashes first has it.
#[test]
fn proxy_forwards_the_resolved_path() {
    let gate = Gate::start("bypass-proxy-resolved", |_| {});
    let good = bearer(GOOD);
    let cases = [
        get(
            "..",
            "/admin/../public/x",
            &[],
            Want::Forwarded("/public/x"),
        ),
        get(".", "/./public/x", &[], Want::Forwarded("/public/x")),
        get(
            ".. above the root",
            "/../public/x",
            &[],
            Want::Forwarded("/public/x"),
        ),
        get(
            "escaped p",
            "/%70ublic/x",
            &[],
            Want::Forwarded("/public/x"),
        ),
        get(
            "escaped ~",
            "/public/%7Ex",
            &[],
            Want::Forwarded("/public/~x"),
        ),
        get(
            "the query is kept",
            "/public/./x?a=1",
            &[],
            Want::Forwarded("/public/x?a=1"),
        ),
        get(
            "the query is kept byte for byte",
            "/admin/../public/x?next=/../admin/%2F",
            &[],
            Want::Forwarded("/public/x?next=/../admin/%2F"),
        ),
        get(
            "empty segments are kept",
            "/public//x",
            &[],
            Want::Forwarded("/public//x"),
        ),
        get(
            "a final ..",
            "/public/x/..",
            &[],
            Want::Forwarded("/public/"),
        ),
        get(
            "other escapes are kept",
            "/public/a%20b",
            &[],
            Want::Forwarded("/public/a%20b"),
        ),
        get(
            "with a valid token",
            "/admin/../orders/1",
            &[("authorization", &good)],
            Want::Forwarded("/orders/1"),
        ),
        get(
            "an empty segment before ..",
            "/admin//../public/x",
            &[],
            Want::NoToken,
        ),
        get("out of /public", "/public/../admin/x", &[], Want::NoToken),
        get("escaped a", "/%61dmin/x", &[], Want::NoToken),
        get("/public/.. is /", "/public/..", &[], Want::NoToken),
    ];
    let failures = gate.run(&[("proxy", gate.proxy)], &cases);
    assert_none_failed("proxy, resolved paths", &failures);
}

/// Empty segments do not count when routes are matched (SPEC §4a): `//admin/x` is under
/// `/admin`, as an app that merges slashes reads it, so a valid token without the
/// `admin` scope gets 403 there on both listeners, never the 200 of an unrouted path;
/// the proxy still forwards the empty segments.
#[test]
fn empty_segments_are_ignored_for_route_matching() {
    let gate = Gate::start("bypass-empty-segments", |_| {});
    let good = bearer(GOOD);
    let auth = [("authorization", good.as_str())];
    let cases = [
        get("//admin/x", "//admin/x", &auth, Want::Forbidden),
        get("/admin//x", "/admin//x", &auth, Want::Forbidden),
        get("///admin", "///admin", &auth, Want::Forbidden),
        get("//admin/x, no token", "//admin/x", &[], Want::NoToken),
    ];
    let mut failures = gate.run(&gate.both(), &cases);
    failures.extend(gate.run(
        &[("authz_http", gate.tg.authz)],
        &[get("//public/x", "//public/x", &[], Want::Allowed)],
    ));
    failures.extend(gate.run(
        &[("proxy", gate.proxy)],
        &[get(
            "//public/x",
            "//public/x",
            &[],
            Want::Forwarded("//public/x"),
        )],
    ));
    assert_none_failed("empty segments", &failures);
}

/// `path_case: "insensitive"` matches route prefixes in any ASCII case, for apps that
/// route that way: `/ADMIN/x` needs the `admin` scope and `/PUBLIC/x` is anonymous; the
/// proxy forwards the path in the case it came in.
/// A segment's `;` parameters do not hide it from the route it names: servlet
/// containers read `/admin;jsessionid=1/x` as `/admin/x`.
#[test]
fn segment_parameters_do_not_hide_a_route() {
    let gate = Gate::start("bypass-segment-params", |_| {});
    let good = bearer(GOOD);
    let auth = [("authorization", good.as_str())];
    let cases = [
        get("/admin;x/y", "/admin;x/y", &auth, Want::Forbidden),
        get(
            "/admin;jsessionid=1",
            "/admin;jsessionid=1",
            &auth,
            Want::Forbidden,
        ),
        get("/;x/admin/y", "/;x/admin/y", &auth, Want::Forbidden),
        get("/admin;x/y, no token", "/admin;x/y", &[], Want::NoToken),
    ];
    let failures = gate.run(&gate.both(), &cases);
    assert_none_failed("segment parameters", &failures);
}

/// Method-override headers are refused: a framework that honours them would act on
/// another method than the one judged (`POST /upload` passes; `DELETE` might not).
#[test]
fn method_override_headers_are_refused() {
    let gate = Gate::start("bypass-method-override", |_| {});
    let good = bearer(GOOD);
    let mut cases = Vec::new();
    for name in [
        "X-HTTP-Method-Override",
        "x-http-method",
        "X-Method-Override",
    ] {
        cases.push(req(
            name,
            "GET",
            "/public/x",
            &[(name, "DELETE")],
            Want::Refused,
        ));
        cases.push(req(
            name,
            "POST",
            "/orders/1",
            &[(name, "DELETE"), ("authorization", good.as_str())],
            Want::Refused,
        ));
    }
    let failures = gate.run(&gate.both(), &cases);
    assert_none_failed("method overrides", &failures);
}

#[test]
fn path_case_insensitive_matches_prefixes_in_any_case() {
    let gate = Gate::start("bypass-case-insensitive", |c| {
        c["path_case"] = json!("insensitive");
    });
    let good = bearer(GOOD);
    let cases = [
        get(
            "/ADMIN/x",
            "/ADMIN/x",
            &[("authorization", &good)],
            Want::Forbidden,
        ),
        get("/Admin/x, no token", "/Admin/x", &[], Want::NoToken),
    ];
    let mut failures = gate.run(&gate.both(), &cases);
    failures.extend(gate.run(
        &[("authz_http", gate.tg.authz)],
        &[get("/PUBLIC/x", "/PUBLIC/x", &[], Want::Allowed)],
    ));
    failures.extend(gate.run(
        &[("proxy", gate.proxy)],
        &[get(
            "/PUBLIC/x",
            "/PUBLIC/x",
            &[],
            Want::Forwarded("/PUBLIC/x"),
        )],
    ));
    assert_none_failed("path_case insensitive", &failures);
}

/// By default (`path_case: "sensitive"`) prefixes match case for case: `/ADMIN/x` is
/// unrouted (any valid token) and `/PUBLIC/x` is not anonymous.
#[test]
fn path_case_is_sensitive_by_default() {
    let gate = Gate::start("bypass-case-sensitive", |_| {});
    let good = bearer(GOOD);
    let mut failures = gate.run(
        &gate.both(),
        &[get("/PUBLIC/x", "/PUBLIC/x", &[], Want::NoToken)],
    );
    failures.extend(gate.run(
        &[("authz_http", gate.tg.authz)],
        &[get(
            "/ADMIN/x",
            "/ADMIN/x",
            &[("authorization", &good)],
            Want::Allowed,
        )],
    ));
    failures.extend(gate.run(
        &[("proxy", gate.proxy)],
        &[get(
            "/ADMIN/x",
            "/ADMIN/x",
            &[("authorization", &good)],
            Want::Forwarded("/ADMIN/x"),
        )],
    ));
    assert_none_failed("path_case sensitive", &failures);
}

// === credentials ===

/// More than one `Authorization` field is 400 whatever the schemes (SPEC §4a): the app,
/// or a proxy behind, may read the other one. Also on the anonymous `/public`, where
/// ignoring a non-Bearer field would have let the request through, and whatever the
/// casing of the field names.
#[test]
fn two_authorization_fields_are_refused_whatever_the_schemes() {
    let gate = Gate::start("bypass-two-authorization", |_| {});
    let good = bearer(GOOD);
    let forged = bearer(FORGED);
    let basic = "Basic Zm9vOmJhcg==";
    let cases = [
        get(
            "Basic + Bearer on /public",
            "/public/x",
            &[("authorization", basic), ("authorization", &good)],
            Want::Refused,
        ),
        get(
            "Basic + Bearer, unrouted",
            "/x",
            &[("authorization", basic), ("authorization", &good)],
            Want::Refused,
        ),
        get(
            "Bearer + Basic on /admin, two casings",
            "/admin/x",
            &[("Authorization", &good), ("authorization", basic)],
            Want::Refused,
        ),
        get(
            "Basic + Basic on /public",
            "/public/x",
            &[("authorization", basic), ("AUTHORIZATION", basic)],
            Want::Refused,
        ),
        get(
            "valid Bearer + forged Bearer on /public",
            "/public/x",
            &[("authorization", &good), ("authorization", &forged)],
            Want::Refused,
        ),
        get(
            "one Bearer field",
            "/x",
            &[("authorization", &good)],
            Want::Allowed,
        ),
    ];
    let failures = gate.run(&gate.both(), &cases);
    assert_none_failed("two Authorization fields", &failures);
}

/// With `token.from_cookies: ["at"]`, a token in the `Authorization` header and one in
/// the cookie at once is 400 (RFC 6750 §2: one method only), whichever is valid and on
/// every route; each alone is judged.
#[test]
fn a_header_token_beside_a_cookie_token_is_refused() {
    let gate = Gate::start("bypass-header-and-cookie", |c| {
        c["token"] = json!({"from_cookies": ["at"]});
    });
    let good = bearer(GOOD);
    let at_good = format!("at={}", token(GOOD));
    let at_forged = format!("theme=dark; at={}", token(FORGED));
    let cases = [
        get(
            "header and cookie, unrouted",
            "/x",
            &[("authorization", &good), ("cookie", &at_good)],
            Want::Refused,
        ),
        get(
            "header and cookie on /public",
            "/public/x",
            &[("authorization", &good), ("cookie", &at_good)],
            Want::Refused,
        ),
        get(
            "valid header, forged cookie",
            "/x",
            &[("authorization", &good), ("cookie", &at_forged)],
            Want::Refused,
        ),
        get(
            "the cookie alone",
            "/x",
            &[("cookie", &at_good)],
            Want::Allowed,
        ),
        get(
            "the cookie alone on /admin",
            "/admin/x",
            &[("cookie", &at_good)],
            Want::Forbidden,
        ),
        get(
            "the header beside an unconfigured cookie",
            "/x",
            &[("authorization", &good), ("cookie", "theme=dark")],
            Want::Allowed,
        ),
    ];
    let failures = gate.run(&gate.both(), &cases);
    assert_none_failed("header and cookie tokens", &failures);
}

/// Cookies are parsed as RFC 6265 §5.2 says, names and values trimmed, so `at =<forged>`
/// is the cookie `at` (a forged token: 401 `invalid_token`, even on the anonymous
/// `/public`, where a parser that skipped it would let the request reach an app that
/// trims); the configured name twice (in one field or two) is 400, and so is a
/// `,`-separated pair naming it, which a lenient parser reads as the cookie `at`.
#[test]
fn cookies_are_read_as_rfc_6265_reads_them() {
    let gate = Gate::start("bypass-cookies", |c| {
        c["token"] = json!({"from_cookies": ["at"]});
    });
    let (good, forged) = (token(GOOD), token(FORGED));
    let spaced_forged = format!("at ={forged}");
    let spaced_forged_second = format!("theme=dark; at ={forged}");
    let spaced_good = format!("at = {good}");
    let plain_good = format!("at={good}");
    let plain_forged = format!("at={forged}");
    let twice = format!("at={good}; at={good}");
    let twice_mixed = format!("at={forged}; theme=dark; at={good}");
    let comma_forged = format!("x=1, at={forged}");
    let comma_good = format!("x=1, at={good}");
    let cases = [
        get(
            "space before =, forged, on /public",
            "/public/x",
            &[("cookie", &spaced_forged)],
            Want::InvalidToken,
        ),
        get(
            "space before =, forged, second cookie, on /public",
            "/public/x",
            &[("cookie", &spaced_forged_second)],
            Want::InvalidToken,
        ),
        get(
            "spaces around =, valid",
            "/x",
            &[("cookie", &spaced_good)],
            Want::Allowed,
        ),
        get(
            "a forged cookie on /public",
            "/public/x",
            &[("cookie", &plain_forged)],
            Want::InvalidToken,
        ),
        get(
            "the name twice in one field",
            "/public/x",
            &[("cookie", &twice)],
            Want::Refused,
        ),
        get(
            "the name twice, one forged",
            "/public/x",
            &[("cookie", &twice_mixed)],
            Want::Refused,
        ),
        get(
            "the name in two Cookie fields",
            "/public/x",
            &[("cookie", &plain_good), ("cookie", &plain_good)],
            Want::Refused,
        ),
        get(
            "a comma pair naming it, forged",
            "/public/x",
            &[("cookie", &comma_forged)],
            Want::Refused,
        ),
        get(
            "a comma pair naming it, valid",
            "/x",
            &[("cookie", &comma_good)],
            Want::Refused,
        ),
        get(
            "a comma pair naming other cookies",
            "/public/x",
            &[("cookie", "theme=dark, lang=en")],
            Want::Allowed,
        ),
        get(
            "an unconfigured cookie only",
            "/public/x",
            &[("cookie", "theme=dark")],
            Want::Allowed,
        ),
    ];
    let failures = gate.run(&gate.both(), &cases);
    assert_none_failed("cookies", &failures);
}

// === spoofed identity headers ===

/// Every header line of an echo whose name reads as `x-auth-subject` once `_` is read as
/// `-` (any case), as (name, value).
fn subject_lines(echo: &Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|pair| {
                    let name = pair[0].as_str()?;
                    let value = pair[1].as_str()?;
                    name.replace('_', "-")
                        .eq_ignore_ascii_case("x-auth-subject")
                        .then(|| (name.to_string(), value.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names in an answer's `x-envoy-auth-headers-to-remove`.
fn removal_list(r: &http::Response) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "x-envoy-auth-headers-to-remove")
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
        .collect()
}

/// With `forward.claim_headers: {"x-auth-subject": "sub"}`, a client header spelt
/// `x_auth_subject` (any case, any mix of `_` and `-`) never reaches the app: CGI-style
/// apps (and nginx with `underscores_in_headers`) read it as `X-Auth-Subject`. Through
/// the proxy the app sees exactly one `x-auth-subject`, tokengate's, with a valid token,
/// and none at all on the anonymous `/public`; other underscore headers pass. On
/// `authz_http` the spelling is listed in `x-envoy-auth-headers-to-remove`.
#[test]
fn spoofed_identity_headers_never_reach_the_app() {
    let gate = Gate::start("bypass-spoof", |_| {});
    let good = bearer(GOOD);
    let mut failures = Vec::new();
    for spelling in [
        "x_auth_subject",
        "X_Auth_Subject",
        "X_AUTH-SUBJECT",
        "x-auth_subject",
    ] {
        for (what, path, auth, subject) in [
            ("valid token", "/x", Some(good.as_str()), Some("alice")),
            ("anonymous", "/public/x", None, None),
        ] {
            let mut headers = vec![(spelling, "root"), ("x_request_id", "r-1")];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let case = get(what, path, &headers, Want::Allowed);

            let a = gate.send(gate.proxy, &case.raw);
            match a.verdict(Want::Allowed) {
                Err(why) => failures.push(format!("proxy, {spelling}, {what}: {why}")),
                Ok(()) => {
                    let e = echo(&a.response);
                    let got = subject_lines(&e);
                    let want: Vec<(String, String)> = subject
                        .map(|s| ("x-auth-subject".to_string(), s.to_string()))
                        .into_iter()
                        .collect();
                    if got != want {
                        failures.push(format!(
                            "proxy, {spelling}, {what}: the app got {got:?}, want {want:?}"
                        ));
                    }
                    if header_values(&e, "x_request_id") != ["r-1"] {
                        failures.push(format!(
                            "proxy, {spelling}, {what}: x_request_id did not reach the app: {e}"
                        ));
                    }
                }
            }

            let a = gate.send(gate.tg.authz, &case.raw);
            if let Err(why) = a.verdict(Want::Allowed) {
                failures.push(format!("authz_http, {spelling}, {what}: {why}"));
                continue;
            }
            let listed = removal_list(&a.response);
            if !listed.iter().any(|n| n.eq_ignore_ascii_case(spelling)) {
                failures.push(format!(
                    "authz_http, {spelling}, {what}: not in x-envoy-auth-headers-to-remove {listed:?}"
                ));
            }
            if a.response.header("x-auth-subject") != subject {
                failures.push(format!(
                    "authz_http, {spelling}, {what}: x-auth-subject {:?}, want {subject:?}",
                    a.response.header("x-auth-subject")
                ));
            }
        }
    }
    assert_none_failed("spoofed identity headers", &failures);
}

// === HTTP/1.1 framing ===

/// The framing errors of SPEC §4a on a listener whose `path` answers 200.
fn framing_errors(path: &str) -> Vec<Case> {
    let case = |name: &str, method: &str, lines: &[&str], want: Want| Case {
        name: name.to_string(),
        raw: head(method, path, lines),
        want,
    };
    let fields: Vec<String> = (0..MAX_FIELDS - 1).map(|i| format!("x-f{i}: 1")).collect();
    let mut too_many = vec![HOST];
    too_many.extend(fields.iter().map(String::as_str));
    // Host, 99 more, connection: 101 fields.
    let mut too_large = format!("GET {path} HTTP/1.1\r\n{HOST}\r\nx-big: ").into_bytes();
    // Unfinished and exactly the limit: the server has read every byte when it answers
    // (unread bytes would turn its close into a reset that can destroy the answer).
    too_large.resize(MAX_HEAD_BYTES, b'a');
    vec![
        case("no Host", "GET", &[], Want::BadRequest),
        case("two Host fields", "GET", &[HOST, HOST], Want::BadRequest),
        case(
            "two different Host fields",
            "GET",
            &[HOST, "host: other.example"],
            Want::BadRequest,
        ),
        case(
            "Transfer-Encoding: identity",
            "POST",
            &[HOST, "transfer-encoding: identity"],
            Want::BadRequest,
        ),
        case(
            "Transfer-Encoding: gzip",
            "POST",
            &[HOST, "transfer-encoding: gzip"],
            Want::BadRequest,
        ),
        case(
            "Transfer-Encoding: chunked, identity",
            "POST",
            &[HOST, "transfer-encoding: chunked, identity"],
            Want::BadRequest,
        ),
        case(
            "Transfer-Encoding chunked, then identity on a second line",
            "POST",
            &[
                HOST,
                "transfer-encoding: chunked",
                "transfer-encoding: identity",
            ],
            Want::BadRequest,
        ),
        case(
            "two different Content-Length fields",
            "POST",
            &[HOST, "content-length: 0", "content-length: 5"],
            Want::BadRequest,
        ),
        case(
            "a Content-Length of two different values",
            "POST",
            &[HOST, "content-length: 0, 5"],
            Want::BadRequest,
        ),
        case("101 header fields", "GET", &too_many, Want::TooLarge),
        Case {
            name: "a head over 64 KiB".into(),
            raw: too_large,
            want: Want::TooLarge,
        },
    ]
}

/// Well-framed requests at the limits, on a listener whose `path` answers 200.
fn framing_controls(path: &str) -> Vec<Case> {
    let fields: Vec<String> = (0..MAX_FIELDS - 2).map(|i| format!("x-f{i}: 1")).collect();
    let mut hundred = vec![HOST];
    hundred.extend(fields.iter().map(String::as_str));
    // Host, 98 more, connection: 100 fields.
    let big = format!("x-big: {}", "a".repeat(60 * 1024));
    vec![
        Case {
            name: "one Host".into(),
            raw: head("GET", path, &[HOST]),
            want: Want::Allowed,
        },
        Case {
            name: "100 header fields".into(),
            raw: head("GET", path, &hundred),
            want: Want::Allowed,
        },
        Case {
            name: "a 60 KiB head".into(),
            raw: head("GET", path, &[HOST, &big]),
            want: Want::Allowed,
        },
    ]
}

/// HTTP/1.1 framing (SPEC §4a, RFC 9112 §3.2 and §6.3) on every HTTP/1.1 listener: no
/// `Host` or two, a `Transfer-Encoding` whose final coding is not `chunked`, and
/// conflicting `Content-Length` values are 400; more than 100 fields or a head over
/// 64 KiB is 431, while exactly 100 fields and a 60 KiB head are served. None of these
/// reaches the upstream, and none is a decision (SPEC §9: protocol errors are not), so
/// `tokengate_decisions_total` does not move.
#[test]
fn framing_errors_are_refused_on_every_http_listener() {
    let gate = Gate::start("bypass-framing", |_| {});
    let listeners = [
        ("authz_http", gate.tg.authz, "/public/x"),
        ("proxy", gate.proxy, "/public/x"),
        ("admin", gate.tg.admin, "/healthz"),
    ];
    let mut failures = Vec::new();
    // Every error first, so that no decision at all falls between the two scrapes.
    let before = decisions(&gate.tg, &[]);
    for (listener, addr, path) in listeners {
        failures.extend(gate.run(&[(listener, addr)], &framing_errors(path)));
    }
    let counted = decisions(&gate.tg, &[]) - before;
    if counted != 0.0 {
        failures.push(format!(
            "framing errors were counted as {counted} decisions (SPEC §9: protocol errors are not decisions)"
        ));
    }
    for (listener, addr, path) in listeners {
        failures.extend(gate.run(&[(listener, addr)], &framing_controls(path)));
    }
    assert_none_failed("HTTP/1.1 framing", &failures);
}

/// Sends `raw` on a fresh connection and reads until the server closes it (at most
/// 10 s): every byte of every answer.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s.write_all(raw)
        .unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The status of every answer in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    bytes
        .windows(12)
        .filter(|w| w.starts_with(b"HTTP/1.1 "))
        .filter_map(|w| std::str::from_utf8(&w[9..12]).ok()?.parse().ok())
        .collect()
}

/// A request with both `Content-Length` and `Transfer-Encoding` whose CL-framed body
/// holds a second request, `GET /admin/x` without a token. Whatever tokengate does with
/// it (400; or judge by `Transfer-Encoding` alone, RFC 9112 §6.1, and then close or
/// judge the second request), no request reaches the upstream unchecked: the upstream
/// gets at most the first, to `/public/x`, with an empty body and without the
/// `Content-Length` (an intermediary must remove it, RFC 9112 §6.1), and the next
/// request through the proxy is the next the upstream sees. An obfuscated
/// `Transfer-Encoding` (final coding not `chunked`, white space before the colon) is
/// 400 with nothing forwarded.
#[test]
fn content_length_beside_transfer_encoding_never_smuggles_a_request() {
    let gate = Gate::start("bypass-smuggling", |_| {});
    let smuggled = "GET /admin/x HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    let n = body.len();
    let variants = [
        (
            "Content-Length, then Transfer-Encoding: chunked",
            format!("content-length: {n}\r\ntransfer-encoding: chunked"),
            false,
        ),
        (
            "Transfer-Encoding: chunked, then Content-Length",
            format!("transfer-encoding: chunked\r\ncontent-length: {n}"),
            false,
        ),
        (
            "chunked, then identity on a second line",
            format!(
                "transfer-encoding: chunked\r\ntransfer-encoding: identity\r\ncontent-length: {n}"
            ),
            true,
        ),
        (
            "xchunked",
            format!("transfer-encoding: xchunked\r\ncontent-length: {n}"),
            true,
        ),
        (
            "white space before the colon (RFC 9112 §5.1)",
            format!("transfer-encoding : chunked\r\ncontent-length: {n}"),
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (name, framing, must_refuse) in &variants {
        let raw = format!("POST /public/x HTTP/1.1\r\n{HOST}\r\n{framing}\r\n\r\n{body}");
        let before = gate.upstream.requests();
        let got = statuses(&exchange(gate.proxy, raw.as_bytes()));
        let forwarded = gate.upstream.requests() - before;
        let last = gate.upstream.last().unwrap_or_default();
        let ok = match got.as_slice() {
            [400] => forwarded == 0,
            [200] | [200, 401] if !must_refuse => {
                forwarded == 1
                    && last["path"] == "/public/x"
                    && last["body_bytes"] == 0
                    && !header_values(&last, "content-length").contains(&n.to_string())
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{name}: answers {got:?}, {forwarded} request(s) reached the upstream, the last: {last}"
            ));
        }
        // A smuggled request would be in the upstream's buffer already: it would arrive
        // before this one.
        let r = http::request(gate.proxy, "GET", "/public/next", &[], b"")
            .unwrap_or_else(|| panic!("proxy did not answer after {name}"));
        let after = gate.upstream.requests() - before;
        let last = gate.upstream.last().unwrap_or_default();
        if r.status != 200 || after != forwarded + 1 || last["path"] != "/public/next" {
            failures.push(format!(
                "{name}: then GET /public/next got {}, the upstream saw {after} request(s) in all, the last: {last}",
                r.status
            ));
        }
    }
    assert_none_failed("CL + TE", &failures);
}

/// Reads one answer from a kept-alive connection (head, then a `content-length` or
/// chunked body): its status. Bytes read past it stay in `buf`. `None` when the
/// connection ends first.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        Some(())
    }
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let eol = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                fill(s, buf)?;
            };
            let line = String::from_utf8_lossy(&buf[..eol]).into_owned();
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..eol + 2);
            // The chunk and its CRLF; after the last (empty) chunk, the final CRLF (no
            // trailers are expected).
            while buf.len() < size + 2 {
                fill(s, buf)?;
            }
            buf.drain(..size + 2);
            if size == 0 {
                return Some(status);
            }
        }
    }
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        fill(s, buf)?;
    }
    buf.drain(..len);
    Some(status)
}

/// On a kept-alive connection (two requests answered 200), a third request head that
/// stops halfway and then nothing: the server answers 408 and closes, or just closes,
/// within the 5 s head timeout (plus slack) on every HTTP/1.1 listener (SPEC §4a). A
/// client must not be able to hold a connection by starting a head and never finishing
/// it. (`hardening::slow_loris_after_a_kept_alive_request_is_cut_off` trickles the head
/// a byte a second, with a looser deadline; here it stops.)
#[test]
fn a_head_that_stops_on_a_kept_alive_connection_is_cut_off() {
    let gate = Gate::start("bypass-stopped-head", |_| {});
    let mut conns = Vec::new();
    for (name, addr, path) in [
        ("authz_http", gate.tg.authz, "/public/x"),
        ("proxy", gate.proxy, "/public/x"),
        ("admin", gate.tg.admin, "/healthz"),
    ] {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut buf = Vec::new();
        for i in 1..=2 {
            s.write_all(format!("GET {path} HTTP/1.1\r\n{HOST}\r\n\r\n").as_bytes())
                .unwrap_or_else(|e| panic!("{name}: request {i}: {e}"));
            let status = read_response(&mut s, &mut buf).unwrap_or_else(|| {
                panic!("{name}: no answer to request {i} on a kept-alive connection")
            });
            assert_eq!(status, 200, "{name}: request {i}");
        }
        s.write_all(format!("GET {path} HTTP/1.1\r\n{HOST}\r\nx-half: ").as_bytes())
            .unwrap_or_else(|e| panic!("{name}: the half head: {e}"));
        conns.push((name, s, buf));
    }
    let sent = Instant::now();
    let deadline = sent + HEAD_TIMEOUT + SLACK;
    let mut failures = Vec::new();
    for (name, mut s, mut got) in conns {
        // What comes after the second answer: a 408 and the close, the close alone, or a
        // reset all mean the server let go.
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            s.set_read_timeout(Some(left))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut chunk = [0u8; 1024];
            match s.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false;
                }
                Err(_) => break true,
            }
        };
        let after = sent.elapsed();
        let answer = String::from_utf8_lossy(&got[..got.len().min(80)]).into_owned();
        if !closed {
            failures.push(format!(
                "{name}: still open {after:?} after a half head (limit {HEAD_TIMEOUT:?} + \
                 {SLACK:?} slack); answered {answer:?}"
            ));
        } else if !got.is_empty() && !got.starts_with(b"HTTP/1.1 408") {
            failures.push(format!("{name}: answered {answer:?}, not 408"));
        } else {
            eprintln!("{name}: let go {after:?} after the half head");
        }
    }
    assert_none_failed("a head that stops", &failures);
}
