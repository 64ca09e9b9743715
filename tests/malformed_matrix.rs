//! The byte-level malformed-input matrix (rows M1 and M2 of the reliability bar): every
//! malformed-packet and protocol-error class × packet type × version (3.1, 3.1.1, 5.0),
//! each case on its own connection, sent whole (M1), one byte at a time and joined to the
//! next valid packet in one write (M2). Every case must end with the exact outcome its
//! family states (CONNACK or DISCONNECT with the reason code in 5.0, a plain close or a
//! CONNACK return code before) within 1 s, and nothing after the malformed bytes may be
//! processed. A canary QoS 1 publisher/subscriber pair on the same broker (2 shards) must
//! stay connected and fast throughout; its p99 is printed.
//!
//! Cases run concurrently (bounded). `SHARDMQ_MATRIX_EXHAUSTIVE=1` widens the families
//! (every reserved-bit combination, every undefined property id, more bad strings);
//! `SHARDMQ_MATRIX_CONCURRENCY` sets the number of connections in flight.
//!
//! Divergences that an open item of issue 12 fixes are listed in `known_open` and printed
//! as such; they do not fail the run, and one that starts passing is printed too so it can
//! leave the list. Any other divergence fails the test.

mod common;

#[path = "malformed_matrix/cases.rs"]
mod cases;
#[path = "malformed_matrix/lengths.rs"]
mod lengths;
#[path = "malformed_matrix/props.rs"]
mod props;
#[path = "malformed_matrix/strings.rs"]
mod strings;
#[path = "malformed_matrix/wire.rs"]
mod wire;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cases::{Case, Expect, Stage};
use common::canary::Canary;
use common::*;
use wire::{hex, valid_connect, Ver};

/// How long the broker has to answer and close, after the last byte.
const DEADLINE: Duration = Duration::from_secs(1);
/// Pause between single bytes in the byte-at-a-time mode, so they arrive as separate reads.
const BYTE_GAP: Duration = Duration::from_micros(200);
/// Bytes sent singly (with the gap) before the rest of a long case goes in one write.
const BYTEWISE_MAX: usize = 256;

/// How a case's bytes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// In one write (M1).
    Whole,
    /// One byte per write (M2).
    Bytewise,
    /// In one write together with a valid next packet (M2).
    Joined,
}

const MODES: [Mode; 3] = [Mode::Whole, Mode::Bytewise, Mode::Joined];

/// What came back from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// CONNACK with its return/reason code.
    ConnAck(u8),
    /// DISCONNECT with its reason code.
    Disconnect(u8),
    /// Any other packet: its first byte.
    Other(u8),
}

/// The answers and whether the connection was closed before the deadline.
#[derive(Debug)]
struct Outcome {
    answers: Vec<Answer>,
    closed: bool,
}

/// A raw socket with a receive buffer that splits what arrives into packets.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn open(addr: SocketAddr) -> Result<Wire, String> {
        let stream =
            TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        Ok(Wire {
            stream,
            buf: Vec::new(),
        })
    }

    /// One complete packet from the buffer: (first byte, body).
    fn take_packet(&mut self) -> Option<(u8, Vec<u8>)> {
        let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
        loop {
            let b = *self.buf.get(i)?;
            len += usize::from(b & 0x7F) * mult;
            mult *= 128;
            i += 1;
            if b & 0x80 == 0 || i > 4 {
                break;
            }
        }
        if self.buf.len() < i + len {
            return None;
        }
        let first = self.buf[0];
        let body = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        Some((first, body))
    }

    /// Read until a packet is complete, EOF (`Ok(None)`) or the deadline (`Err`).
    fn next(&mut self, deadline: Instant) -> Result<Option<(u8, Vec<u8>)>, ()> {
        loop {
            if let Some(p) = self.take_packet() {
                return Ok(Some(p));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(());
            }
            self.stream.set_read_timeout(Some(left)).map_err(|_| ())?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(())
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A reset is a close: what arrived before it is already in the buffer.
                Err(_) => return Ok(None),
            }
        }
    }

    /// Everything until the close or the deadline.
    fn outcome(&mut self, deadline: Instant) -> Outcome {
        let mut answers = Vec::new();
        loop {
            match self.next(deadline) {
                Ok(Some((first, body))) => answers.push(match first >> 4 {
                    2 => Answer::ConnAck(body.get(1).copied().unwrap_or(0xFF)),
                    14 => Answer::Disconnect(body.first().copied().unwrap_or(0)),
                    _ => Answer::Other(first),
                }),
                Ok(None) => {
                    return Outcome {
                        answers,
                        closed: true,
                    }
                }
                Err(()) => {
                    return Outcome {
                        answers,
                        closed: false,
                    }
                }
            }
        }
    }

    /// Write `bytes` in the way `mode` says; write errors (an early close) end the sending.
    fn send(&mut self, bytes: &[u8], mode: Mode) {
        if mode != Mode::Bytewise {
            let _ = self.stream.write_all(bytes);
            return;
        }
        let split = bytes.len().min(BYTEWISE_MAX);
        for b in &bytes[..split] {
            if self.stream.write_all(std::slice::from_ref(b)).is_err() {
                return;
            }
            std::thread::sleep(BYTE_GAP);
        }
        let _ = self.stream.write_all(&bytes[split..]);
    }
}

/// The client id of job `n` (short: 3.1 allows 23 characters).
fn job_id(n: usize) -> String {
    format!("mx{n}")
}

/// The bytes of `case` for job `n`: a "same client id" second CONNECT names the job's id.
fn case_bytes(case: &Case, n: usize) -> Vec<u8> {
    if case.class == "second-connect" && case.name.ends_with("same client id") {
        valid_connect(case.ver, &job_id(n))
    } else {
        case.bytes.clone()
    }
}

/// CONNECT as the case's version and require CONNACK 0.
fn setup(w: &mut Wire, ver: Ver, n: usize) -> Result<(), String> {
    w.stream
        .write_all(&valid_connect(ver, &job_id(n)))
        .map_err(|e| format!("setup write: {e}"))?;
    match w.next(Instant::now() + WAIT) {
        Ok(Some((0x20, body))) if body.get(1) == Some(&0) => Ok(()),
        other => Err(format!("setup CONNECT not accepted: {other:?}")),
    }
}

/// Run case `case` in `mode` as job `n`; `Err` says how the broker diverged.
fn run_job(addr: SocketAddr, case: &Case, mode: Mode, n: usize) -> Result<(), String> {
    let mut w = Wire::open(addr)?;
    if case.stage == Stage::Connected {
        setup(&mut w, case.ver, n)?;
    }
    let mut bytes = case_bytes(case, n);
    if mode == Mode::Joined {
        // The next packet would be answered if it were processed: PINGRESP or CONNACK 0.
        match case.stage {
            Stage::Connected => bytes.extend_from_slice(&[0xC0, 0x00]),
            Stage::First => bytes.extend(valid_connect(case.ver, &format!("{}j", job_id(n)))),
        }
    }
    w.send(&bytes, mode);
    let sent = Instant::now();
    let out = w.outcome(sent + DEADLINE);
    let want = match case.expect {
        Expect::Close => vec![],
        Expect::ConnAck(c) => vec![Answer::ConnAck(c)],
        Expect::Disconnect(c) => vec![Answer::Disconnect(c)],
    };
    match (out.closed, out.answers == want) {
        (true, true) => Ok(()),
        (closed, _) => Err(format!(
            "expected {:?} then close; got {:?}{}",
            case.expect,
            out.answers,
            if closed {
                ", closed"
            } else {
                ", still open after 1 s"
            }
        )),
    }
}

/// Divergences an open item of issue 12 fixes: the item, or `None`.
///
/// Item 6: a first packet other than CONNECT that is incomplete waits for the CONNECT
/// timeout. Joined to a CONNECT it is complete (the CONNECT's bytes fill its body), so
/// that mode already closes at once.
fn known_open(_case: &Case, _mode: Mode) -> Option<&'static str> {
    // None is open: the last, issue 12 item 6 (an incomplete first packet other than
    // CONNECT closed only at the CONNECT deadline), now closes on its first byte.
    None
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One job's result: (case index, mode, result).
type JobResult = (usize, Mode, Result<(), String>);

/// Run every (case, mode) on `workers` threads.
fn run_all(addr: SocketAddr, table: &Arc<Vec<Case>>, workers: usize) -> Vec<JobResult> {
    let jobs = table.len() * MODES.len();
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (table, next) = (Arc::clone(table), Arc::clone(&next));
            std::thread::spawn(move || {
                let mut done = Vec::new();
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs {
                        return done;
                    }
                    let (i, mode) = (j / MODES.len(), MODES[j % MODES.len()]);
                    done.push((i, mode, run_job(addr, &table[i], mode, j)));
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("matrix worker"))
        .collect()
}

/// Per (class, version): cases, passes per mode, known-open failures.
#[derive(Default)]
struct Row {
    cases: usize,
    passed: [usize; 3],
    known: usize,
}

fn summary(table: &[Case], results: &[JobResult]) -> BTreeMap<(usize, Ver), Row> {
    let class_ix = |c: &str| {
        cases::CLASSES
            .iter()
            .position(|&k| k == c)
            .expect("known class")
    };
    let mut rows: BTreeMap<(usize, Ver), Row> = BTreeMap::new();
    for c in table {
        rows.entry((class_ix(c.class), c.ver)).or_default().cases += 1;
    }
    for (i, mode, r) in results {
        let c = &table[*i];
        let row = rows.get_mut(&(class_ix(c.class), c.ver)).expect("row");
        match r {
            Ok(()) => row.passed[*mode as usize] += 1,
            Err(_) if known_open(c, *mode).is_some() => row.known += 1,
            Err(_) => {}
        }
    }
    rows
}

fn print_summary(rows: &BTreeMap<(usize, Ver), Row>) {
    println!(
        "\n| class | version | cases | whole | 1 byte at a time | joined | known-open fails |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut total = Row::default();
    for ((c, ver), r) in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            cases::CLASSES[*c],
            ver.label(),
            r.cases,
            r.passed[0],
            r.passed[1],
            r.passed[2],
            r.known
        );
        total.cases += r.cases;
        for m in 0..3 {
            total.passed[m] += r.passed[m];
        }
        total.known += r.known;
    }
    println!(
        "| **total** | | {} | {} | {} | {} | {} |\n",
        total.cases, total.passed[0], total.passed[1], total.passed[2], total.known
    );
}

/// The percentile `p` (0..=100) of `lat`, in milliseconds.
fn percentile_ms(lat: &mut [Duration], p: usize) -> f64 {
    lat.sort();
    let i = (lat.len() * p / 100).min(lat.len().saturating_sub(1));
    lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[test]
fn malformed_input_matrix() {
    let wide = std::env::var_os("SHARDMQ_MATRIX_EXHAUSTIVE").is_some();
    let workers = env_usize("SHARDMQ_MATRIX_CONCURRENCY", 32);
    let max = cases::MAX_PACKET.to_string();
    let broker = Broker::with_shards(2, &["--max-packet-size", &max]);
    let addr = broker.addr();
    let table = Arc::new(cases::all(wide));
    assert!(
        table.len() >= 1000,
        "the matrix has only {} cases",
        table.len()
    );

    let canary = Canary::start(&broker, "matrix", 2);
    let started = Instant::now();
    let results = run_all(addr, &table, workers);
    let took = started.elapsed();
    let mut lat = canary.latencies();

    let rows = summary(&table, &results);
    print_summary(&rows);
    report(&table, &results, took, &mut lat, workers);
    check(&table, &results, &mut lat);
}

fn report(
    table: &[Case],
    results: &[JobResult],
    took: Duration,
    lat: &mut [Duration],
    workers: usize,
) {
    println!(
        "{} cases × {} modes = {} connections in {:.1} s ({workers} at a time)",
        table.len(),
        MODES.len(),
        results.len(),
        took.as_secs_f64()
    );
    println!(
        "canary: {} QoS 1 round trips, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile_ms(lat, 50),
        percentile_ms(lat, 99),
        percentile_ms(lat, 100)
    );
    let mut known: BTreeMap<&str, usize> = BTreeMap::new();
    let mut now_passing = 0;
    for (i, mode, r) in results {
        match (known_open(&table[*i], *mode), r) {
            (Some(item), Err(_)) => *known.entry(item).or_default() += 1,
            (Some(_), Ok(())) => {
                now_passing += 1;
                let c = &table[*i];
                println!(
                    "  known-open but passing: [{} {}] {} ({mode:?})",
                    c.class,
                    c.ver.label(),
                    c.name
                );
            }
            _ => {}
        }
    }
    for (item, n) in known {
        println!("expected to fail until {item} lands: {n} runs");
    }
    if now_passing > 0 {
        println!("{now_passing} runs on the known-open list now pass: shrink `known_open`");
    }
}

fn check(table: &[Case], results: &[JobResult], lat: &mut [Duration]) {
    let failures: Vec<String> = results
        .iter()
        .filter(|(i, mode, r)| r.is_err() && known_open(&table[*i], *mode).is_none())
        .map(|(i, mode, r)| {
            let c = &table[*i];
            format!(
                "  [{} {}] {} ({mode:?}, {:?}) {}: {}",
                c.class,
                c.ver.label(),
                c.name,
                c.stage,
                hex(&c.bytes[..c.bytes.len().min(48)]),
                r.as_ref().err().map_or("", String::as_str)
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} runs diverged:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
    assert!(!lat.is_empty(), "the canary completed no round trip");
    let p99_max = env_usize("SHARDMQ_MATRIX_CANARY_P99_MS", 250) as f64;
    let p99 = percentile_ms(lat, 99);
    assert!(p99 <= p99_max, "canary p99 {p99:.1} ms over {p99_max} ms");
}
