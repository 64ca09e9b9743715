//! Bad input: a table of malformed byte sequences, each on its own connection, must close
//! that connection within 1 s without any other answer (except CONNACK 0x01 for an
//! unsupported protocol level), while a canary publisher/subscriber pair keeps working.
//! Then random and truncated bytes over many sockets must not disturb normal clients.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Where a case's bytes are sent.
#[derive(Clone, Copy, Debug)]
enum When {
    /// As the first bytes of the connection.
    BeforeConnect,
    /// After a valid 3.1.1 CONNECT and its CONNACK.
    AfterConnect,
}

/// What must happen.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Closed, nothing sent.
    Close,
    /// CONNACK with this return code, then closed.
    ConnAckThenClose(u8),
}

struct Case {
    name: &'static str,
    when: When,
    bytes: Vec<u8>,
    expect: Expect,
}

fn connect_body(name: &[u8], level: u8, flags: u8, id: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(name, &mut body);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_str(id, &mut body);
    body
}

fn subscribe_body(pid: u16, entries: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for (f, o) in entries {
        mqtt_str(f, &mut body);
        body.push(*o);
    }
    body
}

fn cases() -> Vec<Case> {
    use Expect::*;
    use When::*;
    let good_connect = connect_body(b"MQTT", 4, 0x02, b"m");
    let mut with_will_qos3 = connect_body(b"MQTT", 4, 0x02 | 0x04 | 0x18, b"m");
    mqtt_str(b"will/t", &mut with_will_qos3);
    mqtt_str(b"w", &mut with_will_qos3);
    let mut password_no_user = connect_body(b"MQTT", 4, 0x02 | 0x40, b"m");
    mqtt_str(b"secret", &mut password_no_user);
    let will_retain_no_will = connect_body(b"MQTT", 4, 0x02 | 0x20, b"m");
    let c = |name, when, bytes, expect| Case {
        name,
        when,
        bytes,
        expect,
    };
    vec![
        // ---- before CONNECT ----
        c(
            "reserved packet type 0",
            BeforeConnect,
            vec![0x00, 0x00],
            Close,
        ),
        c(
            "packet type 15 (AUTH) from a 3.1.1 client",
            BeforeConnect,
            vec![0xF0, 0x00],
            Close,
        ),
        c(
            "CONNECT with fixed-header flags 0001",
            BeforeConnect,
            frame(0x11, &good_connect),
            Close,
        ),
        c(
            "remaining length varint of 5 bytes",
            BeforeConnect,
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            Close,
        ),
        c(
            "CONNECT truncated inside its variable header",
            BeforeConnect,
            frame(0x10, &good_connect[..7]),
            Close,
        ),
        c(
            "CONNECT with reserved connect flag bit 0 set",
            BeforeConnect,
            frame(0x10, &connect_body(b"MQTT", 4, 0x03, b"m")),
            Close,
        ),
        c(
            "CONNECT with will QoS 3",
            BeforeConnect,
            frame(0x10, &with_will_qos3),
            Close,
        ),
        c(
            "CONNECT with will QoS 1 but no will flag",
            BeforeConnect,
            frame(0x10, &connect_body(b"MQTT", 4, 0x02 | 0x08, b"m")),
            Close,
        ),
        c(
            "CONNECT with will retain but no will flag",
            BeforeConnect,
            frame(0x10, &will_retain_no_will),
            Close,
        ),
        c(
            "CONNECT with password flag but no user name flag",
            BeforeConnect,
            frame(0x10, &password_no_user),
            Close,
        ),
        c(
            "CONNECT with a client id that is not UTF-8",
            BeforeConnect,
            frame(0x10, &connect_body(b"MQTT", 4, 0x02, &[0xC3, 0x28])),
            Close,
        ),
        c(
            "CONNECT with U+0000 in the client id",
            BeforeConnect,
            frame(0x10, &connect_body(b"MQTT", 4, 0x02, b"a\0b")),
            Close,
        ),
        c(
            "CONNECT whose client id runs past the remaining length",
            BeforeConnect,
            {
                let mut b = connect_body(b"MQTT", 4, 0x02, b"abcdef");
                b.truncate(b.len() - 3);
                frame(0x10, &b)
            },
            Close,
        ),
        c(
            "CONNECT protocol level 9",
            BeforeConnect,
            frame(0x10, &connect_body(b"MQTT", 9, 0x02, b"m")),
            ConnAckThenClose(1),
        ),
        c(
            "CONNACK sent by a client",
            BeforeConnect,
            vec![0x20, 0x02, 0x00, 0x00],
            Close,
        ),
        c(
            "PUBLISH before CONNECT",
            BeforeConnect,
            publish_bytes(0x30, b"a", None, b"x"),
            Close,
        ),
        // ---- after CONNECT ----
        c(
            "PUBLISH with QoS 3",
            AfterConnect,
            publish_bytes(0x36, b"a", Some(1), b"x"),
            Close,
        ),
        c(
            "PUBLISH QoS 1 with packet id 0",
            AfterConnect,
            publish_bytes(0x32, b"a", Some(0), b"x"),
            Close,
        ),
        c(
            "PUBLISH QoS 2 with packet id 0",
            AfterConnect,
            publish_bytes(0x34, b"a", Some(0), b"x"),
            Close,
        ),
        c(
            "PUBLISH to a topic with +",
            AfterConnect,
            publish_bytes(0x30, b"a/+/b", None, b"x"),
            Close,
        ),
        c(
            "PUBLISH to a topic with #",
            AfterConnect,
            publish_bytes(0x31, b"a/#", None, b"x"),
            Close,
        ),
        c(
            "PUBLISH with an empty topic",
            AfterConnect,
            publish_bytes(0x30, b"", None, b"x"),
            Close,
        ),
        c(
            "PUBLISH with a topic that is not UTF-8",
            AfterConnect,
            publish_bytes(0x30, &[b'a', 0xFF, 0xFE], None, b"x"),
            Close,
        ),
        c(
            "PUBLISH with U+0000 in the topic",
            AfterConnect,
            publish_bytes(0x30, b"a\0b", None, b"x"),
            Close,
        ),
        c(
            "PUBLISH topic length past the packet end",
            AfterConnect,
            frame(0x30, &[0x00, 0x10, b'a']),
            Close,
        ),
        c(
            "bad remaining length varint after CONNECT",
            AfterConnect,
            vec![0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
            Close,
        ),
        c(
            "SUBSCRIBE with fixed-header flags 0000",
            AfterConnect,
            frame(0x80, &subscribe_body(1, &[(b"a", 0)])),
            Close,
        ),
        c(
            "SUBSCRIBE without any filter",
            AfterConnect,
            frame(0x82, &subscribe_body(1, &[])),
            Close,
        ),
        c(
            "SUBSCRIBE with requested QoS 3",
            AfterConnect,
            frame(0x82, &subscribe_body(1, &[(b"a", 3)])),
            Close,
        ),
        c(
            "SUBSCRIBE with reserved option bits (3.1.1)",
            AfterConnect,
            frame(0x82, &subscribe_body(1, &[(b"a", 0x04)])),
            Close,
        ),
        c(
            "SUBSCRIBE with packet id 0",
            AfterConnect,
            frame(0x82, &subscribe_body(0, &[(b"a", 0)])),
            Close,
        ),
        c(
            "SUBSCRIBE with a filter that is not UTF-8",
            AfterConnect,
            frame(0x82, &subscribe_body(1, &[(&[0xC0, 0x80], 0)])),
            Close,
        ),
        c(
            "UNSUBSCRIBE with fixed-header flags 0000",
            AfterConnect,
            {
                let mut b = vec![0x00, 0x01];
                mqtt_str(b"a", &mut b);
                frame(0xA0, &b)
            },
            Close,
        ),
        c(
            "UNSUBSCRIBE without any filter",
            AfterConnect,
            frame(0xA2, &[0x00, 0x01]),
            Close,
        ),
        c(
            "PUBREL with fixed-header flags 0000",
            AfterConnect,
            vec![0x60, 0x02, 0x00, 0x01],
            Close,
        ),
        c(
            "PUBACK with fixed-header flags 0010",
            AfterConnect,
            vec![0x42, 0x02, 0x00, 0x01],
            Close,
        ),
        c(
            "PUBACK with packet id 0",
            AfterConnect,
            vec![0x40, 0x02, 0x00, 0x00],
            Close,
        ),
        c(
            "PUBREC missing its packet id",
            AfterConnect,
            vec![0x50, 0x00],
            Close,
        ),
        c(
            "PINGREQ with a body",
            AfterConnect,
            vec![0xC0, 0x01, 0x00],
            Close,
        ),
        c(
            "CONNACK sent by a client",
            AfterConnect,
            vec![0x20, 0x02, 0x00, 0x00],
            Close,
        ),
        c(
            "SUBACK sent by a client",
            AfterConnect,
            vec![0x90, 0x03, 0x00, 0x01, 0x00],
            Close,
        ),
        c(
            "UNSUBACK sent by a client",
            AfterConnect,
            vec![0xB0, 0x02, 0x00, 0x01],
            Close,
        ),
        c(
            "PINGRESP sent by a client",
            AfterConnect,
            vec![0xD0, 0x00],
            Close,
        ),
        c(
            "second CONNECT",
            AfterConnect,
            frame(0x10, &good_connect),
            Close,
        ),
        c(
            "reserved packet type 0 after CONNECT",
            AfterConnect,
            vec![0x00, 0x00],
            Close,
        ),
        c(
            "AUTH from a 3.1.1 client",
            AfterConnect,
            vec![0xF0, 0x00],
            Close,
        ),
    ]
}

/// Run one case; `Err` describes how the broker misbehaved.
fn run_case(addr: SocketAddr, case: &Case, n: usize) -> Result<(), String> {
    let mut c = RawClient::connect(addr);
    c.id = format!("case{n}");
    if let When::AfterConnect = case.when {
        c.send_bytes(&connect_v311_bytes(&format!("malformed-{n}")));
        match c.try_packet(WAIT) {
            Ok(Got::ConnAck { code: 0, .. }) => {}
            other => return Err(format!("setup CONNECT not accepted: {other:?}")),
        }
    }
    c.send_bytes(&case.bytes);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match c.try_packet(left) {
            Ok(g) => seen.push(g),
            Err(WaitError::Closed) => break,
            Err(WaitError::Timeout) => {
                return Err(format!("still open after 1 s (received {seen:?})"));
            }
            Err(WaitError::Garbage(g)) => return Err(format!("undecodable answer {g}")),
        }
    }
    let want = match case.expect {
        Expect::Close => vec![],
        Expect::ConnAckThenClose(code) => vec![Got::ConnAck {
            present: false,
            code,
        }],
    };
    if seen != want {
        return Err(format!(
            "closed, but first sent {seen:?} (expected {want:?})"
        ));
    }
    Ok(())
}

/// A subscriber and a publisher that must keep working.
struct Canary {
    sub: RawClient,
    publ: RawClient,
    n: u32,
}

impl Canary {
    fn new(addr: SocketAddr, shards: usize) -> Canary {
        let mut sub = RawClient::clean(addr, &id_on("canary-sub", 0, shards));
        sub.subscribe("canary/#", 1);
        let publ = RawClient::clean(addr, &id_on("canary-pub", 1, shards));
        Canary { sub, publ, n: 0 }
    }

    fn check(&mut self, after: &str) {
        self.n += 1;
        let payload = self.n.to_be_bytes();
        self.publ.publish("canary/t", &payload, 1, false);
        match self.sub.try_packet(WAIT) {
            Ok(Got::Publish(m)) if m.payload == payload => self.sub.ack(&m),
            other => panic!("canary broken after {after}: {other:?}"),
        }
    }
}

fn malformed_packets_close_the_connection(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let mut canary = Canary::new(b.addr(), shards);
    let table = cases();
    assert!(table.len() >= 20);
    let mut failures = Vec::new();
    for (n, case) in table.iter().enumerate() {
        if let Err(e) = run_case(b.addr(), case, n) {
            failures.push(format!(
                "  {} ({:?}, {:02x?}): {e}",
                case.name, case.when, case.bytes
            ));
        }
        canary.check(case.name);
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed inputs mishandled:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

fn will_published_after_malformed_packet(shards: usize) {
    let b = Broker::with_shards(shards, &[]);
    let mut watcher = RawClient::clean(b.addr(), &id_on("mw-watch", 0, shards));
    watcher.subscribe("mw/will", 1);
    let (mut c, _) = RawClient::connect_v311(
        b.addr(),
        &id_on("mw-victim", 1, shards),
        true,
        60,
        Some(("mw/will", b"malformed", 1, false)),
    );
    c.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
    c.expect_closed(Duration::from_secs(1));
    assert_eq!(watcher.expect_publish_acked(WAIT).payload, b"malformed");
}

/// One chunk of hostile input, chosen by the PRNG.
fn hostile_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let connect = connect_v311_bytes(&format!("fz{n}"));
    match rng.below(6) {
        // Pure noise.
        0 => {
            let len = 1 + rng.below(300);
            rng.bytes(len)
        }
        // A valid CONNECT followed by noise.
        1 => {
            let mut v = connect;
            let len = 1 + rng.below(200);
            v.extend(rng.bytes(len));
            v
        }
        // A truncated CONNECT.
        2 => connect[..rng.below(connect.len())].to_vec(),
        // A CONNECT with one byte flipped.
        3 => {
            let mut v = connect;
            let i = rng.below(v.len());
            v[i] ^= 1 << rng.below(8);
            v
        }
        // A valid CONNECT and a truncated or corrupted PUBLISH / SUBSCRIBE.
        4 => {
            let mut v = connect;
            let mut p = if rng.below(2) == 0 {
                publish_bytes(0x32, b"fuzz/t", Some(1), &rng.bytes(20))
            } else {
                frame(0x82, &{
                    let mut b = vec![0x00, 0x01];
                    mqtt_str(b"fuzz/#", &mut b);
                    b.push(1);
                    b
                })
            };
            if rng.below(2) == 0 {
                p.truncate(rng.below(p.len()));
            } else {
                let i = rng.below(p.len());
                p[i] = rng.next_u64() as u8;
            }
            v.extend(p);
            v
        }
        // A huge announced length with little behind it.
        _ => {
            let mut v = connect;
            v.extend_from_slice(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x03, b'a']);
            v
        }
    }
}

fn random_and_truncated_bytes_do_not_disturb_others(shards: usize) {
    let b = Broker::with_shards(shards, &["--connect-timeout", "2"]);
    let mut canary = Canary::new(b.addr(), shards);
    let addr = b.addr();
    // 4 threads × 50 sockets, deterministic per thread; half are dropped at once, half are
    // kept open until the canary has been checked.
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x5eed_0000 + t);
                let mut kept = Vec::new();
                for i in 0..50 {
                    let n = (t as usize) * 50 + i;
                    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    use std::io::Write;
                    let bytes = hostile_bytes(&mut rng, n);
                    let _ = s.write_all(&bytes);
                    if rng.below(2) == 0 {
                        kept.push(s);
                    }
                }
                kept
            })
        })
        .collect();
    let kept: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("fuzz thread"))
        .collect();
    canary.check("200 hostile sockets (some still open)");
    drop(kept);
    canary.check("200 hostile sockets closed");
    // New clients still connect and talk.
    let mut fresh = RawClient::clean(addr, &id_on("fresh", 2, shards));
    fresh.subscribe("canary/#", 0);
    canary.check("fresh subscriber");
    assert_eq!(fresh.expect_publish(WAIT).topic, "canary/t");
}

shard_tests!(
    malformed_packets_close_the_connection,
    will_published_after_malformed_packet,
    random_and_truncated_bytes_do_not_disturb_others,
);
