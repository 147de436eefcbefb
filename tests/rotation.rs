//! Key rotation without restart, against the running binary (GitHub issue 3, local key
//! sources). Every drill runs request traffic throughout (a fresh token every few ms,
//! signed with whatever key the "issuer" currently signs with) and asserts that not one
//! valid request was denied and that the process never restarted.
//!
//! Which keystores are made live and which are fixtures: the two keystore drills are the
//! operator's runbook, so they run the real `openssl` and `keytool` (Java 17) commands of
//! PingGateway's rotation guide at test time, and store HMAC secrets whose bytes the test
//! must know with a 20-line Java program using the same `KeyStore` API keytool uses
//! (`crate::support::keystore`). Every other test here copies a committed keystore of
//! `tests/fixtures/keystores/` into its TempDir: those were made once by the same tools
//! (`make.sh` there says which command made which file), and these tests are about
//! tokengate's reloads, not about the tools.
//!
//! - Drill (a), signed access tokens (live): a trusted certificate `verification-key`,
//!   then `verification-key-new` imported (Secret-style swap: new file renamed over the
//!   old), added after the old alias, moved first, the old alias removed, `keytool -delete`.
//! - Drill (b), shared symmetric key (live): HS512 over `symmetric-key` →
//!   `symmetric-key-new`, then a `keytool -genseckey` key loads as `oct` for the next
//!   rotation.
//! - Drill (c), a `jwks_file`: publish the new kid, sign with it, withdraw the old one
//!   (the JWKS fixtures of `tests/fixtures`).
//! - Revocation by config kid and by `revoked.file` thumbprint beats the token cache (the
//!   JWKS fixtures).
//! - A bad reload (garbage keystore, wrong password, no alias of the mapping) keeps the last good
//!   keys, is counted, and is logged without the password (fixture
//!   `ig-keystore-signature-key.p12`).
//! - A mapping ahead of its keystore (ConfigMap before Secret, and a restart in between):
//!   the new alias is `missing`, the old one serves, and the new one is picked up once the
//!   keystore has it (fixtures `ig-keystore-verification-key.p12`, then
//!   `ig-keystore-verification-key-and-new.p12` renamed over it).
//! - `certificate_validity`: `iat`, `now`, `off` against a certificate valid in the past,
//!   2020-01-01 to 2020-02-01 (fixture `ig-keystore-validity.p12`).

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::keystore::{
    copy_fixture, fixture, keytool_delete, keytool_genseckey, keytool_import_cert, keytool_list,
    openssl_req, prepare_put_secret, put_secret, swap_keystore,
};
use crate::support::{ANY_PORT, TempDir, Tokengate, fixtures, http, mint};

/// The issuer of every token here (PingAM's OAuth2 realm, as in the guide).
const ISS: &str = "https://am.example.com/oauth2";
/// `reload.scan_interval` of every test.
const SCAN: &str = "200ms";

// ---------------------------------------------------------------------------------------
// Key bytes: the drills' random HMAC secrets, RSA private keys to sign with (the drills'
// own, or a fixture's).

/// 64 random bytes (an HmacSHA512 key).
fn random_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes
}

/// The encoding key of an RSA private key PEM file (a drill's `dir.path(..)` or a
/// keystore fixture's `fixture(..)`).
fn rsa_key(file: &Path) -> EncodingKey {
    let pem = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    EncodingKey::from_rsa_pem(&pem).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

// ---------------------------------------------------------------------------------------
// Tokens.

/// A key the "issuer" signs with, and the kid it puts in its tokens.
#[derive(Clone)]
struct Signer {
    /// What the test calls it (traffic is counted per signer).
    name: &'static str,
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer {
    fn new(name: &'static str, kid: &str, alg: Algorithm, key: EncodingKey) -> Self {
        Self {
            name,
            kid: kid.to_string(),
            alg,
            key,
        }
    }

    /// A fresh token (unique `jti`, so never answered from the cache): `iat` now, `exp`
    /// in 10 minutes; with or without the kid (without: tokengate tries the keys).
    fn token(&self, with_kid: bool) -> String {
        self.token_with(with_kid, json!({}))
    }

    /// A fresh token with some claims overridden.
    fn token_with(&self, with_kid: bool, overrides: Value) -> String {
        static JTI: AtomicU64 = AtomicU64::new(0);
        let now = mint::now();
        let mut claims = json!({
            "iss": ISS, "aud": "orders-api", "sub": "demo", "scope": "myscope",
            "iat": now, "exp": now + 600,
            "jti": format!("rotation-{}", JTI.fetch_add(1, Ordering::Relaxed)),
        });
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                c.insert(k.clone(), v.clone());
            }
        }
        let mut header = json!({"alg": format!("{:?}", self.alg), "typ": "at+jwt"});
        if with_kid {
            header["kid"] = json!(self.kid);
        }
        mint::sign_raw(&header, &claims, self.alg, &self.key)
    }
}

/// The `error` of a denial's JSON body.
fn reason(r: &http::Response) -> String {
    match r.error() {
        e if e.is_empty() => format!("<no JSON reason: {}>", r.body_text()),
        e => e,
    }
}

fn assert_allowed(tg: &Tokengate, token: &str, what: &str) {
    let r = tg.check_token("/orders", token);
    assert_eq!(
        r.status,
        200,
        "{what}: expected 200, got {} ({})",
        r.status,
        r.body_text()
    );
}

fn assert_denied(tg: &Tokengate, token: &str, want: &str, what: &str) {
    let r = tg.check_token("/orders", token);
    assert_eq!(
        r.status,
        401,
        "{what}: expected 401 {want}, got {} ({})",
        r.status,
        r.body_text()
    );
    assert_eq!(reason(&r), want, "{what}: deny reason");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.contains("error=\"invalid_token\"")),
        "{what}: {:?}",
        r.header("www-authenticate")
    );
}

// ---------------------------------------------------------------------------------------
// Traffic.

#[derive(Debug, Default)]
struct TrafficStats {
    total: u64,
    failed: u64,
    /// The first failures, for the assertion message.
    samples: Vec<String>,
    /// Successful requests per signer name.
    served: HashMap<&'static str, u64>,
}

/// A thread sending a check every few ms with a fresh token from the current signer,
/// alternating tokens with and without kid.
struct Traffic {
    signer: Arc<Mutex<Signer>>,
    stats: Arc<Mutex<TrafficStats>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Traffic {
    fn start(authz: SocketAddr, signer: Signer) -> Traffic {
        let signer = Arc::new(Mutex::new(signer));
        let stats = Arc::new(Mutex::new(TrafficStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (signer, stats, stop) = (signer.clone(), stats.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let s = lock(&signer).clone();
                    let auth = format!("Bearer {}", s.token(n.is_multiple_of(2)));
                    let r =
                        http::request(authz, "GET", "/orders", &[("authorization", &auth)], b"");
                    let mut st = lock(&stats);
                    st.total += 1;
                    match r {
                        Some(r) if r.status == 200 => *st.served.entry(s.name).or_default() += 1,
                        other => {
                            st.failed += 1;
                            if st.samples.len() < 5 {
                                let what = other.map_or("no answer".into(), |r| {
                                    format!("{} {}", r.status, r.body_text())
                                });
                                st.samples
                                    .push(format!("request {n} signed by {}: {what}", s.name));
                            }
                        }
                    }
                    drop(st);
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
        };
        Traffic {
            signer,
            stats,
            stop,
            handle: Some(handle),
        }
    }

    /// The issuer starts signing with `signer`.
    fn switch(&self, signer: Signer) {
        *lock(&self.signer) = signer;
    }

    fn served(&self, name: &str) -> u64 {
        lock(&self.stats).served.get(name).copied().unwrap_or(0)
    }

    /// Waits until `n` more requests signed by `name` were allowed (also proves that no
    /// request signed by an earlier signer is still in flight).
    fn wait_served(&self, tg: &Tokengate, name: &str, n: u64) {
        let target = self.served(name) + n;
        tg.wait_for(
            || self.served(name) >= target,
            &format!("{n} more allowed requests signed by {name}"),
        );
    }

    fn finish(mut self) -> TrafficStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join()
                .unwrap_or_else(|_| panic!("traffic thread panicked"));
        }
        std::mem::take(&mut *lock(&self.stats))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn assert_no_valid_request_denied(stats: &TrafficStats, tg: &Tokengate) {
    eprintln!(
        "traffic: {} requests, allowed per signer {:?}",
        stats.total, stats.served
    );
    assert_eq!(
        stats.failed,
        0,
        "valid requests were denied during the rotation ({} of {}): {:#?}\nlog:\n{}",
        stats.failed,
        stats.total,
        stats.samples,
        tg.logs()
    );
    assert!(
        stats.total > 100,
        "too little traffic to prove anything: {stats:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The running process: config, reloads, metrics, /keys.

/// `tokengate rotation plan --config <tg's config> --candidate <dir>/candidate.json
/// --admin <tg> --window <window> [extra]`: (exit code, stdout, stderr).
fn run_plan(tg: &Tokengate, dir: &TempDir, window: &str, extra: &[&str]) -> (i32, String, String) {
    let (config, next) = (
        tg.config.to_string_lossy().into_owned(),
        dir.path("candidate.json").to_string_lossy().into_owned(),
    );
    let admin = format!("http://{}", tg.admin);
    let mut args = vec![
        "rotation",
        "plan",
        "--config",
        &config,
        "--candidate",
        &next,
        "--admin",
        &admin,
        "--window",
        window,
    ];
    args.extend_from_slice(extra);
    crate::support::run(&args, None)
}

/// [`run_plan`] of `candidate` with `--json`: the exit code and the plan.
fn rotation_plan(tg: &Tokengate, dir: &TempDir, candidate: &Value, window: &str) -> (i32, Value) {
    dir.write("candidate.json", candidate.to_string());
    let (code, out, err) = run_plan(tg, dir, window, &["--json"]);
    let doc = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!("rotation plan printed no JSON ({e}), exit {code}:\n{out}\n{err}")
    });
    (code, doc)
}

/// The table `rotation plan` prints for the candidate last written by [`rotation_plan`].
fn rotation_plan_table(tg: &Tokengate, dir: &TempDir, window: &str) -> String {
    let (_, out, err) = run_plan(tg, dir, window, &[]);
    format!("{out}{err}")
}

/// The verdict of `key` in a plan (`?` when it has none).
fn verdict(plan: &Value, key: &str) -> String {
    plan["keys"]
        .as_array()
        .and_then(|l| l.iter().find(|k| k["key"] == key))
        .and_then(|k| k["verdict"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// `authz_http` and `admin` on loopback ports the kernel picks (read back by `Tokengate`).
fn listeners() -> Value {
    json!({"authz_http": ANY_PORT, "admin": ANY_PORT, "authz_grpc": null})
}

/// An issuer over one key source.
fn issuer(algorithms: &[&str], source: Value) -> Value {
    json!({
        "name": "am", "issuer": ISS, "audiences": ["orders-api"], "algorithms": algorithms,
        "key_sources": [source]
    })
}

/// How a reload is triggered.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// Wait for the `reload.scan_interval` scan.
    Scan,
    /// `POST /refresh` on the admin listener.
    Refresh,
    /// `kill -HUP`.
    Sighup,
}

fn trigger(tg: &Tokengate, how: Trigger) {
    match how {
        Trigger::Scan => {}
        Trigger::Refresh => {
            // Synchronous: when it answers, every source has been read; 200 means none
            // failed.
            let r = http::request(tg.admin, "POST", "/refresh", &[], b"")
                .expect("POST /refresh did not answer");
            assert_eq!(r.status, 200, "POST /refresh: {}", r.body_text());
        }
        Trigger::Sighup => tg.signal("HUP"),
    }
}

fn config_reloads(tg: &Tokengate, result: &str) -> f64 {
    tg.metrics()
        .sum("tokengate_config_reloads_total", &[("result", result)])
}

fn source_reloads(tg: &Tokengate, source: &str, result: &str) -> f64 {
    tg.metrics().sum(
        "tokengate_key_source_reloads_total",
        &[("issuer", "am"), ("source", source), ("result", result)],
    )
}

/// Writes a new config (atomically) and waits until tokengate counts it as applied.
fn reconfigure(tg: &Tokengate, dir: &TempDir, config: &Value, how: Trigger) {
    let before = config_reloads(tg, "ok");
    dir.write("config.json", config.to_string());
    trigger(tg, how);
    tg.wait_for(
        || config_reloads(tg, "ok") > before,
        &format!("the config reload ({how:?})"),
    );
}

/// Waits until a counter exceeds `before`.
fn wait_above(tg: &Tokengate, what: &str, before: f64, value: impl Fn() -> f64) {
    tg.wait_for(|| value() > before, what);
}

/// The `/keys` entries named `key`.
fn key_entries(tg: &Tokengate, key: &str) -> Vec<Value> {
    tg.keys()["keys"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["key"] == key).cloned().collect())
        .unwrap_or_default()
}

/// The one `/keys` entry named `key`.
fn key_entry(tg: &Tokengate, key: &str) -> Value {
    let mut list = key_entries(tg, key);
    assert_eq!(
        list.len(),
        1,
        "expected one /keys entry for {key}: {:#}",
        tg.keys()
    );
    list.remove(0)
}

fn wait_state(tg: &Tokengate, key: &str, state: &str) {
    tg.wait_for(
        || key_entries(tg, key).iter().any(|e| e["state"] == state),
        &format!("{key} to be {state} in /keys"),
    );
}

fn assert_states(tg: &Tokengate, want: &[(&str, &str)]) {
    for (key, state) in want {
        let e = key_entry(tg, key);
        assert_eq!(e["state"], *state, "{key} in /keys: {e:#}");
    }
}

/// The process start time (field 22 of /proc/PID/stat): the same value at the end of a
/// drill means the same process served it all.
fn process_start(tg: &Tokengate) -> String {
    let pid = tg.child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name
        .split_whitespace()
        .nth(19)
        .unwrap_or_default()
        .to_string()
}

fn assert_same_process(tg: &mut Tokengate, started: &str) {
    assert!(
        matches!(tg.child.try_wait(), Ok(None)),
        "tokengate exited during the drill; log:\n{}",
        tg.logs()
    );
    assert_eq!(process_start(tg), started, "tokengate was restarted");
}

// ---------------------------------------------------------------------------------------
// 1. Drill (a): stateless access tokens verified with a keystore (PingGateway's
//    "Rotate keys for stateless access tokens signed with a KeyStoreSecretStore").

#[test]
fn drill_signed_access_tokens_keystore_rotation_without_restart() {
    const PW: &str = "Ig-Keyst0re-Pa55word";
    let dir = TempDir::new("rotation-ksss");
    openssl_req(&dir, "signature-key.key", "x509certificate.pem");
    keytool_import_cert(
        &dir,
        "IG_keystore.p12",
        "verification-key",
        "x509certificate.pem",
        PW,
    );
    keytool_list(&dir, "IG_keystore.p12", PW, &["verification-key"]);
    dir.write("keystore.pass", format!("{PW}\n"));

    let config = |aliases: &[&str]| {
        json!({
            "listeners": listeners(),
            "issuers": [issuer(&["RS256"], json!({
                "keystore": dir.path("IG_keystore.p12").to_string_lossy(), "store_type": "PKCS12",
                "password_file": dir.path("keystore.pass").to_string_lossy(),
                "password_encoding": "plain", "aliases": aliases
            }))],
            "reload": {"scan_interval": SCAN}
        })
    };
    let mut tg = Tokengate::start(&dir, config(&["verification-key"]));
    tg.wait_ready();
    let started = process_start(&tg);
    let ok_before = config_reloads(&tg, "ok");
    let old = Signer::new(
        "old",
        "verification-key",
        Algorithm::RS256,
        rsa_key(&dir.path("signature-key.key")),
    );
    let first = key_entry(&tg, "verification-key");
    assert_eq!(
        (first["state"].as_str(), first["kty"].as_str()),
        (Some("active"), Some("RSA")),
        "{first:#}"
    );
    assert!(
        first["not_after"].is_string(),
        "a certificate's validity is shown: {first:#}"
    );

    let traffic = Traffic::start(tg.authz, old.clone());
    traffic.wait_served(&tg, "old", 20);

    // 1.1 New key pair and certificate; 3.2 import the certificate as verification-key-new.
    // Here the keystore is replaced the way a Kubernetes Secret update does it: a new
    // file renamed over the old one.
    openssl_req(&dir, "signature-key-new.key", "x509certificate-new.pem");
    let new = Signer::new(
        "new",
        "verification-key-new",
        Algorithm::RS256,
        rsa_key(&dir.path("signature-key-new.key")),
    );
    let reloads = source_reloads(&tg, "keystore", "ok");
    swap_keystore(&dir, "IG_keystore.p12", |next| {
        keytool_import_cert(
            &dir,
            next,
            "verification-key-new",
            "x509certificate-new.pem",
            PW,
        );
        keytool_list(
            &dir,
            next,
            PW,
            &["verification-key", "verification-key-new"],
        );
    });
    wait_above(&tg, "the keystore reload", reloads, || {
        source_reloads(&tg, "keystore", "ok")
    });
    // Not mapped yet: the new certificate is in the file, not in use.
    assert!(
        key_entries(&tg, "verification-key-new").is_empty(),
        "{:#}",
        tg.keys()
    );
    assert_denied(
        &tg,
        &new.token(true),
        "bad_signature",
        "a new-key token before the mapping names it",
    );

    // Before each step, the plan: adding the new alias loses nothing.
    let (code, doc) = rotation_plan(
        &tg,
        &dir,
        &config(&["verification-key", "verification-key-new"]),
        "1h",
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(verdict(&doc, "verification-key"), "kept", "{doc:#}");
    assert_eq!(verdict(&doc, "verification-key-new"), "added", "{doc:#}");
    // Removing the old alias now would refuse the tokens that still flow.
    let (code, doc) = rotation_plan(&tg, &dir, &config(&["verification-key-new"]), "1h");
    assert_eq!(code, 1, "{doc:#}");
    eprintln!(
        "rotation plan before removing the old alias, as printed:\n{}",
        rotation_plan_table(&tg, &dir, "1h")
    );
    assert_eq!(
        verdict(&doc, "verification-key"),
        "retire-in-use",
        "{doc:#}"
    );
    assert!(
        doc["tokens_refused"].as_f64().is_some_and(|n| n > 0.0),
        "{doc:#}"
    );

    // 3.4 Mapping: old first (active), new after it (valid). No restart.
    reconfigure(
        &tg,
        &dir,
        &config(&["verification-key", "verification-key-new"]),
        Trigger::Scan,
    );
    assert_states(
        &tg,
        &[
            ("verification-key", "active"),
            ("verification-key-new", "valid"),
        ],
    );
    for with_kid in [true, false] {
        assert_allowed(
            &tg,
            &old.token(with_kid),
            &format!("old key, kid {with_kid}"),
        );
        assert_allowed(
            &tg,
            &new.token(with_kid),
            &format!("new key, kid {with_kid}"),
        );
    }

    // 2.2.3 The issuer signs with the new key from now on.
    traffic.switch(new.clone());
    traffic.wait_served(&tg, "new", 20);

    // PingGateway side: move the new alias first (it becomes the active key). The plan:
    // both keys stay.
    let (code, doc) = rotation_plan(
        &tg,
        &dir,
        &config(&["verification-key-new", "verification-key"]),
        "1h",
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(verdict(&doc, "verification-key"), "kept", "{doc:#}");
    assert_eq!(verdict(&doc, "verification-key-new"), "kept", "{doc:#}");
    reconfigure(
        &tg,
        &dir,
        &config(&["verification-key-new", "verification-key"]),
        Trigger::Refresh,
    );
    assert_states(
        &tg,
        &[
            ("verification-key-new", "active"),
            ("verification-key", "valid"),
        ],
    );
    traffic.wait_served(&tg, "new", 20);

    // The old key is no longer used: its count stops moving. This is what an operator
    // watches before deprovisioning it.
    let seen = key_entry(&tg, "verification-key");
    assert!(
        seen["validations"].as_u64().is_some_and(|v| v > 0),
        "{seen:#}"
    );
    assert!(seen["last_used"].is_string(), "{seen:#}");
    traffic.wait_served(&tg, "new", 10);
    assert_eq!(
        key_entry(&tg, "verification-key")["validations"],
        seen["validations"]
    );
    // The plan agrees once the old key has verified nothing for a whole window (2 s
    // here, so the test need not wait an hour): retire-safe, exit 0.
    let candidate = config(&["verification-key-new"]);
    tg.wait_for(
        || rotation_plan(&tg, &dir, &candidate, "2s").0 == 0,
        "the plan to call the old key retire-safe",
    );
    let (_, doc) = rotation_plan(&tg, &dir, &candidate, "2s");
    assert_eq!(verdict(&doc, "verification-key"), "retire-safe", "{doc:#}");
    assert_eq!(verdict(&doc, "verification-key-new"), "kept", "{doc:#}");
    assert_eq!(doc["tokens_refused"], 0.0, "{doc:#}");

    // Deprovision: remove the old alias from the mapping (SIGHUP this time).
    reconfigure(
        &tg,
        &dir,
        &config(&["verification-key-new"]),
        Trigger::Sighup,
    );
    assert_denied(
        &tg,
        &old.token(true),
        "bad_signature",
        "old-key token (kid) after removal",
    );
    assert_denied(
        &tg,
        &old.token(false),
        "bad_signature",
        "old-key token (no kid) after removal",
    );
    let retired = key_entry(&tg, "verification-key");
    assert_eq!(retired["state"], "retired", "{retired:#}");
    assert_eq!(
        retired["validations"], seen["validations"],
        "validations preserved: {retired:#}"
    );
    assert_eq!(
        retired["last_used"], seen["last_used"],
        "last_used preserved: {retired:#}"
    );
    assert_eq!(
        retired["first_seen"], first["first_seen"],
        "first_seen preserved: {retired:#}"
    );
    assert_eq!(retired["thumbprint"], first["thumbprint"], "{retired:#}");
    assert!(retired["retired_at"].is_string(), "{retired:#}");
    assert_states(&tg, &[("verification-key-new", "active")]);

    // Then delete it from the keystore, in place this time.
    let reloads = source_reloads(&tg, "keystore", "ok");
    keytool_delete(&dir, "IG_keystore.p12", "verification-key", PW);
    keytool_list(&dir, "IG_keystore.p12", PW, &["verification-key-new"]);
    wait_above(
        &tg,
        "the keystore reload after keytool -delete",
        reloads,
        || source_reloads(&tg, "keystore", "ok"),
    );
    traffic.wait_served(&tg, "new", 20);
    assert_states(
        &tg,
        &[
            ("verification-key-new", "active"),
            ("verification-key", "retired"),
        ],
    );

    let stats = traffic.finish();
    assert_no_valid_request_denied(&stats, &tg);
    assert!(
        config_reloads(&tg, "ok") >= ok_before + 3.0,
        "three mapping changes were applied as config reloads"
    );
    let now = key_entry(&tg, "verification-key-new");
    assert!(
        now["validations"]
            .as_u64()
            .is_some_and(|v| v >= stats.served["new"]),
        "{now:#}"
    );
    assert_same_process(&mut tg, &started);
    assert!(!tg.logs().contains(PW), "the keystore password was logged");
}

// ---------------------------------------------------------------------------------------
// 2. Drill (b): a shared HS512 key in a keystore (PingGateway's "Rotate keys in a shared
//    JWT session").

#[test]
fn drill_shared_symmetric_key_rotation_without_restart() {
    const PW: &str = "Sym-St0re-Pa55word";
    let dir = TempDir::new("rotation-hmac");
    prepare_put_secret(&dir);
    let (old_secret, new_secret) = (random_secret(), random_secret());
    let store = "jwtsessionkeystore.pkcs12";
    put_secret(&dir, store, PW, "symmetric-key", &old_secret);
    keytool_list(&dir, store, PW, &["symmetric-key"]);
    // The password in PingGateway's SystemAndEnvSecretStore format: base64.
    dir.write("keystore.b64", STANDARD.encode(PW));

    let config = |aliases: &[&str]| {
        json!({
            "listeners": listeners(),
            "issuers": [issuer(&["HS512"], json!({
                "keystore": dir.path(store).to_string_lossy(), "store_type": "PKCS12",
                "password_file": dir.path("keystore.b64").to_string_lossy(),
                "password_encoding": "base64", "aliases": aliases
            }))],
            "reload": {"scan_interval": SCAN}
        })
    };
    let mut tg = Tokengate::start(&dir, config(&["symmetric-key"]));
    tg.wait_ready();
    let started = process_start(&tg);
    let e = key_entry(&tg, "symmetric-key");
    assert_eq!(
        (e["kty"].as_str(), e["state"].as_str()),
        (Some("oct"), Some("active")),
        "{e:#}"
    );
    assert!(
        e["not_after"].is_null(),
        "a secret key has no validity: {e:#}"
    );
    let old = Signer::new(
        "old",
        "symmetric-key",
        Algorithm::HS512,
        EncodingKey::from_secret(&old_secret),
    );
    let new = Signer::new(
        "new",
        "symmetric-key-new",
        Algorithm::HS512,
        EncodingKey::from_secret(&new_secret),
    );
    let traffic = Traffic::start(tg.authz, old.clone());
    traffic.wait_served(&tg, "old", 20);

    // 2.1 Commission symmetric-key-new in the existing keystore, in place.
    let reloads = source_reloads(&tg, "keystore", "ok");
    put_secret(&dir, store, PW, "symmetric-key-new", &new_secret);
    keytool_list(&dir, store, PW, &["symmetric-key", "symmetric-key-new"]);
    wait_above(&tg, "the keystore reload", reloads, || {
        source_reloads(&tg, "keystore", "ok")
    });

    // The plan first: adding the new alias loses nothing.
    let (code, doc) = rotation_plan(
        &tg,
        &dir,
        &config(&["symmetric-key", "symmetric-key-new"]),
        "1h",
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(verdict(&doc, "symmetric-key"), "kept", "{doc:#}");
    assert_eq!(verdict(&doc, "symmetric-key-new"), "added", "{doc:#}");

    // 2.3 Mapping ["symmetric-key", "symmetric-key-new"]: both validate.
    reconfigure(
        &tg,
        &dir,
        &config(&["symmetric-key", "symmetric-key-new"]),
        Trigger::Scan,
    );
    assert_states(
        &tg,
        &[("symmetric-key", "active"), ("symmetric-key-new", "valid")],
    );
    assert_eq!(key_entry(&tg, "symmetric-key-new")["kty"], "oct");
    for with_kid in [true, false] {
        assert_allowed(
            &tg,
            &old.token(with_kid),
            &format!("old secret, kid {with_kid}"),
        );
        assert_allowed(
            &tg,
            &new.token(with_kid),
            &format!("new secret, kid {with_kid}"),
        );
    }

    // The plan while old-key tokens flow: dropping the old alias would refuse them.
    let only_new = config(&["symmetric-key-new"]);
    let (code, doc) = rotation_plan(&tg, &dir, &only_new, "1h");
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(verdict(&doc, "symmetric-key"), "retire-in-use", "{doc:#}");

    // 3. The new key becomes active; the signer switches to it. The plan: both stay.
    let (code, doc) = rotation_plan(
        &tg,
        &dir,
        &config(&["symmetric-key-new", "symmetric-key"]),
        "1h",
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(verdict(&doc, "symmetric-key"), "kept", "{doc:#}");
    assert_eq!(verdict(&doc, "symmetric-key-new"), "kept", "{doc:#}");
    reconfigure(
        &tg,
        &dir,
        &config(&["symmetric-key-new", "symmetric-key"]),
        Trigger::Refresh,
    );
    assert_states(
        &tg,
        &[("symmetric-key-new", "active"), ("symmetric-key", "valid")],
    );
    traffic.switch(new.clone());
    traffic.wait_served(&tg, "new", 30);
    let seen = key_entry(&tg, "symmetric-key");
    // Once the old key has verified nothing for a window (2 s here): retire-safe.
    tg.wait_for(
        || rotation_plan(&tg, &dir, &only_new, "2s").0 == 0,
        "the plan to call the old shared key retire-safe",
    );
    let (_, doc) = rotation_plan(&tg, &dir, &only_new, "2s");
    assert_eq!(verdict(&doc, "symmetric-key"), "retire-safe", "{doc:#}");

    // 4.1 Decommission: the mapping holds only the new key.
    reconfigure(&tg, &dir, &config(&["symmetric-key-new"]), Trigger::Scan);
    assert_denied(
        &tg,
        &old.token(true),
        "bad_signature",
        "old-secret token (kid) after removal",
    );
    assert_denied(
        &tg,
        &old.token(false),
        "bad_signature",
        "old-secret token (no kid) after removal",
    );
    let retired = key_entry(&tg, "symmetric-key");
    assert_eq!(retired["state"], "retired", "{retired:#}");
    assert_eq!(retired["validations"], seen["validations"], "{retired:#}");
    assert_eq!(retired["last_used"], seen["last_used"], "{retired:#}");

    // 4.2 Delete symmetric-key from the keystore (new file renamed over the old).
    let reloads = source_reloads(&tg, "keystore", "ok");
    swap_keystore(&dir, store, |next| {
        keytool_delete(&dir, next, "symmetric-key", PW);
        keytool_list(&dir, next, PW, &["symmetric-key-new"]);
    });
    wait_above(
        &tg,
        "the keystore reload after keytool -delete",
        reloads,
        || source_reloads(&tg, "keystore", "ok"),
    );
    traffic.wait_served(&tg, "new", 20);

    // The next rotation starts with the guide's own command: a keytool-made secret
    // loads as an oct key (its bytes cannot be read back, so a token signed with other
    // bytes is tried against it, by kid, and fails).
    let reloads = source_reloads(&tg, "keystore", "ok");
    keytool_genseckey(&dir, store, "symmetric-key-next", PW);
    wait_above(
        &tg,
        "the keystore reload after keytool -genseckey",
        reloads,
        || source_reloads(&tg, "keystore", "ok"),
    );
    reconfigure(
        &tg,
        &dir,
        &config(&["symmetric-key-new", "symmetric-key-next"]),
        Trigger::Scan,
    );
    let next = key_entry(&tg, "symmetric-key-next");
    assert_eq!(
        (next["kty"].as_str(), next["state"].as_str()),
        (Some("oct"), Some("valid")),
        "{next:#}"
    );
    let guess = Signer::new(
        "guess",
        "symmetric-key-next",
        Algorithm::HS512,
        EncodingKey::from_secret(&random_secret()),
    );
    assert_denied(
        &tg,
        &guess.token(true),
        "bad_signature",
        "a token for the keytool key, other bytes",
    );
    traffic.wait_served(&tg, "new", 20);

    let stats = traffic.finish();
    assert_no_valid_request_denied(&stats, &tg);
    assert_same_process(&mut tg, &started);
    let logs = tg.logs();
    assert!(
        !logs.contains(PW) && !logs.contains(&STANDARD.encode(PW)),
        "the keystore password was logged"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Drill (c): a JWKS file: publish the new kid, sign with it, withdraw the old one.

/// The public JWK of a fixture key, published under `kid`.
fn fixture_jwk(name: &str, kid: &str) -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("jwks-public.json")).expect("jwks-public.json");
    let set: Value = serde_json::from_str(&text).expect("jwks-public.json");
    let mut jwk = set["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no fixture JWK {name}"));
    jwk["kid"] = json!(kid);
    jwk
}

#[test]
fn drill_jwks_file_rotation_without_restart() {
    let dir = TempDir::new("rotation-jwks");
    let (old_jwk, new_jwk) = (
        fixture_jwk("rsa-1", "2025-01"),
        fixture_jwk("rsa-2", "2025-07"),
    );
    dir.write("jwks.json", json!({"keys": [old_jwk]}).to_string());
    let config = json!({
        "listeners": listeners(),
        "issuers": [issuer(&["RS256"], json!({"jwks_file": dir.path("jwks.json").to_string_lossy()}))],
        "reload": {"scan_interval": SCAN}
    });
    let mut tg = Tokengate::start(&dir, config);
    tg.wait_ready();
    let started = process_start(&tg);
    let old = Signer::new("old", "2025-01", Algorithm::RS256, mint::key("rsa-1"));
    let new = Signer::new("new", "2025-07", Algorithm::RS256, mint::key("rsa-2"));
    let traffic = Traffic::start(tg.authz, old.clone());
    traffic.wait_served(&tg, "old", 50);

    // Publish the new key next to the old one, before anything signs with it.
    let reloads = source_reloads(&tg, "jwks_file", "ok");
    dir.write("jwks.json", json!({"keys": [old_jwk, new_jwk]}).to_string());
    wait_above(&tg, "the JWKS file reload", reloads, || {
        source_reloads(&tg, "jwks_file", "ok")
    });
    assert_states(&tg, &[("2025-01", "active"), ("2025-07", "valid")]);
    assert_allowed(&tg, &new.token(true), "new kid, published");
    assert_allowed(&tg, &new.token(false), "new key, no kid");

    // The issuer signs with the new key; for a JWK set "active" is the key of the newest
    // `iat` seen.
    traffic.switch(new.clone());
    traffic.wait_served(&tg, "new", 20);
    wait_state(&tg, "2025-07", "active");

    // The overlap: tokens the old key signed before the switch (an older `iat`) still
    // arrive beside new ones. `tokengate_key_info`'s states hold still across 20 scrapes
    // (no series churn while both keys carry traffic).
    let mut seen_states = BTreeSet::new();
    for i in 0..20 {
        let earlier = json!({"iat": mint::now() - 60 - i});
        assert_allowed(
            &tg,
            &old.token_with(true, earlier),
            "an old-key token in flight",
        );
        assert_allowed(&tg, &new.token(true), "a new-key token");
        let m = tg.metrics();
        let states: Vec<(String, String)> = m
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == "tokengate_key_info" && l.get("issuer").is_some_and(|i| i == "am")
            })
            .map(|(_, l, _)| (l["key"].clone(), l["state"].clone()))
            .collect();
        seen_states.insert(states);
    }
    assert_eq!(
        seen_states.len(),
        1,
        "key_info states changed between scrapes: {seen_states:#?}"
    );
    let states = seen_states.into_iter().next().unwrap_or_default();
    assert!(
        states.contains(&("2025-07".to_string(), "active".to_string()))
            && states.contains(&("2025-01".to_string(), "valid".to_string())),
        "{states:?}"
    );
    let seen = key_entry(&tg, "2025-01");
    assert_eq!(seen["state"], "valid", "{seen:#}");
    traffic.wait_served(&tg, "new", 20);
    assert_eq!(
        key_entry(&tg, "2025-01")["validations"],
        seen["validations"],
        "the old key is no longer used"
    );

    // Withdraw the old kid.
    let reloads = source_reloads(&tg, "jwks_file", "ok");
    dir.write("jwks.json", json!({"keys": [new_jwk]}).to_string());
    wait_above(&tg, "the JWKS file reload", reloads, || {
        source_reloads(&tg, "jwks_file", "ok")
    });
    assert_denied(&tg, &old.token(true), "bad_signature", "withdrawn kid");
    assert_denied(
        &tg,
        &old.token(false),
        "bad_signature",
        "withdrawn key, no kid",
    );
    let retired = key_entry(&tg, "2025-01");
    assert_eq!(retired["state"], "retired", "{retired:#}");
    assert_eq!(retired["validations"], seen["validations"], "{retired:#}");
    assert_eq!(retired["last_used"], seen["last_used"], "{retired:#}");
    traffic.wait_served(&tg, "new", 50);

    let stats = traffic.finish();
    assert_no_valid_request_denied(&stats, &tg);
    assert_same_process(&mut tg, &started);
}

// ---------------------------------------------------------------------------------------
// 4. Revocation: effective on the next request after the reload, cache or not.

#[test]
fn revocation_applies_to_the_next_request_even_for_cached_tokens() {
    let dir = TempDir::new("rotation-revoke");
    dir.write(
        "jwks.json",
        json!({"keys": [fixture_jwk("rsa-1", "k-a"), fixture_jwk("rsa-2", "k-b"), fixture_jwk("ec-p256", "k-c")]})
            .to_string(),
    );
    dir.write(
        "revoked.json",
        json!({"kids": [], "thumbprints": []}).to_string(),
    );
    let config = |kids: &[&str]| {
        json!({
            "listeners": listeners(),
            "issuers": [issuer(&["RS256", "ES256"], json!({"jwks_file": dir.path("jwks.json").to_string_lossy()}))],
            "revoked": {"kids": kids, "file": dir.path("revoked.json").to_string_lossy()},
            "reload": {"scan_interval": SCAN}
        })
    };
    let tg = Tokengate::start(&dir, config(&[]));
    tg.wait_ready();
    let a = Signer::new("a", "k-a", Algorithm::RS256, mint::key("rsa-1"));
    let b = Signer::new("b", "k-b", Algorithm::RS256, mint::key("rsa-2"));
    let c = Signer::new("c", "k-c", Algorithm::ES256, mint::key("ec-p256"));
    let cache_hits = || {
        tg.metrics()
            .sum("tokengate_token_cache_requests_total", &[("result", "hit")])
    };

    // (a) revoked.kids in the config.
    let token_a = a.token(true);
    assert_allowed(&tg, &token_a, "k-a before revocation");
    let hits = cache_hits();
    assert_allowed(&tg, &token_a, "k-a again (cached)");
    assert!(
        cache_hits() > hits,
        "the second check was answered from the cache"
    );
    let before = config_reloads(&tg, "ok");
    dir.write("config.json", config(&["k-a"]).to_string());
    wait_above(&tg, "the config reload that revokes k-a", before, || {
        config_reloads(&tg, "ok")
    });
    assert_denied(
        &tg,
        &token_a,
        "revoked_key",
        "cached k-a token right after the reload",
    );
    assert_denied(&tg, &a.token(true), "revoked_key", "fresh k-a token");
    assert_eq!(key_entry(&tg, "k-a")["state"], "revoked");
    assert_allowed(&tg, &c.token(true), "k-c is not affected");

    // (b) a thumbprint in revoked.file (taken from /keys); the config does not change.
    let thumbprint = key_entry(&tg, "k-b")["thumbprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!thumbprint.is_empty());
    let token_b = b.token(true);
    assert_allowed(&tg, &token_b, "k-b before revocation");
    let hits = cache_hits();
    assert_allowed(&tg, &token_b, "k-b again (cached)");
    assert!(
        cache_hits() > hits,
        "the second check was answered from the cache"
    );
    dir.write(
        "revoked.json",
        json!({"kids": [], "thumbprints": [thumbprint]}).to_string(),
    );
    wait_state(&tg, "k-b", "revoked");
    assert_denied(
        &tg,
        &token_b,
        "revoked_key",
        "cached k-b token right after the reload",
    );
    assert_denied(&tg, &b.token(true), "revoked_key", "fresh k-b token");
    let r = tg.check_token("/orders", &b.token(false));
    assert_eq!(
        r.status,
        401,
        "a revoked key is never tried, not even without kid: {}",
        r.body_text()
    );
    assert_allowed(&tg, &c.token(true), "k-c is not affected");

    // Both keys are still published in the JWKS file: revoked, not retired.
    let jwks = std::fs::read_to_string(dir.path("jwks.json")).unwrap_or_default();
    assert!(jwks.contains("\"k-a\"") && jwks.contains("\"k-b\""));
    for k in ["k-a", "k-b"] {
        let e = key_entry(&tg, k);
        assert_eq!(
            (e["state"].as_str(), e["source"].as_str()),
            (Some("revoked"), Some("jwks_file")),
            "{e:#}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. A bad reload keeps the last good keys.

#[test]
fn bad_reloads_keep_the_last_good_keys() {
    const PW: &str = "Kq7-Never-Logged-Pw";
    let dir = TempDir::new("rotation-bad");
    // A key pair entry, as the guide's steps 1.1 to 1.4 make one (openssl pkcs12 -export
    // -name Signature-Key, keytool -importkeystore): the fixture make.sh made with them
    // (store password PW, key pair signature-key.key / x509certificate.pem).
    let store = copy_fixture(&dir, "ig-keystore-signature-key.p12", "IG_keystore.p12");
    let good = std::fs::read(store).unwrap();
    dir.write("keystore.pass", PW);

    // The mapping says "signature-key": OpenSSL wrote "Signature-Key", keytool
    // -importkeystore stored it lower-cased, and aliases match ignoring case anyway.
    let config = |aliases: &[&str]| {
        json!({
            "listeners": listeners(),
            "issuers": [issuer(&["RS256"], json!({
                "keystore": dir.path("IG_keystore.p12").to_string_lossy(),
                "password_file": dir.path("keystore.pass").to_string_lossy(),
                "password_encoding": "plain", "aliases": aliases
            }))],
            "reload": {"scan_interval": SCAN}
        })
    };
    let tg = Tokengate::start(&dir, config(&["signature-key"]));
    tg.wait_ready();
    let signer = Signer::new(
        "key",
        "signature-key",
        Algorithm::RS256,
        rsa_key(&fixture("signature-key.key")),
    );
    assert_allowed(&tg, &signer.token(true), "before any bad reload");
    let thumbprint = key_entry(&tg, "signature-key")["thumbprint"].clone();
    let still_serving = |what: &str| {
        assert_allowed(&tg, &signer.token(true), what);
        assert_allowed(&tg, &signer.token(false), what);
        let e = key_entry(&tg, "signature-key");
        assert_eq!(
            (&e["state"], &e["thumbprint"]),
            (&json!("active"), &thumbprint),
            "{what}: {e:#}"
        );
    };

    let recovered = |what: &str| {
        trigger(&tg, Trigger::Refresh);
        let errors = source_reloads(&tg, "keystore", "error");
        trigger(&tg, Trigger::Refresh);
        assert_eq!(
            source_reloads(&tg, "keystore", "error"),
            errors,
            "{what}: still failing"
        );
        still_serving(what);
    };

    let up = |tg: &Tokengate| {
        tg.metrics().value(
            "tokengate_key_source_up",
            &[("issuer", "am"), ("source", "keystore")],
        )
    };
    assert_eq!(up(&tg), Some(1.0), "tokengate_key_source_up while healthy");

    // Garbage where the keystore was.
    let errors = source_reloads(&tg, "keystore", "error");
    dir.write("IG_keystore.p12", b"this is not a PKCS#12 file\n");
    wait_above(&tg, "the failed keystore reload", errors, || {
        source_reloads(&tg, "keystore", "error")
    });
    still_serving("keystore overwritten with garbage");
    assert_eq!(up(&tg), Some(0.0), "tokengate_key_source_up while broken");
    // POST /refresh answers the failure, naming the source.
    let r = http::request(tg.admin, "POST", "/refresh", &[], b"").expect("POST /refresh");
    assert_eq!(r.status, 502, "{}", r.body_text());
    let body: Value = serde_json::from_slice(&r.body).expect("JSON");
    let keystore = body["sources"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["source"] == "keystore"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&keystore["issuer"], &keystore["result"], &keystore["field"]),
        (
            &json!("am"),
            &json!("error"),
            &json!("issuers[0].key_sources[0]")
        ),
        "{body:#}"
    );
    assert!(
        keystore["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a PKCS#12 file")),
        "{body:#}"
    );
    assert_eq!(
        keystore["keys"], 1,
        "the last good key still published: {body:#}"
    );
    let logs = tg.logs();
    assert!(
        logs.contains("key source failed to load")
            && logs.contains("not a PKCS#12 file")
            && logs.contains("IG_keystore.p12"),
        "the log says which file failed and why:\n{logs}"
    );

    // Put it back. The content is the last good one, so there is nothing to republish,
    // but it is a successful reload (counted, logged) and the source is up again.
    let oks = source_reloads(&tg, "keystore", "ok");
    dir.write("IG_keystore.p12", &good);
    recovered("keystore restored");
    assert_eq!(up(&tg), Some(1.0), "tokengate_key_source_up once restored");
    assert_eq!(
        source_reloads(&tg, "keystore", "ok"),
        oks + 1.0,
        "the restored keystore counted as one successful reload"
    );
    assert!(
        tg.logs().contains("key source recovered"),
        "the recovery is logged"
    );

    // A wrong password in the password file.
    const WRONG: &str = "Wr0ng-Pa55-Also-Secret";
    let errors = source_reloads(&tg, "keystore", "error");
    dir.write("keystore.pass", WRONG);
    wait_above(&tg, "the failed reload (wrong password)", errors, || {
        source_reloads(&tg, "keystore", "error")
    });
    still_serving("wrong keystore password");
    dir.write("keystore.pass", PW);
    recovered("password restored");

    // A mapping none of whose aliases the keystore has: the config is refused whole.
    let errors = config_reloads(&tg, "error");
    dir.write("config.json", config(&["missing-alias"]).to_string());
    wait_above(&tg, "the refused config reload", errors, || {
        config_reloads(&tg, "error")
    });
    still_serving("config naming only a missing alias");
    assert!(
        key_entries(&tg, "missing-alias").is_empty(),
        "{:#}",
        tg.keys()
    );
    let logs = tg.logs();
    assert!(
        logs.contains("config reload failed")
            && logs.contains("missing-alias")
            && logs.contains("IG_keystore.p12"),
        "the log says which alias is missing:\n{logs}"
    );

    // One alias present, one not: applied, the absent one reported missing.
    let ok = config_reloads(&tg, "ok");
    dir.write(
        "config.json",
        config(&["signature-key", "missing-alias"]).to_string(),
    );
    wait_above(&tg, "the config reload", ok, || config_reloads(&tg, "ok"));
    wait_state(&tg, "missing-alias", "missing");
    still_serving("config naming one missing alias");
    let logs = tg.logs();
    assert!(
        !logs.contains(PW) && !logs.contains(WRONG),
        "a keystore password was logged:\n{logs}"
    );
}

/// Kubernetes updates a ConfigMap (the mapping) and a Secret (the keystore) separately:
/// the mapping may name the new alias before the keystore holding it arrives, and a pod
/// may restart in between. Neither takes the pod out of service: the new alias is
/// `missing` (in `/keys` and `tokengate_key_info`), the old one keeps verifying, the
/// restarted pod is ready, and once the keystore has the alias both processes pick it
/// up without a restart.
#[test]
fn a_mapping_ahead_of_its_keystore_reports_the_alias_missing_and_keeps_serving() {
    const PW: &str = "Or-Der-Pa55word";
    let dir = TempDir::new("rotation-order");
    // Both keystores are fixtures (the guide's keytool -import -trustcacerts, run by
    // make.sh): this test is about the order in which the files arrive, not the tools.
    copy_fixture(&dir, "ig-keystore-verification-key.p12", "IG_keystore.p12");
    dir.write("keystore.pass", PW);
    let config = |aliases: &[&str]| {
        json!({
            "listeners": listeners(),
            "issuers": [issuer(&["RS256"], json!({
                "keystore": dir.path("IG_keystore.p12").to_string_lossy(),
                "password_file": dir.path("keystore.pass").to_string_lossy(),
                "password_encoding": "plain", "aliases": aliases
            }))],
            "reload": {"scan_interval": SCAN}
        })
    };
    let old = Signer::new(
        "old",
        "verification-key",
        Algorithm::RS256,
        rsa_key(&fixture("signature-key.key")),
    );
    let new = Signer::new(
        "new",
        "verification-key-new",
        Algorithm::RS256,
        rsa_key(&fixture("signature-key-new.key")),
    );
    let mut tg = Tokengate::start(&dir, config(&["verification-key"]));
    tg.wait_ready();
    let started = process_start(&tg);

    // The ConfigMap lands first: applied at once, the new alias missing.
    let ok = config_reloads(&tg, "ok");
    let both = config(&["verification-key", "verification-key-new"]);
    dir.write("config.json", both.to_string());
    wait_above(&tg, "the config reload", ok, || config_reloads(&tg, "ok"));
    wait_state(&tg, "verification-key-new", "missing");
    assert_states(&tg, &[("verification-key", "active")]);
    assert_allowed(
        &tg,
        &old.token(true),
        "old key while the new alias is missing",
    );
    assert_denied(
        &tg,
        &new.token(true),
        "bad_signature",
        "a token of the missing alias (its kid unknown, no loaded key verifies it)",
    );
    let missing = tg.metrics().sum(
        "tokengate_key_info",
        &[("key", "verification-key-new"), ("state", "missing")],
    );
    assert_eq!(missing, 1.0, "tokengate_key_info{{state=\"missing\"}}");
    assert!(
        tg.logs().contains("not in the keystore (yet)"),
        "the missing alias is logged"
    );

    // A pod restarted now (same ConfigMap, old Secret) is ready and serves.
    let restarted_dir = TempDir::new("rotation-order-restart");
    let restarted = Tokengate::start(&restarted_dir, both.clone());
    restarted.wait_ready();
    assert_allowed(
        &restarted,
        &old.token(true),
        "old key after a restart mid-rotation",
    );
    wait_state(&restarted, "verification-key-new", "missing");

    // Then the Secret: the same keystore with verification-key-new imported, renamed
    // over the old one. Both processes pick it up on their own (scan interval).
    swap_keystore(&dir, "IG_keystore.p12", |next| {
        copy_fixture(&dir, "ig-keystore-verification-key-and-new.p12", next);
    });
    for (what, gate) in [("the first pod", &tg), ("the restarted pod", &restarted)] {
        wait_state(gate, "verification-key-new", "valid");
        assert_allowed(gate, &new.token(true), what);
        assert_allowed(gate, &old.token(true), what);
    }
    assert_same_process(&mut tg, &started);
}

// ---------------------------------------------------------------------------------------
// 6. Certificate validity: `iat` (default), `now`, `off`.

#[test]
fn certificate_validity_iat_now_off() {
    const PW: &str = "Val1dity-Pa55word";
    const DAY: i64 = 86_400;
    // The fixture's verification-key certificate (expired-x509certificate.pem, made by
    // make.sh with python3's `cryptography`, fixed dates): expired now.
    const EXPIRED_NOT_BEFORE: i64 = 1_577_836_800; // 2020-01-01T00:00:00Z
    const EXPIRED_NOT_AFTER: i64 = 1_580_515_200; // 2020-02-01T00:00:00Z
    let dir = TempDir::new("rotation-validity");
    // verification-key, then current-key: a certificate valid now (x509certificate.pem,
    // `-days 36500`), so that "now" is seen passing too. Both imported by keytool -import
    // in make.sh.
    copy_fixture(&dir, "ig-keystore-validity.p12", "IG_keystore.p12");
    dir.write("keystore.pass", PW);
    let source = json!({
        "keystore": dir.path("IG_keystore.p12").to_string_lossy(),
        "password_file": dir.path("keystore.pass").to_string_lossy(),
        "password_encoding": "plain", "aliases": ["verification-key", "current-key"]
    });
    // One issuer per mode, told apart by `iss`, over the same keystore.
    let issuers: Vec<Value> = ["iat", "now", "off"]
        .iter()
        .map(|mode| {
            json!({
                "name": mode, "issuer": format!("https://{mode}.example"), "audiences": ["orders-api"],
                "algorithms": ["RS256"], "certificate_validity": mode, "key_sources": [source]
            })
        })
        .collect();
    let tg = Tokengate::start(
        &dir,
        json!({"listeners": listeners(), "issuers": issuers, "reload": {"scan_interval": SCAN}}),
    );
    tg.wait_ready();
    let e = key_entries(&tg, "verification-key");
    assert_eq!(e.len(), 3, "one entry per issuer: {e:#?}");
    for entry in &e {
        assert_eq!(
            entry["not_before"].as_str(),
            Some("2020-01-01T00:00:00Z"),
            "{entry:#}"
        );
        assert_eq!(
            entry["not_after"].as_str(),
            Some("2020-02-01T00:00:00Z"),
            "{entry:#}"
        );
    }
    let metric = tg.metrics().value(
        "tokengate_key_not_after_timestamp_seconds",
        &[("issuer", "now"), ("key", "verification-key")],
    );
    assert_eq!(
        metric,
        Some(EXPIRED_NOT_AFTER as f64),
        "tokengate_key_not_after_timestamp_seconds"
    );

    let signer = Signer::new(
        "old",
        "verification-key",
        Algorithm::RS256,
        rsa_key(&fixture("expired-key.key")),
    );
    // `iat` 10 days into the validity, and 10 days before it starts.
    let inside = |mode: &str| {
        signer.token_with(
            true,
            json!({"iss": format!("https://{mode}.example"), "iat": EXPIRED_NOT_BEFORE + 10 * DAY}),
        )
    };
    let before_start = |mode: &str| {
        signer.token_with(
            true,
            json!({"iss": format!("https://{mode}.example"), "iat": EXPIRED_NOT_BEFORE - 10 * DAY}),
        )
    };
    let fresh =
        |mode: &str| signer.token_with(true, json!({"iss": format!("https://{mode}.example")}));

    assert_allowed(&tg, &inside("iat"), "iat: iat inside the validity");
    assert_denied(
        &tg,
        &before_start("iat"),
        "key_out_of_validity",
        "iat: iat before notBefore",
    );
    assert_denied(
        &tg,
        &fresh("iat"),
        "key_out_of_validity",
        "iat: iat now, after notAfter",
    );

    assert_denied(
        &tg,
        &inside("now"),
        "key_out_of_validity",
        "now: certificate expired",
    );
    assert_denied(
        &tg,
        &before_start("now"),
        "key_out_of_validity",
        "now: certificate expired",
    );

    let current = Signer::new(
        "current",
        "current-key",
        Algorithm::RS256,
        rsa_key(&fixture("signature-key.key")),
    );
    for mode in ["iat", "now", "off"] {
        let token = current.token_with(true, json!({"iss": format!("https://{mode}.example")}));
        assert_allowed(&tg, &token, &format!("{mode}: a certificate valid now"));
    }

    assert_allowed(&tg, &inside("off"), "off: iat inside");
    assert_allowed(&tg, &before_start("off"), "off: iat outside");
    assert_allowed(&tg, &fresh("off"), "off: iat now");
}
