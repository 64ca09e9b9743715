//! PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT, AUTH, PINGREQ and PINGRESP.
//!
//! Owns: the packets whose body is at most a packet id, a reason code and a property block,
//! including 5.0's short forms (reason and properties omitted when Success and empty).
//! Invariant: a decoded reason code is one the packet type may carry; encoding writes the
//! shortest form the specification allows. Must not touch: what an ack means to a session.

use super::error::DecodeError;
use super::packet::{Ack, Auth, Disconnect, PacketId, Version};
use super::properties::{block_len, decode_properties, put_properties, PropKind, Properties};
use super::reason::ReasonCode;
use super::wire::{put_header, put_u16, total_len, Reader};

/// Read the optional 5.0 tail: reason code, then an optional property block.
fn decode_tail<'a>(
    r: &mut Reader<'a>,
    type_id: u8,
    kind: PropKind,
    default: ReasonCode,
) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    if r.is_empty() {
        return Ok((default, Properties::default()));
    }
    let code = r.u8()?;
    let reason =
        ReasonCode::for_packet(type_id, code).ok_or(DecodeError::InvalidReasonCode { code })?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        decode_properties(r, kind)?
    };
    r.finish()?;
    Ok((reason, properties))
}

/// Decode PUBACK (4), PUBREC (5), PUBREL (6) or PUBCOMP (7).
pub(crate) fn decode_ack(
    type_id: u8,
    body: &[u8],
    version: Version,
) -> Result<Ack<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.packet_id()?;
    if !version.is_v5() {
        r.finish()?;
        return Ok(Ack::new(packet_id));
    }
    let (reason, properties) = decode_tail(&mut r, type_id, PropKind::Ack, ReasonCode::Success)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// Decode DISCONNECT; before 5.0 its body is empty.
pub(crate) fn decode_disconnect(
    body: &[u8],
    version: Version,
) -> Result<Disconnect<'_>, DecodeError> {
    let mut r = Reader::new(body);
    if !version.is_v5() {
        r.finish()?;
        return Ok(Disconnect {
            reason: ReasonCode::NormalDisconnection,
            properties: Properties::default(),
        });
    }
    let default = ReasonCode::NormalDisconnection;
    let (reason, properties) = decode_tail(&mut r, 14, PropKind::Disconnect, default)?;
    Ok(Disconnect { reason, properties })
}

/// Decode AUTH (5.0 only: the header check refuses type 15 before 5.0).
pub(crate) fn decode_auth(body: &[u8]) -> Result<Auth<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let (reason, properties) = decode_tail(&mut r, 15, PropKind::Auth, ReasonCode::Success)?;
    Ok(Auth { reason, properties })
}

/// Decode PINGREQ or PINGRESP: the body must be empty.
pub(crate) fn decode_empty(body: &[u8]) -> Result<(), DecodeError> {
    Reader::new(body).finish()
}

/// Size of the 5.0 tail: nothing for Success without properties, the reason alone without
/// properties, else reason and block.
fn tail_len(reason: ReasonCode, props: usize, version: Version) -> usize {
    match (version.is_v5(), reason.to_u8(), props) {
        (false, _, _) | (true, 0, 0) => 0,
        (true, _, 0) => 1,
        (true, _, n) => 1 + block_len(n),
    }
}

fn put_tail(out: &mut Vec<u8>, reason: ReasonCode, p: &Properties<'_>, props: usize, tail: usize) {
    if tail > 0 {
        out.push(reason.to_u8());
    }
    if tail > 1 {
        put_properties(out, p, props);
    }
}

fn props_content(p: &Properties<'_>, version: Version) -> usize {
    if version.is_v5() {
        p.content_len()
    } else {
        0
    }
}

/// First byte of an ack of `type_id` (PUBREL carries flags 0b0010).
fn ack_first(type_id: u8) -> u8 {
    (type_id << 4) | if type_id == 6 { 0b0010 } else { 0 }
}

/// Append an ack of type `type_id` (4..=7).
pub(crate) fn encode_ack(out: &mut Vec<u8>, type_id: u8, a: &Ack<'_>, version: Version) {
    let props = props_content(&a.properties, version);
    let tail = tail_len(a.reason, props, version);
    out.reserve(total_len(2 + tail));
    put_header(out, ack_first(type_id), 2 + tail);
    put_u16(out, a.packet_id.get());
    put_tail(out, a.reason, &a.properties, props, tail);
}

/// Append an ack of type `type_id` (4..=7) with packet id `pid`, `reason` and no
/// properties: the same bytes as [`encode_ack`], with the four-byte short form (3.x, or 5.0
/// Success) written without looking at properties. The hot path of every QoS 1/2 flow.
pub fn encode_plain_ack(
    out: &mut Vec<u8>,
    type_id: u8,
    pid: PacketId,
    reason: ReasonCode,
    version: Version,
) {
    if !version.is_v5() || reason.to_u8() == 0 {
        let [hi, lo] = pid.get().to_be_bytes();
        out.extend_from_slice(&[ack_first(type_id), 2, hi, lo]);
        return;
    }
    let ack = Ack {
        packet_id: pid,
        reason,
        properties: Properties::default(),
    };
    encode_ack(out, type_id, &ack, version);
}

/// Encoded size of an ack.
pub(crate) fn ack_len(a: &Ack<'_>, version: Version) -> usize {
    total_len(2 + tail_len(a.reason, props_content(&a.properties, version), version))
}

/// Append a DISCONNECT (type 14) or AUTH (type 15): a tail and nothing else. AUTH exists
/// only in 5.0; asked for 3.x it is still written in the 5.0 form, which a 3.x peer refuses.
pub(crate) fn encode_tail_only(
    out: &mut Vec<u8>,
    type_id: u8,
    reason: ReasonCode,
    p: &Properties<'_>,
    version: Version,
) {
    let version = if type_id == 15 { Version::V5 } else { version };
    let props = props_content(p, version);
    let tail = tail_len(reason, props, version);
    out.reserve(total_len(tail));
    put_header(out, type_id << 4, tail);
    put_tail(out, reason, p, props, tail);
}

/// Encoded size of a DISCONNECT or AUTH.
pub(crate) fn tail_only_len(
    type_id: u8,
    reason: ReasonCode,
    p: &Properties<'_>,
    version: Version,
) -> usize {
    let version = if type_id == 15 { Version::V5 } else { version };
    total_len(tail_len(reason, props_content(p, version), version))
}

#[cfg(test)]
mod tests {
    use super::super::properties::UserProperties;
    use super::super::testutil::{expect_errors, expect_packet, round_trip, Case};
    use super::super::Packet;
    use super::*;
    use DecodeError as E;
    use Version::{V3_1, V3_1_1, V5};

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap_or(PacketId::MIN)
    }

    /// The plain-ack shortcut writes exactly what the general encoder writes.
    #[test]
    fn plain_ack_matches_encode() {
        let reasons = [ReasonCode::Success, ReasonCode::NoMatchingSubscribers];
        for version in [V3_1, V3_1_1, V5] {
            for type_id in 4..=7 {
                for reason in reasons {
                    let ack = Ack {
                        packet_id: id(258),
                        reason,
                        properties: Properties::default(),
                    };
                    let (mut general, mut plain) = (Vec::new(), Vec::new());
                    encode_ack(&mut general, type_id, &ack, version);
                    encode_plain_ack(&mut plain, type_id, id(258), reason, version);
                    assert_eq!(plain, general, "{version:?} type {type_id} {reason:?}");
                }
            }
        }
    }

    fn with_props(reason: ReasonCode) -> Ack<'static> {
        Ack {
            packet_id: id(513),
            reason,
            properties: Properties {
                reason_string: Some("why"),
                user_properties: UserProperties::Slice(&[("a", "b")]),
                ..Properties::default()
            },
        }
    }

    fn acks(a: Ack<'static>) -> [Packet<'static>; 4] {
        [
            Packet::PubAck(a.clone()),
            Packet::PubRec(a.clone()),
            Packet::PubRel(a.clone()),
            Packet::PubComp(a),
        ]
    }

    #[test]
    fn acks_round_trip_in_every_version() {
        for version in [V3_1, V3_1_1, V5] {
            for p in acks(Ack::new(id(1))) {
                assert_eq!(round_trip(&p, version).len(), 4, "short form");
            }
        }
        for p in acks(with_props(ReasonCode::Success)) {
            round_trip(&p, V5);
        }
        round_trip(
            &Packet::PubAck(with_props(ReasonCode::NoMatchingSubscribers)),
            V5,
        );
        let bare = Ack {
            reason: ReasonCode::PacketIdentifierNotFound,
            ..Ack::new(id(2))
        };
        assert_eq!(round_trip(&Packet::PubRel(bare), V5), [0x62, 3, 0, 2, 0x92]);
    }

    #[test]
    fn disconnect_auth_and_pings_round_trip() {
        let normal = Disconnect {
            reason: ReasonCode::NormalDisconnection,
            properties: Properties::default(),
        };
        for version in [V3_1, V3_1_1, V5] {
            assert_eq!(
                round_trip(&Packet::Disconnect(normal.clone()), version),
                [0xe0, 0]
            );
            assert_eq!(round_trip(&Packet::PingReq, version), [0xc0, 0]);
            assert_eq!(round_trip(&Packet::PingResp, version), [0xd0, 0]);
        }
        let props = Properties {
            session_expiry_interval: Some(0),
            server_reference: Some("x"),
            ..Properties::default()
        };
        let d = Disconnect {
            reason: ReasonCode::SessionTakenOver,
            properties: props,
        };
        round_trip(&Packet::Disconnect(d), V5);
        let taken = Disconnect {
            reason: ReasonCode::SessionTakenOver,
            properties: Properties::default(),
        };
        assert_eq!(round_trip(&Packet::Disconnect(taken), V5), [0xe0, 1, 0x8e]);
        let auth = Auth {
            reason: ReasonCode::Success,
            properties: Properties::default(),
        };
        assert_eq!(round_trip(&Packet::Auth(auth), V5), [0xf0, 0]);
        let method = Properties {
            authentication_method: Some("SCRAM"),
            authentication_data: Some(b"\x01"),
            ..Properties::default()
        };
        round_trip(
            &Packet::Auth(Auth {
                reason: ReasonCode::ContinueAuthentication,
                properties: method,
            }),
            V5,
        );
    }

    #[test]
    fn decoder_accepts_every_short_form() {
        let full = Packet::PubAck(Ack::new(id(1)));
        assert_eq!(expect_packet(&[0x40, 2, 0, 1], V5), full);
        assert_eq!(expect_packet(&[0x40, 3, 0, 1, 0], V5), full);
        assert_eq!(expect_packet(&[0x40, 4, 0, 1, 0, 0], V5), full);
        let normal = Packet::Disconnect(Disconnect {
            reason: ReasonCode::NormalDisconnection,
            properties: Properties::default(),
        });
        assert_eq!(expect_packet(&[0xe0, 1, 0], V5), normal);
        assert_eq!(expect_packet(&[0xe0, 2, 0, 0], V5), normal);
    }

    #[rustfmt::skip]
    const MALFORMED: &[Case] = &[
        ("puback id 0", V3_1_1, &[0x40, 2, 0, 0], E::ZeroPacketId, 0x82),
        ("puback short", V3_1_1, &[0x40, 1, 0], E::UnexpectedEnd, 0x81),
        ("puback 3.1.1 trailing", V3_1_1, &[0x40, 3, 0, 1, 0], E::TrailingBytes, 0x81),
        ("pubrel flags 0", V3_1_1, &[0x60, 2, 0, 1], E::InvalidHeaderFlags { type_id: 6, flags: 0 }, 0x81),
        ("puback flags 2", V5, &[0x42, 2, 0, 1], E::InvalidHeaderFlags { type_id: 4, flags: 2 }, 0x81),
        ("puback reason 0x92", V5, &[0x40, 3, 0, 1, 0x92], E::InvalidReasonCode { code: 0x92 }, 0x81),
        ("pubrel reason 0x10", V5, &[0x62, 3, 0, 1, 0x10], E::InvalidReasonCode { code: 0x10 }, 0x81),
        ("pubcomp reason 0x80", V5, &[0x70, 3, 0, 1, 0x80], E::InvalidReasonCode { code: 0x80 }, 0x81),
        ("puback topic alias prop", V5, &[0x40, 7, 0, 1, 0, 3, 0x23, 0, 1], E::InvalidPropertyId { id: 0x23 }, 0x81),
        ("puback two reason strings", V5, &[0x40, 10, 0, 1, 0, 6, 0x1f, 0, 0, 0x1f, 0, 0], E::DuplicateProperty { id: 0x1f }, 0x82),
        ("puback props trailing", V5, &[0x40, 5, 0, 1, 0, 0, 9], E::TrailingBytes, 0x81),
        ("disconnect 3.1.1 body", V3_1_1, &[0xe0, 1, 0], E::TrailingBytes, 0x81),
        ("disconnect reason 0x01", V5, &[0xe0, 1, 0x01], E::InvalidReasonCode { code: 0x01 }, 0x81),
        ("disconnect flags", V5, &[0xe1, 0], E::InvalidHeaderFlags { type_id: 14, flags: 1 }, 0x81),
        ("disconnect will delay", V5, &[0xe0, 7, 0, 5, 0x18, 0, 0, 0, 1], E::InvalidPropertyId { id: 0x18 }, 0x81),
        ("auth in 3.1.1", V3_1_1, &[0xf0, 0], E::ReservedPacketType { type_id: 15 }, 0x81),
        ("auth reason 0x04", V5, &[0xf0, 1, 0x04], E::InvalidReasonCode { code: 0x04 }, 0x81),
        ("auth data without method", V5, &[0xf0, 5, 0x18, 3, 0x16, 0, 0], E::AuthDataWithoutMethod, 0x82),
        ("pingreq body", V3_1_1, &[0xc0, 1, 0], E::TrailingBytes, 0x81),
        ("pingresp flags", V5, &[0xd4, 0], E::InvalidHeaderFlags { type_id: 13, flags: 4 }, 0x81),
        ("reserved type 0", V5, &[0x00, 0], E::ReservedPacketType { type_id: 0 }, 0x81),
        ("varint 5 bytes", V5, &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], E::VarintTooLong, 0x81),
        ("varint padded", V5, &[0xc0, 0x80, 0x00], E::VarintNotMinimal, 0x81),
        ("property length 5 bytes", V5, &[0x40, 8, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x7f], E::VarintTooLong, 0x81),
    ];

    #[test]
    fn malformed_table() {
        expect_errors(MALFORMED);
    }
}
