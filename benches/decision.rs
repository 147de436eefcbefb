//! The decision path without I/O, next to a raw verify of the same signature with the
//! same crypto library (aws-lc-rs, key parsed once) in the same run.
//!
//! For each of RS256, ES256, EdDSA and HS256, the criterion group `<alg>` measures:
//!
//! - `raw_verify`: aws-lc-rs alone checking the signature of the fixture token `GOOD_<alg>`;
//! - `decision_known_kid`: `Authorizer::check` of that token, whose `kid` names its key
//!   (cache off), as the `authz_http` listener asks it (the future polled in place, as
//!   inside the listener's task; decision metrics off, as no listener is configured);
//! - `decision_fallback_4_keys`: a valid token without `kid` against a key source of four
//!   keys of the family, the signing key last in the file, so the fallback tries it last
//!   (worst case: three failed verifies, then the good one; cache off);
//! - `decision_cache_hit`: `GOOD_<alg>` again, answered from the verified-token cache;
//! - `deny_expired`: an expired token with a known kid (its signature is checked first);
//! - `deny_bad_signature`: `GOOD_<alg>` with one bit of its signature flipped.
//!
//! `denials/malformed` is a token whose header does not parse (no crypto, no ratio).
//! Before it is timed, each benchmark asserts once that the decision is the one it means
//! to measure (allow and how the key was found, or the deny reason).
//!
//! The known-kid tokens are the jwcrypto-signed fixtures; the no-kid and expired tokens
//! are signed here with the fixture private keys (same claims), and the three other keys
//! of each fallback set are generated at start-up.
//!
//! At the end the bench prints, per algorithm, each criterion median of this run and the
//! ratio `raw_verify median / median`: 1.0 would mean tokengate adds nothing to the
//! signature check. The fallback's ceiling is 0.25 (four verifies); a cache hit skips
//! the signature check and lands above 1.
//!
//! Run: `cargo bench --bench decision` (criterion's options after `--`).

mod support;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ParsedPublicKey, RsaKeyPair,
    RsaPublicKeyComponents, VerificationAlgorithm,
};
use aws_lc_rs::{hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::Criterion;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use support::{app_of, criterion, decide, fixtures, median, runtime, signing_input_and_signature};
use tokengate::app::App;
use tokengate::authz::{RequestView, Verdict};
use tokengate::decision::{AllowReason, Decision, DenyReason};
use tokengate::keys::MatchKind;
use tokengate::metrics::Listener;

/// The fixed clock: after the fixtures' `iat`, before their `exp` (2100).
const NOW: i64 = 1_800_000_000;
/// `exp` of the valid tokens signed here (the fixtures' 2100-01-01).
const VALID_EXP: i64 = 4_102_444_800;
/// `exp` of the expired tokens (the fixture `EXPIRED`'s).
const EXPIRED_EXP: i64 = 1_700_003_600;

/// A key family: how its raw verifier is built and how fallback keys are generated.
#[derive(Debug, Clone, Copy)]
enum Family {
    Rsa,
    Ec,
    Ed,
    Hmac,
}

/// One algorithm and its fixtures.
struct Case {
    /// The JWS `alg`, also the criterion group.
    alg: &'static str,
    signer: Algorithm,
    family: Family,
    /// The fixture key: its kid in `jwks.json`, its file under `private/`.
    key: &'static str,
    /// The fixture token signed by `key`, with `kid` = `key`.
    good: &'static str,
}

const CASES: [Case; 4] = [
    Case {
        alg: "RS256",
        signer: Algorithm::RS256,
        family: Family::Rsa,
        key: "rsa-1",
        good: "GOOD_RS256",
    },
    Case {
        alg: "ES256",
        signer: Algorithm::ES256,
        family: Family::Ec,
        key: "ec-p256",
        good: "GOOD_ES256",
    },
    Case {
        alg: "EdDSA",
        signer: Algorithm::EdDSA,
        family: Family::Ed,
        key: "ed-1",
        good: "GOOD_EDDSA",
    },
    Case {
        alg: "HS256",
        signer: Algorithm::HS256,
        family: Family::Hmac,
        key: "hmac-1",
        good: "GOOD_HS256",
    },
];

/// The benchmarks of each algorithm group, in the order they run and are reported.
const ROWS: [&str; 6] = [
    "raw_verify",
    "decision_known_kid",
    "decision_fallback_4_keys",
    "decision_cache_hit",
    "deny_expired",
    "deny_bad_signature",
];

/// What a benchmark's decision must be.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Allow {
        key: &'static str,
        matched: MatchKind,
        cached: bool,
    },
    Deny(DenyReason),
}

/// The raw verifier of one algorithm, key parsed once.
enum RawKey {
    Public(ParsedPublicKey),
    Hmac(Box<hmac::Key>),
}

/// A request carrying `Authorization: Bearer <token>`.
struct Request(Vec<(String, String)>);

impl Request {
    fn bearer(token: &str) -> Self {
        Self(vec![(
            "authorization".to_string(),
            format!("Bearer {token}"),
        )])
    }

    fn view(&self) -> RequestView<'_, [(String, String)]> {
        RequestView {
            method: "GET",
            target: "/orders",
            headers: self.0.as_slice(),
            peer: Default::default(),
        }
    }
}

fn main() {
    let started = SystemTime::now();
    let (mut c, dir) = criterion();
    for case in &CASES {
        bench_alg(&mut c, case);
    }
    bench_malformed(&mut c);
    c.final_summary();
    print_ratios(&dir, started);
}

fn bench_alg(c: &mut Criterion, case: &Case) {
    let rt = runtime();
    let jwks = fixtures().join("jwks.json");
    let uncached = app(&jwks, 0, &rt);
    let cached = app(&jwks, 1000, &rt);
    let fallback = fallback_app(case, &rt);

    let good = token(case.good);
    let known = Request::bearer(&good);
    let no_kid = Request::bearer(&mint(case, None, VALID_EXP));
    let expired = Request::bearer(&mint(case, Some(case.key), EXPIRED_EXP));
    let bad_signature = Request::bearer(&flip_signature_bit(&good));

    let allow = |matched, cached| Expect::Allow {
        key: case.key,
        matched,
        cached,
    };
    let decisions: [(&str, &App, &Request, Expect); 5] = [
        (
            "decision_known_kid",
            &uncached,
            &known,
            allow(MatchKind::Kid, false),
        ),
        (
            "decision_fallback_4_keys",
            &fallback,
            &no_kid,
            allow(MatchKind::Fallback, false),
        ),
        (
            "decision_cache_hit",
            &cached,
            &known,
            allow(MatchKind::Kid, true),
        ),
        (
            "deny_expired",
            &uncached,
            &expired,
            Expect::Deny(DenyReason::Expired),
        ),
        (
            "deny_bad_signature",
            &uncached,
            &bad_signature,
            Expect::Deny(DenyReason::BadSignature),
        ),
    ];
    // Fills the cache for `decision_cache_hit`.
    let _ = check(&rt, &cached, &known);
    for (name, app, request, want) in &decisions {
        expect(
            &format!("{}/{name}", case.alg),
            &check(&rt, app, request),
            *want,
        );
    }

    let (input, sig) = signing_input_and_signature(&good);
    let raw = raw_key(case);
    let mut g = c.benchmark_group(case.alg);
    match &raw {
        RawKey::Public(key) => {
            key.verify_sig(input.as_bytes(), &sig).unwrap_or_else(|e| {
                panic!(
                    "{}/raw_verify: {} does not verify: {e}",
                    case.alg, case.good
                )
            });
            g.bench_function("raw_verify", |b| {
                b.iter(|| key.verify_sig(black_box(input.as_bytes()), black_box(&sig)))
            });
        }
        RawKey::Hmac(key) => {
            hmac::verify(key, input.as_bytes(), &sig).unwrap_or_else(|e| {
                panic!(
                    "{}/raw_verify: {} does not verify: {e}",
                    case.alg, case.good
                )
            });
            g.bench_function("raw_verify", |b| {
                b.iter(|| hmac::verify(key, black_box(input.as_bytes()), black_box(&sig)))
            });
        }
    }
    for (name, app, request, _) in &decisions {
        let view = request.view();
        g.bench_function(*name, |b| b.iter(|| decide(&rt, app, black_box(&view))));
    }
    g.finish();
}

fn bench_malformed(c: &mut Criterion) {
    let rt = runtime();
    let app = app(&fixtures().join("jwks.json"), 0, &rt);
    let request = Request::bearer("abc.def.ghi");
    expect(
        "denials/malformed",
        &check(&rt, &app, &request),
        Expect::Deny(DenyReason::Malformed),
    );
    let view = request.view();
    let mut g = c.benchmark_group("denials");
    g.bench_function("malformed", |b| {
        b.iter(|| decide(&rt, &app, black_box(&view)))
    });
    g.finish();
}

// ---------------------------------------------------------------- the decision path

/// An app with one issuer whose keys are the JWKS file `jwks`, loaded before it returns.
fn app(jwks: &Path, cache_entries: u64, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let cfg = json!({
        "listeners": {"authz_http": null, "authz_grpc": null, "admin": null},
        "issuers": [{
            "name": "main", "issuer": "https://issuer.example", "audiences": ["orders-api"],
            "algorithms": ["RS256", "ES256", "EdDSA", "HS256"],
            "key_sources": [{"jwks_file": jwks}]
        }],
        "cache": {"max_entries": cache_entries},
        // The fallback budget defends a server from floods; this bench measures the
        // scan itself, thousands of times a second.
        "fallback": {"max_verifications_per_second": 4_000_000_000_u32}
    });
    app_of(&cfg, NOW, rt)
}

/// An uncached app whose only key source holds three generated keys of `case`'s family,
/// then the fixture key. File keys are not marked active, so the ring keeps file order and
/// the fallback (at most `fallback.max_keys`, default 16) tries the fixture key last.
fn fallback_app(case: &Case, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let mut keys: Vec<Value> = (1..=3)
        .map(|i| generated_jwk(case.family, &format!("other-{i}")))
        .collect();
    keys.push(fixture_jwk(case.key));
    let path = std::env::temp_dir().join(format!(
        "tokengate-bench-fallback-{}-{}.json",
        case.alg,
        std::process::id()
    ));
    std::fs::write(&path, json!({ "keys": keys }).to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let app = app(&path, 0, rt);
    // Loaded by App::new; no reload loop runs in the bench.
    let _ = std::fs::remove_file(&path);
    app
}

fn check(rt: &tokio::runtime::Runtime, app: &App, request: &Request) -> Verdict {
    rt.block_on(app.authorizer().check(Listener::AuthzHttp, &request.view()))
}

/// Panics unless `verdict` is `want`.
fn expect(bench: &str, verdict: &Verdict, want: Expect) {
    let ok = match (&verdict.decision, want) {
        (
            Decision::Allow(a),
            Expect::Allow {
                key,
                matched,
                cached,
            },
        ) => {
            a.reason == AllowReason::Ok
                && verdict.key.as_ref().is_some_and(|k| &*k.id == key)
                && verdict.matched == Some(matched)
                && verdict.cached == cached
        }
        (Decision::Deny(d), Expect::Deny(reason)) => d.reason == reason,
        _ => false,
    };
    assert!(
        ok,
        "{bench}: expected {want:?}, got {:?} (key {:?}, matched {:?}, cached {})",
        verdict.decision,
        verdict.key.as_ref().map(|k| &*k.id),
        verdict.matched,
        verdict.cached
    );
}

// ---------------------------------------------------------------- keys and tokens

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(name: &str) -> Value {
    serde_json::from_slice(&read_fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn token(name: &str) -> String {
    read_json("tokens.json")[name]
        .as_str()
        .unwrap_or_else(|| panic!("tokens.json has no token {name}"))
        .to_string()
}

/// The public JWK `kid` of `jwks.json`.
fn fixture_jwk(kid: &str) -> Value {
    read_json("jwks.json")["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .cloned()
        .unwrap_or_else(|| panic!("jwks.json has no key {kid}"))
}

/// The DER SubjectPublicKeyInfo of `<name>.pub.pem`.
fn spki(name: &str) -> Vec<u8> {
    let pem = read_fixture(&format!("{name}.pub.pem"));
    x509_parser::pem::parse_x509_pem(&pem)
        .map(|(_, p)| p.contents)
        .unwrap_or_else(|e| panic!("{name}.pub.pem: {e}"))
}

fn hmac_secret(name: &str) -> Vec<u8> {
    let text = read_fixture(&format!("private/{name}.key"));
    URL_SAFE_NO_PAD
        .decode(text.trim_ascii())
        .unwrap_or_else(|e| panic!("private/{name}.key: {e}"))
}

fn raw_key(case: &Case) -> RawKey {
    let public = |alg: &'static dyn VerificationAlgorithm| {
        RawKey::Public(
            ParsedPublicKey::new(alg, spki(case.key))
                .unwrap_or_else(|e| panic!("{}.pub.pem: {e}", case.key)),
        )
    };
    match case.family {
        Family::Rsa => public(&signature::RSA_PKCS1_2048_8192_SHA256),
        Family::Ec => public(&signature::ECDSA_P256_SHA256_FIXED),
        Family::Ed => public(&signature::ED25519),
        Family::Hmac => RawKey::Hmac(Box::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            &hmac_secret(case.key),
        ))),
    }
}

/// A fresh public JWK of `family`, never used to sign: the fallback's other keys.
fn generated_jwk(family: Family, kid: &str) -> Value {
    let fail = |e| -> ! { panic!("generating {family:?} key {kid}: {e}") };
    match family {
        Family::Rsa => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap_or_else(|e| fail(e));
            let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            json!({"kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e)})
        }
        Family::Ec => {
            let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .unwrap_or_else(|e| fail(e));
            // Uncompressed point: 0x04 || x || y.
            let point = pair.public_key().as_ref();
            assert_eq!(point.len(), 65, "P-256 public point of {kid}");
            json!({"kty": "EC", "kid": kid, "crv": "P-256",
                   "x": b64(&point[1..33]), "y": b64(&point[33..])})
        }
        Family::Ed => {
            let pair = Ed25519KeyPair::generate().unwrap_or_else(|e| fail(e));
            let x = b64(pair.public_key().as_ref());
            json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": x})
        }
        Family::Hmac => {
            let mut k = [0u8; 64];
            rand::fill(&mut k).unwrap_or_else(|e| fail(e));
            json!({"kty": "oct", "kid": kid, "k": b64(&k)})
        }
    }
}

/// A token with the fixtures' header and claims (`kid` optional, `exp` given), signed by
/// `case`'s fixture private key.
fn mint(case: &Case, kid: Option<&str>, exp: i64) -> String {
    let mut header = json!({"alg": case.alg, "typ": "at+jwt"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": "https://issuer.example", "aud": "orders-api", "sub": "alice",
        "scope": "orders:read orders:write", "iat": 1_700_000_000, "exp": exp,
        "jti": "bench",
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &encoding_key(case), case.signer)
        .unwrap_or_else(|e| panic!("signing with {}: {e}", case.key));
    format!("{input}.{sig}")
}

fn encoding_key(case: &Case) -> EncodingKey {
    let pem = || read_fixture(&format!("private/{}.key.pem", case.key));
    match case.family {
        Family::Rsa => EncodingKey::from_rsa_pem(&pem()),
        Family::Ec => EncodingKey::from_ec_pem(&pem()),
        Family::Ed => EncodingKey::from_ed_pem(&pem()),
        Family::Hmac => Ok(EncodingKey::from_secret(&hmac_secret(case.key))),
    }
    .unwrap_or_else(|e| panic!("private/{}.key.pem: {e}", case.key))
}

/// `token` with the low bit of its signature's second-to-last byte flipped: still in range
/// for every algorithm here (RSA below the modulus, ECDSA `s` and Ed25519 `S` below the
/// group order), so the verifier does the full work before it refuses.
fn flip_signature_bit(token: &str) -> String {
    let (input, mut sig) = signing_input_and_signature(token);
    let i = sig
        .len()
        .checked_sub(2)
        .unwrap_or_else(|| panic!("signature too short: {token}"));
    sig[i] ^= 1;
    format!("{input}.{}", b64(&sig))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------- the ratio table

fn print_ratios(dir: &Path, since: SystemTime) {
    let mut rows: Vec<(&str, &str, Option<f64>, Option<f64>)> = Vec::new();
    for case in &CASES {
        let raw = median(dir, case.alg, "raw_verify", since);
        for bench in ROWS {
            let m = median(dir, case.alg, bench, since);
            let ratio = match (bench, raw, m) {
                ("raw_verify", ..) => None,
                (_, Some(raw), Some(m)) if m > 0.0 => Some(raw / m),
                _ => None,
            };
            rows.push((case.alg, bench, m, ratio));
        }
    }
    rows.push((
        "denials",
        "malformed",
        median(dir, "denials", "malformed", since),
        None,
    ));
    if rows.iter().all(|r| r.2.is_none()) {
        println!(
            "\nratios: criterion wrote no estimate under {} in this run (--test, --list, \
             --baseline or a filter), nothing to report",
            dir.display()
        );
        return;
    }
    println!(
        "\nraw_verify median / median, from the estimates criterion wrote in this run under {}\n\
         (1.00: nothing added to the signature check; fallback over 4 keys: at most 0.25; \
         cache hit: no signature check):\n",
        dir.display()
    );
    println!(
        "{:<8} {:<26} {:>12} {:>9}",
        "group", "benchmark", "median", "raw/this"
    );
    for (group, bench, m, ratio) in rows {
        let median = m.map_or_else(|| "no estimate".to_string(), format_ns);
        let ratio = match (bench, ratio) {
            ("raw_verify" | "malformed", _) => String::new(),
            (_, Some(r)) => format!("{r:.2}"),
            (_, None) => "n/a".to_string(),
        };
        let line = format!("{group:<8} {bench:<26} {median:>12} {ratio:>9}");
        println!("{}", line.trim_end());
    }
}

fn format_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}
