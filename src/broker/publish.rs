//! PUBLISH in and out: topic aliases, QoS flows, routing to local sessions and peer shards.

use std::sync::Arc;

use super::cluster_ack::HeldPubAck;
use super::{deliver, shared, Broker, Cast, Verdict};
use crate::protocol::{self, Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode};
use crate::session::Message;
use crate::topic;

/// Inbound QoS 2 messages awaiting PUBREL per session: the server's Receive Maximum.
pub const AWAITING_REL_MAX: usize = 65_535;

impl<X> Broker<X> {
    pub(super) fn on_publish(&mut self, key: usize, p: &Publish<'_>, now_ms: u64) -> Verdict {
        let st = &mut self.fx.stats;
        st.publish_in += 1;
        st.publish_in_qos[p.qos as usize] += 1;
        st.publish_in_bytes_qos[p.qos as usize] += p.payload.len() as u64;
        if !p.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6]: only the server attaches Subscription Identifiers.
            return self.protocol_error(key, "Subscription Identifier in a client PUBLISH");
        }
        let (mut topic, fresh) = match self.resolve_alias(key, p) {
            Ok(t) => t,
            Err(v) => return v,
        };
        if let Some(m) = self.links.get(key).and_then(|l| l.mount.as_deref()) {
            // A mounted listener's clients publish under its mount point.
            topic = Arc::from(super::link::mounted(Some(m), &topic).as_ref());
        }
        // A topic seen before on this link (repeated, or bound to an alias) was checked then.
        if fresh && !topic::valid_topic_name(&topic) {
            return self.close(
                key,
                Some(ReasonCode::TopicNameInvalid),
                "invalid topic name",
            );
        }
        if fresh {
            // A publisher: the first to stop being read when memory runs short.
            if let Some(l) = self.links.get_mut(key) {
                l.published = true;
            }
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
        if self.auth.any_acl() && !self.may_publish(key, &topic) {
            // 5.0: PUBACK/PUBREC 0x87; 3.x: acknowledged and dropped, as Mosquitto does.
            self.nack_publish(key, p, ReasonCode::NotAuthorized);
            return Verdict::Continue;
        }
        if p.qos != QoS::AtMostOnce && self.store_stalled() && !self.qos2_resend(s, p) {
            if let Some(v) = self.refuse_while_stalled(key, p) {
                return v;
            }
        }
        self.hot.observe(&topic, now_ms);
        self.accept_publish(key, s, p, &topic, now_ms)
    }

    /// Whether `p` resends a QoS 2 message session `s` already took (only acknowledged).
    fn qos2_resend(&self, s: usize, p: &Publish<'_>) -> bool {
        match (p.qos, p.packet_id, self.sessions.get(s)) {
            (QoS::ExactlyOnce, Some(pid), Some(sess)) => sess.awaiting_rel.contains(&pid.get()),
            _ => false,
        }
    }

    /// May link `key` publish to `topic` (its listener's ACL, through its cache)? A refusal
    /// is counted, and logged once per connection.
    fn may_publish(&mut self, key: usize, topic: &Arc<str>) -> bool {
        let Some(link) = self.links.get_mut(key) else {
            return false;
        };
        let Some(acl) = self.auth.acl(link.listener) else {
            return true;
        };
        let client = crate::auth::Client {
            username: link.username.as_deref(),
            client_id: link.client_id.as_deref().unwrap_or(""),
        };
        if link.acl_cache.can_publish(acl, client, topic) {
            return true;
        }
        self.fx.stats.acl_denied += 1;
        if !std::mem::replace(&mut link.publish_denied_logged, true) {
            crate::log_at!(
                crate::log::Level::Notice,
                "Client {} (user {}) from {} denied PUBLISH to '{}' (further refusals on this connection are not logged).",
                client.client_id.escape_debug(),
                client.username.unwrap_or("<anonymous>").escape_debug(),
                link.peer,
                topic.escape_debug()
            );
        }
        false
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
                    self.pubrec_resend(s, key, pid);
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
                let uid = sess.uid;
                let txn = self.qos2_txn(s, key);
                let (next, qos2_id) = self.qos2_number(s, pid, topic, p.payload);
                self.acks.qos2_id = qos2_id;
                let (matched, seq) = self.route_acked(key, p, topic, now_ms, (origin, txn));
                self.acks.qos2_id = None;
                let reason = matched_code(matched);
                match seq {
                    // In a cluster: once other nodes' queues hold it (`cluster_ack`); the
                    // routing is committed then.
                    Some(seq) => {
                        let what = HeldPubAck::PubRec {
                            session: s,
                            uid,
                            pid,
                            reason,
                            txn,
                            next,
                            resends: Vec::new(),
                        };
                        self.hold_for_cluster(key, seq, what);
                    }
                    None => self.pubrec_new(s, key, pid, reason, (txn, next)),
                }
            }
            (QoS::AtLeastOnce, Some(pid)) => {
                let (matched, seq) = self.route_acked(key, p, topic, now_ms, (origin, 0));
                match seq {
                    Some(seq) => {
                        let ack = Ack {
                            packet_id: pid,
                            reason: matched_code(matched),
                            properties: Properties::default(),
                        };
                        let mut bytes = Vec::new();
                        let version = self
                            .links
                            .get(key)
                            .map_or(protocol::Version::V3_1_1, |l| l.version);
                        protocol::encode(&Packet::PubAck(ack), version, &mut bytes);
                        self.hold_for_cluster(key, seq, HeldPubAck::Packet(bytes));
                    }
                    None => self.send_ack_durable(key, Packet::PubAck, pid, matched_code(matched)),
                }
            }
            _ => {
                self.route_new(key, p, topic, now_ms, (origin, 0));
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
            // Held like the successful ones: acks keep the order of the PUBLISHes
            // [MQTT-4.6.0-2].
            (QoS::ExactlyOnce, Some(pid)) => {
                self.send_ack_durable(key, Packet::PubRec, pid, reason)
            }
            (QoS::AtLeastOnce, Some(pid)) => {
                self.send_ack_durable(key, Packet::PubAck, pid, reason)
            }
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
        if crate::log_sink::enabled(crate::log::Level::Debug) {
            // Logged packets go the general way, which builds the whole packet to log it.
            let ack = Ack {
                packet_id: pid,
                reason,
                properties: Properties::default(),
            };
            return self.send(key, &kind(ack));
        }
        // The packet type of `kind` (folded away where `kind` is a constant).
        let type_id = match kind(Ack::new(pid)) {
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            _ => 7,
        };
        let Some(c) = self.links.conn_mut(key) else {
            return;
        };
        // The same bytes `send` writes for this ack, without building its properties.
        protocol::encode_plain_ack(c.tx.buf(), type_id, pid, reason, c.link.version);
        self.fx.stats.packets_out += 1;
        self.fx.mark_dirty(key, &mut c.link);
    }

    /// Like `send_ack`, once this turn's records are durable (persistence on).
    fn send_ack_durable(
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
        self.send_durable(key, &kind(ack));
    }

    /// `route_new` for a QoS ≥ 1 PUBLISH whose acknowledgement waits: also returns the
    /// cluster-ack sequence when the message went to the cluster link (`cluster_ack`).
    fn route_acked(
        &mut self,
        key: usize,
        p: &Publish<'_>,
        topic: &Arc<str>,
        now_ms: u64,
        origin: (u64, u64),
    ) -> (bool, Option<u64>) {
        self.acks.wanted = true;
        self.acks.numbered = None;
        let matched = self.route_new(key, p, topic, now_ms, origin);
        self.acks.wanted = false;
        (matched, self.acks.numbered.take())
    }

    /// Accept a message from a client: retain it, route it here and to interested shards.
    /// Returns whether any subscriber anywhere may match (for 5.0's 0x10 reason code).
    /// `(origin, txn)`: the publishing session's uid and the message's QoS 2 routing (0:
    /// none).
    fn route_new(
        &mut self,
        key: usize,
        p: &Publish<'_>,
        topic: &Arc<str>,
        now_ms: u64,
        (origin, txn): (u64, u64),
    ) -> bool {
        if !p.retain {
            if let Some(j) = self.journal.as_mut().filter(|_| self.msg_pool.is_empty()) {
                j.recycle(&mut self.msg_pool);
            }
            let mut msg = self.msg_pool.message(p, topic.clone(), now_ms, origin);
            // The pool hands out a message no one else holds; one shared already would
            // lose its QoS 2 routing here, so a debug build stops (as `number_for_shares`).
            match Arc::get_mut(&mut msg) {
                Some(m) => m.txn = txn,
                None => debug_assert!(txn == 0, "a pooled message shared before its routing"),
            }
            return self.publish_shared(msg, now_ms);
        }
        let mut msg = Message::from_publish(p, topic.clone(), now_ms, origin);
        msg.txn = txn;
        if self.auth.any_acl() {
            // Kept so the publisher's right is checked again whenever it is delivered.
            msg.publisher = self.links.get(key).map(|l| {
                Arc::new(crate::session::message::Publisher {
                    username: l.username.clone(),
                    client_id: l.client_id.clone().unwrap_or_default(),
                    listener: l.listener,
                })
            });
        }
        self.publish_message(msg, now_ms)
    }

    /// Route a message that originates on this shard (client publish, Will, `$SYS`). A
    /// retained one is stamped here, once, for every replica to order it by.
    pub(super) fn publish_message(&mut self, mut msg: Message, now_ms: u64) -> bool {
        if msg.retain {
            msg.retain_stamp = self.retained.next_stamp(self.shard_id);
        }
        self.publish_shared(Arc::new(msg), now_ms)
    }

    /// Route a stamped message: retain it, send it to interested shards, deliver it here.
    /// The shard's reference goes back to the pool (kept if no delivery holds it).
    pub(super) fn publish_shared(&mut self, mut msg: Arc<Message>, now_ms: u64) -> bool {
        self.number_for_shares(&mut msg);
        if msg.retain {
            self.retained.store(&msg);
            self.log_retained(&msg);
        }
        let mut mask = 0u64;
        if self.shards > 1 {
            mask = self.routes.remote_mask(&msg.topic, self.shard_id)
                | self.bridges.remote_mask(&msg.topic, self.shard_id);
        }
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
        // In a cluster, the group's queue or NATS queue groups choose the one member of a
        // share group (on any node, this one included), so the shard does not choose one
        // itself — except for groups whose members are all here as far as the link's
        // view says: those it serves itself, and the cluster leaves them out.
        let served = if self.clustered(&msg.topic) {
            self.dispatch_local_shared(&msg, now_ms)
        } else {
            Vec::new()
        };
        let served_here = !served.is_empty();
        let clustered = self.forward_to_cluster(&msg, now_ms, served);
        let shared = served_here || (!clustered && self.dispatch_shared(&msg, now_ms));
        let local = self.route_local(&msg, now_ms);
        self.msg_pool.put(msg);
        local || remote || shared || clustered
    }

    /// Give a QoS 1/2 message entering here its share identity (`Message::share_id`)
    /// while it is still this shard's alone, when a store is kept and a share group
    /// exists (a message no group matches keeps it unused: 8 bytes more in its records).
    /// Without a store, or without a group, nothing is done. Every caller hands the
    /// message over unshared; one shared already (a copy cast or stored before this) would
    /// keep identity 0, and its stored shared deliveries could not be told apart, so a
    /// debug build stops there (`share_log.rs` tests that it does).
    fn number_for_shares(&mut self, msg: &mut Arc<Message>) {
        let me = self.shard_id;
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        if msg.qos == QoS::AtMostOnce || self.routes.share_groups().is_empty() {
            return;
        }
        debug_assert!(
            Arc::get_mut(msg).is_some(),
            "a message numbered for shares after it was shared"
        );
        if let Some(m) = Arc::get_mut(msg) {
            m.share_id = j.next_share_id(me);
        }
    }

    /// Deliver to this shard's subscribers (see `deliver::route_local`).
    /// This shard's bridges are offered it too (see `bridges::BridgeRoutes`).
    pub(super) fn route_local(&mut self, msg: &Arc<Message>, now_ms: u64) -> bool {
        let bridged = self
            .bridges
            .offer(msg, self.auth.bridge_acl(), &mut self.fx);
        let (routes, sessions, mut sink) = self.parts();
        deliver::route_local(routes, sessions, &mut sink, msg, now_ms) || bridged
    }

    /// Move session `s`'s queued deliveries into its window (see `deliver::pump`).
    pub(super) fn pump(&mut self, s: usize, now_ms: u64) {
        let (_, sessions, mut sink) = self.parts();
        deliver::pump(sessions, &mut sink, s, now_ms);
        // Write what the walk found; when it ran dry, walk a slice more (at most one per
        // session per turn: `pacing`) and write on.
        while self
            .sessions
            .get(s)
            .is_some_and(|x| !x.retained_backlog.is_empty())
        {
            let (_, sessions, mut sink) = self.parts();
            deliver::pump_retained(sessions, &mut sink, s, now_ms);
            if !self.walk_retained(s, now_ms) {
                return;
            }
        }
    }

    pub(super) fn on_puback(&mut self, key: usize, pid: PacketId, now_ms: u64) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        let Some(sess) = self.sessions.get_mut(s) else {
            return Verdict::Continue;
        };
        // An unknown id is tolerated: it may be a late ack of a resent message. So is the
        // id of a held delivery, never sent: it stays, and is sent on its release.
        if let Ok(msg) = sess.take_puback(pid) {
            deliver::log_done(self.journal.as_mut(), sess, pid);
            self.msg_pool.put(msg);
        }
        if !sess.queue.is_empty() {
            self.pump(s, now_ms);
        }
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
        let logged = match (&found, self.sessions.get(s)) {
            (Some(Ok(())), Some(x)) if x.logged && self.journal.is_some() => {
                Some(x.client_id.clone())
            }
            _ => None,
        };
        let stored = logged.is_some();
        if let Some(id) = logged {
            self.log_pubrec(true, &id, a.packet_id, failed);
        }
        match found {
            Some(Ok(())) if failed => self.pump(s, now_ms),
            // A stored delivery's PUBREL waits until "PUBREL sent" is durable: a client
            // that saw it forgets the packet id, so a crash that restored the delivery as
            // unacknowledged would resend the PUBLISH as a new message (found by the
            // power-cut simulation, seed 2003).
            Some(Ok(())) if stored => {
                self.send_ack_durable(key, Packet::PubRel, a.packet_id, ReasonCode::Success)
            }
            Some(Ok(())) => self.send_ack(key, Packet::PubRel, a.packet_id, ReasonCode::Success),
            // An unknown id, or a held delivery's (never sent, so not acknowledged: it
            // keeps its state and is sent on its release).
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
            self.log_incoming(s, pid, false);
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.send_ack_durable(key, Packet::PubComp, pid, reason);
        Verdict::Continue
    }

    pub(super) fn on_pubcomp(&mut self, key: usize, pid: PacketId, now_ms: u64) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        if let Some(sess) = self.sessions.get_mut(s) {
            if let Ok(out) = sess.take_pubcomp(pid) {
                // A shared message another member may hold a copy of too
                // (`shared::holds_already`).
                if let (Some(j), Some(group)) = (self.journal.as_mut(), &out.share) {
                    shared::log_completed(j, sess, &out, group);
                    j.note_share_completed(sess.uid, out.msg.share_id, group);
                }
                deliver::log_done(self.journal.as_mut(), sess, pid);
            }
        }
        self.pump(s, now_ms);
        Verdict::Continue
    }

    /// A bus message from another shard.
    pub fn on_cast(&mut self, cast: Cast, now_ms: u64) {
        match cast {
            Cast::Publish(msg) => {
                // Stamp 0: a message from another node, whose retained part comes from
                // the cluster's bucket instead (`cluster`).
                if msg.retain && msg.retain_stamp != 0 {
                    self.retained.store(&msg);
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
            Cast::Cluster(c) => self.on_cluster_cast(*c, now_ms),
            Cast::Sys { from, report } => self.on_sys_report(from, *report),
            Cast::Barrier { from, seq } => self.on_barrier(from, seq, false),
            Cast::Qos2Committed { from, txn } => self.on_qos2_committed(from, txn, now_ms),
            Cast::BarrierDone { from, seq } => self.on_barrier(from, seq, true),
            Cast::Settled { token, .. } => self.on_settled(token),
            Cast::InterestAck { from, seq } => {
                self.gate.acked(from, seq);
                self.release_subacks(now_ms);
            }
        }
    }
}

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
            publisher: None,
            txn: 0,
            share_id: 0,
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
                    b.retained.store(&updates[i]);
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
        b.retained.store(&updates[1]);
        b.retained.store(&updates[0]);
        assert_eq!(
            held(&b),
            Some(b"open".to_vec()),
            "same clock: the higher shard id wins"
        );
        b.retained.store(&updates[1]);
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
        b.retained.store(&retained(40 << 6 | 1, b"remote"));
        let local = Message {
            payload: b"local".to_vec().into_boxed_slice(),
            ..Arc::try_unwrap(retained(0, b"")).expect("unique")
        };
        b.publish_message(local, 0);
        assert_eq!(held(&b), Some(b"local".to_vec()));
    }
}
