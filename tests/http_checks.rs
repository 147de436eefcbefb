//! `authz_http` of a running `tokengate serve` (the built binary on loopback): statuses,
//! RFC 6750 challenges, forward headers and the headers-to-remove list, forward-auth
//! method/URI overrides, and the admin endpoints.

use serde_json::{Value, json};

use crate::support::{TempDir, Tokengate, fixture_issuer, http, token};

fn config() -> serde_json::Value {
    json!({
        "issuers": [fixture_issuer()],
        "routes": [
            {"path_prefix": "/public", "allow_anonymous": true},
            {"path_prefix": "/orders", "methods": ["POST"], "scopes_all": ["orders:write"]}
        ],
        "forward": {"claim_headers": {"x-auth-subject": "sub", "x-auth-scopes": "scope"},
                    "claims_header": "x-auth-claims"}
    })
}

#[test]
fn answers_with_rfc6750_statuses_and_challenges() {
    let dir = TempDir::new("http-checks");
    let tg = Tokengate::start(&dir, config());
    tg.wait_ready();

    let r = tg.check("GET", "/orders", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"tokengate\"")
    );

    let r = tg.check_token("/orders", &token("EXPIRED"));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            "Bearer realm=\"tokengate\", error=\"invalid_token\", error_description=\"the token has expired\""
        )
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    assert_eq!(body["error"], "expired");
    // A denial is JSON and never cached by a proxy in between.
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("retry-after"), None);

    let auth = format!("Bearer {}", token("SCOPE_READ_ONLY"));
    let r = tg.check("POST", "/orders", &[("authorization", &auth)]);
    assert_eq!(r.status, 403);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.contains("error=\"insufficient_scope\"")
                && v.ends_with("scope=\"orders:write\"")),
        "{:?}",
        r.header("www-authenticate")
    );

    let a = format!("Bearer {}", token("GOOD_RS256"));
    let r = tg.check(
        "GET",
        "/orders",
        &[("authorization", &a), ("authorization", &a)],
    );
    assert_eq!(r.status, 400);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.contains("error=\"invalid_request\""))
    );

    // The scheme is case-insensitive (RFC 9110 §11.1).
    let lower = format!("bearer {}", token("GOOD_RS256"));
    assert_eq!(
        tg.check("GET", "/orders", &[("authorization", &lower)])
            .status,
        200
    );
}

#[test]
fn allows_with_forward_headers_and_headers_to_remove() {
    let dir = TempDir::new("http-allow");
    let tg = Tokengate::start(&dir, config());
    tg.wait_ready();
    let r = tg.check_token("/orders/42", &token("GOOD_ES256"));
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.header("x-auth-subject"), Some("alice"));
    assert_eq!(r.header("x-auth-scopes"), Some("orders:read orders:write"));
    let claims_b64 = r.header("x-auth-claims").unwrap_or_default();
    let payload = token("GOOD_ES256")
        .split('.')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        claims_b64, payload,
        "claims header carries the verified payload"
    );
    // Every claim forward header is set (overwriting client copies): what is left to
    // remove is the shadow-mode header, which no allow sets in enforce mode.
    assert_eq!(
        r.header("x-envoy-auth-headers-to-remove"),
        Some("x-tokengate-shadow-deny")
    );

    // Anonymous route: allowed without a token, and still told to strip spoofed headers.
    let r = tg.check("GET", "/public/x", &[("x-auth-subject", "mallory")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-auth-subject"), None);
    assert!(
        r.header("x-envoy-auth-headers-to-remove")
            .is_some_and(|v| v.contains("x-auth-subject"))
    );
}

#[test]
fn forward_auth_headers_override_method_and_path_of_the_configured_family_only() {
    let auth = format!("Bearer {}", token("SCOPE_READ_ONLY"));
    // Traefik ForwardAuth: the check request is GET /, the original was POST /orders.
    let dir = TempDir::new("http-forward-auth-traefik");
    let mut cfg = config();
    cfg["forward_auth"] = serde_json::json!({"headers": "traefik"});
    let tg = Tokengate::start(&dir, cfg);
    tg.wait_ready();
    let r = tg.check(
        "GET",
        "/",
        &[
            ("authorization", &auth),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/orders?x=1"),
        ],
    );
    assert_eq!(r.status, 403);
    // nginx's family is never read under traefik's.
    let r = tg.check(
        "GET",
        "/auth",
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orders"),
            ("x-original-uri", "/public/page"),
        ],
    );
    assert_eq!(r.status, 401);
    drop(tg);

    // nginx auth_request: X-Original-URI on an anonymous path.
    let dir = TempDir::new("http-forward-auth-nginx");
    let mut cfg = config();
    cfg["forward_auth"] = serde_json::json!({"headers": "nginx"});
    let tg = Tokengate::start(&dir, cfg);
    tg.wait_ready();
    let nginx = |uri: &str| {
        tg.check(
            "GET",
            "/auth",
            &[("x-original-method", "GET"), ("x-original-uri", uri)],
        )
        .status
    };
    assert_eq!(nginx("/public/page"), 200);
    assert_eq!(nginx("/orders"), 401);
    // Dot segments do not escape into an anonymous prefix: refused, as nginx serves
    // whatever it makes of them.
    assert_eq!(nginx("/public/../orders"), 400);
    // Without its method header the override is incomplete: refused, never the
    // check request's own method and path.
    let r = tg.check("GET", "/public/x", &[("x-original-uri", "/public/page")]);
    assert_eq!(r.status, 400);
    drop(tg);

    // Without a family (Envoy), override headers are never read.
    let dir = TempDir::new("http-forward-auth-none");
    let tg = Tokengate::start(&dir, config());
    tg.wait_ready();
    let r = tg.check("GET", "/orders", &[("x-original-uri", "/public/page")]);
    assert_eq!(r.status, 401);
    let r = tg.check("GET", "/public/x", &[("x-forwarded-method", "POST")]);
    assert_eq!(r.status, 200);
    let r = tg.check("GET", "/public/../orders", &[]);
    assert_eq!(r.status, 400);
}

#[test]
fn admin_reports_health_readiness_keys_and_metrics() {
    let dir = TempDir::new("http-admin");
    let tg = Tokengate::start(&dir, config());
    tg.wait_ready();
    assert_eq!(http::get(tg.admin, "/healthz").map(|r| r.status), Some(200));
    assert_eq!(tg.check_token("/x", &token("GOOD_RS256")).status, 200);
    assert_eq!(tg.check_token("/x", &token("NO_KID_ES256")).status, 200);
    let keys = tg.keys();
    let list = keys["keys"].as_array().cloned().unwrap_or_default();
    let find = |id: &str| {
        list.iter()
            .find(|k| k["key"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        list.len(),
        7,
        "six JWKS keys and the PEM certificate: {keys}"
    );
    assert_eq!(find("rsa-1")["validations"], 1);
    assert_eq!(find("ec-p256")["validations_by_match"]["fallback"], 1);
    assert_eq!(find("pem-1")["not_after"], "2099-12-31T23:59:59Z");
    assert!(find("rsa-1")["last_used"].is_string());
    assert!(find("rsa-2")["last_used"].is_null());
    for k in &list {
        let text = k.to_string();
        assert!(
            !text.contains("\"n\"") && !text.contains("\"k\""),
            "no key material in /keys: {text}"
        );
    }
    let m = tg.metrics();
    assert_eq!(
        m.value(
            "tokengate_decisions_total",
            &[
                ("issuer", "main"),
                ("listener", "authz_http"),
                ("reason", "ok")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        m.value(
            "tokengate_key_verifications_total",
            &[("key", "ec-p256"), ("match", "fallback"), ("result", "ok")]
        ),
        Some(1.0)
    );
    // Synchronous, one line per source (the config first), 200 when none failed.
    let r = http::request(tg.admin, "POST", "/refresh", &[], b"").expect("refresh");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let body: Value = serde_json::from_slice(&r.body).expect("JSON");
    let lines: Vec<(String, String)> = body["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap_or("?").to_string(),
                s["result"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("config".to_string(), "not_modified".to_string()),
            ("jwks_file".to_string(), "not_modified".to_string()),
            ("pem".to_string(), "not_modified".to_string()),
        ],
        "{body:#}"
    );
}

/// `/readyz` lists every issuer with its state and key count. With one identity provider
/// down it is 503 until `readiness.grace` has passed since start, then 200 (the other
/// issuer serves; the dead one's tokens still get 503 `keys_unavailable`).
#[test]
fn readiness_waits_for_every_issuer_until_the_grace_period_ends() {
    let dir = TempDir::new("http-readiness");
    let down = crate::support::ClosedPort::new();
    let mut dead = issuer_as("down", "https://down.example");
    dead["key_sources"] =
        json!([{"jwks_uri": format!("http://{}/jwks.json", down.addr), "timeout": "1s"}]);
    let cfg = json!({
        "issuers": [crate::support::fixture_issuer(), dead],
        "readiness": {"grace": "5s"}
    });
    let tg = Tokengate::start(&dir, cfg);
    let r = http::get(tg.admin, "/readyz").expect("/readyz");
    assert_eq!(r.status, 503, "{}", r.body_text());
    let body: Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(body["ready"], false);
    let issuers = body["issuers"].as_array().cloned().unwrap_or_default();
    assert_eq!(issuers.len(), 2, "{body:#}");
    assert_eq!(
        (&issuers[0]["name"], &issuers[0]["state"]),
        (&json!("main"), &json!("ready"))
    );
    assert!(
        issuers[0]["keys"].as_u64().is_some_and(|n| n > 0),
        "{body:#}"
    );
    assert_eq!(
        (
            &issuers[1]["name"],
            &issuers[1]["state"],
            &issuers[1]["keys"]
        ),
        (&json!("down"), &json!("unavailable"), &json!(0))
    );

    tg.wait_ready();
    assert_eq!(tg.check_token("/x", &token("GOOD_RS256")).status, 200);
    let r = tg.check_token("/x", &token_of("https://down.example"));
    assert_eq!((r.status, r.error()), (503, "keys_unavailable".to_string()));
}

#[test]
fn keys_unavailable_is_503_and_not_ready() {
    let dir = TempDir::new("http-unavailable");
    let down = crate::support::ClosedPort::new();
    let cfg = json!({
        "issuers": [{"name": "down", "issuer": "https://issuer.example",
                     "key_sources": [{"jwks_uri": format!("http://{}/jwks.json", down.addr), "timeout": "1s"}]}]
    });
    let tg = Tokengate::start(&dir, cfg);
    assert_eq!(http::get(tg.admin, "/readyz").map(|r| r.status), Some(503));
    let r = tg.check_token("/x", &token("GOOD_RS256"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("www-authenticate"), None);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// `GET /rotation` and the cryptoperiod: the signing key, each key's recent use and idle
/// time, the longest token lifetime seen, and `past_max_age` for an active key older than
/// `max_key_age` (here 1 s, so every active key is past it), also in `/keys` and as
/// `tokengate_key_max_age_seconds`.
#[test]
fn rotation_reports_signing_key_use_lifetime_and_max_age() {
    let dir = TempDir::new("http-rotation");
    let mut issuer = crate::support::fixture_issuer();
    issuer["max_key_age"] = json!("1s");
    let tg = Tokengate::start(&dir, json!({ "issuers": [issuer] }));
    tg.wait_ready();
    assert_eq!(tg.check_token("/x", &token("GOOD_RS256")).status, 200);

    let r = http::get(tg.admin, "/rotation").expect("/rotation");
    assert_eq!(r.status, 200);
    let doc: Value = serde_json::from_slice(&r.body).expect("JSON");
    let main = &doc["issuers"][0];
    assert_eq!(main["name"], "main", "{doc:#}");
    // GOOD_RS256: iat 1700000000, exp 4102444800.
    assert_eq!(
        main["longest_lifetime_seconds"], 2_402_444_800_i64,
        "{doc:#}"
    );
    assert_eq!(main["max_key_age_seconds"], 1, "{doc:#}");
    let keys = main["keys"].as_array().cloned().unwrap_or_default();
    let key = |id: &str| {
        keys.iter()
            .find(|k| k["key"] == id)
            .cloned()
            .unwrap_or_default()
    };
    let rsa1 = key("rsa-1");
    assert_eq!(
        rsa1["state"], "active",
        "the key of the newest iat: {doc:#}"
    );
    assert_eq!(
        (&rsa1["validations_1h"], &rsa1["validations_24h"]),
        (&json!(1), &json!(1))
    );
    assert!(
        rsa1["last_used"].is_string()
            && rsa1["unused_for_seconds"].as_i64().is_some_and(|s| s < 60)
    );
    assert_eq!(
        key("rsa-2")["past_max_age"],
        false,
        "only active keys are flagged: {doc:#}"
    );
    assert_eq!(main["signing_key"], "rsa-1", "{doc:#}");
    // rsa-1 was first loaded moments ago; once it is older than 1 s it is past the
    // cryptoperiod, in /rotation and /keys. A valid key of any age never is.
    tg.wait_for(
        || {
            let r = http::get(tg.admin, "/rotation").expect("/rotation");
            let doc: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            doc["issuers"][0]["keys"]
                .as_array()
                .and_then(|l| l.iter().find(|k| k["key"] == "rsa-1"))
                .is_some_and(|k| k["past_max_age"] == true)
        },
        "rsa-1 past max_key_age in /rotation",
    );
    let inventory = tg.keys();
    let entry = |id: &str| {
        inventory["keys"]
            .as_array()
            .and_then(|l| l.iter().find(|k| k["key"] == id))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(entry("rsa-1")["past_max_age"], true, "{inventory:#}");
    assert_eq!(entry("pem-1")["past_max_age"], false, "{inventory:#}");
    assert_eq!(entry("rsa-1")["use"], "sig");
    let m = tg.metrics();
    assert_eq!(
        m.value("tokengate_key_max_age_seconds", &[("issuer", "main")]),
        Some(1.0)
    );
    assert!(
        m.value(
            "tokengate_key_first_seen_timestamp_seconds",
            &[("key", "rsa-1")]
        )
        .is_some_and(|t| t > 1.7e9)
    );
}

/// The verified-token cache is the policy's (SPEC §4): a config reload that changes an
/// issuer's policy never lets a cached result of the old policy answer — right after a
/// synchronous `POST /refresh`, a token allowed (and cached) a moment before is judged
/// by the new audience.
#[test]
fn a_policy_change_never_answers_from_the_old_policy_cache() {
    let dir = TempDir::new("http-policy-cache");
    let tg = Tokengate::start(
        &dir,
        json!({ "issuers": [crate::support::fixture_issuer()] }),
    );
    tg.wait_ready();
    let good = token("GOOD_RS256");
    assert_eq!(tg.check_token("/x", &good).status, 200);
    assert_eq!(
        tg.check_token("/x", &good).status,
        200,
        "now from the cache"
    );

    let mut issuer = crate::support::fixture_issuer();
    issuer["audiences"] = json!(["another-api"]);
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&tg.config).expect("config")).expect("JSON");
    config["issuers"] = json!([issuer]);
    dir.write("config.json", config.to_string());
    let r = http::request(tg.admin, "POST", "/refresh", &[], b"").expect("POST /refresh");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = tg.check_token("/x", &good);
    assert_eq!((r.status, r.error()), (401, "bad_audience".to_string()));
}

/// `routes[].issuers`: a route that names its issuers refuses a valid token of another
/// one (`bad_issuer`, 401 `invalid_token`), also when that token is answered from the
/// cache; the other routes take either.
#[test]
fn a_route_that_names_its_issuers_refuses_a_valid_token_of_another() {
    let dir = TempDir::new("http-route-issuers");
    let other = issuer_as("other", "https://other.example");
    let cfg = json!({
        "issuers": [crate::support::fixture_issuer(), other],
        "routes": [{"path_prefix": "/billing", "name": "billing", "issuers": ["other"]}]
    });
    let tg = Tokengate::start(&dir, cfg);
    tg.wait_ready();
    let other_token = token_of("https://other.example");
    let main_token = token("GOOD_RS256");

    // Cached as allowed on a route without issuers first.
    assert_eq!(tg.check_token("/x", &main_token).status, 200);
    let r = tg.check_token("/billing/1", &main_token);
    assert_eq!((r.status, r.error()), (401, "bad_issuer".to_string()));
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.contains("error=\"invalid_token\"")),
        "{:?}",
        r.headers
    );
    assert_eq!(tg.check_token("/billing/1", &other_token).status, 200);
    assert_eq!(tg.check_token("/x", &other_token).status, 200);
    let m = tg.metrics();
    assert_eq!(
        m.value(
            "tokengate_decisions_total",
            &[
                ("issuer", "main"),
                ("listener", "authz_http"),
                ("reason", "bad_issuer")
            ]
        ),
        Some(1.0)
    );
}

/// The fixture issuer under another name and `iss` (the same key sources).
fn issuer_as(name: &str, iss: &str) -> Value {
    let mut issuer = crate::support::fixture_issuer();
    issuer["name"] = json!(name);
    issuer["issuer"] = json!(iss);
    issuer
}

/// A valid token of issuer `iss`, signed by fixture key rsa-1 under its kid.
fn token_of(iss: &str) -> String {
    let mut claims = crate::support::mint::claims();
    claims["iss"] = json!(iss);
    crate::support::mint::sign(
        jsonwebtoken::Algorithm::RS256,
        "rsa-1",
        Some("rsa-1"),
        &claims,
    )
}
