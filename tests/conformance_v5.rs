//! MQTT 5.0 behaviour over real sockets, one test per feature (see docs/mqtt5.md).
//! Every behaviour runs against `--shards 1` and `--shards 4`; with 4 shards the clients
//! of a test get ids on different home shards, so messages cross shards. Precise checks
//! use a raw 5.0 client on the project codec (`tests/v5`); end-to-end flows use rumqttc's
//! v5 client.

mod common;
#[path = "v5/mod.rs"]
mod v5;

use std::time::{Duration, Instant};

use common::{id_on, RawClient, WAIT};
use shardmq::protocol::{Properties, ReasonCode, UserProperties};
use v5::*;

/// Ids `prefix-…` on shard `i` of `shards`.
fn on(prefix: &str, i: usize, shards: usize) -> String {
    id_on(prefix, i, shards)
}

// ---------------------------------------------------------------------------------------
// CONNACK
// ---------------------------------------------------------------------------------------

fn connack_defaults_advertised(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&on("cd", 1, shards)));
    let p = &ack.props;
    assert!(!ack.present);
    assert_eq!(p.topic_alias_maximum, Some(10), "default --max-topic-alias");
    assert_eq!(p.receive_maximum, None, "Receive Maximum 65535 is not sent");
    assert_eq!(
        p.maximum_packet_size,
        Some(2 * 1024 * 1024),
        "the default Maximum Packet Size (2 MiB) is advertised"
    );
    assert_eq!(p.server_keep_alive, None, "keep alive 60 accepted as is");
    assert_eq!(
        p.assigned_client_identifier, None,
        "the client chose its id"
    );
    assert_eq!(p.maximum_qos, None, "QoS 2 is supported");
    assert_ne!(p.retain_available, Some(0));
    assert_ne!(p.wildcard_subscription_available, Some(0));
    assert_ne!(p.subscription_identifier_available, Some(0));
    assert_ne!(p.shared_subscription_available, Some(0));
    assert_eq!(p.response_information, None);
}

fn connack_configured_limits(shards: usize) {
    let b = common::Broker::with_shards(
        shards,
        &[
            "--receive-maximum",
            "7",
            "--max-packet-size",
            "4096",
            "--max-topic-alias",
            "3",
            "--max-keepalive",
            "30",
        ],
    );
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&on("cl", 2, shards)).keep_alive(120));
    let p = &ack.props;
    assert_eq!(p.receive_maximum, Some(7));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.topic_alias_maximum, Some(3));
    assert_eq!(
        p.server_keep_alive,
        Some(30),
        "keep alive 120 > --max-keepalive 30"
    );
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&on("cl2", 3, shards)).keep_alive(20));
    assert_eq!(
        ack.props.server_keep_alive, None,
        "keep alive 20 is within the limit"
    );
    // --max-topic-alias 0: no Topic Alias Maximum at all.
    let b = common::Broker::with_shards(shards, &["--max-topic-alias", "0"]);
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&on("cl3", 0, shards)));
    assert_eq!(ack.props.topic_alias_maximum, None);
}

fn assigned_client_identifier(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new("").expiry(30));
    let id = ack
        .props
        .assigned_client_identifier
        .clone()
        .expect("Assigned Client Identifier for an empty id");
    assert!(!id.is_empty());
    c.subscribe("aci/t", 1);
    c.disconnect();
    // The assigned id names a real session: resuming it finds the session.
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(30));
    assert!(
        ack.present,
        "session of the assigned id {id} must be present"
    );
    assert_eq!(ack.props.assigned_client_identifier, None);
}

// ---------------------------------------------------------------------------------------
// Session Expiry Interval, Clean Start
// ---------------------------------------------------------------------------------------

fn session_expiry_zero_ends_at_disconnect(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("se0", 1, shards);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).clean(false));
    c.subscribe("se0/t", 1);
    c.disconnect();
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false));
    assert!(
        !ack.present,
        "expiry 0 (absent): session ends at disconnect"
    );
}

fn session_expiry_interval_kept_then_expired(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("sei", 0, shards);
    let mut publ = Client5::clean(b.addr(), &on("seip", 1, shards));
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(2));
    c.subscribe("sei/t", 1);
    c.disconnect();
    assert_eq!(publ.publish("sei/t", b"while away", 1, false), 0x00);
    // Within the interval: resumed, and the queued QoS 1 message arrives.
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(2));
    assert!(ack.present, "reconnect within 2 s: session present");
    let m = c.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("sei/t", &b"while away"[..])
    );
    c.disconnect();
    // After the interval: gone.
    std::thread::sleep(Duration::from_millis(2600));
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(2));
    assert!(!ack.present, "reconnect after 2.6 s: the session expired");
}

fn session_expiry_max_never_expires(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("semax", 2, shards);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(u32::MAX));
    c.subscribe("semax/t", 1);
    c.drop_tcp();
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(u32::MAX));
    assert!(ack.present, "0xFFFFFFFF: the session is kept");
    // Its subscription is still there.
    let mut publ = Client5::clean(b.addr(), &on("semaxp", 3, shards));
    publ.publish("semax/t", b"still", 1, false);
    assert_eq!(c.expect_publish_acked(WAIT).payload, b"still");
}

fn disconnect_cannot_set_expiry_after_zero(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("sed", 1, shards);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).clean(false));
    c.subscribe("sed/t", 1);
    c.send(&shardmq::protocol::Packet::Disconnect(
        shardmq::protocol::Disconnect {
            reason: ReasonCode::NormalDisconnection,
            properties: Properties {
                session_expiry_interval: Some(10),
                ..Properties::default()
            },
        },
    ));
    c.expect_disconnect_reason(0x82);
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false));
    assert!(!ack.present, "the session still ended");
}

fn disconnect_with_zero_expiry_ends_session(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("sedz", 2, shards);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(10));
    c.subscribe("sedz/t", 1);
    c.disconnect_with(ReasonCode::NormalDisconnection, Some(0));
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(10));
    assert!(!ack.present, "DISCONNECT with expiry 0 ends the session");
    // And the opposite: lowering a non-zero interval keeps it.
    let id2 = on("sedk", 3, shards);
    let (c, _) = Client5::open(b.addr(), &Conn5::new(&id2).expiry(10));
    c.disconnect_with(ReasonCode::NormalDisconnection, Some(5));
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id2).clean(false).expiry(10));
    assert!(ack.present, "DISCONNECT with expiry 5 keeps the session");
}

fn clean_start_discards_session(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("cs", 0, shards);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(60));
    c.subscribe("cs/old", 1);
    c.disconnect();
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(true).expiry(60));
    assert!(!ack.present, "Clean Start 1: session present 0");
    c.subscribe("cs/new", 1);
    let mut publ = Client5::clean(b.addr(), &on("csp", 1, shards));
    assert_eq!(
        publ.publish("cs/old", b"old", 1, false),
        0x10,
        "the discarded subscription no longer matches"
    );
    sentinel(&mut publ, &mut c, "cs/new");
}

// ---------------------------------------------------------------------------------------
// Message Expiry Interval
// ---------------------------------------------------------------------------------------

fn message_expiry(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("me", 0, shards);
    let mut publ = Client5::clean(b.addr(), &on("mep", 1, shards));
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(60));
    c.subscribe("me/t", 1);
    // Live delivery carries the interval.
    let expiring = |s| Properties {
        message_expiry_interval: Some(s),
        ..Properties::default()
    };
    publ.publish_props("me/t", b"live", 1, false, expiring(100));
    let m = c.expect_publish_acked(WAIT);
    let left = m.props.message_expiry_interval.expect("expiry forwarded");
    assert!((99..=100).contains(&left), "live: {left}");
    c.disconnect();
    publ.publish_props("me/t", b"short", 1, false, expiring(1));
    publ.publish_props("me/t", b"long", 1, false, expiring(100));
    std::thread::sleep(Duration::from_millis(2100));
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(60));
    assert!(ack.present);
    let m = c.expect_publish_acked(WAIT);
    assert_eq!(m.payload, b"long", "the 1 s message expired in the queue");
    let left = m.props.message_expiry_interval.expect("expiry forwarded");
    assert!(
        (90..=98).contains(&left),
        "interval reduced by the ~2 s it waited: {left}"
    );
    c.expect_nothing(Duration::from_millis(300));
}

// ---------------------------------------------------------------------------------------
// Topic aliases
// ---------------------------------------------------------------------------------------

fn alias(a: u16) -> Properties<'static> {
    Properties {
        topic_alias: Some(a),
        ..Properties::default()
    }
}

fn topic_alias_client_to_server(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut sub = Client5::clean(b.addr(), &on("tas", 0, shards));
    sub.subscribe("ta/#", 1);
    let mut publ = Client5::clean(b.addr(), &on("tap", 1, shards));
    assert_eq!(publ.publish_props("ta/one", b"1", 1, false, alias(1)), 0);
    assert_eq!(publ.publish_props("", b"2", 1, false, alias(1)), 0);
    assert_eq!(publ.publish_props("ta/two", b"3", 1, false, alias(1)), 0);
    assert_eq!(publ.publish_props("", b"4", 1, false, alias(1)), 0);
    assert_eq!(publ.publish_props("ta/max", b"5", 1, false, alias(10)), 0);
    assert_eq!(publ.publish_props("", b"6", 1, false, alias(10)), 0);
    let got: Vec<(String, String)> = sub
        .collect(6)
        .into_iter()
        .map(|m| (m.topic.clone(), m.text()))
        .collect();
    let want: Vec<(String, String)> = [
        ("ta/one", "1"),
        ("ta/one", "2"),
        ("ta/two", "3"),
        ("ta/two", "4"),
        ("ta/max", "5"),
        ("ta/max", "6"),
    ]
    .iter()
    .map(|(t, p)| (t.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
}

/// PUBLISH bytes (QoS 0) with a hand-made Topic Alias property.
fn publish_with_alias_bytes(topic: &str, alias: u16) -> Vec<u8> {
    let mut body = Vec::new();
    common::mqtt_str(topic.as_bytes(), &mut body);
    body.push(3);
    body.push(0x23);
    body.extend_from_slice(&alias.to_be_bytes());
    body.extend_from_slice(b"x");
    common::frame(0x30, &body)
}

fn topic_alias_above_maximum_0x94(shards: usize) {
    let b = common::Broker::with_shards(shards, &["--max-topic-alias", "4"]);
    for a in [5u16, 0xffff] {
        let mut c = Client5::clean(b.addr(), &on(&format!("tar{a}"), a as usize, shards));
        c.publish_props("tar/t", b"ok", 1, false, alias(4));
        c.send_bytes(&publish_with_alias_bytes("tar/t", a));
        c.expect_disconnect_reason(0x94);
    }
    // --max-topic-alias 0: any alias is above the maximum.
    let b = common::Broker::with_shards(shards, &["--max-topic-alias", "0"]);
    let mut c = Client5::clean(b.addr(), &on("tarz", 1, shards));
    c.send_bytes(&publish_with_alias_bytes("tar/t", 1));
    c.expect_disconnect_reason(0x94);
}

fn topic_alias_zero_0x94(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("tar0", 2, shards));
    c.send_bytes(&publish_with_alias_bytes("tar/t", 0));
    c.expect_disconnect_reason(0x94);
}

fn topic_alias_unknown_is_protocol_error(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("tau", 1, shards));
    c.publish_props("tau/a", b"1", 0, false, alias(1));
    c.ping();
    c.send_bytes(&publish_with_alias_bytes("", 2));
    c.expect_disconnect_reason(0x82);
    // An empty topic without any alias.
    let mut c = Client5::clean(b.addr(), &on("tau2", 2, shards));
    c.send_publish("", b"x", 1, false, Some(1), Properties::default());
    c.expect_disconnect_reason(0x82);
}

fn topic_aliases_are_per_connection(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    // Inbound: an alias learnt on one connection means nothing on the next.
    let id = on("tapc", 1, shards);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(60));
    c.publish_props("tapc/a", b"1", 1, false, alias(1));
    c.disconnect();
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(60));
    assert!(ack.present);
    c.send_bytes(&publish_with_alias_bytes("", 1));
    c.expect_disconnect_reason(0x82);
    // Outbound: the first delivery on a new connection names the topic again.
    let sid = on("tapcs", 0, shards);
    let o = Conn5::new(&sid).expiry(60).alias_max(5);
    let (mut sub, _) = Client5::open(b.addr(), &o);
    sub.subscribe("tapc/#", 1);
    let mut publ = Client5::clean(b.addr(), &on("tapcp", 2, shards));
    publ.publish("tapc/x", b"1", 1, false);
    publ.publish("tapc/x", b"2", 1, false);
    let got: Vec<(String, Option<u16>)> = sub
        .collect(2)
        .into_iter()
        .map(|m| (m.topic, m.props.topic_alias))
        .collect();
    assert_eq!(
        got,
        vec![("tapc/x".into(), Some(1)), (String::new(), Some(1))]
    );
    sub.disconnect();
    let (mut sub, ack) = Client5::open(b.addr(), &o.clone().clean(false));
    assert!(ack.present);
    publ.publish("tapc/x", b"3", 1, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.props.topic_alias),
        ("tapc/x", Some(1)),
        "a new connection starts with no aliases"
    );
}

fn subscription_identifier_from_client_is_protocol_error(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut sub = Client5::clean(b.addr(), &on("sicw", 0, shards));
    sub.subscribe("sic/t", 1);
    let mut c = Client5::clean(b.addr(), &on("sic", 1, shards));
    let ids = [5u32];
    c.send_publish(
        "sic/t",
        b"x",
        1,
        false,
        Some(1),
        Properties {
            subscription_identifiers: shardmq::protocol::SubscriptionIds::Slice(&ids),
            ..Properties::default()
        },
    );
    c.expect_disconnect_reason(0x82);
    sub.expect_nothing(Duration::from_millis(200));
}

fn topic_alias_server_to_client(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&on("tao", 0, shards)).alias_max(5));
    sub.subscribe("tao/#", 1);
    let mut plain = Client5::clean(b.addr(), &on("taplain", 2, shards));
    plain.subscribe("tao/#", 1);
    let mut publ = Client5::clean(b.addr(), &on("taop", 1, shards));
    for (t, p) in [
        ("tao/a", "1"),
        ("tao/a", "2"),
        ("tao/b", "3"),
        ("tao/a", "4"),
    ] {
        publ.publish(t, p.as_bytes(), 1, false);
    }
    let got = sub.collect(4);
    let seen: Vec<(&str, Option<u16>, String)> = got
        .iter()
        .map(|m| (m.topic.as_str(), m.props.topic_alias, m.text()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("tao/a", Some(1), "1".to_string()),
            ("", Some(1), "2".to_string()),
            ("tao/b", Some(2), "3".to_string()),
            ("", Some(1), "4".to_string()),
        ],
        "first use sends topic + alias, later uses the alias alone"
    );
    for m in plain.collect(4) {
        assert_eq!(
            m.props.topic_alias, None,
            "no Topic Alias Maximum: no aliases"
        );
        assert!(m.topic.starts_with("tao/"), "{m:?}");
    }
}

fn topic_alias_server_respects_client_maximum(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&on("tam", 0, shards)).alias_max(1));
    sub.subscribe("tam/#", 0);
    let mut publ = Client5::clean(b.addr(), &on("tamp", 1, shards));
    for t in ["tam/a", "tam/b", "tam/b", "tam/a"] {
        publ.publish(t, b"x", 1, false);
    }
    for m in sub.collect(4) {
        let a = m.props.topic_alias;
        assert!(
            a.is_none() || a == Some(1),
            "alias above the client's maximum 1: {m:?}"
        );
        if m.topic.is_empty() {
            assert_eq!(a, Some(1));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flow control and packet size
// ---------------------------------------------------------------------------------------

fn client_receive_maximum_bounds_inflight(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&on("rm", 0, shards)).receive_max(2));
    sub.subscribe("rm/t", 1);
    let mut publ = Client5::clean(b.addr(), &on("rmp", 1, shards));
    for i in 1..=3u8 {
        publ.publish("rm/t", &[b'0' + i], 1, false);
    }
    let m1 = sub.expect_publish(WAIT);
    let m2 = sub.expect_publish(WAIT);
    assert_eq!(
        (m1.payload.as_slice(), m2.payload.as_slice()),
        (&b"1"[..], &b"2"[..])
    );
    sub.expect_nothing(Duration::from_millis(400));
    sub.ack(&m1);
    let m3 = sub.expect_publish(WAIT);
    assert_eq!(
        m3.payload, b"3",
        "third arrives once a PUBACK frees the window"
    );
}

fn server_receive_maximum_enforced(shards: usize) {
    let b = common::Broker::with_shards(shards, &["--receive-maximum", "2"]);
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&on("srm", 1, shards)));
    assert_eq!(ack.props.receive_maximum, Some(2));
    // A completed flow frees its slot.
    for _ in 0..3 {
        c.publish("srm/t", b"done", 2, false);
    }
    // Two awaiting PUBREL fill the window; a resend of one of them is not a new message.
    for pid in 11..=12u16 {
        c.send_publish("srm/t", b"q2", 2, false, Some(pid), Properties::default());
    }
    c.send_publish("srm/t", b"q2", 2, false, Some(12), Properties::default());
    for pid in [11, 12, 12] {
        c.expect_where(
            WAIT,
            "PUBREC",
            |g| matches!(g, P5::PubRec { pid: p, .. } if *p == pid),
        );
    }
    c.ping();
    // The third distinct one exceeds the server's Receive Maximum.
    c.send_publish("srm/t", b"q2", 2, false, Some(13), Properties::default());
    c.expect_disconnect_reason(0x93);
}

fn client_maximum_packet_size(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&on("mps", 0, shards)).max_packet(128));
    sub.subscribe("mps/t", 1);
    let mut publ = Client5::clean(b.addr(), &on("mpsp", 1, shards));
    publ.publish("mps/t", &[b'x'; 300], 1, false);
    publ.publish("mps/t", b"small", 1, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(m.payload, b"small", "the 300-byte message must not be sent");
    sub.expect_nothing(Duration::from_millis(300));
}

/// Encoded size of a QoS 1 PUBLISH without properties (as the server sends it).
fn qos1_publish_len(topic: &str, payload: &[u8]) -> usize {
    shardmq::protocol::encoded_len(
        &shardmq::protocol::Packet::Publish(shardmq::protocol::Publish {
            dup: false,
            qos: shardmq::protocol::QoS::AtLeastOnce,
            retain: false,
            topic,
            packet_id: std::num::NonZeroU16::new(1),
            properties: Properties::default(),
            payload,
        }),
        shardmq::protocol::Version::V5,
    )
}

/// The largest payload whose QoS 1 PUBLISH on `topic` is at most `limit` bytes.
fn largest_payload(topic: &str, limit: usize) -> usize {
    let n = (0..limit)
        .rev()
        .find(|&n| qos1_publish_len(topic, &vec![0; n]) <= limit)
        .expect("some payload fits");
    assert_eq!(
        qos1_publish_len(topic, &vec![0; n]),
        limit,
        "an exact fit exists"
    );
    n
}

/// Maximum Packet Size counts the whole packet: exactly the limit passes, one byte more
/// does not, in both directions.
fn maximum_packet_size_boundary(shards: usize) {
    let b = common::Broker::with_shards(shards, &["--max-packet-size", "500"]);
    let limit = 200usize;
    let (mut sub, _) = Client5::open(
        b.addr(),
        &Conn5::new(&on("mpb", 0, shards)).max_packet(limit as u32),
    );
    sub.subscribe("mpb/t", 1);
    let fits = largest_payload("mpb/t", limit);
    let mut publ = Client5::clean(b.addr(), &on("mpbp", 1, shards));
    publ.publish("mpb/t", &vec![b'a'; fits + 1], 1, false);
    publ.publish("mpb/t", &vec![b'b'; fits], 1, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        m.payload,
        vec![b'b'; fits],
        "exactly {limit} bytes is allowed"
    );
    sub.expect_nothing(Duration::from_millis(200));
    // Server side: 500 bytes accepted, 501 refused.
    let fits = largest_payload("mpb/t", 500);
    assert_eq!(publ.publish("mpb/t", &vec![b'c'; fits], 1, false), 0x00);
    publ.send_publish(
        "mpb/t",
        &vec![b'd'; fits + 1],
        1,
        false,
        Some(999),
        Properties::default(),
    );
    publ.expect_disconnect_reason(0x95);
}

fn server_maximum_packet_size(shards: usize) {
    let b = common::Broker::with_shards(shards, &["--max-packet-size", "1024"]);
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&on("smps", 2, shards)));
    assert_eq!(ack.props.maximum_packet_size, Some(1024));
    c.publish("smps/t", &[b'y'; 900], 1, false);
    c.send_publish(
        "smps/t",
        &[b'y'; 2000],
        1,
        false,
        Some(77),
        Properties::default(),
    );
    c.expect_disconnect_reason(0x95);
}

// ---------------------------------------------------------------------------------------
// Subscription options
// ---------------------------------------------------------------------------------------

fn no_local(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut me = Client5::clean(b.addr(), &on("nl", 0, shards));
    let codes = me.subscribe_opts(&[("nl/t", opts(1, true, false, 0))], None);
    assert_eq!(codes, vec![1]);
    let mut other = Client5::clean(b.addr(), &on("nlo", 1, shards));
    other.subscribe("nl/t", 1);
    me.publish("nl/t", b"mine", 1, false);
    assert_eq!(other.expect_publish_acked(WAIT).payload, b"mine");
    sentinel(&mut other, &mut me, "nl/t");
}

fn retain_as_published(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut rap = Client5::clean(b.addr(), &on("rap", 0, shards));
    rap.subscribe_opts(&[("rap/t", opts(1, false, true, 0))], None);
    let mut norap = Client5::clean(b.addr(), &on("norap", 1, shards));
    norap.subscribe("rap/t", 1);
    let mut publ = Client5::clean(b.addr(), &on("rapp", 2, shards));
    publ.publish("rap/t", b"r", 1, true);
    let m = rap.expect_publish_acked(WAIT);
    assert!(
        m.retain,
        "Retain As Published keeps RETAIN on live delivery"
    );
    let m = norap.expect_publish_acked(WAIT);
    assert!(!m.retain, "without it RETAIN is cleared on live delivery");
    publ.publish("rap/t", b"", 1, true);
}

/// Let a retained message reach every shard's replica before subscribing, so the
/// retained-handling tests do not depend on the race `retained_before_subscribe_arrives_once`
/// checks.
fn settle_retained() {
    std::thread::sleep(Duration::from_millis(150));
}

/// A retained message acknowledged (PUBACK) before a SUBSCRIBE is not a live message for
/// that subscription: it arrives exactly once, as a retained message (RETAIN 1), after
/// the SUBACK. With shards, the subscriber's shard may learn of the message after the
/// subscription is in its trie.
fn retained_before_subscribe_arrives_once(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut publ = Client5::clean(b.addr(), &on("rbp", 3, shards));
    // Connected up front, so the SUBSCRIBE follows the PUBACK as closely as possible.
    let mut subs: Vec<Client5> = (0..10)
        .map(|r| Client5::clean(b.addr(), &on(&format!("rbs{r}"), 0, shards)))
        .collect();
    for (round, c) in subs.iter_mut().enumerate() {
        let topic = format!("rb/{round}");
        publ.publish(&topic, b"kept", 1, true);
        let p = c.next_pid();
        let filters = [shardmq::protocol::Subscription {
            filter: &topic,
            options: opts(1, false, false, 0),
        }];
        c.send(&shardmq::protocol::Packet::Subscribe(
            shardmq::protocol::Subscribe {
                packet_id: std::num::NonZeroU16::new(p).expect("pid"),
                properties: Properties::default(),
                filters: shardmq::protocol::SubscriptionList::Slice(&filters),
            },
        ));
        // Everything until the SUBACK and one PUBLISH, then a short quiet window.
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        let mut quiet_from: Option<Instant> = None;
        loop {
            let until = quiet_from.map_or(deadline, |t| t + Duration::from_millis(150));
            match c.recv(until.saturating_duration_since(Instant::now())) {
                Ok(g) => {
                    if let P5::Publish(m) = &g {
                        c.ack(m);
                    }
                    got.push(g);
                    let suback = got.iter().any(|g| matches!(g, P5::SubAck { .. }));
                    let publish = got.iter().any(|g| matches!(g, P5::Publish(_)));
                    if suback && publish && quiet_from.is_none() {
                        quiet_from = Some(Instant::now());
                    }
                }
                Err(_) => break,
            }
        }
        let publishes: Vec<(bool, bool)> = got
            .iter()
            .filter_map(|g| match g {
                P5::Publish(m) => Some((m.retain, m.payload == b"kept")),
                _ => None,
            })
            .collect();
        assert_eq!(
            publishes,
            vec![(true, true)],
            "round {round}: want one retained delivery, got {:?}",
            briefs(&got)
        );
        assert!(
            matches!(got.first(), Some(P5::SubAck { .. })),
            "round {round}: SUBACK first, got {:?}",
            briefs(&got)
        );
    }
}

fn retain_handling(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut publ = Client5::clean(b.addr(), &on("rhp", 3, shards));
    publ.publish("rh/t", b"kept", 1, true);
    settle_retained();
    // 0: at every subscribe.
    let mut c0 = Client5::clean(b.addr(), &on("rh0", 0, shards));
    for _ in 0..2 {
        c0.subscribe_opts(&[("rh/t", opts(1, false, false, 0))], None);
        let m = c0.expect_publish_acked(WAIT);
        assert!(m.retain && m.payload == b"kept", "{m:?}");
    }
    // 1: only when the subscription is new.
    let mut c1 = Client5::clean(b.addr(), &on("rh1", 1, shards));
    c1.subscribe_opts(&[("rh/t", opts(1, false, false, 1))], None);
    assert_eq!(c1.expect_publish_acked(WAIT).payload, b"kept");
    c1.subscribe_opts(&[("rh/t", opts(1, false, false, 1))], None);
    c1.expect_nothing(Duration::from_millis(300));
    // 2: never.
    let mut c2 = Client5::clean(b.addr(), &on("rh2", 2, shards));
    c2.subscribe_opts(&[("rh/t", opts(1, false, false, 2))], None);
    c2.expect_nothing(Duration::from_millis(300));
    // ...but live messages still flow.
    publ.publish("rh/t", b"live", 1, false);
    assert_eq!(c2.expect_publish_acked(WAIT).payload, b"live");
    publ.publish("rh/t", b"", 1, true);
}

fn subscription_maximum_qos(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut q0 = Client5::clean(b.addr(), &on("mq0", 0, shards));
    q0.subscribe("mq/t", 0);
    let mut q1 = Client5::clean(b.addr(), &on("mq1", 1, shards));
    q1.subscribe("mq/t", 1);
    let mut publ = Client5::clean(b.addr(), &on("mqp", 2, shards));
    publ.publish("mq/t", b"two", 2, false);
    assert_eq!(q0.expect_publish_acked(WAIT).qos, 0);
    assert_eq!(q1.expect_publish_acked(WAIT).qos, 1);
    publ.publish("mq/t", b"zero", 0, false);
    assert_eq!(q1.expect_publish_acked(WAIT).qos, 0, "never upgraded");
}

// ---------------------------------------------------------------------------------------
// Subscription Identifiers
// ---------------------------------------------------------------------------------------

fn subscription_identifiers(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("sid", 0, shards));
    c.subscribe_id("sid/+", 1, 7);
    c.subscribe_id("sid/#", 1, 9);
    c.subscribe("sid/none/#", 1);
    let mut publ = Client5::clean(b.addr(), &on("sidp", 1, shards));
    publ.publish("sid/a", b"both", 1, false);
    let m = c.expect_publish_acked(WAIT);
    let mut ids = m.props.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9], "one PUBLISH with both identifiers");
    c.expect_nothing(Duration::from_millis(200));
    publ.publish("sid/a/b", b"one", 1, false);
    let m = c.expect_publish_acked(WAIT);
    assert_eq!(m.props.subscription_identifiers, vec![9]);
    publ.publish("sid/none/x", b"some", 1, false);
    let m = c.expect_publish_acked(WAIT);
    let mut ids = m.props.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![9], "sid/none/# has no identifier, sid/# has 9");
    // Resubscribing replaces the identifier.
    c.subscribe_id("sid/+", 1, 8);
    publ.publish("sid/z", b"again", 1, false);
    let mut ids = c.expect_publish_acked(WAIT).props.subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, vec![8, 9]);
    // Resubscribing without one removes it; the largest identifier works.
    c.subscribe("sid/+", 1);
    c.subscribe_id("sid/#", 1, 268_435_455);
    publ.publish("sid/y", b"max", 1, false);
    assert_eq!(
        c.expect_publish_acked(WAIT).props.subscription_identifiers,
        vec![268_435_455]
    );
    c.subscribe_id("sid/#", 1, 9);
    c.subscribe_id("sid/+", 1, 8);
    // Retained messages carry it too.
    publ.publish("sid/r", b"ret", 1, true);
    c.expect_publish_acked(WAIT);
    settle_retained();
    let mut c2 = Client5::clean(b.addr(), &on("sid2", 2, shards));
    c2.subscribe_id("sid/r", 1, 42);
    let m = c2.expect_publish_acked(WAIT);
    assert!(m.retain);
    assert_eq!(m.props.subscription_identifiers, vec![42]);
    publ.publish("sid/r", b"", 1, true);
}

// ---------------------------------------------------------------------------------------
// Will: delay and properties
// ---------------------------------------------------------------------------------------

fn delayed_will(topic: &str) -> Will5 {
    Will5 {
        topic: topic.to_string(),
        payload: b"gone".to_vec(),
        qos: 1,
        delay_s: Some(2),
        ..Will5::default()
    }
}

fn will_delay_cancelled_by_reconnect(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wdw", 0, shards));
    watch.subscribe("wd/#", 1);
    let id = on("wdc", 1, shards);
    let o = Conn5::new(&id).expiry(10).will(delayed_will("wd/c"));
    let (c, _) = Client5::open(b.addr(), &o);
    c.drop_tcp();
    std::thread::sleep(Duration::from_millis(500));
    let (_c, ack) = Client5::open(b.addr(), &o.clone().clean(false));
    assert!(ack.present);
    std::thread::sleep(Duration::from_millis(2200));
    let mut publ = Client5::clean(b.addr(), &on("wdp", 2, shards));
    sentinel(&mut publ, &mut watch, "wd/sentinel");
}

/// A reconnect with Clean Start ends the old session, but it is still a new connection
/// before the delay ran out: the Will is cancelled, not published [MQTT-3.1.3-9] (as
/// Mosquitto's own test of a durable then clean reconnect expects).
fn will_delay_cancelled_by_clean_reconnect(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wdw", 0, shards));
    watch.subscribe("wd/#", 1);
    let id = on("wdk", 1, shards);
    let o = Conn5::new(&id).expiry(10).will(delayed_will("wd/k"));
    let (c, _) = Client5::open(b.addr(), &o);
    c.drop_tcp();
    std::thread::sleep(Duration::from_millis(500));
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(true));
    assert!(!ack.present);
    // Past the Will's 2 s delay: had it been kept, it would have been published by now.
    std::thread::sleep(Duration::from_millis(2200));
    let mut publ = Client5::clean(b.addr(), &on("wdp", 2, shards));
    sentinel(&mut publ, &mut watch, "wd/sentinel");
}

fn will_delay_publishes_after_delay(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wdw", 0, shards));
    watch.subscribe("wd/#", 1);
    let o = Conn5::new(&on("wdd", 1, shards))
        .expiry(10)
        .will(delayed_will("wd/d"));
    let (c, _) = Client5::open(b.addr(), &o);
    let t0 = Instant::now();
    c.drop_tcp();
    let m = watch.expect_publish_acked(Duration::from_secs(6));
    let waited = t0.elapsed();
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("wd/d", &b"gone"[..])
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "Will sent after {waited:?}, before its 2 s delay"
    );
}

fn will_properties_forwarded(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wpw", 0, shards));
    watch.subscribe("wp/#", 1);
    let w = Will5 {
        topic: "wp/t".into(),
        payload: b"{\"bye\":1}".to_vec(),
        qos: 1,
        content_type: Some("application/json".into()),
        response_topic: Some("wp/reply".into()),
        correlation_data: Some(vec![1, 2, 3]),
        user_properties: vec![
            ("k".into(), "1".into()),
            ("j".into(), "2".into()),
            ("k".into(), "3".into()),
        ],
        ..Will5::default()
    };
    let (c, _) = Client5::open(b.addr(), &Conn5::new(&on("wpc", 1, shards)).will(w.clone()));
    c.drop_tcp();
    let m = watch.expect_publish_acked(WAIT);
    assert_eq!(m.payload, w.payload);
    assert_eq!(m.props.content_type, w.content_type);
    assert_eq!(m.props.response_topic, w.response_topic);
    assert_eq!(m.props.correlation_data, w.correlation_data);
    assert_eq!(m.props.user_properties, w.user_properties);
}

// ---------------------------------------------------------------------------------------
// Request / response
// ---------------------------------------------------------------------------------------

fn request_response_rumqttc(shards: usize) {
    use rq::mqttbytes::v5::{Packet as RP, PubAckReason, PublishProperties};
    use rq::mqttbytes::QoS as RQ;
    let b = common::Broker::with_shards(shards, &[]);
    let (responder, mut rconn, _) = rq_connect(rq_options(b.addr(), &on("rrs", 0, shards)));
    responder.subscribe("svc/req", RQ::AtLeastOnce).unwrap();
    rq_suback(&mut rconn);
    let (requester, mut qconn, _) = rq_connect(rq_options(b.addr(), &on("rrq", 1, shards)));
    requester.subscribe("svc/resp/1", RQ::AtLeastOnce).unwrap();
    rq_suback(&mut qconn);
    let corr = vec![0u8, 0xff, 7, 0x80];
    let props = PublishProperties {
        response_topic: Some("svc/resp/1".into()),
        correlation_data: Some(corr.clone().into()),
        ..PublishProperties::default()
    };
    requester
        .publish_with_properties("svc/req", RQ::AtLeastOnce, false, "ping", props)
        .unwrap();
    // A sync rumqttc connection only moves while it is polled.
    assert_eq!(rq_puback(&mut qconn), PubAckReason::Success);
    let req = rq_publish(&mut rconn);
    let p = req.properties.clone().expect("request properties");
    assert_eq!(p.response_topic.as_deref(), Some("svc/resp/1"));
    assert_eq!(p.correlation_data.as_deref(), Some(corr.as_slice()));
    let reply = PublishProperties {
        correlation_data: p.correlation_data.clone(),
        ..PublishProperties::default()
    };
    responder
        .publish_with_properties(
            p.response_topic.unwrap(),
            RQ::AtLeastOnce,
            false,
            "pong",
            reply,
        )
        .unwrap();
    assert_eq!(rq_puback(&mut rconn), PubAckReason::Success);
    let resp = rq_until(&mut qconn, WAIT, "response", |p| match p {
        RP::Publish(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(&resp.topic[..], b"svc/resp/1");
    assert_eq!(&resp.payload[..], b"pong");
    let rp = resp.properties.expect("response properties");
    assert_eq!(rp.correlation_data.as_deref(), Some(corr.as_slice()));
}

fn response_information(shards: usize) {
    let b = common::Broker::with_shards(shards, &["--response-information", "reply/"]);
    let id = on("ri", 1, shards);
    let mut o = Conn5::new(&id);
    o.request_response_information = Some(1);
    let (_c, ack) = Client5::open(b.addr(), &o);
    assert_eq!(ack.props.response_information, Some(format!("reply/{id}")));
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&on("ri0", 2, shards)));
    assert_eq!(ack.props.response_information, None, "not requested");
    let b = common::Broker::with_shards(shards, &[]);
    let (_c, ack) = Client5::open(b.addr(), &o);
    assert_eq!(ack.props.response_information, None, "not configured");
}

// ---------------------------------------------------------------------------------------
// User Properties, Payload Format Indicator, Content Type
// ---------------------------------------------------------------------------------------

fn user_properties_and_content_rumqttc(shards: usize) {
    use rq::mqttbytes::v5::{PublishProperties, SubscribeProperties};
    use rq::mqttbytes::QoS as RQ;
    let b = common::Broker::with_shards(shards, &[]);
    let (sub, mut sconn, _) = rq_connect(rq_options(b.addr(), &on("ups", 0, shards)));
    sub.subscribe_with_properties(
        "up/#",
        RQ::AtLeastOnce,
        SubscribeProperties {
            id: Some(33),
            user_properties: vec![],
        },
    )
    .unwrap();
    rq_suback(&mut sconn);
    let mut raw = Client5::clean(b.addr(), &on("upr", 2, shards));
    raw.subscribe("up/#", 1);
    let users: Vec<(String, String)> = [("z", "1"), ("a", "2"), ("z", "3"), ("ü", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (publ, mut pconn, _) = rq_connect(rq_options(b.addr(), &on("upp", 1, shards)));
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain; charset=utf-8".into()),
        user_properties: users.clone(),
        ..PublishProperties::default()
    };
    publ.publish_with_properties("up/t", RQ::AtLeastOnce, false, "héllo", props)
        .unwrap();
    assert_eq!(
        rq_puback(&mut pconn),
        rq::mqttbytes::v5::PubAckReason::Success
    );
    let m = rq_publish(&mut sconn);
    let p = m.properties.expect("properties forwarded");
    assert_eq!(p.user_properties, users, "order and duplicates kept");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(p.subscription_identifiers, vec![33]);
    let m = raw.expect_publish_acked(WAIT);
    assert_eq!(m.props.user_properties, users);
    assert_eq!(m.props.payload_format_indicator, Some(1));
    assert_eq!(m.props.subscription_identifiers, Vec::<u32>::new());
}

fn payload_format_invalid_refused(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut sub = Client5::clean(b.addr(), &on("pfs", 0, shards));
    sub.subscribe("pf/t", 1);
    let mut publ = Client5::clean(b.addr(), &on("pfp", 1, shards));
    let utf8 = Properties {
        payload_format_indicator: Some(1),
        ..Properties::default()
    };
    assert_eq!(
        publ.publish_props("pf/t", &[0xff, 0xfe, 0x00], 1, false, utf8),
        0x99
    );
    assert_eq!(
        publ.publish_props("pf/t", &[0xc3, 0x28], 2, false, utf8),
        0x99
    );
    // Not UTF-8 but not claimed to be: delivered.
    let bytes = Properties {
        payload_format_indicator: Some(0),
        ..Properties::default()
    };
    assert_eq!(publ.publish_props("pf/t", &[0xff], 1, false, bytes), 0);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        m.payload,
        vec![0xff],
        "only the unmarked binary payload is delivered"
    );
    sentinel(&mut publ, &mut sub, "pf/t");
}

// ---------------------------------------------------------------------------------------
// Reason codes
// ---------------------------------------------------------------------------------------

fn puback_no_matching_subscribers(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut publ = Client5::clean(b.addr(), &on("nms", 1, shards));
    assert_eq!(publ.publish("nms/t", b"x", 1, false), 0x10);
    assert_eq!(publ.publish("nms/t", b"x", 2, false), 0x10, "PUBREC too");
    let mut sub = Client5::clean(b.addr(), &on("nmss", 2, shards));
    sub.subscribe("nms/+", 1);
    assert_eq!(publ.publish("nms/t", b"x", 1, false), 0x00);
    assert_eq!(publ.publish("nms/t", b"x", 2, false), 0x00);
}

fn suback_reason_per_filter(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("sa", 0, shards));
    let codes = c.subscribe_opts(
        &[
            ("sa/ok", opts(0, false, false, 0)),
            ("sa/#/bad", opts(1, false, false, 0)),
            ("sa/+", opts(2, false, false, 0)),
            ("sa+", opts(1, false, false, 0)),
            ("sa/#", opts(1, false, false, 0)),
        ],
        None,
    );
    assert_eq!(codes, vec![0x00, 0x8F, 0x02, 0x8F, 0x01]);
}

fn unsuback_reason_codes(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("ua", 1, shards));
    c.subscribe("ua/a", 1);
    assert_eq!(c.unsubscribe(&["ua/a", "ua/b"]), vec![0x00, 0x11]);
    assert_eq!(c.unsubscribe(&["ua/a"]), vec![0x11], "already removed");
}

fn keepalive_timeout_0x8d(shards: usize) {
    let b = common::Broker::with_shards(shards, &["--max-keepalive", "1"]);
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new(&on("ka", 1, shards)).keep_alive(30));
    assert_eq!(
        ack.props.server_keep_alive,
        Some(1),
        "Server Keep Alive overrides 30"
    );
    let t0 = Instant::now();
    c.expect_disconnect_reason(0x8D);
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "closed after {:?}, before 1.5 × the server's keep alive",
        t0.elapsed()
    );
}

fn takeover_0x8e(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("to", 2, shards);
    let mut old = Client5::clean(b.addr(), &id);
    let (_new, ack) = Client5::open(b.addr(), &Conn5::new(&id));
    assert!(!ack.present);
    old.expect_disconnect_reason(0x8E);
}

fn malformed_after_connect_0x81(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("mal", 3, shards));
    // PUBLISH with QoS 3.
    let mut body = Vec::new();
    common::mqtt_str(b"mal/t", &mut body);
    body.extend_from_slice(&[0x00, 0x01, 0x00]);
    body.extend_from_slice(b"x");
    c.send_bytes(&common::frame(0x36, &body));
    c.expect_disconnect_reason(0x81);
}

fn server_shutdown_0x8b(shards: usize) {
    let mut b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("sd", 1, shards));
    let mut old = RawClient::clean(b.addr(), &on("sd3", 2, shards));
    c.ping();
    old.ping();
    let status = b.terminate(WAIT).expect("broker exits on SIGTERM");
    let got = c.wait_closed(WAIT);
    assert!(
        matches!(got.as_slice(), [P5::Disconnect { reason: 0x8B, props }]
            if props.reason_string.is_some()),
        "5.0 client at shutdown: want DISCONNECT 0x8B with a Reason String, got {got:?} \
         (broker exit status {status:?})"
    );
    // 3.1.1 has no server DISCONNECT: just the close.
    old.expect_closed(WAIT);
}

// ---------------------------------------------------------------------------------------
// Mixed versions
// ---------------------------------------------------------------------------------------

fn v311_and_v5_interoperate(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut old = RawClient::clean(b.addr(), &on("mx3", 0, shards));
    old.subscribe("mx/#", 1);
    let (mut new, _) = Client5::open(b.addr(), &Conn5::new(&on("mx5", 1, shards)).alias_max(5));
    new.subscribe_id("mx/#", 1, 5);
    // 3.1.1 → 5.0 (and 3.1.1).
    old.publish("mx/from3", b"plain", 1, false);
    let m = new.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("mx/from3", &b"plain"[..])
    );
    assert_eq!(m.props.subscription_identifiers, vec![5]);
    assert!(m.props.user_properties.is_empty());
    old.expect_publish_acked(WAIT);
    // 5.0 with every forwardable property → 3.1.1: a plain 3.1.1 PUBLISH.
    let users = [("a", "b"), ("a", "c")];
    let props = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain"),
        response_topic: Some("mx/reply"),
        correlation_data: Some(b"corr"),
        user_properties: UserProperties::Slice(&users),
        ..Properties::default()
    };
    for _ in 0..2 {
        new.publish_props("mx/from5", b"rich", 1, false, props);
        let m = old.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.payload.as_slice()),
            ("mx/from5", &b"rich"[..]),
            "decoded as plain 3.1.1: no properties, no alias"
        );
        let m = new.expect_publish_acked(WAIT);
        assert_eq!(m.props.user_properties.len(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// More Will, session and delivery cases
// ---------------------------------------------------------------------------------------

fn immediate_will(topic: &str) -> Will5 {
    Will5 {
        topic: topic.to_string(),
        payload: b"will".to_vec(),
        qos: 1,
        ..Will5::default()
    }
}

fn will_sent_on_disconnect_with_will_message(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("w4w", 0, shards));
    watch.subscribe("w4/#", 1);
    let (c, _) = Client5::open(
        b.addr(),
        &Conn5::new(&on("w4a", 1, shards)).will(immediate_will("w4/a")),
    );
    c.disconnect_with(ReasonCode::DisconnectWithWillMessage, None);
    let m = watch.expect_publish_acked(WAIT);
    assert_eq!(m.topic, "w4/a", "0x04 asks for the Will");
    let (c, _) = Client5::open(
        b.addr(),
        &Conn5::new(&on("w4b", 2, shards)).will(immediate_will("w4/b")),
    );
    c.disconnect_with(ReasonCode::NormalDisconnection, None);
    let mut publ = Client5::clean(b.addr(), &on("w4p", 3, shards));
    sentinel(&mut publ, &mut watch, "w4/sentinel");
}

fn will_delay_capped_by_session_expiry(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wcw", 0, shards));
    watch.subscribe("wc/#", 1);
    let mut w = immediate_will("wc/t");
    w.delay_s = Some(60);
    let (c, _) = Client5::open(
        b.addr(),
        &Conn5::new(&on("wcc", 1, shards)).expiry(1).will(w),
    );
    let t0 = Instant::now();
    c.drop_tcp();
    let m = watch.expect_publish_acked(Duration::from_secs(5));
    assert_eq!(m.topic, "wc/t");
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "sent after {:?}: before the 1 s session expiry",
        t0.elapsed()
    );
}

fn will_on_takeover(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wtw", 0, shards));
    watch.subscribe("wt/#", 1);
    // Taken over by a Clean Start connection: the old session ends, its Will goes out.
    let id = on("wtc", 1, shards);
    let (mut old, _) = Client5::open(b.addr(), &Conn5::new(&id).will(immediate_will("wt/a")));
    let (_new, _) = Client5::open(b.addr(), &Conn5::new(&id));
    old.expect_disconnect_reason(0x8E);
    assert_eq!(watch.expect_publish_acked(WAIT).topic, "wt/a");
    // Taken over by a resuming connection while the Will waits out its delay: cancelled.
    let id = on("wtd", 2, shards);
    let mut w = immediate_will("wt/b");
    w.delay_s = Some(1);
    let (mut old, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(30).will(w));
    let (_new, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(30));
    assert!(ack.present);
    old.expect_disconnect_reason(0x8E);
    // A detached session whose Will waits out a long delay, ended by a Clean Start
    // connection: that is a new connection before the delay ran out, so the Will is
    // cancelled [MQTT-3.1.3-9], as Mosquitto 2.0 does (the sentinel below shows it).
    let id3 = on("wte", 3, shards);
    let mut w = immediate_will("wt/c");
    w.delay_s = Some(60);
    let (gone, _) = Client5::open(b.addr(), &Conn5::new(&id3).expiry(30).will(w));
    gone.drop_tcp();
    std::thread::sleep(Duration::from_millis(100));
    let (_fresh, ack) = Client5::open(b.addr(), &Conn5::new(&id3));
    assert!(!ack.present);
    std::thread::sleep(Duration::from_millis(1300));
    let mut publ = Client5::clean(b.addr(), &on("wtp", 3, shards));
    sentinel(&mut publ, &mut watch, "wt/sentinel");
}

fn retained_message_expiry(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut publ = Client5::clean(b.addr(), &on("rep", 1, shards));
    let expiring = |s| Properties {
        message_expiry_interval: Some(s),
        ..Properties::default()
    };
    publ.publish_props("rex/short", b"short", 1, true, expiring(1));
    publ.publish_props("rex/long", b"long", 1, true, expiring(60));
    std::thread::sleep(Duration::from_millis(2100));
    let mut c = Client5::clean(b.addr(), &on("res", 0, shards));
    c.subscribe("rex/#", 1);
    let m = c.expect_publish_acked(WAIT);
    assert_eq!(
        m.payload, b"long",
        "the expired retained message is not sent"
    );
    let left = m.props.message_expiry_interval.expect("expiry forwarded");
    assert!(
        (50..=58).contains(&left),
        "retained interval reduced: {left}"
    );
    c.expect_nothing(Duration::from_millis(300));
    publ.publish("rex/long", b"", 1, true);
}

fn redelivery_keeps_properties(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("rdk", 0, shards);
    let o = Conn5::new(&id).expiry(60);
    let (mut sub, _) = Client5::open(b.addr(), &o);
    sub.subscribe_id("rdk/#", 1, 21);
    let mut publ = Client5::clean(b.addr(), &on("rdkp", 1, shards));
    let users = [("trace", "42"), ("trace", "43")];
    publ.publish_props(
        "rdk/t",
        b"again",
        1,
        false,
        Properties {
            user_properties: UserProperties::Slice(&users),
            content_type: Some("text/plain"),
            ..Properties::default()
        },
    );
    let first = sub.expect_publish(WAIT);
    assert!(!first.dup);
    sub.drop_tcp();
    let (mut sub, ack) = Client5::open(b.addr(), &o.clone().clean(false));
    assert!(ack.present);
    let again = sub.expect_publish_acked(WAIT);
    assert!(again.dup, "resent with DUP");
    assert_eq!(again.pid, first.pid, "same packet id");
    assert_eq!(again.payload, first.payload);
    assert_eq!(again.props.user_properties, first.props.user_properties);
    assert_eq!(again.props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(again.props.subscription_identifiers, vec![21]);
}

fn session_expiry_replaced_on_reconnect(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("ser", 2, shards);
    let (c, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(60));
    c.disconnect();
    let (c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(1));
    assert!(ack.present);
    c.disconnect();
    std::thread::sleep(Duration::from_millis(1600));
    let (_c, ack) = Client5::open(b.addr(), &Conn5::new(&id).clean(false).expiry(1));
    assert!(
        !ack.present,
        "the interval of the latest CONNECT (1 s) applies"
    );
}

fn overlapping_subscriptions_one_delivery(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &on("ov", 0, shards));
    c.subscribe("ov/+", 0);
    c.subscribe("ov/#", 1);
    let mut publ = Client5::clean(b.addr(), &on("ovp", 1, shards));
    publ.publish("ov/t", b"once", 2, false);
    let m = c.expect_publish_acked(WAIT);
    assert_eq!(m.qos, 1, "the highest granted QoS");
    c.expect_nothing(Duration::from_millis(300));
}

fn second_connect_0x82(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("sc", 1, shards);
    let mut c = Client5::clean(b.addr(), &id);
    c.send(&shardmq::protocol::Packet::Connect(
        shardmq::protocol::Connect {
            version: shardmq::protocol::Version::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: &id,
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        },
    ));
    c.expect_disconnect_reason(0x82);
}

fn qos0_invalid_payload_format_disconnects(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut sub = Client5::clean(b.addr(), &on("pf0s", 0, shards));
    sub.subscribe("pf0/t", 0);
    let mut c = Client5::clean(b.addr(), &on("pf0", 1, shards));
    c.send_publish(
        "pf0/t",
        &[0xff],
        0,
        false,
        None,
        Properties {
            payload_format_indicator: Some(1),
            ..Properties::default()
        },
    );
    c.expect_disconnect_reason(0x99);
    sub.expect_nothing(Duration::from_millis(200));
}

/// Request Problem Information 0: no Reason String (nor User Property) on anything but
/// PUBLISH, CONNACK and DISCONNECT.
fn request_problem_information_zero(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut o = Conn5::new(&on("rpi", 1, shards));
    o.request_problem_information = Some(0);
    let (mut c, _) = Client5::open(b.addr(), &o);
    let p = c.next_pid();
    c.send_publish(
        "rpi/t",
        &[0xff],
        1,
        false,
        Some(p),
        Properties {
            payload_format_indicator: Some(1),
            ..Properties::default()
        },
    );
    let subs = [shardmq::protocol::Subscription {
        filter: "rpi/#/x",
        options: opts(0, false, false, 0),
    }];
    c.send(&shardmq::protocol::Packet::Subscribe(
        shardmq::protocol::Subscribe {
            packet_id: std::num::NonZeroU16::new(50).expect("pid"),
            properties: Properties::default(),
            filters: shardmq::protocol::SubscriptionList::Slice(&subs),
        },
    ));
    c.send(&shardmq::protocol::Packet::Unsubscribe(
        shardmq::protocol::Unsubscribe {
            packet_id: std::num::NonZeroU16::new(51).expect("pid"),
            properties: Properties::default(),
            filters: shardmq::protocol::StrList::Slice(&["rpi/none"]),
        },
    ));
    c.send(&shardmq::protocol::Packet::PingReq);
    let mut seen = Vec::new();
    loop {
        let g = c.expect(WAIT);
        if g == P5::PingResp {
            break;
        }
        let props = match &g {
            P5::PubAck { props, .. } | P5::SubAck { props, .. } | P5::UnsubAck { props, .. } => {
                props
            }
            _ => continue,
        };
        assert_eq!(props.reason_string, None, "{}", g.brief());
        assert!(props.user_properties.is_empty(), "{}", g.brief());
        seen.push(g.brief());
    }
    assert_eq!(
        seen,
        vec!["PUBACK(1, 0x99)", "SUBACK(50, [8f])", "UNSUBACK(51, [11])"]
    );
}

/// The Will is kept only by a DISCONNECT with 0x00 [MQTT-3.1.2-10]: a client DISCONNECT
/// with an error reason code still gets it published.
fn will_sent_on_client_error_disconnect(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wew", 0, shards));
    watch.subscribe("we/#", 1);
    let (c, _) = Client5::open(
        b.addr(),
        &Conn5::new(&on("wec", 1, shards)).will(immediate_will("we/err")),
    );
    c.disconnect_with(ReasonCode::UnspecifiedError, None);
    let m = watch.expect_publish_acked(WAIT);
    assert_eq!(
        m.topic, "we/err",
        "DISCONNECT 0x80 does not discard the Will"
    );
}

/// A server that closes the connection for a client's error publishes its Will.
fn will_sent_when_server_disconnects_for_error(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wsw", 0, shards));
    watch.subscribe("ws/#", 1);
    let (mut c, _) = Client5::open(
        b.addr(),
        &Conn5::new(&on("wsc", 1, shards)).will(immediate_will("ws/err")),
    );
    c.send_bytes(&publish_with_alias_bytes("ws/x", 11));
    c.expect_disconnect_reason(0x94);
    assert_eq!(watch.expect_publish_acked(WAIT).topic, "ws/err");
}

/// A PUBREC with an error reason ends the QoS 2 flow: no PUBREL, and the in-flight slot
/// is free again.
fn pubrec_error_ends_flow(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&on("pre", 0, shards)).receive_max(1));
    sub.subscribe("pre/t", 2);
    let mut publ = Client5::clean(b.addr(), &on("prep", 1, shards));
    publ.publish("pre/t", b"1", 2, false);
    publ.publish("pre/t", b"2", 2, false);
    let m1 = sub.expect_publish(WAIT);
    assert_eq!(m1.payload, b"1");
    sub.send(&shardmq::protocol::Packet::PubRec(shardmq::protocol::Ack {
        packet_id: std::num::NonZeroU16::new(m1.pid.expect("pid")).expect("pid"),
        reason: ReasonCode::UnspecifiedError,
        properties: Properties::default(),
    }));
    let m2 = sub.expect_publish(WAIT);
    assert_eq!(
        m2.payload, b"2",
        "the refused message freed the window (no PUBREL first)"
    );
    sub.ack(&m2);
    sub.expect_nothing(Duration::from_millis(200));
}

/// Messages queued while offline are released within the Receive Maximum of the
/// resuming connection.
fn receive_maximum_applies_to_queued_on_resume(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("rmq", 0, shards);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&id).expiry(60));
    sub.subscribe("rmq/t", 1);
    sub.disconnect();
    let mut publ = Client5::clean(b.addr(), &on("rmqp", 1, shards));
    for i in 1..=3u8 {
        publ.publish("rmq/t", &[b'0' + i], 1, false);
    }
    let o = Conn5::new(&id).clean(false).expiry(60).receive_max(1);
    let (mut sub, ack) = Client5::open(b.addr(), &o);
    assert!(ack.present);
    for i in 1..=3u8 {
        let m = sub.expect_publish(WAIT);
        assert_eq!(m.payload, [b'0' + i]);
        sub.expect_nothing(Duration::from_millis(200));
        sub.ack(&m);
    }
}

/// rumqttc v5 with Clean Start 0 and a Session Expiry Interval: the session and a QoS 1
/// message queued while away survive a reconnect.
fn session_resume_rumqttc(shards: usize) {
    use rq::mqttbytes::v5::ConnectProperties;
    use rq::mqttbytes::QoS as RQ;
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("rqs", 0, shards);
    let opts = || {
        let mut o = rq_options(b.addr(), &id);
        o.set_clean_start(false);
        let mut p = ConnectProperties::new();
        p.session_expiry_interval = Some(60);
        o.set_connect_properties(p);
        o
    };
    let (c, mut conn, ack) = rq_connect(opts());
    assert!(!ack.session_present);
    c.subscribe("rqs/t", RQ::AtLeastOnce).unwrap();
    rq_suback(&mut conn);
    c.disconnect().unwrap();
    let _ = conn.recv_timeout(Duration::from_millis(200));
    drop(conn);
    let mut publ = Client5::clean(b.addr(), &on("rqsp", 1, shards));
    // Queued for the detached session (or, if the DISCONNECT is still in flight, in flight
    // to the old connection and resent on resumption): either way it must arrive.
    assert_eq!(publ.publish("rqs/t", b"queued", 1, false), 0x00);
    let (_c, mut conn, ack) = rq_connect(opts());
    assert!(ack.session_present, "rumqttc resumes its session");
    let m = rq_publish(&mut conn);
    assert_eq!(&m.payload[..], b"queued");
}

/// The server never sends a packet larger than the client's Maximum Packet Size, not even
/// a DISCONNECT: its Reason String is dropped when it would not fit [MQTT-3.1.2-24/25].
fn server_disconnect_within_client_maximum(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = on("sdm", 1, shards);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new(&id).max_packet(16));
    c.send(&shardmq::protocol::Packet::Connect(
        shardmq::protocol::Connect {
            version: shardmq::protocol::Version::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: &id,
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        },
    ));
    let got = c.wait_closed(WAIT);
    assert!(
        c.sizes.iter().all(|&n| n <= 16),
        "packets of {:?} bytes for a client with Maximum Packet Size 16: {:?}",
        c.sizes,
        briefs(&got)
    );
    assert!(
        matches!(got.as_slice(), [] | [P5::Disconnect { reason: 0x82, .. }]),
        "{:?}",
        briefs(&got)
    );
}

/// A Will's Message Expiry Interval is its lifetime once published, not counted from the
/// CONNECT that carried it [MQTT-3.1.3.2.4].
fn will_message_expiry_starts_at_publication(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut watch = Client5::clean(b.addr(), &on("wmw", 0, shards));
    watch.subscribe("wm/#", 1);
    let mut w = immediate_will("wm/t");
    w.message_expiry_s = Some(2);
    w.payload_format_indicator = Some(1);
    let (c, _) = Client5::open(b.addr(), &Conn5::new(&on("wmc", 1, shards)).will(w));
    std::thread::sleep(Duration::from_millis(2300));
    c.drop_tcp();
    let m = watch.expect_publish_acked(WAIT);
    assert_eq!(m.topic, "wm/t");
    assert_eq!(m.props.payload_format_indicator, Some(1));
    assert_eq!(
        m.props.message_expiry_interval,
        Some(2),
        "the Will's 2 s lifetime starts when it is published"
    );
}

/// A QoS 2 delivery occupies its Receive Maximum slot until PUBCOMP, not just PUBREC.
fn client_receive_maximum_counts_qos2_until_pubcomp(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&on("rm2", 0, shards)).receive_max(1));
    sub.subscribe("rm2/t", 2);
    let mut publ = Client5::clean(b.addr(), &on("rm2p", 1, shards));
    publ.publish("rm2/t", b"1", 2, false);
    publ.publish("rm2/t", b"2", 2, false);
    let m1 = sub.expect_publish(WAIT);
    let pid = std::num::NonZeroU16::new(m1.pid.expect("pid")).expect("pid");
    sub.send(&shardmq::protocol::Packet::PubRec(
        shardmq::protocol::Ack::new(pid),
    ));
    match sub.expect(WAIT) {
        P5::PubRel { pid: p, .. } => assert_eq!(p, pid.get()),
        other => panic!("want PUBREL, got {}", other.brief()),
    }
    sub.expect_nothing(Duration::from_millis(300));
    sub.send(&shardmq::protocol::Packet::PubComp(
        shardmq::protocol::Ack::new(pid),
    ));
    assert_eq!(sub.expect_publish_acked(WAIT).payload, b"2");
}

/// A message that expires while queued behind a full in-flight window of an online client
/// is dropped, not sent late.
fn message_expiry_while_window_full(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let (mut sub, _) = Client5::open(b.addr(), &Conn5::new(&on("mew", 0, shards)).receive_max(1));
    sub.subscribe("mew/t", 1);
    let mut publ = Client5::clean(b.addr(), &on("mewp", 1, shards));
    publ.publish("mew/t", b"first", 1, false);
    let expiring = Properties {
        message_expiry_interval: Some(1),
        ..Properties::default()
    };
    publ.publish_props("mew/t", b"stale", 1, false, expiring);
    publ.publish("mew/t", b"last", 1, false);
    let first = sub.expect_publish(WAIT);
    assert_eq!(first.payload, b"first");
    std::thread::sleep(Duration::from_millis(1500));
    sub.ack(&first);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        m.payload, b"last",
        "the message that expired in the queue is skipped"
    );
}

/// Topic aliases both ways with rumqttc's v5 client: it publishes with an alias (topic,
/// then empty topic) and receives aliased deliveries it resolves itself.
fn topic_aliases_rumqttc(shards: usize) {
    use rq::mqttbytes::v5::{PubAckReason, PublishProperties};
    use rq::mqttbytes::QoS as RQ;
    let b = common::Broker::with_shards(shards, &[]);
    let mut so = rq_options(b.addr(), &on("tars", 0, shards));
    so.set_topic_alias_max(Some(5));
    let (sub, mut sconn, _) = rq_connect(so);
    sub.subscribe("tar/#", RQ::AtLeastOnce).unwrap();
    rq_suback(&mut sconn);
    let mut raw = Client5::clean(b.addr(), &on("tarr", 2, shards));
    raw.subscribe("tar/#", 1);
    let (publ, mut pconn, ack) = rq_connect(rq_options(b.addr(), &on("tarp", 1, shards)));
    assert_eq!(ack.properties.and_then(|p| p.topic_alias_max), Some(10));
    let alias = || PublishProperties {
        topic_alias: Some(3),
        ..PublishProperties::default()
    };
    for (topic, payload) in [("tar/long/topic/name", "1"), ("", "2"), ("", "3")] {
        publ.publish_with_properties(topic, RQ::AtLeastOnce, false, payload, alias())
            .unwrap();
        assert_eq!(rq_puback(&mut pconn), PubAckReason::Success);
    }
    for want in ["1", "2", "3"] {
        let m = rq_publish(&mut sconn);
        assert_eq!(
            &m.topic[..],
            b"tar/long/topic/name",
            "rumqttc resolved the alias"
        );
        assert_eq!(&m.payload[..], want.as_bytes());
    }
    // What went over the wire to an alias-capable client: topic once, then alias only.
    let wire: Vec<(String, Option<u16>)> = raw
        .collect(3)
        .into_iter()
        .map(|m| (m.topic, m.props.topic_alias))
        .collect();
    assert_eq!(
        wire,
        vec![
            ("tar/long/topic/name".to_string(), None),
            ("tar/long/topic/name".to_string(), None),
            ("tar/long/topic/name".to_string(), None),
        ],
        "the raw client set no Topic Alias Maximum: full topics"
    );
}

shard_tests!(
    connack_defaults_advertised,
    connack_configured_limits,
    assigned_client_identifier,
    session_expiry_zero_ends_at_disconnect,
    session_expiry_interval_kept_then_expired,
    session_expiry_max_never_expires,
    disconnect_cannot_set_expiry_after_zero,
    disconnect_with_zero_expiry_ends_session,
    clean_start_discards_session,
    message_expiry,
    topic_alias_client_to_server,
    topic_alias_above_maximum_0x94,
    topic_alias_zero_0x94,
    topic_alias_unknown_is_protocol_error,
    topic_alias_server_to_client,
    topic_aliases_are_per_connection,
    subscription_identifier_from_client_is_protocol_error,
    topic_alias_server_respects_client_maximum,
    client_receive_maximum_bounds_inflight,
    server_receive_maximum_enforced,
    client_maximum_packet_size,
    server_maximum_packet_size,
    maximum_packet_size_boundary,
    no_local,
    retain_as_published,
    retain_handling,
    retained_before_subscribe_arrives_once,
    subscription_maximum_qos,
    subscription_identifiers,
    will_delay_cancelled_by_reconnect,
    will_delay_cancelled_by_clean_reconnect,
    will_delay_publishes_after_delay,
    will_properties_forwarded,
    request_response_rumqttc,
    response_information,
    user_properties_and_content_rumqttc,
    payload_format_invalid_refused,
    puback_no_matching_subscribers,
    suback_reason_per_filter,
    unsuback_reason_codes,
    keepalive_timeout_0x8d,
    takeover_0x8e,
    malformed_after_connect_0x81,
    server_shutdown_0x8b,
    v311_and_v5_interoperate,
    will_sent_on_disconnect_with_will_message,
    will_delay_capped_by_session_expiry,
    will_on_takeover,
    retained_message_expiry,
    redelivery_keeps_properties,
    session_expiry_replaced_on_reconnect,
    overlapping_subscriptions_one_delivery,
    second_connect_0x82,
    qos0_invalid_payload_format_disconnects,
    request_problem_information_zero,
    will_sent_on_client_error_disconnect,
    will_sent_when_server_disconnects_for_error,
    pubrec_error_ends_flow,
    receive_maximum_applies_to_queued_on_resume,
    session_resume_rumqttc,
    server_disconnect_within_client_maximum,
    will_message_expiry_starts_at_publication,
    client_receive_maximum_counts_qos2_until_pubcomp,
    message_expiry_while_window_full,
    topic_aliases_rumqttc,
);
