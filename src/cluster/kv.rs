//! The JetStream key-value buckets of a cluster: the session registry and retained messages.
//!
//! Owns: bucket names and configuration, key derivation, and the compare-and-set loop that
//! makes one node the owner of a client id. Invariant: a registry entry changes only by
//! revision-checked writes (create, update or delete with the expected revision), so two
//! nodes claiming the same client id at once both learn who won; keys are fixed-length
//! hashes, so any client id or topic has a key within NATS's key rules. Must not touch:
//! subscriptions, the link's queues (it returns values; `link` reports them).
#![forbid(unsafe_code)]

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Compare-and-set attempts before a claim is reported as failed: each failure means
/// another node wrote the same key in between, so this only runs out under a storm.
const CLAIM_ATTEMPTS_MAX: usize = 8;
/// JetStream's duplicate window for KV streams, as the NATS clients set it.
const KV_DUPLICATE_WINDOW_S: u64 = 120;
/// Largest registry value read back (node name, newline, client id).
const REGISTRY_VALUE_BYTES_MAX: usize = 64 * 1024 + 64;

/// The two buckets of one cluster.
#[derive(Clone)]
pub struct Buckets {
    /// client id → owning node.
    pub sessions: kv::Store,
    /// topic → retained envelope.
    pub retained: kv::Store,
    /// `<node>.<hash of filter>` → node and filter: every node's plain interest, for the
    /// durable hop of QoS 1/2 messages (`queue`).
    pub interest: kv::Store,
    /// client id → the subscriptions of its persistent session (`handover` encoding),
    /// written by the owning node on each change: what a new owner takes when the old
    /// node does not answer the handover.
    pub subs: kv::Store,
}

/// The bucket names of cluster `name`: `smq_<name>_sessions`, `smq_<name>_retained`,
/// `smq_<name>_interest`, `smq_<name>_subs`.
pub fn bucket_names(name: &str) -> [String; 4] {
    [
        format!("smq_{name}_sessions"),
        format!("smq_{name}_retained"),
        format!("smq_{name}_interest"),
        format!("smq_{name}_subs"),
    ]
}

/// The heartbeat bucket of cluster `name`: `smq_<name>_nodes` (node name → its heartbeat,
/// `link::alive`).
pub fn nodes_bucket_name(name: &str) -> String {
    format!("smq_{name}_nodes")
}

/// The share-group removal bucket of cluster `name`: `smq_<name>_groups` (a group's queue
/// name → `removing <node>` while that node removes the group's queue, `groups`).
pub fn groups_bucket_name(name: &str) -> String {
    format!("smq_{name}_groups")
}

/// How long a key of the share-group removal bucket lives at most (a claim left by a
/// node that died while removing goes with it; `groups::CLAIM_STALE` takes it over
/// sooner).
const GROUPS_KEY_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// Open the share-group removal bucket, creating it as the others (its keys expire after
/// `GROUPS_KEY_AGE_MAX`) if absent.
pub async fn open_groups(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    open_with(js, groups_bucket_name(name), replicas, GROUPS_KEY_AGE_MAX).await
}

/// Open the heartbeat bucket, creating it as the others if absent.
pub async fn open_nodes(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    open_one(js, nodes_bucket_name(name), replicas).await
}

/// Open the buckets, creating them (history 1, file storage, `replicas`) if absent.
pub async fn open(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<Buckets, async_nats::Error> {
    let [sessions, retained, interest, subs] = bucket_names(name);
    Ok(Buckets {
        sessions: open_one(js, sessions, replicas).await?,
        retained: open_one(js, retained, replicas).await?,
        interest: open_one(js, interest, replicas).await?,
        subs: open_one(js, subs, replicas).await?,
    })
}

async fn open_one(
    js: &jetstream::Context,
    bucket: String,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    open_with(js, bucket, replicas, std::time::Duration::ZERO).await
}

/// `open_one` with keys that expire after `max_age` (zero: never).
async fn open_with(
    js: &jetstream::Context,
    bucket: String,
    replicas: usize,
    max_age: std::time::Duration,
) -> Result<kv::Store, async_nats::Error> {
    if let Ok(store) = js.get_key_value(bucket.as_str()).await {
        return Ok(store);
    }
    // The stream a KV bucket is, created directly: `create_key_value` first reads the
    // account information, whose 2.9 form async-nats 0.46 no longer parses.
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: std::time::Duration::from_secs(KV_DUPLICATE_WINDOW_S),
        max_age,
        ..Default::default()
    };
    js.get_or_create_stream(config).await?;
    Ok(js.get_key_value(bucket).await?)
}

/// The key of `text` (a client id or a topic): 32 hex digits of its SHA-256.
pub fn key(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn registry_value(node: &str, client_id: &str) -> Bytes {
    Bytes::from(format!("{node}\n{client_id}"))
}

/// The node a registry value names, if it is well formed.
fn owner(value: &[u8]) -> Option<&str> {
    if value.len() > REGISTRY_VALUE_BYTES_MAX {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    text.split_once('\n').map(|(node, _)| node)
}

/// Why a claim failed.
#[derive(Debug)]
pub enum ClaimError {
    /// NATS or JetStream refused or did not answer.
    Nats(async_nats::Error),
    /// Every compare-and-set lost to another writer.
    Contended,
}

/// Make `node` the owner of `client_id`. Returns the previous owner (`None` if there was
/// none; `Some(node)` if it was this node already).
pub async fn claim(
    sessions: &kv::Store,
    node: &str,
    client_id: &str,
) -> Result<Option<String>, ClaimError> {
    let k = key(client_id);
    let value = registry_value(node, client_id);
    for _ in 0..CLAIM_ATTEMPTS_MAX {
        let entry = sessions
            .entry(k.as_str())
            .await
            .map_err(|e| ClaimError::Nats(e.into()))?;
        let (written, previous) = match entry {
            None => (
                sessions.create(k.as_str(), value.clone()).await.is_ok(),
                None,
            ),
            Some(e) => {
                let previous = match e.operation {
                    kv::Operation::Put => owner(&e.value).map(str::to_string),
                    _ => None,
                };
                let ok = sessions
                    .update(k.as_str(), value.clone(), e.revision)
                    .await
                    .is_ok();
                (ok, previous)
            }
        };
        if written {
            return Ok(previous);
        }
    }
    Err(ClaimError::Contended)
}

/// Remove `client_id`'s entry if it still names `node`; `Ok(false)` if another node owns
/// it (or nobody does), which leaves it untouched.
pub async fn release(
    sessions: &kv::Store,
    node: &str,
    client_id: &str,
) -> Result<bool, async_nats::Error> {
    let k = key(client_id);
    let Some(e) = sessions.entry(k.as_str()).await? else {
        return Ok(false);
    };
    if e.operation != kv::Operation::Put || owner(&e.value) != Some(node) {
        return Ok(false);
    }
    sessions
        .delete_expect_revision(k.as_str(), Some(e.revision))
        .await?;
    Ok(true)
}

/// The node the registry names for `client_id`, if any.
pub async fn owner_of(
    sessions: &kv::Store,
    client_id: &str,
) -> Result<Option<String>, async_nats::Error> {
    let value = sessions.get(key(client_id)).await?;
    Ok(value.and_then(|v| owner(&v).map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_length_hex_whatever_the_text() {
        for text in ["", "a", "é/.*>", &"x".repeat(70_000)] {
            let k = key(text);
            assert_eq!(k.len(), 32);
            assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(key("a"), key("b"));
    }

    #[test]
    fn registry_values_name_their_node() {
        assert_eq!(owner(&registry_value("n1", "client\n1")), Some("n1"));
        assert_eq!(owner(b"no newline"), None);
        assert_eq!(owner(&[0xFF, b'\n']), None);
        assert_eq!(bucket_names("c")[0], "smq_c_sessions");
    }
}
