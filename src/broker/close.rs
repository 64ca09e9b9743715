//! The end of connections and sessions: DISCONNECT, wills, expiry, timers.

use std::sync::Arc;

use super::connect::{timer_key, TIMER_LINK, TIMER_SESSION_EXPIRY, TIMER_WILL};
use super::journal::{HeldAck, RestoredWill};
use super::{Broker, Conn, Link, LinkState, Verdict};
use crate::log::Level;
use crate::log_at;
use crate::protocol::{Disconnect, ReasonCode, Version};
use crate::session::{Message, StoredWill};
use crate::store::Record;
use crate::timer::TimerId;

/// Timers handled per turn; the rest wait for the next turn.
pub(super) const TIMERS_PER_TURN_MAX: usize = 4096;

/// Subscriptions of ended sessions removed per turn, over all of them: a session whose
/// filters do not fit what is left of the turn's budget is retired and taken apart over the
/// next turns, so neither one client's 2,000,000 filters nor 1,000 clients with 50 each
/// closing at once can freeze the shard (every other client and timer waits while a turn
/// runs).
pub const UNROUTES_PER_TURN_MAX: usize = 256;

/// Longest a closing link waits for its held output (the records behind its CONNACK to be
/// durable) before it closes without that output.
pub const CLOSE_HELD_WAIT_MS: u64 = 5_000;

impl<X> Broker<X> {
    /// The driver is about to close link `key` (taken from the closing list): true when its
    /// output is held (its CONNACK waits for durable records), so it must be neither
    /// flushed nor closed now. The broker puts it back on the closing list once the output
    /// is released (then flushed in order, CONNACK first, before the close), or after
    /// [`CLOSE_HELD_WAIT_MS`] without it, its output dropped: no CONNACK ever leaves before
    /// its session is stored.
    pub fn defer_close(&mut self, key: usize, now_ms: u64) -> bool {
        let Some(link) = self.links.get_mut(key) else {
            return false;
        };
        if !link.output_held {
            return false;
        }
        if !link.close_deferred {
            link.close_deferred = true;
            if let Some(t) = link.timer.take() {
                self.timers.cancel(t);
            }
            let at = now_ms + CLOSE_HELD_WAIT_MS;
            link.timer = Some(self.timers.insert(at, timer_key(TIMER_LINK, link.gen, key)));
        }
        true
    }

    /// A deferred close waited [`CLOSE_HELD_WAIT_MS`] for its held output: close without it.
    fn close_without_output(&mut self, key: usize) {
        let Some(c) = self.links.conn_mut(key) else {
            return;
        };
        if !c.link.close_deferred {
            return;
        }
        c.link.output_held = false;
        c.tx.discard();
        if crate::log_sink::connection_messages() {
            log_at!(
                Level::Notice,
                "Client {} ({}) closed without its CONNACK: its session's records were not durable within {CLOSE_HELD_WAIT_MS} ms.",
                c.link.client_id.as_deref().unwrap_or("<unknown>"),
                c.link.peer
            );
        }
        self.fx.requeue_closing(key, &mut c.link);
    }

    pub(super) fn on_disconnect(&mut self, key: usize, d: &Disconnect<'_>) -> Verdict {
        let Some(link) = self.links.get_mut(key) else {
            return Verdict::Close;
        };
        // Only a DISCONNECT with 0x00 discards the Will [MQTT-3.1.2-10]; 0x04 or any error
        // code from the client leaves it to be published.
        link.publish_will = d.reason.to_u8() != 0x00;
        let s = link.session;
        if let (Some(new), Some(s)) = (d.properties.session_expiry_interval, s) {
            let Some(sess) = self.sessions.get_mut(s) else {
                return Verdict::Close;
            };
            if sess.expiry_s == 0 && new != 0 {
                // [MQTT-3.14.2-2]: a session that was to end cannot be revived at DISCONNECT.
                return self.protocol_error(key, "session expiry set at DISCONNECT after 0");
            }
            sess.expiry_s = new;
        }
        self.close(key, None, "client sent DISCONNECT")
    }

    /// The shard is done with connection `key` (closed, or handed to another shard):
    /// publish or schedule its Will, detach or end its session, forget the link. Returns
    /// the shard's part of the connection, for it to close or move.
    pub fn on_closed(&mut self, key: usize, now_ms: u64) -> Option<X> {
        let Conn { mut link, io, .. } = self.links.remove(key)?;
        self.forget_link(key, &mut link, now_ms);
        Some(io)
    }

    fn forget_link(&mut self, key: usize, link: &mut Link, now_ms: u64) {
        if let Some(t) = link.timer.take() {
            self.timers.cancel(t);
        }
        if crate::log_sink::connection_messages() && link.state != LinkState::ExpectConnect {
            log_at!(
                Level::Notice,
                "Client {} disconnected{}.",
                link.client_id.as_deref().unwrap_or("<unknown>"),
                link.close_reason
                    .map_or(String::new(), |r| format!(" (reason 0x{:02x})", r.to_u8()))
            );
        }
        let will = link.will.take();
        let s = link.session;
        let still_ours =
            s.is_some_and(|s| self.sessions.get(s).is_some_and(|x| x.link == Some(key)));
        if let Some(w) = will {
            let session_ends = s
                .and_then(|s| self.sessions.get(s))
                .is_none_or(|x| x.expiry_s == 0);
            if !link.publish_will {
                // A DISCONNECT with 0x00, or a shutdown: the Will is discarded.
                self.will_dropped(&w);
            } else if !self.may_publish_will(link.acl_client(), link.listener, &w) {
                // Rights revoked since CONNECT: the Will is not published.
                self.will_dropped(&w);
            } else if w.delay_s == 0 || (still_ours && session_ends) {
                self.publish_stored_will(*w, link.client_id.as_deref(), now_ms);
            } else if still_ours {
                // Published when the delay runs out, unless the session resumes first.
                if let Some(sess) = s.and_then(|s| self.sessions.get_mut(s)) {
                    sess.will = Some(w);
                }
            } else {
                // The session was taken over and lives on: a delayed Will is cancelled by
                // that resumption [MQTT-3.1.3-9].
                self.will_dropped(&w);
            }
        }
        let (Some(s), true) = (s, still_ours) else {
            return;
        };
        self.detach(s, now_ms);
    }

    /// The session lost its connection: end it, or keep it until it expires.
    fn detach(&mut self, s: usize, now_ms: u64) {
        self.share_member_offline(s, now_ms);
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        sess.link = None;
        let (expiry_s, uid) = (sess.expiry_s, sess.uid);
        let will_delay = sess.will.as_ref().map(|w| w.delay_s);
        if expiry_s == 0 {
            self.release_claim(s);
            self.end_session(s);
            return;
        }
        self.log_detached(s);
        let gen = (uid & 0x00ff_ffff) as u32;
        if expiry_s != u32::MAX {
            let at = now_ms + u64::from(expiry_s) * 1000;
            let t = self
                .timers
                .insert(at, timer_key(TIMER_SESSION_EXPIRY, gen, s));
            if let Some(sess) = self.sessions.get_mut(s) {
                sess.expiry_timer = Some((t, at));
            }
        }
        if let Some(delay) = will_delay {
            let at = now_ms + u64::from(delay.min(expiry_s)) * 1000;
            let t = self.timers.insert(at, timer_key(TIMER_WILL, gen, s));
            if let Some(sess) = self.sessions.get_mut(s) {
                sess.will_timer = Some((t, at));
            }
        }
    }

    /// The connection `key` was taken over: its Will (without delay) is published now,
    /// before the new CONNECT's session record is logged. That record drops it from the
    /// session's parameters, so it must follow the Will's own record in the log
    /// (`publish_will`). A delayed Will is cancelled by the resumption [MQTT-3.1.3-9].
    pub(super) fn will_at_takeover(&mut self, key: usize, now_ms: u64) {
        let Some(link) = self.links.get_mut(key).filter(|l| l.publish_will) else {
            return;
        };
        let Some(w) = link.will.take() else {
            return;
        };
        let Some(link) = self.links.get(key) else {
            return;
        };
        if w.delay_s == 0 && self.may_publish_will(link.acl_client(), link.listener, &w) {
            let client = link.client_id.clone();
            self.publish_stored_will(*w, client.as_deref(), now_ms);
        } else {
            self.will_dropped(&w);
        }
    }

    /// A Will its connection ended without publishing: if it was logged at CONNECT (a
    /// clean session's, `Record::WillArmed`), log it done so recovery does not publish it.
    fn will_dropped(&mut self, w: &StoredWill) {
        if let (Some(j), true) = (self.journal.as_mut(), w.log_id != 0) {
            j.log(Record::WillDone { id: w.log_id });
        }
    }

    /// Publish client `client_id`'s Will `w` now, under the number it was logged with at
    /// CONNECT, if any.
    fn publish_stored_will(&mut self, w: StoredWill, client_id: Option<&str>, now_ms: u64) {
        let id = w.log_id;
        self.publish_will(id, client_id, w.into_message(now_ms), now_ms);
    }

    /// Publish client `client_id`'s Will (`log_id`: its number if it was logged at
    /// CONNECT, else 0). With a store it is logged first as pending (`Record::WillPending`:
    /// before any record that drops it from its session's parameters, which all come
    /// later; with its client, whose home shard publishes it again after a restart), and
    /// logged done once its deliveries are durable on every shard it reached (a held
    /// action, released after this shard's log and the peers' barriers): a power cut in
    /// between publishes it again at restart, a duplicate and never a loss.
    pub(super) fn publish_will(
        &mut self,
        log_id: u64,
        client_id: Option<&str>,
        mut msg: Message,
        now_ms: u64,
    ) {
        let Some(j) = self.journal.as_mut() else {
            self.publish_message(msg, now_ms);
            return;
        };
        if msg.retain {
            msg.retain_stamp = self.retained.next_stamp(self.shard_id);
        }
        let id = match log_id {
            0 => j.next_will_id(),
            id => id,
        };
        let unix = j.unix_ms(now_ms);
        j.log(Record::WillPending {
            id,
            client_id: client_id.map(Into::into),
            stamp: msg.retain_stamp,
            msg: super::journal::to_stored(&msg, unix, now_ms),
        });
        self.route_will(id, Arc::new(msg), now_ms);
    }

    /// Route Will `id` (stamped) and hold its `WillDone` behind the barriers of every
    /// peer it went to. Those casts may leave after this turn's `journal_end_turn` (a
    /// link closed at the end of the turn), so they are counted here.
    fn route_will(&mut self, id: u64, msg: Arc<Message>, now_ms: u64) {
        let from = self.fx.outbox.len();
        self.publish_shared(msg, now_ms);
        self.count_sent(from);
        if let Some(j) = self.journal.as_mut() {
            j.hold(HeldAck::WillDone { id });
        }
    }

    /// Publish the Wills recovery found (on the first turn, once every shard knows every
    /// restored subscription), in the order of their numbers: pending ones again, and
    /// the clean sessions' armed ones, whose connections were open when the broker
    /// stopped (a crash counts as a connection's end), logged pending under their numbers
    /// as at a close. Their records are in the checkpoint. Each shard publishes its own
    /// clients' Wills (recovery put each in its client's home part), before its timers
    /// run ([`Broker::on_timers`]): a stored session's own Will, due at the restart, comes
    /// after its client's older Will still pending.
    fn republish_wills(&mut self, now_ms: u64) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let wills = j.take_restored_wills();
        if wills.is_empty() {
            return;
        }
        let unix = j.unix_ms(now_ms);
        for (id, w) in wills {
            match w {
                RestoredWill::Pending(p) => {
                    let msg = super::journal::from_stored(&p.msg, unix, now_ms, p.stamp);
                    self.route_will(id, Arc::new(msg), now_ms);
                }
                RestoredWill::Armed(a) => {
                    let w = super::persist::restored_will(a.will, id, unix, now_ms);
                    self.publish_stored_will(w, a.client_id.as_deref(), now_ms);
                }
            }
        }
    }

    /// Session `s` is about to be resumed by a CONNECT: its delayed-Will and expiry timers
    /// that are due but have not run yet run now, so the CONNECT finds the session as they
    /// would have left it (the Will published, or the session gone). [`Broker::begin_turn`]
    /// runs what is due before a turn's input, but at most `TIMERS_PER_TURN_MAX` a turn;
    /// the rest wait in the fired backlog behind that turn's input (a restart with more
    /// than 4,096 stored sessions connected at the stop has that many Wills due at its
    /// first turn, and their clients reconnect at once). The backlog's own entries then
    /// find the session resumed or gone, and do nothing (generation-checked).
    fn run_due_session_timers(&mut self, s: usize, now_ms: u64) {
        let Some(sess) = self.sessions.get(s) else {
            return;
        };
        let gen = (sess.uid & 0x00ff_ffff) as u32;
        let due = |t: Option<(TimerId, u64)>| t.filter(|&(_, at)| at <= now_ms);
        let (will, expiry) = (due(sess.will_timer), due(sess.expiry_timer));
        if let Some((t, _)) = will {
            self.timers.cancel(t);
            self.will_timer(s, gen, now_ms);
        }
        if let Some((t, _)) = expiry {
            self.timers.cancel(t);
            self.expiry_timer(s, gen);
        }
    }

    /// The session of client `id`, if any, after its due timers ran
    /// ([`Broker::run_due_session_timers`]): `None` when it had expired.
    pub(super) fn settled_session(&mut self, id: &str, now_ms: u64) -> Option<usize> {
        let s = self.sessions.find(id)?;
        self.run_due_session_timers(s, now_ms);
        self.sessions.find(id)
    }

    /// Cancel a session's expiry and delayed-Will timers (it was resumed).
    pub(super) fn cancel_session_timers(&mut self, s: usize) {
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        let timers: [Option<TimerId>; 2] = [
            sess.expiry_timer.take().map(|(t, _)| t),
            sess.will_timer.take().map(|(t, _)| t),
        ];
        for t in timers.into_iter().flatten() {
            self.timers.cancel(t);
        }
    }

    /// End session `s` because its client opened a new connection (here with Clean
    /// Start, or on another cluster node): a Will still waiting out its delay is cancelled
    /// by that connection, not published [MQTT-3.1.3-9], before the session ends.
    pub(super) fn end_session_reconnected(&mut self, s: usize) {
        if let Some(sess) = self.sessions.get_mut(s) {
            sess.will = None;
        }
        self.end_session(s);
    }

    /// Remove a session entirely: its subscriptions leave the trie; a pending Will is sent.
    /// When its subscriptions do not fit what is left of this turn's
    /// [`UNROUTES_PER_TURN_MAX`], it is retired instead: the same at once for clients
    /// (its id is free, its Will sent, nothing reaches it), its filters removed in the
    /// next turns.
    pub(super) fn end_session(&mut self, s: usize) {
        self.cancel_session_timers(s);
        let subs = self.sessions.get(s).map_or(0, |x| x.subs.len());
        if subs > UNROUTES_PER_TURN_MAX.saturating_sub(self.unrouted) {
            self.retire_session(s);
            return;
        }
        self.unrouted += subs;
        let Some(mut sess) = self.sessions.remove(s) else {
            return;
        };
        super::shared::lost_with(&mut self.fx.share_unplaced, &sess);
        let filters: Vec<Box<str>> = sess.subs.keys().cloned().collect();
        for f in filters {
            // Normal filters leave the trie; shared ones leave their group on every shard.
            self.unroute(s, sess.uid, &f);
        }
        // The Will is logged pending before the record that drops it with its session.
        if let Some(w) = sess.will.take() {
            if self.may_publish_will(sess.acl_client(), sess.listener, &w) {
                let now = self.now_ms;
                self.publish_stored_will(*w, Some(&sess.client_id), now);
            }
        }
        self.log_session_ended(&sess);
    }

    /// End a session over several turns: its pending Will goes now (if its publisher may
    /// still publish it), its end is logged as `end_session` logs it, and its filters leave
    /// the routes within each turn's [`UNROUTES_PER_TURN_MAX`].
    fn retire_session(&mut self, s: usize) {
        if let Some(w) = self.sessions.get_mut(s).and_then(|x| x.will.take()) {
            let permitted = self
                .sessions
                .get(s)
                .filter(|x| self.may_publish_will(x.acl_client(), x.listener, &w))
                .map(|x| x.client_id.clone());
            if let Some(client) = permitted {
                let now = self.now_ms;
                self.publish_stored_will(*w, Some(&client), now);
            }
        }
        if let Some(sess) = self.sessions.get(s) {
            if let (Some(j), true) = (self.journal.as_mut(), sess.logged) {
                j.log(Record::SessionEnded {
                    client_id: (&*sess.client_id).into(),
                });
            }
        }
        if let Some(sess) = self.sessions.get(s) {
            super::shared::lost_with(&mut self.fx.share_unplaced, sess);
        }
        self.sessions.retire(s);
    }

    /// Remove subscriptions of retiring sessions, up to what is left of this turn's
    /// [`UNROUTES_PER_TURN_MAX`].
    fn unroute_retiring(&mut self) {
        while self.unrouted < UNROUTES_PER_TURN_MAX {
            let Some((s, uid, filter)) = self.sessions.next_retiring_filter() else {
                return;
            };
            self.unrouted += 1;
            self.unroute(s, uid, &filter);
        }
    }

    /// Fire due timers: keepalive and CONNECT deadlines, delayed Wills, session expiry.
    /// At most `TIMERS_PER_TURN_MAX` are handled per call; the rest stay queued, in the
    /// order they fired, for the next turn ([`Broker::timers_backlog`] tells the event
    /// loop not to sleep meanwhile). None is ever dropped.
    pub fn on_timers(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.republish_wills(now_ms);
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.advance(now_ms, &mut fired);
        let n = fired.len().min(TIMERS_PER_TURN_MAX);
        for key in fired.drain(..n) {
            let kind = key >> 56;
            let gen = ((key >> 32) & 0x00ff_ffff) as u32;
            let index = (key & 0xffff_ffff) as usize;
            match kind {
                TIMER_LINK => self.link_timer(index, gen, now_ms),
                TIMER_WILL => self.will_timer(index, gen, now_ms),
                super::sys::TIMER_SYS => self.sys_timer(gen, now_ms),
                super::subscribe::TIMER_SUBACK => self.release_subacks(now_ms),
                super::cluster_ack::TIMER_CLUSTER_ACK => self.cluster_ack_timer(now_ms),
                TIMER_SESSION_EXPIRY => self.expiry_timer(index, gen),
                _ => {}
            }
        }
        self.fired = fired;
        self.unroute_retiring();
        self.resume_retained(now_ms);
    }

    /// Write on to the sessions whose retained backlog stopped at last turn's budget, then
    /// hand the walk slices left to the sessions queued to begin a walk, oldest first; the
    /// rest of that queue is not visited (`pacing`).
    fn resume_retained(&mut self, now_ms: u64) {
        let due = self.pacing.take_resume();
        for &s in &due {
            self.pump(s, now_ms);
        }
        self.pacing.recycle(due);
        // At most one visit per session queued at this point: a slice a visit did not
        // take goes to the next one, and none is queued again by its own visit.
        for _ in 0..self.pacing.walkers_queued() {
            let Some(s) = self.pacing.next_walker() else {
                break;
            };
            self.pump(s, now_ms);
        }
    }

    /// True when timers fired but did not fit this turn's budget, retiring sessions
    /// still hold subscriptions, or retained backlogs wait for the next turn's budget:
    /// poll without sleeping.
    pub fn timers_backlog(&self) -> bool {
        !self.fired.is_empty() || self.sessions.has_retiring() || self.pacing.has_waiting()
    }

    fn link_timer(&mut self, key: usize, gen: u32, now_ms: u64) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if link.gen & 0x00ff_ffff != gen {
            return;
        }
        link.timer = None;
        let (state, keepalive_ms, last_rx_ms) = (link.state, link.keepalive_ms, link.last_rx_ms);
        match state {
            LinkState::ExpectConnect | LinkState::AwaitAuth
                if !self.claim_expired(key, now_ms) && !self.delayed_refusal(key) =>
            {
                self.close(key, None, "no CONNECT in time");
            }
            LinkState::Closing => self.close_without_output(key),
            LinkState::Connected if keepalive_ms > 0 => {
                let due = last_rx_ms + keepalive_ms;
                if now_ms >= due {
                    // [MQTT-3.1.2-22]: silent for 1.5 × Keep Alive; the Will is published.
                    self.close(key, Some(ReasonCode::KeepAliveTimeout), "keepalive timeout");
                } else {
                    let t = self.timers.insert(due, timer_key(TIMER_LINK, gen, key));
                    if let Some(link) = self.links.get_mut(key) {
                        link.timer = Some(t);
                    }
                }
            }
            _ => {}
        }
    }

    /// May a Will be published now, under the ACL in force (rights may have been revoked
    /// since CONNECT)? A refusal is logged.
    fn may_publish_will(
        &self,
        client: crate::auth::Client<'_>,
        listener: usize,
        w: &StoredWill,
    ) -> bool {
        let Some(acl) = self.auth.acl(listener) else {
            return true;
        };
        if acl.can_publish(client, &w.msg.topic) {
            return true;
        }
        crate::log_at!(
            crate::log::Level::Notice,
            "Client {} (user {}): Will to '{}' not published, not authorized.",
            client.client_id.escape_debug(),
            client.username.unwrap_or("<anonymous>").escape_debug(),
            w.msg.topic.escape_debug()
        );
        false
    }

    fn session_matches(&self, s: usize, gen: u32) -> bool {
        self.sessions
            .get(s)
            .is_some_and(|x| (x.uid & 0x00ff_ffff) as u32 == gen && x.link.is_none())
    }

    pub(super) fn will_timer(&mut self, s: usize, gen: u32, now_ms: u64) {
        if !self.session_matches(s, gen) {
            return;
        }
        let will = self.sessions.get_mut(s).and_then(|x| {
            x.will_timer = None;
            x.will.take()
        });
        let permitted = |b: &Self, w: &StoredWill| {
            b.sessions
                .get(s)
                .is_some_and(|x| b.may_publish_will(x.acl_client(), x.listener, w))
        };
        let Some(w) = will else {
            return;
        };
        if permitted(self, &w) {
            let client = self.sessions.get(s).map(|x| x.client_id.clone());
            self.publish_stored_will(*w, client.as_deref(), now_ms);
        }
        // The session's record still holds the Will: log it without, after the Will's
        // own record, or a restart would publish it again after its delay.
        let logged = self.sessions.get(s).filter(|x| x.logged);
        if let (Some(j), Some(sess)) = (self.journal.as_mut(), logged) {
            j.drop_session_will(&sess.client_id);
        }
    }

    fn expiry_timer(&mut self, s: usize, gen: u32) {
        if self.session_matches(s, gen) {
            if let Some(x) = self.sessions.get_mut(s) {
                x.expiry_timer = None;
            }
            self.fx.stats.sessions_expired += 1;
            self.release_claim(s);
            self.end_session(s);
        }
    }

    /// Link `key`'s buffer drained below its limit: send what its session queued.
    pub fn on_drained(&mut self, key: usize, now_ms: u64) {
        let s = self.links.get(key).and_then(|l| l.session);
        if let Some(s) = s {
            let queued = self
                .sessions
                .get(s)
                .is_some_and(|x| !x.queue.is_empty() || !x.retained_backlog.is_empty());
            if queued {
                self.pump(s, now_ms);
            }
        }
    }

    /// Shutting down: tell 5.0 clients why (0x8B) before the sockets close.
    pub fn shutdown(&mut self) {
        let keys: Vec<usize> = self.links.iter().map(|(k, _)| k).collect();
        for key in keys {
            let v5 = self
                .links
                .get(key)
                .is_some_and(|l| l.version == Version::V5);
            let reason = v5.then_some(ReasonCode::ServerShuttingDown);
            if let Some(l) = self.links.get_mut(key) {
                // A shutdown is not the client's failure: no Will.
                l.publish_will = false;
            }
            self.close(key, reason, "server shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;

    /// A fleet that lost its network at once: 10,000 CONNECT deadlines fire in the same
    /// millisecond. Every one must be handled, spread over turns, none lost.
    #[test]
    fn ten_thousand_timers_fired_at_once_are_all_handled() {
        const LINKS: usize = 10_000;
        let cfg = Arc::new(Config::default());
        let mut b = Broker::<()>::new(0, 1, cfg.clone(), 0);
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        for _ in 0..LINKS {
            b.accept(peer, (), 0);
        }
        let due = cfg.connect_timeout_ms;
        let mut turns = 0;
        let mut closing = 0;
        let mut keys = Vec::new();
        loop {
            b.on_timers(due);
            turns += 1;
            b.effects().take_closing(&mut keys);
            closing += keys.len();
            for &key in &keys {
                b.on_closed(key, due);
            }
            if !b.timers_backlog() {
                break;
            }
            assert!(turns <= LINKS, "the backlog never drains");
        }
        assert_eq!(closing, LINKS, "every CONNECT deadline fired");
        assert_eq!(turns, LINKS.div_ceil(TIMERS_PER_TURN_MAX));
        assert!(b.links().is_empty());
    }
}
