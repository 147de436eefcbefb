//! Hostile input (GitHub issue 8), against the built `tokengate serve` on loopback unless
//! a test says otherwise: nothing crashes, nothing is let in, nothing grows without bound,
//! nothing secret is written down.
//!
//! - the attack corpus over HTTP: `alg: none` in every casing, HMAC key confusion with
//!   the PEM, DER and JWK bytes of configured public keys, hostile `kid`s, `jku`/`x5u`/
//!   `jwk`/`x5c`, `crit`, `b64`, broken shapes, hostile NumericDates and audiences,
//!   100 KB tokens, repeated `Authorization` headers, query-string tokens — each denied
//!   with its reason (the JSON body's `error`), never a 5xx, the process alive after;
//! - `Bearer` casing and spacing: a credential that names the scheme is judged, never
//!   ignored as "no token"; paths that upstreams resolve differently (`..%2F`, `..;`)
//!   never pass as anonymous;
//! - floods: 10,000 distinct valid tokens against a 1,000-entry cache (hits and RSS
//!   bounded); 200 slow-loris connections on every HTTP listener, and one on a kept-alive
//!   connection; 64 KB headers;
//! - key servers: a JWKS of 10,000 keys (refused whole, last good keys kept), unsupported
//!   key types beside good ones (the good ones load); key files that never end;
//! - secrets: tokens, key material and keystore passwords appear in no log line (at
//!   `trace`), no `check-config` error, no `/keys` or `/metrics` output;
//! - the fuzz targets' checks (`fuzz/src/lib.rs`, included below) over every seed in
//!   `fuzz/seeds/`, so CI runs them on stable without libFuzzer.
//!
//! The deny-reason table itself is `decisions.rs`, JWKS fetch faults `jwks_remote.rs`,
//! the 128 KiB head limit (431) `serving.rs`: not repeated here.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::jwks_server::JwksServer;
use crate::support::upstream::{Mode, Upstream};
use crate::support::{
    ANY_PORT, TempDir, Tokengate, fixture_issuer, fixtures, http, mint, public_jwk, token,
};

/// The fuzz targets' checks, compiled here on stable (see `fuzz/src/lib.rs`).
#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

/// `server::HEADER_READ_TIMEOUT`: the time a client has to send a request head.
const HEAD_TIMEOUT: Duration = tokengate::server::HEADER_READ_TIMEOUT;

// === the attack corpus ===

/// One request and the answer it must get.
struct Case {
    name: String,
    path: &'static str,
    headers: Vec<(String, String)>,
    /// Status and JSON `error` ("" for an allowed request).
    want: (u16, &'static str),
}

fn case(name: impl Into<String>, token: &str, want: (u16, &'static str)) -> Case {
    Case {
        name: name.into(),
        path: "/orders",
        headers: vec![("authorization".into(), format!("Bearer {token}"))],
        want,
    }
}

const OK: (u16, &str) = (200, "");
const MALFORMED: (u16, &str) = (401, "malformed");
const BAD_ALG: (u16, &str) = (401, "bad_alg");
const BAD_SIGNATURE: (u16, &str) = (401, "bad_signature");
const BAD_AUDIENCE: (u16, &str) = (401, "bad_audience");
const TOO_LARGE: (u16, &str) = (401, "too_large");
const UNKNOWN_KEY: (u16, &str) = (401, "unknown_key");
const MISSING: (u16, &str) = (401, "missing_token");

/// Sends every case to authz_http; returns one line per case that got another answer
/// (and fails at once on a 5xx or no answer).
fn run(tg: &Tokengate, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let r = http::request(tg.authz, "GET", c.path, &headers, b"")
            .unwrap_or_else(|| panic!("{}: no answer; log:\n{}", c.name, tg.logs()));
        assert!(r.status < 500, "{}: {} {}", c.name, r.status, r.body_text());
        let got = (r.status, r.error());
        if (got.0, got.1.as_str()) != c.want {
            failures.push(format!("{}: want {:?}, got {:?}", c.name, c.want, got));
        }
    }
    failures
}

/// Asserts that the process still runs and answers.
fn assert_alive(tg: &mut Tokengate) {
    assert!(
        matches!(tg.child.try_wait(), Ok(None)),
        "tokengate exited; log:\n{}",
        tg.logs()
    );
    let r = http::get(tg.admin, "/healthz").map(|r| r.status);
    assert_eq!(r, Some(200), "healthz after the attack");
}

#[test]
fn the_attack_corpus_is_denied_with_the_right_reason() {
    let dir = TempDir::new("hardening-corpus");
    // A live server at the URLs the jku/x5u headers name: tokengate must never call it.
    let lure = JwksServer::start(
        &std::fs::read_to_string(fixtures().join("jwks-public.json")).unwrap_or_default(),
    );
    let mut tg = Tokengate::start(&dir, gate_config());
    tg.wait_ready();
    let mut cases = Vec::new();

    // alg none, every casing, with and without a signature.
    let rs_sig = segment(&token("GOOD_RS256"), 2);
    for alg in ["none", "None", "NONE", "nOnE", "none ", "nonE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": "rsa-1"});
        let unsigned = format!(
            "{}.{}.",
            b64(&header.to_string()),
            b64(&mint::claims().to_string())
        );
        cases.push(case(
            format!("alg {alg:?}, no signature"),
            &unsigned,
            BAD_ALG,
        ));
        cases.push(case(
            format!("alg {alg:?}, a signature"),
            &format!("{unsigned}{rs_sig}"),
            BAD_ALG,
        ));
    }
    cases.push(case("ALG_NONE fixture", &token("ALG_NONE"), BAD_ALG));

    // Key confusion: HS256/384/512 keyed with a configured public key's own bytes.
    // With its kid: the kid names an RSA/EC key, which never fits HS* (bad_alg). Without:
    // the fallback tries the HMAC keys only, and hmac-1 does not verify (bad_signature).
    for (kid, secret_name, secret) in public_key_encodings() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let key = EncodingKey::from_secret(&secret);
            let with_kid = json!({"alg": format!("{alg:?}"), "typ": "at+jwt", "kid": kid});
            let t = mint::sign_raw(&with_kid, &mint::claims(), alg, &key);
            cases.push(case(
                format!("{alg:?} keyed with {secret_name}, kid {kid}"),
                &t,
                BAD_ALG,
            ));
            let no_kid = json!({"alg": format!("{alg:?}"), "typ": "at+jwt"});
            let t = mint::sign_raw(&no_kid, &mint::claims(), alg, &key);
            cases.push(case(
                format!("{alg:?} keyed with {secret_name}, no kid"),
                &t,
                BAD_SIGNATURE,
            ));
        }
    }
    cases.push(case(
        "KEY_CONFUSION_HS256_PEM",
        &token("KEY_CONFUSION_HS256_PEM"),
        BAD_ALG,
    ));
    cases.push(case(
        "KEY_CONFUSION_HS256_NO_KID",
        &token("KEY_CONFUSION_HS256_NO_KID"),
        BAD_SIGNATURE,
    ));

    // Hostile kids on a forged token: treated as opaque names, never as paths or queries.
    let long_kid = "k".repeat(5_000);
    let huge_kid = "k".repeat(10 * 1024);
    let hostile_kids: [(&str, Value, (u16, &str)); 12] = [
        (
            "path traversal",
            json!("../../../../../etc/passwd"),
            BAD_SIGNATURE,
        ),
        ("absolute path", json!("/proc/self/environ"), BAD_SIGNATURE),
        ("SQL", json!("' OR '1'='1' --"), BAD_SIGNATURE),
        ("NUL", json!("rsa-1\u{0}"), BAD_SIGNATURE),
        ("only NUL", json!("\u{0}"), BAD_SIGNATURE),
        ("5 KB", json!(long_kid), BAD_SIGNATURE),
        ("10 KB", json!(huge_kid), TOO_LARGE),
        ("number", json!(7), MALFORMED),
        ("object", json!({"kid": "rsa-1"}), MALFORMED),
        ("array", json!(["rsa-1"]), MALFORMED),
        ("boolean", json!(true), MALFORMED),
        ("null", Value::Null, BAD_SIGNATURE),
    ];
    for (what, kid, want) in hostile_kids {
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": kid});
        let t = mint::sign_raw(
            &header,
            &mint::claims(),
            Algorithm::RS256,
            &mint::key("attacker"),
        );
        cases.push(case(format!("kid {what}, forged"), &t, want));
    }
    // Signed by the real key, the same names are unknown kids: one refetch, then the
    // fallback verifies. Nothing was looked up by name but the key ring.
    for kid in ["../../../../../etc/passwd", "' OR '1'='1' --", "rsa-1\u{0}"] {
        let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": kid});
        let t = mint::sign_raw(
            &header,
            &mint::claims(),
            Algorithm::RS256,
            &mint::key("rsa-1"),
        );
        cases.push(case(format!("kid {kid:?}, real key (fallback)"), &t, OK));
    }

    // jku / x5u / jwk / x5c never pick a key.
    for name in ["JKU_ATTACKER", "JWK_EMBEDDED", "X5C_EMBEDDED"] {
        cases.push(case(name, &token(name), BAD_SIGNATURE));
    }
    let attacker_jwk = serde_json::from_str::<Value>(&segment_json(&token("JWK_EMBEDDED"), 0))
        .map(|h| h["jwk"].clone())
        .unwrap_or(Value::Null);
    assert!(attacker_jwk.is_object(), "JWK_EMBEDDED carries no jwk");
    let x5c = serde_json::from_str::<Value>(&segment_json(&token("X5C_EMBEDDED"), 0))
        .map(|h| h["x5c"].clone())
        .unwrap_or(Value::Null);
    let pointed = [
        (
            "jku at a live server",
            json!({"alg": "RS256", "typ": "at+jwt", "jku": lure.url()}),
        ),
        (
            "jku with a known kid",
            json!({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "jku": lure.url()}),
        ),
        (
            "x5u at a live server",
            json!({"alg": "RS256", "typ": "at+jwt", "x5u": lure.url()}),
        ),
        (
            "jwk with a known kid",
            json!({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "jwk": attacker_jwk}),
        ),
        (
            "x5c with the PEM key's kid",
            json!({"alg": "RS256", "typ": "at+jwt", "kid": "pem-1", "x5c": x5c}),
        ),
    ];
    for (what, header) in pointed {
        let t = mint::sign_raw(
            &header,
            &mint::claims(),
            Algorithm::RS256,
            &mint::key("attacker"),
        );
        cases.push(case(what, &t, BAD_SIGNATURE));
    }

    // crit and b64, signed by the real key: a valid signature does not save them.
    cases.push(case("CRIT_UNKNOWN", &token("CRIT_UNKNOWN"), MALFORMED));
    cases.push(case("B64_FALSE", &token("B64_FALSE"), MALFORMED));
    let real_header = |extra: Value| {
        let mut h = json!({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"});
        if let (Some(h), Some(e)) = (h.as_object_mut(), extra.as_object()) {
            h.extend(e.clone());
        }
        mint::sign_raw(&h, &mint::claims(), Algorithm::RS256, &mint::key("rsa-1"))
    };
    for (what, extra) in [
        (
            "crit with an unknown name",
            json!({"crit": ["urn:example:x"], "urn:example:x": 1}),
        ),
        (
            "crit naming a registered claim",
            json!({"crit": ["exp"], "exp": 1}),
        ),
        ("crit empty", json!({"crit": []})),
        ("crit not an array", json!({"crit": "b64"})),
        ("b64 false without crit", json!({"b64": false})),
        ("b64 as a string", json!({"b64": "false"})),
    ] {
        cases.push(case(what, &real_header(extra), MALFORMED));
    }
    cases.push(case(
        "b64 true is the default",
        &real_header(json!({"b64": true})),
        OK,
    ));

    // Shapes.
    let good = token("GOOD_RS256");
    let (h, p) = (segment(&good, 0), segment(&good, 1));
    cases.push(case("empty signature", &format!("{h}.{p}."), MALFORMED));
    let other_sig = segment(&token("GOOD_RS256_NO_AUD"), 2);
    cases.push(case(
        "signature of another token",
        &format!("{h}.{p}.{other_sig}"),
        BAD_SIGNATURE,
    ));
    let es_sig = segment(&token("GOOD_ES256"), 2);
    cases.push(case(
        "signature of another algorithm",
        &format!("{h}.{p}.{es_sig}"),
        BAD_SIGNATURE,
    ));
    cases.push(case("two segments", &format!("{h}.{p}"), MALFORMED));
    cases.push(case("four segments", &format!("{good}.{p}"), MALFORMED));
    let jwe_header = b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}"#);
    cases.push(case(
        "five segments (JWE) without a decryption section",
        &format!("{jwe_header}.a2V5.aXY.Y2lwaGVy.dGFn"),
        BAD_ALG,
    ));
    cases.push(case(
        "padded base64",
        &format!("{h}=.{p}.{}", segment(&good, 2)),
        MALFORMED,
    ));
    let std_alphabet = good.replace('-', "+").replace('_', "/");
    if std_alphabet != good {
        cases.push(case("standard base64 alphabet", &std_alphabet, MALFORMED));
    }
    let claims = mint::claims().to_string();
    for (what, header) in [
        ("header is a JSON array", r#"["alg","RS256"]"#.to_string()),
        ("header is a JSON string", r#""RS256""#.to_string()),
        (
            "duplicate alg, none last",
            r#"{"alg":"RS256","typ":"at+jwt","kid":"rsa-1","alg":"none"}"#.to_string(),
        ),
        (
            "duplicate alg, none first",
            r#"{"alg":"none","typ":"at+jwt","kid":"rsa-1","alg":"RS256"}"#.to_string(),
        ),
        (
            "duplicate kid",
            r#"{"alg":"RS256","typ":"at+jwt","kid":"rsa-1","kid":"rsa-2"}"#.to_string(),
        ),
        ("header not JSON", "{alg: RS256}".to_string()),
        (
            "header with a BOM",
            "\u{feff}{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"typ\":\"at+jwt\"}".to_string(),
        ),
    ] {
        cases.push(case(what, &sign_text(&header, &claims, "rsa-1"), MALFORMED));
    }
    let header = r#"{"alg":"RS256","typ":"at+jwt","kid":"rsa-1"}"#;
    cases.push(case(
        "claims are a JSON array",
        &sign_text(header, "[1,2]", "rsa-1"),
        MALFORMED,
    ));
    cases.push(case(
        "claims not JSON",
        &sign_text(header, "exp=1", "rsa-1"),
        MALFORMED,
    ));

    // NumericDates: numbers within 0..=9999-12-31, fractions allowed (RFC 7519 §2).
    let now = mint::now();
    let date_cases: [(&str, &str, String, (u16, &str)); 16] = [
        (
            "exp as a string",
            "exp",
            format!("\"{}\"", now + 3600),
            MALFORMED,
        ),
        (
            "nbf as a string",
            "nbf",
            format!("\"{}\"", now - 10),
            MALFORMED,
        ),
        (
            "iat as a string",
            "iat",
            format!("\"{}\"", now - 10),
            MALFORMED,
        ),
        ("exp as a float", "exp", format!("{}.75", now + 3600), OK),
        ("iat as a float", "iat", format!("{}.5", now - 10), OK),
        ("nbf as a float", "nbf", format!("{}.25", now - 10), OK),
        ("exp 1e300", "exp", "1e300".into(), MALFORMED),
        ("exp 2^63", "exp", "9223372036854775808".into(), MALFORMED),
        ("exp i64::MAX", "exp", i64::MAX.to_string(), MALFORMED),
        ("exp 9999-12-31T23:59:59Z", "exp", "253402300799".into(), OK),
        (
            "exp a second later",
            "exp",
            "253402300800".into(),
            MALFORMED,
        ),
        ("exp negative", "exp", "-1".into(), MALFORMED),
        ("iat negative", "iat", "-5".into(), MALFORMED),
        ("nbf 1e300", "nbf", "1e300".into(), MALFORMED),
        ("nbf -1e300", "nbf", "-1e300".into(), MALFORMED),
        ("exp null", "exp", "null".into(), MALFORMED),
    ];
    for (what, name, raw, want) in date_cases {
        let t = sign_text(header, &claims_with_raw(name, &raw), "rsa-1");
        cases.push(case(what, &t, want));
    }

    // aud of the wrong type never matches.
    for (what, aud) in [
        ("aud a number", json!(5)),
        ("aud an object", json!({"aud": "orders-api"})),
        ("aud null", Value::Null),
        ("aud true", json!(true)),
        ("aud numbers", json!([5, 6])),
        ("aud nested array", json!([["orders-api"]])),
        ("aud with a NUL", json!("orders-api\u{0}")),
        ("aud in other casing", json!("Orders-API")),
    ] {
        let mut c = mint::claims();
        c["aud"] = aud;
        let t = mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &c);
        cases.push(case(what, &t, BAD_AUDIENCE));
    }

    // Size: token.max_bytes (8192) decides, well below the listener's 128 KiB head limit,
    // so a 100 KB token is `too_large` (401), not 431.
    let big = format!(
        "{}.{}.{}",
        b64(header),
        "A".repeat(100 * 1024),
        "B".repeat(342)
    );
    cases.push(case("100 KB token", &big, TOO_LARGE));
    let exact = format!(
        "{h}.{}.{}",
        "A".repeat(8192 - h.len() - 2 - 10),
        "B".repeat(8)
    );
    assert_eq!(exact.len(), 8190);
    cases.push(case(
        "8,190 bytes: judged, not too_large",
        &exact,
        MALFORMED,
    ));

    // Several Authorization headers: one method, once (RFC 6750 §2).
    let mut two = case("two Bearer headers", &good, (400, "invalid_request"));
    two.headers.push((
        "authorization".into(),
        format!("Bearer {}", token("GOOD_ES256")),
    ));
    cases.push(two);
    let mut same = case("the same token twice", &good, (400, "invalid_request"));
    same.headers
        .push(("Authorization".into(), format!("bearer {good}")));
    cases.push(same);
    let mut three = case("three Bearer headers", &good, (400, "invalid_request"));
    for _ in 0..2 {
        three
            .headers
            .push(("authorization".into(), format!("Bearer {good}")));
    }
    cases.push(three);

    // Tokens in the query string or in cookies tokengate was not told about: no token.
    for (what, path) in [
        ("access_token in the query", "/orders?access_token=GOOD"),
        (
            "access_token after another parameter",
            "/orders?a=1&access_token=GOOD",
        ),
    ] {
        let path: &'static str = Box::leak(path.replace("GOOD", &good).into_boxed_str());
        cases.push(Case {
            name: what.into(),
            path,
            headers: Vec::new(),
            want: MISSING,
        });
    }
    cases.push(Case {
        name: "access_token cookie (no cookie configured)".into(),
        path: "/orders",
        headers: vec![("cookie".into(), format!("access_token={good}"))],
        want: MISSING,
    });

    let failures = run(&tg, &cases);
    assert!(
        failures.is_empty(),
        "{} of {} attack cases got another answer:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("attack corpus: {} cases", cases.len());
    assert_eq!(
        lure.hits(),
        0,
        "a jku/x5u URL from a token header was fetched"
    );
    assert_alive(&mut tg);
}

/// With HMAC allowed but no HMAC key configured, a key-confused token without kid finds
/// no compatible key at all (`unknown_key`); with a kid it is `bad_alg`, as above.
#[test]
fn key_confusion_without_an_hmac_key_is_unknown_key() {
    let dir = TempDir::new("hardening-confusion");
    let mut issuer = fixture_issuer();
    issuer["key_sources"][0] =
        json!({"jwks_file": fixtures().join("jwks-public.json").to_string_lossy()});
    let mut tg = Tokengate::start(&dir, json!({"issuers": [issuer]}));
    tg.wait_ready();
    let mut cases = Vec::new();
    for (kid, secret_name, secret) in public_key_encodings() {
        let key = EncodingKey::from_secret(&secret);
        let t = mint::sign_raw(
            &json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"}),
            &mint::claims(),
            Algorithm::HS256,
            &key,
        );
        cases.push(case(
            format!("HS256 keyed with {secret_name}, kid {kid}"),
            &t,
            BAD_ALG,
        ));
        let t = mint::sign_raw(
            &json!({"alg": "HS256", "typ": "at+jwt"}),
            &mint::claims(),
            Algorithm::HS256,
            &key,
        );
        cases.push(case(
            format!("HS256 keyed with {secret_name}, no kid"),
            &t,
            UNKNOWN_KEY,
        ));
    }
    let failures = run(&tg, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_alive(&mut tg);
}

/// The scheme name matches in any casing and one or more spaces separate it from the
/// token (RFC 9110 §11.1/§11.4, RFC 6750 §2.1). A value that names the `Bearer` scheme
/// but does not fit that syntax (a tab, a colon, nothing after it) is a malformed
/// credential, never "no token": otherwise an anonymous route lets it through to an
/// upstream whose own, laxer parser may read and trust the unverified token (one that
/// splits on any white space, or strips `Bearer:`).
#[test]
fn bearer_scheme_casing_and_spacing() {
    let dir = TempDir::new("hardening-bearer");
    let mut tg = Tokengate::start(&dir, gate_config());
    tg.wait_ready();
    let good = token("GOOD_RS256");
    let expired = token("EXPIRED");
    /// A status and the JSON `error` values accepted with it.
    type Answer = (u16, &'static [&'static str]);
    const ALLOWED: &[&str] = &[""];
    const JUDGED: &[&str] = &["malformed", "expired"];
    const EXPIRED: &[&str] = &["expired"];
    const BAD: &[&str] = &["malformed"];
    const NONE: &[&str] = &["missing_token"];
    const INVALID: &[&str] = &["invalid_request"];
    let mut failures = Vec::new();
    // (value, what a protected route answers, what an anonymous route answers)
    let table: Vec<(String, Answer, Answer)> = vec![
        (format!("Bearer {good}"), (200, ALLOWED), (200, ALLOWED)),
        (format!("bearer {good}"), (200, ALLOWED), (200, ALLOWED)),
        (format!("BEARER {good}"), (200, ALLOWED), (200, ALLOWED)),
        (format!("bEaReR {good}"), (200, ALLOWED), (200, ALLOWED)),
        (format!("Bearer   {good}"), (200, ALLOWED), (200, ALLOWED)),
        (format!("Bearer {good}   "), (200, ALLOWED), (200, ALLOWED)),
        (format!("Bearer {expired}"), (401, EXPIRED), (401, EXPIRED)),
        (format!("Bearer {good} extra"), (401, BAD), (401, BAD)),
        // Two credentials merged into one field (as proxies merge repeated fields).
        (
            format!("Bearer {good},Bearer {good}"),
            (400, INVALID),
            (400, INVALID),
        ),
        // Names the scheme, breaks the syntax: judged (malformed, or read and expired).
        (format!("Bearer\t{expired}"), (401, JUDGED), (401, JUDGED)),
        (format!("Bearer \t{expired}"), (401, JUDGED), (401, JUDGED)),
        (format!("Bearer:{expired}"), (401, JUDGED), (401, JUDGED)),
        (format!("Bearer: {expired}"), (401, JUDGED), (401, JUDGED)),
        (format!("Bearer,{expired}"), (401, JUDGED), (401, JUDGED)),
        ("Bearer".to_string(), (401, JUDGED), (401, JUDGED)),
        // Another scheme: no bearer token at all.
        (format!("Bearerx {expired}"), (401, NONE), (200, ALLOWED)),
        (format!("Token {expired}"), (401, NONE), (200, ALLOWED)),
        (
            "Basic dXNlcjpwYXNz".to_string(),
            (401, NONE),
            (200, ALLOWED),
        ),
    ];
    for (value, protected, anonymous) in &table {
        for (path, (status, errors)) in [("/orders", protected), ("/public/x", anonymous)] {
            let r = http::request(tg.authz, "GET", path, &[("authorization", value)], b"")
                .unwrap_or_else(|| panic!("no answer; log:\n{}", tg.logs()));
            let error = r.error();
            if r.status != *status || !errors.contains(&error.as_str()) {
                let shown: String = value.chars().take(12).collect();
                failures.push(format!(
                    "{path} with `Authorization: {}…`: want {status} {errors:?}, got {} {error:?}",
                    shown.escape_debug(),
                    r.status
                ));
            }
        }
    }
    // Two token headers, one of them only bearer-like: still two methods (400).
    let r = http::request(
        tg.authz,
        "GET",
        "/orders",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("authorization", &format!("Bearer\t{expired}")),
        ],
        b"",
    )
    .expect("no answer");
    if r.status != 400 {
        failures.push(format!(
            "`Bearer <valid>` plus `Bearer\\t<other>`: want 400 invalid_request, got {} {:?} \
             (both headers would reach the upstream, only one was judged)",
            r.status,
            r.error()
        ));
    }
    assert!(
        failures.is_empty(),
        "a credential naming the Bearer scheme was ignored or misread (see \
         docs/security.md, \"Bearer syntax\"; fix in src/token/extract.rs):\n{}",
        failures.join("\n")
    );
    assert_alive(&mut tg);
}

/// Paths that common upstreams resolve to a protected route while a plain reading puts
/// them under the anonymous `/public` prefix: an escaped `/` or `\` (decoded before `..`
/// by some frameworks) and `..;` (a `..` segment to Tomcat and Spring). None may pass as
/// anonymous, on authz_http or through the proxy (which forwards the path unchanged).
#[test]
fn ambiguous_paths_never_pass_as_anonymous() {
    let dir = TempDir::new("hardening-paths");
    let upstream = Upstream::start(Mode::Echo);
    let mut config = gate_config();
    config["listeners"] = json!({"proxy": ANY_PORT});
    config["upstream"] = json!({"url": upstream.url(), "timeout": "2s"});
    let mut tg = Tokengate::start(&dir, config);
    let proxy = tg.addr("proxy");
    tg.wait_ready();
    let mut failures = Vec::new();
    for path in [
        "/public/..%2Forders",
        "/public/..%2forders",
        "/public/%2e%2e%2Forders",
        "/public/..%5Corders",
        "/public/..;/orders",
        "/public/..;x=1/orders",
        "/public/%2e%2e;/orders",
        // Resolved by tokengate itself: /orders, so a token is needed.
        "/public/../orders",
        "/public/%2e%2e/orders",
        "/public\\..\\orders",
    ] {
        for (name, addr) in [("authz_http", tg.authz), ("proxy", proxy)] {
            let r = http::request(addr, "GET", path, &[], b"")
                .unwrap_or_else(|| panic!("{name} {path}: no answer"));
            if !(r.status == 400 || r.status == 401) {
                failures.push(format!("{name} {path}: {} {:?}", r.status, r.error()));
            }
        }
    }
    // The plain anonymous route still works.
    let r = http::request(proxy, "GET", "/public/docs", &[], b"").map(|r| r.status);
    assert_eq!(r, Some(200));
    assert!(
        failures.is_empty(),
        "ambiguous paths passed as anonymous requests (the upstream may resolve them to \
         /orders; see docs/security.md, \"Routes\"; fix in src/routes.rs):\n{}",
        failures.join("\n")
    );
    assert_eq!(
        upstream.requests(),
        1,
        "only /public/docs reached the upstream"
    );
    assert_alive(&mut tg);
}

// === floods ===

/// 10,000 distinct valid tokens against `cache.max_entries: 1000`, each with a 4 KB claim
/// that a forward header carries (so that each cache entry holds it): every one is a
/// miss, a replay of 2,000 of them hits at most 1,000 times (the bound on entries), and
/// RSS grows by less than 16 MiB from 1,000 to 10,000 tokens. Unbounded, 9,000 more
/// entries of over 4 KB each would add about 40 MB.
#[test]
fn ten_thousand_tokens_keep_the_cache_within_its_bound() {
    const TOKENS: usize = 10_000;
    const MAX_ENTRIES: usize = 1_000;
    const RSS_GROWTH_BOUND_KB: u64 = 16 * 1024;
    let dir = TempDir::new("hardening-flood");
    let mut config = gate_config();
    config["cache"] = json!({"max_entries": MAX_ENTRIES, "max_ttl": "5m"});
    // Cache entries keep the forward-header values: make each one carry the 4 KB claim.
    config["forward"] = json!({"claim_headers": {"x-auth-subject": "sub", "x-auth-pad": "pad"}});
    let mut tg = Tokengate::start(&dir, config);
    tg.wait_ready();
    let pad = "p".repeat(4 * 1024);
    let tokens: Vec<String> = (0..TOKENS)
        .map(|i| {
            let mut c = mint::claims();
            c["jti"] = json!(format!("flood-{i}"));
            c["pad"] = json!(pad);
            mint::sign(Algorithm::HS256, "hmac-1", Some("hmac-1"), &c)
        })
        .collect();
    assert!(tokens.iter().all(|t| t.len() < 8192));
    let pid = tg.child.id();
    let misses_before = cache_requests(&tg, "miss");

    check_all(&tg, &tokens[..MAX_ENTRIES]);
    let rss_full = rss_kb(pid);
    check_all(&tg, &tokens[MAX_ENTRIES..]);
    let rss_after = rss_kb(pid);
    let misses = cache_requests(&tg, "miss") - misses_before;
    assert_eq!(misses, TOKENS as f64, "every distinct token is a miss");

    let hits_before = cache_requests(&tg, "hit");
    let replay: Vec<String> = tokens.iter().step_by(5).cloned().collect();
    check_all(&tg, &replay);
    let hits = cache_requests(&tg, "hit") - hits_before;
    eprintln!(
        "flood: VmRSS {rss_full} kB after {MAX_ENTRIES} tokens, {rss_after} kB after {TOKENS}; \
         replay of {}: {hits} hits",
        replay.len()
    );
    assert!(
        hits <= (MAX_ENTRIES + MAX_ENTRIES / 10) as f64,
        "{hits} cache hits out of {} replayed tokens: more entries than max_entries {MAX_ENTRIES}",
        replay.len()
    );
    assert!(
        rss_after.saturating_sub(rss_full) < RSS_GROWTH_BOUND_KB,
        "RSS grew from {rss_full} kB to {rss_after} kB over {} tokens beyond the cache bound",
        TOKENS - MAX_ENTRIES
    );
    assert_alive(&mut tg);
}

/// 200 connections per HTTP listener (authz_http, proxy, admin) send their request head
/// one byte a second, 20 more send nothing at all: each is answered 408 or closed within
/// the head timeout (plus slack), and every normal check meanwhile is answered (its
/// slowest time is printed, not asserted: a figure, not a pass/fail on a shared machine).
#[test]
fn slow_loris_connections_are_cut_off_without_starving_others() {
    const PER_LISTENER: usize = 200;
    const SILENT: usize = 20;
    let dir = TempDir::new("hardening-loris");
    let upstream = Upstream::start(Mode::Echo);
    let mut config = gate_config();
    config["listeners"] = json!({"proxy": ANY_PORT});
    config["upstream"] = json!({"url": upstream.url(), "timeout": "2s"});
    let mut tg = Tokengate::start(&dir, config);
    let proxy = tg.addr("proxy");
    tg.wait_ready();
    let good = token("GOOD_RS256");

    // (listener, connection, silent, when the server let go)
    let mut slow: Vec<(&str, TcpStream, bool, Option<Duration>)> = Vec::new();
    let started = Instant::now();
    for (name, addr) in [
        ("authz_http", tg.authz),
        ("proxy", proxy),
        ("admin", tg.admin),
    ] {
        for i in 0..PER_LISTENER + SILENT {
            let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{name}: connect: {e}"));
            let silent = i >= PER_LISTENER;
            if !silent {
                let _ = s.write_all(b"GET /orders HTTP/1.1\r\nhost: x\r\nx-slow: ");
            }
            s.set_nonblocking(true).unwrap();
            slow.push((name, s, silent, None));
        }
    }
    let deadline = HEAD_TIMEOUT + Duration::from_secs(4);
    let mut worst_check = Duration::ZERO;
    let mut next_byte = Instant::now();
    while started.elapsed() < deadline && slow.iter().any(|c| c.3.is_none()) {
        if Instant::now() >= next_byte {
            next_byte += Duration::from_secs(1);
            for (_, s, _, closed) in slow.iter_mut().filter(|c| !c.2 && c.3.is_none()) {
                if s.write_all(b"a").is_err() {
                    *closed = Some(started.elapsed());
                }
            }
        }
        for (_, s, _, closed) in slow.iter_mut().filter(|c| c.3.is_none()) {
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                // A 408 answer or the close itself: either way the server let go.
                Ok(_) => *closed = Some(started.elapsed()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(started.elapsed()),
            }
        }
        let t = Instant::now();
        let r = tg.check_token("/orders", &good);
        worst_check = worst_check.max(t.elapsed());
        assert_eq!(r.status, 200, "a normal check during the slow-loris");
        std::thread::sleep(Duration::from_millis(100));
    }
    let open: Vec<(&str, bool)> = slow
        .iter()
        .filter(|c| c.3.is_none())
        .map(|c| (c.0, c.2))
        .collect();
    assert!(
        open.is_empty(),
        "{} slow connections still open after {deadline:?} ((listener, silent): {:?})",
        open.len(),
        open.iter().collect::<std::collections::BTreeSet<_>>()
    );
    let last = slow.iter().filter_map(|c| c.3).max().unwrap_or_default();
    eprintln!(
        "slow-loris: {} connections cut off, the last after {last:?}; slowest normal check {worst_check:?}",
        slow.len()
    );
    assert_eq!(
        upstream.requests(),
        0,
        "a slow request reached the upstream"
    );
    assert_alive(&mut tg);
}

/// The same slow-loris on a kept-alive connection: one normal request, then the next
/// request head one byte a second. It must be cut off like a first request; a client
/// that can hold a connection forever this way exhausts connections and descriptors.
#[test]
fn slow_loris_after_a_kept_alive_request_is_cut_off() {
    let dir = TempDir::new("hardening-loris-ka");
    let upstream = Upstream::start(Mode::Echo);
    let mut config = gate_config();
    config["listeners"] = json!({"proxy": ANY_PORT});
    config["upstream"] = json!({"url": upstream.url(), "timeout": "2s"});
    let mut tg = Tokengate::start(&dir, config);
    let proxy = tg.addr("proxy");
    tg.wait_ready();
    let mut conns = Vec::new();
    for (name, addr, path) in [
        ("authz_http", tg.authz, "/public/x"),
        ("proxy", proxy, "/public/x"),
        ("admin", tg.admin, "/healthz"),
    ] {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{name}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes());
        let first = read_response(&mut s).unwrap_or_else(|| panic!("{name}: no first answer"));
        assert_eq!(first.0, 200, "{name}: the first, normal request");
        let _ = s.write_all(b"GET /orders HTTP/1.1\r\nhost: x\r\nx-slow: ");
        s.set_nonblocking(true).unwrap();
        conns.push((name, s, None::<Duration>));
    }
    let started = Instant::now();
    let deadline = HEAD_TIMEOUT * 2 + Duration::from_secs(2);
    while started.elapsed() < deadline && conns.iter().any(|c| c.2.is_none()) {
        for (_, s, closed) in conns.iter_mut().filter(|c| c.2.is_none()) {
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(_) => *closed = Some(started.elapsed()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if s.write_all(b"a").is_err() {
                        *closed = Some(started.elapsed());
                    }
                }
                Err(_) => *closed = Some(started.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let open: Vec<&str> = conns
        .iter()
        .filter(|c| c.2.is_none())
        .map(|c| c.0)
        .collect();
    assert!(
        open.is_empty(),
        "a second request head sent one byte a second on a kept-alive connection is still \
         being read after {deadline:?} on {open:?}: the head timeout must be re-armed \
         for every head (hyper's header_read_timeout), or one client can hold \
         connections and descriptors forever (docs/security.md, \"Limits\")"
    );
    assert_alive(&mut tg);
}

/// On SIGTERM, a kept-alive `authz_http` connection that is idle between checks (as
/// Envoy's pooled connections are) is closed at once by the graceful-shutdown signal,
/// not left to its 5 s keep-alive timeout, and the process exits 0.
#[test]
fn sigterm_closes_idle_kept_alive_authz_connections_at_once() {
    let dir = TempDir::new("hardening-sigterm-idle");
    let mut tg = Tokengate::start(&dir, gate_config());
    tg.wait_ready();
    let s = connect(tg.authz).expect("cannot connect to authz_http");
    let (status, mut s) =
        keep_alive_check(s, &token("GOOD_RS256")).expect("no answer on the kept-alive connection");
    assert_eq!(status, 200);
    let signalled = Instant::now();
    tg.signal("TERM");
    let mut buf = [0u8; 64];
    let read = s.read(&mut buf);
    let closed_after = signalled.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the idle connection was not closed: {read:?}"
    );
    // The keep-alive timeout (5 s) would close it too, but only later.
    assert!(
        closed_after < Duration::from_secs(4),
        "closed {closed_after:?} after SIGTERM: by the keep-alive timeout, not by shutdown"
    );
    assert_eq!(tg.wait_exit(), Some(0), "log:\n{}", tg.logs());
}

/// Headers of 60 KiB (below the 64 KiB head limit, so not 431) are answered normally
/// and promptly on every HTTP listener; a 60 KiB token is `too_large`.
#[test]
fn sixty_four_kilobyte_headers_are_answered_on_every_listener() {
    let dir = TempDir::new("hardening-64k");
    let upstream = Upstream::start(Mode::Echo);
    let mut config = gate_config();
    config["listeners"] = json!({"proxy": ANY_PORT});
    config["upstream"] = json!({"url": upstream.url(), "timeout": "2s"});
    let mut tg = Tokengate::start(&dir, config);
    let proxy = tg.addr("proxy");
    tg.wait_ready();
    let junk = "j".repeat(60 * 1024);
    let big_token = format!("Bearer {}", "t".repeat(60 * 1024));
    let good = format!("Bearer {}", token("GOOD_RS256"));
    for (name, addr, path, headers, want) in [
        (
            "authz_http",
            tg.authz,
            "/orders",
            vec![("x-junk", junk.as_str()), ("authorization", good.as_str())],
            (200, ""),
        ),
        (
            "authz_http",
            tg.authz,
            "/orders",
            vec![("authorization", big_token.as_str())],
            TOO_LARGE,
        ),
        (
            "proxy",
            proxy,
            "/orders",
            vec![("authorization", big_token.as_str())],
            TOO_LARGE,
        ),
        (
            "proxy",
            proxy,
            "/orders",
            vec![("x-junk", junk.as_str()), ("authorization", good.as_str())],
            (200, ""),
        ),
        (
            "admin",
            tg.admin,
            "/healthz",
            vec![("x-junk", junk.as_str())],
            (200, ""),
        ),
    ] {
        // Answered as the request it is (a timed-out head would be a 408 instead).
        let r = http::request(addr, "GET", path, &headers, b"")
            .unwrap_or_else(|| panic!("{name}: no answer"));
        let error = if r.status == 200 {
            String::new()
        } else {
            r.error()
        };
        assert_eq!((r.status, error.as_str()), want, "{name} {path}");
    }
    assert_alive(&mut tg);
}

// === key servers ===

/// A JWKS of 10,000 (tiny) keys, under the 1 MiB body limit: refused whole because of
/// `MAX_KEYS` (1,000), counted as a fetch error, and the last good keys keep serving.
#[test]
fn a_jwks_of_ten_thousand_keys_is_refused_whole() {
    let good = json!({"keys": [public_jwk("rsa-1", "k1")]}).to_string();
    let server = JwksServer::start(&good);
    let dir = TempDir::new("hardening-10k-keys");
    let mut tg = Tokengate::start(&dir, remote_config(&server));
    tg.wait_ready();
    let t = remote_token("rsa-1", "k1");
    assert_eq!(tg.check_token("/orders", &t).status, 200);

    let keys: Vec<Value> = (0..10_000)
        .map(|i| json!({"kty": "EC", "kid": format!("f{i}")}))
        .collect();
    let flood = json!({"keys": keys}).to_string();
    assert!(
        flood.len() < 1 << 20,
        "the set must be refused for its key count, not its size"
    );
    let errors = jwks_fetches(&tg, "error");
    server.set(|b| b.body = flood);
    // Synchronous: the refusal is in the answer (502, the JWKS source in error).
    let r = http::request(tg.admin, "POST", "/refresh", &[], b"").expect("POST /refresh");
    assert_eq!(r.status, 502, "{}", r.body_text());
    assert!(
        r.body_text().contains("more than the 1000 allowed"),
        "{}",
        r.body_text()
    );
    tg.wait_for(
        || jwks_fetches(&tg, "error") > errors,
        "the 10,000-key set counted as a fetch error",
    );
    tg.wait_for(
        || tg.logs().contains("10000 keys, more than the 1000 allowed"),
        "the refusal logged with its reason",
    );
    assert_eq!(
        tg.check_token("/orders", &remote_token("rsa-1", "k1"))
            .status,
        200,
        "last good keys"
    );
    let keys = tg.keys();
    let listed: Vec<&str> = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(listed, ["k1"], "no key of the refused set was loaded");
    assert_eq!(http::get(tg.admin, "/readyz").map(|r| r.status), Some(200));
    assert_alive(&mut tg);
}

/// Unsupported keys (RSA 1024, P-521, X25519, `kty: "foo"`, a point off its curve, a
/// symmetric key published remotely) beside good ones: each is skipped with its reason,
/// the good ones load and verify.
#[test]
fn unsupported_keys_are_skipped_and_good_ones_load() {
    let rsa_1024 = URL_SAFE_NO_PAD.encode([&[0xc5u8][..], &[0x5a; 127]].concat());
    let p521 = URL_SAFE_NO_PAD.encode([0x01u8; 66]);
    let set = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1024", "n": rsa_1024, "e": "AQAB"},
        public_jwk("rsa-1", "k1"),
        {"kty": "EC", "crv": "P-521", "kid": "p-521", "x": p521, "y": p521},
        {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08"},
        {"kty": "foo", "kid": "foo"},
        {"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])},
        {"kty": "oct", "kid": "remote-hmac", "k": URL_SAFE_NO_PAD.encode([7u8; 64])},
        public_jwk("ec-p256", "k2"),
    ]});
    let server = JwksServer::start(&set.to_string());
    let dir = TempDir::new("hardening-mixed-keys");
    let mut tg = Tokengate::start(&dir, remote_config(&server));
    tg.wait_ready();
    assert_eq!(
        tg.check_token("/orders", &remote_token("rsa-1", "k1"))
            .status,
        200
    );
    assert_eq!(
        tg.check_token("/orders", &remote_token("ec-p256", "k2"))
            .status,
        200
    );
    let keys = tg.keys();
    let listed: Vec<&str> = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(listed, ["k1", "k2"]);
    let logs = tg.logs();
    for reason in [
        "RSA key of 1024 bits",
        "unsupported curve \\\"P-521\\\"",
        "unsupported curve \\\"X25519\\\"",
        "unsupported kty \\\"foo\\\"",
        "EC point rejected",
        "symmetric (oct) key in a remote JWKS ignored",
    ] {
        assert!(
            logs.contains(reason) || logs.contains(&reason.replace("\\\"", "\"")),
            "no skip logged with {reason:?}; log:\n{logs}"
        );
    }
    // A forged token naming a skipped key's kid is judged like any unknown kid.
    let forged = mint::sign(
        Algorithm::RS256,
        "attacker",
        Some("rsa-1024"),
        &remote_claims(),
    );
    let r = tg.check_token("/orders", &forged);
    assert_eq!((r.status, r.error().as_str()), BAD_SIGNATURE);
    assert_alive(&mut tg);
}

/// A key file that never ends (a FIFO nobody writes, `/dev/zero`) is refused at once,
/// not read until the process blocks forever or runs out of memory: `check-config`
/// (like every reload) must finish, with a reason. Run under a 2 GB address-space limit
/// so that the unbounded read fails fast instead of eating the machine.
#[test]
fn key_files_that_never_end_are_refused() {
    let dir = TempDir::new("hardening-endless-files");
    let fifo = dir.path("jwks.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    let mut failures = Vec::new();
    for (what, file) in [("a FIFO", fifo.clone()), ("/dev/zero", "/dev/zero".into())] {
        let mut issuer = fixture_issuer();
        issuer["key_sources"] = json!([{"jwks_file": file.to_string_lossy()}]);
        let config = dir.write("endless.json", json!({"issuers": [issuer]}).to_string());
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 2000000; exec \"$0\" check-config --config \"$1\"")
            .arg(crate::support::bin())
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                _ if started.elapsed() > Duration::from_secs(5) => break None,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            failures.push(format!("{what}: check-config still running after 5 s"));
            continue;
        };
        let mut out = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if status.success() || out.contains("out of memory") {
            failures.push(format!("{what}: {status}, {}", out.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "key files are read without a bound (read_limited in src/keys/files.rs trusts the \
         file's metadata length):\n{}",
        failures.join("\n")
    );
}

// === secrets ===

/// At `--log-level trace` with the decision log on, over authz_http, the proxy, a remote
/// JWKS, a keystore and the admin endpoints: no log or decision-log line, no `/keys` or
/// `/metrics` output and no `check-config`
/// error holds a token used, a JWK `n`/`x`/`y`/`k` value of the fixtures, the HMAC
/// secret or the keystore password (right or wrong).
#[test]
fn secrets_never_reach_logs_errors_or_the_inventory() {
    let dir = TempDir::new("hardening-secrets");
    let server = JwksServer::start(
        &std::fs::read_to_string(fixtures().join("jwks-public.json")).unwrap_or_default(),
    );
    let upstream = Upstream::start(Mode::Echo);
    let keystore = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/keystore_load/full.p12");
    let password_file = dir.write("keystore.pass", fuzz_checks::KEYSTORE_PASSWORD);
    let mut issuer = fixture_issuer();
    issuer["key_sources"] = json!([
        {"jwks_file": fixtures().join("jwks.json").to_string_lossy()},
        {"jwks_uri": server.url()},
        {"keystore": keystore.to_string_lossy(), "password_file": password_file.to_string_lossy(),
         "password_encoding": "plain", "aliases": fuzz_checks::KEYSTORE_ALIASES},
        {"pem_file": fixtures().join("pem-rsa.cert.pem").to_string_lossy(), "kid": "pem-1"}
    ]);
    let config = json!({
        "listeners": {"authz_http": ANY_PORT, "admin": ANY_PORT,
                      "authz_grpc": null, "proxy": ANY_PORT},
        "upstream": {"url": upstream.url(), "timeout": "2s"},
        "issuers": [issuer],
        "routes": [{"path_prefix": "/public", "allow_anonymous": true}],
        "token": {"from_headers": [{"name": "authorization", "prefix": "Bearer "}], "from_cookies": ["session"]},
        "forward": {"claims_header": "x-auth-claims"},
        "audit": {"enabled": true}
    });
    let path = dir.write("config.json", config.to_string());
    let mut tg = Tokengate::spawn(path.clone(), &["--log-level", "trace"]);
    let proxy = tg.addr("proxy");
    let (authz, admin) = (tg.authz, tg.admin);
    tg.wait_ready();

    let mut used: Vec<String> = [
        "GOOD_RS256",
        "GOOD_ES256",
        "GOOD_HS256",
        "GOOD_EDDSA",
        "EXPIRED",
        "FOREIGN_KNOWN_KID",
        "ALG_NONE",
        "KEY_CONFUSION_HS256_PEM",
        "JWK_EMBEDDED",
        "WRONG_AUDIENCE",
    ]
    .iter()
    .map(|n| token(n))
    .collect();
    used.push(mint::sign(
        Algorithm::HS256,
        "hmac-1",
        Some("hmac-1"),
        &mint::claims(),
    ));
    used.push(mint::sign(
        Algorithm::RS256,
        "rsa-1",
        Some("not-yet-published"),
        &mint::claims(),
    ));
    for t in &used {
        let auth = format!("Bearer {t}");
        let cookie = format!("session={t}");
        for (addr, headers) in [
            (authz, vec![("authorization", auth.as_str())]),
            (authz, vec![("cookie", cookie.as_str())]),
            (proxy, vec![("authorization", auth.as_str())]),
            (
                authz,
                vec![
                    ("authorization", auth.as_str()),
                    ("authorization", auth.as_str()),
                ],
            ),
        ] {
            let r = http::request(addr, "GET", "/orders", &headers, b"");
            assert!(
                r.is_some_and(|r| r.status < 500),
                "a check failed; log:\n{}",
                tg.logs()
            );
        }
    }
    assert!(upstream.requests() > 0, "the proxy forwarded nothing");
    let inventory = http::get(admin, "/keys")
        .map(|r| r.body_text())
        .unwrap_or_default();
    let metrics = http::get(admin, "/metrics")
        .map(|r| r.body_text())
        .unwrap_or_default();
    assert!(
        inventory.contains("hmac-key"),
        "the keystore did not load: {inventory}"
    );
    // Everything it logged, once it has exited.
    tg.signal("TERM");
    let _ = tg.wait_exit();
    let logs = tg.logs();
    assert!(logs.contains("TRACE"), "not running at trace level?");
    let decision_log = tg.stdout();
    assert!(
        decision_log.lines().count() >= used.len() * 4,
        "the decision log is missing lines:\n{decision_log}"
    );

    // check-config with a wrong keystore password, and with the right one.
    let wrong = "Wr0ng-Keystore-Pa55";
    std::fs::write(&password_file, wrong).unwrap();
    let (code, out, err) = crate::support::run(
        &[
            "--log-level",
            "trace",
            "check-config",
            "--config",
            &path.to_string_lossy(),
        ],
        None,
    );
    assert_ne!(
        code, 0,
        "check-config accepted a wrong keystore password:\n{out}{err}"
    );
    assert!(
        err.contains("keystore") || out.contains("keystore"),
        "{out}{err}"
    );
    let wrong_output = format!("{out}\n{err}");
    std::fs::write(&password_file, fuzz_checks::KEYSTORE_PASSWORD).unwrap();
    let (code, out, err) = crate::support::run(
        &[
            "--log-level",
            "trace",
            "check-config",
            "--config",
            &path.to_string_lossy(),
        ],
        None,
    );
    assert_eq!(code, 0, "check-config:\n{out}{err}");
    let right_output = format!("{out}\n{err}");
    let (_, keys_out, keys_err) = crate::support::run(
        &["keys", "--json", "--config", &path.to_string_lossy()],
        None,
    );

    let mut secrets: Vec<(String, String)> = Vec::new();
    for (i, t) in used.iter().enumerate() {
        secrets.push((format!("token #{i}"), t.clone()));
        secrets.push((format!("the signature of token #{i}"), segment(t, 2)));
    }
    let jwks: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("jwks.json")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    for k in jwks["keys"].as_array().into_iter().flatten() {
        for member in ["n", "x", "y", "k"] {
            if let Some(v) = k[member].as_str() {
                secrets.push((format!("{} {member}", k["kid"]), v.to_string()));
            }
        }
        if let Some(secret) = k["k"].as_str().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok()) {
            secrets.push((
                "the HMAC secret (standard base64)".into(),
                STANDARD.encode(&secret),
            ));
            secrets.push((
                "the HMAC secret (hex)".into(),
                secret.iter().map(|b| format!("{b:02x}")).collect(),
            ));
        }
    }
    for (what, pw) in [
        ("keystore password", fuzz_checks::KEYSTORE_PASSWORD),
        ("wrong keystore password", wrong),
    ] {
        secrets.push((what.into(), pw.to_string()));
        secrets.push((format!("{what} (base64)"), STANDARD.encode(pw)));
    }
    let outputs = [
        ("the trace log", &logs),
        ("the decision log", &decision_log),
        ("/keys", &inventory),
        ("/metrics", &metrics),
        ("check-config with a wrong password", &wrong_output),
        ("check-config", &right_output),
        ("keys --json", &format!("{keys_out}\n{keys_err}")),
    ];
    let mut leaks = Vec::new();
    for (where_, text) in outputs {
        for (what, secret) in secrets.iter().filter(|(_, s)| !s.is_empty()) {
            // Tokens whole (their first segment, the header, is no secret); random values
            // by their first 40 characters, which also catches a truncated copy.
            let probe = if what.starts_with("token") {
                secret
            } else {
                &secret[..secret.len().min(40)]
            };
            if text.contains(probe) {
                leaks.push(format!("{what} in {where_}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets written out:\n{}",
        leaks.join("\n")
    );
}

// === the fuzz targets on stable ===

/// Every seed of every fuzz target through the target's own checks (`fuzz/src/lib.rs`):
/// what libFuzzer runs, minus the mutations. A crash found by fuzzing is added to
/// `fuzz/seeds/<target>/` and so becomes a case here.
#[test]
fn fuzz_seeds_replay_through_the_fuzz_checks() {
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 7] = [
        ("jws_parse", fuzz_checks::jws_parse),
        ("authorize", fuzz_checks::authorize),
        ("jwks_parse", fuzz_checks::jwks_parse),
        ("keystore_load", fuzz_checks::keystore_load),
        ("config_parse", fuzz_checks::config_parse),
        ("pem_parse", fuzz_checks::pem_parse),
        ("jwe_decrypt", fuzz_checks::jwe_decrypt),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut replayed = 0;
    for (target, check) in targets {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(files.len() >= 4, "{target}: only {} seeds", files.len());
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "fuzz check {target} panicked on {}",
                file.display()
            );
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} seeds");
}

/// The seeds exercise what they are there for: the good ones pass all the way.
#[test]
fn fuzz_seeds_reach_the_interesting_paths() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let read = |p: &str| std::fs::read(seeds.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let jws = String::from_utf8(read("jws_parse/good_rs256")).unwrap_or_default();
    let all: tokengate::alg::AlgSet = tokengate::alg::Alg::ALL.into_iter().collect();
    assert!(tokengate::token::jws::parse(&jws, all).is_ok());
    let set = tokengate::keys::jwks::parse_set(&read("jwks_parse/mixed.json"), false)
        .expect("mixed.json");
    assert!(
        set.keys.len() >= 5 && set.skipped.len() >= 8,
        "{} keys, {:?}",
        set.keys.len(),
        set.skipped
    );
    // The JWE seeds decrypt with the target's keys (the decryption path is reached).
    for (seed, key) in [
        ("dir_a128gcm", fuzz_checks::JWE_SECRETS[0]),
        ("dir_a256cbc-hs512", fuzz_checks::JWE_SECRETS[2]),
        ("a256kw_a128cbc-hs256", fuzz_checks::JWE_SECRETS[1]),
    ] {
        let token = String::from_utf8(read(&format!("jwe_decrypt/{seed}"))).unwrap_or_default();
        let jwe = tokengate::jwe::parse(
            &token,
            &tokengate::jwe::KeyAlg::ALL,
            &tokengate::jwe::Enc::ALL,
        )
        .unwrap_or_else(|e| panic!("{seed}: {e:?}"));
        assert!(
            jwe.decrypt(&tokengate::jwe::DecryptionKey::secret(key))
                .is_ok(),
            "{seed}"
        );
    }
    // The authorize target reaches both sides of its oracle.
    for (seed, allowed) in [
        ("good", true),
        ("float_dates", true),
        ("scp_array_aud_array", true),
        ("hs512_no_kid", true),
        ("alg_none", false),
        ("rs256_with_hmac", false),
        ("huge_exp", false),
        ("long_lifetime", false),
    ] {
        let data = read(&format!("authorize/{seed}"));
        assert_eq!(fuzz_checks::authorized(&data), allowed, "authorize/{seed}");
    }
    let cfg = tokengate::config::Config::parse(
        Path::new("/x/c.json"),
        &read("config_parse/remote_only.json"),
    );
    assert!(cfg.is_ok(), "{cfg:?}");
    assert!(tokengate::keys::files::parse_pem(&read("pem_parse/pem-rsa.cert.pem"), "p").is_ok());
    // The keystore seed opens with the target's password and has every mapped alias.
    let file = TempDir::new("hardening-seed-keystore");
    let p12 = file.write("full.p12", read("keystore_load/full.p12"));
    let mut source = tokengate::keys::keystore::KeystoreSource::new(
        p12,
        tokengate::config::PasswordSource::Env("P".into()),
        tokengate::config::PasswordEncoding::Plain,
        fuzz_checks::KEYSTORE_ALIASES
            .iter()
            .map(|a| a.to_string())
            .collect(),
        std::sync::Arc::new(|_: &str| Some(fuzz_checks::KEYSTORE_PASSWORD.to_string())),
    );
    let keys = source.reload().expect("full.p12");
    assert_eq!(keys.map(|k| k.keys.len()), Some(3));
}

// === helpers ===

/// The fixture issuer (every algorithm, HMAC included) and an anonymous `/public` route.
/// A flood of made-up kids at more than 10× `fallback.max_verifications_per_second`
/// (20/s here): the budget-exhausted counter moves, the fallback spends no more signature
/// checks than the budget allows, every known-kid token sent during the flood is allowed
/// and counted by kid, and the process stays alive. A replayed forged token costs no
/// second signature check (its denial is cached).
#[test]
fn a_flood_of_made_up_kids_cannot_spend_more_than_the_fallback_budget() {
    const RATE: f64 = 20.0;
    let dir = TempDir::new("hardening-budget");
    let mut config = gate_config();
    config["fallback"] = json!({"max_verifications_per_second": RATE as u32});
    let mut tg = Tokengate::start(&dir, config);
    tg.wait_ready();
    let fallback_checks = |tg: &Tokengate| {
        tg.metrics().sum(
            "tokengate_key_verifications_total",
            &[("match", "fallback")],
        )
    };
    let claims = |n: usize| {
        let mut c = mint::claims();
        c["jti"] = json!(format!("budget-{n}"));
        c
    };

    // A replayed forged token (no kid: a full scan, bad_signature) is answered from the
    // cache the second time.
    let forged = mint::sign(jsonwebtoken::Algorithm::RS256, "attacker", None, &claims(0));
    assert_eq!(tg.check_token("/orders", &forged).error(), "bad_signature");
    let spent = fallback_checks(&tg);
    assert!(spent >= 1.0);
    assert_eq!(tg.check_token("/orders", &forged).error(), "bad_signature");
    assert_eq!(
        fallback_checks(&tg),
        spent,
        "the replay cost a signature check"
    );

    // The flood: 4 threads × 150 forged tokens with made-up kids, and one thread of 60
    // fresh tokens with a known kid.
    let exhausted_before = tg
        .metrics()
        .sum("tokengate_fallback_budget_exhausted_total", &[]);
    let spent_before = fallback_checks(&tg);
    let kid_ok_before = tg.metrics().sum(
        "tokengate_key_verifications_total",
        &[("key", "rsa-1"), ("match", "kid"), ("result", "ok")],
    );
    let authz = tg.authz;
    let started = Instant::now();
    let (flood, genuine): (Vec<Vec<String>>, Vec<(u16, String)>) = std::thread::scope(|s| {
        let flooders: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..150)
                        .map(|i| {
                            let n = 1000 * (t + 1) + i;
                            let kid = format!("made-up-{n}");
                            let token = mint::sign(
                                jsonwebtoken::Algorithm::RS256,
                                "attacker",
                                Some(&kid),
                                &claims(n),
                            );
                            let auth = format!("Bearer {token}");
                            http::request(authz, "GET", "/orders", &[("authorization", &auth)], b"")
                                .map_or_else(|| "no answer".to_string(), |r| r.error())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let known = s.spawn(move || {
            (0..60)
                .map(|i| {
                    let token = mint::sign(
                        jsonwebtoken::Algorithm::RS256,
                        "rsa-1",
                        Some("rsa-1"),
                        &claims(100_000 + i),
                    );
                    let auth = format!("Bearer {token}");
                    http::request(authz, "GET", "/orders", &[("authorization", &auth)], b"")
                        .map_or((0, "no answer".to_string()), |r| (r.status, r.error()))
                })
                .collect::<Vec<_>>()
        });
        (
            flooders
                .into_iter()
                .map(|f| f.join().expect("flooder"))
                .collect(),
            known.join().expect("known-kid thread"),
        )
    });
    let elapsed = started.elapsed().as_secs_f64();
    let m = tg.metrics();

    assert!(
        genuine.iter().all(|(status, _)| *status == 200),
        "a known-kid token was refused during the flood: {genuine:?}"
    );
    assert_eq!(
        m.sum(
            "tokengate_key_verifications_total",
            &[("key", "rsa-1"), ("match", "kid"), ("result", "ok")]
        ) - kid_ok_before,
        60.0,
        "every known-kid token verified by kid"
    );
    let answers: Vec<&String> = flood.iter().flatten().collect();
    assert_eq!(answers.len(), 600);
    assert!(
        answers
            .iter()
            .all(|e| *e == "unknown_key" || *e == "bad_signature"),
        "{:?}",
        answers
            .iter()
            .find(|e| **e != "unknown_key" && **e != "bad_signature")
    );
    let exhausted = m.sum("tokengate_fallback_budget_exhausted_total", &[]) - exhausted_before;
    assert!(exhausted > 0.0, "the budget never ran out");
    // One second's worth in the bucket at the start, then RATE per second.
    let spent = m.sum(
        "tokengate_key_verifications_total",
        &[("match", "fallback")],
    ) - spent_before;
    let allowed = RATE * (elapsed + 1.0);
    assert!(
        spent <= allowed,
        "{spent} fallback checks in {elapsed:.2} s, budget {allowed:.0}"
    );
    eprintln!(
        "budget flood: {} forged in {elapsed:.2} s, {exhausted} cut short, {spent} fallback checks",
        answers.len()
    );
    assert_alive(&mut tg);
}

fn gate_config() -> Value {
    json!({
        "issuers": [fixture_issuer()],
        "routes": [{"path_prefix": "/public", "allow_anonymous": true}]
    })
}

/// A config with one issuer whose only key source is `server`'s JWKS.
fn remote_config(server: &JwksServer) -> Value {
    json!({
        "issuers": [{
            "name": "remote", "issuer": "https://issuer.example", "audiences": ["orders-api"],
            "algorithms": ["RS256", "ES256"],
            "key_sources": [{"jwks_uri": server.url(), "refresh": "1h"}]
        }]
    })
}

fn remote_claims() -> Value {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut c = mint::claims();
    c["jti"] = json!(format!("hardening-{}", N.fetch_add(1, Ordering::Relaxed)));
    c
}

/// A fresh token signed by fixture key `key` with header `kid`.
fn remote_token(key: &str, kid: &str) -> String {
    let alg = if key.starts_with("ec") {
        Algorithm::ES256
    } else {
        Algorithm::RS256
    };
    mint::sign(alg, key, Some(kid), &remote_claims())
}

/// The bytes of configured public keys an attacker can read, as HMAC secrets: each key's
/// PEM file (with and without its final newline), its DER, its JWK as published and
/// the whole published JWK set. With the key's kid.
fn public_key_encodings() -> Vec<(&'static str, String, Vec<u8>)> {
    let public_set = std::fs::read(fixtures().join("jwks-public.json")).unwrap_or_default();
    let mut out = Vec::new();
    for (kid, pem_file) in [("rsa-1", "rsa-1.pub.pem"), ("ec-p256", "ec-p256.pub.pem")] {
        let pem =
            std::fs::read(fixtures().join(pem_file)).unwrap_or_else(|e| panic!("{pem_file}: {e}"));
        let text = String::from_utf8_lossy(&pem).into_owned();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD
            .decode(body)
            .unwrap_or_else(|e| panic!("{pem_file}: {e}"));
        let jwk = public_jwk(kid, kid);
        out.push((kid, format!("{pem_file} bytes"), pem.clone()));
        out.push((
            kid,
            format!("{pem_file} without its newline"),
            text.trim_end().as_bytes().to_vec(),
        ));
        out.push((kid, format!("{kid} DER"), der));
        out.push((kid, format!("{kid} JWK JSON"), jwk.to_string().into_bytes()));
        out.push((kid, "the published JWK set".to_string(), public_set.clone()));
    }
    out
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// Segment `i` of a compact JWS.
fn segment(token: &str, i: usize) -> String {
    token.split('.').nth(i).unwrap_or_default().to_string()
}

/// Segment `i` of a compact JWS, decoded.
fn segment_json(token: &str, i: usize) -> String {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment(token, i))
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A token over these exact header and claims texts, signed RS256 by fixture key `key`.
fn sign_text(header: &str, claims: &str, key: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &mint::key(key), Algorithm::RS256)
        .expect("sign");
    format!("{input}.{sig}")
}

/// The default claims with member `name` set to the raw JSON text `raw`.
fn claims_with_raw(name: &str, raw: &str) -> String {
    let mut c = mint::claims();
    c[name] = json!("@RAW@");
    c.to_string().replace("\"@RAW@\"", raw)
}

/// `tokengate_token_cache_requests_total{result}`.
fn cache_requests(tg: &Tokengate, result: &str) -> f64 {
    tg.metrics().sum(
        "tokengate_token_cache_requests_total",
        &[("result", result)],
    )
}

/// `tokengate_jwks_fetches_total{result}`.
fn jwks_fetches(tg: &Tokengate, result: &str) -> f64 {
    tg.metrics()
        .sum("tokengate_jwks_fetches_total", &[("result", result)])
}

/// VmRSS of process `pid`, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// Checks every token on authz_http over two kept-alive connections (in parallel); each
/// must be allowed.
fn check_all(tg: &Tokengate, tokens: &[String]) {
    let half = tokens.len().div_ceil(2);
    std::thread::scope(|s| {
        for chunk in tokens.chunks(half.max(1)) {
            let addr = tg.authz;
            s.spawn(move || {
                let mut conn: Option<TcpStream> = None;
                for t in chunk {
                    let status = (0..3)
                        .find_map(|_| {
                            let c = match conn.take() {
                                Some(c) => c,
                                None => connect(addr)?,
                            };
                            let (status, c) = keep_alive_check(c, t)?;
                            conn = Some(c);
                            Some(status)
                        })
                        .expect("no answer for a flood token");
                    assert_eq!(status, 200, "a valid flood token was denied");
                }
            });
        }
    });
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let _ = s.set_nodelay(true);
    Some(s)
}

/// One check on a kept-alive connection: the status, and the connection if still open.
fn keep_alive_check(mut s: TcpStream, token: &str) -> Option<(u16, TcpStream)> {
    let req = format!("GET /orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let (status, _) = read_response(&mut s)?;
    Some((status, s))
}

/// Reads one response (head and `content-length` body): the status and the body.
fn read_response(s: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    Some((status, buf[head_end..head_end + len].to_vec()))
}
