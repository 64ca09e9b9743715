//! The envelope: how one application message travels between nodes and sits in the
//! retained bucket.
//!
//! Owns: a versioned binary encoding of (origin node, sequence, topic, QoS, retain, 5.0
//! properties, expiry, payload). Invariant: `decode(encode(e)) == e` for every envelope
//! within the limits, and `decode` never panics on any bytes (it returns a typed error).
//! Must not touch: subjects (see `subject`), sockets, broker state.
//!
//! Layout (integers big-endian, strings as u16 length + bytes):
//! `version=1 | flags | origin (u8 len + bytes) | seq u64 | topic | expiry u32
//!  | [props] | payload (the rest)`. `flags`: bits 0-1 QoS, bit 2 retain, bit 3 props
//! present. Expiry `u32::MAX` means none. Props: `pfi u8` (0xFF none), content type,
//! response topic, correlation data (each a u8 presence byte + u16 length + bytes),
//! user properties (u32 length + their wire form).
#![forbid(unsafe_code)]

use crate::protocol::QoS;
use crate::session::message::ForwardedProps;

const VERSION: u8 = 1;
const FLAG_RETAIN: u8 = 0b100;
const FLAG_PROPS: u8 = 0b1000;
const EXPIRY_NONE: u32 = u32::MAX;
/// The largest envelope sent; NATS servers refuse payloads past `max_payload`, 1 MiB by
/// default. Larger messages stay local and are counted (`docs/cluster.md`).
pub const ENVELOPE_BYTES_MAX: usize = 1024 * 1024;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that accepted it from a client (a valid node name).
    pub origin: String,
    /// The origin's sequence number, increasing per link start; duplicates are dropped.
    pub seq: u64,
    /// MQTT topic name.
    pub topic: String,
    /// The publisher's QoS.
    pub qos: QoS,
    /// The publisher's RETAIN flag.
    pub retain: bool,
    /// Message Expiry Interval left when sent, seconds.
    pub expiry_secs: Option<u32>,
    /// 5.0 properties forwarded unchanged.
    pub props: Option<Box<ForwardedProps>>,
    /// Application payload.
    pub payload: Vec<u8>,
}

/// Why bytes are not an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Unknown version byte.
    Version,
    /// Ended before a field did.
    Truncated,
    /// A field's value is impossible (QoS 3, a non-UTF-8 string).
    Invalid,
    /// Encoding would exceed [`ENVELOPE_BYTES_MAX`] or a field's length prefix.
    TooLarge,
}

/// Encode `e`, or refuse if any field is too long for its prefix or the total too large.
pub fn encode(e: &Envelope) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::with_capacity(32 + e.origin.len() + e.topic.len() + e.payload.len());
    let mut flags = e.qos as u8;
    if e.retain {
        flags |= FLAG_RETAIN;
    }
    if e.props.is_some() {
        flags |= FLAG_PROPS;
    }
    out.push(VERSION);
    out.push(flags);
    let origin_len = u8::try_from(e.origin.len()).map_err(|_| EnvelopeError::TooLarge)?;
    out.push(origin_len);
    out.extend_from_slice(e.origin.as_bytes());
    out.extend_from_slice(&e.seq.to_be_bytes());
    put_str(&mut out, e.topic.as_bytes())?;
    out.extend_from_slice(&e.expiry_secs.unwrap_or(EXPIRY_NONE).to_be_bytes());
    if let Some(p) = &e.props {
        out.push(p.payload_format_indicator.unwrap_or(0xFF));
        put_opt(&mut out, p.content_type.as_deref().map(str::as_bytes))?;
        put_opt(&mut out, p.response_topic.as_deref().map(str::as_bytes))?;
        put_opt(&mut out, p.correlation_data.as_deref())?;
        let users = u32::try_from(p.user_properties.len()).map_err(|_| EnvelopeError::TooLarge)?;
        out.extend_from_slice(&users.to_be_bytes());
        out.extend_from_slice(&p.user_properties);
    }
    out.extend_from_slice(&e.payload);
    if out.len() > ENVELOPE_BYTES_MAX {
        return Err(EnvelopeError::TooLarge);
    }
    Ok(out)
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) -> Result<(), EnvelopeError> {
    let len = u16::try_from(s.len()).map_err(|_| EnvelopeError::TooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

fn put_opt(out: &mut Vec<u8>, s: Option<&[u8]>) -> Result<(), EnvelopeError> {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s)?;
        }
    }
    Ok(())
}

/// A cursor over the bytes being decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < n {
            return Err(EnvelopeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, EnvelopeError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, len: usize) -> Result<String, EnvelopeError> {
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| EnvelopeError::Invalid)
    }
    fn opt(&mut self) -> Result<Option<&'a [u8]>, EnvelopeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let n = self.u16()?;
                Ok(Some(self.take(n)?))
            }
            _ => Err(EnvelopeError::Invalid),
        }
    }
    fn opt_str(&mut self) -> Result<Option<Box<str>>, EnvelopeError> {
        match self.opt()? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(|s| Some(s.into()))
                .map_err(|_| EnvelopeError::Invalid),
        }
    }
}

/// Decode an envelope; never panics.
pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return Err(EnvelopeError::Version);
    }
    let flags = r.u8()?;
    let qos = QoS::from_bits(flags & 0b11).ok_or(EnvelopeError::Invalid)?;
    if flags & !0b1111 != 0 {
        return Err(EnvelopeError::Invalid);
    }
    let origin_len = usize::from(r.u8()?);
    let origin = r.string(origin_len)?;
    let seq_bytes = r.take(8)?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(seq_bytes);
    let topic_len = r.u16()?;
    let topic = r.string(topic_len)?;
    let expiry = r.u32()?;
    let props = if flags & FLAG_PROPS != 0 {
        Some(Box::new(decode_props(&mut r)?))
    } else {
        None
    };
    Ok(Envelope {
        origin,
        seq: u64::from_be_bytes(seq),
        topic,
        qos,
        retain: flags & FLAG_RETAIN != 0,
        expiry_secs: (expiry != EXPIRY_NONE).then_some(expiry),
        props,
        payload: r.0.to_vec(),
    })
}

fn decode_props(r: &mut Reader<'_>) -> Result<ForwardedProps, EnvelopeError> {
    let pfi = r.u8()?;
    let content_type = r.opt_str()?;
    let response_topic = r.opt_str()?;
    let correlation_data = r.opt()?.map(Into::into);
    let users_len = usize::try_from(r.u32()?).map_err(|_| EnvelopeError::Invalid)?;
    let user_properties = r.take(users_len)?.into();
    Ok(ForwardedProps {
        payload_format_indicator: (pfi != 0xFF).then_some(pfi),
        content_type,
        response_topic,
        correlation_data,
        user_properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            origin: "n1".into(),
            seq: 7,
            topic: "a/b".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            expiry_secs: Some(60),
            props: Some(Box::new(ForwardedProps {
                payload_format_indicator: Some(1),
                content_type: Some("text/plain".into()),
                response_topic: None,
                correlation_data: Some(vec![1, 2].into()),
                user_properties: vec![0x26, 0, 1, b'k', 0, 1, b'v'].into(),
            })),
            payload: b"hello".to_vec(),
        }
    }

    #[test]
    fn round_trip_and_every_strict_prefix_is_truncated() {
        let e = sample();
        let bytes = encode(&e).unwrap();
        assert_eq!(decode(&bytes).unwrap(), e);
        // The payload is "the rest", so only prefixes cut before it must fail.
        let header = bytes.len() - e.payload.len();
        for n in 0..header {
            assert!(decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let cases: &[(&[u8], EnvelopeError)] = &[
            (&[], EnvelopeError::Truncated),
            (&[2, 0], EnvelopeError::Version),
            (&[1, 3, 0], EnvelopeError::Invalid),
            (&[1, 0x10, 0], EnvelopeError::Invalid),
            (&[1, 0, 2, b'n'], EnvelopeError::Truncated),
            (
                &[1, 0, 1, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                EnvelopeError::Invalid,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes), Err(*want), "{bytes:?}");
        }
        let mut big = sample();
        big.payload = vec![0; ENVELOPE_BYTES_MAX];
        assert_eq!(encode(&big), Err(EnvelopeError::TooLarge));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn round_trips(seq in any::<u64>(), topic in "[a-z/é]{1,20}", qos in 0u8..3,
                       retain in any::<bool>(), payload in prop::collection::vec(any::<u8>(), 0..40)) {
            let e = Envelope { origin: "node-1".into(), seq, topic, qos: QoS::from_bits(qos).unwrap(),
                               retain, expiry_secs: None, props: None, payload };
            prop_assert_eq!(decode(&encode(&e).unwrap()).unwrap(), e);
        }
    }
}
