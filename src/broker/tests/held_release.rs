//! A stored delivery whose PUBLISH waits for its record ("held", `InFlight::held`) is
//! released by the hold it was given, never by its packet id, which may have been freed
//! and given to another delivery by the time the release comes; and an acknowledgement
//! of its packet id before then is ignored, as one of an unknown id is: the client was
//! never sent it (docs/persistence.md, "Held deliveries").

use super::share_log::{
    drop_link, durable, end_turn, member, settle, stored_cores, stored_cores_with, sync,
};
use super::{string, with_len, Cores, NOW_MS};
use crate::broker::Ingested;
use crate::config::Config;
use crate::protocol::{self, Packet, Properties, ReasonCode, Version};
use crate::store::SimDisk;

/// PUBLISH of `payload` to `t` at QoS `qos` (1 or 2) under packet id `pid`.
pub(super) fn publish(qos: u8, pid: u16, payload: &[u8]) -> Vec<u8> {
    publish_to("t", qos, pid, payload)
}

/// [`publish`] to `topic`.
fn publish_to(topic: &str, qos: u8, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(payload);
    with_len(0x30 | (qos << 1), &body)
}

/// An acknowledgement of type `first` (PUBACK 0x40, PUBREC 0x50, PUBCOMP 0x70) of `pid`.
fn ack(first: u8, pid: u16) -> Vec<u8> {
    let [hi, lo] = pid.to_be_bytes();
    vec![first, 2, hi, lo]
}

pub(super) fn send(c: &mut Cores, (shard, key): (usize, usize), bytes: &[u8]) {
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

/// A clean-session publisher "pub" on shard 0 (one shard), connected and settled.
pub(super) fn publisher(c: &mut Cores) -> (usize, usize) {
    let publ = (
        0,
        c.shards[0].accept(([127, 0, 0, 1], 2).into(), (), NOW_MS),
    );
    send(c, publ, &super::connect_packet("pub"));
    settle(c);
    publ
}

/// Stray acknowledgements of held deliveries (the client acknowledges PUBLISHes it was
/// never sent): a PUBREC and a PUBCOMP of a held QoS 2 delivery, a PUBACK of the QoS 1
/// one held behind it. Each is ignored, as one of an unknown packet id is: the log keeps
/// both deliveries, and both reach the client, in order, when their hold is released.
/// Before, the PUBREC moved the QoS 2 delivery to "PUBREL sent" and the PUBCOMP ended
/// it, the PUBACK ended the QoS 1 one, each logged done: neither was ever sent.
#[test]
fn a_stray_acknowledgement_of_a_held_delivery_is_ignored_and_it_still_arrives() {
    let disk = SimDisk::default();
    let cfg = Config {
        shards: 1,
        max_inflight: 4,
        ..Config::default()
    };
    let mut c = stored_cores_with(&disk, cfg);
    let sub = member(&mut c, "sub", &[("t", 2)]);
    let publ = publisher(&mut c);
    c.output(sub);

    // A stored QoS 2 delivery is held for its record, the QoS 1 one behind it too.
    send(&mut c, publ, &publish(2, 1, b"two"));
    send(&mut c, publ, &publish(1, 2, b"one"));
    assert_eq!(deliveries(&c.output(sub)), [], "both held");
    send(&mut c, sub, &ack(0x50, 1));
    send(&mut c, sub, &ack(0x70, 1));
    send(&mut c, sub, &ack(0x40, 2));
    end_turn(&mut c, 0);
    assert!(sync(&mut c, 0));
    assert_eq!(
        durable(&disk)["sub"],
        [(2, true), (1, true)],
        "the stray acknowledgements ended nothing"
    );
    end_turn(&mut c, 0);
    assert_eq!(
        deliveries(&c.output(sub)),
        [(2, 1, b"two".to_vec()), (1, 2, b"one".to_vec())],
        "both sent on their release"
    );

    // Now the acknowledgements are real.
    send(&mut c, sub, &ack(0x50, 1));
    send(&mut c, sub, &ack(0x40, 2));
    settle(&mut c);
    assert_eq!(c.output(sub), [0x62, 2, 0, 1], "PUBREL, once durable");
    send(&mut c, sub, &ack(0x70, 1));
    settle(&mut c);
    assert_eq!(durable(&disk)["sub"], [], "both done");
}

/// A 5.0 CONNECT of stored session `id` (Session Expiry 1 h), with this Maximum Packet
/// Size if any.
pub(super) fn connect_v5(id: &str, max_packet: Option<u32>) -> Vec<u8> {
    let c = protocol::Connect {
        version: Version::V5,
        clean_start: false,
        keep_alive: 60,
        client_id: id,
        will: None,
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: Some(3_600),
            maximum_packet_size: max_packet,
            ..Properties::default()
        },
    };
    let mut out = Vec::new();
    protocol::encode(&Packet::Connect(c), Version::V5, &mut out);
    out
}

/// A 5.0 SUBSCRIBE (packet id 1, no properties) to `filter` at QoS `qos`.
pub(super) fn subscribe_v5(filter: &str, qos: u8) -> Vec<u8> {
    let mut body = vec![0, 1, 0];
    body.extend(string(filter));
    body.push(qos);
    with_len(0x82, &body)
}

/// What a 5.0 client reads in `out`: each packet as its type (first byte's high nibble),
/// packet id (0 if none), reason code (acks; 0 otherwise) and payload (PUBLISH).
pub(super) fn packets_v5(mut out: &[u8]) -> Vec<(u8, u16, u8, Vec<u8>)> {
    let mut got = Vec::new();
    while !out.is_empty() {
        let Ok(protocol::Decoded::Packet { packet, len }) =
            protocol::decode(out, Version::V5, usize::MAX)
        else {
            panic!("a whole packet: {out:?}");
        };
        let pid = |p: protocol::PacketId| p.get();
        got.push(match packet {
            Packet::Publish(p) => (3, p.packet_id.map_or(0, pid), 0, p.payload.to_vec()),
            Packet::PubRel(a) => (6, pid(a.packet_id), a.reason.to_u8(), Vec::new()),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) => {
                (out[0] >> 4, pid(a.packet_id), a.reason.to_u8(), Vec::new())
            }
            _ => (out[0] >> 4, 0, 0, Vec::new()),
        });
        out = &out[len..];
    }
    got
}

/// The same through a 5.0 client: a stray PUBREC of a held QoS 2 delivery is answered as
/// one of an unknown packet id (PUBREL, 0x92 Packet Identifier not found) at once, and the
/// delivery is sent when released; then its real PUBREC moves it on (PUBREL, success).
#[test]
fn a_stray_pubrec_of_a_held_delivery_is_answered_as_for_an_unknown_packet_id() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    let sub = (
        0,
        c.shards[0].accept(([127, 0, 0, 1], 1).into(), (), NOW_MS),
    );
    let mut input = connect_v5("sub", None);
    input.extend(subscribe_v5("t", 2));
    send(&mut c, sub, &input);
    settle(&mut c);
    c.output(sub);
    let publ = publisher(&mut c);

    send(&mut c, publ, &publish(2, 1, b"two"));
    let not_found = ReasonCode::PacketIdentifierNotFound.to_u8();
    let unknown = packets_v5(&c.output(sub));
    assert_eq!(unknown, [], "held");
    send(&mut c, sub, &ack(0x50, 1));
    assert_eq!(
        packets_v5(&c.output(sub)),
        [(6, 1, not_found, Vec::new())],
        "answered as an unknown packet id"
    );
    end_turn(&mut c, 0);
    assert!(sync(&mut c, 0));
    end_turn(&mut c, 0);
    assert_eq!(
        packets_v5(&c.output(sub)),
        [(3, 1, 0, b"two".to_vec())],
        "sent on its release"
    );
    send(&mut c, sub, &ack(0x50, 1));
    settle(&mut c);
    assert_eq!(packets_v5(&c.output(sub)), [(6, 1, 0, Vec::new())]);
}

/// A held shared QoS 1 delivery leaves its window unsent (its member's connection fails
/// and nobody else is in the group: it is queued again for the member's return), and the
/// session's packet ids go round (65,533 QoS 1 deliveries, each acknowledged) while its
/// release still waits for its turn's record. The id then goes to a new held QoS 2
/// delivery, whose record is not durable yet. The old release must not send the new
/// delivery: a power cut would then lose the record of a PUBLISH the client has (resent
/// after it under another packet id: a duplicate of a QoS 2 message). It leaves once its
/// own record is durable. (A stray acknowledgement of the held delivery freed its id
/// before acknowledgements of held entries were ignored.)
#[test]
fn a_release_never_sends_a_later_delivery_that_took_its_packet_id() {
    let disk = SimDisk::default();
    let cfg = Config {
        shards: 1,
        max_inflight: 2,
        max_write_buffer: 64 << 20,
        ..Config::default()
    };
    let mut c = stored_cores_with(&disk, cfg);
    let sub = member(&mut c, "sub", &[("q", 2), ("$share/g/t", 1)]);
    let publ = publisher(&mut c);
    c.output(sub);

    // A QoS 2 delivery, held for its record (packet id 1); its turn's end writes it.
    send(&mut c, publ, &publish_to("q", 2, 1, b"first"));
    end_turn(&mut c, 0);
    assert!(sync(&mut c, 0));
    // A shared QoS 1 delivery, held behind it (packet id 2); the turn's end releases the
    // first (its record is durable), not this one (written, not durable).
    send(&mut c, publ, &publish_to("t", 1, 2, b"shared"));
    end_turn(&mut c, 0);
    assert_eq!(deliveries(&c.output(sub)), [(2, 1, b"first".to_vec())]);

    // The member's connection fails: the held shared delivery leaves its window. It
    // comes back at once, and gets the first delivery again and the shared one under
    // a new id.
    drop_link(&mut c, sub);
    let sub = (
        0,
        c.shards[0].accept(([127, 0, 0, 1], 3).into(), (), NOW_MS),
    );
    send(&mut c, sub, &super::stored_connect_packet("sub"));
    assert_eq!(
        deliveries(&c.output(sub)),
        [(2, 1, b"first".to_vec()), (1, 3, b"shared".to_vec())]
    );
    end_turn(&mut c, 0);

    // The next turn: packet id 2 comes round (1 is still in flight).
    send(&mut c, sub, &ack(0x40, 3));
    for pid in 4..=u16::MAX {
        send(&mut c, publ, &publish_to("q", 1, 2, b"q1"));
        let got = deliveries(&c.output(sub));
        assert_eq!(got, [(1, pid, b"q1".to_vec())], "sent at once, in order");
        send(&mut c, sub, &ack(0x40, pid));
    }
    send(&mut c, publ, &publish_to("q", 2, 3, b"new"));
    assert_eq!(deliveries(&c.output(sub)), [], "held for its record");

    assert!(sync(&mut c, 0));
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
        [(2, 2, b"new".to_vec())],
        "its own release sends it, once, under the reused id"
    );
}
