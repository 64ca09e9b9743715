//! `SubAckGate`: SUBACKs held until every peer shard has applied the routing changes
//! they depend on.
//!
//! Owns: the sequence number of this shard's routing changes (interest and share-group
//! membership), the highest one each peer has acknowledged, and the SUBACKs waiting.
//! Invariant: a SUBACK held under sequence `n` is released only once every peer has
//! acknowledged `n`, so a publish accepted on any shard after the client saw its SUBACK
//! reaches the new subscription; SUBACKs are released in the order they were held. Must
//! not touch: links (the caller writes what is released), tries.

use std::collections::VecDeque;

use crate::session::SubState;

/// A SUBACK held back until every peer shard has applied the interest it depends on.
#[derive(Debug)]
pub struct PendingSubAck {
    seq: u64,
    /// The link it answers.
    pub link: usize,
    /// That link's generation (a reused key is not the same link).
    pub gen: u32,
    /// The encoded SUBACK.
    pub bytes: Vec<u8>,
    /// Retained messages to send after it: (filter, subscription).
    pub retained: Vec<(Box<str>, SubState)>,
}

/// One shard's SUBACK gate.
#[derive(Debug)]
pub struct SubAckGate {
    pending: VecDeque<PendingSubAck>,
    seq: u64,
    acked: Vec<u64>,
    shard_id: usize,
}

impl SubAckGate {
    /// A gate on shard `shard_id` of `shards`.
    pub fn new(shard_id: usize, shards: usize) -> SubAckGate {
        SubAckGate {
            pending: VecDeque::new(),
            seq: 0,
            acked: vec![0; shards],
            shard_id,
        }
    }

    /// Number a routing change that every peer must acknowledge; `None` with no peers.
    pub fn next_seq(&mut self) -> Option<u64> {
        if self.acked.len() <= 1 {
            return None;
        }
        self.seq += 1;
        Some(self.seq)
    }

    /// Hold a SUBACK until every change numbered so far is acknowledged.
    pub fn hold(
        &mut self,
        link: usize,
        gen: u32,
        bytes: Vec<u8>,
        retained: Vec<(Box<str>, SubState)>,
    ) {
        self.pending.push_back(PendingSubAck {
            seq: self.seq,
            link,
            gen,
            bytes,
            retained,
        });
    }

    /// Peer `from` has applied every change of ours up to `seq`.
    pub fn acked(&mut self, from: usize, seq: u64) {
        if let Some(a) = self.acked.get_mut(from) {
            *a = (*a).max(seq);
        }
    }

    /// The next SUBACK that may go out now, in order.
    pub fn pop_released(&mut self) -> Option<PendingSubAck> {
        let me = self.shard_id;
        let applied = (0..self.acked.len())
            .filter(|&p| p != me)
            .map(|p| self.acked[p])
            .min()
            .unwrap_or(u64::MAX);
        if self.pending.front()?.seq <= applied {
            return self.pending.pop_front();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SUBACKs leave in order, each only once every peer acknowledged its sequence.
    #[test]
    fn released_in_order_once_every_peer_has_acked() {
        let mut g = SubAckGate::new(0, 3);
        assert_eq!(g.next_seq(), Some(1));
        g.hold(10, 0, vec![1], Vec::new());
        assert_eq!(g.next_seq(), Some(2));
        g.hold(11, 0, vec![2], Vec::new());
        assert!(g.pop_released().is_none(), "nobody acked yet");
        g.acked(1, 2);
        assert!(g.pop_released().is_none(), "shard 2 has not acked");
        g.acked(2, 1);
        assert_eq!(g.pop_released().map(|p| p.link), Some(10));
        assert!(
            g.pop_released().is_none(),
            "shard 2 is at 1, the second needs 2"
        );
        g.acked(2, 1);
        g.acked(2, 2);
        assert_eq!(g.pop_released().map(|p| p.link), Some(11));
    }

    /// With no peers there is nothing to wait for.
    #[test]
    fn single_shard_releases_at_once() {
        let mut g = SubAckGate::new(0, 1);
        assert_eq!(g.next_seq(), None);
        g.hold(3, 0, Vec::new(), Vec::new());
        assert_eq!(g.pop_released().map(|p| p.link), Some(3));
    }
}
