//! The figures board: what each shard publishes about itself for the admin listener.
//!
//! Owns: one `ShardMetrics` per shard (plain `AtomicU64`s and a fixed-bucket histogram),
//! one snapshot slot per shard for the client and subscription lists, and the readiness
//! gate. Invariants: every field of a `ShardMetrics` is written by its own shard only
//! (single writer, `Relaxed` stores, no read-modify-write needed), and read by anyone;
//! nothing here ever blocks a writer: no lock, no channel, no allocation on the per-turn
//! path. A reader sees each figure at most one turn old, the lists at most one
//! `LISTS_INTERVAL_MS` old. Must not touch: sockets, threads, broker state (the shard copies
//! its figures in; see `shard/figures.rs`).
#![forbid(unsafe_code)]

mod hist;
mod snapshot;
mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};

pub use hist::{Histogram, TURN_BUCKETS_NS};
pub use snapshot::{ClientInfo, ShardLists, SubscriptionInfo};
pub use store::{
    StoreFigures, BATCH_BYTES_BUCKETS, BATCH_RECORDS_BUCKETS, CHECKPOINT_BUCKETS_NS,
    STORE_TIME_BUCKETS_NS,
};

/// Entries per shard in a client or subscription list snapshot.
pub const LIST_ENTRIES_PER_SHARD_MAX: usize = 1000;
/// How often a shard refreshes its costly figures (those that walk all sessions), ms.
pub const LISTS_INTERVAL_MS: u64 = 1000;
/// How long after an API request shards keep building client and subscription lists, ms.
pub const LISTS_WANTED_FOR_MS: u64 = 30_000;
/// Peers a shard reports bus figures for (shard sets are 64-bit masks).
pub const PEERS_MAX: usize = 64;

/// Why a message was dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A QoS 0 delivery to a subscriber whose output buffer was full.
    Qos0Backpressure = 0,
    /// A session queue was full.
    QueueFull = 1,
    /// Larger than the client's Maximum Packet Size.
    TooLarge = 2,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 3] = [
        DropReason::Qos0Backpressure,
        DropReason::QueueFull,
        DropReason::TooLarge,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Qos0Backpressure => "qos0_backpressure",
            DropReason::QueueFull => "queue_full",
            DropReason::TooLarge => "too_large",
        }
    }
}

/// What the bytes accounted against `memory_limit` are held for (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// The fixed part of each connection and session.
    Connections = 0,
    /// Encoded packets waiting to be written (write buffers' capacity).
    WriteBuffers = 1,
    /// Partial packets (receive buffers' capacity).
    PartialPackets = 2,
    /// Session queues, in-flight records and retained backlogs.
    Queues = 3,
    /// Subscriptions.
    Subscriptions = 4,
    /// Retained messages (shared payloads on shard 0, each shard's index).
    Retained = 5,
}

impl MemoryKind {
    /// Every kind, in label order.
    pub const ALL: [MemoryKind; 6] = [
        MemoryKind::Connections,
        MemoryKind::WriteBuffers,
        MemoryKind::PartialPackets,
        MemoryKind::Queues,
        MemoryKind::Subscriptions,
        MemoryKind::Retained,
    ];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            MemoryKind::Connections => "connections",
            MemoryKind::WriteBuffers => "write_buffers",
            MemoryKind::PartialPackets => "partial_packets",
            MemoryKind::Queues => "queues",
            MemoryKind::Subscriptions => "subscriptions",
            MemoryKind::Retained => "retained",
        }
    }
}

/// Why a connection was refused (the `reason` label of `connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Bad credentials or not authorised.
    NotAuthorized = 0,
    /// Protocol error or unsupported version in CONNECT.
    Protocol = 1,
    /// Redirected (`--redirect`) or server unavailable.
    Unavailable = 2,
    /// A limit (connections, packet size) was reached.
    Limit = 3,
}

impl RefuseReason {
    /// Every reason, in label order.
    pub const ALL: [RefuseReason; 4] = [
        RefuseReason::NotAuthorized,
        RefuseReason::Protocol,
        RefuseReason::Unavailable,
        RefuseReason::Limit,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::NotAuthorized => "not_authorized",
            RefuseReason::Protocol => "protocol",
            RefuseReason::Unavailable => "unavailable",
            RefuseReason::Limit => "limit",
        }
    }
}

/// A gauge or counter written by one thread only.
#[derive(Debug, Default)]
pub struct Figure(AtomicU64);

impl Figure {
    /// Publish a new value (owner only).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Read the latest published value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One shard's figures. Written only by that shard (see the module invariant). Aligned so
/// two shards' figures never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Turns completed; non-zero once the shard runs.
    pub turns: Figure,
    /// Sockets owned (any state).
    pub connections: Figure,
    /// Connections with an accepted CONNECT.
    pub clients_connected: Figure,
    /// Connections accepted since start.
    pub connections_accepted: Figure,
    /// Connections refused, by `RefuseReason`.
    pub connections_refused: [Figure; 4],
    /// Sessions held on this shard, connected or not.
    pub sessions: Figure,
    /// Subscriptions held by those sessions.
    pub subscriptions: Figure,
    /// Messages waiting in session queues.
    pub queued_messages: Figure,
    /// QoS 1/2 deliveries awaiting acknowledgement.
    pub inflight_messages: Figure,
    /// Retained messages in this shard's replica.
    pub retained_messages: Figure,
    /// PUBLISH packets received from clients.
    pub messages_received: Figure,
    /// PUBLISH packets received, by QoS.
    pub messages_received_qos: [Figure; 3],
    /// PUBLISH packets written, by QoS.
    pub messages_sent_qos: [Figure; 3],
    /// Payload bytes received in PUBLISH packets, by QoS.
    pub payload_bytes_received_qos: [Figure; 3],
    /// Payload bytes written in PUBLISH packets, by QoS.
    pub payload_bytes_sent_qos: [Figure; 3],
    /// MQTT packets of every kind received.
    pub packets_received: Figure,
    /// MQTT packets of every kind written.
    pub packets_sent: Figure,
    /// Bytes of the messages waiting in session queues.
    pub queued_bytes: Figure,
    /// Payload bytes of the retained messages in this shard's replica.
    pub retained_bytes: Figure,
    /// Sessions ended by their expiry interval.
    pub sessions_expired: Figure,
    /// PUBLISH packets written to clients.
    pub messages_sent: Figure,
    /// Bytes read from client sockets.
    pub bytes_received: Figure,
    /// Bytes written to client sockets.
    pub bytes_sent: Figure,
    /// Deliveries dropped, by `DropReason`.
    pub dropped: [Figure; 3],
    /// Bytes accounted for clients at the last memory walk, by `MemoryKind`.
    pub memory_accounted: [Figure; 6],
    /// Failed authentications.
    pub auth_failures: Figure,
    /// Store log writes that failed (disk full, I/O error; each retry counts).
    pub store_write_errors: Figure,
    /// QoS 1/2 publishes refused (or 3.x connections closed) while the store could not
    /// write.
    pub publishes_refused_store: Figure,
    /// TLS handshakes completed (counted when the first application bytes arrive).
    pub tls_handshakes: Figure,
    /// TLS handshakes refused (a TLS error before the handshake completed).
    pub tls_failures: Figure,
    /// Bus messages staged for a full ring, total.
    pub bus_staged: Figure,
    /// Messages in the ring toward each peer (indexed by peer shard).
    pub bus_ring_depth: Box<[Figure]>,
    /// Messages staged toward each peer (indexed by peer shard).
    pub bus_staged_to: Box<[Figure]>,
    /// Time spent working (poll return → end of turn), ns.
    pub busy_ns: Figure,
    /// Turn work time.
    pub turn_time: Histogram,
    /// When the turn last ended, ns since `Metrics::epoch` (owner's bookkeeping).
    pub last_turn_end_ns: Figure,
    /// When the costly figures were last refreshed, ns since `Metrics::epoch`.
    pub lists_at_ns: Figure,
    /// Latest client and subscription lists, refreshed while someone asks for them.
    pub lists: ArcSwap<ShardLists>,
    /// The bridges this shard runs, refreshed at most every `LISTS_INTERVAL_MS` and on
    /// every state change.
    pub bridges: ArcSwap<Vec<BridgeFigures>>,
    /// The shard's write-ahead log figures, installed when the shard opens its log (none
    /// without persistence). The log's threads write them; see `StoreFigures`.
    pub store: ArcSwapOption<StoreFigures>,
}

/// One bridge's state and counters, as its shard last published them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeFigures {
    /// `connection NAME`.
    pub name: String,
    /// Connected, CONNACK accepted.
    pub up: bool,
    /// Messages waiting in the forwarding queue.
    pub queued: u64,
    /// QoS 1/2 messages sent and not yet completed by the remote.
    pub inflight: u64,
    /// Messages completed by the remote.
    pub forwarded: u64,
    /// Messages brought in from the remote.
    pub received: u64,
    /// Dropped: queue full, QoS 0 while down, too large.
    pub dropped: [u64; 3],
    /// Offers refused because the message came in over this bridge.
    pub loops_prevented: u64,
    /// Connections made, and attempts or connections that failed.
    pub connects: u64,
    /// Failed attempts or connections.
    pub failures: u64,
}

impl ShardMetrics {
    /// Figures for a shard with `peers` shards in all (itself included).
    pub fn new(peers: usize) -> ShardMetrics {
        let peers = peers.min(PEERS_MAX);
        ShardMetrics {
            bus_ring_depth: (0..peers).map(|_| Figure::default()).collect(),
            bus_staged_to: (0..peers).map(|_| Figure::default()).collect(),
            ..ShardMetrics::default()
        }
    }

    /// Record one turn that worked for `busy_ns` (owner only).
    pub fn record_turn(&self, busy_ns: u64) {
        self.turns.set(self.turns.get() + 1);
        self.busy_ns.set(self.busy_ns.get() + busy_ns);
        self.turn_time.observe(busy_ns);
    }

    /// Sum of the drop counters.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(Figure::get).sum()
    }
}

/// A reason not to be ready yet (the store recovering, say); dropping it lifts it.
#[derive(Debug)]
pub struct ReadyHold {
    metrics: Arc<Metrics>,
}

impl ReadyHold {
    /// Lift this hold.
    pub fn release(self) {}
}

impl Drop for ReadyHold {
    fn drop(&mut self) {
        self.metrics.ready_holds.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads the cluster link's counters: (name, help, value), names in snake case.
pub type ClusterFiguresFn = dyn Fn() -> Vec<(&'static str, &'static str, u64)> + Send + Sync;

/// The cluster link's counters, installed once when the node runs in a cluster (the link
/// writes them; readers only load).
pub struct ClusterFigures(pub Box<ClusterFiguresFn>);

impl std::fmt::Debug for ClusterFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterFigures")
    }
}

/// Reads the cluster's heartbeats: (node, seconds since its heartbeat last changed, state).
pub type ClusterNodesFn = dyn Fn() -> Vec<(String, f64, &'static str)> + Send + Sync;

/// The cluster's heartbeats as this node sees them, installed with `ClusterFigures`.
pub struct ClusterNodes(pub Box<ClusterNodesFn>);

impl std::fmt::Debug for ClusterNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterNodes")
    }
}

/// Every shard's figures, plus what the admin side tells the shards.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[ShardMetrics]>,
    /// The clock figures are measured against.
    pub epoch: Instant,
    /// Holds taken by parts that must finish before the broker is ready.
    ready_holds: AtomicUsize,
    /// Until when (ns since `epoch`) shards should build client and subscription lists.
    lists_wanted_until_ns: AtomicU64,
    /// Set when the broker starts draining: `/readyz` turns false.
    pub stopping: AtomicBool,
    /// Configuration reloads applied (written by the main thread only).
    pub reloads_applied: Figure,
    /// Configuration reloads refused (written by the main thread only).
    pub reloads_refused: Figure,
    /// `memory_limit` in bytes, 0 for none (written at start-up and by each reload).
    pub memory_limit: Figure,
    /// The cluster link's counters (a node in a cluster only).
    pub cluster: std::sync::OnceLock<ClusterFigures>,
    /// The cluster's heartbeats (a node in a cluster only).
    pub cluster_nodes: std::sync::OnceLock<ClusterNodes>,
}

impl Metrics {
    /// A board for `shards` shards.
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::new(shards)).collect(),
            epoch: Instant::now(),
            ready_holds: AtomicUsize::new(0),
            lists_wanted_until_ns: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            reloads_applied: Figure::default(),
            reloads_refused: Figure::default(),
            memory_limit: Figure::default(),
            cluster: std::sync::OnceLock::new(),
            cluster_nodes: std::sync::OnceLock::new(),
        }
    }

    /// Shard `id`'s figures, if there is such a shard.
    pub fn shard(&self, id: usize) -> Option<&ShardMetrics> {
        self.shards.get(id)
    }

    /// Every shard's figures, in shard order.
    pub fn shards(&self) -> &[ShardMetrics] {
        &self.shards
    }

    /// Nanoseconds since `epoch`.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Ask shards to build their lists for the next `LISTS_WANTED_FOR_MS`.
    pub fn want_lists(&self) {
        let until = self.now_ns() + LISTS_WANTED_FOR_MS * 1_000_000;
        self.lists_wanted_until_ns
            .fetch_max(until, Ordering::Relaxed);
    }

    /// Whether someone asked for lists recently (read by shards).
    pub fn lists_wanted(&self, now_ns: u64) -> bool {
        now_ns < self.lists_wanted_until_ns.load(Ordering::Relaxed)
    }

    /// Hold readiness back until the returned value is released or dropped. Take it before
    /// the shards start (the store does, for its recovery), so `/readyz` never says ready early.
    pub fn hold_ready(self: &Arc<Self>) -> ReadyHold {
        self.ready_holds.fetch_add(1, Ordering::SeqCst);
        ReadyHold {
            metrics: self.clone(),
        }
    }

    /// Every shard has completed a turn.
    pub fn all_shards_running(&self) -> bool {
        self.shards.iter().all(|s| s.turns.get() > 0)
    }

    /// Ready to serve: all shards run, no hold, not stopping.
    pub fn ready(&self) -> bool {
        self.all_shards_running()
            && self.ready_holds.load(Ordering::SeqCst) == 0
            && !self.stopping.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_shard_and_no_hold() {
        let m = Arc::new(Metrics::new(2));
        assert!(!m.ready());
        m.shards()[0].record_turn(10);
        assert!(!m.ready(), "shard 1 has not run");
        m.shards()[1].record_turn(10);
        assert!(m.ready());
        let hold = m.hold_ready();
        assert!(!m.ready(), "a hold keeps it unready");
        hold.release();
        assert!(m.ready());
        m.stopping.store(true, Ordering::Relaxed);
        assert!(!m.ready());
    }

    #[test]
    fn lists_are_wanted_only_for_a_while_after_asking() {
        let m = Metrics::new(1);
        assert!(!m.lists_wanted(m.now_ns()));
        m.want_lists();
        assert!(m.lists_wanted(m.now_ns()));
        assert!(!m.lists_wanted(m.now_ns() + (LISTS_WANTED_FOR_MS + 1) * 1_000_000));
    }

    #[test]
    fn record_turn_accumulates() {
        let s = ShardMetrics::default();
        s.record_turn(1_000);
        s.record_turn(3_000);
        assert_eq!(s.turns.get(), 2);
        assert_eq!(s.busy_ns.get(), 4_000);
        assert_eq!(s.turn_time.count(), 2);
    }
}
