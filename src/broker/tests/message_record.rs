//! A message's `MessageStored` record written straight from the broker's `Message`
//! (`journal::encode_stored`) is byte for byte the record built through `StoredMessage`
//! (`journal::stored_form`, which the shadow renders at a checkpoint): the log holds the
//! same bytes either way.

use std::sync::Arc;

use crate::broker::journal::{encode_stored, stored_form};
use crate::protocol::QoS;
use crate::session::{ForwardedProps, Message};
use crate::store::{MsgId, Record};

/// A message on `topic` with `payload`, the given QoS and RETAIN flag, no properties.
fn message(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Message {
    Message {
        topic: Arc::from(topic),
        payload: payload.into(),
        qos,
        retain,
        props: None,
        expires_at_ms: None,
        origin: 3,
        retain_stamp: 11,
        publisher: None,
        txn: 0,
        share_id: 0,
    }
}

/// Properties with some of each field set, as `variant` picks.
fn props(variant: u8) -> ForwardedProps {
    ForwardedProps {
        payload_format_indicator: (variant & 1 != 0).then_some(1),
        content_type: (variant & 2 != 0).then(|| "text/plain; charset=utf-8".into()),
        response_topic: (variant & 4 != 0).then(|| "reply/to/me".into()),
        correlation_data: (variant & 8 != 0).then(|| vec![0, 1, 2, 255].into()),
        user_properties: match variant & 16 {
            0 => Box::default(),
            _ => vec![0x26, 0, 1, b'k', 0, 2, b'v', b'1'].into(),
        },
    }
}

#[test]
fn a_message_record_written_from_the_message_is_the_records_bytes() {
    let long_topic = "a/".repeat(40_000) + "end";
    let mut messages = Vec::new();
    for topic in ["t", "sensors/+x/é", long_topic.as_str(), ""] {
        for (qos, retain) in [
            (QoS::AtMostOnce, false),
            (QoS::AtLeastOnce, true),
            (QoS::ExactlyOnce, false),
        ] {
            for payload in [&b""[..], b"hello", &[0xff; 70_000]] {
                messages.push(message(topic, payload, qos, retain));
            }
        }
    }
    for variant in 0..32 {
        let mut m = message("with/props", b"p", QoS::AtLeastOnce, false);
        // Properties whose every field is empty still encode as present-but-empty.
        m.props = Some(Box::new(props(variant)));
        messages.push(m);
    }
    let mut checked = 0;
    for m in &messages {
        for expires in [None, Some(0), Some(1_800_000_000_123), Some(u64::MAX)] {
            for id in [MsgId(1), MsgId(u64::MAX)] {
                let mut built = vec![9];
                Record::MessageStored {
                    id,
                    msg: stored_form(m, expires),
                }
                .encode(&mut built);
                let mut direct = vec![9];
                encode_stored(&mut direct, id, m, expires);
                assert_eq!(
                    direct,
                    built,
                    "{:?} {expires:?}",
                    &m.topic[..m.topic.len().min(20)]
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, (36 + 32) * 8);
}
