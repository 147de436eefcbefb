//! Claim checks on a verified token, in SPEC §4 order: required claims, `exp`, `nbf`,
//! `iat` (with leeway), `max_lifetime`, `iss`, `aud`, `typ`, certificate validity; then
//! the scopes. [`Principal`] is built only here, from a [`VerifiedToken`].

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{CertificateValidity, IssuerConfig};
use crate::decision::DenyReason;
use crate::keys::{Key, MatchKind};
use crate::verify::VerifiedToken;

/// Latest NumericDate accepted (9999-12-31T23:59:59Z); anything later is not a date.
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// Who a valid token speaks for, and what it allows: what the verified-token cache
/// keeps, so it is compact (the claims themselves stay in the token).
#[derive(Debug)]
pub struct Principal {
    /// Index of the issuer in the config.
    pub issuer: usize,
    /// The key that verified the token.
    pub key: Arc<Key>,
    /// How the key was found.
    pub matched: MatchKind,
    /// `exp`, if present.
    pub exp: Option<i64>,
    /// Granted scopes (from `scope` or `scp`), space-separated.
    pub scopes: Box<str>,
    /// Forward-header values, aligned with the policy's configured claim headers.
    pub forward: Box<[Option<Box<str>>]>,
}

// === impl Principal ===

impl Principal {
    /// Bytes this principal owns on the heap beyond its own size (the key is shared with
    /// the ring and not counted): what the verified-token cache weighs it by.
    pub fn heap_size(&self) -> usize {
        self.scopes.len()
            + self
                .forward
                .iter()
                .map(|v| {
                    std::mem::size_of::<Option<Box<str>>>() + v.as_ref().map_or(0, |s| s.len())
                })
                .sum::<usize>()
    }
}

/// A principal and the claims it was checked on.
#[derive(Debug)]
pub struct Checked {
    /// The principal (`forward` still empty: the policy fills it).
    pub principal: Principal,
    /// The verified claims.
    pub claims: Map<String, Value>,
}

/// Checks the claims of `token` for `issuer` at time `now`.
pub fn check(
    token: VerifiedToken<'_>,
    issuer_index: usize,
    issuer: &IssuerConfig,
    now: i64,
) -> Result<Checked, DenyReason> {
    let (jws, key, matched) = token.into_parts();
    let claims = jws.claims;
    let leeway = i64::try_from(issuer.leeway.as_secs()).unwrap_or(i64::MAX);

    let exp = numeric_date(&claims, "exp")?;
    let nbf = numeric_date(&claims, "nbf")?;
    let iat = numeric_date(&claims, "iat")?;
    for name in &issuer.required_claims {
        if !claims.contains_key(name.as_str()) {
            return Err(if name == "exp" {
                // A token that never expires is treated as expired where expiry is required.
                DenyReason::Expired
            } else {
                DenyReason::Malformed
            });
        }
    }
    if let Some(exp) = exp
        && now >= exp.saturating_add(leeway)
    {
        return Err(DenyReason::Expired);
    }
    if let Some(nbf) = nbf
        && now.saturating_add(leeway) < nbf
    {
        return Err(DenyReason::NotYetValid);
    }
    if let Some(iat) = iat
        && now.saturating_add(leeway) < iat
    {
        return Err(DenyReason::NotYetValid);
    }
    if let Some(max) = issuer.max_lifetime {
        let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        let start = iat.or(nbf);
        match (start, exp) {
            (Some(start), Some(exp)) if exp.saturating_sub(start) <= max => {}
            _ => return Err(DenyReason::LifetimeExceeded),
        }
    }
    if let Some(want) = &issuer.issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == want => {}
            _ => return Err(DenyReason::BadIssuer),
        }
    }
    if !issuer.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => issuer.audiences.iter().any(|w| w == a),
            Some(Value::Array(list)) => list.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| issuer.audiences.iter().any(|w| w == a))
            }),
            _ => false,
        };
        if !ok {
            return Err(DenyReason::BadAudience);
        }
    }
    if !issuer.require_typ.is_empty() {
        let ok = jws
            .typ
            .as_deref()
            .is_some_and(|t| issuer.require_typ.iter().any(|w| w.eq_ignore_ascii_case(t)));
        if !ok {
            return Err(DenyReason::BadType);
        }
    }
    if let Some(v) = key.validity {
        let at = match issuer.certificate_validity {
            CertificateValidity::Off => None,
            CertificateValidity::Now => Some(now),
            CertificateValidity::Iat => Some(iat.unwrap_or(now)),
        };
        if let Some(t) = at
            && (t < v.not_before || t > v.not_after)
        {
            return Err(DenyReason::KeyOutOfValidity);
        }
    }
    let scopes = scopes(&claims)?;
    Ok(Checked {
        principal: Principal {
            issuer: issuer_index,
            key,
            matched,
            exp,
            scopes,
            forward: Box::default(),
        },
        claims,
    })
}

/// A NumericDate claim (RFC 7519 §2): a JSON number of seconds, possibly fractional,
/// within 0..=9999-12-31. Anything else (a string, a huge or negative number) is
/// `malformed`.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, DenyReason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let t = if let Some(i) = n.as_i64() {
                i
            } else if let Some(f) = n.as_f64() {
                if !f.is_finite() || f < 0.0 || f > MAX_NUMERIC_DATE as f64 {
                    return Err(DenyReason::Malformed);
                }
                f.floor() as i64
            } else {
                return Err(DenyReason::Malformed);
            };
            if (0..=MAX_NUMERIC_DATE).contains(&t) {
                Ok(Some(t))
            } else {
                Err(DenyReason::Malformed)
            }
        }
        Some(_) => Err(DenyReason::Malformed),
    }
}

/// Scopes from `scope` (space-separated string, RFC 8693) or `scp` (array, or a
/// string), joined by single spaces.
fn scopes(claims: &Map<String, Value>) -> Result<Box<str>, DenyReason> {
    let mut out = String::new();
    let mut push = |s: &str| {
        for word in s.split_ascii_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    };
    for name in ["scope", "scp"] {
        match claims.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => push(s),
            Some(Value::Array(list)) => {
                for v in list {
                    match v {
                        Value::String(s) => push(s),
                        _ => return Err(DenyReason::Malformed),
                    }
                }
            }
            Some(_) => return Err(DenyReason::Malformed),
        }
    }
    Ok(out.into_boxed_str())
}
