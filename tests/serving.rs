//! Every listener end to end, with the real `tokengate` binary on loopback:
//!
//! - a real Envoy 1.40 running `deploy/envoy/ext-authz-http.yaml` (→ `authz_http`) and
//!   `deploy/envoy/ext-authz-grpc.yaml` (→ `authz_grpc`) in front of an echo upstream;
//! - Debian's nginx running `deploy/nginx/auth-request.conf` (→ `authz_http`);
//! - the `proxy` listener itself: the same matrix, plus streaming, hop-by-hop headers,
//!   `X-Forwarded-*`, `strip_authorization`, an upstream that is down (502) or hangs (504);
//! - limits (431 on an oversized request head), ports already in use;
//! - `admin`, SIGHUP (refresh) and SIGTERM (drain, exit 0).
//!
//! The matrix every front end passes: a valid token reaches the upstream with the forward
//! headers and without the client's forged copies; a missing, an invalid token and an
//! insufficient scope give 401/401/403 with tokengate's `WWW-Authenticate`, and never
//! reach the upstream; an `allow_anonymous` route passes without a token, and a forged
//! forward header is removed there too (the upstream must be able to trust that
//! `x-auth-*` comes from tokengate whatever the route).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::envoy::{self, Envoy, Nginx};
use crate::support::upstream::{Mode, Upstream, header_values};
use crate::support::{
    ANY_PORT, ClosedPort, TempDir, Tokengate, fixture_issuer, fixtures, http, token,
};

/// The routes of every serving test.
fn routes() -> Value {
    json!([
        {"path_prefix": "/public", "allow_anonymous": true},
        {"path_prefix": "/orders", "methods": ["POST"], "scopes_all": ["orders:write"]}
    ])
}

/// A running tokengate with the addresses of its optional listeners.
struct Gate {
    tg: Tokengate,
    proxy: Option<SocketAddr>,
    grpc: Option<SocketAddr>,
}

/// Starts tokengate with `authz_http` and `admin`, plus `authz_grpc` when `grpc`, plus
/// `proxy` to `upstream` when given; `patch` edits the config first. Waits until ready.
fn start(
    dir: &TempDir,
    upstream: Option<&str>,
    grpc: bool,
    patch: impl FnOnce(&mut Value),
) -> Gate {
    let mut config = json!({
        "listeners": {
            "authz_http": ANY_PORT,
            "admin": ANY_PORT,
            "authz_grpc": grpc.then_some(ANY_PORT),
            "proxy": upstream.map(|_| ANY_PORT),
        },
        "issuers": [fixture_issuer()],
        "routes": routes(),
        "forward": {
            "claim_headers": {"x-auth-subject": "sub", "x-auth-scopes": "scope"},
            "claims_header": "x-auth-claims"
        }
    });
    if let Some(url) = upstream {
        config["upstream"] = json!({"url": url, "timeout": "1s"});
    }
    patch(&mut config);
    let tg = Tokengate::start(dir, config);
    tg.wait_ready();
    let proxy = upstream.map(|_| tg.addr("proxy"));
    let grpc = grpc.then(|| tg.addr("authz_grpc"));
    Gate { tg, proxy, grpc }
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", token(name))
}

/// The echo the upstream sent back through the front end.
fn echo(resp: &http::Response) -> Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
        panic!(
            "not an upstream echo ({e}): {} {:?} {}",
            resp.status,
            resp.headers,
            resp.body_text()
        )
    })
}

/// Which parts of a denial a front end passes on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Denials {
    /// Status, `WWW-Authenticate` and tokengate's JSON body (Envoy, the proxy).
    Full,
    /// Status and `WWW-Authenticate`; the body is the front end's own (nginx).
    NoBody,
}

/// Sends one request (method, path, headers) through a front end.
type Send<'a> = dyn Fn(&str, &str, &[(&str, &str)]) -> http::Response + 'a;

/// One denial of the matrix.
struct DenyCase {
    method: &'static str,
    path: &'static str,
    token: Option<&'static str>,
    status: u16,
    reason: &'static str,
    challenge: &'static str,
}

/// The matrix of the module docs, through `send`.
fn matrix(front: &str, upstream: &Upstream, denials: Denials, send: &Send<'_>) {
    // A valid token: forward headers set, forged copies gone; the second time the answer
    // comes from the verified-token cache (over gRPC: the answer encoded the first time).
    let good = bearer("GOOD_RS256");
    for pass in ["verified", "cached"] {
        let r = send(
            "GET",
            "/orders/1?page=2",
            &[
                ("authorization", &good),
                ("x-auth-subject", "mallory"),
                ("x-auth-claims", "forged"),
            ],
        );
        assert_eq!(
            r.status,
            200,
            "{front} ({pass}): valid token: {}",
            r.body_text()
        );
        let e = echo(&r);
        assert_eq!(
            e["path"], "/orders/1?page=2",
            "{front} ({pass}): path and query reach the upstream"
        );
        assert_eq!(
            header_values(&e, "x-auth-subject"),
            ["alice"],
            "{front} ({pass}): {e}\n(Envoy applies x-envoy-auth-headers-to-remove / headers_to_remove after \
             setting the authorization server's headers: a name it sets must not be listed)"
        );
        assert_eq!(
            header_values(&e, "x-auth-scopes"),
            ["orders:read orders:write"],
            "{front} ({pass}): {e}"
        );
        let claims = header_values(&e, "x-auth-claims");
        assert_eq!(
            claims.len(),
            1,
            "{front} ({pass}): exactly one x-auth-claims: {e}"
        );
        assert_ne!(
            claims[0], "forged",
            "{front} ({pass}): the forged x-auth-claims reached the upstream"
        );
    }

    // Denials never reach the upstream.
    let before = upstream.requests();
    let cases = [
        DenyCase {
            method: "GET",
            path: "/orders/1",
            token: None,
            status: 401,
            reason: "missing_token",
            challenge: "Bearer realm=\"tokengate\"",
        },
        DenyCase {
            method: "GET",
            path: "/orders/1",
            token: Some("EXPIRED"),
            status: 401,
            reason: "expired",
            challenge: "Bearer realm=\"tokengate\", error=\"invalid_token\"",
        },
        DenyCase {
            method: "POST",
            path: "/orders",
            token: Some("SCOPE_READ_ONLY"),
            status: 403,
            reason: "insufficient_scope",
            challenge: "Bearer realm=\"tokengate\", error=\"insufficient_scope\"",
        },
    ];
    for case in cases {
        let DenyCase {
            method,
            path,
            status,
            reason,
            challenge,
            ..
        } = case;
        let auth = case.token.map(bearer);
        let mut headers = vec![("x-auth-subject", "mallory")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let r = send(method, path, &headers);
        assert_eq!(r.status, status, "{front}: {reason}: {}", r.body_text());
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with(challenge),
            "{front}: {reason}: WWW-Authenticate {www:?}"
        );
        if reason == "insufficient_scope" {
            assert!(www.contains("scope=\"orders:write\""), "{front}: {www}");
        }
        if denials == Denials::Full {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            assert_eq!(body["error"], reason, "{front}: body {}", r.body_text());
        }
    }
    assert_eq!(
        upstream.requests(),
        before,
        "{front}: a denied request reached the upstream"
    );

    // Anonymous route: passes without a token, and the forged header is removed.
    let r = send(
        "GET",
        "/public/info",
        &[("x-auth-subject", "mallory"), ("x-auth-claims", "forged")],
    );
    assert_eq!(r.status, 200, "{front}: anonymous: {}", r.body_text());
    let e = echo(&r);
    assert!(
        header_values(&e, "x-auth-subject").is_empty(),
        "{front}: anonymous: {e}"
    );
    assert!(
        header_values(&e, "x-auth-claims").is_empty(),
        "{front}: anonymous: {e}"
    );
}

/// The decisions tokengate counted for `listener`, as (decision, reason) → count.
fn decided(tg: &Tokengate, listener: &str, decision: &str, reason: &str) -> f64 {
    tg.metrics().sum(
        "tokengate_decisions_total",
        &[
            ("listener", listener),
            ("decision", decision),
            ("reason", reason),
        ],
    )
}

#[test]
fn envoy_http_ext_authz_end_to_end() {
    let dir = TempDir::new("serving-envoy-http");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, None, false, |_| {});
    let envoy = Envoy::start(
        &dir,
        "ext-authz-http.yaml",
        upstream.addr,
        gate.tg.authz.port(),
    );
    matrix("envoy http", &upstream, Denials::Full, &|m, p, h| {
        envoy.request(m, p, h)
    });
    assert!(decided(&gate.tg, "authz_http", "allow", "ok") >= 1.0);
    assert!(decided(&gate.tg, "authz_http", "deny", "insufficient_scope") >= 1.0);
}

#[test]
fn envoy_grpc_ext_authz_end_to_end() {
    let dir = TempDir::new("serving-envoy-grpc");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, None, true, |_| {});
    let grpc = gate.grpc.expect("no grpc listener");
    let envoy = Envoy::start(&dir, "ext-authz-grpc.yaml", upstream.addr, grpc.port());
    matrix("envoy grpc", &upstream, Denials::Full, &|m, p, h| {
        envoy.request(m, p, h)
    });
    // The checks went over gRPC, not HTTP.
    assert!(decided(&gate.tg, "authz_grpc", "allow", "ok") >= 1.0);
    assert!(decided(&gate.tg, "authz_grpc", "allow", "anonymous") >= 1.0);
    assert!(decided(&gate.tg, "authz_grpc", "deny", "expired") >= 1.0);
    assert_eq!(decided(&gate.tg, "authz_http", "allow", "ok"), 0.0);
    // The verified claims arrived as dynamic metadata: the access log prints `sub`.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !envoy.access_log().contains("sub=alice") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        envoy
            .access_log()
            .contains("\"GET /orders/1?page=2\" 200 sub=alice"),
        "access log:\n{}",
        envoy.access_log()
    );
}

#[test]
fn nginx_auth_request_end_to_end() {
    let dir = TempDir::new("serving-nginx");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, None, false, |c| {
        c["forward_auth"] = json!({"headers": "nginx"});
    });
    let nginx = Nginx::start(&dir, upstream.addr, gate.tg.authz);
    matrix("nginx", &upstream, Denials::NoBody, &|m, p, h| {
        nginx.request(m, p, h)
    });
    // tokengate judged the original method and URI, not the subrequest's.
    assert!(decided(&gate.tg, "authz_http", "deny", "insufficient_scope") >= 1.0);
}

#[test]
fn proxy_end_to_end() {
    let dir = TempDir::new("serving-proxy");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), false, |_| {});
    let proxy = gate.proxy.expect("no proxy listener");
    matrix("proxy", &upstream, Denials::Full, &|m, p, h| {
        http::request(proxy, m, p, h, b"").expect("proxy did not answer")
    });
    assert!(decided(&gate.tg, "proxy", "allow", "ok") >= 1.0);
    assert!(decided(&gate.tg, "proxy", "deny", "missing_token") >= 1.0);
}

#[test]
fn proxy_forwards_end_to_end_headers_only() {
    let dir = TempDir::new("serving-proxy-headers");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), false, |_| {});
    let proxy = gate.proxy.expect("no proxy listener");
    let good = bearer("GOOD_RS256");
    let r = http::request(
        proxy,
        "POST",
        "/things?x=1",
        &[
            ("authorization", &good),
            ("connection", "x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "example/1"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "forged.example"),
            ("x-custom", "kept"),
        ],
        b"hello",
    )
    .expect("proxy did not answer");
    assert_eq!(r.status, 200, "{:?} {}", r.headers, r.body_text());
    assert_eq!(
        r.header("x-upstream"),
        Some("echo"),
        "response headers pass through"
    );
    let e = echo(&r);
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/things?x=1");
    assert_eq!(e["body_bytes"], 5);
    for gone in [
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            header_values(&e, gone).is_empty(),
            "{gone} reached the upstream: {e}"
        );
    }
    assert_eq!(header_values(&e, "x-custom"), ["kept"]);
    // Without strip_authorization the app sees the token too.
    assert_eq!(header_values(&e, "authorization"), [good.as_str()]);
    assert_eq!(
        header_values(&e, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(header_values(&e, "x-forwarded-proto"), ["http"]);
    assert_eq!(header_values(&e, "x-forwarded-host"), [proxy.to_string()]);
    assert_eq!(
        header_values(&e, "host"),
        [proxy.to_string()],
        "Host is kept"
    );

    // A chunked request body is streamed through (re-framed by this hop).
    let raw = format!(
        "PUT /things/1 HTTP/1.1\r\nhost: app\r\nauthorization: {good}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    let r = http::send_raw(proxy, raw.as_bytes()).expect("proxy did not answer");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(echo(&r)["body_bytes"], 11);
}

#[test]
fn proxy_strip_authorization_removes_the_token_header() {
    let dir = TempDir::new("serving-proxy-strip");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), false, |c| {
        c["forward"]["strip_authorization"] = json!(true);
    });
    let proxy = gate.proxy.expect("no proxy listener");
    let good = bearer("GOOD_RS256");
    let r = http::request(proxy, "GET", "/orders/1", &[("authorization", &good)], b"")
        .expect("proxy did not answer");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let e = echo(&r);
    assert!(header_values(&e, "authorization").is_empty(), "{e}");
    assert_eq!(header_values(&e, "x-auth-subject"), ["alice"]);
}

/// A body of several MB goes through while the client is still sending it: the upstream
/// has received a good part of the first MiB before the client sends the rest, which a
/// proxy that buffers whole bodies could not do.
#[test]
fn proxy_streams_a_large_request_body() {
    const TOTAL: usize = 8 << 20;
    const FIRST: usize = 1 << 20;
    let dir = TempDir::new("serving-proxy-stream");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), false, |_| {});
    let proxy = gate.proxy.expect("no proxy listener");

    let mut s = TcpStream::connect(proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: app\r\nauthorization: {}\r\ncontent-length: {TOTAL}\r\nconnection: close\r\n\r\n",
        bearer("GOOD_RS256")
    );
    s.write_all(head.as_bytes()).expect("write");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < FIRST {
        s.write_all(&chunk).expect("write");
        sent += chunk.len();
    }
    assert!(
        upstream.wait_until(Duration::from_secs(10), |u| u.body_bytes()
            >= (FIRST / 2) as u64),
        "the upstream got {} bytes while the client held back {} of {TOTAL}: the body is buffered",
        upstream.body_bytes(),
        TOTAL - sent
    );
    while sent < TOTAL {
        s.write_all(&chunk).expect("write");
        sent += chunk.len();
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let e: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(e["body_bytes"], TOTAL as u64, "the upstream got every byte");
}

#[test]
fn proxy_upstream_down_is_502() {
    let dir = TempDir::new("serving-proxy-down");
    // A port bound and never listening: connections are refused.
    let down = ClosedPort::new();
    let gate = start(&dir, Some(&format!("http://{}", down.addr)), false, |_| {});
    let proxy = gate.proxy.expect("no proxy listener");
    let r = http::request(
        proxy,
        "GET",
        "/orders/1",
        &[("authorization", &bearer("GOOD_RS256"))],
        b"",
    )
    .expect("proxy did not answer");
    assert_eq!(r.status, 502, "{}", r.body_text());
    assert!(
        r.body_text().contains("could not be reached"),
        "{}",
        r.body_text()
    );
    // A denial is still a denial: the upstream is not consulted first.
    let r = http::request(proxy, "GET", "/orders/1", &[], b"").expect("proxy did not answer");
    assert_eq!(r.status, 401);
}

#[test]
fn proxy_upstream_hang_is_504_after_the_timeout() {
    let dir = TempDir::new("serving-proxy-hang");
    let upstream = Upstream::start(Mode::Hang);
    let gate = start(&dir, Some(&upstream.url()), false, |_| {});
    let proxy = gate.proxy.expect("no proxy listener");
    let started = Instant::now();
    let r = http::request(
        proxy,
        "GET",
        "/orders/1",
        &[("authorization", &bearer("GOOD_RS256"))],
        b"",
    )
    .expect("proxy did not answer");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body_text());
    assert!(
        r.body_text().contains("did not answer in time"),
        "{}",
        r.body_text()
    );
    assert_eq!(upstream.requests(), 1, "the request reached the upstream");
    // upstream.timeout is 1s.
    assert!(took >= Duration::from_millis(900), "504 after {took:?}");
    assert!(took < Duration::from_secs(10), "504 after {took:?}");
}

/// The request-head limit is 64 KiB (SPEC §4a): a larger head gets 431 on every HTTP
/// listener. The head sent is exactly 64 KiB and unfinished, so that the server has
/// read every byte when it answers (unread bytes would turn its close into a reset
/// that can swallow the answer).
#[test]
fn oversized_request_head_is_431_on_every_http_listener() {
    let dir = TempDir::new("serving-431");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), false, |_| {});
    let proxy = gate.proxy.expect("no proxy listener");
    let mut raw = b"GET /orders/1 HTTP/1.1\r\nhost: app\r\nx-big: ".to_vec();
    raw.resize(64 * 1024, b'a');
    for (name, addr) in [
        ("proxy", proxy),
        ("authz_http", gate.tg.authz),
        ("admin", gate.tg.admin),
    ] {
        let r = http::send_raw(addr, &raw).unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(r.status, 431, "{name}");
    }
    // More than 100 header fields is over the limit too.
    let many: Vec<String> = (0..100).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = many.iter().map(|n| (n.as_str(), "1")).collect();
    let r = http::request(proxy, "GET", "/public/x", &headers, b"").expect("proxy did not answer");
    assert_eq!(r.status, 431, "100 headers");
    assert_eq!(upstream.requests(), 0);
    // Below the limit, a large header is fine.
    let big = "a".repeat(32 * 1024);
    let r = http::request(proxy, "GET", "/public/x", &[("x-big", &big)], b"")
        .expect("proxy did not answer");
    assert_eq!(r.status, 200);
}

/// Runs `tokengate serve` on `config` expecting it to fail; returns its stderr.
fn serve_fails(dir: &TempDir, config: &Value) -> String {
    let path = dir.write("bad.json", config.to_string());
    let mut child = Command::new(crate::support::bin())
        .args(["serve", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success(), "tokengate served on a port in use");
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tokengate did not fail on a port in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_port_in_use_is_an_error_naming_the_listener() {
    let dir = TempDir::new("serving-port-in-use");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for listener in ["authz_grpc", "proxy"] {
        let mut config = json!({
            "listeners": {
                "authz_http": null, "admin": null, "authz_grpc": null, "proxy": null
            },
            "upstream": {"url": "http://127.0.0.1:9"},
            "issuers": [fixture_issuer()],
        });
        config["listeners"][listener] = json!(addr);
        let err = serve_fails(&dir, &config);
        assert!(
            err.contains(&format!("listeners.{listener}")),
            "{listener}: {err}"
        );
        assert!(err.contains(&addr), "{listener}: {err}");
    }
}

#[test]
fn admin_endpoints() {
    let dir = TempDir::new("serving-admin");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), true, |_| {});
    let admin = gate.tg.admin;
    let proxy = gate.proxy.expect("no proxy listener");

    let r = http::get(admin, "/healthz").expect("no /healthz");
    assert_eq!((r.status, r.body_text().trim()), (200, "ok"));
    let r = http::get(admin, "/readyz").expect("no /readyz");
    assert_eq!(r.status, 200);
    let ready: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(ready["ready"], true, "{ready}");
    let keys = gate.tg.keys();
    let names: Vec<&str> = keys["keys"]
        .as_array()
        .map(|l| l.iter().filter_map(|k| k["key"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"rsa-1") && names.contains(&"pem-1"),
        "{keys}"
    );

    // Decisions on the proxy show in /metrics under their listener.
    let good = bearer("GOOD_RS256");
    for auth in [Some(good.as_str()), None] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let _ = http::request(proxy, "GET", "/orders/1", &headers, b"");
    }
    let m = gate.tg.metrics();
    let count = |d: &str, r: &str| {
        m.sum(
            "tokengate_decisions_total",
            &[("listener", "proxy"), ("decision", d), ("reason", r)],
        )
    };
    assert_eq!(count("allow", "ok"), 1.0);
    assert_eq!(count("deny", "missing_token"), 1.0);
    assert!(m.value("tokengate_build_info", &[]).is_some());

    let r = http::request(admin, "POST", "/refresh", &[], b"").expect("no /refresh");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = http::get(admin, "/refresh").expect("no /refresh");
    assert_eq!(r.status, 405, "GET must not refresh: {}", r.body_text());
}

/// SIGHUP reloads key files at once: a key added to the JWKS file works before the
/// (hour-long) scan interval.
#[test]
fn sighup_reloads_keys() {
    let dir = TempDir::new("serving-sighup");
    let full: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("jwks.json")).unwrap())
            .unwrap();
    let only_rsa2: Vec<Value> = full["keys"]
        .as_array()
        .map(|l| l.iter().filter(|k| k["kid"] == "rsa-2").cloned().collect())
        .unwrap_or_default();
    assert_eq!(only_rsa2.len(), 1);
    let jwks = dir.write("jwks.json", json!({"keys": only_rsa2}).to_string());
    let gate = start(&dir, None, false, |c| {
        c["issuers"][0]["key_sources"] = json!([{"jwks_file": jwks.to_string_lossy()}]);
        c["reload"] = json!({"scan_interval": "1h"});
    });
    let tg = &gate.tg;
    assert_eq!(
        tg.check_token("/orders/1", &token("GOOD_RS384")).status,
        200
    );
    assert_eq!(
        tg.check_token("/orders/1", &token("GOOD_RS256")).status,
        401
    );

    dir.write("jwks.json", full.to_string());
    // Not picked up on its own (the scan interval is an hour)...
    assert_eq!(
        tg.check_token("/orders/1", &token("GOOD_RS256")).status,
        401
    );
    // ...but at once on SIGHUP.
    tg.signal("HUP");
    tg.wait_for(
        || tg.check_token("/orders/1", &token("GOOD_RS256")).status == 200,
        "the new key after SIGHUP",
    );
}

/// SIGTERM lets a request in flight (through the proxy, to a slow upstream) finish, then
/// the process exits 0.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let dir = TempDir::new("serving-sigterm");
    let upstream = Upstream::start(Mode::Delay(Duration::from_millis(1500)));
    let mut gate = start(&dir, Some(&upstream.url()), true, |c| {
        c["upstream"]["timeout"] = json!("10s");
    });
    let proxy = gate.proxy.expect("no proxy listener");
    let good = bearer("GOOD_RS256");
    let in_flight = std::thread::spawn(move || {
        http::request(
            proxy,
            "GET",
            "/orders/slow",
            &[("authorization", &good)],
            b"",
        )
    });
    assert!(
        upstream.wait_until(Duration::from_secs(10), |u| u.requests() == 1),
        "the request never reached the upstream"
    );
    gate.tg.signal("TERM");
    let r = in_flight
        .join()
        .unwrap_or_else(|_| panic!("client thread panicked"))
        .expect("the in-flight request was cut off");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(echo(&r)["path"], "/orders/slow");
    let code = gate.tg.wait_exit();
    assert_eq!(code, Some(0), "log:\n{}", gate.tg.logs());
}

/// Every Envoy config in `deploy/envoy` is valid for Envoy 1.40 once its placeholders
/// are substituted.
#[test]
fn deploy_envoy_configs_validate() {
    let dir = TempDir::new("serving-validate");
    let mut files: Vec<_> = std::fs::read_dir(envoy::deploy().join("envoy"))
        .expect("deploy/envoy")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(
        files.contains(&"ext-authz-http.yaml".to_string())
            && files.contains(&"ext-authz-grpc.yaml".to_string()),
        "{files:?}"
    );
    for name in files {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let to = envoy::Addresses {
            listen: at(10000),
            admin: at(10001),
            upstream: at(10002),
            authz: at(10003),
        };
        let doc = envoy::render_envoy(&format!("envoy/{name}"), |doc| envoy::point(doc, &to));
        let path = dir.write(&format!("{name}.json"), doc.to_string());
        let (ok, out) = envoy::validate(&path);
        assert!(ok, "{name}: envoy --mode validate failed:\n{out}");
    }
}

/// The `x-tokengate-shadow-deny` values an answer or an upstream echo carries.
fn shadow_header(headers: &[String]) -> Option<&str> {
    headers.first().map(String::as_str)
}

/// Shadow mode (SPEC §9) on every listener: a request is judged as in enforce (the same
/// reason in `tokengate_decisions_total`), but a denial is let through with
/// `x-tokengate-shadow-deny: <reason>` (and the forward headers of a valid token, none
/// for an invalid one), counted in `tokengate_shadow_denials_total`. A client's copy of
/// the header never reaches the app; a route in `enforce` still refuses; a request
/// refused as `invalid_request` reaches the app through the proxy as it came.
#[test]
fn shadow_mode_lets_denials_through_with_their_reason_on_every_listener() {
    let dir = TempDir::new("serving-shadow");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), true, |c| {
        c["mode"] = json!("shadow");
        c["routes"] = json!([
            {"path_prefix": "/public", "allow_anonymous": true},
            {"path_prefix": "/orders", "methods": ["POST"], "scopes_all": ["orders:write"]},
            {"path_prefix": "/admin", "mode": "enforce"}
        ]);
    });
    let tg = &gate.tg;
    let proxy = gate.proxy.expect("no proxy listener");
    let shadowed = |listener: &str, reason: &str| {
        tg.metrics().sum(
            "tokengate_shadow_denials_total",
            &[("listener", listener), ("reason", reason)],
        )
    };

    // authz_http: each denial answered 200 with its reason; the decision still counted
    // as the denial it is.
    for (what, headers, reason, subject) in [
        ("no token", vec![], "missing_token", None),
        (
            "expired",
            vec![("authorization", bearer("EXPIRED"))],
            "expired",
            None,
        ),
        (
            "valid, scope missing",
            vec![("authorization", bearer("SCOPE_READ_ONLY"))],
            "insufficient_scope",
            Some("alice"),
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = tg.check("POST", "/orders/1", &headers);
        assert_eq!(r.status, 200, "{what}: {}", r.body_text());
        assert_eq!(r.header("x-tokengate-shadow-deny"), Some(reason), "{what}");
        assert_eq!(r.header("x-auth-subject"), subject, "{what}");
        assert_eq!(decided(tg, "authz_http", "deny", reason), 1.0, "{what}");
        assert_eq!(shadowed("authz_http", reason), 1.0, "{what}");
    }
    // An allow carries no shadow header, and strips a client's copy.
    let r = tg.check(
        "POST",
        "/orders/1",
        &[
            ("authorization", &bearer("GOOD_RS256")),
            ("x-tokengate-shadow-deny", "forged"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tokengate-shadow-deny"), None);
    assert!(
        r.header("x-envoy-auth-headers-to-remove")
            .is_some_and(|v| v.split(',').any(|h| h.trim() == "x-tokengate-shadow-deny")),
        "{:?}",
        r.headers
    );
    // A route in enforce mode refuses as usual (and counts no shadow denial).
    let r = tg.check("GET", "/admin/x", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(shadowed("authz_http", "missing_token"), 1.0);

    // proxy: the app gets the denied request, with the reason, never the client's copy.
    let r = http::request(
        proxy,
        "POST",
        "/orders/1",
        &[("x-tokengate-shadow-deny", "forged")],
        b"",
    )
    .expect("proxy answered");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let e = echo(&r);
    assert_eq!(
        header_values(&e, "x-tokengate-shadow-deny"),
        ["missing_token"],
        "{e:#}"
    );
    let r = http::request(
        proxy,
        "GET",
        "/orders/1",
        &[
            ("authorization", &bearer("GOOD_RS256")),
            ("x-tokengate-shadow-deny", "forged"),
        ],
        b"",
    )
    .expect("proxy answered");
    let e = echo(&r);
    assert!(
        header_values(&e, "x-tokengate-shadow-deny").is_empty(),
        "{e:#}"
    );
    assert_eq!(header_values(&e, "x-auth-subject"), ["alice"]);
    // invalid_request: the app gets the request as it came.
    let r = http::request(proxy, "GET", "/public/..%2Forders", &[], b"").expect("proxy answered");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let e = echo(&r);
    assert_eq!(e["path"], "/public/..%2Forders", "{e:#}");
    assert_eq!(
        shadow_header(&header_values(&e, "x-tokengate-shadow-deny")),
        Some("invalid_request")
    );
    assert_eq!(decided(tg, "proxy", "deny", "invalid_request"), 1.0);
    assert_eq!(shadowed("proxy", "invalid_request"), 1.0);

    // authz_grpc behind real Envoy: the OK answer carries the header to the app.
    let grpc = gate.grpc.expect("no grpc listener");
    let envoy = Envoy::start(&dir, "ext-authz-grpc.yaml", upstream.addr, grpc.port());
    let r = envoy.request("GET", "/orders/2", &[("authorization", &bearer("EXPIRED"))]);
    assert_eq!(r.status, 200, "{}", r.body_text());
    let e = echo(&r);
    assert_eq!(
        shadow_header(&header_values(&e, "x-tokengate-shadow-deny")),
        Some("expired"),
        "{e:#}"
    );
    assert_eq!(decided(tg, "authz_grpc", "deny", "expired"), 1.0);
    assert_eq!(shadowed("authz_grpc", "expired"), 1.0);
}

/// A route's CEL rules (SPEC §12) on every listener: a failed rule is the same 403
/// (`insufficient_scope`, a description naming no rule) from `authz_http`, the proxy
/// and `authz_grpc` behind real Envoy; a rule sees each request, so a cached token is
/// judged again by the new request's headers; a rule never lets a denied token through.
#[test]
fn rule_failed_is_the_same_403_on_every_listener() {
    let dir = TempDir::new("serving-rules");
    let upstream = Upstream::start(Mode::Echo);
    let gate = start(&dir, Some(&upstream.url()), true, |c| {
        c["routes"] = json!([
            {"name": "invoices", "path_prefix": "/invoices", "rules": [
                "has(claims.groups) && 'billing' in claims.groups",
                "request.headers['x-tenant'] == claims.tenant"
            ]},
            {"name": "open", "path_prefix": "/open", "rules": ["true"]}
        ]);
    });
    let tg = &gate.tg;
    let proxy = gate.proxy.expect("no proxy listener");
    let mint = |groups: Value| {
        let mut claims = crate::support::mint::claims();
        claims["groups"] = groups;
        claims["tenant"] = json!("acme");
        format!(
            "Bearer {}",
            crate::support::mint::sign(
                jsonwebtoken::Algorithm::RS256,
                "rsa-1",
                Some("rsa-1"),
                &claims
            )
        )
    };
    let billing = mint(json!(["billing", "ops"]));
    let ops = mint(json!(["ops"]));

    // authz_http: allowed, then the same (now cached) token with another tenant header.
    let ok = tg.check(
        "GET",
        "/invoices/1",
        &[("authorization", &billing), ("x-tenant", "acme")],
    );
    assert_eq!(ok.status, 200, "{}", ok.body_text());
    let refused = tg.check(
        "GET",
        "/invoices/1",
        &[("authorization", &billing), ("x-tenant", "evil")],
    );
    assert_eq!(
        (refused.status, refused.error()),
        (403, "rule_failed".into())
    );
    let challenge = refused
        .header("www-authenticate")
        .expect("a challenge")
        .to_string();
    assert_eq!(
        challenge,
        "Bearer realm=\"tokengate\", error=\"insufficient_scope\", \
         error_description=\"the request is not allowed by the route's policy\""
    );
    assert!(
        tg.metrics()
            .value("tokengate_token_cache_requests_total", &[("result", "hit")])
            .is_some_and(|v| v >= 1.0),
        "the second check was not answered from the cache"
    );
    let again = tg.check(
        "GET",
        "/invoices/1",
        &[("authorization", &billing), ("x-tenant", "acme")],
    );
    assert_eq!(again.status, 200, "the cached token, the right header");
    let r = tg.check(
        "GET",
        "/invoices/1",
        &[("authorization", &ops), ("x-tenant", "acme")],
    );
    assert_eq!(r.status, 403, "not in the billing group");

    // The proxy and Envoy's gRPC ext_authz give the same answer.
    let r = http::request(
        proxy,
        "GET",
        "/invoices/2",
        &[("authorization", &ops), ("x-tenant", "acme")],
        b"",
    )
    .expect("proxy answered");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()));
    let grpc = gate.grpc.expect("no grpc listener");
    // The shipped config sends only the token's headers; a rule's header must be added.
    let envoy = Envoy::start_with(
        &dir,
        "ext-authz-grpc.yaml",
        upstream.addr,
        grpc.port(),
        |doc| {
            let allowed = &mut envoy::ext_authz_filter(doc)["allowed_headers"]["patterns"];
            allowed
                .as_array_mut()
                .expect("allowed_headers patterns")
                .push(json!({"exact": "x-tenant"}));
        },
    );
    let r = envoy.request(
        "GET",
        "/invoices/3",
        &[("authorization", &billing), ("x-tenant", "evil")],
    );
    assert_eq!(r.status, 403, "{}", r.body_text());
    assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()));
    let r = envoy.request(
        "GET",
        "/invoices/3",
        &[("authorization", &billing), ("x-tenant", "acme")],
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(echo(&r)["path"], "/invoices/3");
    for listener in ["authz_http", "proxy", "authz_grpc"] {
        assert!(
            decided(tg, listener, "deny", "rule_failed") >= 1.0,
            "{listener}"
        );
    }
    assert_eq!(
        tg.metrics()
            .value("tokengate_rule_denials_total", &[("route", "invoices")]),
        Some(4.0)
    );

    // Rules run on valid tokens only: `true` lets no invalid or missing token through.
    let r = tg.check("GET", "/open/x", &[("authorization", &bearer("EXPIRED"))]);
    assert_eq!((r.status, r.error()), (401, "expired".into()));
    assert_eq!(tg.check("GET", "/open/x", &[]).status, 401);
    assert_eq!(
        tg.check("GET", "/open/x", &[("authorization", &ops)])
            .status,
        200
    );
}
