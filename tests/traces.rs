//! Traces (SPEC §12 `telemetry`) against a real OTLP receiver (`support::otlp`, built
//! from the `opentelemetry-proto` definitions): `tokengate.check` spans in the caller's
//! trace through `authz_http`, through `authz_grpc` and `authz_http` behind real Envoy
//! with Envoy's own tracing on (the snippets of docs/policy.md), over gRPC and
//! HTTP/protobuf; a collector that is down changes no decision and counts its failures.

use serde_json::{Value, json};

use crate::support::envoy::{self, Envoy};
use crate::support::otlp::{Receiver, Span};
use crate::support::upstream::{Mode, Upstream};
use crate::support::{ANY_PORT, ClosedPort, TempDir, Tokengate, fixture_issuer, mint, token};

/// Batches leave every 100 ms instead of 5 s.
const FAST_EXPORT: [(&str, &str); 1] = [("OTEL_BSP_SCHEDULE_DELAY", "100")];

/// tokengate exporting to `endpoint`, with `authz_grpc` too when `grpc`, the decision log
/// on, one route named `orders`.
fn traced(dir: &TempDir, telemetry: Value, grpc: bool) -> Tokengate {
    let cfg = json!({
        "listeners": {"authz_grpc": if grpc { json!(ANY_PORT) } else { Value::Null }},
        "issuers": [fixture_issuer()],
        "routes": [{"name": "orders", "path_prefix": "/orders"}],
        "telemetry": telemetry,
        "audit": {"enabled": true}
    });
    let tg = Tokengate::start_env(dir, cfg, &FAST_EXPORT);
    tg.wait_ready();
    tg
}

fn traceparent(trace: &str, parent: &str, sampled: bool) -> String {
    format!("00-{trace}-{parent}-{}", if sampled { "01" } else { "00" })
}

fn attr<'s>(s: &'s Span, key: &str) -> &'s str {
    s.attributes
        .get(key)
        .map_or_else(|| panic!("no {key} on {s:#?}"), String::as_str)
}

fn in_trace<'s>(spans: &'s [Span], trace: &str, name: &str) -> Vec<&'s Span> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace && s.name == name)
        .collect()
}

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const T2: &str = "5c0a1f2e3d4b5a69788796a5b4c3d2e1";
const T3: &str = "6d1b2a3f4e5c6b7a8998a7b6c5d4e3f2";
const T4: &str = "7e2c3b4a5f6d7c8b9aa9b8c7d6e5f4a3";
const PARENT: &str = "00f067aa0ba902b7";

/// Through `authz_http` at `sample_ratio` 0: a sampled `traceparent` is traced in the
/// caller's trace with the decision's attributes, one that is not sampled (or none) is
/// not; an unknown kid shows its refetch and fallback scan as child spans; the decision
/// log carries the trace id, sampled or not.
#[test]
fn authz_http_checks_join_the_callers_trace() {
    let dir = TempDir::new("traces-http");
    let receiver = Receiver::grpc();
    let tg = traced(
        &dir,
        json!({"otlp_endpoint": receiver.url(), "sample_ratio": 0.0}),
        false,
    );
    let good = format!("Bearer {}", token("GOOD_RS256"));
    let check = |path: &str, auth: &str, tp: Option<String>| {
        let mut headers = vec![("authorization", auth.to_string())];
        headers.extend(tp.map(|t| ("traceparent", t)));
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tg.check("GET", path, &h).status
    };
    assert_eq!(
        check("/orders/1", &good, Some(traceparent(T1, PARENT, true))),
        200
    );
    assert_eq!(
        check("/orders/2", &good, Some(traceparent(T2, PARENT, false))),
        200
    );
    assert_eq!(check("/orders/3", &good, None), 200);
    let rotated = mint::sign(
        jsonwebtoken::Algorithm::RS256,
        "rsa-1",
        Some("rotated-away"),
        &mint::claims(),
    );
    let rotated = format!("Bearer {rotated}");
    assert_eq!(
        check("/x", &rotated, Some(traceparent(T3, PARENT, true))),
        200
    );
    let expired = format!("Bearer {}", token("EXPIRED"));
    assert_eq!(
        check("/orders/4", &expired, Some(traceparent(T4, PARENT, true))),
        401
    );

    let checks = receiver.wait_for("tokengate.check", 3);
    assert_eq!(checks.len(), 3, "one span per sampled check: {checks:#?}");
    let all = receiver.spans();
    let first = in_trace(&all, T1, "tokengate.check");
    let [first] = first.as_slice() else {
        panic!("no single check span in the caller's trace: {all:#?}");
    };
    assert_eq!(
        first.parent_span_id, PARENT,
        "the caller's span is the parent"
    );
    assert_eq!(first.kind, 2, "a server span");
    assert_eq!(first.service, "tokengate");
    for (key, want) in [
        ("tokengate.listener", "authz_http"),
        ("tokengate.route", "orders"),
        ("tokengate.decision", "allow"),
        ("tokengate.reason", "ok"),
        ("tokengate.issuer", "main"),
        ("tokengate.key", "rsa-1"),
        ("tokengate.match", "kid"),
        ("tokengate.cached", "false"),
    ] {
        assert_eq!(attr(first, key), want, "{key}");
    }
    assert!(
        all.iter().all(|s| s.trace_id != T2),
        "a caller's unsampled trace was exported: {all:#?}"
    );

    // The unknown kid: the refetch and the fallback scan under the check's span.
    let scan = in_trace(&all, T3, "tokengate.check");
    let [scan] = scan.as_slice() else {
        panic!("no check span for the rotated token: {all:#?}");
    };
    assert_eq!(attr(scan, "tokengate.match"), "fallback");
    assert_eq!(attr(scan, "tokengate.route"), "-");
    for child in ["tokengate.jwks_refetch", "tokengate.fallback_scan"] {
        let c = receiver
            .wait_for(child, 1)
            .into_iter()
            .find(|s| s.trace_id == T3)
            .unwrap_or_else(|| panic!("no {child} in the trace: {all:#?}"));
        assert_eq!(c.parent_span_id, scan.span_id, "{child} under the check");
        assert_eq!(attr(&c, "tokengate.issuer"), "main");
    }
    let denied = in_trace(&all, T4, "tokengate.check");
    assert_eq!(
        denied
            .first()
            .map(|s| (attr(s, "tokengate.decision"), attr(s, "tokengate.reason"))),
        Some(("deny", "expired"))
    );

    // The decision log names the caller's trace, sampled or not.
    let lines = tg.wait_audit_lines(5);
    let trace_of = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .map(|l| l["trace_id"].clone())
    };
    assert_eq!(trace_of("/orders/1"), Some(json!(T1)));
    assert_eq!(trace_of("/orders/2"), Some(json!(T2)));
    assert_eq!(trace_of("/orders/3"), Some(Value::Null));
    assert_eq!(
        tg.metrics()
            .value("tokengate_telemetry_export_errors_total", &[]),
        Some(0.0)
    );
}

/// The two YAML blocks of docs/policy.md, "Tracing behind Envoy and Istio".
fn envoy_tracing_snippets() -> (Value, Value) {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policy.md"),
    )
    .expect("docs/policy.md");
    let block = |marker: &str| {
        let yaml = text
            .split(&format!("<!-- {marker} -->\n"))
            .nth(1)
            .and_then(|rest| rest.split("```yaml\n").nth(1))
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("no {marker} block in docs/policy.md"));
        envoy::yaml_to_json(yaml)
    };
    let mut hcm = block("envoy-tracing");
    (hcm["tracing"].take(), block("envoy-tracing-cluster"))
}

/// The shipped Envoy config (`deploy/envoy/<config>`) with the docs' tracing blocks, the
/// collector cluster pointed at `receiver`, and spans flushed every 100 ms.
fn envoy_tracing(
    dir: &TempDir,
    config: &str,
    app: &Upstream,
    authz: u16,
    receiver: &Receiver,
) -> Envoy {
    let (tracing, mut cluster) = envoy_tracing_snippets();
    let sa = cluster
        .pointer_mut("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address")
        .expect("the cluster's socket_address");
    *sa = json!({"address": receiver.addr.ip().to_string(), "port_value": receiver.addr.port()});
    cluster["type"] = json!("STATIC");
    Envoy::start_with(dir, config, app.addr, authz, |doc| {
        doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["tracing"] = tracing;
        doc["static_resources"]["clusters"]
            .as_array_mut()
            .expect("clusters")
            .push(cluster);
        doc["layered_runtime"] = json!({"layers": [{"name": "static", "static_layer": {
            "tracing.opentelemetry.flush_interval_ms": 100
        }}]});
    })
}

/// Behind real Envoy with its OpenTelemetry tracer on (both ext_authz transports):
/// tokengate's span is in the client's trace, under Envoy's own span for the ext_authz
/// call, which Envoy exported to the same collector.
#[test]
fn behind_envoy_with_tracing_on_the_check_sits_under_envoys_span() {
    let dir = TempDir::new("traces-envoy");
    let receiver = Receiver::grpc();
    let app = Upstream::start(Mode::Echo);
    let tg = traced(
        &dir,
        json!({"otlp_endpoint": receiver.url(), "sample_ratio": 0.0}),
        true,
    );
    let good = format!("Bearer {}", token("GOOD_RS256"));
    let grpc_dir = TempDir::new("traces-envoy-grpc");
    let via_grpc = envoy_tracing(
        &grpc_dir,
        "ext-authz-grpc.yaml",
        &app,
        tg.addr("authz_grpc").port(),
        &receiver,
    );
    let http_dir = TempDir::new("traces-envoy-http");
    let via_http = envoy_tracing(
        &http_dir,
        "ext-authz-http.yaml",
        &app,
        tg.authz.port(),
        &receiver,
    );

    for (envoy, trace, listener) in [(&via_grpc, T1, "authz_grpc"), (&via_http, T2, "authz_http")] {
        let r = envoy.request(
            "GET",
            "/orders/1",
            &[
                ("authorization", &good),
                ("traceparent", &traceparent(trace, PARENT, true)),
            ],
        );
        assert_eq!(r.status, 200, "{listener}: {}", r.body_text());
        let denied = envoy.request(
            "GET",
            "/orders/2",
            &[("traceparent", &traceparent(trace, PARENT, true))],
        );
        assert_eq!(denied.status, 401, "{listener}");
    }

    receiver.wait_for("tokengate.check", 4);
    for (trace, listener) in [(T1, "authz_grpc"), (T2, "authz_http")] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let all = receiver.spans();
            let checks = in_trace(&all, trace, "tokengate.check");
            let parents: Vec<&Span> = checks
                .iter()
                .filter_map(|c| {
                    all.iter()
                        .find(|s| s.span_id == c.parent_span_id && s.service == "envoy")
                })
                .collect();
            if checks.len() == 2 && parents.len() == 2 {
                for c in &checks {
                    assert_eq!(attr(c, "tokengate.listener"), listener);
                    assert_ne!(c.parent_span_id, PARENT, "Envoy's span is between");
                }
                let decisions: Vec<&str> =
                    checks.iter().map(|c| attr(c, "tokengate.reason")).collect();
                assert!(
                    decisions.contains(&"ok") && decisions.contains(&"missing_token"),
                    "{decisions:?}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{listener}: {} check spans in trace {trace}, {} under an Envoy span; spans: {all:#?}",
                checks.len(),
                parents.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// OTLP over HTTP with protobuf bodies reaches the collector, with the configured
/// `service.name` (over `OTEL_SERVICE_NAME`) and `OTEL_RESOURCE_ATTRIBUTES`; at
/// `sample_ratio` 1 every check is traced without a `traceparent`.
#[test]
fn http_protobuf_export_carries_the_service_name() {
    let dir = TempDir::new("traces-http-protobuf");
    let receiver = Receiver::http();
    let cfg = json!({
        "listeners": {"authz_grpc": Value::Null},
        "issuers": [fixture_issuer()],
        "routes": [{"name": "orders", "path_prefix": "/orders"}],
        "telemetry": {"otlp_endpoint": receiver.url(), "protocol": "http/protobuf",
                      "sample_ratio": 1.0, "service_name": "orders-gate"}
    });
    let env = [
        FAST_EXPORT[0],
        ("OTEL_SERVICE_NAME", "from-the-environment"),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=orders-7f9c"),
    ];
    let tg = Tokengate::start_env(&dir, cfg, &env);
    tg.wait_ready();
    assert_eq!(
        tg.check_token("/orders/1", &token("GOOD_RS256")).status,
        200
    );
    assert_eq!(tg.check("GET", "/orders/2", &[]).status, 401);
    let spans = receiver.wait_for("tokengate.check", 2);
    assert!(
        spans.iter().all(|s| s.service == "orders-gate"),
        "{spans:#?}"
    );
    assert!(
        spans.iter().all(|s| s.parent_span_id.is_empty()),
        "root spans without a traceparent"
    );
}

/// A collector that is down: every decision is what it would be, and the failures count.
#[test]
fn an_unreachable_collector_changes_no_decision_and_counts_failures() {
    let dir = TempDir::new("traces-down");
    let down = ClosedPort::new();
    let tg = traced(
        &dir,
        json!({"otlp_endpoint": format!("http://{}", down.addr), "sample_ratio": 1.0}),
        false,
    );
    let good = token("GOOD_RS256");
    for i in 0..20 {
        assert_eq!(tg.check_token(&format!("/orders/{i}"), &good).status, 200);
        assert_eq!(tg.check("GET", "/orders/x", &[]).status, 401);
    }
    assert_eq!(tg.check_token("/x", &token("EXPIRED")).status, 401);
    tg.wait_for(
        || {
            tg.metrics()
                .value("tokengate_telemetry_export_errors_total", &[])
                .is_some_and(|v| v >= 1.0)
        },
        "an export failure counted",
    );
    assert!(
        tg.logs().contains("telemetry: cannot export spans"),
        "the first failure is logged"
    );
    assert_eq!(tg.check_token("/orders/after", &good).status, 200);
}
