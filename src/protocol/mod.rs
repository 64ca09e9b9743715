#![forbid(unsafe_code)]
//! Pure MQTT 3.1 / 3.1.1 / 5.0: packets, the codec, properties and reason codes.
//!
//! Owns: the bytes of the wire format and every rule of the specification that can be
//! checked on one packet in isolation. Decoding works in place: `decode` takes the readable
//! part of a receive buffer and returns a `Packet<'a>` whose strings and payload borrow from
//! it, "need more bytes", or a typed error naming the broken rule. Encoding appends to a
//! caller's `Vec<u8>` and never allocates on its own. Must not touch: sockets, clocks,
//! sessions, threads. No `unsafe`.
//!
//! Rules that need state or direction are the broker's: a second CONNECT, a client-sent
//! CONNACK, a Subscription Identifier in a client's PUBLISH, topic alias ranges, filter
//! syntax. See docs/decisions/0001-codec.md.

mod ack;
mod connect;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod header;
pub mod packet;
pub mod properties;
#[cfg(test)]
mod proptests;
mod publish;
pub mod reason;
mod subscribe;
#[cfg(test)]
mod testutil;
mod wire;

pub use ack::encode_plain_ack;
pub use error::DecodeError;
pub use packet::*;
pub use properties::{
    Properties, SubscriptionIds, SubscriptionIdsIter, UserProperties, UserPropertiesIter,
    REPEATED_PROPERTIES_MAX,
};
pub use publish::encode_publish;
pub use reason::ReasonCode;
pub use subscribe::{StrListIter, SubscriptionIter};
pub use wire::{put_varint, varint_len};

use header::Frame;

/// The largest remaining length a variable byte integer can express (256 MiB - 1).
pub const REMAINING_LENGTH_MAX: usize = 268_435_455;

/// The outcome of a successful `decode` call.
#[allow(clippy::large_enum_variant)] // see `Packet`: boxing would allocate per decode
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Decode the packet at the start of `buf`.
///
/// `version` is the connection's negotiated version; CONNECT ignores it and uses the level
/// it carries. The size of the whole packet is checked against `max_packet_size` from the
/// fixed header alone, before the body has arrived (`PacketTooLarge`, 0x95). `Incomplete`
/// gives the total number of bytes needed from the start of `buf`. Never allocates and
/// never panics.
#[inline]
pub fn decode(
    buf: &[u8],
    version: Version,
    max_packet_size: usize,
) -> Result<Decoded<'_>, DecodeError> {
    let header = match header::frame(buf, version, max_packet_size)? {
        Frame::Incomplete(needed) => return Ok(Decoded::Incomplete { needed }),
        Frame::Header(h) => h,
    };
    let len = header.total();
    let Some(body) = buf.get(header.header_len..len) else {
        return Ok(Decoded::Incomplete { needed: len });
    };
    let packet = decode_body(header.first, body, version)?;
    Ok(Decoded::Packet { packet, len })
}

/// The version a complete, well-framed CONNECT at the start of `buf` names, even when the
/// rest of its body is malformed; `None` for anything else. Lets the broker answer a broken
/// 5.0 CONNECT with a 5.0 CONNACK carrying the reason code [MQTT-4.13.1-1].
pub fn connect_version(buf: &[u8]) -> Option<Version> {
    let Ok(Frame::Header(header)) = header::frame(buf, Version::V3_1_1, usize::MAX) else {
        return None;
    };
    if header.first != 0x10 {
        return None;
    }
    connect::peek_version(buf.get(header.header_len..header.total())?)
}

/// Decode a body whose framing and first byte were already checked.
#[inline]
fn decode_body(first: u8, body: &[u8], version: Version) -> Result<Packet<'_>, DecodeError> {
    let type_id = first >> 4;
    Ok(match type_id {
        3 => Packet::Publish(publish::decode_publish(first, body, version)?),
        1 => Packet::Connect(connect::decode_connect(body)?),
        2 => Packet::ConnAck(connect::decode_connack(body, version)?),
        4 => Packet::PubAck(ack::decode_ack(type_id, body, version)?),
        5 => Packet::PubRec(ack::decode_ack(type_id, body, version)?),
        6 => Packet::PubRel(ack::decode_ack(type_id, body, version)?),
        7 => Packet::PubComp(ack::decode_ack(type_id, body, version)?),
        8 => Packet::Subscribe(subscribe::decode_subscribe(body, version)?),
        9 => Packet::SubAck(subscribe::decode_suback(body, version)?),
        10 => Packet::Unsubscribe(subscribe::decode_unsubscribe(body, version)?),
        11 => Packet::UnsubAck(subscribe::decode_unsuback(body, version)?),
        12 => {
            ack::decode_empty(body)?;
            Packet::PingReq
        }
        13 => {
            ack::decode_empty(body)?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(ack::decode_disconnect(body, version)?),
        15 => Packet::Auth(ack::decode_auth(body)?),
        _ => return Err(DecodeError::ReservedPacketType { type_id }),
    })
}

/// Append `packet` encoded for `version` to `out`, reserving its exact size once.
///
/// Before 5.0 properties are omitted and a CONNACK reason is written as its 3.x return
/// code. CONNECT is written in the version it names; AUTH always in the 5.0 form. In 5.0,
/// acks, DISCONNECT and AUTH use the short form when Success and without properties.
/// Field lengths beyond the wire limits (strings over 65,535 bytes, packets over 256 MiB)
/// are the caller's to avoid.
pub fn encode(packet: &Packet<'_>, version: Version, out: &mut Vec<u8>) {
    match packet {
        Packet::Connect(c) => connect::encode_connect(out, c),
        Packet::ConnAck(a) => connect::encode_connack(out, a, version),
        Packet::Publish(p) => encode_publish(out, version, p),
        Packet::PubAck(a) => ack::encode_ack(out, 4, a, version),
        Packet::PubRec(a) => ack::encode_ack(out, 5, a, version),
        Packet::PubRel(a) => ack::encode_ack(out, 6, a, version),
        Packet::PubComp(a) => ack::encode_ack(out, 7, a, version),
        Packet::Subscribe(s) => subscribe::encode_subscribe(out, s, version),
        Packet::SubAck(s) => subscribe::encode_suback(out, s, version),
        Packet::Unsubscribe(u) => subscribe::encode_unsubscribe(out, u, version),
        Packet::UnsubAck(u) => subscribe::encode_unsuback(out, u, version),
        Packet::PingReq => out.extend_from_slice(&[0xc0, 0]),
        Packet::PingResp => out.extend_from_slice(&[0xd0, 0]),
        Packet::Disconnect(d) => ack::encode_tail_only(out, 14, d.reason, &d.properties, version),
        Packet::Auth(a) => ack::encode_tail_only(out, 15, a.reason, &a.properties, version),
    }
}

/// The exact number of bytes `encode` appends for `packet`, fixed header included.
pub fn encoded_len(packet: &Packet<'_>, version: Version) -> usize {
    match packet {
        Packet::Connect(c) => connect::connect_len(c),
        Packet::ConnAck(a) => connect::connack_len(a, version),
        Packet::Publish(p) => publish::publish_len(p, version),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack::ack_len(a, version)
        }
        Packet::Subscribe(s) => subscribe::subscribe_len(s, version),
        Packet::SubAck(s) => subscribe::suback_len(s, version),
        Packet::Unsubscribe(u) => subscribe::unsubscribe_len(u, version),
        Packet::UnsubAck(u) => subscribe::unsuback_len(u, version),
        Packet::PingReq | Packet::PingResp => 2,
        Packet::Disconnect(d) => ack::tail_only_len(14, d.reason, &d.properties, version),
        Packet::Auth(a) => ack::tail_only_len(15, a.reason, &a.properties, version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_cap_applies_before_the_body_arrives() {
        // Two bytes of a PUBLISH claiming 127 more: 129 > 100, refused now.
        let err = decode(&[0x30, 0x7f], Version::V5, 100);
        assert_eq!(
            err,
            Err(DecodeError::PacketTooLarge {
                size: 129,
                max: 100
            })
        );
        assert_eq!(
            DecodeError::PacketTooLarge {
                size: 129,
                max: 100
            }
            .reason_code()
            .to_u8(),
            0x95
        );
        // Exactly at the cap is fine, and asks for the whole packet.
        let partial = decode(&[0x30, 0x7f, 0, 1], Version::V5, 129);
        assert_eq!(partial, Ok(Decoded::Incomplete { needed: 129 }));
    }

    #[test]
    fn decode_reports_the_length_and_leaves_the_next_packet() {
        let stream = [0xc0, 0x00, 0xd0, 0x00];
        let first = decode(&stream, Version::V3_1_1, 1024);
        assert_eq!(
            first,
            Ok(Decoded::Packet {
                packet: Packet::PingReq,
                len: 2
            })
        );
        let second = decode(stream.get(2..).unwrap_or_default(), Version::V3_1_1, 1024);
        assert_eq!(
            second,
            Ok(Decoded::Packet {
                packet: Packet::PingResp,
                len: 2
            })
        );
    }

    #[test]
    fn connect_version_needs_a_whole_well_framed_connect() {
        // 5.0 CONNECT with the reserved flag bit set: malformed, but it names 5.0.
        let v5 = [
            0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x03, 0, 60, 0, 0, 0,
        ];
        assert!(decode(&v5, Version::V3_1_1, 1024).is_err());
        assert_eq!(connect_version(&v5), Some(Version::V5));
        // Not yet complete, not a CONNECT, header flags wrong, unknown level: no version.
        assert_eq!(connect_version(&v5[..v5.len() - 1]), None);
        assert_eq!(connect_version(&[0x30, 0x03, 0, 1, b'a']), None);
        let mut flags = v5;
        flags[0] = 0x11;
        assert_eq!(connect_version(&flags), None);
        let mut level = v5;
        level[8] = 6;
        assert_eq!(connect_version(&level), None);
    }

    #[test]
    fn errors_display_their_reason_code() {
        let text = DecodeError::DuplicateProperty { id: 0x23 }.to_string();
        assert!(text.contains("0x82"), "{text}");
    }
}
