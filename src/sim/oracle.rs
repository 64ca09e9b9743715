//! The oracle: what the protocol promises, checked against what the clients saw.
//!
//! Owns: the record of every message published (who, what, when first sent, whether the
//! broker accepted it), every delivery a client saw, and when each subscription was
//! acknowledged; and the checks over them. Invariant: it knows only what clients observed
//! (packets on their connections), never the broker's internals, so a check that fails is
//! a promise broken on the wire. Must not touch: the broker, the network.
//!
//! The promises checked at the end of a run (every client connected again, nothing in
//! flight), for persistent sessions that never expire, and for clean sessions from their
//! last SUBACK on (a message its publisher gave up at a clean start is owed to nobody):
//! - QoS 1 at least once: a message published at QoS ≥ 1 after a subscriber saw its SUBACK
//!   reaches that subscriber at least once, if the subscription grants QoS ≥ 1.
//! - QoS 2 exactly once: a client hands a QoS 2 delivery to its application at most once,
//!   and exactly once when it was due.
//! - Per-publisher order: the messages of one publisher at one QoS, delivered at QoS ≥ 1,
//!   reach one subscriber first in the order they were published (redeliveries aside).
//! - Share groups: while no member loses a connection, a message due to the group reaches
//!   exactly one member (if the broker saw it once: a publisher's QoS 1 resend is a new
//!   message to route). Once one has, duplicates are allowed (a member that goes away has
//!   its unacknowledged messages given to another member), but each member hands a QoS 2
//!   message to its application once, and a message due to the group still reaches at
//!   least one member, across disconnects and power cuts, unless the broker found no member
//!   online when it routed it (`docs/architecture.md`: offline members get no new
//!   messages; a moved delivery never counts as such: where nobody takes it, it goes
//!   back to the member it came from), or it was held by a session that ended (a clean member's, whose
//!   deliveries no other member was online to take), or a power cut came after it was
//!   placed with a clean member (nothing of a clean session is logged). Those facts come
//!   from the broker, not the wire: which member is online in the routing shard's replica,
//!   and which session took a message, are the broker's to know (`Effects::share_unplaced`
//!   and `Effects::share_clean`, recorded by the simulation's driver). What is owed to the
//!   group counts from the first SUBACK of a stored member (one is a member for good), or,
//!   when every member is clean, from the last SUBACK of every member.
//! - Retained: every shard's replica ends with each topic's last accepted message.
//! - Wills: the Will of a connection that ended without DISCONNECT after its CONNACK (its
//!   network failed, the broker closed it, or its client took the session over) reaches a
//!   `w/#` subscriber that saw its SUBACK before that CONNECT was sent, across power cuts
//!   too, for clean and persistent sessions alike (the CONNACK waited for the Will's
//!   record).

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::QoS;
use crate::topic;

/// Violations kept at most (the first ones say what went wrong).
const VIOLATIONS_MAX: usize = 32;

/// One published message.
#[derive(Debug, Clone)]
pub struct MsgRec {
    /// Topic.
    pub topic: String,
    /// Publish QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Step at which the client first sent it.
    pub first_sent: u64,
    /// The broker acknowledged it (PUBACK, or PUBREC for QoS 2).
    pub acked: bool,
    /// Times the publisher sent it again on a new connection.
    pub resent: u32,
    /// Its publisher gave it up unacknowledged (a clean start): it may or may not arrive.
    pub abandoned: bool,
    /// A Will: the broker publishes it only if its connection ends without DISCONNECT.
    pub will: bool,
    /// A Will whose connection ended without DISCONNECT after CONNACK: it must be published,
    /// also across power cuts (that CONNACK waited for the record holding the Will: the
    /// session's record, or a clean session's `WillArmed`).
    pub due: bool,
}

/// One PUBLISH a client received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The receiving client.
    pub client: usize,
    /// The publishing client.
    pub publisher: usize,
    /// The publisher's sequence number.
    pub seq: u32,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag (set only on retained messages sent at subscribe time here).
    pub retain: bool,
    /// Handed to the application (false for a QoS 2 redelivery the client filtered).
    pub app: bool,
    /// Step at which it arrived.
    pub step: u64,
}

/// What a subscriber is owed.
#[derive(Debug, Clone)]
pub struct Sub {
    /// The client.
    pub client: usize,
    /// Its filter (without a `$share/` prefix).
    pub filter: String,
    /// Granted QoS.
    pub qos: QoS,
    /// Member of the share group.
    pub shared: bool,
    /// A clean session (it starts afresh with every connection).
    pub clean: bool,
}

/// Everything observed in one run.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Messages by (publisher, sequence number).
    pub msgs: BTreeMap<(usize, u32), MsgRec>,
    /// Deliveries in the order they arrived.
    pub deliveries: Vec<Delivery>,
    /// Step at which each client first saw its SUBACK.
    pub suback_step: BTreeMap<usize, u64>,
    /// Promises seen broken.
    pub violations: Vec<String>,
    /// A share-group member lost a connection during the run.
    pub member_disrupted: bool,
    /// Messages the broker found no share-group member online for, or that a session
    /// held when it ended (owed to nobody).
    pub share_unplaced: BTreeSet<(usize, u32)>,
    /// Messages the broker placed with a clean member since the last power cut: nothing
    /// of them was logged, so the next cut may lose them (they are then owed to nobody).
    pub share_clean: BTreeSet<(usize, u32)>,
    /// (member, message): at a power cut, the log said every delivery of the message to
    /// that stored member had moved to another member, durably. It must not reach that
    /// member again unless the broker places it there again (`Effects::share_log`).
    pub moved_off: BTreeSet<(usize, (usize, u32))>,
    /// Times a power cut put a (member, message) into `moved_off` (a figure: how often
    /// the check had something to check).
    pub moved_off_bans: usize,
}

impl Oracle {
    /// Record a broken promise.
    pub fn violation(&mut self, what: String) {
        if self.violations.len() < VIOLATIONS_MAX {
            self.violations.push(what);
        }
    }

    /// A client sent a new message.
    pub fn published(
        &mut self,
        publisher: usize,
        seq: u32,
        topic: &str,
        qos: QoS,
        retain: bool,
        step: u64,
    ) {
        self.msgs.insert(
            (publisher, seq),
            MsgRec {
                topic: topic.to_string(),
                qos,
                retain,
                first_sent: step,
                acked: qos == QoS::AtMostOnce,
                resent: 0,
                abandoned: false,
                will: false,
                due: false,
            },
        );
    }

    /// The power failed: what clean members held is gone with them.
    pub fn power_cut(&mut self) {
        let clean = std::mem::take(&mut self.share_clean);
        self.share_unplaced.extend(clean);
    }

    /// At a power cut, the log had moved message `key` away from stored member `client`
    /// for good (every delivery of it to that member, each move durable).
    pub fn moved_off_durably(&mut self, client: usize, key: (usize, u32)) {
        self.moved_off.insert((client, key));
        self.moved_off_bans += 1;
    }

    /// The broker placed message `key` with `client` (logged): it may reach it again.
    pub fn share_placed(&mut self, client: usize, key: (usize, u32)) {
        self.moved_off.remove(&(client, key));
    }

    /// A restart restored a delivery of `key` to stored member `client`.
    pub fn share_restored(&mut self, client: usize, key: (usize, u32)) {
        if self.moved_off.contains(&(client, key)) {
            self.violation(format!(
                "member {client} was given {}:{} back by a restart, although before the power \
                 cut its every delivery of it had moved to another member, durably",
                key.0, key.1
            ));
        }
    }

    /// A client sent a message again (DUP) on a new connection.
    pub fn resent(&mut self, publisher: usize, seq: u32) {
        if let Some(m) = self.msgs.get_mut(&(publisher, seq)) {
            m.resent += 1;
        }
    }

    /// Message `seq` is the Will of a client's new connection, not a PUBLISH.
    pub fn will(&mut self, publisher: usize, seq: u32) {
        if let Some(m) = self.msgs.get_mut(&(publisher, seq)) {
            m.will = true;
            m.acked = true;
        }
    }

    /// The connection of Will `seq` ended without DISCONNECT: the Will must be published.
    pub fn will_due(&mut self, publisher: usize, seq: u32) {
        if let Some(m) = self.msgs.get_mut(&(publisher, seq)) {
            m.due = true;
        }
    }

    /// A client gave a message up when it started a clean session.
    pub fn abandoned(&mut self, publisher: usize, seq: u32) {
        if let Some(m) = self.msgs.get_mut(&(publisher, seq)) {
            m.abandoned = true;
        }
    }

    /// The broker acknowledged a message.
    pub fn acked(&mut self, publisher: usize, seq: u32) {
        if let Some(m) = self.msgs.get_mut(&(publisher, seq)) {
            m.acked = true;
        }
    }

    /// A client's subscription was acknowledged; with `fresh` (a clean session) what is
    /// owed counts from this SUBACK, else from the first one.
    pub fn subscribed(&mut self, client: usize, step: u64, fresh: bool) {
        if fresh {
            self.suback_step.insert(client, step);
        } else {
            self.suback_step.entry(client).or_insert(step);
        }
    }

    /// A client received a PUBLISH.
    pub fn delivered(&mut self, d: Delivery) {
        match self.msgs.get(&(d.publisher, d.seq)) {
            None => self.violation(format!(
                "client {} got message {}:{} that was never published",
                d.client, d.publisher, d.seq
            )),
            Some(m) if d.qos > m.qos => self.violation(format!(
                "client {} got message {}:{} at QoS {:?}, above its publish QoS {:?}",
                d.client, d.publisher, d.seq, d.qos, m.qos
            )),
            Some(_) => {}
        }
        if self.moved_off.contains(&(d.client, (d.publisher, d.seq))) {
            self.violation(format!(
                "member {} got {}:{} again after a power cut, although before the cut its every \
                 delivery of it had moved to another member, durably",
                d.client, d.publisher, d.seq
            ));
        }
        self.deliveries.push(d);
    }

    /// Every check that needs the run to be over; `subs` are the subscriptions to check.
    pub fn check_end(&mut self, subs: &[Sub]) {
        for m in self.msgs.iter().filter(|(_, m)| !m.acked && !m.abandoned) {
            let what = format!("message {}:{} was never acknowledged", m.0 .0, m.0 .1);
            if self.violations.len() < VIOLATIONS_MAX {
                self.violations.push(what);
            }
        }
        for s in subs.iter().filter(|s| !s.shared) {
            self.check_subscriber(s);
        }
        let members: Vec<&Sub> = subs.iter().filter(|s| s.shared).collect();
        if !members.is_empty() {
            self.check_share_group(&members);
        }
    }

    /// Live (not subscribe-time retained) deliveries of message `key` to `client`.
    fn live(&self, client: usize) -> impl Iterator<Item = &Delivery> {
        self.deliveries
            .iter()
            .filter(move |d| d.client == client && !d.retain)
    }

    /// Messages owed to a subscription acknowledged at `since`, at their delivery QoS.
    fn owed(&self, filter: &str, qos: QoS, since: u64) -> Vec<((usize, u32), QoS)> {
        self.msgs
            .iter()
            .filter(|(_, m)| {
                m.first_sent > since
                    && !m.abandoned
                    && (!m.will || m.due)
                    && topic::matches(filter, &m.topic)
            })
            .map(|(k, m)| (*k, m.qos.min(qos)))
            .filter(|(_, q)| *q != QoS::AtMostOnce)
            .collect()
    }

    /// The broker saw the message once: it was never resent, or it was QoS 2 (whose
    /// resends the broker recognises by packet id). A QoS 1 resend is a new message.
    fn routed_once(&self, key: (usize, u32)) -> bool {
        self.msgs
            .get(&key)
            .is_some_and(|m| m.resent == 0 || m.qos == QoS::ExactlyOnce)
    }

    fn check_subscriber(&mut self, s: &Sub) {
        let mut seen: BTreeMap<(usize, u32), (usize, usize)> = BTreeMap::new();
        let mut last: BTreeMap<(usize, QoS), u32> = BTreeMap::new();
        let mut errors = Vec::new();
        let since = self.suback_step.get(&s.client).copied();
        for d in self.live(s.client) {
            let e = seen.entry((d.publisher, d.seq)).or_insert((0, 0));
            // Order is owed only among messages first sent after the SUBACK: one sent
            // before may first reach the subscriber as a publisher's QoS 1 resend, which the
            // broker rightly routes again, after later messages.
            // And only at QoS ≥ 1: a QoS 0 copy may be dropped (the subscriber was offline)
            // and the publisher's resend be the first to arrive.
            let first = e.0 == 0
                && d.qos != QoS::AtMostOnce
                && since.is_some_and(|t| {
                    self.msgs
                        .get(&(d.publisher, d.seq))
                        .is_some_and(|m| m.first_sent > t)
                });
            e.0 += 1;
            e.1 += usize::from(d.app);
            let pub_qos = self
                .msgs
                .get(&(d.publisher, d.seq))
                .map_or(d.qos, |m| m.qos);
            if first {
                let prev = last.insert((d.publisher, pub_qos), d.seq);
                if prev.is_some_and(|p| p > d.seq) {
                    errors.push(format!(
                        "client {} got {}:{} after {}:{} (QoS {:?}): publisher order broken",
                        s.client,
                        d.publisher,
                        d.seq,
                        d.publisher,
                        prev.unwrap_or(0),
                        pub_qos
                    ));
                }
            }
            if d.qos == QoS::ExactlyOnce && e.1 > 1 {
                errors.push(format!(
                    "client {} handed QoS 2 message {}:{} to its application twice",
                    s.client, d.publisher, d.seq
                ));
            }
        }
        if let Some(since) = since {
            for (key, _) in self.owed(&s.filter, s.qos, since) {
                if !seen.contains_key(&key) {
                    errors.push(format!(
                        "client {} never got {}:{} (QoS ≥ 1, published after its SUBACK)",
                        s.client, key.0, key.1
                    ));
                }
            }
        }
        for e in errors {
            self.violation(e);
        }
    }

    fn check_share_group(&mut self, members: &[&Sub]) {
        let ids: BTreeSet<usize> = members.iter().map(|m| m.client).collect();
        let mut got: BTreeMap<(usize, u32), BTreeSet<usize>> = BTreeMap::new();
        let mut apps: BTreeMap<(usize, usize, u32), usize> = BTreeMap::new();
        let mut errors = Vec::new();
        for d in self
            .deliveries
            .iter()
            .filter(|d| ids.contains(&d.client) && !d.retain)
        {
            got.entry((d.publisher, d.seq))
                .or_default()
                .insert(d.client);
            let n = apps.entry((d.client, d.publisher, d.seq)).or_insert(0);
            *n += usize::from(d.app);
            if d.qos == QoS::ExactlyOnce && *n > 1 {
                errors.push(format!(
                    "member {} handed QoS 2 message {}:{} to its application twice",
                    d.client, d.publisher, d.seq
                ));
            }
        }
        // A stored member is in the group from its first SUBACK on, for good: what is
        // published after the first such SUBACK is owed to the group. Clean members come
        // and go with their connections: without a stored one, only what follows every
        // member's last SUBACK is.
        let stored_since = members
            .iter()
            .filter(|m| !m.clean)
            .filter_map(|m| self.suback_step.get(&m.client).copied())
            .min();
        let since = stored_since.or_else(|| {
            members
                .iter()
                .map(|m| self.suback_step.get(&m.client).copied())
                .try_fold(0u64, |acc, s| s.map(|s| acc.max(s)))
        });
        let qos = members
            .iter()
            .map(|m| m.qos)
            .min()
            .unwrap_or(QoS::AtMostOnce);
        if let Some(since) = since {
            for (key, _) in self.owed("t/#", qos, since) {
                let n = got.get(&key).map_or(0, BTreeSet::len);
                if n == 0 && !self.member_disrupted {
                    errors.push(format!("share group never got {}:{}", key.0, key.1));
                } else if n == 0 && !self.share_unplaced.contains(&key) {
                    errors.push(format!(
                        "share group never got {}:{}, routed to a member (acknowledged, lost)",
                        key.0, key.1
                    ));
                } else if n > 1 && !self.member_disrupted && self.routed_once(key) {
                    errors.push(format!(
                        "share group got {}:{} at {n} members, with no member ever disconnected",
                        key.0, key.1
                    ));
                }
            }
        }
        for e in errors {
            self.violation(e);
        }
    }

    /// The retained messages `checker` (homed on `shard`) saw: one per publisher, its last
    /// retained message, or a later one it gave up at a clean start (which the broker may
    /// have taken); none only if all of a publisher's were given up.
    pub fn check_retained(&mut self, checker: usize, shard: usize) {
        let mut allowed: BTreeMap<usize, (BTreeSet<u32>, bool)> = BTreeMap::new();
        for (&(p, seq), m) in self.msgs.iter().rev().filter(|(_, m)| m.retain) {
            let e = allowed.entry(p).or_insert((BTreeSet::new(), false));
            if e.1 {
                continue;
            }
            e.0.insert(seq);
            e.1 = !m.abandoned;
        }
        let mut got: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for d in self
            .deliveries
            .iter()
            .filter(|d| d.client == checker && d.retain)
        {
            got.entry(d.publisher).or_default().push(d.seq);
        }
        let mut errors = Vec::new();
        for (p, (seqs, certain)) in &allowed {
            let ok = match got.get(p).map(Vec::as_slice) {
                Some([one]) => seqs.contains(one),
                None => !certain,
                Some(_) => false,
            };
            if !ok {
                errors.push(format!(
                    "retained replica of shard {shard}: publisher {p} should hold one of {seqs:?}, a subscriber there got {:?}",
                    got.get(p)
                ));
            }
        }
        if let Some(p) = got.keys().find(|p| !allowed.contains_key(p)) {
            errors.push(format!(
                "retained replica of shard {shard}: publisher {p} never retained anything"
            ));
        }
        for e in errors {
            self.violation(e);
        }
    }
}
