//! The durable hop for QoS 1/2 messages between nodes (`docs/cluster.md`, "QoS 1/2
//! between nodes"): every node's plain interest is replicated in a JetStream bucket, and a
//! QoS ≥ 1 message some other node wants is stored in one JetStream stream under that
//! node's subject `smq.<cluster>.q.<node>` before its publisher is acknowledged; each node
//! reads its subject through one durable consumer and acknowledges a message only once it
//! is handed to its shards (and durable in its own log, with persistence on).
//!
//! Owns: the names (stream, consumer, interest keys), the stream and consumer
//! configuration, the interest view (which other nodes want a topic) and the header that
//! tells a node to ignore the core NATS copy of a message it gets from the stream.
//! Invariant: the view names only *other* nodes, each at most once per topic; it changes
//! only through `insert`/`remove` of bucket entries, so it converges on the bucket. Must
//! not touch: the NATS client (the link's tasks drive it), the node's queues.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use super::subject::Prefix;
use crate::topic::trie::FilterTrie;

/// Header of a core NATS copy of a QoS ≥ 1 message: the nodes that got it from the stream
/// (comma-separated); they ignore the core copy.
pub const QUEUED_HEADER: &str = "Smq-Queued";
/// Header naming the message before this one on its topic meant for the receiving node
/// (`docs/cluster.md`, *Order*). On a store: that message's sequence number (its origin's
/// envelope numbering). On a core NATS copy: `<node>=<seq>` for each node whose store it
/// missed (comma-separated; seq 0: none), which take that copy as part of their chain.
pub const PREV_HEADER: &str = "Smq-Prev";
/// Messages kept per node subject while the node does not read them (a node down for
/// good); past it the oldest go (`docs/cluster.md`).
pub const QUEUE_MESSAGES_PER_NODE_MAX: i64 = 1_000_000;
/// How long a message waits in the stream for its node at most.
pub const QUEUE_AGE_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Messages a node's consumer hands out without their acknowledgement: also the most
/// messages a node can receive twice after it crashed.
pub const QUEUE_ACK_PENDING_MAX: i64 = 4096;
/// How long a handed-out message waits for its acknowledgement before it comes again.
pub const QUEUE_ACK_WAIT: Duration = Duration::from_secs(30);
/// JetStream's duplicate window (a publish retried with the same id is stored once).
pub const QUEUE_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The stream of cluster `name`: `SMQ_<name>_QUEUE`.
pub fn stream_name(name: &str) -> String {
    format!("SMQ_{name}_QUEUE")
}

/// The configuration of the queue stream: every node's subject, work-queue retention (a
/// message goes once its node acknowledged it), file storage, `replicas`.
pub fn stream_config(name: &str, prefix: &Prefix, replicas: usize) -> stream::Config {
    stream::Config {
        name: stream_name(name),
        subjects: vec![prefix.queue("*")],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::Old,
        max_messages_per_subject: QUEUE_MESSAGES_PER_NODE_MAX,
        max_age: QUEUE_AGE_MAX,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        duplicate_window: QUEUE_DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// The durable consumer of node `node`: its subject only, explicit acknowledgements.
pub fn consumer_config(prefix: &Prefix, node: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(node.to_string()),
        filter_subject: prefix.queue(node),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: QUEUE_ACK_WAIT,
        max_ack_pending: QUEUE_ACK_PENDING_MAX,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// The interest bucket's key of `filter` on node `node`: `<node>.<hash>`.
pub fn interest_key(node: &str, filter: &str) -> String {
    format!("{node}.{}", super::kv::key(filter))
}

/// The interest bucket's value of `filter` on node `node`.
pub fn interest_value(node: &str, filter: &str) -> Vec<u8> {
    format!("{node}\n{filter}").into_bytes()
}

/// (node, filter) of an interest value, if well formed.
pub fn parse_interest(value: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(value).ok()?;
    let (node, filter) = text.split_once('\n')?;
    (super::subject::valid_cluster_name(node) && crate::topic::valid_filter(filter))
        .then_some((node, filter))
}

/// The id a receiving node logs for a QoS 2 message of its queue whose JetStream message
/// id is `msg_id` (`Nats-Msg-Id`): the first 128 bits of its SHA-256.
pub fn received_id(msg_id: &[u8]) -> u128 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(msg_id);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// The value of [`PREV_HEADER`] on a core copy: `node=seq` per missed node.
pub fn prev_list(missed: &[(Arc<str>, u64)]) -> String {
    let parts: Vec<String> = missed.iter().map(|(n, s)| format!("{n}={s}")).collect();
    parts.join(",")
}

/// What the [`PREV_HEADER`] value `list` of a core copy says to `node`: `None` when it does
/// not name it (the copy is not part of its chain), else the predecessor to wait for
/// (`Some(None)`: none). A malformed number counts as none.
pub fn prev_in_list(list: &str, node: &str) -> Option<Option<u64>> {
    let (_, seq) = list
        .split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| *n == node)?;
    Some(seq.parse::<u64>().ok().filter(|&s| s != 0))
}

/// Whether the header value `list` (of [`QUEUED_HEADER`]) names `node`.
pub fn names(list: &str, node: &str) -> bool {
    list.split(',').any(|n| n == node)
}

/// Which other nodes want which filters, as the interest bucket says.
#[derive(Default)]
pub struct InterestView {
    me: Arc<str>,
    by_key: HashMap<String, (Arc<str>, Box<str>)>,
    trie: FilterTrie<Vec<Arc<str>>>,
}

impl InterestView {
    /// An empty view for node `me` (whose own entries are left out).
    pub fn new(me: &str) -> InterestView {
        InterestView {
            me: me.into(),
            ..Default::default()
        }
    }

    /// Bucket entry `key` says `node` wants `filter`.
    pub fn insert(&mut self, key: &str, node: &str, filter: &str) {
        if node == &*self.me || self.by_key.contains_key(key) {
            return;
        }
        let node: Arc<str> = node.into();
        let nodes = self.trie.entry_or_insert_with(filter, Vec::new);
        if !nodes.contains(&node) {
            nodes.push(node.clone());
        }
        self.by_key.insert(key.to_string(), (node, filter.into()));
    }

    /// Bucket entry `key` was deleted.
    pub fn remove(&mut self, key: &str) {
        let Some((node, filter)) = self.by_key.remove(key) else {
            return;
        };
        let empty = match self.trie.get_mut(&filter) {
            Some(nodes) => {
                nodes.retain(|n| *n != node);
                nodes.is_empty()
            }
            None => false,
        };
        if empty {
            self.trie.remove(&filter);
        }
    }

    /// The other nodes with a filter matching `topic`, each once.
    pub fn nodes(&self, topic: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        self.trie.for_each_match(topic, |nodes| {
            for n in nodes {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        });
        out
    }

    /// Entries held (for tests and figures).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no other node wants anything.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_names_other_nodes_once_and_forgets_deleted_entries() {
        let mut v = InterestView::new("a");
        for (node, filter) in [("b", "x/+"), ("b", "x/#"), ("c", "x/y"), ("a", "x/y")] {
            v.insert(&interest_key(node, filter), node, filter);
        }
        let mut got: Vec<String> = v.nodes("x/y").iter().map(|n| n.to_string()).collect();
        got.sort();
        assert_eq!(
            got,
            ["b", "c"],
            "b once despite two filters; never a itself"
        );
        assert!(v.nodes("$x/y").is_empty());
        v.remove(&interest_key("b", "x/+"));
        assert_eq!(v.nodes("x/z").len(), 1, "x/# still there");
        v.remove(&interest_key("b", "x/#"));
        v.remove(&interest_key("b", "x/#"));
        assert!(v.nodes("x/z").is_empty());
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn interest_values_and_headers() {
        let val = interest_value("n-1", "a/+/#");
        assert_eq!(parse_interest(&val), Some(("n-1", "a/+/#")));
        assert_eq!(parse_interest(b"n.1\na"), None, "not a node name");
        assert_eq!(parse_interest(b"n\na/#/b"), None, "not a filter");
        assert!(names("a,bb,c", "bb"));
        assert!(!names("a,bb,c", "b"));
        assert!(interest_key("n", "f").starts_with("n."));
        let list = prev_list(&[("b".into(), 12), ("cc".into(), 0)]);
        assert_eq!(list, "b=12,cc=0");
        assert_eq!(prev_in_list(&list, "b"), Some(Some(12)));
        assert_eq!(prev_in_list(&list, "cc"), Some(None), "first of its chain");
        assert_eq!(prev_in_list(&list, "c"), None, "not named");
        assert_eq!(prev_in_list("b=x", "b"), Some(None));
    }
}
