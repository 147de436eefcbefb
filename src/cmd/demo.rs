//! `tokengate demo`: the embedded default. Generates an ephemeral ES256 key pair, serves
//! its JWKS itself on loopback (the demo's "authorization server"), starts `authz_http`
//! and `admin` on loopback with a config that fetches that JWKS, and prints a valid token
//! with ready-to-paste `curl` lines (allowed, denied, refused). `POST /demo/rotate` on
//! the JWKS server rotates the signing key, so a newcomer sees a rotation in one minute:
//! the new kid found by one refetch, `/rotation` and `tokengate rotation plan` showing
//! when the old key is safe to remove. The only files written are the demo's config and
//! a candidate config (the JWK set without the old key) in a temporary directory, for
//! `rotation plan`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::Exit;
use super::serve::{start, wait_for_signals};
use crate::app::EnvLookup;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;

/// The demo's first key id (rotations add `demo-es256-2`, ...).
pub const DEMO_KID: &str = "demo-es256-1";
/// The demo's audience.
pub const DEMO_AUDIENCE: &str = "demo-api";

/// The demo authorization server's keys: every published one (at most the current and
/// the previous), the last one signing.
struct Signer {
    issuer: String,
    keys: Vec<(String, Vec<u8>, Value)>,
    rotations: u32,
    /// Where the candidate config's JWK set (the current key only) is written.
    candidate_jwks: PathBuf,
}

impl Signer {
    /// A new ES256 key pair: (PKCS#8, public JWK).
    fn generate(kid: &str) -> Result<(Vec<u8>, Value), String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a key pair".to_string())?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| "cannot read the generated key pair".to_string())?;
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err("unexpected public key encoding".into());
        }
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Ok((pkcs8.as_ref().to_vec(), jwk))
    }

    /// The published JWK set.
    fn jwks(&self) -> String {
        let keys: Vec<&Value> = self.keys.iter().map(|(_, _, jwk)| jwk).collect();
        json!({ "keys": keys }).to_string()
    }

    /// The signing key's id.
    fn kid(&self) -> &str {
        self.keys.last().map_or(DEMO_KID, |(kid, _, _)| kid)
    }

    /// A fresh token signed by the current key (valid for an hour).
    fn token(&self) -> Result<String, String> {
        let Some((kid, pkcs8, _)) = self.keys.last() else {
            return Err("no key".into());
        };
        let now = SystemClock.now();
        let claims = json!({
            "iss": self.issuer, "aud": DEMO_AUDIENCE, "sub": "demo-user",
            "scope": "orders:read orders:write", "iat": now, "exp": now + 3600,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.clone());
        header.typ = Some("at+jwt".into());
        let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8);
        jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| format!("cannot sign the demo token: {e}"))
    }

    /// Publishes a new signing key beside the current one (the older ones leave) and
    /// writes the candidate JWK set: the new key alone.
    fn rotate(&mut self) -> Result<(), String> {
        self.rotations += 1;
        let kid = format!("demo-es256-{}", self.rotations + 1);
        let (pkcs8, jwk) = Self::generate(&kid)?;
        self.keys.push((kid, pkcs8, jwk.clone()));
        let keep = self.keys.len().saturating_sub(2);
        self.keys.drain(..keep);
        write(&self.candidate_jwks, &json!({ "keys": [jwk] }).to_string())
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn lock(signer: &Mutex<Signer>) -> std::sync::MutexGuard<'_, Signer> {
    signer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `POST /demo/rotate`: a new signing key, and what to try with it.
fn rotate_answer(
    signer: &Mutex<Signer>,
    authz: SocketAddr,
    admin: SocketAddr,
) -> (http::StatusCode, String) {
    let mut s = lock(signer);
    if let Err(e) = s.rotate() {
        return (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("error: {e}\n"),
        );
    }
    let token = match s.token() {
        Ok(t) => t,
        Err(e) => {
            return (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("error: {e}\n"),
            );
        }
    };
    let old = s.keys.first().map_or("-", |(kid, _, _)| kid.as_str());
    let text = format!(
        "rotated: {new} signs from now on; {old} stays published (tokens it signed still pass)\n\
         TOKEN={token}\n\
         # allowed: tokengate has never seen {new}; one JWKS refetch finds it\n\
         curl -i -H 'Authorization: Bearer {token}' http://{authz}/orders\n\
         # watch {old} fall out of use, then the plan call it retire-safe:\n\
         curl -s http://{admin}/rotation\n",
        new = s.kid(),
    );
    (http::StatusCode::OK, text)
}

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
    let dir = std::env::temp_dir().join(format!("tokengate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (pkcs8, jwk) = Signer::generate(DEMO_KID)?;

    // The demo's own "authorization server": a JWKS on an ephemeral loopback port,
    // served like every other listener, that rotates its key on request.
    let jwks_listener = crate::server::tcp_listener(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("cannot start the demo JWKS server: {e}"))?;
    let jwks_addr = jwks_listener
        .local_addr()
        .map_err(|e| format!("cannot start the demo JWKS server: {e}"))?;
    let issuer = format!("http://{jwks_addr}/demo");
    let signer = Arc::new(Mutex::new(Signer {
        issuer: issuer.clone(),
        keys: vec![(DEMO_KID.to_string(), pkcs8, jwk.clone())],
        rotations: 0,
        candidate_jwks: dir.join("candidate-jwks.json"),
    }));
    write(
        &dir.join("candidate-jwks.json"),
        &json!({ "keys": [jwk] }).to_string(),
    )?;
    // Filled in once the listeners are bound (their ports may be chosen by the kernel).
    let bound: Arc<Mutex<(SocketAddr, SocketAddr)>> = Arc::new(Mutex::new((authz_http, admin)));
    let router = {
        let (for_get, for_post, bound) = (signer.clone(), signer.clone(), bound.clone());
        axum::Router::new()
            .route(
                "/demo/jwks.json",
                axum::routing::get(move || {
                    let jwks = lock(&for_get).jwks();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], jwks) }
                }),
            )
            .route(
                "/demo/rotate",
                axum::routing::post(move || {
                    let (authz, admin) = *bound
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let answer = rotate_answer(&for_post, authz, admin);
                    async move { answer }
                }),
            )
    };
    let (jwks_stop, stopped) = tokio::sync::watch::channel(false);
    let jwks_task = tokio::spawn(crate::server::serve_http1(
        "demo_jwks",
        jwks_listener,
        move |_| hyper_util::service::TowerToHyperService::new(router.clone()),
        stopped,
    ));

    let source = json!({ "jwks_uri": format!("{issuer}/jwks.json"), "refresh": "5m" });
    let config_of = |source: &Value| {
        json!({
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
                "key_sources": [source],
            }],
            "routes": [
                { "path_prefix": "/public", "allow_anonymous": true },
                { "path_prefix": "/orders", "methods": ["POST", "DELETE"], "scopes_all": ["orders:write"] },
            ],
            "forward": { "claim_headers": { "x-auth-subject": "sub", "x-auth-scopes": "scope" } },
        })
        .to_string()
    };
    // The live config, and the candidate `rotation plan` compares it with: the same
    // issuer with only the newest key (rewritten at each rotation).
    let live = dir.join("live.json");
    let candidate = dir.join("candidate.json");
    write(&live, &config_of(&source))?;
    let candidate_source = json!({ "jwks_file": dir.join("candidate-jwks.json") });
    write(&candidate, &config_of(&candidate_source))?;
    let config =
        Config::load(&live).map_err(|e| format!("the embedded demo config is invalid: {e}"))?;

    let (app, listeners) = start(config, env)?;
    // Wait (briefly) for the first JWKS fetch so the printed token works at once.
    for _ in 0..100 {
        if app.ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let token = lock(&signer).token()?;
    let authz = listeners.addr("authz_http").unwrap_or(authz_http);
    let admin = listeners.addr("admin").unwrap_or(admin);
    *bound
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = (authz, admin);
    let exe = std::env::current_exe()
        .map_or_else(|_| "tokengate".to_string(), |p| p.display().to_string());
    println!("tokengate demo: issuer {issuer} (JWKS served at {issuer}/jwks.json, key {DEMO_KID})");
    println!(
        "authz_http on http://{authz}, admin on http://{admin} (/metrics, /readyz, /keys, /rotation)"
    );
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
        "  curl -X POST http://{jwks_addr}/demo/rotate   # rotate the signing key: prints a token of the new one"
    );
    println!(
        "  curl -s http://{admin}/rotation   # which key signs, which are still in use, since when the others are unused"
    );
    println!(
        "  {exe} rotation plan --config {} --candidate {} --admin http://{admin} --window 1m   # may the old key go?",
        live.display(),
        candidate.display()
    );
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
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
