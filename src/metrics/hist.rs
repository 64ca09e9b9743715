//! A fixed-bucket histogram of atomics with a single writer.
//!
//! Owns: bucket counts, the sum and the count of one series, and the (static) bucket
//! bounds it was made with. Invariant: only one thread observes (load + store, no locked
//! instruction); any thread may read. A reader can see a sum one observation ahead of the
//! buckets: Prometheus tolerates that, a scrape never waits. Must not touch: anything else.

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
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    /// The turn-time histogram (`TURN_BUCKETS_NS`).
    fn default() -> Self {
        Histogram::new(&TURN_BUCKETS_NS)
    }
}

impl Histogram {
    /// A histogram with these upper bounds (ascending), plus +Inf.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one value (owner only).
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&le| le < v);
        bump(&self.buckets[i]);
        self.sum
            .store(self.sum.load(Ordering::Relaxed) + v, Ordering::Relaxed);
        bump(&self.count);
    }

    /// The upper bounds, without +Inf.
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Cumulative counts for each bound in `bounds()`, then +Inf.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        self.buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect()
    }

    /// Sum of the observations (in the unit observed: ns for times).
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
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
        assert_eq!(c.len(), TURN_BUCKETS_NS.len() + 1);
        assert_eq!(c[0], 2, "1 ns and exactly 10 µs are ≤ 10 µs");
        assert_eq!(c[1], 3);
        assert_eq!(c[TURN_BUCKETS_NS.len() - 1], 3);
        assert_eq!(c[TURN_BUCKETS_NS.len()], 4, "+Inf holds everything");
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), 1 + 10_000 + 10_001 + 600_000_000);
    }

    #[test]
    fn other_bounds_are_kept() {
        static B: [u64; 2] = [1, 4];
        let h = Histogram::new(&B);
        for v in [1, 2, 5] {
            h.observe(v);
        }
        assert_eq!(h.bounds(), &B);
        assert_eq!(h.cumulative(), vec![1, 2, 3]);
    }
}
