//! What a DPoP-bound decision costs (issue 21), next to its baselines measured in the
//! same run: RS256 access token bound (`cnf.jkt`) to an ES256 proof key,
//! `Authorizer::check` polled in place as in `benches/decision.rs`.
//!
//! - `dpop/raw_token_verify`: the access token's RS256 signature check alone, and
//!   `dpop/raw_proof_verify`: the proof's ES256 signature check alone, both with the
//!   library the decision uses (`KeyMaterial::verify`, aws-lc-rs) on keys parsed once.
//! - `dpop/bound_uncached`: the whole decision with the cache off (token and proof
//!   checked), and `dpop/bound_cached`: the token cached, the proof checked (every
//!   request's proof is checked, cached token or not); `dpop/bearer_uncached`: the same
//!   token without a binding, as a bearer token.
//! - `replay/insert_at_{1k,1m}`: one insert into the `jti` replay cache already holding
//!   a thousand or a million entries (O(1): the two should match).
//!
//! Each proof is made in the untimed setup of its iteration (a fresh `jti`, as in real
//! traffic). The bench prints the ratio of `bound_uncached` to the sum of the two raw
//! checks (target: at most 1.10).
//!
//! Run: `cargo bench --bench binding` (criterion's options after `--`).

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::{rand, signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::BatchSize;
use serde_json::{Value, json};
use support::{app_of, criterion, decide, fixtures, median, runtime, sign_rsa_1};
use tokengate::alg::{Alg, Crv};
use tokengate::app::App;
use tokengate::authz::{RequestView, Verdict};
use tokengate::binding::replay::ReplayCache;
use tokengate::decision::Decision;
use tokengate::keys::KeyMaterial;
use tokengate::keys::jwks::parse_set;

/// The fixed clock: after the token's `iat`, before its `exp`; every proof's `iat`.
const NOW: i64 = 1_800_000_000;

const HTU: &str = "http://api.example.com/orders/17";

/// The proof key: an ES256 key pair, its JWK and thumbprint.
struct ProofKey {
    pair: signature::EcdsaKeyPair,
    jwk: Value,
    jkt: String,
    material: KeyMaterial,
}

fn main() {
    // `TG_BENCH_COUNT=<case>:<n>`: n proofs made, then (but for `gen`) n raw proof
    // checks (`raw`), raw token checks (`token`), bearer decisions (`bearer`) or bound
    // decisions (`cached`, `uncached`), and nothing else: for instruction counts under
    // `valgrind --tool=cachegrind`, which this host's drifting timings cannot give.
    if let Ok(spec) = std::env::var("TG_BENCH_COUNT") {
        return count(&spec);
    }
    let started = SystemTime::now();
    let (mut c, dir) = criterion();
    let rt = runtime();
    let key = proof_key();
    let bound = mint(Some(&key.jkt));
    let bearer = mint(None);
    let counter = std::cell::Cell::new(0u64);
    let next_proof = || {
        counter.set(counter.get() + 1);
        proof(&key, &bound, counter.get())
    };

    let mut g = c.benchmark_group("dpop");
    // The raw checks, on keys parsed once.
    let rsa = rsa_1();
    let (input, sig) = signed_parts(&bound);
    assert!(rsa.material.verify(Alg::RS256, input.as_bytes(), &sig));
    g.bench_function("raw_token_verify", |b| {
        b.iter(|| {
            rsa.material
                .verify(Alg::RS256, black_box(input.as_bytes()), black_box(&sig))
        })
    });
    let sample = next_proof();
    let (p_input, p_sig) = signed_parts(&sample);
    assert!(key.material.verify(Alg::ES256, p_input.as_bytes(), &p_sig));
    g.bench_function("raw_proof_verify", |b| {
        b.iter(|| {
            key.material
                .verify(Alg::ES256, black_box(p_input.as_bytes()), black_box(&p_sig))
        })
    });

    // The same check as a verifier without a key cache does it: the point parsed from the
    // proof's bytes, then the signature.
    let point = point_of(&key);
    g.bench_function("raw_proof_verify_unparsed", |b| {
        b.iter(|| {
            signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                black_box(&point),
            )
            .verify(black_box(p_input.as_bytes()), black_box(&p_sig))
            .is_ok()
        })
    });
    g.bench_function("proof_key_parse", |b| {
        b.iter(|| {
            KeyMaterial::ec(
                Crv::P256,
                black_box(&point[1..33]),
                black_box(&point[33..65]),
            )
        })
    });

    for (name, cache) in [("bound_uncached", 0), ("bound_cached", 1000)] {
        let app = app(cache, &rt);
        let _ = check(&rt, &app, &bound, Some(&next_proof()));
        assert_allowed(name, &check(&rt, &app, &bound, Some(&next_proof())));
        g.bench_function(name, |b| {
            b.iter_batched(
                next_proof,
                |proof| check(&rt, &app, &bound, Some(&proof)),
                BatchSize::SmallInput,
            )
        });
    }
    let app = app(0, &rt);
    assert_allowed("bearer_uncached", &check(&rt, &app, &bearer, None));
    g.bench_function("bearer_uncached", |b| {
        b.iter(|| check(&rt, &app, black_box(&bearer), None))
    });
    g.finish();

    let mut g = c.benchmark_group("replay");
    // Steady state: the clock advances so that `held` entries are alive at any time
    // (each lives 60 s; the 16 buckets of the window expire one by one).
    for (name, held) in [("insert_at_1k", 1_000u64), ("insert_at_1m", 1_000_000)] {
        let at = |i: u64| NOW + i64::try_from(i * 60 / held).unwrap_or(0);
        let before = rss_kib();
        let cache = ReplayCache::with_max(4 * held as usize);
        for i in 0..held {
            cache.insert(replay_key(i), at(i) + 60, 90, at(i));
        }
        let grown = rss_kib().saturating_sub(before);
        println!(
            "replay cache holding {held} entries: RSS +{grown} KiB ({:.1} B per entry)",
            grown as f64 * 1024.0 / held as f64
        );
        let next = std::cell::Cell::new(held);
        g.bench_function(name, |b| {
            b.iter(|| {
                let i = next.get() + 1;
                next.set(i);
                let seen = cache.insert(replay_key(i), at(i) + 60, 90, at(i));
                assert_eq!(seen, tokengate::binding::replay::Seen::New);
            })
        });
        println!("  (still holding {} entries)", cache.len());
    }
    g.finish();
    c.final_summary();
    report(&dir, started);
}

fn count(spec: &str) {
    let (case, n) = spec
        .split_once(':')
        .and_then(|(c, n)| Some((c, n.parse::<u64>().ok()?)))
        .unwrap_or_else(|| {
            panic!("TG_BENCH_COUNT=<gen|raw|token|bearer|cached|uncached>:<n>, not {spec}")
        });
    let rt = runtime();
    let key = proof_key();
    let bound = mint(Some(&key.jkt));
    let proofs: Vec<String> = (0..n).map(|i| proof(&key, &bound, i)).collect();
    match case {
        "gen" => {}
        "token" => {
            let rsa = rsa_1();
            for _ in 0..n {
                let (input, sig) = signed_parts(&bound);
                assert!(black_box(rsa.material.verify(
                    Alg::RS256,
                    input.as_bytes(),
                    &sig
                )));
            }
        }
        "bearer" => {
            let app = app(0, &rt);
            let bearer = mint(None);
            for _ in 0..n {
                assert_allowed(case, &check(&rt, &app, &bearer, None));
            }
        }
        "raw" => {
            for p in &proofs {
                let (input, sig) = signed_parts(p);
                let point = point_of(&key);
                let ok =
                    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                        .verify(input.as_bytes(), &sig)
                        .is_ok();
                assert!(black_box(ok));
            }
        }
        "cached" | "uncached" => {
            let app = app(if case == "cached" { 1000 } else { 0 }, &rt);
            for p in &proofs {
                assert_allowed(case, &check(&rt, &app, &bound, Some(p)));
            }
        }
        other => panic!("unknown case {other}"),
    }
}

/// The decision of a request carrying `token` (as `DPoP` with `proof`, else `Bearer`).
fn check(rt: &tokio::runtime::Runtime, app: &App, token: &str, proof: Option<&str>) -> Verdict {
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), "api.example.com".into()),
        ("user-agent".into(), "bench/1.0".into()),
        ("accept".into(), "application/json".into()),
    ];
    match proof {
        Some(p) => {
            headers.push(("authorization".into(), format!("DPoP {token}")));
            headers.push(("dpop".into(), p.to_string()));
        }
        None => headers.push(("authorization".into(), format!("Bearer {token}"))),
    }
    let view = RequestView {
        method: "GET",
        target: "/orders/17",
        headers: headers.as_slice(),
        peer: Default::default(),
    };
    decide(rt, app, &view)
}

fn assert_allowed(name: &str, v: &Verdict) {
    assert!(
        matches!(v.decision, Decision::Allow(_)),
        "{name}: {:?}",
        v.decision
    );
}

fn app(cache_entries: u64, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let cfg = json!({
        "listeners": {"authz_http": null, "authz_grpc": null, "admin": null},
        "issuers": [{
            "name": "main", "issuer": "https://issuer.example", "audiences": ["orders-api"],
            "key_sources": [{"jwks_file": fixtures().join("jwks.json")}]
        }],
        "cache": {"max_entries": cache_entries}
    });
    app_of(&cfg, NOW, rt)
}

fn proof_key() -> ProofKey {
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let rng = rand::SystemRandom::new();
    let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng)
        .unwrap_or_else(|e| panic!("ES256 key: {e}"));
    let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref())
        .unwrap_or_else(|e| panic!("pkcs8: {e}"));
    let point = signature::KeyPair::public_key(&pair).as_ref().to_vec();
    let material = KeyMaterial::ec(Crv::P256, &point[1..33], &point[33..65])
        .unwrap_or_else(|e| panic!("P-256 point: {e}"));
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    ProofKey {
        pair,
        jwk,
        jkt: material.thumbprint().to_string(),
        material,
    }
}

/// A proof for `GET HTU` with `token`, numbered `n` (its `jti`).
fn proof(key: &ProofKey, token: &str, n: u64) -> String {
    let ath = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ));
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk});
    let claims =
        json!({"htm": "GET", "htu": HTU, "iat": NOW, "jti": format!("bench-{n}"), "ath": ath});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key
        .pair
        .sign(&rand::SystemRandom::new(), input.as_bytes())
        .unwrap_or_else(|e| panic!("sign: {e}"));
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// An access token of the fixture issuer, bound to `jkt` when given.
fn mint(jkt: Option<&str>) -> String {
    let mut claims = json!({
        "iss": "https://issuer.example", "aud": "orders-api", "sub": "alice",
        "scope": "orders:read orders:write", "iat": 1_700_000_000, "exp": 4_102_444_800_i64,
    });
    if let Some(jkt) = jkt {
        claims["cnf"] = json!({ "jkt": jkt });
    }
    sign_rsa_1(&claims)
}

/// The fixture key `rsa-1`, parsed from `jwks.json`.
fn rsa_1() -> tokengate::keys::LoadedKey {
    let jwks =
        std::fs::read(fixtures().join("jwks.json")).unwrap_or_else(|e| panic!("jwks.json: {e}"));
    parse_set(&jwks, true)
        .unwrap_or_else(|e| panic!("jwks.json: {e}"))
        .keys
        .into_iter()
        .find(|k| k.id == "rsa-1")
        .unwrap_or_else(|| panic!("no rsa-1"))
}

/// The proof key's public point, uncompressed (`04 ‖ x ‖ y`), as a proof carries it.
fn point_of(key: &ProofKey) -> Vec<u8> {
    let mut p = vec![4u8];
    for m in ["x", "y"] {
        let coord = key.jwk[m].as_str().unwrap_or_default();
        p.extend(URL_SAFE_NO_PAD.decode(coord).unwrap_or_default());
    }
    p
}

/// A compact JWS's signing input and decoded signature.
fn signed_parts(jws: &str) -> (String, Vec<u8>) {
    let (input, sig) = jws.rsplit_once('.').unwrap_or_else(|| panic!("not a JWS"));
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap_or_else(|e| panic!("signature: {e}"));
    (input.to_string(), sig)
}

/// This process's resident set size, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn replay_key(i: u64) -> [u8; 16] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_le_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d.as_ref()[..16]);
    k
}

fn report(dir: &std::path::Path, since: SystemTime) {
    let m = |g: &str, b: &str| median(dir, g, b, since);
    println!("\nfrom the medians of this run:");
    if let (Some(token), Some(proof), Some(bound)) = (
        m("dpop", "raw_token_verify"),
        m("dpop", "raw_proof_verify"),
        m("dpop", "bound_uncached"),
    ) {
        println!(
            "  dpop: bound_uncached {:.2} µs / (raw token {:.2} µs + raw proof {:.2} µs) = {:.3} (target ≤ 1.10)",
            bound / 1e3,
            token / 1e3,
            proof / 1e3,
            bound / (token + proof)
        );
    }
    if let (Some(cached), Some(proof)) = (m("dpop", "bound_cached"), m("dpop", "raw_proof_verify"))
    {
        println!(
            "  dpop: bound_cached {:.2} µs / raw proof {:.2} µs = {:.3}",
            cached / 1e3,
            proof / 1e3,
            cached / proof
        );
    }
    if let (Some(small), Some(large)) = (m("replay", "insert_at_1k"), m("replay", "insert_at_1m")) {
        println!(
            "  replay: insert at 1k {small:.0} ns, at 1M {large:.0} ns (ratio {:.2})",
            large / small
        );
    }
}
