//! The bridge state machine over real non-blocking TCP sockets, against Debian's
//! `mosquitto` broker on a free loopback port.
//!
//! Two bridges play the two ends: `site` forwards `out/#` (as `site/out/#`) and brings
//! `cmd/#` in (as `local/cmd/#`); `cloud` is the far side's client, subscribed to `site/#`
//! and sending `cmd/#`. Each is driven by the tiny loop below, as a shard loop will drive
//! it in phase 2. The broker is started (`common::mosquitto`) and stopped by its PID.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::mosquitto::Mosquitto;
use shardmq::bridge::{Action, Bridge, Limits, LocalPublish, Offer};
use shardmq::config::bridge::{BridgeConfig, BridgeParser};
use shardmq::protocol::QoS;

/// Bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(10);
/// How long one loop turn may block on nothing (the sockets are non-blocking).
const TURN: Duration = Duration::from_millis(2);

/// The broker process (killed by its PID when dropped) and its directory (removed then,
/// unless `stop` handed it back for a restart).
struct Remote {
    broker: Option<Mosquitto>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Remote {
    fn start() -> Remote {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("shardmq-bridge-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        common::mosquitto::world_writable(&dir);
        Remote::start_in(port, dir)
    }

    /// Start on `port` with its configuration and persistence in `dir` (kept across a
    /// restart, so sessions survive a clean stop).
    fn start_in(port: u16, dir: std::path::PathBuf) -> Remote {
        let broker = Mosquitto::persistent(port, &dir, "", WAIT);
        Remote {
            broker: Some(broker),
            port,
            dir,
        }
    }

    /// Stop with SIGTERM (Mosquitto saves its sessions), by PID, and wait, bounded.
    fn stop(mut self) -> (u16, std::path::PathBuf) {
        if let Some(b) = self.broker.take() {
            b.stop(WAIT);
        }
        (self.port, std::mem::take(&mut self.dir))
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        drop(self.broker.take());
        if !self.dir.as_os_str().is_empty() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One bridge and its socket: performs the bridge's actions, writes its output, feeds it
/// what the socket reads.
struct Driver {
    bridge: Bridge,
    sock: Option<TcpStream>,
    local: Vec<LocalPublish>,
    start: Instant,
}

impl Driver {
    fn new(text: &str) -> Driver {
        let start = Instant::now();
        Driver {
            bridge: Bridge::new(&config(text), "test", Limits::default(), 7, 0),
            sock: None,
            local: Vec::new(),
            start,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn turn(&mut self) {
        let now = self.now();
        self.bridge.tick(now);
        while let Some(action) = self.bridge.poll_action() {
            self.perform(now, action);
        }
        self.flush(now);
        self.read(now);
    }

    fn perform(&mut self, now: u64, action: Action) {
        match action {
            Action::Connect(addr) => {
                let target = (addr.host.as_str(), addr.port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next());
                let sock = target.map(|t| TcpStream::connect_timeout(&t, WAIT));
                match sock {
                    Some(Ok(s)) => {
                        s.set_nonblocking(true).expect("non-blocking");
                        s.set_nodelay(true).expect("nodelay");
                        self.sock = Some(s);
                        self.bridge.socket_connected(now);
                    }
                    other => self.bridge.socket_closed(now, &format!("{other:?}")),
                }
            }
            Action::Close => self.sock = None,
            Action::Probe(_) => self.bridge.probe_result(now, false),
            Action::Local(p) => {
                if let Some(ack) = p.ack {
                    self.bridge.local_accepted(now, ack);
                }
                self.local.push(p);
            }
            Action::State { .. } | Action::Log(_) => {}
        }
    }

    fn flush(&mut self, now: u64) {
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        let out = self.bridge.output().to_vec();
        if out.is_empty() {
            return;
        }
        match sock.write(&out) {
            Ok(n) => self.bridge.consume(n, now),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.bridge.socket_closed(now, &e.to_string()),
        }
    }

    fn read(&mut self, now: u64) {
        let mut buf = [0u8; 16 * 1024];
        while let Some(sock) = self.sock.as_mut() {
            match sock.read(&mut buf) {
                Ok(0) => self.bridge.socket_closed(now, "closed by the remote"),
                Ok(n) => self.bridge.receive(now, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => self.bridge.socket_closed(now, &e.to_string()),
            }
            while let Some(action) = self.bridge.poll_action() {
                self.perform(now, action);
            }
        }
    }
}

fn config(text: &str) -> BridgeConfig {
    let mut p = BridgeParser::default();
    for (i, line) in text.lines().enumerate() {
        let (k, v) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        p.line(k, v.trim(), i + 1)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    p.finish().unwrap_or_else(|e| panic!("{e:?}")).remove(0)
}

/// Turn both drivers until `done` holds, at most `WAIT`.
fn run_until(a: &mut Driver, b: &mut Driver, what: &str, done: impl Fn(&Driver, &Driver) -> bool) {
    run_within(WAIT, a, b, what, done)
}

fn run_within(
    limit: Duration,
    a: &mut Driver,
    b: &mut Driver,
    what: &str,
    done: impl Fn(&Driver, &Driver) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(a, b) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        a.turn();
        b.turn();
        std::thread::sleep(TURN);
    }
}

#[test]
fn connect_subscribe_and_qos1_round_trips_through_mosquitto() {
    let broker = Remote::start();
    let port = broker.port;
    let mut site = Driver::new(&format!(
        "connection site\naddress 127.0.0.1:{port}\ntopic out/# out 1 \"\" site/\ntopic cmd/# in 1 local/ \"\"\nremote_clientid site-bridge\nkeepalive_interval 5"
    ));
    let mut cloud = Driver::new(&format!(
        "connection cloud\naddress 127.0.0.1:{port}\ntopic site/# in 1\ntopic cmd/# out 1\nremote_clientid cloud-client\nnotifications false\nbridge_protocol_version mqttv50"
    ));
    run_until(&mut site, &mut cloud, "both subscribed", |a, b| {
        a.bridge.subscribed() && b.bridge.subscribed()
    });

    // Out: a local message on out/1 reaches the remote as site/out/1, at QoS 1, acknowledged.
    let payload: Arc<[u8]> = Arc::from(&b"reading 1"[..]);
    let now = site.now();
    let offered = site
        .bridge
        .offer(now, "out/1", &payload, QoS::AtLeastOnce, false, false);
    assert!(matches!(offered, Offer::Accepted(Some(_))), "{offered:?}");
    run_until(
        &mut site,
        &mut cloud,
        "site/out/1 at the cloud side",
        |a, b| a.bridge.stats().forwarded == 1 && b.local.iter().any(|p| p.topic == "site/out/1"),
    );
    let got = cloud
        .local
        .iter()
        .find(|p| p.topic == "site/out/1")
        .expect("arrived");
    assert_eq!(
        (got.payload.as_slice(), got.qos),
        (&b"reading 1"[..], QoS::AtLeastOnce)
    );
    assert_eq!(
        site.bridge.depth(),
        (0, 0),
        "PUBACK completed the in-flight message"
    );

    // In: a message on cmd/go at the remote is brought in as local/cmd/go.
    let cmd: Arc<[u8]> = Arc::from(&b"go"[..]);
    let now = cloud.now();
    assert!(matches!(
        cloud
            .bridge
            .offer(now, "cmd/go", &cmd, QoS::AtLeastOnce, false, false),
        Offer::Accepted(_)
    ));
    run_until(&mut site, &mut cloud, "local/cmd/go at the site", |a, _| {
        a.local.iter().any(|p| p.topic == "local/cmd/go")
    });
    let got = site
        .local
        .iter()
        .find(|p| p.topic == "local/cmd/go")
        .expect("arrived");
    assert_eq!(
        (got.payload.as_slice(), got.qos),
        (&b"go"[..], QoS::AtLeastOnce)
    );

    // The state topic on the remote says 1 (retained, so no race with the subscriber).
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "$SYS/broker/connection/site-bridge/state",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .expect("mosquitto_sub runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert!(site
        .local
        .iter()
        .any(|p| p.topic == "$SYS/broker/connection/site-bridge/state" && p.payload == b"1"));
    drop(broker);
}

/// The numbers carried by `site/out/N` messages at the cloud side, in arrival order.
fn arrivals(cloud: &Driver) -> Vec<u32> {
    let msgs = cloud
        .local
        .iter()
        .filter(|p| p.topic.starts_with("site/out/"));
    msgs.filter_map(|p| std::str::from_utf8(&p.payload).ok()?.parse().ok())
        .collect()
}

#[test]
fn queued_and_in_flight_qos1_messages_survive_a_remote_restart_in_order() {
    const BEFORE: u32 = 100;
    const WHILE_DOWN: u32 = 100;
    let broker = Remote::start();
    let port = broker.port;
    let mut site = Driver::new(&format!(
        "connection site\naddress 127.0.0.1:{port}\ntopic out/# out 1 \"\" site/\nremote_clientid site-r\nrestart_timeout 1\nnotifications false"
    ));
    let mut cloud = Driver::new(&format!(
        "connection cloud\naddress 127.0.0.1:{port}\ntopic site/# in 1\nremote_clientid cloud-r\nrestart_timeout 1\nnotifications false\nbridge_protocol_version mqttv50"
    ));
    run_until(&mut site, &mut cloud, "both subscribed", |a, b| {
        a.bridge.subscribed() && b.bridge.subscribed()
    });
    let offer = |d: &mut Driver, n: u32| {
        let now = d.now();
        let p: Arc<[u8]> = Arc::from(n.to_string().as_bytes());
        let got = d
            .bridge
            .offer(now, &format!("out/{n}"), &p, QoS::AtLeastOnce, false, false);
        assert!(matches!(got, Offer::Accepted(Some(_))), "{n}: {got:?}");
    };
    for n in 0..BEFORE {
        offer(&mut site, n);
    }
    // Write the first window, then stop the remote before its PUBACKs are read.
    site.flush(site.now());
    assert!(
        site.bridge.depth().1 > 0,
        "messages are in flight when the remote goes"
    );
    let (port, dir) = broker.stop();
    run_until(&mut site, &mut cloud, "both see the remote gone", |a, b| {
        !a.bridge.is_up() && !b.bridge.is_up()
    });
    // The window (20 of 100) is in flight: these are the ones resent with DUP.
    assert_eq!(
        site.bridge.depth().1,
        20,
        "a full window in flight while the remote is down"
    );
    for n in BEFORE..BEFORE + WHILE_DOWN {
        offer(&mut site, n);
    }
    let broker = Remote::start_in(port, dir);
    let total = BEFORE + WHILE_DOWN;
    run_within(
        WAIT * 3,
        &mut site,
        &mut cloud,
        "every message at the cloud side",
        |a, b| {
            a.bridge.depth() == (0, 0)
                && arrivals(b).iter().filter(|&&n| n == total - 1).count() > 0
        },
    );
    // In order per publisher; a repeat (from a resend) only ever repeats an earlier number.
    let mut seen = Vec::new();
    for n in arrivals(&cloud) {
        if !seen.contains(&n) {
            assert_eq!(n, seen.len() as u32, "out of order: {:?}", arrivals(&cloud));
            seen.push(n);
        }
    }
    assert_eq!(seen.len() as u32, total, "all arrived");
    assert!(site.bridge.stats().connects >= 2, "the site reconnected");
    drop(broker);
}

/// `both` on the same topic: the remote does not send the bridge's own messages back,
/// through the bridge bit (3.1.1 `try_private`) or No Local (5.0), while another client's
/// message on that topic still comes in.
#[test]
fn both_directions_do_not_echo_through_mosquitto() {
    let broker = Remote::start();
    let port = broker.port;
    for version in ["mqttv311", "mqttv50"] {
        let mut site = Driver::new(&format!(
            "connection site\naddress 127.0.0.1:{port}\ntopic echo/# both 1\nremote_clientid site-{version}\nnotifications false\nbridge_protocol_version {version}"
        ));
        let mut other = Driver::new(&format!(
            "connection other\naddress 127.0.0.1:{port}\ntopic echo/# out 1\nremote_clientid other-{version}\nnotifications false"
        ));
        run_until(&mut site, &mut other, "both up", |a, b| {
            a.bridge.subscribed() && b.bridge.is_up()
        });
        let mine: Arc<[u8]> = Arc::from(&b"mine"[..]);
        let now = site.now();
        site.bridge
            .offer(now, "echo/a", &mine, QoS::AtLeastOnce, false, false);
        let theirs: Arc<[u8]> = Arc::from(&b"theirs"[..]);
        let now = other.now();
        other
            .bridge
            .offer(now, "echo/b", &theirs, QoS::AtLeastOnce, false, false);
        // Mosquitto handles one client's packets in order; by the time the other
        // client's message has come in, the site's own would have been sent back.
        run_until(
            &mut site,
            &mut other,
            "the other client's message",
            |a, b| {
                a.bridge.stats().forwarded == 1
                    && a.local.iter().any(|p| p.payload == b"theirs")
                    && b.bridge.stats().forwarded == 1
            },
        );
        // Quiet window for anything late, then: nothing of ours came back.
        let quiet = Instant::now() + Duration::from_millis(300);
        while Instant::now() < quiet {
            site.turn();
            std::thread::sleep(TURN);
        }
        let echoed: Vec<_> = site.local.iter().filter(|p| p.payload == b"mine").collect();
        assert!(echoed.is_empty(), "{version}: echoed back: {echoed:?}");
    }
    drop(broker);
}
