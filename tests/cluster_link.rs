//! The cluster link against a real `nats-server` with JetStream: links stand for nodes.
//!
//! Each test starts its own server on a loopback port it picks, with a temporary store, and
//! kills it (by PID) when done. Without `nats-server` on PATH the tests print why and pass.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::nats::NatsCluster;
use shardmq::cluster::{Envelope, FromLink, LinkHandle, LinkStats, Route, ToLink};
use shardmq::config::cluster::{ClusterConfig, NatsAuth};
use shardmq::protocol::QoS;

const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(300);
/// Bound for what waits on JetStream re-electing stream leaders after a server is lost
/// (measured here: up to about 20 s on a loaded two-core machine).
const FAILOVER_WAIT: Duration = Duration::from_secs(60);

struct NatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// `None` (with the reason printed) when `nats-server` is not installed. The server
    /// picks its own free port (`-p -1`) and we read it from its log, so two tests can
    /// never race for one port.
    fn start() -> Option<NatsServer> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn(&dir, None);
        Some(NatsServer { child, port, dir })
    }

    /// Kill the server and start it again on the same port and store.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.dir, Some(self.port)).0;
    }
}

/// Start `nats-server -js` on `port` (or one it picks) and wait until it listens.
fn spawn(dir: &tempfile::TempDir, port: Option<u16>) -> (Child, u16) {
    let wanted = port.map_or("-1".to_string(), |p| p.to_string());
    let mut child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &wanted, "-js", "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to its end, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                let _ = tx.send(
                    addr.rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok()),
                );
            }
        }
    });
    let port = rx
        .recv_timeout(WAIT)
        .ok()
        .flatten()
        .expect("nats-server did not listen");
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not accept");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    link: LinkHandle,
    wakes: Arc<AtomicUsize>,
}

fn node(server: &NatsServer, cluster: &str, name: &str) -> Node {
    node_on(&[server.port], 1, cluster, name)
}

fn node_on(ports: &[u16], kv_replicas: usize, cluster: &str, name: &str) -> Node {
    node_with(ports, kv_replicas, cluster, name, 0)
}

/// A node of `shards` shards: its queue consumer waits until each has sent
/// `ToLink::Restored` (0: it starts at once).
fn node_with(ports: &[u16], kv_replicas: usize, cluster: &str, name: &str, shards: usize) -> Node {
    let n = node_starting(ports, kv_replicas, cluster, name, shards);
    n.expect(|m| matches!(m, FromLink::Up));
    n
}

/// A node whose link is starting: it may not be connected yet.
fn node_starting(
    ports: &[u16],
    kv_replicas: usize,
    cluster: &str,
    name: &str,
    shards: usize,
) -> Node {
    let cfg = ClusterConfig {
        name: cluster.into(),
        node: name.into(),
        nats: ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect(),
        cafile: None,
        auth: NatsAuth::None,
        kv_replicas,
        forget_after: None,
    };
    let wakes = Arc::new(AtomicUsize::new(0));
    let w = wakes.clone();
    let link = LinkHandle::start_for(
        cfg,
        Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }),
        shards,
    )
    .unwrap();
    Node { link, wakes }
}

impl Node {
    fn send(&self, m: ToLink) {
        assert!(self.link.sender().send(m));
    }

    /// The first message satisfying `pred` within `WAIT`; others are skipped.
    #[track_caller]
    fn expect(&self, pred: impl Fn(&FromLink) -> bool) -> FromLink {
        self.expect_within(WAIT, pred)
    }

    #[track_caller]
    fn expect_within(&self, wait: Duration, pred: impl Fn(&FromLink) -> bool) -> FromLink {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.link.receiver().recv_timeout(left) {
                Ok(m) if pred(&m) => return m,
                Ok(_) => {}
                Err(e) => panic!("nothing matching arrived: {e}"),
            }
        }
    }

    /// Every message arriving until `QUIET` passes without one.
    fn rest(&self) -> Vec<FromLink> {
        std::iter::from_fn(|| self.link.receiver().recv_timeout(QUIET).ok()).collect()
    }

    fn interest(&self, filter: &str, group: Option<&str>) {
        let (filter, group) = (filter.to_string(), group.map(str::to_string));
        self.send(ToLink::Interest {
            filter: filter.clone(),
            group: group.clone(),
            ack: None,
        });
        // The answer waits for the interest bucket, which a JetStream cluster just formed
        // (a meta leader elected, then the bucket's) may take a while to serve.
        self.expect_within(FAILOVER_WAIT, |m| {
            matches!(m, FromLink::InterestReady { filter: f, group: g, .. } if *f == filter && *g == group)
        });
    }

    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.send(ToLink::Publish {
            envelope: Box::new(Envelope {
                origin: String::new(),
                seq: 0,
                topic: topic.into(),
                qos: QoS::AtLeastOnce,
                retain,
                expiry_secs: None,
                props: None,
                payload: payload.to_vec(),
            }),
            ack: None,
            msg_id: None,
            served: Vec::new(),
        });
    }

    #[track_caller]
    fn claim(&self, client_id: &str, token: u64) -> Option<String> {
        self.send(ToLink::Claim {
            client_id: client_id.into(),
            token,
        });
        match self.expect(|m| matches!(m, FromLink::Claimed { token: t, .. } if *t == token)) {
            FromLink::Claimed { previous, .. } => previous,
            _ => unreachable!(),
        }
    }
}

impl Node {
    /// Whether the registry entry was removed.
    #[track_caller]
    fn release(&self, client_id: &str) -> bool {
        self.send(ToLink::Release {
            client_id: client_id.into(),
        });
        match self
            .expect(|m| matches!(m, FromLink::Released { client_id: c, .. } if c == client_id))
        {
            FromLink::Released { removed, .. } => removed,
            _ => unreachable!(),
        }
    }
}

fn message(m: &FromLink) -> Option<(&Route, &Envelope)> {
    match m {
        FromLink::Message {
            route, envelope, ..
        } => Some((route, envelope)),
        _ => None,
    }
}

#[test]
fn a_message_crosses_to_the_node_with_interest_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (node(&server, "t1", "A"), node(&server, "t1", "B"));
    // Two overlapping filters on B: NATS sends B two copies, B passes on one.
    b.interest("a/+", None);
    b.interest("a/#", None);
    a.interest("a/#", None);
    a.publish("c/d", b"nobody", false);
    a.publish("a/b", b"x", false);
    let got = b.expect(|m| message(m).is_some());
    let (route, e) = message(&got).unwrap();
    assert_eq!(*route, Route::Plain);
    assert_eq!(
        (e.topic.as_str(), &e.payload[..], e.origin.as_str()),
        ("a/b", &b"x"[..], "A")
    );
    assert_eq!(e.qos, QoS::AtLeastOnce);
    assert!(
        b.rest().iter().all(|m| message(m).is_none()),
        "one copy only"
    );
    assert!(
        a.rest().iter().all(|m| message(m).is_none()),
        "A never gets its own"
    );
    let stats = b.link.stats();
    assert_eq!(LinkStats::get(&stats.received), 1);
    // Two core copies, and a third from B's queue when A's interest view already names
    // B (a QoS 1 message is stored for the nodes the view names): one passed on.
    let dups = LinkStats::get(&stats.duplicates);
    assert!((1..=2).contains(&dups), "{dups} duplicates");
    assert_eq!(
        LinkStats::get(&a.link.stats().duplicates),
        1,
        "own echo dropped"
    );
    assert!(b.wakes.load(Ordering::Relaxed) > 0);
    // Without interest, nothing arrives.
    b.send(ToLink::NoInterest {
        filter: "a/+".into(),
        group: None,
    });
    b.send(ToLink::NoInterest {
        filter: "a/#".into(),
        group: None,
    });
    b.interest("z", None); // a round trip after the unsubscriptions
    let long = format!("{}/#", "a".repeat(4000));
    for bad in ["a/#/b", long.as_str()] {
        b.send(ToLink::Interest {
            filter: bad.into(),
            group: None,
            ack: None,
        });
        b.expect(|m| matches!(m, FromLink::InterestRefused { filter, .. } if filter == bad));
    }
    a.publish("a/b", b"late", false);
    assert!(b.rest().iter().all(|m| message(m).is_none()));
}

#[test]
fn the_session_registry_moves_a_client_id_by_compare_and_set() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b, c) = (
        node(&server, "t2", "A"),
        node(&server, "t2", "B"),
        node(&server, "t2", "C"),
    );
    assert_eq!(a.claim("dev1", 1), None);
    assert_eq!(a.claim("dev1", 2), None, "reconnect to the same node");
    assert_eq!(b.claim("dev1", 3), Some("A".into()));
    let taken = a.expect(|m| matches!(m, FromLink::TakenOver { .. }));
    assert_eq!(
        taken,
        FromLink::TakenOver {
            client_id: "dev1".into(),
            by: "B".into()
        }
    );
    // A's late release must not remove B's entry.
    assert!(!a.release("dev1"));
    assert_eq!(c.claim("dev1", 4), Some("B".into()));
    assert!(c.release("dev1"));
    assert_eq!(a.claim("dev1", 5), None, "released by its owner");

    // Two nodes claiming at once: one wins first, the other sees it as the previous owner.
    b.send(ToLink::Claim {
        client_id: "dev2".into(),
        token: 6,
    });
    c.send(ToLink::Claim {
        client_id: "dev2".into(),
        token: 7,
    });
    let pb = match b.expect(|m| matches!(m, FromLink::Claimed { token: 6, .. })) {
        FromLink::Claimed { previous, .. } => previous,
        _ => unreachable!(),
    };
    let pc = match c.expect(|m| matches!(m, FromLink::Claimed { token: 7, .. })) {
        FromLink::Claimed { previous, .. } => previous,
        _ => unreachable!(),
    };
    let answers = [pb, pc];
    assert!(
        answers == [None, Some("B".into())] || answers == [Some("C".into()), None],
        "{answers:?}"
    );
}

/// The registry's answer to a claim reaches the node before the old node's state can:
/// the link passes `Claimed` on before it sends the takeover notice that makes the old
/// node send the state (`docs/cluster.md`, "Session registry"), so the state always finds
/// the CONNECT waiting. Node A holds each client id; B claims it; A's side answers the
/// notice at once with a state: B's node gets `Claimed` (previous A) first, then the
/// state, in every round. The order is the link's by construction (one queue, the answer
/// pushed before the notice is published), so the test cannot pass by luck with the fix
/// and fails whenever the old order lets a quick state overtake the answer.
#[test]
fn a_claims_answer_comes_before_the_old_nodes_state() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (node(&server, "t9", "A"), node(&server, "t9", "B"));
    for round in 0..20u64 {
        let id = format!("hx{round}");
        assert_eq!(a.claim(&id, 100 + round), None);
        b.send(ToLink::Claim {
            client_id: id.clone(),
            token: 200 + round,
        });
        a.expect(|m| matches!(m, FromLink::TakenOver { client_id, .. } if *client_id == id));
        a.send(ToLink::Handover {
            to: "B".into(),
            client_id: id.clone(),
            state: vec![1, 2, 3],
        });
        let first = b.expect(|m| {
            matches!(m, FromLink::Claimed { client_id, .. } | FromLink::SessionState { client_id, .. } if *client_id == id)
        });
        assert!(
            matches!(&first, FromLink::Claimed { previous: Some(p), .. } if p == "A"),
            "round {round}: the state overtook the answer: {first:?}"
        );
        b.expect(|m| {
            matches!(m, FromLink::SessionState { client_id, state } if *client_id == id && state.as_slice() == [1, 2, 3])
        });
    }
}

#[test]
fn retained_messages_are_in_the_bucket_for_every_node() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = node(&server, "t3", "A");
    a.publish("r/1", b"v1", true);
    a.publish("r/2", b"v2", true);
    a.publish("r/2", b"", true);
    // B starts afterwards and still learns the bucket's content.
    let b = node(&server, "t3", "B");
    let want = |topic: &'static str| move |m: &FromLink| matches!(m, FromLink::Retained { topic: t, .. } if t == topic);
    match b.expect(want("r/1")) {
        FromLink::Retained {
            message: Some(e), ..
        } => {
            assert_eq!(
                (&e.payload[..], e.origin.as_str(), e.retain),
                (&b"v1"[..], "A", true)
            )
        }
        other => panic!("{other:?}"),
    }
    // B may start while A's writes are still landing: it sees v2 then its deletion, or
    // only the deletion, and ends with none.
    b.expect(|m| matches!(m, FromLink::Retained { topic, message: None } if topic == "r/2"));
    // And a live change.
    a.publish("r/1", b"", true);
    assert!(matches!(
        b.expect(want("r/1")),
        FromLink::Retained { message: None, .. }
    ));
}

#[test]
fn a_shared_subscription_gets_each_message_once_across_nodes() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let nodes = [
        node(&server, "t4", "A"),
        node(&server, "t4", "B"),
        node(&server, "t4", "C"),
    ];
    for n in &nodes {
        n.interest("s/#", Some("g"));
    }
    // Another group on another filter gets its own copy of each.
    nodes[1].interest("s/+", Some("g"));
    const N: usize = 40;
    for i in 0..N {
        nodes[0].publish("s/x", format!("{i}").as_bytes(), false);
    }
    // Wait for every copy (N per filter), then make sure no extra one follows.
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 2 * N {
        assert!(
            Instant::now() < deadline,
            "only {} of {} arrived: {:?}",
            seen.len(),
            2 * N,
            seen.iter()
                .map(|(i, m)| match message(m) {
                    Some((r, e)) => format!("{i}:{r:?}:{}", String::from_utf8_lossy(&e.payload)),
                    None => format!("{i}:{m:?}"),
                })
                .collect::<Vec<_>>()
        );
        for (i, n) in nodes.iter().enumerate() {
            while let Ok(m) = n.link.receiver().recv_timeout(Duration::from_millis(5)) {
                // From the group's queue: settled, or it would come again.
                if let FromLink::Message {
                    token: Some(token), ..
                } = m
                {
                    n.send(ToLink::Settle { token });
                }
                seen.push((i, m));
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        seen.extend(n.rest().into_iter().map(|m| (i, m)));
    }
    let mut per_filter = std::collections::HashMap::<String, Vec<Vec<u8>>>::new();
    let mut members = std::collections::HashSet::new();
    for (i, m) in &seen {
        if let Some((Route::Shared { group, filter }, e)) = message(m) {
            assert_eq!(group, "g");
            per_filter
                .entry(filter.clone())
                .or_default()
                .push(e.payload.clone());
            members.insert(*i);
        }
    }
    for filter in ["s/#", "s/+"] {
        let mut got = per_filter.remove(filter).unwrap_or_default();
        got.sort();
        let mut want: Vec<Vec<u8>> = (0..N).map(|i| format!("{i}").into_bytes()).collect();
        want.sort();
        assert_eq!(got, want, "{filter}: each message exactly once");
    }
    assert!(
        members.len() >= 2,
        "NATS spreads a queue group over its members"
    );
}

/// A QoS 1 publish from `from` on `topic` whose answer (`Published`) is awaited: the
/// message is in every queue that wants it when this returns.
fn publish_acked(from: &Node, topic: &str, payload: &[u8], seq: u64) {
    from.send(ToLink::Publish {
        envelope: Box::new(Envelope {
            origin: String::new(),
            seq: 0,
            topic: topic.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            expiry_secs: None,
            props: None,
            payload: payload.to_vec(),
        }),
        ack: Some((0, seq)),
        msg_id: None,
        served: Vec::new(),
    });
    from.expect(|m| matches!(m, FromLink::Published { ack: (0, s) } if *s == seq));
}

/// (payload, token) of the shared messages `n` got from its group's queue within `wait`.
fn shared_from_queue(n: &Node, wait: Duration) -> Vec<(Vec<u8>, u64)> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while let Ok(m) = n
        .link
        .receiver()
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let FromLink::Message {
            route: Route::Shared { .. },
            envelope,
            token: Some(token),
            ..
        } = m
        {
            got.push((envelope.payload, token));
        }
    }
    got
}

/// A share group's QoS 1 messages are in the group's JetStream queue before the publisher
/// is answered, and one that a member node took is not lost with it: B gives one back
/// (no online member) and dies holding the others unsettled; A, the other member node,
/// gets every one of them (the given-back one after its delay, the others after the ack
/// wait). Before, NATS queue groups handed B its share at most once.
#[test]
fn a_shared_message_a_member_node_took_goes_to_another_when_it_dies() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = node(&server, "t9", "A");
    let b = node(&server, "t9", "B");
    let c = node(&server, "t9", "C");
    a.interest("w/#", Some("g"));
    b.interest("w/#", Some("g"));
    // Until C's probes come from the group's queue to both A and B.
    let deadline = Instant::now() + FAILOVER_WAIT;
    let mut seq = 0;
    let mut took = [false; 2];
    while !(took[0] && took[1]) {
        assert!(
            Instant::now() < deadline,
            "the group's queue never opened: {took:?}"
        );
        seq += 1;
        publish_acked(&c, "w/probe", b"probe", seq);
        for (i, n) in [&a, &b].into_iter().enumerate() {
            for (_, token) in shared_from_queue(n, Duration::from_millis(100)) {
                n.send(ToLink::Settle { token });
                took[i] = true;
            }
        }
    }
    shared_from_queue(&a, QUIET)
        .into_iter()
        .for_each(|(_, token)| a.send(ToLink::Settle { token }));
    shared_from_queue(&b, QUIET)
        .into_iter()
        .for_each(|(_, token)| b.send(ToLink::Settle { token }));

    const N: usize = 40;
    for i in 0..N {
        seq += 1;
        publish_acked(&c, "w/x", format!("{i}").as_bytes(), seq);
    }
    let mut at_a: Vec<Vec<u8>> = Vec::new();
    for (payload, token) in shared_from_queue(&a, Duration::from_millis(500)) {
        a.send(ToLink::Settle { token });
        at_a.push(payload);
    }
    let at_b = shared_from_queue(&b, QUIET);
    assert!(at_b.len() >= 2, "B took some of them: {}", at_b.len());
    assert_eq!(at_a.len() + at_b.len(), N, "each handed to one node");
    b.send(ToLink::Return { token: at_b[0].1 });
    std::thread::sleep(QUIET);
    b.link.stop();
    // The given-back one after 1 s, B's others after the ack wait (10 s).
    let deadline = Instant::now() + WAIT + Duration::from_secs(10);
    let mut again = Vec::new();
    while again.len() < at_b.len() && Instant::now() < deadline {
        for (payload, token) in shared_from_queue(&a, Duration::from_millis(200)) {
            a.send(ToLink::Settle { token });
            again.push(payload);
        }
    }
    let mut want: Vec<Vec<u8>> = at_b.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    again.sort();
    assert_eq!(again, want, "A got what B had taken, once each");
    assert!(LinkStats::get(&c.link.stats().shared_queued) >= N as u64);
}

/// A TCP proxy in front of the NATS server that delays what the client sends by `delay`
/// (in order) and passes the server's answers at once. Its threads end when either side
/// closes; the listener thread ends with the test process.
fn delaying_proxy(server_port: u16, delay: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, server_port)) else {
                return;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = c_read.read(&mut buf) {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
            std::thread::spawn(move || {
                while let Ok((due, bytes)) = rx.recv() {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    if s_write.write_all(&bytes).is_err() {
                        return;
                    }
                }
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
            });
        }
    });
    port
}

/// An interest's answer means the server has the SUB: a node whose link to NATS is slow
/// (its bytes reach the server 150 ms late) still gets a message published elsewhere the
/// moment its `InterestReady` came. A shared interest has no bucket write to wait for, so
/// only the link's own round trip through the server covers it (async-nats' `flush`
/// returns once the SUB is written to the socket).
#[test]
fn an_interest_is_ready_only_once_the_server_has_it() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let slow_port = delaying_proxy(server.port, Duration::from_millis(150));
    let a = node(&server, "t9", "A");
    let b = node_on(&[slow_port], 1, "t9", "B");
    // A first interest waits for its bucket write, so the link's workers are all up
    // before the one that counts.
    b.interest("warm/#", None);
    b.interest("slow/+", Some("g"));
    a.publish("slow/x", b"first", false);
    b.expect(|m| matches!(message(m), Some((Route::Shared { .. }, e)) if e.payload == b"first"));
}

#[test]
fn the_link_reconnects_with_its_interest_and_retained_watch() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (node(&server, "t5", "A"), node(&server, "t5", "B"));
    b.interest("r/#", None);
    let retained = |topic: &'static str| move |m: &FromLink| matches!(m, FromLink::Retained { topic: t, message: Some(_) } if t == topic);
    a.publish("keep/1", b"k", true);
    b.expect(retained("keep/1"));
    server.restart();
    for n in [&a, &b] {
        n.expect(|m| matches!(m, FromLink::Down));
        n.expect(|m| matches!(m, FromLink::Up));
    }
    // A new interest's round trip comes after the replayed subscriptions.
    b.interest("other", None);
    a.publish("r/x", b"after", false);
    let got = b.expect(|m| message(m).is_some());
    assert_eq!(message(&got).unwrap().1.payload, b"after");
    // The retained watch resumed, and the bucket survived the restart (file storage).
    a.publish("keep/2", b"k2", true);
    b.expect(retained("keep/2"));
    let c = node(&server, "t5", "C");
    c.expect(retained("keep/1"));
    // The interest watch resumed too (each watcher follows every reconnection): an
    // interest B writes after the restart reaches A's view, so A stores for B.
    b.interest("q2/#", None);
    queue_eventually_on(&a, &b, "q2/probe");
}

/// Claim until the registry answers (a bucket may be electing a leader), within
/// `FAILOVER_WAIT`.
#[track_caller]
fn claim_eventually(n: &Node, client_id: &str, token: &mut u64) -> Option<String> {
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        *token += 1;
        n.send(ToLink::Claim {
            client_id: client_id.into(),
            token: *token,
        });
        let t = *token;
        match n.expect(|m| matches!(m, FromLink::Claimed { token, .. } | FromLink::ClaimFailed { token, .. } if *token == t)) {
            FromLink::Claimed { previous, .. } => return previous,
            _ => assert!(Instant::now() < deadline, "the registry never answered"),
        }
    }
}

/// Publish until one arrives at `to` (interest crosses between NATS servers
/// asynchronously: the window `docs/cluster.md` states), within `FAILOVER_WAIT`.
#[track_caller]
fn deliver_eventually(from: &Node, to: &Node, topic: &str) {
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        from.publish(topic, b"p", false);
        if let Ok(m) = to.link.receiver().recv_timeout(Duration::from_millis(100)) {
            if message(&m).is_some_and(|(_, e)| e.topic == topic) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "nothing crossed to {topic}");
    }
}

/// A QoS 2 message from `from` with the stores' message id stem `msg_id` (`None`: the
/// link's own), its answer awaited (stored, or failed).
fn publish_qos2(from: &Node, payload: &[u8], msg_id: Option<&str>, seq: u64) {
    from.send(ToLink::Publish {
        envelope: Box::new(Envelope {
            origin: String::new(),
            seq: 0,
            topic: "q/2".into(),
            qos: QoS::ExactlyOnce,
            retain: false,
            expiry_secs: None,
            props: None,
            payload: payload.to_vec(),
        }),
        ack: Some((0, seq)),
        msg_id: msg_id.map(str::to_string),
        served: Vec::new(),
    });
    from.expect(|m| matches!(m, FromLink::Published { ack: (0, s) } if *s == seq));
}

/// Publish QoS 1 probes from `from` until one reaches `to` from its queue (so `from`'s
/// interest view names `to`); each is settled.
#[track_caller]
fn queue_eventually(from: &Node, to: &Node) {
    queue_eventually_on(from, to, "q/probe");
}

#[track_caller]
fn queue_eventually_on(from: &Node, to: &Node, topic: &str) {
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        from.send(ToLink::Publish {
            envelope: Box::new(Envelope {
                origin: String::new(),
                seq: 0,
                topic: topic.into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                expiry_secs: None,
                props: None,
                payload: b"probe".to_vec(),
            }),
            ack: None,
            msg_id: None,
            served: Vec::new(),
        });
        let mut queued = false;
        while let Ok(m) = to.link.receiver().recv_timeout(Duration::from_millis(200)) {
            if let FromLink::Message {
                token: Some(token), ..
            } = m
            {
                to.send(ToLink::Settle { token });
                queued = true;
            }
        }
        if queued {
            return;
        }
        assert!(Instant::now() < deadline, "the queue path never opened");
    }
}

/// The payloads of the messages `to` gets (settling those from its queue) until `QUIET`.
fn received(to: &Node) -> Vec<(Vec<u8>, bool)> {
    let mut got = Vec::new();
    for m in to.rest() {
        if let FromLink::Message {
            envelope, token, ..
        } = m
        {
            if let Some(token) = token {
                to.send(ToLink::Settle { token });
            }
            got.push((envelope.payload, token.is_some()));
        }
    }
    got
}

/// The publishing node's power cut, at the link: a QoS 2 message stored in R's queue and
/// taken by R, then the node restarts (a new link run, whose own numbers differ) and its
/// client's resend goes out with the same stable message id: JetStream's duplicate window
/// drops the second store, which counts as stored, so R ignores the core copy too. The
/// same resend without the id is stored again (what happened before).
#[test]
fn a_qos2_resend_with_the_same_stable_id_is_stored_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let r = node(&server, "t7", "R");
    r.interest("q/#", None);
    let p = node(&server, "t7", "P");
    queue_eventually(&p, &r);
    publish_qos2(&p, b"m", Some("q2.00000000000000aa.5.7.0badcafe"), 1);
    assert_eq!(
        received(&r),
        [(b"m".to_vec(), true)],
        "from R's queue, once"
    );
    drop(p);

    let p = node(&server, "t7", "P");
    queue_eventually(&p, &r);
    publish_qos2(&p, b"m", Some("q2.00000000000000aa.5.7.0badcafe"), 1);
    assert_eq!(received(&r), [], "the resend is dropped, on both paths");
    assert_eq!(
        LinkStats::get(&p.link.stats().queue_failed),
        0,
        "counted stored"
    );
    publish_qos2(&p, b"m", None, 2);
    assert_eq!(
        received(&r),
        [(b"m".to_vec(), true)],
        "without the id: stored again"
    );
}

/// A QoS 2 message from a node's queue carries its id (`dedupe`: the hash of its
/// `Nats-Msg-Id`), also when JetStream hands it out again to the node's next run (it
/// died before settling it): the id the node logs to recognise the copy.
#[test]
fn a_qos2_message_from_the_queue_carries_its_id_in_every_copy() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let r = node(&server, "t8", "R");
    r.interest("q/#", None);
    let p = node(&server, "t8", "P");
    queue_eventually(&p, &r);
    let stem = "q2.00000000000000bb.9.3.0badf00d";
    publish_qos2(&p, b"x", Some(stem), 1);
    let want = shardmq::cluster::queue::received_id(format!("P.{stem}.R").as_bytes());
    let ids = |n: &Node| -> Vec<Option<u128>> {
        n.rest()
            .into_iter()
            .filter_map(|m| match m {
                FromLink::Message {
                    envelope,
                    token: Some(_),
                    dedupe,
                    ..
                } if envelope.payload == b"x" => Some(dedupe),
                _ => None,
            })
            .collect()
    };
    assert_eq!(ids(&r), [Some(want)], "not settled");
    drop(r);
    let r = node(&server, "t8", "R");
    assert_eq!(ids(&r), [Some(want)], "handed out again, same id");
    // QoS 1 messages carry none.
    queue_eventually(&p, &r);
}

#[test]
fn a_three_server_nats_cluster_survives_the_loss_of_one_server() {
    let Some(mut nats) = NatsCluster::start() else {
        return;
    };
    let p = nats.ports.clone();
    // A knows server 0, B server 1: messages cross a NATS route.
    let a = node_on(&p[..1], 3, "t6", "A");
    let b = node_on(&p[1..2], 3, "t6", "B");
    b.interest("x/#", None);
    deliver_eventually(&a, &b, "x/1");
    let mut token = 0;
    assert_eq!(claim_eventually(&a, "dev", &mut token), None);
    assert_eq!(claim_eventually(&b, "dev", &mut token), Some("A".into()));
    // Lose B's server: B reconnects to a server it learnt from the cluster, the buckets
    // keep two replicas of three, messages still cross.
    nats.kill(1);
    b.expect(|m| matches!(m, FromLink::Down));
    b.expect(|m| matches!(m, FromLink::Up));
    deliver_eventually(&a, &b, "x/2");
    assert_eq!(claim_eventually(&a, "dev", &mut token), Some("B".into()));
    // The retained write is retried while its bucket elects a leader; B's watch resumes.
    a.publish("keep", b"r", true);
    b.expect_within(
        FAILOVER_WAIT,
        |m| matches!(m, FromLink::Retained { topic, message: Some(_) } if topic == "keep"),
    );
}

/// A QoS 1 publish of `payload` on `topic`, answered with `ack` if given.
fn qos1(topic: &str, payload: Vec<u8>, ack: Option<(usize, u64)>) -> ToLink {
    ToLink::Publish {
        envelope: Box::new(Envelope {
            origin: String::new(),
            seq: 0,
            topic: topic.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            expiry_secs: None,
            props: None,
            payload,
        }),
        ack,
        msg_id: None,
        served: Vec::new(),
    }
}

/// The queue stream of cluster `cluster` on the server at `port`, for `op` (bounded).
fn on_queue_stream<R>(
    port: u16,
    cluster: &str,
    op: impl AsyncFnOnce(&async_nats::jetstream::Context, &str) -> R,
) -> R {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = shardmq::cluster::queue::stream_name(cluster);
    rt.block_on(async {
        let client = tokio::time::timeout(WAIT, async_nats::connect(format!("127.0.0.1:{port}")))
            .await
            .expect("connect in time")
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        tokio::time::timeout(WAIT, op(&js, &name))
            .await
            .expect("JetStream answered in time")
    })
}

/// Make the queue stream refuse messages over `bytes` (-1: no limit): a store failure that
/// JetStream answers at once, for a big message only.
fn limit_queue_messages(port: u16, cluster: &str, bytes: i32) {
    on_queue_stream(port, cluster, async |js, name| {
        let mut stream = js.get_stream(name).await.expect("the queue stream");
        let mut config = stream.info().await.expect("stream info").config.clone();
        config.max_message_size = bytes;
        js.update_stream(config).await.expect("stream updated");
    });
}

/// The sequence number of the queue stream's last stored message.
fn queue_last_seq(port: u16, cluster: &str) -> u64 {
    on_queue_stream(port, cluster, async |js, name| {
        let mut stream = js.get_stream(name).await.expect("the queue stream");
        stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence
    })
}

/// The first `n` messages on `topic` that reach `to` within `WAIT` (each settled), as
/// (payload's first byte, from the queue), then none more on it until `QUIET`.
#[track_caller]
fn take_on(to: &Node, topic: &str, n: usize) -> Vec<(u8, bool)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let note = |m: FromLink, got: &mut Vec<(u8, bool)>| {
        if let FromLink::Message {
            envelope, token, ..
        } = m
        {
            if let Some(token) = token {
                to.send(ToLink::Settle { token });
            }
            if envelope.topic == topic {
                got.push((
                    envelope.payload.first().copied().unwrap_or(0),
                    token.is_some(),
                ));
            }
        }
    };
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match to.link.receiver().recv_timeout(left) {
            Ok(m) => note(m, &mut got),
            Err(_) => panic!(
                "only {got:?} of {n} arrived on {topic}; its link's figures: {:?}",
                to.link
                    .stats()
                    .figures()
                    .into_iter()
                    .filter(|f| f.2 != 0)
                    .map(|f| (f.0, f.2))
                    .collect::<Vec<_>>()
            ),
        }
    }
    for m in to.rest() {
        note(m, &mut got);
    }
    got
}

/// Order after a failed store (`docs/cluster.md`, *Order*): (1) a store JetStream refuses
/// once, while the two later messages of its topic are already in flight and land, is
/// retried and lands behind them in B's queue; (2) a store that fails for good (2 s) goes
/// by core NATS, after two later ones stored in flight. B must pass each topic's messages
/// on in publish order all the same. Before the fix B got 2, 3, 1 and 5, 6, 4.
#[test]
fn a_store_retried_or_failed_for_good_keeps_its_place_on_its_topic() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (node(&server, "t10", "A"), node(&server, "t10", "B"));
    b.interest("o/#", None);
    queue_eventually_on(&a, &b, "o/probe");
    a.send(qos1("o/t", b"0".to_vec(), None));
    assert_eq!(take_on(&b, "o/t", 1), [(b'0', true)]);

    let big = |c: u8| {
        let mut p = vec![b'.'; 4000];
        p[0] = c;
        p
    };
    // (1) 1 is refused (too big), 2 and 3 are stored meanwhile; then 1's retry lands.
    let before = queue_last_seq(server.port, "t10");
    limit_queue_messages(server.port, "t10", 1024);
    let sent = a.link.sender().send_all([
        qos1("o/t", big(b'1'), None),
        qos1("o/t", b"2".to_vec(), None),
        qos1("o/t", b"3".to_vec(), None),
    ]);
    assert_eq!(sent, 3);
    let deadline = Instant::now() + WAIT;
    while queue_last_seq(server.port, "t10") < before + 2 {
        assert!(Instant::now() < deadline, "2 and 3 were never stored");
        std::thread::sleep(Duration::from_millis(10));
    }
    limit_queue_messages(server.port, "t10", -1);
    let got = take_on(&b, "o/t", 3);
    let order: Vec<u8> = got.iter().map(|m| m.0).collect();
    assert_eq!(order, b"123", "in publish order, once each: {got:?}");

    // (2) 4 is refused for good: its core copy comes after 5 and 6 are in B's queue.
    limit_queue_messages(server.port, "t10", 1024);
    a.link.sender().send_all([
        qos1("o/t", big(b'4'), None),
        qos1("o/t", b"5".to_vec(), None),
        qos1("o/t", b"6".to_vec(), None),
    ]);
    let got = take_on(&b, "o/t", 3);
    limit_queue_messages(server.port, "t10", -1);
    assert_eq!(
        got,
        [(b'4', false), (b'5', true), (b'6', true)],
        "4 by core NATS, then 5 and 6 from the queue"
    );
    assert_eq!(LinkStats::get(&a.link.stats().queue_failed), 1);
    assert!(LinkStats::get(&b.link.stats().order_held) >= 4);
    assert_eq!(LinkStats::get(&b.link.stats().order_expired), 0);
}

/// A store that fails for good sends its message by core NATS, which must not overtake
/// the earlier messages of its topic still waiting in B's queue (B's consumer is held
/// back: it waits for its shard's `Restored`), nor be overtaken by the later ones stored
/// in flight. Before the fix B got 1 first (by core NATS), then 0, 2, 3 from its queue.
#[test]
fn a_failed_store_waits_for_the_earlier_messages_in_the_queue() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = node(&server, "t11", "A");
    let b = node_with(&[server.port], 1, "t11", "B", 1);
    b.interest("o/#", None);
    // Until A's view names B, QoS 1 messages go by core NATS only.
    let (mut ack, deadline) = (0, Instant::now() + FAILOVER_WAIT);
    while LinkStats::get(&a.link.stats().queued) == 0 {
        assert!(Instant::now() < deadline, "A never stored for B");
        ack += 1;
        a.send(qos1("o/probe", b"p".to_vec(), Some((0, ack))));
        a.expect(|m| matches!(m, FromLink::Published { ack: (0, s) } if *s == ack));
    }
    ack += 1;
    a.send(qos1("o/t", b"0".to_vec(), Some((0, ack))));
    a.expect(|m| matches!(m, FromLink::Published { ack: (0, s) } if *s == ack));
    let queued = LinkStats::get(&a.link.stats().queued);
    assert!(queued >= 2, "0 is in B's queue");
    // B has seen the core copy of every stored message (it ignores them): whatever it
    // receives from now on is new.
    let deadline = Instant::now() + WAIT;
    while LinkStats::get(&b.link.stats().duplicates) < queued {
        assert!(Instant::now() < deadline, "B never saw the core copies");
        std::thread::sleep(Duration::from_millis(10));
    }
    let received = LinkStats::get(&b.link.stats().received);

    limit_queue_messages(server.port, "t11", 1024);
    let mut big = vec![b'.'; 4000];
    big[0] = b'1';
    a.link.sender().send_all([
        qos1("o/t", big, None),
        qos1("o/t", b"2".to_vec(), None),
        qos1("o/t", b"3".to_vec(), None),
    ]);
    let deadline = Instant::now() + WAIT;
    while LinkStats::get(&b.link.stats().received) == received {
        assert!(Instant::now() < deadline, "1's core copy never reached B");
        std::thread::sleep(Duration::from_millis(10));
    }
    limit_queue_messages(server.port, "t11", -1);
    b.send(ToLink::Restored {
        client_ids: Vec::new(),
    });
    let got = take_on(&b, "o/t", 4);
    assert_eq!(
        got,
        [(b'0', true), (b'1', false), (b'2', true), (b'3', true)],
        "in publish order, once each"
    );
    assert_eq!(LinkStats::get(&b.link.stats().order_expired), 0);
}

/// A restarted node's QoS 1/2 messages wait for its interest view's first load: the
/// message P sends as its link starts goes into R's queue, as every message after it
/// would. Before, it was routed with an empty view, by core NATS only (so a publisher's
/// resend after P's power cut reached R again although R had it from its queue).
#[test]
fn qos1_messages_wait_for_the_interest_view_to_load() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let r = node(&server, "t12", "R");
    r.interest("v/#", None);
    let p = node(&server, "t12", "P");
    queue_eventually_on(&p, &r, "v/probe");
    drop(p);
    let p = node_starting(&[server.port], 1, "t12", "P", 0);
    p.send(qos1("v/x", b"x".to_vec(), Some((0, 1))));
    p.expect(|m| matches!(m, FromLink::Published { ack: (0, 1) }));
    assert_eq!(
        take_on(&r, "v/x", 1),
        [(b'x', true)],
        "from R's queue, once"
    );
    assert_eq!(LinkStats::get(&p.link.stats().queued), 1);
}

/// `op` on a JetStream context of the server at `port` (bounded).
fn on_jetstream<R>(port: u16, op: impl AsyncFnOnce(&async_nats::jetstream::Context) -> R) -> R {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = tokio::time::timeout(WAIT, async_nats::connect(format!("127.0.0.1:{port}")))
            .await
            .expect("connect in time")
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        tokio::time::timeout(WAIT, op(&js))
            .await
            .expect("JetStream answered in time")
    })
}

/// Whether share group `qname`'s durable consumer exists, and how many messages its subject
/// holds, in cluster `cluster`'s share groups' stream.
fn group_queue(port: u16, cluster: &str, qname: &str) -> (bool, u64) {
    let stream = shardmq::cluster::queue::shared_stream_name(cluster);
    let subject = format!("smq.{cluster}.g.{qname}");
    on_jetstream(port, async |js| {
        let stream = js
            .get_stream(&stream)
            .await
            .expect("the share groups' stream");
        let exists = stream.consumer_info(qname).await.is_ok();
        let mut counts = stream
            .info_with_subjects(&subject)
            .await
            .expect("stream info");
        let mut held = 0;
        while let Some(c) = futures_util::StreamExt::next(&mut counts).await {
            held += c.expect("subject count").1 as u64;
        }
        (exists, held)
    })
}

/// Store `n` messages in share group `qname`'s subject directly: what publishing nodes
/// stored for the group before they saw its last member leave.
fn store_for_group(port: u16, cluster: &str, qname: &str, n: usize) {
    let subject = format!("smq.{cluster}.g.{qname}");
    on_jetstream(port, async |js| {
        for i in 0..n {
            let ack = js
                .publish(subject.clone(), format!("left {i}").into())
                .await
                .expect("sent");
            ack.await.expect("stored");
        }
    });
}

/// Until `n`'s share group messages arrive from the queue (each settled), probing from
/// `from`; bounded.
fn share_queue_eventually(from: &Node, n: &Node, topic: &str, seq: &mut u64) {
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        assert!(Instant::now() < deadline, "the group's queue never served");
        *seq += 1;
        publish_acked(from, topic, b"probe", *seq);
        let got = shared_from_queue(n, Duration::from_millis(200));
        got.iter()
            .for_each(|(_, token)| n.send(ToLink::Settle { token: *token }));
        if !got.is_empty() {
            return;
        }
    }
}

/// When the last member of a share group leaves everywhere, exactly one node removes the
/// group's durable consumer and purges what its subject got meanwhile (after the grace);
/// a member subscribing later gets the group's messages again (the consumer made anew).
/// Before, the consumer and the messages stayed up to the stream's limits.
#[test]
fn a_share_groups_queue_goes_with_its_last_member_and_comes_back_with_a_new_one() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b, c) = (
        node(&server, "t20", "A"),
        node(&server, "t20", "B"),
        node(&server, "t20", "C"),
    );
    let qname = shardmq::cluster::subject::queue_group("g", "z/#");
    a.interest("z/#", Some("g"));
    b.interest("z/#", Some("g"));
    let mut seq = 0;
    share_queue_eventually(&c, &a, "z/probe", &mut seq);
    share_queue_eventually(&c, &b, "z/probe", &mut seq);
    a.rest();
    b.rest();
    assert!(group_queue(server.port, "t20", &qname).0, "the consumer");
    let members = |share: &'static str| {
        on_jetstream(server.port, async |js| {
            shardmq::cluster::groups::members_anywhere(js, "t20", share)
                .await
                .expect("the interest bucket read")
        })
    };
    assert!(
        members("$share/g/z/#"),
        "the check sees A's and B's entries"
    );
    assert!(!members("$share/h/z/#"), "and no member of another group");

    for n in [&a, &b] {
        n.send(ToLink::NoInterest {
            filter: "z/#".into(),
            group: Some("g".into()),
        });
    }
    store_for_group(server.port, "t20", &qname, 5);
    // At least the 5: a probe that went to the member not read by its loop, unsettled, may
    // still be held too (the purge below takes it as well).
    let (exists, held) = group_queue(server.port, "t20", &qname);
    assert!(
        exists && held >= 5,
        "the consumer and the 5: {exists} {held}"
    );
    let deadline = Instant::now() + WAIT;
    while members("$share/g/z/#") {
        assert!(Instant::now() < deadline, "the entries were never deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let removed = || {
        [&a, &b, &c]
            .iter()
            .map(|n| LinkStats::get(&n.link.stats().shared_removed))
            .sum::<u64>()
    };
    let deadline = Instant::now() + FAILOVER_WAIT;
    while removed() == 0 {
        assert!(
            Instant::now() < deadline,
            "nobody removed the group's queue"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        group_queue(server.port, "t20", &qname),
        (false, 0),
        "consumer deleted, the 5 purged"
    );
    // The other nodes' sweeps find no consumer left to remove.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(removed(), 1, "exactly one node removed it");

    b.interest("z/#", Some("g"));
    share_queue_eventually(&c, &b, "z/again", &mut seq);
    assert!(group_queue(server.port, "t20", &qname).0, "made anew");
}

/// `shardmq cluster-forget` of a node that had the last members of a share group removes
/// the group's queue too: B's member outlives A's (B stopped with it), so no sweep may
/// remove the group; the command removes B's entry and then the group's consumer and
/// messages. Run again, it finds nothing.
#[test]
fn forgetting_the_last_members_node_removes_the_groups_queue() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b, c) = (
        node(&server, "t21", "A"),
        node(&server, "t21", "B"),
        node(&server, "t21", "C"),
    );
    let qname = shardmq::cluster::subject::queue_group("g", "y/#");
    a.interest("y/#", Some("g"));
    b.interest("y/#", Some("g"));
    let mut seq = 0;
    share_queue_eventually(&c, &a, "y/probe", &mut seq);
    a.send(ToLink::NoInterest {
        filter: "y/#".into(),
        group: Some("g".into()),
    });
    b.link.stop();
    store_for_group(server.port, "t21", &qname, 3);
    // Past a sweep's grace: B's entry keeps the group.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(LinkStats::get(&a.link.stats().shared_removed), 0);
    assert_eq!(LinkStats::get(&c.link.stats().shared_removed), 0);
    assert!(
        group_queue(server.port, "t21", &qname).0,
        "kept for B's member"
    );
    drop((a, c));

    let cfg = ClusterConfig {
        name: "t21".into(),
        node: "A".into(),
        nats: vec![format!("nats://127.0.0.1:{}", server.port)],
        cafile: None,
        auth: NatsAuth::None,
        kv_replicas: 1,
        forget_after: None,
    };
    let done = shardmq::cluster::forget::forget(&cfg, "B").expect("B forgotten");
    assert_eq!(done.interest_entries, 1);
    assert_eq!(done.groups_removed, 1);
    assert_eq!(group_queue(server.port, "t21", &qname), (false, 0));
    let again = shardmq::cluster::forget::forget(&cfg, "B").expect("again");
    assert_eq!((again.interest_entries, again.groups_removed), (0, 0));
}

/// The number of messages the queue stream of cluster `cluster` holds.
fn queue_messages(port: u16, cluster: &str) -> u64 {
    on_queue_stream(port, cluster, async |js, name| {
        let mut stream = js.get_stream(name).await.expect("the queue stream");
        stream.info().await.expect("stream info").state.messages
    })
}

/// Settles sent in one batch (one turn of the link) acknowledge exactly the messages the
/// node settled, each once: of 40 queued messages R settles the even ones together, and
/// the stream (work-queue retention: an acknowledged message is deleted) keeps the 20 odd
/// ones, which R's next run is handed again — not one of the even ones.
#[test]
fn settles_in_one_batch_acknowledge_exactly_the_settled_messages() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let r = node(&server, "t12", "R");
    r.interest("s/#", None);
    let p = node(&server, "t12", "P");
    queue_eventually_on(&p, &r, "s/probe");
    let deadline = Instant::now() + WAIT;
    while queue_messages(server.port, "t12") > 0 {
        assert!(
            Instant::now() < deadline,
            "the probes were never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..40u8 {
        p.send(qos1("s/t", vec![i], None));
    }
    let mut tokens = Vec::new();
    let deadline = Instant::now() + WAIT;
    while tokens.len() < 40 {
        let left = deadline.saturating_duration_since(Instant::now());
        match r.link.receiver().recv_timeout(left) {
            Ok(FromLink::Message {
                envelope,
                token: Some(token),
                ..
            }) if envelope.topic == "s/t" => tokens.push((envelope.payload[0], token)),
            Ok(_) => {}
            Err(e) => panic!("{} of 40 came from R's queue: {e}", tokens.len()),
        }
    }
    let settled_before = LinkStats::get(&r.link.stats().queue_settled);
    let evens = tokens.iter().filter(|(i, _)| i % 2 == 0);
    let queued = r
        .link
        .sender()
        .send_all(evens.map(|&(_, token)| ToLink::Settle { token }));
    assert_eq!(queued, 20);
    let deadline = Instant::now() + WAIT;
    while queue_messages(server.port, "t12") > 20 {
        assert!(
            Instant::now() < deadline,
            "the settles never reached JetStream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(QUIET);
    assert_eq!(
        queue_messages(server.port, "t12"),
        20,
        "only the settled ones left"
    );
    assert_eq!(
        LinkStats::get(&r.link.stats().queue_settled) - settled_before,
        20
    );
    drop(r);
    // R's next run re-creates its consumer: what was not settled comes at once.
    let r = node(&server, "t12", "R");
    let mut again: Vec<u8> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while again.len() < 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        match r.link.receiver().recv_timeout(left) {
            Ok(FromLink::Message {
                envelope,
                token: Some(_),
                ..
            }) if envelope.topic == "s/t" => again.push(envelope.payload[0]),
            Ok(_) => {}
            Err(e) => panic!("{} of 20 came again: {again:?}: {e}", again.len()),
        }
    }
    again.extend(r.rest().iter().filter_map(|m| match m {
        FromLink::Message { envelope, .. } if envelope.topic == "s/t" => Some(envelope.payload[0]),
        _ => None,
    }));
    again.sort_unstable();
    let odds: Vec<u8> = (0..40).filter(|i| i % 2 == 1).collect();
    assert_eq!(
        again, odds,
        "the unsettled ones, each once, and no settled one"
    );
}

/// Write node `node`'s interest entry for `filter` straight into cluster `cluster`'s
/// interest bucket through the server at `port`, retried while the bucket elects a leader.
fn put_interest_entry(port: u16, cluster: &str, node: &str, filter: &str) {
    let key = shardmq::cluster::queue::interest_key(node, filter);
    let value = shardmq::cluster::queue::interest_value(node, filter);
    let bucket = format!("smq_{cluster}_interest");
    let deadline = Instant::now() + FAILOVER_WAIT;
    on_jetstream(port, async |js| loop {
        let put = async {
            let kv = js.get_key_value(bucket.as_str()).await.ok()?;
            kv.put(key.as_str(), value.clone().into()).await.ok()
        };
        if tokio::time::timeout(Duration::from_secs(2), put)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the interest bucket never took the entry"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
}

/// The server holding the interest bucket's watch consumer in cluster `cluster` (there is
/// one watch of that bucket per link: a test with one live link finds that link's).
fn interest_watch_host(port: u16, cluster: &str) -> Option<String> {
    let stream = format!("KV_smq_{cluster}_interest");
    on_jetstream(port, async |js| {
        let stream = js.get_stream(&stream).await.ok()?;
        let mut infos = stream.consumers();
        while let Some(i) = futures_util::StreamExt::next(&mut infos).await {
            let i = i.ok()?;
            // A stopped link's consumer lingers a while, no longer bound to a subscriber.
            if i.config.description.as_deref() == Some("kv watch consumer") && i.push_bound {
                return i.cluster.and_then(|c| c.leader);
            }
        }
        None
    })
}

/// Publish QoS 1 messages on `topic` from `from` until one is meant for another node's
/// queue (stored, or failed while the queue elects a leader): `from`'s interest view shows
/// a filter matching `topic`. How long that took; panics past `wait`.
#[track_caller]
fn view_shows(from: &Node, topic: &str, seq: &mut u64, wait: Duration) -> Duration {
    let start = Instant::now();
    let stats = from.link.stats();
    let meant = || LinkStats::get(&stats.queued) + LinkStats::get(&stats.queue_failed);
    let before = meant();
    loop {
        *seq += 1;
        publish_acked(from, topic, b"probe", *seq);
        if meant() > before {
            return start.elapsed();
        }
        let waited = start.elapsed();
        assert!(waited < wait, "{topic}: not in the view after {waited:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The interest bucket's stream leader in cluster `cluster`.
fn interest_leader(port: u16, cluster: &str) -> Option<String> {
    let stream = format!("KV_smq_{cluster}_interest");
    on_jetstream(port, async |js| {
        let info = js.get_stream(&stream).await.ok()?.get_info().await.ok()?;
        info.cluster.and_then(|c| c.leader)
    })
}

/// How soon after a change of the interest bucket, written once the server holding node
/// A's interest watch died, that change must be in A's view. async-nats reports the dead
/// watch only after two idle heartbeats (10 s after the last delivery, which came just
/// before the kill); A's own check (`WATCH_STALL_MS`, then a read from the stream's
/// leader) is well inside this bound, the library's alone is not.
const WATCH_BACK_WAIT: Duration = Duration::from_secs(7);

/// Server number `i` of a NATS server name `n<i>`.
fn server_index(name: Option<String>) -> Option<usize> {
    name?.strip_prefix('n')?.parse().ok()
}

/// The server holding node A's interest watch (an ephemeral consumer, on one server)
/// dies while A stays connected to another: a change written afterwards reaches A's view
/// within `WATCH_BACK_WAIT`. A is started again until its watch is on another server than
/// its connection (so it is the watch that dies, not the connection: the path that has no
/// reconnection to announce it) and from the bucket's leader (so the write after the kill
/// does not wait for an election).
#[test]
fn the_interest_watch_comes_back_soon_after_the_server_holding_it_dies() {
    let Some(mut nats) = NatsCluster::start() else {
        return;
    };
    let p = nats.ports.clone();
    let mut seq = 0;
    let mut found = None;
    for round in 0..12 {
        let n = node_on(&p[..1], 3, "tw", "A");
        put_interest_entry(p[1], "tw", "Z", &format!("w{round}/#"));
        view_shows(&n, &format!("w{round}/x"), &mut seq, FAILOVER_WAIT);
        let leader = server_index(interest_leader(p[1], "tw"));
        match server_index(interest_watch_host(p[1], "tw")) {
            Some(host) if host != 0 && Some(host) != leader => {
                found = Some((host, n));
                break;
            }
            _ => n.link.stop(),
        }
    }
    let Some((host, a)) = found else {
        panic!("A's interest watch stayed on A's own server or the bucket's leader");
    };
    let alive = p[3 - host];
    // A delivery just before the kill: the library's heartbeat clock starts afresh.
    put_interest_entry(alive, "tw", "Z", "before/#");
    view_shows(&a, "before/x", &mut seq, FAILOVER_WAIT);
    nats.kill(host);
    let killed = Instant::now();
    put_interest_entry(alive, "tw", "Z", "after/#");
    let written = killed.elapsed();
    let seen = view_shows(&a, "after/x", &mut seq, FAILOVER_WAIT);
    eprintln!("written {written:?} after the kill, in A's view {seen:?} later");
    assert!(
        seen < WATCH_BACK_WAIT,
        "written {written:?} after the kill, in A's view only {seen:?} later"
    );
    assert!(LinkStats::get(&a.link.stats().watch_reopened) >= 1);
}
