use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::store::disk::{Disk, SimDisk};
use crate::store::frame::{encode_frame, encode_group, FileKind, FrameFormat, FORMAT_SINGLE};
use crate::store::testutil::{arb_record, message, samples};

/// What a scan saw: each frame's LSN and record bytes, the next LSN and the cut.
type Seen = (Vec<(Lsn, Vec<u8>)>, Lsn, Option<Cut>);

fn encoded(r: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out
}

/// A segment of the old format (version 1, one record per frame) starting at LSN
/// `first` holding `records`.
fn segment(first: Lsn, records: &[Record<'_>]) -> Vec<u8> {
    let header = FileHeader {
        kind: FileKind::Segment,
        lsn: first,
    };
    let mut bytes = header.encode_as(FORMAT_SINGLE).to_vec();
    for (lsn, r) in (first..).zip(records) {
        encode_frame(&mut bytes, lsn, r);
    }
    bytes
}

/// A segment of the current format (groups) starting at LSN `first` holding `records`
/// in groups of `size` records (the last one takes what is left).
fn grouped(first: Lsn, records: &[Record<'_>], size: usize) -> Vec<u8> {
    let header = FileHeader {
        kind: FileKind::Segment,
        lsn: first,
    };
    let mut bytes = header.encode().to_vec();
    for (i, chunk) in records.chunks(size.max(1)).enumerate() {
        encode_group(&mut bytes, first + (i * size.max(1)) as u64, chunk);
    }
    bytes
}

/// The same records as an old segment and as segments in groups of several sizes.
fn both_formats(first: Lsn, records: &[Record<'_>]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("format 1", segment(first, records)),
        ("groups of 1", grouped(first, records, 1)),
        ("groups of 3", grouped(first, records, 3)),
        ("one group", grouped(first, records, records.len())),
    ]
}

/// The naive oracle: the whole file in one buffer through [`scan`].
fn whole(bytes: &[u8]) -> Seen {
    let mut seen = Vec::new();
    let (header, format) = match FileHeader::decode_format(bytes) {
        Ok(h) => h,
        Err(reason) => return (seen, 0, Some(Cut { offset: 0, reason })),
    };
    let (next, cut) = scan(bytes, FILE_HEADER_BYTES, header.lsn, format, |lsn, r| {
        seen.push((lsn, encoded(&r)));
    });
    (seen, next, cut)
}

fn in_pieces(disk: &SimDisk, path: &Path, piece_bytes: usize) -> (Seen, FileScan) {
    let mut seen = Vec::new();
    let mut reader = PieceReader::with_piece_bytes(piece_bytes);
    let scanned = reader
        .scan(
            disk,
            path,
            |h| Ok(h.lsn),
            |lsn, r| seen.push((lsn, encoded(&r))),
        )
        .expect("scan");
    ((seen, scanned.next, scanned.cut), scanned)
}

fn on_disk(bytes: &[u8]) -> SimDisk {
    let disk = SimDisk::default();
    let mut f = disk.create_new(Path::new("/f")).expect("create");
    f.append(bytes).expect("write");
    disk
}

/// Piece sizes that put piece boundaries inside headers, bodies and between frames.
const PIECES: [usize; 6] = [1, 25, 31, 64, 1000, READ_PIECE_BYTES];

#[test]
fn every_truncation_is_cut_where_a_whole_read_cuts_it() {
    for (what, bytes) in both_formats(7, &samples()) {
        for keep in 0..=bytes.len() {
            let disk = on_disk(&bytes[..keep]);
            let oracle = whole(&bytes[..keep]);
            for piece in PIECES {
                let (seen, scanned) = in_pieces(&disk, Path::new("/f"), piece);
                assert_eq!(seen, oracle, "{what}: kept {keep} bytes, pieces of {piece}");
                assert_eq!(scanned.len, keep as u64);
                let dropped = oracle.2.map_or(0, |c| keep - c.offset) as u64;
                assert_eq!(scanned.bytes_dropped(), dropped);
            }
        }
    }
}

/// A segment written before groups (format 1) is read record by record as before, and
/// holds the same records as the same log in groups.
#[test]
fn an_old_format_segment_reads_as_before() {
    let records = samples();
    let old = segment(7, &records);
    let (header, format) = FileHeader::decode_format(&old).expect("header");
    assert_eq!((header.lsn, format), (7, FrameFormat::Single));
    let disk = on_disk(&old);
    for piece in PIECES {
        let (seen, scanned) = in_pieces(&disk, Path::new("/f"), piece);
        assert_eq!(scanned.cut, None);
        let want: Vec<(Lsn, Vec<u8>)> = (7..).zip(records.iter().map(encoded)).collect();
        assert_eq!(seen.0, want, "pieces of {piece}");
        let new = on_disk(&grouped(7, &records, 4));
        assert_eq!(in_pieces(&new, Path::new("/f"), piece).0, seen);
    }
}

#[test]
fn a_frame_longer_than_a_piece_is_read_whole() {
    let big = message("t", &vec![7u8; 5000], true);
    let records = [
        Record::MessageStored {
            id: crate::store::MsgId(1),
            msg: big.clone(),
        },
        samples()[0].clone(),
        Record::MessageStored {
            id: crate::store::MsgId(2),
            msg: big,
        },
    ];
    for (what, bytes) in both_formats(1, &records) {
        let disk = on_disk(&bytes);
        let (seen, scanned) = in_pieces(&disk, Path::new("/f"), 64);
        assert_eq!(seen, whole(&bytes), "{what}");
        assert_eq!((seen.0.len(), scanned.cut), (3, None), "{what}");
    }
}

#[test]
fn a_garbage_length_allocates_nothing_and_is_cut() {
    let mut bytes = segment(1, &samples()[..3]);
    let at = bytes.len();
    bytes.extend_from_slice(&segment(4, &samples()[3..4])[FILE_HEADER_BYTES..]);
    // A length that the file cannot hold (but under the frame limit): torn.
    bytes[at..at + 4].copy_from_slice(&200_000_000u32.to_le_bytes());
    let disk = on_disk(&bytes);
    let mut reader = PieceReader::with_piece_bytes(64);
    let scanned = reader
        .scan(&disk, Path::new("/f"), |h| Ok(h.lsn), |_, _| {})
        .expect("scan");
    assert_eq!(
        scanned.cut,
        Some(Cut {
            offset: at,
            reason: CutReason::Torn
        })
    );
    assert!(reader.buf.len() < 4096, "grew to {}", reader.buf.len());
    assert_eq!(scanned.cut, whole(&bytes).2);
}

#[test]
fn a_header_refused_by_the_caller_cuts_the_whole_file() {
    let bytes = segment(9, &samples()[..2]);
    let disk = on_disk(&bytes);
    let mut reader = PieceReader::default();
    let gap = CutReason::LsnGap {
        expected: 3,
        found: 9,
    };
    let mut applied = 0;
    let scanned = reader
        .scan(&disk, Path::new("/f"), |_| Err(gap), |_, _| applied += 1)
        .expect("scan");
    assert_eq!(
        scanned.cut,
        Some(Cut {
            offset: 0,
            reason: gap
        })
    );
    assert_eq!((applied, scanned.bytes_dropped()), (0, bytes.len() as u64));
    let e = reader
        .scan(&disk, Path::new("/missing"), |h| Ok(h.lsn), |_, _| {})
        .expect_err("no file");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}

/// Records enough for several pieces of `piece` bytes, in groups of two and three
/// records (so frames straddle piece boundaries at many points).
fn several_pieces(first: Lsn) -> Vec<u8> {
    let records: Vec<Record<'_>> = (0..8).flat_map(|_| samples()).collect();
    grouped(first, &records, 3)
}

/// A bit flipped anywhere in the second or third piece: every record of the frames before
/// the damaged one is applied (the frames across the first boundaries too), and the file
/// is cut at the damaged frame, as one read of the whole file cuts it.
#[test]
fn a_flip_in_a_later_piece_is_cut_where_a_whole_read_cuts_it() {
    let bytes = several_pieces(1);
    for piece in [97, 256] {
        assert!(bytes.len() > 4 * piece, "{} bytes", bytes.len());
        for at in piece..3 * piece {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            let oracle = whole(&damaged);
            let cut = oracle.2.expect("the flip is caught");
            assert!(cut.offset <= at, "flip at {at}");
            let (seen, scanned) = in_pieces(&on_disk(&damaged), Path::new("/f"), piece);
            assert_eq!(seen, oracle, "flip at {at}, pieces of {piece}");
            assert_eq!(scanned.bytes_dropped(), (damaged.len() - cut.offset) as u64);
        }
    }
}

/// A read error is returned once the decoder reaches the piece that hit it, after the
/// records of the pieces before it were applied; a cut before that piece is reported
/// as a cut, and the error never seen.
#[test]
fn a_read_error_is_returned_when_its_piece_is_reached() {
    let bytes = several_pieces(1);
    let piece = 256;
    let disk = on_disk(&bytes);
    disk.set_read_fails_from(Some(2 * piece as u64));
    let mut applied = Vec::new();
    let mut reader = PieceReader::with_piece_bytes(piece);
    let e = reader
        .scan(
            &disk,
            Path::new("/f"),
            |h| Ok(h.lsn),
            |lsn, _| applied.push(lsn),
        )
        .expect_err("the third piece fails");
    assert_eq!(e.raw_os_error(), Some(5));
    // What the first two pieces hold, whole: the frames a whole read of them keeps.
    let (before, _, _) = whole(&bytes[..2 * piece]);
    let want: Vec<Lsn> = before.iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(applied, want);
    assert!(!want.is_empty());

    // A flip in the frame across the first boundary (whole before the failing piece).
    let frame = frame_across(&bytes, piece);
    assert!(frame.end <= 2 * piece, "{frame:?}");
    let mut damaged = bytes.clone();
    damaged[frame.end - 1] ^= 1;
    let disk = on_disk(&damaged);
    disk.set_read_fails_from(Some(2 * piece as u64));
    let (seen, _) = in_pieces(&disk, Path::new("/f"), piece);
    assert_eq!(seen, whole(&damaged));
}

/// The bytes of the frame of `bytes` (a segment) that holds byte `at`.
fn frame_across(bytes: &[u8], at: usize) -> std::ops::Range<usize> {
    let mut pos = FILE_HEADER_BYTES;
    loop {
        let body = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
        let end = pos + FRAME_HEADER_BYTES + body as usize;
        if end > at {
            return pos..end;
        }
        pos = end;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random records, the file cut and a bit flipped or a run zeroed at random: every
    /// piece size sees exactly what one read of the whole file sees.
    #[test]
    fn pieces_see_what_a_whole_read_sees(
        records in proptest::collection::vec(arb_record(), 0..30),
        cut_at in any::<prop::sample::Index>(),
        flip in proptest::option::of((any::<prop::sample::Index>(), 0u8..8)),
        zero in proptest::option::of((any::<prop::sample::Index>(), 1usize..40)),
        piece in 1usize..300,
        group in 0usize..6,
    ) {
        // Group size 0: the old format, one record per frame.
        let mut bytes = match group {
            0 => segment(1, &records),
            n => grouped(1, &records, n),
        };
        let keep = cut_at.index(bytes.len() + 1);
        bytes.truncate(keep);
        if let (Some((at, bit)), false) = (flip, bytes.is_empty()) {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        if let (Some((at, n)), false) = (zero, bytes.is_empty()) {
            let at = at.index(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes[at..end].fill(0);
        }
        let disk = on_disk(&bytes);
        let (seen, scanned) = in_pieces(&disk, Path::new("/f"), piece);
        prop_assert_eq!(&seen, &whole(&bytes));
        prop_assert_eq!(scanned.len, bytes.len() as u64);
    }
}
