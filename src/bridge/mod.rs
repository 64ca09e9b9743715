#![forbid(unsafe_code)]
//! Bridges: outgoing MQTT connections to other brokers (Mosquitto's `connection` blocks).
//!
//! Owns: one sans-IO MQTT client per bridge (`Bridge`): the connection's protocol state,
//! the in-flight window, the bounded forwarding queue, topic remapping, keepalive, the
//! reconnect back-off and the address fail-over. It reads bytes, times and offered local
//! messages, and produces bytes to write, `Action`s (connect, close, probe, local publish,
//! state change) and store `Record`s. Invariants: nothing leaves a `Bridge` except through
//! `output`, `poll_action` and `take_records`; a QoS 1/2 message it accepted is in its
//! queue or in flight until the remote completes it, and is resent (with DUP) after every
//! reconnect; a message the bridge brought in is never offered back out (loop prevention).
//!
//! Must not touch: sockets, clocks, threads, the broker's or other shards' state. A shard
//! loop owns each bridge (phase 2; see docs/bridges.md) and performs its actions.

mod backoff;
mod client;
mod queue;
#[cfg(test)]
mod tests;
mod topics;

pub use backoff::Backoff;
pub use client::{Action, Bridge, InboundAck, Limits, LocalPublish, Offer, Offered, Stats};
pub use queue::{Clock, ForwardQueue, OutMessage, Queued, Record, Restored};
pub use topics::Mapper;
