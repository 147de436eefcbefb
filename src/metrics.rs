//! Every `tokengate_*` metric: names, help texts, units, buckets and label sets, in one
//! place. Families are registered once; handles are resolved ahead of the hot path —
//! per (listener, issuer, reason) when a config is applied, per key when a key is
//! loaded — so a request only increments. Label values come from the config and from
//! loaded keys, never from a token, so no request can add a series.
//!
//! The series count is bounded by the config and the key sets: per issuer name (and
//! once for `-`) 4 listeners × 19 reasons of `tokengate_decisions_total`; per key — the
//! current keys plus at most `keys::MAX_RETIRED_PER_ISSUER` retired keys per issuer —
//! 4 verification counters, 1 last-used gauge, 1 `tokengate_key_info` row and, for keys
//! from certificates, 1 `not_after` gauge. A retired key that is forgotten loses its
//! series in [`Metrics::key_infos`]. The registry also carries the standard `process_*`
//! metrics, read from `/proc/self` when `/metrics` is scraped (Linux only).

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Decision latency buckets, in seconds: 10 µs to 5 s. The top buckets are for decisions
/// that waited for an unknown-kid JWKS refetch (bounded by the source's `timeout`, 5 s
/// by default); a cached or in-memory decision lands in the first few.
pub const DURATION_BUCKETS: [f64; 18] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The listener a decision was made for (the `listener` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// Reverse proxy.
    Proxy,
    /// HTTP ext_authz / forward-auth.
    AuthzHttp,
    /// gRPC ext_authz.
    AuthzGrpc,
    /// `tokengate verify` (offline; no listener).
    Cli,
}

/// One row of `tokengate_key_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyInfoRow {
    /// `source` label.
    pub source: &'static str,
    /// `key` label.
    pub key: String,
    /// `kty` label.
    pub kty: &'static str,
    /// `alg` label (`-` when the key names none).
    pub alg: String,
    /// `thumbprint` label.
    pub thumbprint: String,
    /// `state` label.
    pub state: &'static str,
    /// Certificate notAfter, if any.
    pub not_after: Option<i64>,
}

/// The registry and every family.
pub struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    key_verifications: IntCounterVec,
    key_decryptions: IntCounterVec,
    key_last_used: IntGaugeVec,
    key_info: IntGaugeVec,
    key_not_after: IntGaugeVec,
    key_first_seen: IntGaugeVec,
    key_max_age: IntGaugeVec,
    kid_misses: IntCounterVec,
    jwks_fetches: IntCounterVec,
    jwks_last_success: IntGaugeVec,
    fallback_budget_exhausted: IntCounterVec,
    shadow_denials: IntCounterVec,
    rule_denials: IntCounterVec,
    proofs: IntCounterVec,
    /// Decision-log lines dropped because the writer's buffer was full (§12).
    pub audit_dropped: IntCounter,
    /// Span batches the OTLP exporter failed to deliver (§12).
    pub telemetry_export_errors: IntCounter,
    key_source_reloads: IntCounterVec,
    key_source_up: IntGaugeVec,
    key_source_last_success: IntGaugeVec,
    config_reloads: IntCounterVec,
    cache_requests: IntCounterVec,
    decision_duration: HistogramVec,
    /// Per issuer: the key_info label sets and (source, key) pairs currently exported.
    exported: Mutex<HashMap<String, Exported>>,
}

#[derive(Default)]
struct Exported {
    infos: HashSet<KeyInfoRow>,
    keys: HashSet<(&'static str, String)>,
}

/// Pre-resolved handles for one key.
#[derive(Debug, Clone)]
pub struct KeyMetrics {
    /// [kid ok, kid bad_signature, fallback ok, fallback bad_signature]
    verifications: [IntCounter; 4],
    last_used: IntGauge,
}

/// Pre-resolved decision counters for one listener: `[issuer + 1][reason slot]`, where
/// issuer slot 0 is `-` and reason slots are `ok`, `anonymous`, then every deny reason.
#[derive(Debug, Clone)]
pub struct DecisionHandles {
    counters: Vec<Vec<IntCounter>>,
    duration: Histogram,
}

/// Pre-resolved handles of an issuer's fetch and miss counters.
#[derive(Debug, Clone)]
pub struct IssuerMetrics {
    /// kid misses: refetch_found, fallback_matched, rejected.
    pub misses: [IntCounter; 3],
    /// JWKS fetches: ok, not_modified, error.
    pub fetches: [IntCounter; 3],
    /// Last successful fetch.
    pub last_success: IntGauge,
    /// Fallback scans cut short by the per-process budget.
    pub budget_exhausted: IntCounter,
}

/// Cache counters.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    /// Hits.
    pub hit: IntCounter,
    /// Misses.
    pub miss: IntCounter,
}

/// The standard `process_*` metrics of this process, read from `/proc/self` when the
/// registry is gathered (a scrape), never on the request path.
///
/// Read by hand rather than through the prometheus crate's `process` feature: that
/// feature adds `procfs` and `rustix` to the build and exports CPU time truncated to
/// whole seconds (an integer counter), which makes `rate()` of it useless on a sidecar
/// that spends milliseconds per second. The three files read here are stable kernel ABI.
struct ProcessCollector {
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
    descs: Vec<Desc>,
    /// Clock ticks per second of `/proc/self/stat` times (`AT_CLKTCK`).
    ticks: f64,
    /// Bytes per page of the `rss` field (`AT_PAGESZ`).
    page_size: i64,
    /// Serialises scrapes, so that two never add the same CPU delta twice.
    collecting: Mutex<()>,
}

/// The fields of `/proc/self/stat` the process metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// User + system CPU time, in clock ticks.
    cpu_ticks: u64,
    threads: i64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
    virtual_bytes: i64,
    rss_pages: i64,
}

// === impl Listener ===

impl Listener {
    /// The `listener` label value.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Proxy => "proxy",
            Listener::AuthzHttp => "authz_http",
            Listener::AuthzGrpc => "authz_grpc",
            Listener::Cli => "cli",
        }
    }
}

/// Span batches the OTLP exporter failed to deliver: one counter per process (the
/// exporter is process-wide, and starts before any registry), shown by every registry.
static TELEMETRY_EXPORT_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "tokengate_telemetry_export_errors_total",
        "Batches of tokengate.check spans the OTLP exporter failed to deliver (count); \
         decisions are never delayed or changed by tracing.",
    )
    .unwrap_or_else(|e| unreachable!("static metric definition is valid: {e}"))
});

/// The process's export-failure counter (see [`TELEMETRY_EXPORT_ERRORS`]).
pub fn telemetry_export_errors() -> IntCounter {
    TELEMETRY_EXPORT_ERRORS.clone()
}

// === impl Metrics ===

impl Metrics {
    /// Registers every family (reason labels are passed in by the caller so that this
    /// module depends on no other).
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            // Registration fails only on a duplicate name, which the list below never has.
            let _ = r.register(Box::new(c.clone()));
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| {
                    unreachable!("static metric definition {name} is valid: {e}")
                }),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| {
                    unreachable!("static metric definition {name} is valid: {e}")
                }),
            )
        };
        let decisions = counter(
            "tokengate_decisions_total",
            "Authorization decisions (count), by issuer (- when no issuer matched), listener, \
             decision (allow, deny) and reason.",
            &["issuer", "listener", "decision", "reason"],
        );
        let key_verifications = counter(
            "tokengate_key_verifications_total",
            "Signature checks per key version (count), by how the key was found (kid, \
             fallback) and the result (ok, bad_signature).",
            &["issuer", "source", "key", "match", "result"],
        );
        let key_decryptions = counter(
            "tokengate_key_decryptions_total",
            "Decryption attempts per decryption key (count), by how the key was found (kid, \
             fallback) and the result (ok, bad_decryption); `issuer` is `decryption` or the \
             session's name.",
            &["issuer", "source", "key", "match", "result"],
        );
        let key_last_used = gauge(
            "tokengate_key_last_used_timestamp_seconds",
            "Unix time, in seconds, a token was last accepted on the strength of this key \
             (0: never since tokengate started).",
            &["issuer", "source", "key"],
        );
        let key_info = gauge(
            "tokengate_key_info",
            "Loaded keys and remembered retired keys (value always 1), with key type, \
             algorithm (- when the key names none), RFC 7638 thumbprint and state (active, \
             valid, retired, revoked).",
            &[
                "issuer",
                "source",
                "key",
                "kty",
                "alg",
                "thumbprint",
                "state",
            ],
        );
        let key_not_after = gauge(
            "tokengate_key_not_after_timestamp_seconds",
            "Unix time, in seconds, the certificate of this key stops being valid (keys \
             from certificates only).",
            &["issuer", "source", "key"],
        );
        let key_first_seen = gauge(
            "tokengate_key_first_seen_timestamp_seconds",
            "Unix time, in seconds, tokengate first loaded this key (its age, for the \
             cryptoperiod: keys older than the issuer's max_key_age).",
            &["issuer", "source", "key"],
        );
        let key_max_age = gauge(
            "tokengate_key_max_age_seconds",
            "The issuer's max_key_age (cryptoperiod), in seconds: an active key older than \
             this is flagged past_max_age (issuers without one export no series).",
            &["issuer"],
        );
        let kid_misses = counter(
            "tokengate_kid_misses_total",
            "Tokens whose kid was not in the issuer's key set (count), by outcome \
             (refetch_found, fallback_matched, rejected).",
            &["issuer", "outcome"],
        );
        let jwks_fetches = counter(
            "tokengate_jwks_fetches_total",
            "Remote JWKS fetches, periodic and unknown-kid (count), by result (ok: new key \
             set, not_modified: unchanged, error).",
            &["issuer", "result"],
        );
        let jwks_last_success = gauge(
            "tokengate_jwks_last_success_timestamp_seconds",
            "Unix time, in seconds, of the last successful JWKS fetch, ok or not_modified \
             (0: never, or the issuer has no remote JWKS).",
            &["issuer"],
        );
        let key_source_reloads = counter(
            "tokengate_key_source_reloads_total",
            "Reloads of local key sources (jwks_file, pem, keystore) (count), by result: \
             ok = new content loaded; error = the load failed and the last good keys stay \
             (counted at every scan while the source stays broken).",
            &["issuer", "source", "result"],
        );
        let fallback_budget_exhausted = counter(
            "tokengate_fallback_budget_exhausted_total",
            "Tokens denied unknown_key because the per-process budget of fallback signature \
             checks (fallback.max_verifications_per_second) was spent (count); tokens whose \
             kid is known never use it.",
            &["issuer"],
        );
        let shadow_denials = counter(
            "tokengate_shadow_denials_total",
            "Requests denied in shadow mode and let through with x-tokengate-shadow-deny \
             (count), by issuer (- when no issuer matched), listener and the deny reason; \
             tokengate_decisions_total counts them as the denials they are.",
            &["issuer", "listener", "reason"],
        );
        let rule_denials = counter(
            "tokengate_rule_denials_total",
            "Valid tokens refused rule_failed because one of the route's CEL rules was not \
             true (count), by route name.",
            &["route"],
        );
        let proofs = counter(
            "tokengate_proofs_total",
            "Proofs of possession checked for sender-constrained tokens (count), by issuer, \
             kind (dpop: a DPoP proof or a cnf.jkt token; mtls: a cnf x5t#S256 token's \
             client certificate) and result (ok, or the deny reason: invalid_dpop_proof, \
             use_dpop_nonce, binding_mismatch).",
            &["issuer", "kind", "result"],
        );
        let audit_dropped = counter(
            "tokengate_audit_dropped_total",
            "Decision-log lines dropped because the writer could not keep up (count); the \
             decisions themselves were never delayed.",
            &[],
        )
        .with_label_values(&[] as &[&str]);
        // One counter per process (the exporter is process-wide), shown by every registry.
        let telemetry_export_errors = reg(&registry, telemetry_export_errors());
        let key_source_up = gauge(
            "tokengate_key_source_up",
            "1 when the last load or fetch of the issuer's key sources of this kind (jwks, \
             jwks_file, keystore, pem) succeeded, 0 when one of them failed (its last good \
             keys stay in use).",
            &["issuer", "source"],
        );
        let key_source_last_success = gauge(
            "tokengate_key_source_last_success_timestamp_seconds",
            "Unix time, in seconds, of the last successful load or fetch of the issuer's key \
             sources of this kind (the oldest of them when there are several; 0: never).",
            &["issuer", "source"],
        );
        let config_reloads = counter(
            "tokengate_config_reloads_total",
            "Reloads of the config file (count), by result: ok = a new config applied; \
             error = the file is invalid and the running config stays (counted once per \
             broken version of the file).",
            &["result"],
        );
        let cache_requests = counter(
            "tokengate_token_cache_requests_total",
            "Verified-token cache lookups (count), by result (hit, miss).",
            &["result"],
        );
        let decision_duration = reg(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "tokengate_decision_duration_seconds",
                    "Time to decide one request, in seconds, by listener (includes an \
                     unknown-kid JWKS refetch when the decision waited for one).",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["listener"],
            )
            .unwrap_or_else(|e| unreachable!("static histogram definition is valid: {e}")),
        );
        let build_info = reg(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "tokengate_build_info",
                    "Build information (value always 1): the tokengate version.",
                ),
                &["version"],
            )
            .unwrap_or_else(|e| unreachable!("static gauge definition is valid: {e}")),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        for r in ["ok", "error"] {
            config_reloads.with_label_values(&[r]);
        }
        if let Some(process) = ProcessCollector::new() {
            // Registration fails only on a duplicate name; the process_* names are unique.
            let _ = registry.register(Box::new(process));
        }
        Self {
            registry,
            decisions,
            key_verifications,
            key_decryptions,
            key_last_used,
            key_info,
            key_not_after,
            key_first_seen,
            key_max_age,
            kid_misses,
            jwks_fetches,
            jwks_last_success,
            fallback_budget_exhausted,
            shadow_denials,
            rule_denials,
            proofs,
            audit_dropped,
            telemetry_export_errors,
            key_source_reloads,
            key_source_up,
            key_source_last_success,
            config_reloads,
            cache_requests,
            decision_duration,
            exported: Mutex::new(HashMap::new()),
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Resolves every decision counter of `listener` for these issuers and reason labels
    /// (`reasons[0..2]` are the allow reasons, the rest deny reasons).
    pub fn decision_handles(
        &self,
        listener: Listener,
        issuers: &[&str],
        reasons: &[(&str, &str)],
    ) -> DecisionHandles {
        let mut counters = Vec::with_capacity(issuers.len() + 1);
        for issuer in std::iter::once("-").chain(issuers.iter().copied()) {
            counters.push(
                reasons
                    .iter()
                    .map(|(decision, reason)| {
                        self.decisions.with_label_values(&[
                            issuer,
                            listener.label(),
                            decision,
                            reason,
                        ])
                    })
                    .collect(),
            );
        }
        DecisionHandles {
            counters,
            duration: self
                .decision_duration
                .with_label_values(&[listener.label()]),
        }
    }

    /// Resolves an issuer's fetch and miss counters.
    /// An issuer without a remote JWKS (`remote: false`) gets detached fetch handles:
    /// they count nothing anyone reads and export no series.
    pub fn issuer(&self, issuer: &str, remote: bool) -> IssuerMetrics {
        let m = |o| self.kid_misses.with_label_values(&[issuer, o]);
        let budget_exhausted = self.fallback_budget_exhausted.with_label_values(&[issuer]);
        if remote {
            let f = |r| self.jwks_fetches.with_label_values(&[issuer, r]);
            IssuerMetrics {
                misses: [m("refetch_found"), m("fallback_matched"), m("rejected")],
                fetches: [f("ok"), f("not_modified"), f("error")],
                last_success: self.jwks_last_success.with_label_values(&[issuer]),
                budget_exhausted,
            }
        } else {
            let detached = || {
                IntCounter::new("detached", "not exported")
                    .unwrap_or_else(|e| unreachable!("a static counter definition is valid: {e}"))
            };
            IssuerMetrics {
                misses: [m("refetch_found"), m("fallback_matched"), m("rejected")],
                fetches: [detached(), detached(), detached()],
                last_success: IntGauge::new("detached", "not exported")
                    .unwrap_or_else(|e| unreachable!("a static gauge definition is valid: {e}")),
                budget_exhausted,
            }
        }
    }

    /// Counts a local key source reload. Both results of the (issuer, source) pair are
    /// created on the first call, so that the first error is an increase from 0 that
    /// `increase()` and `rate()` can see, not a series born at 1.
    pub fn source_reload(&self, issuer: &str, source: &str, ok: bool) {
        let ok_series = self
            .key_source_reloads
            .with_label_values(&[issuer, source, "ok"]);
        let error_series = self
            .key_source_reloads
            .with_label_values(&[issuer, source, "error"]);
        if ok { ok_series } else { error_series }.inc();
    }

    /// Exports the health of an issuer's key sources of one kind.
    pub fn source_health(&self, issuer: &str, source: &str, up: bool, last_success: i64) {
        self.key_source_up
            .with_label_values(&[issuer, source])
            .set(i64::from(up));
        self.key_source_last_success
            .with_label_values(&[issuer, source])
            .set(last_success);
    }

    /// Exports when a key was first loaded.
    pub fn key_first_seen(&self, issuer: &str, source: &str, key: &str, t: i64) {
        self.key_first_seen
            .with_label_values(&[issuer, source, key])
            .set(t);
    }

    /// Exports an issuer's `max_key_age` (or removes it when it has none).
    pub fn key_max_age(&self, issuer: &str, seconds: Option<i64>) {
        match seconds {
            Some(s) => self.key_max_age.with_label_values(&[issuer]).set(s),
            None => {
                let _ = self.key_max_age.remove_label_values(&[issuer]);
            }
        }
    }

    /// Counts a denial answered as an allow in shadow mode.
    pub fn shadow_denial(&self, issuer: &str, listener: &str, reason: &str) {
        self.shadow_denials
            .with_label_values(&[issuer, listener, reason])
            .inc();
    }

    /// Counts one proof-of-possession check. Resolved per call: a proof costs a signature
    /// check, next to which the label lookup is nothing. `kind` and `result` are fixed
    /// strings and `issuer` a configured name, so the series are bounded.
    pub fn proof(&self, issuer: &str, kind: &str, result: &str) {
        self.proofs.with_label_values(&[issuer, kind, result]).inc();
    }

    /// The rule-denial counter of route `name` (resolved once per config load).
    pub fn rule_denials(&self, route: &str) -> IntCounter {
        self.rule_denials.with_label_values(&[route])
    }

    /// Counts a config reload.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Resolves the cache counters.
    pub fn cache(&self) -> CacheMetrics {
        CacheMetrics {
            hit: self.cache_requests.with_label_values(&["hit"]),
            miss: self.cache_requests.with_label_values(&["miss"]),
        }
    }

    /// Resolves the handles of one key.
    pub fn key(&self, issuer: &str, source: &str, key: &str) -> KeyMetrics {
        self.key_counting(issuer, source, key, false)
    }

    /// The handles of a decryption key (SPEC §10): its counters count decryptions
    /// (`tokengate_key_decryptions_total`) instead of signature checks.
    pub fn decryption_key(&self, issuer: &str, source: &str, key: &str) -> KeyMetrics {
        self.key_counting(issuer, source, key, true)
    }

    fn key_counting(&self, issuer: &str, source: &str, key: &str, decrypts: bool) -> KeyMetrics {
        let (family, bad) = if decrypts {
            (&self.key_decryptions, "bad_decryption")
        } else {
            (&self.key_verifications, "bad_signature")
        };
        let v = |m, r| family.with_label_values(&[issuer, source, key, m, r]);
        KeyMetrics {
            verifications: [
                v("kid", "ok"),
                v("kid", bad),
                v("fallback", "ok"),
                v("fallback", bad),
            ],
            last_used: self.key_last_used.with_label_values(&[issuer, source, key]),
        }
    }

    /// Replaces an issuer's `tokengate_key_info` and `not_after` rows, and drops the
    /// series of keys that are neither current nor remembered as retired.
    pub fn key_infos(&self, issuer: &str, rows: Vec<KeyInfoRow>) {
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = exported.remove(issuer).unwrap_or_default();
        let mut now = Exported::default();
        for row in rows {
            let labels = [
                issuer,
                row.source,
                row.key.as_str(),
                row.kty,
                row.alg.as_str(),
                row.thumbprint.as_str(),
                row.state,
            ];
            self.key_info.with_label_values(&labels).set(1);
            if let Some(t) = row.not_after {
                self.key_not_after
                    .with_label_values(&[issuer, row.source, &row.key])
                    .set(t);
            }
            now.keys.insert((row.source, row.key.clone()));
            now.infos.insert(row);
        }
        for row in old.infos.difference(&now.infos) {
            let _ = self.key_info.remove_label_values(&[
                issuer,
                row.source,
                row.key.as_str(),
                row.kty,
                row.alg.as_str(),
                row.thumbprint.as_str(),
                row.state,
            ]);
        }
        for (source, key) in old.keys.difference(&now.keys) {
            let k = [issuer, *source, key.as_str()];
            let _ = self.key_not_after.remove_label_values(&k);
            let _ = self.key_first_seen.remove_label_values(&k);
            let _ = self.key_last_used.remove_label_values(&k);
            for m in ["kid", "fallback"] {
                for r in ["ok", "bad_signature"] {
                    let _ = self
                        .key_verifications
                        .remove_label_values(&[issuer, source, key, m, r]);
                }
                for r in ["ok", "bad_decryption"] {
                    let _ = self
                        .key_decryptions
                        .remove_label_values(&[issuer, source, key, m, r]);
                }
            }
        }
        exported.insert(issuer.to_string(), now);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

// === impl KeyMetrics ===

impl KeyMetrics {
    /// Counts one signature check (a decryption, for a decryption key's handles).
    pub fn verification(&self, fallback: bool, ok: bool) {
        let i = usize::from(fallback) * 2 + usize::from(!ok);
        self.verifications[i].inc();
    }

    /// Sets the last-used time.
    pub fn last_used(&self, t: i64) {
        self.last_used.set(t);
    }
}

// === impl DecisionHandles ===

impl DecisionHandles {
    /// Counts one decision. `issuer` is the issuer's index + 1 (0 = none matched).
    pub fn record(&self, issuer_slot: usize, reason_slot: usize, seconds: f64) {
        if let Some(c) = self
            .counters
            .get(issuer_slot)
            .and_then(|row| row.get(reason_slot))
        {
            c.inc();
        }
        self.duration.observe(seconds);
    }
}

// === impl ProcessCollector ===

impl ProcessCollector {
    /// `None` where `/proc/self/stat` cannot be read (not Linux, no procfs mounted): the
    /// process metrics are then absent rather than zero.
    fn new() -> Option<Self> {
        let stat = ProcStat::read()?;
        let (ticks, page_size) = auxv();
        // Boot time + start ticks; unknown boot time leaves the gauge out of the maths.
        let start = boot_time().map(|b| b as f64 + stat.start_ticks as f64 / ticks);
        let opts = |name: &str, help: &str| Opts::new(name, help);
        let cpu = valid(Counter::with_opts(opts(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent, in seconds.",
        )));
        let int_gauge = |name: &str, help: &str| valid(IntGauge::with_opts(opts(name, help)));
        let resident = int_gauge(
            "process_resident_memory_bytes",
            "Resident memory size, in bytes.",
        );
        let virtual_memory = int_gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size, in bytes.",
        );
        let open_fds = int_gauge("process_open_fds", "Number of open file descriptors.");
        let max_fds = int_gauge(
            "process_max_fds",
            "Maximum number of open file descriptors (soft limit).",
        );
        let threads = int_gauge("process_threads", "Number of OS threads in the process.");
        let start_time = valid(Gauge::with_opts(opts(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
        )));
        start_time.set(start.unwrap_or(0.0));
        let descs = [
            cpu.desc(),
            resident.desc(),
            virtual_memory.desc(),
            open_fds.desc(),
            max_fds.desc(),
            start_time.desc(),
            threads.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Some(Self {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            start_time,
            threads,
            descs,
            ticks,
            page_size,
            collecting: Mutex::new(()),
        })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self
            .collecting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A file that cannot be read this time keeps the last value of its metrics.
        if let Some(stat) = ProcStat::read() {
            let cpu = stat.cpu_ticks as f64 / self.ticks;
            let delta = cpu - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            self.resident
                .set(stat.rss_pages.saturating_mul(self.page_size));
            self.virtual_memory.set(stat.virtual_bytes);
            self.threads.set(stat.threads);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle being read is one of the entries; leave it out.
            let n = dir.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(max) = max_open_files() {
            self.max_fds.set(max);
        }
        let mut out = Vec::with_capacity(7);
        out.extend(self.cpu.collect());
        out.extend(self.resident.collect());
        out.extend(self.virtual_memory.collect());
        out.extend(self.open_fds.collect());
        out.extend(self.max_fds.collect());
        out.extend(self.start_time.collect());
        out.extend(self.threads.collect());
        out
    }
}

/// Unwraps the result of a metric definition made of static names and help texts, which
/// the prometheus crate only rejects for invalid names.
fn valid<T>(r: prometheus::Result<T>) -> T {
    r.unwrap_or_else(|e| unreachable!("static metric definition is valid: {e}"))
}

// === impl ProcStat ===

impl ProcStat {
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Parses `/proc/[pid]/stat` (proc(5)): `pid (comm) state ppid ...`. `comm` may hold
    /// spaces and parentheses, so fields are counted from the last `)`.
    fn parse(text: &str) -> Option<Self> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // proc(5) numbers fields from 1; `state` (field 3) is fields[0].
        let field = |n: usize| fields.get(n - 3).copied();
        let num = |n: usize| field(n)?.parse::<u64>().ok();
        let int = |n: usize| field(n)?.parse::<i64>().ok();
        Some(Self {
            cpu_ticks: num(14)?.saturating_add(num(15)?),
            threads: int(20)?,
            start_ticks: num(22)?,
            virtual_bytes: i64::try_from(num(23)?).unwrap_or(i64::MAX),
            rss_pages: int(24)?,
        })
    }
}

/// Clock ticks per second and page size, from the auxiliary vector the kernel gave this
/// process (`AT_CLKTCK`, `AT_PAGESZ`); reading `/proc/self/auxv` needs no `unsafe` call
/// to `sysconf`. Falls back to 100 (USER_HZ on every mainstream Linux architecture) and
/// 4096.
fn auxv() -> (f64, i64) {
    const AT_NULL: usize = 0;
    const AT_PAGESZ: usize = 6;
    const AT_CLKTCK: usize = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let mut ticks = 100.0;
    let mut page_size = 4096;
    let bytes = std::fs::read("/proc/self/auxv").unwrap_or_default();
    for pair in bytes.chunks_exact(2 * WORD) {
        let word = |b: &[u8]| b.try_into().map(usize::from_ne_bytes).unwrap_or(AT_NULL);
        let (key, value) = (word(&pair[..WORD]), word(&pair[WORD..]));
        match key {
            AT_NULL => break,
            AT_CLKTCK if value > 0 => ticks = value as f64,
            AT_PAGESZ if value > 0 => page_size = i64::try_from(value).unwrap_or(4096),
            _ => {}
        }
    }
    (ticks, page_size)
}

/// Boot time, in seconds since the Unix epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files (`Max open files` of `/proc/self/limits`); `None` when
/// unlimited or unreadable.
fn max_open_files() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{KeyInfoRow, Listener, Metrics, ProcStat};

    /// (name, sorted labels) of every sample in a rendering.
    fn series(text: &str) -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' ').map(|(head, _)| head.to_string()))
            .collect()
    }

    fn row(key: &str, state: &'static str) -> KeyInfoRow {
        KeyInfoRow {
            source: "jwks",
            key: key.to_string(),
            kty: "RSA",
            alg: "RS256".into(),
            thumbprint: format!("tp-{key}"),
            state,
            not_after: Some(4_102_444_800),
        }
    }

    #[test]
    fn parses_proc_stat_with_spaces_and_parens_in_the_command_name() {
        let line = "4242 (tokengate (x) y) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 4321 18446744073709551615 1 1 0 0 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                cpu_ticks: 325,
                threads: 9,
                start_ticks: 123_456,
                virtual_bytes: 987_654_321,
                rss_pages: 4321,
            })
        );
        assert_eq!(ProcStat::parse("4242 (truncated) S 1 2"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn exports_process_metrics_read_from_proc() {
        let text = Metrics::new().render();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(
            value("process_open_fds") >= 3.0,
            "stdin, stdout, stderr at least"
        );
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "this test process started within the hour: start {start}, now {now}"
        );
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    }

    #[test]
    fn forgets_the_series_of_keys_that_leave_the_exported_set() {
        let m = Metrics::new();
        let a = m.key("main", "jwks", "a");
        let b = m.key("main", "jwks", "b");
        a.verification(false, true);
        b.verification(true, false);
        b.last_used(1_700_000_000);
        m.key_infos("main", vec![row("a", "active"), row("b", "valid")]);
        let before = series(&m.render());
        assert!(
            before
                .iter()
                .any(|s| s.contains("key=\"b\"") && s.contains("state=\"valid\""))
        );

        // b retired (still remembered): its series stay, with the new state.
        m.key_infos("main", vec![row("a", "active"), row("b", "retired")]);
        let text = m.render();
        assert!(text.contains(
            "tokengate_key_verifications_total{issuer=\"main\",key=\"b\",match=\"fallback\",result=\"bad_signature\",source=\"jwks\"} 1"
        ));
        assert!(
            !text.contains("state=\"valid\""),
            "the valid row of b is gone:\n{text}"
        );

        // b forgotten: every series naming it goes; a's stay.
        m.key_infos("main", vec![row("a", "active")]);
        let after = series(&m.render());
        assert!(after.iter().all(|s| !s.contains("key=\"b\"")), "{after:#?}");
        let gone: Vec<_> = before.difference(&after).collect();
        assert_eq!(
            gone.len(),
            7,
            "4 verifications, last used, not_after, key_info: {gone:#?}"
        );
        assert!(
            after
                .iter()
                .any(|s| s.contains("key=\"a\"") && s.contains("match=\"kid\""))
        );
    }

    #[test]
    fn creates_both_reload_results_on_the_first_reload() {
        let m = Metrics::new();
        m.source_reload("main", "jwks_file", true);
        let text = m.render();
        assert!(text.contains(
            "tokengate_key_source_reloads_total{issuer=\"main\",result=\"error\",source=\"jwks_file\"} 0"
        ));
        assert!(text.contains(
            "tokengate_key_source_reloads_total{issuer=\"main\",result=\"ok\",source=\"jwks_file\"} 1"
        ));
    }

    #[test]
    fn decision_handles_cover_every_issuer_and_reason_up_front() {
        let m = Metrics::new();
        let h = m.decision_handles(
            Listener::AuthzHttp,
            &["main"],
            &[("allow", "ok"), ("deny", "expired")],
        );
        let before = series(&m.render());
        h.record(1, 1, 0.001);
        h.record(9, 9, 0.001); // out of range: ignored, no new series
        let text = m.render();
        assert_eq!(series(&text), before, "recording adds no series");
        assert!(text.contains(
            "tokengate_decisions_total{decision=\"deny\",issuer=\"main\",listener=\"authz_http\",reason=\"expired\"} 1"
        ));
        assert_eq!(
            before
                .iter()
                .filter(|s| s.starts_with("tokengate_decisions_total"))
                .count(),
            4,
            "issuers - and main, two reasons"
        );
    }
}
