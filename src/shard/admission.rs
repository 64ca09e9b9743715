//! Admission at accept: whether a new socket may become a connection at all.
//!
//! Owns: this shard's view of the broker-wide count of open connections (one atomic
//! shared by every shard, the only shared counter on this path: one `fetch_add` per
//! accept, one `fetch_sub` per close), and this shard's table of recent accepts per source
//! address for the rate limit. Invariant: every admitted socket is counted exactly once
//! until [`Admission::release`] is called for it, whichever shard closes it (a handed-over
//! connection moves without touching the count); the rate table never holds more than
//! [`RATE_TABLE_MAX`] addresses. Must not touch: MQTT, the broker, the connection table.
//!
//! A refused socket is closed at once, before any byte is read, as Mosquitto does past its
//! `max_connections`: there is no CONNECT yet to answer.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::limits::ResourceLimits;

/// Source addresses tracked by the rate limit per shard; past it, entries of past
/// seconds are dropped, and if the table is still full the limit is not applied to new
/// addresses (a flood from that many addresses is a job for a firewall).
pub const RATE_TABLE_MAX: usize = 65_536;

/// Why a socket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    MaxConnections,
    /// Its address connected more than `max_connection_rate` times this second.
    RateLimited,
}

/// This shard's admission control.
#[derive(Debug)]
pub struct Admission {
    open: Arc<AtomicUsize>,
    max_open: usize,
    rate_per_s: u32,
    /// Address → (second, accepts in that second).
    recent: HashMap<IpAddr, (u64, u32)>,
}

impl Admission {
    /// Admission under `limits`, counting into the broker-wide `open`.
    pub fn new(open: Arc<AtomicUsize>, limits: &ResourceLimits) -> Admission {
        Admission {
            open,
            max_open: limits.max_connections,
            rate_per_s: limits.max_connection_rate,
            recent: HashMap::new(),
        }
    }

    /// May a socket from `peer`, accepted on listener `listener`, become a connection? If
    /// so it is counted until [`Admission::release`].
    ///
    /// `listener` is the listener's index, for limits per listener (the listener's own
    /// `max_connections` is checked when its transport is made, right after this).
    pub fn admit(&mut self, peer: IpAddr, listener: usize, now_ms: u64) -> Result<(), Refused> {
        let _ = listener;
        if !self.rate_ok(peer, now_ms / 1000) {
            return Err(Refused::RateLimited);
        }
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.max_open {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::MaxConnections);
        }
        Ok(())
    }

    /// An admitted connection has ended.
    pub fn release(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open broker-wide.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Count an accept from `peer` in second `sec`; false when over the rate.
    fn rate_ok(&mut self, peer: IpAddr, sec: u64) -> bool {
        if self.rate_per_s == 0 {
            return true;
        }
        if self.recent.len() >= RATE_TABLE_MAX && !self.recent.contains_key(&peer) {
            self.recent.retain(|_, (s, _)| *s == sec);
            if self.recent.len() >= RATE_TABLE_MAX {
                return true;
            }
        }
        let entry = self.recent.entry(peer).or_insert((sec, 0));
        if entry.0 != sec {
            *entry = (sec, 0);
        }
        entry.1 += 1;
        entry.1 <= self.rate_per_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, rate: u32) -> ResourceLimits {
        ResourceLimits {
            max_connections: max,
            max_connection_rate: rate,
            ..ResourceLimits::default()
        }
    }

    #[test]
    fn counts_are_shared_and_released() {
        let open = Arc::new(AtomicUsize::new(0));
        let mut a = Admission::new(open.clone(), &limits(2, 0));
        let mut b = Admission::new(open.clone(), &limits(2, 0));
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(a.admit(ip, 0, 0), Ok(()));
        assert_eq!(b.admit(ip, 0, 0), Ok(()));
        assert_eq!(a.admit(ip, 0, 0), Err(Refused::MaxConnections));
        assert_eq!(open.load(Ordering::Relaxed), 2, "a refusal is not counted");
        b.release();
        assert_eq!(a.admit(ip, 0, 0), Ok(()));
    }

    #[test]
    fn rate_is_per_address_per_second() {
        let mut a = Admission::new(Arc::new(AtomicUsize::new(0)), &limits(usize::MAX, 2));
        let (x, y) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(a.admit(x, 0, 1_000).is_ok());
        assert!(a.admit(x, 0, 1_500).is_ok());
        assert_eq!(a.admit(x, 0, 1_900), Err(Refused::RateLimited));
        assert!(a.admit(y, 0, 1_900).is_ok(), "another address");
        assert!(a.admit(x, 0, 2_000).is_ok(), "the next second");
    }
}
