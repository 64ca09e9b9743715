//! A bridge changed by a reload: `retire` hands its messages to the new bridge
//! (`carry_over`), whose first packets are checked byte by byte.

use super::*;

/// A reload that changes a bridge hands its messages to a new bridge (`retire`, then
/// `carry_over`). A stored QoS 2 message whose PUBLISH, or PUBREL, still waited for its
/// record keeps waiting in the new bridge: nothing of it is written, even at the new
/// bridge's first connect, until a record batch of the new bridge is durable (which, in
/// log order, covers the old bridge's records and the hand-over's). Sent before, a power
/// cut could bring the message back without its packet id and send it under another.
#[test]
fn a_reloaded_bridge_keeps_a_qos2_message_waiting_for_its_record() {
    let out2 = "connection c\naddress 127.0.0.1:1883\ntopic a/# out 2\nremote_clientid br\nnotifications false";
    let mut old = bridge(out2);
    old.set_logged(true);
    up(&mut old, 0);
    let p = payload(b"m");
    assert_eq!(
        old.offer(1, "a/1", &p, QoS::ExactlyOnce, false, false),
        Offer::Accepted(Some(1))
    );
    assert_eq!(written(&mut old, 1), Vec::<u8>::new(), "waits for `Sent`");
    let _ = old.take_records();
    old.records_durable(2, old.record_batches());
    let out = written(&mut old, 2);
    assert_eq!(
        out[0], 0x34,
        "the PUBLISH once `Sent` is durable: {out:02x?}"
    );
    // PUBREC for the first: its PUBREL waits for `Received`; the second's PUBLISH for `Sent`.
    old.receive(3, &[0x50, 2, 0, 1]);
    assert_eq!(
        old.offer(3, "a/2", &p, QoS::ExactlyOnce, false, false),
        Offer::Accepted(Some(2))
    );
    assert_eq!(written(&mut old, 3), Vec::<u8>::new(), "both wait");
    let records = old.take_records();
    assert!(
        matches!(
            records.as_slice(),
            [
                Record::Received { seq: 1 },
                Record::Enqueued { seq: 2, .. },
                Record::Sent { seq: 2, .. }
            ]
        ),
        "{records:?}"
    );

    // The reload, before that batch is durable.
    let held = old.retire(4);
    let _ = written(&mut old, 4);
    let mut new = bridge(out2);
    new.set_logged(true);
    new.carry_over(held, true);
    new.tick(5);
    let _ = actions(&mut new);
    new.socket_connected(5);
    assert_eq!(written(&mut new, 5)[0], 0x10, "CONNECT");
    new.receive(5, &CONNACK_SESSION);
    assert_eq!(
        written(&mut new, 5),
        Vec::<u8>::new(),
        "neither the PUBREL nor the PUBLISH before their records are durable"
    );
    assert_eq!(new.depth(), (0, 2));
    // Its first record batch must be held even with no record in it.
    assert!(new.take_records().is_empty());
    let batch = new.record_batches();
    assert!(new.waits_for_batch(batch));
    new.records_durable(6, batch);
    assert!(!new.waits_for_batch(batch));
    let out = written(&mut new, 6);
    assert_eq!(out[..4], [0x62, 2, 0, 1], "PUBREL first: {out:02x?}");
    assert_eq!(out[4] & 0xf6, 0x34, "then the PUBLISH: {out:02x?}");
    assert!(out.windows(3).any(|w| w == b"a/2"));

    // In memory mode (nothing logged) nothing waits.
    let mut plain = bridge(out2);
    up(&mut plain, 0);
    plain.offer(1, "a/1", &p, QoS::ExactlyOnce, false, false);
    let _ = written(&mut plain, 1);
    let held = plain.retire(2);
    let mut next = bridge(out2);
    next.carry_over(held, true);
    next.tick(3);
    let _ = actions(&mut next);
    next.socket_connected(3);
    let _ = written(&mut next, 3);
    next.receive(3, &CONNACK_SESSION);
    assert_eq!(
        written(&mut next, 3)[0],
        0x3c,
        "PUBLISH QoS 2 with DUP at once"
    );
}

/// Two remotes (`address`), the same client id: a message in flight on the old bridge.
const OLD: &str = "connection c\naddress 127.0.0.1:1883 127.0.0.2:1883\ntopic a/# out 2\nremote_clientid br\nnotifications false\nrestart_timeout 2";

/// `OLD` with `line` instead of the line that starts with its first word.
fn changed(line: &str) -> String {
    let key = line.split(' ').next().unwrap_or(line);
    let kept = OLD.lines().filter(|l| !l.starts_with(key));
    kept.chain([line]).collect::<Vec<_>>().join("\n")
}

/// The old bridge sends `a/1` at `qos` and is replaced by a reload with `new_text`; the
/// new bridge connects (no session on the remote) and its first bytes are returned.
fn carried_over(new_text: &str, qos: QoS) -> (Bridge, Vec<u8>) {
    let mut old = bridge(OLD);
    up(&mut old, 0);
    assert_eq!(
        old.offer(1, "a/1", &payload(b"m"), qos, false, false),
        Offer::Accepted(Some(1))
    );
    assert_eq!(written(&mut old, 1)[0] & 0xf8, 0x30, "in flight");
    let held = old.retire(2);
    let same = config(OLD).same_remote(&config(new_text), "host");
    let mut new = bridge(new_text);
    new.carry_over(held, same);
    new.tick(3);
    let _ = actions(&mut new);
    new.socket_connected(3);
    assert_eq!(written(&mut new, 3)[0], 0x10, "CONNECT");
    new.receive(3, &CONNACK_OK);
    let out = written(&mut new, 3);
    (new, out)
}

/// DUP means "this packet id may have reached this receiver before". A message the old
/// bridge had in flight is resent with DUP 1 when the changed bridge sends to the same
/// remote (the same addresses in any order, the same remote client id; `cleansession`
/// does not matter, as for a reconnect), and with DUP 0 to another remote, which never
/// saw it. Before, it always went with DUP 1 (and the integration test saw DUP 0 only when
/// the message was still queued at the change).
#[test]
fn a_carried_over_message_has_dup_only_when_the_remote_is_the_same() {
    let publish = |flags: u8| vec![flags, 8, 0, 3, b'a', b'/', b'1', 0, 1, b'm'];
    let cases = [
        (OLD.to_string(), true),
        (changed("topic a/# out 1"), true),
        (changed("address 127.0.0.2:1883 127.0.0.1:1883"), true),
        (changed("cleansession true"), true),
        (changed("address 127.0.0.3:1883"), false),
        (changed("address 127.0.0.1:1883"), false),
        (changed("remote_clientid other"), false),
    ];
    for (text, same) in cases {
        let dup = if same { 0x08 } else { 0 };
        let (_, out) = carried_over(&text, QoS::AtLeastOnce);
        assert_eq!(out, publish(0x32 | dup), "{text}");
    }
    // Once the new remote has had it, a reconnect resends it with DUP, as always.
    let (mut new, out) = carried_over(&changed("address 127.0.0.3:1883"), QoS::AtLeastOnce);
    assert_eq!(out, publish(0x32));
    new.socket_closed(4, "reset by peer");
    let _ = actions(&mut new);
    open(&mut new, 2004, &addr("127.0.0.3", 1883));
    new.receive(2004, &CONNACK_SESSION);
    assert_eq!(written(&mut new, 2004), publish(0x3a));
}

/// With a log, a carried-over QoS 2 PUBLISH waits for the new bridge's first record batch
/// (see above) and follows the same rule whether that batch is durable before or after the
/// new connection is up. Before, it went with DUP 0 when the batch became durable while
/// connected and with DUP 1 when before: a race like the one the reload test saw.
#[test]
fn a_carried_over_qos2_message_waiting_for_its_record_follows_the_same_rule() {
    for (text, dup) in [
        (OLD.to_string(), 0x08),
        (changed("address 127.0.0.3:1883"), 0),
    ] {
        for durable_first in [false, true] {
            let mut old = bridge(OLD);
            old.set_logged(true);
            up(&mut old, 0);
            old.offer(1, "a/1", &payload(b"m"), QoS::ExactlyOnce, false, false);
            let _ = old.take_records();
            old.records_durable(1, old.record_batches());
            assert_eq!(written(&mut old, 1)[0], 0x34, "in flight");
            let held = old.retire(2);
            let mut new = bridge(&text);
            new.set_logged(true);
            new.carry_over(held, config(OLD).same_remote(&config(&text), "host"));
            let _ = new.take_records();
            let batch = new.record_batches();
            if durable_first {
                new.records_durable(3, batch);
            }
            new.tick(3);
            let _ = actions(&mut new);
            new.socket_connected(3);
            assert_eq!(written(&mut new, 3)[0], 0x10, "CONNECT");
            new.receive(3, &CONNACK_SESSION);
            if !durable_first {
                assert!(new.output().is_empty(), "waits for its record");
                new.records_durable(4, batch);
            }
            let out = written(&mut new, 4);
            assert_eq!(out[0], 0x34 | dup, "{text} {durable_first}: {out:02x?}");
        }
    }
}
