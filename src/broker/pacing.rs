//! Retained delivery at SUBSCRIBE, paced per turn.
//!
//! Owns: how many retained messages each session (and the shard as a whole) has been
//! written this turn, how many slices of the retained tree's walk were taken for it, and
//! which sessions stopped at a budget and wait for the next turn. Invariant: in one turn a
//! session is written at most [`RETAINED_MESSAGES_PER_TURN_MAX`] retained messages or about
//! [`RETAINED_BYTES_PER_TURN_MAX`] bytes of them (one message may pass the byte budget),
//! and the shard at most [`RETAINED_SHARD_MESSAGES_PER_TURN_MAX`]; a session's walk takes
//! at most one slice of [`RETAINED_WALK_STEPS_MAX`] steps per turn, and the shard's walks
//! at most [`RETAINED_SHARD_WALKS_PER_TURN_MAX`] slices; a session stopped by a budget is
//! listed once, and resumed next turn whatever else happens (no drain or acknowledgement is
//! needed to resume it). Must not touch: the backlogs themselves, links, the write buffers,
//! the retained tree (the caller writes or walks and reports what it did).
//!
//! Why: a wildcard SUBSCRIBE over 20,000 retained topics used to write 1 MiB (about 5,000
//! messages) into the subscriber's buffer per drain, and a drain in the same turn could
//! ask for 1 MiB more; the turn took 200-300 ms in a debug build and every other client
//! of the shard waited for it (docs/robustness.md, canary table).

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
    /// Sessions stopped by the budget this turn, to resume next turn, oldest first.
    waiting: Vec<usize>,
    /// One bit per session key: set while the session is in `waiting`, so listing it once
    /// costs O(1). A scan of `waiting` made a subscription storm quadratic per turn: 1,000
    /// subscribers waiting for the shard's 4 walk slices each asked again every turn
    /// (`docs/benchmarks.md`, "QoS 1 fan-out with the store on").
    listed: Vec<u64>,
    /// Those stopped last turn, to resume in this one.
    resume: Vec<usize>,
}

impl RetainedPacing {
    /// A new turn: every budget is whole again, and the sessions stopped last turn are
    /// due (see [`RetainedPacing::take_resume`]).
    pub(super) fn begin_turn(&mut self) {
        self.spent.clear();
        self.total = 0;
        self.walks = 0;
        for &s in &self.waiting {
            if let Some(w) = self.listed.get_mut(s / 64) {
                *w &= !(1 << (s % 64));
            }
        }
        self.resume.append(&mut self.waiting);
    }

    /// The sessions to resume this turn, oldest first (hand the list back through
    /// [`RetainedPacing::recycle`]).
    pub(super) fn take_resume(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.resume)
    }

    /// Give back the list `take_resume` returned, to keep its capacity.
    pub(super) fn recycle(&mut self, mut list: Vec<usize>) {
        list.clear();
        if self.resume.is_empty() {
            self.resume = list;
        }
    }

    /// May session `s` be written one more retained message this turn? If not, it is
    /// listed to resume next turn.
    pub(super) fn may_write(&mut self, s: usize) -> bool {
        let e = self.spent_by(s);
        let room = e.messages < RETAINED_MESSAGES_PER_TURN_MAX
            && e.bytes < RETAINED_BYTES_PER_TURN_MAX
            && self.total < RETAINED_SHARD_MESSAGES_PER_TURN_MAX;
        self.wait_unless(s, room)
    }

    /// Session `s` was written one retained message of `bytes` bytes.
    pub(super) fn wrote(&mut self, s: usize, bytes: usize) {
        self.total += 1;
        let e = self.entry(s);
        e.messages += 1;
        e.bytes += bytes;
    }

    /// May session `s` take one more slice of its retained walk this turn? If not, it is
    /// listed to resume next turn.
    pub(super) fn may_walk(&mut self, s: usize) -> bool {
        let room = self.spent_by(s).walks == 0 && self.walks < RETAINED_SHARD_WALKS_PER_TURN_MAX;
        self.wait_unless(s, room)
    }

    /// Session `s` took one slice of its retained walk.
    pub(super) fn walked(&mut self, s: usize) {
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

    /// `room`, listing `s` to resume next turn when there is none.
    fn wait_unless(&mut self, s: usize, room: bool) -> bool {
        if !room {
            let (word, bit) = (s / 64, 1u64 << (s % 64));
            if self.listed.len() <= word {
                // Session keys are slab indexes: the bits grow with the sessions held.
                self.listed.resize(word + 1, 0);
            }
            if let Some(w) = self.listed.get_mut(word).filter(|w| **w & bit == 0) {
                *w |= bit;
                self.waiting.push(s);
            }
        }
        room
    }

    /// True while some session waits for the next turn: the loop must not sleep.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.resume.is_empty()
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
        assert_eq!(p.take_resume(), vec![1, 99]);
        assert!(p.may_walk(1), "a new turn");
    }

    /// The waiting list against a naive one (listed once, oldest first, a new list each
    /// turn), over sessions stopped by both budgets, with keys across several bit words.
    #[test]
    fn sessions_are_listed_once_in_order_as_a_naive_list_would() {
        let mut p = RetainedPacing::default();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _turn in 0..50 {
            let mut naive: Vec<usize> = Vec::new();
            for _ in 0..400 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let s = (seed % 150) as usize;
                let walk = seed & (1 << 40) != 0;
                let room = if walk { p.may_walk(s) } else { p.may_write(s) };
                if room && walk {
                    p.walked(s);
                } else if room {
                    // One message spends the session's byte budget: the next is refused.
                    p.wrote(s, RETAINED_BYTES_PER_TURN_MAX);
                } else if !naive.contains(&s) {
                    naive.push(s);
                }
            }
            assert!(naive.len() > 64, "both budgets refuse, across bit words");
            p.begin_turn();
            let resume = p.take_resume();
            assert_eq!(resume, naive);
            p.recycle(resume);
        }
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
