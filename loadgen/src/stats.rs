//! Counters shared between load threads, per-publisher sequence accounting and broker
//! process sampling.
//!
//! Owns: the message header carried in every payload (publisher id, sequence number, send
//! timestamp), the loss/duplicate rule, the cross-thread counters that close the
//! publishers' windows, and reading `/proc/PID/{stat,status}` of the broker. Must not
//! touch: sockets, MQTT.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;

/// Bytes of the header at the start of every payload: id (4), sequence (8), time (8).
pub const HEADER_LEN: usize = 20;

/// Phases of a run, in order.
pub mod phase {
    /// Connecting and subscribing.
    pub const SETUP: u8 = 0;
    /// Publishing (or holding connections).
    pub const RUN: u8 = 1;
    /// Publishers stopped; waiting for deliveries in flight.
    pub const DRAIN: u8 = 2;
    /// Disconnect and exit.
    pub const STOP: u8 = 3;
}

/// The header of one test message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader {
    /// Publisher index.
    pub publisher: u32,
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
    /// Send time in nanoseconds since `Shared::epoch`.
    pub sent_ns: u64,
}

impl MsgHeader {
    /// Writes the header into the first `HEADER_LEN` bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&self.publisher.to_le_bytes());
        buf[4..12].copy_from_slice(&self.seq.to_le_bytes());
        buf[12..20].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads a header from a received payload; `None` if it is too short.
    pub fn read(buf: &[u8]) -> Option<MsgHeader> {
        let b = buf.get(..HEADER_LEN)?;
        Some(MsgHeader {
            publisher: u32::from_le_bytes(b[0..4].try_into().ok()?),
            seq: u64::from_le_bytes(b[4..12].try_into().ok()?),
            sent_ns: u64::from_le_bytes(b[12..20].try_into().ok()?),
        })
    }
}

/// Holes remembered per (publisher, subscriber) pair; past it a hole's late arrival counts
/// as a duplicate and the hole as lost.
const HOLES_MAX: usize = 65_536;

/// Sequence accounting for one (publisher, subscriber) pair. MQTT keeps the order of one
/// publisher's messages on one topic, so a jump forward leaves a hole; a message that
/// fills a remembered hole later arrived out of order (`late`, counted as delivered), and
/// anything else at or below the last sequence seen is a duplicate.
#[derive(Debug, Default, Clone)]
pub struct SeqTrack {
    /// Next sequence number expected.
    pub next: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received at or below an already seen sequence number.
    pub dups: u64,
    /// Messages that skipped ahead of `next` (a gap was seen).
    pub gaps: u64,
    /// Messages that filled a hole: delivered, but out of order.
    pub late: u64,
    /// Sequence numbers skipped and not yet seen (at most `HOLES_MAX`).
    holes: std::collections::BTreeSet<u64>,
}

impl SeqTrack {
    /// Accounts one received sequence number; true if it is new.
    pub fn record(&mut self, seq: u64) -> bool {
        if seq < self.next {
            if self.holes.remove(&seq) {
                self.late += 1;
                self.unique += 1;
                return true;
            }
            self.dups += 1;
            return false;
        }
        if seq > self.next {
            self.gaps += 1;
            let room = HOLES_MAX.saturating_sub(self.holes.len()) as u64;
            self.holes
                .extend(self.next..seq.min(self.next.saturating_add(room)));
        }
        self.next = seq + 1;
        self.unique += 1;
        true
    }
}

/// State shared by the monitor and every load thread.
pub struct Shared {
    /// Origin of every timestamp in payloads.
    pub epoch: Instant,
    /// Current phase (see `phase`).
    pub phase: AtomicU8,
    /// Nanoseconds since `epoch` at which the run phase began.
    pub run_start_ns: AtomicU64,
    /// Threads whose connections are all set up.
    pub ready_threads: AtomicUsize,
    /// Set when a thread gives up (setup failure).
    pub failed: AtomicBool,
    /// Connections that failed (refused, reset, malformed input).
    pub failures: AtomicUsize,
    /// Connections that received a successful CONNACK.
    pub connected: AtomicUsize,
    /// Messages published during the run.
    pub published: AtomicU64,
    /// Distinct messages delivered to subscribers.
    pub delivered: AtomicU64,
    /// Per publisher: distinct deliveries counted by all subscribers.
    pub pub_delivered: Vec<AtomicU64>,
}

impl Shared {
    /// Shared state for `publishers` publishers.
    pub fn new(publishers: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            phase: AtomicU8::new(phase::SETUP),
            run_start_ns: AtomicU64::new(0),
            ready_threads: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            failures: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            pub_delivered: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Nanoseconds since `epoch`.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The current phase.
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }
}

/// One reading of the broker process.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime in seconds.
    pub cpu_secs: f64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM) in KiB.
    pub hwm_kib: u64,
}

/// The sums of `sample_proc` over `pids`; `None` if there are none or one is gone.
pub fn sample_procs(pids: &[u32]) -> Option<ProcSample> {
    let first = *pids.first()?;
    let mut sum = sample_proc(first)?;
    for &pid in &pids[1..] {
        let s = sample_proc(pid)?;
        sum.cpu_secs += s.cpu_secs;
        sum.rss_kib += s.rss_kib;
        sum.hwm_kib += s.hwm_kib;
    }
    Some(sum)
}

/// Reads CPU time and memory of process `pid`; `None` if it is gone or unreadable.
pub fn sample_proc(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_secs: (utime + stime) as f64 / tick,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = MsgHeader {
            publisher: 7,
            seq: 123_456_789,
            sent_ns: 42,
        };
        let mut buf = [0u8; 64];
        h.write(&mut buf);
        assert_eq!(MsgHeader::read(&buf), Some(h));
        assert_eq!(MsgHeader::read(&buf[..19]), None);
    }

    #[test]
    fn seq_track_counts_loss_and_dups() {
        let mut t = SeqTrack::default();
        for s in [0, 1, 2, 2, 5, 6, 1, 7] {
            t.record(s);
        }
        assert_eq!(t.unique, 6); // 0 1 2 5 6 7
        assert_eq!(t.dups, 2); // second 2, late 1
        assert_eq!(t.gaps, 1); // 3..=4 skipped
        assert_eq!(t.next, 8);
        assert_eq!(t.late, 0);
        // 3 and 4 fill their holes late: delivered out of order, not duplicates; a
        // second 4 is one.
        for s in [4, 3, 4] {
            t.record(s);
        }
        assert_eq!((t.unique, t.late, t.dups), (8, 2, 3));
    }

    #[test]
    fn samples_own_process() {
        let s = sample_proc(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0);
    }
}
