//! `admin`: operations endpoints.
//!
//! - `GET /metrics`: Prometheus text format;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when every issuer has at least one usable key, or, once
//!   `readiness.grace` has passed since start, when one has; else 503. The body lists
//!   each issuer, its state and key count;
//! - `GET /keys`: the key inventory as JSON (SPEC §6);
//! - `GET /rotation`: the live half of a rotation plan (SPEC §9): the signing key, keys
//!   still in use and since when the others are unused, the longest token lifetime
//!   seen, expiring certificates, keys past `max_key_age`;
//! - `POST /refresh`: reload the config and key files and refetch every JWKS now, wait
//!   for the results and answer them per source: 200 when every source succeeded, 502
//!   when one failed (SIGHUP does the same and logs the results).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::app::App;
use crate::keys::inventory;

/// The admin routes, behind the HTTP/1.1 `Host` rule of every listener.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/keys", get(keys))
        .route("/rotation", get(rotation))
        .route("/refresh", post(refresh))
        .with_state(app)
        .layer(axum::middleware::from_fn(host_rule))
}

/// Refuses a request without exactly one `Host` (a framing error, as on the other
/// listeners).
async fn host_rule(req: http::Request<Body>, next: axum::middleware::Next) -> http::Response<Body> {
    if crate::request::check_host(req.headers()).is_err() {
        return super::denial_response(&crate::decision::DenyReason::InvalidRequest.into())
            .map(Body::new);
    }
    next.run(req).await
}

async fn metrics(State(app): State<Arc<App>>) -> http::Response<Body> {
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        app.render_metrics(),
    )
}

async fn healthz() -> http::Response<Body> {
    respond(StatusCode::OK, "text/plain", "ok\n".to_string())
}

async fn readyz(State(app): State<Arc<App>>) -> http::Response<Body> {
    let r = app.readiness();
    let body = json!({
        "ready": r.ready,
        "issuers": r.issuers
            .iter()
            .map(|i| json!({
                "name": i.name,
                "state": if i.ready { "ready" } else { "unavailable" },
                "keys": i.keys,
            }))
            .collect::<Vec<_>>(),
    });
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", body.to_string())
}

async fn keys(State(app): State<Arc<App>>) -> http::Response<Body> {
    let body = inventory::to_json(&app.inventory());
    respond(StatusCode::OK, "application/json", body.to_string())
}

async fn rotation(State(app): State<Arc<App>>) -> http::Response<Body> {
    respond(
        StatusCode::OK,
        "application/json",
        app.rotation().to_string(),
    )
}

async fn refresh(State(app): State<Arc<App>>) -> http::Response<Body> {
    let report = app.refresh_now().await;
    let status = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    respond(
        status,
        "application/json",
        App::report_json(&report).to_string(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
