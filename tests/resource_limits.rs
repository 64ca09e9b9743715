//! Hostile resource use, black box (RELIABILITY.md R1, R2, R10 and the CVE classes for
//! claimed lengths, deep topics and user-property floods): each case must end with the
//! offending sockets closed, the broker's memory bounded, and an ordinary client still
//! served.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Got, RawClient, WaitError, WAIT};

/// A publisher/subscriber pair that must keep working whatever the test did before.
fn canary(b: &Broker, tag: &str) {
    let mut sub = RawClient::clean(b.addr(), &format!("canary-sub-{tag}"));
    sub.subscribe("canary/t", 1);
    let mut publ = RawClient::clean(b.addr(), &format!("canary-pub-{tag}"));
    publ.publish("canary/t", b"alive", 1, false);
    assert_eq!(sub.expect_publish_acked(WAIT).text(), "alive");
}

/// True if the connection still answers PINGREQ; false once the broker has closed it.
fn answers_ping(c: &mut RawClient) -> bool {
    if c.try_send_bytes(&[0xC0, 0x00]).is_err() {
        return false;
    }
    loop {
        match c.try_packet(WAIT) {
            Ok(Got::PingResp) => return true,
            Ok(_) => continue,
            Err(WaitError::Closed) => return false,
            Err(other) => panic!("neither PINGRESP nor close: {other:?}"),
        }
    }
}

#[test]
fn claimed_huge_lengths_before_connect_are_closed_without_memory_growth() {
    let b = Broker::start(&["--shards", "2"]);
    let before = b.rss_kib();
    // Each first packet claims 268,435,455 bytes (the largest remaining length) and sends
    // a few of them; the broker must not reserve memory for the claim.
    let mut socks: Vec<RawClient> = (0..300).map(|_| RawClient::connect(b.addr())).collect();
    for s in &mut socks {
        s.send_bytes(&[0x10, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x04, b'M', b'Q']);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for s in &mut socks {
        s.expect_closed(deadline.saturating_duration_since(Instant::now()));
    }
    let grown = b.rss_kib().saturating_sub(before);
    assert!(
        grown < 20 * 1024,
        "RSS grew by {grown} KiB for 300 refused claims"
    );
    canary(&b, "claims");
}

#[test]
fn silent_sockets_are_closed_by_the_connect_timeout() {
    let b = Broker::start(&["--shards", "2", "--connect-timeout", "1"]);
    let mut socks: Vec<RawClient> = (0..400).map(|_| RawClient::connect(b.addr())).collect();
    // Half of them dribble a partial CONNECT: that does not extend the deadline.
    for s in socks.iter_mut().step_by(2) {
        s.send_bytes(&[0x10, 0x0c, 0x00]);
    }
    let t0 = Instant::now();
    for s in &mut socks {
        s.expect_closed(Duration::from_secs(4));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        t0.elapsed()
    );
    canary(&b, "silent");
}

/// Raise this process's open-file limit (inherited by the broker it starts) to hold `fds`.
fn allow_open_files(fds: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(got, 0, "getrlimit");
    assert!(
        lim.rlim_max >= fds,
        "this test needs {fds} open files; the hard limit is {}",
        lim.rlim_max
    );
    if lim.rlim_cur < fds {
        lim.rlim_cur = fds;
        // SAFETY: as above.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        assert_eq!(set, 0, "setrlimit");
    }
}

/// A fleet that lost its network at once: more CONNECT deadlines expire together than one
/// turn handles (4,096 timers). The broker is stopped while they all pass, so they fire in
/// the same turn when it resumes; every socket must still be closed (an earlier version
/// dropped every timer past the per-turn budget, leaving those sockets open for good).
#[test]
fn more_deadlines_than_one_turn_handles_all_fire() {
    const SOCKETS: usize = 5_000;
    allow_open_files(2 * SOCKETS as u64 + 512);
    let b = Broker::start(&["--shards", "1", "--connect-timeout", "1"]);
    let mut socks: Vec<RawClient> = (0..SOCKETS).map(|_| RawClient::connect(b.addr())).collect();
    // Accepts are in arrival order: once a later client has its CONNACK, every silent
    // socket before it has been accepted and has its deadline armed.
    let _last = RawClient::clean(b.addr(), "deadline-fence");
    let armed = Instant::now();
    common::signal(b.pid(), libc::SIGSTOP);
    // Not a hope but the point of the test: the deadlines must all pass while the broker
    // is stopped, so that they fire in one turn.
    std::thread::sleep(Duration::from_millis(1_300).saturating_sub(armed.elapsed()));
    common::signal(b.pid(), libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in &mut socks {
        s.expect_closed(deadline.saturating_duration_since(Instant::now()));
    }
    canary(&b, "deadlines");
}

#[test]
fn concurrent_connects_with_one_client_id_leave_exactly_one_survivor() {
    let b = Broker::start(&["--shards", "4"]);
    for round in 0..8 {
        let id = format!("race-{round}");
        let addr = b.addr();
        let racers: Vec<_> = (0..16)
            .map(|_| {
                let id = id.clone();
                std::thread::spawn(move || RawClient::connect_v311(addr, &id, false, 60, None).0)
            })
            .collect();
        let mut clients: Vec<RawClient> = racers
            .into_iter()
            .map(|t| t.join().expect("racer thread"))
            .collect();
        let alive = clients.iter_mut().map(answers_ping).filter(|&a| a).count();
        assert_eq!(alive, 1, "round {round}: survivors");
    }
    canary(&b, "race");
}

#[test]
fn a_topic_of_thousands_of_levels_is_refused_and_nothing_overflows() {
    let b = Broker::start(&["--shards", "2"]);
    let deep = "/".repeat(60_000);
    // Subscribing to it: a failure code, the connection lives.
    let mut sub = RawClient::clean(b.addr(), "deep-sub");
    assert_eq!(
        sub.subscribe_many(&[(&deep, 1), ("deep/ok", 1)]),
        vec![0x80, 0x01]
    );
    // Publishing to it: the connection is closed.
    let mut publ = RawClient::clean(b.addr(), "deep-pub");
    publ.send_publish(&deep, b"x", 0, false, false, None);
    publ.expect_closed(WAIT);
    canary(&b, "deep");
}

#[test]
fn a_flood_of_user_properties_is_refused_cheaply() {
    let b = Broker::start(&["--shards", "2"]);
    let mut c = RawClient::connect(b.addr());
    // A 5.0 CONNECT whose property block holds 20,000 User Properties ("a" = "b").
    let mut props = Vec::new();
    for _ in 0..20_000 {
        props.extend_from_slice(&[0x26, 0, 1, b'a', 0, 1, b'b']);
    }
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60];
    common::varint(props.len(), &mut body);
    body.extend_from_slice(&props);
    body.extend_from_slice(&[0, 0]); // the payload: an empty client id
    let t0 = Instant::now();
    c.send_bytes(&common::frame(0x10, &body));
    let replies = c.wait_closed(WAIT);
    assert!(
        replies
            .iter()
            .all(|g| !matches!(g, Got::ConnAck { code: 0, .. })),
        "the flood must not be accepted: {replies:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        t0.elapsed()
    );
    canary(&b, "flood");
}
