//! Sender-constrained tokens (SPEC §11): a token whose `cnf` claim (RFC 7800) binds it
//! to a key is accepted only from a request that proves that key.
//!
//! - `cnf.jkt` (DPoP, RFC 9449): the request must use the `DPoP` scheme and carry a proof
//!   signed by the key of that thumbprint ([`dpop`]), whose `jti` was not seen before
//!   ([`replay`]), with a server nonce where the issuer wants one ([`nonce`]).
//! - `cnf["x5t#S256"]` (mutual TLS, RFC 8705): the request's client certificate must hash
//!   to it ([`mtls`]).
//! - Any other `cnf` (`jwk`, `kid`, `jku`, a malformed one): the token can never be
//!   proven and is refused.
//!
//! The binding is read once, when the token is verified, and kept with the cached
//! principal; the proof and the certificate are checked on every request. A `DPoP`-scheme
//! request with an unbound token is refused too (its proof proves nothing the token
//! asks for), and so is an unbound token of an issuer with `dpop: "required"`.
//!
//! Every check of a bound or `DPoP`-scheme request is counted in
//! `tokengate_proofs_total{issuer, kind, result}` (`kind` `dpop` or `mtls`).

pub mod dpop;
pub mod mtls;
pub mod nonce;
pub mod replay;

use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::config::{Config, IssuerConfig};
use crate::decision::{Denial, DenyReason};
use crate::metrics::{Listener, Metrics};
use crate::request::Peer;
use crate::token::extract::Headers;
use crate::token::jws::{ClaimSet, ClaimValue};
use nonce::NonceKey;
use replay::{ReplayCache, Seen};

/// What a token's `cnf` claim binds it to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    /// `cnf.jkt`: the RFC 7638 thumbprint of the DPoP key.
    pub jkt: Option<Box<str>>,
    /// `cnf["x5t#S256"]`: the base64url SHA-256 of the client certificate's DER.
    pub x5t: Option<Box<str>>,
    /// `cnf` holds something tokengate cannot check: the token is refused.
    pub unprovable: bool,
}

/// What one request offers to prove a binding with.
#[derive(Debug)]
pub struct Offered<'a, H: ?Sized> {
    /// The listener.
    pub listener: Listener,
    /// The judged method.
    pub method: &'a str,
    /// The judged path.
    pub path: &'a str,
    /// The request's headers.
    pub headers: &'a H,
    /// What the listener knows of the connection.
    pub peer: Peer<'a>,
    /// The token came under the `DPoP` scheme.
    pub dpop_scheme: bool,
    /// The token.
    pub token: &'a str,
    /// SHA-256 of the token, when the caller has it already.
    pub token_hash: Option<&'a [u8; 32]>,
}

/// The per-process state of the checks: the `jti` replay cache (kept across reloads).
#[derive(Debug, Default)]
pub struct Binder {
    replay: ReplayCache,
}

// === impl Binding ===

impl Binding {
    /// The binding of a token's claims; `None` for an unbound token.
    pub fn of(claims: &ClaimSet<'_>) -> Option<Binding> {
        let map = match claims.get("cnf")? {
            ClaimValue::Null => return None,
            ClaimValue::Other(Value::Object(map)) => map,
            _ => {
                return Some(Binding {
                    unprovable: true,
                    ..Binding::default()
                });
            }
        };
        let mut b = Binding::default();
        for (name, value) in map {
            match (name.as_str(), value) {
                ("jkt", Value::String(s)) => b.jkt = Some(s.as_str().into()),
                ("x5t#S256", Value::String(s)) => b.x5t = Some(s.as_str().into()),
                _ => b.unprovable = true,
            }
        }
        (b.jkt.is_some() || b.x5t.is_some() || b.unprovable).then_some(b)
    }

    /// Bytes owned on the heap.
    pub fn heap_size(&self) -> usize {
        self.jkt.as_ref().map_or(0, |s| s.len()) + self.x5t.as_ref().map_or(0, |s| s.len())
    }
}

// === impl Binder ===

impl Binder {
    /// Checks that the request proves what `binding` binds the token to (see the module
    /// docs). A denial carries the `DPoP` challenge where the request or the token is
    /// DPoP's; a certificate mismatch carries the token's own (`Bearer`) challenge.
    #[allow(clippy::too_many_arguments)]
    pub fn check<H: Headers + ?Sized>(
        &self,
        binding: Option<&Binding>,
        offered: &Offered<'_, H>,
        config: &Config,
        issuer: &IssuerConfig,
        nonces: &NonceKey,
        metrics: &Metrics,
        now: i64,
    ) -> Result<(), Denial> {
        let count = |kind: &str, result: &str| metrics.proof(&issuer.name, kind, result);
        let dpop = &issuer.dpop;
        let dpop_denial = |reason: DenyReason| {
            let nonce = (reason == DenyReason::UseDpopNonce).then(|| nonces.issue(now));
            Denial::new(reason).with_dpop(&dpop.algs, nonce)
        };
        if binding.is_some_and(|b| b.unprovable) {
            let kind = if offered.dpop_scheme { "dpop" } else { "mtls" };
            count(kind, DenyReason::BindingMismatch.label());
            return Err(dpop_denial(DenyReason::BindingMismatch));
        }
        if let Some(x5t) = binding.and_then(|b| b.x5t.as_deref()) {
            let digest = mtls::certificate_digest(
                &offered.peer,
                offered.headers,
                config.trusted_proxy_headers.x_forwarded_client_cert,
            );
            if digest.is_some_and(|d| URL_SAFE_NO_PAD.encode(d) == x5t) {
                count("mtls", "ok");
            } else {
                count("mtls", DenyReason::BindingMismatch.label());
                return Err(Denial::new(DenyReason::BindingMismatch));
            }
        }
        let jkt = binding.and_then(|b| b.jkt.as_deref());
        if !offered.dpop_scheme {
            // A DPoP-bound token as a bearer token, or a bearer token where DPoP is required.
            if jkt.is_some() || dpop.required {
                count("dpop", DenyReason::BindingMismatch.label());
                return Err(dpop_denial(DenyReason::BindingMismatch));
            }
            return Ok(());
        }
        let computed;
        let token_hash = match offered.token_hash {
            Some(h) => h,
            None => {
                computed = token_hash(offered.token);
                &computed
            }
        };
        let origin = dpop::origin(config, offered.listener, offered.headers, &offered.peer);
        let expected = dpop::Expected {
            method: offered.method,
            path: offered.path,
            origin: origin.as_ref(),
            token_hash,
        };
        let leeway = i64::try_from(issuer.leeway.as_secs()).unwrap_or(i64::MAX);
        let proven = match dpop::check(
            offered.headers,
            config.token.max_bytes,
            dpop,
            leeway,
            nonces,
            &expected,
            now,
        ) {
            Ok(p) => p,
            Err(reason) => {
                count("dpop", reason.label());
                return Err(dpop_denial(reason));
            }
        };
        if jkt != Some(proven.jkt.as_str()) {
            count("dpop", DenyReason::BindingMismatch.label());
            return Err(dpop_denial(DenyReason::BindingMismatch));
        }
        let max_age = i64::try_from(dpop.max_age.as_secs()).unwrap_or(i64::MAX);
        let expires = proven.iat.saturating_add(max_age).saturating_add(1);
        match self.replay.insert(
            proven.replay_key,
            expires,
            max_age.saturating_add(leeway),
            now,
        ) {
            Seen::New => {
                count("dpop", "ok");
                Ok(())
            }
            Seen::Replayed => {
                count("dpop", DenyReason::InvalidDpopProof.label());
                Err(dpop_denial(DenyReason::InvalidDpopProof))
            }
            Seen::Full => {
                warn_full();
                count("dpop", DenyReason::InvalidDpopProof.label());
                Err(dpop_denial(DenyReason::InvalidDpopProof))
            }
        }
    }
}

/// SHA-256 of a token (what `ath` hashes and the cache keys by).
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Logs, at most once a minute, that the replay cache is full.
fn warn_full() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last.saturating_add(60)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            max_entries = replay::MAX_ENTRIES,
            "the DPoP replay cache is full: new proofs are refused until entries expire"
        );
    }
}

/// The policy-wide pieces of the checks: the nonce key of this config.
pub fn nonce_key(config: &Config) -> Arc<NonceKey> {
    Arc::new(match &config.dpop_nonce_secret {
        Some(secret) => NonceKey::new(&secret.0),
        None => NonceKey::process(),
    })
}
