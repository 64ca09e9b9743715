//! Routing between shards: fan-out and fan-in across home shards, the SUBACK-then-publish
//! guarantee of interest replication, retained replicas, unsubscribe propagation and many
//! concurrent handovers. Each runs with 1 and 4 shards (1 shard is the reference).

mod common;

use std::net::SocketAddr;

use common::*;

fn fanout_reaches_subscribers_on_every_shard(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("fo", 9, shards);
    let mut subs: Vec<RawClient> = ids[1..]
        .iter()
        .map(|id| {
            let mut c = RawClient::clean(b.addr(), id);
            c.subscribe("fo/+", 1);
            c
        })
        .collect();
    let mut publ = RawClient::clean(b.addr(), &ids[0]);
    for i in 0..50u32 {
        publ.publish("fo/t", &i.to_be_bytes(), 1, false);
    }
    for s in &mut subs {
        for i in 0..50u32 {
            let m = s.expect_publish_acked(WAIT);
            assert_eq!(m.payload, i.to_be_bytes(), "[{}] message {i}", s.id);
        }
        s.expect_nothing(std::time::Duration::from_millis(50));
    }
}

fn fanin_keeps_per_publisher_order(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("fi", 9, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("fi/t", 1);
    let addr = b.addr();
    let handles: Vec<_> = ids[1..]
        .iter()
        .enumerate()
        .map(|(p, id)| {
            let id = id.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::clean(addr, &id);
                for i in 0..40u8 {
                    c.publish("fi/t", &[p as u8, i], 1, false);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("publisher thread");
    }
    let mut next = [0u8; 8];
    for _ in 0..8 * 40 {
        let m = sub.expect_publish_acked(WAIT);
        let (p, i) = (usize::from(m.payload[0]), m.payload[1]);
        assert_eq!(i, next[p], "publisher {p}: out of order");
        next[p] += 1;
    }
    assert_eq!(next, [40; 8]);
    sub.expect_nothing(QUIET);
}

fn publish_right_after_suback_is_delivered(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    // Publishers already connected on every shard; fresh subscriptions on every shard.
    let pubs_ids = spread_ids("sap", 4, shards);
    let mut pubs: Vec<RawClient> = pubs_ids
        .iter()
        .map(|id| RawClient::clean(b.addr(), id))
        .collect();
    let sub_ids = spread_ids("sas", 4, shards);
    let mut subs: Vec<RawClient> = sub_ids
        .iter()
        .map(|id| RawClient::clean(b.addr(), id))
        .collect();
    for round in 0..10 {
        for (si, s) in subs.iter_mut().enumerate() {
            let topic = format!("sa/{round}/{si}");
            s.subscribe(&topic, 0);
            // The SUBACK is out: a QoS 0 publish from any shard must now reach it.
            for p in pubs.iter_mut() {
                let from = p.id.clone();
                p.publish(&topic, from.as_bytes(), 0, false);
            }
            let mut from: Vec<String> = (0..pubs.len())
                .map(|_| s.expect_publish(WAIT).text())
                .collect();
            from.sort();
            let mut want = pubs_ids.clone();
            want.sort();
            assert_eq!(from, want, "round {round}, subscriber {si}");
        }
    }
}

fn retained_replicated_to_every_shard(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("rs", 5, shards);
    let mut probes: Vec<RawClient> = ids[1..]
        .iter()
        .map(|id| probe(b.addr(), id, shards, "rs/#"))
        .collect();
    let mut publ = RawClient::clean(b.addr(), &ids[0]);
    publ.publish("rs/a", b"A", 1, true);
    publ.publish("rs/b", b"B", 2, true);
    publ.publish("rs/b", b"B2", 2, true);
    // Every shard has routed (and stored) all three.
    for p in &mut probes {
        for _ in 0..3 {
            p.expect_publish(WAIT);
        }
    }
    let mut firsts = Vec::new();
    for id in &ids[1..] {
        let mut s = RawClient::clean(b.addr(), id);
        s.subscribe("rs/#", 2);
        let mut got: Vec<(String, String, bool)> = (0..2)
            .map(|_| {
                let m = s.expect_publish_acked(WAIT);
                (m.topic.clone(), m.text(), m.retain)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("rs/a".into(), "A".into(), true),
                ("rs/b".into(), "B2".into(), true)
            ],
            "[{id}]"
        );
        firsts.push(s);
    }
    // Cleared from another shard: gone everywhere.
    let mut clearer = RawClient::clean(b.addr(), &id_on("rs-clearer", 2, shards));
    clearer.publish("rs/a", b"", 1, true);
    for (i, first) in firsts.iter_mut().enumerate() {
        // The live clearing message reached this subscriber, so its shard applied the clear.
        let m = first.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.payload.len(), m.retain),
            ("rs/a", 0, false)
        );
        let shard = shardmq::broker::home_shard(&first.id, shards);
        let mut late = RawClient::clean(b.addr(), &id_on(&format!("rs-late{i}"), shard, shards));
        late.subscribe("rs/#", 2);
        let m = late.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.as_str(), m.text().as_str(), m.retain),
            ("rs/b", "B2", true),
            "[{}] on shard {shard}",
            late.id
        );
        late.expect_nothing(std::time::Duration::from_millis(100));
    }
}

fn unsubscribe_propagates_to_other_shards(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("us", 4, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe_many(&[("us/x", 1), ("us/sentinel", 1)]);
    let mut pubs: Vec<RawClient> = ids[1..]
        .iter()
        .map(|id| RawClient::clean(b.addr(), id))
        .collect();
    for p in pubs.iter_mut() {
        p.publish("us/x", b"before", 1, false);
        assert_eq!(sub.expect_publish_acked(WAIT).payload, b"before");
    }
    sub.unsubscribe(&["us/x"]);
    for p in pubs.iter_mut() {
        p.publish("us/x", b"after", 1, false);
        p.publish("us/sentinel", b"s", 1, false);
        let m = sub.expect_publish_acked(WAIT);
        assert_eq!(
            m.topic, "us/sentinel",
            "[{}] delivered after UNSUBSCRIBE",
            p.id
        );
    }
}

fn many_concurrent_connections_are_handed_over(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let addr: SocketAddr = b.addr();
    let handles: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                let id = format!("hand-{i}");
                let mut c = RawClient::clean(addr, &id);
                c.subscribe(&format!("hand/{i}"), 1);
                c
            })
        })
        .collect();
    let mut clients: Vec<RawClient> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let mut publ = RawClient::clean(addr, "hand-publisher");
    for i in 0..clients.len() {
        publ.publish(&format!("hand/{i}"), format!("{i}").as_bytes(), 1, false);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let m = c.expect_publish_acked(WAIT);
        assert_eq!(
            (m.topic.clone(), m.text()),
            (format!("hand/{i}"), format!("{i}"))
        );
    }
}

/// A PUBACK means the broker owns the message: a client that subscribes after its
/// publisher got the PUBACK must see the retained message exactly once, as retained
/// (RETAIN=1), never as a live delivery (which would mean the message reached the
/// subscriber's shard only after the subscription, so it happened "after" its own PUBACK).
fn acked_retained_message_is_not_delivered_live_to_later_subscriber(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let mut publ = RawClient::clean(b.addr(), &id_on("ackp", 0, shards));
    for round in 0..40 {
        let topic = format!("ack/{round}");
        publ.publish(&topic, b"r", 1, true);
        let sub_id = id_on(&format!("acks{round}"), 1 + round % 3, shards);
        let mut sub = RawClient::clean(b.addr(), &sub_id);
        sub.subscribe(&topic, 1);
        let m = sub.expect_publish_acked(WAIT);
        assert!(
            m.retain,
            "round {round}: the message acknowledged before SUBSCRIBE arrived as a live \
             delivery (RETAIN=0): it reached the subscriber's shard after the subscription"
        );
    }
}

fn interest_survives_while_any_subscriber_remains(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("int", 4, shards);
    // Two subscribers of one filter on shard 1 and one on shard 2; the publisher on shard 0.
    let same_shard = id_on("int-twin", 1, shards);
    let mut a = RawClient::clean(b.addr(), &ids[1]);
    let mut twin = RawClient::clean(b.addr(), &same_shard);
    let mut c = RawClient::clean(b.addr(), &ids[2]);
    for s in [&mut a, &mut twin, &mut c] {
        s.subscribe_many(&[("int/#", 1), ("int-sentinel", 1)]);
    }
    let mut publ = RawClient::clean(b.addr(), &ids[0]);
    let mut round = 0u8;
    let mut check = |publ: &mut RawClient, who: &mut [&mut RawClient]| {
        round += 1;
        publ.publish("int/x", &[round], 1, false);
        for s in who.iter_mut() {
            let m = s.expect_publish_acked(WAIT);
            assert_eq!(
                (m.topic.as_str(), m.payload.clone()),
                ("int/x", vec![round]),
                "[{}]",
                s.id
            );
        }
    };
    check(&mut publ, &mut [&mut a, &mut twin, &mut c]);
    a.unsubscribe(&["int/#"]);
    check(&mut publ, &mut [&mut twin, &mut c]);
    c.unsubscribe(&["int/#"]);
    check(&mut publ, &mut [&mut twin]);
    // The last one leaves by disconnecting (clean session ends).
    twin.disconnect();
    // Subscribe / unsubscribe / subscribe again quickly: the final state wins everywhere.
    for i in 0..10 {
        a.subscribe("int/#", 1);
        a.unsubscribe(&["int/#"]);
        a.subscribe("int/#", 1);
        check(&mut publ, &mut [&mut a]);
        a.unsubscribe(&["int/#"]);
        publ.publish("int/x", b"nobody", 1, false);
        publ.publish("int-sentinel", &[i], 1, false);
        let m = a.expect_publish_acked(WAIT);
        assert_eq!(
            m.topic, "int-sentinel",
            "round {i}: delivered after UNSUBSCRIBE"
        );
        let m = c.expect_publish_acked(WAIT);
        assert_eq!(
            m.topic, "int-sentinel",
            "round {i}: delivered after UNSUBSCRIBE"
        );
    }
}

/// The reference matcher of MQTT 3.1.1 §4.7, written independently of the broker's.
fn model_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        match t.get(i) {
            Some(tl) if *level == "+" || level == tl => {}
            _ => return false,
        }
    }
    f.len() == t.len()
}

/// Random subscribe / unsubscribe / publish rounds over clients on every shard, checked
/// against a model: each client gets exactly one copy of each message any of its filters
/// matches, and nothing else.
fn random_subscriptions_match_a_model(shards: usize) {
    const FILTERS: &[&str] = &[
        "#", "+", "a", "a/#", "a/+", "a/b", "+/b", "a/+/c", "+/+/+", "$s/#", "a/b/#", "+/#", "/+",
        "+/+", "a/b/c/d",
    ];
    const TOPICS: &[&str] = &[
        "a", "a/b", "a/c", "a/b/c", "x/b", "b", "/a", "$s/x", "a/b/c/d", "a//c", "$s", "/",
    ];
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("model", 6, shards);
    let mut clients: Vec<RawClient> = ids
        .iter()
        .map(|id| {
            let mut c = RawClient::clean(b.addr(), id);
            c.subscribe("sync", 1);
            c
        })
        .collect();
    let mut subs: Vec<std::collections::BTreeSet<&str>> = vec![Default::default(); clients.len()];
    let mut publ = RawClient::clean(b.addr(), &id_on("model-pub", 0, shards));
    let mut rng = Rng::new(7 + shards as u64);
    let mut counter = 0u32;
    for round in 0..40u32 {
        for _ in 0..4 {
            let c = rng.below(clients.len());
            let f = FILTERS[rng.below(FILTERS.len())];
            if subs[c].contains(f) && rng.below(2) == 0 {
                clients[c].unsubscribe(&[f]);
                subs[c].remove(f);
            } else {
                clients[c].subscribe(f, 1);
                subs[c].insert(f);
            }
        }
        let mut expected: Vec<Vec<u32>> = vec![Vec::new(); clients.len()];
        for _ in 0..6 {
            counter += 1;
            let t = TOPICS[rng.below(TOPICS.len())];
            publ.publish(t, &counter.to_be_bytes(), 1, false);
            for (c, fs) in subs.iter().enumerate() {
                if fs.iter().any(|f| model_matches(f, t)) {
                    expected[c].push(counter);
                }
            }
        }
        publ.publish("sync", &round.to_be_bytes(), 1, false);
        for (c, client) in clients.iter_mut().enumerate() {
            let mut got = Vec::new();
            loop {
                let m = client.expect_publish_acked(WAIT);
                if m.topic == "sync" && m.payload == round.to_be_bytes() {
                    break;
                }
                got.push(u32::from_be_bytes(
                    m.payload[..4].try_into().expect("counter"),
                ));
            }
            got.sort_unstable();
            assert_eq!(
                got, expected[c],
                "round {round}, client {} with filters {:?}",
                client.id, subs[c]
            );
        }
    }
}

shard_tests!(
    random_subscriptions_match_a_model,
    interest_survives_while_any_subscriber_remains,
    acked_retained_message_is_not_delivered_live_to_later_subscriber,
    fanout_reaches_subscribers_on_every_shard,
    fanin_keeps_per_publisher_order,
    publish_right_after_suback_is_delivered,
    retained_replicated_to_every_shard,
    unsubscribe_propagates_to_other_shards,
    many_concurrent_connections_are_handed_over,
);
