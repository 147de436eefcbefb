//! What the JWE decryptor adds to the raw primitives (issue 19, measured before it is
//! wired into decisions): each case next to the same primitives called directly with
//! keys prepared once, on tokens jwcrypto made (`tests/fixtures/jwe-bench.json`):
//!
//! - `jwe/dir_a256gcm` vs `jwe/raw_a256gcm`: a nested access token under `dir` + A256GCM
//!   (parse, key, AES-GCM open) against AES-GCM open alone;
//! - `jwe/rsa_oaep_256_a256gcm` vs `jwe/raw_rsa_oaep_256_a256gcm`: RSA-OAEP-256 unwrap of
//!   the content key, then AES-GCM;
//! - `jwe/session_dir_a256cbc_hs512` vs `jwe/raw_a256cbc_hs512`: a PingGateway-style
//!   session under `dir` + A256CBC-HS512 against HMAC-SHA-512 and AES-256-CBC alone.
//!
//! `jwe/parse_dir_a256gcm` is the parse alone. The bench prints raw ÷ decryptor for each (issue 19's floors, for whole decisions:
//! ≥ 0.85 for tokens, ≥ 0.8 for sessions). Run: `cargo bench --bench jwe`.

// Only the fixtures and the medians: the decision helpers are for the other benches.
#[allow(dead_code)]
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
use criterion::Criterion;
use serde_json::Value;
use support::{criterion_dir, fixtures, median};
use tokengate::jwe::{self, DecryptionKey, Enc, KeyAlg};

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
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
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
    assert_eq!(raw_gcm(&gcm_parts, &gcm_key), s("nested_plaintext").len());
    assert_eq!(
        raw_cbc(&session_parts, &session_key),
        s("session_plaintext").len()
    );

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
    g.bench_function("raw_rsa_oaep_256_a256gcm", |b| {
        b.iter(|| {
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
        })
    });
    g.bench_function("rsa_oaep_256_a256gcm", |b| {
        b.iter(|| decrypt(black_box(&rsa_token), &rsa))
    });
    g.bench_function("raw_a256cbc_hs512", |b| {
        b.iter(|| raw_cbc(black_box(&session_parts), &session_key))
    });
    g.bench_function("session_dir_a256cbc_hs512", |b| {
        b.iter(|| decrypt(black_box(&session_token), &dir64))
    });
    g.finish();
    c.final_summary();

    let m = |b: &str| median(&dir, "jwe", b, started);
    println!("\nfrom the medians of this run (raw ÷ decryptor; 1.0 = no overhead):");
    for (raw, ours) in [
        ("raw_a256gcm", "dir_a256gcm"),
        ("raw_rsa_oaep_256_a256gcm", "rsa_oaep_256_a256gcm"),
        ("raw_a256cbc_hs512", "session_dir_a256cbc_hs512"),
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
