//! The fixed header: packet type, flag bits and remaining length.
//!
//! Owns: framing. `frame` looks only at the first (at most five) bytes of a buffer and says
//! whether a whole packet is present, how many bytes it needs, or why it can never be one.
//! Invariant: the size cap is checked here, from the fixed header alone, before a single
//! byte of the body needs to be buffered; reserved types and wrong flag bits are refused on
//! the first byte. Must not touch: the body of the packet.

use super::error::DecodeError;
use super::packet::Version;
use super::wire::{read_varint, VarintRead};

/// A fixed header that parsed and fits within the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    /// The first byte: type in the high nibble, flags in the low one.
    pub(crate) first: u8,
    /// Length of the fixed header itself (2..=5).
    pub(crate) header_len: usize,
    /// The remaining length: bytes of the body.
    pub(crate) remaining: usize,
}

impl FixedHeader {
    /// Total packet size: fixed header plus body.
    #[inline]
    pub(crate) fn total(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// What `frame` found at the start of a buffer.
pub(crate) enum Frame {
    /// Not enough bytes yet; `needed` counts from the start of the buffer.
    Incomplete(usize),
    /// A header whose whole packet may or may not be present yet.
    Header(FixedHeader),
}

/// Check the type nibble and the flag bits of the first byte [MQTT-2.1.3-1].
#[inline]
pub(crate) fn check_first_byte(first: u8, version: Version) -> Result<(), DecodeError> {
    let type_id = first >> 4;
    let flags = first & 0x0f;
    let expected = match type_id {
        0 => return Err(DecodeError::ReservedPacketType { type_id }),
        15 if !version.is_v5() => return Err(DecodeError::ReservedPacketType { type_id }),
        // PUBLISH flags are DUP/QoS/RETAIN, checked by the PUBLISH decoder.
        3 => return Ok(()),
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::InvalidHeaderFlags { type_id, flags })
    }
}

/// Parse the fixed header at the start of `buf` and apply the size cap.
#[inline]
pub(crate) fn frame(buf: &[u8], version: Version, max_size: usize) -> Result<Frame, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(Frame::Incomplete(2));
    };
    check_first_byte(first, version)?;
    let (remaining, n) = match read_varint(rest)? {
        VarintRead::Done(v, n) => (v, n),
        VarintRead::Short => return Ok(Frame::Incomplete(buf.len() + 1)),
    };
    let header = FixedHeader {
        first,
        header_len: 1 + n,
        remaining,
    };
    let size = header.total();
    if size > max_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_size,
        });
    }
    Ok(Frame::Header(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect_header(buf: &[u8]) -> FixedHeader {
        match frame(buf, Version::V5, usize::MAX) {
            Ok(Frame::Header(h)) => h,
            Ok(Frame::Incomplete(n)) => panic!("incomplete, needs {n}"),
            Err(e) => panic!("error {e}"),
        }
    }

    fn expect_incomplete(buf: &[u8]) -> usize {
        match frame(buf, Version::V5, usize::MAX) {
            Ok(Frame::Incomplete(n)) => n,
            _ => panic!("expected incomplete"),
        }
    }

    #[test]
    fn header_lengths_and_needs() {
        assert_eq!(expect_incomplete(&[]), 2);
        assert_eq!(expect_incomplete(&[0x30]), 2);
        assert_eq!(expect_incomplete(&[0x30, 0x80]), 3);
        let h = expect_header(&[0x30, 0xff, 0x7f]);
        assert_eq!((h.header_len, h.remaining, h.total()), (3, 16_383, 16_386));
    }

    #[test]
    fn size_cap_is_checked_before_the_body() {
        // Claims 268,435,455 bytes; only the 5 header bytes are present.
        let got = frame(&[0x30, 0xff, 0xff, 0xff, 0x7f], Version::V5, 1024);
        let err = DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1024,
        };
        assert!(matches!(got, Err(e) if e == err));
    }
}
