//! Where the simulation's choices come from: a seeded PRNG, or a fuzzer's bytes.
//!
//! Owns: turning a seed (or an input) into a stream of choices. Invariant: the same seed or
//! the same bytes give the same stream on every machine and run; nothing here reads a
//! clock or the OS. Must not touch: the world it drives.

/// A stream of choices.
#[derive(Debug, Clone)]
pub enum Source {
    /// SplitMix64 from a seed: small, fast, and good enough for schedules.
    Seeded(u64),
    /// A fuzzer's input read byte by byte; once it runs out every choice is 0.
    Bytes {
        /// The input.
        data: Vec<u8>,
        /// Next byte to read.
        at: usize,
    },
}

impl Source {
    /// Choices from `seed`.
    pub fn seeded(seed: u64) -> Source {
        Source::Seeded(seed)
    }

    /// Choices from a fuzzer's `data`.
    pub fn bytes(data: &[u8]) -> Source {
        Source::Bytes {
            data: data.to_vec(),
            at: 0,
        }
    }

    /// True once a byte source has been read to its end (a seeded one never ends).
    pub fn exhausted(&self) -> bool {
        match self {
            Source::Seeded(_) => false,
            Source::Bytes { data, at } => *at >= data.len(),
        }
    }

    /// The next raw 64-bit choice.
    pub fn next_u64(&mut self) -> u64 {
        match self {
            Source::Seeded(state) => {
                *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
            Source::Bytes { data, at } => {
                // Two bytes per choice: enough range for every decision the world makes,
                // and a fuzzer's mutation of one byte changes one decision.
                let mut v = 0u64;
                for _ in 0..2 {
                    v = (v << 8) | u64::from(data.get(*at).copied().unwrap_or(0));
                    *at += 1;
                }
                v
            }
        }
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// An index into a collection of `len` elements.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_seeds_differ() {
        let a: Vec<u64> = {
            let mut s = Source::seeded(7);
            (0..8).map(|_| s.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut s = Source::seeded(7);
            (0..8).map(|_| s.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut s = Source::seeded(8);
            (0..8).map(|_| s.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn byte_source_runs_out_into_zeroes() {
        let mut s = Source::bytes(&[1, 2, 3]);
        assert_eq!(s.next_u64(), 0x0102);
        assert!(!s.exhausted());
        assert_eq!(s.next_u64(), 0x0300);
        assert!(s.exhausted());
        assert_eq!(s.below(10), 0);
        assert!(s.chance(1), "an exhausted source takes the first option");
    }
}
