//! A share-group member going offline hands its deliveries to another member: the log
//! follows the move (docs/persistence.md, "Share-group moves"). Stored shard cores on one
//! simulated disk, the bus and the log's sync run by hand; what a power cut would keep is
//! read back from the disk's durable part.

use std::sync::Arc;

use super::{publish_packet, stored_connect_packet, string, with_len, Cores, NOW_MS, STORE_DIR};
use crate::broker::{Broker, Ingested};
use crate::config::Config;
use crate::store::{self, SimDisk};

/// `n` shard cores whose logs are on `disk` (empty), an in-flight window of one.
pub(super) fn stored_cores(disk: &SimDisk, n: usize) -> Cores {
    let cfg = Config {
        shards: n,
        max_inflight: 1,
        ..Config::default()
    };
    stored_cores_with(disk, cfg)
}

/// `stored_cores` with this configuration (`cfg.shards` of them).
pub(super) fn stored_cores_with(disk: &SimDisk, cfg: Config) -> Cores {
    use crate::store::{LiveState, Wal};
    let n = cfg.shards;
    let data = std::path::Path::new(STORE_DIR);
    store::install_on(disk, data, &vec![LiveState::default(); n]).expect("install");
    let cfg = Arc::new(cfg);
    let shards = (0..n)
        .map(|i| {
            let opts = super::manual_wal_options();
            let dir = store::layout::shard_dir(data, i);
            let wal = Wal::open_on(Arc::new(disk.clone()), &dir, opts, || {}).expect("log");
            let j = crate::broker::journal::Journal::new(wal, LiveState::default(), n, 0);
            let mut b = Broker::new(i, n, cfg.clone(), NOW_MS);
            b.attach_journal(j);
            b
        })
        .collect();
    Cores { shards }
}

/// The deliveries of each client in what `disk` would keep through a power cut now, as
/// (QoS, has a packet id), oldest first; a client without a session is absent.
pub(super) fn durable(disk: &SimDisk) -> std::collections::BTreeMap<String, Vec<(u8, bool)>> {
    let copy = Arc::new(disk.durable_copy());
    let rec = store::recover_all_on(copy, std::path::Path::new(STORE_DIR)).expect("recover");
    rec.state
        .sessions
        .iter()
        .map(|(id, s)| {
            let ds = s.deliveries.iter().map(|d| (d.qos, d.packet_id.is_some()));
            (id.to_owned(), ds.collect())
        })
        .collect()
}

/// Shard `i` ends a turn (its batch written, barriers and answers cast).
pub(super) fn end_turn(c: &mut Cores, i: usize) {
    c.shards[i].journal_end_turn(NOW_MS);
}

/// Shard `i`'s log syncs; whether there was anything to sync.
pub(super) fn sync(c: &mut Cores, i: usize) -> bool {
    let mut any = false;
    while c.shards[i].journal_background(true) {
        any = true;
    }
    any
}

/// Carry every cast waiting in shard `from`'s outbox.
/// One group commit of shard `i`: its turn's records written, synced, and what waited
/// for them released by the next turn.
fn commit(c: &mut Cores, i: usize) {
    end_turn(c, i);
    sync(c, i);
    end_turn(c, i);
}

pub(super) fn carry(c: &mut Cores, from: usize) {
    let casts = std::mem::take(&mut c.shards[from].effects().outbox);
    for (to, cast) in casts {
        c.shards[to].on_cast(cast, NOW_MS);
    }
}

/// Turns, syncs and casts until nothing is held or in transit.
pub(super) fn settle(c: &mut Cores) {
    for _ in 0..50 {
        let mut moved = false;
        for i in 0..c.shards.len() {
            end_turn(c, i);
            moved |= sync(c, i);
            end_turn(c, i);
            moved |= sync(c, i);
        }
        for i in 0..c.shards.len() {
            moved |= !c.shards[i].effects().outbox.is_empty();
            carry(c, i);
        }
        let held: usize = c.shards.iter().map(Broker::held_acks).sum();
        if !moved && held == 0 {
            return;
        }
    }
    panic!("the stored cores never settle");
}

/// A stored session `id` connects through its home shard and subscribes to each filter
/// at its QoS; returns (home shard, key).
pub(super) fn member(c: &mut Cores, id: &str, subs: &[(&str, u8)]) -> (usize, usize) {
    join(c, id, subs, true)
}

/// [`member`] for a clean session (3.1.1 Clean Session 1: nothing of it is logged).
fn clean_member(c: &mut Cores, id: &str, subs: &[(&str, u8)]) -> (usize, usize) {
    join(c, id, subs, false)
}

fn join(c: &mut Cores, id: &str, subs: &[(&str, u8)], stored: bool) -> (usize, usize) {
    let home = crate::broker::home_shard(id, c.shards.len());
    let key = c.shards[home].accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let mut input = if stored {
        stored_connect_packet(id)
    } else {
        super::connect_packet(id)
    };
    for (i, (filter, qos)) in subs.iter().enumerate() {
        let mut body = vec![0, i as u8 + 1];
        body.extend(string(filter));
        body.push(*qos);
        input.extend(with_len(0x82, &body));
    }
    let used = c.shards[home].ingest(key, &input, NOW_MS);
    assert_eq!(used, (input.len(), Ingested::More));
    settle(c);
    (home, key)
}

/// The `k`-th client id (from 0) whose home is shard `home` of `shards`.
fn homed(home: usize, shards: usize, k: usize) -> String {
    (0..10_000)
        .map(|i| format!("c{i}"))
        .filter(|id| crate::broker::home_shard(id, shards) == home)
        .nth(k)
        .expect("ids hash to every shard")
}

/// A clean-session publisher homed on shard `at` connects and sends `t` at QoS `qos`
/// (1 or 2).
fn publish(c: &mut Cores, at: usize, qos: u8) {
    publish_unsettled(c, at, qos);
    settle(c);
}

/// [`publish`] without the turns after it; returns the publisher's link.
fn publish_unsettled(c: &mut Cores, at: usize, qos: u8) -> (usize, usize) {
    let key = c.shards[at].accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    let id = format!("pub-{}", homed(at, c.shards.len(), 0));
    let id = (0..10_000)
        .map(|i| format!("{id}-{i}"))
        .find(|id| crate::broker::home_shard(id, c.shards.len()) == at)
        .expect("ids hash to every shard");
    let mut input = super::connect_packet(&id);
    let mut p = publish_packet("t", b"m");
    p[0] = 0x30 | (qos << 1);
    input.extend(p);
    let (used, _) = c.shards[at].ingest(key, &input, NOW_MS);
    assert_eq!(used, input.len());
    (at, key)
}

/// Whether the publisher's link has been written its PUBACK (packet id 2) by now.
fn acked(c: &mut Cores, link: (usize, usize)) -> bool {
    c.output(link).windows(4).any(|w| w == [0x40, 2, 0, 2])
}

/// Shard `home` sees the connection `key` of a member end (its network failed).
pub(super) fn drop_link(c: &mut Cores, (home, key): (usize, usize)) {
    assert!(c.shards[home].on_closed(key, NOW_MS).is_some());
}

/// Both members on one shard: the departing member's in-flight delivery moves to the
/// other, and the log says so in one batch: after a power cut the first member does not
/// get it again.
#[test]
fn a_move_between_members_of_one_shard_is_logged_with_the_first_ones_end() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    let a = member(&mut c, "a", &[("$share/g/t", 1)]);
    member(&mut c, "b", &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    let before = durable(&disk);
    assert_eq!(
        before["a"],
        [(1, true)],
        "the first member has it in flight"
    );
    assert_eq!(before["b"], []);

    drop_link(&mut c, a);
    end_turn(&mut c, 0);
    assert_eq!(durable(&disk), before, "nothing durable yet");
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(after["a"], [], "gone from the first member");
    assert_eq!(after["b"], [(1, true)], "sent to the second");
}

/// Members on two shards: the departing member's end is logged only once the other
/// shard's records of the move are durable; until then a power cut leaves the delivery
/// with the first member (re-logged as queued), never with neither.
#[test]
fn a_move_to_another_shard_ends_the_first_delivery_only_once_the_peer_is_durable() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    member(&mut c, &idb, &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    assert_eq!(durable(&disk)[&ida], [(1, true)]);

    drop_link(&mut c, a);
    commit(&mut c, 0);
    let now = durable(&disk);
    assert_eq!(now[&ida], [(1, false)], "re-logged as queued at once");
    assert_eq!(now[&idb], [], "the move has not reached the peer");

    carry(&mut c, 0);
    end_turn(&mut c, 1);
    carry(&mut c, 1);
    commit(&mut c, 0);
    let now = durable(&disk);
    assert_eq!(
        now[&ida],
        [(1, false)],
        "held: the peer's records are not durable"
    );
    assert_eq!(now[&idb], []);

    sync(&mut c, 1);
    end_turn(&mut c, 1);
    assert_eq!(
        durable(&disk)[&idb],
        [(1, true)],
        "the peer's records are durable"
    );
    assert_eq!(
        durable(&disk)[&ida],
        [(1, false)],
        "both for now: a duplicate at most"
    );
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(after[&ida], [], "the drop followed the barrier");
    assert_eq!(after[&idb], [(1, true)]);
}

/// With no other member online the delivery stays with the departing member: an
/// in-flight one is logged queued again (its packet id ends).
#[test]
fn a_delivery_nobody_else_takes_stays_queued_with_the_member() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    let a = member(&mut c, "a", &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    assert_eq!(durable(&disk)["a"], [(1, true)]);
    drop_link(&mut c, a);
    settle(&mut c);
    assert_eq!(durable(&disk)["a"], [(1, false)]);
}

/// A session with a normal subscription and a share-group membership that match the same
/// message holds two deliveries of it; when the shared ones move, the log ends exactly
/// those, not the normal deliveries (which have another QoS). The message comes from
/// another shard, so the normal delivery is made first (its `Publish` cast is ahead of the
/// `ShareDeliver`): with one message id for both, ending "the oldest unsent delivery of
/// the message" would end the normal one.
#[test]
fn a_moved_shared_delivery_is_told_apart_from_a_normal_one_of_the_same_message() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ids, idb) = (homed(0, 2, 0), homed(0, 2, 1));
    let s = member(&mut c, &ids, &[("t", 2), ("$share/g/t", 1)]);
    // Window 1: m1's normal delivery is in flight, its shared one queued; m2's are both
    // queued, the normal one first.
    publish(&mut c, 1, 2);
    publish(&mut c, 1, 2);
    let before = durable(&disk);
    assert_eq!(
        before[&ids],
        [(2, true), (1, false), (2, false), (1, false)]
    );

    member(&mut c, &idb, &[("$share/g/t", 1)]);
    drop_link(&mut c, s);
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(
        after[&ids],
        [(2, true), (2, false)],
        "the normal deliveries stay"
    );
    assert_eq!(
        after[&idb],
        [(1, true), (1, false)],
        "the shared ones moved"
    );
}

/// A message is numbered for shares (`number_for_shares`) while it is its shard's alone;
/// one handed over already shared would keep share identity 0, so a debug build stops
/// there. Without the assertion this message went on unnumbered, silently.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "a message numbered for shares after it was shared")]
fn a_message_shared_before_it_is_numbered_for_shares_is_caught() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    member(&mut c, "s", &[("$share/g/t", 1)]);
    let msg = Arc::new(crate::session::Message::plain(
        "t",
        b"m",
        crate::protocol::QoS::AtLeastOnce,
    ));
    let _held = Arc::clone(&msg);
    c.shards[0].publish_shared(msg, NOW_MS);
}

/// A message sent to a member that went offline before it arrived, with no other member
/// online, waits in that member's session rather than being lost.
#[test]
fn a_shared_delivery_for_a_member_gone_offline_meanwhile_waits_for_it() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let ida = homed(1, 2, 0);
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    // Shard 0 has not heard yet that the member went offline when the message comes.
    drop_link(&mut c, a);
    publish(&mut c, 0, 1);
    assert_eq!(durable(&disk)[&ida], [(1, false)], "queued for its return");
}

/// A move that reaches a stored member gone offline meanwhile is queued there (durable
/// before the first member's end is logged) and moved on from there the same way: each
/// hop is durable before the one before it is logged gone.
#[test]
fn a_move_on_from_a_member_gone_offline_meanwhile_is_durable_hop_by_hop() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 3);
    let (ida, idb, idc) = (homed(0, 3, 0), homed(1, 3, 0), homed(2, 3, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    let b = member(&mut c, &idb, &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    assert_eq!(durable(&disk)[&ida], [(1, true)]);
    member(&mut c, &idc, &[("$share/g/t", 1)]);

    // B goes offline; shard 0 has not heard when A goes offline too and moves to B.
    drop_link(&mut c, b);
    drop_link(&mut c, a);
    end_turn(&mut c, 0);
    sync(&mut c, 0);
    carry(&mut c, 0);
    assert_eq!(durable(&disk)[&ida], [(1, false)]);
    // Shard 1: B takes it into its queue and moves it on to C (shard 2).
    commit(&mut c, 1);
    let now = durable(&disk);
    assert_eq!(now[&idb], [(1, false)], "durable with B before A's end");
    assert_eq!(now[&idc], []);
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(after[&ida], []);
    assert_eq!(after[&idb], [], "moved on");
    assert_eq!(after[&idc], [(1, true)]);
}

/// One shard core restarted from what `disk` would keep through a power cut now (its
/// durable part, recovered and installed), as `main` starts one.
fn restarted(disk: &SimDisk) -> (SimDisk, Cores) {
    let cfg = Config {
        shards: 1,
        max_inflight: 1,
        ..Config::default()
    };
    let (disk, b) = super::restarted_broker(disk, cfg);
    (disk, Cores { shards: vec![b] })
}

/// A shared delivery is logged with its group (`DeliveryShare`), so after a restart it is
/// still the group's: when its member, back online, goes offline again, it moves to
/// another member instead of staying.
#[test]
fn a_restored_shared_delivery_still_moves_when_its_member_goes_offline() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 1);
    member(&mut c, "a", &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    let copy = Arc::new(disk.durable_copy());
    let rec = store::recover_all_on(copy, std::path::Path::new(STORE_DIR)).expect("recover");
    let shares: Vec<_> = rec.state.sessions["a"]
        .deliveries
        .iter()
        .map(|d| d.share.clone())
        .collect();
    assert_eq!(shares, [Some(("g".to_string(), "t".to_string()))]);

    let (disk, mut c) = restarted(&disk);
    let a = member(&mut c, "a", &[]);
    member(&mut c, "b", &[("$share/g/t", 1)]);
    assert_eq!(durable(&disk)["a"], [(1, true)], "resent to the member");
    drop_link(&mut c, a);
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(after["a"], [], "moved, not kept");
    assert_eq!(after["b"], [(1, true)]);
}

/// A move sent to a clean member whose session ended before the move reached its shard
/// (shard 1) is bounced on to a stored member on a third shard (shard 2). Shard 1 logs
/// nothing of its own, so its barrier answer must wait for shard 2's records (its settle
/// token): before, the first member's end was durable while the third shard's records
/// were not, and a power cut lost the delivery.
#[test]
fn a_move_bounced_on_by_a_clean_members_shard_waits_for_the_third_shard() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 3);
    let (ida, idb, idc) = (homed(0, 3, 0), homed(1, 3, 0), homed(2, 3, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    assert_eq!(durable(&disk)[&ida], [(1, true)]);
    let b = clean_member(&mut c, &idb, &[("$share/g/t", 1)]);
    member(&mut c, &idc, &[("$share/g/t", 1)]);

    // B's session ends; shard 0 has not heard when A goes offline and moves to B.
    drop_link(&mut c, b);
    drop_link(&mut c, a);
    commit(&mut c, 0);
    assert_eq!(durable(&disk)[&ida], [(1, false)], "re-logged as queued");
    // Shard 1 bounces it on to C; shard 2 logs it but does not sync.
    for _ in 0..4 {
        for i in 0..3 {
            end_turn(&mut c, i);
            if i != 2 {
                sync(&mut c, i);
            }
            end_turn(&mut c, i);
            carry(&mut c, i);
        }
    }
    let now = durable(&disk);
    assert_eq!(now[&idc], [], "the third shard's records are not durable");
    assert_eq!(
        now[&ida],
        [(1, false)],
        "so the first member's end waits: a cut leaves it there"
    );
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(after[&ida], [], "gone once the third shard is durable");
    assert_eq!(after[&idc], [(1, true)]);
    assert!(!after.contains_key(&idb), "a clean session is never logged");
}

/// A publish routed to a clean member whose session ended meanwhile (shard 1) is bounced
/// back to a stored member on the publisher's own shard. Its records there come after the
/// turn the PUBACK was held in, so that turn's sync does not cover them: the PUBACK waits
/// for shard 1's barrier answer, which waits for the bounce's settle token.
#[test]
fn a_publish_bounced_back_to_its_own_shard_is_acknowledged_once_durable_there() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    // B first: shard 0's round robin picks it.
    let b = clean_member(&mut c, &idb, &[("$share/g/t", 1)]);
    member(&mut c, &ida, &[("$share/g/t", 1)]);
    drop_link(&mut c, b);
    let p = publish_unsettled(&mut c, 0, 1);
    commit(&mut c, 0);
    carry(&mut c, 0);
    end_turn(&mut c, 1);
    carry(&mut c, 1);
    // Shard 0 takes the bounce into A's session (written, not synced) and hears from 1.
    end_turn(&mut c, 0);
    carry(&mut c, 0);
    end_turn(&mut c, 1);
    carry(&mut c, 1);
    end_turn(&mut c, 0);
    assert_eq!(durable(&disk)[&ida], [], "A's records are not durable yet");
    assert!(!acked(&mut c, p), "so the PUBACK waits");
    settle(&mut c);
    assert_eq!(durable(&disk)[&ida], [(1, true)]);
    assert!(acked(&mut c, p), "acknowledged once durable");
}

/// A member whose link closes at the end of a turn (after that turn's records and
/// barriers) moves its delivery to another shard then: the cast must still count for a
/// barrier, or the first member's end would wait only for barriers sent before the move.
#[test]
fn a_move_made_after_the_turns_end_still_waits_for_the_peer() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    member(&mut c, &idb, &[("$share/g/t", 1)]);
    assert_eq!(durable(&disk)[&ida], [(1, true)]);

    end_turn(&mut c, 0);
    drop_link(&mut c, a);
    carry(&mut c, 0);
    for _ in 0..4 {
        commit(&mut c, 0);
        carry(&mut c, 0);
        end_turn(&mut c, 1);
        carry(&mut c, 1);
    }
    let now = durable(&disk);
    assert_eq!(now[&idb], [], "the peer has not synced");
    assert_eq!(now[&ida], [(1, false)], "so the first member keeps it");
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(after[&ida], []);
    assert_eq!(after[&idb], [(1, true)]);
}

/// A move from stored member A (shard 0) to clean member B (shard 1), whose session
/// ended before the move arrived, with nobody else online: shard 1 sends it back to A
/// (with a settle token), and A keeps it, logged queued. Never with neither across the
/// way: A's old delivery is logged gone only after its new record is durable. Before,
/// shard 1 dropped it and A's end was logged after the barrier: lost, cut or not.
#[test]
fn a_move_that_finds_nobody_comes_back_to_the_first_member_durably() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    publish(&mut c, 0, 1);
    assert_eq!(durable(&disk)[&ida], [(1, true)]);
    let b = clean_member(&mut c, &idb, &[("$share/g/t", 1)]);

    drop_both_and_run(&mut c, b, a, || {
        assert!(
            !durable(&disk)[&ida].is_empty(),
            "a cut now would leave the delivery with nobody"
        );
    });
    assert_eq!(durable(&disk)[&ida], [(1, false)], "queued with A again");
    assert!(
        c.shards[1].settle_tokens_issued() > 0,
        "the return had a token"
    );
}

/// B's session ends, then A's network fails, and shard 0 has not heard of B's end when A
/// goes offline, so A's deliveries move to B. Six rounds of both shards' turns, each
/// written and synced, with `check` after every turn (what a power cut there would
/// keep), then everything settles.
fn drop_both_and_run(c: &mut Cores, b: (usize, usize), a: (usize, usize), mut check: impl FnMut()) {
    drop_link(c, b);
    drop_link(c, a);
    for _ in 0..6 {
        for i in 0..2 {
            commit(c, i);
            check();
            carry(c, i);
        }
    }
    settle(c);
}

/// `n` shard cores restarted from what `disk` would keep through a power cut now, as
/// `main` starts them: recovered, split by home shard, installed, restored, and each told
/// every other shard's restored interest before any runs; no cast carried yet.
fn restarted_cores(disk: &SimDisk, n: usize) -> (SimDisk, Cores) {
    use crate::store::Wal;
    let disk = disk.durable_copy();
    let data = std::path::Path::new(STORE_DIR);
    let shard_of = |s: &str| crate::broker::home_shard(s, n);
    let rec = store::recover_parts_on(&disk, data, n, shard_of, shard_of).expect("recover");
    store::install_on(&disk, data, &rec.parts).expect("install");
    let cfg = Arc::new(Config {
        shards: n,
        max_inflight: 1,
        ..Config::default()
    });
    let mut shards: Vec<Broker<()>> = Vec::new();
    for (i, part) in rec.parts.into_iter().enumerate() {
        let dir = store::layout::shard_dir(data, i);
        let opts = super::manual_wal_options();
        let wal = Wal::open_on(Arc::new(disk.clone()), &dir, opts, || {}).expect("log");
        let j = crate::broker::journal::Journal::new(wal, part, n, 0);
        let mut b = Broker::new(i, n, cfg.clone(), NOW_MS);
        b.attach_journal(j);
        b.restore_from_journal(&[], NOW_MS);
        shards.push(b);
    }
    let interest: Vec<crate::broker::RestoredInterest> =
        shards.iter().map(Broker::restored_interest).collect();
    for b in &mut shards {
        for (from, restored) in interest.iter().enumerate() {
            b.learn_restored_interest(from, restored);
        }
    }
    (disk, Cores { shards })
}

/// The members shard `at`'s replica holds for `$share/g/t`, as (home shard, online).
fn replica(c: &Cores, at: usize) -> Vec<(usize, bool)> {
    let groups = c.shards[at].routes.share_groups().get("t");
    let g = groups.and_then(|gs| gs.iter().find(|g| &*g.name == "g"));
    g.map(|g| g.members.iter().map(|m| (m.shard, m.online)).collect())
        .unwrap_or_default()
}

/// After a restart every shard holds a restored share-group member (offline) before it
/// drains a cast, as it holds every restored interest: a publish that enters another shard
/// first finds the group with no member online (owed to nobody, and reported so), not a
/// replica without the group. Before, the membership came only with the member's shard's
/// `Share` casts, which a shard may route client input before draining (a connection
/// handed over by a third shard): power seed 775 of the simulation, whose oracle then
/// missed the report (`docs/simulation.md`, "Bugs it found").
#[test]
fn a_restored_share_group_member_is_known_to_every_shard_before_any_runs() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    member(&mut c, &homed(1, 2, 0), &[("$share/g/t", 1)]);
    assert_eq!(replica(&c, 0), [(1, true)]);

    let (_disk, mut c) = restarted_cores(&disk, 2);
    assert_eq!(
        replica(&c, 0),
        [(1, false)],
        "known, offline, before any cast"
    );
    c.shards[0].effects().share_unplaced = Some(Vec::new());
    publish_unsettled(&mut c, 0, 1);
    let unplaced = c.shards[0]
        .effects()
        .share_unplaced
        .take()
        .unwrap_or_default();
    assert_eq!(
        unplaced.len(),
        1,
        "routed with no member online: owed to nobody"
    );
    let casts = std::mem::take(&mut c.shards[0].effects().outbox);
    let delivered = casts
        .iter()
        .any(|(_, cast)| matches!(cast, crate::broker::Cast::ShareDeliver(_)));
    assert!(!delivered, "no offline member is picked");
    for (to, cast) in casts {
        c.shards[to].on_cast(cast, NOW_MS);
    }
    settle(&mut c);
    assert_eq!(replica(&c, 0), [(1, false)], "the casts change nothing");
}

/// Power seed 60,111 of the simulation: a queued QoS 2 delivery of stored member A
/// (shard 0) moves to clean member B (shard 1), whose session ended before the move
/// arrived; nobody else is online, so it comes back to A. A's old record's end is held
/// until the move is durable, and that waits for the return's records: the return must
/// take the old record over, not add a second one, or a cut in between leaves A two
/// deliveries of the message (handed to its application twice). Fails without the fix.
#[test]
fn a_move_that_comes_back_to_its_member_is_logged_once() {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 2)]);
    publish(&mut c, 0, 2);
    publish(&mut c, 0, 2);
    let both = [(2, true), (2, false)];
    assert_eq!(durable(&disk)[&ida], both, "one in flight, one queued");
    let b = clean_member(&mut c, &idb, &[("$share/g/t", 2)]);

    drop_both_and_run(&mut c, b, a, || {
        assert_eq!(
            durable(&disk)[&ida],
            both,
            "a cut now leaves A each message once"
        );
    });
    assert_eq!(durable(&disk)[&ida], both, "the queued one is A's again");
    assert!(c.shards[1].settle_tokens_issued() > 0, "it came back");
}

/// Power seed 80,663 of the simulation: stored member A (shard 0) has a QoS 2 message in
/// flight (at its QoS 1); its network fails and the delivery moves to stored member B
/// (shard 1, QoS 2). A power cut after B's record is durable and before A's end leaves
/// the delivery with both (a duplicate across members, which the move allows). After the
/// restart both are back and each is sent its copy; when A's network fails again, its
/// copy moves to B, which holds the same message already: B must not take it a second
/// time. Each copy was restored from its own shard's log, so only the share identity the
/// two logs kept tells them apart. Fails without the fix (B holds it twice: one in
/// flight, one queued).
#[test]
fn a_move_onto_a_member_holding_the_restored_message_is_dropped() {
    let (disk, ida, idb) = cut_during_a_move_between_shards();
    let (disk, mut c) = restarted_cores(&disk, 2);
    member(&mut c, &idb, &[]);
    let a = member(&mut c, &ida, &[]);
    assert_eq!(durable(&disk)[&ida], [(1, true)], "each is sent its copy");
    assert_eq!(durable(&disk)[&idb], [(2, true)]);
    drop_link(&mut c, a);
    settle(&mut c);
    let after = durable(&disk);
    assert_eq!(after[&ida], [], "A's copy ended as after any move");
    assert_eq!(after[&idb], [(2, true)], "B holds the message once");
}

/// Stored members A (shard 0, QoS 1) and B (shard 1, QoS 2) of group `g`; a QoS 2
/// message goes to A, A's network fails and the delivery moves to B; the store as a power
/// cut leaves it after B's record is durable and before A's end is: with both. Returns
/// that store and the two client ids.
fn cut_during_a_move_between_shards() -> (SimDisk, String, String) {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    member(&mut c, &idb, &[("$share/g/t", 2)]);
    publish(&mut c, 0, 2);
    assert_eq!(durable(&disk)[&ida], [(1, true)]);

    drop_link(&mut c, a);
    commit(&mut c, 0);
    carry(&mut c, 0);
    commit(&mut c, 1);
    let cut = durable(&disk);
    assert_eq!(cut[&ida], [(1, false)], "A's end is not durable yet");
    assert_eq!(cut[&idb], [(2, true)], "B's record is");
    (disk, ida, idb)
}

/// The packet id of the first QoS 2 PUBLISH in `out` (MQTT 3.1.1 framing).
fn first_qos2_publish_pid(out: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at < out.len() {
        let first = out[at];
        let (mut len, mut shift, mut i) = (0usize, 0, at + 1);
        loop {
            let b = *out.get(i)?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = out.get(i..i + len)?;
        if first >> 4 == 3 && (first >> 1) & 3 == 2 {
            let topic = usize::from(u16::from_be_bytes([body[0], body[1]]));
            return Some(u16::from_be_bytes([body[2 + topic], body[3 + topic]]));
        }
        at = i + len;
    }
    None
}

/// Member `b` answers its QoS 2 copy's PUBLISH with PUBREC and, after the PUBREL,
/// PUBCOMP, each followed by every shard's turns.
fn completes_its_qos2_copy(c: &mut Cores, b: (usize, usize)) {
    let pid = first_qos2_publish_pid(&c.output(b)).expect("B is sent its copy");
    let [hi, lo] = pid.to_be_bytes();
    c.send(b, &[0x50, 2, hi, lo]);
    settle(c);
    c.send(b, &[0x70, 2, hi, lo]);
    settle(c);
}

/// Member A (link `a`, client `ida`) leaves, so its copy moves onto member B, which has
/// had the message already: A's copy ends, and B neither holds it again nor is sent it.
fn a_leaves_and_b_is_not_given_it_again(
    c: &mut Cores,
    disk: &SimDisk,
    (a, ida): ((usize, usize), &str),
    (b, idb): ((usize, usize), &str),
) {
    drop_link(c, a);
    settle(c);
    let after = durable(disk);
    assert_eq!(after[ida], [], "A's copy ended as after any move");
    assert_eq!(after[idb], [], "B is not given the message again");
    assert_eq!(
        first_qos2_publish_pid(&c.output(b)),
        None,
        "nor sent it again"
    );
}

/// As power seed 80,663, but the second member completes its restored copy (PUBREC,
/// PUBREL, PUBCOMP) before the first member's copy moves onto it: holding nothing of the
/// message any more, it must still not take it a second time. Fails without the
/// completed shared deliveries the journal remembers (B is sent it again, under a new id).
#[test]
fn a_move_onto_a_member_that_completed_the_restored_message_is_dropped() {
    let (disk, ida, idb) = cut_during_a_move_between_shards();
    let (disk, mut c) = restarted_cores(&disk, 2);
    let b = member(&mut c, &idb, &[]);
    let a = member(&mut c, &ida, &[]);
    completes_its_qos2_copy(&mut c, b);
    assert_eq!(durable(&disk)[&idb], [], "B completed its copy");
    let _ = c.output(b);

    a_leaves_and_b_is_not_given_it_again(&mut c, &disk, (a, &ida), (b, &idb));
}

/// As [`cut_during_a_move_between_shards`], but B completes its copy before the cut
/// (PUBREC, PUBREL, PUBCOMP, its end durable) while A's end still waits for shard 1's
/// barrier answer, which shard 0 has not received: the store then holds A's copy alone.
/// Returns that store and the two client ids.
fn cut_after_the_second_member_completed() -> (SimDisk, String, String) {
    let disk = SimDisk::default();
    let mut c = stored_cores(&disk, 2);
    let (ida, idb) = (homed(0, 2, 0), homed(1, 2, 0));
    let a = member(&mut c, &ida, &[("$share/g/t", 1)]);
    let b = member(&mut c, &idb, &[("$share/g/t", 2)]);
    publish(&mut c, 0, 2);
    let _ = c.output(b);

    drop_link(&mut c, a);
    commit(&mut c, 0);
    carry(&mut c, 0);
    // Shard 1's turns only: its answers to shard 0 stay in its outbox.
    commit(&mut c, 1);
    let pid = first_qos2_publish_pid(&c.output(b)).expect("B is sent the moved delivery");
    let [hi, lo] = pid.to_be_bytes();
    c.send(b, &[0x50, 2, hi, lo]);
    commit(&mut c, 1);
    c.send(b, &[0x70, 2, hi, lo]);
    commit(&mut c, 1);
    let cut = durable(&disk);
    assert_eq!(cut[&ida], [(1, false)], "A's end is not durable yet");
    assert_eq!(cut[&idb], [], "B's end is");
    assert_eq!(
        completed_marks(&disk),
        1,
        "B's completion is kept: A's copy is restored"
    );
    (disk, ida, idb)
}

/// The second member completes its copy before the cut, and only the first member's
/// copy is restored: when it moves onto the second member again, that member must not
/// take it a second time (a QoS 2 message handed to its application twice). Fails
/// without the durable mark of the completion (`Record::ShareCompleted`, decision 0023):
/// B is sent the message again, under a new id.
#[test]
fn a_move_onto_a_member_that_completed_its_copy_before_the_cut_is_dropped() {
    let (disk, ida, idb) = cut_after_the_second_member_completed();
    let (disk, mut c) = restarted_cores(&disk, 2);
    let b = member(&mut c, &idb, &[]);
    let a = member(&mut c, &ida, &[]);
    assert_eq!(durable(&disk)[&ida], [(1, true)], "A is sent its copy");
    let _ = c.output(b);

    a_leaves_and_b_is_not_given_it_again(&mut c, &disk, (a, &ida), (b, &idb));
    assert_eq!(
        completed_marks(&disk),
        0,
        "no copy is left: recovery drops the mark"
    );
}

/// The completed shared deliveries (`Record::ShareCompleted`) recovery would restore from
/// what `disk` keeps through a power cut now, over every session of two shards.
fn completed_marks(disk: &SimDisk) -> usize {
    let data = std::path::Path::new(STORE_DIR);
    let shard_of = |s: &str| crate::broker::home_shard(s, 2);
    let rec = store::recover_parts_on(&disk.durable_copy(), data, 2, shard_of, shard_of);
    let parts = rec.expect("recover").parts;
    let sessions = parts.iter().flat_map(|p| p.sessions.values());
    sessions.map(|s| s.share_completed.len()).sum()
}

/// As [`a_move_onto_a_member_that_completed_the_restored_message_is_dropped`], with a
/// second power cut after B completed its restored copy and before A's copy moves: the
/// journal's memory of the completion is gone with the restart, and the log's mark of it
/// (`Record::ShareCompleted`, decision 0023) still drops the move. Fails without the mark.
#[test]
fn a_completed_restored_copy_is_remembered_through_another_restart() {
    let (disk, ida, idb) = cut_during_a_move_between_shards();
    let (disk, mut c) = restarted_cores(&disk, 2);
    let b = member(&mut c, &idb, &[]);
    member(&mut c, &ida, &[]);
    completes_its_qos2_copy(&mut c, b);
    assert_eq!(durable(&disk)[&idb], [], "B completed its copy");
    assert_eq!(durable(&disk)[&ida], [(1, true)], "A holds its own");

    let (disk, mut c) = restarted_cores(&disk, 2);
    let b = member(&mut c, &idb, &[]);
    let a = member(&mut c, &ida, &[]);
    let _ = c.output(b);
    a_leaves_and_b_is_not_given_it_again(&mut c, &disk, (a, &ida), (b, &idb));
}
