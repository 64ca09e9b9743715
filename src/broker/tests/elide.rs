//! Records that cancel before their batch is written (docs/persistence.md, "Records that
//! cancel"): a QoS 1 delivery its subscriber acknowledged while the batch holding it
//! waited for the previous batch's sync leaves nothing in the log, and a power cut before
//! or after recovers as if it had never been logged; the publisher's PUBACK still waits
//! for the batch.

use super::{
    connect_packet, end_turn, id_homed, output, send, stored_broker, stored_connect_packet, string,
    subscribe_packet, with_len, NOW_MS, STORE_DIR,
};
use crate::broker::Broker;
use crate::store::SimDisk;
use std::sync::Arc;

/// PUBLISH QoS 1 to `t` with packet id `pid`.
fn publish(pid: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = string("t");
    body.extend_from_slice(&[0, pid]);
    body.extend_from_slice(payload);
    with_len(0x32, &body)
}

fn puback(pid: u8) -> [u8; 4] {
    [0x40, 2, 0, pid]
}

/// A stored session homed on shard 0, subscribed to `t`, its CONNACK and SUBACK durable
/// (not yet read).
fn stored_subscriber(b: &mut Broker<()>) -> usize {
    let sub = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    send(b, sub, &stored_connect_packet(&id_homed(0, 1)));
    send(b, sub, &subscribe_packet("t"));
    end_turn(b, NOW_MS);
    sync_and_turn(b);
    sub
}

/// Sync the log until it has nothing left to sync, then end a turn.
fn sync_and_turn(b: &mut Broker<()>) {
    while b.journal_background(true) {}
    end_turn(b, NOW_MS);
}

/// A delivery kept through a power cut: its message's payload, its packet id.
type Kept = (Vec<u8>, Option<u16>);

/// Client `id`'s deliveries (message payload, packet id) and the messages stored, in what
/// `disk` would keep through a power cut now.
fn after_cut(disk: &SimDisk, id: &str) -> (Vec<Kept>, usize) {
    let copy = Arc::new(disk.durable_copy());
    let rec = crate::store::recover_all_on(copy, std::path::Path::new(STORE_DIR));
    let state = rec.expect("recover").state;
    let s = state.sessions.get(id).expect("the subscriber's session");
    let ds = s.deliveries.iter().map(|d| {
        let m = state.messages.get(&d.msg).expect("a delivery's message");
        (m.payload.to_vec(), d.packet_id.map(|p| p.get()))
    });
    (ds.collect(), state.messages.len())
}

#[test]
fn a_delivery_acknowledged_before_its_batch_is_written_writes_nothing() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    let sub_id = id_homed(0, 1);
    let sub = stored_subscriber(&mut b);
    assert_eq!(output(&mut b, sub).len(), 4 + 5, "CONNACK and SUBACK");
    let publ = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    send(&mut b, publ, &connect_packet("publisher"));
    end_turn(&mut b, NOW_MS);
    output(&mut b, publ);

    // Turn 1: message A, written at the end of the turn (nothing else waits for a sync).
    send(&mut b, publ, &publish(1, b"A"));
    end_turn(&mut b, NOW_MS);
    // Turn 2: message B, while A's batch waits for its sync: B's records stay unwritten.
    send(&mut b, publ, &publish(2, b"B"));
    end_turn(&mut b, NOW_MS);
    let to_sub = output(&mut b, sub);
    assert_eq!(
        to_sub.len(),
        2 * 8,
        "both PUBLISHes went out (QoS 1 does not wait)"
    );
    assert!(output(&mut b, publ).is_empty(), "no PUBACK before durable");
    // Turn 3: the subscriber acknowledges B: its delivery's records cancel.
    send(&mut b, sub, &puback(2));
    end_turn(&mut b, NOW_MS);
    let cancelled = |b: &Broker<()>| b.journal.as_ref().map(|j| j.cancelled_records());
    assert_eq!(cancelled(&b), Some(2), "B's delivery and its done record");
    assert_eq!(
        after_cut(&disk, &sub_id),
        (vec![], 0),
        "a cut now: nothing yet"
    );

    // A's batch syncs; the next turn writes B's batch, its message record cancelled too.
    while b.journal_background(true) {}
    assert_eq!(
        after_cut(&disk, &sub_id),
        (vec![(b"A".to_vec(), Some(1))], 1)
    );
    end_turn(&mut b, NOW_MS);
    assert_eq!(cancelled(&b), Some(3), "and B's message record");
    assert_eq!(
        output(&mut b, publ),
        puback(1),
        "A is durable: its PUBACK only"
    );
    // B's batch (empty) syncs: B's PUBACK goes, and a cut recovers A's delivery alone.
    sync_and_turn(&mut b);
    assert_eq!(output(&mut b, publ), puback(2));
    assert_eq!(
        after_cut(&disk, &sub_id),
        (vec![(b"A".to_vec(), Some(1))], 1)
    );

    // A acknowledged after its batch was written is logged done as before.
    send(&mut b, sub, &puback(1));
    end_turn(&mut b, NOW_MS);
    sync_and_turn(&mut b);
    assert_eq!(cancelled(&b), Some(3));
    assert_eq!(after_cut(&disk, &sub_id), (vec![], 0));
}

/// A delivery queued behind a closed in-flight window, then sent, then acknowledged, all
/// before its batch is written: its queued, sent and done records cancel, and so does the
/// message's record.
#[test]
fn a_queued_then_sent_delivery_acknowledged_before_its_batch_writes_nothing() {
    let disk = SimDisk::default();
    let cfg = crate::config::Config {
        max_inflight: 1,
        ..crate::config::Config::default()
    };
    let mut b = super::stored_broker_with(&disk, cfg);
    let sub_id = id_homed(0, 1);
    let sub = stored_subscriber(&mut b);
    output(&mut b, sub);
    // A stored publisher: its session's record is written, and waits for its sync.
    let publ = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    send(&mut b, publ, &stored_connect_packet("publisher"));
    end_turn(&mut b, NOW_MS);

    // A goes out at once; B waits in the queue (window of one). Nothing is written yet.
    send(&mut b, publ, &publish(1, b"A"));
    send(&mut b, publ, &publish(2, b"B"));
    end_turn(&mut b, NOW_MS);
    let a = output(&mut b, sub);
    assert_eq!((a.len(), &a[7..]), (8, &b"A"[..]), "A only");
    send(&mut b, sub, &puback(a[6]));
    end_turn(&mut b, NOW_MS);
    let cancelled = |b: &Broker<()>| b.journal.as_ref().map(|j| j.cancelled_records());
    assert_eq!(
        cancelled(&b),
        Some(2),
        "A's queued-and-sent and done records"
    );
    let bb = output(&mut b, sub);
    assert_eq!((bb.len(), &bb[7..]), (8, &b"B"[..]), "then B");
    send(&mut b, sub, &puback(bb[6]));
    end_turn(&mut b, NOW_MS);
    assert_eq!(cancelled(&b), Some(5), "B's queued, sent and done records");

    while b.journal_background(true) {}
    end_turn(&mut b, NOW_MS);
    assert_eq!(cancelled(&b), Some(7), "and both messages' records");
    assert_eq!(
        after_cut(&disk, &sub_id),
        (vec![], 0),
        "a cut before the sync"
    );
    assert_eq!(
        output(&mut b, publ),
        [0x20, 2, 0, 0],
        "the CONNACK, no PUBACK yet"
    );
    sync_and_turn(&mut b);
    assert_eq!(output(&mut b, publ), [puback(1), puback(2)].concat());
    assert_eq!(after_cut(&disk, &sub_id), (vec![], 0), "a cut after it");
}
