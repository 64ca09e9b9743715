//! A fixed-bucket histogram of atomics with a single writer.
//!
//! Owns: bucket counts, the sum and the count of one series. Invariant: only one thread
//! observes (load + store, no locked instruction); any thread may read. A reader can see
//! a sum one observation ahead of the buckets: Prometheus tolerates that, a scrape never
//! waits. Must not touch: anything else.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the turn-time buckets, ns: 10 µs to 0.5 s (then +Inf).
pub const TURN_BUCKETS_NS: [u64; 10] = [
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
];

/// Counts per bucket (not cumulative; the last is +Inf), plus sum and count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; TURN_BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Record one value (owner only).
    pub fn observe(&self, ns: u64) {
        let i = TURN_BUCKETS_NS.partition_point(|&le| le < ns);
        bump(&self.buckets[i]);
        self.sum_ns
            .store(self.sum_ns.load(Ordering::Relaxed) + ns, Ordering::Relaxed);
        bump(&self.count);
    }

    /// Cumulative counts for each bound in `TURN_BUCKETS_NS`, then +Inf.
    pub fn cumulative(&self) -> [u64; TURN_BUCKETS_NS.len() + 1] {
        let mut out = [0; TURN_BUCKETS_NS.len() + 1];
        let mut acc = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            acc += b.load(Ordering::Relaxed);
            *o = acc;
        }
        out
    }

    /// Sum of the observations, ns.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.load(Ordering::Relaxed)
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

fn bump(a: &AtomicU64) {
    a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        for ns in [1, 10_000, 10_001, 600_000_000] {
            h.observe(ns);
        }
        let c = h.cumulative();
        assert_eq!(c[0], 2, "1 ns and exactly 10 µs are ≤ 10 µs");
        assert_eq!(c[1], 3);
        assert_eq!(c[TURN_BUCKETS_NS.len() - 1], 3);
        assert_eq!(c[TURN_BUCKETS_NS.len()], 4, "+Inf holds everything");
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_ns(), 1 + 10_000 + 10_001 + 600_000_000);
    }
}
