//! The end of a bridge: removed or replaced by a configuration reload.
//!
//! Owns: no state of its own (the fields are `Bridge`'s). Invariant: every QoS 1/2
//! message the bridge held comes back out of `retire`, in order with its packet id, so a
//! replacement bridge (`restore`) continues exactly where this one stopped. Must not
//! touch: sockets (the shard writes the last output and closes), the broker.

use std::collections::BTreeMap;

use super::{Bridge, Link, Stage};
use crate::bridge::queue::{OutMessage, Restored};
use crate::protocol::{Disconnect, Packet, Properties, QoS, ReasonCode};

impl Bridge {
    /// Stop for good at `now_ms`: when connected, tell the remote the bridge is down
    /// (its state topic, retained) and DISCONNECT (both left in `output` for the caller to
    /// write once); set the local state topic to 0; hand back what it still held. QoS 0
    /// messages waiting in the queue are dropped (counted).
    pub fn retire(&mut self, now_ms: u64) -> Restored {
        if matches!(self.link, Link::Connected(_)) {
            if let Some(topic) = self.set.notification_topic.clone() {
                if self.set.notify_remote {
                    let msg = OutMessage {
                        topic: topic.into(),
                        payload: std::sync::Arc::from(&b"0"[..]),
                        qos: QoS::AtMostOnce,
                        retain: true,
                        props: None,
                        expires_at_ms: None,
                        txn: 0,
                    };
                    self.write_publish(now_ms, &msg, None, false);
                }
            }
            let d = Disconnect {
                reason: ReasonCode::Success,
                properties: Properties::default(),
            };
            self.send(now_ms, &Packet::Disconnect(d));
        }
        self.set_up(false, "removed or changed by a configuration reload");
        self.link = Link::Waiting {
            retry_at_ms: u64::MAX,
        };
        let mut messages = BTreeMap::new();
        for f in self.inflight.drain(..) {
            if let Some(seq) = f.seq {
                messages.insert(seq, (f.msg, Some(f.id), f.stage == Stage::Comp));
            }
        }
        while let Some(q) = self.queue.pop() {
            match q.seq {
                Some(seq) => {
                    messages.insert(seq, (q.msg, None, false));
                }
                None => self.stats.dropped_offline += 1,
            }
        }
        let inbound_held = self
            .inbound_qos2
            .iter()
            .filter(|(_, accepted)| **accepted)
            .map(|(id, _)| *id)
            .collect();
        Restored {
            messages,
            inbound_held,
        }
    }

    /// Whether the bridge has stopped for good (`retire`).
    pub fn retired(&self) -> bool {
        matches!(
            self.link,
            Link::Waiting {
                retry_at_ms: u64::MAX
            }
        )
    }
}
