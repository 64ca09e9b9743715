//! Takeover: a second connection with a client id already connected closes the first
//! (whose Will is published) and continues its session. With 4 shards the new connection
//! may be accepted on any shard and is handed to the session's home shard.

mod common;

use common::*;

fn takeover_closes_first_and_publishes_its_will(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("tk", 3, shards);
    let mut watcher = RawClient::clean(b.addr(), &ids[1]);
    watcher.subscribe("tk/will", 1);
    let mut publ = RawClient::clean(b.addr(), &ids[2]);
    let (mut first, _) = RawClient::connect_v311(
        b.addr(),
        &ids[0],
        false,
        60,
        Some(("tk/will", b"first gone", 1, false)),
    );
    first.subscribe("tk/data", 1);
    // Several rounds, so that with 4 shards new connections land on various shards.
    for round in 0..4 {
        let will = format!("gone {round}");
        let (mut second, present) = RawClient::connect_v311(
            b.addr(),
            &ids[0],
            false,
            60,
            Some(("tk/will", will.as_bytes(), 1, false)),
        );
        assert!(present, "round {round}: the session continues (present 1)");
        first.wait_closed(WAIT);
        let w = watcher.expect_publish_acked(WAIT);
        let want = if round == 0 {
            "first gone".to_string()
        } else {
            format!("gone {}", round - 1)
        };
        assert_eq!(w.text(), want, "round {round}: the old connection's will");
        // The subscription moved with the session.
        publ.publish("tk/data", format!("d{round}").as_bytes(), 1, false);
        let earlier: Vec<String> = (0..round).map(|k| format!("d{k}")).collect();
        let mut m = second.expect_publish_acked(WAIT);
        // The old connections' PUBACKs and this CONNECT came on different sockets; when the
        // CONNECT is handled first, every message still unacknowledged (from any earlier
        // round, since the previous connection's acks may also be in flight) is resent with
        // DUP=1 on the new connection (at-least-once). Anything else is a failure.
        let mut resent = 0;
        while m.dup && earlier.contains(&m.text()) && resent < round {
            resent += 1;
            m = second.expect_publish_acked(WAIT);
        }
        assert_eq!(m.text(), format!("d{round}"));
        first = second;
    }
    // No other will shows up.
    watcher.expect_nothing(QUIET);
}

fn takeover_with_clean_session_starts_fresh(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("tkc", 2, shards);
    let (mut first, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    first.subscribe("tkc/old", 1);
    let (mut second, present) = RawClient::connect_v311(b.addr(), &ids[0], true, 60, None);
    assert!(
        !present,
        "clean session: session present 0 even on takeover"
    );
    first.wait_closed(WAIT);
    second.subscribe("tkc/new", 1);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("tkc/old", b"old", 1, false);
    publ.publish("tkc/new", b"sentinel", 1, false);
    let m = second.expect_publish_acked(WAIT);
    assert_eq!(
        m.topic, "tkc/new",
        "the old subscription must be gone after a clean takeover"
    );
}

fn takeover_resends_inflight_messages(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("tki", 2, shards);
    let (mut first, _) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    first.subscribe("tki/t", 1);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("tki/t", b"unacked", 1, false);
    let m = first.expect_publish(WAIT);
    assert!(!m.dup);
    // Not acknowledged; another connection takes the session over.
    let (mut second, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
    assert!(present);
    first.wait_closed(WAIT);
    let again = second.expect_publish_acked(WAIT);
    assert!(again.dup, "a resent delivery carries DUP=1");
    assert_eq!((again.payload, again.pid), (m.payload, m.pid));
    publ.publish("tki/t", b"next", 1, false);
    assert_eq!(second.expect_publish_acked(WAIT).payload, b"next");
}

fn takeover_of_a_clean_session(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("tkn", 2, shards);
    let mut watcher = RawClient::clean(b.addr(), &ids[1]);
    watcher.subscribe("tkn/will", 0);
    let (mut first, _) = RawClient::connect_v311(
        b.addr(),
        &ids[0],
        true,
        60,
        Some(("tkn/will", b"w", 0, false)),
    );
    first.subscribe("tkn/t", 0);
    let (mut second, present) = RawClient::connect_v311(b.addr(), &ids[0], true, 60, None);
    assert!(!present);
    first.wait_closed(WAIT);
    assert_eq!(
        watcher.expect_publish(WAIT).payload,
        b"w",
        "will of the taken-over connection"
    );
    second.ping();
}

fn rapid_takeovers_leave_one_working_connection(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let ids = spread_ids("tkr", 2, shards);
    let mut conns = Vec::new();
    for i in 0..10 {
        let (c, present) = RawClient::connect_v311(b.addr(), &ids[0], false, 60, None);
        assert_eq!(present, i > 0, "connection {i}");
        conns.push(c);
    }
    let mut last = conns.pop().expect("ten connections");
    for (i, mut c) in conns.into_iter().enumerate() {
        let got = c.wait_closed(WAIT);
        assert!(got.is_empty(), "taken-over connection {i} received {got:?}");
    }
    last.subscribe("tkr/t", 1);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    publ.publish("tkr/t", b"to the survivor", 1, false);
    assert_eq!(last.expect_publish_acked(WAIT).payload, b"to the survivor");
}

fn concurrent_takeovers_from_threads(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let id = id_on("tkt", 1, shards);
    let addr = b.addr();
    // Eight threads race to own one client id; every CONNECT must be answered, and at the
    // end exactly one connection survives.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let id = id.clone();
            std::thread::spawn(move || RawClient::connect_v311(addr, &id, false, 60, None).0)
        })
        .collect();
    let mut conns: Vec<RawClient> = handles
        .into_iter()
        .map(|h| h.join().expect("connect thread"))
        .collect();
    // Whoever connected last owns the session; a fresh connection takes it over from them.
    let (mut owner, present) = RawClient::connect_v311(addr, &id, false, 60, None);
    assert!(present);
    for c in &mut conns {
        c.wait_closed(WAIT);
    }
    owner.subscribe("tkt/t", 1);
    let mut publ = RawClient::clean(addr, &id_on("tktp", 2, shards));
    publ.publish("tkt/t", b"x", 1, false);
    assert_eq!(owner.expect_publish_acked(WAIT).payload, b"x");
}

shard_tests!(
    takeover_closes_first_and_publishes_its_will,
    takeover_with_clean_session_starts_fresh,
    takeover_resends_inflight_messages,
    takeover_of_a_clean_session,
    rapid_takeovers_leave_one_working_connection,
    concurrent_takeovers_from_threads,
);
