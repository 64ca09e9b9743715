//! The link's JetStream tasks: the bucket opener, the registry workers, the retained
//! writer and watcher, the interest writer and watcher, and the queue consumer.
//!
//! Owns: those tasks and their queues. Invariant: registry operations for one client id,
//! and retained writes, are applied in the order the node sent them; every wait on NATS is
//! bounded and every failure counted. Must not touch: the link loop's state (they report
//! only through `Out`).
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use async_nats::{jetstream, Client};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::super::envelope;
use super::super::kv::{self, Buckets};
use super::super::queue::{self, InterestView};
use super::super::subject::Prefix;
use super::super::{FromLink, LinkStats};
use super::{within, Inbound, Out, Tag, FLUSH_WAIT_MS, PUBLISH_WAIT_MS};
use crate::config::cluster::ClusterConfig;

/// Registry workers: claims for different client ids run in parallel, claims for one
/// client id stay in order (they go to the worker its key hashes to).
const REGISTRY_WORKERS: usize = 4;
/// Capacity of each registry worker's queue and of the retained writer's queue.
const KV_QUEUE_MAX: usize = 4096;
/// Attempts to write one retained message (`KV_RETRY_MS` apart) before it is dropped.
const RETAINED_PUT_ATTEMPTS_MAX: usize = 20;
/// Attempts (`KV_RETRY_MS` apart) to write or read a session's subscriptions copy: a few,
/// since they hold up the registry worker's other client ids.
const KV_ATTEMPTS_MAX: usize = 4;
/// Pause between attempts to open the buckets while JetStream is unreachable.
const KV_RETRY_MS: u64 = 500;
/// After the buckets open, how long this node's interest entries of an earlier run may
/// wait to be written again (restored sessions) before the ones not written are deleted.
const INTEREST_GRACE_MS: u64 = 10_000;
/// Pause between rounds of retrying interest writes that failed.
const INTEREST_RETRY_MS: u64 = 1000;
/// Pause before the queue consumer is set up again after its stream of messages ended.
const QUEUE_RESTART_MS: u64 = 500;
/// How often a bucket watch is checked against the bucket's newest revision.
const WATCH_CHECK_MS: u64 = 500;
/// A watch behind the bucket that shows nothing new for this long is made anew.
const WATCH_STALL_MS: u64 = 1500;
/// Longest wait for a bucket watch to open (its consumer created); then it is tried again.
const WATCH_OPEN_MS: u64 = 2000;
/// Revisions a stalled watch's catch-up reads at most (one request each).
const CATCH_UP_MAX: u64 = 1024;
/// Pause before a bucket watch is opened again.
const WATCH_REOPEN_MS: u64 = 200;
/// Messages the queue consumer asks for at a time.
const QUEUE_BATCH_MESSAGES: usize = 512;
/// Longest the queue consumer waits for the shards' lists of restored sessions (they send
/// them on their first turn) before it starts without the ownership check.
const RESTORED_WAIT_MS: u64 = 10_000;

/// An interest bucket operation, in the order the link made them.
pub(super) enum InterestOp {
    /// Write this node's interest `key` (if any), then send `answer`.
    Put {
        key: Option<String>,
        node: String,
        answer: FromLink,
    },
    /// Delete this node's interest `key`.
    Delete { key: String },
    /// Write every entry of this node's again (another node removed them: `alive`).
    Rewrite,
}

/// What this node's queue consumer starts with: where its messages go, and the sessions
/// restored from the store to check first (`None`: start at once).
/// `rejoined` tells the link loop that this node found itself removed and joined again:
/// its live sessions are checked against the registry before more of the queue passes
/// (`recheck`).
pub(super) struct QueueStart {
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) restored: Option<oneshot::Receiver<Vec<String>>>,
    pub(super) rejoined: mpsc::Sender<()>,
}

/// The interest view the watcher keeps, and where it says that it has loaded the whole
/// bucket once (dropped unsaid if it never does).
pub(super) struct ViewFeed {
    pub(super) view: Arc<Mutex<InterestView>>,
    pub(super) loaded: oneshot::Sender<()>,
}

/// The queues of the KV tasks, which fill (bounded) until the buckets are open.
pub(super) struct KvQueues {
    pub(super) registry: Vec<mpsc::Sender<RegistryOp>>,
    pub(super) retained: mpsc::Sender<Bytes>,
    pub(super) interest: mpsc::Sender<InterestOp>,
}

/// A registry operation, queued to the worker of its client id.
pub(super) enum RegistryOp {
    Claim {
        client_id: String,
        token: u64,
    },
    Release {
        client_id: String,
    },
    Subs {
        client_id: String,
        state: Vec<u8>,
        ack: Option<(usize, u64)>,
    },
}

/// The registry worker for a client id.
pub(super) fn worker(client_id: &str) -> usize {
    let h = client_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(h % REGISTRY_WORKERS as u64).unwrap_or(0)
}

/// Start the task that opens the buckets and the queue stream (retrying until JetStream
/// answers) and then runs the registry workers, the retained writer and watcher, the
/// interest writer and watcher (which keeps the view) and this node's queue consumer (which
/// feeds `inbound`; with `restored`, only after the sessions restored from the store were
/// checked against the registry, `reclaim::verify`). Returns their queues.
pub(super) fn start_kv(
    cfg: &ClusterConfig,
    prefix: &Prefix,
    client: &Client,
    out: &Out,
    reconnected: Arc<watch::Sender<u64>>,
    view: ViewFeed,
    queue_start: QueueStart,
) -> KvQueues {
    let QueueStart {
        inbound,
        restored,
        rejoined,
    } = queue_start;
    let mut senders = Vec::with_capacity(REGISTRY_WORKERS);
    let mut receivers = Vec::with_capacity(REGISTRY_WORKERS);
    for _ in 0..REGISTRY_WORKERS {
        let (tx, rx) = mpsc::channel(KV_QUEUE_MAX);
        senders.push(tx);
        receivers.push(rx);
    }
    let (retained_tx, retained_rx) = mpsc::channel(KV_QUEUE_MAX);
    let (interest_tx, interest_rx) = mpsc::channel(KV_QUEUE_MAX);
    let ctx = KvCtx {
        node: cfg.node.clone(),
        prefix: prefix.clone(),
        client: client.clone(),
        out: out.clone(),
    };
    let (name, replicas) = (cfg.name.clone(), cfg.kv_replicas);
    let (forget_after, alive_interest) = (cfg.forget_after, interest_tx.clone());
    let view_for_sweep = view.view.clone();
    let joined = Joined {
        interest: alive_interest,
        rejoined,
    };
    tokio::spawn(async move {
        let js = jetstream::new(ctx.client.clone());
        let mut reported = false;
        let buckets = loop {
            match kv::open(&js, &name, replicas).await {
                Ok(b) => break b,
                Err(e) => {
                    if !reported {
                        eprintln!("cluster link: cannot open the JetStream buckets yet: {e}");
                        if let Some(hint) = replicas_hint(&e.to_string(), replicas) {
                            eprintln!("cluster link: {hint}");
                        }
                        reported = true;
                    }
                    LinkStats::add(&ctx.out.stats.nats_errors);
                    tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
                }
            }
        };
        let config = queue::stream_config(&name, &ctx.prefix, replicas);
        let stream = loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    if !reported {
                        eprintln!("cluster link: cannot open the queue stream yet: {e}");
                        reported = true;
                    }
                    LinkStats::add(&ctx.out.stats.nats_errors);
                    tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
                }
            }
        };
        for rx in receivers {
            tokio::spawn(registry_worker(ctx.clone(), buckets.clone(), rx));
        }
        tokio::spawn(retained_writer(ctx.clone(), buckets.clone(), retained_rx));
        tokio::spawn(interest_writer(ctx.clone(), buckets.clone(), interest_rx));
        tokio::spawn(interest_watcher(
            ctx.clone(),
            buckets.clone(),
            view,
            reconnected.subscribe(),
        ));
        if let Some(h) = heart(&ctx, &js, &name, replicas, forget_after, joined).await {
            tokio::spawn(super::alive::heartbeat(h));
        }
        tokio::spawn(sweep_groups(
            ctx.clone(),
            js.clone(),
            name.clone(),
            replicas,
            view_for_sweep,
        ));
        let (verify_ctx, sessions) = (ctx.clone(), buckets.sessions.clone());
        tokio::spawn(async move {
            // Sessions this node restored but another node took over while it was down
            // are reported before any message of the queue, so none reaches them here.
            if let Some(rx) = restored {
                let wait = Duration::from_millis(RESTORED_WAIT_MS);
                if let Ok(Ok(ids)) = tokio::time::timeout(wait, rx).await {
                    let (node, out) = (&verify_ctx.node, &verify_ctx.out);
                    super::reclaim::verify(&sessions, node, ids, out).await;
                }
            }
            queue_consumer(verify_ctx, stream, inbound).await;
        });
        tokio::spawn(retained_watcher(ctx, buckets, reconnected.subscribe()));
    });
    KvQueues {
        registry: senders,
        retained: retained_tx,
        interest: interest_tx,
    }
}

/// Where the heartbeat says that this node joined again after its removal: the interest
/// writer (write every entry again) and the link loop (check the live sessions).
struct Joined {
    interest: mpsc::Sender<InterestOp>,
    rejoined: mpsc::Sender<()>,
}

/// The heartbeat task's needs, once its bucket is open (retried like the others; `None`
/// only if the runtime is going away).
async fn heart(
    ctx: &KvCtx,
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    forget_after: Option<Duration>,
    joined: Joined,
) -> Option<super::alive::Heart> {
    let Joined { interest, rejoined } = joined;
    let bucket = loop {
        match kv::open_nodes(js, name, replicas).await {
            Ok(b) => break b,
            Err(_) => {
                LinkStats::add(&ctx.out.stats.nats_errors);
                if interest.is_closed() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
            }
        }
    };
    Some(super::alive::Heart {
        node: ctx.node.clone(),
        cluster: name.to_string(),
        prefix: ctx.prefix.clone(),
        client: ctx.client.clone(),
        out: ctx.out.clone(),
        bucket,
        forget_after,
        interest,
        rejoined,
    })
}

/// Open the share-group claim bucket (retried like the others) and run the sweep that
/// removes the queues of groups left without members (`sweep`).
async fn sweep_groups(
    ctx: KvCtx,
    js: jetstream::Context,
    name: String,
    replicas: usize,
    view: Arc<Mutex<InterestView>>,
) {
    let claims = loop {
        match kv::open_groups(&js, &name, replicas).await {
            Ok(b) => break b,
            Err(_) => {
                LinkStats::add(&ctx.out.stats.nats_errors);
                tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
            }
        }
    };
    let mut js = js;
    js.set_timeout(Duration::from_millis(FLUSH_WAIT_MS));
    super::sweep::sweeper(super::sweep::Sweep {
        js,
        cluster: name,
        prefix: ctx.prefix.clone(),
        node: ctx.node.clone(),
        view,
        claims,
        stats: ctx.out.stats.clone(),
    })
    .await;
}

/// What the KV tasks share.
#[derive(Clone)]
struct KvCtx {
    node: String,
    prefix: Prefix,
    client: Client,
    out: Out,
}

async fn registry_worker(ctx: KvCtx, b: Buckets, mut rx: mpsc::Receiver<RegistryOp>) {
    while let Some(op) = rx.recv().await {
        match op {
            RegistryOp::Claim { client_id, token } => {
                match kv::claim(&b.sessions, &ctx.node, &client_id).await {
                    Ok(previous) => {
                        if previous.is_some() {
                            // The last copy of the subscriptions, in case the old node is
                            // dead and sends nothing, or the entry names this node from a
                            // claim whose answer came too late for its CONNECT (the client
                            // retried) and this node has no such session.
                            backup(&ctx, &b, &client_id).await;
                        }
                        let old = previous.filter(|p| *p != ctx.node);
                        // The answer goes to the node before the old node is told: its
                        // state, which the notice triggers, then always comes after it,
                        // when the CONNECT already waits for it (the same queue).
                        ctx.out.push_wake(FromLink::Claimed {
                            token,
                            client_id: client_id.clone(),
                            previous: old.clone(),
                        });
                        if let Some(old) = old.as_deref() {
                            notify_takeover(&ctx, old, &client_id).await;
                        }
                    }
                    Err(_) => {
                        LinkStats::add(&ctx.out.stats.nats_errors);
                        ctx.out
                            .push_wake(FromLink::ClaimFailed { token, client_id });
                    }
                }
            }
            RegistryOp::Subs {
                client_id,
                state,
                ack,
            } => {
                // A bucket electing a new leader refuses writes for a few seconds: retry
                // within a bound. The answer releases SUBACKs that wait for the copy.
                let state = Bytes::from(state);
                let mut attempts = 0;
                while !within(
                    FLUSH_WAIT_MS,
                    b.subs.put(kv::key(&client_id), state.clone()),
                )
                .await
                {
                    LinkStats::add(&ctx.out.stats.nats_errors);
                    attempts += 1;
                    if attempts == KV_ATTEMPTS_MAX {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
                }
                ctx.out.push_wake(FromLink::SubsSaved { ack });
            }
            RegistryOp::Release { client_id } => {
                let removed = kv::release(&b.sessions, &ctx.node, &client_id).await;
                if removed.is_err() {
                    LinkStats::add(&ctx.out.stats.nats_errors);
                }
                if matches!(removed, Ok(true)) {
                    // The session is gone everywhere: so is its copy.
                    let delete = b.subs.delete(kv::key(&client_id));
                    if !within(FLUSH_WAIT_MS, delete).await {
                        LinkStats::add(&ctx.out.stats.nats_errors);
                    }
                }
                ctx.out.push_wake(FromLink::Released {
                    client_id,
                    removed: removed.unwrap_or(false),
                });
            }
        }
    }
}

/// Read the subscriptions bucket's copy of `client_id`'s session (retrying within a bound)
/// and pass it to the node ahead of the claim's answer.
async fn backup(ctx: &KvCtx, b: &Buckets, client_id: &str) {
    for attempt in 1..=KV_ATTEMPTS_MAX {
        let get = b.subs.get(kv::key(client_id));
        match tokio::time::timeout(Duration::from_millis(FLUSH_WAIT_MS), get).await {
            Ok(Ok(Some(state))) => {
                ctx.out.push_wake(FromLink::SessionBackup {
                    client_id: client_id.to_string(),
                    state: state.to_vec(),
                });
                return;
            }
            Ok(Ok(None)) => return,
            _ => LinkStats::add(&ctx.out.stats.nats_errors),
        }
        if attempt < KV_ATTEMPTS_MAX {
            tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
        }
    }
}

/// Tell node `old` that this node took `client_id` over.
async fn notify_takeover(ctx: &KvCtx, old: &str, client_id: &str) {
    let subject = ctx.prefix.control(&format!("takeover.{old}"));
    let payload = Bytes::from(format!("{}\n{client_id}", ctx.node));
    let sent = within(PUBLISH_WAIT_MS, ctx.client.publish(subject, payload)).await;
    if !sent || !within(FLUSH_WAIT_MS, ctx.client.flush()).await {
        LinkStats::add(&ctx.out.stats.nats_errors);
    }
}

/// Write retained envelopes in the order they were published (an empty payload is kept
/// as a tombstone: the watcher needs its topic to report the deletion).
async fn retained_writer(ctx: KvCtx, b: Buckets, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = rx.recv().await {
        let Ok(e) = envelope::decode(&bytes) else {
            continue;
        };
        // A bucket electing a new leader (a NATS server was lost) refuses writes for a
        // few seconds; retry within a bound rather than lose the update.
        let key = kv::key(&e.topic);
        let mut attempts = 0;
        while b.retained.put(key.as_str(), bytes.clone()).await.is_err() {
            LinkStats::add(&ctx.out.stats.nats_errors);
            attempts += 1;
            if attempts == RETAINED_PUT_ATTEMPTS_MAX {
                break;
            }
            tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
        }
    }
}

/// Report the retained bucket: every topic's latest envelope, then each change.
async fn retained_watcher(ctx: KvCtx, b: Buckets, mut reconnected: watch::Receiver<u64>) {
    follow_bucket(&ctx, &b.retained, &mut reconnected, |entry| {
        report_retained(&ctx, &entry.value);
        true
    })
    .await;
}

/// Follow `bucket`: every entry of its history, then each change, each passed to `apply`
/// (`false` from it ends the watch for good). A watch that ends, any reconnection (its
/// consumer may have lived on a server now gone), or a watch found stalled (`Lag`: the
/// bucket holds a revision it has not shown and it showed nothing for
/// `WATCH_STALL_MS`: what it missed is first read from the stream, `catch_up`) makes it
/// resume after the last revision seen, so no change is missed and none is reported
/// twice. The stall check is this link's own: async-nats' watch
/// reports missed heartbeats only after 10 s and, while it re-creates its consumer
/// itself (a sequence gap, a lost connection), reports nothing at all.
async fn follow_bucket(
    ctx: &KvCtx,
    bucket: &jetstream::kv::Store,
    reconnected: &mut watch::Receiver<u64>,
    mut apply: impl FnMut(&jetstream::kv::Entry) -> bool,
) {
    let mut last_revision = 0u64;
    let mut check = tokio::time::interval(Duration::from_millis(WATCH_CHECK_MS));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let open = if last_revision == 0 {
            tokio::time::timeout(
                Duration::from_millis(WATCH_OPEN_MS),
                bucket.watch_with_history(">"),
            )
            .await
        } else {
            tokio::time::timeout(
                Duration::from_millis(WATCH_OPEN_MS),
                bucket.watch_all_from_revision(last_revision + 1),
            )
            .await
        };
        let mut lag = Lag::default();
        match open {
            Ok(Ok(mut w)) => loop {
                tokio::select! {
                    entry = w.next() => {
                        let Some(Ok(entry)) = entry else { break };
                        last_revision = last_revision.max(entry.revision);
                        if !apply(&entry) {
                            return;
                        }
                    }
                    changed = reconnected.changed() => {
                        if changed.is_err() {
                            return; // The client is gone: the link is ending.
                        }
                        break;
                    }
                    _ = check.tick() => {
                        let Some(newest) = last_sequence(bucket).await else {
                            continue; // No answer (a leader election): no verdict.
                        };
                        if lag.stalled(newest, last_revision, tokio::time::Instant::now()) {
                            LinkStats::add(&ctx.out.stats.watch_reopened);
                            eprintln!(
                                "cluster: the watch of bucket {} stalled at revision {last_revision} (the bucket is at {newest}): read on from the stream, then made anew",
                                bucket.name
                            );
                            // A new watch's consumer may be placed on the dead server
                            // (the cluster has not marked it offline yet) and time out:
                            // what was missed is read from the stream's leader first.
                            if !catch_up(bucket, &mut last_revision, newest, &mut apply).await {
                                return;
                            }
                            break;
                        }
                    }
                }
            },
            _ => LinkStats::add(&ctx.out.stats.nats_errors),
        }
        tokio::time::sleep(Duration::from_millis(WATCH_REOPEN_MS)).await;
    }
}

/// Pass to `apply` the revisions of `bucket` after `last_revision` up to `newest` (at
/// most `CATCH_UP_MAX`), read one by one from its stream's leader, in order; a revision
/// no longer there (its key written again since) is skipped, and the first read that
/// fails ends the round (the new watch resumes after the last one passed). `false` if
/// `apply` ended the watch for good.
async fn catch_up(
    bucket: &jetstream::kv::Store,
    last_revision: &mut u64,
    newest: u64,
    apply: &mut impl FnMut(&jetstream::kv::Entry) -> bool,
) -> bool {
    use async_nats::jetstream::stream::LastRawMessageErrorKind as Kind;
    let end = newest.min(last_revision.saturating_add(CATCH_UP_MAX));
    for seq in *last_revision + 1..=end {
        let get = bucket.stream.get_raw_message(seq);
        let m = match tokio::time::timeout(Duration::from_millis(WATCH_CHECK_MS), get).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) if e.kind() == Kind::NoMessageFound => {
                *last_revision = seq;
                continue;
            }
            _ => return true,
        };
        *last_revision = seq;
        let Some(key) = m.subject.strip_prefix(bucket.prefix.as_str()) else {
            continue;
        };
        let operation = match m.headers.get("KV-Operation").map(|v| v.as_str()) {
            Some("DEL") => Operation::Delete,
            Some("PURGE") => Operation::Purge,
            _ => Operation::Put,
        };
        let entry = jetstream::kv::Entry {
            bucket: bucket.name.clone(),
            key: key.to_string(),
            value: m.payload,
            revision: seq,
            delta: newest - seq,
            created: m.time,
            operation,
            seen_current: false,
        };
        if !apply(&entry) {
            return false;
        }
    }
    true
}

/// The newest revision in `bucket` (its stream's last sequence, from the stream's leader),
/// or `None` without an answer within `WATCH_CHECK_MS`.
async fn last_sequence(bucket: &jetstream::kv::Store) -> Option<u64> {
    let info = bucket.stream.get_info();
    match tokio::time::timeout(Duration::from_millis(WATCH_CHECK_MS), info).await {
        Ok(Ok(i)) => Some(i.state.last_sequence),
        _ => None,
    }
}

/// Whether a watch is stalled: the bucket holds a revision the watch has not shown, and
/// the watch has shown nothing new for `WATCH_STALL_MS` since that was first seen. A watch
/// that is slow but moving (a big bucket loading, a busy machine) is left alone.
#[derive(Debug, Default)]
struct Lag {
    /// When the watch was first seen behind, and the revision it had shown then.
    behind: Option<(tokio::time::Instant, u64)>,
}

impl Lag {
    fn stalled(&mut self, newest: u64, shown: u64, now: tokio::time::Instant) -> bool {
        if shown >= newest {
            self.behind = None;
            return false;
        }
        match self.behind {
            Some((since, at)) if at == shown => {
                now.duration_since(since) >= Duration::from_millis(WATCH_STALL_MS)
            }
            _ => {
                self.behind = Some((now, shown));
                false
            }
        }
    }
}

fn report_retained(ctx: &KvCtx, value: &[u8]) {
    let Ok(e) = envelope::decode(value) else {
        LinkStats::add(&ctx.out.stats.malformed);
        return;
    };
    let message = (!e.payload.is_empty()).then(|| Box::new(e.clone()));
    ctx.out.push_wake(FromLink::Retained {
        topic: e.topic,
        message,
    });
}

/// Write this node's interest entries in the order they came, answering each interest
/// after its entry is written (or the write failed: the answer must not wait for NATS).
/// Writes are pipelined: each is sent at once and its acknowledgement awaited, in order,
/// by `interest_acker`. Failed writes are retried every `INTEREST_RETRY_MS`; this node's
/// entries of an earlier run that are not written again within `INTEREST_GRACE_MS` are
/// deleted.
async fn interest_writer(ctx: KvCtx, b: Buckets, mut rx: mpsc::Receiver<InterestOp>) {
    let mut live: HashMap<String, Vec<u8>> = HashMap::new();
    let mut failed: HashSet<String> = HashSet::new();
    let (sent_tx, sent_rx) = mpsc::channel(KV_QUEUE_MAX);
    let (failed_tx, mut failed_rx) = mpsc::channel(KV_QUEUE_MAX);
    tokio::spawn(interest_acker(ctx.clone(), sent_rx, failed_tx));
    let js = jetstream::new(ctx.client.clone());
    let prefix = b
        .interest
        .put_prefix
        .clone()
        .unwrap_or_else(|| b.interest.prefix.clone());
    let mine = format!("{}.", ctx.node);
    let mut earlier: Vec<String> =
        match tokio::time::timeout(Duration::from_millis(FLUSH_WAIT_MS), b.interest.keys()).await {
            Ok(Ok(keys)) => {
                let keys: Vec<Result<String, _>> = keys.collect().await;
                keys.into_iter()
                    .filter_map(Result::ok)
                    .filter(|k| k.starts_with(&mine))
                    .collect()
            }
            _ => {
                LinkStats::add(&ctx.out.stats.nats_errors);
                Vec::new()
            }
        };
    let grace = tokio::time::sleep(Duration::from_millis(INTEREST_GRACE_MS));
    tokio::pin!(grace);
    let mut retry = tokio::time::interval(Duration::from_millis(INTEREST_RETRY_MS));
    loop {
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { return };
                let sent = match op {
                    InterestOp::Rewrite => {
                        // The retry round writes them (within `INTEREST_RETRY_MS`).
                        failed.extend(live.keys().cloned());
                        continue;
                    }
                    InterestOp::Put { key, node, answer } => {
                        let write = match key {
                            Some(key) => {
                                let value = interest_value_of(&node, &answer);
                                let p = jetstream::message::PublishMessage::build()
                                    .payload(Bytes::copy_from_slice(&value));
                                let ack = send_write(&js, format!("{prefix}{key}"), p).await;
                                live.insert(key.clone(), value);
                                Some((key, ack))
                            }
                            None => None,
                        };
                        Sent { write, answer: Some(answer) }
                    }
                    InterestOp::Delete { key } => {
                        live.remove(&key);
                        failed.remove(&key);
                        let p = jetstream::message::PublishMessage::build()
                            .payload(Bytes::new())
                            .header("KV-Operation", "DEL");
                        let ack = send_write(&js, format!("{prefix}{key}"), p).await;
                        Sent { write: Some((key, ack)), answer: None }
                    }
                };
                if let Err(e) = sent_tx.send(sent).await {
                    // The acker is gone: answer here rather than never.
                    if let Some(answer) = e.0.answer {
                        ctx.out.push_wake(answer);
                    }
                }
            }
            Some(key) = failed_rx.recv() => {
                failed.insert(key);
            }
            () = &mut grace, if !earlier.is_empty() => {
                for key in std::mem::take(&mut earlier) {
                    if !live.contains_key(&key) && !delete_interest(&ctx, &b, &key).await {
                        failed.insert(key);
                    }
                }
            }
            _ = retry.tick(), if !failed.is_empty() => {
                for key in std::mem::take(&mut failed) {
                    let ok = match live.get(&key) {
                        Some(v) => put_interest(&ctx, &b, &key, v).await,
                        None => delete_interest(&ctx, &b, &key).await,
                    };
                    if !ok {
                        failed.insert(key);
                    }
                }
            }
        }
    }
}

/// An interest bucket write on its way: (key, its acknowledgement to await, `None` if it
/// could not even be sent), and the answer to give after it.
struct Sent {
    write: Option<(String, Option<jetstream::context::PublishAckFuture>)>,
    answer: Option<FromLink>,
}

/// Send one bucket write (bounded); its acknowledgement, if it went.
async fn send_write(
    js: &jetstream::Context,
    subject: String,
    p: jetstream::message::PublishMessage,
) -> Option<jetstream::context::PublishAckFuture> {
    let sent = tokio::time::timeout(
        Duration::from_millis(FLUSH_WAIT_MS),
        js.send_publish(subject, p),
    )
    .await;
    sent.ok().and_then(Result::ok)
}

/// Await the interest writes' acknowledgements in the order they were sent, report the
/// keys whose write failed, and send each answer after its write.
async fn interest_acker(ctx: KvCtx, mut rx: mpsc::Receiver<Sent>, failed: mpsc::Sender<String>) {
    while let Some(sent) = rx.recv().await {
        if let Some((key, ack)) = sent.write {
            let ok = match ack {
                Some(f) => matches!(
                    tokio::time::timeout(
                        Duration::from_millis(FLUSH_WAIT_MS),
                        std::future::IntoFuture::into_future(f)
                    )
                    .await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            if !ok {
                LinkStats::add(&ctx.out.stats.nats_errors);
                // Never waits: the writer may itself be waiting to send to this task.
                let _ = failed.try_send(key);
            }
        }
        if let Some(answer) = sent.answer {
            ctx.out.push_wake(answer);
        }
    }
}

/// The bucket value of the interest an answer is for.
fn interest_value_of(node: &str, answer: &FromLink) -> Vec<u8> {
    match answer {
        FromLink::InterestReady { filter, group, .. }
        | FromLink::InterestRefused { filter, group, .. } => {
            queue::interest_value(node, &interest_filter(filter, group.as_deref()))
        }
        _ => Vec::new(),
    }
}

/// What the interest bucket holds for a filter: the filter, or `$share/G/F` for members
/// of share group G.
pub(super) fn interest_filter(filter: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("$share/{g}/{filter}"),
        None => filter.to_string(),
    }
}

async fn put_interest(ctx: &KvCtx, b: &Buckets, key: &str, value: &[u8]) -> bool {
    let put = b.interest.put(key, Bytes::copy_from_slice(value));
    let ok = within(FLUSH_WAIT_MS, put).await;
    if !ok {
        LinkStats::add(&ctx.out.stats.nats_errors);
    }
    ok
}

async fn delete_interest(ctx: &KvCtx, b: &Buckets, key: &str) -> bool {
    let ok = within(FLUSH_WAIT_MS, b.interest.delete(key)).await;
    if !ok {
        LinkStats::add(&ctx.out.stats.nats_errors);
    }
    ok
}

/// Keep the view equal to the interest bucket: every entry, then each change (resumed as
/// the retained watch is). Says `loaded` once the view holds the whole bucket: at once if
/// the bucket is empty, else with the entry after which nothing older is pending.
async fn interest_watcher(
    ctx: KvCtx,
    b: Buckets,
    feed: ViewFeed,
    mut reconnected: watch::Receiver<u64>,
) {
    let ViewFeed { view, loaded } = feed;
    let mut loaded = Some(loaded);
    let status = tokio::time::timeout(Duration::from_millis(FLUSH_WAIT_MS), b.interest.status());
    match status.await {
        Ok(Ok(s)) if s.values() == 0 => {
            if let Ok(mut v) = view.lock() {
                v.set_loaded();
            }
            if let Some(tx) = loaded.take() {
                let _ = tx.send(());
            }
        }
        Ok(Ok(_)) => {}
        _ => LinkStats::add(&ctx.out.stats.nats_errors),
    }
    follow_bucket(&ctx, &b.interest, &mut reconnected, |entry| {
        let Ok(mut v) = view.lock() else {
            return false;
        };
        match entry.operation {
            Operation::Put => match queue::parse_interest(&entry.value) {
                Some((node, filter)) => v.insert(&entry.key, node, filter),
                None => LinkStats::add(&ctx.out.stats.malformed),
            },
            Operation::Delete | Operation::Purge => v.remove(&entry.key),
        }
        for (share, remote) in v.take_remote_changes() {
            ctx.out.push_wake(FromLink::ShareRemote { share, remote });
        }
        if entry.seen_current {
            v.set_loaded();
            if let Some(tx) = loaded.take() {
                let _ = tx.send(());
            }
        }
        true
    })
    .await;
}

/// Read this node's queue through its durable consumer and pass each message to the link
/// loop. The consumer is made anew when the link starts, so what an earlier run of this
/// node took without acknowledging comes again at once rather than after the ack wait.
async fn queue_consumer(
    ctx: KvCtx,
    stream: jetstream::stream::Stream,
    inbound: mpsc::Sender<Inbound>,
) {
    let config = queue::consumer_config(&ctx.prefix, &ctx.node);
    let mut fresh = true;
    loop {
        if fresh {
            // Absent on a node's first start: nothing to do then.
            let _ = within(FLUSH_WAIT_MS, stream.delete_consumer(&ctx.node)).await;
        }
        let consumer = match stream
            .get_or_create_consumer(&ctx.node, config.clone())
            .await
        {
            Ok(c) => c,
            Err(_) => {
                LinkStats::add(&ctx.out.stats.nats_errors);
                tokio::time::sleep(Duration::from_millis(QUEUE_RESTART_MS)).await;
                continue;
            }
        };
        fresh = false;
        let messages = consumer
            .stream()
            .max_messages_per_batch(QUEUE_BATCH_MESSAGES)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(_) => {
                LinkStats::add(&ctx.out.stats.nats_errors);
                tokio::time::sleep(Duration::from_millis(QUEUE_RESTART_MS)).await;
                continue;
            }
        };
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(_) => {
                    LinkStats::add(&ctx.out.stats.nats_errors);
                    break;
                }
            };
            let (delivered, age_ms) = delivery_info(&m);
            let tag = Arc::new(Tag::Queued { delivered, age_ms });
            if inbound.send((tag, m.message)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(QUEUE_RESTART_MS)).await;
    }
}

/// What a share group's consumer task reads and where it sends it.
pub(super) struct ShareConsumer {
    pub(super) js: jetstream::Context,
    /// The share groups' stream, created here if missing.
    pub(super) stream: jetstream::stream::Config,
    /// The group's consumer (`queue::shared_consumer_config`).
    pub(super) consumer: jetstream::consumer::pull::Config,
    pub(super) group: String,
    pub(super) filter: String,
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) stats: Arc<LinkStats>,
}

/// Read share group (group, filter)'s queue through its durable consumer, which every node
/// with members of the group reads too (JetStream hands each message to one of them),
/// and pass each message to the link loop, until told to stop (this node's last member
/// left). Unlike this node's own consumer it is never deleted here: other nodes use it,
/// and what a dead node took comes to the others after `queue::SHARED_ACK_WAIT`.
pub(super) async fn share_consumer(
    s: ShareConsumer,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let read = async {
        loop {
            let stream = match s.js.get_or_create_stream(s.stream.clone()).await {
                Ok(stream) => stream,
                Err(_) => {
                    LinkStats::add(&s.stats.nats_errors);
                    tokio::time::sleep(Duration::from_millis(QUEUE_RESTART_MS)).await;
                    continue;
                }
            };
            let name = s.consumer.durable_name.clone().unwrap_or_default();
            let consumer = match stream
                .get_or_create_consumer(&name, s.consumer.clone())
                .await
            {
                Ok(c) => c,
                Err(_) => {
                    LinkStats::add(&s.stats.nats_errors);
                    tokio::time::sleep(Duration::from_millis(QUEUE_RESTART_MS)).await;
                    continue;
                }
            };
            let messages = consumer
                .stream()
                .max_messages_per_batch(QUEUE_BATCH_MESSAGES)
                .messages()
                .await;
            let Ok(mut messages) = messages else {
                LinkStats::add(&s.stats.nats_errors);
                tokio::time::sleep(Duration::from_millis(QUEUE_RESTART_MS)).await;
                continue;
            };
            while let Some(m) = messages.next().await {
                let Ok(m) = m else {
                    LinkStats::add(&s.stats.nats_errors);
                    break;
                };
                let (delivered, age_ms) = delivery_info(&m);
                let tag = Arc::new(Tag::SharedQueued {
                    group: s.group.clone(),
                    filter: s.filter.clone(),
                    delivered,
                    age_ms,
                });
                if s.inbound.send((tag, m.message)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(QUEUE_RESTART_MS)).await;
        }
    };
    tokio::select! {
        () = read => {}
        ack = &mut stop => {
            if let Ok(ack) = ack {
                let _ = ack.send(());
            }
        }
    }
}

/// How often a queue message was handed out, and how long ago it was stored (ms).
fn delivery_info(m: &jetstream::Message) -> (i64, u64) {
    match m.info() {
        Ok(i) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128);
            let age = (now - i.published.unix_timestamp_nanos()) / 1_000_000;
            (i.delivered, u64::try_from(age).unwrap_or(0))
        }
        Err(_) => (1, 0),
    }
}

/// What to do when NATS refuses the buckets' replica count: a single server (no NATS
/// cluster) takes only 1 replica, and `cluster_kv_replicas` defaults to 3. The link keeps
/// retrying either way (the server may be joining a cluster); this names the cure.
fn replicas_hint(err: &str, replicas: usize) -> Option<String> {
    (replicas > 1 && err.contains("replicas > 1 not supported in non-clustered mode")).then(|| {
        format!(
            "the NATS server is not clustered, so it cannot keep {replicas} replicas of the \
             buckets: set `cluster_kv_replicas 1` for a single NATS server, or cluster three"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_behind_its_bucket_that_shows_nothing_new_is_stalled() {
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut lag = Lag::default();
        assert!(!lag.stalled(5, 5, at(0)), "caught up");
        assert!(!lag.stalled(7, 5, at(500)), "behind: first seen");
        assert!(!lag.stalled(7, 5, at(1500)), "not yet for long");
        assert!(
            lag.stalled(8, 5, at(500 + WATCH_STALL_MS)),
            "nothing new since"
        );
        // A slow watch that moves is left alone, and judged afresh from its new revision.
        let mut lag = Lag::default();
        assert!(!lag.stalled(100, 10, at(0)));
        assert!(!lag.stalled(100, 40, at(WATCH_STALL_MS)), "moving");
        assert!(!lag.stalled(100, 80, at(2 * WATCH_STALL_MS)), "moving");
        assert!(!lag.stalled(100, 100, at(3 * WATCH_STALL_MS)), "caught up");
        assert!(
            !lag.stalled(101, 100, at(4 * WATCH_STALL_MS)),
            "a new write: first seen"
        );
        assert!(
            !lag.stalled(101, 100, at(5 * WATCH_STALL_MS - 1)),
            "within the bound"
        );
        assert!(lag.stalled(101, 100, at(5 * WATCH_STALL_MS)));
    }

    #[test]
    fn a_single_nats_server_refusing_replicas_is_given_the_cure() {
        let refused = "JetStream error: replicas > 1 not supported in non-clustered mode";
        let hint = replicas_hint(refused, 3).expect("a hint for the refused replicas");
        assert!(hint.contains("cluster_kv_replicas 1"), "{hint}");
        assert!(hint.contains("3 replicas"), "{hint}");
        assert_eq!(replicas_hint(refused, 1), None);
        assert_eq!(replicas_hint("timed out", 3), None);
    }
}
