//! MQTT 5.0 shared subscriptions `$share/{group}/{filter}` over real sockets, against
//! `--shards 1` and `--shards 4` (members and publishers on different home shards).

mod common;
#[path = "v5/mod.rs"]
mod v5;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{id_on, RawClient, WaitError, WAIT};
use v5::*;

/// Receive (and acknowledge) PUBLISHes on every member until `total` arrived in all;
/// returns the payloads each member got.
fn gather(members: &mut [Client5], total: usize) -> Vec<Vec<String>> {
    let mut got: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    let deadline = Instant::now() + WAIT;
    while got.iter().map(Vec::len).sum::<usize>() < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} shared messages arrived: {got:?}",
            got.iter().map(Vec::len).sum::<usize>()
        );
        for (i, m) in members.iter_mut().enumerate() {
            match m.recv(Duration::from_millis(20)) {
                Ok(P5::Publish(msg)) => {
                    m.ack(&msg);
                    got[i].push(msg.text());
                }
                Ok(other) => panic!("[{}] unexpected {other:?}", m.id),
                Err(WaitError::Timeout) => {}
                Err(e) => panic!("[{}] {e:?}", m.id),
            }
        }
    }
    for m in members.iter_mut() {
        m.expect_nothing(Duration::from_millis(200));
    }
    got
}

fn publish_n(publ: &mut Client5, topic: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let p = format!("m{i}");
            publ.publish(topic, p.as_bytes(), 1, false);
            p
        })
        .collect()
}

/// Every payload exactly once over all members.
fn assert_exactly_once(got: &[Vec<String>], sent: &[String]) {
    let mut all: Vec<String> = got.iter().flatten().cloned().collect();
    all.sort();
    let mut want = sent.to_vec();
    want.sort();
    assert_eq!(all, want, "each message to exactly one member: {got:?}");
}

fn member(
    addr: std::net::SocketAddr,
    prefix: &str,
    shard: usize,
    shards: usize,
    f: &str,
) -> Client5 {
    let mut c = Client5::clean(addr, &id_on(prefix, shard, shards));
    c.subscribe(f, 1);
    c
}

fn one_member_per_message(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut ms = vec![
        member(b.addr(), "sa", 0, shards, "$share/g/sh/t"),
        member(b.addr(), "sb", 1, shards, "$share/g/sh/t"),
    ];
    let mut publ = Client5::clean(b.addr(), &id_on("sp", 2, shards));
    let sent = publish_n(&mut publ, "sh/t", 20);
    let got = gather(&mut ms, 20);
    assert_exactly_once(&got, &sent);
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "both members get some: {got:?}"
    );
}

fn balanced_across_shards(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut ms: Vec<Client5> = (0..4)
        .map(|i| member(b.addr(), &format!("bal{i}"), i, shards, "$share/bal/b/+"))
        .collect();
    let mut publ = Client5::clean(b.addr(), &id_on("balp", 1, shards));
    let sent = publish_n(&mut publ, "b/x", 40);
    let got = gather(&mut ms, 40);
    assert_exactly_once(&got, &sent);
    for (i, g) in got.iter().enumerate() {
        assert!(g.len() >= 5, "member {i} got {} of 40: {got:?}", g.len());
    }
}

fn groups_and_plain_subscribers_each_get_all(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut g1 = vec![
        member(b.addr(), "g1a", 0, shards, "$share/one/gr/#"),
        member(b.addr(), "g1b", 1, shards, "$share/one/gr/#"),
    ];
    let mut g2 = vec![member(b.addr(), "g2a", 2, shards, "$share/two/gr/#")];
    let mut plain = vec![member(b.addr(), "gpl", 3, shards, "gr/#")];
    let mut publ = Client5::clean(b.addr(), &id_on("grp", 1, shards));
    let sent = publish_n(&mut publ, "gr/t", 10);
    assert_exactly_once(&gather(&mut g1, 10), &sent);
    assert_exactly_once(&gather(&mut g2, 10), &sent);
    assert_exactly_once(&gather(&mut plain, 10), &sent);
}

fn departed_member_unacked_go_to_another(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut leaver = member(b.addr(), "dl", 0, shards, "$share/d/dm/t");
    let mut stayer = member(b.addr(), "ds", 1, shards, "$share/d/dm/t");
    let mut publ = Client5::clean(b.addr(), &id_on("dp", 2, shards));
    let sent = publish_n(&mut publ, "dm/t", 10);
    // The leaver takes its messages but never acknowledges them.
    let mut unacked = Vec::new();
    let mut acked = Vec::new();
    let deadline = Instant::now() + WAIT;
    while unacked.len() + acked.len() < 10 {
        assert!(Instant::now() < deadline, "{unacked:?} {acked:?}");
        if let Ok(P5::Publish(m)) = leaver.recv(Duration::from_millis(20)) {
            unacked.push(m.text());
        }
        if let Ok(P5::Publish(m)) = stayer.recv(Duration::from_millis(20)) {
            stayer.ack(&m);
            acked.push(m.text());
        }
    }
    assert!(!unacked.is_empty(), "the leaver got none: {acked:?}");
    leaver.disconnect();
    // Its unacknowledged messages go to the remaining member…
    let mut rest = vec![stayer];
    let moved = gather(&mut rest, unacked.len()).remove(0);
    let mut moved_sorted = moved.clone();
    moved_sorted.sort();
    unacked.sort();
    assert_eq!(
        moved_sorted, unacked,
        "the leaver's unacknowledged messages"
    );
    let mut all: Vec<String> = acked.into_iter().chain(moved).collect();
    all.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(all, want);
    // …and new messages only go there.
    let sent = publish_n(&mut publ, "dm/t", 5);
    assert_exactly_once(&gather(&mut rest, 5), &sent);
}

fn unsubscribed_member_gets_no_more(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut a = member(b.addr(), "ua", 0, shards, "$share/u/us/t");
    let b2 = member(b.addr(), "ub", 1, shards, "$share/u/us/t");
    assert_eq!(a.unsubscribe(&["$share/u/us/t"]), vec![0x00]);
    let mut publ = Client5::clean(b.addr(), &id_on("up", 2, shards));
    let sent = publish_n(&mut publ, "us/t", 6);
    let mut rest = vec![b2];
    assert_exactly_once(&gather(&mut rest, 6), &sent);
    a.expect_nothing(Duration::from_millis(200));
}

fn retained_not_sent_on_shared_subscribe(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut publ = Client5::clean(b.addr(), &id_on("rp", 2, shards));
    publ.publish("rs/t", b"kept", 1, true);
    // Let every shard's retained replica have it (see conformance_v5's
    // retained_before_subscribe_arrives_once for the race this avoids).
    std::thread::sleep(Duration::from_millis(150));
    let mut m = member(b.addr(), "rm", 0, shards, "$share/r/rs/#");
    m.expect_nothing(Duration::from_millis(300));
    let mut plain = member(b.addr(), "rpl", 1, shards, "rs/#");
    let got = plain.expect_publish_acked(WAIT);
    assert!(got.retain && got.payload == b"kept", "{got:?}");
    // A live retained publish reaches the group (RETAIN cleared without RAP).
    publ.publish("rs/t", b"live", 1, true);
    let got = m.expect_publish_acked(WAIT);
    assert_eq!(got.payload, b"live");
    assert!(!got.retain);
    publ.publish("rs/t", b"", 1, true);
}

fn invalid_share_names_refused(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &id_on("inv", 1, shards));
    let o = opts(1, false, false, 0);
    let codes = c.subscribe_opts(
        &[
            ("$share/ab", o),
            ("$share//t", o),
            ("$share/g", o),
            ("$share/g/", o),
            ("$share/g+/t", o),
            ("$share/g#/t", o),
            ("$share/ok/t", o),
        ],
        None,
    );
    assert_eq!(codes, vec![0x8F, 0x8F, 0x8F, 0x8F, 0x8F, 0x8F, 0x01]);
}

fn no_local_on_shared_is_protocol_error(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut c = Client5::clean(b.addr(), &id_on("nl", 2, shards));
    let p = c.next_pid();
    let subs = [shardmq::protocol::Subscription {
        filter: "$share/g/nl/t",
        options: opts(1, true, false, 0),
    }];
    c.send(&shardmq::protocol::Packet::Subscribe(
        shardmq::protocol::Subscribe {
            packet_id: std::num::NonZeroU16::new(p).unwrap(),
            properties: shardmq::protocol::Properties::default(),
            filters: shardmq::protocol::SubscriptionList::Slice(&subs),
        },
    ));
    c.expect_disconnect_reason(0x82);
}

fn shared_options_and_identifier(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut m = Client5::clean(b.addr(), &id_on("so", 0, shards));
    let codes = m.subscribe_opts(&[("$share/o/so/t", opts(0, false, false, 0))], Some(11));
    assert_eq!(codes, vec![0]);
    let mut publ = Client5::clean(b.addr(), &id_on("sop", 3, shards));
    publ.publish("so/t", b"q2", 2, false);
    let got = m.expect_publish_acked(WAIT);
    assert_eq!(got.qos, 0, "granted QoS 0 caps the delivery");
    assert_eq!(got.props.subscription_identifiers, vec![11]);
}

fn v311_and_v5_members_share(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut old = RawClient::clean(b.addr(), &id_on("m3", 0, shards));
    old.subscribe("$share/mix/mx/t", 1);
    let mut new = member(b.addr(), "m5", 1, shards, "$share/mix/mx/t");
    let mut publ = Client5::clean(b.addr(), &id_on("mxp", 2, shards));
    let sent = publish_n(&mut publ, "mx/t", 10);
    // Poll both until 10 arrived.
    let mut got3 = Vec::new();
    let mut got5: Vec<String> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got3.len() + got5.len() < 10 {
        assert!(Instant::now() < deadline, "{got3:?} {got5:?}");
        if let Ok(common::Got::Publish(m)) = old.try_packet(Duration::from_millis(20)) {
            old.ack(&m);
            got3.push(m.text());
        }
        if let Ok(P5::Publish(m)) = new.recv(Duration::from_millis(20)) {
            new.ack(&m);
            got5.push(m.text());
        }
    }
    assert!(!got3.is_empty() && !got5.is_empty(), "{got3:?} {got5:?}");
    let all: Vec<String> = got3.into_iter().chain(got5).collect();
    assert_exactly_once(&[all], &sent);
}

fn shared_rumqttc(shards: usize) {
    use rq::mqttbytes::v5::{Packet as RP, PubAckReason};
    use rq::mqttbytes::QoS as RQ;
    let b = common::Broker::with_shards(shards, &[]);
    let mut conns = Vec::new();
    let mut clients = Vec::new();
    for i in 0..2 {
        let (c, mut conn, _) =
            rq_connect(rq_options(b.addr(), &id_on(&format!("rq{i}"), i, shards)));
        c.subscribe("$share/rq/rq/t", RQ::AtLeastOnce).unwrap();
        rq_suback(&mut conn);
        clients.push(c);
        conns.push(conn);
    }
    let (publ, mut pconn, _) = rq_connect(rq_options(b.addr(), &id_on("rqp", 2, shards)));
    for i in 0..10 {
        publ.publish("rq/t", RQ::AtLeastOnce, false, format!("m{i}"))
            .unwrap();
        assert_eq!(rq_puback(&mut pconn), PubAckReason::Success);
    }
    let mut counts: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while counts.values().map(Vec::len).sum::<usize>() < 10 {
        assert!(Instant::now() < deadline, "{counts:?}");
        for (i, conn) in conns.iter_mut().enumerate() {
            if let Ok(Ok(rq::Event::Incoming(RP::Publish(p)))) =
                conn.recv_timeout(Duration::from_millis(20))
            {
                counts
                    .entry(i)
                    .or_default()
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    }
    let mut all: Vec<String> = counts.values().flatten().cloned().collect();
    all.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(all, want, "{counts:?}");
    assert_eq!(counts.len(), 2, "both rumqttc members get some: {counts:?}");
    for conn in conns.iter_mut() {
        rq_no_publish(conn, Duration::from_millis(200));
    }
}

fn puback_success_with_only_shared_member(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut publ = Client5::clean(b.addr(), &id_on("pap", 2, shards));
    assert_eq!(publ.publish("pa/t", b"x", 1, false), 0x10);
    let mut m = member(b.addr(), "pam", 0, shards, "$share/pa/pa/t");
    assert_eq!(
        publ.publish("pa/t", b"y", 1, false),
        0x00,
        "a group member matches"
    );
    assert_eq!(m.expect_publish_acked(WAIT).payload, b"y");
}

/// A member whose session outlives its connection is offline (gets nothing) until it
/// resumes, then shares again.
fn persistent_member_offline_then_back(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = id_on("pma", 0, shards);
    let o = Conn5::new(&id).expiry(60);
    let (mut a, _) = Client5::open(b.addr(), &o);
    a.subscribe("$share/pm/pm/t", 1);
    let other = member(b.addr(), "pmb", 1, shards, "$share/pm/pm/t");
    a.disconnect();
    let mut publ = Client5::clean(b.addr(), &id_on("pmp", 2, shards));
    let sent = publish_n(&mut publ, "pm/t", 6);
    let mut rest = vec![other];
    assert_exactly_once(&gather(&mut rest, 6), &sent);
    let (a, ack) = Client5::open(b.addr(), &o.clone().clean(false));
    assert!(ack.present);
    let mut both = vec![a, rest.remove(0)];
    // The first member may have been handed messages queued while it was away: none are
    // expected, since the other member was online.
    let sent = publish_n(&mut publ, "pm/t", 10);
    let got = gather(&mut both, 10);
    assert_exactly_once(&got, &sent);
    assert!(
        !got[0].is_empty(),
        "the resumed member shares again: {got:?}"
    );
}

/// A member whose session is replaced by a Clean Start takeover leaves the group: a
/// publish to the filter then has no matching subscriber (0x10), and nothing arrives.
fn taken_over_member_leaves_group(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = id_on("tom", 0, shards);
    let mut old = member(b.addr(), "tom", 0, shards, "$share/to/to/t");
    let (mut new, ack) = Client5::open(b.addr(), &Conn5::new(&id));
    assert!(!ack.present);
    old.expect_disconnect_reason(0x8E);
    let mut publ = Client5::clean(b.addr(), &id_on("top", 1, shards));
    assert_eq!(
        publ.publish("to/t", b"x", 1, false),
        0x10,
        "the old session's membership must end with it"
    );
    new.expect_nothing(Duration::from_millis(200));
}

/// A member that refuses a message (PUBACK ≥ 0x80) ends its delivery: no other member
/// gets it [MQTT-4.8.2-6].
fn refused_message_not_sent_to_another_member(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let mut ms = [
        member(b.addr(), "rfa", 0, shards, "$share/rf/rf/t"),
        member(b.addr(), "rfb", 1, shards, "$share/rf/rf/t"),
    ];
    let mut publ = Client5::clean(b.addr(), &id_on("rfp", 2, shards));
    publ.publish("rf/t", b"no", 1, false);
    let deadline = Instant::now() + WAIT;
    let (who, m) =
        loop {
            assert!(Instant::now() < deadline, "nobody got the message");
            if let Some(hit) = ms.iter_mut().enumerate().find_map(|(i, c)| {
                match c.recv(Duration::from_millis(20)) {
                    Ok(P5::Publish(m)) => Some((i, m)),
                    _ => None,
                }
            }) {
                break hit;
            }
        };
    ms[who].send(&shardmq::protocol::Packet::PubAck(shardmq::protocol::Ack {
        packet_id: std::num::NonZeroU16::new(m.pid.expect("pid")).expect("pid"),
        reason: shardmq::protocol::ReasonCode::UnspecifiedError,
        properties: shardmq::protocol::Properties::default(),
    }));
    for c in ms.iter_mut() {
        c.expect_nothing(Duration::from_millis(300));
    }
}

/// Unacknowledged messages moved to another member when their member went away are not
/// resent to it when its session resumes (each message goes to one member).
fn moved_messages_not_resent_to_resumed_member(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = id_on("mva", 0, shards);
    let o = Conn5::new(&id).expiry(60).receive_max(10);
    let (mut a, _) = Client5::open(b.addr(), &o);
    a.subscribe("$share/mv/mv/t", 1);
    let mut publ = Client5::clean(b.addr(), &id_on("mvp", 2, shards));
    // Only member: it takes all 4 without acknowledging.
    publish_n(&mut publ, "mv/t", 4);
    let held: Vec<String> = (0..4).map(|_| a.expect_publish(WAIT).text()).collect();
    let other = member(b.addr(), "mvb", 1, shards, "$share/mv/mv/t");
    a.drop_tcp();
    let mut rest = vec![other];
    let mut moved = gather(&mut rest, 4).remove(0);
    moved.sort();
    let mut held_sorted = held.clone();
    held_sorted.sort();
    assert_eq!(
        moved, held_sorted,
        "the gone member's messages went to the other"
    );
    let (mut a, ack) = Client5::open(b.addr(), &o.clone().clean(false));
    assert!(ack.present);
    a.expect_nothing(Duration::from_millis(400));
}

/// A QoS 2 message past PUBREC belongs to its member: when that member's connection
/// breaks it is not given to another member, and the flow completes on resumption.
fn qos2_past_pubrec_stays_with_member(shards: usize) {
    let b = common::Broker::with_shards(shards, &[]);
    let id = id_on("q2a", 0, shards);
    let o = Conn5::new(&id).expiry(60);
    let (mut a, _) = Client5::open(b.addr(), &o);
    a.subscribe("$share/q2/q2/t", 2);
    let mut publ = Client5::clean(b.addr(), &id_on("q2p", 2, shards));
    publ.publish("q2/t", b"once", 2, false);
    let m = a.expect_publish(WAIT);
    let pid = m.pid.expect("pid");
    a.send(&shardmq::protocol::Packet::PubRec(
        shardmq::protocol::Ack::new(std::num::NonZeroU16::new(pid).expect("pid")),
    ));
    a.expect_where(
        WAIT,
        "PUBREL",
        |g| matches!(g, P5::PubRel { pid: p, .. } if *p == pid),
    );
    let mut other = Client5::clean(b.addr(), &id_on("q2b", 1, shards));
    other.subscribe("$share/q2/q2/t", 2);
    a.drop_tcp();
    other.expect_nothing(Duration::from_millis(400));
    let (mut a, ack) = Client5::open(b.addr(), &o.clone().clean(false));
    assert!(ack.present);
    match a.expect(WAIT) {
        P5::PubRel { pid: p, .. } => assert_eq!(p, pid),
        other => panic!("want the PUBREL resent, got {}", other.brief()),
    }
}

shard_tests!(
    one_member_per_message,
    balanced_across_shards,
    groups_and_plain_subscribers_each_get_all,
    departed_member_unacked_go_to_another,
    unsubscribed_member_gets_no_more,
    retained_not_sent_on_shared_subscribe,
    invalid_share_names_refused,
    no_local_on_shared_is_protocol_error,
    shared_options_and_identifier,
    v311_and_v5_members_share,
    shared_rumqttc,
    puback_success_with_only_shared_member,
    persistent_member_offline_then_back,
    taken_over_member_leaves_group,
    refused_message_not_sent_to_another_member,
    moved_messages_not_resent_to_resumed_member,
    qos2_past_pubrec_stays_with_member,
);
