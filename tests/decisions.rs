//! Every deny reason of SPEC §7, and the allow paths of every algorithm family, through
//! the library's `Authorizer` with a fixed clock. Tokens are the jwcrypto fixtures
//! (independent signer) except where a case needs a key or time they do not cover.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokengate::app::App;
use tokengate::authz::RequestView;
use tokengate::clock::FixedClock;
use tokengate::config::Config;
use tokengate::decision::{Decision, DenyReason};
use tokengate::metrics::{Listener, Metrics};

use crate::support::{fixture_issuer, fixtures, mint, token};

/// 2027-01-15: after every fixture's `iat`, before every fixture's `exp` but `EXPIRED`'s.
const NOW: i64 = 1_800_000_000;

fn config(issuers: Value, extra: Value) -> Config {
    let mut cfg = json!({
        "listeners": {"authz_http": null, "authz_grpc": null, "admin": null},
        "issuers": issuers,
        "routes": [
            {"path_prefix": "/public", "allow_anonymous": true},
            {"path_prefix": "/orders", "methods": ["POST", "DELETE"], "scopes_all": ["orders:write"]},
            {"path_prefix": "/admin", "scopes_any": ["admin", "root"]}
        ],
        "cache": {"max_entries": 0}
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    Config::parse(
        Path::new("/virtual/config.json"),
        cfg.to_string().as_bytes(),
    )
    .expect("test config")
}

/// The app of `cfg` on the current runtime, at `clock`'s time.
fn app_at(cfg: Config, clock: Arc<FixedClock>) -> Arc<App> {
    App::new(
        cfg,
        tokio::runtime::Handle::current(),
        clock,
        Arc::new(Metrics::new()),
        Arc::new(|_: &str| None),
    )
}

struct Case {
    name: &'static str,
    headers: Vec<(String, String)>,
    method: &'static str,
    path: &'static str,
    want: Result<(&'static str, &'static str), DenyReason>,
}

fn bearer(t: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {t}"))]
}

fn case(
    name: &'static str,
    t: &str,
    want: Result<(&'static str, &'static str), DenyReason>,
) -> Case {
    Case {
        name,
        headers: bearer(t),
        method: "GET",
        path: "/orders",
        want,
    }
}

fn run_cases(cfg: Config, cases: Vec<Case>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = app_at(cfg, Arc::new(FixedClock::new(NOW)));
        let mut failures = Vec::new();
        for c in cases {
            let view = RequestView {
                method: c.method,
                target: c.path,
                headers: c.headers.as_slice(),
                peer: Default::default(),
            };
            let v = app.authorizer().check(Listener::Cli, &view).await;
            let got = match &v.decision {
                Decision::Allow(_) => Ok((
                    v.key.as_ref().map_or("-", |k| leak(&k.id)),
                    v.matched.map_or("anonymous", |m| m.label()),
                )),
                Decision::Deny(d) => Err(d.reason),
            };
            if got != c.want {
                failures.push(format!("{}: want {:?}, got {:?}", c.name, c.want, got));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    });
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[test]
fn allows_every_algorithm_family_by_kid() {
    let cases = vec![
        case("RS256", &token("GOOD_RS256"), Ok(("rsa-1", "kid"))),
        case("RS384", &token("GOOD_RS384"), Ok(("rsa-2", "kid"))),
        case("RS512", &token("GOOD_RS512"), Ok(("rsa-2", "kid"))),
        case("PS256", &token("GOOD_PS256"), Ok(("rsa-2", "kid"))),
        case("PS384", &token("GOOD_PS384"), Ok(("rsa-2", "kid"))),
        case("PS512", &token("GOOD_PS512"), Ok(("rsa-2", "kid"))),
        case("ES256", &token("GOOD_ES256"), Ok(("ec-p256", "kid"))),
        case("ES384", &token("GOOD_ES384"), Ok(("ec-p384", "kid"))),
        case("EdDSA", &token("GOOD_EDDSA"), Ok(("ed-1", "kid"))),
        case("HS256", &token("GOOD_HS256"), Ok(("hmac-1", "kid"))),
        case("HS384", &token("GOOD_HS384"), Ok(("hmac-1", "kid"))),
        case("HS512", &token("GOOD_HS512"), Ok(("hmac-1", "kid"))),
        case(
            "PEM certificate",
            &token("GOOD_PEM_RS256"),
            Ok(("pem-1", "kid")),
        ),
        case("aud array", &token("AUD_ARRAY"), Ok(("rsa-1", "kid"))),
        case("scp array", &token("SCP_ARRAY"), Ok(("rsa-1", "kid"))),
    ];
    run_cases(config(json!([fixture_issuer()]), json!({})), cases);
}

#[test]
fn allows_through_fallback_and_anonymous_routes() {
    let mut anon = case("anonymous", "", Ok(("-", "anonymous")));
    anon.headers.clear();
    anon.path = "/public/docs";
    let mut anon_with_token = case(
        "anonymous route, valid token",
        &token("GOOD_ES256"),
        Ok(("ec-p256", "kid")),
    );
    anon_with_token.path = "/public/docs";
    let mut write = case("scope ok", &token("GOOD_RS256"), Ok(("rsa-1", "kid")));
    write.method = "POST";
    let cases = vec![
        case("no kid", &token("NO_KID_RS256"), Ok(("rsa-1", "fallback"))),
        case(
            "no kid, EC",
            &token("NO_KID_ES256"),
            Ok(("ec-p256", "fallback")),
        ),
        case(
            "unknown kid",
            &token("UNKNOWN_KID_RS256"),
            Ok(("rsa-1", "fallback")),
        ),
        anon,
        anon_with_token,
        write,
    ];
    run_cases(config(json!([fixture_issuer()]), json!({})), cases);
}

#[test]
fn denies_with_the_right_reason() {
    use DenyReason::*;
    let mut no_token = case("missing_token", "", Err(MissingToken));
    no_token.headers.clear();
    let mut two = case("invalid_request", &token("GOOD_RS256"), Err(InvalidRequest));
    two.headers.extend(bearer(&token("GOOD_ES256")));
    let mut scope = case(
        "insufficient_scope",
        &token("SCOPE_READ_ONLY"),
        Err(InsufficientScope),
    );
    scope.method = "POST";
    let mut scope_any = case(
        "insufficient_scope (any)",
        &token("GOOD_RS256"),
        Err(InsufficientScope),
    );
    scope_any.path = "/admin/users";
    let mut bad_anon = case(
        "anonymous route, invalid token",
        &token("EXPIRED"),
        Err(Expired),
    );
    bad_anon.path = "/public";
    let big = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(300)
    );
    let cert_before = mint::sign(
        Algorithm::RS256,
        "pem-rsa",
        Some("pem-1"),
        &json!({"iss": "https://issuer.example", "aud": "orders-api", "sub": "x",
                "iat": 1_500_000_000, "exp": 4_102_444_800_i64}),
    );
    let cases = vec![
        no_token,
        two,
        case("malformed (shape)", "abc.def", Err(Malformed)),
        case("malformed (crit)", &token("CRIT_UNKNOWN"), Err(Malformed)),
        case("malformed (b64)", &token("B64_FALSE"), Err(Malformed)),
        case("too_large", &big, Err(TooLarge)),
        case("bad_alg (none)", &token("ALG_NONE"), Err(BadAlg)),
        case("bad_alg (NONE)", &token("ALG_NONE_CAPS"), Err(BadAlg)),
        case(
            "bad_alg (HS256 with the RSA key's PEM)",
            &token("KEY_CONFUSION_HS256_PEM"),
            Err(BadAlg),
        ),
        case("bad_issuer", &token("WRONG_ISSUER"), Err(BadIssuer)),
        case("bad_issuer (no iss)", &token("NO_ISS"), Err(BadIssuer)),
        case(
            "bad_signature (known kid)",
            &token("FOREIGN_KNOWN_KID"),
            Err(BadSignature),
        ),
        case(
            "bad_signature (no kid)",
            &token("FOREIGN_NO_KID"),
            Err(BadSignature),
        ),
        case(
            "bad_signature (unknown kid)",
            &token("FOREIGN_UNKNOWN_KID"),
            Err(BadSignature),
        ),
        case(
            "bad_signature (jwk header)",
            &token("JWK_EMBEDDED"),
            Err(BadSignature),
        ),
        case(
            "bad_signature (jku header)",
            &token("JKU_ATTACKER"),
            Err(BadSignature),
        ),
        case(
            "bad_signature (x5c header)",
            &token("X5C_EMBEDDED"),
            Err(BadSignature),
        ),
        case("expired", &token("EXPIRED"), Err(Expired)),
        case("expired (no exp)", &token("MISSING_EXP"), Err(Expired)),
        case(
            "not_yet_valid (nbf)",
            &token("NOT_YET_VALID"),
            Err(NotYetValid),
        ),
        case(
            "not_yet_valid (iat)",
            &token("IAT_IN_FUTURE"),
            Err(NotYetValid),
        ),
        case("key_out_of_validity", &cert_before, Err(KeyOutOfValidity)),
        case("bad_audience", &token("WRONG_AUDIENCE"), Err(BadAudience)),
        case(
            "bad_audience (array)",
            &token("AUD_ARRAY_WRONG"),
            Err(BadAudience),
        ),
        case(
            "bad_audience (none)",
            &token("GOOD_RS256_NO_AUD"),
            Err(BadAudience),
        ),
        case("bad_type", &token("WRONG_TYP"), Err(BadType)),
        case("bad_type (none)", &token("NO_TYP"), Err(BadType)),
        scope,
        scope_any,
        bad_anon,
    ];
    run_cases(config(json!([fixture_issuer()]), json!({})), cases);
}

#[test]
fn denies_with_policy_specific_reasons() {
    use DenyReason::*;
    // Only RS256 allowed: a valid ES256 token is bad_alg before any key is touched.
    let mut rs_only = fixture_issuer();
    rs_only["algorithms"] = json!(["RS256"]);
    run_cases(
        config(json!([rs_only]), json!({})),
        vec![case(
            "bad_alg (not allowed)",
            &token("GOOD_ES256"),
            Err(BadAlg),
        )],
    );

    // max_lifetime: the fixtures live until 2100.
    let mut short = fixture_issuer();
    short["max_lifetime"] = json!("24h");
    run_cases(
        config(json!([short]), json!({})),
        vec![case(
            "lifetime_exceeded",
            &token("GOOD_RS256"),
            Err(LifetimeExceeded),
        )],
    );

    // Revocation by kid and by thumbprint: never tried, even while published.
    run_cases(
        config(
            json!([fixture_issuer()]),
            json!({"revoked": {"kids": ["rsa-1"]}}),
        ),
        vec![
            case("revoked_key (kid)", &token("GOOD_RS256"), Err(RevokedKey)),
            case(
                "revoked key skipped in fallback",
                &token("NO_KID_RS256"),
                Err(BadSignature),
            ),
            case(
                "other keys unaffected",
                &token("GOOD_ES256"),
                Ok(("ec-p256", "kid")),
            ),
        ],
    );

    // No compatible key at all: an EdDSA token against an RSA-only issuer.
    let pem_only = json!({
        "name": "pem", "issuer": "https://issuer.example", "audiences": ["orders-api"],
        "key_sources": [{"pem_file": fixtures().join("pem-rsa.pub.pem").to_string_lossy(), "kid": "pem-1"}]
    });
    run_cases(
        config(json!([pem_only]), json!({})),
        vec![case("unknown_key", &token("NO_KID_ES256"), Err(UnknownKey))],
    );

    // An issuer whose JWKS never loaded: the token is not judged.
    let down = json!({
        "name": "down", "issuer": "https://issuer.example",
        "key_sources": [{"jwks_uri": "http://127.0.0.1:9/jwks.json"}]
    });
    run_cases(
        config(json!([down]), json!({})),
        vec![case(
            "keys_unavailable",
            &token("GOOD_RS256"),
            Err(KeysUnavailable),
        )],
    );

    // A route's rule that a valid token does not satisfy (SPEC §12).
    run_cases(
        config(
            json!([fixture_issuer()]),
            json!({"routes": [
                {"path_prefix": "/orders", "rules": ["claims.sub == 'bob'"]},
                {"path_prefix": "/", "rules": ["claims.sub == 'alice' && token.key == 'rsa-1'"]}
            ]}),
        ),
        vec![
            case("rule_failed", &token("GOOD_RS256"), Err(RuleFailed)),
            Case {
                name: "a rule that holds",
                headers: bearer(&token("GOOD_RS256")),
                method: "GET",
                path: "/other",
                want: Ok(("rsa-1", "kid")),
            },
        ],
    );
}

/// Sender-constrained tokens (SPEC §11) at the fixed clock: a DPoP proof by jwcrypto
/// and each of the three reasons, through the library.
#[test]
fn sender_constrained_tokens() {
    use DenyReason::*;
    let mut minter = crate::support::dpop::Minter::start();
    let key = minter.key("ES256");
    let bound = |cnf: Value| {
        let mut c = mint::claims();
        c["iat"] = json!(NOW - 60);
        c["exp"] = json!(NOW + 3600);
        c["cnf"] = cnf;
        mint::sign(Algorithm::RS256, "rsa-1", Some("rsa-1"), &c)
    };
    let token = bound(json!({"jkt": key.jkt}));
    let mut proof_for = |token: &str| {
        let mut c = crate::support::dpop::claims("GET", "http://api.example/orders", token);
        c["iat"] = json!(NOW);
        minter.proof(&key, &c, json!({}))
    };
    let dpop = |t: &str, proof: Option<String>| {
        let mut h = vec![
            ("host".to_string(), "api.example".to_string()),
            ("authorization".to_string(), format!("DPoP {t}")),
        ];
        h.extend(proof.map(|p| ("dpop".to_string(), p)));
        Case {
            name: "dpop",
            headers: h,
            method: "GET",
            path: "/orders",
            want: Ok(("rsa-1", "kid")),
        }
    };
    let good = dpop(&token, Some(proof_for(&token)));
    let mut no_proof = dpop(&token, None);
    no_proof.want = Err(InvalidDpopProof);
    let mut as_bearer = case("cnf.jkt as Bearer", &token, Err(BindingMismatch));
    as_bearer
        .headers
        .push(("host".into(), "api.example".into()));
    let cert_bound = bound(json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}));
    let no_cert = case(
        "x5t#S256 without a certificate",
        &cert_bound,
        Err(BindingMismatch),
    );
    run_cases(
        config(json!([fixture_issuer()]), json!({})),
        vec![good, no_proof, as_bearer, no_cert],
    );

    let mut issuer = fixture_issuer();
    issuer["dpop_nonce"] = json!(true);
    let mut no_nonce = dpop(&token, Some(proof_for(&token)));
    no_nonce.want = Err(UseDpopNonce);
    run_cases(config(json!([issuer]), json!({})), vec![no_nonce]);
}

/// Encrypted access tokens and shared JWT sessions (SPEC §10) at the fixed clock: JWEs
/// made by jwcrypto, keys from a `jwks_file` of oct JWKs.
#[test]
fn encrypted_tokens_and_sessions() {
    use DenyReason::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let dir = crate::support::TempDir::new("decisions-jwe");
    let mut minter = crate::support::dpop::Minter::start();
    let tok_key = json!({"kty": "oct", "kid": "dec-1", "k": URL_SAFE_NO_PAD.encode([3u8; 32])});
    let ses_key = json!({"kty": "oct", "kid": "ses-1", "k": URL_SAFE_NO_PAD.encode([5u8; 64])});
    let dec = dir.write("dec.json", json!({"keys": [tok_key]}).to_string());
    let ses = dir.write("ses.json", json!({"keys": [ses_key]}).to_string());
    let inner = token("GOOD_RS256");
    let nested = minter.seal(
        &tok_key,
        json!({"alg": "dir", "enc": "A256GCM", "kid": "dec-1", "cty": "JWT"}),
        &inner,
    );
    let mut altered: Vec<u8> = nested.clone().into_bytes();
    let at = altered.len() - 3;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ASCII");
    let mut session = |exp: i64| {
        let value = minter.seal(
            &ses_key,
            json!({"alg": "dir", "enc": "A256CBC-HS512"}),
            &json!({"sub": "Sam Carter", "iat": NOW - 10, "exp": exp}).to_string(),
        );
        Case {
            name: "session",
            headers: vec![("cookie".into(), format!("IG={value}"))],
            method: "GET",
            path: "/",
            want: Ok(("ses-1", "fallback")),
        }
    };
    let mut expired = session(NOW - 60);
    expired.want = Err(BadSession);
    let cases = vec![
        case("nested", &nested, Ok(("rsa-1", "kid"))),
        case("nested, altered tag", &altered, Err(BadDecryption)),
        session(NOW + 60),
        expired,
    ];
    let sections = json!({
        "decryption": {"key_sources": [{"jwks_file": dec.to_string_lossy()}]},
        "sessions": [{"name": "ig", "cookie": "IG",
                      "key_sources": [{"jwks_file": ses.to_string_lossy()}]}]
    });
    run_cases(config(json!([fixture_issuer()]), sections.clone()), cases);

    // A revoked decryption key (by kid) opens nothing, by kid or by fallback.
    let mut revoked = sections;
    revoked["revoked"] = json!({"kids": ["dec-1", "ses-1"]});
    let mut session = session(NOW + 60);
    session.want = Err(BadSession);
    run_cases(
        config(json!([fixture_issuer()]), revoked),
        vec![
            case("nested, key revoked", &nested, Err(BadDecryption)),
            session,
        ],
    );
}

#[test]
fn every_deny_reason_is_covered_above() {
    // Keeps this file honest: a new reason must get a case.
    let covered = [
        "missing_token",
        "invalid_request",
        "malformed",
        "too_large",
        "bad_alg",
        "bad_issuer",
        "unknown_key",
        "revoked_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "lifetime_exceeded",
        "key_out_of_validity",
        "bad_audience",
        "bad_type",
        "insufficient_scope",
        "rule_failed",
        "keys_unavailable",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "binding_mismatch",
        "bad_decryption",
        "bad_session",
    ];
    for r in DenyReason::ALL {
        assert!(covered.contains(&r.label()), "no case for {}", r.label());
    }
    let src = include_str!("decisions.rs");
    for r in DenyReason::ALL {
        let variant = format!("{r:?}");
        assert!(
            src.contains(&format!("Err({variant})")),
            "no case asserts Err({variant})"
        );
    }
}

/// The cache remembers denials that rest on the token's bytes and the key set
/// (`malformed`, `bad_signature` of a known, absent or unknown kid), so that a replay
/// costs one hash, not a signature check (SPEC §9: a replayed forged token must not buy a
/// second fallback scan). After an unknown-kid refetch step the denial is remembered at
/// most `miss_refetch_interval` (a replay after it may fetch again); this issuer has no
/// remote source, so the cache's own bound applies. That a change of the keys forgets
/// them is `cache.rs`'s `a_denial_of_the_key_set_is_forgotten_when_the_ring_moves`.
#[test]
fn caches_denials_of_the_token_and_key_set_only() {
    let mut issuer = fixture_issuer();
    issuer["certificate_validity"] = json!("off");
    let cfg = config(json!([issuer]), json!({"cache": {"max_entries": 1000}}));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = app_at(cfg, Arc::new(FixedClock::new(NOW)));
        let judge = |t: String| {
            let app = app.clone();
            async move {
                let headers = bearer(&t);
                let view = RequestView {
                    method: "GET",
                    target: "/x",
                    headers: headers.as_slice(),
                    peer: Default::default(),
                };
                let v = app.authorizer().check(Listener::Cli, &view).await;
                let reason = match &v.decision {
                    Decision::Deny(d) => Some(d.reason),
                    Decision::Allow(_) => None,
                };
                (reason, v.cached)
            }
        };
        for (name, t, reason, replay_cached) in [
            (
                "known kid, bad signature",
                token("FOREIGN_KNOWN_KID"),
                DenyReason::BadSignature,
                true,
            ),
            (
                "no kid, no key verifies",
                token("FOREIGN_NO_KID"),
                DenyReason::BadSignature,
                true,
            ),
            (
                "not a JWS",
                "e30.e30.c2ln".to_string(),
                DenyReason::Malformed,
                true,
            ),
            (
                "unknown kid (after the refetch step)",
                token("FOREIGN_UNKNOWN_KID"),
                DenyReason::BadSignature,
                true,
            ),
        ] {
            assert_eq!(judge(t.clone()).await, (Some(reason), false), "{name}");
            assert_eq!(
                judge(t).await,
                (Some(reason), replay_cached),
                "{name}: replayed"
            );
        }
    });
}

/// With `certificate_validity: "now"`, a cached allow ends with the certificate that
/// verified it, however much longer the token and `cache.max_ttl` would keep it.
#[test]
fn a_cached_allow_ends_with_its_certificate_when_validity_is_checked_now() {
    // pem-1's certificate ends 2099-12-31T23:59:59Z.
    let not_after: i64 = 4_102_444_799;
    let mut issuer = fixture_issuer();
    issuer["certificate_validity"] = json!("now");
    let cfg = config(
        json!([issuer]),
        json!({"cache": {"max_entries": 1000, "max_ttl": "1h"}}),
    );
    let mut claims = mint::claims();
    claims["iat"] = json!(not_after - 600);
    claims["exp"] = json!(not_after + 86_400);
    let t = mint::sign(Algorithm::RS256, "pem-rsa", Some("pem-1"), &claims);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let clock = Arc::new(FixedClock::new(not_after - 60));
        let app = app_at(cfg, clock.clone());
        let headers = bearer(&t);
        let view = RequestView {
            method: "GET",
            target: "/x",
            headers: headers.as_slice(),
            peer: Default::default(),
        };
        let first = app.authorizer().check(Listener::Cli, &view).await;
        assert!(first.decision.is_allowed(), "{:?}", first.decision);
        let again = app.authorizer().check(Listener::Cli, &view).await;
        assert!(again.decision.is_allowed() && again.cached);
        clock.set(not_after + 5);
        let after = app.authorizer().check(Listener::Cli, &view).await;
        assert!(!after.cached, "the cached allow outlived its certificate");
        let reason = match &after.decision {
            Decision::Deny(d) => Some(d.reason),
            Decision::Allow(_) => None,
        };
        assert_eq!(reason, Some(DenyReason::KeyOutOfValidity));
    });
}
