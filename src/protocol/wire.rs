//! Wire primitives: the bounded reader every decoder uses and the writers every encoder uses.
//!
//! Owns: big-endian integers, variable byte integers, length-prefixed strings and binary
//! data, and the string rules (valid UTF-8, no U+0000; topic names also free of `+`/`#`).
//! Invariant: `Reader` never reads past the slice it was given: every read is checked and a
//! short read is `UnexpectedEnd`, never a panic. Writers append to a caller's `Vec<u8>` and
//! never allocate anything else. Must not touch: packet layout, which the packet files own.
//!
//! Control characters U+0001..U+001F and U+007F..U+009F are accepted: the specification
//! lets a receiver refuse them but does not require it, and real clients use them in
//! payload-like strings (see docs/decisions/0001-codec.md).

use super::error::DecodeError;

/// The largest value a variable byte integer can hold (4 bytes, 7 bits each).
pub const VARINT_MAX: usize = 268_435_455;

/// Bytes `v` takes as a variable byte integer (1..=4 for values up to `VARINT_MAX`;
/// larger values are not representable and take 5, which no peer accepts).
#[inline]
pub fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        2_097_152..=VARINT_MAX => 4,
        _ => 5,
    }
}

/// Append `v` as a variable byte integer. Values above `VARINT_MAX` are the caller's
/// error: they are written with more than 4 bytes and a peer will refuse them.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, v: usize) {
    let mut v = v;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The outcome of reading a variable byte integer from a prefix of a buffer.
pub(crate) enum VarintRead {
    /// The value and the number of bytes it took.
    Done(usize, usize),
    /// The buffer ends inside the integer.
    Short,
}

/// Read a variable byte integer at the start of `buf`: at most 4 bytes, shortest form.
#[inline]
pub(crate) fn read_varint(buf: &[u8]) -> Result<VarintRead, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(VarintRead::Short);
        };
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::VarintNotMinimal);
            }
            return Ok(VarintRead::Done(value, i + 1));
        }
    }
    Err(DecodeError::VarintTooLong)
}

const LO_BYTES: u64 = 0x0101_0101_0101_0101;
const HI_BITS: u64 = 0x8080_8080_8080_8080;

/// True if some byte of `v` is zero (exact for the word as a whole).
#[inline(always)]
fn has_zero_byte(v: u64) -> bool {
    v.wrapping_sub(LO_BYTES) & !v & HI_BITS != 0
}

/// `'#'` (0x23) and `'+'` (0x2B) differ only in bit 3: OR-ing it in maps both to 0x2B.
const WILDCARD_FOLD: u64 = LO_BYTES * 0x08;
const WILDCARD: u64 = LO_BYTES * 0x2B;

/// True if some byte of `v` is U+0000.
#[inline(always)]
fn word_has_nul(v: u64) -> bool {
    has_zero_byte(v)
}

/// True if some byte of `v` is U+0000, `'+'` or `'#'`.
#[inline(always)]
fn word_has_nul_or_wildcard(v: u64) -> bool {
    has_zero_byte(v) | has_zero_byte((v | WILDCARD_FOLD) ^ WILDCARD)
}

/// True if `word` holds for some 8-byte window covering `bytes` (SWAR). Strings shorter
/// than a word are padded with 0x01, which neither predicate matches; longer ones end with
/// an overlapping last word instead of a byte loop. No call and no setup, so it beats
/// memchr on the short strings MQTT carries.
#[inline(always)]
fn any_word(bytes: &[u8], word: impl Fn(u64) -> bool) -> bool {
    let load = |chunk: &[u8]| u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default());
    if bytes.len() < 8 {
        let mut padded = [0x01u8; 8];
        if let Some(head) = padded.get_mut(..bytes.len()) {
            head.copy_from_slice(bytes);
        }
        return word(u64::from_le_bytes(padded));
    }
    let mut chunks = bytes.chunks_exact(8);
    let mut hit = false;
    for chunk in &mut chunks {
        hit |= word(load(chunk));
    }
    if !chunks.remainder().is_empty() {
        let tail = bytes.get(bytes.len() - 8..).unwrap_or_default();
        hit |= word(load(tail));
    }
    hit
}

/// Check a UTF-8 string field: valid UTF-8 and no U+0000 [MQTT-1.5.4-1/2].
#[inline]
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    if any_word(bytes, word_has_nul) {
        return Err(DecodeError::NullCharacter);
    }
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Check a topic name: a string without `+`, `#` or U+0000 (emptiness is the caller's rule).
#[inline]
pub(crate) fn check_topic_name(bytes: &[u8]) -> Result<&str, DecodeError> {
    if any_word(bytes, word_has_nul_or_wildcard) {
        return Err(if bytes.contains(&0) {
            DecodeError::NullCharacter
        } else {
            DecodeError::WildcardInTopicName
        });
    }
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// A bounded cursor over one packet body (or one property block).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over exactly `buf`.
    #[inline]
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// True when every byte has been read.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Take the rest of the buffer.
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fail with `TrailingBytes` unless every byte was read.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// Take the next `n` bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// One byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, tail) = self.buf.split_first().ok_or(DecodeError::UnexpectedEnd)?;
        self.buf = tail;
        Ok(b)
    }

    /// A big-endian two-byte integer.
    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.bytes(2)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DecodeError::UnexpectedEnd),
        }
    }

    /// A big-endian four-byte integer.
    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        match *self.bytes(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(DecodeError::UnexpectedEnd),
        }
    }

    /// A variable byte integer inside a packet: running out of bytes is `UnexpectedEnd`.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<usize, DecodeError> {
        match read_varint(self.buf)? {
            VarintRead::Done(v, n) => {
                self.bytes(n)?;
                Ok(v)
            }
            VarintRead::Short => Err(DecodeError::UnexpectedEnd),
        }
    }

    /// Binary data: a two-byte length, then that many bytes.
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// A UTF-8 string field.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        check_str(self.binary()?)
    }

    /// A topic name field: a string without wildcards (possibly empty).
    #[inline]
    pub(crate) fn topic_name(&mut self) -> Result<&'a str, DecodeError> {
        check_topic_name(self.binary()?)
    }

    /// A non-zero packet identifier.
    #[inline]
    pub(crate) fn packet_id(&mut self) -> Result<super::PacketId, DecodeError> {
        super::PacketId::new(self.u16()?).ok_or(DecodeError::ZeroPacketId)
    }
}

/// Append a big-endian two-byte integer.
#[inline]
pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The length prefix of a string or binary field. Fields longer than 65,535 bytes cannot be
/// expressed; they are truncated to 65,535 so the frame stays consistent.
#[inline]
pub(crate) fn field_len(bytes: &[u8]) -> usize {
    bytes.len().min(usize::from(u16::MAX))
}

/// Append binary data (or a string's bytes) with its two-byte length.
#[inline]
pub(crate) fn put_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = field_len(bytes);
    put_u16(out, n as u16);
    out.extend_from_slice(bytes.get(..n).unwrap_or(bytes));
}

/// Encoded size of a string or binary field, including its length prefix.
#[inline]
pub(crate) fn bin_len(bytes: &[u8]) -> usize {
    2 + field_len(bytes)
}

/// Append the fixed header: first byte, then the remaining length.
#[inline]
pub(crate) fn put_header(out: &mut Vec<u8>, first: u8, remaining: usize) {
    out.push(first);
    put_varint(out, remaining);
}

/// Total packet size for a body of `remaining` bytes.
#[inline]
pub(crate) fn total_len(remaining: usize) -> usize {
    1 + varint_len(remaining) + remaining
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_every_width_boundary() {
        for v in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "width of {v}");
            match read_varint(&out) {
                Ok(VarintRead::Done(got, n)) => assert_eq!((got, n), (v, out.len())),
                _ => panic!("{v} did not round-trip"),
            }
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_padding() {
        let long = read_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(matches!(long, Err(DecodeError::VarintTooLong)));
        let padded = read_varint(&[0x80, 0x00]);
        assert!(matches!(padded, Err(DecodeError::VarintNotMinimal)));
        assert!(matches!(read_varint(&[0xff, 0xff]), Ok(VarintRead::Short)));
    }

    #[test]
    fn word_scan_matches_a_naive_scan() {
        let hay: Vec<u8> = (0u8..=255).chain(0u8..=255).collect();
        for start in 0..300 {
            for len in 0..40 {
                let s = &hay[start..start + len];
                let naive = s.iter().any(|&x| x == 0 || x == b'+' || x == b'#');
                assert_eq!(
                    any_word(s, word_has_nul_or_wildcard),
                    naive,
                    "{start}+{len}"
                );
                assert_eq!(any_word(s, word_has_nul), s.contains(&0), "{start}+{len}");
            }
        }
    }

    #[test]
    fn strings_refuse_nul_bad_utf8_and_wildcards() {
        assert_eq!(check_str(b"a\0b"), Err(DecodeError::NullCharacter));
        assert_eq!(check_str(&[0xc3, 0x28]), Err(DecodeError::InvalidUtf8));
        assert_eq!(check_str(b"a/+"), Ok("a/+"));
        assert_eq!(
            check_topic_name(b"a/+"),
            Err(DecodeError::WildcardInTopicName)
        );
        assert_eq!(
            check_topic_name(b"#"),
            Err(DecodeError::WildcardInTopicName)
        );
        assert_eq!(check_topic_name(b"a\0"), Err(DecodeError::NullCharacter));
        assert_eq!(check_topic_name(b"a/b"), Ok("a/b"));
    }
}
