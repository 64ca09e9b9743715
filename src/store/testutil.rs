//! Test helpers shared by the store's unit tests: one sample of every record, a proptest
//! strategy for random records, and a scratch directory removed on drop.

use std::borrow::Cow;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::record::*;

/// A packet id from a literal that is not zero.
pub fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n.max(1)).unwrap_or(NonZeroU16::MIN)
}

fn props(full: bool) -> MessageProps<'static> {
    if !full {
        return MessageProps::default();
    }
    MessageProps {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Cow::Owned(vec![0, 1, 2])),
        user_properties: Cow::Owned(vec![0x26, 0, 1, b'k', 0, 1, b'v']),
    }
}

/// A message on `topic` with `payload`.
pub fn message(topic: &str, payload: &[u8], full: bool) -> StoredMessage<'static> {
    StoredMessage {
        topic: Cow::Owned(topic.to_owned()),
        payload: Cow::Owned(payload.to_vec()),
        qos: 1,
        retain: full,
        expires_at_unix_ms: full.then_some(1_800_000_000_000),
        props: props(full),
        share_id: 0,
    }
}

/// A session record for `client`.
pub fn session(client: &str, with_will: bool) -> Record<'static> {
    Record::SessionCreated(SessionInfo {
        client_id: Cow::Owned(client.to_owned()),
        protocol: 5,
        expiry_interval_s: 3600,
        will: with_will.then(|| Will {
            topic: "will/t".into(),
            payload: Cow::Owned(b"gone".to_vec()),
            qos: 2,
            retain: true,
            delay_s: 30,
            expiry_interval_s: Some(60),
            props: props(true),
        }),
    })
}

/// The Will of a clean session's `WillArmed` samples.
fn will() -> Will<'static> {
    Will {
        topic: "w/c".into(),
        payload: Cow::Borrowed(b"gone"),
        qos: 1,
        retain: true,
        delay_s: 0,
        expiry_interval_s: Some(60),
        props: MessageProps::default(),
    }
}

/// One record of every kind (and both shapes of the optional parts).
pub fn samples() -> Vec<Record<'static>> {
    let c = || Cow::Borrowed("client-1");
    vec![
        session("client-1", false),
        session("client-1", true),
        Record::SessionDisconnected {
            client_id: c(),
            at_unix_ms: 1_700_000_000_123,
        },
        Record::SessionEnded { client_id: c() },
        Record::SubscriptionAdded {
            client_id: c(),
            sub: Subscription {
                share_group: None,
                filter: "a/+/c".into(),
                qos: 1,
                no_local: false,
                retain_as_published: true,
                retain_handling: 2,
                identifier: Some(268_435_455),
            },
        },
        Record::SubscriptionAdded {
            client_id: c(),
            sub: Subscription {
                share_group: Some("g1".into()),
                filter: "#".into(),
                qos: 2,
                no_local: true,
                retain_as_published: false,
                retain_handling: 0,
                identifier: None,
            },
        },
        Record::SubscriptionRemoved {
            client_id: c(),
            share_group: Some("g1".into()),
            filter: "#".into(),
        },
        Record::SubscriptionRemoved {
            client_id: c(),
            share_group: None,
            filter: "a/+/c".into(),
        },
        Record::MessageStored {
            id: MsgId(7),
            msg: message("a/b/c", b"hello", true),
        },
        Record::MessageStored {
            id: MsgId(u64::MAX),
            msg: message("x", b"", false),
        },
        Record::MessageStored {
            id: MsgId(8),
            msg: StoredMessage {
                share_id: 3 << 48 | 41,
                ..message("a/b/c", b"shared", true)
            },
        },
        Record::DeliveryQueued {
            client_id: c(),
            msg: MsgId(7),
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        },
        Record::DeliveryQueued {
            client_id: c(),
            msg: MsgId(7),
            qos: 2,
            retain: true,
            sub_ids: Cow::Borrowed(&[1, 268_435_455]),
            txn: 0,
        },
        Record::DeliveryQueued {
            client_id: c(),
            msg: MsgId(8),
            qos: 0,
            retain: false,
            sub_ids: Cow::Borrowed(&[42]),
            txn: 0,
        },
        Record::DeliveryQueued {
            client_id: c(),
            msg: MsgId(9),
            qos: 2,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 2 << 48 | 9,
        },
        Record::DeliveryQueuedSent {
            client_id: c(),
            msg: MsgId(7),
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            packet_id: pid(1),
            txn: 0,
        },
        Record::DeliveryQueuedSent {
            client_id: c(),
            msg: MsgId(9),
            qos: 2,
            retain: true,
            sub_ids: Cow::Borrowed(&[5, 268_435_455]),
            packet_id: pid(65535),
            txn: 0,
        },
        Record::DeliveryQueuedSent {
            client_id: c(),
            msg: MsgId(9),
            qos: 2,
            retain: true,
            sub_ids: Cow::Borrowed(&[5]),
            packet_id: pid(2),
            txn: 1 << 48 | 1,
        },
        Record::DeliverySent {
            client_id: c(),
            msg: MsgId(7),
            packet_id: pid(1),
            state: DeliveryState::InFlight,
        },
        Record::DeliverySent {
            client_id: c(),
            msg: MsgId(7),
            packet_id: pid(65535),
            state: DeliveryState::PubrelSent,
        },
        Record::DeliveryDone {
            client_id: c(),
            packet_id: pid(9),
        },
        Record::DeliveryDropped {
            client_id: c(),
            msg: MsgId(7),
        },
        Record::IncomingQos2Set {
            client_id: c(),
            packet_id: pid(3),
        },
        Record::IncomingQos2Cleared {
            client_id: c(),
            packet_id: pid(3),
        },
        Record::RetainedSet {
            topic: "a/b".into(),
            msg: MsgId(7),
            stamp: 42,
            source: None,
        },
        Record::RetainedSet {
            topic: "a/b".into(),
            msg: MsgId(7),
            stamp: 44,
            source: Some(crate::store::RetainSource {
                username: Some("alice".into()),
                client_id: c(),
                listener: 3,
            }),
        },
        Record::RetainedCleared {
            topic: "a/b".into(),
            stamp: 43,
        },
        Record::DeliveryTxn {
            client_id: c(),
            txn: 2 << 48 | 9,
        },
        Record::Qos2Committed { txn: 2 << 48 | 9 },
        // The first forms (tags 21 and 23), without their client, and the named ones.
        Record::WillPending {
            id: 3,
            client_id: None,
            stamp: 44,
            msg: message("w/c", b"gone", true),
        },
        Record::WillPending {
            id: 5,
            client_id: Some(c()),
            stamp: 45,
            msg: message("w/c", b"gone", true),
        },
        Record::WillDone { id: 3 },
        Record::WillArmed {
            id: 4,
            client_id: None,
            will: will(),
        },
        Record::WillArmed {
            id: 6,
            client_id: Some(c()),
            will: will(),
        },
        Record::DeliveryShare {
            client_id: c(),
            group: "g".into(),
            filter: "a/+".into(),
        },
        Record::ShareCompleted {
            client_id: c(),
            share_id: 2 << 48 | 7,
            group: "g".into(),
            filter: "a/+".into(),
        },
        Record::Qos2Numbering {
            client_id: c(),
            next: 0xfeed_0000_0000_0003,
        },
        Record::ClusterReceived {
            id: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            txn: 3 << 48 | 5,
        },
        Record::IncomingQos2Commit {
            client_id: c(),
            packet_id: NonZeroU16::new(9).expect("non-zero"),
            txn: 1 << 48 | 4,
            next: 0xfeed_0000_0000_0004,
        },
    ]
    .into_iter()
    .chain(bridge_samples())
    .collect()
}

/// One bridge record of every op.
pub fn bridge_samples() -> Vec<Record<'static>> {
    let ops = vec![
        BridgeOp::Enqueued {
            seq: 1,
            msg: message("site1/t", b"v", true),
            txn: 0,
        },
        BridgeOp::Enqueued {
            seq: u64::MAX,
            msg: message("t", b"", false),
            txn: 0,
        },
        BridgeOp::Enqueued {
            seq: 2,
            msg: message("t2", b"x", false),
            txn: 1 << 48 | 3,
        },
        BridgeOp::Sent {
            seq: 1,
            packet_id: pid(65535),
        },
        BridgeOp::Received { seq: 1 },
        BridgeOp::Done { seq: 1 },
        BridgeOp::InboundHeld { packet_id: pid(4) },
        BridgeOp::InboundReleased { packet_id: pid(4) },
    ];
    ops.into_iter()
        .map(|op| Record::Bridge {
            bridge: "cloud".into(),
            op,
        })
        .collect()
}

/// A strategy for arbitrary records: samples with random strings, ids and payloads.
pub fn arb_record() -> impl Strategy<Value = Record<'static>> {
    let n = samples().len();
    (
        0..n,
        "[a-z/]{0,12}",
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<u64>(),
        1..=u16::MAX,
    )
        .prop_map(|(i, s, payload, id, p)| {
            let mut r = samples().swap_remove(i);
            match &mut r {
                Record::MessageStored { id: mid, msg } => {
                    *mid = MsgId(id);
                    msg.topic = Cow::Owned(s);
                    msg.payload = Cow::Owned(payload);
                }
                Record::SessionEnded { client_id } | Record::DeliveryDropped { client_id, .. } => {
                    *client_id = Cow::Owned(s)
                }
                Record::DeliveryDone { packet_id, .. } => *packet_id = pid(p),
                Record::DeliveryQueuedSent { msg, packet_id, .. } => {
                    *msg = MsgId(id);
                    *packet_id = pid(p);
                }
                Record::RetainedSet { topic, stamp, .. } => {
                    *topic = Cow::Owned(s);
                    *stamp = id;
                }
                Record::WillPending {
                    client_id: Some(c), ..
                }
                | Record::WillArmed {
                    client_id: Some(c), ..
                } => *c = Cow::Owned(s),
                _ => {}
            }
            r
        })
}

/// A directory under the system temporary directory, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory named after `name`, this process and a counter.
    pub fn new(name: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("shardmq-store-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The records `examples/store_fill.rs` writes for `sessions` offline MQTT 3.1.1 sessions
/// with one QoS 1 subscription each and `per` queued QoS 1 messages of 64 bytes each
/// (`bench/recovery`'s store), in its order.
pub fn fill_records(sessions: u64, per: u64) -> Vec<Record<'static>> {
    let client = |s: u64| Cow::Owned(format!("fill-{s:06}"));
    let mut out = Vec::new();
    for s in 0..sessions {
        out.push(Record::SessionCreated(SessionInfo {
            client_id: client(s),
            protocol: 4,
            expiry_interval_s: u32::MAX,
            will: None,
        }));
        let sub = Subscription {
            share_group: None,
            filter: Cow::Owned(format!("fill/{s:06}/#")),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            identifier: None,
        };
        out.push(Record::SubscriptionAdded {
            client_id: client(s),
            sub,
        });
        out.push(Record::SessionDisconnected {
            client_id: client(s),
            at_unix_ms: 1_800_000_000_000,
        });
    }
    let mut id = 0;
    for k in 0..per {
        for s in 0..sessions {
            id += 1;
            let msg = message(&format!("fill/{s:06}/{k}"), &[b'x'; 64], false);
            out.push(Record::MessageStored { id: MsgId(id), msg });
            out.push(Record::DeliveryQueued {
                client_id: client(s),
                msg: MsgId(id),
                qos: 1,
                retain: false,
                sub_ids: Cow::Borrowed(&[]),
                txn: 0,
            });
        }
    }
    out
}
