//! Records of the unwritten batch that cancel out before it is written.
//!
//! Owns: what the journal needs to know about the records still in the log's unwritten
//! batch to take some back ([`crate::store::Wal::cancel`]): the QoS 1 deliveries logged
//! queued-and-sent (`DeliveryQueuedSent`) or queued then sent (`DeliveryQueued`,
//! `DeliverySent`), and the messages stored (`MessageStored`) with how many records of
//! the batch name them. Invariant: a set of records is taken
//! back only when its net effect on the recovered state is nothing, so every prefix of
//! the log recovers what it would have recovered with them, less a delivery its
//! subscriber had already acknowledged:
//! * a `DeliveryDone` that ends a QoS 1 delivery (of no QoS 2 routing) whose `DeliveryQueuedSent` (or
//!   `DeliveryQueued` and `DeliverySent`) is still unwritten cancels with it (the
//!   subscriber has acknowledged the message: nothing is owed to it; see
//!   `docs/persistence.md`, "Records that cancel"). A `DeliverySent` names "the oldest
//!   queued delivery of the message", so a queued one is followed only while it is the
//!   session's one queued delivery of a message stored in the batch (every record naming
//!   the message is then in the batch);
//! * a `MessageStored` still unwritten whose every naming record in the batch was
//!   cancelled so is cancelled too, just before the batch is written (at the end of a
//!   turn, when nothing holds its id any more: `Journal::store_msg`'s reuse ends with
//!   the turn).
//!
//! Anything that could make a match wrong (a session created or ended, a QoS 2 routing
//! named by an older `DeliveryTxn`, a delivery moved on by packet id) forgets the
//! pending deliveries: a delivery not found is simply written, as before. Must not touch: the log's bytes (it keeps
//! tickets), the shadow state.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU16;

use crate::store::{DeliveryState, Lsn, MsgId, Record};

/// Pending QoS 1 deliveries above which no more are tracked (a bound on memory; the rest
/// are written as before).
const PENDING_DELIVERIES_MAX: usize = 1 << 16;

/// A QoS 1 delivery logged queued-and-sent (one record) or queued then sent (two) in the
/// unwritten batch.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Its records' tickets, oldest first (`tickets[1]` is 0 for one record).
    tickets: [Lsn; 2],
    msg: MsgId,
    pid: NonZeroU16,
    /// Its client id: `names[name.0..name.1]`.
    name: (usize, usize),
}

/// A QoS 1 delivery of a message stored in the batch, logged queued (`DeliveryQueued`).
#[derive(Debug, Clone, Copy)]
struct Queued {
    ticket: Lsn,
    /// The session's queued deliveries of the message logged in the batch (past one,
    /// none is followed: which one a `DeliverySent` names is then not certain).
    count: u32,
    name: (usize, usize),
}

/// A message stored in the unwritten batch.
#[derive(Debug, Clone, Copy)]
struct Stored {
    id: MsgId,
    ticket: Lsn,
    /// Records of the batch that name it.
    refs: u32,
    /// Of those, cancelled.
    cancelled: u32,
}

/// What may still cancel in the unwritten batch.
#[derive(Default)]
pub struct Elision {
    sent: HashMap<u64, Sent, BuildHasherDefault<MixHasher>>,
    /// By (client, message).
    queued: HashMap<u64, Queued, BuildHasherDefault<MixHasher>>,
    names: Vec<u8>,
    /// By increasing id (ids only grow).
    stored: Vec<Stored>,
    /// Records cancelled (for figures and tests).
    pub cancelled: u64,
}

impl Elision {
    /// Record `r` was appended under `ticket`: note what it may later cancel with.
    pub fn appended(&mut self, r: &Record<'_>, ticket: Lsn) {
        match r {
            Record::MessageStored { id, .. } => self.stored_msg(*id, ticket),
            Record::DeliveryQueuedSent {
                client_id,
                msg,
                qos,
                packet_id,
                txn,
                ..
            } => {
                self.named(*msg);
                if *qos == 1 && *txn == 0 {
                    let name = self.name(client_id);
                    self.follow(client_id, *packet_id, *msg, [ticket, 0], name);
                }
            }
            Record::DeliveryQueued {
                client_id,
                msg,
                qos,
                txn,
                ..
            } => {
                let stored = self.named(*msg);
                if *qos == 1 && *txn == 0 && stored {
                    self.queued_one(client_id, *msg, ticket);
                }
            }
            Record::DeliveryDropped { client_id, msg } => {
                self.named(*msg);
                self.poison(client_id, *msg);
            }
            Record::RetainedSet { msg, .. } => {
                self.named(*msg);
            }
            Record::DeliverySent {
                client_id,
                msg,
                packet_id,
                state,
            } => {
                self.named(*msg);
                self.sent.remove(&key(client_id, *packet_id));
                self.sent_from_queue(client_id, *msg, *packet_id, *state, ticket);
            }
            // `DeliveryShare` tags the delivery its session logged last: that delivery
            // must stay, or the tag would fall on an earlier one at recovery.
            Record::SessionCreated(_)
            | Record::SessionEnded { .. }
            | Record::SessionDisconnected { .. }
            | Record::DeliveryTxn { .. }
            | Record::DeliveryShare { .. } => {
                self.sent.clear();
                self.queued.clear();
            }
            _ => {}
        }
    }

    /// `DeliverySent` (ticket `ticket`): follow the queued delivery it names in flight,
    /// when that is certain to be the one followed.
    fn sent_from_queue(
        &mut self,
        client_id: &str,
        msg: MsgId,
        pid: NonZeroU16,
        state: DeliveryState,
        ticket: Lsn,
    ) {
        let k = msg_key(client_id, msg);
        let Some(q) = self.queued.remove(&k) else {
            return;
        };
        let same = self.names.get(q.name.0..q.name.1) == Some(client_id.as_bytes());
        if q.count == 1 && same && state == DeliveryState::InFlight {
            self.follow(client_id, pid, msg, [q.ticket, ticket], q.name);
        } else {
            // Which queued delivery this names is not certain: follow none of them.
            self.poison(client_id, msg);
        }
    }

    /// Message `id` was stored as `ticket` (followed only while ids grow).
    fn stored_msg(&mut self, id: MsgId, ticket: Lsn) {
        if self.stored.last().is_none_or(|s| s.id < id) {
            self.stored.push(Stored {
                id,
                ticket,
                refs: 0,
                cancelled: 0,
            });
        }
    }

    /// Client `client_id`'s name in `names`.
    fn name(&mut self, client_id: &str) -> (usize, usize) {
        let at = self.names.len();
        self.names.extend_from_slice(client_id.as_bytes());
        (at, self.names.len())
    }

    /// Follow a QoS 1 delivery in flight whose records are `tickets`.
    fn follow(
        &mut self,
        client_id: &str,
        pid: NonZeroU16,
        msg: MsgId,
        tickets: [Lsn; 2],
        name: (usize, usize),
    ) {
        if self.sent.len() >= PENDING_DELIVERIES_MAX {
            return;
        }
        let s = Sent {
            tickets,
            msg,
            pid,
            name,
        };
        // A key already present (a hash collision) loses its entry: it is written.
        self.sent.insert(key(client_id, pid), s);
    }

    /// A QoS 1 delivery of stored message `msg` joined `client_id`'s queue as `ticket`.
    fn queued_one(&mut self, client_id: &str, msg: MsgId, ticket: Lsn) {
        let k = msg_key(client_id, msg);
        if let Some(q) = self.queued.get_mut(&k) {
            q.count = q.count.saturating_add(1);
            return;
        }
        if self.queued.len() >= PENDING_DELIVERIES_MAX {
            return;
        }
        let name = self.name(client_id);
        let q = Queued {
            ticket,
            count: 1,
            name,
        };
        self.queued.insert(k, q);
    }

    /// For the rest of this batch, follow no queued delivery of `msg` for `client_id` (a
    /// hash collision poisons another client's too: it is then written, as before).
    fn poison(&mut self, client_id: &str, msg: MsgId) {
        let q = Queued {
            ticket: 0,
            count: u32::MAX,
            name: (0, 0),
        };
        self.queued.insert(msg_key(client_id, msg), q);
    }

    /// `r` is about to be logged: if it is the `DeliveryDone` of a pending QoS 1 delivery
    /// and `cancel` takes that delivery's record back, it cancels (true: do not log it).
    pub fn cancels(&mut self, r: &Record<'_>, mut cancel: impl FnMut(Lsn) -> bool) -> bool {
        let Record::DeliveryDone {
            client_id,
            packet_id,
        } = r
        else {
            return false;
        };
        let Some(s) = self.sent.remove(&key(client_id, *packet_id)) else {
            return false;
        };
        let same =
            s.pid == *packet_id && self.names.get(s.name.0..s.name.1) == Some(client_id.as_bytes());
        // Oldest first: when the first is unwritten, so is the second (same batch, later).
        if !same || !cancel(s.tickets[0]) {
            return false;
        }
        let mut n = 1;
        if s.tickets[1] != 0 && cancel(s.tickets[1]) {
            n += 1;
        }
        if let Ok(i) = self.stored.binary_search_by_key(&s.msg, |m| m.id) {
            self.stored[i].cancelled += n;
        }
        self.cancelled += u64::from(n) + 1;
        true
    }

    /// Just before the batch is written: the tickets of the stored messages every naming
    /// record of which was cancelled (to cancel them too).
    pub fn unreferenced(&mut self, mut cancel: impl FnMut(Lsn) -> bool) {
        for m in &self.stored {
            if m.cancelled > 0 && m.cancelled == m.refs && cancel(m.ticket) {
                self.cancelled += 1;
            }
        }
    }

    /// The batch was written: nothing in it can cancel any more.
    pub fn written(&mut self) {
        self.sent.clear();
        self.queued.clear();
        self.names.clear();
        self.stored.clear();
    }

    /// A record names `msg`: whether it was stored in the batch.
    fn named(&mut self, msg: MsgId) -> bool {
        match self.stored.binary_search_by_key(&msg, |m| m.id) {
            Ok(i) => {
                self.stored[i].refs += 1;
                true
            }
            Err(_) => false,
        }
    }
}

/// The map key of client `client_id`'s delivery `pid`: FNV-1a of the id, mixed with it.
fn key(client_id: &str, pid: NonZeroU16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in client_id.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ u64::from(pid.get()) << 48
}

/// The map key of client `client_id`'s queued delivery of `msg`.
fn msg_key(client_id: &str, msg: MsgId) -> u64 {
    let mut h: u64 = 0x8422_2325_cbf2_9ce4;
    for &b in client_id.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ msg.0.rotate_left(29)
}

/// A hasher for keys that are already hashes: one multiply.
#[derive(Default)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
