//! Admission at accept: whether a new socket may become a connection at all.
//!
//! Owns: this shard's handle on the broker-wide [`AdmissionBoard`]: the count of open
//! connections (one atomic: one `fetch_add` per accept, one `fetch_sub` per close) and the
//! per-address rate counters (a fixed table of atomics, see [`RateTable`]). Both are
//! shared by every shard, so `max_connections` and `max_connection_rate` are node-wide
//! limits however the kernel spreads accepts over the shards' listening sockets.
//! Invariant: every admitted socket is counted exactly once until
//! [`Admission::release`] is called for it, whichever shard closes it (a handed-over
//! connection moves without touching the count); the rate table has a fixed size and
//! never allocates after start. No lock: only atomics, touched once per accept, never on
//! the message path. Must not touch: MQTT, the broker, the connection table.
//!
//! A refused socket is closed at once, before any byte is read, as Mosquitto does past its
//! `max_connections`: there is no CONNECT yet to answer.
#![forbid(unsafe_code)]

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::config::limits::ResourceLimits;

/// Slots per row of the rate table (two rows): 2 × 32,768 × 8 bytes = 512 KiB, allocated
/// only once `max_connection_rate` is set (at start or by a reload). Up to 65,536
/// addresses are limited in one second; past that, new ones are not (see [`RateTable`]).
pub const RATE_SLOTS_PER_ROW: usize = 32_768;

/// What every shard's admission shares: made once at start-up, read and written by the
/// shards with atomics only.
#[derive(Debug, Default)]
pub struct AdmissionBoard {
    /// Connections open broker-wide.
    open: AtomicUsize,
    /// Accepts per source address in the current second (empty when there is no limit).
    rate: RateTable,
}

impl AdmissionBoard {
    /// A board for a broker whose limits are `limits` (the rate table is sized then).
    pub fn new(limits: &ResourceLimits) -> Arc<AdmissionBoard> {
        Arc::new(AdmissionBoard {
            open: AtomicUsize::new(0),
            rate: RateTable::new(limits.max_connection_rate > 0),
        })
    }
}

/// Accepts per source address per second, node-wide and lock-free: two rows of
/// [`RATE_SLOTS_PER_ROW`] atomics, an address hashed (per-process random keys) to one slot
/// in each. A slot packs the second it counts (24 bits), a tag of the address (16 bits of
/// another hash) and the count (24 bits). An address counts in its first row's slot when
/// that slot is its own or stale (from a past second), else in its second row's; when both
/// hold other addresses this second it is not counted and so not limited. That fails open
/// on purpose: an address is only ever refused for its own accepts (bar a tag collision,
/// 1 in 65,536 among colliding addresses), never for a flooder's, and the table never
/// grows whatever the number of addresses (the old per-shard map needed a cap and
/// stopped limiting new addresses when full, the same failure mode).
///
/// The slots are made the first time a limit is set (at start, or by the first reload that
/// sets one): a `OnceLock`, so every shard sees the same table and a read after that is
/// one atomic load.
#[derive(Debug, Default)]
struct RateTable {
    slots: OnceLock<Box<[AtomicU64]>>,
    keys: [std::collections::hash_map::RandomState; 2],
}

/// Bits of a rate slot: second (high 24), tag (16), count (low 24).
const RATE_COUNT_BITS: u32 = 24;
const RATE_TAG_BITS: u32 = 16;

impl RateTable {
    fn new(enabled: bool) -> RateTable {
        let table = RateTable::default();
        if enabled {
            table.slots();
        }
        table
    }

    /// The slots, made on first use.
    fn slots(&self) -> &[AtomicU64] {
        self.slots.get_or_init(|| {
            (0..2 * RATE_SLOTS_PER_ROW)
                .map(|_| AtomicU64::new(0))
                .collect()
        })
    }

    /// Count an accept from `peer` in second `sec`: its accepts this second, this one
    /// included, or None when it could not be counted (both its slots taken).
    fn count(&self, peer: IpAddr, sec: u64) -> Option<u32> {
        let slots = self.slots();
        let count_mask = (1u64 << RATE_COUNT_BITS) - 1;
        let sec = sec & ((1 << (64 - RATE_COUNT_BITS - RATE_TAG_BITS)) - 1);
        for (row, key) in self.keys.iter().enumerate() {
            let hash = key.hash_one(peer);
            let tag = hash >> (64 - RATE_TAG_BITS);
            let stamp = (sec << RATE_TAG_BITS | tag) << RATE_COUNT_BITS;
            let i = row * RATE_SLOTS_PER_ROW + (hash as usize % RATE_SLOTS_PER_ROW);
            let slot = slots.get(i)?;
            let bump = |v: u64| match v & !count_mask == stamp {
                true => Some(stamp | ((v & count_mask) + 1).min(count_mask)),
                // Never used (count 0), or counting a past second: take it over.
                false if v & count_mask == 0 || v >> (RATE_TAG_BITS + RATE_COUNT_BITS) != sec => {
                    Some(stamp | 1)
                }
                false => None, // another address's slot this second
            };
            if let Ok(before) = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, bump) {
                return bump(before).map(|v| (v & count_mask) as u32);
            }
        }
        None
    }
}

/// Why a socket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    MaxConnections,
    /// Its address connected more than `max_connection_rate` times this second, counted
    /// over all shards.
    RateLimited,
}

/// This shard's admission control.
#[derive(Debug)]
pub struct Admission {
    board: Arc<AdmissionBoard>,
    max_open: usize,
    rate_per_s: u32,
}

impl Admission {
    /// Admission under `limits`, counting on the broker-wide `board`.
    pub fn new(board: Arc<AdmissionBoard>, limits: &ResourceLimits) -> Admission {
        Admission {
            board,
            max_open: limits.max_connections,
            rate_per_s: limits.max_connection_rate,
        }
    }

    /// May a socket from `peer`, accepted on listener `listener`, become a connection? If
    /// so it is counted until [`Admission::release`].
    ///
    /// `listener` is the listener's index, for limits per listener (the listener's own
    /// `max_connections` is checked when its transport is made, right after this).
    ///
    /// `now_ms` must count from the same epoch on every shard (the shards share one).
    pub fn admit(&mut self, peer: IpAddr, listener: usize, now_ms: u64) -> Result<(), Refused> {
        let _ = listener;
        if self.rate_per_s > 0 {
            let seen = self.board.rate.count(peer, now_ms / 1000).unwrap_or(0);
            if seen > self.rate_per_s {
                return Err(Refused::RateLimited);
            }
        }
        let before = self.board.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.max_open {
            self.board.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::MaxConnections);
        }
        Ok(())
    }

    /// Take `limits`' `max_connections` and `max_connection_rate` (a reload). Connections
    /// open stay open and stay counted; a new limit applies from the next accept. Each
    /// shard is told, at its own turn boundary, so for one turn shards may differ.
    pub fn reconfigure(&mut self, limits: &ResourceLimits) {
        self.max_open = limits.max_connections;
        self.rate_per_s = limits.max_connection_rate;
    }

    /// An admitted connection has ended.
    pub fn release(&mut self) {
        self.board.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open broker-wide.
    pub fn open(&self) -> usize {
        self.board.open.load(Ordering::Relaxed)
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
        let l = limits(2, 0);
        let board = AdmissionBoard::new(&l);
        let mut a = Admission::new(board.clone(), &l);
        let mut b = Admission::new(board.clone(), &l);
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(a.admit(ip, 0, 0), Ok(()));
        assert_eq!(b.admit(ip, 0, 0), Ok(()));
        assert_eq!(a.admit(ip, 0, 0), Err(Refused::MaxConnections));
        assert_eq!(a.open(), 2, "a refusal is not counted");
        b.release();
        assert_eq!(a.admit(ip, 0, 0), Ok(()));
    }

    #[test]
    fn rate_is_per_address_per_second() {
        let l = limits(usize::MAX, 2);
        let mut a = Admission::new(AdmissionBoard::new(&l), &l);
        let (x, y) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(a.admit(x, 0, 1_000).is_ok());
        assert!(a.admit(x, 0, 1_500).is_ok());
        assert_eq!(a.admit(x, 0, 1_900), Err(Refused::RateLimited));
        assert!(a.admit(y, 0, 1_900).is_ok(), "another address");
        assert!(a.admit(x, 0, 2_000).is_ok(), "the next second");
    }

    /// Two shards share one rate: 2 per second from an address means 2 in total, however
    /// the accepts are spread (each shard used to allow the full rate on its own).
    #[test]
    fn rate_is_node_wide() {
        let l = limits(usize::MAX, 2);
        let board = AdmissionBoard::new(&l);
        let mut shards = [
            Admission::new(board.clone(), &l),
            Admission::new(board.clone(), &l),
        ];
        let x = IpAddr::from([10, 0, 0, 7]);
        assert!(shards[0].admit(x, 0, 5_000).is_ok());
        assert!(shards[1].admit(x, 0, 5_100).is_ok());
        assert_eq!(shards[0].admit(x, 0, 5_200), Err(Refused::RateLimited));
        assert_eq!(shards[1].admit(x, 0, 5_300), Err(Refused::RateLimited));
        assert!(shards[1].admit(x, 0, 6_000).is_ok(), "the next second");
    }

    /// A reload sets, changes and lifts the rate; the table is made when first needed and
    /// a reload never resets what was counted (the second goes on).
    #[test]
    fn a_reload_sets_changes_and_lifts_the_rate() {
        let none = limits(usize::MAX, 0);
        let board = AdmissionBoard::new(&none);
        let mut a = Admission::new(board.clone(), &none);
        let x = IpAddr::from([10, 0, 0, 9]);
        assert!((0..10).all(|_| a.admit(x, 0, 1_000).is_ok()), "no limit");
        a.reconfigure(&limits(usize::MAX, 2));
        assert!(a.admit(x, 0, 2_000).is_ok());
        assert!(a.admit(x, 0, 2_100).is_ok());
        assert_eq!(a.admit(x, 0, 2_200), Err(Refused::RateLimited));
        // A refused accept counts too (the table counts attempts): 4 so far with this one.
        a.reconfigure(&limits(usize::MAX, 4));
        assert!(a.admit(x, 0, 2_300).is_ok(), "a higher rate, same second");
        assert_eq!(a.admit(x, 0, 2_400), Err(Refused::RateLimited));
        a.reconfigure(&limits(1, 0));
        assert!(
            a.admit(x, 0, 2_500).is_err(),
            "max_connections reloaded too"
        );
        assert_eq!(a.open(), 10 + 3, "refusals are not counted");
    }

    /// Many addresses each within the rate are never refused, though they share the
    /// table's slots; the refused flooder does not take them down with it.
    #[test]
    fn many_addresses_within_the_rate_pass_beside_a_flooder() {
        let l = limits(usize::MAX, 3);
        let mut a = Admission::new(AdmissionBoard::new(&l), &l);
        let flooder = IpAddr::from([192, 0, 2, 1]);
        let refused = (0..1_000)
            .filter(|_| a.admit(flooder, 0, 9_000).is_err())
            .count();
        assert_eq!(refused, 997);
        let mut innocent_refused = 0;
        for i in 0..20_000u32 {
            let ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            for _ in 0..3 {
                innocent_refused += usize::from(a.admit(ip, 0, 9_500).is_err());
            }
        }
        // Only a tag collision (1 in 65,536 of the addresses sharing a slot) could
        // refuse one.
        assert!(
            innocent_refused <= 3,
            "{innocent_refused} innocent refusals"
        );
    }
}
