//! The cross-shard bus.
pub mod spsc;
