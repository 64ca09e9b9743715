//! Timers already due when a turn starts run before that turn's input
//! ([`Broker::begin_turn`]): a keepalive that ran out, an expired session, a Will whose
//! delay is over. Past the turn's timer budget, a resumed session's own due timers still
//! run before its CONNECT is handled (`Broker::run_due_session_timers`).

use super::{string, subscribe_packet, will_log::will_connect, with_len};
use super::{Cores, NOW_MS, PINGREQ, PINGRESP};
use crate::broker::close::TIMERS_PER_TURN_MAX;
use crate::broker::Ingested;

/// CONNECT, MQTT 5, a stored session of `expiry_s` seconds, no Will, keepalive 60 s.
fn expiring_connect(id: &str, expiry_s: u32) -> Vec<u8> {
    let mut body = string("MQTT");
    body.extend_from_slice(&[5, 0x00, 0, 60, 5, 0x11]);
    body.extend_from_slice(&expiry_s.to_be_bytes());
    body.extend(string(id));
    with_len(0x10, &body)
}

/// The Session Present flag of the CONNACK that `out` starts with.
fn session_present(out: &[u8]) -> bool {
    assert_eq!(out.first(), Some(&0x20), "a CONNACK: {out:02x?}");
    assert_eq!(out.get(3), Some(&0), "accepted: {out:02x?}");
    out.get(2).is_some_and(|f| f & 1 == 1)
}

/// Whether `out` holds a PUBLISH on `topic`.
fn has_publish_on(out: &[u8], topic: &str) -> bool {
    let t = string(topic);
    out.windows(t.len()).any(|w| w == t.as_slice())
}

/// 1.5 × the keepalive of 60 s (`connect_packet`'s) after the last packet the link is closed, even when a
/// PINGREQ waits in its socket: the turn that reads it first runs the keepalive timer. A
/// PINGREQ read in a turn that starts 1 ms earlier is answered.
#[test]
fn a_keepalive_run_out_before_a_pingreq_is_read_closes_the_link() {
    let due = NOW_MS + 90_000;
    for (start, closed) in [(due - 1, false), (due, true)] {
        let mut net = Cores::new(1);
        let c = net.connect(0, "pinger");
        net.output(c);
        let b = &mut net.shards[0];
        b.begin_turn(start);
        let (_, end) = b.ingest(c.1, &PINGREQ, start);
        let mut closing = Vec::new();
        b.effects().take_closing(&mut closing);
        assert_eq!(closing.contains(&c.1), closed, "turn at {start}");
        if closed {
            assert_eq!(end, Ingested::Close, "nothing read past the timeout");
        } else {
            assert_eq!(end, Ingested::More);
            assert_eq!(net.output(c), PINGRESP);
        }
    }
}

/// A stored session of 1 s is over 1 s after its connection ended: a CONNECT read in the
/// turn that starts then finds no session, not one its expiry timer would have ended.
#[test]
fn a_session_expired_before_its_connect_is_read_is_not_resumed() {
    for (start, present) in [(NOW_MS + 999, true), (NOW_MS + 1_000, false)] {
        let mut net = Cores::new(1);
        let connect = expiring_connect("brief", 1);
        let b = &mut net.shards[0];
        let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
        assert_eq!(b.ingest(key, &connect, NOW_MS).1, Ingested::More);
        b.close_link(key);
        assert_eq!(b.on_closed(key, NOW_MS), Some(()));
        b.begin_turn(start);
        let again = b.accept(([127, 0, 0, 1], 2).into(), (), start);
        assert_eq!(b.ingest(again, &connect, start).1, Ingested::More);
        assert_eq!(
            session_present(&net.output((0, again))),
            present,
            "at {start}"
        );
    }
}

/// `n` past the timer budget: stored sessions `<prefix>-<i>` (each CONNECT `connect(id)`)
/// lose their connections at once; their due timers fire together in the turn that
/// starts at `at`, more than the turn handles. Returns the ids whose timers the budget
/// left in the backlog, as `left(b, id)` tells.
fn past_the_budget(
    net: &mut Cores,
    prefix: &str,
    connect: impl Fn(&str) -> Vec<u8>,
    at: u64,
    left: impl Fn(&crate::broker::Broker<()>, &str) -> bool,
) -> Vec<String> {
    let n = TIMERS_PER_TURN_MAX + 16;
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let b = &mut net.shards[0];
    let mut keys = Vec::with_capacity(n);
    for id in &ids {
        let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
        assert_eq!(b.ingest(key, &connect(id), NOW_MS).1, Ingested::More);
        keys.push(key);
    }
    for key in keys {
        b.close_link(key);
        assert_eq!(b.on_closed(key, NOW_MS), Some(()));
    }
    b.begin_turn(at);
    assert!(b.timers_backlog(), "more fired than one turn handles");
    let waiting: Vec<String> = ids.into_iter().filter(|id| left(b, id)).collect();
    assert!(
        !waiting.is_empty() && waiting.len() < n,
        "{}",
        waiting.len()
    );
    waiting
}

/// More delayed Wills due at once than a turn's timer budget: a client whose Will the
/// budget left in the backlog comes back in that turn, and its Will is published first,
/// not cancelled by the reconnect (its delay was over).
#[test]
fn a_will_left_past_the_turns_timer_budget_is_published_before_its_client_resumes() {
    let mut net = Cores::new(1);
    let at = NOW_MS + 1_000;
    let connect = |id: &str| will_connect(id, Some(100), Some(1));
    let still_armed = |b: &crate::broker::Broker<()>, id: &str| {
        let s = b.sessions.find(id);
        s.and_then(|s| b.sessions.get(s))
            .is_some_and(|x| x.will.is_some())
    };
    let waiting = past_the_budget(&mut net, "w", connect, at, still_armed);
    let id = &waiting[0];
    let watcher = net.connect(0, "watcher");
    net.send(watcher, &subscribe_packet(&format!("w/{id}")));
    net.output(watcher);
    let b = &mut net.shards[0];
    let key = b.accept(([127, 0, 0, 1], 2).into(), (), at);
    assert_eq!(b.ingest(key, &connect(id), at).1, Ingested::More);
    assert!(session_present(&net.output((0, key))), "resumed");
    assert!(
        has_publish_on(&net.output(watcher), &format!("w/{id}")),
        "the Will went out"
    );
    for _ in 0..4 {
        net.shards[0].begin_turn(at);
    }
    assert!(!net.shards[0].timers_backlog());
    assert!(
        !has_publish_on(&net.output(watcher), &format!("w/{id}")),
        "once"
    );
}

/// More sessions expire at once than a turn's timer budget: a client whose expiry the
/// budget left in the backlog comes back in that turn, and finds no session.
#[test]
fn a_session_expired_past_the_turns_timer_budget_is_not_resumed() {
    let mut net = Cores::new(1);
    let at = NOW_MS + 1_000;
    let connect = |id: &str| expiring_connect(id, 1);
    let held = |b: &crate::broker::Broker<()>, id: &str| b.sessions.find(id).is_some();
    let waiting = past_the_budget(&mut net, "e", connect, at, held);
    let b = &mut net.shards[0];
    let key = b.accept(([127, 0, 0, 1], 2).into(), (), at);
    assert_eq!(b.ingest(key, &connect(&waiting[0]), at).1, Ingested::More);
    assert!(!session_present(&net.output((0, key))), "a new session");
}
