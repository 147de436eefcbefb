//! The decision log (SPEC §12 `audit`): one JSON line per sampled decision on stdout,
//! apart from the diagnostic logs on stderr, whatever `--log-format` says. A line names
//! who (issuer, key, subject, token fingerprint), what (listener, route, method, path),
//! the decision and why; never the token, a claim beyond the subject, or key material.
//!
//! Lines are formatted on the request's task and handed to one writer thread through a
//! bounded queue: a full queue drops the line and counts it
//! (`tokengate_audit_dropped_total`), so a slow stdout never delays a decision.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde::Serialize;

/// The `target` every line carries, for log routers.
pub const TARGET: &str = "tokengate::audit";

/// Lines that may wait for the writer; beyond this they are dropped and counted.
const QUEUE_LINES: usize = 8192;

/// Longest path written; a longer one is cut (at a character boundary) and marked `…`.
const MAX_PATH_BYTES: usize = 1024;

/// The writer: a bounded queue and the thread that drains it into stdout.
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<String>,
    dropped: IntCounter,
}

/// One decision, as written.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Always [`TARGET`].
    pub target: &'static str,
    /// The listener's label.
    pub listener: &'static str,
    /// The route's name, `null` when no route matched.
    pub route: Option<&'a str>,
    /// The judged method (the received one for a request that could not be read).
    pub method: &'a str,
    /// The judged path, without the query.
    pub path: &'a str,
    /// `allow` or `deny`: the judgement, before shadow mode lets a denial through.
    pub decision: &'static str,
    /// The allow or deny reason.
    pub reason: &'static str,
    /// False in shadow mode (the decision was not applied).
    pub enforced: bool,
    /// The issuer's name.
    pub issuer: Option<&'a str>,
    /// The id of the key that verified the token.
    pub key: Option<&'a str>,
    /// How the key was found: `kid` or `fallback`.
    #[serde(rename = "match")]
    pub matched: Option<&'static str>,
    /// The verified token's `audit.subject_claim`.
    pub subject: Option<&'a str>,
    /// The first 8 hex digits of the token's SHA-256.
    pub fingerprint: Option<String>,
    /// The W3C trace id the check belongs to.
    pub trace_id: Option<&'a str>,
    /// Time spent on the decision.
    pub latency_us: u64,
}

// === impl AuditLog ===

impl AuditLog {
    /// Starts the writer thread; lines it cannot take are counted in `dropped`.
    pub fn start(dropped: IntCounter) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("tokengate-audit".into())
            .spawn(move || write_lines(&rx, &mut std::io::stdout()))?;
        Ok(Self { tx, dropped })
    }

    /// True with probability `sample` (a per-thread generator: no lock, no syscall).
    pub fn sampled(sample: f64) -> bool {
        sample >= 1.0 || (sample > 0.0 && unit_random() < sample)
    }

    /// Queues one record; never waits.
    pub fn write(&self, record: &Record<'_>) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// Drains `rx` into `out`, flushing whenever the queue runs empty.
fn write_lines(rx: &Receiver<String>, out: &mut impl Write) {
    let mut buf = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = buf.write_all(line.as_bytes());
        while let Ok(line) = rx.try_recv() {
            let _ = buf.write_all(line.as_bytes());
        }
        let _ = buf.flush();
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let whole = crate::keys::inventory::rfc3339(secs);
    let stem = whole.strip_suffix('Z').unwrap_or(&whole);
    format!("{stem}.{:03}Z", now.subsec_millis())
}

/// `path`, cut to [`MAX_PATH_BYTES`] at a character boundary.
pub fn bounded_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= MAX_PATH_BYTES {
        return path.into();
    }
    let mut end = MAX_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end]).into()
}

/// A uniform number in [0, 1) from a per-thread xorshift64* generator seeded from the
/// process's random hasher keys (for sampling: no lock, no syscall).
pub(crate) fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        // The top 53 bits as a fraction.
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_drains_every_queued_line_in_order() {
        let (tx, rx) = mpsc::sync_channel(4);
        for i in 0..3 {
            let _ = tx.send(format!("{i}\n"));
        }
        drop(tx);
        let mut out = Vec::new();
        write_lines(&rx, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "0\n1\n2\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let dropped = IntCounter::new("d", "d").expect("a valid counter");
        let log = AuditLog {
            tx,
            dropped: dropped.clone(),
        };
        let record = Record {
            time: now_rfc3339(),
            target: TARGET,
            listener: "authz_http",
            route: None,
            method: "GET",
            path: "/",
            decision: "deny",
            reason: "missing_token",
            enforced: true,
            issuer: None,
            key: None,
            matched: None,
            subject: None,
            fingerprint: None,
            trace_id: None,
            latency_us: 1,
        };
        // Nobody drains the queue: the first line fits, the next two are dropped.
        for _ in 0..3 {
            log.write(&record);
        }
        assert_eq!(dropped.get(), 2);
    }

    #[test]
    fn sampling_follows_the_probability() {
        assert!((0..1000).all(|_| AuditLog::sampled(1.0)));
        assert!((0..1000).all(|_| !AuditLog::sampled(0.0)));
        let hits = (0..100_000).filter(|_| AuditLog::sampled(0.25)).count();
        assert!((22_000..28_000).contains(&hits), "{hits} of 100000 at 0.25");
    }

    #[test]
    fn times_and_paths_are_bounded_and_well_formed() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-12-03T05:11:03.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
        let long = "é".repeat(1000);
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_PATH_BYTES + "…".len() && cut.ends_with('…'));
        assert_eq!(bounded_path("/orders/1"), "/orders/1");
    }
}
