//! Three shardmq nodes as one broker over three clustered `nats-server`s with JetStream,
//! all on loopback, driven by real MQTT clients (`docs/cluster.md`).
//!
//! Each test starts its own NATS cluster (ports held together then freed, temporary
//! stores, `sync_interval: always` where the server knows it) and its own nodes, and kills
//! every process it started by PID. Without `nats-server` on PATH the NATS tests print why
//! and pass. Every wait is bounded: cross-node interest and the retained watch are
//! asynchronous, so a test first waits (bounded) until a probe message has crossed.

mod common;
#[path = "v5/mod.rs"]
mod v5;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::NatsCluster as Nats;
use common::{Broker, Got, RawClient, WaitError, QUIET, WAIT};
use v5::{Client5, Conn5};

/// Bound for what waits on the cluster forming: JetStream electing its meta leader and
/// creating the R3 buckets, interest crossing between NATS servers.
const FORM_WAIT: Duration = Duration::from_secs(45);
/// Shards per node: messages from the cluster enter on shard 0 and cross to the other.
const SHARDS: &str = "2";
/// A node answers a CONNECT when its registry does, or refuses it (0x88) at its own claim
/// deadline: the client waits past that deadline, so a slow registry is a refusal to
/// retry, never a client timeout racing the node's.
const CONNACK_WAIT: Duration =
    Duration::from_millis(shardmq::broker::cluster::CLAIM_WAIT_MS + 5_000);

/// Starting shardmq nodes attached to the test's NATS servers.
trait Nodes {
    /// Start shardmq node `name` of cluster `cluster`, attached to NATS server `server`.
    fn node(&self, cluster: &str, name: &str, server: usize) -> Broker {
        self.node_with(cluster, name, server, &[])
    }

    /// As `node`, with more command-line arguments.
    fn node_with(&self, cluster: &str, name: &str, server: usize, extra: &[&str]) -> Broker;
}

impl Nodes for Nats {
    fn node_with(&self, cluster: &str, name: &str, server: usize, extra: &[&str]) -> Broker {
        let path = self.dir.path().join(format!("{cluster}-{name}.conf"));
        let conf = format!(
            "cluster_name {cluster}\ncluster_node {name}\ncluster_nats nats://127.0.0.1:{}\ncluster_kv_replicas 3\n",
            self.ports[server]
        );
        std::fs::write(&path, conf).unwrap();
        let p = path.to_str().unwrap();
        let mut args = vec!["-c", p, "--shards", SHARDS];
        args.extend_from_slice(extra);
        Broker::start(&args)
    }
}

/// A 3.1.1 clean client `id` on `addr`, retried while the node's session registry is not
/// ready yet (the buckets are being created: CONNACK 3, server unavailable).
fn connect(addr: SocketAddr, id: &str) -> RawClient {
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        let (c, _, code) =
            RawClient::handshake_within(addr, &common::ConnectOpts::v311(id), CONNACK_WAIT);
        if code == 0 {
            return c;
        }
        assert_eq!(code, 3, "[{id}] refused, but not as 'server unavailable'");
        assert!(
            Instant::now() < deadline,
            "[{id}] the registry never answered"
        );
    }
}

/// A 3.1.1 clean client with an empty client id: the node assigns one, without the
/// registry.
fn assigned(addr: SocketAddr) -> RawClient {
    let (c, _, code) = RawClient::handshake(addr, &common::ConnectOpts::v311(""));
    assert_eq!(code, 0, "an assigned id needs no registry");
    c
}

/// The payload of the next PUBLISH (QoS 1 acknowledged), or `None` after `within`.
fn next_payload(c: &mut RawClient, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.try_packet(left) {
            Ok(Got::Publish(m)) => {
                c.ack(&m);
                return Some(m.text());
            }
            Ok(_) => {}
            Err(WaitError::Timeout) => return None,
            Err(e) => panic!("[{}] connection lost: {e:?}", c.id),
        }
    }
}

/// Publish probes on `topic` from `from` until each of `to` has one: the interest of
/// every receiver has crossed the NATS cluster. Then let the probes in flight land and
/// drop them, so what follows counts only real messages.
fn await_route(from: &mut RawClient, to: &mut [&mut RawClient], topic: &str) {
    let deadline = Instant::now() + FORM_WAIT;
    let mut seen = vec![false; to.len()];
    while seen.iter().any(|s| !s) {
        assert!(
            Instant::now() < deadline,
            "no route from {} over {topic} to all of them: {seen:?}",
            from.id
        );
        from.publish(topic, b"probe", 0, false);
        for (i, c) in to.iter_mut().enumerate() {
            while let Some(p) = next_payload(c, Duration::from_millis(50)) {
                assert_eq!(p, "probe", "[{}] only probes so far", c.id);
                seen[i] = true;
            }
        }
    }
    drain_probes(to);
}

/// Publish QoS 1 probes on `topic` from `from` until `to`, a client of `node`, has one and
/// `node` has taken a message from its JetStream queue: the publishing node's view shows
/// the interest and `node`'s queue consumer runs, so QoS 1 messages that follow take the
/// queue path, not core NATS only (a QoS 0 probe proves the latter alone). Then drop the
/// probes in flight.
fn await_queue_route(from: &mut RawClient, to: &mut RawClient, node: &Broker, topic: &str) {
    let deadline = Instant::now() + FORM_WAIT;
    let before = figure(node, "queue_received");
    let mut seen = false;
    while !(seen && figure(node, "queue_received") > before) {
        assert!(
            Instant::now() < deadline,
            "no QoS 1 route from {} over {topic} through the queue of {}'s node (probe seen: {seen})",
            from.id,
            to.id
        );
        from.publish(topic, b"probe", 1, false);
        while let Some(p) = next_payload(to, Duration::from_millis(50)) {
            assert_eq!(p, "probe", "[{}] only probes so far", to.id);
            seen = true;
        }
    }
    drain_probes(&mut [to]);
}

/// Drop the probes still arriving (the last one sent is FIFO-ordered before anything
/// published later by the same client).
fn drain_probes(to: &mut [&mut RawClient]) {
    for c in to.iter_mut() {
        while let Some(p) = next_payload(c, QUIET) {
            assert_eq!(p, "probe", "[{}] only probes so far", c.id);
        }
    }
}

/// Receive until `n` non-probe payloads arrived (bounded), then make sure no more come.
fn exactly(c: &mut RawClient, n: usize) -> Vec<String> {
    exactly_within(c, n, WAIT)
}

/// [`exactly`], the `n` payloads given `wait` to arrive.
fn exactly_within(c: &mut RawClient, n: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_payload(c, left) {
            Some(p) if p == "probe" => {}
            Some(p) => got.push(p),
            None => panic!("[{}] only {} of {n} arrived: {got:?}", c.id, got.len()),
        }
    }
    if let Some(p) = next_payload(c, QUIET).filter(|p| p != "probe") {
        panic!("[{}] one more than {n}: {p} after {got:?}", c.id);
    }
    got
}

/// A new subscriber on `addr` to `filter` gets the retained `want` (`None`: nothing)
/// within the bound: retained updates reach other nodes through the bucket's watch.
fn await_retained(addr: SocketAddr, id: &str, filter: &str, want: Option<&str>) {
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        let mut c = connect(addr, id);
        c.subscribe(filter, 1);
        let got = match c.try_packet(QUIET) {
            Ok(Got::Publish(m)) => {
                c.ack(&m);
                assert!(m.retain, "[{id}] a retained message has RETAIN set");
                Some(m.text())
            }
            Ok(other) => panic!("[{id}] unexpected {other:?}"),
            Err(_) => None,
        };
        c.disconnect();
        if got.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{id}] retained on {filter}: got {got:?}, want {want:?}"
        );
    }
}

/// The three-node tests run one at a time: each starts three NATS servers with JetStream
/// and three nodes, and two of those sets at once on a two-core machine slow JetStream's
/// leader elections past the tests' bounds.
static THREE_NODES: Mutex<()> = Mutex::new(());

fn three_nodes_lock() -> std::sync::MutexGuard<'static, ()> {
    THREE_NODES.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn three_nodes_route_retain_share_and_take_over_as_one_broker() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    // Each node on its own NATS server: every cross-node message crosses a NATS route.
    let admin = ["--admin", "127.0.0.1:0"];
    let nodes: Vec<Broker> = ["A", "B", "C"]
        .iter()
        .enumerate()
        .map(|(i, n)| nats.node_with("one", n, i, &admin))
        .collect();
    let (a, b, c) = (nodes[0].addr(), nodes[1].addr(), nodes[2].addr());

    // Subscribe on A, publish on C: each message once, in order, QoS 1 end to end.
    let mut sub = connect(a, "sub-a");
    sub.subscribe("plain/t", 1);
    let mut publ = connect(c, "pub-c");
    // The 20 messages go through A's queue (C's view shows A's interest): the probes must
    // prove that path, not only core NATS.
    await_queue_route(&mut publ, &mut sub, &nodes[0], "plain/t");
    for i in 0..20 {
        publ.publish("plain/t", format!("m{i}").as_bytes(), 1, false);
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(
        exactly(&mut sub, 20),
        want,
        "A gets C's messages once, in order"
    );

    // Wildcards, overlapping on one node (one copy per node, then one per client).
    let mut w1 = connect(a, "w1-a");
    w1.subscribe_many(&[("w/+/x", 1), ("w/#", 1)]);
    let mut w2 = connect(a, "w2-a");
    w2.subscribe("+/a/#", 1);
    let mut w3 = connect(b, "w3-b");
    w3.subscribe("w/a/x", 1);
    let mut other = connect(b, "other-b");
    other.subscribe("w/b/#", 1);
    await_route(&mut publ, &mut [&mut w1, &mut w2, &mut w3], "w/a/x");
    publ.publish("w/a/x", b"wild", 1, false);
    for s in [&mut w1, &mut w2, &mut w3] {
        assert_eq!(exactly(s, 1), ["wild"], "[{}]", s.id);
    }
    other.expect_nothing(QUIET);

    // Retained across nodes: set on A, seen on B and C; cleared on C, gone on A.
    let mut ra = connect(a, "ret-a");
    ra.publish("r/door", b"open", 1, true);
    await_retained(b, "ret-b", "r/#", Some("open"));
    await_retained(c, "ret-c", "r/door", Some("open"));
    let mut rc = connect(c, "ret-c2");
    rc.publish("r/door", b"", 1, true);
    await_retained(a, "ret-a2", "r/#", None);

    shared_across_nodes(a, b, &mut publ);
    publish_right_after_suback(&nats, a);
    takeover_across_nodes(a, b, c);
    handover_across_nodes(a, b, &mut publ);

    // The link's counters on /metrics: C sent, A received.
    assert!(figure(&nodes[2], "published") >= 20);
    assert!(figure(&nodes[0], "received") >= 20);
    assert_eq!(figure(&nodes[0], "malformed"), 0);
    // No loops: B's clients published nothing, so B sent nothing to NATS, however much
    // it received from it.
    assert!(figure(&nodes[1], "received") > 0);
    assert_eq!(
        figure(&nodes[1], "published"),
        0,
        "B re-published what it received"
    );
}

/// Rounds of subscribe-then-publish in `publish_right_after_suback`.
const SUBACK_ROUNDS: usize = 20;

/// A SUBACK on a cluster node is sent once the node's NATS server has the interest: node
/// D shares A's NATS server, and a QoS 1 message D accepts right after A's SUBACK reaches
/// the new subscriber, every time, with no probe first (each round a new filter, so each
/// SUBACK waits for a new NATS subscription).
fn publish_right_after_suback(nats: &Nats, a: SocketAddr) {
    let d = nats.node("one", "D", 0);
    let mut publ = connect(d.addr(), "pub-d");
    let mut sub = connect(a, "race-a");
    for i in 0..SUBACK_ROUNDS {
        let topic = format!("race/{i}/x");
        sub.subscribe(&format!("race/{i}/+"), 1);
        publ.publish(&topic, format!("r{i}").as_bytes(), 1, false);
        assert_eq!(
            next_payload(&mut sub, WAIT).as_deref(),
            Some(format!("r{i}").as_str()),
            "round {i}: the message published on D right after A's SUBACK"
        );
    }
}

/// The body of GET /metrics from an admin listener.
fn metrics(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// `$share/g/s/#` with members on A and B: each of C's messages reaches exactly one.
fn shared_across_nodes(a: SocketAddr, b: SocketAddr, publ: &mut RawClient) {
    let mut m1 = connect(a, "share-a");
    m1.subscribe("$share/g/s/#", 1);
    let mut m2 = connect(b, "share-b");
    m2.subscribe("$share/g/s/#", 1);
    // Until one member gets a probe; both must be routable before the real ones.
    let deadline = Instant::now() + FORM_WAIT;
    let mut seen = [false; 2];
    while !(seen[0] && seen[1]) {
        assert!(
            Instant::now() < deadline,
            "share group not formed: {seen:?}"
        );
        publ.publish("s/k", b"probe", 0, false);
        for (i, m) in [&mut m1, &mut m2].into_iter().enumerate() {
            while next_payload(m, Duration::from_millis(30)).is_some() {
                seen[i] = true;
            }
        }
    }
    drain_probes(&mut [&mut m1, &mut m2]);
    let n = 40;
    for i in 0..n {
        publ.publish("s/k", format!("s{i}").as_bytes(), 1, false);
    }
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_member = [0usize; 2];
    let deadline = Instant::now() + WAIT;
    while count.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} shared messages arrived",
            count.len()
        );
        for (i, m) in [&mut m1, &mut m2].into_iter().enumerate() {
            while let Some(p) = next_payload(m, Duration::from_millis(30)) {
                if p != "probe" {
                    *count.entry(p).or_default() += 1;
                    per_member[i] += 1;
                }
            }
        }
    }
    drain_probes(&mut [&mut m1, &mut m2]);
    let twice: Vec<_> = count.iter().filter(|(_, &k)| k > 1).collect();
    assert!(twice.is_empty(), "delivered to two members: {twice:?}");
    assert_eq!(per_member.iter().sum::<usize>(), n, "{per_member:?}");
}

/// The same client id on another node: the old connection is told 0x8E (5.0) or closed
/// (3.1.1), the new one is accepted.
fn takeover_across_nodes(a: SocketAddr, b: SocketAddr, c: SocketAddr) {
    let o = Conn5::new("mover5").clean(false).expiry(60);
    let (mut old, _) = open5(a, &o);
    let (mut new, ack) = open5(b, &o);
    assert_eq!(ack.reason, 0);
    old.expect_disconnect_reason(0x8E);
    new.ping();

    let mut old3 = connect(a, "mover3");
    let mut new3 = connect(c, "mover3");
    old3.wait_closed(WAIT);
    new3.ping();
    // And back: the registry follows the client, whichever node it reaches.
    let mut back = connect(a, "mover3");
    new3.wait_closed(WAIT);
    back.ping();
}

/// A persistent 5.0 session offline on A with three queued QoS 1 messages reconnects on
/// B: Session Present, the queued messages, and its subscription, now routed to B.
fn handover_across_nodes(a: SocketAddr, b: SocketAddr, publ: &mut RawClient) {
    let o = Conn5::new("hand").clean(false).expiry(300);
    let (mut first, _) = open5(a, &o);
    first.subscribe_id("h/#", 1, 9);
    first.disconnect();
    // A probe beside the session on A: once it has q2, A has queued q0..q2 for "hand"
    // (the gateway sends both, and the later takeover notice, in one order).
    let mut probe = connect(a, "h-probe");
    probe.subscribe("h/#", 1);
    await_route(publ, &mut [&mut probe], "h/p");
    for i in 0..3 {
        publ.publish("h/x", format!("q{i}").as_bytes(), 1, false);
    }
    assert_eq!(exactly(&mut probe, 3), ["q0", "q1", "q2"]);
    probe.disconnect();

    let (mut moved, ack) = open5(b, &o);
    assert!(ack.present, "the session came with the client: {ack:?}");
    // The state may come after the CONNACK (a late handover, when A answers after the
    // 3 s the CONNECT waits for it): on a loaded machine that took longer than WAIT.
    let mut queued = Vec::new();
    while queued.len() < 3 {
        let m = moved.expect_publish_acked(FORM_WAIT);
        if m.text() != "probe" {
            queued.push(m.text());
        }
    }
    assert_eq!(queued, ["q0", "q1", "q2"], "the queued messages followed");
    // Its subscription is B's now: C's messages reach it there, with its identifier.
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the moved subscription never got a message"
        );
        publ.publish("h/live", b"live", 1, false);
        match moved.recv(Duration::from_millis(100)) {
            Ok(v5::P5::Publish(m)) if m.text() == "live" => {
                moved.ack(&m);
                assert_eq!(m.props.subscription_identifiers, [9]);
                break;
            }
            Ok(v5::P5::Publish(m)) => moved.ack(&m),
            _ => {}
        }
    }
}

/// `Client5::open`, retried while the node's registry is not ready.
fn open5(addr: SocketAddr, o: &Conn5) -> (Client5, v5::ConnAck5) {
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        let (c, ack) = Client5::handshake_within(addr, o, CONNACK_WAIT);
        if ack.reason == 0 {
            return (c, ack);
        }
        assert_eq!(ack.reason, 0x88, "[{}] refused: {ack:?}", o.id);
        assert!(
            Instant::now() < deadline,
            "[{}] registry never answered",
            o.id
        );
    }
}

#[test]
fn a_node_killed_mid_traffic_leaves_the_others_serving() {
    let _one_at_a_time = three_nodes_lock();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let mut nodes: Vec<Broker> = ["A", "B", "C"]
        .iter()
        .enumerate()
        .map(|(i, n)| nats.node("two", n, i))
        .collect();
    let (a, b, c) = (nodes[0].addr(), nodes[1].addr(), nodes[2].addr());
    let mut sub = connect(a, "k-sub");
    sub.subscribe("k/#", 1);
    let mut on_b = connect(b, "k-mover");
    on_b.subscribe("k/#", 1);
    // A persistent session on B, whose subscription must outlive B.
    let persistent = Conn5::new("p-mover").clean(false).expiry(300);
    let (mut p_on_b, _) = open5(b, &persistent);
    p_on_b.subscribe_id("p/#", 1, 5);
    let mut publ = connect(c, "k-pub");
    await_route(&mut publ, &mut [&mut sub, &mut on_b], "k/x");

    // C publishes 200 QoS 1 messages from its own thread; B dies (SIGKILL) half-way.
    let n = 200;
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            publ.publish("k/x", format!("k{i}").as_bytes(), 1, false);
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        publ
    });
    let first = next_payload(&mut sub, WAIT);
    assert!(first.is_some(), "traffic flows before the kill");
    common::signal(nodes[1].pid(), libc::SIGKILL);
    assert!(nodes[1].wait(WAIT).is_some(), "node B is gone");
    let mut got = vec![first.unwrap_or_default()];
    got.extend(exactly(&mut sub, n - 1));
    let want: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    assert_eq!(got, want, "A gets every message from C, once, while B dies");
    let mut publ = sender.join().expect("publisher thread");

    // B's client sees its connection die and reconnects to C with the same id: the
    // registry moves it from the dead node without waiting for it.
    on_b.wait_closed(WAIT);
    let mut moved = connect(c, "k-mover");
    moved.subscribe("k/#", 1);
    publ.publish("k/x", b"after", 1, false);
    assert_eq!(exactly(&mut moved, 1), ["after"]);
    assert_eq!(exactly(&mut sub, 1), ["after"]);
    // A still accepts new clients and routes to C.
    let mut late = connect(a, "k-late");
    late.publish("k/late", b"late", 1, false);
    assert_eq!(exactly(&mut moved, 1), ["late"]);
    // The persistent session of dead B reconnects to C: B sends no state, so C takes the
    // copy of its subscriptions from the bucket: Session Present, and A's messages reach
    // it under its subscription, identifier included, without a new SUBSCRIBE.
    drop(p_on_b);
    let (mut p_on_c, ack) = open5(c, &persistent);
    assert!(ack.present, "the subscriptions outlived B: {ack:?}");
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the subscription taken from the bucket never got a message"
        );
        late.publish("p/x", b"kept", 1, false);
        match p_on_c.recv(Duration::from_millis(100)) {
            Ok(v5::P5::Publish(m)) => {
                p_on_c.ack(&m);
                assert_eq!(m.props.subscription_identifiers, [5]);
                break;
            }
            Ok(_) | Err(WaitError::Timeout) => {}
            Err(e) => panic!("p-mover lost its connection: {e:?}"),
        }
    }
    drop(p_on_c);
    drop((moved, publ, late));
    nats_server_lost_mid_traffic(&mut nats, a, c);
    nodes.truncate(1);
}

/// C's NATS server (2 of 3) dies while C publishes to A every few milliseconds: C's link
/// reconnects to another server, and messages C accepts afterwards reach A again; A's
/// messages reach a subscriber on C again (C's NATS subscriptions are replayed). Messages
/// in the gap may be lost (core NATS); the test claims only that traffic resumes.
fn nats_server_lost_mid_traffic(nats: &mut Nats, a: SocketAddr, c: SocketAddr) {
    let mut sub = connect(a, "n-sub");
    sub.subscribe("n/#", 1);
    let mut publ = connect(c, "n-pub");
    await_route(&mut publ, &mut [&mut sub], "n/x");
    let (sent, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (s, st) = (sent.clone(), stop.clone());
    let sender = std::thread::spawn(move || {
        // Bounded: FORM_WAIT at most, or until told to stop.
        let deadline = Instant::now() + FORM_WAIT;
        while !st.load(Ordering::Acquire) && Instant::now() < deadline {
            let i = s.load(Ordering::Acquire);
            publ.publish("n/x", format!("{i}").as_bytes(), 1, false);
            s.store(i + 1, Ordering::Release);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let index = |p: &str| p.parse::<usize>().ok();
    assert!(
        next_payload(&mut sub, WAIT).is_some(),
        "traffic flows before the server dies"
    );
    nats.kill(2);
    let killed_at = sent.load(Ordering::Acquire);
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = next_payload(&mut sub, left)
            .expect("messages C accepts after its NATS server died reach A again");
        if index(&p).is_some_and(|i| i > killed_at) {
            break;
        }
    }
    stop.store(true, Ordering::Release);
    sender.join().expect("publisher thread");
    // The other way: a subscriber on C, whose node re-subscribed on its new server. Both
    // clients take assigned ids: the registry may still be electing a leader.
    let mut back = assigned(c);
    back.subscribe("m/#", 1);
    let mut from_a = assigned(a);
    await_route(&mut from_a, &mut [&mut back], "m/x");
    from_a.publish("m/x", b"back", 1, false);
    // QoS 1 goes through C's JetStream queue, whose stream or consumer may still be
    // electing a leader after the loss of its server (the QoS 0 probes above go by core
    // NATS alone): the failover bound, as for the first direction.
    assert_eq!(exactly_within(&mut back, 1, FORM_WAIT), ["back"]);
}

/// Without NATS the session registry cannot be asked: a CONNECT is refused with 0x88
/// (5.0) / 3 (3.1.1) rather than risk one client id live on two nodes; an assigned id
/// (empty client id) needs no registry and is served.
#[test]
fn without_nats_connects_are_refused_as_server_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let path = dir.path().join("n.conf");
    std::fs::write(
        &path,
        format!("cluster_name solo\ncluster_node n\ncluster_nats nats://127.0.0.1:{port}\n"),
    )
    .unwrap();
    let node = Broker::start(&["-c", path.to_str().unwrap(), "--shards", SHARDS]);
    let started = Instant::now();
    let (mut c5, ack) = Client5::handshake_within(node.addr(), &Conn5::new("dev5"), CONNACK_WAIT);
    assert_eq!(ack.reason, 0x88, "{ack:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused in bounded time"
    );
    c5.wait_closed(WAIT);
    let (mut c3, _, code) = RawClient::handshake_within(
        node.addr(),
        &common::ConnectOpts::v311("dev3"),
        CONNACK_WAIT,
    );
    assert_eq!(code, 3);
    c3.expect_closed(WAIT);
    let (c, ack) = Client5::handshake(node.addr(), &Conn5::new(""));
    assert_eq!(ack.reason, 0, "an assigned id is served alone: {ack:?}");
    assert!(ack
        .props
        .assigned_client_identifier
        .as_deref()
        .is_some_and(|id| id.contains("-n-")));
    drop(c);
}

/// Publish `probe` from `publ` (on node `a`) until `sub` (on another node) gets one and `a`
/// has stored one in a queue: `a` knows the subscriber's node's interest. Returns once
/// the probes still on their way have arrived too.
fn await_stored_for(a: &Broker, publ: &mut RawClient, sub: &mut Client5, probe: &str) {
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(Instant::now() < deadline, "A never stored for B");
        publ.publish(probe, b"probe", 1, false);
        let mut arrived = false;
        while let Ok(v5::P5::Publish(m)) = sub.recv(Duration::from_millis(50)) {
            sub.ack(&m);
            arrived = true;
        }
        if arrived && figure(a, "queued") > 0 {
            // The probes still on their way are taken, so the test's own come next.
            while let Ok(v5::P5::Publish(m)) = sub.recv(QUIET) {
                sub.ack(&m);
            }
            return;
        }
    }
}

/// A cluster figure from a node's `/metrics`.
fn figure(node: &Broker, name: &str) -> u64 {
    let body = metrics(node.admin_addr().expect("admin listener"));
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("shardmq_cluster_{name}_total ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no shardmq_cluster_{name}_total in {body}"))
}

/// Receive QoS 1 PUBLISHes on `sub` (acknowledging each) into `got` (payload → copies)
/// until `done` says so or `within` passes; false if the connection closed.
fn gather(
    sub: &mut Client5,
    got: &mut BTreeMap<String, usize>,
    within: Duration,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    while !done(got) && Instant::now() < deadline {
        match sub.recv(Duration::from_millis(100)) {
            Ok(v5::P5::Publish(m)) => {
                sub.ack(&m);
                if m.text() != "probe" {
                    *got.entry(m.text()).or_default() += 1;
                }
            }
            Ok(_) | Err(WaitError::Timeout) => {}
            Err(_) => return false,
        }
    }
    true
}

/// QoS 1 between nodes survives the receiving node: a persistent subscriber on A (its
/// own store), a publisher on C. A is killed (SIGKILL) while C's messages flow to it,
/// more are published while A is down, then A restarts on its store and the subscriber
/// comes back: every message whose PUBACK C sent arrives (duplicates allowed: those A had
/// taken from its queue without settling them come again).
#[test]
fn acknowledged_qos1_survives_the_receiving_node() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let path = store.path().to_str().unwrap().to_string();
    let a_args = ["--data-dir", path.as_str()];
    let mut a = nats.node_with("dur", "A", 0, &a_args);
    let c = nats.node_with("dur", "C", 2, &["--admin", "127.0.0.1:0"]);
    let o = Conn5::new("dur-sub").clean(false).expiry(600);
    let (mut sub, _) = open5(a.addr(), &o);
    sub.subscribe("d/#", 1);
    let mut publ = connect(c.addr(), "dur-pub");
    // Until a probe arrives and C has stored one in A's queue: C knows A's interest.
    let deadline = Instant::now() + FORM_WAIT;
    let mut got = BTreeMap::new();
    loop {
        assert!(Instant::now() < deadline, "C never stored for A");
        publ.publish("d/probe", b"probe", 1, false);
        let mut arrived = false;
        while let Ok(v5::P5::Publish(m)) = sub.recv(Duration::from_millis(50)) {
            sub.ack(&m);
            arrived = true;
        }
        if arrived && figure(&c, "queued") > 0 {
            break;
        }
    }
    while let Ok(v5::P5::Publish(m)) = sub.recv(QUIET) {
        sub.ack(&m);
    }

    // 200 while A is killed half-way (each PUBACKed: `publish` waits for it), then 100
    // more once A is surely down.
    let sender = std::thread::spawn(move || {
        for i in 0..200 {
            publ.publish("d/x", format!("{i}").as_bytes(), 1, false);
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        publ
    });
    assert!(
        gather(&mut sub, &mut got, WAIT, |g| g.len() >= 40),
        "A serves before the kill"
    );
    assert!(!got.is_empty(), "traffic flows before the kill");
    common::signal(a.pid(), libc::SIGKILL);
    assert!(a.wait(WAIT).is_some(), "node A is gone");
    let mut publ = sender
        .join()
        .expect("every message of the first 200 PUBACKed");
    for i in 200..300 {
        publ.publish("d/x", format!("{i}").as_bytes(), 1, false);
    }
    drop(sub);

    // A again, on its store; the subscriber returns.
    let a = nats.node_with("dur", "A", 0, &a_args);
    let (mut sub, ack) = open5(a.addr(), &o);
    assert!(ack.present, "A restored the session: {ack:?}");
    gather(&mut sub, &mut got, FORM_WAIT, |g| g.len() >= 300);
    let missing: Vec<usize> = (0..300)
        .filter(|i| !got.contains_key(&i.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "PUBACKed but never delivered: {missing:?}"
    );
    // At most: the first delivery, its resend with DUP from A's store (the subscriber's
    // PUBACK died with A), and the queue's copy A had not settled when it died.
    let extra: Vec<_> = got.iter().filter(|(_, &n)| n > 3).collect();
    assert!(extra.is_empty(), "more than three copies: {extra:?}");
    let twice = got.values().filter(|&&n| n > 1).count();
    eprintln!("{twice} of 300 messages arrived more than once");
    assert_eq!(got.len(), 300, "only what was published");
    drop(c);
}

/// Receive on both members at once (acknowledging each) into `got` until `done` or
/// `within`; a member whose connection closed is left alone from then on.
fn gather_members(
    members: &mut [&mut Client5],
    got: &mut BTreeMap<String, usize>,
    within: Duration,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) {
    let deadline = Instant::now() + within;
    let mut open = vec![true; members.len()];
    while !done(got) && Instant::now() < deadline && open.iter().any(|o| *o) {
        for (i, m) in members.iter_mut().enumerate() {
            if open[i] {
                open[i] = gather(m, got, Duration::from_millis(30), |_| false);
            }
        }
    }
}

/// Shared subscriptions across nodes at QoS 1 go through the group's JetStream queue.
/// `$share/sg/sh/#` with one member on A and a persistent one on B (its own store), a
/// publisher on C. No failure: 100 messages, each to exactly one member, all stored in
/// the group's queue by C. Then B hangs (SIGSTOP) mid-stream while C publishes, and is
/// killed (SIGKILL): every message C acknowledged reaches a member — what B had taken
/// and not settled goes to A after the ack wait, what B had settled reaches its member
/// when B restarts on its store (duplicates allowed). Before, NATS queue groups handed a
/// hung member node its share of the messages and they died with it.
#[test]
fn shared_qos1_reaches_a_member_when_a_member_node_dies() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let path = store.path().to_str().unwrap().to_string();
    let b_args = ["--data-dir", path.as_str()];
    let a = nats.node("shq", "A", 0);
    let mut b = nats.node_with("shq", "B", 1, &b_args);
    let c = nats.node_with("shq", "C", 2, &["--admin", "127.0.0.1:0"]);
    let filter = "$share/sg/sh/#";
    let (mut m1, _) = open5(a.addr(), &Conn5::new("shq-a"));
    m1.subscribe(filter, 1);
    let o2 = Conn5::new("shq-b").clean(false).expiry(600);
    let (mut m2, _) = open5(b.addr(), &o2);
    m2.subscribe(filter, 1);
    let mut publ = connect(c.addr(), "shq-pub");
    // Until both members had a QoS 1 probe: both nodes take from the group.
    let deadline = Instant::now() + FORM_WAIT;
    let mut seen = [false; 2];
    while !(seen[0] && seen[1]) || figure(&c, "shared_queued") == 0 {
        assert!(Instant::now() < deadline, "group not formed: {seen:?}");
        publ.publish("sh/k", b"probe", 1, false);
        for (i, m) in [&mut m1, &mut m2].into_iter().enumerate() {
            while let Ok(v5::P5::Publish(p)) = m.recv(Duration::from_millis(30)) {
                m.ack(&p);
                seen[i] = true;
            }
        }
    }
    let mut probes = BTreeMap::new();
    gather_members(&mut [&mut m1, &mut m2], &mut probes, QUIET, |_| false);

    // No failure: each message once, cluster-wide, through the group's queue.
    let stored_before = figure(&c, "shared_queued");
    let n = 100;
    for i in 0..n {
        publ.publish("sh/k", format!("n{i}").as_bytes(), 1, false);
    }
    let mut got = BTreeMap::new();
    gather_members(&mut [&mut m1, &mut m2], &mut got, WAIT, |g| g.len() >= n);
    gather_members(&mut [&mut m1, &mut m2], &mut got, QUIET, |_| false);
    assert_eq!(got.len(), n, "all arrived, nothing else: {got:?}");
    let twice: Vec<_> = got.iter().filter(|(_, &k)| k > 1).collect();
    assert!(twice.is_empty(), "delivered to two members: {twice:?}");
    assert!(
        figure(&c, "shared_queued") >= stored_before + n as u64,
        "C stored each message in the group's queue"
    );

    // B hangs mid-stream, then dies.
    let mut got = BTreeMap::new();
    for i in 0..40 {
        publ.publish("sh/k", format!("f{i}").as_bytes(), 1, false);
    }
    gather_members(
        &mut [&mut m1, &mut m2],
        &mut got,
        Duration::from_millis(300),
        |_| false,
    );
    common::signal(b.pid(), libc::SIGSTOP);
    for i in 40..140 {
        publ.publish("sh/k", format!("f{i}").as_bytes(), 1, false);
    }
    common::signal(b.pid(), libc::SIGKILL);
    assert!(b.wait(WAIT).is_some(), "node B is gone");
    for i in 140..180 {
        publ.publish("sh/k", format!("f{i}").as_bytes(), 1, false);
    }
    // What reached m2 before B died counts; then its connection is closed.
    gather(&mut m2, &mut got, QUIET, |_| false);
    drop(m2);
    let b = nats.node_with("shq", "B", 1, &b_args);
    let (mut m2, ack) = open5(b.addr(), &o2);
    assert!(ack.present, "B restored the member's session: {ack:?}");
    let all = 180;
    gather_members(&mut [&mut m1, &mut m2], &mut got, FORM_WAIT, |g| {
        g.len() >= all
    });
    let missing: Vec<usize> = (0..all)
        .filter(|i| !got.contains_key(&format!("f{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "PUBACKed but delivered to no member: {missing:?}"
    );
    assert_eq!(got.len(), all, "only what was published: {got:?}");
    let twice = got.values().filter(|&&k| k > 1).count();
    eprintln!("{twice} of {all} shared messages arrived more than once");
    drop((a, c));
}

/// Wait (bounded by `FORM_WAIT`) until `node`'s figure `name` reaches `at_least`.
fn await_figure(node: &Broker, name: &str, at_least: u64) {
    let deadline = Instant::now() + FORM_WAIT;
    while figure(node, name) < at_least {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A persistent session of a node that dies gets its owed messages where it reconnects.
/// Session `owed` on B (its own store) with `o/#` at QoS 1; five messages queued for it
/// while it is offline (in B's log); B killed (SIGKILL); 50 messages published on A while
/// B is dead (each PUBACKed: stored in B's JetStream queue). The client reconnects to C:
/// present, and C copies the 50 from B's queue. B restarts on its store: the registry
/// names C, so B hands C the five from its log and ends its copy, and does not deliver
/// the 50 again. A last message after that arrives once.
#[test]
fn a_dead_nodes_session_gets_its_owed_messages_where_it_reconnects() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let path = store.path().to_str().unwrap().to_string();
    let b_args = ["--data-dir", path.as_str(), "--admin", "127.0.0.1:0"];
    let a = nats.node_with("owe", "A", 0, &["--admin", "127.0.0.1:0"]);
    let mut b = nats.node_with("owe", "B", 1, &b_args);
    let c = nats.node_with("owe", "C", 2, &["--admin", "127.0.0.1:0"]);
    let o = Conn5::new("owed").clean(false).expiry(600);
    let (mut sub, _) = open5(b.addr(), &o);
    sub.subscribe_id("o/#", 1, 7);
    let mut publ = connect(a.addr(), "owed-pub");
    await_stored_for(&a, &mut publ, &mut sub, "o/probe");
    sub.disconnect();

    // Five for the offline session, settled by B (so in its log, gone from its queue).
    let settled = figure(&b, "queue_settled");
    for i in 0..5 {
        publ.publish("o/x", format!("pre{i}").as_bytes(), 1, false);
    }
    await_figure(&b, "queue_settled", settled + 5);
    common::signal(b.pid(), libc::SIGKILL);
    assert!(b.wait(WAIT).is_some(), "node B is gone");
    for i in 0..50 {
        publ.publish("o/x", format!("d{i}").as_bytes(), 1, false);
    }

    // To C: B sends no state; the subscriptions come from the bucket, the 50 from B's queue.
    let (mut sub, ack) = open5(c.addr(), &o);
    assert!(ack.present, "the session outlived B: {ack:?}");
    let mut got = BTreeMap::new();
    let dead: Vec<String> = (0..50).map(|i| format!("d{i}")).collect();
    gather(&mut sub, &mut got, FORM_WAIT, |g| {
        dead.iter().all(|d| g.contains_key(d))
    });
    let missing: Vec<&String> = dead.iter().filter(|d| !got.contains_key(*d)).collect();
    assert!(
        missing.is_empty(),
        "PUBACKed while B was dead, never delivered: {missing:?}"
    );
    assert!(
        !got.keys().any(|k| k.starts_with("pre")),
        "B's log is out of reach while B is down: {got:?}"
    );

    // B again, on its store: it hands the five over and keeps nothing for `owed`.
    let b = nats.node_with("owe", "B", 1, &b_args);
    let pre: Vec<String> = (0..5).map(|i| format!("pre{i}")).collect();
    gather(&mut sub, &mut got, FORM_WAIT, |g| {
        pre.iter().all(|p| g.contains_key(p))
    });
    let missing: Vec<&String> = pre.iter().filter(|p| !got.contains_key(*p)).collect();
    assert!(missing.is_empty(), "B's log never reached C: {missing:?}");
    assert_eq!(
        figure(&b, "disowned"),
        1,
        "B gave up its copy of the session"
    );
    // B has read its queue (the 50 among it) before a new message reaches C.
    await_figure(&b, "queue_settled", 50);
    publ.publish("o/x", b"after", 1, false);
    gather(&mut sub, &mut got, FORM_WAIT, |g| g.contains_key("after"));
    // Anything more (a copy from B's queue) would arrive within this bound.
    gather(&mut sub, &mut got, QUIET * 4, |_| false);
    for d in dead.iter().chain(["after".to_string()].iter()) {
        assert_eq!(
            got.get(d),
            Some(&1),
            "{d}: once, not again from restarted B"
        );
    }
    // MQTT allows a duplicate QoS 1 here: a message B settled whose acknowledgement died
    // with B is in both its log and its queue.
    for p in &pre {
        assert!(got.get(p).is_some_and(|&n| n <= 2), "{p}: {got:?}");
    }
    assert_eq!(got.len(), 56, "only what was published: {got:?}");
    drop((a, c));
}

/// Topics of the order test, each subscribed to on A while C publishes to it.
const ORDER_TOPICS: usize = 6;
/// Messages of a topic that must arrive before the next topic's subscriber starts.
const ORDER_SEEN: usize = 50;
/// QoS 1 PUBLISHes the order test's publisher has unacknowledged at once.
const ORDER_WINDOW: usize = 256;
/// Bounds on the order test's publisher.
const ORDER_MESSAGES_MAX: usize = 60_000;
const ORDER_TIME_MAX: Duration = Duration::from_secs(60);

/// Publish on C until `stop` (bounded), keeping `ORDER_WINDOW` QoS 1 PUBLISHes
/// unacknowledged (a new one for each PUBACK, so C's link always has earlier messages
/// waiting): every second one on `bg/x` (stored in A's queue: stores always under way),
/// the others on `ord/<k>` in turn, numbered per topic. Returns how many went to each
/// `ord/<k>`, every one PUBACKed.
fn publish_ordered(mut publ: RawClient, stop: Arc<AtomicBool>) -> Vec<u32> {
    let mut sent = vec![0u32; ORDER_TOPICS];
    let started = Instant::now();
    let (mut total, mut unacked) = (0usize, 0usize);
    loop {
        while unacked < ORDER_WINDOW && !stop.load(Ordering::Acquire) {
            assert!(
                total < ORDER_MESSAGES_MAX && started.elapsed() < ORDER_TIME_MAX,
                "the subscribers never got their messages ({total} published)"
            );
            let pid = publ.next_pid();
            if total % 2 == 0 {
                publ.send_publish("bg/x", b"bg", 1, false, false, Some(pid));
            } else {
                let k = total / 2 % ORDER_TOPICS;
                let payload = format!("{k}:{}", sent[k]);
                sent[k] += 1;
                let topic = format!("ord/{k}");
                publ.send_publish(&topic, payload.as_bytes(), 1, false, false, Some(pid));
            }
            total += 1;
            unacked += 1;
        }
        if unacked == 0 {
            return sent;
        }
        publ.expect_where(WAIT, "PUBACK", |g| matches!(g, Got::PubAck(_)));
        unacked -= 1;
    }
}

/// Subscribe a new client on `addr` to `ord/<k>` and gather the numbers that arrive, in
/// order; `seen` counts them as they come. Once `count` is known (not `u32::MAX`), stop
/// when that many were published and the last one arrived (then nothing more may come),
/// or `WAIT` after the last arrival.
fn gather_ordered(
    addr: SocketAddr,
    k: usize,
    seen: Arc<AtomicUsize>,
    count: Arc<AtomicU32>,
) -> Vec<u32> {
    let mut c = connect(addr, &format!("ord-sub-{k}"));
    c.subscribe(&format!("ord/{k}"), 1);
    let mut got = Vec::new();
    let deadline = Instant::now() + ORDER_TIME_MAX + FORM_WAIT;
    let mut last_at = Instant::now();
    loop {
        assert!(Instant::now() < deadline, "[ord/{k}] never done");
        let count = count.load(Ordering::Acquire);
        let known = count != u32::MAX;
        if known && (got.last() == Some(&count.wrapping_sub(1)) || last_at.elapsed() > WAIT) {
            if let Some(p) = next_payload(&mut c, QUIET) {
                panic!("[ord/{k}] {p} after the last one: {got:?}");
            }
            return got;
        }
        if let Some(p) = next_payload(&mut c, QUIET) {
            let n = p
                .strip_prefix(&format!("{k}:"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("[ord/{k}] not one of its messages: {p}"));
            got.push(n);
            seen.fetch_add(1, Ordering::Release);
            last_at = Instant::now();
        }
    }
}

/// Order at the switch to the durable path (`docs/cluster.md`, "QoS 1/2 between nodes",
/// *Order*). C publishes numbered QoS 1 messages on six topics, pipelined and interleaved
/// with messages another subscriber on A already takes from A's JetStream queue (so C
/// always has stores under way). Subscribers on A join the topics one after another
/// mid-stream: each topic's first messages reach A by core NATS (C's interest view does
/// not show A's new filter yet), the later ones through A's queue. Each subscriber must
/// get an unbroken, strictly increasing run of its topic's numbers up to the last one.
///
/// The order is promised only while no store fails (`docs/cluster.md`, "Not done yet",
/// *Order after a failed store*): a run in which C counted a failed store checks that
/// every message arrived, not their order. It saturates two nodes and NATS on the
/// machine's cores, and failed once in CI out of order ([178, 165]) with the failure
/// count not kept, so it runs only with `SHARDMQ_CLUSTER_FULL=1` (docs/cluster.md, "Tests").
#[test]
fn qos1_order_holds_when_a_subscription_turns_durable_mid_stream() {
    if std::env::var_os("SHARDMQ_CLUSTER_FULL").is_none() {
        eprintln!("skipped: set SHARDMQ_CLUSTER_FULL=1 to run the saturating order test");
        return;
    }
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    // Both nodes on one NATS server: an interest is on it once the SUBACK came, so each
    // subscriber gets every message from its first one on.
    let a = nats.node_with("ord", "A", 0, &["--admin", "127.0.0.1:0"]);
    let c = nats.node_with("ord", "C", 0, &["--admin", "127.0.0.1:0"]);
    let mut bg = connect(a.addr(), "ord-bg");
    bg.subscribe("bg/#", 1);
    let mut publ = connect(c.addr(), "ord-pub");
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(Instant::now() < deadline, "C never stored for A");
        publ.publish("bg/probe", b"probe", 1, false);
        let arrived = next_payload(&mut bg, Duration::from_millis(50)).is_some();
        if arrived && figure(&c, "queued") > 0 {
            break;
        }
    }
    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_bg = Arc::new(AtomicBool::new(false));
    let bg_reader = {
        let stop = stop_bg.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + ORDER_TIME_MAX + FORM_WAIT;
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                next_payload(&mut bg, Duration::from_millis(20));
            }
        })
    };
    let queued_before = figure(&c, "queued");
    let failed_before = figure(&c, "queue_failed");
    let expired_before = figure(&a, "order_expired");
    let sender = {
        let stop = stop_pub.clone();
        std::thread::spawn(move || publish_ordered(publ, stop))
    };
    let mut readers = Vec::new();
    for k in 0..ORDER_TOPICS {
        let seen = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicU32::new(u32::MAX));
        let (addr, s, n) = (a.addr(), seen.clone(), count.clone());
        readers.push((
            count,
            std::thread::spawn(move || gather_ordered(addr, k, s, n)),
        ));
        let deadline = Instant::now() + FORM_WAIT;
        while seen.load(Ordering::Acquire) < ORDER_SEEN {
            assert!(
                Instant::now() < deadline,
                "ord/{k}: its messages never came"
            );
            assert!(!sender.is_finished(), "the publisher stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop_pub.store(true, Ordering::Release);
    let sent = sender.join().expect("every message PUBACKed");
    for ((count, _), &n) in readers.iter().zip(&sent) {
        count.store(n, Ordering::Release);
    }
    let failed = figure(&c, "queue_failed") - failed_before;
    // A failed store keeps its place (A holds what follows it, `order`) unless its core
    // copy never came within the hold's bound: then only arrival is checked.
    let expired = figure(&a, "order_expired") - expired_before;
    eprintln!("{failed} stores failed, {expired} held messages went at the bound");
    let failed = expired;
    if failed > 0 {
        eprintln!("checking that every message arrived, not the order");
    }
    for (k, (_, r)) in readers.into_iter().enumerate() {
        let mut got = r.join().expect("the subscriber kept its connection");
        if failed > 0 {
            got.sort_unstable();
            got.dedup();
        }
        let first = got.first().copied().expect("some arrived");
        let want: Vec<u32> = (first..sent[k]).collect();
        if got != want {
            let late: Vec<_> = got.windows(2).filter(|w| w[1] <= w[0]).collect();
            panic!(
                "ord/{k}: {} arrived, {} wanted from {first}; out of order: {late:?}",
                got.len(),
                want.len()
            );
        }
    }
    stop_bg.store(true, Ordering::Release);
    bg_reader
        .join()
        .expect("the background subscriber kept its connection");
    // Every `bg/x` message was stored for A: as many as the `ord` ones, or one more.
    let bg_sent: u64 = sent.iter().map(|&n| u64::from(n)).sum::<u64>() + 1;
    let stored = figure(&c, "queued") - queued_before;
    assert!(
        stored > bg_sent,
        "{stored} stored: the ord topics never went durable"
    );
}

/// Run `shardmq cluster-forget -c conf node` (bounded: killed after `FORM_WAIT`): whether
/// it exited 0, its standard output and standard error.
fn cluster_forget(conf: &std::path::Path, node: &str) -> (bool, String, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(Broker::bin())
        .arg("cluster-forget")
        .arg("-c")
        .arg(conf)
        .arg(node)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shardmq cluster-forget");
    let status = common::wait_exit(&mut child, FORM_WAIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let status = status.unwrap_or_else(|| panic!("cluster-forget {node} hung: {out} {err}"));
    (status.success(), out, err)
}

/// The number before `what` in a `cluster-forget` report.
fn reported(out: &str, what: &str) -> u64 {
    let before = out
        .split(what)
        .next()
        .filter(|b| b.len() < out.len())
        .unwrap_or_else(|| panic!("no '{what}' in {out:?}"));
    before
        .rsplit(' ')
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count before '{what}' in {out:?}"))
}

/// The interest entries a failed `cluster-forget` run had deleted before it failed (it
/// says so after a NATS failure: "removed before that: N interest entries, …"; 0 for a
/// refusal, which removes nothing).
fn deleted_before_failing(err: &str) -> u64 {
    if err.contains("removed before that:") {
        reported(err, "interest entries,")
    } else {
        0
    }
}

/// The count is read from the command's own error text, so the forget test's sum cannot
/// silently turn to 0 if that text changes.
#[test]
fn deleted_before_failing_reads_what_a_failed_run_removed() {
    use shardmq::cluster::forget::{ForgetError, Forgotten};
    let failed = ForgetError::Nats {
        what: "cannot delete consumer B: timed out".into(),
        done: Forgotten {
            interest_entries: 3,
            ..Forgotten::default()
        },
    };
    let err = format!("shardmq: cluster fgc: node B: {failed}\n");
    assert_eq!(deleted_before_failing(&err), 3, "{err}");
    let refused = ForgetError::Alive("node B is alive".into());
    assert_eq!(deleted_before_failing(&format!("{refused}")), 0);
}

/// `shardmq cluster-forget`: refused while the node lives; once it is dead (SIGKILL, with
/// QoS 1 messages stored in its queue since), it deletes the node's interest entry, its
/// consumer and its queue, A stops storing for it and keeps serving, and a second run
/// finds nothing more than what A stored before it learnt of the deletion; B restarted
/// on its store is a member again.
#[test]
fn cluster_forget_removes_a_dead_node_and_refuses_a_live_one() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    let admin = ["--admin", "127.0.0.1:0"];
    let store = tempfile::tempdir().unwrap();
    let path = store.path().to_str().unwrap().to_string();
    let b_args = ["--data-dir", path.as_str(), "--admin", "127.0.0.1:0"];
    let a = nats.node_with("fgt", "A", 0, &admin);
    let mut b = nats.node_with("fgt", "B", 1, &b_args);
    let conf = nats.dir.path().join("fgt-A.conf");
    let o = Conn5::new("fgt-sub").clean(false).expiry(600);
    let (mut sub, _) = open5(b.addr(), &o);
    sub.subscribe("f/#", 1);
    let mut publ = connect(a.addr(), "fgt-pub");
    await_stored_for(&a, &mut publ, &mut sub, "f/probe");

    // B is alive: refused, nothing removed, B still served through its queue.
    let (ok, out, err) = cluster_forget(&conf, "B");
    assert!(!ok, "a live node must not be forgotten: {out} {err}");
    assert!(err.contains("is alive"), "says why: {err}");
    let queued = figure(&a, "queued");
    publ.publish("f/live", b"live", 1, false);
    let mut got = BTreeMap::new();
    gather(&mut sub, &mut got, WAIT, |g| g.contains_key("live"));
    assert!(got.contains_key("live"), "B still served: {got:?}");
    assert_eq!(
        figure(&a, "queued"),
        queued + 1,
        "B's interest is still there"
    );
    drop(sub);

    // B dies; A stores what it accepts for B.
    common::signal(b.pid(), libc::SIGKILL);
    assert!(b.wait(WAIT).is_some(), "node B is gone");
    let queued = figure(&a, "queued");
    for i in 0..10 {
        publ.publish("f/x", format!("{i}").as_bytes(), 1, false);
    }
    let stored = figure(&a, "queued") - queued;
    assert!(stored > 0, "A stored nothing for dead B");

    let (ok, out, err) = cluster_forget(&conf, "B");
    assert!(ok, "forgetting dead B: {out} {err}");
    assert_eq!(reported(&out, "interest entries deleted"), 1, "{out}");
    assert!(out.contains("consumer deleted"), "{out}");
    let purged = reported(&out, "queued messages purged");
    assert!(purged >= stored, "{stored} stored, {purged} purged: {out}");
    let after_forget = figure(&a, "queued");

    // A's watcher drops B's entry: from then on nothing is stored for B.
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(Instant::now() < deadline, "A still stores for forgotten B");
        let before = figure(&a, "queued");
        publ.publish("f/x", b"late", 1, false);
        if figure(&a, "queued") == before {
            break;
        }
    }
    let since = figure(&a, "queued") - after_forget;
    for _ in 0..5 {
        publ.publish("f/x", b"later", 1, false);
    }
    assert_eq!(
        figure(&a, "queued") - after_forget,
        since,
        "nothing stored for B"
    );
    // Again: no entry, no consumer; only what A stored before its watcher saw the deletion.
    let (ok, out, err) = cluster_forget(&conf, "B");
    assert!(ok, "a second run is fine: {out} {err}");
    assert_eq!(reported(&out, "interest entries deleted"), 0, "{out}");
    assert!(out.contains("consumer absent"), "{out}");
    assert_eq!(reported(&out, "queued messages purged"), since, "{out}");

    // A keeps serving.
    let mut local = connect(a.addr(), "fgt-local");
    local.subscribe("f/#", 1);
    publ.publish("f/x", b"still", 1, false);
    assert_eq!(exactly(&mut local, 1), ["still"]);

    // Not a ban: B restarted on its store writes its restored interest again, A stores
    // for it again, and its client gets what is published from then on.
    let b = nats.node_with("fgt", "B", 1, &b_args);
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(Instant::now() < deadline, "A never stored for B again");
        let before = figure(&a, "queued");
        publ.publish("f/x", b"back", 1, false);
        if figure(&a, "queued") > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut sub, ack) = open5(b.addr(), &o);
    assert!(ack.present, "B restored the session: {ack:?}");
    let mut got = BTreeMap::new();
    gather(&mut sub, &mut got, FORM_WAIT, |g| g.contains_key("back"));
    assert!(
        got.contains_key("back"),
        "B serves its client again: {got:?}"
    );
}

/// `--cluster-forget-after` of the automatic removal tests: short, so a test waits
/// seconds, not minutes.
const FORGET_AFTER: &str = "2";
/// The arguments of a node in the automatic-removal tests: an admin listener for the
/// figures and the short limit.
const AUTO_FORGET: [&str; 4] = [
    "--admin",
    "127.0.0.1:0",
    "--cluster-forget-after",
    FORGET_AFTER,
];

/// Node `name`'s heartbeat as `node` shows it on `/metrics`: (state, age in seconds).
fn heartbeat(node: &Broker, name: &str) -> Option<(String, f64)> {
    let body = metrics(node.admin_addr().expect("admin listener"));
    let prefix = format!("shardmq_cluster_node_heartbeat_age_seconds{{node=\"{name}\",state=\"");
    body.lines().find_map(|l| {
        let (state, age) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
        Some((state.to_string(), age.trim().parse().ok()?))
    })
}

/// Wait (bounded by `FORM_WAIT`) until `node` shows `name`'s heartbeat in `state`.
fn await_heartbeat(node: &Broker, name: &str, state: &str) {
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        match heartbeat(node, name) {
            Some((s, _)) if s == state => return,
            other => assert!(
                Instant::now() < deadline,
                "{name} never {state} on this node: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (bounded by `FORM_WAIT`) until `publ`'s QoS 1 publishes on `topic` are no longer
/// stored for another node by `a` (figure `queued` stays put over one publish).
fn await_not_stored(a: &Broker, publ: &mut RawClient, topic: &str) {
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "A still stores for the forgotten node"
        );
        let before = figure(a, "queued");
        publ.publish(topic, b"late", 1, false);
        if figure(a, "queued") == before {
            return;
        }
    }
}

/// `cluster_forget_after`: node B (a persistent subscriber offline on it, its own store)
/// is killed with SIGKILL while A and C, both with a 2 s limit, live on. QoS 1 messages
/// published on A right after are stored in B's queue. Exactly one of A and C removes B
/// (figure `forgot` summed is 1, and stays 1), both show B `forgotten`; A stops storing
/// for B. B's client reconnects to C: Session Present 1 and every message stored for it
/// (the automatic removal keeps B's queue). Afterwards `shardmq cluster-forget` finds no
/// interest entry and no consumer of B left.
#[test]
fn a_killed_node_is_forgotten_by_exactly_one_survivor_and_its_sessions_resume_elsewhere() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let path = store.path().to_str().unwrap().to_string();
    let auto = AUTO_FORGET;
    let mut b_args = vec!["--data-dir", path.as_str()];
    b_args.extend_from_slice(&auto);
    let a = nats.node_with("auto", "A", 0, &auto);
    let mut b = nats.node_with("auto", "B", 1, &b_args);
    let c = nats.node_with("auto", "C", 2, &auto);
    let o = Conn5::new("auto-sub").clean(false).expiry(600);
    let (mut sub, _) = open5(b.addr(), &o);
    sub.subscribe("fa/#", 1);
    let mut publ = connect(a.addr(), "auto-pub");
    await_stored_for(&a, &mut publ, &mut sub, "fa/probe");
    sub.disconnect();
    for n in [&a, &c] {
        await_heartbeat(n, "B", "alive");
    }

    common::signal(b.pid(), libc::SIGKILL);
    assert!(b.wait(WAIT).is_some(), "node B is gone");
    let queued = figure(&a, "queued");
    let owed: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    for d in &owed {
        publ.publish("fa/x", d.as_bytes(), 1, false);
    }
    assert!(figure(&a, "queued") > queued, "A stored nothing for dead B");

    let deadline = Instant::now() + FORM_WAIT;
    while figure(&a, "forgot") + figure(&c, "forgot") == 0 {
        assert!(Instant::now() < deadline, "nobody forgot B");
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in [&a, &c] {
        await_heartbeat(n, "B", "forgotten");
    }
    await_not_stored(&a, &mut publ, "fa/x");
    // Both see B forgotten: a removal the other had under way lost its compare-and-set.
    assert_eq!(
        figure(&a, "forgot") + figure(&c, "forgot"),
        1,
        "exactly one survivor removed B"
    );

    // B's session moves to C with what was stored for it before the removal.
    let (mut sub, ack) = open5(c.addr(), &o);
    assert!(ack.present, "B's session outlived its removal: {ack:?}");
    let mut got = BTreeMap::new();
    gather(&mut sub, &mut got, FORM_WAIT, |g| {
        owed.iter().all(|d| g.contains_key(d))
    });
    let missing: Vec<&String> = owed.iter().filter(|d| !got.contains_key(*d)).collect();
    assert!(
        missing.is_empty(),
        "stored for B, never delivered on C: {missing:?}"
    );
    assert!(figure(&c, "reclaimed") >= 10, "copied from B's kept queue");
    publ.publish("fa/x", b"after", 1, false);
    gather(&mut sub, &mut got, FORM_WAIT, |g| g.contains_key("after"));
    assert!(got.contains_key("after"), "served on C: {got:?}");

    // Nothing of B left for the operator's command but its queue.
    let conf = nats.dir.path().join("auto-A.conf");
    let (ok, out, err) = cluster_forget(&conf, "B");
    assert!(ok, "{out} {err}");
    assert_eq!(reported(&out, "interest entries deleted"), 0, "{out}");
    assert!(out.contains("consumer absent"), "{out}");
    drop((a, c));
}

/// `cluster_forget_after` never removes a node that lives: A, B and C with a 2 s limit,
/// a persistent subscriber on B, messages from A every 100 ms for four limits. Nobody
/// removes anybody, A and C see B's heartbeat `alive`, and every message is stored for B
/// and delivered.
#[test]
fn a_live_node_is_never_forgotten() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    let auto = AUTO_FORGET;
    let a = nats.node_with("live", "A", 0, &auto);
    let b = nats.node_with("live", "B", 1, &auto);
    let c = nats.node_with("live", "C", 2, &auto);
    let o = Conn5::new("live-sub").clean(false).expiry(600);
    let (mut sub, _) = open5(b.addr(), &o);
    sub.subscribe("lv/#", 1);
    let mut publ = connect(a.addr(), "live-pub");
    await_stored_for(&a, &mut publ, &mut sub, "lv/probe");
    let queued = figure(&a, "queued");
    let mut got = BTreeMap::new();
    let rounds = 80;
    for i in 0..rounds {
        publ.publish("lv/x", format!("m{i}").as_bytes(), 1, false);
        gather(&mut sub, &mut got, Duration::from_millis(100), |_| false);
    }
    gather(&mut sub, &mut got, FORM_WAIT, |g| g.len() == rounds);
    for n in [&a, &b, &c] {
        assert_eq!(figure(n, "forgot"), 0, "a live node was removed");
        assert_eq!(figure(n, "rejoined"), 0, "a live node was removed");
    }
    for n in [&a, &c] {
        await_heartbeat(n, "B", "alive");
    }
    assert_eq!(got.len(), rounds, "every message reached B: {got:?}");
    assert_eq!(
        figure(&a, "queued") - queued,
        rounds as u64,
        "each was stored for B"
    );
}

/// A node cut off from NATS past the limit is removed, and joins again when it is back.
/// Node B (a persistent subscriber on it) is frozen with SIGSTOP and its NATS server is
/// killed, so B neither beats nor is subscribed anywhere: A (2 s limit) finds nobody on
/// B's control subjects and removes it. B resumed (SIGCONT) reconnects to another server,
/// finds its key `forgotten`, counts `rejoined` and writes its interest again: A stores
/// for it again and its subscriber gets a message published after.
#[test]
fn a_node_cut_off_past_the_limit_is_forgotten_and_joins_again() {
    let _one_at_a_time = three_nodes_lock();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let auto = AUTO_FORGET;
    let a = nats.node_with("cut", "A", 0, &auto);
    let b = nats.node_with("cut", "B", 1, &auto);
    let o = Conn5::new("cut-sub").clean(false).expiry(600);
    let (mut sub, _) = open5(b.addr(), &o);
    sub.subscribe("ct/#", 1);
    let mut publ = connect(a.addr(), "cut-pub");
    await_stored_for(&a, &mut publ, &mut sub, "ct/probe");
    await_heartbeat(&a, "B", "alive");

    common::signal(b.pid(), libc::SIGSTOP);
    nats.kill(1);
    let deadline = Instant::now() + FORM_WAIT;
    while figure(&a, "forgot") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    common::signal(b.pid(), libc::SIGCONT);
    assert_eq!(figure(&a, "forgot"), 1, "A never removed cut-off B");

    await_figure(&b, "rejoined", 1);
    await_heartbeat(&a, "B", "alive");
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(Instant::now() < deadline, "A never stored for B again");
        let before = figure(&a, "queued");
        publ.publish("ct/x", b"back", 1, false);
        if figure(&a, "queued") > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut got = BTreeMap::new();
    gather(&mut sub, &mut got, FORM_WAIT, |g| g.contains_key("back"));
    assert!(
        got.contains_key("back"),
        "B serves its subscriber again: {got:?}"
    );
    assert_eq!(figure(&a, "forgot"), 1, "removed once");
}

/// A share group whose members are all on the publishing node is served there, without
/// its JetStream queue: `$share/lg/lo/#` with a member on A only, 50 QoS 1 messages
/// published on A reach it once each and A stores none (`shared_queued` 0; before, each
/// was stored and read back). Once a member on B exists and A's view shows it, A's
/// messages go through the group's queue again, each to exactly one of the two members.
#[test]
fn a_share_group_with_members_only_on_the_publishing_node_skips_its_queue() {
    let _one_at_a_time = three_nodes_lock();
    let Some(nats) = Nats::start() else {
        return;
    };
    let admin = ["--admin", "127.0.0.1:0"];
    let a = nats.node_with("loc", "A", 0, &admin);
    let b = nats.node("loc", "B", 1);
    let filter = "$share/lg/lo/#";
    let (mut m1, _) = open5(a.addr(), &Conn5::new("loc-a"));
    m1.subscribe(filter, 1);
    let mut publ = connect(a.addr(), "loc-pub");
    let n = 50;
    for i in 0..n {
        publ.publish("lo/k", format!("l{i}").as_bytes(), 1, false);
    }
    let mut got = BTreeMap::new();
    gather_members(&mut [&mut m1], &mut got, WAIT, |g| g.len() >= n);
    gather_members(&mut [&mut m1], &mut got, QUIET, |_| false);
    assert_eq!(got.len(), n, "all arrived, nothing else: {got:?}");
    assert!(got.values().all(|&k| k == 1), "once each: {got:?}");
    assert_eq!(
        figure(&a, "shared_queued"),
        0,
        "none stored in the group's queue"
    );

    // A member on B: once A's view shows it, A stores in the group's queue again.
    let (mut m2, _) = open5(b.addr(), &Conn5::new("loc-b"));
    m2.subscribe(filter, 1);
    let deadline = Instant::now() + FORM_WAIT;
    let mut probes = BTreeMap::new();
    let mut i = 0;
    while figure(&a, "shared_queued") == 0 {
        assert!(
            Instant::now() < deadline,
            "A never stored for the group again"
        );
        i += 1;
        publ.publish("lo/k", format!("p{i}").as_bytes(), 1, false);
        gather_members(&mut [&mut m1, &mut m2], &mut probes, QUIET, |_| false);
    }
    gather_members(&mut [&mut m1, &mut m2], &mut probes, WAIT, |g| g.len() >= i);
    assert_eq!(probes.len(), i, "every probe reached a member: {probes:?}");
    let stored = figure(&a, "shared_queued");
    let mut got = BTreeMap::new();
    for i in 0..n {
        publ.publish("lo/k", format!("r{i}").as_bytes(), 1, false);
    }
    gather_members(&mut [&mut m1, &mut m2], &mut got, WAIT, |g| g.len() >= n);
    gather_members(&mut [&mut m1, &mut m2], &mut got, QUIET, |_| false);
    assert_eq!(got.len(), n, "all arrived, nothing else: {got:?}");
    assert!(got.values().all(|&k| k == 1), "each to one member: {got:?}");
    assert_eq!(
        figure(&a, "shared_queued"),
        stored + n as u64,
        "each stored in the group's queue"
    );
}

/// A node back from a cut-off checks its live sessions against the registry. Client X
/// (5.0, persistent, `rj/#` at QoS 1) is on A; A is frozen (SIGSTOP) and its NATS server
/// killed, so A is attached nowhere and the takeover notice sent to it is lost. A QoS 1
/// message published on C is stored in A's queue; X reconnects on B: Session Present 1,
/// the message copied from A's queue. A resumed reconnects to another server: X's old
/// connection there gets DISCONNECT 0x8E (before it, not that message), A counts
/// `superseded` 1, and X on B stays connected and has that message exactly once when a
/// message published on A after the 0x8E reaches it (anything A handed over comes before
/// that message: same NATS connection, same order).
#[test]
fn a_session_taken_over_while_its_node_was_cut_off_is_ended_there_when_it_is_back() {
    let _one_at_a_time = three_nodes_lock();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let admin = ["--admin", "127.0.0.1:0"];
    let a = nats.node_with("rj", "A", 0, &admin);
    let b = nats.node_with("rj", "B", 1, &admin);
    let c = nats.node_with("rj", "C", 2, &admin);
    let mut o = Conn5::new("rj-x").clean(false).expiry(600);
    // A is frozen for a while: its keepalive must not end the old connection.
    o.keep_alive = 600;
    let (mut old, _) = open5(a.addr(), &o);
    old.subscribe("rj/#", 1);
    let mut publ = connect(c.addr(), "rj-pub");
    await_stored_for(&c, &mut publ, &mut old, "rj/probe");

    common::signal(a.pid(), libc::SIGSTOP);
    nats.kill(0);
    // Stored in A's queue (a store failing in a leader election goes by core NATS only,
    // lost for cut-off A: publish again until one is stored).
    let deadline = Instant::now() + FORM_WAIT;
    let mut stored = None;
    for i in 0.. {
        assert!(Instant::now() < deadline, "C never stored for cut-off A");
        let before = figure(&c, "queued");
        let m = format!("m{i}");
        publ.publish("rj/m", m.as_bytes(), 1, false);
        if figure(&c, "queued") > before {
            stored = Some(m);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored = stored.expect("one stored");

    // X moves to B: A cannot be told.
    let (mut x, ack) = open5(b.addr(), &o);
    assert!(
        ack.present,
        "the session's subscriptions came along: {ack:?}"
    );
    let mut got = BTreeMap::new();
    assert!(gather(&mut x, &mut got, FORM_WAIT, |g| g.contains_key(&stored)));
    assert_eq!(got.get(&stored), Some(&1), "copied from A's queue: {got:?}");

    // A is back: its check ends its copy of X.
    common::signal(a.pid(), libc::SIGCONT);
    let before_close = old.wait_closed(FORM_WAIT);
    let reasons: Vec<u8> = before_close
        .iter()
        .filter_map(|p| match p {
            v5::P5::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [0x8E],
        "old connection: {:?}",
        v5::briefs(&before_close)
    );
    let late = before_close
        .iter()
        .any(|p| matches!(p, v5::P5::Publish(m) if m.text() == stored));
    assert!(
        !late,
        "A delivered {stored} to the session its new owner had copied it for"
    );
    assert_eq!(figure(&a, "superseded"), 1, "A ended one session");

    // X on B is unaffected and got the message once, whatever A handed over.
    let mut on_a = connect(a.addr(), "rj-late");
    on_a.publish("rj/after", b"after", 0, false);
    assert!(
        gather(&mut x, &mut got, FORM_WAIT, |g| g.contains_key("after")),
        "X on B lost its connection"
    );
    assert!(got.contains_key("after"), "X on B still served: {got:?}");
    assert_eq!(got.get(&stored), Some(&1), "{stored} once on B: {got:?}");
    assert_eq!(figure(&b, "superseded"), 0);
    drop((b, c));
}

/// `shardmq cluster-forget` marks the node's heartbeat key as the automatic removal does.
/// Node B (a persistent subscriber on it) is frozen (SIGSTOP) and its NATS server killed:
/// the command, run with A's file, finds nobody on B's control subjects, removes B's
/// interest and marks its key `forgotten`; A stops storing for B. B resumed reconnects to
/// another server, finds its key `forgotten`, counts `rejoined` and writes its interest
/// again: A stores for it again and its subscriber gets a message published after.
#[test]
fn cluster_forget_marks_a_cut_off_node_which_joins_again() {
    let _one_at_a_time = three_nodes_lock();
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let admin = ["--admin", "127.0.0.1:0"];
    let a = nats.node_with("fgc", "A", 0, &admin);
    let b = nats.node_with("fgc", "B", 1, &admin);
    let conf = nats.dir.path().join("fgc-A.conf");
    let mut o = Conn5::new("fgc-sub").clean(false).expiry(600);
    // B is frozen for a while: its keepalive must not end the subscriber's connection.
    o.keep_alive = 600;
    let (mut sub, _) = open5(b.addr(), &o);
    sub.subscribe("fc/#", 1);
    let mut publ = connect(a.addr(), "fgc-pub");
    await_stored_for(&a, &mut publ, &mut sub, "fc/probe");
    await_heartbeat(&a, "B", "alive");

    common::signal(b.pid(), libc::SIGSTOP);
    nats.kill(1);
    // Until NATS has dropped B's subscriptions with its server, B still looks alive, and
    // JetStream elects new leaders for what B's server led (requests time out): again.
    // A run that fails after deleting B's entries (a later request timed out) says how
    // many it deleted, and the next run finds none left: B's entries are what all runs
    // deleted together.
    let deadline = Instant::now() + FORM_WAIT;
    let (mut deleted, mut runs) = (0, Vec::new());
    let out = loop {
        let (ok, out, err) = cluster_forget(&conf, "B");
        if ok {
            deleted += reported(&out, "interest entries deleted");
            break out;
        }
        deleted += deleted_before_failing(&err);
        runs.push(err);
        assert!(
            Instant::now() < deadline,
            "cut-off B never forgotten: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.contains("heartbeat key marked forgotten"), "{out}");
    assert!(
        deleted >= 1,
        "B's interest entries deleted: {out} after {runs:?}"
    );
    await_heartbeat(&a, "B", "forgotten");
    await_not_stored(&a, &mut publ, "fc/x");

    common::signal(b.pid(), libc::SIGCONT);
    await_figure(&b, "rejoined", 1);
    await_heartbeat(&a, "B", "alive");
    let deadline = Instant::now() + FORM_WAIT;
    loop {
        assert!(Instant::now() < deadline, "A never stored for B again");
        let before = figure(&a, "queued");
        publ.publish("fc/x", b"back", 1, false);
        if figure(&a, "queued") > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut got = BTreeMap::new();
    gather(&mut sub, &mut got, FORM_WAIT, |g| g.contains_key("back"));
    assert!(
        got.contains_key("back"),
        "B serves its subscriber again: {got:?}"
    );
    assert_eq!(figure(&b, "superseded"), 0, "B's own session stays");
}
