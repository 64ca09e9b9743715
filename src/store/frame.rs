//! Framing: file headers, and the length + CRC32C frame around every record.
//!
//! Owns: the byte layout of segment and checkpoint files. A file is a [`FileHeader`]
//! followed by frames; a frame is `len: u32, crc: u32, lsn: u64, body: [u8; len]` (little
//! endian), where `crc` is CRC32C over `len`, `lsn` and `body`, and `body` is one
//! [`Record`] encoding. Invariant: [`scan`] yields a frame only if its checksum matches,
//! its LSN is the one expected next and its body decodes; at the first frame that fails
//! any of these it stops and says where and why, so a torn or bit-flipped tail is cut and
//! the longest valid prefix kept, never garbage. Must not touch: files (it reads and writes
//! byte slices), the engine.

use super::record::{DecodeError, Record};
use super::{Lsn, FORMAT_VERSION};

/// Bytes before a frame's body: length, checksum, LSN.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest frame body accepted when reading: an MQTT packet's limit plus room for the
/// record's other fields. A length above it is corruption, refused before allocating.
pub const FRAME_BODY_BYTES_MAX: usize = 268_435_455 + 2 * 65_536 + 4096;
/// Bytes of a [`FileHeader`].
pub const FILE_HEADER_BYTES: usize = 24;

const SEGMENT_MAGIC: [u8; 8] = *b"SHMQWAL\0";
const CHECKPOINT_MAGIC: [u8; 8] = *b"SHMQCKP\0";

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A log segment; `lsn` is its first record's LSN.
    Segment,
    /// A checkpoint; `lsn` is the last record its state includes.
    Checkpoint,
}

/// The header every store file starts with: magic, version, an LSN, and a CRC32C of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Segment or checkpoint.
    pub kind: FileKind,
    /// See [`FileKind`].
    pub lsn: Lsn,
}

impl FileHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; FILE_HEADER_BYTES] {
        let mut b = [0u8; FILE_HEADER_BYTES];
        b[..8].copy_from_slice(match self.kind {
            FileKind::Segment => &SEGMENT_MAGIC,
            FileKind::Checkpoint => &CHECKPOINT_MAGIC,
        });
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.lsn.to_le_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Read a header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<FileHeader, CutReason> {
        let b = buf.get(..FILE_HEADER_BYTES).ok_or(CutReason::Torn)?;
        if crc32c::crc32c(&b[..20]) != le_u32(&b[20..24]) {
            return Err(CutReason::Checksum);
        }
        let kind = match &b[..8] {
            m if m == SEGMENT_MAGIC => FileKind::Segment,
            m if m == CHECKPOINT_MAGIC => FileKind::Checkpoint,
            _ => return Err(CutReason::BadHeader("magic")),
        };
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(CutReason::BadHeader("format version"));
        }
        Ok(FileHeader {
            kind,
            lsn: le_u64(&b[12..20]),
        })
    }
}

/// Why reading stopped before the end of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// The file ends inside a frame (a write that did not finish).
    Torn,
    /// A length beyond [`FRAME_BODY_BYTES_MAX`].
    Oversized,
    /// The checksum does not match (bit flip, zero fill, garbage).
    Checksum,
    /// A valid frame whose LSN is not the next one (a stale or misplaced file).
    LsnGap {
        /// The LSN expected.
        expected: Lsn,
        /// The LSN found.
        found: Lsn,
    },
    /// The checksum matched but the body is not a record this version knows.
    Body(DecodeError),
    /// The file header is not one this version writes.
    BadHeader(&'static str),
}

impl std::fmt::Display for CutReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CutReason::Torn => write!(f, "torn write"),
            CutReason::Oversized => write!(f, "impossible frame length"),
            CutReason::Checksum => write!(f, "checksum mismatch"),
            CutReason::LsnGap { expected, found } => {
                write!(f, "LSN {found} where {expected} was expected")
            }
            CutReason::Body(e) => write!(f, "undecodable record ({e})"),
            CutReason::BadHeader(what) => write!(f, "bad file header ({what})"),
        }
    }
}

/// Append one frame holding `record` at `lsn` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, lsn: Lsn, record: &Record<'_>) {
    let start = out.len();
    encode_unsealed(out, record);
    seal_frame(&mut out[start..], lsn);
}

/// Append one frame holding `record` to `out` without its LSN and checksum: the log
/// seals it ([`seal_frame`]) when it writes the batch, so a frame cancelled before then
/// costs no checksum and takes no LSN.
pub fn encode_unsealed(out: &mut Vec<u8>, record: &Record<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    record.encode(out);
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    // A record body is bounded by one MQTT packet (< 256 MiB), so it fits in u32.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
}

/// Give the unsealed frame `frame` (exactly one, from [`encode_unsealed`]) its LSN and
/// checksum.
pub fn seal_frame(frame: &mut [u8], lsn: Lsn) {
    frame[8..16].copy_from_slice(&lsn.to_le_bytes());
    let crc = frame_crc(&frame[..4], &frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn frame_crc(len: &[u8], lsn_and_body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c_word(le_u32(len)), lsn_and_body)
}

/// The byte-wise table of CRC32C (Castagnoli, reflected polynomial `0x82F63B78`).
const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// CRC32C of the 4 little-endian bytes of `w` (a frame's length), by table: the value
/// `crc32c::crc32c` gives, without its per-call cost (the alignment split and the chunk
/// loops of the hardware routine), which made the length's 4 bytes cost about as much
/// as a record's whole body. One hardware call per frame remains, for the LSN and body.
fn crc32c_word(w: u32) -> u32 {
    let mut c = !w;
    for _ in 0..4 {
        c = CRC32C_TABLE[(c & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Where [`scan`] stopped, if before the end of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Offset in the scanned buffer of the first byte not kept.
    pub offset: usize,
    /// Why.
    pub reason: CutReason,
}

/// Read frames from `buf[pos..]`, expecting LSNs `first_lsn, first_lsn + 1, …`, handing
/// each to `f` (borrowing from `buf`). Returns the LSN after the last frame kept, and the
/// cut if it stopped early.
pub fn scan(
    buf: &[u8],
    mut pos: usize,
    first_lsn: Lsn,
    mut f: impl FnMut(Lsn, Record<'_>),
) -> (Lsn, Option<Cut>) {
    let mut next = first_lsn;
    while pos < buf.len() {
        match frame_at(buf, pos, next) {
            Ok((record, frame_bytes)) => {
                f(next, record);
                next += 1;
                pos += frame_bytes;
            }
            Err(reason) => {
                return (
                    next,
                    Some(Cut {
                        offset: pos,
                        reason,
                    }),
                )
            }
        }
    }
    (next, None)
}

/// The frame at `buf[pos..]`, and its size, if it is valid and carries `want_lsn`.
fn frame_at(buf: &[u8], pos: usize, want_lsn: Lsn) -> Result<(Record<'_>, usize), CutReason> {
    let rest = &buf[pos..];
    let head = rest.get(..FRAME_HEADER_BYTES).ok_or(CutReason::Torn)?;
    let len = usize::try_from(le_u32(&head[..4])).map_err(|_| CutReason::Oversized)?;
    if len > FRAME_BODY_BYTES_MAX {
        return Err(CutReason::Oversized);
    }
    let frame = rest
        .get(..FRAME_HEADER_BYTES + len)
        .ok_or(CutReason::Torn)?;
    if frame_crc(&frame[..4], &frame[8..]) != le_u32(&frame[4..8]) {
        return Err(CutReason::Checksum);
    }
    let lsn = le_u64(&frame[8..16]);
    if lsn != want_lsn {
        return Err(CutReason::LsnGap {
            expected: want_lsn,
            found: lsn,
        });
    }
    let record = Record::decode(&frame[FRAME_HEADER_BYTES..]).map_err(CutReason::Body)?;
    Ok((record, frame.len()))
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::testutil::{arb_record, samples};

    fn frames(records: &[Record<'static>], first: Lsn) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for (i, r) in records.iter().enumerate() {
            encode_frame(&mut buf, first + i as u64, r);
            ends.push(buf.len());
        }
        (buf, ends)
    }

    fn read(buf: &[u8], first: Lsn) -> (Vec<Record<'static>>, Option<Cut>) {
        let mut got = Vec::new();
        let (_, cut) = scan(buf, 0, first, |_, r| got.push(r.into_owned()));
        (got, cut)
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        for kind in [FileKind::Segment, FileKind::Checkpoint] {
            let h = FileHeader { kind, lsn: 77 };
            let b = h.encode();
            assert_eq!(FileHeader::decode(&b), Ok(h));
            for i in 0..b.len() {
                let mut bad = b;
                bad[i] ^= 0x10;
                assert!(FileHeader::decode(&bad).is_err(), "flip at {i}");
            }
            assert_eq!(FileHeader::decode(&b[..10]), Err(CutReason::Torn));
        }
    }

    #[test]
    fn all_samples_scan_back_in_order() {
        let rs = samples();
        let (buf, _) = frames(&rs, 5);
        let (got, cut) = read(&buf, 5);
        assert_eq!(cut, None);
        assert_eq!(got, rs);
    }

    #[test]
    fn a_wrong_first_lsn_is_a_gap_not_a_record() {
        let (buf, _) = frames(&samples()[..2], 5);
        let (got, cut) = read(&buf, 6);
        assert!(got.is_empty());
        let reason = cut.map(|c| c.reason);
        assert_eq!(
            reason,
            Some(CutReason::LsnGap {
                expected: 6,
                found: 5
            })
        );
    }

    #[test]
    fn zero_fill_and_huge_lengths_are_cut() {
        let (mut buf, ends) = frames(&samples()[..3], 1);
        buf.extend_from_slice(&[0u8; 64]);
        let (got, cut) = read(&buf, 1);
        assert_eq!(got.len(), 3);
        assert_eq!(
            cut,
            Some(Cut {
                offset: ends[2],
                reason: CutReason::Checksum
            })
        );
        let mut huge = buf[..ends[2]].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0u8; 12]);
        let (_, cut) = read(&huge, 1);
        assert_eq!(cut.map(|c| c.reason), Some(CutReason::Oversized));
    }

    #[test]
    fn the_length_checksum_is_crc32c() {
        for w in [0, 1, 0xff, 0x100, 0x1234_5678, 0xdead_beef, u32::MAX] {
            assert_eq!(crc32c_word(w), crc32c::crc32c(&w.to_le_bytes()), "{w:#x}");
        }
        assert_eq!(
            frame_crc(&7u32.to_le_bytes(), b"lsn and body"),
            crc32c::crc32c_append(crc32c::crc32c(&7u32.to_le_bytes()), b"lsn and body")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Cut the tail anywhere and flip a bit anywhere at or after a point: the scan keeps
        /// exactly the frames that end before the damage, each equal to what was written.
        #[test]
        fn damaged_tails_keep_the_longest_valid_prefix(
            rs in proptest::collection::vec(arb_record(), 1..24),
            cut_at in any::<prop::sample::Index>(),
            flip in proptest::option::of((any::<prop::sample::Index>(), 0u8..8)),
        ) {
            let (buf, ends) = frames(&rs, 1);
            let mut damaged = buf[..cut_at.index(buf.len() + 1)].to_vec();
            let mut first_bad = damaged.len();
            if let (Some((at, bit)), false) = (flip, damaged.is_empty()) {
                let i = at.index(damaged.len());
                damaged[i] ^= 1 << bit;
                first_bad = i;
            }
            let intact = ends.iter().take_while(|&&e| e <= first_bad).count();
            let (got, cut) = read(&damaged, 1);
            prop_assert_eq!(&got[..], &rs[..intact]);
            let kept = if intact == 0 { 0 } else { ends[intact - 1] };
            prop_assert_eq!(cut.map(|c| c.offset), (kept < damaged.len()).then_some(kept));
        }
    }
}
