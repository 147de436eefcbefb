//! `tokengate demo`: the embedded default. Generates an ephemeral ES256 key pair, serves
//! its JWKS itself on loopback, starts `authz_http` and `admin` on loopback with a
//! config that fetches that JWKS, and prints a valid token with ready-to-paste `curl`
//! lines (one allowed, one denied). Nothing is written to disk.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::Exit;
use super::serve::{start, wait_for_signals};
use crate::app::EnvLookup;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;

/// The demo's key id.
pub const DEMO_KID: &str = "demo-es256-1";
/// The demo's audience.
pub const DEMO_AUDIENCE: &str = "demo-api";

/// Runs the demo until SIGTERM/SIGINT.
pub async fn run(authz_http: SocketAddr, admin: SocketAddr, env: EnvLookup) -> Exit {
    match run_inner(authz_http, admin, env).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage
        }
    }
}

async fn run_inner(
    authz_http: SocketAddr,
    admin: SocketAddr,
    env: EnvLookup,
) -> Result<(), String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot generate a key pair".to_string())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| "cannot read the generated key pair".to_string())?;
    let point = pair.public_key().as_ref();
    if point.len() != 65 {
        return Err("unexpected public key encoding".into());
    }
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": DEMO_KID,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]})
    .to_string();

    // The demo's own "authorization server": a JWKS on an ephemeral loopback port,
    // served like every other listener.
    let jwks_listener = crate::server::tcp_listener(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("cannot start the demo JWKS server: {e}"))?;
    let jwks_addr = jwks_listener
        .local_addr()
        .map_err(|e| format!("cannot start the demo JWKS server: {e}"))?;
    let router = axum::Router::new().route(
        "/demo/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], jwks) }
        }),
    );
    let (jwks_stop, stopped) = tokio::sync::watch::channel(false);
    let jwks_task = tokio::spawn(crate::server::serve_http1(
        "demo_jwks",
        jwks_listener,
        move |_| hyper_util::service::TowerToHyperService::new(router.clone()),
        stopped,
    ));

    let issuer = format!("http://{jwks_addr}/demo");
    let config_text = json!({
        "listeners": {
            "authz_http": authz_http.to_string(),
            "admin": admin.to_string(),
            "authz_grpc": null,
        },
        "issuers": [{
            "name": "demo",
            "issuer": issuer,
            "audiences": [DEMO_AUDIENCE],
            "algorithms": ["ES256"],
            "key_sources": [{ "jwks_uri": format!("{issuer}/jwks.json"), "refresh": "5m" }],
        }],
        "routes": [
            { "path_prefix": "/public", "allow_anonymous": true },
            { "path_prefix": "/orders", "methods": ["POST", "DELETE"], "scopes_all": ["orders:write"] },
        ],
        "forward": { "claim_headers": { "x-auth-subject": "sub", "x-auth-scopes": "scope" } },
    })
    .to_string();
    let config = Config::parse(Path::new("<demo>"), config_text.as_bytes())
        .map_err(|e| format!("the embedded demo config is invalid: {e}"))?;

    let (app, listeners) = start(config, env)?;
    // Wait (briefly) for the first JWKS fetch so the printed token works at once.
    for _ in 0..100 {
        if app.ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let now = SystemClock.now();
    let claims = json!({
        "iss": issuer, "aud": DEMO_AUDIENCE, "sub": "demo-user",
        "scope": "orders:read orders:write", "iat": now, "exp": now + 3600,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(DEMO_KID.into());
    header.typ = Some("at+jwt".into());
    let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let token = jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| format!("cannot sign the demo token: {e}"))?;

    let authz = listeners.addr("authz_http").unwrap_or(authz_http);
    let admin = listeners.addr("admin").unwrap_or(admin);
    println!("tokengate demo: issuer {issuer} (JWKS served at {issuer}/jwks.json, key {DEMO_KID})");
    println!("authz_http on http://{authz}, admin on http://{admin} (/metrics, /readyz, /keys)");
    println!();
    println!("TOKEN={token}");
    println!();
    println!("# allowed (200, with x-auth-subject and x-auth-scopes):");
    println!("curl -i -H 'Authorization: Bearer {token}' http://{authz}/orders");
    println!("# denied (401, no token):");
    println!("curl -i http://{authz}/orders");
    println!("# refused (400): a path tokengate and an app could read two ways:");
    println!("curl -i 'http://{authz}/public/..%2Forders'");
    println!();
    println!("The token is valid for one hour. Stop with Ctrl-C.");
    println!();
    println!("Try next:");
    println!(
        "  curl http://{admin}/keys      # the key inventory: the demo key, its state, its last use"
    );
    println!("  curl -s http://{admin}/metrics | grep '^tokengate_key_'   # per-key metrics");
    println!(
        "  tokengate verify --config your.json TOKEN   # judge a token offline; your own config: docs/configuration.md"
    );
    println!(
        "  docs/serving.md: behind Envoy, nginx or Traefik; docs/rotating-keys.md: rotate keys without a restart"
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    wait_for_signals(&app).await;
    listeners.stop().await;
    let _ = jwks_stop.send(true);
    let _ = jwks_task.await;
    drop(Arc::clone(&app));
    Ok(())
}
