//! What every fuzz target checks, one function per target. Each takes arbitrary bytes,
//! feeds them to the public API the `tokengate` binary itself uses on untrusted or
//! operator-supplied input, and asserts what must hold for every input beyond "does not
//! panic". The libFuzzer entry points in `fuzz_targets/` call these functions; on stable
//! Rust, `tests/hardening.rs` includes this very file and replays every file of
//! `fuzz/seeds/<target>/` through them, so CI exercises the same checks without nightly.
//!
//! - [`jws_parse`]: token extraction from an `Authorization` or `Cookie` value, then the
//!   compact-JWS parser and header checks (`token::jws::parse`) under three allowlists,
//!   and a header kept in a `token::memo::HeaderMemo` read alike;
//! - [`authorize`]: the input is a JOSE header and a claims set, signed here with a known
//!   HMAC key, then judged by the real `Authorizer`: claim checks on verified tokens;
//! - [`jwks_parse`]: the JWK set parser (`keys::jwks::parse_set`), remote and local;
//! - [`keystore_load`]: the PKCS#12 keystore source (`keys::keystore::KeystoreSource`);
//! - [`config_parse`]: the config loader (`config::Config::parse`), then the app built
//!   from every config it accepts (when that reads no file);
//! - [`pem_parse`]: the `pem_file` source (`keys::files::parse_pem`);
//! - [`jwe_decrypt`]: the compact-JWE parser and decryptor (`jwe::parse`, `Jwe::decrypt`)
//!   with fixed symmetric and EC keys, and a header kept in a memo read alike.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use tokengate::alg::{Alg, AlgSet};
use tokengate::app::App;
use tokengate::authz::RequestView;
use tokengate::clock::FixedClock;
use tokengate::config::{
    Config, HeaderSource, KeySourceConfig, MAX_TOKEN_MAX_BYTES, PasswordEncoding, PasswordSource,
    TokenConfig,
};
use tokengate::decision::{AllowReason, Decision, DenyReason};
use tokengate::keys::jwks::{self, JwksError, MAX_KEYS};
use tokengate::keys::keystore::KeystoreSource;
use tokengate::metrics::{Listener, Metrics};
use tokengate::token::extract::extract;
use tokengate::token::jws;
use tokengate::token::memo::HeaderMemo;

/// The store password of every keystore seed (`fuzz/seeds/generate-keystores.sh`).
pub const KEYSTORE_PASSWORD: &str = "fuzz-Keystore-Pa55";
/// The alias mapping the keystore target loads, active first.
pub const KEYSTORE_ALIASES: [&str; 3] = ["signature-key", "verification-key", "hmac-key"];
/// The `authorize` target's issuer (`iss`).
pub const ISSUER: &str = "https://issuer.example";
/// The `authorize` target's audience.
pub const AUDIENCE: &str = "orders-api";
/// The `authorize` target's clock: 2027-01-15T08:00:00Z.
pub const NOW: i64 = 1_800_000_000;
/// The `authorize` target's HMAC secret (64 bytes, published as kid `fuzz-hmac`).
pub const HMAC_SECRET: &[u8; 64] =
    b"fuzz-hmac-secret-0123456789abcdef0123456789abcdef0123456789abcde";
/// Token size limit used by the extraction check.
const MAX_BYTES: usize = 8192;
/// The `authorize` target's leeway (seconds) and `max_lifetime` (seconds).
const LEEWAY: i64 = 30;
const MAX_LIFETIME: i64 = 86_400;
/// Latest NumericDate tokengate accepts (9999-12-31T23:59:59Z).
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

// === jws_parse ===

/// Token extraction and the compact-JWS parser.
///
/// Holds for every input: an extracted token is one non-empty word of visible ASCII of
/// at most `max_bytes`; `parse` fails only with `malformed` or `bad_alg`; an accepted
/// token has exactly three segments, its `alg` is in the allowlist given (so an empty
/// allowlist accepts nothing), `signing_input` and `payload_b64` are the token's own
/// first two segments, and the signature is not empty.
pub fn jws_parse(data: &[u8]) {
    let value = String::from_utf8_lossy(data).into_owned();
    let cfg = TokenConfig {
        from_headers: vec![HeaderSource {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }],
        from_cookies: vec!["session".into()],
        session_cookies: vec!["IG".into()],
        max_bytes: MAX_BYTES,
    };
    for name in ["authorization", "cookie"] {
        let headers = vec![(name.to_string(), value.clone())];
        if let Ok(Some(token)) = extract(&cfg, headers.as_slice()) {
            assert!(!token.is_empty(), "extracted an empty token from {value:?}");
            assert!(token.len() <= MAX_BYTES, "extracted {} bytes", token.len());
            assert!(
                token.bytes().all(|b| b.is_ascii_graphic()),
                "extracted a token with spaces or control bytes: {token:?}"
            );
            check_parse(token);
        }
    }
    check_parse(&value);
}

fn check_parse(token: &str) {
    let all: AlgSet = Alg::ALL.into_iter().collect();
    let rs256: AlgSet = [Alg::RS256].into_iter().collect();
    for (allowed, what) in [(all, "all"), (rs256, "RS256"), (AlgSet::default(), "none")] {
        match jws::parse(token, allowed) {
            Ok(j) => {
                assert!(allowed.contains(j.alg), "{what}: accepted {:?}", j.alg);
                let segments: Vec<&str> = token.split('.').collect();
                assert_eq!(segments.len(), 3, "accepted {token:?}");
                assert_eq!(
                    j.signing_input,
                    &token[..segments[0].len() + 1 + segments[1].len()]
                );
                assert_eq!(j.payload_b64, segments[1]);
                assert!(
                    !j.signature.is_empty(),
                    "accepted an empty signature: {token:?}"
                );
            }
            Err(DenyReason::Malformed | DenyReason::BadAlg) => {}
            Err(other) => panic!("parse denied {token:?} with {other:?}"),
        }
    }
    // A header kept once read (as the authorizer keeps the header of a token that
    // verified) answers what reading it again would, under every allowlist.
    let memo = HeaderMemo::new();
    if let Ok(j) = jws::parse(token, all) {
        j.memoize(&memo);
        for allowed in [all, rs256, AlgSet::default()] {
            assert_eq!(
                read_alike(jws::parse_memo(token, allowed, &memo)),
                read_alike(jws::parse(token, allowed)),
                "kept header of {token:?}"
            );
        }
    }
}

/// A parse result as text, without where its header came from (`keep`).
fn read_alike<T: std::fmt::Debug>(r: Result<T, DenyReason>) -> String {
    format!("{r:?}").replace("keep: true", "keep: false")
}

// === authorize ===

/// A JOSE header and a claims set (the input split at its first newline), signed with
/// [`HMAC_SECRET`] under the header's `alg` when that is an HMAC one (else HS256), then
/// judged by the `Authorizer` of an issuer that trusts that key.
///
/// Holds for every input: the decision is never `Allow` unless an independent reading of
/// the same JSON agrees: `alg` is HS256/384/512, `iss` and `aud` match, `exp` is a number
/// in the future (leeway 30 s) and at most 24 h after `iat`/`nbf`, neither lies in the
/// future, and the route's scope `write` was granted.
pub fn authorize(data: &[u8]) {
    let _ = authorized(data);
}

/// [`authorize`], telling whether the request was allowed.
pub fn authorized(data: &[u8]) -> bool {
    let (header, payload) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let header_json: Option<Map<String, Value>> = serde_json::from_slice(header).ok();
    let alg = header_json
        .as_ref()
        .and_then(|h| h.get("alg"))
        .and_then(Value::as_str)
        .and_then(|a| match a {
            "HS384" => Some(aws_lc_rs::hmac::HMAC_SHA384),
            "HS512" => Some(aws_lc_rs::hmac::HMAC_SHA512),
            _ => None,
        })
        .unwrap_or(aws_lc_rs::hmac::HMAC_SHA256);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = aws_lc_rs::hmac::Key::new(alg, HMAC_SECRET);
    let sig = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));

    let (rt, app) = authorize_app();
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let view = RequestView {
        method: "POST",
        target: "/w/orders",
        headers: headers.as_slice(),
        peer: Default::default(),
    };
    let verdict = rt.block_on(app.authorizer().check(Listener::Cli, &view));
    let Decision::Allow(a) = &verdict.decision else {
        return false;
    };
    assert_eq!(a.reason, AllowReason::Ok, "a token was present");
    if let Err(why) = should_allow(header_json.as_ref(), payload) {
        panic!(
            "allowed, but {why}: header {:?}, claims {:?}",
            String::from_utf8_lossy(header),
            String::from_utf8_lossy(payload)
        );
    }
    true
}

/// The runtime and app of the `authorize` target, built once per process.
fn authorize_app() -> &'static (tokio::runtime::Runtime, Arc<App>) {
    static APP: OnceLock<(tokio::runtime::Runtime, Arc<App>)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let jwks = serde_json::json!({"keys": [{
            "kty": "oct", "kid": "fuzz-hmac", "k": URL_SAFE_NO_PAD.encode(HMAC_SECRET)
        }]});
        let file = scratch_path("authorize-jwks.json");
        std::fs::write(&file, jwks.to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let config = serde_json::json!({
            "listeners": {"authz_http": null, "authz_grpc": null, "admin": null},
            "issuers": [{
                "name": "fuzz", "issuer": ISSUER, "audiences": [AUDIENCE],
                "algorithms": ["HS256", "HS384", "HS512", "RS256"],
                "max_lifetime": "24h", "leeway": "30s",
                "key_sources": [{"jwks_file": file.to_string_lossy()}]
            }],
            "routes": [{"path_prefix": "/w", "scopes_all": ["write"]}],
            "cache": {"max_entries": 0}
        });
        let config = Config::parse(
            &scratch_path("authorize.json"),
            config.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("authorize config: {e}"));
        let app = rt.block_on(async {
            App::new(
                config,
                tokio::runtime::Handle::current(),
                Arc::new(FixedClock::new(NOW)),
                Arc::new(Metrics::new()),
                Arc::new(|_: &str| None),
            )
        });
        let _ = std::fs::remove_file(&file);
        (rt, app)
    })
}

/// The independent reading of an allowed token: `Err(why)` when it should not have been.
fn should_allow(header: Option<&Map<String, Value>>, payload: &[u8]) -> Result<(), String> {
    let header = header.ok_or("the header is not a JSON object")?;
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256" | "HS384" | "HS512") => {}
        other => return Err(format!("alg is {other:?}")),
    }
    if header.contains_key("crit") {
        return Err("the header has crit".into());
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(payload).map_err(|_| "the claims are not a JSON object")?;
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err("iss does not match".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud does not match".into());
    }
    let date = |name: &str| -> Result<Option<f64>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(t) if (0.0..=MAX_NUMERIC_DATE as f64).contains(&t) => Ok(Some(t.floor())),
                _ => Err(format!("{name} is out of range")),
            },
            Some(_) => Err(format!("{name} is not a number")),
        }
    };
    let exp = date("exp")?.ok_or("no exp")?;
    if (NOW as f64) >= exp + LEEWAY as f64 {
        return Err("expired".into());
    }
    let (nbf, iat) = (date("nbf")?, date("iat")?);
    for t in [nbf, iat].into_iter().flatten() {
        if (NOW + LEEWAY) as f64 <= t - 1.0 {
            return Err("nbf or iat in the future".into());
        }
    }
    let start = iat.or(nbf).ok_or("no iat or nbf for max_lifetime")?;
    if exp - start > MAX_LIFETIME as f64 {
        return Err("lifetime above 24h".into());
    }
    let granted = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.split_ascii_whitespace().any(|x| x == "write"),
        Some(Value::Array(list)) => list.iter().any(|x| x.as_str() == Some("write")),
        _ => false,
    };
    if !granted(claims.get("scope")) && !granted(claims.get("scp")) {
        return Err("scope write not granted".into());
    }
    Ok(())
}

// === jwks_parse ===

/// The JWK set parser, as a remote JWKS (no `oct`) and as a local file (`oct` allowed).
///
/// Holds for every input: a set of more than [`MAX_KEYS`] keys is refused whole; an
/// accepted set accounts for every member of its `keys` array (loaded or skipped with a
/// reason); a remote set never yields a symmetric key; every thumbprint is 43 base64url
/// characters (RFC 7638 SHA-256).
pub fn jwks_parse(data: &[u8]) {
    let members = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|doc| doc.get("keys").and_then(Value::as_array).map(Vec::len));
    for allow_oct in [false, true] {
        match jwks::parse_set(data, allow_oct) {
            Ok(set) => {
                assert!(set.keys.len() + set.skipped.len() <= MAX_KEYS);
                assert_eq!(Some(set.keys.len() + set.skipped.len()), members);
                for k in &set.keys {
                    let kty = k.material.kty();
                    assert!(
                        allow_oct || kty != tokengate::alg::Kty::Oct,
                        "an oct key from a remote JWKS was loaded"
                    );
                    let t = k.material.thumbprint();
                    assert_eq!(t.len(), 43, "thumbprint {t:?}");
                    assert!(
                        t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                        "thumbprint {t:?}"
                    );
                }
            }
            Err(JwksError::TooManyKeys(n)) => {
                assert!(n > MAX_KEYS);
                assert_eq!(Some(n), members);
            }
            Err(JwksError::NotAJwkSet(_)) => {}
        }
    }
}

// === keystore_load ===

/// The PKCS#12 keystore source: the input is written to a scratch file (one per thread)
/// and loaded with [`KEYSTORE_PASSWORD`] and the alias mapping [`KEYSTORE_ALIASES`].
///
/// Holds for every input: a load yields at least one key; every alias of the mapping is
/// either loaded or reported missing, exactly once, the loaded ones in mapping order and
/// the first of them active; no error message contains the password.
pub fn keystore_load(data: &[u8]) {
    let path = scratch_path(&format!("keystore-{:?}.p12", std::thread::current().id()));
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut source = KeystoreSource::new(
        path.clone(),
        PasswordSource::Env("FUZZ_KEYSTORE_PASSWORD".into()),
        PasswordEncoding::Plain,
        KEYSTORE_ALIASES.iter().map(|a| a.to_string()).collect(),
        Arc::new(|name: &str| {
            (name == "FUZZ_KEYSTORE_PASSWORD").then(|| KEYSTORE_PASSWORD.to_string())
        }),
    );
    let result = source.reload();
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(Some(keys)) => {
            assert!(!keys.keys.is_empty(), "a load without a key");
            let ids: Vec<&str> = keys.keys.iter().map(|k| k.id.as_str()).collect();
            let loaded: Vec<&str> = KEYSTORE_ALIASES
                .iter()
                .copied()
                .filter(|a| !keys.missing.iter().any(|m| m == a))
                .collect();
            assert_eq!(
                ids, loaded,
                "keys out of mapping order, or an alias both loaded and missing"
            );
            assert_eq!(ids.len() + keys.missing.len(), KEYSTORE_ALIASES.len());
            let active: Vec<bool> = keys.keys.iter().map(|k| k.active).collect();
            assert!(active[0] && !active[1..].iter().any(|a| *a), "{active:?}");
        }
        Ok(None) => panic!("a first load reported \"unchanged\""),
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains(KEYSTORE_PASSWORD),
                "the keystore password is in an error: {text}"
            );
        }
    }
}

// === config_parse ===

/// The config loader, then (for accepted configs whose key sources are all remote, so
/// that building reads no file) the whole app built from it.
///
/// Holds for every input: errors name the file; an accepted config has at least one
/// issuer, at most one issuer without `issuer`, distinct listener addresses and a
/// `token.max_bytes` within its bound.
pub fn config_parse(data: &[u8]) {
    let file = Path::new("/fuzz/config.json");
    let config = match Config::parse(file, data) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.file, file);
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!config.issuers.is_empty(), "a config without issuers");
    assert!(config.issuers.iter().filter(|i| i.issuer.is_none()).count() <= 1);
    assert!(config.token.max_bytes <= MAX_TOKEN_MAX_BYTES);
    let l = &config.listeners;
    let addrs: Vec<_> = [l.proxy, l.authz_http, l.authz_grpc, l.admin]
        .into_iter()
        .flatten()
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        assert!(!addrs[i + 1..].contains(a), "two listeners on {a}");
    }
    let reads_files = config.revoked.file.is_some()
        || config.issuers.iter().any(|i| {
            i.key_sources.iter().any(|s| match s {
                KeySourceConfig::JwksUri { settings, .. }
                | KeySourceConfig::Discovery { settings, .. } => settings.ca_file.is_some(),
                _ => true,
            })
        });
    if !reads_files {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let app = App::new(
                config,
                tokio::runtime::Handle::current(),
                Arc::new(FixedClock::new(NOW)),
                Arc::new(Metrics::new()),
                Arc::new(|_: &str| None),
            );
            let _ = app.render_metrics();
        });
    }
}

// === pem_parse ===

/// The `pem_file` source: the first public key or certificate of a PEM document.
///
/// Holds for every input: a loaded key carries the configured kid; every error says why.
pub fn pem_parse(data: &[u8]) {
    match tokengate::keys::files::parse_pem(data, "pem-1") {
        Ok(key) => assert_eq!(key.id, "pem-1"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

// === jwe_decrypt ===

/// The `jwe_decrypt` target's symmetric keys: `dir` for the three key sizes, and the
/// `A128KW`/`A256KW` keys (the 16- and 32-byte ones).
pub const JWE_SECRETS: [&[u8]; 3] = [&[0x11; 16], &[0x22; 32], &[0x33; 64]];
/// The `jwe_decrypt` target's P-256 private key (`d`, 32 bytes big-endian).
pub const JWE_EC_D: [u8; 32] = [
    0x4c, 0x1d, 0x8a, 0x3e, 0x5f, 0x77, 0x02, 0x9b, 0x6a, 0x31, 0xc4, 0x0e, 0x99, 0x12, 0x7d, 0x58,
    0x20, 0xe6, 0x4b, 0x83, 0x1f, 0xa9, 0x6c, 0x05, 0x3d, 0x72, 0xbe, 0x44, 0x91, 0x0a, 0x67, 0x2f,
];

/// The compact-JWE parser, then decryption with every fixed key.
///
/// Holds for every input: `parse` fails only with `malformed` or `bad_alg`; an accepted
/// JWE has five segments and an `alg`/`enc` from the allowlists given (an empty one
/// accepts nothing); decryption never panics, and a plaintext comes only from a key that
/// fits the header's algorithm and method.
pub fn jwe_decrypt(data: &[u8]) {
    use tokengate::jwe::{self, DecryptionKey, Enc, KeyAlg};
    let token = String::from_utf8_lossy(data);
    assert!(jwe::parse(&token, &[], &Enc::ALL).is_err());
    assert!(jwe::parse(&token, &KeyAlg::ALL, &[]).is_err());
    let parsed = match jwe::parse(&token, &KeyAlg::ALL, &Enc::ALL) {
        Ok(j) => j,
        Err(DenyReason::Malformed | DenyReason::BadAlg) => return,
        Err(other) => panic!("parse refused {token:?} with {other:?}"),
    };
    assert_eq!(token.split('.').count(), 5, "accepted {token:?}");
    let memo = HeaderMemo::new();
    parsed.memoize(&memo);
    for (algs, encs) in [
        (&KeyAlg::ALL[..], &Enc::ALL[..]),
        (&[KeyAlg::Dir][..], &[Enc::A256Gcm, Enc::A256CbcHs512][..]),
        (&[][..], &Enc::ALL[..]),
    ] {
        assert_eq!(
            read_alike(jwe::parse_memo(&token, algs, encs, &memo)),
            read_alike(jwe::parse(&token, algs, encs)),
            "kept header of {token:?}"
        );
    }
    let mut keys: Vec<DecryptionKey> = JWE_SECRETS
        .iter()
        .map(|s| DecryptionKey::secret(s))
        .collect();
    let ec = serde_json::json!({
        "kty": "EC", "crv": "P-256", "d": URL_SAFE_NO_PAD.encode(JWE_EC_D),
    });
    if let Ok(k) = DecryptionKey::from_jwk(&ec) {
        keys.push(k);
    }
    for key in &keys {
        let fits = key.fits(parsed.alg, parsed.enc);
        if parsed.decrypt(key).is_ok() {
            assert!(
                fits,
                "{:?}/{:?} decrypted with a key that does not fit",
                parsed.alg, parsed.enc
            );
        }
    }
}

/// A scratch file path of this process.
fn scratch_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tokengate-fuzz-{}-{name}", std::process::id()))
}
