//! shardmq: a shard-per-core MQTT 3.1 / 3.1.1 / 5.0 broker.
//!
//! Dependency order (a module uses only modules to its left):
//! `protocol`, `topic` → `shard::{ring, bus, timer}` → `session` → `broker` → `shard` event loop.
//! Nothing left of `shard` sees mio, sockets or threads.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod protocol;
pub mod session;
pub mod shard;
pub mod topic;
