//! `shardmq cluster-forget -c FILE NODE`: remove a node that will never return from the
//! cluster's NATS state (`docs/cluster.md`, "Removing a node for good").
//!
//! Owns: the liveness probe of a node, and the removal of the node's interest entries,
//! durable queue consumer and queue subject, and of the queues of share groups it had the
//! last members of (`groups`); for the command, the marks on the node's
//! heartbeat key (`forgetting`, then `forgotten`, as the automatic removal writes them,
//! `link::alive`), so that the node, if it was only cut off from NATS, learns it was
//! removed and joins again. Invariant: nothing is removed unless the probe got NATS's "no
//! responders" on both of the node's control subjects (no connection is subscribed to
//! them, so no link of that name is attached to NATS) and, when the node has a heartbeat
//! key, the key was marked `forgetting` on the revision read before the probe (a beat
//! since refuses); every NATS wait is bounded; running it again removes what is left and
//! reports zeros otherwise. Must not touch: the session registry and the subscriptions
//! bucket (left on purpose: a client of the node reconnecting elsewhere finds its
//! subscriptions through them), the retained bucket, the other nodes' entries; it never
//! creates a bucket or the stream.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::Stream};
use async_nats::{Client, RequestErrorKind};
use futures_util::StreamExt;

use super::link::{connect_options, Beat};
use super::subject::{valid_cluster_name, Prefix};
use super::{kv as buckets, queue};
use crate::config::cluster::ClusterConfig;

/// Longest wait for a connection to NATS.
const CONNECT_WAIT_MS: u64 = 10_000;
/// Longest wait for an answer to a liveness probe. A live node answers at once; a request
/// nobody is subscribed to is answered "no responders" by the server at once. Silence
/// means something is subscribed but did not answer (a node of an older version, a stuck
/// link): treated as alive.
const PROBE_WAIT_MS: u64 = 2000;
/// Longest wait for one JetStream request (stream or bucket lookup, delete, purge).
const JETSTREAM_WAIT_MS: u64 = 10_000;
/// Longest time spent listing the interest bucket's keys.
const KEYS_WAIT_MS: u64 = 60_000;
/// Keys of the interest bucket looked at, at most (every node's interests: 100,000 per
/// node at most, `link::INTERESTS_MAX`).
const KEYS_MAX: usize = 10_000_000;

/// The remover a node's heartbeat key names when this command removed the node
/// (`forgetting cluster-forget`, `forgotten cluster-forget`).
pub const COMMAND_REMOVER: &str = "cluster-forget";

/// What a run removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// Whether the node's heartbeat key was marked `forgotten` (false: it had none, or it
    /// said so already).
    pub heartbeat_marked: bool,
    /// The node's entries deleted from the interest bucket.
    pub interest_entries: usize,
    /// Whether the node's durable consumer existed and was deleted.
    pub consumer_deleted: bool,
    /// Messages purged from the node's queue subject.
    pub messages_purged: u64,
    /// Share group queues removed because the node had the last members of their group
    /// (`groups`; the command only).
    pub groups_removed: usize,
}

/// Why nothing (or not everything) was done.
#[derive(Debug)]
pub enum ForgetError {
    /// `NODE` is not a node name (1 to 32 of `A-Z a-z 0-9 _ -`).
    BadName(String),
    /// The node answered, or something is subscribed to its control subjects.
    Alive(String),
    /// NATS or JetStream failed; `done` is what had been removed before.
    Nats {
        /// What failed.
        what: String,
        /// What had been removed already.
        done: Forgotten,
    },
}

impl std::fmt::Display for ForgetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForgetError::BadName(n) => {
                write!(f, "'{n}' is not a node name (1 to 32 of A-Z a-z 0-9 _ -)")
            }
            ForgetError::Alive(why) => write!(f, "{why}; nothing was removed"),
            ForgetError::Nats { what, done } => write!(
                f,
                "{what} (removed before that: {} interest entries, consumer {}, {} messages, {} share group queues)",
                done.interest_entries,
                if done.consumer_deleted {
                    "deleted"
                } else {
                    "not deleted"
                },
                done.messages_purged,
                done.groups_removed
            ),
        }
    }
}

/// Remove node `node` of the cluster `cfg` names, connecting as that configuration does
/// (same URLs, TLS and credentials). Runs its own current-thread runtime.
pub fn forget(cfg: &ClusterConfig, node: &str) -> Result<Forgotten, ForgetError> {
    if !valid_cluster_name(node) {
        return Err(ForgetError::BadName(node.to_string()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| nats_error(format!("cannot build a runtime: {e}"), Forgotten::default()))?;
    rt.block_on(run(cfg, node))
}

fn nats_error(what: String, done: Forgotten) -> ForgetError {
    ForgetError::Nats { what, done }
}

async fn run(cfg: &ClusterConfig, node: &str) -> Result<Forgotten, ForgetError> {
    let prefix = Prefix::new(&cfg.name).map_err(|_| ForgetError::BadName(cfg.name.clone()))?;
    let client = connect(cfg).await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_millis(JETSTREAM_WAIT_MS));
    // Read before the probe: a beat after it makes the mark below fail.
    let key = heartbeat_key(&js, &cfg.name, node).await?;
    probe_node(&client, &prefix, node).await?;
    let marked = match &key {
        Some((store, revision)) => Some(mark_forgetting(store, node, *revision).await?),
        None => None,
    };
    let mut done = remove(&js, &cfg.name, &prefix, node, Queued::Purge).await?;
    if let (Some((store, _)), Some(revision)) = (&key, marked) {
        mark_forgotten(store, node, revision, &done).await?;
        done.heartbeat_marked = true;
    }
    // Best effort: everything above was acknowledged by JetStream already.
    let _ = tokio::time::timeout(Duration::from_millis(PROBE_WAIT_MS), client.drain()).await;
    Ok(done)
}

async fn connect(cfg: &ClusterConfig) -> Result<Client, ForgetError> {
    let fail = |e: String| nats_error(e, Forgotten::default());
    let (o, addrs) = connect_options(cfg, "shardmq cluster-forget")
        .await
        .map_err(|e| fail(format!("cannot configure the NATS client: {e}")))?;
    let o = o.max_reconnects(Some(3));
    match tokio::time::timeout(Duration::from_millis(CONNECT_WAIT_MS), o.connect(addrs)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(fail(format!("cannot connect to NATS: {e}"))),
        Err(_) => Err(fail(format!(
            "cannot connect to NATS within {CONNECT_WAIT_MS} ms"
        ))),
    }
}

/// What happens to the messages waiting in a removed node's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    /// Purged (the operator's command: the node will not return).
    Purge,
    /// Kept until the stream's limits drop them (the automatic removal: a session of the
    /// node that reconnects elsewhere still copies its messages from there, and the node,
    /// if it was only cut off, gets them when it is back).
    Keep,
}

/// Remove `node`'s NATS state, the caller having checked that it is dead: first its
/// interest entries (once the other nodes' watchers drop them they stop storing for it),
/// then its durable consumer and, with `Queued::Purge`, what its queue subject holds.
pub(super) async fn remove(
    js: &jetstream::Context,
    cluster: &str,
    prefix: &Prefix,
    node: &str,
    queued: Queued,
) -> Result<Forgotten, ForgetError> {
    let mut done = Forgotten::default();
    let (entries, shares) = delete_interest(js, cluster, node, &done).await?;
    done.interest_entries = entries;
    let queue_stream = lookup_stream(js, &queue::stream_name(cluster), &done).await?;
    if let Some(stream) = queue_stream {
        done.consumer_deleted = delete_consumer(&stream, node, &done).await?;
        if queued == Queued::Purge {
            done.messages_purged = purge(&stream, &prefix.queue(node), &done).await?;
        }
    }
    if queued == Queued::Purge {
        // The running nodes' sweeps would remove them too, after their grace; the command
        // does it at once, also with no node running.
        done.groups_removed = remove_groups(js, cluster, prefix, node, &shares, &done).await?;
    }
    Ok(done)
}

/// Remove the queues of the share groups among `shares` (`$share/G/F` filters the node had
/// members on) that no node has members of any more; how many were removed.
async fn remove_groups(
    js: &jetstream::Context,
    cluster: &str,
    prefix: &Prefix,
    node: &str,
    shares: &[String],
    done: &Forgotten,
) -> Result<usize, ForgetError> {
    let claims = super::groups::claims(js, cluster).await;
    let me = format!("cluster-forget of {node}");
    let mut removed = 0;
    for share in shares {
        let Some(qname) = super::groups::group_of(share) else {
            continue;
        };
        let removal = super::groups::remove(js, cluster, prefix, &qname, claims.as_ref(), &me);
        match removal.await {
            Ok(super::groups::Outcome::Removed { .. }) => removed += 1,
            Ok(_) => {}
            Err(what) => {
                let done = Forgotten {
                    groups_removed: removed,
                    ..done.clone()
                };
                return Err(nats_error(what, done));
            }
        }
    }
    Ok(removed)
}

/// `node`'s heartbeat key to mark: the bucket and the revision read, or `None` when there
/// is nothing to mark (no bucket, no key: the node never beat; or it says `forgotten`).
async fn heartbeat_key(
    js: &jetstream::Context,
    cluster: &str,
    node: &str,
) -> Result<Option<(kv::Store, u64)>, ForgetError> {
    let none = Forgotten::default();
    let bucket = buckets::nodes_bucket_name(cluster);
    if lookup_stream(js, &format!("KV_{bucket}"), &none)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let fail = |e: String| nats_error(e, Forgotten::default());
    let store: kv::Store = js
        .get_key_value(bucket.as_str())
        .await
        .map_err(|e| fail(format!("cannot open bucket {bucket}: {e}")))?;
    let wait = Duration::from_millis(JETSTREAM_WAIT_MS);
    let entry = match tokio::time::timeout(wait, store.entry(node)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Err(fail(format!("cannot read {node} in bucket {bucket}: {e}"))),
        Err(_) => return Err(fail(format!("reading {node} in bucket {bucket} timed out"))),
    };
    let Some(e) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(None);
    };
    if matches!(Beat::parse(&e.value), Some(Beat::Forgotten { .. })) {
        return Ok(None);
    }
    Ok(Some((store, e.revision)))
}

/// Mark `node`'s heartbeat key `forgetting` on `revision`, the one read before the probe;
/// the new revision. A change since (the node beat: it is back) refuses the removal.
async fn mark_forgetting(store: &kv::Store, node: &str, revision: u64) -> Result<u64, ForgetError> {
    let mark = Beat::Forgetting {
        by: COMMAND_REMOVER.to_string(),
    };
    let wait = Duration::from_millis(JETSTREAM_WAIT_MS);
    match tokio::time::timeout(wait, store.update(node, mark.encode(), revision)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            Err(ForgetError::Alive(format!(
                "node {node}'s heartbeat key changed while it was being checked (the node beat, \
                 or another node is removing it); run the command again"
            )))
        }
        Ok(Err(e)) => Err(nats_error(
            format!("cannot mark the heartbeat key of {node}: {e}"),
            Forgotten::default(),
        )),
        Err(_) => Err(nats_error(
            format!("marking the heartbeat key of {node} timed out"),
            Forgotten::default(),
        )),
    }
}

/// Mark `node`'s heartbeat key `forgotten` (from `forgetting`, at `revision`): the node,
/// if it is only cut off, joins again when it is back (`link::alive`).
async fn mark_forgotten(
    store: &kv::Store,
    node: &str,
    revision: u64,
    done: &Forgotten,
) -> Result<(), ForgetError> {
    let mark = Beat::Forgotten {
        by: COMMAND_REMOVER.to_string(),
    };
    let wait = Duration::from_millis(JETSTREAM_WAIT_MS);
    match tokio::time::timeout(wait, store.update(node, mark.encode(), revision)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(nats_error(
            format!(
                "cannot mark the heartbeat key of {node} forgotten (it stays 'forgetting': \
                 the node, if it comes back, joins again after {} s)",
                super::link::REMOVAL_WAIT_MS / 1000
            ),
            done.clone(),
        )),
    }
}

/// Both control subjects of `node` probed: `Ok` only if nobody is subscribed to either.
pub(super) async fn probe_node(
    client: &Client,
    prefix: &Prefix,
    node: &str,
) -> Result<(), ForgetError> {
    for what in ["takeover", "state"] {
        probe(client, &prefix.control(&format!("{what}.{node}")), node).await?;
    }
    Ok(())
}

/// Refuse unless NATS says nobody is subscribed to `subject` (a node's control subject).
async fn probe(client: &Client, subject: &str, node: &str) -> Result<(), ForgetError> {
    let request = async_nats::Request::new()
        .payload(bytes::Bytes::new())
        .timeout(Some(Duration::from_millis(PROBE_WAIT_MS)));
    match client.send_request(subject.to_string(), request).await {
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Ok(reply) => Err(ForgetError::Alive(format!(
            "node {node} is alive: it answered on {subject} ('{}'); stop it first",
            String::from_utf8_lossy(&reply.payload)
        ))),
        Err(e) if e.kind() == RequestErrorKind::TimedOut => Err(ForgetError::Alive(format!(
            "something is subscribed to {subject} but did not answer within {PROBE_WAIT_MS} \
             ms: node {node} may be alive; stop it first"
        ))),
        Err(e) => Err(ForgetError::Alive(format!(
            "cannot tell whether node {node} is alive ({subject}: {e})"
        ))),
    }
}

/// The stream `name`, or `None` if it does not exist (the cluster never made it).
async fn lookup_stream(
    js: &jetstream::Context,
    name: &str,
    done: &Forgotten,
) -> Result<Option<Stream>, ForgetError> {
    super::groups::lookup(js, name)
        .await
        .map_err(|what| nats_error(what, done.clone()))
}

/// Delete every key `<node>.…` of the interest bucket; how many there were, and the share
/// filters (`$share/G/F`) among their values.
async fn delete_interest(
    js: &jetstream::Context,
    cluster: &str,
    node: &str,
    done: &Forgotten,
) -> Result<(usize, Vec<String>), ForgetError> {
    let [_, _, bucket, _] = buckets::bucket_names(cluster);
    if lookup_stream(js, &format!("KV_{bucket}"), done)
        .await?
        .is_none()
    {
        return Ok((0, Vec::new()));
    }
    let fail = |e: String| nats_error(e, done.clone());
    let store: kv::Store = js
        .get_key_value(bucket.as_str())
        .await
        .map_err(|e| fail(format!("cannot open bucket {bucket}: {e}")))?;
    let mine = format!("{node}.");
    let listed = async {
        let mut keys = store.keys().await?.take(KEYS_MAX);
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k?;
            if k.starts_with(&mine) {
                out.push(k);
            }
        }
        Ok::<_, async_nats::Error>(out)
    };
    let keys = match tokio::time::timeout(Duration::from_millis(KEYS_WAIT_MS), listed).await {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => return Err(fail(format!("cannot list bucket {bucket}: {e}"))),
        Err(_) => {
            return Err(fail(format!(
                "listing bucket {bucket} took more than {KEYS_WAIT_MS} ms"
            )))
        }
    };
    let mut shares = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let value = tokio::time::timeout(
            Duration::from_millis(JETSTREAM_WAIT_MS),
            store.get(key.as_str()),
        )
        .await;
        if let Ok(Ok(Some(v))) = value {
            if let Some((_, filter)) = queue::parse_interest(&v) {
                if filter.starts_with("$share/") {
                    shares.push(filter.to_string());
                }
            }
        }
        let deleted = tokio::time::timeout(
            Duration::from_millis(JETSTREAM_WAIT_MS),
            store.delete(key.as_str()),
        )
        .await;
        if !matches!(deleted, Ok(Ok(()))) {
            let done = Forgotten {
                interest_entries: i,
                ..done.clone()
            };
            return Err(nats_error(
                format!("cannot delete {key} from bucket {bucket}"),
                done,
            ));
        }
    }
    Ok((keys.len(), shares))
}

/// Delete the node's durable consumer; `false` if there was none.
async fn delete_consumer(
    stream: &Stream,
    node: &str,
    done: &Forgotten,
) -> Result<bool, ForgetError> {
    match stream.delete_consumer(node).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            jetstream::stream::ConsumerErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(nats_error(
                format!("cannot delete consumer {node}: {e}"),
                done.clone(),
            )),
        },
    }
}

/// Purge `subject` (the node's queue) from the stream; how many messages went.
async fn purge(stream: &Stream, subject: &str, done: &Forgotten) -> Result<u64, ForgetError> {
    match stream.purge().filter(subject).await {
        Ok(r) => Ok(r.purged),
        Err(e) => Err(nats_error(
            format!("cannot purge {subject}: {e}"),
            done.clone(),
        )),
    }
}
