//! The link's interests: the NATS subscriptions that follow the node's local
//! subscribers, each answered only once the server has it (the echo probe).

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::tasks::{self, interest_filter, InterestOp, ShareConsumer};
use super::{
    within, Echo, Inbound, Interest, State, Stop, Tag, FLUSH_WAIT_MS, INTERESTS_MAX,
    UNSUBSCRIBE_WAIT_MS,
};
use crate::cluster::{queue, subject, FromLink, LinkStats, Route};

impl State {
    /// Count one local subscriber of (filter, group); subscribe on NATS for the first and
    /// flush, so the answer means the server has the interest. Interests are handled one
    /// after another, so an answer for a later one also covers every earlier one.
    pub(super) async fn interest(
        &mut self,
        filter: String,
        group: Option<String>,
        ack: Option<(usize, u64)>,
    ) {
        let key = (filter, group);
        if let Some(i) = self.interests.get_mut(&key) {
            i.count += 1;
            let (filter, group) = key;
            self.answer_interest(FromLink::InterestReady { filter, group, ack }, None);
            return;
        }
        let (filter, group) = key;
        let subjects = match subject::filter_to_subjects(&self.prefix, &filter) {
            Ok(s)
                if crate::topic::valid_filter(&filter) && self.interests.len() < INTERESTS_MAX =>
            {
                s
            }
            _ => {
                // Invalid, too long for a subject, or the table is full: this subscription
                // stays local (counted), and the node is told so.
                LinkStats::add(&self.out.stats.interest_dropped);
                self.answer_interest(FromLink::InterestRefused { filter, group, ack }, None);
                return;
            }
        };
        let queue = group.as_deref().map(|g| subject::queue_group(g, &filter));
        let tag = Arc::new(Tag::Deliver(match &group {
            None => Route::Plain,
            Some(g) => Route::Shared {
                group: g.clone(),
                filter: filter.clone(),
            },
        }));
        let mut stops = Vec::with_capacity(subjects.len() + 1);
        for s in &subjects {
            if let Some(t) = self.subscribe(s, queue.clone(), tag.clone()).await {
                stops.push(t);
            }
        }
        if let (Some(g), Some(q)) = (&group, &queue) {
            stops.push(self.read_share_queue(g, &filter, q));
        }
        // A round trip through the server: it has processed the SUBs before the echo
        // comes back (async-nats' `flush` only writes them to the socket).
        if !self.server_caught_up().await {
            LinkStats::add(&self.out.stats.nats_errors);
        }
        self.interests.insert(
            (filter.clone(), group.clone()),
            Interest { count: 1, stops },
        );
        // The interest goes into the interest bucket, so that other nodes store QoS ≥ 1
        // messages for it in this node's queue (a share group's: in the group's queue)
        // even while this node is down.
        let put = Some(queue::interest_key(
            &self.node,
            &interest_filter(&filter, group.as_deref()),
        ));
        self.answer_interest(FromLink::InterestReady { filter, group, ack }, put);
    }

    /// Subscribe to a private inbox for `server_caught_up`.
    pub(super) async fn start_echo(&self) -> Option<Echo> {
        let subject = Subject::from(self.client.new_inbox());
        let wait = Duration::from_millis(FLUSH_WAIT_MS);
        match tokio::time::timeout(wait, self.client.subscribe(subject.clone())).await {
            Ok(Ok(sub)) => Some(Echo {
                subject,
                sub,
                seq: 0,
            }),
            _ => {
                LinkStats::add(&self.out.stats.nats_errors);
                None
            }
        }
    }

    /// Publish a probe to the echo inbox and wait (bounded) until it comes back. The server
    /// reads a connection's operations in order, so when the probe is delivered every SUB
    /// and UNSUB this connection sent before it is in effect on that server.
    pub(super) async fn server_caught_up(&mut self) -> bool {
        if self.echo.is_none() {
            self.echo = self.start_echo().await;
        }
        let Some(echo) = self.echo.as_mut() else {
            return false;
        };
        echo.seq += 1;
        let probe = echo.seq.to_string();
        let sent = self
            .client
            .publish(echo.subject.clone(), Bytes::from(probe.clone()));
        if !within(FLUSH_WAIT_MS, sent).await {
            return false;
        }
        let back = async {
            // Probes that timed out earlier may still arrive; skip them.
            while let Some(m) = echo.sub.next().await {
                if m.payload.as_ref() == probe.as_bytes() {
                    return true;
                }
            }
            false
        };
        let wait = Duration::from_millis(FLUSH_WAIT_MS);
        match tokio::time::timeout(wait, back).await {
            Ok(true) => true,
            Ok(false) => {
                // The subscription ended: make a new one next time.
                self.echo = None;
                false
            }
            Err(_) => false,
        }
    }

    /// Send `answer` once the interest bucket holds `put` (a key of this node's), in the
    /// order the interests came: a later answer never overtakes an earlier one.
    pub(super) fn answer_interest(&self, answer: FromLink, put: Option<String>) {
        let op = InterestOp::Put {
            key: put,
            node: self.node.clone(),
            answer,
        };
        if let Err(e) = self.interest_ops.try_send(op) {
            LinkStats::add(&self.out.stats.nats_errors);
            if let InterestOp::Put { answer, .. } = e.into_inner() {
                self.out.push_wake(answer);
            }
        }
    }

    /// After the last local subscriber, unsubscribe and wait until each UNSUB is queued
    /// on the connection, so a later round trip (`server_caught_up`) proves the server has
    /// dropped the interest.
    pub(super) async fn no_interest(&mut self, filter: String, group: Option<String>) {
        let key = (filter, group);
        let Some(i) = self.interests.get_mut(&key) else {
            return;
        };
        i.count -= 1;
        if i.count > 0 {
            return;
        }
        let Some(i) = self.interests.remove(&key) else {
            return;
        };
        let op = InterestOp::Delete {
            key: queue::interest_key(&self.node, &interest_filter(&key.0, key.1.as_deref())),
        };
        if self.interest_ops.try_send(op).is_err() {
            LinkStats::add(&self.out.stats.nats_errors);
        }
        for stop in i.stops {
            let (ack_tx, ack_rx) = oneshot::channel();
            if stop.send(ack_tx).is_ok() {
                let wait = Duration::from_millis(UNSUBSCRIBE_WAIT_MS);
                if !matches!(tokio::time::timeout(wait, ack_rx).await, Ok(Ok(()))) {
                    LinkStats::add(&self.out.stats.nats_errors);
                }
            }
        }
    }

    /// Start reading share group (group, filter)'s queue (queue name `qname`) with the
    /// group's durable consumer, which the other nodes with members read too.
    pub(super) fn read_share_queue(&self, group: &str, filter: &str, qname: &str) -> Stop {
        let (stop_tx, stop_rx) = oneshot::channel();
        let s = ShareConsumer {
            js: self.js.clone(),
            stream: self.shared_stream.clone(),
            consumer: queue::shared_consumer_config(
                &self.prefix,
                qname,
                &interest_filter(filter, Some(group)),
            ),
            group: group.to_string(),
            filter: filter.to_string(),
            inbound: self.inbound_tx.clone(),
            stats: self.out.stats.clone(),
        };
        tokio::spawn(tasks::share_consumer(s, stop_rx));
        stop_tx
    }

    /// Subscribe (in queue group `queue` if given) and forward what arrives to the loop.
    pub(super) async fn subscribe(
        &self,
        subject: &str,
        queue: Option<String>,
        tag: Arc<Tag>,
    ) -> Option<Stop> {
        let wait = Duration::from_millis(FLUSH_WAIT_MS);
        let sub = match queue {
            None => tokio::time::timeout(wait, self.client.subscribe(subject.to_string())).await,
            Some(q) => {
                let sub = self.client.queue_subscribe(subject.to_string(), q);
                tokio::time::timeout(wait, sub).await
            }
        };
        let sub = match sub {
            Ok(Ok(s)) => s,
            _ => {
                LinkStats::add(&self.out.stats.nats_errors);
                return None;
            }
        };
        let tx = self.inbound_tx.clone();
        let stats = self.out.stats.clone();
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(forward(sub, tag, tx, stats, stop_rx));
        Some(stop_tx)
    }
}

/// Pass a subscription's messages to the link loop until told to unsubscribe.
async fn forward(
    mut sub: Subscriber,
    tag: Arc<Tag>,
    tx: mpsc::Sender<Inbound>,
    stats: Arc<LinkStats>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    loop {
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else { return };
                if tx.try_send((tag.clone(), m)).is_err() {
                    LinkStats::add(&stats.from_link_dropped);
                }
            }
            // A dropped `Stop` (the interest is gone) also ends the subscription.
            ack = &mut stop => {
                if sub.unsubscribe().await.is_err() {
                    LinkStats::add(&stats.nats_errors);
                }
                if let Ok(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }
}
