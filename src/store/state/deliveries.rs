//! [`Deliveries`]: one session's outbound deliveries in queue order, indexed so that a
//! record about one of them finds it without scanning the queue.
//!
//! Owns: the deliveries, a sequence number per delivery (its queue position), an index by
//! packet id and an index of the not yet sent deliveries by message. Invariants: at most
//! one delivery holds a packet id (a `sent` for a held id updates that delivery); a
//! delivery is in `unsent` exactly when it has no packet id, and each `unsent` list is in
//! queue order. So `sent`, `done` and `dropped` cost O(log n) however long the queue is
//! (a queue of n deliveries drained record by record costs O(n log n), not O(n²)).
//! Ordered maps, not hash maps: no hashing per record, and the maps are small (one
//! session's in-flight window and queue). Must not touch: messages, files.

use std::collections::BTreeMap;
use std::num::NonZeroU16;

use smallvec::SmallVec;

use super::Delivery;
use crate::store::record::{DeliveryState, MsgId};

/// A session's deliveries, oldest first.
#[derive(Clone, Default)]
pub struct Deliveries {
    /// By sequence number, which grows with each push: iteration is queue order.
    items: BTreeMap<u64, Delivery>,
    next_seq: u64,
    /// The delivery holding each packet id.
    by_pid: BTreeMap<NonZeroU16, u64>,
    /// Deliveries without a packet id, by message, oldest first.
    unsent: BTreeMap<MsgId, SmallVec<[u64; 1]>>,
}

impl Deliveries {
    /// Append `d` at the end of the queue. A packet id another delivery holds already is
    /// dropped from `d` (the index keeps one delivery per id; the log never does this).
    pub fn push(&mut self, mut d: Delivery) {
        let seq = self.next_seq;
        self.next_seq += 1;
        match d.packet_id {
            Some(pid) if !self.by_pid.contains_key(&pid) => {
                self.by_pid.insert(pid, seq);
            }
            _ => {
                d.packet_id = None;
                d.state = DeliveryState::Queued;
                self.unsent.entry(d.msg).or_default().push(seq);
            }
        }
        self.items.insert(seq, d);
    }

    /// A `DeliverySent` record: the delivery holding `packet_id` moves to `state`; else
    /// the oldest unsent delivery of `msg` takes `packet_id` and `state`. Nothing if
    /// neither exists.
    pub fn sent(&mut self, msg: MsgId, packet_id: NonZeroU16, state: DeliveryState) {
        let seq = match self.by_pid.get(&packet_id) {
            Some(&seq) => seq,
            None => match self.take_unsent(msg) {
                Some(seq) => {
                    self.by_pid.insert(packet_id, seq);
                    seq
                }
                None => return,
            },
        };
        if let Some(d) = self.items.get_mut(&seq) {
            d.packet_id = Some(packet_id);
            d.state = state;
        }
    }

    /// A `DeliveryDone` record: the delivery holding `packet_id` is gone.
    pub fn done(&mut self, packet_id: NonZeroU16) {
        if let Some(seq) = self.by_pid.remove(&packet_id) {
            self.items.remove(&seq);
        }
    }

    /// A `DeliveryDropped` record: the oldest unsent delivery of `msg` is gone.
    pub fn dropped(&mut self, msg: MsgId) {
        if let Some(seq) = self.take_unsent(msg) {
            self.items.remove(&seq);
        }
    }

    fn take_unsent(&mut self, msg: MsgId) -> Option<u64> {
        let list = self.unsent.get_mut(&msg)?;
        let seq = (!list.is_empty()).then(|| list.remove(0));
        if list.is_empty() {
            self.unsent.remove(&msg);
        }
        seq
    }

    /// The deliveries, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Delivery> + '_ {
        self.items.values()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keep the deliveries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Delivery) -> bool) {
        let before = self.items.len();
        self.items.retain(|_, d| keep(d));
        if self.items.len() != before {
            self.reindex();
        }
    }

    /// A `DeliveryTxn` record: the newest delivery belongs to QoS 2 routing `txn` (the
    /// routing number is not indexed, so it may be changed in place).
    pub fn set_last_txn(&mut self, txn: u64) {
        if let Some(d) = self.items.values_mut().next_back() {
            d.txn = txn;
        }
    }

    /// A `DeliveryShare` record: the newest delivery came through share group `group` on
    /// `filter` (not indexed, so it may be changed in place).
    pub fn set_last_share(&mut self, group: String, filter: String) {
        if let Some(d) = self.items.values_mut().next_back() {
            d.share = Some((group, filter));
        }
    }

    /// Forget every delivery's QoS 2 routing number (once the routings are settled).
    pub fn clear_txns(&mut self) {
        for d in self.items.values_mut() {
            d.txn = 0;
        }
    }

    /// Rename every delivery's message through `map` (merging another shard's state).
    pub fn map_msgs(&mut self, mut map: impl FnMut(MsgId) -> MsgId) {
        for d in self.items.values_mut() {
            d.msg = map(d.msg);
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        let items = std::mem::take(&mut self.items);
        self.by_pid.clear();
        self.unsent.clear();
        for d in items.into_values() {
            self.push(d);
        }
    }
}

impl FromIterator<Delivery> for Deliveries {
    fn from_iter<I: IntoIterator<Item = Delivery>>(iter: I) -> Self {
        let mut out = Deliveries::default();
        for d in iter {
            out.push(d);
        }
        out
    }
}

impl<'a> IntoIterator for &'a Deliveries {
    type Item = &'a Delivery;
    type IntoIter = std::collections::btree_map::Values<'a, u64, Delivery>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.values()
    }
}

/// Equal when the same deliveries are in the same order (sequence numbers aside).
impl PartialEq for Deliveries {
    fn eq(&self, other: &Self) -> bool {
        self.items.values().eq(other.items.values())
    }
}

impl Eq for Deliveries {}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.items.values()).finish()
    }
}
