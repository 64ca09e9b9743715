//! The receiving link's order check for QoS ≥ 1 messages from other nodes
//! (`docs/cluster.md`, "QoS 1/2 between nodes", *Order*): a message that names the one
//! before it on its topic (`Smq-Prev`, set by the publishing link when that one could still
//! be behind it — a store retried, a core copy after a failed store) waits here until that
//! one has been passed on, or until `ORDER_HOLD_MS` passed.
//!
//! Owns: per origin node a window of the sequence numbers of the chained messages passed
//! on lately, and the held messages keyed by (origin, the sequence they wait for).
//! Invariant: a message leaves only after the one it names, unless that one is not seen
//! within `ORDER_HOLD_MS` (lost: a core copy that never came, or passed on too long ago
//! to be in the window, or before this link started); what waits behind a message leaves
//! right after it, in chain order. Held messages are bounded (`HELD_MAX`): past it the
//! oldest leaves at once. Must not touch: NATS, the node's queues (the caller pushes what
//! comes out, in order).
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// Longest a message waits for the one it names. The publishing link gives a store 2 s
/// (`link::QUEUE_PUBLISH_WAIT_MS`) before its core copy goes, and releases core copies in
/// publish order; this leaves room for that and for a backlog in this node's queue.
pub const ORDER_HOLD_MS: u64 = 5000;
/// Messages held at most; past it the oldest is passed on without its predecessor.
pub const HELD_MAX: usize = 16_384;
/// Chained messages remembered per origin as passed on. A store names its predecessor
/// only while that is unreleased on the publishing link (at most its
/// `link::QUEUE_PENDING_MAX`, 16,384, messages earlier), so it is still in the window.
pub const DELIVERED_WINDOW_MESSAGES: usize = 32_768;
/// Origins remembered; past it the windows start afresh.
pub const ORIGINS_MAX: usize = 64;

#[derive(Default)]
struct Window {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

struct Held<T> {
    seq: u64,
    topic: String,
    item: T,
}

/// Chained messages in, the same messages out in chain order.
pub struct Reorder<T> {
    delivered: HashMap<String, Window>,
    /// (origin, the sequence it waits for) → the message.
    held: HashMap<(String, u64), Held<T>>,
    /// (due, origin, waits for, own sequence), in the order they were held (so by due).
    due: VecDeque<(u64, String, u64, u64)>,
    /// (origin, topic) → the sequence numbers held on it: a message on that topic waits
    /// behind the last held one before it too, even when it names none (its predecessor
    /// was stored ahead of it and came, but is held itself).
    topics: HashMap<(String, String), BTreeSet<u64>>,
    /// Messages passed on at their bound without their predecessor.
    expired: u64,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder {
            delivered: HashMap::new(),
            held: HashMap::new(),
            due: VecDeque::new(),
            topics: HashMap::new(),
            expired: 0,
        }
    }
}

impl<T> Reorder<T> {
    /// Messages held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Messages passed on at their bound, without the one they named, so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// When the oldest held message is due (ms on the caller's clock), if any.
    pub fn next_due(&self) -> Option<u64> {
        self.due.front().map(|d| d.0)
    }

    /// Message `seq` from `origin` on `topic`, naming `prev` as the one before it on its
    /// topic (None: nothing to wait for). Appends to `out` what may go now, in order:
    /// nothing (held), or the message and whatever waited behind it. Returns whether it
    /// was held. It waits for `prev` if that was not passed on, else for the last message
    /// before it held on its topic, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        origin: &str,
        topic: &str,
        seq: u64,
        prev: Option<u64>,
        now_ms: u64,
        item: T,
        out: &mut Vec<T>,
    ) -> bool {
        let wait = prev.filter(|&p| !self.was_passed(origin, p)).or_else(|| {
            if self.held.is_empty() {
                return None;
            }
            let on_topic = self.topics.get(&(origin.to_string(), topic.to_string()))?;
            on_topic.range(..seq).next_back().copied()
        });
        let Some(p) = wait else {
            self.pass(origin, seq, item, out);
            return false;
        };
        let key = (origin.to_string(), p);
        // Two messages waiting for the same one (not made by one link): the first goes.
        if let Some(h) = self.held.remove(&key) {
            self.unhold(origin, &h);
            self.pass(origin, h.seq, h.item, out);
        }
        let topic = topic.to_string();
        self.topics
            .entry((origin.to_string(), topic.clone()))
            .or_default()
            .insert(seq);
        self.held.insert(key, Held { seq, topic, item });
        self.due.push_back((
            now_ms.saturating_add(ORDER_HOLD_MS),
            origin.to_string(),
            p,
            seq,
        ));
        while self.held.len() > HELD_MAX {
            self.expire_front(out);
        }
        true
    }

    /// `h` leaves the held messages of its topic.
    fn unhold(&mut self, origin: &str, h: &Held<T>) {
        let key = (origin.to_string(), h.topic.clone());
        if let Some(set) = self.topics.get_mut(&key) {
            set.remove(&h.seq);
            if set.is_empty() {
                self.topics.remove(&key);
            }
        }
    }

    /// Pass on, in order, the held messages whose bound is reached at `now_ms`.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<T>) {
        while self.due.front().is_some_and(|d| d.0 <= now_ms) {
            self.expire_front(out);
        }
    }

    fn expire_front(&mut self, out: &mut Vec<T>) {
        let Some((_, origin, prev, seq)) = self.due.pop_front() else {
            return;
        };
        let key = (origin, prev);
        // Already passed on behind its predecessor: nothing to do.
        if self.held.get(&key).is_some_and(|h| h.seq == seq) {
            if let Some(h) = self.held.remove(&key) {
                self.expired += 1;
                self.unhold(&key.0, &h);
                self.pass(&key.0, h.seq, h.item, out);
            }
        }
    }

    /// Pass `item` on, then every message that waited for it, and for those, in order.
    fn pass(&mut self, origin: &str, seq: u64, item: T, out: &mut Vec<T>) {
        out.push(item);
        self.remember(origin, seq);
        if self.held.is_empty() {
            return;
        }
        let mut last = seq;
        while let Some(h) = self.held.remove(&(origin.to_string(), last)) {
            self.unhold(origin, &h);
            out.push(h.item);
            self.remember(origin, h.seq);
            last = h.seq;
        }
    }

    fn was_passed(&self, origin: &str, seq: u64) -> bool {
        self.delivered
            .get(origin)
            .is_some_and(|w| w.set.contains(&seq))
    }

    fn remember(&mut self, origin: &str, seq: u64) {
        let w = match self.delivered.get_mut(origin) {
            Some(w) => w,
            None => {
                if self.delivered.len() >= ORIGINS_MAX {
                    self.delivered.clear();
                }
                self.delivered.entry(origin.to_string()).or_default()
            }
        };
        if !w.set.insert(seq) {
            return;
        }
        w.order.push_back(seq);
        if w.order.len() > DELIVERED_WINDOW_MESSAGES {
            if let Some(old) = w.order.pop_front() {
                w.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn offer(r: &mut Reorder<u64>, seq: u64, prev: Option<u64>, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        r.offer("a", "t", seq, prev, now, seq, &mut out);
        out
    }

    /// A store retried behind later ones (1 lands after 2 and 3): 2 and 3 wait for it.
    #[test]
    fn later_messages_wait_for_the_one_they_name() {
        let mut r = Reorder::default();
        assert_eq!(offer(&mut r, 10, None, 0), [10]);
        assert_eq!(offer(&mut r, 12, Some(11), 0), Vec::<u64>::new());
        assert_eq!(offer(&mut r, 13, Some(12), 1), Vec::<u64>::new());
        assert_eq!(r.held(), 2);
        assert_eq!(offer(&mut r, 11, Some(10), 2), [11, 12, 13]);
        assert_eq!(r.held(), 0);
        assert_eq!(offer(&mut r, 14, Some(13), 3), [14], "13 was passed on");
        // Another origin's numbers are its own.
        let mut out = Vec::new();
        assert!(r.offer("b", "t", 1, Some(13), 3, 1, &mut out));
        assert!(out.is_empty());
    }

    /// A predecessor that never comes (a lost core copy, or one passed on before this
    /// link started) holds its successors for `ORDER_HOLD_MS` only, then they go in order.
    #[test]
    fn a_missing_predecessor_holds_for_the_bound_only() {
        let mut r = Reorder::default();
        assert!(offer(&mut r, 5, Some(4), 100).is_empty());
        assert!(offer(&mut r, 6, Some(5), 150).is_empty());
        assert_eq!(r.next_due(), Some(100 + ORDER_HOLD_MS));
        let mut out = Vec::new();
        r.expire(100 + ORDER_HOLD_MS - 1, &mut out);
        assert!(out.is_empty());
        r.expire(100 + ORDER_HOLD_MS, &mut out);
        assert_eq!(out, [5, 6], "6 went right behind 5, not at its own bound");
        assert_eq!(r.expired(), 1);
        out.clear();
        r.expire(u64::MAX, &mut out);
        assert!(
            out.is_empty() && r.next_due().is_none(),
            "6's bound was stale"
        );
        assert_eq!(offer(&mut r, 4, None, 200), [4], "late: passed on at once");
    }

    #[test]
    fn the_held_messages_are_bounded() {
        let mut r = Reorder::default();
        for i in 0..HELD_MAX as u64 {
            assert!(offer(&mut r, 2 * i + 1, Some(2 * i), 0).is_empty());
        }
        assert_eq!(offer(&mut r, u64::MAX, Some(u64::MAX - 1), 0), [1]);
        assert_eq!(r.held(), HELD_MAX);
    }

    /// A model of a publishing link (its release list and the chain it keeps), a storer
    /// whose stores land in send order but fail at random — retried at the end of the
    /// line, given up after three attempts (the core copy then goes) — and a receiving
    /// link that takes B's queue and the core copies in any interleaving. B is meant for
    /// every message from the start (the switch to the durable path is modelled in
    /// `release`, which relies on one server's order between the two paths). Each topic
    /// must come out in order, each message once, with nothing held at the end.
    #[test]
    fn a_model_of_failing_stores_keeps_every_topic_in_order() {
        use crate::cluster::release::ReleaseList;
        const TOPICS: usize = 3;
        const MESSAGES: u64 = 120;
        let b: Arc<str> = "b".into();
        for seed in 1..=400u64 {
            let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut below = |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            };
            // Items: (topic, its number on the topic, the link's sequence number).
            let mut list: ReleaseList<(usize, u64, u64)> = ReleaseList::default();
            // Sends in order: (list id, seq, prev, attempt).
            let mut line: VecDeque<(u64, u64, Option<u64>, u32)> = VecDeque::new();
            type Copy = (u64, Option<u64>, (usize, u64));
            let mut queue: VecDeque<Copy> = VecDeque::new();
            let mut core: VecDeque<Copy> = VecDeque::new();
            let mut r: Reorder<(usize, u64)> = Reorder::default();
            let mut out = Vec::new();
            let (mut seq, mut per_topic) = (0u64, [0u64; TOPICS]);
            let topics = ["t0", "t1", "t2"];
            loop {
                for id in list.take_starts() {
                    let prev = list.store_prevs(id).first().copied().flatten();
                    let (_, &(_, _, s)) = list.get(id).expect("started: listed");
                    line.push_back((id, s, prev, 0));
                }
                while let Some(rel) = list.next_release() {
                    if let Some((_, p)) = rel.missed.first() {
                        let (k, n, s) = rel.item;
                        core.push_back((s, (*p != 0).then_some(*p), (k, n)));
                    }
                }
                let idle = line.is_empty() && queue.is_empty() && core.is_empty();
                if seq == MESSAGES && idle {
                    break;
                }
                match below(5) {
                    0 if seq < MESSAGES => {
                        let k = below(TOPICS as u64) as usize;
                        seq += 1;
                        let store = below(20) != 0;
                        let item = (k, per_topic[k], seq);
                        list.push(topics[k], vec![b.clone()], store, seq, item);
                        per_topic[k] += 1;
                    }
                    1 => {
                        if let Some((id, s, prev, tries)) = line.pop_front() {
                            let &(k, n, _) = list.get(id).expect("storing: listed").1;
                            let item = (k, n);
                            if below(3) == 0 {
                                if tries < 2 {
                                    line.push_back((id, s, prev, tries + 1));
                                } else {
                                    list.stored(id, Vec::new());
                                }
                            } else {
                                queue.push_back((s, prev, item));
                                list.stored(id, vec![b.clone()]);
                            }
                        }
                    }
                    2 => {
                        if let Some((s, prev, item)) = queue.pop_front() {
                            r.offer("a", topics[item.0], s, prev, 0, item, &mut out);
                        }
                    }
                    3 => {
                        if let Some((s, prev, item)) = core.pop_front() {
                            r.offer("a", topics[item.0], s, prev, 0, item, &mut out);
                        }
                    }
                    _ => {}
                }
            }
            assert_eq!(r.held(), 0, "seed {seed}: nothing left waiting");
            for (k, &sent) in per_topic.iter().enumerate() {
                let got: Vec<u64> = out.iter().filter(|m| m.0 == k).map(|m| m.1).collect();
                let want: Vec<u64> = (0..sent).collect();
                assert_eq!(got, want, "seed {seed}, topic {k}");
            }
        }
    }

    /// A model: one origin, four topics each a chain; every message reaches the receiver
    /// in a random order; what comes out keeps each chain's order, each message once.
    #[test]
    fn shuffled_chains_come_out_in_order() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut below = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..200 {
            let mut msgs: Vec<(u64, Option<u64>, usize)> = Vec::new();
            let mut last: [Option<u64>; 4] = [None; 4];
            for seq in 1..=60u64 {
                let t = below(4) as usize;
                msgs.push((seq, last[t], t));
                last[t] = Some(seq);
            }
            for i in (1..msgs.len()).rev() {
                let j = below(i as u64 + 1) as usize;
                msgs.swap(i, j);
            }
            let mut r = Reorder::default();
            let mut out = Vec::new();
            for &(seq, prev, t) in &msgs {
                r.offer(
                    "a",
                    ["t0", "t1", "t2", "t3"][t],
                    seq,
                    prev,
                    0,
                    (t, seq),
                    &mut out,
                );
            }
            assert_eq!(r.held(), 0);
            assert_eq!(out.len(), msgs.len());
            for t in 0..4 {
                let got: Vec<u64> = out.iter().filter(|m| m.0 == t).map(|m| m.1).collect();
                assert!(got.windows(2).all(|w| w[0] < w[1]), "topic {t}: {got:?}");
            }
        }
    }
}
