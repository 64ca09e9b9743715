//! The message flows of a connected bridge: resending, subscribing, forwarding out through
//! the window, and bringing remote messages in.
//!
//! Owns: no state of its own (the fields are `Bridge`'s); split from `client.rs` to keep
//! files short. Invariant: as in `client.rs`. Must not touch: sockets, clocks, the broker.

use std::sync::Arc;

use super::{Action, Bridge, InboundAck, Inflight, Link, LocalPublish, Offer, Stage};
use crate::bridge::queue::{OutMessage, Queued, Record};
use crate::protocol::{
    encode, encoded_len, Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode, SubAck,
    Subscribe, Subscription, SubscriptionList, SubscriptionOptions, UserProperties,
};
use crate::session::ForwardedProps;

/// A local message offered to a bridge.
#[derive(Debug, Clone, Copy)]
pub struct Offered<'a> {
    /// Local topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a Arc<[u8]>,
    /// Its QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// MQTT 5 properties.
    pub props: Option<&'a ForwardedProps>,
    /// Expiry on the shard clock, ms.
    pub expires_at_ms: Option<u64>,
    /// Its QoS 2 routing (0: none): see [`Bridge::learn_commits`].
    pub txn: u64,
}

impl Bridge {
    /// After a reconnect: every PUBLISH not acknowledged goes again with its packet id, with
    /// DUP unless it never reached this remote (`Inflight::dup`); a QoS 2 message the
    /// remote already has gets its PUBREL again, or, when the remote kept no session,
    /// counts as delivered (it had the message, resending would repeat it).
    pub(super) fn resend_inflight(&mut self, now_ms: u64, session_present: bool) {
        let items: Vec<Inflight> = self.inflight.drain(..).collect();
        for item in items {
            if item.held.is_some() {
                // Its record is not durable yet: `records_durable` writes it.
                self.inflight.push_back(item);
                continue;
            }
            if item.stage == Stage::Comp {
                if session_present {
                    self.send(now_ms, &Packet::PubRel(Ack::new(item.id)));
                    self.inflight.push_back(item);
                } else {
                    self.finish(item.seq, true);
                }
                continue;
            }
            self.write_publish(now_ms, &item.msg, Some(item.id), item.dup);
            self.inflight.push_back(Inflight { dup: true, ..item });
        }
    }

    pub(super) fn subscribe(&mut self, now_ms: u64) {
        let no_local = self.set.version.is_v5();
        for (filter, qos) in self.mapper.remote_filters() {
            let Some(id) = self.alloc_id() else { break };
            let subs = [Subscription {
                filter: &filter,
                options: SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: no_local,
                    ..SubscriptionOptions::default()
                },
            }];
            let s = Subscribe {
                packet_id: id,
                properties: Properties::default(),
                filters: SubscriptionList::Slice(&subs),
            };
            self.send(now_ms, &Packet::Subscribe(s));
            self.subscribing.push(id);
        }
    }

    pub(super) fn suback(&mut self, s: &SubAck<'_>) {
        self.subscribing.retain(|id| *id != s.packet_id);
        if s.codes.iter().any(|&c| c >= 0x80) {
            self.actions.push_back(Action::Log(format!(
                "the remote refused a subscription (code 0x{:02x})",
                s.codes.iter().copied().max().unwrap_or(0x80)
            )));
        }
    }

    pub(super) fn notify_remote_up(&mut self, now_ms: u64) {
        let Some(topic) = self
            .set
            .notification_topic
            .clone()
            .filter(|_| self.set.notify_remote)
        else {
            return;
        };
        let Some(id) = self.alloc_id() else { return };
        let msg = OutMessage {
            topic: topic.into(),
            payload: Arc::from(&b"1"[..]),
            qos: QoS::AtLeastOnce,
            retain: true,
            props: None,
            expires_at_ms: None,
            txn: 0,
        };
        self.write_publish(now_ms, &msg, Some(id), false);
        self.inflight.push_back(Inflight {
            seq: None,
            id,
            msg,
            stage: Stage::Ack,
            held: None,
            dup: true,
        });
    }

    /// A local message matching the bridge's filters. `from_this_bridge`: it was brought
    /// in by this bridge (the broker knows each message's origin); such a message is never
    /// sent back.
    pub fn offer(
        &mut self,
        now_ms: u64,
        topic: &str,
        payload: &Arc<[u8]>,
        qos: QoS,
        retain: bool,
        from_this_bridge: bool,
    ) -> Offer {
        let m = Offered {
            topic,
            payload,
            qos,
            retain,
            props: None,
            expires_at_ms: None,
            txn: 0,
        };
        self.offer_message(now_ms, &m, from_this_bridge)
    }

    /// `offer` with the message's MQTT 5 properties and expiry.
    pub fn offer_message(&mut self, now_ms: u64, m: &Offered<'_>, from_this_bridge: bool) -> Offer {
        let Offered {
            topic,
            payload,
            qos,
            retain,
            props,
            expires_at_ms,
            txn,
        } = *m;
        if from_this_bridge {
            self.stats.loops_prevented += 1;
            return Offer::Loop;
        }
        let Some((remote, qos)) = self.mapper.outgoing(topic, qos) else {
            return Offer::NotMatched;
        };
        if (qos == QoS::AtMostOnce || self.set.local_clean) && !self.is_up() {
            self.stats.dropped_offline += 1;
            return Offer::Dropped;
        }
        let msg = OutMessage {
            topic: remote.into(),
            payload: Arc::clone(payload),
            qos,
            retain: retain && self.set.outgoing_retain,
            props: props.cloned().map(Arc::new),
            expires_at_ms,
            // Only a message that leaves at QoS 2 waits for its commit (at QoS 1 a
            // duplicate after a power cut is allowed).
            txn: if qos == QoS::ExactlyOnce { txn } else { 0 },
        };
        match self.queue.push(msg.clone()) {
            Err(_) => Offer::Dropped,
            Ok(seq) => {
                if let Some(seq) = seq {
                    self.records.push(Record::Enqueued { seq, msg });
                }
                self.pump(now_ms);
                Offer::Accepted(seq)
            }
        }
    }

    /// The shard's commits of QoS 2 routings moved: `commits[k]` is the highest routing
    /// of origin shard `k` committed (its `Qos2Committed` record durable). A queued
    /// message of a routing not committed yet is not sent (nor anything behind it):
    /// sent before its commit, it could reach the remote once before a power cut and
    /// again when its publisher, which saw no PUBREC, sends it again.
    pub fn learn_commits(&mut self, now_ms: u64, commits: &[u64]) {
        if self.commits != commits {
            self.commits.clear();
            self.commits.extend_from_slice(commits);
            self.pump(now_ms);
        }
    }

    /// Whether routing `txn` (0: none) may be forwarded.
    fn is_committed(&self, txn: u64) -> bool {
        let origin = (txn >> 48) as usize;
        txn == 0
            || origin
                .checked_sub(1)
                .and_then(|o| self.commits.get(o))
                .is_some_and(|&c| c >= txn)
    }

    /// Move queued messages to the wire while the window and the output bound allow.
    pub(super) fn pump(&mut self, now_ms: u64) {
        let Link::Connected(c) = self.link else {
            return;
        };
        while self.out.len() < self.limits.out_bytes_max {
            let Some(front) = self.queue.front() else {
                break;
            };
            let qos = front.msg.qos.min(c.max_qos);
            if qos != QoS::AtMostOnce && self.inflight.len() >= c.window {
                break;
            }
            if !self.is_committed(front.msg.txn) {
                // Later messages wait behind it, keeping the order.
                break;
            }
            let Some(Queued { seq, mut msg }) = self.queue.pop() else {
                break;
            };
            msg.qos = qos;
            msg.retain &= c.retain_ok;
            self.send_queued(now_ms, seq, msg, c.out_packet_max);
        }
    }

    pub(super) fn send_queued(
        &mut self,
        now_ms: u64,
        seq: Option<u64>,
        msg: OutMessage,
        max: usize,
    ) {
        let id = if msg.qos == QoS::AtMostOnce {
            None
        } else {
            self.alloc_id()
        };
        if msg.expires_at_ms.is_some_and(|t| t <= now_ms) {
            self.stats.expired += 1;
            return self.finish(seq, false);
        }
        let p = self.out_publish(&msg, id, false, now_ms);
        if encoded_len(&Packet::Publish(p), self.set.version) > max {
            self.stats.dropped_too_large += 1;
            return self.finish(seq, false);
        }
        // A stored QoS 2 PUBLISH waits until its packet id is durable: sent before, a
        // power cut would send it again under another id, which the remote takes for a
        // new message.
        let held = self.hold_for_record(seq, msg.qos);
        if held.is_none() {
            self.write_publish(now_ms, &msg, id, false);
        }
        match id {
            None => {
                self.stats.forwarded += 1;
                self.finish(seq, false);
            }
            Some(id) => {
                if let Some(seq) = seq {
                    self.records.push(Record::Sent { seq, packet_id: id });
                }
                let stage = if msg.qos == QoS::ExactlyOnce {
                    Stage::Rec
                } else {
                    Stage::Ack
                };
                self.inflight.push_back(Inflight {
                    seq,
                    id,
                    msg,
                    stage,
                    held,
                    dup: held.is_none(),
                });
            }
        }
    }

    pub(super) fn write_publish(
        &mut self,
        now_ms: u64,
        msg: &OutMessage,
        id: Option<PacketId>,
        dup: bool,
    ) {
        let p = self.out_publish(msg, id, dup, now_ms);
        encode(&Packet::Publish(p), self.set.version, &mut self.out);
        if let Link::Connected(ref mut c) = self.link {
            c.last_tx_ms = now_ms;
        }
    }

    /// The PUBLISH for `msg`: with its properties and the expiry left for a 5.0 remote.
    pub(super) fn out_publish<'m>(
        &self,
        msg: &'m OutMessage,
        id: Option<PacketId>,
        dup: bool,
        now_ms: u64,
    ) -> Publish<'m> {
        let mut p = publish(msg, id, dup);
        if self.set.version.is_v5() {
            if let Some(f) = msg.props.as_deref() {
                p.properties.payload_format_indicator = f.payload_format_indicator;
                p.properties.content_type = f.content_type.as_deref();
                p.properties.response_topic = f.response_topic.as_deref();
                p.properties.correlation_data = f.correlation_data.as_deref();
                p.properties.user_properties = UserProperties::Wire(&f.user_properties);
            }
            p.properties.message_expiry_interval = msg.expires_at_ms.map(|t| {
                let ms = t.saturating_sub(now_ms);
                u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1)
            });
        }
        p
    }

    pub(super) fn send(&mut self, now_ms: u64, packet: &Packet<'_>) {
        encode(packet, self.set.version, &mut self.out);
        if let Link::Connected(ref mut c) = self.link {
            c.last_tx_ms = now_ms;
        }
    }

    /// A QoS 1 PUBACK or QoS 2 PUBCOMP for `id`.
    pub(super) fn acked(&mut self, id: PacketId, stage: Stage, reason: ReasonCode) {
        let Some(i) = self
            .inflight
            .iter()
            .position(|f| f.id == id && f.stage == stage)
        else {
            return;
        };
        let Some(item) = self.inflight.remove(i) else {
            return;
        };
        if reason.is_error() {
            self.stats.refused_by_remote += 1;
        } else {
            self.stats.forwarded += u64::from(item.seq.is_some());
        }
        self.finish(item.seq, false);
    }

    pub(super) fn pubrec(&mut self, now_ms: u64, a: &Ack<'_>) {
        let Some(item) = self.inflight.iter_mut().find(|f| f.id == a.packet_id) else {
            // Not ours (any more): answer so the remote can finish its side.
            return self.send(now_ms, &Packet::PubRel(Ack::new(a.packet_id)));
        };
        if a.reason.is_error() {
            return self.acked(a.packet_id, Stage::Rec, a.reason);
        }
        item.stage = Stage::Comp;
        let seq = item.seq;
        if let Some(seq) = seq {
            self.records.push(Record::Received { seq });
        }
        // PUBREL waits until "PUBREC received" is durable: sent before, a power cut
        // would send the PUBLISH again after the remote had released its id.
        let held = self.hold_for_record(seq, QoS::ExactlyOnce);
        if let Some(item) = self.inflight.iter_mut().find(|f| f.id == a.packet_id) {
            item.held = held;
        }
        if held.is_none() {
            self.send(now_ms, &Packet::PubRel(Ack::new(a.packet_id)));
        }
    }

    /// The record batch a stored QoS 2 packet must wait for (the one now being filled),
    /// or `None` to write it at once.
    fn hold_for_record(&self, seq: Option<u64>, qos: QoS) -> Option<u64> {
        (self.logged && seq.is_some() && qos == QoS::ExactlyOnce).then_some(self.batches + 1)
    }

    /// Whether this bridge's outbound records go to a log (persistence on, and not
    /// `local_cleansession`). Set by the shard before the bridge's first offer.
    pub fn set_logged(&mut self, logged: bool) {
        self.logged = logged;
    }

    /// The record batches up to `batch` (counted by `take_records`) are durable: write the
    /// QoS 2 packets that waited for them, in order (a PUBLISH, or a PUBREL). Without a
    /// connection they go at the next one, as any in flight.
    pub fn records_durable(&mut self, now_ms: u64, batch: u64) {
        self.durable_batch = self.durable_batch.max(batch);
        let connected = matches!(self.link, Link::Connected(_));
        let mut due = Vec::new();
        for item in self.inflight.iter_mut() {
            if item.held.is_some_and(|b| b <= self.durable_batch) {
                item.held = None;
                if connected {
                    due.push((item.id, item.stage, item.msg.clone(), item.dup));
                    item.dup = true;
                }
            }
        }
        for (id, stage, msg, dup) in due {
            match stage {
                Stage::Comp => self.send(now_ms, &Packet::PubRel(Ack::new(id))),
                _ => self.write_publish(now_ms, &msg, Some(id), dup),
            }
        }
    }

    pub(super) fn finish(&mut self, seq: Option<u64>, delivered: bool) {
        if delivered {
            self.stats.forwarded += 1;
        }
        if let Some(seq) = seq {
            self.records.push(Record::Done { seq });
        }
    }

    pub(super) fn inbound(&mut self, now_ms: u64, p: &Publish<'_>) {
        self.stats.received += 1;
        let local = self.mapper.incoming(p.topic);
        let ack = p.packet_id.map(|packet_id| InboundAck {
            generation: self.generation,
            packet_id,
            qos: p.qos,
        });
        if let Some(InboundAck {
            packet_id,
            qos: QoS::ExactlyOnce,
            ..
        }) = ack
        {
            if let Some(&accepted) = self.inbound_qos2.get(&packet_id) {
                if accepted {
                    self.send(now_ms, &Packet::PubRec(Ack::new(packet_id)));
                }
                return; // a resend of a message already brought in
            }
        }
        let Some(topic) = local else {
            // Not ours (an old subscription of a kept session): acknowledge and drop.
            if let Some(a) = ack {
                self.inbound_qos2.insert(a.packet_id, false);
                self.local_accepted(now_ms, a);
            }
            return;
        };
        if let Some(a) = ack.filter(|a| a.qos == QoS::ExactlyOnce) {
            self.inbound_qos2.insert(a.packet_id, false);
        }
        self.actions.push_back(Action::Local(LocalPublish {
            topic,
            payload: p.payload.to_vec(),
            qos: p.qos,
            retain: p.retain,
            ack,
            props: ForwardedProps::from_publish(&p.properties),
            expiry_s: p.properties.message_expiry_interval,
            from_remote: true,
        }));
    }

    /// The local broker has accepted (and, with persistence, stored) an inbound QoS 1/2
    /// message: acknowledge it to the remote.
    pub fn local_accepted(&mut self, now_ms: u64, ack: InboundAck) {
        match ack.qos {
            QoS::AtLeastOnce if ack.generation == self.generation && self.is_up() => {
                self.send(now_ms, &Packet::PubAck(Ack::new(ack.packet_id)));
            }
            QoS::ExactlyOnce => {
                let Some(accepted) = self.inbound_qos2.get_mut(&ack.packet_id) else {
                    return;
                };
                if !*accepted {
                    *accepted = true;
                    let packet_id = ack.packet_id;
                    self.records.push(Record::InboundHeld { packet_id });
                }
                if self.is_up() {
                    self.send(now_ms, &Packet::PubRec(Ack::new(ack.packet_id)));
                }
            }
            _ => {}
        }
    }

    /// A free packet id: not in flight and not awaiting a SUBACK.
    pub(super) fn alloc_id(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let candidate = PacketId::new(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            let Some(id) = candidate else { continue };
            let busy = self.inflight.iter().any(|f| f.id == id) || self.subscribing.contains(&id);
            if !busy {
                return Some(id);
            }
        }
        None
    }
}

pub(super) fn publish(msg: &OutMessage, id: Option<PacketId>, dup: bool) -> Publish<'_> {
    Publish {
        dup: dup && id.is_some(),
        qos: msg.qos,
        retain: msg.retain,
        topic: &msg.topic,
        packet_id: id,
        properties: Properties::default(),
        payload: &msg.payload,
    }
}
