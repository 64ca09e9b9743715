#![forbid(unsafe_code)]
//! Pure MQTT 3.1 / 3.1.1 / 5.0: packets, the codec, properties and reason codes.
//!
//! Owns: the bytes of the wire format and every rule of the specification that can be
//! checked on one packet in isolation. Decoding works in place: `decode` takes the readable
//! part of a receive buffer and returns a `Packet<'a>` whose strings and payload borrow from
//! it, "need more bytes", or a typed error naming the broken rule. Encoding appends to a
//! caller's `Vec<u8>` and never allocates on its own. Must not touch: sockets, clocks,
//! sessions, threads. No `unsafe`.

pub mod packet;
pub mod properties;
pub mod reason;

pub use packet::*;
pub use properties::{Properties, SubscriptionIds, UserProperties};
pub use reason::ReasonCode;

/// The largest remaining length a variable byte integer can express (256 MiB - 1).
pub const REMAINING_LENGTH_MAX: usize = 268_435_455;

/// The outcome of a successful `decode` call.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// The buffer holds no complete packet yet; `needed` is the total number of bytes
    /// (counted from the start of the buffer) that must be present before trying again.
    Incomplete {
        /// Total bytes required at the start of the buffer.
        needed: usize,
    },
    /// A complete packet occupying the first `len` bytes of the buffer.
    Packet {
        /// The decoded packet, borrowing from the buffer.
        packet: Packet<'a>,
        /// Bytes consumed (fixed header + remaining length).
        len: usize,
    },
}

// ---- TEMPORARY: signatures only, replaced by the codec branch on merge ----
/// A decoding error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError;
impl DecodeError {
    /// The reason code.
    pub fn reason_code(&self) -> ReasonCode {
        ReasonCode::MalformedPacket
    }
}
impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed")
    }
}
/// Decode.
pub fn decode(_buf: &[u8], _v: Version, _max: usize) -> Result<Decoded<'_>, DecodeError> {
    Err(DecodeError)
}
/// Encode.
pub fn encode(_p: &Packet<'_>, _v: Version, _out: &mut Vec<u8>) {}
/// Encoded length.
pub fn encoded_len(_p: &Packet<'_>, _v: Version) -> usize {
    0
}
/// Encode a publish.
pub fn encode_publish(_out: &mut Vec<u8>, _v: Version, _p: &Publish<'_>) {}
impl<'a> SubscriptionList<'a> {
    /// Iterate.
    pub fn iter(&self) -> impl Iterator<Item = Subscription<'a>> + 'a {
        std::iter::empty()
    }
}
impl<'a> StrList<'a> {
    /// Iterate.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::empty()
    }
}
impl<'a> UserProperties<'a> {
    /// Iterate.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        std::iter::empty()
    }
}
impl SubscriptionIds<'_> {
    /// Iterate.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::empty()
    }
}
