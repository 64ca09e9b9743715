//! The bridge client against a scripted remote: literal packets in, literal packets out.

use std::sync::Arc;

use super::*;
use crate::config::bridge::{Address, BridgeConfig, BridgeParser};
use crate::protocol::{decode, Decoded, Packet, PacketId, QoS, Version};

mod reload;

fn config(text: &str) -> BridgeConfig {
    let mut p = BridgeParser::default();
    for (i, line) in text.lines().enumerate() {
        let (k, v) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        p.line(k, v.trim(), i + 1)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    p.finish().unwrap_or_else(|e| panic!("{e:?}")).remove(0)
}

const BASIC: &str = "connection c\naddress 127.0.0.1:1883\ntopic a/# both 1\nremote_clientid br\nnotifications false\nrestart_timeout 2";

fn bridge(text: &str) -> Bridge {
    Bridge::new(&config(text), "host", Limits::default(), 1, 0)
}

fn actions(b: &mut Bridge) -> Vec<Action> {
    std::iter::from_fn(|| b.poll_action()).collect()
}

/// Everything written so far, as the socket would take it.
fn written(b: &mut Bridge, now: u64) -> Vec<u8> {
    let out = b.output().to_vec();
    b.consume(out.len(), now);
    out
}

fn addr(host: &str, port: u16) -> Address {
    Address {
        host: host.into(),
        port,
    }
}

fn payload(p: &[u8]) -> Arc<[u8]> {
    Arc::from(p)
}

/// Tick, take the connect action, connect the socket, and check the CONNECT went out.
fn open(b: &mut Bridge, now: u64, to: &Address) -> Vec<u8> {
    b.tick(now);
    assert_eq!(actions(b), vec![Action::Connect(to.clone())]);
    b.socket_connected(now);
    written(b, now)
}

const CONNECT_311_PRIVATE: [u8; 16] = [
    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 0x84, 0x00, 0, 60, 0, 2, b'b', b'r',
];
const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];
const CONNACK_SESSION: [u8; 4] = [0x20, 2, 1, 0];
const SUBSCRIBE_A: [u8; 10] = [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1];

fn up(b: &mut Bridge, now: u64) {
    b.tick(now);
    assert!(matches!(actions(b).as_slice(), [Action::Connect(_)]));
    b.socket_connected(now);
    assert_eq!(written(b, now)[0], 0x10);
    b.receive(now, &CONNACK_OK);
    let _ = written(b, now);
    let _ = actions(b);
    assert!(b.is_up());
}

#[test]
fn connects_subscribes_and_forwards_with_literal_packets() {
    let mut b = bridge(&format!("{BASIC}\nkeepalive_interval 5"));
    // keepalive 5 → 0x00 0x05 in CONNECT.
    let mut connect = CONNECT_311_PRIVATE;
    connect[11] = 5;
    assert_eq!(open(&mut b, 0, &addr("127.0.0.1", 1883)), connect);
    b.receive(1, &CONNACK_OK);
    assert_eq!(written(&mut b, 1), SUBSCRIBE_A);
    assert!(matches!(
        actions(&mut b).as_slice(),
        [Action::State { up: true, .. }]
    ));
    b.receive(1, &[0x90, 3, 0, 1, 1]);
    let offer = b.offer(2, "a/x", &payload(b"hi"), QoS::ExactlyOnce, false, false);
    assert_eq!(offer, Offer::Accepted(Some(1)));
    // The rule's QoS 1 is the lower one; packet id 2 (ids go round, 1 went to SUBSCRIBE).
    let publish = [0x32, 9, 0, 3, b'a', b'/', b'x', 0, 2, b'h', b'i'];
    assert_eq!(written(&mut b, 2), publish);
    assert_eq!(
        b.offer(2, "b/x", &payload(b"no"), QoS::AtLeastOnce, false, false),
        Offer::NotMatched
    );
    b.receive(3, &[0x40, 2, 0, 2]);
    assert_eq!(b.depth(), (0, 0));
    assert_eq!(b.stats().forwarded, 1);
    let records = b.take_records();
    assert!(
        matches!(
            records.as_slice(),
            [
                Record::Enqueued { seq: 1, .. },
                Record::Sent { seq: 1, .. },
                Record::Done { seq: 1 }
            ]
        ),
        "{records:?}"
    );
}

#[test]
fn v5_connect_and_subscribe_carry_no_local() {
    let mut b = bridge(&format!("{BASIC}\nbridge_protocol_version mqttv50"));
    let connect = open(&mut b, 0, &addr("127.0.0.1", 1883));
    let Ok(Decoded::Packet {
        packet: Packet::Connect(c),
        ..
    }) = decode(&connect, Version::V5, usize::MAX)
    else {
        panic!("not a CONNECT: {connect:02x?}");
    };
    assert_eq!(
        (c.version, c.clean_start, c.client_id),
        (Version::V5, false, "br")
    );
    assert_eq!(c.properties.session_expiry_interval, Some(u32::MAX));
    assert_eq!(c.properties.receive_maximum, Some(1024));
    b.receive(0, &[0x20, 3, 0, 0, 0]);
    // Options 0x0d: QoS 1 | No Local | Retain As Published.
    assert_eq!(
        written(&mut b, 0),
        [0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'#', 0x0d]
    );
}

#[test]
fn reconnect_resends_in_flight_with_dup_after_the_back_off() {
    let mut b = bridge(BASIC);
    up(&mut b, 0);
    for (i, p) in [b"m1", b"m2"].iter().enumerate() {
        let got = b.offer(10, "a/x", &payload(*p), QoS::AtLeastOnce, false, false);
        assert_eq!(got, Offer::Accepted(Some(i as u64 + 1)));
    }
    let first = written(&mut b, 10);
    assert_eq!(&first[..2], [0x32, 9]);
    b.socket_closed(100, "reset by peer");
    let acts = actions(&mut b);
    assert_eq!(acts[0], Action::Close);
    assert!(
        matches!(acts[1], Action::State { up: false, .. }),
        "{acts:?}"
    );
    // Offered while down: queued behind the two in flight.
    b.offer(150, "a/y", &payload(b"m3"), QoS::AtLeastOnce, false, false);
    assert!(b.output().is_empty());
    // restart_timeout 2: nothing before 2 s after the failure.
    assert_eq!(b.next_deadline_ms(), 2100);
    b.tick(2099);
    assert!(actions(&mut b).is_empty());
    assert_eq!(
        open(&mut b, 2100, &addr("127.0.0.1", 1883)),
        CONNECT_311_PRIVATE
    );
    b.receive(2100, &CONNACK_SESSION);
    let resent = written(&mut b, 2100);
    // Same packet ids (2, 3; 1 was the SUBSCRIBE), DUP set (0x3a), in order, then
    // SUBSCRIBE again, then the message queued while down.
    let mut expect = vec![0x3a, 9, 0, 3, b'a', b'/', b'x', 0, 2, b'm', b'1'];
    expect.extend([0x3a, 9, 0, 3, b'a', b'/', b'x', 0, 3, b'm', b'2']);
    expect.extend([0x82, 8, 0, 4, 0, 3, b'a', b'/', b'#', 1]);
    expect.extend([0x32, 9, 0, 3, b'a', b'/', b'y', 0, 5, b'm', b'3']);
    assert_eq!(resent, expect);
}

#[test]
fn qos2_out_resends_pubrel_not_publish_after_pubrec() {
    let mut b =
        bridge("connection c\naddress h\ntopic # out 2\nremote_clientid br\nnotifications false");
    up(&mut b, 0);
    b.offer(1, "t", &payload(b"x"), QoS::ExactlyOnce, true, false);
    assert_eq!(written(&mut b, 1), [0x35, 6, 0, 1, b't', 0, 1, b'x']);
    b.receive(2, &[0x50, 2, 0, 1]);
    assert_eq!(written(&mut b, 2), [0x62, 2, 0, 1]);
    b.socket_closed(3, "gone");
    b.tick(3);
    b.tick(60_000);
    let _ = actions(&mut b);
    b.socket_connected(60_000);
    let _ = written(&mut b, 60_000);
    b.receive(60_000, &CONNACK_SESSION);
    assert_eq!(written(&mut b, 60_000), [0x62, 2, 0, 1]);
    b.receive(60_001, &[0x70, 2, 0, 1]);
    assert_eq!(b.depth(), (0, 0));
    let records = b.take_records();
    assert!(
        matches!(records.last(), Some(Record::Done { seq: 1 })),
        "{records:?}"
    );
    assert!(records.contains(&Record::Received { seq: 1 }));
}

#[test]
fn inbound_messages_are_renamed_and_acknowledged_once_accepted_locally() {
    let mut b = bridge("connection c\naddress h\ntopic # in 2 local/ remote/\nremote_clientid br\nnotifications false");
    up(&mut b, 0);
    // QoS 1 on remote/t, packet id 7.
    b.receive(
        1,
        &[
            0x32, 13, 0, 8, b'r', b'e', b'm', b'o', b't', b'e', b'/', b't', 0, 7, b'v',
        ],
    );
    let acts = actions(&mut b);
    let [Action::Local(p)] = acts.as_slice() else {
        panic!("{acts:?}")
    };
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice(), p.qos),
        ("local/t", &b"v"[..], QoS::AtLeastOnce)
    );
    assert!(b.output().is_empty(), "no PUBACK before the broker has it");
    b.local_accepted(2, p.ack.expect("QoS 1 has a token"));
    assert_eq!(written(&mut b, 2), [0x40, 2, 0, 7]);
    // QoS 2, then its resend (DUP) before PUBREL: brought in once.
    let q2 = [
        0x34, 13, 0, 8, b'r', b'e', b'm', b'o', b't', b'e', b'/', b'u', 0, 9, b'w',
    ];
    b.receive(3, &q2);
    let acts = actions(&mut b);
    let [Action::Local(p)] = acts.as_slice() else {
        panic!("{acts:?}")
    };
    b.local_accepted(3, p.ack.expect("token"));
    assert_eq!(written(&mut b, 3), [0x50, 2, 0, 9]);
    let mut dup = q2;
    dup[0] = 0x3c;
    b.receive(4, &dup);
    assert!(actions(&mut b).is_empty());
    assert_eq!(written(&mut b, 4), [0x50, 2, 0, 9]);
    b.receive(5, &[0x62, 2, 0, 9]);
    assert_eq!(written(&mut b, 5), [0x70, 2, 0, 9]);
    assert_eq!(b.stats().received, 3);
    let id9 = PacketId::new(9).expect("9");
    assert_eq!(
        b.take_records(),
        vec![
            Record::InboundHeld { packet_id: id9 },
            Record::InboundReleased { packet_id: id9 }
        ]
    );
}

#[test]
fn a_restored_inbound_qos2_id_is_not_brought_in_again() {
    let id9 = PacketId::new(9).expect("9");
    let mut b =
        bridge("connection c\naddress h\ntopic # in 2\nremote_clientid br\nnotifications false");
    b.restore(Restored::replay([Record::InboundHeld { packet_id: id9 }]));
    b.tick(0);
    let _ = actions(&mut b);
    b.socket_connected(0);
    let _ = written(&mut b, 0);
    b.receive(0, &CONNACK_SESSION);
    let _ = actions(&mut b);
    let _ = written(&mut b, 0);
    // The remote resends the QoS 2 message it has not seen PUBREC for: answered, not injected.
    b.receive(1, &[0x3c, 6, 0, 1, b't', 0, 9, b'w']);
    assert!(actions(&mut b).is_empty());
    assert_eq!(written(&mut b, 1), [0x50, 2, 0, 9]);
}

#[test]
fn keepalive_pings_and_detects_a_dead_peer() {
    let mut b = bridge(&format!("{BASIC}\nkeepalive_interval 5"));
    up(&mut b, 0);
    assert_eq!(b.next_deadline_ms(), 5000);
    b.tick(4999);
    assert!(b.output().is_empty());
    b.tick(5000);
    assert_eq!(written(&mut b, 5000), [0xc0, 0]);
    b.receive(5100, &[0xd0, 0]);
    b.tick(10_000);
    assert_eq!(written(&mut b, 10_000), [0xc0, 0]);
    b.tick(14_999);
    assert!(b.is_up());
    b.tick(15_000);
    assert!(!b.is_up());
    let acts = actions(&mut b);
    assert_eq!(acts[0], Action::Close);
    assert!(
        matches!(&acts[1], Action::State { up: false, detail } if detail.contains("PINGREQ")),
        "{acts:?}"
    );
}

#[test]
fn fails_over_in_order_then_backs_off_and_returns_to_the_primary() {
    let mut b = bridge("connection c\naddress p:1 s1:2 s2:3\ntopic # out\nremote_clientid br\nnotifications false\nrestart_timeout 7");
    b.tick(0);
    assert_eq!(actions(&mut b), vec![Action::Connect(addr("p", 1))]);
    b.socket_closed(10, "refused");
    // The next address at once, not after the back-off.
    b.tick(10);
    assert_eq!(actions(&mut b)[2..], [Action::Connect(addr("s1", 2))]);
    b.socket_closed(20, "refused");
    b.tick(20);
    assert_eq!(actions(&mut b)[1..], [Action::Connect(addr("s2", 3))]);
    b.socket_closed(30, "refused");
    // Every address failed: wait restart_timeout, then start again from the primary.
    b.tick(30);
    assert_eq!(actions(&mut b), vec![Action::Close]);
    assert_eq!(b.next_deadline_ms(), 7030);
    b.tick(7030);
    assert_eq!(actions(&mut b), vec![Action::Connect(addr("p", 1))]);
    b.socket_closed(7040, "refused");
    b.tick(7040);
    let _ = actions(&mut b);
    b.socket_connected(7040);
    b.receive(7040, &CONNACK_OK);
    let _ = actions(&mut b);
    // On a secondary: the primary is probed, and when it answers the bridge moves back.
    b.tick(7040 + 20_000);
    assert!(actions(&mut b).contains(&Action::Probe(addr("p", 1))));
    b.probe_result(27_041, true);
    b.tick(27_041);
    let acts = actions(&mut b);
    assert!(
        matches!(&acts[0], Action::Log(l) if l.contains("primary")),
        "{acts:?}"
    );
    assert_eq!(acts[1], Action::Close);
    assert_eq!(acts.last(), Some(&Action::Connect(addr("p", 1))));
}

#[test]
fn round_robin_stays_where_it_connected() {
    let mut b = bridge("connection c\naddress p:1 s:2\nround_robin true\ntopic # out\nremote_clientid br\nnotifications false");
    b.tick(0);
    b.socket_closed(0, "refused");
    b.tick(0);
    assert_eq!(actions(&mut b).last(), Some(&Action::Connect(addr("s", 2))));
    b.socket_connected(0);
    b.receive(0, &CONNACK_OK);
    b.tick(100_000);
    assert!(!actions(&mut b)
        .iter()
        .any(|a| matches!(a, Action::Probe(_))));
}

#[test]
fn a_message_the_bridge_brought_in_is_never_sent_back() {
    let mut b = bridge(BASIC);
    up(&mut b, 0);
    b.receive(1, &[0x30, 6, 0, 3, b'a', b'/', b'z', b'!']);
    let acts = actions(&mut b);
    let [Action::Local(p)] = acts.as_slice() else {
        panic!("{acts:?}")
    };
    // The broker offers it back because `a/#` is also an `out` rule, tagged with its origin.
    let got = b.offer(2, &p.topic, &payload(&p.payload), p.qos, p.retain, true);
    assert_eq!(got, Offer::Loop);
    assert!(b.output().is_empty());
    assert_eq!(b.stats().loops_prevented, 1);
}

#[test]
fn a_remote_refusing_the_bridge_bit_gets_plain_connects() {
    let mut b = bridge(BASIC);
    assert_eq!(open(&mut b, 0, &addr("127.0.0.1", 1883))[8], 0x84);
    b.receive(0, &[0x20, 2, 0, 1]);
    let acts = actions(&mut b);
    assert!(acts.iter().any(|a| matches!(a, Action::State { up: false, detail } if detail.contains("UnsupportedProtocolVersion"))), "{acts:?}");
    b.tick(2000);
    let _ = actions(&mut b);
    b.socket_connected(2000);
    assert_eq!(written(&mut b, 2000)[8], 0x04);
}

#[test]
fn notifications_use_a_will_and_retained_state_messages() {
    let mut b = bridge("connection c\naddress h\ntopic # out\nremote_clientid br");
    let topic = "$SYS/broker/connection/br/state";
    let mut connect = open(&mut b, 0, &addr("h", 1883));
    // Our codec refuses the bridge bit (0x84) as a level, so read the packet without it.
    assert_eq!(connect[8], 0x84);
    connect[8] = 0x04;
    let Ok(Decoded::Packet {
        packet: Packet::Connect(c),
        ..
    }) = decode(&connect, Version::V3_1_1, usize::MAX)
    else {
        panic!("not a CONNECT: {connect:02x?}");
    };
    let will = c.will.expect("a will");
    assert_eq!(
        (will.topic, will.payload, will.qos, will.retain),
        (topic, &b"0"[..], QoS::AtLeastOnce, true)
    );
    b.receive(1, &CONNACK_OK);
    let acts = actions(&mut b);
    assert!(
        matches!(&acts[0], Action::Local(p) if p.topic == topic && p.payload == b"1" && p.retain),
        "{acts:?}"
    );
    // And "1", retained, QoS 1 to the remote.
    let out = written(&mut b, 1);
    assert_eq!(&out[..2], [0x33, 2 + topic.len() as u8 + 2 + 1]);
    assert_eq!(out.last(), Some(&b'1'));
    b.socket_closed(2, "gone");
    let acts = actions(&mut b);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Local(p) if p.topic == topic && p.payload == b"0")),
        "{acts:?}"
    );
}

#[test]
fn limits_drop_and_count() {
    let mut b = bridge("connection c\naddress h\ntopic # out 1\nremote_clientid br\nnotifications false\nbridge_max_queued_messages 2\nbridge_max_packet_size 20");
    let p = payload(b"x");
    assert_eq!(
        b.offer(0, "t", &p, QoS::AtMostOnce, false, false),
        Offer::Dropped
    );
    assert_eq!(b.stats().dropped_offline, 1);
    assert!(matches!(
        b.offer(0, "t", &p, QoS::AtLeastOnce, false, false),
        Offer::Accepted(_)
    ));
    assert!(matches!(
        b.offer(0, "t", &payload(&[0; 40]), QoS::AtLeastOnce, false, false),
        Offer::Accepted(_)
    ));
    assert_eq!(
        b.offer(0, "t", &p, QoS::AtLeastOnce, false, false),
        Offer::Dropped
    );
    assert_eq!(b.stats().dropped_full, 1);
    up(&mut b, 0);
    // The 40-byte one exceeds bridge_max_packet_size 20 and is dropped, never sent.
    assert_eq!(b.stats().dropped_too_large, 1);
    assert_eq!(b.depth(), (0, 1));
}

#[test]
fn restored_records_resend_what_was_in_flight_under_the_same_id() {
    let id = PacketId::new(41).expect("non-zero");
    let msg = |t: &str| OutMessage {
        topic: t.into(),
        payload: payload(b"p"),
        qos: QoS::AtLeastOnce,
        retain: false,
        props: None,
        expires_at_ms: None,
        txn: 0,
    };
    let records = vec![
        Record::Enqueued {
            seq: 5,
            msg: msg("x"),
        },
        Record::Enqueued {
            seq: 6,
            msg: msg("y"),
        },
        Record::Sent {
            seq: 5,
            packet_id: id,
        },
    ];
    let mut b =
        bridge("connection c\naddress h\ntopic # out 1\nremote_clientid br\nnotifications false");
    b.restore(Restored::replay(records));
    assert_eq!(b.depth(), (1, 1));
    up_raw(&mut b);
    let out = written(&mut b, 0);
    assert_eq!(
        out,
        [0x3a, 6, 0, 1, b'x', 0, 41, b'p', 0x32, 6, 0, 1, b'y', 0, 1, b'p']
    );
    b.receive(0, &[0x40, 2, 0, 41]);
    assert_eq!(
        b.take_records(),
        vec![
            Record::Sent {
                seq: 6,
                packet_id: PacketId::new(1).expect("1")
            },
            Record::Done { seq: 5 }
        ]
    );
}

fn up_raw(b: &mut Bridge) {
    b.tick(0);
    let _ = actions(b);
    b.socket_connected(0);
    let _ = written(b, 0);
    b.receive(0, &CONNACK_OK);
    let _ = actions(b);
}

#[test]
fn retire_hands_back_what_it_held_in_order_and_disconnects() {
    let out_only = "connection c\naddress 127.0.0.1:1883\ntopic a/# out 2\nremote_clientid br\nnotifications false";
    let mut b = bridge(out_only);
    up(&mut b, 0);
    // One in flight (sent, unacknowledged), then the window is shrunk by going down…
    let o = b.offer(1, "a/1", &payload(b"one"), QoS::AtLeastOnce, false, false);
    assert_eq!(o, Offer::Accepted(Some(1)));
    let sent = written(&mut b, 1);
    assert_eq!(sent[0] & 0xf0, 0x30, "the first goes out at once");
    b.socket_closed(2, "gone");
    let _ = actions(&mut b);
    // …and the next two wait in the queue, with a QoS 0 one (dropped while down).
    b.offer(3, "a/2", &payload(b"two"), QoS::AtLeastOnce, false, false);
    b.offer(3, "a/3", &payload(b"three"), QoS::ExactlyOnce, false, false);
    let held = b.retire(4);
    let got: Vec<(u64, &[u8], bool)> = held
        .messages
        .iter()
        .map(|(s, (m, id, _))| (*s, &m.payload[..], id.is_some()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, &b"one"[..], true),
            (2, b"two", false),
            (3, b"three", false)
        ]
    );
    assert!(b.retired());
    assert_eq!(b.depth(), (0, 0), "nothing is left behind");
    b.tick(u64::MAX - 1);
    assert!(
        !actions(&mut b)
            .iter()
            .any(|a| matches!(a, Action::Connect(_))),
        "a retired bridge never connects again"
    );
    // A replacement picks up exactly there: the in-flight one is resent first with DUP.
    let mut next = bridge(out_only);
    next.restore(held);
    next.tick(10);
    let _ = actions(&mut next);
    next.socket_connected(10);
    assert_eq!(written(&mut next, 10)[0], 0x10, "CONNECT");
    next.receive(10, &CONNACK_SESSION);
    let out = written(&mut next, 10);
    assert_eq!(out[0], 0x3a, "PUBLISH QoS 1 with DUP first: {out:02x?}");
}

#[test]
fn retire_while_connected_says_goodbye() {
    let mut b = bridge(BASIC);
    up(&mut b, 0);
    let _ = b.retire(1);
    let out = written(&mut b, 1);
    assert_eq!(
        out,
        [0xe0, 0x00],
        "a DISCONNECT, nothing else (no notifications)"
    );
}

/// `local_cleansession true`: nothing waits for an unreachable remote, nothing in flight
/// survives the connection, and the forwarding queue leaves no record (the inbound QoS 2
/// ids, the remote session's state, still do).
#[test]
fn a_clean_local_session_keeps_no_queue() {
    let mut b = bridge(&format!("{BASIC}\nlocal_cleansession true"));
    let p = payload(b"x");
    assert_eq!(
        b.offer(0, "a/x", &p, QoS::AtLeastOnce, false, false),
        Offer::Dropped,
        "not queued while the remote is unreachable"
    );
    assert_eq!(b.stats().dropped_offline, 1);
    up(&mut b, 0);
    assert!(matches!(
        b.offer(1, "a/x", &p, QoS::AtLeastOnce, false, false),
        Offer::Accepted(Some(_))
    ));
    assert_eq!(written(&mut b, 1)[0], 0x32, "sent while up");
    assert_eq!(b.depth(), (0, 1));
    // QoS 2 from the remote, accepted locally: its id is still recorded.
    b.receive(2, &[0x34, 8, 0, 3, b'a', b'/', b'i', 0, 9, b'v']);
    let acts = actions(&mut b);
    let Some(Action::Local(inbound)) = acts.first() else {
        panic!("{acts:?}")
    };
    b.local_accepted(2, inbound.ack.expect("QoS 2 has a token"));
    b.socket_closed(3, "gone");
    assert_eq!(
        b.depth(),
        (0, 0),
        "the in-flight message went with the connection"
    );
    assert_eq!(b.stats().dropped_offline, 2);
    let id9 = PacketId::new(9).expect("9");
    assert_eq!(
        b.take_records(),
        vec![Record::InboundHeld { packet_id: id9 }]
    );
    // The default keeps the queue (and records it), whatever `cleansession` says.
    let mut kept = bridge(&format!("{BASIC}\ncleansession true"));
    assert!(matches!(
        kept.offer(0, "a/x", &p, QoS::AtLeastOnce, false, false),
        Offer::Accepted(Some(1))
    ));
    assert!(matches!(
        kept.take_records().as_slice(),
        [Record::Enqueued { seq: 1, .. }]
    ));
}

/// A message going out at QoS 2 that belongs to a QoS 2 routing waits in the queue, and
/// the messages behind it too, until the shard learns that routing's commit; its
/// `Enqueued` record carries the routing (recovery drops it if the commit never was). A
/// QoS 1 forward of such a message does not wait.
#[test]
fn a_qos2_message_leaves_only_once_its_routing_is_committed() {
    let mut b = bridge(&BASIC.replace("both 1", "both 2"));
    up(&mut b, 0);
    b.receive(1, &[0x90, 3, 0, 1, 2]);
    let txn = 2 << 48 | 7;
    let p = payload(b"m");
    let offered = |topic: &'static str, qos: QoS, txn: u64| Offered {
        topic,
        payload: &p,
        qos,
        retain: false,
        props: None,
        expires_at_ms: None,
        txn,
    };
    b.learn_commits(1, &[0, txn - 1]);
    let first = b.offer_message(2, &offered("a/1", QoS::ExactlyOnce, txn), false);
    assert_eq!(first, Offer::Accepted(Some(1)));
    let second = b.offer_message(2, &offered("a/2", QoS::AtLeastOnce, 0), false);
    assert_eq!(second, Offer::Accepted(Some(2)));
    assert_eq!(
        written(&mut b, 2),
        Vec::<u8>::new(),
        "nothing before the commit"
    );
    assert_eq!(b.depth(), (2, 0));
    let records = b.take_records();
    assert!(
        matches!(
            records.as_slice(),
            [
                Record::Enqueued { seq: 1, msg: OutMessage { txn: t, .. } },
                Record::Enqueued { seq: 2, msg: OutMessage { txn: 0, .. } },
            ] if *t == txn
        ),
        "{records:?}"
    );
    b.learn_commits(3, &[0, txn]);
    let out = written(&mut b, 3);
    assert_eq!(out[0], 0x34, "the QoS 2 PUBLISH, first: {out:02x?}");
    assert!(
        out.windows(3).any(|w| w == b"a/2"),
        "then the one behind it"
    );
    assert_eq!(b.depth(), (0, 2));

    // Forwarded at QoS 1 (a QoS 1 rule), the same routing does not wait.
    let mut b = bridge(BASIC);
    up(&mut b, 0);
    b.receive(1, &[0x90, 3, 0, 1, 1]);
    let m = offered("a/3", QoS::ExactlyOnce, 3 << 48 | 1);
    assert_eq!(b.offer_message(2, &m, false), Offer::Accepted(Some(1)));
    assert_eq!(written(&mut b, 2)[0], 0x32);
}
