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
