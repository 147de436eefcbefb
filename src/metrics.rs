//! Every `tokengate_*` metric: names, help texts, units, buckets and label sets, in one
//! place. Families are registered once; handles are resolved ahead of the hot path —
//! per (listener, issuer, reason) when a config is applied, per key when a key is
//! loaded — so a request only increments. Label values come from the config and from
//! loaded keys, never from a token, so no request can add a series.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Decision latency buckets, in seconds (10 µs to 1 s).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.25, 1.0,
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
    key_last_used: IntGaugeVec,
    key_info: IntGaugeVec,
    key_not_after: IntGaugeVec,
    kid_misses: IntCounterVec,
    jwks_fetches: IntCounterVec,
    jwks_last_success: IntGaugeVec,
    key_source_reloads: IntCounterVec,
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
}

/// Cache counters.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    /// Hits.
    pub hit: IntCounter,
    /// Misses.
    pub miss: IntCounter,
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

// === impl Metrics ===

impl Metrics {
    /// Registers every family (reason labels are passed in by the caller so that this
    /// module depends on no other).
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
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
            "Authorization decisions, by issuer, listener, decision and reason.",
            &["issuer", "listener", "decision", "reason"],
        );
        let key_verifications = counter(
            "tokengate_key_verifications_total",
            "Signature verifications per key version, by how the key was found and the result.",
            &["issuer", "source", "key", "match", "result"],
        );
        let key_last_used = gauge(
            "tokengate_key_last_used_timestamp_seconds",
            "Unix time a token was last accepted with this key.",
            &["issuer", "source", "key"],
        );
        let key_info = gauge(
            "tokengate_key_info",
            "Loaded and remembered keys (value 1), with their type, algorithm, thumbprint and state.",
            &["issuer", "source", "key", "kty", "alg", "thumbprint", "state"],
        );
        let key_not_after = gauge(
            "tokengate_key_not_after_timestamp_seconds",
            "Unix time the certificate of this key expires.",
            &["issuer", "source", "key"],
        );
        let kid_misses = counter(
            "tokengate_kid_misses_total",
            "Tokens whose kid was not known, by outcome.",
            &["issuer", "outcome"],
        );
        let jwks_fetches = counter(
            "tokengate_jwks_fetches_total",
            "Remote JWKS fetches, by result.",
            &["issuer", "result"],
        );
        let jwks_last_success = gauge(
            "tokengate_jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS fetch.",
            &["issuer"],
        );
        let key_source_reloads = counter(
            "tokengate_key_source_reloads_total",
            "Reloads of local key sources (files, keystores), by result.",
            &["issuer", "source", "result"],
        );
        let config_reloads = counter(
            "tokengate_config_reloads_total",
            "Reloads of the config file, by result.",
            &["result"],
        );
        let cache_requests = counter(
            "tokengate_token_cache_requests_total",
            "Verified-token cache lookups, by result.",
            &["result"],
        );
        let decision_duration = reg(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "tokengate_decision_duration_seconds",
                    "Time to decide one request, in seconds.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["listener"],
            )
            .unwrap_or_else(|e| unreachable!("static histogram definition is valid: {e}")),
        );
        let build_info = reg(
            &registry,
            GaugeVec::new(
                Opts::new("tokengate_build_info", "Build information (value 1)."),
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
        Self {
            registry,
            decisions,
            key_verifications,
            key_last_used,
            key_info,
            key_not_after,
            kid_misses,
            jwks_fetches,
            jwks_last_success,
            key_source_reloads,
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
                        self.decisions
                            .with_label_values(&[issuer, listener.label(), decision, reason])
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
    pub fn issuer(&self, issuer: &str) -> IssuerMetrics {
        let m = |o| self.kid_misses.with_label_values(&[issuer, o]);
        let f = |r| self.jwks_fetches.with_label_values(&[issuer, r]);
        IssuerMetrics {
            misses: [m("refetch_found"), m("fallback_matched"), m("rejected")],
            fetches: [f("ok"), f("not_modified"), f("error")],
            last_success: self.jwks_last_success.with_label_values(&[issuer]),
        }
    }

    /// Counts a local key source reload.
    pub fn source_reload(&self, issuer: &str, source: &str, ok: bool) {
        self.key_source_reloads
            .with_label_values(&[issuer, source, if ok { "ok" } else { "error" }])
            .inc();
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
        let v = |m, r| {
            self.key_verifications
                .with_label_values(&[issuer, source, key, m, r])
        };
        KeyMetrics {
            verifications: [
                v("kid", "ok"),
                v("kid", "bad_signature"),
                v("fallback", "ok"),
                v("fallback", "bad_signature"),
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
            let _ = self.key_last_used.remove_label_values(&k);
            for m in ["kid", "fallback"] {
                for r in ["ok", "bad_signature"] {
                    let _ = self
                        .key_verifications
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
    /// Counts one signature check.
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
