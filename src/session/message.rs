//! `Message`: an application message once it has been accepted from a publisher.
//!
//! Owns: the immutable, reference-counted form of a PUBLISH that crosses shards and sits in
//! session queues. Invariant: never mutated after creation, so an `Arc<Message>` is the only
//! thing shards share. Must not touch: per-subscriber state (packet id, DUP, granted QoS,
//! topic alias), which is chosen at delivery time.
//!
//! `MessagePool` recycles the allocations of messages this shard was the last to hold
//! (a QoS 1 delivery acknowledged, a QoS 0 message written): taking one from the pool
//! costs no `malloc` when its payload has the same length as the last. Invariant: the pool
//! holds only messages nobody else references (`Arc::get_mut` succeeds), so reusing one
//! can never change a message someone can still see.

use std::sync::Arc;

use crate::protocol::{Properties, Publish, QoS};

/// MQTT 5 properties that travel with the message to subscribers, unchanged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ForwardedProps {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// Content Type.
    pub content_type: Option<Box<str>>,
    /// Response Topic.
    pub response_topic: Option<Box<str>>,
    /// Correlation Data.
    pub correlation_data: Option<Box<[u8]>>,
    /// User Properties in order, kept as their wire encoding (0x26 entries) so every
    /// delivery copies them with one `extend_from_slice` and no per-delivery allocation.
    pub user_properties: Box<[u8]>,
}

impl ForwardedProps {
    /// The forwardable properties of an incoming PUBLISH, or `None` when it has none (all
    /// 3.x publishes and most 5.0 ones), so plain messages carry no extra allocation.
    pub fn from_publish(p: &Properties<'_>) -> Option<Box<ForwardedProps>> {
        let mut users = p.user_properties.iter().peekable();
        if p.payload_format_indicator.is_none()
            && p.content_type.is_none()
            && p.response_topic.is_none()
            && p.correlation_data.is_none()
            && users.peek().is_none()
        {
            return None;
        }
        Some(Box::new(ForwardedProps {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.map(Into::into),
            response_topic: p.response_topic.map(Into::into),
            correlation_data: p.correlation_data.map(Into::into),
            user_properties: encode_user_properties(users),
        }))
    }
}

/// The wire form of User Properties: repeated `0x26, name, value` (MQTT strings).
fn encode_user_properties<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Box<[u8]> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.push(crate::protocol::properties::id::USER_PROPERTY);
        for s in [k, v] {
            // Both strings came from a decoded packet, so each fits in u16.
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        }
    }
    out.into_boxed_slice()
}

/// An accepted application message.
#[derive(Debug)]
pub struct Message {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Box<[u8]>,
    /// QoS the publisher sent it with (the ceiling for every delivery).
    pub qos: QoS,
    /// The publisher's RETAIN flag.
    pub retain: bool,
    /// 5.0 properties to forward.
    pub props: Option<Box<ForwardedProps>>,
    /// Absolute expiry on the shard clock (ms), from Message Expiry Interval.
    pub expires_at_ms: Option<u64>,
    /// Unique id of the publishing session (for No Local); 0 for none.
    pub origin: u64,
    /// For a retained message: its place in the total order of retained updates (Lamport
    /// clock, shard id in the low bits), set by the shard it enters on; 0 otherwise.
    pub retain_stamp: u64,
    /// Who published it, kept only on retained messages when an ACL is in force: a
    /// retained message is delivered only while its publisher may still publish it
    /// (Mosquitto CVE-2018-12546).
    pub publisher: Option<Arc<Publisher>>,
    /// The QoS 2 routing this message is part of (origin shard in the high 16 bits, its
    /// sequence below; 0: none): its QoS 2 PUBLISHes wait until the origin has committed
    /// it (`broker::journal`), and a delivery of it is logged with it.
    pub txn: u64,
    /// Its identity for share groups, the same on every shard and across restarts (origin
    /// shard + 1 in the high 16 bits, that shard's number below; 0: none): given by the
    /// shard it enters on when a store is kept and a share group exists, and logged with
    /// its message records (decision 0022). A share-group move onto a member that holds a
    /// restored delivery of the same message is dropped (`broker::shared`).
    pub share_id: u64,
}

/// The identity a message was published under, as the ACL sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// Username (`None`: anonymous).
    pub username: Option<Box<str>>,
    /// Client id.
    pub client_id: Box<str>,
    /// Id of the listener whose ACL applies (`config::listener::Listener::id`).
    pub listener: usize,
}

impl Message {
    /// A message with nothing but a topic, a payload and a QoS (no properties, no RETAIN,
    /// no origin): the common fixture of unit tests.
    #[cfg(test)]
    pub(crate) fn plain(topic: &str, payload: &[u8], qos: QoS) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            props: None,
            expires_at_ms: None,
            origin: 0,
            retain_stamp: 0,
            publisher: None,
            txn: 0,
            share_id: 0,
        }
    }

    /// Build a message from a decoded PUBLISH whose topic alias has been resolved.
    pub fn from_publish(p: &Publish<'_>, topic: Arc<str>, now_ms: u64, origin: u64) -> Message {
        Message::with_payload(p, topic, now_ms, origin, p.payload.into())
    }

    /// As [`Message::from_publish`], with the payload already copied into `payload`.
    fn with_payload(
        p: &Publish<'_>,
        topic: Arc<str>,
        now_ms: u64,
        origin: u64,
        payload: Box<[u8]>,
    ) -> Message {
        Message {
            topic,
            payload,
            qos: p.qos,
            retain: p.retain,
            props: ForwardedProps::from_publish(&p.properties),
            expires_at_ms: p
                .properties
                .message_expiry_interval
                .map(|s| now_ms.saturating_add(u64::from(s) * 1000)),
            origin,
            retain_stamp: 0,
            publisher: None,
            txn: 0,
            share_id: 0,
        }
    }

    /// True once the message has outlived its Message Expiry Interval.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| now_ms >= t)
    }

    /// Remaining expiry interval in whole seconds (rounded up), for forwarding.
    pub fn remaining_expiry_s(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms.map(|t| {
            let ms = t.saturating_sub(now_ms);
            u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
        })
    }

    /// Approximate heap bytes held, for queue accounting.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

/// Messages kept for reuse per shard.
const POOL_MESSAGES_MAX: usize = 1024;

/// Largest payload whose allocation is kept in the pool, bytes.
const POOL_PAYLOAD_BYTES_MAX: usize = 4096;

/// Recycled message allocations of one shard (see the module documentation).
#[derive(Debug, Default)]
pub struct MessagePool {
    free: Vec<Arc<Message>>,
}

impl MessagePool {
    /// The message of a decoded PUBLISH, in a recycled allocation when one is free.
    pub fn message(
        &mut self,
        p: &Publish<'_>,
        topic: Arc<str>,
        now_ms: u64,
        origin: u64,
    ) -> Arc<Message> {
        if let Some(mut arc) = self.free.pop() {
            if let Some(m) = Arc::get_mut(&mut arc) {
                let mut payload = std::mem::take(&mut m.payload);
                if payload.len() == p.payload.len() {
                    payload.copy_from_slice(p.payload);
                } else {
                    payload = p.payload.into();
                }
                *m = Message::with_payload(p, topic, now_ms, origin, payload);
                return arc;
            }
        }
        Arc::new(Message::from_publish(p, topic, now_ms, origin))
    }

    /// Whether no message is free for reuse.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Whether a message given back now could be kept (the pool is not full).
    pub fn wants_more(&self) -> bool {
        self.free.len() < POOL_MESSAGES_MAX
    }

    /// Give back a message this shard is done with; kept only when nobody else holds it.
    pub fn put(&mut self, mut msg: Arc<Message>) {
        if self.free.len() >= POOL_MESSAGES_MAX || msg.payload.len() > POOL_PAYLOAD_BYTES_MAX {
            return;
        }
        if let Some(m) = Arc::get_mut(&mut msg) {
            m.props = None;
            self.free.push(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(payload: &[u8]) -> Publish<'_> {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "a/b",
            packet_id: crate::protocol::PacketId::new(1),
            properties: Properties::default(),
            payload,
        }
    }

    /// A pooled message is reused only once nobody else holds it, and carries the new
    /// content whatever the length of the old payload.
    #[test]
    fn pool_reuses_only_unshared_messages() {
        let mut pool = MessagePool::default();
        let first = pool.message(&publish(b"one"), "a/b".into(), 0, 1);
        let held = first.clone();
        pool.put(first);
        assert!(pool.free.is_empty(), "a shared message is not kept");
        pool.put(held);
        assert_eq!(pool.free.len(), 1);
        let second = pool.message(&publish(b"two"), "a/b".into(), 0, 2);
        assert!(pool.free.is_empty());
        assert_eq!((&*second.payload, second.origin), (&b"two"[..], 2));
        pool.put(second);
        let third = pool.message(&publish(b"longer"), "c".into(), 0, 3);
        assert_eq!((&*third.payload, &*third.topic), (&b"longer"[..], "c"));
    }
}
