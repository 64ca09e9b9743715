//! The records of the write-ahead log and their binary encoding.
//!
//! Owns: the [`Record`] enum (everything issue 11 persists) and its body encoding, which
//! [`super::frame`] wraps in a length + CRC32C frame. Invariants: `decode(encode(r)) == r`
//! for every record; decoding any byte string returns a record or a typed [`DecodeError`],
//! never panics, and borrows its strings and byte strings from the input (it allocates
//! only a Subscription Identifier list, and only after checking its length against the
//! bytes that remain). Must not touch:
//! files, MQTT packets, the engine's types (the engine converts to and from these).
//!
//! Layout: one tag byte, then fields in declaration order. Integers are little-endian;
//! strings and byte strings are a `u32` length then the bytes; `Option` is a `0`/`1` byte
//! then the value. The format version lives in the segment and checkpoint headers
//! ([`super::FORMAT_VERSION`]); a new field means a new tag or a new version, never a
//! reinterpretation of an old one.

use std::borrow::Cow;
use std::num::NonZeroU16;

/// A message's id within one shard's log: assigned by the engine, unique per shard, never
/// reused while a reference to it may survive (a counter seeded from recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u64);

/// MQTT 5 properties that travel with a message, as the engine forwards them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProps<'a> {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// Content Type.
    pub content_type: Option<Cow<'a, str>>,
    /// Response Topic.
    pub response_topic: Option<Cow<'a, str>>,
    /// Correlation Data.
    pub correlation_data: Option<Cow<'a, [u8]>>,
    /// User Properties in their wire encoding (repeated `0x26, name, value`).
    pub user_properties: Cow<'a, [u8]>,
}

/// An application message, stored once however many sessions refer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage<'a> {
    /// Topic name.
    pub topic: Cow<'a, str>,
    /// Payload.
    pub payload: Cow<'a, [u8]>,
    /// The publisher's QoS (0, 1 or 2).
    pub qos: u8,
    /// The publisher's RETAIN flag.
    pub retain: bool,
    /// Message expiry as wall-clock time (ms since the Unix epoch), so that it survives a
    /// restart; the engine converts from and to its monotonic shard clock.
    pub expires_at_unix_ms: Option<u64>,
    /// Forwarded properties.
    pub props: MessageProps<'a>,
    /// Its identity for share groups, the same in every shard's log (the engine's
    /// `Message::share_id`; 0: none). Only `MessageStored` keeps it (tag 32 when not 0).
    pub share_id: u64,
}

/// The number part of a share identity ([`StoredMessage::share_id`]); its origin shard
/// (+ 1) is in the 16 bits above.
pub const SHARE_SEQ_MASK: u64 = (1 << 48) - 1;

/// Who published a retained message, as the ACL sees it: kept so that
/// `check_retain_source` still applies after a restart (Mosquitto keeps the same in its
/// database: `source_id`, `source_username` and the listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainSource<'a> {
    /// Username (`None`: anonymous).
    pub username: Option<Cow<'a, str>>,
    /// Client Identifier.
    pub client_id: Cow<'a, str>,
    /// Id of the listener whose ACL applied (the engine's listener id).
    pub listener: u32,
}

impl RetainSource<'_> {
    /// The same, owning its strings.
    pub fn into_owned(self) -> RetainSource<'static> {
        RetainSource {
            username: self.username.map(|u| Cow::Owned(u.into_owned())),
            client_id: Cow::Owned(self.client_id.into_owned()),
            listener: self.listener,
        }
    }
}

/// A session's Will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// Will Topic.
    pub topic: Cow<'a, str>,
    /// Will Payload.
    pub payload: Cow<'a, [u8]>,
    /// Will QoS.
    pub qos: u8,
    /// Will Retain.
    pub retain: bool,
    /// Will Delay Interval, seconds.
    pub delay_s: u32,
    /// Message Expiry Interval of the Will, seconds (relative: it starts at publication).
    pub expiry_interval_s: Option<u32>,
    /// Forwarded properties.
    pub props: MessageProps<'a>,
}

/// A persistent session as created by CONNECT with Clean Start 0 (or a 5.0 session with a
/// non-zero expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo<'a> {
    /// Client Identifier (the session's key, and its home shard's hash input).
    pub client_id: Cow<'a, str>,
    /// Protocol level of the connection that created it (3, 4 or 5).
    pub protocol: u8,
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry_interval_s: u32,
    /// The Will, if any.
    pub will: Option<Will<'a>>,
}

/// One subscription of a session, with every option and its identifier. A subscription
/// with a share group is that session's membership of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// `Some(group)` for `$share/group/filter`.
    pub share_group: Option<Cow<'a, str>>,
    /// Topic filter (without the `$share/group/` prefix).
    pub filter: Cow<'a, str>,
    /// Maximum QoS granted.
    pub qos: u8,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling (0, 1 or 2).
    pub retain_handling: u8,
    /// Subscription Identifier.
    pub identifier: Option<u32>,
}

/// Where an outbound delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting in the session queue: no packet id yet.
    Queued,
    /// PUBLISH sent with a packet id, awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    InFlight,
    /// QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP.
    PubrelSent,
}

/// One log record. `Record<'static>` is the owned form; decoding borrows from its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A persistent session was created, or its parameters replaced (reconnect).
    SessionCreated(SessionInfo<'a>),
    /// The session's connection ended; its expiry counts from `at_unix_ms`.
    SessionDisconnected {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// Wall-clock time of the disconnect, ms since the Unix epoch.
        at_unix_ms: u64,
    },
    /// The session is gone (clean start, expiry, or a takeover with clean start).
    SessionEnded {
        /// Client Identifier.
        client_id: Cow<'a, str>,
    },
    /// A subscription was added or replaced (same share group and filter).
    SubscriptionAdded {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The subscription.
        sub: Subscription<'a>,
    },
    /// A subscription was removed.
    SubscriptionRemoved {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// Share group, if it was a shared subscription.
        share_group: Option<Cow<'a, str>>,
        /// Topic filter.
        filter: Cow<'a, str>,
    },
    /// A message was stored under `id` (once per shard log, before any reference to it).
    ///
    /// Encoded under two tags: 6 without a share identity, 32 with it after the id
    /// (`msg.share_id`; tag 6 decodes with 0).
    MessageStored {
        /// Its id in this shard's log.
        id: MsgId,
        /// The message.
        msg: StoredMessage<'a>,
    },
    /// A reference to `msg` joined the back of the session's queue.
    ///
    /// Encoded under two tags: the first version had neither `retain` nor `sub_ids` (it
    /// decodes with `false` and none), so a delivery with neither keeps that smaller form.
    DeliveryQueued {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The message.
        msg: MsgId,
        /// QoS of this delivery (the granted one).
        qos: u8,
        /// RETAIN flag this delivery is sent with (retain-as-published), which is not
        /// the stored message's flag for a subscriber without that option.
        retain: bool,
        /// Subscription Identifiers of the matching subscriptions (5.0).
        sub_ids: Cow<'a, [u32]>,
        /// The QoS 2 routing the delivery belongs to (0: none; see
        /// [`Record::Qos2Committed`]). Carried in the delivery's own record (tag 24), so
        /// no torn batch can keep the delivery without it.
        txn: u64,
    },
    /// A reference to `msg` joined the back of the session's queue and was sent at once
    /// under `packet_id` (`InFlight`): a `DeliveryQueued` and its `DeliverySent` in one
    /// record, for the common case of a delivery written in the turn it is routed.
    DeliveryQueuedSent {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The message.
        msg: MsgId,
        /// QoS of this delivery (the granted one).
        qos: u8,
        /// RETAIN flag this delivery is sent with.
        retain: bool,
        /// Subscription Identifiers of the matching subscriptions (5.0).
        sub_ids: Cow<'a, [u32]>,
        /// Packet id used on the wire.
        packet_id: NonZeroU16,
        /// The QoS 2 routing the delivery belongs to (0: none; tag 25 when set).
        txn: u64,
    },
    /// A delivery got a packet id (`InFlight`, the oldest queued reference to `msg`), or an
    /// in-flight one moved on (`PubrelSent`, found by packet id).
    DeliverySent {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The message.
        msg: MsgId,
        /// Packet id used on the wire.
        packet_id: NonZeroU16,
        /// The new state (`InFlight` or `PubrelSent`).
        state: DeliveryState,
    },
    /// An in-flight delivery completed: PUBACK (QoS 1) or PUBCOMP (QoS 2).
    DeliveryDone {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// Its packet id.
        packet_id: NonZeroU16,
    },
    /// The oldest queued (not in-flight) reference to `msg` was dropped: expiry, overflow.
    DeliveryDropped {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The message.
        msg: MsgId,
    },
    /// The delivery just added to the session's queue (`DeliveryQueued`,
    /// `DeliveryQueuedSent`) came through share group `group` on `filter`: after a restart
    /// it still moves to another member when its session goes offline. Tag 26.
    DeliveryShare {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// Share group name.
        group: Cow<'a, str>,
        /// Topic filter (without the `$share/group/` prefix).
        filter: Cow<'a, str>,
    },
    /// The session completed (PUBCOMP) its QoS 2 delivery of the message of share
    /// identity `share_id` through share group `group` on `filter`, one that came by a
    /// move or was restored: a copy another member's log may still hold must not be moved
    /// onto it after a restart (decision 0023). Tag 33.
    ShareCompleted {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The message's share identity (`Message::share_id`, not 0).
        share_id: u64,
        /// Share group name.
        group: Cow<'a, str>,
        /// Topic filter (without the `$share/group/` prefix).
        filter: Cow<'a, str>,
    },
    /// Inbound QoS 2: PUBREC sent for `packet_id`, PUBREL awaited.
    IncomingQos2Set {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// Packet id.
        packet_id: NonZeroU16,
    },
    /// Inbound QoS 2: PUBREL received (PUBCOMP to be sent).
    IncomingQos2Cleared {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// Packet id.
        packet_id: NonZeroU16,
    },
    /// The retained message of `topic` is now `msg` (stored before in this log).
    ///
    /// Encoded under two tags: the first version had no `source` (it decodes with none),
    /// so an entry without one keeps that form.
    RetainedSet {
        /// Topic name.
        topic: Cow<'a, str>,
        /// The message.
        msg: MsgId,
        /// Lamport stamp of the update: the highest stamp wins when logs merge.
        stamp: u64,
        /// Its publisher, when an ACL was in force (`check_retain_source`).
        source: Option<RetainSource<'a>>,
    },
    /// The retained message of `topic` was cleared.
    RetainedCleared {
        /// Topic name.
        topic: Cow<'a, str>,
        /// Lamport stamp of the update.
        stamp: u64,
    },
    /// The delivery `DeliveryQueued` just added to the session's queue belongs to the
    /// QoS 2 routing `txn` (see [`Record::Qos2Committed`]). Written by older versions
    /// only (still read): a torn batch could keep the delivery without this record, so
    /// the routing now travels in the delivery's own record (`DeliveryQueued::txn`).
    DeliveryTxn {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The routing: origin shard in the high 16 bits, its sequence below.
        txn: u64,
    },
    /// The QoS 2 routings of origin `txn >> 48` up to `txn` are committed: their
    /// publishers' packet ids are logged, so their deliveries are kept by recovery. A
    /// delivery of a routing not committed is dropped by recovery (its publisher, which
    /// saw no PUBREC, sends it again; its subscriber never saw it).
    Qos2Committed {
        /// The highest routing committed.
        txn: u64,
    },
    /// A Will was published (its connection ended, or its delay ran out). Logged before
    /// any record that drops it from its session's parameters, and until `WillDone`
    /// recovery publishes it again: a power cut before its deliveries are durable on every
    /// shard it reached may duplicate it, never lose it.
    WillPending {
        /// Its number in this shard's log (renumbered when logs merge).
        id: u64,
        /// Its client's Client Identifier: recovery publishes it again on that client's
        /// home shard, before that shard's session timers publish the client's session
        /// Will (tag 30). `None` in a record written before the client was named (tag 21,
        /// still read): published again by shard 0, as then.
        client_id: Option<Cow<'a, str>>,
        /// The Lamport stamp of a retained Will (0 otherwise), kept so a Will published
        /// again never replaces a newer retained message.
        stamp: u64,
        /// The Will as a message.
        msg: StoredMessage<'a>,
    },
    /// Will `id`'s deliveries are durable on every shard it reached; or, for a Will
    /// logged by [`Record::WillArmed`], its connection ended without publishing it (a
    /// DISCONNECT, a refusal by the ACL, a delayed Will cancelled by a takeover).
    WillDone {
        /// Its number.
        id: u64,
    },
    /// The Will of a connection of a session that is not stored (a clean session), logged
    /// at its CONNECT (whose CONNACK waits for it) under number `id`, in the same number
    /// space as [`Record::WillPending`]. When the Will is published it is logged pending
    /// under the same number (which replaces this); a crash counts as its connection
    /// ending, so recovery publishes a Will still armed. Tag 23.
    WillArmed {
        /// Its number in this shard's log (renumbered when logs merge).
        id: u64,
        /// Its client's Client Identifier, as in [`Record::WillPending`] (tag 31; `None`:
        /// tag 23, written before the client was named).
        client_id: Option<Cow<'a, str>>,
        /// The Will (its expiry relative: it starts at publication).
        will: Will<'a>,
    },
    /// The next new inbound QoS 2 message of session `client_id` gets number `next`
    /// (a cluster node only; tag 27). Logged when the session is created, with a random
    /// start, and with each message's commit (its number + 1), so after a power cut the
    /// publisher's resends of messages never committed get the numbers they had before:
    /// the cluster link's store of such a message carries a message id made from it, and
    /// JetStream drops a second store under one id (`docs/cluster.md`, "QoS 1/2 between
    /// nodes").
    Qos2Numbering {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// The next number.
        next: u64,
    },
    /// Inbound QoS 2, the commit of a stored publisher's new message in one record (tag 29):
    /// its packet id taken (as [`Record::IncomingQos2Set`]), its routing `txn` committed (as
    /// [`Record::Qos2Committed`]) and, when `next` is not 0 (a cluster node), the number of
    /// the session's next QoS 2 message (as [`Record::Qos2Numbering`]). As three records a
    /// torn batch could keep the id without the commit (the resend would be acknowledged
    /// and never delivered) or the number without the commit (the resend would get another
    /// number, so another id in the cluster's queues).
    IncomingQos2Commit {
        /// Client Identifier.
        client_id: Cow<'a, str>,
        /// Packet id.
        packet_id: NonZeroU16,
        /// The routing committed.
        txn: u64,
        /// The session's next QoS 2 number (0: not numbered).
        next: u64,
    },
    /// A QoS 2 message this node took from its cluster queue was routed here as routing
    /// `txn`, which is committed (as [`Record::Qos2Committed`], in the same record so that
    /// no torn batch keeps the id without the commit; a cluster's gateway shard only; tag
    /// 28): `id` is a 128-bit hash of its JetStream message id (`Nats-Msg-Id`). A copy that
    /// comes again under the same id (redelivered after a crash before JetStream had the
    /// acknowledgement, or the publisher's resend stored again past JetStream's duplicate
    /// window) is acknowledged without being routed again. The last
    /// `state::CLUSTER_RECEIVED_MAX` ids are kept (in a checkpoint with `txn` 0).
    ClusterReceived {
        /// The message id's hash.
        id: u128,
        /// Its routing (0: settled, as in a checkpoint).
        txn: u64,
    },
    /// A change to the forwarding state of the bridge named `bridge` (its `connection`).
    Bridge {
        /// The bridge's name.
        bridge: Cow<'a, str>,
        /// What changed.
        op: BridgeOp<'a>,
    },
}

/// One change to a bridge's QoS 1/2 forwarding state (the engine's `bridge::Record`).
/// Sequence numbers are the bridge's own, in queue order; `Done` is the last op for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeOp<'a> {
    /// A message (already renamed for the remote) entered the forwarding queue.
    Enqueued {
        /// Its sequence number.
        seq: u64,
        /// The message.
        msg: StoredMessage<'a>,
        /// The QoS 2 routing it belongs to (0: none; see [`Record::Qos2Committed`]):
        /// recovery drops it if that routing was never committed. Sub-tag 7 when set.
        txn: u64,
    },
    /// It was written to the remote under this packet id.
    Sent {
        /// Sequence number.
        seq: u64,
        /// Packet id.
        packet_id: NonZeroU16,
    },
    /// QoS 2: the remote answered PUBREC.
    Received {
        /// Sequence number.
        seq: u64,
    },
    /// Finished (acknowledged, refused or dropped).
    Done {
        /// Sequence number.
        seq: u64,
    },
    /// Inbound QoS 2: the remote's message with this id was accepted locally, PUBREC sent.
    InboundHeld {
        /// The remote's packet id.
        packet_id: NonZeroU16,
    },
    /// Inbound QoS 2: PUBREL arrived.
    InboundReleased {
        /// The remote's packet id.
        packet_id: NonZeroU16,
    },
}

/// Why a record body did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The body ended inside a field.
    Truncated,
    /// No record has this tag.
    UnknownTag(u8),
    /// A string is not UTF-8.
    BadUtf8,
    /// A field holds a value it cannot hold.
    BadValue(&'static str),
    /// Bytes remain after the record.
    TrailingBytes,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "record truncated"),
            DecodeError::UnknownTag(t) => write!(f, "unknown record tag {t}"),
            DecodeError::BadUtf8 => write!(f, "string is not UTF-8"),
            DecodeError::BadValue(what) => write!(f, "bad value: {what}"),
            DecodeError::TrailingBytes => write!(f, "bytes after the record"),
        }
    }
}

mod tag {
    pub const SESSION_CREATED: u8 = 1;
    pub const SESSION_DISCONNECTED: u8 = 2;
    pub const SESSION_ENDED: u8 = 3;
    pub const SUBSCRIPTION_ADDED: u8 = 4;
    pub const SUBSCRIPTION_REMOVED: u8 = 5;
    pub const MESSAGE_STORED: u8 = 6;
    pub const DELIVERY_QUEUED: u8 = 7;
    pub const DELIVERY_SENT: u8 = 8;
    pub const DELIVERY_DONE: u8 = 9;
    pub const DELIVERY_DROPPED: u8 = 10;
    pub const INCOMING_QOS2_SET: u8 = 11;
    pub const INCOMING_QOS2_CLEARED: u8 = 12;
    pub const RETAINED_SET: u8 = 13;
    pub const RETAINED_CLEARED: u8 = 14;
    pub const BRIDGE: u8 = 15;
    /// `DELIVERY_QUEUED` with its RETAIN flag and Subscription Identifiers.
    pub const DELIVERY_QUEUED_FLAGS: u8 = 16;
    /// `RETAINED_SET` with its publisher.
    pub const RETAINED_SET_SOURCE: u8 = 17;
    pub const DELIVERY_TXN: u8 = 18;
    pub const QOS2_COMMITTED: u8 = 19;
    /// `DELIVERY_QUEUED_FLAGS` and `DELIVERY_SENT` (`InFlight`) of one delivery.
    pub const DELIVERY_QUEUED_SENT: u8 = 20;
    pub const WILL_PENDING: u8 = 21;
    pub const WILL_DONE: u8 = 22;
    pub const WILL_ARMED: u8 = 23;
    /// `DELIVERY_QUEUED_FLAGS` with its QoS 2 routing (replaces the pair
    /// `DELIVERY_QUEUED*` + `DELIVERY_TXN`, which a torn batch could split).
    pub const DELIVERY_QUEUED_TXN: u8 = 24;
    /// `DELIVERY_QUEUED_SENT` with its QoS 2 routing.
    pub const DELIVERY_QUEUED_SENT_TXN: u8 = 25;
    pub const DELIVERY_SHARE: u8 = 26;
    pub const QOS2_NUMBERING: u8 = 27;
    pub const CLUSTER_RECEIVED: u8 = 28;
    pub const INCOMING_QOS2_COMMIT: u8 = 29;
    /// `WILL_PENDING` with its client id.
    pub const WILL_PENDING_CLIENT: u8 = 30;
    /// `WILL_ARMED` with its client id.
    pub const WILL_ARMED_CLIENT: u8 = 31;
    /// `MESSAGE_STORED` with the message's share identity after its id.
    pub const MESSAGE_STORED_SHARED: u8 = 32;
    pub const SHARE_COMPLETED: u8 = 33;
}

/// Sub-tags of [`BridgeOp`] (the byte after the bridge's name).
mod bridge_tag {
    pub const ENQUEUED: u8 = 1;
    pub const SENT: u8 = 2;
    pub const RECEIVED: u8 = 3;
    pub const DONE: u8 = 4;
    pub const INBOUND_HELD: u8 = 5;
    pub const INBOUND_RELEASED: u8 = 6;
    /// `ENQUEUED` with the message's QoS 2 routing.
    pub const ENQUEUED_TXN: u8 = 7;
}

impl<'a> Record<'a> {
    /// Append this record's body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Enc(out);
        match self {
            Record::SessionCreated(s) => {
                e.u8(tag::SESSION_CREATED);
                e.session(s);
            }
            Record::SessionDisconnected {
                client_id,
                at_unix_ms,
            } => {
                e.u8(tag::SESSION_DISCONNECTED);
                e.str(client_id);
                e.u64(*at_unix_ms);
            }
            Record::SessionEnded { client_id } => {
                e.u8(tag::SESSION_ENDED);
                e.str(client_id);
            }
            Record::SubscriptionAdded { client_id, sub } => {
                e.u8(tag::SUBSCRIPTION_ADDED);
                e.str(client_id);
                e.subscription(sub);
            }
            Record::SubscriptionRemoved {
                client_id,
                share_group,
                filter,
            } => {
                e.u8(tag::SUBSCRIPTION_REMOVED);
                e.str(client_id);
                e.opt_str(share_group.as_deref());
                e.str(filter);
            }
            Record::MessageStored { id, msg } => {
                e.stored_head(*id, msg.share_id);
                e.message(msg);
            }
            _ => self.encode_references(&mut e),
        }
    }

    fn encode_references(&self, e: &mut Enc<'_>) {
        match self {
            Record::DeliveryQueued {
                client_id,
                msg,
                qos,
                retain,
                sub_ids,
                txn,
            } => {
                let flags = *retain || !sub_ids.is_empty() || *txn != 0;
                e.u8(match (flags, *txn != 0) {
                    (_, true) => tag::DELIVERY_QUEUED_TXN,
                    (true, false) => tag::DELIVERY_QUEUED_FLAGS,
                    (false, false) => tag::DELIVERY_QUEUED,
                });
                e.str(client_id);
                e.u64(msg.0);
                e.u8(*qos);
                if flags {
                    e.bool(*retain);
                    e.u32s(sub_ids);
                }
                if *txn != 0 {
                    e.u64(*txn);
                }
            }
            Record::DeliveryQueuedSent {
                client_id,
                msg,
                qos,
                retain,
                sub_ids,
                packet_id,
                txn,
            } => {
                e.u8(match *txn {
                    0 => tag::DELIVERY_QUEUED_SENT,
                    _ => tag::DELIVERY_QUEUED_SENT_TXN,
                });
                e.str(client_id);
                e.u64(msg.0);
                e.u8(*qos);
                e.bool(*retain);
                e.u16(packet_id.get());
                e.u32s(sub_ids);
                if *txn != 0 {
                    e.u64(*txn);
                }
            }
            Record::DeliverySent {
                client_id,
                msg,
                packet_id,
                state,
            } => {
                e.u8(tag::DELIVERY_SENT);
                e.str(client_id);
                e.u64(msg.0);
                e.u16(packet_id.get());
                e.u8(state_byte(*state));
            }
            Record::DeliveryDone {
                client_id,
                packet_id,
            } => e.client_packet(tag::DELIVERY_DONE, client_id, *packet_id),
            Record::DeliveryDropped { client_id, msg } => {
                e.u8(tag::DELIVERY_DROPPED);
                e.str(client_id);
                e.u64(msg.0);
            }
            Record::IncomingQos2Set {
                client_id,
                packet_id,
            } => e.client_packet(tag::INCOMING_QOS2_SET, client_id, *packet_id),
            Record::IncomingQos2Cleared {
                client_id,
                packet_id,
            } => e.client_packet(tag::INCOMING_QOS2_CLEARED, client_id, *packet_id),
            Record::RetainedSet {
                topic,
                msg,
                stamp,
                source,
            } => {
                e.u8(match source {
                    Some(_) => tag::RETAINED_SET_SOURCE,
                    None => tag::RETAINED_SET,
                });
                e.str(topic);
                e.u64(msg.0);
                e.u64(*stamp);
                if let Some(src) = source {
                    e.opt_str(src.username.as_deref());
                    e.str(&src.client_id);
                    e.u32(src.listener);
                }
            }
            Record::RetainedCleared { topic, stamp } => {
                e.u8(tag::RETAINED_CLEARED);
                e.str(topic);
                e.u64(*stamp);
            }
            Record::DeliveryTxn { client_id, txn } => {
                e.u8(tag::DELIVERY_TXN);
                e.str(client_id);
                e.u64(*txn);
            }
            Record::Qos2Committed { txn } => {
                e.u8(tag::QOS2_COMMITTED);
                e.u64(*txn);
            }
            Record::WillPending {
                id,
                client_id,
                stamp,
                msg,
            } => {
                e.u8(match client_id {
                    Some(_) => tag::WILL_PENDING_CLIENT,
                    None => tag::WILL_PENDING,
                });
                e.u64(*id);
                if let Some(c) = client_id {
                    e.str(c);
                }
                e.u64(*stamp);
                e.message(msg);
            }
            Record::WillDone { id } => {
                e.u8(tag::WILL_DONE);
                e.u64(*id);
            }
            Record::WillArmed {
                id,
                client_id,
                will,
            } => {
                e.u8(match client_id {
                    Some(_) => tag::WILL_ARMED_CLIENT,
                    None => tag::WILL_ARMED,
                });
                e.u64(*id);
                if let Some(c) = client_id {
                    e.str(c);
                }
                e.will(will);
            }
            Record::DeliveryShare {
                client_id,
                group,
                filter,
            } => {
                e.u8(tag::DELIVERY_SHARE);
                e.str(client_id);
                e.str(group);
                e.str(filter);
            }
            Record::ShareCompleted {
                client_id,
                share_id,
                group,
                filter,
            } => {
                e.u8(tag::SHARE_COMPLETED);
                e.str(client_id);
                e.u64(*share_id);
                e.str(group);
                e.str(filter);
            }
            Record::IncomingQos2Commit {
                client_id,
                packet_id,
                txn,
                next,
            } => {
                e.client_packet(tag::INCOMING_QOS2_COMMIT, client_id, *packet_id);
                e.u64(*txn);
                e.u64(*next);
            }
            Record::ClusterReceived { id, txn } => {
                e.u8(tag::CLUSTER_RECEIVED);
                e.u64((*id >> 64) as u64);
                e.u64(*id as u64);
                e.u64(*txn);
            }
            Record::Qos2Numbering { client_id, next } => {
                e.u8(tag::QOS2_NUMBERING);
                e.str(client_id);
                e.u64(*next);
            }
            Record::Bridge { bridge, op } => {
                e.u8(tag::BRIDGE);
                e.str(bridge);
                e.bridge_op(op);
            }
            _ => unreachable!("encode handles the session, subscription and message records"),
        }
    }

    /// Decode one record body (the whole of `buf`). Strings and byte strings borrow from
    /// `buf` (recovery copies only what its state keeps); [`Record::into_owned`] detaches.
    pub fn decode(buf: &'a [u8]) -> Result<Record<'a>, DecodeError> {
        let mut d = Dec { buf, pos: 0 };
        let t = d.u8()?;
        let r = match t {
            tag::SESSION_CREATED => Record::SessionCreated(d.session()?),
            tag::SESSION_DISCONNECTED => Record::SessionDisconnected {
                client_id: d.string()?,
                at_unix_ms: d.u64()?,
            },
            tag::SESSION_ENDED => Record::SessionEnded {
                client_id: d.string()?,
            },
            tag::SUBSCRIPTION_ADDED => Record::SubscriptionAdded {
                client_id: d.string()?,
                sub: d.subscription()?,
            },
            tag::SUBSCRIPTION_REMOVED => Record::SubscriptionRemoved {
                client_id: d.string()?,
                share_group: d.opt_string()?,
                filter: d.string()?,
            },
            tag::MESSAGE_STORED => Record::MessageStored {
                id: MsgId(d.u64()?),
                msg: d.message()?,
            },
            tag::MESSAGE_STORED_SHARED => {
                let id = MsgId(d.u64()?);
                let share_id = d.u64()?;
                let msg = StoredMessage {
                    share_id,
                    ..d.message()?
                };
                Record::MessageStored { id, msg }
            }
            _ => d.references(t)?,
        };
        if d.pos != buf.len() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(r)
    }

    /// Make an owned copy (a move for the parts already owned, as decoded ones are).
    pub fn into_owned(self) -> Record<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Record::SessionCreated(info) => Record::SessionCreated(info.into_owned()),
            Record::SessionDisconnected {
                client_id,
                at_unix_ms,
            } => Record::SessionDisconnected {
                client_id: own(client_id),
                at_unix_ms,
            },
            Record::SessionEnded { client_id } => Record::SessionEnded {
                client_id: own(client_id),
            },
            Record::SubscriptionAdded { client_id, sub } => Record::SubscriptionAdded {
                client_id: own(client_id),
                sub: sub.into_owned(),
            },
            Record::SubscriptionRemoved {
                client_id,
                share_group,
                filter,
            } => Record::SubscriptionRemoved {
                client_id: own(client_id),
                share_group: share_group.map(own),
                filter: own(filter),
            },
            Record::MessageStored { id, msg } => Record::MessageStored {
                id,
                msg: msg.into_owned(),
            },
            Record::RetainedSet {
                topic,
                msg,
                stamp,
                source,
            } => Record::RetainedSet {
                topic: own(topic),
                msg,
                stamp,
                source: source.map(RetainSource::into_owned),
            },
            Record::RetainedCleared { topic, stamp } => Record::RetainedCleared {
                topic: own(topic),
                stamp,
            },
            Record::Bridge { bridge, op } => Record::Bridge {
                bridge: own(bridge),
                op: op.into_owned(),
            },
            other => other.delivery_into_owned(),
        }
    }

    fn delivery_into_owned(self) -> Record<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Record::DeliveryQueued {
                client_id,
                msg,
                qos,
                retain,
                sub_ids,
                txn,
            } => Record::DeliveryQueued {
                client_id: own(client_id),
                msg,
                qos,
                retain,
                sub_ids: Cow::Owned(sub_ids.into_owned()),
                txn,
            },
            Record::DeliveryQueuedSent {
                client_id,
                msg,
                qos,
                retain,
                sub_ids,
                packet_id,
                txn,
            } => Record::DeliveryQueuedSent {
                client_id: own(client_id),
                msg,
                qos,
                retain,
                sub_ids: Cow::Owned(sub_ids.into_owned()),
                packet_id,
                txn,
            },
            Record::DeliverySent {
                client_id,
                msg,
                packet_id,
                state,
            } => Record::DeliverySent {
                client_id: own(client_id),
                msg,
                packet_id,
                state,
            },
            Record::DeliveryDone {
                client_id,
                packet_id,
            } => Record::DeliveryDone {
                client_id: own(client_id),
                packet_id,
            },
            Record::DeliveryDropped { client_id, msg } => Record::DeliveryDropped {
                client_id: own(client_id),
                msg,
            },
            Record::IncomingQos2Set {
                client_id,
                packet_id,
            } => Record::IncomingQos2Set {
                client_id: own(client_id),
                packet_id,
            },
            Record::IncomingQos2Cleared {
                client_id,
                packet_id,
            } => Record::IncomingQos2Cleared {
                client_id: own(client_id),
                packet_id,
            },
            Record::DeliveryTxn { client_id, txn } => Record::DeliveryTxn {
                client_id: own(client_id),
                txn,
            },
            Record::Qos2Committed { txn } => Record::Qos2Committed { txn },
            Record::WillPending {
                id,
                client_id,
                stamp,
                msg,
            } => Record::WillPending {
                id,
                client_id: client_id.map(own),
                stamp,
                msg: msg.into_owned(),
            },
            Record::WillDone { id } => Record::WillDone { id },
            Record::WillArmed {
                id,
                client_id,
                will,
            } => Record::WillArmed {
                id,
                client_id: client_id.map(own),
                will: will.into_owned(),
            },
            Record::DeliveryShare {
                client_id,
                group,
                filter,
            } => Record::DeliveryShare {
                client_id: own(client_id),
                group: own(group),
                filter: own(filter),
            },
            Record::ShareCompleted {
                client_id,
                share_id,
                group,
                filter,
            } => Record::ShareCompleted {
                client_id: own(client_id),
                share_id,
                group: own(group),
                filter: own(filter),
            },
            Record::Qos2Numbering { client_id, next } => Record::Qos2Numbering {
                client_id: own(client_id),
                next,
            },
            Record::ClusterReceived { id, txn } => Record::ClusterReceived { id, txn },
            Record::IncomingQos2Commit {
                client_id,
                packet_id,
                txn,
                next,
            } => Record::IncomingQos2Commit {
                client_id: own(client_id),
                packet_id,
                txn,
                next,
            },
            _ => unreachable!("into_owned handles every other record"),
        }
    }
}

impl MessageProps<'_> {
    /// Make an owned copy (a move for the parts already owned).
    pub fn into_owned(self) -> MessageProps<'static> {
        MessageProps {
            payload_format_indicator: self.payload_format_indicator,
            content_type: self.content_type.map(|c| Cow::Owned(c.into_owned())),
            response_topic: self.response_topic.map(|c| Cow::Owned(c.into_owned())),
            correlation_data: self.correlation_data.map(|c| Cow::Owned(c.into_owned())),
            user_properties: Cow::Owned(self.user_properties.into_owned()),
        }
    }
}

impl StoredMessage<'_> {
    /// Make an owned copy (a move for the parts already owned).
    pub fn into_owned(self) -> StoredMessage<'static> {
        StoredMessage {
            topic: Cow::Owned(self.topic.into_owned()),
            payload: Cow::Owned(self.payload.into_owned()),
            qos: self.qos,
            retain: self.retain,
            expires_at_unix_ms: self.expires_at_unix_ms,
            props: self.props.into_owned(),
            share_id: self.share_id,
        }
    }
}

impl SessionInfo<'_> {
    /// Make an owned copy (a move for the parts already owned).
    pub fn into_owned(self) -> SessionInfo<'static> {
        SessionInfo {
            client_id: Cow::Owned(self.client_id.into_owned()),
            protocol: self.protocol,
            expiry_interval_s: self.expiry_interval_s,
            will: self.will.map(Will::into_owned),
        }
    }
}

impl Will<'_> {
    /// Make an owned copy (a move for the parts already owned).
    pub fn into_owned(self) -> Will<'static> {
        Will {
            topic: Cow::Owned(self.topic.into_owned()),
            payload: Cow::Owned(self.payload.into_owned()),
            qos: self.qos,
            retain: self.retain,
            delay_s: self.delay_s,
            expiry_interval_s: self.expiry_interval_s,
            props: self.props.into_owned(),
        }
    }

    /// A view borrowing from `self`, for encoding without a copy.
    pub fn borrowed(&self) -> Will<'_> {
        Will {
            topic: Cow::Borrowed(&*self.topic),
            payload: Cow::Borrowed(&*self.payload),
            qos: self.qos,
            retain: self.retain,
            delay_s: self.delay_s,
            expiry_interval_s: self.expiry_interval_s,
            props: self.props.borrowed(),
        }
    }
}

impl Subscription<'_> {
    /// Make an owned copy (a move for the parts already owned).
    pub fn into_owned(self) -> Subscription<'static> {
        Subscription {
            share_group: self.share_group.map(|g| Cow::Owned(g.into_owned())),
            filter: Cow::Owned(self.filter.into_owned()),
            qos: self.qos,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: self.retain_handling,
            identifier: self.identifier,
        }
    }
}

impl BridgeOp<'_> {
    /// Make an owned copy (a move for the parts already owned).
    pub fn into_owned(self) -> BridgeOp<'static> {
        match self {
            BridgeOp::Enqueued { seq, msg, txn } => BridgeOp::Enqueued {
                txn,
                seq,
                msg: msg.into_owned(),
            },
            BridgeOp::Sent { seq, packet_id } => BridgeOp::Sent { seq, packet_id },
            BridgeOp::Received { seq } => BridgeOp::Received { seq },
            BridgeOp::Done { seq } => BridgeOp::Done { seq },
            BridgeOp::InboundHeld { packet_id } => BridgeOp::InboundHeld { packet_id },
            BridgeOp::InboundReleased { packet_id } => BridgeOp::InboundReleased { packet_id },
        }
    }
}

impl MessageProps<'_> {
    /// A view borrowing from `self`, for encoding without a copy.
    pub fn borrowed(&self) -> MessageProps<'_> {
        MessageProps {
            payload_format_indicator: self.payload_format_indicator,
            content_type: self.content_type.as_deref().map(Cow::Borrowed),
            response_topic: self.response_topic.as_deref().map(Cow::Borrowed),
            correlation_data: self.correlation_data.as_deref().map(Cow::Borrowed),
            user_properties: Cow::Borrowed(&*self.user_properties),
        }
    }
}

impl StoredMessage<'_> {
    /// A view borrowing from `self`, for encoding without a copy.
    pub fn borrowed(&self) -> StoredMessage<'_> {
        StoredMessage {
            topic: Cow::Borrowed(&*self.topic),
            payload: Cow::Borrowed(&*self.payload),
            qos: self.qos,
            retain: self.retain,
            expires_at_unix_ms: self.expires_at_unix_ms,
            props: self.props.borrowed(),
            share_id: self.share_id,
        }
    }
}

impl SessionInfo<'_> {
    /// A view borrowing from `self`, for encoding without a copy.
    pub fn borrowed(&self) -> SessionInfo<'_> {
        SessionInfo {
            client_id: Cow::Borrowed(&*self.client_id),
            protocol: self.protocol,
            expiry_interval_s: self.expiry_interval_s,
            will: self.will.as_ref().map(Will::borrowed),
        }
    }
}

impl Subscription<'_> {
    /// A view borrowing from `self`, for encoding without a copy.
    pub fn borrowed(&self) -> Subscription<'_> {
        Subscription {
            share_group: self.share_group.as_deref().map(Cow::Borrowed),
            filter: Cow::Borrowed(&*self.filter),
            qos: self.qos,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: self.retain_handling,
            identifier: self.identifier,
        }
    }
}

impl RetainSource<'_> {
    /// A view borrowing from `self`, for encoding without a copy.
    pub fn borrowed(&self) -> RetainSource<'_> {
        RetainSource {
            username: self.username.as_deref().map(Cow::Borrowed),
            client_id: Cow::Borrowed(&*self.client_id),
            listener: self.listener,
        }
    }
}

/// Which delivery record a [`DeliveryHead`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    /// `DeliveryQueued` (any of its tags).
    Queued,
    /// `DeliveryQueuedSent` (with or without a QoS 2 routing).
    QueuedSent,
    /// `DeliverySent`.
    Sent,
}

/// The fields of a delivery record that the journal's records that cancel confirm a match
/// with (`broker::journal::elide`), read at their offsets without decoding the rest: a
/// confirmation is paid for every cancel, and the whole record is not needed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryHead<'a> {
    /// The record it was read from.
    pub kind: DeliveryKind,
    /// Client Identifier, as bytes (compared, never shown: not checked for UTF-8).
    pub client_id: &'a [u8],
    /// The message.
    pub msg: MsgId,
    /// Packet id (`QueuedSent`, `Sent`); 0 for `Queued`.
    pub packet_id: u16,
}

impl<'a> DeliveryHead<'a> {
    /// The head of the delivery record encoded in `buf`; `None` for any other record, or
    /// bytes too short to hold the fields (never a panic). It reads what
    /// [`Record::decode`] would decode for these fields from a valid record, nothing more.
    pub fn read(buf: &'a [u8]) -> Option<DeliveryHead<'a>> {
        let mut d = Dec { buf, pos: 0 };
        let kind = match d.u8().ok()? {
            tag::DELIVERY_QUEUED | tag::DELIVERY_QUEUED_FLAGS | tag::DELIVERY_QUEUED_TXN => {
                DeliveryKind::Queued
            }
            tag::DELIVERY_QUEUED_SENT | tag::DELIVERY_QUEUED_SENT_TXN => DeliveryKind::QueuedSent,
            tag::DELIVERY_SENT => DeliveryKind::Sent,
            _ => return None,
        };
        let len = usize::try_from(d.u32().ok()?).ok()?;
        let client_id = d.take(len).ok()?;
        let msg = MsgId(d.u64().ok()?);
        let packet_id = match kind {
            DeliveryKind::Queued => 0,
            // After the delivery's QoS and RETAIN flag.
            DeliveryKind::QueuedSent => d.take(2).and_then(|_| d.u16()).ok()?,
            DeliveryKind::Sent => d.u16().ok()?,
        };
        Some(DeliveryHead {
            kind,
            client_id,
            msg,
            packet_id,
        })
    }
}

/// Writes a `MessageStored` record straight from the caller's fields, for a caller that
/// holds the message in its own type (the broker's `Message`): the bytes are exactly
/// [`Record::encode`]'s of the same `MessageStored`, without building the record first.
/// Call [`MessageWriter::message`], then [`MessageWriter::props`] or
/// [`MessageWriter::no_props`] once each.
pub struct MessageWriter<'b>(Enc<'b>);

impl<'b> MessageWriter<'b> {
    /// Start message `id`'s record at the end of `out`, with its share identity
    /// (`StoredMessage::share_id`, 0 for none).
    pub fn stored(out: &'b mut Vec<u8>, id: MsgId, share_id: u64) -> MessageWriter<'b> {
        let mut e = Enc(out);
        e.stored_head(id, share_id);
        MessageWriter(e)
    }

    /// The message's own fields ([`StoredMessage`], but its properties).
    pub fn message(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        expires_at_unix_ms: Option<u64>,
    ) -> &mut Self {
        self.0
            .message_fields(topic, payload, qos, retain, expires_at_unix_ms);
        self
    }

    /// Its forwarded properties ([`MessageProps`]).
    pub fn props(
        &mut self,
        payload_format_indicator: Option<u8>,
        content_type: Option<&str>,
        response_topic: Option<&str>,
        correlation_data: Option<&[u8]>,
        user_properties: &[u8],
    ) {
        self.0.props_fields(
            payload_format_indicator,
            content_type,
            response_topic,
            correlation_data,
            user_properties,
        );
    }

    /// No forwarded properties (what [`MessageProps::default`] encodes to): one copy of
    /// [`NO_PROPS`], which costs a fifth of writing the five empty fields one by one on
    /// the durable path (test: `no_props_is_the_empty_fields`).
    pub fn no_props(&mut self) {
        self.0 .0.extend_from_slice(&NO_PROPS);
    }
}

/// [`Enc::props_fields`] of no properties: four absent options and an empty list.
const NO_PROPS: [u8; 8] = [0; 8];

fn state_byte(s: DeliveryState) -> u8 {
    match s {
        DeliveryState::Queued => 0,
        DeliveryState::InFlight => 1,
        DeliveryState::PubrelSent => 2,
    }
}

struct Enc<'b>(&'b mut Vec<u8>);

impl Enc<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Every byte string the engine hands us came from one MQTT packet, which is
        // smaller than 256 MiB, so its length fits in u32.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        self.opt(s, |e, s| e.str(s));
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }
    fn u32s(&mut self, v: &[u32]) {
        // A count beyond u32 cannot occur: ids come from one session's subscriptions.
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        v.iter().for_each(|&x| self.u32(x));
    }
    fn client_packet(&mut self, t: u8, client_id: &str, packet_id: NonZeroU16) {
        self.u8(t);
        self.str(client_id);
        self.u16(packet_id.get());
    }
    fn props(&mut self, p: &MessageProps<'_>) {
        self.props_fields(
            p.payload_format_indicator,
            p.content_type.as_deref(),
            p.response_topic.as_deref(),
            p.correlation_data.as_deref(),
            &p.user_properties,
        );
    }
    /// [`MessageProps`]' fields in their order (also [`MessageWriter::props`]).
    fn props_fields(
        &mut self,
        payload_format_indicator: Option<u8>,
        content_type: Option<&str>,
        response_topic: Option<&str>,
        correlation_data: Option<&[u8]>,
        user_properties: &[u8],
    ) {
        self.opt(payload_format_indicator, |e, v| e.u8(v));
        self.opt_str(content_type);
        self.opt_str(response_topic);
        self.opt(correlation_data, |e, v| e.bytes(v));
        self.bytes(user_properties);
    }
    /// A `MessageStored` record's tag and id, and its share identity if it has one.
    fn stored_head(&mut self, id: MsgId, share_id: u64) {
        if share_id == 0 {
            self.u8(tag::MESSAGE_STORED);
            self.u64(id.0);
        } else {
            self.u8(tag::MESSAGE_STORED_SHARED);
            self.u64(id.0);
            self.u64(share_id);
        }
    }
    fn message(&mut self, m: &StoredMessage<'_>) {
        self.message_fields(&m.topic, &m.payload, m.qos, m.retain, m.expires_at_unix_ms);
        self.props(&m.props);
    }
    /// [`StoredMessage`]'s fields but its properties, in their order (also
    /// [`MessageWriter::message`]).
    fn message_fields(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        expires_at_unix_ms: Option<u64>,
    ) {
        self.str(topic);
        self.bytes(payload);
        self.u8(qos);
        self.bool(retain);
        self.opt(expires_at_unix_ms, |e, v| e.u64(v));
    }
    fn session(&mut self, s: &SessionInfo<'_>) {
        self.str(&s.client_id);
        self.u8(s.protocol);
        self.u32(s.expiry_interval_s);
        self.opt(s.will.as_ref(), |e, w| e.will(w));
    }
    fn will(&mut self, w: &Will<'_>) {
        self.str(&w.topic);
        self.bytes(&w.payload);
        self.u8(w.qos);
        self.bool(w.retain);
        self.u32(w.delay_s);
        self.opt(w.expiry_interval_s, |e, v| e.u32(v));
        self.props(&w.props);
    }
    fn bridge_op(&mut self, op: &BridgeOp<'_>) {
        match op {
            BridgeOp::Enqueued { seq, msg, txn } => {
                self.u8(match *txn {
                    0 => bridge_tag::ENQUEUED,
                    _ => bridge_tag::ENQUEUED_TXN,
                });
                self.u64(*seq);
                self.message(msg);
                if *txn != 0 {
                    self.u64(*txn);
                }
            }
            BridgeOp::Sent { seq, packet_id } => {
                self.u8(bridge_tag::SENT);
                self.u64(*seq);
                self.u16(packet_id.get());
            }
            BridgeOp::Received { seq } => {
                self.u8(bridge_tag::RECEIVED);
                self.u64(*seq);
            }
            BridgeOp::Done { seq } => {
                self.u8(bridge_tag::DONE);
                self.u64(*seq);
            }
            BridgeOp::InboundHeld { packet_id } => {
                self.u8(bridge_tag::INBOUND_HELD);
                self.u16(packet_id.get());
            }
            BridgeOp::InboundReleased { packet_id } => {
                self.u8(bridge_tag::INBOUND_RELEASED);
                self.u16(packet_id.get());
            }
        }
    }
    fn subscription(&mut self, s: &Subscription<'_>) {
        self.opt_str(s.share_group.as_deref());
        self.str(&s.filter);
        self.u8(s.qos);
        self.bool(s.no_local);
        self.bool(s.retain_as_published);
        self.u8(s.retain_handling);
        self.opt(s.identifier, |e, v| e.u32(v));
    }
}

struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue("boolean")),
        }
    }
    fn qos(&mut self) -> Result<u8, DecodeError> {
        match self.u8()? {
            q @ 0..=2 => Ok(q),
            _ => Err(DecodeError::BadValue("QoS")),
        }
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn packet_id(&mut self) -> Result<NonZeroU16, DecodeError> {
        NonZeroU16::new(self.u16()?).ok_or(DecodeError::BadValue("packet id 0"))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<Cow<'a, [u8]>, DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        Ok(Cow::Borrowed(self.take(n)?))
    }
    fn u32s(&mut self) -> Result<Cow<'a, [u32]>, DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        // `take` checks the whole list against what remains before anything allocates.
        let raw = self.take(n.checked_mul(4).ok_or(DecodeError::Truncated)?)?;
        let ids = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        Ok(Cow::Owned(ids.collect()))
    }
    fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)?;
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| DecodeError::BadUtf8)
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, DecodeError>) -> OptResult<T> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(DecodeError::BadValue("option flag")),
        }
    }
    fn opt_string(&mut self) -> OptResult<Cow<'a, str>> {
        self.opt(Self::string)
    }
    fn props(&mut self) -> Result<MessageProps<'a>, DecodeError> {
        Ok(MessageProps {
            payload_format_indicator: self.opt(Self::u8)?,
            content_type: self.opt_string()?,
            response_topic: self.opt_string()?,
            correlation_data: self.opt(Self::bytes)?,
            user_properties: self.bytes()?,
        })
    }
    fn message(&mut self) -> Result<StoredMessage<'a>, DecodeError> {
        Ok(StoredMessage {
            topic: self.string()?,
            payload: self.bytes()?,
            qos: self.qos()?,
            retain: self.bool()?,
            expires_at_unix_ms: self.opt(Self::u64)?,
            props: self.props()?,
            share_id: 0,
        })
    }
    fn will(&mut self) -> Result<Will<'a>, DecodeError> {
        Ok(Will {
            topic: self.string()?,
            payload: self.bytes()?,
            qos: self.qos()?,
            retain: self.bool()?,
            delay_s: self.u32()?,
            expiry_interval_s: self.opt(Self::u32)?,
            props: self.props()?,
        })
    }
    fn session(&mut self) -> Result<SessionInfo<'a>, DecodeError> {
        Ok(SessionInfo {
            client_id: self.string()?,
            protocol: self.u8()?,
            expiry_interval_s: self.u32()?,
            will: self.opt(Self::will)?,
        })
    }
    fn subscription(&mut self) -> Result<Subscription<'a>, DecodeError> {
        Ok(Subscription {
            share_group: self.opt_string()?,
            filter: self.string()?,
            qos: self.qos()?,
            no_local: self.bool()?,
            retain_as_published: self.bool()?,
            retain_handling: match self.u8()? {
                h @ 0..=2 => h,
                _ => return Err(DecodeError::BadValue("retain handling")),
            },
            identifier: self.opt(Self::u32)?,
        })
    }
    fn bridge_op(&mut self) -> Result<BridgeOp<'a>, DecodeError> {
        Ok(match self.u8()? {
            t @ (bridge_tag::ENQUEUED | bridge_tag::ENQUEUED_TXN) => BridgeOp::Enqueued {
                seq: self.u64()?,
                msg: self.message()?,
                txn: self.txn(t == bridge_tag::ENQUEUED_TXN)?,
            },
            bridge_tag::SENT => BridgeOp::Sent {
                seq: self.u64()?,
                packet_id: self.packet_id()?,
            },
            bridge_tag::RECEIVED => BridgeOp::Received { seq: self.u64()? },
            bridge_tag::DONE => BridgeOp::Done { seq: self.u64()? },
            bridge_tag::INBOUND_HELD => BridgeOp::InboundHeld {
                packet_id: self.packet_id()?,
            },
            bridge_tag::INBOUND_RELEASED => BridgeOp::InboundReleased {
                packet_id: self.packet_id()?,
            },
            _ => return Err(DecodeError::BadValue("bridge op")),
        })
    }
    /// A Will's client id: present under the `_CLIENT` tags only.
    fn client_named(&mut self, present: bool) -> OptResult<Cow<'a, str>> {
        match present {
            false => Ok(None),
            true => self.string().map(Some),
        }
    }
    /// A delivery's QoS 2 routing: present (and not 0) under the `_TXN` tags only.
    fn txn(&mut self, present: bool) -> Result<u64, DecodeError> {
        match present {
            false => Ok(0),
            true => match self.u64()? {
                0 => Err(DecodeError::BadValue("QoS 2 routing 0")),
                txn => Ok(txn),
            },
        }
    }
    fn state(&mut self) -> Result<DeliveryState, DecodeError> {
        match self.u8()? {
            0 => Ok(DeliveryState::Queued),
            1 => Ok(DeliveryState::InFlight),
            2 => Ok(DeliveryState::PubrelSent),
            _ => Err(DecodeError::BadValue("delivery state")),
        }
    }
    fn references(&mut self, t: u8) -> Result<Record<'a>, DecodeError> {
        Ok(match t {
            tag::DELIVERY_QUEUED => Record::DeliveryQueued {
                client_id: self.string()?,
                msg: MsgId(self.u64()?),
                qos: self.qos()?,
                retain: false,
                sub_ids: Cow::Borrowed(&[]),
                txn: 0,
            },
            tag::DELIVERY_QUEUED_FLAGS | tag::DELIVERY_QUEUED_TXN => Record::DeliveryQueued {
                client_id: self.string()?,
                msg: MsgId(self.u64()?),
                qos: self.qos()?,
                retain: self.bool()?,
                sub_ids: self.u32s()?,
                txn: self.txn(t == tag::DELIVERY_QUEUED_TXN)?,
            },
            tag::DELIVERY_QUEUED_SENT | tag::DELIVERY_QUEUED_SENT_TXN => {
                Record::DeliveryQueuedSent {
                    client_id: self.string()?,
                    msg: MsgId(self.u64()?),
                    qos: self.qos()?,
                    retain: self.bool()?,
                    packet_id: self.packet_id()?,
                    sub_ids: self.u32s()?,
                    txn: self.txn(t == tag::DELIVERY_QUEUED_SENT_TXN)?,
                }
            }
            tag::DELIVERY_SENT => Record::DeliverySent {
                client_id: self.string()?,
                msg: MsgId(self.u64()?),
                packet_id: self.packet_id()?,
                state: self.state()?,
            },
            tag::DELIVERY_DONE => Record::DeliveryDone {
                client_id: self.string()?,
                packet_id: self.packet_id()?,
            },
            tag::DELIVERY_DROPPED => Record::DeliveryDropped {
                client_id: self.string()?,
                msg: MsgId(self.u64()?),
            },
            tag::INCOMING_QOS2_SET => Record::IncomingQos2Set {
                client_id: self.string()?,
                packet_id: self.packet_id()?,
            },
            tag::INCOMING_QOS2_CLEARED => Record::IncomingQos2Cleared {
                client_id: self.string()?,
                packet_id: self.packet_id()?,
            },
            tag::RETAINED_SET => Record::RetainedSet {
                topic: self.string()?,
                msg: MsgId(self.u64()?),
                stamp: self.u64()?,
                source: None,
            },
            tag::RETAINED_SET_SOURCE => Record::RetainedSet {
                topic: self.string()?,
                msg: MsgId(self.u64()?),
                stamp: self.u64()?,
                source: Some(RetainSource {
                    username: self.opt_string()?,
                    client_id: self.string()?,
                    listener: self.u32()?,
                }),
            },
            tag::RETAINED_CLEARED => Record::RetainedCleared {
                topic: self.string()?,
                stamp: self.u64()?,
            },
            tag::BRIDGE => Record::Bridge {
                bridge: self.string()?,
                op: self.bridge_op()?,
            },
            tag::DELIVERY_TXN => Record::DeliveryTxn {
                client_id: self.string()?,
                txn: self.u64()?,
            },
            tag::QOS2_COMMITTED => Record::Qos2Committed { txn: self.u64()? },
            tag::WILL_PENDING | tag::WILL_PENDING_CLIENT => Record::WillPending {
                id: self.u64()?,
                client_id: self.client_named(t == tag::WILL_PENDING_CLIENT)?,
                stamp: self.u64()?,
                msg: self.message()?,
            },
            tag::WILL_DONE => Record::WillDone { id: self.u64()? },
            tag::WILL_ARMED | tag::WILL_ARMED_CLIENT => Record::WillArmed {
                id: self.u64()?,
                client_id: self.client_named(t == tag::WILL_ARMED_CLIENT)?,
                will: self.will()?,
            },
            tag::INCOMING_QOS2_COMMIT => Record::IncomingQos2Commit {
                client_id: self.string()?,
                packet_id: self.packet_id()?,
                txn: self.u64()?,
                next: self.u64()?,
            },
            tag::CLUSTER_RECEIVED => {
                let high = self.u64()?;
                let low = self.u64()?;
                Record::ClusterReceived {
                    id: u128::from(high) << 64 | u128::from(low),
                    txn: self.u64()?,
                }
            }
            tag::QOS2_NUMBERING => Record::Qos2Numbering {
                client_id: self.string()?,
                next: self.u64()?,
            },
            tag::DELIVERY_SHARE => Record::DeliveryShare {
                client_id: self.string()?,
                group: self.string()?,
                filter: self.string()?,
            },
            tag::SHARE_COMPLETED => Record::ShareCompleted {
                client_id: self.string()?,
                share_id: self.u64()?,
                group: self.string()?,
                filter: self.string()?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        })
    }
}

type OptResult<T> = Result<Option<T>, DecodeError>;

#[cfg(test)]
pub(crate) mod tests;
