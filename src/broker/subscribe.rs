//! SUBSCRIBE and UNSUBSCRIBE: the local trie, interest replication, retained delivery.

use super::connect::timer_key;
use super::pacing::RETAINED_WALK_STEPS_MAX;
use super::retained::RetainedReplica;
use super::shared::ShareOp;
use super::{Broker, Cast, Subscriber, Verdict};
use crate::log::Level;
use crate::log_at;
use crate::protocol::{
    self, Packet, Properties, ReasonCode, RetainHandling, Subscribe, Unsubscribe, Version,
};
use crate::session::{RetainedBacklog, SubState};
use crate::topic::retained::MatchCursor;
use crate::topic::{self, FilterKind};

/// Timer kind: a SUBACK's deadline for the cluster link's confirmation.
pub(super) const TIMER_SUBACK: u64 = 5;

/// Filters in one SUBSCRIBE or UNSUBSCRIBE that we act on; the rest are refused.
pub const FILTERS_PER_PACKET_MAX: usize = 1024;

impl<X> Broker<X> {
    pub(super) fn on_subscribe(&mut self, key: usize, sub: &Subscribe<'_>, now_ms: u64) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        let version = self.links.get(key).map_or(Version::V3_1_1, |l| l.version);
        let sub_id = sub.properties.subscription_identifiers.iter().next();
        let mut codes: smallvec::SmallVec<[u8; 16]> = smallvec::SmallVec::new();
        let mut retained = Vec::new();
        let mount = self.links.get(key).and_then(|l| l.mount.clone());
        for (i, req) in sub.filters.iter().enumerate() {
            if i >= FILTERS_PER_PACKET_MAX {
                codes.push(refusal(version, protocol::ReasonCode::QuotaExceeded));
                continue;
            }
            let full = super::link::mounted(mount.as_deref(), req.filter);
            let parsed = topic::parse_filter(&full);
            let plain = match &parsed {
                Ok(FilterKind::Normal(f)) => Some(*f),
                Ok(FilterKind::Shared(sh)) => Some(sh.filter),
                Err(_) => None,
            };
            if plain.is_some_and(|f| !self.may_subscribe(key, f)) {
                codes.push(refusal(version, protocol::ReasonCode::NotAuthorized));
                continue;
            }
            if let Some(refused) = parsed
                .as_ref()
                .ok()
                .and_then(|k| self.over_limit(s, &full, k))
            {
                codes.push(refusal(version, refused));
                continue;
            }
            let code = match parsed {
                Ok(FilterKind::Normal(f)) => {
                    let state = SubState {
                        options: req.options,
                        sub_id,
                    };
                    let existed = self.add_subscription(s, f, state);
                    let send = match req.options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                    if send {
                        retained.push((Box::<str>::from(f), state));
                    }
                    req.options.qos as u8
                }
                Ok(FilterKind::Shared(sh)) => {
                    if req.options.no_local && version == Version::V5 {
                        // [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
                        return self.protocol_error(key, "No Local on a shared subscription");
                    }
                    let state = SubState {
                        options: req.options,
                        sub_id,
                    };
                    self.add_shared(s, &full, sh.group, sh.filter, state);
                    req.options.qos as u8
                }
                Err(_) => refusal(version, protocol::ReasonCode::TopicFilterInvalid),
            };
            // `mosquitto -v` lists each filter under its "Received SUBSCRIBE" line.
            log_at!(
                Level::Debug,
                "\t{} (QoS {})",
                req.filter,
                req.options.qos as u8
            );
            if code < 0x80 {
                self.log_subscription(key, Level::Subscribe, req.filter, code);
            }
            codes.push(code);
        }
        let ack = protocol::SubAck {
            packet_id: sub.packet_id,
            properties: Properties::default(),
            codes: &codes,
        };
        let mut bytes = Vec::new();
        protocol::encode(&Packet::SubAck(ack), version, &mut bytes);
        self.backup_subs(s);
        let gen = self.links.get(key).map_or(0, |l| l.gen);
        let since = self.retained.clock();
        if let Some(at) = self.gate.hold(key, gen, bytes, (retained, since), now_ms) {
            self.timers.insert(at, timer_key(TIMER_SUBACK, 0, 0));
        }
        self.release_subacks(now_ms);
        Verdict::Continue
    }

    /// May link `key` subscribe to `filter` (`$share/g/` stripped) under its listener's ACL?
    /// A refusal is counted and logged.
    fn may_subscribe(&mut self, key: usize, filter: &str) -> bool {
        let Some(link) = self.links.get(key) else {
            return false;
        };
        let Some(acl) = self.auth.acl(link.listener) else {
            return true;
        };
        let client = link.acl_client();
        if acl.can_subscribe(client, filter) {
            return true;
        }
        self.fx.stats.acl_denied += 1;
        crate::log_at!(
            crate::log::Level::Notice,
            "Client {} (user {}) from {} denied SUBSCRIBE to '{}'.",
            client.client_id.escape_debug(),
            client.username.unwrap_or("<anonymous>").escape_debug(),
            link.peer,
            filter.escape_debug()
        );
        false
    }

    /// Why SUBSCRIBE to `full` (parsed as `kind`) is refused by the resource limits, if it
    /// is: too long or deep (0x8F), or a new subscription past the session's quota (0x97).
    fn over_limit(&self, s: usize, full: &str, kind: &FilterKind<'_>) -> Option<ReasonCode> {
        let limits = &self.cfg.limits;
        if full.len() > limits.max_filter_length || !limits.filter_within(kind.filter()) {
            return Some(ReasonCode::TopicFilterInvalid);
        }
        let subs = &self.sessions.get(s)?.subs;
        let new = !subs.contains_key(full);
        let full_memory = self.pressure >= super::memory::MemoryPressure::Refuse;
        (new && (subs.len() >= limits.max_subscriptions_per_client || full_memory))
            .then_some(ReasonCode::QuotaExceeded)
    }

    /// `client qos filter` (subscribe) or `client filter` (unsubscribe), as Mosquitto's
    /// `log_type subscribe|unsubscribe` lines.
    fn log_subscription(&self, key: usize, level: Level, filter: &str, qos: u8) {
        if !crate::log_sink::enabled(level) {
            return;
        }
        let id = self.links.get(key).and_then(|l| l.client_id.as_deref());
        let id = id.unwrap_or("<unknown>");
        if level == Level::Subscribe {
            log_at!(level, "{id} {qos} {filter}");
        } else {
            log_at!(level, "{id} {filter}");
        }
    }

    /// Record a subscription in the session and the trie. Returns whether it existed.
    pub(super) fn add_subscription(&mut self, s: usize, filter: &str, state: SubState) -> bool {
        let existed = self
            .sessions
            .get_mut(s)
            .and_then(|x| x.add_sub(filter, state))
            .is_some();
        self.journal_subscription(s, filter, Some(&state));
        let entry = Subscriber::new(s, state.options, state.sub_id);
        if self.routes.add_local(filter, entry) {
            self.broadcast_interest(filter, true);
        }
        existed
    }

    /// Record a shared subscription in the session and in every shard's membership.
    pub(super) fn add_shared(
        &mut self,
        s: usize,
        full: &str,
        group: &str,
        filter: &str,
        state: SubState,
    ) {
        self.journal_subscription(s, full, Some(&state));
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        let new = sess.add_sub(full, state).is_none();
        let uid = sess.uid;
        if new {
            self.tell_interest(filter, Some(group), true);
        }
        let member = self.member(s, uid, state.options, state.sub_id, true);
        self.share_update(group, filter, member, ShareOp::Join);
    }

    /// Remove session `s`'s subscription `full` (normal or shared) from the routing state.
    pub(super) fn unroute(&mut self, s: usize, uid: u64, full: &str) {
        match topic::parse_filter(full) {
            Ok(FilterKind::Shared(sh)) => {
                let member = self.member(
                    s,
                    uid,
                    protocol::SubscriptionOptions::default(),
                    None,
                    false,
                );
                self.share_update(sh.group, sh.filter, member, ShareOp::Leave);
                self.tell_interest(sh.filter, Some(sh.group), false);
            }
            _ => {
                self.remove_from_trie(s, full);
            }
        }
    }

    /// Remove session `s`'s subscription to `filter` from the trie. Returns whether it was there.
    pub(super) fn remove_from_trie(&mut self, s: usize, filter: &str) -> bool {
        let (removed, last) = self.routes.remove_local(s, filter);
        if last {
            self.broadcast_interest(filter, false);
        }
        removed
    }

    fn broadcast_interest(&mut self, filter: &str, add: bool) {
        self.apply_interest(self.shard_id, filter, add);
        self.tell_interest(filter, None, add);
        let from = self.shard_id;
        self.broadcast_acked(|seq| Cast::Interest {
            from,
            filter: filter.into(),
            add,
            seq,
        });
    }

    /// Send a routing-state change to every other shard under the next sequence number;
    /// SUBACKs queued from now on wait until every peer has acknowledged it.
    pub(super) fn broadcast_acked(&mut self, make: impl Fn(u64) -> Cast) {
        let Some(seq) = self.gate.next_seq() else {
            return;
        };
        for to in (0..self.shards).filter(|&t| t != self.shard_id) {
            self.fx.outbox.push((to, make(seq)));
        }
    }

    /// Apply shard `from`'s interest change to the replicated interest trie.
    pub(super) fn apply_interest(&mut self, from: usize, filter: &str, add: bool) {
        self.routes.apply_interest(from, filter, add);
    }

    /// Send every held SUBACK whose interest changes all peers have applied, followed by
    /// the retained messages its filters match.
    pub(super) fn release_subacks(&mut self, now_ms: u64) {
        while let Some(p) = self.gate.pop_released(now_ms) {
            if let Err(p) = self.hold_suback(p) {
                self.send_suback(p, now_ms);
            }
        }
    }

    /// Write a released SUBACK, then the retained messages its filters match.
    pub(super) fn send_suback(&mut self, p: super::gate::PendingSubAck, now_ms: u64) {
        {
            let live = self
                .links
                .get(p.link)
                .is_some_and(|l| l.gen == p.gen && l.is_connected());
            if !live {
                return;
            }
            if let Some(c) = self.links.conn_mut(p.link) {
                c.tx.buf().extend_from_slice(&p.bytes);
                self.fx.mark_dirty(p.link, &mut c.link);
                // Encoded when the SUBSCRIBE was handled, written now: `mosquitto -v`'s line.
                log_at!(
                    Level::Debug,
                    "Sending SUBACK to {}",
                    c.link.client_id.as_deref().unwrap_or("<unknown>")
                );
            }
            let Some(s) = self.links.get(p.link).and_then(|l| l.session) else {
                return;
            };
            for (filter, state) in &p.retained {
                self.send_retained(s, filter, state, p.retained_since, now_ms);
            }
        }
    }

    /// Owe session `s` the retained messages matching `filter` (RETAIN set) and send what
    /// its link takes now; the walk of the retained tree goes on a slice per turn
    /// (`walk_retained`) and the writing as the buffer drains (`pump_retained`). `since`:
    /// the replica's clock when the subscription was made. When no retained message can
    /// match, there is no walk: no slice of the shard's, no place in its queue of walks
    /// (a storm of subscribers over an empty tree waited n/4 turns for nothing).
    fn send_retained(&mut self, s: usize, filter: &str, state: &SubState, since: u64, now_ms: u64) {
        if !self.retained.may_match(filter) {
            return;
        }
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        sess.retained_backlog.push_back(RetainedBacklog {
            msgs: std::collections::VecDeque::new(),
            walk: MatchCursor::new(filter),
            since,
            qos: state.options.qos,
            sub_id: state.sub_id,
        });
        self.pump(s, now_ms);
    }

    /// Refill session `s`'s first retained backlog from its walk when it ran dry: one
    /// slice of at most `RETAINED_WALK_STEPS_MAX` steps, if this turn's pacing allows
    /// (else the session resumes next turn). Returns whether it walked.
    ///
    /// Skipped: expired messages, those whose publisher lost the right to publish them
    /// (`check_retain_source`), and those stamped after the subscription was made, which
    /// were stored after it and so reached the subscriber as live publishes.
    pub(super) fn walk_retained(&mut self, s: usize, now_ms: u64) -> bool {
        let Some(batch) = self
            .sessions
            .get_mut(s)
            .and_then(|x| x.retained_backlog.front_mut())
        else {
            return false;
        };
        if !batch.msgs.is_empty() || batch.walk.is_done() || !self.pacing.may_walk(s) {
            return false;
        }
        self.pacing.walked(s);
        let auth = &self.auth;
        let check_source = self.cfg.check_retain_source;
        let since = batch.since;
        let msgs = &mut batch.msgs;
        self.retained
            .walk_matching(&mut batch.walk, RETAINED_WALK_STEPS_MAX, |m| {
                let live = RetainedReplica::stamped_after(m, since);
                if !live && !m.expired(now_ms) && (!check_source || publisher_may_still(auth, m)) {
                    msgs.push_back(m.clone());
                }
            });
        true
    }

    pub(super) fn on_unsubscribe(&mut self, key: usize, u: &Unsubscribe<'_>) -> Verdict {
        let Some(s) = self.links.get(key).and_then(|l| l.session) else {
            return Verdict::Close;
        };
        let version = self.links.get(key).map_or(Version::V3_1_1, |l| l.version);
        let mut codes: smallvec::SmallVec<[u8; 16]> = smallvec::SmallVec::new();
        let mount = self.links.get(key).and_then(|l| l.mount.clone());
        for filter in u.filters.iter().take(FILTERS_PER_PACKET_MAX) {
            let filter = super::link::mounted(mount.as_deref(), filter);
            let had = self
                .sessions
                .get_mut(s)
                .and_then(|x| x.remove_sub(&filter))
                .is_some();
            if had {
                let uid = self.sessions.get(s).map_or(0, |x| x.uid);
                self.unroute(s, uid, &filter);
                self.log_subscription(key, Level::Unsubscribe, &filter, 0);
                self.journal_subscription(s, &filter, None);
            }
            let code = if had {
                protocol::ReasonCode::Success
            } else {
                protocol::ReasonCode::NoSubscriptionExisted
            };
            codes.push(code.to_u8());
        }
        self.backup_subs(s);
        let ack = protocol::UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::default(),
            codes: if version == Version::V5 { &codes } else { &[] },
        };
        self.send_durable(key, &Packet::UnsubAck(ack));
        Verdict::Continue
    }
}

/// May the publisher of retained message `m` still publish it under the ACL in force?
/// (A retained message outlives its publisher's rights otherwise: CVE-2018-12546.) As in
/// Mosquitto's `check_retain_source`, a message without a recorded publisher (from the
/// broker, a bridge, published while no ACL was in force, or stored by a version that
/// did not keep it) passes. The store keeps the publisher, so this holds after a restart.
fn publisher_may_still(auth: &super::access::AuthState, m: &crate::session::Message) -> bool {
    let Some(p) = m.publisher.as_deref() else {
        return true;
    };
    let Some(acl) = auth.acl(p.listener) else {
        return true;
    };
    let who = crate::auth::Client {
        username: p.username.as_deref(),
        client_id: &p.client_id,
    };
    acl.can_publish(who, &m.topic)
}

/// A SUBACK failure code: 5.0 gets the precise reason, 3.x the one failure code 0x80.
fn refusal(version: Version, reason: protocol::ReasonCode) -> u8 {
    if version == Version::V5 {
        reason.to_u8()
    } else {
        0x80
    }
}
