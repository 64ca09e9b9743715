//! A stored delivery whose PUBLISH waits for its record ("held", `InFlight::held`) is
//! released by the hold it was given, never by its packet id, which may have been freed
//! and given to another delivery by the time the release comes (docs/persistence.md,
//! "Held deliveries").

use super::share_log::{end_turn, member, settle, stored_cores, sync};
use super::{string, with_len, Cores, NOW_MS};
use crate::broker::Ingested;

/// PUBLISH of `payload` to `t` at QoS `qos` (1 or 2) under packet id `pid`.
fn publish(qos: u8, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string("t");
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(payload);
    with_len(0x30 | (qos << 1), &body)
}

/// An acknowledgement of type `first` (PUBACK 0x40, PUBREC 0x50, PUBCOMP 0x70) of `pid`.
fn ack(first: u8, pid: u16) -> Vec<u8> {
    let [hi, lo] = pid.to_be_bytes();
    vec![first, 2, hi, lo]
}

fn send(c: &mut Cores, (shard, key): (usize, usize), bytes: &[u8]) {
    let used = c.shards[shard].ingest(key, bytes, NOW_MS);
    assert_eq!(used, (bytes.len(), Ingested::More));
}

/// The QoS 1/2 PUBLISHes in `out` as (QoS, packet id, payload); other packets skipped.
fn deliveries(out: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
    let mut got = Vec::new();
    let mut rest = out;
    while rest.len() >= 2 {
        let (first, len) = (rest[0], usize::from(rest[1]));
        assert!(len < 128, "one-byte remaining length");
        let body = &rest[2..2 + len];
        let qos = (first >> 1) & 3;
        if first & 0xf0 == 0x30 && qos > 0 {
            let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let pid = u16::from_be_bytes([body[2 + tlen], body[3 + tlen]]);
            got.push((qos, pid, body[4 + tlen..].to_vec()));
        }
        rest = &rest[2 + len..];
    }
    got
}

/// A held QoS 2 delivery is freed early by a stray acknowledgement of its packet id (the
/// client acknowledges a PUBLISH it never got), and the session's packet ids go round
/// (65,534 QoS 1 deliveries, each acknowledged) while its release still waits for the
/// next turn's end. The id then goes to a new held QoS 2 delivery, whose record is not
/// durable yet. The old release must not send the new delivery: a power cut would then
/// lose the record of a PUBLISH the client has (resent after it under another packet
/// id: a duplicate of a QoS 2 message). It leaves once its own record is durable.
#[test]
fn a_release_never_sends_a_later_delivery_that_took_its_packet_id() {
    let disk = crate::store::SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    let sub = member(&mut c, "sub", &[("t", 2)]);
    let publ = (
        0,
        c.shards[0].accept(([127, 0, 0, 1], 2).into(), (), NOW_MS),
    );
    send(&mut c, publ, &super::connect_packet("pub"));
    settle(&mut c);
    c.output(sub);

    send(&mut c, publ, &publish(2, 1, b"old"));
    end_turn(&mut c, 0);
    assert!(sync(&mut c, 0), "the held delivery's record is durable");
    assert_eq!(
        deliveries(&c.output(sub)),
        [],
        "released at the next turn's end"
    );

    // The same turn goes on: the stray acknowledgements free packet id 1.
    send(&mut c, sub, &ack(0x50, 1));
    send(&mut c, sub, &ack(0x70, 1));
    for pid in 2..=u16::MAX {
        send(&mut c, publ, &publish(1, 2, b"q1"));
        let got = deliveries(&c.output(sub));
        assert_eq!(got, [(1, pid, b"q1".to_vec())], "sent at once, in order");
        send(&mut c, sub, &ack(0x40, pid));
    }
    send(&mut c, publ, &publish(2, 3, b"new"));
    assert_eq!(deliveries(&c.output(sub)), [], "held for its record");

    end_turn(&mut c, 0);
    assert_eq!(
        deliveries(&c.output(sub)),
        [],
        "the old hold's release does not send the new delivery"
    );
    assert!(sync(&mut c, 0));
    end_turn(&mut c, 0);
    assert_eq!(
        deliveries(&c.output(sub)),
        [(2, 1, b"new".to_vec())],
        "its own release sends it, once, under the reused id"
    );
}
