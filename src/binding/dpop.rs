//! DPoP proofs (RFC 9449 §4.3), checked on every request of a `DPoP`-scheme token,
//! cached token or not. Every check of the proof itself is `invalid_dpop_proof`; a
//! missing, unknown or stale nonce (where the issuer wants one) is `use_dpop_nonce`.
//!
//! 1. Exactly one `DPoP` header, one word of visible ASCII no longer than
//!    `token.max_bytes`.
//! 2. A compact JWS ([`crate::token::jws::parse`]: strict base64url, JSON header and
//!    claims, no `crit`) whose `alg` is one of the issuer's `dpop_algorithms` (never
//!    `none` or an HMAC), `typ` `dpop+jwt`, and `jwk` a public key: no private member
//!    (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`), members in strict unpadded base64url,
//!    a key that fits `alg`.
//! 3. The signature, by that key.
//! 4. `htm` equals the judged method; `htu` equals the judged URI: scheme, host and port
//!    of the request ([`Origin`]) and the judged path, both read by the same URL parser
//!    (WHATWG, as `url` implements it: case, default ports, dot segments), the `htu`'s
//!    path then resolved as the request's was (escaped unreserved characters decoded);
//!    its query and fragment are ignored, userinfo refused.
//! 5. `iat` at most `dpop_max_age` old and at most the issuer's leeway ahead; `jti` a
//!    non-empty string of at most [`MAX_JTI_BYTES`]; `ath` the base64url SHA-256 of the
//!    access token.
//! 6. The nonce, where the issuer wants one ([`super::nonce`]).
//!
//! What comes back is the key's RFC 7638 thumbprint (compared with the token's
//! `cnf.jkt` by the caller) and the proof's replay key; the `jti` is recorded only once
//! the proof is known to be for this token.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use url::Url;

use super::nonce::NonceKey;
use super::replay::ReplayKey;
use crate::claims::numeric_date;
use crate::config::{Config, DpopConfig, ForwardAuth};
use crate::decision::DenyReason;
use crate::keys::jwks::parse_jwk;
use crate::metrics::Listener;
use crate::request::{self, Peer};
use crate::token::extract::Headers;
use crate::token::jws::{self, ClaimValue};

/// The header that carries the proof.
pub const DPOP_HEADER: &str = "dpop";

/// Longest accepted `jti`.
pub const MAX_JTI_BYTES: usize = 256;

/// JWK members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// JWK members that carry base64url key material.
const KEY_MEMBERS: [&str; 4] = ["n", "e", "x", "y"];

/// What the proof must match: the judged request and the token.
#[derive(Debug)]
pub struct Expected<'a> {
    /// The judged method.
    pub method: &'a str,
    /// The judged path (resolved).
    pub path: &'a str,
    /// Where the client sent the request, `None` when it cannot be told.
    pub origin: Option<&'a Url>,
    /// SHA-256 of the access token.
    pub token_hash: &'a [u8; 32],
}

/// A proof that passed every check of its own.
#[derive(Debug)]
pub struct Proven {
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    /// The replay key of (`jkt`, `jti`).
    pub replay_key: ReplayKey,
    /// The proof's `iat`.
    pub iat: i64,
}

/// Checks the request's proof.
pub fn check<H: Headers + ?Sized>(
    headers: &H,
    max_bytes: usize,
    cfg: &DpopConfig,
    leeway: i64,
    nonces: &NonceKey,
    want: &Expected<'_>,
    now: i64,
) -> Result<Proven, DenyReason> {
    const INVALID: DenyReason = DenyReason::InvalidDpopProof;
    let mut values: [Option<&[u8]>; 2] = [None; 2];
    let mut count = 0;
    headers.for_each(DPOP_HEADER, &mut |v| {
        if count < 2 {
            values[count] = Some(v);
        }
        count += 1;
    });
    let [Some(raw), None] = values else {
        return Err(INVALID);
    };
    if raw.is_empty() || raw.len() > max_bytes || !raw.iter().all(u8::is_ascii_graphic) {
        return Err(INVALID);
    }
    let proof = std::str::from_utf8(raw).map_err(|_| INVALID)?;
    let jws = jws::parse(proof, cfg.algorithms).map_err(|_| INVALID)?;
    if !jws
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(INVALID);
    }
    let jwk = jws.jwk.as_ref().and_then(Value::as_object).ok_or(INVALID)?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(INVALID);
    }
    // Unpadded: `parse_jwk` decodes the members as canonical base64url, padding or not.
    let strict = |m: &&str| match jwk.get(*m) {
        None => true,
        Some(Value::String(s)) => !s.contains('='),
        Some(_) => false,
    };
    if !KEY_MEMBERS.iter().all(strict) {
        return Err(INVALID);
    }
    let key = parse_jwk(jws.jwk.as_ref().ok_or(INVALID)?, false).map_err(|_| INVALID)?;
    if !key
        .material
        .verify(jws.alg, jws.signing_input.as_bytes(), &jws.signature)
    {
        return Err(INVALID);
    }
    let claims = jws.claims().map_err(|_| INVALID)?;
    let text = |name: &str| match claims.get(name) {
        Some(ClaimValue::Str(s)) => Some(s.clone()),
        _ => None,
    };
    if text("htm").as_deref() != Some(want.method) {
        return Err(INVALID);
    }
    let htu_ok = match (text("htu"), want.origin) {
        (Some(htu), Some(origin)) => htu_matches(&htu, origin, want.path),
        _ => false,
    };
    if !htu_ok {
        return Err(INVALID);
    }
    let iat = numeric_date(&claims, "iat")
        .map_err(|_| INVALID)?
        .ok_or(INVALID)?;
    let max_age = i64::try_from(cfg.max_age.as_secs()).unwrap_or(i64::MAX);
    if iat < now.saturating_sub(max_age) || iat > now.saturating_add(leeway) {
        return Err(INVALID);
    }
    let jti = text("jti").ok_or(INVALID)?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(INVALID);
    }
    let ath = URL_SAFE_NO_PAD.encode(want.token_hash);
    if text("ath").as_deref() != Some(ath.as_str()) {
        return Err(INVALID);
    }
    if cfg.nonce {
        let fresh = text("nonce").is_some_and(|n| nonces.accepts(&n, now, max_age, leeway));
        if !fresh {
            return Err(DenyReason::UseDpopNonce);
        }
    }
    let jkt = key.material.thumbprint().to_string();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(jkt.as_bytes());
    ctx.update(b".");
    ctx.update(jti.as_bytes());
    let mut replay_key = [0u8; 16];
    replay_key.copy_from_slice(&ctx.finish().as_ref()[..16]);
    Ok(Proven {
        jkt,
        replay_key,
        iat,
    })
}

/// The scheme, host and port the client sent the request to, as a URL with an empty
/// path (`None` when they cannot be told for sure):
///
/// - scheme: `X-Forwarded-Proto` when `trusted_proxy_headers.x_forwarded_proto` is on
///   and the header is there (exactly once, `http` or `https`); else the ext_authz
///   attribute; else `http` (tokengate's own listeners do not terminate TLS);
/// - authority: the ext_authz attribute; else, on `authz_http` with the Traefik family,
///   `X-Forwarded-Host`; else `Host` (exactly once).
pub fn origin<H: Headers + ?Sized>(
    config: &Config,
    listener: Listener,
    headers: &H,
    peer: &Peer<'_>,
) -> Option<Url> {
    let forwarded = if config.trusted_proxy_headers.x_forwarded_proto {
        one_header(headers, "x-forwarded-proto")?
    } else {
        None
    };
    let scheme = match forwarded.or(peer.scheme) {
        None => "http",
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(_) => return None,
    };
    let authority = match peer.authority {
        Some(a) => a,
        None if listener == Listener::AuthzHttp && config.forward_auth == ForwardAuth::Traefik => {
            one_header(headers, "x-forwarded-host")??
        }
        None => one_header(headers, "host")??,
    };
    if authority.is_empty() || authority.bytes().any(|b| b"/?#@\\".contains(&b)) {
        return None;
    }
    let url = Url::parse(&format!("{scheme}://{authority}/")).ok()?;
    url.host().is_some().then_some(url)
}

/// The value of header `name`: `Ok(None)` when absent, `None` when repeated or not
/// visible ASCII.
fn one_header<'h, H: Headers + ?Sized>(headers: &'h H, name: &str) -> Option<Option<&'h str>> {
    let mut values: [Option<&'h [u8]>; 2] = [None; 2];
    let mut count = 0;
    headers.for_each(name, &mut |v| {
        if count < 2 {
            values[count] = Some(v);
        }
        count += 1;
    });
    match values {
        [None, _] => Some(None),
        [Some(v), None] => {
            let v = std::str::from_utf8(v).ok()?.trim();
            (v.bytes().all(|b| b.is_ascii_graphic())).then_some(Some(v))
        }
        _ => None,
    }
}

/// True when `htu` names `origin` and `path` (see the module docs).
fn htu_matches(htu: &str, origin: &Url, path: &str) -> bool {
    let Ok(url) = Url::parse(htu) else {
        return false;
    };
    if url.cannot_be_a_base() || !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    url.scheme() == origin.scheme()
        && url.host() == origin.host()
        && url.port_or_known_default() == origin.port_or_known_default()
        && request::resolve(url.path()).is_ok_and(|t| t.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("a test URL")
    }

    #[test]
    fn htu_ignores_query_fragment_case_and_default_ports_only() {
        let origin = url("https://api.example/");
        for htu in [
            "https://api.example/orders/1",
            "https://API.example/orders/1",
            "HTTPS://api.example:443/orders/1",
            "https://api.example/orders/1?x=1",
            "https://api.example/orders/1#frag",
            "https://api.example/orders/./1",
            "https://api.example/%6Frders/1",
        ] {
            assert!(htu_matches(htu, &origin, "/orders/1"), "{htu}");
        }
        for htu in [
            "http://api.example/orders/1",
            "https://api.example:8443/orders/1",
            "https://other.example/orders/1",
            "https://api.example/orders/2",
            "https://api.example/orders/1/",
            "https://user@api.example/orders/1",
            "https://api.example/orders%2F1",
            "/orders/1",
            "not a url",
        ] {
            assert!(!htu_matches(htu, &origin, "/orders/1"), "{htu}");
        }
    }
}
