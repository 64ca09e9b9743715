//! Byte streams under MQTT: TLS, WebSocket framing and the PROXY header, each sans-IO.
//!
//! Owns: turning socket bytes into the MQTT byte stream and back. Invariant: every type
//! here is driven by the caller's readiness (no threads, no blocking, no clock) and bounds
//! what it buffers. Must not touch: MQTT packets, sessions, shard state.
#![forbid(unsafe_code)]

pub mod proxy;
pub mod tls;
pub mod ws;
