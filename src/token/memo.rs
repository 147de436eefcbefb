//! What the header of a token read cleanly, kept by the header's exact base64url text.
//!
//! An issuer signs every token with a handful of headers (one per key: `{"alg":"RS256",
//! "typ":"at+jwt","kid":"rsa-1"}`), and a gateway seals its sessions under one. Reading
//! such a header again — decoding it, parsing its JSON, checking its members — is work
//! whose answer depends on those bytes alone, so [`HeaderMemo`] keeps the answer by the
//! segment's text and the parsers ([`super::jws::parse_memo`], [`crate::jwe::parse_memo`])
//! skip it on a match. What it returns is exactly what reading the segment would: the
//! parsers store only headers that passed every check that depends on the header alone,
//! and the caller's allowlists are applied to each token as before.
//!
//! Bounded and attacker-proof: a fixed number of slots, a slot picked by a keyed hash of
//! the segment (SipHash with this process's random keys), a new header replacing what
//! its slot held. Only a token that verified (or a JWE that opened) stores its header,
//! so made-up headers never displace an issuer's; they are read in full, as without
//! the memo.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// How many headers are kept: a deployment's issuers and their keys during a rotation
/// (each a header or two) fit many times over.
const SLOTS: usize = 64;

/// Headers that read cleanly, by their exact segment text (see the module docs).
pub struct HeaderMemo<T> {
    slots: Box<[ArcSwapOption<Entry<T>>]>,
    hasher: RandomState,
}

struct Entry<T> {
    segment: Box<str>,
    header: T,
}

impl<T> HeaderMemo<T> {
    /// An empty memo.
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn slot(&self, segment: &str) -> &ArcSwapOption<Entry<T>> {
        let i = self.hasher.hash_one(segment) as usize % self.slots.len();
        &self.slots[i]
    }

    /// What the header `segment` read as, through `f`, when it is kept.
    pub fn get<R>(&self, segment: &str, f: impl FnOnce(&T) -> R) -> Option<R> {
        let guard = self.slot(segment).load();
        let entry = guard.as_ref()?;
        (*entry.segment == *segment).then(|| f(&entry.header))
    }

    /// Keeps `header` as what `segment` reads as, in place of what its slot held.
    pub fn insert(&self, segment: &str, header: T) {
        self.slot(segment).store(Some(Arc::new(Entry {
            segment: segment.into(),
            header,
        })));
    }
}

impl<T> Default for HeaderMemo<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for HeaderMemo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderMemo").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_by_exact_segment_and_replaces_within_its_bound() {
        let memo = HeaderMemo::new();
        assert_eq!(memo.get("eyJh", |h: &u32| *h), None);
        memo.insert("eyJh", 1u32);
        assert_eq!(memo.get("eyJh", |h| *h), Some(1));
        // A different segment (even a prefix or an extension) is not a match.
        assert_eq!(memo.get("eyJ", |h| *h), None);
        assert_eq!(memo.get("eyJhb", |h| *h), None);
        memo.insert("eyJh", 2);
        assert_eq!(memo.get("eyJh", |h| *h), Some(2));
        // Many more headers than slots: never more than SLOTS kept, the newest found.
        for n in 0..10 * SLOTS as u32 {
            memo.insert(&format!("h{n}"), n);
            assert_eq!(memo.get(&format!("h{n}"), |h| *h), Some(n));
        }
        let kept = (0..10 * SLOTS as u32)
            .filter(|n| memo.get(&format!("h{n}"), |h| *h).is_some())
            .count();
        assert!(kept <= SLOTS, "{kept} kept");
    }
}
