//! The refresh policy of a remote JWKS source, on tokio's paused clock with a scripted
//! [`Fetcher`]: every delay is asserted to the second, and no test waits in real time.
//! (`tests/jwks_remote.rs` keeps the wiring tests against a real HTTP server.)

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex as StdMutex;

use serde_json::{Value, json};

use super::*;
use crate::keys::RevokedSet;
use crate::metrics::Metrics;

const JWKS_URL: &str = "https://as.example/jwks";
const BASE: &str = "https://as.example";
const DISCOVERY_URL: &str = "https://as.example/.well-known/openid-configuration";

/// Seconds since the epoch, following tokio's (paused) clock.
struct TokioClock {
    start: Instant,
    base: i64,
}

impl Clock for TokioClock {
    fn now(&self) -> i64 {
        self.base + i64::try_from(self.start.elapsed().as_secs()).unwrap_or(i64::MAX)
    }
}

/// What the scripted server answers to one GET.
#[derive(Debug, Clone)]
enum Reply {
    /// The document at the URL, with its ETag and Cache-Control (304 on a matching
    /// `If-None-Match`).
    Serve,
    /// This status, no body.
    Status(u16),
    /// 200 with this body.
    Body(Vec<u8>),
    /// No response at all (connection refused).
    Fail,
    /// A response that never comes.
    Hang,
    /// [`Reply::Serve`] after this long.
    Slow(Duration),
}

/// A document the scripted server holds.
#[derive(Debug, Clone, Default)]
struct Doc {
    body: String,
    etag: Option<String>,
    cache_control: Option<String>,
    /// Cache-Control sent with a 304.
    cache_control_304: Option<String>,
}

/// One GET the source made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    /// Seconds after the test started.
    at: u64,
    url: String,
    if_none_match: Option<String>,
}

#[derive(Default)]
struct Script {
    docs: HashMap<String, Doc>,
    /// Replies for the next calls, in order; [`Reply::Serve`] once empty.
    next: VecDeque<Reply>,
    calls: Vec<Call>,
}

/// The scripted network.
struct Scripted {
    start: Instant,
    script: StdMutex<Script>,
}

impl Scripted {
    fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        let mut s = self.script.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    fn call_times(&self) -> Vec<u64> {
        self.calls().iter().map(|c| c.at).collect()
    }

    fn publish(&self, url: &str, doc: Doc) {
        self.with(|s| s.docs.insert(url.to_string(), doc));
    }

    fn then(&self, replies: impl IntoIterator<Item = Reply>) {
        self.with(|s| s.next.extend(replies));
    }
}

impl Fetcher for Scripted {
    fn get<'a>(
        &'a self,
        url: &'a str,
        if_none_match: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, SourceError>> + Send + 'a>> {
        Box::pin(async move {
            let (reply, doc) = self.with(|s| {
                s.calls.push(Call {
                    at: self.start.elapsed().as_secs(),
                    url: url.to_string(),
                    if_none_match: if_none_match.map(str::to_string),
                });
                (
                    s.next.pop_front().unwrap_or(Reply::Serve),
                    s.docs.get(url).cloned(),
                )
            });
            let serve = |doc: Option<Doc>| match doc {
                None => Ok(Fetched {
                    status: 404,
                    ..Fetched::default()
                }),
                Some(d) if d.etag.is_some() && d.etag.as_deref() == if_none_match => Ok(Fetched {
                    status: 304,
                    etag: d.etag,
                    cache_control: d.cache_control_304,
                    body: Vec::new(),
                }),
                Some(d) => Ok(Fetched {
                    status: 200,
                    etag: d.etag,
                    cache_control: d.cache_control,
                    body: d.body.into_bytes(),
                }),
            };
            match reply {
                Reply::Serve => serve(doc),
                Reply::Slow(d) => {
                    tokio::time::sleep(d).await;
                    serve(doc)
                }
                Reply::Status(status) => Ok(Fetched {
                    status,
                    ..Fetched::default()
                }),
                Reply::Body(body) => Ok(Fetched {
                    status: 200,
                    body,
                    ..Fetched::default()
                }),
                Reply::Fail => Err(SourceError::Fetch(format!("connection failed: {url}"))),
                Reply::Hang => std::future::pending().await,
            }
        })
    }
}

/// A source under test, its issuer, its network and its counters.
struct Rig {
    source: Arc<JwksSource>,
    issuer: Arc<IssuerKeys>,
    net: Arc<Scripted>,
    metrics: IssuerMetrics,
}

impl Rig {
    /// A source at `location` whose network holds `jwks` at [`JWKS_URL`] (not started).
    fn new(location: Location, settings: RemoteSettings, jwks: Doc) -> Rig {
        let start = Instant::now();
        let clock: Arc<dyn Clock> = Arc::new(TokioClock {
            start,
            base: 1_800_000_000,
        });
        let metrics = Arc::new(Metrics::new());
        let issuer = Arc::new(IssuerKeys::new(
            "remote".into(),
            1,
            Arc::new(RevokedSet::default()),
            clock,
            metrics.clone(),
        ));
        let net = Arc::new(Scripted {
            start,
            script: StdMutex::new(Script::default()),
        });
        net.publish(JWKS_URL, jwks);
        let issuer_metrics = metrics.issuer("remote", true);
        let source = JwksSource::with_fetcher(
            issuer.clone(),
            0,
            location,
            settings,
            issuer_metrics.clone(),
            tokio::runtime::Handle::current(),
            net.clone(),
        );
        Rig {
            source,
            issuer,
            net,
            metrics: issuer_metrics,
        }
    }

    /// [`Rig::new`] on [`JWKS_URL`], started.
    fn started(settings: RemoteSettings, jwks: Doc) -> Rig {
        let rig = Rig::new(Location::Jwks(JWKS_URL.into()), settings, jwks);
        rig.source.spawn();
        rig
    }

    /// The kids in the issuer's ring, sorted (empty when nothing is loaded).
    fn kids(&self) -> Vec<String> {
        let ring = self.issuer.ring();
        if !ring.loaded {
            return Vec::new();
        }
        let mut kids: Vec<String> = ring.keys.iter().map(|k| k.id.to_string()).collect();
        kids.sort();
        kids
    }

    /// Fetches by result: (ok, not_modified, error).
    fn fetches(&self) -> (u64, u64, u64) {
        let f = &self.metrics.fetches;
        (f[0].get(), f[1].get(), f[2].get())
    }
}

/// Settings with `refresh`; the other fields at values the test states when it cares.
fn settings(refresh: u64) -> RemoteSettings {
    RemoteSettings {
        refresh: Duration::from_secs(refresh),
        miss_refetch_interval: Duration::from_secs(30),
        max_stale: Duration::from_secs(86_400),
        timeout: Duration::from_secs(2),
        ca_file: None,
    }
}

/// A JWK set of fixture public keys renamed: `(fixture key, kid)`.
fn jwks(keys: &[(&str, &str)]) -> String {
    let set: Value = serde_json::from_str(include_str!("../../../tests/fixtures/jwks-public.json"))
        .expect("jwks-public.json");
    let list: Vec<Value> = keys
        .iter()
        .map(|(name, kid)| {
            let mut key = set["keys"]
                .as_array()
                .and_then(|ks| ks.iter().find(|k| k["kid"] == *name))
                .cloned()
                .unwrap_or_else(|| panic!("no fixture key {name}"));
            key["kid"] = json!(kid);
            key
        })
        .collect();
    json!({ "keys": list }).to_string()
}

fn doc(body: String) -> Doc {
    Doc {
        body,
        ..Doc::default()
    }
}

/// Lets the source run until `secs` seconds after the test started.
async fn until(rig: &Rig, secs: u64) {
    tokio::time::sleep_until(rig.net.start + Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn fetches_at_start_then_every_refresh() {
    let rig = Rig::started(settings(60), doc(jwks(&[("rsa-1", "k1")])));
    until(&rig, 1).await;
    assert_eq!(rig.kids(), ["k1"]);
    let generation = rig.issuer.generation();

    until(&rig, 150).await;
    assert_eq!(rig.net.call_times(), [0, 60, 120]);
    // The same bytes again: counted as not modified, the ring untouched.
    assert_eq!(rig.fetches(), (1, 2, 0));
    assert_eq!(rig.issuer.generation(), generation);
}

#[tokio::test(start_paused = true)]
async fn a_short_max_age_brings_the_next_fetch_forward_but_never_below_the_floor() {
    let long = Doc {
        cache_control: Some("public, max-age=30".into()),
        ..doc(jwks(&[("rsa-1", "k1")]))
    };
    let rig = Rig::started(settings(3600), long);
    until(&rig, 70).await;
    assert_eq!(rig.net.call_times(), [0, 30, 60]);

    // max-age=1 is below MIN_REFRESH (5 s): every 5 s, not every second.
    let short = Doc {
        cache_control: Some("max-age=1".into()),
        ..doc(jwks(&[("rsa-1", "k1")]))
    };
    let rig = Rig::started(settings(3600), short);
    until(&rig, 12).await;
    assert_eq!(rig.net.call_times(), [0, 5, 10]);

    // no-store is "as soon as allowed": the floor again. A refresh shorter than the
    // floor wins over it.
    let none = Doc {
        cache_control: Some("no-store".into()),
        ..doc(jwks(&[("rsa-1", "k1")]))
    };
    let rig = Rig::started(settings(2), none);
    until(&rig, 5).await;
    assert_eq!(rig.net.call_times(), [0, 2, 4]);
}

#[tokio::test(start_paused = true)]
async fn revalidates_with_etag_and_a_304_keeps_or_replaces_the_stored_max_age() {
    let tagged = Doc {
        etag: Some("\"v1\"".into()),
        cache_control: Some("max-age=20".into()),
        ..doc(jwks(&[("rsa-1", "k1")]))
    };
    let rig = Rig::started(settings(3600), tagged.clone());
    until(&rig, 45).await;
    let calls = rig.net.calls();
    // The first fetch asks for the whole set; then If-None-Match, and each 304 without
    // Cache-Control keeps max-age=20 in force (RFC 9111 §4.3.4).
    assert_eq!(calls.iter().map(|c| c.at).collect::<Vec<_>>(), [0, 20, 40]);
    assert_eq!(calls[0].if_none_match, None);
    assert_eq!(calls[1].if_none_match.as_deref(), Some("\"v1\""));
    assert_eq!(rig.fetches(), (1, 2, 0));
    assert_eq!(rig.kids(), ["k1"]);

    // A 304 with its own Cache-Control replaces the stored one.
    rig.net.publish(
        JWKS_URL,
        Doc {
            cache_control_304: Some("max-age=7".into()),
            ..tagged
        },
    );
    until(&rig, 62).await;
    assert_eq!(rig.net.call_times(), [0, 20, 40, 60]);
    until(&rig, 75).await;
    assert_eq!(rig.net.call_times(), [0, 20, 40, 60, 67, 74]);

    // A new version under a new ETag is fetched in full and published.
    rig.net.publish(
        JWKS_URL,
        Doc {
            etag: Some("\"v2\"".into()),
            ..doc(jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")]))
        },
    );
    rig.source.wake();
    until(&rig, 76).await;
    assert_eq!(rig.kids(), ["k1", "k2"]);
    assert_eq!(rig.fetches().0, 2);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_up_to_refresh_and_keep_the_last_good_keys() {
    let rig = Rig::started(settings(10), doc(jwks(&[("rsa-1", "k1")])));
    rig.net.then([
        Reply::Serve,
        Reply::Status(500),
        Reply::Fail,
        Reply::Body(b"not json".to_vec()),
        Reply::Status(404),
        Reply::Body(vec![b' '; MAX_BODY_BYTES + 1]),
        Reply::Body(br#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#.to_vec()),
    ]);
    for t in [5, 10, 11, 12, 14, 18, 26, 36] {
        until(&rig, t).await;
        assert_eq!(rig.kids(), ["k1"], "at {t} s the last good keys serve");
    }
    until(&rig, 50).await;
    // 1 s, 2 s, 4 s, 8 s, then capped at `refresh` (10 s); a success resets the backoff.
    assert_eq!(rig.net.call_times(), [0, 10, 11, 13, 17, 25, 35, 45]);
    assert_eq!(rig.fetches(), (1, 1, 6));
}

#[tokio::test(start_paused = true)]
async fn a_hung_fetch_times_out_and_counts_as_a_failure() {
    let rig = Rig::started(settings(10), doc(jwks(&[("rsa-1", "k1")])));
    rig.net.then([Reply::Serve, Reply::Hang]);
    until(&rig, 11).await;
    assert_eq!(
        rig.fetches(),
        (1, 0, 0),
        "still waiting at 11 s (timeout 2 s)"
    );
    until(&rig, 14).await;
    // Hung at 10, timed out at 12, retried 1 s later.
    assert_eq!(rig.net.call_times(), [0, 10, 13]);
    assert_eq!(rig.fetches(), (1, 1, 1));
    assert_eq!(rig.kids(), ["k1"]);
}

#[tokio::test(start_paused = true)]
async fn keys_are_withdrawn_once_stale_beyond_max_stale_then_fetched_in_full() {
    let s = RemoteSettings {
        max_stale: Duration::from_secs(30),
        ..settings(10)
    };
    let tagged = Doc {
        etag: Some("\"v1\"".into()),
        ..doc(jwks(&[("rsa-1", "k1")]))
    };
    let rig = Rig::started(s, tagged);
    rig.net.then([Reply::Serve]);
    rig.net.then(std::iter::repeat_n(Reply::Status(503), 6));
    // Failures at 10, 11, 13, 17, 25: the last success (0 s) is at most 30 s old.
    until(&rig, 34).await;
    assert_eq!(rig.kids(), ["k1"]);
    // The failure at 35 s finds it 35 s old: keys withdrawn, the issuer not loaded.
    until(&rig, 36).await;
    assert!(rig.kids().is_empty(), "keys withdrawn after max_stale");
    assert!(!rig.issuer.ring().loaded);
    // Back at 45 s: the set is asked for in full (no If-None-Match without keys).
    until(&rig, 46).await;
    let calls = rig.net.calls();
    assert_eq!(
        calls.iter().map(|c| c.at).collect::<Vec<_>>(),
        [0, 10, 11, 13, 17, 25, 35, 45]
    );
    assert_eq!(calls[1].if_none_match.as_deref(), Some("\"v1\""));
    assert_eq!(calls[7].if_none_match, None);
    assert_eq!(rig.kids(), ["k1"]);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_refetch_is_single_flight_and_rate_limited() {
    let rig = Rig::started(settings(10), doc(jwks(&[("rsa-1", "k1")])));
    until(&rig, 1).await;

    // k2 appears; ten requests name it at once while the fetch takes 1 s.
    rig.net
        .publish(JWKS_URL, doc(jwks(&[("rsa-1", "k1"), ("rsa-2", "k2")])));
    rig.net.then([Reply::Slow(Duration::from_secs(1))]);
    let askers: Vec<_> = (0..10)
        .map(|_| {
            let issuer = rig.issuer.clone();
            tokio::spawn(async move { issuer.refetch_for_unknown_kid().await })
        })
        .collect();
    for a in askers {
        assert_eq!(a.await.ok(), Some(true), "every asker sees the new key");
    }
    assert_eq!(rig.net.call_times(), [0, 1], "one fetch for ten askers");
    assert_eq!(rig.kids(), ["k1", "k2"]);

    // Periodic refreshes (10 s, 20 s) go on and do not use up the miss budget; a miss
    // within `miss_refetch_interval` (30 s) of the last miss fetch fetches nothing.
    until(&rig, 25).await;
    assert!(!rig.issuer.refetch_for_unknown_kid().await);
    assert_eq!(rig.net.call_times(), [0, 1, 10, 20]);
    // 31 s after the last one, a miss may fetch again.
    until(&rig, 32).await;
    rig.net.publish(
        JWKS_URL,
        doc(jwks(&[("rsa-1", "k1"), ("rsa-2", "k2"), ("ec-p256", "k3")])),
    );
    assert!(rig.issuer.refetch_for_unknown_kid().await);
    assert_eq!(rig.net.call_times(), [0, 1, 10, 20, 30, 32]);
    assert_eq!(rig.kids(), ["k1", "k2", "k3"]);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_waits_for_a_hung_fetch_only_up_to_the_timeout() {
    let rig = Rig::started(settings(3600), doc(jwks(&[("rsa-1", "k1")])));
    until(&rig, 1).await;
    rig.net.then([Reply::Hang]);
    let started = Instant::now();
    assert!(!rig.issuer.refetch_for_unknown_kid().await);
    // The fetch's own `timeout` (2 s) ends the wait, not the hung server.
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(rig.kids(), ["k1"]);
}

#[tokio::test(start_paused = true)]
async fn wake_fetches_now() {
    let rig = Rig::started(settings(3600), doc(jwks(&[("rsa-1", "k1")])));
    until(&rig, 5).await;
    rig.source.wake();
    until(&rig, 6).await;
    assert_eq!(rig.net.call_times(), [0, 5]);
}

#[tokio::test(start_paused = true)]
async fn discovery_finds_the_jwks_uri_and_discovers_again_after_a_failure() {
    let rig = Rig::new(
        Location::Discovery(BASE.into()),
        settings(10),
        doc(jwks(&[("rsa-1", "k1")])),
    );
    rig.net.publish(
        DISCOVERY_URL,
        doc(json!({ "issuer": BASE, "jwks_uri": JWKS_URL }).to_string()),
    );
    rig.source.spawn();
    until(&rig, 1).await;
    assert_eq!(rig.kids(), ["k1"]);

    // A failed JWKS fetch at 10 s: the next attempt starts from discovery.
    rig.net.then([Reply::Status(500)]);
    until(&rig, 12).await;
    let urls: Vec<String> = rig.net.calls().into_iter().map(|c| c.url).collect();
    assert_eq!(
        urls,
        [DISCOVERY_URL, JWKS_URL, JWKS_URL, DISCOVERY_URL, JWKS_URL]
    );

    // A discovery document without an http(s) jwks_uri is an error that names it.
    let bad = Rig::new(
        Location::Discovery(BASE.into()),
        settings(10),
        doc(String::new()),
    );
    bad.net.publish(
        DISCOVERY_URL,
        doc(json!({ "jwks_uri": "file:///etc/passwd" }).to_string()),
    );
    let err = bad.source.load_now().await.err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("https://as.example/.well-known/openid-configuration: jwks_uri is not an http(s) URL")
    );
}

#[test]
fn cache_control_max_age() {
    let secs = |s: &str| max_age(s).map(|d| d.as_secs());
    assert_eq!(secs("max-age=60"), Some(60));
    assert_eq!(secs("public, MAX-AGE=\"15\""), Some(15));
    assert_eq!(secs("no-cache, max-age=60"), Some(0));
    assert_eq!(secs("private"), None);
    assert_eq!(secs("max-age=soon"), None);
}
