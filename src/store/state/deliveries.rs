//! [`Deliveries`]: one session's outbound deliveries in queue order, indexed so that a
//! record about one of them finds it without scanning the queue.
//!
//! Owns: the deliveries, a sequence number per delivery (its queue position), an index by
//! packet id and an index of the not yet sent deliveries by message. Invariants: at most
//! one delivery holds a packet id (a `sent` for a held id updates that delivery); a
//! delivery is in `unsent` exactly when it has no packet id, and each `unsent` list is in
//! queue order; `slots` is in increasing sequence order, its front is never a hole, and it
//! holds at most `live + HOLES_SLACK` holes (removals leave a hole, compacted away in one
//! pass past that bound). So `push` costs O(1) plus an index insert, and `sent`, `done`
//! and `dropped` O(log n) however long the queue is (a queue of n deliveries drained
//! record by record costs O(n log n), not O(n²)).
//!
//! The queue is a `VecDeque` of slots, not an ordered map: a journal's shadow state pushes
//! a delivery and removes it again for every durable QoS 1 message, usually from the
//! front, and an ordered map's node inserts and removals (moving the ≈ 100-byte
//! deliveries within their nodes) were ≈ 14% of the broker's instructions per durable
//! message (`docs/benchmarks.md`, "fourth round"). The packet-id index is a hash map with
//! a one-multiply hash of the 16-bit id (its ordered map's insert and removal were ≈ 5.5%
//! of them: "fifth round"); nothing walks it in order. The unsent index stays an ordered
//! map. Must not touch: messages, files.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU16;

use smallvec::SmallVec;

use super::Delivery;
use crate::store::record::{DeliveryState, MsgId};

/// Holes a queue keeps beyond its live count before it is compacted (so a small queue
/// whose deliveries are acknowledged out of order is not compacted at every removal).
const HOLES_SLACK: usize = 32;

/// A place in the queue: its sequence number and its delivery (`None`: removed).
type Slot = (u64, Option<Delivery>);

/// A session's deliveries, oldest first.
#[derive(Clone, Default)]
pub struct Deliveries {
    /// In increasing sequence number: iteration is queue order.
    slots: VecDeque<Slot>,
    /// Deliveries in `slots` (the slots that are not holes).
    live: usize,
    next_seq: u64,
    /// The delivery holding each packet id.
    by_pid: HashMap<NonZeroU16, u64, BuildHasherDefault<PidHasher>>,
    /// Deliveries without a packet id, by message, oldest first.
    unsent: BTreeMap<MsgId, SmallVec<[u64; 1]>>,
}

/// The hash of a packet id: one multiply (Fibonacci hashing), so that the map's top bits,
/// which pick its groups, depend on every bit of the id.
#[derive(Default)]
struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Deliveries {
    /// Append `d` at the end of the queue. A packet id another delivery holds already is
    /// dropped from `d` (the index keeps one delivery per id; the log never does this).
    pub fn push(&mut self, mut d: Delivery) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let held = match d.packet_id {
            Some(pid) => match self.by_pid.entry(pid) {
                Entry::Vacant(v) => {
                    v.insert(seq);
                    true
                }
                Entry::Occupied(_) => false,
            },
            None => false,
        };
        if !held {
            d.packet_id = None;
            d.state = DeliveryState::Queued;
            self.unsent.entry(d.msg).or_default().push(seq);
        }
        self.slots.push_back((seq, Some(d)));
        self.live += 1;
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
        if let Some(d) = self.get_mut(seq) {
            d.packet_id = Some(packet_id);
            d.state = state;
        }
    }

    /// A `DeliveryDone` record: the delivery holding `packet_id` is gone.
    pub fn done(&mut self, packet_id: NonZeroU16) {
        if let Some(seq) = self.by_pid.remove(&packet_id) {
            self.remove(seq);
        }
    }

    /// A `DeliveryDropped` record: the oldest unsent delivery of `msg` is gone.
    pub fn dropped(&mut self, msg: MsgId) {
        if let Some(seq) = self.take_unsent(msg) {
            self.remove(seq);
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

    /// The index in `slots` of sequence number `seq`, if it is there.
    fn index(&self, seq: u64) -> Option<usize> {
        let first = self.slots.front()?.0;
        // Without compaction since, sequence numbers are contiguous from the front.
        let guess = usize::try_from(seq.checked_sub(first)?).ok()?;
        if self.slots.get(guess).is_some_and(|s| s.0 == seq) {
            return Some(guess);
        }
        self.slots.binary_search_by_key(&seq, |s| s.0).ok()
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Delivery> {
        let i = self.index(seq)?;
        self.slots.get_mut(i)?.1.as_mut()
    }

    /// Leave a hole where `seq` was; drop the holes at the front, and compact the queue
    /// once it holds more holes than its bound.
    fn remove(&mut self, seq: u64) {
        let Some(i) = self.index(seq) else {
            return;
        };
        if self.slots[i].1.take().is_none() {
            return;
        }
        self.live -= 1;
        while self.slots.front().is_some_and(|s| s.1.is_none()) {
            self.slots.pop_front();
        }
        if self.slots.len() - self.live > self.live + HOLES_SLACK {
            self.slots.retain(|s| s.1.is_some());
        }
    }

    /// The deliveries, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            slots: self.slots.iter(),
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Keep the deliveries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Delivery) -> bool) {
        let before = self.live;
        for s in self.slots.iter_mut() {
            if s.1.as_ref().is_some_and(|d| !keep(d)) {
                s.1 = None;
                self.live -= 1;
            }
        }
        if self.live != before {
            self.reindex();
        }
    }

    /// The newest delivery.
    fn last_mut(&mut self) -> Option<&mut Delivery> {
        self.slots.iter_mut().rev().find_map(|s| s.1.as_mut())
    }

    /// A `DeliveryTxn` record: the newest delivery belongs to QoS 2 routing `txn` (the
    /// routing number is not indexed, so it may be changed in place).
    pub fn set_last_txn(&mut self, txn: u64) {
        if let Some(d) = self.last_mut() {
            d.txn = txn;
        }
    }

    /// A `DeliveryShare` record: the newest delivery came through share group `group` on
    /// `filter` (not indexed, so it may be changed in place).
    pub fn set_last_share(&mut self, group: String, filter: String) {
        if let Some(d) = self.last_mut() {
            d.share = Some((group, filter));
        }
    }

    /// Forget every delivery's QoS 2 routing number (once the routings are settled).
    pub fn clear_txns(&mut self) {
        for d in self.slots.iter_mut().filter_map(|s| s.1.as_mut()) {
            d.txn = 0;
        }
    }

    /// Rename every delivery's message through `map` (merging another shard's state).
    pub fn map_msgs(&mut self, mut map: impl FnMut(MsgId) -> MsgId) {
        for d in self.slots.iter_mut().filter_map(|s| s.1.as_mut()) {
            d.msg = map(d.msg);
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        let slots = std::mem::take(&mut self.slots);
        self.live = 0;
        self.by_pid.clear();
        self.unsent.clear();
        for d in slots.into_iter().filter_map(|s| s.1) {
            self.push(d);
        }
    }
}

/// The deliveries of a [`Deliveries`], oldest first.
#[derive(Clone)]
pub struct Iter<'a> {
    slots: std::collections::vec_deque::Iter<'a, Slot>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Delivery;

    fn next(&mut self) -> Option<&'a Delivery> {
        self.slots.by_ref().find_map(|s| s.1.as_ref())
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.slots.by_ref().rev().find_map(|s| s.1.as_ref())
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
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Equal when the same deliveries are in the same order (sequence numbers aside).
impl PartialEq for Deliveries {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Deliveries {}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive form: a `Vec` scanned for every record.
    #[derive(Default)]
    struct Naive(Vec<Delivery>);

    impl Naive {
        fn push(&mut self, mut d: Delivery) {
            let held = d
                .packet_id
                .is_some_and(|p| self.0.iter().any(|x| x.packet_id == Some(p)));
            if held || d.packet_id.is_none() {
                d.packet_id = None;
                d.state = DeliveryState::Queued;
            }
            self.0.push(d);
        }

        fn sent(&mut self, msg: MsgId, pid: NonZeroU16, state: DeliveryState) {
            let held = self.0.iter().position(|x| x.packet_id == Some(pid));
            let i = held.or_else(|| {
                self.0
                    .iter()
                    .position(|x| x.packet_id.is_none() && x.msg == msg)
            });
            if let Some(d) = i.and_then(|i| self.0.get_mut(i)) {
                d.packet_id = Some(pid);
                d.state = state;
            }
        }

        fn done(&mut self, pid: NonZeroU16) {
            if let Some(i) = self.0.iter().position(|x| x.packet_id == Some(pid)) {
                self.0.remove(i);
            }
        }

        fn dropped(&mut self, msg: MsgId) {
            let i = self
                .0
                .iter()
                .position(|x| x.packet_id.is_none() && x.msg == msg);
            if let Some(i) = i {
                self.0.remove(i);
            }
        }
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
        }
    }

    fn pid(n: u64) -> NonZeroU16 {
        NonZeroU16::new(u16::try_from(n % 200 + 1).expect("below 201")).expect("non-zero")
    }

    /// Random records of few messages and packet ids (so they collide), acknowledged in
    /// and out of order, with sweeps of `retain`: the queue equals the naive one after
    /// every step, including the compactions and front pops the holes cause.
    #[test]
    fn deliveries_match_a_naive_vec_under_random_records() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let (mut q, mut n) = (Deliveries::default(), Naive::default());
            for step in 0..3_000u64 {
                let msg = MsgId(rng.below(40));
                let p = pid(rng.below(250));
                match rng.below(10) {
                    0..=3 => {
                        let sent = (rng.below(2) == 0).then_some(p);
                        let d = Delivery::new(msg, 1, false, vec![step as u32], sent, 0);
                        q.push(d.clone());
                        n.push(d);
                    }
                    4 | 5 => {
                        let state = if rng.below(4) == 0 {
                            DeliveryState::PubrelSent
                        } else {
                            DeliveryState::InFlight
                        };
                        q.sent(msg, p, state);
                        n.sent(msg, p, state);
                    }
                    6 | 7 => {
                        // Mostly the oldest in flight (in order), sometimes any.
                        let oldest = n.0.iter().find_map(|d| d.packet_id);
                        let p = if rng.below(3) == 0 { Some(p) } else { oldest };
                        if let Some(p) = p {
                            q.done(p);
                            n.done(p);
                        }
                    }
                    8 => {
                        q.dropped(msg);
                        n.dropped(msg);
                    }
                    _ if rng.below(20) == 0 => {
                        let cut = MsgId(rng.below(40));
                        q.retain(|d| d.msg != cut);
                        n.0.retain(|d| d.msg != cut);
                    }
                    _ => {}
                }
                assert_eq!(q.len(), n.0.len(), "seed {seed} step {step}");
                assert!(q.iter().eq(n.0.iter()), "seed {seed} step {step}");
                assert!(
                    q.iter().rev().eq(n.0.iter().rev()),
                    "seed {seed} step {step}"
                );
                assert!(q.slots.len() <= q.live * 2 + HOLES_SLACK + 1);
            }
        }
    }
}
