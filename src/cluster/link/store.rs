//! The storer: one task that stores QoS ≥ 1 messages in other nodes' JetStream queues, in
//! the order the link started their stores (`docs/cluster.md`, "QoS 1/2 between nodes",
//! *Order*).
//!
//! Owns: the stores under way (publishes in flight, failed ones to retry). Invariant: the
//! publishes leave in the order the jobs came, and after a failed one nothing new is sent
//! until every publish in flight has answered and the failed ones — retried together, in
//! their order, every `QUEUE_RETRY_MS` until stored or past their job's deadline — are
//! settled; so a retried message is overtaken in a queue only by later messages that were
//! already in flight when its failure came back, never by one sent after. Each job is
//! answered exactly once, in order, with the nodes whose queue holds it. (One task per
//! message, as before, let a later message's first attempt land while an earlier one
//! waited for its retry.) Must not touch: the release list (the link's), the core copies.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::QUEUE_RETRY_MS;

/// Publishes in flight at most before the storer takes a new job: below the JetStream
/// context's own limit (5,000 unanswered publishes, past which a publish waits).
const FLIGHTS_MAX: usize = 2048;

/// One store of a message: the node, its queue subject, and the sequence number of the
/// message before it on its topic that the receiver must have passed on first
/// (`queue::PREV_HEADER`; `None`: nothing to wait for).
pub(super) struct Target {
    pub node: Arc<str>,
    pub subject: String,
    pub prev: Option<u64>,
}

/// One message's stores.
pub(super) struct StoreJob {
    /// The release list's number of the message.
    pub id: u64,
    /// The nodes to store it for.
    pub to: Vec<Target>,
    pub bytes: Bytes,
    /// `<origin>.<seq>`; the node's name is appended per copy, so a retry is stored once.
    pub msg_id: String,
    /// Past it the stores not done are given up (the link then sends the core copy).
    pub deadline: Instant,
}

/// A job taken by the storer.
struct Job {
    /// Its place in the storer's order (consecutive; the link's numbers are not, since a
    /// held message starts after later ones of other topics).
    slot: u64,
    job: StoreJob,
    /// Nodes whose queue holds it.
    stored: Vec<Arc<str>>,
    /// Publishes sent and not answered yet.
    waiting: usize,
}

/// A publish in flight: its job's number, the node and subject, and whether JetStream
/// stored it (answered within the job's deadline).
struct Flight {
    slot: u64,
    to: Target,
    stored: Pin<Box<dyn Future<Output = bool> + Send>>,
}

enum Event {
    Answer(bool),
    Job(Option<StoreJob>),
}

/// Run until the link drops its sender: store each job's message for its nodes and answer
/// `(id, nodes stored)` on `done`, in job order.
pub(super) async fn storer(
    js: jetstream::Context,
    mut jobs: mpsc::Receiver<StoreJob>,
    done: mpsc::Sender<(u64, Vec<Arc<str>>)>,
) {
    let mut taken: VecDeque<Job> = VecDeque::new();
    let mut flights: VecDeque<Flight> = VecDeque::new();
    // A store failed and is not settled: take nothing new.
    let mut stopped = false;
    let mut closed = false;
    loop {
        let can_take = !stopped && !closed && flights.len() < FLIGHTS_MAX;
        let event = match flights.front_mut() {
            // New jobs are taken while the oldest publish is awaited.
            Some(f) if can_take => tokio::select! {
                biased;
                ok = &mut f.stored => Event::Answer(ok),
                j = jobs.recv() => Event::Job(j),
            },
            Some(f) => Event::Answer((&mut f.stored).await),
            None if stopped => {
                if taken.iter().any(|j| !j.job.to.is_empty()) {
                    tokio::time::sleep(std::time::Duration::from_millis(QUEUE_RETRY_MS)).await;
                    retry(&js, &mut taken, &mut flights).await;
                }
                // Still stopped while the retries are in flight.
                stopped = !flights.is_empty();
                continue;
            }
            None if closed => return,
            None => Event::Job(jobs.recv().await),
        };
        match event {
            Event::Answer(ok) => {
                if let Some(f) = flights.pop_front() {
                    stopped |= answer(f, ok, &mut taken);
                }
            }
            Event::Job(Some(j)) => take(&js, j, &mut taken, &mut flights).await,
            Event::Job(None) => closed = true,
        }
        while taken
            .front()
            .is_some_and(|j| j.waiting == 0 && j.job.to.is_empty())
        {
            let Some(j) = taken.pop_front() else {
                break;
            };
            if done.send((j.job.id, j.stored)).await.is_err() {
                return;
            }
        }
    }
}

/// Take job `j`: send its publishes.
async fn take(
    js: &jetstream::Context,
    mut j: StoreJob,
    taken: &mut VecDeque<Job>,
    flights: &mut VecDeque<Flight>,
) {
    let to = std::mem::take(&mut j.to);
    // Every flight belongs to a job still taken, so slots only need to follow the last.
    let slot = taken.back().map_or(0, |b| b.slot.wrapping_add(1));
    let mut job = Job {
        slot,
        job: j,
        stored: Vec::with_capacity(to.len()),
        waiting: 0,
    };
    send(js, &mut job, to, flights).await;
    taken.push_back(job);
}

/// Send `job`'s message to each of `to`, in order, as flights.
async fn send(
    js: &jetstream::Context,
    job: &mut Job,
    to: Vec<Target>,
    flights: &mut VecDeque<Flight>,
) {
    let (slot, deadline) = (job.slot, job.job.deadline);
    for to in to {
        // One id per (message, node): the copies for two nodes are two messages.
        let mut p = jetstream::message::PublishMessage::build()
            .payload(job.job.bytes.clone())
            .message_id(format!("{}.{}", job.job.msg_id, to.node));
        if let Some(prev) = to.prev {
            p = p.header(super::super::queue::PREV_HEADER, prev.to_string().as_str());
        }
        let sent = tokio::time::timeout_at(deadline, js.send_publish(to.subject.clone(), p)).await;
        let ack = sent.ok().and_then(Result::ok);
        let stored = Box::pin(async move {
            match ack {
                Some(f) => matches!(
                    tokio::time::timeout_at(deadline, f.into_future()).await,
                    Ok(Ok(_))
                ),
                None => false,
            }
        });
        flights.push_back(Flight { slot, to, stored });
        job.waiting += 1;
    }
}

/// Note flight `f`'s answer `ok` in its job; true when it failed and is to be retried
/// (its job's deadline leaves time for a retry).
fn answer(f: Flight, ok: bool, taken: &mut VecDeque<Job>) -> bool {
    let Some(first) = taken.front().map(|j| j.slot) else {
        return false;
    };
    let i = f
        .slot
        .checked_sub(first)
        .and_then(|i| usize::try_from(i).ok());
    let Some(job) = i.and_then(|i| taken.get_mut(i)) else {
        return false;
    };
    job.waiting -= 1;
    if ok {
        job.stored.push(f.to.node);
        return false;
    }
    let retry_at = Instant::now() + std::time::Duration::from_millis(QUEUE_RETRY_MS);
    if retry_at >= job.job.deadline {
        return false;
    }
    job.job.to.push(f.to);
    true
}

/// Send every failed store again, in job order; those past their deadline are given up.
async fn retry(js: &jetstream::Context, taken: &mut VecDeque<Job>, flights: &mut VecDeque<Flight>) {
    let now = Instant::now();
    for job in taken.iter_mut() {
        let to = std::mem::take(&mut job.job.to);
        if !to.is_empty() && job.job.deadline > now {
            send(js, job, to, flights).await;
        }
    }
}
