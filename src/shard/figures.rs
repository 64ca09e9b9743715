//! The shard's side of the figures board: copy this shard's counters into its
//! `ShardMetrics` once per turn, and its costly figures and lists once per interval.
//!
//! Owns: nothing but the copying. Invariants: called by the owning shard only, at the end
//! of a turn; the per-turn part is a fixed number of relaxed stores (no allocation, no
//! walk over sessions); walks over links and sessions happen at most once per
//! `LISTS_INTERVAL_MS`, and lists are built only while the admin side asks for them.
//! Must not touch: broker state (read only), other shards' figures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::bus::Bus;
use super::BusMsg;
use crate::broker::Broker;
use crate::metrics::{
    ClientInfo, DropReason, ShardLists, ShardMetrics, SubscriptionInfo, LISTS_INTERVAL_MS,
    LIST_ENTRIES_PER_SHARD_MAX,
};
use crate::protocol::Version;
use crate::session::Session;

/// End of a turn that started working at `busy_from` (when poll returned): publish this
/// shard's figures. The hook the event loop calls, once per turn.
pub fn end_turn<X>(broker: &Broker<X>, bus: &Bus<BusMsg>, busy_from: Instant) {
    // Borrowed, not cloned: a refcount bump per turn would be a write every shard shares.
    let metrics = &broker.config().metrics;
    let Some(m) = metrics.shard(broker.shard_id()) else {
        return;
    };
    let now_ns = metrics.now_ns();
    let busy_ns = u64::try_from(busy_from.elapsed().as_nanos()).unwrap_or(u64::MAX);
    copy_counters(m, broker, bus);
    if now_ns.saturating_sub(m.lists_at_ns.get()) >= LISTS_INTERVAL_MS * 1_000_000
        || m.turns.get() == 0
    {
        m.lists_at_ns.set(now_ns);
        copy_costly(m, broker);
        if metrics.lists_wanted(now_ns) {
            m.lists.store(Arc::new(lists(broker, now_ns)));
        }
    }
    m.last_turn_end_ns.set(now_ns);
    m.record_turn(busy_ns);
}

/// The cheap figures: counters the broker keeps, sizes known without a walk.
fn copy_counters<X>(m: &ShardMetrics, broker: &Broker<X>, bus: &Bus<BusMsg>) {
    let s = broker.stats();
    m.connections.set(broker.links().len() as u64);
    m.sessions.set(broker.session_count() as u64);
    m.retained_messages.set(broker.retained_count() as u64);
    m.messages_received.set(s.publish_in);
    m.messages_sent.set(s.publish_out);
    for q in 0..3 {
        m.messages_received_qos[q].set(s.publish_in_qos[q]);
        m.messages_sent_qos[q].set(s.publish_out_qos[q]);
        m.payload_bytes_received_qos[q].set(s.publish_in_bytes_qos[q]);
        m.payload_bytes_sent_qos[q].set(s.publish_out_bytes_qos[q]);
    }
    for (f, v) in m.connections_refused.iter().zip(s.connections_refused) {
        f.set(v);
    }
    m.connections_accepted.set(s.connections_accepted);
    m.auth_failures.set(s.auth_failures);
    let (write_errors, refused) = broker.store_errors();
    m.store_write_errors.set(write_errors);
    m.publishes_refused_store.set(refused);
    m.tls_handshakes.set(s.tls_handshakes);
    m.tls_failures.set(s.tls_handshake_failures);
    m.packets_received.set(s.packets_in);
    m.packets_sent.set(s.packets_out);
    m.sessions_expired.set(s.sessions_expired);
    m.retained_bytes.set(broker.retained_bytes() as u64);
    m.bytes_received.set(s.bytes_in);
    m.bytes_sent.set(s.bytes_out);
    m.dropped[DropReason::Qos0Backpressure as usize].set(s.dropped_qos0);
    m.dropped[DropReason::QueueFull as usize].set(s.dropped_queue);
    m.dropped[DropReason::TooLarge as usize].set(s.dropped_too_large);
    m.bus_staged.set(bus.staged() as u64);
    for (peer, (depth, staged)) in m
        .bus_ring_depth
        .iter()
        .zip(m.bus_staged_to.iter())
        .enumerate()
    {
        let (d, st) = bus.peer_load(peer);
        depth.set(d as u64);
        staged.set(st as u64);
    }
}

/// The figures that need a walk over links or sessions.
fn copy_costly<X>(m: &ShardMetrics, broker: &Broker<X>) {
    let connected = broker
        .links()
        .iter()
        .filter(|(_, l)| l.is_connected())
        .count();
    let (mut subs, mut queued, mut inflight, mut queued_bytes) = (0, 0, 0, 0);
    for s in broker.sessions() {
        subs += s.subs.len();
        queued += s.queue.len();
        queued_bytes += s.queued_bytes();
        inflight += s.inflight().len();
    }
    m.clients_connected.set(connected as u64);
    m.subscriptions.set(subs as u64);
    m.queued_messages.set(queued as u64);
    m.queued_bytes.set(queued_bytes as u64);
    m.inflight_messages.set(inflight as u64);
}

/// Bounded client and subscription lists of this shard.
fn lists<X>(broker: &Broker<X>, now_ns: u64) -> ShardLists {
    let shard = broker.shard_id();
    let sessions: Vec<&Session> = broker.sessions().collect();
    let by_id: HashMap<&str, &Session> = sessions.iter().map(|s| (&*s.client_id, *s)).collect();
    let mut out = ShardLists {
        taken_at_ns: now_ns.max(1),
        ..ShardLists::default()
    };
    for (_, conn) in broker
        .links()
        .conns()
        .filter(|(_, c)| c.link.is_connected())
    {
        let link = &conn.link;
        out.clients_total += 1;
        if out.clients.len() >= LIST_ENTRIES_PER_SHARD_MAX {
            continue;
        }
        let session = link.client_id.as_deref().and_then(|id| by_id.get(id));
        out.clients.push(ClientInfo {
            client_id: link.client_id.clone().unwrap_or_default(),
            username: link.username.clone(),
            peer: link.peer,
            version: version_label(link.version),
            shard,
            subscriptions: session.map_or(0, |s| s.subs.len()),
            queued: session.map_or(0, |s| s.queue.len()),
            inflight: session.map_or(0, |s| s.inflight().len()),
            pending_bytes: conn.tx.pending(),
        });
    }
    out.topics = broker.hot_topics(crate::broker::hot_topics::HOT_TOPICS_MAX);
    for s in &sessions {
        for (filter, st) in &s.subs {
            out.subscriptions_total += 1;
            if out.subscriptions.len() < LIST_ENTRIES_PER_SHARD_MAX {
                out.subscriptions.push(SubscriptionInfo {
                    client_id: s.client_id.clone(),
                    filter: filter.clone(),
                    qos: st.options.qos as u8,
                    shard,
                });
            }
        }
    }
    out
}

/// The `version` label of a protocol version.
pub fn version_label(v: Version) -> &'static str {
    match v {
        Version::V3_1 => "3.1",
        Version::V3_1_1 => "3.1.1",
        Version::V5 => "5",
    }
}
