//! What the JWE decryptor and the decisions on encrypted tokens and sessions add to the
//! raw primitives (issue 19): each case next to the same primitives called directly with
//! keys prepared once, on tokens jwcrypto made (`tests/fixtures/jwe-bench.json`):
//!
//! - `jwe/dir_a256gcm` vs `jwe/raw_a256gcm`: a nested access token under `dir` + A256GCM
//!   (parse, key, AES-GCM open) against AES-GCM open alone;
//! - `jwe/rsa_oaep_256_a256gcm` vs `jwe/raw_rsa_oaep_256_a256gcm`: RSA-OAEP-256 unwrap of
//!   the content key, then AES-GCM;
//! - `jwe/session_dir_a256cbc_hs512` vs `jwe/raw_a256cbc_hs512`: a PingGateway-style
//!   session under `dir` + A256CBC-HS512 against HMAC-SHA-512 and AES-256-CBC alone.
//!
//! `jwe/parse_dir_a256gcm` is the parse alone.
//!
//! Then whole decisions through the `Authorizer` (issue 19's floors), the cache off
//! unless said:
//!
//! - `jwe/decision_dir_a256gcm` vs `jwe/raw_a256gcm_rs256`: the nested token judged
//!   (decrypted, its RS256 JWS verified, its claims checked) against AES-GCM open plus
//!   the RS256 verification of the inner JWS with a prepared key (floor 0.85);
//! - `jwe/decision_rsa_oaep_256_a256gcm` vs `jwe/raw_rsa_oaep_256_a256gcm_rs256` (0.85);
//! - `jwe/decision_session` vs `jwe/raw_a256cbc_hs512` (0.8), and
//!   `jwe/decision_session_cached`: the same cookie answered from the cache (a
//!   session's every request after its first; the interleaved mode also times a session
//!   of two requests, the first decrypted and the second cached, against two raw
//!   decryptions).
//!
//! The bench prints raw ÷ ours for each. Run: `cargo bench --bench jwe`.
//!
//! `TG_BENCH_INTERLEAVED=<rounds>` times each decision and its raw baseline in
//! alternating blocks in this one process instead (the floors are read on it: this
//! host's speed drifts between criterion's benchmarks), and `TG_BENCH_COUNT=<case>:<n>`
//! runs n of one case for an instruction count.

mod support;

use std::hint::black_box;
use std::time::SystemTime;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use support::{app_of, criterion, decide, fixtures, median, runtime};
use tokengate::alg::Alg;
use tokengate::authz::RequestView;
use tokengate::decision::Decision;
use tokengate::jwe::{self, DecryptionKey, Enc, KeyAlg};
use tokengate::keys::jwks::parse_set;

/// The five segments of a compact JWE, decoded (the header kept as sent: it is the AAD).
struct Parts {
    aad: String,
    key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn main() {
    let started = SystemTime::now();
    let (mut c, dir) = criterion();
    let text = std::fs::read_to_string(fixtures().join("jwe-bench.json"))
        .unwrap_or_else(|e| panic!("jwe-bench.json: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("jwe-bench.json: {e}"));
    let s = |name: &str| doc[name].as_str().unwrap_or_default().to_string();
    let key =
        |name: &str| DecryptionKey::from_jwk(&doc[name]).unwrap_or_else(|e| panic!("{name}: {e}"));
    let secret = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(doc[name]["k"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let (gcm_token, rsa_token, session_token) = (
        s("dir_a256gcm"),
        s("rsa_oaep_256_a256gcm"),
        s("session_dir_a256cbc_hs512"),
    );
    let (dir32, dir64, rsa) = (key("dir32"), key("dir64"), key("rsa"));
    let decrypt = |token: &str, k: &DecryptionKey| {
        let parsed =
            jwe::parse(token, &KeyAlg::ALL, &Enc::ALL).unwrap_or_else(|r| panic!("parse: {r:?}"));
        parsed.decrypt(k).map(|p| p.len()).unwrap_or(0)
    };
    assert_eq!(
        decrypt(&gcm_token, &dir32),
        s("nested_plaintext").len(),
        "dir A256GCM"
    );
    assert_eq!(decrypt(&rsa_token, &rsa), s("nested_plaintext").len());
    assert_eq!(
        decrypt(&session_token, &dir64),
        s("session_plaintext").len()
    );

    // The raw primitives, keys prepared once.
    let gcm_key = LessSafeKey::new(
        UnboundKey::new(&aead::AES_256_GCM, &secret("dir32")).unwrap_or_else(|e| panic!("{e}")),
    );
    let rsa_key = rsa_raw(&doc["rsa"]);
    let raw_gcm = |parts: &Parts, key: &LessSafeKey| {
        let mut in_out = parts.ciphertext.clone();
        in_out.extend_from_slice(&parts.tag);
        let nonce = Nonce::try_assume_unique_for_key(&parts.iv).unwrap_or_else(|e| panic!("{e}"));
        key.open_in_place(nonce, Aad::from(parts.aad.as_bytes()), &mut in_out)
            .map(|p| p.len())
            .unwrap_or(0)
    };
    let gcm_parts = parts(&gcm_token);
    let rsa_parts = parts(&rsa_token);
    let session_parts = parts(&session_token);
    let session_key = secret("dir64");
    // RSA-OAEP-256 unwrap of the content key, then AES-GCM open with it.
    let raw_rsa = || {
        let mut cek = vec![0u8; rsa_key.min_output_size()];
        let cek = rsa_key
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                black_box(&rsa_parts.key),
                &mut cek,
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let key = LessSafeKey::new(
            UnboundKey::new(&aead::AES_256_GCM, cek).unwrap_or_else(|e| panic!("{e}")),
        );
        raw_gcm(&rsa_parts, &key)
    };
    assert_eq!(raw_gcm(&gcm_parts, &gcm_key), s("nested_plaintext").len());
    assert_eq!(
        raw_cbc(&session_parts, &session_key),
        s("session_plaintext").len()
    );

    // Whole decisions, next to the raw decryption plus the raw verification of the JWS
    // inside (keys prepared once).
    let inner = s("nested_plaintext");
    let rsa_1 = parse_set(
        &std::fs::read(fixtures().join("jwks.json")).unwrap_or_else(|e| panic!("jwks.json: {e}")),
        true,
    )
    .unwrap_or_else(|e| panic!("jwks.json: {e}"))
    .keys
    .into_iter()
    .find(|k| k.id == "rsa-1")
    .unwrap_or_else(|| panic!("no rsa-1"));
    let (input, sig) = support::signing_input_and_signature(&inner);
    let verify_inner = || rsa_1.material.verify(Alg::RS256, input.as_bytes(), &sig);
    assert!(verify_inner());
    let rt = runtime();
    let keys_dir = std::env::temp_dir().join(format!("tokengate-bench-jwe-{}", std::process::id()));
    std::fs::create_dir_all(&keys_dir).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, keys: Vec<&Value>| {
        let path = keys_dir.join(name);
        std::fs::write(&path, serde_json::json!({ "keys": keys }).to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        path.to_string_lossy().into_owned()
    };
    let token_keys = write("decryption.json", vec![&doc["dir32"], &doc["rsa"]]);
    let session_keys = write("session.json", vec![&doc["dir64"]]);
    let config = |max_entries: u64| {
        serde_json::json!({
            // No listener, as in the other decision benches: no per-listener decision
            // metrics (the same for every token, encrypted or not).
            "listeners": {"authz_http": null, "admin": null, "authz_grpc": null},
            "issuers": [{
                "name": "main",
                "issuer": "https://issuer.example",
                "audiences": ["orders-api"],
                "algorithms": ["RS256"],
                "key_sources": [{ "jwks_file": fixtures().join("jwks.json").to_string_lossy() }]
            }],
            "decryption": {
                "key_sources": [{ "jwks_file": token_keys }],
                "algorithms": ["dir", "RSA-OAEP-256"],
                "methods": ["A256GCM"]
            },
            "sessions": [{ "name": "ig", "cookie": "IG",
                           "key_sources": [{ "jwks_file": session_keys }] }],
            // The fixture JWEs carry no kid: every decision takes the fallback, which
            // must not meet the per-second budget of a real deployment here.
            "fallback": { "max_verifications_per_second": 1_000_000_000u32 },
            "cache": { "max_entries": max_entries }
        })
    };
    let now = 1_800_000_000;
    let uncached = app_of(&config(0), now, &rt);
    let cached = app_of(&config(10_000), now, &rt);
    let bearer = |t: &str| vec![("authorization".to_string(), format!("Bearer {t}"))];
    let gcm_headers = bearer(&gcm_token);
    let rsa_headers = bearer(&rsa_token);
    let cookie = vec![("cookie".to_string(), format!("IG={session_token}"))];
    let view = |headers: &'static [(String, String)]| RequestView {
        method: "GET",
        target: "/orders/1",
        headers,
        peer: Default::default(),
    };
    let leak = |h: Vec<(String, String)>| -> &'static [(String, String)] {
        Box::leak(h.into_boxed_slice())
    };
    let (gcm_view, rsa_view, session_view) = (
        view(leak(gcm_headers)),
        view(leak(rsa_headers)),
        view(leak(cookie)),
    );
    for (what, v) in [
        ("dir", &gcm_view),
        ("rsa", &rsa_view),
        ("session", &session_view),
    ] {
        for app in [&uncached, &cached] {
            let verdict = decide(&rt, app, v);
            assert!(
                matches!(verdict.decision, Decision::Allow(_)),
                "{what}: {:?}",
                verdict.decision
            );
        }
    }
    // `TG_BENCH_INTERLEAVED=<rounds>`: each decision and its raw baseline in alternating
    // blocks within this one process (the host's drift falls on both alike); prints the
    // median per-round ratio raw ÷ ours. This is the time figure the floors are read on.
    if let Ok(rounds) = std::env::var("TG_BENCH_INTERLEAVED") {
        let rounds = rounds.parse().unwrap_or(100);
        let bearer_view = view(leak(bearer(&inner)));
        let raw_dir = || {
            black_box((raw_gcm(black_box(&gcm_parts), &gcm_key), verify_inner()));
        };
        let raw_rsa_rs256 = || {
            black_box((raw_rsa(), verify_inner()));
        };
        let raw_session = || {
            black_box(raw_cbc(black_box(&session_parts), &session_key));
        };
        let ours = |app: &std::sync::Arc<tokengate::app::App>, v: &RequestView<'_, _>| {
            black_box(decide(&rt, app, black_box(v)));
        };
        println!("interleaved, {rounds} rounds (raw ÷ ours; median, 10th-90th percentile):");
        let report = |what: &str, raw: &dyn Fn(), decision: &dyn Fn(), floor: f64, block: u32| {
            let r = support::alternate(rounds, block, raw, decision);
            let floor = if floor > 0.0 {
                format!("; floor {floor}")
            } else {
                String::new()
            };
            println!(
                "  {what}: {:.0} ns vs {:.0} ns = {:.3} ({:.3}-{:.3}{floor})",
                r.b, r.a, r.ratio, r.ratio_p10, r.ratio_p90
            );
        };
        report(
            "bearer decision of the inner JWS",
            &raw_dir,
            &|| ours(&uncached, &bearer_view),
            0.85,
            200,
        );
        report(
            "dir + A256GCM nested token decision",
            &raw_dir,
            &|| ours(&uncached, &gcm_view),
            0.85,
            200,
        );
        // Where the nested decision's time goes: the decryptor alone next to the raw
        // AES-GCM open, and the nested decision next to the bearer decision of its JWS.
        report(
            "dir + A256GCM parse and decrypt (vs raw AES-GCM open)",
            &|| {
                black_box(raw_gcm(black_box(&gcm_parts), &gcm_key));
            },
            &|| {
                black_box(decrypt(black_box(&gcm_token), &dir32));
            },
            0.0,
            2000,
        );
        report(
            "nested token decision (vs the bearer decision of its JWS)",
            &|| ours(&uncached, &bearer_view),
            &|| ours(&uncached, &gcm_view),
            0.0,
            200,
        );
        report(
            "nested token decision (vs the bearer decision plus the decryptor alone)",
            &|| {
                ours(&uncached, &bearer_view);
                black_box(decrypt(black_box(&gcm_token), &dir32));
            },
            &|| ours(&uncached, &gcm_view),
            0.0,
            200,
        );
        report(
            "RSA-OAEP-256 + A256GCM nested token decision",
            &raw_rsa_rs256,
            &|| ours(&uncached, &rsa_view),
            0.85,
            20,
        );
        report(
            "session decision",
            &raw_session,
            &|| ours(&uncached, &session_view),
            0.8,
            2000,
        );
        report(
            "session decision, cached",
            &raw_session,
            &|| ours(&cached, &session_view),
            0.8,
            2000,
        );
        // A session of two requests: the first decrypts (a cache miss), the second is
        // answered from the cache; against decrypting the cookie twice.
        report(
            "session of two requests (decrypted, then cached)",
            &|| {
                raw_session();
                raw_session();
            },
            &|| {
                ours(&uncached, &session_view);
                ours(&cached, &session_view);
            },
            0.8,
            1000,
        );
        let _ = std::fs::remove_dir_all(&keys_dir);
        return;
    }
    // `TG_BENCH_COUNT=<case>:<n>`: n of one case and nothing else, for instruction
    // counts under `valgrind --tool=cachegrind` (this host's timings drift 2×):
    // `none` (setup only), `raw_dir` (AES-GCM open + RS256 verify), `decrypt_dir` (parse and decrypt
    // alone), `decision_dir`,
    // `decision_bearer` (the inner JWS alone), `raw_session`, `decision_session`.
    if let Ok(spec) = std::env::var("TG_BENCH_COUNT") {
        let (case, n) = spec
            .split_once(':')
            .and_then(|(c, n)| Some((c.to_string(), n.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("TG_BENCH_COUNT=<case>:<n>, not {spec}"));
        let bearer_view = view(leak(bearer(&inner)));
        for _ in 0..n {
            match case.as_str() {
                "none" => {}
                "raw_dir" => {
                    black_box((raw_gcm(&gcm_parts, &gcm_key), verify_inner()));
                }
                "decrypt_dir" => {
                    black_box(decrypt(black_box(&gcm_token), &dir32));
                }
                "decision_dir" => {
                    black_box(decide(&rt, &uncached, &gcm_view));
                }
                "decision_bearer" => {
                    black_box(decide(&rt, &uncached, &bearer_view));
                }
                "raw_session" => {
                    black_box(raw_cbc(&session_parts, &session_key));
                }
                "decision_session" => {
                    black_box(decide(&rt, &uncached, &session_view));
                }
                other => panic!("unknown case {other}"),
            }
        }
        let _ = std::fs::remove_dir_all(&keys_dir);
        return;
    }

    let mut g = c.benchmark_group("jwe");
    g.bench_function("raw_a256gcm", |b| {
        b.iter(|| raw_gcm(black_box(&gcm_parts), &gcm_key))
    });
    g.bench_function("dir_a256gcm", |b| {
        b.iter(|| decrypt(black_box(&gcm_token), &dir32))
    });
    // Its parse alone (five segments decoded, the header read and checked).
    g.bench_function("parse_dir_a256gcm", |b| {
        b.iter(|| jwe::parse(black_box(&gcm_token), &KeyAlg::ALL, &Enc::ALL).is_ok())
    });
    g.bench_function("raw_rsa_oaep_256_a256gcm", |b| b.iter(raw_rsa));
    g.bench_function("rsa_oaep_256_a256gcm", |b| {
        b.iter(|| decrypt(black_box(&rsa_token), &rsa))
    });
    g.bench_function("raw_a256cbc_hs512", |b| {
        b.iter(|| raw_cbc(black_box(&session_parts), &session_key))
    });
    g.bench_function("session_dir_a256cbc_hs512", |b| {
        b.iter(|| decrypt(black_box(&session_token), &dir64))
    });

    g.bench_function("raw_a256gcm_rs256", |b| {
        b.iter(|| (raw_gcm(black_box(&gcm_parts), &gcm_key), verify_inner()))
    });
    g.bench_function("raw_rsa_oaep_256_a256gcm_rs256", |b| {
        b.iter(|| (raw_rsa(), verify_inner()))
    });
    g.bench_function("decision_dir_a256gcm", |b| {
        b.iter(|| decide(&rt, &uncached, black_box(&gcm_view)))
    });
    g.bench_function("decision_rsa_oaep_256_a256gcm", |b| {
        b.iter(|| decide(&rt, &uncached, black_box(&rsa_view)))
    });
    g.bench_function("decision_session", |b| {
        b.iter(|| decide(&rt, &uncached, black_box(&session_view)))
    });
    g.bench_function("decision_session_cached", |b| {
        b.iter(|| decide(&rt, &cached, black_box(&session_view)))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&keys_dir);
    c.final_summary();

    let m = |b: &str| median(&dir, "jwe", b, started);
    println!("\nfrom the medians of this run (raw ÷ ours; 1.0 = no overhead):");
    for (raw, ours) in [
        ("raw_a256gcm", "dir_a256gcm"),
        ("raw_rsa_oaep_256_a256gcm", "rsa_oaep_256_a256gcm"),
        ("raw_a256cbc_hs512", "session_dir_a256cbc_hs512"),
        ("raw_a256gcm_rs256", "decision_dir_a256gcm"),
        (
            "raw_rsa_oaep_256_a256gcm_rs256",
            "decision_rsa_oaep_256_a256gcm",
        ),
        ("raw_a256cbc_hs512", "decision_session"),
        ("raw_a256cbc_hs512", "decision_session_cached"),
    ] {
        if let (Some(r), Some(o)) = (m(raw), m(ours)) {
            println!("  {ours}: {:.0} ns vs {raw} {:.0} ns = {:.3}", o, r, r / o);
        }
    }
}

/// The decoded segments of `token`.
fn parts(token: &str) -> Parts {
    let p: Vec<&str> = token.split('.').collect();
    let d = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap_or_else(|e| panic!("{e}"));
    Parts {
        aad: p[0].to_string(),
        key: d(p[1]),
        iv: d(p[2]),
        ciphertext: d(p[3]),
        tag: d(p[4]),
    }
}

/// HMAC-SHA-512 over AAD ‖ IV ‖ ciphertext ‖ AL, then AES-256-CBC with PKCS #7: the
/// A256CBC-HS512 steps of RFC 7518 §5.2.2.2 with the primitives alone.
fn raw_cbc(parts: &Parts, cek: &[u8]) -> usize {
    let (mac_key, enc_key) = cek.split_at(32);
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA512, mac_key));
    ctx.update(parts.aad.as_bytes());
    ctx.update(&parts.iv);
    ctx.update(&parts.ciphertext);
    ctx.update(&((parts.aad.len() as u64) * 8).to_be_bytes());
    let tag = ctx.sign();
    if constant_time::verify_slices_are_equal(&tag.as_ref()[..32], &parts.tag).is_err() {
        return 0;
    }
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, enc_key).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let iv: [u8; 16] = parts.iv.as_slice().try_into().unwrap_or([0; 16]);
    let mut in_out = parts.ciphertext.clone();
    key.decrypt(&mut in_out, DecryptionContext::Iv128(FixedLength::from(iv)))
        .map(|p| p.len())
        .unwrap_or(0)
}

/// The RSA key of the fixture as aws-lc-rs's OAEP decrypting key (via PKCS #8).
fn rsa_raw(jwk: &Value) -> OaepPrivateDecryptingKey {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rsa::{KeyPair, KeyPairComponents, PublicKeyComponents};
    let m = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let pair = KeyPair::from_components(&KeyPairComponents {
        public_key: PublicKeyComponents {
            n: m("n"),
            e: m("e"),
        },
        d: m("d"),
        p: m("p"),
        q: m("q"),
        dP: m("dp"),
        dQ: m("dq"),
        qInv: m("qi"),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let der = pair.as_der().unwrap_or_else(|e| panic!("{e}"));
    OaepPrivateDecryptingKey::new(
        PrivateDecryptingKey::from_pkcs8(der.as_ref()).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
