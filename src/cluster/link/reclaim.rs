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
//! counted. Must not touch: the link loop's state (reports only through `Out`).
#![forbid(unsafe_code)]

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::RawMessageErrorKind;
use tokio::time::{timeout_at, Instant};

use super::super::envelope::{self, Envelope};
use super::super::kv;
use super::super::{FromLink, LinkStats};
use super::{Out, FLUSH_WAIT_MS};

/// Messages of a dead node's queue one scan looks at, at most.
pub(super) const RECLAIM_SCAN_MESSAGES_MAX: u64 = 100_000;
/// Longest one scan runs; what it has not reached by then stays in the dead node's queue.
pub(super) const RECLAIM_SCAN_WAIT_MS: u64 = 30_000;
/// Messages per `FromLink::Owed` batch.
const OWED_BATCH_MAX: usize = 256;
/// Longest the start-up ownership check runs in all (then the queue consumer starts and
/// the sessions not checked are kept).
pub(super) const VERIFY_WAIT_MS: u64 = 10_000;

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
    let deadline = Instant::now() + Duration::from_millis(RECLAIM_SCAN_WAIT_MS);
    let stats = out.stats.clone();
    let mut batch = Vec::new();
    // Why the scan ended, logged with what it copied: a scan cut short by a failed read
    // (a leader election, a timed-out request) copies nothing after it, and the log is
    // what tells that apart from a queue that held nothing for the session.
    let mut ended = String::from("end of the queue");
    let mut copied = 0usize;
    let mut seq = 1u64;
    match timeout_at(deadline, js.get_stream_no_info(&stream)).await {
        Ok(Ok(stream)) => {
            for _ in 0..RECLAIM_SCAN_MESSAGES_MAX {
                let get = stream
                    .raw_message_builder()
                    .sequence(seq)
                    .next_by_subject(subject.clone())
                    .send();
                let m = match timeout_at(deadline, get).await {
                    Ok(Ok(m)) => m,
                    Ok(Err(e)) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => break,
                    Ok(Err(e)) => {
                        LinkStats::add(&stats.nats_errors);
                        ended = format!("a failed read at sequence {seq}: {e}");
                        break;
                    }
                    Err(_) => {
                        LinkStats::add(&stats.nats_errors);
                        ended = format!("its {RECLAIM_SCAN_WAIT_MS} ms at sequence {seq}");
                        break;
                    }
                };
                seq = m.sequence.saturating_add(1);
                let age_ms = age_ms(m.time.unix_timestamp_nanos());
                let Some(e) = owed(&m.payload, &filters, age_ms) else {
                    continue;
                };
                LinkStats::add(&stats.reclaimed);
                copied += 1;
                batch.push(e);
                if batch.len() == OWED_BATCH_MAX {
                    out.push_wake(FromLink::Owed {
                        client_id: client_id.clone(),
                        envelopes: std::mem::take(&mut batch),
                        last: false,
                    });
                }
            }
        }
        Ok(Err(e)) => {
            LinkStats::add(&stats.nats_errors);
            ended = format!("the stream not opened: {e}");
        }
        Err(_) => {
            LinkStats::add(&stats.nats_errors);
            ended = String::from("the stream not opened in time");
        }
    }
    eprintln!(
        "cluster: {copied} messages copied from {subject} for {client_id} (scan ended by {ended}, next sequence {seq})"
    );
    out.push_wake(FromLink::Owed {
        client_id,
        envelopes: batch,
        last: true,
    });
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
}
