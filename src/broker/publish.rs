//! PUBLISH in and out: topic aliases, QoS flows, routing to local sessions and peer shards.

use std::sync::Arc;

use super::{Broker, Cast, Conn, Hit, Verdict};
use crate::protocol::{
    self, Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode, SubscriptionIds,
    UserProperties, Version,
};
use crate::session::{Message, Outgoing};
use crate::topic;

/// Low bits of a retained stamp that hold the shard id (shards ≤ 64).
const STAMP_SHARD_BITS: u32 = 6;
/// Deleted retained topics remembered with their stamp at most.
const TOMBSTONES_MAX: usize = 65_536;

/// Inbound QoS 2 messages awaiting PUBREL per session: the server's Receive Maximum.
pub const AWAITING_REL_MAX: usize = 65_535;

impl<X> Broker<X> {
    pub(super) fn on_publish(&mut self, key: usize, p: &Publish<'_>, now_ms: u64) -> Verdict {
        self.fx.stats.publish_in += 1;
        if !p.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6]: only the server attaches Subscription Identifiers.
            return self.protocol_error(key, "Subscription Identifier in a client PUBLISH");
        }
        let (topic, fresh) = match self.resolve_alias(key, p) {
            Ok(t) => t,
            Err(v) => return v,
        };
        // A topic seen before on this link (repeated, or bound to an alias) was checked then.
        if fresh && !topic::valid_topic_name(&topic) {
            return self.close(
                key,
                Some(ReasonCode::TopicNameInvalid),
                "invalid topic name",
            );
        }
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return self.protocol_error(key, "PUBLISH without a session");
        };
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(p.payload).is_err()
        {
            // [MQTT-3.3.2-4] allows refusing it: 0x99 in the ack, or DISCONNECT for QoS 0.
            if self.nack_publish(key, p, ReasonCode::PayloadFormatInvalid) {
                return Verdict::Continue;
            }
            return self.close(
                key,
                Some(ReasonCode::PayloadFormatInvalid),
                "payload is not UTF-8",
            );
        }
        if super::sys::is_sys_topic(&topic) {
            // Only the broker publishes under $SYS: refused (0x87 for 5.0), never routed.
            self.nack_publish(key, p, ReasonCode::NotAuthorized);
            return Verdict::Continue;
        }
        self.accept_publish(key, s, p, &topic, now_ms)
    }

    /// Route an accepted PUBLISH and acknowledge it per its QoS; a QoS 2 resend is only
    /// acknowledged (the message was routed when it first came).
    fn accept_publish(
        &mut self,
        key: usize,
        s: usize,
        p: &Publish<'_>,
        topic: &Arc<str>,
        now_ms: u64,
    ) -> Verdict {
        let origin = self.sessions.get(s).map_or(0, |x| x.uid);
        match (p.qos, p.packet_id) {
            (QoS::ExactlyOnce, Some(pid)) => {
                let Some(sess) = self.sessions.get_mut(s) else {
                    return Verdict::Close;
                };
                if sess.awaiting_rel.contains(&pid.get()) {
                    // A resend of a message already routed: acknowledge, never route twice.
                    self.send_ack(key, Packet::PubRec, pid, ReasonCode::Success);
                    return Verdict::Continue;
                }
                if sess.awaiting_rel.len()
                    >= usize::from(self.cfg.receive_maximum).min(AWAITING_REL_MAX)
                {
                    return self.close(
                        key,
                        Some(ReasonCode::ReceiveMaximumExceeded),
                        "too many QoS 2",
                    );
                }
                sess.awaiting_rel.insert(pid.get());
                let matched = self.route_new(p, topic, now_ms, origin);
                self.send_ack(key, Packet::PubRec, pid, matched_code(matched));
            }
            (QoS::AtLeastOnce, Some(pid)) => {
                let matched = self.route_new(p, topic, now_ms, origin);
                self.send_ack(key, Packet::PubAck, pid, matched_code(matched));
            }
            _ => {
                self.route_new(p, topic, now_ms, origin);
            }
        }
        Verdict::Continue
    }

    /// The topic of a PUBLISH after applying (and learning) a 5.0 Topic Alias.
    fn resolve_alias(&mut self, key: usize, p: &Publish<'_>) -> Result<(Arc<str>, bool), Verdict> {
        let Some(alias) = p.properties.topic_alias else {
            return self
                .links
                .get_mut(key)
                .map(|l| l.intern_topic(p.topic))
                .ok_or(Verdict::Close);
        };
        let max = self.cfg.max_topic_alias;
        if alias == 0 || alias > max {
            return Err(self.close(
                key,
                Some(ReasonCode::TopicAliasInvalid),
                "topic alias out of range",
            ));
        }
        let Some(link) = self.links.get_mut(key) else {
            return Err(Verdict::Close);
        };
        let slot = usize::from(alias - 1);
        if link.aliases_in.len() < usize::from(max) {
            link.aliases_in.resize(usize::from(max), None);
        }
        if !p.topic.is_empty() {
            let (topic, fresh) = link.intern_topic(p.topic);
            link.aliases_in[slot] = Some(topic.clone());
            return Ok((topic, fresh));
        }
        match link.aliases_in[slot].clone() {
            Some(t) => Ok((t, false)),
            None => Err(self.protocol_error(key, "unknown topic alias")),
        }
    }

    /// Answer a refused QoS 1/2 PUBLISH with `reason` (3.x clients see a plain ack, the only
    /// answer they know). Returns false for QoS 0, which has no acknowledgement.
    fn nack_publish(&mut self, key: usize, p: &Publish<'_>, reason: ReasonCode) -> bool {
        match (p.qos, p.packet_id) {
            (QoS::ExactlyOnce, Some(pid)) => self.send_ack(key, Packet::PubRec, pid, reason),
            (QoS::AtLeastOnce, Some(pid)) => self.send_ack(key, Packet::PubAck, pid, reason),
            _ => return false,
        }
        true
    }

    fn send_ack(
        &mut self,
        key: usize,
        kind: fn(Ack<'static>) -> Packet<'static>,
        pid: PacketId,
        reason: ReasonCode,
    ) {
        let ack = Ack {
            packet_id: pid,
            reason,
            properties: Properties::default(),
        };
        self.send(key, &kind(ack));
    }

    /// Accept a message from a client: retain it, route it here and to interested shards.
    /// Returns whether any subscriber anywhere may match (for 5.0's 0x10 reason code).
    fn route_new(&mut self, p: &Publish<'_>, topic: &Arc<str>, now_ms: u64, origin: u64) -> bool {
        let msg = Message::from_publish(p, topic.clone(), now_ms, origin);
        self.publish_message(msg, now_ms)
    }

    /// Route a message that originates on this shard (client publish, Will, `$SYS`). A
    /// retained one is stamped here, once, for every replica to order it by.
    pub(super) fn publish_message(&mut self, mut msg: Message, now_ms: u64) -> bool {
        if msg.retain {
            self.lamport += 1;
            msg.retain_stamp = (self.lamport << STAMP_SHARD_BITS) | self.shard_id as u64;
        }
        let msg = Arc::new(msg);
        if msg.retain {
            self.store_retained(&msg);
        }
        let mut mask = 0u64;
        if self.shards > 1 && !self.interest.is_empty() {
            self.interest.for_each_match(&msg.topic, |_, m| mask |= *m);
        }
        mask &= !(1u64 << self.shard_id);
        let remote = mask != 0;
        if msg.retain {
            // Every shard keeps a replica of the retained store.
            mask = ((1u128 << self.shards) - 1) as u64 & !(1u64 << self.shard_id);
        }
        for to in 0..self.shards {
            if mask & (1u64 << to) != 0 {
                self.fx.outbox.push((to, Cast::Publish(msg.clone())));
            }
        }
        let shared = self.dispatch_shared(&msg, now_ms);
        let local = self.route_local(&msg, now_ms);
        local || remote || shared
    }

    /// Update the retained replica: an empty payload clears the topic.
    /// Apply a retained update to this shard's replica: last writer wins by stamp, so every
    /// replica ends with the same message whatever order concurrent updates arrive in, and
    /// an update causally after another (its shard had seen the other) always wins.
    pub(super) fn store_retained(&mut self, msg: &Arc<Message>) {
        self.lamport = self.lamport.max(msg.retain_stamp >> STAMP_SHARD_BITS);
        let held = match self.retained.get(&msg.topic) {
            Some(m) => Some(m.retain_stamp),
            None => self.tombstones.get(&*msg.topic).copied(),
        };
        if held.is_some_and(|h| h >= msg.retain_stamp) {
            return;
        }
        if msg.payload.is_empty() {
            self.retained.remove(&msg.topic);
            if self.tombstones.len() >= TOMBSTONES_MAX {
                // Tombstones only guard against an older update overtaking a deletion in
                // flight between shards (microseconds); forgetting them is safe in practice.
                self.tombstones.clear();
            }
            self.tombstones.insert(msg.topic.clone(), msg.retain_stamp);
        } else {
            self.tombstones.remove(&*msg.topic);
            self.retained.insert(&msg.topic, msg.clone());
        }
    }

    /// Deliver to this shard's subscribers; overlapping subscriptions of one session give
    /// one delivery at the highest granted QoS carrying every Subscription Identifier.
    pub(super) fn route_local(&mut self, msg: &Arc<Message>, now_ms: u64) -> bool {
        self.route_seq += 1;
        let seq = self.route_seq;
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        let sessions = &mut self.sessions;
        self.subs.for_each_match(&msg.topic, |_, list| {
            for sub in list {
                let Some(sess) = sessions.get_mut(sub.session) else {
                    continue;
                };
                if sub.options.no_local && sess.uid == msg.origin {
                    continue;
                }
                let qos = msg.qos.min(sub.options.qos);
                if sess.route_mark == seq {
                    if let Some(h) = hits.get_mut(sess.route_slot as usize) {
                        h.qos = h.qos.max(qos);
                        h.retain_as_published |= sub.options.retain_as_published;
                        h.sub_ids.extend(sub.sub_id);
                    }
                    continue;
                }
                sess.route_mark = seq;
                sess.route_slot = hits.len() as u32;
                hits.push(Hit {
                    session: sub.session,
                    link: sess.link,
                    qos,
                    retain_as_published: sub.options.retain_as_published,
                    sub_ids: sub.sub_id.into_iter().collect(),
                });
            }
        });
        let matched = !hits.is_empty();
        let live = !msg.expired(now_ms);
        for h in hits.drain(..).filter(|_| live) {
            let out = Outgoing {
                msg: msg.clone(),
                qos: h.qos,
                retain: h.retain_as_published && msg.retain,
                sub_ids: h.sub_ids,
                share: None,
            };
            match (out.qos, h.link) {
                (QoS::AtMostOnce, Some(key)) => self.deliver_qos0(key, &out, now_ms),
                // QoS 0 to an offline session is not kept [MQTT-3.1.2-5 allows dropping].
                (QoS::AtMostOnce, None) => {}
                _ => self.deliver(h.session, out, now_ms),
            }
        }
        self.hits = hits;
        matched
    }

    /// Hand one delivery to a session: write it now, queue it, or drop it (counted).
    pub(super) fn deliver(&mut self, s: usize, out: Outgoing, now_ms: u64) {
        if out.msg.expired(now_ms) {
            return;
        }
        let max_buf = self.cfg.max_write_buffer;
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        let link = sess
            .link
            .filter(|&k| self.links.get(k).is_some_and(|l| l.is_connected()));
        let Some(key) = link else {
            if out.qos != QoS::AtMostOnce && sess.expiry_s > 0 && !sess.enqueue(out, &self.limits) {
                self.fx.stats.dropped_queue += 1;
            }
            return;
        };
        let buffer_full = self
            .links
            .conn(key)
            .is_some_and(|c| c.tx.pending() >= max_buf);
        if out.qos == QoS::AtMostOnce {
            if buffer_full {
                self.fx.stats.dropped_qos0 += 1;
            } else {
                self.write_publish(key, &out, None, false, now_ms);
            }
            return;
        }
        if buffer_full || !sess.queue.is_empty() || !sess.window_open(&self.limits) {
            if !sess.enqueue(out, &self.limits) {
                self.fx.stats.dropped_queue += 1;
            }
            return;
        }
        let Some(pid) = sess.alloc_pid() else { return };
        sess.track(pid, out.clone());
        self.write_publish(key, &out, Some(pid), false, now_ms);
    }

    /// A QoS 0 delivery straight to a connected link: written, or dropped (counted) when the
    /// link's buffer is over its limit. No session state is involved.
    fn deliver_qos0(&mut self, key: usize, out: &Outgoing, now_ms: u64) {
        let max_buf = self.cfg.max_write_buffer;
        match self.links.conn(key) {
            Some(c) if c.link.is_connected() && c.tx.pending() < max_buf => {
                self.write_publish(key, out, None, false, now_ms);
            }
            Some(c) if c.link.is_connected() => self.fx.stats.dropped_qos0 += 1,
            _ => {}
        }
    }

    /// Move queued deliveries into the window while the link can take them.
    pub(super) fn pump(&mut self, s: usize, now_ms: u64) {
        let max_buf = self.cfg.max_write_buffer;
        loop {
            let Some(sess) = self.sessions.get_mut(s) else {
                return;
            };
            let Some(key) = sess.link else { return };
            let Some(c) = self.links.conn(key) else {
                return;
            };
            if !c.link.is_connected()
                || c.tx.pending() >= max_buf
                || !sess.window_open(&self.limits)
            {
                return;
            }
            let Some(out) = sess.dequeue() else { return };
            if out.msg.expired(now_ms) {
                continue;
            }
            let Some(pid) = sess.alloc_pid() else {
                sess.requeue_front(out);
                return;
            };
            sess.track(pid, out.clone());
            self.write_publish(key, &out, Some(pid), false, now_ms);
        }
    }

    /// Encode one PUBLISH into link `key`'s buffer. A message over the client's Maximum
    /// Packet Size is dropped as if sent [MQTT-3.1.2-25]; the caller's books stay as they are
    /// and its acknowledgement will simply never come for QoS > 0, so it is released here.
    pub(super) fn write_publish(
        &mut self,
        key: usize,
        out: &Outgoing,
        pid: Option<PacketId>,
        dup: bool,
        now_ms: u64,
    ) {
        let Some(Conn { link, tx, .. }) = self.links.conn_mut(key) else {
            return;
        };
        let msg = &out.msg;
        let mut props = Properties::default();
        if link.version == Version::V5 {
            if let Some(f) = msg.props.as_deref() {
                props.payload_format_indicator = f.payload_format_indicator;
                props.content_type = f.content_type.as_deref();
                props.response_topic = f.response_topic.as_deref();
                props.correlation_data = f.correlation_data.as_deref();
                props.user_properties = UserProperties::Wire(&f.user_properties);
            }
            props.message_expiry_interval = msg.remaining_expiry_s(now_ms);
            props.subscription_identifiers = SubscriptionIds::Slice(&out.sub_ids);
        }
        let (topic, alias, learn) = outbound_alias(link, &msg.topic);
        props.topic_alias = alias;
        let p = Publish {
            dup,
            qos: out.qos,
            retain: out.retain,
            topic,
            packet_id: pid,
            properties: props,
            payload: &msg.payload,
        };
        if link.client_max_packet != usize::MAX
            && protocol::encoded_len(&Packet::Publish(p.clone()), link.version)
                > link.client_max_packet
        {
            self.fx.stats.dropped_too_large += 1;
            if let (Some(pid), Some(s)) = (pid, link.session) {
                if let Some(sess) = self.sessions.get_mut(s) {
                    sess.inflight.retain(|f| f.pid != pid);
                }
            }
            return;
        }
        protocol::encode_publish(tx.buf(), link.version, &p);
        if let (true, Some(a)) = (learn, alias) {
            link.aliases_out
                .get_or_insert_with(Default::default)
                .insert(msg.topic.clone(), a);
        }
        self.fx.stats.publish_out += 1;
        self.fx.mark_dirty(key, link);
    }

    pub(super) fn on_puback(&mut self, key: usize, pid: PacketId, now_ms: u64) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        if let Some(sess) = self.sessions.get_mut(s) {
            // An unknown id is tolerated: it may be a late ack of a resent message.
            let _ = sess.on_puback(pid);
        }
        self.pump(s, now_ms);
        Verdict::Continue
    }

    pub(super) fn on_pubrec(&mut self, key: usize, a: &Ack<'_>, now_ms: u64) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        let failed = a.reason.is_error();
        let found = self
            .sessions
            .get_mut(s)
            .map(|x| x.on_pubrec(a.packet_id, failed));
        match found {
            Some(Ok(())) if failed => self.pump(s, now_ms),
            Some(Ok(())) => self.send_ack(key, Packet::PubRel, a.packet_id, ReasonCode::Success),
            _ => self.send_ack(
                key,
                Packet::PubRel,
                a.packet_id,
                ReasonCode::PacketIdentifierNotFound,
            ),
        }
        Verdict::Continue
    }

    pub(super) fn on_pubrel(&mut self, key: usize, pid: PacketId) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        let known = self
            .sessions
            .get_mut(s)
            .is_some_and(|x| x.awaiting_rel.remove(&pid.get()));
        let reason = if known {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.send_ack(key, Packet::PubComp, pid, reason);
        Verdict::Continue
    }

    pub(super) fn on_pubcomp(&mut self, key: usize, pid: PacketId, now_ms: u64) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        if let Some(sess) = self.sessions.get_mut(s) {
            let _ = sess.on_pubcomp(pid);
        }
        self.pump(s, now_ms);
        Verdict::Continue
    }

    /// A bus message from another shard.
    pub fn on_cast(&mut self, cast: Cast, now_ms: u64) {
        match cast {
            Cast::Publish(msg) => {
                if msg.retain {
                    self.store_retained(&msg);
                }
                self.route_local(&msg, now_ms);
            }
            Cast::Interest {
                from,
                filter,
                add,
                seq,
            } => {
                self.apply_interest(from, &filter, add);
                self.fx.outbox.push((
                    from,
                    Cast::InterestAck {
                        from: self.shard_id,
                        seq,
                    },
                ));
            }
            Cast::Share {
                from,
                group,
                filter,
                member,
                op,
                seq,
            } => {
                self.apply_share(&group, &filter, member, op);
                self.fx.outbox.push((
                    from,
                    Cast::InterestAck {
                        from: self.shard_id,
                        seq,
                    },
                ));
            }
            Cast::ShareDeliver(d) => self.on_share_delivery(*d, now_ms),
            Cast::Sys { from, report } => self.on_sys_report(from, *report),
            Cast::InterestAck { from, seq } => {
                if let Some(a) = self.acked_seq.get_mut(from) {
                    *a = (*a).max(seq);
                }
                self.release_subacks(now_ms);
            }
        }
    }
}

/// The topic to send and the Topic Alias to attach (5.0): a known alias sends an empty
/// topic; a new topic takes the next free alias while any are left; aliases are never
/// re-bound, so the client's map can never disagree with ours.
/// The third value says the alias is new: record it once the packet is really written.
fn outbound_alias<'m>(link: &super::Link, topic: &'m str) -> (&'m str, Option<u16>, bool) {
    if link.aliases_out_max == 0 || link.version != Version::V5 {
        return (topic, None, false);
    }
    if let Some(&a) = link.aliases_out.as_ref().and_then(|m| m.get(topic)) {
        return ("", Some(a), false);
    }
    let used = link.aliases_out.as_ref().map_or(0, |m| m.len());
    if used >= usize::from(link.aliases_out_max) || used >= ALIASES_OUT_MAX {
        return (topic, None, false);
    }
    (topic, Some(used as u16 + 1), true)
}

/// Outbound aliases kept per connection whatever the client allows (memory bound).
const ALIASES_OUT_MAX: usize = 1024;

/// PUBACK/PUBREC reason: 0x10 when no subscriber matched (3.x sends no reason at all).
fn matched_code(matched: bool) -> ReasonCode {
    if matched {
        ReasonCode::Success
    } else {
        ReasonCode::NoMatchingSubscribers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn retained(stamp: u64, payload: &[u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: "status/door".into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: true,
            props: None,
            expires_at_ms: None,
            origin: 0,
            retain_stamp: stamp,
        })
    }

    fn held(b: &Broker<()>) -> Option<Vec<u8>> {
        b.retained.get("status/door").map(|m| m.payload.to_vec())
    }

    /// Two replicas receive the same concurrent updates (and a deletion) in opposite
    /// orders and must end up holding the same message: the one with the highest stamp.
    #[test]
    fn replicas_converge_whatever_the_arrival_order() {
        let cfg = Arc::new(Config::default());
        let updates = [
            retained(5 << 6 | 1, b"open"),
            retained(5 << 6, b"shut"),
            retained(6 << 6 | 1, b""),
        ];
        let orders: [[usize; 3]; 3] = [[0, 1, 2], [2, 1, 0], [1, 2, 0]];
        let finals: Vec<Option<Vec<u8>>> = orders
            .iter()
            .map(|order| {
                let mut b = Broker::<()>::new(0, 2, cfg.clone(), 0);
                for &i in order {
                    b.store_retained(&updates[i]);
                }
                held(&b)
            })
            .collect();
        assert_eq!(
            finals,
            vec![None, None, None],
            "the deletion has the highest stamp"
        );
        let mut b = Broker::<()>::new(0, 2, cfg.clone(), 0);
        b.store_retained(&updates[1]);
        b.store_retained(&updates[0]);
        assert_eq!(
            held(&b),
            Some(b"open".to_vec()),
            "same clock: the higher shard id wins"
        );
        b.store_retained(&updates[1]);
        assert_eq!(
            held(&b),
            Some(b"open".to_vec()),
            "an older update never overwrites"
        );
    }

    /// A shard that has seen a stamp publishes after it: causally later updates win.
    #[test]
    fn local_updates_follow_what_the_shard_has_seen() {
        let cfg = Arc::new(Config::default());
        let mut b = Broker::<()>::new(0, 2, cfg, 0);
        b.store_retained(&retained(40 << 6 | 1, b"remote"));
        let local = Message {
            payload: b"local".to_vec().into_boxed_slice(),
            ..Arc::try_unwrap(retained(0, b"")).expect("unique")
        };
        b.publish_message(local, 0);
        assert_eq!(held(&b), Some(b"local".to_vec()));
    }
}
