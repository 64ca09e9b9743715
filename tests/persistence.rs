//! Persistence, black box: what a broker acknowledged survives `kill -9` (SIGKILL by PID)
//! and a restart, with the same or another shard count. Every broker here has its own
//! fresh `--data-dir` under the system temporary directory.

mod common;
#[path = "v5/mod.rs"]
mod v5;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Random kill points per QoS level (bounded: each run streams for at most a second).
const RUNS: u64 = 4;
/// Messages a publisher sends at most in one run.
const STREAM_MAX: u32 = 2_000;
/// `SHARDMQ_CRASH_FULL=1`: the full counts of RELIABILITY.md D1/D2 (20 runs, up to
/// 10,000 messages each, killed within 50..3,050 ms); a few minutes per QoS level.
const FULL_RUNS: u64 = 20;
const FULL_STREAM_MAX: u32 = 10_000;
const FULL_KILL_SPREAD_MS: u64 = 3_000;

fn full_counts() -> bool {
    std::env::var_os("SHARDMQ_CRASH_FULL").is_some()
}

/// (runs, messages at most per run, kill-point spread in ms).
fn crash_counts() -> (u64, u32, u64) {
    if full_counts() {
        (FULL_RUNS, FULL_STREAM_MAX, FULL_KILL_SPREAD_MS)
    } else {
        (RUNS, STREAM_MAX, 300)
    }
}

/// A fresh store directory, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!(
            "shardmq-persist-{name}-{}-{nanos}",
            std::process::id()
        ));
        DataDir(p)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker on `dir` whose session queues hold every message a run streams (beyond the
/// queue limit messages are dropped by policy, acknowledged or not).
fn start(dir: &DataDir, shards: usize) -> Broker {
    Broker::with_shards(
        shards,
        &["--data-dir", dir.arg(), "--max-queued-messages", "100000"],
    )
}

fn kill9(b: &mut Broker) {
    signal(b.pid(), libc::SIGKILL);
    assert!(b.wait(WAIT).is_some(), "broker did not die on SIGKILL");
}

/// A persistent 3.1.1 session subscribed to `filter` at `q`, then gone offline.
fn offline_subscriber(b: &Broker, id: &str, filter: &str, q: u8) {
    let (mut c, _) = RawClient::connect_v311(b.addr(), id, false, 60, None);
    c.subscribe(filter, q);
    c.drop_tcp();
}

/// Reconnect `id` and collect every message until `quiet` passes with nothing new.
fn drain(b: &Broker, id: &str, quiet: Duration) -> Vec<Msg> {
    let (mut c, present) = RawClient::connect_v311(b.addr(), id, false, 60, None);
    assert!(present, "[{id}] the session survived the restart");
    let mut got = Vec::new();
    while let Ok(Got::Publish(m)) = c.try_packet(quiet) {
        c.ack(&m);
        got.push(m);
    }
    got
}

/// Stream QoS `q` publishes to `topic` until the connection breaks; record the acked ones.
fn stream(b: &Broker, topic: &'static str, q: u8, acked: Arc<Mutex<Vec<u32>>>) {
    let addr = b.addr();
    std::thread::spawn(move || {
        let mut c = RawClient::clean(addr, &format!("pub-{topic}"));
        for n in 0..crash_counts().1 {
            let p = c.next_pid();
            c.send_publish(topic, n.to_string().as_bytes(), q, false, false, Some(p));
            let ok = match c.try_packet(WAIT) {
                Ok(Got::PubAck(x)) if q == 1 => x == p,
                Ok(Got::PubRec(x)) if q == 2 => x == p,
                _ => false,
            };
            if !ok {
                return;
            }
            if let Ok(mut a) = acked.lock() {
                a.push(n);
            }
        }
    });
}

/// A pseudo-random delay in 50..350 ms (full counts: 50..3,050 ms) for run `run`.
fn kill_delay(run: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let x = (nanos ^ run.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0x2545_F491_4F6C_DD1D);
    Duration::from_millis(50 + (x >> 33) % crash_counts().2)
}

fn acked_messages_survive_kill(q: u8) {
    let (runs, _, _) = crash_counts();
    let mut acked_total = 0;
    for run in 0..runs {
        let dir = DataDir::new(&format!("kill-q{q}-{run}"));
        let shards = 1 + (run as usize % 2);
        let mut b = start(&dir, shards);
        offline_subscriber(&b, "sub", "s/#", q);
        let acked = Arc::new(Mutex::new(Vec::new()));
        stream(&b, "s/x", q, acked.clone());
        std::thread::sleep(kill_delay(run));
        kill9(&mut b);
        let acked: BTreeSet<u32> = acked
            .lock()
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        let b = start(&dir, 3 - shards);
        let got = drain(&b, "sub", Duration::from_millis(1500));
        let texts: Vec<u32> = got.iter().filter_map(|m| m.text().parse().ok()).collect();
        let received: BTreeSet<u32> = texts.iter().copied().collect();
        let lost: Vec<_> = acked.difference(&received).collect();
        assert!(
            lost.is_empty(),
            "run {run} (QoS {q}): {} acked, {} received, lost {:?}",
            acked.len(),
            received.len(),
            lost.iter().take(10).collect::<Vec<_>>()
        );
        if q == 2 {
            assert_eq!(texts.len(), received.len(), "QoS 2: no duplicates");
        }
        acked_total += acked.len();
    }
    eprintln!("kill -9, QoS {q}: {runs} runs, {acked_total} acknowledged messages, none lost");
}

#[test]
fn acknowledged_qos1_messages_survive_kill_9() {
    acked_messages_survive_kill(1);
}

#[test]
fn acknowledged_qos2_messages_survive_kill_9() {
    acked_messages_survive_kill(2);
}

#[test]
fn sessions_subscriptions_and_retained_survive_a_restart_with_other_shards() {
    let dir = DataDir::new("state");
    let mut b = start(&dir, 2);
    offline_subscriber(&b, "keeper", "k/+", 1);
    let mut p = RawClient::clean(b.addr(), "retainer");
    p.publish("r/one", b"kept", 1, true);
    p.publish("r/two", b"gone", 1, true);
    p.publish("r/two", b"", 1, true);
    // Inbound QoS 2 awaiting PUBREL: the PUBREC is out, the id must survive.
    let (mut q2, _) = RawClient::connect_v311(b.addr(), "q2pub", false, 60, None);
    q2.send_publish("k/q2", b"once", 2, false, false, Some(7));
    assert!(matches!(q2.try_packet(WAIT), Ok(Got::PubRec(7))));
    kill9(&mut b);
    let b = start(&dir, 3);
    let got = drain(&b, "keeper", Duration::from_millis(800));
    assert_eq!(got.iter().map(Msg::text).collect::<Vec<_>>(), vec!["once"]);
    let mut r = RawClient::clean(b.addr(), "reader");
    r.subscribe("r/#", 0);
    let m = r.expect_publish(WAIT);
    assert_eq!(
        (m.topic.as_str(), m.text().as_str(), m.retain),
        ("r/one", "kept", true)
    );
    r.expect_nothing(QUIET);
    // A resend of the QoS 2 message after the restart is acknowledged, not routed again.
    let (mut q2, present) = RawClient::connect_v311(b.addr(), "q2pub", false, 60, None);
    assert!(present);
    q2.send_publish("k/q2", b"once", 2, false, true, Some(7));
    assert!(matches!(q2.try_packet(WAIT), Ok(Got::PubRec(7))));
    let (mut k, present) = RawClient::connect_v311(b.addr(), "keeper", false, 60, None);
    assert!(present);
    k.expect_nothing(QUIET);
}

/// `$SYS` figures are retained messages, but not stored: after a restart a subscriber
/// sees this run's figures only, never the last run's.
#[test]
fn sys_figures_are_not_stored() {
    let dir = DataDir::new("sys");
    std::fs::create_dir_all(&dir.0).expect("store dir");
    let conf = |name: &str, interval: u32| {
        let p = dir.0.join(name);
        std::fs::write(&p, format!("sys_interval {interval}\n")).expect("config");
        p.to_str().expect("utf-8 temp path").to_string()
    };
    let (on, off) = (conf("on.conf", 1), conf("off.conf", 0));
    let mut b = Broker::with_shards(2, &["-c", &on, "--data-dir", dir.arg()]);
    let mut s = RawClient::clean(b.addr(), "sys-reader");
    s.subscribe("$SYS/broker/uptime", 0);
    let m = s.expect_publish(Duration::from_secs(10));
    assert_eq!(m.topic, "$SYS/broker/uptime");
    // A retained message that is stored, to show the store was written and read.
    let mut p = RawClient::clean(b.addr(), "retainer");
    p.publish("r/kept", b"kept", 1, true);
    kill9(&mut b);
    let b = Broker::with_shards(2, &["-c", &off, "--data-dir", dir.arg()]);
    let mut r = RawClient::clean(b.addr(), "reader");
    r.subscribe("r/#", 0);
    assert_eq!(r.expect_publish(WAIT).text(), "kept");
    r.subscribe("$SYS/#", 0);
    r.expect_nothing(QUIET);
}

#[test]
fn a_second_broker_on_the_same_store_is_refused() {
    let dir = DataDir::new("lock");
    let _b = start(&dir, 1);
    let out = std::process::Command::new(Broker::bin())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--data-dir",
            dir.arg(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run a second broker");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("held by another running broker"), "{err}");
}

/// Truncate the newest segment of `shard_dir` by `bytes`.
fn tear(shard_dir: &Path, bytes: u64) -> bool {
    let mut segs: Vec<_> = std::fs::read_dir(shard_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    segs.retain(|p| p.extension().is_some_and(|e| e == "wal"));
    segs.sort();
    let Some(last) = segs.last() else {
        return false;
    };
    let len = std::fs::metadata(last).map_or(0, |m| m.len());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("segment");
    f.set_len(len.saturating_sub(bytes)).expect("truncate");
    true
}

#[test]
fn a_torn_tail_keeps_the_valid_prefix() {
    let dir = DataDir::new("torn");
    let mut b = start(&dir, 1);
    offline_subscriber(&b, "sub", "t", 1);
    let mut p = RawClient::clean(b.addr(), "p");
    for i in 0..20 {
        p.publish("t", format!("{i}").as_bytes(), 1, false);
    }
    kill9(&mut b);
    assert!(tear(&dir.0.join("shard-0"), 5), "a segment to tear");
    let b = start(&dir, 1);
    let got = drain(&b, "sub", Duration::from_millis(800));
    let texts: Vec<String> = got.iter().map(Msg::text).collect();
    assert!(texts.len() >= 18 && texts.len() < 20, "a prefix: {texts:?}");
    let want: Vec<String> = (0..texts.len()).map(|i| i.to_string()).collect();
    assert_eq!(texts, want, "the valid prefix, in order");
}

#[test]
fn disk_use_stays_bounded_under_churn() {
    let dir = DataDir::new("churn");
    let b = Broker::with_shards(1, &["--data-dir", dir.arg(), "-c", &churn_conf(&dir)]);
    offline_subscriber(&b, "sub", "c", 1);
    let (mut s, _) = RawClient::connect_v311(b.addr(), "sub", false, 60, None);
    let mut p = RawClient::clean(b.addr(), "p");
    let payload = vec![b'x'; 4096];
    // Stream until 48 MiB went through the log (or 20 s): checkpoints every second must
    // keep the store far below what was written.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut max, mut written) = (0, 0u64);
    while Instant::now() < deadline && written < 48 << 20 {
        for _ in 0..50 {
            p.publish("c", &payload, 1, false);
            let m = s.expect_publish(WAIT);
            s.ack(&m);
            written += payload.len() as u64;
        }
        max = max.max(dir_bytes(&dir.0));
    }
    assert!(
        max < written / 2,
        "store grew to {max} bytes for {written} bytes written"
    );
}

fn churn_conf(dir: &DataDir) -> String {
    // Inside the store directory, so that it goes with it.
    std::fs::create_dir_all(&dir.0).expect("store dir");
    let p = dir.0.join("churn.conf");
    std::fs::write(&p, "autosave_interval 1\n").expect("conf");
    p.to_string_lossy().into_owned()
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        n += if path.is_dir() {
            dir_bytes(&path)
        } else {
            e.metadata().map_or(0, |m| m.len())
        };
    }
    n
}

#[test]
fn an_unacknowledged_qos2_delivery_is_resent_under_its_packet_id_after_kill_9() {
    let dir = DataDir::new("q2out");
    let mut b = start(&dir, 2);
    let (mut sub, _) = RawClient::connect_v311(b.addr(), "q2sub", false, 60, None);
    sub.subscribe("o", 2);
    let mut p = RawClient::clean(b.addr(), "q2src");
    p.publish("o", b"x", 2, false);
    let first = sub.expect_publish(WAIT);
    assert_eq!((first.qos, first.dup), (2, false));
    kill9(&mut b);
    let b = start(&dir, 1);
    let (mut sub, present) = RawClient::connect_v311(b.addr(), "q2sub", false, 60, None);
    assert!(present);
    let again = sub.expect_publish(WAIT);
    assert_eq!(
        (again.text().as_str(), again.pid, again.dup),
        ("x", first.pid, true),
        "the same delivery, same packet id, DUP set"
    );
    sub.ack(&again);
    sub.expect_nothing(QUIET);
}

#[test]
fn message_expiry_counts_wall_clock_time_across_a_restart() {
    let dir = DataDir::new("expiry");
    let mut b = start(&dir, 1);
    let sub = v5::Conn5::new("exp-sub").clean(false).expiry(3600);
    let (mut s, _) = v5::Client5::open(b.addr(), &sub);
    s.subscribe("e/#", 1);
    s.drop_tcp();
    let mut p = v5::Client5::clean(b.addr(), "exp-pub");
    for (topic, secs) in [("e/short", 1), ("e/long", 600)] {
        let props = shardmq::protocol::Properties {
            message_expiry_interval: Some(secs),
            ..Default::default()
        };
        p.publish_props(topic, topic.as_bytes(), 1, false, props);
    }
    kill9(&mut b);
    // The broker is down while the short message's second runs out (wall clock).
    std::thread::sleep(Duration::from_millis(1500));
    let b = start(&dir, 2);
    let (mut s, ack) = v5::Client5::open(b.addr(), &sub);
    assert!(ack.present);
    let m = s.expect_publish_acked(WAIT);
    assert_eq!(m.text(), "e/long", "the expired message is gone");
    let left = m.props.message_expiry_interval.unwrap_or(0);
    assert!(
        (590..=599).contains(&left),
        "expiry counted on: {left} s left"
    );
    s.expect_nothing(QUIET);
}

/// A queued delivery keeps what its subscription gave it: the Subscription Identifier and,
/// under Retain As Published, the RETAIN flag (without it RETAIN is 0 on a live delivery).
#[test]
fn restored_deliveries_keep_subscription_ids_and_retain_as_published() {
    let dir = DataDir::new("sub-ids");
    let mut b = start(&dir, 1);
    let sub = v5::Conn5::new("ids-sub").clean(false).expiry(3600);
    let (mut s, _) = v5::Client5::open(b.addr(), &sub);
    let granted = s.subscribe_opts(&[("r/#", v5::opts(1, false, true, 0))], Some(42));
    assert_eq!(granted, vec![1]);
    let granted = s.subscribe_opts(&[("n/#", v5::opts(1, false, false, 0))], Some(7));
    assert_eq!(granted, vec![1]);
    s.drop_tcp();
    let mut p = v5::Client5::clean(b.addr(), "ids-pub");
    for (topic, retain) in [("r/plain", false), ("r/kept", true), ("n/kept", true)] {
        assert_eq!(
            p.publish(topic, topic.as_bytes(), 1, retain),
            0,
            "{topic} PUBACK"
        );
    }
    kill9(&mut b);
    let b = start(&dir, 2);
    let (mut s, ack) = v5::Client5::open(b.addr(), &sub);
    assert!(ack.present, "the session survived the restart");
    let mut got: Vec<(String, bool, Vec<u32>)> = s
        .collect(3)
        .into_iter()
        .map(|m| (m.topic, m.retain, m.props.subscription_identifiers))
        .collect();
    got.sort();
    let want = [
        ("n/kept", false, vec![7]),
        ("r/kept", true, vec![42]),
        ("r/plain", false, vec![42]),
    ];
    let want: Vec<(String, bool, Vec<u32>)> = want
        .into_iter()
        .map(|(t, r, i)| (t.to_owned(), r, i))
        .collect();
    assert_eq!(got, want, "(topic, RETAIN, subscription ids) after kill -9");
    s.expect_nothing(QUIET);
}

/// A disk that fills up, black box: the broker's store writes through a test seam that
/// fails with ENOSPC while a switch file exists (`SHARDMQ_STORE_FAULT_FILE`). While it
/// does, nothing is acknowledged as a success: a 5.0 publisher gets 0x97 Quota exceeded,
/// a publish caught by the failing write and a 3.1.1 publish wait for their acks; once
/// space returns they are acknowledged and, after `kill -9` and a restart, delivered. The
/// refused one never is.
#[test]
fn a_full_disk_refuses_publishes_and_loses_nothing_acknowledged() {
    let dir = DataDir::new("full");
    let switch = dir.0.with_extension("full");
    let switch_s = switch.to_str().expect("utf-8 temp path").to_string();
    let args = ["--shards", "1", "--data-dir", dir.arg()];
    let env = [("SHARDMQ_STORE_FAULT_FILE", switch_s.as_str())];
    let mut b = Broker::start_env(&args, &env);
    let sub = v5::Conn5::new("full-sub").clean(false).expiry(3600);
    let (mut s, _) = v5::Client5::open(b.addr(), &sub);
    s.subscribe("full/#", 1);
    s.drop_tcp();
    let mut p1 = v5::Client5::clean(b.addr(), "full-pub1");
    let mut p2 = v5::Client5::clean(b.addr(), "full-pub2");
    let (mut p3, _) = RawClient::connect_v311(b.addr(), "full-pub3", true, 60, None);
    assert_eq!(
        p1.publish("full/a", b"a", 1, false),
        0,
        "before the disk fills"
    );

    std::fs::write(&switch, b"full").expect("create the fault switch");
    // The write of this publish's record fails: its PUBACK waits.
    let held = p1.next_pid();
    p1.send_publish("full/b", b"b", 1, false, Some(held), Default::default());
    assert!(
        p1.recv(QUIET).is_err(),
        "a publish whose record could not be written was acknowledged"
    );
    // The store is known to be full now: a new 5.0 publish is refused at once.
    assert_eq!(
        p2.publish("full/c", b"c", 1, false),
        0x97,
        "0x97 Quota exceeded"
    );
    // 3.1.1 has no refusal: the ack waits (the client's window pauses it).
    let v3_pid = p3.next_pid();
    p3.send_publish("full/d", b"d", 1, false, false, Some(v3_pid));
    assert!(
        p3.try_packet(QUIET).is_err(),
        "a 3.1.1 publish was acknowledged while the store could not write"
    );

    std::fs::remove_file(&switch).expect("remove the fault switch");
    let ack = p1.expect_where(
        WAIT,
        "the held PUBACK",
        |g| matches!(g, v5::P5::PubAck { pid, .. } if *pid == held),
    );
    assert!(
        matches!(ack, v5::P5::PubAck { reason: 0, .. }),
        "once space returned the held publish was acknowledged: {ack:?}"
    );
    let want = Got::PubAck(v3_pid);
    p3.expect_where(WAIT, "the held 3.1.1 PUBACK", |g| *g == want);
    // Writing again: new publishes are accepted.
    assert_eq!(p2.publish("full/e", b"e", 1, false), 0, "accepted again");

    kill9(&mut b);
    let b = start(&dir, 1);
    let (mut s, ack) = v5::Client5::open(b.addr(), &sub);
    assert!(ack.present, "the session survived");
    let mut got = BTreeSet::new();
    while let Ok(v5::P5::Publish(m)) = s.recv(QUIET) {
        s.ack(&m);
        got.insert(m.topic.clone());
    }
    let want: BTreeSet<String> = ["full/a", "full/b", "full/d", "full/e"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        got, want,
        "every acknowledged message, and not the refused one"
    );
    let _ = std::fs::remove_file(&switch);
}
