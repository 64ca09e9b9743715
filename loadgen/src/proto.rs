//! The MQTT wire layer of the load generator.
//!
//! Owns: nothing of its own. It re-exports the project's codec (`shardmq::protocol`) so the
//! rest of the crate has one import path. Until the codec lands on the `codec` branch this
//! file carries a minimal stand-in with the same `decode`/`encode` signatures covering only
//! the packets a load generator exchanges.

pub use shardmq::protocol::*;

/// Stand-in error type until the project's codec provides `DecodeError`.
#[derive(Debug)]
#[allow(dead_code)]
pub enum DecodeError {
    /// The bytes break the wire format.
    Malformed(&'static str),
    /// The packet exceeds the maximum size.
    TooLarge,
}

fn put_vbi(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Stand-in for the codec's `encode`: CONNECT, PUBLISH, acks, SUBSCRIBE, PINGREQ and
/// DISCONNECT with empty properties.
pub fn encode(packet: &Packet<'_>, version: Version, out: &mut Vec<u8>) {
    let v5 = version.is_v5();
    let mut body = Vec::with_capacity(64);
    let first: u8 = match packet {
        Packet::Connect(c) => {
            put_str(&mut body, version.protocol_name().as_bytes());
            body.push(version.level());
            body.push(if c.clean_start { 0x02 } else { 0 });
            body.extend_from_slice(&c.keep_alive.to_be_bytes());
            if v5 {
                body.push(0);
            }
            put_str(&mut body, c.client_id.as_bytes());
            0x10
        }
        Packet::Publish(p) => {
            put_str(&mut body, p.topic.as_bytes());
            if let Some(id) = p.packet_id {
                body.extend_from_slice(&id.get().to_be_bytes());
            }
            if v5 {
                body.push(0);
            }
            body.extend_from_slice(p.payload);
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            body.extend_from_slice(&a.packet_id.get().to_be_bytes());
            let t = packet.type_id();
            (t << 4) | if t == 6 { 0x02 } else { 0 }
        }
        Packet::Subscribe(s) => {
            body.extend_from_slice(&s.packet_id.get().to_be_bytes());
            if v5 {
                body.push(0);
            }
            if let SubscriptionList::Slice(list) = s.filters {
                for sub in list {
                    put_str(&mut body, sub.filter.as_bytes());
                    body.push(sub.options.to_byte());
                }
            }
            0x82
        }
        Packet::PingReq => 0xC0,
        Packet::Disconnect(_) => 0xE0,
        _ => return,
    };
    out.push(first);
    put_vbi(out, body.len());
    out.extend_from_slice(&body);
}

fn get_u16(b: &[u8], at: usize) -> Result<u16, DecodeError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(DecodeError::Malformed("short")),
    }
}

fn get_pid(b: &[u8], at: usize) -> Result<PacketId, DecodeError> {
    PacketId::new(get_u16(b, at)?).ok_or(DecodeError::Malformed("packet id 0"))
}

/// Skips a 5.0 property block starting at `at`; returns the offset after it.
fn skip_props(b: &[u8], at: usize) -> Result<usize, DecodeError> {
    let (len, n) = vbi(&b[at.min(b.len())..])?.ok_or(DecodeError::Malformed("props"))?;
    Ok(at + n + len)
}

/// Variable byte integer at the start of `b`: Some((value, bytes)) or None if incomplete.
fn vbi(b: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut v = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Err(DecodeError::Malformed("vbi"))
}

/// Stand-in for the codec's `decode`: the server → client packets a load generator needs.
pub fn decode(buf: &[u8], version: Version, max: usize) -> Result<Decoded<'_>, DecodeError> {
    if buf.len() < 2 {
        return Ok(Decoded::Incomplete { needed: 2 });
    }
    let Some((rl, n)) = vbi(&buf[1..])? else {
        return Ok(Decoded::Incomplete {
            needed: buf.len() + 1,
        });
    };
    let len = 1 + n + rl;
    if len > max {
        return Err(DecodeError::TooLarge);
    }
    if buf.len() < len {
        return Ok(Decoded::Incomplete { needed: len });
    }
    let body = &buf[1 + n..len];
    let packet = decode_body(buf[0], body, version.is_v5())?;
    Ok(Decoded::Packet { packet, len })
}

fn ack(body: &[u8], v5: bool) -> Result<Ack<'_>, DecodeError> {
    let mut a = Ack::new(get_pid(body, 0)?);
    if v5 && body.len() > 2 {
        a.reason = ReasonCode::from_u8(body[2]).ok_or(DecodeError::Malformed("reason"))?;
    }
    Ok(a)
}

fn decode_body(first: u8, body: &[u8], v5: bool) -> Result<Packet<'_>, DecodeError> {
    Ok(match first >> 4 {
        2 => {
            let code = *body.get(1).ok_or(DecodeError::Malformed("connack"))?;
            let reason = if v5 {
                ReasonCode::from_u8(code)
            } else {
                ReasonCode::from_v3_connack(code)
            };
            Packet::ConnAck(ConnAck {
                session_present: body[0] & 1 == 1,
                reason: reason.ok_or(DecodeError::Malformed("connack code"))?,
                properties: Properties::default(),
            })
        }
        3 => decode_publish(first, body, v5)?,
        4 => Packet::PubAck(ack(body, v5)?),
        5 => Packet::PubRec(ack(body, v5)?),
        6 => Packet::PubRel(ack(body, v5)?),
        7 => Packet::PubComp(ack(body, v5)?),
        9 => {
            let at = if v5 { skip_props(body, 2)? } else { 2 };
            Packet::SubAck(SubAck {
                packet_id: get_pid(body, 0)?,
                properties: Properties::default(),
                codes: body.get(at..).ok_or(DecodeError::Malformed("suback"))?,
            })
        }
        13 => Packet::PingResp,
        14 => Packet::Disconnect(Disconnect {
            reason: ReasonCode::NormalDisconnection,
            properties: Properties::default(),
        }),
        _ => return Err(DecodeError::Malformed("unexpected packet type")),
    })
}

fn decode_publish(first: u8, body: &[u8], v5: bool) -> Result<Packet<'_>, DecodeError> {
    let qos = QoS::from_bits((first >> 1) & 3).ok_or(DecodeError::Malformed("qos 3"))?;
    let tlen = usize::from(get_u16(body, 0)?);
    let topic = body
        .get(2..2 + tlen)
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or(DecodeError::Malformed("topic"))?;
    let mut at = 2 + tlen;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        at += 2;
        Some(get_pid(body, at - 2)?)
    };
    if v5 {
        at = skip_props(body, at)?;
    }
    Ok(Packet::Publish(Publish {
        dup: first & 0x08 != 0,
        qos,
        retain: first & 1 == 1,
        topic,
        packet_id,
        properties: Properties::default(),
        payload: body.get(at..).ok_or(DecodeError::Malformed("payload"))?,
    }))
}
