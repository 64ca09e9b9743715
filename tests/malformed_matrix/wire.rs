//! Hand-made MQTT bytes for the malformed-input matrix, written from the specification and
//! independent of the broker's codec: a bug shared by encoder and decoder cannot hide here.
//!
//! Every builder returns plain bytes and takes its flags and lengths as given, so a case can
//! make any field inconsistent on purpose. Valid packets are built from the same pieces.

use super::common::{frame, mqtt_str, varint};

/// The protocol versions of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ver {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311,
    /// MQTT 5.0 (`MQTT`, level 5).
    V5,
}

impl Ver {
    /// All three, oldest first.
    pub const ALL: [Ver; 3] = [Ver::V31, Ver::V311, Ver::V5];

    /// As written in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Ver::V31 => "3.1",
            Ver::V311 => "3.1.1",
            Ver::V5 => "5.0",
        }
    }

    /// Protocol name and level of its CONNECT.
    pub fn name_level(self) -> (&'static [u8], u8) {
        match self {
            Ver::V31 => (b"MQIsdp", 3),
            Ver::V311 => (b"MQTT", 4),
            Ver::V5 => (b"MQTT", 5),
        }
    }

    /// True for 5.0, where packets carry properties.
    pub fn v5(self) -> bool {
        self == Ver::V5
    }
}

/// A variable byte integer.
pub fn vbi(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    varint(n, &mut out);
    out
}

/// A length-prefixed string or binary field.
pub fn s(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    mqtt_str(b, &mut out);
    out
}

/// Concatenate byte pieces.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// One property: identifier (one byte) and its encoded value.
pub fn prop(id: u8, value: &[u8]) -> Vec<u8> {
    cat(&[&[id], value])
}

/// A property block: its length, then the properties.
pub fn props(list: &[Vec<u8>]) -> Vec<u8> {
    let inner = list.concat();
    cat(&[&vbi(inner.len()), &inner])
}

/// The empty property block of 5.0 (one zero byte); nothing before 5.0.
pub fn no_props(ver: Ver) -> Vec<u8> {
    if ver.v5() {
        vec![0]
    } else {
        Vec::new()
    }
}

/// Every property identifier MQTT 5.0 defines (Table 2-4).
pub const DEFINED_PROPS: [u8; 27] = [
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
];

/// A valid value for property `id` (for an undefined id: one byte).
pub fn prop_value(id: u8) -> Vec<u8> {
    match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => vec![1],
        0x13 | 0x21 | 0x22 | 0x23 => vec![0, 1],
        0x02 | 0x11 | 0x18 | 0x27 => vec![0, 0, 0, 0x40],
        0x0B => vec![1],
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => s(b"a/b"),
        0x09 | 0x16 => s(&[0, 1, 0x7A]),
        0x26 => cat(&[&s(b"k"), &s(b"v")]),
        _ => vec![1],
    }
}

/// A property with a valid value.
pub fn good_prop(id: u8) -> Vec<u8> {
    prop(id, &prop_value(id))
}

/// The fields of a CONNECT; flags are written as given, never derived.
#[derive(Clone, Debug)]
pub struct Connect {
    /// Protocol name and level.
    pub name: Vec<u8>,
    /// Protocol level.
    pub level: u8,
    /// Connect flags byte.
    pub flags: u8,
    /// 5.0 property block (written only when `v5`).
    pub props: Vec<u8>,
    /// Client id (raw, may be invalid UTF-8).
    pub id: Vec<u8>,
    /// Will: 5.0 property block, topic, payload.
    pub will: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// User name.
    pub user: Option<Vec<u8>>,
    /// Password.
    pub pass: Option<Vec<u8>>,
    /// Write 5.0 property blocks.
    pub v5: bool,
}

impl Connect {
    /// A valid clean-session CONNECT of `ver` with client id `id`.
    pub fn new(ver: Ver, id: &str) -> Connect {
        let (name, level) = ver.name_level();
        Connect {
            name: name.to_vec(),
            level,
            flags: 0x02,
            props: no_props(ver),
            id: id.as_bytes().to_vec(),
            will: None,
            user: None,
            pass: None,
            v5: ver.v5(),
        }
    }

    /// Add a Will (flags follow: Will flag, QoS 0).
    pub fn with_will(mut self, ver: Ver, topic: &[u8]) -> Connect {
        self.flags |= 0x04;
        self.will = Some((no_props(ver), topic.to_vec(), b"w".to_vec()));
        self
    }

    /// The body (variable header and payload).
    pub fn body(&self) -> Vec<u8> {
        let mut b = s(&self.name);
        b.push(self.level);
        b.push(self.flags);
        b.extend_from_slice(&60u16.to_be_bytes());
        if self.v5 {
            b.extend_from_slice(&self.props);
        }
        b.extend(s(&self.id));
        if let Some((wp, topic, payload)) = &self.will {
            if self.v5 {
                b.extend_from_slice(wp);
            }
            b.extend(s(topic));
            b.extend(s(payload));
        }
        for f in [&self.user, &self.pass].into_iter().flatten() {
            b.extend(s(f));
        }
        b
    }

    /// The whole packet.
    pub fn bytes(&self) -> Vec<u8> {
        frame(0x10, &self.body())
    }
}

/// A valid CONNECT of `ver`.
pub fn valid_connect(ver: Ver, id: &str) -> Vec<u8> {
    Connect::new(ver, id).bytes()
}

/// PUBLISH body: topic, packet id when `pid` is given, properties (5.0), payload.
pub fn publish_body(ver: Ver, topic: &[u8], pid: Option<u16>, props5: &[u8]) -> Vec<u8> {
    let mut b = s(topic);
    if let Some(p) = pid {
        b.extend_from_slice(&p.to_be_bytes());
    }
    if ver.v5() {
        b.extend_from_slice(props5);
    }
    b.extend_from_slice(b"pay");
    b
}

/// SUBSCRIBE body: packet id, properties (5.0), (filter, options) entries.
pub fn subscribe_body(ver: Ver, pid: u16, props5: &[u8], entries: &[(&[u8], u8)]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if ver.v5() {
        b.extend_from_slice(props5);
    }
    for (f, o) in entries {
        b.extend(s(f));
        b.push(*o);
    }
    b
}

/// UNSUBSCRIBE body: packet id, properties (5.0), filters.
pub fn unsubscribe_body(ver: Ver, pid: u16, props5: &[u8], filters: &[&[u8]]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if ver.v5() {
        b.extend_from_slice(props5);
    }
    for f in filters {
        b.extend(s(f));
    }
    b
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP body in the long 5.0 form (reason 0, `props5`), or the
/// packet id alone before 5.0.
pub fn ack_body(ver: Ver, pid: u16, props5: &[u8]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if ver.v5() {
        b.push(0);
        b.extend_from_slice(props5);
    }
    b
}

/// The fixed first byte of each packet type a client may be sent (PUBLISH aside).
pub fn fixed_first(type_id: u8) -> u8 {
    let flags = if matches!(type_id, 6 | 8 | 10) { 2 } else { 0 };
    (type_id << 4) | flags
}

/// A well-formed body for packet type `type_id` (1..=15, not 3) in `ver`.
pub fn valid_body(ver: Ver, type_id: u8) -> Vec<u8> {
    let v5 = ver.v5();
    match type_id {
        1 => Connect::new(ver, "mx-body").body(),
        2 if v5 => vec![0, 0, 0],
        2 => vec![0, 0],
        4..=7 => 1u16.to_be_bytes().to_vec(),
        8 => subscribe_body(ver, 1, &[0], &[(b"mx/a", 1)]),
        9 if v5 => vec![0, 1, 0, 0],
        9 => vec![0, 1, 0],
        10 => unsubscribe_body(ver, 1, &[0], &[b"mx/a"]),
        11 if v5 => vec![0, 1, 0, 0],
        11 => vec![0, 1],
        14 if v5 => vec![0, 0],
        15 => vec![0, 0],
        _ => Vec::new(),
    }
}

/// A well-formed packet of `type_id` in `ver` (PUBLISH: QoS 0 to `mx/t`).
pub fn valid_packet(ver: Ver, type_id: u8) -> Vec<u8> {
    if type_id == 3 {
        return frame(0x30, &publish_body(ver, b"mx/t", None, &[0]));
    }
    frame(fixed_first(type_id), &valid_body(ver, type_id))
}

/// The packet types a client of `ver` can be sent in the matrix: 1..=14, and 15 in 5.0.
pub fn packet_types(ver: Ver) -> Vec<u8> {
    (1..=if ver.v5() { 15 } else { 14 }).collect()
}

/// A packet name, for case names.
pub fn type_name(type_id: u8) -> &'static str {
    [
        "reserved-0",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ][usize::from(type_id & 0x0F)]
}

/// Hex for case listings.
pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
