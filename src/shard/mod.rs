//! The event loop: poll, connections, buffers, timers, the bus.
//!
//! Owns: threads, sockets and `mio`. Each shard is one thread running `event_loop`; it owns
//! its sockets, its `Broker` state and its end of every bus ring. Invariant: nothing here
//! is shared mutably between shards; the only cross-thread traffic is `bus` messages and
//! the shutdown flag. Must not touch: MQTT semantics, which live in `broker`.
pub mod bus;
pub mod event_loop;
pub mod figures;
pub mod ring;
pub mod timer;
pub mod txbuf;

pub use event_loop::{run, Running};
