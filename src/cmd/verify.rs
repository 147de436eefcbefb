//! `tokengate verify`: validates one token offline against the config and prints the
//! decision, the key that matched (kid or alias, and how: by kid or by fallback) and
//! the claims. An encrypted token (or, with `--cookie`, a session cookie) is decrypted
//! first, and the key that decrypted it is printed the same way (SPEC §10). Exit 0
//! allowed, 1 denied, 2 usage or config error.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Exit, load_config, one_shot_app};
use crate::app::EnvLookup;
use crate::authz::RequestView;
use crate::clock::{Clock, FixedClock};
use crate::decision::Decision;
use crate::metrics::Listener;

/// What to verify.
#[derive(Debug)]
pub struct Args {
    /// Config file.
    pub config: Option<PathBuf>,
    /// The token, or `-` / absent for standard input.
    pub token: Option<String>,
    /// Method of the request to authorize (route policy).
    pub method: String,
    /// Path of the request to authorize (route policy).
    pub path: String,
    /// Present the token as this cookie (a session cookie) rather than as a bearer token.
    pub cookie: Option<String>,
    /// Judge as if it were this Unix time.
    pub now: Option<i64>,
}

/// Runs the command.
pub async fn run(args: Args, env: EnvLookup) -> Exit {
    let config = match load_config(args.config, &env) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let token = match args.token.as_deref() {
        Some(t) if t != "-" => t.to_string(),
        _ => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().take(1 << 20).read_to_string(&mut s) {
                eprintln!("error: cannot read the token from standard input: {e}");
                return Exit::Usage;
            }
            s
        }
    };
    let token = token.trim();
    let clock: Option<Arc<dyn Clock>> = args
        .now
        .map(|t| Arc::new(FixedClock::new(t)) as Arc<dyn Clock>);
    let sessions: Vec<String> = config
        .sessions
        .iter()
        .map(|s| s.keys.name.to_string())
        .collect();
    let (app, problems) = one_shot_app(config, clock, env).await;
    for p in &problems {
        eprintln!("warning: {}: {}", p.field, p.error);
    }
    let headers = match &args.cookie {
        Some(name) => vec![("cookie".to_string(), format!("{name}={token}"))],
        None => vec![("authorization".to_string(), format!("Bearer {token}"))],
    };
    let view = RequestView {
        method: &args.method,
        target: &args.path,
        headers: headers.as_slice(),
        peer: Default::default(),
    };
    let verdict = app.authorizer().check(Listener::Cli, &view).await;
    match &verdict.decision {
        Decision::Allow(a) => println!("decision: allow ({})", a.reason.label()),
        Decision::Deny(d) => println!(
            "decision: deny ({}): {}",
            d.reason.label(),
            if d.reason.description().is_empty() {
                "no token"
            } else {
                d.reason.description()
            }
        ),
    }
    let session = verdict
        .issuer
        .as_deref()
        .is_some_and(|i| sessions.iter().any(|s| s == i));
    if let Some(issuer) = &verdict.issuer {
        println!("{}: {issuer}", if session { "session" } else { "issuer" });
    }
    if let (Some(key), Some(m)) = (&verdict.key, verdict.matched) {
        println!(
            "{}: {} (source {}, matched by {})",
            if session { "decrypted by" } else { "key" },
            key.id,
            key.source.label(),
            m.label()
        );
    }
    if let Some((key, m)) = &verdict.decrypted {
        println!(
            "decrypted by: {} (decryption key, source {}, matched by {})",
            key.id,
            key.source.label(),
            m.label()
        );
    }
    if let Some(fp) = &verdict.fingerprint {
        println!("token: sha256:{fp}…");
    }
    if let Decision::Allow(a) = &verdict.decision {
        if let Some(claims) = a.claims.as_ref().and_then(|c| c.to_map()) {
            let pretty = serde_json::to_string_pretty(&claims).unwrap_or_default();
            println!("claims: {pretty}");
        }
        for (h, v) in &a.forward_headers {
            println!("forward: {h}: {v}");
        }
        Exit::Ok
    } else {
        Exit::Failed
    }
}
