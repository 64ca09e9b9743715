//! Per-client state: QoS flows, packet ids, in-flight window, offline queue, will.
//!
//! Owns: everything the specification says a session remembers between connections
//! (subscriptions, unacknowledged QoS 1/2 deliveries, queued messages, QoS 2 packet ids
//! awaiting PUBREL) plus the Will of the current connection. Invariants: at most `window`
//! messages are in flight; the queue never holds more than `queue_max` messages or
//! `queue_bytes_max` bytes (the overflow is dropped and counted); packet ids in flight are
//! unique. Must not touch: sockets, the bus, encoding: the broker decides what to send and
//! this module only keeps the books.
#![forbid(unsafe_code)]

pub mod message;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU16;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::protocol::{PacketId, QoS, SubscriptionOptions};
use crate::topic::retained::MatchCursor;
pub use message::{ForwardedProps, Message, MessagePool};

/// Subscription identifiers attached to one delivery (usually none or one).
pub type SubIds = SmallVec<[u32; 2]>;

/// One delivery to this session: the shared message plus per-subscriber choices.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message.
    pub msg: Arc<Message>,
    /// Delivery QoS: min(message QoS, granted QoS).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (5.0).
    pub sub_ids: SubIds,
    /// `$share/{group}/{filter}` when delivered through a shared subscription, so it can
    /// move to another member if this one goes away.
    pub share: Option<Arc<str>>,
    /// The message's id in this shard's store log (`MsgId`), 0 when it is not stored.
    pub sid: u64,
}

/// Retained messages matched by one SUBSCRIBE and not yet written: the walk of the
/// retained tree for its filter, paused between slices, and the matches of its last slice
/// (8 bytes per message, the payloads are shared), written as the link's buffer drains and
/// the window opens, never dropped for lack of room.
#[derive(Debug)]
pub struct RetainedBacklog {
    /// The messages found and still to send, in the order found.
    pub msgs: VecDeque<Arc<Message>>,
    /// The walk that finds them, a slice at a time (refilling `msgs` when it runs dry).
    pub walk: MatchCursor,
    /// The retained replica's clock when the subscription was made: a message stamped
    /// above it was stored after, and so delivered as a live publish; the walk skips it.
    pub since: u64,
    /// The granted QoS of the subscription (each delivery takes the lower of this and
    /// the message's).
    pub qos: QoS,
    /// The subscription's identifier (5.0).
    pub sub_id: Option<u32>,
}

/// Where an outbound QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightState {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    AwaitAck,
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    AwaitRec,
    /// PUBREL sent, PUBCOMP awaited.
    AwaitComp,
}

/// An unacknowledged outbound delivery.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Its packet identifier.
    pub pid: PacketId,
    /// What was sent.
    pub out: Outgoing,
    /// The step awaited.
    pub state: FlightState,
    /// Held: its PUBLISH waits for its record to be durable and is not written yet
    /// (counted in [`Session::held_out`]; sent when released, not by a resumption).
    pub held: bool,
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubState {
    /// Options granted.
    pub options: SubscriptionOptions,
    /// Subscription Identifier (5.0).
    pub sub_id: Option<u32>,
}

/// Bytes of one subscription that does not depend on its filter: the session's map entry
/// with the filter's text, and the values in the local and interest tries (measured with
/// jemalloc by `bench/sub-memory`, docs/robustness.md).
pub const SUBSCRIPTION_FIXED_BYTES: u64 = 288;
/// Bytes per level of a filter: a node in the local trie and one in the interest trie,
/// with their level keys (measured: `sensors/{i}/temp` costs 562 bytes,
/// `building-a/floor-3/room-{i}/sensor/temperature` 753; this counts 576 and 768).
pub const SUBSCRIPTION_LEVEL_BYTES: u64 = 96;

/// What a subscription to `filter` costs the broker, for the memory budget. Levels shared
/// with other filters are counted for each, so this errs high where filters share long
/// prefixes; it is a function of the filter alone so that it is O(1) to keep.
pub fn subscription_bytes(filter: &str) -> u64 {
    let levels = filter.bytes().filter(|&b| b == b'/').count() as u64 + 1;
    SUBSCRIPTION_FIXED_BYTES + SUBSCRIPTION_LEVEL_BYTES * levels
}

/// The Will of the current connection, kept until a normal DISCONNECT discards it.
#[derive(Debug)]
pub struct StoredWill {
    /// The message to publish (its expiry is set when it is published).
    pub msg: Message,
    /// Will Delay Interval (5.0), seconds.
    pub delay_s: u32,
    /// The Will's Message Expiry Interval (5.0), seconds; it runs from publication.
    pub expiry_s: Option<u32>,
    /// Its number in the shard's log when it was logged at CONNECT (a clean session's
    /// Will, `Record::WillArmed`); 0 otherwise.
    pub log_id: u64,
}

impl StoredWill {
    /// The message as published at `now_ms`: its expiry counts from now, not from CONNECT.
    pub fn into_message(self, now_ms: u64) -> Message {
        let mut msg = self.msg;
        msg.expires_at_ms = self
            .expiry_s
            .map(|s| now_ms.saturating_add(u64::from(s) * 1000));
        msg
    }
}

/// Why an acknowledgement did not match.
#[derive(Debug, PartialEq, Eq)]
pub enum AckError {
    /// No delivery with that packet id awaits this acknowledgement.
    NotFound,
}

/// Session limits taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// In-flight window (also capped by the client's Receive Maximum).
    pub window: u16,
    /// Queued messages at most.
    pub queue_max: usize,
    /// Queued bytes at most.
    pub queue_bytes_max: usize,
}

/// A client's session.
#[derive(Debug)]
pub struct Session {
    /// Client identifier.
    pub client_id: Box<str>,
    /// Unique per session incarnation on this broker (No Local, stale-event checks).
    pub uid: u64,
    /// Session Expiry Interval in seconds: 0 ends it with the connection, `u32::MAX` never.
    pub expiry_s: u32,
    /// The connection currently attached (a link key of the home shard).
    pub link: Option<usize>,
    /// Subscriptions by full filter (including any `$share/group/` prefix). Change it only
    /// through [`Session::add_sub`], [`Session::remove_sub`] and [`Session::pop_sub`],
    /// which keep `subs_bytes`.
    pub subs: BTreeMap<Box<str>, SubState>,
    /// What `subs` costs the broker, estimated by [`subscription_bytes`] per filter.
    pub subs_bytes: u64,
    /// Unacknowledged outbound QoS 1/2 deliveries, oldest first. Add to it only through
    /// [`Session::track`], which keeps the packet id allocator's books.
    pub inflight: VecDeque<InFlight>,
    /// Deliveries waiting for the window or for the client to reconnect.
    pub queue: VecDeque<Outgoing>,
    /// Retained messages owed to subscriptions, oldest SUBSCRIBE first.
    pub retained_backlog: VecDeque<RetainedBacklog>,
    queue_bytes: usize,
    /// Inbound QoS 2 packet ids routed and awaiting PUBREL.
    pub awaiting_rel: BTreeSet<u16>,
    next_pid: u16,
    /// False while every packet id in flight is at most `next_pid`, so the next one up is
    /// free without a scan; true after the ids wrapped (or an id above `next_pid` was
    /// tracked) until a scan finds them all below again.
    pid_wrapped: bool,
    /// A Will waiting out its Will Delay Interval after the connection ended.
    pub will: Option<Box<StoredWill>>,
    /// Timer publishing `will` (shard timer wheel), and when it is due (shard time, ms).
    pub will_timer: Option<(crate::timer::TimerId, u64)>,
    /// Timer ending the session after its expiry interval, and when it is due (shard
    /// time, ms).
    pub expiry_timer: Option<(crate::timer::TimerId, u64)>,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// When a queue drop was last logged (ms; 0: never).
    pub drop_logged_ms: u64,
    /// The client's Receive Maximum (5.0), 65,535 when not given.
    pub client_receive_max: u16,
    /// Marker used by routing to merge overlapping subscriptions into one delivery.
    pub route_mark: u64,
    /// Index into the routing scratch list for the current mark.
    pub route_slot: u32,
    /// The user of the connection that last attached (`None`: anonymous), for the ACL.
    pub username: Option<Box<str>>,
    /// Id of the listener that connection came through (stable across reloads): its ACL
    /// decides deliveries.
    pub listener: usize,
    /// The session is in the store (persistent, persistence on): its changes are logged.
    pub logged: bool,
    /// Stored deliveries whose PUBLISH waits for its record to be durable; later ones
    /// wait behind them, so the session's order holds.
    pub held_out: u32,
    /// The number of the next new inbound QoS 2 message (a stored session in a cluster;
    /// 0: not numbered). See `Record::Qos2Numbering`.
    pub qos2_next: u64,
}

impl Session {
    /// Who this session is (as of the connection that last attached), for ACL decisions.
    pub fn acl_client(&self) -> crate::auth::Client<'_> {
        crate::auth::Client {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        }
    }

    /// A fresh, empty session.
    pub fn new(client_id: &str, uid: u64, expiry_s: u32) -> Session {
        Session {
            client_id: client_id.into(),
            uid,
            expiry_s,
            link: None,
            subs: BTreeMap::new(),
            subs_bytes: 0,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            retained_backlog: VecDeque::new(),
            queue_bytes: 0,
            awaiting_rel: BTreeSet::new(),
            next_pid: 0,
            pid_wrapped: false,
            will: None,
            will_timer: None,
            expiry_timer: None,
            dropped: 0,
            drop_logged_ms: 0,
            client_receive_max: u16::MAX,
            route_mark: 0,
            route_slot: 0,
            username: None,
            listener: 0,
            logged: false,
            held_out: 0,
            qos2_next: 0,
        }
    }

    /// Packet ids up to `pid` are taken by restored deliveries: allocate above them.
    pub fn ids_used_up_to(&mut self, pid: u16) {
        self.next_pid = self.next_pid.max(pid);
    }

    /// The next free packet identifier, or `None` if all 65,535 are in flight. Ids are
    /// handed out in increasing order, skipping those in flight; until they wrap, the next
    /// one up cannot be in flight and is taken without looking at the window.
    pub fn alloc_pid(&mut self) -> Option<PacketId> {
        if !self.pid_wrapped {
            if let Some(next) = self.next_pid.checked_add(1) {
                self.next_pid = next;
                return NonZeroU16::new(next);
            }
            self.pid_wrapped = true;
        }
        for _ in 0..=self.inflight.len() {
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            let pid = NonZeroU16::new(self.next_pid)?;
            let (mut taken, mut highest) = (false, 0);
            for f in &self.inflight {
                taken |= f.pid == pid;
                highest = highest.max(f.pid.get());
            }
            if !taken {
                self.pid_wrapped = highest >= self.next_pid;
                return Some(pid);
            }
        }
        None
    }

    /// The effective in-flight window.
    pub fn window(&self, limits: &Limits) -> usize {
        usize::from(limits.window.min(self.client_receive_max).max(1))
    }

    /// True if another QoS 1/2 delivery may be sent now.
    pub fn window_open(&self, limits: &Limits) -> bool {
        self.inflight.len() < self.window(limits)
    }

    /// Record a QoS 1/2 delivery about to be sent; returns it, for writing.
    pub fn track(&mut self, pid: PacketId, out: Outgoing) -> &Outgoing {
        let state = match out.qos {
            QoS::ExactlyOnce => FlightState::AwaitRec,
            _ => FlightState::AwaitAck,
        };
        if pid.get() > self.next_pid {
            self.pid_wrapped = true;
        }
        self.inflight.push_back(InFlight {
            pid,
            out,
            state,
            held: false,
        });
        &self.inflight[self.inflight.len() - 1].out
    }

    /// Hold the delivery just tracked: its PUBLISH waits for its record to be durable.
    pub fn hold_last(&mut self) {
        if let Some(f) = self.inflight.back_mut() {
            f.held = true;
            self.held_out += 1;
        }
    }

    /// Release held delivery `pid`; false if it is no longer in flight and held (moved
    /// to another member, or acknowledged meanwhile): then there is nothing to send.
    pub fn release_held(&mut self, pid: PacketId) -> bool {
        let Some(f) = self.inflight.iter_mut().find(|f| f.pid == pid && f.held) else {
            return false;
        };
        f.held = false;
        self.held_out = self.held_out.saturating_sub(1);
        true
    }

    /// Remove in-flight entry `i`, keeping the count of held ones true.
    fn remove_flight(&mut self, i: usize) -> Option<InFlight> {
        let f = self.inflight.remove(i)?;
        if f.held {
            self.held_out = self.held_out.saturating_sub(1);
        }
        Some(f)
    }

    /// Queue a delivery; false (and counted) when the queue is full.
    pub fn enqueue(&mut self, out: Outgoing, limits: &Limits) -> bool {
        let w = out.msg.weight();
        if self.queue.len() >= limits.queue_max || self.queue_bytes + w > limits.queue_bytes_max {
            self.dropped += 1;
            return false;
        }
        self.queue_bytes += w;
        self.queue.push_back(out);
        true
    }

    /// Take the oldest queued delivery.
    pub fn dequeue(&mut self) -> Option<Outgoing> {
        let out = self.queue.pop_front()?;
        self.queue_bytes -= out.msg.weight();
        Some(out)
    }

    /// Put a delivery back at the head of the queue (it could not be sent after all).
    pub fn requeue_front(&mut self, out: Outgoing) {
        self.queue_bytes += out.msg.weight();
        self.queue.push_front(out);
    }

    /// Drop everything queued or in flight (the session is ending), releasing its memory.
    pub fn clear_queues(&mut self) {
        self.queue = VecDeque::new();
        self.queue_bytes = 0;
        self.inflight = VecDeque::new();
        self.held_out = 0;
        self.awaiting_rel = BTreeSet::new();
        self.retained_backlog = VecDeque::new();
    }

    /// Bytes held by the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queue_bytes
    }

    fn position(&self, pid: PacketId, state: FlightState) -> Result<usize, AckError> {
        self.inflight
            .iter()
            .position(|f| f.pid == pid && f.state == state)
            .ok_or(AckError::NotFound)
    }

    /// PUBACK received: the QoS 1 delivery is complete.
    pub fn on_puback(&mut self, pid: PacketId) -> Result<(), AckError> {
        self.take_puback(pid).map(drop)
    }

    /// As [`Session::on_puback`], returning the delivered message (for reuse).
    pub fn take_puback(&mut self, pid: PacketId) -> Result<Arc<Message>, AckError> {
        let i = self.position(pid, FlightState::AwaitAck)?;
        let f = self.remove_flight(i).ok_or(AckError::NotFound)?;
        Ok(f.out.msg)
    }

    /// PUBREC received: answer with PUBREL. A failure reason code (5.0) ends the flow.
    pub fn on_pubrec(&mut self, pid: PacketId, failed: bool) -> Result<(), AckError> {
        let i = match self.position(pid, FlightState::AwaitRec) {
            Ok(i) => i,
            // A repeated PUBREC after our PUBREL: answer again with PUBREL.
            Err(_) => return self.position(pid, FlightState::AwaitComp).map(|_| ()),
        };
        if failed {
            self.remove_flight(i);
        } else if let Some(f) = self.inflight.get_mut(i) {
            f.state = FlightState::AwaitComp;
        }
        Ok(())
    }

    /// PUBCOMP received: the QoS 2 delivery is complete.
    pub fn on_pubcomp(&mut self, pid: PacketId) -> Result<(), AckError> {
        let i = self.position(pid, FlightState::AwaitComp)?;
        self.remove_flight(i);
        Ok(())
    }

    /// Remove and return every queued delivery, and every QoS 1 one in flight, that came
    /// through a shared subscription (its member is going away; another member should have
    /// it). A QoS 2 delivery already sent stays in flight for the member's return, resent
    /// under the same packet id [MQTT-4.8.2-4]: the client may already hold it under that
    /// id, and sending it elsewhere (or back later under a new id) would deliver it twice.
    pub fn take_shared(&mut self) -> Vec<(Outgoing, Option<PacketId>)> {
        let mut taken = Vec::new();
        let mut held = 0;
        self.inflight.retain(|f| {
            let shared = f.out.share.is_some() && f.state == FlightState::AwaitAck;
            if shared {
                // A held one leaves unwritten: it no longer counts as held (else the
                // next resumption would leave an older delivery unsent).
                held += u32::from(f.held);
                taken.push((f.out.clone(), Some(f.pid)));
            }
            !shared
        });
        self.held_out = self.held_out.saturating_sub(held);
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for out in self.queue.drain(..) {
            if out.share.is_some() {
                self.queue_bytes -= out.msg.weight();
                taken.push((out, None));
            } else {
                kept.push_back(out);
            }
        }
        self.queue = kept;
        taken
    }

    /// Add or replace the subscription to `filter`; the state it replaces, if any.
    pub fn add_sub(&mut self, filter: &str, state: SubState) -> Option<SubState> {
        let old = self.subs.insert(filter.into(), state);
        if old.is_none() {
            self.subs_bytes += subscription_bytes(filter);
        }
        old
    }

    /// Remove the subscription to `filter`; its state, if it was there.
    pub fn remove_sub(&mut self, filter: &str) -> Option<SubState> {
        let old = self.subs.remove(filter);
        if old.is_some() {
            self.subs_bytes = self.subs_bytes.saturating_sub(subscription_bytes(filter));
        }
        old
    }

    /// Remove and return the first subscription (in filter order).
    pub fn pop_sub(&mut self) -> Option<(Box<str>, SubState)> {
        let (filter, state) = self.subs.pop_first()?;
        self.subs_bytes = self.subs_bytes.saturating_sub(subscription_bytes(&filter));
        Some((filter, state))
    }

    /// Drop the session's delivery state (Clean Start, or the session ended).
    pub fn clear_state(&mut self) {
        self.subs.clear();
        self.subs_bytes = 0;
        self.inflight.clear();
        self.held_out = 0;
        self.queue.clear();
        self.queue_bytes = 0;
        self.awaiting_rel.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(qos: QoS) -> Arc<Message> {
        Arc::new(Message::plain("t", &[1, 2, 3], qos))
    }

    fn out(qos: QoS) -> Outgoing {
        Outgoing {
            msg: msg(qos),
            qos,
            retain: false,
            sub_ids: SubIds::new(),
            share: None,
            sid: 0,
        }
    }

    const LIMITS: Limits = Limits {
        window: 2,
        queue_max: 3,
        queue_bytes_max: 1 << 20,
    };

    #[test]
    fn packet_ids_skip_those_in_flight_and_zero() {
        let mut s = Session::new("c", 1, 0);
        s.next_pid = u16::MAX - 1;
        let a = s.alloc_pid().expect("pid");
        s.track(a, out(QoS::AtLeastOnce));
        let b = s.alloc_pid().expect("pid");
        assert_eq!(a.get(), u16::MAX);
        assert_eq!(b.get(), 1);
        s.next_pid = u16::MAX - 1;
        assert_ne!(s.alloc_pid(), Some(a));
    }

    #[test]
    fn qos2_flow_and_wrong_acks() {
        let mut s = Session::new("c", 1, 0);
        let pid = s.alloc_pid().expect("pid");
        s.track(pid, out(QoS::ExactlyOnce));
        assert_eq!(s.on_puback(pid), Err(AckError::NotFound));
        assert_eq!(s.on_pubcomp(pid), Err(AckError::NotFound));
        assert_eq!(s.on_pubrec(pid, false), Ok(()));
        assert_eq!(
            s.on_pubrec(pid, false),
            Ok(()),
            "a repeated PUBREC is answered again"
        );
        assert_eq!(s.on_pubcomp(pid), Ok(()));
        assert!(s.inflight.is_empty());
    }

    #[test]
    fn queue_is_bounded_and_counts_drops() {
        let mut s = Session::new("c", 1, u32::MAX);
        for _ in 0..5 {
            s.enqueue(out(QoS::AtLeastOnce), &LIMITS);
        }
        assert_eq!(s.queue.len(), 3);
        assert_eq!(s.dropped, 2);
        let first = s.dequeue().expect("queued");
        assert_eq!(s.queued_bytes(), 2 * first.msg.weight());
    }

    /// A departing member's QoS 1 deliveries may move to another member, but a QoS 2 one
    /// already sent stays in flight under its packet id (the client may hold it already).
    #[test]
    fn a_held_shared_delivery_moved_away_is_no_longer_counted_as_held() {
        // Power seed 5,353: a QoS 2 delivery in flight, then a QoS 1 shared one held
        // (its record not yet durable). The member goes offline: the held one moves to
        // another member. The QoS 2 one stays and must be resent at the next resumption,
        // not taken for a held one (the count used to stay at 1).
        let mut s = Session::new("c", 1, u32::MAX);
        let shared = |qos| Outgoing {
            share: Some("$share/g/t".into()),
            ..out(qos)
        };
        let p1 = s.alloc_pid().expect("pid");
        s.track(p1, shared(QoS::ExactlyOnce));
        let p2 = s.alloc_pid().expect("pid");
        s.track(p2, shared(QoS::AtLeastOnce));
        s.hold_last();
        assert_eq!(s.held_out, 1);
        let taken = s.take_shared();
        assert_eq!(taken.len(), 1, "the held QoS 1 delivery moves");
        assert_eq!(s.held_out, 0, "nothing held is left");
        let resent: Vec<_> = s
            .inflight
            .iter()
            .filter(|f| !f.held)
            .map(|f| f.pid)
            .collect();
        assert_eq!(resent, vec![p1], "the QoS 2 delivery is resent");
        assert!(!s.release_held(p2), "its release finds nothing to send");
        assert_eq!(s.held_out, 0);
    }

    #[test]
    fn an_acknowledged_or_released_held_delivery_leaves_the_count() {
        let mut s = Session::new("c", 1, u32::MAX);
        let p1 = s.alloc_pid().expect("pid");
        s.track(p1, out(QoS::AtLeastOnce));
        s.hold_last();
        let p2 = s.alloc_pid().expect("pid");
        s.track(p2, out(QoS::AtLeastOnce));
        s.hold_last();
        assert_eq!(s.held_out, 2);
        assert!(s.release_held(p1));
        assert!(!s.release_held(p1), "released once");
        assert_eq!(s.held_out, 1);
        // A stray PUBACK for the unsent, held one still keeps the count true.
        s.on_puback(p2).expect("in flight");
        assert_eq!(s.held_out, 0);
        s.track(p2, out(QoS::AtLeastOnce));
        s.hold_last();
        s.clear_state();
        assert_eq!(s.held_out, 0, "cleared with the state");
    }

    #[test]
    fn take_shared_leaves_sent_qos2_in_flight() {
        let mut s = Session::new("c", 1, u32::MAX);
        let shared = |qos| Outgoing {
            share: Some("$share/g/t".into()),
            ..out(qos)
        };
        let p1 = s.alloc_pid().expect("pid");
        s.track(p1, shared(QoS::AtLeastOnce));
        let p2 = s.alloc_pid().expect("pid");
        s.track(p2, shared(QoS::ExactlyOnce));
        s.enqueue(shared(QoS::ExactlyOnce), &LIMITS);
        let taken = s.take_shared();
        let qos: Vec<QoS> = taken.iter().map(|(o, _)| o.qos).collect();
        assert_eq!(
            qos,
            vec![QoS::AtLeastOnce, QoS::ExactlyOnce],
            "queued ones move too"
        );
        assert_eq!(taken[0].1, Some(p1), "an in-flight one keeps its packet id");
        assert_eq!(taken[1].1, None);
        assert_eq!(s.inflight.len(), 1);
        assert_eq!(s.inflight[0].pid, p2);
        assert!(s.queue.is_empty());
    }

    #[test]
    fn window_honours_client_receive_maximum() {
        let mut s = Session::new("c", 1, 0);
        assert_eq!(s.window(&LIMITS), 2);
        s.client_receive_max = 1;
        assert_eq!(s.window(&LIMITS), 1);
        let pid = s.alloc_pid().expect("pid");
        s.track(pid, out(QoS::AtLeastOnce));
        assert!(!s.window_open(&LIMITS));
    }
}
