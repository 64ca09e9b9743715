//! Bounded memory and lossless defaults, black box (issue 12): each test drives a real
//! broker over real sockets the way an attacker or an unlucky operator would, and asserts
//! the bound or the delivery that used to fail.
//!
//! Counts are small enough for CI; `SHARDMQ_ROBUST_FULL=1` runs the full counts
//! (see `docs/robustness.md` for their results).

mod common;
mod v5;

use std::time::{Duration, Instant};

use common::canary::Canary;
use common::{frame, Broker, RawClient, WAIT};
use v5::{Client5, Conn5};

/// `small` in CI, `full` with `SHARDMQ_ROBUST_FULL=1`.
fn count(small: usize, full: usize) -> usize {
    match std::env::var_os("SHARDMQ_ROBUST_FULL") {
        Some(_) => full,
        None => small,
    }
}

/// Bytes the kernel holds for the broker to read, over every connection to `port`
/// (`/proc/net/tcp`, the `rx_queue` of the sockets whose local port is `port`).
fn unread_by_broker(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local = cols.get(1)?;
            let queues = cols.get(4)?;
            local.ends_with(&want).then_some(())?;
            let rx = queues.split(':').nth(1)?;
            u64::from_str_radix(rx, 16).ok()
        })
        .sum()
}

/// Wait (bounded) until the broker has read everything sent to it.
fn wait_broker_read_all(b: &Broker, within: Duration) {
    let deadline = Instant::now() + within;
    while unread_by_broker(b.addr().port()) > 0 {
        assert!(Instant::now() < deadline, "broker did not read its input");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- item 6: a first packet other than CONNECT ------------------------------------------

/// [MQTT-3.1.0-1]: the first packet must be CONNECT. A client that starts with anything
/// else is closed on that first byte, not at the 10 s CONNECT deadline, even when the rest
/// of its packet never comes.
#[test]
fn first_packet_other_than_connect_is_closed_on_its_first_byte() {
    let b = Broker::start(&["--shards", "2"]);
    let canary = Canary::start(&b, "first-byte", 2);
    let starts: [&[u8]; 5] = [
        &[0xc0],
        &[0x30, 0x10, 0x61, 0x62, 0x63],
        &[0xe0, 0x05],
        &[0x82],
        &[0x11], // CONNECT with a reserved flag bit
    ];
    for bytes in starts {
        let mut c = RawClient::connect(b.addr());
        c.send_bytes(bytes);
        let t0 = Instant::now();
        c.expect_closed(Duration::from_secs(2));
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{bytes:02x?} closed only after {:?}",
            t0.elapsed()
        );
    }
    // A CONNECT that is merely slow is left alone until its deadline.
    let mut slow = RawClient::connect(b.addr());
    slow.send_bytes(&[0x10, 0x0c]);
    slow.expect_nothing(Duration::from_millis(300));
    canary.finish();
}

// ---- item 4: packet size and partial packets --------------------------------------------

/// The default Maximum Packet Size is 2 MiB (was the protocol's 256 MiB): a PUBLISH that
/// claims 3 MiB is refused from its fixed header with DISCONNECT 0x95, nothing buffered.
#[test]
fn a_packet_over_the_default_maximum_size_is_refused_from_its_header() {
    let b = Broker::start(&["--shards", "1"]);
    let canary = Canary::start(&b, "too-large", 1);
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new("big"));
    assert_eq!(ack.props.maximum_packet_size, Some(2 * 1024 * 1024));
    // 0x30, remaining length 3 MiB as a varint, then the start of a topic.
    let mut head = vec![0x30];
    common::varint(3 * 1024 * 1024, &mut head);
    head.extend_from_slice(&[0x00, 0x01, b't']);
    c.send_bytes(&head);
    c.expect_disconnect_reason(0x95);
    canary.finish();
}

/// Partial packets cost the bytes that arrived, not twice that (the receive buffer used to
/// grow by doubling and zero-fill its whole capacity, then by moving at each read): 40
/// clients each send 1 MiB of a 1.5 MiB PUBLISH, and the broker's RSS is less than 1.4 ×
/// the bytes received above its baseline. A large partial packet is held in 64 KiB pieces
/// that never move (`shard::ring`), so RSS tracks the bytes as they arrive; only the first
/// 64 KiB grow in place (and may leave small freed copies to the allocator's decay), so RSS
/// is polled for a few seconds, not the allocator's 10 s decay time.
#[test]
fn partial_packets_hold_about_the_bytes_received() {
    const CLIENTS: usize = 40;
    const SENT_BYTES: usize = 1024 * 1024;
    let b = Broker::start(&["--shards", "2"]);
    let canary = Canary::start(&b, "partial", 2);
    let mut clients: Vec<RawClient> = (0..CLIENTS)
        .map(|i| RawClient::clean(b.addr(), &format!("partial-{i}")))
        .collect();
    wait_broker_read_all(&b, WAIT);
    let before = b.rss_kib();
    let mut head = vec![0x30];
    common::varint(1536 * 1024, &mut head);
    head.extend_from_slice(&[0x00, 0x01, b't']);
    let body = vec![0x5a; SENT_BYTES - head.len()];
    for c in &mut clients {
        c.send_bytes(&head);
        c.send_bytes(&body);
    }
    wait_broker_read_all(&b, Duration::from_secs(20));
    let received_kib = (CLIENTS * SENT_BYTES / 1024) as u64;
    // A few seconds for a loaded machine: the moving buffer this replaced needed the
    // allocator's decay time (10 s, docs/decisions/0012-allocator.md) and more.
    let read_at = Instant::now();
    let deadline = read_at + Duration::from_secs(5);
    loop {
        let grown_kib = b.rss_kib().saturating_sub(before);
        if grown_kib * 10 < received_kib * 14 {
            eprintln!(
                "partial packets: RSS +{grown_kib} KiB holding {received_kib} KiB, {:.1} s \
                 after the last byte was read",
                read_at.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS grew {grown_kib} KiB holding {received_kib} KiB of partial packets"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(clients);
    canary.finish();
}

// ---- item 10: lingering close ------------------------------------------------------------

/// A QoS 2 PUBLISH with packet id `pid` for a 5.0 connection.
fn qos2_publish_v5(pid: u16) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b'q'];
    body.extend_from_slice(&pid.to_be_bytes());
    body.push(0x00); // no properties
    body.extend_from_slice(b"x");
    frame(0x34, &body)
}

/// A client that exceeds Receive Maximum (21 QoS 2 publishes, none released) and keeps
/// writing PUBRELs while the broker closes it: every write succeeds (the broker lingers,
/// reading and discarding, instead of closing a socket with unread input, which resets
/// it) and the client reads DISCONNECT 0x93 rather than `Broken pipe`.
#[test]
fn a_client_writing_after_its_disconnect_still_reads_the_reason() {
    let b = Broker::start(&["--shards", "1", "--receive-maximum", "20"]);
    let canary = Canary::start(&b, "linger", 1);
    let (mut c, _) = Client5::open(b.addr(), &Conn5::new("over-receive-max"));
    let burst: Vec<u8> = (1..=21).flat_map(qos2_publish_v5).collect();
    c.try_send_bytes(&burst).expect("publishes written");
    for pid in 1..=20u16 {
        let pubrel = [0x62, 0x02, (pid >> 8) as u8, pid as u8];
        // Paced so that the writes straddle the broker's close: part of the scenario.
        std::thread::sleep(Duration::from_millis(10));
        if let Err(e) = c.try_send_bytes(&pubrel) {
            panic!("PUBREL {pid} after the broker's DISCONNECT: {e} (reset, not lingered)");
        }
    }
    c.expect_disconnect_reason(0x93);
    canary.finish();
}

// ---- item 3: subscription quota, filter length and depth --------------------------------

/// Subscribe `client` (3.1.1) to `n` distinct filters `{prefix}/{i}` at QoS 0, in packets
/// of up to 1,000; returns every SUBACK code.
fn subscribe_n(client: &mut RawClient, prefix: &str, range: std::ops::Range<usize>) -> Vec<u8> {
    subscribe_n_within(client, prefix, range, WAIT)
}

/// [`subscribe_n`], waiting up to `wait` for each SUBACK.
fn subscribe_n_within(
    client: &mut RawClient,
    prefix: &str,
    range: std::ops::Range<usize>,
    wait: Duration,
) -> Vec<u8> {
    let filters: Vec<String> = range.map(|i| format!("{prefix}/{i}")).collect();
    let mut codes = Vec::new();
    for chunk in filters.chunks(1_000) {
        let list: Vec<(&str, u8)> = chunk.iter().map(|f| (f.as_str(), 0)).collect();
        codes.extend(client.subscribe_many_within(&list, wait));
    }
    codes
}

/// The default quota is 10,000 subscriptions per session: the 10,001st new filter gets
/// 0x80 (3.x), re-subscribing to one already held still succeeds, and after an
/// UNSUBSCRIBE there is room again.
#[test]
fn subscriptions_past_the_default_quota_are_refused() {
    let b = Broker::start(&["--shards", "2"]);
    let canary = Canary::start(&b, "quota", 2);
    let mut c = RawClient::clean(b.addr(), "many-subs");
    let codes = subscribe_n(&mut c, "q", 0..10_000);
    assert!(codes.iter().all(|&c| c == 0), "the first 10,000 granted");
    assert_eq!(c.subscribe_many(&[("q/extra", 1)]), vec![0x80]);
    assert_eq!(c.subscribe_many(&[("q/7", 1)]), vec![1], "a held filter");
    c.unsubscribe(&["q/0"]);
    assert_eq!(c.subscribe_many(&[("q/extra", 1)]), vec![1]);
    canary.finish();
}

/// With MQTT 5 the refusals carry their reason: 0x97 Quota exceeded past
/// `--max-subscriptions-per-client`, 0x8F for a filter over `--max-filter-length` or
/// `--max-topic-levels` (shared subscriptions included).
#[test]
fn subscription_limits_answer_5_0_clients_with_their_reason() {
    let b = Broker::start(&[
        "--shards",
        "1",
        "--max-subscriptions-per-client",
        "3",
        "--max-filter-length",
        "64",
        "--max-topic-levels",
        "4",
    ]);
    let canary = Canary::start(&b, "limits5", 1);
    let mut c = Client5::clean(b.addr(), "limits5");
    let o = v5::opts(1, false, false, 0);
    let long = "x".repeat(65);
    let codes = c.subscribe_opts(
        &[
            ("a/b/c/d", o),
            ("a/b/c/d/e", o),
            (long.as_str(), o),
            ("$share/g/a/b/c/d/e", o),
            ("s/1", o),
            ("$share/g/s/2", o),
            ("s/3", o),
        ],
        None,
    );
    assert_eq!(codes, vec![1, 0x8F, 0x8F, 0x8F, 1, 1, 0x97]);
    canary.finish();
}

// ---- item 2: work for one client bounded per turn ---------------------------------------

/// An anonymous client with 100,000 subscriptions (2,000,000 with the full counts) drops
/// its connection. Its shard removes them in slices across turns, so a canary on the same
/// shard keeps a QoS 1 round trip under 250 ms throughout (it froze for seconds when the
/// whole removal ran in one turn), and the subscriptions are all gone in the end.
#[test]
fn a_client_with_huge_subscriptions_leaving_does_not_stall_its_shard() {
    let n = count(100_000, 2_000_000);
    let b = Broker::start(&[
        "--shards",
        "1",
        "--max-subscriptions-per-client",
        "0",
        "--sys-interval",
        "1",
    ]);
    let mut big = RawClient::clean(b.addr(), "big");
    // Subscribing is not what this test times: the SUBSCRIBE that grows the trie's child
    // map of `big/` past 1,835,008 entries rehashes it in one turn, 7-11 s in a debug build
    // on a loaded machine (docs/robustness.md, *Subscribing 2,000,000 filters*).
    let codes = subscribe_n_within(&mut big, "big", 0..n, Duration::from_secs(60));
    assert!(codes.iter().all(|&c| c == 0));
    let mut sub = RawClient::clean(b.addr(), "canary-sub");
    sub.subscribe_many(&[("canary/t", 1), ("$SYS/broker/subscriptions/count", 0)]);
    let mut publ = RawClient::clean(b.addr(), "canary-pub");
    big.drop_tcp();
    // The client id is free again at once; its new subscription outlives the old ones.
    let mut again = RawClient::clean(b.addr(), "big");
    again.subscribe("big/0", 1);
    // 256 removals per turn (1,024 until branch rss-stall); a debug build on a loaded
    // machine removed about 32,000 a second at 1,024 (1,926,000 in 60 s with the full
    // counts), so the time allowed scales with n.
    let removal = Duration::from_secs(60).max(Duration::from_millis(n as u64 / 10));
    let deadline = Instant::now() + removal;
    let mut round_trips = Vec::new();
    let mut count_now = String::new();
    // Probe until `$SYS` reports only the canary's two subscriptions and the new `big/0`.
    while count_now != "3" {
        assert!(Instant::now() < deadline, "subscriptions still {count_now}");
        let t0 = Instant::now();
        publ.publish("canary/t", b"probe", 1, false);
        loop {
            let m = sub.expect_publish_acked(WAIT);
            if m.topic == "canary/t" {
                break;
            }
            count_now = m.text();
        }
        round_trips.push(t0.elapsed());
    }
    publ.publish("big/0", b"still here", 1, false);
    assert_eq!(again.expect_publish_acked(WAIT).text(), "still here");
    round_trips.sort_unstable();
    let worst = round_trips.last().copied().unwrap_or_default();
    let p99 = round_trips[(round_trips.len() * 99).div_ceil(100).saturating_sub(1)];
    eprintln!(
        "canary [huge-unsubscribe]: {n} subscriptions removed; {} QoS 1 round trips, \
         p99 {:.1} ms, max {:.1} ms",
        round_trips.len(),
        p99.as_secs_f64() * 1000.0,
        worst.as_secs_f64() * 1000.0
    );
    // With the full counts one turn took 254 ms in a debug build (p99 48 ms over 4,323
    // probes; docs/robustness.md): 2,000,000 removals leave one slow turn, not a freeze.
    let worst_allowed = Duration::from_millis(count(250, 500) as u64);
    assert!(
        worst < worst_allowed,
        "canary waited {worst:?} while {n} subscriptions were removed"
    );
}

// ---- item 7: retained delivery paced by the write buffer --------------------------------

/// A QoS 0 subscriber to `ret/#` over 20,000 retained topics (200,000 with the full
/// counts) of 200 bytes each gets every one: retained delivery at subscribe time waits
/// for the write buffer to drain instead of dropping what does not fit its 1 MiB.
#[test]
fn every_retained_message_reaches_a_qos0_wildcard_subscriber() {
    let n = count(20_000, 200_000);
    let b = Broker::start(&["--shards", "2"]);
    let canary = Canary::start(&b, "retained", 2);
    let mut publ = RawClient::clean(b.addr(), "ret-pub");
    let payload = [0x42u8; 200];
    for i in 0..n - 1 {
        let bytes = common::publish_bytes(0x31, format!("ret/{i}").as_bytes(), None, &payload);
        publ.send_bytes(&bytes);
    }
    // The last one is QoS 1: its PUBACK says every earlier one is stored everywhere.
    publ.publish(&format!("ret/{}", n - 1), &payload, 1, true);
    let mut sub = RawClient::clean(b.addr(), "ret-sub");
    sub.subscribe("ret/#", 0);
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} retained messages",
            seen.len()
        );
        let m = sub.expect_publish(WAIT);
        assert!(m.retain && m.payload.len() == 200, "{m:?}");
        seen.insert(m.topic);
    }
    canary.finish();
}

// ---- item 9: lossless defaults for slow subscribers -------------------------------------

/// Send `n` QoS 1 PUBLISHes to `topic` back to back, then wait for every PUBACK.
fn publish_pipelined(c: &mut RawClient, topic: &str, n: usize) {
    let mut burst = Vec::new();
    for i in 0..n {
        let pid = (i % 65_535 + 1) as u16;
        let payload = format!("{i:08}");
        burst.extend(common::publish_bytes(
            0x32,
            topic.as_bytes(),
            Some(pid),
            payload.as_bytes(),
        ));
    }
    c.send_bytes(&burst);
    for _ in 0..n {
        c.expect_where(WAIT, "PUBACK", |g| matches!(g, common::Got::PubAck(_)));
    }
}

/// With default settings nothing is lost to a subscriber slower than its publishers: one
/// QoS 1 subscriber that reads only after 10,000 messages were acknowledged to the
/// publisher gets all of them, in order; then 50 publishers × 50 (200 × 50 with the full
/// counts) into one `#` subscriber. (The old default queue of 1,000 messages lost 7,072
/// and 8,530 of them.)
#[test]
fn slow_qos1_subscribers_lose_nothing_by_default() {
    let b = Broker::start(&["--shards", "2"]);
    let canary = Canary::start(&b, "lossless", 2);
    let mut sub = RawClient::clean(b.addr(), "slow-sub");
    sub.subscribe("slow/t", 1);
    let mut publ = RawClient::clean(b.addr(), "slow-pub");
    publish_pipelined(&mut publ, "slow/t", 10_000);
    let got = sub.collect_acked(10_000, WAIT);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.text(), format!("{i:08}"), "message {i} in order");
    }
    // Stopped before the `#` subscriber, which would see the canary's messages too.
    canary.finish();

    let publishers = count(50, 200);
    let mut all = RawClient::clean(b.addr(), "hash-sub");
    all.subscribe("#", 1);
    let handles: Vec<_> = (0..publishers)
        .map(|p| {
            let addr = b.addr();
            std::thread::spawn(move || {
                let mut c = RawClient::clean(addr, &format!("fan-in-{p}"));
                publish_pipelined(&mut c, &format!("fan/{p}"), 50);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("publisher thread");
    }
    let got = all.collect_acked(publishers * 50, WAIT);
    assert_eq!(got.len(), publishers * 50);
    all.expect_nothing(Duration::from_millis(300));
}

// ---- item 11: keepalive 0, connection limits --------------------------------------------

/// Keep Alive 0 asks for no keepalive at all, which exceeds any configured
/// `max_keepalive` (Mosquitto 2's rule): a 5.0 client is told the limit as its Server Keep
/// Alive and closed when silent past it (0x8D); a 3.x client cannot be told, so it is
/// refused (return code 2). Under the default limit a 3.x client with Keep Alive 0 is
/// still accepted.
#[test]
fn keepalive_zero_is_bounded_by_max_keepalive() {
    let b = Broker::start(&["--shards", "1", "--max-keepalive", "1"]);
    let (mut c, ack) = Client5::open(b.addr(), &Conn5::new("ka0-v5").keep_alive(0));
    assert_eq!(ack.props.server_keep_alive, Some(1));
    c.expect_disconnect_reason(0x8D);
    let o = common::ConnectOpts {
        keep_alive: 0,
        ..common::ConnectOpts::v311("ka0-v3")
    };
    let (_c, _, code) = RawClient::handshake(b.addr(), &o);
    assert_eq!(code, 2, "3.x Keep Alive 0 under max_keepalive 1");
    let d = Broker::start(&["--shards", "1"]);
    let (_c, _, code) = RawClient::handshake(d.addr(), &o);
    assert_eq!(code, 0, "3.x Keep Alive 0 under the default limit");
}

/// Whether a full 3.1.1 CONNECT on `addr` is accepted (false: closed without CONNACK).
fn connects(addr: std::net::SocketAddr, id: &str) -> Option<RawClient> {
    let mut c = RawClient::connect(addr);
    c.send_connect(&common::ConnectOpts::v311(id));
    match c.try_packet(WAIT) {
        Ok(common::Got::ConnAck { code: 0, .. }) => Some(c),
        Err(common::WaitError::Closed) => None,
        other => panic!("[{id}] neither CONNACK nor close: {other:?}"),
    }
}

/// `--max-connections 5` over two shards: the sixth socket is closed at accept; once a
/// client leaves there is room again.
#[test]
fn max_connections_is_global_and_released_on_close() {
    let b = Broker::start(&["--shards", "2", "--max-connections", "5"]);
    let mut open: Vec<RawClient> = (0..5)
        .map(|i| connects(b.addr(), &format!("mc-{i}")).expect("within the limit"))
        .collect();
    assert!(
        connects(b.addr(), "mc-over").is_none(),
        "the sixth is refused"
    );
    open.pop().expect("five").disconnect();
    let deadline = Instant::now() + WAIT;
    while connects(b.addr(), "mc-again").is_none() {
        assert!(Instant::now() < deadline, "room never came back");
    }
}

/// `--max-connection-rate 5`: a burst of 30 connections from one address within a second
/// or two gets at most 5 per second through, and the rest are closed at accept.
#[test]
fn connection_rate_is_limited_per_source_address() {
    let b = Broker::start(&["--shards", "1", "--max-connection-rate", "5"]);
    let t0 = Instant::now();
    let accepted = (0..30)
        .filter_map(|i| connects(b.addr(), &format!("rate-{i}")))
        .count();
    // A burst of d seconds overlaps at most floor(d) + 2 of the broker's one-second
    // windows (it may start just before a boundary).
    let seconds = t0.elapsed().as_secs() + 2;
    assert!(accepted >= 5, "only {accepted} accepted");
    assert!(
        accepted as u64 <= 5 * seconds,
        "{accepted} accepted in {seconds} s"
    );
}

/// The rate limit is node-wide: with 4 shards and `--max-connection-rate 1`, a burst of 40
/// connections from one address gets one per second through in total (each shard used
/// to allow the full rate itself, about 4 here).
#[test]
fn connection_rate_is_limited_across_shards() {
    let b = Broker::start(&["--shards", "4", "--max-connection-rate", "1"]);
    let t0 = Instant::now();
    let accepted: Vec<RawClient> = (0..40)
        .filter_map(|i| connects(b.addr(), &format!("node-rate-{i}")))
        .collect();
    // The burst spans at most this many of the broker's seconds.
    let seconds = t0.elapsed().as_secs() + 2;
    assert!(!accepted.is_empty(), "none accepted");
    assert!(
        accepted.len() as u64 <= seconds,
        "{} accepted within {} s over 4 shards",
        accepted.len(),
        seconds - 1
    );
}

// ---- item 5: slow dribble ----------------------------------------------------------------

/// 2,000 sockets (10,000 with the full counts) each hold a partial CONNECT of a few bytes,
/// as a dribbling attacker's would: each costs the broker under 1.5 KiB of RSS (a 4 KiB
/// receive buffer each before), and the sockets are all closed by the CONNECT deadline.
#[test]
fn dribbling_sockets_hold_small_buffers() {
    let n = count(2_000, 10_000);
    // The CONNECT deadline leaves time to poll RSS (below) before the sockets are closed.
    let b = Broker::start(&["--shards", "2", "--connect-timeout", "12"]);
    let canary = Canary::start(&b, "dribble", 2);
    // Warm-up: the first connections allocate the broker's per-shard tables.
    drop(RawClient::clean(b.addr(), "warm-up"));
    let before = b.rss_kib();
    let mut socks: Vec<RawClient> = (0..n).map(|_| RawClient::connect(b.addr())).collect();
    // A byte, then two more once the broker holds the first: the second read is the one
    // that used to reserve a page.
    for s in &mut socks {
        s.send_bytes(&[0x10]);
    }
    wait_broker_read_all(&b, WAIT);
    for s in &mut socks {
        s.send_bytes(&[0x20, 0x00]);
    }
    wait_broker_read_all(&b, WAIT);
    let held_at = Instant::now();
    // Polled for up to 8 s (the sockets are still open: their deadline is 12 s): jemalloc
    // returns the pages of freed temporaries after its decay time, while buffers that
    // really held a page per socket never get under the bound.
    let grown = loop {
        let grown = b.rss_kib().saturating_sub(before);
        if grown * 1024 < n as u64 * 1536 || held_at.elapsed() > Duration::from_secs(8) {
            break grown;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "{n} dribbling sockets: +{grown} KiB ({} B each)",
        grown * 1024 / n as u64
    );
    assert!(
        grown * 1024 < n as u64 * 1536,
        "{n} dribbling sockets cost {grown} KiB"
    );
    let deadline = held_at + Duration::from_secs(20);
    for s in &mut socks {
        s.expect_closed(deadline.saturating_duration_since(Instant::now()));
    }
    canary.finish();
}

// ---- item 8: the global memory budget ---------------------------------------------------

/// The latest `$SYS/broker/memory/accounted` (bytes accounted against `memory_limit`) that
/// `watcher` has received, waiting for one.
fn heap_now(watcher: &mut RawClient) -> u64 {
    let m = watcher.expect_where(
        Duration::from_secs(3),
        "memory/accounted",
        |g| matches!(g, common::Got::Publish(m) if m.topic == "$SYS/broker/memory/accounted"),
    );
    match m {
        common::Got::Publish(m) => m.text().parse().expect("a number"),
        _ => unreachable!(),
    }
}

/// `--memory-limit 4 MiB` and a subscriber that does not read while 6 MiB of QoS 1
/// messages are published to it: near the limit the publisher is no longer read (its
/// PUBACKs stop; TCP holds the rest), the accounted memory never passes the limit, and
/// once the subscriber reads, everything flows again and arrives, none dropped.
#[test]
fn memory_limit_pauses_publishers_without_loss() {
    const LIMIT: u64 = 4 * 1024 * 1024;
    const N: usize = 600;
    let b = Broker::start(&[
        "--shards",
        "1",
        "--memory-limit",
        "4194304",
        "--sys-interval",
        "1",
    ]);
    let mut watcher = RawClient::clean(b.addr(), "mem-watch");
    watcher.subscribe("$SYS/broker/memory/accounted", 0);
    let mut hog = RawClient::clean(b.addr(), "hog");
    hog.subscribe("hog/#", 1);
    let mut publ = RawClient::clean(b.addr(), "mem-pub");
    let mut writer = publ.stream().try_clone().expect("clone stream");
    let payload = vec![0x33u8; 10_000];
    let burst: Vec<u8> = (1..=N as u16)
        .flat_map(|pid| common::publish_bytes(0x32, b"hog/t", Some(pid), &payload))
        .collect();
    let sending = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&burst).is_ok()
    });
    let mut acked = 0;
    while let Ok(common::Got::PubAck(_)) = publ.try_packet(Duration::from_secs(1)) {
        acked += 1;
    }
    assert!(
        acked < N,
        "all {N} acknowledged: the publisher was never paused"
    );
    for _ in 0..2 {
        let heap = heap_now(&mut watcher);
        assert!(
            heap <= LIMIT,
            "accounted {heap} bytes past the {LIMIT}-byte limit"
        );
    }
    let got = hog.collect_acked(N, WAIT);
    assert_eq!(got.len(), N);
    while acked < N {
        publ.expect_where(WAIT, "PUBACK", |g| matches!(g, common::Got::PubAck(_)));
        acked += 1;
    }
    assert!(
        sending.join().expect("writer thread"),
        "the burst was written"
    );
}

/// Near `memory_limit` new subscriptions get 0x80 (3.x) and new connections CONNACK 3
/// (server unavailable); once memory is released both are accepted again.
#[test]
fn memory_limit_refuses_new_subscriptions_and_connections() {
    let b = Broker::start(&[
        "--shards",
        "1",
        "--memory-limit",
        "4194304",
        "--max-subscriptions-per-client",
        "0",
    ]);
    let mut big = RawClient::clean(b.addr(), "mem-subs");
    let mut refused_at = None;
    for chunk in 0..30 {
        let codes = subscribe_n(&mut big, "m", chunk * 1_000..(chunk + 1) * 1_000);
        if codes.contains(&0x80) {
            refused_at = Some(chunk);
            break;
        }
        // Let the budget account this chunk (every 100 ms) before the next.
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        refused_at.is_some(),
        "30,000 subscriptions never neared 4 MiB"
    );
    let o = common::ConnectOpts::v311("mem-late");
    let (_c, _, code) = RawClient::handshake(b.addr(), &o);
    assert_eq!(code, 3, "CONNACK near the memory limit");
    big.disconnect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, _, code) = RawClient::handshake(b.addr(), &o);
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the memory was freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- item 1, keepalive variant: timers past one turn's budget ---------------------------

/// Raise this process's open-file limit (inherited by the broker it starts) to hold `fds`.
fn allow_open_files(fds: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(got, 0, "getrlimit");
    assert!(lim.rlim_max >= fds, "this test needs {fds} open files");
    if lim.rlim_cur < fds {
        lim.rlim_cur = fds;
        // SAFETY: as above.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        assert_eq!(set, 0, "setrlimit");
    }
}

/// 6,000 silent clients with Keep Alive 4 and a Will each; the broker is stopped past
/// their deadlines, so more keepalive timers fire at once than one turn handles (4,096).
/// Every Will must still be published (an earlier version lost the excess for good).
#[test]
fn keepalive_deadlines_past_one_turn_all_publish_their_wills() {
    const CLIENTS: usize = 6_000;
    allow_open_files(2 * CLIENTS as u64 + 512);
    let b = Broker::start(&["--shards", "1"]);
    let mut watcher = RawClient::clean(b.addr(), "will-watch");
    watcher.subscribe("will/#", 0);
    let t0 = Instant::now();
    let silent: Vec<RawClient> = (0..CLIENTS)
        .map(|i| {
            let (topic, id) = (format!("will/{i}"), format!("silent-{i}"));
            let o = common::ConnectOpts {
                keep_alive: 4,
                will: Some((topic.as_str(), b"gone".as_slice(), 0, false)),
                ..common::ConnectOpts::v311(&id)
            };
            RawClient::connect_with(b.addr(), &o).0
        })
        .collect();
    let connected = Instant::now();
    common::signal(b.pid(), libc::SIGSTOP);
    // Clients connected in the first 2 s may expire before the stop; the rest, far more
    // than one turn's 4,096 on any machine that connects 6,000 clients in under 4 s, fire
    // together.
    eprintln!("{CLIENTS} clients connected in {:?}", connected - t0);
    // The point of the test: every deadline (6 s after its CONNECT) passes while stopped.
    std::thread::sleep(Duration::from_millis(6_200).saturating_sub(connected.elapsed()));
    common::signal(b.pid(), libc::SIGCONT);
    // Started after the stop, which it would only measure: it times the burst of wills.
    let canary = Canary::start(&b, "wills", 1);
    let mut wills = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wills.len() < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {CLIENTS} wills",
            wills.len()
        );
        wills.insert(watcher.expect_publish(WAIT).topic);
    }
    drop(silent);
    canary.finish();
}

// ---- items 3 and 5: freed memory goes back to the OS ------------------------------------

/// `clients` clients connect, each subscribes to `subs` filters and sends `partial` bytes
/// of a PUBLISH twice that size; returns them once the broker holds all of it.
fn load_clients(
    b: &Broker,
    tag: &str,
    clients: usize,
    subs: usize,
    partial: usize,
) -> Vec<RawClient> {
    let mut open: Vec<RawClient> = (0..clients)
        .map(|i| {
            let mut c = RawClient::clean(b.addr(), &format!("{tag}-{i}"));
            let codes = subscribe_n(&mut c, &format!("{tag}/{i}"), 0..subs);
            assert!(codes.iter().all(|&c| c == 0), "subscriptions granted");
            c
        })
        .collect();
    let mut head = vec![0x30];
    common::varint(2 * partial, &mut head);
    head.extend_from_slice(&[0x00, 0x01, b't']);
    let body = vec![0x5a; partial - head.len()];
    for c in &mut open {
        c.send_bytes(&head);
        c.send_bytes(&body);
    }
    wait_broker_read_all(b, Duration::from_secs(30));
    open
}

/// Freed memory returns to the OS (issue 12 items 3 and 5): after 1,000 clients (2,000
/// with the full counts), each with 50 subscriptions and a 32 KiB partial packet, have
/// come and gone, the broker's RSS comes back to within 10 % of the peak's growth (plus
/// 2 MiB of tables sized for the peak: the slabs' capacity) of its baseline, polled for at
/// most 30 s. It used to stay about 30 MiB above whatever the allocator: bus staging and
/// the outbox kept the capacity of the burst of interest casts the subscriptions made.
/// Returning pages is the allocator's doing: glibc's malloc keeps them (measured in
/// docs/decisions/0012-allocator.md), so a build without jemalloc skips this test.
#[test]
#[cfg_attr(
    not(feature = "jemalloc"),
    ignore = "returning freed pages to the OS is jemalloc's (glibc keeps them)"
)]
fn memory_returns_to_the_os_after_clients_leave() {
    let clients = count(1_000, 2_000);
    allow_open_files(2 * clients as u64 + 512);
    let b = Broker::start(&["--shards", "2", "--max-subscriptions-per-client", "0"]);
    let canary = Canary::start(&b, "rss", 2);
    let base = b.rss_kib();
    let open = load_clients(&b, "rss", clients, 50, 32 * 1024);
    let held = (clients * 32 * 1024) as u64;
    let peak = b.rss_kib();
    for c in open {
        c.drop_tcp();
    }
    let grown = peak.saturating_sub(base);
    assert!(grown * 1024 > held, "peak +{grown} KiB holding {held} B");
    let bound = base + grown / 10 + 2 * 1024;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = peak;
    while now > bound {
        assert!(
            Instant::now() < deadline,
            "RSS {now} KiB 30 s after the clients left: baseline {base} KiB, peak {peak} KiB, \
             bound {bound} KiB"
        );
        std::thread::sleep(Duration::from_millis(250));
        now = b.rss_kib();
    }
    eprintln!("RSS baseline {base} KiB, peak {peak} KiB, after leaving {now} KiB");
    canary.finish();
}

// ---- memory figures in /metrics ----------------------------------------------------------

/// `GET /metrics` from the admin listener at `admin` (bounded by `WAIT`).
fn scrape(admin: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin, WAIT).expect("connect to admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The sum of the samples of `name` whose label set contains `labels` (`k="v"` pairs).
fn sample_sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, set) = series.split_once('{').unwrap_or((series, ""));
        if metric == name && labels.iter().all(|l| set.contains(l)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

/// `/metrics` carries the memory figures: the process's RSS, the allocator's allocated
/// and resident bytes (with the `jemalloc` feature), `memory_limit`, and per shard what
/// the budget accounts, by kind.
/// A client's partial packet and subscriptions show up under their kinds, and go when it
/// leaves. The text also passes `prometheus_client`'s parser where Python has it.
#[test]
fn memory_figures_are_in_metrics() {
    let b = Broker::start(&[
        "--shards",
        "2",
        "--admin",
        "127.0.0.1:0",
        "--memory-limit",
        "1073741824",
    ]);
    let admin = b.admin_addr().expect("admin address printed");
    let mut c = RawClient::clean(b.addr(), "metrics-mem");
    assert!(subscribe_n(&mut c, "mm", 0..500).iter().all(|&x| x == 0));
    let mut head = vec![0x30];
    common::varint(200_000, &mut head);
    head.extend_from_slice(&[0x00, 0x01, b't']);
    c.send_bytes(&head);
    c.send_bytes(&[0x41; 100_000]);
    let accounted = |text: &str, kind: &str| {
        sample_sum(
            text,
            "shardmq_memory_accounted_bytes",
            &[&format!("kind=\"{kind}\"")],
        )
        .expect("shardmq_memory_accounted_bytes")
    };
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = scrape(admin);
        if accounted(&text, "partial_packets") >= 100_000.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no partial packet accounted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // 500 two-level filters at their estimated cost each.
    let subs = accounted(&text, "subscriptions");
    let each = shardmq::session::subscription_bytes("mm/0") as f64;
    assert_eq!(subs, 500.0 * each, "subscriptions accounted");
    let rss = sample_sum(&text, "shardmq_process_resident_memory_bytes", &[]).expect("rss");
    allocator_figures_are_sane(&text, rss);
    let limit = sample_sum(&text, "shardmq_memory_limit_bytes", &[]);
    assert_eq!(limit, Some(1024.0 * 1024.0 * 1024.0));
    check_with_prometheus_parser(&text);
    c.drop_tcp();
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(admin);
        if accounted(&text, "partial_packets") == 0.0 && accounted(&text, "subscriptions") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still accounted after leaving:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// jemalloc's figures: at least the partial packet allocated, allocated ≤ resident, and
/// allocated ≤ the process's RSS. jemalloc's `resident` is an upper bound (its pages may
/// be demand-zero ones never touched), so it may pass the kernel's RSS: once 12.87 MB
/// against an RSS of 12.22 MB, which an assertion `rss >= resident` took for a fault.
#[cfg(feature = "jemalloc")]
fn allocator_figures_are_sane(text: &str, rss: f64) {
    let allocated = sample_sum(text, "shardmq_allocator_allocated_bytes", &[]).expect("alloc");
    let resident = sample_sum(text, "shardmq_allocator_resident_bytes", &[]).expect("resident");
    assert!(
        allocated >= 100_000.0 && resident >= allocated && rss >= allocated,
        "{text}"
    );
}

/// Built without jemalloc (`--no-default-features`, the sanitizer build) the system
/// allocator reports nothing, so the allocator families must be absent, not zero.
#[cfg(not(feature = "jemalloc"))]
fn allocator_figures_are_sane(text: &str, rss: f64) {
    assert!(rss >= 100_000.0, "{text}");
    assert!(!text.contains("shardmq_allocator_"), "{text}");
}

/// Parse `text` with Python's `prometheus_client` and check the memory families' types;
/// skipped (with a note) where Python or the package is missing.
fn check_with_prometheus_parser(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // The allocator's families exist only in a build with jemalloc.
    let allocator = if cfg!(feature = "jemalloc") {
        "'shardmq_allocator_allocated_bytes', 'shardmq_allocator_resident_bytes', "
    } else {
        ""
    };
    let script = format!(
        "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families as p\n\
        f = {{m.name: m.type for m in p(sys.stdin.read())}}\n\
        names = ('shardmq_process_resident_memory_bytes', {allocator}\
        'shardmq_memory_accounted_bytes')\n\
        bad = [(n, f.get(n)) for n in names if f.get(n) != 'gauge']\n\
        assert not bad, bad\n"
    );
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("prometheus_client not available: parser check skipped");
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", script.as_str()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let status = common::wait_exit(&mut child, WAIT).expect("parser finished");
    assert!(status.success(), "prometheus_client rejected /metrics");
}
