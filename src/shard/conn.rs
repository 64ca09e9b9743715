//! One connection of a shard: the shard's part of the single connection table.
//!
//! Owns: per connection, the [`Transport`] (socket and stream layer) and the receive
//! buffer, plus two read-scheduling flags. The table itself is the broker's
//! `crate::broker::Links`, one slab whose entries are `Conn { link, tx, io }`
//! with `io` = [`ConnIo`]: the link state and write buffer are the broker's, the transport
//! and receive buffer are the shard's, all under one key, so nothing has to be kept in
//! step. Invariant: a transport is registered with this shard's poll under its key for
//! exactly as long as its entry exists here; it leaves only closed (shut down) or handed
//! over whole (a TLS session moves with its socket). Must not touch: `LinkState` (closing
//! goes through the broker's `Effects`), MQTT semantics.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use super::ring::RxBuf;
use crate::broker::Links;
use crate::transport::Transport;

/// The shard's part of one connection.
#[derive(Debug)]
pub struct ConnIo {
    /// The byte stream.
    pub transport: Transport,
    /// A trailing partial packet (most of the time: nothing).
    pub rx: RxBuf,
    /// Queued on the shard's `read_again` list (budget hit or paused), so edge-triggered
    /// input is not lost.
    pub(super) pending_read: bool,
    /// Not being read because its own output is over the limit (the client does not read
    /// what we send it); resumed by a flush that drains it, not by polling.
    pub(super) paused_on_output: bool,
    /// Not being read because its CONNECT waits for a password check; resumed by the
    /// verifier's answer.
    pub(super) paused_on_auth: bool,
    /// Not being read because it publishes and memory is short; resumed by the budget.
    pub(super) paused_on_memory: bool,
    /// The client certificate will name the user once the TLS handshake is done.
    pub(super) name_pending: bool,
    /// A TLS handshake not yet counted (as completed or failed) in the shard's figures.
    pub(super) tls_pending: bool,
}

impl ConnIo {
    /// A connection's shard part, with `rx` already received (a handed-over CONNECT).
    pub fn new(transport: Transport, rx: Vec<u8>) -> ConnIo {
        ConnIo {
            name_pending: transport.names_user(),
            tls_pending: transport.is_handshaking(),
            transport,
            rx: RxBuf::from_vec(rx),
            pending_read: false,
            paused_on_output: false,
            paused_on_auth: false,
            paused_on_memory: false,
        }
    }
}

/// This shard's connections.
pub type Conns = Links<ConnIo>;

/// A connection moving to its home shard after CONNECT: the whole transport, so any
/// stream state (a TLS session, a WebSocket decoder) moves with the socket.
#[derive(Debug)]
pub struct Handoff {
    /// The transport, already deregistered from the sender's poll.
    pub transport: Transport,
    /// Unread bytes, starting with the CONNECT packet.
    pub rx: Vec<u8>,
    /// Peer address.
    pub peer: SocketAddr,
    /// Id of the listener that accepted it (its security settings apply; stable across
    /// reloads).
    pub listener: usize,
}
