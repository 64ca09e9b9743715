//! Backpressure: a subscriber that stops reading must not make the broker's memory grow
//! without bound, must not block the publisher, and must not starve other subscribers.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const N: usize = 20_000;
const PAYLOAD: usize = 1024;
/// Messages the publisher may be ahead of the reading subscriber (well under the 64 KiB
/// write buffer, so the reader never loses a QoS 0 message to its own buffer limit).
const AHEAD: usize = 24;

/// A TCP connection with a tiny receive buffer, so the kernel absorbs little of what the
/// broker writes to a client that never reads.
fn small_rcvbuf_stream(addr: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    s.connect(&addr.into()).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.into()
}

/// Bytes readable from `s` until it stays quiet for 300 ms (bounded to 10 s overall).
fn drain_until_quiet(s: &mut TcpStream) -> usize {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    total
}

fn stalled_subscriber_is_bounded_and_does_not_block_others(shards: usize) {
    let b = Broker::with_shards(shards, &["--max-write-buffer", "65536"]);
    let ids = spread_ids("bp", 3, shards);

    // The stalled subscriber: connects, subscribes, then never reads again.
    let mut stalled_stream = small_rcvbuf_stream(b.addr());
    {
        use std::io::Write;
        stalled_stream
            .write_all(&connect_v311_bytes(&ids[0]))
            .expect("CONNECT");
        let mut sub = vec![0x00, 0x01];
        mqtt_str(b"bp/t", &mut sub);
        sub.push(0);
        stalled_stream
            .write_all(&frame(0x82, &sub))
            .expect("SUBSCRIBE");
        // CONNACK (4 bytes) + SUBACK (5 bytes).
        let mut ack = [0u8; 9];
        stalled_stream
            .set_read_timeout(Some(WAIT))
            .expect("timeout");
        stalled_stream
            .read_exact(&mut ack)
            .expect("CONNACK + SUBACK");
        assert_eq!(ack, [0x20, 0x02, 0x00, 0x00, 0x90, 0x03, 0x00, 0x01, 0x00]);
    }

    // The normal subscriber, reading in its own thread.
    let mut reader = RawClient::clean(b.addr(), &ids[1]);
    reader.subscribe("bp/t", 0);
    let received = Arc::new(AtomicUsize::new(0));
    let got = received.clone();
    let reader_thread = std::thread::spawn(move || {
        for i in 0..N {
            let m = match reader.try_packet(Duration::from_secs(20)) {
                Ok(Got::Publish(m)) => m,
                other => return Err(format!("reader: message {i}: {other:?}")),
            };
            let seq = u32::from_be_bytes(m.payload[..4].try_into().expect("4 bytes")) as usize;
            if seq != i || m.payload.len() != PAYLOAD {
                return Err(format!("reader: expected message {i}, got {seq}"));
            }
            got.store(i + 1, Ordering::Release);
        }
        Ok(reader)
    });

    let rss_before = b.rss_kib();
    let mut rss_max = rss_before;
    let mut publ = RawClient::clean(b.addr(), &ids[2]);
    let t0 = Instant::now();
    let mut payload = vec![0xA5u8; PAYLOAD];
    for i in 0..N {
        // Pace on the normal subscriber only: the stalled one must not slow us down.
        let spin = Instant::now();
        while i > AHEAD + received.load(Ordering::Acquire) {
            assert!(
                spin.elapsed() < Duration::from_secs(10),
                "publisher blocked at message {i}: the reader got only {} in 10 s",
                received.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
        publ.send_publish("bp/t", &payload, 0, false, false, None);
        if i % 2000 == 0 {
            rss_max = rss_max.max(b.rss_kib());
        }
    }
    publ.ping();
    let send_time = t0.elapsed();
    let reader = reader_thread.join().expect("reader thread");
    if let Err(e) = reader {
        panic!("{e}");
    }
    rss_max = rss_max.max(b.rss_kib());
    let growth_mib = rss_max.saturating_sub(rss_before) / 1024;
    eprintln!(
        "backpressure ({shards} shards): {N} msgs in {send_time:?}, RSS {rss_before} KiB → max {rss_max} KiB"
    );
    assert!(
        send_time < Duration::from_secs(40),
        "publisher took {send_time:?} for {N} messages"
    );
    assert!(
        growth_mib < 16,
        "broker RSS grew by {growth_mib} MiB while one subscriber stalled (20 MiB sent)"
    );
    // The stalled subscriber got only what fitted in the buffers: most was dropped.
    let stalled_bytes = drain_until_quiet(&mut stalled_stream);
    assert!(
        stalled_bytes < N * PAYLOAD / 2,
        "the stalled subscriber was still sent {stalled_bytes} bytes: nothing was dropped"
    );
    // The broker still serves new clients.
    let mut fresh = RawClient::clean(b.addr(), &id_on("bp-fresh", 1, shards));
    fresh.ping();
}

fn stalled_qos1_subscriber_gets_window_plus_queue(shards: usize) {
    let b = Broker::with_shards(
        shards,
        &[
            "--max-inflight-messages",
            "10",
            "--max-queued-messages",
            "50",
        ],
    );
    let ids = spread_ids("bq", 2, shards);
    let mut sub = RawClient::clean(b.addr(), &ids[0]);
    sub.subscribe("bq/t", 1);
    // A QoS 0 probe on the subscriber's home shard: once it has every message, that shard
    // has routed them all (the bus is FIFO per pair of shards).
    let home = shardmq::broker::home_shard(&ids[0], shards);
    let mut probe = RawClient::clean(b.addr(), &id_on("bq-probe", home, shards));
    probe.subscribe("bq/t", 0);
    let mut publ = RawClient::clean(b.addr(), &ids[1]);
    // 2000 QoS 1 messages, pipelined: the publisher gets every PUBACK although the
    // subscriber acknowledges nothing.
    let t0 = Instant::now();
    for i in 1..=2000u16 {
        publ.send_publish("bq/t", &i.to_be_bytes(), 1, false, false, Some(i));
    }
    for i in 1..=2000u16 {
        assert_eq!(publ.expect_packet(WAIT), Got::PubAck(i));
    }
    assert!(t0.elapsed() < Duration::from_secs(20));
    for i in 1..=2000u16 {
        assert_eq!(probe.expect_publish(WAIT).payload, i.to_be_bytes());
    }
    // Window (10) sent, queue (50) kept, the rest dropped: exactly messages 1..=60 arrive.
    let first: Vec<Msg> = (0..10).map(|_| sub.expect_publish(WAIT)).collect();
    sub.expect_nothing(QUIET);
    for m in &first {
        sub.ack(m);
    }
    let mut seqs: Vec<u16> = first
        .iter()
        .map(|m| u16::from_be_bytes([m.payload[0], m.payload[1]]))
        .collect();
    for _ in 0..50 {
        let m = sub.expect_publish_acked(WAIT);
        seqs.push(u16::from_be_bytes([m.payload[0], m.payload[1]]));
    }
    assert_eq!(seqs, (1..=60).collect::<Vec<u16>>());
    sub.expect_nothing(QUIET);
}

/// A client subscribed to its own topic that publishes without reading: the broker stops
/// reading it once its output is over the limit (its writes then block), keeps memory
/// bounded, and resumes reading as soon as the client drains its output.
fn self_subscribed_client_that_stops_reading_is_paused_then_resumed(shards: usize) {
    let b = Broker::with_shards(shards, &["--max-write-buffer", "65536"]);
    let mut c = RawClient::clean(b.addr(), &id_on("selfloop", 1, shards));
    c.subscribe("loop/#", 0);
    let mut writer = c.stream().try_clone().expect("clone stream");
    let written = Arc::new(AtomicUsize::new(0));
    let progress = written.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut payload = vec![0x5Au8; PAYLOAD];
        for i in 0..N {
            payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
            if writer
                .write_all(&publish_bytes(0x30, b"loop/x", None, &payload))
                .is_err()
            {
                return;
            }
            progress.store(i + 1, Ordering::Release);
        }
        let _ = writer.write_all(&[0xC0, 0x00]);
        let _ = done_tx.send(());
    });
    // Wait until the writer stalls (the broker stopped reading) or finishes.
    let rss_before = b.rss_kib();
    let mut last = (0, Instant::now());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::Acquire);
        if now == N {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(300) {
            break;
        }
    }
    let stalled_at = written.load(Ordering::Acquire);
    let rss_stalled = b.rss_kib();
    assert!(
        stalled_at < N,
        "the broker kept reading a client that never reads ({N} × 1 KiB accepted)"
    );
    // Now read: the broker must resume reading the client's input.
    let mut seqs = Vec::new();
    loop {
        match c.try_packet(Duration::from_secs(10)) {
            Ok(Got::Publish(m)) => {
                seqs.push(u32::from_be_bytes(m.payload[..4].try_into().expect("seq")))
            }
            Ok(Got::PingResp) => break,
            other => panic!(
                "after {} deliveries (writer at {}): {other:?}",
                seqs.len(),
                written.load(Ordering::Acquire)
            ),
        }
    }
    done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the writer finished");
    assert!(!seqs.is_empty());
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "deliveries out of order"
    );
    let growth_mib = rss_stalled.saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 16,
        "RSS grew {growth_mib} MiB while the client stalled"
    );
    RawClient::clean(b.addr(), &id_on("selfloop-after", 2, shards)).ping();
}

shard_tests!(
    self_subscribed_client_that_stops_reading_is_paused_then_resumed,
    stalled_subscriber_is_bounded_and_does_not_block_others,
    stalled_qos1_subscriber_gets_window_plus_queue,
);
