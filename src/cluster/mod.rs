//! The cluster link: several shardmq nodes as one broker, over NATS (`docs/cluster.md`,
//! `docs/decisions/0013-cluster.md`).
//!
//! Owns: the node's one NATS connection, run on a dedicated thread with its own
//! current-thread tokio runtime; the mapping between MQTT topics and NATS subjects
//! (`subject`); the wire form of messages between nodes (`envelope`); the JetStream
//! buckets for the session registry and retained messages (`kv`). Invariant: the shards
//! never run async code or block on NATS: they exchange plain values with the link through
//! bounded queues (`ToLink` in, `FromLink` out) and a wake-up callback, and every queue
//! counts what it drops. Must not touch: shard, broker or session internals. The link
//! learns local interest only from `ToLink` messages and reports only through `FromLink`.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod forget;
pub mod groups;
pub mod handover;
pub mod kv;
pub mod link;
pub mod node;
pub mod order;
pub mod queue;
pub mod release;
pub mod subject;

use std::sync::atomic::{AtomicU64, Ordering};

pub use envelope::Envelope;
pub use link::{LinkHandle, LinkSender};

/// What the node tells the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToLink {
    /// One more local subscription to `filter` (the part after `$share/G/` for a shared
    /// one, with `group: Some(G)`). The link counts them and subscribes on NATS for the
    /// first one.
    Interest {
        /// A valid MQTT filter.
        filter: String,
        /// The share group, for `$share/G/filter`.
        group: Option<String>,
        /// (shard, sequence) to echo in the answer, so that shard's SUBACK can wait for it.
        ack: Option<(usize, u64)>,
    },
    /// One local subscription fewer; the link unsubscribes on NATS after the last.
    NoInterest {
        /// As in `Interest`.
        filter: String,
        /// As in `Interest`.
        group: Option<String>,
    },
    /// A message accepted on this node: sent to the nodes that want it; if it is retained,
    /// also written to the retained bucket (an empty payload deletes). The link sets
    /// `origin` and `seq`. A QoS ≥ 1 message that other nodes want (by the interest
    /// bucket) is first stored in their queues (`queue`); with `ack`, the link answers
    /// `FromLink::Published` once that is done, failed, or was not needed.
    Publish {
        /// The message.
        envelope: Box<Envelope>,
        /// (shard, sequence) to echo in `FromLink::Published`.
        ack: Option<(usize, u64)>,
        /// The stem of its stores' message id (`<node>.<stem>.<target>`) when it must not
        /// depend on this run of the link: a stored publisher's QoS 2 message, whose
        /// resend after a power cut of this node gets the same stem, so JetStream stores it
        /// once (`broker::cluster::Qos2Id`). `None`: `<seq>`, the link's own number.
        msg_id: Option<String>,
        /// Share groups (queue names) whose members are all on this node as its shard
        /// saw them, and which it delivered to here: neither stored in their group queue
        /// nor taken from the core copy by the node NATS picks.
        served: Vec<String>,
    },
    /// A message this node's queue consumer handed over (`FromLink::Message` with a
    /// `token`, or `FromLink::Settle`) is safe here: acknowledge it to JetStream.
    Settle {
        /// As received.
        token: u64,
    },
    /// A message of a share group's queue (`FromLink::Message` with `Route::Shared` and a
    /// `token`) found no online member here: give it back to JetStream, which hands it to
    /// a node of the group again after `queue::SHARED_RETURN_DELAY`.
    Return {
        /// As received.
        token: u64,
    },
    /// A client connected here: record this node as its owner (compare-and-set). Answered
    /// by `FromLink::Claimed` or `FromLink::ClaimFailed` with the same `token`.
    Claim {
        /// MQTT client id.
        client_id: String,
        /// Echoed in the answer.
        token: u64,
    },
    /// Another node took `client_id` over: send it the session's state (its encoding,
    /// `handover`) on `smq.<cluster>.c.state.<to>`.
    Handover {
        /// The new owner (a node name).
        to: String,
        /// MQTT client id.
        client_id: String,
        /// The encoded state.
        state: Vec<u8>,
    },
    /// The subscriptions of persistent session `client_id` changed: keep them (`handover`
    /// encoding, no messages) in the subscriptions bucket for a node that takes the
    /// session over while this one is dead.
    SessionSubs {
        /// MQTT client id.
        client_id: String,
        /// The encoded subscriptions.
        state: Vec<u8>,
        /// (shard, sequence) to echo in `FromLink::SubsSaved` once the bucket has the copy
        /// (or the writes gave up), so that shard's SUBACKs can wait for it.
        ack: Option<(usize, u64)>,
    },
    /// A session owned here ended: remove the registry entry if it still names this node
    /// (and then its subscriptions entry).
    Release {
        /// MQTT client id.
        client_id: String,
    },
    /// This node took persistent session `client_id` over from node `from`, which sent no
    /// state (it is dead): copy the messages waiting in `from`'s queue whose topic matches
    /// one of `filters` (the session's plain filters) to this node, as `FromLink::Owed`.
    /// They are not acknowledged (other sessions of `from` may want them).
    Reclaim {
        /// MQTT client id.
        client_id: String,
        /// The old owner.
        from: String,
        /// The session's plain filters.
        filters: Vec<String>,
    },
    /// One shard's persistent sessions restored from its store (sent once per shard at
    /// start, before anything else it sends). When every shard has sent it, the link asks
    /// the registry who owns each, reports those owned elsewhere (`FromLink::Disowned`),
    /// and only then starts reading this node's queue.
    Restored {
        /// Their client ids.
        client_ids: Vec<String>,
    },
    /// One shard's live sessions (client ids that went through the registry), listed
    /// because the link asked (`FromLink::ListSessions`). When every shard has sent its
    /// own, the link asks the registry who owns each and reports those owned elsewhere
    /// (`FromLink::Superseded`) before it passes on any message of this node's queue.
    Live {
        /// Their client ids.
        client_ids: Vec<String>,
    },
}

/// Where an inbound message goes on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To this node's non-shared subscribers whose filters match the topic.
    Plain,
    /// To one local member of share group `group` on `filter`: NATS chose this node.
    Shared {
        /// The share group.
        group: String,
        /// Its filter.
        filter: String,
    },
}

/// What the link tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromLink {
    /// Connected (or reconnected) to NATS.
    Up,
    /// Lost the NATS connection; the client reconnects by itself.
    Down,
    /// The interest sent as `ToLink::Interest` is registered with the NATS server this node
    /// is connected to (for a single server: messages published from now on will come).
    InterestReady {
        /// As sent.
        filter: String,
        /// As sent.
        group: Option<String>,
        /// As sent.
        ack: Option<(usize, u64)>,
    },
    /// The interest sent as `ToLink::Interest` was not registered: the filter is invalid,
    /// maps to a subject longer than NATS accepts, or the interest table is full. Local
    /// subscribers of it get only local messages; a matching `NoInterest` is still fine.
    InterestRefused {
        /// As sent.
        filter: String,
        /// As sent.
        group: Option<String>,
        /// As sent.
        ack: Option<(usize, u64)>,
    },
    /// A message from another node.
    Message {
        /// Plain or shared delivery.
        route: Route,
        /// The message.
        envelope: Box<Envelope>,
        /// For a message from this node's queue: answer `ToLink::Settle` with it once the
        /// message is handed to the shards (and durable, with persistence on).
        token: Option<u64>,
        /// For a QoS 2 message from this node's queue: a 128-bit hash of its JetStream
        /// message id (`queue::received_id`), the same for every copy JetStream hands out
        /// and for a resend its publisher's node stored again under the same id.
        dedupe: Option<u128>,
    },
    /// A copy from this node's queue of a message already passed on: settle it like the
    /// first (`ToLink::Settle`), once what came before is durable.
    Settle {
        /// As in `Message`.
        token: u64,
        /// As in `Message`: a QoS 2 copy's id, so that its settle waits for the first
        /// copy's commit.
        dedupe: Option<u128>,
    },
    /// Share group `share` (`$share/G/F`) has members on another node than this one
    /// (`remote`), or no longer has (the view changed): this node's shards deliver its
    /// messages to local members themselves only while it has none elsewhere.
    ShareRemote {
        /// `$share/G/F`.
        share: String,
        /// Members on another node.
        remote: bool,
    },
    /// The answer to a `ToLink::Publish` with `ack`: the message is in the queue of every
    /// other node that wants it, or that failed (counted), or nobody else wanted it.
    Published {
        /// As sent.
        ack: (usize, u64),
    },
    /// The registry now names this node for `client_id`.
    Claimed {
        /// As sent in `ToLink::Claim`.
        token: u64,
        /// MQTT client id.
        client_id: String,
        /// The node that held it before, if another: it has been told to let go.
        previous: Option<String>,
    },
    /// The registry could not be updated (NATS down, or too many concurrent claims).
    ClaimFailed {
        /// As sent in `ToLink::Claim`.
        token: u64,
        /// MQTT client id.
        client_id: String,
    },
    /// The state of a session this node took over, from its old node.
    SessionState {
        /// MQTT client id.
        client_id: String,
        /// The encoded state (`handover`).
        state: Vec<u8>,
    },
    /// The subscriptions bucket's copy of `client_id`'s session, read when a claim took
    /// the id from another node (sent before `Claimed`): the state to use if that node
    /// does not send its own.
    SessionBackup {
        /// MQTT client id.
        client_id: String,
        /// The encoded state (`handover`).
        state: Vec<u8>,
    },
    /// The answer to `ToLink::SessionSubs`: the bucket holds the copy, or the bounded
    /// retries gave up (counted as a NATS error).
    SubsSaved {
        /// As sent.
        ack: Option<(usize, u64)>,
    },
    /// The answer to `ToLink::Release`.
    Released {
        /// MQTT client id.
        client_id: String,
        /// Whether the entry was removed (`false`: another node owns it, nobody does, or
        /// NATS failed, which `nats_errors` counts).
        removed: bool,
    },
    /// Messages from a dead node's queue owed to session `client_id` (`ToLink::Reclaim`),
    /// in the queue's order; `last` on the final batch.
    Owed {
        /// MQTT client id.
        client_id: String,
        /// The messages.
        envelopes: Vec<Envelope>,
        /// No more batches follow.
        last: bool,
    },
    /// A session restored from this node's store is no longer this node's (the registry
    /// names `owner`, or nobody): hand its owed messages to `owner` and end it here. Sent
    /// before this node's queue is read, so nothing from it reaches that session here.
    Disowned {
        /// MQTT client id.
        client_id: String,
        /// The node the registry names, if any.
        owner: Option<String>,
    },
    /// The link is back from a cut-off from NATS (or found this node removed and joined
    /// again): every shard lists its live sessions (`ToLink::Live`) so that they can be
    /// checked against the registry — takeover notices sent meanwhile were lost.
    ListSessions,
    /// A session listed after a cut-off (`ListSessions`) is owned by `owner` now (or by
    /// nobody): unless claimed here since the list was made, disconnect its client with
    /// 0x8E, send `owner` its state and end it here.
    Superseded {
        /// MQTT client id.
        client_id: String,
        /// The node the registry names, if any.
        owner: Option<String>,
    },
    /// Another node took `client_id` over: disconnect it here with 0x8E.
    TakenOver {
        /// MQTT client id.
        client_id: String,
        /// The node that owns it now.
        by: String,
    },
    /// The retained bucket changed (first the whole bucket at start, then each update):
    /// `Some` sets the topic's retained message, `None` clears it.
    Retained {
        /// The topic.
        topic: String,
        /// The new retained message.
        message: Option<Box<Envelope>>,
    },
}

/// Counters of the link, read by `$SYS`/metrics. Only the link thread and `LinkSender`s
/// write them.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// `ToLink` messages dropped because the link's inbox was full.
    pub to_link_dropped: AtomicU64,
    /// `FromLink` messages dropped because the node's inbox was full.
    pub from_link_dropped: AtomicU64,
    /// Messages published to NATS.
    pub published: AtomicU64,
    /// Messages not sent because NATS was unreachable.
    pub down_dropped: AtomicU64,
    /// Messages not sent: subject or envelope too large for NATS.
    pub too_large: AtomicU64,
    /// Messages received from other nodes and passed on.
    pub received: AtomicU64,
    /// Inbound messages that were our own, or a copy already passed on.
    pub duplicates: AtomicU64,
    /// Inbound bytes that were not a valid envelope or subject.
    pub malformed: AtomicU64,
    /// NATS publish/subscribe/KV operations that failed.
    pub nats_errors: AtomicU64,
    /// Bucket watches (interest, retained) found stalled behind their bucket and made anew.
    pub watch_reopened: AtomicU64,
    /// Interests refused: invalid filter, subject too long, or the table full.
    pub interest_dropped: AtomicU64,
    /// QoS ≥ 1 messages stored in another node's queue (one per node).
    pub queued: AtomicU64,
    /// Stores in another node's queue that failed or timed out (the publisher was
    /// acknowledged all the same; the message went by core NATS only).
    pub queue_failed: AtomicU64,
    /// Messages taken from this node's queue.
    pub queue_received: AtomicU64,
    /// Of those, copies that came again (redelivered, or already passed on by core NATS).
    pub queue_redelivered: AtomicU64,
    /// Messages of this node's queue acknowledged to JetStream.
    pub queue_settled: AtomicU64,
    /// QoS ≥ 1 messages stored in a share group's queue (one per group).
    pub shared_queued: AtomicU64,
    /// Messages taken from a share group's queue.
    pub shared_received: AtomicU64,
    /// Share group messages given back: no online member here.
    pub shared_returned: AtomicU64,
    /// Share group queues this node removed: no member on any node (`groups`).
    pub shared_removed: AtomicU64,
    /// Messages copied from a dead node's queue for a session taken over here.
    pub reclaimed: AtomicU64,
    /// Sessions restored from this node's store that the registry gave to another node
    /// meanwhile (handed over and ended here).
    pub disowned: AtomicU64,
    /// Live sessions found owned by another node (or nobody) when this node came back from
    /// a cut-off from NATS, and ended here (`FromLink::Superseded`).
    pub superseded: AtomicU64,
    /// Inbound QoS ≥ 1 messages held until the one before them on their topic arrived.
    pub order_held: AtomicU64,
    /// Of those, passed on at the bound without it (`order::ORDER_HOLD_MS`).
    pub order_expired: AtomicU64,
    /// Other nodes this node removed for their silence (`cluster_forget_after`).
    pub forgot: AtomicU64,
    /// Times this node found itself removed by another and joined again.
    pub rejoined: AtomicU64,
    /// Connections to NATS made or lost (not a figure: the heartbeat reads it to restart
    /// its judgement after a gap).
    pub connection_changes: AtomicU64,
    /// Every node's heartbeat as this node last saw it change (the heartbeat task writes
    /// it about once a period; `/metrics` reads it).
    pub nodes: std::sync::Mutex<std::collections::BTreeMap<String, NodeSeen>>,
}

/// A node's heartbeat key as this node saw it: when it last changed (this node's clock)
/// and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSeen {
    /// When the key last changed, or when this node's watch (re)started.
    pub at: std::time::Instant,
    /// `alive`, `forgetting` (a removal runs) or `forgotten`.
    pub state: &'static str,
}

impl LinkStats {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Every known node as (name, seconds since its heartbeat key last changed, state),
    /// for `/metrics`.
    pub fn node_ages(&self) -> Vec<(String, f64, &'static str)> {
        let Ok(nodes) = self.nodes.lock() else {
            return Vec::new();
        };
        let now = std::time::Instant::now();
        nodes
            .iter()
            .map(|(n, s)| (n.clone(), now.duration_since(s.at).as_secs_f64(), s.state))
            .collect()
    }

    /// Every counter as (name, help, value), for `$SYS` and `/metrics`.
    pub fn figures(&self) -> Vec<(&'static str, &'static str, u64)> {
        let g = Self::get;
        vec![
            (
                "published",
                "Messages this node sent to other nodes through NATS.",
                g(&self.published),
            ),
            (
                "received",
                "Messages from other nodes passed to the shards.",
                g(&self.received),
            ),
            (
                "duplicates",
                "Inbound copies dropped: this node's own, or already passed on.",
                g(&self.duplicates),
            ),
            (
                "down_dropped",
                "Messages not sent while NATS was unreachable.",
                g(&self.down_dropped),
            ),
            (
                "too_large",
                "Messages kept local: envelope or subject too large for NATS.",
                g(&self.too_large),
            ),
            (
                "malformed",
                "Inbound bytes that were not a valid envelope, subject or topic.",
                g(&self.malformed),
            ),
            (
                "nats_errors",
                "NATS publish, subscribe and JetStream operations that failed.",
                g(&self.nats_errors),
            ),
            (
                "watch_reopened",
                "Bucket watches found stalled behind their bucket and made anew.",
                g(&self.watch_reopened),
            ),
            (
                "interest_dropped",
                "Filters kept local: invalid subject, too long, or table full.",
                g(&self.interest_dropped),
            ),
            (
                "queued",
                "QoS 1/2 messages stored in another node's JetStream queue.",
                g(&self.queued),
            ),
            (
                "queue_failed",
                "Stores in another node's queue that failed or timed out.",
                g(&self.queue_failed),
            ),
            (
                "queue_received",
                "Messages taken from this node's JetStream queue.",
                g(&self.queue_received),
            ),
            (
                "queue_redelivered",
                "Queue messages that came again (redelivered or already passed on).",
                g(&self.queue_redelivered),
            ),
            (
                "queue_settled",
                "Queue messages acknowledged once safe on this node.",
                g(&self.queue_settled),
            ),
            (
                "shared_queued",
                "QoS 1/2 messages stored in a share group's JetStream queue.",
                g(&self.shared_queued),
            ),
            (
                "shared_received",
                "Messages taken from a share group's JetStream queue.",
                g(&self.shared_received),
            ),
            (
                "shared_returned",
                "Share group messages given back: no online member on this node.",
                g(&self.shared_returned),
            ),
            (
                "shared_removed",
                "Share group queues this node removed: no member left on any node.",
                g(&self.shared_removed),
            ),
            (
                "reclaimed",
                "Messages copied from a dead node's queue for a session taken over here.",
                g(&self.reclaimed),
            ),
            (
                "disowned",
                "Restored sessions owned by another node meanwhile, handed over at start.",
                g(&self.disowned),
            ),
            (
                "superseded",
                "Live sessions the registry gave to another node while this one was cut off.",
                g(&self.superseded),
            ),
            (
                "order_held",
                "Inbound QoS 1/2 messages held until the one before them arrived.",
                g(&self.order_held),
            ),
            (
                "order_expired",
                "Held messages passed on at the bound without the one before them.",
                g(&self.order_expired),
            ),
            (
                "forgot",
                "Other nodes this node removed after cluster_forget_after of silence.",
                g(&self.forgot),
            ),
            (
                "rejoined",
                "Times this node found itself removed by another node and joined again.",
                g(&self.rejoined),
            ),
            (
                "to_link_dropped",
                "Messages dropped because the link's queue was full.",
                g(&self.to_link_dropped),
            ),
            (
                "from_link_dropped",
                "Messages dropped because the node's queue was full.",
                g(&self.from_link_dropped),
            ),
        ]
    }
}
