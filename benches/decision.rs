//! The decision path without I/O, next to a raw verify of the same signature with the
//! same crypto library (aws-lc-rs, key parsed once) in the same run. The ratio
//! `raw time / decision time` is what counts: 1.0 would mean tokengate adds nothing to
//! the signature check. Run: `cargo bench --bench decision`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use tokengate::app::App;
use tokengate::authz::RequestView;
use tokengate::clock::FixedClock;
use tokengate::config::Config;
use tokengate::metrics::{Listener, Metrics};

const NOW: i64 = 1_800_000_000;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn token(name: &str) -> String {
    let text = std::fs::read_to_string(fixtures().join("tokens.json")).unwrap_or_default();
    let map: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    map[name].as_str().unwrap_or_default().to_string()
}

fn spki(name: &str) -> Vec<u8> {
    let pem = std::fs::read(fixtures().join(format!("{name}.pub.pem"))).unwrap_or_default();
    x509_parser::pem::parse_x509_pem(&pem)
        .map(|(_, p)| p.contents)
        .unwrap_or_default()
}

fn app(cache_entries: u64, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let cfg = serde_json::json!({
        "listeners": {"authz_http": null, "authz_grpc": null, "admin": null},
        "issuers": [{
            "name": "main", "issuer": "https://issuer.example", "audiences": ["orders-api"],
            "algorithms": ["RS256", "ES256", "EdDSA", "HS256"],
            "key_sources": [{"jwks_file": fixtures().join("jwks.json")}]
        }],
        "cache": {"max_entries": cache_entries}
    });
    let config = Config::parse(Path::new("/bench/config.json"), cfg.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let _guard = rt.enter();
    App::new(
        config,
        rt.handle().clone(),
        Arc::new(FixedClock::new(NOW)),
        Arc::new(Metrics::new()),
        Arc::new(|_: &str| None),
    )
}

fn bench_alg(
    c: &mut Criterion,
    label: &str,
    token_name: &str,
    raw: Option<(&'static dyn VerificationAlgorithm, Vec<u8>)>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let uncached = app(0, &rt);
    let cached = app(1000, &rt);
    let t = token(token_name);
    let headers = vec![("authorization".to_string(), format!("Bearer {t}"))];
    let view = RequestView {
        method: "GET",
        path: "/orders",
        headers: headers.as_slice(),
    };
    let mut g = c.benchmark_group(label);
    if let Some((alg, key)) = raw {
        let key = ParsedPublicKey::new(alg, &key).unwrap_or_else(|e| panic!("{e}"));
        let (input, sig) = t.rsplit_once('.').unwrap_or_default();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
        g.bench_function("raw_verify", |b| {
            b.iter(|| key.verify_sig(black_box(input.as_bytes()), black_box(&sig)))
        });
    }
    g.bench_function("decision_known_kid", |b| {
        b.iter(|| rt.block_on(uncached.authorizer().check(Listener::Cli, black_box(&view))))
    });
    let _ = rt.block_on(cached.authorizer().check(Listener::Cli, &view));
    g.bench_function("decision_cache_hit", |b| {
        b.iter(|| rt.block_on(cached.authorizer().check(Listener::Cli, black_box(&view))))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_alg(
        c,
        "RS256",
        "GOOD_RS256",
        Some((&signature::RSA_PKCS1_2048_8192_SHA256, spki("rsa-1"))),
    );
    bench_alg(
        c,
        "ES256",
        "GOOD_ES256",
        Some((&signature::ECDSA_P256_SHA256_FIXED, spki("ec-p256"))),
    );
    bench_alg(c, "EdDSA", "GOOD_EDDSA", None);
    bench_alg(c, "HS256", "GOOD_HS256", None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let a = app(0, &rt);
    let mut g = c.benchmark_group("denials");
    for (name, t) in [
        ("expired", token("EXPIRED")),
        ("bad_signature", token("FOREIGN_KNOWN_KID")),
        ("malformed", "abc.def.ghi".to_string()),
    ] {
        let headers = vec![("authorization".to_string(), format!("Bearer {t}"))];
        let view = RequestView {
            method: "GET",
            path: "/",
            headers: headers.as_slice(),
        };
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(a.authorizer().check(Listener::Cli, black_box(&view))))
        });
    }
    g.finish();
}

criterion_group!(decision, benches);
criterion_main!(decision);
