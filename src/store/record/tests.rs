use proptest::prelude::*;

use std::borrow::Cow;

use super::*;
use crate::store::testutil::{arb_record, samples};

fn encoded(r: &Record<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    r.encode(&mut buf);
    buf
}

#[test]
fn every_record_round_trips() {
    for r in samples() {
        let buf = encoded(&r);
        assert_eq!(Record::decode(&buf).as_ref(), Ok(&r), "{r:?}");
        assert_eq!(r.clone().into_owned(), r);
    }
}

#[test]
fn every_strict_prefix_is_truncated_never_a_record() {
    for r in samples() {
        let buf = encoded(&r);
        for cut in 0..buf.len() {
            let got = Record::decode(&buf[..cut]);
            assert!(got.is_err(), "prefix {cut} of {r:?} decoded to {got:?}");
        }
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(Record::decode(&long), Err(DecodeError::TrailingBytes));
    }
}

#[test]
fn malformed_bodies_give_typed_errors() {
    let cases: &[(&[u8], DecodeError)] = &[
        (&[], DecodeError::Truncated),
        (&[0], DecodeError::UnknownTag(0)),
        (&[99], DecodeError::UnknownTag(99)),
        // SessionEnded whose client id claims 4 GiB: refused before any allocation.
        (&[3, 0xff, 0xff, 0xff, 0xff, b'a'], DecodeError::Truncated),
        // SessionEnded with a client id that is not UTF-8.
        (&[3, 1, 0, 0, 0, 0xff], DecodeError::BadUtf8),
        // DeliveryDone with packet id 0.
        (
            &[9, 1, 0, 0, 0, b'c', 0, 0],
            DecodeError::BadValue("packet id 0"),
        ),
        // DeliveryQueued with QoS 3.
        (
            &[7, 1, 0, 0, 0, b'c', 1, 0, 0, 0, 0, 0, 0, 0, 3],
            DecodeError::BadValue("QoS"),
        ),
        // DeliveryQueued with flags whose identifier count claims 1 Gi entries.
        (
            &[
                16, 1, 0, 0, 0, b'c', 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x40, 1,
            ],
            DecodeError::Truncated,
        ),
        // DeliveryQueued with flags and a RETAIN byte of 2.
        (
            &[
                16, 1, 0, 0, 0, b'c', 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0,
            ],
            DecodeError::BadValue("boolean"),
        ),
        // SubscriptionRemoved with an option flag of 2.
        (
            &[5, 1, 0, 0, 0, b'c', 2],
            DecodeError::BadValue("option flag"),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(Record::decode(bytes), Err(*want), "{bytes:?}");
    }
}

#[test]
fn the_first_delivery_queued_form_still_decodes() {
    // Tag 7 as the first version wrote it: client "c", message 7, QoS 1, no flags.
    let old: &[u8] = &[7, 1, 0, 0, 0, b'c', 7, 0, 0, 0, 0, 0, 0, 0, 1];
    let want = Record::DeliveryQueued {
        client_id: "c".into(),
        msg: MsgId(7),
        qos: 1,
        retain: false,
        sub_ids: Cow::Borrowed(&[]),
        txn: 0,
    };
    assert_eq!(Record::decode(old), Ok(want.clone()));
    // A delivery without flags keeps writing that form, byte for byte.
    assert_eq!(encoded(&want), old);
}

#[test]
fn delivery_queued_with_flags_has_its_own_tag() {
    let r = Record::DeliveryQueued {
        client_id: "c".into(),
        msg: MsgId(7),
        qos: 1,
        retain: true,
        sub_ids: Cow::Borrowed(&[5, 0x0fff_ffff]),
        txn: 0,
    };
    let want: &[u8] = &[
        16, 1, 0, 0, 0, b'c', 7, 0, 0, 0, 0, 0, 0, 0, 1, // as tag 7
        1, // retain
        2, 0, 0, 0, 5, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f, // two identifiers
    ];
    assert_eq!(encoded(&r), want);
}

/// An owned copy equals the record, for every kind (borrowed parts included).
#[test]
fn owned_copies_are_equal() {
    for r in samples() {
        assert_eq!(r.clone().into_owned(), r);
    }
}

#[test]
fn retained_set_keeps_its_first_form_and_adds_its_publisher_under_tag_17() {
    // Tag 13 as the first version wrote it: topic "t", message 7, stamp 9, no publisher.
    let old: &[u8] = &[
        13, 1, 0, 0, 0, b't', 7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut want = Record::RetainedSet {
        topic: "t".into(),
        msg: MsgId(7),
        stamp: 9,
        source: None,
    };
    assert_eq!(Record::decode(old), Ok(want.clone()));
    assert_eq!(
        encoded(&want),
        old,
        "without a publisher, byte for byte the old form"
    );
    if let Record::RetainedSet { source, .. } = &mut want {
        *source = Some(RetainSource {
            username: None,
            client_id: "c".into(),
            listener: 2,
        });
    }
    let mut with: Vec<u8> = vec![17];
    with.extend_from_slice(&old[1..]);
    with.extend_from_slice(&[0, 1, 0, 0, 0, b'c', 2, 0, 0, 0]); // anonymous, "c", listener 2
    assert_eq!(encoded(&want), with);
    assert_eq!(Record::decode(&with), Ok(want));
}

/// A Will's records written before they named its client (tags 21 and 23) still decode,
/// with no client (recovery leaves such a Will to shard 0, as then); a record without a
/// client keeps that form byte for byte, and one with its client has tags 30 and 31: the
/// old fields with the client id after the number.
#[test]
fn will_records_keep_their_first_form_and_name_their_client_under_tags_30_and_31() {
    // Tag 21 as the first version wrote it: Will 3, stamp 9, message "t"/"x" QoS 1, not
    // retained, no expiry, no properties.
    let pending: &[u8] = &[
        21, 3, 0, 0, 0, 0, 0, 0, 0, // number
        9, 0, 0, 0, 0, 0, 0, 0, // stamp
        1, 0, 0, 0, b't', 1, 0, 0, 0, b'x', 1, 0, // topic, payload, QoS, retain
        0, // no expiry
        0, 0, 0, 0, 0, 0, 0, 0, // props: none, no user properties
    ];
    let msg = StoredMessage {
        topic: "t".into(),
        payload: Cow::Borrowed(b"x"),
        qos: 1,
        retain: false,
        expires_at_unix_ms: None,
        props: MessageProps::default(),
        share_id: 0,
    };
    let mut want = Record::WillPending {
        id: 3,
        client_id: None,
        stamp: 9,
        msg,
    };
    assert_eq!(Record::decode(pending), Ok(want.clone()));
    assert_eq!(encoded(&want), pending, "without a client, the old form");
    if let Record::WillPending { client_id, .. } = &mut want {
        *client_id = Some("c".into());
    }
    let mut named: Vec<u8> = vec![30];
    named.extend_from_slice(&pending[1..9]);
    named.extend_from_slice(&[1, 0, 0, 0, b'c']);
    named.extend_from_slice(&pending[9..]);
    assert_eq!(encoded(&want), named);
    assert_eq!(Record::decode(&named), Ok(want));

    // Tag 23 as the first version wrote it: Will 4, "t"/"x" QoS 1, not retained, no
    // delay, no expiry, no properties.
    let armed: &[u8] = &[
        23, 4, 0, 0, 0, 0, 0, 0, 0, // number
        1, 0, 0, 0, b't', 1, 0, 0, 0, b'x', 1, 0, // topic, payload, QoS, retain
        0, 0, 0, 0, 0, // delay, no expiry
        0, 0, 0, 0, 0, 0, 0, 0, // props: none, no user properties
    ];
    let will = Will {
        topic: "t".into(),
        payload: Cow::Borrowed(b"x"),
        qos: 1,
        retain: false,
        delay_s: 0,
        expiry_interval_s: None,
        props: MessageProps::default(),
    };
    let mut want = Record::WillArmed {
        id: 4,
        client_id: None,
        will,
    };
    assert_eq!(Record::decode(armed), Ok(want.clone()));
    assert_eq!(encoded(&want), armed, "without a client, the old form");
    if let Record::WillArmed { client_id, .. } = &mut want {
        *client_id = Some("c".into());
    }
    let mut named: Vec<u8> = vec![31];
    named.extend_from_slice(&armed[1..9]);
    named.extend_from_slice(&[1, 0, 0, 0, b'c']);
    named.extend_from_slice(&armed[9..]);
    assert_eq!(encoded(&want), named);
    assert_eq!(Record::decode(&named), Ok(want));
    // A named record whose client id is not UTF-8 is refused.
    named[13] = 0xff;
    assert_eq!(Record::decode(&named), Err(DecodeError::BadUtf8));
}

/// The head of a delivery record as the full decode reads it (the oracle of
/// [`DeliveryHead::read`]).
fn head_by_decode(r: &Record<'_>) -> Option<(DeliveryKind, Vec<u8>, MsgId, u16)> {
    Some(match r {
        Record::DeliveryQueued { client_id, msg, .. } => {
            (DeliveryKind::Queued, client_id.as_bytes().to_vec(), *msg, 0)
        }
        Record::DeliveryQueuedSent {
            client_id,
            msg,
            packet_id,
            ..
        } => (
            DeliveryKind::QueuedSent,
            client_id.as_bytes().to_vec(),
            *msg,
            packet_id.get(),
        ),
        Record::DeliverySent {
            client_id,
            msg,
            packet_id,
            ..
        } => (
            DeliveryKind::Sent,
            client_id.as_bytes().to_vec(),
            *msg,
            packet_id.get(),
        ),
        _ => return None,
    })
}

fn head_of(bytes: &[u8]) -> Option<(DeliveryKind, Vec<u8>, MsgId, u16)> {
    DeliveryHead::read(bytes).map(|h| (h.kind, h.client_id.to_vec(), h.msg, h.packet_id))
}

/// Every delivery record's head reads as its full decode does (each of its tags: with and
/// without flags, with and without a QoS 2 routing), and no other record has one.
#[test]
fn delivery_heads_read_what_decode_reads() {
    let mut records = samples();
    for r in samples() {
        if let Record::DeliveryQueued {
            client_id,
            msg,
            qos,
            ..
        } = r
        {
            for (retain, txn) in [(false, 0), (true, 0), (false, 7)] {
                records.push(Record::DeliveryQueued {
                    client_id: client_id.clone(),
                    msg,
                    qos,
                    retain,
                    sub_ids: Cow::Borrowed(&[]),
                    txn,
                });
            }
        }
    }
    let mut kinds = Vec::new();
    for r in &records {
        let bytes = encoded(r);
        assert_eq!(head_of(&bytes), head_by_decode(r), "{r:?}");
        kinds.extend(head_of(&bytes).map(|h| (h.0, bytes[0])));
        for cut in 0..bytes.len() {
            // A prefix either lacks the fields or holds all of them: never a wrong head.
            let got = head_of(&bytes[..cut]);
            assert!(got.is_none() || got == head_by_decode(r), "{cut} of {r:?}");
        }
    }
    kinds.sort_unstable_by_key(|k| k.1);
    kinds.dedup();
    assert_eq!(kinds.len(), 6, "every delivery tag covered: {kinds:?}");
}

/// The bytes of a message record written field by field.
fn written(id: MsgId, m: &StoredMessage<'_>) -> Vec<u8> {
    let mut out = vec![0xaa];
    let mut w = MessageWriter::stored(&mut out, id, m.share_id);
    w.message(&m.topic, &m.payload, m.qos, m.retain, m.expires_at_unix_ms);
    let p = &m.props;
    if *p == MessageProps::default() {
        w.no_props();
    } else {
        w.props(
            p.payload_format_indicator,
            p.content_type.as_deref(),
            p.response_topic.as_deref(),
            p.correlation_data.as_deref(),
            &p.user_properties,
        );
    }
    out.remove(0);
    out
}

/// `MessageWriter` writes exactly what `Record::encode` does, with and without properties.
#[test]
fn a_message_written_field_by_field_is_its_record() {
    for full in [false, true] {
        let m = crate::store::testutil::message("a/b", b"payload", full);
        let r = Record::MessageStored {
            id: MsgId(9),
            msg: m.clone(),
        };
        assert_eq!(written(MsgId(9), &m), encoded(&r));
        let mut empty = m;
        empty.props = MessageProps::default();
        let r = Record::MessageStored {
            id: MsgId(9),
            msg: empty.clone(),
        };
        assert_eq!(written(MsgId(9), &empty), encoded(&r));
    }
}

/// A message record keeps its first form (tag 6) without a share identity, and carries
/// one under tag 32, after its id; a tag 6 record decodes with none.
#[test]
fn a_message_record_keeps_its_first_form_and_adds_its_share_identity_under_tag_32() {
    let m = crate::store::testutil::message("t", b"x", false);
    let plain = encoded(&Record::MessageStored {
        id: MsgId(5),
        msg: m.clone(),
    });
    assert_eq!(plain[0], 6);
    let shared = StoredMessage {
        share_id: 2 << 48 | 7,
        ..m.clone()
    };
    let r = Record::MessageStored {
        id: MsgId(5),
        msg: shared.clone(),
    };
    let bytes = encoded(&r);
    let mut want = vec![32];
    want.extend_from_slice(&plain[1..9]);
    want.extend_from_slice(&(2u64 << 48 | 7).to_le_bytes());
    want.extend_from_slice(&plain[9..]);
    assert_eq!(bytes, want, "8 bytes more than tag 6");
    assert_eq!(Record::decode(&bytes), Ok(r));
    assert_eq!(written(MsgId(5), &shared), bytes);
    let Ok(Record::MessageStored { msg, .. }) = Record::decode(&plain) else {
        panic!("tag 6 decodes");
    };
    assert_eq!(msg.share_id, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_delivery_heads_read_what_decode_reads(r in arb_record()) {
        let bytes = encoded(&r);
        prop_assert_eq!(head_of(&bytes), head_by_decode(&r));
    }

    #[test]
    fn random_bytes_never_panic_a_head(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = DeliveryHead::read(&bytes);
    }

    #[test]
    fn random_records_round_trip(r in arb_record()) {
        let bytes = encoded(&r);
        prop_assert_eq!(Record::decode(&bytes), Ok(r));
    }

    #[test]
    fn random_records_owned_copies_are_equal(r in arb_record()) {
        prop_assert_eq!(r.clone().into_owned(), r);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = Record::decode(&bytes);
    }
}

#[test]
fn no_props_is_the_empty_fields() {
    let mut fields = Vec::new();
    Enc(&mut fields).props_fields(None, None, None, None, &[]);
    assert_eq!(fields, NO_PROPS);
    let mut default = Vec::new();
    Enc(&mut default).props(&MessageProps::default());
    assert_eq!(default, NO_PROPS);
}
