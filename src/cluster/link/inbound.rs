//! The link's inbound path: messages from core NATS and from the queues, put back
//! in order (`order`), deduplicated and passed on to the node; settles, give-backs,
//! and the session handover messages between nodes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use async_nats::Subject;
use bytes::Bytes;

use super::{
    within, Inbound, State, Tag, Window, DEDUP_WINDOW_MESSAGES, ORIGINS_MAX, PUBLISH_WAIT_MS,
    UNSETTLED_MAX,
};
use crate::cluster::envelope::{self, Envelope};
use crate::cluster::{queue, subject, FromLink, LinkStats, Route};

impl State {
    /// The node has queue message `token` safe: its acknowledgement goes to JetStream
    /// with the others of this turn (`flush_settles`).
    pub(super) fn settle(&mut self, token: u64) {
        if let Some(reply) = self.unsettled.remove(&token) {
            self.settles.push(reply);
        }
    }

    /// Send the acknowledgements gathered this turn, one `+ACK` per message (explicit
    /// acks: each names exactly one message the node settled), queued on the connection
    /// one after another under one time bound instead of one bound each.
    pub(super) async fn flush_settles(&mut self) {
        if self.settles.is_empty() {
            return;
        }
        let mut acks = std::mem::take(&mut self.settles);
        let total = acks.len();
        let mut sent = 0usize;
        if self.client.connection_state() == async_nats::connection::State::Connected {
            let client = &self.client;
            let sent = &mut sent;
            let all = async {
                for reply in acks.drain(..) {
                    client.publish(reply, Bytes::from_static(b"+ACK")).await?;
                    *sent += 1;
                }
                Ok::<(), async_nats::PublishError>(())
            };
            within(PUBLISH_WAIT_MS, all).await;
        }
        // An acknowledgement lost here brings the message again after the ack wait; the
        // duplicate filter then settles it without passing it on again.
        let stats = &self.out.stats;
        stats
            .queue_settled
            .fetch_add(sent as u64, Ordering::Relaxed);
        stats
            .nats_errors
            .fetch_add((total - sent) as u64, Ordering::Relaxed);
        // Keep the allocation for the next turn.
        acks.clear();
        self.settles = acks;
    }

    /// Give a share group's message back to JetStream (no online member here): it comes
    /// again, to any node of the group, after `queue::SHARED_RETURN_DELAY`.
    pub(super) async fn give_back(&mut self, token: u64) {
        let Some(reply) = self.unsettled.remove(&token) else {
            return;
        };
        let stats = &self.out.stats;
        let nak = format!(
            "-NAK {{\"delay\":{}}}",
            queue::SHARED_RETURN_DELAY.as_nanos()
        );
        let sent = self.client.connection_state() == async_nats::connection::State::Connected
            && within(
                PUBLISH_WAIT_MS,
                self.client.publish(reply, Bytes::from(nak)),
            )
            .await;
        // A lost NAK: the message comes again after the ack wait instead.
        LinkStats::add(if sent {
            &stats.shared_returned
        } else {
            &stats.nats_errors
        });
    }

    /// A message from a share group's queue, which JetStream handed to this node rather
    /// than to another node with members: passed on for one member here (with a token to
    /// settle it by, or to give it back with when no member is online). Not filtered for
    /// copies: the plain paths' copies are other deliveries, and a redelivery is a
    /// duplicate QoS 1 allows (QoS 2: `docs/cluster.md`, "Not done yet").
    pub(super) fn shared_queued(
        &mut self,
        m: async_nats::Message,
        route: Route,
        delivered: i64,
        age_ms: u64,
    ) {
        let stats = &self.out.stats;
        let Some(reply) = m.reply.clone() else {
            LinkStats::add(&stats.malformed);
            return;
        };
        LinkStats::add(&stats.shared_received);
        if delivered > 1 {
            LinkStats::add(&stats.queue_redelivered);
        }
        let token = self.next_token;
        self.next_token += 1;
        if self.unsettled.len() >= UNSETTLED_MAX {
            self.unsettled.clear();
        }
        self.unsettled.insert(token, reply);
        let expired = |e: &mut Envelope| match e.expiry_secs {
            Some(left) => {
                let age_s = u32::try_from(age_ms / 1000).unwrap_or(u32::MAX);
                e.expiry_secs = Some(left.saturating_sub(age_s));
                age_s >= left
            }
            None => false,
        };
        let decoded = envelope::decode(&m.payload).map(|mut e| (expired(&mut e), e));
        let e = match decoded {
            Ok((false, e)) => e,
            decoded => {
                if decoded.is_err() {
                    LinkStats::add(&stats.malformed);
                }
                if !self.out.push(FromLink::Settle {
                    token,
                    dedupe: None,
                }) {
                    self.unsettled.remove(&token);
                }
                return;
            }
        };
        LinkStats::add(&stats.received);
        let pushed = self.out.push(FromLink::Message {
            route,
            envelope: Box::new(e),
            token: Some(token),
            dedupe: None,
        });
        if !pushed {
            self.unsettled.remove(&token);
        }
    }

    /// A message from this node's queue: passed on with a token to settle it by, or, if
    /// it is a copy of one already passed on (or expired meanwhile), settled through the
    /// node all the same, so the acknowledgement follows what came before.
    pub(super) fn queued(&mut self, m: async_nats::Message, delivered: i64, age_ms: u64) {
        let stats = &self.out.stats;
        let Some(reply) = m.reply.clone() else {
            LinkStats::add(&stats.malformed);
            return;
        };
        LinkStats::add(&stats.queue_received);
        let token = self.next_token;
        self.next_token += 1;
        if self.unsettled.len() >= UNSETTLED_MAX {
            // Settles lost on the way (a full queue): those messages come again after the
            // ack wait, with new tokens.
            self.unsettled.clear();
        }
        self.unsettled.insert(token, reply);
        let settle_only = |st: &mut Self, dedupe: Option<u128>| {
            if !st.out.push(FromLink::Settle { token, dedupe }) {
                st.unsettled.remove(&token);
            }
        };
        let Ok(mut e) = envelope::decode(&m.payload) else {
            LinkStats::add(&stats.malformed);
            return settle_only(self, None);
        };
        if let Some(left) = e.expiry_secs {
            let age_s = u32::try_from(age_ms / 1000).unwrap_or(u32::MAX);
            if age_s >= left {
                return settle_only(self, None);
            }
            e.expiry_secs = Some(left - age_s);
        }
        if delivered > 1 {
            LinkStats::add(&stats.queue_redelivered);
        }
        // A QoS 2 message is known to the node by its message id, which every copy of it
        // carries (a redelivery, or a resend stored again under its stable id).
        let dedupe = (e.qos == crate::protocol::QoS::ExactlyOnce)
            .then(|| m.headers.as_ref()?.get(async_nats::header::NATS_MESSAGE_ID))
            .flatten()
            .map(|v| queue::received_id(v.as_str().as_bytes()));
        if e.origin == self.node || !first_copy(&mut self.seen, &e) {
            LinkStats::add(&self.out.stats.duplicates);
            return settle_only(self, dedupe);
        }
        LinkStats::add(&self.out.stats.received);
        // Every message of the queue is part of its topic's chain for this node.
        let prev = m
            .headers
            .as_ref()
            .and_then(|h| h.get(queue::PREV_HEADER))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        let (origin, topic, seq) = (e.origin.clone(), e.topic.clone(), e.seq);
        let m = FromLink::Message {
            route: Route::Plain,
            envelope: Box::new(e),
            token: Some(token),
            dedupe,
        };
        self.in_order((&origin, &topic, seq), prev, m);
    }

    /// Pass chained message `m` (`seq` from `origin` on `topic`, naming `prev`) on once
    /// the one it names was passed on, with whatever waited for it (`order`).
    pub(super) fn in_order(
        &mut self,
        (origin, topic, seq): (&str, &str, u64),
        prev: Option<u64>,
        m: FromLink,
    ) {
        let mut out = Vec::new();
        let now = self.now_ms();
        if self.order.offer(origin, topic, seq, prev, now, m, &mut out) {
            LinkStats::add(&self.out.stats.order_held);
        }
        self.pass_on(out);
    }

    /// Push inbound messages to the node (the caller wakes it); a queue message that does
    /// not fit comes again after the ack wait.
    pub(super) fn pass_on(&mut self, out: Vec<FromLink>) {
        for m in out {
            let token = match &m {
                FromLink::Message { token, .. } => *token,
                _ => None,
            };
            if !self.out.push(m) {
                if let Some(token) = token {
                    self.unsettled.remove(&token);
                }
            }
        }
        let expired = self.order.expired();
        self.out
            .stats
            .order_expired
            .store(expired, Ordering::Relaxed);
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn inbound(&mut self, m: Inbound) {
        // Held while a check after a cut-off runs (`recheck`).
        let Some((tag, m)) = self.hold(m) else {
            return;
        };
        let stats = &self.out.stats;
        let route = match &*tag {
            Tag::Takeover | Tag::State if m.payload.is_empty() => return self.alive(m.reply),
            Tag::Takeover => return self.takeover(&m.payload),
            Tag::State => return self.session_state(&m.payload),
            Tag::Queued { delivered, age_ms } => return self.queued(m, *delivered, *age_ms),
            Tag::SharedQueued {
                group,
                filter,
                delivered,
                age_ms,
            } => {
                let route = Route::Shared {
                    group: group.clone(),
                    filter: filter.clone(),
                };
                return self.shared_queued(m, route, *delivered, *age_ms);
            }
            Tag::Deliver(r) => r,
        };
        let mut chained = None;
        let from_queue = match route {
            // The nodes named here get this message from their queue.
            Route::Plain => m
                .headers
                .as_ref()
                .and_then(|h| h.get(queue::QUEUED_HEADER))
                .is_some_and(|v| queue::names(v.as_str(), &self.node)),
            // The groups named here get it from their group's queue.
            Route::Shared { group, filter } => m
                .headers
                .as_ref()
                .and_then(|h| h.get(queue::SHARED_HEADER))
                .is_some_and(|v| queue::names(v.as_str(), &subject::queue_group(group, filter))),
        };
        if from_queue {
            LinkStats::add(&stats.duplicates);
            return;
        }
        if matches!(route, Route::Plain) {
            // Its store for this node failed: this copy takes its place in the chain.
            let prevs = m.headers.as_ref().and_then(|h| h.get(queue::PREV_HEADER));
            chained = prevs.and_then(|v| queue::prev_in_list(v.as_str(), &self.node));
        }
        let Ok(e) = envelope::decode(&m.payload) else {
            LinkStats::add(&stats.malformed);
            return;
        };
        // Plain deliveries of our own messages were made locally; a shared one came back
        // because NATS chose this node for the group.
        let fresh = match route {
            Route::Plain => e.origin != self.node && first_copy(&mut self.seen, &e),
            Route::Shared { .. } => true,
        };
        if !fresh {
            LinkStats::add(&stats.duplicates);
            return;
        }
        LinkStats::add(&stats.received);
        let (origin, topic, seq) = (e.origin.clone(), e.topic.clone(), e.seq);
        let m = FromLink::Message {
            route: route.clone(),
            envelope: Box::new(e),
            token: None,
            dedupe: None,
        };
        match chained {
            Some(prev) => self.in_order((&origin, &topic, seq), prev, m),
            None => {
                self.out.push(m);
            }
        }
    }

    /// Send a session's state to node `to`: `u16 id length | client id | state`.
    pub(super) async fn handover(&mut self, to: &str, client_id: &str, state: Vec<u8>) {
        let stats = &self.out.stats;
        let Ok(id_len) = u16::try_from(client_id.len()) else {
            LinkStats::add(&stats.too_large);
            return;
        };
        if !subject::valid_cluster_name(to) {
            LinkStats::add(&stats.malformed);
            return;
        }
        let mut payload = Vec::with_capacity(2 + client_id.len() + state.len());
        payload.extend_from_slice(&id_len.to_be_bytes());
        payload.extend_from_slice(client_id.as_bytes());
        payload.extend_from_slice(&state);
        let subject = self.prefix.control(&format!("state.{to}"));
        if !within(
            PUBLISH_WAIT_MS,
            self.client.publish(subject, payload.into()),
        )
        .await
        {
            LinkStats::add(&stats.nats_errors);
        }
    }

    pub(super) fn session_state(&self, payload: &[u8]) {
        let parsed = payload
            .get(..2)
            .map(|n| usize::from(u16::from_be_bytes([n[0], n[1]])))
            .and_then(|n| Some((payload.get(2..2 + n)?, payload.get(2 + n..)?)))
            .and_then(|(id, rest)| Some((std::str::from_utf8(id).ok()?, rest)));
        match parsed {
            Some((client_id, state)) => {
                self.out.push(FromLink::SessionState {
                    client_id: client_id.to_string(),
                    state: state.to_vec(),
                });
            }
            None => LinkStats::add(&self.out.stats.malformed),
        }
    }

    /// An empty message on a control subject is a liveness probe (`shardmq cluster-forget`
    /// sends one before it removes a node): answer it with this node's name, off the loop.
    pub(super) fn alive(&self, reply: Option<Subject>) {
        let Some(reply) = reply else {
            return;
        };
        let (client, name) = (self.client.clone(), Bytes::from(self.node.clone()));
        tokio::spawn(async move { within(PUBLISH_WAIT_MS, client.publish(reply, name)).await });
    }

    pub(super) fn takeover(&self, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.split_once('\n'));
        match parsed {
            Some((by, client_id)) => {
                self.out.push(FromLink::TakenOver {
                    client_id: client_id.to_string(),
                    by: by.to_string(),
                });
            }
            None => LinkStats::add(&self.out.stats.malformed),
        }
    }
}

/// Whether this is the first copy of `e` seen from its origin (within the window).
fn first_copy(seen: &mut HashMap<String, Window>, e: &Envelope) -> bool {
    if !seen.contains_key(&e.origin) && seen.len() >= ORIGINS_MAX {
        seen.clear();
    }
    let w = seen.entry(e.origin.clone()).or_default();
    if !w.set.insert(e.seq) {
        return false;
    }
    w.order.push_back(e.seq);
    if w.order.len() > DEDUP_WINDOW_MESSAGES {
        if let Some(old) = w.order.pop_front() {
            w.set.remove(&old);
        }
    }
    true
}
