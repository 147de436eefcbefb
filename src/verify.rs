//! Signature verification: picks the key (by kid, or the fallback over compatible keys)
//! and checks the signature. [`VerifiedToken`] is built only here, and only after a
//! signature checked out, so code that holds one knows the token is genuine.

use std::sync::Arc;

use crate::decision::DenyReason;
use crate::keys::{Key, KeyRing, MatchKind};
use crate::token::jws::Jws;

/// A token whose signature was verified by `key`.
#[derive(Debug)]
pub struct VerifiedToken<'j, 't> {
    jws: &'j Jws<'t>,
    key: Arc<Key>,
    matched: MatchKind,
}

// === impl VerifiedToken ===

impl<'j, 't> VerifiedToken<'j, 't> {
    /// The token.
    pub fn jws(&self) -> &'j Jws<'t> {
        self.jws
    }

    /// The key that verified it.
    pub fn key(&self) -> &Arc<Key> {
        &self.key
    }

    /// How the key was found.
    pub fn matched(&self) -> MatchKind {
        self.matched
    }

    /// Takes the token apart.
    pub fn into_parts(self) -> (&'j Jws<'t>, Arc<Key>, MatchKind) {
        (self.jws, self.key, self.matched)
    }
}

/// Verifies with the keys named by the token's kid (`indices` from [`KeyRing::by_kid`]):
/// every one revoked → `revoked_key`; none compatible with `alg` → `bad_alg`; none
/// verifies → `bad_signature`.
pub fn with_kid<'j, 't>(
    jws: &'j Jws<'t>,
    ring: &KeyRing,
    indices: &[usize],
) -> Result<VerifiedToken<'j, 't>, DenyReason> {
    let named = || indices.iter().filter_map(|i| ring.keys.get(*i));
    if named().all(|k| k.revoked) {
        return Err(DenyReason::RevokedKey);
    }
    let mut tried = false;
    for key in named().filter(|k| k.compatible(jws.alg)) {
        tried = true;
        let ok = key
            .material
            .verify(jws.alg, jws.signing_input.as_bytes(), &jws.signature);
        key.stats.record_verification(MatchKind::Kid, ok);
        if ok {
            return Ok(VerifiedToken {
                key: key.clone(),
                jws,
                matched: MatchKind::Kid,
            });
        }
    }
    Err(if tried {
        DenyReason::BadSignature
    } else {
        DenyReason::BadAlg
    })
}

/// Tries compatible, non-revoked keys, active first, at most `max`: none compatible →
/// `unknown_key`; none verifies → `bad_signature`.
pub fn with_fallback<'j, 't>(
    jws: &'j Jws<'t>,
    ring: &KeyRing,
    max: usize,
) -> Result<VerifiedToken<'j, 't>, DenyReason> {
    let mut tried = 0usize;
    for key in ring.fallback(jws.alg, max) {
        tried += 1;
        if key
            .material
            .verify(jws.alg, jws.signing_input.as_bytes(), &jws.signature)
        {
            key.stats.record_verification(MatchKind::Fallback, true);
            return Ok(VerifiedToken {
                key: key.clone(),
                jws,
                matched: MatchKind::Fallback,
            });
        }
    }
    if tried == 0 {
        return Err(DenyReason::UnknownKey);
    }
    // No key verified: count the failure against every key that was tried.
    for key in ring.fallback(jws.alg, max) {
        key.stats.record_verification(MatchKind::Fallback, false);
    }
    Err(DenyReason::BadSignature)
}
