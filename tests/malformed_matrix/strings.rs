//! Bad UTF-8 and U+0000 in every string field a client sends [MQTT-1.5.4-1]
//! [MQTT-1.5.4-2]: 0x81 in 5.0, a close before.

use super::cases::{Gen, MALFORMED};
use super::common::frame;
use super::wire::*;

/// Ill-formed or forbidden UTF-8, each with a label.
pub fn bad_strings(wide: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("U+0000 alone", vec![0x00]),
        ("U+0000 inside", b"a\0b".to_vec()),
        ("bad continuation C3 28", vec![b'a', 0xC3, 0x28]),
        ("byte FF", vec![0xFF]),
        ("overlong NUL C0 80", vec![0xC0, 0x80]),
        ("surrogate U+D800", vec![0xED, 0xA0, 0x80]),
        ("above U+10FFFF", vec![0xF4, 0x90, 0x80, 0x80]),
        ("truncated E2 82", vec![b'x', 0xE2, 0x82]),
        ("lone continuation 80", vec![0x80]),
        ("overlong slash E0 80 AF", vec![0xE0, 0x80, 0xAF]),
    ];
    if wide {
        v.extend([
            ("byte FE", vec![0xFE]),
            ("surrogate U+DFFF", vec![0xED, 0xBF, 0xBF]),
            (
                "5-byte form F8 88 80 80 80",
                vec![0xF8, 0x88, 0x80, 0x80, 0x80],
            ),
            ("overlong C1 BF", vec![0xC1, 0xBF]),
            ("truncated at end F0 9F 98", vec![0xF0, 0x9F, 0x98]),
        ]);
    }
    v
}

/// Every string field, each built around one bad string.
pub fn utf8(g: &mut Gen) {
    for (what, bad) in bad_strings(g.wide) {
        for ver in Ver::ALL {
            connect_fields(g, ver, what, &bad);
            let t = "utf8";
            let p = frame(0x30, &publish_body(ver, &bad, None, &[0]));
            g.after_pub(t, ver, format!("PUBLISH topic: {what}"), p);
            let sub = frame(0x82, &subscribe_body(ver, 1, &[0], &[(&bad, 0)]));
            g.after_pub(t, ver, format!("SUBSCRIBE filter: {what}"), sub);
            let sub2 = frame(
                0x82,
                &subscribe_body(ver, 1, &[0], &[(b"ok", 0), (&bad, 1)]),
            );
            g.after_pub(t, ver, format!("SUBSCRIBE second filter: {what}"), sub2);
            let uns = frame(0xA2, &unsubscribe_body(ver, 1, &[0], &[&bad]));
            g.after_pub(t, ver, format!("UNSUBSCRIBE filter: {what}"), uns);
        }
        v5_properties(g, what, &bad);
    }
}

impl Gen {
    /// A 0x81 case after CONNECT.
    fn after_pub(&mut self, class: &'static str, ver: Ver, name: String, bytes: Vec<u8>) {
        self.push_after(class, ver, name, bytes, MALFORMED);
    }
}

fn connect_fields(g: &mut Gen, ver: Ver, what: &str, bad: &[u8]) {
    let t = "utf8";
    let mut c = Connect::new(ver, "");
    c.id = bad.to_vec();
    g.push_connect(t, ver, format!("CONNECT client id: {what}"), &c, MALFORMED);
    let c = Connect::new(ver, "mx-u").with_will(ver, bad);
    g.push_connect(t, ver, format!("CONNECT Will topic: {what}"), &c, MALFORMED);
    let mut c = Connect::new(ver, "mx-u");
    c.flags |= 0x80;
    c.user = Some(bad.to_vec());
    g.push_connect(t, ver, format!("CONNECT user name: {what}"), &c, MALFORMED);
}

/// String properties of 5.0: in CONNECT, the Will, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, the
/// four acks, DISCONNECT and AUTH.
fn v5_properties(g: &mut Gen, what: &str, bad: &[u8]) {
    let v = Ver::V5;
    let t = "utf8";
    let key = props(&[prop(0x26, &cat(&[&s(bad), &s(b"v")]))]);
    let val = props(&[prop(0x26, &cat(&[&s(b"k"), &s(bad)]))]);
    let string = |id: u8| props(&[prop(id, &s(bad))]);
    for (field, p) in [
        ("User Property name", key.clone()),
        ("User Property value", val.clone()),
        ("Authentication Method", string(0x15)),
    ] {
        let mut c = Connect::new(v, "mx-u");
        c.props = p;
        g.push_connect(t, v, format!("CONNECT {field}: {what}"), &c, MALFORMED);
    }
    for (field, p) in [
        ("Content Type", string(0x03)),
        ("Response Topic", string(0x08)),
        ("User Property", val.clone()),
    ] {
        let mut c = Connect::new(v, "mx-u").with_will(v, b"mx/w");
        if let Some(w) = c.will.as_mut() {
            w.0 = p;
        }
        g.push_connect(t, v, format!("CONNECT Will {field}: {what}"), &c, MALFORMED);
    }
    for (field, p) in [
        ("Content Type", string(0x03)),
        ("Response Topic", string(0x08)),
        ("User Property name", key.clone()),
        ("User Property value", val.clone()),
    ] {
        let b = frame(0x32, &publish_body(v, b"mx/t", Some(1), &p));
        g.after_pub(t, v, format!("PUBLISH {field}: {what}"), b);
    }
    let sub = frame(0x82, &subscribe_body(v, 1, &key, &[(b"mx/a", 0)]));
    g.after_pub(t, v, format!("SUBSCRIBE User Property: {what}"), sub);
    let uns = frame(0xA2, &unsubscribe_body(v, 1, &val, &[b"mx/a"]));
    g.after_pub(t, v, format!("UNSUBSCRIBE User Property: {what}"), uns);
    for ty in 4..=7u8 {
        let b = frame(fixed_first(ty), &ack_body(v, 1, &string(0x1F)));
        g.after_pub(t, v, format!("{} Reason String: {what}", type_name(ty)), b);
    }
    let d = frame(0xE0, &cat(&[&[0], &string(0x1F)]));
    g.after_pub(t, v, format!("DISCONNECT Reason String: {what}"), d);
    let a = frame(0xF0, &cat(&[&[0x18], &string(0x15)]));
    g.after_pub(t, v, format!("AUTH Authentication Method: {what}"), a);
}
