//! The event loop: poll, connections' transports and receive buffers, the bus.
//!
//! Owns: threads and `mio`. Each shard is one thread running `event_loop`; it owns its
//! poll, its `Broker` core (whose connection table holds this module's `conn::ConnIo` for
//! each connection), the bridges it runs (`bridges`) and its end of every bus ring.
//! Invariant: nothing here is shared mutably between shards; the only cross-thread
//! traffic is `BusMsg`s and the shutdown flag. Must not touch: MQTT semantics, which live in `broker`, nor a link's state, which
//! only the broker's `Effects` change.
pub mod admission;
pub mod bridge_tls;
pub mod bridges;
#[allow(unsafe_code)]
pub mod bus;
pub mod cluster_port;
pub mod conn;
pub mod event_loop;
pub mod figures;
pub mod linger;
pub mod listeners;
pub mod memory;
#[allow(unsafe_code)]
pub mod ring;

pub use event_loop::{run, run_node, run_with_store, Control, Running, StoreStart};

use crate::broker::Cast;
pub use conn::Handoff;

/// What travels between shards on the bus.
#[derive(Debug)]
pub enum BusMsg {
    /// A broker-level message (publish, interest change, ack).
    Cast(Cast),
    /// A connection handed to its home shard.
    Handoff(Box<Handoff>),
}
