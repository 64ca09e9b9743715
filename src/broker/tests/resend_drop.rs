//! A resumption resends every in-flight delivery; one it cannot write (over the client's
//! Maximum Packet Size) is dropped and logged done, as every other dropped delivery is,
//! so a restart does not bring it back (docs/persistence.md, "Held deliveries").

use super::held_release::{connect_v5, packets_v5, publish, publisher, send, subscribe_v5};
use super::share_log::{drop_link, durable, settle, stored_cores};
use super::NOW_MS;
use crate::config::Config;
use crate::store::SimDisk;

/// A stored 5.0 session has a QoS 1 delivery of 100 bytes of payload in flight, its
/// connection fails, and it resumes with a Maximum Packet Size of 80: the DUP PUBLISH is
/// too large to resend, so the delivery is dropped. Its end is in the log: what a power
/// cut keeps no longer holds it, and a broker restarted from it sends it no more. Before,
/// only the session forgot it; the log kept it in flight, and a restart resent it.
#[test]
fn an_in_flight_delivery_too_large_to_resend_is_logged_done() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    let accept = |c: &mut super::Cores, port| {
        let key = c.shards[0].accept(([127, 0, 0, 1], port).into(), (), NOW_MS);
        (0, key)
    };
    let sub = accept(&mut c, 1);
    let mut input = connect_v5("sub", None);
    input.extend(subscribe_v5("t", 1));
    send(&mut c, sub, &input);
    settle(&mut c);
    c.output(sub);
    let publ = publisher(&mut c);

    let payload = [b'x'; 100];
    send(&mut c, publ, &publish(1, 1, &payload));
    settle(&mut c);
    assert_eq!(packets_v5(&c.output(sub)), [(3, 1, 0, payload.to_vec())]);
    assert_eq!(durable(&disk)["sub"], [(1, true)], "in flight");

    drop_link(&mut c, sub);
    settle(&mut c);
    let sub = accept(&mut c, 3);
    send(&mut c, sub, &connect_v5("sub", Some(80)));
    settle(&mut c);
    let got = packets_v5(&c.output(sub));
    assert_eq!(got.len(), 1, "the CONNACK, no PUBLISH: {got:?}");
    assert_eq!(got[0].0, 2);
    assert_eq!(durable(&disk)["sub"], [], "logged done");

    // A broker restarted from what a power cut keeps does not resend it.
    let (_disk, mut b) = super::restarted_broker(&disk, Config::default());
    let key = b.accept(([127, 0, 0, 1], 4).into(), (), NOW_MS);
    super::send(&mut b, key, &connect_v5("sub", None));
    for _ in 0..4 {
        while b.journal_background(true) {}
        super::end_turn(&mut b, NOW_MS);
    }
    let got = packets_v5(&super::output(&mut b, key));
    assert_eq!(got.len(), 1, "the CONNACK, nothing resent: {got:?}");
    assert_eq!(got[0].0, 2);
}
