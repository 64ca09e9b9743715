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
//! pending deliveries: a delivery not found is simply written, as before.
//!
//! Cost (paid for every delivery, cancelled or not, so kept small): the deliveries in
//! flight are noted in a direct-mapped table of [`SENT_SLOTS`] slots indexed by a hash
//! of (client id, packet id), cleared in O(1) by a generation number; a delivery whose
//! slot another takes is simply not followed (written, as before). Nothing is copied per
//! record: a slot keeps tickets, and a match is confirmed before it cancels by reading
//! the delivery's record back from the batch ([`Wal::unwritten_head`]: its client id,
//! packet id and message, at their offsets, the rest not decoded), so a hash collision
//! never cancels a wrong record. Must not touch:
//! the log's bytes but through [`Wal::cancel`] (it keeps tickets), the shadow state.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU16;

use crate::store::{DeliveryKind, DeliveryState, Lsn, MsgId, Record, Wal};

/// Pending queued QoS 1 deliveries above which no more are tracked (a bound on memory;
/// the rest are written as before).
const PENDING_DELIVERIES_MAX: usize = 1 << 16;

/// Slots of the table of deliveries in flight (a power of two; 4096 × 48 bytes). A batch
/// holding more deliveries than this still cancels most of them; one whose slot another
/// delivery took is written, as before.
pub const SENT_SLOTS: usize = 4096;

/// A QoS 1 delivery logged queued-and-sent (one record) or queued then sent (two) in the
/// unwritten batch: a slot of the table.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// The generation it was noted in ([`Elision::epoch`]); any other: an empty slot.
    epoch: u32,
    /// [`key`] of its client id and packet id.
    key: u64,
    /// Its records' tickets, oldest first (`tickets[1]` is 0 for one record).
    tickets: [Lsn; 2],
    msg: MsgId,
    pid: u16,
}

const EMPTY: Sent = Sent {
    epoch: 0,
    key: 0,
    tickets: [0; 2],
    msg: MsgId(0),
    pid: 0,
};

/// A QoS 1 delivery of a message stored in the batch, logged queued (`DeliveryQueued`).
#[derive(Debug, Clone, Copy)]
struct Queued {
    ticket: Lsn,
    /// The session's queued deliveries of the message logged in the batch (past one,
    /// none is followed: which one a `DeliverySent` names is then not certain).
    count: u32,
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
pub struct Elision {
    /// Deliveries in flight by slot (allocated at the first one).
    sent: Vec<Sent>,
    /// The current generation of `sent` (never 0).
    epoch: u32,
    /// Deliveries noted in `sent` in this generation (none: a `DeliveryDone` looks
    /// nothing up).
    followed: usize,
    /// By (client, message).
    queued: HashMap<u64, Queued, BuildHasherDefault<MixHasher>>,
    /// By increasing id (ids only grow).
    stored: Vec<Stored>,
    /// Records cancelled (for figures and tests).
    pub cancelled: u64,
}

impl Default for Elision {
    fn default() -> Self {
        Elision {
            sent: Vec::new(),
            epoch: 1,
            followed: 0,
            queued: HashMap::default(),
            stored: Vec::new(),
            cancelled: 0,
        }
    }
}

impl Elision {
    /// Record `r` was appended to `wal` under `ticket`: note what it may later cancel
    /// with.
    pub fn appended(&mut self, r: &Record<'_>, ticket: Lsn, wal: &Wal) {
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
                    self.follow(client_id, *packet_id, *msg, [ticket, 0]);
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
                self.unfollow(client_id, *packet_id);
                self.sent_from_queue(client_id, *msg, *packet_id, *state, ticket, wal);
            }
            // `DeliveryShare` tags the delivery its session logged last: that delivery
            // must stay, or the tag would fall on an earlier one at recovery.
            Record::SessionCreated(_)
            | Record::SessionEnded { .. }
            | Record::SessionDisconnected { .. }
            | Record::DeliveryTxn { .. }
            | Record::DeliveryShare { .. } => {
                self.forget_sent();
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
        wal: &Wal,
    ) {
        let k = msg_key(client_id, msg);
        let Some(q) = self.queued.remove(&k) else {
            return;
        };
        // The queued record read back: the same client's delivery of the same message
        // (not another that shares the key's hash).
        let certain = q.count == 1
            && state == DeliveryState::InFlight
            && wal.unwritten_head(q.ticket).is_some_and(|h| {
                h.kind == DeliveryKind::Queued
                    && h.client_id == client_id.as_bytes()
                    && h.msg == msg
            });
        if certain {
            self.follow(client_id, pid, msg, [q.ticket, ticket]);
        } else {
            // Which queued delivery this names is not certain: follow none of them.
            self.poison(client_id, msg);
        }
    }

    /// Message `id` was stored as `ticket` (followed only while ids grow): what
    /// [`Elision::appended`] notes for a `MessageStored`, for one written without a
    /// [`Record`] ([`Wal::append_with`]).
    pub fn stored_msg(&mut self, id: MsgId, ticket: Lsn) {
        if self.stored.last().is_none_or(|s| s.id < id) {
            self.stored.push(Stored {
                id,
                ticket,
                refs: 0,
                cancelled: 0,
            });
        }
    }

    /// Follow a QoS 1 delivery in flight whose records are `tickets`. A delivery in its
    /// slot already is no longer followed: it is written.
    fn follow(&mut self, client_id: &str, pid: NonZeroU16, msg: MsgId, tickets: [Lsn; 2]) {
        if self.sent.is_empty() {
            self.sent = vec![EMPTY; SENT_SLOTS];
        }
        let k = key(client_id, pid);
        if let Some(slot) = self.sent.get_mut(slot_of(k)) {
            *slot = Sent {
                epoch: self.epoch,
                key: k,
                tickets,
                msg,
                pid: pid.get(),
            };
            self.followed += 1;
        }
    }

    /// Stop following client `client_id`'s delivery `pid` (and whatever shares its slot
    /// and key), returning it.
    fn unfollow(&mut self, client_id: &str, pid: NonZeroU16) -> Option<Sent> {
        if self.followed == 0 {
            return None;
        }
        let k = key(client_id, pid);
        let epoch = self.epoch;
        let slot = self.sent.get_mut(slot_of(k))?;
        if slot.epoch != epoch || slot.key != k {
            return None;
        }
        Some(std::mem::replace(slot, EMPTY))
    }

    /// Forget every delivery followed (a new generation: O(1)).
    fn forget_sent(&mut self) {
        if self.followed == 0 {
            return;
        }
        self.followed = 0;
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Generations wrapped: empty the slots for real once.
            self.sent.fill(EMPTY);
            self.epoch = 1;
        }
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
        self.queued.insert(k, Queued { ticket, count: 1 });
    }

    /// For the rest of this batch, follow no queued delivery of `msg` for `client_id` (a
    /// hash collision poisons another client's too: it is then written, as before).
    fn poison(&mut self, client_id: &str, msg: MsgId) {
        let q = Queued {
            ticket: 0,
            count: u32::MAX,
        };
        self.queued.insert(msg_key(client_id, msg), q);
    }

    /// `r` is about to be logged to `wal`: if it is the `DeliveryDone` of a QoS 1 delivery
    /// still in the unwritten batch, that delivery's records are taken back and `r`
    /// cancels (true: do not log it).
    pub fn cancels(&mut self, r: &Record<'_>, wal: &mut Wal) -> bool {
        let Record::DeliveryDone {
            client_id,
            packet_id,
        } = r
        else {
            return false;
        };
        let Some(s) = self.unfollow(client_id, *packet_id) else {
            return false;
        };
        // Oldest first: when the first is unwritten, so is the second (same batch, later).
        if s.pid != packet_id.get() || !same_delivery(&s, client_id, wal) {
            return false;
        }
        if !wal.cancel(s.tickets[0]) {
            return false;
        }
        let mut n = 1;
        if s.tickets[1] != 0 && wal.cancel(s.tickets[1]) {
            n += 1;
        }
        if let Ok(i) = self.stored.binary_search_by_key(&s.msg, |m| m.id) {
            self.stored[i].cancelled += n;
        }
        self.cancelled += u64::from(n) + 1;
        true
    }

    /// Just before `wal`'s batch is written: cancel the stored messages every naming
    /// record of which was cancelled.
    pub fn unreferenced(&mut self, wal: &mut Wal) {
        for m in &self.stored {
            if m.cancelled > 0 && m.cancelled == m.refs && wal.cancel(m.ticket) {
                self.cancelled += 1;
            }
        }
    }

    /// The batch was written: nothing in it can cancel any more.
    pub fn written(&mut self) {
        self.forget_sent();
        self.queued.clear();
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

/// Whether the delivery `s` followed is client `client_id`'s: its last record (the one
/// holding the packet id), read back from the batch, names this client, packet id and
/// message (only those fields are read: [`crate::store::DeliveryHead`]). A record already
/// written or cancelled reads back as nothing: no match.
fn same_delivery(s: &Sent, client_id: &str, wal: &Wal) -> bool {
    let (last, one) = match s.tickets {
        [t, 0] => (t, true),
        [_, t] => (t, false),
    };
    let Some(h) = wal.unwritten_head(last) else {
        return false;
    };
    let kind = match one {
        true => DeliveryKind::QueuedSent,
        false => DeliveryKind::Sent,
    };
    h.kind == kind && h.client_id == client_id.as_bytes() && h.msg == s.msg && h.packet_id == s.pid
}

/// The slot of key `k` in the table of deliveries in flight.
fn slot_of(k: u64) -> usize {
    (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SENT_SLOTS.trailing_zeros())) as usize
}

/// A hash of `s`, eight bytes at a time (seeded with `seed`).
fn hash_str(s: &str, seed: u64) -> u64 {
    let bytes = s.as_bytes();
    let mut h = seed ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(31);
    }
    let mut w = [0u8; 8];
    let rest = chunks.remainder();
    w[..rest.len()].copy_from_slice(rest);
    (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3)
}

/// The key of client `client_id`'s delivery `pid`.
fn key(client_id: &str, pid: NonZeroU16) -> u64 {
    hash_str(client_id, 0xcbf2_9ce4_8422_2325) ^ u64::from(pid.get()) << 48
}

/// The map key of client `client_id`'s queued delivery of `msg`.
fn msg_key(client_id: &str, msg: MsgId) -> u64 {
    hash_str(client_id, 0x8422_2325_cbf2_9ce4) ^ msg.0.rotate_left(29)
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::store::testutil::message;
    use crate::store::{Background, SimDisk, WalOptions};

    fn wal() -> Wal {
        let opts = WalOptions {
            background: Background::Manual,
            ..WalOptions::default()
        };
        Wal::open_on(
            Arc::new(SimDisk::default()),
            Path::new("elide"),
            opts,
            || {},
        )
        .expect("open")
    }

    fn stored(id: u64) -> Record<'static> {
        Record::MessageStored {
            id: MsgId(id),
            msg: message("t", b"m", false),
        }
    }

    fn queued_sent(client: &str, msg: u64, pid: u16) -> Record<'static> {
        Record::DeliveryQueuedSent {
            client_id: Cow::Owned(client.into()),
            msg: MsgId(msg),
            qos: 1,
            retain: false,
            sub_ids: Cow::Owned(Vec::new()),
            packet_id: NonZeroU16::new(pid).expect("non-zero"),
            txn: 0,
        }
    }

    fn done(client: &str, pid: u16) -> Record<'static> {
        Record::DeliveryDone {
            client_id: Cow::Owned(client.into()),
            packet_id: NonZeroU16::new(pid).expect("non-zero"),
        }
    }

    /// Append `r` unless it cancels, as the journal does; true if it cancelled.
    fn log(e: &mut Elision, w: &mut Wal, r: &Record<'_>) -> bool {
        if e.cancels(r, w) {
            return true;
        }
        let ticket = w.append(r);
        e.appended(r, ticket, w);
        false
    }

    /// The records of the unwritten batch still live.
    fn live(w: &Wal) -> Vec<Record<'_>> {
        w.unwritten_tickets()
            .filter_map(|t| w.unwritten(t))
            .map(|r| r.expect("decodes"))
            .collect()
    }

    /// A delivery acknowledged before its batch is written cancels with its message's
    /// record, unless another record of the batch still names the message.
    #[test]
    fn a_message_still_named_keeps_its_record() {
        for named_after in [false, true] {
            let (mut e, mut w) = (Elision::default(), wal());
            assert!(!log(&mut e, &mut w, &stored(1)));
            assert!(!log(&mut e, &mut w, &queued_sent("a", 1, 1)));
            assert!(log(&mut e, &mut w, &done("a", 1)), "cancels");
            if named_after {
                assert!(!log(&mut e, &mut w, &queued_sent("b", 1, 1)));
            }
            e.unreferenced(&mut w);
            if named_after {
                assert_eq!(live(&w), [stored(1), queued_sent("b", 1, 1)]);
                assert_eq!(e.cancelled, 2);
            } else {
                assert!(live(&w).is_empty(), "{:?}", live(&w));
                assert_eq!(e.cancelled, 3);
            }
            w.end_turn().expect("write");
            e.written();
            // Written: a done of a delivery of the written batch is logged as before.
            assert!(!log(&mut e, &mut w, &done("b", 1)));
        }
    }

    /// A done whose delivery was logged for another client, or under another packet id,
    /// does not cancel; nor one after the batch was written, or after a session record.
    #[test]
    fn only_the_same_unwritten_delivery_cancels() {
        let (mut e, mut w) = (Elision::default(), wal());
        log(&mut e, &mut w, &stored(1));
        log(&mut e, &mut w, &queued_sent("a", 1, 1));
        assert!(!log(&mut e, &mut w, &done("b", 1)));
        assert!(!log(&mut e, &mut w, &done("a", 2)));
        assert!(log(&mut e, &mut w, &done("a", 1)));
        assert_eq!(e.cancelled, 2);
        log(&mut e, &mut w, &queued_sent("a", 1, 3));
        log(&mut e, &mut w, &crate::store::testutil::session("c", false));
        assert!(
            !log(&mut e, &mut w, &done("a", 3)),
            "forgotten at a session record"
        );
        log(&mut e, &mut w, &queued_sent("a", 1, 4));
        w.end_turn().expect("write");
        e.written();
        assert!(!log(&mut e, &mut w, &done("a", 4)), "written");
        assert_eq!(e.cancelled, 2);
    }

    /// Make the slot of client `client`'s delivery `pid` claim the records `tickets` for
    /// message `msg`: what a collision of two deliveries' keys leaves.
    fn forge(e: &mut Elision, client: &str, pid: u16, tickets: [Lsn; 2], msg: u64) {
        let pid = NonZeroU16::new(pid).expect("non-zero");
        let k = key(client, pid);
        e.sent[slot_of(k)] = Sent {
            epoch: e.epoch,
            key: k,
            tickets,
            msg: MsgId(msg),
            pid: pid.get(),
        };
        e.followed += 1;
    }

    fn sent(client: &str, msg: u64, pid: u16) -> Record<'static> {
        Record::DeliverySent {
            client_id: Cow::Owned(client.into()),
            msg: MsgId(msg),
            packet_id: NonZeroU16::new(pid).expect("non-zero"),
            state: DeliveryState::InFlight,
        }
    }

    fn queued(client: &str, msg: u64) -> Record<'static> {
        Record::DeliveryQueued {
            client_id: Cow::Owned(client.into()),
            msg: MsgId(msg),
            qos: 1,
            retain: false,
            sub_ids: Cow::Owned(Vec::new()),
            txn: 0,
        }
    }

    /// A slot (or a queued entry) whose key another delivery's collides with points at
    /// records that are not that delivery's: the read-back (client id, message, packet id
    /// and record kind) rejects it, and nothing is taken back.
    #[test]
    fn the_read_back_rejects_a_colliding_slot() {
        let (mut e, mut w) = (Elision::default(), wal());
        log(&mut e, &mut w, &stored(1));
        log(&mut e, &mut w, &stored(2));
        let a = w.last_lsn() + 1;
        log(&mut e, &mut w, &queued_sent("a", 1, 1));
        // Another client, another message, another packet id, and two records where the
        // batch holds one: each claims a's record, none matches it.
        let forged = [
            ("b", 1, [a, 0], 1),
            ("a", 1, [a, 0], 2),
            ("a", 2, [a, 0], 1),
            ("a", 1, [a - 1, a], 1),
        ];
        for (client, pid, tickets, msg) in forged {
            forge(&mut e, client, pid, tickets, msg);
            assert!(
                !log(&mut e, &mut w, &done(client, pid)),
                "{client} {pid} {msg}"
            );
        }
        // a's own entry (the second forgery took its slot) still confirms and cancels.
        forge(&mut e, "a", 1, [a, 0], 1);
        assert!(
            log(&mut e, &mut w, &done("a", 1)),
            "its own done still cancels"
        );
        // A queued delivery whose map entry another client's collides with.
        let q = w.last_lsn() + 1;
        log(&mut e, &mut w, &queued("a", 2));
        e.queued.insert(
            msg_key("b", MsgId(2)),
            Queued {
                ticket: q,
                count: 1,
            },
        );
        log(&mut e, &mut w, &sent("b", 2, 5));
        assert!(
            !log(&mut e, &mut w, &done("b", 5)),
            "b's delivery was not followed"
        );
        log(&mut e, &mut w, &sent("a", 2, 6));
        assert!(
            log(&mut e, &mut w, &done("a", 6)),
            "a's queued then sent cancels"
        );
        assert_eq!(e.cancelled, 2 + 3);
    }

    /// More deliveries in one batch than the table has slots, each acknowledged: every
    /// delivery either cancels whole (its record, its done and its message's record) or
    /// is written whole, and most cancel (against a naive model of the batch).
    #[test]
    fn a_batch_past_the_table_cancels_only_whole_deliveries() {
        let (mut e, mut w) = (Elision::default(), wal());
        let n = SENT_SLOTS as u64;
        let client = |i: u64| format!("client-{}", i % 1000);
        let pid = |i: u64| u16::try_from(i / 1000 + 1).expect("small");
        for i in 1..=n {
            log(&mut e, &mut w, &stored(i));
            log(&mut e, &mut w, &queued_sent(&client(i), i, pid(i)));
        }
        let mut cancelled = 0;
        for i in 1..=n {
            if log(&mut e, &mut w, &done(&client(i), pid(i))) {
                cancelled += 1;
            }
        }
        e.unreferenced(&mut w);
        let (mut msgs, mut sent, mut dones) = (Vec::new(), Vec::new(), Vec::new());
        for r in live(&w) {
            match r {
                Record::MessageStored { id, .. } => msgs.push(id.0),
                Record::DeliveryQueuedSent {
                    client_id,
                    msg,
                    packet_id,
                    ..
                } => {
                    assert_eq!(
                        (&*client_id, packet_id.get()),
                        (&*client(msg.0), pid(msg.0))
                    );
                    sent.push(msg.0);
                }
                Record::DeliveryDone {
                    client_id,
                    packet_id,
                } => {
                    let i = (1..=n).find(|&i| client(i) == client_id && pid(i) == packet_id.get());
                    dones.push(i.expect("a done of a delivery logged"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(msgs, sent, "a message's record stays with its delivery");
        dones.sort_unstable();
        assert_eq!(dones, sent, "a done stays with its delivery");
        assert_eq!(e.cancelled, 3 * cancelled);
        assert!(cancelled > n / 2, "most cancel: {cancelled} of {n}");
        assert!(cancelled < n, "some slots were taken");
    }
}
