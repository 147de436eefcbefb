//! DPoP server nonces (RFC 9449 §9) that every instance sharing a secret accepts, with
//! no state: a nonce is the second it was issued and a MAC of it,
//! `base64url(ts (8 bytes, big-endian) ‖ HMAC-SHA256(secret, "tokengate-dpop-nonce-v1" ‖ ts)[..16])`.
//! It is accepted while it is at most `dpop_max_age` old (and at most the leeway ahead
//! of this instance's clock). The secret is `dpop_nonce_secret_env` / `_file`; without
//! one, a random secret made once per process (so only that process accepts its nonces).

use std::sync::OnceLock;

use aws_lc_rs::{constant_time, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What the MAC covers besides the time: a nonce is never valid as anything else.
const LABEL: &[u8] = b"tokengate-dpop-nonce-v1";

/// Bytes of the MAC kept.
const TAG_BYTES: usize = 16;

/// The key nonces are made and checked with.
#[derive(Debug, Clone)]
pub struct NonceKey(hmac::Key);

// === impl NonceKey ===

impl NonceKey {
    /// The key of a configured secret.
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// This process's own key (random, made once), for configs without a secret.
    pub fn process() -> Self {
        static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
        let secret = SECRET.get_or_init(|| {
            let mut s = [0u8; 32];
            // The system RNG does not fail on Linux; a zero key would still make nonces
            // that only this process accepts.
            let _ = rand::fill(&mut s);
            s
        });
        Self::new(secret)
    }

    /// A fresh nonce at `now`.
    pub fn issue(&self, now: i64) -> String {
        let ts = now.to_be_bytes();
        let mut out = [0u8; 8 + TAG_BYTES];
        out[..8].copy_from_slice(&ts);
        out[8..].copy_from_slice(&self.tag(&ts).as_ref()[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// True when `nonce` is one of ours, issued at most `max_age` seconds before `now`
    /// and at most `leeway` seconds after it.
    pub fn accepts(&self, nonce: &str, now: i64, max_age: i64, leeway: i64) -> bool {
        let mut raw = [0u8; 8 + TAG_BYTES];
        if nonce.len() != 32
            || URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw).ok() != Some(raw.len())
        {
            return false;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued = i64::from_be_bytes(ts);
        if issued < now.saturating_sub(max_age) || issued > now.saturating_add(leeway) {
            return false;
        }
        constant_time::verify_slices_are_equal(&raw[8..], &self.tag(&ts).as_ref()[..TAG_BYTES])
            .is_ok()
    }

    fn tag(&self, ts: &[u8; 8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(LABEL);
        ctx.update(ts);
        ctx.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_by_every_key_of_the_same_secret_while_fresh() {
        let secret = [7u8; 32];
        let (a, b) = (NonceKey::new(&secret), NonceKey::new(&secret));
        let nonce = a.issue(1_000);
        assert_eq!(nonce.len(), 32);
        assert!(b.accepts(&nonce, 1_000, 60, 30));
        assert!(b.accepts(&nonce, 1_060, 60, 30));
        assert!(!b.accepts(&nonce, 1_061, 60, 30), "too old");
        assert!(
            b.accepts(&nonce, 970, 60, 30),
            "issued by a clock ahead, within leeway"
        );
        assert!(!b.accepts(&nonce, 969, 60, 30));
        assert!(!NonceKey::new(&[8u8; 32]).accepts(&nonce, 1_000, 60, 30));
        assert!(!NonceKey::process().accepts(&nonce, 1_000, 60, 30));
    }

    #[test]
    fn a_forged_or_mangled_nonce_is_refused() {
        let k = NonceKey::new(&[1u8; 32]);
        let nonce = k.issue(1_000);
        // The same MAC with another time.
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap_or_default();
        raw[7] ^= 1;
        let moved = URL_SAFE_NO_PAD.encode(&raw);
        for bad in [
            moved.as_str(),
            "",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &nonce[..31],
            &format!("{nonce}="),
        ] {
            assert!(!k.accepts(bad, 1_000, 60, 30), "{bad:?}");
        }
    }
}
