//! Held acknowledgements leave in the order they were held, once each, only once their
//! records are durable, also when later turns hold them in lists emptied by earlier
//! releases (`Journal::reuse_acks`).

use super::{
    connect_packet, end_turn, id_homed, output, send, stored_broker, stored_connect_packet, string,
    subscribe_packet, with_len, NOW_MS,
};
use crate::broker::Broker;
use crate::store::SimDisk;

/// PUBLISH QoS 1 to `t` with packet id `pid`.
fn publish(pid: u8) -> Vec<u8> {
    let mut body = string("t");
    body.extend_from_slice(&[0, pid, b'x']);
    with_len(0x32, &body)
}

fn pubacks(pids: impl IntoIterator<Item = u8>) -> Vec<u8> {
    pids.into_iter().flat_map(|p| [0x40, 2, 0, p]).collect()
}

/// Sync and end turns until no ack is held (the turns' batches deferred behind a sync
/// are written and synced in turn); at most a few rounds.
fn settle(b: &mut Broker<()>) {
    for _ in 0..8 {
        while b.journal_background(true) {}
        end_turn(b, NOW_MS);
        if b.held_acks() == 0 {
            return;
        }
    }
    panic!("acks still held after 8 syncs: {}", b.held_acks());
}

#[test]
fn acks_held_in_reused_lists_leave_in_order_once_each() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    // A stored subscriber, so that every PUBLISH logs records its PUBACK waits for.
    let sub = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    send(&mut b, sub, &stored_connect_packet(&id_homed(0, 1)));
    send(&mut b, sub, &subscribe_packet("t"));
    settle(&mut b);
    let publ = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    send(&mut b, publ, &connect_packet("publisher"));
    end_turn(&mut b, NOW_MS);
    assert_eq!(output(&mut b, publ).len(), 4, "CONNACK");
    let mut pid = 0u8;
    // More rounds than lists are kept, of one, two and three turns held before a sync,
    // with more acks in some turns than the list an earlier turn left.
    for round in 0..12usize {
        let mut held = Vec::new();
        for turn in 0..=round % 3 {
            for _ in 0..=(round + turn) % 5 {
                pid += 1;
                send(&mut b, publ, &publish(pid));
                held.push(pid);
            }
            end_turn(&mut b, NOW_MS);
            assert!(
                output(&mut b, publ).is_empty(),
                "round {round}: not durable"
            );
        }
        assert_eq!(b.held_acks(), held.len(), "round {round}");
        settle(&mut b);
        assert_eq!(output(&mut b, publ), pubacks(held), "round {round}");
        assert_eq!(b.held_acks(), 0, "round {round}: each ack left once");
    }
    end_turn(&mut b, NOW_MS);
    assert!(output(&mut b, publ).is_empty(), "nothing left over");
}
