//! Share-group moves in memory mode: a departing member's delivery is never lost where
//! staying with the member would have kept it (docs/persistence.md, "Share-group moves";
//! `share_log` checks the same moves on the log).

use super::{
    connect_packet, home_shard, publish_packet, stored_connect_packet, subscribe_packet, Cores,
    Ingested, NOW_MS,
};

/// A client `id` connects on its home shard (a stored session when `stored`, else a clean
/// one) and, with `share`, joins `$share/g/t` at QoS 1; the casts are carried.
fn join(c: &mut Cores, id: &str, stored: bool, share: bool) -> (usize, usize) {
    let home = home_shard(id, c.shards.len());
    let key = c.shards[home].accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let mut input = match stored {
        true => stored_connect_packet(id),
        false => connect_packet(id),
    };
    if share {
        input.extend(subscribe_packet("$share/g/t"));
    }
    let used = c.shards[home].ingest(key, &input, NOW_MS);
    assert_eq!(used, (input.len(), Ingested::More));
    c.settle();
    (home, key)
}

/// A clean publisher `id` sends `payload` on `t` at QoS 1.
fn publish(c: &mut Cores, id: &str, payload: &[u8]) {
    let link = join(c, id, false, false);
    c.send(link, &publish_packet("t", payload));
    c.settle();
}

/// Whether `out` holds `payload` (the payloads are unique in these tests).
fn holds(out: &[u8], payload: &[u8]) -> bool {
    out.windows(payload.len()).any(|w| w == payload)
}

/// The `k`-th client id (from 0) whose home is shard `home` of `shards`.
fn homed(home: usize, shards: usize, k: usize) -> String {
    (0..10_000)
        .map(|i| format!("m{i}"))
        .filter(|id| home_shard(id, shards) == home)
        .nth(k)
        .expect("ids hash to every shard")
}

/// Seed 1240 of the simulation with clean members, on the move path: a stored member A
/// goes offline while the other member B, a clean session, has its connection's close
/// pending (its network failed; the link closes at the end of the turn). The move picks B
/// (still online in the group), finds its link closing and no one else: B's session ends
/// with that close, so it cannot keep the delivery, and A must. Before, B's session
/// "kept" it, which for a clean session without a link drops it unseen, and A lost it.
#[test]
fn a_move_to_a_clean_member_whose_link_is_closing_stays_with_the_first() {
    let mut c = Cores::new(1);
    let a = join(&mut c, "a", true, true);
    let b = join(&mut c, "b", false, true);
    publish(&mut c, "p", b"moved-1");
    assert!(
        holds(&c.output(a), b"moved-1"),
        "A, first in the group, has it"
    );
    c.shards[0].close_link(b.1);
    assert!(c.shards[0].on_closed(a.1, NOW_MS).is_some());
    c.settle();
    let a = join(&mut c, "a", true, false);
    assert!(holds(&c.output(a), b"moved-1"), "A kept it for its return");
}

/// A stored member A (shard 0) goes offline and its delivery moves to the clean member B
/// (shard 1), whose session ended before the move arrived (shard 0 had not heard yet);
/// nobody else is online. Shard 1 sends it back to A, which keeps it as it would have
/// had the move found nobody on its own shard. Before, shard 1 dropped it.
#[test]
fn a_move_that_finds_nobody_on_another_shard_comes_back_to_the_first_member() {
    let mut c = Cores::new(2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    let a = join(&mut c, &ida, true, true);
    let b = join(&mut c, &idb, false, true);
    publish(&mut c, &homed(0, 2, 1), b"moved-2");
    assert!(
        holds(&c.output(a), b"moved-2"),
        "A, first in the group, has it"
    );
    assert!(c.shards[1].on_closed(b.1, NOW_MS).is_some());
    assert!(c.shards[0].on_closed(a.1, NOW_MS).is_some());
    c.settle();
    let a = join(&mut c, &ida, true, false);
    assert!(holds(&c.output(a), b"moved-2"), "A has it back");
}
