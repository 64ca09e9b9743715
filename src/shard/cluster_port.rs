//! The shard's end of the cluster link (`docs/cluster.md`).
//!
//! Owns: the [`ClusterPort`] contract between a shard loop and the node's cluster link,
//! which lives on its own thread (`src/cluster`, to the right of `shard`, implements it).
//! Invariants: a shard never blocks on the link and never runs its async code: `send`
//! queues a turn's messages and wakes the link once, `receive` takes at most `max`
//! messages without waiting; only the gateway shard (`broker::cluster::GATEWAY_SHARD`)
//! gets anything from `receive`, and the link rings that shard's waker when it has news.
//! Must not touch: NATS, the link's queues beyond this contract.

use std::io;
use std::sync::Arc;

use crate::broker::cluster::{FromCluster, ToCluster};

/// How a shard talks to the cluster link.
pub trait ClusterPort: Send {
    /// Queue `out` (drained) for the link and wake it once; what does not fit is dropped
    /// and counted by the link's figures.
    fn send(&mut self, out: &mut Vec<ToCluster>);
    /// Move up to `max` of the link's messages into `into` (`now_ms`: the shard clock, for
    /// message expiry). Returns true when more are waiting.
    fn receive(&mut self, now_ms: u64, max: usize, into: &mut Vec<FromCluster>) -> bool;
}

/// Rings the gateway shard's waker.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Starts the link once the shards' wakers exist: given the gateway's wake-up, returns one
/// port per shard, in shard order.
pub type ClusterStart = Box<dyn FnOnce(Wake, usize) -> io::Result<Vec<Box<dyn ClusterPort>>>>;
