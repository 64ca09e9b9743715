//! shardmq: a shard-per-core MQTT 3.1 / 3.1.1 / 5.0 broker.
//!
//! Dependency order (a module uses only modules to its left):
//! `alloc`, `log_sink`, `log`, `protocol`, `topic`, `timer`, `txbuf`, `auth`, `store`, `metrics`,
//! `config` → `session` → `broker` → `bridge` → `transport` → `shard` (conn, event loop,
//! bus, figures) → `admin` → `main`.
//!
//! - Nothing left of `transport` sees mio or sockets, and nothing left of `shard` names a
//!   shard type. Threads are started only by `shard`, `admin`, the password `verifier` and
//!   `store` (one sync thread per shard log, so that `fdatasync` never blocks a shard).
//! - `sim` drives `broker` in one thread with no transport or shard: a deterministic
//!   simulation for tests and fuzzing.
//! - `unsafe` is denied everywhere and allowed only in `shard::ring` and
//!   `shard::bus::spsc`; every other module forbids it.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod admin;
pub mod alloc;
pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod hash;
pub mod log;
pub mod log_sink;
pub mod metrics;
pub mod protocol;
pub mod session;
pub mod shard;
pub mod sim;
pub mod store;
pub mod timer;
pub mod topic;
pub mod transport;
pub mod txbuf;
pub mod verifier;
