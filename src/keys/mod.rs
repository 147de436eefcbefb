//! Keys and key rings. Each key source publishes the keys it loaded ([`SourceKeys`]);
//! [`IssuerKeys`] merges an issuer's sources into an immutable [`KeyRing`] snapshot with a
//! new generation number and swaps it in atomically. Requests read the current ring
//! without taking a lock; there is one writer per issuer. Key statistics (validations,
//! last use) live in [`KeyStats`] and follow a key across rings; keys that leave their
//! source are remembered as retired, with their statistics, for the inventory.

pub mod files;
pub mod inventory;
pub mod jwks;
pub mod jwks_source;
pub mod keystore;
pub mod material;
pub mod revoked;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::alg::Alg;
use crate::clock::Clock;
use crate::jwe::{DecryptionKey, Enc, KeyAlg};
use crate::metrics::{KeyInfoRow, KeyMetrics, Metrics};
pub use material::{KeyError, KeyMaterial, Validity};

/// How many retired keys an issuer remembers (oldest forgotten first).
pub const MAX_RETIRED_PER_ISSUER: usize = 32;

/// Where a key came from (the `source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A remote JWKS (jwks_uri or discovery).
    Jwks,
    /// A local JWKS file.
    JwksFile,
    /// A PKCS#12 keystore.
    Keystore,
    /// A PEM file.
    Pem,
}

/// A key's state in the inventory (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// The key that signs now: the first alias of a keystore mapping that loaded; for a
    /// JWK set (which has no order) the key that verified the token with the newest
    /// `iat` seen, so it does not flip while old and new keys are both in use.
    Active,
    /// Accepted for verification.
    Valid,
    /// Gone from its source, remembered.
    Retired,
    /// Revoked: never tried.
    Revoked,
    /// Named by the config (a keystore alias) but not in its source.
    Missing,
}

/// How the key that verified a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// By the token's `kid`.
    Kid,
    /// By trying compatible keys (unknown or no `kid`).
    Fallback,
}

/// One key as a source loaded it.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// kid, keystore alias, or (no kid) the thumbprint.
    pub id: String,
    /// The verifying material.
    pub material: Arc<KeyMaterial>,
    /// The JWK's `alg`, when it names one tokengate knows.
    pub alg: Option<Alg>,
    /// The JWK names an `alg` tokengate does not verify with (the key is never compatible).
    pub foreign_alg: Option<String>,
    /// `use` is `sig` or absent, and `key_ops` (if any) has `verify`.
    pub for_verification: bool,
    /// Certificate validity, for keys that come from certificates.
    pub validity: Option<Validity>,
    /// Marked active by its source (first keystore alias).
    pub active: bool,
    /// The private (or secret) key that decrypts JWEs (SPEC §10), from local sources
    /// only: a keystore's private-key and secret-key entries, a private or `oct` JWK of a
    /// `jwks_file`, a private-key `pem_file` of the `decryption` section.
    pub decryption: Option<Arc<DecryptionKey>>,
}

/// What one source published.
#[derive(Debug, Clone)]
pub struct SourceKeys {
    /// The kind of source.
    pub kind: SourceKind,
    /// Its keys, in source order.
    pub keys: Vec<LoadedKey>,
    /// Keys the source was told to publish but does not hold (keystore aliases not in
    /// the file): reported `missing`, never tried.
    pub missing: Vec<String>,
    /// When it was last fetched (remote JWKS); the source updates it on 304 too.
    pub fetched_at: Option<Arc<AtomicI64>>,
}

/// Per-key counters that survive ring rebuilds.
#[derive(Debug)]
pub struct KeyStats {
    /// When tokengate first loaded this key.
    pub first_seen: i64,
    last_used: AtomicI64,
    /// The newest `iat` of a token this key verified (0: none yet).
    newest_iat: AtomicI64,
    /// Validations per minute of the last hour and per hour of the last day.
    windows: UsageWindows,
    validations: AtomicU64,
    by_match: [AtomicU64; 2],
    metrics: KeyMetrics,
}

/// Per-key usage in bounded memory: 60 per-minute and 24 per-hour counters, each word
/// holding its period's number (upper 32 bits) and count (lower 32 bits), updated without
/// a lock. A counter whose period is over starts again at 1.
#[derive(Debug)]
struct UsageWindows {
    minutes: [AtomicU64; 60],
    hours: [AtomicU64; 24],
}

impl Default for UsageWindows {
    fn default() -> Self {
        Self {
            minutes: std::array::from_fn(|_| AtomicU64::new(0)),
            hours: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl UsageWindows {
    fn record(&self, now: i64) {
        let now = u64::try_from(now).unwrap_or(0);
        bump(&self.minutes, now / 60);
        bump(&self.hours, now / 3600);
    }

    /// (last 60 minutes, last 24 hours).
    fn sums(&self, now: i64) -> (u64, u64) {
        let now = u64::try_from(now).unwrap_or(0);
        (
            window_sum(&self.minutes, now / 60),
            window_sum(&self.hours, now / 3600),
        )
    }
}

/// Counts one use in period `period`'s slot.
fn bump(slots: &[AtomicU64], period: u64) {
    let Some(slot) = slots.get(usize::try_from(period % slots.len() as u64).unwrap_or(0)) else {
        return;
    };
    let tag = (period & 0xffff_ffff) << 32;
    let mut cur = slot.load(Ordering::Relaxed);
    loop {
        let next = if cur & !0xffff_ffff == tag {
            cur.saturating_add(1).min(tag | 0xffff_ffff)
        } else {
            tag | 1
        };
        match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// The counts of the slots whose period is one of the last `slots.len()` up to `period`.
fn window_sum(slots: &[AtomicU64], period: u64) -> u64 {
    let len = slots.len() as u64;
    slots
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .filter(|w| {
            let p = w >> 32;
            let now = period & 0xffff_ffff;
            now.wrapping_sub(p) & 0xffff_ffff < len && *w != 0
        })
        .map(|w| w & 0xffff_ffff)
        .sum()
}

/// A key in a ring.
#[derive(Debug)]
pub struct Key {
    /// kid or alias.
    pub id: Arc<str>,
    /// Source kind.
    pub source: SourceKind,
    /// Position of its source in the issuer's `key_sources`.
    pub source_index: usize,
    /// The material.
    pub material: Arc<KeyMaterial>,
    /// The JWK's `alg`.
    pub alg: Option<Alg>,
    /// A JWK `alg` tokengate does not know.
    pub foreign_alg: Option<String>,
    /// `use`/`key_ops` allow verification.
    pub for_verification: bool,
    /// Certificate validity.
    pub validity: Option<Validity>,
    /// Marked active by its source.
    pub active: bool,
    /// Revoked by kid or thumbprint.
    pub revoked: bool,
    /// When its source last fetched it (remote JWKS).
    pub fetched_at: Option<Arc<AtomicI64>>,
    /// The decrypting half, for keys that have one (SPEC §10).
    pub decryption: Option<Arc<DecryptionKey>>,
    /// Counters.
    pub stats: Arc<KeyStats>,
}

/// A key that left its source, remembered for the inventory.
#[derive(Debug)]
pub struct RetiredKey {
    /// The key as it was last seen.
    pub key: Arc<Key>,
    /// When it left.
    pub retired_at: i64,
}

/// An issuer's keys at one moment. Immutable.
#[derive(Debug, Default)]
pub struct KeyRing {
    /// Increases with every change of any ring.
    pub generation: u64,
    /// Current keys (revoked ones included, flagged), active first then source order.
    pub keys: Vec<Arc<Key>>,
    by_kid: HashMap<Arc<str>, Vec<usize>>,
    /// Keys that left their sources.
    pub retired: Vec<RetiredKey>,
    /// Keys a source was told to publish but does not hold: (source index, kind, id).
    pub missing: Vec<(usize, SourceKind, Arc<str>)>,
    /// At least one source has keys loaded (else requests get `keys_unavailable`).
    pub loaded: bool,
}

/// Revoked kids and thumbprints (config lists plus `revoked.file`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevokedSet {
    /// Key ids.
    pub kids: HashSet<String>,
    /// RFC 7638 thumbprints.
    pub thumbprints: HashSet<String>,
}

/// A source that can fetch again when a token names an unknown kid.
pub trait MissRefetch: Send + Sync {
    /// Fetches now unless the rate limit or another fetch in flight says otherwise;
    /// resolves when the fetch (this one or the one in flight) is over. True when the
    /// issuer's ring changed.
    fn refetch(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The keys of one issuer: the per-source slots and the current ring.
pub struct IssuerKeys {
    name: Arc<str>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    writer: Mutex<Writer>,
    ring: ArcSwap<KeyRing>,
    refetchers: Mutex<Vec<Arc<dyn MissRefetch>>>,
    /// Per source (by index): the outcome of its last load or fetch.
    health: Mutex<Vec<SourceHealth>>,
    /// The longest `exp - iat` of a token accepted (0: none yet).
    longest_lifetime: AtomicI64,
    /// Its keys decrypt (the `decryption` section, a session) rather than verify.
    decrypts: bool,
}

/// The outcome of a source's last load or fetch.
#[derive(Debug, Clone, Copy, Default)]
struct SourceHealth {
    kind: Option<SourceKind>,
    up: Option<bool>,
    last_success: i64,
}

struct Writer {
    slots: Vec<Option<SourceKeys>>,
    revoked: Arc<RevokedSet>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A fresh, never-used generation number.
pub fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

// === impl SourceKind ===

impl SourceKind {
    /// The `source` label value.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Jwks => "jwks",
            SourceKind::JwksFile => "jwks_file",
            SourceKind::Keystore => "keystore",
            SourceKind::Pem => "pem",
        }
    }
}

// === impl KeyState ===

impl KeyState {
    /// The inventory / label value.
    pub fn label(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Valid => "valid",
            KeyState::Retired => "retired",
            KeyState::Revoked => "revoked",
            KeyState::Missing => "missing",
        }
    }
}

// === impl MatchKind ===

impl MatchKind {
    /// The `match` label value.
    pub fn label(self) -> &'static str {
        match self {
            MatchKind::Kid => "kid",
            MatchKind::Fallback => "fallback",
        }
    }
}

// === impl KeyStats ===

impl KeyStats {
    fn new(first_seen: i64, metrics: KeyMetrics) -> Self {
        Self {
            first_seen,
            last_used: AtomicI64::new(0),
            newest_iat: AtomicI64::new(0),
            windows: UsageWindows::default(),
            validations: AtomicU64::new(0),
            by_match: [AtomicU64::new(0), AtomicU64::new(0)],
            metrics,
        }
    }

    /// Records a signature check with this key (the per-key verification counter).
    pub fn record_verification(&self, matched: MatchKind, ok: bool) {
        self.metrics
            .verification(matched == MatchKind::Fallback, ok);
    }

    /// Records a token accepted on the strength of this key (all checks passed, now or
    /// from the cache): validations and last use.
    pub fn record_use(&self, matched: MatchKind, now: i64) {
        self.validations.fetch_add(1, Ordering::Relaxed);
        self.by_match[matched as usize].fetch_add(1, Ordering::Relaxed);
        self.windows.record(now);
        if self.last_used.swap(now, Ordering::Relaxed) != now {
            self.metrics.last_used(now);
        }
    }

    /// Notes the issue time (`iat`, else the time of the check) of a token this key
    /// verified.
    pub fn record_issued(&self, iat: i64) {
        self.newest_iat.fetch_max(iat, Ordering::Relaxed);
    }

    /// The newest `iat` of a token this key verified (None: none yet).
    pub fn newest_iat(&self) -> Option<i64> {
        match self.newest_iat.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Last time a token was accepted with this key (None: never).
    pub fn last_used(&self) -> Option<i64> {
        match self.last_used.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Tokens accepted with this key in the last hour and the last 24 hours (by minute
    /// and by hour: the 24-hour figure may include up to one hour more).
    pub fn recent_validations(&self, now: i64) -> (u64, u64) {
        self.windows.sums(now)
    }

    /// Tokens accepted with this key.
    pub fn validations(&self) -> u64 {
        self.validations.load(Ordering::Relaxed)
    }

    /// Tokens accepted with this key, by kid and by fallback.
    pub fn validations_by_match(&self) -> (u64, u64) {
        (
            self.by_match[0].load(Ordering::Relaxed),
            self.by_match[1].load(Ordering::Relaxed),
        )
    }

    /// The key's metric handles.
    pub fn metrics(&self) -> &KeyMetrics {
        &self.metrics
    }
}

// === impl Key ===

impl Key {
    /// SPEC §4 step 3 compatibility: type and curve fit `alg`, the JWK's own `alg` (if
    /// any) equals it, `use`/`key_ops` allow verification, and the key is not revoked.
    pub fn compatible(&self, alg: Alg) -> bool {
        !self.revoked
            && self.for_verification
            && self.foreign_alg.is_none()
            && self.alg.is_none_or(|a| a == alg)
            && self.material.fits(alg)
    }

    /// Can decrypt a JWE of `alg` with `enc` (SPEC §10): it has a decrypting half that
    /// fits them and is not revoked.
    pub fn decrypts(&self, alg: KeyAlg, enc: Enc) -> bool {
        !self.revoked && self.decryption.as_ref().is_some_and(|d| d.fits(alg, enc))
    }

    fn same_key(&self, source_index: usize, id: &str, thumbprint: &str) -> bool {
        self.source_index == source_index
            && &*self.id == id
            && self.material.thumbprint() == thumbprint
    }
}

// === impl KeyRing ===

impl KeyRing {
    /// The indices into `keys` of the keys with this kid, if any.
    pub fn by_kid(&self, kid: &str) -> Option<&[usize]> {
        self.by_kid.get(kid).map(Vec::as_slice)
    }

    /// Compatible, non-revoked keys for `alg`, active first, at most `max`.
    pub fn fallback(&self, alg: Alg, max: usize) -> impl Iterator<Item = &Arc<Key>> {
        self.keys
            .iter()
            .filter(move |k| k.compatible(alg))
            .take(max)
    }

    /// Keys that can decrypt `alg` with `enc`, active first, at most `max`.
    pub fn decryption_fallback(
        &self,
        alg: KeyAlg,
        enc: Enc,
        max: usize,
    ) -> impl Iterator<Item = &Arc<Key>> {
        self.keys
            .iter()
            .filter(move |k| k.decrypts(alg, enc))
            .take(max)
    }
}

// === impl RevokedSet ===

impl RevokedSet {
    /// True when `key` is revoked by id or thumbprint.
    pub fn covers(&self, id: &str, thumbprint: &str) -> bool {
        self.kids.contains(id) || self.thumbprints.contains(thumbprint)
    }
}

// === impl IssuerKeys ===

impl IssuerKeys {
    /// An issuer with `sources` key sources, none loaded yet.
    pub fn new(
        name: Arc<str>,
        sources: usize,
        revoked: Arc<RevokedSet>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            name,
            clock,
            metrics,
            writer: Mutex::new(Writer {
                slots: (0..sources).map(|_| None).collect(),
                revoked,
            }),
            ring: ArcSwap::from_pointee(KeyRing {
                generation: next_generation(),
                ..KeyRing::default()
            }),
            refetchers: Mutex::new(Vec::new()),
            health: Mutex::new(vec![SourceHealth::default(); sources]),
            longest_lifetime: AtomicI64::new(0),
            decrypts: false,
        }
    }

    /// The same holder, for keys that decrypt (SPEC §10): they count decryptions and are
    /// listed with `use: "enc"`.
    #[must_use]
    pub fn for_decryption(mut self) -> Self {
        self.decrypts = true;
        self
    }

    /// Its keys decrypt.
    pub fn decrypts(&self) -> bool {
        self.decrypts
    }

    /// Notes the lifetime (`exp - iat`) of an accepted token.
    pub fn record_lifetime(&self, seconds: i64) {
        self.longest_lifetime.fetch_max(seconds, Ordering::Relaxed);
    }

    /// The longest `exp - iat` of a token accepted since start (None: none yet).
    pub fn longest_lifetime(&self) -> Option<i64> {
        match self.longest_lifetime.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Records the outcome of a load or fetch of source `index` and exports the health of
    /// the issuer's sources of that kind (`tokengate_key_source_up`, up when every one of
    /// them is; `tokengate_key_source_last_success_timestamp_seconds`, the oldest).
    /// Returns whether the source was failing before.
    pub fn record_source(&self, index: usize, kind: SourceKind, ok: bool) -> bool {
        let now = self.clock.now();
        let mut health = lock(&self.health);
        let mut was_failing = false;
        if let Some(slot) = health.get_mut(index) {
            was_failing = slot.up == Some(false);
            slot.kind = Some(kind);
            slot.up = Some(ok);
            if ok {
                slot.last_success = now;
            }
        }
        let same = health.iter().filter(|s| s.kind == Some(kind));
        let up = same.clone().all(|s| s.up == Some(true));
        let last = same.map(|s| s.last_success).min().unwrap_or(0);
        self.metrics
            .source_health(&self.name, kind.label(), up, last);
        was_failing
    }

    /// The issuer's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The current ring. Lock-free.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// The current ring's generation. Lock-free, no reference count touched.
    pub fn generation(&self) -> u64 {
        self.ring.load().generation
    }

    /// Replaces what source `index` publishes (`None`: it has nothing usable any more,
    /// e.g. stale beyond `max_stale`) and swaps in a new ring.
    pub fn publish(&self, index: usize, keys: Option<SourceKeys>) {
        let mut w = lock(&self.writer);
        if let Some(slot) = w.slots.get_mut(index) {
            *slot = keys;
        }
        self.rebuild(&w);
    }

    /// What source `index` publishes now (a config reload seeds a new issuer with it).
    pub fn source_keys(&self, index: usize) -> Option<SourceKeys> {
        lock(&self.writer).slots.get(index).cloned().flatten()
    }

    /// Starts this (new, empty) issuer from `old`'s keys as remembered keys, so that a
    /// config change of the issuer's key sources keeps the statistics of every key that
    /// is published again (same source position, id and material) and shows the others
    /// as retired. The ring stays "not loaded" until a source publishes.
    pub fn inherit(&self, old: &IssuerKeys) {
        let _w = lock(&self.writer);
        let prev = old.ring();
        let now = self.clock.now();
        let mut retired: Vec<RetiredKey> = prev
            .keys
            .iter()
            .map(|k| RetiredKey {
                key: k.clone(),
                retired_at: now,
            })
            .collect();
        retired.extend(prev.retired.iter().map(|r| RetiredKey {
            key: r.key.clone(),
            retired_at: r.retired_at,
        }));
        retired.truncate(MAX_RETIRED_PER_ISSUER);
        self.ring.store(Arc::new(KeyRing {
            generation: next_generation(),
            retired,
            ..KeyRing::default()
        }));
    }

    /// Applies a new revocation set (config or `revoked.file` reload).
    pub fn set_revoked(&self, revoked: Arc<RevokedSet>) {
        let mut w = lock(&self.writer);
        if *w.revoked == *revoked {
            return;
        }
        w.revoked = revoked;
        self.rebuild(&w);
    }

    /// Registers a source that can refetch on an unknown kid.
    pub fn add_refetcher(&self, r: Arc<dyn MissRefetch>) {
        lock(&self.refetchers).push(r);
    }

    /// Asks every refetching source to fetch again (single-flight, rate-limited by each
    /// source). True when the ring changed.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let list: Vec<_> = lock(&self.refetchers).clone();
        let mut changed = false;
        for r in list {
            changed |= r.refetch().await;
        }
        changed
    }

    fn rebuild(&self, w: &Writer) {
        let now = self.clock.now();
        let old = self.ring.load_full();
        let mut keys: Vec<Arc<Key>> = Vec::new();
        let mut missing = Vec::new();
        let mut loaded = false;
        for (index, slot) in w.slots.iter().enumerate() {
            let Some(src) = slot else { continue };
            loaded |= !src.keys.is_empty();
            missing.extend(
                src.missing
                    .iter()
                    .map(|id| (index, src.kind, Arc::<str>::from(id.as_str()))),
            );
            for lk in &src.keys {
                // Keep the statistics of a key we already know (same source, id, material).
                let known = old
                    .keys
                    .iter()
                    .chain(old.retired.iter().map(|r| &r.key))
                    .find(|k| k.same_key(index, &lk.id, lk.material.thumbprint()));
                let stats = match known {
                    Some(k) => k.stats.clone(),
                    None => Arc::new(KeyStats::new(
                        now,
                        if self.decrypts {
                            self.metrics
                                .decryption_key(&self.name, src.kind.label(), &lk.id)
                        } else {
                            self.metrics.key(&self.name, src.kind.label(), &lk.id)
                        },
                    )),
                };
                keys.push(Arc::new(Key {
                    id: lk.id.as_str().into(),
                    source: src.kind,
                    source_index: index,
                    material: lk.material.clone(),
                    alg: lk.alg,
                    foreign_alg: lk.foreign_alg.clone(),
                    for_verification: lk.for_verification,
                    validity: lk.validity,
                    active: lk.active,
                    revoked: w.revoked.covers(&lk.id, lk.material.thumbprint()),
                    fetched_at: src.fetched_at.clone(),
                    decryption: lk.decryption.clone(),
                    stats,
                }));
            }
        }
        // Active keys first, then source order (stable).
        keys.sort_by_key(|k| !k.active);

        let mut retired: Vec<RetiredKey> = Vec::new();
        for k in &old.keys {
            let still = keys
                .iter()
                .any(|n| n.same_key(k.source_index, &k.id, k.material.thumbprint()));
            if !still {
                retired.push(RetiredKey {
                    key: k.clone(),
                    retired_at: now,
                });
            }
        }
        for r in &old.retired {
            let back = keys
                .iter()
                .any(|n| n.same_key(r.key.source_index, &r.key.id, r.key.material.thumbprint()));
            let dup = retired
                .iter()
                .any(|x| Arc::ptr_eq(&x.key.stats, &r.key.stats));
            if !back && !dup {
                retired.push(RetiredKey {
                    key: r.key.clone(),
                    retired_at: r.retired_at,
                });
            }
        }
        retired.sort_by_key(|r| std::cmp::Reverse(r.retired_at));
        retired.truncate(MAX_RETIRED_PER_ISSUER);

        let mut by_kid: HashMap<Arc<str>, Vec<usize>> = HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            by_kid.entry(k.id.clone()).or_default().push(i);
        }
        self.ring.store(Arc::new(KeyRing {
            generation: next_generation(),
            keys,
            by_kid,
            retired,
            missing,
            loaded,
        }));
        self.export_key_info();
    }

    /// Re-exports `tokengate_key_info` (states change as keys are used, so the admin
    /// listener calls this before each scrape too).
    pub fn export_key_info(&self) {
        let entries = inventory::entries(self, None);
        for e in &entries {
            if let Some(t) = e.first_seen {
                self.metrics.key_first_seen(&self.name, e.source, &e.key, t);
            }
        }
        let rows = entries
            .into_iter()
            .map(|e| KeyInfoRow {
                source: e.source,
                key: e.key,
                kty: e.kty,
                alg: e.alg.unwrap_or("-").to_string(),
                thumbprint: if e.thumbprint.is_empty() {
                    "-".to_string()
                } else {
                    e.thumbprint
                },
                state: e.state.label(),
                not_after: e.not_after,
            })
            .collect();
        self.metrics.key_infos(&self.name, rows);
    }

    /// The clock keys are stamped with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from poisoning: the data behind these locks is always left
/// consistent (a panic while holding one cannot leave a half-written ring behind).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a key source could not be loaded or refreshed. Logged and counted, never sent to
/// clients; never contains key material or passwords.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The content is not what the source expects.
    #[error("{0}")]
    Invalid(String),
    /// A fetch failed (connection, timeout, status, size).
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// The content parsed but holds no usable key.
    #[error("no usable key{}", if .0.is_empty() { String::new() } else { format!(" ({})", .0.join("; ")) })]
    NoUsableKeys(Vec<String>),
}

/// A shared HMAC key in a one-key ring, for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn test_key() -> Arc<Key> {
    use std::sync::OnceLock;

    use crate::clock::FixedClock;
    use crate::metrics::Metrics;

    static KEY: OnceLock<Arc<Key>> = OnceLock::new();
    KEY.get_or_init(|| {
        let Ok(material) = KeyMaterial::hmac(b"a secret of thirty-two bytes.....") else {
            panic!("hmac key");
        };
        let keys = IssuerKeys::new(
            "test".into(),
            1,
            Arc::new(RevokedSet::default()),
            Arc::new(FixedClock::new(1_800_000_000)),
            Arc::new(Metrics::new()),
        );
        keys.publish(
            0,
            Some(SourceKeys {
                kind: SourceKind::JwksFile,
                missing: Vec::new(),
                keys: vec![LoadedKey {
                    id: "k".into(),
                    material: Arc::new(material),
                    alg: None,
                    foreign_alg: None,
                    for_verification: true,
                    validity: None,
                    active: true,
                    decryption: None,
                }],
                fetched_at: None,
            }),
        );
        let Some(key) = keys.ring().keys.first().cloned() else {
            panic!("no key in the ring");
        };
        key
    })
    .clone()
}

#[cfg(test)]
mod window_tests {
    use super::UsageWindows;

    #[test]
    fn usage_windows_count_the_last_hour_and_day_in_bounded_slots() {
        let w = UsageWindows::default();
        let t0: i64 = 1_800_000_000;
        for _ in 0..3 {
            w.record(t0);
        }
        w.record(t0 + 59 * 60);
        assert_eq!(w.sums(t0 + 59 * 60), (4, 4));
        // 61 minutes on: the first three fall out of the hour, not out of the day.
        assert_eq!(w.sums(t0 + 61 * 60), (1, 4));
        // A slot reused 60 minutes later starts again.
        w.record(t0 + 60 * 60);
        assert_eq!(w.sums(t0 + 60 * 60).0, 2);
        // 25 hours on: nothing left.
        assert_eq!(w.sums(t0 + 25 * 3600), (0, 0));
        // Never used: nothing.
        assert_eq!(UsageWindows::default().sums(t0), (0, 0));
    }
}
