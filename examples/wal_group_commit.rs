//! Measures group commit on this machine: one shard's log, turns of K records written as
//! fast as the loop can go for a few seconds each, `fdatasync` on the sync thread.
//! Prints records/s, fsyncs/s, records per fsync and the end-of-turn → durable latency.
//!
//! `cargo run --release --example wal_group_commit [SECONDS_PER_CASE]` (default 2). It
//! writes under the system temporary directory and removes what it wrote.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shardmq::store::{MessageProps, MsgId, Record, StoredMessage, Wal, WalOptions};

/// (records per turn, turn period in µs; 0 = back to back): saturating cases, then a
/// paced one at 100k records/s, about one busy shard's QoS 1 publish rate.
const CASES: [(u64, u64); 5] = [(1, 0), (8, 0), (64, 0), (512, 0), (10, 100)];
/// Payload of each stored message, bytes.
const PAYLOAD_BYTES: usize = 100;
/// Bound on pending (lsn, time) samples kept for the latency figure.
const PENDING_MAX: usize = 1 << 16;

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    fdatasync_alone();
    println!(
        "records/turn  period  records/s  fsyncs/s  records/fsync  durable-latency p50/p99 (ms)"
    );
    for (k, period_us) in CASES {
        run(
            k,
            Duration::from_micros(period_us),
            Duration::from_secs(secs),
        );
    }
}

/// Samples of the bare `write` + `fdatasync` baseline.
const BASELINE_SYNCS: u32 = 200;

/// The floor: 4 KiB `write` + `fdatasync`, back to back, on the same file system.
fn fdatasync_alone() {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("shardmq-gc-sync-{}", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else {
        return eprintln!("cannot create {}", path.display());
    };
    let block = [0u8; 4096];
    let mut times = Vec::new();
    for _ in 0..BASELINE_SYNCS {
        let t = Instant::now();
        if f.write_all(&block).and_then(|()| f.sync_data()).is_err() {
            return eprintln!("write/fdatasync failed");
        }
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = times.len();
    println!(
        "write 4 KiB + fdatasync alone: p50 {:.3} ms, p99 {:.3} ms over {n}",
        ms(times[n / 2]),
        ms(times[n * 99 / 100])
    );
    let _ = std::fs::remove_file(&path);
}

fn run(per_turn: u64, period: Duration, length: Duration) {
    let dir = std::env::temp_dir().join(format!("shardmq-gc-{}-{per_turn}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let syncs = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let counter = Arc::clone(&syncs);
    let opened = Wal::open(&dir.join("shard-0"), WalOptions::default(), move || {
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = tx.send(());
    });
    let mut wal = match opened {
        Ok(w) => w,
        Err(e) => return eprintln!("cannot open a log: {e}"),
    };
    let rec = Record::MessageStored {
        id: MsgId(1),
        msg: StoredMessage {
            topic: Cow::Borrowed("bench/topic"),
            payload: Cow::Owned(vec![7; PAYLOAD_BYTES]),
            qos: 1,
            retain: false,
            expires_at_unix_ms: None,
            props: MessageProps::default(),
            share_id: 0,
        },
    };
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut next_turn = start;
    while start.elapsed() < length {
        // Paced: wait for the next turn's start, noting wake-ups meanwhile.
        while !period.is_zero() && Instant::now() < next_turn {
            let _ = rx.recv_timeout(next_turn.saturating_duration_since(Instant::now()));
        }
        next_turn += period;
        for _ in 0..per_turn {
            wal.append(&rec);
        }
        if let Err(e) = wal.end_turn() {
            return eprintln!("write failed: {e}");
        }
        if pending.len() < PENDING_MAX {
            pending.push_back((wal.last_lsn(), Instant::now()));
        }
        // A busy shard goes straight on to its next turn; it only notes wake-ups.
        while rx.try_recv().is_ok() {}
        let durable = wal.durable_lsn();
        while pending.front().is_some_and(|(lsn, _)| *lsn <= durable) {
            if let Some((_, t)) = pending.pop_front() {
                latencies.push(t.elapsed());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let records = wal.durable_lsn();
    let fsyncs = syncs.load(Ordering::Relaxed).max(1);
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get(latencies.len() * p / 100)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{per_turn:>12}  {:>4}µs  {:>9.0}  {:>8.0}  {:>13.1}  {:.2} / {:.2}",
        period.as_micros(),
        records as f64 / elapsed,
        fsyncs as f64 / elapsed,
        records as f64 / fsyncs as f64,
        pct(50),
        pct(99)
    );
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}
