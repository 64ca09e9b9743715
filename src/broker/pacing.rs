//! Retained delivery at SUBSCRIBE, paced per turn.
//!
//! Owns: how many retained messages each session (and the shard as a whole) has been
//! written this turn, how many slices of the retained tree's walk were taken for it, and
//! which sessions stopped at a budget and wait for a later turn. Invariant: in one turn a
//! session is written at most [`RETAINED_MESSAGES_PER_TURN_MAX`] retained messages or about
//! [`RETAINED_BYTES_PER_TURN_MAX`] bytes of them (one message may pass the byte budget),
//! and the shard at most [`RETAINED_SHARD_MESSAGES_PER_TURN_MAX`]; a session's walk takes
//! at most one slice of [`RETAINED_WALK_STEPS_MAX`] steps per turn, and the shard's walks
//! at most [`RETAINED_SHARD_WALKS_PER_TURN_MAX`] slices. A session stopped by a budget is
//! listed once and resumed without a drain or acknowledgement: next turn when a budget of
//! its own or the write budget stopped it, or when it was refused the shard's slices while
//! being resumed (its walk has begun); a session refused the shard's slices otherwise
//! (its walk has not begun) joins a queue, and each turn the slices left after the resumed
//! sessions go to that queue's front, oldest first, the rest of it untouched. Must not
//! touch: the backlogs themselves, links, the write buffers, the retained tree (the caller
//! writes or walks and reports what it did).
//!
//! Why: a wildcard SUBSCRIBE over 20,000 retained topics used to write 1 MiB (about 5,000
//! messages) into the subscriber's buffer per drain, and a drain in the same turn could
//! ask for 1 MiB more; the turn took 200-300 ms in a debug build and every other client
//! of the shard waited for it (docs/robustness.md, canary table). Why the queue: when
//! 1,000 subscribers subscribe at once, all but 4 wait for a slice; resuming every one of
//! them each turn to be refused again cost O(n) a turn, O(n²) over the storm
//! (`docs/benchmarks.md`, "The retained pacing's queue of walks").

use std::collections::VecDeque;

/// Retained messages written to one session per turn.
pub const RETAINED_MESSAGES_PER_TURN_MAX: usize = 256;
/// Bytes of retained messages written to one session per turn (checked before each
/// message, so the last one may pass it).
pub const RETAINED_BYTES_PER_TURN_MAX: usize = 64 * 1024;
/// Retained messages written per turn over all the shard's sessions.
pub const RETAINED_SHARD_MESSAGES_PER_TURN_MAX: usize = 4 * RETAINED_MESSAGES_PER_TURN_MAX;

/// Steps of one slice of a SUBSCRIBE's walk of the retained tree (a step enters one node;
/// a slice yields at most this many matches). The walk refills a session's backlog only
/// when it ran dry, so the backlog holds at most this many messages (8 bytes each).
pub const RETAINED_WALK_STEPS_MAX: usize = 1024;
/// Walk slices per turn over all the shard's sessions.
pub const RETAINED_SHARD_WALKS_PER_TURN_MAX: usize = 4;

/// What one session was given this turn.
#[derive(Debug, Clone, Copy)]
struct Spent {
    session: usize,
    messages: usize,
    bytes: usize,
    walks: usize,
}

/// Sessions listed at most once each, oldest first: one bit per session key says whether
/// it is listed, so listing it once costs O(1). (A scan of the list made a subscription
/// storm quadratic per turn, `docs/benchmarks.md`, "QoS 1 fan-out with the store on".)
#[derive(Debug, Default)]
struct Listed {
    order: VecDeque<usize>,
    bits: Vec<u64>,
}

impl Listed {
    /// List `s` at the back unless it is listed.
    fn push(&mut self, s: usize) {
        let (word, bit) = (s / 64, 1u64 << (s % 64));
        if self.bits.len() <= word {
            // Session keys are slab indexes: the bits grow with the sessions held.
            self.bits.resize(word + 1, 0);
        }
        if let Some(w) = self.bits.get_mut(word).filter(|w| **w & bit == 0) {
            *w |= bit;
            self.order.push_back(s);
        }
    }

    /// Unlist the oldest.
    fn pop(&mut self) -> Option<usize> {
        let s = self.order.pop_front()?;
        if let Some(w) = self.bits.get_mut(s / 64) {
            *w &= !(1 << (s % 64));
        }
        Some(s)
    }

    /// Unlist them all, oldest first, onto `to`.
    fn drain_into(&mut self, to: &mut Vec<usize>) {
        while let Some(s) = self.pop() {
            to.push(s);
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// This turn's retained writing and walking, per session.
#[derive(Debug, Default)]
pub(super) struct RetainedPacing {
    /// Sessions written retained messages or walked for this turn. Few per turn (those
    /// whose subscriber drained or acknowledged), so a list.
    spent: Vec<Spent>,
    /// Messages written this turn over every session.
    total: usize,
    /// Walk slices taken this turn over every session.
    walks: usize,
    /// Sessions stopped this turn, to resume next turn.
    waiting: Listed,
    /// Those stopped last turn, to resume in this one.
    resume: Vec<usize>,
    /// True between [`RetainedPacing::take_resume`] and [`RetainedPacing::recycle`]: a
    /// session refused the shard's slices now has begun its walk, and keeps its turn.
    resuming: bool,
    /// Sessions refused the shard's walk slices before their walk began, handed the
    /// slices a turn leaves ([`RetainedPacing::next_walker`]), oldest first.
    walkers: Listed,
    /// Sessions handed out to resume, over the pacing's life (for the storm test).
    #[cfg(test)]
    handed: u64,
    /// Walk slices taken over the pacing's life (for the storm tests).
    #[cfg(test)]
    slices: u64,
}

impl RetainedPacing {
    /// A new turn: every budget is whole again, and the sessions stopped last turn are
    /// due (see [`RetainedPacing::take_resume`]).
    pub(super) fn begin_turn(&mut self) {
        self.spent.clear();
        self.total = 0;
        self.walks = 0;
        self.waiting.drain_into(&mut self.resume);
    }

    /// The sessions to resume first this turn, oldest first (hand the list back through
    /// [`RetainedPacing::recycle`], then ask [`RetainedPacing::next_walker`]).
    pub(super) fn take_resume(&mut self) -> Vec<usize> {
        self.resuming = true;
        #[cfg(test)]
        {
            self.handed += self.resume.len() as u64;
        }
        std::mem::take(&mut self.resume)
    }

    /// Give back the list `take_resume` returned, to keep its capacity.
    pub(super) fn recycle(&mut self, mut list: Vec<usize>) {
        self.resuming = false;
        list.clear();
        if self.resume.is_empty() {
            self.resume = list;
        }
    }

    /// The oldest session waiting for a walk slice to begin its walk, while the shard has
    /// slices left this turn; the others wait untouched. Resume it (it is unlisted: if it
    /// is refused again, it is listed again).
    pub(super) fn next_walker(&mut self) -> Option<usize> {
        if self.walks >= RETAINED_SHARD_WALKS_PER_TURN_MAX {
            return None;
        }
        let s = self.walkers.pop()?;
        #[cfg(test)]
        {
            self.handed += 1;
        }
        Some(s)
    }

    /// May session `s` be written one more retained message this turn? If not, it is
    /// listed to resume next turn.
    pub(super) fn may_write(&mut self, s: usize) -> bool {
        let e = self.spent_by(s);
        let room = e.messages < RETAINED_MESSAGES_PER_TURN_MAX
            && e.bytes < RETAINED_BYTES_PER_TURN_MAX
            && self.total < RETAINED_SHARD_MESSAGES_PER_TURN_MAX;
        if !room {
            self.waiting.push(s);
        }
        room
    }

    /// Session `s` was written one retained message of `bytes` bytes.
    pub(super) fn wrote(&mut self, s: usize, bytes: usize) {
        self.total += 1;
        let e = self.entry(s);
        e.messages += 1;
        e.bytes += bytes;
    }

    /// May session `s` take one more slice of its retained walk this turn? If not, it is
    /// listed: to resume next turn when it had its slice this turn or is being resumed,
    /// else in the queue for the shard's slices.
    pub(super) fn may_walk(&mut self, s: usize) -> bool {
        let own = self.spent_by(s).walks;
        let room = own == 0 && self.walks < RETAINED_SHARD_WALKS_PER_TURN_MAX;
        if !room && (own > 0 || self.resuming) {
            self.waiting.push(s);
        } else if !room {
            self.walkers.push(s);
        }
        room
    }

    /// Session `s` took one slice of its retained walk.
    pub(super) fn walked(&mut self, s: usize) {
        #[cfg(test)]
        {
            self.slices += 1;
        }
        self.walks += 1;
        self.entry(s).walks += 1;
    }

    fn spent_by(&self, s: usize) -> Spent {
        let none = Spent {
            session: s,
            messages: 0,
            bytes: 0,
            walks: 0,
        };
        self.spent
            .iter()
            .find(|e| e.session == s)
            .copied()
            .unwrap_or(none)
    }

    fn entry(&mut self, s: usize) -> &mut Spent {
        let i = match self.spent.iter().position(|e| e.session == s) {
            Some(i) => i,
            None => {
                self.spent.push(self.spent_by(s));
                self.spent.len() - 1
            }
        };
        &mut self.spent[i]
    }

    /// Sessions queued for the shard's walk slices.
    pub(super) fn walkers_queued(&self) -> usize {
        self.walkers.order.len()
    }

    /// True while some session waits for a later turn: the loop must not sleep.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.resume.is_empty() || !self.walkers.is_empty()
    }

    /// Sessions handed out to resume so far ([`RetainedPacing::take_resume`] and
    /// [`RetainedPacing::next_walker`]).
    #[cfg(test)]
    pub(super) fn handed(&self) -> u64 {
        self.handed
    }

    /// Walk slices taken so far ([`RetainedPacing::walked`]).
    #[cfg(test)]
    pub(super) fn slices(&self) -> u64 {
        self.slices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stops_at_its_message_budget_and_resumes_next_turn() {
        let mut p = RetainedPacing::default();
        for _ in 0..RETAINED_MESSAGES_PER_TURN_MAX {
            assert!(p.may_write(7));
            p.wrote(7, 10);
        }
        assert!(!p.may_write(7));
        assert!(!p.may_write(7), "listed once");
        assert!(p.may_write(8), "another session has its own budget");
        assert!(p.has_waiting());
        p.begin_turn();
        assert!(p.has_waiting());
        let resume = p.take_resume();
        assert_eq!(resume, vec![7]);
        p.recycle(resume);
        assert!(!p.has_waiting());
        assert!(p.may_write(7), "a new turn");
    }

    #[test]
    fn one_walk_slice_per_session_and_a_few_per_shard_per_turn() {
        let mut p = RetainedPacing::default();
        assert!(p.may_walk(1));
        p.walked(1);
        assert!(!p.may_walk(1), "one slice per session per turn");
        for s in 2..=RETAINED_SHARD_WALKS_PER_TURN_MAX {
            assert!(p.may_walk(s));
            p.walked(s);
        }
        assert!(!p.may_walk(99), "the shard's slices are spent");
        assert!(p.may_write(99), "writing has its own budget");
        p.begin_turn();
        assert_eq!(p.take_resume(), vec![1], "its own slice stopped it");
        assert_eq!(
            p.next_walker(),
            Some(99),
            "the shard's did: it waits for one"
        );
        assert_eq!(p.next_walker(), None);
        assert!(p.may_walk(1), "a new turn");
    }

    /// A session refused the shard's slices while it is resumed (its walk has begun)
    /// resumes next turn, ahead of the queue; one refused before its walk began waits in
    /// the queue, and only the turn's slices left are handed out from its front.
    #[test]
    fn begun_walks_go_first_and_the_queue_gets_what_is_left() {
        let mut p = RetainedPacing::default();
        for s in 0..RETAINED_SHARD_WALKS_PER_TURN_MAX {
            assert!(p.may_walk(s));
            p.walked(s);
        }
        for s in 10..20 {
            assert!(!p.may_walk(s));
        }
        assert!(!p.may_walk(3), "its own slice");
        p.begin_turn();
        let resume = p.take_resume();
        assert_eq!(resume, vec![3]);
        assert!(p.may_walk(3));
        p.walked(3);
        for s in 4..7 {
            assert!(p.may_walk(s), "a session's own event takes a slice left");
            p.walked(s);
        }
        assert!(!p.may_walk(8), "the shard's slices are spent");
        p.recycle(resume);
        assert_eq!(p.next_walker(), None, "none left for the queue");
        p.begin_turn();
        let resume = p.take_resume();
        assert_eq!(resume, vec![8], "it was being resumed: its walk has begun");
        p.recycle(resume);
        for s in 10..10 + RETAINED_SHARD_WALKS_PER_TURN_MAX {
            assert_eq!(p.next_walker(), Some(s), "oldest first");
            assert!(p.may_walk(s));
            p.walked(s);
        }
        assert_eq!(p.next_walker(), None, "the rest waits untouched");
        assert!(p.has_waiting());
        p.begin_turn();
        let got: Vec<usize> = std::iter::from_fn(|| p.next_walker()).collect();
        assert_eq!(
            got,
            (14..20).collect::<Vec<_>>(),
            "none walked: all handed out"
        );
        assert!(!p.has_waiting());
    }

    /// The lists against naive ones (a `Vec` scanned for "listed once"): sessions
    /// stopped by a write budget or their own slice, resumed next turn; sessions refused
    /// the shard's slices, queued across turns and handed out oldest first while slices
    /// last. Over 50 turns of random asks by both budgets, keys across several bit words.
    #[test]
    fn sessions_are_listed_once_in_order_as_naive_lists_would() {
        let mut p = RetainedPacing::default();
        let mut queue: Vec<usize> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut handed, mut walked) = (0, Vec::new());
        for _turn in 0..50 {
            let mut waiting: Vec<usize> = Vec::new();
            let mut refused_shard = false;
            for _ in 0..400 {
                let r = next();
                let s = (r % 150) as usize;
                let walk = r & (1 << 40) != 0;
                let room = if walk { p.may_walk(s) } else { p.may_write(s) };
                if room && walk {
                    p.walked(s);
                    walked.push(s);
                } else if room {
                    // One message spends the session's byte budget: the next is refused.
                    p.wrote(s, RETAINED_BYTES_PER_TURN_MAX);
                } else if walk && !walked.contains(&s) {
                    refused_shard = true;
                    if !queue.contains(&s) {
                        queue.push(s);
                    }
                } else if !waiting.contains(&s) {
                    waiting.push(s);
                }
            }
            assert!(refused_shard, "the shard's slices refuse");
            let words = |l: &[usize]| l.iter().any(|&s| s < 64) && l.iter().any(|&s| s >= 128);
            assert!(words(&waiting), "listed across bit words: {waiting:?}");
            p.begin_turn();
            let resume = p.take_resume();
            assert_eq!(resume, waiting);
            handed += resume.len();
            p.recycle(resume);
            walked.clear();
            while let Some(s) = p.next_walker() {
                assert_eq!(s, queue.remove(0), "oldest first");
                assert!(p.may_walk(s));
                p.walked(s);
                walked.push(s);
                handed += 1;
            }
            let left = queue.len();
            assert!(walked.len() == RETAINED_SHARD_WALKS_PER_TURN_MAX || left == 0);
        }
        assert_eq!(p.handed(), handed as u64);
    }

    #[test]
    fn bytes_and_the_shard_total_bound_a_turn_too() {
        let mut p = RetainedPacing::default();
        assert!(p.may_write(1));
        p.wrote(1, RETAINED_BYTES_PER_TURN_MAX);
        assert!(!p.may_write(1), "one big message spends the byte budget");
        let mut s = 2;
        while p.total < RETAINED_SHARD_MESSAGES_PER_TURN_MAX {
            if p.may_write(s) {
                p.wrote(s, 1);
            } else {
                s += 1;
            }
        }
        assert!(!p.may_write(s + 1), "the shard's budget is spent");
        p.begin_turn();
        let resume = p.take_resume();
        assert_eq!(resume.first(), Some(&1));
        assert!(resume.contains(&(s + 1)));
    }
}
