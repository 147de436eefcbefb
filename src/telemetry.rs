//! Traces (SPEC §12 `telemetry`): a `tokengate.check` span per sampled check, with child
//! spans for a JWKS refetch and a fallback scan, exported in batches over OTLP (gRPC or
//! HTTP/protobuf).
//!
//! - **Off by default, free when off.** Our spans use the target [`TARGET`], which the log
//!   filter never enables: without a `telemetry.otlp_endpoint` no layer wants them and a
//!   span macro is one relaxed load.
//! - **Sampled before the span exists.** A check whose request carries a W3C
//!   `traceparent` follows the caller's sampled flag; one without is traced with
//!   probability `sample_ratio`. An unsampled check creates no span at all, so 99 % of
//!   checks at the default 0.01 cost one header lookup.
//! - **Export never delays a decision.** Spans queue for the SDK's batch processor (a
//!   full queue drops them); the export itself runs on our runtime, and a batch that
//!   fails counts in `tokengate_telemetry_export_errors_total`.
//!
//! The tracing subscriber is process-wide, so `serve` reads `telemetry` once, at start;
//! a reload that changes it is logged and takes effect at the next restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData};
use prometheus::IntCounter;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::{OtlpProtocol, TelemetryConfig};
use crate::token::extract::Headers;

/// The `tracing` target of every span tokengate exports; never logged.
pub const TARGET: &str = "tokengate::otel";

/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings telemetry started with (once per process).
static STARTED: OnceLock<TelemetryConfig> = OnceLock::new();

/// The running exporter.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// The settings telemetry runs with: `None` when it did not start (a reload that
/// changes them takes effect at the next start).
pub fn started() -> Option<&'static TelemetryConfig> {
    STARTED.get()
}

// === impl Telemetry ===

impl Telemetry {
    /// Builds the exporter and the tracer provider; must run inside the runtime that
    /// will carry the exports.
    pub fn start(config: &TelemetryConfig) -> Result<Self, String> {
        let exporter = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.otlp_endpoint.as_str())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(http_traces_url(&config.otlp_endpoint))
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
        }
        .map_err(|e| format!("telemetry.otlp_endpoint: cannot build the OTLP exporter: {e}"))?;
        let counting = CountingExporter {
            inner: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
            errors: crate::metrics::telemetry_export_errors(),
            warned: AtomicBool::new(false),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(counting).build())
            // Sampling is decided before a span is made ([`check_span`]); the SDK keeps
            // every span it is given.
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let _ = STARTED.set(config.clone());
        Ok(Self { provider })
    }

    /// The `tracing` layer that turns our spans into OpenTelemetry spans (only the
    /// [`TARGET`] ones).
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("tokengate"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::INFO),
            )
    }

    /// Exports what is queued and stops (blocking, at most a few seconds).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry: spans not exported at shutdown");
        }
    }
}

/// For `http/protobuf`, the OTLP/HTTP traces URL: `/v1/traces` appended to an endpoint
/// without a path (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read), any other path kept.
fn http_traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        endpoint.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// Counts failed exports, and runs each on our runtime (the batch processor calls from
/// a thread of its own, where the async gRPC and HTTP clients cannot run).
#[derive(Debug)]
struct CountingExporter<E> {
    inner: Arc<E>,
    runtime: tokio::runtime::Handle,
    errors: IntCounter,
    /// The first failure is logged; the counter tells the rest.
    warned: AtomicBool,
}

impl<E: opentelemetry_sdk::trace::SpanExporter + 'static> opentelemetry_sdk::trace::SpanExporter
    for CountingExporter<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        let result = match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(OTelSdkError::InternalFailure(format!("export task: {e}"))),
        };
        if let Err(e) = &result {
            self.errors.inc();
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "telemetry: cannot export spans (counted in tokengate_telemetry_export_errors_total; further failures are not logged)");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, before the first export, while the exporter is not shared yet:
        // the OTLP exporter takes `service.name` from here.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Reads `traceparent` / `tracestate`: from the ext_authz call's own metadata when
/// given (`explicit`), else from the request's headers (exactly one value each).
struct Carrier<'a, H: ?Sized> {
    headers: &'a H,
    explicit: Option<(&'a str, Option<&'a str>)>,
}

impl<H: Headers + ?Sized> Extractor for Carrier<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Some((parent, state)) = self.explicit {
            return match key {
                "traceparent" => Some(parent),
                "tracestate" => state,
                _ => None,
            };
        }
        let (mut first, mut n) = (None, 0);
        self.headers.for_each(key, &mut |v| {
            n += 1;
            first.get_or_insert(v);
        });
        if n != 1 {
            return None;
        }
        first.and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// The W3C trace context the request (or the ext_authz call) carries.
fn parent<H: Headers + ?Sized>(
    headers: &H,
    explicit: Option<(&str, Option<&str>)>,
) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Carrier { headers, explicit })
}

/// The `tokengate.check` span of one check: disabled when telemetry is off or the check
/// is not sampled (see the module docs).
pub fn check_span<H: Headers + ?Sized>(
    listener: &'static str,
    headers: &H,
    explicit: Option<(&str, Option<&str>)>,
) -> Span {
    let Some(ratio) = STARTED.get().map(|c| c.sample_ratio) else {
        return Span::none();
    };
    let cx = parent(headers, explicit);
    let remote = cx.span().span_context().clone();
    let sampled = if remote.is_valid() {
        remote.is_sampled()
    } else {
        crate::audit::unit_random() < ratio
    };
    if !sampled {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "tokengate.check",
        otel.kind = "server",
        tokengate.listener = listener,
        tokengate.route = tracing::field::Empty,
        tokengate.decision = tracing::field::Empty,
        tokengate.reason = tracing::field::Empty,
        tokengate.issuer = tracing::field::Empty,
        tokengate.key = tracing::field::Empty,
        tokengate.r#match = tracing::field::Empty,
        tokengate.cached = tracing::field::Empty,
    );
    if remote.is_valid() {
        let _ = span.set_parent(cx);
    }
    span
}

/// The trace id of a check: its span's, else the one the request carries (a decision-log
/// field even when the check is not traced).
pub fn trace_id<H: Headers + ?Sized>(
    span: &Span,
    headers: &H,
    explicit: Option<(&str, Option<&str>)>,
) -> Option<String> {
    let from_span = (!span.is_disabled())
        .then(|| span.context().span().span_context().trace_id())
        .filter(|id| *id != opentelemetry::trace::TraceId::INVALID);
    from_span
        .or_else(|| {
            let cx = parent(headers, explicit);
            let sc = cx.span().span_context().clone();
            sc.is_valid().then(|| sc.trace_id())
        })
        .map(|id| id.to_string())
}

/// A child span of the current check span for a JWKS refetch (disabled when the check
/// is not traced).
pub fn refetch_span(issuer: &str) -> Span {
    if Span::current().is_disabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "tokengate.jwks_refetch", tokengate.issuer = issuer)
}

/// A child span of the current check span for a fallback scan over the issuer's keys.
pub fn fallback_span(issuer: &str) -> Span {
    if Span::current().is_disabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "tokengate.fallback_scan", tokengate.issuer = issuer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_traces_url_gets_its_path_only_when_it_has_none() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("https://c/otlp/v1/traces"),
            "https://c/otlp/v1/traces"
        );
    }

    #[test]
    fn the_parent_comes_from_one_traceparent_or_the_explicit_one() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let one = vec![("traceparent".to_string(), tp.to_string())];
        let id = |cx: opentelemetry::Context| cx.span().span_context().trace_id().to_string();
        assert_eq!(
            id(parent(one.as_slice(), None)),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // Two traceparents: no parent (a request that reads two ways is not believed).
        let two = vec![
            ("traceparent".to_string(), tp.to_string()),
            (
                "traceparent".to_string(),
                "00-11111111111111111111111111111111-00f067aa0ba902b7-01".to_string(),
            ),
        ];
        assert!(
            !parent(two.as_slice(), None)
                .span()
                .span_context()
                .is_valid()
        );
        let explicit = "00-22222222222222222222222222222222-00f067aa0ba902b7-00";
        let cx = parent(one.as_slice(), Some((explicit, None)));
        assert_eq!(id(cx.clone()), "22222222222222222222222222222222");
        assert!(!cx.span().span_context().is_sampled());
        let none: Vec<(String, String)> = Vec::new();
        assert_eq!(
            trace_id(&Span::none(), none.as_slice(), None),
            None,
            "no trace context, no id"
        );
        assert_eq!(
            trace_id(&Span::none(), one.as_slice(), None).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
