//! The forwarding queue of one bridge and the records through which the store keeps it.
//!
//! Owns: messages accepted for the remote and not yet handed to the wire, in order, within
//! a bound of messages and bytes; the count of what the bound refused; and `Record`, the
//! plain stream that describes every change to QoS 1/2 forwarding state. Invariant: every
//! QoS 1/2 message the queue accepts gets a sequence number, strictly increasing, and an
//! `Enqueued` record before anything else is recorded about it; `Done` is the last record
//! for a sequence number. Inbound QoS 2 ids are recorded from PUBREC to PUBREL. Replaying the records of a log in order (`Restored::replay`)
//! rebuilds exactly what was not `Done`. Must not touch: the store itself (phase 2 appends
//! the records), sockets, packets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::protocol::{PacketId, QoS};
use crate::session::ForwardedProps;
use crate::store::{BridgeOp, BridgeState, MessageProps, StoredMessage};

/// A message bound for the remote, already renamed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// The remote topic.
    pub topic: Arc<str>,
    /// The payload, shared with the local message it came from.
    pub payload: Arc<[u8]>,
    /// The QoS to send at (already the lower of message and rule).
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// MQTT 5 properties that travel with it (sent to a 5.0 remote).
    pub props: Option<Arc<ForwardedProps>>,
    /// Message expiry on the shard clock (ms): dropped if still queued then; a 5.0
    /// remote gets the interval left.
    pub expires_at_ms: Option<u64>,
    /// The QoS 2 routing of a message going out at QoS 2 (0: none, or committed before a
    /// restart): it is not sent before that routing's commit is durable (see
    /// `Bridge::learn_commits`), and recovery drops it if the commit never was.
    pub txn: u64,
}

impl OutMessage {
    /// Bytes counted against the queue bound.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// One change to the durable forwarding state. Only QoS 1/2 messages are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message entered the queue.
    Enqueued {
        /// Its sequence number.
        seq: u64,
        /// The message.
        msg: OutMessage,
    },
    /// It was written to the remote under this packet id (resend with DUP after a restart).
    Sent {
        /// Sequence number.
        seq: u64,
        /// Packet id used.
        packet_id: PacketId,
    },
    /// QoS 2: the remote answered PUBREC (resend PUBREL, never the PUBLISH).
    Received {
        /// Sequence number.
        seq: u64,
    },
    /// Finished: acknowledged by the remote, refused by it, or dropped as too large.
    Done {
        /// Sequence number.
        seq: u64,
    },
    /// Inbound QoS 2: the message with this remote packet id was accepted locally and
    /// PUBREC sent; a resend must not be brought in again.
    InboundHeld {
        /// The remote's packet id.
        packet_id: PacketId,
    },
    /// Inbound QoS 2: PUBREL arrived; the id is free again.
    InboundReleased {
        /// The remote's packet id.
        packet_id: PacketId,
    },
}

/// A queued message with its sequence number (`None`: QoS 0 or a notification, never
/// recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Sequence number, for QoS 1/2.
    pub seq: Option<u64>,
    /// The message.
    pub msg: OutMessage,
}

/// The bounded queue in front of the in-flight window.
#[derive(Debug)]
pub struct ForwardQueue {
    items: VecDeque<Queued>,
    bytes: usize,
    messages_max: usize,
    bytes_max: usize,
    next_seq: u64,
    /// Messages refused because the queue was full.
    pub dropped: u64,
}

impl ForwardQueue {
    /// An empty queue with these bounds.
    pub fn new(messages_max: usize, bytes_max: usize) -> Self {
        ForwardQueue {
            items: VecDeque::new(),
            bytes: 0,
            messages_max,
            bytes_max,
            next_seq: 1,
            dropped: 0,
        }
    }

    /// Append `msg`; the sequence number it got (QoS 1/2), or `Err` (counted) when full.
    pub fn push(&mut self, msg: OutMessage) -> Result<Option<u64>, OutMessage> {
        if self.items.len() >= self.messages_max || self.bytes + msg.weight() > self.bytes_max {
            self.dropped += 1;
            return Err(msg);
        }
        let seq = (msg.qos != QoS::AtMostOnce).then(|| {
            self.next_seq += 1;
            self.next_seq - 1
        });
        self.bytes += msg.weight();
        self.items.push_back(Queued { seq, msg });
        Ok(seq)
    }

    /// Put back restored messages at the front, before anything newer; sequence numbers go
    /// on from the highest restored one.
    pub fn restore(&mut self, items: Vec<Queued>) {
        for q in items.into_iter().rev() {
            self.next_seq = self.next_seq.max(q.seq.map_or(0, |s| s + 1));
            self.bytes += q.msg.weight();
            self.items.push_front(q);
        }
    }

    /// The oldest message.
    pub fn front(&self) -> Option<&Queued> {
        self.items.front()
    }

    /// Take the oldest message.
    pub fn pop(&mut self) -> Option<Queued> {
        let q = self.items.pop_front()?;
        self.bytes -= q.msg.weight();
        Some(q)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes waiting (topics + payloads).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a replayed record stream leaves: messages in sequence order, with the packet id
/// they were sent under and whether the remote already has them (QoS 2 PUBREC).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// By sequence number: (message, packet id if sent, PUBREC received).
    pub messages: BTreeMap<u64, (OutMessage, Option<PacketId>, bool)>,
    /// Inbound QoS 2 ids held (PUBREC sent, PUBREL not yet received).
    pub inbound_held: BTreeSet<PacketId>,
}

impl Restored {
    /// Fold records, oldest first. Records for unknown sequence numbers are ignored (their
    /// `Enqueued` was checkpointed away together with their `Done`).
    pub fn replay(records: impl IntoIterator<Item = Record>) -> Restored {
        let mut r = Restored::default();
        for rec in records {
            match rec {
                Record::Enqueued { seq, msg } => {
                    r.messages.insert(seq, (msg, None, false));
                }
                Record::Sent { seq, packet_id } => {
                    if let Some(m) = r.messages.get_mut(&seq) {
                        m.1 = Some(packet_id);
                    }
                }
                Record::Received { seq } => {
                    if let Some(m) = r.messages.get_mut(&seq) {
                        m.2 = true;
                    }
                }
                Record::Done { seq } => {
                    r.messages.remove(&seq);
                }
                Record::InboundHeld { packet_id } => {
                    r.inbound_held.insert(packet_id);
                }
                Record::InboundReleased { packet_id } => {
                    r.inbound_held.remove(&packet_id);
                }
            }
        }
        r
    }
}

/// The shard clock and the wall clock at one moment: expiry is stored as wall-clock time
/// so that it keeps counting across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Shard clock, ms.
    pub now_ms: u64,
    /// Unix time, ms.
    pub unix_ms: u64,
}

impl Record {
    /// The store's form of this record.
    pub fn to_op(&self, clock: Clock) -> BridgeOp<'_> {
        match self {
            Record::Enqueued { seq, msg } => BridgeOp::Enqueued {
                seq: *seq,
                txn: msg.txn,
                msg: StoredMessage {
                    topic: (*msg.topic).into(),
                    payload: (*msg.payload).into(),
                    qos: msg.qos as u8,
                    retain: msg.retain,
                    expires_at_unix_ms: msg
                        .expires_at_ms
                        .map(|t| clock.unix_ms.saturating_add(t.saturating_sub(clock.now_ms))),
                    props: msg.props.as_deref().map(stored_props).unwrap_or_default(),
                    share_id: 0,
                },
            },
            Record::Sent { seq, packet_id } => BridgeOp::Sent {
                seq: *seq,
                packet_id: *packet_id,
            },
            Record::Received { seq } => BridgeOp::Received { seq: *seq },
            Record::Done { seq } => BridgeOp::Done { seq: *seq },
            Record::InboundHeld { packet_id } => BridgeOp::InboundHeld {
                packet_id: *packet_id,
            },
            Record::InboundReleased { packet_id } => BridgeOp::InboundReleased {
                packet_id: *packet_id,
            },
        }
    }
}

fn stored_props(f: &ForwardedProps) -> MessageProps<'_> {
    MessageProps {
        payload_format_indicator: f.payload_format_indicator,
        content_type: f.content_type.as_deref().map(Into::into),
        response_topic: f.response_topic.as_deref().map(Into::into),
        correlation_data: f.correlation_data.as_deref().map(Into::into),
        user_properties: (&*f.user_properties).into(),
    }
}

fn forwarded_props(p: &MessageProps<'_>) -> Option<Arc<ForwardedProps>> {
    let any = p.payload_format_indicator.is_some()
        || p.content_type.is_some()
        || p.response_topic.is_some()
        || p.correlation_data.is_some()
        || !p.user_properties.is_empty();
    any.then(|| {
        Arc::new(ForwardedProps {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.as_deref().map(Into::into),
            response_topic: p.response_topic.as_deref().map(Into::into),
            correlation_data: p.correlation_data.as_deref().map(Into::into),
            user_properties: p.user_properties.as_ref().into(),
        })
    })
}

impl Restored {
    /// What the store recovered for one bridge, with expiry brought to the shard clock
    /// of `clock`. A stored QoS outside 1..=2 is read as 1 (only QoS 1/2 messages are
    /// ever recorded).
    pub fn from_state(st: &BridgeState, clock: Clock) -> Restored {
        let messages = st
            .messages
            .iter()
            .map(|(&seq, m)| {
                let msg = OutMessage {
                    topic: Arc::from(&*m.msg.topic),
                    payload: Arc::from(&*m.msg.payload),
                    qos: match m.msg.qos {
                        2 => QoS::ExactlyOnce,
                        _ => QoS::AtLeastOnce,
                    },
                    retain: m.msg.retain,
                    props: forwarded_props(&m.msg.props),
                    expires_at_ms: m
                        .msg
                        .expires_at_unix_ms
                        .map(|t| clock.now_ms.saturating_add(t.saturating_sub(clock.unix_ms))),
                    // Recovery kept only committed routings, and a new run numbers its
                    // own afresh.
                    txn: 0,
                };
                (seq, (msg, m.packet_id, m.received))
            })
            .collect();
        Restored {
            messages,
            inbound_held: st.inbound_held.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, qos: QoS) -> OutMessage {
        OutMessage {
            topic: topic.into(),
            payload: Arc::from(&b"12345"[..]),
            qos,
            retain: false,
            props: None,
            expires_at_ms: None,
            txn: 0,
        }
    }

    #[test]
    fn bounded_by_messages_and_bytes_with_drops_counted() {
        let mut q = ForwardQueue::new(2, 100);
        assert_eq!(q.push(msg("a", QoS::AtLeastOnce)), Ok(Some(1)));
        assert_eq!(q.push(msg("b", QoS::AtMostOnce)), Ok(None));
        assert!(q.push(msg("c", QoS::AtLeastOnce)).is_err());
        assert_eq!((q.len(), q.bytes(), q.dropped), (2, 12, 1));
        let mut q = ForwardQueue::new(10, 8);
        assert!(q.push(msg("abc", QoS::AtLeastOnce)).is_ok());
        assert!(q.push(msg("d", QoS::AtLeastOnce)).is_err());
        assert_eq!(q.pop().map(|x| x.seq), Some(Some(1)));
        assert_eq!(q.bytes(), 0);
    }

    const CLOCK: Clock = Clock {
        now_ms: 5_000,
        unix_ms: 1_700_000_000_000,
    };

    #[test]
    fn properties_and_expiry_survive_the_store() {
        let props = ForwardedProps {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Box::from(&b"corr"[..])),
            user_properties: Box::from(&[0x26, 0, 1, b'k', 0, 1, b'v'][..]),
        };
        let mut m = msg("t", QoS::AtLeastOnce);
        m.props = Some(Arc::new(props));
        m.expires_at_ms = Some(CLOCK.now_ms + 30_000);
        let rec = Record::Enqueued { seq: 1, msg: m };
        let stored = crate::store::Record::Bridge {
            bridge: "b".into(),
            op: rec.to_op(CLOCK),
        };
        let mut st = BridgeState::default();
        if let crate::store::Record::Bridge { op, .. } = stored.into_owned() {
            st.apply(op);
        }
        // Restarted 10 s of wall clock later, on a fresh shard clock: 20 s are left.
        let later = Clock {
            now_ms: 0,
            unix_ms: CLOCK.unix_ms + 10_000,
        };
        let r = Restored::from_state(&st, later);
        let (back, _, _) = &r.messages[&1];
        let Record::Enqueued { msg: m, .. } = &rec else {
            unreachable!()
        };
        assert_eq!(back.props, m.props);
        assert_eq!(back.expires_at_ms, Some(20_000));
    }

    #[test]
    fn replay_keeps_what_is_not_done_in_order() {
        let id = |n| PacketId::new(n).expect("non-zero");
        let records = [
            Record::Enqueued {
                seq: 1,
                msg: msg("a", QoS::AtLeastOnce),
            },
            Record::Enqueued {
                seq: 2,
                msg: msg("b", QoS::ExactlyOnce),
            },
            Record::Enqueued {
                seq: 3,
                msg: msg("c", QoS::AtLeastOnce),
            },
            Record::Sent {
                seq: 1,
                packet_id: id(1),
            },
            Record::Sent {
                seq: 2,
                packet_id: id(2),
            },
            Record::Received { seq: 2 },
            Record::Done { seq: 1 },
            Record::Done { seq: 99 },
            Record::InboundHeld { packet_id: id(7) },
            Record::InboundHeld { packet_id: id(8) },
            Record::InboundReleased { packet_id: id(7) },
        ];
        let r = Restored::replay(records.iter().cloned());
        assert_eq!(
            r.inbound_held.iter().copied().collect::<Vec<_>>(),
            vec![id(8)]
        );
        let got: Vec<_> = r.messages.iter().map(|(s, m)| (*s, m.1, m.2)).collect();
        assert_eq!(got, vec![(2, Some(id(2)), true), (3, None, false)]);
        let mut st = BridgeState::default();
        for rec in &records {
            let op = rec.to_op(CLOCK);
            let stored = crate::store::Record::Bridge {
                bridge: "b".into(),
                op,
            };
            if let crate::store::Record::Bridge { op, .. } = stored.into_owned() {
                st.apply(op);
            }
        }
        assert_eq!(
            Restored::from_state(&st, CLOCK),
            r,
            "the store's fold is the same"
        );
        let mut q = ForwardQueue::new(10, 1000);
        q.restore(vec![Queued {
            seq: Some(3),
            msg: msg("c", QoS::AtLeastOnce),
        }]);
        assert_eq!(q.push(msg("d", QoS::AtLeastOnce)), Ok(Some(4)));
        assert_eq!(q.pop().and_then(|x| x.seq), Some(3));
    }
}
