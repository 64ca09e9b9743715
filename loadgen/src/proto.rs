//! The MQTT wire layer of the load generator.
//!
//! Owns: nothing of its own. It re-exports the project's codec (`shardmq::protocol`) so the
//! rest of the crate has one import path: every packet the load generator sends or
//! receives goes through `shardmq::protocol::{encode, decode}`.

pub use shardmq::protocol::*;
