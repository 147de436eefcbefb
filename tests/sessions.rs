//! Shared JWT sessions (SPEC §10): PingGateway `JwtSession` cookies — `dir` +
//! `A256CBC-HS512` JWEs under a secret key made by the seed's `keytool -genseckey` — as
//! credentials of a running tokengate, and the seed's rotation drill ("Rotate keys in a
//! shared JWT session") with three instances sharing one keystore and traffic
//! throughout. Cookies are made by jwcrypto (`tests/support/dpop_mint.py`), with the
//! secret read out of the keystore by pyasn1 (`tests/support/p12_secret.py`), never by
//! tokengate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::support::dpop::Minter;
use crate::support::keystore::{keytool_genseckey, sh};
use crate::support::mint::{self, now};
use crate::support::{TempDir, Tokengate, fixture_issuer, http};

/// The seed's keystore password, and how PingGateway's SystemAndEnvSecretStore holds it
/// (base64, tokengate's default `password_encoding`).
const STOREPASS: &str = "password";
const STOREPASS_B64: &str = "cGFzc3dvcmQ=";

/// The session key `alias` of `store`, read by pyasn1 (the session producer's copy).
fn secret(minter: &mut Minter, dir: &TempDir, store: &str, alias: &str) -> Value {
    let answer = minter.call(&json!({
        "op": "keystore_secret",
        "path": dir.path(store).to_string_lossy(),
        "password": STOREPASS,
        "alias": alias,
    }));
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(answer["jwk"]["k"].as_str().expect("k"))
            .map(|k| k.len()),
        Ok(64),
        "keytool's HmacSHA512 key is 64 bytes"
    );
    answer["jwk"].clone()
}

/// A session cookie as PingGateway writes it: `dir` + `A256CBC-HS512`, no `kid`.
fn cookie(minter: &mut Minter, key: &Value, attributes: &Value) -> String {
    minter.seal(
        key,
        json!({"alg": "dir", "enc": "A256CBC-HS512"}),
        &attributes.to_string(),
    )
}

fn keystore_source(dir: &TempDir, store: &str, aliases: &[&str]) -> Value {
    json!({
        "keystore": dir.path(store).to_string_lossy(),
        "password_env": "KEYSTORE_SECRET_ID",
        "aliases": aliases,
    })
}

fn check_cookie(tg: &Tokengate, path: &str, cookie: &str) -> http::Response {
    tg.check("GET", path, &[("cookie", cookie)])
}

/// Sessions through a running tokengate: the attributes become the principal (forward
/// headers, scopes, the claims header), `exp`, PingGateway's `_ig_exp`, `max_age` and
/// the subject are checked, every bad cookie is `bad_session`, a session beside another
/// credential is 400, and `/keys`, the metrics and `tokengate verify` show the key.
#[test]
fn session_cookies_are_judged_by_their_session() {
    let dir = TempDir::new("sessions");
    let mut minter = Minter::start();
    keytool_genseckey(
        &dir,
        "jwtsessionkeystore.pkcs12",
        "symmetric-key",
        STOREPASS,
    );
    let key = secret(
        &mut minter,
        &dir,
        "jwtsessionkeystore.pkcs12",
        "symmetric-key",
    );
    let source = keystore_source(&dir, "jwtsessionkeystore.pkcs12", &["symmetric-key"]);
    let config = json!({
        "issuers": [fixture_issuer()],
        "sessions": [
            {"name": "ig", "cookie": "IG", "key_sources": [source], "max_age": "30m"},
            {"name": "pg", "cookie": "pg-session", "key_sources": [source],
             "subject_claim": "username"}
        ],
        "routes": [
            {"path_prefix": "/orders", "scopes_all": ["orders:read"]},
            {"path_prefix": "/ig-only", "issuers": ["ig"]}
        ],
        "forward": {
            "claim_headers": {"x-auth-subject": "sub", "x-auth-scopes": "scope",
                              "x-department": "department"},
            "claims_header": "x-claims"
        }
    });
    let tg = Tokengate::start_env(&dir, config, &[("KEYSTORE_SECRET_ID", STOREPASS_B64)]);
    tg.wait_ready();
    let t = now();

    // A good session: its attributes are the principal.
    let attrs = json!({"sub": "Sam Carter", "scope": "orders:read", "department": "ops",
                       "iat": t, "exp": t + 600});
    let good = format!("IG={}", cookie(&mut minter, &key, &attrs));
    let r = check_cookie(&tg, "/orders", &good);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.header("x-auth-subject"), Some("Sam Carter"));
    assert_eq!(r.header("x-auth-scopes"), Some("orders:read"));
    assert_eq!(r.header("x-department"), Some("ops"));
    let claims = URL_SAFE_NO_PAD
        .decode(r.header("x-claims").expect("claims header"))
        .expect("base64url");
    assert_eq!(
        serde_json::from_slice::<Value>(&claims).expect("JSON"),
        attrs
    );
    // Cached: the same cookie again is not decrypted again.
    let r = check_cookie(&tg, "/orders", &good);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-auth-subject"), Some("Sam Carter"));
    let m = tg.metrics();
    let ok = [
        ("issuer", "ig"),
        ("source", "keystore"),
        ("key", "symmetric-key"),
        ("match", "fallback"),
        ("result", "ok"),
    ];
    assert_eq!(m.value("tokengate_key_decryptions_total", &ok), Some(1.0));
    assert_eq!(
        m.sum(
            "tokengate_decisions_total",
            &[("issuer", "ig"), ("reason", "ok")]
        ),
        2.0
    );

    // PingGateway's own shape: attributes and `_ig_exp` in milliseconds, no `iat`; the
    // session names its subject by `username`.
    let pg = json!({"username": "Sam Carter", "_ig_exp": (t + 600) * 1000});
    let r = check_cookie(
        &tg,
        "/",
        &format!("pg-session={}", cookie(&mut minter, &key, &pg)),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.header("x-auth-subject"), Some("Sam Carter"));
    // A route that names its issuers takes the sessions it names only.
    let r = check_cookie(
        &tg,
        "/ig-only",
        &format!("pg-session={}", cookie(&mut minter, &key, &pg)),
    );
    assert_eq!((r.status, r.error()), (401, "bad_issuer".to_string()));
    assert_eq!(check_cookie(&tg, "/ig-only", &good).status, 200);
    // Scopes come from the session.
    let no_scope = json!({"sub": "Sam Carter", "iat": t, "exp": t + 600});
    let r = check_cookie(
        &tg,
        "/orders",
        &format!("IG={}", cookie(&mut minter, &key, &no_scope)),
    );
    assert_eq!(
        (r.status, r.error()),
        (403, "insufficient_scope".to_string())
    );

    // Every bad session is `bad_session`.
    let mut other = secret(
        &mut minter,
        &dir,
        "jwtsessionkeystore.pkcs12",
        "symmetric-key",
    );
    let mut k = vec![0u8; 64];
    aws_lc_rs::rand::fill(&mut k).expect("random");
    other["k"] = json!(URL_SAFE_NO_PAD.encode(k));
    let sealed = cookie(&mut minter, &key, &attrs);
    let mut parts: Vec<String> = sealed.split('.').map(str::to_string).collect();
    let mut tag = URL_SAFE_NO_PAD.decode(&parts[4]).expect("tag");
    tag[0] ^= 1;
    parts[4] = URL_SAFE_NO_PAD.encode(tag);
    let with = |v: Value| {
        let mut a = attrs.clone();
        for (k, v) in v.as_object().expect("object") {
            if v.is_null() {
                a.as_object_mut().expect("object").remove(k);
            } else {
                a[k] = v.clone();
            }
        }
        a
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            cookie(&mut minter, &key, &with(json!({"exp": t - 120}))),
        ),
        (
            "past max_age",
            cookie(
                &mut minter,
                &key,
                &with(json!({"iat": t - 3600, "exp": t + 600})),
            ),
        ),
        (
            "no iat under max_age",
            cookie(&mut minter, &key, &with(json!({"iat": null}))),
        ),
        (
            "issued in the future",
            cookie(&mut minter, &key, &with(json!({"iat": t + 600}))),
        ),
        (
            "no subject",
            cookie(&mut minter, &key, &with(json!({"sub": null}))),
        ),
        (
            "a subject that is not a string",
            cookie(&mut minter, &key, &with(json!({"sub": 7}))),
        ),
        (
            "expired by _ig_exp",
            cookie(
                &mut minter,
                &key,
                &with(json!({"_ig_exp": (t - 120) * 1000})),
            ),
        ),
        ("another key", cookie(&mut minter, &other, &attrs)),
        ("an altered tag", parts.join(".")),
        (
            "key wrapping instead of dir",
            minter.seal(
                &json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 32])}),
                json!({"alg": "A256KW", "enc": "A256CBC-HS512"}),
                &attrs.to_string(),
            ),
        ),
        (
            "a method the session does not take",
            minter.seal(
                &json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode([7u8; 32])}),
                json!({"alg": "dir", "enc": "A256GCM"}),
                &attrs.to_string(),
            ),
        ),
        (
            "a plaintext that is not JSON",
            minter.seal(
                &key,
                json!({"alg": "dir", "enc": "A256CBC-HS512"}),
                "Sam Carter",
            ),
        ),
        ("not a JWE", "eyJhbGciOiJub25lIn0.e30.".to_string()),
    ];
    for (what, value) in &cases {
        let r = check_cookie(&tg, "/", &format!("IG={value}"));
        assert_eq!(
            (r.status, r.error().as_str()),
            (401, "bad_session"),
            "{what}: {}",
            r.body_text()
        );
        assert!(
            r.header("www-authenticate")
                .is_some_and(|c| c.contains("error=\"invalid_token\"")),
            "{what}"
        );
    }
    // A session beside another credential is two credentials.
    let token = mint::sign(
        jsonwebtoken::Algorithm::RS256,
        "rsa-1",
        Some("rsa-1"),
        &mint::claims(),
    );
    let bearer = format!("Bearer {token}");
    for headers in [
        vec![
            ("cookie", good.as_str()),
            ("authorization", bearer.as_str()),
        ],
        vec![(
            "cookie",
            &*format!("{good}; pg-session={}", cookie(&mut minter, &key, &pg)),
        )],
    ] {
        let r = tg.check("GET", "/", &headers);
        assert_eq!((r.status, r.error()), (400, "invalid_request".to_string()));
    }

    // The session key in the inventory and the metrics.
    let keys = tg.keys();
    let entry = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["issuer"] == "ig")
        .expect("the session key in /keys")
        .clone();
    assert_eq!(entry["key"], "symmetric-key");
    assert_eq!(entry["use"], "enc");
    assert_eq!(entry["state"], "active");
    assert!(entry["validations"].as_u64() >= Some(3), "{entry}");
    let m = tg.metrics();
    assert!(
        m.value(
            "tokengate_key_decryptions_total",
            &[
                ("issuer", "ig"),
                ("key", "symmetric-key"),
                ("match", "fallback"),
                ("result", "bad_decryption")
            ]
        ) >= Some(1.0)
    );
    assert!(
        m.value(
            "tokengate_decisions_total",
            &[
                ("issuer", "ig"),
                ("listener", "authz_http"),
                ("reason", "bad_session")
            ]
        ) >= Some(1.0)
    );
    assert!(!tg.logs().contains(key["k"].as_str().expect("k")));

    // `tokengate verify --cookie` decrypts the session and names its key.
    let cfg = tg.config.to_string_lossy().into_owned();
    let value = cookie(&mut minter, &key, &attrs);
    let mut cmd = std::process::Command::new(crate::support::bin());
    let out = cmd
        .args(["verify", "--config", &cfg, "--cookie", "IG", &value])
        .env("KEYSTORE_SECRET_ID", STOREPASS_B64)
        .output()
        .expect("tokengate verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("session: ig"), "{text}");
    assert!(
        text.contains("decrypted by: symmetric-key (source keystore, matched by fallback)"),
        "{text}"
    );
}

/// One request of the drill's traffic, as it was answered.
#[derive(Debug, Clone)]
struct Sent {
    phase: usize,
    key: &'static str,
    instance: usize,
    status: u16,
}

/// The seed's drill (reference 000, "Rotate keys in a shared JWT session"): three
/// instances share one keystore; sessions are made under `symmetric-key`; then
/// `symmetric-key-new` is made in the same keystore with the seed's keytool command,
/// added after the old alias, moved first (the producer encrypts with it from then on),
/// and the old alias is removed and its key deleted — with traffic to all three
/// instances throughout. Not one valid session is refused while the old alias is
/// listed; old-key sessions are refused everywhere once it is removed; the per-key
/// decryption counts show the move.
#[test]
fn three_instances_share_sessions_through_a_key_rotation() {
    const STORE: &str = "jwtsessionkeystore.pkcs12";
    let dir = TempDir::new("session-drill");
    let mut minter = Minter::start();
    keytool_genseckey(&dir, STORE, "symmetric-key", STOREPASS);
    let old_key = secret(&mut minter, &dir, STORE, "symmetric-key");

    let config = |aliases: &[&str]| {
        json!({
            "listeners": {"authz_http": "127.0.0.1:0", "admin": "127.0.0.1:0", "authz_grpc": null},
            "issuers": [fixture_issuer()],
            "sessions": [{"name": "ig", "cookie": "IG",
                          "key_sources": [keystore_source(&dir, STORE, aliases)]}],
            "reload": {"scan_interval": "200ms"}
        })
    };
    let env = [("KEYSTORE_SECRET_ID", STOREPASS_B64)];
    let instances: Vec<Tokengate> = (1..=3)
        .map(|i| {
            let path = dir.write(
                &format!("instance{i}.json"),
                config(&["symmetric-key"]).to_string(),
            );
            let tg = Tokengate::spawn_env(path, &[], &env);
            tg.wait_ready();
            tg
        })
        .collect();
    let instances = Arc::new(instances);

    // Traffic: a fresh session under the producer's key every round, plus one session
    // made under the old key at the start, each sent to the three instances in turn.
    let phase = Arc::new(AtomicUsize::new(0));
    let producer: Arc<Mutex<(&'static str, Value)>> =
        Arc::new(Mutex::new(("symmetric-key", old_key.clone())));
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    let t = now();
    let attrs = json!({"sub": "Sam Carter", "iat": t, "exp": t + 3600});
    let first_old = cookie(&mut minter, &old_key, &attrs);
    let traffic = {
        let first_old = first_old.clone();
        let (instances, phase, producer, stop, sent) = (
            instances.clone(),
            phase.clone(),
            producer.clone(),
            stop.clone(),
            sent.clone(),
        );
        std::thread::spawn(move || {
            let mut round = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (name, key) = producer.lock().expect("producer").clone();
                let fresh = cookie(&mut minter, &key, &attrs);
                for (label, value) in [(name, &fresh), ("symmetric-key", &first_old)] {
                    let instance = round % 3;
                    round += 1;
                    let p = phase.load(Ordering::SeqCst);
                    let r = check_cookie(&instances[instance], "/", &format!("IG={value}"));
                    sent.lock().expect("sent").push(Sent {
                        phase: p,
                        key: label,
                        instance,
                        status: r.status,
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let aliases_of = |tg: &Tokengate| -> Vec<String> {
        tg.keys()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter(|k| k["issuer"] == "ig" && k["state"] != "retired")
            .filter_map(|k| k["key"].as_str().map(str::to_string))
            .collect()
    };
    let decryptions = |tg: &Tokengate, key: &str| {
        tg.metrics().sum(
            "tokengate_key_decryptions_total",
            &[("issuer", "ig"), ("key", key), ("result", "ok")],
        )
    };
    // Moves the drill to `next` once every instance lists exactly `aliases`, active
    // first; phases are odd while instances are still moving.
    let step = |next: usize, aliases: &[&str]| {
        phase.store(next - 1, Ordering::SeqCst);
        for i in 0..instances.len() {
            std::fs::write(
                dir.path(&format!("instance{}.json", i + 1)),
                config(aliases).to_string(),
            )
            .expect("config");
        }
        for tg in instances.iter() {
            tg.wait_for(
                || aliases_of(tg) == aliases,
                &format!("aliases {aliases:?}"),
            );
        }
        std::thread::sleep(Duration::from_millis(400));
        phase.store(next, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(600));
    };
    let rounds = |p: usize| {
        sent.lock()
            .expect("sent")
            .iter()
            .filter(|s| s.phase == p)
            .count()
    };

    // 1. The existing key: every instance reads every session.
    std::thread::sleep(Duration::from_millis(600));
    assert!(rounds(0) >= 6, "traffic runs");

    // 2. Commission the new key: the seed's command, in the same keystore, then its
    //    alias after the old one.
    sh(
        &dir,
        &format!(
            "keytool -genseckey -alias symmetric-key-new -keystore {STORE} -storepass {STOREPASS} \
             -storetype PKCS12 -keyalg HmacSHA512 -keysize 512"
        ),
    );
    let listed = sh(
        &dir,
        &format!("keytool -list -keystore {STORE} -storepass {STOREPASS} -storetype PKCS12"),
    );
    assert!(
        listed.contains("2 entries") && listed.contains("symmetric-key-new"),
        "{listed}"
    );
    let new_key = secret(&mut Minter::start(), &dir, STORE, "symmetric-key-new");
    step(2, &["symmetric-key", "symmetric-key-new"]);

    // 3. Make it active: the producer encrypts with it from the moment the configs change.
    *producer.lock().expect("producer") = ("symmetric-key-new", new_key);
    step(4, &["symmetric-key-new", "symmetric-key"]);
    let before: Vec<f64> = instances
        .iter()
        .map(|tg| decryptions(tg, "symmetric-key-new"))
        .collect();
    assert!(
        before.iter().all(|n| *n >= 1.0),
        "every instance decrypts new sessions: {before:?}"
    );

    // 4. Deprovision the old key: its alias out of the mapping, then the key out of the
    //    keystore.
    step(6, &["symmetric-key-new"]);
    sh(
        &dir,
        &format!(
            "keytool -delete -alias symmetric-key -keystore {STORE} -storepass {STOREPASS} -storetype PKCS12"
        ),
    );
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    traffic.join().expect("traffic");

    let sent = sent.lock().expect("sent").clone();
    // While the old alias is listed (phases 0-4), not one session is refused; while it
    // is being removed (phase 5), no new-key session.
    let refused: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.phase <= 4 || (s.phase == 5 && s.key == "symmetric-key-new"))
        .filter(|s| s.status != 200)
        .collect();
    assert!(
        refused.is_empty(),
        "refused while the old alias was listed: {refused:?}"
    );
    for p in [0, 2, 4] {
        assert!(rounds(p) >= 6, "traffic in phase {p}");
    }
    // Once it is gone, old-key sessions are refused by all three; new ones pass.
    let after: Vec<&Sent> = sent.iter().filter(|s| s.phase == 6).collect();
    for instance in 0..3 {
        let old: Vec<u16> = after
            .iter()
            .filter(|s| s.instance == instance && s.key == "symmetric-key")
            .map(|s| s.status)
            .collect();
        assert!(
            !old.is_empty() && old.iter().all(|s| *s == 401),
            "instance {instance}: {old:?}"
        );
    }
    assert!(
        after
            .iter()
            .filter(|s| s.key == "symmetric-key-new")
            .all(|s| s.status == 200),
        "new sessions after the removal: {after:?}"
    );
    // The counts show the move: the old key decrypted until it was removed, the new key
    // takes over on every instance.
    for tg in instances.iter() {
        assert!(decryptions(tg, "symmetric-key") >= 1.0);
        assert!(decryptions(tg, "symmetric-key-new") > 1.0);
        let r = check_cookie(tg, "/", &format!("IG={first_old}"));
        assert_eq!((r.status, r.error()), (401, "bad_session".to_string()));
    }
}
