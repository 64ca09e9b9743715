//! `ClusterAckGate`: a publisher's PUBACK/PUBREC held until the cluster link has stored
//! the message in the JetStream queue of every other node that wants it (`docs/cluster.md`,
//! "QoS 1/2 between nodes"), and the settling of messages from this node's own queue.
//!
//! Owns: this shard's cluster-ack sequence, the acknowledgements waiting for the link's
//! answer (and the later acknowledgements of the same links, which ride behind them; and
//! the PUBRECs of resends of a QoS 2 message whose first copy's PUBREC waits here, which
//! leave with it), and how many each link has waiting. Invariants: acknowledgements leave
//! in the order they were held, so a link's acks keep the order of its PUBLISHes
//! [MQTT-4.6.0-2/3]; one leaves when the link answered its sequence or
//! `CLUSTER_ACK_WAIT_MS` after it was held, whichever comes first (NATS or JetStream down
//! must not stall publishers); while a link has one waiting (a resend's PUBREC counts for
//! the resend's link), its other acks wait behind it. A resend's PUBREC never leaves
//! before its first copy's commit is durable (`Broker::pubrec_resend`). The shard loop
//! never blocks: the gate only holds values and a timer wakes it for the deadline. Must
//! not touch: the link's queues (answers come as `ClusterCast::Published`), sockets.

use std::collections::{HashMap, VecDeque};

use super::connect::timer_key;
use super::journal::{HeldAck, HeldResend};
use super::Broker;
use crate::protocol::{self, Packet, PacketId, ReasonCode};

/// Longest a publisher's acknowledgement waits for the cluster link (which gives up on a
/// queue store after `cluster::link::QUEUE_PUBLISH_WAIT_MS`, 2 s).
pub const CLUSTER_ACK_WAIT_MS: u64 = 3000;
/// Timer kind of the gate's deadline.
pub(super) const TIMER_CLUSTER_ACK: u64 = 6;

/// What a held acknowledgement sends once released.
#[derive(Debug)]
pub enum HeldPubAck {
    /// An encoded packet (PUBACK, PUBCOMP, a refusal, …), sent once durable.
    Packet(Vec<u8>),
    /// The PUBREC of a new inbound QoS 2 message (`Broker::pubrec_new`).
    PubRec {
        /// Session key.
        session: usize,
        /// The session's uid (a reused key is another session).
        uid: u64,
        /// The packet id.
        pid: PacketId,
        /// Its reason code.
        reason: ReasonCode,
        /// Its QoS 2 routing (0: none), committed with the packet id once the link has
        /// answered (or the wait ran out) and the routing is durable here.
        txn: u64,
        /// The session's next QoS 2 number to log with the commit (0: not numbered).
        next: u64,
        /// The PUBRECs of resends of the message that came while this one waited here:
        /// they go on to wait for the commit with it (`HeldIncoming::resends`).
        resends: Vec<HeldResend>,
    },
}

/// One held acknowledgement.
#[derive(Debug)]
struct Entry {
    /// The cluster-ack sequence it waits for; 0: it only rides behind earlier ones.
    seq: u64,
    done: bool,
    held_ms: u64,
    link: usize,
    gen: u32,
    what: HeldPubAck,
}

/// One shard's acknowledgements waiting for the cluster link.
#[derive(Debug, Default)]
pub struct ClusterAckGate {
    /// Set while a client's QoS ≥ 1 PUBLISH is routed: its forward to the cluster is
    /// numbered.
    pub(super) wanted: bool,
    /// The number given to the publish routed last (taken by the caller).
    pub(super) numbered: Option<u64>,
    /// The id across a power cut of the QoS 2 publish being routed, for its forward to
    /// the cluster (`forward_to_cluster` takes it).
    pub(super) qos2_id: Option<super::cluster::Qos2Id>,
    next: u64,
    pending: VecDeque<Entry>,
    per_link: HashMap<usize, u32>,
    timer_armed: bool,
}

impl ClusterAckGate {
    /// Number a publish whose acknowledgement will wait for the link.
    pub fn next_seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Whether link `key` has an acknowledgement waiting (then its next ones ride behind).
    pub fn holds(&self, key: usize) -> bool {
        self.per_link.get(&key).is_some_and(|&n| n > 0)
    }

    fn hold(&mut self, seq: u64, link: usize, gen: u32, what: HeldPubAck, now_ms: u64) {
        *self.per_link.entry(link).or_default() += 1;
        self.pending.push_back(Entry {
            seq,
            done: false,
            held_ms: now_ms,
            link,
            gen,
            what,
        });
    }

    /// Hold `resend`, the PUBREC of a resend of session `uid`'s QoS 2 message `pid`, with
    /// the first copy's PUBREC if that waits here (the newest such): it leaves with it,
    /// and its link's later acks wait behind it. Gives `resend` back if none waits.
    pub fn hold_resend(
        &mut self,
        uid: u64,
        pid: PacketId,
        resend: HeldResend,
    ) -> Option<HeldResend> {
        let first = self
            .pending
            .iter_mut()
            .rev()
            .find_map(|e| match &mut e.what {
                HeldPubAck::PubRec {
                    uid: u,
                    pid: p,
                    resends,
                    ..
                } if *u == uid && *p == pid => Some(resends),
                _ => None,
            });
        let Some(resends) = first else {
            return Some(resend);
        };
        *self.per_link.entry(resend.0).or_default() += 1;
        resends.push(resend);
        None
    }

    /// One acknowledgement of link `link` left.
    fn unhold(&mut self, link: usize) {
        if let Some(n) = self.per_link.get_mut(&link) {
            *n -= 1;
            if *n == 0 {
                self.per_link.remove(&link);
            }
        }
    }

    /// The link answered `seq`.
    pub fn answered(&mut self, seq: u64) {
        for e in &mut self.pending {
            if e.seq == seq {
                e.done = true;
                return;
            }
            if e.seq > seq {
                return;
            }
        }
    }

    /// The next acknowledgement that may go at `now_ms`: (link, generation, what).
    fn pop_released(&mut self, now_ms: u64) -> Option<(usize, u32, HeldPubAck)> {
        let front = self.pending.front()?;
        let due = front.held_ms.saturating_add(CLUSTER_ACK_WAIT_MS);
        if !(front.seq == 0 || front.done || now_ms >= due) {
            return None;
        }
        let e = self.pending.pop_front()?;
        self.unhold(e.link);
        if let HeldPubAck::PubRec { resends, .. } = &e.what {
            for &(link, ..) in resends {
                self.unhold(link);
            }
        }
        Some((e.link, e.gen, e.what))
    }

    /// When the oldest acknowledgement gives up waiting.
    fn deadline(&self) -> Option<u64> {
        self.pending
            .front()
            .map(|e| e.held_ms.saturating_add(CLUSTER_ACK_WAIT_MS))
    }

    /// Acknowledgements waiting (for figures and tests).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl<X> Broker<X> {
    /// Hold `what` for link `key` until the link answers `seq` (0: until the link's
    /// earlier held acknowledgements have gone).
    pub(super) fn hold_for_cluster(&mut self, key: usize, seq: u64, what: HeldPubAck) {
        let Some(gen) = self.links.get(key).map(|l| l.gen) else {
            return;
        };
        let now = self.now_ms;
        self.acks.hold(seq, key, gen, what, now);
        if !self.acks.timer_armed {
            self.acks.timer_armed = true;
            let at = now + CLUSTER_ACK_WAIT_MS;
            self.timers.insert(at, timer_key(TIMER_CLUSTER_ACK, 0, 0));
        }
    }

    /// Hold `packet` for link `key` behind its acknowledgements waiting for the cluster.
    /// Returns false (nothing held) when it has none waiting.
    pub(super) fn ride_behind_cluster(&mut self, key: usize, packet: &Packet<'_>) -> bool {
        if !self.acks.holds(key) {
            return false;
        }
        let Some(version) = self.links.get(key).map(|l| l.version) else {
            return false;
        };
        let mut bytes = Vec::new();
        protocol::encode(packet, version, &mut bytes);
        self.hold_for_cluster(key, 0, HeldPubAck::Packet(bytes));
        true
    }

    /// The gate's deadline timer fired.
    pub(super) fn cluster_ack_timer(&mut self, now_ms: u64) {
        self.acks.timer_armed = false;
        self.release_cluster_acks(now_ms);
        if let Some(at) = self.acks.deadline() {
            self.acks.timer_armed = true;
            self.timers
                .insert(at.max(now_ms + 1), timer_key(TIMER_CLUSTER_ACK, 0, 0));
        }
    }

    /// Send, in order, the acknowledgements the link has answered (or that waited long
    /// enough); each still waits for this shard's log, like any acknowledgement. A PUBREC
    /// whose connection has gone still commits its routing (its packet id is logged if
    /// its session lives): the commits of a shard follow their routings' order, and
    /// deliveries parked for this one must not wait for ever. The PUBRECs of its resends
    /// go on to wait for that commit with it.
    pub(super) fn release_cluster_acks(&mut self, now_ms: u64) {
        while let Some((link, gen, what)) = self.acks.pop_released(now_ms) {
            let live = self
                .links
                .get(link)
                .is_some_and(|l| l.gen == gen && l.is_connected());
            match what {
                HeldPubAck::Packet(bytes) if live => self.send_bytes_durable(link, gen, &bytes),
                HeldPubAck::Packet(_) => {}
                HeldPubAck::PubRec {
                    session,
                    uid,
                    pid,
                    reason,
                    txn,
                    next,
                    resends,
                } => {
                    let ours = self.sessions.get(session).is_some_and(|s| s.uid == uid);
                    if ours || txn != 0 {
                        let to = super::persist::PubRecTo {
                            session,
                            uid,
                            link,
                            gen,
                            live,
                        };
                        self.pubrec_commit(to, pid, reason, txn, next);
                    }
                    self.pubrec_resends_follow(uid, pid, resends);
                }
            }
        }
    }

    /// The PUBRECs of resends of session `uid`'s QoS 2 message `pid`, whose first copy's
    /// PUBREC the gate has just let go: behind its commit if one is held
    /// (`HeldIncoming::resends`), else (nothing to commit: a session not logged, or gone)
    /// once this turn's records are durable.
    fn pubrec_resends_follow(&mut self, uid: u64, pid: PacketId, resends: Vec<HeldResend>) {
        if resends.is_empty() {
            return;
        }
        if let Some(h) = self
            .journal
            .as_mut()
            .and_then(|j| j.incoming_held(uid, pid))
        {
            h.resends.extend(resends);
            return;
        }
        for (link, gen, bytes) in resends {
            self.send_bytes_durable(link, gen, &bytes);
        }
    }

    /// Write `bytes` to link `key` (generation `gen`) once this turn's records are
    /// durable (at once with persistence off).
    fn send_bytes_durable(&mut self, key: usize, gen: u32, bytes: &[u8]) {
        if let Some(j) = self.journal.as_mut() {
            j.hold(HeldAck::Bytes {
                link: key,
                gen,
                bytes: bytes.into(),
            });
            return;
        }
        let Some(c) = self.links.conn_mut(key) else {
            return;
        };
        c.tx.buf().extend_from_slice(bytes);
        self.fx.stats.packets_out += 1;
        self.fx.mark_dirty(key, &mut c.link);
    }

    /// A message from this node's queue was routed: let the link acknowledge it to
    /// JetStream once this turn's records (and the peers it was cast to) are durable, at
    /// once with persistence off (it is in the shards' hands).
    pub(super) fn settle_when_durable(&mut self, token: u64) {
        match self.journal.as_mut() {
            Some(j) => j.hold(HeldAck::Cluster { token }),
            None => self.tell_cluster(super::cluster::ToCluster::Settle { token }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(n: u8) -> HeldPubAck {
        HeldPubAck::Packet(vec![n])
    }

    fn byte(w: &HeldPubAck) -> u8 {
        match w {
            HeldPubAck::Packet(b) => b[0],
            HeldPubAck::PubRec { .. } => 0,
        }
    }

    /// A resend's PUBREC held with its first copy's counts for the resend's link until it
    /// leaves with it; none held when no first copy waits.
    #[test]
    fn a_resends_pubrec_leaves_with_its_first_copys() {
        let mut g = ClusterAckGate::default();
        let pid = PacketId::new(7).expect("non-zero");
        let other = PacketId::new(8).expect("non-zero");
        let pubrec = |uid| HeldPubAck::PubRec {
            session: 0,
            uid,
            pid,
            reason: ReasonCode::Success,
            txn: 1,
            next: 0,
            resends: Vec::new(),
        };
        let s1 = g.next_seq();
        g.hold(s1, 7, 0, pubrec(5), 100);
        let resend = (9, 3, smallvec::smallvec![1]);
        assert!(
            g.hold_resend(5, other, resend.clone()).is_some(),
            "another id"
        );
        assert!(
            g.hold_resend(6, pid, resend.clone()).is_some(),
            "another session"
        );
        assert!(!g.holds(9));
        assert!(
            g.hold_resend(5, pid, resend).is_none(),
            "held with the first"
        );
        assert!(g.holds(9), "the resend's link waits behind it");
        assert_eq!(g.len(), 1);
        g.answered(s1);
        let (link, _, what) = g.pop_released(100).expect("answered");
        assert_eq!(link, 7);
        let HeldPubAck::PubRec { resends, .. } = what else {
            panic!("a PUBREC");
        };
        assert_eq!(
            resends.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            [(9, 3)]
        );
        assert!(!g.holds(7) && !g.holds(9) && g.is_empty());
    }

    /// Answers may come out of order; acknowledgements leave in order, riders behind.
    #[test]
    fn released_in_order_when_answered_or_due() {
        let mut g = ClusterAckGate::default();
        let (s1, s2) = (g.next_seq(), g.next_seq());
        g.hold(s1, 7, 0, packet(1), 100);
        g.hold(s2, 8, 0, packet(2), 100);
        g.hold(0, 7, 0, packet(3), 100);
        assert!(g.holds(7) && g.holds(8));
        g.answered(s2);
        assert!(g.pop_released(100).is_none(), "the first is not answered");
        g.answered(s1);
        let order: Vec<u8> = std::iter::from_fn(|| g.pop_released(100))
            .map(|(_, _, w)| byte(&w))
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(!g.holds(7) && g.is_empty());
        let s3 = g.next_seq();
        g.hold(s3, 7, 0, packet(4), 1000);
        assert!(g.pop_released(1000 + CLUSTER_ACK_WAIT_MS - 1).is_none());
        assert_eq!(g.deadline(), Some(1000 + CLUSTER_ACK_WAIT_MS));
        assert!(g.pop_released(1000 + CLUSTER_ACK_WAIT_MS).is_some(), "due");
        g.answered(s3);
        assert_eq!(g.len(), 0, "a late answer finds nothing");
    }
}
