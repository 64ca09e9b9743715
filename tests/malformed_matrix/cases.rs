//! The case families of the malformed-input matrix (M1): each family generates every
//! malformation of one class over every packet type and version where it applies, with the
//! outcome the specification requires.
//!
//! Oracles (MQTT 5.0, OASIS mqtt-v5.0-os; 3.1.1 for the older versions):
//! - a Malformed Packet or Protocol Error closes the connection [MQTT-4.13.1-1]; in 5.0 an
//!   error in CONNECT is answered with CONNACK carrying the code, any other packet with
//!   DISCONNECT carrying it; before 5.0 the connection is just closed [MQTT-4.8.0-1];
//! - 0x81 Malformed Packet: reserved flag bits [MQTT-2.1.3-1], a non-minimal or 5-byte
//!   variable byte integer [MQTT-1.5.5-1], bad UTF-8 or U+0000 [MQTT-1.5.4-1]
//!   [MQTT-1.5.4-2], the CONNECT reserved bit [MQTT-3.1.2-3], QoS 3 [MQTT-3.3.1-4],
//!   reserved subscription option bits [MQTT-3.8.3-5], a property id not allowed in the
//!   packet, a length past the end;
//! - 0x82 Protocol Error: a second CONNECT [MQTT-3.1.0-2], a duplicate property, a client
//!   PUBLISH with a Subscription Identifier [MQTT-3.3.4-6], an empty SUBSCRIBE
//!   [MQTT-3.8.3-2] or UNSUBSCRIBE [MQTT-3.10.3-2], No Local on a shared subscription
//!   [MQTT-3.8.3-4], Retain Handling 3, packet id 0 [MQTT-2.2.1-3], a server-only packet;
//! - 0x94 Topic Alias invalid: a Topic Alias of 0 [MQTT-3.3.2-8] or above the maximum
//!   (the code section 3.3.2.3.4 names for it);
//! - 0x95 Packet Too Large, from the fixed header alone;
//! - an unsupported protocol level: CONNACK return code 0x01 [MQTT-3.1.2-2];
//! - a first packet other than CONNECT: close [MQTT-3.1.0-1].
//!
//! A header-level error in the first packet (its flags, its length) comes before the
//! protocol level is known, so it is a plain close in every version.

use super::common::frame;
use super::wire::*;

/// What must happen after the case's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The connection is closed and nothing is sent.
    Close,
    /// CONNACK with this return/reason code, then close.
    ConnAck(u8),
    /// DISCONNECT with this reason code, then close.
    Disconnect(u8),
}

/// Where the case's bytes go on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// They are the first bytes.
    First,
    /// They follow a valid CONNECT of the case's version and its CONNACK.
    Connected,
}

/// One row of the matrix.
#[derive(Clone, Debug)]
pub struct Case {
    /// Its class (a row of the summary).
    pub class: &'static str,
    /// The version whose rules apply.
    pub ver: Ver,
    /// Where the bytes go.
    pub stage: Stage,
    /// What is wrong, in words.
    pub name: String,
    /// The malformed bytes.
    pub bytes: Vec<u8>,
    /// The required outcome.
    pub expect: Expect,
}

/// Reason codes.
pub const MALFORMED: u8 = 0x81;
/// Protocol Error.
pub const PROTOCOL: u8 = 0x82;
/// Topic Alias invalid.
pub const ALIAS: u8 = 0x94;
/// Packet too large.
pub const TOO_LARGE: u8 = 0x95;

/// The broker's `--max-packet-size` in the matrix run.
pub const MAX_PACKET: usize = 8192;

/// The class names, in summary order.
pub const CLASSES: [&str; 21] = [
    "reserved-flags",
    "reserved-type",
    "varint",
    "utf8",
    "connect-reserved-bit",
    "connect-flags",
    "qos3",
    "sub-options",
    "property-id",
    "duplicate-property",
    "length-past-end",
    "topic-alias",
    "sub-id-in-publish",
    "empty-sub-unsub",
    "no-local-share",
    "retain-handling-3",
    "packet-id-0",
    "second-connect",
    "first-not-connect",
    "protocol-version",
    "oversize",
];

/// An error in a CONNECT whose version is known: CONNACK in 5.0, close before.
pub fn connect_err(ver: Ver, code: u8) -> Expect {
    if ver.v5() {
        Expect::ConnAck(code)
    } else {
        Expect::Close
    }
}

/// An error in any other packet: DISCONNECT in 5.0, close before.
pub fn packet_err(ver: Ver, code: u8) -> Expect {
    if ver.v5() {
        Expect::Disconnect(code)
    } else {
        Expect::Close
    }
}

/// Collects the cases; `wide` widens the families (the exhaustive mode).
pub struct Gen {
    /// The cases so far.
    pub cases: Vec<Case>,
    /// Exhaustive mode.
    pub wide: bool,
}

impl Gen {
    pub fn push(
        &mut self,
        class: &'static str,
        ver: Ver,
        stage: Stage,
        name: String,
        bytes: Vec<u8>,
        expect: Expect,
    ) {
        self.cases.push(Case {
            class,
            ver,
            stage,
            name,
            bytes,
            expect,
        });
    }

    /// A case after CONNECT whose 5.0 outcome is DISCONNECT `code`.
    pub fn push_after(
        &mut self,
        class: &'static str,
        ver: Ver,
        name: String,
        bytes: Vec<u8>,
        code: u8,
    ) {
        self.push(
            class,
            ver,
            Stage::Connected,
            name,
            bytes,
            packet_err(ver, code),
        );
    }

    /// A first-packet CONNECT case whose 5.0 outcome is CONNACK `code`.
    pub fn push_connect(
        &mut self,
        class: &'static str,
        ver: Ver,
        name: String,
        c: &Connect,
        code: u8,
    ) {
        self.push(
            class,
            ver,
            Stage::First,
            name,
            c.bytes(),
            connect_err(ver, code),
        );
    }
}

/// Every case of the matrix.
pub fn all(wide: bool) -> Vec<Case> {
    let mut g = Gen {
        cases: Vec::new(),
        wide,
    };
    reserved_flags(&mut g);
    reserved_type(&mut g);
    varints(&mut g);
    super::strings::utf8(&mut g);
    connect_flags(&mut g);
    qos3(&mut g);
    sub_options(&mut g);
    super::props::property_ids(&mut g);
    super::props::duplicate_properties(&mut g);
    super::lengths::past_end(&mut g);
    super::props::topic_alias(&mut g);
    super::props::sub_id_in_publish(&mut g);
    protocol_errors(&mut g);
    super::lengths::first_not_connect(&mut g);
    super::lengths::protocol_version(&mut g);
    super::lengths::oversize(&mut g);
    g.cases
}

/// Fixed-header flags other than the ones fixed for the type [MQTT-2.1.3-1], every wrong
/// nibble for every type that has fixed flags. 3.1 left these bits "not used" rather than
/// reserved, so it is not held to this.
fn reserved_flags(g: &mut Gen) {
    for ver in [Ver::V311, Ver::V5] {
        for t in packet_types(ver).into_iter().filter(|&t| t != 3) {
            let body = valid_body(ver, t);
            let good = fixed_first(t);
            for flags in (0..16u8).filter(|&f| f != good & 0x0F) {
                let first = (t << 4) | flags;
                let name = format!("{} with header flags {flags:04b}", type_name(t));
                if t == 1 {
                    let bytes = frame(first, &body);
                    g.push(
                        "reserved-flags",
                        ver,
                        Stage::First,
                        name,
                        bytes,
                        Expect::Close,
                    );
                } else {
                    g.push_after("reserved-flags", ver, name, frame(first, &body), MALFORMED);
                }
            }
        }
    }
}

/// Packet type 0 (every flag value), and type 15 (AUTH) before 5.0, after CONNECT.
fn reserved_type(g: &mut Gen) {
    for ver in Ver::ALL {
        for flags in 0..16u8 {
            let name = format!("type 0 with flags {flags:04b}");
            g.push_after("reserved-type", ver, name, vec![flags, 0], MALFORMED);
        }
        if !ver.v5() {
            for body in [vec![], vec![0], vec![0, 0]] {
                let name = format!(
                    "AUTH from a {} client, {} body bytes",
                    ver.label(),
                    body.len()
                );
                g.push_after("reserved-type", ver, name, frame(0xF0, &body), MALFORMED);
            }
        }
    }
}

/// Remaining lengths that are not minimal or run to a 5th byte [MQTT-1.5.5-1], for every
/// packet type; in 5.0 also property lengths and a Subscription Identifier.
fn varints(g: &mut Gen) {
    for ver in [Ver::V311, Ver::V5] {
        for t in packet_types(ver) {
            let packet = valid_packet(ver, t);
            let (first, body) = (packet[0], &packet[2..]);
            let len = body.len();
            assert!(len < 128, "short bodies only");
            let mut forms: Vec<(String, Vec<u8>)> = (2..=4)
                .map(|n| {
                    let mut v = vec![0x80; n];
                    v[0] = 0x80 | len as u8;
                    v[n - 1] = 0;
                    (format!("{len} in {n} bytes"), v)
                })
                .collect();
            forms.push((
                "5 bytes FF FF FF FF 7F".into(),
                vec![0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            ));
            forms.push((
                "5 bytes 80 80 80 80 01".into(),
                vec![0x80, 0x80, 0x80, 0x80, 0x01],
            ));
            for (what, rl) in forms {
                let bytes = cat(&[&[first], &rl, body]);
                let name = format!("{} remaining length {what}", type_name(t));
                if t == 1 {
                    g.push("varint", ver, Stage::First, name, bytes, Expect::Close);
                } else {
                    g.push_after("varint", ver, name, bytes, MALFORMED);
                }
            }
        }
    }
    v5_varints(g);
}

/// 5.0 property lengths and Subscription Identifiers in non-minimal or 5-byte form.
fn v5_varints(g: &mut Gen) {
    let v = Ver::V5;
    let bad: [(&str, Vec<u8>); 4] = [
        ("0 in 2 bytes", vec![0x80, 0x00]),
        ("0 in 4 bytes", vec![0x80, 0x80, 0x80, 0x00]),
        ("5 bytes", vec![0x80, 0x80, 0x80, 0x80, 0x00]),
        ("0 in 3 bytes", vec![0x80, 0x80, 0x00]),
    ];
    for (what, pl) in &bad {
        let mut c = Connect::new(v, "mx-vbi");
        c.props = pl.clone();
        g.push_connect(
            "varint",
            v,
            format!("CONNECT property length {what}"),
            &c,
            MALFORMED,
        );
        let pubb = frame(0x30, &publish_body(v, b"mx/t", None, pl));
        g.push_after(
            "varint",
            v,
            format!("PUBLISH property length {what}"),
            pubb,
            MALFORMED,
        );
        let sub = frame(0x82, &subscribe_body(v, 1, pl, &[(b"mx/a", 0)]));
        g.push_after(
            "varint",
            v,
            format!("SUBSCRIBE property length {what}"),
            sub,
            MALFORMED,
        );
        let uns = frame(0xA2, &unsubscribe_body(v, 1, pl, &[b"mx/a"]));
        g.push_after(
            "varint",
            v,
            format!("UNSUBSCRIBE property length {what}"),
            uns,
            MALFORMED,
        );
        let ack = frame(0x40, &ack_body(v, 1, pl));
        g.push_after(
            "varint",
            v,
            format!("PUBACK property length {what}"),
            ack,
            MALFORMED,
        );
        let disc = frame(0xE0, &cat(&[&[0], pl]));
        g.push_after(
            "varint",
            v,
            format!("DISCONNECT property length {what}"),
            disc,
            MALFORMED,
        );
    }
    for (what, id) in [
        ("1 in 2 bytes", vec![0x81, 0x00]),
        ("1 in 4 bytes", vec![0x81, 0x80, 0x80, 0x00]),
        ("5 bytes", vec![0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    ] {
        let p = props(&[prop(0x0B, &id)]);
        let sub = frame(0x82, &subscribe_body(v, 1, &p, &[(b"mx/a", 0)]));
        let name = format!("SUBSCRIBE Subscription Identifier {what}");
        g.push_after("varint", v, name, sub, MALFORMED);
    }
}

/// The CONNECT reserved bit [MQTT-3.1.2-3] under many flag combinations, then Will QoS or
/// Retain without a Will and (before 5.0) a password without a user name.
fn connect_flags(g: &mut Gen) {
    let bases: Vec<u8> = if g.wide {
        (0..=255u8).filter(|b| b & 1 == 0).collect()
    } else {
        vec![
            0x00, 0x02, 0x04, 0x06, 0x0E, 0x16, 0x26, 0x80, 0xC2, 0xE6, 0x1E, 0x3E,
        ]
    };
    for ver in Ver::ALL {
        for &base in &bases {
            let c = flagged(ver, base | 1);
            let name = format!("CONNECT flags {:08b}", base | 1);
            g.push_connect("connect-reserved-bit", ver, name, &c, MALFORMED);
        }
        for flags in [0x0A, 0x12, 0x22, 0x32, 0x2A] {
            let c = flagged(ver, flags);
            let name = format!("CONNECT flags {flags:08b}: Will QoS/Retain without Will");
            g.push_connect("connect-flags", ver, name, &c, MALFORMED);
        }
        if !ver.v5() {
            for flags in [0x42, 0x46] {
                let name = format!("CONNECT flags {flags:08b}: password without user name");
                g.push_connect("connect-flags", ver, name, &flagged(ver, flags), MALFORMED);
            }
        }
    }
}

/// A CONNECT of `ver` with `flags` and the fields those flags announce.
pub fn flagged(ver: Ver, flags: u8) -> Connect {
    let mut c = Connect::new(ver, "mx-flags");
    if flags & 0x04 != 0 {
        c = c.with_will(ver, b"mx/will");
    }
    c.flags = flags;
    if flags & 0x80 != 0 {
        c.user = Some(b"u".to_vec());
    }
    if flags & 0x40 != 0 {
        c.pass = Some(b"p".to_vec());
    }
    c
}

/// QoS 3 in a Will, a PUBLISH and a subscription [MQTT-3.3.1-4]; DUP on QoS 0.
fn qos3(g: &mut Gen) {
    for ver in Ver::ALL {
        for flags in [0x1E, 0x3E, 0x9E, 0xDE] {
            let name = format!("CONNECT Will QoS 3 (flags {flags:08b})");
            g.push_connect("qos3", ver, name, &flagged(ver, flags), MALFORMED);
        }
        for first in [0x36, 0x37, 0x3E, 0x3F] {
            let b = frame(first, &publish_body(ver, b"mx/t", Some(1), &[0]));
            g.push_after(
                "qos3",
                ver,
                format!("PUBLISH first byte {first:02x}"),
                b,
                MALFORMED,
            );
        }
        for first in [0x38, 0x39] {
            let b = frame(first, &publish_body(ver, b"mx/t", None, &[0]));
            let name = format!("PUBLISH DUP on QoS 0 ({first:02x})");
            g.push_after("qos3", ver, name, b, MALFORMED);
        }
        let opts: &[u8] = if ver.v5() {
            &[0x03, 0x07, 0x0B, 0x1B]
        } else {
            &[0x03]
        };
        for &o in opts {
            let b = frame(0x82, &subscribe_body(ver, 1, &[0], &[(b"mx/a", o)]));
            g.push_after(
                "qos3",
                ver,
                format!("SUBSCRIBE options {o:02x}"),
                b,
                MALFORMED,
            );
        }
    }
}

/// Reserved subscription option bits [MQTT-3.8.3-5]: bits 2-7 before 5.0, 6-7 in 5.0,
/// in the only entry and in the second one.
fn sub_options(g: &mut Gen) {
    for ver in Ver::ALL {
        let reserved: u8 = if ver.v5() { 0xC0 } else { 0xFC };
        let opts: Vec<u8> = if g.wide {
            (0..=255u8)
                .filter(|o| o & reserved != 0 && o & 3 != 3)
                .collect()
        } else {
            let lows: &[u8] = if ver.v5() {
                &[0, 1, 2, 0x05, 0x0A, 0x12, 0x26]
            } else {
                &[0, 1, 2]
            };
            let highs: Vec<u8> = (0..8)
                .map(|b| 1u8 << b)
                .filter(|b| b & reserved != 0)
                .collect();
            highs
                .iter()
                .flat_map(|h| lows.iter().map(move |l| h | l))
                .collect()
        };
        for o in opts {
            let b = frame(0x82, &subscribe_body(ver, 1, &[0], &[(b"mx/a", o)]));
            g.push_after(
                "sub-options",
                ver,
                format!("SUBSCRIBE options {o:08b}"),
                b,
                MALFORMED,
            );
        }
        let o = reserved & reserved.wrapping_neg() | 1;
        let b = frame(
            0x82,
            &subscribe_body(ver, 1, &[0], &[(b"mx/a", 1), (b"mx/b", o)]),
        );
        let name = format!("SUBSCRIBE second entry options {o:08b}");
        g.push_after("sub-options", ver, name, b, MALFORMED);
    }
}

/// The 0x82 classes that need no properties: empty SUBSCRIBE/UNSUBSCRIBE, No Local on a
/// shared subscription, Retain Handling 3, packet id 0, a second CONNECT.
fn protocol_errors(g: &mut Gen) {
    for ver in Ver::ALL {
        let user = props(&[good_prop(0x26)]);
        let mut blocks = vec![vec![0u8]];
        if ver.v5() {
            blocks.push(user.clone());
        }
        for p in &blocks {
            let what = if p.len() > 1 {
                " (with a User Property)"
            } else {
                ""
            };
            let sub = frame(0x82, &subscribe_body(ver, 1, p, &[]));
            g.push_after(
                "empty-sub-unsub",
                ver,
                format!("SUBSCRIBE without filters{what}"),
                sub,
                PROTOCOL,
            );
            let uns = frame(0xA2, &unsubscribe_body(ver, 1, p, &[]));
            g.push_after(
                "empty-sub-unsub",
                ver,
                format!("UNSUBSCRIBE without filters{what}"),
                uns,
                PROTOCOL,
            );
        }
        packet_id_0(g, ver);
        second_connect(g, ver);
    }
    let v = Ver::V5;
    for f in [
        &b"$share/g/mx"[..],
        b"$share/grp/mx/#",
        b"$share/g/+/x",
        b"$share/x/$y",
    ] {
        for q in 0..3u8 {
            let o = 0x04 | q;
            let b = frame(0x82, &subscribe_body(v, 1, &[0], &[(f, o)]));
            let name = format!(
                "No Local on {} (options {o:02x})",
                String::from_utf8_lossy(f)
            );
            g.push_after("no-local-share", v, name, b, PROTOCOL);
        }
    }
    for q in 0..3u8 {
        for extra in [0x00, 0x04, 0x08, 0x0C] {
            let o = 0x30 | extra | q;
            let b = frame(0x82, &subscribe_body(v, 1, &[0], &[(b"mx/a", o)]));
            g.push_after(
                "retain-handling-3",
                v,
                format!("SUBSCRIBE options {o:02x}"),
                b,
                PROTOCOL,
            );
        }
    }
}

/// Packet identifier 0 in every packet that carries one [MQTT-2.2.1-3].
fn packet_id_0(g: &mut Gen, ver: Ver) {
    let c = "packet-id-0";
    for q in [1u8, 2] {
        let b = frame(0x30 | (q << 1), &publish_body(ver, b"mx/t", Some(0), &[0]));
        g.push_after(c, ver, format!("PUBLISH QoS {q} packet id 0"), b, PROTOCOL);
    }
    let sub = frame(0x82, &subscribe_body(ver, 0, &[0], &[(b"mx/a", 0)]));
    g.push_after(c, ver, "SUBSCRIBE packet id 0".into(), sub, PROTOCOL);
    let uns = frame(0xA2, &unsubscribe_body(ver, 0, &[0], &[b"mx/a"]));
    g.push_after(c, ver, "UNSUBSCRIBE packet id 0".into(), uns, PROTOCOL);
    for t in 4..=7u8 {
        let short = frame(fixed_first(t), &[0, 0]);
        g.push_after(
            c,
            ver,
            format!("{} packet id 0", type_name(t)),
            short,
            PROTOCOL,
        );
        if ver.v5() {
            let long = frame(fixed_first(t), &ack_body(ver, 0, &[0]));
            g.push_after(
                c,
                ver,
                format!("{} packet id 0, long form", type_name(t)),
                long,
                PROTOCOL,
            );
        }
    }
}

/// A second CONNECT [MQTT-3.1.0-2]: the same id, another id, and each other version.
fn second_connect(g: &mut Gen, ver: Ver) {
    let c = "second-connect";
    g.push_after(
        c,
        ver,
        "second CONNECT, same client id".into(),
        valid_connect(ver, "SAME"),
        PROTOCOL,
    );
    g.push_after(
        c,
        ver,
        "second CONNECT, other client id".into(),
        valid_connect(ver, "mx-2nd"),
        PROTOCOL,
    );
    for other in Ver::ALL.into_iter().filter(|&o| o != ver) {
        let name = format!("second CONNECT in {}", other.label());
        g.push_after(c, ver, name, valid_connect(other, "mx-2nd-v"), PROTOCOL);
    }
}
