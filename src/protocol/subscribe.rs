//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK, and the lazily iterated filter lists.
//!
//! Owns: the subscription options byte, the payload lists and their per-entry rules.
//! Invariant: a decoded list is non-empty, each filter is non-empty valid UTF-8 without
//! U+0000, each options byte has no reserved bit, QoS ≤ 2 and Retain Handling ≤ 2, and
//! each ack code is one the packet may carry. Filter syntax (`a/#/b`, `+x`) is NOT checked
//! here: the broker answers a bad filter with a SUBACK failure code, per the spec (see
//! docs/decisions/0001-codec.md). Must not touch: the topic tree, ACLs, sessions.

use super::error::DecodeError;
use super::packet::{
    QoS, RetainHandling, StrList, SubAck, Subscribe, Subscription, SubscriptionList,
    SubscriptionOptions, UnsubAck, Unsubscribe, Version,
};
use super::properties::{block_len, decode_properties, put_properties, PropKind, Properties};
use super::reason::ReasonCode;
use super::wire::{bin_len, put_bin, put_header, put_u16, total_len, Reader};

const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;

impl SubscriptionOptions {
    /// Parse an options byte: reserved bits (6–7 in 5.0, 2–7 before) are malformed
    /// [MQTT-3.8.3-5], QoS 3 is malformed, Retain Handling 3 is a protocol error.
    pub fn from_byte(byte: u8, version: Version) -> Result<SubscriptionOptions, DecodeError> {
        let reserved = if version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if byte & reserved != 0 {
            return Err(DecodeError::ReservedSubscriptionOptions);
        }
        let qos = QoS::from_bits(byte & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }
}

fn check_filter(filter: &str) -> Result<&str, DecodeError> {
    if filter.is_empty() {
        Err(DecodeError::EmptyTopicFilter)
    } else {
        Ok(filter)
    }
}

/// The packet id and (5.0) property block every one of these packets starts with.
fn decode_head<'a>(
    r: &mut Reader<'a>,
    version: Version,
    kind: PropKind,
) -> Result<(super::PacketId, Properties<'a>), DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if version.is_v5() {
        decode_properties(r, kind)?
    } else {
        Properties::default()
    };
    Ok((packet_id, properties))
}

/// Decode a SUBSCRIBE body.
pub(crate) fn decode_subscribe(
    body: &[u8],
    version: Version,
) -> Result<Subscribe<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let (packet_id, properties) = decode_head(&mut r, version, PropKind::Subscribe)?;
    let payload = r.rest();
    if payload.is_empty() {
        return Err(DecodeError::EmptyPayload { type_id: SUBSCRIBE });
    }
    let mut p = Reader::new(payload);
    while !p.is_empty() {
        let filter = check_filter(p.str()?)?;
        let options = SubscriptionOptions::from_byte(p.u8()?, version)?;
        if options.no_local && filter.starts_with("$share/") {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters: SubscriptionList::Wire(payload),
    })
}

/// Decode an UNSUBSCRIBE body.
pub(crate) fn decode_unsubscribe(
    body: &[u8],
    version: Version,
) -> Result<Unsubscribe<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let (packet_id, properties) = decode_head(&mut r, version, PropKind::Unsubscribe)?;
    let payload = r.rest();
    if payload.is_empty() {
        return Err(DecodeError::EmptyPayload {
            type_id: UNSUBSCRIBE,
        });
    }
    let mut p = Reader::new(payload);
    while !p.is_empty() {
        check_filter(p.str()?)?;
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters: StrList::Wire(payload),
    })
}

/// Check every ack code of a SUBACK or 5.0 UNSUBACK.
fn check_codes(codes: &[u8], type_id: u8, version: Version) -> Result<(), DecodeError> {
    if codes.is_empty() {
        return Err(DecodeError::EmptyPayload { type_id });
    }
    for &code in codes {
        let ok = if version.is_v5() {
            ReasonCode::for_packet(type_id, code).is_some()
        } else {
            matches!(code, 0 | 1 | 2 | 0x80)
        };
        if !ok {
            return Err(DecodeError::InvalidReasonCode { code });
        }
    }
    Ok(())
}

/// Decode a SUBACK body.
pub(crate) fn decode_suback(body: &[u8], version: Version) -> Result<SubAck<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let (packet_id, properties) = decode_head(&mut r, version, PropKind::SubAck)?;
    let codes = r.rest();
    check_codes(codes, SUBACK, version)?;
    Ok(SubAck {
        packet_id,
        properties,
        codes,
    })
}

/// Decode an UNSUBACK body: before 5.0 it is the packet id alone.
pub(crate) fn decode_unsuback(body: &[u8], version: Version) -> Result<UnsubAck<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let (packet_id, properties) = decode_head(&mut r, version, PropKind::UnsubAck)?;
    let codes = r.rest();
    if version.is_v5() {
        check_codes(codes, UNSUBACK, version)?;
    } else if !codes.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        codes,
    })
}

/// Size and content length of a (5.0) property block, 0/0 before 5.0.
fn props_sizes(p: &Properties<'_>, version: Version) -> (usize, usize) {
    if version.is_v5() {
        let content = p.content_len();
        (content, block_len(content))
    } else {
        (0, 0)
    }
}

/// Write the fixed header, packet id and property block shared by the four packets.
fn put_head(
    out: &mut Vec<u8>,
    first: u8,
    body: usize,
    id: u16,
    p: &Properties<'_>,
    props: usize,
    version: Version,
) {
    out.reserve(total_len(body));
    put_header(out, first, body);
    put_u16(out, id);
    if version.is_v5() {
        put_properties(out, p, props);
    }
}

fn subscribe_body(s: &Subscribe<'_>, version: Version) -> (usize, usize) {
    let (content, block) = props_sizes(&s.properties, version);
    let list: usize = s
        .filters
        .iter()
        .map(|f| bin_len(f.filter.as_bytes()) + 1)
        .sum();
    (content, 2 + block + list)
}

/// Append a SUBSCRIBE. Before 5.0 only the QoS bits of each options byte are written.
pub(crate) fn encode_subscribe(out: &mut Vec<u8>, s: &Subscribe<'_>, version: Version) {
    let (content, body) = subscribe_body(s, version);
    put_head(
        out,
        0x82,
        body,
        s.packet_id.get(),
        &s.properties,
        content,
        version,
    );
    for f in s.filters.iter() {
        put_bin(out, f.filter.as_bytes());
        let byte = f.options.to_byte();
        out.push(if version.is_v5() { byte } else { byte & 0b11 });
    }
}

/// Encoded size of a SUBSCRIBE.
pub(crate) fn subscribe_len(s: &Subscribe<'_>, version: Version) -> usize {
    total_len(subscribe_body(s, version).1)
}

fn unsubscribe_body(u: &Unsubscribe<'_>, version: Version) -> (usize, usize) {
    let (content, block) = props_sizes(&u.properties, version);
    let list: usize = u.filters.iter().map(|f| bin_len(f.as_bytes())).sum();
    (content, 2 + block + list)
}

/// Append an UNSUBSCRIBE.
pub(crate) fn encode_unsubscribe(out: &mut Vec<u8>, u: &Unsubscribe<'_>, version: Version) {
    let (content, body) = unsubscribe_body(u, version);
    put_head(
        out,
        0xa2,
        body,
        u.packet_id.get(),
        &u.properties,
        content,
        version,
    );
    for f in u.filters.iter() {
        put_bin(out, f.as_bytes());
    }
}

/// Encoded size of an UNSUBSCRIBE.
pub(crate) fn unsubscribe_len(u: &Unsubscribe<'_>, version: Version) -> usize {
    total_len(unsubscribe_body(u, version).1)
}

/// Append a SUBACK.
pub(crate) fn encode_suback(out: &mut Vec<u8>, s: &SubAck<'_>, version: Version) {
    let (content, block) = props_sizes(&s.properties, version);
    let body = 2 + block + s.codes.len();
    put_head(
        out,
        0x90,
        body,
        s.packet_id.get(),
        &s.properties,
        content,
        version,
    );
    out.extend_from_slice(s.codes);
}

/// Encoded size of a SUBACK.
pub(crate) fn suback_len(s: &SubAck<'_>, version: Version) -> usize {
    total_len(2 + props_sizes(&s.properties, version).1 + s.codes.len())
}

/// Append an UNSUBACK; before 5.0 the codes are not part of the packet.
pub(crate) fn encode_unsuback(out: &mut Vec<u8>, u: &UnsubAck<'_>, version: Version) {
    let (content, block) = props_sizes(&u.properties, version);
    let codes = if version.is_v5() { u.codes } else { &[] };
    let body = 2 + block + codes.len();
    put_head(
        out,
        0xb0,
        body,
        u.packet_id.get(),
        &u.properties,
        content,
        version,
    );
    out.extend_from_slice(codes);
}

/// Encoded size of an UNSUBACK.
pub(crate) fn unsuback_len(u: &UnsubAck<'_>, version: Version) -> usize {
    let codes = if version.is_v5() { u.codes.len() } else { 0 };
    total_len(2 + props_sizes(&u.properties, version).1 + codes)
}

#[derive(Debug, Clone)]
enum SubsInner<'a> {
    Wire(Reader<'a>),
    Slice(std::slice::Iter<'a, Subscription<'a>>),
}

/// Iterator over the entries of a `SubscriptionList`.
#[derive(Debug, Clone)]
pub struct SubscriptionIter<'a>(SubsInner<'a>);

/// The next (filter, options) of validated wire bytes; `None` at the end.
fn next_wire_subscription<'a>(r: &mut Reader<'a>) -> Option<Subscription<'a>> {
    let filter = r.str().ok()?;
    // Validated when decoded, so the 5.0 rules (the wider ones) always parse.
    let options = SubscriptionOptions::from_byte(r.u8().ok()?, Version::V5).ok()?;
    Some(Subscription { filter, options })
}

impl<'a> Iterator for SubscriptionIter<'a> {
    type Item = Subscription<'a>;

    fn next(&mut self) -> Option<Subscription<'a>> {
        match &mut self.0 {
            SubsInner::Slice(it) => it.next().copied(),
            SubsInner::Wire(r) => {
                let next = next_wire_subscription(r);
                if next.is_none() {
                    *r = Reader::new(&[]);
                }
                next
            }
        }
    }
}

impl<'a> SubscriptionList<'a> {
    /// The requested subscriptions in order.
    pub fn iter(&self) -> SubscriptionIter<'a> {
        match *self {
            SubscriptionList::Wire(bytes) => SubscriptionIter(SubsInner::Wire(Reader::new(bytes))),
            SubscriptionList::Slice(s) => SubscriptionIter(SubsInner::Slice(s.iter())),
        }
    }

    /// The number of entries (a scan for the wire form).
    pub fn len(&self) -> usize {
        match self {
            SubscriptionList::Slice(s) => s.len(),
            SubscriptionList::Wire(_) => self.iter().count(),
        }
    }

    /// True when there is no entry (never for a decoded SUBSCRIBE).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl PartialEq for SubscriptionList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SubscriptionList<'_> {}

#[derive(Debug, Clone)]
enum StrInner<'a> {
    Wire(Reader<'a>),
    Slice(std::slice::Iter<'a, &'a str>),
}

/// Iterator over the strings of a `StrList`.
#[derive(Debug, Clone)]
pub struct StrListIter<'a>(StrInner<'a>);

impl<'a> Iterator for StrListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match &mut self.0 {
            StrInner::Slice(it) => it.next().copied(),
            StrInner::Wire(r) => {
                let next = r.str().ok();
                if next.is_none() {
                    *r = Reader::new(&[]);
                }
                next
            }
        }
    }
}

impl<'a> StrList<'a> {
    /// The strings in order.
    pub fn iter(&self) -> StrListIter<'a> {
        match *self {
            StrList::Wire(bytes) => StrListIter(StrInner::Wire(Reader::new(bytes))),
            StrList::Slice(s) => StrListIter(StrInner::Slice(s.iter())),
        }
    }

    /// The number of strings (a scan for the wire form).
    pub fn len(&self) -> usize {
        match self {
            StrList::Slice(s) => s.len(),
            StrList::Wire(_) => self.iter().count(),
        }
    }

    /// True when there is no string (never for a decoded UNSUBSCRIBE).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl PartialEq for StrList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for StrList<'_> {}

#[cfg(test)]
mod tests {
    use super::super::properties::{SubscriptionIds, UserProperties};
    use super::super::testutil::{expect_errors, expect_packet, round_trip, Case};
    use super::super::{Packet, PacketId};
    use super::*;
    use DecodeError as E;
    use Version::{V3_1, V3_1_1, V5};

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap_or(PacketId::MIN)
    }

    fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    const V5_OPTIONS: SubscriptionOptions = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };

    #[test]
    fn subscribe_round_trips() {
        let subs = [
            Subscription {
                filter: "a/+/c",
                options: qos(QoS::AtLeastOnce),
            },
            Subscription {
                filter: "#",
                options: qos(QoS::ExactlyOnce),
            },
        ];
        let s = Subscribe {
            packet_id: id(9),
            properties: Properties::default(),
            filters: SubscriptionList::Slice(&subs),
        };
        for version in [V3_1, V3_1_1, V5] {
            round_trip(&Packet::Subscribe(s.clone()), version);
        }
        let rich = [Subscription {
            filter: "x",
            options: V5_OPTIONS,
        }];
        let props = Properties {
            subscription_identifiers: SubscriptionIds::Slice(&[42]),
            user_properties: UserProperties::Slice(&[("u", "v")]),
            ..Properties::default()
        };
        round_trip(
            &Packet::Subscribe(Subscribe {
                packet_id: id(1),
                properties: props,
                filters: SubscriptionList::Slice(&rich),
            }),
            V5,
        );
    }

    #[test]
    fn subscribe_literal_bytes_iterate() {
        let bytes = [0x82, 0x0b, 0, 5, 0, 1, b'a', 0x01, 0, 2, b'b', b'/', 0x02];
        let Packet::Subscribe(s) = expect_packet(&bytes, V3_1_1) else {
            panic!("not subscribe")
        };
        assert_eq!(s.filters.len(), 2);
        let got: Vec<_> = s
            .filters
            .iter()
            .map(|f| (f.filter, f.options.qos))
            .collect();
        assert_eq!(got, [("a", QoS::AtLeastOnce), ("b/", QoS::ExactlyOnce)]);
    }

    #[test]
    fn unsubscribe_and_acks_round_trip() {
        let u = Unsubscribe {
            packet_id: id(3),
            properties: Properties::default(),
            filters: StrList::Slice(&["a", "b/#"]),
        };
        let sa = SubAck {
            packet_id: id(3),
            properties: Properties::default(),
            codes: &[0, 1, 2, 0x80],
        };
        let ua = UnsubAck {
            packet_id: id(3),
            properties: Properties::default(),
            codes: &[],
        };
        for version in [V3_1, V3_1_1, V5] {
            round_trip(&Packet::Unsubscribe(u.clone()), version);
            round_trip(&Packet::SubAck(sa.clone()), version);
        }
        for version in [V3_1, V3_1_1] {
            assert_eq!(
                round_trip(&Packet::UnsubAck(ua.clone()), version),
                [0xb0, 2, 0, 3]
            );
        }
        let reason = Properties {
            reason_string: Some("no"),
            ..Properties::default()
        };
        let ua5 = UnsubAck {
            packet_id: id(3),
            properties: reason,
            codes: &[0x00, 0x11, 0x87],
        };
        round_trip(&Packet::UnsubAck(ua5), V5);
        let sa5 = SubAck {
            packet_id: id(4),
            properties: reason,
            codes: &[0x00, 0x9e, 0xa2],
        };
        round_trip(&Packet::SubAck(sa5), V5);
        let u5 = Unsubscribe {
            properties: Properties {
                user_properties: UserProperties::Slice(&[("k", "")]),
                ..Properties::default()
            },
            ..u
        };
        round_trip(&Packet::Unsubscribe(u5), V5);
    }

    #[rustfmt::skip]
    const MALFORMED: &[Case] = &[
        ("subscribe flags 0", V3_1_1, &[0x80, 6, 0, 1, 0, 1, b'a', 0], E::InvalidHeaderFlags { type_id: 8, flags: 0 }, 0x81),
        ("subscribe empty", V3_1_1, &[0x82, 2, 0, 1], E::EmptyPayload { type_id: 8 }, 0x82),
        ("subscribe empty v5", V5, &[0x82, 3, 0, 1, 0], E::EmptyPayload { type_id: 8 }, 0x82),
        ("subscribe id 0", V3_1_1, &[0x82, 6, 0, 0, 0, 1, b'a', 0], E::ZeroPacketId, 0x82),
        ("subscribe qos 3", V3_1_1, &[0x82, 6, 0, 1, 0, 1, b'a', 3], E::InvalidQoS, 0x81),
        ("subscribe 3.1.1 no local bit", V3_1_1, &[0x82, 6, 0, 1, 0, 1, b'a', 4], E::ReservedSubscriptionOptions, 0x81),
        ("subscribe v5 bit 6", V5, &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x40], E::ReservedSubscriptionOptions, 0x81),
        ("subscribe retain handling 3", V5, &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30], E::InvalidRetainHandling, 0x82),
        ("subscribe no local shared", V5, &[0x82, 15, 0, 1, 0, 0, 9, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', 0x04], E::NoLocalOnSharedSubscription, 0x82),
        ("subscribe missing options", V3_1_1, &[0x82, 5, 0, 1, 0, 1, b'a'], E::UnexpectedEnd, 0x81),
        ("subscribe empty filter", V3_1_1, &[0x82, 5, 0, 1, 0, 0, 1], E::EmptyTopicFilter, 0x81),
        ("subscribe nul filter", V3_1_1, &[0x82, 6, 0, 1, 0, 1, 0, 1], E::NullCharacter, 0x81),
        ("subscribe two sub ids", V5, &[0x82, 11, 0, 1, 4, 0x0b, 1, 0x0b, 2, 0, 1, b'a', 0], E::DuplicateProperty { id: 0x0b }, 0x82),
        ("subscribe reason string", V5, &[0x82, 10, 0, 1, 3, 0x1f, 0, 0, 0, 1, b'a', 0], E::InvalidPropertyId { id: 0x1f }, 0x81),
        ("unsubscribe empty", V3_1_1, &[0xa2, 2, 0, 1], E::EmptyPayload { type_id: 10 }, 0x82),
        ("unsubscribe flags", V3_1_1, &[0xa0, 5, 0, 1, 0, 1, b'a'], E::InvalidHeaderFlags { type_id: 10, flags: 0 }, 0x81),
        ("unsubscribe bad utf-8", V3_1_1, &[0xa2, 5, 0, 1, 0, 1, 0xff], E::InvalidUtf8, 0x81),
        ("unsubscribe string past end", V5, &[0xa2, 6, 0, 1, 0, 0, 3, b'a'], E::UnexpectedEnd, 0x81),
        ("suback 3.1.1 code 3", V3_1_1, &[0x90, 3, 0, 1, 3], E::InvalidReasonCode { code: 3 }, 0x81),
        ("suback v5 code 0x11", V5, &[0x90, 4, 0, 1, 0, 0x11], E::InvalidReasonCode { code: 0x11 }, 0x81),
        ("suback empty", V3_1_1, &[0x90, 2, 0, 1], E::EmptyPayload { type_id: 9 }, 0x82),
        ("unsuback 3.1.1 trailing", V3_1_1, &[0xb0, 3, 0, 1, 0], E::TrailingBytes, 0x81),
        ("unsuback v5 empty", V5, &[0xb0, 3, 0, 1, 0], E::EmptyPayload { type_id: 11 }, 0x82),
        ("unsuback v5 code 0x10", V5, &[0xb0, 4, 0, 1, 0, 0x10], E::InvalidReasonCode { code: 0x10 }, 0x81),
    ];

    #[test]
    fn malformed_table() {
        expect_errors(MALFORMED);
    }
}
