//! Bounded lists a shard publishes for the admin API: its clients and subscriptions.
//!
//! Owns: the snapshot value types. Invariant: a `ShardLists` is immutable once published
//! (swapped in whole through `ArcSwap`), and holds at most `LIST_ENTRIES_PER_SHARD_MAX`
//! entries of each kind; `*_total` says how many there were. Must not touch: broker state.

use std::net::SocketAddr;

/// One connected client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client identifier (empty until CONNECT is accepted).
    pub client_id: Box<str>,
    /// Username given in CONNECT, if any.
    pub username: Option<Box<str>>,
    /// Remote address.
    pub peer: SocketAddr,
    /// Protocol version ("3.1", "3.1.1", "5").
    pub version: &'static str,
    /// The shard that owns the connection.
    pub shard: usize,
    /// Subscriptions of its session.
    pub subscriptions: usize,
    /// Messages queued for it.
    pub queued: usize,
    /// QoS 1/2 deliveries awaiting its acknowledgement.
    pub inflight: usize,
    /// Bytes in its output buffer.
    pub pending_bytes: usize,
}

/// One subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    /// The subscribing session.
    pub client_id: Box<str>,
    /// The filter, with any `$share/group/` prefix.
    pub filter: Box<str>,
    /// Maximum QoS granted.
    pub qos: u8,
    /// The shard that holds the session.
    pub shard: usize,
}

/// What one shard published at one moment.
#[derive(Debug, Clone, Default)]
pub struct ShardLists {
    /// ns since `Metrics::epoch` when taken (0: never).
    pub taken_at_ns: u64,
    /// Up to `LIST_ENTRIES_PER_SHARD_MAX` connected clients.
    pub clients: Vec<ClientInfo>,
    /// How many connected clients there were.
    pub clients_total: usize,
    /// Up to `LIST_ENTRIES_PER_SHARD_MAX` subscriptions.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// How many subscriptions there were.
    pub subscriptions_total: usize,
    /// The busiest topics published to on this shard, busiest first: (topic, estimated
    /// publishes, sampled and decaying; see `broker::hot_topics`).
    pub topics: Vec<(std::sync::Arc<str>, u64)>,
}
