//! Framing: file headers, and the length + CRC32C frames that carry records.
//!
//! Owns: the byte layout of segment and checkpoint files. A file is a [`FileHeader`]
//! followed by frames. Every frame starts `len: u32, crc: u32, lsn: u64` (little endian)
//! and then holds `body: [u8; len]`, where `crc` is CRC32C over `len`, `lsn` and `body`.
//! The header's format version says what a body is ([`FrameFormat`]):
//!
//! * version 1 ([`FrameFormat::Single`]): one [`Record`] encoding; `lsn` is its LSN.
//!   Segments were written so until version 2, checkpoints until the thirteenth round
//!   (both still read).
//! * version 2 ([`FrameFormat::Grouped`], segments and checkpoints): one or more *members*, each
//!   `rlen: varint, record: [u8; rlen]` (LEB128, at most 5 bytes); `lsn` is the first
//!   member's LSN and the others follow it by one. The log puts a batch's records into
//!   groups of up to [`GROUP_BODY_BYTES_MAX`] (a larger record is a group alone), so a
//!   batch of small records pays one checksum and one 16-byte header per group, not per
//!   record (`docs/decisions/0020-grouped-frames.md`). A checkpoint packs its records so
//!   too ([`GroupPacker`]), numbered 1, 2, … as before.
//!
//! Invariant: [`scan`] yields a record only if its frame's checksum matches, the frame's
//! LSN is the one expected next and the record decodes; at the first frame that fails any
//! of these it stops and says where (the frame's start) and why, so a torn or bit-flipped
//! tail is cut and the longest valid prefix kept, never garbage. A group is checked whole
//! before any member is handed out; only a member that does not decode in a group whose
//! checksum matches (a newer writer's record) stops inside it, after the members before
//! it. Must not touch: files (it reads and writes byte slices), the engine.

use super::record::{DecodeError, Record};
use super::{Lsn, FORMAT_VERSION};

/// The format version of files whose frames hold one record each (segments and
/// checkpoints written before groups; still read).
pub const FORMAT_SINGLE: u16 = 1;
/// The format version of files whose frames hold groups of records (segments, and
/// checkpoints since the thirteenth round).
pub const FORMAT_GROUPED: u16 = 2;
/// A group's body grows to at most this many bytes before the log starts another; a
/// record larger than this is a group alone. Far below the reader's piece
/// (`reader::READ_PIECE_BYTES`), so groups never make it grow.
pub const GROUP_BODY_BYTES_MAX: usize = 64 * 1024;
/// Bytes of a member's length at most (a LEB128 `u32`).
const MEMBER_LEN_BYTES_MAX: usize = 5;

/// Bytes before a frame's body: length, checksum, LSN.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest frame body accepted when reading: an MQTT packet's limit plus room for the
/// record's other fields (and, in a group, its member length). A length above it is
/// corruption, refused before allocating.
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

/// What a file's frames hold, as its header's format version says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// One record per frame (version 1).
    Single,
    /// A group of records per frame (version 2).
    Grouped,
}

impl FrameFormat {
    /// The format of files of version `version`, if this build reads it.
    pub fn of_version(version: u16) -> Option<FrameFormat> {
        match version {
            FORMAT_SINGLE => Some(FrameFormat::Single),
            FORMAT_GROUPED => Some(FrameFormat::Grouped),
            _ => None,
        }
    }
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
    /// The header's bytes, with the version this build writes ([`FORMAT_VERSION`],
    /// grouped frames) for either kind.
    pub fn encode(&self) -> [u8; FILE_HEADER_BYTES] {
        self.encode_as(FORMAT_VERSION)
    }

    /// The header's bytes with format version `version` (tests write old files so).
    pub fn encode_as(&self, version: u16) -> [u8; FILE_HEADER_BYTES] {
        let mut b = [0u8; FILE_HEADER_BYTES];
        b[..8].copy_from_slice(match self.kind {
            FileKind::Segment => &SEGMENT_MAGIC,
            FileKind::Checkpoint => &CHECKPOINT_MAGIC,
        });
        b[8..10].copy_from_slice(&version.to_le_bytes());
        b[12..20].copy_from_slice(&self.lsn.to_le_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Read a header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<FileHeader, CutReason> {
        FileHeader::decode_format(buf).map(|(h, _)| h)
    }

    /// Read a header from the start of `buf`, with the format of the frames after it.
    pub fn decode_format(buf: &[u8]) -> Result<(FileHeader, FrameFormat), CutReason> {
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
        let format = FrameFormat::of_version(version).ok_or(CutReason::Format(version))?;
        let header = FileHeader {
            kind,
            lsn: le_u64(&b[12..20]),
        };
        Ok((header, format))
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
    /// An intact header of a format version this build does not read (a newer build's
    /// file): recovery stops the start instead of cutting it ([`super::StoreError::Format`]).
    Format(u16),
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
            CutReason::Format(v) => write!(f, "format version {v}, which this build does not read"),
        }
    }
}

/// Append one single-record frame (version 1) holding `record` at `lsn` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, lsn: Lsn, record: &Record<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    record.encode(out);
    seal_at(&mut out[start..], lsn);
}

/// Start a group frame (version 2) at the end of `out`; returns where it starts, for
/// [`seal_group`] once its members are pushed ([`push_member`]).
pub fn begin_group(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    start
}

/// Bytes a member holding a record encoding of `len` bytes takes in a group's body.
pub fn member_bytes(len: usize) -> usize {
    let mut n = 1;
    let mut v = len >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n + len
}

/// Append a member holding the record encoding `body` to the group being built at the
/// end of `out`.
pub fn push_member(out: &mut Vec<u8>, body: &[u8]) {
    // A record is bounded by one MQTT packet (< 256 MiB), so its length fits in u32.
    let mut v = u32::try_from(body.len()).unwrap_or(u32::MAX);
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out.extend_from_slice(body);
}

/// Give the group frame `frame` (from [`begin_group`] to the end of its last member) its
/// length, its first member's LSN and its checksum.
pub fn seal_group(frame: &mut [u8], first_lsn: Lsn) {
    seal_at(frame, first_lsn);
}

/// Append one group frame holding `records`, the first at `first_lsn` (the log builds its
/// groups from encodings it already holds; this is for tests and tools).
pub fn encode_group(out: &mut Vec<u8>, first_lsn: Lsn, records: &[Record<'_>]) {
    let start = begin_group(out);
    let mut body = Vec::new();
    for r in records {
        body.clear();
        r.encode(&mut body);
        push_member(out, &body);
    }
    seal_group(&mut out[start..], first_lsn);
}

/// Packs records one by one into group frames (version 2) at the end of a buffer, as the
/// log's batches are: a group grows to at most [`GROUP_BODY_BYTES_MAX`] bytes of body (a
/// larger record is a group alone) and its members take consecutive LSNs. Checkpoints are
/// written so: a member costs its length's byte or two where a frame of its own cost a
/// 16-byte header (a 25-byte queued delivery took 41 bytes).
pub struct GroupPacker {
    /// The open group: where its frame starts in the buffer, and its first member's LSN.
    open: Option<(usize, Lsn)>,
    /// The LSN of the next record.
    next: Lsn,
    /// The record being packed, encoded.
    scratch: Vec<u8>,
}

impl GroupPacker {
    /// A packer whose first record gets LSN `first`.
    pub fn new(first: Lsn) -> GroupPacker {
        GroupPacker {
            open: None,
            next: first,
            scratch: Vec::new(),
        }
    }

    /// Append `record` to the open group at the end of `out`, or to a new one.
    pub fn push(&mut self, out: &mut Vec<u8>, record: &Record<'_>) {
        self.scratch.clear();
        record.encode(&mut self.scratch);
        let need = member_bytes(self.scratch.len());
        if let Some((at, _)) = self.open {
            if out.len() - at - FRAME_HEADER_BYTES + need > GROUP_BODY_BYTES_MAX {
                self.seal(out);
            }
        }
        if self.open.is_none() {
            self.open = Some((begin_group(out), self.next));
        }
        push_member(out, &self.scratch);
        self.next += 1;
    }

    /// Seal the open group, if any, so that `out` ends with whole frames (before it is
    /// written or cleared, and at the end).
    pub fn seal(&mut self, out: &mut [u8]) {
        if let Some((at, first)) = self.open.take() {
            seal_group(&mut out[at..], first);
        }
    }
}

/// Write the length (from the frame's size), `lsn` and the checksum into the header of
/// `frame`, which is exactly one frame.
fn seal_at(frame: &mut [u8], lsn: Lsn) {
    let body_len = frame.len() - FRAME_HEADER_BYTES;
    // A body is bounded by one MQTT packet or one group (< 256 MiB), so it fits in u32.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
    frame[..4].copy_from_slice(&len);
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

/// Read frames of `format` from `buf[pos..]`, expecting LSNs `first_lsn, first_lsn + 1,
/// …`, handing each record to `f` (borrowing from `buf`). Returns the LSN after the last
/// record kept, and the cut if it stopped early (at the start of the frame that failed).
pub fn scan(
    buf: &[u8],
    mut pos: usize,
    first_lsn: Lsn,
    format: FrameFormat,
    mut f: impl FnMut(Lsn, Record<'_>),
) -> (Lsn, Option<Cut>) {
    let mut next = first_lsn;
    while pos < buf.len() {
        let read = frame_at(buf, pos, next).and_then(|(body, frame_bytes)| {
            let after = match format {
                FrameFormat::Single => single(body, next, &mut f),
                FrameFormat::Grouped => group(body, next, &mut f),
            };
            after.map(|a| (a, frame_bytes))
        });
        match read {
            Ok((after, frame_bytes)) => {
                next = after;
                pos += frame_bytes;
            }
            Err(Stop { reason, after }) => {
                let after = after.unwrap_or(next);
                return (
                    after,
                    Some(Cut {
                        offset: pos,
                        reason,
                    }),
                );
            }
        }
    }
    (next, None)
}

/// Why a frame was not (wholly) kept, and the LSN after the last record of it handed out
/// if some were (a group with a member that does not decode).
struct Stop {
    reason: CutReason,
    after: Option<Lsn>,
}

impl From<CutReason> for Stop {
    fn from(reason: CutReason) -> Stop {
        Stop {
            reason,
            after: None,
        }
    }
}

/// The body of the frame at `buf[pos..]`, and the frame's size, if it is whole, its
/// checksum matches and it carries `want_lsn`.
fn frame_at(buf: &[u8], pos: usize, want_lsn: Lsn) -> Result<(&[u8], usize), Stop> {
    let rest = &buf[pos..];
    let head = rest.get(..FRAME_HEADER_BYTES).ok_or(CutReason::Torn)?;
    let len = usize::try_from(le_u32(&head[..4])).map_err(|_| CutReason::Oversized)?;
    if len > FRAME_BODY_BYTES_MAX {
        return Err(CutReason::Oversized.into());
    }
    let frame = rest
        .get(..FRAME_HEADER_BYTES + len)
        .ok_or(CutReason::Torn)?;
    if frame_crc(&frame[..4], &frame[8..]) != le_u32(&frame[4..8]) {
        return Err(CutReason::Checksum.into());
    }
    let lsn = le_u64(&frame[8..16]);
    if lsn != want_lsn {
        return Err(CutReason::LsnGap {
            expected: want_lsn,
            found: lsn,
        }
        .into());
    }
    Ok((&frame[FRAME_HEADER_BYTES..], frame.len()))
}

/// Hand out the one record of a version 1 frame's `body`, at `lsn`.
fn single<'b>(body: &'b [u8], lsn: Lsn, f: &mut impl FnMut(Lsn, Record<'b>)) -> Result<Lsn, Stop> {
    let record = Record::decode(body).map_err(CutReason::Body)?;
    f(lsn, record);
    Ok(lsn + 1)
}

/// Hand out the members of a group's `body`, the first at `first`. The members' lengths
/// are checked to tile the body first, so a group cut for its layout hands out nothing.
fn group<'b>(body: &'b [u8], first: Lsn, f: &mut impl FnMut(Lsn, Record<'b>)) -> Result<Lsn, Stop> {
    let bad = |what| Stop::from(CutReason::Body(DecodeError::BadValue(what)));
    let mut at = 0;
    while at < body.len() {
        let (len, used) = member_len(&body[at..]).ok_or(bad("group member length"))?;
        at = (at + used)
            .checked_add(len)
            .filter(|&end| end <= body.len())
            .ok_or(bad("group member length"))?;
    }
    if body.is_empty() {
        return Err(bad("empty group"));
    }
    let mut lsn = first;
    let mut rest = body;
    while let Some((len, used)) = member_len(rest) {
        // The tiling was checked above; `get` keeps a mistake from panicking.
        let member = rest
            .get(used..used + len)
            .ok_or(bad("group member length"))?;
        let after = &rest[used + len..];
        match Record::decode(member) {
            Ok(record) => f(lsn, record),
            Err(e) => {
                let after = (lsn > first).then_some(lsn);
                return Err(Stop {
                    reason: CutReason::Body(e),
                    after,
                });
            }
        }
        lsn += 1;
        rest = after;
    }
    Ok(lsn)
}

/// A member's length and the bytes it takes, from the start of `b` (a LEB128 `u32`);
/// `None` if `b` is empty, or the length is unterminated or too large.
fn member_len(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0u32;
    for (i, &byte) in b.iter().take(MEMBER_LEN_BYTES_MAX).enumerate() {
        if i == MEMBER_LEN_BYTES_MAX - 1 && byte > 0x0f {
            return None;
        }
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((usize::try_from(v).ok()?, i + 1));
        }
    }
    None
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
        read_as(FrameFormat::Single, buf, first)
    }

    /// Every record `scan` hands out (checking their LSNs follow on from `first`).
    fn read_as(format: FrameFormat, buf: &[u8], first: Lsn) -> (Vec<Record<'static>>, Option<Cut>) {
        let mut got = Vec::new();
        let (next, cut) = scan(buf, 0, first, format, |lsn, r| {
            assert_eq!(lsn, first + got.len() as u64);
            got.push(r.into_owned());
        });
        assert_eq!(next, first + got.len() as u64);
        (got, cut)
    }

    /// `records` in groups of the sizes `sizes` (cycled; the last group takes the rest),
    /// the first record at `first`; with the end of each group.
    fn groups(records: &[Record<'static>], sizes: &[usize], first: Lsn) -> (Vec<u8>, Vec<Ends>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        let mut at = 0;
        for &n in sizes.iter().cycle() {
            if at == records.len() {
                break;
            }
            let n = n.clamp(1, records.len() - at);
            encode_group(&mut buf, first + at as u64, &records[at..at + n]);
            at += n;
            ends.push(Ends {
                byte: buf.len(),
                records: at,
            });
        }
        (buf, ends)
    }

    /// Where a group ends: its last byte's offset + 1, and the records up to it.
    #[derive(Debug, Clone, Copy)]
    struct Ends {
        byte: usize,
        records: usize,
    }

    /// A group frame at `lsn` whose body is `body` as given (any bytes), checksum valid.
    fn raw_group(lsn: Lsn, body: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let at = begin_group(&mut buf);
        buf.extend_from_slice(body);
        seal_group(&mut buf[at..], lsn);
        buf
    }

    fn encoding(r: &Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode(&mut out);
        out
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
        for sizes in [&[1][..], &[2, 5], &[rs.len()]] {
            let (buf, ends) = groups(&rs, sizes, 5);
            assert_eq!(
                ends.last().map(|e| (e.byte, e.records)),
                Some((buf.len(), rs.len()))
            );
            let (got, cut) = read_as(FrameFormat::Grouped, &buf, 5);
            assert_eq!((cut, &got), (None, &rs), "groups of {sizes:?}");
        }
    }

    /// A group saves 15 of a frame's 16 header bytes per small record it carries.
    #[test]
    fn a_group_of_small_records_is_smaller_than_their_frames() {
        let rs = samples();
        let (single, _) = frames(&rs, 1);
        let (grouped, _) = groups(&rs, &[rs.len()], 1);
        let bodies: usize = rs.iter().map(|r| encoding(r).len()).sum();
        assert_eq!(single.len(), FRAME_HEADER_BYTES * rs.len() + bodies);
        let lens: usize = rs.iter().map(|r| member_bytes(encoding(r).len())).sum();
        assert_eq!(grouped.len(), FRAME_HEADER_BYTES + lens);
        assert!(lens - bodies <= 2 * rs.len(), "a length byte or two each");
    }

    #[test]
    fn member_lengths_round_trip_at_every_width() {
        for len in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            1 << 28,
        ] {
            let mut out = Vec::new();
            let body = vec![0u8; len];
            push_member(&mut out, &body);
            assert_eq!(out.len(), member_bytes(len), "{len}");
            assert_eq!(member_len(&out), Some((len, out.len() - len)), "{len}");
        }
        // Unterminated, or past a u32: refused, never wrapped.
        assert_eq!(member_len(&[0x80, 0x80]), None);
        assert_eq!(member_len(&[0xff, 0xff, 0xff, 0xff, 0x10]), None);
        assert_eq!(
            member_len(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((u32::MAX as usize, 5))
        );
        assert_eq!(member_len(&[]), None);
    }

    /// A group whose checksum matches but whose layout is wrong hands out nothing; one
    /// with a member that does not decode hands out the members before it. Either way the
    /// cut is at the group's start and nothing after it is read.
    #[test]
    fn a_group_checked_by_its_checksum_is_still_checked_inside() {
        let rs = samples();
        let (mut buf, ends) = groups(&rs[..2], &[2], 1);
        let whole = buf.clone();
        let cut_at = |reason| {
            Some(Cut {
                offset: ends[0].byte,
                reason,
            })
        };
        let bad_len = CutReason::Body(DecodeError::BadValue("group member length"));
        let mut member = Vec::new();
        push_member(&mut member, &encoding(&rs[2]));
        // A member length past the body: nothing of the group.
        let mut past = member.clone();
        past[0] += 1;
        buf.extend_from_slice(&raw_group(3, &past));
        buf.extend_from_slice(&groups(&rs[3..4], &[1], 4).0);
        assert_eq!(
            read_as(FrameFormat::Grouped, &buf, 1),
            (rs[..2].to_vec(), cut_at(bad_len))
        );
        // An empty group.
        let mut empty = whole.clone();
        empty.extend_from_slice(&raw_group(3, &[]));
        let (got, cut) = read_as(FrameFormat::Grouped, &empty, 1);
        let empty_group = CutReason::Body(DecodeError::BadValue("empty group"));
        assert_eq!((got.len(), cut), (2, cut_at(empty_group)));
        // A member with an unknown tag after a good one: the good one is kept.
        let mut unknown = member.clone();
        push_member(&mut unknown, &[0xfe]);
        push_member(&mut unknown, &encoding(&rs[3]));
        let mut tail = whole;
        tail.extend_from_slice(&raw_group(3, &unknown));
        let (got, cut) = read_as(FrameFormat::Grouped, &tail, 1);
        let unknown_tag = CutReason::Body(DecodeError::UnknownTag(0xfe));
        assert_eq!((got, cut), (rs[..3].to_vec(), cut_at(unknown_tag)));
    }

    #[test]
    fn groups_zero_fill_and_lsn_gaps_are_cut() {
        let rs = samples();
        let (mut buf, ends) = groups(&rs[..5], &[3], 1);
        buf.extend_from_slice(&[0u8; 64]);
        let (got, cut) = read_as(FrameFormat::Grouped, &buf, 1);
        assert_eq!(got, rs[..5]);
        let last = ends[ends.len() - 1].byte;
        assert_eq!(
            cut,
            Some(Cut {
                offset: last,
                reason: CutReason::Checksum
            })
        );
        // A group whose first LSN is not the next one: a gap, its members not kept.
        let mut gap = buf[..last].to_vec();
        gap.extend_from_slice(&groups(&rs[5..7], &[2], 7).0);
        let (got, cut) = read_as(FrameFormat::Grouped, &gap, 1);
        assert_eq!(got.len(), 5);
        let reason = cut.map(|c| c.reason);
        let found = CutReason::LsnGap {
            expected: 6,
            found: 7,
        };
        assert_eq!(reason, Some(found));
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

    /// `buf` cut at `cut_at`, with one bit flipped if `flip` says where; and the first byte
    /// that is not as written (the cut's end if nothing was flipped).
    fn damage(
        buf: &[u8],
        cut_at: prop::sample::Index,
        flip: Option<(prop::sample::Index, u8)>,
    ) -> (Vec<u8>, usize) {
        let mut damaged = buf[..cut_at.index(buf.len() + 1)].to_vec();
        let mut first_bad = damaged.len();
        if let (Some((at, bit)), false) = (flip, damaged.is_empty()) {
            let i = at.index(damaged.len());
            damaged[i] ^= 1 << bit;
            first_bad = i;
        }
        (damaged, first_bad)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Records in groups of random sizes, the tail cut anywhere and a bit flipped
        /// anywhere at or after a point: the scan keeps exactly the records of the groups
        /// that end before the damage (a torn group loses all its records), each equal to
        /// what was written, and cuts where the first damaged group starts.
        #[test]
        fn damaged_group_tails_keep_the_longest_valid_prefix_of_groups(
            rs in proptest::collection::vec(arb_record(), 1..24),
            sizes in proptest::collection::vec(1usize..6, 1..5),
            cut_at in any::<prop::sample::Index>(),
            flip in proptest::option::of((any::<prop::sample::Index>(), 0u8..8)),
        ) {
            let (buf, ends) = groups(&rs, &sizes, 1);
            let (damaged, first_bad) = damage(&buf, cut_at, flip);
            let intact: Vec<&Ends> = ends.iter().take_while(|e| e.byte <= first_bad).collect();
            let (records, kept) = intact.last().map_or((0, 0), |e| (e.records, e.byte));
            let (got, cut) = read_as(FrameFormat::Grouped, &damaged, 1);
            prop_assert_eq!(&got[..], &rs[..records]);
            prop_assert_eq!(cut.map(|c| c.offset), (kept < damaged.len()).then_some(kept));
        }

        /// Cut the tail anywhere and flip a bit anywhere at or after a point: the scan keeps
        /// exactly the frames that end before the damage, each equal to what was written.
        #[test]
        fn damaged_tails_keep_the_longest_valid_prefix(
            rs in proptest::collection::vec(arb_record(), 1..24),
            cut_at in any::<prop::sample::Index>(),
            flip in proptest::option::of((any::<prop::sample::Index>(), 0u8..8)),
        ) {
            let (buf, ends) = frames(&rs, 1);
            let (damaged, first_bad) = damage(&buf, cut_at, flip);
            let intact = ends.iter().take_while(|&&e| e <= first_bad).count();
            let (got, cut) = read(&damaged, 1);
            prop_assert_eq!(&got[..], &rs[..intact]);
            let kept = if intact == 0 { 0 } else { ends[intact - 1] };
            prop_assert_eq!(cut.map(|c| c.offset), (kept < damaged.len()).then_some(kept));
        }
    }
}
