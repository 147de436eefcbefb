//! The bypass classes of the edge issue end to end, through the shipped front proxies:
//! nginx running `deploy/nginx/auth-request.conf` (tokengate with
//! `forward_auth.headers: "nginx"`), and Envoy running `deploy/envoy/ext-authz-http.yaml`
//! and `deploy/envoy/ext-authz-grpc.yaml` (only their addresses changed), each asking a
//! real tokengate about every request, with an echo app behind.
//!
//! The client writes raw bytes, so that every byte of the request line, the headers and
//! the framing is the test's: paths two readers resolve differently (dot segments,
//! encoded `/` `\` `.`, `..;`, `//`, escaped unreserved characters, fragments, absolute
//! form), override headers no client may set (`X-Original-*`, `X-Forwarded-*`), two
//! credentials, cookies a lenient parser reads otherwise, identity headers under another
//! spelling (`x_auth_subject`), smuggled and pipelined requests.
//!
//! What is asserted is what reached the app, read the way a lenient app reads it
//! ([`lenient_path`], [`credentials`]): either the front answered non-2xx and the app
//! got nothing, or the app got one request that it may act on — under `/public`, or with
//! the one valid token (which lacks the `admin` scope, so never `/admin` nor
//! `DELETE /orders`), never with a credential tokengate did not verify nor an identity
//! header tokengate did not set. Statuses are asserted only where the front itself
//! decides (nginx turns tokengate's 400 into 500; Envoy refuses a header name with `_`
//! with 400) and for the controls, which show that the stack lets through what it must.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::support::envoy::{Envoy, Nginx};
use crate::support::upstream::{Mode, Upstream, header_values};
use crate::support::{ANY_PORT, TempDir, Tokengate, fixture_issuer, http, token};

/// The valid fixture token: `sub` alice, scopes `orders:read orders:write`.
const VALID: &str = "GOOD_RS256";
/// A well-formed token signed by a key tokengate does not know.
const FORGED: &str = "FOREIGN_KNOWN_KID";
/// The scope `/admin` and `DELETE /orders` need, which [`VALID`] lacks.
const ADMIN_SCOPE: &str = "admin";
/// The cookie tokengate also reads tokens from.
const COOKIE: &str = "at";
/// The forward header tokengate sets from `sub`.
const SUBJECT_HEADER: &str = "x-auth-subject";
/// `sub` of [`VALID`].
const SUBJECT: &str = "alice";

/// The front proxy in front of tokengate and the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    /// `deploy/nginx/auth-request.conf` → `authz_http`.
    Nginx,
    /// `deploy/envoy/ext-authz-http.yaml` → `authz_http`.
    EnvoyHttp,
    /// `deploy/envoy/ext-authz-grpc.yaml` → `authz_grpc`.
    EnvoyGrpc,
}

/// What a case may end in, beyond the rule every case obeys (see [`judge`]).
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A control: the app gets it (2xx), with exactly this `x-auth-subject` (or none).
    Reach { subject: Option<&'static str> },
    /// SPEC §4a refuses it: non-2xx, the app gets nothing.
    Refused,
    /// The front and tokengate decide; only what the app got is judged.
    Judged,
}

/// One request sent to the front proxy.
struct Case {
    /// What it tries.
    name: String,
    /// The bytes on the wire.
    raw: Vec<u8>,
    expect: Expect,
    /// The status a front must answer, where it decides.
    status: fn(Front) -> Option<u16>,
}

impl Case {
    fn new(name: impl Into<String>, raw: Vec<u8>, expect: Expect) -> Case {
        Case {
            name: name.into(),
            raw,
            expect,
            status: |_| None,
        }
    }

    fn status(mut self, status: fn(Front) -> Option<u16>) -> Case {
        self.status = status;
        self
    }
}

/// nginx `auth_request` with `forward_auth.headers: "nginx"`: no request of [`cases`]
/// reaches the app in a form it may not act on.
#[test]
fn nginx_never_hands_the_app_a_request_tokengate_did_not_allow() {
    let dir = TempDir::new("bypass-e2e-nginx");
    let upstream = Upstream::start(Mode::Echo);
    let tg = Tokengate::start(&dir, config("nginx"));
    tg.wait_ready();
    let nginx = Nginx::start(&dir, upstream.addr, tg.authz);
    run(Front::Nginx, nginx.listen, &upstream, &|| {
        format!(
            "nginx error log (end):\n{}\ntokengate log (end):\n{}",
            tail(&read(&nginx.log)),
            tail(&tg.logs())
        )
    });
}

/// Envoy HTTP ext_authz (`forward_auth.headers: "none"`): no request of [`cases`]
/// reaches the app in a form it may not act on.
#[test]
fn envoy_http_ext_authz_never_hands_the_app_a_request_tokengate_did_not_allow() {
    let dir = TempDir::new("bypass-e2e-envoy-http");
    let upstream = Upstream::start(Mode::Echo);
    let tg = Tokengate::start(&dir, config("none"));
    tg.wait_ready();
    let envoy = Envoy::start(&dir, "ext-authz-http.yaml", upstream.addr, tg.authz.port());
    run(Front::EnvoyHttp, envoy.listen, &upstream, &|| {
        format!(
            "envoy log (end):\n{}\ntokengate log (end):\n{}",
            tail(&read(&envoy.log)),
            tail(&tg.logs())
        )
    });
}

/// Envoy gRPC ext_authz (`authz_grpc`): no request of [`cases`] reaches the app in a
/// form it may not act on.
#[test]
fn envoy_grpc_ext_authz_never_hands_the_app_a_request_tokengate_did_not_allow() {
    let dir = TempDir::new("bypass-e2e-envoy-grpc");
    let upstream = Upstream::start(Mode::Echo);
    let mut cfg = config("none");
    cfg["listeners"] = json!({ "authz_grpc": ANY_PORT });
    let tg = Tokengate::start(&dir, cfg);
    tg.wait_ready();
    let grpc = tg.addr("authz_grpc");
    let envoy = Envoy::start(&dir, "ext-authz-grpc.yaml", upstream.addr, grpc.port());
    run(Front::EnvoyGrpc, envoy.listen, &upstream, &|| {
        format!(
            "envoy log (end):\n{}\ntokengate log (end):\n{}",
            tail(&read(&envoy.log)),
            tail(&tg.logs())
        )
    });
}

/// tokengate's config: `/public` anonymous, `/admin` and `DELETE /orders` need
/// [`ADMIN_SCOPE`], everything else a valid token; tokens also from cookie [`COOKIE`];
/// `sub` forwarded as [`SUBJECT_HEADER`]; `forward_auth.headers` as given.
fn config(forward_auth: &str) -> Value {
    json!({
        "issuers": [fixture_issuer()],
        "forward_auth": { "headers": forward_auth },
        "routes": [
            { "path_prefix": "/public", "allow_anonymous": true },
            { "path_prefix": "/admin", "scopes_all": [ADMIN_SCOPE] },
            { "path_prefix": "/orders", "methods": ["DELETE"], "scopes_all": [ADMIN_SCOPE] }
        ],
        "token": { "from_cookies": [COOKIE] },
        "forward": { "claim_headers": { SUBJECT_HEADER: "sub" } }
    })
}

/// Sends every case to the front at `addr` and collects each one that breaks [`judge`];
/// fails with all of them and `logs()`.
fn run(front: Front, addr: SocketAddr, upstream: &Upstream, logs: &dyn Fn() -> String) {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let before = upstream.requests();
        let answer = http::send_raw(addr, &case.raw);
        // The app has counted whatever it got before the front could answer.
        let received = upstream.requests() - before;
        let status = answer.as_ref().map(|r| r.status);
        let seen = if received > 0 { upstream.last() } else { None };
        if let Err(why) = judge(front, case, status, received, seen.as_ref()) {
            let answer = answer.map_or_else(
                || "none (closed, or not HTTP)".to_string(),
                |r| {
                    let body: String = r.body_text().chars().take(200).collect();
                    format!("{} {body}", r.status)
                },
            );
            failures.push(format!(
                "- {}: {why}\n    sent: {}\n    answer: {answer}\n    app got: {}",
                case.name,
                String::from_utf8_lossy(&case.raw).escape_debug(),
                seen.map_or_else(|| "nothing".to_string(), |e| e.to_string()),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{front:?}: {} of {} cases failed:\n{}\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        logs()
    );
}

/// The rule every case obeys, then the case's own [`Expect`] and status: a non-2xx
/// answer means the app got nothing; a 2xx answer means the app got exactly one
/// request, which [`app_may_act_on`].
fn judge(
    front: Front,
    case: &Case,
    status: Option<u16>,
    received: usize,
    seen: Option<&Value>,
) -> Result<(), String> {
    let success = status.is_some_and(|s| (200..300).contains(&s));
    if !success && received > 0 {
        return Err(format!(
            "answered {status:?}, yet the app got {received} request(s)"
        ));
    }
    if success && received != 1 {
        return Err(format!(
            "answered {status:?}; the app got {received} requests for one"
        ));
    }
    if let Some(want) = (case.status)(front)
        && status != Some(want)
    {
        return Err(format!("answered {status:?}, want {want}"));
    }
    match case.expect {
        Expect::Refused if success => {
            return Err("SPEC §4a refuses this request, yet the app got it".into());
        }
        Expect::Reach { .. } if !success => {
            return Err("a control that must reach the app did not".into());
        }
        Expect::Reach { subject } => {
            let echo = seen.ok_or("a 2xx answer without an echo")?;
            let got = header_values(echo, SUBJECT_HEADER);
            let want: Vec<String> = subject.iter().map(ToString::to_string).collect();
            if got != want {
                return Err(format!(
                    "the app got {SUBJECT_HEADER} {got:?}, want {want:?}"
                ));
            }
        }
        Expect::Refused | Expect::Judged => {}
    }
    seen.map_or(Ok(()), app_may_act_on)
}

/// Whether an app that reads requests leniently may act on the request it got (`echo`,
/// as the echo app reports it): every credential it sees is the valid token, verified by
/// tokengate, and there is at most one; every identity header (any spelling, `_` for `-`)
/// is tokengate's, for that token; its path is under `/public`, or the token is there
/// and the path is neither under `/admin` nor `DELETE` under `/orders`.
fn app_may_act_on(echo: &Value) -> Result<(), String> {
    let method = echo["method"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let target = echo["path"].as_str().unwrap_or_default();
    let headers: Vec<(String, String)> = echo["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pair| {
            let part = |i: usize| pair[i].as_str().unwrap_or_default().to_string();
            (part(0), part(1))
        })
        .collect();

    let creds = credentials(&headers);
    let valid = format!("Bearer {}", token(VALID));
    let verified = match creds.as_slice() {
        [] => false,
        [only] if *only == valid => true,
        _ => {
            return Err(format!(
                "the app got credentials tokengate did not verify: {creds:?}"
            ));
        }
    };

    for (name, value) in &headers {
        if lenient_name(name) != SUBJECT_HEADER {
            continue;
        }
        let tokengates = name.eq_ignore_ascii_case(SUBJECT_HEADER) && verified && value == SUBJECT;
        if !tokengates {
            return Err(format!(
                "the app got `{name}: {value}`, which tokengate did not set"
            ));
        }
    }
    let identities = headers
        .iter()
        .filter(|(n, _)| lenient_name(n) == SUBJECT_HEADER)
        .count();
    if identities > 1 {
        return Err(format!("the app got {identities} {SUBJECT_HEADER} headers"));
    }

    let path = lenient_path(target);
    if under(&path, "/public") {
        return Ok(());
    }
    if !verified {
        return Err(format!(
            "the app got {method} {target} (read as {path}) without the valid token"
        ));
    }
    if under(&path, "/admin") || (under(&path, "/orders") && method == "DELETE") {
        return Err(format!(
            "the app got {method} {target} (read as {path}), which needs the {ADMIN_SCOPE} \
             scope the token lacks"
        ));
    }
    Ok(())
}

/// Every credential a lenient app finds: each comma-separated part of every
/// `Authorization` field, and every value of cookie [`COOKIE`] when pairs are split at
/// `;` or `,` and names trimmed (written `cookie VALUE`).
fn credentials(headers: &[(String, String)]) -> Vec<String> {
    let mut creds = Vec::new();
    for (name, value) in headers {
        match lenient_name(name).as_str() {
            "authorization" => creds.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from),
            ),
            "cookie" => {
                for pair in value.split([';', ',']) {
                    if let Some((n, v)) = pair.split_once('=')
                        && n.trim() == COOKIE
                    {
                        creds.push(format!("cookie {}", v.trim()));
                    }
                }
            }
            _ => {}
        }
    }
    creds
}

/// A header name as CGI-style apps read it: `_` and `-` alike, any case.
fn lenient_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// The path a lenient app routes on: the authority of an absolute-form target, the query
/// and the fragment dropped; percent-decoded once; `\` read as `/`; a `;` parameter on a
/// dot segment dropped (`..;x` is `..`); empty segments merged; dot segments resolved.
fn lenient_path(target: &str) -> String {
    let mut t = target;
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let rest = t.split_once("//").map_or("", |(_, r)| r);
        t = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let t = t.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_decode(t).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        let bare = segment.split(';').next().unwrap_or_default();
        let segment = if bare == "." || bare == ".." {
            bare
        } else {
            segment
        };
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// `%XX` escapes decoded once; a malformed one kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Segment-aware prefix: `/public` and `/public/...`, never `/publicity`.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `METHOD TARGET HTTP/1.1`, a `Host`, the header `lines` as given, `connection: close`.
fn head(method: &str, target: &str, lines: &[&str]) -> Vec<u8> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nhost: app.example\r\n");
    for line in lines {
        raw.push_str(line);
        raw.push_str("\r\n");
    }
    raw.push_str("connection: close\r\n\r\n");
    raw.into_bytes()
}

/// Envoy refuses a header name with `_` itself (`headers_with_underscores_action:
/// REJECT_REQUEST`); nginx drops it (`underscores_in_headers off`).
fn envoy_refuses_underscores(front: Front) -> Option<u16> {
    (front != Front::Nginx).then_some(400)
}

/// The requests, controls first.
fn cases() -> Vec<Case> {
    let valid = format!("authorization: Bearer {}", token(VALID));
    let forged = format!("authorization: Bearer {}", token(FORGED));
    let two_bearers = format!("{valid}, Bearer {}", token(FORGED));
    let (valid, forged, two_bearers) = (valid.as_str(), forged.as_str(), two_bearers.as_str());
    let basic = "authorization: Basic YWxpY2U6c2VjcmV0";

    let mut cases = vec![
        // Controls: what the stack must let through, and what tokengate itself decides.
        Case::new(
            "control: anonymous route",
            head("GET", "/public/x", &[]),
            Expect::Reach { subject: None },
        )
        .status(|_| Some(200)),
        Case::new(
            "control: valid token",
            head("GET", "/orders/x", &[valid]),
            Expect::Reach {
                subject: Some(SUBJECT),
            },
        )
        .status(|_| Some(200)),
        Case::new(
            "control: no token",
            head("GET", "/admin/x", &[]),
            Expect::Refused,
        )
        .status(|_| Some(401)),
        Case::new(
            "control: valid token without the admin scope",
            head("GET", "/admin/x", &[valid]),
            Expect::Refused,
        )
        .status(|_| Some(403)),
        Case::new(
            "control: DELETE /orders without the admin scope",
            head("DELETE", "/orders/x", &[valid]),
            Expect::Refused,
        )
        .status(|_| Some(403)),
        Case::new(
            "control: forged token on the anonymous route",
            head("GET", "/public/x", &[forged]),
            Expect::Refused,
        )
        .status(|_| Some(401)),
    ];

    // Targets a lenient app could read as a path outside /public, without a token:
    // refused, or read under /public.
    for target in [
        "/admin//../public/x",
        "/admin/..%2Fpublic",
        "/admin%2F..%2Fpublic",
        "/admin\\..\\public\\x",
        "/public\\..\\admin",
        "/public/..;/admin",
        "/public/..;x=1/admin",
        "/public/.;/../admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/public/%2E%2E%2Fadmin",
        "/public/..%2fadmin",
        "/public/..%5Cadmin",
        "/public//../admin",
        "/public/x/../../admin",
        "/public/./../admin",
        "/PUBLIC/../admin",
        "/%61dmin/x",
        "//admin/x",
        "/pub%6Cic/../admin",
        "/public;x=1/../admin",
        "/public/%252e%252e/admin",
        "/public/x#/../../admin",
        "/public/x?/../../admin",
        "/public/x/..%00/../admin",
        "/public/\u{e9}/../../admin",
        "http://app.example/public/../admin",
        "http://app.example/admin/x",
    ] {
        cases.push(Case::new(
            format!("no token: GET {target}"),
            head("GET", target, &[]),
            Expect::Judged,
        ));
    }

    // The same tricks towards /admin with the valid token, which lacks the admin scope:
    // never allowed.
    for target in [
        "//admin/x",
        "///admin/x",
        "/admin//x",
        "/%61dmin/x",
        "/admin%2Fx",
        "/admin/./x",
        "/x/..//admin/x",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/..;/admin/x",
        "http://app.example//admin/x",
    ] {
        cases.push(Case::new(
            format!("valid token without the admin scope: GET {target}"),
            head("GET", target, &[valid]),
            Expect::Refused,
        ));
    }

    cases.extend([
        // Override headers are the front's to set (nginx) or ignored (Envoy, and the
        // other family): a client's copies never choose what tokengate judges.
        Case::new(
            "no token: X-Forwarded-Uri/-Method name an anonymous path",
            head(
                "GET",
                "/admin/x",
                &["x-forwarded-uri: /public/x", "x-forwarded-method: GET"],
            ),
            Expect::Refused,
        ),
        Case::new(
            "no token: X-Original-URI/-Method name an anonymous path",
            head(
                "GET",
                "/admin/x",
                &["x-original-uri: /public/x", "x-original-method: GET"],
            ),
            Expect::Refused,
        ),
        Case::new(
            "no token: both families, X-Original-URI twice",
            head(
                "GET",
                "/admin/x",
                &[
                    "x-original-uri: /public/x",
                    "x-original-uri: /public/y",
                    "x-forwarded-uri: /public/x",
                ],
            ),
            Expect::Refused,
        ),
        Case::new(
            "valid token: X-Forwarded-Uri names an allowed path on /admin",
            head("GET", "/admin/x", &[valid, "x-forwarded-uri: /orders/x"]),
            Expect::Refused,
        ),
        Case::new(
            "valid token: X-Forwarded-Method: GET on DELETE /orders",
            head("DELETE", "/orders/x", &[valid, "x-forwarded-method: GET"]),
            Expect::Refused,
        ),
        Case::new(
            "valid token: X-Original-Method: GET on DELETE /orders",
            head(
                "DELETE",
                "/orders/x",
                &[valid, "x-original-method: GET", "x-original-uri: /orders/x"],
            ),
            Expect::Refused,
        ),
        Case::new(
            "valid token: lower-case `delete` on /orders",
            head("delete", "/orders/x", &[valid]),
            Expect::Judged,
        ),
        // One credential, once (RFC 6750 §2).
        Case::new(
            "Authorization: Basic, then Authorization: Bearer <valid>",
            head("GET", "/orders/x", &[basic, valid]),
            Expect::Refused,
        ),
        Case::new(
            "Authorization: Bearer <valid>, then Authorization: Basic",
            head("GET", "/orders/x", &[valid, basic]),
            Expect::Refused,
        ),
        Case::new(
            "anonymous route: Authorization: Basic, then Authorization: Bearer <forged>",
            head("GET", "/public/x", &[basic, forged]),
            Expect::Refused,
        ),
        Case::new(
            "anonymous route: one Authorization with two bearer tokens",
            head("GET", "/public/x", &[two_bearers]),
            Expect::Refused,
        ),
        Case::new(
            "anonymous route: Cookie: at =forged (space before `=`)",
            head("GET", "/public/x", &["cookie: at =forged"]),
            Expect::Refused,
        ),
        Case::new(
            "anonymous route: Cookie: a=1, at=forged (a `,`-separated pair)",
            head("GET", "/public/x", &["cookie: a=1, at=forged"]),
            Expect::Refused,
        ),
        Case::new(
            "anonymous route: two Cookie fields, the second at=forged",
            head("GET", "/public/x", &["cookie: a=1", "cookie: at=forged"]),
            Expect::Refused,
        ),
        Case::new(
            "anonymous route: Cookie: at=forged; at=forged2",
            head("GET", "/public/x", &["cookie: at=forged; at=forged2"]),
            Expect::Refused,
        ),
        Case::new(
            "anonymous route: Cookie: ; at=\"forged\"",
            head("GET", "/public/x", &["cookie: ; at=\"forged\""]),
            Expect::Refused,
        ),
        Case::new(
            "Bearer <valid> and Cookie: at=forged",
            head("GET", "/orders/x", &[valid, "cookie: at=forged"]),
            Expect::Refused,
        ),
        // Identity headers: only tokengate's reach the app.
        Case::new(
            "anonymous route: X-Auth-Subject: root",
            head("GET", "/public/x", &["X-Auth-Subject: root"]),
            Expect::Judged,
        ),
        Case::new(
            "valid token: X-Auth-Subject: root",
            head("GET", "/orders/x", &[valid, "X-Auth-Subject: root"]),
            Expect::Judged,
        ),
        Case::new(
            "anonymous route: `x-auth-subject : root` (space before the colon)",
            head("GET", "/public/x", &["x-auth-subject : root"]),
            Expect::Judged,
        ),
        Case::new(
            "anonymous route: x-auth-subject: root folded into another header",
            head("GET", "/public/x", &["x-note: 1", " x-auth-subject: root"]),
            Expect::Judged,
        ),
    ]);
    for line in [
        "x_auth_subject: root",
        "X_AUTH_SUBJECT: root",
        "x-auth_subject: root",
        "x_auth-subject: root",
    ] {
        cases.push(
            Case::new(
                format!("anonymous route: `{line}`"),
                head("GET", "/public/x", &[line]),
                Expect::Judged,
            )
            .status(envoy_refuses_underscores),
        );
        cases.push(
            Case::new(
                format!("valid token: `{line}`"),
                head("GET", "/orders/x", &[valid, line]),
                Expect::Judged,
            )
            .status(envoy_refuses_underscores),
        );
    }

    // Framing: a second request hidden in the body, or after the first.
    let smuggled = "GET /admin/x HTTP/1.1\r\nhost: app.example\r\n\r\n";
    let chunked = format!("0\r\n\r\n{smuggled}");
    let post = |framing: &str, body: &str| {
        format!(
            "POST /public/x HTTP/1.1\r\nhost: app.example\r\n{framing}connection: close\r\n\r\n{body}"
        )
        .into_bytes()
    };
    cases.extend([
        Case::new(
            "Content-Length and Transfer-Encoding: chunked, a request after the last chunk",
            post(
                &format!(
                    "content-length: {}\r\ntransfer-encoding: chunked\r\n",
                    chunked.len()
                ),
                &chunked,
            ),
            Expect::Judged,
        ),
        Case::new(
            "Transfer-Encoding: chunked, then Content-Length",
            post(
                &format!(
                    "transfer-encoding: chunked\r\ncontent-length: {}\r\n",
                    chunked.len()
                ),
                &chunked,
            ),
            Expect::Judged,
        ),
        Case::new(
            "two Content-Length, 0 and the smuggled request's length",
            post(
                &format!(
                    "content-length: 0\r\ncontent-length: {}\r\n",
                    smuggled.len()
                ),
                smuggled,
            ),
            Expect::Judged,
        ),
        Case::new(
            "Transfer-Encoding: xchunked with Content-Length",
            post(
                &format!(
                    "transfer-encoding: xchunked\r\ncontent-length: {}\r\n",
                    chunked.len()
                ),
                &chunked,
            ),
            Expect::Judged,
        ),
        Case::new(
            "pipelined: GET /public/x, then GET /admin/x",
            b"GET /public/x HTTP/1.1\r\nhost: app.example\r\n\r\n\
              GET /admin/x HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\n\r\n"
                .to_vec(),
            Expect::Judged,
        ),
    ]);
    cases
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last lines of a log, enough to see the end of a failing run.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
