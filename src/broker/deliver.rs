//! The per-message hot path: matching a publish locally and writing deliveries.
//!
//! Owns: no state. These are free functions over exactly the state they touch (the
//! routes, the sessions, and a [`Sink`]: connections, effects and limits), so the hot path
//! reads as what it changes and cannot reach the rest of the broker. Invariants: a QoS 0
//! delivery never touches its session; a QoS 1/2 delivery is written only inside the
//! session's window with nothing queued ahead of it, otherwise it is queued (or dropped,
//! counted) — per-session order holds; nothing here allocates per delivery beyond the
//! reference-count of the shared message. Must not touch: sockets, the bus (routing to
//! other shards is the caller's), retained state.

use std::sync::Arc;

use super::access;
use super::effects::Effects;
use super::journal::Journal;
use super::link::{Conn, Link, Links};
use super::routes::Routes;
use super::sessions::Sessions;
use crate::protocol::{
    self, Packet, PacketId, Properties, Publish, QoS, SubscriptionIds, UserProperties, Version,
};
use crate::session::{Limits, Message, Outgoing, Session, SubIds};
use crate::store::{DeliveryState, MsgId, Record};

/// Outbound aliases kept per connection whatever the client allows (memory bound).
const ALIASES_OUT_MAX: usize = 1024;

/// Where deliveries are written, and the limits they obey.
pub(super) struct Sink<'a, X> {
    /// The connections.
    pub links: &'a mut Links<X>,
    /// Flushes and counters.
    pub fx: &'a mut Effects,
    /// Session window and queue bounds.
    pub limits: &'a Limits,
    /// `--max-write-buffer`, bytes.
    pub max_buf: usize,
    /// The password and ACL files in force: every delivery is a read decision.
    pub auth: &'a super::access::AuthState,
    /// The store's log, when persistence is on.
    pub journal: Option<&'a mut Journal>,
    /// Retained messages written this turn, per session (a budget per turn).
    pub pacing: &'a mut super::pacing::RetainedPacing,
}

/// Deliver `msg` to this shard's matching sessions. Returns whether any matched.
pub(super) fn route_local<X>(
    routes: &mut Routes,
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    msg: &Arc<Message>,
    now_ms: u64,
) -> bool {
    let mut hits = routes.match_local(sessions, msg);
    let matched = !hits.is_empty();
    let live = !msg.expired(now_ms);
    for h in hits.drain(..).filter(|_| live) {
        let out = Outgoing {
            msg: msg.clone(),
            qos: h.qos,
            retain: h.retain_as_published && msg.retain,
            sub_ids: h.sub_ids,
            share: None,
            sid: 0,
            moved: false,
        };
        match (out.qos, h.link) {
            (QoS::AtMostOnce, Some(key)) => {
                if access::may_read_link(sink, key, &msg.topic) {
                    deliver_qos0(sink, key, &out, now_ms);
                }
            }
            // QoS 0 to an offline session is not kept [MQTT-3.1.2-5 allows dropping].
            (QoS::AtMostOnce, None) => {}
            _ => deliver(sessions, sink, h.session, out, now_ms),
        }
    }
    routes.recycle(hits);
    matched
}

/// Hand one delivery to session `s`: write it now, queue it, or drop it (counted).
pub(super) fn deliver<X>(
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    s: usize,
    mut out: Outgoing,
    now_ms: u64,
) {
    if out.msg.expired(now_ms) || !access::may_read(sessions, sink, s, &out.msg.topic) {
        return;
    }
    let Some(sess) = sessions.get_mut(s) else {
        return;
    };
    if sess.logged && out.qos != QoS::AtMostOnce {
        if let Some(j) = sink.journal.as_deref_mut() {
            // A shared delivery's id is its own, so that its move can end it exactly.
            out.sid = match out.share {
                Some(_) => j.store_shared_msg(&out.msg, now_ms).0,
                None => j.store_msg(&out.msg, now_ms).0,
            };
            if let (Some(_), Some(v)) = (&out.share, sink.fx.share_log.as_mut()) {
                v.push(super::effects::ShareLogNote::Placed {
                    client: sess.client_id.clone(),
                    id: crate::store::MsgId(out.sid),
                    msg: out.msg.clone(),
                });
            }
        }
    }
    let link = sess.link.and_then(|k| {
        sink.links
            .conn(k)
            .filter(|c| c.link.is_connected())
            .map(|c| (k, c.tx.pending() >= sink.max_buf))
    });
    let Some((key, buffer_full)) = link else {
        if out.qos != QoS::AtMostOnce && sess.expiry_s > 0 {
            enqueue(sess, sink, out, now_ms);
        }
        return;
    };
    if out.qos == QoS::AtMostOnce {
        if buffer_full {
            sink.fx.stats.dropped_qos0 += 1;
            if let Some(c) = sink.links.conn_mut(key) {
                log_qos0_drop(&mut c.link, sink.max_buf, now_ms);
            }
        } else {
            write_publish(sink, key, &out, None, false, now_ms);
        }
        return;
    }
    if buffer_full || !sess.queue.is_empty() || !sess.window_open(sink.limits) {
        enqueue(sess, sink, out, now_ms);
        return;
    }
    let Some(pid) = sess.alloc_pid() else { return };
    // Queued and sent in one step: one record (`DeliveryQueuedSent`), not two.
    log_delivery(sink, sess, &out, Step::QueuedSent(pid));
    send_tracked(sess, s, sink, key, out, pid, now_ms);
}

/// Queue a delivery (logged when stored), or drop it (counted) when the queue is full.
fn enqueue<X>(sess: &mut Session, sink: &mut Sink<'_, X>, out: Outgoing, now_ms: u64) {
    let (sid, qos, retain, txn) = (out.sid, out.qos, out.retain, out.msg.txn);
    // Only a stored delivery's ids are logged, so only then are they kept past the move.
    let sub_ids = if sid != 0 {
        out.sub_ids.clone()
    } else {
        SubIds::new()
    };
    if !sess.enqueue(out, sink.limits) {
        sink.fx.stats.dropped_queue += 1;
        log_queue_drop(sess, sink.limits, now_ms);
        return;
    }
    if let (Some(j), true) = (sink.journal.as_deref_mut(), sid != 0) {
        j.log_for(
            &sess.shadow_slot,
            Record::DeliveryQueued {
                client_id: (&*sess.client_id).into(),
                msg: MsgId(sid),
                qos: qos as u8,
                retain,
                sub_ids: sub_ids.as_slice().into(),
                txn,
            },
        );
        if let Some(o) = sess.queue.back() {
            log_share(j, sess, o.share.as_deref());
        }
    }
}

/// Log that the delivery just queued came through share group `key` (`$share/g/f`), if
/// any: after a restart it still moves to another member when its session goes offline.
pub(super) fn log_share(j: &mut Journal, sess: &Session, key: Option<&str>) {
    if let Some((group, filter)) = key.and_then(super::shared::split_key) {
        j.log(Record::DeliveryShare {
            client_id: (&*sess.client_id).into(),
            group: group.into(),
            filter: filter.into(),
        });
    }
}

/// A stored delivery's step, as logged (`enqueue` logs one that only joins the queue).
#[derive(Clone, Copy)]
enum Step {
    /// It left the queue under this packet id.
    Sent(PacketId),
    /// It joined the queue and left it at once, under this packet id.
    QueuedSent(PacketId),
}

/// Log a stored delivery's step (nothing for a delivery that is not stored).
fn log_delivery<X>(sink: &mut Sink<'_, X>, sess: &Session, out: &Outgoing, step: Step) {
    let Some(j) = sink.journal.as_deref_mut().filter(|_| out.sid != 0) else {
        return;
    };
    let client_id = (&*sess.client_id).into();
    let (msg, qos, retain) = (MsgId(out.sid), out.qos as u8, out.retain);
    let sub_ids = out.sub_ids.as_slice().into();
    let slot = &sess.shadow_slot;
    match step {
        // The routing travels in the delivery's own record: a torn batch keeps both or
        // neither.
        Step::QueuedSent(packet_id) => j.log_for(
            slot,
            Record::DeliveryQueuedSent {
                client_id,
                msg,
                qos,
                retain,
                sub_ids,
                packet_id,
                txn: out.msg.txn,
            },
        ),
        Step::Sent(packet_id) => j.log_for(
            slot,
            Record::DeliverySent {
                client_id,
                msg,
                packet_id,
                state: DeliveryState::InFlight,
            },
        ),
    }
    // The share group of the delivery just queued (`DeliveryShare` names the newest one).
    if !matches!(step, Step::Sent(_)) {
        log_share(j, sess, out.share.as_deref());
    }
}

/// Log that session `client_id`'s delivery `pid` is over (acknowledged, or never sendable).
pub(super) fn log_done(journal: Option<&mut Journal>, sess: &Session, pid: PacketId) {
    if let (Some(j), true) = (journal, sess.logged) {
        j.log_for(
            &sess.shadow_slot,
            Record::DeliveryDone {
                client_id: (&*sess.client_id).into(),
                packet_id: pid,
            },
        );
    }
}

/// Send a QoS 1/2 delivery under `pid`, in flight until acknowledged. A stored QoS 2
/// delivery waits until its packet id is durable: sent twice under two ids (once before
/// a crash, once after) it would be delivered twice.
fn send_tracked<X>(
    sess: &mut Session,
    s: usize,
    sink: &mut Sink<'_, X>,
    key: usize,
    out: Outgoing,
    pid: PacketId,
    now_ms: u64,
) {
    let gen = sink.links.get(key).map_or(0, |l| l.gen);
    // A QoS 2 PUBLISH also waits for its routing's commit, whatever the session: seen
    // before it, the message could reach the client again after a power cut.
    let qos2 = out.qos == QoS::ExactlyOnce;
    let uncommitted = qos2
        && sink
            .journal
            .as_deref()
            .is_some_and(|j| !j.is_committed(out.msg.txn));
    let hold = sess.holding() || uncommitted || (out.sid != 0 && qos2);
    if let (Some(j), true) = (sink.journal.as_deref_mut(), hold) {
        let hold = sess.track_held(pid, out);
        j.hold(super::journal::HeldAck::Publish {
            link: key,
            gen,
            session: s,
            uid: sess.uid,
            hold,
        });
        return;
    }
    let out = sess.track(pid, out);
    if !write_publish(sink, key, out, Some(pid), false, now_ms) {
        sess.drop_pid(pid);
        log_done(sink.journal.as_deref_mut(), sess, pid);
    }
}

/// A QoS 0 delivery straight to a connected link: written, or dropped (counted) when the
/// link's buffer is over its limit. No session state is involved.
fn deliver_qos0<X>(sink: &mut Sink<'_, X>, key: usize, out: &Outgoing, now_ms: u64) {
    match sink.links.conn(key) {
        Some(c) if c.link.is_connected() && c.tx.pending() < sink.max_buf => {
            write_publish(sink, key, out, None, false, now_ms);
        }
        Some(_) => {
            if let Some(c) = sink.links.conn_mut(key).filter(|c| c.link.is_connected()) {
                sink.fx.stats.dropped_qos0 += 1;
                log_qos0_drop(&mut c.link, sink.max_buf, now_ms);
            }
        }
        None => {}
    }
}

/// Drops are counted always, but logged at most once a minute per client.
const DROP_LOG_INTERVAL_MS: u64 = 60_000;

/// True (and `last_ms` moved on) when a drop may be logged now.
fn drop_log_due(last_ms: &mut u64, now_ms: u64) -> bool {
    if *last_ms != 0 && now_ms < *last_ms + DROP_LOG_INTERVAL_MS {
        return false;
    }
    *last_ms = now_ms.max(1);
    true
}

/// Log (rate-limited) that a full session queue dropped a delivery.
fn log_queue_drop(sess: &mut crate::session::Session, limits: &Limits, now_ms: u64) {
    if drop_log_due(&mut sess.drop_logged_ms, now_ms) {
        crate::log::log(format_args!(
            "Client {}: queue full ({} messages, {} bytes; limits {} / {}), {} message(s) dropped so far",
            sess.client_id,
            sess.queue.len(),
            sess.queued_bytes(),
            limits.queue_max,
            limits.queue_bytes_max,
            sess.dropped
        ));
    }
}

/// Log (rate-limited) that a QoS 0 delivery was dropped at a full write buffer.
fn log_qos0_drop(link: &mut Link, max_buf: usize, now_ms: u64) {
    if drop_log_due(&mut link.drop_logged_ms, now_ms) {
        crate::log::log(format_args!(
            "Client {}: not reading; QoS 0 messages dropped past its {max_buf}-byte write buffer",
            link.client_id.as_deref().unwrap_or("<unknown>")
        ));
    }
}

/// Move session `s`'s queued deliveries into its window while its link can take them.
pub(super) fn pump<X>(sessions: &mut Sessions, sink: &mut Sink<'_, X>, s: usize, now_ms: u64) {
    loop {
        let Some(sess) = sessions.get_mut(s) else {
            return;
        };
        let Some(key) = sess.link else { return };
        let Some(c) = sink.links.conn(key) else {
            return;
        };
        if !c.link.is_connected()
            || c.tx.pending() >= sink.max_buf
            || !sess.window_open(sink.limits)
        {
            return;
        }
        let Some(out) = sess.dequeue() else { return };
        if out.msg.expired(now_ms) || !access::may_read_link(sink, key, &out.msg.topic) {
            // Expired, or the read right was revoked (reload) since it was queued.
            if let (Some(j), true) = (sink.journal.as_deref_mut(), out.sid != 0) {
                j.log_for(
                    &sess.shadow_slot,
                    Record::DeliveryDropped {
                        client_id: (&*sess.client_id).into(),
                        msg: MsgId(out.sid),
                    },
                );
            }
            continue;
        }
        let Some(pid) = sess.alloc_pid() else {
            sess.requeue_front(out);
            return;
        };
        log_delivery(sink, sess, &out, Step::Sent(pid));
        send_tracked(sess, s, sink, key, out, pid, now_ms);
    }
}

/// Write session `s`'s owed retained messages while its link has room: QoS 0 ones while
/// the buffer is under its limit, QoS 1/2 ones only into an open window with nothing
/// queued ahead, so none is ever dropped; the rest waits for the next drain or ack. At most
/// the turn's budget per session (`pacing`): past it the rest waits for the next turn,
/// so the shard's other clients are served between slices.
pub(super) fn pump_retained<X>(
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    s: usize,
    now_ms: u64,
) {
    loop {
        let Some(sess) = sessions.get_mut(s) else {
            return;
        };
        let Some(key) = sess.link else { return };
        let room = sink
            .links
            .conn(key)
            .is_some_and(|c| c.link.is_connected() && c.tx.pending() < sink.max_buf);
        if !room {
            return;
        }
        let window = sess.queue.is_empty() && sess.window_open(sink.limits);
        let Some(batch) = sess.retained_backlog.front_mut() else {
            return;
        };
        let Some(msg) = batch.msgs.pop_front() else {
            if !batch.walk.is_done() {
                // The walk refills it (`Broker::walk_retained`).
                return;
            }
            sess.retained_backlog.pop_front();
            continue;
        };
        // The budget is asked only with a message in hand: a session whose walk has not
        // found one yet waits for a walk slice, not for the write budget (`pacing`).
        let qos = msg.qos.min(batch.qos);
        if !sink.pacing.may_write(s) || (qos != QoS::AtMostOnce && !window) {
            batch.msgs.push_front(msg);
            return;
        }
        let out = Outgoing {
            qos,
            retain: true,
            sub_ids: batch.sub_id.into_iter().collect(),
            share: None,
            sid: 0,
            moved: false,
            msg,
        };
        let pending = |sink: &Sink<'_, X>| sink.links.conn(key).map_or(0, |c| c.tx.pending());
        let before = pending(sink);
        deliver(sessions, sink, s, out, now_ms);
        let written = pending(sink).saturating_sub(before);
        sink.pacing.wrote(s, written);
    }
}

/// Encode one PUBLISH into link `key`'s buffer. Returns false when it was dropped for
/// exceeding the client's Maximum Packet Size [MQTT-3.1.2-25]: it counts as sent, and the
/// caller releases its in-flight slot, since its acknowledgement will never come.
pub(super) fn write_publish<X>(
    sink: &mut Sink<'_, X>,
    key: usize,
    out: &Outgoing,
    pid: Option<PacketId>,
    dup: bool,
    now_ms: u64,
) -> bool {
    let Some(Conn { link, tx, .. }) = sink.links.conn_mut(key) else {
        return true;
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
    // A mounted client sees its topics without the mount point (its subscriptions are all
    // under it, so every message it gets starts with it).
    let unmounted = link
        .mount
        .as_deref()
        .and_then(|m| msg.topic.strip_prefix(m))
        .unwrap_or(&msg.topic);
    let (topic, alias, learn) = outbound_alias(link, unmounted);
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
        && protocol::encoded_len(&Packet::Publish(p.clone()), link.version) > link.client_max_packet
    {
        sink.fx.stats.dropped_too_large += 1;
        return false;
    }
    protocol::encode_publish(tx.buf(), link.version, &p);
    if let (true, Some(a)) = (learn, alias) {
        link.aliases_out
            .get_or_insert_with(Default::default)
            .insert(
                match link.mount {
                    Some(_) => Arc::from(unmounted),
                    None => msg.topic.clone(),
                },
                a,
            );
    }
    let st = &mut sink.fx.stats;
    st.publish_out += 1;
    st.packets_out += 1;
    st.publish_out_qos[p.qos as usize] += 1;
    st.publish_out_bytes_qos[p.qos as usize] += p.payload.len() as u64;
    if crate::log_sink::enabled(crate::log::Level::Debug) {
        super::log_packet_line("Sending", "to", link, &Packet::Publish(p));
    }
    sink.fx.mark_dirty(key, link);
    true
}

/// The topic to send and the Topic Alias to attach (5.0): a known alias sends an empty
/// topic; a new topic takes the next free alias while any are left; aliases are never
/// re-bound, so the client's map can never disagree with ours.
/// The third value says the alias is new: record it once the packet is really written.
fn outbound_alias<'m>(link: &Link, topic: &'m str) -> (&'m str, Option<u16>, bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_logged_at_most_once_a_minute() {
        let mut last = 0;
        assert!(
            drop_log_due(&mut last, 0),
            "the first drop is logged, even at 0 ms"
        );
        assert!(!drop_log_due(&mut last, 59_000));
        assert!(drop_log_due(&mut last, 60_001));
        assert!(!drop_log_due(&mut last, 61_000));
    }
}
