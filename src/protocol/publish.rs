//! PUBLISH: decode and encode, the broker's hottest path.
//!
//! Owns: the PUBLISH flags (DUP, QoS, RETAIN), the topic name rules and the packet
//! identifier rule. Invariant: a decoded `Publish` has a topic without wildcards or U+0000,
//! non-empty unless a 5.0 Topic Alias stands for it, a packet id exactly when QoS > 0, and
//! a payload that borrows the rest of the packet. Decoding allocates nothing; encoding
//! reserves once and appends. Must not touch: topic aliases' meaning, ACLs, the session.

use super::error::DecodeError;
use super::packet::{Publish, QoS, Version};
use super::properties::{block_len, decode_properties, put_properties, PropKind, Properties};
use super::wire::{bin_len, put_bin, put_header, put_u16, total_len, Reader};

/// Decode the body of a PUBLISH whose fixed header's first byte is `first`.
#[inline]
pub(crate) fn decode_publish(
    first: u8,
    body: &[u8],
    version: Version,
) -> Result<Publish<'_>, DecodeError> {
    let qos = QoS::from_bits((first >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let dup = first & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupWithQoS0);
    }
    let mut r = Reader::new(body);
    let topic = r.topic_name()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(r.packet_id()?),
    };
    let properties = if version.is_v5() {
        decode_properties(&mut r, PropKind::Publish)?
    } else {
        Properties::default()
    };
    if topic.is_empty() {
        if !version.is_v5() {
            return Err(DecodeError::EmptyTopicName);
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::MissingTopicAlias);
        }
    }
    Ok(Publish {
        dup,
        qos,
        retain: first & 1 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn first_byte(p: &Publish<'_>) -> u8 {
    0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
}

/// Remaining length of `p` given its property content length (ignored before 5.0).
fn body_len(p: &Publish<'_>, version: Version, props: usize) -> usize {
    let id = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let props = if version.is_v5() { block_len(props) } else { 0 };
    bin_len(p.topic.as_bytes()) + id + props + p.payload.len()
}

fn props_content(p: &Publish<'_>, version: Version) -> usize {
    if version.is_v5() {
        p.properties.content_len()
    } else {
        0
    }
}

/// Exact encoded size of `p`, fixed header included.
pub(crate) fn publish_len(p: &Publish<'_>, version: Version) -> usize {
    total_len(body_len(p, version, props_content(p, version)))
}

/// Append `p` to `out`: one reservation, then straight copies.
///
/// The packet id is written exactly when QoS > 0 (0 if the caller left it out, which a
/// peer refuses); properties are written only for 5.0.
#[inline]
pub fn encode_publish(out: &mut Vec<u8>, version: Version, p: &Publish<'_>) {
    let props = props_content(p, version);
    let body = body_len(p, version, props);
    out.reserve(total_len(body));
    put_header(out, first_byte(p), body);
    put_bin(out, p.topic.as_bytes());
    if p.qos != QoS::AtMostOnce {
        put_u16(out, p.packet_id.map_or(0, |id| id.get()));
    }
    if version.is_v5() {
        put_properties(out, &p.properties, props);
    }
    out.extend_from_slice(p.payload);
}

#[cfg(test)]
mod tests {
    use super::super::properties::UserProperties;
    use super::super::testutil::{expect_errors, expect_packet, round_trip, Case};
    use super::super::{Packet, PacketId};
    use super::*;
    use DecodeError as E;
    use Version::{V3_1, V3_1_1, V5};

    fn publish<'a>(qos: QoS, topic: &'a str, payload: &'a [u8]) -> Publish<'a> {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(7)).flatten(),
            properties: Properties::default(),
            payload,
        }
    }

    #[test]
    fn round_trips_in_every_version() {
        for version in [V3_1, V3_1_1, V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut p = publish(qos, "a/b", b"hello");
                p.retain = true;
                p.dup = qos != QoS::AtMostOnce;
                round_trip(&Packet::Publish(p), version);
            }
        }
    }

    #[test]
    fn round_trips_with_properties() {
        let users = [("k", "v"), ("k", "w")];
        let mut p = publish(QoS::AtLeastOnce, "", b"x");
        p.properties = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain"),
            response_topic: Some("re/ply"),
            correlation_data: Some(b"\x00\x01"),
            subscription_identifiers: super::super::SubscriptionIds::Slice(&[1, 268_435_455]),
            topic_alias: Some(3),
            user_properties: UserProperties::Slice(&users),
            ..Properties::default()
        };
        let bytes = round_trip(&Packet::Publish(p.clone()), V5);
        let Packet::Publish(got) = expect_packet(&bytes, V5) else {
            panic!("not a publish")
        };
        assert_eq!(
            got.properties.user_properties.iter().collect::<Vec<_>>(),
            users
        );
        assert_eq!(got.properties.subscription_identifiers.len(), 2);
    }

    #[test]
    fn decodes_literal_bytes() {
        let bytes = [0x32, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0a, b'x'];
        let want = Packet::Publish(Publish {
            packet_id: PacketId::new(10),
            ..publish(QoS::AtLeastOnce, "a/b", b"x")
        });
        assert_eq!(expect_packet(&bytes, V3_1_1), want);
    }

    const MALFORMED: &[Case] = &[
        (
            "qos 3",
            V3_1_1,
            &[0x36, 0x03, 0x00, 0x01, b'a'],
            E::InvalidQoS,
            0x81,
        ),
        (
            "dup qos 0",
            V3_1_1,
            &[0x38, 0x03, 0x00, 0x01, b'a'],
            E::DupWithQoS0,
            0x81,
        ),
        (
            "plus in topic",
            V3_1_1,
            &[0x30, 0x03, 0x00, 0x01, b'+'],
            E::WildcardInTopicName,
            0x81,
        ),
        (
            "hash in topic",
            V5,
            &[0x30, 0x05, 0x00, 0x02, b'a', b'#', 0x00],
            E::WildcardInTopicName,
            0x81,
        ),
        (
            "nul in topic",
            V3_1_1,
            &[0x30, 0x03, 0x00, 0x01, 0x00],
            E::NullCharacter,
            0x81,
        ),
        (
            "bad utf-8",
            V3_1_1,
            &[0x30, 0x04, 0x00, 0x02, 0xc3, 0x28],
            E::InvalidUtf8,
            0x81,
        ),
        (
            "surrogate",
            V5,
            &[0x30, 0x06, 0x00, 0x03, 0xed, 0xa0, 0x80, 0x00],
            E::InvalidUtf8,
            0x81,
        ),
        (
            "empty topic 3.1.1",
            V3_1_1,
            &[0x30, 0x02, 0x00, 0x00],
            E::EmptyTopicName,
            0x81,
        ),
        (
            "empty topic 5 no alias",
            V5,
            &[0x30, 0x03, 0x00, 0x00, 0x00],
            E::MissingTopicAlias,
            0x82,
        ),
        (
            "packet id 0",
            V3_1_1,
            &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
            E::ZeroPacketId,
            0x82,
        ),
        (
            "topic past end",
            V3_1_1,
            &[0x30, 0x03, 0x00, 0x05, b'a'],
            E::UnexpectedEnd,
            0x81,
        ),
        (
            "no packet id",
            V3_1_1,
            &[0x32, 0x03, 0x00, 0x01, b'a'],
            E::UnexpectedEnd,
            0x81,
        ),
        (
            "topic alias 0",
            V5,
            &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00],
            E::InvalidPropertyValue { id: 0x23 },
            0x94,
        ),
        (
            "duplicate alias",
            V5,
            &[
                0x30, 0x0a, 0x00, 0x01, b'a', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02,
            ],
            E::DuplicateProperty { id: 0x23 },
            0x82,
        ),
        (
            "session expiry in publish",
            V5,
            &[0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x11, 0, 0, 0, 1],
            E::InvalidPropertyId { id: 0x11 },
            0x81,
        ),
        (
            "payload format 2",
            V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x01, 0x02],
            E::InvalidPropertyValue { id: 0x01 },
            0x82,
        ),
        (
            "subscription id 0",
            V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x0b, 0x00],
            E::InvalidPropertyValue { id: 0x0b },
            0x82,
        ),
        (
            "property block past end",
            V5,
            &[0x30, 0x05, 0x00, 0x01, b'a', 0x09, 0x01],
            E::UnexpectedEnd,
            0x81,
        ),
        (
            "wildcard response topic",
            V5,
            &[0x30, 0x08, 0x00, 0x01, b'a', 0x04, 0x08, 0x00, 0x01, b'#'],
            E::WildcardInTopicName,
            0x81,
        ),
    ];

    #[test]
    fn malformed_table() {
        expect_errors(MALFORMED);
    }
}
