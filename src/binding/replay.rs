//! The DPoP `jti` replay cache (RFC 9449 §11.1): per process, kept across config
//! reloads, bounded in time and in memory.
//!
//! - **Key.** The first 16 bytes of SHA-256(`jkt` `.` `jti`): a proof's `jti` is unique
//!   per key, and a fixed-size key keeps an entry at 16 bytes whatever the `jti`.
//! - **Time.** An entry lives until the proof's `iat` + `dpop_max_age`: after that the
//!   `iat` check refuses the proof anyway. Entries sit in buckets by expiry (a sixteenth
//!   of the window wide); a whole bucket is dropped once it has expired, so expiry costs
//!   nothing per entry and a lookup probes at most about sixteen sets per window in use.
//! - **Memory.** At most [`MAX_ENTRIES`] entries in all (30-40 MiB at the cap: 16 bytes,
//!   a control byte and the hash table's slack per entry). Only proofs that passed every
//!   other check (signature by the key the token is bound to, `htm`, `htu`, `iat`, `ath`,
//!   nonce) are recorded, so filling it takes a valid token and its private key. When it
//!   is full, new proofs are refused (`invalid_dpop_proof`) rather than forgetting a
//!   `jti` early, which would let a replay through.
//! - **Concurrency.** Sixteen shards by the key's first byte, each behind its own mutex
//!   held for one probe and one insert.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cache::DigestHash;

/// Most entries the cache holds.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Shards (a power of two).
const SHARDS: usize = 16;

/// Buckets per window (`dpop_max_age` + leeway): the bucket width is the window over this.
const BUCKETS_PER_WINDOW: i64 = 16;

/// A proof's replay key.
pub type ReplayKey = [u8; 16];

/// The cache.
#[derive(Debug)]
pub struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    len: AtomicUsize,
    max: usize,
}

/// What [`ReplayCache::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First use: recorded.
    New,
    /// Already recorded and not yet expired: a replay.
    Replayed,
    /// The cache is full: not recorded, and the proof must be refused.
    Full,
}

#[derive(Debug, Default)]
struct Shard {
    /// Ordered by `end`.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Unix second from which every key in it has expired.
    end: i64,
    keys: HashSet<ReplayKey, DigestHash>,
}

// === impl ReplayCache ===

impl Default for ReplayCache {
    fn default() -> Self {
        Self::with_max(MAX_ENTRIES)
    }
}

impl ReplayCache {
    /// An empty cache holding at most `max` entries.
    pub fn with_max(max: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            len: AtomicUsize::new(0),
            max,
        }
    }

    /// Records `key`, which is needed until `expires` (unix seconds), at `now`; `window`
    /// is the issuer's `dpop_max_age` + leeway in seconds (it sets the bucket width).
    pub fn insert(&self, key: ReplayKey, expires: i64, window: i64, now: i64) -> Seen {
        let Some(shard) = self.shards.get(usize::from(key[0]) % SHARDS) else {
            return Seen::Full;
        };
        // A poisoned shard only means a panic elsewhere mid-insert; its sets are intact.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = shard.expire(now);
        if dropped > 0 {
            self.len.fetch_sub(dropped, Ordering::Relaxed);
        }
        if shard.buckets.iter().any(|b| b.keys.contains(&key)) {
            return Seen::Replayed;
        }
        if self.len.load(Ordering::Relaxed) >= self.max {
            return Seen::Full;
        }
        let width = (window / BUCKETS_PER_WINDOW).max(1);
        let end = expires.max(now + 1).div_euclid(width).saturating_add(1) * width;
        let at = shard.buckets.partition_point(|b| b.end < end);
        let bucket = match shard.buckets.get(at) {
            Some(b) if b.end == end => at,
            _ => {
                shard.buckets.insert(
                    at,
                    Bucket {
                        end,
                        keys: HashSet::with_hasher(DigestHash),
                    },
                );
                at
            }
        };
        if let Some(b) = shard.buckets.get_mut(bucket) {
            b.keys.insert(key);
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        Seen::New
    }

    /// Entries held (expired buckets are dropped by the next insert into their shard).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl Shard ===

impl Shard {
    /// Drops the buckets that have expired at `now`; returns how many keys went.
    fn expire(&mut self, now: i64) -> usize {
        let mut dropped = 0;
        while self.buckets.front().is_some_and(|b| b.end <= now) {
            if let Some(b) = self.buckets.pop_front() {
                dropped += b.keys.len();
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> ReplayKey {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_le_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&d.as_ref()[..16]);
        k
    }

    #[test]
    fn a_key_is_new_once_then_replayed_until_it_expires() {
        let cache = ReplayCache::default();
        assert_eq!(cache.insert(key(1), 1_000 + 60, 90, 1_000), Seen::New);
        assert_eq!(cache.insert(key(1), 1_000 + 60, 90, 1_030), Seen::Replayed);
        assert_eq!(cache.insert(key(2), 1_000 + 60, 90, 1_030), Seen::New);
        // Still held at its expiry second, gone once its bucket has ended.
        assert_eq!(cache.insert(key(1), 1_060, 90, 1_060), Seen::Replayed);
        assert_eq!(cache.insert(key(1), 1_200, 90, 1_100), Seen::New);
        assert_eq!(cache.insert(key(2), 1_200, 90, 1_100), Seen::New);
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let cache = ReplayCache::with_max(100);
        for i in 0..100 {
            assert_eq!(cache.insert(key(i), 2_000, 90, 1_000), Seen::New);
        }
        assert_eq!(cache.insert(key(100), 2_000, 90, 1_000), Seen::Full);
        // Every recorded key is still a replay.
        for i in 0..100 {
            assert_eq!(cache.insert(key(i), 2_000, 90, 1_500), Seen::Replayed);
        }
        // Room comes back as buckets expire.
        assert_eq!(cache.insert(key(100), 3_000, 90, 2_100), Seen::New);
        assert!(cache.len() <= 100);
    }

    #[test]
    fn windows_of_different_widths_share_the_cache() {
        let cache = ReplayCache::default();
        assert_eq!(cache.insert(key(1), 1_060, 90, 1_000), Seen::New);
        assert_eq!(cache.insert(key(2), 4_600, 3_630, 1_000), Seen::New);
        assert_eq!(cache.insert(key(2), 4_600, 3_630, 4_000), Seen::Replayed);
        assert_eq!(cache.insert(key(1), 1_200, 90, 4_000), Seen::New);
    }
}
