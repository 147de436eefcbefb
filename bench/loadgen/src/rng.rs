//! The arrival schedule: Poisson arrivals, i.e. exponential inter-arrival times, from a
//! small xorshift64* generator (no `rand` crate).

/// xorshift64* (Vigna): 64 bits of state, good enough for inter-arrival times.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads a small seed over the state, which must not be 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1]: its logarithm is finite.
        -(1.0 - self.next_f64()).ln() * mean
    }
}

/// Scheduled send times, in nanoseconds from the start of the run.
pub struct Schedule {
    rng: Rng,
    mean_ns: f64,
    /// Kept in f64 so that rounding each time to whole nanoseconds does not drift.
    next: f64,
}

impl Schedule {
    pub fn new(rate: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mean_ns = 1e9 / rate;
        let next = rng.exp(mean_ns);
        Schedule { rng, mean_ns, next }
    }

    /// The next scheduled time.
    pub fn peek(&self) -> u64 {
        // Saturating float-to-int conversion.
        self.next as u64
    }

    /// The next scheduled time, and moves on to the one after.
    pub fn advance(&mut self) -> u64 {
        let t = self.peek();
        self.next += self.rng.exp(self.mean_ns);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_mean() {
        let rate = 16_000.0;
        let n = 100_000;
        let mut s = Schedule::new(rate, 42);
        let mut prev = 0;
        let mut gaps = Vec::with_capacity(n);
        for _ in 0..n {
            let t = s.advance();
            assert!(t >= prev);
            gaps.push((t - prev) as f64);
            prev = t;
        }
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let want = 1e9 / rate;
        assert!(
            (mean / want - 1.0).abs() < 0.02,
            "mean {mean} ns, want {want}"
        );
        // Exponential: the standard deviation equals the mean, and about e^-1 of the
        // gaps exceed it.
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (var.sqrt() / want - 1.0).abs() < 0.05,
            "stdev {}",
            var.sqrt()
        );
        let above = gaps.iter().filter(|&&g| g > want).count() as f64 / n as f64;
        assert!(
            (above - (-1.0f64).exp()).abs() < 0.01,
            "share above the mean {above}"
        );
    }

    #[test]
    fn seeds_differ_and_repeat() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(1);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(2);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut z = Rng::new(0);
        assert_ne!(z.next_u64(), 0);
        let mut r = Rng::new(3);
        assert!((0..10_000).all(|_| (0.0..1.0).contains(&r.next_f64())));
    }
}
