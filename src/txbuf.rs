//! `TxBuf`: the per-connection write buffer, flushed once per loop turn.
//!
//! Owns: encoded packets waiting for the socket. Invariant: `data[sent..]` is exactly what
//! the peer has not been sent yet, in order. Deliveries append; the event loop writes what
//! it can at the end of the turn and keeps the rest for the next writable event. Must not
//! touch: sockets (the caller passes a writer), MQTT semantics.
//!
//! Memory: an emptied buffer keeps up to [`RETAIN_CAPACITY_MAX`] for the next turn, so
//! that idle connections stay small. A larger one is kept only while its connection needs
//! it: freeing it after every full flush made a busy connection grow it again every turn
//! (`docs/benchmarks.md`, "tenth round"). It goes after [`SMALL_FLUSHES_MAX`] full
//! flushes in a row that each needed no more than the retained size, or at the second
//! [`TxBuf::trim_idle`] (the shard's memory walk) that finds it empty with no large flush
//! in between: an idle connection holds a large buffer for at most two walks.
#![forbid(unsafe_code)]

use std::io::{self, Write};

/// Capacity an emptied buffer always keeps; more is kept only while it is needed.
const RETAIN_CAPACITY_MAX: usize = 16 * 1024;

/// Full flushes in a row that needed no more than [`RETAIN_CAPACITY_MAX`] after which a
/// larger buffer is released.
const SMALL_FLUSHES_MAX: u8 = 8;

/// An append-only output buffer with a flush cursor.
#[derive(Debug, Default)]
pub struct TxBuf {
    data: Vec<u8>,
    sent: usize,
    /// Full flushes in a row that needed no more than [`RETAIN_CAPACITY_MAX`].
    small_flushes: u8,
    /// A full flush needed more than [`RETAIN_CAPACITY_MAX`] since the last
    /// [`TxBuf::trim_idle`].
    large_since_trim: bool,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written.
    All,
    /// The socket would block; bytes remain.
    Partial,
}

impl TxBuf {
    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.data.len() - self.sent
    }

    /// Bytes of memory the buffer holds (for the memory budget).
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// The buffer to append encoded packets to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Forget everything not yet written (a connection closing without its output).
    pub fn discard(&mut self) {
        self.data = Vec::new();
        self.sent = 0;
    }

    /// Release an empty buffer larger than [`RETAIN_CAPACITY_MAX`] that no full flush
    /// needed since the last call (called at every memory walk: an idle connection's
    /// large buffer is gone by the second).
    pub fn trim_idle(&mut self) {
        if !std::mem::take(&mut self.large_since_trim)
            && self.is_empty()
            && self.data.capacity() > RETAIN_CAPACITY_MAX
        {
            self.data = Vec::new();
            self.sent = 0;
        }
    }

    /// Write as much as the socket takes, up to `budget_bytes`.
    pub fn flush_to<W: Write>(&mut self, w: &mut W, budget_bytes: usize) -> io::Result<Flushed> {
        let mut written = 0;
        while self.sent < self.data.len() && written < budget_bytes {
            let end = self.data.len().min(self.sent + (budget_bytes - written));
            match w.write(&self.data[self.sent..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Partial),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent < self.data.len() {
            return Ok(Flushed::Partial);
        }
        self.drained();
        Ok(Flushed::All)
    }

    /// Everything was written: empty the buffer, keeping a large one while it is needed.
    fn drained(&mut self) {
        if self.data.len() > RETAIN_CAPACITY_MAX {
            self.small_flushes = 0;
            self.large_since_trim = true;
        } else if self.data.capacity() > RETAIN_CAPACITY_MAX {
            self.small_flushes += 1;
            if self.small_flushes >= SMALL_FLUSHES_MAX {
                self.small_flushes = 0;
                self.data = Vec::new();
            }
        }
        self.data.clear();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts `chunk` bytes per call and then blocks once per `every` calls.
    struct Trickle {
        got: Vec<u8>,
        chunk: usize,
        calls: usize,
        every: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(self.every) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.chunk);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_drain() {
        let mut tx = TxBuf::default();
        let mut w = Trickle {
            got: Vec::new(),
            chunk: 7,
            calls: 0,
            every: 3,
        };
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let bytes = i.to_be_bytes();
            tx.buf().extend_from_slice(&bytes);
            expect.extend_from_slice(&bytes);
            if i % 10 == 0 {
                let _ = tx.flush_to(&mut w, 1 << 20).expect("flush");
            }
        }
        let mut turns = 0;
        while tx.flush_to(&mut w, 1 << 20).expect("flush") == Flushed::Partial {
            turns += 1;
            assert!(turns < 1000, "flush never completes");
        }
        assert_eq!(w.got, expect);
        assert!(tx.is_empty());
    }

    #[test]
    fn budget_limits_one_flush() {
        let mut tx = TxBuf::default();
        tx.buf().extend_from_slice(&[1; 100]);
        let mut out = Vec::new();
        assert_eq!(tx.flush_to(&mut out, 40).expect("flush"), Flushed::Partial);
        assert_eq!(out.len(), 40);
        assert_eq!(tx.pending(), 60);
    }

    /// Fill `tx` with `n` bytes and flush them all; whether the buffer used the same
    /// memory throughout (no allocation to fill it, none released by the flush).
    fn turn(tx: &mut TxBuf, n: usize) -> bool {
        let before = tx.buf().as_ptr();
        tx.buf().extend(std::iter::repeat_n(7, n));
        let mut out = Vec::new();
        assert_eq!(
            tx.flush_to(&mut out, usize::MAX).expect("flush"),
            Flushed::All
        );
        assert_eq!(out.len(), n);
        tx.capacity() > 0 && std::ptr::eq(before, tx.buf().as_ptr())
    }

    /// A connection that writes more than the retained size every turn keeps its buffer
    /// (no reallocation per flush, also across memory walks); one whose turns get small
    /// releases it after a few flushes, and an idle one at the second walk.
    #[test]
    fn a_busy_buffer_is_kept_and_an_idle_one_released() {
        let large = 3 * RETAIN_CAPACITY_MAX;
        let mut tx = TxBuf::default();
        turn(&mut tx, large);
        for i in 0..100 {
            assert!(turn(&mut tx, large), "reallocated at flush {i}");
            if i % 10 == 0 {
                tx.trim_idle();
            }
        }
        assert!(tx.capacity() >= large);

        // Small turns: kept for a few flushes (a burst may come back), then released.
        for _ in 1..SMALL_FLUSHES_MAX {
            assert!(turn(&mut tx, 100));
        }
        turn(&mut tx, 100);
        assert!(tx.capacity() <= RETAIN_CAPACITY_MAX, "{}", tx.capacity());

        // Idle after a large turn: the first walk notes it, the second releases it.
        turn(&mut tx, large);
        tx.trim_idle();
        assert!(tx.capacity() >= large, "kept at the first walk");
        tx.trim_idle();
        assert_eq!(tx.capacity(), 0, "released at the second");

        // A small buffer is never released by a walk; one holding bytes is not either.
        turn(&mut tx, 100);
        tx.trim_idle();
        tx.trim_idle();
        assert!(tx.capacity() >= 100);
        tx.buf().extend(std::iter::repeat_n(7, large));
        tx.trim_idle();
        tx.trim_idle();
        assert_eq!(tx.pending(), large);
    }
}
