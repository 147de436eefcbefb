//! Counting: every measured latency kept (µs, `u32`), sorted at the end for exact
//! percentiles; errors counted the way wrk counts them; the `BENCH_JSON` line.

use std::fmt::Write as _;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    /// Responses with a status of 400 or more (still completed requests, as in wrk).
    pub status: u64,
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorKind {
    Connect,
    Read,
    Write,
    Timeout,
}

impl Errors {
    pub fn count(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Read => self.read += 1,
            ErrorKind::Write => self.write += 1,
            ErrorKind::Timeout => self.timeout += 1,
        }
    }
}

/// What the run counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of every completed measured request, µs from its scheduled time.
    pub latencies: Vec<u32>,
    /// Response bytes (head and body) of the completed measured requests.
    pub bytes: u64,
    pub errors: Errors,
    /// Measured requests written more than 100 µs after their scheduled time.
    pub late_sends: u64,
    /// Longest FIFO queue of requests waiting for a connection (measurement window).
    pub max_queue: usize,
    /// Measured requests scheduled (those in the measurement window).
    pub scheduled: u64,
    /// Event-loop iterations (whole run).
    pub loops: u64,
    /// Longest busy-polling loop iteration in the measurement window, and how many took
    /// longer than 1 ms: stalls of the generator itself (diagnostics only).
    pub stall_max_ns: u64,
    pub stalls: u64,
}

impl Tally {
    /// A measured request's complete response.
    pub fn complete(&mut self, status: u16, bytes: usize, latency_ns: u64) {
        self.latencies
            .push(u32::try_from(latency_ns / 1000).unwrap_or(u32::MAX));
        self.bytes += bytes as u64;
        if status >= 400 {
            self.errors.status += 1;
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub stdev: f64,
    pub max: u32,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub p999: u32,
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `p` % of
/// the values at or below it; 0 for no values.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
    let rank = (p / 100.0 * n as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Sorts `lat` and summarises it (stdev with n - 1, as wrk's).
pub fn summarize(lat: &mut [u32]) -> Latency {
    lat.sort_unstable();
    let n = lat.len();
    if n == 0 {
        return Latency::default();
    }
    let mean = lat.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let stdev = if n > 1 {
        let ss: f64 = lat.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum();
        (ss / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Latency {
        mean,
        stdev,
        max: lat[n - 1],
        p50: percentile(lat, 50.0),
        p90: percentile(lat, 90.0),
        p99: percentile(lat, 99.0),
        p999: percentile(lat, 99.9),
    }
}

/// The run's result.
#[derive(Debug)]
pub struct Report {
    pub tally: Tally,
    pub latency: Latency,
    pub duration_us: u64,
    pub target_rps: f64,
    pub connections: usize,
    /// Requests still waiting for a connection or a response at the end (not counted).
    pub left_queued: usize,
    pub left_in_flight: usize,
    /// The first few error messages.
    pub notes: Vec<String>,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.tally.latencies.len()
    }

    /// The `BENCH_JSON` object: `tokens.lua`'s `done()` shape plus `target_rps`,
    /// `late_sends` and `max_queue`.
    pub fn json(&self) -> String {
        let e = &self.tally.errors;
        let l = &self.latency;
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"requests\":{},\"duration_us\":{},\"bytes\":{},\
             \"errors\":{{\"connect\":{},\"read\":{},\"write\":{},\"status\":{},\"timeout\":{}}},\
             \"latency_us\":{{\"mean\":{:.1},\"stdev\":{:.1},\"max\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{}}},\
             \"target_rps\":{},\"late_sends\":{},\"max_queue\":{}}}",
            self.requests(),
            self.duration_us,
            self.tally.bytes,
            e.connect,
            e.read,
            e.write,
            e.status,
            e.timeout,
            l.mean,
            l.stdev,
            l.max,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            self.target_rps,
            self.tally.late_sends,
            self.tally.max_queue,
        );
        s
    }

    /// For stderr.
    pub fn diagnostics(&self) -> String {
        let secs = self.duration_us as f64 / 1e6;
        let t = &self.tally;
        let mut s = format!(
            "loadgen: target {} req/s; scheduled {} ({:.0}/s), completed {} ({:.0}/s) in {:.3} s; \
             late sends {} ({:.2} %), max queue {}, left at the end {} queued + {} in flight; \
             latency µs p50 {} p90 {} p99 {} p99.9 {} max {}; errors {:?}; \
             generator: {} loop iterations, longest busy-poll iteration {} µs, {} over 1 ms",
            self.target_rps,
            t.scheduled,
            t.scheduled as f64 / secs,
            self.requests(),
            self.requests() as f64 / secs,
            secs,
            t.late_sends,
            100.0 * t.late_sends as f64 / (t.scheduled.max(1)) as f64,
            t.max_queue,
            self.left_queued,
            self.left_in_flight,
            self.latency.p50,
            self.latency.p90,
            self.latency.p99,
            self.latency.p999,
            self.latency.max,
            t.errors,
            t.loops,
            t.stall_max_ns / 1000,
            t.stalls,
        );
        if t.late_sends * 100 > t.scheduled {
            let _ = write!(
                s,
                "\nloadgen: more than 1 % of the sends were late: the server (or the {} \
                 connections, or this generator's core) did not keep up with the rate",
                self.connections
            );
        }
        for n in &self.notes {
            let _ = write!(s, "\nloadgen: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 90.0), 900);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 99.9), 7);
        // 10 values: p99 is the largest, p50 the 5th.
        let w: Vec<u32> = (1..=10).collect();
        assert_eq!((percentile(&w, 50.0), percentile(&w, 99.0)), (5, 10));
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut v = vec![4, 1, 3, 2];
        let s = summarize(&mut v);
        assert_eq!(v, [1, 2, 3, 4]);
        assert_eq!((s.mean, s.max, s.p50, s.p99), (2.5, 4, 2, 4));
        assert!((s.stdev - (5.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert_eq!(summarize(&mut []), Latency::default());
    }

    #[test]
    fn status_errors_count_as_completed() {
        let mut t = Tally::default();
        t.complete(200, 40, 27_499);
        t.complete(401, 60, 1_000_000);
        t.complete(503, 10, u64::MAX);
        assert_eq!(t.latencies, [27, 1000, u32::MAX]);
        assert_eq!(t.errors.status, 2);
        assert_eq!(t.bytes, 110);
    }

    #[test]
    fn json_shape() {
        let mut tally = Tally::default();
        tally.complete(200, 5, 10_000);
        tally.complete(401, 5, 30_000);
        tally.late_sends = 1;
        tally.max_queue = 3;
        tally.errors.count(ErrorKind::Timeout);
        let latency = summarize(&mut tally.latencies);
        let r = Report {
            tally,
            latency,
            duration_us: 4_000_000,
            target_rps: 16000.0,
            connections: 32,
            left_queued: 0,
            left_in_flight: 0,
            notes: vec![],
        };
        assert_eq!(
            r.json(),
            "{\"requests\":2,\"duration_us\":4000000,\"bytes\":10,\
             \"errors\":{\"connect\":0,\"read\":0,\"write\":0,\"status\":1,\"timeout\":1},\
             \"latency_us\":{\"mean\":20.0,\"stdev\":14.1,\"max\":30,\"p50\":10,\"p90\":30,\"p99\":30,\"p999\":30},\
             \"target_rps\":16000,\"late_sends\":1,\"max_queue\":3}"
        );
    }
}
