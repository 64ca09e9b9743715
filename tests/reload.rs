//! SIGHUP reload, black box: limits, `$SYS` interval and listeners change without a
//! restart; a bad file keeps the running configuration; no connection is dropped; a
//! second SIGTERM exits at once.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{id_on, signal, wait_exit, ConnectOpts, Got, RawClient, WAIT};

/// A broker started from a configuration file only (no `--bind`, which would override the
/// file's listeners), with its stdout and stderr read line by line.
struct Proc {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    fn start(conf: &Path) -> (Proc, SocketAddr) {
        let mut child = Command::new(common::Broker::bin())
            .args([
                "--print-bound",
                "--no-pin",
                "--no-persistence",
                "--admin",
                "off",
            ])
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shardmq");
        let out = lines(child.stdout.take().expect("stdout"));
        let err = lines(child.stderr.take().expect("stderr"));
        let mut p = Proc { child, out, err };
        let addr = p.next_listening();
        (p, addr)
    }

    /// The next `listening ADDR` line on stdout.
    fn next_listening(&mut self) -> SocketAddr {
        let line = self
            .out
            .recv_timeout(Duration::from_secs(10))
            .expect("a listening line");
        line.strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"))
    }

    /// Send SIGHUP and wait for the log line that ends the reload (applied or refused).
    fn hup(&mut self) -> Vec<String> {
        signal(self.child.id(), libc::SIGHUP);
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Ok(line) = self
            .err
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let done = line.contains("Configuration reloaded.") || line.contains("reload refused");
            seen.push(line);
            if done {
                return seen;
            }
        }
        panic!("no end of reload in the log: {seen:?}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_conf(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("shardmq-reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("b.conf");
    (dir, conf)
}

/// A persistent 3.1.1 session subscribed to `t` at QoS 1, then disconnected.
fn park_session(addr: SocketAddr, id: &str) {
    let mut c = RawClient::connect(addr);
    c.send_connect(&ConnectOpts {
        clean: false,
        ..ConnectOpts::v311(id)
    });
    c.expect_packet(WAIT);
    c.subscribe("t", 1);
    c.disconnect();
}

/// Publish `n` QoS 1 messages to `t`, then count what the parked session `id` gets. The
/// publisher's session lives on the parked session's shard (shard 1 of 2), so the parked
/// client's DISCONNECT, already in that shard's socket buffer, is read before the
/// publisher's CONNECT reaches it.
fn queued_after(addr: SocketAddr, id: &str, n: usize) -> usize {
    let mut p = RawClient::clean(addr, &id_on("reload-pub", 1, 2));
    for i in 0..n {
        p.publish("t", format!("m{i}").as_bytes(), 1, false);
    }
    p.disconnect();
    let mut c = RawClient::connect(addr);
    c.send_connect(&ConnectOpts {
        clean: false,
        ..ConnectOpts::v311(id)
    });
    c.expect_packet(WAIT);
    let mut got = 0;
    while let Ok(g) = c.try_packet(Duration::from_millis(500)) {
        if let Got::Publish(m) = g {
            c.ack(&m);
            got += 1;
        }
    }
    // Leave the session parked again, subscribed, queue empty.
    c.disconnect();
    got
}

#[test]
fn limits_listeners_and_sys_interval_change_live_and_connections_stay() {
    let (dir, conf) = temp_conf("live");
    let base = "shards 2\nlistener 0 127.0.0.1\nsys_interval 0\nmax_inflight_messages 100\n";
    std::fs::write(&conf, format!("{base}max_queued_messages 2\n")).expect("write");
    let (mut b, addr) = Proc::start(&conf);
    let mut keeper = RawClient::clean(addr, "reload-keeper");
    keeper.subscribe("$SYS/broker/uptime", 0);
    let parked = id_on("reload-parked", 1, 2);
    park_session(addr, &parked);
    assert_eq!(queued_after(addr, &parked, 5), 2);

    // Limits and $SYS interval change; a second listener opens.
    std::fs::write(
        &conf,
        format!("{base}listener 0 127.0.0.1\nmax_queued_messages 4\n")
            .replace("sys_interval 0", "sys_interval 1"),
    )
    .expect("write");
    let log = b.hup();
    assert!(
        log.iter().any(|l| l.contains("Opening listen socket")),
        "{log:?}"
    );
    let second = b.next_listening();
    assert_ne!(second, addr);
    assert_eq!(queued_after(addr, &parked, 6), 4);
    let uptime = keeper.expect_publish(Duration::from_secs(4));
    assert_eq!(uptime.topic, "$SYS/broker/uptime");
    let mut via_second = RawClient::clean(second, "reload-second");
    via_second.ping();

    // The second listener goes; its connection stays, new ones are refused.
    std::fs::write(&conf, format!("{base}max_queued_messages 4\n")).expect("write");
    let log = b.hup();
    assert!(
        log.iter().any(|l| l.contains("Closing listen socket")),
        "{log:?}"
    );
    via_second.ping();
    let refused = (0..50).any(|_| {
        let r = TcpStream::connect_timeout(&second, Duration::from_millis(200)).is_err();
        if !r {
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    });
    assert!(refused, "the removed listener still accepts");
    keeper.ping();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_file_keeps_the_running_configuration() {
    let (dir, conf) = temp_conf("bad");
    let good = "shards 2\nlistener 0 127.0.0.1\nmax_inflight_messages 100\nmax_queued_messages 2\n";
    std::fs::write(&conf, good).expect("write");
    let (mut b, addr) = Proc::start(&conf);
    let mut keeper = RawClient::clean(addr, "reload-bad-keeper");
    let parked = id_on("reload-bad-parked", 1, 2);
    park_session(addr, &parked);
    std::fs::write(&conf, format!("{good}max_queued_messages 9\nbogus 1\n")).expect("write");
    let log = b.hup();
    let refused = log.iter().find(|l| l.contains("reload refused"));
    let refused = refused.unwrap_or_else(|| panic!("{log:?}"));
    assert!(
        refused.contains("b.conf:6: unknown option 'bogus'"),
        "{refused}"
    );
    keeper.ping();
    assert_eq!(queued_after(addr, &parked, 5), 2, "old limit kept");
    // What cannot change live is named.
    std::fs::write(&conf, good.replace("shards 2", "shards 3")).expect("write");
    let log = b.hup();
    assert!(
        log.iter()
            .any(|l| l.contains("shard count cannot change without a restart")),
        "{log:?}"
    );
    keeper.ping();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let (dir, conf) = temp_conf("term");
    std::fs::write(&conf, "shards 2\nlistener 0 127.0.0.1\n").expect("write");
    let (mut b, addr) = Proc::start(&conf);
    // A client that never reads, with a full socket, would keep a drain waiting; the
    // second signal must not wait for anything.
    let _c = RawClient::clean(addr, "reload-term");
    signal(b.child.id(), libc::SIGTERM);
    signal(b.child.id(), libc::SIGTERM);
    let st = wait_exit(&mut b.child, Duration::from_secs(5)).expect("exits");
    assert!(st.code().is_some(), "{st:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The client if a 3.1.1 CONNECT on `addr` gets CONNACK 0; None if it is closed at accept.
fn admitted(addr: SocketAddr, id: &str) -> Option<RawClient> {
    let mut c = RawClient::connect(addr);
    c.send_connect(&ConnectOpts::v311(id));
    match c.try_packet(WAIT) {
        Ok(Got::ConnAck { code: 0, .. }) => Some(c),
        Err(common::WaitError::Closed) => None,
        other => panic!("[{id}] neither CONNACK nor close: {other:?}"),
    }
}

/// Connections admitted out of a burst of `n` from this address, and how many of the
/// broker's one-second windows the burst may have overlapped (floor(d) + 2 for d seconds).
fn burst(addr: SocketAddr, tag: &str, n: usize) -> (usize, u64) {
    let t0 = Instant::now();
    let ok = (0..n)
        .filter(|i| admitted(addr, &format!("{tag}-{i}")).is_some())
        .count();
    (ok, t0.elapsed().as_secs() + 2)
}

/// `max_connection_rate` (and `global_max_connections`, the same admission check) change
/// on SIGHUP: set, the excess of a burst from one address is closed at accept; lifted, a
/// burst all gets through. Connections already open stay.
#[test]
fn connection_rate_and_max_connections_change_live() {
    let (dir, conf) = temp_conf("rate");
    let base = "shards 2\nlistener 0 127.0.0.1\nsys_interval 0\n";
    std::fs::write(&conf, base).expect("write");
    let (mut b, addr) = Proc::start(&conf);
    let mut keeper = RawClient::clean(addr, "reload-rate-keeper");
    assert_eq!(burst(addr, "before", 20).0, 20, "no rate limit yet");

    std::fs::write(&conf, format!("{base}max_connection_rate 2\n")).expect("write");
    b.hup();
    let (ok, seconds) = burst(addr, "limited", 20);
    assert!(ok >= 1, "none admitted under the rate");
    assert!(ok as u64 <= 2 * seconds, "{ok} admitted within {seconds} s");

    std::fs::write(&conf, base).expect("write");
    b.hup();
    assert_eq!(burst(addr, "lifted", 20).0, 20, "the rate lifted");

    std::fs::write(&conf, format!("{base}global_max_connections 2\n")).expect("write");
    b.hup();
    // The bursts' clients are gone once the broker has read their EOFs (bounded wait).
    let deadline = Instant::now() + WAIT;
    let mut second = loop {
        if let Some(c) = admitted(addr, "reload-rate-second") {
            break c;
        }
        assert!(Instant::now() < deadline, "no room for a second connection");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        admitted(addr, "reload-rate-third").is_none(),
        "a third connection past global_max_connections 2"
    );
    second.ping();
    keeper.ping();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `memory_limit` changes on SIGHUP: near a small limit new connections are refused;
/// lifted, they are admitted and the holder's next subscriptions granted; set again, new
/// connections are refused again. The holder stays connected throughout.
#[test]
fn memory_limit_changes_live() {
    let (dir, conf) = temp_conf("memory");
    let base = "shards 1\nlistener 0 127.0.0.1\nsys_interval 0\nmax_subscriptions_per_client 0\n";
    let limited = format!("{base}memory_limit 4194304\n");
    std::fs::write(&conf, &limited).expect("write");
    let (mut b, addr) = Proc::start(&conf);
    let mut big = RawClient::clean(addr, "reload-mem-subs");
    let subscribe_chunk = |c: &mut RawClient, chunk: usize| -> Vec<u8> {
        let filters: Vec<String> = (chunk * 1_000..(chunk + 1) * 1_000)
            .map(|i| format!("m/{i}"))
            .collect();
        let list: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 0)).collect();
        c.subscribe_many_within(&list, WAIT)
    };
    let mut chunk = 0;
    loop {
        assert!(chunk < 30, "30,000 subscriptions never neared 4 MiB");
        let codes = subscribe_chunk(&mut big, chunk);
        chunk += 1;
        if codes.contains(&0x80) {
            break;
        }
        // The budget accounts every 100 ms: let it see this chunk before the next.
        std::thread::sleep(Duration::from_millis(150));
    }
    let refused = |id: &str| {
        let (_c, _, code) = RawClient::handshake(addr, &ConnectOpts::v311(id));
        code == 3
    };
    assert!(refused("reload-mem-early"), "CONNACK 3 near the limit");

    std::fs::write(&conf, format!("{base}memory_limit 0\n")).expect("write");
    b.hup();
    let deadline = Instant::now() + WAIT;
    while refused("reload-mem-lifted") {
        assert!(Instant::now() < deadline, "still refused with no limit");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        subscribe_chunk(&mut big, chunk).iter().all(|&c| c == 0),
        "subscriptions granted with no limit"
    );

    std::fs::write(&conf, &limited).expect("write");
    b.hup();
    let deadline = Instant::now() + WAIT;
    while !refused("reload-mem-again") {
        assert!(
            Instant::now() < deadline,
            "admitted past the limit set again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    big.ping();
    let _ = std::fs::remove_dir_all(&dir);
}
