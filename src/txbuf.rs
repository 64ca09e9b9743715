//! `TxBuf`: the per-connection write buffer, flushed once per loop turn.
//!
//! Owns: encoded packets waiting for the socket. Invariant: `data[sent..]` is exactly what
//! the peer has not been sent yet, in order. Deliveries append; the event loop writes what
//! it can at the end of the turn and keeps the rest for the next writable event. Must not
//! touch: sockets (the caller passes a writer), MQTT semantics.
#![forbid(unsafe_code)]

use std::io::{self, Write};

/// Capacity kept after a full flush; more is released so idle connections stay small.
const RETAIN_CAPACITY_MAX: usize = 16 * 1024;

/// An append-only output buffer with a flush cursor.
#[derive(Debug, Default)]
pub struct TxBuf {
    data: Vec<u8>,
    sent: usize,
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
        self.data.clear();
        self.sent = 0;
        if self.data.capacity() > RETAIN_CAPACITY_MAX {
            self.data = Vec::new();
        }
        Ok(Flushed::All)
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
}
