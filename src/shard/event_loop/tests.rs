//! The shard's turn over real loopback sockets, driven one turn at a time.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener as StdListener, TcpStream as StdStream};

use super::*;

/// QoS 0 PUBLISHes per connection, of [`PAYLOAD_BYTES`] each.
const PUBLISHES: usize = 48;
const PAYLOAD_BYTES: usize = 1_000;
/// Connections: their input (about 48 KiB each, 3 MiB in all) is three turns' budget.
const CONNS: usize = 64;
/// Turns allowed for all of it: twice what the budget needs.
const TURNS_MAX: usize = 2 * (CONNS * 49 * 1024 / SHARD_READ_BYTES_PER_TURN_MAX + 1);

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// A 3.1.1 CONNECT (clean session, Keep Alive 600 s), then the PUBLISHes.
fn input(i: usize) -> Vec<u8> {
    let mut connect = string("MQTT");
    connect.extend_from_slice(&[4, 0x02, 0x02, 0x58]);
    connect.extend(string(&format!("budget-{i}")));
    let mut out = packet(0x10, &connect);
    let mut publish = string(&format!("t/{i}"));
    publish.extend(std::iter::repeat_n(b'x', PAYLOAD_BYTES));
    for _ in 0..PUBLISHES {
        out.extend(packet(0x30, &publish));
    }
    out
}

fn one_shard() -> Shard {
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
    let bus = bus::mesh(Arc::new(vec![waker]))
        .pop()
        .expect("one shard's bus");
    let cfg = Arc::new(Config {
        shards: 1,
        ..Config::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    Shard::new(0, poll, Vec::new(), bus, cfg, stop, Instant::now())
}

/// A loopback connection whose client has written `bytes`, all of them waiting in the
/// server side's receive queue (bounded wait), adopted by `shard`. The client is returned
/// (dropping it would close the connection).
fn adopt_loaded(shard: &mut Shard, listener: &StdListener, bytes: &[u8]) -> StdStream {
    let mut client = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    client
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    client
        .write_all(bytes)
        .expect("the input fits the socket buffers");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut peek = vec![0; bytes.len()];
    server.set_nonblocking(true).expect("nonblocking");
    while server.peek(&mut peek).unwrap_or(0) < bytes.len() {
        assert!(Instant::now() < deadline, "input not queued within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stream = mio::net::TcpStream::from_std(server);
    let now = shard.now_ms();
    shard.adopt(Transport::tcp(stream), peer, Vec::new(), 0, now);
    client
}

/// 64 connections with 48 KiB waiting each (3 MiB, three turns of the shard's budget):
/// no turn reads more than [`SHARD_READ_BYTES_PER_TURN_MAX`], a connection the budget
/// left unread is read first in the next turn, in the order it was deferred, even before
/// a connection whose new input is reported by that turn's poll (the first one, written
/// to again after its input was read), and every byte of every connection is read and
/// decoded within the turns the budget needs (a connection forgotten under
/// edge-triggered polling would never be).
#[test]
fn the_shard_read_budget_bounds_a_turn_and_serves_the_deferred_first() {
    let mut shard = one_shard();
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let mut inputs: Vec<Vec<u8>> = (0..CONNS).map(input).collect();
    let mut clients: Vec<StdStream> = inputs
        .iter()
        .map(|bytes| adopt_loaded(&mut shard, &listener, bytes))
        .collect();
    let more = packet(0x30, &string("t/more"));
    let total: usize = inputs.iter().map(Vec::len).sum::<usize>() + more.len();
    assert!(total > 2 * SHARD_READ_BYTES_PER_TURN_MAX);
    let mut read: HashMap<usize, usize> = HashMap::new();
    let mut events = Events::with_capacity(EVENTS_PER_TURN_MAX);
    let (mut turns, mut deferring_turns) = (0, 0);
    while read.values().sum::<usize>() < total {
        assert!(turns < TURNS_MAX, "input left unread after {turns} turns");
        let carried: Vec<usize> = shard.read_first.clone();
        let bytes_in = shard.broker.stats().bytes_in;
        shard.turn(&mut events).expect("turn");
        turns += 1;
        let this_turn: usize = shard.read_log.iter().map(|&(_, n)| n).sum();
        assert!(
            this_turn <= SHARD_READ_BYTES_PER_TURN_MAX,
            "{this_turn} bytes in one turn"
        );
        assert_eq!(this_turn as u64, shard.broker.stats().bytes_in - bytes_in);
        // The connections the last turn's budget left unread are read first, in order.
        let mut order: Vec<usize> = Vec::new();
        for &(key, n) in &shard.read_log {
            *read.entry(key).or_default() += n;
            if order.last() != Some(&key) {
                order.push(key);
            }
        }
        let k = carried.len().min(order.len());
        assert_eq!(
            order[..k],
            carried[..k],
            "turn {turns}: deferred connections not first"
        );
        if !shard.read_first.is_empty() {
            deferring_turns += 1;
        }
        if turns == 1 {
            assert_eq!(
                read.get(&0),
                Some(&inputs[0].len()),
                "read first, and whole"
            );
            // New input on a connection already read: the next poll reports it.
            clients[0].write_all(&more).expect("write");
            inputs[0].extend_from_slice(&more);
        }
    }
    assert!(
        deferring_turns >= 2,
        "the budget never deferred a connection"
    );
    assert!(turns >= total / SHARD_READ_BYTES_PER_TURN_MAX);
    assert_eq!(read.len(), CONNS);
    for (key, bytes) in &read {
        let input = &inputs[*key];
        assert_eq!(*bytes, input.len(), "connection {key}");
        assert!(shard
            .broker
            .links()
            .get(*key)
            .is_some_and(|l| l.is_connected()));
    }
    assert_eq!(
        shard.broker.stats().publish_in,
        (CONNS * PUBLISHES + 1) as u64
    );
    drop(clients);
}
