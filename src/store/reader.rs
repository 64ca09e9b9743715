//! Reading a store file's frames in pieces, through one buffer reused across files.
//!
//! Owns: nothing but the read buffer ([`PieceReader`]). Invariant: [`PieceReader::scan`]
//! hands out exactly the records [`super::frame::scan`] would over the whole file read at
//! once, in the frame format the file's header names (one record per frame, or groups:
//! [`super::frame::FrameFormat`]), and reports the same cut (offset and reason, as
//! offsets in the file): a torn or bit-flipped tail is cut and the longest valid prefix
//! kept, whatever the piece size.
//! Only a frame longer than the buffer grows it (to that frame, never past what the file
//! holds), so a damaged length cannot make it allocate. Must not touch: what the records
//! mean (the caller applies them), or any file but the one it is given.
//!
//! Why: recovery used to read each segment and checkpoint whole into a fresh buffer
//! (64 MiB a segment, a checkpoint as big as the state): page faults and page clearing
//! for every byte, and records decoded from memory long out of the cache. A piece of
//! [`READ_PIECE_BYTES`] is copied in and decoded while still in the cache.

use std::path::Path;

use super::disk::Disk;
use super::frame::{scan, Cut, CutReason, FileHeader, FILE_HEADER_BYTES, FRAME_HEADER_BYTES};
use super::record::Record;
use super::Lsn;

/// Bytes read from a file at a time (a frame longer than this is read whole).
pub const READ_PIECE_BYTES: usize = 1 << 20;

/// What [`PieceReader::scan`] found in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileScan {
    /// The file's length when it was read.
    pub len: u64,
    /// The LSN after the last frame kept (the first one expected, if none was).
    pub next: Lsn,
    /// Where reading stopped before the end of the file, if it did: offsets in the file.
    pub cut: Option<Cut>,
}

impl FileScan {
    /// Bytes of the file dropped by the cut (0 without one).
    pub fn bytes_dropped(&self) -> u64 {
        self.cut
            .map_or(0, |c| self.len.saturating_sub(c.offset as u64))
    }
}

/// A reusable buffer for reading store files in pieces.
#[derive(Debug)]
pub struct PieceReader {
    buf: Vec<u8>,
    piece_bytes: usize,
}

impl Default for PieceReader {
    fn default() -> Self {
        PieceReader::with_piece_bytes(READ_PIECE_BYTES)
    }
}

impl PieceReader {
    /// A reader taking `piece_bytes` at a time (at least a file header's worth; tests
    /// use tiny pieces to put frame boundaries everywhere).
    pub fn with_piece_bytes(piece_bytes: usize) -> PieceReader {
        PieceReader {
            buf: Vec::new(),
            piece_bytes: piece_bytes.max(FILE_HEADER_BYTES),
        }
    }

    /// Read `path`'s header and hand it to `head`, which returns the LSN of the first
    /// record to expect (or why the file is cut at its start); then hand every record of
    /// every valid frame to `f`, in order, borrowing from the buffer. Stops at the first
    /// frame that is torn, fails its checksum, has another LSN or does not decode, as
    /// [`scan`] does. Old files (one record per frame) and new ones (groups) alike. The
    /// file is opened once.
    pub fn scan(
        &mut self,
        disk: &dyn Disk,
        path: &Path,
        head: impl FnOnce(FileHeader) -> Result<Lsn, CutReason>,
        mut f: impl FnMut(Lsn, Record<'_>),
    ) -> std::io::Result<FileScan> {
        let mut file = disk.open_read(path)?;
        let len = file.size()?;
        if self.buf.len() < self.piece_bytes {
            self.buf.resize(self.piece_bytes, 0);
        }
        // `buf[..end]` holds the file's bytes from `base`; frames are read from `pos`.
        let mut base = 0u64;
        let mut end = file.read_at(0, &mut self.buf[..self.piece_bytes])?;
        let at_start = |reason| FileScan {
            len,
            next: 0,
            cut: Some(Cut { offset: 0, reason }),
        };
        let (header, format) = match FileHeader::decode_format(&self.buf[..end]) {
            Ok(h) => h,
            Err(reason) => return Ok(at_start(reason)),
        };
        let mut next = match head(header) {
            Ok(first) => first,
            Err(reason) => return Ok(at_start(reason)),
        };
        let mut pos = FILE_HEADER_BYTES;
        let mut len = len;
        loop {
            let (after, cut) = scan(&self.buf[..end], pos, next, format, &mut f);
            next = after;
            let more = base + (end as u64) < len;
            let stop = match cut {
                None if !more => return Ok(FileScan { len, next, cut }),
                None => end,
                Some(c) if c.reason == CutReason::Torn && more => c.offset,
                Some(c) => {
                    let offset = file_offset(base, c.offset);
                    let cut = Some(Cut { offset, ..c });
                    return Ok(FileScan { len, next, cut });
                }
            };
            // Keep the unread bytes (a frame's start), then fill the rest of the buffer.
            self.buf.copy_within(stop..end, 0);
            base += stop as u64;
            end -= stop;
            pos = 0;
            if !self.grow_for_frame(end, len - base) {
                let cut = Cut {
                    offset: file_offset(base, 0),
                    reason: CutReason::Torn,
                };
                return Ok(FileScan {
                    len,
                    next,
                    cut: Some(cut),
                });
            }
            // Progress: a frame torn in the buffer but whole in the file fits in it now.
            let room = self.buf.len().min(end + self.piece_bytes);
            let got = file.read_at(base + end as u64, &mut self.buf[end..room])?;
            if got < room - end {
                // The file shrank while being read: what is there is all there is.
                len = base + (end + got) as u64;
            }
            end += got;
        }
    }

    /// Make room for the frame starting the buffer (`buf[..end]` holds its start) when it
    /// is longer than a piece. False if the frame is longer than the `left` bytes the
    /// file still holds: it is torn (its length may be garbage: nothing is allocated).
    fn grow_for_frame(&mut self, end: usize, left: u64) -> bool {
        let Some(head) = self
            .buf
            .get(..FRAME_HEADER_BYTES)
            .filter(|_| end >= FRAME_HEADER_BYTES)
        else {
            return true;
        };
        let body = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let want = FRAME_HEADER_BYTES as u64 + u64::from(body);
        if want > left {
            return false;
        }
        if want > self.buf.len() as u64 {
            // `want` ≤ what the file still holds, so it fits in memory as the file would.
            self.buf
                .resize(usize::try_from(want).unwrap_or(usize::MAX), 0);
        }
        true
    }
}

/// Offset `offset` of a buffer holding the file from `base`, as an offset in the file.
fn file_offset(base: u64, offset: usize) -> usize {
    usize::try_from(base)
        .unwrap_or(usize::MAX)
        .saturating_add(offset)
}

#[cfg(test)]
mod tests;
