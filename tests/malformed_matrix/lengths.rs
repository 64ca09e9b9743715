//! Length families: a field running past the end of its packet (0x81), a first packet
//! other than CONNECT [MQTT-3.1.0-1], bad protocol names and levels [MQTT-3.1.2-2], and
//! packets over the maximum size (0x95, from the fixed header alone).

use super::cases::{Expect, Gen, Stage, MALFORMED, MAX_PACKET, TOO_LARGE};
use super::common::frame;
use super::wire::*;

/// `prefix`, then a field whose length prefix claims `extra` bytes more than it has.
fn overrun(prefix: &[u8], field: &[u8], extra: usize) -> Vec<u8> {
    let claimed = u16::try_from(field.len() + extra).unwrap_or(u16::MAX);
    cat(&[prefix, &claimed.to_be_bytes(), field])
}

/// The two overruns of each field: by one byte and to 65,535.
const EXTRAS: [(&str, usize); 2] = [("by 1", 1), ("to 65535", 0xFFFF)];

/// Fields of CONNECT whose length runs past the end, each made the last field, and
/// CONNECTs cut short or too long. The protocol name comes before the version is known.
fn connect_past_end(g: &mut Gen, ver: Ver) {
    let c = Connect::new(ver, "mx-len");
    let body = c.body();
    let head = &body[..body.len() - 2 - c.id.len()];
    let w = Connect::new(ver, "mx-len").with_will(ver, b"mx/w").body();
    let before_payload = &w[..w.len() - 3];
    let before_topic = &before_payload[..before_payload.len() - 6];
    let mut u = Connect::new(ver, "mx-len");
    u.flags |= 0xC0;
    let u = u.body();
    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    for (by, extra) in EXTRAS {
        let name = ver.name_level().0;
        let b = frame(0x10, &overrun(&[], name, extra));
        let what = format!("CONNECT protocol name length past the end {by}");
        g.push("length-past-end", ver, Stage::First, what, b, Expect::Close);
        for (field, fields) in [
            ("client id", overrun(head, &c.id, extra)),
            ("Will topic", overrun(before_topic, b"mx/w", extra)),
            ("Will payload", overrun(before_payload, b"w", extra)),
            ("user name", overrun(&u, b"u", extra)),
            ("password", cat(&[&u, &s(b"u"), &overrun(&[], b"p", extra)])),
        ] {
            bad.push((format!("CONNECT {field} length past the end {by}"), fields));
        }
    }
    let skip = usize::from(ver.v5());
    for (what, n) in [
        ("the level", 3),
        ("the flags", 2),
        ("one Keep Alive byte", 1),
    ] {
        bad.push((
            format!("CONNECT ending after {what}"),
            head[..head.len() - n - skip].to_vec(),
        ));
    }
    bad.push(("CONNECT with a trailing byte".into(), cat(&[&body, &[0]])));
    for (name, b) in bad {
        let expect = super::cases::connect_err(ver, MALFORMED);
        g.push(
            "length-past-end",
            ver,
            Stage::First,
            name,
            frame(0x10, &b),
            expect,
        );
    }
}

/// Fields of the other packets whose length runs past the end, or bodies too short/long.
fn packets_past_end(g: &mut Gen, ver: Ver) {
    let pid = cat(&[&[0, 1], &no_props(ver)]);
    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    for (by, extra) in EXTRAS {
        for (what, first, b) in [
            ("PUBLISH topic", 0x30, overrun(&[], b"mx/t", extra)),
            ("SUBSCRIBE filter", 0x82, overrun(&pid, b"mx/a", extra)),
            ("UNSUBSCRIBE filter", 0xA2, overrun(&pid, b"mx/a", extra)),
        ] {
            bad.push((format!("{what} length past the end {by}"), frame(first, &b)));
        }
    }
    for (what, b) in [
        ("PUBLISH QoS 1 without packet id", frame(0x32, &s(b"mx/t"))),
        (
            "PUBLISH QoS 2 with half a packet id",
            frame(0x34, &cat(&[&s(b"mx/t"), &[0]])),
        ),
        (
            "SUBSCRIBE filter without options",
            frame(0x82, &cat(&[&pid, &s(b"mx/a")])),
        ),
        ("SUBSCRIBE with half a packet id", frame(0x82, &[0])),
        ("UNSUBSCRIBE with half a packet id", frame(0xA2, &[0])),
        ("PINGREQ with a body byte", frame(0xC0, &[0])),
    ] {
        bad.push((what.into(), b));
    }
    for t in 4..=7u8 {
        let name = type_name(t);
        bad.push((
            format!("{name} with half a packet id"),
            frame(fixed_first(t), &[0]),
        ));
        if !ver.v5() {
            let b = frame(fixed_first(t), &[0, 1, 0]);
            bad.push((format!("{name} with a trailing byte"), b));
        }
    }
    if !ver.v5() {
        bad.push(("DISCONNECT with a body byte".into(), frame(0xE0, &[0])));
    }
    for (name, b) in bad {
        g.push_after("length-past-end", ver, name, b, MALFORMED);
    }
}

/// 5.0 property blocks and string properties that run past the end.
fn v5_past_end(g: &mut Gen) {
    let v = Ver::V5;
    let c = "length-past-end";
    let over = [
        ("property length past the end", vec![0x05, 0x26]),
        (
            "string property past the end",
            vec![0x04, 0x1F, 0x00, 0x09, b'a'],
        ),
    ];
    for (what, p) in &over {
        let mut k = Connect::new(v, "mx-len");
        k.props = p.clone();
        // The property block is followed by the client id, so make it the last field.
        let body = k.body();
        let cut = frame(0x10, &body[..body.len() - 2 - k.id.len()]);
        g.push(
            c,
            v,
            Stage::First,
            format!("CONNECT {what}"),
            cut,
            Expect::ConnAck(MALFORMED),
        );
        let b = frame(0x32, &cat(&[&s(b"mx/t"), &[0, 1], p]));
        g.push_after(c, v, format!("PUBLISH {what}"), b, MALFORMED);
        let b = frame(0x82, &cat(&[&[0, 1], p]));
        g.push_after(c, v, format!("SUBSCRIBE {what}"), b, MALFORMED);
        let b = frame(0xA2, &cat(&[&[0, 1], p]));
        g.push_after(c, v, format!("UNSUBSCRIBE {what}"), b, MALFORMED);
        for t in 4..=7u8 {
            let b = frame(fixed_first(t), &cat(&[&[0, 1, 0], p]));
            g.push_after(c, v, format!("{} {what}", type_name(t)), b, MALFORMED);
        }
        let b = frame(0xE0, &cat(&[&[0], p]));
        g.push_after(c, v, format!("DISCONNECT {what}"), b, MALFORMED);
        let b = frame(0xF0, &cat(&[&[0x18], p]));
        g.push_after(c, v, format!("AUTH {what}"), b, MALFORMED);
    }
}

/// Every length family.
pub fn past_end(g: &mut Gen) {
    for ver in Ver::ALL {
        connect_past_end(g, ver);
        packets_past_end(g, ver);
    }
    v5_past_end(g);
}

/// Every other packet type as the first packet, complete, as a lone first byte, and with
/// half its body [MQTT-3.1.0-1]: closed, nothing sent.
pub fn first_not_connect(g: &mut Gen) {
    let c = "first-not-connect";
    for ver in [Ver::V311, Ver::V5] {
        for t in (0..=15u8).filter(|&t| t != 1) {
            let whole = if t == 0 {
                vec![0, 0]
            } else {
                valid_packet(ver, t)
            };
            let name = type_name(t);
            let half = whole[..2 + (whole.len() - 2) / 2].to_vec();
            g.push(
                c,
                ver,
                Stage::First,
                format!("{name} first, complete"),
                whole.clone(),
                Expect::Close,
            );
            g.push(
                c,
                ver,
                Stage::First,
                format!("{name} first, first byte only"),
                whole[..1].to_vec(),
                Expect::Close,
            );
            if whole.len() > 3 {
                g.push(
                    c,
                    ver,
                    Stage::First,
                    format!("{name} first, truncated body"),
                    half,
                    Expect::Close,
                );
            }
        }
    }
    for (name, b) in [
        ("PINGREQ byte alone (c0)", vec![0xC0]),
        (
            "PUBLISH claiming 16 bytes, 3 sent",
            vec![0x30, 0x10, 0x61, 0x62, 0x63],
        ),
        ("DISCONNECT claiming 5 bytes, none sent", vec![0xE0, 0x05]),
    ] {
        g.push(
            c,
            Ver::V311,
            Stage::First,
            format!("{name}, truncated body"),
            b,
            Expect::Close,
        );
    }
}

/// Unknown protocol levels and names: CONNACK return code 0x01 [MQTT-3.1.2-2], written in
/// the 3.1.1 form since the client's version is unknown.
pub fn protocol_version(g: &mut Gen) {
    let c = "protocol-version";
    let mut push = |ver: Ver, name: &[u8], level: u8| {
        let mut k = Connect::new(Ver::V311, "mx-pv");
        k.name = name.to_vec();
        k.level = level;
        let what = format!("protocol {:?} level {level}", String::from_utf8_lossy(name));
        g.push(c, ver, Stage::First, what, k.bytes(), Expect::ConnAck(1));
    };
    for level in [0u8, 1, 2, 3, 6, 7, 0x7F, 0x80, 0x84, 0xFF] {
        push(Ver::V311, b"MQTT", level);
    }
    for level in [0u8, 1, 2, 4, 5, 6, 0xFF] {
        push(Ver::V31, b"MQIsdp", level);
    }
    let names: [&[u8]; 10] = [
        b"", b"M", b"MQT", b"MQTTT", b"mqtt", b"MQTS", b"MQTT\0", b"\xFFQTT", b"MQIs", b"MQIsdpX",
    ];
    for name in names {
        push(Ver::V31, name, 3);
        push(Ver::V311, name, 4);
        push(Ver::V5, name, 5);
    }
}

/// Packets whose fixed header claims more than `--max-packet-size`: 0x95 after CONNECT;
/// a first packet is closed (its version is not known yet).
pub fn oversize(g: &mut Gen) {
    let c = "oversize";
    let claims = [MAX_PACKET - 2, 65_536, 2_000_000, 268_435_455];
    for ver in [Ver::V311, Ver::V5] {
        let mut firsts = vec![0x30, 0x32, 0x82, 0xA2, 0x40, 0x62, 0xC0, 0xE0, 0x10];
        if ver.v5() {
            firsts.push(0xF0);
        }
        for &first in &firsts {
            for rl in claims {
                let b = cat(&[&[first], &vbi(rl), &[0, 4], b"mx/t", &[0; 10]]);
                let name = format!("{} claiming {rl} bytes", type_name(first >> 4));
                g.push_after(c, ver, name, b, TOO_LARGE);
            }
        }
        let big = frame(
            0x30,
            &cat(&[&s(b"mx/t"), &no_props(ver), &vec![b'x'; MAX_PACKET]]),
        );
        g.push_after(
            c,
            ver,
            format!("PUBLISH of {} bytes, all sent", big.len()),
            big,
            TOO_LARGE,
        );
    }
    for ver in Ver::ALL {
        for rl in [MAX_PACKET - 2, 2_000_000, 268_435_455] {
            let b = cat(&[&[0x10], &vbi(rl), &valid_connect(ver, "mx-big")[2..]]);
            let name = format!("first CONNECT claiming {rl} bytes");
            g.push(c, ver, Stage::First, name, b, Expect::Close);
        }
    }
}
