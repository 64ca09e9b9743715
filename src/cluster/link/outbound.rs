//! The link's outbound path: a local QoS ≥ 1 or 0 publish, its stores in the queues
//! of the nodes the interest view names (`release`, `store`), and its core NATS copy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

use super::{
    store, store_msg_id, within, Pending, State, PUBLISH_WAIT_MS, QUEUE_PENDING_MAX,
    QUEUE_PUBLISH_WAIT_MS, VIEW_LOAD_WAIT_MS,
};
use crate::cluster::envelope::{self, Envelope};
use crate::cluster::{queue, subject, FromLink, LinkStats};

/// The header naming the share groups `served` on this node, if any (`queue::SHARED_HEADER`).
fn served_header(served: &[String]) -> Option<HeaderMap> {
    (!served.is_empty()).then(|| {
        let mut h = HeaderMap::new();
        h.insert(queue::SHARED_HEADER, served.join(",").as_str());
        h
    })
}

impl State {
    /// Send a message that entered here to the nodes that want it. QoS 0 goes on core NATS
    /// at once. A QoS ≥ 1 message is first stored in the queue of every other node the
    /// interest bucket names, then sent on core NATS (for nodes whose interest the bucket
    /// does not show yet) with a header naming the nodes whose queue has it; messages
    /// leave in the order they came, and `ack` is answered when the message leaves. A
    /// store waits while an earlier message of its topic is meant for other nodes and has
    /// not left (`release`), and the storer keeps the stores in order (`store`).
    pub(super) async fn publish(
        &mut self,
        mut e: Envelope,
        ack: Option<(usize, u64)>,
        msg_id: Option<String>,
        served: Vec<String>,
    ) {
        e.origin.clone_from(&self.node);
        e.seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let stats = &self.out.stats;
        let (Ok(subject), Ok(bytes)) = (
            subject::topic_to_subject(&self.prefix, &e.topic),
            envelope::encode(&e),
        ) else {
            LinkStats::add(&stats.too_large);
            self.answer_published(ack);
            return;
        };
        let bytes = Bytes::from(bytes);
        if e.retain && self.retained.try_send(bytes.clone()).is_err() {
            LinkStats::add(&stats.nats_errors);
        }
        // While NATS is unreachable the client's command queue would fill and block this
        // loop; the message is lost for remote subscribers either way (docs/cluster.md).
        if self.client.connection_state() != async_nats::connection::State::Connected {
            LinkStats::add(&stats.down_dropped);
            self.answer_published(ack);
            return;
        }
        // QoS ≥ 1: the other nodes wanting it, and the share groups with members anywhere
        // (one store per group, which one node takes).
        let mut targets = if e.qos == crate::protocol::QoS::AtMostOnce {
            Vec::new()
        } else {
            self.view
                .lock()
                .map(|v| {
                    let mut t = v.nodes(&e.topic);
                    t.extend(v.groups(&e.topic));
                    t
                })
                .unwrap_or_default()
        };
        // Groups served on this node: no store, and the node NATS picks for them (this
        // one, or another whose first member this node's shard did not know of yet)
        // ignores the core copy for them.
        targets.retain(|t| !served.iter().any(|s| **s == **t));
        if targets.is_empty()
            && (self.pending.is_empty() || e.qos == crate::protocol::QoS::AtMostOnce)
        {
            self.core_publish(subject, served_header(&served), bytes)
                .await;
            self.answer_published(ack);
            return;
        }
        // Too many stores under way: this one skips them (counted as failed).
        let store = self.pending.len() < QUEUE_PENDING_MAX;
        let p = Pending {
            subject,
            bytes,
            ack,
            msg_id: store_msg_id(&self.node, e.seq, msg_id.as_deref()),
            served,
        };
        self.pending.push(&e.topic, targets, store, e.seq, p);
        self.release_pending().await;
    }

    /// The interest view loaded the whole bucket once (`loaded`), or the wait for it ended:
    /// route the QoS ≥ 1 messages that waited, in order, with the view as it is.
    pub(super) async fn view_ready(&mut self, loaded: bool) {
        if !loaded {
            eprintln!(
                "cluster link: the interest view did not load within {VIEW_LOAD_WAIT_MS} ms; \
                 routing QoS 1/2 messages with what it holds"
            );
        }
        self.view_loaded = true;
        while let Some((e, ack, msg_id, served)) = self.unviewed.pop_front() {
            self.publish(e, ack, msg_id, served).await;
        }
    }

    /// Hand the storer the queue stores the release list allows now, in order; false
    /// when some could not be handed over (the storer is gone or full: done, none stored).
    pub(super) fn start_stores(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(QUEUE_PUBLISH_WAIT_MS);
        let mut all = true;
        for id in self.pending.take_starts() {
            let Some((targets, p)) = self.pending.get(id) else {
                continue;
            };
            let prevs = self.pending.store_prevs(id);
            let job = store::StoreJob {
                id,
                to: targets
                    .iter()
                    .zip(prevs.into_iter().chain(std::iter::repeat(None)))
                    .map(|(n, prev)| store::Target {
                        node: n.clone(),
                        // A share group's queue, or a node's.
                        subject: if queue::is_group(n) {
                            self.prefix.shared(n)
                        } else {
                            self.prefix.queue(n)
                        },
                        prev,
                    })
                    .collect(),
                bytes: p.bytes.clone(),
                msg_id: p.msg_id.clone(),
                deadline,
            };
            if self.store_tx.try_send(job).is_err() {
                self.pending.stored(id, Vec::new());
                all = false;
            }
        }
        all
    }

    /// The queue stores of pending publish `id` are done: `stored` names the nodes whose
    /// queue holds it.
    pub(super) async fn stored(&mut self, id: u64, stored: Vec<Arc<str>>) {
        self.pending.stored(id, stored);
        self.release_pending().await;
    }

    /// Send, in order, the pending publishes whose queue stores are done, and start the
    /// stores that may start.
    pub(super) async fn release_pending(&mut self) {
        loop {
            self.release_done().await;
            if self.start_stores() {
                return;
            }
        }
    }

    pub(super) async fn release_done(&mut self) {
        while let Some(r) = self.pending.next_release() {
            let stats = &self.out.stats;
            let (mut groups, nodes): (Vec<&str>, Vec<&str>) = r
                .stored
                .iter()
                .map(|n| &**n)
                .partition(|n| queue::is_group(n));
            let stored_groups = groups.len();
            groups.extend(r.item.served.iter().map(String::as_str));
            stats
                .queued
                .fetch_add(nodes.len() as u64, Ordering::Relaxed);
            stats
                .shared_queued
                .fetch_add(stored_groups as u64, Ordering::Relaxed);
            stats.queue_failed.fetch_add(
                r.targets.saturating_sub(r.stored.len()) as u64,
                Ordering::Relaxed,
            );
            let headers = (!r.stored.is_empty() || !r.missed.is_empty() || !groups.is_empty())
                .then(|| {
                    let mut h = HeaderMap::new();
                    if !nodes.is_empty() {
                        h.insert(queue::QUEUED_HEADER, nodes.join(",").as_str());
                    }
                    if !groups.is_empty() {
                        h.insert(queue::SHARED_HEADER, groups.join(",").as_str());
                    }
                    if !r.missed.is_empty() {
                        // The nodes whose store it missed take this copy in their chain.
                        h.insert(queue::PREV_HEADER, queue::prev_list(&r.missed).as_str());
                    }
                    h
                });
            let p = r.item;
            self.core_publish(p.subject, headers, p.bytes).await;
            self.answer_published(p.ack);
        }
    }

    /// Publish on core NATS (bounded), counting the outcome.
    pub(super) async fn core_publish(
        &mut self,
        subject: String,
        headers: Option<HeaderMap>,
        bytes: Bytes,
    ) {
        let stats = &self.out.stats;
        if self.client.connection_state() != async_nats::connection::State::Connected {
            LinkStats::add(&stats.down_dropped);
            return;
        }
        let sent = match headers {
            None => within(PUBLISH_WAIT_MS, self.client.publish(subject, bytes)).await,
            Some(h) => {
                let p = self.client.publish_with_headers(subject, h, bytes);
                within(PUBLISH_WAIT_MS, p).await
            }
        };
        if sent {
            LinkStats::add(&stats.published);
        } else {
            LinkStats::add(&stats.nats_errors);
        }
    }

    /// Tell the node that the message with `ack` left (the shard wakes with the batch).
    pub(super) fn answer_published(&self, ack: Option<(usize, u64)>) {
        if let Some(ack) = ack {
            self.out.push_wake(FromLink::Published { ack });
        }
    }
}
