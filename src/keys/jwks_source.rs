//! Remote JWKS (`jwks_uri`) and OIDC / RFC 8414 discovery (`discovery`).
//!
//! The refresh policy, written down:
//! - fetch at start, then every `refresh`; a `Cache-Control: max-age` shorter than
//!   `refresh` brings the next fetch forward, but never below [`MIN_REFRESH`];
//! - `ETag` / `If-None-Match`: a 304 keeps the set and counts as a success; it updates
//!   the stored response's headers (RFC 9111 §4.3.4), so a 304 without `Cache-Control`
//!   leaves the `max-age` of the set it revalidated in force;
//! - a failed fetch (connection, timeout, non-2xx, body over [`MAX_BODY_BYTES`], not a
//!   JWK set, no usable key) keeps the last good set and retries with exponential
//!   backoff from [`FIRST_RETRY`] up to `refresh`; once the last success is older than
//!   `max_stale`, the source withdraws its keys (the issuer may become not ready);
//! - an unknown kid asks for one more fetch: at most one fetch is in flight per source
//!   (concurrent askers wait for it, bounded by `timeout`), and at most one
//!   unknown-kid fetch per `miss_refetch_interval`; periodic refreshes do not use it up;
//! - symmetric (`oct`) keys in a remote set are ignored with a warning.
//!
//! The policy reads the network through a [`Fetcher`] and time through tokio's clock
//! (delays, rate limit, timeout) and the issuer's [`Clock`] (`max_stale`): production
//! uses [`HttpFetcher`] (reqwest), the tests a scripted fetcher on tokio's paused clock,
//! so every rule above is tested exactly and without waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aws_lc_rs::digest;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use super::{IssuerKeys, MissRefetch, SourceError, SourceKeys, SourceKind, jwks};
use crate::clock::Clock;
use crate::config::RemoteSettings;
use crate::metrics::IssuerMetrics;

/// Largest JWKS or discovery document accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Shortest interval between periodic refreshes, whatever `max-age` says.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// First retry delay after a failed fetch.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where the set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The JWKS URL itself.
    Jwks(String),
    /// An issuer URL whose discovery document names the JWKS URL.
    Discovery(String),
}

/// What the refresh policy reads of one HTTP response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The status code.
    pub status: u16,
    /// The `ETag` header, if any.
    pub etag: Option<String>,
    /// The `Cache-Control` header, if any.
    pub cache_control: Option<String>,
    /// The body of a 2xx response (empty otherwise), at most [`MAX_BODY_BYTES`].
    pub body: Vec<u8>,
}

/// One GET of a JWKS or discovery document: the network, as the policy sees it.
pub trait Fetcher: Send + Sync + 'static {
    /// Fetches `url`, sending `If-None-Match: if_none_match` when given. An error is a
    /// failure to get any response (connection, TLS, body over [`MAX_BODY_BYTES`]).
    fn get<'a>(
        &'a self,
        url: &'a str,
        if_none_match: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, SourceError>> + Send + 'a>>;
}

/// The production [`Fetcher`]: reqwest, with the source's timeout, CA bundle, at most
/// three redirects and no proxy from the environment.
pub struct HttpFetcher {
    client: reqwest::Client,
}

/// One remote JWKS source of one issuer.
pub struct JwksSource {
    issuer: Arc<IssuerKeys>,
    index: usize,
    location: Location,
    settings: RemoteSettings,
    fetcher: Arc<dyn Fetcher>,
    clock: Arc<dyn Clock>,
    metrics: IssuerMetrics,
    runtime: tokio::runtime::Handle,
    /// Held for the whole of a fetch: this is the single flight.
    state: Mutex<FetchState>,
    wake: Arc<Notify>,
    fetched_at: Arc<AtomicI64>,
}

#[derive(Default)]
struct FetchState {
    jwks_url: Option<String>,
    etag: Option<String>,
    digest: Option<[u8; 32]>,
    last_success: Option<i64>,
    last_miss_fetch: Option<Instant>,
    failures: u32,
    has_keys: bool,
    /// `Cache-Control: max-age` of the response the current set came from (or of the
    /// last 304 that carried a `Cache-Control`).
    max_age: Option<Duration>,
}

enum Outcome {
    Updated { max_age: Option<Duration> },
    Unchanged { max_age: Option<Duration> },
}

/// Hands unknown-kid refetches to a source without keeping it alive.
struct Refetcher(Weak<JwksSource>);

// === impl JwksSource ===

impl JwksSource {
    /// Builds the source with its HTTP client. Fails on a bad `ca_file`.
    pub fn new(
        issuer: Arc<IssuerKeys>,
        index: usize,
        location: Location,
        settings: RemoteSettings,
        metrics: IssuerMetrics,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Self>, SourceError> {
        let fetcher = Arc::new(HttpFetcher::new(&settings)?);
        Ok(Self::with_fetcher(
            issuer, index, location, settings, metrics, runtime, fetcher,
        ))
    }

    /// Builds the source over any [`Fetcher`] (tests script one).
    pub fn with_fetcher(
        issuer: Arc<IssuerKeys>,
        index: usize,
        location: Location,
        settings: RemoteSettings,
        metrics: IssuerMetrics,
        runtime: tokio::runtime::Handle,
        fetcher: Arc<dyn Fetcher>,
    ) -> Arc<Self> {
        let clock = issuer.clock().clone();
        let source = Arc::new(Self {
            issuer,
            index,
            location,
            settings,
            fetcher,
            clock,
            metrics,
            runtime,
            state: Mutex::new(FetchState::default()),
            wake: Arc::new(Notify::new()),
            fetched_at: Arc::new(AtomicI64::new(0)),
        });
        source
            .issuer
            .add_refetcher(Arc::new(Refetcher(Arc::downgrade(&source))));
        source
    }

    /// The refresh loop; runs until the source is dropped by everyone else.
    pub fn spawn(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.runtime.spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let delay = this.refresh_now().await;
                let notify = this.wake.clone();
                drop(this);
                let wake = notify.notified();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake => {}
                }
            }
        });
    }

    /// Position of this source in its issuer's `key_sources`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Asks the refresh loop to fetch now (SIGHUP, `POST /refresh`).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One periodic fetch; returns the delay until the next one.
    async fn refresh_now(&self) -> Duration {
        let mut st = self.state.lock().await;
        match self.fetch(&mut st).await {
            Ok(Outcome::Updated { max_age } | Outcome::Unchanged { max_age }) => {
                let wanted = max_age.unwrap_or(self.settings.refresh);
                wanted.clamp(
                    MIN_REFRESH.min(self.settings.refresh),
                    self.settings.refresh,
                )
            }
            Err(_) => {
                let exp = st.failures.saturating_sub(1).min(16);
                FIRST_RETRY
                    .saturating_mul(1 << exp)
                    .min(self.settings.refresh.max(FIRST_RETRY))
            }
        }
    }

    /// Fetches now, once, and says why it failed (`check-config`, `verify`, startup).
    pub async fn load_now(&self) -> Result<(), SourceError> {
        self.fetch_now().await.map(|_| ())
    }

    /// Fetches now, once, after any fetch in flight (`POST /refresh`): true when the set
    /// changed, false when it is the same.
    pub async fn fetch_now(&self) -> Result<bool, SourceError> {
        let mut st = self.state.lock().await;
        self.fetch(&mut st)
            .await
            .map(|o| matches!(o, Outcome::Updated { .. }))
    }

    /// The single-flight, rate-limited unknown-kid fetch. True when the ring changed.
    async fn refetch_for_miss(&self) -> bool {
        let before = self.issuer.generation();
        let mut st = self.state.lock().await;
        if self.issuer.generation() != before {
            // The fetch we waited for brought news.
            return true;
        }
        if st
            .last_miss_fetch
            .is_some_and(|t| t.elapsed() < self.settings.miss_refetch_interval)
        {
            return false;
        }
        st.last_miss_fetch = Some(Instant::now());
        matches!(self.fetch(&mut st).await, Ok(Outcome::Updated { .. }))
    }

    async fn fetch(&self, st: &mut FetchState) -> Result<Outcome, SourceError> {
        let issuer = self.issuer.name().clone();
        match self.fetch_inner(st).await {
            Ok(outcome) => {
                let now = self.clock.now();
                st.last_success = Some(now);
                st.failures = 0;
                self.fetched_at.store(now, Ordering::Relaxed);
                self.metrics.last_success.set(now);
                let i = if matches!(outcome, Outcome::Updated { .. }) {
                    0
                } else {
                    1
                };
                self.metrics.fetches[i].inc();
                self.issuer
                    .record_source(self.index, SourceKind::Jwks, true);
                Ok(outcome)
            }
            Err(e) => {
                self.metrics.fetches[2].inc();
                self.issuer
                    .record_source(self.index, SourceKind::Jwks, false);
                st.failures = st.failures.saturating_add(1);
                // A failed JWKS fetch may mean the discovered URL moved: discover again.
                if matches!(self.location, Location::Discovery(_)) {
                    st.jwks_url = None;
                }
                let now = self.clock.now();
                let max_stale =
                    i64::try_from(self.settings.max_stale.as_secs()).unwrap_or(i64::MAX);
                let stale = st
                    .last_success
                    .is_none_or(|t| now.saturating_sub(t) > max_stale);
                if stale && st.has_keys {
                    tracing::error!(%issuer, error = %e, "JWKS stale beyond max_stale: keys withdrawn");
                    st.has_keys = false;
                    st.digest = None;
                    st.etag = None;
                    st.max_age = None;
                    self.issuer.publish(self.index, None);
                } else {
                    tracing::warn!(%issuer, error = %e, failures = st.failures, "JWKS fetch failed; keeping the last good keys");
                }
                Err(e)
            }
        }
    }

    async fn fetch_inner(&self, st: &mut FetchState) -> Result<Outcome, SourceError> {
        let url = match (&self.location, &st.jwks_url) {
            (Location::Jwks(u), _) => u.clone(),
            (Location::Discovery(_), Some(u)) => u.clone(),
            (Location::Discovery(base), None) => {
                let u = self.discover(base).await?;
                st.jwks_url = Some(u.clone());
                u
            }
        };
        let if_none_match = st.etag.as_deref().filter(|_| st.has_keys);
        let resp = self.get(&url, if_none_match).await?;
        if resp.status == 304 && st.has_keys {
            // A 304 updates the stored headers (RFC 9111 §4.3.4): a Cache-Control it
            // carries replaces the stored one; without one, the stored max-age stays.
            if let Some(cc) = &resp.cache_control {
                st.max_age = max_age(cc);
            }
            return Ok(Outcome::Unchanged {
                max_age: st.max_age,
            });
        }
        if !(200..300).contains(&resp.status) {
            return Err(SourceError::Fetch(format!(
                "HTTP {} from {url}",
                status_text(resp.status)
            )));
        }
        let max_age = resp.cache_control.as_deref().and_then(max_age);
        let etag = resp.etag;
        let body = resp.body;
        let d = digest::digest(&digest::SHA256, &body);
        let mut sum = [0u8; 32];
        sum.copy_from_slice(d.as_ref());
        if st.digest == Some(sum) && st.has_keys {
            st.etag = etag;
            st.max_age = max_age;
            return Ok(Outcome::Unchanged { max_age });
        }
        let set = jwks::parse_set(&body, false).map_err(|e| SourceError::Invalid(e.to_string()))?;
        for s in &set.skipped {
            tracing::warn!(issuer = %self.issuer.name(), skipped = %s, "JWK skipped");
        }
        if set.keys.is_empty() {
            return Err(SourceError::NoUsableKeys(set.skipped));
        }
        st.etag = etag;
        st.digest = Some(sum);
        st.max_age = max_age;
        st.has_keys = true;
        self.issuer.publish(
            self.index,
            Some(SourceKeys {
                kind: SourceKind::Jwks,
                missing: Vec::new(),
                keys: set.keys,
                fetched_at: Some(self.fetched_at.clone()),
            }),
        );
        Ok(Outcome::Updated { max_age })
    }

    /// One GET through the fetcher, bounded by `timeout` and [`MAX_BODY_BYTES`] whatever
    /// the fetcher does.
    async fn get(&self, url: &str, if_none_match: Option<&str>) -> Result<Fetched, SourceError> {
        let fetched =
            tokio::time::timeout(self.settings.timeout, self.fetcher.get(url, if_none_match))
                .await
                .map_err(|_| SourceError::Fetch(format!("timeout: {url}")))??;
        if fetched.body.len() > MAX_BODY_BYTES {
            return Err(SourceError::Fetch(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        Ok(fetched)
    }

    async fn discover(&self, base: &str) -> Result<String, SourceError> {
        let url = if base.contains("/.well-known/") {
            base.to_string()
        } else {
            format!(
                "{}/.well-known/openid-configuration",
                base.trim_end_matches('/')
            )
        };
        let resp = self.get(&url, None).await?;
        if !(200..300).contains(&resp.status) {
            return Err(SourceError::Fetch(format!(
                "HTTP {} from {url}",
                status_text(resp.status)
            )));
        }
        let body = resp.body;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| SourceError::Invalid(format!("{url}: not a JSON discovery document")))?;
        let Some(jwks_uri) = doc.get("jwks_uri").and_then(|v| v.as_str()) else {
            return Err(SourceError::Invalid(format!("{url}: no jwks_uri")));
        };
        match reqwest::Url::parse(jwks_uri) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(jwks_uri.to_string()),
            _ => Err(SourceError::Invalid(format!(
                "{url}: jwks_uri is not an http(s) URL"
            ))),
        }
    }
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("issuer", self.issuer.name())
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

// === impl Refetcher ===

impl MissRefetch for Refetcher {
    fn refetch(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let Some(source) = self.0.upgrade() else {
                return false;
            };
            // Run the fetch on the main runtime so that it completes (and its connection
            // lives) even if the request that asked for it goes away.
            let limit = source.settings.timeout + Duration::from_millis(250);
            let handle = source.runtime.clone();
            let task = handle.spawn(async move { source.refetch_for_miss().await });
            matches!(tokio::time::timeout(limit, task).await, Ok(Ok(true)))
        })
    }
}

// === impl HttpFetcher ===

impl HttpFetcher {
    /// The client for a source with these settings. Fails on a bad `ca_file`.
    pub fn new(settings: &RemoteSettings) -> Result<Self, SourceError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("tokengate/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(ca) = &settings.ca_file {
            let pem = super::files::read_limited(ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SourceError::Invalid(format!("{}: not a PEM CA bundle: {e}", ca.display()))
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| SourceError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self { client })
    }
}

impl Fetcher for HttpFetcher {
    fn get<'a>(
        &'a self,
        url: &'a str,
        if_none_match: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, SourceError>> + Send + 'a>> {
        Box::pin(async move {
            let mut req = self.client.get(url).header("accept", "application/json");
            if let Some(etag) = if_none_match {
                req = req.header("if-none-match", etag);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| SourceError::Fetch(describe(&e)))?;
            let header = |name: reqwest::header::HeaderName| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let status = resp.status().as_u16();
            let etag = header(reqwest::header::ETAG);
            let cache_control = header(reqwest::header::CACHE_CONTROL);
            let body = if resp.status().is_success() {
                read_body(resp).await?
            } else {
                Vec::new()
            };
            Ok(Fetched {
                status,
                etag,
                cache_control,
                body,
            })
        })
    }
}

async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, SourceError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(SourceError::Fetch(format!(
            "body larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| SourceError::Fetch(describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(SourceError::Fetch(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `403 Forbidden`, or the bare number for a code without a reason phrase.
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status) {
        Ok(s) => s.to_string(),
        Err(_) => status.to_string(),
    }
}

/// The freshness lifetime a `Cache-Control` value gives: `max-age`, or zero for
/// `no-cache` / `no-store`.
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let d = directive.trim().to_ascii_lowercase();
        if d == "no-cache" || d == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            max_age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{kind}: {u}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests;
