//! What route rules and traces add to a decision (issue 20), each next to its baseline
//! measured in the same run, RS256, `Authorizer::check` polled in place as in
//! `benches/decision.rs`:
//!
//! - `rules/{cached,uncached}_no_rules` and `rules/{cached,uncached}_three_rules`: the
//!   same token and request (six headers) on a route without rules and on one with three
//!   (group membership, a header equal to a claim, the method). Rules run per request,
//!   so the cached decision shows their cost most plainly.
//! - `tracing/uncached_off`: the uncached decision with telemetry never started, and
//!   `tracing/hook_off`: what a check adds when it is off (the span decision and an
//!   instrumented future), alone.
//! - `tracing/uncached_on_0.01`: the same decision after telemetry started with
//!   `sample_ratio` 0.01 (the SDK, the tracing layer installed, an exporter to a closed
//!   port), and `tracing/uncached_on_sampled`: a request whose `traceparent` says
//!   sampled (a span every time); `tracing/hook_on_0.01`: the hook alone with telemetry on.
//!
//! The subscriber is process-wide, so every `off` benchmark runs before telemetry starts.
//! At the end the bench prints the differences and ratios of this run's medians.
//! `TG_BENCH_INTERLEAVED=<rounds>` times the cached decision without and with the rules
//! in alternating blocks instead (the host's drift then falls on both alike), and
//! `TG_BENCH_COUNT=<case>:<n>` runs n decisions for an instruction count.
//! Because `off` and `on` then run minutes apart, `TG_BENCH_TELEMETRY=off|on` runs only
//! `tracing_ab/uncached` with telemetry off or started first, so that the two can
//! alternate as separate processes (`bench/policy_ab.sh`).
//!
//! Run: `cargo bench --bench policy` (criterion's options after `--`).

mod support;

use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use serde_json::json;
use support::{app_of, criterion, decide, fixtures, median, runtime, sign_rsa_1};
use tokengate::app::App;
use tokengate::authz::{RequestView, Verdict};
use tokengate::config::Config;
use tokengate::decision::{AllowReason, Decision};
use tokengate::rules::{NameUse, RouteRules, Rule, RuleClaims, RuleInput};
use tokengate::telemetry::{self, Telemetry};
use tokengate::token::jws::ClaimSet;
use tracing::Instrument as _;

/// The fixed clock: after the token's `iat`, before its `exp`.
const NOW: i64 = 1_800_000_000;

const RULES: [&str; 3] = [
    "has(claims.groups) && 'billing' in claims.groups",
    "request.headers['x-tenant'] == claims.tenant",
    "request.method in ['GET', 'POST'] || claims.acr == 'urn:example:mfa'",
];

fn main() {
    let started = SystemTime::now();
    // `TG_BENCH_TELEMETRY=off|on`: only `tracing_ab/uncached`, with telemetry never
    // started or started first (at 0.01); run the two in turns, as separate processes.
    if let Ok(mode) = std::env::var("TG_BENCH_TELEMETRY") {
        return tracing_ab(mode == "on", started);
    }
    // `TG_BENCH_COUNT=<case>:<n>`: n decisions of one case and nothing else, for an
    // instruction count under `valgrind --tool=cachegrind` (`bench/policy_ab.sh`): this
    // machine's timings drift by tens of per cent within minutes; instruction counts
    // do not.
    if let Ok(spec) = std::env::var("TG_BENCH_COUNT") {
        return count(&spec);
    }
    // `TG_BENCH_INTERLEAVED=<rounds>`: the cached decision without and with the three
    // rules in alternating blocks, so that the host's drift falls on both alike.
    if let Ok(rounds) = std::env::var("TG_BENCH_INTERLEAVED") {
        return interleaved(rounds.parse().unwrap_or(200));
    }
    let (mut c, dir) = criterion();
    let rt = runtime();
    let token = mint();
    let plain = request(&token, None);

    let mut g = c.benchmark_group("rules");
    for (name, cache, rules) in [
        ("cached_no_rules", 1000, false),
        ("cached_three_rules", 1000, true),
        ("uncached_no_rules", 0, false),
        ("uncached_three_rules", 0, true),
    ] {
        let app = app(cache, rules, &rt);
        let view = view(&plain);
        let _ = decide(&rt, &app, &view);
        assert_allowed(name, &decide(&rt, &app, &view));
        g.bench_function(name, |b| b.iter(|| decide(&rt, &app, black_box(&view))));
    }
    g.finish();

    // The rules alone, on claims already converted: what each part costs.
    let claims_json = r#"{"iss":"https://issuer.example","aud":"orders-api","sub":"alice",
        "scope":"orders:read orders:write","iat":1700000000,"exp":4102444800,
        "groups":["ops","billing","support"],"tenant":"acme","acr":"urn:example:pwd"}"#;
    let set: ClaimSet<'_> =
        serde_json::from_str(claims_json).unwrap_or_else(|e| panic!("claims: {e}"));
    let mut wanted = NameUse::Names(Vec::new());
    for r in RULES {
        wanted.merge(
            Rule::compile(r)
                .unwrap_or_else(|e| panic!("{r}: {e}"))
                .claims_read(),
        );
    }
    let rule_claims = RuleClaims::of(&set, &wanted, 0);
    let mut g = c.benchmark_group("rule_parts");
    g.bench_function("claims_conversion", |b| {
        b.iter(|| RuleClaims::of(black_box(&set), &wanted, 0))
    });
    for (name, sources) in [
        ("true", &["true"][..]),
        ("claims_only", &RULES[..1]),
        ("request_method", &["request.method == 'POST'"][..]),
        ("three", &RULES[..]),
    ] {
        let rules: Vec<Arc<Rule>> = sources
            .iter()
            .map(|s| Arc::new(Rule::compile(s).unwrap_or_else(|e| panic!("{s}: {e}"))))
            .collect();
        // No memo slots: every rule runs every time, as on a token's first request.
        let rules = RouteRules::new(&rules, &mut 0);
        let input = RuleInput {
            method: "POST",
            path: "/orders/17",
            headers: plain.as_slice(),
            issuer: "main",
            key: "rsa-1",
        };
        assert!(rules.all_allow(&rule_claims, &input), "{name}");
        g.bench_function(name, |b| {
            b.iter(|| black_box(&rules).all_allow(&rule_claims, black_box(&input)))
        });
    }
    g.finish();

    let uncached = app(0, false, &rt);
    let view_plain = view(&plain);
    let sampled = request(
        &token,
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let view_sampled = view(&sampled);
    let mut g = c.benchmark_group("tracing");
    assert_allowed("uncached_off", &decide(&rt, &uncached, &view_plain));
    g.bench_function("uncached_off", |b| {
        b.iter(|| decide(&rt, &uncached, black_box(&view_plain)))
    });
    g.bench_function("hook_off", |b| {
        b.iter(|| {
            let span = telemetry::check_span("authz_http", black_box(plain.as_slice()), None);
            poll_ready(std::future::ready(black_box(1)).instrument(span))
        })
    });

    // Telemetry on from here to the end of the process.
    let (_telemetry, exports) = start_telemetry();
    g.bench_function("hook_on_0.01", |b| {
        b.iter(|| {
            let span = telemetry::check_span("authz_http", black_box(plain.as_slice()), None);
            poll_ready(std::future::ready(black_box(1)).instrument(span))
        })
    });
    assert_allowed("uncached_on_0.01", &decide(&rt, &uncached, &view_plain));
    g.bench_function("uncached_on_0.01", |b| {
        b.iter(|| decide(&rt, &uncached, black_box(&view_plain)))
    });
    assert_allowed(
        "uncached_on_sampled",
        &decide(&rt, &uncached, &view_sampled),
    );
    g.bench_function("uncached_on_sampled", |b| {
        b.iter(|| decide(&rt, &uncached, black_box(&view_sampled)))
    });
    g.finish();
    c.final_summary();
    report(&dir, started);
    drop(exports);
}

/// Telemetry at `sample_ratio` 0.01 exporting (in vain) to a closed port, with its
/// layer installed as the process's subscriber, and the runtime that carries exports.
fn start_telemetry() -> (Telemetry, tokio::runtime::Runtime) {
    let exports = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("export runtime: {e}"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("a closed port: {e}"));
    let config = Config::parse(
        Path::new("/bench/telemetry.json"),
        json!({
            "issuers": [{"name": "x", "key_sources": [{"jwks_file": "x.json"}]}],
            "telemetry": {"otlp_endpoint": format!("http://{closed}"), "sample_ratio": 0.01}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("telemetry config: {e}"));
    let telemetry = {
        let _in = exports.enter();
        Telemetry::start(
            config
                .telemetry
                .as_ref()
                .unwrap_or_else(|| panic!("no telemetry")),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(telemetry.layer())
            .init();
    }
    (telemetry, exports)
}

/// `rounds` times: 2,000 cached decisions on the route without rules, then 2,000 on the
/// route with three; prints the medians of the per-decision times and of the per-round
/// differences.
fn interleaved(rounds: usize) {
    let rt = runtime();
    let (without, with) = (app(1000, false, &rt), app(1000, true, &rt));
    let headers = request(&mint(), None);
    let view = view(&headers);
    for app in [&without, &with] {
        for _ in 0..10_000 {
            black_box(decide(&rt, app, &view));
        }
        assert_allowed("interleaved", &decide(&rt, app, &view));
    }
    const BLOCK: u32 = 2000;
    let r = support::alternate(
        rounds,
        BLOCK,
        &|| {
            black_box(decide(&rt, &without, black_box(&view)));
        },
        &|| {
            black_box(decide(&rt, &with, black_box(&view)));
        },
    );
    println!(
        "interleaved, {rounds} rounds of {BLOCK}: no rules {:.0} ns, three rules {:.0} ns; \
         three rules add {:.2} µs (median of per-round differences; 10th-90th percentile \
         {:.2}-{:.2} µs)",
        r.a,
        r.b,
        r.diff / 1e3,
        r.diff_p10 / 1e3,
        r.diff_p90 / 1e3
    );
}

/// Runs `n` decisions of `case` (see `main`).
fn count(spec: &str) {
    let (case, n) = spec
        .split_once(':')
        .and_then(|(c, n)| Some((c, n.parse::<u64>().ok()?)))
        .unwrap_or_else(|| panic!("TG_BENCH_COUNT={spec}: want <case>:<n>"));
    let (cache, rules, on) = match case {
        "cached_no_rules" => (1000, false, false),
        "cached_three_rules" => (1000, true, false),
        "uncached_off" => (0, false, false),
        "uncached_on" => (0, false, true),
        other => panic!("unknown case {other}"),
    };
    let _on = on.then(start_telemetry);
    let rt = runtime();
    let app = app(cache, rules, &rt);
    let headers = request(&mint(), None);
    let view = view(&headers);
    assert_allowed(case, &decide(&rt, &app, &view));
    for _ in 0..n {
        black_box(decide(&rt, &app, black_box(&view)));
    }
}

/// `tracing_ab/uncached`, telemetry off or on (see `main`).
fn tracing_ab(on: bool, started: SystemTime) {
    let (mut c, dir) = criterion();
    let _on = on.then(start_telemetry);
    let rt = runtime();
    let app = app(0, false, &rt);
    let headers = request(&mint(), None);
    let view = view(&headers);
    let name = if on {
        "uncached_on_0.01"
    } else {
        "uncached_off"
    };
    assert_allowed(name, &decide(&rt, &app, &view));
    let mut g = c.benchmark_group("tracing_ab");
    g.bench_function(name, |b| b.iter(|| decide(&rt, &app, black_box(&view))));
    g.finish();
    if let Some(m) = median(&dir, "tracing_ab", name, started) {
        println!("tracing_ab/{name}: median {m:.0} ns");
    }
}

/// An app with the fixture RS256 key and one route `/orders`, with the three rules or
/// none.
fn app(cache_entries: u64, rules: bool, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let jwks = fixtures().join("jwks.json");
    let route = if rules {
        json!({"name": "orders", "path_prefix": "/orders", "rules": RULES})
    } else {
        json!({"name": "orders", "path_prefix": "/orders"})
    };
    let cfg = json!({
        "listeners": {"authz_http": null, "authz_grpc": null, "admin": null},
        "issuers": [{
            "name": "main", "issuer": "https://issuer.example", "audiences": ["orders-api"],
            "key_sources": [{"jwks_file": jwks}]
        }],
        "routes": [route],
        "cache": {"max_entries": cache_entries}
    });
    app_of(&cfg, NOW, rt)
}

/// A request with a usual set of headers, the token, and maybe a `traceparent`.
fn request(token: &str, traceparent: Option<&str>) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("x-request-id", "3f1c2a90-5b7e-4d2a-9c61-0a1b2c3d4e5f"),
        ("x-tenant", "acme"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
    .collect();
    h.push(("authorization".into(), format!("Bearer {token}")));
    if let Some(tp) = traceparent {
        h.push(("traceparent".into(), tp.into()));
    }
    h
}

fn view(headers: &[(String, String)]) -> RequestView<'_, [(String, String)]> {
    RequestView {
        method: "POST",
        target: "/orders/17",
        headers,
        peer: Default::default(),
    }
}

fn poll_ready<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn assert_allowed(bench: &str, verdict: &Verdict) {
    assert!(
        matches!(&verdict.decision, Decision::Allow(a) if a.reason == AllowReason::Ok),
        "{bench}: expected an allow, got {:?}",
        verdict.decision
    );
}

/// An RS256 token of the fixture key `rsa-1` in the billing group of tenant `acme`.
fn mint() -> String {
    sign_rsa_1(&json!({
        "iss": "https://issuer.example", "aud": "orders-api", "sub": "alice",
        "scope": "orders:read orders:write", "iat": 1_700_000_000, "exp": 4_102_444_800_i64,
        "groups": ["ops", "billing", "support"], "tenant": "acme", "acr": "urn:example:pwd",
    }))
}

fn report(dir: &Path, since: SystemTime) {
    let m = |g: &str, b: &str| median(dir, g, b, since);
    println!("\nfrom the medians of this run:");
    for kind in ["cached", "uncached"] {
        if let (Some(without), Some(with)) = (
            m("rules", &format!("{kind}_no_rules")),
            m("rules", &format!("{kind}_three_rules")),
        ) {
            println!(
                "  rules, {kind}: three rules add {:.2} µs ({:.0} ns without, {:.0} ns with)",
                (with - without) / 1e3,
                without,
                with
            );
        }
    }
    if let (Some(off), Some(hook)) = (m("tracing", "uncached_off"), m("tracing", "hook_off")) {
        println!(
            "  tracing off: the hook is {hook:.1} ns, {:.3} % of the uncached decision",
            hook / off * 100.0
        );
    }
    if let (Some(off), Some(hook)) = (m("tracing", "uncached_off"), m("tracing", "hook_on_0.01")) {
        println!(
            "  tracing on at 0.01: the hook is {hook:.1} ns on average, {:.3} % of the uncached decision",
            hook / off * 100.0
        );
    }
    for on in ["uncached_on_0.01", "uncached_on_sampled"] {
        if let (Some(off), Some(v)) = (m("tracing", "uncached_off"), m("tracing", on)) {
            println!(
                "  tracing {on}: {:+.2} % over off ({off:.0} ns → {v:.0} ns)",
                (v / off - 1.0) * 100.0
            );
        }
    }
}
