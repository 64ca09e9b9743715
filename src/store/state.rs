//! The live state a log describes: what replaying its records leaves behind.
//!
//! Owns: [`LiveState`] (sessions with their subscriptions, deliveries and inbound QoS 2
//! ids; stored messages; retained entries), the rules that apply each [`Record`] to it,
//! merging the states of several shards and splitting one by home shard. Invariants after
//! [`LiveState::finish`]: every delivery and retained entry refers to a stored message,
//! and every stored message is referred to (unreferenced ones are dropped). Message ids
//! are unique within one state. Must not touch: files, the engine's own session types.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;

use super::record::{
    BridgeOp, DeliveryState, MsgId, Record, RetainSource, SessionInfo, StoredMessage, Will,
    SHARE_SEQ_MASK,
};

mod bridges;
mod deliveries;
mod messages;
mod sessions;
mod subscriptions;
pub use bridges::{place_bridges, BridgeMsg, BridgeState};
pub use deliveries::Deliveries;
pub use messages::{Messages, SharedMessage, SharedMessages};
pub use sessions::{SessionSlot, Sessions};
pub use subscriptions::Subscriptions;

/// One outbound delivery of a session, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message.
    pub msg: MsgId,
    /// QoS of this delivery.
    pub qos: u8,
    /// RETAIN flag it is sent with.
    pub retain: bool,
    /// Subscription Identifiers it carries.
    pub sub_ids: Vec<u32>,
    /// Packet id once sent.
    pub packet_id: Option<NonZeroU16>,
    /// Where it stands.
    pub state: DeliveryState,
    /// The QoS 2 routing it belongs to, until recovery settles it (0: none).
    pub txn: u64,
    /// The share group (name, filter) it came through, if any.
    pub share: Option<(String, String)>,
}

impl Delivery {
    /// A delivery as its first record leaves it: queued, or in flight under `packet_id`
    /// when it was queued and sent at once.
    fn new(
        msg: MsgId,
        qos: u8,
        retain: bool,
        sub_ids: Vec<u32>,
        packet_id: Option<NonZeroU16>,
        txn: u64,
    ) -> Delivery {
        let state = match packet_id {
            Some(_) => DeliveryState::InFlight,
            None => DeliveryState::Queued,
        };
        Delivery {
            msg,
            qos,
            retain,
            sub_ids,
            packet_id,
            state,
            txn,
            share: None,
        }
    }
}

/// A persistent session as recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Parameters from the last CONNECT.
    pub info: SessionInfo<'static>,
    /// When its connection ended (`None`: it was connected when the log stopped; the
    /// engine treats it as disconnected at recovery and runs its Will delay from then).
    pub disconnected_at_unix_ms: Option<u64>,
    /// Subscriptions by (share group, filter).
    pub subscriptions: Subscriptions,
    /// Outbound deliveries, oldest first: in-flight ones carry packet ids.
    pub deliveries: Deliveries,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: BTreeSet<NonZeroU16>,
    /// The number the next new inbound QoS 2 message gets (0: none logged; see
    /// [`Record::Qos2Numbering`]).
    pub qos2_next: u64,
    /// Shared QoS 2 deliveries it completed that another member's log may still hold a
    /// copy of ([`Record::ShareCompleted`]), as (share identity, group, filter), oldest
    /// first, at most [`SHARE_COMPLETED_MAX`].
    pub share_completed: VecDeque<(u64, String, String)>,
}

/// The most completed shared deliveries a session's state keeps
/// ([`Record::ShareCompleted`]): a mark is needed only until the first member's end of
/// the move is durable (a barrier round and a group commit later) or, for a restored
/// message, while a copy restored with it may move; the oldest goes first (decision 0023).
pub const SHARE_COMPLETED_MAX: usize = 1024;

impl SessionState {
    /// [`Record::ShareCompleted`]: remember the completion, once, dropping the oldest past
    /// [`SHARE_COMPLETED_MAX`].
    fn complete_share(&mut self, share_id: u64, group: String, filter: String) {
        let mark = (share_id, group, filter);
        if self.share_completed.contains(&mark) {
            return;
        }
        if self.share_completed.len() >= SHARE_COMPLETED_MAX {
            self.share_completed.pop_front();
        }
        self.share_completed.push_back(mark);
    }
}

/// The most ids of QoS 2 messages taken from the cluster queue a state keeps
/// ([`Record::ClusterReceived`]): a copy that comes again after more than this many later
/// ones is routed again (a duplicate).
pub const CLUSTER_RECEIVED_MAX: usize = 65_536;

/// The ids of the last QoS 2 messages this node took from its cluster queue and committed
/// ([`Record::ClusterReceived`]), oldest first, at most [`CLUSTER_RECEIVED_MAX`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedIds {
    order: VecDeque<u128>,
    set: BTreeSet<u128>,
}

impl ReceivedIds {
    /// Add `id` (once); past the bound the oldest goes.
    pub fn insert(&mut self, id: u128) {
        if !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > CLUSTER_RECEIVED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Whether `id` is kept.
    pub fn contains(&self, id: u128) -> bool {
        self.set.contains(&id)
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        self.order.iter().copied()
    }
}

/// A Will published but not yet durable wherever it went ([`Record::WillPending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWill {
    /// Its client, whose home shard publishes it again (`None`: its record did not name
    /// it, as before tag 30; shard 0 publishes it again).
    pub client_id: Option<String>,
    /// The Lamport stamp of a retained Will (0 otherwise).
    pub stamp: u64,
    /// The Will as a message.
    pub msg: StoredMessage<'static>,
}

/// A clean session's Will logged at its CONNECT and neither published nor ended
/// ([`Record::WillArmed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmedWill {
    /// Its client, as [`PendingWill::client_id`] (`None`: before tag 31).
    pub client_id: Option<String>,
    /// The Will (its expiry relative: it starts at publication).
    pub will: Will<'static>,
}

/// A retained entry: a message, or a tombstone kept while merging (highest stamp wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// The message, or `None` for a clear.
    pub msg: Option<MsgId>,
    /// Lamport stamp.
    pub stamp: u64,
    /// Its publisher, when one was recorded (`check_retain_source`).
    pub source: Option<RetainSource<'static>>,
}

/// Everything a log (or several merged) says is alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    /// Sessions by client id, in slots (in no order: [`LiveState::sessions_by_id`] sorts
    /// them). A delivery record's apply finds its session by the slot its caller names
    /// ([`LiveState::apply_delivery_at`]); client ids come from the network, so the index
    /// is hashed with a per-map seed, and an ordered map's search was 8–14 string
    /// comparisons a record (`docs/benchmarks.md`, "eighth round").
    pub sessions: Sessions,
    /// Stored messages by id.
    pub messages: Messages,
    /// Messages a journal's shadow refers to instead of copying (none in a recovered
    /// state); ids above every id in `messages`.
    pub shared: SharedMessages,
    /// Retained entries by topic.
    pub retained: BTreeMap<String, Retained>,
    /// Bridges' forwarding state by bridge name.
    pub bridges: BTreeMap<String, BridgeState>,
    /// Records that referred to a session or message the state does not have (the engine
    /// logs only persistent sessions' records, so a non-zero count is worth a warning).
    pub orphans: u64,
    /// The highest QoS 2 routing committed, by origin (`txn >> 48`); see
    /// [`Record::Qos2Committed`]. Empty after [`LiveState::finish`].
    pub qos2_committed: BTreeMap<u64, u64>,
    /// Deliveries of QoS 2 routings never committed that [`LiveState::finish`] dropped.
    pub qos2_dropped: u64,
    /// Wills published but not yet durable wherever they went, by number. See
    /// [`Record::WillPending`].
    pub pending_wills: BTreeMap<u64, PendingWill>,
    /// Wills of clean sessions logged at CONNECT and neither published nor ended, by
    /// number (the same numbers as `pending_wills`). See [`Record::WillArmed`].
    pub armed_wills: BTreeMap<u64, ArmedWill>,
    /// QoS 2 messages taken from this node's cluster queue and committed (the gateway
    /// shard's log; see [`Record::ClusterReceived`]).
    pub cluster_received: ReceivedIds,
    /// The highest share identity number (`StoredMessage::share_id`, without its origin)
    /// of any message recovery restored, in any part: each shard numbers on from there.
    /// Set by recovery ([`super::layout::recover_parts_on`]); 0 otherwise.
    pub share_seq: u64,
}

impl LiveState {
    /// Apply one record (only what the state keeps is copied from a borrowed one).
    pub fn apply(&mut self, r: Record<'_>) {
        if self.apply_delivery(&r) {
            return;
        }
        match r {
            Record::SessionCreated(info) => self.session_created(info.into_owned()),
            Record::SessionDisconnected {
                client_id,
                at_unix_ms,
            } => {
                if let Some(s) = self.session(&client_id) {
                    s.disconnected_at_unix_ms = Some(at_unix_ms);
                }
            }
            Record::SessionEnded { client_id } => {
                self.sessions.remove(client_id.as_ref());
            }
            Record::SubscriptionAdded { client_id, sub } => {
                if let Some(s) = self.session(&client_id) {
                    s.subscriptions.insert(&sub);
                }
            }
            Record::SubscriptionRemoved {
                client_id,
                share_group,
                filter,
            } => {
                if let Some(s) = self.session(&client_id) {
                    s.subscriptions.remove(share_group.as_deref(), &filter);
                }
            }
            Record::MessageStored { id, msg } => {
                if !self.shared.is_empty() {
                    // One id, one place: a copy replaces a shared message of the same id.
                    self.shared.retain(|&s| s != id, &mut Vec::new());
                }
                self.messages.insert(id, msg.into_owned());
            }
            Record::RetainedSet {
                topic,
                msg,
                stamp,
                source,
            } => {
                let r = Retained {
                    msg: Some(msg),
                    stamp,
                    source: source.map(RetainSource::into_owned),
                };
                self.retain(topic.into_owned(), r)
            }
            Record::RetainedCleared { topic, stamp } => {
                let r = Retained {
                    msg: None,
                    stamp,
                    source: None,
                };
                self.retain(topic.into_owned(), r)
            }
            Record::Bridge { bridge, op } => self.apply_bridge(bridge, op),
            other => self.apply_incoming(other),
        }
    }

    /// The `MessageStored` record of message `id`, applied by reference: `m` renders the
    /// very form that was logged (with `expires`). Copied as `apply` would when `id` is not
    /// above every id held (never, for a journal's increasing ids).
    pub fn store_shared(&mut self, id: MsgId, m: Arc<dyn SharedMessage>, expires: Option<u64>) {
        let above = self
            .messages
            .keys()
            .next_back()
            .is_none_or(|last| *last < id);
        let refused = if above {
            self.shared.push(id, m, expires).err()
        } else {
            Some(m)
        };
        if let Some(m) = refused {
            self.messages.insert(id, m.stored(expires).into_owned());
        }
    }

    /// Whether message `id` is stored (owned or shared).
    pub fn has_message(&self, id: &MsgId) -> bool {
        self.messages.contains_key(id) || self.shared.contains_key(id)
    }

    /// How many messages are stored (owned and shared).
    pub fn message_count(&self) -> usize {
        self.messages.len() + self.shared.len()
    }

    /// Copy the shared messages into `messages` (recovery's merges, splits and `finish`
    /// work on owned ones only).
    pub fn own_shared(&mut self) {
        if self.shared.is_empty() {
            return;
        }
        for (id, m) in self.shared.take_owned() {
            self.messages.insert(id, m);
        }
    }

    /// Refer to every owned message instead of holding it: each goes, the highest id
    /// first, to `share`, which makes the reference kept in its place (and may keep the
    /// owned copy's allocations). A restore builds the engine's message of each restored
    /// one and the shadow refers to it, as decision 0017 has it refer to logged ones:
    /// before, the shadow kept its owned copy beside the engine's for as long as the
    /// message lived. The owned messages' `Vec` is given back as it empties
    /// ([`Messages::drain_from_back`]), so a restore does not hold it whole beside every
    /// message it has built. The state is the same state ([`LiveState::own_shared`]
    /// gives the owned form back) as long as `share` renders what it was given. Nothing
    /// moves, and false comes back, when the state already refers to messages (it has
    /// logged since it was recovered).
    pub fn share_owned(
        &mut self,
        mut share: impl FnMut(MsgId, StoredMessage<'static>) -> Arc<dyn SharedMessage>,
    ) -> bool {
        if !self.shared.is_empty() {
            return false;
        }
        let owned = std::mem::take(&mut self.messages).drain_from_back();
        let mut refs = Vec::with_capacity(owned.size_hint().0);
        for (id, m) in owned {
            let expires = m.expires_at_unix_ms;
            refs.push((id, share(id, m), expires));
        }
        // Ids strictly decrease out of `Messages`: every one is taken.
        if let Err(refs) = self.shared.set_from_back(refs) {
            for (id, m, expires) in refs {
                self.messages.insert(id, m.stored(expires).into_owned());
            }
        }
        true
    }

    /// Apply `r` if it is one of a delivery's own records (queued, sent, done, dropped),
    /// by reference; false for any other record (apply it with [`LiveState::apply`]).
    /// A journal's shadow applies two of these per durable QoS 1 message: taken by
    /// reference, the record is not moved through the dispatch (two copies of it per
    /// record before: `docs/benchmarks.md`, "seventh round").
    pub fn apply_delivery(&mut self, r: &Record<'_>) -> bool {
        self.apply_delivery_at(&Cell::new(SessionSlot::NONE), r)
    }

    /// [`LiveState::apply_delivery`], finding the session in `slot` when it is there (no
    /// hash of the client id: `docs/benchmarks.md`, "ninth round"); `slot` is set to where
    /// it was found, for the caller's next record of the same session.
    pub fn apply_delivery_at(&mut self, slot: &Cell<SessionSlot>, r: &Record<'_>) -> bool {
        let Some(client_id) = delivery_client(r) else {
            return false;
        };
        match self.sessions.at_mut(slot, client_id) {
            Some(s) => apply_to_session(s, r),
            None => self.orphans += 1,
        }
        true
    }

    fn apply_incoming(&mut self, r: Record<'_>) {
        match r {
            Record::IncomingQos2Set {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.session(&client_id) {
                    s.incoming_qos2.insert(packet_id);
                }
            }
            Record::IncomingQos2Cleared {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.session(&client_id) {
                    s.incoming_qos2.remove(&packet_id);
                }
            }
            Record::DeliveryTxn { client_id, txn } => {
                if let Some(s) = self.session(&client_id) {
                    s.deliveries.set_last_txn(txn);
                }
            }
            Record::Qos2Committed { txn } => {
                let at = self.qos2_committed.entry(txn >> 48).or_insert(0);
                *at = (*at).max(txn);
            }
            Record::WillPending {
                id,
                client_id,
                stamp,
                msg,
            } => {
                self.armed_wills.remove(&id);
                let w = PendingWill {
                    client_id: client_id.map(|c| c.into_owned()),
                    stamp,
                    msg: msg.into_owned(),
                };
                self.pending_wills.insert(id, w);
            }
            Record::WillDone { id } => {
                self.armed_wills.remove(&id);
                self.pending_wills.remove(&id);
            }
            Record::WillArmed {
                id,
                client_id,
                will,
            } => {
                let w = ArmedWill {
                    client_id: client_id.map(|c| c.into_owned()),
                    will: will.into_owned(),
                };
                self.armed_wills.insert(id, w);
            }
            Record::DeliveryShare {
                client_id,
                group,
                filter,
            } => {
                if let Some(s) = self.session(&client_id) {
                    s.deliveries
                        .set_last_share(group.into_owned(), filter.into_owned());
                }
            }
            Record::ShareCompleted {
                client_id,
                share_id,
                group,
                filter,
            } => {
                if let Some(s) = self.session(&client_id) {
                    s.complete_share(share_id, group.into_owned(), filter.into_owned());
                }
            }
            Record::Qos2Numbering { client_id, next } => {
                if let Some(s) = self.session(&client_id) {
                    s.qos2_next = next;
                }
            }
            Record::ClusterReceived { id, txn } => {
                if txn != 0 {
                    let at = self.qos2_committed.entry(txn >> 48).or_insert(0);
                    *at = (*at).max(txn);
                }
                self.cluster_received.insert(id);
            }
            Record::IncomingQos2Commit {
                client_id,
                packet_id,
                txn,
                next,
            } => {
                let at = self.qos2_committed.entry(txn >> 48).or_insert(0);
                *at = (*at).max(txn);
                if let Some(s) = self.session(&client_id) {
                    s.incoming_qos2.insert(packet_id);
                    if next != 0 {
                        s.qos2_next = next;
                    }
                }
            }
            _ => unreachable!("apply handles every other record"),
        }
    }

    /// An empty bridge entry is dropped, so a checkpoint holds only bridges with work.
    fn apply_bridge(&mut self, name: std::borrow::Cow<'_, str>, op: BridgeOp<'_>) {
        let op = op.into_owned();
        match self.bridges.get_mut(name.as_ref()) {
            Some(b) => {
                b.apply(op);
                if b.is_empty() {
                    self.bridges.remove(name.as_ref());
                }
            }
            None => {
                let mut b = BridgeState::default();
                b.apply(op);
                if !b.is_empty() {
                    self.bridges.insert(name.into_owned(), b);
                }
            }
        }
    }

    fn session_created(&mut self, info: SessionInfo<'static>) {
        match self.sessions.get_mut(&info.client_id) {
            Some(s) => {
                // The same client id: the session's key does not change.
                s.info = info;
                s.disconnected_at_unix_ms = None;
            }
            None => {
                self.sessions.insert(SessionState {
                    info,
                    disconnected_at_unix_ms: None,
                    subscriptions: Subscriptions::default(),
                    deliveries: Deliveries::default(),
                    incoming_qos2: BTreeSet::new(),
                    qos2_next: 0,
                    share_completed: VecDeque::new(),
                });
            }
        }
    }

    /// The sessions in client id order (the order of the ordered map this was, which the
    /// restore and a checkpoint's records keep).
    pub fn sessions_by_id(&self) -> Vec<&SessionState> {
        let mut by_id: Vec<(&str, &SessionState)> = self.sessions.iter().collect();
        by_id.sort_unstable_by(|a, b| a.0.cmp(b.0));
        by_id.into_iter().map(|(_, s)| s).collect()
    }

    fn session(&mut self, client_id: &str) -> Option<&mut SessionState> {
        let s = self.sessions.get_mut(client_id);
        if s.is_none() {
            self.orphans += 1;
        }
        s
    }

    fn retain(&mut self, topic: String, r: Retained) {
        match self.retained.entry(topic) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(r);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if r.stamp >= o.get().stamp {
                    o.insert(r);
                }
            }
        }
    }

    /// Drop tombstones, deliveries of messages the state lacks, deliveries of QoS 2
    /// routings never committed, and unreferenced messages.
    pub fn finish(&mut self) {
        self.own_shared();
        self.settle_qos2();
        self.retained.retain(|_, r| r.msg.is_some());
        let stored = StoredIds::of(&self.messages);
        let has = |id: &MsgId| stored.has(id, &self.messages);
        let mut missing = 0u64;
        for s in self.sessions.values_mut() {
            let before = s.deliveries.len();
            s.deliveries.retain(|d| has(&d.msg));
            missing += (before - s.deliveries.len()) as u64;
        }
        let before = self.retained.len();
        self.retained.retain(|_, r| r.msg.as_ref().is_some_and(has));
        missing += (before - self.retained.len()) as u64;
        self.orphans += missing;
        self.drop_unreferenced();
        // Recovery reserved room for the most messages its files could hold.
        self.messages.shrink_to_fit();
    }

    /// The highest share identity number of this state's own messages (0: none).
    pub fn share_seq_max(&self) -> u64 {
        let seq = |m: &StoredMessage<'_>| m.share_id & SHARE_SEQ_MASK;
        self.messages.values().map(seq).max().unwrap_or(0)
    }

    /// The share identities of this state's own messages (not 0).
    pub fn share_ids(&self) -> impl Iterator<Item = u64> + '_ {
        let ids = self.messages.values().map(|m| m.share_id);
        ids.filter(|&id| id != 0)
    }

    /// Keep the sessions' completed shared deliveries (`Record::ShareCompleted`) whose
    /// identity is in `held` (some part's restored messages), and drop the rest: no copy
    /// of those is left to move onto their member.
    pub fn keep_share_completed(&mut self, held: &std::collections::HashSet<u64>) {
        for s in self.sessions.values_mut() {
            s.share_completed.retain(|(id, ..)| held.contains(id));
        }
    }

    /// Drop the messages no delivery or retained entry refers to (tombstones stay: they
    /// order retained updates across shards' logs).
    ///
    /// The ids in use are gathered into a sorted `Vec` and the messages kept in one pass
    /// beside it, in place: a journal's shadow sweeps when most of its messages are
    /// acknowledged ones.
    pub fn drop_unreferenced(&mut self) {
        self.drop_unreferenced_into(&mut Vec::new());
    }

    /// [`LiveState::drop_unreferenced`], handing the shared messages dropped to `dropped`
    /// (a journal gives them back to the engine's message pool).
    pub fn drop_unreferenced_into(&mut self, dropped: &mut Vec<Arc<dyn SharedMessage>>) {
        let mut used: Vec<MsgId> = Vec::new();
        for s in self.sessions.values() {
            used.extend(s.deliveries.iter().map(|d| d.msg));
        }
        used.extend(self.retained.values().filter_map(|r| r.msg));
        used.sort_unstable();
        used.dedup();
        // Both in id order: walk `used` beside the messages, then beside the shared ones.
        let mut next = used.iter().peekable();
        self.messages.retain(|id, _| {
            while next.next_if(|&&u| u < *id).is_some() {}
            next.peek().is_some_and(|&&u| u == *id)
        });
        let mut next = used.iter().peekable();
        self.shared.retain(
            |id| {
                while next.next_if(|&&u| u < *id).is_some() {}
                next.peek().is_some_and(|&&u| u == *id)
            },
            dropped,
        );
    }

    /// Settle the QoS 2 routings: a delivery (or a bridge's queued message) of one never
    /// committed is dropped (nobody saw it: its PUBLISH waits for the commit, and so does
    /// its publisher's PUBREC, so the publisher sends it again), the others are kept. What remains is plain deliveries,
    /// so a new run numbers its routings afresh.
    fn settle_qos2(&mut self) {
        let committed = std::mem::take(&mut self.qos2_committed);
        let done = |txn: u64| committed.get(&(txn >> 48)).is_some_and(|&c| c >= txn);
        let mut dropped = 0;
        for s in self.sessions.values_mut() {
            let before = s.deliveries.len();
            s.deliveries.retain(|d| d.txn == 0 || done(d.txn));
            dropped += before - s.deliveries.len();
            s.deliveries.clear_txns();
        }
        let mut dropped = dropped as u64;
        for b in self.bridges.values_mut() {
            dropped += b.settle_qos2(done);
        }
        self.bridges.retain(|_, b| !b.is_empty());
        self.qos2_dropped += dropped;
    }

    /// The next Will number free in this state.
    pub fn next_will_id(&self) -> u64 {
        let pending = self.pending_wills.keys().next_back().map_or(1, |id| id + 1);
        let armed = self.armed_wills.keys().next_back().map_or(1, |id| id + 1);
        pending.max(armed)
    }

    /// The next message id free in this state.
    pub fn next_msg_id(&self) -> MsgId {
        let owned = self.messages.keys().next_back().copied();
        MsgId(self.shared.last_id().max(owned).map_or(1, |m| m.0 + 1))
    }

    /// Fold `other` (another shard's state, with its own message ids) into this one:
    /// its messages get fresh ids; a session both hold keeps this state's copy (counted
    /// in the return value); retained entries keep the highest stamp, tombstones included.
    pub fn merge(&mut self, mut other: LiveState) -> u64 {
        self.own_shared();
        other.own_shared();
        let empty = self.sessions.is_empty()
            && self.messages.is_empty()
            && self.retained.is_empty()
            && self.bridges.is_empty()
            && self.pending_wills.is_empty()
            && self.armed_wills.is_empty()
            && self.qos2_committed.is_empty()
            && self.cluster_received.is_empty();
        if empty {
            // Nothing to renumber against (the first shard read, or the only one).
            other.orphans += self.orphans;
            *self = other;
            return 0;
        }
        let first = self.next_msg_id().0;
        let mut renumber = BTreeMap::new();
        for (next, (id, m)) in (first..).zip(std::mem::take(&mut other.messages)) {
            renumber.insert(id, MsgId(next));
            self.messages.insert(MsgId(next), m);
        }
        let map = |id: MsgId| renumber.get(&id).copied().unwrap_or(MsgId(u64::MAX));
        let mut conflicts = 0;
        for mut s in other.sessions {
            if self.sessions.contains_key(&s.info.client_id) {
                conflicts += 1;
                continue;
            }
            s.deliveries.map_msgs(map);
            self.sessions.insert(s);
        }
        for (topic, r) in other.retained {
            let msg = r.msg.map(map);
            self.retain(topic, Retained { msg, ..r });
        }
        for (name, b) in other.bridges {
            // A bridge lives in one shard's log; a second copy is a conflict like a
            // session's, and the first one is kept.
            if self.bridges.contains_key(&name) {
                conflicts += 1;
                continue;
            }
            self.bridges.insert(name, b);
        }
        self.orphans += other.orphans;
        for (origin, txn) in other.qos2_committed {
            let at = self.qos2_committed.entry(origin).or_insert(0);
            *at = (*at).max(txn);
        }
        self.merge_wills(other.pending_wills, other.armed_wills);
        for id in other.cluster_received.iter() {
            self.cluster_received.insert(id);
        }
        conflicts
    }

    /// Take another shard's pending and armed Wills, renumbered above this state's in
    /// their own order: the two kinds share one number space, in the order the Wills were
    /// armed or published, and recovery publishes them in that order
    /// (`broker::journal::restored_wills`), so a client's older Will stays first.
    fn merge_wills(
        &mut self,
        pending: BTreeMap<u64, PendingWill>,
        armed: BTreeMap<u64, ArmedWill>,
    ) {
        let mut next = self.next_will_id()..;
        let mut pending = pending.into_iter().peekable();
        let mut armed = armed.into_iter().peekable();
        loop {
            let pending_first = match (pending.peek(), armed.peek()) {
                (None, None) => return,
                (Some((p, _)), Some((a, _))) => p <= a,
                (p, _) => p.is_some(),
            };
            let Some(id) = next.next() else {
                return;
            };
            if pending_first {
                if let Some((_, w)) = pending.next() {
                    self.pending_wills.insert(id, w);
                }
            } else if let Some((_, w)) = armed.next() {
                self.armed_wills.insert(id, w);
            }
        }
    }

    /// Split into `n` states: each session goes to `client_shard(client_id)`, each
    /// retained entry to `retained_shard(topic)` (both taken modulo `n`), and each message
    /// to every state that refers to it: moved to one, cloned only for the others (a
    /// message queued for sessions of several shards). Bridges go to the first state:
    /// take them out first and [`place_bridges`] them by owner shard. The counts and QoS 2
    /// commits are not carried (take them out first too). Each pending and armed Will goes
    /// to its client's home part (`client_shard`), under its own number, so that shard
    /// publishes it again before its session timers publish the client's session Will
    /// (both in the client's order: [MQTT-4.6.0-5]); a Will whose records do not name its
    /// client (written before tags 30 and 31) goes to the first state. The ids of
    /// messages taken from the cluster queue go to the first state too (the gateway's).
    ///
    /// A state whose sessions and retained entries all go to one part (a shard directory
    /// read by a broker with the same shard count, the usual start) moves there whole:
    /// the same part, built without taking the state apart and putting it together again
    /// (that rebuild was ≈ 16% of a 1M-message recovery's CPU: `docs/benchmarks.md`,
    /// "Recovery without the rebuild").
    pub fn split(
        mut self,
        n: usize,
        client_shard: impl Fn(&str) -> usize,
        retained_shard: impl Fn(&str) -> usize,
    ) -> Vec<LiveState> {
        self.own_shared();
        let n = n.max(1);
        match self.sole_part(n, &client_shard, &retained_shard) {
            Some(k) => self.move_whole(n, k, client_shard),
            None => self.split_by_shard(n, client_shard, retained_shard),
        }
    }

    /// The one part of `n` that every session and retained entry goes to, if there is
    /// one (part 0 for a state with neither).
    fn sole_part(
        &self,
        n: usize,
        client_shard: &impl Fn(&str) -> usize,
        retained_shard: &impl Fn(&str) -> usize,
    ) -> Option<usize> {
        let homes = (self.sessions.keys().map(|c| client_shard(c) % n))
            .chain(self.retained.keys().map(|t| retained_shard(t) % n));
        let mut sole = None;
        for k in homes {
            if *sole.get_or_insert(k) != k {
                return None;
            }
        }
        Some(sole.unwrap_or(0))
    }

    /// [`LiveState::split`] of a state that goes whole to part `k`: what
    /// [`LiveState::split_by_shard`] builds (messages nothing refers to left out, the
    /// counts and commits not carried, the first part's extras in part 0, each Will in its
    /// client's part), moved.
    fn move_whole(
        mut self,
        n: usize,
        k: usize,
        client_shard: impl Fn(&str) -> usize,
    ) -> Vec<LiveState> {
        let bridges = std::mem::take(&mut self.bridges);
        let pending_wills = std::mem::take(&mut self.pending_wills);
        let armed_wills = std::mem::take(&mut self.armed_wills);
        let cluster_received = std::mem::take(&mut self.cluster_received);
        self.orphans = 0;
        self.qos2_dropped = 0;
        self.qos2_committed.clear();
        self.drop_unreferenced();
        let mut parts = vec![LiveState::default(); n];
        parts[k] = self;
        parts[0].bridges = bridges;
        place_wills(&mut parts, pending_wills, armed_wills, client_shard);
        parts[0].cluster_received = cluster_received;
        parts
    }

    /// [`LiveState::split`] taking the state apart: each session, retained entry and
    /// message placed on its own.
    pub(crate) fn split_by_shard(
        self,
        n: usize,
        client_shard: impl Fn(&str) -> usize,
        retained_shard: impl Fn(&str) -> usize,
    ) -> Vec<LiveState> {
        let mut sessions: Vec<Vec<SessionState>> = vec![Vec::new(); n];
        let mut retained: Vec<Vec<(String, Retained)>> = vec![Vec::new(); n];
        // (message, part) for every reference, so that each message can be moved to the
        // last part that wants it after a sort, instead of cloned into each.
        let mut wants: Vec<(MsgId, usize)> = Vec::new();
        for s in self.sessions {
            let k = client_shard(&s.info.client_id) % n;
            wants.extend(s.deliveries.iter().map(|d| (d.msg, k)));
            sessions[k].push(s);
        }
        for (topic, r) in self.retained {
            let k = retained_shard(&topic) % n;
            wants.extend(r.msg.map(|id| (id, k)));
            retained[k].push((topic, r));
        }
        wants.sort_unstable();
        wants.dedup();
        let mut messages: Vec<Vec<(MsgId, StoredMessage<'static>)>> = vec![Vec::new(); n];
        let mut wants = wants.into_iter().peekable();
        for (id, m) in self.messages {
            let mut last = None;
            while let Some((w, k)) = wants.next_if(|&(w, _)| w <= id) {
                if w == id {
                    if let Some(prev) = last.replace(k) {
                        messages[prev].push((id, m.clone()));
                    }
                }
            }
            if let Some(k) = last {
                messages[k].push((id, m));
            }
        }
        // Each list is in key order, so the ordered maps are built in bulk.
        let mut parts: Vec<LiveState> = (sessions.into_iter().zip(retained).zip(messages))
            .map(|((s, r), m)| LiveState {
                sessions: s.into_iter().collect(),
                retained: r.into_iter().collect(),
                messages: m.into_iter().collect(),
                ..LiveState::default()
            })
            .collect();
        parts[0].bridges = self.bridges;
        place_wills(
            &mut parts,
            self.pending_wills,
            self.armed_wills,
            client_shard,
        );
        // The cluster's gateway is shard 0 (`broker::cluster::GATEWAY_SHARD`).
        parts[0].cluster_received = self.cluster_received;
        parts
    }

    /// Records that rebuild this state when applied to an empty one, messages first.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        let messages = self.messages.iter().map(|(id, m)| Record::MessageStored {
            id: *id,
            msg: m.borrowed(),
        });
        let shared = self
            .shared
            .iter()
            .map(|(id, msg)| Record::MessageStored { id, msg });
        let sessions = self.sessions_by_id().into_iter().flat_map(session_records);
        let retained = self.retained.iter().map(|(topic, r)| match r.msg {
            Some(msg) => Record::RetainedSet {
                topic: topic.as_str().into(),
                msg,
                stamp: r.stamp,
                source: r.source.as_ref().map(RetainSource::borrowed),
            },
            None => Record::RetainedCleared {
                topic: topic.as_str().into(),
                stamp: r.stamp,
            },
        });
        let bridges = self.bridges.iter().flat_map(|(name, b)| b.records(name));
        let committed = self
            .qos2_committed
            .values()
            .map(|&txn| Record::Qos2Committed { txn });
        let wills = self
            .pending_wills
            .iter()
            .map(|(&id, w)| Record::WillPending {
                id,
                client_id: w.client_id.as_deref().map(std::borrow::Cow::Borrowed),
                stamp: w.stamp,
                msg: w.msg.borrowed(),
            });
        let armed = self.armed_wills.iter().map(|(&id, w)| Record::WillArmed {
            id,
            client_id: w.client_id.as_deref().map(std::borrow::Cow::Borrowed),
            will: w.will.borrowed(),
        });
        let received = self
            .cluster_received
            .iter()
            .map(|id| Record::ClusterReceived { id, txn: 0 });
        messages
            .chain(shared)
            .chain(sessions)
            .chain(retained)
            .chain(bridges)
            .chain(committed)
            .chain(wills)
            .chain(armed)
            .chain(received)
    }
}

/// Put each pending and armed Will into the part of its client's home shard
/// (`client_shard` modulo the part count), or into part 0 when its records do not name its
/// client. Each keeps its number: a part's Wills are in their order, and the merge into
/// the broker's part renumbers them in that order ([`LiveState::merge`]).
fn place_wills(
    parts: &mut [LiveState],
    pending: BTreeMap<u64, PendingWill>,
    armed: BTreeMap<u64, ArmedWill>,
    client_shard: impl Fn(&str) -> usize,
) {
    let n = parts.len().max(1);
    let home = |c: Option<&str>| c.map_or(0, |c| client_shard(c) % n);
    for (id, w) in pending {
        if let Some(p) = parts.get_mut(home(w.client_id.as_deref())) {
            p.pending_wills.insert(id, w);
        }
    }
    for (id, w) in armed {
        if let Some(p) = parts.get_mut(home(w.client_id.as_deref())) {
            p.armed_wills.insert(id, w);
        }
    }
}

/// Which message ids a state holds, answered without a binary search of its messages for
/// every delivery (1M searches of a 1M-entry `Vec`, each a few cache misses, were most
/// of [`LiveState::finish`]'s time in a 1M-message recovery).
///
/// A bit per id from the lowest to the highest when they span at most
/// [`ID_SPAN_BITS_PER_MESSAGE_MAX`] times their number (a log's ids: dense, or spread by the
/// acknowledged messages dropped between them); else the binary search.
enum StoredIds {
    /// Bit `id - first` of the words is set when message `id` is stored.
    Bits { first: u64, words: Vec<u64> },
    /// Ask the messages.
    Search,
}

/// The largest id span per message for which [`StoredIds::Bits`] is built (8 bytes per
/// message at most).
const ID_SPAN_BITS_PER_MESSAGE_MAX: u64 = 64;

impl StoredIds {
    fn of(messages: &Messages) -> StoredIds {
        let (Some(first), Some(last)) = (messages.keys().next(), messages.keys().next_back())
        else {
            return StoredIds::Search;
        };
        let span = last.0 - first.0 + 1;
        let per = ID_SPAN_BITS_PER_MESSAGE_MAX.saturating_mul(messages.len() as u64);
        let Some(words) = usize::try_from(span.div_ceil(64))
            .ok()
            .filter(|_| span <= per)
        else {
            return StoredIds::Search;
        };
        let mut bits = vec![0u64; words];
        for id in messages.keys() {
            let at = id.0 - first.0;
            if let Some(w) = bits.get_mut((at / 64) as usize) {
                *w |= 1 << (at % 64);
            }
        }
        StoredIds::Bits {
            first: first.0,
            words: bits,
        }
    }

    /// Whether `id` is one of `messages` (the ones this was made of).
    fn has(&self, id: &MsgId, messages: &Messages) -> bool {
        match self {
            StoredIds::Bits { first, words } => id.0.checked_sub(*first).is_some_and(|at| {
                usize::try_from(at / 64)
                    .ok()
                    .and_then(|w| words.get(w))
                    .is_some_and(|w| w & (1 << (at % 64)) != 0)
            }),
            StoredIds::Search => messages.contains_key(id),
        }
    }
}

/// The records of one session: created, disconnected, subscriptions, deliveries, QoS 2 ids.
fn session_records(s: &SessionState) -> Vec<Record<'_>> {
    let client = || std::borrow::Cow::Borrowed(s.info.client_id.as_ref());
    let mut out = vec![Record::SessionCreated(s.info.borrowed())];
    if let Some(at) = s.disconnected_at_unix_ms {
        out.push(Record::SessionDisconnected {
            client_id: client(),
            at_unix_ms: at,
        });
    }
    out.extend(s.subscriptions.iter().map(|sub| Record::SubscriptionAdded {
        client_id: client(),
        sub,
    }));
    for d in &s.deliveries {
        let sub_ids = d.sub_ids.as_slice().into();
        let in_flight = d.packet_id.filter(|_| d.state == DeliveryState::InFlight);
        out.push(match in_flight {
            Some(packet_id) => Record::DeliveryQueuedSent {
                client_id: client(),
                msg: d.msg,
                qos: d.qos,
                retain: d.retain,
                sub_ids,
                packet_id,
                txn: d.txn,
            },
            None => Record::DeliveryQueued {
                client_id: client(),
                msg: d.msg,
                qos: d.qos,
                retain: d.retain,
                sub_ids,
                txn: d.txn,
            },
        });
        if let Some((group, filter)) = &d.share {
            out.push(Record::DeliveryShare {
                client_id: client(),
                group: group.as_str().into(),
                filter: filter.as_str().into(),
            });
        }
        if let Some(packet_id) = d.packet_id.filter(|_| in_flight.is_none()) {
            out.push(Record::DeliverySent {
                client_id: client(),
                msg: d.msg,
                packet_id,
                state: d.state,
            });
        }
    }
    out.extend(
        s.incoming_qos2
            .iter()
            .map(|&packet_id| Record::IncomingQos2Set {
                client_id: client(),
                packet_id,
            }),
    );
    if s.qos2_next != 0 {
        out.push(Record::Qos2Numbering {
            client_id: client(),
            next: s.qos2_next,
        });
    }
    out.extend(
        s.share_completed
            .iter()
            .map(|(share_id, group, filter)| Record::ShareCompleted {
                client_id: client(),
                share_id: *share_id,
                group: group.as_str().into(),
                filter: filter.as_str().into(),
            }),
    );
    out
}

/// The client id of a delivery's own record (queued, sent, done, dropped); `None` for any
/// other record.
fn delivery_client<'r>(r: &'r Record<'_>) -> Option<&'r str> {
    match r {
        Record::DeliveryQueued { client_id, .. }
        | Record::DeliveryQueuedSent { client_id, .. }
        | Record::DeliverySent { client_id, .. }
        | Record::DeliveryDone { client_id, .. }
        | Record::DeliveryDropped { client_id, .. } => Some(client_id),
        _ => None,
    }
}

/// Apply a delivery's own record `r` to its session `s` (others: nothing).
fn apply_to_session(s: &mut SessionState, r: &Record<'_>) {
    match r {
        Record::DeliveryQueued {
            msg,
            qos,
            retain,
            sub_ids,
            txn,
            ..
        } => {
            let d = Delivery::new(*msg, *qos, *retain, sub_ids.to_vec(), None, *txn);
            s.deliveries.push(d);
        }
        Record::DeliveryQueuedSent {
            msg,
            qos,
            retain,
            sub_ids,
            packet_id,
            txn,
            ..
        } => {
            let ids = sub_ids.to_vec();
            let d = Delivery::new(*msg, *qos, *retain, ids, Some(*packet_id), *txn);
            s.deliveries.push(d);
        }
        Record::DeliverySent {
            msg,
            packet_id,
            state,
            ..
        } => s.deliveries.sent(*msg, *packet_id, *state),
        Record::DeliveryDone { packet_id, .. } => s.deliveries.done(*packet_id),
        Record::DeliveryDropped { msg, .. } => s.deliveries.dropped(*msg),
        _ => {}
    }
}
#[cfg(test)]
mod tests;
