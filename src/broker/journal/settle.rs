//! Settle tokens: the durability of a shared delivery forwarded on from this shard.
//!
//! Owns: the tokens this shard issued for shared deliveries it forwarded to another shard
//! (a delivery that came over the bus for a member gone from here, bounced on to another
//! member: `Cast::ShareDeliver` with a token), which of them are still open, and the
//! answers this shard owes for forwarded deliveries it received (`Cast::Settled`).
//! Invariants:
//! * a token is answered only once the answering shard's log is durable past every record
//!   the delivery made there, and past the records of every shard it was forwarded on to
//!   (its own child token answered): so a token answered means the delivery is durable
//!   wherever it landed;
//! * an answer waits only for its own log and its own child, never for a barrier nor for
//!   any other token: a token's child is issued after it and a delivery is forwarded at
//!   most `REDISPATCH_MAX` times, so chains end and no two shards can wait on each other;
//! * a barrier answer (`Journal::end_turn`) waits for every token issued before it was
//!   sealed: the barrier then vouches for the forwarded deliveries too, not only for the
//!   hop to this shard (`docs/persistence.md`, "Share-group moves").
//!
//! Must not touch: the log, the held acks (the journal decides when to ask).

use std::collections::BTreeSet;

use crate::store::Lsn;

/// A forwarded delivery received: answer `token` to shard `to` once this log is durable
/// up to `lsn` (the end of the turn it arrived in) and `child` (the token this shard
/// issued forwarding it on, if it did) is answered.
#[derive(Debug)]
struct Owed {
    lsn: Lsn,
    to: usize,
    token: u64,
    child: Option<u64>,
}

/// This shard's settle tokens (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Settles {
    /// The last token issued (tokens count from 1).
    issued: u64,
    /// Tokens issued and not yet answered.
    open: BTreeSet<u64>,
    /// Answers owed for forwarded deliveries received, oldest first.
    owed: Vec<Owed>,
}

impl Settles {
    /// A new token for a delivery this shard forwards; open until [`Settles::settled`].
    pub(super) fn issue(&mut self) -> u64 {
        self.issued += 1;
        self.open.insert(self.issued);
        self.issued
    }

    /// The peer answered `token`: the delivery is durable wherever it landed.
    pub(super) fn settled(&mut self, token: u64) {
        self.open.remove(&token);
    }

    /// The last token issued so far (a barrier answer sealed now waits for it and every
    /// token before it).
    pub(super) fn mark(&self) -> u64 {
        self.issued
    }

    /// Whether every token up to `mark` is answered.
    pub(super) fn clear_up_to(&self, mark: u64) -> bool {
        self.open.first().is_none_or(|&t| t > mark)
    }

    /// A forwarded delivery `token` of shard `to` arrived: answer once this turn's records
    /// are durable, and `child` (issued forwarding it on) is answered.
    pub(super) fn owe(&mut self, to: usize, token: u64, child: Option<u64>) {
        self.owed.push(Owed {
            lsn: Lsn::MAX,
            to,
            token,
            child,
        });
    }

    /// End of a turn: the answers owed so far wait for the log up to `last`.
    pub(super) fn seal(&mut self, last: Lsn) {
        for o in self.owed.iter_mut().rev() {
            if o.lsn != Lsn::MAX {
                break;
            }
            o.lsn = last;
        }
    }

    /// Move the answers that may go now (the log is durable to `durable`) to `out`, as
    /// (shard, token).
    pub(super) fn answers(&mut self, durable: Lsn, out: &mut Vec<(usize, u64)>) {
        let open = &self.open;
        self.owed.retain(|o| {
            let ready = o.lsn <= durable && o.child.is_none_or(|c| !open.contains(&c));
            if ready {
                out.push((o.to, o.token));
            }
            !ready
        });
    }

    /// Tokens open and answers owed (for tests and figures).
    pub(super) fn pending(&self) -> usize {
        self.open.len() + self.owed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer waits for its own turn's records and its child token, nothing else; a
    /// barrier mark waits for every token issued before it.
    #[test]
    fn an_answer_waits_for_its_records_and_its_child_only() {
        let mut s = Settles::default();
        let older = s.issue();
        let child = s.issue();
        s.owe(3, 7, Some(child));
        s.seal(10);
        let mut out = Vec::new();
        s.answers(9, &mut out);
        assert!(out.is_empty(), "the turn's records are not durable");
        s.answers(10, &mut out);
        assert!(out.is_empty(), "the child is open");
        s.settled(child);
        s.answers(10, &mut out);
        assert_eq!(out, [(3, 7)], "an older open token does not hold it");
        assert!(
            !s.clear_up_to(s.mark()),
            "a barrier waits for the older token"
        );
        assert!(s.clear_up_to(older - 1));
        s.settled(older);
        assert!(s.clear_up_to(s.mark()));
        assert_eq!(s.pending(), 0);
    }
}
