//! Retained delivery at SUBSCRIBE, paced per turn.
//!
//! Owns: how many retained messages each session (and the shard as a whole) has been
//! written this turn, and which sessions stopped at that budget and wait for the next
//! turn. Invariant: in one turn a session is written at most
//! [`RETAINED_MESSAGES_PER_TURN_MAX`] retained messages or about
//! [`RETAINED_BYTES_PER_TURN_MAX`] bytes of them (one message may pass the byte budget),
//! and the shard at most [`RETAINED_SHARD_MESSAGES_PER_TURN_MAX`]; a session stopped by the
//! budget is listed once, and resumed next turn whatever else happens (no drain or
//! acknowledgement is needed to resume it). Must not touch: the backlogs themselves, links,
//! the write buffers (the caller writes and reports what it wrote).
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

/// This turn's retained writing, per session.
#[derive(Debug, Default)]
pub(super) struct RetainedPacing {
    /// Sessions written retained messages this turn: (session, messages, bytes). Few per
    /// turn (those whose subscriber drained or acknowledged), so a list.
    spent: Vec<(usize, usize, usize)>,
    /// Messages written this turn over every session.
    total: usize,
    /// Sessions stopped by the budget this turn, to resume next turn, oldest first.
    waiting: Vec<usize>,
    /// Those stopped last turn, to resume in this one.
    resume: Vec<usize>,
}

impl RetainedPacing {
    /// A new turn: every budget is whole again, and the sessions stopped last turn are
    /// due (see [`RetainedPacing::take_resume`]).
    pub(super) fn begin_turn(&mut self) {
        self.spent.clear();
        self.total = 0;
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
        let (messages, bytes) = self
            .spent
            .iter()
            .find(|e| e.0 == s)
            .map_or((0, 0), |e| (e.1, e.2));
        let room = messages < RETAINED_MESSAGES_PER_TURN_MAX
            && bytes < RETAINED_BYTES_PER_TURN_MAX
            && self.total < RETAINED_SHARD_MESSAGES_PER_TURN_MAX;
        if !room && !self.waiting.contains(&s) {
            self.waiting.push(s);
        }
        room
    }

    /// Session `s` was written one retained message of `bytes` bytes.
    pub(super) fn wrote(&mut self, s: usize, bytes: usize) {
        self.total += 1;
        match self.spent.iter_mut().find(|e| e.0 == s) {
            Some(e) => {
                e.1 += 1;
                e.2 += bytes;
            }
            None => self.spent.push((s, 1, bytes)),
        }
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
