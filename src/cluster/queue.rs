//! The durable hop for QoS 1/2 messages between nodes (`docs/cluster.md`, "QoS 1/2
//! between nodes"): every node's plain interest is replicated in a JetStream bucket, and a
//! QoS ≥ 1 message some other node wants is stored in one JetStream stream under that
//! node's subject `smq.<cluster>.q.<node>` before its publisher is acknowledged; each node
//! reads its subject through one durable consumer and acknowledges a message only once it
//! is handed to its shards (and durable in its own log, with persistence on).
//!
//! Shared subscriptions take the same path through a second stream (`docs/cluster.md`,
//! "Shared subscriptions at QoS 1/2"; `docs/decisions/0015-cluster-shared-durable.md`):
//! a node with members of `$share/G/F` writes `$share/G/F` to the interest bucket, a QoS ≥
//! 1 message matching `F` is stored once per such group under the group's subject
//! `smq.<cluster>.g.<qname>`, and every node with members pulls from the group's one
//! durable consumer, so JetStream hands each message to one node and, if that node dies
//! before it acknowledged it, to another after the ack wait.
//!
//! Owns: the names (streams, consumers, interest keys), the streams' and consumers'
//! configuration, the interest view (which other nodes want a topic, which share groups
//! have members anywhere) and the headers that tell a node to ignore the core NATS copy
//! of a message it gets from a stream. Invariant: the view names only *other* nodes for
//! plain filters, each at most once per topic, and each share group (this node's
//! included) at most once per topic; it changes only through `insert`/`remove` of bucket
//! entries, so it converges on the bucket. Must not touch: the NATS client (the link's
//! tasks drive it), the node's queues.
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
/// Header of a core NATS copy of a QoS ≥ 1 message: the share groups (`queue_group`
/// names, comma-separated) whose group queue got it; the node NATS picks for such a group
/// ignores the core copy.
pub const SHARED_HEADER: &str = "Smq-Shared";
/// How long a share group's handed-out message waits for its acknowledgement before
/// JetStream hands it to a node again (possibly another): the time a message of a member
/// node that died stays with it. Shorter than a node's own queue (`QUEUE_ACK_WAIT`),
/// whose messages have nowhere else to go.
pub const SHARED_ACK_WAIT: Duration = Duration::from_secs(10);
/// Messages of one share group a node may hold unacknowledged: what it can take before
/// dying, to be handed to another node after `SHARED_ACK_WAIT`.
pub const SHARED_ACK_PENDING_MAX: i64 = 1024;
/// A message returned by a node with no online member of its group comes again after
/// this long (to any node of the group), so a node without members does not spin on it.
pub const SHARED_RETURN_DELAY: Duration = Duration::from_secs(1);
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

/// The stream of the share groups of cluster `name`: `SMQ_<name>_SHARED`.
pub fn shared_stream_name(name: &str) -> String {
    format!("SMQ_{name}_SHARED")
}

/// The configuration of the share groups' stream: one subject per group, otherwise as
/// the node queues' stream (work-queue retention: a message goes once one node
/// acknowledged it).
pub fn shared_stream_config(name: &str, prefix: &Prefix, replicas: usize) -> stream::Config {
    stream::Config {
        name: shared_stream_name(name),
        subjects: vec![prefix.shared("*")],
        ..stream_config(name, prefix, replicas)
    }
}

/// The durable consumer of share group queue `qname` (`subject::queue_group`), shared by
/// every node with members: its subject only, explicit acknowledgements. Its description is
/// the group's filter `share` (`$share/G/F`), by which a node that finds no member of the
/// group anywhere checks the interest bucket before removing it (`groups`).
pub fn shared_consumer_config(prefix: &Prefix, qname: &str, share: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(qname.to_string()),
        description: Some(share.to_string()),
        filter_subject: prefix.shared(qname),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: SHARED_ACK_WAIT,
        max_ack_pending: SHARED_ACK_PENDING_MAX,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// Whether a release-list target is a share group's queue name (`q` and 32 hex digits,
/// longer than any node name) rather than a node.
pub fn is_group(target: &str) -> bool {
    target.len() == 33 && target.starts_with('q')
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

/// One share group's entry in the view: its queue name and the nodes with members.
struct GroupNodes {
    qname: Arc<str>,
    /// `$share/G/F`.
    share: Box<str>,
    nodes: Vec<Arc<str>>,
}

/// What one bucket entry put in the view.
enum Held {
    /// A plain filter of another node.
    Plain(Arc<str>, Box<str>),
    /// Members of a share group (queue name) on a node, for a filter.
    Shared(Arc<str>, Box<str>, Arc<str>),
}

/// Which other nodes want which filters, and which share groups have members on some
/// node, as the interest bucket says.
#[derive(Default)]
pub struct InterestView {
    me: Arc<str>,
    by_key: HashMap<String, Held>,
    trie: FilterTrie<Vec<Arc<str>>>,
    /// Inner filter → its groups with members somewhere (this node included).
    shared: FilterTrie<Vec<GroupNodes>>,
    /// Queue name → entries of members of that group (any node).
    members: HashMap<Arc<str>, usize>,
    /// The whole bucket was loaded once (`set_loaded`).
    loaded: bool,
    /// Share groups whose members on other nodes than this one came or went, in order
    /// (`take_remote_changes`): (`$share/G/F`, has some now).
    remote_changes: Vec<(String, bool)>,
}

impl InterestView {
    /// An empty view for node `me` (whose own plain entries are left out).
    pub fn new(me: &str) -> InterestView {
        InterestView {
            me: me.into(),
            ..Default::default()
        }
    }

    /// Bucket entry `key` says `node` wants `filter` (`$share/G/F`: has members of G on F).
    pub fn insert(&mut self, key: &str, node: &str, filter: &str) {
        if self.by_key.contains_key(key) {
            return;
        }
        if let Ok(crate::topic::FilterKind::Shared(sh)) = crate::topic::parse_filter(filter) {
            return self.insert_shared(key, node, filter, sh.group, sh.filter);
        }
        if node == &*self.me {
            return;
        }
        let node: Arc<str> = node.into();
        let nodes = self.trie.entry_or_insert_with(filter, Vec::new);
        if !nodes.contains(&node) {
            nodes.push(node.clone());
        }
        self.by_key
            .insert(key.to_string(), Held::Plain(node, filter.into()));
    }

    fn insert_shared(&mut self, key: &str, node: &str, share: &str, group: &str, filter: &str) {
        let node: Arc<str> = node.into();
        let qname: Arc<str> = super::subject::queue_group(group, filter).into();
        let me = self.me.clone();
        let groups = self.shared.entry_or_insert_with(filter, Vec::new);
        let remote_before = match groups.iter_mut().find(|g| g.qname == qname) {
            Some(g) => {
                let before = g.nodes.iter().any(|n| *n != me);
                if !g.nodes.contains(&node) {
                    g.nodes.push(node.clone());
                }
                before
            }
            None => {
                groups.push(GroupNodes {
                    qname: qname.clone(),
                    share: share.into(),
                    nodes: vec![node.clone()],
                });
                false
            }
        };
        if !remote_before && node != me {
            self.remote_changes.push((share.to_string(), true));
        }
        *self.members.entry(qname.clone()).or_insert(0) += 1;
        self.by_key
            .insert(key.to_string(), Held::Shared(node, filter.into(), qname));
    }

    /// Bucket entry `key` was deleted.
    pub fn remove(&mut self, key: &str) {
        match self.by_key.remove(key) {
            Some(Held::Plain(node, filter)) => {
                let empty = self.trie.get_mut(&filter).is_some_and(|nodes| {
                    nodes.retain(|n| *n != node);
                    nodes.is_empty()
                });
                if empty {
                    self.trie.remove(&filter);
                }
            }
            Some(Held::Shared(node, filter, qname)) => {
                if let Some(n) = self.members.get_mut(&qname) {
                    *n -= 1;
                    if *n == 0 {
                        self.members.remove(&qname);
                    }
                }
                let me = self.me.clone();
                let changes = &mut self.remote_changes;
                let empty = self.shared.get_mut(&filter).is_some_and(|groups| {
                    for g in groups.iter_mut().filter(|g| g.qname == qname) {
                        let before = g.nodes.iter().any(|n| *n != me);
                        g.nodes.retain(|n| *n != node);
                        if before && !g.nodes.iter().any(|n| *n != me) {
                            changes.push((g.share.to_string(), false));
                        }
                    }
                    groups.retain(|g| !g.nodes.is_empty());
                    groups.is_empty()
                });
                if empty {
                    self.shared.remove(&filter);
                }
            }
            None => {}
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

    /// The share groups (queue names) with members on some node, this one included, whose
    /// filter matches `topic`, each once.
    pub fn groups(&self, topic: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        self.shared.for_each_match(topic, |groups| {
            for g in groups {
                if !out.contains(&g.qname) {
                    out.push(g.qname.clone());
                }
            }
        });
        out
    }

    /// The share groups whose members on other nodes came (true) or all went (false)
    /// since the last call, in order.
    pub fn take_remote_changes(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.remote_changes)
    }

    /// Whether some node has members of share group queue `qname`.
    pub fn has_group(&self, qname: &str) -> bool {
        self.members.contains_key(qname)
    }

    /// The view holds the whole bucket (its watcher caught up once).
    pub fn set_loaded(&mut self) {
        self.loaded = true;
    }

    /// Whether the view held the whole bucket once.
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// Entries held (for tests and figures).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is wanted anywhere.
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
        let val = interest_value("n-1", "$share/g/a/#");
        assert_eq!(parse_interest(&val), Some(("n-1", "$share/g/a/#")));
        let list = prev_list(&[("b".into(), 12), ("cc".into(), 0)]);
        assert_eq!(list, "b=12,cc=0");
        assert_eq!(prev_in_list(&list, "b"), Some(Some(12)));
        assert_eq!(prev_in_list(&list, "cc"), Some(None), "first of its chain");
        assert_eq!(prev_in_list(&list, "c"), None, "not named");
        assert_eq!(prev_in_list("b=x", "b"), Some(None));
    }

    #[test]
    fn the_view_names_each_share_group_once_with_this_nodes_own() {
        let mut v = InterestView::new("a");
        for (node, filter) in [
            ("a", "$share/g/x/#"),
            ("b", "$share/g/x/#"),
            ("b", "$share/h/x/+"),
            ("c", "x/y"),
        ] {
            v.insert(&interest_key(node, filter), node, filter);
        }
        let g = crate::cluster::subject::queue_group("g", "x/#");
        let h = crate::cluster::subject::queue_group("h", "x/+");
        let mut got: Vec<String> = v.groups("x/y").iter().map(|q| q.to_string()).collect();
        got.sort();
        let mut want = vec![g.clone(), h.clone()];
        want.sort();
        assert_eq!(got, want, "g once for two nodes, a's own members count");
        assert!(is_group(&g) && !is_group("a"));
        assert_eq!(
            v.nodes("x/y").len(),
            1,
            "share entries are no plain interest"
        );
        v.remove(&interest_key("b", "$share/g/x/#"));
        assert_eq!(v.groups("x/z/w").len(), 1, "g still has a's members");
        assert!(v.has_group(&g));
        v.remove(&interest_key("a", "$share/g/x/#"));
        assert!(v.groups("x/z/w").is_empty());
        assert!(
            !v.has_group(&g) && v.has_group(&h),
            "no member of g anywhere"
        );
        v.remove(&interest_key("b", "$share/h/x/+"));
        assert!(v.groups("x/y").is_empty());
        let changes = v.take_remote_changes();
        let want = [("$share/g/x/#", true), ("$share/h/x/+", true)]
            .into_iter()
            .chain([("$share/g/x/#", false), ("$share/h/x/+", false)]);
        assert!(
            changes.iter().map(|(s, r)| (s.as_str(), *r)).eq(want),
            "b's members came and went, a's own never count: {changes:?}"
        );
    }
}
