//! The broker driven without sockets or threads: several shard cores in one test, bytes
//! in, casts carried by hand, bytes out. This is the interface a simulation drives.

use std::sync::Arc;

use super::{home_shard, Broker, Ingested};
use crate::config::Config;

const NOW_MS: u64 = 1_000;

/// Shard cores of one broker, with the bus carried by hand.
struct Cores {
    shards: Vec<Broker<()>>,
}

impl Cores {
    fn new(n: usize) -> Cores {
        let cfg = Arc::new(Config {
            shards: n,
            ..Config::default()
        });
        Cores {
            shards: (0..n)
                .map(|i| Broker::new(i, n, cfg.clone(), NOW_MS))
                .collect(),
        }
    }

    /// Carry casts between shards until none is left; returns how many moved.
    fn settle(&mut self) -> usize {
        let mut moved = 0;
        for _round in 0..100 {
            let mut any = false;
            for i in 0..self.shards.len() {
                let casts = std::mem::take(&mut self.shards[i].effects().outbox);
                for (to, cast) in casts {
                    self.shards[to].on_cast(cast, NOW_MS);
                    moved += 1;
                    any = true;
                }
            }
            if !any {
                return moved;
            }
        }
        panic!("casts never settle");
    }

    /// A client connects on shard `at` with `id`, and is handed to its home shard as the
    /// event loop would. Returns (home shard, key there).
    fn connect(&mut self, at: usize, id: &str) -> (usize, usize) {
        let peer = ([127, 0, 0, 1], 1883).into();
        let bytes = connect_packet(id);
        let key = self.shards[at].accept(peer, (), NOW_MS);
        let (used, end) = self.shards[at].ingest(key, &bytes, NOW_MS);
        let home = home_shard(id, self.shards.len());
        if home == at {
            assert_eq!((used, end), (bytes.len(), Ingested::More));
            return (at, key);
        }
        assert_eq!((used, end), (0, Ingested::Handoff(home)), "handoff");
        assert!(self.shards[at].on_closed(key, NOW_MS).is_some());
        let key = self.shards[home].accept(peer, (), NOW_MS);
        let (used, end) = self.shards[home].ingest(key, &bytes, NOW_MS);
        assert_eq!((used, end), (bytes.len(), Ingested::More));
        (home, key)
    }

    fn send(&mut self, (shard, key): (usize, usize), bytes: &[u8]) {
        let (used, end) = self.shards[shard].ingest(key, bytes, NOW_MS);
        assert_eq!((used, end), (bytes.len(), Ingested::More));
    }

    /// Everything written to a connection so far, as the transport would receive it.
    fn output(&mut self, (shard, key): (usize, usize)) -> Vec<u8> {
        let mut out = Vec::new();
        let c = self.shards[shard].links_mut().conn_mut(key);
        let c = c.expect("connection exists");
        c.tx.flush_to(&mut out, usize::MAX)
            .expect("a Vec takes everything");
        out
    }
}

/// A client id whose home is shard `home` of `shards`.
fn id_homed(home: usize, shards: usize) -> String {
    (0..1000)
        .map(|i| format!("client-{i}"))
        .find(|id| home_shard(id, shards) == home)
        .expect("some id hashes to every shard")
}

fn with_len(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "one-byte remaining length");
    let mut v = vec![first, body.len() as u8];
    v.extend_from_slice(body);
    v
}

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// CONNECT, MQTT 3.1.1, clean session, keepalive 60 s.
fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    body.extend(string(id));
    with_len(0x10, &body)
}

/// SUBSCRIBE packet id 1 to `filter` at QoS 1.
fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend(string(filter));
    body.push(1);
    with_len(0x82, &body)
}

/// PUBLISH QoS 1, packet id 2.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(&[0, 2]);
    body.extend_from_slice(payload);
    with_len(0x32, &body)
}

const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

/// A subscriber on one shard, a publisher on another, each connecting through the other
/// shard first (handoff): the SUBACK waits for the peer's interest ack, the PUBACK is
/// written, and the message crosses the bus to the subscriber.
#[test]
fn publish_crosses_shards_without_sockets() {
    let mut net = Cores::new(2);
    let sub = net.connect(1, &id_homed(0, 2));
    let publ = net.connect(0, &id_homed(1, 2));
    assert_eq!(
        (sub.0, publ.0),
        (0, 1),
        "each client reached its home shard"
    );
    assert_eq!(net.output(sub), CONNACK_OK);
    assert_eq!(net.output(publ), CONNACK_OK);

    net.send(sub, &subscribe_packet("t/#"));
    assert!(
        net.output(sub).is_empty(),
        "SUBACK waits for the peer's interest ack"
    );
    assert!(net.settle() >= 2, "interest out, ack back");
    assert_eq!(net.output(sub), [0x90, 3, 0, 1, 1], "SUBACK granting QoS 1");

    net.send(publ, &publish_packet("t/x", b"hello"));
    assert_eq!(net.output(publ), [0x40, 2, 0, 2], "PUBACK");
    assert_eq!(net.settle(), 1, "one cast for the one interested shard");
    let got = net.output(sub);
    assert_eq!(got.first(), Some(&0x32), "a QoS 1 PUBLISH: {got:02x?}");
    assert!(got.ends_with(b"hello"));
}

/// A CONNECT deadline closes the link through the effects, never directly.
#[test]
fn silent_connection_is_closed_through_effects() {
    let mut net = Cores::new(1);
    let b = &mut net.shards[0];
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let due = NOW_MS + b.config().connect_timeout_ms;
    b.on_timers(due - 1);
    assert!(!b.effects().has_closing());
    b.on_timers(due);
    let mut closing = Vec::new();
    b.effects().take_closing(&mut closing);
    assert_eq!(closing, [key]);
    assert_eq!(b.on_closed(key, due), Some(()));
    assert!(b.links().is_empty());
}

/// Feed `chunks` to a fresh single-shard core as a driver must: keep what `ingest` did not
/// consume and put the next chunk after it. Returns everything written back.
fn run_chunks(chunks: &[&[u8]]) -> Vec<u8> {
    let mut net = Cores::new(1);
    let key = net.shards[0].accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let mut pending: Vec<u8> = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        let (used, end) = net.shards[0].ingest(key, &pending, NOW_MS);
        assert_eq!(end, Ingested::More);
        pending.drain(..used);
    }
    assert!(pending.is_empty(), "every packet consumed");
    net.output((0, key))
}

/// Input split at any byte gives the same output as input in one piece.
#[test]
fn input_split_anywhere_gives_the_same_output() {
    let mut input = connect_packet(&id_homed(0, 1));
    input.extend(subscribe_packet("me/#"));
    input.extend(publish_packet("me/x", b"echo"));
    let whole = run_chunks(&[&input]);
    assert!(whole.starts_with(&CONNACK_OK));
    let echoed = whole.windows(4).any(|w| w == b"echo");
    assert!(echoed, "own subscription delivers: {whole:02x?}");
    assert!(whole.ends_with(&[0x40, 2, 0, 2]), "then the PUBACK");
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(run_chunks(&[a, b]), whole, "split at {cut}");
    }
}

/// The data directory of the stored brokers below, on their simulated disk.
const STORE_DIR: &str = "/data";

/// The log options of the brokers these tests run by hand: 1 MiB segments, every batch
/// synced, no checkpoint, the sync run by the test ([`Broker::journal_background`]).
fn manual_wal_options() -> crate::store::WalOptions {
    use crate::store::{Background, CheckpointPolicy, SyncMode, WalOptions};
    WalOptions {
        segment_bytes_max: 1 << 20,
        sync: SyncMode::Always,
        checkpoint: CheckpointPolicy {
            log_bytes_max: u64::MAX,
            interval_s: 0,
        },
        background: Background::Manual,
    }
}

/// A one-shard broker (`cfg`) restarted from what `disk` would keep through a power cut
/// now (its durable part, recovered and installed), as `main` starts one; and its disk.
fn restarted_broker(
    disk: &crate::store::SimDisk,
    cfg: Config,
) -> (crate::store::SimDisk, Broker<()>) {
    use crate::store;
    let disk = disk.durable_copy();
    let data = std::path::Path::new(STORE_DIR);
    let rec = store::recover_parts_on(&disk, data, 1, |_| 0, |_| 0).expect("recover");
    store::install_on(&disk, data, &rec.parts).expect("install");
    let part = rec.parts.into_iter().next().expect("one part");
    let dir = store::layout::shard_dir(data, 0);
    let wal = store::Wal::open_on(Arc::new(disk.clone()), &dir, manual_wal_options(), || {})
        .expect("log");
    let j = super::journal::Journal::new(wal, part, 1, 0);
    let mut b = Broker::new(0, 1, Arc::new(Config { shards: 1, ..cfg }), NOW_MS);
    b.attach_journal(j);
    b.restore_from_journal(&[], NOW_MS);
    (disk, b)
}

/// A one-shard broker whose log is on `disk` (empty), its sync run by hand
/// ([`Broker::journal_background`]), as `sim::driver` starts one.
fn stored_broker(disk: &crate::store::SimDisk) -> Broker<()> {
    stored_broker_with(disk, Config::default())
}

/// [`stored_broker`] with `cfg` (one shard).
fn stored_broker_with(disk: &crate::store::SimDisk, cfg: Config) -> Broker<()> {
    use crate::store::{self, LiveState, Wal};
    let data = std::path::Path::new(STORE_DIR);
    store::install_on(disk, data, &[LiveState::default()]).expect("install");
    let opts = manual_wal_options();
    let dir = store::layout::shard_dir(data, 0);
    let wal = Wal::open_on(Arc::new(disk.clone()), &dir, opts, || {}).expect("open log");
    let j = super::journal::Journal::new(wal, LiveState::default(), 1, 0);
    let cfg = Arc::new(Config { shards: 1, ..cfg });
    let mut b = Broker::new(0, 1, cfg, NOW_MS);
    b.attach_journal(j);
    b
}

/// Whether client `id` has a session in what `disk` would keep through a power cut now.
fn stored_after_power_cut(disk: &crate::store::SimDisk, id: &str) -> bool {
    let copy = Arc::new(disk.durable_copy());
    let rec = crate::store::recover_all_on(copy, std::path::Path::new(STORE_DIR));
    rec.expect("recover").state.sessions.contains_key(id)
}

/// CONNECT, MQTT 3.1.1, Clean Session 0 (a stored session), keepalive 60 s.
fn stored_connect_packet(id: &str) -> Vec<u8> {
    let mut p = connect_packet(id);
    p[9] = 0x00;
    p
}

const PINGREQ: [u8; 2] = [0xc0, 0];
const PINGRESP: [u8; 2] = [0xd0, 0];

/// One turn's end as a driver runs it, then the links it would flush and close.
fn end_turn(b: &mut Broker<()>, now: u64) -> (Vec<usize>, Vec<usize>) {
    b.journal_end_turn(now);
    let (mut dirty, mut closing) = (Vec::new(), Vec::new());
    b.effects().take_dirty(&mut dirty);
    b.effects().take_closing(&mut closing);
    for &k in &dirty {
        if let Some(c) = b.links_mut().conn_mut(k) {
            super::Effects::flushed(&mut c.link);
        }
    }
    (dirty, closing)
}

/// Feed `bytes` to connection `key` at [`NOW_MS`]: all taken, the connection kept.
fn send(b: &mut Broker<()>, key: usize, bytes: &[u8]) {
    assert_eq!(b.ingest(key, bytes, NOW_MS), (bytes.len(), Ingested::More));
}

/// What connection `key` has to write.
fn output(b: &mut Broker<()>, key: usize) -> Vec<u8> {
    let mut out = Vec::new();
    b.drain_output(key, &mut out);
    out
}

/// A stored session's CONNACK does not leave before the session's record is durable, and
/// what the client pipelined behind its CONNECT is answered behind the CONNACK.
#[test]
fn connack_of_a_stored_session_waits_until_its_record_is_durable() {
    let disk = crate::store::SimDisk::default();
    let mut b = stored_broker(&disk);
    let id = id_homed(0, 1);
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let mut input = stored_connect_packet(&id);
    input.extend_from_slice(&PINGREQ);
    assert_eq!(b.ingest(key, &input, NOW_MS), (input.len(), Ingested::More));
    let held = |b: &Broker<()>| b.links().get(key).is_some_and(|l| l.output_held());
    assert!(held(&b), "the CONNACK waits for the session's record");

    // Written but not synced: still held, and a power cut now would lose the session.
    end_turn(&mut b, NOW_MS);
    assert!(held(&b));
    assert!(!stored_after_power_cut(&disk, &id));

    assert!(b.journal_background(true), "the log syncs");
    assert!(stored_after_power_cut(&disk, &id));
    let (dirty, _) = end_turn(&mut b, NOW_MS);
    assert!(!held(&b), "durable: released");
    assert_eq!(dirty, [key], "and flushed this turn");
    let mut out = Vec::new();
    b.drain_output(key, &mut out);
    assert_eq!(out, [&CONNACK_OK[..], &PINGRESP[..]].concat(), "in order");
}

/// Memory mode, and a clean session that changes nothing stored, answer at once.
#[test]
fn clean_sessions_and_memory_mode_do_not_wait() {
    let disk = crate::store::SimDisk::default();
    let mut stored = stored_broker(&disk);
    let mut memory = Cores::new(1).shards.remove(0);
    let id = id_homed(0, 1);
    for (b, connect) in [
        (&mut stored, connect_packet(&id)),
        (&mut memory, stored_connect_packet(&id)),
    ] {
        let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
        assert_eq!(b.ingest(key, &connect, NOW_MS).1, Ingested::More);
        assert!(!b.links().get(key).is_some_and(|l| l.output_held()));
        let mut out = Vec::new();
        b.drain_output(key, &mut out);
        assert_eq!(out, CONNACK_OK);
    }
    assert_eq!(stored.held_acks(), 0, "nothing waits in the journal");
}

/// A clean start that ends a stored session changes the store: its CONNACK waits too.
#[test]
fn a_clean_start_over_a_stored_session_waits_for_its_end() {
    let disk = crate::store::SimDisk::default();
    let mut b = stored_broker(&disk);
    let id = id_homed(0, 1);
    let first = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let connect = stored_connect_packet(&id);
    assert_eq!(b.ingest(first, &connect, NOW_MS).1, Ingested::More);
    end_turn(&mut b, NOW_MS);
    b.journal_background(true);
    end_turn(&mut b, NOW_MS);
    assert!(stored_after_power_cut(&disk, &id));

    let second = b.accept(([127, 0, 0, 1], 2).into(), (), NOW_MS);
    assert_eq!(
        b.ingest(second, &connect_packet(&id), NOW_MS).1,
        Ingested::More
    );
    assert!(b.links().get(second).is_some_and(|l| l.output_held()));
    end_turn(&mut b, NOW_MS);
    b.journal_background(true);
    end_turn(&mut b, NOW_MS);
    assert!(!b.links().get(second).is_some_and(|l| l.output_held()));
    assert!(
        !stored_after_power_cut(&disk, &id),
        "the session's end is durable"
    );
}

/// A link that is to close while its output is held stays until the output is released,
/// then closes with everything written before the close flushed in order (a delivery
/// behind the CONNACK).
#[test]
fn a_close_while_held_waits_for_the_output_and_keeps_its_order() {
    let disk = crate::store::SimDisk::default();
    let mut b = stored_broker(&disk);
    let id = id_homed(0, 1);
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let mut input = stored_connect_packet(&id);
    input.extend(subscribe_packet("me/#"));
    let mut body = string("me/x");
    body.extend_from_slice(b"echo");
    let qos0_publish = with_len(0x30, &body);
    input.extend_from_slice(&qos0_publish);
    input.extend_from_slice(&[0xe0, 0]); // DISCONNECT
    let (_, end) = b.ingest(key, &input, NOW_MS);
    assert_eq!(end, Ingested::Close);
    let (_, closing) = end_turn(&mut b, NOW_MS);
    assert_eq!(closing, [key]);
    assert!(b.defer_close(key, NOW_MS), "held: not closed now");
    assert!(b.links().get(key).is_some(), "the link stays");
    // Later turns: still waiting, and the keepalive does not close it twice.
    b.on_timers(NOW_MS + 100);
    assert_eq!(end_turn(&mut b, NOW_MS + 100).1, Vec::<usize>::new());

    b.journal_background(true);
    let (_, closing) = end_turn(&mut b, NOW_MS + 100);
    assert_eq!(closing, [key], "released: back on the closing list");
    assert!(!b.defer_close(key, NOW_MS + 100));
    let mut out = Vec::new();
    b.drain_output(key, &mut out);
    // The SUBACK was held for the log like any ack: a link closing gets no more acks.
    assert_eq!(out, [&CONNACK_OK[..], &qos0_publish[..]].concat());
    assert_eq!(b.on_closed(key, NOW_MS + 100), Some(()));
}

/// A deferred close does not wait for ever (a log that cannot write): after
/// `CLOSE_HELD_WAIT_MS` the link closes without its output, so no CONNACK leaves early.
#[test]
fn a_close_held_too_long_goes_without_its_output() {
    let disk = crate::store::SimDisk::default();
    let mut b = stored_broker(&disk);
    let key = b.accept(([127, 0, 0, 1], 1).into(), (), NOW_MS);
    let input = stored_connect_packet(&id_homed(0, 1));
    assert_eq!(b.ingest(key, &input, NOW_MS).1, Ingested::More);
    b.close_link(key);
    end_turn(&mut b, NOW_MS);
    assert!(b.defer_close(key, NOW_MS));
    let due = NOW_MS + super::close::CLOSE_HELD_WAIT_MS;
    b.on_timers(due - 1);
    assert_eq!(end_turn(&mut b, due - 1).1, Vec::<usize>::new());
    b.on_timers(due);
    let (_, closing) = end_turn(&mut b, due);
    assert_eq!(closing, [key]);
    assert!(!b.defer_close(key, due));
    assert!(
        b.links().conn(key).is_some_and(|c| c.tx.is_empty()),
        "output dropped"
    );
    // The record becoming durable later changes nothing for the closed link.
    b.journal_background(true);
    assert_eq!(b.on_closed(key, due), Some(()));
    end_turn(&mut b, due);
}

mod cluster_late;
mod cluster_qos2;
mod cluster_recheck;
mod cluster_share;
mod due_timers;
mod elide;
mod held_acks;
mod held_release;
mod message_record;
mod qos2_log;
mod resend_drop;
mod restore;
mod share_log;
mod share_moves;
mod storm;
mod will_log;

/// A packet of type `first` with any remaining length.
fn with_varint_len(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        v.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

/// SUBSCRIBE packet id 1 to each of `filters` at QoS 0.
fn subscribe_qos0_packet(filters: &[String]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for f in filters {
        body.extend(string(f));
        body.push(0);
    }
    with_varint_len(0x82, &body)
}

/// PUBLISH QoS 0 with RETAIN set.
fn retained_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(payload);
    with_len(0x31, &body)
}

/// The QoS 0 PUBLISHes in `out` as (topic, RETAIN, payload); other packets are skipped.
fn publishes(out: &[u8]) -> Vec<(String, bool, Vec<u8>)> {
    let mut got = Vec::new();
    let mut rest = out;
    while let Some(&first) = rest.first() {
        let (mut len, mut shift, mut i) = (0usize, 0, 1);
        loop {
            let b = rest[i];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = &rest[i..i + len];
        if first & 0xf6 == 0x30 {
            let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = String::from_utf8(body[2..2 + tlen].to_vec()).expect("utf-8 topic");
            got.push((topic, first & 1 == 1, body[2 + tlen..].to_vec()));
        }
        rest = &rest[i + len..];
    }
    got
}

/// The walk of the retained tree at SUBSCRIBE goes a slice per turn (3,000 matches over
/// several turns), and retained messages set or cleared meanwhile behave as
/// `topic::retained::cursor` documents: every message untouched during the walk arrives
/// once with RETAIN; a topic set or replaced after the SUBSCRIBE arrives once, as a live
/// publish, never again from the walk; a topic cleared ahead of the walk is not sent.
#[test]
fn the_retained_walk_is_sliced_and_changes_meanwhile_are_sane() {
    const N: usize = 3_000;
    let mut net = Cores::new(1);
    let publ = net.connect(0, "walk-pub");
    for i in 0..N {
        net.send(publ, &retained_packet(&format!("r/{i}"), b"old"));
    }
    let sub = net.connect(0, "walk-sub");
    assert_eq!(net.output(sub), CONNACK_OK);
    let mut now = NOW_MS;
    net.shards[0].begin_turn(now);
    net.send(sub, &subscribe_qos0_packet(&["r/#".to_string()]));
    let mut got = publishes(&net.output(sub));
    assert!(
        !got.is_empty() && got.len() < N / 2,
        "the first turn writes one slice's worth: {}",
        got.len()
    );
    assert!(got.iter().any(|(t, ..)| t == "r/0"), "r/0 comes first");
    // Ahead of the walk (children come in level order; "2999" and "998" come late).
    net.send(publ, &retained_packet("r/2999", b""));
    net.send(publ, &retained_packet("r/998", b"new"));
    net.send(publ, &retained_packet("r/9999", b"new"));
    // Behind it.
    net.send(publ, &retained_packet("r/0", b""));
    let mut turns = 0;
    while net.shards[0].timers_backlog() {
        turns += 1;
        assert!(turns < 1_000, "the walk never ends");
        now += 1;
        net.shards[0].begin_turn(now);
        got.extend(publishes(&net.output(sub)));
    }
    assert!(turns >= 5, "{N} matches over {turns} turns");
    let mut seen = std::collections::HashMap::new();
    for (topic, retain, payload) in &got {
        let was = seen.insert((topic.clone(), *retain), payload.clone());
        assert!(was.is_none(), "{topic} (retain {retain}) twice");
    }
    for i in (0..N).filter(|&i| i != 998 && i != 2999) {
        let t = format!("r/{i}");
        assert_eq!(
            seen.get(&(t, true)).map(Vec::as_slice),
            Some(&b"old"[..]),
            "r/{i}"
        );
    }
    assert!(
        !seen.contains_key(&("r/2999".into(), true)),
        "cleared ahead"
    );
    assert!(
        !seen.contains_key(&("r/998".into(), true)),
        "newer: sent live"
    );
    for t in ["r/998", "r/9999"] {
        let live = seen.get(&(t.into(), false)).map(Vec::as_slice);
        assert_eq!(live, Some(&b"new"[..]), "{t} live");
    }
}

/// 100 clients with 50 subscriptions each close in one turn (as after a network cut):
/// their client ids are free at once, and their 5,000 filters leave the routes at most
/// `UNROUTES_PER_TURN_MAX` per turn, over the following turns, all of them.
#[test]
fn sessions_closing_together_leave_the_routes_within_the_turn_budget() {
    use super::close::UNROUTES_PER_TURN_MAX;
    const CLIENTS: usize = 100;
    const SUBS: usize = 50;
    let mut net = Cores::new(1);
    let mut keys = Vec::new();
    for i in 0..CLIENTS {
        let c = net.connect(0, &format!("closer-{i}"));
        let filters: Vec<String> = (0..SUBS).map(|j| format!("c/{i}/{j}")).collect();
        net.send(c, &subscribe_qos0_packet(&filters));
        keys.push(c.1);
    }
    let b = &mut net.shards[0];
    assert_eq!(b.routes.local_filters().len(), CLIENTS * SUBS);
    let mut now = NOW_MS + 1;
    b.begin_turn(now);
    for &k in &keys {
        assert!(b.on_closed(k, now).is_some());
    }
    assert!((0..CLIENTS).all(|i| b.sessions.find(&format!("closer-{i}")).is_none()));
    let mut left = b.routes.local_filters().len();
    assert!(
        CLIENTS * SUBS - left <= UNROUTES_PER_TURN_MAX,
        "{left} left"
    );
    let mut turns = 0;
    while b.timers_backlog() {
        turns += 1;
        assert!(turns < 100, "never done");
        now += 1;
        b.begin_turn(now);
        let l = b.routes.local_filters().len();
        assert!(
            left - l <= UNROUTES_PER_TURN_MAX,
            "{} in one turn",
            left - l
        );
        left = l;
    }
    assert_eq!(left, 0);
    assert_eq!(b.sessions().count(), 0);
    assert!(
        turns >= CLIENTS * SUBS / UNROUTES_PER_TURN_MAX,
        "{turns} turns"
    );
}
