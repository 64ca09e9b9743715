//! The broker's side of the store: logging state changes, holding acks, restoring state.
//!
//! Owns no state of its own: it drives the shard's [`Journal`] from the broker's cold
//! paths (sessions, subscriptions, retained messages, inbound QoS 2) and installs a
//! recovered part of the store at start-up. Invariant: with persistence off every function
//! here is a no-op or sends at once, so the broker behaves exactly as in memory mode. Must
//! not touch: sockets, the log's files (the journal owns them).

use std::sync::Arc;

use super::connect::{timer_key, TIMER_SESSION_EXPIRY, TIMER_WILL};
use super::deliver;
use super::gate::PendingSubAck;
use super::journal::{self, HeldAck, Journal};
use super::shared::{ShareMember, ShareOp};
use super::{Broker, Cast};
use crate::protocol::{self, Packet, PacketId};
use crate::session::{FlightState, Message, Outgoing, StoredWill, SubState};
use crate::store::{
    DeliveryState, LiveState, MsgId, Record, SessionInfo, SessionState, StoredMessage, Will,
};

pub use super::journal::RetainedEntry;

/// What one shard's restored sessions subscribe to, for every other shard to apply before
/// any shard runs ([`Broker::restored_interest`], [`Broker::learn_restored_interest`]).
#[derive(Debug, Default, Clone)]
pub struct RestoredInterest {
    /// The filters of normal subscriptions.
    filters: Vec<String>,
    /// Share-group memberships (group, filter, member), every member offline: a restored
    /// session has no connection.
    shares: Vec<(Box<str>, Box<str>, ShareMember)>,
}

/// While the store cannot write, 3.x publishers are paused by their held acks until this
/// many bytes wait unwritten; past it, a 3.x connection that publishes QoS 1/2 is closed.
pub const STALL_UNWRITTEN_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Where the PUBREC of a new QoS 2 message goes ([`Broker::pubrec_commit`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct PubRecTo {
    /// Session key.
    pub session: usize,
    /// The session's uid (a reused key is another session).
    pub uid: u64,
    /// Link key.
    pub link: usize,
    /// Link generation.
    pub gen: u32,
    /// Whether that link is still connected (otherwise only the commit is made).
    pub live: bool,
}

impl<X> Broker<X> {
    /// Use `j` as this shard's log from now on (persistence on).
    pub fn attach_journal(&mut self, j: Journal) {
        self.journal = Some(j);
    }

    /// Records appended after this turn's write (closes at the end of a turn): the shard
    /// must not sleep before writing them.
    pub fn journal_unwritten(&self) -> bool {
        self.journal.as_ref().is_some_and(Journal::unwritten)
    }

    /// Manual mode: one round of the log's sync (`sync`) or checkpoint work; see
    /// [`Journal::background_step`].
    pub fn journal_background(&mut self, sync: bool) -> bool {
        self.journal
            .as_mut()
            .is_some_and(|j| j.background_step(sync))
    }

    /// Whether the store cannot write now (new QoS 1/2 publishes are refused).
    pub fn store_stalled(&self) -> bool {
        self.journal.as_ref().is_some_and(Journal::stalled)
    }

    /// (failed log writes, publishes refused while the store could not write).
    pub fn store_errors(&self) -> (u64, u64) {
        self.journal
            .as_ref()
            .map_or((0, 0), |j| (j.write_errors, j.refused))
    }

    /// A new QoS 1/2 PUBLISH while the store cannot write: never acknowledged as a
    /// success. 5.0 gets PUBACK/PUBREC 0x97 Quota exceeded (at once, unless an earlier ack
    /// of the link is held: then behind it). 3.x has no refusal: the publish is taken and
    /// its ack held until the store writes again (the client's in-flight window pauses
    /// it); past [`STALL_UNWRITTEN_BYTES_MAX`] unwritten bytes its connection is closed
    /// instead (nothing was acknowledged, so it resends after reconnecting).
    /// Returns `None` when the publish should go ahead.
    pub(super) fn refuse_while_stalled(
        &mut self,
        key: usize,
        p: &crate::protocol::Publish<'_>,
    ) -> Option<super::Verdict> {
        let Some(link) = self.links.get(key) else {
            return Some(super::Verdict::Close);
        };
        let (gen, v5) = (link.gen, link.version == protocol::Version::V5);
        let j = self.journal.as_mut()?;
        if !v5 && j.unwritten_bytes() < STALL_UNWRITTEN_BYTES_MAX {
            return None;
        }
        j.refused += 1;
        if !v5 {
            return Some(self.close(key, None, "store cannot write"));
        }
        let held = j.holds_for(key, gen);
        let reason = protocol::ReasonCode::QuotaExceeded;
        let ack = |pid| protocol::Ack {
            packet_id: pid,
            reason,
            properties: protocol::Properties::default(),
        };
        let packet = match (p.qos, p.packet_id) {
            (protocol::QoS::ExactlyOnce, Some(pid)) => Packet::PubRec(ack(pid)),
            (_, Some(pid)) => Packet::PubAck(ack(pid)),
            _ => return None,
        };
        if held {
            self.send_durable(key, &packet);
        } else {
            self.send(key, &packet);
        }
        Some(super::Verdict::Continue)
    }

    /// Shared deliveries this shard forwarded on with a settle token since its log was
    /// attached (0 with persistence off): a figure for the simulation.
    pub fn settle_tokens_issued(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::settles_issued)
    }

    /// The ticket up to which this shard's log is durable (`None` with persistence off):
    /// for the simulation, which compares it with [`super::Effects::share_log`].
    pub fn journal_durable_lsn(&self) -> Option<crate::store::Lsn> {
        self.journal.as_ref().map(Journal::durable_lsn)
    }

    /// Acks the journal still holds (0 with persistence off).
    pub fn held_acks(&self) -> usize {
        self.journal.as_ref().map_or(0, Journal::held)
    }

    /// Send `packet` to link `key` once this turn's records are durable (at once with
    /// persistence off).
    pub(super) fn send_durable(&mut self, key: usize, packet: &Packet<'_>) {
        // Behind the link's acknowledgements that wait for the cluster, in order.
        if self.ride_behind_cluster(key, packet) {
            return;
        }
        let Some(link) = self.links.get(key) else {
            return;
        };
        let (gen, version) = (link.gen, link.version);
        match self.journal.as_mut() {
            Some(j) => j.hold_packet(key, gen, version, packet),
            None => self.send(key, packet),
        }
    }

    /// The LSN of the last record logged so far (`None` with persistence off): a mark for
    /// [`Broker::hold_output_if_logged`].
    pub(super) fn journal_mark(&self) -> Option<crate::store::Lsn> {
        self.journal.as_ref().map(Journal::last_lsn)
    }

    /// A CONNECT is accepted on link `key`: if it logged records since `mark` (a stored
    /// session, or one whose end changed the store), hold the link's output, its CONNACK
    /// and everything written after it, until they are durable (the journal releases it
    /// in order with the acks of this turn). Nothing is held in memory mode or for a clean
    /// session that logged nothing.
    pub(super) fn hold_output_if_logged(&mut self, key: usize, mark: Option<crate::store::Lsn>) {
        let (Some(j), Some(mark)) = (self.journal.as_mut(), mark) else {
            return;
        };
        if j.last_lsn() == mark {
            return;
        }
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        link.output_held = true;
        j.hold(HeldAck::Output {
            link: key,
            gen: link.gen,
        });
    }

    /// The records behind link `key`'s CONNACK are durable: flush its output (in the
    /// order written), and close it now if it was to close meanwhile.
    fn release_output(&mut self, key: usize, gen: u32) {
        let Some(link) = self.links.get_mut(key).filter(|l| l.gen == gen) else {
            return;
        };
        if !std::mem::take(&mut link.output_held) {
            return;
        }
        self.fx.mark_dirty(key, link);
        if link.close_deferred {
            if let Some(t) = link.timer.take() {
                self.timers.cancel(t);
            }
            self.fx.requeue_closing(key, link);
        }
    }

    /// Hold a SUBACK the gate released until durable; `false` with persistence off.
    pub(super) fn hold_suback(&mut self, p: PendingSubAck) -> Result<(), PendingSubAck> {
        match self.journal.as_mut() {
            Some(j) => {
                j.hold(HeldAck::SubAck(p));
                Ok(())
            }
            None => Err(p),
        }
    }

    /// End of the shard's turn: barriers to peers, the batch written, durable acks sent.
    pub fn journal_end_turn(&mut self, now_ms: u64) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        for (to, c) in &self.fx.outbox {
            if matches!(c, Cast::Publish(_) | Cast::ShareDeliver(_)) {
                j.sent_publish(*to);
            }
        }
        let (mut barriers, mut answers, mut settled) = (Vec::new(), Vec::new(), Vec::new());
        j.end_turn(now_ms, &mut barriers, &mut answers, &mut settled);
        let from = self.shard_id;
        for (to, seq) in barriers {
            self.fx.outbox.push((to, Cast::Barrier { from, seq }));
        }
        for (to, seq) in answers {
            self.fx.outbox.push((to, Cast::BarrierDone { from, seq }));
        }
        for (to, token) in settled {
            self.fx.outbox.push((to, Cast::Settled { from, token }));
        }
        while let Some(mut acks) = self.journal.as_mut().and_then(Journal::released) {
            for ack in acks.drain(..) {
                self.send_held(ack, now_ms);
            }
            if let Some(j) = self.journal.as_mut() {
                j.reuse_acks(acks);
            }
        }
        let me = self.shard_id;
        let news = self.journal.as_mut().map(Journal::commit_news);
        if let Some(news) = news.filter(|n| !n.is_empty()) {
            for (from, txn) in news {
                for to in (0..self.shards).filter(|&p| p != me) {
                    self.fx.outbox.push((to, Cast::Qos2Committed { from, txn }));
                }
            }
            self.release_parked(now_ms);
        }
    }

    /// The publishes cast from outbox index `from` on count for this turn's barriers, also
    /// when they were made after its `journal_end_turn` (a link closed at the end of the
    /// turn): an ack held behind them then waits for the next barrier, which follows them
    /// on the rings.
    pub(super) fn count_sent(&mut self, from: usize) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        for (to, c) in self.fx.outbox.get(from..).unwrap_or_default() {
            if matches!(c, Cast::Publish(_) | Cast::ShareDeliver(_)) {
                j.sent_publish(*to);
            }
        }
    }

    /// The QoS 2 routing number of a new message from session `s` on link `key`: one when
    /// its packet id will be logged ([`Broker::pubrec_new`]), else 0. Its PUBLISHes wait
    /// for the commit that logs the id, and recovery drops its deliveries if that commit
    /// is not durable: a message the publisher sends again after a power cut is then
    /// routed once, never twice (a delivery made before the cut is kept only if the id
    /// that recognises the resend is durable too).
    ///
    /// In a cluster the PUBREC also waits for the link's answer (`cluster_ack`): the
    /// commit comes once both are in, and the link's store in other nodes' queues, which
    /// does not wait for it, carries the message's [`Qos2Id`](super::cluster::Qos2Id).
    pub(super) fn qos2_txn(&mut self, s: usize, key: usize) -> u64 {
        let logged = self.sessions.get(s).is_some_and(|x| x.logged);
        match self.journal.as_mut() {
            Some(j) if logged && self.links.get(key).is_some() => j.next_txn(self.shard_id),
            _ => 0,
        }
    }

    /// Shard `from` committed its routings up to `txn`: send what waited for them.
    pub(super) fn on_qos2_committed(&mut self, from: usize, txn: u64, now_ms: u64) {
        if let Some(j) = self.journal.as_mut() {
            j.committed(from, txn, false);
            self.release_parked(now_ms);
        }
    }

    /// Send the parked PUBLISHes whose routings are committed, oldest first.
    fn release_parked(&mut self, now_ms: u64) {
        while let Some(ack) = self.journal.as_mut().and_then(Journal::unpark) {
            if let HeldAck::Publish {
                session, uid, hold, ..
            } = ack
            {
                self.release_publish(session, uid, hold, now_ms);
            }
        }
    }

    /// The routing a held PUBLISH must still wait for: its message's, if not committed,
    /// or any (0) while older ones wait.
    fn publish_waits(&self, session: usize, uid: u64, hold: u64) -> Option<u64> {
        let j = self.journal.as_ref()?;
        let txn = self
            .sessions
            .get(session)
            .filter(|x| x.uid == uid)
            .and_then(|x| x.held(hold))
            .filter(|f| f.out.qos == protocol::QoS::ExactlyOnce)
            .map_or(0, |f| f.out.msg.txn);
        if !j.is_committed(txn) {
            return Some(txn);
        }
        j.parked().then_some(0)
    }

    /// Hold `hold` of session `session` (incarnation `uid`) is released: its PUBLISH may
    /// go, to the session's link now if it has one.
    fn release_publish(&mut self, session: usize, uid: u64, hold: u64, now_ms: u64) {
        let released = self
            .sessions
            .get_mut(session)
            .filter(|x| x.uid == uid)
            .and_then(|x| x.release_held(hold));
        if let Some(i) = released {
            self.send_held_publish(session, i, now_ms);
        }
    }

    /// A barrier cast from a peer (see [`Journal`]).
    pub(super) fn on_barrier(&mut self, from: usize, seq: u64, done: bool) {
        if let Some(j) = self.journal.as_mut() {
            if done {
                j.barrier_done(from, seq);
            } else {
                j.barrier(from, seq);
            }
        } else if !done {
            // No log here: everything is as durable as it will ever be.
            let me = self.shard_id;
            self.fx
                .outbox
                .push((from, Cast::BarrierDone { from: me, seq }));
        }
    }

    fn send_held(&mut self, ack: HeldAck, now_ms: u64) {
        match ack {
            HeldAck::Bytes { link, gen, bytes } => {
                let Some(c) = self.links.conn_mut(link) else {
                    return;
                };
                if c.link.gen == gen && c.link.is_connected() {
                    c.tx.buf().extend_from_slice(&bytes);
                    self.fx.mark_dirty(link, &mut c.link);
                }
            }
            HeldAck::SubAck(p) => self.send_suback(p, now_ms),
            HeldAck::Incoming(h) => {
                let taken = self
                    .sessions
                    .get(h.session)
                    .is_some_and(|x| x.uid == h.uid && x.awaiting_rel.contains(&h.pid.get()));
                let txn = h.txn;
                // The commit: the routing is durable everywhere, and so (in the same
                // record) is the id that recognises a resend, and the session's next
                // QoS 2 number.
                let committed = taken && txn != 0 && self.log_qos2_commit(&h);
                if taken && !committed {
                    self.log_incoming(h.session, h.pid, true);
                }
                if txn != 0 && !committed {
                    if let Some(j) = self.journal.as_mut() {
                        j.log(Record::Qos2Committed { txn });
                    }
                    // Its packet id was released early (a PUBREL before the PUBREC), or
                    // its session ended: a number taken is logged all the same.
                    self.log_qos2_next(&h);
                }
                let (link, gen, bytes) = (h.link, h.gen, h.bytes);
                if let Some(j) = self.journal.as_mut() {
                    // Out after the id's record is durable (the next round), the
                    // resends' PUBRECs with it.
                    j.hold(HeldAck::Bytes { link, gen, bytes });
                    for (link, gen, bytes) in h.resends {
                        j.hold(HeldAck::Bytes { link, gen, bytes });
                    }
                    if txn != 0 {
                        j.hold(HeldAck::Commit { txn });
                    }
                }
            }
            HeldAck::Commit { txn } => {
                let origin = Journal::origin_of(txn).unwrap_or(self.shard_id);
                if let Some(j) = self.journal.as_mut() {
                    j.committed(origin, txn, true);
                }
                // Only a shard that runs a bridge needs another turn for it.
                self.fx.bridge_commits_moved |= self.bridges.any_here();
            }
            HeldAck::WillDone { id } => {
                if let Some(j) = self.journal.as_mut() {
                    j.log(Record::WillDone { id });
                }
            }
            HeldAck::Output { link, gen } => self.release_output(link, gen),
            HeldAck::ShareMoved { session, uid, msgs } => {
                self.share_moved_durable(session, uid, msgs)
            }
            HeldAck::Bridge { bridge } => self.fx.bridge_acks.push(bridge),
            HeldAck::BridgeRecords { bridge, batch } => {
                self.fx.bridge_durable.push((bridge, batch))
            }
            HeldAck::Cluster { token } => {
                self.tell_cluster(super::cluster::ToCluster::Settle { token })
            }
            HeldAck::ClusterIn { token, txn, id } => {
                if let Some(j) = self.journal.as_mut() {
                    // The commit, with the id that recognises the message if it comes
                    // again (one record); JetStream hears of it once that is durable.
                    j.log(Record::ClusterReceived { id, txn });
                    for token in std::iter::once(token).chain(j.received(id)) {
                        j.hold(HeldAck::Cluster { token });
                    }
                    j.hold(HeldAck::Commit { txn });
                }
            }
            HeldAck::Publish {
                session, uid, hold, ..
            } => match self.publish_waits(session, uid, hold) {
                Some(txn) => {
                    if let Some(j) = self.journal.as_mut() {
                        j.park(txn, ack);
                    }
                }
                None => self.release_publish(session, uid, hold, now_ms),
            },
        }
    }

    /// Send the PUBLISH of session `s`'s in-flight entry `i`, just released, if the
    /// session is connected. A session that reconnected since it was held gets it on its
    /// new link (`resend_inflight` leaves held deliveries to this).
    fn send_held_publish(&mut self, s: usize, i: usize, now_ms: u64) {
        let Some(sess) = self.sessions.get(s) else {
            return;
        };
        let Some(key) = sess.link.filter(|&k| {
            self.links
                .get(k)
                .is_some_and(|l| l.is_connected() && l.session == Some(s))
        }) else {
            return;
        };
        let Some(f) = sess.inflight().get(i) else {
            return;
        };
        // A held entry is never acknowledged (`Session::on_pubrec` skips it), so it
        // still awaits its first acknowledgement.
        debug_assert_ne!(f.state, FlightState::AwaitComp, "a held entry moved on");
        if f.state == FlightState::AwaitComp {
            return;
        }
        let (pid, out) = (f.pid, f.out.clone());
        let (_, sessions, mut sink) = self.parts();
        if !deliver::write_publish(&mut sink, key, &out, Some(pid), false, now_ms) {
            if let Some(sess) = sessions.get_mut(s) {
                sess.drop_flight(i);
                deliver::log_done(sink.journal.as_deref_mut(), sess, pid);
            }
        }
    }

    /// Log a persistent session's parameters (CONNECT of a session with an expiry). A
    /// stored session resumed with Session Expiry 0 ends in the log instead: it now ends
    /// with its connection, and a crash ends that connection too, so recovery must not
    /// bring it back (before, its record kept the old expiry and the old Will, which the
    /// reconnect had cancelled, and a restart published that Will after its delay). From
    /// here on it is a clean session: its records stop, its new Will is armed (`arm_will`).
    pub(super) fn log_session(&mut self, s: usize, protocol: u8, will: Option<&StoredWill>) {
        let (Some(j), Some(sess)) = (self.journal.as_mut(), self.sessions.get_mut(s)) else {
            return;
        };
        if sess.expiry_s == 0 {
            if std::mem::take(&mut sess.logged) {
                j.log(Record::SessionEnded {
                    client_id: (&*sess.client_id).into(),
                });
            }
            return;
        }
        sess.logged = true;
        let unix = j.unix_ms(self.now_ms);
        let will = will.map(|w| stored_will(w, unix, self.now_ms));
        j.log(Record::SessionCreated(SessionInfo {
            client_id: (&*sess.client_id).into(),
            protocol,
            expiry_interval_s: sess.expiry_s,
            will,
        }));
        if self.cluster.is_some() && sess.qos2_next == 0 {
            // Its QoS 2 numbering starts here, durable with the CONNACK, before any
            // PUBLISH: at a random place, so a session that replaces one lost in a power
            // cut never takes the lost one's numbers (`Qos2Id`).
            sess.qos2_next = qos2_start();
            j.log(Record::Qos2Numbering {
                client_id: (&*sess.client_id).into(),
                next: sess.qos2_next,
            });
        }
    }

    /// A session that is not stored (a clean session) connected with Will `will`: log the
    /// Will (`Record::WillArmed`), so the CONNACK, held until the record is durable, vouches
    /// for it across a power cut; its number goes with it, for the record that ends it
    /// (`WillPending` when published, `WillDone` when not). Nothing for a session without
    /// a Will, a stored one (its session record holds the Will), or memory mode.
    pub(super) fn arm_will(&mut self, s: usize, will: Option<&mut StoredWill>) {
        let (Some(j), Some(w)) = (self.journal.as_mut(), will) else {
            return;
        };
        // A session with an expiry is stored: `log_session` put the Will in its record.
        if self.sessions.get(s).is_none_or(|x| x.expiry_s != 0) {
            return;
        }
        let id = j.next_will_id();
        let unix = j.unix_ms(self.now_ms);
        // Named with its client, whose home shard publishes it after a crash.
        let client_id = self.sessions.get(s).map(|x| (&*x.client_id).into());
        j.log(Record::WillArmed {
            id,
            client_id,
            will: stored_will(w, unix, self.now_ms),
        });
        w.log_id = id;
    }

    /// Install this shard's part of the recovered store: its sessions (offline, their
    /// in-flight messages resent with DUP when they reconnect), their subscriptions, and
    /// every retained message. Nothing is logged: the part is already the log's checkpoint.
    pub fn restore(&mut self, part: &LiveState, retained: &[RetainedEntry], now_ms: u64) {
        let Some(j) = self.journal.take() else {
            return;
        };
        let unix = j.unix_ms(now_ms);
        let msgs = RestoredMessages::new(part, unix, now_ms);
        self.restore_part(part, &msgs, retained, unix, now_ms);
        self.journal = Some(j);
    }

    /// [`Broker::restore`] of the part the attached journal's shadow holds (the journal
    /// was created over it and has logged nothing yet: its messages are all owned, none
    /// shared), without a copy of it: each message is built once, in the engine's form,
    /// and the shadow refers to it (`Journal::share_restored`) instead of keeping its own
    /// copy beside it (the memory of the messages twice, and their page faults).
    pub fn restore_from_journal(&mut self, retained: &[RetainedEntry], now_ms: u64) {
        let Some(mut j) = self.journal.take() else {
            return;
        };
        let unix = j.unix_ms(now_ms);
        let n = j.shadow().messages.len();
        let (mut ids, mut built) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let shared = j.share_restored(|id, m| {
            let msg = Arc::new(restored_message(m, unix, now_ms));
            ids.push(id);
            built.push(Arc::clone(&msg));
            msg
        });
        debug_assert!(shared, "restored after logging");
        let msgs = if shared {
            // Handed over the highest id first.
            ids.reverse();
            built.reverse();
            RestoredMessages::indexed(ids, built)
        } else {
            RestoredMessages::new(j.shadow(), unix, now_ms)
        };
        self.restore_part(j.shadow(), &msgs, retained, unix, now_ms);
        self.restore_share_completed(&mut j);
        self.journal = Some(j);
    }

    /// The shared QoS 2 deliveries the restored sessions completed (`Record::ShareCompleted`)
    /// that a copy restored elsewhere may still move onto them: such a move is dropped
    /// (`shared::holds_already`, decision 0023).
    fn restore_share_completed(&self, j: &mut Journal) {
        let mut marks = Vec::new();
        for st in j.shadow().sessions.values() {
            let sess = self.sessions.find(&st.info.client_id);
            let Some(uid) = sess.and_then(|s| self.sessions.get(s)).map(|s| s.uid) else {
                continue;
            };
            for (id, group, filter) in &st.share_completed {
                marks.push((uid, *id, self.routes.share_key(group, filter)));
            }
        }
        for (uid, id, key) in marks {
            j.note_share_completed(uid, id, &key);
        }
    }

    fn restore_part(
        &mut self,
        part: &LiveState,
        msgs: &RestoredMessages,
        retained: &[RetainedEntry],
        unix: u64,
        now_ms: u64,
    ) {
        // In client id order, as when the shadow's map was ordered: the broker's session
        // keys and timers are handed out in this order.
        for st in part.sessions_by_id() {
            self.restore_session(st, msgs, unix, now_ms);
        }
        // A store written before `$SYS` figures were left out may hold some.
        let kept = retained.iter().filter(|r| !super::sys::is_sys_topic(&r.0));
        for (_, m, stamp, source) in kept {
            let mut msg = journal::from_stored(m, unix, now_ms, *stamp);
            msg.publisher = source.as_ref().map(journal::publisher_of);
            self.retained.store(&Arc::new(msg));
        }
    }

    /// What this shard's restored sessions subscribe to (the filters of their normal
    /// subscriptions, and their share-group memberships, offline), for
    /// [`Broker::learn_restored_interest`] on every other shard.
    pub fn restored_interest(&self) -> RestoredInterest {
        let me = self.shard_id;
        let mut shares = Vec::new();
        for (filter, groups) in self.routes.share_groups().iter() {
            for g in groups.iter() {
                let mine = g.members.iter().filter(|m| m.shard == me);
                shares.extend(mine.map(|m| {
                    let member = ShareMember {
                        online: false,
                        ..*m
                    };
                    (g.name.clone(), Box::from(filter.as_str()), member)
                }));
            }
        }
        RestoredInterest {
            filters: self.routes.local_filters(),
            shares,
        }
    }

    /// Shard `from`'s restored interest, applied before any shard runs. Its `Interest`
    /// and `Share` casts are on the rings too, but a shard may route client input before
    /// it drains them: a connection handed over by a third shard is read as soon as the
    /// handoff is drained, and a ring drain takes at most 1,024 messages a turn. A message
    /// published after the restart would then miss a restored subscriber on `from` (found
    /// by the power-cut simulation, seed 9881), or be routed by a replica that does not
    /// know a restored share group at all (power seed 775: no member was online, so the
    /// message went to nobody either way, but the shard's replica broke the invariant that
    /// every shard holds the same membership, and the simulation's report of a message no
    /// member was online for, `Effects::share_unplaced`, was missing). The casts, applied
    /// later, change nothing.
    pub fn learn_restored_interest(&mut self, from: usize, restored: &RestoredInterest) {
        if from == self.shard_id {
            return;
        }
        for f in &restored.filters {
            self.routes.apply_interest(from, f, true);
        }
        for (group, filter, member) in &restored.shares {
            self.apply_share(group, filter, *member, ShareOp::Join);
        }
    }

    fn restore_session(
        &mut self,
        st: &SessionState,
        msgs: &RestoredMessages,
        unix: u64,
        now_ms: u64,
    ) {
        let info = &st.info;
        let s = self
            .sessions
            .create(&info.client_id, info.expiry_interval_s);
        for sub in st.subscriptions.iter() {
            let state = journal::from_subscription(&sub);
            match &sub.share_group {
                Some(g) => {
                    let full = format!("$share/{g}/{}", sub.filter);
                    self.add_shared(s, &full, g, &sub.filter, state);
                }
                None => {
                    self.add_subscription(s, &sub.filter, state);
                }
            }
        }
        if st.subscriptions.iter().any(|x| x.share_group.is_some()) {
            // Restored sessions are offline: their groups send to other members.
            self.share_member_offline(s, now_ms);
        }
        let limits = self.limits;
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        sess.logged = true;
        sess.qos2_next = st.qos2_next;
        // A shared delivery is tagged with its group again, so it moves on when its
        // member goes offline, as before the restart.
        let routes = &self.routes;
        sess.awaiting_rel = st.incoming_qos2.iter().map(|p| p.get()).collect();
        for d in &st.deliveries {
            let Some(msg) = msgs.get(d.msg) else {
                continue;
            };
            let out = Outgoing {
                msg: msg.clone(),
                qos: journal::qos(d.qos),
                retain: d.retain,
                sub_ids: d.sub_ids.iter().copied().collect(),
                share: d.share.as_ref().map(|(g, f)| routes.share_key(g, f)),
                sid: d.msg.0,
                moved: false,
            };
            match d.packet_id {
                Some(pid) => {
                    let state = match (d.state, out.qos) {
                        (DeliveryState::PubrelSent, _) => FlightState::AwaitComp,
                        (_, protocol::QoS::ExactlyOnce) => FlightState::AwaitRec,
                        _ => FlightState::AwaitAck,
                    };
                    sess.restore_flight(pid, out, state);
                }
                None => {
                    sess.enqueue(out, &limits);
                }
            }
        }
        // New packet ids start above the restored ones: the allocator's fast path takes
        // every id above `next_pid` as free (found by the power-cut simulation: a new
        // delivery reused a restored in-flight id and was never sent).
        let highest = sess
            .inflight()
            .iter()
            .map(|f| f.pid.get())
            .max()
            .unwrap_or(0);
        sess.ids_used_up_to(highest);
        let offline_ms = st
            .disconnected_at_unix_ms
            .map_or(0, |at| unix.saturating_sub(at));
        self.restore_timers(s, info, offline_ms, unix, now_ms);
    }

    /// Arm a restored session's expiry and delayed-Will timers, counting the time it has
    /// been offline; what is already due fires on the first turn.
    fn restore_timers(
        &mut self,
        s: usize,
        info: &SessionInfo<'_>,
        offline_ms: u64,
        unix: u64,
        now_ms: u64,
    ) {
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        let gen = (sess.uid & 0x00ff_ffff) as u32;
        let due = |after_s: u32| now_ms + (u64::from(after_s) * 1000).saturating_sub(offline_ms);
        if info.expiry_interval_s != u32::MAX {
            let at = due(info.expiry_interval_s);
            let t = self
                .timers
                .insert(at, timer_key(TIMER_SESSION_EXPIRY, gen, s));
            sess.expiry_timer = Some((t, at));
        }
        if let Some(w) = &info.will {
            sess.will = Some(Box::new(restored_will(w.clone(), 0, unix, now_ms)));
            let at = due(w.delay_s.min(info.expiry_interval_s));
            sess.will_timer = Some((self.timers.insert(at, timer_key(TIMER_WILL, gen, s)), at));
        }
    }
}

/// A recovered part's messages in the engine's form, found by id for each delivery.
///
/// The ids come sorted (the part's `BTreeMap`) and are kept in a `Vec` in that order.
/// When they are dense (`first, first + 1, …`: a store filled without deletions, or a
/// merge, which renumbers from the next free id) an id's place is `id - first`; when
/// they are spread over at most [`SLOTS_PER_MESSAGE_MAX`] times their number (a log's
/// counter after done messages were dropped) a table of places indexed by `id - first`
/// finds it; only sparser ids fall back to a binary search. This replaced a `HashMap`
/// built for the restore: 1M SipHash inserts and lookups, each a cache miss in a table
/// of 1M entries (`docs/benchmarks.md`, "Recovery reading in pieces").
struct RestoredMessages {
    first: u64,
    ids: Vec<MsgId>,
    msgs: Vec<Arc<Message>>,
    place: Place,
}

/// How [`RestoredMessages`] finds an id's place.
enum Place {
    /// `id - first`.
    Dense,
    /// `table[id - first]`, `u32::MAX` for no message.
    Table(Vec<u32>),
    /// A binary search of the ids.
    Search,
}

/// The largest id span per message for which [`Place::Table`] is built (4 bytes a slot).
const SLOTS_PER_MESSAGE_MAX: u64 = 8;

impl RestoredMessages {
    /// The engine's messages of `part`'s owned ones (copied: `part` keeps its own).
    fn new(part: &LiveState, unix: u64, now_ms: u64) -> RestoredMessages {
        let n = part.messages.len();
        let (mut ids, mut msgs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (id, m) in &part.messages {
            ids.push(*id);
            msgs.push(Arc::new(journal::from_stored(m, unix, now_ms, 0)));
        }
        RestoredMessages::indexed(ids, msgs)
    }

    /// Messages `msgs` under ids `ids` (increasing; one id a message).
    fn indexed(ids: Vec<MsgId>, msgs: Vec<Arc<Message>>) -> RestoredMessages {
        let n = ids.len();
        let first = ids.first().map_or(0, |i| i.0);
        let span = ids.last().map_or(0, |i| i.0 - first + 1);
        let place = if span == n as u64 {
            Place::Dense
        } else if span <= SLOTS_PER_MESSAGE_MAX * n as u64 && n < u32::MAX as usize {
            let mut table = vec![u32::MAX; usize::try_from(span).unwrap_or(0)];
            for (at, id) in ids.iter().enumerate() {
                if let Some(slot) =
                    table.get_mut(usize::try_from(id.0 - first).unwrap_or(usize::MAX))
                {
                    *slot = u32::try_from(at).unwrap_or(u32::MAX);
                }
            }
            Place::Table(table)
        } else {
            Place::Search
        };
        RestoredMessages {
            first,
            ids,
            msgs,
            place,
        }
    }

    fn get(&self, id: MsgId) -> Option<&Arc<Message>> {
        let offset = || usize::try_from(id.0.checked_sub(self.first)?).ok();
        let at = match &self.place {
            Place::Dense => offset()?,
            Place::Table(table) => usize::try_from(*table.get(offset()?)?).ok()?,
            Place::Search => self.ids.binary_search(&id).ok()?,
        };
        self.msgs.get(at)
    }
}

/// The engine's message of restored message `m` (shard time `now_ms`, wall clock `unix`),
/// taking over its payload's allocation instead of copying it (the topic is copied into
/// the engine's shared `Arc<str>`).
fn restored_message(mut m: StoredMessage<'static>, unix: u64, now_ms: u64) -> Message {
    let payload = std::mem::take(&mut m.payload);
    let mut msg = journal::from_stored(&m, unix, now_ms, 0);
    msg.payload = payload.into_owned().into_boxed_slice();
    msg
}

/// A random first QoS 2 number for a new session (non-zero, far from wrapping).
fn qos2_start() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        // No entropy: the clock, which a replacement session does not repeat either.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        b = t.to_le_bytes();
    }
    (u64::from_le_bytes(b) >> 2).max(1)
}

/// Will `w` as recovery read it, back in the engine's form (`log_id`: its number if it was
/// logged at CONNECT, else 0; shard time `now_ms`, wall clock `unix`).
pub(super) fn restored_will(w: Will<'_>, log_id: u64, unix: u64, now_ms: u64) -> StoredWill {
    let stored = StoredMessage {
        topic: w.topic,
        payload: w.payload,
        qos: w.qos,
        retain: w.retain,
        expires_at_unix_ms: None,
        props: w.props,
        share_id: 0,
    };
    StoredWill {
        msg: journal::from_stored(&stored, unix, now_ms, 0),
        delay_s: w.delay_s,
        expiry_s: w.expiry_interval_s,
        log_id,
    }
}

/// The stored form of Will `w` (shard time `now_ms`, wall clock `unix`).
fn stored_will(w: &StoredWill, unix: u64, now_ms: u64) -> Will<'_> {
    let m = journal::to_stored(&w.msg, unix, now_ms);
    Will {
        topic: m.topic,
        payload: m.payload,
        qos: m.qos,
        retain: m.retain,
        delay_s: w.delay_s,
        expiry_interval_s: w.expiry_s,
        props: m.props,
    }
}

impl<X> Broker<X> {
    /// Log a logged session's subscription `full` added (`Some`) or removed (`None`).
    pub(super) fn journal_subscription(&mut self, s: usize, full: &str, state: Option<&SubState>) {
        let (Some(j), Some(sess)) = (self.journal.as_mut(), self.sessions.get(s)) else {
            return;
        };
        if !sess.logged {
            return;
        }
        let client_id = (&*sess.client_id).into();
        let none = SubState {
            options: Default::default(),
            sub_id: None,
        };
        let sub = journal::to_subscription(full, state.unwrap_or(&none));
        j.log(match state {
            Some(_) => Record::SubscriptionAdded { client_id, sub },
            None => Record::SubscriptionRemoved {
                client_id,
                share_group: sub.share_group,
                filter: sub.filter,
            },
        });
    }

    /// Log the session's end, if it was logged.
    pub(super) fn log_session_ended(&mut self, sess: &crate::session::Session) {
        if let (Some(j), true) = (self.journal.as_mut(), sess.logged) {
            j.log(Record::SessionEnded {
                client_id: (&*sess.client_id).into(),
            });
        }
    }

    /// A logged session lost its connection: its parameters (the Will still pending, the
    /// expiry as the DISCONNECT left it) and the wall-clock time.
    pub(super) fn log_detached(&mut self, s: usize) {
        let Some(sess) = self.sessions.get_mut(s).filter(|x| x.logged) else {
            return;
        };
        let will = sess.will.take();
        self.log_session(s, 5, will.as_deref());
        let at_unix_ms = self.journal.as_ref().map_or(0, |j| j.unix_ms(self.now_ms));
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        sess.will = will;
        let client_id = (&*sess.client_id).into();
        if let Some(j) = self.journal.as_mut() {
            j.log(Record::SessionDisconnected {
                client_id,
                at_unix_ms,
            });
        }
    }

    /// Log a retained update that entered the broker on this shard. `$SYS` figures are
    /// not stored: they are rewritten every interval, and old ones must not come back as
    /// this run's after a restart.
    pub(super) fn log_retained(&mut self, msg: &Arc<Message>) {
        let now = self.now_ms;
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        if super::sys::is_sys_topic(&msg.topic) {
            return;
        }
        let topic = (&*msg.topic).into();
        let stamp = msg.retain_stamp;
        if msg.payload.is_empty() {
            j.log(Record::RetainedCleared { topic, stamp });
        } else {
            let id = j.store_msg(msg, now);
            j.log(Record::RetainedSet {
                topic,
                msg: id,
                stamp,
                source: msg.publisher.as_deref().map(journal::source_of),
            });
        }
    }

    /// Answer a new QoS 2 PUBLISH of session `s` on link `key` with a PUBREC (`reason`):
    /// for a logged session its id is logged once the routing is durable and the PUBREC
    /// follows once the id is ([`journal::HeldIncoming`]); otherwise as any held ack.
    pub(super) fn pubrec_new(
        &mut self,
        s: usize,
        key: usize,
        pid: PacketId,
        reason: protocol::ReasonCode,
        (txn, next): (u64, u64),
    ) {
        if self.acks.holds(key) {
            // Behind the link's acknowledgements that wait for the cluster, in order.
            if let Some(uid) = self.sessions.get(s).map(|x| x.uid) {
                let what = super::cluster_ack::HeldPubAck::PubRec {
                    session: s,
                    uid,
                    pid,
                    reason,
                    txn,
                    next,
                    resends: Vec::new(),
                };
                self.hold_for_cluster(key, 0, what);
                return;
            }
        }
        self.pubrec_now(s, key, pid, reason, (txn, next));
    }

    /// `pubrec_new` without regard to the cluster gate (not holding one of the link's
    /// acknowledgements).
    fn pubrec_now(
        &mut self,
        s: usize,
        key: usize,
        pid: PacketId,
        reason: protocol::ReasonCode,
        (txn, next): (u64, u64),
    ) {
        let (Some(gen), Some(uid)) = (
            self.links.get(key).map(|l| l.gen),
            self.sessions.get(s).map(|x| x.uid),
        ) else {
            return;
        };
        let to = PubRecTo {
            session: s,
            uid,
            link: key,
            gen,
            live: true,
        };
        self.pubrec_commit(to, pid, reason, txn, next);
    }

    /// The PUBREC of a new QoS 2 message for `to`: for a logged session (or a numbered
    /// routing, whose session may have ended since) its id is logged with the routing's
    /// commit once the routing is durable, and the PUBREC follows once the id is
    /// ([`journal::HeldIncoming`]); otherwise as any held ack. The commit happens also
    /// when the connection has gone (`live` false: nothing is sent).
    pub(super) fn pubrec_commit(
        &mut self,
        to: PubRecTo,
        pid: PacketId,
        reason: protocol::ReasonCode,
        txn: u64,
        next: u64,
    ) {
        let logged = self
            .sessions
            .get(to.session)
            .is_some_and(|x| x.uid == to.uid && x.logged);
        let version = self
            .links
            .get(to.link)
            .filter(|l| l.gen == to.gen)
            .map_or(protocol::Version::V3_1_1, |l| l.version);
        let ack = Packet::PubRec(protocol::Ack {
            packet_id: pid,
            reason,
            properties: protocol::Properties::default(),
        });
        match self.journal.as_mut() {
            Some(j) if logged || txn != 0 => {
                let bytes = j.encode_held(version, &ack);
                j.hold(HeldAck::Incoming(journal::HeldIncoming {
                    session: to.session,
                    uid: to.uid,
                    pid,
                    link: to.link,
                    gen: to.gen,
                    bytes,
                    txn,
                    next,
                    resends: Vec::new(),
                }));
            }
            _ if to.live => self.send_durable(to.link, &ack),
            _ => {}
        }
    }

    /// Answer a resend of session `s`'s QoS 2 message `pid` (its id is taken) on link
    /// `key` with a PUBREC: behind the first copy's commit while that is not logged —
    /// with the first copy's PUBREC while it waits for the cluster link
    /// (`HeldPubAck::PubRec`, whose commit comes after the link's answer), then in its
    /// `HeldIncoming::resends` — else once this turn's records are durable (after the
    /// commit's record, logged already). A PUBREC that left before the commit was durable
    /// would let a cut drop the routing while the client, holding a PUBREC, only sends
    /// PUBREL (power seed 9,423; in a cluster, found by reading).
    pub(super) fn pubrec_resend(&mut self, s: usize, key: usize, pid: PacketId) {
        let uid = self.sessions.get(s).map(|x| x.uid);
        let link = self.links.get(key).map(|l| (l.gen, l.version));
        if let (Some(uid), Some((gen, version)), Some(j)) = (uid, link, self.journal.as_mut()) {
            let ack = Packet::PubRec(protocol::Ack::new(pid));
            let bytes = j.encode_held(version, &ack);
            // The gate first: a copy there is newer than any whose commit the journal holds.
            let Some(resend) = self.acks.hold_resend(uid, pid, (key, gen, bytes)) else {
                return;
            };
            if let Some(h) = j.incoming_held(uid, pid) {
                h.resends.push(resend);
                return;
            }
        }
        let ack = Packet::PubRec(protocol::Ack::new(pid));
        self.send_durable(key, &ack);
    }

    /// The number the next QoS 2 message of `h`'s session gets, if `h` was numbered and
    /// the session is still the logged one.
    fn log_qos2_next(&mut self, h: &journal::HeldIncoming) {
        let Some(sess) = self
            .sessions
            .get(h.session)
            .filter(|x| h.next != 0 && x.uid == h.uid && x.logged)
        else {
            return;
        };
        if let Some(j) = self.journal.as_mut() {
            j.log(Record::Qos2Numbering {
                client_id: (&*sess.client_id).into(),
                next: h.next,
            });
        }
    }

    /// The commit of a logged session's new QoS 2 message `h`, in one record: its packet
    /// id, its routing and (in a cluster) the number the session's next one gets, so a
    /// restart recognises its resend, keeps its deliveries, and numbers the resends of
    /// the later ones as before. False (nothing logged) for a session not logged.
    fn log_qos2_commit(&mut self, h: &journal::HeldIncoming) -> bool {
        let Some(sess) = self
            .sessions
            .get(h.session)
            .filter(|x| x.uid == h.uid && x.logged)
        else {
            return false;
        };
        let Some(j) = self.journal.as_mut() else {
            return false;
        };
        j.log(Record::IncomingQos2Commit {
            client_id: (&*sess.client_id).into(),
            packet_id: h.pid,
            txn: h.txn,
            next: h.next,
        });
        true
    }

    /// The number and [`Qos2Id`](super::cluster::Qos2Id) of a new QoS 2 message of
    /// session `s` with packet id `pid`: only for a stored session in a cluster (whose
    /// numbering started at its CONNECT, `log_session`); `(0, None)` otherwise. The
    /// number after it is logged with the message's commit.
    pub(super) fn qos2_number(
        &mut self,
        s: usize,
        pid: PacketId,
        topic: &str,
        payload: &[u8],
    ) -> (u64, Option<super::cluster::Qos2Id>) {
        if self.cluster.is_none() || self.journal.is_none() {
            return (0, None);
        }
        let Some(sess) = self
            .sessions
            .get_mut(s)
            .filter(|x| x.logged && x.qos2_next != 0)
        else {
            return (0, None);
        };
        let n = sess.qos2_next;
        sess.qos2_next = n.wrapping_add(1).max(1);
        let id = super::cluster::Qos2Id::new(&sess.client_id, n, pid.get(), topic, payload);
        (sess.qos2_next, Some(id))
    }

    /// Log a logged session's inbound QoS 2 id set (PUBREC) or cleared (PUBREL).
    pub(super) fn log_incoming(&mut self, s: usize, pid: crate::protocol::PacketId, set: bool) {
        let (Some(j), Some(sess)) = (self.journal.as_mut(), self.sessions.get(s)) else {
            return;
        };
        if !sess.logged {
            return;
        }
        let client_id = (&*sess.client_id).into();
        j.log(if set {
            Record::IncomingQos2Set {
                client_id,
                packet_id: pid,
            }
        } else {
            Record::IncomingQos2Cleared {
                client_id,
                packet_id: pid,
            }
        });
    }
}

impl<X> Broker<X> {
    /// Log a PUBREC received for delivery `pid`: PUBREL sent, or (`failed`) the end.
    pub(super) fn log_pubrec(
        &mut self,
        logged: bool,
        client_id: &str,
        pid: crate::protocol::PacketId,
        failed: bool,
    ) {
        let Some(j) = self.journal.as_mut().filter(|_| logged) else {
            return;
        };
        let client_id = client_id.into();
        j.log(if failed {
            Record::DeliveryDone {
                client_id,
                packet_id: pid,
            }
        } else {
            Record::DeliverySent {
                client_id,
                msg: MsgId(0),
                packet_id: pid,
                state: DeliveryState::PubrelSent,
            }
        });
    }
}

#[cfg(test)]
mod restored_messages_tests {
    use super::*;
    use crate::store::testutil::message;

    /// Every id of `ids` is found with its own message, and no other id is.
    fn finds_exactly(ids: &[u64], want: fn(&Place) -> bool) {
        let mut part = LiveState::default();
        for id in ids {
            part.messages
                .insert(MsgId(*id), message(&format!("t/{id}"), b"p", false));
        }
        let msgs = RestoredMessages::new(&part, 1_000, 0);
        assert!(want(&msgs.place), "ids {ids:?}");
        for id in ids {
            let m = msgs.get(MsgId(*id)).expect("restored");
            assert_eq!(&*m.topic, format!("t/{id}"));
        }
        let last = ids.last().copied().unwrap_or(0);
        for absent in [0, 2, 4, last + 1, last + 1_000, u64::MAX] {
            if !ids.contains(&absent) {
                assert!(msgs.get(MsgId(absent)).is_none(), "id {absent}");
            }
        }
    }

    #[test]
    fn every_delivery_finds_its_message_however_the_ids_are_spread() {
        finds_exactly(&[], |p| matches!(p, Place::Dense));
        finds_exactly(&[5, 6, 7, 8], |p| matches!(p, Place::Dense));
        finds_exactly(&[1, 3, 5, 9, 10], |p| matches!(p, Place::Table(_)));
        finds_exactly(&[1, 3, 1_000_000, 1 << 40], |p| matches!(p, Place::Search));
    }
}
