//! A restore builds each stored message once: the broker's deliveries and the journal's
//! shadow refer to the same allocation, and the shadow still renders what the log says
//! (docs/persistence.md, "Back up, move, inspect").

use std::borrow::Cow;
use std::sync::Arc;

use super::{end_turn, restarted_broker, stored_broker, NOW_MS};
use crate::config::Config;
use crate::store::{MessageProps, MsgId, Record, SessionInfo, SimDisk, StoredMessage};

/// Message `id` as logged: the first with every property and an expiry, the others plain.
fn logged_message(id: u64) -> StoredMessage<'static> {
    let mut m = StoredMessage {
        topic: format!("t/{id}").into(),
        payload: format!("payload {id}").into_bytes().into(),
        qos: 1,
        retain: false,
        expires_at_unix_ms: None,
        props: MessageProps::default(),
        share_id: 0,
    };
    if id == 1 {
        m.expires_at_unix_ms = Some(4_000_000_000_000);
        m.props = MessageProps {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/1".into()),
            correlation_data: Some(Cow::Borrowed(b"c")),
            user_properties: Cow::Borrowed(&[0x26, 0, 1, b'k', 0, 1, b'v']),
        };
    }
    m
}

/// Two stored sessions: "a" has messages 1 and 2 queued, "b" message 1 (so message 1 has
/// two deliveries); a restart from what a power cut keeps restores them. Every delivery's
/// message is the shadow's own reference (one allocation: `Arc` pointers equal), the
/// shadow holds no owned copy, and its rendering of each is the logged message. Fails
/// without `Journal::share_restored` (the shadow kept owned copies, nothing shared).
#[test]
fn a_restored_message_is_one_allocation_for_the_broker_and_the_shadow() {
    let disk = SimDisk::default();
    let mut b = stored_broker(&disk);
    let j = b.journal.as_mut().expect("stored");
    for client in ["a", "b"] {
        j.log(Record::SessionCreated(SessionInfo {
            client_id: client.into(),
            protocol: 4,
            expiry_interval_s: u32::MAX,
            will: None,
        }));
    }
    for id in [1, 2] {
        let msg = logged_message(id);
        j.log(Record::MessageStored { id: MsgId(id), msg });
    }
    for (client, id) in [("a", 1), ("a", 2), ("b", 1)] {
        j.log(Record::DeliveryQueued {
            client_id: client.into(),
            msg: MsgId(id),
            qos: 1,
            retain: false,
            sub_ids: Cow::Borrowed(&[]),
            txn: 0,
        });
    }
    for _ in 0..4 {
        while b.journal_background(true) {}
        end_turn(&mut b, NOW_MS);
    }

    let (_disk, b) = restarted_broker(&disk, Config::default());
    let shadow = b.journal.as_ref().expect("stored").shadow();
    assert!(shadow.messages.is_empty(), "no owned copy");
    let rendered: Vec<_> = shadow
        .shared
        .iter()
        .map(|(id, m)| (id, m.into_owned()))
        .collect();
    let logged: Vec<_> = [1, 2].map(|id| (MsgId(id), logged_message(id))).into();
    assert_eq!(rendered, logged, "the shadow renders what was logged");
    let mut seen = Vec::new();
    for sess in b.sessions() {
        for out in &sess.queue {
            let id = MsgId(out.sid);
            let kept = shadow.shared.get(&id).expect("the shadow refers to it");
            let same = std::ptr::addr_eq(Arc::as_ptr(kept), Arc::as_ptr(&out.msg));
            assert!(
                same,
                "{}: message {id:?} is one allocation",
                &*sess.client_id
            );
            seen.push((sess.client_id.to_string(), id.0));
        }
    }
    seen.sort();
    let want = [("a", 1), ("a", 2), ("b", 1)].map(|(c, i)| (c.to_string(), i));
    assert_eq!(seen, want);
}
