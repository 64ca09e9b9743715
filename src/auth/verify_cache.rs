#![forbid(unsafe_code)]
//! A per-shard cache of successful password checks, so a reconnecting client does not pay
//! for PBKDF2 again.
//!
//! Owns: user → a keyed tag of (user, password) for the last password that verified, with
//! the password-file generation it verified against. Invariants: only successes are stored
//! (a failure always costs a full hash, so guessing is never cheaper than the first try);
//! a tag is HMAC-SHA-256 under a random per-cache key, truncated to 128 bits, so the cache
//! neither holds a password nor lets one be found from memory faster than from the file; an
//! entry from an older generation never answers; at most [`VERIFY_CACHE_ENTRIES_MAX`]
//! entries. Must not touch: the password file, threads, clocks.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Most cached successes per shard; past it the cache is cleared and refills.
pub const VERIFY_CACHE_ENTRIES_MAX: usize = 4096;
/// Bytes of tag kept per entry.
const TAG_BYTES: usize = 16;
/// Bytes of the random HMAC key.
const KEY_BYTES: usize = 32;

type Tag = [u8; TAG_BYTES];

/// Successful (user, password) checks, per password-file generation.
pub struct VerifyCache {
    key: [u8; KEY_BYTES],
    entries: HashMap<String, (u64, Tag)>,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyCache({} entries)", self.entries.len())
    }
}

impl VerifyCache {
    /// An empty cache with a fresh random key.
    pub fn new() -> Result<VerifyCache, getrandom::Error> {
        let mut key = [0u8; KEY_BYTES];
        getrandom::getrandom(&mut key)?;
        Ok(VerifyCache::with_key(key))
    }

    /// An empty cache with a given key (tests, fuzzing).
    pub fn with_key(key: [u8; KEY_BYTES]) -> VerifyCache {
        VerifyCache {
            key,
            entries: HashMap::new(),
        }
    }

    fn tag(&self, user: &str, password: &[u8]) -> Tag {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return [0; TAG_BYTES];
        };
        // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(password);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// Did exactly this (user, password) verify against password-file `generation`?
    /// `false` means "ask the verifier", never "refuse".
    pub fn hit(&self, generation: u64, user: &str, password: &[u8]) -> bool {
        match self.entries.get(user) {
            Some((g, t)) if *g == generation => bool::from(self.tag(user, password).ct_eq(t)),
            _ => false,
        }
    }

    /// Record a success reported by the verifier for `generation`.
    pub fn insert(&mut self, generation: u64, user: &str, password: &[u8]) {
        if self.entries.len() >= VERIFY_CACHE_ENTRIES_MAX && !self.entries.contains_key(user) {
            self.entries.clear();
        }
        let tag = self.tag(user, password);
        self.entries.insert(user.to_string(), (generation, tag));
    }

    /// Forget `user` (after a failed check, so a changed password is not served stale).
    pub fn forget(&mut self, user: &str) {
        self.entries.remove(user);
    }

    /// Cached entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_password_and_generation_hit() {
        let mut c = VerifyCache::with_key([1; KEY_BYTES]);
        c.insert(3, "alice", b"pw");
        assert!(c.hit(3, "alice", b"pw"));
        assert!(!c.hit(3, "alice", b"pW"));
        assert!(!c.hit(4, "alice", b"pw"), "a reload invalidates");
        assert!(!c.hit(3, "alic", b"epw"), "user/password boundary matters");
        c.forget("alice");
        assert!(!c.hit(3, "alice", b"pw"));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = VerifyCache::with_key([2; KEY_BYTES]);
        for i in 0..VERIFY_CACHE_ENTRIES_MAX + 10 {
            c.insert(1, &format!("u{i}"), b"pw");
            assert!(c.len() <= VERIFY_CACHE_ENTRIES_MAX);
        }
        assert!(c.hit(1, &format!("u{}", VERIFY_CACHE_ENTRIES_MAX + 9), b"pw"));
    }
}
