//! Signature verification: picks the key (by kid, or the fallback over compatible keys)
//! and checks the signature. [`VerifiedToken`] is built only here, and only after a
//! signature checked out, so code that holds one knows the token is genuine.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// The per-process budget of fallback signature checks (SPEC §9,
/// `fallback.max_verifications_per_second`): a token bucket refilled at `rate` checks per
/// second and holding at most one second's worth. Only fallback scans (unknown or
/// missing `kid`) draw on it, so a flood of made-up kids cannot spend the CPU that
/// tokens with a known `kid` need.
#[derive(Debug)]
pub struct FallbackBudget {
    rate: AtomicU32,
    /// (checks available, when last refilled)
    bucket: Mutex<(f64, Instant)>,
}

/// Why a fallback scan found no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoKey {
    /// `unknown_key` or `bad_signature`.
    pub reason: DenyReason,
    /// The scan stopped because the budget ran out (denied `unknown_key`).
    pub budget_exhausted: bool,
}

impl FallbackBudget {
    /// A full bucket of `rate` checks per second.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: AtomicU32::new(rate),
            bucket: Mutex::new((f64::from(rate), Instant::now())),
        }
    }

    /// A new rate (config reload); the checks available stay.
    pub fn set_rate(&self, rate: u32) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Takes one check from the bucket now; false when it is empty.
    pub fn take(&self) -> bool {
        self.take_at(Instant::now())
    }

    /// [`FallbackBudget::take`] at `now` (tests drive the clock).
    pub fn take_at(&self, now: Instant) -> bool {
        let rate = f64::from(self.rate.load(Ordering::Relaxed));
        let mut bucket = crate::keys::lock(&self.bucket);
        let (available, last) = &mut *bucket;
        if now > *last {
            *available = (*available + now.duration_since(*last).as_secs_f64() * rate).min(rate);
            *last = now;
        }
        if *available >= 1.0 {
            *available -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Tries compatible, non-revoked keys, active first, at most `max`, each signature check
/// taken from `budget`: none compatible → `unknown_key`; none verifies →
/// `bad_signature`; the budget runs out → `unknown_key`, flagged.
pub fn with_fallback<'j, 't>(
    jws: &'j Jws<'t>,
    ring: &KeyRing,
    max: usize,
    budget: &FallbackBudget,
) -> Result<VerifiedToken<'j, 't>, NoKey> {
    let mut tried = 0usize;
    let mut exhausted = false;
    for key in ring.fallback(jws.alg, max) {
        if !budget.take() {
            exhausted = true;
            break;
        }
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
    // No key verified: count the failure against every key that was tried.
    for key in ring.fallback(jws.alg, max).take(tried) {
        key.stats.record_verification(MatchKind::Fallback, false);
    }
    Err(match (exhausted, tried) {
        (true, _) => NoKey {
            reason: DenyReason::UnknownKey,
            budget_exhausted: true,
        },
        (false, 0) => NoKey {
            reason: DenyReason::UnknownKey,
            budget_exhausted: false,
        },
        (false, _) => NoKey {
            reason: DenyReason::BadSignature,
            budget_exhausted: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_budget_holds_one_second_and_refills_at_its_rate() {
        let budget = FallbackBudget::new(4);
        let t0 = Instant::now() + Duration::from_secs(1);
        // Full at start (one second's worth), never more however long it rests.
        assert_eq!((0..6).filter(|_| budget.take_at(t0)).count(), 4);
        assert!(!budget.take_at(t0));
        // A quarter of a second later: one more.
        let t1 = t0 + Duration::from_millis(250);
        assert!(budget.take_at(t1));
        assert!(!budget.take_at(t1));
        // A long rest refills to the cap only.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| budget.take_at(t2)).count(), 4);
        // A lower rate applies from now on; time going backwards takes nothing.
        budget.set_rate(1);
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!((0..5).filter(|_| budget.take_at(t3)).count(), 1);
        assert!(!budget.take_at(t2));
    }
}
