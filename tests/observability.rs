//! Metrics end to end, against the built `tokengate serve`:
//!
//! - traffic through every decision path (allowed by kid and by fallback, every deny
//!   reason reachable over HTTP, a cache hit, an unknown-kid refetch against a live JWKS
//!   server, a config and a key-file reload error, a key retired from the JWKS) leaves
//!   every SPEC §7 family, with its exact label names, types and the expected values,
//!   on `/metrics`, in agreement with `/keys` and `tokengate keys --admin`;
//! - a flood of 2,000 forged tokens (random kids, claims and issuers) changes values
//!   only: the set of series stays exactly the same;
//! - a real Prometheus (Debian's `prometheus`, required: the test fails without it)
//!   scrapes tokengate and evaluates every expression of `dashboards/tokengate.json` and
//!   every rule of `deploy/prometheus/tokengate-rules.yaml`; the key panels have data;
//! - `promtool` accepts the rule file, and its unit tests show each alert firing on the
//!   situation it names and staying quiet on the look-alike that is fine.
//!
//! The stack every test starts: issuer `main` with three sources — a remote JWKS served
//! by [`JwksServer`] (`rsa-2`, `ec-p384`; `ec-p384` revoked by kid), a `jwks_file` in a
//! temp dir (`rsa-1`, `ed-1`) and the PEM certificate `pem-1` — and issuer `down`, whose
//! JWKS URL has nothing listening, so its keys never load.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::jwks_server::JwksServer;
use crate::support::{self, ClosedPort, Metrics, TempDir, Tokengate, fixtures, http, mint, token};

/// SPEC §7: name, TYPE, label names (histograms: of the `_count` series).
#[rustfmt::skip]
const SPEC_METRICS: [(&str, &str, &[&str]); 14] = [
    ("tokengate_decisions_total", "counter", &["issuer", "listener", "decision", "reason"]),
    ("tokengate_key_verifications_total", "counter", &["issuer", "source", "key", "match", "result"]),
    ("tokengate_key_decryptions_total", "counter", &["issuer", "source", "key", "match", "result"]),
    ("tokengate_key_last_used_timestamp_seconds", "gauge", &["issuer", "source", "key"]),
    ("tokengate_key_info", "gauge", &["issuer", "source", "key", "kty", "alg", "thumbprint", "state"]),
    ("tokengate_key_not_after_timestamp_seconds", "gauge", &["issuer", "source", "key"]),
    ("tokengate_kid_misses_total", "counter", &["issuer", "outcome"]),
    ("tokengate_jwks_fetches_total", "counter", &["issuer", "result"]),
    ("tokengate_jwks_last_success_timestamp_seconds", "gauge", &["issuer"]),
    ("tokengate_key_source_reloads_total", "counter", &["issuer", "source", "result"]),
    ("tokengate_config_reloads_total", "counter", &["result"]),
    ("tokengate_token_cache_requests_total", "counter", &["result"]),
    ("tokengate_decision_duration_seconds", "histogram", &["listener"]),
    ("tokengate_build_info", "gauge", &["version"]),
];

/// SPEC §7 `reason` values, allow reasons first.
#[rustfmt::skip]
const REASONS: [&str; 25] = [
    "ok", "anonymous", "missing_token", "invalid_request", "malformed", "too_large", "bad_alg",
    "bad_issuer", "unknown_key", "revoked_key", "bad_signature", "expired", "not_yet_valid",
    "lifetime_exceeded", "key_out_of_validity", "bad_audience", "bad_type", "insufficient_scope",
    "rule_failed", "keys_unavailable", "invalid_dpop_proof", "use_dpop_nonce", "binding_mismatch",
    "bad_decryption", "bad_session",
];

/// The decryption keys of the stack (SPEC §10): one for encrypted tokens, one for the
/// `ig` session's cookies.
const DEC_KEY: &str =
    r#"{"kty":"oct","kid":"dec-1","k":"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM"}"#;
const SESSION_KEY: &str = r#"{"kty":"oct","kid":"ses-1","k":"BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQ"}"#;

/// The process metrics tokengate adds to SPEC §7.
const PROCESS_METRICS: [(&str, &str); 7] = [
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_threads", "gauge"),
];

const MAIN_ISS: &str = "https://issuer.example";
const DOWN_ISS: &str = "https://down.example";

// ------------------------------------------------------------------------------------
// The stack
// ------------------------------------------------------------------------------------

/// A running tokengate with its JWKS server and temp dir (fields drop in this order:
/// the process first, the directory last).
struct Stack {
    tg: Tokengate,
    jwks: JwksServer,
    jwks_file: PathBuf,
    dir: TempDir,
    /// Where issuer `down`'s JWKS is not served.
    _down: ClosedPort,
}

/// The fixture JWK set restricted to `kids`, in fixture order.
fn jwks_of(kids: &[&str]) -> String {
    let text = std::fs::read_to_string(fixtures().join("jwks.json")).expect("jwks.json");
    let doc: Value = serde_json::from_str(&text).expect("jwks.json");
    let keys: Vec<Value> = doc["keys"]
        .as_array()
        .expect("jwks.json has no keys")
        .iter()
        .filter(|k| k["kid"].as_str().is_some_and(|kid| kids.contains(&kid)))
        .cloned()
        .collect();
    assert_eq!(
        keys.len(),
        kids.len(),
        "every kid of {kids:?} is in jwks.json"
    );
    json!({ "keys": keys }).to_string()
}

fn start(tag: &str) -> Stack {
    let dir = TempDir::new(tag);
    let jwks = JwksServer::start(&jwks_of(&["rsa-2", "ec-p384"]));
    let jwks_file = dir.write("keys.jwks.json", jwks_of(&["rsa-1", "ed-1"]));
    let dec_file = dir.write("dec.jwks.json", format!(r#"{{"keys":[{DEC_KEY}]}}"#));
    let session_file = dir.write(
        "session.jwks.json",
        format!(r#"{{"keys":[{SESSION_KEY}]}}"#),
    );
    let down = ClosedPort::new();
    let config = json!({
        "issuers": [
            {
                "name": "main",
                "issuer": MAIN_ISS,
                "audiences": ["orders-api"],
                "algorithms": ["RS256", "ES256", "ES384", "EdDSA", "HS256"],
                "require_typ": ["at+jwt"],
                // Proofs must carry a nonce (use_dpop_nonce).
                "dpop_nonce": true,
                // Ten years: long enough for a token issued before pem-1's certificate
                // (key_out_of_validity), short enough for lifetime_exceeded.
                "max_lifetime": "87600h",
                "key_sources": [
                    { "jwks_uri": jwks.url(), "timeout": "2s" },
                    { "jwks_file": jwks_file.to_string_lossy() },
                    { "pem_file": fixtures().join("pem-rsa.cert.pem").to_string_lossy(), "kid": "pem-1" }
                ]
            },
            {
                "name": "down",
                "issuer": DOWN_ISS,
                "key_sources": [{ "jwks_uri": format!("http://{}/jwks.json", down.addr), "timeout": "1s" }]
            }
        ],
        "routes": [
            { "path_prefix": "/public", "allow_anonymous": true },
            { "path_prefix": "/orders", "methods": ["POST"], "scopes_all": ["orders:write"] },
            { "name": "invoices", "path_prefix": "/invoices", "rules": ["has(claims.groups) && 'billing' in claims.groups"] }
        ],
        "revoked": { "kids": ["ec-p384"] },
        "decryption": { "key_sources": [{ "jwks_file": dec_file.to_string_lossy() }] },
        "sessions": [{ "name": "ig", "cookie": "IG",
                       "key_sources": [{ "jwks_file": session_file.to_string_lossy() }] }],
        // Reloads happen on POST /refresh only, so that reload counts are exact.
        "reload": { "scan_interval": "1h" }
    });
    let tg = Tokengate::start(&dir, config);
    tg.wait_for(
        || {
            let keys = tg.keys().to_string();
            ["rsa-1", "rsa-2", "pem-1"]
                .iter()
                .all(|k| keys.contains(&format!("\"key\":\"{k}\"")))
        },
        "the keys of issuer main",
    );
    Stack {
        tg,
        jwks,
        jwks_file,
        dir,
        _down: down,
    }
}

/// A token of the fixture issuer, signed with fixture key `key` (claims edited by `edit`).
fn mint_token(
    alg: Algorithm,
    key: &str,
    kid: Option<&str>,
    edit: impl FnOnce(&mut Value),
) -> String {
    let mut claims = mint::claims();
    edit(&mut claims);
    mint::sign(alg, key, kid, &claims)
}

/// What the traffic should have left on `/metrics`.
#[derive(Debug, Default)]
struct Expected {
    /// (issuer, reason) → decisions on authz_http.
    decisions: BTreeMap<(&'static str, &'static str), u64>,
    /// Requests whose token reached the cache lookup.
    cache_lookups: u64,
    /// Cache hits among them.
    cache_hits: u64,
}

impl Expected {
    fn total(&self) -> u64 {
        self.decisions.values().sum()
    }
}

/// One request to authz_http and the decision it must get.
struct Case {
    method: &'static str,
    path: &'static str,
    /// `Authorization` header values (none, one, or two for `invalid_request`).
    auth: Vec<String>,
    /// A `DPoP` proof header.
    dpop: Option<String>,
    issuer: &'static str,
    reason: &'static str,
    status: u16,
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// `GET /orders/1` with `Authorization: Bearer <token>`.
fn get(token: String, issuer: &'static str, reason: &'static str, status: u16) -> Case {
    Case {
        method: "GET",
        path: "/orders/1",
        auth: vec![bearer(&token)],
        dpop: None,
        issuer,
        reason,
        status,
    }
}

/// Sends `c`, asserts its status and (denials) its reason, and books it in `e`.
fn send(s: &Stack, e: &mut Expected, c: &Case) {
    let headers: Vec<(&str, &str)> = c
        .auth
        .iter()
        .map(|a| ("authorization", a.as_str()))
        .chain(c.dpop.iter().map(|p| ("dpop", p.as_str())))
        .collect();
    let r = s.tg.check(c.method, c.path, &headers);
    assert_eq!(r.status, c.status, "{}: {}", c.reason, r.body_text());
    if c.status != 200 {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(body["error"], c.reason, "{}", r.body_text());
    }
    *e.decisions.entry((c.issuer, c.reason)).or_default() += 1;
    // Every single token that is not too large is looked up in the cache first.
    if c.auth.len() == 1 && c.reason != "too_large" {
        e.cache_lookups += 1;
    }
}

/// Every decision path before the reload, in an order that keeps the unknown-kid refetch
/// rate limit (one per 30 s) predictable: the one refetch that finds a key comes first.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Algorithm::{ES256, ES384, EdDSA, HS256, RS256};
    let now = mint::now();
    let rsa1 = |edit: &dyn Fn(&mut Value)| mint_token(RS256, "rsa-1", Some("rsa-1"), edit);
    let good = rsa1(&|_| {});
    let typ_jwt = mint::sign_raw(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}), &mint::claims(), RS256, &mint::key("rsa-1"),
    );
    vec![
        // Unknown kid → one refetch → the JWKS now has it (refetch_found).
        get(mint_token(ES256, "ec-p256", Some("ec-p256"), |_| {}), "main", "ok", 200),
        // Allowed by kid: rsa-1 twice (the second is the cache hit), rsa-2, ed-1.
        get(good.clone(), "main", "ok", 200),
        get(good.clone(), "main", "ok", 200),
        get(mint_token(RS256, "rsa-2", Some("rsa-2"), |_| {}), "main", "ok", 200),
        get(mint_token(EdDSA, "ed-1", Some("ed-1"), |_| {}), "main", "ok", 200),
        // Allowed by fallback: no kid, and a kid still unknown after the (rate-limited) refetch.
        get(mint_token(RS256, "rsa-1", None, |_| {}), "main", "ok", 200),
        get(mint_token(RS256, "rsa-1", Some("rotated-away"), |_| {}), "main", "ok", 200),
        // Anonymous, and the denials decided before any issuer is known.
        Case { method: "GET", path: "/public/x", auth: vec![], dpop: None, issuer: "-", reason: "anonymous", status: 200 },
        Case { method: "GET", path: "/orders/1", auth: vec![], dpop: None, issuer: "-", reason: "missing_token", status: 401 },
        Case { method: "GET", path: "/orders/1", auth: vec![bearer(&good), bearer(&good)], dpop: None, issuer: "-", reason: "invalid_request", status: 400 },
        get("not-a-jwt".into(), "-", "malformed", 401),
        get("a".repeat(9000), "-", "too_large", 401),
        get(token("ALG_NONE"), "-", "bad_alg", 401),
        get(rsa1(&|c| c["iss"] = json!("https://evil.example")), "-", "bad_issuer", 401),
        // Denials of issuer main, in SPEC order.
        get(mint_token(ES256, "attacker-ec", Some("rsa-1"), |_| {}), "main", "bad_alg", 401),
        get(token("KEY_CONFUSION_HS256_NO_KID"), "main", "unknown_key", 401),
        get(mint_token(HS256, "hmac-1", Some("never-published"), |_| {}), "main", "unknown_key", 401),
        get(mint_token(ES384, "ec-p384", Some("ec-p384"), |_| {}), "main", "revoked_key", 401),
        get(token("FOREIGN_KNOWN_KID"), "main", "bad_signature", 401),
        get(rsa1(&|c| { c["iat"] = json!(now - 7200); c["exp"] = json!(now - 3600); }), "main", "expired", 401),
        get(rsa1(&|c| c["nbf"] = json!(now + 3600)), "main", "not_yet_valid", 401),
        get(rsa1(&|c| c["exp"] = json!(now + 11 * 365 * 86_400)), "main", "lifetime_exceeded", 401),
        // pem-1's certificate is valid from 2020-01-01: a token issued in 2017 is out of it.
        get(mint_token(RS256, "pem-rsa", Some("pem-1"), |c| c["iat"] = json!(1_500_000_000)), "main", "key_out_of_validity", 401),
        get(rsa1(&|c| c["aud"] = json!("billing-api")), "main", "bad_audience", 401),
        get(typ_jwt, "main", "bad_type", 401),
        Case {
            method: "POST", path: "/orders", auth: vec![bearer(&rsa1(&|c| c["scope"] = json!("orders:read")))],
            dpop: None, issuer: "main", reason: "insufficient_scope", status: 403,
        },
        // The good token again (a cache hit, no signature check): no `groups` claim.
        Case { method: "GET", path: "/invoices/1", auth: vec![bearer(&good)], dpop: None, issuer: "main", reason: "rule_failed", status: 403 },
        // Issuer down never loaded its keys.
        get(rsa1(&|c| c["iss"] = json!(DOWN_ISS)), "down", "keys_unavailable", 503),
    ]
}

/// Drives every decision path ([`cases`]), then one `POST /refresh` that meets a broken
/// config file, a broken key file and a JWKS without `rsa-2` (retired), then restores
/// both files (without another reload). Returns what the metrics must show.
fn drive_every_path(s: &Stack) -> Expected {
    let mut e = Expected::default();
    s.jwks
        .set(|b| b.body = jwks_of(&["rsa-2", "ec-p384", "ec-p256"]));
    for c in cases() {
        send(s, &mut e, &c);
    }
    // The good token's second check, and its check on the route with a rule.
    e.cache_hits += 2;
    // Sender-constrained tokens (SPEC §11), each its own token (no cache hit): a
    // cnf.jkt token as Bearer, under DPoP without a proof, and with a jwcrypto proof but
    // no nonce.
    let mut minter = support::dpop::Minter::start();
    let key = minter.key("ES256");
    let bound = |jti: &str| {
        mint_token(Algorithm::RS256, "rsa-1", Some("rsa-1"), |c| {
            c["cnf"] = json!({ "jkt": key.jkt });
            c["jti"] = json!(jti);
        })
    };
    send(
        s,
        &mut e,
        &get(bound("dpop-1"), "main", "binding_mismatch", 401),
    );
    let dpop_case = |token: &str, proof: Option<String>, reason| Case {
        method: "GET",
        path: "/orders/1",
        auth: vec![format!("DPoP {token}")],
        dpop: proof,
        issuer: "main",
        reason,
        status: 401,
    };
    send(
        s,
        &mut e,
        &dpop_case(&bound("dpop-2"), None, "invalid_dpop_proof"),
    );
    let t3 = bound("dpop-3");
    let htu = format!("http://{}/orders/1", s.tg.authz);
    let proof = minter.proof(&key, &support::dpop::claims("GET", &htu, &t3), json!({}));
    send(s, &mut e, &dpop_case(&t3, Some(proof), "use_dpop_nonce"));

    // Encrypted tokens and sessions (SPEC §10), made by jwcrypto: a nested token
    // (judged by its issuer) and one that no key opens; a session and an expired one.
    let dec: Value = serde_json::from_str(DEC_KEY).expect("key");
    let nested = minter.seal(
        &dec,
        json!({"alg": "dir", "enc": "A256GCM", "kid": "dec-1", "cty": "JWT"}),
        &mint_token(Algorithm::RS256, "rsa-1", Some("rsa-1"), |c| {
            c["jti"] = json!("sealed")
        }),
    );
    send(s, &mut e, &get(nested.clone(), "main", "ok", 200));
    let mut altered = nested.into_bytes();
    let at = altered.len() - 2;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ASCII");
    send(s, &mut e, &get(altered, "-", "bad_decryption", 401));
    let session: Value = serde_json::from_str(SESSION_KEY).expect("key");
    let now = mint::now();
    for (exp, status, reason) in [(now + 600, 200, "ok"), (now - 600, 401, "bad_session")] {
        let value = minter.seal(
            &session,
            json!({"alg": "dir", "enc": "A256CBC-HS512"}),
            &json!({"sub": "Sam Carter", "exp": exp}).to_string(),
        );
        let r =
            s.tg.check("GET", "/orders/1", &[("cookie", &format!("IG={value}"))]);
        assert_eq!(
            (r.status, r.error().as_str()),
            (status, if status == 200 { "" } else { reason })
        );
        *e.decisions.entry(("ig", reason)).or_default() += 1;
        e.cache_lookups += 1;
    }

    let config_text = std::fs::read_to_string(&s.tg.config).expect("config");
    let key_file_text = std::fs::read_to_string(&s.jwks_file).expect("key file");
    s.dir.write("config.json", "{ this is not json");
    s.dir.write("keys.jwks.json", "{ \"keys\": [ broken");
    s.jwks.set(|b| b.body = jwks_of(&["ec-p384", "ec-p256"]));
    let r = http::request(s.tg.admin, "POST", "/refresh", &[], b"").expect("POST /refresh");
    assert_eq!(
        r.status,
        502,
        "a broken config and key file: {}",
        r.body_text()
    );
    s.tg.wait_for(
        || {
            s.tg.keys()["keys"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|k| k["key"] == "rsa-2" && k["state"] == "retired")
            })
        },
        "rsa-2 retired",
    );
    s.dir.write("config.json", config_text);
    s.dir.write("keys.jwks.json", key_file_text);

    // The running config and the last good rsa-1 survived the failed reloads.
    let after = mint_token(Algorithm::RS256, "rsa-1", Some("rsa-1"), |c| {
        c["jti"] = json!("after")
    });
    send(s, &mut e, &get(after, "main", "ok", 200));
    e
}

/// (name, sorted labels) of every sample.
fn series_set(m: &Metrics) -> BTreeSet<String> {
    m.samples
        .iter()
        .map(|(name, labels, _)| {
            let sorted: BTreeMap<_, _> = labels.iter().collect();
            format!("{name}{sorted:?}")
        })
        .collect()
}

/// `# TYPE` of every family in a raw exposition.
fn types(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn scrape(tg: &Tokengate) -> (String, Metrics) {
    let text = http::get(tg.admin, "/metrics")
        .expect("no /metrics")
        .body_text();
    let m = Metrics::parse(&text);
    (text, m)
}

// ------------------------------------------------------------------------------------
// /metrics after traffic
// ------------------------------------------------------------------------------------

#[test]
fn metrics_show_every_spec_series_after_traffic_on_every_path() {
    let started = mint::now();
    let s = start("obs-paths");
    let e = drive_every_path(&s);
    let (text, m) = scrape(&s.tg);
    let v = |name: &str, want: &[(&str, &str)]| {
        m.value(name, want)
            .unwrap_or_else(|| panic!("no {name}{want:?} in:\n{text}"))
    };

    // Every family, with its TYPE and exactly the SPEC label names.
    let ty = types(&text);
    for (name, kind, labels) in SPEC_METRICS {
        assert_eq!(
            ty.get(name).map(String::as_str),
            Some(kind),
            "TYPE of {name}"
        );
        let sample = if kind == "histogram" {
            format!("{name}_count")
        } else {
            name.to_string()
        };
        let want: BTreeSet<&str> = labels.iter().copied().collect();
        let found: Vec<_> = m.samples.iter().filter(|(n, _, _)| *n == sample).collect();
        assert!(!found.is_empty(), "{sample} has series");
        for (_, l, _) in found {
            let got: BTreeSet<&str> = l.keys().map(String::as_str).collect();
            assert_eq!(got, want, "label names of {sample}");
        }
    }
    for (name, kind) in PROCESS_METRICS {
        assert_eq!(
            ty.get(name).map(String::as_str),
            Some(kind),
            "TYPE of {name}"
        );
    }

    // Decisions: every SPEC reason is a series for every issuer, with the counts sent.
    for issuer in ["-", "main", "down"] {
        for (i, reason) in REASONS.iter().enumerate() {
            let decision = if i < 2 { "allow" } else { "deny" };
            let want = e.decisions.get(&(issuer, *reason)).copied().unwrap_or(0) as f64;
            let labels = [
                ("issuer", issuer),
                ("listener", "authz_http"),
                ("decision", decision),
                ("reason", *reason),
            ];
            assert_eq!(
                v("tokengate_decisions_total", &labels),
                want,
                "{issuer} {reason}"
            );
        }
    }
    assert_eq!(
        m.sum("tokengate_decisions_total", &[]),
        e.total() as f64,
        "no other decision was counted"
    );
    for reason in REASONS.iter().skip(2) {
        assert!(
            e.decisions.keys().any(|(_, r)| r == reason),
            "traffic covers deny reason {reason}"
        );
    }
    assert_eq!(
        v(
            "tokengate_decision_duration_seconds_count",
            &[("listener", "authz_http")]
        ),
        e.total() as f64
    );
    assert_eq!(
        v("tokengate_rule_denials_total", &[("route", "invoices")]),
        1.0
    );
    for result in ["binding_mismatch", "invalid_dpop_proof", "use_dpop_nonce"] {
        assert_eq!(
            v(
                "tokengate_proofs_total",
                &[("issuer", "main"), ("kind", "dpop"), ("result", result)]
            ),
            1.0,
            "{result}"
        );
    }
    // Decryptions per key: the nested token and the altered one by kid; both session
    // cookies opened (the expired one fails after).
    for (issuer, key, matched, result, n) in [
        ("decryption", "dec-1", "kid", "ok", 1.0),
        ("decryption", "dec-1", "kid", "bad_decryption", 1.0),
        ("ig", "ses-1", "fallback", "ok", 2.0),
        ("ig", "ses-1", "fallback", "bad_decryption", 0.0),
    ] {
        assert_eq!(
            v(
                "tokengate_key_decryptions_total",
                &[
                    ("issuer", issuer),
                    ("key", key),
                    ("match", matched),
                    ("result", result)
                ]
            ),
            n,
            "{issuer} {key} {matched} {result}"
        );
    }
    assert_eq!(v("tokengate_audit_dropped_total", &[]), 0.0);
    assert_eq!(v("tokengate_telemetry_export_errors_total", &[]), 0.0);

    // Per key version. Signature checks count whatever the claims say next, so every
    // rsa-1/kid token that got past the header counts: 1 good (+1 cached, not checked
    // again), expired, not_yet_valid, lifetime_exceeded, bad_audience, bad_type,
    // insufficient_scope, the one after the reload, the three bound tokens (valid
    // tokens, refused for what the request did not prove) and the nested token.
    let kv = |key: &str, source: &str, matched: &str, result: &str| {
        v(
            "tokengate_key_verifications_total",
            &[
                ("issuer", "main"),
                ("source", source),
                ("key", key),
                ("match", matched),
                ("result", result),
            ],
        )
    };
    assert_eq!(kv("rsa-1", "jwks_file", "kid", "ok"), 12.0);
    assert_eq!(
        kv("rsa-1", "jwks_file", "kid", "bad_signature"),
        1.0,
        "FOREIGN_KNOWN_KID"
    );
    assert_eq!(
        kv("rsa-1", "jwks_file", "fallback", "ok"),
        2.0,
        "no kid + unknown kid"
    );
    assert_eq!(kv("rsa-1", "jwks_file", "fallback", "bad_signature"), 0.0);
    assert_eq!(
        kv("ec-p256", "jwks", "kid", "ok"),
        1.0,
        "found by the refetch"
    );
    assert_eq!(kv("ed-1", "jwks_file", "kid", "ok"), 1.0);
    assert_eq!(
        kv("pem-1", "pem", "kid", "ok"),
        1.0,
        "verified, then out of validity"
    );
    assert_eq!(
        kv("ec-p384", "jwks", "kid", "ok"),
        0.0,
        "revoked: never tried"
    );
    // rsa-2 is retired but remembered: its series stay.
    assert_eq!(kv("rsa-2", "jwks", "kid", "ok"), 1.0);

    let last_used = |key: &str, source: &str| {
        v(
            "tokengate_key_last_used_timestamp_seconds",
            &[("issuer", "main"), ("source", source), ("key", key)],
        ) as i64
    };
    let now = mint::now();
    for (key, source) in [
        ("rsa-1", "jwks_file"),
        ("ed-1", "jwks_file"),
        ("ec-p256", "jwks"),
        ("rsa-2", "jwks"),
    ] {
        let t = last_used(key, source);
        assert!(
            (started..=now).contains(&t),
            "{key} last used at {t}, test ran {started}..{now}"
        );
    }
    assert_eq!(last_used("pem-1", "pem"), 0, "pem-1 never accepted a token");
    assert_eq!(
        v(
            "tokengate_key_not_after_timestamp_seconds",
            &[("issuer", "main"), ("key", "pem-1")]
        ),
        4_102_444_799.0,
        "2099-12-31T23:59:59Z"
    );
    assert_eq!(
        m.sum("tokengate_key_not_after_timestamp_seconds", &[]),
        4_102_444_799.0,
        "only pem-1 has a certificate"
    );

    // Key info agrees with /keys, row for row; rsa-2 retired, ec-p384 revoked.
    let inventory = s.tg.keys();
    let from_keys: BTreeSet<String> = inventory["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("/keys: {inventory}"))
        .iter()
        .map(|k| {
            let alg = k["alg"].as_str().unwrap_or("-");
            format!(
                "{} {} {} {} {} {} {}",
                k["issuer"], k["source"], k["key"], k["kty"], alg, k["thumbprint"], k["state"]
            )
            .replace('"', "")
        })
        .collect();
    let from_metrics: BTreeSet<String> = m
        .samples
        .iter()
        .filter(|(n, _, _)| n == "tokengate_key_info")
        .map(|(_, l, value)| {
            assert_eq!(*value, 1.0);
            let g = |k: &str| l.get(k).cloned().unwrap_or_default();
            format!(
                "{} {} {} {} {} {} {}",
                g("issuer"),
                g("source"),
                g("key"),
                g("kty"),
                g("alg"),
                g("thumbprint"),
                g("state")
            )
        })
        .collect();
    assert_eq!(from_metrics, from_keys, "tokengate_key_info = /keys");
    let states = |key: &str| -> Vec<String> {
        m.samples
            .iter()
            .filter(|(n, l, _)| n == "tokengate_key_info" && l.get("key").is_some_and(|k| k == key))
            .filter_map(|(_, l, _)| l.get("state").cloned())
            .collect()
    };
    assert_eq!(states("rsa-2"), ["retired"]);
    assert_eq!(states("ec-p384"), ["revoked"]);
    assert_eq!(
        states("ec-p256"),
        ["active"],
        "the JWKS key that signed last"
    );
    assert_eq!(
        from_metrics.len(),
        8,
        "rsa-1, ed-1, pem-1, ec-p256, ec-p384, retired rsa-2 and the decryption keys dec-1 and \
         ses-1: {from_metrics:#?}"
    );

    // `tokengate keys --admin` reads the same inventory over HTTP.
    let (code, out, err) = support::run(
        &["keys", "--admin", &format!("http://{}", s.tg.admin)],
        None,
    );
    assert_eq!(code, 0, "{err}");
    for row in &from_keys {
        let words: Vec<&str> = row.split(' ').collect();
        let (key, st) = (words[2], words[6]);
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().nth(2) == Some(key) && l.contains(st)),
            "`tokengate keys --admin` lists {key} as {st}:\n{out}"
        );
    }

    // Unknown kids, fetches, reloads, cache.
    let misses = |issuer: &str, outcome: &str| {
        v(
            "tokengate_kid_misses_total",
            &[("issuer", issuer), ("outcome", outcome)],
        )
    };
    assert_eq!(misses("main", "refetch_found"), 1.0);
    assert_eq!(misses("main", "fallback_matched"), 1.0);
    assert_eq!(misses("main", "rejected"), 1.0, "HS256 with an unknown kid");
    assert_eq!(misses("down", "rejected"), 0.0);
    let fetches = |issuer: &str, result: &str| {
        v(
            "tokengate_jwks_fetches_total",
            &[("issuer", issuer), ("result", result)],
        )
    };
    assert_eq!(fetches("main", "ok"), 3.0, "start, refetch, refresh");
    assert_eq!(fetches("main", "error"), 0.0);
    assert_eq!(fetches("main", "not_modified"), 0.0);
    assert!(fetches("down", "error") >= 1.0);
    assert_eq!(fetches("down", "ok"), 0.0);
    let last_success = v(
        "tokengate_jwks_last_success_timestamp_seconds",
        &[("issuer", "main")],
    ) as i64;
    assert!((started..=now).contains(&last_success), "{last_success}");
    assert_eq!(
        v(
            "tokengate_jwks_last_success_timestamp_seconds",
            &[("issuer", "down")]
        ),
        0.0
    );
    let reloads = |source: &str, result: &str| {
        v(
            "tokengate_key_source_reloads_total",
            &[("issuer", "main"), ("source", source), ("result", result)],
        )
    };
    assert_eq!(reloads("jwks_file", "ok"), 1.0, "the first load");
    assert_eq!(reloads("jwks_file", "error"), 1.0);
    assert_eq!(reloads("pem", "ok"), 1.0);
    assert_eq!(reloads("pem", "error"), 0.0);
    assert_eq!(
        v("tokengate_config_reloads_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(
        v("tokengate_config_reloads_total", &[("result", "ok")]),
        0.0
    );
    assert_eq!(
        v("tokengate_token_cache_requests_total", &[("result", "hit")]),
        e.cache_hits as f64
    );
    assert_eq!(
        v(
            "tokengate_token_cache_requests_total",
            &[("result", "miss")]
        ),
        (e.cache_lookups - e.cache_hits) as f64
    );
    assert_eq!(
        v(
            "tokengate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Process metrics describe the tokengate process, not this test.
    assert!(v("process_resident_memory_bytes", &[]) > 1_000_000.0);
    assert!(v("process_open_fds", &[]) >= 5.0, "listeners and log file");
    assert!(v("process_cpu_seconds_total", &[]) > 0.0);
    let start_time = v("process_start_time_seconds", &[]);
    assert!(
        (started as f64 - 2.0..=now as f64 + 1.0).contains(&start_time),
        "tokengate started during the test: {start_time}"
    );
}

// ------------------------------------------------------------------------------------
// Bounded cardinality
// ------------------------------------------------------------------------------------

/// xorshift64*: reproducible randomness from a printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn word(&mut self) -> String {
        let len = 1 + self.below(40);
        (0..len)
            .map(|_| {
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-_.:/+="[self.below(43) as usize])
            })
            .collect()
    }
}

/// A token signed by an attacker key, with a random kid (or none, or a known one),
/// random claims and a random issuer among the configured and unknown ones.
fn forged(rng: &mut Rng) -> String {
    let now = mint::now();
    let iss = match rng.below(4) {
        0 => MAIN_ISS.to_string(),
        1 => DOWN_ISS.to_string(),
        2 => format!("https://{}.example", rng.word()),
        _ => rng.word(),
    };
    let mut claims = json!({
        "iss": iss,
        "sub": rng.word(),
        "aud": if rng.below(2) == 0 { json!("orders-api") } else { json!([rng.word(), rng.word()]) },
        "iat": now - rng.below(100_000) as i64,
        "exp": now + rng.below(200_000) as i64 - 100_000,
        "scope": format!("{} {}", rng.word(), rng.word()),
        "jti": rng.word(),
    });
    claims[rng.word()] = json!(rng.word());
    let kid = match rng.below(6) {
        0 => None,
        1 => Some(
            ["rsa-1", "rsa-2", "ec-p256", "ec-p384", "ed-1", "pem-1"][rng.below(6) as usize]
                .to_string(),
        ),
        _ => Some(rng.word()),
    };
    let mut header = json!({"typ": "at+jwt"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    // Mostly EC: it signs fast in a debug build; a quarter RSA for the RSA key paths.
    if rng.below(4) == 0 {
        header["alg"] = json!("RS256");
        mint::sign_raw(&header, &claims, Algorithm::RS256, &mint::key("attacker"))
    } else {
        header["alg"] = json!("ES256");
        mint::sign_raw(
            &header,
            &claims,
            Algorithm::ES256,
            &mint::key("attacker-ec"),
        )
    }
}

#[test]
fn a_flood_of_forged_tokens_adds_no_series() {
    let s = start("obs-flood");
    // Some ordinary traffic first, so the flood meets a used key set.
    let good = mint_token(Algorithm::RS256, "rsa-1", Some("rsa-1"), |_| {});
    assert_eq!(s.tg.check_token("/x", &good).status, 200);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("flood seed: {seed:#x}");
    let mut rng = Rng(seed);
    let tokens: Vec<String> = (0..2000).map(|_| forged(&mut rng)).collect();

    let (_, before) = scrape(&s.tg);
    let (authz, admin) = (s.tg.authz, s.tg.admin);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let workers: Vec<_> = tokens
            .chunks(500)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|t| {
                            let auth = bearer(t);
                            http::request(
                                authz,
                                "GET",
                                "/orders/1",
                                &[("authorization", &auth)],
                                b"",
                            )
                            .map_or(0, |r| r.status)
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|_| panic!("flood worker panicked")))
            .collect()
    });
    let (_, after) = scrape(&s.tg);

    assert_eq!(statuses.len(), 2000);
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for st in &statuses {
        *by_status.entry(*st).or_default() += 1;
    }
    assert!(
        by_status.keys().all(|st| [401, 503].contains(st)),
        "every forged token is denied: {by_status:?} (admin {admin})"
    );
    assert_eq!(
        after.sum("tokengate_decisions_total", &[]) - before.sum("tokengate_decisions_total", &[]),
        2000.0,
        "every token was decided"
    );
    let bad_sig = |m: &Metrics| {
        m.sum(
            "tokengate_key_verifications_total",
            &[("result", "bad_signature")],
        )
    };
    assert!(
        bad_sig(&after) > bad_sig(&before),
        "the flood reached the per-key counters"
    );

    let (b, a) = (series_set(&before), series_set(&after));
    let added: Vec<_> = a.difference(&b).collect();
    let removed: Vec<_> = b.difference(&a).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "added {added:#?}\nremoved {removed:#?}"
    );
    eprintln!(
        "series after a flood of 2000 forged tokens: {} (before: {}); statuses {by_status:?}",
        a.len(),
        b.len()
    );
}

// ------------------------------------------------------------------------------------
// A real Prometheus
// ------------------------------------------------------------------------------------

/// A `prometheus` process started by this test; killed (only it) on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &TempDir, targets: &[SocketAddr]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let targets = targets.join(", ");
        let rules = repo("deploy/prometheus/tokengate-rules.yaml");
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: tokengate\n    static_configs:\n      - targets: [{targets}]\n",
                rules = rules.to_string_lossy()
            ),
        );
        let log = dir.path("prometheus.log");
        let log_file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path("tsdb").display()))
            // Port 0: the address Prometheus chose is read back from its log.
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `prometheus` ({e}): install it with scripts/install-test-deps.sh (Debian package `prometheus`)")
            });
        let mut p = Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let mut addr = None;
        p.wait_for(
            Duration::from_secs(30),
            "its \"Listening on\" log line",
            || {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                addr = log
                    .lines()
                    .filter(|l| l.contains("msg=\"Listening on\""))
                    .find_map(|l| {
                        l.split("address=")
                            .nth(1)?
                            .split_whitespace()
                            .next()?
                            .parse()
                            .ok()
                    });
                addr.is_some()
            },
        );
        p.addr = addr.expect("checked by wait_for");
        p.wait_for(Duration::from_secs(30), "/-/ready", || {
            http::get(p.addr, "/-/ready").is_some_and(|r| r.status == 200)
        });
        p
    }

    fn wait_for(&self, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("timed out waiting for Prometheus: {what}; its log:\n{log}");
    }

    /// `GET /api/v1/...`; the JSON answer (panics unless it is JSON).
    fn api(&self, path: &str) -> Value {
        let r = http::get(self.addr, path)
            .unwrap_or_else(|| panic!("Prometheus did not answer {path}"));
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body_text()))
    }

    /// An instant query; the whole answer (`status`, `data`, `error`).
    fn query(&self, expr: &str) -> Value {
        self.api(&format!("/api/v1/query?query={}", urlencode(expr)))
    }

    /// An instant query that must succeed; its samples as (labels, value).
    fn samples(&self, expr: &str) -> Vec<(Value, f64)> {
        let r = self.query(expr);
        assert_eq!(r["status"], "success", "{expr}\n{r}");
        r["data"]["result"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|s| {
                        let v = s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (s["metric"].clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The dashboard as JSON.
fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo("dashboards/tokengate.json")).expect("dashboard");
    serde_json::from_str(&text).expect("dashboards/tokengate.json")
}

/// Every (panel title, expr) of the dashboard, rows' nested panels included.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        p["title"].as_str().unwrap_or_default().to_string(),
                        expr.to_string(),
                    ));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// Grafana's variables, replaced as Grafana would for issuers `main` and `down`, every
/// key, job `tokengate`, a 1 s scrape interval and a 5 minute range.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("$issuer", "(main|down)")
        .replace("$key", ".*")
        .replace("$job", "tokengate");
    assert!(
        !out.contains('$'),
        "a variable the test does not know: {expr}"
    );
    out
}

#[test]
fn prometheus_evaluates_every_dashboard_and_rule_expression() {
    let s = start("obs-prometheus");
    let prom = Prometheus::start(&s.dir, &[s.tg.admin]);
    prom.wait_for(Duration::from_secs(20), "up == 1", || {
        prom.samples(r#"up{job="tokengate"} == 1"#).len() == 1
    });

    // Traffic after the first scrape, so that every counter moves between two samples.
    use Algorithm::{EdDSA, RS256};
    let mut sent = 0.0;
    let mut send = |t: &str, status: u16| {
        assert_eq!(s.tg.check_token("/orders/1", t).status, status);
        sent += 1.0;
    };
    for i in 0..5 {
        send(
            &mint_token(RS256, "rsa-1", Some("rsa-1"), |c| c["jti"] = json!(i)),
            200,
        );
        send(
            &mint_token(RS256, "rsa-2", Some("rsa-2"), |c| c["jti"] = json!(i)),
            200,
        );
        send(
            &mint_token(EdDSA, "ed-1", Some("ed-1"), |c| c["jti"] = json!(i)),
            200,
        );
    }
    send(&mint_token(RS256, "rsa-1", None, |_| {}), 200);
    send(&token("FOREIGN_KNOWN_KID"), 401);
    send(
        &mint_token(RS256, "rsa-1", Some("rsa-1"), |c| {
            c["iss"] = json!(DOWN_ISS)
        }),
        503,
    );
    prom.wait_for(
        Duration::from_secs(20),
        "a scrape after the traffic",
        || {
            prom.samples("sum(tokengate_decisions_total)")
                .first()
                .is_some_and(|(_, v)| *v == sent)
        },
    );
    // Every rule evaluated at least once since the scrape with the traffic.
    let rules = |prom: &Prometheus| -> Vec<Value> {
        let r = prom.api("/api/v1/rules");
        r["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let loaded = std::fs::read_to_string(repo("deploy/prometheus/tokengate-rules.yaml"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    prom.wait_for(
        Duration::from_secs(20),
        "the keys_unavailable alert pending",
        || {
            let list = rules(&prom);
            list.len() == loaded
                && list.iter().any(|r| {
                    r["name"] == "TokengateKeysUnavailable"
                        && r["alerts"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|a| a["labels"]["issuer"] == "down"))
                })
        },
    );
    for r in rules(&prom) {
        assert_eq!(r["health"], "ok", "rule {} evaluates: {r}", r["name"]);
    }

    // Every dashboard expression parses and runs; the key panels have data.
    let d = dashboard();
    let exprs = dashboard_exprs(&d);
    let mut evaluated = 0;
    for (title, expr) in &exprs {
        let q = substitute(expr);
        let samples = prom.samples(&q);
        evaluated += 1;
        let positive = samples.iter().any(|(_, v)| *v > 0.0);
        match title.as_str() {
            "Decisions per second by result and reason"
            | "Share of verifications per key version" => {
                assert!(positive, "{title}: {q} has a positive value: {samples:?}");
            }
            "Time since each key was last used (safe to retire)" if q.contains("last_used") => {
                assert!(
                    samples
                        .iter()
                        .any(|(l, v)| l["key"] == "rsa-2" && (0.0..300.0).contains(v)),
                    "{title}: rsa-2 used within 5 minutes: {samples:?}"
                );
                assert!(
                    samples
                        .iter()
                        .all(|(l, _)| l["state"].is_string() && l["thumbprint"].is_string()),
                    "{title}: joined with key_info: {samples:?}"
                );
            }
            _ => {}
        }
    }
    for var in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = var["definition"].as_str() {
            let (metric, label) = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| panic!("variable query {q}"));
            let values = prom.samples(&substitute(&format!(
                "count by ({}) ({metric})",
                label.trim()
            )));
            assert!(!values.is_empty(), "variable {} has values", var["name"]);
            evaluated += 1;
        }
    }
    // The rules' expressions, as Prometheus parsed them, through the query API too.
    for r in rules(&prom) {
        let q = r["query"]
            .as_str()
            .unwrap_or_else(|| panic!("rule without query: {r}"));
        prom.samples(q);
        evaluated += 1;
    }
    assert!(
        exprs.len() >= 20 && loaded >= 8,
        "{} panel expressions, {loaded} rules",
        exprs.len()
    );
    eprintln!(
        "Prometheus evaluated {evaluated} expressions ({} panel targets, {loaded} rules)",
        exprs.len()
    );
}

// ------------------------------------------------------------------------------------
// Static checks of the dashboard and the rule file
// ------------------------------------------------------------------------------------

/// The metric names an expression uses (identifiers followed by `{`, `[`, `)`, space or
/// end that look like metric names), with histogram suffixes taken off.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            let quoted = start > 0 && matches!(bytes[start - 1], b'"' | b'$');
            if !quoted
                && (word.starts_with("tokengate_") || word.starts_with("process_") || word == "up")
            {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| {
                        word.strip_suffix(s)
                            .filter(|b| *b == "tokengate_decision_duration_seconds")
                    })
                    .unwrap_or(word);
                out.insert(base.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every metric name that src/metrics.rs defines (string literals naming a metric).
fn defined_names() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo("src/metrics.rs")).expect("src/metrics.rs");
    // Every piece between two quotes; pieces of code or of escaped test strings never
    // have the shape of a metric name.
    src.split('"')
        .filter(|s| {
            (s.starts_with("tokengate_") || s.starts_with("process_"))
                && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn dashboard_and_rules_use_only_defined_metric_names() {
    let defined = defined_names();
    for (name, _, _) in SPEC_METRICS {
        assert!(defined.contains(name), "src/metrics.rs defines {name}");
    }
    for (name, _) in PROCESS_METRICS {
        assert!(defined.contains(name), "src/metrics.rs defines {name}");
    }
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
        "schemaVersion {}",
        d["schemaVersion"]
    );
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["issuer", "key"] {
        assert!(
            var(name)["definition"]
                .as_str()
                .is_some_and(|q| q.starts_with("label_values(")),
            "variable {name}: {}",
            var(name)
        );
    }

    let mut used = BTreeSet::new();
    let rules =
        std::fs::read_to_string(repo("deploy/prometheus/tokengate-rules.yaml")).unwrap_or_default();
    // Rule expressions: every `expr:` block (the lines indented below it).
    let mut lines = rules.lines().peekable();
    let mut rule_exprs = Vec::new();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.trim_start().strip_prefix("expr:") {
            let indent = line.len() - line.trim_start().len();
            let mut expr = rest.trim().trim_start_matches('|').to_string();
            while let Some(next) = lines.peek() {
                if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                    break;
                }
                expr.push(' ');
                expr.push_str(next.trim());
                lines.next();
            }
            rule_exprs.push(expr);
        }
    }
    assert!(rule_exprs.len() >= 8, "{rule_exprs:#?}");
    let exprs = dashboard_exprs(&d)
        .into_iter()
        .map(|(_, e)| e)
        .chain(rule_exprs);
    for expr in exprs {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for n in names {
            assert!(
                n == "up" || defined.contains(&n),
                "{n} (in {expr}) is not defined in src/metrics.rs"
            );
            used.insert(n);
        }
    }
    // The dashboard and rules between them look at every SPEC family.
    for (name, _, _) in SPEC_METRICS {
        assert!(
            used.contains(name),
            "{name} appears on the dashboard or in a rule"
        );
    }
}

/// The rule file with its `annotations:` blocks taken out: `promtool test rules`
/// compares annotations too, and the texts are checked by `promtool check rules`.
fn rules_without_annotations() -> String {
    let text =
        std::fs::read_to_string(repo("deploy/prometheus/tokengate-rules.yaml")).expect("rules");
    let mut out = Vec::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(level) = skip_deeper_than {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skip_deeper_than = None;
        }
        if line.trim() == "annotations:" {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push(line);
    }
    out.join("\n")
}

/// `promtool test rules` cases: series, then (alert, time, expected firing label sets).
/// Times are from 0; `job="tokengate"` unless said otherwise.
const PROMTOOL_TESTS: &str = r#"
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # JWKS: `down` never fetched and keeps failing; `main` fails now and then but
      # succeeds every minute; `stale` last succeeded at t=1s and is otherwise idle.
      - series: 'tokengate_jwks_last_success_timestamp_seconds{job="tokengate",instance="a",issuer="down"}'
        values: '0x800'
      - series: 'tokengate_jwks_fetches_total{job="tokengate",instance="a",issuer="down",result="error"}'
        values: '0+1x800'
      - series: 'tokengate_jwks_last_success_timestamp_seconds{job="tokengate",instance="a",issuer="main"}'
        values: '0+60x800'
      - series: 'tokengate_jwks_fetches_total{job="tokengate",instance="a",issuer="main",result="error"}'
        values: '0+1x800'
      - series: 'tokengate_jwks_last_success_timestamp_seconds{job="tokengate",instance="a",issuer="stale"}'
        values: '1x800'
      # Certificates: the active `old` expires at 10 days, the active `later` at 100
      # days, the merely valid `valid-soon` at 5 days.
      - series: 'tokengate_key_not_after_timestamp_seconds{job="tokengate",instance="a",issuer="main",source="pem",key="old"}'
        values: '864000x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="main",source="pem",key="old",kty="RSA",alg="-",thumbprint="t1",state="active"}'
        values: '1x800'
      - series: 'tokengate_key_not_after_timestamp_seconds{job="tokengate",instance="a",issuer="main",source="pem",key="later"}'
        values: '8640000x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="main",source="pem",key="later",kty="RSA",alg="-",thumbprint="t2",state="active"}'
        values: '1x800'
      - series: 'tokengate_key_not_after_timestamp_seconds{job="tokengate",instance="a",issuer="main",source="keystore",key="valid-soon"}'
        values: '432000x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="main",source="keystore",key="valid-soon",kty="RSA",alg="-",thumbprint="t3",state="valid"}'
        values: '1x800'
      # Rotation: `rsa-old` verifies 1/s until it is retired at 20m; kid `reused` got new
      # material (old row retired, new row active) and keeps verifying.
      - series: 'tokengate_key_verifications_total{job="tokengate",instance="a",issuer="rot",source="jwks",key="rsa-old",match="kid",result="ok"}'
        values: '0+60x20 1200+0x779'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="rot",source="jwks",key="rsa-old",kty="RSA",alg="RS256",thumbprint="t4",state="valid"}'
        values: '1x19 stale'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="rot",source="jwks",key="rsa-old",kty="RSA",alg="RS256",thumbprint="t4",state="retired"}'
        values: '_x20 1x779'
      - series: 'tokengate_key_verifications_total{job="tokengate",instance="a",issuer="rot",source="jwks",key="reused",match="kid",result="ok"}'
        values: '0+60x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="rot",source="jwks",key="reused",kty="RSA",alg="RS256",thumbprint="t5",state="retired"}'
        values: '1x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="rot",source="jwks",key="reused",kty="RSA",alg="RS256",thumbprint="t6",state="active"}'
        values: '1x800'
      # Fallback: a third of main's tokens (0.5/s); 0.5% of quiet's.
      - series: 'tokengate_key_verifications_total{job="tokengate",instance="a",issuer="main",source="jwks_file",key="rsa-1",match="kid",result="ok"}'
        values: '0+60x800'
      - series: 'tokengate_key_verifications_total{job="tokengate",instance="a",issuer="main",source="jwks_file",key="rsa-1",match="fallback",result="ok"}'
        values: '0+30x800'
      - series: 'tokengate_key_verifications_total{job="tokengate",instance="a",issuer="quiet",source="jwks_file",key="rsa-1",match="kid",result="ok"}'
        values: '0+600x800'
      - series: 'tokengate_key_verifications_total{job="tokengate",instance="a",issuer="quiet",source="jwks_file",key="rsa-1",match="fallback",result="ok"}'
        values: '0+3x800'
      # Decisions: instance a denies 2.1/s of 3.1/s (some keys_unavailable); instance b
      # denies everything, but only 0.5/s.
      - series: 'tokengate_decisions_total{job="tokengate",instance="a",issuer="main",listener="authz_http",decision="allow",reason="ok"}'
        values: '0+60x800'
      - series: 'tokengate_decisions_total{job="tokengate",instance="a",issuer="main",listener="authz_http",decision="deny",reason="expired"}'
        values: '0+120x800'
      - series: 'tokengate_decisions_total{job="tokengate",instance="a",issuer="down",listener="authz_http",decision="deny",reason="keys_unavailable"}'
        values: '0+6x800'
      - series: 'tokengate_decisions_total{job="tokengate",instance="b",issuer="main",listener="authz_http",decision="deny",reason="bad_signature"}'
        values: '0+30x800'
      # Key sources: main's keystore fails from 6m on; its jwks_file is caught
      # half-written by two scans at 11m and 12m, then loads again.
      - series: 'tokengate_key_source_up{job="tokengate",instance="a",issuer="main",source="keystore"}'
        values: '1x5 0x794'
      - series: 'tokengate_key_source_up{job="tokengate",instance="a",issuer="main",source="jwks_file"}'
        values: '1x10 0x1 1x788'
      # Cryptoperiod: issuer `aged` has max_key_age 3h; its active `signer` was first
      # loaded at 1m, the merely valid `previous` at 1m too, the active `fresh` (another
      # source) at 3h. Issuer `ageless` sets no max_key_age: no max_age series.
      - series: 'tokengate_key_max_age_seconds{job="tokengate",instance="a",issuer="aged"}'
        values: '10800x800'
      - series: 'tokengate_key_first_seen_timestamp_seconds{job="tokengate",instance="a",issuer="aged",source="keystore",key="signer"}'
        values: '60x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="aged",source="keystore",key="signer",kty="RSA",alg="-",thumbprint="t7",state="active"}'
        values: '1x800'
      - series: 'tokengate_key_first_seen_timestamp_seconds{job="tokengate",instance="a",issuer="aged",source="keystore",key="previous"}'
        values: '60x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="aged",source="keystore",key="previous",kty="RSA",alg="-",thumbprint="t8",state="valid"}'
        values: '1x800'
      - series: 'tokengate_key_first_seen_timestamp_seconds{job="tokengate",instance="a",issuer="aged",source="jwks",key="fresh"}'
        values: '10800x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="aged",source="jwks",key="fresh",kty="EC",alg="ES256",thumbprint="t9",state="active"}'
        values: '1x800'
      - series: 'tokengate_key_first_seen_timestamp_seconds{job="tokengate",instance="a",issuer="ageless",source="keystore",key="signer"}'
        values: '60x800'
      - series: 'tokengate_key_info{job="tokengate",instance="a",issuer="ageless",source="keystore",key="signer",kty="RSA",alg="-",thumbprint="t10",state="active"}'
        values: '1x800'
      # Fallback budget: spent on main's tokens 100 times a minute from 11m to 31m;
      # never on quiet's.
      - series: 'tokengate_fallback_budget_exhausted_total{job="tokengate",instance="a",issuer="main"}'
        values: '0x10 0+100x20 2000x769'
      - series: 'tokengate_fallback_budget_exhausted_total{job="tokengate",instance="a",issuer="quiet"}'
        values: '0x800'
      # The decision log drops lines from 11m to 21m; span exports fail from 11m on.
      - series: 'tokengate_audit_dropped_total{job="tokengate",instance="a"}'
        values: '0x10 0+50x10 500x779'
      - series: 'tokengate_telemetry_export_errors_total{job="tokengate",instance="a"}'
        values: '0x10 0+1x789'
      # Scrapes: b stops answering at 11m; c is another job's target.
      - series: 'up{job="tokengate",instance="a"}'
        values: '1x800'
      - series: 'up{job="tokengate",instance="b"}'
        values: '1x10 0x790'
      - series: 'up{job="node",instance="c"}'
        values: '0x800'
    alert_rule_test:
      - {alertname: TokengateJwksRefreshFailing, eval_time: 30m, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a, issuer: down}}]}
      - {alertname: TokengateJwksStale, eval_time: 30m, exp_alerts: []}
      - {alertname: TokengateJwksStale, eval_time: 13h, exp_alerts: [{exp_labels: {severity: critical, job: tokengate, instance: a, issuer: stale}}]}
      - {alertname: TokengateKeySourceDown, eval_time: 15m, exp_alerts: []}
      - {alertname: TokengateKeySourceDown, eval_time: 30m, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a, issuer: main, source: keystore}}]}
      - {alertname: TokengateActiveKeyCertificateExpiring, eval_time: 30m, exp_alerts: []}
      - {alertname: TokengateActiveKeyCertificateExpiring, eval_time: 13h, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a, issuer: main, source: pem, key: old}}]}
      - {alertname: TokengateKeyPastMaxAge, eval_time: 4h, exp_alerts: []}
      - {alertname: TokengateKeyPastMaxAge, eval_time: 5h, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a, issuer: aged, source: keystore, key: signer}}]}
      - {alertname: TokengateRetiredKeyStillInUse, eval_time: 19m, exp_alerts: []}
      - {alertname: TokengateRetiredKeyStillInUse, eval_time: 23m, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a, issuer: rot, source: jwks, key: rsa-old}}]}
      - {alertname: TokengateRetiredKeyStillInUse, eval_time: 30m, exp_alerts: []}
      - {alertname: TokengateFallbackRateHigh, eval_time: 30m, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a, issuer: main}}]}
      - {alertname: TokengateFallbackBudgetExhausted, eval_time: 14m, exp_alerts: []}
      - {alertname: TokengateFallbackBudgetExhausted, eval_time: 25m, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a, issuer: main}}]}
      - {alertname: TokengateFallbackBudgetExhausted, eval_time: 40m, exp_alerts: []}
      - {alertname: TokengateDecisionLogDropping, eval_time: 10m, exp_alerts: []}
      - {alertname: TokengateDecisionLogDropping, eval_time: 19m, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a}}]}
      - {alertname: TokengateDecisionLogDropping, eval_time: 40m, exp_alerts: []}
      - {alertname: TokengateTraceExportFailing, eval_time: 15m, exp_alerts: []}
      - {alertname: TokengateTraceExportFailing, eval_time: 30m, exp_alerts: [{exp_labels: {severity: info, job: tokengate, instance: a}}]}
      - {alertname: TokengateDenyRateHigh, eval_time: 30m, exp_alerts: [{exp_labels: {severity: warning, job: tokengate, instance: a}}]}
      - {alertname: TokengateDown, eval_time: 30m, exp_alerts: [{exp_labels: {severity: critical, job: tokengate, instance: b}}]}
      - {alertname: TokengateKeysUnavailable, eval_time: 30m, exp_alerts: [{exp_labels: {severity: critical, job: tokengate, instance: a, issuer: down}}]}
"#;

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `promtool` ({e}): install it with scripts/install-test-deps.sh (Debian package `prometheus`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn alert_rules_pass_promtool_and_fire_on_what_they_name() {
    let rules = repo("deploy/prometheus/tokengate-rules.yaml");
    let (ok, out) = promtool(&["check", "rules", &rules.to_string_lossy()]);
    assert!(ok, "promtool check rules:\n{out}");

    let dir = TempDir::new("obs-promtool");
    let stripped = rules_without_annotations();
    assert_eq!(
        stripped.matches("- alert:").count(),
        std::fs::read_to_string(&rules)
            .unwrap_or_default()
            .matches("- alert:")
            .count(),
        "stripping annotations kept every rule"
    );
    dir.write("rules.yaml", stripped);
    let tests = dir.write(
        "tests.yaml",
        format!("rule_files: [rules.yaml]\n{PROMTOOL_TESTS}"),
    );
    let (ok, out) = promtool(&["test", "rules", &tests.to_string_lossy()]);
    assert!(ok, "promtool test rules:\n{out}");
    // Every alert of the file has a case.
    for line in std::fs::read_to_string(&rules).unwrap_or_default().lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            assert!(
                PROMTOOL_TESTS.contains(&format!("alertname: {},", name.trim())),
                "no promtool case for {name}"
            );
        }
    }
}

/// Fleet mode (SPEC §9): two instances scraped by one real Prometheus; `rotation plan
/// --prometheus` counts the tokens either of them verified, per key: instance a verifies
/// only rsa-1 tokens, instance b only rsa-2 tokens, and a candidate JWK set without both
/// loses the traffic of both.
#[test]
fn rotation_plan_counts_the_traffic_of_the_whole_fleet_through_prometheus() {
    let dir = TempDir::new("obs-fleet");
    let live_keys = dir.write("live.jwks.json", jwks_of(&["rsa-1", "rsa-2"]));
    let next_keys = dir.write("next.jwks.json", jwks_of(&["ec-p256"]));
    let config = |keys: &PathBuf| {
        json!({
            "issuers": [{
                "name": "main", "issuer": MAIN_ISS, "audiences": ["orders-api"],
                "algorithms": ["RS256", "ES256"], "require_typ": ["at+jwt"],
                "key_sources": [{ "jwks_file": keys.to_string_lossy() }]
            }]
        })
    };
    let (dir_a, dir_b) = (TempDir::new("obs-fleet-a"), TempDir::new("obs-fleet-b"));
    let a = Tokengate::start(&dir_a, config(&live_keys));
    let b = Tokengate::start(&dir_b, config(&live_keys));
    a.wait_ready();
    b.wait_ready();
    let prom = Prometheus::start(&dir, &[a.admin, b.admin]);
    prom.wait_for(Duration::from_secs(30), "both instances scraped", || {
        prom.samples("sum(up{job=\"tokengate\"})")
            .first()
            .is_some_and(|(_, v)| *v == 2.0)
    });

    for (tg, key, n) in [(&a, "rsa-1", 3), (&b, "rsa-2", 2)] {
        for i in 0..n {
            let mut claims = mint::claims();
            claims["jti"] = json!(format!("fleet-{key}-{i}"));
            let token = mint::sign(jsonwebtoken::Algorithm::RS256, key, Some(key), &claims);
            assert_eq!(tg.check_token("/x", &token).status, 200);
        }
    }
    prom.wait_for(Duration::from_secs(30), "the traffic scraped", || {
        let total = |key: &str| {
            prom.samples(&format!(
                "sum(tokengate_key_verifications_total{{key=\"{key}\",result=\"ok\"}})"
            ))
            .first()
            .map_or(0.0, |(_, v)| *v)
        };
        total("rsa-1") == 3.0 && total("rsa-2") == 2.0
    });

    let live = a.config.to_string_lossy().into_owned();
    let next = dir.write("next.json", config(&next_keys).to_string());
    let next = next.to_string_lossy().into_owned();
    let url = format!("http://{}", prom.addr);
    let (code, out, err) = support::run(
        &[
            "rotation",
            "plan",
            "--config",
            &live,
            "--candidate",
            &next,
            "--prometheus",
            &url,
            "--window",
            "10m",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 1, "{out}\n{err}");
    let plan: Value = serde_json::from_str(&out).expect("plan JSON");
    let row = |key: &str| {
        plan["keys"]
            .as_array()
            .and_then(|l| l.iter().find(|k| k["key"] == key))
            .cloned()
            .unwrap_or_default()
    };
    for key in ["rsa-1", "rsa-2"] {
        let r = row(key);
        assert_eq!(r["verdict"], "retire-in-use", "{plan:#}");
        // increase() extrapolates: the count is near, not exactly, what was sent.
        assert!(r["tokens"].as_f64().is_some_and(|t| t > 0.0), "{plan:#}");
    }
    assert_eq!(row("ec-p256")["verdict"], "added", "{plan:#}");
    assert!(
        plan["tokens_refused"].as_f64().is_some_and(|t| t > 0.0),
        "{plan:#}"
    );
}
