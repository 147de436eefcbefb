//! The verified-token cache: SHA-256 of the token → the checked [`Principal`]. An entry
//! lives until the earlier of the token's `exp` and `cache.max_ttl`, and is used only
//! while its issuer's key ring is still at the generation it was verified under, so a
//! rotation, revocation or reload invalidates it before the next request. Bounded by
//! `cache.max_entries` (0 turns it off), counted in units of [`ENTRY_WEIGHT_UNIT`] bytes:
//! an entry larger than one unit (long scopes or forward-header values) counts as one
//! per started unit, so the cache's memory is bounded too, not only its entry count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use crate::claims::Principal;
use crate::metrics::CacheMetrics;

/// Bytes one unit of `cache.max_entries` stands for. Typical entries (a subject, a few
/// scopes) are far below it and count as one; the cache then holds at most about
/// `max_entries` × this many bytes of entries whatever the tokens carry.
pub const ENTRY_WEIGHT_UNIT: usize = 1024;

/// A cached verification.
#[derive(Debug)]
pub struct Entry {
    /// The issuer's ring generation it was verified under.
    pub generation: u64,
    /// The result.
    pub principal: Principal,
    ttl: Duration,
}

/// The cache (or nothing, when turned off).
pub struct TokenCache {
    inner: Option<Cache<[u8; 32], Arc<Entry>>>,
    max_ttl: Duration,
    metrics: CacheMetrics,
}

struct EntryExpiry;

// === impl TokenCache ===

impl TokenCache {
    /// A cache of at most `max_entries` entries, each living at most `max_ttl`.
    pub fn new(max_entries: u64, max_ttl: Duration, metrics: CacheMetrics) -> Self {
        let inner = (max_entries > 0 && !max_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(max_entries)
                .weigher(|_: &[u8; 32], entry: &Arc<Entry>| entry.weight())
                .expire_after(EntryExpiry)
                .build()
        });
        Self {
            inner,
            max_ttl,
            metrics,
        }
    }

    /// True when the cache is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The entry for `hash`, if present, verified under `generation`, and not expired.
    pub fn get(
        &self,
        hash: &[u8; 32],
        generation: impl Fn(usize) -> u64,
        now: i64,
    ) -> Option<Arc<Entry>> {
        let cache = self.inner.as_ref()?;
        let hit = cache.get(hash).filter(|e| {
            e.generation == generation(e.principal.issuer)
                && e.principal.exp.is_none_or(|exp| now < exp)
        });
        if hit.is_some() {
            self.metrics.hit.inc();
        } else {
            self.metrics.miss.inc();
        }
        hit
    }

    /// Stores a verification made under `generation` (when the cache is on) and returns
    /// it as an entry either way.
    pub fn insert(
        &self,
        hash: [u8; 32],
        generation: u64,
        principal: Principal,
        now: i64,
    ) -> Arc<Entry> {
        let until_exp = principal.exp.map_or(self.max_ttl, |exp| {
            Duration::from_secs(exp.saturating_sub(now).max(0) as u64)
        });
        let ttl = until_exp.min(self.max_ttl);
        let entry = Arc::new(Entry {
            generation,
            principal,
            ttl,
        });
        if let Some(cache) = &self.inner
            && !ttl.is_zero()
        {
            cache.insert(hash, entry.clone());
        }
        entry
    }

    /// Entries now (approximate; for tests and the inventory).
    pub fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

// === impl Entry ===

impl Entry {
    /// Units of [`ENTRY_WEIGHT_UNIT`] this entry counts for (at least one): its own size
    /// plus the strings it owns (the key is shared with the ring and not counted).
    fn weight(&self) -> u32 {
        let owned = self.principal.heap_size();
        let bytes = std::mem::size_of::<Self>() + 32 + owned;
        u32::try_from(bytes.div_ceil(ENTRY_WEIGHT_UNIT)).unwrap_or(u32::MAX)
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

// === impl EntryExpiry ===

impl Expiry<[u8; 32], Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        value: &Arc<Entry>,
        _: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}
