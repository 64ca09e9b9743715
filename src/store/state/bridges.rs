//! The bridges' part of the live state: each bridge's QoS 1/2 messages not yet finished,
//! and its inbound QoS 2 ids awaiting PUBREL.
//!
//! Owns: [`BridgeState`] and the rules that apply a [`BridgeOp`] to it. Invariant: a
//! message is present from its `Enqueued` until its `Done`; ops for a sequence number the
//! state does not hold are ignored (the `Enqueued` was checkpointed away with its `Done`).
//! Bridges are keyed by name, not by index, so a configuration whose blocks moved keeps
//! each bridge's queue. Must not touch: the engine's bridge types.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU16;

use crate::store::record::{BridgeOp, Record, StoredMessage};

/// One message a bridge holds for its remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeMsg {
    /// The message, renamed for the remote.
    pub msg: StoredMessage<'static>,
    /// Packet id once sent (resent with DUP after a restart).
    pub packet_id: Option<NonZeroU16>,
    /// QoS 2: PUBREC received (PUBREL is resent, never the PUBLISH).
    pub received: bool,
    /// The QoS 2 routing it belongs to, until recovery settles it (0: none).
    pub txn: u64,
}

/// A bridge's durable forwarding state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeState {
    /// Messages by sequence number (queue order).
    pub messages: BTreeMap<u64, BridgeMsg>,
    /// Inbound QoS 2 packet ids held (PUBREC sent, PUBREL awaited).
    pub inbound_held: BTreeSet<NonZeroU16>,
}

impl BridgeState {
    /// Apply one op.
    pub fn apply(&mut self, op: BridgeOp<'static>) {
        match op {
            BridgeOp::Enqueued { seq, msg, txn } => {
                let m = BridgeMsg {
                    msg,
                    packet_id: None,
                    received: false,
                    txn,
                };
                self.messages.insert(seq, m);
            }
            BridgeOp::Sent { seq, packet_id } => {
                if let Some(m) = self.messages.get_mut(&seq) {
                    m.packet_id = Some(packet_id);
                }
            }
            BridgeOp::Received { seq } => {
                if let Some(m) = self.messages.get_mut(&seq) {
                    m.received = true;
                }
            }
            BridgeOp::Done { seq } => {
                self.messages.remove(&seq);
            }
            BridgeOp::InboundHeld { packet_id } => {
                self.inbound_held.insert(packet_id);
            }
            BridgeOp::InboundReleased { packet_id } => {
                self.inbound_held.remove(&packet_id);
            }
        }
    }

    /// Drop the messages of QoS 2 routings for which `done` is false (never committed:
    /// the bridge never sent them, and their publisher sends them again), forget the
    /// routings of the others; how many were dropped.
    pub fn settle_qos2(&mut self, done: impl Fn(u64) -> bool) -> u64 {
        let before = self.messages.len();
        self.messages.retain(|_, m| m.txn == 0 || done(m.txn));
        for m in self.messages.values_mut() {
            m.txn = 0;
        }
        (before - self.messages.len()) as u64
    }

    /// Nothing held: the entry can go.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.inbound_held.is_empty()
    }

    /// Records that rebuild this state for the bridge `name`, in sequence order.
    pub fn records<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Record<'s>> + 's {
        let rec = move |op| Record::Bridge {
            bridge: Cow::Borrowed(name),
            op,
        };
        let messages = self.messages.iter().flat_map(move |(&seq, m)| {
            let mut ops = vec![rec(BridgeOp::Enqueued {
                seq,
                msg: m.msg.clone(),
                txn: m.txn,
            })];
            if let Some(packet_id) = m.packet_id {
                ops.push(rec(BridgeOp::Sent { seq, packet_id }));
            }
            if m.received {
                ops.push(rec(BridgeOp::Received { seq }));
            }
            ops
        });
        let held = self
            .inbound_held
            .iter()
            .map(move |&packet_id| rec(BridgeOp::InboundHeld { packet_id }));
        messages.chain(held)
    }
}

/// Give each bridge's state to the part of the shard that runs it (`owner(name)`); the
/// names of bridges no part runs (removed from the configuration) are returned with the
/// number of messages dropped with them.
pub fn place_bridges(
    parts: &mut [super::LiveState],
    bridges: BTreeMap<String, BridgeState>,
    owner: impl Fn(&str) -> Option<usize>,
) -> Vec<(String, usize)> {
    let mut dropped = Vec::new();
    for (name, b) in bridges {
        match owner(&name).and_then(|k| parts.get_mut(k)) {
            Some(part) => {
                part.bridges.insert(name, b);
            }
            None => dropped.push((name, b.messages.len())),
        }
    }
    dropped
}
