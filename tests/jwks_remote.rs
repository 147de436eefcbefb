//! Remote JWKS (`jwks_uri` and `discovery`, GitHub issue 3) end to end: the built
//! `tokengate serve` against a real loopback JWKS server (`support::jwks_server`) that
//! each test reconfigures while tokengate runs. These are the wiring tests; the refresh
//! policy itself (delays, max-age floor, 304s, backoff, max_stale, the miss rate limit)
//! is tested to the second on paused time in `src/keys/jwks_source/tests.rs`.
//!
//! Covered: a key added to the set is found by one unknown-kid refetch; a withdrawn key
//! is retired (statistics kept) and its tokens denied; 500s, garbage, oversized bodies,
//! hangs and resets over real HTTP keep the last good keys serving and are logged as
//! such; a server that is down at start makes the issuer not ready, then ready without a
//! restart; `ETag` revalidation (304); keys withdrawn once older than `max_stale`; a
//! flood of made-up kids stays within the refetch rate limit and adds no metric series;
//! discovery; and a full rotation drill under continuous traffic with zero failures.
//!
//! Published keys are the fixture public keys renamed (`rsa-1` as `k1`, ...), so a test
//! controls kids without generating keys. Every wait is a condition polled with a
//! deadline; the only sleep paces the rotation drill's traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::jwks_server::{JwksServer, Mode};
use crate::support::{Metrics, TempDir, Tokengate, http, mint};

/// The issuer's name (the `issuer` label).
const ISSUER: &str = "remote";

#[test]
fn refetches_once_for_a_new_kid() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1")]));
    let dir = TempDir::new("jwks-new-kid");
    let tg = Tokengate::start(&dir, config(remote(&server, json!({"refresh": "1h"}))));
    tg.wait_ready();
    assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));
    let before = server.hits();

    // The authorization server adds k2 and signs with it before any periodic refresh.
    server.set(|b| b.body = jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")]));
    assert_eq!(check(&tg, &token("rsa-2", "k2")), (200, String::new()));
    assert_eq!(
        server.hits(),
        before + 1,
        "exactly one refetch for the new kid"
    );
    assert_eq!(misses(&tg, "refetch_found"), 1.0);
    assert_eq!(
        misses(&tg, "fallback_matched") + misses(&tg, "rejected"),
        0.0
    );

    // k2 is known now: no more fetches for it.
    assert_eq!(check(&tg, &token("rsa-2", "k2")), (200, String::new()));
    assert_eq!(server.hits(), before + 1);
}

#[test]
fn retires_a_withdrawn_key_and_denies_its_tokens() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")]));
    let dir = TempDir::new("jwks-withdraw");
    let tg = Tokengate::start(&dir, config(remote(&server, json!({"refresh": "1h"}))));
    tg.wait_ready();
    let old = token("rsa-1", "k1");
    assert_eq!(check(&tg, &old), (200, String::new()));
    for _ in 0..2 {
        assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));
    }

    server.set(|b| b.body = jwks(&[("rsa-2", "k2")]));
    refresh(&tg);
    tg.wait_for(
        || state(&tg, "k1").as_deref() == Some("retired"),
        "k1 retired",
    );

    // k1 is unknown now: one (rate-limited) refetch, then the fallback over k2 fails.
    // `old` was accepted (and cached) before: the key change must reach it too.
    let before = server.hits();
    assert_eq!(check(&tg, &old), (401, "bad_signature".to_string()));
    assert_eq!(server.hits(), before + 1, "one refetch for the unknown kid");
    assert_eq!(
        check(&tg, &token("rsa-1", "k1")),
        (401, "bad_signature".to_string())
    );
    assert_eq!(server.hits(), before + 1, "the second miss is rate-limited");
    assert_eq!(misses(&tg, "rejected"), 2.0);

    let k1 = key_entry(&tg, "k1").unwrap_or_default();
    assert_eq!(k1["state"], "retired", "{k1}");
    assert_eq!(k1["source"], "jwks", "{k1}");
    assert_eq!(k1["validations"], 3, "statistics survive retirement: {k1}");
    assert!(
        k1["last_used"].is_string() && k1["retired_at"].is_string(),
        "{k1}"
    );
    assert_ne!(state(&tg, "k2").as_deref(), Some("retired"));
}

#[test]
fn serves_last_good_keys_through_fetch_faults() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1")]));
    let dir = TempDir::new("jwks-faults");
    // A fetch every second (and a retry every second after a failure), 1 s timeout.
    let settings = json!({"refresh": "1s", "timeout": "1s"});
    let tg = Tokengate::start(&dir, config(remote(&server, settings)));
    tg.wait_ready();

    // Each fault, and what the fetch error says about it in the log.
    let faults = [
        ("HTTP 500", Mode::Status(500), "HTTP 500"),
        ("garbage", Mode::Garbage, "not a JWK set"),
        (
            "10 MB body",
            Mode::Huge(10 << 20),
            "body larger than 1048576 bytes",
        ),
        ("hang", Mode::Hang, "timeout"),
        ("reset", Mode::Reset, "request failed"),
    ];
    for (what, mode, logged) in faults {
        let errors = fetches(&tg, "error");
        let seen = tg.logs().matches(logged).count();
        server.set(|b| b.mode = mode);
        tg.wait_for(
            || fetches(&tg, "error") > errors,
            &format!("a fetch error ({what})"),
        );
        assert_eq!(
            check(&tg, &token("rsa-1", "k1")),
            (200, String::new()),
            "{what}: the last good keys serve"
        );
        let ready = http::get(tg.admin, "/readyz").map(|r| r.status);
        assert_eq!(
            ready,
            Some(200),
            "{what}: the last good keys keep the issuer ready"
        );
        // Fetches are serialized: the second error after the switch is the new mode's.
        tg.wait_for(
            || fetches(&tg, "error") >= errors + 2.0,
            &format!("{what} counted"),
        );
        tg.wait_for(
            || tg.logs().matches(logged).count() > seen,
            &format!("{what} logged as {logged:?}"),
        );
    }

    // An unknown kid while a fetch hangs: the request waits for the fetch in flight and
    // its own refetch only up to `timeout` (exactly so on paused time in
    // src/keys/jwks_source/tests.rs), then falls back (k1 verifies).
    server.set(|b| b.mode = Mode::Hang);
    let hits = server.hits();
    tg.wait_for(|| server.hits() > hits, "a fetch in flight");
    assert_eq!(check(&tg, &token("rsa-1", "k-new")), (200, String::new()));
    assert_eq!(misses(&tg, "fallback_matched"), 1.0);

    // The server recovers: fetches succeed again (same content, so "not modified").
    let good = fetches(&tg, "ok") + fetches(&tg, "not_modified");
    server.set(|b| b.mode = Mode::Serve);
    tg.wait_for(
        || fetches(&tg, "ok") + fetches(&tg, "not_modified") > good,
        "recovery",
    );
    assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));
}

#[test]
fn withdraws_keys_once_stale_beyond_max_stale() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1")]));
    let dir = TempDir::new("jwks-stale");
    let settings = json!({"refresh": "1s", "timeout": "1s", "max_stale": "2s"});
    let tg = Tokengate::start(&dir, config(remote(&server, settings)));
    tg.wait_ready();
    assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));

    // Failing for longer than max_stale: the keys are withdrawn, the issuer not ready.
    server.set(|b| b.mode = Mode::Status(500));
    tg.wait_for(
        || http::get(tg.admin, "/readyz").is_some_and(|r| r.status == 503),
        "not ready after max_stale",
    );
    let stale = token("rsa-1", "k1");
    assert_eq!(check(&tg, &stale), (503, "keys_unavailable".to_string()));

    // Back: the next retry loads the set in full (no If-None-Match without keys).
    server.set(|b| b.mode = Mode::Serve);
    tg.wait_ready();
    assert_eq!(check(&tg, &stale), (200, String::new()));
    assert_ne!(state(&tg, "k1").as_deref(), Some("retired"));
}

#[test]
fn becomes_ready_when_the_jwks_server_comes_up() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1")]));
    server.set(|b| b.mode = Mode::Status(503));
    let dir = TempDir::new("jwks-cold");
    // `refresh` is long: the retries come from the backoff (1 s, 2 s, ...), not from it.
    let tg = Tokengate::start(&dir, config(remote(&server, json!({"refresh": "1h"}))));

    let ready = http::get(tg.admin, "/readyz").map(|r| r.status);
    assert_eq!(ready, Some(503));
    let good = token("rsa-1", "k1");
    assert_eq!(check(&tg, &good), (503, "keys_unavailable".to_string()));
    tg.wait_for(|| fetches(&tg, "error") >= 1.0, "a failed fetch");

    // Still down, differently: connections reset.
    server.set(|b| b.mode = Mode::Reset);
    tg.wait_for(|| fetches(&tg, "error") >= 2.0, "a retry");
    assert_eq!(http::get(tg.admin, "/readyz").map(|r| r.status), Some(503));
    assert_eq!(check(&tg, &good), (503, "keys_unavailable".to_string()));

    server.set(|b| b.mode = Mode::Serve);
    tg.wait_ready();
    assert_eq!(check(&tg, &good), (200, String::new()));
    assert_eq!(fetches(&tg, "ok"), 1.0);
}

#[test]
fn revalidates_with_etag_and_keeps_keys_on_304() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1")]));
    server.set(|b| b.etag = Some("\"v1\"".into()));
    let dir = TempDir::new("jwks-etag");
    let tg = Tokengate::start(&dir, config(remote(&server, json!({"refresh": "1h"}))));
    tg.wait_ready();

    refresh(&tg);
    tg.wait_for(|| server.not_modified() >= 1, "a 304 (If-None-Match sent)");
    tg.wait_for(
        || fetches(&tg, "not_modified") >= 1.0,
        "not_modified counted",
    );
    assert_eq!(fetches(&tg, "ok"), 1.0);
    assert_eq!(fetches(&tg, "error"), 0.0);
    assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));
    assert_eq!(http::get(tg.admin, "/readyz").map(|r| r.status), Some(200));

    // A new version with a new ETag is fetched in full.
    server.set(|b| {
        b.body = jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")]);
        b.etag = Some("\"v2\"".into());
    });
    refresh(&tg);
    tg.wait_for(|| fetches(&tg, "ok") >= 2.0, "the new version fetched");
    assert_eq!(check(&tg, &token("rsa-2", "k2")), (200, String::new()));
    assert_eq!(
        misses(&tg, "refetch_found"),
        0.0,
        "k2 was loaded by the refresh"
    );
    assert_eq!(server.not_modified(), 1);
}

/// `POST /refresh` is synchronous: right after a compromised key is withdrawn from the
/// remote set, its answer (200, the source's line) means the next request with that key
/// is refused, even one allowed and cached a moment before; a failing source makes it 502,
/// naming the source; concurrent calls share the refresh in flight (one fetch).
#[test]
fn refresh_waits_for_the_fetch_and_reports_each_source() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")]));
    let dir = TempDir::new("jwks-refresh");
    let settings = json!({"refresh": "1h", "timeout": "5s"});
    let tg = Tokengate::start(&dir, config(remote(&server, settings)));
    tg.wait_ready();
    let compromised = token("rsa-2", "k2");
    assert_eq!(check(&tg, &compromised), (200, String::new()));

    server.set(|b| b.body = jwks(&[("rsa-1", "k1")]));
    let r = http::request(tg.admin, "POST", "/refresh", &[], b"").expect("POST /refresh");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let line = jwks_line(&r);
    assert_eq!(
        (
            &line["issuer"],
            &line["field"],
            &line["result"],
            &line["keys"]
        ),
        (
            &json!(ISSUER),
            &json!("issuers[0].key_sources[0]"),
            &json!("ok"),
            &json!(1)
        ),
        "{}",
        r.body_text()
    );
    assert_eq!(
        check(&tg, &compromised).0,
        401,
        "the withdrawn key, right after"
    );
    assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));

    // A failing source: 502, its line says why.
    server.set(|b| b.mode = Mode::Status(500));
    let r = http::request(tg.admin, "POST", "/refresh", &[], b"").expect("POST /refresh");
    assert_eq!(r.status, 502, "{}", r.body_text());
    let line = jwks_line(&r);
    assert_eq!(line["result"], "error", "{}", r.body_text());
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{}",
        r.body_text()
    );
    assert_eq!(
        line["keys"],
        1,
        "the last good set stays: {}",
        r.body_text()
    );

    // Concurrent calls while a fetch hangs: one fetch, every caller the same answer.
    server.set(|b| b.mode = Mode::Hang);
    let before = server.hits();
    let admin = tg.admin;
    let post = move || {
        http::request(admin, "POST", "/refresh", &[], b"")
            .map(|r| (r.status, jwks_line(&r)["error"].clone()))
    };
    let first = std::thread::spawn(post);
    tg.wait_for(
        || server.hits() > before,
        "the first refresh's fetch in flight",
    );
    let others: Vec<_> = (0..4).map(|_| std::thread::spawn(post)).collect();
    let answers: Vec<_> = std::iter::once(first)
        .chain(others)
        .map(|t| t.join().expect("thread"))
        .collect();
    for a in &answers {
        assert_eq!(a, &answers[0], "every caller gets the one refresh's report");
    }
    assert_eq!(answers[0].as_ref().map(|a| a.0), Some(502), "{answers:?}");
    assert_eq!(server.hits(), before + 1, "five calls, one fetch");
}

/// The `jwks` line of a `POST /refresh` answer.
fn jwks_line(r: &http::Response) -> Value {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    body["sources"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["source"] == "jwks"))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn rate_limits_refetches_under_a_flood_of_unknown_kids() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")]));
    let dir = TempDir::new("jwks-flood");
    // Long enough that the whole flood fits in one rate-limit window, even on a slow machine.
    let settings = json!({"refresh": "1h", "miss_refetch_interval": "10m"});
    let mut cfg = config(remote(&server, settings));
    // This test is about refetches and series; the fallback budget (which would cut
    // most of these scans short) has its own test in hardening.rs.
    cfg["fallback"] = json!({"max_verifications_per_second": 1_000_000});
    let tg = Tokengate::start(&dir, cfg);
    tg.wait_ready();
    // Use k1 once so that its inventory state (a label of tokengate_key_info) is settled.
    assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));
    let series_before = series(&tg.metrics());
    let hits_before = server.hits();

    // 10,000 made-up kids from 4 threads: every 4th token is signed by a published key
    // (the fallback finds it), the rest by the attacker's key.
    let addr = tg.authz;
    let seed = mint::now().unsigned_abs();
    let results: Vec<(bool, u16, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    (0..2500)
                        .map(|i| {
                            let kid = format!("rnd-{:016x}", xorshift(&mut rng));
                            let genuine = i % 4 == 0;
                            let t = token(if genuine { "rsa-1" } else { "attacker" }, &kid);
                            let auth = format!("Bearer {t}");
                            let headers = [("authorization", auth.as_str())];
                            match http::request(addr, "GET", "/orders", &headers, b"") {
                                Some(r) => (genuine, r.status, r.error()),
                                None => (genuine, 0, "no answer".to_string()),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    assert_eq!(results.len(), 10_000);
    let wrong: Vec<_> = results
        .iter()
        .filter(|(genuine, status, error)| match genuine {
            true => *status != 200,
            false => (*status, error.as_str()) != (401, "bad_signature"),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} unexpected answers, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    assert_eq!(
        server.hits(),
        hits_before + 1,
        "one refetch for the whole flood"
    );
    let genuine = results.iter().filter(|(genuine, _, _)| *genuine).count() as f64;
    assert_eq!(misses(&tg, "fallback_matched"), genuine);
    assert_eq!(misses(&tg, "rejected"), 10_000.0 - genuine);
    assert_eq!(misses(&tg, "refetch_found"), 0.0);

    let after = tg.metrics();
    let leaked: Vec<_> = after
        .samples
        .iter()
        .filter(|(_, labels, _)| labels.values().any(|v| v.starts_with("rnd-")))
        .collect();
    assert!(
        leaked.is_empty(),
        "a token's kid became a label: {leaked:?}"
    );
    let series_after = series(&after);
    assert_eq!(
        series_before
            .symmetric_difference(&series_after)
            .collect::<Vec<_>>(),
        Vec::<&(String, Vec<(String, String)>)>::new(),
        "the flood changed the set of series"
    );
}

#[test]
fn loads_keys_through_discovery() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1"), ("ec-p256", "k-ec")]));
    let dir = TempDir::new("jwks-discovery");
    let source = json!({"discovery": server.base(), "refresh": "1h"});
    let tg = Tokengate::start(&dir, config(source));
    tg.wait_ready();
    assert!(
        server.hits() >= 1,
        "the jwks_uri of the discovery document was fetched"
    );
    assert_eq!(check(&tg, &token("rsa-1", "k1")), (200, String::new()));
    assert_eq!(check(&tg, &token("ec-p256", "k-ec")), (200, String::new()));
    let k1 = key_entry(&tg, "k1").unwrap_or_default();
    assert_eq!(k1["source"], "jwks", "{k1}");
    assert!(k1["fetched_at"].is_string(), "{k1}");
}

#[test]
fn rotates_keys_without_denying_a_valid_request() {
    let server = JwksServer::start(&jwks(&[("rsa-1", "k1")]));
    let dir = TempDir::new("jwks-drill");
    let tg = Tokengate::start(&dir, config(remote(&server, json!({"refresh": "1h"}))));
    tg.wait_ready();

    // Traffic throughout: a valid token every 5 ms, signed by whichever key signs now.
    let signer = Arc::new(Mutex::new(("rsa-1", "k1")));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let traffic = {
        let (signer, stop, sent, failures) =
            (signer.clone(), stop.clone(), sent.clone(), failures.clone());
        let addr = tg.authz;
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (key, kid) = *signer.lock().unwrap_or_else(PoisonError::into_inner);
                let auth = format!("Bearer {}", token(key, kid));
                let r = http::request(addr, "GET", "/orders", &[("authorization", &auth)], b"");
                if r.as_ref().is_none_or(|r| r.status != 200) {
                    let what = r.map(|r| (r.status, r.body_text()));
                    failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(format!("{kid}: {what:?}"));
                }
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let phase = |what: &str| {
        let start = sent.load(Ordering::SeqCst);
        tg.wait_for(|| sent.load(Ordering::SeqCst) >= start + 40, what);
    };

    phase("traffic signed by k1");
    // Publish k2 next to k1, and sign with k2 at once (no refresh in between).
    server.set(|b| b.body = jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")]));
    *signer.lock().unwrap_or_else(PoisonError::into_inner) = ("rsa-2", "k2");
    phase("traffic signed by k2");
    // Withdraw k1.
    server.set(|b| b.body = jwks(&[("rsa-2", "k2")]));
    refresh(&tg);
    tg.wait_for(
        || state(&tg, "k1").as_deref() == Some("retired"),
        "k1 retired",
    );
    phase("traffic after k1 left");
    stop.store(true, Ordering::SeqCst);
    let _ = traffic.join();

    let failures = failures.lock().unwrap_or_else(PoisonError::into_inner);
    let total = sent.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {total} valid requests denied: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 100, "only {total} requests");
    assert_eq!(
        misses(&tg, "refetch_found"),
        1.0,
        "k2 arrived through the unknown-kid refetch"
    );

    let k1 = key_entry(&tg, "k1").unwrap_or_default();
    assert_eq!(k1["state"], "retired", "{k1}");
    assert!(k1["last_used"].is_string(), "{k1}");
    assert!(k1["validations"].as_u64().is_some_and(|n| n > 0), "{k1}");
    assert_eq!(state(&tg, "k2").as_deref(), Some("active"));
}

// === helpers ===

/// The fixture public JWK `name` published as `kid`.
fn jwk(name: &str, kid: &str) -> Value {
    crate::support::public_jwk(name, kid)
}

/// A JWK set with the fixture keys `(name, kid)`, in this order.
fn jwks(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = keys.iter().map(|(name, kid)| jwk(name, kid)).collect();
    json!({ "keys": keys }).to_string()
}

/// A config with one issuer (the fixture tokens' `iss` and `aud`) and one key source.
fn config(source: Value) -> Value {
    json!({
        "issuers": [{
            "name": ISSUER,
            "issuer": "https://issuer.example",
            "audiences": ["orders-api"],
            "algorithms": ["RS256", "ES256"],
            "require_typ": ["at+jwt"],
            "key_sources": [source]
        }]
    })
}

/// A `jwks_uri` source on `server` with these settings.
fn remote(server: &JwksServer, mut settings: Value) -> Value {
    settings["jwks_uri"] = json!(server.url());
    settings
}

/// A fresh, valid-claims token signed by fixture private key `key` with header `kid`. The
/// `jti` is unique so that the verified-token cache never answers for it.
fn token(key: &str, kid: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut claims = mint::claims();
    claims["jti"] = json!(format!("jwks-remote-{}", N.fetch_add(1, Ordering::Relaxed)));
    let alg = if key.starts_with("ec") {
        Algorithm::ES256
    } else {
        Algorithm::RS256
    };
    mint::sign(alg, key, Some(kid), &claims)
}

/// Checks `token` on authz_http: the status and the JSON body's `error` ("" if none).
fn check(tg: &Tokengate, token: &str) -> (u16, String) {
    let r = tg.check_token("/orders", token);
    (r.status, r.error())
}

/// `tokengate_jwks_fetches_total{result}` of the issuer.
fn fetches(tg: &Tokengate, result: &str) -> f64 {
    let want = [("issuer", ISSUER), ("result", result)];
    tg.metrics().sum("tokengate_jwks_fetches_total", &want)
}

/// `tokengate_kid_misses_total{outcome}` of the issuer.
fn misses(tg: &Tokengate, outcome: &str) -> f64 {
    let want = [("issuer", ISSUER), ("outcome", outcome)];
    tg.metrics().sum("tokengate_kid_misses_total", &want)
}

/// `POST /refresh` on the admin listener.
fn refresh(tg: &Tokengate) {
    let r = http::request(tg.admin, "POST", "/refresh", &[], b"");
    assert_eq!(r.map(|r| r.status), Some(200), "POST /refresh");
}

/// The `/keys` entry of `kid`.
fn key_entry(tg: &Tokengate, kid: &str) -> Option<Value> {
    let keys = tg.keys();
    keys["keys"]
        .as_array()?
        .iter()
        .find(|k| k["key"] == kid)
        .cloned()
}

/// The inventory state of `kid`.
fn state(tg: &Tokengate, kid: &str) -> Option<String> {
    key_entry(tg, kid).and_then(|k| k["state"].as_str().map(str::to_string))
}

/// Every series (name and labels, without values).
fn series(m: &Metrics) -> BTreeSet<(String, Vec<(String, String)>)> {
    m.samples
        .iter()
        .map(|(name, labels, _)| {
            let labels: BTreeMap<_, _> = labels.clone().into_iter().collect();
            (name.clone(), labels.into_iter().collect())
        })
        .collect()
}

/// xorshift64: made-up kids without a random-number dependency.
fn xorshift(state: &mut u64) -> u64 {
    let mut x = (*state).max(1);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}
