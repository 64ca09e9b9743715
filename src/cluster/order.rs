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

use std::collections::{HashMap, HashSet, VecDeque};

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
    item: T,
}

/// Chained messages in, the same messages out in chain order.
pub struct Reorder<T> {
    delivered: HashMap<String, Window>,
    /// (origin, the sequence it waits for) → the message.
    held: HashMap<(String, u64), Held<T>>,
    /// (due, origin, waits for, own sequence), in the order they were held (so by due).
    due: VecDeque<(u64, String, u64, u64)>,
    /// Messages passed on at their bound without their predecessor.
    expired: u64,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder {
            delivered: HashMap::new(),
            held: HashMap::new(),
            due: VecDeque::new(),
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

    /// Message `seq` from `origin`, naming `prev` as the one before it on its topic (None:
    /// nothing to wait for). Appends to `out` what may go now, in order: nothing (held),
    /// or the message and whatever waited behind it. Returns whether it was held.
    pub fn offer(
        &mut self,
        origin: &str,
        seq: u64,
        prev: Option<u64>,
        now_ms: u64,
        item: T,
        out: &mut Vec<T>,
    ) -> bool {
        let wait = prev.filter(|&p| !self.was_passed(origin, p));
        let Some(p) = wait else {
            self.pass(origin, seq, item, out);
            return false;
        };
        let key = (origin.to_string(), p);
        // Two messages naming the same one (not made by one link): the first goes.
        if let Some(h) = self.held.remove(&key) {
            self.pass(origin, h.seq, h.item, out);
        }
        self.held.insert(key, Held { seq, item });
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

    fn offer(r: &mut Reorder<u64>, seq: u64, prev: Option<u64>, now: u64) -> Vec<u64> {
        let mut out = Vec::new();
        r.offer("a", seq, prev, now, seq, &mut out);
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
        assert!(r.offer("b", 1, Some(13), 3, 1, &mut out));
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
                r.offer("a", seq, prev, 0, (t, seq), &mut out);
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
