//! What the criterion benches share: the fixtures, the decision polled in place, and
//! the medians criterion wrote in this run.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use serde_json::Value;
use tokengate::app::App;
use tokengate::authz::{RequestView, Verdict};
use tokengate::clock::FixedClock;
use tokengate::config::Config;
use tokengate::metrics::{Listener, Metrics};
use tokengate::token::extract::Headers;

/// A current-thread runtime with every driver on (the benches poll decisions in place).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
}

/// The app of config `cfg` (JSON) on `rt`, its clock fixed at `now`, with every key
/// source loaded before it returns.
pub fn app_of(cfg: &Value, now: i64, rt: &tokio::runtime::Runtime) -> Arc<App> {
    let config = Config::parse(Path::new("/bench/config.json"), cfg.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    let _guard = rt.enter();
    App::new(
        config,
        rt.handle().clone(),
        Arc::new(FixedClock::new(now)),
        Arc::new(Metrics::new()),
        Arc::new(|_: &str| None),
    )
}

/// An `at+jwt` of `claims`, RS256 with the fixture key `rsa-1` (kid `rsa-1`). (The
/// decision bench uses the fixture tokens only.)
#[allow(dead_code)]
pub fn sign_rsa_1(claims: &Value) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey};
    let header = serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"});
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(&header), b64(claims));
    let pem = std::fs::read(fixtures().join("private/rsa-1.key.pem"))
        .unwrap_or_else(|e| panic!("rsa-1.key.pem: {e}"));
    let key = EncodingKey::from_rsa_pem(&pem).unwrap_or_else(|e| panic!("rsa-1: {e}"));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256)
        .unwrap_or_else(|e| panic!("signing: {e}"));
    format!("{input}.{sig}")
}

/// `tests/fixtures`.
pub fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// One decision, polled in place: every benchmarked path completes without waiting (no
/// refetch), so the runtime's `block_on` (whose bookkeeping is not tokengate's cost: a
/// listener polls `check` inside a task it already runs) is only the fallback.
pub fn decide<H: Headers + ?Sized + Sync>(
    rt: &tokio::runtime::Runtime,
    app: &App,
    view: &RequestView<'_, H>,
) -> Verdict {
    let mut fut = std::pin::pin!(app.authorizer().check(Listener::AuthzHttp, view));
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => rt.block_on(fut),
    }
}

/// Criterion configured from the command line, writing to [`criterion_dir`] (returned
/// too: [`median`] reads this run's results from it).
#[allow(dead_code)]
pub fn criterion() -> (criterion::Criterion, PathBuf) {
    let dir = criterion_dir();
    let c = criterion::Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    (c, dir)
}

/// Where criterion writes: `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else
/// `target/criterion` in the package (criterion's own order without its `cargo metadata`
/// step; the benches pass it to criterion so that both agree).
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("criterion")
}

/// The median (ns) criterion wrote for `group/bench` during this run (`since`): None when
/// the benchmark did not run (filtered out, `--test`, `--list`, `--baseline`) or the file
/// cannot be read.
pub fn median(dir: &Path, group: &str, bench: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(group).join(bench).join("new/estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let text = std::fs::read(&path).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// `a` and `b` timed in alternating blocks of `block` calls, `rounds` times (A B, then B
/// A, so that neither always runs first and the host's drift falls on both alike): the
/// median ns per call of each, and the median, 10th and 90th percentile of the per-round
/// ratios a ÷ b and differences b − a (ns).
#[allow(dead_code)]
pub struct Alternated {
    pub a: f64,
    pub b: f64,
    pub ratio: f64,
    pub ratio_p10: f64,
    pub ratio_p90: f64,
    pub diff: f64,
    pub diff_p10: f64,
    pub diff_p90: f64,
}

#[allow(dead_code)]
pub fn alternate(rounds: usize, block: u32, a: &dyn Fn(), b: &dyn Fn()) -> Alternated {
    let time = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        for _ in 0..block {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(block)
    };
    let (mut xs, mut ys, mut rs, mut ds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds.max(1) {
        let (x, y) = if i % 2 == 0 {
            let x = time(a);
            (x, time(b))
        } else {
            let y = time(b);
            (time(a), y)
        };
        xs.push(x);
        ys.push(y);
        rs.push(x / y);
        ds.push(y - x);
    }
    for v in [&mut xs, &mut ys, &mut rs, &mut ds] {
        v.sort_by(f64::total_cmp);
    }
    let (mid, p10, p90) = (xs.len() / 2, xs.len() / 10, xs.len() * 9 / 10);
    Alternated {
        a: xs[mid],
        b: ys[mid],
        ratio: rs[mid],
        ratio_p10: rs[p10],
        ratio_p90: rs[p90],
        diff: ds[mid],
        diff_p10: ds[p10],
        diff_p90: ds[p90],
    }
}

/// The signing input and the decoded signature of a compact JWS.
#[allow(dead_code)]
pub fn signing_input_and_signature(token: &str) -> (&str, Vec<u8>) {
    use base64::Engine as _;
    let (input, sig) = token
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("not a compact JWS: {token}"));
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap_or_else(|e| panic!("signature of {token}: {e}"));
    (input, sig)
}
