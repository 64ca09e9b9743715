//! The owed messages of a session whose node died (`docs/cluster.md`, "A session whose
//! node died"; `docs/decisions/0013-cluster.md`, choice 10).
//!
//! Owns: two tasks. `scan` copies, for a session taken over from a dead node, the messages
//! waiting in that node's queue whose topic matches the session's filters, and reports
//! them to the node (`FromLink::Owed`). `verify` runs once at start, before this node's
//! queue consumer: it asks the registry who owns each session restored from the store and
//! reports the ones owned elsewhere (`FromLink::Disowned`); `owned_elsewhere` is that
//! lookup, which the check after a cut-off shares (`recheck`). Invariants: a scan never
//! acknowledges or deletes anything in the dead node's queue (one copy there serves every
//! session of that node whose filters match; the dead node settles it when it returns); a
//! `Disowned` is queued to the node before any message of this node's queue, so a
//! disowned session never receives one here; every NATS wait is bounded and every failure
//! counted; a scan's failed read is made again at the same sequence (within the scan's
//! time bound), so a message is copied at most once and in the queue's order. Must not touch: the link loop's state (reports only through `Out`).
#![forbid(unsafe_code)]

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use tokio::time::{timeout_at, Instant};

use super::super::envelope::{self, Envelope};
use super::super::kv;
use super::super::{FromLink, LinkStats};
use super::{Out, FLUSH_WAIT_MS};

/// Messages of a dead node's queue one scan looks at, at most.
pub(super) const RECLAIM_SCAN_MESSAGES_MAX: u64 = 100_000;
/// Longest one scan runs; what it has not reached by then stays in the dead node's queue.
pub(super) const RECLAIM_SCAN_WAIT_MS: u64 = 30_000;
/// Pause after a failed read of a dead node's queue before the same read is made again;
/// it doubles with each failure in a row, up to `RECLAIM_RETRY_WAIT_MS_MAX`. A read fails
/// mostly while the stream elects a leader (a NATS server just died), which takes seconds,
/// so the retries cover that within the scan's own time bound.
const RECLAIM_RETRY_WAIT_MS_MIN: u64 = 100;
/// Longest pause between two tries of a failed read.
const RECLAIM_RETRY_WAIT_MS_MAX: u64 = 2_000;
/// Messages per `FromLink::Owed` batch.
const OWED_BATCH_MAX: usize = 256;
/// Longest the start-up ownership check runs in all (then the queue consumer starts and
/// the sessions not checked are kept).
pub(super) const VERIFY_WAIT_MS: u64 = 10_000;

/// One message of a dead node's queue, as a scan reads it.
struct QueueMessage {
    /// Its sequence in the stream.
    seq: u64,
    /// The envelope, encoded.
    payload: Bytes,
    /// When the stream stored it (Unix nanoseconds).
    stored_ns: i128,
}

/// What one read of a dead node's queue gave.
enum Read {
    /// The first message at or after the sequence asked.
    Message(QueueMessage),
    /// No message at or after it: the end of the queue.
    End,
    /// The read failed (its error, for the log); the same read may be made again.
    Failed(String),
}

/// The reads one scan makes: the first message of the dead node's queue at or after a
/// sequence. The stream in the link (`StreamReads`); a scripted queue in the tests, which
/// is how a failed read is tested without a NATS server to kill.
trait QueueReads {
    async fn read(&mut self, seq: u64) -> Read;
}

/// Reads of `subject` in `stream`, one request each (the link's JetStream context bounds
/// a request by its timeout).
struct StreamReads {
    stream: jetstream::stream::Stream<()>,
    subject: String,
}

impl QueueReads for StreamReads {
    async fn read(&mut self, seq: u64) -> Read {
        let get = self
            .stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(self.subject.clone())
            .send();
        match get.await {
            Ok(m) => Read::Message(QueueMessage {
                seq: m.sequence,
                payload: m.payload,
                stored_ns: m.time.unix_timestamp_nanos(),
            }),
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Read::End,
            Err(e) => Read::Failed(e.to_string()),
        }
    }
}

/// One scan: whose messages it copies, from which queue, where they go, until when.
struct Scan<'a> {
    subject: &'a str,
    client_id: &'a str,
    filters: &'a [String],
    out: &'a Out,
    deadline: Instant,
}

/// How a scan ended: what it copied, the sequence it would have read next, the failed
/// reads it retried, and why it stopped (logged: a scan cut short copies nothing after
/// the point it stopped, and the log is what tells that apart from a queue that held
/// nothing for the session).
#[derive(Debug)]
struct ScanEnd {
    copied: usize,
    next_seq: u64,
    retries: u32,
    ended: String,
}

/// Copy the messages of `subject` (a dead node's queue) in `stream` whose topic matches one
/// of `filters` to session `client_id`, in the queue's order, in batches; the last batch
/// (possibly empty) has `last`.
pub(super) async fn scan(
    js: jetstream::Context,
    stream: String,
    subject: String,
    client_id: String,
    filters: Vec<String>,
    out: Out,
) {
    let scan = Scan {
        subject: &subject,
        client_id: &client_id,
        filters: &filters,
        out: &out,
        deadline: Instant::now() + Duration::from_millis(RECLAIM_SCAN_WAIT_MS),
    };
    // Opening the stream without its info makes no request; only a bad name fails.
    let end = match js.get_stream_no_info(&stream).await {
        Ok(stream) => {
            let subject = subject.clone();
            copy_owed(&scan, &mut StreamReads { stream, subject }).await
        }
        Err(e) => {
            LinkStats::add(&out.stats.nats_errors);
            scan.push(Vec::new(), true);
            ScanEnd {
                copied: 0,
                next_seq: 1,
                retries: 0,
                ended: format!("the stream not opened: {e}"),
            }
        }
    };
    eprintln!("{}", scan.ended_line(&end));
}

/// Copy what `reads` gives of the queue, from its first sequence, to the session (every
/// batch, the last one included), within the scan's message and time bounds.
async fn copy_owed<R: QueueReads>(scan: &Scan<'_>, reads: &mut R) -> ScanEnd {
    let mut end = ScanEnd {
        copied: 0,
        next_seq: 1,
        retries: 0,
        ended: String::from("end of the queue"),
    };
    let mut batch = Vec::new();
    let mut looked_at = 0u64;
    while let Some(m) = scan.read_retrying(reads, &mut end).await {
        end.next_seq = m.seq.saturating_add(1);
        looked_at += 1;
        if let Some(e) = owed(&m.payload, scan.filters, age_ms(m.stored_ns)) {
            LinkStats::add(&scan.out.stats.reclaimed);
            end.copied += 1;
            batch.push(e);
            if batch.len() == OWED_BATCH_MAX {
                scan.push(std::mem::take(&mut batch), false);
            }
        }
        if looked_at == RECLAIM_SCAN_MESSAGES_MAX {
            end.ended = format!("its {RECLAIM_SCAN_MESSAGES_MAX} messages");
            break;
        }
    }
    scan.push(batch, true);
    end
}

impl Scan<'_> {
    /// The first message at or after `end.next_seq`. A failed read is made again, at the
    /// same sequence, after a pause that doubles with each failure in a row (each logged
    /// and counted). `None` at the end of the queue, or at the scan's time bound (a read
    /// not answered by then, or a pause that would pass it), `end.ended` saying which.
    async fn read_retrying<R: QueueReads>(
        &self,
        reads: &mut R,
        end: &mut ScanEnd,
    ) -> Option<QueueMessage> {
        let seq = end.next_seq;
        let mut pause_ms = RECLAIM_RETRY_WAIT_MS_MIN;
        let mut failed_in_row = 0u32;
        loop {
            let error = match timeout_at(self.deadline, reads.read(seq)).await {
                Ok(Read::Message(m)) => return Some(m),
                Ok(Read::End) => return None,
                Ok(Read::Failed(e)) => e,
                Err(_) => {
                    LinkStats::add(&self.out.stats.nats_errors);
                    end.ended = format!(
                        "its {RECLAIM_SCAN_WAIT_MS} ms at sequence {seq}, a read not answered"
                    );
                    return None;
                }
            };
            LinkStats::add(&self.out.stats.nats_errors);
            failed_in_row += 1;
            let pause = Duration::from_millis(pause_ms);
            if Instant::now() + pause >= self.deadline {
                end.ended = format!(
                    "its {RECLAIM_SCAN_WAIT_MS} ms at sequence {seq}, after {failed_in_row} failed reads in a row, the last: {error}"
                );
                return None;
            }
            end.retries += 1;
            eprintln!(
                "cluster: a read of {} at sequence {seq} for {} failed ({error}); retry {failed_in_row} in {pause_ms} ms",
                self.subject, self.client_id
            );
            tokio::time::sleep(pause).await;
            pause_ms = (pause_ms * 2).min(RECLAIM_RETRY_WAIT_MS_MAX);
        }
    }

    /// Hand a batch to the session; `last` for the final one (possibly empty).
    fn push(&self, envelopes: Vec<Envelope>, last: bool) {
        self.out.push_wake(FromLink::Owed {
            client_id: self.client_id.to_owned(),
            envelopes,
            last,
        });
    }

    /// The line logged at the end of a scan.
    fn ended_line(&self, end: &ScanEnd) -> String {
        format!(
            "cluster: {} messages copied from {} for {} (scan ended by {}, next sequence {}, {} failed reads retried)",
            end.copied, self.subject, self.client_id, end.ended, end.next_seq, end.retries
        )
    }
}

/// The envelope of queue message `payload` if its topic matches one of `filters` and it
/// has not expired while it waited `age_ms` (its remaining expiry shortened by that).
fn owed(payload: &[u8], filters: &[String], age_ms: u64) -> Option<Envelope> {
    let mut e = envelope::decode(payload).ok()?;
    if !filters.iter().any(|f| crate::topic::matches(f, &e.topic)) {
        return None;
    }
    if let Some(left) = e.expiry_secs {
        let age_s = u32::try_from(age_ms / 1000).unwrap_or(u32::MAX);
        e.expiry_secs = Some(left.checked_sub(age_s).filter(|&l| l > 0)?);
    }
    Some(e)
}

/// Milliseconds since `stored_ns` (Unix nanoseconds); 0 for a time in the future.
fn age_ms(stored_ns: i128) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    u64::try_from((now - stored_ns) / 1_000_000).unwrap_or(0)
}

/// Ask the registry who owns each of `client_ids` (sessions restored from this node's
/// store) and report those another node, or nobody, owns now. A session whose owner
/// cannot be read in time is kept (counted): this node goes on serving it as before.
pub(super) async fn verify(
    sessions: &jetstream::kv::Store,
    node: &str,
    client_ids: Vec<String>,
    out: &Out,
) {
    let deadline = Instant::now() + Duration::from_millis(VERIFY_WAIT_MS);
    let report = |client_id, owner| FromLink::Disowned { client_id, owner };
    let seen = Seen {
        report,
        counter: &out.stats.disowned,
    };
    owned_elsewhere(sessions, node, client_ids, out, seen, deadline).await;
}

/// What to report for a session the registry gives to another node (or nobody), and the
/// figure that counts them.
pub(super) struct Seen<'a, F> {
    pub(super) report: F,
    pub(super) counter: &'a std::sync::atomic::AtomicU64,
}

/// Look up each of `client_ids` in the registry until `deadline` and report, through
/// `seen`, those it does not give to `node`. A lookup that fails or is not made in time
/// keeps the session as it is (failures counted).
pub(super) async fn owned_elsewhere<F>(
    sessions: &jetstream::kv::Store,
    node: &str,
    client_ids: Vec<String>,
    out: &Out,
    seen: Seen<'_, F>,
    deadline: Instant,
) where
    F: Fn(String, Option<String>) -> FromLink,
{
    for client_id in client_ids {
        let per_get = Instant::now() + Duration::from_millis(FLUSH_WAIT_MS);
        let owner =
            match timeout_at(deadline.min(per_get), kv::owner_of(sessions, &client_id)).await {
                Ok(Ok(owner)) => owner,
                _ => {
                    LinkStats::add(&out.stats.nats_errors);
                    continue;
                }
            };
        if owner.as_deref() == Some(node) {
            continue;
        }
        LinkStats::add(seen.counter);
        out.push_wake((seen.report)(client_id, owner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn env(topic: &str, expiry_secs: Option<u32>) -> Vec<u8> {
        let e = Envelope {
            origin: "a".into(),
            seq: 1,
            topic: topic.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            expiry_secs,
            props: None,
            payload: b"x".to_vec(),
        };
        envelope::encode(&e).expect("small envelope")
    }

    #[test]
    fn only_matching_live_messages_are_owed() {
        let filters = vec!["p/#".to_string(), "q/+".to_string()];
        assert!(owed(&env("p/x/y", None), &filters, 0).is_some());
        assert!(owed(&env("q/z", None), &filters, 0).is_some());
        assert!(owed(&env("q/z/w", None), &filters, 0).is_none());
        assert!(owed(&env("r", None), &filters, 0).is_none());
        let kept = owed(&env("p", Some(10)), &filters, 4_000).map(|e| e.expiry_secs);
        assert_eq!(kept, Some(Some(6)), "the wait counts against its expiry");
        assert!(owed(&env("p", Some(10)), &filters, 10_000).is_none());
        assert!(owed(b"not an envelope", &filters, 0).is_none());
    }

    /// A dead node's queue as a scan reads it: messages at some sequences, reads that
    /// fail a given number of times at a sequence before they succeed, and every sequence
    /// asked, in order.
    struct Scripted {
        /// (sequence, topic), ascending.
        queue: Vec<(u64, String)>,
        /// (sequence, failures left).
        failing: Vec<(u64, u32)>,
        /// Reads at or past this sequence never answer.
        hang_from: Option<u64>,
        asked: Vec<u64>,
    }

    impl Scripted {
        fn new(queue: Vec<(u64, String)>, failing: Vec<(u64, u32)>) -> Self {
            let hang_from = None;
            let asked = Vec::new();
            Scripted {
                queue,
                failing,
                hang_from,
                asked,
            }
        }
    }

    impl QueueReads for Scripted {
        async fn read(&mut self, seq: u64) -> Read {
            self.asked.push(seq);
            if self.hang_from.is_some_and(|h| seq >= h) {
                return std::future::pending().await;
            }
            if let Some((_, left)) = self.failing.iter_mut().find(|(s, l)| *s == seq && *l > 0) {
                *left -= 1;
                return Read::Failed("timed out".into());
            }
            let Some((s, topic)) = self.queue.iter().find(|(s, _)| *s >= seq) else {
                return Read::End;
            };
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            Read::Message(QueueMessage {
                seq: *s,
                payload: Bytes::from(env(topic, None)),
                stored_ns: now_ns,
            })
        }
    }

    /// Run one scan of `reads` for filter `p/#` and return how it ended, the batches it
    /// handed over (topics, last), and how long it took on the test's clock.
    async fn run(reads: &mut Scripted) -> (ScanEnd, Vec<(Vec<String>, bool)>, Duration) {
        let (tx, rx) = crossbeam_channel::bounded(64);
        let out = Out {
            tx,
            wake: std::sync::Arc::new(|| {}),
            stats: std::sync::Arc::new(LinkStats::default()),
        };
        let filters = vec!["p/#".to_string()];
        let start = Instant::now();
        let scan = Scan {
            subject: "q.dead",
            client_id: "c",
            filters: &filters,
            out: &out,
            deadline: start + Duration::from_millis(RECLAIM_SCAN_WAIT_MS),
        };
        let end = copy_owed(&scan, reads).await;
        let took = start.elapsed();
        let batches = rx
            .try_iter()
            .map(|m| match m {
                FromLink::Owed {
                    client_id,
                    envelopes,
                    last,
                } => {
                    assert_eq!(client_id, "c");
                    (envelopes.into_iter().map(|e| e.topic).collect(), last)
                }
                _ => panic!("a scan reports only Owed"),
            })
            .collect();
        (end, batches, took)
    }

    /// The topics of `batches` in order, checking that only the final batch is `last`.
    fn expect_one_last(batches: &[(Vec<String>, bool)]) -> Vec<String> {
        let lasts: Vec<bool> = batches.iter().map(|b| b.1).collect();
        assert_eq!(lasts.iter().filter(|&&l| l).count(), 1, "{lasts:?}");
        assert_eq!(lasts.last(), Some(&true));
        batches.iter().flat_map(|b| b.0.clone()).collect()
    }

    /// 600 messages at every other sequence, one in three on a topic the session does not
    /// hold. Failed reads before the first message, across a batch boundary and before the
    /// last one are made again at the same sequence: every matching message copied once,
    /// in order. Before the retry the scan ended at the first failure with nothing copied.
    #[tokio::test(start_paused = true)]
    async fn failed_reads_are_retried_at_the_same_sequence() {
        let queue: Vec<(u64, String)> = (0..600u64)
            .map(|i| {
                (
                    2 * i + 1,
                    format!("{}/{i}", if i % 3 == 2 { "r" } else { "p" }),
                )
            })
            .collect();
        let want: Vec<String> = queue
            .iter()
            .filter(|q| q.1.starts_with('p'))
            .map(|q| q.1.clone())
            .collect();
        let failing = vec![(1, 3), (766, 1), (1198, 5)];
        let mut reads = Scripted::new(queue, failing);
        let (end, batches, took) = run(&mut reads).await;
        assert_eq!(
            expect_one_last(&batches),
            want,
            "each message once, in order"
        );
        assert_eq!(batches.len(), want.len().div_ceil(OWED_BATCH_MAX));
        assert_eq!(
            (end.copied, end.retries, end.next_seq),
            (want.len(), 9, 1200)
        );
        assert_eq!(end.ended, "end of the queue");
        for s in [1u64, 766, 1198] {
            let at = reads.asked.iter().filter(|&&a| a == s).count() as u32;
            let failures = if s == 1198 {
                5
            } else if s == 1 {
                3
            } else {
                1
            };
            assert_eq!(
                at,
                failures + 1,
                "sequence {s} asked again after each failure"
            );
        }
        // 100 + 200 + 400 ms, 100 ms, 100 + 200 + 400 + 800 + 1600 ms of pauses.
        assert_eq!(took, Duration::from_millis(3_900));
    }

    /// A read that keeps failing ends the scan at its time bound, with what was copied
    /// before it handed over and a log line that says so.
    #[tokio::test(start_paused = true)]
    async fn a_read_that_keeps_failing_ends_the_scan_at_its_time_bound() {
        let queue = (1..=5u64).map(|s| (s, format!("p/{s}"))).collect();
        let mut reads = Scripted::new(queue, vec![(4, u32::MAX)]);
        let (end, batches, took) = run(&mut reads).await;
        assert_eq!(expect_one_last(&batches), ["p/1", "p/2", "p/3"]);
        assert!(
            took <= Duration::from_millis(RECLAIM_SCAN_WAIT_MS),
            "{took:?}"
        );
        assert!(
            took + Duration::from_millis(RECLAIM_RETRY_WAIT_MS_MAX)
                > Duration::from_millis(RECLAIM_SCAN_WAIT_MS)
        );
        // Pauses of 0.1, 0.2, 0.4, 0.8, 1.6 s, then 2 s each: 18 fit in 30 s.
        assert_eq!(end.retries, 18);
        assert!(
            reads.asked[3..].iter().all(|&s| s == 4),
            "{:?}",
            reads.asked
        );
        let filters = Vec::new();
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let out = Out {
            tx,
            wake: std::sync::Arc::new(|| {}),
            stats: Default::default(),
        };
        let scan = Scan {
            subject: "q.dead",
            client_id: "c",
            filters: &filters,
            out: &out,
            deadline: Instant::now(),
        };
        assert_eq!(
            scan.ended_line(&end),
            "cluster: 3 messages copied from q.dead for c (scan ended by its 30000 ms at sequence 4, \
             after 19 failed reads in a row, the last: timed out, next sequence 4, 18 failed reads retried)"
        );
    }

    /// A read that is never answered ends the scan at its time bound too.
    #[tokio::test(start_paused = true)]
    async fn a_read_never_answered_ends_the_scan_at_its_time_bound() {
        let queue = (1..=5u64).map(|s| (s, format!("p/{s}"))).collect();
        let mut reads = Scripted::new(queue, Vec::new());
        reads.hang_from = Some(3);
        let (end, batches, took) = run(&mut reads).await;
        assert_eq!(expect_one_last(&batches), ["p/1", "p/2"]);
        assert_eq!(took, Duration::from_millis(RECLAIM_SCAN_WAIT_MS));
        assert_eq!(end.ended, "its 30000 ms at sequence 3, a read not answered");
    }
}
