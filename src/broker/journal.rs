//! `Journal`: this shard's write-ahead log as the broker uses it (issue 11, phase 2).
//!
//! Owns: the shard's [`Wal`], a shadow [`LiveState`] (every record appended is applied to
//! it, so a checkpoint is the shadow's records; the messages it logs are kept by reference
//! to the broker's own immutable `Arc<Message>`, rendered in their logged form only at a
//! checkpoint), the per-shard message ids, the acks held until durable, and the
//! cross-shard durability barriers. Invariants:
//! * an ack held in turn T is released only when this shard's log is durable up to the
//!   last record of turn T **and** every peer shard this shard sent a publish to by the end
//!   of turn T has reported its own log durable past those publishes (a `Barrier` cast
//!   follows them on the FIFO ring; the peer answers `BarrierDone` once durable, and
//!   once every shared delivery it forwarded on before then is durable where it landed:
//!   its settle tokens, `settle`);
//! * acks leave in the order they were held;
//! * a message is stored (`MessageStored`) at most once per shard per routing, however
//!   many of this shard's sessions queue it;
//! * a QoS 2 PUBLISH of a numbered routing (`Message::txn`) leaves only once its origin
//!   has committed it (`Record::Qos2Committed` durable); held PUBLISHes waiting for a
//!   commit are parked in order, and later ones wait behind them.
//!
//! Must not touch: sockets, sessions' delivery logic (the broker calls [`Journal::log`]
//! at the points where state changes), other shards' logs.

mod elide;
mod settle;

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use super::gate::PendingSubAck;
use crate::protocol::{self, Packet, PacketId, QoS, RetainHandling, SubscriptionOptions, Version};
use crate::session::message::{MessagePool, Publisher};
use crate::session::{ForwardedProps, Message, SubState};
use crate::store::{
    ArmedWill, LiveState, Lsn, MessageProps, MessageWriter, MsgId, PendingWill, Record,
    RetainSource, SessionSlot, SharedMessage, StoredMessage, Subscription, Wal, SHARE_SEQ_MASK,
};

/// A retained message of the recovered store: topic, message, stamp, publisher.
pub type RetainedEntry = (
    String,
    StoredMessage<'static>,
    u64,
    Option<RetainSource<'static>>,
);

/// Shadow messages below which unreferenced ones are not swept (they are at checkpoints).
const GC_MESSAGES_MIN: usize = 4096;

/// Emptied ack lists kept for the next turns ([`Journal::reuse_acks`]).
const SPARE_ACK_LISTS_MAX: usize = 4;

/// Capacity (acks) past which an emptied ack list is freed rather than kept, so that one
/// burst does not pin its memory.
const SPARE_ACKS_CAPACITY_MAX: usize = 1 << 16;

/// An acknowledgement held until the records it vouches for are durable.
#[derive(Debug)]
pub enum HeldAck {
    /// An encoded PUBACK, PUBREC, PUBCOMP or UNSUBACK for link `link` of generation `gen`.
    Bytes {
        /// Link key.
        link: usize,
        /// Link generation (a reused key is another link).
        gen: u32,
        /// The packet.
        bytes: SmallVec<[u8; 16]>,
    },
    /// A SUBACK the gate released, with the retained messages that follow it.
    SubAck(PendingSubAck),
    /// An outbound QoS 2 PUBLISH of a stored session, sent once its `DeliverySent` record
    /// is durable (so that after a crash it is resent under the same packet id, with DUP).
    Publish {
        /// Link key.
        link: usize,
        /// Link generation.
        gen: u32,
        /// Session key.
        session: usize,
        /// The session's uid (a reused key is another session).
        uid: u64,
        /// Its hold's number in the session (`Session::track_held`), never its packet id:
        /// that may be freed and given to another delivery before the release.
        hold: u64,
    },
    /// Log an inbound QoS 2 id (the PUBREC behind it follows).
    Incoming(HeldIncoming),
    /// This shard's QoS 2 routing `txn` is committed (its record is durable): tell the
    /// peers, and send the PUBLISHes that waited for it.
    Commit {
        /// The routing.
        txn: u64,
    },
    /// The acknowledgement to the remote of a QoS 1/2 message a bridge brought in (the
    /// shard keeps the acks of each bridge in order; this releases the oldest).
    Bridge {
        /// The shard's id for the bridge's run.
        bridge: usize,
    },
    /// The outbound records of the bridge whose run has id `bridge` on this shard, up to
    /// its record batch `batch`, are durable: its QoS 2 packets that waited for them may
    /// go (`Bridge::records_durable`).
    BridgeRecords {
        /// The shard's id for the bridge's run.
        bridge: usize,
        /// The bridge's record batch.
        batch: u64,
    },
    /// Will `id` reached every shard it was routed to, and each logged it: log it done.
    WillDone {
        /// Its number (`Record::WillPending`).
        id: u64,
    },
    /// Log the queued deliveries `msgs` of session `session` dropped: a share group moved
    /// them to a member on another shard, whose records are durable now (the epoch's
    /// barrier). A cut before this leaves them with both members (a duplicate), never with
    /// neither.
    ShareMoved {
        /// Session key.
        session: usize,
        /// The session's uid (a reused key is another session).
        uid: u64,
        /// The messages of the deliveries, in this log.
        msgs: Vec<MsgId>,
    },
    /// The JetStream acknowledgement of a message from this node's cluster queue
    /// (`ToCluster::Settle`).
    Cluster {
        /// The link's token for it.
        token: u64,
    },
    /// A QoS 2 message from this node's cluster queue was routed here as routing `txn`
    /// and that routing is durable everywhere: log its id taken (`ClusterReceived`) with
    /// the commit, then let the link acknowledge it to JetStream once those are durable.
    ClusterIn {
        /// The link's token for it.
        token: u64,
        /// Its routing (the gateway's received routings, `Journal::next_received_txn`).
        txn: u64,
        /// Its id (`Record::ClusterReceived`).
        id: u128,
    },
    /// The output of link `link` (generation `gen`), held since its CONNACK, may be
    /// flushed: the records its CONNECT logged are durable.
    Output {
        /// Link key.
        link: usize,
        /// Link generation.
        gen: u32,
    },
}

/// An inbound QoS 2 packet id to log as taken once the routing of its message is durable
/// everywhere (this epoch's release), with the PUBREC that then waits one more round for
/// the id's own record: a PUBREC the client saw always means the id is durable, and a
/// resent PUBLISH recognised by a durable id after a crash was never lost.
#[derive(Debug)]
pub struct HeldIncoming {
    /// Session key.
    pub session: usize,
    /// The session's uid (a reused key is another session).
    pub uid: u64,
    /// The packet id.
    pub pid: PacketId,
    /// The link the PUBREC goes to, and its generation.
    pub link: usize,
    /// Link generation.
    pub gen: u32,
    /// The encoded PUBREC.
    pub bytes: SmallVec<[u8; 16]>,
    /// The QoS 2 routing of the message (0: none), committed with the id.
    pub txn: u64,
    /// The number the session's next new QoS 2 message gets, logged with the id (0: the
    /// message is not numbered; see `Record::Qos2Numbering`).
    pub next: u64,
    /// The PUBRECs of resends of the message that came meanwhile: they follow the commit
    /// as this one does, never before it.
    pub resends: Vec<HeldResend>,
}

/// The PUBREC of a resent QoS 2 PUBLISH that waits for its first copy's commit: (link,
/// generation, encoded PUBREC).
pub type HeldResend = (usize, u32, SmallVec<[u8; 16]>);

/// The acks of one turn, with what they wait for.
struct Epoch {
    lsn: Lsn,
    /// Barrier sequence each peer must have reported durable.
    required: Vec<u64>,
    acks: Vec<HeldAck>,
}

/// A barrier received from peer `to` (its sequence `seq`): answered once the log is
/// durable up to `lsn` and every settle token up to `mark` is answered (`Lsn::MAX` and
/// `u64::MAX` until the end of the turn it arrived in).
#[derive(Debug)]
struct Note {
    lsn: Lsn,
    to: usize,
    seq: u64,
    mark: u64,
}

/// This shard's log, shadow state, held acks and barriers.
pub struct Journal {
    wal: Wal,
    shadow: LiveState,
    next_msg: u64,
    /// The message stored last, so that its other local deliveries refer to it.
    last_msg: Option<(Arc<Message>, MsgId)>,
    /// A shared delivery's message id that its move to another session takes over.
    adopted: Option<(Arc<Message>, MsgId)>,
    /// Acks held during the current turn.
    turn: Vec<HeldAck>,
    /// Emptied ack lists of released epochs, for the next turns' `turn` (a list grown
    /// afresh every turn was ≈ 2% of the broker's instructions per durable QoS 1
    /// message: `docs/benchmarks.md`, "seventh round"); at most
    /// [`SPARE_ACK_LISTS_MAX`].
    spare_acks: Vec<Vec<HeldAck>>,
    epochs: VecDeque<Epoch>,
    /// Peers that were sent a publish this turn.
    sent_to: Vec<bool>,
    barrier_seq: u64,
    required: Vec<u64>,
    peer_done: Vec<u64>,
    /// Barriers received: answer `(to, seq)` once `lsn` is durable and every settle
    /// token up to the mark (the last one issued by the end of the turn) is answered.
    notes: VecDeque<Note>,
    /// Settle tokens of the shared deliveries this shard forwarded on, and the answers it
    /// owes for those it received.
    settles: settle::Settles,
    /// Unix time (ms) at shard clock 0.
    unix_epoch_ms: u64,
    error_logged: bool,
    /// Since when (shard ms) the log cannot write (a write failed, or an `fdatasync`).
    stalled_since_ms: Option<u64>,
    /// Log writes that failed (each retry counts).
    pub write_errors: u64,
    /// QoS 1/2 publishes refused, or connections closed, while the log could not write.
    pub refused: u64,
    /// `refused` when the stall began, for the log line at its end.
    refused_at_stall: u64,
    /// Reused encoding buffer for held packets.
    scratch: Vec<u8>,
    /// The last QoS 2 routing this shard numbered.
    txn_last: u64,
    /// The last share identity this shard numbered (`Message::share_id`, the low bits):
    /// it starts past every one recovery found in any shard's log, so none is reused.
    share_last: u64,
    /// The highest share identity number recovery found (the same on every shard): a
    /// message numbered above it was numbered since the start, and is held by one
    /// share-group member at a time ([`Journal::restored_share_id`]).
    share_seq_restored: u64,
    /// Shared QoS 2 deliveries of restored messages their member completed since the
    /// start, as (session uid, share identity, group): a copy of one moved onto that
    /// member later is one it had ([`Journal::share_done`]). At most one entry per
    /// restored shared delivery, so bounded by the restore.
    share_completed: std::collections::HashSet<(u64, u64, Arc<str>)>,
    /// The last routing of a message from the cluster queue this shard numbered (its own
    /// origin, `shards + shard`: committed in its own order, apart from client routings).
    txn_in_last: u64,
    /// The highest routing committed, by origin: shard `k`'s client routings at `k`,
    /// its routings of messages from the cluster queue at `shards + k`.
    committed: Vec<u64>,
    /// Ids of messages from the cluster queue routed and not yet committed, with the
    /// tokens of copies that came meanwhile (settled with the commit).
    receiving: std::collections::HashMap<u128, Vec<u64>>,
    /// Held PUBLISHes whose records are durable, waiting (in order) for their routing's
    /// commit, with that routing.
    parked: VecDeque<(u64, HeldAck)>,
    /// Origins of this shard's whose commits moved since the peers were last told.
    commit_news: Vec<usize>,
    /// Shadow message count at which unreferenced messages are dropped next.
    gc_at: usize,
    /// The next Will number (`Record::WillPending`).
    next_will: u64,
    /// Wills recovery found pending (to publish again) or armed (clean sessions' Wills
    /// whose connections ended with the crash, to publish), by number, for the first turn.
    restored_wills: Vec<(u64, RestoredWill)>,
    /// Records of the unwritten batch that may still cancel out.
    elision: elide::Elision,
    /// The shared messages the last sweep dropped, for the message pool to reuse
    /// ([`Journal::recycle`]); what is left is freed at the next sweep, so this holds no
    /// more than the shadow held before that sweep.
    swept: Vec<Arc<dyn SharedMessage>>,
}

impl Journal {
    /// A journal over `wal`, whose checkpoint holds `shadow`, for a broker of `shards`.
    pub fn new(wal: Wal, shadow: LiveState, shards: usize, unix_epoch_ms: u64) -> Journal {
        let next_msg = shadow.next_msg_id().0;
        let share_seq = shadow.share_seq;
        let next_will = shadow.next_will_id();
        let restored_wills = restored_wills(&shadow);
        // A recovered shadow's messages are all referenced (`LiveState::finish`): the
        // first sweep waits until the count doubles, as after any sweep.
        let gc_at = (shadow.message_count() * 2).max(GC_MESSAGES_MIN);
        Journal {
            wal,
            shadow,
            next_msg,
            last_msg: None,
            adopted: None,
            turn: Vec::new(),
            spare_acks: Vec::new(),
            epochs: VecDeque::new(),
            sent_to: vec![false; shards],
            barrier_seq: 0,
            required: vec![0; shards],
            peer_done: vec![0; shards],
            notes: VecDeque::new(),
            settles: settle::Settles::default(),
            unix_epoch_ms,
            error_logged: false,
            stalled_since_ms: None,
            write_errors: 0,
            refused: 0,
            refused_at_stall: 0,
            scratch: Vec::new(),
            gc_at,
            txn_last: 0,
            share_last: share_seq,
            share_seq_restored: share_seq,
            share_completed: std::collections::HashSet::new(),
            txn_in_last: 0,
            committed: vec![0; 2 * shards],
            receiving: std::collections::HashMap::new(),
            parked: VecDeque::new(),
            commit_news: Vec::new(),
            next_will,
            restored_wills,
            elision: elide::Elision::default(),
            swept: Vec::new(),
        }
    }

    /// Number a Will about to be published (see [`Record::WillPending`]).
    pub fn next_will_id(&mut self) -> u64 {
        let id = self.next_will;
        self.next_will += 1;
        id
    }

    /// The Wills recovery found pending or armed, by number (the order they were
    /// published or armed in), once.
    pub fn take_restored_wills(&mut self) -> Vec<(u64, RestoredWill)> {
        std::mem::take(&mut self.restored_wills)
    }

    /// A stored session's Will was published by its timer: log its parameters without it
    /// (as they were logged, disconnect time included), after the Will's `WillPending`, so
    /// that once its `WillDone` is durable a restart does not publish it again.
    pub fn drop_session_will(&mut self, client_id: &str) {
        let Some(s) = self.shadow.sessions.get(client_id) else {
            return;
        };
        if s.info.will.is_none() {
            return;
        }
        let at = s.disconnected_at_unix_ms;
        let mut info = s.info.clone();
        info.will = None;
        self.log(Record::SessionCreated(info));
        if let Some(at_unix_ms) = at {
            self.log(Record::SessionDisconnected {
                client_id: client_id.into(),
                at_unix_ms,
            });
        }
    }

    /// The state the log describes (the shadow checkpoints are written from).
    pub fn shadow(&self) -> &LiveState {
        &self.shadow
    }

    /// The restore's messages, one copy for the broker and the shadow: each message the
    /// shadow holds owned (every one, for a journal that has logged nothing), the highest
    /// id first, goes to `restored`, which makes the engine's message of it, and the
    /// shadow keeps that
    /// message by reference (`LiveState::share_owned`). False, and nothing moved, once the
    /// journal has logged a message.
    pub fn share_restored(
        &mut self,
        mut restored: impl FnMut(MsgId, StoredMessage<'static>) -> Arc<Message>,
    ) -> bool {
        self.shadow
            .share_owned(|id, m| restored(id, m) as Arc<dyn SharedMessage>)
    }

    /// Wall-clock time (Unix ms) of shard-clock time `now_ms`.
    pub fn unix_ms(&self, now_ms: u64) -> u64 {
        self.unix_epoch_ms.saturating_add(now_ms)
    }

    /// Shard-clock time of wall-clock time `unix_ms` (saturating at 0).
    pub fn shard_ms(&self, unix_ms: u64) -> u64 {
        unix_ms.saturating_sub(self.unix_epoch_ms)
    }

    /// Append `r` to this turn's batch and apply it to the shadow. A `DeliveryDone` whose
    /// QoS 1 delivery is still in the unwritten batch takes that delivery's record back
    /// instead of being appended (`elide`).
    pub fn log(&mut self, r: Record<'_>) {
        self.log_for(&Cell::new(SessionSlot::NONE), r);
    }

    /// [`Journal::log`] a session's record, its shadow session looked for first in `slot`
    /// (the slot it was found in last, kept by the broker's session: a delivery record's
    /// apply then hashes no client id; `docs/benchmarks.md`, "ninth round"). A stale or
    /// unset slot costs a lookup, and is set to where the session was found.
    pub fn log_for(&mut self, slot: &Cell<SessionSlot>, r: Record<'_>) {
        self.append(&r);
        if !self.shadow.apply_delivery_at(slot, &r) {
            self.shadow.apply(r);
        }
        self.sweep_if_due();
    }

    /// Where a run of records that must reach the disk together begins: give it to
    /// [`Journal::end_run`] after logging them.
    pub fn begin_run(&self) -> Lsn {
        self.wal.next_ticket()
    }

    /// The records logged since [`Journal::begin_run`] gave `first` are framed in one
    /// group ([`Wal::join_from`]): a torn write keeps all of them or none.
    pub fn end_run(&mut self, first: Lsn) {
        self.wal.join_from(first);
    }

    /// Append `r` to the batch, or take back the records it cancels.
    fn append(&mut self, r: &Record<'_>) {
        if !self.elision.cancels(r, &mut self.wal) {
            let ticket = self.wal.append(r);
            self.elision.appended(r, ticket, &self.wal);
        }
    }

    /// Log `msg` as message `id` (`MessageStored`); the shadow keeps a reference to it, not
    /// a copy: the record and the shadow's rendering at a checkpoint are the same
    /// [`stored_form`] of the same immutable message, with the expiry fixed here.
    /// The record is written straight from the message ([`encode_stored`]: the same bytes
    /// as encoding `Record::MessageStored` of [`stored_form`], without building it).
    fn log_message(&mut self, id: MsgId, msg: &Arc<Message>, now_ms: u64) {
        let expires = unix_expiry(msg, self.unix_ms(now_ms), now_ms);
        let ticket = self
            .wal
            .append_with(|out| encode_stored(out, id, msg, expires));
        self.elision.stored_msg(id, ticket);
        let shared: Arc<dyn SharedMessage> = Arc::clone(msg) as Arc<dyn SharedMessage>;
        self.shadow.store_shared(id, shared, expires);
        self.sweep_if_due();
    }

    /// Drop the shadow's unreferenced messages once their count has doubled since the
    /// last sweep (amortised).
    fn sweep_if_due(&mut self) {
        if self.shadow.message_count() >= self.gc_at {
            self.swept.clear();
            self.shadow.drop_unreferenced_into(&mut self.swept);
            self.gc_at = (self.shadow.message_count() * 2).max(GC_MESSAGES_MIN);
        }
    }

    /// Hand messages the last sweep dropped to `pool` until it is full (those still held
    /// elsewhere, or too large, are freed): the shadow held each past its
    /// acknowledgement, when the broker's own `MessagePool::put` found it shared.
    pub fn recycle(&mut self, pool: &mut MessagePool) {
        while pool.wants_more() {
            let Some(m) = self.swept.pop() else {
                return;
            };
            if let Ok(m) = m.into_any().downcast::<Message>() {
                pool.put(m);
            }
        }
    }

    /// The id of `msg` in this shard's log, storing it first if it is not the message
    /// stored last.
    pub fn store_msg(&mut self, msg: &Arc<Message>, now_ms: u64) -> MsgId {
        if let Some((m, id)) = &self.last_msg {
            if Arc::ptr_eq(m, msg) {
                return *id;
            }
        }
        let id = MsgId(self.next_msg);
        self.next_msg += 1;
        self.log_message(id, msg, now_ms);
        self.last_msg = Some((msg.clone(), id));
        id
    }

    /// The LSN up to which the log is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.wal.durable_lsn()
    }

    /// The LSN of the last record appended (to tell whether a step logged anything).
    pub fn last_lsn(&self) -> Lsn {
        self.wal.last_lsn()
    }

    /// The id of `msg` for a delivery through a shared subscription: always a record of
    /// its own (never the message stored last, nor made the one later deliveries reuse),
    /// so that no other delivery of the session refers to the same id and a record about
    /// it by message id ([`Record::DeliveryDropped`], [`Record::DeliverySent`]) finds
    /// exactly this delivery, also when the session has a normal subscription that matched
    /// the same message. The exception is an id adopted for a move ([`Journal::adopt_msg`]).
    pub fn store_shared_msg(&mut self, msg: &Arc<Message>, now_ms: u64) -> MsgId {
        if let Some((m, id)) = self.adopted.take() {
            if Arc::ptr_eq(&m, msg) {
                return id;
            }
        }
        let id = MsgId(self.next_msg);
        self.next_msg += 1;
        self.log_message(id, msg, now_ms);
        id
    }

    /// Let the next [`Journal::store_shared_msg`] of `msg` refer to its record `id` instead
    /// of storing it again, if the shadow still holds it: a shared delivery moving from one
    /// of this shard's sessions to another, whose old delivery (the only other reference)
    /// the caller ends after the new one is logged. Undo with [`Journal::forget_adopted`].
    pub fn adopt_msg(&mut self, msg: &Arc<Message>, id: MsgId) {
        if self.shadow.has_message(&id) {
            self.adopted = Some((msg.clone(), id));
        }
    }

    /// Forget an adopted id the move did not use (it went to another shard, or nowhere).
    pub fn forget_adopted(&mut self) {
        self.adopted = None;
    }

    /// A share identity for a message entering the broker on shard `shard`
    /// ([`Message::share_id`]).
    pub fn next_share_id(&mut self, shard: usize) -> u64 {
        self.share_last += 1;
        (shard as u64 + 1) << 48 | (self.share_last & SHARE_SEQ_MASK)
    }

    /// Whether share identity `id` was given before this start (recovery restored a
    /// message with it, so two members' logs may each hold a delivery of it: a move
    /// between them cut short by a power cut leaves it with both).
    pub fn restored_share_id(&self, id: u64) -> bool {
        id != 0 && id & SHARE_SEQ_MASK <= self.share_seq_restored
    }

    /// Session `uid` completed (PUBCOMP) its delivery of share identity `id` through
    /// group `group`: remembered when the message was restored, since another member's
    /// copy of it may still move onto this one.
    pub fn note_share_completed(&mut self, uid: u64, id: u64, group: &Arc<str>) {
        if self.restored_share_id(id) {
            self.share_completed.insert((uid, id, group.clone()));
        }
    }

    /// Whether session `uid` completed its delivery of restored share identity `id`
    /// through `group` since the start ([`Journal::note_share_completed`]).
    pub fn share_done(&self, uid: u64, id: u64, group: &Arc<str>) -> bool {
        !self.share_completed.is_empty() && self.share_completed.contains(&(uid, id, group.clone()))
    }

    /// Number a new QoS 2 routing of shard `shard` (see [`Record::Qos2Committed`]).
    pub fn next_txn(&mut self, shard: usize) -> u64 {
        self.txn_last += 1;
        (shard as u64 + 1) << 48 | self.txn_last
    }

    /// Number the routing of a message from the cluster queue, on shard `shard` (see
    /// [`HeldAck::ClusterIn`]).
    pub fn next_received_txn(&mut self, shard: usize) -> u64 {
        self.txn_in_last += 1;
        (self.sent_to.len() as u64 + shard as u64 + 1) << 48 | self.txn_in_last
    }

    /// Whether a message from the cluster queue with id `id` was routed here and its
    /// commit logged (durable once the records logged so far are).
    pub fn was_received(&self, id: u128) -> bool {
        self.shadow.cluster_received.contains(id)
    }

    /// A copy (token `token`) of a message from the cluster queue with id `id`: if the
    /// first is being routed, keep the token to settle with that one's commit and return
    /// true. (Settled sooner, a power cut before the commit is durable would lose the
    /// message: its deliveries dropped by recovery, JetStream holding it acknowledged.)
    pub fn settle_with(&mut self, id: u128, token: u64) -> bool {
        match self.receiving.get_mut(&id) {
            Some(tokens) => {
                tokens.push(token);
                true
            }
            None => false,
        }
    }

    /// A message from the cluster queue with id `id` is being routed.
    pub fn receiving(&mut self, id: u128) {
        self.receiving.entry(id).or_default();
    }

    /// Its routing is committed (its `ClusterReceived` logged): the tokens of the copies
    /// that came meanwhile.
    pub fn received(&mut self, id: u128) -> Vec<u64> {
        self.receiving.remove(&id).unwrap_or_default()
    }

    /// The origin index of routing `txn` (see `committed`).
    pub fn origin_of(txn: u64) -> Option<usize> {
        ((txn >> 48) as usize).checked_sub(1)
    }

    /// Whether routing `txn` is committed (its origin said so).
    pub fn is_committed(&self, txn: u64) -> bool {
        let origin = (txn >> 48) as usize;
        txn == 0
            || origin
                .checked_sub(1)
                .and_then(|o| self.committed.get(o))
                .is_some_and(|&c| c >= txn)
    }

    /// The highest routing committed, by origin shard.
    pub fn commits(&self) -> &[u64] {
        &self.committed
    }

    /// Origin `origin` has committed its routings up to `txn`; `mine` when that is one of
    /// this shard's.
    pub fn committed(&mut self, origin: usize, txn: u64, mine: bool) {
        if let Some(c) = self.committed.get_mut(origin) {
            *c = (*c).max(txn);
        }
        if mine && !self.commit_news.contains(&origin) {
            self.commit_news.push(origin);
        }
    }

    /// This shard's origins whose commits moved since the last call, with their highest
    /// commit (to tell the peers).
    pub fn commit_news(&mut self) -> Vec<(usize, u64)> {
        let news = std::mem::take(&mut self.commit_news);
        news.into_iter()
            .filter_map(|o| Some((o, *self.committed.get(o)?)))
            .collect()
    }

    /// Whether held PUBLISHes wait for a commit (a later one then waits behind them).
    pub fn parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Park a held PUBLISH until routing `txn` is committed.
    pub fn park(&mut self, txn: u64, ack: HeldAck) {
        self.parked.push_back((txn, ack));
    }

    /// The oldest parked PUBLISH, once its routing is committed.
    pub fn unpark(&mut self) -> Option<HeldAck> {
        let &(txn, _) = self.parked.front()?;
        if !self.is_committed(txn) {
            return None;
        }
        self.parked.pop_front().map(|(_, a)| a)
    }

    /// Hold `ack` until this turn's records (and its publishes to peers) are durable.
    pub fn hold(&mut self, ack: HeldAck) {
        self.turn.push(ack);
    }

    /// `packet` encoded for `version` (for a held ack built by hand).
    pub fn encode_held(&mut self, version: Version, packet: &Packet<'_>) -> SmallVec<[u8; 16]> {
        self.scratch.clear();
        protocol::encode(packet, version, &mut self.scratch);
        SmallVec::from_slice(&self.scratch)
    }

    /// Hold `packet`, encoded for `version`, for link `link` of generation `gen`.
    pub fn hold_packet(&mut self, link: usize, gen: u32, version: Version, packet: &Packet<'_>) {
        self.scratch.clear();
        protocol::encode(packet, version, &mut self.scratch);
        let bytes = SmallVec::from_slice(&self.scratch);
        self.turn.push(HeldAck::Bytes { link, gen, bytes });
    }

    /// A publish cast went to peer `to` this turn.
    pub fn sent_publish(&mut self, to: usize) {
        if let Some(s) = self.sent_to.get_mut(to) {
            *s = true;
        }
    }

    /// Peer `from` sent barrier `seq`: every publish it sent before is applied here. The
    /// answer waits for the end of this turn's batch, not only the records so far: what
    /// those publishes cause later in the turn (a bridge's queue record) counts too.
    pub fn barrier(&mut self, from: usize, seq: u64) {
        self.notes.push_back(Note {
            lsn: Lsn::MAX,
            to: from,
            seq,
            mark: u64::MAX,
        });
    }

    /// A settle token for a shared delivery this shard forwards on to another shard
    /// (`Cast::ShareDeliver`): barrier answers sealed from now on wait for its answer.
    pub fn issue_settle(&mut self) -> u64 {
        self.settles.issue()
    }

    /// Peer answered settle token `token`: the delivery is durable where it landed.
    pub fn settled(&mut self, token: u64) {
        self.settles.settled(token);
    }

    /// A forwarded shared delivery of shard `to` (its token `token`) was handled here:
    /// answer once this turn's records are durable and `child` (the token issued
    /// forwarding it on, if it was) is answered.
    pub fn owe_settle(&mut self, to: usize, token: u64, child: Option<u64>) {
        self.settles.owe(to, token, child);
    }

    /// Settle tokens open and answers owed.
    pub fn settles_pending(&self) -> usize {
        self.settles.pending()
    }

    /// Settle tokens this journal issued (forwards of shared deliveries).
    pub fn settles_issued(&self) -> u64 {
        self.settles.mark()
    }

    /// Peer `from` has made everything before its barrier `seq` durable.
    pub fn barrier_done(&mut self, from: usize, seq: u64) {
        if let Some(d) = self.peer_done.get_mut(from) {
            *d = (*d).max(seq);
        }
    }

    /// End of a turn: seal its acks, write the batch, and return the barriers to send
    /// (`(peer, seq)`) in `barriers`, the barrier answers in `answers` and the settle
    /// answers (`(peer, token)`) in `settled`.
    pub fn end_turn(
        &mut self,
        now_ms: u64,
        barriers: &mut Vec<(usize, u64)>,
        answers: &mut Vec<(usize, u64)>,
        settled: &mut Vec<(usize, u64)>,
    ) {
        if self.sent_to.iter().any(|&s| s) {
            self.barrier_seq += 1;
            for (p, sent) in self.sent_to.iter_mut().enumerate() {
                if std::mem::take(sent) {
                    self.required[p] = self.barrier_seq;
                    barriers.push((p, self.barrier_seq));
                }
            }
        }
        if !self.turn.is_empty() {
            let next = self.spare_acks.pop().unwrap_or_default();
            self.epochs.push_back(Epoch {
                lsn: self.wal.last_lsn(),
                required: self.required.clone(),
                acks: std::mem::replace(&mut self.turn, next),
            });
        }
        self.last_msg = None;
        self.adopted = None;
        let last = self.wal.last_lsn();
        let mark = self.settles.mark();
        for n in self.notes.iter_mut().rev() {
            if n.lsn != Lsn::MAX {
                break;
            }
            n.lsn = last;
            n.mark = mark;
        }
        self.settles.seal(last);
        if !self.wal.will_defer() {
            self.elision.unreferenced(&mut self.wal);
            match self.wal.end_turn() {
                Err(e) => self.stall(now_ms, &e),
                Ok(()) => {
                    self.elision.written();
                    self.unstall(now_ms);
                }
            }
        }
        let durable = self.wal.durable_lsn();
        let settles = &self.settles;
        while self
            .notes
            .front()
            .is_some_and(|n| n.lsn <= durable && settles.clear_up_to(n.mark))
        {
            if let Some(n) = self.notes.pop_front() {
                answers.push((n.to, n.seq));
            }
        }
        self.settles.answers(durable, settled);
        self.checkpoint_if_due();
    }

    /// The next batch of acks that may go out now, if any (in the order held; give the
    /// emptied list back with [`Journal::reuse_acks`]).
    pub fn released(&mut self) -> Option<Vec<HeldAck>> {
        let durable = self.wal.durable_lsn();
        let e = self.epochs.front()?;
        let peers_ok = e
            .required
            .iter()
            .zip(&self.peer_done)
            .all(|(need, done)| done >= need);
        if e.lsn <= durable && peers_ok {
            self.epochs.pop_front().map(|e| e.acks)
        } else {
            None
        }
    }

    /// Give back a list [`Journal::released`] returned, once its acks are taken out: a
    /// later turn holds its acks in it instead of growing a new list.
    pub fn reuse_acks(&mut self, mut acks: Vec<HeldAck>) {
        acks.clear();
        if self.spare_acks.len() < SPARE_ACK_LISTS_MAX
            && acks.capacity() > 0
            && acks.capacity() <= SPARE_ACKS_CAPACITY_MAX
        {
            self.spare_acks.push(acks);
        }
    }

    /// Manual mode ([`crate::store::Background::Manual`]): run one round of the sync
    /// thread's work (`sync`), or a checkpoint write waiting for it. True if anything ran.
    pub fn background_step(&mut self, sync: bool) -> bool {
        if sync {
            self.wal.sync_step()
        } else {
            self.wal.run_background()
        }
    }

    /// Whether records or acks wait for the next `end_turn` (not while the log cannot
    /// write: the shard then retries on its next turn, at least once a second, instead of
    /// spinning on a full disk).
    pub fn unwritten(&self) -> bool {
        self.stalled_since_ms.is_none()
            && ((self.wal.batch_bytes() > 0 && !self.wal.will_defer()) || !self.turn.is_empty())
    }

    /// Records taken back before they were written (they cancelled out).
    pub fn cancelled_records(&self) -> u64 {
        self.elision.cancelled
    }

    /// Whether the log cannot write now: new QoS 1/2 publishes are refused.
    pub fn stalled(&self) -> bool {
        self.stalled_since_ms.is_some()
    }

    /// Bytes appended and not yet written (they grow while the log is stalled).
    pub fn unwritten_bytes(&self) -> usize {
        self.wal.batch_bytes()
    }

    /// The held inbound QoS 2 id `pid` of session `uid` whose commit is not logged yet,
    /// if any (the newest: an older one's id was released early, by a PUBREL before its
    /// PUBREC): a resend of its message must be answered behind it.
    pub fn incoming_held(&mut self, uid: u64, pid: PacketId) -> Option<&mut HeldIncoming> {
        let epochs = self
            .epochs
            .iter_mut()
            .rev()
            .flat_map(|e| e.acks.iter_mut().rev());
        self.turn
            .iter_mut()
            .rev()
            .chain(epochs)
            .find_map(|a| match a {
                HeldAck::Incoming(h) if h.uid == uid && h.pid == pid => Some(h),
                _ => None,
            })
    }

    /// Take delivery `msg` of session `session` (uid `uid`) out of the held end of its
    /// move (`HeldAck::ShareMoved`), if it is still held: the delivery came back to that
    /// session, which takes its record over. Whether it was held.
    pub fn reclaim_moved(&mut self, session: usize, uid: u64, msg: MsgId) -> bool {
        let epochs = self.epochs.iter_mut().flat_map(|e| e.acks.iter_mut());
        for a in self.turn.iter_mut().chain(epochs) {
            let HeldAck::ShareMoved {
                session: s,
                uid: u,
                msgs,
            } = a
            else {
                continue;
            };
            if *s != session || *u != uid {
                continue;
            }
            if let Some(i) = msgs.iter().position(|m| *m == msg) {
                msgs.remove(i);
                return true;
            }
        }
        false
    }

    /// Whether link `link` (generation `gen`) has an ack held: a refusal must then wait
    /// behind it, to keep the acks in the order of the PUBLISHes.
    pub fn holds_for(&self, link: usize, gen: u32) -> bool {
        let mine = |a: &HeldAck| match a {
            HeldAck::Bytes {
                link: l, gen: g, ..
            }
            | HeldAck::Publish {
                link: l, gen: g, ..
            } => *l == link && *g == gen,
            HeldAck::SubAck(p) => p.link == link && p.gen == gen,
            HeldAck::Incoming(h) => {
                (h.link == link && h.gen == gen)
                    || h.resends.iter().any(|r| r.0 == link && r.1 == gen)
            }
            // Not an ack: whatever is written to the link meanwhile stays behind its CONNACK.
            HeldAck::Output { .. }
            | HeldAck::Bridge { .. }
            | HeldAck::BridgeRecords { .. }
            | HeldAck::Cluster { .. }
            | HeldAck::ClusterIn { .. }
            | HeldAck::Commit { .. }
            | HeldAck::WillDone { .. }
            | HeldAck::ShareMoved { .. } => false,
        };
        self.turn.iter().any(mine) || self.epochs.iter().any(|e| e.acks.iter().any(mine))
    }

    /// A write failed: from now on QoS 1/2 publishes are refused until one succeeds.
    fn stall(&mut self, now_ms: u64, e: &crate::store::StoreError) {
        self.write_errors += 1;
        if self.stalled_since_ms.is_none() {
            self.stalled_since_ms = Some(now_ms);
            self.refused_at_stall = self.refused;
            let permanent = if self.wal.failed() {
                " An fdatasync failed: the log stays closed until the broker is restarted."
            } else {
                ""
            };
            crate::log::log(format_args!(
                "Error: {e}. Nothing more is acknowledged until the store can write again: new QoS 1/2 publishes are refused (MQTT 5: reason 0x97 Quota exceeded; 3.x: acknowledgements wait).{permanent}"
            ));
        }
    }

    /// A write succeeded: if the log was stalled, say so and accept publishes again.
    fn unstall(&mut self, now_ms: u64) {
        if let Some(since) = self.stalled_since_ms.take() {
            crate::log::log(format_args!(
                "Notice: store: writing again after {} ms; {} publish(es) refused meanwhile.",
                now_ms.saturating_sub(since),
                self.refused - self.refused_at_stall
            ));
        }
    }

    /// Acks still held (for figures and tests).
    pub fn held(&self) -> usize {
        self.turn.len() + self.epochs.iter().map(|e| e.acks.len()).sum::<usize>()
    }

    fn checkpoint_if_due(&mut self) {
        if let Err(e) = self.wal.poll_checkpoint() {
            self.report(&e);
        }
        if !self.wal.checkpoint_due(Instant::now()) {
            return;
        }
        self.shadow.drop_unreferenced();
        if let Err(e) = self.wal.checkpoint(self.shadow.records()) {
            self.report(&e);
        }
    }

    fn report(&mut self, e: &crate::store::StoreError) {
        if !std::mem::replace(&mut self.error_logged, true) {
            crate::log::log(format_args!(
                "Error: {e}; acknowledgements wait until the store can write again"
            ));
        }
    }
}

/// A Will recovery found still to publish.
#[derive(Debug, Clone)]
pub enum RestoredWill {
    /// Published before the stop, not yet durable everywhere it went (`WillPending`):
    /// published again, with its retained stamp.
    Pending(PendingWill),
    /// A clean session's, armed at its CONNECT (`WillArmed`): its connection ended with
    /// the stop, which counts as its end.
    Armed(ArmedWill),
}

/// The Wills of recovered `state` to publish, pending and armed together in the order of
/// their numbers. Both kinds share one number space, given in order: an armed Will's at
/// its CONNECT, a stored session's at publication (and a merge of shards' states keeps
/// the order within each shard, `LiveState::merge`). So a client's older connection's
/// Will, published and still pending, comes before the Will its newer connection armed:
/// publishing every armed Will first reversed the two (power seed 3,563: a watcher got
/// a clean client's two Wills in the wrong order). Each Will is in the part of its
/// client's home shard (`LiveState::split`), which publishes them on its first turn
/// before its session timers run (`Broker::on_timers`): so a client's pending Will goes
/// out before its stored session's own Will, due at the restart too.
fn restored_wills(state: &LiveState) -> Vec<(u64, RestoredWill)> {
    let pending = state
        .pending_wills
        .iter()
        .map(|(&id, w)| (id, RestoredWill::Pending(w.clone())));
    let armed = state
        .armed_wills
        .iter()
        .map(|(&id, w)| (id, RestoredWill::Armed(w.clone())));
    let mut wills: Vec<(u64, RestoredWill)> = pending.chain(armed).collect();
    // Numbers are unique across the two maps (a Will is armed, then pending, then done,
    // under one number); a stable sort keeps a pending one first were they not.
    wills.sort_by_key(|(id, _)| *id);
    wills
}

/// The stored form of `msg` at shard time `now_ms` (wall clock `unix_now_ms`).
pub fn to_stored(msg: &Message, unix_now_ms: u64, now_ms: u64) -> StoredMessage<'_> {
    stored_form(msg, unix_expiry(msg, unix_now_ms, now_ms))
}

/// `msg`'s expiry in wall-clock time, at shard time `now_ms` (wall clock `unix_now_ms`).
fn unix_expiry(msg: &Message, unix_now_ms: u64, now_ms: u64) -> Option<u64> {
    msg.expires_at_ms
        .map(|t| unix_now_ms.saturating_add(t.saturating_sub(now_ms)))
}

/// Append the body of `Record::MessageStored { id, msg: stored_form(msg, expires) }` to
/// `out`, byte for byte, straight from the message (no [`StoredMessage`] built; the
/// journal logs every message it stores so).
pub fn encode_stored(out: &mut Vec<u8>, id: MsgId, msg: &Message, expires: Option<u64>) {
    let mut w = MessageWriter::stored(out, id, msg.share_id);
    w.message(&msg.topic, &msg.payload, msg.qos as u8, msg.retain, expires);
    match msg.props.as_deref() {
        Some(p) => w.props(
            p.payload_format_indicator,
            p.content_type.as_deref(),
            p.response_topic.as_deref(),
            p.correlation_data.as_deref(),
            &p.user_properties,
        ),
        None => w.no_props(),
    }
}

/// A journal's shadow keeps the messages it logs by reference (`LiveState::store_shared`).
impl SharedMessage for Message {
    fn stored(&self, expires_at_unix_ms: Option<u64>) -> StoredMessage<'_> {
        stored_form(self, expires_at_unix_ms)
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// The stored form of `msg` with its expiry already in wall-clock time: what
/// `MessageStored` logs and what the shadow renders at a checkpoint.
pub fn stored_form(msg: &Message, expires_at_unix_ms: Option<u64>) -> StoredMessage<'_> {
    let props = msg.props.as_deref().map(|p| MessageProps {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.as_deref().map(Into::into),
        response_topic: p.response_topic.as_deref().map(Into::into),
        correlation_data: p.correlation_data.as_deref().map(Into::into),
        user_properties: (&*p.user_properties).into(),
    });
    StoredMessage {
        topic: (&*msg.topic).into(),
        payload: (&*msg.payload).into(),
        qos: msg.qos as u8,
        retain: msg.retain,
        expires_at_unix_ms,
        props: props.unwrap_or_default(),
        share_id: msg.share_id,
    }
}

/// The message of a stored one, its expiry on the shard clock (`unix_now_ms` is `now_ms`).
pub fn from_stored(m: &StoredMessage<'_>, unix_now_ms: u64, now_ms: u64, stamp: u64) -> Message {
    let p = &m.props;
    let has_props = p.payload_format_indicator.is_some()
        || p.content_type.is_some()
        || p.response_topic.is_some()
        || p.correlation_data.is_some()
        || !p.user_properties.is_empty();
    Message {
        topic: Arc::from(&*m.topic),
        payload: m.payload.as_ref().into(),
        qos: qos(m.qos),
        retain: m.retain,
        props: has_props.then(|| {
            Box::new(ForwardedProps {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.as_deref().map(Into::into),
                response_topic: p.response_topic.as_deref().map(Into::into),
                correlation_data: p.correlation_data.as_deref().map(Into::into),
                user_properties: p.user_properties.as_ref().into(),
            })
        }),
        expires_at_ms: m
            .expires_at_unix_ms
            .map(|t| now_ms.saturating_add(t.saturating_sub(unix_now_ms))),
        origin: 0,
        retain_stamp: stamp,
        // A retained message's publisher comes from its own record (`publisher_of`).
        publisher: None,
        txn: 0,
        share_id: m.share_id,
    }
}

/// The stored form of a retained message's publisher.
pub fn source_of(p: &Publisher) -> RetainSource<'_> {
    RetainSource {
        username: p.username.as_deref().map(Into::into),
        client_id: (&*p.client_id).into(),
        listener: u32::try_from(p.listener).unwrap_or(u32::MAX),
    }
}

/// The publisher of a stored retained message.
pub fn publisher_of(s: &RetainSource<'_>) -> Arc<Publisher> {
    Arc::new(Publisher {
        username: s.username.as_deref().map(Into::into),
        client_id: (*s.client_id).into(),
        listener: usize::try_from(s.listener).unwrap_or(usize::MAX),
    })
}

/// QoS of a stored byte (anything unknown is treated as 2, the safest).
pub fn qos(b: u8) -> QoS {
    match b {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The stored form of a subscription `full` (`$share/g/f` or a filter).
pub fn to_subscription<'a>(full: &'a str, st: &SubState) -> Subscription<'a> {
    let (group, filter) = match super::shared::split_key(full) {
        Some((g, f)) => (Some(g.into()), f),
        None => (None, full),
    };
    let o = st.options;
    Subscription {
        share_group: group,
        filter: filter.into(),
        qos: o.qos as u8,
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        retain_handling: match o.retain_handling {
            RetainHandling::SendAtSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        },
        identifier: st.sub_id,
    }
}

/// The session's form of a stored subscription.
pub fn from_subscription(s: &Subscription<'_>) -> SubState {
    SubState {
        options: SubscriptionOptions {
            qos: qos(s.qos),
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            retain_handling: match s.retain_handling {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            },
        },
        sub_id: s.identifier,
    }
}
