use std::borrow::Cow;

use super::*;
use crate::store::testutil::{message, pid, session};
use crate::store::Subscription;

fn c(s: &str) -> Cow<'static, str> {
    Cow::Owned(s.to_owned())
}

fn sub(filter: &str, group: Option<&str>) -> Subscription<'static> {
    Subscription {
        share_group: group.map(c),
        filter: c(filter),
        qos: 1,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        identifier: Some(5),
    }
}

fn replay(records: Vec<Record<'static>>) -> LiveState {
    let mut s = LiveState::default();
    for r in records {
        s.apply(r);
    }
    s
}

/// A session with a subscription, a shared subscription, a queued, an in-flight and a
/// PUBREL-sent delivery, an inbound QoS 2 id and a retained message.
fn busy(client: &str, base: u64) -> Vec<Record<'static>> {
    let m = |i: u64| MsgId(base + i);
    vec![
        session(client, true),
        Record::SubscriptionAdded {
            client_id: c(client),
            sub: sub("a/#", None),
        },
        Record::SubscriptionAdded {
            client_id: c(client),
            sub: sub("b", Some("g")),
        },
        Record::SubscriptionAdded {
            client_id: c(client),
            sub: sub("gone", None),
        },
        Record::SubscriptionRemoved {
            client_id: c(client),
            share_group: None,
            filter: c("gone"),
        },
        Record::MessageStored {
            id: m(1),
            msg: message("a/1", b"one", false),
        },
        Record::MessageStored {
            id: m(2),
            msg: message("a/2", b"two", false),
        },
        Record::MessageStored {
            id: m(3),
            msg: message("a/3", b"three", true),
        },
        Record::MessageStored {
            id: m(4),
            msg: message("a/4", b"acked", false),
        },
        Record::DeliveryQueued {
            client_id: c(client),
            msg: m(4),
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        },
        Record::DeliveryQueued {
            client_id: c(client),
            msg: m(1),
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        },
        Record::DeliveryQueued {
            client_id: c(client),
            msg: m(2),
            qos: 2,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        },
        Record::DeliveryQueued {
            client_id: c(client),
            msg: m(3),
            qos: 1,
            retain: true,
            sub_ids: Cow::Borrowed(&[7, 268_435_455]),
            txn: 0,
        },
        Record::DeliverySent {
            client_id: c(client),
            msg: m(4),
            packet_id: pid(7),
            state: DeliveryState::InFlight,
        },
        Record::DeliveryDone {
            client_id: c(client),
            packet_id: pid(7),
        },
        Record::DeliverySent {
            client_id: c(client),
            msg: m(1),
            packet_id: pid(8),
            state: DeliveryState::InFlight,
        },
        Record::DeliverySent {
            client_id: c(client),
            msg: m(2),
            packet_id: pid(9),
            state: DeliveryState::InFlight,
        },
        Record::DeliverySent {
            client_id: c(client),
            msg: m(2),
            packet_id: pid(9),
            state: DeliveryState::PubrelSent,
        },
        Record::IncomingQos2Set {
            client_id: c(client),
            packet_id: pid(3),
        },
        Record::IncomingQos2Set {
            client_id: c(client),
            packet_id: pid(4),
        },
        Record::IncomingQos2Cleared {
            client_id: c(client),
            packet_id: pid(3),
        },
        Record::RetainedSet {
            topic: c("a/3"),
            msg: m(3),
            stamp: base + 10,
            source: None,
        },
        Record::SessionDisconnected {
            client_id: c(client),
            at_unix_ms: 1000,
        },
    ]
}

#[test]
fn records_build_the_expected_session() {
    let mut s = replay(busy("c1", 0));
    s.finish();
    let sess = &s.sessions["c1"];
    assert_eq!(sess.subscriptions.len(), 2);
    assert!(sess.subscriptions.get(Some("g"), "b").is_some());
    let got: Vec<_> = sess
        .deliveries
        .iter()
        .map(|d| (d.msg.0, d.packet_id.map(|p| p.get()), d.state))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some(8), DeliveryState::InFlight),
            (2, Some(9), DeliveryState::PubrelSent),
            (3, None, DeliveryState::Queued),
        ]
    );
    assert_eq!(
        sess.incoming_qos2
            .iter()
            .map(|p| p.get())
            .collect::<Vec<_>>(),
        vec![4]
    );
    assert_eq!(sess.disconnected_at_unix_ms, Some(1000));
    // Message 4 was acknowledged and nothing else refers to it.
    assert_eq!(
        s.messages.keys().map(|m| m.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(s.retained["a/3"].msg, Some(MsgId(3)));
    assert_eq!(s.orphans, 0);
}

#[test]
fn records_of_a_state_rebuild_it() {
    let mut s = replay(busy("c1", 0));
    s.apply(Record::SessionCreated(match session("c2", false) {
        Record::SessionCreated(i) => i,
        _ => unreachable!(),
    }));
    s.finish();
    let rebuilt = replay(s.records().map(Record::into_owned).collect());
    assert_eq!(rebuilt, s);
}

#[test]
fn ending_a_session_drops_its_messages_and_counts_orphans() {
    let mut recs = busy("c1", 0);
    recs.push(Record::SessionEnded { client_id: c("c1") });
    recs.push(Record::DeliveryQueued {
        client_id: c("c1"),
        msg: MsgId(1),
        qos: 1,
        retain: false,
        sub_ids: Cow::Borrowed(&[]),
        txn: 0,
    });
    let mut s = replay(recs);
    s.finish();
    assert!(s.sessions.is_empty());
    // Only the retained message survives.
    assert_eq!(s.messages.keys().map(|m| m.0).collect::<Vec<_>>(), vec![3]);
    assert_eq!(s.orphans, 1);
}

#[test]
fn merge_renumbers_messages_and_keeps_the_newest_retained() {
    let mut a = replay(busy("c1", 0));
    let mut b = replay(busy("c2", 0)); // the same message ids, in another shard's log
    b.apply(Record::RetainedCleared {
        topic: c("a/3"),
        stamp: 99,
    });
    a.apply(Record::RetainedSet {
        topic: c("x"),
        msg: MsgId(1),
        stamp: 50,
        source: None,
    });
    b.apply(Record::MessageStored {
        id: MsgId(9),
        msg: message("x", b"newer", false),
    });
    b.apply(Record::RetainedSet {
        topic: c("x"),
        msg: MsgId(9),
        stamp: 51,
        source: None,
    });
    let conflicts = a.merge(b.clone());
    assert_eq!(conflicts, 0);
    assert_eq!(a.merge(replay(busy("c2", 0))), 1, "c2 twice is a conflict");
    a.finish();
    assert!(
        !a.retained.contains_key("a/3"),
        "the clear at stamp 99 wins"
    );
    let x = a.retained["x"]
        .msg
        .and_then(|m| a.messages.get(&m))
        .map(|m| m.payload.to_vec());
    assert_eq!(x, Some(b"newer".to_vec()));
    let payloads = |client: &str| -> Vec<Vec<u8>> {
        a.sessions[client]
            .deliveries
            .iter()
            .map(|d| a.messages[&d.msg].payload.to_vec())
            .collect()
    };
    assert_eq!(payloads("c1"), payloads("c2"));
    assert_eq!(
        payloads("c1"),
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[test]
fn split_sends_sessions_home_with_their_messages() {
    let mut s = replay(busy("c1", 0));
    s.merge(replay(busy("c2", 0)));
    s.finish();
    let parts = s.clone().split(3, |c| if c == "c1" { 1 } else { 5 }, |_| 0);
    assert_eq!(parts.len(), 3);
    assert!(parts[1].sessions.contains_key("c1"));
    assert!(parts[2].sessions.contains_key("c2"));
    assert_eq!(parts[0].retained.len(), 1);
    for p in &parts {
        let mut q = p.clone();
        q.finish();
        assert_eq!(
            &q, p,
            "each part is self-contained: nothing dangling, nothing extra"
        );
    }
    let total: usize = parts.iter().map(|p| p.sessions.len()).sum();
    assert_eq!(total, 2);
}

fn bridge_op(name: &str, op: BridgeOp<'static>) -> Record<'static> {
    Record::Bridge {
        bridge: c(name),
        op,
    }
}

#[test]
fn bridge_state_survives_checkpoint_merge_and_placement() {
    let enq = |seq| BridgeOp::Enqueued {
        seq,
        msg: message(&format!("r/{seq}"), b"p", false),
        txn: 0,
    };
    let mut s = replay(vec![
        bridge_op("cloud", enq(1)),
        bridge_op("cloud", enq(2)),
        bridge_op("cloud", enq(3)),
        bridge_op(
            "cloud",
            BridgeOp::Sent {
                seq: 1,
                packet_id: pid(7),
            },
        ),
        bridge_op("cloud", BridgeOp::Done { seq: 2 }),
        bridge_op("cloud", BridgeOp::Done { seq: 99 }),
        bridge_op("gone", enq(1)),
        bridge_op("idle", enq(1)),
        bridge_op("idle", BridgeOp::Done { seq: 1 }),
    ]);
    s.finish();
    let cloud = &s.bridges["cloud"];
    let kept: Vec<_> = cloud
        .messages
        .iter()
        .map(|(k, m)| (*k, m.packet_id))
        .collect();
    assert_eq!(kept, vec![(1, Some(pid(7))), (3, None)]);
    assert!(
        !s.bridges.contains_key("idle"),
        "an empty bridge entry is dropped"
    );
    // A checkpoint's records rebuild it.
    let rebuilt = replay(s.records().map(Record::into_owned).collect());
    assert_eq!(rebuilt, s);
    // Merging a second copy of a bridge is a conflict; the first is kept.
    let mut other = LiveState::default();
    other.apply(bridge_op("cloud", enq(5)));
    let mut merged = s.clone();
    assert_eq!(merged.merge(other), 1);
    assert_eq!(merged.bridges["cloud"], s.bridges["cloud"]);
    // Placement by owner; an unconfigured bridge is reported with its messages.
    let mut parts = vec![LiveState::default(), LiveState::default()];
    let owner = |n: &str| (n == "cloud").then_some(1);
    let dropped = place_bridges(&mut parts, s.bridges.clone(), owner);
    assert_eq!(dropped, vec![("gone".to_string(), 1)]);
    assert!(parts[0].bridges.is_empty());
    assert_eq!(parts[1].bridges["cloud"], s.bridges["cloud"]);
}

/// The delivery index: a `sent` for a held packet id changes that delivery's state; for a
/// new id the oldest unsent delivery of the message takes it (a message queued twice to
/// one session, through two subscriptions, is two deliveries); `done` frees the id for
/// reuse; `dropped` takes the oldest unsent delivery of the message.
#[test]
fn deliveries_are_found_by_packet_id_and_by_oldest_unsent_message() {
    let d = |msg: u64| Delivery {
        msg: MsgId(msg),
        qos: 2,
        retain: false,
        sub_ids: Vec::new(),
        packet_id: None,
        state: DeliveryState::Queued,
        txn: 0,
        share: None,
    };
    let mut q: Deliveries = [d(1), d(2), d(1), d(3)].into_iter().collect();
    q.sent(MsgId(1), pid(7), DeliveryState::InFlight);
    q.sent(MsgId(1), pid(8), DeliveryState::InFlight);
    q.sent(MsgId(0), pid(7), DeliveryState::PubrelSent);
    q.sent(MsgId(9), pid(9), DeliveryState::InFlight);
    let view = |q: &Deliveries| -> Vec<(u64, Option<u16>, DeliveryState)> {
        q.iter()
            .map(|x| (x.msg.0, x.packet_id.map(|p| p.get()), x.state))
            .collect()
    };
    assert_eq!(
        view(&q),
        vec![
            (1, Some(7), DeliveryState::PubrelSent),
            (2, None, DeliveryState::Queued),
            (1, Some(8), DeliveryState::InFlight),
            (3, None, DeliveryState::Queued),
        ]
    );
    q.done(pid(7));
    q.dropped(MsgId(3));
    q.dropped(MsgId(1));
    q.sent(MsgId(2), pid(7), DeliveryState::InFlight);
    assert_eq!(
        view(&q),
        vec![
            (2, Some(7), DeliveryState::InFlight),
            (1, Some(8), DeliveryState::InFlight),
        ]
    );
    q.retain(|x| x.msg != MsgId(1));
    q.done(pid(8));
    q.done(pid(7));
    assert!(q.is_empty());
}

/// Recovery keeps a QoS 2 routing's deliveries only if its origin's commit is in some
/// shard's log (merged from another shard's state here, as recovery merges them), drops
/// the others, and leaves plain deliveries: a checkpoint of the result has no routings.
#[test]
fn uncommitted_qos2_routings_are_dropped_at_recovery() {
    let queued = |id: u64, txn: u64| {
        vec![
            Record::MessageStored {
                id: MsgId(id),
                msg: message("a/1", b"x", false),
            },
            Record::DeliveryQueued {
                client_id: c("sub"),
                msg: MsgId(id),
                qos: 2,
                retain: false,
                sub_ids: Cow::Borrowed(&[]),
                txn: 0,
            },
            Record::DeliveryTxn {
                client_id: c("sub"),
                txn,
            },
        ]
    };
    let origin = |k: u64| 2 << 48 | k;
    let mut records = vec![session("sub", true)];
    records.extend(queued(1, origin(1)));
    records.extend(queued(2, origin(2)));
    records.extend(queued(3, 3 << 48 | 1));
    let mut s = replay(records);
    let again = replay(s.records().map(Record::into_owned).collect());
    assert_eq!(again, s, "a checkpoint keeps the routings");
    let mut origin_log = LiveState::default();
    origin_log.apply(Record::Qos2Committed { txn: origin(1) });
    s.merge(origin_log);
    s.finish();
    let kept: Vec<(u64, u64)> = s.sessions["sub"]
        .deliveries
        .iter()
        .map(|d| (d.msg.0, d.txn))
        .collect();
    assert_eq!(kept.len(), 1, "only the committed routing stays: {kept:?}");
    assert_eq!(kept[0].1, 0, "and it is a plain delivery now");
    assert_eq!(s.qos2_dropped, 2);
    assert!(s.qos2_committed.is_empty());
    assert!(s
        .records()
        .all(|r| !matches!(r, Record::Qos2Committed { .. })));
}

#[test]
fn a_queued_sent_record_is_a_queued_and_a_sent_record() {
    let ids: &[u32] = &[3, 9];
    let stored = Record::MessageStored {
        id: MsgId(1),
        msg: message("t", b"p", false),
    };
    let queued = Record::DeliveryQueued {
        client_id: c("c"),
        msg: MsgId(1),
        qos: 1,
        retain: true,
        sub_ids: Cow::Borrowed(ids),
        txn: 0,
    };
    let sent = Record::DeliverySent {
        client_id: c("c"),
        msg: MsgId(1),
        packet_id: pid(5),
        state: DeliveryState::InFlight,
    };
    let both = Record::DeliveryQueuedSent {
        client_id: c("c"),
        msg: MsgId(1),
        qos: 1,
        retain: true,
        sub_ids: Cow::Borrowed(ids),
        packet_id: pid(5),
        txn: 0,
    };
    let two = replay(vec![session("c", true), stored.clone(), queued, sent]);
    let one = replay(vec![session("c", true), stored, both.clone()]);
    assert_eq!(one, two);
    let d: Vec<_> = one.sessions["c"].deliveries.iter().cloned().collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].packet_id, Some(pid(5)));
    assert_eq!(d[0].state, DeliveryState::InFlight);
    assert_eq!(d[0].sub_ids, [3, 9]);
    // A checkpoint writes an in-flight delivery as the one record.
    assert!(one.records().any(|r| r == both));
    // Its PUBACK ends it.
    let mut done = one;
    done.apply(Record::DeliveryDone {
        client_id: c("c"),
        packet_id: pid(5),
    });
    assert!(done.sessions["c"].deliveries.is_empty());
}

/// Wills whose records do not name their client (as written before tags 30 and 31) go
/// to the first part, as they all did then.
#[test]
fn pending_wills_survive_checkpoints_merges_and_splits_until_done() {
    let will = |id: u64, topic: &str| Record::WillPending {
        id,
        client_id: None,
        stamp: 7,
        msg: message(topic, b"gone", false),
    };
    let mut a = replay(vec![
        will(1, "w/a"),
        will(2, "w/b"),
        Record::WillDone { id: 1 },
    ]);
    a.finish();
    assert_eq!(a.pending_wills.keys().copied().collect::<Vec<_>>(), vec![2]);
    let rebuilt = replay(a.records().map(Record::into_owned).collect());
    assert_eq!(rebuilt, a, "a checkpoint keeps the pending Will");
    // Another shard's log numbers its Wills from 1 too: merging renumbers them.
    let b = replay(vec![will(2, "w/c")]);
    a.merge(b);
    let topics: Vec<_> = a
        .pending_wills
        .values()
        .map(|w| w.msg.topic.to_string())
        .collect();
    assert_eq!(topics, vec!["w/b", "w/c"]);
    assert_eq!(a.next_will_id(), 4);
    let parts = a.split(3, |_| 2, |_| 1);
    assert_eq!(
        parts[0].pending_wills.len(),
        2,
        "the first shard publishes them again"
    );
    assert!(parts[1].pending_wills.is_empty() && parts[2].pending_wills.is_empty());
}

/// Pending and armed Wills share one number space, in the order they were armed or
/// published, and recovery publishes them in that order. Merging another shard's Wills
/// renumbers them but keeps that order across the two kinds (it once renumbered every
/// pending one before every armed one: a clean client's newer connection's armed Will
/// could then come before its older connection's pending one).
#[test]
fn merged_wills_keep_their_order_across_pending_and_armed() {
    let pending = |id: u64, topic: &str| named_pending(id, None, topic);
    let armed = |id: u64, topic: &str| named_armed(id, None, topic);
    let mut a = replay(vec![pending(1, "w/a")]);
    let b = replay(vec![
        armed(1, "w/old"),
        armed(2, "w/new"),
        pending(1, "w/old"),
        armed(3, "w/newest"),
        pending(4, "w/stored"),
    ]);
    a.merge(b);
    let mut order: Vec<(u64, String)> = a
        .pending_wills
        .iter()
        .map(|(&id, w)| (id, w.msg.topic.to_string()))
        .chain(
            a.armed_wills
                .iter()
                .map(|(&id, w)| (id, w.will.topic.to_string())),
        )
        .collect();
    order.sort();
    let topics: Vec<&str> = order.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        topics,
        vec!["w/a", "w/old", "w/new", "w/newest", "w/stored"]
    );
    assert_eq!(a.next_will_id(), 6);
}

/// Will `id` published by `client` (`None`: a record that does not name it).
fn named_pending(id: u64, client: Option<&str>, topic: &str) -> Record<'static> {
    Record::WillPending {
        id,
        client_id: client.map(c),
        stamp: 0,
        msg: message(topic, b"gone", false),
    }
}

/// Will `id` armed by clean client `client` at its CONNECT.
fn named_armed(id: u64, client: Option<&str>, topic: &str) -> Record<'static> {
    Record::WillArmed {
        id,
        client_id: client.map(c),
        will: crate::store::Will {
            topic: c(topic),
            payload: Cow::Borrowed(b"gone"),
            qos: 1,
            retain: false,
            delay_s: 0,
            expiry_interval_s: None,
            props: crate::store::MessageProps::default(),
        },
    }
}

/// The topics of a part's pending and armed Wills, in the order of their numbers (the
/// order recovery publishes them in).
fn will_topics(s: &LiveState) -> Vec<String> {
    let mut order: Vec<(u64, String)> = (s.pending_wills.iter())
        .map(|(&id, w)| (id, w.msg.topic.to_string()))
        .chain((s.armed_wills.iter()).map(|(&id, w)| (id, w.will.topic.to_string())))
        .collect();
    order.sort();
    order.into_iter().map(|(_, t)| t).collect()
}

/// A Will's records name its client, and a split puts each pending or armed Will in its
/// client's home part, so that shard publishes it again before its session timers
/// publish that client's stored session's own Will, which is due at the restart too. It
/// once put them all in the first part: shard 0 republished a client's older pending
/// Will while the client's home shard published its newer session Will, and a watcher
/// could get the newer one first [MQTT-4.6.0-5]. A Will whose records do not name its
/// client stays in the first part. The order of the numbers holds within each part,
/// whether the state is taken apart or moved whole, with any shard count.
#[test]
fn a_split_puts_each_will_in_its_clients_home_part() {
    let home = |c: &str| match c {
        "c1" => 1,
        "c2" => 2,
        _ => 0,
    };
    let mut s = replay(vec![
        named_armed(1, Some("c1"), "c1/old"),
        named_pending(2, None, "unnamed"),
        named_pending(1, Some("c1"), "c1/old"),
        named_armed(3, Some("c2"), "c2/armed"),
        named_pending(4, Some("c1"), "c1/newer"),
        named_armed(5, Some("c1"), "c1/newest"),
        named_pending(6, Some("c2"), "c2/pending"),
    ]);
    // A checkpoint keeps each Will's client.
    let rebuilt = replay(s.records().map(Record::into_owned).collect());
    assert_eq!(rebuilt, s, "a checkpoint keeps the Wills' clients");
    assert_eq!(s.pending_wills[&1].client_id.as_deref(), Some("c1"));
    // Taken apart (sessions of two homes) and moved whole (no session): the same Wills.
    let mut apart = s.clone();
    apart.apply(session("c1", true));
    apart.apply(session("c2", true));
    for (state, how) in [(apart, "taken apart"), (s.clone(), "moved whole")] {
        let parts = state.split(3, home, |_| 0);
        assert_eq!(will_topics(&parts[0]), vec!["unnamed"], "{how}");
        assert_eq!(
            will_topics(&parts[1]),
            vec!["c1/old", "c1/newer", "c1/newest"],
            "{how}: client c1's Wills on its home shard, in order"
        );
        assert_eq!(
            will_topics(&parts[2]),
            vec!["c2/armed", "c2/pending"],
            "{how}"
        );
    }
    // Another shard count: the homes are taken modulo it.
    let parts = s.clone().split(2, home, |_| 0);
    assert_eq!(
        will_topics(&parts[0]),
        vec!["unnamed", "c2/armed", "c2/pending"]
    );
    assert_eq!(
        will_topics(&parts[1]),
        vec!["c1/old", "c1/newer", "c1/newest"]
    );
    // Merged into a part that holds Wills already, they keep their order after those.
    let mut part = replay(vec![named_pending(1, Some("c3"), "c3/first")]);
    s.finish();
    let pieces = s.split(3, home, |_| 0);
    part.merge(pieces[1].clone());
    assert_eq!(
        will_topics(&part),
        vec!["c3/first", "c1/old", "c1/newer", "c1/newest"]
    );
    assert!(part.pending_wills.values().all(|w| w.client_id.is_some()));
}

/// Recovery merges the shards' states in directory order: a log holding nothing but its
/// commit marks (a clean-session publisher's shard) may be read first. Merging the
/// subscriber's state into it must keep those marks, or the committed routing is dropped.
#[test]
fn commit_marks_read_first_survive_the_merge() {
    let txn = 1 << 48 | 1;
    let mut origin_log = LiveState::default();
    origin_log.apply(Record::Qos2Committed { txn });
    let subscriber = replay(vec![
        session("sub", true),
        Record::MessageStored {
            id: MsgId(1),
            msg: message("a/1", b"x", false),
        },
        Record::DeliveryQueued {
            client_id: c("sub"),
            msg: MsgId(1),
            qos: 2,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        },
        Record::DeliveryTxn {
            client_id: c("sub"),
            txn,
        },
    ]);
    let mut s = LiveState::default();
    s.merge(origin_log);
    s.merge(subscriber);
    s.finish();
    assert_eq!(
        s.sessions["sub"].deliveries.len(),
        1,
        "the committed routing stays"
    );
    assert_eq!(s.qos2_dropped, 0);
}

/// A delivery's QoS 2 routing in its own record (tags 24/25) is what the older pair
/// (`DeliveryQueued*` then `DeliveryTxn`, still read from old logs) meant; a checkpoint
/// writes the one record, never the pair (a torn batch cannot split one record).
#[test]
fn a_routing_in_the_delivery_record_is_the_old_pair() {
    let txn = 3 << 48 | 4;
    let stored = Record::MessageStored {
        id: MsgId(1),
        msg: message("t", b"p", false),
    };
    let queued = |txn| Record::DeliveryQueued {
        client_id: c("c"),
        msg: MsgId(1),
        qos: 2,
        retain: false,
        sub_ids: Cow::Borrowed(&[]),
        txn,
    };
    let pair = vec![
        session("c", false),
        stored.clone(),
        queued(0),
        Record::DeliveryTxn {
            client_id: c("c"),
            txn,
        },
    ];
    let one = replay(vec![session("c", false), stored, queued(txn)]);
    assert_eq!(one, replay(pair));
    assert_eq!(
        one.sessions["c"].deliveries.iter().next().map(|d| d.txn),
        Some(txn)
    );
    assert!(one.records().any(|r| r == queued(txn)));
    assert!(!one
        .records()
        .any(|r| matches!(r, Record::DeliveryTxn { .. })));
}

/// A bridge's queued message of a QoS 2 routing is kept by recovery only if the routing's
/// commit is in some log; the one kept is plain afterwards (a new run numbers afresh).
#[test]
fn a_bridge_message_of_an_uncommitted_routing_is_dropped_at_recovery() {
    let enq = |seq, txn| BridgeOp::Enqueued {
        seq,
        msg: message(&format!("r/{seq}"), b"p", false),
        txn,
    };
    let origin = |k: u64| 1 << 48 | k;
    let mut s = replay(vec![
        bridge_op("cloud", enq(1, origin(1))),
        bridge_op("cloud", enq(2, 0)),
        bridge_op("cloud", enq(3, origin(2))),
        bridge_op("other", enq(1, origin(3))),
    ]);
    let again = replay(s.records().map(Record::into_owned).collect());
    assert_eq!(again, s, "a checkpoint keeps the routings");
    s.apply(Record::Qos2Committed { txn: origin(1) });
    s.finish();
    let kept: Vec<(u64, u64)> = s.bridges["cloud"]
        .messages
        .iter()
        .map(|(&seq, m)| (seq, m.txn))
        .collect();
    assert_eq!(kept, [(1, 0), (2, 0)]);
    assert!(!s.bridges.contains_key("other"), "left empty, so gone");
    assert_eq!(s.qos2_dropped, 2);
}

/// A shared message for the tests: a stored form held by the test, rendered on demand.
struct Held(StoredMessage<'static>);

impl SharedMessage for Held {
    fn stored(&self, expires_at_unix_ms: Option<u64>) -> StoredMessage<'_> {
        StoredMessage {
            expires_at_unix_ms,
            ..self.0.borrowed()
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// Replay `records`, keeping each `MessageStored` by reference (as a journal's shadow
/// does) instead of copying it.
fn replay_shared(records: Vec<Record<'static>>) -> LiveState {
    let mut s = LiveState::default();
    for r in records {
        match r {
            Record::MessageStored { id, msg } => {
                let expires = msg.expires_at_unix_ms;
                s.store_shared(id, Arc::new(Held(msg)), expires);
            }
            other => s.apply(other),
        }
    }
    s
}

/// A state holding its messages by reference writes the same checkpoint records, sweeps
/// the same messages and recovers (`finish`, `merge`, `split`) the same state as one that
/// copied them.
#[test]
fn shared_messages_are_the_same_state_as_copied_ones() {
    let mut records = busy("c1", 0);
    records.extend(busy("c2", 100));
    records.push(Record::MessageStored {
        id: MsgId(500),
        msg: message("late", b"full", true),
    });
    let copied = replay(records.clone());
    let shared = replay_shared(records.clone());
    assert!(copied.shared.is_empty() && !shared.shared.is_empty());
    assert_eq!(shared.message_count(), copied.messages.len());
    assert_eq!(shared.next_msg_id(), copied.next_msg_id());
    for id in [MsgId(1), MsgId(102), MsgId(500), MsgId(7)] {
        assert_eq!(shared.has_message(&id), copied.messages.contains_key(&id));
    }
    let owned = |s: &LiveState| s.records().map(Record::into_owned).collect::<Vec<_>>();
    assert_eq!(owned(&shared), owned(&copied));
    // The sweep drops the same unreferenced ones (message 500 is referred to by nothing).
    let (mut a, mut b) = (copied.clone(), shared.clone());
    a.drop_unreferenced();
    let mut dropped = Vec::new();
    let before = b.message_count();
    b.drop_unreferenced_into(&mut dropped);
    assert!(!b.has_message(&MsgId(500)) && b.message_count() == a.messages.len());
    // Every shared message dropped comes back to the caller (for the engine's pool).
    assert_eq!(dropped.len(), before - b.message_count());
    assert!(dropped.iter().any(|m| m.stored(None).topic == "late"));
    let held = dropped.pop().map(|m| m.into_any());
    assert!(held.is_some_and(|m| m.downcast::<Held>().is_ok()));
    assert_eq!(owned(&a), owned(&b));
    // What recovery does with a state turns the shared messages into owned ones.
    let (mut fa, mut fb) = (copied.clone(), shared.clone());
    fa.finish();
    fb.finish();
    assert!(fb.shared.is_empty());
    assert_eq!(fa, fb);
    let (mut ma, mut mb) = (replay(busy("c3", 0)), replay_shared(busy("c3", 0)));
    assert_eq!(ma.merge(copied.clone()), mb.merge(shared.clone()));
    assert_eq!(ma, mb);
    let home = |c: &str| usize::from(c == "c2");
    let sa = copied.split(2, home, |_| 0);
    let sb = shared.split(2, home, |_| 0);
    assert_eq!(sa, sb);
    // A message logged below an id held is copied, never lost.
    let mut low = replay_shared(busy("c4", 10));
    low.store_shared(MsgId(3), Arc::new(Held(message("x", b"y", false))), None);
    assert!(low.messages.contains_key(&MsgId(3)) && low.has_message(&MsgId(3)));
}

/// `r` with every message id it names moved into `base .. base + 300`, so that a log of
/// arbitrary records has ids close together (the bit table of [`StoredIds`]) or, with a
/// big `base` step between them, far apart (its binary search).
fn ids_near(mut r: Record<'static>, base: u64) -> Record<'static> {
    let near = |m: &mut MsgId| *m = MsgId(base + m.0 % 300);
    match &mut r {
        Record::MessageStored { id, .. } => near(id),
        Record::DeliveryQueued { msg, .. }
        | Record::DeliveryQueuedSent { msg, .. }
        | Record::DeliverySent { msg, .. }
        | Record::DeliveryDropped { msg, .. }
        | Record::RetainedSet { msg, .. } => near(msg),
        _ => {}
    }
    r
}

/// [`LiveState::finish`] as it was before [`StoredIds`]: a binary search of the messages
/// for every delivery and retained entry (the naive oracle).
fn finish_by_search(s: &mut LiveState) {
    s.own_shared();
    s.settle_qos2();
    s.retained.retain(|_, r| r.msg.is_some());
    let mut missing = 0u64;
    for x in s.sessions.values_mut() {
        let before = x.deliveries.len();
        x.deliveries.retain(|d| s.messages.contains_key(&d.msg));
        missing += (before - x.deliveries.len()) as u64;
    }
    let before = s.retained.len();
    s.retained
        .retain(|_, r| r.msg.is_some_and(|m| s.messages.contains_key(&m)));
    missing += (before - s.retained.len()) as u64;
    s.orphans += missing;
    s.drop_unreferenced();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// `finish` keeps exactly what the binary search keeps, for ids close together (the
    /// bit table: dense, or sparse as a long-lived log's) and far apart (the search).
    #[test]
    fn finish_with_the_id_table_matches_the_search(
        records in proptest::collection::vec(crate::store::testutil::arb_record(), 0..60),
        spread in proptest::prelude::any::<bool>(),
    ) {
        let mut s = LiveState::default();
        for (i, r) in records.into_iter().enumerate() {
            let base = if spread { (i as u64 % 3) << 40 } else { 1_000 };
            s.apply(ids_near(r, base));
        }
        let mut want = s.clone();
        finish_by_search(&mut want);
        s.finish();
        proptest::prop_assert_eq!(s, want);
    }

    /// A state that goes whole to one part (every session and retained entry has the same
    /// home) is split into the very parts that taking it apart gives.
    #[test]
    fn a_state_moved_whole_is_the_split_taken_apart(
        records in proptest::collection::vec(crate::store::testutil::arb_record(), 0..60),
        n in 1usize..4,
        k in 0usize..4,
    ) {
        let mut s = LiveState::default();
        for r in records {
            s.apply(ids_near(r, 7));
        }
        s.orphans += 1;
        let home = |_: &str| k;
        let taken_apart = s.clone().split_by_shard(n, home, home);
        let moved = s.split(n, home, home);
        proptest::prop_assert_eq!(moved, taken_apart);
    }

    /// Delivery records applied through slots (one kept per client, as the broker's
    /// sessions keep theirs, or one for all, so that most are stale) leave the state that
    /// finding each session by its client id leaves.
    #[test]
    fn records_applied_through_slots_are_records_applied_by_lookup(
        records in proptest::collection::vec(crate::store::testutil::arb_record(), 0..80),
        one_slot in proptest::prelude::any::<bool>(),
    ) {
        let records: Vec<Record<'static>> =
            records.into_iter().map(|r| ids_near(r, 3)).collect();
        let want = replay(records.clone());
        let mut got = LiveState::default();
        let mut slots: BTreeMap<String, std::cell::Cell<SessionSlot>> = BTreeMap::new();
        for r in records {
            let key = if one_slot { "" } else { delivery_client(&r).unwrap_or("") };
            let slot = slots.entry(key.to_owned()).or_default();
            if !got.apply_delivery_at(slot, &r) {
                got.apply(r);
            }
        }
        proptest::prop_assert_eq!(got, want);
    }
}

/// Sessions of one home but a retained entry of another: taken apart, as before.
#[test]
fn a_state_with_two_homes_is_taken_apart() {
    let mut s = replay(busy("c1", 0));
    s.finish();
    assert_eq!(s.sole_part(2, &|_: &str| 1, &|_: &str| 0), None);
    assert_eq!(s.sole_part(2, &|_: &str| 1, &|_: &str| 3), Some(1));
    assert_eq!(
        LiveState::default().sole_part(3, &|_: &str| 2, &|_: &str| 2),
        Some(0)
    );
    let parts = s.clone().split(2, |_| 1, |_| 0);
    assert!(parts[1].sessions.contains_key("c1"));
    assert_eq!(parts[0].retained.len(), 1);
    assert_eq!(parts, s.split_by_shard(2, |_| 1, |_| 0));
}
