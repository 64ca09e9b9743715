//! CONNECT and CONNACK.
//!
//! Owns: the protocol name and level, the connect flags, the Will, credentials, and the
//! CONNACK acknowledge flags and return/reason code (3.x return codes mapped to 5.0 codes).
//! Invariant: a decoded `Connect` names a version we speak, its flags are consistent (no
//! reserved bit, no Will QoS/Retain without a Will, no password without a user name before
//! 5.0) and its Will topic is a valid, non-empty topic name. Must not touch: client id
//! assignment, authentication, session takeover: those belong to the broker.

use super::error::DecodeError;
use super::packet::{ConnAck, Connect, QoS, Version, Will};
use super::properties::{block_len, decode_properties, put_properties, PropKind, Properties};
use super::reason::ReasonCode;
use super::wire::{bin_len, put_bin, put_header, put_u16, total_len, Reader};

const CONNACK: u8 = 2;

/// The connect flags byte, checked.
struct Flags {
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
    clean_start: bool,
}

/// Read protocol name and level: unknown name or a level that does not go with the name
/// is 0x84 [MQTT-3.1.2-2].
fn read_version(r: &mut Reader<'_>) -> Result<Version, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQTT", 4) => Ok(Version::V3_1_1),
        (b"MQTT", 5) => Ok(Version::V5),
        (b"MQIsdp", 3) => Ok(Version::V3_1),
        (b"MQTT" | b"MQIsdp", _) => Err(DecodeError::UnsupportedProtocolLevel { level }),
        _ => Err(DecodeError::UnsupportedProtocolName),
    }
}

/// The version a CONNECT body names, if it names one we speak.
pub(crate) fn peek_version(body: &[u8]) -> Option<Version> {
    read_version(&mut Reader::new(body)).ok()
}

fn parse_flags(byte: u8, version: Version) -> Result<Flags, DecodeError> {
    if byte & 0b0000_0001 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_flag = byte & 0b0000_0100 != 0;
    let will_qos_bits = (byte >> 3) & 0b11;
    let will_retain = byte & 0b0010_0000 != 0;
    let password = byte & 0b0100_0000 != 0;
    let username = byte & 0b1000_0000 != 0;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let will_qos = QoS::from_bits(will_qos_bits).ok_or(DecodeError::InvalidQoS)?;
    if password && !username && !version.is_v5() {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    Ok(Flags {
        will: will_flag.then_some((will_qos, will_retain)),
        username,
        password,
        clean_start: byte & 0b0000_0010 != 0,
    })
}

fn decode_will<'a>(
    r: &mut Reader<'a>,
    version: Version,
    qos: QoS,
    retain: bool,
) -> Result<Will<'a>, DecodeError> {
    let properties = if version.is_v5() {
        decode_properties(r, PropKind::Will)?
    } else {
        Properties::default()
    };
    let topic = r.topic_name()?;
    if topic.is_empty() {
        return Err(DecodeError::EmptyTopicName);
    }
    Ok(Will {
        topic,
        payload: r.binary()?,
        qos,
        retain,
        properties,
    })
}

/// Decode a CONNECT body. The version comes from the packet, never from the caller.
pub(crate) fn decode_connect(body: &[u8]) -> Result<Connect<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let version = read_version(&mut r)?;
    let flags = parse_flags(r.u8()?, version)?;
    let keep_alive = r.u16()?;
    let properties = if version.is_v5() {
        decode_properties(&mut r, PropKind::Connect)?
    } else {
        Properties::default()
    };
    let client_id = r.str()?;
    let will = match flags.will {
        Some((qos, retain)) => Some(decode_will(&mut r, version, qos, retain)?),
        None => None,
    };
    let username = if flags.username { Some(r.str()?) } else { None };
    let password = if flags.password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        version,
        clean_start: flags.clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// Decode a CONNACK body; a 3.x return code is mapped to its 5.0 reason code.
pub(crate) fn decode_connack(body: &[u8], version: Version) -> Result<ConnAck<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let flags = r.u8()?;
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let code = r.u8()?;
    let (reason, properties) = if version.is_v5() {
        let reason = ReasonCode::for_packet(CONNACK, code);
        let reason = reason.ok_or(DecodeError::InvalidReasonCode { code })?;
        (reason, decode_properties(&mut r, PropKind::ConnAck)?)
    } else {
        let reason = ReasonCode::from_v3_connack(code);
        let reason = reason.ok_or(DecodeError::InvalidReasonCode { code })?;
        (reason, Properties::default())
    };
    r.finish()?;
    let session_present = flags & 1 != 0;
    if session_present && reason.is_error() {
        return Err(DecodeError::SessionPresentWithError);
    }
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn flags_byte(c: &Connect<'_>) -> u8 {
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0b100 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    flags | (u8::from(c.password.is_some()) << 6) | (u8::from(c.username.is_some()) << 7)
}

/// Property content lengths of CONNECT and its Will (0 before 5.0).
fn props_content(c: &Connect<'_>) -> (usize, usize) {
    if !c.version.is_v5() {
        return (0, 0);
    }
    let will = c.will.as_ref().map_or(0, |w| w.properties.content_len());
    (c.properties.content_len(), will)
}

fn connect_body(c: &Connect<'_>, props: (usize, usize)) -> usize {
    let v5 = c.version.is_v5();
    let head = bin_len(c.version.protocol_name().as_bytes()) + 1 + 1 + 2;
    let props_len = if v5 { block_len(props.0) } else { 0 };
    let will = c.will.as_ref().map_or(0, |w| {
        let wp = if v5 { block_len(props.1) } else { 0 };
        wp + bin_len(w.topic.as_bytes()) + bin_len(w.payload)
    });
    let user = c.username.map_or(0, |u| bin_len(u.as_bytes()));
    let pass = c.password.map_or(0, bin_len);
    head + props_len + bin_len(c.client_id.as_bytes()) + will + user + pass
}

/// Append a CONNECT in the version it names (the caller's version is not consulted).
pub(crate) fn encode_connect(out: &mut Vec<u8>, c: &Connect<'_>) {
    let props = props_content(c);
    let body = connect_body(c, props);
    let v5 = c.version.is_v5();
    out.reserve(total_len(body));
    put_header(out, 0x10, body);
    put_bin(out, c.version.protocol_name().as_bytes());
    out.push(c.version.level());
    out.push(flags_byte(c));
    put_u16(out, c.keep_alive);
    if v5 {
        put_properties(out, &c.properties, props.0);
    }
    put_bin(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            put_properties(out, &w.properties, props.1);
        }
        put_bin(out, w.topic.as_bytes());
        put_bin(out, w.payload);
    }
    if let Some(u) = c.username {
        put_bin(out, u.as_bytes());
    }
    if let Some(p) = c.password {
        put_bin(out, p);
    }
}

/// Encoded size of a CONNECT.
pub(crate) fn connect_len(c: &Connect<'_>) -> usize {
    total_len(connect_body(c, props_content(c)))
}

/// Append a CONNACK; before 5.0 the reason is written as its 3.x return code.
pub(crate) fn encode_connack(out: &mut Vec<u8>, a: &ConnAck<'_>, version: Version) {
    let props = if version.is_v5() {
        a.properties.content_len()
    } else {
        0
    };
    let body = 2 + if version.is_v5() { block_len(props) } else { 0 };
    out.reserve(total_len(body));
    put_header(out, 0x20, body);
    out.push(u8::from(a.session_present));
    if version.is_v5() {
        out.push(a.reason.to_u8());
        put_properties(out, &a.properties, props);
    } else {
        out.push(a.reason.to_v3_connack());
    }
}

/// Encoded size of a CONNACK.
pub(crate) fn connack_len(a: &ConnAck<'_>, version: Version) -> usize {
    let props = if version.is_v5() {
        block_len(a.properties.content_len())
    } else {
        0
    };
    total_len(2 + props)
}

#[cfg(test)]
mod tests {
    use super::super::properties::UserProperties;
    use super::super::testutil::{expect_errors, expect_packet, round_trip, Case};
    use super::super::Packet;
    use super::*;
    use DecodeError as E;
    use Version::{V3_1, V3_1_1, V5};

    fn connect(version: Version) -> Connect<'static> {
        Connect {
            version,
            clean_start: true,
            keep_alive: 60,
            client_id: "c1",
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    fn will(properties: Properties<'static>) -> Will<'static> {
        Will {
            topic: "last/words",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties,
        }
    }

    #[test]
    fn connect_round_trips_in_every_version() {
        for version in [V3_1, V3_1_1, V5] {
            round_trip(&Packet::Connect(connect(version)), V3_1_1);
            let full = Connect {
                will: Some(will(Properties::default())),
                username: Some("user"),
                password: Some(b"pw\x00"),
                clean_start: false,
                ..connect(version)
            };
            round_trip(&Packet::Connect(full), V5);
        }
        let pass_only = Connect {
            password: Some(b"token"),
            ..connect(V5)
        };
        round_trip(&Packet::Connect(pass_only), V5);
    }

    #[test]
    fn connect_round_trips_with_properties() {
        let props = Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(10),
            maximum_packet_size: Some(65_536),
            topic_alias_maximum: Some(0),
            request_response_information: Some(1),
            request_problem_information: Some(0),
            authentication_method: Some("PLAIN"),
            authentication_data: Some(b"\x00u\x00p"),
            user_properties: UserProperties::Slice(&[("a", "1"), ("b", "2")]),
            ..Properties::default()
        };
        let will_props = Properties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(9),
            content_type: Some("json"),
            response_topic: Some("r"),
            correlation_data: Some(b"c"),
            ..Properties::default()
        };
        let c = Connect {
            properties: props,
            will: Some(will(will_props)),
            ..connect(V5)
        };
        round_trip(&Packet::Connect(c), V3_1_1);
    }

    #[test]
    fn connect_literal_3_1() {
        let bytes = [
            0x10, 0x11, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 10, 0, 3, b'a', b'b',
            b'c',
        ];
        let want = Connect {
            client_id: "abc",
            keep_alive: 10,
            ..connect(V3_1)
        };
        assert_eq!(expect_packet(&bytes, V5), Packet::Connect(want));
    }

    #[test]
    fn connack_round_trips() {
        for version in [V3_1, V3_1_1, V5] {
            for reason in [
                ReasonCode::Success,
                ReasonCode::UnsupportedProtocolVersion,
                ReasonCode::NotAuthorized,
            ] {
                let a = ConnAck {
                    session_present: !reason.is_error(),
                    reason,
                    properties: Properties::default(),
                };
                round_trip(&Packet::ConnAck(a), version);
            }
        }
        let props = Properties {
            assigned_client_identifier: Some("auto-1"),
            server_keep_alive: Some(30),
            maximum_qos: Some(1),
            retain_available: Some(0),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(0),
            response_information: Some("resp/"),
            server_reference: Some("other:1883"),
            reason_string: Some("ok"),
            receive_maximum: Some(100),
            topic_alias_maximum: Some(16),
            maximum_packet_size: Some(1 << 20),
            session_expiry_interval: Some(0),
            ..Properties::default()
        };
        round_trip(
            &Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ReasonCode::Success,
                properties: props,
            }),
            V5,
        );
        let mut out = Vec::new();
        let banned = ConnAck {
            session_present: false,
            reason: ReasonCode::Banned,
            properties: Properties::default(),
        };
        super::super::encode(&Packet::ConnAck(banned), V3_1_1, &mut out);
        assert_eq!(out, [0x20, 2, 0, 5], "Banned maps to 3.x code 5");
    }

    #[rustfmt::skip]
    const MALFORMED: &[Case] = &[
        ("bad protocol name", V5, &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 0, 0, 0], E::UnsupportedProtocolName, 0x84),
        ("level 6", V5, &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 0, 0, 0], E::UnsupportedProtocolLevel { level: 6 }, 0x84),
        ("MQIsdp level 4", V5, &[0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 4, 2, 0, 0, 0, 0], E::UnsupportedProtocolLevel { level: 4 }, 0x84),
        ("reserved flag", V5, &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 0, 0, 0], E::ConnectReservedFlag, 0x81),
        ("will qos without will", V5, &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x0a, 0, 0, 0, 0], E::WillFlagsWithoutWill, 0x81),
        ("will retain without will", V5, &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x22, 0, 0, 0, 0], E::WillFlagsWithoutWill, 0x81),
        ("will qos 3", V5, &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x1e, 0, 0, 0, 0], E::InvalidQoS, 0x81),
        ("password without user 3.1.1", V5, &[0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 0, 0, 0, 0, 0], E::PasswordWithoutUsername, 0x81),
        ("trailing bytes", V5, &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0, 9], E::TrailingBytes, 0x81),
        ("client id past end", V5, &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 5], E::UnexpectedEnd, 0x81),
        ("client id nul", V5, &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 1, 0], E::NullCharacter, 0x81),
        ("connect flags 1", V5, &[0x11, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0], E::InvalidHeaderFlags { type_id: 1, flags: 1 }, 0x81),
        ("will topic wildcard", V5, &[0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 0, 0, 0, 0, 1, b'#', 0, 0], E::WildcardInTopicName, 0x81),
        ("will topic empty", V5, &[0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 0, 0, 0, 0, 0, 0, 0], E::EmptyTopicName, 0x81),
        ("v5 receive maximum 0", V3_1_1, &[0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 3, 0x21, 0, 0, 0, 0], E::InvalidPropertyValue { id: 0x21 }, 0x82),
        ("v5 max packet size 0", V3_1_1, &[0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 5, 0x27, 0, 0, 0, 0, 0, 0], E::InvalidPropertyValue { id: 0x27 }, 0x82),
        ("v5 request problem info 2", V3_1_1, &[0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 2, 0x17, 2, 0, 0], E::InvalidPropertyValue { id: 0x17 }, 0x82),
        ("v5 duplicate session expiry", V3_1_1, &[0x10, 23, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2, 0, 0], E::DuplicateProperty { id: 0x11 }, 0x82),
        ("v5 will delay in connect", V3_1_1, &[0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 5, 0x18, 0, 0, 0, 1, 0, 0], E::InvalidPropertyId { id: 0x18 }, 0x81),
        ("v5 unknown property 0x7f", V3_1_1, &[0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 2, 0x7f, 0, 0, 0], E::InvalidPropertyId { id: 0x7f }, 0x81),
        ("v5 session expiry in will", V3_1_1, &[0x10, 24, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 0, 0, 0, 0, 5, 0x11, 0, 0, 0, 1, 0, 1, b't', 0, 0], E::InvalidPropertyId { id: 0x11 }, 0x81),
        ("connack reserved flags", V3_1_1, &[0x20, 2, 2, 0], E::ConnAckReservedFlags, 0x81),
        ("connack 3.1.1 code 6", V3_1_1, &[0x20, 2, 0, 6], E::InvalidReasonCode { code: 6 }, 0x81),
        ("connack v5 code 0x8e", V5, &[0x20, 3, 0, 0x8e, 0], E::InvalidReasonCode { code: 0x8e }, 0x81),
        ("connack session present with error", V3_1_1, &[0x20, 2, 1, 5], E::SessionPresentWithError, 0x82),
        ("connack v5 max qos 2", V5, &[0x20, 5, 0, 0, 2, 0x24, 2], E::InvalidPropertyValue { id: 0x24 }, 0x82),
        ("connack v5 missing properties", V5, &[0x20, 2, 0, 0], E::UnexpectedEnd, 0x81),
    ];

    #[test]
    fn malformed_table() {
        expect_errors(MALFORMED);
    }
}
