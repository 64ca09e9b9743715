//! Lingering close: closed connections whose peer may still be writing.
//!
//! Owns: transports the broker has finished with, each half-closed (FIN sent after its
//! last packet) and kept for a short, bounded time while their input is read and thrown
//! away. Closing a socket whose receive queue is not empty makes the kernel send a reset,
//! which destroys the data still on its way to the peer: a client that was writing (say
//! PUBRELs past Receive Maximum) would see `connection reset` instead of the DISCONNECT
//! 0x93 or the refusing CONNACK that says why. Lingering lets it read the reason first.
//!
//! Invariant: every entry is gone within [`LINGER_MS`] (sooner on EOF, an error, or once
//! [`LINGER_DISCARD_BYTES_MAX`] have been thrown away), and at most
//! [`LINGER_CONNS_MAX`] linger at once; past that a transport is closed at once. The
//! transports here are deregistered from the poll: they are read on a timer
//! ([`LINGER_POLL_MS`]), never by events. Must not touch: the connection table or the
//! broker, which have already let these transports go.
#![forbid(unsafe_code)]

use std::io::{self, Read};

use crate::transport::Transport;

/// Longest a closed connection lingers.
pub const LINGER_MS: u64 = 2_000;
/// Most connections lingering at once per shard.
pub const LINGER_CONNS_MAX: usize = 4_096;
/// Input thrown away per lingering connection before it is closed regardless.
pub const LINGER_DISCARD_BYTES_MAX: usize = 256 * 1024;
/// How often lingering connections are read.
pub const LINGER_POLL_MS: u64 = 20;

#[derive(Debug)]
struct Lingerer {
    transport: Transport,
    until_ms: u64,
    discarded: usize,
}

/// This shard's lingering connections.
#[derive(Debug, Default)]
pub struct Lingering {
    conns: Vec<Lingerer>,
    next_read_ms: u64,
}

impl Lingering {
    /// Half-close `transport` and keep draining it, or close it at once when full.
    pub fn start(&mut self, mut transport: Transport, now_ms: u64) {
        if self.conns.len() >= LINGER_CONNS_MAX {
            transport.shutdown();
            return;
        }
        transport.shutdown_write();
        self.conns.push(Lingerer {
            transport,
            until_ms: now_ms + LINGER_MS,
            discarded: 0,
        });
    }

    /// Connections lingering now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when none linger.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Milliseconds until the next read is due, if any connection lingers.
    pub fn due_in_ms(&self, now_ms: u64) -> Option<u64> {
        (!self.conns.is_empty()).then(|| self.next_read_ms.saturating_sub(now_ms))
    }

    /// Read and discard what each lingering connection has, dropping the finished ones
    /// (at most every [`LINGER_POLL_MS`]). `scratch` receives the discarded bytes.
    pub fn tick(&mut self, now_ms: u64, scratch: &mut [u8]) {
        if self.conns.is_empty() || now_ms < self.next_read_ms {
            return;
        }
        self.next_read_ms = now_ms + LINGER_POLL_MS;
        self.conns.retain_mut(|l| {
            let keep = now_ms < l.until_ms && drain(l, scratch);
            if !keep {
                l.transport.shutdown();
            }
            keep
        });
    }

    /// Close them all now (shutdown).
    pub fn clear(&mut self) {
        for l in &mut self.conns {
            l.transport.shutdown();
        }
        self.conns.clear();
    }
}

/// Read until WouldBlock; false once the peer is done (EOF, error) or sent too much.
fn drain(l: &mut Lingerer, scratch: &mut [u8]) -> bool {
    loop {
        if l.discarded >= LINGER_DISCARD_BYTES_MAX {
            return false;
        }
        match l.transport.read(scratch) {
            Ok(0) => return false,
            Ok(n) => l.discarded += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
