//! `SubAckGate`: SUBACKs held until every peer shard, and in a cluster the NATS server of
//! this node's link, has applied the routing changes they depend on.
//!
//! Owns: the sequence number of this shard's routing changes (interest and share-group
//! membership), the highest one each peer has acknowledged, the same pair for the
//! interest this shard handed to the cluster link, the numbers of the persistent
//! sessions' subscription copies handed to the link for its bucket (answered in any
//! order: copies of different client ids go to different registry workers) and which of
//! them the link has confirmed, and the SUBACKs waiting.
//! Invariant: a SUBACK held under sequence `n` is released only once every peer has
//! acknowledged `n`, so a publish accepted on any shard after the client saw its SUBACK
//! reaches the new subscription; SUBACKs are released in the order they were held. A
//! SUBACK that also waits for the link is released when the link confirmed its cluster
//! sequence and every subscription copy numbered up to its own, or `CLUSTER_WAIT_MS`
//! after it was held, whichever comes first (NATS down must
//! not stall subscribers). Must not touch: links (the caller writes what is released),
//! tries, the timer wheel (the caller arms a timer for the deadline).

use std::collections::{BTreeSet, VecDeque};

use crate::session::SubState;

/// Longest a SUBACK waits for the cluster link to confirm its interest with NATS.
pub const CLUSTER_WAIT_MS: u64 = 2000;

/// A SUBACK held back until every peer shard has applied the interest it depends on.
#[derive(Debug)]
pub struct PendingSubAck {
    seq: u64,
    cluster_seq: u64,
    backup_seq: u64,
    held_ms: u64,
    /// The link it answers.
    pub link: usize,
    /// That link's generation (a reused key is not the same link).
    pub gen: u32,
    /// The encoded SUBACK.
    pub bytes: Vec<u8>,
    /// Retained messages to send after it: (filter, subscription).
    pub retained: Vec<(Box<str>, SubState)>,
    /// The retained replica's clock when the SUBSCRIBE was handled.
    pub retained_since: u64,
}

/// One shard's SUBACK gate.
#[derive(Debug)]
pub struct SubAckGate {
    pending: VecDeque<PendingSubAck>,
    seq: u64,
    acked: Vec<u64>,
    cluster_seq: u64,
    cluster_acked: u64,
    backup_seq: u64,
    /// Every backup up to here is confirmed.
    backup_floor: u64,
    /// Backups confirmed above the floor (out of order).
    backup_above: BTreeSet<u64>,
    shard_id: usize,
}

impl SubAckGate {
    /// A gate on shard `shard_id` of `shards`.
    pub fn new(shard_id: usize, shards: usize) -> SubAckGate {
        SubAckGate {
            pending: VecDeque::new(),
            seq: 0,
            acked: vec![0; shards],
            cluster_seq: 0,
            cluster_acked: 0,
            backup_seq: 0,
            backup_floor: 0,
            backup_above: BTreeSet::new(),
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

    /// Number an interest handed to the cluster link, which the link confirms once its NATS
    /// server has it.
    pub fn next_cluster_seq(&mut self) -> u64 {
        self.cluster_seq += 1;
        self.cluster_seq
    }

    /// The link has confirmed every cluster interest of ours up to `seq`.
    pub fn cluster_acked(&mut self, seq: u64) {
        self.cluster_acked = self.cluster_acked.max(seq);
    }

    /// Number a persistent session's subscriptions copy handed to the cluster link.
    pub fn next_backup_seq(&mut self) -> u64 {
        self.backup_seq += 1;
        self.backup_seq
    }

    /// The link has written (or given up writing) the copy numbered `seq`.
    pub fn backup_saved(&mut self, seq: u64) {
        if seq <= self.backup_floor || seq > self.backup_seq {
            return;
        }
        self.backup_above.insert(seq);
        while self.backup_above.remove(&(self.backup_floor + 1)) {
            self.backup_floor += 1;
        }
    }

    /// Whether the cluster link still owes an answer a SUBACK held now would wait for.
    fn link_owes(&self) -> bool {
        self.cluster_seq > self.cluster_acked || self.backup_seq > self.backup_floor
    }

    /// Hold a SUBACK until every change numbered so far is acknowledged. Returns the
    /// deadline to arm a timer for when it also waits for the cluster link.
    pub fn hold(
        &mut self,
        link: usize,
        gen: u32,
        bytes: Vec<u8>,
        retained: (Vec<(Box<str>, SubState)>, u64),
        now_ms: u64,
    ) -> Option<u64> {
        let (retained, retained_since) = retained;
        self.pending.push_back(PendingSubAck {
            seq: self.seq,
            cluster_seq: self.cluster_seq,
            backup_seq: self.backup_seq,
            held_ms: now_ms,
            link,
            gen,
            bytes,
            retained,
            retained_since,
        });
        self.link_owes().then_some(now_ms + CLUSTER_WAIT_MS)
    }

    /// Peer `from` has applied every change of ours up to `seq`.
    pub fn acked(&mut self, from: usize, seq: u64) {
        if let Some(a) = self.acked.get_mut(from) {
            *a = (*a).max(seq);
        }
    }

    /// The next SUBACK that may go out at `now_ms`, in order.
    pub fn pop_released(&mut self, now_ms: u64) -> Option<PendingSubAck> {
        let me = self.shard_id;
        let applied = (0..self.acked.len())
            .filter(|&p| p != me)
            .map(|p| self.acked[p])
            .min()
            .unwrap_or(u64::MAX);
        let front = self.pending.front()?;
        let cluster = (front.cluster_seq <= self.cluster_acked
            && front.backup_seq <= self.backup_floor)
            || now_ms >= front.held_ms.saturating_add(CLUSTER_WAIT_MS);
        if front.seq <= applied && cluster {
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
        g.hold(10, 0, vec![1], (Vec::new(), 0), 0);
        assert_eq!(g.next_seq(), Some(2));
        g.hold(11, 0, vec![2], (Vec::new(), 0), 0);
        assert!(g.pop_released(0).is_none(), "nobody acked yet");
        g.acked(1, 2);
        assert!(g.pop_released(0).is_none(), "shard 2 has not acked");
        g.acked(2, 1);
        assert_eq!(g.pop_released(0).map(|p| p.link), Some(10));
        assert!(
            g.pop_released(0).is_none(),
            "shard 2 is at 1, the second needs 2"
        );
        g.acked(2, 1);
        g.acked(2, 2);
        assert_eq!(g.pop_released(0).map(|p| p.link), Some(11));
    }

    /// With no peers there is nothing to wait for.
    #[test]
    fn single_shard_releases_at_once() {
        let mut g = SubAckGate::new(0, 1);
        assert_eq!(g.next_seq(), None);
        g.hold(3, 0, Vec::new(), (Vec::new(), 0), 0);
        assert_eq!(g.pop_released(0).map(|p| p.link), Some(3));
    }

    /// A SUBACK waiting for the cluster link leaves when the link confirms its interest,
    /// or at the deadline; one held with nothing new for the link does not wait.
    #[test]
    fn cluster_interest_is_confirmed_or_times_out() {
        let mut g = SubAckGate::new(0, 1);
        assert_eq!(g.next_cluster_seq(), 1);
        assert_eq!(
            g.hold(1, 0, Vec::new(), (Vec::new(), 0), 100),
            Some(100 + CLUSTER_WAIT_MS)
        );
        assert!(g.pop_released(100).is_none(), "the link has not confirmed");
        g.cluster_acked(1);
        assert_eq!(g.pop_released(100).map(|p| p.link), Some(1));
        assert_eq!(g.hold(2, 0, Vec::new(), (Vec::new(), 0), 200), None);
        assert_eq!(g.pop_released(200).map(|p| p.link), Some(2));
        assert_eq!(g.next_cluster_seq(), 2);
        assert!(g.hold(3, 0, Vec::new(), (Vec::new(), 0), 300).is_some());
        assert!(g.pop_released(300 + CLUSTER_WAIT_MS - 1).is_none());
        assert_eq!(
            g.pop_released(300 + CLUSTER_WAIT_MS).map(|p| p.link),
            Some(3)
        );
    }

    /// A SUBACK waits for every subscriptions copy numbered up to its own, confirmed in
    /// any order, or for the deadline.
    #[test]
    fn subscription_copies_are_confirmed_in_any_order() {
        let mut g = SubAckGate::new(0, 1);
        assert_eq!(g.next_backup_seq(), 1);
        assert_eq!(g.next_backup_seq(), 2);
        assert!(g.hold(1, 0, Vec::new(), (Vec::new(), 0), 0).is_some());
        g.backup_saved(2);
        assert!(g.pop_released(0).is_none(), "copy 1 is not confirmed");
        g.backup_saved(1);
        assert_eq!(g.pop_released(0).map(|p| p.link), Some(1));
        assert_eq!(g.hold(2, 0, Vec::new(), (Vec::new(), 0), 10), None);
        assert_eq!(g.pop_released(10).map(|p| p.link), Some(2));
        g.backup_saved(7);
        assert_eq!(g.next_backup_seq(), 3);
        assert!(g.hold(3, 0, Vec::new(), (Vec::new(), 0), 20).is_some());
        assert!(
            g.pop_released(20).is_none(),
            "an unknown number confirms nothing"
        );
        assert_eq!(
            g.pop_released(20 + CLUSTER_WAIT_MS).map(|p| p.link),
            Some(3)
        );
    }
}
