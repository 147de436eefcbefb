//! Encrypted access tokens and shared JWT sessions (SPEC §10): a compact JWE is opened
//! with one key holder's decryption keys — the `decryption` section's for a bearer
//! token, a session's own for its cookie — in PingGateway's order: the key its `kid`
//! names, else every key that fits, active first, within `fallback.max_keys`. Every way a
//! JWE fails to open is one reason (`bad_decryption`, `bad_session`), whatever failed.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Ask, Authorizer, Judged, Policy};
use crate::claims;
use crate::decision::DenyReason;
use crate::issuer::Issuer;
use crate::jwe::{self, Jwe, KeyAlg};
use crate::keys::{Key, MatchKind};
use crate::token::extract::Headers;
use crate::token::jws::ClaimSet;
use crate::verify::FallbackBudget;

/// An opened JWE: its plaintext, the key that opened it, how that key was found, and the
/// generation of the ring it was found in.
pub(super) struct Opened {
    plaintext: Vec<u8>,
    /// The decryption key.
    pub(super) key: Arc<Key>,
    /// By `kid` or by fallback.
    pub(super) matched: MatchKind,
    /// The ring generation a verdict on this token rests on.
    pub(super) generation: u64,
}

/// Why a JWE did not open.
enum Shut {
    /// The holder's keys never loaded.
    NoKeys,
    /// No key opened it (a wrong key, an altered token, a revoked key: all alike).
    Failed,
}

// === impl Opened ===

impl Opened {
    /// The plaintext as the one compact JWS it must be: text of three segments (the JWS
    /// parser checks the rest). A JWE inside the JWE (five segments) or any other content
    /// is `None`.
    pub(super) fn jws(&self) -> Option<&str> {
        let text = std::str::from_utf8(&self.plaintext).ok()?;
        (crate::token::segments(text).take(4).count() == 3).then_some(text)
    }
}

// === impl Authorizer ===

impl Authorizer {
    /// Opens an encrypted access token with the `decryption` keys. `bad_alg` for an `alg`
    /// or `enc` outside the allowlists (or no `decryption` section), `malformed` for a
    /// JWE that cannot be read, `bad_decryption` when no key opens it or its `cty` names
    /// something other than a JWT.
    pub(super) fn open_token(&self, policy: &Policy, token: &str) -> Result<Opened, DenyReason> {
        let Some(d) = &policy.decryption else {
            return jwe::parse(token, &[], &[]).and(Err(DenyReason::BadAlg));
        };
        let jwe = jwe::parse_memo(token, &d.algorithms, &d.methods, &self.jwe_headers)?;
        if jwe.cty.is_some() && !jwe.is_nested_jwt() {
            return Err(DenyReason::BadDecryption);
        }
        match open(
            &d.holder,
            &jwe,
            policy.config.fallback_max_keys,
            &self.budget,
        ) {
            Ok(opened) => {
                jwe.memoize(&self.jwe_headers);
                Ok(opened)
            }
            Err(Shut::NoKeys) => Err(DenyReason::KeysUnavailable),
            Err(Shut::Failed) => Err(DenyReason::BadDecryption),
        }
    }

    /// Judges the cookie of `sessions[i]` (SPEC §10): a `dir` JWE under one of the
    /// session's keys whose plaintext is a JSON object of claims (PingGateway's session
    /// attributes). Its principal is cached like a token's, under the cookie's hash.
    pub(super) fn judge_session<H: Headers + ?Sized>(
        &self,
        ask: &Ask<'_, H>,
        i: usize,
        token: &str,
        hash: Option<[u8; 32]>,
        now: i64,
    ) -> Judged {
        let policy = ask.policy;
        let index = policy.issuers.len() + i;
        let bad = |reason: DenyReason| Judged::deny(reason.into(), Some(index));
        let Some(session) = policy.sessions.get(i) else {
            return bad(DenyReason::BadSession);
        };
        if let Some(hash) = &hash
            && let Some(entry) = policy.cache.get(hash, |i| policy.generation(i, false), now)
        {
            let mut judged = match &entry.outcome {
                Ok(principal) => Judged::cached(self, ask, principal, hash, token, now),
                Err(reason) => Judged::deny((*reason).into(), entry.issuer),
            };
            judged.cached = true;
            return judged;
        }
        let Ok(jwe) = jwe::parse_memo(
            token,
            &[KeyAlg::Dir],
            &session.config.methods,
            &self.jwe_headers,
        ) else {
            return bad(DenyReason::BadSession);
        };
        let opened = match open(
            &session.holder,
            &jwe,
            policy.config.fallback_max_keys,
            &self.budget,
        ) {
            Ok(o) => {
                jwe.memoize(&self.jwe_headers);
                o
            }
            Err(Shut::NoKeys) => return bad(DenyReason::KeysUnavailable),
            Err(Shut::Failed) => return bad(DenyReason::BadSession),
        };
        let Some(claims) = ClaimSet::from_json(&opened.plaintext) else {
            return bad(DenyReason::BadSession);
        };
        let c = &session.config;
        let mut principal = match claims::session(
            &claims,
            index,
            opened.key.clone(),
            opened.matched,
            &c.subject_claim,
            c.max_age,
            c.leeway,
            now,
        ) {
            Ok(p) => p,
            Err(reason) => return bad(reason),
        };
        principal.set_forward(policy.forward_values(&claims, &c.subject_claim));
        let (subject, rule_claims) = policy.kept_claims(&claims, Some(&c.subject_claim));
        let payload: Option<Box<str>> = policy
            .claims_header
            .as_ref()
            .map(|_| URL_SAFE_NO_PAD.encode(&*opened.plaintext).into());
        if subject.is_some() || rule_claims.is_some() || payload.is_some() {
            principal.extra = Some(Box::new(claims::Extra {
                subject,
                rule_claims,
                binding: None,
                decrypted: None,
                payload,
            }));
        }
        opened.key.stats.record_use(opened.matched, now);
        opened.key.stats.record_issued(now);
        let judged = Judged::allow_or_scope(
            ask,
            &principal,
            principal
                .extra
                .as_ref()
                .and_then(|e| e.payload.as_deref())
                .unwrap_or_default(),
        );
        if let Some(hash) = hash {
            policy.cache.insert(hash, opened.generation, principal, now);
        }
        judged
    }
}

/// Opens `jwe` with `holder`'s keys: a `kid` it holds → those keys only; otherwise every
/// key that fits `alg` and `enc`, active first, at most `max`. Asymmetric attempts in
/// the fallback spend the per-process budget, like signature checks; symmetric ones
/// cost a MAC and are not limited. Each attempt is counted on its key, a failure only
/// when no key opened the JWE (so the old key's successes during a rotation do not
/// show as failures of the new one).
fn open(
    holder: &Issuer,
    jwe: &Jwe<'_>,
    max: usize,
    budget: &FallbackBudget,
) -> Result<Opened, Shut> {
    let ring = holder.keys.ring();
    if !ring.loaded {
        return Err(Shut::NoKeys);
    }
    let attempt = |key: &Arc<Key>, matched: MatchKind| {
        let d = key.decryption.as_ref()?;
        let plaintext = jwe.decrypt(d).ok()?;
        key.stats.record_verification(matched, true);
        Some(Opened {
            plaintext,
            key: key.clone(),
            matched,
            generation: ring.generation,
        })
    };
    if let Some(indices) = jwe.kid.as_deref().and_then(|kid| ring.by_kid(kid)) {
        let named = || {
            indices
                .iter()
                .filter_map(|i| ring.keys.get(*i))
                .filter(|k| k.decrypts(jwe.alg, jwe.enc))
        };
        if let Some(opened) = named().find_map(|k| attempt(k, MatchKind::Kid)) {
            return Ok(opened);
        }
        for k in named() {
            k.stats.record_verification(MatchKind::Kid, false);
        }
        return Err(Shut::Failed);
    }
    let symmetric = matches!(jwe.alg, KeyAlg::Dir | KeyAlg::A128Kw | KeyAlg::A256Kw);
    let mut tried = 0usize;
    for k in ring.decryption_fallback(jwe.alg, jwe.enc, max) {
        if !symmetric && !budget.take() {
            holder.metrics.budget_exhausted.inc();
            break;
        }
        tried += 1;
        if let Some(opened) = attempt(k, MatchKind::Fallback) {
            return Ok(opened);
        }
    }
    for k in ring.decryption_fallback(jwe.alg, jwe.enc, max).take(tried) {
        k.stats.record_verification(MatchKind::Fallback, false);
    }
    Err(Shut::Failed)
}
