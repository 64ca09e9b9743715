//! When to try again, and where: `restart_timeout` back-off and the address list.
//!
//! Owns: Mosquitto's decorrelated-jitter back-off (`wait = min(cap, random(base, 3 ×
//! previous wait))`, reset to `base` after a successful connection) or its constant wait,
//! and the cursor over the bridge's addresses. Invariant: every wait lies in
//! `[base, cap]` (or is the constant); randomness comes from a seed, so tests are exact.
//! Must not touch: clocks (the caller passes times), sockets.

use crate::config::bridge::Restart;

/// Milliseconds per second.
const MS_PER_S: u64 = 1000;

/// The back-off of one bridge.
#[derive(Debug, Clone)]
pub struct Backoff {
    restart: Restart,
    previous_ms: u64,
    rng: u64,
}

impl Backoff {
    /// A back-off for `restart`, its randomness drawn from `seed`.
    pub fn new(restart: Restart, seed: u64) -> Self {
        let mut b = Backoff {
            restart,
            previous_ms: 0,
            rng: seed | 1,
        };
        b.reset();
        b
    }

    /// After a successful connection: the next wait starts from `base` again.
    pub fn reset(&mut self) {
        self.previous_ms = match self.restart {
            Restart::Constant { secs } => u64::from(secs) * MS_PER_S,
            Restart::Jitter { base, .. } => u64::from(base) * MS_PER_S,
        };
    }

    /// The wait before the next attempt, in ms.
    pub fn next_ms(&mut self) -> u64 {
        let (base, cap) = match self.restart {
            Restart::Constant { secs } => return u64::from(secs) * MS_PER_S,
            Restart::Jitter { base, cap } => {
                (u64::from(base) * MS_PER_S, u64::from(cap) * MS_PER_S)
            }
        };
        let high = self.previous_ms.saturating_mul(3).max(base);
        let wait = base + self.random() % (high - base + 1);
        self.previous_ms = wait.min(cap);
        self.previous_ms
    }

    /// xorshift64*: enough to spread reconnects, not for secrets.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_constant() {
        let mut b = Backoff::new(Restart::Constant { secs: 20 }, 7);
        assert_eq!((b.next_ms(), b.next_ms()), (20_000, 20_000));
    }

    #[test]
    fn jitter_stays_between_base_and_cap_grows_and_resets() {
        let mut b = Backoff::new(Restart::Jitter { base: 5, cap: 30 }, 42);
        let waits: Vec<u64> = (0..50).map(|_| b.next_ms()).collect();
        assert!(
            waits.iter().all(|w| (5_000..=30_000).contains(w)),
            "{waits:?}"
        );
        assert!(waits.iter().any(|&w| w > 15_000), "it grows: {waits:?}");
        assert!(
            waits[0] <= 15_000,
            "first wait is at most 3 × base: {}",
            waits[0]
        );
        b.reset();
        assert!(b.next_ms() <= 15_000);
    }
}
