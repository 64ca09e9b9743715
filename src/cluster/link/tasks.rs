//! The link's JetStream tasks: the bucket opener, the registry workers, the retained
//! writer and the retained watcher.
//!
//! Owns: those tasks and their queues. Invariant: registry operations for one client id,
//! and retained writes, are applied in the order the node sent them; every wait on NATS is
//! bounded and every failure counted. Must not touch: the link loop's state (they report
//! only through `Out`).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use async_nats::{jetstream, Client};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};

use super::super::envelope;
use super::super::kv::{self, Buckets};
use super::super::subject::Prefix;
use super::super::{FromLink, LinkStats};
use super::{within, Out, FLUSH_WAIT_MS, PUBLISH_WAIT_MS};
use crate::config::cluster::ClusterConfig;

/// Registry workers: claims for different client ids run in parallel, claims for one
/// client id stay in order (they go to the worker its key hashes to).
const REGISTRY_WORKERS: usize = 4;
/// Capacity of each registry worker's queue and of the retained writer's queue.
const KV_QUEUE_MAX: usize = 4096;
/// Attempts to write one retained message (`KV_RETRY_MS` apart) before it is dropped.
const RETAINED_PUT_ATTEMPTS_MAX: usize = 20;
/// Pause between attempts to open the buckets while JetStream is unreachable.
const KV_RETRY_MS: u64 = 500;

/// A registry operation, queued to the worker of its client id.
pub(super) enum RegistryOp {
    Claim { client_id: String, token: u64 },
    Release { client_id: String },
}

/// The registry worker for a client id.
pub(super) fn worker(client_id: &str) -> usize {
    let h = client_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(h % REGISTRY_WORKERS as u64).unwrap_or(0)
}

/// Start the task that opens the buckets (retrying until JetStream answers) and then runs
/// the registry workers, the retained writer and the retained watcher. Returns their
/// queues, which fill (bounded) until the buckets are open.
pub(super) fn start_kv(
    cfg: &ClusterConfig,
    prefix: &Prefix,
    client: &Client,
    out: &Out,
    reconnected: Arc<Notify>,
) -> (Vec<mpsc::Sender<RegistryOp>>, mpsc::Sender<Bytes>) {
    let mut senders = Vec::with_capacity(REGISTRY_WORKERS);
    let mut receivers = Vec::with_capacity(REGISTRY_WORKERS);
    for _ in 0..REGISTRY_WORKERS {
        let (tx, rx) = mpsc::channel(KV_QUEUE_MAX);
        senders.push(tx);
        receivers.push(rx);
    }
    let (retained_tx, retained_rx) = mpsc::channel(KV_QUEUE_MAX);
    let ctx = KvCtx {
        node: cfg.node.clone(),
        prefix: prefix.clone(),
        client: client.clone(),
        out: out.clone(),
    };
    let (name, replicas) = (cfg.name.clone(), cfg.kv_replicas);
    tokio::spawn(async move {
        let js = jetstream::new(ctx.client.clone());
        let mut reported = false;
        let buckets = loop {
            match kv::open(&js, &name, replicas).await {
                Ok(b) => break b,
                Err(e) => {
                    if !reported {
                        eprintln!("cluster link: cannot open the JetStream buckets yet: {e}");
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
        tokio::spawn(retained_watcher(ctx, buckets, reconnected));
    });
    (senders, retained_tx)
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
                let reply = match kv::claim(&b.sessions, &ctx.node, &client_id).await {
                    Ok(previous) => {
                        if let Some(old) = &previous {
                            notify_takeover(&ctx, old, &client_id).await;
                        }
                        FromLink::Claimed {
                            token,
                            client_id,
                            previous,
                        }
                    }
                    Err(_) => {
                        LinkStats::add(&ctx.out.stats.nats_errors);
                        FromLink::ClaimFailed { token, client_id }
                    }
                };
                ctx.out.push_wake(reply);
            }
            RegistryOp::Release { client_id } => {
                let removed = kv::release(&b.sessions, &ctx.node, &client_id).await;
                if removed.is_err() {
                    LinkStats::add(&ctx.out.stats.nats_errors);
                }
                ctx.out.push_wake(FromLink::Released {
                    client_id,
                    removed: removed.unwrap_or(false),
                });
            }
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

/// Report the retained bucket: every topic's latest envelope, then each change. A watch
/// that ends, or any reconnection (its consumer may have lived on a server now gone), makes
/// it resume after the last revision seen, so no change is missed and none is reported
/// twice.
async fn retained_watcher(ctx: KvCtx, b: Buckets, reconnected: Arc<Notify>) {
    let mut last_revision = 0u64;
    loop {
        let watch = if last_revision == 0 {
            b.retained.watch_with_history(">").await
        } else {
            b.retained.watch_all_from_revision(last_revision + 1).await
        };
        match watch {
            Ok(mut w) => loop {
                tokio::select! {
                    entry = w.next() => {
                        let Some(Ok(entry)) = entry else { break };
                        last_revision = last_revision.max(entry.revision);
                        report_retained(&ctx, &entry.value);
                    }
                    _ = reconnected.notified() => break,
                }
            },
            Err(_) => LinkStats::add(&ctx.out.stats.nats_errors),
        }
        tokio::time::sleep(Duration::from_millis(KV_RETRY_MS)).await;
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
