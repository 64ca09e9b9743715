//! The broker's entry points for bytes and connection events: what the event loop (or a
//! simulation, or a fuzzer) calls, with no socket anywhere.
//!
//! Owns: the decode loop over a connection's input (whole packets decoded in place from
//! the caller's buffer, each handed to the broker) and the per-link packet size cap.
//! Invariant: bytes are consumed only as whole packets, so the caller keeps exactly the
//! unconsumed tail; a link that is closing consumes nothing more. Must not touch: the
//! transport or the receive buffer, which the caller owns.

use super::{Broker, Effects, Link, LinkState, Verdict};
use crate::config::Config;
use crate::protocol::{self, Decoded};

/// Largest first packet (CONNECT) from a client nobody has authenticated yet: a Will
/// payload bigger than this is refused, so unauthenticated sockets cannot make the broker
/// buffer hundreds of megabytes each.
pub const CONNECT_PACKET_MAX: usize = 1024 * 1024;

/// Where decoding a connection's input stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Ingested {
    /// Need more bytes; everything before `used` was consumed.
    More,
    /// Close the connection (it is marked closing in the effects).
    Close,
    /// Move the connection, bytes from `used` on (starting with its CONNECT), to shard
    /// `home`; call [`Broker::on_closed`] here and [`Broker::accept`] + `ingest` there.
    Handoff(usize),
}

/// The first byte of a CONNECT: type 1, flags 0 [MQTT-2.1.3-1].
const CONNECT_FIRST_BYTE: u8 = 0x10;

/// True when `buf` starts with a byte that cannot begin a CONNECT.
fn not_a_connect(buf: &[u8]) -> bool {
    buf.first().is_some_and(|&b| b != CONNECT_FIRST_BYTE)
}

/// The packet size limit for a link: lower until CONNECT has been accepted.
fn packet_size_max(cfg: &Config, link: &Link) -> usize {
    match link.state {
        LinkState::ExpectConnect => cfg.max_packet_size.min(CONNECT_PACKET_MAX),
        _ => cfg.max_packet_size,
    }
}

impl<X> Broker<X> {
    /// Decode and handle every complete packet at the start of `buf`, input of link `key`.
    /// Returns how many bytes were consumed and why it stopped.
    pub fn ingest(&mut self, key: usize, buf: &[u8], now_ms: u64) -> (usize, Ingested) {
        let mut used = 0;
        loop {
            let Some(link) = self.links.get(key) else {
                return (used, Ingested::Close);
            };
            if link.state == LinkState::Closing {
                return (used, Ingested::Close);
            }
            if link.pending_connect.is_some() {
                // The CONNECT's password is being checked: what follows waits for it.
                return (used, Ingested::More);
            }
            if link.state == LinkState::ExpectConnect && not_a_connect(&buf[used..]) {
                // [MQTT-3.1.0-1]: decided on the first byte, not after a body that may
                // never come (or only at the CONNECT deadline).
                self.close(key, None, "first packet is not CONNECT");
                return (used, Ingested::Close);
            }
            let version = link.version;
            let max = packet_size_max(&self.cfg, link);
            match protocol::decode(&buf[used..], version, max) {
                Ok(Decoded::Incomplete { .. }) => return (used, Ingested::More),
                Ok(Decoded::Packet { packet, len }) => match self.handle(key, &packet, now_ms) {
                    Verdict::Continue => {
                        self.fx.stats.packets_in += 1;
                        used += len;
                    }
                    Verdict::Close => {
                        self.fx.stats.packets_in += 1;
                        return (used + len, Ingested::Close);
                    }
                    // Counted by the home shard, which decodes it again.
                    Verdict::Handoff { home } => return (used, Ingested::Handoff(home)),
                },
                Err(e) => {
                    // Answers per the version where one is due, and marks the link closing.
                    self.note_connect_version(key, &buf[used..]);
                    self.decode_error(key, &e);
                    return (used, Ingested::Close);
                }
            }
        }
    }

    /// A first packet that failed to decode but is a whole CONNECT naming 5.0 makes the
    /// link 5.0, so that the refusal is a 5.0 CONNACK with the reason code.
    fn note_connect_version(&mut self, key: usize, buf: &[u8]) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if link.state == LinkState::ExpectConnect {
            if let Some(v @ protocol::Version::V5) = protocol::connect_version(buf) {
                link.version = v;
            }
        }
    }

    /// Bytes still missing for the partial packet `partial` that link `key` holds, from
    /// its fixed header (0 when unknown): lets the caller read exactly that much.
    pub fn bytes_needed(&self, key: usize, partial: &[u8]) -> usize {
        let Some(link) = self.links.get(key) else {
            return 0;
        };
        let max = packet_size_max(&self.cfg, link);
        match protocol::decode(partial, link.version, max) {
            Ok(Decoded::Incomplete { needed }) => needed.saturating_sub(partial.len()),
            _ => 0,
        }
    }

    /// The transport of link `key` ended (EOF, error): close it at the end of the turn,
    /// with its Will unless the client had sent DISCONNECT.
    pub fn close_link(&mut self, key: usize) {
        if let Some(link) = self.links.get_mut(key) {
            self.fx.mark_closing(key, link);
        }
    }

    /// Link `key` can take output again (a writable edge): flush it this turn.
    pub fn writable(&mut self, key: usize) {
        if let Some(link) = self.links.get_mut(key) {
            self.fx.mark_dirty(key, link);
        }
    }

    /// For drivers without a socket (a simulation, a test): move everything link `key` has
    /// to send to the end of `out`, as a flush that wrote it all would, re-arm its dirty
    /// mark, and let its session queue refill the buffer (which may mark it dirty again).
    /// Nothing moves while the link's output is held ([`Link::output_held`]).
    pub fn drain_output(&mut self, key: usize, out: &mut Vec<u8>) {
        let Some(c) = self.links.conn_mut(key) else {
            return;
        };
        Effects::flushed(&mut c.link);
        if c.link.output_held() {
            return;
        }
        let before = c.tx.pending();
        // Writing to a Vec cannot fail or block.
        let _ = c.tx.flush_to(out, usize::MAX);
        self.fx.stats.bytes_out += before as u64;
        let now = self.now_ms;
        self.on_drained(key, now);
    }

    /// True when link `key`'s own output is over `--max-write-buffer`: the client is not
    /// reading, so it is not read either.
    pub fn output_full(&self, key: usize) -> bool {
        let max = self.cfg.max_write_buffer;
        self.links.conn(key).is_some_and(|c| c.tx.pending() > max)
    }
}
