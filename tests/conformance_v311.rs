//! MQTT 3.1 / 3.1.1 behaviour over real sockets: CONNECT rules, keepalive, QoS flows,
//! subscriptions and wildcards, retained messages, wills and persistent sessions.
//! Every behaviour runs against `--shards 1` and `--shards 4`; with 4 shards the clients
//! of a test get ids whose home shards differ, so messages cross shards.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shardmq::protocol::Version;

/// Publish `topic` then require it to be the next PUBLISH `sub` receives: proves that
/// everything published before it and not received was not delivered.
fn sentinel(publ: &mut RawClient, sub: &mut RawClient, topic: &str) {
    publ.publish(topic, b"sentinel", 1, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (topic, &b"sentinel"[..]),
        "[{}] expected only the sentinel, got {m:?}",
        sub.id
    );
}

// ---------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------

fn first_packet_must_be_connect(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    // PINGREQ first.
    let mut c = RawClient::connect(b.addr());
    c.send_bytes(&[0xC0, 0x00]);
    c.expect_closed(WAIT);
    // A well-formed SUBSCRIBE first.
    let mut c = RawClient::connect(b.addr());
    let mut body = vec![0x00, 0x01];
    mqtt_str(b"a/b", &mut body);
    body.push(0);
    c.send_bytes(&frame(0x82, &body));
    c.expect_closed(WAIT);
    // The broker still serves a proper client.
    let mut ok = RawClient::clean(b.addr(), "after");
    ok.ping();
}

fn second_connect_is_a_violation(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let id = id_on("twice", 1, shards);
    let mut c = RawClient::clean(b.addr(), &id);
    c.send_connect(&ConnectOpts::v311(&id));
    c.expect_closed(WAIT);
}

fn bad_protocol_level_gets_return_code_1(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    for level in [0u8, 2, 6, 7, 255] {
        let mut c = RawClient::connect(b.addr());
        c.send_bytes(&connect_bytes(b"MQTT", level, 0x02, "lvl"));
        match c.expect_packet(WAIT) {
            Got::ConnAck { present, code } => {
                assert_eq!(code, 1, "level {level}: CONNACK return code");
                assert!(!present, "level {level}: session present must be 0");
            }
            other => panic!("level {level}: expected CONNACK 1, got {other:?}"),
        }
        c.expect_closed(WAIT);
    }
}

fn bad_protocol_name_is_refused(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    for name in [&b"MQTX"[..], b"mqtt", b"MQIsdp", b""] {
        // MQIsdp with level 4 is neither 3.1 nor 3.1.1.
        let mut c = RawClient::connect(b.addr());
        c.send_bytes(&connect_bytes(name, 4, 0x02, "name"));
        let got = c.wait_closed(WAIT);
        assert!(
            !got.contains(&Got::ConnAck {
                present: false,
                code: 0
            }),
            "protocol name {:?} level 4 was accepted: {got:?}",
            String::from_utf8_lossy(name)
        );
    }
}

fn mqtt31_mqisdp_level3_accepted(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("v31", 2, shards);
    let o = ConnectOpts {
        version: Version::V3_1,
        ..ConnectOpts::v311(&ids[0])
    };
    let (mut sub, present) = RawClient::connect_with(b.addr(), &o);
    assert!(!present);
    sub.subscribe("v31/t", 1);
    let o = ConnectOpts {
        version: Version::V3_1,
        ..ConnectOpts::v311(&ids[1])
    };
    let (mut publ, _) = RawClient::connect_with(b.addr(), &o);
    publ.publish("v31/t", b"hello 3.1", 1, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!((m.topic.as_str(), m.qos), ("v31/t", 1));
    assert_eq!(m.payload, b"hello 3.1");
    // A 3.1 client talks to a 3.1.1 client.
    let mut v4 = RawClient::clean(b.addr(), &id_on("v4", 2, shards));
    v4.subscribe("v31/t", 0);
    publ.publish("v31/t", b"to both", 0, false);
    assert_eq!(sub.expect_publish(WAIT).payload, b"to both");
    assert_eq!(v4.expect_publish(WAIT).payload, b"to both");
}

fn empty_client_id_with_clean_session_is_assigned(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    // Several anonymous clients at once: each gets its own id (none takes another over).
    let mut anon: Vec<RawClient> = (0..6)
        .map(|_| RawClient::connect_v311(b.addr(), "", true, 60, None).0)
        .collect();
    for (i, c) in anon.iter_mut().enumerate() {
        c.id = format!("anon{i}");
        c.subscribe(&format!("anon/{i}"), 1);
    }
    let mut publ = RawClient::clean(b.addr(), &id_on("anonpub", 3, shards));
    for i in 0..anon.len() {
        publ.publish(&format!("anon/{i}"), format!("m{i}").as_bytes(), 1, false);
    }
    for (i, c) in anon.iter_mut().enumerate() {
        let m = c.expect_publish_acked(WAIT);
        assert_eq!(m.text(), format!("m{i}"));
        c.ping();
    }
}

fn empty_client_id_without_clean_session_refused(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let mut c = RawClient::connect(b.addr());
    c.send_connect(&ConnectOpts {
        clean: false,
        ..ConnectOpts::v311("")
    });
    assert_eq!(
        c.expect_packet(WAIT),
        Got::ConnAck {
            present: false,
            code: 2
        }
    );
    c.expect_closed(WAIT);
}

fn session_present_flag(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    for (k, id) in spread_ids("sp", shards.max(2), shards).iter().enumerate() {
        let step = |clean: bool, want: bool, what: &str| {
            let (c, present) = RawClient::connect_v311(b.addr(), id, clean, 60, None);
            assert_eq!(present, want, "[{id} #{k}] {what}");
            c.disconnect();
        };
        step(false, false, "new persistent session");
        step(false, true, "resumed persistent session");
        step(false, true, "resumed again");
        step(true, false, "clean session discards it");
        step(false, false, "after a clean session nothing is left");
        step(true, false, "clean again");
        step(true, false, "clean after clean");
    }
}

fn keepalive_above_max_keepalive_is_refused(shards: usize) {
    let b = Broker::with_shards(shards, &["--max-keepalive", "10"]);
    for id in spread_ids("mka", 4, shards) {
        // 3.x cannot be told a lower keepalive: refused, then closed.
        let mut c = RawClient::connect(b.addr());
        c.send_connect(&ConnectOpts {
            keep_alive: 60,
            ..ConnectOpts::v311(&id)
        });
        match c.expect_packet(WAIT) {
            Got::ConnAck { code, present } => {
                assert!(code != 0 && !present, "[{id}] keepalive 60 > 10 accepted")
            }
            other => panic!("[{id}] expected a refusing CONNACK, got {other:?}"),
        }
        c.expect_closed(WAIT);
        let (mut ok, _) = RawClient::connect_v311(b.addr(), &id, true, 10, None);
        ok.ping();
    }
}

fn connect_timeout_closes_silent_sockets(shards: usize) {
    let b = Broker::with_shards(shards, &["--connect-timeout", "1"]);
    let t0 = Instant::now();
    let mut silent = RawClient::connect(b.addr());
    // Half a CONNECT: the deadline applies until a whole CONNECT has arrived.
    let mut partial = RawClient::connect(b.addr());
    let bytes = connect_v311_bytes("partial");
    partial.send_bytes(&bytes[..bytes.len() / 2]);
    silent.expect_closed(Duration::from_secs(3));
    let t = t0.elapsed();
    assert!(
        t >= Duration::from_millis(800),
        "closed after {t:?}, before the 1 s deadline"
    );
    assert!(t <= Duration::from_millis(2500), "closed only after {t:?}");
    partial.expect_closed(Duration::from_secs(2));
    // A client that does connect in time stays (keepalive 0: no other timer).
    let (mut ok, _) = RawClient::connect_v311(b.addr(), "intime", true, 0, None);
    ok.expect_nothing(Duration::from_millis(400));
    ok.expect_nothing(Duration::from_millis(400));
    ok.expect_nothing(Duration::from_millis(400));
    ok.ping();
}

// ---------------------------------------------------------------------------------------
// Keepalive
// ---------------------------------------------------------------------------------------

fn keepalive_timeout_disconnects_and_publishes_will(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("ka", 2, shards);
    let mut watcher = RawClient::clean(b.addr(), &ids[0]);
    watcher.subscribe("will/ka", 1);
    let (mut c, _) = RawClient::connect_v311(
        b.addr(),
        &ids[1],
        true,
        1,
        Some(("will/ka", b"ka-gone", 1, false)),
    );
    let t0 = Instant::now();
    c.expect_closed(Duration::from_secs(4));
    let t = t0.elapsed();
    assert!(
        t >= Duration::from_millis(1400),
        "keepalive 1 s: closed after only {t:?} (must allow 1.5 × keepalive)"
    );
    assert!(t <= Duration::from_millis(3000), "closed only after {t:?}");
    let w = watcher.expect_publish_acked(WAIT);
    assert_eq!((w.topic.as_str(), w.qos), ("will/ka", 1));
    assert_eq!(w.payload, b"ka-gone");
}

fn pingreq_keeps_the_connection_alive(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let (mut c, _) = RawClient::connect_v311(b.addr(), &id_on("ping", 1, shards), true, 1, None);
    let t0 = Instant::now();
    // Ping every 500 ms for 3 s: twice the 1.5 s grace period.
    while t0.elapsed() < Duration::from_secs(3) {
        c.ping();
        c.expect_nothing(Duration::from_millis(500));
    }
    c.ping();
}

// ---------------------------------------------------------------------------------------
// PUBLISH and QoS
// ---------------------------------------------------------------------------------------

fn qos_0_1_2_both_directions(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("q", 2, shards);
    let mut a = RawClient::clean(b.addr(), &ids[0]);
    let mut z = RawClient::clean(b.addr(), &ids[1]);
    a.subscribe("q/a", 2);
    z.subscribe("q/z", 2);
    for q in 0..=2u8 {
        let payload = format!("a→z q{q}");
        a.publish("q/z", payload.as_bytes(), q, false);
        let m = z.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.qos, m.retain, m.dup),
            ("q/z", q, false, false)
        );
        assert_eq!(m.text(), payload);
        assert_eq!(m.pid.is_some(), q > 0, "packet id present iff QoS > 0");
        let payload = format!("z→a q{q}");
        z.publish("q/a", payload.as_bytes(), q, false);
        let m = a.expect_publish_acked(WAIT);
        assert_eq!((m.topic.as_str(), m.qos), ("q/a", q));
        assert_eq!(m.text(), payload);
    }
    a.expect_nothing(QUIET);
    z.expect_nothing(Duration::from_millis(50));
}

fn delivery_qos_is_min_of_publish_and_granted(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("min", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    let codes = sub.subscribe_many(&[("min/0", 0), ("min/1", 1), ("min/2", 2)]);
    assert_eq!(codes, vec![0, 1, 2]);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    for granted in 0..=2u8 {
        for sent in 0..=2u8 {
            publ.publish(&format!("min/{granted}"), &[granted, sent], sent, false);
            let m = sub.expect_publish_acked(WAIT);
            assert_eq!(m.payload, vec![granted, sent]);
            assert_eq!(
                m.qos,
                granted.min(sent),
                "granted {granted}, published {sent}"
            );
        }
    }
}

fn overlapping_subscriptions_deliver_one_copy_at_highest_qos(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("ovl", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    assert_eq!(
        sub.subscribe_many(&[("a/#", 1), ("a/b", 2), ("+/b", 0)]),
        vec![1, 2, 0]
    );
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("a/b", b"ab", 2, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!((m.topic.as_str(), m.qos), ("a/b", 2));
    publ.publish("a/c", b"ac", 2, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.qos),
        ("a/c", 1),
        "a second copy of a/b arrived, or a/c has the wrong QoS"
    );
    sub.expect_nothing(QUIET);
}

fn qos2_publisher_resend_delivers_once(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("x2", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("x2/t", 2);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.send_publish("x2/t", b"once", 2, false, false, Some(7));
    assert_eq!(publ.expect_packet(WAIT), Got::PubRec(7));
    // The PUBREC was "lost": resend with DUP before PUBREL, twice.
    for _ in 0..2 {
        publ.send_publish("x2/t", b"once", 2, false, true, Some(7));
        assert_eq!(publ.expect_packet(WAIT), Got::PubRec(7));
    }
    publ.send(&shardmq::protocol::Packet::PubRel(
        shardmq::protocol::Ack::new(std::num::NonZeroU16::new(7).unwrap()),
    ));
    assert_eq!(publ.expect_packet(WAIT), Got::PubComp(7));
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!((m.payload.as_slice(), m.qos), (&b"once"[..], 2));
    // After PUBCOMP the id is free again: the same id carries a new message.
    publ.send_publish("x2/t", b"second", 2, false, false, Some(7));
    assert_eq!(publ.expect_packet(WAIT), Got::PubRec(7));
    publ.send(&shardmq::protocol::Packet::PubRel(
        shardmq::protocol::Ack::new(std::num::NonZeroU16::new(7).unwrap()),
    ));
    assert_eq!(publ.expect_packet(WAIT), Got::PubComp(7));
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(m.payload, b"second", "one copy of `once`, then `second`");
    sub.expect_nothing(QUIET);
}

fn qos2_exactly_once_across_publisher_reconnect(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("x2r", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("x2r/t", 2);
    let (mut publ, _) = RawClient::connect_v311(b.addr(), &ids[1], false, 60, None);
    publ.send_publish("x2r/t", b"once", 2, false, false, Some(9));
    assert_eq!(publ.expect_packet(WAIT), Got::PubRec(9));
    publ.drop_tcp();
    let (mut publ, present) = RawClient::connect_v311(b.addr(), &ids[1], false, 60, None);
    assert!(present, "publisher's clean=0 session must be resumed");
    publ.send_publish("x2r/t", b"once", 2, false, true, Some(9));
    assert_eq!(publ.expect_packet(WAIT), Got::PubRec(9));
    publ.send(&shardmq::protocol::Packet::PubRel(
        shardmq::protocol::Ack::new(std::num::NonZeroU16::new(9).unwrap()),
    ));
    assert_eq!(publ.expect_packet(WAIT), Got::PubComp(9));
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(m.payload, b"once");
    sentinel(&mut publ, &mut sub, "x2r/t");
}

fn unacked_messages_resent_with_dup_on_reconnect(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("dup", 2, shards);
    let (mut sub, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    sub.subscribe("dup/t", 2);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("dup/t", b"one", 1, false);
    publ.publish("dup/t", b"two", 2, false);
    let first: Vec<Msg> = (0..2).map(|_| sub.expect_publish(WAIT)).collect();
    assert_eq!(
        first.iter().map(|m| (m.qos, m.dup)).collect::<Vec<_>>(),
        vec![(1, false), (2, false)]
    );
    // Never acked; the connection drops.
    sub.drop_tcp();
    let (mut sub, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(present);
    let again: Vec<Msg> = (0..2).map(|_| sub.expect_publish(WAIT)).collect();
    for (a, f) in again.iter().zip(&first) {
        assert!(a.dup, "resent {a:?} must carry DUP=1");
        assert_eq!(
            (&a.topic, &a.payload, a.qos, a.pid),
            (&f.topic, &f.payload, f.qos, f.pid)
        );
    }
    for m in &again {
        sub.ack(m);
    }
    sub.ping();
    sub.disconnect();
    // Acknowledged now: a further reconnect resends nothing.
    let (mut sub, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(present);
    sentinel(&mut publ, &mut sub, "dup/t");
}

fn pubrel_resent_on_reconnect(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("rel", 2, shards);
    let (mut sub, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    sub.subscribe("rel/t", 2);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("rel/t", b"q2", 2, false);
    let m = sub.expect_publish(WAIT);
    let p = m.pid.expect("QoS 2 has a packet id");
    sub.send(&shardmq::protocol::Packet::PubRec(
        shardmq::protocol::Ack::new(std::num::NonZeroU16::new(p).unwrap()),
    ));
    assert_eq!(sub.expect_packet(WAIT), Got::PubRel(p));
    // PUBCOMP never sent.
    sub.drop_tcp();
    let (mut sub, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(present);
    assert_eq!(
        sub.expect_packet(WAIT),
        Got::PubRel(p),
        "after PUBREC the broker resends PUBREL, not the PUBLISH"
    );
    sub.send(&shardmq::protocol::Packet::PubComp(
        shardmq::protocol::Ack::new(std::num::NonZeroU16::new(p).unwrap()),
    ));
    sentinel(&mut publ, &mut sub, "rel/t");
}

fn inflight_window_limits_unacked_deliveries(shards: usize) {
    let b = Broker::with_shards(shards, &["--max-inflight-messages", "2"]);
    let ids = spread_ids("win", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("win/t", 1);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    for i in 0..6u8 {
        publ.publish("win/t", &[i], 1, false);
    }
    let m0 = sub.expect_publish(WAIT);
    let m1 = sub.expect_publish(WAIT);
    assert_eq!((m0.payload[0], m1.payload[0]), (0, 1));
    sub.expect_nothing(QUIET);
    sub.ack(&m0);
    let m2 = sub.expect_publish(WAIT);
    assert_eq!(m2.payload, vec![2]);
    sub.expect_nothing(Duration::from_millis(200));
    sub.ack(&m1);
    sub.ack(&m2);
    let rest: Vec<u8> = (0..3)
        .map(|_| sub.expect_publish_acked(WAIT).payload[0])
        .collect();
    assert_eq!(rest, vec![3, 4, 5], "queued messages keep their order");
    sub.expect_nothing(QUIET);
}

fn order_preserved_for_1000_qos1_messages(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("ord", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("ord/t", 1);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    const N: u32 = 1000;
    // Pipelined: all PUBLISHes first, then the PUBACKs.
    for i in 1..=N {
        publ.send_publish("ord/t", &i.to_be_bytes(), 1, false, false, Some(i as u16));
    }
    for i in 1..=N {
        assert_eq!(publ.expect_packet(WAIT), Got::PubAck(i as u16));
    }
    for i in 1..=N {
        let m = sub.expect_publish_acked(WAIT);
        assert_eq!(m.payload, i.to_be_bytes(), "message {i} out of order");
        assert_eq!(m.qos, 1);
    }
    sub.expect_nothing(Duration::from_millis(100));
}

fn order_preserved_for_qos2_messages(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("ord2", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("ord2/t", 2);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    const N: u16 = 300;
    // Pipelined QoS 2: every PUBLISH, then the PUBREC → PUBREL exchanges, then PUBCOMPs.
    for i in 1..=N {
        publ.send_publish("ord2/t", &i.to_be_bytes(), 2, false, false, Some(i));
    }
    for i in 1..=N {
        assert_eq!(publ.expect_packet(WAIT), Got::PubRec(i));
        publ.send_bytes(&[0x62, 0x02, (i >> 8) as u8, i as u8]);
    }
    for i in 1..=N {
        assert_eq!(publ.expect_packet(WAIT), Got::PubComp(i));
    }
    for i in 1..=N {
        let m = sub.expect_publish_acked(WAIT);
        assert_eq!(
            (m.payload, m.qos),
            (i.to_be_bytes().to_vec(), 2),
            "message {i}"
        );
    }
    sub.expect_nothing(Duration::from_millis(100));
}

// ---------------------------------------------------------------------------------------
// Wildcards and filters
// ---------------------------------------------------------------------------------------

fn wildcards_match_per_spec(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("wc", 3, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    let codes = sub.subscribe_many(&[("sport/#", 1), ("a/+/c", 1), ("+/x", 1), ("end", 1)]);
    assert_eq!(codes, vec![1, 1, 1, 1]);
    let mut all = RawClient::clean(b.addr(), &ids[2]);
    assert_eq!(all.subscribe_many(&[("#", 1), ("$foo/#", 1)]), vec![1, 1]);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    let cases: &[(&str, bool)] = &[
        ("sport", true),
        ("sport/tennis/player1", true),
        ("sport/", true),
        ("sports", false),
        ("a//c", true),
        ("a/b/c", true),
        ("a/c", false),
        ("a/b/c/d", false),
        ("q/x", true),
        ("/x", true),
        ("x", false),
        ("q/x/y", false),
        ("$SYS/x", false),
        ("$foo/x", false),
    ];
    for &(topic, _) in cases {
        publ.publish(topic, topic.as_bytes(), 1, false);
    }
    publ.publish("end", b"end", 1, false);
    let mut got = Vec::new();
    loop {
        let m = sub.expect_publish_acked(WAIT);
        if m.topic == "end" {
            break;
        }
        got.push(m.topic);
    }
    let want: Vec<&str> = cases.iter().filter(|c| c.1).map(|c| c.0).collect();
    assert_eq!(got, want, "topics delivered to sport/#, a/+/c, +/x");
    // `#` sees everything except `$` topics, which `$SYS/#` sees.
    let mut seen = Vec::new();
    for _ in 0..cases.len() {
        seen.push(all.expect_publish_acked(WAIT).topic);
    }
    let mut want: Vec<&str> = cases
        .iter()
        .map(|c| c.0)
        .filter(|t| !t.starts_with("$SYS"))
        .collect();
    want.push("end");
    assert_eq!(
        seen, want,
        "`#` must skip $-topics; `$foo/#` must match $foo/x; a client's $SYS publish is dropped"
    );
    all.expect_nothing(QUIET);
}

fn invalid_filters_refused_valid_ones_granted(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("flt", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    let codes = sub.subscribe_many(&[
        ("a/#/b", 1),
        ("ok/1", 1),
        ("a+", 0),
        ("x/#", 2),
        ("#/x", 1),
        ("a/b#", 1),
        ("+", 0),
    ]);
    assert_eq!(codes, vec![0x80, 1, 0x80, 2, 0x80, 0x80, 0]);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("ok/1", b"1", 1, false);
    assert_eq!(sub.expect_publish_acked(WAIT).topic, "ok/1");
    publ.publish("x/y", b"2", 2, false);
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!((m.topic.as_str(), m.qos), ("x/y", 2));
    // `+` matches the one-level topic.
    publ.publish("solo", b"3", 0, false);
    assert_eq!(sub.expect_publish(WAIT).topic, "solo");
}

fn publish_to_wildcard_topic_closes(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    for topic in ["a/+", "a/#", "#", "+"] {
        let mut c = RawClient::clean(b.addr(), &id_on("wpub", 1, shards));
        c.send_bytes(&publish_bytes(0x30, topic.as_bytes(), None, b"x"));
        c.expect_closed(WAIT);
    }
}

fn unsubscribe_stops_delivery(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("uns", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe_many(&[("uns/a", 1), ("uns/b", 1)]);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("uns/a", b"1", 1, false);
    assert_eq!(sub.expect_publish_acked(WAIT).topic, "uns/a");
    sub.unsubscribe(&["uns/a"]);
    publ.publish("uns/a", b"2", 1, false);
    sentinel(&mut publ, &mut sub, "uns/b");
}

// ---------------------------------------------------------------------------------------
// Retained messages
// ---------------------------------------------------------------------------------------

fn retained_store_replace_clear_and_wildcards(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("ret", 3, shards);
    let mut probes = [
        probe(b.addr(), &ids[1], shards, "r/#"),
        probe(b.addr(), &ids[2], shards, "r/#"),
    ];
    let mut publ = RawClient::clean(b.addr(), &ids[0]);
    publ.publish("r/1", b"v1", 1, true);
    publ.publish("r/1", b"v2", 1, true); // replaces v1
    publ.publish("r/2", b"x", 2, true);
    publ.publish("r/2/deep", b"d", 0, true);
    publ.publish("r/3", b"gone", 1, true);
    publ.publish("r/3", b"", 1, true); // clears r/3
                                       // Wait until the subscribers' home shards have routed all six (see `probe`).
    for p in &mut probes {
        for _ in 0..6 {
            let m = p.expect_publish(WAIT);
            assert!(!m.retain, "live delivery has RETAIN=0: {m:?}");
        }
    }
    // Everything that arrives until the line goes quiet, sorted (the order of retained
    // messages of different topics is not specified).
    let retained_of = |sub: &mut RawClient, n: usize| {
        let mut v: Vec<(String, String, u8, bool)> = Vec::new();
        for _ in 0..n {
            let m = sub.expect_publish_acked(WAIT);
            v.push((m.topic.clone(), m.text(), m.qos, m.retain));
        }
        while let Ok(g) = sub.try_packet(QUIET) {
            match g {
                Got::Publish(m) => {
                    sub.ack(&m);
                    v.push((m.topic.clone(), m.text(), m.qos, m.retain));
                }
                other => panic!("[{}] unexpected {other:?}", sub.id),
            }
        }
        v.sort();
        v
    };
    let mut s1 = RawClient::clean(b.addr(), &ids[1]);
    s1.subscribe("r/+", 2);
    assert_eq!(
        retained_of(&mut s1, 2),
        vec![
            ("r/1".into(), "v2".into(), 1, true),
            ("r/2".into(), "x".into(), 2, true)
        ]
    );
    let mut s2 = RawClient::clean(b.addr(), &ids[2]);
    s2.subscribe("r/#", 1);
    assert_eq!(
        retained_of(&mut s2, 3),
        vec![
            ("r/1".into(), "v2".into(), 1, true),
            ("r/2".into(), "x".into(), 1, true),
            ("r/2/deep".into(), "d".into(), 0, true)
        ]
    );
    // Clear r/1; an exact subscription now finds nothing, r/2 is still there.
    publ.publish("r/1", b"", 1, true);
    // The live subscribers get the clearing message itself (empty, RETAIN=0). Once s1 has
    // it, s1's home shard has applied the clear to its retained replica.
    for s in [&mut s1, &mut s2] {
        let m = s.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.payload.len(), m.retain),
            ("r/1", 0, false)
        );
    }
    let mut s3 = RawClient::clean(b.addr(), &id_on("ret-late", 1, shards));
    assert_eq!(s3.subscribe_many(&[("r/1", 1), ("r/3", 1)]), vec![1, 1]);
    s3.expect_nothing(QUIET);
    s3.subscribe("r/2", 0);
    let m = s3.expect_publish(WAIT);
    assert_eq!((m.topic.as_str(), m.retain, m.qos), ("r/2", true, 0));
}

fn retained_flag_cleared_on_live_delivery(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("rl", 2, shards);
    let mut live = RawClient::clean(b.addr(), &ids[0]);
    live.subscribe("rl/t", 1);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("rl/t", b"kept", 1, true);
    let m = live.expect_publish_acked(WAIT);
    assert_eq!(m.payload, b"kept");
    assert!(
        !m.retain,
        "live delivery to an existing subscriber has RETAIN=0"
    );
    // On the live subscriber's shard, which has now routed the message.
    let shard = shardmq::broker::home_shard(&ids[0], shards);
    let mut late = RawClient::clean(b.addr(), &id_on("rl-late", shard, shards));
    late.subscribe("rl/t", 1);
    let m = late.expect_publish_acked(WAIT);
    assert!(m.retain, "delivery at subscribe time has RETAIN=1");
    assert_eq!(m.payload, b"kept");
    // Resubscribing re-sends the retained message.
    live.subscribe("rl/t", 1);
    let m = live.expect_publish_acked(WAIT);
    assert!(m.retain && m.payload == b"kept");
}

// ---------------------------------------------------------------------------------------
// Wills
// ---------------------------------------------------------------------------------------

fn will_on_socket_close(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("wsc", 2, shards);
    let mut watcher = RawClient::clean(b.addr(), &ids[0]);
    watcher.subscribe("will/#", 2);
    for q in 0..=2u8 {
        let (c, _) = RawClient::connect_v311(
            b.addr(),
            &ids[1],
            true,
            60,
            Some(("will/close", format!("bye{q}").as_bytes(), q, false)),
        );
        c.drop_tcp();
        let m = watcher.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.text(), m.qos, m.retain),
            ("will/close", format!("bye{q}"), q, false)
        );
    }
}

fn will_on_protocol_violation(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("wpv", 2, shards);
    let mut watcher = RawClient::clean(b.addr(), &ids[0]);
    watcher.subscribe("will/pv", 1);
    let garbage: &[&[u8]] = &[
        &[0x00, 0x00],            // reserved packet type
        &[0x36, 0x00],            // PUBLISH QoS 3
        &connect_v311_bytes("x"), // second CONNECT
        &[0x62, 0x00],            // PUBREL without a packet id
    ];
    for g in garbage {
        let (mut c, _) = RawClient::connect_v311(
            b.addr(),
            &ids[1],
            true,
            60,
            Some(("will/pv", b"violated", 1, false)),
        );
        c.send_bytes(g);
        c.wait_closed(WAIT);
        let m = watcher.expect_publish_acked(WAIT);
        assert_eq!(m.payload, b"violated", "after {g:02x?}");
    }
}

/// CONNECT (with a will) immediately followed by DISCONNECT or by EOF, in one write: with
/// 4 shards these connections are handed over together with what followed CONNECT.
fn connect_then_immediate_disconnect_or_eof(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let mut watcher = RawClient::clean(b.addr(), &id_on("imm-watch", 0, shards));
    watcher.subscribe("imm/#", 1);
    let mut publ = RawClient::clean(b.addr(), &id_on("imm-pub", 0, shards));
    for id in spread_ids("imm", 4, shards) {
        let connect = |flags_will: bool| {
            let mut body = Vec::new();
            mqtt_str(b"MQTT", &mut body);
            body.push(4);
            body.push(if flags_will { 0x02 | 0x04 | 0x08 } else { 0x02 });
            body.extend_from_slice(&60u16.to_be_bytes());
            mqtt_str(id.as_bytes(), &mut body);
            mqtt_str(format!("imm/{id}").as_bytes(), &mut body);
            mqtt_str(b"will", &mut body);
            frame(0x10, &body)
        };
        // CONNECT + DISCONNECT: CONNACK, close, no will.
        let mut c = RawClient::connect(b.addr());
        c.id = id.clone();
        let mut bytes = connect(true);
        bytes.extend([0xE0, 0x00]);
        c.send_bytes(&bytes);
        let got = c.wait_closed(WAIT);
        assert_eq!(
            got,
            vec![Got::ConnAck {
                present: false,
                code: 0
            }],
            "[{id}]"
        );
        sentinel(&mut publ, &mut watcher, &format!("imm/{id}/sentinel"));
        // CONNECT + EOF: the will is published.
        let mut c = RawClient::connect(b.addr());
        c.id = id.clone();
        c.send_bytes(&connect(true));
        let _ = c.stream().shutdown(std::net::Shutdown::Write);
        let m = watcher.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic, m.payload),
            (format!("imm/{id}"), b"will".to_vec()),
            "[{id}]"
        );
        c.wait_closed(WAIT);
    }
}

fn no_will_when_connect_is_refused(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let mut watcher = RawClient::clean(b.addr(), &id_on("ref-watch", 1, shards));
    watcher.subscribe("ref/will", 1);
    let mut c = RawClient::connect(b.addr());
    c.send_connect(&ConnectOpts {
        clean: false,
        will: Some(("ref/will", b"refused", 1, false)),
        ..ConnectOpts::v311("")
    });
    assert_eq!(
        c.expect_packet(WAIT),
        Got::ConnAck {
            present: false,
            code: 2
        }
    );
    c.expect_closed(WAIT);
    let mut publ = RawClient::clean(b.addr(), &id_on("ref-pub", 2, shards));
    sentinel(&mut publ, &mut watcher, "ref/will");
}

fn no_will_after_disconnect(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("wnd", 3, shards);
    let mut watcher = RawClient::clean(b.addr(), &ids[0]);
    watcher.subscribe("will/nd", 1);
    let (c, _) = RawClient::connect_v311(
        b.addr(),
        &ids[1],
        true,
        60,
        Some(("will/nd", b"WILL", 1, false)),
    );
    c.disconnect();
    let mut publ = RawClient::clean(b.addr(), &ids[2]);
    sentinel(&mut publ, &mut watcher, "will/nd");
}

fn retained_will_reaches_later_subscriber(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("wr", 2, shards);
    let mut watcher = RawClient::clean(b.addr(), &ids[0]);
    watcher.subscribe("will/ret", 2);
    let (c, _) = RawClient::connect_v311(
        b.addr(),
        &ids[1],
        true,
        60,
        Some(("will/ret", b"last words", 2, true)),
    );
    c.drop_tcp();
    let m = watcher.expect_publish_acked(WAIT);
    assert_eq!((m.payload.as_slice(), m.qos), (&b"last words"[..], 2));
    // On the watcher's shard, which has now routed the will.
    let shard = shardmq::broker::home_shard(&ids[0], shards);
    let mut late = RawClient::clean(b.addr(), &id_on("wr-late", shard, shards));
    late.subscribe("will/#", 2);
    let m = late.expect_publish_acked(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice(), m.qos, m.retain),
        ("will/ret", &b"last words"[..], 2, true)
    );
}

// ---------------------------------------------------------------------------------------
// Persistent sessions
// ---------------------------------------------------------------------------------------

fn persistent_session_keeps_subscriptions_and_queues(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("ps", 2, shards);
    let (mut sub, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert_eq!(sub.subscribe_many(&[("ps/1", 1), ("ps/2", 2)]), vec![1, 2]);
    sub.disconnect();
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    for i in 0..6u8 {
        let q = 1 + i % 2;
        publ.publish(&format!("ps/{q}"), &[i], q, false);
    }
    let (mut sub, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(present);
    for i in 0..6u8 {
        let m = sub.expect_publish_acked(WAIT);
        assert_eq!(m.payload, vec![i], "queued messages in order");
        assert_eq!(m.qos, 1 + i % 2);
        assert!(!m.dup, "never sent before: DUP=0");
    }
    // The subscriptions are still live after the resume.
    publ.publish("ps/2", b"live", 2, false);
    assert_eq!(sub.expect_publish_acked(WAIT).payload, b"live");
    sub.expect_nothing(QUIET);
}

fn offline_queue_is_bounded(shards: usize) {
    let b = Broker::with_shards(shards, &["--max-queued-messages", "5"]);
    let ids = spread_ids("qb", 2, shards);
    let (mut sub, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    sub.subscribe("qb/t", 1);
    sub.disconnect();
    let mut p = probe(b.addr(), &ids[0], shards, "qb/t");
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    for i in 0..10u8 {
        publ.publish("qb/t", &[i], 1, false);
    }
    // The subscriber's home shard has routed all ten while it was offline.
    for i in 0..10u8 {
        assert_eq!(p.expect_publish(WAIT).payload, vec![i]);
    }
    let (mut sub, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(present);
    let got: Vec<u8> = (0..5)
        .map(|_| sub.expect_publish_acked(WAIT).payload[0])
        .collect();
    assert_eq!(
        got,
        vec![0, 1, 2, 3, 4],
        "a full queue drops the newest messages"
    );
    sentinel(&mut publ, &mut sub, "qb/t");
}

fn offline_queue_is_bounded_in_bytes(shards: usize) {
    let b = Broker::with_shards(shards, &["--max-queued-bytes", "4000"]);
    let ids = spread_ids("qbb", 2, shards);
    let (mut sub, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    sub.subscribe("qbb/t", 1);
    sub.disconnect();
    let mut p = probe(b.addr(), &ids[0], shards, "qbb/t");
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    for i in 0..20u8 {
        publ.publish("qbb/t", &[i; 1000], 1, false);
    }
    for _ in 0..20 {
        p.expect_publish(WAIT);
    }
    let (mut sub, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(present);
    // 20 kB were published into a 4 kB queue: a prefix of at most 4 messages survives.
    let mut got = Vec::new();
    while let Ok(g) = sub.try_packet(QUIET) {
        match g {
            Got::Publish(m) => {
                sub.ack(&m);
                got.push(m.payload[0]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        !got.is_empty() && got.len() <= 4,
        "queued {got:?} under a 4000-byte bound"
    );
    assert_eq!(
        got,
        (0..got.len() as u8).collect::<Vec<_>>(),
        "the oldest are kept, in order"
    );
}

fn clean_session_discards_everything(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("cs", 2, shards);
    let (mut sub, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    sub.subscribe("cs/t", 1);
    sub.disconnect();
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("cs/t", b"queued", 1, false);
    let (mut sub, present) = RawClient::connect_v311(b.addr(), &ids[0], true, 60, None);
    assert!(!present, "clean session: session present 0");
    sub.subscribe("cs/sentinel", 1);
    // Neither the queued message nor the old subscription survives.
    publ.publish("cs/t", b"after", 1, false);
    sentinel(&mut publ, &mut sub, "cs/sentinel");
    // And a clean session leaves nothing behind when it ends.
    sub.disconnect();
    let (sub, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(!present);
    drop(sub);
}

// ---------------------------------------------------------------------------------------
// rumqttc interop
// ---------------------------------------------------------------------------------------

fn rumqttc_qos_roundtrip(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("rq", 3, shards);
    let (sc, mut sconn, _) = rumq_connect(rumq_options(b.addr(), &ids[0], true));
    sc.subscribe("rq/#", rumqttc::QoS::ExactlyOnce).unwrap();
    assert_eq!(
        rumq_suback(&mut sconn),
        vec![rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::ExactlyOnce
        )]
    );
    let (pc, mut pconn, _) = rumq_connect(rumq_options(b.addr(), &ids[1], true));
    for q in 0..=2u8 {
        pc.publish(format!("rq/{q}"), rumq_qos(q), false, vec![q; 3])
            .unwrap();
        rumq_publish_done(&mut pconn, q);
        let m = rumq_publish(&mut sconn, WAIT);
        assert_eq!(m.topic, format!("rq/{q}"));
        assert_eq!(m.qos, rumq_qos(q));
        assert_eq!(&m.payload[..], &[q; 3]);
        assert!(!m.retain);
    }
    // rumqttc → raw client and raw client → rumqttc.
    let mut raw = RawClient::clean(b.addr(), &ids[2]);
    raw.subscribe("rq/raw", 2);
    pc.publish(
        "rq/raw",
        rumqttc::QoS::ExactlyOnce,
        false,
        b"to raw".to_vec(),
    )
    .unwrap();
    rumq_publish_done(&mut pconn, 2);
    let m = raw.expect_publish_acked(WAIT);
    assert_eq!((m.payload.as_slice(), m.qos), (&b"to raw"[..], 2));
    let m = rumq_publish(&mut sconn, WAIT);
    assert_eq!(m.topic, "rq/raw");
    raw.publish("rq/back", b"from raw", 2, false);
    let m = rumq_publish(&mut sconn, WAIT);
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("rq/back", &b"from raw"[..])
    );
}

fn rumqttc_retained_and_will(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("rr", 3, shards);
    // Publisher and subscriber of the retained message share a home shard, so the PUBACK
    // means the message is stored where the subscriber will look (wills cross shards).
    let shard = shardmq::broker::home_shard(&ids[1], shards);
    let retainer = id_on("rr-pub", shard, shards);
    let (pc, mut pconn, _) = rumq_connect(rumq_options(b.addr(), &retainer, true));
    pc.publish(
        "rr/status",
        rumqttc::QoS::AtLeastOnce,
        true,
        b"online".to_vec(),
    )
    .unwrap();
    rumq_publish_done(&mut pconn, 1);
    let (sc, mut sconn, _) = rumq_connect(rumq_options(b.addr(), &ids[1], true));
    sc.subscribe("rr/#", rumqttc::QoS::AtLeastOnce).unwrap();
    let m = rumq_publish(&mut sconn, WAIT);
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("rr/status", &b"online"[..])
    );
    assert!(m.retain, "retained delivery at subscribe has RETAIN=1");
    // A rumqttc client with a will that vanishes without DISCONNECT.
    let mut o = rumq_options(b.addr(), &ids[2], true);
    o.set_last_will(rumqttc::LastWill::new(
        "rr/will",
        b"rumqttc died".to_vec(),
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let (wc, wconn, _) = rumq_connect(o);
    drop(wc);
    drop(wconn); // the runtime and its socket go away: no DISCONNECT
    let m = rumq_publish(&mut sconn, WAIT);
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("rr/will", &b"rumqttc died"[..])
    );
    assert!(!m.retain);
}

// ---------------------------------------------------------------------------------------
// Framing: coalesced, fragmented and large packets
// ---------------------------------------------------------------------------------------

fn connect_subscribe_publish_in_one_write(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    // Several ids so that with 4 shards some connections are handed over with the bytes
    // that followed CONNECT in the same segment.
    for (i, id) in spread_ids("burst", 4, shards).iter().enumerate() {
        let mut bytes = connect_v311_bytes(id);
        let topic = format!("burst/{i}");
        let mut sub = vec![0x00, 0x05];
        mqtt_str(topic.as_bytes(), &mut sub);
        sub.push(1);
        bytes.extend(frame(0x82, &sub));
        bytes.extend(publish_bytes(0x32, topic.as_bytes(), Some(6), b"to myself"));
        bytes.extend([0xC0, 0x00]); // PINGREQ
        let mut c = RawClient::connect(b.addr());
        c.id = id.clone();
        c.send_bytes(&bytes);
        assert_eq!(
            c.expect_packet(WAIT),
            Got::ConnAck {
                present: false,
                code: 0
            }
        );
        // SUBACK, PUBACK, PINGRESP and the delivery of its own message, in any order: a
        // server may deliver before the SUBACK [MQTT 3.1.1 §3.8.4].
        let mut got: Vec<Got> = (0..4).map(|_| c.expect_packet(WAIT)).collect();
        let publish = got
            .iter()
            .position(|g| matches!(g, Got::Publish(_)))
            .map(|i| got.remove(i));
        for want in [
            Got::SubAck {
                pid: 5,
                codes: vec![1],
            },
            Got::PubAck(6),
            Got::PingResp,
        ] {
            assert!(got.contains(&want), "[{id}] missing {want:?} in {got:?}");
        }
        match publish {
            Some(Got::Publish(m)) => {
                assert_eq!(
                    (m.topic.as_str(), m.payload.as_slice()),
                    (topic.as_str(), &b"to myself"[..])
                );
                c.ack(&m);
            }
            other => panic!("[{id}] no delivery of its own publish: {other:?}"),
        }
    }
}

fn fragmented_and_large_packets(shards: usize) {
    // A 4-byte remaining length needs a packet over 2 MiB, the default maximum.
    let b = Broker::with_shards(shards, &["--max-packet-size", "4194304"]);
    let ids = spread_ids("frag", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("frag/#", 1);
    // The publisher sends everything one byte per write, CONNECT included.
    let mut publ = RawClient::connect(b.addr());
    publ.id = ids[1].clone();
    let dribble = |c: &mut RawClient, bytes: &[u8]| {
        for byte in bytes {
            c.send_bytes(std::slice::from_ref(byte));
        }
    };
    dribble(&mut publ, &connect_v311_bytes(&ids[1]));
    assert_eq!(
        publ.expect_packet(WAIT),
        Got::ConnAck {
            present: false,
            code: 0
        }
    );
    // Dribbled CONNECT + SUBSCRIBE for clients of every shard (handover of partial input).
    for id in spread_ids("dribble", 4, shards) {
        let mut c = RawClient::connect(b.addr());
        c.id = id.clone();
        let mut bytes = connect_v311_bytes(&id);
        let mut body = vec![0x00, 0x02];
        mqtt_str(b"frag/none", &mut body);
        body.push(2);
        bytes.extend(frame(0x82, &body));
        dribble(&mut c, &bytes);
        assert_eq!(
            c.expect_packet(WAIT),
            Got::ConnAck {
                present: false,
                code: 0
            }
        );
        assert_eq!(
            c.expect_packet(WAIT),
            Got::SubAck {
                pid: 2,
                codes: vec![2]
            }
        );
    }
    dribble(
        &mut publ,
        &publish_bytes(0x32, b"frag/small", Some(1), b"dribbled"),
    );
    assert_eq!(publ.expect_packet(WAIT), Got::PubAck(1));
    let m = sub.expect_publish_acked(WAIT);
    assert_eq!(m.payload, b"dribbled");
    // Large payloads (crossing the 64 KiB read buffer and 2-, 3- and 4-byte lengths),
    // pipelined in one write, each with a recognisable pattern.
    let mut rng = Rng::new(42);
    let sizes = [
        0usize, 1, 127, 128, 16_383, 16_384, 65_535, 65_536, 200_000, 2_100_000, 3,
    ];
    let mut all = Vec::new();
    let mut payloads = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let payload = rng.bytes(n);
        all.extend(publish_bytes(
            0x32,
            format!("frag/{i}").as_bytes(),
            Some(10 + i as u16),
            &payload,
        ));
        payloads.push(payload);
    }
    publ.send_bytes(&all);
    for i in 0..sizes.len() {
        assert_eq!(publ.expect_packet(WAIT), Got::PubAck(10 + i as u16));
    }
    for (i, payload) in payloads.iter().enumerate() {
        let m = sub.expect_publish_acked(WAIT);
        assert_eq!(m.topic, format!("frag/{i}"));
        assert!(
            m.payload == *payload,
            "payload {i} ({} bytes) corrupted",
            payload.len()
        );
    }
}

fn packets_over_max_packet_size_close_the_connection(shards: usize) {
    let b = Broker::with_shards(shards, &["--max-packet-size", "1024"]);
    let ids = spread_ids("mps", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("mps/t", 0);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("mps/t", &[7; 900], 0, false);
    assert_eq!(sub.expect_publish(WAIT).payload.len(), 900);
    // Only the header is needed to refuse it: the body is never sent.
    publ.send_bytes(&[0x30, 0x80, 0x80, 0x04]);
    publ.expect_closed(WAIT);
    sub.ping();
}

fn pubrel_for_unknown_id_gets_pubcomp(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let mut c = RawClient::clean(b.addr(), &id_on("relu", 1, shards));
    c.send_bytes(&[0x62, 0x02, 0x00, 0x63]);
    assert_eq!(c.expect_packet(WAIT), Got::PubComp(0x63));
    // A PUBACK / PUBREC / PUBCOMP for nothing is tolerated.
    c.send_bytes(&[0x40, 0x02, 0x00, 0x01, 0x70, 0x02, 0x00, 0x02]);
    c.ping();
}

fn resubscribe_replaces_the_subscription(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("rsb", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("rsb/t", 2);
    sub.subscribe("rsb/t", 0);
    // The same filter twice in one SUBSCRIBE: still one subscription.
    assert_eq!(
        sub.subscribe_many(&[("rsb/u", 1), ("rsb/u", 1)]),
        vec![1, 1]
    );
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("rsb/t", b"t", 2, false);
    let m = sub.expect_publish(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.qos),
        ("rsb/t", 0),
        "QoS of the newer subscription"
    );
    publ.publish("rsb/u", b"u", 1, false);
    assert_eq!(sub.expect_publish_acked(WAIT).topic, "rsb/u");
    sub.expect_nothing(QUIET);
}

fn rumqttc_persistent_session(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("rp", 2, shards);
    let (c, mut conn, present) = rumq_connect(rumq_options(b.addr(), &ids[0], false));
    assert!(!present);
    c.subscribe("rp/t", rumqttc::QoS::AtLeastOnce).unwrap();
    rumq_suback(&mut conn);
    c.disconnect().unwrap();
    rumq_event_until(&mut conn, WAIT, "outgoing DISCONNECT", |ev| {
        matches!(ev, rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)).then_some(())
    });
    drop(c);
    drop(conn);
    let mut p = probe(b.addr(), &ids[0], shards, "rp/t");
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("rp/t", b"while away", 1, false);
    p.expect_publish(WAIT);
    let (_c, mut conn, present) = rumq_connect(rumq_options(b.addr(), &ids[0], false));
    assert!(present, "rumqttc: persistent session must be present");
    let m = rumq_publish(&mut conn, WAIT);
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("rp/t", &b"while away"[..])
    );
    assert_eq!(m.qos, rumqttc::QoS::AtLeastOnce);
}

shard_tests!(
    rumqttc_persistent_session,
    connect_subscribe_publish_in_one_write,
    fragmented_and_large_packets,
    packets_over_max_packet_size_close_the_connection,
    pubrel_for_unknown_id_gets_pubcomp,
    resubscribe_replaces_the_subscription,
    first_packet_must_be_connect,
    second_connect_is_a_violation,
    bad_protocol_level_gets_return_code_1,
    bad_protocol_name_is_refused,
    mqtt31_mqisdp_level3_accepted,
    empty_client_id_with_clean_session_is_assigned,
    empty_client_id_without_clean_session_refused,
    session_present_flag,
    connect_timeout_closes_silent_sockets,
    keepalive_timeout_disconnects_and_publishes_will,
    pingreq_keeps_the_connection_alive,
    qos_0_1_2_both_directions,
    delivery_qos_is_min_of_publish_and_granted,
    overlapping_subscriptions_deliver_one_copy_at_highest_qos,
    qos2_publisher_resend_delivers_once,
    qos2_exactly_once_across_publisher_reconnect,
    unacked_messages_resent_with_dup_on_reconnect,
    pubrel_resent_on_reconnect,
    inflight_window_limits_unacked_deliveries,
    order_preserved_for_1000_qos1_messages,
    order_preserved_for_qos2_messages,
    keepalive_above_max_keepalive_is_refused,
    wildcards_match_per_spec,
    invalid_filters_refused_valid_ones_granted,
    publish_to_wildcard_topic_closes,
    unsubscribe_stops_delivery,
    retained_store_replace_clear_and_wildcards,
    retained_flag_cleared_on_live_delivery,
    will_on_socket_close,
    will_on_protocol_violation,
    no_will_after_disconnect,
    connect_then_immediate_disconnect_or_eof,
    no_will_when_connect_is_refused,
    retained_will_reaches_later_subscriber,
    persistent_session_keeps_subscriptions_and_queues,
    offline_queue_is_bounded,
    offline_queue_is_bounded_in_bytes,
    clean_session_discards_everything,
    rumqttc_qos_roundtrip,
    rumqttc_retained_and_will,
);
