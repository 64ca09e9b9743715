//! The wire form of a session handed from its old node to its new one.
//!
//! Owns: the encoding of `broker::cluster::SessionHandover` (subscriptions with their
//! options and identifiers, then the messages owed to the client as envelopes). Invariant:
//! `decode` never panics and refuses (returns `None`) anything malformed or past the
//! limits; a refused state only means the new node starts a fresh session. Must not
//! touch: sessions themselves (the broker installs what this returns).
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::envelope;
use super::node::{envelope_of, message_of};
use crate::broker::cluster::SessionHandover;
use crate::protocol::{QoS, SubscriptionOptions, Version};
use crate::session::SubState;

/// Subscriptions handed over at most (more are left behind, counted by the caller).
pub const SUBSCRIPTIONS_MAX: usize = 65_535;
/// Encoded state at most: NATS's default `max_payload`; messages past it stay behind.
pub const STATE_BYTES_MAX: usize = 1024 * 1024;

/// Encode `h` (`now_ms`: the old node's clock, for the messages' expiry), dropping
/// messages that would take it past [`STATE_BYTES_MAX`].
pub fn encode(h: &SessionHandover, now_ms: u64) -> Vec<u8> {
    let mut out = vec![u8::from(h.exists)];
    let subs = &h.subs[..h.subs.len().min(SUBSCRIPTIONS_MAX)];
    out.extend_from_slice(&(subs.len() as u16).to_be_bytes());
    for (filter, st) in subs {
        let f = &filter.as_bytes()[..filter.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
        out.push(st.options.to_byte());
        out.extend_from_slice(&st.sub_id.unwrap_or(0).to_be_bytes());
    }
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    let mut count = 0u32;
    for (msg, qos) in &h.queued {
        let Ok(e) = envelope::encode(&envelope_of(msg, now_ms)) else {
            continue;
        };
        if out.len() + 5 + e.len() > STATE_BYTES_MAX {
            break;
        }
        out.push(*qos as u8);
        out.extend_from_slice(&(e.len() as u32).to_be_bytes());
        out.extend_from_slice(&e);
        count += 1;
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
    out
}

/// Decode a state (`now_ms`: this node's clock), or `None` if it is malformed.
pub fn decode(bytes: &[u8], now_ms: u64) -> Option<SessionHandover> {
    let mut r = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (head, rest) = r.split_at(n);
        r = rest;
        Some(head)
    };
    let exists = match take(1)?[0] {
        0 => false,
        1 => true,
        _ => return None,
    };
    let nsubs = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let mut subs = Vec::with_capacity(usize::from(nsubs));
    for _ in 0..nsubs {
        let len = u16::from_be_bytes(take(2)?.try_into().ok()?);
        let filter = std::str::from_utf8(take(usize::from(len))?).ok()?;
        let options = SubscriptionOptions::from_byte(take(1)?[0], Version::V5).ok()?;
        let id = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let st = SubState {
            options,
            sub_id: (id != 0).then_some(id),
        };
        subs.push((filter.into(), st));
    }
    let nmsgs = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut queued = Vec::new();
    for _ in 0..nmsgs {
        let qos = QoS::from_bits(take(1)?[0])?;
        let len = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let e = envelope::decode(take(usize::try_from(len).ok()?)?).ok()?;
        queued.push((Arc::new(message_of(e, now_ms)?), qos));
    }
    take(0)?;
    r.is_empty().then_some(SessionHandover {
        exists,
        subs,
        queued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Message;

    fn msg(topic: &str, payload: &[u8]) -> Arc<Message> {
        Arc::new(Message::plain(topic, payload, QoS::AtLeastOnce))
    }

    #[test]
    fn a_state_round_trips_and_its_prefixes_are_refused() {
        let st = SubState {
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
            sub_id: Some(7),
        };
        let h = SessionHandover {
            exists: true,
            subs: vec![("a/#".into(), st), ("$share/g/b/+".into(), st)],
            queued: vec![
                (msg("a/1", b"x"), QoS::AtLeastOnce),
                (msg("a/2", b""), QoS::AtMostOnce),
            ],
        };
        let bytes = encode(&h, 0);
        let back = decode(&bytes, 0).expect("decodes");
        assert_eq!((back.exists, &back.subs), (true, &h.subs));
        let topics: Vec<_> = back.queued.iter().map(|(m, q)| (&*m.topic, *q)).collect();
        assert_eq!(
            topics,
            [("a/1", QoS::AtLeastOnce), ("a/2", QoS::AtMostOnce)]
        );
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], 0).is_none(), "prefix {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, 0).is_none(), "trailing bytes");
    }
}
