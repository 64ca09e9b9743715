#![forbid(unsafe_code)]
//! Failed logins counted per source address, turned into a small bounded delay before the
//! refusing CONNACK, so passwords cannot be guessed at line rate.
//!
//! Owns: source → (recent failures, time of the last one). IPv4 addresses count alone; IPv6
//! addresses count per /64, the block one host usually controls. Invariants: the delay is 0
//! for the first [`LOGIN_FAILURES_FREE`] failures, then doubles from
//! [`LOGIN_DELAY_BASE_MS`] up to [`LOGIN_DELAY_MAX_MS`]; a source quiet for
//! [`LOGIN_FAILURE_MEMORY_MS`] is forgotten; at most [`LOGIN_SOURCES_MAX`] sources are
//! remembered (past it the oldest expired, else an arbitrary one, is dropped). A success
//! clears its source. Pure: the caller passes the time (per-shard, so a guesser spread over
//! shards is slowed on each). Must not touch: sockets, timers, the password file.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures per source before any delay (typos are free).
pub const LOGIN_FAILURES_FREE: u32 = 3;
/// First delay, after the free failures.
pub const LOGIN_DELAY_BASE_MS: u64 = 100;
/// Longest delay before a refusal.
pub const LOGIN_DELAY_MAX_MS: u64 = 5_000;
/// A source with no failure for this long starts again from zero.
pub const LOGIN_FAILURE_MEMORY_MS: u64 = 10 * 60 * 1000;
/// Most sources remembered per shard.
pub const LOGIN_SOURCES_MAX: usize = 65_536;

/// The key a source address is counted under.
fn source(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // The top 64 bits, tagged so no IPv6 /64 equals an IPv4 address.
        IpAddr::V6(v6) => (u128::from(v6) & !u128::from(u64::MAX)) | 1,
    }
}

/// Per-shard failure counts.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    sources: HashMap<u128, (u32, u64)>,
}

impl LoginThrottle {
    /// Nothing remembered.
    pub fn new() -> LoginThrottle {
        LoginThrottle::default()
    }

    /// Record a failed login from `ip` at `now_ms`; the delay to wait before refusing.
    pub fn on_failure(&mut self, ip: IpAddr, now_ms: u64) -> u64 {
        let key = source(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= LOGIN_SOURCES_MAX {
            self.evict(now_ms);
        }
        let entry = self.sources.entry(key).or_insert((0, now_ms));
        if now_ms.saturating_sub(entry.1) > LOGIN_FAILURE_MEMORY_MS {
            *entry = (0, now_ms);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now_ms;
        delay_ms(entry.0)
    }

    /// A successful login from `ip`: its count starts again.
    pub fn on_success(&mut self, ip: IpAddr) {
        self.sources.remove(&source(ip));
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// None remembered.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn evict(&mut self, now_ms: u64) {
        self.sources
            .retain(|_, (_, last)| now_ms.saturating_sub(*last) <= LOGIN_FAILURE_MEMORY_MS);
        if self.sources.len() >= LOGIN_SOURCES_MAX {
            if let Some(k) = self.sources.keys().next().copied() {
                self.sources.remove(&k);
            }
        }
    }
}

/// The delay after `failures` failures.
fn delay_ms(failures: u32) -> u64 {
    let Some(over) = failures.checked_sub(LOGIN_FAILURES_FREE + 1) else {
        return 0;
    };
    LOGIN_DELAY_BASE_MS
        .saturating_mul(1u64 << over.min(32))
        .min(LOGIN_DELAY_MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_a_cap_and_a_success_or_silence_resets() {
        let mut t = LoginThrottle::new();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let delays: Vec<u64> = (0..10).map(|i| t.on_failure(ip, i)).collect();
        assert_eq!(delays, [0, 0, 0, 100, 200, 400, 800, 1600, 3200, 5000]);
        assert_eq!(t.on_failure(ip, 20), 5000);
        t.on_success(ip);
        assert_eq!(t.on_failure(ip, 30), 0);
        for i in 0..5 {
            t.on_failure(ip, 40 + i);
        }
        assert_eq!(
            t.on_failure(ip, 50 + LOGIN_FAILURE_MEMORY_MS),
            0,
            "forgotten"
        );
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(t.on_failure(other, 60), 0, "sources count apart");
    }

    #[test]
    fn ipv6_counts_per_64_and_memory_is_bounded() {
        let mut t = LoginThrottle::new();
        for i in 0..4u64 {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().expect("ip");
            t.on_failure(ip, 0);
        }
        let same_64: IpAddr = "2001:db8::ffff".parse().expect("ip");
        assert_eq!(t.on_failure(same_64, 1), 200, "one /64, one count");
        let mut t = LoginThrottle::new();
        for i in 0..(LOGIN_SOURCES_MAX as u32 + 100) {
            t.on_failure(IpAddr::from(i.to_be_bytes()), 0);
            assert!(t.len() <= LOGIN_SOURCES_MAX);
        }
    }
}
