//! A fast hash with a random seed per map, for maps keyed by what clients choose.
//!
//! Owns: [`SeededHash`] (the map's seed) and [`SeededHasher`]. Used where keys come from
//! the network and lookups are on a hot path: the topic trie's levels (any client can
//! subscribe) and the log shadow's sessions (client ids, looked up for every delivery
//! record). A fixed-seed hash would let a client craft colliding keys offline and turn a
//! map's lookups linear; SipHash (std's default) is safe but costs ~15–20 ns for a short
//! key, several times this. Must not be relied on for an iteration order: the seed differs
//! per map and per run, so whatever needs an order sorts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A per-map random seed for [`SeededHasher`].
#[derive(Debug, Clone)]
pub struct SeededHash {
    seed: u64,
}

impl SeededHash {
    /// A map's hash with a seed of its own.
    pub fn new() -> Self {
        // std's RandomState draws its keys from the OS once per thread, then increments.
        SeededHash {
            seed: RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl Default for SeededHash {
    fn default() -> Self {
        SeededHash::new()
    }
}

impl BuildHasher for SeededHash {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher { h: self.seed }
    }
}

/// A small word-at-a-time hasher (folded 64×64→128 multiply, as in wyhash/foldhash):
/// a few ns for a typical 4–16 byte key, where SipHash-1-3 takes ~15–20 ns.
#[derive(Debug)]
pub struct SeededHasher {
    h: u64,
}

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
const MUL2: u64 = 0xa076_1d64_78bd_642f;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for SeededHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.h = fold_mul(self.h ^ u64::from_le_bytes(w), MUL);
        }
        let tail = chunks.remainder();
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        let len_tag = (bytes.len() as u64).rotate_left(56);
        self.h = fold_mul(self.h ^ u64::from_le_bytes(w), MUL2 ^ len_tag);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.h = fold_mul(self.h ^ u64::from(i), MUL);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_maps_seed_differently_and_one_map_hashes_alike() {
        let (a, b) = (SeededHash::new(), SeededHash::new());
        assert_eq!(a.hash_one("client-1"), a.hash_one("client-1"));
        assert_ne!(a.hash_one("client-1"), a.hash_one("client-2"));
        // Keys differing only past a word, or only in length, still differ.
        assert_ne!(
            a.hash_one("sensor-000000001"),
            a.hash_one("sensor-000000002")
        );
        assert_ne!(a.hash_one(""), a.hash_one("\0"));
        assert_ne!(
            a.hash_one("client-1"),
            b.hash_one("client-1"),
            "a seed per map (equal only by a 2^-64 chance)"
        );
    }
}
