//! The global memory budget (`memory_limit`): accounting per shard, summed broker-wide.
//!
//! Owns: this shard's slot on the memory board (one atomic per shard, written by its
//! shard only, read by all) and the list of publishers whose reading is paused for memory.
//! Every [`ACCOUNT_INTERVAL_MS`] the shard walks its connections and sessions and adds up
//! what they hold: write buffers and partial packets (their capacity), session queues
//! (message weights), in-flight windows, subscriptions (a measured size per filter level), retained
//! backlogs, and the retained store (shard 0 counts the shared payloads; every shard its
//! own index). The sum over all shards sets the broker's [`MemoryPressure`]. The walk
//! first releases the large write buffers of idle connections ([`TxBuf::trim_idle`]).
//!
//! Between two walks, twice every byte read from a client since the last walk is added to
//! the figure (a conservative guess: a message read is held once as the message and once
//! encoded in a subscriber's buffer), so a fast publisher cannot overshoot the budget in
//! the 100 ms between walks. Each turn stores this shard's figure and sums the board: one store and
//! N loads.
//!
//! Invariant: the walk is O(connections + sessions) once per interval, never per message;
//! the per-message path only meets the result through limits it already checks. Must not
//! touch: MQTT state (it reads the broker and tells it the level), other shards' slots.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::conn::ConnIo;
use crate::broker::memory::MemoryPressure;
use crate::broker::{Broker, Conn};
use crate::metrics::MemoryKind;
use crate::session::Session;
use crate::txbuf::TxBuf;

/// How often a shard accounts its memory.
pub const ACCOUNT_INTERVAL_MS: u64 = 100;
/// How often a shard without a `memory_limit` accounts its memory, for `/metrics` only.
pub const ACCOUNT_UNLIMITED_INTERVAL_MS: u64 = 1_000;
/// Bytes of one in-flight delivery's record (its message is counted by weight).
pub const INFLIGHT_BYTES: u64 = 64;
/// Bytes one retained topic costs in a replica's index, beyond its shared message.
pub const RETAINED_INDEX_BYTES: u64 = 96;

/// Bytes of memory assumed per byte read between two walks.
pub const READ_GROWTH_FACTOR: u64 = 2;

/// Two slots per shard: its estimate (last walk + what it read since, which sets the
/// level) and its last walk alone (what is reported).
pub type MemoryBoard = Arc<[AtomicU64]>;

/// A board for `shards` shards.
pub fn board(shards: usize) -> MemoryBoard {
    (0..2 * shards).map(|_| AtomicU64::new(0)).collect()
}

/// This shard's part of the budget.
#[derive(Debug)]
pub struct MemoryBudget {
    id: usize,
    board: MemoryBoard,
    limit: u64,
    next_ms: u64,
    /// What the last walk found.
    walked: u64,
    /// Bytes read from clients (the shard's counter) at the last walk.
    read_at_walk: u64,
    /// Publishers not read while memory is short (their keys), resumed below the mark.
    pub paused: Vec<usize>,
}

impl MemoryBudget {
    /// Shard `id`'s budget under `limit` bytes (0: none) on `board`.
    pub fn new(id: usize, board: MemoryBoard, limit: u64) -> MemoryBudget {
        MemoryBudget {
            id,
            board,
            limit,
            next_ms: 0,
            walked: 0,
            read_at_walk: 0,
            paused: Vec::new(),
        }
    }

    /// A reload changed `memory_limit` to `limit` (0: none): account at the next tick.
    pub fn set_limit(&mut self, limit: u64) {
        if limit != self.limit {
            self.limit = limit;
            self.next_ms = 0;
        }
    }

    /// Account when due and tell the broker where it stands. True when memory is below
    /// the pause mark again while publishers are paused: the caller resumes them.
    pub fn tick(&mut self, broker: &mut Broker<ConnIo>, now_ms: u64) -> bool {
        let read = broker.stats().bytes_in;
        if now_ms >= self.next_ms {
            let every_ms = match self.limit {
                0 => ACCOUNT_UNLIMITED_INTERVAL_MS,
                _ => ACCOUNT_INTERVAL_MS,
            };
            self.next_ms = now_ms + every_ms;
            broker
                .links_mut()
                .write_buffers_mut()
                .for_each(TxBuf::trim_idle);
            let held = account(broker, self.id);
            if let Some(m) = broker.config().metrics.shard(self.id) {
                for (figure, bytes) in m.memory_accounted.iter().zip(held) {
                    figure.set(bytes);
                }
            }
            self.walked = held.iter().sum();
            self.read_at_walk = read;
        }
        if self.limit == 0 {
            // No limit (perhaps lifted by a reload): no pressure, nobody paused.
            if broker.memory_pressure() != MemoryPressure::Normal {
                broker.set_memory(self.walked, MemoryPressure::Normal);
            }
            return !self.paused.is_empty();
        }
        let mine = self.walked + READ_GROWTH_FACTOR * read.saturating_sub(self.read_at_walk);
        if let Some(slot) = self.board.get(2 * self.id) {
            slot.store(mine, Ordering::Relaxed);
        }
        if let Some(slot) = self.board.get(2 * self.id + 1) {
            slot.store(self.walked, Ordering::Relaxed);
        }
        let sum = |parity: usize| -> u64 {
            let slots = self.board.iter().skip(parity).step_by(2);
            slots.map(|s| s.load(Ordering::Relaxed)).sum()
        };
        let level = MemoryPressure::of(sum(0), self.limit);
        broker.set_memory(sum(1), level);
        level < MemoryPressure::PausePublishers && !self.paused.is_empty()
    }
}

/// Bytes shard `id` holds on behalf of clients, by [`MemoryKind`] (indexed by it).
pub fn account(broker: &Broker<ConnIo>, id: usize) -> [u64; 6] {
    let mut held = [0u64; 6];
    let conn_fixed = std::mem::size_of::<Conn<ConnIo>>() as u64;
    for (_, c) in broker.links().conns() {
        held[MemoryKind::Connections as usize] += conn_fixed;
        held[MemoryKind::WriteBuffers as usize] += c.tx.capacity() as u64;
        held[MemoryKind::PartialPackets as usize] += c.io.rx.capacity() as u64;
    }
    for s in broker.sessions() {
        held[MemoryKind::Connections as usize] += std::mem::size_of::<Session>() as u64;
        held[MemoryKind::Queues as usize] += queue_bytes(s);
        held[MemoryKind::Subscriptions as usize] += subscription_bytes(s);
    }
    held[MemoryKind::Retained as usize] = broker.retained_count() as u64 * RETAINED_INDEX_BYTES
        + if id == 0 {
            broker.retained_budget_bytes() as u64
        } else {
            0
        };
    held
}

/// A session's queue, in-flight records and retained backlog.
fn queue_bytes(s: &Session) -> u64 {
    let backlog: u64 = s
        .retained_backlog
        .iter()
        .map(|b| b.msgs.len() as u64 * 8)
        .sum();
    s.queued_bytes() as u64 + s.inflight().len() as u64 * INFLIGHT_BYTES + backlog
}

/// A session's subscriptions: kept with them, so O(1) whatever their number.
fn subscription_bytes(s: &Session) -> u64 {
    s.subs_bytes
}
