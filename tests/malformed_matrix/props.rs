//! 5.0 property families: identifiers not allowed in the packet (0x81), duplicates (0x82),
//! Topic Alias 0 or over the maximum (0x94), a client PUBLISH with a Subscription
//! Identifier [MQTT-3.3.4-6] (0x82).

use super::cases::{Gen, ALIAS, MALFORMED, PROTOCOL};
use super::common::frame;
use super::wire::*;

/// A packet a client sends that carries properties.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Connect,
    Will,
    Publish,
    Ack(u8),
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

const KINDS: [Kind; 11] = [
    Kind::Connect,
    Kind::Will,
    Kind::Publish,
    Kind::Ack(4),
    Kind::Ack(5),
    Kind::Ack(6),
    Kind::Ack(7),
    Kind::Subscribe,
    Kind::Unsubscribe,
    Kind::Disconnect,
    Kind::Auth,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Connect => "CONNECT",
            Kind::Will => "CONNECT Will",
            Kind::Publish => "PUBLISH",
            Kind::Ack(t) => type_name(t),
            Kind::Subscribe => "SUBSCRIBE",
            Kind::Unsubscribe => "UNSUBSCRIBE",
            Kind::Disconnect => "DISCONNECT",
            Kind::Auth => "AUTH",
        }
    }

    /// The identifiers 5.0 allows in this packet (Table 2-4).
    fn allowed(self) -> &'static [u8] {
        match self {
            Kind::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
            Kind::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
            Kind::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
            Kind::Ack(_) => &[0x1F, 0x26],
            Kind::Subscribe => &[0x0B, 0x26],
            Kind::Unsubscribe => &[0x26],
            Kind::Disconnect => &[0x11, 0x1C, 0x1F, 0x26],
            Kind::Auth => &[0x15, 0x16, 0x1F, 0x26],
        }
    }

    fn is_connect(self) -> bool {
        matches!(self, Kind::Connect | Kind::Will)
    }

    /// The packet with property block `p`.
    fn bytes(self, p: &[u8]) -> Vec<u8> {
        let v = Ver::V5;
        match self {
            Kind::Connect => {
                let mut c = Connect::new(v, "mx-p");
                c.props = p.to_vec();
                c.bytes()
            }
            Kind::Will => {
                let mut c = Connect::new(v, "mx-p").with_will(v, b"mx/w");
                if let Some(w) = c.will.as_mut() {
                    w.0 = p.to_vec();
                }
                c.bytes()
            }
            Kind::Publish => frame(0x32, &publish_body(v, b"mx/t", Some(1), p)),
            Kind::Ack(t) => frame(fixed_first(t), &ack_body(v, 1, p)),
            Kind::Subscribe => frame(0x82, &subscribe_body(v, 1, p, &[(b"mx/a", 0)])),
            Kind::Unsubscribe => frame(0xA2, &unsubscribe_body(v, 1, p, &[b"mx/a"])),
            Kind::Disconnect => frame(0xE0, &cat(&[&[0], p])),
            Kind::Auth => frame(0xF0, &cat(&[&[0x18], p])),
        }
    }
}

impl Gen {
    fn kind_case(&mut self, class: &'static str, k: Kind, name: String, p: &[u8], code: u8) {
        let v = Ver::V5;
        if k.is_connect() {
            let bytes = k.bytes(p);
            let expect = super::cases::connect_err(v, code);
            self.push(class, v, super::cases::Stage::First, name, bytes, expect);
        } else {
            self.push_after(class, v, name, k.bytes(p), code);
        }
    }
}

/// Undefined identifiers tried in every packet.
fn undefined_ids(wide: bool) -> Vec<u8> {
    if wide {
        (0..0x80u8).filter(|i| !DEFINED_PROPS.contains(i)).collect()
    } else {
        vec![0x00, 0x04, 0x07, 0x0A, 0x2B, 0x7F]
    }
}

/// Each defined identifier in every packet that does not allow it, and undefined ones,
/// alone and after a valid User Property: 0x81.
pub fn property_ids(g: &mut Gen) {
    let user = good_prop(0x26);
    for k in KINDS {
        let wrong = DEFINED_PROPS
            .iter()
            .copied()
            .filter(|id| !k.allowed().contains(id));
        for id in wrong.chain(undefined_ids(g.wide)) {
            let p = props(&[good_prop(id)]);
            let name = format!("{} with property {id:#04x}", k.label());
            g.kind_case("property-id", k, name, &p, MALFORMED);
        }
        let p = props(&[user.clone(), good_prop(0x2B)]);
        let name = format!("{} with property 0x2b after a User Property", k.label());
        g.kind_case("property-id", k, name, &p, MALFORMED);
    }
}

/// Each allowed identifier that may appear once, twice: 0x82.
pub fn duplicate_properties(g: &mut Gen) {
    for k in KINDS {
        for &id in k.allowed().iter().filter(|&&id| id != 0x26) {
            if matches!(k, Kind::Publish) && id == 0x0B {
                continue; // forbidden from a client anyway: its own family
            }
            let p = props(&[good_prop(id), good_prop(id)]);
            let name = format!("{} with property {id:#04x} twice", k.label());
            g.kind_case("duplicate-property", k, name, &p, PROTOCOL);
        }
    }
}

/// Topic Alias 0 [MQTT-3.3.2-8] or over the maximum the broker offered (10): 0x94; an empty
/// topic without an alias, or with an alias never set: 0x82. Before 5.0 an empty topic
/// is a close.
pub fn topic_alias(g: &mut Gen) {
    let v = Ver::V5;
    let c = "topic-alias";
    for q in 0..3u8 {
        let first = 0x30 | (q << 1);
        let pid = (q > 0).then_some(1);
        for (alias, topic) in [(0u16, &b"mx/t"[..]), (0, b""), (11, b"mx/t"), (0xFFFF, b"")] {
            let p = props(&[prop(0x23, &alias.to_be_bytes())]);
            let b = frame(first, &publish_body(v, topic, pid, &p));
            let name = format!(
                "PUBLISH QoS {q} Topic Alias {alias}, topic {:?}",
                bstr(topic)
            );
            g.push_after(c, v, name, b, ALIAS);
        }
        let b = frame(first, &publish_body(v, b"", pid, &[0]));
        g.push_after(
            c,
            v,
            format!("PUBLISH QoS {q} empty topic, no alias"),
            b,
            PROTOCOL,
        );
        let p = props(&[prop(0x23, &5u16.to_be_bytes())]);
        let b = frame(first, &publish_body(v, b"", pid, &p));
        g.push_after(
            c,
            v,
            format!("PUBLISH QoS {q} empty topic, alias 5 never set"),
            b,
            PROTOCOL,
        );
    }
    for ver in [Ver::V31, Ver::V311] {
        for q in 0..2u8 {
            let b = frame(
                0x30 | (q << 1),
                &publish_body(ver, b"", (q > 0).then_some(1), &[]),
            );
            g.push_after(c, ver, format!("PUBLISH QoS {q} empty topic"), b, PROTOCOL);
        }
    }
}

fn bstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A client PUBLISH with a Subscription Identifier [MQTT-3.3.4-6]: 0x82.
pub fn sub_id_in_publish(g: &mut Gen) {
    let v = Ver::V5;
    for (id, enc) in [
        (1u32, vec![0x01]),
        (127, vec![0x7F]),
        (128, vec![0x80, 0x01]),
        (268_435_455, vec![0xFF, 0xFF, 0xFF, 0x7F]),
    ] {
        for q in 0..3u8 {
            let p = props(&[prop(0x0B, &enc)]);
            let b = frame(
                0x30 | (q << 1),
                &publish_body(v, b"mx/t", (q > 0).then_some(1), &p),
            );
            let name = format!("PUBLISH QoS {q} with Subscription Identifier {id}");
            g.push_after("sub-id-in-publish", v, name, b, PROTOCOL);
        }
    }
    let p = props(&[good_prop(0x26), prop(0x0B, &[0x05]), good_prop(0x26)]);
    let b = frame(0x32, &publish_body(v, b"mx/t", Some(1), &p));
    let name = "PUBLISH with a Subscription Identifier between User Properties".into();
    g.push_after("sub-id-in-publish", v, name, b, PROTOCOL);
}
