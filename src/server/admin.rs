//! `admin`: operations endpoints.
//!
//! - `GET /metrics`: Prometheus text format;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when every issuer has at least one usable key, else 503 (the
//!   body says which issuers are waiting);
//! - `GET /keys`: the key inventory as JSON (SPEC §6);
//! - `POST /refresh`: reload the config and key files and refetch every JWKS now (the
//!   same as SIGHUP).

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::App;
use crate::keys::inventory;

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/keys", web::get().to(keys))
        .route("/refresh", web::post().to(refresh));
}

async fn metrics(app: web::Data<Arc<App>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(app.render_metrics())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(app: web::Data<Arc<App>>) -> HttpResponse {
    let issuers = app.readiness();
    let ready = issuers.iter().all(|(_, ok)| *ok);
    let body = json!({
        "ready": ready,
        "issuers": issuers
            .iter()
            .map(|(name, ok)| json!({"issuer": name, "keys_loaded": ok}))
            .collect::<Vec<_>>(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn keys(app: web::Data<Arc<App>>) -> HttpResponse {
    HttpResponse::Ok().json(inventory::to_json(&app.inventory()))
}

async fn refresh(app: web::Data<Arc<App>>) -> HttpResponse {
    app.refresh();
    HttpResponse::Accepted().json(json!({"refresh": "started"}))
}
