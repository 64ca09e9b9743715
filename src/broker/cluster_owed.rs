//! The messages owed to a persistent session whose node died (`docs/cluster.md`, "A
//! session whose node died"; `docs/decisions/0013-cluster.md`, choice 10).
//!
//! Owns: four steps. The node that takes such a session over from a dead node asks the
//! link for the messages waiting in the dead node's queue that match the session's plain
//! filters (`reclaim_owed`) and delivers them to the session (`deliver_owed`). A node
//! that restarts on its store reports its restored persistent sessions (`cluster_restored`)
//! and, for each that the registry gave to another node meanwhile, sends the new owner
//! what the session still owed here and ends it (`on_disowned`). A node back from a
//! cut-off from NATS lists its live sessions (`list_live`) and, for each the registry gave
//! to another node meanwhile, disconnects its client (0x8E), hands it over and ends it
//! (`on_superseded`): the takeover notice it missed.
//!
//! Invariants: an owed message reaches a session only through its *current*
//! subscriptions (matched again here, highest QoS and every identifier, as the routes
//! would); a disowned session is ended before this node reads its queue (the link sends
//! `Disowned` first), and never if a client claimed it here since the start; a superseded
//! session is ended only if it is the incarnation listed and no claim for its id was made
//! here since the list. Must not touch: NATS or the link (only `ToCluster` values).

use std::sync::Arc;

use super::deliver;
use super::Broker;
use crate::log::Level;
use crate::log_at;
use crate::protocol::{QoS, ReasonCode};
use crate::session::{Message, Outgoing, SubIds};

use super::cluster::ToCluster;

impl<X> Broker<X> {
    /// Once at start (cluster on): tell the link which persistent sessions this shard
    /// restored from its store, so that it can check their owners before reading the
    /// queue. Sent even when there are none: the link waits for every shard's list.
    /// Ids this node assigned (`shardmq-<node>-…`) are left out: they skip the registry,
    /// which therefore never names their owner.
    pub fn cluster_restored(&mut self) {
        let assigned = self.assigned_prefix();
        let client_ids = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expiry_s > 0 && !s.client_id.starts_with(&assigned))
            .map(|(_, s)| s.client_id.clone())
            .collect();
        self.tell_cluster(ToCluster::Restored { client_ids });
    }

    /// Session `client_id` was completed here from the subscriptions bucket because its
    /// old node `from` sent no state: ask for the messages waiting for it in `from`'s
    /// queue (shared subscriptions are left out: NATS picks their members).
    pub(super) fn reclaim_owed(&mut self, client_id: &str, from: &str) {
        let Some(sess) = self
            .sessions
            .find(client_id)
            .and_then(|s| self.sessions.get(s))
        else {
            return;
        };
        let filters: Vec<Box<str>> = sess
            .subs
            .keys()
            .filter(|f| !f.starts_with("$share/"))
            .cloned()
            .collect();
        if filters.is_empty() {
            return;
        }
        self.tell_cluster(ToCluster::Reclaim {
            client_id: client_id.into(),
            from: from.into(),
            filters,
        });
    }

    /// Messages owed to session `client_id` from elsewhere (a dead node's queue, or a
    /// state that came when no CONNECT waited for it): each is delivered as the session's
    /// current subscriptions want it (written, queued and logged like any delivery), or
    /// dropped if none matches any more or the session is not here.
    pub(super) fn deliver_owed(&mut self, client_id: &str, msgs: Vec<Arc<Message>>, now_ms: u64) {
        let Some(s) = self.sessions.find(client_id) else {
            self.fx.stats.dropped_queue += msgs.len() as u64;
            return;
        };
        for msg in msgs {
            let Some(out) = self
                .sessions
                .get(s)
                .and_then(|sess| owed_delivery(sess, msg))
            else {
                continue;
            };
            let (_, sessions, mut sink) = self.parts();
            deliver::deliver(sessions, &mut sink, s, out, now_ms);
        }
    }

    /// Session `client_id`, restored from this node's store, is `owner`'s now (or
    /// nobody's: it ended there): unless a client claimed it here since the start, send
    /// `owner` what it still owed here (unacknowledged deliveries, then the queue; not
    /// its subscriptions, which the owner has) and end it here, Will dropped (the owner
    /// has the client now).
    pub(super) fn on_disowned(&mut self, client_id: &str, owner: Option<&str>, now_ms: u64) {
        let Some(s) = self.sessions.find(client_id) else {
            return;
        };
        let claimed_here = self.awaiting_state.contains_key(client_id)
            || self.sessions.get(s).is_some_and(|x| x.link.is_some());
        if claimed_here {
            return;
        }
        let mut state = self.session_state(s);
        state.subs.clear();
        let owed = state.queued.len();
        if let (Some(to), false) = (owner, state.queued.is_empty()) {
            self.tell_cluster(ToCluster::Handover {
                to: to.into(),
                client_id: client_id.into(),
                state,
                now_ms,
            });
        }
        log_at!(
            Level::Notice,
            "Client {}: its session restored here belongs to cluster node {} now; {owed} owed message(s) handed over, the session ends here.",
            client_id.escape_debug(),
            owner.unwrap_or("(none: it ended)")
        );
        self.end_session_reconnected(s);
    }
}

impl<X> Broker<X> {
    /// The prefix of the client ids this node assigns (`Broker::assign_id`): they name
    /// this node, so no other can hold them, and CONNECT does not claim them.
    fn assigned_prefix(&self) -> String {
        format!("shardmq-{}-", self.cluster.as_deref().unwrap_or(""))
    }

    /// The link is back from a cut-off: list this shard's sessions for its check against
    /// the registry (`ToCluster::Live`), remembering which incarnation was listed. Ids
    /// this node assigned (`shardmq-<node>-…`) are left out: they skip the registry.
    pub(super) fn list_live(&mut self) {
        let assigned = self.assigned_prefix();
        self.listed.clear();
        let mut client_ids = Vec::new();
        for (_, sess) in self.sessions.iter() {
            if sess.client_id.starts_with(&assigned) {
                continue;
            }
            self.listed.insert(sess.client_id.clone(), sess.uid);
            client_ids.push(sess.client_id.clone());
        }
        self.tell_cluster(ToCluster::Live { client_ids });
    }

    /// Session `client_id`, listed after a cut-off, is `owner`'s now (or nobody's): the
    /// takeover notice sent to this node while it was cut off was lost. Unless its id was
    /// claimed here since the list (or it is another incarnation), do what that notice
    /// would have done: disconnect its client with 0x8E (3.x: close), send `owner` its
    /// state and end it here. A delayed Will of an offline session is dropped: the
    /// session resumed on `owner` [MQTT-3.1.3-9].
    pub(super) fn on_superseded(&mut self, client_id: &str, owner: Option<&str>, now_ms: u64) {
        let listed = self.listed.remove(client_id);
        let Some(s) = self.sessions.find(client_id) else {
            return;
        };
        let same = self.sessions.get(s).map(|x| x.uid) == listed;
        if !same || self.awaiting_state.contains_key(client_id) {
            return;
        }
        log_at!(
            Level::Notice,
            "Client {}: cluster node {} took its session over while this node was cut off from NATS; it ends here.",
            client_id.escape_debug(),
            owner.unwrap_or("(none: it ended there)")
        );
        if let Some(by) = owner {
            self.on_taken_over(client_id, by, now_ms);
            return;
        }
        if let Some(old) = self.sessions.get_mut(s).and_then(|x| x.link.take()) {
            if let Some(l) = self.links.get_mut(old) {
                l.session = None;
            }
            let why = "session taken over by another cluster node";
            self.close(old, Some(ReasonCode::SessionTakenOver), why);
        }
        self.end_session_reconnected(s);
    }
}

/// How session `sess` wants `msg` now: through every current plain subscription that
/// matches (highest QoS, every identifier), or `None` if none does.
fn owed_delivery(sess: &crate::session::Session, msg: Arc<Message>) -> Option<Outgoing> {
    let mut hit: Option<(QoS, bool, SubIds)> = None;
    for (filter, st) in &sess.subs {
        if filter.starts_with("$share/") || !crate::topic::matches(filter, &msg.topic) {
            continue;
        }
        let qos = msg.qos.min(st.options.qos);
        let (q, rap, ids) = hit.get_or_insert((qos, false, SubIds::new()));
        *q = (*q).max(qos);
        *rap |= st.options.retain_as_published;
        if let Some(id) = st.sub_id {
            ids.push(id);
        }
    }
    let (qos, retain_as_published, sub_ids) = hit?;
    Some(Outgoing {
        retain: retain_as_published && msg.retain,
        msg,
        qos,
        sub_ids,
        share: None,
        sid: 0,
        moved: false,
    })
}
