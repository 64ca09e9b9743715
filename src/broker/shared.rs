//! Shared subscriptions `$share/{group}/{filter}` (MQTT 5 §4.8.2, also offered to 3.x).
//!
//! Owns: the replicated group membership and the choice of one member per message.
//! Invariants:
//! - Every shard holds the same membership (members join, leave and go offline through
//!   `Cast::Share`, acknowledged like interest changes, so a SUBACK means every shard knows
//!   the new member).
//! - Only the shard where a message enters the broker picks a member, so each message reaches
//!   one member of each matching group.
//! - Offline members get no new messages; when a member disconnects, its unacknowledged
//!   shared deliveries go to another online member when there is one, else stay with it
//!   (so does a delivery that reaches a stored member gone offline meanwhile). A moved
//!   delivery that finds no member where it lands goes back to the member it came from
//!   (`ShareDelivery::from`), so a move never loses what staying would have kept.
//! - A stored session's log follows a move: the new member's records before the old
//!   member's end (after the peer's barrier when the new member lives on another shard),
//!   so a power cut leaves a delivery with one member or both, never with neither. A
//!   shared delivery's message id is its own in the log, so that end names it exactly.
//!
//! The per-message part (choosing a member, delivering, bouncing) is free functions over
//! exactly what it touches: the routes (read only: the round-robin cursor is a `Cell`),
//! the sessions and the delivery `Sink`. Must not touch: normal subscriptions, sockets.

use std::sync::Arc;

use smallvec::SmallVec;

use super::deliver::{self, Sink};
use super::effects::ShareLogNote;
use super::journal::{HeldAck, Journal};
use super::routes::Routes;
use super::sessions::Sessions;
use super::{Broker, Cast};
use crate::protocol::{PacketId, QoS, SubscriptionOptions};
use crate::session::{Message, Outgoing, Session, SubIds};
use crate::store::{MsgId, Record};

/// How often a shared delivery may bounce to another member before it is kept or dropped.
const REDISPATCH_MAX: u8 = 4;

/// One member of a share group, wherever its session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareMember {
    /// The member session's home shard.
    pub shard: usize,
    /// Sessions slab key on that shard.
    pub session: usize,
    /// Session uid (guards against a reused slab key).
    pub uid: u64,
    /// Options granted.
    pub options: SubscriptionOptions,
    /// Subscription Identifier.
    pub sub_id: Option<u32>,
    /// Connected right now.
    pub online: bool,
}

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareOp {
    /// Subscribed (or re-subscribed with new options).
    Join,
    /// Unsubscribed, or its session ended.
    Leave,
    /// Connected or disconnected.
    Online(bool),
}

/// Members of one group for one filter.
#[derive(Debug)]
pub struct ShareGroup {
    /// `$share/{group}/{filter}`, shared by every delivery that must find its way back.
    pub key: Arc<str>,
    /// Group name.
    pub name: Box<str>,
    /// Members in join order.
    pub members: Vec<ShareMember>,
    /// Round-robin position (a `Cell`: matching walks the trie by shared reference).
    pub cursor: std::cell::Cell<usize>,
}

/// The groups of one filter.
pub type ShareGroups = SmallVec<[ShareGroup; 1]>;

/// Where a shared delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landed {
    /// A session of this shard took it (delivered, queued, or dropped and counted): its
    /// records, if any, are in this shard's log.
    Here,
    /// Cast to a member on another shard.
    Away,
    /// No member took it: the caller keeps it (a move), returns it to the member it came
    /// from, or drops it (a message no member was online for).
    Nowhere,
}

/// A shared delivery sent to the member's shard.
#[derive(Debug)]
pub struct ShareDelivery {
    /// The message.
    pub msg: Arc<Message>,
    /// Chosen member.
    pub member: ShareMember,
    /// The group key, for another choice if the member is gone.
    pub key: Arc<str>,
    /// Bounces so far.
    pub hops: u8,
    /// Set when the delivery came over the bus for a member gone from its shard and that
    /// shard forwarded it on: the receiver answers `Cast::Settled` once it is durable
    /// wherever it landed (`None` for the first hop, which the sender's barrier covers).
    pub settle: Option<SettleToken>,
    /// The member whose session gave it up (a move, [`Broker::move_shared`]): where no
    /// other member takes it, it goes back there, as it would have stayed had the move
    /// found no member. `None` for a message routed fresh (no member online: nobody's).
    pub from: Option<ShareMember>,
    /// With `from`, when its session is stored: that delivery's message id in the log of
    /// `from`'s shard, whose end waits there for this move (`HeldAck::ShareMoved`). Back
    /// with that member, the delivery takes the record over ([`place`]).
    pub from_msg: Option<MsgId>,
}

/// The token of a shared delivery forwarded on by shard `shard` (its number `token`
/// there): answered with `Cast::Settled` to `shard` (see `journal::settle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleToken {
    /// The forwarding shard, which the answer goes to.
    pub shard: usize,
    /// Its number for the delivery.
    pub token: u64,
}

impl ShareGroup {
    /// The next online member after the cursor, skipping `exclude` (a session uid).
    fn pick(&self, exclude: u64) -> Option<ShareMember> {
        let n = self.members.len();
        let start = self.cursor.get();
        for i in 0..n {
            let m = self.members[(start + i) % n];
            if m.online && m.uid != exclude {
                self.cursor.set((start + i + 1) % n);
                return Some(m);
            }
        }
        None
    }
}

/// Split `$share/{group}/{filter}` (already validated at subscribe time).
pub(super) fn split_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("$share/")?.split_once('/')
}

impl<X> Broker<X> {
    /// A local session joins, leaves or changes online state in a group: apply it here and
    /// tell every other shard (acknowledged like interest changes).
    pub(super) fn share_update(
        &mut self,
        group: &str,
        filter: &str,
        member: ShareMember,
        op: ShareOp,
    ) {
        self.apply_share(group, filter, member, op);
        let from = self.shard_id;
        self.broadcast_acked(|seq| Cast::Share {
            from,
            group: group.into(),
            filter: filter.into(),
            member,
            op,
            seq,
        });
    }

    /// Apply a membership change to this shard's replica.
    pub(super) fn apply_share(
        &mut self,
        group: &str,
        filter: &str,
        member: ShareMember,
        op: ShareOp,
    ) {
        let same = |m: &ShareMember| m.shard == member.shard && m.uid == member.uid;
        if op == ShareOp::Join {
            let groups = self
                .routes
                .share_groups_mut()
                .entry_or_insert_with(filter, ShareGroups::new);
            let g = match groups.iter().position(|g| &*g.name == group) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(ShareGroup {
                        key: format!("$share/{group}/{filter}").into(),
                        name: group.into(),
                        members: Vec::new(),
                        cursor: std::cell::Cell::new(0),
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            match g.members.iter_mut().find(|m| same(m)) {
                Some(m) => *m = member,
                None => g.members.push(member),
            }
            return;
        }
        let Some(groups) = self.routes.share_groups_mut().get_mut(filter) else {
            return;
        };
        let Some(gi) = groups.iter().position(|g| &*g.name == group) else {
            return;
        };
        let g = &mut groups[gi];
        match op {
            ShareOp::Online(on) => g
                .members
                .iter_mut()
                .filter(|m| same(m))
                .for_each(|m| m.online = on),
            _ => g.members.retain(|m| !same(m)),
        }
        if g.members.is_empty() {
            groups.remove(gi);
            if groups.is_empty() {
                self.routes.share_groups_mut().remove(filter);
            }
        }
    }

    /// Choose one member of every group matching the message and send it there.
    /// Returns whether any group matched.
    pub(super) fn dispatch_shared(&mut self, msg: &Arc<Message>, now_ms: u64) -> bool {
        let me = self.shard_id;
        let (routes, sessions, mut sink) = self.parts();
        dispatch(routes, sessions, &mut sink, me, msg, now_ms)
    }

    /// In a cluster: deliver `msg` to one online member of each matching group that has no
    /// member on another node (`remote_shares`); the groups served. A group with no online
    /// member here is left to the cluster (its queue keeps the message for a member).
    pub(super) fn dispatch_local_shared(
        &mut self,
        msg: &Arc<Message>,
        now_ms: u64,
    ) -> Vec<Arc<str>> {
        if self.routes.share_groups().is_empty() {
            return Vec::new();
        }
        let remote = std::mem::take(&mut self.remote_shares);
        let me = self.shard_id;
        let (routes, sessions, mut sink) = self.parts();
        let served = dispatch_local(routes, sessions, &mut sink, me, msg, &remote, now_ms);
        self.remote_shares = remote;
        served
    }

    /// A shared delivery for a session of this shard (from the bus).
    ///
    /// A stored member that went offline before the delivery came (the sender's replica
    /// did not know yet) takes it into its queue, logged, and then moves it on as it moved
    /// its other deliveries when it went offline: so each hop is durable before the one
    /// before it is logged gone (a plain bounce would be covered by the sender's barrier
    /// for the first hop only).
    ///
    /// Any other delivery for a member gone from here is forwarded on to another member
    /// with a settle token: this shard's barrier answers wait for its answer, so the
    /// sender's barrier covers the hop after this one too (a clean member's shard logs
    /// nothing of its own). A moved delivery that finds no other member goes back to the
    /// member it came from ([`ShareDelivery::from`]), forwarded the same way; one routed
    /// fresh is dropped (no member online). One that came forwarded is answered once it is
    /// durable here, and beyond (`journal::settle`).
    pub(super) fn on_share_delivery(&mut self, mut d: ShareDelivery, now_ms: u64) {
        let parent = d.settle.take();
        let me = self.shard_id;
        let from = self.fx.outbox.len();
        // At most twice: for its member, then for the member it came from if that one
        // lives here (then `back` is the member tried, and it goes no further).
        loop {
            let m = d.member;
            if self.stored_offline(m) {
                let (_, sessions, mut sink) = self.parts();
                if super::access::may_read(sessions, &mut sink, m.session, &d.msg.topic) {
                    let hops = d.hops;
                    place(sessions, &mut sink, d, now_ms);
                    // One that bounced as often as allowed stays (chains end).
                    if hops < REDISPATCH_MAX {
                        self.move_shared(m.session, now_ms);
                    }
                    // Logged here (this turn): what `move_shared` sends on waits for this
                    // shard's own barriers (`HeldAck::ShareMoved`).
                    self.owe_settle(parent, None);
                    return;
                }
            }
            let (msg, key, hops) = (d.msg.clone(), d.key.clone(), d.hops);
            let (origin, origin_msg) = (d.from, d.from_msg);
            let (routes, sessions, mut sink) = self.parts();
            let landed = deliver_shared(routes, sessions, &mut sink, me, d, now_ms);
            let back = origin.filter(|o| landed == Landed::Nowhere && !same_member(o, &m));
            let Some(o) = back else {
                if let (Landed::Nowhere, Some(v)) = (landed, self.fx.share_unplaced.as_mut()) {
                    // Routed fresh while no member was online, or its session ended.
                    v.push(msg);
                }
                break;
            };
            d = ShareDelivery {
                msg,
                member: o,
                key,
                hops: hops.saturating_add(1),
                settle: None,
                from: origin,
                from_msg: origin_msg,
            };
            if o.shard != me {
                self.fx
                    .outbox
                    .push((o.shard, Cast::ShareDeliver(Box::new(d))));
                break;
            }
        }
        let child = self.settle_forwarded(from);
        self.owe_settle(parent, child);
    }

    /// Whether member `m` is a stored session of this shard that is offline now (with a
    /// store: it takes a delivery into its logged queue and moves it on from there).
    fn stored_offline(&self, m: ShareMember) -> bool {
        self.journal.is_some()
            && self.sessions.get(m.session).is_some_and(|x| {
                x.uid == m.uid
                    && x.logged
                    && !x
                        .link
                        .is_some_and(|k| self.links.get(k).is_some_and(|l| l.is_connected()))
            })
    }

    /// The delivery handled from outbox index `from` on was forwarded to another shard
    /// (`deliver_shared` forwards one at most once): give that `ShareDeliver` a settle
    /// token, if it carries a QoS 1/2 message and this shard logs. Returns the token.
    fn settle_forwarded(&mut self, from: usize) -> Option<u64> {
        let j = self.journal.as_mut()?;
        let me = self.shard_id;
        let mut child = None;
        for (_, c) in self.fx.outbox.get_mut(from..).unwrap_or_default() {
            if let Cast::ShareDeliver(d) = c {
                if d.msg.qos != QoS::AtMostOnce && d.settle.is_none() {
                    let token = j.issue_settle();
                    d.settle = Some(SettleToken { shard: me, token });
                    child = Some(token);
                }
            }
        }
        child
    }

    /// A forwarded delivery (`parent`, if it came with a token) was handled: answer it once
    /// this turn's records are durable and `child` (its token forwarding it on) is
    /// answered; at once without a log.
    fn owe_settle(&mut self, parent: Option<SettleToken>, child: Option<u64>) {
        let Some(p) = parent else {
            return;
        };
        match self.journal.as_mut() {
            Some(j) => j.owe_settle(p.shard, p.token, child),
            None => {
                let from = self.shard_id;
                let token = p.token;
                self.fx
                    .outbox
                    .push((p.shard, Cast::Settled { from, token }));
            }
        }
    }

    /// A peer answered settle token `token` (see [`Broker::on_share_delivery`]).
    pub(super) fn on_settled(&mut self, token: u64) {
        if let Some(j) = self.journal.as_mut() {
            j.settled(token);
        }
    }

    /// A message from the cluster for one member of share group `group` on `filter`:
    /// NATS (or the group's JetStream queue) chose this node; choose one online member
    /// here. False when there is none (counted as dropped; a queue message is given back).
    pub(super) fn deliver_cluster_shared(
        &mut self,
        msg: Arc<Message>,
        group: &str,
        filter: &str,
        now_ms: u64,
    ) -> bool {
        let key: Arc<str> = format!("$share/{group}/{filter}").into();
        if self.redispatch(msg, &key, 0, (None, None), now_ms) == Landed::Nowhere {
            self.fx.stats.dropped_queue += 1;
            return false;
        }
        true
    }

    /// Send a shared message to another online member of its group than `exclude`
    /// (moved from member `from.0`, if it was, whose delivery in this log is `from.1`).
    /// [`Landed::Nowhere`] when there is none (the caller keeps or drops it).
    fn redispatch(
        &mut self,
        msg: Arc<Message>,
        key: &Arc<str>,
        exclude: u64,
        from: (Option<ShareMember>, Option<MsgId>),
        now_ms: u64,
    ) -> Landed {
        let me = self.shard_id;
        let (routes, sessions, mut sink) = self.parts();
        let bounce = Bounce {
            msg,
            key,
            exclude,
            hops: 0,
            from: from.0,
            from_msg: from.1,
        };
        redispatch(routes, sessions, &mut sink, me, bounce, now_ms)
    }

    /// A session lost its connection: it goes offline in its groups, and its unacknowledged
    /// or queued shared deliveries move to other members [MQTT-4.8.2-5 ff.]. A stored
    /// session's log follows each move: the new member's records (if it is stored) come
    /// first, then the end of the old one's, in this turn's batch when the new member lives
    /// here; when it lives on another shard, the old one's end is logged only once that
    /// shard's records are durable ([`HeldAck::ShareMoved`]). Either way a cut leaves the
    /// delivery with one member or both, never with neither.
    pub(super) fn share_member_offline(&mut self, s: usize, now_ms: u64) {
        if self.set_share_online(s, false) {
            self.move_shared(s, now_ms);
        }
    }

    /// Move offline session `s`'s queued shared deliveries, and its QoS 1 ones in flight,
    /// to other members (see [`Broker::share_member_offline`]).
    fn move_shared(&mut self, s: usize, now_ms: u64) {
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        let (uid, logged) = (sess.uid, sess.logged && self.journal.is_some());
        let expiry_s = sess.expiry_s;
        let from = self.fx.outbox.len();
        let mut away = Vec::new();
        for (out, pid) in sess.take_shared() {
            let Some(key) = out.share.clone() else {
                continue;
            };
            let stored = logged && out.sid != 0;
            if let (Some(j), true) = (self.journal.as_mut(), stored) {
                // A member here takes the message's id over (its only other reference).
                j.adopt_msg(&out.msg, MsgId(out.sid));
            }
            // Where nobody takes it, it comes back here (a session that outlives its
            // connection keeps it, as `keep_shared` does when nobody is online here).
            let back = self.member_of(s, &key).filter(|_| expiry_s > 0);
            let back_msg = back.filter(|_| stored).map(|_| MsgId(out.sid));
            let landed = self.redispatch(out.msg.clone(), &key, uid, (back, back_msg), now_ms);
            if let Some(j) = self.journal.as_mut() {
                j.forget_adopted();
            }
            match landed {
                Landed::Here if stored => {
                    self.log_delivery_gone(s, out.sid, pid);
                    self.note_moved_off(s, MsgId(out.sid));
                }
                Landed::Away if stored => {
                    // Queued in this log until the peer's records are durable: a held
                    // `DeliveryDone` could meet the packet id reused by then.
                    if pid.is_some() {
                        self.log_requeued(s, &out, pid);
                    }
                    away.push(MsgId(out.sid));
                }
                Landed::Here | Landed::Away => {}
                Landed::Nowhere => self.keep_shared(s, out, pid, stored),
            }
        }
        // A link closed at the end of a turn moves after that turn's `journal_end_turn`:
        // its casts count for the next barrier, which `ShareMoved` then waits for.
        self.count_sent(from);
        if let (Some(j), false) = (self.journal.as_mut(), away.is_empty()) {
            j.hold(HeldAck::ShareMoved {
                session: s,
                uid,
                msgs: away,
            });
        }
    }

    /// Nobody else can take a shared delivery of session `s` (in flight under `pid`, or
    /// queued): it goes to the back of the queue for the session's return, or is dropped
    /// (counted) when the queue is full; `stored`: its log follows, in the same order.
    fn keep_shared(&mut self, s: usize, out: Outgoing, pid: Option<PacketId>, stored: bool) {
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        if out.qos == QoS::AtMostOnce {
            return;
        }
        let kept = out.clone();
        if !sess.enqueue(out, &self.limits) {
            self.fx.stats.dropped_queue += 1;
            if stored {
                self.log_delivery_gone(s, kept.sid, pid);
            }
            return;
        }
        if stored {
            self.log_requeued(s, &kept, pid);
        }
    }

    /// The peers that took session `s`'s shared deliveries `msgs` (in this log) have made
    /// their records durable (the epoch's barrier): log the deliveries gone from `s`.
    pub(super) fn share_moved_durable(&mut self, s: usize, uid: u64, msgs: Vec<MsgId>) {
        let sess = self.sessions.get(s).filter(|x| x.uid == uid && x.logged);
        let (Some(j), Some(sess)) = (self.journal.as_mut(), sess) else {
            return;
        };
        for msg in msgs {
            j.log(Record::DeliveryDropped {
                client_id: (&*sess.client_id).into(),
                msg,
            });
            if let Some(v) = self.fx.share_log.as_mut() {
                v.push(ShareLogNote::MovedOff {
                    client: sess.client_id.clone(),
                    id: msg,
                    lsn: j.last_lsn(),
                });
            }
        }
    }

    /// Session `s`'s stored delivery `id` was just logged gone for a move: note it for
    /// the simulation ([`super::Effects::share_log`]).
    fn note_moved_off(&mut self, s: usize, id: MsgId) {
        let (Some(v), Some(j), Some(sess)) = (
            self.fx.share_log.as_mut(),
            self.journal.as_ref(),
            self.sessions.get(s),
        ) else {
            return;
        };
        v.push(ShareLogNote::MovedOff {
            client: sess.client_id.clone(),
            id,
            lsn: j.last_lsn(),
        });
    }

    /// Session `s`'s stored delivery of message `sid` left it (moved to another member
    /// here, or dropped): log its end, in flight under `pid` or queued (the id is the
    /// delivery's own: [`super::journal::Journal::store_shared_msg`]).
    fn log_delivery_gone(&mut self, s: usize, sid: u64, pid: Option<PacketId>) {
        let (Some(j), Some(sess)) = (self.journal.as_mut(), self.sessions.get(s)) else {
            return;
        };
        let client_id = (&*sess.client_id).into();
        j.log(match pid {
            Some(packet_id) => Record::DeliveryDone {
                client_id,
                packet_id,
            },
            None => Record::DeliveryDropped {
                client_id,
                msg: MsgId(sid),
            },
        });
    }

    /// Session `s`'s stored delivery `out` (in flight under `pid`, or queued) is queued
    /// again at the back: log it queued, then its old place gone. A cut between the two
    /// leaves both (a duplicate), never neither.
    fn log_requeued(&mut self, s: usize, out: &Outgoing, pid: Option<PacketId>) {
        let (Some(j), Some(sess)) = (self.journal.as_mut(), self.sessions.get(s)) else {
            return;
        };
        // Queued again and the old place gone reach the disk together: a torn batch
        // keeping the first alone would leave the session the delivery twice.
        let run = j.begin_run();
        j.log(Record::DeliveryQueued {
            client_id: (&*sess.client_id).into(),
            msg: MsgId(out.sid),
            qos: out.qos as u8,
            retain: out.retain,
            sub_ids: out.sub_ids.as_slice().into(),
            txn: out.msg.txn,
        });
        deliver::log_share(j, sess, out.share.as_deref());
        // The oldest unsent delivery of the id is the old place, not the one just queued.
        self.log_delivery_gone(s, out.sid, pid);
        if let Some(j) = self.journal.as_mut() {
            j.end_run(run);
        }
    }

    /// A session (re)connected: it is online again in every group it belongs to.
    pub(super) fn share_member_online(&mut self, s: usize) {
        self.set_share_online(s, true);
    }

    /// Tell every shard that session `s` is on- or offline in each of its share groups.
    /// Returns whether it belongs to any.
    fn set_share_online(&mut self, s: usize, online: bool) -> bool {
        let Some(sess) = self.sessions.get(s) else {
            return false;
        };
        let uid = sess.uid;
        let shared: Vec<(Box<str>, crate::session::SubState)> = sess
            .subs
            .iter()
            .filter(|(f, _)| f.starts_with("$share/"))
            .map(|(f, st)| (f.clone(), *st))
            .collect();
        for (key, st) in &shared {
            if let Some((group, filter)) = split_key(key) {
                let member = self.member(s, uid, st.options, st.sub_id, online);
                self.share_update(group, filter, member, ShareOp::Online(online));
            }
        }
        !shared.is_empty()
    }

    /// Session `s`'s member record (offline) in the group of shared subscription `key`.
    fn member_of(&self, s: usize, key: &str) -> Option<ShareMember> {
        let sess = self.sessions.get(s)?;
        let st = sess.subs.get(key)?;
        Some(self.member(s, sess.uid, st.options, st.sub_id, false))
    }

    /// This shard's member record for session `s`.
    pub(super) fn member(
        &self,
        s: usize,
        uid: u64,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
        online: bool,
    ) -> ShareMember {
        ShareMember {
            shard: self.shard_id,
            session: s,
            uid,
            options,
            sub_id,
            online,
        }
    }
}

/// Choose one member of every group matching `msg` and send it there (the shard where a
/// message enters the broker is the only one that chooses). Returns whether any matched.
fn dispatch<X>(
    routes: &Routes,
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    me: usize,
    msg: &Arc<Message>,
    now_ms: u64,
) -> bool {
    if routes.share_groups().is_empty() {
        return false;
    }
    let mut picks: SmallVec<[(ShareMember, Arc<str>); 4]> = SmallVec::new();
    let mut unplaced = false;
    routes.share_groups().for_each_match(&msg.topic, |groups| {
        for g in groups.iter() {
            match g.pick(0) {
                Some(m) => picks.push((m, g.key.clone())),
                None => unplaced = true,
            }
        }
    });
    if let (true, Some(v)) = (unplaced, sink.fx.share_unplaced.as_mut()) {
        v.push(msg.clone());
    }
    let matched = !picks.is_empty();
    for (member, key) in picks {
        send_pick(routes, sessions, sink, me, msg, member, key, now_ms);
    }
    matched
}

/// Send `msg` to the `member` picked in group `key`, a first hop; a message that lands
/// nowhere (the member gone or offline, and no other online) is reported unplaced.
#[allow(clippy::too_many_arguments)]
fn send_pick<X>(
    routes: &Routes,
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    me: usize,
    msg: &Arc<Message>,
    member: ShareMember,
    key: Arc<str>,
    now_ms: u64,
) {
    let d = ShareDelivery {
        msg: msg.clone(),
        member,
        key,
        hops: 0,
        settle: None,
        from: None,
        from_msg: None,
    };
    let landed = send_share(routes, sessions, sink, me, d, now_ms);
    if let (Landed::Nowhere, Some(v)) = (landed, sink.fx.share_unplaced.as_mut()) {
        v.push(msg.clone());
    }
}

/// `dispatch` for the groups not in `remote` that have an online member: the groups served.
fn dispatch_local<X>(
    routes: &Routes,
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    me: usize,
    msg: &Arc<Message>,
    remote: &std::collections::HashSet<Box<str>>,
    now_ms: u64,
) -> Vec<Arc<str>> {
    let mut picks: SmallVec<[(ShareMember, Arc<str>); 4]> = SmallVec::new();
    routes.share_groups().for_each_match(&msg.topic, |groups| {
        for g in groups.iter().filter(|g| !remote.contains(&*g.key)) {
            if let Some(m) = g.pick(0) {
                picks.push((m, g.key.clone()));
            }
        }
    });
    let mut served = Vec::with_capacity(picks.len());
    for (member, key) in picks {
        send_pick(routes, sessions, sink, me, msg, member, key.clone(), now_ms);
        served.push(key);
    }
    served
}

/// Deliver here if the member lives on this shard, otherwise cast it to its shard.
fn send_share<X>(
    routes: &Routes,
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    me: usize,
    d: ShareDelivery,
    now_ms: u64,
) -> Landed {
    if d.member.shard == me {
        deliver_shared(routes, sessions, sink, me, d, now_ms)
    } else {
        let to = d.member.shard;
        sink.fx.outbox.push((to, Cast::ShareDeliver(Box::new(d))));
        Landed::Away
    }
}

/// A shared delivery for a session of this shard: deliver, or bounce to another member.
/// [`Landed::Nowhere`] when nobody takes it (the caller keeps, returns or drops it).
fn deliver_shared<X>(
    routes: &Routes,
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    me: usize,
    d: ShareDelivery,
    now_ms: u64,
) -> Landed {
    let m = d.member;
    let here = sessions.get(m.session).is_some_and(|s| s.uid == m.uid);
    let online = here
        && sessions.get(m.session).is_some_and(|s| {
            s.link
                .is_some_and(|k| sink.links.get(k).is_some_and(|l| l.is_connected()))
        });
    // A member that may not read the topic is passed over like an offline one.
    let readable = here && super::access::may_read(sessions, sink, m.session, &d.msg.topic);
    if !online || !readable {
        let bounce = Bounce {
            msg: d.msg.clone(),
            key: &d.key,
            exclude: m.uid,
            hops: d.hops,
            from: d.from,
            from_msg: d.from_msg,
        };
        let landed = redispatch(routes, sessions, sink, me, bounce, now_ms);
        // Only a session that outlives its connection keeps a delivery for its return: a
        // clean one whose link is closing ends with it (`deliver` would drop it unseen).
        let keeps = readable && sessions.get(m.session).is_some_and(|s| s.expiry_s > 0);
        if landed != Landed::Nowhere || !keeps {
            return landed;
        }
        // Nobody else can take it: it waits in this member's session for its return (as
        // a departing member's deliveries do), rather than being lost.
    }
    place(sessions, sink, d, now_ms);
    Landed::Here
}

/// Hand shared delivery `d` to its member's session. One that comes back to the member it
/// was moved from while the end of that member's old record is still held
/// ([`HeldAck::ShareMoved`]: the move's barrier waits for this landing's settle token)
/// takes that record over: the held end is cancelled, the delivery is logged queued again
/// under the old id, and its old place is logged gone in the same batch, as `keep_shared`
/// does. So the log holds it once, as memory does. Before, it got a second record, and a
/// power cut before the held end left the member two deliveries of one message: a QoS 2
/// one handed to it twice (power seed 60,111 of the simulation).
///
/// A move onto a member that holds a delivery of the same message through the same group
/// already is dropped: the member has it, and the member it came from ends its own as
/// after any move ([`holds_already`]).
fn place<X>(sessions: &mut Sessions, sink: &mut Sink<'_, X>, d: ShareDelivery, now_ms: u64) {
    let m = d.member;
    if holds_already(sessions, sink, &d) {
        if let Some(sess) = sessions.get(m.session) {
            crate::log_at!(
                crate::log::Level::Information,
                "Share group {}: a moved delivery of a restored message is one {} holds already: dropped.",
                d.key.escape_debug(),
                sess.client_id.escape_debug()
            );
        }
        return;
    }
    if let Some(v) = sink.fx.share_clean.as_mut() {
        if sessions.get(m.session).is_some_and(|s| !s.logged) {
            v.push(d.msg.clone());
        }
    }
    let back = d.from.filter(|o| same_member(o, &m)).and(d.from_msg);
    let mut reclaimed = None;
    if let (Some(id), Some(j)) = (back, sink.journal.as_deref_mut()) {
        if j.reclaim_moved(m.session, m.uid, id) {
            // Its records and the old place's end reach the disk together (one group):
            // a torn batch keeps both or neither, never the member two deliveries.
            reclaimed = Some((id, j.begin_run()));
            // The new delivery refers to the old one's message record, not a new copy.
            j.adopt_msg(&d.msg, id);
        }
    }
    deliver::deliver(sessions, sink, m.session, shared_outgoing(d), now_ms);
    let (Some((id, run)), Some(j)) = (reclaimed, sink.journal.as_deref_mut()) else {
        return;
    };
    j.forget_adopted();
    if let Some(sess) = sessions.get(m.session) {
        // The oldest unsent delivery of the id: the old place (or the only one, if
        // `deliver` did not take it).
        j.log(Record::DeliveryDropped {
            client_id: (&*sess.client_id).into(),
            msg: id,
        });
    }
    j.end_run(run);
}

/// Whether moved delivery `d` is one its member holds already (queued or in flight),
/// through the same group. Only a message given its share identity before this start
/// is looked for: until a restart a delivery is with one member at a time (a move takes
/// it from the first before it reaches the next), but a power cut during a move between
/// two stored members may leave it in both their logs (the move's rule: never with
/// neither), and after the restart each holds a copy restored from its own shard's log.
/// When the first one's copy moved on to the second, the second took it twice: a QoS 2
/// message handed to its application twice (power seed 80,663 of the simulation). The
/// copies are separate messages then, so they are told apart by the share identity both
/// logs kept (`Message::share_id`, decision 0022).
fn holds_already<X>(sessions: &Sessions, sink: &Sink<'_, X>, d: &ShareDelivery) -> bool {
    let id = d.msg.share_id;
    let restored = sink
        .journal
        .as_deref()
        .is_some_and(|j| j.restored_share_id(id));
    if d.from.is_none() || !restored {
        return false;
    }
    let Some(sess) = sessions
        .get(d.member.session)
        .filter(|s| s.uid == d.member.uid)
    else {
        return false;
    };
    let same = |o: &Outgoing| o.msg.share_id == id && o.share.as_deref() == Some(&*d.key);
    sess.inflight().iter().any(|f| same(&f.out))
        || sess.queue.iter().any(same)
        || sink
            .journal
            .as_deref()
            .is_some_and(|j| j.share_done(sess.uid, id, &d.key))
}

/// Log that stored session `sess` completed (PUBCOMP) its shared QoS 2 delivery `out`
/// through `group`, before the delivery's end, when another member's log may hold a
/// copy: the delivery was moved here from a stored member, whose end of it may not be
/// durable yet, or its message was restored (both logs may have kept it). A power cut
/// before that member's end is durable restores its copy alone, and when that copy
/// moved onto this member again it was handed over twice; restored, the mark makes
/// [`holds_already`] drop that move (`Journal::share_done`, decision 0023). A delivery
/// with one copy only, the usual case, logs nothing more.
pub(super) fn log_completed(j: &mut Journal, sess: &Session, out: &Outgoing, group: &str) {
    let id = out.msg.share_id;
    if !sess.logged || id == 0 || !(out.moved || j.restored_share_id(id)) {
        return;
    }
    if let Some((group, filter)) = split_key(group) {
        j.log(Record::ShareCompleted {
            client_id: (&*sess.client_id).into(),
            share_id: id,
            group: group.into(),
            filter: filter.into(),
        });
    }
}

/// Whether two member records are the same session.
fn same_member(a: &ShareMember, b: &ShareMember) -> bool {
    a.shard == b.shard && a.uid == b.uid
}

/// Session `sess` ends (removed or retiring) holding shared deliveries that no move took
/// (a QoS 2 one already sent, or one no other member was online for): they end with it.
/// Recorded in `unplaced` when `Some` (the simulation's oracle owes them to nobody:
/// [`super::Effects::share_unplaced`]).
pub(super) fn lost_with(unplaced: &mut Option<Vec<Arc<Message>>>, sess: &crate::session::Session) {
    let Some(v) = unplaced.as_mut() else {
        return;
    };
    let held = sess
        .inflight()
        .iter()
        .map(|f| &f.out)
        .chain(sess.queue.iter());
    for out in held.filter(|o| o.share.is_some() && o.qos != QoS::AtMostOnce) {
        v.push(out.msg.clone());
    }
}

/// The delivery of a shared message to its chosen member, with the member's options.
fn shared_outgoing(d: ShareDelivery) -> Outgoing {
    let m = d.member;
    Outgoing {
        qos: d.msg.qos.min(m.options.qos),
        retain: m.options.retain_as_published && d.msg.retain,
        sub_ids: m.sub_id.into_iter().collect::<SubIds>(),
        share: Some(d.key),
        sid: 0,
        moved: d.from_msg.is_some(),
        msg: d.msg,
    }
}

/// A shared message looking for another member of its group.
struct Bounce<'k> {
    msg: Arc<Message>,
    key: &'k Arc<str>,
    /// The member (session uid) it must not go to.
    exclude: u64,
    /// Bounces so far.
    hops: u8,
    /// The member it was moved from, if it was ([`ShareDelivery::from`]).
    from: Option<ShareMember>,
    /// That member's delivery in its log ([`ShareDelivery::from_msg`]).
    from_msg: Option<MsgId>,
}

/// Send a shared message to another online member of its group. [`Landed::Nowhere`] when
/// there is none, or it has bounced `REDISPATCH_MAX` times (the caller keeps or drops it).
fn redispatch<X>(
    routes: &Routes,
    sessions: &mut Sessions,
    sink: &mut Sink<'_, X>,
    me: usize,
    b: Bounce<'_>,
    now_ms: u64,
) -> Landed {
    if b.hops >= REDISPATCH_MAX {
        return Landed::Nowhere;
    }
    let Some((group, filter)) = split_key(b.key) else {
        return Landed::Nowhere;
    };
    let pick = routes
        .share_groups()
        .get(filter)
        .and_then(|gs| gs.iter().find(|g| &*g.name == group))
        .and_then(|g| g.pick(b.exclude));
    let Some(member) = pick else {
        return Landed::Nowhere;
    };
    let d = ShareDelivery {
        msg: b.msg,
        member,
        key: b.key.clone(),
        hops: b.hops + 1,
        settle: None,
        from: b.from,
        from_msg: b.from_msg,
    };
    send_share(routes, sessions, sink, me, d, now_ms)
}
