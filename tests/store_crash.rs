//! Crash test of the store: a child process appends records and prints every LSN it sees
//! become durable; the parent kills it with SIGKILL at a random moment, recovers, and
//! checks that every record reported durable is there, and that what is there is a prefix
//! of what was appended (nothing from after a hole, nothing invented).
//!
//! The child is this test binary run again with `--ignored --exact child_appender` and the
//! data directory in an environment variable, so no extra binary is needed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shardmq::store::{layout::shard_dir, recover_all, Record, SessionInfo, Wal, WalOptions};

const DIR_ENV: &str = "SHARDMQ_STORE_CRASH_DIR";
/// Kills per test run: each is a full child start, append, kill and recovery.
const RUNS: u64 = 6;
/// The child gives up on its own after this long, in case the parent never kills it.
const CHILD_LIFETIME_MS: u64 = 20_000;
/// How long the parent waits for the child's first durable report.
const FIRST_REPORT_TIMEOUT_MS: u64 = 20_000;
/// Records per turn in the child (a turn = one write, one group commit).
const RECORDS_PER_TURN: u64 = 16;

fn record(lsn: u64) -> Record<'static> {
    Record::SessionCreated(SessionInfo {
        client_id: format!("c{lsn}").into(),
        protocol: 5,
        expiry_interval_s: u32::MAX,
        will: None,
    })
}

/// The child: append turns of records until killed, printing `durable N` whenever the
/// durable LSN moves. Ignored in normal runs; only the parent starts it.
#[test]
#[ignore = "run as a child process by crash_at_random_moments_loses_nothing_durable"]
fn child_appender() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let mut wal = Wal::open(
        &shard_dir(Path::new(&dir), 0),
        WalOptions::default(),
        move || {
            let _ = tx.send(());
        },
    )
    .expect("open log");
    let start = Instant::now();
    let mut reported = 0;
    while start.elapsed() < Duration::from_millis(CHILD_LIFETIME_MS) {
        for _ in 0..RECORDS_PER_TURN {
            let lsn = wal.last_lsn() + 1;
            assert_eq!(wal.append(&record(lsn)), lsn);
        }
        wal.end_turn().expect("write");
        let _ = rx.recv_timeout(Duration::from_millis(1));
        let durable = wal.durable_lsn();
        if durable > reported {
            println!("durable {durable}");
            reported = durable;
        }
    }
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pseudo-random delay in 20..320 ms, different on every run and every iteration.
fn kill_delay(run: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let x = (nanos ^ run.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0x2545_F491_4F6C_DD1D);
    Duration::from_millis(20 + (x >> 33) % 300)
}

/// One run: start the child, wait for its first report, kill it after a random delay,
/// and return the highest LSN it reported durable.
fn run_child_and_kill(dir: &Path, run: u64) -> u64 {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "child_appender", "--nocapture"])
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line
                .strip_prefix("durable ")
                .and_then(|n| n.parse::<u64>().ok())
            {
                let _ = tx.send(n);
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_millis(FIRST_REPORT_TIMEOUT_MS));
    let Ok(first) = first else {
        // Do not leave the child running behind a failed test.
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child reported no durable LSN within {FIRST_REPORT_TIMEOUT_MS} ms");
    };
    std::thread::sleep(kill_delay(run));
    // `Child::kill` sends SIGKILL to this child's PID: no destructor or flush runs.
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed, not finished");
    reader.join().expect("reader thread");
    rx.try_iter().fold(first, u64::max)
}

#[test]
fn crash_at_random_moments_loses_nothing_durable() {
    for run in 0..RUNS {
        let dir =
            Dir(std::env::temp_dir()
                .join(format!("shardmq-store-crash-{}-{run}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        let durable = run_child_and_kill(&dir.0, run);
        assert!(durable > 0);
        let r = recover_all(&dir.0).expect("recover");
        let kept = r.state.sessions.len() as u64;
        eprintln!(
            "run {run}: durable {durable}, recovered {kept}, cuts {:?}",
            r.cuts
        );
        assert!(
            kept >= durable,
            "run {run}: {durable} reported durable, {kept} recovered"
        );
        assert_eq!(r.records, kept, "run {run}: one session per record");
        for lsn in 1..=kept {
            assert!(
                r.state.sessions.contains_key(&format!("c{lsn}")),
                "run {run}: record {lsn} missing from a prefix of {kept}"
            );
        }
        // SIGKILL leaves the page cache intact, so at most the turn being written is torn.
        for cut in &r.cuts {
            assert!(cut.bytes_dropped < 64 * 1024, "run {run}: {cut}");
        }
    }
}
