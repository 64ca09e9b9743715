//! The broker's response to the global memory budget (`memory_limit`).
//!
//! Owns: this shard's current [`MemoryPressure`] and the accounted bytes the driver last
//! reported, and what each level changes in the broker: at [`MemoryPressure::Refuse`] new
//! connections get CONNACK 0x97 (3.x: 3, server unavailable) and new subscriptions 0x97
//! (3.x: 0x80); at [`MemoryPressure::Full`] session queues take nothing more (deliveries
//! that would queue are dropped and counted). Reading publishers is paused by the driver,
//! which owns the sockets. Invariant: the per-message path is unchanged: the `Full` level
//! works by lowering the queue bound it already checks. Must not touch: sockets, the
//! accounting itself (the driver walks its connections and reports a figure).

use super::{session_limits, Broker};

/// How close the broker is to `memory_limit`, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum MemoryPressure {
    /// Under 90 %.
    #[default]
    Normal,
    /// 90 %: publishers are not read (TCP back-pressure); subscribers still are, so
    /// their acknowledgements free memory.
    PausePublishers,
    /// 95 %: new connections and new subscriptions are refused as well.
    Refuse,
    /// 100 %: nothing more is queued.
    Full,
}

impl MemoryPressure {
    /// The level for `used` bytes out of `limit` (0: no limit).
    pub fn of(used: u64, limit: u64) -> MemoryPressure {
        if limit == 0 {
            return MemoryPressure::Normal;
        }
        let per_mille = used.saturating_mul(1000) / limit;
        match per_mille {
            0..=899 => MemoryPressure::Normal,
            900..=949 => MemoryPressure::PausePublishers,
            950..=999 => MemoryPressure::Refuse,
            _ => MemoryPressure::Full,
        }
    }
}

impl<X> Broker<X> {
    /// The driver's latest accounting: `used` bytes broker-wide (as last walked, for the
    /// figures), at `level` (from the driver's estimate, which may run ahead of `used`).
    pub fn set_memory(&mut self, used: u64, level: MemoryPressure) {
        self.memory_used = used;
        if level == self.pressure {
            return;
        }
        if self.shard_id == 0 || level > self.pressure {
            crate::log_at!(
                crate::log::Level::Warning,
                "shard {}: memory {} MiB of memory_limit {} MiB: {:?}",
                self.shard_id,
                used >> 20,
                self.cfg.limits.memory_limit >> 20,
                level
            );
        }
        self.limits = session_limits(&self.cfg);
        if level == MemoryPressure::Full {
            self.limits.queue_max = 0;
        }
        self.pressure = level;
    }

    /// The current level.
    pub fn memory_pressure(&self) -> MemoryPressure {
        self.pressure
    }

    /// Bytes of retained messages held by this shard's replica: payloads plus a
    /// message's fixed overhead each (the payloads are shared by every replica, so only
    /// shard 0 counts this in the budget).
    pub fn retained_budget_bytes(&self) -> usize {
        self.retained.bytes() + self.retained.len() * 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_share_of_the_limit() {
        assert_eq!(MemoryPressure::of(10, 0), MemoryPressure::Normal);
        assert_eq!(MemoryPressure::of(899, 1000), MemoryPressure::Normal);
        assert_eq!(
            MemoryPressure::of(900, 1000),
            MemoryPressure::PausePublishers
        );
        assert_eq!(MemoryPressure::of(950, 1000), MemoryPressure::Refuse);
        assert_eq!(MemoryPressure::of(1000, 1000), MemoryPressure::Full);
        assert_eq!(MemoryPressure::of(u64::MAX, 1000), MemoryPressure::Full);
    }
}
