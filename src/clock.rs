//! Time, injected: the system clock in production, a settable clock in tests, so that
//! expiry, leeway and refresh policies are tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in whole seconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch, now.
    fn now(&self) -> i64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// A clock that stands still until told otherwise (tests, `verify --now`).
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

// === impl SystemClock ===

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // A clock set before 1970 is a broken host; treat it as the epoch.
            Err(_) => 0,
        }
    }
}

// === impl FixedClock ===

impl FixedClock {
    /// A clock showing `secs` seconds since the epoch.
    pub fn new(secs: i64) -> Self {
        Self(AtomicI64::new(secs))
    }

    /// Moves the clock to `secs`.
    pub fn set(&self, secs: i64) {
        self.0.store(secs, Ordering::SeqCst);
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
